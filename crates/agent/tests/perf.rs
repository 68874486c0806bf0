//! Measuring tools for docs/PERFORMANCE.md (ignored by default; they print figures and assert
//! nothing about time). Run in release mode:
//!
//! ```text
//! cargo test --release -p nodetrust-agent --test perf -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `quote_endpoint_overhead`: `POST /v2/tpm/quote` over HTTPS (TLS, keep-alive connection)
//!   against swtpm, p50/p99, next to the raw `TPM2_Quote` time of the same TPM and key.
//! - `idle_rss`: the agent binary's resident memory once it serves and sits idle.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use nodetrust_agent::api::{app, AppState};
use nodetrust_agent::config::{parse_pin, ServerTrust};
use nodetrust_agent::{host, server, tls};
use nodetrust_testkit::Swtpm;
use nodetrust_tpm::{AkAlgorithm, Attester, HashAlg, PcrSelection, TssAttester, TssConfig};
use nodetrust_tpm_wire::pcr::BankSelection;

const N: usize = 500;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(alg: AkAlgorithm) {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TssConfig::new(tpm.tcti(), dir.path().join("state"));
    cfg.ak_algorithm = alg;
    let tss = Arc::new(TssAttester::open(cfg).unwrap());
    let pcrs: Vec<u8> = (0..12).collect();
    let selection = PcrSelection {
        banks: vec![BankSelection {
            hash: HashAlg::Sha256,
            pcrs: pcrs.clone(),
        }],
    };

    let attester: Arc<dyn Attester> = tss.clone();
    let facts = attester.facts().unwrap();
    let host = host::gather(
        Some("perf"),
        Some("00000000-0000-4000-8000-000000000000"),
        &facts,
    );
    let state = AppState::new(
        attester,
        host,
        common::admin(),
        dir.path().join("none"),
        dir.path().join("none"),
    );
    let identity =
        tls::server_identity(None, None, &dir.path().join("state"), &["localhost".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::run(
        listener,
        identity.config.clone(),
        app(state),
        async {
            let _ = stop_rx.await;
        },
    ));

    let pin = parse_pin(&identity.fingerprint).unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(tls::client_config(&ServerTrust::Pin(pin)).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = serde_json::json!({"nonce": "MDEyMzQ1Njc4OWFiY2RlZg==", "pcrs": pcrs, "pcrbanks": ["SHA256"]}).to_string();
    let auth = common::basic(common::USER, common::PASSWORD);
    // Raw quotes and endpoint requests alternate, so load from elsewhere on the machine affects
    // both series alike.
    let mut endpoint = Vec::with_capacity(N);
    let mut raw = Vec::with_capacity(N);
    for i in 0..N + 20 {
        let (t, sel) = (Arc::clone(&tss), selection.clone());
        let r = tokio::task::spawn_blocking(move || {
            t.raw_quote_time(b"0123456789abcdef", &sel).unwrap()
        })
        .await
        .unwrap();
        let req = hyper::Request::post("/v2/tpm/quote")
            .header("host", "localhost")
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        sender.ready().await.unwrap();
        let start = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await.unwrap();
        if i >= 20 {
            endpoint.push(start.elapsed());
            raw.push(r);
        }
    }
    endpoint.sort();
    raw.sort();
    let _ = stop_tx.send(());

    let (r50, r99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let (e50, e99) = (percentile(&endpoint, 0.5), percentile(&endpoint, 0.99));
    println!(
        "{alg:?} AK, 12 SHA-256 PCRs, {N} requests: raw TPM2_Quote p50 {} p99 {}; endpoint p50 {} p99 {}; overhead p50 {} p99 {}",
        ms(r50),
        ms(r99),
        ms(e50),
        ms(e99),
        ms(e50.saturating_sub(r50)),
        ms(e99.saturating_sub(r99)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measuring tool for docs/PERFORMANCE.md"]
async fn quote_endpoint_overhead() {
    measure(AkAlgorithm::Rsa2048).await;
    measure(AkAlgorithm::EccP256).await;
}

#[test]
#[ignore = "measuring tool for docs/PERFORMANCE.md"]
fn idle_rss() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nodetrust-agent"))
        .env("TRUSTAGENT_CONFIG", "/dev/null")
        .env("TRUSTAGENT_ADMIN_USERNAME", common::USER)
        .env("TRUSTAGENT_ADMIN_PASSWORD", common::PASSWORD)
        .env("RUST_LOG", "warn")
        .args([
            "--tcti",
            &tpm.tcti(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ak-algorithm",
            "ecc-p256",
            "--state-dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("VmRSS: ?")
        .to_string();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_string();
    println!("idle agent: {rss}; peak {hwm}");
    let _ = child.kill();
    let _ = child.wait();
}
