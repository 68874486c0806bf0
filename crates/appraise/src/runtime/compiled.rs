//! The indexed policy: one hash lookup per entry, excludes sorted by shape, keys parsed once.
//!
//! The allowlist is one byte arena (each path followed by its digests) and an open-addressing
//! table of `(hash tag, arena offset)`: a lookup touches the table slot and then one record,
//! rather than a hash map's key box and each digest's vector, which for a policy of tens of
//! thousands of paths are cache misses that cost more than the hashing.

use std::collections::{HashMap, HashSet};

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use nodetrust_eventlog::ima::{ImaEntry, Template};
use nodetrust_tpm_wire::public::{EccCurve, PublicKey};
use nodetrust_tpm_wire::HashAlg;

use super::appraisal::FailureKind;
use super::glob::Glob;
use super::keys::{KeyId, TrustedKey};
use super::policy::{BootAggregateRule, PolicyError, RuntimePolicy, ViolationRule};
use super::signature::parse_ima_signature;

/// Largest compiled form of the exclude regular expressions.
const REGEX_SIZE_LIMIT: usize = 32 << 20;

/// Why an entry was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedBy {
    /// Its digest is listed for its path.
    Digest,
    /// Its path is excluded.
    Excluded,
    /// Its `ima-sig` signature verifies under this trusted key.
    Signature(KeyId),
    /// A violation, under [`ViolationRule::Allow`].
    Violation,
    /// The `boot_aggregate` entry matched the quote (or the rule is
    /// [`BootAggregateRule::Ignore`]).
    BootAggregate,
}

/// One entry's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryDecision {
    /// Allowed, and why.
    Allowed(AllowedBy),
    /// Not allowed, and why.
    Failed(FailureKind),
}

impl EntryDecision {
    /// Whether the entry is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }
}

/// A key ready to verify: one parsed key per hash algorithm it can be used with.
struct CompiledKey {
    key: TrustedKey,
    /// Indexed like [`hash_index`]; `None` where the combination is not supported.
    verifiers: [Option<ParsedPublicKey>; 4],
}

impl std::fmt::Debug for CompiledKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompiledKey({} {})", self.key.key_id(), self.key.kind())
    }
}

fn hash_index(h: HashAlg) -> usize {
    match h {
        HashAlg::Sha1 => 0,
        HashAlg::Sha256 => 1,
        HashAlg::Sha384 => 2,
        HashAlg::Sha512 => 3,
    }
}

fn digest_alg(h: HashAlg) -> &'static digest::Algorithm {
    match h {
        HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    }
}

