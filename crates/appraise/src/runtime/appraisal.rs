//! Incremental appraisal of one host's IMA log.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use nodetrust_eventlog::ima::{boot_aggregate, BankRule, ImaEntry};
use nodetrust_tpm_wire::{HashAlg, PcrValues};
use serde::{Deserialize, Serialize};

use super::compiled::{AllowedBy, CompiledPolicy, EntryDecision};
use super::keys::KeyId;
use super::policy::BootAggregateRule;
use super::IMA_PCR;

mod fast;

/// Failures kept (and listed in reasons) per host; the rest are counted.
pub const MAX_LISTED_FAILURES: usize = 20;
/// Longest path kept in a failure (longer ones are cut, marked `…`).
const MAX_REASON_PATH: usize = 512;

/// Why one entry is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureKind {
    /// Neither listed, excluded nor signed by a trusted key.
    NotInPolicy {
        /// The logged digest, `alg:hex`.
        digest: String,
    },
    /// Signed by a key the policy does not trust.
    UnknownKey {
        /// The signature's key id.
        key_id: KeyId,
    },
    /// Signed by a trusted key, but the signature does not hold.
    BadSignature {
        /// The signature's key id.
        key_id: KeyId,
        /// Why.
        why: String,
    },
    /// A signature field that is not an IMA v2 signature.
    MalformedSignature {
        /// Why.
        why: String,
    },
    /// An IMA violation under [`ViolationRule::Fail`](super::ViolationRule::Fail).
    Violation,
    /// The `boot_aggregate` entry does not match the quote, or is missing.
    BootAggregate {
        /// Why.
        why: String,
    },
    /// The logged template hash is not the hash of the entry's data (and no verified bank
    /// binds the data), so the path and digest shown cannot be believed.
    TemplateHash,
    /// A template runtime policies do not appraise (`ima-buf`, `ima-modsig`, ...).
    Template {
        /// Its name.
        name: String,
    },
}

impl FailureKind {
    /// A stable label: `not_in_policy`, `unknown_key`, `bad_signature`,
    /// `malformed_signature`, `violation`, `boot_aggregate`, `template_hash`, `template`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotInPolicy { .. } => "not_in_policy",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature { .. } => "bad_signature",
            Self::MalformedSignature { .. } => "malformed_signature",
            Self::Violation => "violation",
            Self::BootAggregate { .. } => "boot_aggregate",
            Self::TemplateHash => "template_hash",
            Self::Template { .. } => "template",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInPolicy { digest } => write!(f, "{digest} not in policy"),
            Self::UnknownKey { key_id } => write!(f, "signature by unknown key {key_id}"),
            Self::BadSignature { key_id, why } => {
                write!(f, "signature by key {key_id} is not valid: {why}")
            }
            Self::MalformedSignature { why } => write!(f, "unreadable signature: {why}"),
            Self::Violation => f.write_str(
                "IMA violation (the file was measured while open for writing, or written \
                 while measured; logged as zeros, extended as all-ones)",
            ),
            Self::BootAggregate { why } => f.write_str(why),
            Self::TemplateHash => f.write_str(
                "the logged template hash is not the hash of the entry (the entry was edited)",
            ),
            Self::Template { name } => {
                write!(f, "template {name} is not appraised by runtime policies")
            }
        }
    }
}

/// One entry that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeFailure {
    /// Position in the whole log (0 is `boot_aggregate`).
    pub entry: u64,
    /// The file's path as logged (control characters escaped, cut at 512 characters).
    pub path: String,
    /// Why.
    #[serde(flatten)]
    pub kind: FailureKind,
}

impl std::fmt::Display for RuntimeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RUNTIME: {}: {}", self.path, self.kind)
    }
}

/// Why the new entries could not be appraised at all. The state is left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeProblem {
    /// No bank the appraisal follows had PCR 10 in the quote.
    PcrNotQuoted,
    /// The log extends another PCR, which the quote lacks.
    OtherPcrNotQuoted {
        /// That PCR.
        pcr: u32,
    },
    /// An entry names a PCR above 23.
    BadPcr {
        /// Position in the whole log.
        entry: u64,
        /// The PCR.
        pcr: u32,
    },
    /// No prefix of the new entries replays to the quoted PCR 10.
    NotReplayed {
        /// The first quoted bank that differs.
        bank: HashAlg,
        /// Entries appraised before plus entries received.
        entries: u64,
        /// What the whole received log replays to.
        replayed: Vec<u8>,
        /// What the TPM quoted.
        quoted: Vec<u8>,
    },
    /// The entries do not start where the state stopped.
    Gap {
        /// Entries appraised so far.
        have: u64,
        /// Where the given entries start.
        start: u64,
    },
    /// The policy is not the one the state was built with, and the entries do not start at 0.
    PolicyChanged,
}

