//! Attestation: ask the agent for a quote, verify it, appraise it, keep a signed report. The
//! scheduler that does so for every host ([`crate::scheduler`]) calls in here, never the other
//! way round.
//!
//! One attestation ([`attest_host`]):
//! 1. a fresh 32-byte nonce and the PCRs the host's flavors need;
//! 2. the agent's quote, with a timeout. No answer → the host is `unreachable`; the verdict is
//!    left alone until it expires and then becomes `unknown`, never `untrusted`;
//! 3. verification with the AK pinned at registration (never the one the agent sends now), the
//!    nonce, and the PCR digest; TPM resetCount / restartCount must not go backwards without a
//!    reboot being seen. Any failure → `untrusted` with the reason;
//! 4. the event log replayed against the quoted PCRs and the flavors matched → the verdict,
//!    valid for `--report-validity`, signed and stored.
//!
//! The scheduler ([`crate::scheduler::run_scheduler`]) picks hosts that are due, claims a
//! lease on each (so with PostgreSQL each host is attested by one replica at a time), and
//! attests with bounded concurrency; an agent's (re)start makes its host due at once, a
//! registration within a second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nodetrust_appraise::{
    appraise_with_runtime, flavors_from_evidence, runtime_flavor_from_ima, EventLogEvidence,
    Flavor, FlavorPart, HostContext, ImportError, MatchPolicy, Trust, Verdict,
};
use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use nodetrust_proto::trust::HostStatus;
use nodetrust_tpm_wire::verify::{verify_signed_prepared, PreparedAk, SignedQuote};
use nodetrust_tpm_wire::{Attest, ClockInfo, HashAlg, PcrValues, Public, VerifiedQuote};

use crate::agent_client::{AgentError, AgentTarget};
use crate::ak_cache::AkCache;
use crate::flavors::{FlavorSet, QuoteLists};
use crate::jws::{SignError, Signer};
use crate::outcome::agent_reason;
use crate::reuse::{Basis, Found, Known, SentLog, SentPcrs};
use crate::state::AppState;
use crate::store::{millis, AttestationUpdate, HostRow, ReportRow, StoredPcrs};

/// Why an attestation or a flavor import produced no report, and what one produced (in
/// [`crate::outcome`]).
pub use crate::outcome::{Ahead, Answered, AttestError, Attested, ClockAnchor};

/// A report as the API shows it (the type lives in [`nodetrust_proto::views`], shared with the
/// CLI).
pub use nodetrust_proto::views::ReportView;

pub use nodetrust_proto::trust::{rfc3339, TrustView};

/// A stored report as the API shows it, without signing it: `signed_report` is the signature
/// made with the report, if it was (reports stored before version 9), else absent.
pub fn report_view(r: &ReportRow) -> ReportView {
    ReportView {
        host_name: r.host_name.clone(),
        verdict: r.verdict,
        reasons: serde_json::from_str(&r.reasons).unwrap_or_default(),
        created: rfc3339(r.created),
        expires: rfc3339(r.expires),
        signed_report: (!r.signed_report.is_empty()).then(|| r.signed_report.clone()),
    }
}

/// A stored report as the report endpoints show it: signed now by `signer` unless it was
/// signed when made. The signature covers what [`SignedPayload`] names, the same fields (and
/// order) a report signed when made covers.
pub fn signed_view(signer: &Signer, r: &ReportRow) -> Result<ReportView, SignError> {
    let mut view = report_view(r);
    if view.signed_report.is_none() {
        let payload = SignedPayload {
            host_name: &r.host_name,
            hardware_uuid: &r.hardware_uuid,
            verdict: r.verdict.as_str(),
            reasons: &view.reasons,
            created: view.created.clone(),
            expires: view.expires.clone(),
            iat: r.created / 1000,
            exp: r.expires / 1000,
        };
        view.signed_report = Some(signer.sign(&payload)?);
    }
    Ok(view)
}

/// The effective trust of `host` at `now`, as the API shows it ([`EffectiveTrust::at`]).
///
/// [`EffectiveTrust::at`]: nodetrust_proto::trust::EffectiveTrust::at
pub fn trust_view(host: &HostRow, now: SystemTime) -> TrustView {
    host.effective().at(millis(now)).view()
}

fn target(host: &HostRow) -> AgentTarget {
    AgentTarget {
        host_name: host.name.clone(),
        url: host.connection_url.clone(),
        tls_cert_sha256: host.tls_cert_sha256.clone(),
    }
}

