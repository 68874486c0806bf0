//! HTTPS to the Trust Server for the administration commands: where the server is, how its
//! certificate is trusted, which account calls, and how each failure maps to an exit code.
//!
//! One connection per request (an operator command makes one or two), HTTP/1.1 over rustls
//! with the aws-lc-rs provider, basic auth: the workspace's one HTTPS client
//! ([`nodetrust_tls::client`]). The server is found from `--server`, then the
//! environment the runbook's ConfigMap sets (`server_url`, or `MTWILSON_SERVER` and
//! `MTWILSON_SERVER_PORT`). Its certificate is trusted through a CA file, a pinned SHA-256,
//! the system CA bundle, or not at all (`--insecure`, like the runbook's `curl -k`).
//!
//! Failures: the server answered with an error → [`CliError::Server`] (exit 1, its `ErrorBody`
//! shown); no connection, a TLS failure, no answer in time or bad options →
//! [`CliError::Usage`] (exit 2), saying which. Passwords never appear in output or `Debug`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hyper::body::Bytes;
use hyper::Method;
use nodetrust_proto::ErrorBody;
use nodetrust_tls::client::{Call, ClientLimits, HttpsClient, HttpsError, Target};
use rustls::ClientConfig;

use crate::output::{errln, outln, printable, truncate};
use crate::{CliError, Format};

/// Largest response body read.
const MAX_RESPONSE: usize = 32 << 20;
/// Port used with `MTWILSON_SERVER` when `MTWILSON_SERVER_PORT` is unset.
const DEFAULT_PORT: u16 = 8443;
/// The system CA bundle (Debian), used when no trust option is given.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Options every server command takes.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Trust Server connection")]
pub struct ServerArgs {
    /// Trust Server base URL, e.g. https://10.0.0.1:8443. [default: $server_url, else
    /// https://$MTWILSON_SERVER:$MTWILSON_SERVER_PORT (port 8443 when unset), as in the
    /// runbook's ConfigMap cit-server-info]
    #[arg(long, env = "NODETRUST_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Account name. [default: $NODETRUST_ADMIN_USERNAME, else $MTWILSON_API_USERNAME (the
    /// agent account, which may only list endorsements)]. The password is never taken on the
    /// command line: --password-file, else $NODETRUST_PASSWORD, else $NODETRUST_ADMIN_PASSWORD
    /// or $MTWILSON_API_PASSWORD (the one paired with where the name came from).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Read the password from this file (its first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Trust the server's certificate when it chains to a CA in this PEM file (the host name in
    /// the URL must match the certificate), or is byte-identical to a certificate of the file
    /// (the server's own, even self-signed `CA:TRUE` from `openssl req -x509`; names are then
    /// not checked). [env: NODETRUST_SERVER_CA] [default: the system CA bundle,
    /// $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt]
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "insecure"])]
    pub ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint: 64 hex digits,
    /// colons allowed, or what `openssl x509 -noout -fingerprint -sha256` prints. The server
    /// logs its fingerprint at start. [env: NODETRUST_SERVER_PIN]
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub pin: Option<String>,
    /// Do not check the server's certificate at all (like the runbook's `curl -k`): anyone on
    /// the network path can then read the credentials. Prints a warning.
    #[arg(long)]
    pub insecure: bool,
    /// Seconds to wait for the server's answer (connection included).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Output: text (tables and lines for a human) or json (the server's JSON as it sent it).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl ServerArgs {
    /// Whether the output is JSON.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// How the server's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    Ca(PathBuf),
    Pin([u8; 32]),
    Insecure,
}

pub use nodetrust_tls::BaseUrl;

