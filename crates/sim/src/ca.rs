//! The simulator's EK manufacturer CA: a P-256 key and its self-signed certificate, kept in a
//! directory. `nodetrust-sim ca --out DIR` writes it (the server's `--ek-ca-dir` reads the
//! certificate); `nodetrust-sim run --ca-dir DIR` issues one EK certificate per virtual agent
//! with it, so the hosts register through the server's certificate chain check, as hosts with
//! a manufacturer's EK certificate do. The key sits beside the certificate in a `.key` file,
//! which the server's CA loader does not read. Software EKs are never trustworthy: give this CA
//! only to a server under test.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData, SerialNumber, SignatureAlgorithm,
};

/// The CA certificate (PEM), for the server's `--ek-ca-dir`.
pub const CA_CERT_FILE: &str = "nodetrust-sim-ek-ca.pem";
/// The CA key (PKCS#8 PEM), for `nodetrust-sim run --ca-dir`. Not read by the server.
pub const CA_KEY_FILE: &str = "nodetrust-sim-ek-ca.key";
/// The CA's common name.
pub const CA_NAME: &str = "nodetrust-sim EK CA (software TPMs, never trustworthy)";

/// The CA: its certificate (as rcgen needs it to issue) and key.
pub struct SimCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for SimCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCa").finish_non_exhaustive()
    }
}

/// An EK public key as an EK certificate carries it: an uncompressed P-256 point.
struct EkKey<'a>(&'a [u8]);

impl PublicKeyData for EkKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        // The SubjectPublicKeyInfo of an ECDSA P-256 key: id-ecPublicKey, prime256v1.
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nodetrust-sim");
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(SerialNumber::from(1u64));
    p
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

impl SimCa {
    /// The CA of `dir`: its key is read when present, else made and written. The certificate
    /// is written (again) either way; it is the same CA as long as the key is.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key_path = dir.join(CA_KEY_FILE);
        let ca = if key_path.exists() {
            Self::load(dir)?
        } else {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| anyhow!("CA key: {e}"))?;
            write_private(&key_path, &key.serialize_pem())?;
            Self::with_key(key)?
        };
        std::fs::write(dir.join(CA_CERT_FILE), ca.cert.pem())
            .with_context(|| format!("writing {}", dir.join(CA_CERT_FILE).display()))?;
        Ok(ca)
    }

    /// The CA whose key `nodetrust-sim ca` wrote into `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let key_path: PathBuf = dir.join(CA_KEY_FILE);
        let pem = std::fs::read_to_string(&key_path).with_context(|| {
            format!(
                "reading the CA key {} (write it with `nodetrust-sim ca --out {}`)",
                key_path.display(),
                dir.display()
            )
        })?;
        let key = KeyPair::from_pem(&pem).map_err(|e| anyhow!("{}: {e}", key_path.display()))?;
        Self::with_key(key)
    }

    fn with_key(key: KeyPair) -> Result<Self> {
        // Same subject and key as the certificate written by `create`: certificates issued
        // now chain to it (the chain is followed by subject and checked by signature).
        let cert = ca_params()
            .self_signed(&key)
            .map_err(|e| anyhow!("CA certificate: {e}"))?;
        Ok(Self { cert, key })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// An EK certificate (DER) for the uncompressed P-256 point `ek_point`, serial `serial`.
    pub fn issue_ek(&self, ek_point: &[u8], serial: u64) -> Result<Vec<u8>> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("nodetrust-sim EK {serial}"));
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from(serial.saturating_add(2)));
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&EkKey(ek_point), &self.cert, &self.key)
            .map_err(|e| anyhow!("EK certificate: {e}"))?;
        Ok(cert.der().to_vec())
    }
}
