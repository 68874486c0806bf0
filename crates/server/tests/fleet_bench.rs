//! Fleet benchmark: N virtual agents served over HTTPS from one listener (each with its own
//! software TPM: real TPMS_ATTEST, real signatures, its own AK, and answers to the activation
//! challenge), registered through the API, then attested by the engine over the network with
//! their certificate pinned, on SQLite and on PostgreSQL. Ignored by default; run with
//! `NODETRUST_BENCH_HOSTS=10000 scripts/with-postgres.sh cargo test --release -p nodetrust-server --test fleet_bench -- --ignored --nocapture --test-threads 1`.
//!
//! The fleet runs on a runtime of its own (threads named `fleet`), so the server's CPU is the
//! process's minus those threads'. Every host is due every `NODETRUST_BENCH_INTERVAL` seconds
//! (default 1): with 10,000 hosts that asks for far more than the server can do, so the rate
//! measured is its capacity.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use common::{gold_boot, ADMIN, AGENT};
use nodetrust_proto::b64;
use nodetrust_server::agent_client::HttpsAgents;
use nodetrust_server::clock::SystemClock;
use nodetrust_server::scheduler::run_scheduler;
use nodetrust_server::store::Store;
use nodetrust_server::{app, AppState};
use nodetrust_testkit::fleet::{BootEvent, Fleet};
use serde_json::{json, Value};
use tower::ServiceExt as _;

fn boot(grub: &str) -> Vec<BootEvent> {
    gold_boot(grub)
        .into_iter()
        .map(|e| BootEvent {
            pcr: e.pcr,
            event_type: e.event_type,
            measured: e.measured,
            data: e.data,
        })
        .collect()
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

/// Registers fleet agent `i` through the API: its EK endorsed, the MakeCredential challenge
/// answered by its software TPM.
async fn register(router: &Router, fleet: &Fleet, i: usize) {
    let req = fleet.register_request(i).unwrap();
    let ek = b64::encode(&req.ek_public);
    let (s, v) = call(
        router,
        "POST",
        "/mtwilson/v2/tpm-endorsements",
        ADMIN,
        json!({"ek_public": ek}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, ch) = call(
        router,
        "POST",
        "/mtwilson/v2/hosts/register",
        AGENT,
        serde_json::to_value(&req).unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{ch}");
    let blob = b64::decode(ch["credential_blob"].as_str().unwrap()).unwrap();
    let enc = b64::decode(ch["encrypted_secret"].as_str().unwrap()).unwrap();
    let secret = fleet.activate(i, &blob, &enc).unwrap();
    let path = format!(
        "/mtwilson/v2/hosts/register/{}/activate",
        ch["challenge_id"].as_str().unwrap()
    );
    let (s, v) = call(
        router,
        "POST",
        &path,
        AGENT,
        json!({"secret": b64::encode(&secret)}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// Not a benchmark: the simulator's agents register (answering activation) and are attested
/// over HTTPS with their pinned certificate, trusted against a flavor from one of them, and
/// one booted into another boot loader is untrusted with a reason naming PCR 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_fleet_registers_and_is_attested_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    let fleet = Fleet::start("sim", 3, &boot("grub 2.06")).unwrap();
    let other = Fleet::start("odd", 1, &boot("grub 2.12")).unwrap();
    let config = common::test_config(&db, dir.path());
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
    for i in 0..fleet.len() {
        register(&router, &fleet, i).await;
    }
    register(&router, &other, 0).await;
    let (s, v) = call(
        &router,
        "POST",
        "/mtwilson/v2/flavors",
        ADMIN,
        json!({"from_host": "sim-0"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // Twice each: the second quote may reuse the first one's connection.
    for _ in 0..2 {
        for i in 0..fleet.len() {
            let (s, r) = call(
                &router,
                "POST",
                "/mtwilson/v2/host-attestations",
                ADMIN,
                json!({"host_name": format!("sim-{i}")}),
            )
            .await;
            assert_eq!(s, 200, "{r}");
            assert_eq!(r["verdict"], "trusted", "{r}");
        }
    }
    let (s, r) = call(
        &router,
        "POST",
        "/mtwilson/v2/host-attestations",
        ADMIN,
        json!({"host_name": "odd-0"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["verdict"], "untrusted", "{r}");
    assert!(
        r["reasons"].to_string().contains("PCR 4"),
        "the reason names PCR 4: {r}"
    );
}

/// CPU seconds (user + system) of this process, and of its threads named `fleet`.
fn cpu_seconds() -> (f64, f64) {
    let ticks = |stat: &str| -> Option<f64> {
        let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
    };
    let total = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
    let mut fleet = 0.0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        if stat.contains("(fleet") {
            fleet += ticks(&stat).unwrap_or(0.0);
        }
    }
    (total / 100.0, fleet / 100.0)
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn fleet_over_https_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    bench("SQLite", &db, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn fleet_over_https_postgres() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set (scripts/with-postgres.sh sets it): skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    bench("PostgreSQL", &db, dir.path()).await;
}

async fn bench(label: &str, db: &str, dir: &std::path::Path) {
    let n: usize = env_or("NODETRUST_BENCH_HOSTS", 500);
    let seconds: u64 = env_or("NODETRUST_BENCH_SECONDS", 20);
    // The fleet: its own runtime, one HTTPS listener, agent i at /agents/i.
    let fleet = Fleet::start("sim", n + 1, &boot("grub 2.06")).unwrap();
    let rss_fleet = rss_mib();

    // The server, attesting over HTTPS.
    let mut config = common::test_config(db, dir);
    config.attest_interval = Duration::from_secs(env_or("NODETRUST_BENCH_INTERVAL", 1));
    config.attest_concurrency = env_or("NODETRUST_BENCH_CONCURRENCY", 64);
    let agents = Arc::new(HttpsAgents::new(Duration::from_secs(10), None));
    let state = AppState::new(
        &config,
        Store::connect(db).await.unwrap(),
        Arc::new(SystemClock),
        agents,
    )
    .await
    .unwrap();
    let router = app(state.clone());
    let t = Instant::now();
    for i in 0..=n {
        register(&router, &fleet, i).await;
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
    // Warm-up: the first round (every host due at once, each verdict a change).
    tokio::time::sleep(Duration::from_secs(env_or("NODETRUST_BENCH_WARMUP", 8))).await;
    let count = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("nodetrust_attestations_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = count(&state.metrics.render(&BTreeMap::new()));
    let cpu_before = cpu_seconds();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t.elapsed().as_secs_f64();
    let text = state.metrics.render(&BTreeMap::new());
    let done = count(&text) - before;
    let cpu_after = cpu_seconds();
    let server_cpu = ((cpu_after.0 - cpu_after.1) - (cpu_before.0 - cpu_before.1)) / elapsed;
    let fleet_cpu = (cpu_after.1 - cpu_before.1) / elapsed;
    let rss = rss_mib();
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
        "{label}, {} hosts: {done} attestations in {elapsed:.1} s: {:.0}/s; latency p50 <= {} s, p99 <= {} s; \
         server CPU {server_cpu:.2} cores, fleet CPU {fleet_cpu:.2} cores; RSS {rss} MiB ({rss_fleet} MiB before the server started)",
        n + 1,
        done / elapsed,
        quantile(0.5),
        quantile(0.99),
    );
    eprintln!("{}", verdicts.join("\n"));
    drop(fleet);
}
