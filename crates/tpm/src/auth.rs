//! The owner / endorsement authorization value (`TPM_OWNER_SECRET`).
//!
//! The agent never takes ownership. When the owner and endorsement hierarchies have an auth value,
//! it comes from configuration, written as tpm2-tools writes auth values: `hex:0a1b...` for raw
//! bytes, `str:...` or plain text for the UTF-8 bytes of the text.

use crate::TpmError;

/// An auth value. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// Parses `hex:...`, `str:...` or plain text. An empty string is the empty auth.
    pub fn parse(text: &str) -> Result<Self, TpmError> {
        let bytes = if let Some(h) = text.strip_prefix("hex:") {
            hex::decode(h.trim()).map_err(|_| {
                TpmError::InvalidInput(
                    "TPM_OWNER_SECRET starts with `hex:` but the rest is not hex".into(),
                )
            })?
        } else if let Some(s) = text.strip_prefix("str:") {
            s.as_bytes().to_vec()
        } else {
            text.as_bytes().to_vec()
        };
        // TPM2B_AUTH holds at most a SHA-512 digest.
        if bytes.len() > 64 {
            return Err(TpmError::InvalidInput(format!(
                "TPM_OWNER_SECRET is {} bytes; a TPM auth value is at most 64",
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the empty auth.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            Secret::parse("hex:0aff").map(|s| s.bytes().to_vec()),
            Ok(vec![0x0a, 0xff])
        );
        assert_eq!(
            Secret::parse("str:hex:").map(|s| s.bytes().to_vec()),
            Ok(b"hex:".to_vec())
        );
        assert_eq!(
            Secret::parse("abc").map(|s| s.bytes().to_vec()),
            Ok(b"abc".to_vec())
        );
        assert!(Secret::parse("hex:zz").is_err());
        assert!(!format!("{:?}", Secret::parse("topsecret")).contains("topsecret"));
    }
}
