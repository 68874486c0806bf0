//! Push mode ([`nodetrust_proto::push`]): hosts whose agent sends its evidence, for nodes that
//! accept no inbound connection. The server never connects to a push host.
//!
//! A push host is registered with `mode: push` and stored with [`PUSH_URL`] as its agent
//! address and no TLS pin; it is never due for the scheduler ([`crate::store`] keeps it out of
//! every schedule). Its attestation is the pull one, [`crate::engine::attest_host`], started
//! when the agent asks:
//!
//! 1. `POST /mtwilson/v2/push/challenge`: the handler opens a challenge for the host and starts
//!    `attest_host`, whose quote request (fresh nonce, the PCRs and banks its flavors need, the
//!    IMA offset) goes to the waiting agent instead of over the network ([`PushSlots::quote`]).
//! 2. `POST /mtwilson/v2/push/evidence`: the agent's answer is handed to that attestation,
//!    which verifies and appraises it with the host's pinned AK and nonce like any other; the
//!    handler answers with the report (unsigned: the report endpoints sign it) and when to push
//!    next (one attestation interval on, moved by up to 10 % toward the host's own point of
//!    the interval: `next_push`).
//!
//! So verdicts, reasons, expiry, metrics and stored reports are the pull ones. Evidence that
//! does not come within [`EVIDENCE_TIMEOUT`] ends the attestation as an unreachable agent
//! does; an agent that stops pushing leaves its last verdict to expire (`unknown`).
//!
//! **One request per attestation.** A verdict from a verified quote comes with the next
//! challenge ([`PushResult::next`], kept in [`PushSlots`] until the next push is due plus
//! [`EVIDENCE_TIMEOUT`]). The agent quotes it when the time comes and posts the evidence
//! directly, which the handler attests at once ([`crate::engine::attest`] with the answer
//! given). Taking a quote to a nonce given a whole interval earlier must not let a host show an
//! old quote as a new one, so the evidence is taken only when its quote is provably at most
//! [`crate::push_slots::FRESH_WITHIN`] old, as a challenge asked for now allows: the quote is
//! no older than its nonce, and within one TPM boot no older than the previous quote plus the
//! TPM clock's advance since ([`crate::engine::ClockAnchor`]). A host whose TPM restarted in
//! between, whose flavors now need other PCRs, or whose evidence comes too late is answered
//! 409 and asks for a challenge (no verdict is made from it). Hosts with RUNTIME flavors are
//! given no challenge ahead: their IMA offset moves with each attestation.
//!
//! Open challenges live in this process: the challenge and its evidence must reach the same
//! replica (an evidence post to another one is answered 409 and the agent asks again).
//! Flavors are imported from pull hosts only, and an IMA log longer than one answer
//! ([`nodetrust_proto::agent::MAX_IMA_ENTRIES`]) cannot be completed from a push host.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use nodetrust_proto::agent::QuoteRequest;
use nodetrust_proto::push::{PushChallenge, PushChallengeRequest, PushEvidence, PushResult};
use tokio::sync::oneshot;

use crate::engine::{Answered, Attested};
use crate::error::{ApiError, ApiJson};
use crate::extract::AgentCaller;
use crate::push_slots::{GivenAhead, Open};
use crate::state::AppState;
use crate::store::millis;
use crate::store::HostRow;

/// The open challenges ([`crate::push_slots`]) and how long an attestation waits for the
/// evidence of its challenge.
pub use crate::push_slots::{PushSlots, EVIDENCE_TIMEOUT};
/// The agent address stored for a push host (it has none).
pub use crate::store::PUSH_URL;
/// How long a challenge handler waits for the attestation's quote request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most challenges open at once.
pub const MAX_OPEN: usize = 200_000;

/// Whether `host` pushes its evidence.
pub fn is_push(host: &HostRow) -> bool {
    host.connection_url == PUSH_URL
}

/// The push routes, under `base` (`/mtwilson/v2`). Evidence may be as large as a pull agent's
/// answer ([`crate::agent_client::MAX_RESPONSE`]: event log and IMA entries), more than
/// `--max-body`.
pub fn routes(base: &str) -> Router<AppState> {
    Router::new()
        .route(&format!("{base}/push/challenge"), post(challenge))
        .route(
            &format!("{base}/push/evidence"),
            post(evidence).layer(axum::extract::DefaultBodyLimit::max(
                crate::agent_client::MAX_RESPONSE,
            )),
        )
}

/// Refuses to attest a push host on the server's initiative (`POST /host-attestations`).
pub async fn refuse_if_push(state: &AppState, name: &str) -> Result<(), ApiError> {
    match state.store.host(name).await? {
        Some(h) if is_push(&h) => Err(ApiError::ConflictWith {
            reason: "push_host",
            message: format!(
                "host {name} pushes its evidence: it is attested when its agent pushes, and the \
                 server never connects to it"
            ),
        }),
        _ => Ok(()),
    }
}

