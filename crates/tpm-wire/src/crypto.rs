//! Signature checks over TPM keys, on aws-lc-rs.
//!
//! The common cases (RSASSA, RSAPSS with salt length = digest length as libtpms signs, ECDSA)
//! go through aws-lc-rs. RSAPSS with any other salt length, which other TPMs use and which
//! PSS admits, falls back to a general EMSA-PSS-VERIFY that recovers the salt length from the
//! encoded message (RFC 8017, 9.1.2) on a plain modular exponentiation.

use aws_lc_rs::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use num_bigint::BigUint;

use crate::alg::HashAlg;
use crate::der;
use crate::public::{EccCurve, PublicKey};
use crate::signature::Signature;

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SigFailure {
    /// RSA signature for an ECC key or the reverse.
    KeyMismatch,
    /// A combination we cannot check.
    Unsupported(String),
    /// The signature is not valid.
    Invalid,
}

fn strip(v: &[u8]) -> &[u8] {
    v.get(v.iter().take_while(|b| **b == 0).count()..)
        .unwrap_or_default()
}

/// Verifies `sig` over `msg` with `key`.
pub(crate) fn verify(key: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), SigFailure> {
    match (key, sig) {
        (
            PublicKey::Rsa {
                modulus, exponent, ..
            },
            Signature::RsaSsa { hash, sig },
        ) => {
            let params: &RsaParameters = match hash {
                HashAlg::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                HashAlg::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                HashAlg::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                HashAlg::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            let e = exponent.to_be_bytes();
            let c = RsaPublicKeyComponents {
                n: strip(modulus),
                e: strip(&e),
            };
            c.verify(params, msg, sig).map_err(|_| SigFailure::Invalid)
        }
        (
            PublicKey::Rsa {
                modulus, exponent, ..
            },
            Signature::RsaPss { hash, sig },
        ) => {
            let e = exponent.to_be_bytes();
            let c = RsaPublicKeyComponents {
                n: strip(modulus),
                e: strip(&e),
            };
            let fast: Option<&RsaParameters> = match hash {
                HashAlg::Sha1 => None,
                HashAlg::Sha256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
                HashAlg::Sha384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
                HashAlg::Sha512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
            };
            if let Some(params) = fast {
                if c.verify(params, msg, sig).is_ok() {
                    return Ok(());
                }
            }
            pss_verify_any_salt(strip(modulus), *exponent, *hash, msg, sig)
        }
        (PublicKey::Ecc { curve, x, y }, Signature::Ecdsa { hash, r, s }) => {
            let alg: &'static signature::EcdsaVerificationAlgorithm = match (curve, hash) {
                (EccCurve::NistP256, HashAlg::Sha1) => &signature::ECDSA_P256_SHA1_ASN1,
                (EccCurve::NistP256, HashAlg::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (EccCurve::NistP256, HashAlg::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (EccCurve::NistP256, HashAlg::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                (EccCurve::NistP384, HashAlg::Sha1) => {
                    return Err(SigFailure::Unsupported(
                        "ECDSA P-384 with SHA-1".to_string(),
                    ))
                }
                (EccCurve::NistP384, HashAlg::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (EccCurve::NistP384, HashAlg::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                (EccCurve::NistP384, HashAlg::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
            };
            let n = curve.coordinate_size();
            if strip(r).len() > n || strip(s).len() > n {
                return Err(SigFailure::Invalid);
            }
            let point = der::sec1_point(*curve, x, y).ok_or(SigFailure::Invalid)?;
            let der_sig = der::ecdsa_sig(r, s);
            UnparsedPublicKey::new(alg, &point)
                .verify(msg, &der_sig)
                .map_err(|_| SigFailure::Invalid)
        }
        _ => Err(SigFailure::KeyMismatch),
    }
}

/// MGF1 with `hash`.
pub(crate) fn mgf1(hash: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.size());
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut h = hash.hasher();
        h.update(seed);
        h.update(&counter.to_be_bytes());
        out.extend_from_slice(&h.finish());
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// RSASSA-PSS verification that accepts every salt length (RFC 8017, 8.1.2 and 9.1.2).
fn pss_verify_any_salt(
    n: &[u8],
    e: u32,
    hash: HashAlg,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigFailure> {
    let k = n.len();
    if k < 256 || sig.len() != k {
        return Err(SigFailure::Invalid);
    }
    let n_int = BigUint::from_bytes_be(n);
    let s_int = BigUint::from_bytes_be(sig);
    if s_int >= n_int {
        return Err(SigFailure::Invalid);
    }
    let m = s_int.modpow(&BigUint::from(e), &n_int).to_bytes_be();
    let mod_bits = n_int.bits() as usize;
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    if m.len() > em_len {
        return Err(SigFailure::Invalid);
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend_from_slice(&m);
    let h_len = hash.size();
    if em_len < h_len + 2 {
        return Err(SigFailure::Invalid);
    }
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let (h, trailer) = rest.split_at(h_len);
    if trailer != [0xbc] {
        return Err(SigFailure::Invalid);
    }
    let top_bits = 8 * em_len - em_bits;
    let top_mask: u8 = 0xffu8.checked_shr(top_bits as u32).unwrap_or(0);
    if masked_db.first().is_none_or(|b| b & !top_mask != 0) {
        return Err(SigFailure::Invalid);
    }
    let mask = mgf1(hash, h, masked_db.len());
    let mut db: Vec<u8> = masked_db
        .iter()
        .zip(mask.iter())
        .map(|(a, b)| a ^ b)
        .collect();
    if let Some(first) = db.first_mut() {
        *first &= top_mask;
    }
    let zeros = db.iter().take_while(|b| **b == 0).count();
    if db.get(zeros) != Some(&0x01) {
        return Err(SigFailure::Invalid);
    }
    let salt = db.get(zeros + 1..).unwrap_or_default();
    let m_hash = hash.digest(msg);
    let mut hh = hash.hasher();
    hh.update(&[0u8; 8]);
    hh.update(&m_hash);
    hh.update(salt);
    if hh.finish() == h {
        Ok(())
    } else {
        Err(SigFailure::Invalid)
    }
}
