//! Quote verification on software-made quotes: each check rejects what it must, with its reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use common::*;
use nodetrust_tpm_wire::public::attr;
use nodetrust_tpm_wire::{
    inspect_quote, inspect_quote_with_bare_key, verify_quote, HashAlg, PcrValues, Public,
};

#[test]
fn genuine_quote_verifies_and_exposes_quoted_values() {
    let ak = soft_ak(AK_ATTRS);
    let pcrs = sample_pcrs();
    let sel = selection(&[(HashAlg::Sha256, &[0, 1, 7]), (HashAlg::Sha1, &[17])]);
    let (attest, sig) = quote(&ak, b"nonce-1", &sel, &pcrs);
    let q = verify_quote(&ak.public, &attest, &sig, &pcrs, b"nonce-1").unwrap();
    assert_eq!(q.pcrs().len(), 4, "only the quoted PCRs are kept");
    assert_eq!(q.pcrs().get(HashAlg::Sha1, 17), pcrs.get(HashAlg::Sha1, 17));
    assert!(q.pcrs().get(HashAlg::Sha256, 2).is_none());
    assert_eq!(q.attest().clock_info.reset_count, 3);
    // Offline inspection says which checks it made; it never yields a VerifiedQuote.
    let offline = inspect_quote(&ak.public, &attest, &sig, &pcrs, None).unwrap();
    assert!(!offline.nonce_checked() && offline.ak_attributes_checked());
    assert_eq!(offline.pcrs(), q.pcrs());
    let bare = inspect_quote_with_bare_key(&ak.public.key, &attest, &sig, &pcrs, Some(b"nonce-1"))
        .unwrap();
    assert!(bare.nonce_checked() && !bare.ak_attributes_checked());
    let err = inspect_quote(&ak.public, &attest, &sig, &pcrs, Some(b"other")).unwrap_err();
    assert_eq!(err.reason(), "nonce_mismatch");
    // The AK round-trips through its TPM2B form with the same Name.
    let again = Public::from_tpm2b(&ak.public.tpm2b_bytes()).unwrap();
    assert_eq!(again.name(), ak.public.name());
}

#[test]
fn each_check_has_its_reason() {
    let ak = soft_ak(AK_ATTRS);
    let pcrs = sample_pcrs();
    let sel = selection(&[(HashAlg::Sha256, &[0, 4])]);
    let (attest, sig) = quote(&ak, b"n", &sel, &pcrs);

    let err = verify_quote(&ak.public, &attest, &sig, &pcrs, b"m").unwrap_err();
    assert_eq!(err.reason(), "nonce_mismatch");

    let mut other = pcrs.clone();
    other.insert(HashAlg::Sha256, 4, vec![0xaa; 32]).unwrap();
    let err = verify_quote(&ak.public, &attest, &sig, &other, b"n").unwrap_err();
    assert_eq!(err.reason(), "pcr_digest_mismatch");

    let mut missing = PcrValues::new();
    missing
        .insert(
            HashAlg::Sha256,
            0,
            pcrs.get(HashAlg::Sha256, 0).unwrap().to_vec(),
        )
        .unwrap();
    let err = verify_quote(&ak.public, &attest, &sig, &missing, b"n").unwrap_err();
    assert_eq!(err.reason(), "missing_pcr");
    assert!(err.to_string().contains("PCR 4"));

    let other_ak = soft_ak(AK_ATTRS);
    let err = verify_quote(&other_ak.public, &attest, &sig, &pcrs, b"n").unwrap_err();
    assert_eq!(err.reason(), "bad_signature");

    let mut altered = attest.clone();
    *altered.last_mut().unwrap() ^= 1;
    let err = verify_quote(&ak.public, &altered, &sig, &pcrs, b"n").unwrap_err();
    assert_eq!(err.reason(), "bad_signature");

    let err = verify_quote(&ak.public, &attest, &sig[..sig.len() - 1], &pcrs, b"n").unwrap_err();
    assert_eq!(err.reason(), "malformed_signature");
}

#[test]
fn a_key_that_is_not_a_restricted_signing_key_is_refused() {
    for attrs in [
        AK_ATTRS & !attr::RESTRICTED,
        AK_ATTRS & !attr::FIXED_TPM,
        AK_ATTRS | attr::DECRYPT,
    ] {
        let ak = soft_ak(attrs);
        let pcrs = sample_pcrs();
        let sel = selection(&[(HashAlg::Sha256, &[0])]);
        let (attest, sig) = quote(&ak, b"n", &sel, &pcrs);
        let err = verify_quote(&ak.public, &attest, &sig, &pcrs, b"n").unwrap_err();
        assert_eq!(err.reason(), "ak_not_restricted_signing", "{attrs:#x}");
    }
}

