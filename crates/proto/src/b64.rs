//! Serde helpers for binary fields carried as standard base64 strings.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serializer};

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

/// See [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    decode(&s).map_err(serde::de::Error::custom)
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

    /// See [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| decode(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
