//! nodetrust-agent: the Trust Agent. It runs on every TPM-equipped worker, serves evidence
//! (quotes, event logs, host facts) over HTTPS, and registers the node's AK with the Trust Server.
//!
//! Every edge comes in as an argument: the TPM ([`nodetrust_tpm::Attester`]), the listener and the
//! shutdown future ([`server::run`]), the server client ([`register`]), so tests drive the whole
//! agent without a real TPM, network or clock.
//!
//! # Layout
//! - [`check`] — `nodetrust-agent check`: TPM readiness checks with a plain verdict.
//! - [`config`] — settings: flags > environment (the runbook's names) > config file > defaults.
//! - [`api`] — `fn app(state) -> Router`: the HTTP API, basic auth, request limits, typed errors.
//! - [`ima`] — the IMA runtime log, served from an entry index (byte offsets remembered).
//! - [`host`] — host facts (hardware UUID, OS, kernel, Secure Boot).
//! - [`tls`] — the server certificate (generated into the state dir on first start) and the
//!   client trust for the Trust Server (CA file or SHA-256 pin).
//! - [`server`] — the HTTPS accept loop: `run(listener, tls, app, shutdown)`.
//! - [`register`] — registration with the Trust Server (wait with backoff, register,
//!   ActivateCredential, started).
//! - [`client`] — a small HTTPS client for the registration exchange.
#![forbid(unsafe_code)]

pub mod api;
pub mod check;
pub mod client;
pub mod config;
pub mod host;
pub mod ima;
pub mod push;
pub mod register;
pub mod server;
pub mod tls;

/// The program name reported by `GET /version`.
pub const NAME: &str = "nodetrust-agent";
/// The agent's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