/// A push host by name, or the refusal.
async fn push_host(state: &AppState, name: &str) -> Result<HostRow, ApiError> {
    if name.is_empty() || name.len() > 253 {
        return Err(ApiError::bad_request(
            "bad_host_name",
            "host_name is 1-253 characters",
        ));
    }
    let host = state
        .store
        .host(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no host named {name}: register first")))?;
    if !is_push(&host) {
        return Err(ApiError::ConflictWith {
            reason: "not_push_host",
            message: format!(
                "host {name} was registered in pull mode: the server asks its agent; register \
                 again with mode push to push evidence"
            ),
        });
    }
    Ok(host)
}

fn challenge_of(req: QuoteRequest) -> PushChallenge {
    PushChallenge {
        quote: req,
        evidence_within_ms: u64::try_from(EVIDENCE_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
    }
}

/// `POST /mtwilson/v2/push/challenge`.
#[utoipa::path(post, path = "/mtwilson/v2/push/challenge",
    summary = "Push mode: the quote request to answer now (the attestation starts)",
    security(("basic" = ["agent", "admin"])),
    request_body = PushChallengeRequest,
    responses((status = 200, body = PushChallenge)))]
pub async fn challenge(
    State(state): State<AppState>,
    _who: AgentCaller,
    ApiJson(req): ApiJson<PushChallengeRequest>,
) -> Result<Response, ApiError> {
    let host = push_host(&state, &req.host_name).await?;
    // A new challenge replaces the one given ahead, if any.
    state.push.forget_ahead(&host.name);
    let (want_tx, want_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    {
        let mut m = state
            .push
            .open
            .lock()
            .map_err(|_| ApiError::Internal("push challenges lock".into()))?;
        if let Some(o) = m.get(&host.name) {
            match &o.request {
                // Asked again while one is open: the same challenge (the same nonce).
                Some(r) if o.opened.elapsed() < EVIDENCE_TIMEOUT => {
                    return Ok(Json(challenge_of(r.clone())).into_response());
                }
                None if o.opened.elapsed() < REQUEST_TIMEOUT => {
                    return Err(ApiError::ConflictWith {
                        reason: "challenge_pending",
                        message: format!(
                            "a challenge for host {} is being prepared; ask again",
                            host.name
                        ),
                    });
                }
                _ => {}
            }
        }
        if m.len() >= MAX_OPEN && !m.contains_key(&host.name) {
            return Err(ApiError::Unavailable {
                reason: "too_many_push_challenges",
                message: format!("{MAX_OPEN} push challenges are open; try again later"),
                retry_after: 5,
            });
        }
        m.insert(
            host.name.clone(),
            Open {
                want: Some(want_tx),
                request: None,
                evidence: None,
                done: Some(done_rx),
                opened: Instant::now(),
            },
        );
    }
    let task_state = state.clone();
    let name = host.name.clone();
    // The row just read is the one to attest: no second read of it.
    tokio::spawn(async move {
        let outcome = crate::engine::attest(&task_state, host, None).await;
        let _ = done_tx.send(outcome);
    });
    match tokio::time::timeout(REQUEST_TIMEOUT, want_rx).await {
        Ok(Ok(request)) => Ok(Json(challenge_of(request)).into_response()),
        _ => {
            // The attestation ended (or stalled) before asking: tell why.
            let done = state
                .push
                .open
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&name))
                .and_then(|o| o.done);
            match done {
                Some(rx) => match tokio::time::timeout(Duration::from_millis(100), rx).await {
                    Ok(Ok(Err(e))) => Err(e.into()),
                    _ => Err(unavailable(&name)),
                },
                None => Err(unavailable(&name)),
            }
        }
    }
}

fn unavailable(host: &str) -> ApiError {
    ApiError::Unavailable {
        reason: "push_not_ready",
        message: format!("no challenge could be made for host {host} now; try again"),
        retry_after: 1,
    }
}

/// Push hosts are due on multiples of this many milliseconds (Unix time), or of a twentieth of
/// the attestation interval when that is shorter ([`push_slot`]).
const PUSH_SLOT_MS: u64 = 100;

