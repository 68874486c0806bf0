//! TPM algorithm identifiers (`TPM_ALG_ID`) and the hash functions behind them.

use crate::error::WireError;
use aws_lc_rs::digest;

/// `TPM_ALG_ID` values this crate names.
pub mod id {
    /// TPM_ALG_RSA
    pub const RSA: u16 = 0x0001;
    /// TPM_ALG_SHA1
    pub const SHA1: u16 = 0x0004;
    /// TPM_ALG_HMAC
    pub const HMAC: u16 = 0x0005;
    /// TPM_ALG_AES
    pub const AES: u16 = 0x0006;
    /// TPM_ALG_KEYEDHASH
    pub const KEYEDHASH: u16 = 0x0008;
    /// TPM_ALG_XOR
    pub const XOR: u16 = 0x000A;
    /// TPM_ALG_SHA256
    pub const SHA256: u16 = 0x000B;
    /// TPM_ALG_SHA384
    pub const SHA384: u16 = 0x000C;
    /// TPM_ALG_SHA512
    pub const SHA512: u16 = 0x000D;
    /// TPM_ALG_NULL
    pub const NULL: u16 = 0x0010;
    /// TPM_ALG_SM3_256
    pub const SM3_256: u16 = 0x0012;
    /// TPM_ALG_RSASSA
    pub const RSASSA: u16 = 0x0014;
    /// TPM_ALG_RSAES
    pub const RSAES: u16 = 0x0015;
    /// TPM_ALG_RSAPSS
    pub const RSAPSS: u16 = 0x0016;
    /// TPM_ALG_OAEP
    pub const OAEP: u16 = 0x0017;
    /// TPM_ALG_ECDSA
    pub const ECDSA: u16 = 0x0018;
    /// TPM_ALG_ECDH
    pub const ECDH: u16 = 0x0019;
    /// TPM_ALG_ECDAA
    pub const ECDAA: u16 = 0x001A;
    /// TPM_ALG_SM2
    pub const SM2: u16 = 0x001B;
    /// TPM_ALG_ECSCHNORR
    pub const ECSCHNORR: u16 = 0x001C;
    /// TPM_ALG_ECMQV
    pub const ECMQV: u16 = 0x001D;
    /// TPM_ALG_KDF1_SP800_56A
    pub const KDF1_SP800_56A: u16 = 0x0020;
    /// TPM_ALG_KDF2
    pub const KDF2: u16 = 0x0021;
    /// TPM_ALG_KDF1_SP800_108
    pub const KDF1_SP800_108: u16 = 0x0022;
    /// TPM_ALG_ECC
    pub const ECC: u16 = 0x0023;
    /// TPM_ALG_SYMCIPHER
    pub const SYMCIPHER: u16 = 0x0025;
    /// TPM_ALG_CFB
    pub const CFB: u16 = 0x0043;
}

/// A hash algorithm a PCR bank or a signature can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlg {
    /// SHA-1 (20 bytes): old but real evidence still uses it.
    Sha1,
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl HashAlg {
    /// Every supported hash, in `TPM_ALG_ID` order.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// From a `TPM_ALG_ID`.
    pub fn from_id(v: u16) -> Option<Self> {
        match v {
            id::SHA1 => Some(Self::Sha1),
            id::SHA256 => Some(Self::Sha256),
            id::SHA384 => Some(Self::Sha384),
            id::SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Reads a `TPMI_ALG_HASH` and requires a supported hash.
    pub(crate) fn parse(v: u16, field: &'static str) -> Result<Self, WireError> {
        Self::from_id(v).ok_or(WireError::Unsupported {
            field,
            what: "hash algorithm",
            value: u32::from(v),
        })
    }

    /// The `TPM_ALG_ID`.
    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => id::SHA1,
            Self::Sha256 => id::SHA256,
            Self::Sha384 => id::SHA384,
            Self::Sha512 => id::SHA512,
        }
    }

    /// Digest length in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Lower-case name as tpm2-tools and our JSON write it: `sha1`, `sha256`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Parses a bank name, case-insensitive, with or without a dash (`SHA256`, `sha-256`).
    pub fn from_name(s: &str) -> Option<Self> {
        // The name without '-' and '_', lowercased, on the stack: the longest known is 6
        // bytes, so a longer one is none of them.
        let mut buf = [0u8; 6];
        let mut len = 0;
        for b in s.bytes().filter(|b| *b != b'-' && *b != b'_') {
            *buf.get_mut(len)? = b.to_ascii_lowercase();
            len += 1;
        }
        match buf.get(..len)? {
            b"sha1" => Some(Self::Sha1),
            b"sha256" => Some(Self::Sha256),
            b"sha384" => Some(Self::Sha384),
            b"sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub(crate) fn ring_alg(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.ring_alg(), data).as_ref().to_vec()
    }

    /// An incremental hasher.
    pub fn hasher(self) -> Hasher {
        Hasher(digest::Context::new(self.ring_alg()))
    }

    /// The PCR extend operation: `H(old || new)`.
    pub fn extend(self, old: &[u8], new: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(old);
        h.update(new);
        h.finish()
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An incremental hash computation.
pub struct Hasher(digest::Context);

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}
