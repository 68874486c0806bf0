//! Runtime integrity on the server: each host's IMA log appraised incrementally against the
//! RUNTIME flavors that apply to it.
//!
//! Per host the store keeps ([`ImaStateRow`]) the number of entries already appraised and, per
//! RUNTIME flavor, the appraisal state ([`RuntimeAppraisal`]: the running PCR 10 per bank, the
//! failures so far), for one boot (the quote's resetCount and restartCount) and one AK. An
//! attestation:
//! 1. [`plan`]: the RUNTIME flavors that apply, their compiled policies (cached per flavor:
//!    flavors never change, they are replaced), and the entry to ask the agent from: the
//!    stored count, or 0 when there is no state, a flavor is new, or a policy changed;
//! 2. the quote request carries `ima_offset`; the agent answers with the entries from there
//!    (bounded) and says whether more follow;
//! 3. [`appraise`]: after the quote verified, a reboot (resetCount or restartCount differ from
//!    the state's) starts over at entry 0. The new entries are appraised chunk by chunk: a
//!    chunk that ends before the quoted PCR 10 is reached is appraised against the values it
//!    replays to (it is believed only if a later chunk reaches the quote, and the state is
//!    written only then); the chunk that reaches the quoted PCR 10 is appraised against the
//!    quote itself, and entries logged after the quote are left for the next attestation. No
//!    prefix that replays to the quote: the log was altered or cut, and the host is untrusted
//!    with that reason. A push host's agent cannot be asked for another chunk within the
//!    attestation: the chunks it sent are kept as the state (the next attestation's entries
//!    must replay from them to its own quote) and the verdict is `unknown` until one does
//!    ([`FetchError::Pending`]).
//!
//! Each entry is appraised once per boot and policy: `nodetrust_ima_entries_appraised_total`
//! counts the entries whose appraisal was kept, `nodetrust_ima_entries_received_total` every
//! entry an agent sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use nodetrust_appraise::runtime::{CompiledPolicy, RuntimeAppraisal, RuntimeOutcome, IMA_PCR};
use nodetrust_appraise::{applies, Flavor, FlavorPart, HostContext, RuntimeEvidence};
use nodetrust_eventlog::ima::{BankRule, ImaEntry, ImaLog};
use nodetrust_proto::agent::{ImaEntries, ImaRequest};
use nodetrust_tpm_wire::{HashAlg, PcrValues, VerifiedQuote};
use serde::{Deserialize, Serialize};

use crate::agent_client::{AgentError, AgentTarget};
use crate::state::AppState;
use crate::store::{HostRow, ImaStateRow};

/// Most answers asked of an agent for one attestation (each at most
/// [`nodetrust_proto::agent::MAX_IMA_ENTRIES`] entries: 16 million entries in all, the most
/// one log may hold).
pub const MAX_IMA_ANSWERS: usize = 1024;

pub use crate::policy_cache::PolicyCache;

/// What is stored per host, as JSON in [`ImaStateRow::state`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    /// Flavor id → its appraisal state.
    flavors: BTreeMap<String, RuntimeAppraisal>,
}

