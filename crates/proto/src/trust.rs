//! The trust contract: what the server says about a host's trust, and the one function that
//! decides the verdict a host has at a moment ([`EffectiveTrust::at`]).
//!
//! The server stores a verdict with its expiry; the API, the CLI, the labeller and `doctor`
//! all read it through [`EffectiveTrust::at`], so "an expired verdict is `unknown`" is decided
//! in one place. A network error is never `untrusted`: an unreachable agent keeps its last
//! verdict until it expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Whether the server can reach a host's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Registered, not attested yet.
    Pending,
    /// The agent answered the last attestation.
    Connected,
    /// The agent did not answer the last attestation.
    Unreachable,
}

impl HostStatus {
    /// `pending`, `connected`, `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Unreachable => "unreachable",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "connected" => Some(Self::Connected),
            "unreachable" => Some(Self::Unreachable),
            _ => None,
        }
    }
}

impl std::fmt::Display for HostStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3339 with milliseconds, UTC, of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_millis(ms)).to_string()
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text).ok().map(millis)
}

/// Unix milliseconds of a time (0 before the epoch, saturating).
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time of Unix milliseconds (negative values are the epoch).
pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A host's trust as the API shows it (`"trust"` in a host): its effective verdict at the
/// moment of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustView {
    /// The effective verdict.
    pub verdict: Trust,
    /// Why: every reason of an untrusted verdict, what was matched for a trusted one, why the
    /// verdict is unknown.
    pub reasons: Vec<String>,
    /// RFC 3339, when the last verdict was reached.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub attested_at: Option<String>,
    /// RFC 3339, when the last verdict expires (or expired).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: Option<String>,
}

/// What the server stored about a host's trust: the last verdict, when it was reached, when it
/// expires, and whether the agent answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveTrust {
    /// The last stored verdict; `None` when never attested.
    pub verdict: Option<Trust>,
    /// Its reasons.
    pub reasons: Vec<String>,
    /// Unix ms, when reached.
    pub attested_at: Option<i64>,
    /// Unix ms, when it expires.
    pub expires_at: Option<i64>,
    /// Whether the agent answers.
    pub status: HostStatus,
    /// The last agent error, if any.
    pub status_detail: Option<String>,
}

/// The verdict a host has at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAt {
    /// The verdict that holds now.
    pub verdict: Trust,
    /// Why.
    pub reasons: Vec<String>,
    /// Unix ms, when the last verdict was reached.
    pub attested_at: Option<i64>,
    /// Unix ms, when the last verdict expires.
    pub expires_at: Option<i64>,
    /// How long ago the last verdict expired (`None` while it holds or when there is none).
    pub expired_for: Option<Duration>,
    /// The verdict last reached, even when expired (`None` when never attested).
    pub last_verdict: Option<Trust>,
}

impl EffectiveTrust {
    /// The one rule: a stored verdict holds until its expiry; after that, or when there is
    /// none, the host is `unknown`, with the reason (and, when the agent is unreachable, its
    /// error). Nothing else may re-derive it.
    pub fn at(&self, now_ms: i64) -> TrustAt {
        let (Some(verdict), Some(attested), Some(expires)) =
            (self.verdict, self.attested_at, self.expires_at)
        else {
            let mut reasons = vec!["not attested yet".to_string()];
            reasons.extend(self.status_detail.clone());
            return TrustAt {
                verdict: Trust::Unknown,
                reasons,
                attested_at: None,
                expires_at: None,
                expired_for: None,
                last_verdict: None,
            };
        };
        if now_ms < expires || verdict == Trust::Unknown {
            let expired_for = (now_ms >= expires)
                .then(|| Duration::from_millis(u64::try_from(now_ms - expires).unwrap_or(0)));
            return TrustAt {
                verdict,
                reasons: self.reasons.clone(),
                attested_at: Some(attested),
                expires_at: Some(expires),
                expired_for,
                last_verdict: Some(verdict),
            };
        }
        let mut why = vec![format!(
            "the last verdict ({verdict}, attested {}) expired at {}",
            rfc3339(attested),
            rfc3339(expires)
        )];
        if self.status == HostStatus::Unreachable {
            why.push(format!(
                "the agent is unreachable: {}",
                self.status_detail.as_deref().unwrap_or("no answer")
            ));
        }
        TrustAt {
            verdict: Trust::Unknown,
            reasons: why,
            attested_at: Some(attested),
            expires_at: Some(expires),
            expired_for: Some(Duration::from_millis(
                u64::try_from(now_ms.saturating_sub(expires)).unwrap_or(0),
            )),
            last_verdict: Some(verdict),
        }
    }
}

impl TrustAt {
    /// The API's view.
    pub fn view(&self) -> TrustView {
        TrustView {
            verdict: self.verdict,
            reasons: self.reasons.clone(),
            attested_at: self.attested_at.map(rfc3339),
            expires_at: self.expires_at.map(rfc3339),
        }
    }
}

