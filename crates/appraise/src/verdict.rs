//! Verdicts: trusted / untrusted / unknown, with reasons and an expiry.
//!
//! A [`Verdict`] cannot be built as `Trusted` outside this crate: [`Verdict::untrusted`] and
//! [`Verdict::unknown`] are public, the trusted constructor is crate-private and used only by
//! [`appraise`](crate::appraise) after it has been handed a verified quote.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The outcome of an appraisal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Verified evidence matched a flavor for every required part.
    Trusted,
    /// Evidence was unverifiable, or verified and did not match.
    Untrusted,
    /// No current evidence (never attested, or the last verdict expired while the agent was
    /// unreachable). Never a statement that the host is bad.
    Unknown,
}

impl Trust {
    /// `trusted`, `untrusted`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Untrusted => "untrusted",
            Self::Unknown => "unknown",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "trusted" => Some(Self::Trusted),
            "untrusted" => Some(Self::Untrusted),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}

impl std::fmt::Display for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
