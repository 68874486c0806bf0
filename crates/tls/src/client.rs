//! The one HTTPS client of the workspace: agent → server (registration, push), server → agent
//! (quotes) and CLI → server (administration).
//!
//! - [`client_config`]: the rustls client configuration for a [`ServerVerifier`] (aws-lc-rs,
//!   TLS 1.2 and 1.3, ALPN `http/1.1`, no client certificate).
//! - [`HttpsClient`]: HTTP/1.1 over that configuration, with a connect timeout (TCP and TLS
//!   handshake), a request timeout (the whole call, connection included), and a limit on the
//!   size of an answer. Without a pool ([`HttpsClient::new`]) every call has its own connection;
//!   with one ([`HttpsClient::pooled`]) a connection is kept after an answer read to its end and
//!   reused for the next call to the same address *and* trust key ([`Target::trust_key`], e.g.
//!   the pinned fingerprint), so reuse never crosses certificates. A reused connection the peer
//!   closed meanwhile is retried once on a new one.
//! - [`Call`] and [`Answer`]: a request (method, path under the base URL, headers, body; JSON
//!   helpers) and the answer read in full.
//! - [`HttpsError`]: what failed (TCP connection, TLS, the HTTP exchange, a timeout, an answer
//!   too large), with [`HttpsError::rejection`] telling a certificate rejection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};

use crate::{certificate_rejection, provider, BaseUrl, ServerVerifier};

/// The rustls client configuration that trusts what `verifier` trusts: the aws-lc-rs provider,
/// TLS 1.2 and 1.3, ALPN `http/1.1`, no client certificate.
pub fn client_config(verifier: Arc<ServerVerifier>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Time limits and the answer size limit of an [`HttpsClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// TCP connection and TLS handshake together (never more than `request_timeout`).
    pub connect_timeout: Duration,
    /// One call, from connecting to the last byte of the answer.
    pub request_timeout: Duration,
    /// Largest answer body read; a larger one is [`HttpsError::TooLarge`].
    pub max_answer: usize,
}

impl ClientLimits {
    /// Limits with `request_timeout`, a connect timeout of 10 s (or less, within the request
    /// timeout) and answers of at most `max_answer` bytes.
    pub fn new(request_timeout: Duration, max_answer: usize) -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.min(request_timeout),
            request_timeout,
            max_answer,
        }
    }
}

/// Connect timeout of [`ClientLimits::new`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many idle connections a pooled client keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Idle connections kept per address and trust key.
    pub per_key: usize,
    /// Idle connections kept in all.
    pub total: usize,
    /// An idle connection older than this is closed rather than reused.
    pub idle_for: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The host name cannot be used in TLS.
    #[error("bad host name {0:?}")]
    BadHost(String),
    /// No TCP connection (refused, unreachable, name not resolved).
    #[error("{authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TLS handshake failed ([`Self::rejection`] tells a certificate rejection).
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// The HTTP exchange failed (the connection was closed, the answer is not HTTP).
    #[error("{0}")]
    Http(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer's body is longer than [`ClientLimits::max_answer`].
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// The answer's body could not be read to its end.
    #[error("reading the answer: {0}")]
    Body(String),
    /// The request could not be built (a header value that is not one).
    #[error("bad request: {0}")]
    Request(String),
}

impl HttpsError {
    /// The certificate rejection, when the failure is the server's certificate not being
    /// trusted (tell it with [`ServerVerifier::not_trusted`]).
    pub fn rejection(&self) -> Option<&CertificateError> {
        match self {
            Self::Tls(e) => certificate_rejection(e),
            _ => None,
        }
    }
}

/// Where a call goes: a base URL, the TLS configuration for it, and the key of its trust
/// (e.g. the pinned fingerprint; pooled connections are reused only for the same address and
/// key).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `https://host[:port][/path]`.
    pub base: &'a BaseUrl,
    /// The TLS client configuration ([`client_config`]).
    pub config: &'a Arc<ClientConfig>,
    /// What the configuration trusts, as a pool key.
    pub trust_key: &'a str,
}

/// One request: method, path (appended to the base URL's path, query included), headers, body.
#[derive(Debug, Clone)]
pub struct Call {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    /// A request without a body, asking for JSON.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        Self {
            method,
            path: path.into(),
            headers,
            body: Bytes::new(),
        }
    }

    /// A request with `body` as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(
        method: Method,
        path: impl Into<String>,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(method, path).with_json_body(serde_json::to_vec(body)?))
    }

    /// The same request with `body` (already JSON) and its content type.
    pub fn with_json_body(mut self, body: Vec<u8>) -> Self {
        self.headers.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.body = Bytes::from(body);
        self
    }

    /// The same request with one more header; a value that cannot be a header value is
    /// [`HttpsError::Request`].
    pub fn header(mut self, name: HeaderName, value: &str) -> Result<Self, HttpsError> {
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| HttpsError::Request(format!("bad value for header {name}")))?;
        if name == hyper::header::AUTHORIZATION {
            v.set_sensitive(true);
        }
        self.headers.insert(name, v);
        Ok(self)
    }

    /// The same request with `Authorization: Basic` for `user` and `password`.
    pub fn basic_auth(self, user: &str, password: &str) -> Result<Self, HttpsError> {
        self.header(hyper::header::AUTHORIZATION, &basic_auth(user, password))
    }

    fn request(&self, base: &BaseUrl) -> Result<Request<Full<Bytes>>, HttpsError> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(format!("{}{}", base.path, self.path))
            .body(Full::new(self.body.clone()))
            .map_err(|e| HttpsError::Request(e.to_string()))?;
        *req.headers_mut() = self.headers.clone();
        let host = HeaderValue::from_str(&base.authority())
            .map_err(|_| HttpsError::BadHost(base.host.clone()))?;
        req.headers_mut().insert(hyper::header::HOST, host);
        Ok(req)
    }
}