impl TrustView {
    /// Reads back what [`TrustAt::view`] wrote, as seen at `now_ms` by a client (the
    /// standalone labeller): how long the verdict has been expired, if it has.
    pub fn expired_for(&self, now_ms: i64) -> Option<Duration> {
        let expires = parse_rfc3339(self.expires_at.as_deref()?)?;
        (now_ms >= expires)
            .then(|| Duration::from_millis(u64::try_from(now_ms - expires).unwrap_or(0)))
    }
}

/// What happened to a host, in the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A new verdict differs from the previous one.
    Verdict,
    /// The host registered (or re-registered).
    Registered,
    /// The host was deleted (or replaced under another name).
    Deleted,
    /// The agent's reachability changed.
    Status,
}

impl ChangeKind {
    /// `verdict`, `registered`, `deleted`, `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verdict => "verdict",
            Self::Registered => "registered",
            Self::Deleted => "deleted",
            Self::Status => "status",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "verdict" => Some(Self::Verdict),
            "registered" => Some(Self::Registered),
            "deleted" => Some(Self::Deleted),
            "status" => Some(Self::Status),
            _ => None,
        }
    }
}

/// One entry of the durable change feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Sequence number: increasing, never reused (there may be gaps).
    pub seq: i64,
    /// The host concerned.
    pub host: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The new verdict, for [`ChangeKind::Verdict`].
    pub trust: Option<Trust>,
    /// Unix ms, when committed.
    pub at: i64,
}

/// What a follower of the change feed receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// The next change.
    Change(ChangeEvent),
    /// The follower's position is older than what the feed keeps (`--change-retention`):
    /// changes were lost to it, so it must re-read every host (the role of a Kubernetes 410),
    /// then continue after `resume_after`.
    Resync {
        /// Where to continue after re-reading everything.
        resume_after: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(verdict: Option<Trust>, status: HostStatus) -> EffectiveTrust {
        EffectiveTrust {
            verdict,
            reasons: vec!["r".into()],
            attested_at: verdict.map(|_| 1_000),
            expires_at: verdict.map(|_| 11_000),
            status,
            status_detail: Some("connection refused".into()),
        }
    }

    #[test]
    fn a_verdict_holds_until_its_expiry() {
        let s = stored(Some(Trust::Untrusted), HostStatus::Connected);
        let t = s.at(10_999);
        assert_eq!(t.verdict, Trust::Untrusted);
        assert_eq!(t.reasons, vec!["r".to_string()]);
        assert_eq!(t.expired_for, None);
        let t = s.at(11_000);
        assert_eq!(t.verdict, Trust::Unknown);
        assert_eq!(t.last_verdict, Some(Trust::Untrusted));
        assert_eq!(t.expired_for, Some(Duration::ZERO));
        assert!(t.reasons[0].contains("expired"), "{:?}", t.reasons);
        assert_eq!(s.at(15_000).expired_for, Some(Duration::from_secs(4)));
    }

    #[test]
    fn never_attested_is_unknown_with_the_agent_error() {
        let t = stored(None, HostStatus::Unreachable).at(5);
        assert_eq!(t.verdict, Trust::Unknown);
        assert_eq!(t.last_verdict, None);
        assert_eq!(t.reasons, vec!["not attested yet", "connection refused"]);
    }

    #[test]
    fn unreachable_after_expiry_says_so() {
        let t = stored(Some(Trust::Trusted), HostStatus::Unreachable).at(20_000);
        assert_eq!(t.verdict, Trust::Unknown);
        assert!(t.reasons[1].contains("unreachable: connection refused"));
        let t = stored(Some(Trust::Trusted), HostStatus::Connected).at(20_000);
        assert_eq!(t.reasons.len(), 1);
    }

    #[test]
    fn view_round_trips_expiry() {
        let s = stored(Some(Trust::Trusted), HostStatus::Connected);
        let v = s.at(2_000).view();
        let json = serde_json::to_string(&v).unwrap();
        assert!(
            json.starts_with(
                r#"{"verdict":"trusted","reasons":["r"],"attested_at":"1970-01-01T00:00:01.000Z""#
            ),
            "{json}"
        );
        let back: TrustView = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expired_for(10_000), None);
        assert_eq!(back.expired_for(12_500), Some(Duration::from_millis(1_500)));
    }

    #[test]
    fn enums_parse_their_own_text() {
        for t in [Trust::Trusted, Trust::Untrusted, Trust::Unknown] {
            assert_eq!(Trust::parse(t.as_str()), Some(t));
        }
        for s in [
            HostStatus::Pending,
            HostStatus::Connected,
            HostStatus::Unreachable,
        ] {
            assert_eq!(HostStatus::parse(s.as_str()), Some(s));
        }
        for k in [
            ChangeKind::Verdict,
            ChangeKind::Registered,
            ChangeKind::Deleted,
            ChangeKind::Status,
        ] {
            assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Trust::parse("TRUSTED"), None);
    }
}
