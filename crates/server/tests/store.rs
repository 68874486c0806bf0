//! The store suite: runs on SQLite always, and on PostgreSQL too when `NODETRUST_TEST_PG_URL`
//! is set (`make test` starts a throwaway cluster and sets it). Each PostgreSQL test gets its
//! own database, so tests run in parallel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nodetrust_server::store::{
    host_key, new_id, report_id, AttestationUpdate, Backend, ChallengeRow, Endorsement, FlavorRow,
    HostRow, Registered, ReportRow, Store, StoredPcrs,
};
use sqlx::Connection as _;
use sqlx::Row as _;

/// Fresh stores to run a check on: SQLite, and PostgreSQL when configured. The temp dir (kept
/// alive by the caller) holds the SQLite file.
async fn stores(dir: &tempfile::TempDir) -> Vec<(String, Store)> {
    let sqlite = format!("sqlite://{}/t-{}.db", dir.path().display(), new_id());
    let mut out = vec![(sqlite.clone(), Store::connect(&sqlite).await.unwrap())];
    if let Some(url) = common::pg_database().await {
        out.push((url.clone(), Store::connect(&url).await.unwrap()));
    } else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL half of the store suite skipped (make test sets it)");
    }
    out
}

/// A fresh PostgreSQL database for a test that needs one, or `None` (the test is skipped,
/// and says so) when `NODETRUST_TEST_PG_URL` is not set.
async fn pg_database_or_skip() -> Option<String> {
    let url = common::pg_database().await;
    if url.is_none() {
        eprintln!("NODETRUST_TEST_PG_URL not set: skipped (make test sets it)");
    }
    url
}

/// A challenge `id` open until 10,000 (issued at 50 by the tests below, activated at 100).
fn open_challenge(id: &str) -> ChallengeRow {
    ChallengeRow {
        id: id.into(),
        secret_sha256: "00".into(),
        request: "{}".into(),
        expires: 10_000,
        ek_issuer: None,
        ek_sha256: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_open_challenges_are_counted_again_within_the_room_a_count_left() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let now = nodetrust_server::store::millis(std::time::SystemTime::now());
        let row = |id: &str| ChallengeRow {
            expires: now + 600_000,
            ..open_challenge(id)
        };
        // The first issue counts all open challenges: none, so room for the next ones.
        assert!(store
            .put_challenge_bounded(&row("r0"), "uuid-r0", now)
            .await
            .unwrap());
        // Another writer (a replica on the same database) fills the table to its bound.
        common::fill_challenges(&url, now + 600_000).await;
        // This store issues within the room its count left at most, then counts again and
        // refuses.
        let mut issued = 0;
        for i in 1..=nodetrust_server::store::CHALLENGE_ROOM + 1 {
            let id = format!("r{i}");
            if !store
                .put_challenge_bounded(&row(&id), &format!("uuid-{id}"), now)
                .await
                .unwrap()
            {
                break;
            }
            issued += 1;
        }
        assert!(
            issued <= nodetrust_server::store::CHALLENGE_ROOM,
            "{url}: {issued} issued past the bound"
        );
        assert!(
            !store
                .put_challenge_bounded(&row("late"), "uuid-late", now)
                .await
                .unwrap(),
            "{url}"
        );
        let (_, all) = store.open_challenges("uuid-r0", now).await.unwrap();
        assert_eq!(
            all,
            nodetrust_server::store::MAX_CHALLENGES + 1 + issued,
            "{url}"
        );
    }
}

/// Each activation's outcome by host name, once all are done.
async fn outcomes_by_name(
    tasks: Vec<tokio::task::JoinHandle<(String, Registered)>>,
) -> BTreeMap<String, Registered> {
    let mut outcomes = BTreeMap::new();
    for t in tasks {
        let (name, outcome) = t.await.unwrap();
        outcomes.insert(name, outcome);
    }
    outcomes
}

fn host(name: &str, uuid: &str) -> HostRow {
    common::host_row(name, uuid, 1000)
}

fn report(host: &str, verdict: &str, created: i64) -> ReportRow {
    ReportRow {
        id: new_id(),
        host_name: host.into(),
        verdict: nodetrust_proto::trust::Trust::parse(verdict).unwrap(),
        reasons: "[\"r\"]".into(),
        created,
        expires: created + 600_000,
        hardware_uuid: String::new(),
        signed_report: "jws".into(),
    }
}

#[test]
fn report_ids_are_unique_and_sort_by_creation_time() {
    let times = [
        0i64,
        1,
        999,
        1_764_633_600_000,
        1_764_633_600_001,
        (1 << 48) - 1,
    ];
    let ids: Vec<String> = times.iter().map(|t| report_id(*t)).collect();
    for id in &ids {
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids sort as their creation times do");
    // The same millisecond: the random part keeps them apart.
    let same: std::collections::BTreeSet<String> = (0..1000).map(|_| report_id(5)).collect();
    assert_eq!(same.len(), 1000);
    assert!(same.iter().all(|id| id.starts_with("000000000005")));
}

#[tokio::test]
async fn migrations_are_idempotent_and_data_survives_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.put_user("u", "hash", "reader", 1).await.unwrap();
        store.register_host(&host("h1", "uuid-1"), 5).await.unwrap();
        drop(store);
        let again = Store::connect(&url).await.unwrap();
        assert_eq!(again.user("u").await.unwrap().unwrap().role, "reader");
        let h = again.host("h1").await.unwrap().unwrap();
        assert!(h.software_tpm, "booleans read back on {url}");
        assert_eq!(h.status.as_str(), "pending");
        again.ping().await.unwrap();
    }
}

#[tokio::test]
async fn the_sqlite_writer_keeps_its_cache_checkpoint_and_map_settings() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/settings.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    // A 4 MiB page cache, a checkpoint every 10,000 WAL frames, 256 MiB read through a map:
    // SQLite answers what it applied (a build without memory maps answers 0).
    assert_eq!(
        store.sqlite_writer_settings().await.unwrap(),
        Some([-4_096, 10_000, 256 << 20])
    );
    // The connection that commits the reports has them too.
    assert_eq!(
        store.sqlite_report_writer_settings().await.unwrap(),
        Some([-4_096, 10_000, 256 << 20])
    );
    // Kept by a connection made again (the pool's after-connect hook, not a one-off).
    drop(store);
    let again = Store::connect(&url).await.unwrap();
    again.register_host(&host("h1", "uuid-1"), 5).await.unwrap();
    assert_eq!(
        again.sqlite_writer_settings().await.unwrap(),
        Some([-4_096, 10_000, 256 << 20])
    );
}

#[tokio::test]
async fn leases_give_each_host_to_one_replica_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        store.register_host(&host("h2", "uuid-2"), 0).await.unwrap();
        let now = 10_000;
        assert_eq!(
            store.due_hosts("a", now, 10).await.unwrap(),
            ["h1", "h2"],
            "{url}"
        );
        assert!(store
            .claim("h1", "a", now, now + 30_000, now + 60_000)
            .await
            .unwrap());
        // Replica b sees only the free host, and cannot take a's.
        assert_eq!(store.due_hosts("b", now, 10).await.unwrap(), ["h2"]);
        assert!(!store
            .claim("h1", "b", now, now + 30_000, now + 60_000)
            .await
            .unwrap());
        assert!(store
            .claim("h2", "b", now, now + 30_000, now + 60_000)
            .await
            .unwrap());
        // a renews its own.
        assert!(store
            .claim("h1", "a", now + 1, now + 40_000, now + 60_000)
            .await
            .unwrap());
        assert_eq!(
            store.lease("h1").await.unwrap().unwrap(),
            (Some("a".to_string()), now + 40_000)
        );
        // Not due again before next_attest.
        assert!(store
            .due_hosts("a", now + 1000, 10)
            .await
            .unwrap()
            .is_empty());
        // a dies: once its lease expires, b takes h1 over.
        let later = now + 61_000;
        assert_eq!(store.due_hosts("b", later, 10).await.unwrap(), ["h1", "h2"]);
        assert!(store
            .claim("h1", "b", later, later + 30_000, later + 60_000)
            .await
            .unwrap());
        assert_eq!(
            store.lease("h1").await.unwrap().unwrap().0.as_deref(),
            Some("b")
        );
        // Scheduling now makes it due at once, first in line.
        assert!(store
            .claim("h2", "b", later, later + 30_000, later + 60_000)
            .await
            .unwrap());
        assert!(store.schedule("h1", 0).await.unwrap());
        assert_eq!(store.due_hosts("b", later + 1, 10).await.unwrap(), ["h1"]);
    }
}

/// A claim returns the claimed hosts' rows as they are stored, except the EK and the host
/// facts, which an attestation does not use (read as empty): a host with a verdict and one
/// without, from the durable claim and from the scheduler's (on a SQLite file read on the
/// report writer's own connection, through another driver than the host's own read).
#[tokio::test]
async fn a_claim_returns_each_hosts_row_without_its_ek_and_facts() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let mut h = host("h1", "uuid-1");
        h.ek_public = "ZWstb2YtaDE=".into();
        h.ak_public = "YWstb2YtaDE=".into();
        h.host_info = r#"{"os_name":"linux"}"#.into();
        store.register_host(&h, 0).await.unwrap();
        store.register_host(&host("h2", "uuid-2"), 0).await.unwrap();
        store
            .save_report(&report("h1", "untrusted", 20), true, None)
            .await
            .unwrap();
        let stored = store.host("h1").await.unwrap().unwrap();
        assert_eq!(stored.ek_public, h.ek_public, "{url}");
        assert!(
            stored.verdict.is_some() && stored.reasons.is_some(),
            "{url}"
        );
        let expected = [stored, store.host("h2").await.unwrap().unwrap()].map(|stored| HostRow {
            ek_public: String::new(),
            host_info: String::new(),
            ..stored
        });
        // The durable claim, then the scheduler's two periods later.
        for now in [10_000, 200_000] {
            let mut claimed = if now == 10_000 {
                store
                    .claim_due("r1", now, now + 30_000, 60_000, 60_000, 10)
                    .await
            } else {
                store
                    .claim_scheduled("r1", now, now + 30_000, 60_000, 60_000, 10)
                    .await
            }
            .unwrap();
            claimed.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(claimed, expected, "{url} at {now}");
        }
    }
}

/// A claim takes the lease until the time given and makes the host due one period after the
/// time it was due; its values are bound where the statement names them (some more than once,
/// not in order of first use).
#[tokio::test]
async fn a_claim_leases_until_the_time_given_and_is_due_again_one_period_on() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        store.schedule("h1", 4_000).await.unwrap();
        let (now, until, period) = (10_000, 25_000, 60_000);
        let claimed = store
            .claim_due("r1", now, until, period, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "{url}");
        assert_eq!(
            store.lease("h1").await.unwrap().unwrap(),
            (Some("r1".to_string()), until),
            "{url}"
        );
        // Due at 4,000, so next at 64,000: not a moment before (for a replica whose lease has
        // run out meanwhile).
        assert!(
            store.due_hosts("r2", 63_999, 10).await.unwrap().is_empty(),
            "{url}"
        );
        assert_eq!(
            store.due_hosts("r2", 64_000, 10).await.unwrap(),
            ["h1"],
            "{url}"
        );
    }
}

/// A server on a SQLite file holds it as its only server: a second is refused, naming the lock
/// file, until the first lets go; on PostgreSQL nothing is held.
#[tokio::test]
async fn a_sqlite_file_has_one_server_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/one.db", dir.path().display());
    let (first, second) = (
        Store::connect(&url).await.unwrap(),
        Store::connect(&url).await.unwrap(),
    );
    let held = first.hold_as_only_server().unwrap().expect("a file");
    let refused = second.hold_as_only_server().unwrap_err().to_string();
    assert!(
        refused.contains("another nodetrust-server") && refused.contains("one.db.lock"),
        "{refused}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("one.db.lock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    drop(held);
    assert!(second.hold_as_only_server().unwrap().is_some());
    if let Some(pg) = common::pg_database().await {
        let pg = Store::connect(&pg).await.unwrap();
        assert!(pg.hold_as_only_server().unwrap().is_none());
    }
}

