//! What an attestation produced ([`Attested`], with what the next one of a push host can be
//! asked ahead: [`Ahead`], [`ClockAnchor`]) or why it produced no report ([`AttestError`]):
//! the engine's own results, below the engine so that what holds an attestation's outcome (the
//! push challenges, [`crate::push_slots`]) and the API's error mapping ([`crate::error`]) need
//! not reach up to it. Re-exported from `engine`.

use std::sync::Arc;

use nodetrust_appraise::ImportError;
use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use nodetrust_tpm_wire::verify::PreparedAk;

use crate::agent_client::AgentError;
use crate::store::{HostRow, ReportRow, StoreError};

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
    /// A push host's evidence answers a challenge given ahead that no longer holds: the
    /// host's flavors changed, or its quote cannot be shown to be fresh. No verdict; the agent
    /// asks for a new challenge ([`crate::push`]).
    #[error("{0}")]
    StaleChallenge(String),
    /// The agent left out its event log (the server named it as one it holds), but the quote
    /// is not the one last appraised with it, so the log is needed. No verdict: a pull host is
    /// asked again at once ([`crate::engine::attest_row`]), a push agent asks for a new
    /// challenge ([`crate::reuse`]).
    #[error("{0}")]
    EventLogNeeded(String),
    /// The agent left out its PCR values (the server named their digest as values it holds),
    /// but the quote is not the one last appraised with them, so the values are needed. No
    /// verdict, as for [`Self::EventLogNeeded`].
    #[error("{0}")]
    PcrValuesNeeded(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server failed (random generator, signing, serialising).
    #[error("{0}")]
    Internal(String),
}

impl AttestError {
    /// A stable label: `not_found`, `agent_unreachable`, `agent_timeout`, `agent_error` (an
    /// answer that is not a quote), the rejected check's label, `import_failed`, `challenge_stale`, `store`,
    /// `internal`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Agent { error, .. } => agent_reason(error),
            Self::EvidenceRejected { reason, .. } => reason,
            Self::Import(_) => "import_failed",
            Self::StaleChallenge(_) => "challenge_stale",
            Self::EventLogNeeded(_) => "event_log_needed",
            Self::PcrValuesNeeded(_) => "pcr_values_needed",
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

/// What one attestation produced ([`crate::engine::attest`]).
#[derive(Debug)]
pub struct Attested {
    /// The new report, as stored (unsigned: [`crate::engine::signed_view`] signs it).
    pub report: ReportRow,
    /// Set when the host pushes, its quote verified and its next quote can be asked ahead (no
    /// RUNTIME flavor applies to it): what to ask, and the quote's clock ([`crate::push`]).
    pub ahead: Option<Ahead>,
}

impl Attested {
    pub(crate) fn alone(report: ReportRow) -> Self {
        Self {
            report,
            ahead: None,
        }
    }
}

/// The next quote of a host, as it can be asked ahead of time ([`Attested::ahead`]).
#[derive(Debug, Clone)]
pub struct Ahead {
    /// The PCR indices its flavors need.
    pub pcrs: Vec<u8>,
    /// The banks its flavors need.
    pub pcrbanks: Vec<String>,
    /// What the server holds of it, to name in the challenge
    /// ([`QuoteRequest::known_event_log_sha256`], [`QuoteRequest::known_pcr_digest`]).
    pub known: crate::reuse::Known,
    /// The TPM clock of the quote just verified, and the earliest time it was read.
    pub anchor: ClockAnchor,
    /// The host's row as the next attestation needs it (its pinned AK, the TPM counters just
    /// seen; without its host facts and EK): that attestation reads no row, and its report is
    /// stored only if the host was not registered again meanwhile (its `created`).
    pub host: HostRow,
    /// Its pinned AK as this attestation verified with it, prepared: the next one looks up
    /// nothing ([`crate::ak_cache`]).
    pub ak: Arc<PreparedAk>,
}

/// A push host's answer to a challenge given ahead ([`crate::push`]), and what bounds the
/// age of its quote.
#[derive(Debug)]
pub struct Answered {
    /// The challenge as it was given.
    pub request: QuoteRequest,
    /// When it was given (Unix ms): the quote is no older.
    pub issued_at: i64,
    /// The clock of the host's quote before ([`Ahead::anchor`]).
    pub since: ClockAnchor,
    /// The agent's answer.
    pub answer: QuoteResponse,
    /// The host's pinned AK, prepared ([`Ahead::ak`]).
    pub ak: Arc<PreparedAk>,
}

/// A TPM clock reading (`clockInfo.clock`, milliseconds the TPM has run) of one TPM boot
/// (`resetCount`, `restartCount`), and the earliest time it can have been read (Unix ms):
/// the time the quote's nonce was made, or later when an earlier anchor of the same boot
/// proves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAnchor {
    /// `clockInfo.clock`.
    pub clock: u64,
    /// `clockInfo.resetCount`.
    pub reset_count: u32,
    /// `clockInfo.restartCount`.
    pub restart_count: u32,
    /// The earliest time of the reading, Unix ms.
    pub not_before: i64,
}

impl ClockAnchor {
    /// The earliest time a quote with clock `now` can have been made, knowing its nonce was
    /// made at `nonce_at` and this anchor: the TPM clock runs no faster than time, so in the
    /// same boot a reading `d` ms after this one is at least `d` ms after
    /// [`Self::not_before`]. (An owner that sets the TPM clock forward, `TPM2_ClockSet`, makes
    /// a quote look fresher than it is; it is still never older than its nonce.)
    pub fn earliest(&self, now: &nodetrust_tpm_wire::ClockInfo, nonce_at: i64) -> i64 {
        let same_boot =
            now.reset_count == self.reset_count && now.restart_count == self.restart_count;
        match now.clock.checked_sub(self.clock) {
            Some(d) if same_boot => nonce_at.max(
                self.not_before
                    .saturating_add(i64::try_from(d).unwrap_or(i64::MAX)),
            ),
            _ => nonce_at,
        }
    }

    pub(crate) fn of(c: &nodetrust_tpm_wire::ClockInfo, not_before: i64) -> Self {
        Self {
            clock: c.clock,
            reset_count: c.reset_count,
            restart_count: c.restart_count,
            not_before,
        }
    }
}
