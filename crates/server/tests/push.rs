//! Push mode through the API, in process: a host registered with `mode: push` is stored without
//! an address and is never attested on the server's initiative; its agent's challenge and
//! evidence go through the same verification and appraisal as a pull attestation (trusted with
//! the gold flavor; a quote of another nonce is untrusted); one open challenge per host (asking
//! again returns it), evidence for another nonce or a second time is refused; pull hosts and
//! unknown hosts get no challenge. A verdict comes with the next challenge, whose evidence is
//! taken in one request while the quote is provably fresh and the flavors ask the same PCRs.
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
use nodetrust_server::clock::Clock as _;
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

/// The harness clock's time, Unix ms.
fn unix_ms(h: &Harness) -> u64 {
    h.clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Imports the flavor `parts` from `gold`.
async fn import(h: &Harness, parts: Value) {
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold", "parts": parts})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Registers push host `name`, booted as the gold host.
async fn enrol_push(h: &Harness, name: &str) -> std::sync::Arc<std::sync::Mutex<SoftAgent>> {
    let mut a = SoftAgent::new(name, &format!("uuid-{name}"));
    a.boot(&gold_boot("grub 2.06"));
    let agent = h.agents.add(a);
    h.endorse(&agent).await;
    register_push(h, &agent).await;
    agent
}

/// Registers (again) `agent`'s host in push mode.
async fn register_push(h: &Harness, agent: &std::sync::Arc<std::sync::Mutex<SoftAgent>>) {
    let name = agent.lock().unwrap().host_name.clone();
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
    let (path, body) = common::activation(agent, &ch);
    let (s, v) = h.call("POST", &path, Auth::Agent, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let host = h.host(&name).await;
    assert_eq!(host["connection_url"], "push:", "{host}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_host_is_attested_from_the_evidence_its_agent_posts() {
    let h = Harness::new().await;
    let _gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    import(&h, json!([])).await;
    // push-1 registers in push mode.
    let agent = enrol_push(&h, "push-1").await;

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
    let before = unix_ms(&h);
    let (s, r) = evidence(&h, "push-1", &quote.nonce, answer.clone()).await;
    let after = unix_ms(&h);
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["report"]["verdict"], "trusted", "{r}");
    assert_eq!(r["report"]["host_name"], "push-1");
    // The agent is told its verdict unsigned; the report endpoints give it signed.
    assert!(r["report"].get("signed_report").is_none(), "{r}");
    let (s, v) = h
        .call(
            "GET",
            "/mtwilson/v2/reports?host_name=push-1&latest=true",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["reports"][0]["created"], r["report"]["created"], "{v}");
    assert_eq!(
        v["reports"][0]["signed_report"]
            .as_str()
            .map(|j| j.split('.').count()),
        Some(3),
        "{v}"
    );
    let interval = h.state.settings.attest_interval.as_millis() as u64;
    let next = r["next_push_in_ms"].as_u64().unwrap();
    let slot = (interval / 20).min(100);
    assert!(
        (interval - interval / 10 + slot..=interval + interval / 10).contains(&next),
        "{next} ms"
    );
    // Due on a multiple of the slot of the server's time when it answered (between `before`
    // and `after`), nearer the host's own point of the interval (its key scaled to it) than
    // one interval on would be, or at it: hosts due together push together, neighbours by key.
    let key = u128::try_from(nodetrust_server::store::host_key("push-1")).unwrap();
    let point = u64::try_from((key * u128::from(interval)) >> 63).unwrap();
    let off = |t: u64| {
        let d = (t + interval - point % interval) % interval;
        d.min(interval - d)
    };
    assert!(
        (before..=after).any(|t| (t + next) % slot == 0
            && (off(t + next) < off(t + interval) || off(t + next) <= slot)),
        "{before}..{after} + {next}, the point {point} of {interval}"
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

/// The number of reports stored for `host`.
async fn report_count(h: &Harness, host: &str) -> usize {
    let (s, v) = h
        .call(
            "GET",
            &format!("/mtwilson/v2/reports?host_name={host}"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["reports"].as_array().unwrap().len()
}

/// `nodetrust_push_evidence_total{challenge}`.
async fn pushed(h: &Harness, challenge: &str) -> u64 {
    let (s, m) = h.call("GET", "/metrics", Auth::None, None).await;
    assert_eq!(s, StatusCode::OK);
    let prefix = format!("nodetrust_push_evidence_total{{challenge=\"{challenge}\"}} ");
    m.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix} in {m}"))
        .parse()
        .unwrap()
}

/// Answers the challenge `r` carries ahead (`r["next"]`) with `agent`'s quote.
async fn answer_ahead(
    h: &Harness,
    agent: &std::sync::Arc<std::sync::Mutex<SoftAgent>>,
    r: &Value,
) -> (StatusCode, Value) {
    let next: QuoteRequest = serde_json::from_value(r["next"]["quote"].clone()).unwrap();
    let answer = quote_of(h, agent, &next).await;
    let name = agent.lock().unwrap().host_name.clone();
    evidence(
        h,
        &name,
        &next.nonce,
        serde_json::to_value(&answer).unwrap(),
    )
    .await
}

/// A round that asks for its challenge (challenge, quote, evidence): the challenge's quote
/// request and the result.
async fn asked_round(
    h: &Harness,
    agent: &std::sync::Arc<std::sync::Mutex<SoftAgent>>,
) -> (QuoteRequest, Value) {
    let name = agent.lock().unwrap().host_name.clone();
    let (s, c) = challenge(h, &name).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let quote: QuoteRequest = serde_json::from_value(c["quote"].clone()).unwrap();
    let answer = quote_of(h, agent, &quote).await;
    let (s, r) = evidence(
        h,
        &name,
        &quote.nonce,
        serde_json::to_value(&answer).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    (quote, r)
}

/// Asserts a 409 with `reason`.
fn refused(s: StatusCode, v: &Value, reason: &str) {
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::CONFLICT, Some(reason)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_carries_the_next_challenge_taken_while_its_quote_is_provably_fresh() {
    let h = Harness::new().await;
    let _gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    import(&h, json!([])).await;
    let agent = enrol_push(&h, "push-1").await;

    // A round that asks: its verdict carries the next challenge, for the same PCRs.
    let (quote, r1) = asked_round(&h, &agent).await;
    assert_eq!(r1["report"]["verdict"], "trusted", "{r1}");
    let next: QuoteRequest = serde_json::from_value(r1["next"]["quote"].clone()).unwrap();
    assert_eq!((&next.pcrs, &next.pcrbanks), (&quote.pcrs, &quote.pcrbanks));
    assert_ne!(next.nonce, quote.nonce);
    assert_eq!(next.nonce.len(), 32);
    assert_eq!(
        r1["next"]["evidence_within_ms"].as_u64().unwrap(),
        r1["next_push_in_ms"].as_u64().unwrap() + 30_000,
        "{r1}"
    );
    assert_eq!(pushed(&h, "asked").await, 1);

    // The next round posts its evidence at once (no challenge asked): trusted, and stored.
    // Its quote is verified with the pinned AK kept with the challenge: the cache of
    // prepared AKs is not looked up.
    let before = report_count(&h, "push-1").await;
    let looked_up = h.state.ak_cache.stats();
    assert_ne!(looked_up, (0, 0), "the asked round looked its AK up");
    h.clock.advance(std::time::Duration::from_secs(5));
    let (s, r2) = answer_ahead(&h, &agent, &r1).await;
    assert_eq!(s, StatusCode::OK, "{r2}");
    assert_eq!(r2["report"]["verdict"], "trusted", "{r2}");
    assert_eq!(report_count(&h, "push-1").await, before + 1);
    assert_eq!(pushed(&h, "ahead").await, 1);
    assert_eq!(h.state.ak_cache.stats(), looked_up);
    // The same evidence again: the challenge was answered.
    let (s, v) = answer_ahead(&h, &agent, &r1).await;
    refused(s, &v, "no_open_challenge");

    // A quote made long before it is sent: 31 s pass, the TPM clock has not moved. Refused,
    // no verdict, and the challenge is gone.
    let before = report_count(&h, "push-1").await;
    let verdict_before = h.host("push-1").await["trust"].clone();
    h.clock.advance(std::time::Duration::from_secs(31));
    let (s, v) = answer_ahead(&h, &agent, &r2).await;
    refused(s, &v, "challenge_stale");
    assert!(v["error"].as_str().unwrap().contains("30 s"), "{v}");
    assert_eq!(report_count(&h, "push-1").await, before);
    assert_eq!(h.host("push-1").await["trust"], verdict_before);
    assert_eq!(pushed(&h, "stale").await, 1);
    let (s, v) = answer_ahead(&h, &agent, &r2).await;
    refused(s, &v, "no_open_challenge");

    // The agent asks again; then 31 s pass and its TPM clock ran as long: the quote is
    // provably fresh, taken. Later, 40 s in which the TPM clock ran 5 s: the quote may be
    // 35 s old, refused.
    let (_, r3) = asked_round(&h, &agent).await;
    h.clock.advance(std::time::Duration::from_secs(31));
    agent.lock().unwrap().tpm.advance_clock(31_000);
    let (s, r4) = answer_ahead(&h, &agent, &r3).await;
    assert_eq!(s, StatusCode::OK, "{r4}");
    assert_eq!(r4["report"]["verdict"], "trusted", "{r4}");
    // The anchor carries on: 31 s later with the TPM clock 31 s on, still fresh.
    h.clock.advance(std::time::Duration::from_secs(31));
    agent.lock().unwrap().tpm.advance_clock(31_000);
    let (s, r5) = answer_ahead(&h, &agent, &r4).await;
    assert_eq!(s, StatusCode::OK, "{r5}");
    h.clock.advance(std::time::Duration::from_secs(40));
    agent.lock().unwrap().tpm.advance_clock(5_000);
    let (s, v) = answer_ahead(&h, &agent, &r5).await;
    refused(s, &v, "challenge_stale");

    // A TPM restart in between: the clock of another boot proves nothing, so the nonce's age
    // decides: taken within 30 s of the challenge, refused after.
    let (_, r6) = asked_round(&h, &agent).await;
    agent.lock().unwrap().tpm.restart();
    h.clock.advance(std::time::Duration::from_secs(29));
    agent.lock().unwrap().tpm.advance_clock(29_000);
    let (s, r7) = answer_ahead(&h, &agent, &r6).await;
    assert_eq!(s, StatusCode::OK, "{r7}");
    agent.lock().unwrap().tpm.restart();
    h.clock.advance(std::time::Duration::from_secs(31));
    agent.lock().unwrap().tpm.advance_clock(31_000);
    let (s, v) = answer_ahead(&h, &agent, &r7).await;
    refused(s, &v, "challenge_stale");

    // Flavors that need other PCRs: the challenge given before them no longer holds.
    let (_, r8) = asked_round(&h, &agent).await;
    assert!(r8["next"].is_object(), "{r8}");
    // An OS flavor of the SHA-1 bank: quotes now need that bank too.
    let flavor = json!({"label": "os-sha1", "part": "OS",
        "pcrs": [{"bank": "sha1", "index": 4, "value": "00".repeat(20)}]});
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(flavor))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = answer_ahead(&h, &agent, &r8).await;
    refused(s, &v, "challenge_stale");
    assert!(v["error"].as_str().unwrap().contains("flavors"), "{v}");

    // A challenge given ahead and not answered in time has expired.
    let (quote, r9) = asked_round(&h, &agent).await;
    assert!(quote.pcrbanks.contains(&"SHA1".to_string()), "{r9}");
    let within = r9["next"]["evidence_within_ms"].as_u64().unwrap();
    h.clock
        .advance(std::time::Duration::from_millis(within + 1));
    agent.lock().unwrap().tpm.advance_clock(within + 1);
    let (s, v) = answer_ahead(&h, &agent, &r9).await;
    refused(s, &v, "no_open_challenge");
    // A host registered again since its challenge was given: the kept row is another
    // registration's, so no verdict.
    let (_, r) = asked_round(&h, &agent).await;
    h.clock.advance(std::time::Duration::from_secs(1));
    agent.lock().unwrap().tpm.advance_clock(1_000);
    register_push(&h, &agent).await;
    let before = report_count(&h, "push-1").await;
    let (s, v) = answer_ahead(&h, &agent, &r).await;
    refused(s, &v, "challenge_stale");
    assert!(
        v["error"].as_str().unwrap().contains("registered again"),
        "{v}"
    );
    assert_eq!(report_count(&h, "push-1").await, before);
    assert!(h.host("push-1").await["trust"]["verdict"] != "trusted");

    // Asking for a challenge withdraws the one given ahead.
    let (_, r10) = asked_round(&h, &agent).await;
    let (s, _) = challenge(&h, "push-1").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = answer_ahead(&h, &agent, &r10).await;
    refused(s, &v, "no_open_challenge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_agent_leaves_out_an_unchanged_log_and_pcr_values_and_sends_them_when_needed() {
    let h = Harness::new().await;
    let _gold = h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    import(&h, json!([])).await;
    let agent = enrol_push(&h, "push-1").await;
    let sha256 = {
        let a = agent.lock().unwrap();
        let log = a.event_log.as_ref().unwrap();
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, log)
            .as_ref()
            .to_vec()
    };
    let sent_log = |agent: &std::sync::Arc<std::sync::Mutex<SoftAgent>>| {
        agent
            .lock()
            .unwrap()
            .last
            .as_ref()
            .unwrap()
            .event_log
            .is_some()
    };

    let sent_pcrs = |agent: &std::sync::Arc<std::sync::Mutex<SoftAgent>>| {
        let a = agent.lock().unwrap();
        let last = a.last.as_ref().unwrap();
        assert!(last.pcr_digest.is_some(), "the agent can leave them out");
        last.pcrs.is_some()
    };

    // Asked challenges: the first names no log and no PCR values; once appraised, the next
    // names them (the log's SHA-256, the quote's digest of the values), and the agent leaves
    // its unchanged log and values out.
    let (quote, r) = asked_round(&h, &agent).await;
    assert_eq!(r["report"]["verdict"], "trusted", "{r}");
    assert_eq!(quote.known_event_log_sha256, None);
    assert_eq!(quote.known_pcr_digest, None);
    assert!(sent_log(&agent));
    assert!(sent_pcrs(&agent));
    let digest = agent
        .lock()
        .unwrap()
        .last
        .as_ref()
        .unwrap()
        .pcr_digest
        .clone();
    let (quote, r) = asked_round(&h, &agent).await;
    assert_eq!(r["report"]["verdict"], "trusted", "{r}");
    assert_eq!(quote.known_event_log_sha256.as_ref(), Some(&sha256));
    assert_eq!(quote.known_pcr_digest, digest);
    assert!(!sent_log(&agent), "left out");
    assert!(!sent_pcrs(&agent), "left out");

    // The challenge given ahead names them too.
    let next: QuoteRequest = serde_json::from_value(r["next"]["quote"].clone()).unwrap();
    assert_eq!(next.known_event_log_sha256.as_ref(), Some(&sha256));
    assert_eq!(next.known_pcr_digest, digest);
    let (s, r) = answer_ahead(&h, &agent, &r).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["report"]["verdict"], "trusted", "{r}");
    assert!(!sent_log(&agent), "left out");
    assert!(!sent_pcrs(&agent), "left out");

    // A PCR extended outside the log: the log left out is needed. The challenge given ahead
    // is refused (409), and no verdict is made of it.
    let reports = report_count(&h, "push-1").await;
    let stale = pushed(&h, "stale").await;
    agent
        .lock()
        .unwrap()
        .tpm
        .extend(nodetrust_tpm_wire::HashAlg::Sha256, 9, &[7; 32]);
    let (s, v) = answer_ahead(&h, &agent, &r).await;
    refused(s, &v, "event_log_needed");
    assert!(!sent_log(&agent));
    assert!(sent_pcrs(&agent), "other values: sent");
    assert_eq!(pushed(&h, "stale").await, stale + 1);
    assert_eq!(report_count(&h, "push-1").await, reports);
    // The challenge the agent then asks for names no log: the log is sent, and the verdict
    // says what is wrong with it.
    let (quote, r) = asked_round(&h, &agent).await;
    assert_eq!(quote.known_event_log_sha256, None);
    assert!(sent_log(&agent));
    assert_eq!(r["report"]["verdict"], "untrusted", "{r}");
    assert!(
        r["report"]["reasons"].to_string().contains("event log"),
        "{r}"
    );

    // The same on an asked challenge: refused with 409, and the next one names no log.
    let other = enrol_push(&h, "push-2").await;
    asked_round(&h, &other).await;
    other
        .lock()
        .unwrap()
        .tpm
        .extend(nodetrust_tpm_wire::HashAlg::Sha256, 9, &[7; 32]);
    let (s, c) = challenge(&h, "push-2").await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let quote: QuoteRequest = serde_json::from_value(c["quote"].clone()).unwrap();
    assert!(quote.known_event_log_sha256.is_some());
    let answer = quote_of(&h, &other, &quote).await;
    assert!(answer.event_log.is_none());
    let (s, v) = evidence(
        &h,
        "push-2",
        &quote.nonce,
        serde_json::to_value(&answer).unwrap(),
    )
    .await;
    refused(s, &v, "event_log_needed");
    let (quote, r) = asked_round(&h, &other).await;
    assert_eq!(quote.known_event_log_sha256, None);
    assert_eq!(r["report"]["verdict"], "untrusted", "{r}");

    // An agent that sends its log every time (leaving it out is its choice), whose kept
    // appraisal the server dropped (as when it keeps more hosts than it can hold), leaves out
    // the values its challenge named: they are needed. Refused with 409 `pcr_values_needed`,
    // no verdict, and the next challenge names none.
    let third = enrol_push(&h, "push-3").await;
    let log = third.lock().unwrap().event_log.clone();
    third.lock().unwrap().tamper = Some(common::Tamper::new(move |_, _, mut r| {
        r.event_log = log.clone();
        r
    }));
    asked_round(&h, &third).await;
    let (quote, r) = asked_round(&h, &third).await;
    assert!(quote.known_pcr_digest.is_some());
    assert_eq!(r["report"]["verdict"], "trusted", "{r}");
    h.state.appraisals.forget("push-3");
    let reports = report_count(&h, "push-3").await;
    let (s, v) = answer_ahead(&h, &third, &r).await;
    refused(s, &v, "pcr_values_needed");
    assert!(!sent_pcrs(&third));
    assert_eq!(report_count(&h, "push-3").await, reports);
    let (quote, r) = asked_round(&h, &third).await;
    assert_eq!(quote.known_pcr_digest, None);
    assert!(sent_pcrs(&third));
    assert_eq!(r["report"]["verdict"], "trusted", "{r}");
}