/// The `Authorization` value of HTTP basic authentication.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An answer read in full.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as sent (at most [`ClientLimits::max_answer`] bytes).
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (an empty body reads as `null`).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        if self.body.is_empty() {
            return serde_json::from_slice(b"null");
        }
        serde_json::from_slice(&self.body)
    }

    /// `Retry-After` in seconds, at most `max`.
    pub fn retry_after(&self, max: Duration) -> Option<Duration> {
        self.headers
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(max))
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// HTTPS over rustls with time and size limits; see the module documentation.
#[derive(Debug)]
pub struct HttpsClient {
    limits: ClientLimits,
    pool: Option<IdlePool>,
}

impl HttpsClient {
    /// A client with one connection per call.
    pub fn new(limits: ClientLimits) -> Self {
        Self { limits, pool: None }
    }

    /// A client that keeps connections for reuse, per address and trust key.
    pub fn pooled(limits: ClientLimits, pool: PoolLimits) -> Self {
        Self {
            limits,
            pool: Some(IdlePool::new(pool)),
        }
    }

    /// The client's limits.
    pub fn limits(&self) -> ClientLimits {
        self.limits
    }

    /// Sends `call` to `target` and reads the answer, whatever its status, within
    /// [`ClientLimits::request_timeout`].
    pub async fn send(&self, target: &Target<'_>, call: &Call) -> Result<Answer, HttpsError> {
        let limit = self.limits.request_timeout;
        tokio::time::timeout(limit, self.exchange(target, call))
            .await
            .map_err(|_| HttpsError::Timeout(limit))?
    }

