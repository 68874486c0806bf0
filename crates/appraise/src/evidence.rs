//! The measured-boot event log as appraisal sees it.
//!
//! Parsing the TCG binary log and replaying it is the event-log crate's work; appraisal needs
//! only the result: the events (PCR, digest per bank, a human label) and the PCR values the
//! log replays to. The replayed values are compared with the *quoted* ones before any event is
//! believed, because a log is unauthenticated until it replays to what the TPM signed.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use nodetrust_tpm_wire::{HashAlg, PcrValues, VerifiedQuote};

fn short(d: &[u8]) -> String {
    let h = hex::encode(d);
    h.get(..16).map(|s| format!("{s}…")).unwrap_or(h)
}

/// One measurement from the log.
///
/// Built once per event of every attestation, so it holds two allocations: the label, and
/// every bank's digest in one buffer.
#[derive(Debug, Clone)]
pub struct MeasuredEvent {
    /// PCR index the event was extended into.
    pub pcr: u8,
    digests: EventDigests,
    label: String,
    /// `is_host_unique(label)`, once a scope test has asked.
    host_unique: OnceLock<bool>,
}

impl PartialEq for MeasuredEvent {
    fn eq(&self, other: &Self) -> bool {
        // Whether the scope test has run yet is not part of the event.
        self.pcr == other.pcr && self.digests == other.digests && self.label == other.label
    }
}

impl Eq for MeasuredEvent {}

impl MeasuredEvent {
    /// An event of `pcr` named `label` (what an operator calls it, e.g. `boot application
    /// \EFI\BOOT\grubx64.efi` or `kernel command line: ...`), with no digest yet. Event types
    /// and data are not covered by the digest: labels explain, digests decide.
    pub fn new(pcr: u8, label: String) -> Self {
        Self {
            pcr,
            digests: EventDigests::default(),
            label,
            host_unique: OnceLock::new(),
        }
    }

    /// The same, with room for `banks` digests of `bytes` bytes in all.
    pub fn with_capacity(pcr: u8, label: String, banks: usize, bytes: usize) -> Self {
        let mut e = Self::new(pcr, label);
        e.digests
            .0
            .reserve(bytes.saturating_add(banks.saturating_mul(2)));
        e
    }

    /// Adds `digest` for `bank`. The first digest of a bank wins: false, and nothing added,
    /// when the event already has one (the event-log crate refuses an event that names a bank
    /// twice), or when the digest is longer than 255 bytes (no bank's is).
    pub fn push_digest(&mut self, bank: HashAlg, digest: &[u8]) -> bool {
        let Ok(len) = u8::try_from(digest.len()) else {
            return false;
        };
        if self.digest(bank).is_some() {
            return false;
        }
        self.digests.0.extend_from_slice(&[alg_tag(bank), len]);
        self.digests.0.extend_from_slice(digest);
        true
    }

    /// `push_digest`, for building.
    pub fn with_digest(mut self, bank: HashAlg, digest: &[u8]) -> Self {
        self.push_digest(bank, digest);
        self
    }

    /// The event's digest in `bank`, if the log has one.
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests().find(|(b, _)| *b == bank).map(|(_, d)| d)
    }

    /// Every bank's digest, in log order.
    pub fn digests(&self) -> impl Iterator<Item = (HashAlg, &[u8])> + '_ {
        self.digests.iter()
    }

    /// What an operator calls the event.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the label names a per-host measurement ([`is_host_unique`]), decided the
    /// first time it is asked: the scope test of every flavor rule on the event's PCR asks,
    /// and the events of other PCRs are never asked.
    pub fn is_host_unique(&self) -> bool {
        *self.host_unique.get_or_init(|| is_host_unique(&self.label))
    }
}

