//! Push mode: the agent initiates each attestation (nodes behind NAT or a firewall that forbids
//! inbound connections), on the server's schedule; the server never connects to a push host.
//!
//! 1. Registration as in pull mode, with [`AgentMode::Push`] in
//!    [`RegisterRequest::mode`](crate::registration::RegisterRequest::mode): the connection URL
//!    and TLS pin are then not used.
//! 2. `POST /mtwilson/v2/push/challenge` [`PushChallengeRequest`] (agent account) →
//!    [`PushChallenge`]: the quote request (fresh nonce, PCRs and banks the host's flavors need)
//!    the server attests this host with now.
//! 3. The agent quotes it and posts the answer: `POST /mtwilson/v2/push/evidence`
//!    [`PushEvidence`] → [`PushResult`]: the verdict, from the same checks and appraisal as a
//!    pull attestation, and when to push next.
//! 4. Most results also carry the next challenge ([`PushResult::next`]): when the time comes,
//!    the agent quotes it and posts the evidence at once, one request per attestation. The
//!    server takes it while the host's flavors ask the same PCRs and the quote is provably
//!    fresh (its TPM clock, in the same boot, ran as long as the wait); otherwise it answers
//!    409 `challenge_stale` (or `no_open_challenge`: expired, or given by another replica) and
//!    the agent asks for a challenge as in step 2.
//!
//! A verdict holds until its expiry as in pull mode: an agent that stops pushing leaves its
//! host `unknown` once the last verdict expires.

use serde::{Deserialize, Serialize};

use crate::agent::{QuoteRequest, QuoteResponse};
use crate::views::ReportView;

/// How the server attests a host: it asks the agent (pull, the default) or the agent sends
/// its evidence on the server's schedule (push).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// The server connects to the agent's HTTPS API and asks for a quote.
    #[default]
    Pull,
    /// The agent asks for a challenge and posts its evidence; the server never connects out.
    Push,
}

impl AgentMode {
    /// Whether this is [`AgentMode::Pull`] (the default, left out of registrations).
    pub fn is_pull(&self) -> bool {
        *self == Self::Pull
    }

    /// `pull` or `push`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
        }
    }
}

/// `POST /mtwilson/v2/push/challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushChallengeRequest {
    /// The registered host.
    pub host_name: String,
}

/// The quote the server asks of a push host now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushChallenge {
    /// What to quote, as the server would ask a pull agent (`POST /v2/tpm/quote`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub quote: QuoteRequest,
    /// How long the server waits for the evidence, in milliseconds (for a challenge given
    /// ahead, [`PushResult::next`]: from the result on).
    pub evidence_within_ms: u64,
}

/// `POST /mtwilson/v2/push/evidence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushEvidence {
    /// The registered host.
    pub host_name: String,
    /// The challenge's nonce, as received.
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
    pub nonce: Vec<u8>,
    /// The agent's answer to the challenge's quote request, as a pull agent answers it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub evidence: QuoteResponse,
}

/// The verdict of pushed evidence, and when to push next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushResult {
    /// The signed report of this attestation.
    pub report: ReportView,
    /// Push again in this many milliseconds.
    pub next_push_in_ms: u64,
    /// The challenge to answer then, without asking for one: quote it and post the evidence.
    /// Absent (hosts with RUNTIME flavors, an unverified quote), or answered 409, the agent
    /// asks for a challenge first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<PushChallenge>,
}
