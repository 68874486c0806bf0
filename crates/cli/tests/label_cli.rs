//! `nodetrust label`, the standalone labeller: it applies the server's verdicts to the nodes of
//! a cluster (the testkit's Kubernetes API stand-in), and changes nothing on any kind of bad
//! server answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::FakeServer;
use nodetrust_testkit::kubeapi::FakeApiServer;
use serde_json::{json, Value};

const LABEL: &str = "ibm-cloud.kubernetes.io/is-trusted";
const TPM: (&str, &str) = ("ibm-cloud.kubernetes.io/tpm-enabled", "true");

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn host(name: &str, uuid: &str, verdict: &str) -> Value {
    let now = SystemTime::now();
    json!({
        "name": name, "hardware_uuid": uuid, "connection_url": format!("https://{name}:1443"),
        "status": "connected",
        "trust": {
            "verdict": verdict, "reasons": [format!("it is {verdict}")],
            "attested_at": rfc3339(now), "expires_at": rfc3339(now + Duration::from_secs(600)),
        }
    })
}

fn cluster() -> (FakeApiServer, tempfile::TempDir, String) {
    let k8s = FakeApiServer::start().unwrap();
    k8s.add_node("worker-1", &[TPM], "uuid-1").unwrap();
    k8s.add_node("worker-2", &[TPM], "uuid-2").unwrap();
    k8s.add_node("no-tpm", &[], "uuid-3").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    k8s.write_kubeconfig(&kc).unwrap();
    (k8s, dir, kc.display().to_string())
}

fn label(k8s: &FakeApiServer, node: &str) -> Option<String> {
    k8s.node(node)?["metadata"]["labels"][LABEL]
        .as_str()
        .map(str::to_string)
}

#[test]
fn label_once_applies_the_servers_verdicts_with_a_reader_account() {
    let (k8s, _dir, kc) = cluster();
    let body = json!({"hosts": [
        host("worker-1", "uuid-1", "trusted"),
        host("worker-2", "uuid-2", "untrusted"),
        host("worker-3", "uuid-3", "trusted"),
    ]});
    let server = FakeServer::start(move |_| (200, body.to_string().into_bytes()));
    let untouched = k8s.node("no-tpm").unwrap();
    let out = server
        .cli(&["label", "--once", "--kubeconfig", &kc])
        .env("NODETRUST_ADMIN_USERNAME", "labeller")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        label(&k8s, "worker-1").as_deref(),
        Some("true"),
        "{}\n{:?}\n{}",
        String::from_utf8_lossy(&out.stderr),
        k8s.requests(),
        k8s.node("worker-1").unwrap()
    );
    assert_eq!(label(&k8s, "worker-2").as_deref(), Some("false"));
    let ann = &k8s.node("worker-2").unwrap()["metadata"]["annotations"];
    assert_eq!(ann["nodetrust.io/reasons"], "it is untrusted");
    assert_eq!(
        k8s.node("no-tpm").unwrap(),
        untouched,
        "outside the selector"
    );
    let seen = server.requests();
    assert!(
        seen.iter()
            .all(|r| r.method == "GET" && r.path == "/mtwilson/v2/hosts"),
        "read-only: {seen:?}"
    );
}

