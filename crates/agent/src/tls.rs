//! TLS for the API and for the Trust Server client (rustls with the aws-lc-rs provider).
//!
//! Server side: the certificate given with `--tls-cert` / `--tls-key`, or a self-signed one
//! generated into the state directory on first start and reused afterwards. Its SHA-256
//! fingerprint is logged and sent at registration, so the server can pin it.
//!
//! Client side: the Trust Server's certificate must chain to `--server-ca`, be byte-identical to
//! a certificate of that file (the server's own self-signed certificate, even `CA:TRUE` as
//! `openssl req -x509` makes it), or match the SHA-256 pin from `--server-pin` (in these last
//! two cases names are not checked: the certificate is the identity). Handshake signatures are
//! always verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use crate::config::ServerTrust;

/// A TLS setup failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the material.
    #[error("TLS: {0}")]
    Tls(String),
    /// The API's certificate or key could not be loaded or generated.
    #[error(transparent)]
    Identity(#[from] nodetrust_tls::identity::IdentityError),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

use nodetrust_tls::identity::{load_or_generate, SelfSigned};
pub use nodetrust_tls::{fingerprint, provider, PinVerifier, ServerVerifier};

/// The API's certificate and key.
#[derive(Debug)]
pub struct ServerIdentity {
    /// rustls configuration.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the end-entity certificate (hex).
    pub fingerprint: String,
    /// Whether the certificate was generated now.
    pub generated: bool,
}

/// Generated certificate path in the state directory.
pub fn generated_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (
        state_dir.join("tls-cert.pem"),
        state_dir.join("tls-key.pem"),
    )
}

/// Loads `--tls-cert`/`--tls-key`, or the generated pair in `state_dir`, generating it with
/// subject names `names` when absent.
pub fn server_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
    names: &[String],
) -> Result<ServerIdentity, TlsError> {
    let (cert_path, key_path) = generated_paths(state_dir);
    let id = load_or_generate(
        cert.zip(key),
        &SelfSigned {
            cert: cert_path,
            key: key_path,
            names,
        },
    )?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(id.certs, id.key)
        .map_err(|e| TlsError::Tls(e.to_string()))?;
    Ok(ServerIdentity {
        config: Arc::new(config),
        fingerprint: id.fingerprint,
        generated: id.generated,
    })
}

/// The client configuration for the Trust Server, and its certificate verifier (which can
/// tell a trust failure as what it is).
pub fn client_trust(
    trust: &ServerTrust,
) -> Result<(Arc<ClientConfig>, Arc<ServerVerifier>), TlsError> {
    let verifier = match trust {
        ServerTrust::Pin(pin) => ServerVerifier::new(*pin),
        ServerTrust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
            ServerVerifier::from_ca_pem(&pem).map_err(|e| file_err(path, e))?
        }
    };
    let verifier = Arc::new(verifier);
    let config = nodetrust_tls::client::client_config(Arc::clone(&verifier))
        .map_err(|e| TlsError::Tls(e.to_string()))?;
    Ok((config, verifier))
}

/// The client configuration for the Trust Server ([`client_trust`] without the verifier).
pub fn client_config(trust: &ServerTrust) -> Result<Arc<ClientConfig>, TlsError> {
    client_trust(trust).map(|(config, _)| config)
}
