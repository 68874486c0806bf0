//! Software `TPM2_MakeCredential` (TPM 2.0 Part 1, "Credential Protection"), and its inverse
//! for software attesters.
//!
//! The verifier wraps a random secret so that only a TPM holding the EK's private key, *and*
//! holding a loaded object with the given Name (the AK), can unwrap it with
//! `TPM2_ActivateCredential`. Getting the secret back proves the AK and the EK share a TPM.
//!
//! Steps, for an EK with name algorithm H and symmetric definition AES-k/CFB:
//! 1. seed: RSA EK: random |H| bytes, OAEP-encrypted to the EK with label `IDENTITY\0`;
//!    ECC EK: ECDH with an ephemeral key, `seed = KDFe(H, Z, "IDENTITY", Qe.x, Qek.x, |H|*8)`.
//! 2. `symKey = KDFa(H, seed, "STORAGE", akName, "", k)`;
//!    `encIdentity = AES-CFB(symKey, iv = 0, TPM2B(secret))`.
//! 3. `hmacKey = KDFa(H, seed, "INTEGRITY", "", "", |H|*8)`;
//!    `outerHMAC = HMAC(hmacKey, encIdentity || akName)`.
//! 4. credentialBlob = `TPM2B(outerHMAC) || encIdentity`.

use aws_lc_rs::{agreement, cipher, hmac, rand, rsa};

use crate::alg::{id, HashAlg};
use crate::codec::{Reader, Writer};
use crate::der;
use crate::public::{EccCurve, Public, PublicKey};

/// Why a credential could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The EK cannot be used for credential protection.
    #[error("unsuitable EK: {0}")]
    UnsuitableEk(String),
    /// The secret is longer than the EK's name algorithm digest.
    #[error("secret of {len} bytes is longer than the {max} the EK's name algorithm allows")]
    SecretTooLong {
        /// Secret length.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// A cryptographic primitive failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// The blob's integrity check failed (wrong seed, wrong name, or altered blob).
    #[error("credential integrity check failed")]
    Integrity,
    /// The blob is malformed.
    #[error("malformed credential blob")]
    Malformed,
}