fn verification_alg(key: &PublicKey, h: HashAlg) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match (key, h) {
        (PublicKey::Rsa { .. }, HashAlg::Sha1) => {
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        (PublicKey::Rsa { .. }, HashAlg::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (PublicKey::Rsa { .. }, HashAlg::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (PublicKey::Rsa { .. }, HashAlg::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (PublicKey::Ecc { curve, .. }, h) => match (curve, h) {
            (EccCurve::NistP256, HashAlg::Sha1) => &signature::ECDSA_P256_SHA1_ASN1,
            (EccCurve::NistP256, HashAlg::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
            (EccCurve::NistP256, HashAlg::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
            (EccCurve::NistP256, HashAlg::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
            (EccCurve::NistP384, HashAlg::Sha1) => return None,
            (EccCurve::NistP384, HashAlg::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
            (EccCurve::NistP384, HashAlg::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
            (EccCurve::NistP384, HashAlg::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
        },
    })
}

impl CompiledKey {
    fn new(key: &TrustedKey) -> Result<Self, PolicyError> {
        let spki = key.spki_der();
        let mut verifiers: [Option<ParsedPublicKey>; 4] = [None, None, None, None];
        for h in HashAlg::ALL {
            let Some(alg) = verification_alg(key.public_key(), h) else {
                continue;
            };
            let parsed = ParsedPublicKey::new(alg, &spki).map_err(|e| {
                PolicyError::Key(super::keys::KeyError::Unsupported(format!(
                    "key {}: {e}",
                    key.key_id()
                )))
            })?;
            if let Some(slot) = verifiers.get_mut(hash_index(h)) {
                *slot = Some(parsed);
            }
        }
        Ok(Self {
            key: key.clone(),
            verifiers,
        })
    }
}

/// 64-bit hash of a path (multiply-rotate over 8-byte words, then a MurmurHash3 finaliser).
/// Not keyed: the table holds only the policy's paths, which a host does not choose, so the
/// probe sequences a lookup walks are those of the policy alone.
fn path_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The last bytes as a little-endian word, zero-padded (a loop: no call to `memcpy`).
        let w = rest
            .iter()
            .rev()
            .fold(0u64, |w, b| (w << 8) | u64::from(*b));
        h = (h ^ w).wrapping_mul(K).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The allowlist: records `[path_len u16][count u8][path][(alg_len u8, alg, len u8, digest)*]`
/// in one arena, found through a power-of-two table of `tag << 32 | (offset + 1)` (0 empty)
/// kept at most half full.
#[derive(Debug, Default)]
struct Allowlist {
    slots: Vec<u64>,
    arena: Vec<u8>,
    paths: usize,
}

impl Allowlist {
    fn new(policy: &RuntimePolicy) -> Result<Self, PolicyError> {
        let n = policy.digests.len();
        let size = (2 * n).next_power_of_two().max(16);
        let mut slots = vec![0u64; size];
        let mut arena = Vec::new();
        let too_large = || PolicyError::TooLarge(arena_limit());
        for (path, ds) in &policy.digests {
            let offset = arena.len();
            let off32 = u32::try_from(offset + 1).map_err(|_| too_large())?;
            let plen = u16::try_from(path.len())
                .map_err(|_| PolicyError::BadPath(path.chars().take(160).collect()))?;
            let count = u8::try_from(ds.len()).map_err(|_| PolicyError::TooMany {
                what: "digests for one path",
                count: ds.len(),
                max: usize::from(u8::MAX),
            })?;
            arena.extend_from_slice(&plen.to_le_bytes());
            arena.push(count);
            arena.extend_from_slice(path.as_bytes());
            for d in ds {
                // Algorithm names are at most 32 bytes and digests 64 (checked by FileDigest).
                arena.push(d.alg.len().min(255) as u8);
                arena.extend_from_slice(d.alg.as_bytes());
                arena.push(d.digest.len().min(255) as u8);
                arena.extend_from_slice(&d.digest);
            }
            let h = path_hash(path.as_bytes());
            let mask = size - 1;
            let mut i = (h as usize) & mask;
            loop {
                let Some(slot) = slots.get_mut(i) else {
                    return Err(too_large());
                };
                if *slot == 0 {
                    *slot = ((h >> 32) << 32) | u64::from(off32);
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        Ok(Self {
            slots,
            arena,
            paths: n,
        })
    }

    /// The table slot `path` starts at, read: the first step of a lookup.
    fn probe(&self, path: &[u8]) -> Probe {
        let hash = path_hash(path);
        let index = (hash as usize) & self.slots.len().saturating_sub(1);
        Probe {
            hash,
            index,
            slot: self.slots.get(index).copied().unwrap_or(0),
        }
    }

    /// The record a slot points at (from its offset on), whatever its tag.
    fn record(&self, slot: u64) -> Option<&[u8]> {
        let off = usize::try_from((slot & 0xFFFF_FFFF).checked_sub(1)?).ok()?;
        self.arena.get(off..)
    }

    /// The digests recorded for `path` (the bytes after the path), if listed, going on from
    /// `probe` (its first slot already read).
    fn find_from(&self, path: &[u8], probe: Probe) -> Option<(u8, &[u8])> {
        let tag = probe.hash >> 32;
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = probe.index;
        let mut slot = probe.slot;
        for _ in 0..self.slots.len() {
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                let [l0, l1, count, rest @ ..] = self.record(slot)? else {
                    return None;
                };
                let plen = usize::from(u16::from_le_bytes([*l0, *l1]));
                if rest.get(..plen).is_some_and(|p| same(p, path)) {
                    return Some((*count, rest.get(plen..)?));
                }
            }
            i = (i + 1) & mask;
            slot = *self.slots.get(i)?;
        }
        None
    }

    /// Whether `digest` (algorithm `alg`) is recorded in the digests `find_from` returned.
    fn has_digest(found: Option<(u8, &[u8])>, alg: &[u8], digest: &[u8]) -> bool {
        let Some((count, mut rest)) = found else {
            return false;
        };
        for _ in 0..count {
            let Some((&al, r)) = rest.split_first() else {
                return false;
            };
            let Some((a, r)) = r.split_at_checked(usize::from(al)) else {
                return false;
            };
            let Some((&dl, r)) = r.split_first() else {
                return false;
            };
            let Some((d, r)) = r.split_at_checked(usize::from(dl)) else {
                return false;
            };
            if same(d, digest) && same(a, alg) {
                return true;
            }
            rest = r;
        }
        false
    }

    fn contains(&self, path: &[u8], alg: &[u8], digest: &[u8]) -> bool {
        Self::has_digest(self.find_from(path, self.probe(path)), alg, digest)
    }

    /// [`contains`](Self::contains) for many entries: first every table slot is read, then
    /// every record's first bytes, then each entry is compared. The reads of one phase do not
    /// depend on each other, so their cache misses overlap instead of following one another
    /// (a policy of tens of thousands of paths is megabytes, read at random).
    fn contains_many(&self, items: &[Lookup<'_>], out: &mut [bool]) {
        for (items, out) in items.chunks(LOOKAHEAD).zip(out.chunks_mut(LOOKAHEAD)) {
            let mut probes = [Probe::default(); LOOKAHEAD];
            for (p, it) in probes.iter_mut().zip(items) {
                *p = self.probe(it.path);
            }
            for p in &probes {
                if p.slot >> 32 == p.hash >> 32 {
                    // Only to bring the record (its first two cache lines: the path and the
                    // first digest, mostly) into cache; the values are not needed.
                    if let Some(r) = self.record(p.slot) {
                        std::hint::black_box((r.first().copied(), r.get(64).copied()));
                    }
                }
            }
            for ((p, it), o) in probes.iter().zip(items).zip(out.iter_mut()) {
                *o = Self::has_digest(self.find_from(it.path, *p), it.alg, it.digest);
            }
        }
    }
}

/// Entries looked up together by [`Allowlist::contains_many`].
const LOOKAHEAD: usize = 16;

/// One lookup under way: the path's hash, its first slot and that slot's value.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    hash: u64,
    index: usize,
    slot: u64,
}

/// One entry to look up: path, digest algorithm and digest, as logged.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lookup<'a> {
    pub(crate) path: &'a [u8],
    pub(crate) alg: &'a [u8],
    pub(crate) digest: &'a [u8],
}

/// `a == b` for the short strings of a lookup (paths, digests), inline: the bytes' differences
/// are or-ed together, which the compiler does a vector at a time, rather than a call to
/// `memcmp` per comparison.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The arena's offsets are 32-bit.
fn arena_limit() -> usize {
    u32::MAX as usize
}

/// A [`RuntimePolicy`] indexed for appraisal. Immutable; share it (`Arc`) between threads.
#[derive(Debug)]
pub struct CompiledPolicy {
    digests: Allowlist,
    exact_excludes: HashSet<Box<str>>,
    prefix_excludes: Vec<Box<str>>,
    globs: Vec<Glob>,
    regexes: Option<regex::RegexSet>,
    keys: HashMap<KeyId, CompiledKey>,
    boot_aggregate: BootAggregateRule,
    violations: ViolationRule,
    fingerprint: String,
    digest_count: usize,
}

impl CompiledPolicy {
    /// Validates and indexes `policy`.
    pub fn new(policy: &RuntimePolicy) -> Result<Self, PolicyError> {
        policy.validate()?;
        let digests = Allowlist::new(policy)?;
        let mut exact_excludes = HashSet::new();
        let mut prefix_excludes: Vec<Box<str>> = Vec::new();
        let mut globs = Vec::new();
        for g in &policy.excludes {
            if g.is_literal() {
                exact_excludes.insert(Box::from(g.as_str()));
            } else if let Some(p) = g.prefix() {
                prefix_excludes.push(Box::from(p));
            } else {
                globs.push(g.clone());
            }
        }
        // A shorter prefix covers the longer ones it starts: keep only those.
        prefix_excludes.sort();
        let mut kept: Vec<Box<str>> = Vec::new();
        for p in prefix_excludes {
            if !kept.last().is_some_and(|k| p.starts_with(&**k)) {
                kept.push(p);
            }
        }
        let regexes = if policy.exclude_regexes.is_empty() {
            None
        } else {
            // Anchored at the start like Python's `re.match`.
            let anchored: Vec<String> = policy
                .exclude_regexes
                .iter()
                .map(|r| format!("^(?:{r})"))
                .collect();
            for (r, a) in policy.exclude_regexes.iter().zip(&anchored) {
                regex::RegexBuilder::new(a)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| PolicyError::Regex {
                        pattern: r.chars().take(160).collect(),
                        reason: e.to_string(),
                    })?;
            }
            Some(
                regex::RegexSetBuilder::new(&anchored)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| PolicyError::Regex {
                        pattern: "(all exclude regular expressions together)".to_string(),
                        reason: e.to_string(),
                    })?,
            )
        };
        let mut keys = HashMap::new();
        for k in &policy.keys {
            keys.insert(k.key_id(), CompiledKey::new(k)?);
        }
        Ok(Self {
            digests,
            exact_excludes,
            prefix_excludes: kept,
            globs,
            regexes,
            keys,
            boot_aggregate: policy.boot_aggregate,
            violations: policy.violations,
            fingerprint: policy.fingerprint(),
            digest_count: policy.digest_count(),
        })
    }

    /// [`RuntimePolicy::fingerprint`] of the compiled policy.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The boot-aggregate rule.
    pub fn boot_aggregate(&self) -> BootAggregateRule {
        self.boot_aggregate
    }

    /// The violation rule.
    pub fn violations(&self) -> ViolationRule {
        self.violations
    }

    /// Paths in the allowlist.
    pub fn paths(&self) -> usize {
        self.digests.paths
    }

    /// (path, digest) pairs in the allowlist.
    pub fn digest_count(&self) -> usize {
        self.digest_count
    }

    /// Whether `digest` (algorithm `alg`) is listed for `path`.
    pub fn is_listed(&self, path: &str, alg: &str, digest: &[u8]) -> bool {
        self.digests
            .contains(path.as_bytes(), alg.as_bytes(), digest)
    }

    /// [`is_listed`](Self::is_listed) for each of `items` (bytes as logged), into `out`; the
    /// lookups' memory reads overlap.
    pub(crate) fn are_listed(&self, items: &[Lookup<'_>], out: &mut [bool]) {
        self.digests.contains_many(items, out);
    }

    /// Whether an exclude glob or regular expression covers `path`.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.exact_excludes.contains(path)
            || self.prefix_excludes.iter().any(|p| path.starts_with(&**p))
            || self.globs.iter().any(|g| g.matches(path))
            || self.regexes.as_ref().is_some_and(|r| r.is_match(path))
    }

    /// The trusted key with `id`.
    pub fn key(&self, id: KeyId) -> Option<&TrustedKey> {
        self.keys.get(&id).map(|k| &k.key)
    }

    /// Decides one file entry: allowed by digest, exclude or signature, else why not.
    /// `boot_aggregate` and the replay are [`RuntimeAppraisal`](super::RuntimeAppraisal)'s
    /// (they need the quote); this looks at the entry alone.
    pub fn check_entry(&self, e: &ImaEntry) -> EntryDecision {
        if let Template::Other(name) = &e.template {
            if self.is_excluded(&e.path) && !e.path.is_empty() {
                return EntryDecision::Allowed(AllowedBy::Excluded);
            }
            return EntryDecision::Failed(FailureKind::Template {
                name: name.chars().take(64).collect(),
            });
        }
        if e.is_violation() {
            return match self.violations {
                ViolationRule::Allow => EntryDecision::Allowed(AllowedBy::Violation),
                ViolationRule::Fail => EntryDecision::Failed(FailureKind::Violation),
            };
        }
        if self.is_listed(&e.path, &e.file_alg, &e.file_digest) {
            return EntryDecision::Allowed(AllowedBy::Digest);
        }
        if self.is_excluded(&e.path) {
            return EntryDecision::Allowed(AllowedBy::Excluded);
        }
        let not_listed = || {
            EntryDecision::Failed(FailureKind::NotInPolicy {
                digest: format!("{}:{}", e.file_alg, hex::encode(&e.file_digest)),
            })
        };
        match (&e.signature, self.keys.is_empty()) {
            (Some(sig), false) => self.check_signature(e, sig),
            _ => not_listed(),
        }
    }

    /// Verifies an `ima-sig` signature over the entry's file digest.
    fn check_signature(&self, e: &ImaEntry, bytes: &[u8]) -> EntryDecision {
        let sig = match parse_ima_signature(bytes) {
            Ok(s) => s,
            Err(err) => {
                return EntryDecision::Failed(FailureKind::MalformedSignature {
                    why: err.to_string(),
                })
            }
        };
        let Some(key) = self.keys.get(&sig.key_id) else {
            return EntryDecision::Failed(FailureKind::UnknownKey { key_id: sig.key_id });
        };
        let bad = |why: String| {
            EntryDecision::Failed(FailureKind::BadSignature {
                key_id: sig.key_id,
                why,
            })
        };
        if sig.hash_name() != e.file_alg {
            return bad(format!(
                "it signs a {} digest but the entry logs a {} digest",
                sig.hash_name(),
                e.file_alg.chars().take(32).collect::<String>()
            ));
        }
        let Some(h) = sig.hash() else {
            return bad(format!("{} signatures are not supported", sig.hash_name()));
        };
        let Some(verifier) = key.verifiers.get(hash_index(h)).and_then(Option::as_ref) else {
            return bad(format!("{} with {} is not supported", key.key.kind(), h));
        };
        let Ok(d) = Digest::import_less_safe(&e.file_digest, digest_alg(h)) else {
            return bad(format!("the logged digest is not a {h} digest"));
        };
        match verifier.verify_digest_sig(&d, &sig.signature) {
            Ok(()) => EntryDecision::Allowed(AllowedBy::Signature(sig.key_id)),
            Err(_) => bad("it does not verify".to_string()),
        }
    }
}