impl RuntimeProblem {
    /// A stable label: `pcr_not_quoted`, `bad_pcr`, `replay_mismatch`, `gap`,
    /// `policy_changed`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::PcrNotQuoted | Self::OtherPcrNotQuoted { .. } => "pcr_not_quoted",
            Self::BadPcr { .. } => "bad_pcr",
            Self::NotReplayed { .. } => "replay_mismatch",
            Self::Gap { .. } => "gap",
            Self::PolicyChanged => "policy_changed",
        }
    }
}

fn short(d: &[u8]) -> String {
    let h = hex::encode(d);
    h.get(..16).map(|s| format!("{s}…")).unwrap_or(h)
}

impl std::fmt::Display for RuntimeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PcrNotQuoted => {
                f.write_str("RUNTIME: PCR 10 was not quoted, so the IMA log cannot be checked")
            }
            Self::OtherPcrNotQuoted { pcr } => write!(
                f,
                "RUNTIME: the IMA log extends PCR {pcr}, which was not quoted"
            ),
            Self::BadPcr { entry, pcr } => {
                write!(
                    f,
                    "RUNTIME: IMA entry {entry} names PCR {pcr} (0 to 23 exist)"
                )
            }
            Self::NotReplayed {
                bank,
                entries,
                replayed,
                quoted,
            } => write!(
                f,
                "RUNTIME: the IMA log does not replay to the quoted PCR 10 ({bank}: its {entries} \
                 entries give {}, the TPM quoted {}): the log was altered, truncated or reordered",
                short(replayed),
                short(quoted)
            ),
            Self::Gap { have, start } => write!(
                f,
                "RUNTIME: the IMA entries sent start at entry {start}, but {have} are appraised \
                 (ask from entry {have}, or from 0)"
            ),
            Self::PolicyChanged => f.write_str(
                "RUNTIME: the runtime policy changed; the log must be appraised again from entry 0",
            ),
        }
    }
}

/// What was allowed in one call, by why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllowedCounts {
    /// Listed digests.
    pub digest: u64,
    /// Excluded paths.
    pub excluded: u64,
    /// Signatures by trusted keys.
    pub signature: u64,
    /// Violations under `allow`.
    pub violation: u64,
    /// The boot aggregate (checked or ignored).
    pub boot_aggregate: u64,
}

/// The result of one [`RuntimeAppraisal::appraise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOutcome {
    /// Why nothing was appraised (the state did not change), if so.
    pub problem: Option<RuntimeProblem>,
    /// Entries appraised by this call.
    pub appraised: u64,
    /// Entries appraised since entry 0: where the next call starts.
    pub entries: u64,
    /// Entries received past the quoted PCR 10 (logged after the quote): not appraised, asked
    /// for again next time.
    pub unquoted: u64,
    /// Entries of this call that failed.
    pub new_failures: u64,
    /// Failing entries since entry 0.
    pub failures_total: u64,
    /// The first [`MAX_LISTED_FAILURES`] of them.
    pub failures: Vec<RuntimeFailure>,
    /// Violations since entry 0 (allowed or not).
    pub violations: u64,
    /// What this call allowed, by why.
    pub allowed: AllowedCounts,
}

impl RuntimeOutcome {
    /// Trusted: the log replays to the quote and no entry since 0 failed.
    pub fn is_trusted(&self) -> bool {
        self.problem.is_none() && self.failures_total == 0
    }

    /// The sentences of an untrusted verdict (empty when trusted): the problem, or each
    /// listed failure (`RUNTIME: /usr/bin/curl: sha256:… not in policy`) and how many more.
    pub fn reasons(&self) -> Vec<String> {
        if let Some(p) = &self.problem {
            return vec![p.to_string()];
        }
        let mut out: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
        let listed = self.failures.len() as u64;
        if self.failures_total > listed {
            out.push(format!(
                "RUNTIME: {} more entries not allowed ({} in all)",
                self.failures_total - listed,
                self.failures_total
            ));
        }
        out
    }

    /// A stable label for metrics: `None` when trusted, else the problem's label or
    /// `runtime_policy`.
    pub fn label(&self) -> Option<&'static str> {
        match (&self.problem, self.failures_total) {
            (Some(p), _) => Some(p.label()),
            (None, 0) => None,
            (None, _) => Some("runtime_policy"),
        }
    }
}

