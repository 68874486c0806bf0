//! TLS on both sides, on rustls with the aws-lc-rs provider.
//!
//! - Server: the configured certificate and key, or a self-signed pair generated into the state
//!   dir on first start (its SHA-256 fingerprint is logged, for agents that pin it).
//! - Client (to agents): the agent's self-signed certificate is pinned by the SHA-256 of its DER,
//!   taken at registration. No CA is consulted; the handshake signature is still verified with
//!   the pinned certificate's key, so only the holder of that key can answer.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig};

/// A TLS set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate options or the pinned fingerprint are unusable.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server's certificate or key could not be loaded or generated.
    #[error(transparent)]
    Identity(#[from] nodetrust_tls::identity::IdentityError),
}

use nodetrust_tls::identity::{load_or_generate, SelfSigned};
pub use nodetrust_tls::{fingerprint, provider};

/// The server certificate and key: the given files, or `state_dir/server.crt` and
/// `state_dir/server.key`, generated (self-signed) when absent.
pub fn server_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match (cert, key) {
        (Some(_), None) | (None, Some(_)) => {
            return Err(TlsError::Pem(
                "--tls-cert and --tls-key must be given together".into(),
            ))
        }
        _ => {}
    }
    // The private key must be the owner's alone; a generated one goes into an owner-only
    // directory.
    let key_path = key.map_or_else(|| state_dir.join("server.key"), Path::to_path_buf);
    crate::store::check_private(&key_path, "the TLS key file")
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if key.is_none() {
        crate::store::create_private_dir(state_dir)
            .map_err(|e| TlsError::Pem(format!("state directory {}: {e}", state_dir.display())))?;
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        if !h.trim().is_empty() {
            names.push(h.trim().to_string());
        }
    }
    let id = load_or_generate(
        cert.zip(key),
        &SelfSigned {
            cert: state_dir.join("server.crt"),
            key: state_dir.join("server.key"),
            names: &names,
        },
    )?;
    if id.generated {
        tracing::info!(path = %state_dir.join("server.crt").display(), "generated a self-signed TLS certificate");
    }
    tracing::info!(sha256 = %id.fingerprint, "server TLS certificate");
    Ok((id.certs, id.key))
}

/// The server's rustls configuration (HTTP/1.1).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration that trusts only the certificate with SHA-256 `pin_hex`.
pub fn pinned_client_config(pin_hex: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let sha256 = hex::decode(pin_hex.trim())
        .map_err(|_| TlsError::Pem("the pinned fingerprint is not hex".into()))?;
    let pin: [u8; 32] = sha256
        .try_into()
        .map_err(|_| TlsError::Pem("the pinned fingerprint is not a SHA-256".into()))?;
    let verifier = nodetrust_tls::PinVerifier::new(pin);
    Ok(nodetrust_tls::client::client_config(Arc::new(verifier))?)
}
