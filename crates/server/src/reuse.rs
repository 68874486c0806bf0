//! Trusted appraisals, reused while nothing they depend on has changed.
//!
//! Appraisal ([`nodetrust_appraise::appraise_with_runtime`]) is a function of the quoted PCR
//! values, the event log, the flavors and the host's registration; the time only sets the
//! verdict's start and expiry. A host attested again with the same PCR values, the same event
//! log bytes, under the same flavors and the same registration, gets the same verdict. So when a
//! full appraisal trusts a host, what it was made of is kept, and the host's next quote that
//! shows exactly that is trusted again without the log being parsed, replayed and matched
//! again (about 15 % of an attestation's instructions).
//!
//! What is compared, and why it is enough:
//! - the quote's PCR selection and `pcrDigest`, from the signed `TPMS_ATTEST` (signature,
//!   nonce and counters checked, [`nodetrust_tpm_wire::verify::SignedQuote`]): the digest of
//!   the selected values, which the full appraisal checked against the values then sent. Equal
//!   digests are equal values, so a reused appraisal does not even read the values sent: the
//!   values kept ([`Found::Reused`], their stored JSON, one copy for all the hosts that have
//!   them) are the TPM's, and are stored with the report as the quote's;
//! - the flavors' generation ([`crate::flavors::FlavorSet`]): any change of the stored flavors
//!   is another generation;
//! - the registration (`hosts.created`, with the AK it pinned): a host registered again is
//!   appraised again;
//! - a fingerprint of the event log's bytes (64 bits, keyed with a seed drawn at start): a log
//!   that changed while the PCR values did not (an altered log, which appraisal calls a replay
//!   mismatch) is appraised again. It is not a cryptographic hash, and it need not be: finding
//!   two logs with one fingerprint would only let a host be trusted for the PCR values a full
//!   appraisal already trusted, which sending the old log again would do too.
//!
//! **An unchanged event log is not sent again.** An agent that can leave out a log the server
//! holds says so by sending the log's SHA-256 with it (`event_log_sha256`); the server keeps
//! that digest (computed by itself, once per full appraisal) with the appraisal, and names it
//! in the host's next quote request (`known_event_log_sha256`, [`Appraisals::known_log`]).
//! When the host's log still has that digest, the agent sends only the digest, which stands
//! for the log's bytes in the comparison above.
//! An agent that lies about it gains nothing it could not get by sending the old log again. When
//! such an answer cannot be reused (the PCR values changed while the log did not, which a full
//! appraisal would call a replay mismatch), the log is needed: what was kept of the host is
//! dropped and the quote is asked again without naming a log ([`Found::LogNeeded`]; a push
//! agent is answered 409 and asks for a new challenge). Older agents, which send no digest,
//! are never sent one (their quote request would refuse the unknown field) and always send
//! their log.
//!
//! **Nor are unchanged PCR values.** An agent that sends its quote's `pcrDigest` with its
//! answer (`pcr_digest`) can leave out values the server holds: the kept appraisal's digest is
//! named in the host's next quote request (`known_pcr_digest`, [`Appraisals::known`]), and an
//! agent whose quote has that digest sends no values ([`SentPcrs::LeftOut`]). The comparison
//! above is unchanged: it is of the signed digest, never of what the agent claims. When the
//! appraisal is not reused, the values are needed as a left-out log is ([`Found::Needed`]).
//!
//! Only trusted verdicts are kept: an untrusted or unknown one is always appraised in full, so
//! its reasons are always those of its own evidence. A host with RUNTIME (IMA) flavors is never
//! reused (its log is appraised incrementally, [`crate::runtime`]). At most [`REUSE_MAX`] hosts
//! are kept; when full, one is dropped for each new one.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nodetrust_appraise::{Trust, Verdict};
use nodetrust_proto::agent::QuoteResponse;
use nodetrust_tpm_wire::{Attest, PcrSelection};