#[test]
fn a_signed_structure_that_is_not_a_quote_is_refused() {
    // A restricted key signs only TPM-generated structures; a signed certify structure must
    // still not pass as a quote.
    let ak = soft_ak(AK_ATTRS);
    let pcrs = sample_pcrs();
    let sel = selection(&[(HashAlg::Sha256, &[0])]);
    let (mut attest, _) = quote(&ak, b"n", &sel, &pcrs);
    attest[4..6].copy_from_slice(&0x8017u16.to_be_bytes()); // TPM_ST_ATTEST_CERTIFY
    let sig = {
        use aws_lc_rs::rand::SystemRandom;
        let s = ak.key.sign(&SystemRandom::new(), &attest).unwrap();
        let (r, s) = s.as_ref().split_at(32);
        nodetrust_tpm_wire::Signature::Ecdsa {
            hash: HashAlg::Sha256,
            r: r.to_vec(),
            s: s.to_vec(),
        }
        .to_bytes()
        .unwrap()
    };
    let err = verify_quote(&ak.public, &attest, &sig, &pcrs, b"n").unwrap_err();
    assert_eq!(err.reason(), "malformed_quote");
    assert!(err.to_string().contains("type"), "{err}");
}

#[test]
fn pcr_values_read_tpm2_tools_yaml_and_json() {
    let yaml = "quoted: ff54\npcrs:\n  sha256:\n    0 : 0x".to_string()
        + &"AB".repeat(32)
        + "\n    10: 0x"
        + &"01".repeat(32)
        + "\n  sha1:\n    0 : 0x"
        + &"02".repeat(20)
        + "\ncalcDigest: 1234\n";
    let p = PcrValues::parse(&yaml).unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(p.get(HashAlg::Sha256, 0).unwrap(), &[0xab; 32][..]);
    let json = p.to_json().to_string();
    assert_eq!(PcrValues::parse(&json).unwrap(), p);
    assert!(PcrValues::parse("sha256:\n  24 : 0x00\n").is_err());
    assert!(
        PcrValues::parse(r#"{"sha256": {"0": "abcd"}}"#).is_err(),
        "wrong length"
    );
    assert!(
        PcrValues::parse(r#"{"md5": {"0": "abcd"}}"#).is_err(),
        "unknown bank"
    );
}

#[test]
fn an_ak_public_area_is_a_restricted_signing_key_with_its_keys_scheme() {
    use nodetrust_tpm_wire::alg::id;
    use nodetrust_tpm_wire::public::Scheme;
    use nodetrust_tpm_wire::PublicKey;
    // ECC: ECDSA with SHA-256, the attributes of an AK.
    let soft = soft_ak(AK_ATTRS);
    let ak = Public::ak(&soft.public.key).unwrap();
    assert_eq!(ak, soft.public);
    assert_eq!(ak.attributes, attr::AK);
    assert_eq!(ak.symmetric.algorithm, id::NULL);
    assert_eq!(
        ak.scheme,
        Scheme {
            scheme: id::ECDSA,
            hash: Some(id::SHA256),
        }
    );
    // RSA: RSASSA with SHA-256, no symmetric algorithm, a SHA-256 name.
    let rsa = PublicKey::Rsa {
        modulus: vec![0xc5; 256],
        exponent: 65537,
        key_bits: 2048,
    };
    let ak = Public::ak(&rsa).unwrap();
    assert_eq!(
        ak.attributes,
        attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::USER_WITH_AUTH
            | attr::RESTRICTED
            | attr::SIGN
    );
    assert_eq!(ak.symmetric.algorithm, id::NULL);
    assert_eq!(
        ak.scheme,
        Scheme {
            scheme: id::RSASSA,
            hash: Some(id::SHA256),
        }
    );
    assert!(ak.auth_policy.is_empty());
    assert_eq!(ak.key, rsa);
    assert_eq!(Public::from_tpm2b(&ak.tpm2b_bytes()).unwrap(), ak);
    assert_eq!(ak.name_alg, HashAlg::Sha256);
}
