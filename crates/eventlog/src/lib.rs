//! Measured-boot and IMA event logs: parse, replay, explain.
//!
//! A quote says *that* PCRs hold some values; the event log says *what* was measured into them.
//! This crate turns log bytes into typed events (one bounded reader, errors that name the event
//! number and byte offset), replays them into every PCR bank, names the boot components an
//! operator cares about and explains how two logs differ.
//!
//! Pure: no I/O, no async runtime, no TPM library, `forbid(unsafe_code)`.
//!
//! # Trust
//! An event's *type* and *data* are not covered by its digest: whoever wrote the log chose them.
//! Only the digests are bound to the TPM, through replay to quoted PCR values. Components,
//! findings and differences are explanations for humans, built on top of that check.
//!
//! # Layout
//! - [`tcg`]: the TCG PC Client log formats (SHA-1 and crypto-agile) → [`EventLog`].
//! - [`replay`]: PCR values a log replays to ([`Replay`]), compared with quoted values.
//! - [`types`]: event type numbers and names.
//! - [`build`]: writing logs ([`build::LogBuilder`]) for tests, simulators and fuzz seeds.
//! - [`uefi`]: UEFI structures inside event data: GUIDs, UTF-16, device paths,
//!   `UEFI_VARIABLE_DATA`, image load events, load options.
//! - [`component`]: names what an event measured ([`Component`]).
//! - [`integrity`]: events whose digest must be the hash of their data ([`Finding`]).
//! - [`mod@diff`]: a host's log against its gold machine's, as statements ([`Difference`]).
//! - [`ima`]: the Linux IMA runtime measurement log (ascii and binary), replay into PCR 10.
//! - [`error`]: why a log could not be read ([`ParseError`]).
//! - `cursor`, `extend` (private): the bounded little-endian reader; PCR extend at block level.
//!
//! # Example: why a host is not its gold machine
//! ```
//! use nodetrust_eventlog::{build::LogBuilder, diff, types, EventLog, Replay};
//! use nodetrust_tpm_wire::HashAlg;
//!
//! let mut gold = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
//! gold.event(8, types::EV_IPL, b"kernel_cmdline: /vmlinuz ro\0");
//! let mut host = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
//! host.event(8, types::EV_IPL, b"kernel_cmdline: /vmlinuz ro init=/bin/sh\0");
//! let (gold, host) = (gold.bytes(), host.bytes());
//! let (gold, host) = (EventLog::parse(&gold)?, EventLog::parse(&host)?);
//!
//! // Replay binds a log to quoted PCR values; the diff says what differs, in words.
//! assert_ne!(Replay::run(&gold).values(), Replay::run(&host).values());
//! let reasons = diff(&gold, &host);
//! assert_eq!(
//!     reasons[0].to_string(),
//!     "PCR 8: kernel command line differs: `/vmlinuz ro` -> `/vmlinuz ro init=/bin/sh`"
//! );
//! assert_eq!(reasons[0].reason(), "kernel_command_line_changed");
//! # Ok::<(), nodetrust_eventlog::ParseError>(())
//! ```
#![forbid(unsafe_code)]

pub mod build;
pub mod component;
mod cursor;
pub mod diff;
pub mod error;
mod extend;
pub mod ima;
pub mod integrity;
pub mod replay;
pub mod tcg;
pub mod types;
pub mod uefi;

pub use component::{describe, Component, ComponentKind};
pub use diff::{diff, diff_measurements, Change, Difference};
pub use error::{ParseError, ParseErrorKind};
pub use integrity::Finding;
pub use replay::{PcrComparison, Replay};
pub use tcg::{Digest, DigestList, Event, EventLog, LogFormat, SpecId};