use crate::store::StoredPcrs;

/// Most hosts whose last trusted appraisal is kept.
pub const REUSE_MAX: usize = 1 << 20;

/// The event log of an agent's answer, as reuse sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentLog<'a> {
    /// The host has no event log.
    Absent,
    /// The log's bytes. `named`: the agent also sent the log's SHA-256, so it can leave out a
    /// log the server holds.
    Sent {
        /// The log.
        bytes: &'a [u8],
        /// Whether the answer carried `event_log_sha256`.
        named: bool,
    },
    /// Left out: the SHA-256 the agent gave for it.
    LeftOut(&'a [u8]),
}

impl<'a> SentLog<'a> {
    /// The event log of `answer`.
    pub fn of(answer: &'a QuoteResponse) -> Self {
        match (&answer.event_log, &answer.event_log_sha256) {
            (Some(bytes), named) => Self::Sent {
                bytes,
                named: named.is_some(),
            },
            (None, Some(sha256)) => Self::LeftOut(sha256),
            (None, None) => Self::Absent,
        }
    }
}

/// The PCR values of an agent's answer, as reuse sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentPcrs {
    /// Sent. `named`: the agent also sent their digest, so it can leave out values the server
    /// holds.
    Sent {
        /// Whether the answer carried `pcr_digest`.
        named: bool,
    },
    /// Left out: the quote's signed `pcrDigest` stands for them.
    LeftOut,
}

impl SentPcrs {
    /// The PCR values of `answer`.
    pub fn of(answer: &QuoteResponse) -> Self {
        match &answer.pcrs {
            Some(_) => Self::Sent {
                named: answer.pcr_digest.is_some(),
            },
            None => Self::LeftOut,
        }
    }
}

/// What a quote request names of a host's kept appraisal, so that its agent may leave it out
/// of the answer ([`Appraisals::known`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// The SHA-256 of the event log
    /// ([`nodetrust_proto::agent::QuoteRequest::known_event_log_sha256`]).
    pub event_log_sha256: Option<Vec<u8>>,
    /// The quote's digest of the PCR values
    /// ([`nodetrust_proto::agent::QuoteRequest::known_pcr_digest`]).
    pub pcr_digest: Option<Vec<u8>>,
}

/// What an appraisal is made of: the verified quote and the event log sent with it, under
/// flavor generation `flavors`, for the registration made at `registered` (ms).
#[derive(Debug, Clone, Copy)]
pub struct Basis<'a> {
    /// `hosts.created` of the registration attested.
    pub registered: i64,
    /// The flavors' generation ([`crate::flavors::FlavorSet::generation`]).
    pub flavors: u64,
    /// The verified quote.
    pub attest: &'a Attest,
    /// The answer's event log.
    pub log: SentLog<'a>,
    /// The answer's PCR values.
    pub pcrs: SentPcrs,
}

/// How a kept appraisal knows its event log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeptLog {
    Absent,
    /// The log's fingerprint, and its SHA-256 when the agent can leave it out.
    Bytes {
        fingerprint: u64,
        sha256: Option<Vec<u8>>,
    },
}

impl KeptLog {
    /// The SHA-256 to name in a quote request: when the agent can leave the log out.
    fn sha256(&self) -> Option<Vec<u8>> {
        match self {
            Self::Bytes { sha256, .. } => sha256.clone(),
            Self::Absent => None,
        }
    }
}

#[derive(Debug)]
struct Kept {
    registered: i64,
    flavors: u64,
    selection: PcrSelection,
    pcr_digest: Vec<u8>,
    /// Whether the agent can leave out the PCR values (it sent their digest).
    digest_named: bool,
    log: KeptLog,
    verdict: Verdict,
    /// The quoted PCR values as stored with a report, shared by every host kept with the same
    /// values.
    pcrs: Arc<StoredPcrs>,
}

