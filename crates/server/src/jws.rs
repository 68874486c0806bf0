//! Signed reports: compact JWS (ES256) over the report JSON, by the server's signing key.
//!
//! The key (ECDSA P-256) is made once and kept in the database, so every replica signs with the
//! same key and a restart keeps it; the public half is served at `/mtwilson/v2/signing-key` as
//! a JWK and as PEM. A consumer (a scheduler extender, an auditor) checks a report offline.
//! Reports are signed when the report endpoints give them (`engine::signed_view`), not when
//! they are made.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// The report signer.
#[derive(Debug)]
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    /// The encoded protected header, the same in every report.
    header: String,
}

/// A signing failure.
#[derive(Debug, thiserror::Error)]
#[error("report signing: {0}")]
pub struct SignError(String);

/// A new PKCS#8 P-256 key, base64.
pub fn generate_key() -> Result<String, SignError> {
    let doc = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .map_err(|e| SignError(e.to_string()))?;
    Ok(STANDARD.encode(doc.as_ref()))
}

impl Signer {
    /// A signer from a base64 PKCS#8 key.
    pub fn from_pkcs8_b64(b64: &str) -> Result<Self, SignError> {
        let der = STANDARD
            .decode(b64.trim())
            .map_err(|e| SignError(e.to_string()))?;
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|e| SignError(e.to_string()))?;
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        let kid = hex::encode(digest.as_ref().get(..8).unwrap_or_default());
        let header = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string());
        Ok(Self { key, kid, header })
    }

    /// Key id (start of the SHA-256 of the public point).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS over `payload`.
    pub fn sign<T: serde::Serialize + ?Sized>(&self, payload: &T) -> Result<String, SignError> {
        let json = serde_json::to_vec(payload).map_err(|e| SignError(e.to_string()))?;
        // header . payload . signature, each base64url: about 4/3 of the bytes, plus two dots.
        let mut out = String::with_capacity(self.header.len() + json.len() * 4 / 3 + 96);
        out.push_str(&self.header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut out);
        let sig = self
            .key
            .sign(&SystemRandom::new(), out.as_bytes())
            .map_err(|e| SignError(e.to_string()))?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut out);
        Ok(out)
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        let point = self.key.public_key().as_ref();
        let x = point.get(1..33).unwrap_or_default();
        let y = point.get(33..65).unwrap_or_default();
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    /// The public key as PEM (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> String {
        let point = self.key.public_key().as_ref();
        let x = point.get(1..33).unwrap_or_default();
        let y = point.get(33..65).unwrap_or_default();
        let key = nodetrust_tpm_wire::PublicKey::Ecc {
            curve: nodetrust_tpm_wire::public::EccCurve::NistP256,
            x: x.to_vec(),
            y: y.to_vec(),
        };
        nodetrust_tpm_wire::der::pem("PUBLIC KEY", &nodetrust_tpm_wire::der::spki(&key))
    }
}

/// Verifies a compact ES256 JWS against a JWK's `x`/`y` and returns the payload.
pub fn verify(jws: &str, jwk: &serde_json::Value) -> Option<serde_json::Value> {
    let x = URL_SAFE_NO_PAD.decode(jwk.get("x")?.as_str()?).ok()?;
    let y = URL_SAFE_NO_PAD.decode(jwk.get("y")?.as_str()?).ok()?;
    let mut point = vec![4u8];
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let (input, sig) = jws.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(input.as_bytes(), &sig)
        .ok()?;
    let (_, payload) = input.split_once('.')?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let s = Signer::from_pkcs8_b64(&generate_key().unwrap()).unwrap();
        let payload = serde_json::json!({"host_name": "n1", "verdict": "trusted"});
        let jws = s.sign(&payload).unwrap();
        assert_eq!(verify(&jws, &s.jwk()), Some(payload));
        let mut tampered = jws.clone();
        tampered.insert(jws.find('.').unwrap() + 2, 'A');
        assert_eq!(verify(&tampered, &s.jwk()), None);
        assert!(s.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn the_header_names_the_key_and_every_part_is_base64url() {
        let s = Signer::from_pkcs8_b64(&generate_key().unwrap()).unwrap();
        let jws = s.sign(&serde_json::json!({"a": "x?>~"})).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3, "{jws}");
        for p in &parts {
            assert!(
                p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{p}"
            );
        }
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": s.kid()})
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
    }
}
