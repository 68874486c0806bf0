//! The `ima-sig` template's signature field: `security.ima` in the v2 digital-signature form.
//!
//! ```text
//! struct signature_v2_hdr {        // all big-endian
//!     u8  type;        // 3: EVM_IMA_XATTR_DIGSIG
//!     u8  version;     // 2
//!     u8  hash_algo;   // enum hash_algo: 2 sha1, 4 sha256, 5 sha384, 6 sha512, ...
//!     u32 keyid;       // last 4 bytes of the key's Subject Key Identifier
//!     u16 sig_size;
//!     u8  sig[sig_size];
//! }
//! ```
//! The signature is over the file digest (`hash_algo`), the digest the entry logs: RSA
//! PKCS#1 v1.5 with that hash's `DigestInfo`, or an ASN.1 DER ECDSA signature. Type 5
//! (`EVM_XATTR_PORTABLE_DIGSIG`) has the same layout and is read too; version 3 (signatures
//! over an `ima_file_id`) and fs-verity signatures (type 6) are reported as unsupported.

use nodetrust_tpm_wire::HashAlg;

use super::keys::KeyId;

/// Size of the fixed header.
const HEADER: usize = 9;
/// Largest signature accepted (an RSA-8192 signature is 1024 bytes; ECDSA DER is under 110).
pub(crate) const MAX_SIGNATURE: usize = 1024;

/// A parsed `signature_v2_hdr` and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaSignature {
    /// `type` (3, or 5 for a portable EVM signature).
    pub sig_type: u8,
    /// `version` (2).
    pub version: u8,
    /// The kernel's `hash_algo` number.
    pub hash_algo: u8,
    /// The signing key's id.
    pub key_id: KeyId,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl ImaSignature {
    /// The hash algorithm, when it is one this crate verifies.
    pub fn hash(&self) -> Option<HashAlg> {
        match self.hash_algo {
            2 => Some(HashAlg::Sha1),
            4 => Some(HashAlg::Sha256),
            5 => Some(HashAlg::Sha384),
            6 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The kernel's name of the hash algorithm (`sha256`, `sm3`, ...; `hash#N` when unknown),
    /// which is also how `ima-ng` names a file digest's algorithm.
    pub fn hash_name(&self) -> String {
        kernel_hash_name(self.hash_algo)
            .map(str::to_string)
            .unwrap_or_else(|| format!("hash#{}", self.hash_algo))
    }
}

/// The names of `enum hash_algo` (include/uapi/linux/hash_info.h), by number.
const KERNEL_HASH_NAMES: [&str; 23] = [
    "md4",
    "md5",
    "sha1",
    "rmd160",
    "sha256",
    "sha384",
    "sha512",
    "sha224",
    "rmd128",
    "rmd256",
    "rmd320",
    "wp256",
    "wp384",
    "wp512",
    "tgr128",
    "tgr160",
    "tgr192",
    "sm3",
    "streebog256",
    "streebog512",
    "sha3-256",
    "sha3-384",
    "sha3-512",
];

/// The kernel's name of hash algorithm number `n`.
pub(crate) fn kernel_hash_name(n: u8) -> Option<&'static str> {
    KERNEL_HASH_NAMES.get(usize::from(n)).copied()
}

/// Why a signature field could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Shorter than the 9-byte header.
    #[error("signature of {0} bytes is shorter than its 9-byte header")]
    Short(usize),
    /// Not a digital signature (`security.ima` can also hold a plain digest or HMAC).
    #[error("signature type {0} is not an IMA digital signature (3)")]
    Type(u8),
    /// A version other than 2.
    #[error("signature version {0} is not supported (2 is)")]
    Version(u8),
    /// `sig_size` disagrees with the field's length.
    #[error("signature header says {declared} bytes but {actual} follow")]
    Size {
        /// `sig_size`.
        declared: usize,
        /// Bytes after the header.
        actual: usize,
    },
    /// Empty or longer than any supported key makes.
    #[error("signature of {0} bytes (1 to {MAX_SIGNATURE} are accepted)")]
    Length(usize),
}

/// Reads an `ima-sig` signature field. Never panics; every length is checked.
pub fn parse_ima_signature(bytes: &[u8]) -> Result<ImaSignature, SignatureError> {
    let (header, sig) = bytes
        .split_at_checked(HEADER)
        .ok_or(SignatureError::Short(bytes.len()))?;
    let [sig_type, version, hash_algo, k0, k1, k2, k3, s0, s1] = header else {
        return Err(SignatureError::Short(bytes.len()));
    };
    if *sig_type != 3 && *sig_type != 5 {
        return Err(SignatureError::Type(*sig_type));
    }
    if *version != 2 {
        return Err(SignatureError::Version(*version));
    }
    let declared = usize::from(u16::from_be_bytes([*s0, *s1]));
    if declared != sig.len() {
        return Err(SignatureError::Size {
            declared,
            actual: sig.len(),
        });
    }
    if sig.is_empty() || sig.len() > MAX_SIGNATURE {
        return Err(SignatureError::Length(sig.len()));
    }
    Ok(ImaSignature {
        sig_type: *sig_type,
        version: *version,
        hash_algo: *hash_algo,
        key_id: KeyId(u32::from_be_bytes([*k0, *k1, *k2, *k3])),
        signature: sig.to_vec(),
    })
}

/// The kernel's `hash_algo` number of `alg`.
pub(crate) fn kernel_hash_number(alg: HashAlg) -> u8 {
    match alg {
        HashAlg::Sha1 => 2,
        HashAlg::Sha256 => 4,
        HashAlg::Sha384 => 5,
        HashAlg::Sha512 => 6,
    }
}

/// Writes a v2 signature field (for tests, generators and fuzz seeds).
pub fn encode_ima_signature(hash: HashAlg, key_id: KeyId, signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + signature.len());
    out.extend_from_slice(&[3, 2, kernel_hash_number(hash)]);
    out.extend_from_slice(&key_id.0.to_be_bytes());
    out.extend_from_slice(&(signature.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(signature);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let f = encode_ima_signature(HashAlg::Sha256, KeyId(0x0102_0304), &[9; 256]);
        let s = parse_ima_signature(&f).unwrap();
        assert_eq!(s.key_id, KeyId(0x0102_0304));
        assert_eq!(s.hash(), Some(HashAlg::Sha256));
        assert_eq!(s.hash_name(), "sha256");
        assert_eq!(s.signature.len(), 256);
        assert_eq!(parse_ima_signature(&f[..8]), Err(SignatureError::Short(8)));
        assert_eq!(
            parse_ima_signature(&f[..100]),
            Err(SignatureError::Size {
                declared: 256,
                actual: 91
            })
        );
        let mut t = f.clone();
        t[0] = 4;
        assert_eq!(parse_ima_signature(&t), Err(SignatureError::Type(4)));
        let mut v = f.clone();
        v[1] = 3;
        assert_eq!(parse_ima_signature(&v), Err(SignatureError::Version(3)));
        let e = encode_ima_signature(HashAlg::Sha1, KeyId(1), &[]);
        assert_eq!(parse_ima_signature(&e), Err(SignatureError::Length(0)));
    }
}