impl From<nodetrust_tls::UrlError> for CliError {
    fn from(e: nodetrust_tls::UrlError) -> Self {
        CliError::Usage(e.to_string())
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The server URL: the flag, then `server_url`, then `MTWILSON_SERVER[:MTWILSON_SERVER_PORT]`.
fn server_url(flag: Option<&str>) -> Result<String, CliError> {
    if let Some(u) = flag.filter(|u| !u.trim().is_empty()) {
        return Ok(u.to_string());
    }
    if let Some(u) = env_var("server_url") {
        return Ok(u);
    }
    if let Some(host) = env_var("MTWILSON_SERVER") {
        let port = match env_var("MTWILSON_SERVER_PORT") {
            Some(p) => p.trim().parse::<u16>().map_err(|_| {
                CliError::Usage(format!("MTWILSON_SERVER_PORT {p:?} is not a port number"))
            })?,
            None => DEFAULT_PORT,
        };
        let host = host.trim();
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        return Ok(format!("https://{host}:{port}"));
    }
    Err(CliError::Usage(
        "no Trust Server given: use --server https://HOST:PORT, or set NODETRUST_SERVER, \
         server_url, or MTWILSON_SERVER (and MTWILSON_SERVER_PORT)"
            .into(),
    ))
}

/// A user name and password. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// Account name.
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn credentials(user: Option<&str>, password_file: Option<&Path>) -> Result<Credentials, CliError> {
    let (username, paired): (String, &[&str]) =
        match user.filter(|u| !u.is_empty()) {
            Some(u) => (
                u.to_string(),
                &["NODETRUST_ADMIN_PASSWORD", "MTWILSON_API_PASSWORD"],
            ),
            None => match (
                env_var("NODETRUST_ADMIN_USERNAME"),
                env_var("MTWILSON_API_USERNAME"),
            ) {
                (Some(u), _) => (u, &["NODETRUST_ADMIN_PASSWORD"]),
                (None, Some(u)) => (u, &["MTWILSON_API_PASSWORD"]),
                (None, None) => return Err(CliError::Usage(
                    "no account given: set NODETRUST_ADMIN_USERNAME and NODETRUST_ADMIN_PASSWORD \
                     (or MTWILSON_API_USERNAME and MTWILSON_API_PASSWORD), or use --user"
                        .into(),
                )),
            },
        };
    let password = match password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read --password-file {}: {e}",
                    path.display()
                ))
            })?;
            text.lines().next().unwrap_or_default().to_string()
        }
        None => std::iter::once("NODETRUST_PASSWORD")
            .chain(paired.iter().copied())
            .find_map(|name| std::env::var(name).ok().filter(|p| !p.is_empty()))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "no password for account {username:?}: use --password-file FILE or set {}",
                    std::iter::once("NODETRUST_PASSWORD")
                        .chain(paired.iter().copied())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            })?,
    };
    Ok(Credentials { username, password })
}

/// Parses a SHA-256 fingerprint: hex, with or without colons, optionally `sha256:`-prefixed.
pub fn parse_pin(text: &str) -> Result<[u8; 32], CliError> {
    // `openssl x509 -fingerprint -sha256` prints `sha256 Fingerprint=AB:CD:...`.
    let t = text.rsplit('=').next().unwrap_or(text).trim();
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => t.get(7..).unwrap_or_default(),
        _ => t,
    };
    let hex_digits: String = t.chars().filter(|c| *c != ':').collect();
    hex::decode(&hex_digits)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--pin {text:?} is not a SHA-256 fingerprint (64 hex digits)"
            ))
        })
}