/// Every kind of bad answer, in turn.
fn bad_answer(i: usize) -> (u16, Vec<u8>) {
    match i % 6 {
        0 => (500, br#"{"error":"internal error","reason":"internal"}"#.to_vec()),
        1 => (401, br#"{"error":"authentication required","reason":"unauthorized"}"#.to_vec()),
        2 => (200, b"<html>proxy error</html>".to_vec()),
        3 => (200, br#"{"hosts": "none"}"#.to_vec()),
        4 => (200, json!({"hosts": [{"name": "worker-1", "hardware_uuid": "uuid-1", "status": "connected",
            "trust": {"verdict": "maybe", "reasons": [], "attested_at": null, "expires_at": null}}]}).to_string().into_bytes()),
        _ => (200, json!({"hosts": [{"name": "worker-1"}]}).to_string().into_bytes()),
    }
}

#[test]
fn label_once_changes_nothing_on_a_bad_answer_or_no_answer() {
    let (k8s, _dir, kc) = cluster();
    let good = json!({"hosts": [host("worker-1", "uuid-1", "trusted")]});
    let server = FakeServer::start(move |_| (200, good.to_string().into_bytes()));
    assert!(server
        .cli(&["label", "--once", "--kubeconfig", &kc])
        .status()
        .unwrap()
        .success());
    let before = k8s.node("worker-1").unwrap();
    assert_eq!(label(&k8s, "worker-1").as_deref(), Some("true"));
    for i in 0..6 {
        let bad = FakeServer::start(move |_| bad_answer(i));
        let out = bad
            .cli(&["label", "--once", "--kubeconfig", &kc])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "answer {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("no labels changed"));
        assert_eq!(
            k8s.node("worker-1").unwrap(),
            before,
            "answer {i} changed the node"
        );
    }
    // No server at all.
    let gone = FakeServer::start(|_| (200, Vec::new()));
    let url = gone.url.clone();
    drop(gone);
    let out = server
        .cli(&[
            "label",
            "--once",
            "--kubeconfig",
            &kc,
            "--server",
            "https://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{url}");
    assert_eq!(k8s.node("worker-1").unwrap(), before);
}

#[test]
fn label_poller_keeps_labels_through_rounds_of_bad_answers() {
    let (k8s, _dir, kc) = cluster();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let good = json!({"hosts": [host("worker-1", "uuid-1", "trusted"), host("worker-2", "uuid-2", "untrusted")]});
    let server = FakeServer::start(move |_| {
        let i = count.fetch_add(1, Ordering::SeqCst);
        if i == 0 {
            (200, good.to_string().into_bytes())
        } else {
            bad_answer(i - 1)
        }
    });
    let mut child = server
        .cli(&["label", "--kubeconfig", &kc, "--interval", "200ms"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // Both nodes labelled from the good answer (the poller patches them in no set order).
    while label(&k8s, "worker-1").is_none() || label(&k8s, "worker-2").is_none() {
        assert!(start.elapsed() < Duration::from_secs(20), "never labelled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (w1, w2) = (k8s.node("worker-1").unwrap(), k8s.node("worker-2").unwrap());
    // Many rounds of bad answers (each kind at least twice).
    while n.load(Ordering::SeqCst) < 14 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the poller stopped polling"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(k8s.node("worker-1").unwrap(), w1);
    assert_eq!(k8s.node("worker-2").unwrap(), w2);
    assert_eq!(
        k8s.count_requests("PATCH", "/nodes/worker-1"),
        1,
        "patched once, when the answer was good"
    );
}

#[test]
fn label_poller_with_stale_after_fails_closed_once_the_server_is_gone() {
    let (k8s, _dir, kc) = cluster();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    // One good answer whose verdict expires in 1 s, then the server is gone (every later
    // request fails): the label was "true"; 1 s expiry + 2 s --stale-after later it is "false".
    let now = SystemTime::now();
    let good = json!({"hosts": [{
        "name": "worker-1", "hardware_uuid": "uuid-1", "connection_url": "https://worker-1:1443",
        "status": "connected",
        "trust": {"verdict": "trusted", "reasons": ["ok"], "attested_at": rfc3339(now),
                  "expires_at": rfc3339(now + Duration::from_secs(1))}}]});
    let server = FakeServer::start(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            (200, good.to_string().into_bytes())
        } else {
            (
                503,
                br#"{"error":"unavailable","reason":"internal"}"#.to_vec(),
            )
        }
    });
    let mut child = server
        .cli(&[
            "label",
            "--kubeconfig",
            &kc,
            "--interval",
            "200ms",
            "--stale-after",
            "2s",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut seen = Vec::new();
    loop {
        let now = label(&k8s, "worker-1");
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now.as_deref() == Some("false") || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        vec![None, Some("true".to_string()), Some("false".to_string())]
    );
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "not before --stale-after"
    );
    let reasons =
        k8s.node("worker-1").unwrap()["metadata"]["annotations"]["nodetrust.io/reasons"].clone();
    assert!(
        reasons.as_str().unwrap().contains("--stale-after"),
        "{reasons}"
    );
}
