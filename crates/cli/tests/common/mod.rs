//! A small HTTPS server for CLI tests: real TLS (rustls) and HTTP/1.1 on 127.0.0.1, answering
//! every request with what a closure returns, and recording the requests it received.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use nodetrust_tls::identity::{load_or_generate, SelfSigned};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub body: Vec<u8>,
}

type Handler = dyn Fn(&Seen) -> (u16, Vec<u8>) + Send + Sync;

/// The running server.
pub struct FakeServer {
    pub url: String,
    pub pin: String,
    pub cert: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    /// Starts a server answering every request with `handler`'s status and body.
    pub fn start(handler: impl Fn(&Seen) -> (u16, Vec<u8>) + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let id = load_or_generate(
            None,
            &SelfSigned {
                cert: dir.path().join("server.crt"),
                key: dir.path().join("server.key"),
                names: &names,
            },
        )
        .unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(nodetrust_tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(id.certs, id.key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let config = config.clone();
                let handler = handler.clone();
                let log = log.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let tls = rustls::StreamOwned::new(conn, tcp);
                    let _ = serve(tls, handler.as_ref(), &log);
                });
            }
        });
        Self {
            url: format!("https://127.0.0.1:{port}"),
            pin: id.fingerprint,
            cert: dir.path().join("server.crt"),
            seen,
            _dir: dir,
        }
    }

    /// The `nodetrust` binary with ARGS, this server pinned, an admin account, nothing else
    /// from the environment.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nodetrust"));
        c.args(args)
            .env_clear()
            .env("NODETRUST_SERVER", &self.url)
            .env("NODETRUST_SERVER_PIN", &self.pin)
            .env("NODETRUST_ADMIN_USERNAME", "admin")
            .env("NODETRUST_ADMIN_PASSWORD", "admin-password");
        c
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve<S: Read + Write>(
    stream: S,
    handler: &Handler,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut authorization = String::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("authorization") {
                authorization = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let seen = Seen {
        method,
        path,
        authorization,
        body,
    };
    let (status, answer) = handler(&seen);
    log.lock().unwrap().push(seen);
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&answer)?;
    stream.flush()
}
