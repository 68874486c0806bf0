//! Verdicts: trusted / untrusted / unknown, with reasons and an expiry.
//!
//! A [`Verdict`] cannot be built as `Trusted` outside this crate: [`Verdict::untrusted`] and
//! [`Verdict::unknown`] are public, the trusted constructor is crate-private and used only by
//! [`appraise`](crate::appraise) after it has been handed a verified quote.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::flavor::FlavorPart;

/// The outcome of an appraisal: the one [`Trust`] type of the trust contract
/// (`nodetrust-proto`), shared by the server, the CLI and the labeller.
pub use nodetrust_proto::trust::Trust;

/// Why appraisal did not trust a host: a kind with a stable [`reason`](Failure::reason) label
/// for metrics and logs (the verdict's reasons are the sentences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The event log does not replay to the quoted PCRs (an altered or incomplete log).
    ReplayMismatch,
    /// The evidence verified and replayed, but a required part has no flavor at all.
    NoFlavor {
        /// The first such part.
        part: FlavorPart,
    },
    /// The evidence verified and replayed, but matched none of a required part's flavors.
    FlavorMismatch {
        /// The first such part.
        part: FlavorPart,
    },
}

impl Failure {
    /// `replay_mismatch`, `no_flavor`, `flavor_mismatch`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ReplayMismatch => "replay_mismatch",
            Self::NoFlavor { .. } => "no_flavor",
            Self::FlavorMismatch { .. } => "flavor_mismatch",
        }
    }

    /// The flavor part that failed, for [`NoFlavor`](Self::NoFlavor) and
    /// [`FlavorMismatch`](Self::FlavorMismatch).
    pub fn part(self) -> Option<FlavorPart> {
        match self {
            Self::NoFlavor { part } | Self::FlavorMismatch { part } => Some(part),
            _ => None,
        }
    }
}

/// A verdict about one host at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    verdict: Trust,
    failure: Option<Failure>,
    /// Shared: a verdict renewed from a kept appraisal ([`Verdict::renewed`]) carries the same
    /// sentences, and copies none.
    reasons: Arc<[String]>,
    attested_at: SystemTime,
    expires_at: SystemTime,
}

impl Verdict {
    pub(crate) fn trusted(reasons: Vec<String>, now: SystemTime, validity: Duration) -> Self {
        Self {
            verdict: Trust::Trusted,
            failure: None,
            reasons: reasons.into(),
            attested_at: now,
            expires_at: now + validity,
        }
    }

    /// An untrusted verdict: the evidence could not be verified, or did not match. Its
    /// [`failure`](Self::failure) is `None`: the caller knows why (a rejected quote).
    pub fn untrusted(reasons: Vec<String>, now: SystemTime, validity: Duration) -> Self {
        Self {
            verdict: Trust::Untrusted,
            failure: None,
            reasons: reasons.into(),
            attested_at: now,
            expires_at: now + validity,
        }
    }

    /// An untrusted verdict from appraisal, with the kind of failure.
    pub(crate) fn failed(
        failure: Failure,
        reasons: Vec<String>,
        now: SystemTime,
        validity: Duration,
    ) -> Self {
        Self {
            verdict: Trust::Untrusted,
            failure: Some(failure),
            reasons: reasons.into(),
            attested_at: now,
            expires_at: now + validity,
        }
    }

    /// An unknown verdict: no current evidence.
    pub fn unknown(reasons: Vec<String>, now: SystemTime, validity: Duration) -> Self {
        Self {
            verdict: Trust::Unknown,
            failure: None,
            reasons: reasons.into(),
            attested_at: now,
            expires_at: now + validity,
        }
    }

    /// The same verdict (outcome, failure, reasons) made again at `now`, valid for `validity`:
    /// for evidence appraised exactly as this verdict's was (the server reuses a trusted
    /// appraisal while its inputs are unchanged).
    pub fn renewed(&self, now: SystemTime, validity: Duration) -> Self {
        Self {
            attested_at: now,
            expires_at: now + validity,
            ..self.clone()
        }
    }

    /// The outcome.
    pub fn verdict(&self) -> Trust {
        self.verdict
    }

    /// Why appraisal did not trust the host, as a kind; `None` when trusted, unknown, or
    /// made untrusted by the caller ([`Verdict::untrusted`]).
    pub fn failure(&self) -> Option<Failure> {
        self.failure
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
