//! Replicas on one PostgreSQL database: each host attested once per interval by one replica,
//! a killed replica's hosts taken over before their verdicts expire, a graceful stop handed
//! over at once, a restarted replica given its share back, and the period kept within the
//! interval plus 10 %. Every replica is an `AppState` of its own (own store connections, own
//! replica id, own metrics) running its scheduler in this process; the agents are software
//! agents; one test runs the real binary (refused configuration, SIGTERM). Run with
//! `scripts/with-postgres.sh cargo test -p nodetrust-server --test replicas`
//! (without `NODETRUST_TEST_PG_URL` the PostgreSQL tests say they are skipped).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{gold_boot, Auth, Harness};
use nodetrust_server::scheduler::run_scheduler;
use nodetrust_server::scheduler::{dead_after, rendezvous_owner, worst_takeover_gap};
use nodetrust_server::store::Store;
use nodetrust_server::AppState;
use serde_json::json;
use tower::ServiceExt as _;

/// The attestation interval of these tests: 1 s, or `NODETRUST_TEST_INTERVAL_MS` (to measure
/// the period at another interval).
fn interval() -> Duration {
    Duration::from_millis(env_or("NODETRUST_TEST_INTERVAL_MS", 1000))
}

/// The verdict validity: 6 s at 1 s, always two seconds more than the worst takeover gap.
fn validity() -> Duration {
    (worst_takeover_gap(interval()) + Duration::from_secs(2)).max(Duration::from_secs(6))
}