/// The names a scheduler's claim at `now` takes (an interval of 60 s), sorted.
async fn claimed_at(store: &Store, now: i64) -> Vec<String> {
    let mut names: Vec<String> = store
        .claim_scheduled("r1", now, now + 180_000, 60_000, 60_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    names.sort();
    names
}

/// On a SQLite file the scheduler's claims take the due hosts from a schedule kept in memory,
/// writing no lease: it follows the registrations, deletions and hosts made due that the
/// database commits after it was loaded, and after a restart each host is due one interval
/// after its last attestation (a host never attested, when its row says).
#[tokio::test]
async fn a_sqlite_servers_claims_follow_the_database_and_keep_each_hosts_phase_over_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/local.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    // Registered at 0: due at 1,000.
    store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
    store.register_host(&host("h2", "uuid-2"), 0).await.unwrap();
    assert!(claimed_at(&store, 500).await.is_empty());
    assert_eq!(claimed_at(&store, 5_000).await, ["h1", "h2"]);
    assert_eq!(store.lease_counts().await.unwrap(), [(None, 2)], "no lease");
    assert!(claimed_at(&store, 60_999).await.is_empty(), "due at 61,000");
    // After the load: h3 registered at 10,000 (due at 11,000), a push host, h1 made due at
    // once, h2 deleted.
    store
        .register_host(&host("h3", "uuid-3"), 10_000)
        .await
        .unwrap();
    let push = HostRow {
        connection_url: nodetrust_server::store::PUSH_URL.into(),
        ..host("p1", "uuid-p1")
    };
    store.register_host(&push, 10_000).await.unwrap();
    assert!(store.schedule("h1", 0).await.unwrap());
    assert!(!store.schedule("p1", 0).await.unwrap(), "a push host");
    assert!(store.delete_host("h2", 10_000).await.unwrap());
    assert_eq!(claimed_at(&store, 10_500).await, ["h1"]);
    assert_eq!(claimed_at(&store, 11_000).await, ["h3"]);
    // Made due at 0, h1 is next due at 60,000; h2, due at 61,000 had it stayed, is gone.
    assert_eq!(claimed_at(&store, 61_000).await, ["h1"]);
    // h1 attested at 11,500. Restarted, the server has it due at 71,500; h3, never attested,
    // is due as its row says (11,000), so at once.
    store
        .save_report(&report("h1", "trusted", 11_500), true, None)
        .await
        .unwrap();
    drop(store);
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(claimed_at(&store, 70_000).await, ["h3"]);
    // h3 next at 71,000, in the phase its row gave it.
    assert_eq!(claimed_at(&store, 71_499).await, ["h3"]);
    assert_eq!(claimed_at(&store, 71_500).await, ["h1"]);
}

/// On PostgreSQL the claim is planned once for any parameters, not at every call (planning it
/// cost as much as running it).
#[tokio::test]
async fn claims_on_postgresql_keep_one_plan() {
    let Some(url) = pg_database_or_skip().await else {
        return;
    };
    let store = Store::connect(&url).await.unwrap();
    for i in 0..30 {
        store
            .register_host(&host(&format!("h{i}"), &format!("uuid-{i}")), 0)
            .await
            .unwrap();
    }
    // Claims one after the other (one connection), of different sizes and times, as the
    // scheduler's are.
    let mut claimed = 0;
    for (i, limit) in (1..=12).enumerate() {
        let now = 10_000 + i64::try_from(i).unwrap();
        claimed += store
            .claim_due("r1", now, now + 30_000, 60_000, 60_000, limit)
            .await
            .unwrap()
            .len();
    }
    assert_eq!(claimed, 30);
    // Counted on one of the claim connections (the claims may have used either): PostgreSQL
    // plans for the parameters given at least the first five times, unless told not to.
    let (generic, custom) = store.claim_plans().await.unwrap().unwrap();
    assert!(
        generic > 0 && custom == 0,
        "{generic} generic, {custom} custom"
    );
}

#[tokio::test]
async fn verdict_counts_agree_with_each_hosts_effective_verdict() {
    use nodetrust_proto::trust::Trust;
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        // Reports expire 600 s after they are made.
        let plan: [(&str, Option<(&str, i64)>); 7] = [
            ("never", None),
            ("fresh-trusted", Some(("trusted", 1_000_000))),
            ("fresh-trusted-2", Some(("trusted", 1_000_000))),
            ("fresh-untrusted", Some(("untrusted", 1_000_000))),
            ("expired-trusted", Some(("trusted", 1))),
            ("expired-untrusted", Some(("untrusted", 1))),
            ("unknown", Some(("unknown", 1_000_000))),
        ];
        for (i, (name, verdict)) in plan.iter().enumerate() {
            store
                .register_host(&host(name, &format!("uuid-{i}")), 1)
                .await
                .unwrap();
            if let Some((v, created)) = verdict {
                store
                    .save_report(&report(name, v, *created), true, None)
                    .await
                    .unwrap();
            }
        }
        // A report expires at created + 600,000 ms: at exactly that time it is expired.
        for now in [1_000_000, 1_599_999, 1_600_000, 2_000_000] {
            let counts = store.verdict_counts(now).await.unwrap();
            let mut expected = std::collections::BTreeMap::new();
            for h in store.hosts().await.unwrap() {
                *expected
                    .entry(h.effective().at(now).verdict)
                    .or_insert(0u64) += 1;
            }
            assert_eq!(counts, expected, "{url} at {now}");
        }
        let at_start = store.verdict_counts(1_000_000).await.unwrap();
        assert_eq!(at_start.get(&Trust::Trusted), Some(&2), "{url}");
        assert_eq!(at_start.get(&Trust::Untrusted), Some(&1), "{url}");
        assert_eq!(at_start.get(&Trust::Unknown), Some(&4), "{url}");
        let later = store.verdict_counts(1_600_000).await.unwrap();
        assert_eq!(later.get(&Trust::Unknown), Some(&7), "{url}");
    }
}

/// Every host's latest report, read in pages of `page` hosts as the API does.
async fn latest_reports(store: &Store, page: i64) -> Vec<ReportRow> {
    let mut out: Vec<ReportRow> = Vec::new();
    loop {
        let after = out.last().map(|r| r.host_name.clone()).unwrap_or_default();
        let rows = store.latest_reports_after(&after, page).await.unwrap();
        let n = rows.len();
        out.extend(rows);
        if i64::try_from(n).unwrap() < page {
            return out;
        }
    }
}

#[tokio::test]
async fn latest_reports_give_each_hosts_newest_a_page_of_hosts_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        for (i, name) in ["c", "a", "b", "none", "d"].iter().enumerate() {
            store
                .register_host(&host(name, &format!("uuid-{i}")), 1)
                .await
                .unwrap();
        }
        // Out of order, and two reports of "a" at the same millisecond (the id decides).
        for (name, verdict, created) in [
            ("a", "trusted", 30),
            ("a", "untrusted", 10),
            ("b", "trusted", 5),
            ("c", "untrusted", 7),
            ("c", "trusted", 9),
            ("a", "unknown", 30),
            ("d", "trusted", 1),
        ] {
            store
                .save_report(&report(name, verdict, created), true, None)
                .await
                .unwrap();
        }
        let latest = latest_reports(&store, 1000).await;
        let names: Vec<&str> = latest.iter().map(|r| r.host_name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b", "c", "d"],
            "{url}: by name, hosts without a report absent"
        );
        for r in &latest {
            let one = store.reports(Some(&r.host_name), 1).await.unwrap();
            assert_eq!(one.as_slice(), std::slice::from_ref(r), "{url}");
        }
        assert_eq!(latest[2].created, 9, "{url}");
        // Pages of one, two (the last page full, then an empty one) and three hosts: the same.
        for page in [1, 2, 3] {
            assert_eq!(latest_reports(&store, page).await, latest, "{url}: {page}");
        }
        // A page after a host without a report counts only hosts with one.
        let after_c = store.latest_reports_after("c", 1).await.unwrap();
        assert_eq!(after_c.len(), 1, "{url}");
        assert_eq!(after_c[0].host_name, "d", "{url}: \"none\" has no report");
        assert!(store.latest_reports_after("d", 5).await.unwrap().is_empty());
        // A deleted host's reports are not listed.
        assert!(store.delete_host("b", 100).await.unwrap());
        let names: Vec<String> = latest_reports(&store, 2)
            .await
            .into_iter()
            .map(|r| r.host_name)
            .collect();
        assert_eq!(names, ["a", "c", "d"], "{url}");
    }
}

#[tokio::test]
async fn the_change_feed_follows_verdict_changes_durably_and_live() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let mut live = store.subscribe();
        store.register_host(&host("h1", "uuid-1"), 1).await.unwrap();
        store
            .save_report(
                &report("h1", "trusted", 10),
                true,
                Some(AttestationUpdate {
                    reset_count: Some(1),
                    restart_count: Some(0),
                    quoted_pcrs: None,
                }),
            )
            .await
            .unwrap();
        store
            .save_report(&report("h1", "trusted", 20), true, None)
            .await
            .unwrap();
        store
            .save_report(&report("h1", "untrusted", 30), true, None)
            .await
            .unwrap();
        store
            .mark_unreachable("h1", "connection refused", 40)
            .await
            .unwrap();
        store
            .mark_unreachable("h1", "connection refused", 41)
            .await
            .unwrap();
        assert!(store.delete_host("h1", 50).await.unwrap());
        let kinds: Vec<(String, Option<String>)> = (0..5)
            .map(|_| {
                let c = live.try_recv().unwrap();
                (
                    c.kind.as_str().to_string(),
                    c.verdict.map(|v| v.as_str().to_string()),
                )
            })
            .collect();
        let expected = vec![
            ("registered".to_string(), None),
            ("verdict".to_string(), Some("trusted".to_string())),
            ("verdict".to_string(), Some("untrusted".to_string())),
            ("status".to_string(), None),
            ("deleted".to_string(), None),
        ];
        assert_eq!(kinds, expected, "{url}");
        assert!(
            live.try_recv().is_err(),
            "an unchanged verdict is not a change"
        );
        let durable = store.changes_since(0, 100).await.unwrap();
        let durable_kinds: Vec<(String, Option<String>)> = durable
            .iter()
            .map(|(_, c)| {
                (
                    c.kind.as_str().to_string(),
                    c.verdict.map(|v| v.as_str().to_string()),
                )
            })
            .collect();
        assert_eq!(durable_kinds, expected);
        assert!(
            durable.windows(2).all(|w| w[0].0 < w[1].0),
            "sequence numbers increase"
        );
        let after = store.changes_since(durable[2].0, 100).await.unwrap();
        assert_eq!(after.len(), 2);
    }
}

