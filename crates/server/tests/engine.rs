//! The scheduler: registration and agent (re)starts are attested at once; an agent rebooted
//! into another boot loader is untrusted within 2 s of telling the server.
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

async fn wait_for_verdict(
    h: &Harness,
    name: &str,
    verdict: &str,
    within: Duration,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let host = h.host(name).await;
        if host["trust"]["verdict"] == verdict {
            return host;
        }
        assert!(
            start.elapsed() < within,
            "{name} not {verdict} within {within:?}: {host}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn agent_restart_is_attested_at_once() {
    let h = Harness::new().await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(run_scheduler(h.state.clone(), async move {
        let _ = stop_rx.await;
    }));
    let gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    // Registered hosts are due at once.
    wait_for_verdict(&h, "gold", "untrusted", Duration::from_secs(2)).await;
    h.import_flavors("gold").await;
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    wait_for_verdict(&h, "node-1", "trusted", Duration::from_secs(2)).await;
    // The node reboots into another boot loader; its agent says it (re)started.
    let quotes_before = node.lock().unwrap().quotes;
    node.lock().unwrap().boot(&gold_boot("grub evil"));
    let started = Instant::now();
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/agent-events",
            Auth::Agent,
            Some(json!({"host_name": "node-1", "hardware_uuid": "uuid-1"})),
        )
        .await;
    assert_eq!(s.as_u16(), 202, "{v}");
    let host = wait_for_verdict(&h, "node-1", "untrusted", Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        host["trust"]["reasons"].to_string().contains("PCR 4"),
        "{host}"
    );
    assert!(node.lock().unwrap().quotes > quotes_before);
    // Unknown hosts and mismatched UUIDs are refused.
    let (s, _) = h
        .call(
            "POST",
            "/mtwilson/v2/agent-events",
            Auth::Agent,
            Some(json!({"host_name": "node-1", "hardware_uuid": "other"})),
        )
        .await;
    assert_eq!(s.as_u16(), 409);
    let (s, _) = h
        .call(
            "POST",
            "/mtwilson/v2/agent-events",
            Auth::Agent,
            Some(json!({"host_name": "ghost", "hardware_uuid": "x"})),
        )
        .await;
    assert_eq!(s.as_u16(), 404);
    drop(gold);
    stop_tx.send(()).unwrap();
    scheduler.await.unwrap();
}

