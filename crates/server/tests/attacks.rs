//! Attacks on the Trust Server and what stops them: identity takeover at registration, login
//! floods and brute force, an agent account filling the disk (challenges, host facts, agent
//! events), requests built to slip past validation, and the accounts API's least privilege;
//! a compromised agent's forged evidence (flipped or forged signatures, a quote selection
//! that differs from the PCR values sent, an edited event log); every route without
//! credentials and with each wrong role; deeply nested and oversized bodies on every route.
//! docs/SECURITY.md lists these with the attack tests kept in other files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use common::{activation, gold_boot, Auth, Harness, SoftAgent, ADMIN, AGENT};
use http_body_util::BodyExt;
use nodetrust_proto::b64;
use nodetrust_server::auth::AuthLimits;
use nodetrust_tpm_wire::HashAlg;
use serde_json::{json, Value};
use tower::ServiceExt as _;

fn assert_error(status: StatusCode, v: &Value, want: StatusCode, reason: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

/// One request with full control: credentials, client address, raw body; the answer's headers.
async fn send(
    h: &Harness,
    method: &str,
    path: &str,
    creds: Option<(&str, &str)>,
    peer: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some((u, p)) = creds {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        b = b.header("authorization", format!("Basic {token}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let mut req = b.body(Body::from(body.unwrap_or_default())).unwrap();
    if let Some(p) = peer {
        let addr: SocketAddr = p.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

/// Endorses an agent's EK for any machine (an EK any manufacturer CA would accept).
async fn endorse_anywhere(h: &Harness, agent: &Arc<Mutex<SoftAgent>>) {
    let ek = b64::encode(&agent.lock().unwrap().tpm.ek_public().tpm2b_bytes());
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            Auth::Admin,
            Some(json!({ "ek_public": ek })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn stored_ek(h: &Harness, name: &str) -> String {
    h.state.store.host(name).await.unwrap().unwrap().ek_public
}

fn ek_of(agent: &Arc<Mutex<SoftAgent>>) -> String {
    b64::encode(&agent.lock().unwrap().tpm.ek_public().tpm2b_bytes())
}

// ---- identity ----

async fn identity_takeover_same_uuid_and_name_refused_on(h: Harness) {
    let victim = h.enrol("victim", "uuid-v", &gold_boot("grub 2.06")).await;
    // Another TPM whose EK is accepted (here: endorsed for any machine) claims the victim's
    // hardware UUID and host name.
    let mut a = SoftAgent::new("victim", "uuid-v");
    a.url = "https://attacker.test:1443".into();
    let attacker = h.agents.add(a);
    endorse_anywhere(&h, &attacker).await;
    let (s, v) = h.register(&attacker).await;
    assert_error(s, &v, StatusCode::CONFLICT, "identity_conflict");
    let msg = v["error"].as_str().unwrap();
    for needle in [
        "victim",
        "uuid-v",
        "another EK",
        "tpm-endorsements",
        "hardware_uuid",
        "delete host",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from {msg}");
    }
    // The victim keeps its registration, EK and agent URL.
    assert_eq!(stored_ek(&h, "victim").await, ek_of(&victim));
    assert_eq!(
        h.host("victim").await["connection_url"],
        "https://victim.test:1443"
    );
    assert!(h.state.metrics.registrations_refused("identity_conflict") >= 1);
    let (_, metrics) = h.call("GET", "/metrics", Auth::None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("nodetrust_registrations_refused_total{reason=\"identity_conflict\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn identity_takeover_same_uuid_and_name_refused() {
    identity_takeover_same_uuid_and_name_refused_on(Harness::new().await).await;
}

#[tokio::test]
async fn identity_takeover_same_uuid_and_name_refused_postgres() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL variant skipped");
        return;
    };
    identity_takeover_same_uuid_and_name_refused_on(
        Harness::with_db(tempfile::tempdir().unwrap(), db).await,
    )
    .await;
}

#[tokio::test]
async fn identity_takeover_new_name_same_uuid_refused() {
    let h = Harness::new().await;
    let victim = h.enrol("victim", "uuid-v", &gold_boot("grub 2.06")).await;
    let attacker = h.agents.add(SoftAgent::new("other", "uuid-v"));
    endorse_anywhere(&h, &attacker).await;
    let (s, v) = h.register(&attacker).await;
    assert_error(s, &v, StatusCode::CONFLICT, "identity_conflict");
    assert!(v["error"].as_str().unwrap().contains("uuid-v"), "{v}");
    // The same name with another UUID and EK is refused too.
    let squatter = h.agents.add(SoftAgent::new("victim", "uuid-s"));
    endorse_anywhere(&h, &squatter).await;
    let (s, v) = h.register(&squatter).await;
    assert_error(s, &v, StatusCode::CONFLICT, "identity_conflict");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("host name \"victim\""),
        "{v}"
    );
    assert_eq!(stored_ek(&h, "victim").await, ek_of(&victim));
    assert!(h.state.store.host("other").await.unwrap().is_none());
}

#[tokio::test]
async fn identity_takeover_raced_past_register_refused_at_activate() {
    let h = Harness::new().await;
    // The attacker asks for a challenge while the UUID is still free...
    let attacker = h.agents.add(SoftAgent::new("victim", "uuid-v"));
    endorse_anywhere(&h, &attacker).await;
    let (s, challenge) = h.challenge(&attacker).await;
    assert_eq!(s, StatusCode::OK, "{challenge}");
    // ...the real machine registers...
    let victim = h.enrol("victim", "uuid-v", &gold_boot("grub 2.06")).await;
    // ...and the attacker's activation, checked again with the insert, is refused.
    let (path, body) = activation(&attacker, &challenge);
    let (s, v) = h.call("POST", &path, Auth::Agent, Some(body.clone())).await;
    assert_error(s, &v, StatusCode::CONFLICT, "identity_conflict");
    assert_eq!(stored_ek(&h, "victim").await, ek_of(&victim));
    // The refused activation used its challenge up: sending it again finds nothing.
    let (s, v) = h.call("POST", &path, Auth::Agent, Some(body)).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_challenge_registers_once_even_when_activated_twice_at_once() {
    let h = Harness::new().await;
    let agent = h.agents.add(SoftAgent::new("node-1", "uuid-1"));
    h.endorse(&agent).await;
    let (s, challenge) = h.challenge(&agent).await;
    assert_eq!(s, StatusCode::OK, "{challenge}");
    let (path, body) = activation(&agent, &challenge);
    let sends = (0..8).map(|_| h.call("POST", &path, Auth::Agent, Some(body.clone())));
    let answers = futures_util::future::join_all(sends).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let gone = answers
        .iter()
        .filter(|(s, v)| *s == StatusCode::NOT_FOUND && v["reason"] == "not_found")
        .count();
    assert_eq!((ok, gone), (1, 7), "{answers:?}");
    let (_, v) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1, "{v}");
    // And once done, a replay of it finds nothing.
    let (s, v) = h.call("POST", &path, Auth::Agent, Some(body)).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn same_ek_new_uuid_refused() {
    let h = Harness::new().await;
    let agent = h.enrol("n1", "uuid-1", &gold_boot("grub 2.06")).await;
    endorse_anywhere(&h, &agent).await;
    {
        let mut a = agent.lock().unwrap();
        a.host_name = "n2".into();
        a.hardware_uuid = "uuid-2".into();
    }
    let (s, v) = h.register(&agent).await;
    assert_error(s, &v, StatusCode::CONFLICT, "identity_conflict");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("uuid-1") && msg.contains("uuid-2") && msg.contains("n1"),
        "{msg}"
    );
    assert!(h.state.store.host("n2").await.unwrap().is_none());
    assert!(h.state.store.host("n1").await.unwrap().is_some());
}

#[tokio::test]
async fn tpm_replaced_with_endorsement_allowed() {
    let h = Harness::new().await;
    h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    // The mainboard's TPM is replaced: a new EK for the same machine.
    let mut a = SoftAgent::new("node-1", "uuid-1");
    a.boot(&gold_boot("grub 2.06"));
    let replaced = h.agents.add(a);
    endorse_anywhere(&h, &replaced).await;
    // An EK accepted for any machine is not enough to take the machine's identity...
    let (s, v) = h.register(&replaced).await;
    assert_error(s, &v, StatusCode::CONFLICT, "identity_conflict");
    // ...an admin's endorsement of the new EK for this hardware UUID is.
    h.endorse(&replaced).await;
    let (s, v) = h.register(&replaced).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["replaced"], true, "{v}");
    assert_eq!(stored_ek(&h, "node-1").await, ek_of(&replaced));
}

#[tokio::test]
async fn reimaged_same_ek_new_ak_reregisters() {
    let h = Harness::new().await;
    let agent = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let old_ak = h
        .state
        .store
        .host("node-1")
        .await
        .unwrap()
        .unwrap()
        .ak_public;
    agent.lock().unwrap().tpm.replace_ak().unwrap();
    let (s, v) = h.register(&agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["replaced"], true, "{v}");
    let row = h.state.store.host("node-1").await.unwrap().unwrap();
    assert_ne!(row.ak_public, old_ak);
    assert_eq!(row.ek_public, ek_of(&agent));
}

// ---- logins ----

fn small_limits() -> AuthLimits {
    AuthLimits {
        max_concurrent: 2,
        max_waiting: 8,
        ..AuthLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_flood_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    let h = Arc::new(Harness::with_config(dir, db, |c| c.auth_limits = small_limits()).await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            // Unknown users: the dummy check runs under the same bound.
            let user = format!("nobody-{i}");
            send(
                &h,
                "GET",
                "/mtwilson/v2/hosts",
                Some((&user, "wrong")),
                None,
                None,
            )
            .await
        }));
    }
    let (mut refused, mut unauthorized) = (0, 0);
    for t in tasks {
        let (s, headers, v) = t.await.unwrap();
        match s {
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(v["reason"], "busy", "{v}");
                let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(after >= 1);
            }
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(refused > 0, "no 429 among 200 parallel logins");
    assert!(unauthorized > 0);
    let peak = h.state.auth.peak_concurrent_checks();
    assert!(
        (1..=2).contains(&peak),
        "{peak} argon2 checks ran at once; the bound is 2"
    );
    assert_eq!(h.state.auth.checks_total(), unauthorized);
    // The flood is over: a right password works.
    let (s, _) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn brute_force_per_account_and_per_address_limited() {
    let h = Harness::new().await;
    let limits = h.state.auth.limits().clone();
    // Per account: wrong passwords for admin from unknown addresses.
    for _ in 0..limits.per_account {
        let (s, _, _) = send(
            &h,
            "GET",
            "/mtwilson/v2/hosts",
            Some((ADMIN.0, "guess")),
            None,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let checks = h.state.auth.checks_total();
    // Now even the right password is refused, at once, without argon2.
    let (s, headers, v) = send(&h, "GET", "/mtwilson/v2/hosts", Some(ADMIN), None, None).await;
    assert_error(s, &v, StatusCode::TOO_MANY_REQUESTS, "too_many_failures");
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=limits.first_backoff.as_secs()).contains(&after),
        "{after}"
    );
    assert!(v["error"].as_str().unwrap().contains("admin"), "{v}");
    assert!(!v["error"].as_str().unwrap().contains("guess"), "{v}");
    assert_eq!(
        h.state.auth.checks_total(),
        checks,
        "argon2 ran for a refused login"
    );
    // Other accounts are not affected.
    let (s, _, _) = send(
        &h,
        "GET",
        "/mtwilson/v2/tpm-endorsements",
        Some(AGENT),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // After the back-off (on the injected clock) the right password works again.
    h.clock
        .advance(limits.first_backoff + std::time::Duration::from_millis(200));
    let (s, _, v) = send(&h, "GET", "/mtwilson/v2/hosts", Some(ADMIN), None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Per address: one client spraying user names.
    for i in 0..limits.per_address {
        let user = format!("spray-{i}");
        let (s, _, _) = send(
            &h,
            "GET",
            "/mtwilson/v2/hosts",
            Some((&user, "x")),
            Some("10.0.0.1:4000"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, headers, v) = send(
        &h,
        "GET",
        "/mtwilson/v2/tpm-endorsements",
        Some(AGENT),
        Some("10.0.0.1:4001"),
        None,
    )
    .await;
    assert_error(s, &v, StatusCode::TOO_MANY_REQUESTS, "too_many_failures");
    assert!(headers.contains_key("retry-after"));
    assert!(v["error"].as_str().unwrap().contains("10.0.0.1"), "{v}");
    // Another address is served.
    let (s, _, _) = send(
        &h,
        "GET",
        "/mtwilson/v2/tpm-endorsements",
        Some(AGENT),
        Some("10.0.0.2:4000"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, metrics) = h.call("GET", "/metrics", Auth::None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("nodetrust_auth_failures_total{reason=\"rate_limited\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodetrust_auth_failures_total{reason=\"bad_password\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn cached_login_expires_and_runs_argon2_again() {
    let h = Harness::new().await;
    let ok = |s: StatusCode| assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(&h, "GET", "/mtwilson/v2/hosts", Some(ADMIN), None, None).await;
    ok(s);
    let first = h.state.auth.checks_total();
    let (s, _, _) = send(&h, "GET", "/mtwilson/v2/hosts", Some(ADMIN), None, None).await;
    ok(s);
    assert_eq!(
        h.state.auth.checks_total(),
        first,
        "a cached login ran argon2"
    );
    h.clock
        .advance(nodetrust_server::auth::CACHE_TTL + std::time::Duration::from_secs(1));
    let (s, _, _) = send(&h, "GET", "/mtwilson/v2/hosts", Some(ADMIN), None, None).await;
    ok(s);
    assert_eq!(
        h.state.auth.checks_total(),
        first + 1,
        "a login older than the cache's lifetime was not checked again"
    );
}

/// A fleet of push agents shares one account: when its cached success expires, every request
/// in flight at that moment misses the cache together. They share one check (one argon2 run),
/// not one each up to the concurrency bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_expiry_under_a_burst_runs_one_shared_check() {
    let h = Arc::new(Harness::new().await);
    let (s, _, _) = send(
        &h,
        "GET",
        "/mtwilson/v2/tpm-endorsements",
        Some(AGENT),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let first = h.state.auth.checks_total();
    h.clock
        .advance(nodetrust_server::auth::CACHE_TTL + std::time::Duration::from_secs(1));
    let burst = |password: &'static str| {
        (0..64)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move {
                    send(
                        &h,
                        "GET",
                        "/mtwilson/v2/tpm-endorsements",
                        Some((AGENT.0, password)),
                        None,
                        None,
                    )
                    .await
                    .0
                })
            })
            .collect::<Vec<_>>()
    };
    for t in burst(AGENT.1) {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        h.state.auth.checks_total(),
        first + 1,
        "64 requests with the same expired credentials ran more than one check"
    );
    // The same wrong password from many requests at once: one check too, and each request
    // still answered 401 (or 429 once the account's failures pass its limit).
    let before = h.state.auth.checks_total();
    for t in burst("wrong-password") {
        let s = t.await.unwrap();
        assert!(
            s == StatusCode::UNAUTHORIZED || s == StatusCode::TOO_MANY_REQUESTS,
            "{s}"
        );
    }
    let ran = h.state.auth.checks_total() - before;
    assert!(
        (1..=2).contains(&ran),
        "{ran} checks for one wrong password sent 64 times at once"
    );
}

// ---- the agent account filling the disk ----

#[tokio::test]
async fn challenge_flood_bounded() {
    let h = Harness::new().await;
    let agent = h.agents.add(SoftAgent::new("node-1", "uuid-1"));
    h.endorse(&agent).await;
    let req = serde_json::to_value(agent.lock().unwrap().register_request()).unwrap();
    for _ in 0..10 {
        let (s, v) = h
            .call(
                "POST",
                "/mtwilson/v2/hosts/register",
                Auth::Agent,
                Some(req.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let now = h.state.now_ms();
    let (mine, all) = h.state.store.open_challenges("uuid-1", now).await.unwrap();
    assert_eq!(
        mine,
        nodetrust_server::store::MAX_CHALLENGES_PER_UUID,
        "a UUID keeps a bounded number of open challenges"
    );
    assert_eq!(all, mine);
    // The newest challenge still works (the oldest were replaced).
    let (s, v) = h.register(&agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // In all: fill the table to its bound (many machines), then one more is refused by a
    // server that counts them (a fresh one: a server that counted lately may still issue
    // within its room, `store::CHALLENGE_ROOM`, see the store's tests).
    let h = Harness::new().await;
    let now = h.state.now_ms();
    let file = format!("sqlite://{}/server.db", h.dir.path().display());
    common::fill_challenges(&file, now + 600_000).await;
    let other = h.agents.add(SoftAgent::new("node-2", "uuid-2"));
    h.endorse(&other).await;
    let req = serde_json::to_value(other.lock().unwrap().register_request()).unwrap();
    let (s, headers, v) = send(
        &h,
        "POST",
        "/mtwilson/v2/hosts/register",
        Some(AGENT),
        None,
        Some(serde_json::to_vec(&req).unwrap()),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_challenges",
    );
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn oversized_host_facts_refused() {
    let h = Harness::new().await;
    let agent = h.agents.add(SoftAgent::new("node-1", "uuid-1"));
    h.endorse(&agent).await;
    let base = agent.lock().unwrap().register_request();
    let post = |v: Value| {
        let h = &h;
        async move {
            h.call("POST", "/mtwilson/v2/hosts/register", Auth::Agent, Some(v))
                .await
        }
    };
    let mut r = base.clone();
    r.host.os_name = "x".repeat(4000);
    let (s, v) = post(serde_json::to_value(&r).unwrap()).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "host_facts_too_large");
    let mut r = base.clone();
    r.host.pcr_banks = vec!["SHA256".into(); 500];
    let (s, v) = post(serde_json::to_value(&r).unwrap()).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "host_facts_too_large");
    // Unknown fields inside `host` are refused, not stored.
    let mut v = serde_json::to_value(&base).unwrap();
    v["host"]["payload"] = json!("y".repeat(1000));
    let (s, v) = post(v).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_field");
    assert!(v["error"].as_str().unwrap().contains("payload"), "{v}");
    // Nothing was stored; the well-formed request registers.
    let now = h.state.now_ms();
    assert_eq!(
        h.state
            .store
            .open_challenges("uuid-1", now)
            .await
            .unwrap()
            .1,
        0
    );
    let (s, v) = h.register(&agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn agent_event_flood_coalesced() {
    let h = Harness::new().await;
    h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let ev = json!({"host_name": "node-1", "hardware_uuid": "uuid-1"});
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/agent-events",
            Auth::Agent,
            Some(ev.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["scheduled"], true, "{v}");
    for _ in 0..50 {
        let (s, v) = h
            .call(
                "POST",
                "/mtwilson/v2/agent-events",
                Auth::Agent,
                Some(ev.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["scheduled"], false, "{v}");
        assert_eq!(v["coalesced"], true, "{v}");
    }
}

// ---- validation ----

#[tokio::test]
async fn role_checked_before_body() {
    let h = Harness::new().await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/users",
            Auth::Admin,
            Some(json!({"name": "poller", "role": "reader", "password": "reader-password-1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let reader = Auth::Basic("poller", "reader-password-1");
    for path in [
        "/mtwilson/v2/hosts/register",
        "/mtwilson/v2/hosts/register/abc/activate",
        "/mtwilson/v2/agent-events",
        "/mtwilson/v2/flavors",
        "/mtwilson/v2/tpm-endorsements",
        "/mtwilson/v2/host-attestations",
        "/mtwilson/v2/users",
    ] {
        let (s, v) = h
            .raw(
                "POST",
                path,
                reader,
                Some("application/json"),
                b"{not json".to_vec(),
            )
            .await;
        assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    }
    // The agent account may not write flavors, whatever it sends.
    let (s, v) = h
        .raw(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Agent,
            Some("text/plain"),
            b"x".to_vec(),
        )
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn bad_query_and_405_are_json() {
    let h = Harness::new().await;
    let (s, v) = h
        .call("GET", "/mtwilson/v2/reports?limit=lots", Auth::Admin, None)
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_query");
    let (s, v) = h
        .call(
            "GET",
            "/mtwilson/v2/reports?latest=perhaps",
            Auth::Admin,
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_query");
    for (method, path) in [
        ("PATCH", "/mtwilson/v2/hosts"),
        ("DELETE", "/mtwilson/v2/reports"),
        ("PUT", "/mtwilson/v2/flavors"),
        ("POST", "/readyz"),
        ("GET", "/mtwilson/v2/hosts/register"),
    ] {
        let (s, v) = h.call(method, path, Auth::Admin, None).await;
        assert_error(s, &v, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
}

#[tokio::test]
async fn non_dns_host_names_refused() {
    let h = Harness::new().await;
    let agent = h.agents.add(SoftAgent::new("node-1", "uuid-1"));
    h.endorse(&agent).await;
    let long_label = "a".repeat(64);
    let too_long = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63)
    );
    for bad in [
        "..",
        ".",
        "_x",
        "-x",
        "x-",
        "a..b",
        "Node-1",
        "a_b",
        "node 1",
        long_label.as_str(),
        too_long.as_str(),
        "",
    ] {
        let mut r = agent.lock().unwrap().register_request();
        r.host.host_name = bad.into();
        let (s, v) = h
            .call(
                "POST",
                "/mtwilson/v2/hosts/register",
                Auth::Agent,
                Some(serde_json::to_value(&r).unwrap()),
            )
            .await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_host_name");
    }
    for good in ["node-1", "a", "worker-1.cluster.example", "10.0.0.5"] {
        assert!(nodetrust_server::registrar::valid_host_name(good), "{good}");
    }
}

fn rule(index: u8) -> Value {
    json!({"bank": "sha256", "index": index, "value": "00".repeat(32)})
}

#[tokio::test]
async fn duplicate_pcr_rules_refused() {
    let h = Harness::new().await;
    let f = json!({"label": "dup", "part": "PLATFORM", "pcrs": [rule(0), rule(0)]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(f))
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "duplicate_pcr_rule");
    assert!(v["error"].as_str().unwrap().contains("PCR 0"), "{v}");
    let f = json!({"label": "ok", "part": "PLATFORM", "pcrs": [rule(0), rule(1)]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(f))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn oversized_flavor_label_refused() {
    let h = Harness::new().await;
    let f = json!({"label": "L".repeat(1000), "part": "PLATFORM", "pcrs": [rule(0)]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(f))
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "too_long");
    let f = json!({"label": "ok", "part": "PLATFORM", "pcrs": [
        {"bank": "sha256", "index": 0, "events": [{"label": "E".repeat(5000), "digest": "00".repeat(32)}]}
    ]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(f))
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "too_long");
    let f = json!({"label": "L".repeat(256), "part": "PLATFORM", "pcrs": [rule(0)]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(f))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Endorsement comments are bounded too.
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            Auth::Admin,
            Some(json!({"ek_public": "AAAA", "comment": "c".repeat(2000)})),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "too_long");
}

// ---- accounts ----

#[tokio::test]
async fn users_api() {
    users_api_on(Harness::new().await).await;
}

#[tokio::test]
async fn users_api_postgres() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set: PostgreSQL variant skipped");
        return;
    };
    users_api_on(Harness::with_db(tempfile::tempdir().unwrap(), db).await).await;
}

async fn users_api_on(h: Harness) {
    h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let users = "/mtwilson/v2/users";
    let new = json!({"name": "labeller", "role": "reader", "password": "first-password-1"});
    let (s, v) = h.call("POST", users, Auth::Admin, Some(new.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "labeller");
    assert_eq!(v["role"], "reader");
    assert!(
        v.get("password").is_none() && !v.to_string().contains("argon2"),
        "{v}"
    );
    let (s, v) = h.call("POST", users, Auth::Admin, Some(new)).await;
    assert_error(s, &v, StatusCode::CONFLICT, "user_exists");
    // Bad names and short passwords.
    let (s, v) = h
        .call(
            "POST",
            users,
            Auth::Admin,
            Some(json!({"name": "a b", "role": "reader", "password": "long-enough-pw"})),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_user_name");
    let (s, v) = h
        .call(
            "POST",
            users,
            Auth::Admin,
            Some(json!({"name": "x", "role": "reader", "password": "short"})),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "bad_password");
    // A reader reads hosts, and writes nothing.
    let reader = Auth::Basic("labeller", "first-password-1");
    let (s, v) = h.call("GET", "/mtwilson/v2/hosts", reader, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["hosts"][0]["name"], "node-1");
    let (s, v) = h
        .call("DELETE", "/mtwilson/v2/hosts/node-1", reader, None)
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/host-attestations",
            reader,
            Some(json!({"host_name": "node-1"})),
        )
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = h.call("GET", users, reader, None).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, v) = h.call("GET", users, Auth::Agent, None).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    // A password change: the old password (just used, so cached) stops working at once.
    let (s, v) = h
        .call(
            "PUT",
            "/mtwilson/v2/users/labeller/password",
            Auth::Admin,
            Some(json!({"password": "second-password-2"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = h.call("GET", "/mtwilson/v2/hosts", reader, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call(
            "GET",
            "/mtwilson/v2/hosts",
            Auth::Basic("labeller", "second-password-2"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .call(
            "PUT",
            "/mtwilson/v2/users/ghost/password",
            Auth::Admin,
            Some(json!({"password": "whatever-pw-123"})),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // The list shows every account, without secrets.
    let (s, v) = h.call("GET", users, Auth::Admin, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "agent", "labeller"]);
    assert!(!v.to_string().contains("argon2"), "{v}");
    // The last admin cannot be deleted; another admin can delete it.
    let (s, v) = h
        .call("DELETE", "/mtwilson/v2/users/admin", Auth::Admin, None)
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "last_admin");
    let (s, v) = h
        .call(
            "POST",
            users,
            Auth::Admin,
            Some(json!({"name": "ops", "role": "admin", "password": "ops-password-123"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ops = Auth::Basic("ops", "ops-password-123");
    let (s, v) = h
        .call("DELETE", "/mtwilson/v2/users/admin", ops, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    // The deleted admin's cached login ends at once.
    let (s, _) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h.call("DELETE", "/mtwilson/v2/users/ops", ops, None).await;
    assert_error(s, &v, StatusCode::CONFLICT, "last_admin");
    let (s, v) = h
        .call("DELETE", "/mtwilson/v2/users/labeller", ops, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = h
        .call(
            "GET",
            "/mtwilson/v2/hosts",
            Auth::Basic("labeller", "second-password-2"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h
        .call("DELETE", "/mtwilson/v2/users/labeller", ops, None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
}

/// The per-address limit over the real listener: the accept loop gives handlers the client's
/// address.
#[test]
fn brute_force_per_address_limited_over_tls() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--db",
            &format!("sqlite://{}/server.db", dir.path().display()),
        ])
        .args(["--state-dir", &dir.path().display().to_string()])
        .env("NODETRUST_ADMIN_USERNAME", "admin")
        .env("NODETRUST_ADMIN_PASSWORD", "admin-pw")
        .env("MTWILSON_API_USERNAME", "agent")
        .env("MTWILSON_API_PASSWORD", "agent-pw")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let curl = |creds: &str| -> (String, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-k",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-u", creds])
            .arg(format!(
                "https://127.0.0.1:{port}/mtwilson/v2/tpm-endorsements"
            ))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let code = text
            .get(text.len().saturating_sub(3)..)
            .unwrap_or("")
            .to_string();
        (code, text.to_lowercase())
    };
    let start = Instant::now();
    while curl("agent:agent-pw").0 != "200" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..10 {
        assert_eq!(curl(&format!("spray-{i}:x")).0, "401");
    }
    let (code, head) = curl("agent:agent-pw");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, "429", "{head}");
    assert!(head.contains("retry-after:"), "{head}");
}

// ---- forged evidence from a compromised agent ----

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

/// A gold host, flavors imported from it, and `node-1` booted like it and trusted.
async fn trusted_node(h: &Harness) -> (Arc<Mutex<SoftAgent>>, Arc<Mutex<SoftAgent>>) {
    let gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
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
    (gold, node)
}

/// The selection a quote request asks for.
fn selection(
    req: &nodetrust_proto::agent::QuoteRequest,
) -> std::collections::BTreeMap<HashAlg, std::collections::BTreeSet<u8>> {
    req.pcrbanks
        .iter()
        .map(|b| {
            (
                HashAlg::from_name(b).unwrap(),
                req.pcrs.iter().copied().collect(),
            )
        })
        .collect()
}

/// Attests `node-1`: the verdict must be untrusted with `needle` among its reasons.
async fn assert_untrusted(h: &Harness, needle: &str) -> Value {
    let (s, r) = h.attest("node-1").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["verdict"], "untrusted", "{r}");
    assert!(reasons(&r).contains(needle), "{needle:?} not in {r}");
    assert_eq!(h.host("node-1").await["trust"]["verdict"], "untrusted");
    r
}

#[tokio::test]
async fn forged_or_bit_flipped_quote_signature_is_untrusted() {
    let h = Harness::new().await;
    let (_gold, node) = trusted_node(&h).await;
    // One bit of the signature flipped.
    node.lock().unwrap().tamper = Some(common::Tamper::new(|_, _, mut r| {
        *r.signature.last_mut().unwrap() ^= 0x01;
        r
    }));
    assert_untrusted(&h, "quote rejected: bad signature").await;
    // One bit of the signed quote flipped (the signature no longer covers it).
    node.lock().unwrap().tamper = Some(common::Tamper::new(|_, _, mut r| {
        *r.quote.last_mut().unwrap() ^= 0x80;
        r
    }));
    assert_untrusted(&h, "bad signature").await;
    // A quote with the right nonce and the right PCR values, signed by a key the attacker
    // holds, presented with the pinned AK's public part.
    let mut forger = SoftAgent::new("forger", "uuid-forger");
    forger.boot(&gold_boot("grub 2.06"));
    node.lock().unwrap().tamper = Some(common::Tamper::new(move |_, req, mut r| {
        let sel = selection(req);
        let q = forger.tpm.quote(&req.nonce, &sel).unwrap();
        r.quote = q.attest;
        r.signature = q.signature;
        r
    }));
    let r = assert_untrusted(&h, "bad signature").await;
    assert!(
        !reasons(&r).contains("different AK"),
        "the pinned AK was presented: {r}"
    );
    // The honest agent again: trusted.
    node.lock().unwrap().tamper = None;
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
}

#[tokio::test]
async fn quote_selection_differing_from_the_pcr_values_sent_is_untrusted() {
    let h = Harness::new().await;
    let (gold, node) = trusted_node(&h).await;
    // The agent has its TPM quote every PCR but 4 (with the server's nonce and the pinned AK)
    // and sends the values of all of them.
    node.lock().unwrap().tamper = Some(common::Tamper::new(|tpm, req, mut r| {
        let mut sel = selection(req);
        for pcrs in sel.values_mut() {
            pcrs.remove(&4);
        }
        let q = tpm.quote(&req.nonce, &sel).unwrap();
        r.quote = q.attest;
        r.signature = q.signature;
        r
    }));
    assert_untrusted(&h, "PCR 4 (sha256) was not in the quote").await;
    // The node boots another boot loader; the agent sends the gold PCR 4 with the honest
    // quote of the real one.
    let gold_pcr4: Vec<(String, String)> = {
        let g = gold.lock().unwrap();
        [HashAlg::Sha1, HashAlg::Sha256]
            .into_iter()
            .map(|b| (b.name().to_string(), hex::encode(g.tpm.pcr(b, 4).unwrap())))
            .collect()
    };
    node.lock().unwrap().boot(&gold_boot("grub evil"));
    node.lock().unwrap().tamper = Some(common::Tamper::new(move |_, _, mut r| {
        let mut map = r.pcrs.unwrap().map().unwrap().into_owned();
        for (bank, value) in &gold_pcr4 {
            if let Some(pcrs) = map.get_mut(bank) {
                if let Some(v) = pcrs.get_mut("4") {
                    *v = value.clone();
                }
            }
        }
        r.pcrs = Some(map.into());
        r
    }));
    assert_untrusted(&h, "quote rejected: PCR digest mismatch").await;
    // The agent leaves a quoted PCR's value out.
    node.lock().unwrap().tamper = Some(common::Tamper::new(|_, _, mut r| {
        let mut map = r.pcrs.unwrap().map().unwrap().into_owned();
        for pcrs in map.values_mut() {
            pcrs.remove("4");
        }
        r.pcrs = Some(map.into());
        r
    }));
    assert_untrusted(
        &h,
        "sha256 PCR 4 is in the quote's selection but was not supplied",
    )
    .await;
    // The agent sends a JSON object that is no bank of values: read only when appraised, and
    // then malformed.
    for wrong in [r#"{"sha256": {"4": 4}}"#, r#"{"sha256": ["00"]}"#] {
        node.lock().unwrap().tamper = Some(common::Tamper::new(move |_, _, mut r| {
            r.pcrs = serde_json::from_str(wrong).unwrap();
            r
        }));
        assert_untrusted(&h, "the agent's PCR values are malformed").await;
    }
    // The agent leaves all its values out, unasked (nothing is kept of an untrusted host, so
    // no digest was named): asked once more, naming nothing; the same again: no verdict.
    node.lock().unwrap().tamper = Some(common::Tamper::new(|_, _, mut r| {
        r.pcrs = None;
        r
    }));
    let quotes = node.lock().unwrap().quotes;
    let (s, r) = h.attest("node-1").await;
    assert_eq!(
        (s.as_u16(), r["reason"].as_str()),
        (409, Some("pcr_values_needed")),
        "{r}"
    );
    assert_eq!(node.lock().unwrap().quotes, quotes + 2, "asked twice");
    assert_eq!(h.host("node-1").await["trust"]["verdict"], "untrusted");
    // Honest again: untrusted for the boot loader it really runs, PCR 4 named.
    node.lock().unwrap().tamper = None;
    assert_untrusted(&h, "PCR 4").await;
}

#[tokio::test]
async fn event_log_edited_to_hide_an_event_is_untrusted() {
    let h = Harness::new().await;
    let (_gold, node) = trusted_node(&h).await;
    // The node boots the gold chain plus one more kernel command line; the agent sends the
    // gold log, without that event.
    let mut hidden = gold_boot("grub 2.06");
    hidden.push(common::ipl(8, "kernel_cmdline: init=/bin/sh"));
    let gold_log = {
        let mut clean = SoftAgent::new("clean", "uuid-clean");
        clean.boot(&gold_boot("grub 2.06"));
        clean.event_log.unwrap()
    };
    {
        let mut n = node.lock().unwrap();
        n.boot(&hidden);
        n.event_log = Some(gold_log.clone());
    }
    assert_untrusted(&h, "PCR 8 (sha256): the event log replays to").await;
    // An event removed from the middle of the log of the boot that really ran.
    let grub_hidden = {
        let mut a = SoftAgent::new("evil", "uuid-evil");
        let mut boot = gold_boot("grub 2.06");
        boot.retain(|e| !e.measured.starts_with(b"grub_cmd"));
        a.boot(&boot);
        a.event_log.unwrap()
    };
    {
        let mut n = node.lock().unwrap();
        n.boot(&gold_boot("grub 2.06"));
        n.event_log = Some(grub_hidden);
    }
    assert_untrusted(&h, "PCR 8 (sha256): the event log replays to").await;
    // The true log: trusted.
    node.lock().unwrap().boot(&gold_boot("grub 2.06"));
    let (_, r) = h.attest("node-1").await;
    assert_eq!(r["verdict"], "trusted", "{r}");
}

// ---- every route: credentials, roles, hostile bodies ----

fn concrete(path: &str) -> String {
    path.replace("{id}", "x")
        .replace("{name}", "x")
        .replace("{challenge_id}", "x")
}

#[tokio::test]
async fn every_route_refuses_no_credentials_and_each_wrong_role() {
    let h = Harness::new().await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/users",
            Auth::Admin,
            Some(json!({"name": "poller", "role": "reader", "password": "reader-password-1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let accounts = [
        ("admin", ADMIN),
        ("reader", ("poller", "reader-password-1")),
        ("agent", AGENT),
    ];
    let mut checked = 0;
    for (i, r) in nodetrust_server::openapi::routes().iter().enumerate() {
        let method = r.method.to_uppercase();
        let path = concrete(&r.path);
        let what = format!("{method} {}", r.path);
        // Routes with a body get one that is not even JSON: the role decides first.
        let body = || r.request.as_ref().map(|_| b"{not json".to_vec());
        if r.roles.is_empty() {
            let (s, _, v) = send(&h, &method, &path, None, None, body()).await;
            assert_eq!(s.as_u16(), r.response.0, "{what} is public: {v}");
            continue;
        }
        let (s, _, v) = send(&h, &method, &path, None, None, body()).await;
        assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
        // A wrong password, and an unknown account (a name per route: no rate limit).
        let (s, _, v) = send(&h, &method, &path, Some(("poller", "guess")), None, body()).await;
        assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
        let nobody = format!("nobody-{i}");
        let (s, _, v) = send(&h, &method, &path, Some((&nobody, "x")), None, body()).await;
        assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
        for (role, creds) in accounts {
            let (s, _, v) = send(&h, &method, &path, Some(creds), None, body()).await;
            if r.roles.iter().any(|x| x == role) {
                // The table and the handler agree: this role gets past the role check.
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{what} as {role}: {s} {v}"
                );
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{what} as {role}: {v}");
                assert_eq!(v["reason"], "forbidden", "{what} as {role}: {v}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} wrong-role refusals checked");
    // Nothing was changed by the refused calls.
    let (_, v) = h.call("GET", "/mtwilson/v2/users", Auth::Admin, None).await;
    assert_eq!(v["users"].as_array().unwrap().len(), 3, "{v}");
}

#[tokio::test]
async fn deeply_nested_and_oversized_bodies_refused_on_every_body_route() {
    const MAX_BODY: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    let h = Harness::with_config(dir, db, |c| c.max_body = MAX_BODY).await;
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let inside = format!("{{\"host_name\": {arrays}, \"pcrs\": {arrays}}}");
    let oversized = format!("{{\"host_name\": \"{}\"}}", "x".repeat(MAX_BODY));
    let mut routes = 0;
    for r in nodetrust_server::openapi::routes()
        .iter()
        .filter(|r| r.request.is_some())
    {
        routes += 1;
        let method = r.method.to_uppercase();
        let path = concrete(&r.path);
        for body in [&arrays, &objects, &inside] {
            assert!(body.len() < MAX_BODY);
            let (s, _, v) = send(
                &h,
                &method,
                &path,
                Some(ADMIN),
                None,
                Some(body.as_bytes().to_vec()),
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {}: {v}", r.path);
            assert!(v["reason"].is_string(), "{v}");
        }
        // Push evidence may be as large as a pull agent's answer; every other body route
        // takes `--max-body`.
        let limit = if r.path.ends_with("/push/evidence") {
            nodetrust_server::agent_client::MAX_RESPONSE
        } else {
            MAX_BODY
        };
        let too_large = if limit == MAX_BODY {
            oversized.clone()
        } else {
            format!("{{\"host_name\": \"{}\"}}", "x".repeat(limit))
        };
        let (s, _, v) = send(
            &h,
            &method,
            &path,
            Some(ADMIN),
            None,
            Some(too_large.into_bytes()),
        )
        .await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "body_too_large");
        // The server keeps answering.
        let (s, v) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    assert!(routes >= 8, "{routes} routes take a body");
    let (s, _) = h.call("GET", "/readyz", Auth::None, None).await;
    assert_eq!(s, StatusCode::OK);
}

/// Attack: a connection flood (connections opened and left idle, never finishing TLS). At most
/// `--max-connections` are held; the next ones are closed at once, so memory stays bounded;
/// when the flood stops, the server serves again by itself.
#[tokio::test]
async fn connection_flood_is_bounded() {
    use tokio::io::AsyncReadExt as _;
    let h = Harness::new().await;
    let (certs, key) = nodetrust_server::tls::server_identity(None, None, h.dir.path()).unwrap();
    let config = nodetrust_server::tls::server_config(certs, key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(nodetrust_server::run_with(
        listener,
        config,
        h.app.clone(),
        async move {
            let _ = rx.await;
        },
        4,
    ));
    // Four idle connections take every slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The fifth is closed by the server at once: reading gives end of file, not a hang.
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), extra.read(&mut buf))
        .await
        .expect("closed at once, not held")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection beyond the cap is closed");
    // The flood stops: the slots come back and a real client is served.
    drop(held);
    let url = format!("https://{addr}/healthz");
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = std::process::Command::new("curl")
                .args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .unwrap();
            let code = String::from_utf8_lossy(&out.stdout).to_string();
            if code == "200" || std::time::Instant::now() > deadline {
                return code;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(status, "200");
    let _ = stop.send(());
}
