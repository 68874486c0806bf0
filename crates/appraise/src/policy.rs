//! The match policy and [`appraise`].
//!
//! A host is trusted when every required part is matched by at least one flavor: PLATFORM and
//! OS always, HOST_UNIQUE when the host has a HOST_UNIQUE flavor ("required if defined").
//! Several flavors of one part may be valid at once (rolling out a new kernel): any one of
//! them matching is enough.
//!
//! Order of checks, each failing closed with a concrete reason:
//! 1. the quote was checked against a fresh nonce and a TPM-resident restricted AK;
//! 2. the event log, when present, replays to the quoted PCR values (else it is not believed);
//! 3. each required part is matched by one of its flavors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use nodetrust_tpm_wire::{HashAlg, VerifiedQuote};

use crate::diff;
use crate::evidence::EventLogEvidence;
use crate::flavor::{Flavor, FlavorPart, PcrRule};
use crate::verdict::{Failure, Verdict};

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
            required_if_defined: vec![FlavorPart::HostUnique],
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
    let host_events: Option<Vec<(&str, &[u8])>> = log.map(|l| {
        l.events_for(bank, index)
            .filter(|(e, _)| rule.scope.includes(&e.label))
            .map(|(e, d)| (e.label.as_str(), d))
            .collect()
    });
    match &rule.value {
        Some(expected) => {
            let Some(found) = quoted else {
                return vec![format!("PCR {index} ({bank}) was not in the quote")];
            };
            if found == expected.as_slice() {
                return Vec::new();
            }
            let explained = match &host_events {
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
            let Some(actual) = host_events else {
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

/// Why `flavor` does not match (empty when it does).
fn check_flavor(
    flavor: &Flavor,
    verified: &VerifiedQuote,
    log: Option<&EventLogEvidence>,
    ctx: &HostContext<'_>,
) -> Vec<String> {
    let mut out: Vec<String> = flavor
        .pcrs
        .iter()
        .flat_map(|r| check_rule(r, verified, log))
        .collect();
    if ctx.software_tpm && !flavor.allow_software_tpm {
        out.push("the host's TPM is a software TPM, which this flavor does not allow".to_string());
    }
    out
}

/// Whether `flavor` applies to the host (HOST_UNIQUE flavors apply to their own host only).
fn applies(flavor: &Flavor, ctx: &HostContext<'_>) -> bool {
    flavor.part != FlavorPart::HostUnique || flavor.host_name.as_deref() == Some(ctx.host_name)
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
/// `now` is when the evidence was appraised; the verdict holds for `validity`.
pub fn appraise(
    verified: &VerifiedQuote,
    event_log: Option<&EventLogEvidence>,
    flavors: &[Flavor],
    policy: &MatchPolicy,
    ctx: &HostContext<'_>,
    now: SystemTime,
    validity: Duration,
) -> Verdict {
    if !verified.nonce_checked() {
        return Verdict::failed(
            Failure::NonceNotChecked,
            vec!["the quote was not checked against a fresh nonce".to_string()],
            now,
            validity,
        );
    }
    if !verified.ak_attributes_checked() {
        return Verdict::failed(
            Failure::AkNotChecked,
            vec![
                "the quote was not verified with a TPM-resident restricted signing AK".to_string(),
            ],
            now,
            validity,
        );
    }
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
        let mut best: Option<(&Flavor, Vec<String>)> = None;
        let mut ok = None;
        for f in candidates {
            let why = check_flavor(f, verified, event_log, ctx);
            if why.is_empty() {
                ok = Some(*f);
                break;
            }
            if best.as_ref().is_none_or(|(_, b)| why.len() < b.len()) {
                best = Some((f, why));
            }
        }
        match (ok, best) {
            (Some(f), _) => {
                matched.push(format!("{part}: matches flavor {:?} ({})", f.label, f.id))
            }
            (None, Some((f, why))) => {
                mismatch = mismatch.or(Some(part));
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
        (Some(part), _) => {
            Verdict::failed(Failure::FlavorMismatch { part }, failures, now, validity)
        }
        (None, Some(part)) => Verdict::failed(Failure::NoFlavor { part }, failures, now, validity),
        (None, None) => Verdict::trusted(matched, now, validity),
    }
}
