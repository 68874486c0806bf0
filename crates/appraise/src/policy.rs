//! The match policy and [`appraise`].
//!
//! A host is trusted when every required part is matched by at least one flavor: PLATFORM and
//! OS always, HOST_UNIQUE and RUNTIME when the host has a flavor of that part ("required if
//! defined").
//! Several flavors of one part may be valid at once (rolling out a new kernel): any one of
//! them matching is enough.
//!
//! Order of checks, each failing closed with a concrete reason:
//! 1. the quote was checked against a fresh nonce and a TPM-resident restricted AK;
//! 2. the event log, when present, replays to the quoted PCR values (else it is not believed);
//! 3. each required part is matched by one of its flavors. A RUNTIME flavor matches when the
//!    verifier's appraisal of the host's IMA log under its policy ([`RuntimeEvidence`], made
//!    incrementally by the server) replayed to the quoted PCR 10 and found no entry the policy
//!    does not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use nodetrust_tpm_wire::{HashAlg, VerifiedQuote};

use crate::diff;
use crate::evidence::EventLogEvidence;
use crate::flavor::{Flavor, FlavorPart, PcrRule};
use crate::runtime::{RuntimeOutcome, RuntimeProblem};
use crate::verdict::{Failure, Verdict};

/// What the verifier found in a host's IMA log, per RUNTIME flavor (by flavor id): the
/// appraisal's outcome under that flavor's policy, or why the log could not be appraised (no
/// IMA log, an unreadable answer). A RUNTIME flavor without an entry here does not match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeEvidence {
    /// Flavor id → outcome, or a sentence saying why there is none.
    pub outcomes: BTreeMap<String, Result<RuntimeOutcome, String>>,
    /// Sentences about the log itself (the agent could not read all of it, it is shorter than
    /// what was appraised before), added to the reasons of a RUNTIME flavor that does not match.
    pub notes: Vec<String>,
}

impl RuntimeEvidence {
    /// Why the RUNTIME flavor `id` does not match (empty when it does), without the `RUNTIME: `
    /// prefix (the caller adds the part), and whether the reason is a log that does not replay.
    fn check(&self, id: &str) -> (Vec<String>, bool) {
        let strip = |s: String| match s.strip_prefix("RUNTIME: ") {
            Some(rest) => rest.to_string(),
            None => s,
        };
        let (mut why, not_replayed) = match self.outcomes.get(id) {
            None => (
                vec!["the host's IMA log was not appraised under this flavor".to_string()],
                false,
            ),
            Some(Err(why)) => (vec![strip(why.clone())], false),
            Some(Ok(o)) if o.is_trusted() => return (Vec::new(), false),
            Some(Ok(o)) => (
                o.reasons().into_iter().map(strip).collect::<Vec<_>>(),
                matches!(o.problem, Some(RuntimeProblem::NotReplayed { .. })),
            ),
        };
        why.extend(self.notes.iter().cloned().map(strip));
        (why, not_replayed)
    }
}

/// Which parts must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchPolicy {
    /// Parts that must always be matched.
    pub required: Vec<FlavorPart>,
    /// Parts that must be matched when a flavor of that part applies to the host.
    pub required_if_defined: Vec<FlavorPart>,
}

impl Default for MatchPolicy {
    fn default() -> Self {
        Self {
            required: vec![FlavorPart::Platform, FlavorPart::Os],
            required_if_defined: vec![FlavorPart::HostUnique, FlavorPart::Runtime],
        }
    }
}

/// Facts about the host being appraised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostContext<'a> {
    /// Host name (selects its HOST_UNIQUE flavors).
    pub host_name: &'a str,
    /// Whether the host's TPM is a software TPM.
    pub software_tpm: bool,
}

fn short(d: &[u8]) -> String {
    let h = hex::encode(d);
    h.get(..16).map(|s| format!("{s}…")).unwrap_or(h)
}

