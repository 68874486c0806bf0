//! Registration with the Trust Server (the runbook's boot sequence, steps 4-5).
//!
//! 1. Wait until the server answers, with capped exponential backoff (longer when the server
//!    answers 429 with `Retry-After`) and one log line per attempt, telling the failure as what
//!    it is ([`describe_failure`]): server not answering, certificate not trusted, account
//!    refused, EK not endorsed, host known with another TPM.
//! 2. `POST /mtwilson/v2/hosts/register`: host facts, EK public and certificate, AK public, the
//!    agent's URL and TLS fingerprint. The server answers with a MakeCredential challenge for
//!    (EK, AK Name).
//! 3. `TPM2_ActivateCredential` recovers the secret, which only a TPM holding both keys can:
//!    `POST /mtwilson/v2/hosts/register/{id}/activate` proves the AK.
//! 4. `POST /mtwilson/v2/agent-events` ([`AgentStarted`]) after every start, so a rebooted node is
//!    attested at once.
//!
//! The wire types are [`nodetrust_proto::registration`]; every request carries the agent's
//! account (`MTWILSON_API_USERNAME` / `MTWILSON_API_PASSWORD`) as basic auth.

use std::sync::Arc;
use std::time::Duration;

use nodetrust_proto::agent::HostInfo;
use nodetrust_proto::registration::{
    ActivateRequest, AgentStarted, RegisterChallenge, RegisterRequest, RegisterResult,
};
use nodetrust_tpm::{Attester, TpmError};

use crate::client::{Client, ClientError};

/// Registration endpoint.
pub const REGISTER_PATH: &str = "/mtwilson/v2/hosts/register";
/// Agent events endpoint.
pub const EVENTS_PATH: &str = "/mtwilson/v2/agent-events";

/// The activation endpoint for a challenge.
pub fn activate_path(challenge_id: &str) -> String {
    // The id is the server's; keep it to URL-safe characters.
    let safe: String = challenge_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    format!("{REGISTER_PATH}/{safe}/activate")
}

/// Capped exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after `attempt` failures (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What the agent tells the server about itself.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Host facts.
    pub host: HostInfo,
    /// URL the server uses to reach the agent.
    pub connection_url: String,
    /// SHA-256 (hex) of the agent's TLS certificate.
    pub tls_cert_sha256: String,
    /// Pull (the server asks) or push (the agent sends its evidence).
    pub mode: nodetrust_proto::push::AgentMode,
}

/// Why a registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Talking to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// A blocking task failed.
    #[error("internal error: {0}")]
    Internal(String),
}

async fn blocking<T: Send + 'static>(
    attester: &Arc<dyn Attester>,
    f: impl FnOnce(&dyn Attester) -> Result<T, TpmError> + Send + 'static,
) -> Result<T, RegisterError> {
    let a = Arc::clone(attester);
    tokio::task::spawn_blocking(move || f(a.as_ref()))
        .await
        .map_err(|e| RegisterError::Internal(e.to_string()))?
        .map_err(RegisterError::from)
}

/// One registration: register, activate. Returns the server's result.
pub async fn register_once(
    client: &Client,
    attester: &Arc<dyn Attester>,
    reg: &Registration,
) -> Result<RegisterResult, RegisterError> {
    let (ek, aik) = blocking(attester, |a| Ok((a.ek()?, a.ak_public()?))).await?;
    let request = RegisterRequest {
        host: reg.host.clone(),
        connection_url: reg.connection_url.clone(),
        tls_cert_sha256: reg.tls_cert_sha256.clone(),
        ek_public: ek.public,
        ek_certificate: ek.certificate,
        aik,
        mode: reg.mode,
    };
    let challenge: RegisterChallenge = client.post(REGISTER_PATH, &request).await?;
    tracing::info!(challenge = %challenge.challenge_id, "the Trust Server sent a credential challenge; activating it in the TPM");
    let (blob, secret) = (challenge.credential_blob, challenge.encrypted_secret);
    let secret = blocking(attester, move |a| a.activate_credential(&blob, &secret)).await?;
    let result: RegisterResult = client
        .post(
            &activate_path(&challenge.challenge_id),
            &ActivateRequest { secret },
        )
        .await?;
    Ok(result)
}

/// How a failed attempt is told in the log, and how long to wait before the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    /// Whether it is logged at ERROR (an operator must act) rather than WARN (it may pass by
    /// itself: the server starting, overloaded).
    pub error: bool,
    /// What happened and, when an operator must act, `remedy: <what to do>`.
    pub text: String,
    /// The least wait before the next attempt (the server's `Retry-After`).
    pub wait_at_least: Option<Duration>,
}

