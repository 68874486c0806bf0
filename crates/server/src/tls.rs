//! TLS on both sides, on rustls with the aws-lc-rs provider.
//!
//! - Server: the configured certificate and key, or a self-signed pair generated into the state
//!   dir on first start (its SHA-256 fingerprint is logged, for agents that pin it).
//! - Client (to agents): the agent's self-signed certificate is pinned by the SHA-256 of its DER,
//!   taken at registration. No CA is consulted; the handshake signature is still verified with
//!   the pinned certificate's key, so only the holder of that key can answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig};

/// A TLS set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a self-signed pair failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
}

pub use nodetrust_tls::{fingerprint, provider};

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Pem(format!("{}: {e}", path.display())))?
        .ok_or_else(|| TlsError::Pem(format!("{}: no private key found", path.display())))
}

/// The server certificate and key: the given files, or `state_dir/server.crt` and
/// `state_dir/server.key`, generated (self-signed) when absent.
pub fn server_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => return Ok((load_certs(c)?, load_key(k)?)),
        (Some(_), None) | (None, Some(_)) => {
            return Err(TlsError::Pem(
                "--tls-cert and --tls-key must be given together".into(),
            ))
        }
        (None, None) => {}
    }
    let cert_path = state_dir.join("server.crt");
    let key_path = state_dir.join("server.key");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(state_dir).map_err(|source| TlsError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            if !h.trim().is_empty() {
                names.push(h.trim().to_string());
            }
        }
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        write_private(&key_path, ck.key_pair.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, ck.cert.pem()).map_err(|source| TlsError::Io {
            path: cert_path.clone(),
            source,
        })?;
        tracing::info!(path = %cert_path.display(), "generated a self-signed TLS certificate");
    }
    let certs = load_certs(&cert_path)?;
    if let Some(c) = certs.first() {
        tracing::info!(sha256 = %fingerprint(c), "server TLS certificate");
    }
    Ok((certs, load_key(&key_path)?))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(data).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
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
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
