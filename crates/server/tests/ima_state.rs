//! The `ima_state` table (schema version 6) on SQLite, and on PostgreSQL when
//! `NODETRUST_TEST_PG_URL` is set (`scripts/with-postgres.sh` sets it): written only over the
//! state it was read from, read back, and gone with its host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use nodetrust_server::store::{new_id, ImaStateRow, Store};

async fn stores(dir: &tempfile::TempDir) -> Vec<(String, Store)> {
    let sqlite = format!("sqlite://{}/t-{}.db", dir.path().display(), new_id());
    let mut out = vec![(sqlite.clone(), Store::connect(&sqlite).await.unwrap())];
    if let Some(url) = common::pg_database().await {
        out.push((url.clone(), Store::connect(&url).await.unwrap()));
    } else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL half skipped (scripts/with-postgres.sh sets it)");
    }
    out
}

fn row(host: &str, entries: i64, updated: i64) -> ImaStateRow {
    ImaStateRow {
        host_name: host.into(),
        ak_sha256: "ab".repeat(32),
        reset_count: 3,
        restart_count: 0,
        entries,
        state: format!("{{\"flavors\": {{}}, \"n\": {entries}}}"),
        updated,
    }
}

#[tokio::test]
async fn written_only_over_the_state_read_and_deleted_with_the_host() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        assert_eq!(store.ima_state("h1").await.unwrap(), None, "{url}");
        // First write: only when there is none.
        assert!(
            store
                .put_ima_state(&row("h1", 10, 100), None)
                .await
                .unwrap(),
            "{url}"
        );
        assert!(
            !store
                .put_ima_state(&row("h1", 99, 101), None)
                .await
                .unwrap(),
            "{url}"
        );
        assert_eq!(
            store.ima_state("h1").await.unwrap(),
            Some(row("h1", 10, 100))
        );
        // Then over the state read (updated 100); a writer that read the same state later
        // loses.
        assert!(
            store
                .put_ima_state(&row("h1", 20, 150), Some(100))
                .await
                .unwrap(),
            "{url}"
        );
        assert!(
            !store
                .put_ima_state(&row("h1", 15, 151), Some(100))
                .await
                .unwrap(),
            "{url}"
        );
        assert_eq!(
            store.ima_state("h1").await.unwrap().map(|r| r.entries),
            Some(20),
            "{url}"
        );
        // Other hosts are apart.
        assert!(store.put_ima_state(&row("h2", 5, 100), None).await.unwrap());
        assert!(store.delete_ima_state("h2").await.unwrap());
        assert!(!store.delete_ima_state("h2").await.unwrap());
        assert_eq!(
            store.ima_state("h1").await.unwrap().map(|r| r.entries),
            Some(20)
        );

        // Deleting a host forgets its state: a host registered again under the name starts
        // over.
        let h = common::host_row("h1", "00000000-0000-0000-0000-000000000001", 1000);
        store.register_host(&h, 1000).await.unwrap();
        assert!(store.delete_host("h1", 2000).await.unwrap(), "{url}");
        assert_eq!(store.ima_state("h1").await.unwrap(), None, "{url}");
    }
}