#[tokio::test]
async fn hosts_reports_endorsements_flavors_challenges_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        // Hosts: re-registration by hardware UUID replaces, even under a new name.
        assert!(!store.register_host(&host("h1", "uuid-1"), 1).await.unwrap());
        store
            .save_report(
                &report("h1", "trusted", 10),
                true,
                Some(AttestationUpdate {
                    reset_count: Some(3),
                    restart_count: Some(1),
                    quoted_pcrs: None,
                }),
            )
            .await
            .unwrap();
        let h = store.host("h1").await.unwrap().unwrap();
        assert_eq!(
            (h.reset_count, h.restart_count, h.status.as_str()),
            (Some(3), Some(1), "connected"),
            "{url}"
        );
        assert_eq!(h.verdict.map(|v| v.as_str()), Some("trusted"));
        assert!(store
            .register_host(&host("h1-new", "uuid-1"), 2)
            .await
            .unwrap());
        assert!(store.host("h1").await.unwrap().is_none());
        let h = store.host_by_uuid("uuid-1").await.unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.reset_count, h.verdict),
            ("h1-new", None, None)
        );
        // A report for a host deleted meanwhile is not kept.
        store
            .save_report(&report("ghost", "trusted", 5), true, None)
            .await
            .unwrap();
        assert!(store.reports(Some("ghost"), 10).await.unwrap().is_empty());
        // Reports, newest first.
        store
            .save_report(&report("h1-new", "untrusted", 20), true, None)
            .await
            .unwrap();
        store
            .save_report(&report("h1-new", "trusted", 30), true, None)
            .await
            .unwrap();
        let r = store.reports(Some("h1-new"), 10).await.unwrap();
        assert_eq!(r.iter().map(|r| r.created).collect::<Vec<_>>(), [30, 20]);
        assert_eq!(
            store.reports(Some("h1-new"), 1).await.unwrap()[0]
                .verdict
                .as_str(),
            "trusted"
        );
        // Every host's latest report id in one query; hosts without one are absent.
        store.register_host(&host("h2", "uuid-2"), 3).await.unwrap();
        let latest = store.latest_report_ids().await.unwrap();
        assert_eq!(latest.len(), 1, "{url}: {latest:?}");
        assert_eq!(latest.get("h1-new"), Some(&r[0].id), "{url}");
        // Endorsements.
        let e = Endorsement {
            id: new_id(),
            hardware_uuid: Some("uuid-9".into()),
            ek_sha256: "ff".repeat(32),
            ek_public: None,
            certificate: None,
            comment: Some("rack 4".into()),
            revoked: false,
            created: 5,
        };
        store.add_endorsement(&e).await.unwrap();
        assert_eq!(
            store.endorsements(Some("uuid-9")).await.unwrap(),
            vec![e.clone()]
        );
        assert_eq!(
            store
                .active_endorsements_for(&e.ek_sha256)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store.revoke_endorsement(&e.id).await.unwrap());
        assert!(store
            .active_endorsements_for(&e.ek_sha256)
            .await
            .unwrap()
            .is_empty());
        assert!(store.endorsements(None).await.unwrap()[0].revoked);
        // Flavors.
        store
            .put_flavor(&FlavorRow {
                id: "f1".into(),
                body: "{}".into(),
                created: 1,
            })
            .await
            .unwrap();
        assert_eq!(store.flavors().await.unwrap().len(), 1);
        assert!(store.delete_flavor("f1").await.unwrap());
        assert!(!store.delete_flavor("f1").await.unwrap());
        // Challenges: one take each, none after expiry; the EK certificate's issuer found
        // when the challenge was issued comes back with it.
        let c = ChallengeRow {
            id: "c1".into(),
            secret_sha256: "00".into(),
            request: "{}".into(),
            expires: 100,
            ek_issuer: Some("O=Vendor, CN=EK CA".into()),
            ek_sha256: None,
        };
        store.put_challenge(&c, 50).await.unwrap();
        assert_eq!(
            store.take_challenge("c1", 60).await.unwrap(),
            Some(c.clone())
        );
        assert_eq!(store.take_challenge("c1", 60).await.unwrap(), None);
        store
            .put_challenge(
                &ChallengeRow {
                    id: "c2".into(),
                    ..c.clone()
                },
                50,
            )
            .await
            .unwrap();
        assert_eq!(store.take_challenge("c2", 101).await.unwrap(), None);
        for (id, ek_issuer) in [("c3", c.ek_issuer.clone()), ("c4", None)] {
            let bounded = ChallengeRow {
                id: id.into(),
                ek_issuer,
                ..c.clone()
            };
            assert!(store
                .put_challenge_bounded(&bounded, "uuid-c", 50)
                .await
                .unwrap());
            assert_eq!(
                store.challenge(id, 60).await.unwrap(),
                Some(bounded),
                "{url}"
            );
        }
        // A challenge read with its EK's active endorsements (the one revoked above is not);
        // one that names no EK leaves them to a read of their own.
        let e2 = Endorsement {
            id: new_id(),
            hardware_uuid: None,
            certificate: Some("Y2VydA==".into()),
            created: 6,
            ..e.clone()
        };
        store.add_endorsement(&e2).await.unwrap();
        for (id, ek, listed) in [
            ("c5", Some(e.ek_sha256.clone()), Some(vec![e2.clone()])),
            ("c6", Some("ee".repeat(32)), Some(vec![])),
            ("c7", None, None),
        ] {
            let named = ChallengeRow {
                id: id.into(),
                ek_sha256: ek,
                ..c.clone()
            };
            store.put_challenge(&named, 50).await.unwrap();
            assert_eq!(
                store.challenge_endorsed(id, 60).await.unwrap(),
                Some((named, listed)),
                "{url}"
            );
        }
        assert_eq!(store.challenge_endorsed("c5", 101).await.unwrap(), None);
        assert_eq!(store.challenge_endorsed("c0", 60).await.unwrap(), None);
        // Keys: the first value written stays.
        let k1 = store.key_or_insert("k", || "one".into()).await.unwrap();
        let k2 = store.key_or_insert("k", || "two".into()).await.unwrap();
        assert_eq!((k1.as_str(), k2.as_str()), ("one", "one"));
        let backend = store.backend();
        assert!(matches!(backend, Backend::Sqlite | Backend::Postgres));
    }
}

#[tokio::test]
async fn postgresql_replicas_hear_each_others_changes() {
    let Some(url) = pg_database_or_skip().await else {
        return;
    };
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let mut listener = b
        .pg_listener()
        .await
        .unwrap()
        .expect("a listener on PostgreSQL");
    a.register_host(&host("h1", "uuid-1"), 1).await.unwrap();
    a.save_report(&report("h1", "untrusted", 10), true, None)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .unwrap()
            .unwrap();
        let c: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
        got.push((
            c["kind"].as_str().unwrap().to_string(),
            c["verdict"].as_str().map(str::to_string),
        ));
    }
    assert_eq!(
        got,
        vec![
            ("registered".to_string(), None),
            ("verdict".to_string(), Some("untrusted".to_string()))
        ]
    );
}

#[tokio::test]
async fn sqlite_has_no_cross_process_listener() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/x.db", dir.path().display()))
        .await
        .unwrap();
    assert!(store.pg_listener().await.unwrap().is_none());
}

#[tokio::test]
async fn the_api_works_on_postgresql_too() {
    let Some(url) = pg_database_or_skip().await else {
        return;
    };
    let h = common::Harness::with_db(tempfile::tempdir().unwrap(), url).await;
    h.enrol("gold", "uuid-gold", &common::gold_boot("grub 2.06"))
        .await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            common::Auth::Admin,
            Some(serde_json::json!({"from_host": "gold"})),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    let (_, r) = h.attest("gold").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    h.clock.advance(Duration::from_secs(601));
    assert_eq!(h.host("gold").await["trust"]["verdict"], "unknown");
}

/// `r` saved on a task of its own, so that many reports are queued at once; the task panics
/// if the save fails.
fn save_on_task(
    store: &Store,
    r: ReportRow,
    counters: Option<AttestationUpdate>,
) -> tokio::task::JoinHandle<()> {
    let s = store.clone();
    tokio::spawn(async move { s.save_report(&r, true, counters).await.unwrap() })
}

/// Two reports of one host, the second queued just after the first, so that both can fall in
/// one group commit (the second in a later round); `first.1` is whether its agent was reached.
async fn save_both(store: &Store, first: (&ReportRow, bool), second: &ReportRow) {
    let (a, b) = tokio::join!(store.save_report(first.0, first.1, None), async {
        tokio::task::yield_now().await;
        store.save_report(second, true, None).await
    });
    a.unwrap();
    b.unwrap();
}

