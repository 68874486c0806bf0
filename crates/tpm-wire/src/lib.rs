//! TPM 2.0 structures a remote verifier reads, and the checks it makes on them.
//!
//! Pure: no I/O, no async runtime, no TPM library. Every input is treated as hostile: one
//! bounds-checked [`codec::Reader`] turns bytes into typed values, rejects trailing bytes and
//! names the field that was wrong.
//!
//! # Layout
//! - [`codec`]: the reader/writer for TPM marshalled bytes.
//! - [`alg`]: algorithm identifiers and hashes.
//! - [`public`]: `TPMT_PUBLIC` / `TPM2B_PUBLIC` (AK and EK public areas, Names).
//! - [`attest`]: `TPMS_ATTEST` of quotes.
//! - [`signature`](mod@signature): `TPMT_SIGNATURE`.
//! - [`pcr`]: PCR selections and PCR value sets (YAML / JSON input).
//! - [`verify`]: [`verify_quote`], which alone makes a [`VerifiedQuote`]; [`inspect_quote`] for
//!   offline inspection without a nonce or with a bare key.
//! - [`credential`]: software MakeCredential (AK-to-EK binding).
//! - [`der`]: the little DER and PEM the crate emits.
#![forbid(unsafe_code)]

pub mod alg;
pub mod attest;
pub mod codec;
pub mod credential;
mod crypto;
pub mod der;
pub mod error;
pub mod pcr;
pub mod public;
pub mod signature;
pub mod verify;

pub use alg::HashAlg;
pub use attest::{Attest, ClockInfo};
pub use error::WireError;
pub use pcr::{PcrJson, PcrSelection, PcrValues};
pub use public::Public;
pub use public::PublicKey;
pub use signature::Signature;
pub use verify::{
    inspect_quote, inspect_quote_with_bare_key, verify_quote, InspectedQuote, QuoteError,
    QuoteFacts, VerifiedQuote,
};
