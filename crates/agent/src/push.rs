//! Push mode ([`nodetrust_proto::push`]): after registration the agent attests itself on the
//! Trust Server's schedule, for nodes that accept no inbound connection.
//!
//! Each round: `POST /mtwilson/v2/push/challenge` → the quote request the server attests with
//! now (fresh nonce, PCRs, banks, IMA offset); the agent answers it exactly as its HTTPS API
//! answers a pull server (the request goes through the agent's own router, in process: same
//! quote, same event and IMA logs, same checks); `POST /mtwilson/v2/push/evidence` → the
//! verdict, when to push next and, most of the time, the next challenge: the next round then
//! quotes that one and posts the evidence without asking (one request), and asks for a
//! challenge only when the server refuses it (409: its flavors changed, the TPM restarted, the
//! round came late, or another replica answers). The server names the event log and the PCR
//! values it holds in each challenge (their digests), and the agent leaves out what has not
//! changed; when the server needs it after all (409 `event_log_needed` or
//! `pcr_values_needed`), the agent answers a new challenge, which names nothing.
//! A failed round is logged and retried with
//! capped exponential backoff; the server's verdict expires on its own if the agent stops
//! pushing.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt as _;
use nodetrust_proto::agent::QuoteResponse;
use nodetrust_proto::push::{PushChallenge, PushChallengeRequest, PushEvidence, PushResult};
use tower::ServiceExt as _;

use crate::client::{Client, ClientError};
use crate::config::Credentials;
use crate::register::Backoff;

/// Challenge endpoint.
pub const CHALLENGE_PATH: &str = "/mtwilson/v2/push/challenge";
/// Evidence endpoint.
pub const EVIDENCE_PATH: &str = "/mtwilson/v2/push/evidence";
/// The 409 reasons of evidence that left out an event log, or PCR values, the server needs.
const NEEDED: [&str; 2] = ["event_log_needed", "pcr_values_needed"];
/// Shortest and longest wait between two pushes, whatever the server says.
const MIN_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Largest quote answer read from the agent's own router.
const MAX_ANSWER: usize = 64 << 20;

/// Why a push round failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Talking to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent could not answer the quote request (the TPM failed, a log is unreadable...).
    #[error("answering the server's quote request: {0}")]
    Quote(String),
}

/// Answers a quote request through the agent's own API router, as a pull server would get it.
pub async fn quote_locally(
    router: &axum::Router,
    admin: &Credentials,
    request: &nodetrust_proto::agent::QuoteRequest,
) -> Result<QuoteResponse, PushError> {
    let body = serde_json::to_vec(request).map_err(|e| PushError::Quote(e.to_string()))?;
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", admin.username, admin.password));
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v2/tpm/quote")
        .header("authorization", format!("Basic {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .map_err(|e| PushError::Quote(e.to_string()))?;
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| PushError::Quote(e.to_string()))?;
    let status = resp.status();
    let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| PushError::Quote(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(500).collect();
        return Err(PushError::Quote(format!(
            "HTTP {}: {text}",
            status.as_u16()
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| PushError::Quote(e.to_string()))
}

/// One round: challenge, quote, evidence. Returns the verdict, when to push next and the next
/// challenge, if the server gave one.
pub async fn push_once(
    client: &Client,
    router: &axum::Router,
    admin: &Credentials,
    host_name: &str,
) -> Result<PushResult, PushError> {
    let challenge: PushChallenge = client
        .post(
            CHALLENGE_PATH,
            &PushChallengeRequest {
                host_name: host_name.to_string(),
            },
        )
        .await?;
    answer(client, router, admin, host_name, challenge).await
}

/// Quotes `challenge` and posts the evidence.
async fn answer(
    client: &Client,
    router: &axum::Router,
    admin: &Credentials,
    host_name: &str,
    challenge: PushChallenge,
) -> Result<PushResult, PushError> {
    let evidence = quote_locally(router, admin, &challenge.quote).await?;
    let result: PushResult = client
        .post(
            EVIDENCE_PATH,
            &PushEvidence {
                host_name: host_name.to_string(),
                nonce: challenge.quote.nonce,
                evidence,
            },
        )
        .await?;
    Ok(result)
}

/// One round with the challenge the server gave ahead, if any: its evidence posted at once;
/// refused (409), or without one, a round that asks for a challenge ([`push_once`]).
pub async fn push_round(
    client: &Client,
    router: &axum::Router,
    admin: &Credentials,
    host_name: &str,
    ahead: Option<PushChallenge>,
) -> Result<PushResult, PushError> {
    if let Some(challenge) = ahead {
        match answer(client, router, admin, host_name, challenge).await {
            Err(PushError::Client(ClientError::Status {
                status: 409,
                reason,
                ..
            })) => {
                tracing::info!(%reason, "the challenge given ahead was refused; asking for a new one");
            }
            other => return other,
        }
    }
    match push_once(client, router, admin, host_name).await {
        // The log or the values were left out when the server needed them: the next challenge
        // names nothing.
        Err(PushError::Client(ClientError::Status {
            status: 409,
            reason,
            ..
        })) if NEEDED.contains(&reason.as_str()) => {
            tracing::info!(%reason, "the server needs what this agent left out; answering a new challenge with it");
            push_once(client, router, admin, host_name).await
        }
        other => other,
    }
}

/// Pushes forever: each round when the server said, a failed one again after a backoff.
pub async fn run(
    client: Client,
    router: axum::Router,
    admin: Credentials,
    host_name: String,
    backoff: Backoff,
) {
    let mut failures: u32 = 0;
    let mut ahead: Option<PushChallenge> = None;
    loop {
        let wait = match push_round(&client, &router, &admin, &host_name, ahead.take()).await {
            Ok(r) => {
                failures = 0;
                ahead = r.next;
                tracing::info!(
                    verdict = %r.report.verdict.as_str(),
                    expires = %r.report.expires,
                    next_in_ms = r.next_push_in_ms,
                    "pushed evidence to the Trust Server"
                );
                Duration::from_millis(r.next_push_in_ms).clamp(MIN_WAIT, MAX_WAIT)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = match &e {
                    PushError::Client(ClientError::Status {
                        retry_after: Some(d),
                        ..
                    }) => backoff.delay(failures).max(*d),
                    _ => backoff.delay(failures),
                };
                tracing::warn!(error = %e, attempt = failures, retry_in = ?wait, "push to the Trust Server failed");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