/// How many verdict changes the store's durable feed holds.
async fn durable_verdict_changes(store: &Store) -> usize {
    let durable = store.changes_since(0, 100_000).await.unwrap();
    durable
        .iter()
        .filter(|(_, c)| c.kind.as_str() == "verdict")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_commit_together_with_every_effect_of_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let n = 300;
        for i in 0..n {
            store
                .register_host(&host(&format!("h{i}"), &format!("uuid-{i}")), 1)
                .await
                .unwrap();
        }
        let mut live = store.subscribe();
        // Saved at the same time: every host once (trusted, with counters), host h0 twice more
        // (untrusted then trusted: both changes, in order), and a host that does not exist.
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let counters = AttestationUpdate {
                    reset_count: Some(i),
                    restart_count: Some(2),
                    quoted_pcrs: None,
                };
                save_on_task(
                    &store,
                    report(&format!("h{i}"), "trusted", 10),
                    Some(counters),
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let ghost = save_on_task(&store, report("ghost", "trusted", 11), None);
        let (first, second) = (report("h0", "untrusted", 12), report("h0", "trusted", 13));
        save_both(&store, (&first, false), &second).await;
        ghost.await.unwrap();
        // Every report went through a group commit (none through the one-by-one fallback a
        // failing batch statement takes): batches of every size, written for a power of two
        // of rows, insert and update exactly their own.
        let (commits, committed) = store.report_commits();
        assert_eq!(committed, u64::try_from(n).unwrap() + 3, "{url}");
        assert!(commits >= 2, "{url}: {commits} commits");

        for i in [0, 7, 299] {
            let h = store.host(&format!("h{i}")).await.unwrap().unwrap();
            assert_eq!(h.status.as_str(), "connected", "{url}");
            assert_eq!(h.reset_count, Some(i), "{url}");
            assert_eq!(h.restart_count, Some(2), "{url}");
        }
        let h0 = store.host("h0").await.unwrap().unwrap();
        assert_eq!(h0.verdict.map(|v| v.as_str()), Some("trusted"), "{url}");
        assert_eq!(h0.attested_at, Some(13), "{url}");
        assert_eq!(
            h0.reset_count,
            Some(0),
            "reports without counters keep them"
        );
        assert!(store.reports(Some("ghost"), 10).await.unwrap().is_empty());
        assert_eq!(store.reports(Some("h0"), 10).await.unwrap().len(), 3);
        assert_eq!(
            store.reports(None, 10_000).await.unwrap().len(),
            usize::try_from(n).unwrap() + 2
        );
        // One change a host for the first verdict, then h0's two.
        let mut verdict_changes = 0;
        let mut h0_changes = Vec::new();
        while let Ok(c) = live.try_recv() {
            assert_eq!(c.kind.as_str(), "verdict");
            verdict_changes += 1;
            if c.host_name == "h0" {
                h0_changes.push(c.verdict.unwrap().as_str());
            }
        }
        assert_eq!(verdict_changes, n + 2, "{url}");
        assert_eq!(h0_changes, ["trusted", "untrusted", "trusted"], "{url}");
        assert_eq!(
            durable_verdict_changes(&store).await,
            usize::try_from(n).unwrap() + 2
        );

        // Again at the same time: every host the verdict it has (no change), but h1 untrusted,
        // and h2 untrusted twice: one change (its second report, in a later round of the same
        // commit, is compared with its first).
        let tasks: Vec<_> = (0..n)
            .filter(|i| *i != 2)
            .map(|i| {
                let verdict = if i == 1 { "untrusted" } else { "trusted" };
                save_on_task(&store, report(&format!("h{i}"), verdict, 20), None)
            })
            .collect();
        let (first, second) = (report("h2", "untrusted", 20), report("h2", "untrusted", 21));
        save_both(&store, (&first, true), &second).await;
        for t in tasks {
            t.await.unwrap();
        }
        let mut changed = Vec::new();
        while let Ok(c) = live.try_recv() {
            changed.push((c.host_name, c.verdict.unwrap().as_str()));
        }
        changed.sort();
        assert_eq!(
            changed,
            [("h1".into(), "untrusted"), ("h2".into(), "untrusted")],
            "{url}"
        );
        assert_eq!(
            durable_verdict_changes(&store).await,
            usize::try_from(n).unwrap() + 4,
            "{url}"
        );
        let h2 = store.host("h2").await.unwrap().unwrap();
        assert_eq!(h2.verdict.map(|v| v.as_str()), Some("untrusted"), "{url}");
        assert_eq!(store.reports(Some("h2"), 10).await.unwrap().len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_for_a_registration_is_stored_only_while_that_registration_stands() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        // Long enough for reports saved together to share a commit.
        store.set_commit_gather(Duration::from_millis(300));
        for name in ["h1", "h2", "h3"] {
            store
                .register_host(&host(name, &format!("uuid-{name}")), 1)
                .await
                .unwrap();
        }
        let registered = store.host("h1").await.unwrap().unwrap().created;
        let save = |r: ReportRow, at: i64| {
            let s = store.clone();
            tokio::spawn(async move {
                let id = r.id.clone();
                let (back, stored) = s.save_report_for(r, Some(at), true, None).await?;
                // The report comes back from its group commit, stored or not.
                assert_eq!(back.id, id);
                Ok::<_, nodetrust_server::store::StoreError>(stored)
            })
        };
        // In one group commit: h1 for its registration, h2 for another one, a deleted host.
        let (a, b, c) = (
            save(report("h1", "trusted", 10), registered),
            save(report("h2", "trusted", 10), registered + 1),
            save(report("ghost", "trusted", 10), registered),
        );
        assert!(a.await.unwrap().unwrap(), "{url}");
        assert!(!b.await.unwrap().unwrap(), "{url}");
        assert!(!c.await.unwrap().unwrap(), "{url}");
        assert_eq!(store.report_commits(), (1, 3), "{url}: one shared commit");
        let h2 = store.host("h2").await.unwrap().unwrap();
        assert_eq!(h2.verdict, None, "{url}");
        assert!(store.reports(Some("h2"), 10).await.unwrap().is_empty());
        assert_eq!(store.reports(Some("h1"), 10).await.unwrap().len(), 1);

        // A commit that fails (a report stored twice) is retried report by report, each
        // with the same outcome as in the shared commit.
        let dup = report("h3", "trusted", 20);
        assert!(
            store
                .save_report_for(dup.clone(), Some(registered), true, None)
                .await
                .unwrap()
                .1
        );
        let (a, b, c) = (
            save(dup.clone(), registered),
            save(report("h1", "untrusted", 21), registered),
            save(report("h2", "untrusted", 21), registered + 1),
        );
        assert!(a.await.unwrap().is_err(), "{url}: the same report id twice");
        assert!(b.await.unwrap().unwrap(), "{url}");
        assert!(!c.await.unwrap().unwrap(), "{url}");
        assert_eq!(
            store.report_commits(),
            (2, 4),
            "{url}: the failed commit counts none"
        );
        let h1 = store.host("h1").await.unwrap().unwrap();
        assert_eq!(h1.verdict.map(|v| v.as_str()), Some("untrusted"), "{url}");
        assert_eq!(store.host("h2").await.unwrap().unwrap().verdict, None);
        // Without a registration, any row of the name.
        store
            .save_report(&report("h2", "trusted", 30), true, None)
            .await
            .unwrap();
        let h2 = store.host("h2").await.unwrap().unwrap();
        assert_eq!(h2.verdict.map(|v| v.as_str()), Some("trusted"), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_at_once_share_transactions_with_the_outcomes_of_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let challenge = open_challenge;
        let n = 40;
        let ids = (0..n).map(|i| format!("c{i}")).chain(
            ["dup", "refused", "twin-a", "twin-b", "ektwin-a", "ektwin-b"].map(String::from),
        );
        for id in ids {
            store.put_challenge(&challenge(&id), 50).await.unwrap();
        }
        let mut live = store.subscribe();
        let head = store.changes_head().await.unwrap();
        let shared_before = store.registration_commits();
        // Started at once: n distinct hosts; two activations of one challenge; one the check
        // refuses; two machines of one hardware UUID, and two of one EK (in each pair the
        // second replaces the first).
        let mut jobs: Vec<(String, HostRow, bool)> = (0..n)
            .map(|i| {
                let mut h = host(&format!("a{i}"), &format!("uuid-a{i}"));
                h.ek_public = format!("ek-a{i}");
                (format!("c{i}"), h, true)
            })
            .collect();
        let mut dup = host("dup", "uuid-dup");
        dup.ek_public = "ek-dup".into();
        jobs.push(("dup".into(), dup.clone(), true));
        jobs.push(("dup".into(), dup, true));
        let mut no = host("no", "uuid-no");
        no.ek_public = "ek-no".into();
        jobs.push(("refused".into(), no, false));
        // A challenge that expired before its activation (at 100) is gone.
        let expired = ChallengeRow {
            expires: 99,
            ..challenge("expired")
        };
        store.put_challenge(&expired, 50).await.unwrap();
        let mut late = host("late", "uuid-late");
        late.ek_public = "ek-late".into();
        jobs.push(("expired".into(), late, true));
        // (The hardware UUID in two cases: one machine all the same, and no unique index of
        // the table stops the second insert.)
        for (twin, uuid) in [("twin-a", "uuid-twin"), ("twin-b", "UUID-TWIN")] {
            let mut h = host(twin, uuid);
            h.ek_public = format!("ek-{twin}");
            jobs.push((twin.into(), h, true));
        }
        for twin in ["ektwin-a", "ektwin-b"] {
            let mut h = host(twin, &format!("uuid-{twin}"));
            h.ek_public = "ek-twin".into();
            jobs.push((twin.into(), h, true));
        }
        let tasks: Vec<_> = jobs
            .into_iter()
            .map(|(id, h, accept)| {
                let s = store.clone();
                tokio::spawn(async move {
                    let outcome = s
                        .register_host_activated(&h, None, &id, 100, move |_| {
                            if accept {
                                Ok(())
                            } else {
                                Err(("refused", "no".into()))
                            }
                        })
                        .await
                        .unwrap();
                    (h.name, outcome)
                })
            })
            .collect();
        let mut outcomes = BTreeMap::<String, Vec<Registered>>::new();
        for t in tasks {
            let (name, outcome) = t.await.unwrap();
            outcomes.entry(name).or_default().push(outcome);
        }
        for i in 0..n {
            assert_eq!(
                outcomes[&format!("a{i}")],
                [Registered::Stored(false)],
                "{url}"
            );
            assert!(
                store.host(&format!("a{i}")).await.unwrap().is_some(),
                "{url}"
            );
        }
        let mut dup = outcomes["dup"].clone();
        dup.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            dup,
            [Registered::ChallengeGone, Registered::Stored(false)],
            "{url}"
        );
        assert!(
            matches!(outcomes["no"][..], [Registered::Refused("refused", _)]),
            "{url}"
        );
        assert!(store.host("no").await.unwrap().is_none(), "{url}");
        assert_eq!(outcomes["late"], [Registered::ChallengeGone], "{url}");
        assert!(store.host("late").await.unwrap().is_none(), "{url}");
        let mut replaced = Vec::new();
        for (a, b) in [("twin-a", "twin-b"), ("ektwin-a", "ektwin-b")] {
            let twins = [&outcomes[a][..], &outcomes[b][..]];
            let (survivor, other) = if twins[0] == [Registered::Stored(true)] {
                (a, b)
            } else {
                (b, a)
            };
            assert_eq!(
                outcomes[other],
                [Registered::Stored(false)],
                "{url}: {twins:?}"
            );
            assert_eq!(
                outcomes[survivor],
                [Registered::Stored(true)],
                "{url}: {twins:?}"
            );
            assert!(store.host(survivor).await.unwrap().is_some(), "{url}");
            assert!(store.host(other).await.unwrap().is_none(), "{url}");
            replaced.push(other);
        }
        // Every challenge used up, the refused one too.
        for id in (0..n)
            .map(|i| format!("c{i}"))
            .chain(["dup", "refused"].map(String::from))
        {
            assert_eq!(
                store.take_challenge(&id, 100).await.unwrap(),
                None,
                "{url} {id}"
            );
        }
        // Published: one `registered` change a host stored, and each twin replaced under
        // another name `deleted`: what the durable feed recorded, no more, no less.
        let mut published = Vec::new();
        while let Ok(c) = live.try_recv() {
            published.push((c.kind.as_str().to_string(), c.host_name));
        }
        published.sort();
        let registered: BTreeSet<&str> = published
            .iter()
            .filter(|(kind, _)| kind == "registered")
            .map(|(_, name)| name.as_str())
            .collect();
        assert_eq!(
            registered.len(),
            usize::try_from(n).unwrap() + 5,
            "{url}: {registered:?}"
        );
        for other in replaced {
            assert!(
                published.contains(&("deleted".to_string(), other.to_string())),
                "{url}: {published:?}"
            );
        }
        let mut durable = feed_after(&store, head).await;
        durable.sort();
        assert_eq!(published, durable, "{url}");
        // The activations queued while one transaction ran share the next.
        let (commits, committed) = store.registration_commits();
        assert_eq!(
            committed - shared_before.1,
            u64::try_from(n).unwrap() + 8,
            "{url}"
        );
        assert!(
            commits - shared_before.0 < u64::try_from(n).unwrap(),
            "{url}: {commits} commits"
        );
        // On SQLite each host's row is stored under its name's key, by a shared transaction
        // and by one alone (the one that replaced its twin) alike.
        if url.starts_with("sqlite:") {
            let mut names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
            names.extend(["dup", "twin-a", "twin-b", "ektwin-a", "ektwin-b"].map(String::from));
            let keys = sqlite_rowids(&url).await;
            let mut stored = 0;
            for name in &names {
                if let Some(rowid) = keys.get(name) {
                    assert_eq!(*rowid, host_key(name), "{name}");
                    stored += 1;
                }
            }
            assert_eq!(stored, n + 3);
        }
    }
}

/// Each host's `rowid` in a SQLite store, by name.
async fn sqlite_rowids(url: &str) -> BTreeMap<String, i64> {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query_as::<_, (String, i64)>("SELECT name, rowid FROM hosts")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A host whose name's key another row already holds is stored all the same (SQLite picks
/// its `rowid`); the keys spread hosts apart whatever their names.
#[tokio::test]
async fn a_host_whose_key_is_taken_is_stored_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    store
        .register_host(&host("first", "uuid-first"), 10)
        .await
        .unwrap();
    {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE hosts SET rowid = ? WHERE name = 'first'")
            .bind(host_key("second"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut second = host("second", "uuid-second");
    second.ek_public = "ek-second".into();
    assert!(!store.register_host(&second, 20).await.unwrap());
    let keys = sqlite_rowids(&url).await;
    assert_eq!(keys["first"], host_key("second"));
    assert_ne!(keys["second"], host_key("second"));
    assert!(store.host("second").await.unwrap().is_some());
    // Names alike but for a digit are far apart, and no key is negative.
    let spread: BTreeSet<i64> = (0..100)
        .map(|i| host_key(&format!("sim-{i}")) >> 56)
        .collect();
    assert!(spread.len() > 40, "{spread:?}");
    assert!(spread.iter().all(|k| *k >= 0));
}

/// Two replicas' shared transactions of activations on one PostgreSQL database, each
/// activation of one replica racing one of the other for the same machine (the same EK, the
/// hardware UUID in another case, another name), among activations of distinct machines: the
/// identity locks keep the rule (one host a machine: the later replaces the earlier), and
/// neither replica's transactions wait for the other's for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_activating_one_machine_at_once_keep_one_host_for_it_on_postgresql() {
    let Some(url) = pg_database_or_skip().await else {
        return;
    };
    let replicas = [
        Store::connect(&url).await.unwrap(),
        Store::connect(&url).await.unwrap(),
    ];
    let (pairs, others) = (24, 40);
    let mut jobs: Vec<(usize, String, HostRow)> = Vec::new();
    for i in 0..pairs {
        for (r, (name, uuid)) in [
            (format!("a{i}"), format!("uuid-m{i}")),
            (format!("b{i}"), format!("UUID-M{i}")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut h = host(&name, &uuid);
            h.ek_public = format!("ek-m{i}");
            jobs.push((r, format!("c-{name}"), h));
        }
    }
    for i in 0..others {
        let mut h = host(&format!("o{i}"), &format!("uuid-o{i}"));
        h.ek_public = format!("ek-o{i}");
        jobs.push((i % 2, format!("c-o{i}"), h));
    }
    for (_, id, _) in &jobs {
        replicas[0]
            .put_challenge(&open_challenge(id), 50)
            .await
            .unwrap();
    }
    let before = replicas.each_ref().map(Store::registration_commits);
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(r, id, h)| {
            let s = replicas[r].clone();
            tokio::spawn(async move {
                let outcome = s
                    .register_host_activated(&h, None, &id, 100, |_| Ok(()))
                    .await
                    .unwrap();
                (h.name, outcome)
            })
        })
        .collect();
    let outcomes = outcomes_by_name(tasks).await;
    let hosts = replicas[0].hosts().await.unwrap();
    for i in 0..pairs {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        let of_machine: Vec<&str> = hosts
            .iter()
            .filter(|h| h.ek_public == format!("ek-m{i}"))
            .map(|h| h.name.as_str())
            .collect();
        // The later replaced the earlier: one host, and the outcomes say which came second.
        let (first, second) = match &of_machine[..] {
            [n] if *n == a => (&b, &a),
            [n] if *n == b => (&a, &b),
            _ => panic!("machine {i}: hosts {of_machine:?}, outcomes {outcomes:?}"),
        };
        assert_eq!(outcomes[first], Registered::Stored(false), "machine {i}");
        assert_eq!(outcomes[second], Registered::Stored(true), "machine {i}");
    }
    for i in 0..others {
        assert_eq!(outcomes[&format!("o{i}")], Registered::Stored(false));
    }
    assert_eq!(hosts.len(), pairs + others);
    // Both replicas shared transactions.
    for (r, store) in replicas.iter().enumerate() {
        let (commits, committed) = store.registration_commits();
        assert_eq!(
            committed - before[r].1,
            u64::try_from(pairs + others / 2).unwrap(),
            "replica {r}"
        );
        assert!(commits > before[r].0, "replica {r}");
    }
}

/// Activations at once that replace hosts already stored: each replacement's `deleted`
/// change comes before its `registered` one in the feed. Two activations hold the same row,
/// one by its name and the other by its hardware UUID (in another case); the first is
/// refused, so the row is still there for the second, which replaces it, as one after the
/// other would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_at_once_that_replace_hosts_get_the_outcomes_of_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let n = 24;
        let mut old = Vec::new();
        for i in 0..n {
            let mut h = host(&format!("old{i}"), &format!("uuid-r{i}"));
            h.ek_public = format!("ek-old{i}");
            old.push(h);
        }
        // Held by both "s-a" (its name) and "s-b" (its hardware UUID).
        let mut shared = host("s-a", "UUID-S-B");
        shared.ek_public = "ek-shared".into();
        old.push(shared);
        for h in &old {
            store.register_host(h, 10).await.unwrap();
        }
        let mut jobs = Vec::new();
        for i in 0..n {
            // A reimaged machine: same hardware UUID (in another case), a new name and EK.
            let mut h = host(&format!("new{i}"), &format!("UUID-R{i}"));
            h.ek_public = format!("ek-new{i}");
            jobs.push((format!("r{i}"), h));
        }
        for (name, uuid) in [("s-a", "uuid-s-a"), ("s-b", "uuid-s-b")] {
            let mut h = host(name, uuid);
            h.ek_public = format!("ek-{name}");
            jobs.push((format!("c-{name}"), h));
        }
        for (id, _) in &jobs {
            store.put_challenge(&open_challenge(id), 50).await.unwrap();
        }
        let head = store.changes_head().await.unwrap();
        let before = store.registration_commits();
        let tasks: Vec<_> = jobs
            .into_iter()
            .map(|(id, h)| {
                let s = store.clone();
                tokio::spawn(async move {
                    let refuse = h.name == "s-a";
                    let outcome = s
                        .register_host_activated(&h, None, &id, 100, move |_| {
                            if refuse {
                                Err(("refused", "no".into()))
                            } else {
                                Ok(())
                            }
                        })
                        .await
                        .unwrap();
                    (h.name, outcome)
                })
            })
            .collect();
        let outcomes = outcomes_by_name(tasks).await;
        for i in 0..n {
            assert_eq!(
                outcomes[&format!("new{i}")],
                Registered::Stored(true),
                "{url}"
            );
            assert!(
                store.host(&format!("old{i}")).await.unwrap().is_none(),
                "{url}"
            );
            let new = store.host(&format!("new{i}")).await.unwrap().unwrap();
            assert_eq!(new.ek_public, format!("ek-new{i}"), "{url}");
        }
        assert!(
            matches!(outcomes["s-a"], Registered::Refused("refused", _)),
            "{url}: {:?}",
            outcomes["s-a"]
        );
        assert_eq!(outcomes["s-b"], Registered::Stored(true), "{url}");
        assert!(store.host("s-a").await.unwrap().is_none(), "{url}");
        let s_b = store.host("s-b").await.unwrap().unwrap();
        assert_eq!(s_b.hardware_uuid, "uuid-s-b", "{url}");
        assert_eq!(store.hosts().await.unwrap().len(), n + 1, "{url}");
        // The feed: each old host's `deleted` before its successor's `registered`.
        let feed = feed_after(&store, head).await;
        for i in 0..n {
            assert!(
                at_kind(&feed, "deleted", &format!("old{i}"))
                    < at_kind(&feed, "registered", &format!("new{i}")),
                "{url}: {feed:?}"
            );
        }
        assert!(
            at_kind(&feed, "deleted", "s-a") < at_kind(&feed, "registered", "s-b"),
            "{url}: {feed:?}"
        );
        assert_eq!(feed.len(), 2 * n + 2, "{url}: {feed:?}");
        let (commits, committed) = store.registration_commits();
        assert_eq!(committed - before.1, u64::try_from(n).unwrap() + 2, "{url}");
        assert!(
            commits - before.0 < u64::try_from(n).unwrap(),
            "{url}: {commits} commits"
        );
    }
}

/// The change feed after `head`, as (kind, host) in order.
async fn feed_after(store: &Store, head: i64) -> Vec<(String, String)> {
    store
        .changes_since(head, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, c)| (c.kind.as_str().to_string(), c.host_name))
        .collect()
}

