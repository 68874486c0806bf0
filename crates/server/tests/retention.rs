//! Retention through the server's state: old reports and changes are pruned by the clock,
//! each host's latest report stays where the API serves it, the counts reach `/metrics`, and
//! a retention shorter than the report validity is refused. Runs on SQLite, and on PostgreSQL
//! too when `NODETRUST_TEST_PG_URL` is set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::time::Duration;

use common::{gold_boot, Auth, Harness};
use nodetrust_server::retention::{prune_once, run_pruner, Pruned, PRUNE_BATCH};
use nodetrust_server::state::StartError;
use nodetrust_server::store::Store;
use nodetrust_server::AppState;

const HOUR: Duration = Duration::from_secs(3600);

/// Harnesses with one-hour retentions: SQLite, and PostgreSQL when configured.
async fn harnesses() -> Vec<Harness> {
    let edit = |c: &mut nodetrust_server::config::Config| {
        c.report_retention = HOUR;
        c.change_retention = HOUR;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/server.db", dir.path().display());
    let mut out = vec![Harness::with_config(dir, sqlite, edit).await];
    match common::pg_database().await {
        Some(url) => out.push(Harness::with_config(tempfile::tempdir().unwrap(), url, edit).await),
        None => eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL half skipped"),
    }
    out
}

async fn reports(h: &Harness, query: &str) -> Vec<serde_json::Value> {
    let (s, v) = h
        .call(
            "GET",
            &format!("/mtwilson/v2/reports?{query}"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    v["reports"].as_array().unwrap().clone()
}

async fn metrics(h: &Harness) -> String {
    let (s, v) = h.call("GET", "/metrics", Auth::None, None).await;
    assert_eq!(s.as_u16(), 200);
    v.as_str().unwrap().to_string()
}

#[tokio::test]
async fn old_rows_are_pruned_by_the_clock_and_the_latest_report_stays() {
    for h in harnesses().await {
        let db = h.db.clone();
        h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
        h.enrol("node", "uuid-node", &gold_boot("grub 2.06")).await;
        for name in ["gold", "gold", "node"] {
            assert_eq!(h.attest(name).await.0.as_u16(), 200);
        }
        // Nothing is old yet.
        assert_eq!(
            prune_once(&h.state, PRUNE_BATCH).await.unwrap(),
            Pruned::default(),
            "{db}"
        );
        assert!(metrics(&h)
            .await
            .contains("nodetrust_pruned_rows_total{table=\"reports\"} 0"));
        let changes = h.state.store.changes_since(0, 1000).await.unwrap().len();
        assert!(changes >= 4, "registrations and first verdicts: {changes}");

        // Two hours on, gold is attested again; node is not.
        h.clock.advance(2 * HOUR);
        assert_eq!(h.attest("gold").await.0.as_u16(), 200);
        let pruned = prune_once(&h.state, 1).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                reports: 2,
                changes: u64::try_from(changes).unwrap()
            },
            "gold's two old reports and every old change ({db})"
        );
        assert!(h
            .state
            .store
            .changes_since(0, 1000)
            .await
            .unwrap()
            .is_empty());
        let gold = reports(&h, "host_name=gold").await;
        assert_eq!(gold.len(), 1, "{db}");
        // node's only report is old, but it is node's latest: kept, and served.
        let node = reports(&h, "host_name=node&latest=true").await;
        assert_eq!(node.len(), 1, "{db}");
        assert_eq!(reports(&h, "latest=true").await.len(), 2, "{db}");
        let text = metrics(&h).await;
        assert!(
            text.contains("nodetrust_pruned_rows_total{table=\"reports\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "nodetrust_pruned_rows_total{{table=\"changes\"}} {changes}"
            )),
            "{text}"
        );
        // Later still: the latest reports stay however old they get.
        h.clock.advance(10 * HOUR);
        assert_eq!(
            prune_once(&h.state, PRUNE_BATCH).await.unwrap(),
            Pruned::default()
        );
        assert_eq!(reports(&h, "latest=true").await.len(), 2, "{db}");
    }
}

#[tokio::test]
async fn the_pruner_task_prunes_at_start_and_stops_on_shutdown() {
    let h = harnesses().await.into_iter().next().unwrap();
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    assert_eq!(h.attest("gold").await.0.as_u16(), 200);
    h.clock.advance(2 * HOUR);
    assert_eq!(h.attest("gold").await.0.as_u16(), 200);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_pruner(h.state.clone(), async move {
        let _ = stop_rx.await;
    }));
    let start = std::time::Instant::now();
    while !metrics(&h)
        .await
        .contains("nodetrust_pruned_rows_total{table=\"reports\"} 1")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not pruned at start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reports(&h, "host_name=gold").await.len(), 1);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the pruner stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_retention_shorter_than_the_validity_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    for shorten in [
        |c: &mut nodetrust_server::config::Config| c.report_retention = Duration::from_secs(60),
        |c: &mut nodetrust_server::config::Config| c.change_retention = Duration::from_secs(599),
    ] {
        let mut config = common::test_config(&db, dir.path());
        shorten(&mut config);
        let err = AppState::new(
            &config,
            Store::connect(&db).await.unwrap(),
            std::sync::Arc::new(nodetrust_server::clock::ManualClock::default()),
            std::sync::Arc::new(common::SoftAgents::default()),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StartError::Config(_)), "{err}");
        assert!(
            err.to_string()
                .contains("shorter than --report-validity (10m)"),
            "{err}"
        );
    }
}
