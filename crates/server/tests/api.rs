//! The API end to end over the router: auth and the runbook probe, input validation,
//! registration with credential activation, attestation, flavors, reports, expiry, restarts.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{gold_boot, Auth, Harness, SoftAgent};
use nodetrust_proto::b64;
use serde_json::{json, Value};

fn reasons(v: &Value) -> String {
    v["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn assert_error(status: StatusCode, v: &Value, want: StatusCode, reason: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

#[tokio::test]
async fn runbook_probe_answers_200_with_the_agent_account_and_401_otherwise() {
    let h = Harness::new().await;
    let (s, v) = h
        .call("GET", "/mtwilson/v2/tpm-endorsements", Auth::Agent, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["tpm_endorsements"].is_array());
    let (s, v) = h
        .call(
            "GET",
            "/mtwilson/v2/tpm-endorsements",
            Auth::Basic("agent", "wrong"),
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, v) = h
        .call("GET", "/mtwilson/v2/tpm-endorsements", Auth::None, None)
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, v) = h
        .call(
            "GET",
            "/mtwilson/v2/tpm-endorsements",
            Auth::Basic("nobody", "x"),
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    // The agent account may not administer.
    let (s, v) = h.call("GET", "/mtwilson/v2/hosts", Auth::Agent, None).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, _) = h.call("GET", "/healthz", Auth::None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("GET", "/readyz", Auth::None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn bad_json_unknown_fields_and_oversized_bodies_are_400_json_errors() {
    let h = Harness::new().await;
    let path = "/mtwilson/v2/host-attestations";
    let (s, v) = h
        .raw(
            "POST",
            path,
            Auth::Admin,
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_json");
    let (s, v) = h
        .call(
            "POST",
            path,
            Auth::Admin,
            Some(json!({"host_name": "a", "colour": "red"})),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_field");
    assert!(v["error"].as_str().unwrap().contains("colour"), "{v}");
    let big = json!({"host_name": "x".repeat(200 * 1024)});
    let (s, v) = h.call("POST", path, Auth::Admin, Some(big)).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "body_too_large");
    let (s, v) = h
        .raw(
            "POST",
            path,
            Auth::Admin,
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "content_type");
    let (s, v) = h
        .call("GET", "/mtwilson/v2/nothing", Auth::Admin, None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // Registration requests are validated too.
    let mut req = SoftAgent::new("n1", "u1").register_request();
    req.connection_url = "http://plain".into();
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            Auth::Agent,
            Some(serde_json::to_value(&req).unwrap()),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_connection_url");
}

#[tokio::test]
async fn registration_needs_an_endorsed_ek_and_the_activated_secret() {
    let h = Harness::new().await;
    let mut a = SoftAgent::new("node-1", "uuid-1");
    a.boot(&gold_boot("grub 2.06"));
    let agent = h.agents.add(a);
    // Not endorsed, no CA bundle: refused with the reason.
    let (s, v) = h.register(&agent).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "ek_not_endorsed");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not listed in tpm-endorsements"),
        "{v}"
    );
    h.endorse(&agent).await;
    // A wrong secret: the AK is not shown to be in the EK's TPM; nothing is pinned.
    let req = agent.lock().unwrap().register_request();
    let (s, challenge) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            Auth::Agent,
            Some(serde_json::to_value(&req).unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{challenge}");
    let id = challenge["challenge_id"].as_str().unwrap();
    let activate = format!("/mtwilson/v2/hosts/register/{id}/activate");
    let (s, v) = h
        .call(
            "POST",
            &activate,
            Auth::Agent,
            Some(json!({"secret": b64::encode(&[0u8; 32])})),
        )
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "activation_failed");
    let (s, v) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["hosts"].as_array().unwrap().len(), 0, "{v}");
    // One try per challenge.
    let (s, v) = h
        .call(
            "POST",
            &activate,
            Auth::Agent,
            Some(json!({"secret": b64::encode(&[0u8; 32])})),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // The real exchange.
    let (s, v) = h.register(&agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["host_name"], "node-1");
    assert_eq!(v["replaced"], false);
    let (_, v) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    let host = &v["hosts"][0];
    assert_eq!(host["name"], "node-1");
    assert_eq!(host["hardware_uuid"], "uuid-1");
    assert_eq!(host["trust"]["verdict"], "unknown");
    // Endorsements can be filtered and revoked; a revoked EK cannot register again.
    let (_, list) = h
        .call(
            "GET",
            "/mtwilson/v2/tpm-endorsements?hardwareUuidEqualTo=uuid-1",
            Auth::Agent,
            None,
        )
        .await;
    let list = list["tpm_endorsements"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    let (_, other) = h
        .call(
            "GET",
            "/mtwilson/v2/tpm-endorsements?hardwareUuidEqualTo=uuid-2",
            Auth::Agent,
            None,
        )
        .await;
    assert_eq!(other["tpm_endorsements"].as_array().unwrap().len(), 0);
    let eid = list[0]["id"].as_str().unwrap();
    let (s, _) = h
        .call(
            "DELETE",
            &format!("/mtwilson/v2/tpm-endorsements/{eid}"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.register(&agent).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "ek_not_endorsed");
}

#[tokio::test]
async fn gold_flavor_trusts_then_a_changed_boot_loader_is_untrusted_with_pcr_4_named() {
    let h = Harness::new().await;
    let gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    // No flavor yet: untrusted, saying what to do.
    let (s, r) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["verdict"], "untrusted");
    assert!(reasons(&r).contains("no PLATFORM flavor is defined"), "{r}");
    let (s, f) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert_eq!(f["flavors"].as_array().unwrap().len(), 2);
    let (s, r) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["verdict"], "trusted", "{r}");
    let host = h.host("node-1").await;
    assert_eq!(host["status"], "connected");
    assert_eq!(host["trust"]["verdict"], "trusted");
    // The node reboots into another boot loader.
    node.lock().unwrap().boot(&gold_boot("grub 2.12 unsigned"));
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "untrusted", "{r}");
    let text = reasons(&r);
    assert!(
        text.contains("PCR 4: boot application \\EFI\\debian\\grubx64.efi changed"),
        "{text}"
    );
    // The gold host is still trusted.
    let (_, r) = h.attest("gold").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    drop(gold);
    // Reports: history, latest, signed with the published key.
    let (s, v) = h
        .call(
            "GET",
            "/mtwilson/v2/reports?host_name=node-1",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["reports"].as_array().unwrap().len(), 3);
    let history = v["reports"].as_array().unwrap().clone();
    let (_, v) = h
        .call(
            "GET",
            "/mtwilson/v2/reports?host_name=node-1&latest=true",
            Auth::Admin,
            None,
        )
        .await;
    let latest = &v["reports"][0];
    assert_eq!(v["reports"].as_array().unwrap().len(), 1);
    assert_eq!(latest["verdict"], "untrusted");
    assert_eq!(latest["host_name"], "node-1");
    let (s, key) = h
        .call("GET", "/mtwilson/v2/signing-key", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let payload = common::signed_payload(latest, &key["jwk"]);
    assert_eq!(payload["verdict"], "untrusted");
    assert_eq!(payload["host_name"], "node-1");
    // The signature covers what the report says, and the hardware UUID the host had.
    assert_eq!(payload["hardware_uuid"], "uuid-1");
    assert_eq!(payload["reasons"], latest["reasons"]);
    assert_eq!(payload["created"], latest["created"]);
    assert_eq!(payload["expires"], latest["expires"]);
    let stored = h.state.store.reports(Some("node-1"), 10).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(
        payload["iat"].as_i64(),
        Some(stored[0].created / 1000),
        "{payload}"
    );
    assert_eq!(payload["exp"].as_i64(), Some(stored[0].expires / 1000));
    // Reports are stored unsigned and signed when read: every one of the history verifies.
    assert!(
        stored.iter().all(|r| r.signed_report.is_empty()),
        "{stored:?}"
    );
    assert!(
        stored.iter().all(|r| r.hardware_uuid == "uuid-1"),
        "{stored:?}"
    );
    for (r, row) in history.iter().zip(&stored) {
        let p = common::signed_payload(r, &key["jwk"]);
        assert_eq!(p["verdict"], row.verdict.as_str());
        assert_eq!(p["iat"].as_i64(), Some(row.created / 1000));
    }
    // Metrics count what happened.
    let (s, m) = h.call("GET", "/metrics", Auth::None, None).await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap();
    assert!(
        m.contains("nodetrust_attestations_total{result=\"trusted\",reason=\"ok\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("nodetrust_hosts{verdict=\"untrusted\"} 1"),
        "{m}"
    );
    // Two activations (gold, node-1), each decided in a shared transaction.
    assert!(
        m.contains("\nnodetrust_registrations_committed_total 2\n"),
        "{m}"
    );
}

#[tokio::test]
async fn unreachable_agent_is_unreachable_then_unknown_never_untrusted() {
    let h = Harness::new().await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, _) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    node.lock().unwrap().down = true;
    let (s, v) = h.attest("node-1").await;
    assert_error(s, &v, StatusCode::BAD_GATEWAY, "agent_error");
    let host = h.host("node-1").await;
    assert_eq!(host["status"], "unreachable");
    assert_eq!(
        host["trust"]["verdict"], "trusted",
        "still within validity: {host}"
    );
    h.clock.advance(Duration::from_secs(601));
    let host = h.host("node-1").await;
    assert_eq!(host["trust"]["verdict"], "unknown", "{host}");
    assert!(reasons(&host["trust"]).contains("expired"), "{host}");
    assert!(reasons(&host["trust"]).contains("unreachable"), "{host}");
    let (s, _) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    let (_, v) = h
        .call(
            "GET",
            "/mtwilson/v2/reports?host_name=node-1",
            Auth::Admin,
            None,
        )
        .await;
    let verdicts: Vec<&str> = v["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["unknown", "trusted"]);
    // Back up: trusted again.
    node.lock().unwrap().down = false;
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    assert_eq!(h.host("node-1").await["status"], "connected");
}

#[tokio::test]
async fn replayed_quote_swapped_ak_and_counters_going_backwards_are_untrusted() {
    let h = Harness::new().await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    h.call(
        "POST",
        "/mtwilson/v2/flavors",
        Auth::Admin,
        Some(json!({"from_host": "gold"})),
    )
    .await;
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    let old = node.lock().unwrap().last.clone().unwrap();
    assert!(old.aik.is_some());
    // Trusted again: the request names the pinned AK, and the agent leaves its AK out.
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    assert_eq!(node.lock().unwrap().last.as_ref().unwrap().aik, None);
    // Another AK signs: its Name is not the one named, so the agent presents it, and the
    // pinned AK decides.
    node.lock().unwrap().tpm.replace_ak().unwrap();
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "untrusted");
    let text = reasons(&r);
    assert!(text.contains("bad signature"), "{text}");
    assert!(text.contains("different AK than the one pinned"), "{text}");
    // A captured old answer (signed by the pinned AK), replayed.
    node.lock().unwrap().replay = Some(old);
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "untrusted");
    assert!(reasons(&r).contains("nonce mismatch"), "{r}");
    node.lock().unwrap().replay = None;
    // A different TPM whose counters are behind the last seen ones.
    let node2 = h.enrol("node-2", "uuid-2", &gold_boot("grub 2.06")).await;
    node2.lock().unwrap().tpm.set_counters(5, 3);
    let (_, r) = h.attest("node-2").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    node2.lock().unwrap().tpm.set_counters(5, 1);
    let (_, r) = h.attest("node-2").await;
    assert!(reasons(&r).contains("restartCount went backwards"), "{r}");
    node2.lock().unwrap().tpm.set_counters(4, 9);
    let (_, r) = h.attest("node-2").await;
    assert!(reasons(&r).contains("resetCount went backwards"), "{r}");
    // A reboot (resetCount up) is fine.
    node2.lock().unwrap().tpm.set_counters(6, 0);
    let (_, r) = h.attest("node-2").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
}

#[tokio::test]
async fn reimaged_node_re_registers_with_a_new_ak_and_the_same_hardware_uuid() {
    let h = Harness::new().await;
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    // Reimaged: a new AK (same EK), registered again.
    node.lock().unwrap().tpm.replace_ak().unwrap();
    let (s, v) = h.register(&node).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["replaced"], true);
    let (_, v) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);
    // The new AK is the pinned one: quotes verify.
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    h.call(
        "POST",
        "/mtwilson/v2/flavors",
        Auth::Admin,
        Some(json!({"from_host": "gold"})),
    )
    .await;
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    // Another machine may not take the name.
    let mut other = SoftAgent::new("node-1", "uuid-other");
    other.url = "https://other.test:1443".into();
    let other = h.agents.add(other);
    h.endorse(&other).await;
    let (s, v) = h.register(&other).await;
    assert_error(s, &v, StatusCode::CONFLICT, "identity_conflict");
    // Delete, then the name is free.
    let (s, _) = h
        .call("DELETE", "/mtwilson/v2/hosts/node-1", Auth::Admin, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.register(&other).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn restart_on_the_same_database_loses_nothing() {
    let mut h = Harness::new().await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    h.call(
        "POST",
        "/mtwilson/v2/flavors",
        Auth::Admin,
        Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS", "HOST_UNIQUE"]})),
    )
    .await;
    let (_, r) = h.attest("gold").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
    let (_, key_before) = h
        .call("GET", "/mtwilson/v2/signing-key", Auth::None, None)
        .await;
    let (_, hosts_before) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    let (_, flavors_before) = h
        .call("GET", "/mtwilson/v2/flavors", Auth::Admin, None)
        .await;
    let (_, reports_before) = h
        .call("GET", "/mtwilson/v2/reports", Auth::Admin, None)
        .await;
    h.restart().await;
    let (_, key_after) = h
        .call("GET", "/mtwilson/v2/signing-key", Auth::None, None)
        .await;
    let (_, hosts_after) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    let (_, flavors_after) = h
        .call("GET", "/mtwilson/v2/flavors", Auth::Admin, None)
        .await;
    let (_, reports_after) = h
        .call("GET", "/mtwilson/v2/reports", Auth::Admin, None)
        .await;
    assert_eq!(key_before, key_after);
    assert_eq!(hosts_before, hosts_after);
    assert_eq!(flavors_before, flavors_after);
    assert_eq!(flavors_after["flavors"].as_array().unwrap().len(), 3);
    // The same reports; each read signs them anew (ES256 signatures are randomized), and every
    // signature verifies with the key kept.
    let unsigned = |v: &Value| common::unsigned_reports(v, &key_after["jwk"]);
    assert_eq!(unsigned(&reports_before), unsigned(&reports_after));
    assert!(!unsigned(&reports_after).is_empty());
    let (_, r) = h.attest("gold").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
}

#[tokio::test]
async fn flavors_can_be_created_listed_and_deleted_and_bad_ones_are_refused() {
    let h = Harness::new().await;
    let flavor = json!({"label": "os-by-hand", "part": "OS", "pcrs": [{"bank": "sha256", "index": 4, "value": "00".repeat(32)}]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(flavor))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["flavors"][0]["id"].as_str().unwrap().to_string();
    let bad = json!({"label": "x", "part": "OS", "pcrs": [{"bank": "sha256", "index": 0, "value": "00".repeat(32)}]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(bad))
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_flavor");
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "nope"})),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "x", "parts": ["BIOS"]})),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_part");
    let (_, v) = h
        .call("GET", "/mtwilson/v2/flavors", Auth::Admin, None)
        .await;
    assert_eq!(v["flavors"].as_array().unwrap().len(), 1);
    let (s, _) = h
        .call(
            "DELETE",
            &format!("/mtwilson/v2/flavors/{id}"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .call(
            "DELETE",
            &format!("/mtwilson/v2/flavors/{id}"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A trusted report of `host-{i:04}` made at `created`, whose reason names both.
fn report_of(i: usize, created: i64) -> nodetrust_server::store::ReportRow {
    let name = format!("host-{i:04}");
    nodetrust_server::store::ReportRow {
        id: nodetrust_server::store::new_id(),
        reasons: json!([format!("{name} at {created}")]).to_string(),
        host_name: name,
        verdict: nodetrust_proto::trust::Trust::Trusted,
        created,
        expires: created + 600_000,
        hardware_uuid: format!("uuid-{i}"),
        signed_report: String::new(),
    }
}

/// `host-{i:04}`, registered straight into the store, with one report.
async fn host_with_a_report(h: &Harness, i: usize, created: i64) {
    let row = common::host_row(&format!("host-{i:04}"), &format!("uuid-{i}"), created);
    let replaced = h.state.store.register_host(&row, created).await.unwrap();
    assert!(!replaced, "{} is new", row.name);
    let report = report_of(i, created);
    h.state
        .store
        .save_report(&report, true, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_latest_report_of_every_host_is_streamed_a_page_at_a_time() {
    let h = Harness::new().await;
    let now = nodetrust_server::store::millis(std::time::SystemTime::now());
    let (_, key) = h
        .call("GET", "/mtwilson/v2/signing-key", Auth::None, None)
        .await;
    // The server pages by 1,000 hosts: exactly one full page (then an empty one), then a
    // second page of one host.
    for i in 0..1000 {
        host_with_a_report(&h, i, now).await;
    }
    let check = |v: Value, hosts: usize, newer: Option<usize>| {
        let reports = v["reports"].as_array().unwrap();
        assert_eq!(reports.len(), hosts);
        for (i, r) in reports.iter().enumerate() {
            let name = format!("host-{i:04}");
            assert_eq!(r["host_name"], name.as_str(), "by host name");
            let at = if newer == Some(i) { now + 1 } else { now };
            let p = common::signed_payload(r, &key["jwk"]);
            assert_eq!(p["reasons"], json!([format!("{name} at {at}")]), "{p}");
            assert_eq!(p["reasons"], r["reasons"]);
        }
    };
    let latest = || h.call("GET", "/mtwilson/v2/reports?latest=true", Auth::Admin, None);
    let (s, v) = latest().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check(v, 1000, None);
    host_with_a_report(&h, 1000, now).await;
    // A newer report of a host in the first page replaces its older one.
    let newer = report_of(500, now + 1);
    h.state.store.save_report(&newer, true, None).await.unwrap();
    let (s, v) = latest().await;
    assert_eq!(s, StatusCode::OK, "{v}");
    check(v, 1001, Some(500));
    // A host's own latest report is the same one.
    let (_, one) = h
        .call(
            "GET",
            "/mtwilson/v2/reports?host_name=host-0500&latest=true",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(
        one["reports"][0]["reasons"],
        json!([format!("host-0500 at {}", now + 1)])
    );
}

#[tokio::test]
async fn a_long_report_list_is_signed_report_by_report() {
    let h = Harness::new().await;
    let _node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let now = nodetrust_server::store::millis(std::time::SystemTime::now());
    // More than the API signs on an async worker: this list is signed on the blocking pool.
    for i in 0..150 {
        let report = nodetrust_server::store::ReportRow {
            id: nodetrust_server::store::new_id(),
            host_name: "node-1".into(),
            verdict: nodetrust_proto::trust::Trust::Untrusted,
            reasons: json!([format!("reason {i}")]).to_string(),
            created: now - 1000 * i,
            expires: now + 600_000,
            hardware_uuid: "uuid-1".into(),
            signed_report: String::new(),
        };
        h.state
            .store
            .save_report(&report, true, None)
            .await
            .unwrap();
    }
    let (s, v) = h
        .call(
            "GET",
            "/mtwilson/v2/reports?host_name=node-1&limit=1000",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, key) = h
        .call("GET", "/mtwilson/v2/signing-key", Auth::None, None)
        .await;
    let reports = v["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 150);
    for (i, r) in reports.iter().enumerate() {
        let p = common::signed_payload(r, &key["jwk"]);
        // Newest first, each signature over its own report.
        assert_eq!(p["reasons"], json!([format!("reason {i}")]), "{p}");
        assert_eq!(p["reasons"], r["reasons"]);
        assert_eq!(p["hardware_uuid"], "uuid-1");
    }
}