/// What one attestation of a host with RUNTIME flavors does before the quote.
#[derive(Debug)]
pub struct Plan {
    /// Applicable RUNTIME flavors: id, and the compiled policy or why there is none.
    policies: Vec<(String, Result<Arc<CompiledPolicy>, String>)>,
    /// The stored state, if any (with its row).
    stored: Option<(ImaStateRow, Stored)>,
    /// `updated` of the stored row (readable or not): the new state replaces that one only.
    previous: Option<i64>,
    /// SHA-256 of the host's pinned AK (hex).
    ak: String,
    /// The entry to ask the agent from.
    pub offset: u64,
    /// Whether `offset` continues the stored state (every flavor's state is there, for its
    /// policy, at that entry).
    continues: bool,
    /// This host's runtime appraisal is ours until the plan is done.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

fn ak_sha256(host: &HostRow) -> String {
    hex::encode(HashAlg::Sha256.digest(host.ak_public.as_bytes()))
}

/// The RUNTIME flavors among `flavors` that apply to `host`, with their compiled policies, and
/// where to ask for its IMA log from; `None` when no RUNTIME flavor applies (the host's IMA log
/// is then neither asked for nor looked at).
pub async fn plan(
    state: &AppState,
    host: &HostRow,
    flavors: &[Flavor],
) -> Result<Option<Plan>, crate::store::StoreError> {
    let ctx = HostContext {
        host_name: &host.name,
        software_tpm: host.software_tpm,
    };
    let runtime: Vec<&Flavor> = flavors
        .iter()
        .filter(|f| f.part == FlavorPart::Runtime && applies(f, &ctx))
        .collect();
    if runtime.is_empty() {
        return Ok(None);
    }
    let mut policies = Vec::with_capacity(runtime.len());
    for f in &runtime {
        policies.push((f.id.clone(), state.runtime_policies.get(f).await));
    }
    let all_runtime: Vec<&str> = flavors
        .iter()
        .filter(|f| f.part == FlavorPart::Runtime)
        .map(|f| f.id.as_str())
        .collect();
    state.runtime_policies.retain(&all_runtime);
    let ak = ak_sha256(host);
    let turn = state.runtime_policies.lock_host(&host.name).await;
    let row = state.store.ima_state(&host.name).await?;
    let previous = row.as_ref().map(|r| r.updated);
    let stored = match row {
        Some(row) => match serde_json::from_str::<Stored>(&row.state) {
            Ok(s) => Some((row, s)),
            Err(e) => {
                tracing::warn!(host = %host.name, error = %e, "unreadable IMA state: appraising the log from entry 0");
                None
            }
        },
        None => None,
    };
    let continued = stored
        .as_ref()
        .filter(|(row, _)| row.ak_sha256 == ak)
        .and_then(|(row, s)| {
            let entries = u64::try_from(row.entries).ok()?;
            policies
                .iter()
                .all(|(id, p)| match (p, s.flavors.get(id)) {
                    (Ok(p), Some(st)) => st.next_offset(p) == entries && st.entries() == entries,
                    _ => false,
                })
                .then_some(entries)
        });
    Ok(Some(Plan {
        policies,
        stored,
        previous,
        ak,
        offset: continued.unwrap_or(0),
        continues: continued.is_some(),
        _turn: turn,
    }))
}

/// The IMA log replayed onto running PCR values, as [`RuntimeAppraisal::appraise`] replays it,
/// to know where a chunk ends (before or at the quote).
#[derive(Debug, Clone)]
struct Chain {
    /// (bank, PCR) → running value.
    values: BTreeMap<(HashAlg, u8), Vec<u8>>,
    /// Banks followed.
    banks: Vec<HashAlg>,
    /// Banks whose PCR 10 is quoted (those compared).
    verified: Vec<HashAlg>,
}

impl Chain {
    /// From an appraisal state (its running values; a fresh state follows every bank quoted
    /// with PCR 10 from zero).
    fn new(from: &RuntimeAppraisal, quoted: &PcrValues) -> Self {
        let mut values = BTreeMap::new();
        for bank in HashAlg::ALL {
            for pcr in 0..24u8 {
                if let Some(v) = from.pcr(bank, u32::from(pcr)) {
                    values.insert((bank, pcr), v.to_vec());
                }
            }
        }
        if values.is_empty() {
            for bank in quoted.banks() {
                if quoted.get(bank, IMA_PCR).is_some() {
                    values.insert((bank, IMA_PCR), vec![0; bank.size()]);
                }
            }
        }
        let mut banks: Vec<HashAlg> = values.keys().map(|(b, _)| *b).collect();
        banks.dedup();
        let verified = banks
            .iter()
            .copied()
            .filter(|b| values.contains_key(&(*b, IMA_PCR)) && quoted.get(*b, IMA_PCR).is_some())
            .collect();
        Self {
            values,
            banks,
            verified,
        }
    }

    /// Whether every followed PCR of the verified banks equals `quoted`.
    fn holds(&self, quoted: &PcrValues) -> bool {
        !self.verified.is_empty()
            && self
                .values
                .iter()
                .filter(|((b, _), _)| self.verified.contains(b))
                .all(|((b, p), v)| quoted.get(*b, *p) == Some(v.as_slice()))
    }

    /// Extends one entry; `false` for a PCR above 23 (appraisal reports it).
    fn extend(&mut self, e: &ImaEntry) -> bool {
        let Ok(pcr) = u8::try_from(e.pcr) else {
            return false;
        };
        if pcr >= 24 {
            return false;
        }
        for bank in &self.banks {
            let d = e.extend_digest(*bank, BankRule::Recompute);
            let v = self
                .values
                .entry((*bank, pcr))
                .or_insert_with(|| vec![0; bank.size()]);
            *v = bank.extend(v, &d);
        }
        true
    }

