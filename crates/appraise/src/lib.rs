//! Appraisal: verified evidence + flavors (reference measurements) + the time → a verdict with
//! reasons.
//!
//! Pure: no I/O, no async runtime, no database, no clock of its own (the caller passes `now`).
//! The only way to a [`Trust::Trusted`] verdict is [`appraise`], which takes a
//! [`VerifiedQuote`](nodetrust_tpm_wire::VerifiedQuote): a proof value that only the quote
//! verifier constructs, so no code path can trust evidence that skipped signature, nonce or
//! PCR-digest checks.
//!
//! # Layout
//! - [`flavor`]: flavor parts (PLATFORM, OS, HOST_UNIQUE), PCR and event rules, and building
//!   flavors from a gold host's verified evidence.
//! - [`evidence`]: the measured-boot log as appraisal sees it (events with digests, plus the
//!   PCR values the log replays to).
//! - [`verdict`]: [`Trust`], [`Verdict`] and its [`Failure`] kind (stable labels for metrics).
//! - [`policy`]: the match policy and [`appraise`].
//! - [`runtime`]: runtime integrity: IMA logs appraised against a runtime policy
//!   (allowlist, excludes, signing keys, boot aggregate), incrementally per host.
//! - [`diff`]: explanations of a PCR mismatch, worded from the event-log crate's typed
//!   differences ("PCR 4: boot application ... changed").
//!
//! Modules depend one way: `evidence` ← `flavor` ← `verdict` ← `policy`, and `diff` (on the
//! event-log crate only) ← `policy`.
#![forbid(unsafe_code)]

pub mod diff;
pub mod evidence;
pub mod flavor;
pub mod policy;
pub mod runtime;
pub mod verdict;

pub use evidence::{EventLogEvidence, MeasuredEvent};
pub use flavor::{
    flavors_from_evidence, quoted_ima_prefix, runtime_flavor_from_ima, EventRule, EventScope,
    Flavor, FlavorPart, ImportError, PcrRule,
};
pub use policy::{
    applies, appraise, appraise_with_runtime, quote_selection, HostContext, MatchPolicy,
    RuntimeEvidence,
};
pub use verdict::{Failure, Trust, Verdict};
