//! TLS pieces shared by the agent, the server and the CLI (rustls with the aws-lc-rs provider).
//!
//! # Layout
//! - [`provider`]: the one crypto provider every TLS endpoint uses.
//! - [`fingerprint`]: SHA-256 of a certificate's DER, lower-case hex: what is logged, sent at
//!   registration and pinned.
//! - [`ServerVerifier`]: checks a server certificate by a pinned SHA-256 (names are not checked:
//!   the pin is the identity), by CA roots, or not at all; handshake signatures are always
//!   verified, and the fingerprint of the certificate presented is kept so that a failure can
//!   name it. [`PinVerifier`] is the pinned case. A trust file ([`ServerVerifier::from_ca_pem`])
//!   may hold the server's own certificate, even a self-signed one marked `CA:TRUE` as
//!   `openssl req -x509` makes it: a certificate byte-identical to one in the file is accepted
//!   like a pin (as curl and Go accept it).
//! - [`certificate_rejection`] and [`ServerVerifier::not_trusted`]: a TLS trust failure told as
//!   what it is, `server certificate not trusted: <cause>; remedy: <what to do>`.
//! - [`BaseUrl`]: `https://host[:port][/path]`, the one URL form agents and operators give
//!   for a server.
//! - [`identity`]: an endpoint's own certificate and key, from PEM files or self-signed into a
//!   state directory on first start.
//! - [`client`]: the one HTTPS client (rustls client configuration from a verifier, hyper
//!   HTTP/1.1 with connect and request timeouts, an answer size limit, JSON helpers, and an
//!   optional pool of idle connections keyed by address and trust).
//! - [`serve`]: the one HTTPS accept loop (connection cap, handshake and idle timeouts,
//!   graceful shutdown).
#![forbid(unsafe_code)]

pub mod client;
pub mod identity;
pub mod serve;

use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

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
    /// A certificate byte-identical to one of `trusted` (the server's own certificate given
    /// as its CA; names are not checked, as for a pin), else a chain to the roots with the host
    /// name (webpki).
    Roots {
        /// WebPKI verification against the roots.
        webpki: Arc<WebPkiServerVerifier>,
        /// Every certificate of the trust file, DER.
        trusted: Vec<CertificateDer<'static>>,
    },
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

    /// A verifier trusting the certificates of a PEM trust file: the CAs a server certificate
    /// may chain to, and any certificate given as is (the server's own, self-signed or not,
    /// `CA:TRUE` or not), which is then accepted when presented byte for byte.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TrustFileError> {
        let trusted: Vec<CertificateDer<'static>> = rustls_pki_pem(pem)?;
        if trusted.is_empty() {
            return Err(TrustFileError::Empty);
        }
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(trusted.iter().cloned());
        if added == 0 {
            return Err(TrustFileError::Unusable);
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TrustFileError::Verifier(e.to_string()))?;
        Ok(Self::with_check(CertCheck::Roots { webpki, trusted }))
    }

    /// The SHA-256 fingerprint ([`fingerprint`]) of the last certificate a server presented.
    pub fn seen(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }

    /// The one line telling a certificate rejection (`cause`, from [`certificate_rejection`])
    /// as what it is: `server certificate not trusted: <cause>; remedy: <what to do>`, naming
    /// the fingerprint presented and the options (`flags`) of the program that fails.
    pub fn not_trusted(&self, cause: &CertificateError, flags: &TrustFlags) -> String {
        let seen = self.seen();
        let presented = seen
            .as_deref()
            .map(|s| format!(" (the server presented the certificate with SHA-256 {s})"))
            .unwrap_or_default();
        let pin_hint = match seen.as_deref() {
            Some(s) => format!("{} {s}", flags.pin),
            None => format!("{} SHA256", flags.pin),
        };
        let remedy = match &self.check {
            CertCheck::Pin(pin) => format!(
                "if the server's certificate was replaced, check on the server that its                  fingerprint (logged at its start) is the one presented, then give it with                  {pin_hint} instead of {}; otherwise something else answers at that address",
                hex::encode(pin)
            ),
            CertCheck::Roots { .. } => format!(
                "give {} the PEM file of the CA that issued the server's certificate (or the                  server's certificate itself), or pin it with {pin_hint} after checking that                  fingerprint on the server",
                flags.ca
            ),
            CertCheck::Any => "none: this connection does not check certificates".into(),
        };
        format!(
            "server certificate not trusted: {}{presented}; remedy: {remedy}",
            describe_rejection(cause, &self.check)
        )
    }
}

/// The options a program takes to trust a server, named in remedies.
#[derive(Debug, Clone, Copy)]
pub struct TrustFlags {
    /// The CA file option (`--server-ca`, `--ca`).
    pub ca: &'static str,
    /// The pin option (`--server-pin`, `--pin`).
    pub pin: &'static str,
}

/// Why a trust file is refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    /// Not PEM.
    #[error("not a PEM certificate file: {0}")]
    Pem(String),
    /// No `CERTIFICATE` block.
    #[error("no PEM CERTIFICATE in the file")]
    Empty,
    /// No certificate could be parsed.
    #[error("no usable certificate in the file (none parses as X.509)")]
    Unusable,
    /// rustls refused the roots.
    #[error("the certificates cannot be used: {0}")]
    Verifier(String),
}

fn rustls_pki_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TrustFileError> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map_err(|e| TrustFileError::Pem(e.to_string())))
        .collect()
}

/// The rustls certificate rejection in `e` or what it wraps (an `io::Error` from a TLS
/// connector wraps the `rustls::Error`), if the failure is one.
pub fn certificate_rejection<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CertificateError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut depth = 0;
    while let Some(err) = current {
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            return Some(c);
        }
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        current = inner.or_else(|| err.source());
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    None
}

fn describe_rejection(cause: &CertificateError, check: &CertCheck) -> String {
    match (cause, check) {
        (CertificateError::ApplicationVerificationFailure, CertCheck::Pin(pin)) => format!(
            "it is not the pinned certificate (SHA-256 {})",
            hex::encode(pin)
        ),
        (CertificateError::UnknownIssuer, _) => {
            "it was not issued by a CA of the trust file (unknown issuer)".into()
        }
        (CertificateError::Other(o), _) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "it is a CA certificate (CA:TRUE) used as a server certificate, and not one of the \
             trust file"
                .into()
        }
        (
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            _,
        ) => "it is not valid for the host name in the server URL".into(),
        (CertificateError::Expired | CertificateError::ExpiredContext { .. }, _) => {
            "it has expired".into()
        }
        (CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }, _) => {
            "it is not valid yet (check the clocks)".into()
        }
        (CertificateError::Revoked, _) => "it is revoked".into(),
        (CertificateError::BadSignature, _) => "its signature does not verify".into(),
        (CertificateError::BadEncoding, _) => "it is not a well-formed X.509 certificate".into(),
        (other, _) => format!("{other:?}"),
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
            CertCheck::Roots { trusted, .. }
                if trusted
                    .iter()
                    .any(|t| constant_time_eq(t.as_ref(), end_entity.as_ref())) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            CertCheck::Roots { webpki, .. } => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
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