/// A quote checked as far as its attestation needs: with its PCR values and event log, for a
/// full appraisal; or only its signature, nonce and counters, when a kept trusted appraisal of
/// the same signed PCR digest is reused ([`crate::reuse`]).
#[derive(Debug)]
enum Evidence {
    Full(Checked),
    Reused {
        clock: ClockInfo,
        verdict: Verdict,
        /// The stored form of the values kept ([`stored_pcrs_of`]).
        pcrs: Arc<StoredPcrs>,
        /// What to name in the host's next quote request ([`Found::Reused`]).
        known: Known,
    },
}

/// Evidence that passed every check of the quote itself.
#[derive(Debug)]
struct Checked {
    verified: VerifiedQuote,
    log: Option<EventLogEvidence>,
}

/// Verifies an agent's answer with the pinned AK and the nonce, and parses its event log; the
/// reasons on failure.
fn check_quote(
    aks: &AkCache,
    host: &HostRow,
    nonce: &[u8],
    resp: &QuoteResponse,
) -> Result<Checked, (Vec<String>, &'static str)> {
    let ak = prepared_ak(aks, host)?;
    let verified = with_pcrs(verify_signed(&ak, host, nonce, resp)?, resp)?;
    let log = event_log(resp, &verified)?;
    Ok(Checked { verified, log })
}

/// `host`'s pinned AK, prepared ([`AkCache`]); the reasons when it is unreadable.
fn prepared_ak(
    aks: &AkCache,
    host: &HostRow,
) -> Result<Arc<PreparedAk>, (Vec<String>, &'static str)> {
    aks.get(&host.ak_public).ok_or_else(|| {
        (
            vec!["the host's pinned AK is unreadable; re-register the host".to_string()],
            "pinned_ak_unreadable",
        )
    })
}

/// Verifies an agent's quote with the pinned AK (`prepared`, [`prepared_ak`]) and the nonce,
/// and the TPM's counters against the host's, before its PCR values are checked
/// ([`with_pcrs`]); the reasons on failure.
fn verify_signed(
    prepared: &PreparedAk,
    host: &HostRow,
    nonce: &[u8],
    resp: &QuoteResponse,
) -> Result<SignedQuote, (Vec<String>, &'static str)> {
    let pinned = prepared.public();
    let signed = verify_signed_prepared(prepared, &resp.quote, &resp.signature, nonce).map_err(|e| {
        let mut reasons = vec![format!("quote rejected: {e}")];
        let presented = resp.aik.as_deref().and_then(|aik| Public::from_either(aik).ok());
        if presented.as_ref().is_some_and(|p| p.tpmt_bytes() != pinned.tpmt_bytes()) {
            reasons.push(
                "the agent presents a different AK than the one pinned at registration (a swapped AK, or a reinstalled agent that must register again)"
                    .to_string(),
            );
        }
        (reasons, e.reason())
    })?;
    let clock = signed.attest().clock_info;
    if let (Some(r0), Some(s0)) = (host.reset_count, host.restart_count) {
        let (r, s) = (i64::from(clock.reset_count), i64::from(clock.restart_count));
        if r < r0 {
            return Err((
                vec![format!("TPM resetCount went backwards ({r0} → {r}): an old quote replayed, or another TPM")],
                "reset_count_backwards",
            ));
        }
        if r == r0 && s < s0 {
            return Err((
                vec![format!("TPM restartCount went backwards ({s0} → {s}) without a reboot: an old quote replayed, or another TPM")],
                "restart_count_backwards",
            ));
        }
    }
    Ok(signed)
}

/// Checks the PCR values the agent sent against its signed quote: the verified quote; the
/// reasons on failure.
fn with_pcrs(
    signed: SignedQuote,
    resp: &QuoteResponse,
) -> Result<VerifiedQuote, (Vec<String>, &'static str)> {
    let Some(sent) = &resp.pcrs else {
        return Err((
            vec!["the agent left out its PCR values".to_string()],
            "malformed_pcrs",
        ));
    };
    let pcrs = sent
        .map()
        .and_then(|map| PcrValues::try_from(map.as_ref()).map_err(|e| e.to_string()))
        .map_err(|e| {
            (
                vec![format!("the agent's PCR values are malformed: {e}")],
                "malformed_pcrs",
            )
        })?;
    signed
        .with_pcrs(&pcrs)
        .map_err(|e| (vec![format!("quote rejected: {e}")], e.reason()))
}