/// Tells the failure of `step` (registration, start notification) as what it is, following
/// the server's error `reason` when it gave one.
pub fn describe_failure(step: &str, e: &RegisterError) -> FailureReport {
    let report = |error: bool, text: String| FailureReport {
        error,
        text,
        wait_at_least: None,
    };
    let RegisterError::Client(c) = e else {
        return report(true, format!("{step} failed: {e}"));
    };
    match c {
        ClientError::Untrusted(m) => report(true, format!("{step}: {m}")),
        ClientError::Unreachable(m) if m.starts_with("TLS: ") => report(
            false,
            format!("{step}: the TLS handshake with the Trust Server failed ({m})"),
        ),
        ClientError::Unreachable(m) => report(
            false,
            format!("{step}: the Trust Server is not answering yet ({m})"),
        ),
        ClientError::Status {
            status: 429,
            reason,
            message,
            retry_after,
        } => FailureReport {
            error: false,
            text: format!(
                "{step}: the Trust Server is busy (HTTP 429, {reason}: {message}); waiting{} \
                 before the next attempt",
                retry_after
                    .map(|d| format!(" {}s as it asks", d.as_secs()))
                    .unwrap_or_default()
            ),
            wait_at_least: *retry_after,
        },
        ClientError::Status {
            status: 401,
            message,
            ..
        } => report(
            true,
            format!(
                "{step}: the Trust Server refused the agent's account (HTTP 401: {message}); \
                 remedy: check MTWILSON_API_USERNAME and MTWILSON_API_PASSWORD against the \
                 server's agent account (`nodetrust user list` on the server side)"
            ),
        ),
        ClientError::Status {
            status: 403,
            reason,
            message,
            ..
        } if reason == "ek_not_endorsed" => report(
            true,
            format!(
                "{step}: the server does not accept this TPM's EK: {message}; remedy: an \
                 administrator accepts it with `nodetrust endorsement add --ek-public FILE` \
                 (`tpm2_createek -u FILE`) or `--certificate FILE` (`tpm2_getekcertificate`), \
                 then this agent registers at its next attempt"
            ),
        ),
        ClientError::Status {
            status: 403,
            reason,
            message,
            ..
        } => report(
            true,
            format!(
                "{step}: the Trust Server forbids this to the agent's account (HTTP 403, \
                 {reason}: {message}); remedy: give the agent an account with the role agent \
                 (MTWILSON_API_USERNAME / MTWILSON_API_PASSWORD)"
            ),
        ),
        ClientError::Status {
            status: 409,
            reason,
            message,
            ..
        } if reason == "identity_conflict" => report(
            true,
            format!(
                "{step}: the server already has this host with another TPM: {message}; remedy: \
                 if this host's TPM was replaced or the host reinstalled, an administrator \
                 deletes the old record (`nodetrust hosts delete NAME`) and this agent \
                 registers at its next attempt; otherwise two machines claim the same host name \
                 or hardware UUID"
            ),
        ),
        ClientError::Status {
            status,
            reason,
            message,
            ..
        } if c.is_transient() => report(
            false,
            format!("{step}: the Trust Server failed (HTTP {status}, {reason}: {message})"),
        ),
        ClientError::Status {
            status,
            reason,
            message,
            ..
        } => report(
            true,
            format!("{step}: the Trust Server refused it (HTTP {status}, {reason}: {message})"),
        ),
        other => report(true, format!("{step} failed: {other}")),
    }
}

/// The wait before attempt `attempt + 1`: the backoff, or longer when the server asked.
pub fn next_delay(backoff: &Backoff, attempt: u32, report: &FailureReport) -> Duration {
    backoff
        .delay(attempt)
        .max(report.wait_at_least.unwrap_or_default())
}

fn log_failure(step: &str, attempt: u32, e: &RegisterError, backoff: &Backoff) -> Duration {
    let report = describe_failure(step, e);
    let next = next_delay(backoff, attempt, &report);
    if report.error {
        tracing::error!(attempt, retry_in = ?next, "{}; retrying", report.text);
    } else {
        tracing::warn!(attempt, retry_in = ?next, "{}; retrying", report.text);
    }
    next
}

/// Registers, retrying with `backoff` until it succeeds, then reports the start. Runs until done;
/// cancel it by dropping (aborting) the task.
pub async fn run(
    client: Client,
    attester: Arc<dyn Attester>,
    reg: Registration,
    backoff: Backoff,
) -> RegisterResult {
    let mut attempt: u32 = 0;
    let result = loop {
        attempt = attempt.saturating_add(1);
        tracing::info!(attempt, server = %format!("{}:{}", client.base().host, client.base().port), "registering with the Trust Server");
        match register_once(&client, &attester, &reg).await {
            Ok(r) => break r,
            Err(e) => {
                let next = log_failure("registration", attempt, &e, &backoff);
                tokio::time::sleep(next).await;
            }
        }
    };
    tracing::info!(
        host = %result.host_name,
        hardware_uuid = %result.hardware_uuid,
        replaced = result.replaced,
        "registered with the Trust Server; the AK is proven"
    );
    let started = AgentStarted {
        host_name: reg.host.host_name.clone(),
        hardware_uuid: reg.host.hardware_uuid.clone(),
    };
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        match client
            .post::<_, serde_json::Value>(EVENTS_PATH, &started)
            .await
        {
            Ok(_) => {
                tracing::info!("told the Trust Server the agent started");
                break;
            }
            Err(e) => {
                let next = log_failure(
                    "start notification",
                    attempt,
                    &RegisterError::Client(e),
                    &backoff,
                );
                tokio::time::sleep(next).await;
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(5), Duration::from_millis(1600));
        assert_eq!(b.delay(6), Duration::from_secs(2));
        assert_eq!(b.delay(1000), Duration::from_secs(2));
    }

    #[test]
    fn activate_path_is_sanitised() {
        assert_eq!(
            activate_path("ab-1"),
            "/mtwilson/v2/hosts/register/ab-1/activate"
        );
        assert_eq!(
            activate_path("../x?y"),
            "/mtwilson/v2/hosts/register/..xy/activate"
        );
    }
}
