//! Attestation throughput of the engine with software agents behind the connector (no network):
//! the server's own cost per attestation (quote verification, log replay, appraisal, signing,
//! the store). Ignored by default; run with
//! `cargo test --release -p nodetrust-server --test throughput -- --ignored --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::time::{Duration, Instant};

use common::{gold_boot, Auth, Harness};
use nodetrust_server::scheduler::run_scheduler;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn engine_throughput_sqlite() {
    let hosts: usize = std::env::var("NODETRUST_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let h = Harness::new().await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    h.call(
        "POST",
        "/mtwilson/v2/flavors",
        Auth::Admin,
        Some(json!({"from_host": "gold"})),
    )
    .await;
    let t = Instant::now();
    for i in 0..hosts {
        h.enrol(&format!("n{i}"), &format!("u{i}"), &gold_boot("grub 2.06"))
            .await;
    }
    eprintln!("registered {hosts} hosts in {:?}", t.elapsed());
    let before = h.state.store.reports(None, 1_000_000).await.unwrap().len();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    let sched = tokio::spawn(run_scheduler(h.state.clone(), async move {
        let _ = rx.await;
    }));
    // Every host is due at once: time until each has been attested.
    let target = before + hosts + 1;
    loop {
        let n = h.state.store.reports(None, 1_000_000).await.unwrap().len();
        if n >= target || t.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = t.elapsed();
    tx.send(()).unwrap();
    sched.await.unwrap();
    let after = h.state.store.reports(None, 1_000_000).await.unwrap().len();
    let done = after - before;
    eprintln!(
        "{done} attestations in {elapsed:?}: {:.0}/s",
        done as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(done, hosts + 1);
}