/// Where a change of `kind` for `host` is in `feed`.
fn at_kind(feed: &[(String, String)], kind: &str, host: &str) -> usize {
    feed.iter()
        .position(|(k, h)| k == kind && h == host)
        .unwrap_or_else(|| panic!("no {kind} {host} in {feed:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_commit_waits_for_reports_that_come_soon_after() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        for i in 0..3 {
            store
                .register_host(&host(&format!("g{i}"), &format!("uuid-g{i}")), 1)
                .await
                .unwrap();
        }
        // Reports arriving one by one (as pushed evidence does): the first commit waits for
        // the two that come 100 ms later, and all three share one transaction.
        store.set_commit_gather(Duration::from_millis(600));
        let (commits, committed) = store.report_commits();
        let s = store.clone();
        let first = tokio::spawn(async move {
            s.save_report(&report("g0", "trusted", 10), true, None)
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (r1, r2) = (report("g1", "trusted", 11), report("g2", "untrusted", 12));
        let (b, c) = tokio::join!(
            store.save_report(&r1, true, None),
            store.save_report(&r2, true, None)
        );
        first.await.unwrap().unwrap();
        b.unwrap();
        c.unwrap();
        assert_eq!(
            store.report_commits(),
            (commits + 1, committed + 3),
            "{url}: one commit for the three"
        );
        for (name, verdict) in [("g0", "trusted"), ("g1", "trusted"), ("g2", "untrusted")] {
            let h = store.host(name).await.unwrap().unwrap();
            assert_eq!(h.verdict.map(|v| v.as_str()), Some(verdict), "{url} {name}");
        }
        // Without the wait each report that finds the turn free commits at once.
        store.set_commit_gather(Duration::ZERO);
        let (commits, committed) = store.report_commits();
        let s = store.clone();
        let first = tokio::spawn(async move {
            s.save_report(&report("g0", "trusted", 20), true, None)
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        store
            .save_report(&report("g1", "trusted", 21), true, None)
            .await
            .unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(
            store.report_commits(),
            (commits + 2, committed + 2),
            "{url}"
        );
    }
}

// ---- retention ----

/// Every stored report as (host, created), sorted.
async fn all_reports(store: &Store) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = store
        .reports(None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.host_name, r.created))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn pruning_deletes_old_rows_keeps_recent_ones_and_each_hosts_latest_report() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        for (name, uuid) in [("h1", "uuid-1"), ("h2", "uuid-2"), ("h3", "uuid-3")] {
            store.register_host(&host(name, uuid), 1).await.unwrap();
        }
        // h1: three old reports and a recent one; h2: only old ones, the newest of which is
        // what `latest=true` serves.
        for (verdict, created) in [("trusted", 10), ("trusted", 20), ("trusted", 30)] {
            store
                .save_report(&report("h1", verdict, created), true, None)
                .await
                .unwrap();
        }
        store
            .save_report(&report("h1", "untrusted", 1000), true, None)
            .await
            .unwrap();
        for created in [10, 40] {
            store
                .save_report(&report("h2", "trusted", created), true, None)
                .await
                .unwrap();
        }
        // Two reports of h3 with the same time: the one the API calls latest (by id) stays.
        for _ in 0..2 {
            store
                .save_report(&report("h3", "trusted", 50), true, None)
                .await
                .unwrap();
        }
        let h3_latest = store.reports(Some("h3"), 1).await.unwrap()[0].clone();
        // A host re-registered under another name leaves its reports behind: no host, no
        // latest to keep, and no chain to read them by name (they are listed with all).
        store
            .register_host(&host("old", "uuid-9"), 1)
            .await
            .unwrap();
        store
            .save_report(&report("old", "trusted", 60), true, None)
            .await
            .unwrap();
        store
            .register_host(&host("renamed", "uuid-9"), 2000)
            .await
            .unwrap();
        assert!(store.reports(Some("old"), 10).await.unwrap().is_empty());
        assert!(
            all_reports(&store).await.contains(&("old".to_string(), 60)),
            "{url}"
        );

        let deleted = store.prune_reports(500, 100).await.unwrap();
        assert_eq!(deleted, 3 + 1 + 1 + 1, "{url}");
        assert_eq!(
            all_reports(&store).await,
            [
                ("h1".to_string(), 1000),
                ("h2".to_string(), 40),
                ("h3".to_string(), 50)
            ],
            "{url}"
        );
        assert_eq!(store.reports(Some("h3"), 10).await.unwrap(), [h3_latest]);
        assert_eq!(store.reports(Some("h2"), 1).await.unwrap()[0].created, 40);
        // Nothing left to prune: a second run deletes nothing.
        assert_eq!(store.prune_reports(500, 100).await.unwrap(), 0, "{url}");
        // Past the cutoff, a host's latest report goes only once a newer one exists.
        store
            .save_report(&report("h2", "trusted", 1100), true, None)
            .await
            .unwrap();
        assert_eq!(store.prune_reports(1050, 100).await.unwrap(), 1, "{url}");
        assert_eq!(
            store.reports(Some("h2"), 10).await.unwrap()[0].created,
            1100
        );
        assert_eq!(store.reports(Some("h2"), 10).await.unwrap().len(), 1);

        // The change feed: registrations at 1, first verdicts at 10..60, h1's change at 1000,
        // the renaming at 2000; only those from 500 on stay, with their sequence numbers.
        let before = store.changes_since(0, 1000).await.unwrap();
        let deleted = store.prune_changes(500, 100).await.unwrap();
        let after = store.changes_since(0, 1000).await.unwrap();
        assert_eq!(
            usize::try_from(deleted).unwrap(),
            before.len() - after.len(),
            "{url}"
        );
        let kept: Vec<(String, String)> = after
            .iter()
            .map(|(_, c)| (c.host_name.clone(), c.kind.as_str().to_string()))
            .collect();
        assert_eq!(
            kept,
            [
                ("h1".to_string(), "verdict".to_string()),
                ("old".to_string(), "deleted".to_string()),
                ("renamed".to_string(), "registered".to_string()),
            ],
            "{url}"
        );
        assert!(
            after.iter().all(|c| before.contains(c)),
            "kept changes keep their sequence numbers"
        );
        // A follower resuming from a pruned sequence number gets what is left.
        assert_eq!(store.changes_since(before[0].0, 1000).await.unwrap(), after);
        assert_eq!(store.prune_changes(500, 100).await.unwrap(), 0, "{url}");
    }
}

#[tokio::test]
async fn pruning_deletes_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        // Ten old reports and a recent one, each a verdict change.
        for created in 1..=10 {
            let verdict = if created % 2 == 0 {
                "trusted"
            } else {
                "untrusted"
            };
            store
                .save_report(&report("h1", verdict, created), true, None)
                .await
                .unwrap();
        }
        store
            .save_report(&report("h1", "untrusted", 1000), true, None)
            .await
            .unwrap();
        // One batch deletes at most its limit, oldest first.
        assert_eq!(
            store.prune_reports_batch(i64::MIN, 500, 3).await.unwrap(),
            (3, Some(3)),
            "{url}"
        );
        assert_eq!(
            all_reports(&store).await.first(),
            Some(&("h1".to_string(), 4))
        );
        assert_eq!(store.reports(None, 100).await.unwrap().len(), 8);
        // `from` bounds a batch from below.
        assert_eq!(
            store.prune_reports_batch(8, 500, 3).await.unwrap(),
            (3, Some(10)),
            "{url}"
        );
        assert_eq!(store.reports(None, 100).await.unwrap().len(), 5);
        // The loop runs batches until none is full.
        assert_eq!(store.prune_reports(500, 3).await.unwrap(), 4, "{url}");
        assert_eq!(all_reports(&store).await, [("h1".to_string(), 1000)]);

        // Changes: the registration at 0, ten verdict changes at 1..=10, one at 1000.
        assert_eq!(store.changes_since(0, 100).await.unwrap().len(), 12);
        assert_eq!(store.prune_changes_batch(500, 4).await.unwrap(), 4, "{url}");
        assert_eq!(store.changes_since(0, 100).await.unwrap().len(), 8);
        assert_eq!(store.prune_changes(500, 4).await.unwrap(), 7, "{url}");
        let left = store.changes_since(0, 100).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.verdict.map(|v| v.as_str()), Some("untrusted"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_pruning_at_once_delete_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    for (url, a) in stores(&dir).await {
        // A second replica: its own connections to the same database.
        let b = Store::connect(&url).await.unwrap();
        let hosts = 10;
        for i in 0..hosts {
            a.register_host(&host(&format!("h{i}"), &format!("uuid-{i}")), 0)
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..hosts {
            let s = a.clone();
            tasks.push(tokio::spawn(async move {
                for created in 1..=30 {
                    let verdict = if created % 2 == 0 {
                        "trusted"
                    } else {
                        "untrusted"
                    };
                    s.save_report(&report(&format!("h{i}"), verdict, created), true, None)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let changes = a.changes_since(0, 100_000).await.unwrap().len();
        let (ra, rb, ca, cb) = tokio::join!(
            a.prune_reports(100, 7),
            b.prune_reports(100, 7),
            a.prune_changes(100, 5),
            b.prune_changes(100, 5)
        );
        let (ra, rb, ca, cb) = (ra.unwrap(), rb.unwrap(), ca.unwrap(), cb.unwrap());
        assert_eq!(ra + rb, hosts * 29, "each old report deleted once ({url})");
        assert_eq!(
            usize::try_from(ca + cb).unwrap(),
            changes,
            "each change deleted once ({url})"
        );
        let left = all_reports(&a).await;
        assert_eq!(left.len(), usize::try_from(hosts).unwrap(), "{url}");
        assert!(left.iter().all(|(_, created)| *created == 30), "{left:?}");
        assert!(a.changes_since(0, 100).await.unwrap().is_empty());
    }
}

/// Names of the retention indexes present.
async fn retention_indexes(url: &str, backend: Backend) -> Vec<String> {
    indexes_among(url, backend, &["changes_created", "reports_created"]).await
}

/// Which of these indexes exist, by name.
async fn indexes_among(url: &str, backend: Backend, names: &[&str]) -> Vec<String> {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let q = match backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name",
        Backend::Postgres => {
            "SELECT CAST(indexname AS TEXT) AS name FROM pg_indexes ORDER BY indexname"
        }
    };
    let all: Vec<String> = sqlx::query_scalar(q).fetch_all(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    all.into_iter()
        .filter(|n| names.contains(&n.as_str()))
        .collect()
}

#[tokio::test]
async fn a_version_1_database_migrates_to_version_2() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let backend = store.backend();
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        for created in [10, 20] {
            store
                .save_report(&report("h1", "trusted", created), true, None)
                .await
                .unwrap();
        }
        drop(store);
        assert_eq!(
            retention_indexes(&url, backend).await,
            ["changes_created", "reports_created"],
            "{url}"
        );
        // Back to version 1: version 2 only adds these indexes.
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for stmt in [
            "DROP INDEX reports_created",
            "DROP INDEX changes_created",
            "DELETE FROM schema_migrations WHERE version = 2",
        ] {
            sqlx::query(stmt).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        assert!(retention_indexes(&url, backend).await.is_empty());

        let store = Store::connect(&url).await.unwrap();
        assert_eq!(
            retention_indexes(&url, backend).await,
            ["changes_created", "reports_created"],
            "{url}"
        );
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        assert_eq!(
            versions,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            "{url}"
        );
        // On PostgreSQL the EK's index is a hash index (version 15), a B-tree on SQLite.
        if backend == Backend::Postgres {
            let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
            let def: String = sqlx::query_scalar(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'hosts_ek_public'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
            assert!(def.contains("USING hash (ek_public)"), "{def}");
        }
        // The data came through, and pruning works on it.
        assert_eq!(all_reports(&store).await.len(), 2);
        assert_eq!(store.prune_reports(100, 10).await.unwrap(), 1, "{url}");
        assert_eq!(all_reports(&store).await, [("h1".to_string(), 20)]);
        // Connecting again migrates nothing more.
        drop(store);
        Store::connect(&url).await.unwrap().ping().await.unwrap();
    }
}

#[tokio::test]
async fn a_version_7_database_moves_its_schedule_into_a_table_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        for (name, uuid) in [("h1", "uuid-1"), ("h2", "uuid-2")] {
            let mut h = host(name, uuid);
            h.ek_public = format!("ek-{name}");
            store.register_host(&h, 0).await.unwrap();
        }
        drop(store);
        // Back to version 7: the schedule in the host rows (h1 leased by r1 and due at 500,
        // h2 free and due at 100).
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for stmt in [
            "DROP TABLE schedule",
            "CREATE INDEX hosts_next_attest ON hosts (next_attest)",
            "UPDATE hosts SET next_attest = 500, lease_owner = 'r1', lease_until = 900 WHERE name = 'h1'",
            "UPDATE hosts SET next_attest = 100, lease_owner = NULL, lease_until = 0 WHERE name = 'h2'",
            "DELETE FROM schema_migrations WHERE version = 8",
        ] {
            sqlx::query(stmt).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();

        let store = Store::connect(&url).await.unwrap();
        assert_eq!(
            store.lease("h1").await.unwrap(),
            Some((Some("r1".to_string()), 900)),
            "{url}"
        );
        assert_eq!(store.lease("h2").await.unwrap(), Some((None, 0)), "{url}");
        assert_eq!(
            store.due_hosts("r2", 200, 10).await.unwrap(),
            ["h2"],
            "{url}"
        );
        assert_eq!(
            store.due_hosts("r1", 600, 10).await.unwrap(),
            ["h2", "h1"],
            "{url}"
        );
        // A claim takes the host row with it (h1's lease is r1's, and r1 is live); the old
        // index is gone.
        store.heartbeat("r1").await.unwrap();
        let claimed = store
            .claim_due("r2", 600, 1600, 1000, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(
            claimed.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["h2"],
            "{url}: h1 is r1's"
        );
        assert_eq!(claimed[0].hardware_uuid, "uuid-2");
        assert_eq!(
            store.lease("h2").await.unwrap(),
            Some((Some("r2".to_string()), 1600))
        );
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let old_index = match store.backend() {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'hosts_next_attest'"
            }
            Backend::Postgres => "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'hosts_next_attest'",
        };
        let n: i64 = sqlx::query_scalar(old_index)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "{url}");
        conn.close().await.unwrap();
        // Deleting a host deletes its schedule.
        assert!(store.delete_host("h2", 700).await.unwrap());
        assert_eq!(store.lease("h2").await.unwrap(), None, "{url}");
    }
}

// ---- the typed change feed (`Store::subscribe_from`) ----

async fn next_change(
    feed: &mut nodetrust_server::feed::ChangeFeed,
) -> nodetrust_proto::trust::FeedItem {
    tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("a change within 5 s")
        .unwrap()
}

fn change_of(item: nodetrust_proto::trust::FeedItem) -> nodetrust_proto::trust::ChangeEvent {
    match item {
        nodetrust_proto::trust::FeedItem::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn change_feed_replays_in_order_then_follows_live_and_resumes_mid_way() {
    use nodetrust_proto::trust::{ChangeKind, Trust};
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 1).await.unwrap();
        store.register_host(&host("h2", "uuid-2"), 2).await.unwrap();
        store
            .save_report(&report("h1", "untrusted", 10), true, None)
            .await
            .unwrap();
        let mut feed = store.subscribe_from(0).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let c = change_of(next_change(&mut feed).await);
            got.push((c.seq, c.host, c.kind, c.trust, c.at));
        }
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{got:?} ({url})");
        let shape: Vec<_> = got.iter().map(|g| (g.1.as_str(), g.2, g.3, g.4)).collect();
        assert_eq!(
            shape,
            vec![
                ("h1", ChangeKind::Registered, None, 1),
                ("h2", ChangeKind::Registered, None, 2),
                ("h1", ChangeKind::Verdict, Some(Trust::Untrusted), 10),
            ],
            "{url}"
        );
        assert_eq!(feed.position(), got[2].0);
        // Live: a change committed later wakes the follower.
        let writer = store.clone();
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer
                .save_report(&report("h2", "trusted", 20), true, None)
                .await
                .unwrap();
        });
        let c = change_of(next_change(&mut feed).await);
        later.await.unwrap();
        assert_eq!(
            (c.host.as_str(), c.trust),
            ("h2", Some(Trust::Trusted)),
            "{url}"
        );
        // A follower resuming after the first change gets exactly the rest.
        let mut resumed = store.subscribe_from(got[0].0).await.unwrap();
        let c = change_of(next_change(&mut resumed).await);
        assert_eq!(c.seq, got[1].0, "{url}");
        assert_eq!(store.changes_head().await.unwrap(), feed.position());
    }
}

#[tokio::test]
async fn change_feed_follower_behind_retention_gets_resync_not_a_gap() {
    use nodetrust_proto::trust::{ChangeKind, FeedItem};
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 1).await.unwrap();
        store
            .save_report(&report("h1", "untrusted", 10), true, None)
            .await
            .unwrap();
        let head = store.changes_head().await.unwrap();
        assert_eq!(store.changes_pruned_through().await.unwrap(), 0);
        // Retention deletes both changes.
        assert_eq!(store.prune_changes(1_000_000, 1).await.unwrap(), 2, "{url}");
        assert_eq!(store.changes_pruned_through().await.unwrap(), head, "{url}");
        assert_eq!(
            store.changes_head().await.unwrap(),
            head,
            "head survives pruning"
        );
        let mut behind = store.subscribe_from(0).await.unwrap();
        match next_change(&mut behind).await {
            FeedItem::Resync { resume_after } => assert_eq!(resume_after, head, "{url}"),
            other => panic!("expected a resync, got {other:?} ({url})"),
        }
        // Up to date, no resync: the next change is the next thing.
        let mut current = store.subscribe_from(head).await.unwrap();
        store
            .register_host(&host("h3", "uuid-3"), 30)
            .await
            .unwrap();
        for feed in [&mut behind, &mut current] {
            let c = change_of(next_change(feed).await);
            assert_eq!(
                (c.host.as_str(), c.kind),
                ("h3", ChangeKind::Registered),
                "{url}"
            );
        }
    }
}