fn trust(args: &ServerArgs) -> Result<Trust, CliError> {
    if args.insecure {
        return Ok(Trust::Insecure);
    }
    if let Some(p) = &args.pin {
        return Ok(Trust::Pin(parse_pin(p)?));
    }
    if let Some(ca) = &args.ca {
        return Ok(Trust::Ca(ca.clone()));
    }
    if let Some(p) = env_var("NODETRUST_SERVER_PIN") {
        return Ok(Trust::Pin(parse_pin(&p)?));
    }
    if let Some(ca) = env_var("NODETRUST_SERVER_CA") {
        return Ok(Trust::Ca(PathBuf::from(ca)));
    }
    Ok(Trust::Ca(
        env_var("SSL_CERT_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE)),
    ))
}

use nodetrust_tls::{CertCheck, ServerVerifier, TrustFlags};

/// The options the CLI takes to trust a server, named in remedies.
const FLAGS: TrustFlags = TrustFlags {
    ca: "--ca",
    pin: "--pin",
};

fn tls_config(trust: &Trust) -> Result<(Arc<ClientConfig>, Arc<ServerVerifier>), CliError> {
    let verifier = match trust {
        Trust::Pin(p) => ServerVerifier::with_check(CertCheck::Pin(*p)),
        Trust::Insecure => ServerVerifier::with_check(CertCheck::Any),
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read the CA file {}: {e} (give --ca FILE, --pin SHA256 or --insecure)",
                    path.display()
                ))
            })?;
            ServerVerifier::from_ca_pem(&pem).map_err(|e| {
                CliError::Usage(format!(
                    "{}: {e} (give --ca with a PEM CA certificate, or the server's own \
                     certificate, or --pin SHA256)",
                    path.display()
                ))
            })?
        }
    };
    let verifier = Arc::new(verifier);
    let cfg = nodetrust_tls::client::client_config(Arc::clone(&verifier))
        .map_err(|e| CliError::Usage(format!("TLS configuration: {e}")))?;
    Ok((cfg, verifier))
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as sent.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<serde_json::Value, CliError> {
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| CliError::Server {
            status: self.status,
            reason: "unexpected_answer".into(),
            message: format!(
                "the server's answer is not the JSON expected ({e}); is the URL that of a \
                 nodetrust Trust Server of this version?"
            ),
            hint: None,
            json: false,
        })
    }

    /// Prints the body as the server sent it.
    pub fn print_raw(&self) {
        let text = String::from_utf8_lossy(&self.body);
        outln!("{}", text.trim_end());
    }
}

