//! Why a log could not be read.
//!
//! Every error names the event being read (numbered as `tpm2_eventlog` numbers them: the first
//! structure in the file is event 0) and the byte offset in the file where the bad field starts,
//! so an operator can find the bytes with `xxd -s OFFSET`.

/// A log that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event} at byte offset {offset}: {kind}")]
pub struct ParseError {
    /// Number of the event being read (0 is the first structure of the file).
    pub event: usize,
    /// Byte offset in the input of the field that was wrong.
    pub offset: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// A stable label for metrics and API reasons.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ParseErrorKind::Truncated { .. } => "truncated",
            ParseErrorKind::TooLong { .. } => "too_long",
            ParseErrorKind::TooManyEvents { .. } => "too_many_events",
            ParseErrorKind::UndeclaredAlgorithm { .. } => "undeclared_algorithm",
            ParseErrorKind::BadSpecId(_) => "bad_spec_id",
            ParseErrorKind::BadPcrIndex(_) => "bad_pcr_index",
            ParseErrorKind::Malformed(_) => "malformed",
            ParseErrorKind::Empty => "empty",
        }
    }
}

/// What was wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The input ended inside a field.
    #[error("truncated {field}: {needed} bytes needed, {available} left")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: usize,
    },
    /// A length or count above this crate's bound.
    #[error("{field} is {len}, more than the limit of {max}")]
    TooLong {
        /// Field holding the length.
        field: &'static str,
        /// Value found.
        len: u64,
        /// Largest value accepted.
        max: u64,
    },
    /// More events than [`crate::tcg::MAX_EVENTS`].
    #[error("more than {max} events")]
    TooManyEvents {
        /// The bound.
        max: usize,
    },
    /// A digest whose algorithm the Spec ID event did not declare, so its size is unknown.
    #[error("digest algorithm {alg:#06x} is not declared in the Spec ID event")]
    UndeclaredAlgorithm {
        /// `TPM_ALG_ID` found.
        alg: u16,
    },
    /// The Spec ID event is unusable.
    #[error("Spec ID event: {0}")]
    BadSpecId(&'static str),
    /// A PCR index outside 0..=23 on an event that extends a PCR.
    #[error("PCR index {0} is not between 0 and 23")]
    BadPcrIndex(u32),
    /// Any other structural problem.
    #[error("{0}")]
    Malformed(&'static str),
    /// No bytes at all.
    #[error("the log is empty")]
    Empty,
}
