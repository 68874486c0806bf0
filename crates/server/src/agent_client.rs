//! Talking to agents: the quote request the attestation engine sends.
//!
//! [`AgentConnector`] is the seam: the engine asks it for a quote, and for the rest of a host's
//! IMA log when it did not fit into the quote's answer. [`HttpsAgents`] is the
//! real one (HTTPS with the agent's certificate pinned, basic auth, a response size limit);
//! tests plug in software agents.
//!
//! [`HttpsAgents`] keeps the connection after a quote (HTTP/1.1 keep-alive) and reuses it for
//! the next quote to the same agent address with the same pinned certificate, so a host
//! attested every interval costs one TLS handshake per connection, not one per quote. A
//! reused connection the agent closed in the meantime is retried once on a new connection.
//! The HTTPS itself (connection, timeouts, size limit, pool) is the workspace's one client,
//! [`nodetrust_tls::client::HttpsClient`], with the pin as the pool's trust key.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use nodetrust_proto::agent::{ImaEntries, ImaRequest, QuoteRequest, QuoteResponse};
use nodetrust_tls::client::{Call, ClientLimits, HttpsClient, HttpsError, PoolLimits, Target};
use nodetrust_tls::BaseUrl;

use crate::tls;

/// A boxed future (the connector trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Largest quote response read (event logs included).
pub const MAX_RESPONSE: usize = 16 << 20;

/// Where an agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    /// Host name.
    pub host_name: String,
    /// Base URL (`https://10.0.0.5:1443`).
    pub url: String,
    /// Pinned SHA-256 (hex) of the agent's TLS certificate.
    pub tls_cert_sha256: String,
}

/// Why an agent gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The connection URL is not usable.
    #[error("bad agent URL {0:?}")]
    BadUrl(String),
    /// TCP connection failed.
    #[error("cannot connect to the agent: {0}")]
    Connect(String),
    /// The TLS handshake failed (for instance, the certificate is not the pinned one).
    #[error("TLS with the agent failed: {0}")]
    Tls(String),
    /// No answer in time.
    #[error("the agent did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The agent answered with an error status.
    #[error("the agent answered HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The agent answered, but not with a quote.
    #[error("the agent's answer is not a quote: {0}")]
    Malformed(String),
}

impl AgentError {
    /// A stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadUrl(_) => "bad_url",
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::Timeout(_) => "timeout",
            Self::Status { .. } => "http_status",
            Self::Malformed(_) => "malformed_response",
        }
    }

    /// Whether the failure says nothing about the host's integrity (network, timeout, agent
    /// down): the host is `unreachable`, never `untrusted`. A 200 answer that is not a quote is
    /// evidence that cannot be verified.
    pub fn is_unreachable(&self) -> bool {
        !matches!(self, Self::Malformed(_))
    }
}

/// Asks agents for quotes.
pub trait AgentConnector: Send + Sync + std::fmt::Debug {
    /// `POST /v2/tpm/quote` on the agent.
    fn quote<'a>(
        &'a self,
        target: &'a AgentTarget,
        req: &'a QuoteRequest,
    ) -> BoxFuture<'a, Result<QuoteResponse, AgentError>>;

    /// `POST /v2/ima` on the agent: more of its IMA log (what did not fit into the quote's
    /// answer). A connector without it answers that the agent has no such endpoint.
    fn ima<'a>(
        &'a self,
        target: &'a AgentTarget,
        req: &'a ImaRequest,
    ) -> BoxFuture<'a, Result<ImaEntries, AgentError>> {
        let _ = (target, req);
        Box::pin(async {
            Err(AgentError::Status {
                status: 404,
                body: "this agent serves no IMA log".to_string(),
            })
        })
    }
}

/// The HTTPS connector: the shared client of `nodetrust-tls`, pooled by agent address and
/// pinned certificate.
#[derive(Debug)]
pub struct HttpsAgents {
    timeout: std::time::Duration,
    credentials: Option<(String, String)>,
    configs: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    client: HttpsClient,
}

