//! What the agent says when the Trust Server cannot be trusted or refuses it: a trust failure
//! is told as such (never "not answering"), logged at ERROR by the binary; the server's own
//! self-signed `CA:TRUE` certificate (as `openssl req -x509` makes it) given as `--server-ca` is
//! trusted; refusals follow the server's JSON `reason` (`ek_not_endorsed`, 401,
//! `identity_conflict`) and 429 waits for `Retry-After`. The server is a real HTTPS server on
//! 127.0.0.1 answering what each test sets; the TPM is a swtpm.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use nodetrust_agent::client::{Client, ClientError};
use nodetrust_agent::config::{Credentials, ServerTrust};
use nodetrust_agent::register::{
    self, describe_failure, next_delay, Backoff, RegisterError, Registration,
};
use nodetrust_agent::{host, tls};
use nodetrust_testkit::Swtpm;
use nodetrust_tpm::{AkAlgorithm, Attester};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the fake server answers to a registration: status, body, Retry-After.
type Answer = Arc<Mutex<(u16, String, Option<u64>)>>;

async fn answer(State(a): State<Answer>) -> axum::response::Response {
    let (status, body, retry) = a.lock().unwrap().clone();
    let mut b = axum::http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(r) = retry {
        b = b.header("retry-after", r.to_string());
    }
    b.body(axum::body::Body::from(body)).unwrap()
}

/// `openssl req -x509`: a self-signed certificate marked CA:TRUE, for 127.0.0.1.
fn openssl_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=trust-server"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"));
    (cert, key)
}

/// Serves the fake on 127.0.0.1 with `cert`/`key`; returns its port.
async fn serve(cert: &Path, key: &Path, a: Answer) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/mtwilson/v2/hosts/register", post(answer))
        .route("/mtwilson/v2/agent-events", post(answer))
        .with_state(a);
    tokio::spawn(nodetrust_agent::server::run(
        listener,
        Arc::new(config),
        app,
        std::future::pending::<()>(),
    ));
    port
}

fn creds() -> Credentials {
    Credentials {
        username: "agent".into(),
        password: "agent-pw".into(),
    }
}

fn client(port: u16, trust: &ServerTrust) -> Client {
    let (config, verifier) = tls::client_trust(trust).unwrap();
    Client::new(&format!("https://127.0.0.1:{port}"), config, &creds())
        .unwrap()
        .with_verifier(verifier)
}

