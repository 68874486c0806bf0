//! Why an attestation produced no report ([`AttestError`]): the engine's own error, below
//! the engine so that what holds an attestation's outcome (the push challenges,
//! [`crate::push_slots`]) and the API's error mapping ([`crate::error`]) need not reach up to
//! it. Re-exported as `engine::AttestError`.

use nodetrust_appraise::ImportError;

use crate::agent_client::AgentError;
use crate::store::StoreError;

/// Why an attestation or a flavor import produced no report. The engine's own error: the
/// scheduler matches on it, and the API maps it to an HTTP answer only at its edge
/// (`From<AttestError> for ApiError`, in `error`).
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// No host of that name.
    #[error("no host named {0}")]
    NotFound(String),
    /// The agent gave no usable answer (down, network, TLS, timeout, an HTTP error, a body
    /// that is not a quote); `message` says which host and what failed.
    #[error("{message}")]
    Agent {
        /// Sentence for the operator.
        message: String,
        /// What failed.
        error: AgentError,
    },
    /// A flavor import's evidence does not verify (bad signature, nonce, counters...).
    #[error("{message}")]
    EvidenceRejected {
        /// The failed check's stable label (e.g. `bad_signature`).
        reason: &'static str,
        /// Sentence for the operator.
        message: String,
    },
    /// Flavors cannot be made from the host's verified evidence.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server failed (random generator, signing, serialising).
    #[error("{0}")]
    Internal(String),
}

impl AttestError {
    /// A stable label: `not_found`, `agent_unreachable`, `agent_timeout`, `agent_error` (an
    /// answer that is not a quote), the rejected check's label, `import_failed`, `store`,
    /// `internal`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Agent { error, .. } => agent_reason(error),
            Self::EvidenceRejected { reason, .. } => reason,
            Self::Import(_) => "import_failed",
            Self::Store(_) => "store",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether the host's agent could not be reached (the host is `unreachable`; nothing is
    /// wrong with the server).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Agent { error, .. } if error.is_unreachable())
    }
}

/// `agent_timeout`, `agent_unreachable` (no answer), or `agent_error` (an answer that is not
/// a quote).
pub(crate) fn agent_reason(e: &AgentError) -> &'static str {
    match e {
        AgentError::Timeout(_) => "agent_timeout",
        e if e.is_unreachable() => "agent_unreachable",
        _ => "agent_error",
    }
}
