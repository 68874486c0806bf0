//! Test fixtures. `publish = false`: nothing here ships.
//!
//! # Layout
//! - [`Swtpm`]: a software TPM per test, on its own free TCP port pair, killed on drop.
//! - [`tpm2`]: running tpm2-tools against a [`Swtpm`].
//! - [`soft`]: a software TPM (real quotes, software AK and EK) for verifier tests.
//! - [`fleet`]: N virtual agents over HTTPS from one listener, each on its own
//!   `nodetrust_tpm::SoftwareAttester`: the load for the server's benchmark and scale tests.
//! - [`ima`]: IMA logs written to order (`ima`, `ima-ng`, `ima-sig` signed with a test key,
//!   violations) with the PCR 10 values they extend, for runtime-integrity tests.
//! - [`keylime`]: Keylime's IMA code (PyPI `keylime`, in a venv under `target/`) as an
//!   oracle for the runtime-integrity tests.
//! - [`kubeapi`]: a loopback Kubernetes API server stand-in ([`kubeapi::FakeApiServer`]) for
//!   the labeller, `nodetrust doctor` and kubectl.
//!
//! Tests that need swtpm call [`Swtpm::start`]; when swtpm is not installed it returns an
//! error that says to run `make test` (which installs it), rather than skipping silently.
#![forbid(unsafe_code)]

pub mod fleet;
pub mod ima;
pub mod keylime;
pub mod kubeapi;
pub mod soft;
mod swtpm;
pub mod tpm2;

pub use swtpm::{free_port, Swtpm, TemplateInfo};

/// Errors of the fixtures: a message for the test log.
pub type Result<T> = std::result::Result<T, String>;

/// The shared fixture directory (`../shared/fixtures` relative to the workspace), or the path
/// in `NODETRUST_FIXTURES`.
pub fn fixtures_dir() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("NODETRUST_FIXTURES") {
        return p.into();
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = manifest.join("../../tests/fixtures");
    if local.is_dir() {
        return local;
    }
    manifest.join("../../../shared/fixtures")
}
