//! A prepared AK (its key parsed once) gives exactly the answers of `verify_quote`, in one step
//! or in two (the signed message, then the PCR values).

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
use nodetrust_tpm_wire::verify::{verify_quote_prepared, verify_signed_prepared, PreparedAk};
use nodetrust_tpm_wire::{verify_quote, HashAlg, PcrValues, Public};

/// Quote bytes, signature bytes, PCR values and nonce of one verification.
type Case<'a> = (&'a [u8], &'a [u8], &'a PcrValues, &'a [u8]);

/// Every case of `each_check_has_its_reason`, through both paths, with the same outcome.
fn same_answers(public: &Public, attest: &[u8], sig: &[u8], pcrs: &PcrValues) {
    let prepared = PreparedAk::new(public.clone());
    assert!(
        !prepared.is_parsed(),
        "nothing parsed before the first quote"
    );
    let mut altered = attest.to_vec();
    *altered.last_mut().unwrap() ^= 1;
    let mut other_pcrs = pcrs.clone();
    other_pcrs
        .insert(HashAlg::Sha256, 4, vec![0xaa; 32])
        .unwrap();
    let cases: Vec<Case<'_>> = vec![
        (attest, sig, pcrs, b"n"),
        (attest, sig, pcrs, b"m"),
        (attest, sig, &other_pcrs, b"n"),
        (&altered, sig, pcrs, b"n"),
        (attest, &sig[..sig.len() - 1], pcrs, b"n"),
        (attest, sig, pcrs, b"n"),
    ];
    for (i, (a, s, p, n)) in cases.into_iter().enumerate() {
        let plain = verify_quote(public, a, s, p, n).map(|q| q.pcrs().clone());
        let fast = verify_quote_prepared(&prepared, a, s, p, n).map(|q| q.pcrs().clone());
        assert_eq!(plain, fast, "case {i}");
        // In two steps: the signed message, then the PCR values against its digest.
        let signed = verify_signed_prepared(&prepared, a, s, n);
        if let Ok(signed) = &signed {
            let parsed = nodetrust_tpm_wire::Attest::parse_quote(a).unwrap();
            assert_eq!(signed.attest(), &parsed, "case {i}");
        }
        let two = signed
            .and_then(|q| q.with_pcrs(p))
            .map(|q| q.pcrs().clone());
        assert_eq!(plain, two, "case {i}");
    }
}

#[test]
fn a_prepared_ecdsa_ak_answers_as_verify_quote_and_keeps_its_parsed_key() {
    let ak = soft_ak(AK_ATTRS);
    let pcrs = sample_pcrs();
    let sel = selection(&[(HashAlg::Sha256, &[0, 4])]);
    let (attest, sig) = quote(&ak, b"n", &sel, &pcrs);
    same_answers(&ak.public, &attest, &sig, &pcrs);

    let prepared = PreparedAk::new(ak.public.clone());
    verify_quote_prepared(&prepared, &attest, &sig, &pcrs, b"n").unwrap();
    assert!(
        prepared.is_parsed(),
        "the key is kept after the first quote"
    );
    // A quote of another AK never verifies with the kept key.
    let other = soft_ak(AK_ATTRS);
    let (attest2, sig2) = quote(&other, b"n", &sel, &pcrs);
    let err = verify_quote_prepared(&prepared, &attest2, &sig2, &pcrs, b"n").unwrap_err();
    assert_eq!(err.reason(), "bad_signature");
}

#[test]
fn a_prepared_rsa_ak_answers_as_verify_quote() {
    let ak = soft_rsa_ak();
    let pcrs = sample_pcrs();
    let sel = selection(&[(HashAlg::Sha256, &[0, 4])]);
    let (attest, sig) = quote_rsa(&ak, b"n", &sel, &pcrs);
    same_answers(&ak.public, &attest, &sig, &pcrs);
    let prepared = PreparedAk::new(ak.public.clone());
    verify_quote_prepared(&prepared, &attest, &sig, &pcrs, b"n").unwrap();
    assert!(prepared.is_parsed());
}

#[test]
fn a_prepared_ak_that_is_not_a_restricted_signing_key_is_refused() {
    let ak = soft_ak(AK_ATTRS & !attr::RESTRICTED);
    let pcrs = sample_pcrs();
    let sel = selection(&[(HashAlg::Sha256, &[0])]);
    let (attest, sig) = quote(&ak, b"n", &sel, &pcrs);
    let err = verify_quote_prepared(
        &PreparedAk::new(ak.public.clone()),
        &attest,
        &sig,
        &pcrs,
        b"n",
    )
    .unwrap_err();
    assert_eq!(err.reason(), "ak_not_restricted_signing");
}