/// A client for one Trust Server.
pub struct Client {
    base: BaseUrl,
    config: Arc<ClientConfig>,
    http: HttpsClient,
    trust: Trust,
    credentials: Credentials,
    timeout: Duration,
    json: bool,
    verifier: Arc<ServerVerifier>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("trust", &self.trust)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client as `args` say; warns on stderr about `--insecure`.
    pub fn new(args: &ServerArgs) -> Result<Self, CliError> {
        let url = server_url(args.server.as_deref())?;
        let base = BaseUrl::parse(&url)?;
        let trust = trust(args)?;
        let credentials = credentials(args.user.as_deref(), args.password_file.as_deref())?;
        let (config, verifier) = tls_config(&trust)?;
        if trust == Trust::Insecure {
            errln!(
                "nodetrust: warning: --insecure: the Trust Server's certificate is not checked; \
                 anyone on the network path could read the credentials"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Usage(format!("cannot start the I/O runtime: {e}")))?;
        let timeout = Duration::from_secs(args.timeout.max(1));
        Ok(Self {
            base,
            config,
            http: HttpsClient::new(ClientLimits::new(timeout, MAX_RESPONSE)),
            trust,
            credentials,
            timeout,
            json: args.json(),
            verifier,
            runtime,
        })
    }

    /// `GET path` (under the base URL's path).
    pub fn get(&self, path: &str) -> Result<Answer, CliError> {
        self.request(Method::GET, path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Result<Answer, CliError> {
        self.request(Method::POST, path, Some(body))
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &serde_json::Value) -> Result<Answer, CliError> {
        self.request(Method::PUT, path, Some(body))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Answer, CliError> {
        self.request(Method::DELETE, path, None)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CliError> {
        let body = match body {
            Some(v) => Some(
                serde_json::to_vec(v)
                    .map_err(|e| CliError::Usage(format!("encoding the request: {e}")))?,
            ),
            None => None,
        };
        let where_ = format!("the Trust Server at {}", self.base.authority());
        let answer = self.runtime.block_on(self.send(method, path, body));
        let (status, bytes) = match answer {
            Err(HttpsError::Timeout(_)) => {
                return Err(CliError::Usage(format!(
                    "server unreachable: no answer from {where_} within {}s",
                    self.timeout.as_secs()
                )))
            }
            Err(HttpsError::Connect { source, .. }) => {
                return Err(CliError::Usage(format!(
                    "server unreachable: cannot connect to {where_}: {source}"
                )))
            }
            Err(e @ HttpsError::Tls(_)) => {
                return Err(CliError::Usage(self.tls_message(&where_, &e)))
            }
            Err(HttpsError::TooLarge(max)) => {
                return Err(CliError::Usage(format!(
                    "connection to {where_} failed: reading the answer: it is larger than \
                     {max} bytes"
                )))
            }
            Err(e) => {
                return Err(CliError::Usage(format!(
                    "connection to {where_} failed: {e}"
                )))
            }
            Ok(a) => a,
        };
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                body: bytes,
            });
        }
        Err(self.refusal(status, &bytes))
    }

    fn tls_message(&self, where_: &str, e: &HttpsError) -> String {
        match (e.rejection(), e) {
            (Some(cause), _) => format!(
                "TLS failure with {where_}: {}",
                self.verifier.not_trusted(cause, &FLAGS)
            ),
            (None, HttpsError::Tls(io)) => format!("TLS failure with {where_}: {io}"),
            (None, other) => format!("TLS failure with {where_}: {other}"),
        }
    }

    fn refusal(&self, status: u16, bytes: &[u8]) -> CliError {
        let (reason, message) = match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(b) => (
                printable(&truncate(&b.reason, 64), false),
                printable(&truncate(&b.error, 2000), true),
            ),
            Err(_) => {
                let text: String = String::from_utf8_lossy(bytes).chars().take(300).collect();
                let text = printable(text.trim(), false);
                (
                    format!("http_{status}"),
                    if text.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        text
                    },
                )
            }
        };
        let hint = match status {
            401 => Some(format!(
                "the server did not accept the account {:?} and its password (from --password-file, \
                 NODETRUST_PASSWORD, NODETRUST_ADMIN_PASSWORD or MTWILSON_API_PASSWORD)",
                self.credentials.username
            )),
            403 if reason == "forbidden" => Some(format!(
                "the account {:?} may not do this; use an admin account \
                 (NODETRUST_ADMIN_USERNAME / NODETRUST_ADMIN_PASSWORD)",
                self.credentials.username
            )),
            _ => None,
        };
        CliError::Server {
            status,
            reason,
            message,
            hint,
            json: self.json,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), HttpsError> {
        let mut call = Call::new(method, path)
            .basic_auth(&self.credentials.username, &self.credentials.password)?
            .header(
                hyper::header::USER_AGENT,
                concat!("nodetrust/", env!("CARGO_PKG_VERSION")),
            )?;
        if let Some(body) = body {
            call = call.with_json_body(body);
        }
        let target = Target {
            base: &self.base,
            config: &self.config,
            trust_key: "",
        };
        let answer = self.http.send(&target, &call).await?;
        Ok((answer.status.as_u16(), answer.body))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    #[test]
    fn pins() {
        let hexpin = "ab".repeat(32);
        assert_eq!(parse_pin(&hexpin).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_pin(&format!("sha256:{colons}")).unwrap(), [0xab; 32]);
        let openssl = format!("sha256 Fingerprint={colons}");
        assert_eq!(parse_pin(&openssl).unwrap(), [0xab; 32]);
        assert!(parse_pin("abcd").is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("node-1.a_b~"), "node-1.a_b~");
        assert_eq!(encode("a b/c&d"), "a%20b%2Fc%26d");
    }
}
