//! Faults of the server's surroundings and what the server does: a full disk (writes fail,
//! readiness says so, both recover without a restart), a commit that fails midway (nothing
//! acknowledged is lost), a locked database, databases that cannot be opened (the error names
//! why), and files holding secrets (owner-only, or the server refuses to start).
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
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{gold_boot, Auth, Harness};
use nodetrust_proto::trust::Trust;
use nodetrust_server::store::{new_id, ReportRow, Store};

fn report(host: &str, created: i64, size: usize) -> ReportRow {
    ReportRow {
        id: new_id(),
        host_name: host.into(),
        verdict: Trust::Trusted,
        reasons: "[]".into(),
        created,
        expires: created + 600_000,
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
