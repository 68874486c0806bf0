//! The measured-boot event log as appraisal sees it.
//!
//! Parsing the TCG binary log and replaying it is the event-log crate's work; appraisal needs
//! only the result: the events (PCR, digest per bank, a human label) and the PCR values the
//! log replays to. The replayed values are compared with the *quoted* ones before any event is
//! believed, because a log is unauthenticated until it replays to what the TPM signed.

use std::collections::BTreeMap;

use nodetrust_tpm_wire::{HashAlg, PcrValues, VerifiedQuote};

fn short(d: &[u8]) -> String {
    let h = hex::encode(d);
    h.get(..16).map(|s| format!("{s}…")).unwrap_or(h)
}

/// One measurement from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasuredEvent {
    /// PCR index the event was extended into.
    pub pcr: u8,
    /// Digest per bank, in log order; no bank twice (the event-log crate refuses an event
    /// that names a bank twice). A list, not a map: an event has one to three.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    /// What an operator calls it, e.g. `boot application \EFI\BOOT\grubx64.efi` or
    /// `kernel_cmdline: ...`. Event types and data are not covered by the digest: labels explain,
    /// digests decide.
    pub label: String,
}

impl MeasuredEvent {
    /// The event's digest in `bank`, if the log has one.
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(b, _)| *b == bank)
            .map(|(_, d)| d.as_slice())
    }
}

/// A host's measured-boot log, parsed and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventLogEvidence {
    /// Events in log order.
    pub events: Vec<MeasuredEvent>,
    /// The PCR values the log replays to, per bank (only PCRs the log touches).
    pub replayed: PcrValues,
}

impl EventLogEvidence {
    /// The events measured into `pcr` that carry a digest in `bank`, in log order.
    pub fn events_for(
        &self,
        bank: HashAlg,
        pcr: u8,
    ) -> impl Iterator<Item = (&MeasuredEvent, &[u8])> + '_ {
        self.events
            .iter()
            .filter(move |e| e.pcr == pcr)
            .filter_map(move |e| e.digest(bank).map(|d| (e, d)))
    }

    /// Quoted PCRs this log does not replay to, as sentences (empty when it replays to every
    /// quoted PCR it touches).
    pub fn replay_mismatches(&self, verified: &VerifiedQuote) -> Vec<String> {
        let mut out = Vec::new();
        for (bank, index, quoted) in verified.pcrs().iter() {
            let Some(replayed) = self.replayed.get(bank, index) else {
                continue;
            };
            if replayed != quoted {
                out.push(format!(
                    "PCR {index} ({bank}): the event log replays to {} but the TPM quoted {}",
                    short(replayed),
                    short(quoted)
                ));
            }
        }
        out
    }

    /// Builds the evidence from events by replaying them from the standard initial values
    /// (zero for PCRs 0-16 and 23, all-ones for 17-22). For tests and simple logs: a log with a
    /// StartupLocality event needs the event-log crate's replay.
    pub fn replay_from(events: Vec<MeasuredEvent>) -> Self {
        let mut acc: BTreeMap<(HashAlg, u8), Vec<u8>> = BTreeMap::new();
        for e in &events {
            for (bank, d) in &e.digests {
                let init = if (17..=22).contains(&e.pcr) {
                    vec![0xff; bank.size()]
                } else {
                    vec![0; bank.size()]
                };
                let cur = acc.remove(&(*bank, e.pcr)).unwrap_or(init);
                acc.insert((*bank, e.pcr), bank.extend(&cur, d));
            }
        }
        let mut replayed = PcrValues::new();
        for ((bank, pcr), v) in acc {
            // Values come from the bank's own hash and an index of an event, so they are valid
            // except for an index above 23, which cannot be quoted and is dropped.
            let _ = replayed.insert(bank, pcr, v);
        }
        Self { events, replayed }
    }
}
