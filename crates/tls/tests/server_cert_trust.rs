//! The server-certificate verifier against a real rustls server over TCP: the server's own
//! self-signed certificate as made by `openssl req -x509` (`CA:TRUE`) given as the trust file is
//! accepted, a certificate not in the file is refused and told as a trust failure, and a
//! trusted certificate presented with another key fails the handshake.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nodetrust_tls::{certificate_rejection, provider, ServerVerifier, TrustFlags};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

const FLAGS: TrustFlags = TrustFlags {
    ca: "--server-ca",
    pin: "--server-pin",
};

/// `openssl req -x509` as an operator runs it: a self-signed certificate, which OpenSSL marks
/// `CA:TRUE`. Returns (certificate, key) paths.
fn openssl_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=trust-server"])
        .args(["-addext", "subjectAltName=DNS:trust-server,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "openssl req -x509 is expected to make a CA:TRUE certificate"
    );
    (cert, key)
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A TLS server on 127.0.0.1 presenting `cert` signed with `key` (not checked to match), that
/// answers one connection with "hello". Returns its port.
fn serve_once(cert: &Path, key: &Path) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let signer = provider().key_provider.load_private_key(key).unwrap();
    let resolver = Fixed(Arc::new(CertifiedKey::new(certs, signer)));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((tcp, _)) = listener.accept() {
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let _ = tls.write_all(b"hello");
            let _ = tls.flush();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
    });
    port
}

/// Connects with `verifier` and reads the server's greeting.
fn connect(port: u16, verifier: Arc<ServerVerifier>) -> std::io::Result<String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from("trust-server").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[test]
fn agent_trusts_self_signed_ca_true_server_cert() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "server");
    let pem = std::fs::read(&cert).unwrap();

    // Plain WebPKI with this file as roots refuses it (the defect): CaUsedAsEndEntity.
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).map(Result::unwrap));
    let plain = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let port = serve_once(&cert, &key);
    let conn = rustls::ClientConnection::new(
        Arc::new(plain),
        ServerName::try_from("trust-server").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(("127.0.0.1", port)).unwrap());
    let err = tls.read(&mut [0u8; 5]).unwrap_err();
    let cause = certificate_rejection(&err).expect("a certificate rejection");
    assert!(
        format!("{cause:?}").contains("CaUsedAsEndEntity"),
        "{cause:?}"
    );

    // The verifier given the same file accepts the byte-identical certificate.
    let verifier = Arc::new(ServerVerifier::from_ca_pem(&pem).unwrap());
    let port = serve_once(&cert, &key);
    assert_eq!(connect(port, verifier.clone()).unwrap(), "hello");
    assert_eq!(
        verifier.seen().unwrap(),
        nodetrust_tls::fingerprint(CertificateDer::from_pem_file(&cert).unwrap().as_ref())
    );
}

#[test]
fn untrusted_server_cert_reported_as_trust_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, _) = openssl_self_signed(dir.path(), "trusted");
    let (other, other_key) = openssl_self_signed(dir.path(), "impostor");
    let verifier =
        Arc::new(ServerVerifier::from_ca_pem(&std::fs::read(&trusted).unwrap()).unwrap());
    let port = serve_once(&other, &other_key);
    let err = connect(port, verifier.clone()).unwrap_err();
    let cause = certificate_rejection(&err).expect("a certificate rejection");
    let message = verifier.not_trusted(cause, &FLAGS);
    assert!(
        message.starts_with("server certificate not trusted: "),
        "{message}"
    );
    assert!(message.contains("; remedy: give --server-ca"), "{message}");
    let impostor =
        nodetrust_tls::fingerprint(CertificateDer::from_pem_file(&other).unwrap().as_ref());
    assert!(message.contains(&impostor), "{message}");
    assert!(!message.contains("not answering"), "{message}");

    // A pin that does not match is told the same way.
    let pin = ServerVerifier::new([7u8; 32]);
    let pin = Arc::new(pin);
    let port = serve_once(&other, &other_key);
    let err = connect(port, pin.clone()).unwrap_err();
    let message = pin.not_trusted(certificate_rejection(&err).unwrap(), &FLAGS);
    assert!(
        message.starts_with("server certificate not trusted: it is not the pinned certificate"),
        "{message}"
    );
}

#[test]
fn trusted_cert_presented_with_another_key_fails_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = openssl_self_signed(dir.path(), "server");
    let (_, wrong_key) = openssl_self_signed(dir.path(), "thief");
    let verifier = Arc::new(ServerVerifier::from_ca_pem(&std::fs::read(&cert).unwrap()).unwrap());
    let port = serve_once(&cert, &wrong_key);
    let err = connect(port, verifier).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("signature")
            || err.to_string().contains("DecryptError")
            || err.to_string().contains("BadSignature"),
        "the handshake signature by another key must be refused: {err}"
    );
}
