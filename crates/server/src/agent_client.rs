//! Talking to agents: the quote request the attestation engine sends.
//!
//! [`AgentConnector`] is the seam: the engine only asks it for a quote. [`HttpsAgents`] is the
//! real one (HTTPS with the agent's certificate pinned, basic auth, a response size limit);
//! tests plug in software agents.
//!
//! [`HttpsAgents`] keeps the connection after a quote (HTTP/1.1 keep-alive) and reuses it for
//! the next quote to the same agent address with the same pinned certificate, so a host
//! attested every interval costs one TLS handshake per connection, not one per quote. A
//! reused connection the agent closed in the meantime is retried once on a new connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, Method, Request, Uri};
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use rustls::pki_types::ServerName;

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
}

/// The HTTPS connector.
#[derive(Debug)]
pub struct HttpsAgents {
    timeout: std::time::Duration,
    authorization: Option<String>,
    configs: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    idle: IdlePool,
}

impl HttpsAgents {
    /// A connector with a per-request timeout and the agents' API credentials.
    pub fn new(timeout: std::time::Duration, credentials: Option<(String, String)>) -> Self {
        let authorization = credentials.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        Self {
            timeout,
            authorization,
            configs: Mutex::new(HashMap::new()),
            idle: IdlePool::default(),
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

    /// A connection to `target`: an idle one kept from an earlier quote when there is one
    /// (`reused` true), else a new TCP connection and TLS handshake with the pinned certificate.
    async fn connection(
        &self,
        key: &PoolKey,
        target: &AgentTarget,
        host: &str,
        port: u16,
    ) -> Result<(Sender, bool), AgentError> {
        if let Some(sender) = self.idle.take(key) {
            return Ok((sender, true));
        }
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| AgentError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| AgentError::BadUrl(target.url.clone()))?;
        let connector = tokio_rustls::TlsConnector::from(self.config(&target.tls_cert_sha256)?);
        let stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AgentError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender, false))
    }

    async fn post_quote(
        &self,
        target: &AgentTarget,
        req: &QuoteRequest,
    ) -> Result<QuoteResponse, AgentError> {
        let uri: Uri = target
            .url
            .parse()
            .map_err(|_| AgentError::BadUrl(target.url.clone()))?;
        if uri.scheme_str() != Some("https") {
            return Err(AgentError::BadUrl(target.url.clone()));
        }
        let host = uri
            .host()
            .ok_or_else(|| AgentError::BadUrl(target.url.clone()))?
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let base = uri.path().trim_end_matches('/');
        let body =
            bytes_of(serde_json::to_vec(req).map_err(|e| AgentError::Malformed(e.to_string()))?);
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
        let key = PoolKey {
            authority: authority.to_string(),
            pin: target.tls_cert_sha256.clone(),
        };
        let make_request = || {
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri(format!("{base}/v2/tpm/quote"))
                .header(header::HOST, authority)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json");
            if let Some(a) = &self.authorization {
                builder = builder.header(header::AUTHORIZATION, a);
            }
            builder
                .body(Full::new(body.clone()))
                .map_err(|e| AgentError::BadUrl(e.to_string()))
        };
        let (mut sender, reused) = self.connection(&key, target, &bare_host, port).await?;
        let resp = match sender.send_request(make_request()?).await {
            Ok(r) => r,
            // The agent closed the idle connection as it was taken (its keep-alive ran out):
            // once more on a new connection, which decides.
            Err(_) if reused => {
                let (fresh, _) = self.connection_new(&key, target, &bare_host, port).await?;
                sender = fresh;
                sender
                    .send_request(make_request()?)
                    .await
                    .map_err(|e| AgentError::Connect(e.to_string()))?
            }
            Err(e) => return Err(AgentError::Connect(e.to_string())),
        };
        let status = resp.status();
        let keep = resp
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| !v.eq_ignore_ascii_case("close"));
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| AgentError::Malformed(format!("reading the body: {e}")))?
            .to_bytes();
        // The whole answer was read: the connection can carry the next quote.
        if keep {
            self.idle.put(key, sender);
        }
        if !status.is_success() {
            let text =
                String::from_utf8_lossy(bytes.get(..bytes.len().min(300)).unwrap_or_default())
                    .to_string();
            return Err(AgentError::Status {
                status: status.as_u16(),
                body: text,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| AgentError::Malformed(e.to_string()))
    }

    async fn connection_new(
        &self,
        key: &PoolKey,
        target: &AgentTarget,
        host: &str,
        port: u16,
    ) -> Result<(Sender, bool), AgentError> {
        self.idle.forget(key);
        self.connection(key, target, host, port).await
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<hyper::body::Bytes>>;

/// Idle connections are per agent address and pinned certificate: a connection is only ever
/// reused for the agent whose certificate it was opened against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    authority: String,
    pin: String,
}

/// Idle agent connections kept after a quote, for the next one.
#[derive(Debug, Default)]
struct IdlePool {
    conns: Mutex<IdleMap>,
}

#[derive(Debug, Default)]
struct IdleMap {
    by_key: HashMap<PoolKey, Vec<(Instant, Sender)>>,
    total: usize,
}

/// Idle connections kept per agent address (several virtual agents may share one address).
const IDLE_PER_AGENT: usize = 16;
/// Idle connections kept in all.
const IDLE_TOTAL: usize = 4096;
/// An idle connection older than this is closed rather than reused (agents close idle
/// connections after a while; the default attestation interval is 60 s).
const IDLE_FOR: Duration = Duration::from_secs(90);

impl IdlePool {
    fn take(&self, key: &PoolKey) -> Option<Sender> {
        let mut m = self.conns.lock().ok()?;
        let m = &mut *m;
        let list = m.by_key.get_mut(key)?;
        let mut found = None;
        while let Some((at, sender)) = list.pop() {
            m.total = m.total.saturating_sub(1);
            if at.elapsed() < IDLE_FOR && !sender.is_closed() && sender.is_ready() {
                found = Some(sender);
                break;
            }
        }
        if list.is_empty() {
            m.by_key.remove(key);
        }
        found
    }

    fn put(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut m) = self.conns.lock() else { return };
        let m = &mut *m;
        if m.total >= IDLE_TOTAL {
            // Full: drop the stale ones, and this one when that frees nothing.
            m.by_key.retain(|_, list| {
                list.retain(|(at, s)| at.elapsed() < IDLE_FOR && !s.is_closed());
                !list.is_empty()
            });
            m.total = m.by_key.values().map(Vec::len).sum();
            if m.total >= IDLE_TOTAL {
                return;
            }
        }
        let list = m.by_key.entry(key).or_default();
        if list.len() < IDLE_PER_AGENT {
            list.push((Instant::now(), sender));
            m.total += 1;
        }
    }

    fn forget(&self, key: &PoolKey) {
        if let Ok(mut m) = self.conns.lock() {
            if let Some(list) = m.by_key.remove(key) {
                m.total = m.total.saturating_sub(list.len());
            }
        }
    }
}

fn bytes_of(v: Vec<u8>) -> hyper::body::Bytes {
    hyper::body::Bytes::from(v)
}

impl AgentConnector for HttpsAgents {
    fn quote<'a>(
        &'a self,
        target: &'a AgentTarget,
        req: &'a QuoteRequest,
    ) -> BoxFuture<'a, Result<QuoteResponse, AgentError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.post_quote(target, req)).await {
                Ok(r) => r,
                Err(_) => Err(AgentError::Timeout(self.timeout)),
            }
        })
    }
}