/// The agent's event log, parsed and replayed for the banks of the verified quote.
fn event_log(
    resp: &QuoteResponse,
    verified: &VerifiedQuote,
) -> Result<Option<EventLogEvidence>, (Vec<String>, &'static str)> {
    match &resp.event_log {
        Some(bytes) => {
            crate::evidence::from_log(bytes, &verified.pcrs().banks().collect::<Vec<_>>())
                .map(Some)
                .map_err(|e| (vec![e], "event_log_unreadable"))
        }
        None => Ok(None),
    }
}

/// What an appraisal of the quote `attest` and `answer`'s event log, for `host` under `flavors`, is
/// made of ([`crate::reuse`]).
fn basis<'a>(
    host: &HostRow,
    flavors: &FlavorSet,
    attest: &'a Attest,
    answer: &'a QuoteResponse,
) -> Basis<'a> {
    Basis {
        registered: host.created,
        flavors: flavors.generation(),
        attest,
        log: SentLog::of(answer),
        pcrs: SentPcrs::of(answer),
    }
}

/// Whether the agent left out its event log or its PCR values, naming them by their digest.
fn left_out(answer: &QuoteResponse) -> bool {
    matches!(SentLog::of(answer), SentLog::LeftOut(_)) || SentPcrs::of(answer) == SentPcrs::LeftOut
}

/// The error of an answer that left out what is needed ([`left_out`], [`Found::Needed`]).
fn needed(answer: &QuoteResponse, host: &str) -> AttestError {
    if let SentLog::LeftOut(_) = SentLog::of(answer) {
        AttestError::EventLogNeeded(format!(
            "host {host} left out its event log, but its quote is not the one last appraised: \
             the log is needed; ask for a new challenge"
        ))
    } else {
        AttestError::PcrValuesNeeded(format!(
            "host {host} left out its PCR values, but its quote is not the one last \
             appraised: the values are needed; ask for a new challenge"
        ))
    }
}

/// The quote request's `known_aik_name`: the Name of the pinned AK (`ak`), named to an agent
/// that can leave its AK out. An agent that is named PCR values it can leave out can.
pub(crate) fn aik_name(known: &Known, ak: Option<&PreparedAk>) -> Option<Vec<u8>> {
    known
        .pcr_digest
        .as_ref()
        .and(ak)
        .map(|ak| ak.name().to_vec())
}

/// What to name in `host`'s quote request of its kept appraisal, so that its agent may leave
/// it out ([`crate::reuse::Appraisals::known`]): nothing when its evidence is appraised
/// otherwise (`reusable` false: RUNTIME flavors).
fn known(state: &AppState, host: &HostRow, flavors: &FlavorSet, reusable: bool) -> Known {
    if !reusable {
        return Known::default();
    }
    state
        .appraisals
        .known(&host.name, host.created, flavors.generation())
}

/// What a signed report says (its JWS payload). The fields are in the order of their names,
/// as the payload has always been written.
#[derive(serde::Serialize)]
struct SignedPayload<'a> {
    created: String,
    exp: i64,
    expires: String,
    hardware_uuid: &'a str,
    host_name: &'a str,
    iat: i64,
    reasons: &'a [String],
    verdict: &'static str,
}

async fn save(
    state: &AppState,
    host: &HostRow,
    verdict: &Verdict,
    reached: bool,
    counters: Option<AttestationUpdate>,
) -> Result<ReportRow, AttestError> {
    save_for(state, host, verdict, reached, counters)
        .await
        .map(|(report, _)| report)
}

/// [`save`] for the registration attested (`host.created`): a host registered again or deleted
/// meanwhile gets no report. Returns the report and whether it was stored.
async fn save_for(
    state: &AppState,
    host: &HostRow,
    verdict: &Verdict,
    reached: bool,
    counters: Option<AttestationUpdate>,
) -> Result<(ReportRow, bool), AttestError> {
    let created = millis(verdict.attested_at());
    let expires = millis(verdict.expires_at());
    // Not signed here: a report is signed when it is read ([`signed_view`]).
    let row = ReportRow {
        id: crate::store::report_id(created),
        host_name: host.name.clone(),
        verdict: verdict.verdict(),
        reasons: serde_json::to_string(verdict.reasons())
            .map_err(|e| AttestError::Internal(e.to_string()))?,
        created,
        expires,
        hardware_uuid: host.hardware_uuid.clone(),
        signed_report: String::new(),
    };
    Ok(state
        .store
        .save_report_for(row, Some(host.created), reached, counters)
        .await?)
}

