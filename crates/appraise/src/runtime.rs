//! Runtime integrity: Linux IMA logs appraised against a runtime policy, incrementally.
//!
//! Boot-time flavors say that a node booted the right kernel; a runtime policy says which files
//! that kernel may have measured since (IMA, PCR 10). Pure: no I/O, no clock, no async runtime.
//! Parsing and replay of the log itself are the event-log crate's
//! ([`nodetrust_eventlog::ima`]); this module decides trust.
//!
//! # API
//! - [`RuntimePolicy`]: the operator's file (serde JSON, `"version": 1`): an allowlist
//!   `path → ["sha256:hex", ...]` (any IMA hash algorithm, several digests per path), exclude
//!   globs ([`Glob`]: `/tmp/*`, `/var/log/*`) and, for policies imported from Keylime, anchored
//!   regular expressions, trusted signing keys for `ima-sig` entries ([`TrustedKey`], from
//!   X.509 certificates or public keys, PEM or DER, named by their [`KeyId`]), the
//!   [`BootAggregateRule`] and the [`ViolationRule`]. [`RuntimePolicy::from_json`] bounds every
//!   size and never panics; [`RuntimePolicy::validate`] says what is wrong, in words.
//!   Made by [`RuntimePolicy::learn`] (a gold host's log), [`RuntimePolicy::add_digest`] (a file
//!   tree, hashed by the caller) or [`RuntimePolicy::from_keylime`] (Keylime's runtime-policy
//!   JSON); explained by [`RuntimePolicy::describe`] and [`diff_policies`].
//! - [`CompiledPolicy`] ([`RuntimePolicy::compile`]): the indexed form (hash map path →
//!   digests, compiled globs and regular expressions, parsed keys), immutable and `Sync`,
//!   shared by every appraisal; [`CompiledPolicy::check_entry`] decides one entry
//!   ([`EntryDecision`]); [`CompiledPolicy::fingerprint`] names the policy's contents.
//! - [`RuntimeAppraisal`]: one host's incremental state (serde JSON, a few hundred bytes:
//!   entries appraised, the running PCR values per bank, the policy fingerprint, violations,
//!   the first [`MAX_LISTED_FAILURES`] failures and their total).
//!   [`RuntimeAppraisal::appraise`]`(policy, first_entry, new_entries, quoted)` →
//!   [`RuntimeOutcome`]: replays the new entries onto the running PCRs, finds where they equal
//!   the quoted PCR 10 of every quoted bank, appraises the entries up to there and keeps the
//!   rest for the next attestation ([`RuntimeOutcome::unquoted`]).
//! - [`parse_ima_signature`] reads the `ima-sig` field (`signature_v2_hdr`: type 3, version 2,
//!   hash algorithm, key id, size, signature); [`CompiledPolicy`] verifies it over the file
//!   digest (RSA PKCS#1 v1.5 or ECDSA P-256/P-384, aws-lc-rs).
//!
//! # The server's loop
//! ```text
//! let policy = runtime_policy.compile()?;                  // once per policy
//! let offset = state.next_offset(&policy);                 // 0 after a reboot or a policy change
//! // ask the agent for the log from `offset`, quote PCR 10 (+ 0-9 of the boot-aggregate bank)
//! let outcome = state.appraise(&policy, offset, &entries, verified.pcrs());
//! store(state); if !outcome.is_trusted() { untrusted(outcome.reasons()) }
//! ```
//! A reboot (the quote's resetCount changed) starts over: the caller asks for offset 0, and
//! `appraise` with `first_entry == 0` resets the state itself. Entries are numbered by their
//! position in the whole log (`first_entry + i`), not by [`ImaEntry::number`], which counts
//! from the start of the bytes the parser was given.
//!
//! # Decisions
//! An entry is allowed when (in this order) its `(algorithm, digest)` is listed for its exact
//! path, its path is excluded, or its `ima-sig` signature verifies under a trusted key. Else
//! it fails, with a reason that names the file:
//! `RUNTIME: /usr/bin/curl: sha256:<hex> not in policy`,
//! `RUNTIME: /usr/lib/evil.so: signature by unknown key 0x<keyid>`,
//! `RUNTIME: /usr/lib/x.so: signature by key 0x<keyid> does not verify`,
//! `RUNTIME: /var/lib/db: IMA violation (...)` (a zero template hash, extended as all-ones;
//! allowed only under [`ViolationRule::Allow`], always counted),
//! `RUNTIME: boot_aggregate: ...` (the first entry against the quoted PCRs 0–9, or 0–7 for
//! kernels before 5.8, in the bank named by its digest algorithm).
//! Failures are sticky: the entry stays in the log until the node reboots, so the host stays
//! untrusted until then (or until the policy changes, which appraises the log again from 0).
//!
//! # Trust in the log
//! Nothing in a log entry is believed before the log replays to the quoted PCR. The SHA-1 bank
//! binds only the logged template hashes, so when no other bank is verified the template hash
//! of every entry is also checked against its data (else a log could show another path).
//!
//! [`ImaEntry::number`]: nodetrust_eventlog::ima::ImaEntry::number

mod appraisal;
mod compiled;
mod diff;
mod glob;
mod keylime;
mod keys;
mod policy;
mod signature;

pub use appraisal::{
    AllowedCounts, FailureKind, RuntimeAppraisal, RuntimeFailure, RuntimeOutcome, RuntimeProblem,
    MAX_LISTED_FAILURES,
};
pub use compiled::{AllowedBy, CompiledPolicy, EntryDecision};
pub use diff::{diff_policies, PolicyDifference};
pub use glob::Glob;
pub use keylime::KeylimeImport;
pub use keys::{KeyError, KeyId, TrustedKey};
pub use policy::{
    BootAggregateRule, FileDigest, PolicyError, RuntimePolicy, ViolationRule, MAX_POLICY_BYTES,
    RUNTIME_POLICY_VERSION,
};
pub use signature::{encode_ima_signature, parse_ima_signature, ImaSignature, SignatureError};

/// The PCR IMA extends by default.
pub const IMA_PCR: u8 = 10;

/// The PCRs the `boot_aggregate` entry hashes (Linux >= 5.8 on TPM 2.0; older kernels 0–7).
pub const BOOT_AGGREGATE_PCRS: std::ops::RangeInclusive<u8> = 0..=9;
