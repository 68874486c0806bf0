//! HTTPS to the Trust Server: one kept-alive HTTP/1.1 connection per [`Conn`] (a registration
//! worker holds one), basic auth, JSON. The server's certificate is trusted as the CLI and the
//! agent trust it: a CA or certificate file (`--server-ca`), a pinned SHA-256
//! (`--server-pin`), or not at all (`--insecure`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use nodetrust_tls::{BaseUrl, CertCheck, ServerVerifier};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Largest answer read.
const MAX_RESPONSE: usize = 8 << 20;
/// Time allowed for one request, connection included.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How the server's certificate is trusted.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// A PEM file of CAs, or the server's own certificate.
    CaFile(std::path::PathBuf),
    /// Exactly the certificate with this SHA-256.
    Pin([u8; 32]),
    /// Any certificate (`curl -k`).
    Insecure,
}

/// Basic-auth credentials, kept as the header value.
#[derive(Clone)]
pub struct Credentials(Arc<str>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// `Authorization: Basic base64(user:password)`.
    pub fn basic(user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self(format!("Basic {token}").into())
    }

    /// The header value.
    pub fn header(&self) -> &str {
        &self.0
    }
}

/// Where the server is and how to reach it.
#[derive(Clone)]
pub struct Server {
    base: BaseUrl,
    tls: TlsConnector,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The server at `url`, its certificate trusted as `trust` says.
    pub fn new(url: &str, trust: &ServerTrust) -> Result<Self> {
        let base = BaseUrl::parse(url).map_err(|e| anyhow!("--server: {}", e.0))?;
        let verifier = match trust {
            ServerTrust::Insecure => ServerVerifier::with_check(CertCheck::Any),
            ServerTrust::Pin(p) => ServerVerifier::new(*p),
            ServerTrust::CaFile(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading --server-ca {}", path.display()))?;
                ServerVerifier::from_ca_pem(&pem)
                    .map_err(|e| anyhow!("--server-ca {}: {e}", path.display()))?
            }
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(nodetrust_tls::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            base,
            tls: TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// A new connection slot (it connects on first use).
    pub fn conn(&self) -> Conn {
        Conn {
            server: self.clone(),
            sender: None,
        }
    }
}

/// Reads a pin as the CLI does: 64 hex digits, colons allowed.
pub fn parse_pin(text: &str) -> Result<[u8; 32]> {
    let t = text.rsplit('=').next().unwrap_or(text).trim();
    let hex_digits: String = t.chars().filter(|c| *c != ':').collect();
    hex::decode(&hex_digits)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| anyhow!("--server-pin {text:?} is not a SHA-256 fingerprint"))
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, seconds.
    pub retry_after: Option<u64>,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON of type `T` when the status is 2xx, else an error naming the status
    /// and the server's message.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        if !(200..300).contains(&self.status) {
            bail!("{what}: HTTP {}: {}", self.status, self.text());
        }
        serde_json::from_slice(&self.body).with_context(|| format!("{what}: unexpected answer"))
    }

    /// The body as text, bounded, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body.get(..500).unwrap_or(&self.body)).into_owned()
    }
}

/// One kept-alive connection to the server.
#[derive(Debug)]
pub struct Conn {
    server: Server,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let base = &self.server.base;
        let tcp = tokio::net::TcpStream::connect((base.host.as_str(), base.port))
            .await
            .with_context(|| format!("connecting to {}", base.authority()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(base.host.clone())
            .map_err(|_| anyhow!("bad server host {:?}", base.host))?;
        let tls = self
            .server
            .tls
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {}", base.authority()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// `method path` with a JSON body (`None`: no body) as `creds`. A kept connection that
    /// the server closed meanwhile is replaced once.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        creds: &Credentials,
        body: Option<Vec<u8>>,
    ) -> Result<Answer> {
        tokio::time::timeout(TIMEOUT, self.call_inner(method, path, creds, body))
            .await
            .map_err(|_| anyhow!("no answer from the server within {TIMEOUT:?}"))?
    }

    async fn call_inner(
        &mut self,
        method: Method,
        path: &str,
        creds: &Credentials,
        body: Option<Vec<u8>>,
    ) -> Result<Answer> {
        let body = Bytes::from(body.unwrap_or_default());
        let mut retried = false;
        loop {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            if sender.ready().await.is_err() {
                if retried {
                    bail!("the server closed the connection");
                }
                retried = true;
                continue;
            }
            let base = &self.server.base;
            let req = Request::builder()
                .method(method.clone())
                .uri(format!("{}{path}", base.path))
                .header(hyper::header::HOST, base.authority())
                .header(hyper::header::AUTHORIZATION, creds.header())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))?;
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e)
                    if !retried
                        && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
                {
                    retried = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer: {e}"))?
                .to_bytes();
            self.sender = Some(sender);
            return Ok(Answer {
                status,
                retry_after,
                body,
            });
        }
    }
}