#[tokio::test]
async fn change_feed_spans_replicas_on_postgresql() {
    use nodetrust_proto::trust::{ChangeKind, Trust};
    let Some(url) = pg_database_or_skip().await else {
        return;
    };
    // Two server processes' stores: separate pools, separate in-process channels.
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let mut feed = b
        .subscribe_from(b.changes_head().await.unwrap())
        .await
        .unwrap();
    a.register_host(&host("h1", "uuid-1"), 1).await.unwrap();
    a.save_report(&report("h1", "trusted", 10), true, None)
        .await
        .unwrap();
    let first = change_of(next_change(&mut feed).await);
    let second = change_of(next_change(&mut feed).await);
    assert_eq!(
        (first.host.as_str(), first.kind),
        ("h1", ChangeKind::Registered)
    );
    assert_eq!(
        (second.kind, second.trust),
        (ChangeKind::Verdict, Some(Trust::Trusted))
    );
}

#[tokio::test]
async fn flavor_writes_drop_the_appraisal_cache_and_other_writers_are_seen_after_it_expires() {
    use nodetrust_server::flavors::{Flavors, FLAVOR_CACHE_TTL};
    let flavor = |label: &str| -> nodetrust_appraise::Flavor {
        serde_json::from_value(serde_json::json!({
            "label": label,
            "part": "OS",
            "pcrs": [{"bank": "sha256", "index": 4, "value": "00".repeat(32)}]
        }))
        .unwrap()
    };
    let labels = |v: &[nodetrust_appraise::Flavor]| {
        let mut l: Vec<String> = v.iter().map(|f| f.label.clone()).collect();
        l.sort();
        l
    };
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let clock = std::sync::Arc::new(nodetrust_server::clock::ManualClock::default());
        let flavors = Flavors::new(store.clone(), clock.clone());
        assert!(flavors.current().await.unwrap().is_empty(), "{url}");
        // A write through `Flavors` is seen at once, although the empty list was cached.
        let mut added = vec![flavor("a"), flavor("b")];
        flavors.add(&mut added, 1).await.unwrap();
        assert!(added.iter().all(|f| !f.id.is_empty()) && added[0].id != added[1].id);
        assert_eq!(
            labels(&flavors.current().await.unwrap()),
            ["a", "b"],
            "{url}"
        );
        // A write by someone else (another replica) waits for the cache to expire...
        let mut other = flavor("c");
        other.id = new_id();
        store
            .put_flavor(&FlavorRow {
                id: other.id.clone(),
                body: serde_json::to_string(&other).unwrap(),
                created: 2,
            })
            .await
            .unwrap();
        assert_eq!(
            labels(&flavors.current().await.unwrap()),
            ["a", "b"],
            "{url}"
        );
        assert_eq!(
            labels(&flavors.all().await.unwrap()),
            ["a", "b", "c"],
            "{url}"
        );
        clock.advance(FLAVOR_CACHE_TTL + Duration::from_millis(1));
        assert_eq!(
            labels(&flavors.current().await.unwrap()),
            ["a", "b", "c"],
            "{url}"
        );
        // ...and a delete through `Flavors` is seen at once.
        assert!(flavors.delete(&added[0].id).await.unwrap());
        assert!(!flavors.delete(&added[0].id).await.unwrap());
        assert_eq!(
            labels(&flavors.current().await.unwrap()),
            ["b", "c"],
            "{url}"
        );
    }
}

