//! Replaying a log: the PCR values a TPM would hold after every event was extended.
//!
//! # Rules (TCG PC Client Platform Firmware Profile, TPM 2.0 Library part 1 §34)
//! - Every bank the log declares is replayed; a bank whose algorithm this crate cannot hash is
//!   listed in [`Replay::unsupported`] and skipped.
//! - PCRs 0–16 and 23 start at zero. PCRs 17–22 (DRTM) start at all-ones, the value a TPM holds
//!   until a measured launch (tboot / Intel TXT / AMD SKINIT) resets them; the first event in
//!   PCR 17 is the launch's own measurement, so it resets PCRs 17–22 of every bank to zero
//!   before it is extended.
//! - PCR 0 starts with its last byte set to the startup locality: 3 from an `EV_NO_ACTION`
//!   StartupLocality event with locality 3, 4 from locality 4 or an `EV_EFI_HCRTM_EVENT` —
//!   but only when seen before PCR 0's first extend. Other localities are ignored
//!   (`tpm2_eventlog` copies any non-zero value; no TPM starts at locality 1 or 2).
//! - `EV_NO_ACTION` events are not extended.
//!
//! A PCR counts as *touched* in a bank when an event carried a digest for it in that bank (an
//! `EV_NO_ACTION` event with digests counts, as in `tpm2_eventlog`), so [`Replay::values`] lists
//! what `tpm2_eventlog` prints under `pcrs:`.
//!
//! Replay does no allocation per event: values live in fixed arrays, and each event's extends
//! go to `nodetrust-extend` together (block-level extends; on x86-64 with the SHA extensions
//! an event's SHA-1, SHA-256 and SHA-384 extends in one stitched pass).
//! [`HashAlg::hasher`] (aws-lc) allocates an EVP context and a `Vec` per hash; for the 2–3
//! extends per event of a replay that overhead was half the time (measured with `perf`, see
//! docs/PERFORMANCE.md). The oracle tests check every bank against `tpm2_eventlog` (OpenSSL).

use nodetrust_tpm_wire::{HashAlg, PcrValues};

use crate::tcg::{Digest, EventLog, LogFormat, PCR_COUNT};
use crate::types;

const MAX_DIGEST: usize = 64;
const PCRS: usize = PCR_COUNT as usize;
const DRTM_FIRST: u32 = 17;
const DRTM_LAST: u32 = 22;

/// One replayed bank.
#[derive(Debug, Clone)]
struct Bank {
    alg: HashAlg,
    /// `alg.id()`, looked up once.
    id: u16,
    values: [[u8; MAX_DIGEST]; PCRS],
    touched: u32,
    extended: u32,
}

impl Bank {
    fn new(alg: HashAlg) -> Self {
        let mut values = [[0u8; MAX_DIGEST]; PCRS];
        for pcr in DRTM_FIRST..=DRTM_LAST {
            if let Some(v) = values.get_mut(pcr as usize) {
                v.fill(0xFF);
            }
        }
        Self {
            alg,
            id: alg.id(),
            values,
            touched: 0,
            extended: 0,
        }
    }

    fn value(&self, pcr: u32) -> Option<&[u8]> {
        self.values
            .get(pcr as usize)
            .and_then(|v| v.get(..self.alg.size()))
    }

    fn set_locality(&mut self, locality: u8) {
        let size = self.alg.size();
        if let Some(last) = self
            .values
            .get_mut(0)
            .and_then(|v| v.get_mut(size.saturating_sub(1)))
        {
            *last = locality;
        }
    }

    fn drtm_reset(&mut self) {
        for pcr in DRTM_FIRST..=DRTM_LAST {
            if let Some(v) = self.values.get_mut(pcr as usize) {
                v.fill(0);
            }
        }
    }
}

/// The PCR values a log replays to.
#[derive(Debug, Clone)]
pub struct Replay {
    banks: Vec<Bank>,
    unsupported: Vec<u16>,
    locality: Option<u8>,
    drtm: bool,
}

impl Replay {
    /// Replays every event of `log` into every bank it declares.
    pub fn run(log: &EventLog<'_>) -> Self {
        Self::run_with(log, None)
    }

    /// Replays only the banks in `only` (those the log declares): a verifier checking a quote
    /// needs no other, and each bank costs a hash per event.
    pub fn run_banks(log: &EventLog<'_>, only: &[HashAlg]) -> Self {
        Self::run_with(log, Some(only))
    }