/// The report of an attestation whose quote was given ahead: one that was not stored (the
/// host was registered again, or deleted, since the challenge was given) is no verdict.
fn kept(
    host: &HostRow,
    given_ahead: bool,
    (report, stored): (ReportRow, bool),
) -> Result<ReportRow, AttestError> {
    if given_ahead && !stored {
        return Err(AttestError::StaleChallenge(format!(
            "host {} was registered again, or deleted, since its challenge was given: ask for \
             a new one",
            host.name
        )));
    }
    Ok(report)
}

/// Attests one host now and returns the new report. An unreachable agent gives
/// [`AttestError::Agent`] (no new verdict; status `unreachable`; an expired verdict becomes
/// `unknown`).
///
/// Every outcome is counted in `nodetrust_attestations_total{result,reason}` with its real
/// reason: `ok`, the quote check that failed (tpm-wire's `VerifyError::reason()`, counters
/// going backwards, an unreadable event log), appraisal's [`Failure`](nodetrust_appraise::Failure)
/// (`replay_mismatch`, `flavor_mismatch`, `no_flavor`), or, with result `unreachable`,
/// `agent_unreachable` / `agent_timeout`.
pub async fn attest_host(state: &AppState, name: &str) -> Result<ReportRow, AttestError> {
    let host = state
        .store
        .host(name)
        .await?
        .ok_or_else(|| AttestError::NotFound(name.to_string()))?;
    attest_row(state, host).await
}

/// [`attest_host`] with the host's row already read (the scheduler's claim returns the rows
/// it claimed, so a scheduled attestation reads no host row of its own).
pub async fn attest_row(state: &AppState, host: HostRow) -> Result<ReportRow, AttestError> {
    attest(state, host, None).await.map(|a| a.report)
}

/// A fresh 32-byte nonce.
pub(crate) fn fresh_nonce(random: &dyn crate::clock::Random) -> Result<Vec<u8>, AttestError> {
    let mut nonce = vec![0u8; 32];
    random
        .fill(&mut nonce)
        .map_err(|e| AttestError::Internal(e.to_string()))?;
    Ok(nonce)
}

