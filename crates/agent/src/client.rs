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
    /// No connection (refused, unreachable, DNS, TLS) or no answer in time.
    #[error("server not reachable: {0}")]
    Unreachable(String),
    /// The server answered with an error status.
    #[error("server answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Body (truncated).
        body: String,
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

/// A client for one server.
#[derive(Clone)]
pub struct Client {
    base: BaseUrl,
    tls: TlsConnector,
    authorization: String,
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
        })
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

    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Bytes, ClientError> {
        let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable(e.to_string());
        let tcp = TcpStream::connect((self.base.host.as_str(), self.base.port))
            .await
            .map_err(|e| unreachable(&format!("{}: {e}", self.base.authority())))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.base.host.clone())
            .map_err(|_| ClientError::Url(self.base.host.clone()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(&format!("TLS: {e}")))?;
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
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Decode(format!("reading the body: {e}")))?
            .to_bytes();
        driver.abort();
        if status.is_success() {
            Ok(bytes)
        } else {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(500).collect();
            Err(ClientError::Status {
                status: status.as_u16(),
                body: text,
            })
        }
    }
}

/// Whether the status is 401 or 403.
pub fn is_auth_status(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED.as_u16() || *status == StatusCode::FORBIDDEN.as_u16())
}