    fn run_with(log: &EventLog<'_>, only: Option<&[HashAlg]>) -> Self {
        let mut banks = Vec::with_capacity(4);
        let mut unsupported = Vec::new();
        for a in log.algorithms() {
            match a.hash() {
                // A bank declared twice is replayed once.
                Some(h) if banks.iter().any(|b: &Bank| b.alg == h) => {}
                Some(h) if only.is_none_or(|o| o.contains(&h)) => banks.push(Bank::new(h)),
                Some(_) => {}
                None => unsupported.push(a.id),
            }
        }
        let mut r = Self {
            banks,
            unsupported,
            locality: None,
            drtm: false,
        };
        let skip = usize::from(log.format == LogFormat::CryptoAgile);
        for ev in log.events.iter().skip(skip) {
            if ev.pcr >= PCR_COUNT {
                continue;
            }
            if ev.pcr == 0 {
                let locality = match ev.event_type {
                    types::EV_EFI_HCRTM_EVENT => Some(4),
                    types::EV_NO_ACTION => ev.startup_locality().filter(|l| *l == 3 || *l == 4),
                    _ => None,
                };
                if let Some(l) = locality {
                    if r.locality.is_none() && r.banks.iter().all(|b| b.extended & 1 == 0) {
                        r.locality = Some(l);
                        for b in &mut r.banks {
                            b.set_locality(l);
                        }
                    }
                }
            }
            let extends = ev.extends();
            if extends && ev.pcr == DRTM_FIRST && !r.drtm {
                r.drtm = true;
                for b in &mut r.banks {
                    b.drtm_reset();
                }
            }
            // In the SHA-1 format, tpm2_eventlog marks only extended PCRs as touched.
            let mark = extends || log.format == LogFormat::CryptoAgile;
            let pcr = ev.pcr as usize;
            let bit = 1u32 << ev.pcr;
            // The event's PCR in every bank it has a digest for, extended together: SHA-1,
            // SHA-256 and SHA-384 in one call (one stitched pass where the CPU allows).
            let (mut sha1, mut sha256, mut sha384) = (None, None, None);
            let digests: &[Digest<'_>] = &ev.digests;
            for (i, b) in r.banks.iter_mut().enumerate() {
                // Digests usually come in the Spec ID event's order, which is the banks' order.
                let found = match digests.get(i) {
                    Some(d) if d.alg == b.id => Some(d),
                    _ => digests.iter().find(|d| d.alg == b.id),
                };
                let Some(d) = found else {
                    continue;
                };
                if mark {
                    b.touched |= bit;
                }
                if !extends {
                    continue;
                }
                b.extended |= bit;
                let size = b.alg.size();
                let Some(cur) = b.values.get_mut(pcr).and_then(|v| v.get_mut(..size)) else {
                    continue;
                };
                // A digest of the wrong length is not extended (as `extend` refuses it).
                match b.alg {
                    HashAlg::Sha1 => sha1 = pair(cur, d.bytes),
                    HashAlg::Sha256 => sha256 = pair(cur, d.bytes),
                    HashAlg::Sha384 => sha384 = pair(cur, d.bytes),
                    HashAlg::Sha512 => {
                        crate::extend::extend(HashAlg::Sha512, cur, d.bytes);
                    }
                }
            }
            nodetrust_extend::extend_event(sha1, sha256, sha384);
        }
        r
    }

    /// Banks replayed, in log order.
    pub fn banks(&self) -> impl Iterator<Item = HashAlg> + '_ {
        self.banks.iter().map(|b| b.alg)
    }

    /// Algorithms declared by the log that this crate cannot hash (not replayed).
    pub fn unsupported(&self) -> &[u16] {
        &self.unsupported
    }

    /// The startup locality applied to PCR 0 (3 or 4), if any.
    pub fn startup_locality(&self) -> Option<u8> {
        self.locality
    }

    /// Whether a measured launch (an event in PCR 17) reset PCRs 17–22.
    pub fn drtm(&self) -> bool {
        self.drtm
    }

    /// The replayed value of one PCR in one bank, touched or not.
    pub fn get(&self, alg: HashAlg, pcr: u8) -> Option<&[u8]> {
        self.banks
            .iter()
            .find(|b| b.alg == alg)
            .and_then(|b| b.value(u32::from(pcr)))
    }

    /// Whether the log touched `pcr` in bank `alg`.
    pub fn touched(&self, alg: HashAlg, pcr: u8) -> bool {
        self.banks
            .iter()
            .any(|b| b.alg == alg && pcr < 32 && b.touched & (1 << pcr) != 0)
    }

    /// PCRs touched in bank `alg`, ascending.
    pub fn touched_pcrs(&self, alg: HashAlg) -> Vec<u8> {
        (0..PCR_COUNT as u8)
            .filter(|p| self.touched(alg, *p))
            .collect()
    }

    /// The values of every touched PCR, bank by bank.
    pub fn values(&self) -> PcrValues {
        let mut out = PcrValues::new();
        for b in &self.banks {
            for pcr in 0..PCR_COUNT {
                if b.touched & (1 << pcr) != 0 {
                    if let Some(v) = b.value(pcr) {
                        // Index and length are right by construction; an error cannot happen.
                        let _ = out.insert(b.alg, pcr as u8, v.to_vec());
                    }
                }
            }
        }
        out
    }

    /// Compares with `expected` (e.g. quoted values): every PCR that the log touched and
    /// `expected` holds, bank by bank. Returns the comparisons made; the mismatches are those
    /// with `matches == false`.
    pub fn compare(&self, expected: &PcrValues) -> Vec<PcrComparison> {
        let mut out = Vec::new();
        for (alg, pcr, want) in expected.iter() {
            if !self.touched(alg, pcr) {
                continue;
            }
            if let Some(got) = self.get(alg, pcr) {
                out.push(PcrComparison {
                    alg,
                    pcr,
                    replayed: got.to_vec(),
                    expected: want.to_vec(),
                    matches: got == want,
                });
            }
        }
        out
    }
}

/// A PCR value and a digest as arrays of the bank's size; `None` if either has another length.
fn pair<'a, const N: usize>(
    cur: &'a mut [u8],
    digest: &'a [u8],
) -> Option<(&'a mut [u8; N], &'a [u8; N])> {
    Some((cur.try_into().ok()?, digest.try_into().ok()?))
}

/// One PCR compared by [`Replay::compare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrComparison {
    /// Bank.
    pub alg: HashAlg,
    /// PCR index.
    pub pcr: u8,
    /// Value the log replays to.
    pub replayed: Vec<u8>,
    /// Value expected (quoted).
    pub expected: Vec<u8>,
    /// Whether they are equal.
    pub matches: bool,
}

impl std::fmt::Display for PcrComparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.matches {
            write!(
                f,
                "{}:{} matches {}",
                self.alg,
                self.pcr,
                hex::encode(&self.replayed)
            )
        } else {
            write!(
                f,
                "{}:{} replays to {} but is {}",
                self.alg,
                self.pcr,
                hex::encode(&self.replayed),
                hex::encode(&self.expected)
            )
        }
    }
}