    /// `quoted` with the running values in place of the quoted ones: what a quote taken at the
    /// end of this chunk would hold.
    fn as_quote(&self, quoted: &PcrValues) -> PcrValues {
        let mut out = quoted.clone();
        for ((b, p), v) in &self.values {
            // Index and length are right by construction.
            let _ = out.insert(*b, *p, v.clone());
        }
        out
    }
}

/// Why the IMA log could not be had from the agent.
#[derive(Debug)]
pub enum FetchError {
    /// The agent gave no answer (the host is unreachable, not untrusted).
    Unreachable(AgentError),
    /// The agent answered with something that is not an IMA log: a sentence for the verdict.
    Bad(String),
    /// A push host's log goes on past what its evidence held, and its agent cannot be asked
    /// for more within this attestation: the entries it sent are appraised and kept, the rest
    /// come with its next evidence. The verdict is `unknown` until the log reaches a quote.
    Pending(String),
}

/// Checks and parses one answer.
fn parse_chunk(chunk: &ImaEntries, expected_start: u64) -> Result<Vec<ImaEntry>, String> {
    if chunk.start != expected_start {
        return Err(format!(
            "the agent sent IMA entries from {} when asked from {expected_start}",
            chunk.start
        ));
    }
    if chunk.count == 0 && chunk.more {
        return Err("the agent sent no IMA entry but said more follow".to_string());
    }
    let log = ImaLog::parse_binary(&chunk.log)
        .map_err(|e| format!("the agent's IMA log is unreadable: {e}"))?;
    if log.entries.len() as u64 != chunk.count {
        return Err(format!(
            "the agent said it sent {} IMA entries but sent {}",
            chunk.count,
            log.entries.len()
        ));
    }
    Ok(log.entries)
}

/// The next answer: `first` when it starts at `offset` (the quote's), else asked of the agent
/// (which a push host cannot be: its agent sends one answer with its evidence).
async fn next_chunk(
    state: &AppState,
    target: &AgentTarget,
    first: &mut Option<ImaEntries>,
    offset: u64,
    asked: &mut usize,
) -> Result<ImaEntries, FetchError> {
    if let Some(c) = first.take().filter(|c| c.start == offset) {
        return Ok(c);
    }
    if target.url == crate::store::PUSH_URL {
        return Err(FetchError::Bad(format!(
            "the IMA log goes on past entry {offset}, beyond what one answer holds, and a push \
             host's agent cannot be asked for the rest"
        )));
    }
    *asked += 1;
    if *asked > MAX_IMA_ANSWERS {
        return Err(FetchError::Bad(format!(
            "the IMA log needed more than {MAX_IMA_ANSWERS} answers"
        )));
    }
    let req = ImaRequest {
        offset,
        max_entries: None,
    };
    state.agents.ima(target, &req).await.map_err(|e| match e {
        e if e.is_unreachable() && !matches!(e, AgentError::Status { .. }) => {
            FetchError::Unreachable(e)
        }
        e => FetchError::Bad(format!("the agent did not send its IMA log: {e}")),
    })
}

/// Appraises the host's new IMA entries for every RUNTIME flavor of `plan`, starting from the
/// quote's answer (`first`, `None` when the agent sent no IMA log), and keeps the new state
/// when the log replayed to the quote.
pub async fn appraise(
    state: &AppState,
    host: &HostRow,
    target: &AgentTarget,
    plan: Plan,
    first: Option<ImaEntries>,
    verified: &VerifiedQuote,
) -> Result<RuntimeEvidence, FetchError> {
    let quoted = verified.pcrs();
    let clock = verified.attest().clock_info;
    let (reset, restart) = (i64::from(clock.reset_count), i64::from(clock.restart_count));
    let mut evidence = RuntimeEvidence::default();
    let mut compiled: Vec<(String, Arc<CompiledPolicy>)> = Vec::new();
    for (id, p) in plan.policies {
        match p {
            Ok(p) => compiled.push((id, p)),
            Err(why) => {
                evidence.outcomes.insert(id, Err(why));
            }
        }
    }
    if compiled.is_empty() {
        return Ok(evidence);
    }
    let same_boot = plan.stored.as_ref().is_some_and(|(row, _)| {
        row.ak_sha256 == plan.ak && row.reset_count == reset && row.restart_count == restart
    });
    let (start, mut states, restarted): (u64, Vec<RuntimeAppraisal>, Option<&str>) =
        match &plan.stored {
            Some((_, stored)) if same_boot && plan.continues => (
                plan.offset,
                compiled
                    .iter()
                    .map(|(id, _)| stored.flavors.get(id).cloned().unwrap_or_default())
                    .collect(),
                None,
            ),
            _ => {
                let why = match &plan.stored {
                    Some(_) if !same_boot => "reboot",
                    Some((_, s)) if !s.flavors.is_empty() => "policy_changed",
                    _ => "new",
                };
                (0, vec![RuntimeAppraisal::new(); compiled.len()], Some(why))
            }
        };
    let Some(first_state) = states.first() else {
        return Ok(evidence);
    };
    let mut chain = Chain::new(first_state, quoted);
    let mut first = first;
    if first.is_none() {
        for (id, _) in &compiled {
            evidence.outcomes.insert(
                id.clone(),
                Err("the host sent no IMA log (a kernel without IMA, or the agent's --ima-log does not point at it)".to_string()),
            );
        }
        return Ok(evidence);
    }
    if let Some(why) = restarted {
        state.metrics.ima_restart(why);
    }
    if start == 0
        && target.url == crate::store::PUSH_URL
        && first.as_ref().is_some_and(|c| c.start != 0)
    {
        // A push host that rebooted sent its log from the old boot's offset and cannot be asked
        // again: its next evidence is asked from entry 0 (an empty state for this boot).
        let row = ImaStateRow {
            host_name: host.name.clone(),
            ak_sha256: plan.ak.clone(),
            reset_count: reset,
            restart_count: restart,
            entries: 0,
            state: "{\"flavors\":{}}".to_string(),
            updated: state
                .now_ms()
                .max(plan.previous.unwrap_or(0).saturating_add(1)),
        };
        state
            .store
            .put_ima_state(&row, plan.previous)
            .await
            .map_err(|e| {
                FetchError::Bad(format!("the IMA appraisal state could not be saved: {e}"))
            })?;
        return Err(FetchError::Pending(
            "the host rebooted; its IMA log is appraised from entry 0 with its next evidence"
                .to_string(),
        ));
    }
    let mut next = start;
    let mut asked = 0usize;
    let mut appraised = 0u64;
    let outcomes: Vec<RuntimeOutcome> = loop {
        let chunk = match next_chunk(state, target, &mut first, next, &mut asked).await {
            Ok(c) => c,
            Err(FetchError::Bad(why)) => {
                for (id, _) in &compiled {
                    evidence.outcomes.insert(id.clone(), Err(why.clone()));
                }
                return Ok(evidence);
            }
            Err(e) => return Err(e),
        };
        let entries = match parse_chunk(&chunk, next) {
            Ok(e) => e,
            Err(why) => {
                for (id, _) in &compiled {
                    evidence.outcomes.insert(id.clone(), Err(why.clone()));
                }
                return Ok(evidence);
            }
        };
        state.metrics.ima_received(entries.len() as u64);
        if let Some(why) = &chunk.error {
            evidence.notes.push(format!(
                "the agent could not read its IMA log past entry {}: {why}",
                next + chunk.count
            ));
        }
        if let Some(total) = chunk.total.filter(|t| *t < next) {
            evidence.notes.push(format!(
                "the agent's IMA log holds {total} entries, but {next} were appraised before in this boot (a truncated log)"
            ));
        }
        // Does the quote fall inside this chunk?
        let mut reached = chain.holds(quoted);
        let mut bad_pcr = false;
        for e in &entries {
            if !chain.extend(e) {
                bad_pcr = true;
                break;
            }
            reached |= chain.holds(quoted);
        }
        if reached || bad_pcr || !chunk.more {
            // Against the quote itself: the entries it covers are kept, the rest asked for again.
            break states
                .iter_mut()
                .zip(&compiled)
                .map(|(st, (_, p))| st.appraise(p, next, &entries, quoted))
                .collect();
        }
        // Ends before the quote: appraised against what it replays to; believed only if a
        // later chunk reaches the quote (the state is written only then).
        let at_end = chain.as_quote(quoted);
        let outs: Vec<RuntimeOutcome> = states
            .iter_mut()
            .zip(&compiled)
            .map(|(st, (_, p))| st.appraise(p, next, &entries, &at_end))
            .collect();
        if outs.iter().any(|o| o.problem.is_some()) {
            break outs;
        }
        appraised += outs.first().map_or(0, |o| o.appraised);
        next += entries.len() as u64;
        if target.url == crate::store::PUSH_URL {
            // A push host's agent cannot be asked for the rest now. What it sent is kept as
            // the start of the next attestation: that one's entries must replay from these
            // values to its own quote, or the host is untrusted then (a forged prefix cannot
            // be continued to a real quote). Its findings are reported once the log reaches a
            // quote; until then the verdict is unknown.
            if save_state(
                state,
                host,
                (&plan.ak, plan.previous),
                (reset, restart),
                next,
                &compiled,
                states,
            )
            .await
            {
                state.metrics.ima_appraised(appraised);
            }
            return Err(FetchError::Pending(format!(
                "the IMA log is being appraised over several pushes: {next} entries so far, the \
                 rest with the host's next evidence"
            )));
        }
    };
    let replayed = outcomes.iter().all(|o| o.problem.is_none());
    let entries = outcomes.first().map_or(0, |o| o.entries);
    if replayed && outcomes.iter().all(|o| o.entries == entries) {
        appraised += outcomes.first().map_or(0, |o| o.appraised);
        if save_state(
            state,
            host,
            (&plan.ak, plan.previous),
            (reset, restart),
            entries,
            &compiled,
            states,
        )
        .await
        {
            state.metrics.ima_appraised(appraised);
        }
    }
    for ((id, _), o) in compiled.into_iter().zip(outcomes) {
        evidence.outcomes.insert(id, Ok(o));
    }
    Ok(evidence)
}

/// Writes a host's IMA appraisal state for the AK `ak`: `entries` appraised in the boot
/// `(reset, restart)`, and each flavor's state. Conditional on the state read before
/// (`previous`, its time): another attestation's newer write wins. Returns whether it was
/// written.
async fn save_state(
    state: &AppState,
    host: &HostRow,
    (ak, previous): (&str, Option<i64>),
    (reset, restart): (i64, i64),
    entries: u64,
    compiled: &[(String, Arc<CompiledPolicy>)],
    states: Vec<RuntimeAppraisal>,
) -> bool {
    let stored = Stored {
        flavors: compiled
            .iter()
            .map(|(id, _)| id.clone())
            .zip(states)
            .collect(),
    };
    let json = match serde_json::to_string(&stored) {
        Ok(json) => json,
        Err(e) => {
            tracing::error!(host = %host.name, error = %e, "IMA state not serialisable");
            return false;
        }
    };
    let row = ImaStateRow {
        host_name: host.name.clone(),
        ak_sha256: ak.to_string(),
        reset_count: reset,
        restart_count: restart,
        entries: i64::try_from(entries).unwrap_or(i64::MAX),
        state: json,
        // Strictly after the state it replaces: the write is conditional on it.
        updated: state.now_ms().max(previous.unwrap_or(0).saturating_add(1)),
    };
    match state.store.put_ima_state(&row, previous).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(host = %host.name, "another attestation wrote the IMA state meanwhile; this one's is dropped");
            false
        }
        Err(e) => {
            tracing::warn!(host = %host.name, error = %e, "the IMA appraisal state was not saved; the next attestation appraises these entries again");
            false
        }
    }
}