/// Push again one attestation interval on, moved by up to a tenth of it toward the host's own
/// point of the interval ([`push_phase`]), due on a multiple of [`push_slot`]. A host that
/// pushed when due is due again one interval on; any other (its first push, a retry) reaches
/// its point within six intervals when the interval is 10 s or more (ten at most when shorter),
/// each wait within the interval plus or minus a tenth (pull hosts': plus a tenth). The points
/// spread the hosts evenly over the interval whenever they registered, and the evidence of the
/// hosts due in one slot arrives together and is handled in one burst (few wake-ups of the
/// server's threads, large group commits, a few neighbouring pages of the SQLite store's
/// `hosts`: [`crate::store::host_key`]), as the scheduler claims pull hosts in batches. No
/// wait is shorter than nine tenths of the interval, so a registration storm shorter than that
/// is not joined by its hosts' second attestations. `key`: the host's
/// [`crate::store::host_key`]; `now`: Unix ms.
fn next_push(state: &AppState, key: i64, now: i64) -> u64 {
    let interval = u64::try_from(state.settings.attest_interval.as_millis()).unwrap_or(60_000);
    push_wait(
        interval,
        u64::try_from(now).unwrap_or(0),
        push_phase(key, interval),
    )
}

/// The slot push hosts are due on for an attestation interval (ms): [`PUSH_SLOT_MS`], or a
/// twentieth of the interval when that is shorter (at least 1 ms).
fn push_slot(interval: u64) -> u64 {
    (interval / 20).clamp(1, PUSH_SLOT_MS)
}

/// Where in every attestation interval (ms, Unix time modulo the interval) a push host is
/// due: its [`crate::store::host_key`] `key` scaled to the interval, so that hosts due
/// together are neighbours by key.
fn push_phase(key: i64, interval: u64) -> u64 {
    let key = u128::from(key.unsigned_abs());
    u64::try_from((key * u128::from(interval)) >> 63).unwrap_or(0)
}

/// [`next_push`] for an interval, a time and a phase (ms): how long from `now`.
fn push_wait(interval: u64, now: u64, phase: u64) -> u64 {
    let interval = interval.max(1);
    let slot = push_slot(interval);
    let step = (interval / 10).saturating_sub(slot);
    let plain = now.saturating_add(interval);
    // How far the host's point is after `plain`, and before it.
    let forward = (phase % interval + interval - plain % interval) % interval;
    let back = (interval - forward) % interval;
    let due = if forward <= step {
        plain.saturating_add(forward)
    } else if back <= step {
        plain.saturating_sub(back)
    } else if forward <= back {
        plain.saturating_add(step)
    } else {
        plain.saturating_sub(step)
    };
    due.div_ceil(slot).saturating_mul(slot).saturating_sub(now)
}

/// The result of an attestation: its report, when to push next, and the challenge to answer
/// then when one can be given ahead (kept for the wait plus [`EVIDENCE_TIMEOUT`]). `key`: the
/// host's [`crate::store::host_key`] (a SHA-256 of its name), kept with the challenge given
/// ahead so that it is computed once, not at each attestation.
fn result(state: &AppState, host_name: &str, key: i64, attested: Attested) -> PushResult {
    let now = millis(state.clock.now());
    let wait = next_push(state, key, now);
    let next = attested.ahead.and_then(|ahead| {
        let nonce = crate::engine::fresh_nonce(state.random.as_ref()).ok()?;
        let request = QuoteRequest {
            nonce,
            pcrs: ahead.pcrs,
            pcrbanks: ahead.pcrbanks,
            ima_offset: None,
            known_aik_name: crate::engine::aik_name(&ahead.known, Some(&ahead.ak)),
            known_event_log_sha256: ahead.known.event_log_sha256,
            known_pcr_digest: ahead.known.pcr_digest,
        };
        let within = wait.saturating_add(u64::try_from(EVIDENCE_TIMEOUT.as_millis()).ok()?);
        let given = GivenAhead {
            request: request.clone(),
            issued_at: now,
            until: now.saturating_add(i64::try_from(within).ok()?),
            since: ahead.anchor,
            host: ahead.host,
            ak: ahead.ak,
            key,
        };
        state
            .push
            .give_ahead(host_name, given, now)
            .then_some(PushChallenge {
                quote: request,
                evidence_within_ms: within,
            })
    });
    PushResult {
        report: crate::engine::report_view(&attested.report),
        next_push_in_ms: wait,
        next,
    }
}

fn no_open_challenge(host_name: &str) -> ApiError {
    ApiError::ConflictWith {
        reason: "no_open_challenge",
        message: format!(
            "no open push challenge with this nonce for host {host_name} (expired, answered, \
             or opened on another replica): ask for a new one"
        ),
    }
}

/// `POST /mtwilson/v2/push/evidence`.
#[utoipa::path(post, path = "/mtwilson/v2/push/evidence",
    summary = "Push mode: the answer to the open challenge (or to the one given ahead); the verdict, when to push next, and the next challenge",
    security(("basic" = ["agent", "admin"])),
    request_body = PushEvidence,
    responses((status = 200, body = PushResult)))]