impl Kept {
    /// What to name of it in a quote request.
    fn known(&self) -> Known {
        Known {
            event_log_sha256: self.log.sha256(),
            pcr_digest: self.digest_named.then(|| self.pcr_digest.clone()),
        }
    }
}

/// The kept appraisals by host, and the PCR values they share.
#[derive(Debug, Default)]
struct Memory {
    hosts: HashMap<String, Kept, foldhash::quality::RandomState>,
    values: HashSet<Shared, foldhash::quality::RandomState>,
}

/// Stored PCR values in [`Memory::values`], found by their text.
#[derive(Debug, Clone)]
struct Shared(Arc<StoredPcrs>);

impl std::borrow::Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        self.0.json()
    }
}

impl std::hash::Hash for Shared {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.json().hash(state);
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        self.0.json() == other.0.json()
    }
}

impl Eq for Shared {}

impl Memory {
    /// `pcrs`, or the values of the same text another kept appraisal holds.
    fn intern(&mut self, pcrs: &Arc<StoredPcrs>) -> Arc<StoredPcrs> {
        if let Some(v) = self.values.get(pcrs.json()) {
            return v.0.clone();
        }
        // Values no kept appraisal holds any more are dropped now and then.
        if self.values.len() > 2 * self.hosts.len() + 64 {
            self.values.retain(|v| Arc::strong_count(&v.0) > 1);
        }
        self.values.insert(Shared(pcrs.clone()));
        pcrs.clone()
    }
}

/// The outcome of [`Appraisals::find`].
#[derive(Debug)]
pub enum Found {
    /// The host's last trusted verdict, made again now ([`Verdict::renewed`]), and the PCR
    /// values it was made of (their stored JSON): the quote's signed digest is theirs.
    Reused {
        /// The verdict.
        verdict: Verdict,
        /// The values as stored.
        pcrs: Arc<StoredPcrs>,
        /// What to name of it, as [`Appraisals::known`] gives it now (the appraisal found is
        /// of the same registration and flavors): its next quote request needs no second
        /// look-up.
        known: Known,
    },
    /// Appraise in full.
    Appraise,
    /// The agent left its event log or its PCR values out, but the quote is not what the
    /// kept appraisal was made of: they are needed. What was kept of the host is dropped, so
    /// that its next quote request names nothing and gets them.
    Needed,
}

/// The last trusted appraisal of each host, and how often one was reused.
#[derive(Debug)]
pub struct Appraisals {
    seed: foldhash::quality::RandomState,
    kept: Mutex<Memory>,
    capacity: usize,
    reused: AtomicU64,
    left_out: AtomicU64,
    pcrs_left_out: AtomicU64,
    needed: AtomicU64,
    pcrs_needed: AtomicU64,
}

impl Default for Appraisals {
    fn default() -> Self {
        Self::with_capacity(REUSE_MAX)
    }
}

