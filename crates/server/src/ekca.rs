//! The manufacturer CA bundle: EK certificates that chain to it are accepted for registration.
//!
//! The bundle is a directory of PEM files holding CA certificates, roots and intermediates
//! (an operator's trust decision: every certificate in it is trusted as an issuer). A chain is
//! followed from the EK certificate by issuer name and checked by signature over the raw TBS
//! bytes, as TPM vendors' certificates are often not strict DER and carry extensions web-PKI
//! validators reject (empty subject, critical SAN directory names, the TCG EK key usage).
//! Validity dates are not enforced: EK certificates outlive their issuers' nominal dates in
//! the field, and the EK is bound to the host by credential activation, not by the date.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use nodetrust_tpm_wire::{Public, PublicKey};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most certificates followed from the EK certificate to a root.
const MAX_DEPTH: usize = 6;

/// The CA certificates, parsed once: what following a chain reads of each, and its key ready
/// to verify with (parsed on first use per signature algorithm), so a registration parses only
/// its own EK certificate.
#[derive(Debug, Clone, Default)]
pub struct EkCaBundle {
    cas: Arc<[CaEntry]>,
}

/// One CA certificate, as a chain check reads it.
struct CaEntry {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_text: String,
    /// The `subjectPublicKey` bits (what signature verification takes).
    key: Vec<u8>,
    /// Its own signature: algorithm OID, signed bytes (TBS), signature.
    sig_oid: String,
    tbs: Vec<u8>,
    sig: Vec<u8>,
    /// The key parsed for each signature algorithm (by OID) it has verified with.
    parsed: Mutex<Vec<(String, ParsedPublicKey)>>,
}

impl std::fmt::Debug for CaEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaEntry")
            .field("subject", &self.subject_text)
            .finish_non_exhaustive()
    }
}

impl CaEntry {
    fn new(der: &[u8]) -> Option<Self> {
        let (_, c) = X509Certificate::from_der(der).ok()?;
        Some(Self {
            subject: c.subject().as_raw().to_vec(),
            issuer: c.issuer().as_raw().to_vec(),
            subject_text: c.subject().to_string(),
            key: c.public_key().subject_public_key.data.to_vec(),
            sig_oid: c.signature_algorithm.algorithm.to_id_string(),
            tbs: c.tbs_certificate.as_ref().to_vec(),
            sig: c.signature_value.data.to_vec(),
            parsed: Mutex::new(Vec::new()),
        })
    }

    /// Whether `sig` over `tbs` is a valid signature by this CA's key with the signature
    /// algorithm of OID `oid`.
    fn verifies(&self, oid: &str, tbs: &[u8], sig: &[u8]) -> bool {
        let Some(alg) = sig_alg(oid) else {
            return false;
        };
        let cached = self
            .parsed
            .lock()
            .ok()
            .and_then(|p| p.iter().find(|(o, _)| o == oid).map(|(_, k)| k.clone()));
        if let Some(key) = cached {
            return key.verify_sig(tbs, sig).is_ok();
        }
        match ParsedPublicKey::new(alg, &self.key) {
            Ok(key) => {
                let ok = key.verify_sig(tbs, sig).is_ok();
                if let Ok(mut p) = self.parsed.lock() {
                    if p.len() < 8 {
                        p.push((oid.to_string(), key));
                    }
                }
                ok
            }
            Err(_) => false,
        }
    }
}

fn sig_alg(oid: &str) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match oid {
        "1.2.840.113549.1.1.5" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "1.2.840.10045.4.3.2" => &signature::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.3" => &signature::ECDSA_P384_SHA384_ASN1,
        _ => return None,
    })
}

