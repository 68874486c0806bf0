//! RSAPSS signatures with every salt length PSS admits verify (TPMs differ: libtpms uses the
//! digest length, others the maximum). Signed by the openssl command line, an independent
//! implementation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::process::Command;

use nodetrust_tpm_wire::der::{parse_spki, pem_decode};
use nodetrust_tpm_wire::{inspect_quote_with_bare_key, HashAlg, PcrValues, Signature};

mod common;

fn openssl(args: &[&str], dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn rsapss_any_salt_length_verifies_and_wrong_message_does_not() {
    let dir = tempfile_dir();
    let d = dir.as_path();
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "k.pem",
        ],
        d,
    );
    openssl(&["pkey", "-in", "k.pem", "-pubout", "-out", "pub.pem"], d);
    let pem = std::fs::read_to_string(d.join("pub.pem")).unwrap();
    let key = parse_spki(&pem_decode(&pem, "PUBLIC KEY").unwrap()).unwrap();

    let ak = common::soft_ak(common::AK_ATTRS);
    let pcrs = common::sample_pcrs();
    let sel = common::selection(&[(HashAlg::Sha256, &[0, 1])]);
    let (attest, _) = common::quote(&ak, b"n", &sel, &pcrs);
    std::fs::write(d.join("msg"), &attest).unwrap();

    for (hash, salts) in [
        ("sha256", &["0", "20", "32", "max"][..]),
        ("sha1", &["20", "max"][..]),
        ("sha384", &["48", "max"][..]),
    ] {
        for salt in salts {
            let sig = openssl(
                &[
                    "dgst",
                    &format!("-{hash}"),
                    "-sign",
                    "k.pem",
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    &format!("rsa_pss_saltlen:{salt}"),
                    "msg",
                ],
                d,
            );
            let h = HashAlg::from_name(hash).unwrap();
            let tpmt = Signature::RsaPss {
                hash: h,
                sig: sig.clone(),
            }
            .to_bytes()
            .unwrap();
            // The quote's pcrDigest was made with SHA-256; with another signing hash the PCR
            // digest check fails after the signature passed, which shows the signature passed.
            let r = inspect_quote_with_bare_key(&key, &attest, &tpmt, &pcrs, Some(b"n"));
            match h {
                HashAlg::Sha256 => assert!(r.is_ok(), "{hash} salt {salt}: {r:?}"),
                _ => assert_eq!(
                    r.unwrap_err().reason(),
                    "pcr_digest_mismatch",
                    "{hash} salt {salt}"
                ),
            }
            let mut other = attest.clone();
            other[10] ^= 1;
            let r = inspect_quote_with_bare_key(&key, &other, &tpmt, &pcrs, None);
            assert_eq!(
                r.unwrap_err().reason(),
                "bad_signature",
                "{hash} salt {salt}"
            );
            let mut bad_sig = sig.clone();
            bad_sig[100] ^= 1;
            let tpmt = Signature::RsaPss {
                hash: h,
                sig: bad_sig,
            }
            .to_bytes()
            .unwrap();
            let r = inspect_quote_with_bare_key(&key, &attest, &tpmt, &PcrValues::new(), None);
            assert_eq!(
                r.unwrap_err().reason(),
                "bad_signature",
                "{hash} salt {salt}"
            );
        }
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nodetrust-pss-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