/// The challenge sent to the TPM: the inputs of `TPM2_ActivateCredential`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `TPM2B_ID_OBJECT` contents (without the outer size).
    pub blob: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` contents (without the outer size).
    pub encrypted_secret: Vec<u8>,
}

fn hmac_alg(h: HashAlg) -> hmac::Algorithm {
    match h {
        HashAlg::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => hmac::HMAC_SHA256,
        HashAlg::Sha384 => hmac::HMAC_SHA384,
        HashAlg::Sha512 => hmac::HMAC_SHA512,
    }
}

/// HMAC with `hash`.
pub fn hmac(hash: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let k = hmac::Key::new(hmac_alg(hash), key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

fn with_null(label: &[u8]) -> Vec<u8> {
    let mut l = label.to_vec();
    if l.last() != Some(&0) {
        l.push(0);
    }
    l
}

/// KDFa (SP 800-108 counter mode with HMAC), as TPM 2.0 Part 1 defines it.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let label = with_null(label);
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend_from_slice(&hmac(
            hash,
            key,
            &[
                &counter.to_be_bytes(),
                &label,
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        ));
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    if !bits.is_multiple_of(8) {
        if let Some(first) = out.first_mut() {
            *first &= (1u8 << (bits % 8)) - 1;
        }
    }
    out
}

/// KDFe (SP 800-56A concatenation KDF), as TPM 2.0 Part 1 defines it for ECDH.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let label = with_null(label);
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut h = hash.hasher();
        h.update(&counter.to_be_bytes());
        h.update(z);
        h.update(&label);
        h.update(party_u);
        h.update(party_v);
        out.extend_from_slice(&h.finish());
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    out
}

fn aes_cfb(key: &[u8], data: &mut [u8], encrypt: bool) -> Result<(), CredentialError> {
    let alg = match key.len() {
        16 => &cipher::AES_128,
        32 => &cipher::AES_256,
        _ => return Err(CredentialError::Crypto("AES key size")),
    };
    let iv = aws_lc_rs::iv::FixedLength::from([0u8; 16]);
    let k =
        cipher::UnboundCipherKey::new(alg, key).map_err(|_| CredentialError::Crypto("AES key"))?;
    if encrypt {
        let k = cipher::EncryptingKey::cfb128(k).map_err(|_| CredentialError::Crypto("AES-CFB"))?;
        k.less_safe_encrypt(data, cipher::EncryptionContext::Iv128(iv))
            .map_err(|_| CredentialError::Crypto("AES-CFB encrypt"))?;
    } else {
        let k = cipher::DecryptingKey::cfb128(k).map_err(|_| CredentialError::Crypto("AES-CFB"))?;
        k.decrypt(data, cipher::DecryptionContext::Iv128(iv))
            .map_err(|_| CredentialError::Crypto("AES-CFB decrypt"))?;
    }
    Ok(())
}

fn sym_key_bits(ek: &Public) -> Result<u32, CredentialError> {
    if ek.symmetric.algorithm != id::AES || ek.symmetric.mode != id::CFB {
        return Err(CredentialError::UnsuitableEk(format!(
            "symmetric definition {:#06x}/{:#06x} is not AES-CFB",
            ek.symmetric.algorithm, ek.symmetric.mode
        )));
    }
    match ek.symmetric.key_bits {
        128 | 256 => Ok(u32::from(ek.symmetric.key_bits)),
        other => Err(CredentialError::UnsuitableEk(format!(
            "AES key size {other}"
        ))),
    }
}

/// Wraps `secret` for the object named `ak_name` under the key `ek`.
pub fn make_credential(
    ek: &Public,
    ak_name: &[u8],
    secret: &[u8],
) -> Result<Credential, CredentialError> {
    let h = ek.name_alg;
    if secret.len() > h.size() {
        return Err(CredentialError::SecretTooLong {
            len: secret.len(),
            max: h.size(),
        });
    }
    if !ek.has(crate::public::attr::DECRYPT) || !ek.has(crate::public::attr::RESTRICTED) {
        return Err(CredentialError::UnsuitableEk(
            "not a restricted decryption key".into(),
        ));
    }
    let key_bits = sym_key_bits(ek)?;
    let (seed, encrypted_secret) = match &ek.key {
        PublicKey::Rsa { .. } => {
            let mut seed = vec![0u8; h.size()];
            rand::fill(&mut seed).map_err(|_| CredentialError::Crypto("random"))?;
            let spki = der::spki(&ek.key);
            let pk = rsa::PublicEncryptingKey::from_der(&spki)
                .map_err(|_| CredentialError::UnsuitableEk("RSA key rejected".into()))?;
            let oaep = rsa::OaepPublicEncryptingKey::new(pk)
                .map_err(|_| CredentialError::Crypto("OAEP key"))?;
            let alg = match h {
                HashAlg::Sha1 => &rsa::OAEP_SHA1_MGF1SHA1,
                HashAlg::Sha256 => &rsa::OAEP_SHA256_MGF1SHA256,
                HashAlg::Sha384 => &rsa::OAEP_SHA384_MGF1SHA384,
                HashAlg::Sha512 => &rsa::OAEP_SHA512_MGF1SHA512,
            };
            let mut out = vec![0u8; oaep.ciphertext_size()];
            let ct = oaep
                .encrypt(alg, &seed, &mut out, Some(b"IDENTITY\0"))
                .map_err(|_| CredentialError::Crypto("OAEP encrypt"))?;
            let ct = ct.to_vec();
            (seed, ct)
        }
        PublicKey::Ecc { curve, x, y } => {
            let alg = match curve {
                EccCurve::NistP256 => &agreement::ECDH_P256,
                EccCurve::NistP384 => &agreement::ECDH_P384,
            };
            let ek_point = der::sec1_point(*curve, x, y).ok_or_else(|| {
                CredentialError::UnsuitableEk("EC point coordinates too long".into())
            })?;
            let eph = agreement::PrivateKey::generate(alg)
                .map_err(|_| CredentialError::Crypto("ECDH key"))?;
            let eph_pub = eph
                .compute_public_key()
                .map_err(|_| CredentialError::Crypto("ECDH public"))?;
            let n = curve.coordinate_size();
            let eph_bytes = eph_pub.as_ref();
            let ex = eph_bytes
                .get(1..1 + n)
                .ok_or(CredentialError::Crypto("ECDH point"))?
                .to_vec();
            let ey = eph_bytes
                .get(1 + n..1 + 2 * n)
                .ok_or(CredentialError::Crypto("ECDH point"))?
                .to_vec();
            let z = agreement::agree(
                &eph,
                agreement::UnparsedPublicKey::new(alg, &ek_point),
                CredentialError::UnsuitableEk("EC point not on the curve".into()),
                |z| Ok(z.to_vec()),
            )?;
            let seed = kdfe(h, &z, b"IDENTITY", &ex, x, (h.size() * 8) as u32);
            let mut w = Writer::new();
            w.tpm2b(&ex).map_err(|_| CredentialError::Malformed)?;
            w.tpm2b(&ey).map_err(|_| CredentialError::Malformed)?;
            (seed, w.into_bytes())
        }
    };
    let blob = wrap(h, key_bits, &seed, ak_name, secret)?;
    Ok(Credential {
        blob,
        encrypted_secret,
    })
}

fn wrap(
    h: HashAlg,
    key_bits: u32,
    seed: &[u8],
    ak_name: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let sym_key = kdfa(h, seed, b"STORAGE", ak_name, &[], key_bits);
    let mut enc_identity = Writer::new();
    enc_identity
        .tpm2b(secret)
        .map_err(|_| CredentialError::Malformed)?;
    let mut enc_identity = enc_identity.into_bytes();
    aes_cfb(&sym_key, &mut enc_identity, true)?;
    let hmac_key = kdfa(h, seed, b"INTEGRITY", &[], &[], (h.size() * 8) as u32);
    let outer = hmac(h, &hmac_key, &[&enc_identity, ak_name]);
    let mut w = Writer::new();
    w.tpm2b(&outer).map_err(|_| CredentialError::Malformed)?;
    w.bytes(&enc_identity);
    Ok(w.into_bytes())
}

/// The inverse of [`make_credential`]'s wrapping, given the seed that the EK's private key
/// recovers: what `TPM2_ActivateCredential` does after decrypting the seed. For software
/// attesters and tests.
pub fn unwrap_with_seed(
    name_alg: HashAlg,
    sym_key_bits: u32,
    seed: &[u8],
    ak_name: &[u8],
    blob: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let mut r = Reader::new(blob);
    let outer = r
        .tpm2b("integrityHMAC", 64)
        .map_err(|_| CredentialError::Malformed)?;
    let enc_identity = r
        .take(r.remaining(), "encIdentity")
        .map_err(|_| CredentialError::Malformed)?;
    let hmac_key = kdfa(
        name_alg,
        seed,
        b"INTEGRITY",
        &[],
        &[],
        (name_alg.size() * 8) as u32,
    );
    let expect = hmac(name_alg, &hmac_key, &[enc_identity, ak_name]);
    if !constant_time_eq(&expect, outer) {
        return Err(CredentialError::Integrity);
    }
    let sym_key = kdfa(name_alg, seed, b"STORAGE", ak_name, &[], sym_key_bits);
    let mut plain = enc_identity.to_vec();
    aes_cfb(&sym_key, &mut plain, false)?;
    let mut r = Reader::new(&plain);
    let secret = r
        .tpm2b("credential", 64)
        .map_err(|_| CredentialError::Malformed)?
        .to_vec();
    r.finish("credential")
        .map_err(|_| CredentialError::Malformed)?;
    Ok(secret)
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
