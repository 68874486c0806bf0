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
use nodetrust_server::engine::run_scheduler;
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
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold"})),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
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

#[tokio::test]
async fn two_replicas_share_the_hosts_and_attest_each_once() {
    let h = Harness::new().await;
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
        state_b.wake.notify_one();
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