/// One running PCR value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Running {
    bank: HashAlg,
    pcr: u32,
    value: Vec<u8>,
}

/// One host's incremental state. Serialise it (serde JSON) between attestations; it is a few
/// hundred bytes: counts, one value per (bank, PCR), the policy's fingerprint and at most
/// [`MAX_LISTED_FAILURES`] failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StateJson", into = "StateJson")]
pub struct RuntimeAppraisal {
    entries: u64,
    policy: String,
    bank_rule: BankRule,
    running: Vec<Running>,
    violations: u64,
    failures_total: u64,
    failures: Vec<RuntimeFailure>,
    /// Failures kept; not stored (a state read back keeps [`MAX_LISTED_FAILURES`]).
    limit: usize,
}

/// The JSON form of [`RuntimeAppraisal`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateJson {
    entries: u64,
    #[serde(default)]
    policy: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    padded_sha1: bool,
    /// `{"sha256": {"10": "hex"}}`
    #[serde(default)]
    pcrs: BTreeMap<String, BTreeMap<u32, String>>,
    #[serde(default)]
    violations: u64,
    #[serde(default)]
    failures_total: u64,
    #[serde(default)]
    failures: Vec<RuntimeFailure>,
}

impl From<RuntimeAppraisal> for StateJson {
    fn from(s: RuntimeAppraisal) -> Self {
        let mut pcrs: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
        for r in &s.running {
            pcrs.entry(r.bank.name().to_string())
                .or_default()
                .insert(r.pcr, hex::encode(&r.value));
        }
        Self {
            entries: s.entries,
            policy: s.policy,
            padded_sha1: s.bank_rule == BankRule::PaddedSha1,
            pcrs,
            violations: s.violations,
            failures_total: s.failures_total,
            failures: s.failures,
        }
    }
}

impl TryFrom<StateJson> for RuntimeAppraisal {
    type Error = String;
    fn try_from(j: StateJson) -> Result<Self, String> {
        let mut running = Vec::new();
        for (bank, values) in &j.pcrs {
            let alg = HashAlg::from_name(bank).ok_or_else(|| format!("unknown bank {bank:?}"))?;
            for (pcr, v) in values {
                let value = hex::decode(v).map_err(|_| format!("{bank} PCR {pcr}: not hex"))?;
                if value.len() != alg.size() || *pcr >= 24 {
                    return Err(format!("{bank} PCR {pcr}: not a PCR value"));
                }
                running.push(Running {
                    bank: alg,
                    pcr: *pcr,
                    value,
                });
            }
        }
        if j.failures.len() > MAX_LISTED_FAILURES || (j.failures.len() as u64) > j.failures_total {
            return Err("more failures listed than counted or kept".to_string());
        }
        Ok(Self {
            entries: j.entries,
            policy: j.policy,
            bank_rule: if j.padded_sha1 {
                BankRule::PaddedSha1
            } else {
                BankRule::Recompute
            },
            running,
            violations: j.violations,
            failures_total: j.failures_total,
            failures: j.failures,
            limit: MAX_LISTED_FAILURES,
        })
    }
}

impl Default for RuntimeAppraisal {
    fn default() -> Self {
        Self::new()
    }
}

fn ring(alg: HashAlg) -> &'static digest::Algorithm {
    match alg {
        HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    }
}

fn extend_alg(alg: HashAlg) -> nodetrust_extend::Alg {
    match alg {
        HashAlg::Sha1 => nodetrust_extend::Alg::Sha1,
        HashAlg::Sha256 => nodetrust_extend::Alg::Sha256,
        HashAlg::Sha384 => nodetrust_extend::Alg::Sha384,
        HashAlg::Sha512 => nodetrust_extend::Alg::Sha512,
    }
}

