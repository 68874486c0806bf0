//! `nodetrust-sim`: a load generator for the Trust Server, run as an operator would run one.
//!
//! - [`ca`]: the simulator's EK manufacturer CA (`nodetrust-sim ca --out DIR` writes it for the
//!   server's `--ek-ca-dir`).
//! - [`fleet`]: N virtual agents, each on its own software TPM
//!   ([`nodetrust_tpm::SoftwareAttester`]: real `TPMS_ATTEST`, real signatures, real credential
//!   activation), served from one HTTPS listener.
//! - [`register`]: registration through the API, many at once, and the flavor import that
//!   makes the hosts trusted.
//! - [`push`]: push mode (`--mode push`): the virtual agents ask for challenges and post
//!   their evidence on the server's schedule; the server never connects to them.
//! - [`client`]: HTTPS to the server (kept-alive connections, the CLI's trust options).
//!
//! Software TPMs are never trustworthy: flavors imported from one allow software TPMs, which a
//! production server must never have.
#![forbid(unsafe_code)]

pub mod ca;
pub mod client;
pub mod fleet;
pub mod push;
pub mod register;