/// Replicas need PostgreSQL: a server on a SQLite file is its only server, and keeps its
/// schedule in memory.
#[tokio::test]
async fn two_replicas_share_the_hosts_and_attest_each_once() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL replica test skipped");
        return;
    };
    let h = Harness::with_db(tempfile::tempdir().unwrap(), db).await;
    let mut config_b = common::test_config(&h.db, h.dir.path());
    config_b.replica_id = Some("replica-b".into());
    let store_b = nodetrust_server::store::Store::connect(&h.db)
        .await
        .unwrap();
    let state_b =
        nodetrust_server::AppState::new(&config_b, store_b, h.clock.clone(), h.agents.clone())
            .await
            .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut schedulers = Vec::new();
    for state in [h.state.clone(), state_b.clone()] {
        let mut rx = stop_rx.clone();
        schedulers.push(tokio::spawn(run_scheduler(state, async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(
            h.enrol(
                &format!("node-{i}"),
                &format!("uuid-{i}"),
                &gold_boot("grub 2.06"),
            )
            .await,
        );
        state_b.queue.wake();
    }
    for i in 0..6 {
        wait_for_verdict(
            &h,
            &format!("node-{i}"),
            "untrusted",
            Duration::from_secs(3),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quotes: Vec<usize> = agents.iter().map(|a| a.lock().unwrap().quotes).collect();
    assert_eq!(quotes, vec![1; 6], "each host attested exactly once");
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..6 {
        let (owner, _) = h
            .state
            .store
            .lease(&format!("node-{i}"))
            .await
            .unwrap()
            .unwrap();
        owners.insert(owner.unwrap());
    }
    assert!(!owners.is_empty() && owners.len() <= 2, "{owners:?}");
    stop_tx.send(true).unwrap();
    for s in schedulers {
        s.await.unwrap();
    }
}

/// The quote's PCR selection as the server asked for it.
fn selection(
    req: &nodetrust_proto::agent::QuoteRequest,
) -> std::collections::BTreeMap<nodetrust_tpm_wire::HashAlg, std::collections::BTreeSet<u8>> {
    req.pcrbanks
        .iter()
        .map(|b| {
            (
                nodetrust_tpm_wire::HashAlg::from_name(b).unwrap(),
                req.pcrs.iter().copied().collect(),
            )
        })
        .collect()
}

/// `nodetrust_attestations_total{result,reason}` as scraped from `/metrics`.
async fn attestation_counts(h: &Harness) -> std::collections::BTreeMap<(String, String), u64> {
    let (s, m) = h.call("GET", "/metrics", Auth::None, None).await;
    assert_eq!(s.as_u16(), 200);
    m.as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("nodetrust_attestations_total{result=\""))
        .map(|l| {
            let (result, rest) = l.split_once("\",reason=\"").unwrap();
            let (reason, n) = rest.split_once("\"} ").unwrap();
            ((result.to_string(), reason.to_string()), n.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn each_failed_attestation_is_counted_with_its_real_reason() {
    let h = Harness::new().await;
    let gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    // No flavor yet: untrusted because nothing is defined, not because anything differs.
    let (s, v) = h.attest("gold").await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["verdict"], "untrusted", "{v}");
    h.import_flavors("gold").await;
    let gold_log = gold.lock().unwrap().event_log.clone();

    let _ok = h.enrol("ok", "uuid-ok", &gold_boot("grub 2.06")).await;
    let _evil = h.enrol("evil", "uuid-evil", &gold_boot("grub evil")).await;
    let forged = h
        .enrol("forged", "uuid-forged", &gold_boot("grub 2.06"))
        .await;
    forged.lock().unwrap().tamper = Some(common::Tamper::new(|_, _, mut r| {
        *r.signature.last_mut().unwrap() ^= 0x01;
        r
    }));
    let stale = h
        .enrol("stale", "uuid-stale", &gold_boot("grub 2.06"))
        .await;
    stale.lock().unwrap().tamper = Some(common::Tamper::new(|tpm, req, mut r| {
        let q = tpm.quote(&[7u8; 32], &selection(req)).unwrap();
        r.quote = q.attest;
        r.signature = q.signature;
        r
    }));
    // Boots another loader but sends the gold machine's log.
    let liar = h.enrol("liar", "uuid-liar", &gold_boot("grub evil")).await;
    liar.lock().unwrap().tamper = Some(common::Tamper::new(move |_, _, mut r| {
        r.event_log = gold_log.clone();
        r
    }));
    let garbled = h
        .enrol("garbled", "uuid-garbled", &gold_boot("grub 2.06"))
        .await;
    garbled.lock().unwrap().tamper = Some(common::Tamper::new(|_, _, mut r| {
        r.event_log = Some(vec![0u8; 7]);
        r
    }));
    let down = h.enrol("down", "uuid-down", &gold_boot("grub 2.06")).await;
    down.lock().unwrap().down = true;

    for (host, verdict) in [
        ("ok", "trusted"),
        ("evil", "untrusted"),
        ("forged", "untrusted"),
        ("stale", "untrusted"),
        ("liar", "untrusted"),
        ("garbled", "untrusted"),
    ] {
        let (s, v) = h.attest(host).await;
        assert_eq!(s.as_u16(), 200, "{host}: {v}");
        assert_eq!(v["verdict"], verdict, "{host}: {v}");
    }
    // An unreachable agent: no verdict, the same HTTP answer as ever.
    let (s, v) = h.attest("down").await;
    assert_eq!(s.as_u16(), 502, "{v}");
    assert_eq!(v["reason"], "agent_error", "{v}");

    let counts = attestation_counts(&h).await;
    let expected: std::collections::BTreeMap<(String, String), u64> = [
        ("untrusted", "no_flavor"),
        ("trusted", "ok"),
        ("untrusted", "flavor_mismatch"),
        ("untrusted", "bad_signature"),
        ("untrusted", "nonce_mismatch"),
        ("untrusted", "replay_mismatch"),
        ("untrusted", "event_log_unreadable"),
        ("unreachable", "agent_unreachable"),
    ]
    .into_iter()
    .map(|(r, w)| ((r.to_string(), w.to_string()), 1))
    .collect();
    assert_eq!(counts, expected);
}

/// A random source that always gives the same byte: lets a test know the nonce in advance.
#[derive(Debug)]
struct Pinned(u8);

impl nodetrust_server::clock::Random for Pinned {
    fn fill(&self, out: &mut [u8]) -> Result<(), nodetrust_server::clock::RandomFailed> {
        out.fill(self.0);
        Ok(())
    }
}

#[tokio::test]
async fn nonces_come_from_the_injected_random_source() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    let h = Harness::with_config(dir, db, |c| c.random = std::sync::Arc::new(Pinned(0x5a))).await;
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let (s, v) = h.attest("node-1").await;
    assert!(s.is_success(), "{s}: {v}");
    let quote = node.lock().unwrap().last.clone().unwrap();
    let attest = nodetrust_tpm_wire::Attest::parse_quote(&quote.quote).unwrap();
    assert_eq!(
        attest.extra_data,
        vec![0x5a; 32],
        "the nonce was not drawn from the injected source"
    );
}

#[tokio::test]
async fn each_quote_is_verified_with_the_pinned_ak_parsed_once() {
    let h = Harness::new().await;
    h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let (s, v) = h.attest("node-1").await;
    assert!(s.is_success(), "{s}: {v}");
    let (hits, misses) = h.state.ak_cache.stats();
    assert!(misses >= 1, "the pinned AK was decoded once");
    for _ in 0..3 {
        let (s, v) = h.attest("node-1").await;
        assert!(s.is_success(), "{s}: {v}");
        assert!(v["verdict"].is_string(), "{v}");
    }
    assert_eq!(
        h.state.ak_cache.stats(),
        (hits + 3, misses),
        "every later quote used the kept key"
    );
    assert_eq!(h.state.ak_cache.len(), 1);
}

/// The `nodetrust_appraisals_reused_total` counter of `/metrics`.
/// Attests `host` and checks its verdict; the report.
async fn attested(h: &Harness, host: &str, want: &str) -> serde_json::Value {
    let (s, v) = h.attest(host).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["verdict"], want, "{v}");
    v
}

async fn reused_count(h: &Harness) -> u64 {
    counter(h, "nodetrust_appraisals_reused_total").await
}

/// The value of the unlabelled counter `name` in `/metrics`.
async fn counter(h: &Harness, name: &str) -> u64 {
    let (s, m) = h.call("GET", "/metrics", Auth::None, None).await;
    assert_eq!(s.as_u16(), 200);
    m.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

async fn flavor_ids_from(h: &Harness, source: &str) -> Vec<String> {
    let (s, v) = h
        .call("GET", "/mtwilson/v2/flavors", Auth::Admin, None)
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    v["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["source_host"] == source)
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_trusted_appraisal_is_reused_only_while_its_inputs_are_unchanged() {
    let h = Harness::new().await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, v) = h.attest("gold").await;
    assert_eq!(
        (s.as_u16(), v["verdict"].as_str()),
        (200, Some("untrusted"))
    );
    h.import_flavors("gold").await;
    let node = h.enrol("node", "uuid-node", &gold_boot("grub 2.06")).await;
    let attest = |want: &'static str| attested(&h, "node", want);
    // An untrusted verdict is never kept: appraised in full each time.
    let first = attest("trusted").await;
    assert_eq!(
        reused_count(&h).await,
        0,
        "the first appraisal is a full one"
    );
    let second = attest("trusted").await;
    assert_eq!(reused_count(&h).await, 1, "the same inputs: reused");
    assert_eq!(second["reasons"], first["reasons"], "the same reasons");
    assert!(second["created"].as_str() >= first["created"].as_str());
    assert_ne!(second["expires"], serde_json::Value::Null);

    // The same PCR values with other log bytes: appraised in full each time. Padding after
    // the last event changes nothing the log says: trusted, and kept as the new inputs.
    let honest = node.lock().unwrap().event_log.clone().unwrap();
    let mut padded = honest.clone();
    padded.extend_from_slice(&[0u8; 4]);
    node.lock().unwrap().tamper = Some(common::Tamper::new(move |_, _, mut r| {
        r.event_log = Some(padded.clone());
        r
    }));
    attest("trusted").await;
    assert_eq!(
        reused_count(&h).await,
        1,
        "other log bytes: a full appraisal"
    );
    // Another boot's log with this boot's PCR values: found altered.
    let other = h
        .enrol("other", "uuid-other", &gold_boot("grub evil"))
        .await;
    let other_log = other.lock().unwrap().event_log.clone().unwrap();
    assert_ne!(other_log, honest);
    node.lock().unwrap().tamper = Some(common::Tamper::new(move |_, _, mut r| {
        r.event_log = Some(other_log.clone());
        r
    }));
    let v = attest("untrusted").await;
    assert!(v["reasons"].to_string().contains("event log"), "{v}");
    assert_eq!(reused_count(&h).await, 1);
    // The honest log again: the untrusted verdict dropped what was kept, so a full appraisal
    // first, then reuse.
    node.lock().unwrap().tamper = None;
    attest("trusted").await;
    assert_eq!(reused_count(&h).await, 1);
    attest("trusted").await;
    assert_eq!(reused_count(&h).await, 2);

    // Flavors added: another generation, appraised in full (still trusted by gold's).
    h.enrol("gold-2", "uuid-gold-2", &gold_boot("grub 2.07"))
        .await;
    h.import_flavors("gold-2").await;
    attest("trusted").await;
    assert_eq!(reused_count(&h).await, 2);
    attest("trusted").await;
    assert_eq!(reused_count(&h).await, 3);
    // The flavors that trusted the node deleted: the next verdict says so at once.
    let ids = flavor_ids_from(&h, "gold").await;
    assert!(!ids.is_empty());
    for id in ids {
        assert_eq!(h.delete_flavor(&id).await.as_u16(), 204);
    }
    let v = attest("untrusted").await;
    assert!(v["reasons"].to_string().contains("grub"), "{v}");
    assert_eq!(reused_count(&h).await, 3);
}

#[tokio::test]
async fn an_unchanged_event_log_and_pcr_values_are_left_out_and_asked_for_again_when_needed() {
    let h = Harness::new().await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    h.import_flavors("gold").await;
    let node = h.enrol("node", "uuid-node", &gold_boot("grub 2.06")).await;
    let attest = |want: &'static str| attested(&h, "node", want);
    let last_sent_log = |agent: &std::sync::Arc<std::sync::Mutex<common::SoftAgent>>| {
        let a = agent.lock().unwrap();
        a.last.as_ref().unwrap().event_log.is_some()
    };
    let last_sent_pcrs = |agent: &std::sync::Arc<std::sync::Mutex<common::SoftAgent>>| {
        let a = agent.lock().unwrap();
        a.last.as_ref().unwrap().pcrs.is_some()
    };
    // The first appraisal is a full one, of the log sent; the server keeps the log's digest.
    attest("trusted").await;
    assert_eq!(node.lock().unwrap().hinted, 0);
    assert!(last_sent_log(&node));
    // The next request names it, and the agent leaves its unchanged log out; the same for
    // its PCR values, named by the quote's digest of them.
    attest("trusted").await;
    assert_eq!(node.lock().unwrap().hinted, 1);
    assert_eq!(node.lock().unwrap().pcrs_hinted, 1);
    assert!(!last_sent_log(&node), "the log is left out");
    assert!(!last_sent_pcrs(&node), "the values are left out");
    assert_eq!(reused_count(&h).await, 1);
    assert_eq!(counter(&h, "nodetrust_event_logs_left_out_total").await, 1);
    assert_eq!(counter(&h, "nodetrust_pcr_values_left_out_total").await, 1);
    attest("trusted").await;
    assert_eq!(counter(&h, "nodetrust_event_logs_left_out_total").await, 2);

    // A PCR extended outside the log (what the log says no longer replays to the quote): the
    // agent leaves out its unchanged log, the server needs it and asks again naming none,
    // within the same attestation, and the full appraisal says why the host is untrusted.
    node.lock()
        .unwrap()
        .tpm
        .extend(nodetrust_tpm_wire::HashAlg::Sha256, 9, &[7; 32]);
    let (quotes, hinted) = {
        let a = node.lock().unwrap();
        (a.quotes, a.hinted)
    };
    let v = attest("untrusted").await;
    assert!(v["reasons"].to_string().contains("event log"), "{v}");
    {
        let a = node.lock().unwrap();
        assert_eq!(a.quotes, quotes + 2, "asked twice");
        assert_eq!(a.hinted, hinted + 1, "the second request names no log");
    }
    assert!(last_sent_log(&node));
    assert_eq!(counter(&h, "nodetrust_event_logs_needed_total").await, 1);
    assert_eq!(counter(&h, "nodetrust_event_logs_left_out_total").await, 2);
    // Untrusted: nothing kept, so no log named, and the log is sent.
    attest("untrusted").await;
    assert_eq!(node.lock().unwrap().hinted, hinted + 1);
    assert!(last_sent_log(&node));

    // An agent that predates this sends no digest: it is never named a log (its quote request
    // would refuse the field), and its appraisals are reused all the same.
    let older = h
        .enrol("older", "uuid-older", &gold_boot("grub 2.06"))
        .await;
    older.lock().unwrap().older_agent = true;
    let reused = reused_count(&h).await;
    for _ in 0..3 {
        let (s, v) = h.attest("older").await;
        assert_eq!(
            (s.as_u16(), v["verdict"].as_str()),
            (200, Some("trusted")),
            "{v}"
        );
        assert!(last_sent_log(&older));
    }
    assert_eq!(older.lock().unwrap().hinted, 0);
    assert_eq!(older.lock().unwrap().pcrs_hinted, 0);
    assert!(last_sent_pcrs(&older));
    assert_eq!(reused_count(&h).await, reused + 2);
    assert_eq!(counter(&h, "nodetrust_pcr_values_needed_total").await, 0);
}

#[tokio::test]
async fn a_reused_appraisal_takes_the_signed_pcr_digest_for_the_values_kept() {
    let h = Harness::new().await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    h.import_flavors("gold").await;
    let node = h.enrol("node", "uuid-node", &gold_boot("grub 2.06")).await;
    let quoted = |h: &Harness| {
        let store = h.state.store.clone();
        async move {
            store
                .host_facts("node")
                .await
                .unwrap()
                .unwrap()
                .quoted_pcrs
                .unwrap()
        }
    };
    let (s, v) = h.attest("node").await;
    assert_eq!(
        (s.as_u16(), v["verdict"].as_str()),
        (200, Some("trusted")),
        "{v}"
    );
    let first = quoted(&h).await;
    let honest = serde_json::to_value(&node.lock().unwrap().last.as_ref().unwrap().pcrs).unwrap();
    assert_eq!(first.pcrs, honest);

    // The agent sends other values with a quote whose signed digest is the kept one (it was
    // named none: an honest agent would leave them out): the digest says the TPM holds the
    // values kept, so the appraisal is reused, and the values stored with the report are
    // those, quoted now.
    let sent: nodetrust_proto::agent::PcrMap = serde_json::from_value(honest.clone()).unwrap();
    node.lock().unwrap().tamper = Some(common::Tamper::new(move |_, _, mut r| {
        let mut map = sent.clone();
        for values in map.values_mut() {
            for v in values.values_mut() {
                *v = "ab".repeat(v.len() / 2);
            }
        }
        r.pcrs = Some(map.into());
        r
    }));
    h.clock.advance(Duration::from_secs(5));
    let (s, v) = h.attest("node").await;
    assert_eq!(
        (s.as_u16(), v["verdict"].as_str()),
        (200, Some("trusted")),
        "{v}"
    );
    assert_eq!(reused_count(&h).await, 1);
    let second = quoted(&h).await;
    assert_eq!(second.pcrs, honest, "the values kept, not those sent");
    assert!(
        second.quoted_at >= first.quoted_at + 5_000,
        "quoted now: {first:?} {second:?}"
    );
    let created = humantime::parse_rfc3339(v["created"].as_str().unwrap()).unwrap();
    assert_eq!(
        u128::try_from(second.quoted_at).unwrap(),
        created
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        "the time of its report"
    );

    // The TPM's values change (the digest with them): appraised in full, and the values sent
    // must then match the signed digest.
    node.lock()
        .unwrap()
        .tpm
        .extend(nodetrust_tpm_wire::HashAlg::Sha256, 9, &[7; 32]);
    let (s, v) = h.attest("node").await;
    assert_eq!(
        (s.as_u16(), v["verdict"].as_str()),
        (200, Some("untrusted")),
        "{v}"
    );
    assert!(v["reasons"].to_string().contains("PCR digest"), "{v}");
    assert_eq!(reused_count(&h).await, 1);
    assert_eq!(
        quoted(&h).await.pcrs,
        honest,
        "a rejected quote stores no values"
    );
    node.lock().unwrap().tamper = None;
    let (s, v) = h.attest("node").await;
    assert_eq!(
        (s.as_u16(), v["verdict"].as_str()),
        (200, Some("untrusted")),
        "{v}"
    );
    let changed = serde_json::to_value(&node.lock().unwrap().last.as_ref().unwrap().pcrs).unwrap();
    assert_ne!(changed, honest);
    assert_eq!(quoted(&h).await.pcrs, changed);
}