/// The value an entry extends into `bank` (as [`ImaEntry::extend_digest`], without
/// allocating).
fn extend_value(e: &ImaEntry, bank: HashAlg, rule: BankRule, out: &mut [u8; 64]) -> usize {
    let n = bank.size();
    let dst = out.get_mut(..n).unwrap_or_default();
    if e.is_violation() {
        dst.fill(0xFF);
        return n;
    }
    let logged = e.template_hash.as_slice();
    let logged_is_bank = match bank {
        HashAlg::Sha1 => logged.len() == 20,
        HashAlg::Sha256 => logged.len() == 32,
        _ => false,
    };
    if logged_is_bank {
        dst.copy_from_slice(logged.get(..n).unwrap_or_default());
        return n;
    }
    match rule {
        BankRule::Recompute => {
            let d = digest::digest(ring(bank), &e.template_data);
            dst.copy_from_slice(d.as_ref().get(..n).unwrap_or_default());
        }
        BankRule::PaddedSha1 => {
            dst.fill(0);
            let d;
            let sha1: &[u8] = if logged.len() == 20 {
                logged
            } else {
                d = digest::digest(ring(HashAlg::Sha1), &e.template_data);
                d.as_ref()
            };
            let m = sha1.len().min(n);
            if let (Some(a), Some(b)) = (dst.get_mut(..m), sha1.get(..m)) {
                a.copy_from_slice(b);
            }
        }
    }
    n
}

/// Whether extending `bank` binds the entry's template data (rather than only its logged
/// hash).
fn binds_data(bank: HashAlg, rule: BankRule, logged_len: usize) -> bool {
    match (bank, logged_len) {
        (HashAlg::Sha1, 20) | (HashAlg::Sha256, 32) => false,
        (_, 20) => rule == BankRule::Recompute,
        _ => true,
    }
}

