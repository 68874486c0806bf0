//! A software "TPM" for tests: builds real TPMS_ATTEST bytes and signs them with an
//! aws-lc-rs ECDSA P-256 key described by a restricted-signing public area.
#![allow(dead_code, reason = "each test binary uses part of it")]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use nodetrust_tpm_wire::pcr::BankSelection;
use nodetrust_tpm_wire::public::{attr, EccCurve};
use nodetrust_tpm_wire::{
    Attest, ClockInfo, HashAlg, PcrSelection, PcrValues, Public, PublicKey, Signature,
};

pub const AK_ATTRS: u32 = attr::AK;

pub struct SoftAk {
    pub key: EcdsaKeyPair,
    pub public: Public,
}

pub fn soft_ak(attributes: u32) -> SoftAk {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = key.public_key().as_ref().to_vec();
    // An AK's public area (`Public::ak`) with `attributes` in place of an AK's.
    let ak = Public::ak(&PublicKey::Ecc {
        curve: EccCurve::NistP256,
        x: point[1..33].to_vec(),
        y: point[33..65].to_vec(),
    })
    .unwrap();
    let public = Public::build(
        ak.name_alg,
        attributes,
        &ak.auth_policy,
        ak.symmetric,
        ak.scheme,
        &ak.key,
    )
    .unwrap();
    SoftAk { key, public }
}

pub fn sample_pcrs() -> PcrValues {
    let mut p = PcrValues::new();
    for i in 0..24u8 {
        p.insert(HashAlg::Sha256, i, HashAlg::Sha256.digest(&[i]))
            .unwrap();
        p.insert(HashAlg::Sha1, i, HashAlg::Sha1.digest(&[i]))
            .unwrap();
    }
    p
}

/// Returns (attest bytes, signature bytes) for a quote over `selection`.
pub fn quote(
    ak: &SoftAk,
    nonce: &[u8],
    selection: &PcrSelection,
    pcrs: &PcrValues,
) -> (Vec<u8>, Vec<u8>) {
    let (digest, _) =
        nodetrust_tpm_wire::verify::pcr_digest(selection, pcrs, HashAlg::Sha256).unwrap();
    let attest = Attest {
        qualified_signer: ak.public.name(),
        extra_data: nonce.to_vec(),
        clock_info: ClockInfo {
            clock: 123_456,
            reset_count: 3,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 0x2019_1023_0016_3636,
        pcr_select: selection.clone(),
        pcr_digest: digest,
    }
    .to_bytes()
    .unwrap();
    let sig = ak.key.sign(&SystemRandom::new(), &attest).unwrap();
    let (r, s) = sig.as_ref().split_at(32);
    let sig = Signature::Ecdsa {
        hash: HashAlg::Sha256,
        r: r.to_vec(),
        s: s.to_vec(),
    }
    .to_bytes()
    .unwrap();
    (attest, sig)
}

pub fn selection(banks: &[(HashAlg, &[u8])]) -> PcrSelection {
    PcrSelection {
        banks: banks
            .iter()
            .map(|(h, p)| BankSelection {
                hash: *h,
                pcrs: p.to_vec(),
            })
            .collect(),
    }
}

/// An RSA-2048 RSASSA-SHA256 software AK.
pub struct SoftRsaAk {
    pub key: aws_lc_rs::rsa::KeyPair,
    pub public: Public,
}

pub fn soft_rsa_ak() -> SoftRsaAk {
    use aws_lc_rs::signature::KeyPair as _;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let spki = {
        use aws_lc_rs::encoding::AsDer;
        key.public_key().as_der().unwrap().as_ref().to_vec()
    };
    let pk = nodetrust_tpm_wire::der::parse_spki(&spki).unwrap();
    let public = Public::ak(&pk).unwrap();
    SoftRsaAk { key, public }
}

pub fn quote_rsa(
    ak: &SoftRsaAk,
    nonce: &[u8],
    selection: &PcrSelection,
    pcrs: &PcrValues,
) -> (Vec<u8>, Vec<u8>) {
    let (digest, _) =
        nodetrust_tpm_wire::verify::pcr_digest(selection, pcrs, HashAlg::Sha256).unwrap();
    let attest = Attest {
        qualified_signer: ak.public.name(),
        extra_data: nonce.to_vec(),
        clock_info: ClockInfo {
            clock: 1,
            reset_count: 1,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 1,
        pcr_select: selection.clone(),
        pcr_digest: digest,
    }
    .to_bytes()
    .unwrap();
    let mut sig = vec![0u8; ak.key.public_modulus_len()];
    ak.key
        .sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            &attest,
            &mut sig,
        )
        .unwrap();
    let sig = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig,
    }
    .to_bytes()
    .unwrap();
    (attest, sig)
}