/// Why one rule failed, as sentences (empty when it holds).
fn check_rule(
    rule: &PcrRule,
    verified: &VerifiedQuote,
    log: Option<&EventLogEvidence>,
) -> Vec<String> {
    let (bank, index) = (rule.bank, rule.index);
    let quoted = verified.pcrs().get(bank, index);
    let expected_events: Vec<(&str, &[u8])> = rule
        .events
        .iter()
        .map(|e| (e.label.as_str(), e.digest.as_slice()))
        .collect();
    // The host's events in the rule's scope: read only to explain a mismatch or to compare
    // events, not when the PCR value alone holds.
    let host_events = || -> Option<Vec<(&str, &[u8])>> {
        log.map(|l| {
            l.events_for(bank, index)
                .filter(|(e, _)| rule.scope.includes(e))
                .map(|(e, d)| (e.label(), d))
                .collect()
        })
    };
    match &rule.value {
        Some(expected) => {
            let Some(found) = quoted else {
                return vec![format!("PCR {index} ({bank}) was not in the quote")];
            };
            if found == expected.as_slice() {
                return Vec::new();
            }
            let explained = match &host_events() {
                Some(actual) if !rule.events.is_empty() => {
                    diff::explain(index, bank, &expected_events, actual)
                }
                _ => Vec::new(),
            };
            if explained.is_empty() {
                vec![format!(
                    "PCR {index} ({bank}): value {} differs from the flavor's {}{}",
                    short(found),
                    short(expected),
                    if log.is_none() {
                        " (the host sent no event log to explain it)"
                    } else {
                        ""
                    }
                )]
            } else {
                explained
            }
        }
        None => {
            let Some(actual) = host_events() else {
                return vec![format!(
                    "PCR {index} ({bank}): the flavor checks its events, but the host sent no event log"
                )];
            };
            let covered =
                quoted.is_some() && log.is_some_and(|l| l.replayed.get(bank, index).is_some());
            if !covered && !rule.events.is_empty() {
                return vec![format!(
                    "PCR {index} ({bank}): not covered by both the quote and the event log"
                )];
            }
            diff::explain(index, bank, &expected_events, &actual)
        }
    }
}

/// Why `flavor` does not match (empty when it does), and whether the reason is an IMA log
/// that does not replay to the quote.
fn check_flavor(
    flavor: &Flavor,
    verified: &VerifiedQuote,
    log: Option<&EventLogEvidence>,
    runtime: Option<&RuntimeEvidence>,
    ctx: &HostContext<'_>,
) -> (Vec<String>, bool) {
    let mut out: Vec<String> = flavor
        .pcrs
        .iter()
        .flat_map(|r| check_rule(r, verified, log))
        .collect();
    let mut not_replayed = false;
    if flavor.part == FlavorPart::Runtime {
        let (why, replay) = match runtime {
            Some(r) => r.check(&flavor.id),
            None => (
                vec!["the host's IMA log was not appraised".to_string()],
                false,
            ),
        };
        out.extend(why);
        not_replayed = replay;
    }
    if ctx.software_tpm && !flavor.allow_software_tpm {
        out.push("the host's TPM is a software TPM, which this flavor does not allow".to_string());
    }
    (out, not_replayed)
}

/// Whether `flavor` applies to the host (HOST_UNIQUE flavors apply to their own host only;
/// RUNTIME flavors to every host, or to their `host_name` only when they have one).
pub fn applies(flavor: &Flavor, ctx: &HostContext<'_>) -> bool {
    match flavor.part {
        FlavorPart::HostUnique => flavor.host_name.as_deref() == Some(ctx.host_name),
        FlavorPart::Runtime => flavor
            .host_name
            .as_deref()
            .is_none_or(|h| h == ctx.host_name),
        _ => true,
    }
}

/// The PCRs to quote for a host: every PCR its applicable flavors need, or, with no flavor
/// yet, the SHA-256 PCRs of every part.
pub fn quote_selection<'a>(
    flavors: impl IntoIterator<Item = &'a Flavor>,
    host_name: &str,
) -> BTreeMap<HashAlg, BTreeSet<u8>> {
    let ctx = HostContext {
        host_name,
        software_tpm: false,
    };
    let mut out: BTreeMap<HashAlg, BTreeSet<u8>> = BTreeMap::new();
    for f in flavors.into_iter().filter(|f| applies(f, &ctx)) {
        for (bank, pcr) in f.needed_pcrs() {
            out.entry(bank).or_default().insert(pcr);
        }
    }
    if out.is_empty() {
        let all: BTreeSet<u8> = FlavorPart::ALL
            .iter()
            .flat_map(|p| p.pcrs().iter().copied())
            .collect();
        out.insert(HashAlg::Sha256, all);
    }
    out
}

/// Appraises a verified quote (and the host's event log) against the flavors.
///
/// `now` is when the evidence was appraised; the verdict holds for `validity`. RUNTIME flavors
/// need [`appraise_with_runtime`]; here they never match.
pub fn appraise(
    verified: &VerifiedQuote,
    event_log: Option<&EventLogEvidence>,
    flavors: &[Flavor],
    policy: &MatchPolicy,
    ctx: &HostContext<'_>,
    now: SystemTime,
    validity: Duration,
) -> Verdict {
    appraise_with_runtime(
        verified, event_log, None, flavors, policy, ctx, now, validity,
    )
}