/// [`attest_row`], with the quote either asked now (`given` absent: from the network, or from
/// a push host's open challenge) or given with a push host's evidence for a challenge it got
/// ahead. Such evidence is taken only when the challenge still asks what the host's flavors
/// need and its quote is provably at most [`crate::push_slots::FRESH_WITHIN`] old (see
/// [`ClockAnchor`]); otherwise
/// [`AttestError::StaleChallenge`], and no verdict.
pub async fn attest(
    state: &AppState,
    host: HostRow,
    given: Option<Answered>,
) -> Result<Attested, AttestError> {
    let flavors = state.flavors.current().await?;
    // Made once for every host no flavor names (nearly all).
    let lists = flavors.quote_lists(&host.name);
    let (pcrs, pcrbanks) = (&lists.pcrs, &lists.pcrbanks);
    // RUNTIME flavors: the IMA log from the entry last appraised (none asked for without them).
    let runtime_plan = crate::runtime::plan(state, &host, &flavors).await?;
    // A push host's next quote can be asked ahead, unless its IMA log is appraised (the offset
    // to ask from moves with each attestation).
    let can_ask_ahead = runtime_plan.is_none() && host.connection_url == crate::store::PUSH_URL;
    let started = Instant::now();
    let validity = state.settings.report_validity;
    // The event log and PCR values of the host's kept appraisal are named in the request, so
    // that its agent may leave them out ([`crate::reuse`]); a pull host whose agent left out
    // what turns out to be needed is asked once more, naming nothing.
    let mut name_known = runtime_plan.is_none();
    let mut given = given;
    // The host's pinned AK, prepared: kept with a challenge given ahead, from the cache
    // otherwise.
    let mut ak: Option<Arc<PreparedAk>> = None;
    let (given_at, now, mut resp, evidence) = loop {
        let (nonce, answer, given_at) = match given.take() {
            None => {
                let nonce = fresh_nonce(state.random.as_ref())?;
                let named = known(state, &host, &flavors, name_known);
                if named.pcr_digest.is_some() && ak.is_none() {
                    ak = prepared_ak(&state.ak_cache, &host).ok();
                }
                let req = QuoteRequest {
                    nonce: nonce.clone(),
                    pcrs: pcrs.clone(),
                    pcrbanks: pcrbanks.clone(),
                    ima_offset: runtime_plan.as_ref().map(|p| p.offset),
                    known_aik_name: aik_name(&named, ak.as_deref()),
                    known_event_log_sha256: named.event_log_sha256,
                    known_pcr_digest: named.pcr_digest,
                };
                let asked_at = millis(state.clock.now());
                // A push host's quote comes from its agent's open challenge ([`crate::push`]).
                let answer = state
                    .push
                    .quote(state.agents.as_ref(), &target(&host), &req)
                    .await;
                (nonce, answer, Err(asked_at))
            }
            Some(a) => {
                if !can_ask_ahead || a.request.pcrs != *pcrs || a.request.pcrbanks != *pcrbanks {
                    return Err(AttestError::StaleChallenge(format!(
                        "the flavors of host {} changed since its challenge was given: ask for \
                         a new one",
                        host.name
                    )));
                }
                ak = Some(a.ak);
                (a.request.nonce, Ok(a.answer), Ok((a.issued_at, a.since)))
            }
        };
        let now = state.clock.now();
        let resp = match answer {
            Ok(r) => r,
            Err(e) if e.is_unreachable() => {
                state
                    .metrics
                    .attestation("unreachable", agent_reason(&e), started.elapsed());
                return Err(unreachable(state, &host, e, now).await);
            }
            Err(e) => {
                state.metrics.agent_error(e.reason());
                let v = Verdict::untrusted(vec![e.to_string()], now, validity);
                state
                    .metrics
                    .attestation("untrusted", e.reason(), started.elapsed());
                return save(state, &host, &v, true, None)
                    .await
                    .map(Attested::alone);
            }
        };
        // A trusted appraisal of the same inputs is reused ([`crate::reuse`]): the quote's
        // signature, nonce and counters are checked, and its signed PCR digest stands for the
        // values kept. Otherwise its PCR values are checked and its event log parsed now, so
        // that an unreadable one is a verdict of its own.
        let prepared = match ak.take() {
            Some(p) => Ok(p),
            None => prepared_ak(&state.ak_cache, &host),
        };
        ak = prepared.as_ref().ok().cloned();
        let checked = prepared
            .and_then(|p| verify_signed(&p, &host, &nonce, &resp))
            .and_then(|signed| {
                let found = if runtime_plan.is_none() {
                    let basis = basis(&host, &flavors, signed.attest(), &resp);
                    state.appraisals.find(&host.name, &basis, now, validity)
                } else {
                    Found::Appraise
                };
                match found {
                    Found::Reused {
                        verdict,
                        pcrs,
                        known,
                    } => Ok(Some(Evidence::Reused {
                        clock: signed.attest().clock_info,
                        verdict,
                        pcrs,
                        known,
                    })),
                    Found::Needed => Ok(None),
                    Found::Appraise if left_out(&resp) => Ok(None),
                    Found::Appraise => {
                        let verified = with_pcrs(signed, &resp)?;
                        let log = event_log(&resp, &verified)?;
                        Ok(Some(Evidence::Full(Checked { verified, log })))
                    }
                }
            });
        match checked {
            Ok(Some(evidence)) => break (given_at, now, resp, evidence),
            Ok(None)
                if name_known
                    && given_at.is_err()
                    && host.connection_url != crate::store::PUSH_URL =>
            {
                tracing::info!(host = %host.name, "the agent left out an event log or PCR values that are needed: asking again for them");
                name_known = false;
            }
            Ok(None) => return Err(needed(&resp, &host.name)),
            Err((reasons, label)) => {
                let v = Verdict::untrusted(reasons, now, validity);
                state
                    .metrics
                    .attestation("untrusted", label, started.elapsed());
                tracing::warn!(host = %host.name, reason = label, "quote rejected");
                let saved = save_for(state, &host, &v, true, None).await?;
                return kept(&host, given_at.is_ok(), saved).map(Attested::alone);
            }
        }
    };
    let clock = match &evidence {
        Evidence::Full(checked) => checked.verified.attest().clock_info,
        Evidence::Reused { clock, .. } => *clock,
    };
    let anchor = match given_at {
        Err(asked_at) => ClockAnchor::of(&clock, asked_at),
        Ok((issued_at, since)) => {
            let earliest = since.earliest(&clock, issued_at);
            let fresh_within =
                i64::try_from(crate::push_slots::FRESH_WITHIN.as_millis()).unwrap_or(0);
            if earliest.saturating_add(fresh_within) < millis(now) {
                return Err(AttestError::StaleChallenge(format!(
                    "the quote of host {} cannot be shown to be less than {} s old (its TPM \
                     restarted, or it was made long before it was sent): ask for a new \
                     challenge",
                    host.name,
                    fresh_within / 1000
                )));
            }
            // Never later than now: the quote was made before it arrived.
            ClockAnchor::of(&clock, earliest.min(millis(now)))
        }
    };
    let runtime = match (runtime_plan, &evidence) {
        (None, _) => None,
        (Some(_), Evidence::Reused { .. }) => {
            return Err(AttestError::Internal(
                "an appraisal with RUNTIME flavors is never reused".into(),
            ))
        }
        (Some(plan), Evidence::Full(checked)) => {
            let first = resp.ima_log.take();
            let target = target(&host);
            match crate::runtime::appraise(state, &host, &target, plan, first, &checked.verified)
                .await
            {
                Ok(evidence) => Some(evidence),
                Err(crate::runtime::FetchError::Unreachable(e)) => {
                    state
                        .metrics
                        .attestation("unreachable", agent_reason(&e), started.elapsed());
                    return Err(unreachable(state, &host, e, now).await);
                }
                Err(crate::runtime::FetchError::Bad(why)) => {
                    let v = Verdict::untrusted(vec![format!("RUNTIME: {why}")], now, validity);
                    state
                        .metrics
                        .attestation("untrusted", "ima_log_unreadable", started.elapsed());
                    return save(state, &host, &v, true, None)
                        .await
                        .map(Attested::alone);
                }
                Err(crate::runtime::FetchError::Pending(why)) => {
                    let v = Verdict::unknown(vec![format!("RUNTIME: {why}")], now, validity);
                    state
                        .metrics
                        .attestation("unknown", "ima_log_in_progress", started.elapsed());
                    return save(state, &host, &v, true, None)
                        .await
                        .map(Attested::alone);
                }
            }
        }
    };
    // What to name in a challenge given ahead: a reused appraisal's (found with it), or what
    // is kept now.
    let (verdict, quoted_pcrs, found) = match evidence {
        Evidence::Reused {
            verdict,
            pcrs,
            known,
            ..
        } => {
            state
                .appraisals
                .count_reused(SentLog::of(&resp), SentPcrs::of(&resp));
            (verdict, Some(pcrs), Some(known))
        }
        Evidence::Full(checked) => {
            let ctx = HostContext {
                host_name: &host.name,
                software_tpm: host.software_tpm,
            };
            let verdict = appraise_with_runtime(
                &checked.verified,
                checked.log.as_ref(),
                runtime.as_ref(),
                &flavors,
                &MatchPolicy::default(),
                &ctx,
                now,
                validity,
            );
            let stored = serde_json::to_string(&checked.verified.pcrs().json())
                .ok()
                .map(|json| Arc::new(StoredPcrs::new(stored_pcrs_of(&json))));
            match (&runtime, &stored) {
                (None, Some(stored)) => {
                    let basis = basis(&host, &flavors, checked.verified.attest(), &resp);
                    state
                        .appraisals
                        .remember(&host.name, &basis, stored, &verdict);
                }
                _ => state.appraisals.forget(&host.name),
            }
            (verdict, stored, None)
        }
    };
    let counters = AttestationUpdate {
        reset_count: Some(i64::from(clock.reset_count)),
        restart_count: Some(i64::from(clock.restart_count)),
        quoted_pcrs,
    };
    let label = match (verdict.verdict(), verdict.failure()) {
        (_, Some(failure)) => failure.reason(),
        (Trust::Trusted, None) => "ok",
        // Appraisal gives every untrusted verdict a failure kind; fail loudly in the metric.
        (_, None) => "unclassified",
    };
    state
        .metrics
        .attestation(verdict.verdict().as_str(), label, started.elapsed());
    let saved = save_for(state, &host, &verdict, true, Some(counters)).await?;
    let report = kept(&host, given_at.is_ok(), saved)?;
    Ok(Attested {
        report,
        ahead: ak.filter(|_| can_ask_ahead).map(|ak| Ahead {
            ak,
            pcrs: pcrs.clone(),
            pcrbanks: pcrbanks.clone(),
            known: found.unwrap_or_else(|| known(state, &host, &flavors, true)),
            anchor,
            host: HostRow {
                // What the next attestation of this registration uses of it, as it is now.
                reset_count: Some(i64::from(clock.reset_count)),
                restart_count: Some(i64::from(clock.restart_count)),
                host_info: String::new(),
                ek_public: String::new(),
                reasons: None,
                status_detail: None,
                ..host
            },
        }),
    })
}

