//! `TPMT_PUBLIC` / `TPM2B_PUBLIC`: the public area of a TPM key (AK or EK).
//!
//! Only RSA and ECC keys are parsed: an attestation or endorsement key of another type is
//! refused as unsupported. The exact bytes are kept, because an object's Name is the hash of
//! them and a re-marshalled copy could differ.

use crate::alg::{id, HashAlg};
use crate::codec::{Reader, Writer};
use crate::error::WireError;

/// Largest RSA modulus accepted: 8192 bits.
pub const MAX_RSA_BYTES: usize = 1024;
/// Largest ECC coordinate accepted (P-521).
pub const MAX_ECC_BYTES: usize = 66;
/// Largest digest (SHA-512).
pub const MAX_DIGEST: usize = 64;

/// `TPMA_OBJECT` bits.
pub mod attr {
    /// fixedTPM
    pub const FIXED_TPM: u32 = 1 << 1;
    /// stClear
    pub const ST_CLEAR: u32 = 1 << 2;
    /// fixedParent
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// adminWithPolicy
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// noDA
    pub const NO_DA: u32 = 1 << 10;
    /// restricted
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt
    pub const SIGN: u32 = 1 << 18;
    /// An attestation key's: a restricted signing key made in the TPM, used with its
    /// password ([`super::Public::ak`]).
    pub const AK: u32 =
        FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | RESTRICTED | SIGN;
}

/// Elliptic curves a key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EccCurve {
    /// NIST P-256 (`TPM_ECC_NIST_P256`).
    NistP256,
    /// NIST P-384 (`TPM_ECC_NIST_P384`).
    NistP384,
}

impl EccCurve {
    /// From a `TPM_ECC_CURVE`.
    pub fn from_id(v: u16) -> Option<Self> {
        match v {
            0x0003 => Some(Self::NistP256),
            0x0004 => Some(Self::NistP384),
            _ => None,
        }
    }

    /// The `TPM_ECC_CURVE` value.
    pub fn id(self) -> u16 {
        match self {
            Self::NistP256 => 0x0003,
            Self::NistP384 => 0x0004,
        }
    }

    /// Size of a coordinate or scalar in bytes.
    pub fn coordinate_size(self) -> usize {
        match self {
            Self::NistP256 => 32,
            Self::NistP384 => 48,
        }
    }

    /// Name as operators know it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NistP256 => "P-256",
            Self::NistP384 => "P-384",
        }
    }
}

/// `TPMT_SYM_DEF_OBJECT`: the symmetric algorithm of a storage or endorsement key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// Algorithm (`TPM_ALG_AES`, or `TPM_ALG_NULL` for none).
    pub algorithm: u16,
    /// Key size in bits (0 when `algorithm` is NULL).
    pub key_bits: u16,
    /// Mode (`TPM_ALG_CFB` for storage keys; NULL when none).
    pub mode: u16,
}

/// A signing or key-exchange scheme with its hash (`TPMT_RSA_SCHEME`, `TPMT_ECC_SCHEME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// `TPM_ALG_ID` of the scheme, `TPM_ALG_NULL` when the key has none.
    pub scheme: u16,
    /// The scheme's hash, when it has one.
    pub hash: Option<u16>,
}

/// The algorithm-specific part of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA key.
    Rsa {
        /// Modulus, big-endian.
        modulus: Vec<u8>,
        /// Public exponent (the wire's 0 is already replaced by 65537).
        exponent: u32,
        /// Declared key size.
        key_bits: u16,
    },
    /// An ECC key.
    Ecc {
        /// The curve.
        curve: EccCurve,
        /// X coordinate, as on the wire.
        x: Vec<u8>,
        /// Y coordinate, as on the wire.
        y: Vec<u8>,
    },
}

/// A parsed `TPMT_PUBLIC`, with the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// Name algorithm.
    pub name_alg: HashAlg,
    /// `TPMA_OBJECT` bits (see [`attr`]).
    pub attributes: u32,
    /// authPolicy digest.
    pub auth_policy: Vec<u8>,
    /// Symmetric definition (storage keys, e.g. an EK).
    pub symmetric: SymDef,
    /// Signing / key exchange scheme.
    pub scheme: Scheme,
    /// The key.
    pub key: PublicKey,
    raw: Vec<u8>,
}