/// Idle connections kept per agent address (several virtual agents may share one address, as
/// behind a proxy or in the load generator): as many as the default number of attestations in
/// flight, so a burst of attestations to one address does not close most of its connections
/// and open them again with new TLS handshakes at the next burst.
const IDLE_PER_AGENT: usize = 64;
/// Idle connections kept in all.
const IDLE_TOTAL: usize = 4096;
/// An idle connection older than this is closed rather than reused (agents close idle
/// connections after their `--idle-timeout`; the default attestation interval is 60 s).
const IDLE_FOR: Duration = Duration::from_secs(90);

impl HttpsAgents {
    /// A connector with a per-request timeout and the agents' API credentials.
    pub fn new(timeout: std::time::Duration, credentials: Option<(String, String)>) -> Self {
        let pool = PoolLimits {
            per_key: IDLE_PER_AGENT,
            total: IDLE_TOTAL,
            idle_for: IDLE_FOR,
        };
        Self {
            timeout,
            credentials,
            configs: Mutex::new(HashMap::new()),
            client: HttpsClient::pooled(ClientLimits::new(timeout, MAX_RESPONSE), pool),
        }
    }

    fn config(&self, pin: &str) -> Result<Arc<rustls::ClientConfig>, AgentError> {
        if let Some(c) = self.configs.lock().ok().and_then(|m| m.get(pin).cloned()) {
            return Ok(c);
        }
        let c = tls::pinned_client_config(pin).map_err(|e| AgentError::Tls(e.to_string()))?;
        if let Ok(mut m) = self.configs.lock() {
            if m.len() > 100_000 {
                m.clear();
            }
            m.insert(pin.to_string(), c.clone());
        }
        Ok(c)
    }

    /// POSTs `req` as JSON to `path` under the agent's URL and reads the JSON answer.
    async fn post_json<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        target: &AgentTarget,
        path: &str,
        req: &Req,
    ) -> Result<Resp, AgentError> {
        let base =
            BaseUrl::parse(&target.url).map_err(|_| AgentError::BadUrl(target.url.clone()))?;
        let config = self.config(&target.tls_cert_sha256)?;
        let mut call = Call::json(Method::POST, path, req)
            .map_err(|e| AgentError::Malformed(e.to_string()))?;
        if let Some((user, password)) = &self.credentials {
            call = call
                .basic_auth(user, password)
                .map_err(|e| AgentError::BadUrl(e.to_string()))?;
        }
        let key = target.tls_cert_sha256.trim().to_ascii_lowercase();
        let target_tls = Target {
            base: &base,
            config: &config,
            trust_key: &key,
        };
        let answer = self
            .client
            .send(&target_tls, &call)
            .await
            .map_err(|e| self.agent_error(e, &target.url))?;
        if !answer.status.is_success() {
            let bytes = &answer.body;
            let text =
                String::from_utf8_lossy(bytes.get(..bytes.len().min(300)).unwrap_or_default())
                    .to_string();
            return Err(AgentError::Status {
                status: answer.status.as_u16(),
                body: text,
            });
        }
        serde_json::from_slice(&answer.body).map_err(|e| AgentError::Malformed(e.to_string()))
    }

    fn agent_error(&self, e: HttpsError, url: &str) -> AgentError {
        match e {
            HttpsError::BadHost(_) | HttpsError::Request(_) => AgentError::BadUrl(url.to_string()),
            HttpsError::Connect { source, .. } => AgentError::Connect(source.to_string()),
            HttpsError::Tls(e) => AgentError::Tls(e.to_string()),
            HttpsError::Http(e) => AgentError::Connect(e),
            HttpsError::Timeout(_) => AgentError::Timeout(self.timeout),
            e @ (HttpsError::TooLarge(_) | HttpsError::Body(_)) => {
                AgentError::Malformed(e.to_string())
            }
        }
    }
}

impl AgentConnector for HttpsAgents {
    fn quote<'a>(
        &'a self,
        target: &'a AgentTarget,
        req: &'a QuoteRequest,
    ) -> BoxFuture<'a, Result<QuoteResponse, AgentError>> {
        Box::pin(self.post_json(target, "/v2/tpm/quote", req))
    }

    fn ima<'a>(
        &'a self,
        target: &'a AgentTarget,
        req: &'a ImaRequest,
    ) -> BoxFuture<'a, Result<ImaEntries, AgentError>> {
        Box::pin(self.post_json(target, "/v2/ima", req))
    }
}
