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

/// `https://host[:port][/path]` split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Host name or IP (without brackets).
    pub host: String,
    /// Port (443 when not given).
    pub port: u16,
    /// Path prefix without a trailing slash.
    pub path: String,
}

impl BaseUrl {
    /// Parses a base URL.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(url.to_string());
        let rest = url.trim().strip_prefix("https://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (
                rest.get(..i).ok_or_else(bad)?,
                rest.get(i..).ok_or_else(bad)?,
            ),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 443,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (authority.to_string(), 443),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
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
            .map_err(|e| unreachable(&format!("{}:{}: {e}", self.base.host, self.base.port)))?;
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
        let host_header = if self.base.host.contains(':') {
            format!("[{}]:{}", self.base.host, self.base.port)
        } else {
            format!("{}:{}", self.base.host, self.base.port)
        };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]
    use super::*;

    #[test]
    fn urls() {
        let u = BaseUrl::parse("https://169.55.8.94:24239").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("169.55.8.94", 24239, "")
        );
        let u = BaseUrl::parse("https://cit.example/mtwilson/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("cit.example", 443, "/mtwilson")
        );
        let u = BaseUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8443));
        assert!(BaseUrl::parse("http://x").is_err());
        assert!(BaseUrl::parse("https://x:notaport").is_err());
    }
}