fn read_sym(r: &mut Reader<'_>) -> Result<SymDef, WireError> {
    let algorithm = r.u16("symmetric.algorithm")?;
    if algorithm == id::NULL {
        return Ok(SymDef {
            algorithm,
            key_bits: 0,
            mode: id::NULL,
        });
    }
    let key_bits = r.u16("symmetric.keyBits")?;
    let mode = r.u16("symmetric.mode")?;
    Ok(SymDef {
        algorithm,
        key_bits,
        mode,
    })
}

fn read_scheme(r: &mut Reader<'_>, field: &'static str) -> Result<Scheme, WireError> {
    let scheme = r.u16(field)?;
    match scheme {
        id::NULL | id::RSAES => Ok(Scheme { scheme, hash: None }),
        id::ECDAA => {
            let hash = r.u16("scheme.hashAlg")?;
            let _count = r.u16("scheme.count")?;
            Ok(Scheme {
                scheme,
                hash: Some(hash),
            })
        }
        id::RSASSA
        | id::RSAPSS
        | id::OAEP
        | id::ECDSA
        | id::ECDH
        | id::SM2
        | id::ECSCHNORR
        | id::ECMQV => {
            let hash = r.u16("scheme.hashAlg")?;
            Ok(Scheme {
                scheme,
                hash: Some(hash),
            })
        }
        other => Err(WireError::Unsupported {
            field,
            what: "scheme",
            value: u32::from(other),
        }),
    }
}

