//! TLS pieces shared by the agent, the server and the CLI (rustls with the aws-lc-rs provider).
//!
//! # Layout
//! - [`provider`]: the one crypto provider every TLS endpoint uses.
//! - [`fingerprint`]: SHA-256 of a certificate's DER, lower-case hex: what is logged, sent at
//!   registration and pinned.
//! - [`ServerVerifier`]: checks a server certificate by a pinned SHA-256 (names are not checked:
//!   the pin is the identity), by CA roots, or not at all; handshake signatures are always
//!   verified, and the fingerprint of the certificate presented is kept so that a failure can
//!   name it. [`PinVerifier`] is the pinned case.
//! - [`BaseUrl`]: `https://host[:port][/path]`, the one URL form agents and operators give
//!   for a server.
//! - [`identity`]: an endpoint's own certificate and key, from PEM files or self-signed into a
//!   state directory on first start.
#![forbid(unsafe_code)]

pub mod identity;

use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The crypto provider: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 of a certificate's DER, lower-case hex.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, cert))
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a server certificate is checked.
#[derive(Debug)]
pub enum CertCheck {
    /// Exactly the certificate whose DER hashes to this SHA-256.
    Pin([u8; 32]),
    /// A chain to these roots, with the host name (webpki).
    Roots(Arc<WebPkiServerVerifier>),
    /// Any certificate (`curl -k`); only handshake signatures are checked.
    Any,
}

/// Checks a server certificate as its [`CertCheck`] says; handshake signatures are always
/// verified. Remembers the fingerprint of the last certificate presented ([`Self::seen`]).
#[derive(Debug)]
pub struct ServerVerifier {
    check: CertCheck,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<String>>,
}

/// The verifier of a pinned certificate.
pub type PinVerifier = ServerVerifier;

impl ServerVerifier {
    /// A verifier that checks certificates as `check` says.
    pub fn with_check(check: CertCheck) -> Self {
        Self {
            check,
            provider: provider(),
            seen: Mutex::new(None),
        }
    }

    /// A verifier for the certificate whose DER hashes to `pin`.
    pub fn new(pin: [u8; 32]) -> Self {
        Self::with_check(CertCheck::Pin(pin))
    }

    /// The SHA-256 fingerprint ([`fingerprint`]) of the last certificate a server presented.
    pub fn seen(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = digest::digest(&digest::SHA256, end_entity.as_ref());
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(hex::encode(got.as_ref()));
        }
        match &self.check {
            CertCheck::Pin(pin) if constant_time_eq(got.as_ref(), pin) => {
                Ok(ServerCertVerified::assertion())
            }
            CertCheck::Pin(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            CertCheck::Roots(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            CertCheck::Any => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad server URL {:?}: expected https://host[:port][/path]",
            self.0
        )
    }
}

impl std::error::Error for UrlError {}

/// `https://host[:port][/path]` split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Host name or IP (without brackets).
    pub host: String,
    /// Port (443 when not given).
    pub port: u16,
    /// Path prefix without a trailing slash.
    pub path: String,
}

impl BaseUrl {
    /// Parses a base URL. Only `https`; no user information (credentials go in headers, never
    /// in a URL that may be logged).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = || UrlError(url.to_string());
        let rest = url.trim().strip_prefix("https://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (
                rest.get(..i).ok_or_else(bad)?,
                rest.get(i..).ok_or_else(bad)?,
            ),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 443,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (authority.to_string(), 443),
            }
        };
        if host.is_empty() || host.contains('@') {
            return Err(bad());
        }
        Ok(Self {
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host:port`, bracketed for IPv6.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("https://10.0.0.1:8443/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 8443, "")
        );
        assert_eq!(u.authority(), "10.0.0.1:8443");
        let u = BaseUrl::parse("https://cit.example/mtwilson/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("cit.example", 443, "/mtwilson")
        );
        let u = BaseUrl::parse(" https://[::1]/x/ ").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 443, "/x")
        );
        assert_eq!(u.authority(), "[::1]:443");
        for bad in [
            "http://a:1",
            "https://a:port",
            "https://u:p@a:1",
            "https://",
            "https://[::1",
            "https://[::1]x",
            "https://a:99999",
        ] {
            let e = BaseUrl::parse(bad).unwrap_err();
            assert!(
                e.to_string()
                    .contains("expected https://host[:port][/path]"),
                "{bad}"
            );
        }
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
