//! Faults of the server's surroundings and what the server does: a full disk (writes fail,
//! readiness says so, both recover without a restart), a commit that fails midway (nothing
//! acknowledged is lost), a locked database, databases that cannot be opened (the error names
//! why), and files holding secrets (owner-only, or the server refuses to start); PostgreSQL
//! stopped and started again under running servers, an agent flapping, the clock jumping
//! forward and back. Each ends asserting that nothing acknowledged is lost, that no host is
//! called untrusted for a fault of the infrastructure, and that service resumes by itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{gold_boot, Auth, Harness, SoftAgent};
use nodetrust_proto::trust::Trust;
use nodetrust_server::scheduler::run_scheduler;
use nodetrust_server::store::{new_id, ReportRow, Store};
use serde_json::{json, Value};

fn report(host: &str, created: i64, size: usize) -> ReportRow {
    ReportRow {
        id: new_id(),
        host_name: host.into(),
        verdict: Trust::Trusted,
        reasons: "[]".into(),
        created,
        expires: created + 600_000,
        hardware_uuid: String::new(),
        signed_report: "r".repeat(size),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn readyz(h: &Harness) -> StatusCode {
    h.call("GET", "/readyz", Auth::None, None).await.0
}

async fn disk_full_then_recovers_on(h: Harness) {
    h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let store = &h.state.store;
    let now = h.state.now_ms();
    store
        .save_report(&report("node-1", now, 100), true, None)
        .await
        .unwrap();
    assert_eq!(readyz(&h).await, StatusCode::OK);

    store.inject_disk_full(true).await.unwrap();
    // Write until the disk is full (free pages may take a few reports first).
    let mut failed = None;
    for i in 0..500 {
        if let Err(e) = store
            .save_report(&report("node-1", now + i, 8 * 1024), true, None)
            .await
        {
            failed = Some(e.to_string());
            break;
        }
    }
    let first = failed.expect("no write failed on a full disk");
    // Later writes fail for the same reason, not because the connection was left inside a
    // failed transaction.
    let e = store
        .save_report(&report("node-1", now + 1000, 8 * 1024), true, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("transaction depth"), "{e} (first: {first})");
    assert!(e.contains("full"), "{e}");
    assert_eq!(readyz(&h).await, StatusCode::SERVICE_UNAVAILABLE);
    let (_, v) = h.call("GET", "/readyz", Auth::None, None).await;
    assert!(v["error"].as_str().unwrap().contains("full"), "{v}");

    // Space again: writes and readiness recover without a restart.
    store.inject_disk_full(false).await.unwrap();
    assert_eq!(readyz(&h).await, StatusCode::OK);
    for i in 0..5 {
        store
            .save_report(&report("node-1", now + 2000 + i, 8 * 1024), true, None)
            .await
            .unwrap();
    }
    let (s, v) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(readyz(&h).await, StatusCode::OK);
}

#[tokio::test]
async fn disk_full_then_recovers() {
    disk_full_then_recovers_on(Harness::new().await).await;
}

#[tokio::test]
async fn disk_full_then_recovers_postgres() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL variant skipped");
        return;
    };
    disk_full_then_recovers_on(Harness::with_db(tempfile::tempdir().unwrap(), db).await).await;
}

