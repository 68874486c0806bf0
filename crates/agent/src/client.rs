//! A small HTTPS JSON client for the registration exchange and push mode: the workspace's one
//! HTTPS client ([`nodetrust_tls::client`]) with one connection per request (registration
//! happens once per start), rustls with the configured server trust, basic auth.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use nodetrust_proto::ErrorBody;
use nodetrust_tls::client::{Answer, Call, ClientLimits, HttpsClient, HttpsError, Target};
use nodetrust_tls::{ServerVerifier, TrustFlags};

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
    config: Arc<rustls::ClientConfig>,
    http: Arc<HttpsClient>,
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
        Ok(Self {
            base,
            config,
            http: Arc::new(HttpsClient::new(ClientLimits::new(
                REQUEST_TIMEOUT,
                MAX_RESPONSE,
            ))),
            authorization: nodetrust_tls::client::basic_auth(
                &credentials.username,
                &credentials.password,
            ),
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
        let call =
            Call::json(Method::POST, path, body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send(call)
            .await?
            .json()
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET path`; decodes a JSON answer.
    pub async fn get<Resp: DeserializeOwned>(&self, path: &str) -> Result<Resp, ClientError> {
        let answer = self.send(Call::new(Method::GET, path)).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Decode(e.to_string()))
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

    async fn send(&self, call: Call) -> Result<Answer, ClientError> {
        let call = call
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .and_then(|c| {
                c.header(
                    hyper::header::USER_AGENT,
                    &format!("{}/{}", crate::NAME, crate::VERSION),
                )
            })
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let target = Target {
            base: &self.base,
            config: &self.config,
            trust_key: "",
        };
        let answer = self
            .http
            .send(&target, &call)
            .await
            .map_err(|e| self.failure(e))?;
        let status = answer.status;
        if status.is_success() {
            return Ok(answer);
        }
        let (reason, message) = match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(b) => (bounded(&b.reason, 64), bounded(&b.error, 1000)),
            Err(_) => (
                format!("http_{}", status.as_u16()),
                bounded(String::from_utf8_lossy(&answer.body).trim(), 500),
            ),
        };
        Err(ClientError::Status {
            status: status.as_u16(),
            reason,
            message,
            retry_after: answer.retry_after(MAX_RETRY_AFTER),
        })
    }

    fn failure(&self, e: HttpsError) -> ClientError {
        if let Some(cause) = e.rejection() {
            return self.untrusted(cause);
        }
        match e {
            HttpsError::BadHost(h) => ClientError::Url(h),
            HttpsError::Timeout(after) => {
                ClientError::Unreachable(format!("no answer within {after:?}"))
            }
            e @ (HttpsError::TooLarge(_) | HttpsError::Body(_)) => {
                ClientError::Decode(e.to_string())
            }
            e => ClientError::Unreachable(e.to_string()),
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
