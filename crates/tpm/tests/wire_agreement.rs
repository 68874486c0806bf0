//! Differential test: our TPM structure parsers (nodetrust-tpm-wire) and tss-esapi's
//! unmarshalling (tpm2-tss `Tss2_MU_*`) read the same quotes, signatures and AKs the same way.
//! The quotes come from a swtpm through tpm2-tools; the AK Name is checked against the TPM's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_testkit::{tpm2, Swtpm};
use nodetrust_tpm_wire as wire;
use tss_esapi::structures::{self as tss, AttestInfo};
use tss_esapi::traits::UnMarshall;
use tss_esapi::tss2_esys::TPM2_ALG_ID;

fn hash_id(h: tss_esapi::interface_types::algorithm::HashingAlgorithm) -> u16 {
    TPM2_ALG_ID::from(h)
}

fn assert_attest_agrees(bytes: &[u8]) {
    let ours = wire::Attest::parse_quote(bytes);
    let theirs = tss::Attest::unmarshall(bytes);
    let (Ok(ours), Ok(theirs)) = (ours, theirs) else {
        return;
    };
    assert_eq!(ours.qualified_signer, theirs.qualified_signer().value());
    assert_eq!(ours.extra_data, theirs.extra_data().value());
    let c = theirs.clock_info();
    assert_eq!(
        (
            ours.clock_info.clock,
            ours.clock_info.reset_count,
            ours.clock_info.restart_count,
            ours.clock_info.safe
        ),
        (c.clock(), c.reset_count(), c.restart_count(), c.safe())
    );
    assert_eq!(ours.firmware_version, theirs.firmware_version());
    let AttestInfo::Quote { info } = theirs.attested() else {
        panic!("tss-esapi read a quote as another type")
    };
    assert_eq!(ours.pcr_digest, info.pcr_digest().value());
    let theirs_sel: Vec<(u16, Vec<u8>)> = info
        .pcr_selection()
        .get_selections()
        .iter()
        .map(|s| {
            let mut pcrs: Vec<u8> = s
                .selected()
                .iter()
                .map(|slot| u32::from(*slot).trailing_zeros() as u8)
                .collect();
            pcrs.sort_unstable();
            (hash_id(s.hashing_algorithm()), pcrs)
        })
        .collect();
    let ours_sel: Vec<(u16, Vec<u8>)> = ours
        .pcr_select
        .banks
        .iter()
        .map(|b| (b.hash.id(), b.pcrs.clone()))
        .collect();
    assert_eq!(ours_sel, theirs_sel);
}

fn assert_signature_agrees(bytes: &[u8]) {
    let ours = wire::Signature::parse(bytes).unwrap();
    let theirs = tss::Signature::unmarshall(bytes).unwrap();
    match (&ours, &theirs) {
        (wire::Signature::RsaSsa { hash, sig }, tss::Signature::RsaSsa(t))
        | (wire::Signature::RsaPss { hash, sig }, tss::Signature::RsaPss(t)) => {
            assert_eq!(hash.id(), hash_id(t.hashing_algorithm()));
            assert_eq!(sig.as_slice(), t.signature().value());
        }
        (wire::Signature::Ecdsa { hash, r, s }, tss::Signature::EcDsa(t)) => {
            assert_eq!(hash.id(), hash_id(t.hashing_algorithm()));
            assert_eq!(r.as_slice(), t.signature_r().value());
            assert_eq!(s.as_slice(), t.signature_s().value());
        }
        other => panic!("parsers disagree on the signature scheme: {other:?}"),
    }
}

fn assert_public_agrees(tpm2b: &[u8], tpm_name: &[u8]) {
    let ours = wire::Public::from_tpm2b(tpm2b).unwrap();
    let theirs = tss::Public::unmarshall(&tpm2b[2..]).unwrap();
    assert_eq!(ours.name(), tpm_name, "our Name differs from the TPM's");
    assert_eq!(ours.attributes, u32::from(theirs.object_attributes()));
    assert_eq!(ours.name_alg.id(), hash_id(theirs.name_hashing_algorithm()));
    assert_eq!(ours.auth_policy.as_slice(), theirs.auth_policy().value());
    match (&ours.key, &theirs) {
        (wire::PublicKey::Rsa { modulus, .. }, tss::Public::Rsa { unique, .. }) => {
            assert_eq!(modulus.as_slice(), unique.value());
        }
        (wire::PublicKey::Ecc { x, y, .. }, tss::Public::Ecc { unique, .. }) => {
            assert_eq!(x.as_slice(), unique.x().value());
            assert_eq!(y.as_slice(), unique.y().value());
        }
        _ => panic!("parsers disagree on the key type"),
    }
}

#[test]
fn our_parsers_and_tss_esapi_agree_on_swtpm_quotes() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(
        &tpm,
        "tpm2_pcrextend",
        &["5:sha1=5555555555555555555555555555555555555555"],
    )
    .unwrap();
    for (alg, scheme) in [("rsa", "rsassa"), ("rsa", "rsapss"), ("ecc", "ecdsa")] {
        let ek = format!("ek-{alg}.ctx");
        let ak = format!("ak-{scheme}.ctx");
        let ak_pub = format!("ak-{scheme}.pub");
        let ak_name = format!("ak-{scheme}.name");
        tpm2::run(&tpm, "tpm2_createek", &["-c", &ek, "-G", alg]).unwrap();
        tpm2::run(
            &tpm,
            "tpm2_createak",
            &[
                "-C", &ek, "-c", &ak, "-G", alg, "-g", "sha256", "-s", scheme, "-u", &ak_pub, "-n",
                &ak_name,
            ],
        )
        .unwrap();
        let pub_bytes = std::fs::read(tpm.scratch().join(&ak_pub)).unwrap();
        let name = std::fs::read(tpm.scratch().join(&ak_name)).unwrap();
        assert_public_agrees(&pub_bytes, &name);

        for (i, sel) in [
            "sha256:0,1,2,3,4,5,6,7",
            "sha1:5,10,23",
            "sha1:0+sha256:16,17,18,19,20,21,22",
        ]
        .iter()
        .enumerate()
        {
            let msg = format!("q-{scheme}-{i}.msg");
            let sig = format!("q-{scheme}-{i}.sig");
            let scheme_arg = format!("--scheme={scheme}");
            tpm2::run(
                &tpm,
                "tpm2_quote",
                &[
                    "-c",
                    &ak,
                    "-l",
                    sel,
                    "-q",
                    "c0ffee",
                    "-m",
                    &msg,
                    "-s",
                    &sig,
                    "-g",
                    "sha256",
                    &scheme_arg,
                ],
            )
            .unwrap();
            let m = std::fs::read(tpm.scratch().join(&msg)).unwrap();
            let s = std::fs::read(tpm.scratch().join(&sig)).unwrap();
            wire::Attest::parse_quote(&m).expect("we parse a real quote");
            tss::Attest::unmarshall(&m).expect("tss-esapi parses a real quote");
            assert_attest_agrees(&m);
            assert_signature_agrees(&s);

            // Every single-byte change: whenever both parsers accept, they read the same values.
            for pos in 0..m.len() {
                for flip in [0x01u8, 0x80] {
                    let mut mm = m.clone();
                    mm[pos] ^= flip;
                    assert_attest_agrees(&mm);
                }
            }
        }
    }
}
