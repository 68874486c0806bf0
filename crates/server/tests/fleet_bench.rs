//! Fleet benchmark: N virtual agents served over HTTPS from one listener (each with its own
//! software TPM: real TPMS_ATTEST, real signatures, its own AK, and answers to the activation
//! challenge), registered through the API, then attested by the engine over the network with
//! their certificate pinned, on SQLite. Ignored by default; run with
//! `NODETRUST_BENCH_HOSTS=2000 cargo test --release -p nodetrust-server --test fleet_bench -- --ignored --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use common::{gold_boot, SoftAgent, ADMIN, AGENT};
use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use nodetrust_proto::b64;
use nodetrust_server::agent_client::HttpsAgents;
use nodetrust_server::clock::SystemClock;
use nodetrust_server::engine::run_scheduler;
use nodetrust_server::store::Store;
use nodetrust_server::{app, run, tls, AppState};
use nodetrust_tpm_wire::HashAlg;
use serde_json::{json, Value};
use tower::ServiceExt as _;

type Fleet = Arc<Vec<Mutex<SoftAgent>>>;

async fn quote(
    State(fleet): State<Fleet>,
    Path(i): Path<usize>,
    Json(req): Json<QuoteRequest>,
) -> Json<QuoteResponse> {
    let a = fleet.get(i).expect("agent index");
    let mut a = a.lock().unwrap();
    let sel: BTreeMap<HashAlg, BTreeSet<u8>> = req
        .pcrbanks
        .iter()
        .map(|b| {
            (
                HashAlg::from_name(b).unwrap(),
                req.pcrs.iter().copied().collect(),
            )
        })
        .collect();
    let q = a.tpm.quote(&req.nonce, &sel).unwrap();
    Json(QuoteResponse {
        quote: q.attest,
        signature: q.signature,
        aik: a.tpm.ak_public().tpm2b_bytes(),
        pcrs: serde_json::from_value(q.pcrs.to_json()).unwrap(),
        event_log: a.event_log.clone(),
        ima_log: None,
    })
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    creds: (&str, &str),
    body: Value,
) -> (u16, Value) {
    use base64::Engine as _;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.0, creds.1));
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Basic {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn fleet_over_https_sqlite() {
    let n: usize = std::env::var("NODETRUST_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seconds: u64 = std::env::var("NODETRUST_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // The fleet: one HTTPS listener, agent i at /agents/i.
    let sim_dir = tempfile::tempdir().unwrap();
    let (certs, key) = tls::server_identity(None, None, sim_dir.path()).unwrap();
    let pin = tls::fingerprint(certs[0].as_ref());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let boot = gold_boot("grub 2.06");
    let fleet: Fleet = Arc::new(
        (0..=n)
            .map(|i| {
                let mut a = SoftAgent::new(&format!("sim-{i}"), &format!("sim-uuid-{i}"));
                a.url = format!("https://127.0.0.1:{port}/agents/{i}");
                a.boot(&boot);
                Mutex::new(a)
            })
            .collect(),
    );
    let sim = Router::new()
        .route("/agents/{i}/v2/tpm/quote", post(quote))
        .with_state(fleet.clone());
    let (sim_stop, sim_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(
        listener,
        tls::server_config(certs, key).unwrap(),
        sim,
        async move {
            let _ = sim_rx.await;
        },
    ));

    // The server, attesting over HTTPS.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    let mut config = common::test_config(&db, dir.path());
    config.attest_interval = Duration::from_secs(
        std::env::var("NODETRUST_BENCH_INTERVAL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    );
    config.attest_concurrency = 64;
    let agents = Arc::new(HttpsAgents::new(Duration::from_secs(10), None));
    let state = AppState::new(
        &config,
        Store::connect(&db).await.unwrap(),
        Arc::new(SystemClock),
        agents,
    )
    .await
    .unwrap();
    let router = app(state.clone());
    let t = Instant::now();
    for i in 0..=n {
        let mut req = fleet[i].lock().unwrap().register_request();
        req.tls_cert_sha256 = pin.clone();
        let ek = b64::encode(&req.ek_public);
        let (s, v) = call(
            &router,
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            ADMIN,
            json!({"ek_public": ek}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let (s, ch) = call(
            &router,
            "POST",
            "/mtwilson/v2/hosts/register",
            AGENT,
            serde_json::to_value(&req).unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{ch}");
        let secret = {
            let a = fleet[i].lock().unwrap();
            let blob = b64::decode(ch["credential_blob"].as_str().unwrap()).unwrap();
            let enc = b64::decode(ch["encrypted_secret"].as_str().unwrap()).unwrap();
            a.tpm.activate_credential(&blob, &enc).unwrap()
        };
        let path = format!(
            "/mtwilson/v2/hosts/register/{}/activate",
            ch["challenge_id"].as_str().unwrap()
        );
        let (s, v) = call(
            &router,
            "POST",
            &path,
            AGENT,
            json!({"secret": b64::encode(&secret)}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    eprintln!("registered {} hosts in {:?}", n + 1, t.elapsed());
    let (s, v) = call(
        &router,
        "POST",
        "/mtwilson/v2/flavors",
        ADMIN,
        json!({"from_host": "sim-0"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let sched = tokio::spawn(run_scheduler(state.clone(), async move {
        let _ = rx.await;
    }));
    // Warm-up: the first round (every host due at once).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("nodetrust_attestations_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = count(&state.metrics.render(&BTreeMap::new()));
    let cpu_before = std::fs::read_to_string("/proc/self/stat").unwrap();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t.elapsed().as_secs_f64();
    let text = state.metrics.render(&BTreeMap::new());
    let done = count(&text) - before;
    let cpu_after = std::fs::read_to_string("/proc/self/stat").unwrap();
    let ticks = |s: &str| -> f64 {
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()
    };
    let cpu = (ticks(&cpu_after) - ticks(&cpu_before)) / 100.0 / elapsed;
    let rss_kb: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    stop.send(()).unwrap();
    sched.await.unwrap();
    // Latency from the histogram buckets: the smallest bucket holding the percentile.
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("nodetrust_attestation_seconds_bucket{le=\"") && !l.contains("+Inf")
        })
        .filter_map(|l| {
            let le = l.split('"').nth(1)?.parse().ok()?;
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = text
        .lines()
        .find(|l| l.starts_with("nodetrust_attestation_seconds_count"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(le, _)| *le)
            .unwrap_or(f64::INFINITY)
    };
    let verdicts = text
        .lines()
        .filter(|l| l.starts_with("nodetrust_attestations_total"))
        .collect::<Vec<_>>();
    eprintln!(
        "{done} attestations in {elapsed:.1} s: {:.0}/s; latency p50 <= {} s, p99 <= {} s; CPU {cpu:.2} cores (server and fleet in one process); RSS {} MiB",
        done / elapsed,
        quantile(0.5),
        quantile(0.99),
        rss_kb / 1024
    );
    eprintln!("{}", verdicts.join("\n"));
    let _ = sim_stop.send(());
}
