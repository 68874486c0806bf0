//! Trusted signing keys for `ima-sig` entries.
//!
//! An IMA signature names its key by a 32-bit key id: the last 4 bytes of the key's X.509
//! Subject Key Identifier when the kernel loaded it from a certificate that has one, otherwise
//! (and as `evmctl` computes it) the last 4 bytes of the SHA-1 of the subject public key (the
//! `RSAPublicKey` DER for RSA, the uncompressed point for EC): that is [`KeyId::of_spki`].
//!
//! Keys are read from X.509 certificates, `SubjectPublicKeyInfo` (`PUBLIC KEY`) or PKCS#1
//! (`RSA PUBLIC KEY`), PEM or DER. RSA (2048 to 8192 bits) and ECDSA on P-256 or P-384.

use nodetrust_tpm_wire::der::{self, Der};
use nodetrust_tpm_wire::public::{EccCurve, PublicKey};
use nodetrust_tpm_wire::HashAlg;
use serde::{Deserialize, Serialize};

/// Largest key or certificate file read.
pub(crate) const MAX_KEY_BYTES: usize = 64 * 1024;
const MAX_LABEL: usize = 1024;

/// A key id as IMA signatures carry it, shown `0x1a2b3c4d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(pub u32);

impl KeyId {
    /// The last 4 bytes of the SHA-1 of the subject public key (RFC 5280's Subject Key
    /// Identifier method 1, and `evmctl`'s key id).
    pub fn of_spki(key: &PublicKey) -> Self {
        let bits = subject_public_key_bits(key);
        let h = HashAlg::Sha1.digest(&bits);
        Self::from_tail(&h)
    }

    /// The last 4 bytes of `bytes` (a Subject Key Identifier or a SHA-1), big-endian.
    pub fn from_tail(bytes: &[u8]) -> Self {
        let n = bytes.len();
        let tail = bytes.get(n.saturating_sub(4)..).unwrap_or_default();
        Self(tail.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let h = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if h.is_empty() || h.len() > 8 {
            return Err(KeyError::BadKeyId(s.chars().take(32).collect()));
        }
        u32::from_str_radix(h, 16)
            .map(Self)
            .map_err(|_| KeyError::BadKeyId(s.chars().take(32).collect()))
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        s.parse()
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.to_string()
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a certificate or public key this module reads.
    #[error("not an X.509 certificate or a public key (PEM or DER)")]
    NotAKey,
    /// A key of a kind IMA signatures here cannot use.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// The file is too large to be a key.
    #[error("key file of {0} bytes, more than {MAX_KEY_BYTES}")]
    TooLarge(usize),
    /// A key id that is not 1 to 8 hex digits.
    #[error("key id {0:?} is not 1 to 8 hex digits (0x1a2b3c4d)")]
    BadKeyId(String),
    /// A label that is too long.
    #[error("key label longer than {MAX_LABEL} bytes")]
    LabelTooLong,
}

/// A public key whose `ima-sig` signatures are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TrustedKeyJson", into = "TrustedKeyJson")]
pub struct TrustedKey {
    key_id: KeyId,
    key: PublicKey,
    label: String,
}

/// The JSON form: `{"key_id": "0x1a2b3c4d", "public_key": "-----BEGIN PUBLIC KEY-----...",
/// "label": "..."}`; `key_id` defaults to [`KeyId::of_spki`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedKeyJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<KeyId>,
    public_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    label: String,
}

impl TryFrom<TrustedKeyJson> for TrustedKey {
    type Error = KeyError;
    fn try_from(j: TrustedKeyJson) -> Result<Self, KeyError> {
        let mut k = TrustedKey::from_pem_or_der(j.public_key.as_bytes(), &j.label)?;
        if let Some(id) = j.key_id {
            k.key_id = id;
        }
        Ok(k)
    }
}

impl From<TrustedKey> for TrustedKeyJson {
    fn from(k: TrustedKey) -> Self {
        Self {
            key_id: Some(k.key_id),
            public_key: k.public_key_pem(),
            label: k.label,
        }
    }
}

impl TrustedKey {
    /// Reads a certificate (PEM `CERTIFICATE` or DER), a `PUBLIC KEY` or an `RSA PUBLIC KEY`.
    /// The key id comes from a certificate's Subject Key Identifier when it has one, else
    /// [`KeyId::of_spki`].
    pub fn from_pem_or_der(bytes: &[u8], label: &str) -> Result<Self, KeyError> {
        if bytes.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLarge(bytes.len()));
        }
        if label.len() > MAX_LABEL {
            return Err(KeyError::LabelTooLong);
        }
        let (key, ski) = match std::str::from_utf8(bytes)
            .ok()
            .filter(|t| t.contains("-----BEGIN "))
        {
            Some(text) => {
                if let Some(d) = der::pem_decode(text, "CERTIFICATE") {
                    certificate_key(&d).ok_or(KeyError::NotAKey)?
                } else if let Some(d) = der::pem_decode(text, "PUBLIC KEY") {
                    (spki_key(&d)?, None)
                } else if let Some(d) = der::pem_decode(text, "RSA PUBLIC KEY") {
                    (pkcs1_key(&d)?, None)
                } else {
                    return Err(KeyError::NotAKey);
                }
            }
            None => {
                if let Some(k) = certificate_key(bytes) {
                    k
                } else if let Ok(k) = spki_key(bytes) {
                    (k, None)
                } else {
                    (pkcs1_key(bytes)?, None)
                }
            }
        };
        let key_id = ski.unwrap_or_else(|| KeyId::of_spki(&key));
        Ok(Self {
            key_id,
            key,
            label: label.to_string(),
        })
    }

    /// The key id signatures by this key carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Overrides the key id (a kernel keyring that names the key differently).
    pub fn with_key_id(mut self, id: KeyId) -> Self {
        self.key_id = id;
        self
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// `SubjectPublicKeyInfo` DER.
    pub fn spki_der(&self) -> Vec<u8> {
        der::spki(&self.key)
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM.
    pub fn public_key_pem(&self) -> String {
        der::pem("PUBLIC KEY", &self.spki_der())
    }

    /// A human name (file name, subject), possibly empty.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `RSA 2048`, `ECDSA P-256`.
    pub fn kind(&self) -> String {
        match &self.key {
            PublicKey::Rsa { modulus, .. } => format!("RSA {}", modulus.len() * 8),
            PublicKey::Ecc { curve, .. } => match curve {
                EccCurve::NistP256 => "ECDSA P-256".to_string(),
                EccCurve::NistP384 => "ECDSA P-384".to_string(),
            },
        }
    }
}

fn check_key(key: PublicKey) -> Result<PublicKey, KeyError> {
    if let PublicKey::Rsa { modulus, .. } = &key {
        let bits = modulus.len() * 8;
        if !(2048..=8192).contains(&bits) {
            return Err(KeyError::Unsupported(format!(
                "RSA key of {bits} bits (2048 to 8192 are accepted)"
            )));
        }
    }
    Ok(key)
}

fn spki_key(d: &[u8]) -> Result<PublicKey, KeyError> {
    let key = der::parse_spki(d).ok_or_else(|| {
        KeyError::Unsupported(
            "a public key that is neither RSA nor EC on P-256 or P-384".to_string(),
        )
    })?;
    check_key(key)
}

fn pkcs1_key(d: &[u8]) -> Result<PublicKey, KeyError> {
    // Wrap `RSAPublicKey` in a `SubjectPublicKeyInfo` and read that.
    let mut r = Der(d);
    let body = r.next(0x30).ok_or(KeyError::NotAKey)?;
    if !r.0.is_empty() {
        return Err(KeyError::NotAKey);
    }
    let mut seq = Der(body);
    let n = seq.next(0x02).ok_or(KeyError::NotAKey)?;
    let e = seq.next(0x02).ok_or(KeyError::NotAKey)?;
    let n = n
        .get(n.iter().take_while(|b| **b == 0).count()..)
        .unwrap_or_default();
    let e = e
        .get(e.iter().take_while(|b| **b == 0).count()..)
        .unwrap_or_default();
    if e.len() > 4 || n.is_empty() {
        return Err(KeyError::NotAKey);
    }
    let key_bits = u16::try_from(n.len() * 8).map_err(|_| KeyError::NotAKey)?;
    check_key(PublicKey::Rsa {
        modulus: n.to_vec(),
        exponent: e.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)),
        key_bits,
    })
}