/// Writers on two replicas commit changes in an order that differs from the order their
/// sequence numbers were drawn in, unless the feed serialises them. A follower that tails the
/// feed by sequence number must still see every change: none may commit below a position a
/// follower has already read past.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_tailing_the_feed_never_skips_a_change_committed_late_on_postgresql() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(url) = pg_database_or_skip().await else {
        return;
    };
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let follower_store = Store::connect(&url).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut pos, mut seen) = (0i64, BTreeSet::new());
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = follower_store.change_events_since(pos, 1000).await.unwrap();
                for e in &batch {
                    seen.insert(e.seq);
                    pos = pos.max(e.seq);
                }
                if finished && batch.is_empty() {
                    return seen;
                }
            }
        })
    };
    let mut writers = Vec::new();
    for (replica, store) in [("a", a), ("b", b)] {
        let store = Arc::new(store);
        for w in 0..8 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..25 {
                    let name = format!("{replica}-{w}-{i}");
                    store
                        .register_host(&host(&name, &format!("uuid-{name}")), 1)
                        .await
                        .unwrap();
                    for (k, verdict) in ["trusted", "untrusted", "trusted"].iter().enumerate() {
                        store
                            .save_report(&report(&name, verdict, 10 + k as i64), true, None)
                            .await
                            .unwrap();
                    }
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = follower.await.unwrap();
    let all: BTreeSet<i64> = Store::connect(&url)
        .await
        .unwrap()
        .change_events_since(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    // 2 replicas × 8 writers × 25 hosts × (registered + 3 verdict changes).
    assert_eq!(all.len(), 2 * 8 * 25 * 4);
    let missed: Vec<&i64> = all.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "the follower skipped {} of {} changes (first: {:?})",
        missed.len(),
        all.len(),
        missed.iter().take(5).collect::<Vec<_>>()
    );
}

/// What takes a database back from version 13 (each host's reports a chain) to version 12
/// (an index of the reports by host).
const UNDO_V13: &[&str] = &[
    "DROP INDEX reports_before_chains",
    "ALTER TABLE hosts DROP COLUMN last_report",
    "ALTER TABLE hosts DROP COLUMN previous_report",
    "ALTER TABLE reports DROP COLUMN previous",
    "CREATE INDEX reports_host_created ON reports (host_name, created)",
    "DELETE FROM schema_migrations WHERE version = 13",
];

/// The ids of a host's reports as the API reads them (newest first), at most `limit`.
async fn report_ids(store: &Store, host: &str, limit: i64) -> Vec<String> {
    let reports = store.reports(Some(host), limit).await.unwrap();
    reports.into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn a_version_12_database_chains_each_hosts_reports_and_drops_their_index() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let backend = store.backend();
        for (name, uuid) in [("h1", "uuid-1"), ("h2", "uuid-2")] {
            store.register_host(&host(name, uuid), 0).await.unwrap();
        }
        drop(store);
        // Version 12's reports: two of h1's made at the same time (the id orders them), one
        // of h2, one of a host no longer registered.
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for stmt in UNDO_V13.iter().chain(&[
            "INSERT INTO reports (id, host_name, verdict, reasons, created, expires, signed_report, hardware_uuid) \
             VALUES ('a1', 'h1', 'trusted', '[]', 10, 99, '', 'uuid-1'), \
             ('a3', 'h1', 'untrusted', '[]', 20, 99, '', 'uuid-1'), \
             ('a2', 'h1', 'trusted', '[]', 20, 99, '', 'uuid-1'), \
             ('b1', 'h2', 'trusted', '[]', 5, 99, '', 'uuid-2'), \
             ('z1', 'gone', 'trusted', '[]', 7, 99, '', 'uuid-9')",
        ]) {
            sqlx::query(*stmt).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        assert_eq!(
            indexes_among(&url, backend, &["reports_host_created"]).await,
            ["reports_host_created"]
        );

        let store = Store::connect(&url).await.unwrap();
        assert!(
            indexes_among(&url, backend, &["reports_host_created"])
                .await
                .is_empty(),
            "{url}"
        );
        assert_eq!(
            report_ids(&store, "h1", 10).await,
            ["a3", "a2", "a1"],
            "{url}"
        );
        assert_eq!(report_ids(&store, "h1", 2).await, ["a3", "a2"], "{url}");
        assert_eq!(report_ids(&store, "h2", 10).await, ["b1"], "{url}");
        // Stored before the chains, a report of a name no longer registered is still found
        // by that name.
        assert_eq!(report_ids(&store, "gone", 10).await, ["z1"], "{url}");
        let latest = store.latest_report_ids().await.unwrap();
        let latest: BTreeMap<String, String> = latest.into_iter().collect();
        let expected = [("h1", "a3"), ("h2", "b1")].map(|(h, r)| (h.to_string(), r.to_string()));
        assert_eq!(latest, BTreeMap::from(expected), "{url}");
        // A new report goes at the head of the chain.
        let new = report("h1", "trusted", 30);
        store.save_report(&new, true, None).await.unwrap();
        assert_eq!(
            report_ids(&store, "h1", 10).await,
            [new.id.as_str(), "a3", "a2", "a1"],
            "{url}"
        );
        // Retention takes the old ones of either kind, but spares a host's latest (h2's
        // report stored before the chains).
        assert_eq!(store.prune_reports(15, 100).await.unwrap(), 2, "{url}");
        assert_eq!(
            report_ids(&store, "h1", 10).await,
            [new.id.as_str(), "a3", "a2"],
            "{url}"
        );
        assert_eq!(report_ids(&store, "h2", 10).await, ["b1"], "{url}");
        // Deleting a host deletes its chain and its reports stored before, nothing else.
        let mut kept = report("h2", "trusted", 35);
        kept.id = "k1".into();
        store.save_report(&kept, true, None).await.unwrap();
        assert!(store.delete_host("h1", 40).await.unwrap());
        assert_eq!(
            all_reports(&store).await,
            [("h2".to_string(), 5), ("h2".to_string(), 35)],
            "{url}"
        );
        assert_eq!(report_ids(&store, "h2", 10).await, ["k1", "b1"], "{url}");
    }
}

#[tokio::test]
async fn a_host_registered_again_under_its_name_keeps_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        store.register_host(&host("h2", "uuid-2"), 0).await.unwrap();
        let mut made = Vec::new();
        let mut attest = async |created| {
            let r = report("h1", "trusted", created);
            store.save_report(&r, true, None).await.unwrap();
            made.insert(0, r.id);
        };
        attest(10).await;
        attest(20).await;
        // Reimaged: registered again with its hardware UUID, then through an activation (a
        // shared transaction's path) with a new EK.
        assert!(store
            .register_host(&host("h1", "uuid-1"), 30)
            .await
            .unwrap());
        attest(40).await;
        store
            .put_challenge(&open_challenge("c1"), 50)
            .await
            .unwrap();
        let mut again = host("h1", "uuid-1");
        again.ek_public = "ek-new".into();
        let outcome = store
            .register_host_activated(&again, None, "c1", 100, |_| Ok(()))
            .await
            .unwrap();
        assert_eq!(outcome, Registered::Stored(true), "{url}");
        attest(200).await;
        store
            .save_report(&report("h2", "trusted", 210), true, None)
            .await
            .unwrap();
        assert_eq!(report_ids(&store, "h1", 10).await, made, "{url}");
        assert_eq!(
            store.latest_report_ids().await.unwrap().get("h1"),
            made.first(),
            "{url}"
        );
        // Deleted, it takes every one of them along.
        assert!(store.delete_host("h1", 300).await.unwrap());
        assert_eq!(
            all_reports(&store).await,
            [("h2".to_string(), 210)],
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_version_8_database_keeps_the_signatures_of_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        drop(store);
        // Back to version 8: reports without the hardware UUID column, signed when made, and
        // without the chains of version 13.
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for stmt in UNDO_V13.iter().chain(&[
            "ALTER TABLE reports DROP COLUMN hardware_uuid",
            "INSERT INTO reports (id, host_name, verdict, reasons, created, expires, signed_report) \
             VALUES ('old', 'h1', 'trusted', '[]', 10, 20, 'header.payload.signature')",
            "DELETE FROM schema_migrations WHERE version = 9",
        ]) {
            sqlx::query(*stmt).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();

        let store = Store::connect(&url).await.unwrap();
        let mut new = report("h1", "untrusted", 30);
        new.hardware_uuid = "uuid-1".into();
        new.signed_report = String::new();
        store.save_report(&new, true, None).await.unwrap();
        let reports = store.reports(Some("h1"), 10).await.unwrap();
        let got: Vec<(&str, &str, &str)> = reports
            .iter()
            .map(|r| {
                (
                    r.verdict.as_str(),
                    r.hardware_uuid.as_str(),
                    r.signed_report.as_str(),
                )
            })
            .collect();
        // Newest first: the new report unsigned with its UUID (signed when read), the old one
        // with the signature it was made with.
        assert_eq!(
            got,
            [
                ("untrusted", "uuid-1", ""),
                ("trusted", "", "header.payload.signature")
            ],
            "{url}"
        );
    }
}

/// The names of `hosts`' indexes on `updated`.
async fn updated_indexes(url: &str, backend: Backend) -> Vec<String> {
    indexes_among(url, backend, &["hosts_updated", "hosts_written"]).await
}

/// Two columns of a host row, read on a connection of their own.
async fn host_columns<A, B>(url: &str, name: &str, columns: &str) -> (A, B)
where
    A: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    B: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    let q = format!("SELECT {columns} FROM hosts WHERE name = $1");
    two_columns(url, q, name).await
}

/// The two columns the query `q` answers for the host `name` (its `$1`).
async fn two_columns<A, B>(url: &str, q: String, name: &str) -> (A, B)
where
    A: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    B: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let row = sqlx::query(sqlx::AssertSqlSafe(q))
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (row.try_get(0).unwrap(), row.try_get(1).unwrap())
}

/// `updated` and `version` of a host row.
async fn written(url: &str, name: &str) -> (i64, i64) {
    host_columns(url, name, "updated, version").await
}

