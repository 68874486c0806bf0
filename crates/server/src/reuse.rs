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
//! - the quote's PCR selection and `pcrDigest`, from the verified `TPMS_ATTEST`: the digest of
//!   the selected values, which the verifier has just checked against the values sent; equal
//!   digests are equal values;
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
//! Only trusted verdicts are kept: an untrusted or unknown one is always appraised in full, so
//! its reasons are always those of its own evidence. A host with RUNTIME (IMA) flavors is never
//! reused (its log is appraised incrementally, [`crate::runtime`]). At most [`REUSE_MAX`] hosts
//! are kept; when full, one is dropped for each new one.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use nodetrust_appraise::{Trust, Verdict};
use nodetrust_tpm_wire::{Attest, PcrSelection};

/// Most hosts whose last trusted appraisal is kept.
pub const REUSE_MAX: usize = 1 << 20;

/// What a trusted appraisal was made of ([`Appraisals::inputs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    registered: i64,
    flavors: u64,
    selection: PcrSelection,
    pcr_digest: Vec<u8>,
    event_log: Option<u64>,
}

#[derive(Debug)]
struct Kept {
    inputs: Inputs,
    verdict: Verdict,
}

/// The last trusted appraisal of each host, and how often one was reused.
#[derive(Debug)]
pub struct Appraisals {
    seed: foldhash::quality::RandomState,
    kept: Mutex<HashMap<String, Kept>>,
    capacity: usize,
    reused: AtomicU64,
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
            kept: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            reused: AtomicU64::new(0),
        }
    }

    /// The inputs of an appraisal of the quote `attest` (verified), with `event_log` (the raw
    /// bytes sent), under flavor generation `flavors`, for the registration made at
    /// `registered`.
    pub fn inputs(
        &self,
        registered: i64,
        flavors: u64,
        attest: &Attest,
        event_log: Option<&[u8]>,
    ) -> Inputs {
        Inputs {
            registered,
            flavors,
            selection: attest.pcr_select.clone(),
            pcr_digest: attest.pcr_digest.clone(),
            event_log: event_log.map(|bytes| self.seed.hash_one(bytes)),
        }
    }

    /// `host`'s last trusted verdict made again at `now` ([`Verdict::renewed`]) when its
    /// appraisal was made of `inputs`. The caller counts it ([`Self::count_reused`]) once the
    /// verdict is made of it.
    pub fn trusted(
        &self,
        host: &str,
        inputs: &Inputs,
        now: SystemTime,
        validity: Duration,
    ) -> Option<Verdict> {
        let kept = self.kept.lock().ok()?;
        let k = kept.get(host).filter(|k| k.inputs == *inputs)?;
        Some(k.verdict.renewed(now, validity))
    }

    /// Counts a verdict made of a reused appraisal.
    pub fn count_reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the full appraisal of `host` made of `inputs` when its verdict is trusted;
    /// otherwise drops what was kept of the host.
    pub fn remember(&self, host: &str, inputs: Inputs, verdict: &Verdict) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if verdict.verdict() != Trust::Trusted {
            kept.remove(host);
            return;
        }
        if kept.len() >= self.capacity && !kept.contains_key(host) {
            if let Some(old) = kept.keys().next().cloned() {
                kept.remove(&old);
            }
        }
        kept.insert(
            host.to_string(),
            Kept {
                inputs,
                verdict: verdict.clone(),
            },
        );
    }

    /// Appraisals reused so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Hosts kept.
    pub fn len(&self) -> usize {
        self.kept.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// Whether no host is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[test]
    fn inputs_differ_with_each_thing_an_appraisal_depends_on() {
        let memo = Appraisals::default();
        let mut tpm = SoftTpm::new().expect("tpm");
        let a = quote(&mut tpm);
        let log = b"a measured-boot log".as_slice();
        let base = memo.inputs(1, 1, a.attest(), Some(log));
        // The same quote made again (another nonce, clock): the same inputs.
        assert_eq!(memo.inputs(1, 1, quote(&mut tpm).attest(), Some(log)), base);
        assert_ne!(
            memo.inputs(2, 1, a.attest(), Some(log)),
            base,
            "registration"
        );
        assert_ne!(memo.inputs(1, 2, a.attest(), Some(log)), base, "flavors");
        assert_ne!(memo.inputs(1, 1, a.attest(), None), base, "no log");
        assert_ne!(
            memo.inputs(1, 1, a.attest(), Some(b"a measured-boot log!")),
            base,
            "log bytes"
        );
        tpm.extend(HashAlg::Sha256, 7, &[9; 32]);
        assert_ne!(
            memo.inputs(1, 1, quote(&mut tpm).attest(), Some(log)),
            base,
            "PCR values"
        );
        // Another seed, another fingerprint: a server's fingerprints are its own.
        let other = Appraisals::default();
        assert_ne!(other.inputs(1, 1, a.attest(), Some(log)), base);
    }

    #[test]
    fn only_trusted_verdicts_are_kept_renewed_and_at_most_capacity_hosts() {
        let memo = Appraisals::with_capacity(2);
        let mut tpm = SoftTpm::new().expect("tpm");
        let verified = quote(&mut tpm);
        let verdict = trusted(&verified);
        let inputs = memo.inputs(1, 1, verified.attest(), None);
        assert!(memo
            .trusted("a", &inputs, SystemTime::now(), VALIDITY)
            .is_none());
        memo.remember("a", inputs.clone(), &verdict);
        let later = SystemTime::now() + Duration::from_secs(60);
        let again = memo.trusted("a", &inputs, later, VALIDITY).expect("reused");
        assert_eq!(again.verdict(), Trust::Trusted);
        assert_eq!(again.reasons(), verdict.reasons());
        assert_eq!(again.attested_at(), later);
        assert_eq!(again.expires_at(), later + VALIDITY);
        assert_eq!(memo.reused(), 0, "counted by the caller");
        memo.count_reused();
        assert_eq!(memo.reused(), 1);
        // Other inputs, or another host: not reused.
        let other = memo.inputs(2, 1, verified.attest(), None);
        assert!(memo.trusted("a", &other, later, VALIDITY).is_none());
        assert!(memo.trusted("b", &inputs, later, VALIDITY).is_none());
        assert_eq!(memo.reused(), 1);
        // An untrusted verdict drops what was kept of the host.
        let untrusted = Verdict::untrusted(vec!["no".into()], later, VALIDITY);
        memo.remember("a", inputs.clone(), &untrusted);
        assert!(memo.trusted("a", &inputs, later, VALIDITY).is_none());
        assert!(memo.is_empty());
        // Bounded: a third host pushes one out.
        for host in ["a", "b", "c"] {
            memo.remember(host, inputs.clone(), &verdict);
            assert!(memo.len() <= 2);
        }
        assert!(memo.trusted("c", &inputs, later, VALIDITY).is_some());
    }
}