/// The stored form of quoted PCR values (`host_pcrs.quoted_pcrs`, read as
/// [`crate::store::QuotedPcrs`] with the time in `pcrs_quoted_at`), from the values' JSON
/// (`PcrValues::json`), written without parsing it again. The same values give the same text,
/// so that the store keeps the stored text when a quote shows the values it holds.
fn stored_pcrs_of(pcrs_json: &str) -> String {
    format!("{{\"pcrs\":{pcrs_json}}}")
}

/// [`stored_pcrs_of`] from the values.
#[cfg(test)]
fn stored_pcrs(pcrs: &nodetrust_tpm_wire::PcrValues) -> Option<String> {
    serde_json::to_string(&pcrs.json())
        .ok()
        .map(|json| stored_pcrs_of(&json))
}

async fn unreachable(
    state: &AppState,
    host: &HostRow,
    e: AgentError,
    now: SystemTime,
) -> AttestError {
    state.metrics.agent_error(e.reason());
    tracing::info!(host = %host.name, error = %e, "agent unreachable");
    let now_ms = millis(now);
    if let Err(err) = state
        .store
        .mark_unreachable(&host.name, &e.to_string(), now_ms)
        .await
    {
        return err.into();
    }
    let mut h = host.clone();
    h.status = HostStatus::Unreachable;
    h.status_detail = Some(e.to_string());
    let at = h.effective().at(now_ms);
    // The stored verdict expired (and was not already `unknown`): record that it is now.
    if at.verdict == Trust::Unknown && at.last_verdict.is_some_and(|v| v != Trust::Unknown) {
        let v = Verdict::unknown(at.reasons, now, state.settings.report_validity);
        if let Err(err) = save(state, host, &v, false, None).await {
            return err;
        }
    }
    AttestError::Agent {
        message: format!("host {} is unreachable: {e}", host.name),
        error: e,
    }
}

