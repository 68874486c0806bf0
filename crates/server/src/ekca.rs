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

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use nodetrust_tpm_wire::{Public, PublicKey};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most certificates followed from the EK certificate to a root.
const MAX_DEPTH: usize = 6;

/// The CA certificates (DER).
#[derive(Debug, Clone, Default)]
pub struct EkCaBundle {
    cas: Vec<Vec<u8>>,
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

fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    let Some(alg) = sig_alg(&cert.signature_algorithm.algorithm.to_id_string()) else {
        return false;
    };
    let key = issuer.public_key().subject_public_key.data.as_ref();
    UnparsedPublicKey::new(alg, key)
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .is_ok()
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
        Ok(Self { cas })
    }

    /// A bundle of DER certificates.
    pub fn from_der(cas: Vec<Vec<u8>>) -> Self {
        Self { cas }
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
        let parsed: Vec<X509Certificate<'_>> = self
            .cas
            .iter()
            .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
            .collect();
        let mut current = leaf;
        for _ in 0..MAX_DEPTH {
            let issuer = parsed.iter().find(|ca| {
                ca.subject().as_raw() == current.issuer().as_raw() && signed_by(&current, ca)
            });
            let Some(ca) = issuer else {
                return Err(format!(
                    "the EK certificate does not chain to a configured manufacturer CA (issuer {})",
                    current.issuer()
                ));
            };
            if ca.subject().as_raw() == ca.issuer().as_raw()
                || !parsed
                    .iter()
                    .any(|p| p.subject().as_raw() == ca.issuer().as_raw())
            {
                return Ok(ca.subject().to_string());
            }
            current = ca.clone();
        }
        Err("the EK certificate chain is too long".into())
    }
}