/// The host's IMA log from entry 0 up to the quote (all of it the quote covers), for learning
/// a RUNTIME flavor.
pub async fn quoted_log(
    state: &AppState,
    target: &AgentTarget,
    first: Option<ImaEntries>,
    verified: &VerifiedQuote,
) -> Result<Option<Vec<ImaEntry>>, FetchError> {
    let quoted = verified.pcrs();
    let mut first = first;
    if first.is_none() {
        return Ok(None);
    }
    let mut chain = Chain::new(&RuntimeAppraisal::new(), quoted);
    let mut all = Vec::new();
    let mut asked = 0usize;
    loop {
        let next = all.len() as u64;
        let chunk = next_chunk(state, target, &mut first, next, &mut asked).await?;
        let entries = parse_chunk(&chunk, next).map_err(FetchError::Bad)?;
        state.metrics.ima_received(entries.len() as u64);
        let mut reached = false;
        for e in &entries {
            if !chain.extend(e) {
                return Err(FetchError::Bad(format!(
                    "IMA entry {} names PCR {} (0 to 23 exist)",
                    all.len(),
                    e.pcr
                )));
            }
            reached |= chain.holds(quoted);
        }
        let more = chunk.more;
        all.extend(entries);
        if all.len() > nodetrust_eventlog::ima::MAX_ENTRIES {
            return Err(FetchError::Bad(format!(
                "the IMA log has more than {} entries",
                nodetrust_eventlog::ima::MAX_ENTRIES
            )));
        }
        if reached || !more {
            return Ok(Some(all));
        }
    }
}