/// A replica: its state and its running scheduler.
struct Replica {
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Replica {
    fn id(&self) -> String {
        self.state.settings.replica.clone()
    }

    /// `kill -9`: the scheduler (and its heartbeat) vanish without releasing anything.
    async fn kill(&mut self) {
        let task = self.task.take().unwrap();
        task.abort();
        let _ = task.await;
    }

    /// SIGTERM: the scheduler stops and hands its hosts over.
    async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

async fn start_replica(h: &Harness, id: &str) -> Replica {
    let mut config = common::test_config(&h.db, h.dir.path());
    config.attest_interval = interval();
    config.report_validity = validity();
    config.replica_id = Some(id.to_string());
    let store = Store::connect(&h.db).await.unwrap();
    let state = AppState::new(&config, store, h.clock.clone(), h.agents.clone())
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_scheduler(state.clone(), async move {
        let _ = rx.await;
    }));
    Replica {
        state,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A harness on a fresh PostgreSQL database (its own state is the API only: no scheduler),
/// a gold host whose flavor makes `n` nodes trusted, and the nodes; `None` without PostgreSQL.
async fn fleet(n: usize) -> Option<(Harness, Vec<String>)> {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL replica test skipped");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::with_config(dir, db, |c| {
        c.attest_interval = interval();
        c.report_validity = validity();
        c.replica_id = Some("api-only".into());
    })
    .await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold"})),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    let mut names = vec!["gold".to_string()];
    for i in 0..n {
        let name = format!("node-{i:02}");
        h.enrol(&name, &format!("uuid-{i}"), &gold_boot("grub 2.06"))
            .await;
        names.push(name);
    }
    Some((h, names))
}

/// Report times (ms) of `host`, oldest first.
async fn report_times(store: &Store, host: &str) -> Vec<i64> {
    let mut t: Vec<i64> = store
        .reports(Some(host), 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.created)
        .collect();
    t.sort_unstable();
    t
}

/// Gaps (ms) between consecutive reports of `host` created within `[from, to]`.
async fn gaps_within(store: &Store, host: &str, from: i64, to: i64) -> Vec<i64> {
    let t: Vec<i64> = report_times(store, host)
        .await
        .into_iter()
        .filter(|c| (from..=to).contains(c))
        .collect();
    t.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Each host's lease holder.
async fn owners(store: &Store, hosts: &[String]) -> BTreeMap<String, Option<String>> {
    let mut m = BTreeMap::new();
    for host in hosts {
        let (owner, _) = store.lease(host).await.unwrap().unwrap();
        m.insert(host.clone(), owner);
    }
    m
}

/// Waits until every host is leased by its rendezvous owner among `live`; returns how long.
async fn wait_for_fair_share(
    store: &Store,
    hosts: &[String],
    live: &[String],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let now = owners(store, hosts).await;
        let wrong: Vec<_> = now
            .iter()
            .filter(|(h, o)| o.as_deref() != rendezvous_owner(h, live))
            .collect();
        if wrong.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "hosts not with their rendezvous owner among {live:?} within {within:?}: {wrong:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `nodetrust_attestations_total` of one replica (all results), from its own `/metrics`.
async fn attestations_total(state: &AppState) -> u64 {
    let req = axum::http::Request::builder()
        .uri("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = nodetrust_server::app(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("nodetrust_attestations_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn interval_ms() -> i64 {
    i64::try_from(interval().as_millis()).unwrap()
}

fn now_ms(h: &Harness) -> i64 {
    h.state.now_ms()
}

/// No gap below half an interval (a host attested twice in one interval) and none above one
/// and a half (a host skipped: its gap would be two intervals); returns (mean, max) of the gaps.
/// The tighter "interval plus 10 %" is asserted on the mean where it is measured.
fn check_gaps(all: &BTreeMap<String, Vec<i64>>) -> (f64, i64) {
    let interval = i64::try_from(interval().as_millis()).unwrap();
    let (mut sum, mut n, mut max) = (0i64, 0i64, 0i64);
    for (host, gaps) in all {
        assert!(gaps.len() >= 2, "{host}: too few attestations: {gaps:?}");
        for g in gaps {
            assert!(
                *g >= interval / 2,
                "{host} attested twice within one interval: {gaps:?}"
            );
            assert!(
                *g <= interval + interval / 2,
                "{host} skipped or late: {gaps:?}"
            );
            sum += g;
            n += 1;
            max = max.max(*g);
        }
    }
    (sum as f64 / n as f64, max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_attest_each_host_once_per_interval_on_time_and_share_them() {
    let Some((h, hosts)) = fleet(20).await else {
        return;
    };
    let replicas = vec![
        start_replica(&h, "replica-a").await,
        start_replica(&h, "replica-b").await,
        start_replica(&h, "replica-c").await,
    ];
    let live: Vec<String> = replicas.iter().map(Replica::id).collect();
    // Registered hosts were free: the replicas attest them and hand each to its owner.
    let took = wait_for_fair_share(&h.state.store, &hosts, &live, interval() * 4).await;
    eprintln!("fair share reached {took:?} after the replicas started");
    let counts_before: Vec<u64> = replica_counts(&replicas).await;
    let from = now_ms(&h);
    tokio::time::sleep(interval() * 8).await;
    let to = now_ms(&h);
    let mut all = BTreeMap::new();
    for host in &hosts {
        all.insert(
            host.clone(),
            gaps_within(&h.state.store, host, from, to).await,
        );
    }
    let (mean, max) = check_gaps(&all);
    eprintln!(
        "period at --attest-interval {:?}, {} hosts, 3 replicas: mean {mean:.0} ms, max {max} ms",
        interval(),
        hosts.len()
    );
    assert!(
        mean <= interval().as_millis() as f64 * 1.1,
        "mean period {mean:.0} ms"
    );
    // Each replica attested (its share), as its own /metrics says, and they stayed put.
    let counts_after = replica_counts(&replicas).await;
    for (i, (a, b)) in counts_before.iter().zip(&counts_after).enumerate() {
        let owned = hosts
            .iter()
            .filter(|h| rendezvous_owner(h, &live) == Some(live[i].as_str()))
            .count() as u64;
        // About 8 attestations of each owned host in 8 intervals.
        assert!(
            b - a >= owned * 6 && b - a <= owned * 9 + 2,
            "{}: {} attestations for {owned} hosts",
            live[i],
            b - a
        );
    }
    wait_for_fair_share(&h.state.store, &hosts, &live, Duration::ZERO).await;
    for mut r in replicas {
        r.stop().await;
    }
}

async fn replica_counts(replicas: &[Replica]) -> Vec<u64> {
    let mut v = Vec::new();
    for r in replicas {
        v.push(attestations_total(&r.state).await);
    }
    v
}

/// Watches every host's verdict through the API every 50 ms for `d`; panics on anything but
/// `trusted` (a verdict that expired during a takeover reads `unknown`).
async fn watch_trusted(h: &Harness, hosts: &[String], d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        for host in hosts {
            let v = h.host(host).await;
            assert_eq!(
                v["trust"]["verdict"],
                "trusted",
                "{host} after {:?}: {v}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_hosts_are_taken_over_before_their_verdicts_expire() {
    let Some((h, hosts)) = fleet(12).await else {
        return;
    };
    let mut a = start_replica(&h, "replica-a").await;
    let mut b = start_replica(&h, "replica-b").await;
    let live = vec![a.id(), b.id()];
    wait_for_fair_share(&h.state.store, &hosts, &live, interval() * 4).await;
    tokio::time::sleep(interval() * 2).await;
    let b_hosts: Vec<String> = owners(&h.state.store, &hosts)
        .await
        .into_iter()
        .filter(|(_, o)| o.as_deref() == Some("replica-b"))
        .map(|(h, _)| h)
        .collect();
    assert!(!b_hosts.is_empty());
    let killed = now_ms(&h);
    b.kill().await;
    // Through the takeover, every verdict holds (none reads `unknown`).
    watch_trusted(&h, &hosts, dead_after(interval()) + interval() * 3).await;
    // Every host of the dead replica was attested again, by the survivor, well within the
    // validity; the survivor now holds them all.
    let mut worst_gap = 0;
    let mut worst_takeover = 0;
    for host in &b_hosts {
        let t = report_times(&h.state.store, host).await;
        let before = t.iter().rev().find(|c| **c <= killed).copied().unwrap();
        let after = t.iter().find(|c| **c > killed).copied().unwrap();
        worst_gap = worst_gap.max(after - before);
        worst_takeover = worst_takeover.max(after - killed);
    }
    eprintln!(
        "kill: {} hosts taken over; first attestation by the survivor at most {worst_takeover} ms after the kill; \
         longest gap between two verdicts {worst_gap} ms (validity {:?}, bound {:?})",
        b_hosts.len(),
        validity(),
        worst_takeover_gap(interval())
    );
    // Taken over on the heartbeat, not at lease expiry (three intervals after the last claim).
    assert!(
        worst_takeover < 2 * interval_ms(),
        "first attestation after the kill {worst_takeover} ms"
    );
    let validity_ms = i64::try_from(validity().as_millis()).unwrap();
    assert!(worst_gap < validity_ms, "{worst_gap} ms");
    assert!(
        worst_gap <= i64::try_from(worst_takeover_gap(interval()).as_millis()).unwrap(),
        "{worst_gap} ms"
    );
    let now = owners(&h.state.store, &hosts).await;
    assert!(
        now.values().all(|o| o.as_deref() == Some("replica-a")),
        "{now:?}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_replica_hands_its_hosts_over_at_once() {
    let Some((h, hosts)) = fleet(12).await else {
        return;
    };
    let mut a = start_replica(&h, "replica-a").await;
    let mut b = start_replica(&h, "replica-b").await;
    let live = vec![a.id(), b.id()];
    wait_for_fair_share(&h.state.store, &hosts, &live, interval() * 4).await;
    tokio::time::sleep(interval() * 2).await;
    let from = now_ms(&h);
    b.stop().await;
    // At once: no lease of the stopped replica left, and its heartbeat row gone.
    let counts = h.state.store.lease_counts().await.unwrap();
    assert!(
        counts
            .iter()
            .all(|(o, _)| o.as_deref() != Some("replica-b")),
        "{counts:?}"
    );
    let live_now = h.state.store.live_replicas(60_000).await.unwrap();
    assert_eq!(live_now, ["replica-a"]);
    watch_trusted(&h, &hosts, interval() * 4).await;
    let to = now_ms(&h);
    // No host waited for anything: the survivor attested each on its usual schedule.
    let mut all = BTreeMap::new();
    for host in &hosts {
        all.insert(
            host.clone(),
            gaps_within(&h.state.store, host, from - 3 * interval_ms() / 2, to).await,
        );
    }
    let (mean, max) = check_gaps(&all);
    eprintln!("graceful stop: gaps mean {mean:.0} ms, max {max} ms");
    assert!(
        mean <= interval().as_millis() as f64 * 1.1,
        "mean period {mean:.0} ms"
    );
    let now = owners(&h.state.store, &hosts).await;
    assert!(
        now.values().all(|o| o.as_deref() == Some("replica-a")),
        "{now:?}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_gets_its_share_back_without_double_attestation() {
    let Some((h, hosts)) = fleet(16).await else {
        return;
    };
    let mut a = start_replica(&h, "replica-a").await;
    let mut b = start_replica(&h, "replica-b-1").await;
    wait_for_fair_share(&h.state.store, &hosts, &[a.id(), b.id()], interval() * 4).await;
    b.kill().await;
    // The survivor carries everything once the dead replica is noticed.
    wait_for_fair_share(
        &h.state.store,
        &hosts,
        &[a.id()],
        dead_after(interval()) + interval() * 4,
    )
    .await;
    // The replica comes back under a new id and takes its share within a few intervals.
    let from = now_ms(&h);
    let mut b2 = start_replica(&h, "replica-b-2").await;
    let live = vec![a.id(), b2.id()];
    let took = wait_for_fair_share(&h.state.store, &hosts, &live, interval() * 4).await;
    let share = hosts
        .iter()
        .filter(|h| rendezvous_owner(h, &live) == Some("replica-b-2"))
        .count();
    eprintln!(
        "restart: the new replica holds its {share} of {} hosts {took:?} after starting",
        hosts.len()
    );
    assert!(share > 0);
    tokio::time::sleep(interval() * 3).await;
    let to = now_ms(&h);
    // Across the hand-over no host was attested twice in an interval, and none skipped.
    let mut all = BTreeMap::new();
    for host in &hosts {
        all.insert(
            host.clone(),
            gaps_within(&h.state.store, host, from, to).await,
        );
    }
    check_gaps(&all);
    assert!(attestations_total(&b2.state).await > 0);
    a.stop().await;
    b2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_the_agents_start_event_make_one_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    let h = Harness::with_config(dir, db, |c| c.attest_interval = Duration::from_secs(30)).await;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_scheduler(h.state.clone(), async move {
        let _ = rx.await;
    }));
    // As the agent does: register, then say it started.
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/agent-events",
            Auth::Agent,
            Some(json!({"host_name": "node-1", "hardware_uuid": "uuid-1"})),
        )
        .await;
    assert_eq!(s.as_u16(), 202, "{v}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(node.lock().unwrap().quotes, 1, "attested once, not twice");
    // A host whose agent never says it started is attested all the same, a second after
    // registration.
    let quiet = h.enrol("node-2", "uuid-2", &gold_boot("grub 2.06")).await;
    let start = Instant::now();
    while quiet.lock().unwrap().quotes == 0 {
        assert!(start.elapsed() < Duration::from_secs(3), "never attested");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(report_times(&h.state.store, "node-2").await.len(), 1);
    let _ = stop.send(());
    task.await.unwrap();
}

// ---- benchmark: takeover of a large fleet ----

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bench_call(
    router: &axum::Router,
    method: &str,
    path: &str,
    creds: (&str, &str),
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
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
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Registers fleet agent `i` (endorsement, challenge, activation by its software TPM).
async fn bench_register(router: &axum::Router, fleet: &nodetrust_testkit::fleet::Fleet, i: usize) {
    use nodetrust_proto::b64;
    let req = fleet.register_request(i).unwrap();
    let ek = b64::encode(&req.ek_public);
    let (s, v) = bench_call(
        router,
        "POST",
        "/mtwilson/v2/tpm-endorsements",
        common::ADMIN,
        json!({"ek_public": ek}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, ch) = bench_call(
        router,
        "POST",
        "/mtwilson/v2/hosts/register",
        common::AGENT,
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
    let (s, v) = bench_call(
        router,
        "POST",
        &path,
        common::AGENT,
        json!({"secret": b64::encode(&secret)}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// Takeover of a large fleet: two replicas share `NODETRUST_BENCH_HOSTS` (default 10,000)
/// simulated agents over HTTPS at `NODETRUST_BENCH_INTERVAL` seconds (default 10); one is
/// killed; prints how long until the survivor attested every one of the dead replica's hosts
/// and the longest gap between two verdicts of any of them. Run with
/// `scripts/with-postgres.sh cargo test --release -p nodetrust-server --test replicas -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn takeover_of_a_large_fleet() {
    use nodetrust_server::agent_client::HttpsAgents;
    use nodetrust_server::clock::SystemClock;
    use std::sync::Arc;
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set (scripts/with-postgres.sh sets it): skipped");
        return;
    };
    let n: usize = env_or("NODETRUST_BENCH_HOSTS", 10_000);
    let interval = Duration::from_secs(env_or("NODETRUST_BENCH_INTERVAL", 10));
    let validity = Duration::from_secs(env_or("NODETRUST_BENCH_VALIDITY", 60));
    let dir = tempfile::tempdir().unwrap();
    let fleet = Arc::new(
        nodetrust_testkit::fleet::Fleet::start(
            "sim",
            n,
            &gold_boot("grub 2.06")
                .into_iter()
                .map(|e| nodetrust_testkit::fleet::BootEvent {
                    pcr: e.pcr,
                    event_type: e.event_type,
                    measured: e.measured,
                    data: e.data,
                })
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    );
    let mut states = Vec::new();
    for id in ["replica-a", "replica-b"] {
        let mut config = common::test_config(&db, dir.path());
        config.attest_interval = interval;
        config.report_validity = validity;
        config.replica_id = Some(id.into());
        let agents = Arc::new(HttpsAgents::new(Duration::from_secs(10), None));
        states.push(
            AppState::new(
                &config,
                Store::connect(&db).await.unwrap(),
                Arc::new(SystemClock),
                agents,
            )
            .await
            .unwrap(),
        );
    }
    let router = nodetrust_server::app(states[0].clone());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..4 {
        let (router, fleet) = (router.clone(), fleet.clone());
        tasks.push(tokio::spawn(async move {
            for i in (part..n).step_by(4) {
                bench_register(&router, &fleet, i).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("registered {n} hosts in {:?}", t.elapsed());
    let (s, v) = bench_call(
        &router,
        "POST",
        "/mtwilson/v2/flavors",
        common::ADMIN,
        json!({"from_host": "sim-0"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mut tasks = Vec::new();
    for state in &states {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_scheduler(state.clone(), async move {
            let _ = rx.await;
        }));
        tasks.push((stop, task));
    }
    let live = vec!["replica-a".to_string(), "replica-b".to_string()];
    let names: Vec<String> = (0..n).map(|i| format!("sim-{i}")).collect();
    let b_share = names
        .iter()
        .filter(|h| rendezvous_owner(h, &live) == Some("replica-b"))
        .count() as i64;
    // Fair share: replica-b holds exactly its rendezvous hosts.
    let store = &states[0].store;
    let t = Instant::now();
    loop {
        let counts = store.lease_counts().await.unwrap();
        let b = counts
            .iter()
            .find(|(o, _)| o.as_deref() == Some("replica-b"))
            .map_or(0, |(_, c)| *c);
        if b == b_share {
            break;
        }
        assert!(t.elapsed() < interval * 10, "no fair share: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "fair share ({b_share} of {n} hosts on replica-b) {:?} after the schedulers started",
        t.elapsed()
    );
    tokio::time::sleep(interval * 2).await;
    let (_, b_task) = tasks.pop().unwrap();
    let killed = states[0].now_ms();
    b_task.abort();
    let _ = b_task.await;
    let t = Instant::now();
    loop {
        let counts = store.lease_counts().await.unwrap();
        if counts
            .iter()
            .all(|(o, _)| o.as_deref() != Some("replica-b"))
        {
            break;
        }
        assert!(t.elapsed() < validity, "not taken over: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let claimed = t.elapsed();
    tokio::time::sleep(interval * 2).await;
    let reports = store
        .reports(None, 10 * i64::try_from(n).unwrap())
        .await
        .unwrap();
    let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for r in &reports {
        times
            .entry(r.host_name.as_str())
            .or_default()
            .push(r.created);
    }
    let (mut worst_first, mut worst_gap, mut taken) = (0i64, 0i64, 0usize);
    for host in names
        .iter()
        .filter(|h| rendezvous_owner(h, &live) == Some("replica-b"))
    {
        let t = times.get(host.as_str()).unwrap();
        let before = t.iter().filter(|c| **c <= killed).max().copied().unwrap();
        let after = t.iter().filter(|c| **c > killed).min().copied().unwrap();
        worst_first = worst_first.max(after - killed);
        worst_gap = worst_gap.max(after - before);
        taken += 1;
    }
    eprintln!(
        "kill of replica-b with {taken} hosts at --attest-interval {interval:?}: all leases taken {claimed:?} after the kill; \
         each host attested by the survivor at most {worst_first} ms after the kill; longest gap between two verdicts \
         {worst_gap} ms (bound {:?}, --report-validity {validity:?}); attestations by replica-a {}",
        worst_takeover_gap(interval),
        attestations_total(&states[0]).await
    );
    assert!(worst_gap < i64::try_from(validity.as_millis()).unwrap());
    let (stop, task) = tasks.pop().unwrap();
    let _ = stop.send(());
    task.await.unwrap();
}

// ---- the claim statement, without schedulers ----

fn host_row(name: &str) -> nodetrust_server::store::HostRow {
    nodetrust_server::store::HostRow {
        ek_public: format!("ek-{name}"),
        ..common::host_row(name, &format!("uuid-{name}"), 0)
    }
}

#[tokio::test]
async fn a_silent_replicas_hosts_are_claimed_when_due_and_a_live_ones_are_not() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL replica test skipped");
        return;
    };
    let store = Store::connect(&db).await.unwrap();
    for name in ["h1", "h2"] {
        store.register_host(&host_row(name), 0).await.unwrap();
    }
    let (now, period, dead) = (100_000, 1_000, 1_000);
    store.heartbeat("a").await.unwrap();
    store.heartbeat("b").await.unwrap();
    assert_eq!(
        store
            .claim_due("a", now, now + 30_000, period, dead, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect::<Vec<_>>(),
        ["h1"]
    );
    assert_eq!(
        store
            .claim_due("b", now, now + 30_000, period, dead, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect::<Vec<_>>(),
        ["h2"]
    );
    // The next attestation keeps the phase: due time + period, or now + period when past.
    assert!(store.schedule("h1", now - 300).await.unwrap());
    assert!(store.hand_over("h1", "a", "b", now + 30_000).await.unwrap());
    assert!(
        !store.hand_over("h1", "a", "b", now + 30_000).await.unwrap(),
        "no longer a's"
    );
    // b is live: a cannot take h1 from it although it is due.
    assert!(store
        .claim_due("a", now, now + 30_000, period, dead, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect::<Vec<_>>()
        .is_empty());
    assert_eq!(
        store
            .claim_due("b", now, now + 30_000, period, dead, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect::<Vec<_>>(),
        ["h1"]
    );
    assert!(store.schedule("h1", now - 300).await.unwrap());
    // b falls silent: its lease still runs, but a takes h1 at its due time.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    store.heartbeat("a").await.unwrap();
    assert_eq!(store.live_replicas(dead).await.unwrap(), ["a"]);
    assert_eq!(
        store
            .claim_due("a", now, now + 30_000, period, dead, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect::<Vec<_>>(),
        ["h1"],
        "h2 is b's too but not due"
    );
    assert_eq!(
        store.lease("h1").await.unwrap().unwrap().0.as_deref(),
        Some("a")
    );
    // A graceful leave frees every lease and the row at once.
    assert_eq!(store.leave("a").await.unwrap(), 1);
    assert_eq!(store.lease("h1").await.unwrap().unwrap().0, None);
    assert!(store
        .live_replicas(60_000)
        .await
        .unwrap()
        .contains(&"b".to_string()));
    assert!(!store
        .live_replicas(60_000)
        .await
        .unwrap()
        .contains(&"a".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_claiming_at_once_never_both_take_a_host() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL replica test skipped");
        return;
    };
    let store = Store::connect(&db).await.unwrap();
    let n = 200;
    for i in 0..n {
        store
            .register_host(&host_row(&format!("h{i:03}")), 0)
            .await
            .unwrap();
    }
    // Four replicas race for the same due hosts, round after round. None has a heartbeat row
    // (as when heartbeats run late): each sees the others' hosts as free to take, so only the
    // due time, checked again on the locked row, keeps a host from being claimed twice.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Store::connect(&db).await.unwrap());
    }
    for round in 0..5i64 {
        let now = 10_000 + round * 1_000;
        let mut tasks = Vec::new();
        for (r, s) in stores.iter().enumerate() {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s
                        .claim_due(&format!("r{r}"), now, now + 1, 1_000, 60_000, 7)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|h| h.name)
                        .collect::<Vec<_>>();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got);
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(before, all.len(), "round {round}: a host claimed twice");
        assert_eq!(all.len(), n, "round {round}: a due host left unclaimed");
    }
}

// ---- the binary ----

/// A free loopback port below the kernel's ephemeral range ([`nodetrust_testkit::free_port`]).
fn free_port() -> u16 {
    nodetrust_testkit::free_port().unwrap()
}

fn server(db: &str, dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_nodetrust-server"));
    c.args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--db", db])
        .args(["--state-dir", &dir.display().to_string()])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_replicas_whose_takeover_outlasts_a_verdict_and_hands_over_on_sigterm() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL replica test skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Refused at start, saying why.
    let out = server(
        &db,
        dir.path(),
        &["--attest-interval", "60s", "--report-validity", "1m"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--report-validity (1m) is too short for --attest-interval (1m) with several replicas"
        ),
        "{err}"
    );
    // A replica holding a host (its agent does not answer: the lease is held all the same).
    let store = Store::connect(&db).await.unwrap();
    let mut row = host_row("h1");
    row.connection_url = "https://127.0.0.1:1".into();
    store.register_host(&row, now_ms_system()).await.unwrap();
    let mut child = server(
        &db,
        dir.path(),
        &[
            "--attest-interval",
            "2s",
            "--report-validity",
            "20s",
            "--replica-id",
            "bin-a",
        ],
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let start = Instant::now();
    while store.lease("h1").await.unwrap().unwrap().0.as_deref() != Some("bin-a") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the binary never claimed h1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store
        .live_replicas(60_000)
        .await
        .unwrap()
        .contains(&"bin-a".to_string()));
    // SIGTERM: the lease is released and the heartbeat row deleted before the process ends.
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(store.lease("h1").await.unwrap().unwrap().0, None);
    assert!(!store
        .live_replicas(60_000)
        .await
        .unwrap()
        .contains(&"bin-a".to_string()));
}

fn now_ms_system() -> i64 {
    nodetrust_server::store::millis(std::time::SystemTime::now())
}