/// Imports flavors for `parts` from a registered host's current, freshly verified evidence.
pub async fn import_flavors(
    state: &AppState,
    from_host: &str,
    parts: &[FlavorPart],
) -> Result<Vec<Flavor>, AttestError> {
    let host = state
        .store
        .host(from_host)
        .await?
        .ok_or_else(|| AttestError::NotFound(from_host.to_string()))?;
    let pcrs: BTreeSet<u8> = parts
        .iter()
        .flat_map(|p| p.pcrs().iter().copied())
        .collect();
    let QuoteLists { pcrs, pcrbanks } = QuoteLists::of(&BTreeMap::from([(HashAlg::Sha256, pcrs)]));
    let nonce = fresh_nonce(state.random.as_ref())?;
    let runtime = parts.contains(&FlavorPart::Runtime);
    let req = QuoteRequest {
        nonce: nonce.clone(),
        pcrs,
        pcrbanks,
        ima_offset: runtime.then_some(0),
        known_event_log_sha256: None,
        known_pcr_digest: None,
        known_aik_name: None,
    };
    let mut resp = state
        .agents
        .quote(&target(&host), &req)
        .await
        .map_err(|e| AttestError::Agent {
            message: format!("cannot get evidence from {from_host}: {e}"),
            error: e,
        })?;
    let checked =
        check_quote(&state.ak_cache, &host, &nonce, &resp).map_err(|(reasons, reason)| {
            AttestError::EvidenceRejected {
                reason,
                message: format!(
                    "the evidence of {from_host} does not verify: {}",
                    reasons.join("; ")
                ),
            }
        })?;
    let boot_parts: Vec<FlavorPart> = parts
        .iter()
        .copied()
        .filter(|p| *p != FlavorPart::Runtime)
        .collect();
    let mut flavors = if boot_parts.is_empty() {
        Vec::new()
    } else {
        flavors_from_evidence(
            &checked.verified,
            checked.log.as_ref(),
            &boot_parts,
            &host.name,
            host.software_tpm,
        )?
    };
    if runtime {
        // The RUNTIME policy is learned from the IMA log up to the quote.
        let first = resp.ima_log.take();
        let entries = crate::runtime::quoted_log(state, &target(&host), first, &checked.verified)
            .await
            .map_err(|e| match e {
                crate::runtime::FetchError::Unreachable(e) => AttestError::Agent {
                    message: format!("cannot get the IMA log of {from_host}: {e}"),
                    error: e,
                },
                crate::runtime::FetchError::Bad(why) | crate::runtime::FetchError::Pending(why) => {
                    AttestError::Import(ImportError::BadImaLog(why))
                }
            })?
            .ok_or(ImportError::NoImaLog)?;
        flavors.push(runtime_flavor_from_ima(
            &checked.verified,
            &entries,
            &host.name,
            host.software_tpm,
        )?);
    }
    state.flavors.add(&mut flavors, state.now_ms()).await?;
    Ok(flavors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_pcrs_are_stored_as_their_json_value_is() {
        use nodetrust_tpm_wire::{HashAlg, PcrValues};
        let mut pcrs = PcrValues::new();
        for i in 0..24u8 {
            pcrs.insert(HashAlg::Sha256, i, vec![i; 32]).unwrap();
            pcrs.insert(HashAlg::Sha1, i, vec![0xf0 | (i % 16); 20])
                .unwrap();
        }
        pcrs.insert(HashAlg::Sha384, 7, vec![0xab; 48]).unwrap();
        for values in [PcrValues::new(), pcrs] {
            let stored = stored_pcrs(&values).unwrap();
            let before = serde_json::json!({ "pcrs": values.to_json() });
            // The same JSON (a bank's values come by index, where a `serde_json::Map` may sort
            // their keys as text).
            let parsed = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
            assert_eq!(parsed(&stored), before);
            assert_eq!(
                stored_pcrs(&values).unwrap(),
                stored,
                "the same text every time"
            );
            let read = crate::store::QuotedPcrs::read(&stored, Some(1_796_309_513_126)).unwrap();
            assert_eq!(read.quoted_at, 1_796_309_513_126);
            assert_eq!(PcrValues::from_json_value(&read.pcrs).unwrap(), values);
        }
    }

    #[test]
    fn the_signed_payload_keeps_its_fields_in_name_order() {
        let reasons = vec!["r".to_string()];
        let p = SignedPayload {
            created: "c".into(),
            exp: 2,
            expires: "e".into(),
            hardware_uuid: "u",
            host_name: "h",
            iat: 1,
            reasons: &reasons,
            verdict: "trusted",
        };
        let text = serde_json::to_string(&p).unwrap_or_default();
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                .unwrap_or_default()
                .keys()
                .cloned()
                .collect();
        let positions: Vec<usize> = keys
            .iter()
            .filter_map(|k| text.find(&format!("\"{k}\"")))
            .collect();
        assert_eq!(keys.len(), 8, "{text}");
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    fn row(signed_report: &str) -> ReportRow {
        ReportRow {
            id: "id".into(),
            host_name: "node-1".into(),
            verdict: Trust::Untrusted,
            reasons: r#"["PCR 4 changed"]"#.into(),
            created: 1_700_000_000_123,
            expires: 1_700_000_600_123,
            hardware_uuid: "uuid-1".into(),
            signed_report: signed_report.into(),
        }
    }

    #[test]
    fn a_report_is_signed_when_read_and_one_signed_when_made_keeps_its_signature() {
        let signer = Signer::from_pkcs8_b64(&crate::jws::generate_key().unwrap()).unwrap();
        // Stored unsigned: the plain view has no signature, the signed one verifies and says
        // what the row says.
        let unsigned = row("");
        assert_eq!(report_view(&unsigned).signed_report, None);
        let view = signed_view(&signer, &unsigned).unwrap();
        let jws = view.signed_report.clone().unwrap();
        let p = crate::jws::verify(&jws, &signer.jwk()).expect("verifies");
        assert_eq!(p["host_name"], "node-1");
        assert_eq!(p["hardware_uuid"], "uuid-1");
        assert_eq!(p["verdict"], "untrusted");
        assert_eq!(p["reasons"], serde_json::json!(["PCR 4 changed"]));
        assert_eq!(p["created"], view.created.as_str());
        assert_eq!(p["expires"], view.expires.as_str());
        assert_eq!(p["iat"], 1_700_000_000);
        assert_eq!(p["exp"], 1_700_000_600);
        // Signed when made (before version 9): served as it was, not signed again.
        let old = row("header.payload.signature");
        assert_eq!(
            signed_view(&signer, &old).unwrap().signed_report.as_deref(),
            Some("header.payload.signature")
        );
    }
}