    async fn exchange(&self, target: &Target<'_>, call: &Call) -> Result<Answer, HttpsError> {
        let key = PoolKey {
            authority: target.base.authority(),
            trust: target.trust_key.to_string(),
        };
        let reused = self.pool.as_ref().and_then(|p| p.take(&key));
        let was_reused = reused.is_some();
        let mut sender = match reused {
            Some(s) => s,
            None => self.connect(target).await?,
        };
        let resp = match sender.send_request(call.request(target.base)?).await {
            Ok(r) => r,
            // The peer closed the idle connection as it was taken (its idle timeout ran out):
            // once more on a new connection, which decides.
            Err(_) if was_reused => {
                if let Some(p) = &self.pool {
                    p.forget(&key);
                }
                sender = self.connect(target).await?;
                sender
                    .send_request(call.request(target.base)?)
                    .await
                    .map_err(|e| HttpsError::Http(e.to_string()))?
            }
            Err(e) => return Err(HttpsError::Http(e.to_string())),
        };
        let (parts, body) = resp.into_parts();
        let keep = parts
            .headers
            .get(hyper::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| !v.eq_ignore_ascii_case("close"));
        let max = self.limits.max_answer;
        let body = Limited::new(body, max).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                HttpsError::TooLarge(max)
            } else {
                HttpsError::Body(e.to_string())
            }
        })?;
        // The whole answer was read: the connection can carry the next call.
        if keep {
            if let Some(p) = &self.pool {
                p.put(key, sender);
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.to_bytes(),
        })
    }

    /// A new connection: TCP, TLS handshake, HTTP/1.1, within the connect timeout.
    async fn connect(&self, target: &Target<'_>) -> Result<Sender, HttpsError> {
        let limit = self.limits.connect_timeout;
        tokio::time::timeout(limit, connect(target))
            .await
            .map_err(|_| HttpsError::Timeout(limit))?
    }
}

async fn connect(target: &Target<'_>) -> Result<Sender, HttpsError> {
    let base = target.base;
    let name = ServerName::try_from(base.host.clone())
        .map_err(|_| HttpsError::BadHost(base.host.clone()))?;
    let tcp = tokio::net::TcpStream::connect((base.host.as_str(), base.port))
        .await
        .map_err(|source| HttpsError::Connect {
            authority: base.authority(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(target.config))
        .connect(name, tcp)
        .await
        .map_err(HttpsError::Tls)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| HttpsError::Http(e.to_string()))?;
    // Ends when the sender is dropped (one call) or the pool lets the connection go.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Idle connections are per address and trust key: a connection is only ever reused for the
/// peer whose certificate it was opened against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    authority: String,
    trust: String,
}

/// Idle connections kept after an answer, for the next call.
#[derive(Debug)]
struct IdlePool {
    limits: PoolLimits,
    conns: Mutex<IdleMap>,
}

#[derive(Debug, Default)]
struct IdleMap {
    by_key: HashMap<PoolKey, Vec<(Instant, Sender)>>,
    total: usize,
}

impl IdlePool {
    fn new(limits: PoolLimits) -> Self {
        Self {
            limits,
            conns: Mutex::new(IdleMap::default()),
        }
    }

    fn take(&self, key: &PoolKey) -> Option<Sender> {
        let mut m = self.conns.lock().ok()?;
        let m = &mut *m;
        let list = m.by_key.get_mut(key)?;
        let mut found = None;
        while let Some((at, sender)) = list.pop() {
            m.total = m.total.saturating_sub(1);
            if at.elapsed() < self.limits.idle_for && !sender.is_closed() && sender.is_ready() {
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
        let idle_for = self.limits.idle_for;
        if m.total >= self.limits.total {
            // Full: drop the stale ones, and this one when that frees nothing.
            m.by_key.retain(|_, list| {
                list.retain(|(at, s)| at.elapsed() < idle_for && !s.is_closed());
                !list.is_empty()
            });
            m.total = m.by_key.values().map(Vec::len).sum();
            if m.total >= self.limits.total {
                return;
            }
        }
        let list = m.by_key.entry(key).or_default();
        if list.len() < self.limits.per_key {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    #[test]
    fn basic_auth_is_rfc_7617() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", ""), "Basic YTo=");
        assert_eq!(basic_auth("ab", ""), "Basic YWI6");
    }
}