impl Public {
    /// Parses a `TPMT_PUBLIC` that fills `bytes` exactly.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let p = Self::read(&mut r)?;
        r.finish("TPMT_PUBLIC")?;
        Ok(p)
    }

    /// Parses a `TPM2B_PUBLIC` (size prefix, then a `TPMT_PUBLIC` of exactly that size) that fills
    /// `bytes` exactly.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b("TPM2B_PUBLIC.size", 2048)?;
        r.finish("TPM2B_PUBLIC")?;
        Self::from_tpmt(inner)
    }

    /// Parses either form: `TPM2B_PUBLIC` when its size prefix matches the input, else
    /// `TPMT_PUBLIC`. (A `TPMT_PUBLIC` begins with the key type, 0x0001 or 0x0023, which can
    /// never equal the remaining length of a real key.)
    pub fn from_either(bytes: &[u8]) -> Result<Self, WireError> {
        match bytes {
            [a, b, rest @ ..] if usize::from(u16::from_be_bytes([*a, *b])) == rest.len() => {
                Self::from_tpmt(rest)
            }
            _ => Self::from_tpmt(bytes),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let start = r.position();
        let key_type = r.u16("type")?;
        let name_alg = HashAlg::parse(r.u16("nameAlg")?, "nameAlg")?;
        let attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b("authPolicy", MAX_DIGEST)?.to_vec();
        let (symmetric, scheme, key) = match key_type {
            id::RSA => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r, "parameters.scheme")?;
                let key_bits = r.u16("parameters.keyBits")?;
                let exponent = match r.u32("parameters.exponent")? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b("unique.rsa", MAX_RSA_BYTES)?.to_vec();
                if modulus.is_empty() {
                    return Err(WireError::InvalidValue {
                        field: "unique.rsa",
                        value: 0,
                    });
                }
                (
                    symmetric,
                    scheme,
                    PublicKey::Rsa {
                        modulus,
                        exponent,
                        key_bits,
                    },
                )
            }
            id::ECC => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r, "parameters.scheme")?;
                let curve_id = r.u16("parameters.curveID")?;
                let curve = EccCurve::from_id(curve_id).ok_or(WireError::Unsupported {
                    field: "parameters.curveID",
                    what: "curve",
                    value: u32::from(curve_id),
                })?;
                let kdf = r.u16("parameters.kdf.scheme")?;
                if kdf != id::NULL {
                    r.u16("parameters.kdf.hashAlg")?;
                }
                let x = r.tpm2b("unique.ecc.x", MAX_ECC_BYTES)?.to_vec();
                let y = r.tpm2b("unique.ecc.y", MAX_ECC_BYTES)?.to_vec();
                (symmetric, scheme, PublicKey::Ecc { curve, x, y })
            }
            other => {
                return Err(WireError::Unsupported {
                    field: "type",
                    what: "key type",
                    value: u32::from(other),
                })
            }
        };
        let raw = r.consumed_since(start).to_vec();
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            scheme,
            key,
            raw,
        })
    }

    /// The public area of an attestation key with `key` (for software attesters, tests and
    /// benchmarks): a SHA-256 name, the attributes of [`attr::AK`], no symmetric algorithm, and
    /// RSASSA-SHA256 for an RSA key or ECDSA-SHA256 for an ECC one.
    pub fn ak(key: &PublicKey) -> Result<Self, WireError> {
        let scheme = match key {
            PublicKey::Rsa { .. } => id::RSASSA,
            PublicKey::Ecc { .. } => id::ECDSA,
        };
        Self::build(
            HashAlg::Sha256,
            attr::AK,
            &[],
            SymDef {
                algorithm: id::NULL,
                key_bits: 0,
                mode: id::NULL,
            },
            Scheme {
                scheme,
                hash: Some(id::SHA256),
            },
            key,
        )
    }

    /// Builds a public area from its fields (for software attesters and tests): marshals it
    /// and parses the result, so the value is exactly what a verifier would read.
    pub fn build(
        name_alg: HashAlg,
        attributes: u32,
        auth_policy: &[u8],
        symmetric: SymDef,
        scheme: Scheme,
        key: &PublicKey,
    ) -> Result<Self, WireError> {
        let mut w = Writer::new();
        let key_type = match key {
            PublicKey::Rsa { .. } => id::RSA,
            PublicKey::Ecc { .. } => id::ECC,
        };
        w.u16(key_type).u16(name_alg.id()).u32(attributes);
        w.tpm2b(auth_policy)?;
        w.u16(symmetric.algorithm);
        if symmetric.algorithm != id::NULL {
            w.u16(symmetric.key_bits).u16(symmetric.mode);
        }
        w.u16(scheme.scheme);
        if let Some(h) = scheme.hash {
            w.u16(h);
            if scheme.scheme == id::ECDAA {
                w.u16(0);
            }
        }
        match key {
            PublicKey::Rsa {
                modulus,
                exponent,
                key_bits,
            } => {
                w.u16(*key_bits)
                    .u32(if *exponent == 65537 { 0 } else { *exponent });
                w.tpm2b(modulus)?;
            }
            PublicKey::Ecc { curve, x, y } => {
                w.u16(curve.id()).u16(id::NULL);
                w.tpm2b(x)?;
                w.tpm2b(y)?;
            }
        }
        Self::from_tpmt(&w.into_bytes())
    }

    /// The exact `TPMT_PUBLIC` bytes.
    pub fn tpmt_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The `TPM2B_PUBLIC` encoding (size prefix, then the exact `TPMT_PUBLIC` bytes).
    pub fn tpm2b_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + 2);
        // A parsed TPMT_PUBLIC is at most 2048 bytes, so its size fits a u16.
        let len = u16::try_from(self.raw.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.raw);
        out
    }

    /// The object's Name: `nameAlg || H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut out = self.name_alg.id().to_be_bytes().to_vec();
        out.extend_from_slice(&self.name_alg.digest(&self.raw));
        out
    }

    /// Whether every bit of `mask` is set.
    pub fn has(&self, mask: u32) -> bool {
        self.attributes & mask == mask
    }

    /// A short description: `RSA-2048`, `ECC P-256`.
    pub fn describe(&self) -> String {
        match &self.key {
            PublicKey::Rsa { modulus, .. } => format!("RSA-{}", modulus.len() * 8),
            PublicKey::Ecc { curve, .. } => format!("ECC {}", curve.name()),
        }
    }
}
