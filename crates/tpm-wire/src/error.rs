//! Errors of the wire parsers.

/// Why bytes could not be read as the TPM structure they claimed to be.
///
/// Each variant names the field, so an operator (or a fuzzer) sees where the input went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended inside a field.
    #[error("truncated in field {field} at byte offset {offset}")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
    },
    /// A size prefix was larger than the structure allows.
    #[error(
        "field {field} at byte offset {offset} claims {len} bytes, more than the {max} allowed"
    )]
    TooLong {
        /// Field being read.
        field: &'static str,
        /// Offset of the size prefix.
        offset: usize,
        /// Claimed length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// Bytes were left after a complete structure.
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes {
        /// Structure that was complete.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A field held a value that the structure does not admit.
    #[error("field {field} has invalid value {value:#x}")]
    InvalidValue {
        /// Field being read.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// An algorithm or structure type this verifier does not support.
    #[error("field {field}: unsupported {what} {value:#06x}")]
    Unsupported {
        /// Field being read.
        field: &'static str,
        /// What kind of identifier.
        what: &'static str,
        /// The identifier.
        value: u32,
    },
}

impl WireError {
    /// The field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Truncated { field, .. }
            | Self::TooLong { field, .. }
            | Self::InvalidValue { field, .. }
            | Self::Unsupported { field, .. } => field,
            Self::TrailingBytes { what, .. } => what,
        }
    }
}