impl Appraisals {
    /// At most `capacity` hosts kept (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seed: foldhash::quality::RandomState::default(),
            kept: Mutex::new(Memory::default()),
            capacity: capacity.max(1),
            reused: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
            pcrs_left_out: AtomicU64::new(0),
            needed: AtomicU64::new(0),
            pcrs_needed: AtomicU64::new(0),
        }
    }

    /// `host`'s last trusted verdict made again at `now` when its appraisal was made of
    /// `basis` ([`Found::Reused`]; the caller counts it, [`Self::count_reused`], once the
    /// verdict is made of it).
    pub fn find(
        &self,
        host: &str,
        basis: &Basis<'_>,
        now: SystemTime,
        validity: Duration,
    ) -> Found {
        let fingerprint = match basis.log {
            SentLog::Sent { bytes, .. } => Some(self.seed.hash_one(bytes)),
            _ => None,
        };
        let Ok(mut kept) = self.kept.lock() else {
            return Found::Appraise;
        };
        let same = kept.hosts.get(host).filter(|k| {
            k.registered == basis.registered
                && k.flavors == basis.flavors
                && k.selection == basis.attest.pcr_select
                && k.pcr_digest == basis.attest.pcr_digest
                && match (&k.log, basis.log) {
                    (KeptLog::Absent, SentLog::Absent) => true,
                    (KeptLog::Bytes { fingerprint: f, .. }, SentLog::Sent { .. }) => {
                        fingerprint == Some(*f)
                    }
                    (KeptLog::Bytes { sha256, .. }, SentLog::LeftOut(claimed)) => {
                        sha256.as_deref() == Some(claimed)
                    }
                    _ => false,
                }
        });
        if let Some(k) = same {
            return Found::Reused {
                verdict: k.verdict.renewed(now, validity),
                pcrs: k.pcrs.clone(),
                known: k.known(),
            };
        }
        let log_needed = matches!(basis.log, SentLog::LeftOut(_));
        let pcrs_needed = basis.pcrs == SentPcrs::LeftOut;
        if log_needed || pcrs_needed {
            kept.hosts.remove(host);
            if log_needed {
                self.needed.fetch_add(1, Ordering::Relaxed);
            }
            if pcrs_needed {
                self.pcrs_needed.fetch_add(1, Ordering::Relaxed);
            }
            return Found::Needed;
        }
        Found::Appraise
    }

    /// What to name of `host`'s kept appraisal in its next quote request: the SHA-256 of its
    /// event log and the quote's digest of its PCR values, each when its agent can leave it
    /// out. Nothing unless that appraisal is of the registration made at `registered`, under
    /// flavor generation `flavors`.
    pub fn known(&self, host: &str, registered: i64, flavors: u64) -> Known {
        let Ok(kept) = self.kept.lock() else {
            return Known::default();
        };
        kept.hosts
            .get(host)
            .filter(|k| k.registered == registered && k.flavors == flavors)
            .map(Kept::known)
            .unwrap_or_default()
    }

    /// Counts a verdict made of a reused appraisal, and whether its answer left the event log
    /// out, or the PCR values.
    pub fn count_reused(&self, log: SentLog<'_>, pcrs: SentPcrs) {
        self.reused.fetch_add(1, Ordering::Relaxed);
        if matches!(log, SentLog::LeftOut(_)) {
            self.left_out.fetch_add(1, Ordering::Relaxed);
        }
        if pcrs == SentPcrs::LeftOut {
            self.pcrs_left_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keeps the full appraisal of `host` made of `basis`, whose quoted PCR values are stored
    /// as `pcrs`, when its verdict is trusted; otherwise drops what was kept of the host.
    /// The SHA-256 of the log is taken here, once per full appraisal, when the agent can leave
    /// the log out.
    pub fn remember(
        &self,
        host: &str,
        basis: &Basis<'_>,
        pcrs: &Arc<StoredPcrs>,
        verdict: &Verdict,
    ) {
        let log = match basis.log {
            SentLog::Absent => Some(KeptLog::Absent),
            SentLog::Sent { bytes, named } => Some(KeptLog::Bytes {
                fingerprint: self.seed.hash_one(bytes),
                sha256: named.then(|| {
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
                        .as_ref()
                        .to_vec()
                }),
            }),
            // Not appraised in full without its log.
            SentLog::LeftOut(_) => None,
        };
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let Some(log) = log.filter(|_| verdict.verdict() == Trust::Trusted) else {
            kept.hosts.remove(host);
            return;
        };
        if kept.hosts.len() >= self.capacity && !kept.hosts.contains_key(host) {
            if let Some(old) = kept.hosts.keys().next().cloned() {
                kept.hosts.remove(&old);
            }
        }
        let pcrs = kept.intern(pcrs);
        kept.hosts.insert(
            host.to_string(),
            Kept {
                registered: basis.registered,
                flavors: basis.flavors,
                selection: basis.attest.pcr_select.clone(),
                pcr_digest: basis.attest.pcr_digest.clone(),
                digest_named: basis.pcrs == SentPcrs::Sent { named: true },
                log,
                verdict: verdict.clone(),
                pcrs,
            },
        );
    }

    /// Drops what was kept of `host`.
    pub fn forget(&self, host: &str) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.hosts.remove(host);
        }
    }

    /// Appraisals reused so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Reused appraisals whose answer left the event log out.
    pub fn left_out(&self) -> u64 {
        self.left_out.load(Ordering::Relaxed)
    }

    /// Reused appraisals whose answer left the PCR values out.
    pub fn pcrs_left_out(&self) -> u64 {
        self.pcrs_left_out.load(Ordering::Relaxed)
    }

    /// Answers that left the event log out when it was needed (asked for again).
    pub fn needed(&self) -> u64 {
        self.needed.load(Ordering::Relaxed)
    }

    /// Answers that left the PCR values out when they were needed (asked for again).
    pub fn pcrs_needed(&self) -> u64 {
        self.pcrs_needed.load(Ordering::Relaxed)
    }

    /// Hosts kept.
    pub fn len(&self) -> usize {
        self.kept.lock().map(|k| k.hosts.len()).unwrap_or(0)
    }

    /// Whether no host is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct PCR values held for the hosts kept (and not yet dropped).
    pub fn distinct_values(&self) -> usize {
        self.kept.lock().map(|k| k.values.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use nodetrust_appraise::{appraise_with_runtime, HostContext, MatchPolicy};
    use nodetrust_testkit::soft::SoftTpm;
    use nodetrust_tpm_wire::verify::verify_quote;
    use nodetrust_tpm_wire::{HashAlg, VerifiedQuote};

    use super::*;

    const VALIDITY: Duration = Duration::from_secs(600);
    /// The stored JSON of some PCR values.
    const VALUES: &str = r#"{"sha256":{"0":"00"}}"#;

    fn stored(json: &str) -> Arc<StoredPcrs> {
        Arc::new(StoredPcrs::new(json))
    }

    /// A verified quote of PCRs 0-7 of `tpm`.
    fn quote(tpm: &mut SoftTpm) -> VerifiedQuote {
        let selection = BTreeMap::from([(HashAlg::Sha256, (0..8).collect::<BTreeSet<u8>>())]);
        let q = tpm.quote(&[1; 32], &selection).expect("quote");
        verify_quote(tpm.ak_public(), &q.attest, &q.signature, &q.pcrs, &[1; 32]).expect("verify")
    }

    /// Appraisal of `verified` with no part required: trusted, with no flavor.
    fn trusted(verified: &VerifiedQuote) -> Verdict {
        let policy = MatchPolicy {
            required: vec![],
            required_if_defined: vec![],
        };
        let ctx = HostContext {
            host_name: "h",
            software_tpm: true,
        };
        let v = appraise_with_runtime(
            verified,
            None,
            None,
            &[],
            &policy,
            &ctx,
            SystemTime::now(),
            VALIDITY,
        );
        assert_eq!(v.verdict(), Trust::Trusted);
        v
    }

    fn basis<'a>(
        registered: i64,
        flavors: u64,
        q: &'a VerifiedQuote,
        log: SentLog<'a>,
    ) -> Basis<'a> {
        Basis {
            registered,
            flavors,
            attest: q.attest(),
            log,
            pcrs: SENT,
        }
    }

    /// PCR values sent by an agent that can leave them out.
    const SENT: SentPcrs = SentPcrs::Sent { named: true };

    fn sent(bytes: &[u8]) -> SentLog<'_> {
        SentLog::Sent { bytes, named: true }
    }

    fn is_reused(found: Found) -> bool {
        matches!(found, Found::Reused { .. })
    }

    #[test]
    fn an_appraisal_is_reused_only_for_each_thing_it_depends_on_unchanged() {
        let now = SystemTime::now();
        let mut tpm = SoftTpm::new().expect("tpm");
        let a = quote(&mut tpm);
        let log = b"a measured-boot log".as_slice();
        let fresh = || {
            let memo = Appraisals::default();
            memo.remember(
                "h",
                &basis(1, 1, &a, sent(log)),
                &stored(VALUES),
                &trusted(&a),
            );
            memo
        };
        let memo = fresh();
        // The same quote made again (another nonce, clock): reused.
        let again = quote(&mut tpm);
        assert!(is_reused(memo.find(
            "h",
            &basis(1, 1, &again, sent(log)),
            now,
            VALIDITY
        )));
        // The log sent without its digest (an older agent) is still the same log.
        let older = SentLog::Sent {
            bytes: log,
            named: false,
        };
        assert!(is_reused(memo.find(
            "h",
            &basis(1, 1, &a, older),
            now,
            VALIDITY
        )));
        assert!(
            !is_reused(memo.find("h", &basis(2, 1, &a, sent(log)), now, VALIDITY)),
            "registration"
        );
        assert!(
            !is_reused(memo.find("h", &basis(1, 2, &a, sent(log)), now, VALIDITY)),
            "flavors"
        );
        assert!(
            !is_reused(memo.find("h", &basis(1, 1, &a, SentLog::Absent), now, VALIDITY)),
            "no log"
        );
        assert!(
            !is_reused(memo.find(
                "h",
                &basis(1, 1, &a, sent(b"a measured-boot log!")),
                now,
                VALIDITY
            )),
            "log bytes"
        );
        assert!(
            !is_reused(memo.find("g", &basis(1, 1, &a, sent(log)), now, VALIDITY)),
            "host"
        );
        tpm.extend(HashAlg::Sha256, 7, &[9; 32]);
        let changed = quote(&mut tpm);
        assert!(
            !is_reused(memo.find("h", &basis(1, 1, &changed, sent(log)), now, VALIDITY)),
            "PCR values"
        );
        // None of these dropped what was kept.
        assert!(is_reused(memo.find(
            "h",
            &basis(1, 1, &a, sent(log)),
            now,
            VALIDITY
        )));
        // Another seed, another fingerprint, the same outcome: a server's fingerprints are its own.
        let other = fresh();
        assert!(is_reused(other.find(
            "h",
            &basis(1, 1, &a, sent(log)),
            now,
            VALIDITY
        )));
    }

    #[test]
    fn a_left_out_log_stands_for_the_kept_one_by_its_digest_and_otherwise_is_needed() {
        let now = SystemTime::now();
        let mut tpm = SoftTpm::new().expect("tpm");
        let a = quote(&mut tpm);
        let log = b"a measured-boot log".as_slice();
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, log)
            .as_ref()
            .to_vec();
        let memo = Appraisals::default();
        // Kept from a log sent without its digest: an older agent is never named a log.
        let older = SentLog::Sent {
            bytes: log,
            named: false,
        };
        memo.remember("h", &basis(1, 1, &a, older), &stored(VALUES), &trusted(&a));
        assert_eq!(memo.known("h", 1, 1).event_log_sha256, None);
        // Kept from a named log: its SHA-256, for this registration and these flavors only.
        memo.remember(
            "h",
            &basis(1, 1, &a, sent(log)),
            &stored(VALUES),
            &trusted(&a),
        );
        assert_eq!(memo.known("h", 1, 1).event_log_sha256, Some(sha256.clone()));
        assert_eq!(memo.known("h", 2, 1).event_log_sha256, None);
        assert_eq!(memo.known("h", 1, 2).event_log_sha256, None);
        assert_eq!(memo.known("g", 1, 1).event_log_sha256, None);
        // Left out with that digest: reused, and counted as left out.
        let left_out = SentLog::LeftOut(&sha256);
        match memo.find("h", &basis(1, 1, &a, left_out), now, VALIDITY) {
            Found::Reused {
                verdict,
                pcrs,
                known,
            } => {
                assert_eq!(verdict.verdict(), Trust::Trusted);
                assert_eq!(pcrs.json(), VALUES);
                // The log to name next, found with it.
                assert_eq!(known.event_log_sha256, Some(sha256.clone()));
            }
            other => panic!("not reused: {other:?}"),
        }
        memo.count_reused(left_out, SENT);
        memo.count_reused(sent(log), SENT);
        assert_eq!((memo.reused(), memo.left_out(), memo.needed()), (2, 1, 0));
        // Left out with another digest: needed, and the host's kept appraisal is dropped, so
        // its next request names no log.
        let wrong = [0u8; 32];
        assert!(matches!(
            memo.find(
                "h",
                &basis(1, 1, &a, SentLog::LeftOut(&wrong)),
                now,
                VALIDITY
            ),
            Found::Needed
        ));
        assert_eq!(memo.known("h", 1, 1).event_log_sha256, None);
        assert_eq!(memo.needed(), 1);
        // Left out with the right digest but other PCR values: needed too.
        memo.remember(
            "h",
            &basis(1, 1, &a, sent(log)),
            &stored(VALUES),
            &trusted(&a),
        );
        tpm.extend(HashAlg::Sha256, 7, &[9; 32]);
        let changed = quote(&mut tpm);
        assert!(matches!(
            memo.find("h", &basis(1, 1, &changed, left_out), now, VALIDITY),
            Found::Needed
        ));
        assert!(memo.is_empty());
        // A host never kept: needed.
        assert!(matches!(
            memo.find("h", &basis(1, 1, &a, left_out), now, VALIDITY),
            Found::Needed
        ));
    }

    #[test]
    fn left_out_pcr_values_stand_for_the_kept_ones_by_the_signed_digest_and_otherwise_are_needed() {
        let now = SystemTime::now();
        let mut tpm = SoftTpm::new().expect("tpm");
        let a = quote(&mut tpm);
        let digest = a.attest().pcr_digest.clone();
        let memo = Appraisals::default();
        fn with(q: &VerifiedQuote, pcrs: SentPcrs) -> Basis<'_> {
            Basis {
                pcrs,
                ..basis(1, 1, q, SentLog::Absent)
            }
        }
        // Kept from values sent without their digest: an older agent is never named them.
        let older = SentPcrs::Sent { named: false };
        memo.remember("h", &with(&a, older), &stored(VALUES), &trusted(&a));
        assert_eq!(memo.known("h", 1, 1), Known::default());
        // Kept from named values: the quote's digest, for this registration and flavors only.
        memo.remember("h", &with(&a, SENT), &stored(VALUES), &trusted(&a));
        assert_eq!(memo.known("h", 1, 1).pcr_digest, Some(digest.clone()));
        assert_eq!(memo.known("h", 1, 1).event_log_sha256, None, "no log");
        assert_eq!(memo.known("h", 2, 1), Known::default());
        assert_eq!(memo.known("h", 1, 2), Known::default());
        // Left out from a quote with that signed digest (another nonce): reused, with the
        // values kept, and counted.
        let again = quote(&mut tpm);
        match memo.find("h", &with(&again, SentPcrs::LeftOut), now, VALIDITY) {
            Found::Reused { pcrs, known, .. } => {
                assert_eq!(pcrs.json(), VALUES);
                assert_eq!(known.pcr_digest, Some(digest.clone()));
            }
            other => panic!("not reused: {other:?}"),
        }
        memo.count_reused(SentLog::Absent, SentPcrs::LeftOut);
        assert_eq!(
            (memo.reused(), memo.pcrs_left_out(), memo.left_out()),
            (1, 1, 0)
        );
        // Left out from a quote of other values: needed, and nothing is kept of the host, so
        // that its next request names nothing.
        tpm.extend(HashAlg::Sha256, 7, &[9; 32]);
        let changed = quote(&mut tpm);
        assert!(matches!(
            memo.find("h", &with(&changed, SentPcrs::LeftOut), now, VALIDITY),
            Found::Needed
        ));
        assert_eq!((memo.pcrs_needed(), memo.needed()), (1, 0));
        assert_eq!(memo.known("h", 1, 1), Known::default());
        // Sent, the same quote is appraised in full (nothing is needed).
        assert!(matches!(
            memo.find("h", &with(&changed, SENT), now, VALIDITY),
            Found::Appraise
        ));
        assert_eq!(memo.pcrs_needed(), 1);
    }

    #[test]
    fn only_trusted_verdicts_are_kept_renewed_and_at_most_capacity_hosts() {
        let memo = Appraisals::with_capacity(2);
        let mut tpm = SoftTpm::new().expect("tpm");
        let verified = quote(&mut tpm);
        let verdict = trusted(&verified);
        let b = basis(1, 1, &verified, SentLog::Absent);
        assert!(!is_reused(memo.find("a", &b, SystemTime::now(), VALIDITY)));
        memo.remember("a", &b, &stored(VALUES), &verdict);
        let later = SystemTime::now() + Duration::from_secs(60);
        let Found::Reused { verdict: again, .. } = memo.find("a", &b, later, VALIDITY) else {
            panic!("not reused");
        };
        assert_eq!(again.verdict(), Trust::Trusted);
        assert_eq!(again.reasons(), verdict.reasons());
        assert_eq!(again.attested_at(), later);
        assert_eq!(again.expires_at(), later + VALIDITY);
        assert_eq!(memo.reused(), 0, "counted by the caller");
        // An untrusted verdict drops what was kept of the host.
        let untrusted = Verdict::untrusted(vec!["no".into()], later, VALIDITY);
        memo.remember("a", &b, &stored(VALUES), &untrusted);
        assert!(!is_reused(memo.find("a", &b, later, VALIDITY)));
        assert!(memo.is_empty());
        // Bounded: a third host pushes one out.
        for host in ["a", "b", "c"] {
            memo.remember(host, &b, &stored(VALUES), &verdict);
            assert!(memo.len() <= 2);
        }
        assert!(is_reused(memo.find("c", &b, later, VALIDITY)));
    }

    #[test]
    fn hosts_kept_with_the_same_pcr_values_share_them_and_values_no_host_holds_are_dropped() {
        let memo = Appraisals::default();
        let mut tpm = SoftTpm::new().expect("tpm");
        let verified = quote(&mut tpm);
        let verdict = trusted(&verified);
        let b = basis(1, 1, &verified, SentLog::Absent);
        let values = |n: usize| format!(r#"{{"sha256":{{"0":"{n:02x}"}}}}"#);
        for host in 0..100 {
            memo.remember(&format!("h{host}"), &b, &stored(&values(0)), &verdict);
        }
        assert_eq!(memo.distinct_values(), 1);
        let reused = |host: &str| match memo.find(host, &b, SystemTime::now(), VALIDITY) {
            Found::Reused { pcrs, .. } => pcrs,
            other => panic!("not reused: {other:?}"),
        };
        let (a, z) = (reused("h0"), reused("h99"));
        assert!(Arc::ptr_eq(&a, &z), "one copy");
        assert_eq!(a.json(), values(0));
        drop((a, z));
        // Each host kept again with values of its own, many times over: what no host holds any
        // more is dropped, so the values held stay near the hosts kept.
        for round in 1..10 {
            for host in 0..100 {
                memo.remember(
                    &format!("h{host}"),
                    &b,
                    &stored(&values(round * 100 + host)),
                    &verdict,
                );
            }
            assert!(
                memo.distinct_values() <= 2 * 100 + 64 + 1,
                "{}",
                memo.distinct_values()
            );
        }
        assert_eq!(reused("h7").json(), values(907));
    }
}
