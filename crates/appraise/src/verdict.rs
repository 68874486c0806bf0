//! Verdicts: trusted / untrusted / unknown, with reasons and an expiry.
//!
//! A [`Verdict`] cannot be built as `Trusted` outside this crate: [`Verdict::untrusted`] and
//! [`Verdict::unknown`] are public, the trusted constructor is crate-private and used only by
//! [`appraise`](crate::appraise) after it has been handed a verified quote.

use std::time::{Duration, SystemTime};

/// The outcome of an appraisal: the one [`Trust`] type of the trust contract
/// (`nodetrust-proto`), shared by the server, the CLI and the labeller.
pub use nodetrust_proto::trust::Trust;

/// A verdict about one host at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    verdict: Trust,
    reasons: Vec<String>,
    attested_at: SystemTime,
    expires_at: SystemTime,
}

impl Verdict {
    pub(crate) fn trusted(reasons: Vec<String>, now: SystemTime, validity: Duration) -> Self {
        Self {
            verdict: Trust::Trusted,
            reasons,
            attested_at: now,
            expires_at: now + validity,
        }
    }

    /// An untrusted verdict: the evidence could not be verified, or did not match.
    pub fn untrusted(reasons: Vec<String>, now: SystemTime, validity: Duration) -> Self {
        Self {
            verdict: Trust::Untrusted,
            reasons,
            attested_at: now,
            expires_at: now + validity,
        }
    }

    /// An unknown verdict: no current evidence.
    pub fn unknown(reasons: Vec<String>, now: SystemTime, validity: Duration) -> Self {
        Self {
            verdict: Trust::Unknown,
            reasons,
            attested_at: now,
            expires_at: now + validity,
        }
    }

    /// The outcome.
    pub fn verdict(&self) -> Trust {
        self.verdict
    }

    /// Why: concrete sentences an operator can act on.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// When the evidence was appraised.
    pub fn attested_at(&self) -> SystemTime {
        self.attested_at
    }

    /// When the verdict stops holding.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Whether the verdict no longer holds at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}