/// Control characters escaped, cut at [`MAX_REASON_PATH`] characters.
fn clean_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len().min(MAX_REASON_PATH));
    for (i, c) in p.chars().enumerate() {
        if i >= MAX_REASON_PATH {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl RuntimeAppraisal {
    /// Nothing appraised yet; banks other than SHA-1 extended as Linux >= 5.1 does.
    pub fn new() -> Self {
        Self::with_bank_rule(BankRule::Recompute)
    }

    /// Nothing appraised yet, with `rule` for banks other than SHA-1 (`PaddedSha1` for
    /// kernels before 5.1).
    pub fn with_bank_rule(rule: BankRule) -> Self {
        Self {
            entries: 0,
            policy: String::new(),
            bank_rule: rule,
            running: Vec::new(),
            violations: 0,
            failures_total: 0,
            failures: Vec::new(),
            limit: MAX_LISTED_FAILURES,
        }
    }

    /// Keeps up to `n` failures instead of [`MAX_LISTED_FAILURES`] (an offline check that
    /// lists every failing file). Not stored: a state read back from JSON keeps the default.
    pub fn with_failure_limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }

    /// Entries appraised since entry 0.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Where the next request for the log should start: [`entries`](Self::entries), or 0
    /// when `policy` is not the one this state was built with.
    pub fn next_offset(&self, policy: &CompiledPolicy) -> u64 {
        if self.policy == policy.fingerprint() {
            self.entries
        } else {
            0
        }
    }

    /// The fingerprint of the policy the state was built with (empty before the first call).
    pub fn policy_fingerprint(&self) -> &str {
        &self.policy
    }

    /// Failing entries since entry 0.
    pub fn failures_total(&self) -> u64 {
        self.failures_total
    }

    /// The first [`MAX_LISTED_FAILURES`] failing entries.
    pub fn failures(&self) -> &[RuntimeFailure] {
        &self.failures
    }

    /// Violations since entry 0.
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// The running value of `pcr` in `bank`, once an appraisal has followed that bank.
    pub fn pcr(&self, bank: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.running
            .iter()
            .find(|r| r.bank == bank && r.pcr == pcr)
            .map(|r| r.value.as_slice())
    }

    fn outcome(&self, problem: Option<RuntimeProblem>) -> RuntimeOutcome {
        RuntimeOutcome {
            problem,
            appraised: 0,
            entries: self.entries,
            unquoted: 0,
            new_failures: 0,
            failures_total: self.failures_total,
            failures: self.failures.clone(),
            violations: self.violations,
            allowed: AllowedCounts::default(),
        }
    }

    fn record(&mut self, entry: u64, path: &str, kind: FailureKind) {
        self.failures_total += 1;
        if self.failures.len() < self.limit {
            self.failures.push(RuntimeFailure {
                entry,
                path: clean_path(path),
                kind,
            });
        }
    }

    /// Appraises `new_entries`, which are the log's entries from position `first_entry` on
    /// (as the agent sent them, possibly more than the quote covers), against `policy` and
    /// `quoted` (the verified quote's PCRs: PCR 10 in one or more banks, and PCRs 0–9 of the
    /// `boot_aggregate` entry's bank when the log starts here).
    ///
    /// - `first_entry == 0` starts over (a reboot, a new policy, a first attestation): the
    ///   banks followed are those with PCR 10 in this quote.
    /// - Otherwise `first_entry` must equal [`entries`](Self::entries) and the policy must be
    ///   the state's ([`RuntimeProblem::Gap`], [`RuntimeProblem::PolicyChanged`]).
    ///
    /// The entries are extended onto the running PCRs; the longest prefix after which every
    /// quoted bank equals the quote is appraised and kept, the rest is left for the next call
    /// ([`RuntimeOutcome::unquoted`]). No such prefix: [`RuntimeProblem::NotReplayed`] and the
    /// state is unchanged.
    pub fn appraise(
        &mut self,
        policy: &CompiledPolicy,
        first_entry: u64,
        new_entries: &[ImaEntry],
        quoted: &PcrValues,
    ) -> RuntimeOutcome {
        if first_entry == 0 {
            if self.entries != 0 || !self.running.is_empty() || self.policy != policy.fingerprint()
            {
                *self = Self::with_bank_rule(self.bank_rule).with_failure_limit(self.limit);
            }
            self.policy = policy.fingerprint().to_string();
        } else if self.policy != policy.fingerprint() {
            return self.outcome(Some(RuntimeProblem::PolicyChanged));
        } else if first_entry != self.entries {
            return self.outcome(Some(RuntimeProblem::Gap {
                have: self.entries,
                start: first_entry,
            }));
        }
        let ima_pcr = u32::from(IMA_PCR);
        let mut work = self.running.clone();
        if work.is_empty() {
            // Fresh: follow every bank quoted with PCR 10, from the reset value (zero).
            for bank in quoted.banks() {
                if quoted.get(bank, IMA_PCR).is_some() {
                    work.push(Running {
                        bank,
                        pcr: ima_pcr,
                        value: vec![0; bank.size()],
                    });
                }
            }
        }
        let verified: Vec<HashAlg> = {
            let mut v: Vec<HashAlg> = work
                .iter()
                .filter(|r| r.pcr == ima_pcr && quoted.get(r.bank, IMA_PCR).is_some())
                .map(|r| r.bank)
                .collect();
            v.dedup();
            v
        };
        if verified.is_empty() {
            return self.outcome(Some(RuntimeProblem::PcrNotQuoted));
        }
        let banks: Vec<HashAlg> = {
            let mut b: Vec<HashAlg> = work.iter().map(|r| r.bank).collect();
            b.sort();
            b.dedup();
            b
        };
        let rule = self.bank_rule;

        // 1. Replay, remembering the last position where the quote holds.
        let matches = |work: &[Running]| -> Result<bool, u32> {
            for r in work.iter().filter(|r| verified.contains(&r.bank)) {
                let pcr = u8::try_from(r.pcr).map_err(|_| r.pcr)?;
                match quoted.get(r.bank, pcr) {
                    Some(q) if q == r.value.as_slice() => {}
                    Some(_) => return Ok(false),
                    None => return Err(r.pcr),
                }
            }
            Ok(true)
        };
        let mut last: Option<(usize, Vec<Running>)> = None;
        match matches(&work) {
            Ok(true) => last = Some((0, work.clone())),
            Ok(false) => {}
            Err(pcr) => return self.outcome(Some(RuntimeProblem::OtherPcrNotQuoted { pcr })),
        }
        let mut buf = [0u8; 64];
        for (i, e) in new_entries.iter().enumerate() {
            if e.pcr >= 24 {
                return self.outcome(Some(RuntimeProblem::BadPcr {
                    entry: first_entry + i as u64,
                    pcr: e.pcr,
                }));
            }
            for &bank in &banks {
                let n = extend_value(e, bank, rule, &mut buf);
                let idx = match work.iter().position(|r| r.bank == bank && r.pcr == e.pcr) {
                    Some(i) => i,
                    None => {
                        work.push(Running {
                            bank,
                            pcr: e.pcr,
                            value: vec![0; bank.size()],
                        });
                        work.len() - 1
                    }
                };
                if let Some(r) = work.get_mut(idx) {
                    // Block-level extend (no hasher to set up); sizes are the bank's.
                    nodetrust_extend::extend(
                        extend_alg(bank),
                        &mut r.value,
                        buf.get(..n).unwrap_or_default(),
                    );
                }
            }
            match matches(&work) {
                Ok(true) => last = Some((i + 1, work.clone())),
                Ok(false) => {}
                Err(pcr) => return self.outcome(Some(RuntimeProblem::OtherPcrNotQuoted { pcr })),
            }
        }
        let Some((covered, replayed)) = last else {
            let bank = verified.first().copied().unwrap_or(HashAlg::Sha256);
            let value = |vals: &[Running]| {
                vals.iter()
                    .find(|r| r.bank == bank && r.pcr == ima_pcr)
                    .map(|r| r.value.clone())
                    .unwrap_or_default()
            };
            return self.outcome(Some(RuntimeProblem::NotReplayed {
                bank,
                entries: self.entries + new_entries.len() as u64,
                replayed: value(&work),
                quoted: quoted.get(bank, IMA_PCR).unwrap_or_default().to_vec(),
            }));
        };

        // 2. Appraise the entries the quote covers.
        let mut allowed = AllowedCounts::default();
        let before = self.failures_total;
        for (i, e) in new_entries.iter().take(covered).enumerate() {
            let at = first_entry + i as u64;
            if e.is_violation() {
                self.violations += 1;
            } else if !verified
                .iter()
                .any(|b| binds_data(*b, rule, e.template_hash.len()))
            {
                let alg = if e.template_hash.len() == 32 {
                    HashAlg::Sha256
                } else {
                    HashAlg::Sha1
                };
                if digest::digest(ring(alg), &e.template_data).as_ref() != e.template_hash {
                    self.record(at, &e.path, FailureKind::TemplateHash);
                    continue;
                }
            }
            if at == 0 && policy.boot_aggregate() == BootAggregateRule::Require {
                if e.path == "boot_aggregate" {
                    match check_boot_aggregate(e, quoted) {
                        Ok(()) => allowed.boot_aggregate += 1,
                        Err(why) => self.record(at, &e.path, FailureKind::BootAggregate { why }),
                    }
                    continue;
                }
                self.record(
                    at,
                    "boot_aggregate",
                    FailureKind::BootAggregate {
                        why: "the IMA log does not start with boot_aggregate".to_string(),
                    },
                );
            } else if at == 0 && e.path == "boot_aggregate" {
                allowed.boot_aggregate += 1;
                continue;
            }
            match policy.check_entry(e) {
                EntryDecision::Allowed(by) => match by {
                    AllowedBy::Digest => allowed.digest += 1,
                    AllowedBy::Excluded => allowed.excluded += 1,
                    AllowedBy::Signature(_) => allowed.signature += 1,
                    AllowedBy::Violation => allowed.violation += 1,
                    AllowedBy::BootAggregate => allowed.boot_aggregate += 1,
                },
                EntryDecision::Failed(kind) => {
                    let path = if e.path.is_empty() {
                        format!("entry {at} ({})", e.template.name())
                    } else {
                        e.path.clone()
                    };
                    self.record(at, &path, kind);
                }
            }
        }
        self.entries += covered as u64;
        self.running = replayed;
        RuntimeOutcome {
            problem: None,
            appraised: covered as u64,
            entries: self.entries,
            unquoted: (new_entries.len() - covered) as u64,
            new_failures: self.failures_total - before,
            failures_total: self.failures_total,
            failures: self.failures.clone(),
            violations: self.violations,
            allowed,
        }
    }
}

/// The `boot_aggregate` entry against the quoted PCRs 0–9 (or 0–7) of its digest's bank.
fn check_boot_aggregate(e: &ImaEntry, quoted: &PcrValues) -> Result<(), String> {
    check_boot_aggregate_parts(&e.file_alg, &e.file_digest, quoted)
}

/// [`check_boot_aggregate`] of an entry's digest algorithm and digest.
fn check_boot_aggregate_parts(
    file_alg: &str,
    file_digest: &[u8],
    quoted: &PcrValues,
) -> Result<(), String> {
    let Some(bank) = HashAlg::from_name(file_alg) else {
        return Err(format!(
            "its digest algorithm {} is not a PCR bank this verifier reads",
            clean_path(file_alg)
        ));
    };
    let full = boot_aggregate(quoted, bank, 9);
    let old = boot_aggregate(quoted, bank, 7);
    if full.is_none() && old.is_none() {
        return Err(format!(
            "PCRs 0-9 of the {bank} bank were not quoted, so {bank}:{} cannot be checked",
            hex::encode(file_digest)
        ));
    }
    if full.as_deref() == Some(file_digest) || old.as_deref() == Some(file_digest) {
        return Ok(());
    }
    Err(format!(
        "{bank}:{} is not the hash of the quoted PCRs 0-9 ({bank}:{}) nor 0-7",
        hex::encode(file_digest),
        full.or(old).map(hex::encode).unwrap_or_default()
    ))
}