fn strip(v: &[u8]) -> &[u8] {
    v.get(v.iter().take_while(|b| **b == 0).count()..)
        .unwrap_or_default()
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    match (a, b) {
        (
            PublicKey::Rsa {
                modulus: m1,
                exponent: e1,
                ..
            },
            PublicKey::Rsa {
                modulus: m2,
                exponent: e2,
                ..
            },
        ) => strip(m1) == strip(m2) && e1 == e2,
        (
            PublicKey::Ecc {
                curve: c1,
                x: x1,
                y: y1,
            },
            PublicKey::Ecc {
                curve: c2,
                x: x2,
                y: y2,
            },
        ) => c1 == c2 && strip(x1) == strip(x2) && strip(y1) == strip(y2),
        _ => false,
    }
}

/// The public key a certificate (DER) certifies.
pub fn certificate_key(cert: &[u8]) -> Result<PublicKey, String> {
    let (_, c) = X509Certificate::from_der(cert)
        .map_err(|e| format!("the certificate is unreadable: {e}"))?;
    nodetrust_tpm_wire::der::parse_spki(c.public_key().raw)
        .ok_or_else(|| "the certificate's public key is not an RSA or P-256/P-384 key".to_string())
}

impl EkCaBundle {
    /// Loads every certificate of every `*.pem` / `*.crt` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cas = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if !matches!(ext, "pem" | "crt" | "cer") {
                continue;
            }
            let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let der = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                X509Certificate::from_der(der.as_ref())
                    .map_err(|e| format!("{}: not a certificate: {e}", path.display()))?;
                cas.push(der.as_ref().to_vec());
            }
        }
        tracing::info!(count = cas.len(), dir = %dir.display(), "loaded EK manufacturer CAs");
        Ok(Self::from_der(cas))
    }

    /// A bundle of DER certificates (one that does not parse is left out).
    pub fn from_der(cas: Vec<Vec<u8>>) -> Self {
        Self {
            cas: cas.iter().filter_map(|d| CaEntry::new(d)).collect(),
        }
    }

    /// Whether there is no CA.
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Checks that `cert` (DER) certifies `ek` and chains to a CA of the bundle. Returns the
    /// subject of the CA that closed the chain.
    pub fn check(&self, cert: &[u8], ek: &Public) -> Result<String, String> {
        let (_, leaf) = X509Certificate::from_der(cert)
            .map_err(|e| format!("the EK certificate is unreadable: {e}"))?;
        let cert_key = nodetrust_tpm_wire::der::parse_spki(leaf.public_key().raw)
            .ok_or("the EK certificate's public key is not an RSA or P-256/P-384 key")?;
        if !same_key(&cert_key, &ek.key) {
            return Err("the EK certificate is for another key than the EK presented".into());
        }
        if self.cas.is_empty() {
            return Err("no manufacturer CA is configured (--ek-ca-dir)".into());
        }
        // The certificate being followed: its issuer, signature algorithm, TBS bytes and
        // signature; the leaf first, then each CA of the chain.
        let leaf_oid = leaf.signature_algorithm.algorithm.to_id_string();
        let mut issuer: &[u8] = leaf.issuer().as_raw();
        let mut signed: (&str, &[u8], &[u8]) = (
            &leaf_oid,
            leaf.tbs_certificate.as_ref(),
            leaf.signature_value.data.as_ref(),
        );
        for _ in 0..MAX_DEPTH {
            let found = self
                .cas
                .iter()
                .find(|ca| ca.subject == issuer && ca.verifies(signed.0, signed.1, signed.2));
            let Some(ca) = found else {
                let name = x509_parser::x509::X509Name::from_der(issuer)
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_else(|_| "unreadable".into());
                return Err(format!(
                    "the EK certificate does not chain to a configured manufacturer CA (issuer {name})"
                ));
            };
            if ca.subject == ca.issuer || !self.cas.iter().any(|p| p.subject == ca.issuer) {
                return Ok(ca.subject_text.clone());
            }
            issuer = &ca.issuer;
            signed = (&ca.sig_oid, &ca.tbs, &ca.sig);
        }
        Err("the EK certificate chain is too long".into())
    }
}