pub async fn evidence(
    State(state): State<AppState>,
    _who: AgentCaller,
    ApiJson(req): ApiJson<PushEvidence>,
) -> Result<Response, ApiError> {
    let PushEvidence {
        host_name,
        nonce,
        evidence,
    } = req;
    let taken = state.push.open.lock().ok().and_then(|mut m| {
        let matches = m
            .get(&host_name)
            .and_then(|o| o.request.as_ref())
            .is_some_and(|r| r.nonce == nonce);
        if matches {
            m.remove(&host_name)
        } else {
            None
        }
    });
    let Some(Open {
        evidence: Some(tx),
        done: Some(done),
        ..
    }) = taken
    else {
        // Not a challenge asked for: the one given ahead, attested here and now.
        let Some(given) = state.push.take_ahead(&host_name, &nonce) else {
            return Err(no_open_challenge(&host_name));
        };
        if millis(state.clock.now()) > given.until {
            return Err(no_open_challenge(&host_name));
        }
        // The row and the prepared AK kept with the challenge: no read, no look-up (its report
        // is stored only if the host was not registered again meanwhile).
        let (host, key) = (given.host, given.key);
        let answered = Answered {
            request: given.request,
            issued_at: given.issued_at,
            since: given.since,
            answer: evidence,
            ak: given.ak,
        };
        let attested = crate::engine::attest(&state, host, Some(answered))
            .await
            .inspect_err(|e| {
                if matches!(
                    e,
                    crate::engine::AttestError::StaleChallenge(_)
                        | crate::engine::AttestError::EventLogNeeded(_)
                        | crate::engine::AttestError::PcrValuesNeeded(_)
                ) {
                    tracing::info!(host = %host_name, error = %e, "evidence for a challenge given ahead refused; the agent asks for a new one");
                    state.metrics.push_evidence("stale");
                }
            })?;
        state.metrics.push_evidence("ahead");
        return Ok(Json(result(&state, &host_name, key, attested)).into_response());
    };
    if tx.send(evidence).is_err() {
        return Err(unavailable(&host_name));
    }
    state.metrics.push_evidence("asked");
    match tokio::time::timeout(EVIDENCE_TIMEOUT, done).await {
        Ok(Ok(Ok(attested))) => {
            let key = crate::store::host_key(&host_name);
            Ok(Json(result(&state, &host_name, key, attested)).into_response())
        }
        Ok(Ok(Err(e))) => Err(e.into()),
        _ => Err(unavailable(&host_name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_is_due_on_a_slot_within_a_tenth_of_the_interval_and_reaches_its_point() {
        for interval in [20u64, 500, 1_000, 10_000, 60_000] {
            let slot = push_slot(interval);
            assert_eq!(slot, (interval / 20).min(100));
            let step = interval / 10 - slot;
            for start in [0u64, 1, 24, 25, 1_796_194_790_123, 1_796_194_790_149] {
                for phase in [0, 1, 24, interval / 3, interval / 2, interval - 1] {
                    let at = phase.div_ceil(slot) * slot % interval;
                    let mut now = start;
                    for round in 0..14 {
                        let wait = push_wait(interval, now, phase);
                        assert_eq!((now + wait) % slot, 0, "{interval} {now} {phase}");
                        assert!(
                            (interval - step..=interval + interval / 10).contains(&wait),
                            "{interval} {now} {phase}: {wait}"
                        );
                        now += wait;
                        // At its point within six rounds for intervals of 10 s or more,
                        // ten for shorter ones, and there from then on.
                        if round + 1 >= if interval >= 10_000 { 6 } else { 10 } {
                            assert_eq!(now % interval, at, "{interval} {start} {phase}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_host_that_pushed_when_due_is_due_one_interval_on() {
        let interval = 60_000u64;
        for name in ["a", "sim-0", "sim-9999", "node-17.example.com"] {
            let phase = push_phase(crate::store::host_key(name), interval);
            assert!(phase < interval, "{name}");
            let mut due = 1_796_194_790_000;
            for _ in 0..7 {
                due += push_wait(interval, due, phase);
            }
            for late in [0, 5, 200, 3_000] {
                let next = due + late + push_wait(interval, due + late, phase);
                assert_eq!(next, due + interval, "{name} {late}");
                due = next;
            }
        }
    }

    #[test]
    fn push_phases_spread_hosts_over_the_interval_in_the_order_of_their_keys() {
        let interval = 10_000u64;
        let mut hosts: Vec<(i64, u64)> = (0..10_000)
            .map(|i| {
                let name = format!("sim-{i}");
                let key = crate::store::host_key(&name);
                (key, push_phase(key, interval))
            })
            .collect();
        hosts.sort_unstable();
        assert!(hosts.windows(2).all(|w| w[0].1 <= w[1].1));
        // Each tenth of the interval holds about a tenth of the hosts.
        let mut tenths = [0u32; 10];
        for (_, phase) in &hosts {
            tenths[usize::try_from(phase * 10 / interval).unwrap()] += 1;
        }
        assert!(tenths.iter().all(|n| (850..1150).contains(n)), "{tenths:?}");
    }
}
