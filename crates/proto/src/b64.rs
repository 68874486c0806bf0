//! Serde helpers for binary fields carried as standard base64 strings.

use base64::Engine as _;
use serde::{Deserializer, Serializer};

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Encodes bytes as standard base64.
pub fn encode(bytes: &[u8]) -> String {
    ENGINE.encode(bytes)
}

/// Decodes standard base64.
pub fn decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    ENGINE.decode(s.trim())
}

/// `#[serde(with = "nodetrust_proto::b64")]` for `Vec<u8>`.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(v))
}

/// See [`serialize`]. The text is decoded where the deserializer has it (for JSON read from
/// bytes, in the request body itself), not copied into a `String` first: an event log is tens
/// of kilobytes of it.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_str(Base64)
}

/// Decodes a base64 string as the deserializer gives it.
struct Base64;

impl serde::de::Visitor<'_> for Base64 {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
        decode(s).map_err(E::custom)
    }
}

/// `#[serde(with = "nodetrust_proto::b64::option", default, skip_serializing_if = "Option::is_none")]`
/// for `Option<Vec<u8>>`.
pub mod option {
    use super::*;

    /// Serializes `Some` as base64; `None` as null.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&encode(b)),
            None => s.serialize_none(),
        }
    }

    /// See [`serialize`]; `null` is `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        d.deserialize_option(OptionalBase64)
    }

    /// [`Base64`], or `None` for `null`.
    struct OptionalBase64;

    impl<'de> serde::de::Visitor<'de> for OptionalBase64 {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base64 string or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Fields {
        #[serde(with = "crate::b64")]
        bytes: Vec<u8>,
        #[serde(with = "crate::b64::option", default)]
        maybe: Option<Vec<u8>>,
    }

    fn read(json: &str) -> Result<Fields, String> {
        // From bytes (the text borrowed from the body) and from a `serde_json::Value` (the
        // text owned): the same result.
        let direct = serde_json::from_slice::<Fields>(json.as_bytes()).map_err(|e| e.to_string());
        let via_value = serde_json::from_str::<serde_json::Value>(json)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<Fields>(v).map_err(|e| e.to_string()));
        assert_eq!(direct.is_ok(), via_value.is_ok(), "{json}");
        if let (Ok(a), Ok(b)) = (&direct, &via_value) {
            assert_eq!(a, b, "{json}");
        }
        direct
    }

    #[test]
    fn base64_fields_decode_borrowed_escaped_and_owned_text() {
        let f = read(r#"{"bytes": "AAEC/w==", "maybe": "aGk="}"#).expect("plain");
        assert_eq!(f.bytes, [0, 1, 2, 255]);
        assert_eq!(f.maybe.as_deref(), Some(&b"hi"[..]));
        // A JSON escape (`\/` is `/`): the text is unescaped first, then decoded.
        let f = read(r#"{"bytes": "AAEC\/w==", "maybe": null}"#).expect("escaped");
        assert_eq!((f.bytes, f.maybe), (vec![0, 1, 2, 255], None));
        // Absent, and surrounding blanks as before.
        let f = read(r#"{"bytes": " aGk= "}"#).expect("absent");
        assert_eq!((f.bytes, f.maybe), (b"hi".to_vec(), None));
        for bad in [
            r#"{"bytes": "not base64!"}"#,
            r#"{"bytes": 5}"#,
            r#"{"bytes": null}"#,
            r#"{"bytes": "aGk=", "maybe": "%%%"}"#,
            r#"{"bytes": "aGk=", "maybe": [1]}"#,
        ] {
            let e = read(bad).expect_err(bad);
            assert!(e.contains("line 1"), "{bad}: {e}");
        }
    }
}
