//! The embedded Kubernetes labeller end to end: the real server state (store, change feed,
//! attestation with software agents) and the labeller talking to the testkit's Kubernetes API
//! stand-in through kube-rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{gold_boot, test_config, Auth, Harness};
use nodetrust_labeller::leader::LeaseConfig;
use nodetrust_labeller::{HostTrust, Metrics, Policy, Settings, TrustUpdate};
use nodetrust_proto::trust::{EffectiveTrust, HostStatus, Trust};
use nodetrust_testkit::kubeapi::{FakeApiServer, Fault};
use serde_json::{json, Value};

const LABEL: &str = "ibm-cloud.kubernetes.io/is-trusted";
const TPM: (&str, &str) = ("ibm-cloud.kubernetes.io/tpm-enabled", "true");

fn label(k8s: &FakeApiServer, node: &str) -> Option<String> {
    k8s.node(node)?["metadata"]["labels"][LABEL]
        .as_str()
        .map(str::to_string)
}

async fn wait_label(k8s: &FakeApiServer, node: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if label(k8s, node).as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "node {node}: label {:?}, wanted {want:?} within {within:?}; node: {}",
            label(k8s, node),
            k8s.node(node).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Cluster {
    h: Harness,
    k8s: FakeApiServer,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    async fn start(edit: impl FnOnce(&mut nodetrust_server::config::Config)) -> Self {
        let k8s = FakeApiServer::start().unwrap();
        k8s.add_node("gold", &[TPM], "uuid-gold").unwrap();
        k8s.add_node("worker-1", &[TPM], "UUID-1").unwrap();
        // Matched by name: its systemUUID is not a registered hardware UUID.
        k8s.add_node("worker-2", &[TPM], "something-else").unwrap();
        // Out of scope: no tpm-enabled label, although its UUID is a registered host's.
        k8s.add_node("no-tpm", &[("team", "infra")], "uuid-3")
            .unwrap();
        let h = Harness::new().await;
        let kubeconfig = h.dir.path().join("kubeconfig");
        k8s.write_kubeconfig(&kubeconfig).unwrap();
        let mut config = test_config(&h.db, h.dir.path());
        config.kubeconfig = Some(kubeconfig);
        config.labeller_namespace = Some("default".into());
        edit(&mut config);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = nodetrust_server::labeller::start(&h.state, &config, rx)
            .await
            .unwrap()
            .unwrap();
        Self {
            h,
            k8s,
            stop,
            tasks,
        }
    }

    async fn trusted_fleet(&self) {
        let h = &self.h;
        h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
        h.enrol("worker-1", "uuid-1", &gold_boot("grub 2.06")).await;
        h.enrol("worker-2", "uuid-2", &gold_boot("grub 2.06")).await;
        h.enrol("worker-3", "uuid-3", &gold_boot("grub 2.06")).await;
        let (s, f) = h
            .call(
                "POST",
                "/mtwilson/v2/flavors",
                Auth::Admin,
                Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{f}");
        for n in ["gold", "worker-1", "worker-2", "worker-3"] {
            let (s, r) = h.attest(n).await;
            assert_eq!(s, StatusCode::OK, "{r}");
            assert_eq!(r["verdict"], "trusted", "{r}");
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_true_untrusted_false_unknown_keeps_label_and_other_nodes_untouched() {
    let c = Cluster::start(|_| {}).await;
    let untouched = c.k8s.node("no-tpm").unwrap();
    c.trusted_fleet().await;
    for n in ["gold", "worker-1", "worker-2"] {
        wait_label(&c.k8s, n, "true", Duration::from_secs(15)).await;
    }
    let node = c.k8s.node("worker-1").unwrap();
    let ann = &node["metadata"]["annotations"];
    assert_eq!(ann["nodetrust.io/verdict"], "trusted", "{node}");
    assert!(
        ann["nodetrust.io/report-id"]
            .as_str()
            .is_some_and(|s| s.len() == 32),
        "{node}"
    );
    assert!(ann["nodetrust.io/owned-keys"]
        .as_str()
        .unwrap()
        .contains(&format!("label:{LABEL}")));
    assert_eq!(
        node["metadata"]["labels"][TPM.0], "true",
        "other labels kept"
    );

    // worker-1 reboots into another boot loader: false, with the reason, soon after the verdict.
    c.h.agents
        .get("worker-1")
        .lock()
        .unwrap()
        .boot(&gold_boot("grub 2.12 unsigned"));
    let (s, r) = c.h.attest("worker-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["verdict"], "untrusted", "{r}");
    let took = wait_label(&c.k8s, "worker-1", "false", Duration::from_secs(5)).await;
    eprintln!("label false {took:?} after the verdict's answer");
    let node = c.k8s.node("worker-1").unwrap();
    let reasons = node["metadata"]["annotations"]["nodetrust.io/reasons"]
        .as_str()
        .unwrap();
    assert!(reasons.contains("PCR 4"), "{reasons}");
    // An Event says so (posted right after the patch).
    let start = Instant::now();
    loop {
        let events = c.k8s.list("events", Some("default"));
        let found = events.iter().any(|e| {
            e["involvedObject"]["name"] == "worker-1"
                && e["reason"] == "NodeNotTrusted"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("true -> false"))
        });
        if found {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The verdict expires (the agent is gone): unknown keeps the label.
    c.h.agents.get("worker-1").lock().unwrap().down = true;
    c.h.clock.advance(Duration::from_secs(3600));
    let _ = c.h.attest("worker-1").await;
    let v = c.h.host("worker-1").await;
    assert_eq!(v["trust"]["verdict"], "unknown", "{v}");
    // Give the labeller a resync period to act (it must not).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(label(&c.k8s, "worker-1").as_deref(), Some("false"));

    // The node outside the selector was never written.
    assert_eq!(c.k8s.node("no-tpm").unwrap(), untouched);
    assert_eq!(c.k8s.count_requests("PATCH", "/nodes/no-tpm"), 0);
    assert_eq!(c.k8s.count_requests("PUT", "/nodes/no-tpm"), 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_after_turns_false_while_attestation_is_failing() {
    let c = Cluster::start(|cfg| {
        cfg.label.stale_after = Some(Duration::from_secs(30));
    })
    .await;
    c.trusted_fleet().await;
    wait_label(&c.k8s, "worker-1", "true", Duration::from_secs(15)).await;
    // No attestation runs (no scheduler here): the verdict expires, then 30 s more.
    c.h.clock.advance(Duration::from_secs(600 + 10));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        label(&c.k8s, "worker-1").as_deref(),
        Some("true"),
        "not stale yet"
    );
    c.h.clock.advance(Duration::from_secs(25));
    wait_label(&c.k8s, "worker-1", "false", Duration::from_secs(10)).await;
    let node = c.k8s.node("worker-1").unwrap();
    assert!(node["metadata"]["annotations"]["nodetrust.io/reasons"]
        .as_str()
        .unwrap()
        .contains("--stale-after"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_untrusted_adds_and_removes_only_its_taint() {
    let c = Cluster::start(|cfg| cfg.label.taint_untrusted = true).await;
    c.k8s
        .update("nodes", None, "worker-1", |n| {
            n["spec"]["taints"] =
                json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
        })
        .unwrap();
    c.trusted_fleet().await;
    wait_label(&c.k8s, "worker-1", "true", Duration::from_secs(15)).await;
    c.h.agents
        .get("worker-1")
        .lock()
        .unwrap()
        .boot(&gold_boot("other grub"));
    c.h.attest("worker-1").await;
    wait_label(&c.k8s, "worker-1", "false", Duration::from_secs(5)).await;
    let taints = c.k8s.node("worker-1").unwrap()["spec"]["taints"].clone();
    assert_eq!(taints.as_array().unwrap().len(), 2, "{taints}");
    assert!(taints
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "nodetrust.io/untrusted" && t["effect"] == "NoExecute"));
    c.h.agents
        .get("worker-1")
        .lock()
        .unwrap()
        .boot(&gold_boot("grub 2.06"));
    c.h.attest("worker-1").await;
    wait_label(&c.k8s, "worker-1", "true", Duration::from_secs(5)).await;
    let taints = c.k8s.node("worker-1").unwrap()["spec"]["taints"].clone();
    assert_eq!(
        taints,
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_storms_and_api_errors_never_flap_the_label() {
    let c = Cluster::start(|_| {}).await;
    c.trusted_fleet().await;
    wait_label(&c.k8s, "worker-1", "true", Duration::from_secs(15)).await;
    c.k8s.inject(Fault::ConflictStorm { times: 8 });
    c.k8s.inject(Fault::Status {
        code: 500,
        times: 2,
        path_contains: Some("/nodes/worker-1".into()),
        method: Some("PATCH".into()),
    });
    c.k8s.inject(Fault::Status {
        code: 429,
        times: 2,
        path_contains: Some("/nodes/worker-1".into()),
        method: None,
    });
    c.h.agents
        .get("worker-1")
        .lock()
        .unwrap()
        .boot(&gold_boot("other grub"));
    c.h.attest("worker-1").await;
    // Watch every value the label takes on the way.
    let mut seen = vec![label(&c.k8s, "worker-1").unwrap()];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let now = label(&c.k8s, "worker-1").unwrap_or_default();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == "false" && start.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen,
        vec!["true".to_string(), "false".to_string()],
        "the label flapped"
    );
    let metrics = c.h.state.labeller_metrics.get().unwrap();
    assert!(metrics.conflicts() >= 1, "conflicts were met and retried");
    c.stop().await;
}

fn host(name: &str, uuid: &str, verdict: Trust) -> HostTrust {
    let now = nodetrust_proto::trust::millis(std::time::SystemTime::now());
    HostTrust {
        name: name.into(),
        hardware_uuid: uuid.into(),
        trust: EffectiveTrust {
            verdict: Some(verdict),
            reasons: vec![format!("{verdict}")],
            attested_at: Some(now),
            expires_at: Some(now + 600_000),
            status: HostStatus::Connected,
            status_detail: None,
        },
        report_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_other_takes_over() {
    let k8s = FakeApiServer::start().unwrap();
    k8s.add_node("worker-1", &[TPM], "uuid-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    k8s.write_kubeconfig(&kc).unwrap();
    let mut replicas = Vec::new();
    for id in ["replica-a", "replica-b"] {
        let client = nodetrust_labeller::client::from_kubeconfig(&kc)
            .await
            .unwrap();
        let mut s = Settings::new(Policy::default());
        s.resync = Duration::from_millis(300);
        s.lease = Some(LeaseConfig {
            namespace: "default".into(),
            name: "nodetrust-labeller".into(),
            identity: id.into(),
            duration: Duration::from_secs(2),
        });
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        tx.send(TrustUpdate::Snapshot(vec![host(
            "worker-1",
            "uuid-1",
            Trust::Trusted,
        )]))
        .await
        .unwrap();
        let task = tokio::spawn(nodetrust_labeller::run(
            client,
            s,
            rx,
            metrics.clone(),
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        replicas.push((id, tx, stop, metrics, task));
    }
    wait_label(&k8s, "worker-1", "true", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leaders: Vec<&str> = replicas
        .iter()
        .filter(|r| r.3.is_leader())
        .map(|r| r.0)
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
    let lease = k8s
        .get("leases", Some("default"), "nodetrust-labeller")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], leaders[0]);
    // Only the leader patches: the follower's metrics show no patch.
    let follower = replicas.iter().find(|r| !r.3.is_leader()).unwrap();
    assert_eq!(follower.3.patches(), 0);

    // The leader dies (stops renewing); the other takes over within the lease duration and
    // applies the next change.
    let idx = replicas.iter().position(|r| r.3.is_leader()).unwrap();
    let (dead, _tx, stop, _m, task) = replicas.remove(idx);
    let _ = stop.send(true);
    task.await.unwrap();
    let (alive, tx, _stop, metrics, _task) = replicas.remove(0);
    tx.send(TrustUpdate::Host {
        host: host("worker-1", "uuid-1", Trust::Untrusted),
        at: None,
    })
    .await
    .unwrap();
    let took = wait_label(&k8s, "worker-1", "false", Duration::from_secs(8)).await;
    assert!(metrics.is_leader(), "{alive} leads after {dead} died");
    eprintln!("takeover and relabel in {took:?}");
    let lease: Value = k8s
        .get("leases", Some("default"), "nodetrust-labeller")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], alive);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Benchmark (docs/PERFORMANCE.md, "Labeller"): from a verdict's commit to the node's label,
/// through the store's change feed, the labeller and the API. Run with
/// `cargo test --release -p nodetrust-server --test labeller -- --ignored --nocapture label_latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn label_latency_benchmark() {
    let c = Cluster::start(|_| {}).await;
    c.trusted_fleet().await;
    wait_label(&c.k8s, "worker-1", "true", Duration::from_secs(15)).await;
    let agent = c.h.agents.get("worker-1");
    let mut samples = Vec::new();
    for i in 0..100 {
        // Verdict changes are rare events: space them so the client-side rate limit (5 calls
        // a second, client-go's default; a change costs a PATCH and an Event) is not what is
        // measured.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (grub, want) = if i % 2 == 0 {
            ("other grub", "false")
        } else {
            ("grub 2.06", "true")
        };
        agent.lock().unwrap().boot(&gold_boot(grub));
        let (s, _) = c.h.attest("worker-1").await;
        assert_eq!(s, StatusCode::OK);
        // The attestation's answer comes after the commit: the time from here is an upper
        // bound of commit → label.
        let start = Instant::now();
        while label(&c.k8s, "worker-1").as_deref() != Some(want) {
            assert!(start.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    eprintln!(
        "label latency over {} verdict changes: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().unwrap()
    );
    c.stop().await;
}

/// Benchmark (docs/PERFORMANCE.md, "Labeller"): the first sync of a large cluster: every node
/// listed (pages of 500) and patched. `NODES` (default 10000) and `QPS` (default 5, client-go's)
/// set the size and the client-side rate (`QPS_FRESH` the rate of the first round). Run with
/// `NODES=10000 QPS=5 cargo test --release -p nodetrust-server --test labeller -- --ignored --nocapture initial_sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn initial_sync_benchmark() {
    let nodes: usize = std::env::var("NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let qps: f32 = std::env::var("QPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    // The fresh round may run at another rate (QPS_FRESH), to measure a restart at the
    // default rate without waiting for 10,000 patches at 5 a second first.
    let qps_fresh: f32 = std::env::var("QPS_FRESH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(qps);
    let k8s = FakeApiServer::start().unwrap();
    let mut hosts = Vec::new();
    for i in 0..nodes {
        k8s.add_node(&format!("node-{i}"), &[TPM], &format!("uuid-{i}"))
            .unwrap();
        let mut h = host(&format!("node-{i}"), &format!("uuid-{i}"), Trust::Trusted);
        // Valid for the whole run, however long the rate limit makes it.
        h.trust.expires_at = h.trust.attested_at.map(|a| a + 86_400_000);
        hosts.push(h);
    }
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    k8s.write_kubeconfig(&kc).unwrap();
    for (round, qps) in [
        ("fresh cluster", qps_fresh),
        ("restart (labels already right)", qps),
    ] {
        k8s.clear_requests();
        let rss0 = rss_kib();
        let client = nodetrust_labeller::client::from_kubeconfig(&kc)
            .await
            .unwrap();
        let mut s = Settings::new(Policy::default());
        s.kube_qps = qps;
        s.kube_burst = (qps * 2.0) as u32;
        s.events = false;
        let metrics = Arc::new(Metrics::default());
        let start = Instant::now();
        nodetrust_labeller::sync_once(client, &s, hosts.clone(), metrics.clone())
            .await
            .unwrap();
        let took = start.elapsed();
        let calls = k8s.requests().len();
        eprintln!(
            "{round}: {nodes} nodes at {qps} qps: {took:?}, {calls} API calls ({} patches), RSS +{} MiB",
            metrics.patches(),
            rss_kib().saturating_sub(rss0) / 1024
        );
        assert_eq!(label(&k8s, "node-0").as_deref(), Some("true"));
        assert_eq!(
            label(&k8s, &format!("node-{}", nodes - 1)).as_deref(),
            Some("true")
        );
    }
}