/// The `subjectPublicKey` BIT STRING's contents: `RSAPublicKey` DER, or the EC point.
fn subject_public_key_bits(key: &PublicKey) -> Vec<u8> {
    match key {
        PublicKey::Rsa {
            modulus, exponent, ..
        } => der::seq(&[&der::uint(modulus), &der::uint(&exponent.to_be_bytes())]),
        PublicKey::Ecc { curve, x, y } => der::sec1_point(*curve, x, y).unwrap_or_default(),
    }
}

/// The subject public key and the Subject Key Identifier's key id of an X.509 certificate.
fn certificate_key(d: &[u8]) -> Option<(PublicKey, Option<KeyId>)> {
    let mut outer = Der(d);
    let cert = outer.next(0x30)?;
    if !outer.0.is_empty() {
        return None;
    }
    let mut cert = Der(cert);
    let mut tbs = Der(cert.next(0x30)?);
    // version [0] EXPLICIT, optional
    if tbs.0.first() == Some(&0xA0) {
        tbs.next(0xA0)?;
    }
    tbs.next(0x02)?; // serialNumber
    tbs.next(0x30)?; // signature
    tbs.next(0x30)?; // issuer
    tbs.next(0x30)?; // validity
    tbs.next(0x30)?; // subject
    let spki = tbs.raw(0x30)?;
    let key = spki_key(spki).ok()?;
    let mut ski = None;
    while let Some(&tag) = tbs.0.first() {
        let body = tbs.next(tag)?;
        if tag != 0xA3 {
            continue;
        }
        let mut exts = Der(Der(body).next(0x30)?);
        while !exts.0.is_empty() {
            let mut ext = Der(exts.next(0x30)?);
            let oid = ext.next(0x06)?;
            if ext.0.first() == Some(&0x01) {
                ext.next(0x01)?;
            }
            let value = ext.next(0x04)?;
            // id-ce-subjectKeyIdentifier 2.5.29.14
            if oid == [0x55, 0x1d, 0x0e] {
                let id = Der(value).next(0x04)?;
                if !id.is_empty() {
                    ski = Some(KeyId::from_tail(id));
                }
            }
        }
    }
    Some((key, ski))
}
