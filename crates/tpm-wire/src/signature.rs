//! `TPMT_SIGNATURE`: the signature over a `TPMS_ATTEST`.

use crate::alg::{id, HashAlg};
use crate::codec::{Reader, Writer};
use crate::error::WireError;
use crate::public::{MAX_ECC_BYTES, MAX_RSA_BYTES};

/// A parsed `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// Hash the message was signed with.
        hash: HashAlg,
        /// The signature bytes.
        sig: Vec<u8>,
    },
    /// RSASSA-PSS.
    RsaPss {
        /// Hash the message was signed with.
        hash: HashAlg,
        /// The signature bytes.
        sig: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// Hash the message was signed with.
        hash: HashAlg,
        /// r, big-endian.
        r: Vec<u8>,
        /// s, big-endian.
        s: Vec<u8>,
    },
}

impl Signature {
    /// Parses a `TPMT_SIGNATURE` that fills `bytes` exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let alg = r.u16("sigAlg")?;
        let sig = match alg {
            id::RSASSA | id::RSAPSS => {
                let hash = HashAlg::parse(r.u16("signature.hash")?, "signature.hash")?;
                let sig = r.tpm2b("signature.sig", MAX_RSA_BYTES)?.to_vec();
                if alg == id::RSASSA {
                    Self::RsaSsa { hash, sig }
                } else {
                    Self::RsaPss { hash, sig }
                }
            }
            id::ECDSA => {
                let hash = HashAlg::parse(r.u16("signature.hash")?, "signature.hash")?;
                let rr = r.tpm2b("signature.signatureR", MAX_ECC_BYTES)?.to_vec();
                let s = r.tpm2b("signature.signatureS", MAX_ECC_BYTES)?.to_vec();
                Self::Ecdsa { hash, r: rr, s }
            }
            other => {
                return Err(WireError::Unsupported {
                    field: "sigAlg",
                    what: "signature scheme",
                    value: u32::from(other),
                })
            }
        };
        r.finish("TPMT_SIGNATURE")?;
        Ok(sig)
    }

    /// Marshals as a `TPMT_SIGNATURE`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::new();
        match self {
            Self::RsaSsa { hash, sig } | Self::RsaPss { hash, sig } => {
                let alg = if matches!(self, Self::RsaSsa { .. }) {
                    id::RSASSA
                } else {
                    id::RSAPSS
                };
                w.u16(alg).u16(hash.id());
                w.tpm2b(sig)?;
            }
            Self::Ecdsa { hash, r, s } => {
                w.u16(id::ECDSA).u16(hash.id());
                w.tpm2b(r)?;
                w.tpm2b(s)?;
            }
        }
        Ok(w.into_bytes())
    }

    /// The hash the signature was made with.
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } | Self::Ecdsa { hash, .. } => {
                *hash
            }
        }
    }

    /// The scheme's name: `rsassa`, `rsapss`, `ecdsa`.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            Self::RsaSsa { .. } => "rsassa",
            Self::RsaPss { .. } => "rsapss",
            Self::Ecdsa { .. } => "ecdsa",
        }
    }
}
