//! A small HTTPS JSON client for the registration exchange: one connection per request
//! (registration happens once per start), rustls with the configured server trust, basic auth.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use nodetrust_proto::ErrorBody;
use nodetrust_tls::{certificate_rejection, ServerVerifier, TrustFlags};

use crate::config::Credentials;

/// Largest response body read.
pub const MAX_RESPONSE: usize = 1 << 20;
/// Time allowed for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `https://host[:port][/path]`.
    #[error("bad server URL {0:?}: expected https://host[:port][/path]")]
    Url(String),
    /// No connection (refused, unreachable, DNS, a TLS failure other than trust) or no
    /// answer in time.
    #[error("server not reachable: {0}")]
    Unreachable(String),
    /// The server's certificate is not trusted: `server certificate not trusted: <cause>;
    /// remedy: <what to do>`. Retrying does not help until the configuration changes.
    #[error("{0}")]
    Untrusted(String),
    /// The server answered with an error status.
    #[error("server answered HTTP {status} ({reason}): {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The server's stable reason (`ek_not_endorsed`, `identity_conflict`...), or
        /// `http_<status>` when the body is not the API's error.
        reason: String,
        /// The server's sentence, or the body's start (bounded, control characters removed).
        message: String,
        /// How long the server asked to wait (`Retry-After`, seconds; at most an hour).
        retry_after: Option<Duration>,
    },
    /// The answer was not what the API defines.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    /// Whether waiting and retrying may help (server down or starting, overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Untrusted(_) => false,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

pub use nodetrust_tls::BaseUrl;

impl From<nodetrust_tls::UrlError> for ClientError {
    fn from(e: nodetrust_tls::UrlError) -> Self {
        ClientError::Url(e.0)
    }
}

/// The agent's options to trust the server, named in remedies.
const FLAGS: TrustFlags = TrustFlags {
    ca: "--server-ca",
    pin: "--server-pin",
};

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A client for one server.
#[derive(Clone)]
pub struct Client {
    base: BaseUrl,
    tls: TlsConnector,
    authorization: String,
    verifier: Option<Arc<ServerVerifier>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url` with TLS `config` and basic-auth `credentials`.
    pub fn new(
        url: &str,
        config: Arc<rustls::ClientConfig>,
        credentials: &Credentials,
    ) -> Result<Self, ClientError> {
        let base = BaseUrl::parse(url)?;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        Ok(Self {
            base,
            tls: TlsConnector::from(config),
            authorization: format!("Basic {token}"),
            verifier: None,
        })
    }

    /// The same client, told which verifier `config` uses, so that a trust failure names the
    /// certificate the server presented ([`crate::tls::client_trust`] returns both).
    pub fn with_verifier(mut self, verifier: Arc<ServerVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// `POST path` with a JSON body; decodes a JSON answer.
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.send(Method::POST, path, bytes))
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!("no answer within {REQUEST_TIMEOUT:?}"))
            })??;
        if answer.is_empty() {
            return serde_json::from_slice(b"null").map_err(|e| ClientError::Decode(e.to_string()));
        }
        serde_json::from_slice(&answer).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET path`; decodes a JSON answer.
    pub async fn get<Resp: DeserializeOwned>(&self, path: &str) -> Result<Resp, ClientError> {
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, self.send(Method::GET, path, Vec::new()))
                .await
                .map_err(|_| {
                    ClientError::Unreachable(format!("no answer within {REQUEST_TIMEOUT:?}"))
                })??;
        serde_json::from_slice(&answer).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A certificate rejection told as such, naming the certificate presented when the
    /// verifier is known.
    fn untrusted(&self, cause: &rustls::CertificateError) -> ClientError {
        ClientError::Untrusted(match &self.verifier {
            Some(v) => v.not_trusted(cause, &FLAGS),
            None => format!(
                "server certificate not trusted: {cause:?}; remedy: give {} the PEM file of the \
                 CA that issued it (or the server's certificate itself), or its SHA-256 with {}",
                FLAGS.ca, FLAGS.pin
            ),
        })
    }

    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Bytes, ClientError> {
        let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable(e.to_string());
        let tcp = TcpStream::connect((self.base.host.as_str(), self.base.port))
            .await
            .map_err(|e| unreachable(&format!("{}: {e}", self.base.authority())))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.base.host.clone())
            .map_err(|_| ClientError::Url(self.base.host.clone()))?;
        let tls =
            self.tls
                .connect(name, tcp)
                .await
                .map_err(|e| match certificate_rejection(&e) {
                    Some(cause) => self.untrusted(cause),
                    None => unreachable(&format!("TLS: {e}")),
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(&e))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let host_header = self.base.authority();
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base.path, path))
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                format!("{}/{}", crate::NAME, crate::VERSION),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Decode(format!("reading the body: {e}")))?
            .to_bytes();
        driver.abort();
        if status.is_success() {
            Ok(bytes)
        } else {
            let (reason, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (bounded(&b.reason, 64), bounded(&b.error, 1000)),
                Err(_) => (
                    format!("http_{}", status.as_u16()),
                    bounded(String::from_utf8_lossy(&bytes).trim(), 500),
                ),
            };
            Err(ClientError::Status {
                status: status.as_u16(),
                reason,
                message,
                retry_after,
            })
        }
    }
}

/// `s` cut to `max` characters, control characters replaced (it goes to a log line).
fn bounded(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether the status is 401 or 403.
pub fn is_auth_status(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED.as_u16() || *status == StatusCode::FORBIDDEN.as_u16())
}
