//! Push mode through the API, in process: a host registered with `mode: push` is stored without
//! an address and is never attested on the server's initiative; its agent's challenge and
//! evidence go through the same verification and appraisal as a pull attestation (trusted with
//! the gold flavor; a quote of another nonce is untrusted); one open challenge per host (asking
//! again returns it), evidence for another nonce or a second time is refused; pull hosts and
//! unknown hosts get no challenge.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use axum::http::StatusCode;
use common::{gold_boot, Auth, Harness, SoftAgent};
use nodetrust_proto::agent::QuoteRequest;
use nodetrust_proto::b64;
use nodetrust_proto::push::AgentMode;
use nodetrust_server::agent_client::{AgentConnector as _, AgentTarget};
use serde_json::{json, Value};

/// The soft agent's answer to a quote request, as it would give it over the network.
async fn quote_of(
    h: &Harness,
    agent: &std::sync::Arc<std::sync::Mutex<SoftAgent>>,
    req: &QuoteRequest,
) -> nodetrust_proto::agent::QuoteResponse {
    let target = {
        let a = agent.lock().unwrap();
        AgentTarget {
            host_name: a.host_name.clone(),
            url: a.url.clone(),
            tls_cert_sha256: String::new(),
        }
    };
    h.agents.quote(&target, req).await.unwrap()
}

async fn challenge(h: &Harness, host: &str) -> (StatusCode, Value) {
    h.call(
        "POST",
        "/mtwilson/v2/push/challenge",
        Auth::Agent,
        Some(json!({ "host_name": host })),
    )
    .await
}

async fn evidence(h: &Harness, host: &str, nonce: &[u8], evidence: Value) -> (StatusCode, Value) {
    h.call(
        "POST",
        "/mtwilson/v2/push/evidence",
        Auth::Agent,
        Some(json!({ "host_name": host, "nonce": b64::encode(nonce), "evidence": evidence })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_host_is_attested_from_the_evidence_its_agent_posts() {
    let h = Harness::new().await;
    let _gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // push-1 registers in push mode.
    let mut a = SoftAgent::new("push-1", "uuid-push-1");
    a.boot(&gold_boot("grub 2.06"));
    let agent = h.agents.add(a);
    h.endorse(&agent).await;
    let mut req = agent.lock().unwrap().register_request();
    req.mode = AgentMode::Push;
    let (s, ch) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            Auth::Agent,
            Some(serde_json::to_value(&req).unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{ch}");
    let (path, body) = common::activation(&agent, &ch);
    let (s, v) = h.call("POST", &path, Auth::Agent, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let host = h.host("push-1").await;
    assert_eq!(host["connection_url"], "push:", "{host}");

    // The server does not attest it on its own initiative.
    let (s, v) = h.attest("push-1").await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::CONFLICT, Some("push_host")),
        "{v}"
    );

    // Challenge, quote, evidence: trusted, and when to push next.
    let (s, c) = challenge(&h, "push-1").await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let quote: QuoteRequest = serde_json::from_value(c["quote"].clone()).unwrap();
    assert_eq!(quote.nonce.len(), 32);
    assert!(quote.pcrs.contains(&4), "{c}");
    // Asking again while it is open: the same challenge.
    let (s, again) = challenge(&h, "push-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["quote"], c["quote"]);
    let answer = quote_of(&h, &agent, &quote).await;
    let answer = serde_json::to_value(&answer).unwrap();
    // Evidence for another nonce is refused, and the challenge stays open.
    let (s, v) = evidence(&h, "push-1", &[7u8; 32], answer.clone()).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::CONFLICT, Some("no_open_challenge")),
        "{v}"
    );
    let (s, r) = evidence(&h, "push-1", &quote.nonce, answer.clone()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["report"]["verdict"], "trusted", "{r}");
    assert_eq!(r["report"]["host_name"], "push-1");
    let interval = h.state.settings.attest_interval.as_millis() as u64;
    let next = r["next_push_in_ms"].as_u64().unwrap();
    assert!(
        (interval..=interval + interval / 10).contains(&next),
        "{next} ms"
    );
    assert_eq!(h.host("push-1").await["trust"]["verdict"], "trusted");
    // The same evidence again: answered already.
    let (s, v) = evidence(&h, "push-1", &quote.nonce, answer).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::CONFLICT, Some("no_open_challenge")),
        "{v}"
    );

    // A quote of another nonce posted as the answer: verified like a pull quote, untrusted.
    let (s, c) = challenge(&h, "push-1").await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let quote: QuoteRequest = serde_json::from_value(c["quote"].clone()).unwrap();
    let mut other = quote.clone();
    other.nonce = vec![9u8; 32];
    let stale = quote_of(&h, &agent, &other).await;
    let (s, r) = evidence(
        &h,
        "push-1",
        &quote.nonce,
        serde_json::to_value(&stale).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["report"]["verdict"], "untrusted", "{r}");
    assert!(r["report"]["reasons"].to_string().contains("nonce"), "{r}");

    // Pull hosts and unknown hosts get no challenge.
    let (s, v) = challenge(&h, "gold").await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::CONFLICT, Some("not_push_host")),
        "{v}"
    );
    let (s, _) = challenge(&h, "nobody").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Without the agent account: refused before the body is read.
    let (s, _) = h
        .call(
            "POST",
            "/mtwilson/v2/push/challenge",
            Auth::None,
            Some(json!({ "host_name": "push-1" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