async fn kill_inside_commit_on(mut h: Harness) {
    h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let now = h.state.now_ms();
    // The next three commits fail after their statements ran: the group commit of the first
    // batch, then the first reports retried one by one.
    h.state
        .store
        .faults()
        .fail_commits
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = h.state.store.clone();
        let r = report("node-1", now + i, 64);
        tasks.push(tokio::spawn(async move {
            let res = store.save_report(&r, true, None).await;
            (r.id, res.is_ok())
        }));
    }
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for t in tasks {
        let (id, ok) = t.await.unwrap();
        if ok {
            acked.push(id);
        } else {
            failed.push(id);
        }
    }
    assert!(!failed.is_empty(), "no commit failed");
    assert!(!acked.is_empty());
    // A new process on the same database has every acknowledged report, and none of the
    // failed ones.
    h.restart().await;
    let stored: std::collections::BTreeSet<String> = h
        .state
        .store
        .reports(Some("node-1"), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged report {id} lost");
    }
    for id in &failed {
        assert!(!stored.contains(id), "failed report {id} was stored");
    }
    assert_eq!(readyz(&h).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_inside_commit_loses_nothing_acknowledged() {
    kill_inside_commit_on(Harness::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_inside_commit_loses_nothing_acknowledged_postgres() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL variant skipped");
        return;
    };
    kill_inside_commit_on(Harness::with_db(tempfile::tempdir().unwrap(), db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_readyz_503() {
    use sqlx::Connection as _;
    let h = Harness::new().await;
    assert_eq!(readyz(&h).await, StatusCode::OK);
    // Another process holds the write lock.
    let mut other = sqlx::AnyConnection::connect(&h.db).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("INSERT INTO server_keys (name, value) VALUES ('lock-holder', 'x')")
        .execute(&mut other)
        .await
        .unwrap();
    let (s, v) = h.call("GET", "/readyz", Auth::None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    let start = Instant::now();
    while readyz(&h).await != StatusCode::OK {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "readyz did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn connect_errors_name_the_cause() {
    // A PostgreSQL port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let e = Store::connect(&format!("postgres://nodetrust@127.0.0.1:{port}/nodetrust"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.to_lowercase().contains("refused"), "{e}");
    assert!(!e.contains("timed out"), "{e}");
    // A file that is not an SQLite database.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.db");
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let start = Instant::now();
    let e = Store::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.contains("not a database"), "{e}");
}

#[tokio::test]
async fn db_and_state_dir_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = state.join("db").join("server.db");
    let store = Store::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    store.put_user("u", "h", "reader", 0).await.unwrap();
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    for suffix in ["-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", file.display()));
        assert!(p.exists(), "{}", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    // The generated TLS pair goes into an owner-only state directory.
    let tls_dir = dir.path().join("tls-state");
    nodetrust_server::tls::server_identity(None, None, &tls_dir).unwrap();
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(mode(&tls_dir.join("server.key")), 0o600);
}

#[tokio::test]
async fn refuses_start_with_world_readable_key() {
    let dir = tempfile::tempdir().unwrap();
    // The TLS key.
    let tls_dir = dir.path().join("state");
    nodetrust_server::tls::server_identity(None, None, &tls_dir).unwrap();
    let key = tls_dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = nodetrust_server::tls::server_identity(None, None, &tls_dir)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("chmod 600 {}", key.display())), "{e}");
    let e = nodetrust_server::tls::server_identity(
        Some(&tls_dir.join("server.crt")),
        Some(&key),
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("chmod 600"), "{e}");
    // The database, which holds the report-signing key.
    let file = dir.path().join("server.db");
    drop(
        Store::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap(),
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = Store::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("chmod 600 {}", file.display())), "{e}");
    // The binary refuses to start, saying so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--db", &format!("sqlite://{}", file.display())])
        .args(["--state-dir", &tls_dir.display().to_string()])
        .env("NODETRUST_ADMIN_USERNAME", "admin")
        .env("NODETRUST_ADMIN_PASSWORD", "admin-pw")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

// ---- agents, clocks and databases coming and going under a running server ----

const VALIDITY: Duration = Duration::from_secs(600);

/// A gold host, flavors imported from it, and `node-1` booted like it and trusted.
async fn trusted_node(h: &Harness) -> Arc<Mutex<SoftAgent>> {
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let (s, r) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["verdict"], "trusted", "{r}");
    node
}

/// Every verdict ever reported for `host`, newest first.
async fn verdicts(store: &Store, host: &str) -> Vec<Trust> {
    store
        .reports(Some(host), 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.verdict)
        .collect()
}

/// Waits until `host` shows `verdict`; it must never show `untrusted` on the way.
async fn wait_for_verdict(h: &Harness, host: &str, verdict: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = h.host(host).await;
        let now = v["trust"]["verdict"].as_str().unwrap().to_string();
        if verdict != "untrusted" {
            assert_ne!(now, "untrusted", "{host} untrusted by a fault: {v}");
        }
        if now == verdict {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{host} not {verdict} within 20 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the scheduler of `state` until the returned sender is dropped or sent to.
fn scheduler(
    state: &nodetrust_server::AppState,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_scheduler(state.clone(), async move {
        let _ = rx.await;
    }));
    (tx, task)
}

async fn fast_harness(db: Option<String>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = db.unwrap_or_else(|| format!("sqlite://{}/server.db", dir.path().display()));
    Harness::with_config(dir, db, |c| c.attest_interval = Duration::from_secs(1)).await
}

#[tokio::test]
async fn agent_flapping_never_makes_untrusted() {
    let h = Harness::new().await;
    let node = trusted_node(&h).await;
    // Down twice, then up, 100 s apart: never down for as long as the validity.
    for round in 0..12 {
        let down = round % 3 != 2;
        node.lock().unwrap().down = down;
        h.clock.advance(Duration::from_secs(100));
        let (s, v) = h.attest("node-1").await;
        let host = h.host("node-1").await;
        if down {
            assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
            assert_eq!(v["reason"], "agent_error", "{v}");
            assert_eq!(host["status"], "unreachable", "{host}");
        } else {
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(v["verdict"], "trusted", "{v}");
            assert_eq!(host["status"], "connected", "{host}");
        }
        assert_eq!(host["trust"]["verdict"], "trusted", "round {round}: {host}");
    }
    // Flapping between two attestations, with no time passing.
    for _ in 0..5 {
        node.lock().unwrap().down = true;
        assert_eq!(h.attest("node-1").await.0, StatusCode::BAD_GATEWAY);
        node.lock().unwrap().down = false;
        let (_, v) = h.attest("node-1").await;
        assert_eq!(v["verdict"], "trusted", "{v}");
    }
    // Down for longer than the validity: unknown once it expires, never untrusted.
    node.lock().unwrap().down = true;
    h.clock.advance(VALIDITY / 2);
    assert_eq!(h.attest("node-1").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(h.host("node-1").await["trust"]["verdict"], "trusted");
    h.clock.advance(VALIDITY / 2 + Duration::from_secs(1));
    assert_eq!(h.attest("node-1").await.0, StatusCode::BAD_GATEWAY);
    let host = h.host("node-1").await;
    assert_eq!(host["trust"]["verdict"], "unknown", "{host}");
    let why = host["trust"]["reasons"].to_string();
    assert!(
        why.contains("expired") && why.contains("unreachable"),
        "{host}"
    );
    // Back: trusted on the next attestation.
    node.lock().unwrap().down = false;
    let (_, v) = h.attest("node-1").await;
    assert_eq!(v["verdict"], "trusted", "{v}");
    assert_eq!(h.host("node-1").await["status"], "connected");
    let all = verdicts(&h.state.store, "node-1").await;
    assert!(!all.contains(&Trust::Untrusted), "{all:?}");
    assert_eq!(
        all.iter().filter(|v| **v == Trust::Unknown).count(),
        1,
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumping_forward_and_back() {
    let h = fast_harness(None).await;
    let node = trusted_node(&h).await;
    // Forward past the validity: unknown (expired), not untrusted.
    h.clock.advance(VALIDITY + Duration::from_secs(100));
    let host = h.host("node-1").await;
    assert_eq!(host["trust"]["verdict"], "unknown", "{host}");
    assert!(
        host["trust"]["reasons"].to_string().contains("expired"),
        "{host}"
    );
    // The next attestation (the scheduler's: the host is due) brings the verdict back.
    let (stop, task) = scheduler(&h.state);
    wait_for_verdict(&h, "node-1", "trusted").await;
    // Forward again while the agent is down: the expiry is recorded as unknown.
    node.lock().unwrap().down = true;
    h.clock.advance(VALIDITY + Duration::from_secs(100));
    wait_for_verdict(&h, "node-1", "unknown").await;
    let start = Instant::now();
    while verdicts(&h.state.store, "node-1").await[0] != Trust::Unknown {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the expiry was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back to before the last trusted verdict's expiry: that verdict does not come back.
    h.clock.rewind(2 * VALIDITY + Duration::from_secs(100));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let host = h.host("node-1").await;
    assert_eq!(host["trust"]["verdict"], "unknown", "{host}");
    // Scheduling goes on by the rewound clock: the agent, back, is attested again.
    let quotes = node.lock().unwrap().quotes;
    node.lock().unwrap().down = false;
    let host = wait_for_verdict(&h, "node-1", "trusted").await;
    assert!(node.lock().unwrap().quotes > quotes);
    assert_eq!(host["status"], "connected", "{host}");
    // And again at the next interval.
    let quotes = node.lock().unwrap().quotes;
    let start = Instant::now();
    while node.lock().unwrap().quotes == quotes {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no attestation after the backwards jump"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    let all = verdicts(&h.state.store, "node-1").await;
    assert!(!all.contains(&Trust::Untrusted), "{all:?}");
}

/// Report ids of `hosts`.
async fn report_ids(store: &Store, hosts: &[&str]) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for host in hosts {
        for r in store.reports(Some(host), 100_000).await.unwrap() {
            ids.insert(r.id);
        }
    }
    ids
}

async fn wait_ready(h: &Harness, within: Duration) {
    let start = Instant::now();
    while readyz(h).await != StatusCode::OK {
        assert!(
            start.elapsed() < within,
            "readyz not 200 within {within:?} of the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PostgreSQL stopped at once under `replicas` running server states (each with its
/// scheduler), then started again.
async fn postgres_stopped_and_restarted_on(replicas: usize) {
    let Some(pg) = common::PgCluster::start() else {
        eprintln!("PostgreSQL not installed: skipped");
        return;
    };
    let h = fast_harness(Some(pg.new_database().await)).await;
    let mut states = vec![h.state.clone()];
    for i in 1..replicas {
        let mut config = common::test_config(&h.db, h.dir.path());
        config.attest_interval = Duration::from_secs(1);
        config.replica_id = Some(format!("replica-{i}"));
        let store = Store::connect(&h.db).await.unwrap();
        states.push(
            nodetrust_server::AppState::new(&config, store, h.clock.clone(), h.agents.clone())
                .await
                .unwrap(),
        );
    }
    let node = trusted_node(&h).await;
    let evil = h.enrol("node-2", "uuid-2", &gold_boot("grub evil")).await;
    let (_, r) = h.attest("node-2").await;
    assert_eq!(r["verdict"], "untrusted", "{r}");
    let hosts = ["gold", "node-1", "node-2"];
    let schedulers: Vec<_> = states.iter().map(scheduler).collect();
    // Attested by the schedulers for a while; everything stored so far was acknowledged.
    let start = Instant::now();
    while node.lock().unwrap().quotes < 4 {
        assert!(start.elapsed() < Duration::from_secs(20), "no scheduling");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, r) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let acknowledged = report_ids(&h.state.store, &hosts).await;

    pg.stop_immediate();
    // Attestations fail as internal errors of the server, not as verdicts on the host.
    for state in &states {
        let e = nodetrust_server::engine::attest_host(state, "node-1")
            .await
            .expect_err("an attestation saved with the database down");
        assert_eq!(e.reason(), "store", "{e}");
    }
    let (s, v) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v["reason"], "internal", "{v}");
    assert_eq!(readyz(&h).await, StatusCode::SERVICE_UNAVAILABLE);
    // The schedulers keep trying meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.start_again();
    wait_ready(&h, Duration::from_secs(60)).await;
    // Saves resume without restarting the server, and the verdicts are right.
    for state in &states {
        let r = nodetrust_server::engine::attest_host(state, "node-1")
            .await
            .unwrap();
        assert_eq!(r.verdict, Trust::Trusted, "{r:?}");
        let r = nodetrust_server::engine::attest_host(state, "node-2")
            .await
            .unwrap();
        assert_eq!(r.verdict, Trust::Untrusted, "{r:?}");
    }
    let (s, r) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["verdict"], "trusted", "{r}");
    // The schedulers resume by themselves.
    let quotes = node.lock().unwrap().quotes;
    let start = Instant::now();
    while node.lock().unwrap().quotes < quotes + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the schedulers did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (stop, task) in schedulers {
        stop.send(()).unwrap();
        task.await.unwrap();
    }
    // Nothing acknowledged before the stop is missing, on any replica's view.
    for state in &states {
        let now = report_ids(&state.store, &hosts).await;
        let lost: Vec<_> = acknowledged.difference(&now).collect();
        assert!(lost.is_empty(), "acknowledged reports lost: {lost:?}");
    }
    // No host was called untrusted for the fault.
    for host in ["gold", "node-1"] {
        let all = verdicts(&h.state.store, host).await;
        assert!(!all.contains(&Trust::Untrusted), "{host}: {all:?}");
        let v = h.host(host).await;
        assert_eq!(v["trust"]["verdict"], "trusted", "{v}");
        assert_eq!(v["status"], "connected", "{v}");
    }
    assert_eq!(h.host("node-2").await["trust"]["verdict"], "untrusted");
    assert_eq!(readyz(&h).await, StatusCode::OK);
    drop(evil);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_a_running_server() {
    postgres_stopped_and_restarted_on(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_two_replicas() {
    postgres_stopped_and_restarted_on(2).await;
}

/// Ends every session of the database at `url` but the caller's, as an administrator or a
/// restarted server would; returns how many.
async fn terminate_sessions(url: &str) -> i64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    n
}

/// Runs `n` reads on `store` one after another; returns how many failed.
async fn failed_reads(store: &Store, n: usize) -> usize {
    let mut failed = 0;
    for _ in 0..n {
        if store.ping().await.is_err() {
            failed += 1;
        }
    }
    failed
}

/// The store's PostgreSQL connections are not checked by a round trip at every use
/// (`store::conns`): one the database dropped is found by the first error, or before use
/// after a long idle time, and replaced by a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_the_database_dropped_are_replaced() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: skipped");
        return;
    };
    let store = Store::connect(&db).await.unwrap();
    // Several connections open and idle.
    let reads: Vec<_> = (0..8).map(|_| store.ping()).collect();
    for r in futures_util::future::join_all(reads).await {
        r.unwrap();
    }
    assert!(terminate_sessions(&db).await >= 1);
    // In use at once: the first read on a dropped connection fails (its error is the news),
    // and every one after it is on a connection checked first or opened anew.
    let failed = failed_reads(&store, 20).await;
    assert!(
        failed <= 1,
        "{failed} reads failed after the sessions ended"
    );
    assert_eq!(failed_reads(&store, 20).await, 0);
    // Dropped while idle longer than the check's threshold: not one read fails.
    assert!(terminate_sessions(&db).await >= 1);
    tokio::time::sleep(nodetrust_server::store::PING_IDLE_AFTER + Duration::from_secs(1)).await;
    assert_eq!(failed_reads(&store, 20).await, 0);
    // The database sees the store's connections as sessions again.
    assert!(terminate_sessions(&db).await >= 1);
}