/// Whether an event label names a per-host measurement: the kernel command line (which grub
/// measures as `kernel_cmdline: ...` or `grub_cmd: linux ...`, and the event-log crate names
/// `kernel command line` / `grub command: linux ...`) or the initrd.
pub fn is_host_unique(label: &str) -> bool {
    let l = label.to_ascii_lowercase();
    [
        "cmdline",
        "command line",
        "initrd",
        "grub_cmd: linux",
        "grub command: linux",
    ]
    .iter()
    .any(|k| l.contains(k))
}

/// An event's digests in one buffer: for each, its bank's tag, its length (a byte), its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct EventDigests(Vec<u8>);

fn alg_tag(bank: HashAlg) -> u8 {
    match bank {
        HashAlg::Sha1 => 1,
        HashAlg::Sha256 => 2,
        HashAlg::Sha384 => 3,
        HashAlg::Sha512 => 4,
    }
}

fn tag_alg(tag: u8) -> Option<HashAlg> {
    Some(match tag {
        1 => HashAlg::Sha1,
        2 => HashAlg::Sha256,
        3 => HashAlg::Sha384,
        4 => HashAlg::Sha512,
        _ => return None,
    })
}

impl EventDigests {
    fn iter(&self) -> impl Iterator<Item = (HashAlg, &[u8])> + '_ {
        let mut rest = self.0.as_slice();
        std::iter::from_fn(move || {
            let (&[tag, len], tail) = rest.split_first_chunk::<2>()?;
            let (d, tail) = tail.split_at_checked(usize::from(len))?;
            rest = tail;
            Some((tag_alg(tag)?, d))
        })
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
            for (bank, d) in e.digests() {
                let init = if (17..=22).contains(&e.pcr) {
                    vec![0xff; bank.size()]
                } else {
                    vec![0; bank.size()]
                };
                let cur = acc.remove(&(bank, e.pcr)).unwrap_or(init);
                acc.insert((bank, e.pcr), bank.extend(&cur, d));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_keep_log_order_and_the_first_of_a_bank() {
        let mut e = MeasuredEvent::with_capacity(8, "grub command: linux /vmlinuz".into(), 2, 52);
        assert!(e.push_digest(HashAlg::Sha256, &[2; 32]));
        assert!(e.push_digest(HashAlg::Sha1, &[1; 20]));
        assert!(!e.push_digest(HashAlg::Sha256, &[9; 32]), "a bank twice");
        assert!(
            !e.push_digest(HashAlg::Sha512, &[5; 256]),
            "longer than a byte says"
        );
        assert!(
            e.push_digest(HashAlg::Sha384, &[]),
            "an empty digest is still the bank's"
        );
        let all: Vec<(HashAlg, Vec<u8>)> = e.digests().map(|(b, d)| (b, d.to_vec())).collect();
        assert_eq!(
            all,
            [
                (HashAlg::Sha256, vec![2; 32]),
                (HashAlg::Sha1, vec![1; 20]),
                (HashAlg::Sha384, vec![]),
            ]
        );
        assert_eq!(e.digest(HashAlg::Sha1), Some(&[1u8; 20][..]));
        assert_eq!(e.digest(HashAlg::Sha512), None);
        assert_eq!(e.label(), "grub command: linux /vmlinuz");
        assert!(e.is_host_unique());
        let other = MeasuredEvent::new(9, "boot file /boot/grub/grub.cfg".into());
        let asked = other.clone();
        assert!(!asked.is_host_unique());
        assert_eq!(asked, other, "asking does not change the event");
        assert_ne!(
            other,
            MeasuredEvent::new(9, "boot file /boot/grub/grub.cfg".into())
                .with_digest(HashAlg::Sha1, &[1; 20])
        );
    }

    #[test]
    fn a_digest_of_255_bytes_is_kept_whole() {
        let e = MeasuredEvent::new(0, String::new()).with_digest(HashAlg::Sha1, &[7; 255]);
        assert_eq!(e.digest(HashAlg::Sha1).map(<[u8]>::len), Some(255));
        assert_eq!(e.digests().count(), 1);
    }
}