fn registration(attester: &Arc<dyn Attester>) -> Registration {
    let facts = attester.facts().unwrap();
    Registration {
        host: host::gather(
            Some("node-9"),
            Some("99999999-2222-3333-4444-555555555555"),
            &facts,
        ),
        connection_url: "https://127.0.0.1:1443".into(),
        tls_cert_sha256: "00".repeat(32),
        mode: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_follows_the_servers_refusal_reason() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attester = common::open(&tpm, &dir.path().join("state"), AkAlgorithm::EccP256);
    let (cert, key) = openssl_self_signed(dir.path(), "server");
    let a: Answer = Arc::new(Mutex::new((500, String::new(), None)));
    let port = serve(&cert, &key, a.clone()).await;
    // The server's own CA:TRUE self-signed certificate as --server-ca: trusted (the answers
    // below come over that connection).
    let client = client(port, &ServerTrust::Ca(cert.clone()));
    let reg = registration(&attester);
    let attempt = |status: u16, body: &str, retry: Option<u64>| {
        *a.lock().unwrap() = (status, body.to_string(), retry);
        let client = client.clone();
        let attester = attester.clone();
        let reg = reg.clone();
        async move {
            let e = register::register_once(&client, &attester, &reg)
                .await
                .unwrap_err();
            (describe_failure("registration", &e), e)
        }
    };

    let (r, e) = attempt(
        403,
        r#"{"error":"EK sha256 ab12 is not in tpm-endorsements","reason":"ek_not_endorsed"}"#,
        None,
    )
    .await;
    assert!(r.error, "{r:?}");
    assert!(
        r.text.contains(
            "the server does not accept this TPM's EK: EK sha256 ab12 is not in tpm-endorsements"
        ),
        "{r:?} {e}"
    );
    assert!(
        r.text.contains("remedy: ") && r.text.contains("nodetrust endorsement add"),
        "{r:?}"
    );
    assert!(!r.text.contains("account"), "{r:?}");

    let (r, _) = attempt(
        401,
        r#"{"error":"bad credentials","reason":"unauthorized"}"#,
        None,
    )
    .await;
    assert!(
        r.error && r.text.contains("refused the agent's account"),
        "{r:?}"
    );
    assert!(r.text.contains("MTWILSON_API_PASSWORD"), "{r:?}");

    let (r, _) = attempt(
        409,
        r#"{"error":"host node-9 is registered with another EK","reason":"identity_conflict"}"#,
        None,
    )
    .await;
    assert!(r.error, "{r:?}");
    assert!(
        r.text.contains(
            "the server already has this host with another TPM: host node-9 is registered with another EK"
        ),
        "{r:?}"
    );

    let (r, e) = attempt(
        429,
        r#"{"error":"slow down","reason":"rate_limited"}"#,
        Some(7),
    )
    .await;
    assert!(
        matches!(
            e,
            RegisterError::Client(ClientError::Status { status: 429, .. })
        ),
        "{e}"
    );
    assert!(!r.error, "{r:?}");
    assert_eq!(r.wait_at_least, Some(Duration::from_secs(7)), "{r:?}");
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };
    assert_eq!(next_delay(&backoff, 1, &r), Duration::from_secs(7));

    let (r, _) = attempt(503, "<html>maintenance</html>", None).await;
    assert!(!r.error && r.text.contains("HTTP 503"), "{r:?}");
    assert!(r.text.contains("maintenance"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_cert_reported_as_trust_failure() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attester = common::open(&tpm, &dir.path().join("state"), AkAlgorithm::EccP256);
    let (cert, key) = openssl_self_signed(dir.path(), "server");
    let (other, _) = openssl_self_signed(dir.path(), "other");
    let a: Answer = Arc::new(Mutex::new((500, String::new(), None)));
    let port = serve(&cert, &key, a).await;
    let presented = tls::fingerprint(CertificateDer::from_pem_file(&cert).unwrap().as_ref());

    for trust in [ServerTrust::Ca(other.clone()), ServerTrust::Pin([9u8; 32])] {
        let e = register::register_once(&client(port, &trust), &attester, &registration(&attester))
            .await
            .unwrap_err();
        let r = describe_failure("registration", &e);
        assert!(r.error, "{r:?}");
        assert!(
            r.text
                .starts_with("registration: server certificate not trusted: "),
            "{r:?}"
        );
        assert!(r.text.contains("; remedy: "), "{r:?}");
        assert!(r.text.contains(&presented), "{r:?}");
        assert!(!r.text.contains("not answering"), "{r:?}");
    }

    // The binary logs it at ERROR, and keeps trying.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodetrust-agent"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TRUSTAGENT_CONFIG", "/dev/null")
        .env("TRUSTAGENT_ADMIN_USERNAME", common::USER)
        .env("TRUSTAGENT_ADMIN_PASSWORD", common::PASSWORD)
        .env("TRUSTAGENT_TCTI", tpm.tcti())
        .env("TRUSTAGENT_STATE_DIR", dir.path().join("state2"))
        .env("MTWILSON_API_USERNAME", "agent")
        .env("MTWILSON_API_PASSWORD", "agent-pw")
        .args(["--listen", "127.0.0.1:0", "--ak-algorithm", "ecc-p256"])
        .args([
            "--host-name",
            "node-9",
            "--hardware-uuid",
            "99999999-2222-3333-4444-555555555555",
        ])
        .args(["--server-url", &format!("https://127.0.0.1:{port}")])
        .arg("--server-ca")
        .arg(&other)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let hit = line.contains("ERROR") && line.contains("server certificate not trusted");
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    assert!(found, "no ERROR line telling the trust failure:\n{log}");
    assert!(!log.contains("not answering"), "{log}");
}