/// [`appraise`], with what the verifier found in the host's IMA log for its RUNTIME flavors.
/// An IMA log that does not replay to the quoted PCR 10 makes the verdict's failure
/// [`Failure::ReplayMismatch`]; a RUNTIME flavor that does not match, a
/// [`Failure::FlavorMismatch`] of part RUNTIME, whose reasons name each failing file
/// (`RUNTIME: /usr/bin/curl: sha256:… not in policy`).
#[allow(
    clippy::too_many_arguments,
    reason = "appraise's arguments plus the runtime evidence; each is one input of the verdict"
)]
pub fn appraise_with_runtime(
    verified: &VerifiedQuote,
    event_log: Option<&EventLogEvidence>,
    runtime: Option<&RuntimeEvidence>,
    flavors: &[Flavor],
    policy: &MatchPolicy,
    ctx: &HostContext<'_>,
    now: SystemTime,
    validity: Duration,
) -> Verdict {
    // A `VerifiedQuote` is the proof that the nonce and the AK's attributes were checked:
    // `verify_quote` is the only way to make one (offline inspection makes an `InspectedQuote`).
    if let Some(log) = event_log {
        let bad = log.replay_mismatches(verified);
        if !bad.is_empty() {
            let mut reasons = vec![
                "the event log does not match the quoted PCRs (altered or incomplete log)"
                    .to_string(),
            ];
            reasons.extend(bad);
            return Verdict::failed(Failure::ReplayMismatch, reasons, now, validity);
        }
    }
    let applicable: Vec<&Flavor> = flavors.iter().filter(|f| applies(f, ctx)).collect();
    let mut required: BTreeSet<FlavorPart> = policy.required.iter().copied().collect();
    for p in &policy.required_if_defined {
        if applicable.iter().any(|f| f.part == *p) {
            required.insert(*p);
        }
    }
    let mut failures = Vec::new();
    let (mut no_flavor, mut mismatch) = (None, None);
    let mut ima_not_replayed = false;
    let mut matched = Vec::new();
    for part in required {
        let candidates: Vec<&&Flavor> = applicable.iter().filter(|f| f.part == part).collect();
        if candidates.is_empty() {
            no_flavor = no_flavor.or(Some(part));
            failures.push(format!(
                "{part}: no {part} flavor is defined; import one from a gold host"
            ));
            continue;
        }
        let mut best: Option<(&Flavor, Vec<String>, bool)> = None;
        let mut ok = None;
        for f in candidates {
            let (why, not_replayed) = check_flavor(f, verified, event_log, runtime, ctx);
            if why.is_empty() {
                ok = Some(*f);
                break;
            }
            if best.as_ref().is_none_or(|(_, b, _)| why.len() < b.len()) {
                best = Some((f, why, not_replayed));
            }
        }
        match (ok, best) {
            (Some(f), _) => {
                matched.push(format!("{part}: matches flavor {:?} ({})", f.label, f.id))
            }
            (None, Some((f, why, not_replayed))) => {
                mismatch = mismatch.or(Some(part));
                ima_not_replayed |= not_replayed;
                failures.push(format!(
                    "{part}: no {part} flavor matches; closest is {:?} ({})",
                    f.label, f.id
                ));
                failures.extend(why.into_iter().map(|w| format!("{part}: {w}")));
            }
            (None, None) => {
                mismatch = mismatch.or(Some(part));
                failures.push(format!("{part}: no {part} flavor matches"));
            }
        }
    }
    // Evidence that differs from a flavor says more than a part nobody defined yet.
    // Every failure above records its part: evidence that differs from a flavor says more
    // than a part nobody defined yet.
    match (mismatch, no_flavor) {
        // An IMA log that does not replay was altered or cut: that is the failure.
        (Some(_), _) if ima_not_replayed => {
            Verdict::failed(Failure::ReplayMismatch, failures, now, validity)
        }
        (Some(part), _) => {
            Verdict::failed(Failure::FlavorMismatch { part }, failures, now, validity)
        }
        (None, Some(part)) => Verdict::failed(Failure::NoFlavor { part }, failures, now, validity),
        (None, None) => Verdict::trusted(matched, now, validity),
    }
}