#[tokio::test]
async fn an_attestation_writes_no_indexed_column_and_the_host_list_finds_it_by_its_report() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let backend = store.backend();
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        store.register_host(&host("h2", "uuid-2"), 0).await.unwrap();
        let (updated, version) = written(&url, "h1").await;
        assert_eq!(updated, 0, "{url}");

        // A verdict written at 5,000: the version moves, `updated` does not.
        store
            .save_report(&report("h1", "trusted", 5_000), true, None)
            .await
            .unwrap();
        assert_eq!(written(&url, "h1").await, (0, version + 1), "{url}");
        // The host list's renewal read finds h1 by its report, not h2; nothing after it.
        let since = store.listed_hosts_since(4_000).await.unwrap();
        assert_eq!(since.count, 2, "{url}");
        let names: Vec<&str> = since.rows.iter().map(|r| r.row.name.as_str()).collect();
        assert_eq!(names, ["h1"], "{url}");
        assert_eq!(since.rows[0].row.attested_at, Some(5_000), "{url}");
        assert_eq!(since.rows[0].version, version + 1, "{url}");
        assert!(store
            .listed_hosts_since(6_000)
            .await
            .unwrap()
            .rows
            .is_empty());
        // Any other write of the row moves `updated`, and is found by it.
        store
            .mark_unreachable("h2", "refused", 7_000)
            .await
            .unwrap();
        let since = store.listed_hosts_since(6_000).await.unwrap();
        let names: Vec<&str> = since.rows.iter().map(|r| r.row.name.as_str()).collect();
        assert_eq!(names, ["h2"], "{url}");
        let all = store.listed_hosts_all().await.unwrap();
        assert_eq!(all.rows.len(), 2, "{url}");
        assert_eq!(all.version_sum, since.version_sum, "{url}");
        drop(store);

        // A version-9 database: `hosts (updated, version)` is replaced by `hosts (updated)`.
        assert_eq!(updated_indexes(&url, backend).await, ["hosts_written"]);
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for stmt in [
            "DROP INDEX hosts_written",
            "CREATE INDEX hosts_updated ON hosts (updated, version)",
            "DELETE FROM schema_migrations WHERE version = 10",
        ] {
            sqlx::query(stmt).execute(&mut conn).await.unwrap();
        }
        if backend == Backend::Postgres {
            sqlx::query("ALTER TABLE hosts RESET (fillfactor)")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        assert_eq!(updated_indexes(&url, backend).await, ["hosts_updated"]);
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(updated_indexes(&url, backend).await, ["hosts_written"]);
        if backend == Backend::Postgres {
            let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
            let options: String = sqlx::query_scalar(
                "SELECT CAST(array_to_string(reloptions, ',') AS TEXT) FROM pg_class \
                 WHERE relname = 'hosts'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
            assert_eq!(options, "fillfactor=60");
        }
        assert_eq!(store.listed_hosts_all().await.unwrap().rows.len(), 2);
    }
}

/// The stored text of `name`'s quoted PCR values and `pcrs_quoted_at`.
async fn stored_pcrs(url: &str, name: &str) -> (Option<String>, Option<i64>) {
    let q = "SELECT p.quoted_pcrs, h.pcrs_quoted_at FROM hosts h \
             LEFT JOIN host_pcrs p ON p.name = h.name WHERE h.name = $1";
    two_columns(url, q.to_string(), name).await
}

/// Runs `statements` on the database at `url`.
async fn run_sql(url: &str, statements: &[&str]) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    for stmt in statements {
        sqlx::query(sqlx::AssertSqlSafe(*stmt))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_registration_reads_its_eks_endorsements_and_its_identitys_holders_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        for n in 1..=4 {
            let mut h = host(&format!("h{n}"), &format!("uuid-{n}"));
            h.ek_public = format!("ek-{n}");
            store.register_host(&h, 0).await.unwrap();
        }
        let endorse = |ek: &str, revoked: bool| Endorsement {
            id: new_id(),
            hardware_uuid: None,
            ek_sha256: ek.repeat(32),
            ek_public: None,
            certificate: None,
            comment: None,
            revoked,
            created: 5,
        };
        let endorsed = [
            endorse("aa", false),
            endorse("aa", false),
            endorse("bb", false),
        ];
        for e in endorsed.iter().chain([&endorse("aa", true)]) {
            store.add_endorsement(e).await.unwrap();
        }
        let read = |ek: &'static str, name: &'static str, uuid: &'static str, ek_public| {
            let store = store.clone();
            async move {
                let (listed, holders) = store
                    .registration_reads(&ek.repeat(32), name, uuid, ek_public)
                    .await
                    .unwrap();
                let mut ids: Vec<String> = listed.into_iter().map(|e| e.id).collect();
                ids.sort();
                let names: Vec<String> = holders.into_iter().map(|h| h.name).collect();
                (ids, names)
            }
        };
        let ids = |es: &[&Endorsement]| {
            let mut ids: Vec<String> = es.iter().map(|e| e.id.clone()).collect();
            ids.sort();
            ids
        };
        // Two active endorsements (not the revoked one) with three holders: each once.
        assert_eq!(
            read("aa", "h1", "UUID-2", "ek-3").await,
            (
                ids(&[&endorsed[0], &endorsed[1]]),
                vec!["h1".into(), "h2".into(), "h3".into()]
            ),
            "{url}"
        );
        // One host holding the name, the UUID and the EK is listed once.
        assert_eq!(
            read("bb", "h4", "uuid-4", "ek-4").await,
            (ids(&[&endorsed[2]]), vec!["h4".into()]),
            "{url}"
        );
        assert_eq!(
            read("cc", "new", "uuid-new", "ek-new").await,
            (vec![], vec![]),
            "{url}"
        );
    }
}

/// What takes a database back from version 14 (quoted PCR values in a table of their own) to
/// version 13 (in the host rows).
const UNDO_V14: &[&str] = &[
    "UPDATE hosts SET quoted_pcrs = (SELECT p.quoted_pcrs FROM host_pcrs p WHERE p.name = hosts.name)",
    "DROP TABLE host_pcrs",
    "ALTER TABLE hosts DROP COLUMN pcrs_sha",
    "ALTER TABLE hosts DROP COLUMN pcrs_version",
    "DELETE FROM schema_migrations WHERE version = 14",
];

#[tokio::test]
async fn a_version_13_database_moves_quoted_pcrs_out_of_the_host_rows_and_writes_them_when_they_change(
) {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        let values = |hex: &str| format!(r#"{{"pcrs":{{"sha256":{{"0":"{hex}"}}}}}}"#);
        let counters = |hex: &str| AttestationUpdate {
            reset_count: Some(1),
            restart_count: Some(0),
            quoted_pcrs: Some(quoted(values(hex))),
        };
        for (name, uuid) in [("h1", "uuid-1"), ("h2", "uuid-2")] {
            store.register_host(&host(name, uuid), 0).await.unwrap();
        }
        let first = report("h1", "trusted", 10);
        store
            .save_report(&first, true, Some(counters("aa")))
            .await
            .unwrap();
        drop(store);
        run_sql(&url, UNDO_V14).await;
        assert_eq!(
            host_columns::<Option<String>, Option<i64>>(&url, "h1", "quoted_pcrs, pcrs_quoted_at")
                .await,
            (Some(values("aa")), Some(10)),
            "{url}: version 13 keeps them in the row"
        );

        let store = Store::connect(&url).await.unwrap();
        assert_eq!(
            host_columns::<Option<String>, Option<String>>(&url, "h1", "quoted_pcrs, pcrs_sha")
                .await,
            (None, None),
            "{url}: moved out of the row, no digest yet"
        );
        assert_eq!(
            stored_pcrs(&url, "h1").await,
            (Some(values("aa")), Some(10)),
            "{url}"
        );
        assert_eq!(stored_pcrs(&url, "h2").await, (None, None), "{url}");
        let facts = store.host_facts("h1").await.unwrap().unwrap();
        assert_eq!(
            facts
                .quoted_pcrs
                .map(|q| (q.pcrs["sha256"]["0"].clone(), q.quoted_at)),
            Some(("aa".into(), 10)),
            "{url}"
        );

        // The next attestation writes the digest; after it, values with the digest stored
        // are not written again: a text changed behind the store's back stays.
        let save = |created: i64, hex: &'static str| {
            let store = store.clone();
            async move {
                store
                    .save_report(&report("h1", "trusted", created), true, Some(counters(hex)))
                    .await
                    .unwrap();
            }
        };
        save(20, "aa").await;
        let digest = StoredPcrs::new(values("aa")).digest().to_string();
        assert_eq!(
            host_columns::<Option<String>, i64>(&url, "h1", "pcrs_sha, pcrs_quoted_at").await,
            (Some(digest), 20),
            "{url}"
        );
        run_sql(
            &url,
            &["UPDATE host_pcrs SET quoted_pcrs = 'not rewritten' WHERE name = 'h1'"],
        )
        .await;
        save(30, "aa").await;
        assert_eq!(
            stored_pcrs(&url, "h1").await,
            (Some("not rewritten".into()), Some(30)),
            "{url}"
        );
        save(40, "bb").await;
        assert_eq!(
            stored_pcrs(&url, "h1").await,
            (Some(values("bb")), Some(40)),
            "{url}"
        );

        // A deleted host's values go with it.
        assert!(store.delete_host("h1", 50).await.unwrap());
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM host_pcrs")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert_eq!(left, 0, "{url}");
    }
}

/// Quoted PCR values as an attestation passes them to the store.
fn quoted(json: String) -> std::sync::Arc<StoredPcrs> {
    std::sync::Arc::new(StoredPcrs::new(json))
}

#[tokio::test]
async fn quoted_pcrs_are_rewritten_only_when_they_change_and_keep_the_time_of_the_last_quote() {
    let dir = tempfile::tempdir().unwrap();
    for (url, store) in stores(&dir).await {
        store.register_host(&host("h1", "uuid-1"), 0).await.unwrap();
        let values = |hex: &str| format!(r#"{{"pcrs":{{"sha256":{{"0":"{hex}"}}}}}}"#);
        let save = |created: i64, pcrs: Option<String>| {
            let store = store.clone();
            async move {
                let counters = AttestationUpdate {
                    reset_count: Some(1),
                    restart_count: Some(0),
                    quoted_pcrs: pcrs.map(quoted),
                };
                store
                    .save_report(&report("h1", "trusted", created), true, Some(counters))
                    .await
                    .unwrap();
            }
        };
        let facts = || async {
            let q = store.host_facts("h1").await.unwrap().unwrap().quoted_pcrs;
            q.map(|q| {
                (
                    q.pcrs["sha256"]["0"].as_str().unwrap().to_string(),
                    q.quoted_at,
                )
            })
        };
        assert_eq!(facts().await, None, "{url}: none quoted yet");

        save(10, Some(values("aa"))).await;
        assert_eq!(facts().await, Some(("aa".into(), 10)), "{url}");
        // The same values quoted again: the stored text stays, the time moves.
        save(20, Some(values("aa"))).await;
        assert_eq!(facts().await, Some(("aa".into(), 20)), "{url}");
        assert_eq!(
            stored_pcrs(&url, "h1").await,
            (Some(values("aa")), Some(20))
        );
        // Other values replace them.
        save(30, Some(values("bb"))).await;
        assert_eq!(facts().await, Some(("bb".into(), 30)), "{url}");
        // A report without a verified quote keeps the values and their time.
        save(40, None).await;
        assert_eq!(facts().await, Some(("bb".into(), 30)), "{url}");

        // Values stored before migration 12 hold their time within, and are read with it
        // until a quote rewrites them (migration 14 moved them without a digest).
        run_sql(
            &url,
            &[
                "UPDATE host_pcrs SET quoted_pcrs = '{\"quoted_at\":5,\"pcrs\":{\"sha256\":{\"0\":\"bb\"}}}' \
                 WHERE name = 'h1'",
                "UPDATE hosts SET pcrs_quoted_at = NULL, pcrs_sha = NULL WHERE name = 'h1'",
            ],
        )
        .await;
        assert_eq!(facts().await, Some(("bb".into(), 5)), "{url}");
        save(50, Some(values("bb"))).await;
        assert_eq!(facts().await, Some(("bb".into(), 50)), "{url}");
        assert_eq!(
            stored_pcrs(&url, "h1").await,
            (Some(values("bb")), Some(50))
        );
    }
}
