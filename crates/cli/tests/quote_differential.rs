//! Differential tests: `nodetrust quote verify` against `tpm2_checkquote`, on quotes made by
//! `tpm2_quote` on a swtpm. For RSASSA, RSAPSS and ECDSA AKs and SHA-1 and SHA-256 banks, we
//! accept exactly what tpm2_checkquote accepts (one known exception: tpm2_checkquote 5.4 rejects
//! the RSAPSS salt length libtpms uses), and every tampering is rejected with its reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::path::Path;
use std::process::Command;

use nodetrust_testkit::{tpm2, Swtpm};

struct Ak {
    tpm: Swtpm,
    scheme: String,
    /// tpm2_checkquote cannot check libtpms' RSAPSS salt length.
    checkquote_agrees: bool,
}

fn setup(key_alg: &str, scheme: &str, hash: &str) -> Ak {
    let tpm = Swtpm::start().unwrap();
    // Give the PCRs distinct, non-zero values in both banks.
    for (i, byte) in [(0u8, "11"), (1, "22"), (4, "44"), (7, "77")] {
        let v1 = byte.repeat(20);
        let v256 = byte.repeat(32);
        tpm2::run(
            &tpm,
            "tpm2_pcrextend",
            &[&format!("{i}:sha1={v1},sha256={v256}")],
        )
        .unwrap();
    }
    tpm2::run(
        &tpm,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", key_alg, "-u", "ek.pub"],
    )
    .unwrap();
    tpm2::run(
        &tpm,
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", key_alg, "-g", hash, "-s", scheme, "-u",
            "ak.pub", "-n", "ak.name",
        ],
    )
    .unwrap();
    tpm2::run(
        &tpm,
        "tpm2_readpublic",
        &["-c", "ak.ctx", "-f", "pem", "-o", "ak.pem"],
    )
    .unwrap();
    Ak {
        tpm,
        scheme: scheme.to_string(),
        checkquote_agrees: scheme != "rsapss",
    }
}

/// Runs `tpm2_quote` and `tpm2_pcrread` for `selection`; files get `prefix`.
fn quote(ak: &Ak, prefix: &str, selection: &str, nonce: &str, hash: &str) {
    let m = format!("{prefix}.msg");
    let s = format!("{prefix}.sig");
    let o = format!("{prefix}.pcrs");
    let scheme = format!("--scheme={}", ak.scheme);
    tpm2::run(
        &ak.tpm,
        "tpm2_quote",
        &[
            "-c", "ak.ctx", "-l", selection, "-q", nonce, "-m", &m, "-s", &s, "-o", &o, "-g", hash,
            &scheme,
        ],
    )
    .unwrap();
    let out = tpm2::run(&ak.tpm, "tpm2_pcrread", &[selection]).unwrap();
    std::fs::write(ak.tpm.scratch().join(format!("{prefix}.yaml")), out.stdout).unwrap();
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ours(ak: &Ak, ak_file: &str, prefix: &str, nonce: Option<&str>) -> Outcome {
    let dir = ak.tpm.scratch();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodetrust"));
    cmd.args(["quote", "verify", "--ak"])
        .arg(dir.join(ak_file))
        .arg("--message")
        .arg(dir.join(format!("{prefix}.msg")))
        .arg("--signature")
        .arg(dir.join(format!("{prefix}.sig")))
        .arg("--pcrs")
        .arg(dir.join(format!("{prefix}.yaml")));
    if let Some(n) = nonce {
        cmd.args(["--nonce", n]);
    }
    let out = cmd.output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn checkquote(ak: &Ak, prefix: &str, nonce: &str, hash: &str) -> bool {
    let m = format!("{prefix}.msg");
    let s = format!("{prefix}.sig");
    let o = format!("{prefix}.pcrs");
    tpm2::try_run(
        &ak.tpm,
        "tpm2_checkquote",
        &[
            "-u", "ak.pub", "-m", &m, "-s", &s, "-f", &o, "-g", hash, "-q", nonce,
        ],
    )
    .unwrap()
    .status
    .success()
}

fn copy(ak: &Ak, from: &str, to: &str) {
    for ext in ["msg", "sig", "pcrs", "yaml"] {
        let d = ak.tpm.scratch();
        std::fs::copy(
            d.join(format!("{from}.{ext}")),
            d.join(format!("{to}.{ext}")),
        )
        .unwrap();
    }
}

fn flip(path: &Path, offset_from_end: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() - 1 - offset_from_end;
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

/// Flips one byte of `value` wherever it appears in `path` (binary), once.
fn flip_value(path: &Path, value: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    let pos = b
        .windows(value.len())
        .position(|w| w == value)
        .expect("value present");
    b[pos + 3] ^= 0x80;
    std::fs::write(path, b).unwrap();
}

fn assert_accepted(ak: &Ak, prefix: &str, nonce: &str, hash: &str) {
    let r = ours(ak, "ak.pub", prefix, Some(nonce));
    assert_eq!(
        r.code, 0,
        "ours rejected a genuine quote: {} {}",
        r.stdout, r.stderr
    );
    assert!(r.stdout.contains("quote: genuine"), "{}", r.stdout);
    let pem = ours(ak, "ak.pem", prefix, Some(nonce));
    assert_eq!(
        pem.code, 0,
        "ours rejected a genuine quote with a PEM AK: {}",
        pem.stderr
    );
    assert!(
        pem.stdout.contains("not checked"),
        "PEM output must say attributes were not checked"
    );
    if ak.checkquote_agrees {
        assert!(
            checkquote(ak, prefix, nonce, hash),
            "tpm2_checkquote rejected what we accepted"
        );
    }
}

fn assert_rejected(ak: &Ak, prefix: &str, nonce: &str, hash: &str, reason: &str) {
    let r = ours(ak, "ak.pub", prefix, Some(nonce));
    assert_eq!(
        r.code, 1,
        "expected rejection {reason}: stdout {} stderr {}",
        r.stdout, r.stderr
    );
    assert!(
        r.stderr.contains(&format!("({reason})")),
        "expected reason {reason}, got: {}",
        r.stderr
    );
    assert!(
        !checkquote(ak, prefix, nonce, hash),
        "tpm2_checkquote accepted what we rejected ({reason})"
    );
}

/// Reads one PCR value from the YAML of `prefix`.
fn yaml_value(ak: &Ak, prefix: &str, bank: &str, pcr: u8) -> Vec<u8> {
    let text = std::fs::read_to_string(ak.tpm.scratch().join(format!("{prefix}.yaml"))).unwrap();
    let pcrs = nodetrust_tpm_wire_values(&text);
    pcrs.get(&(bank.to_string(), pcr)).cloned().unwrap()
}

fn nodetrust_tpm_wire_values(text: &str) -> std::collections::HashMap<(String, u8), Vec<u8>> {
    let mut out = std::collections::HashMap::new();
    let mut bank = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(b) = t.strip_suffix(':') {
            bank = b.to_string();
        } else if let Some((i, v)) = t.split_once(" : 0x") {
            out.insert(
                (bank.clone(), i.trim().parse().unwrap()),
                hex::decode(v.trim()).unwrap(),
            );
        }
    }
    out
}

fn exercise(key_alg: &str, scheme: &str) {
    let ak = setup(key_alg, scheme, "sha256");
    let nonce = "5eed0123456789abcdef";
    for (prefix, selection, hash) in [
        ("q256", "sha256:0,1,4,7", "sha256"),
        ("q1", "sha1:0,1,4,7", "sha256"),
        ("qmix", "sha1:0,4+sha256:1,7", "sha256"),
    ] {
        quote(&ak, prefix, selection, nonce, hash);
        assert_accepted(&ak, prefix, nonce, hash);
    }

    // One flipped byte in the signed message (inside extraData, so the structure still parses).
    copy(&ak, "q256", "tmsg");
    flip(&ak.tpm.scratch().join("tmsg.msg"), 40);
    assert_rejected(&ak, "tmsg", nonce, "sha256", "bad_signature");

    // One flipped byte in the signature.
    copy(&ak, "q256", "tsig");
    flip(&ak.tpm.scratch().join("tsig.sig"), 5);
    assert_rejected(&ak, "tsig", nonce, "sha256", "bad_signature");

    // One flipped byte in a PCR value: in our YAML and in tpm2_checkquote's binary PCR file.
    copy(&ak, "q256", "tpcr");
    let v = yaml_value(&ak, "tpcr", "sha256", 4);
    let yaml_path = ak.tpm.scratch().join("tpcr.yaml");
    let text = std::fs::read_to_string(&yaml_path).unwrap().to_lowercase();
    let mut tampered = v.clone();
    tampered[3] ^= 0x80;
    std::fs::write(
        &yaml_path,
        text.replace(&hex::encode(&v), &hex::encode(&tampered)),
    )
    .unwrap();
    flip_value(&ak.tpm.scratch().join("tpcr.pcrs"), &v);
    assert_rejected(&ak, "tpcr", nonce, "sha256", "pcr_digest_mismatch");

    // A wrong nonce.
    assert_rejected(
        &ak,
        "q256",
        "5eed0123456789abcdee",
        "sha256",
        "nonce_mismatch",
    );

    // Another AK (same algorithm) signed the quote.
    tpm2::run(
        &ak.tpm,
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak2.ctx", "-G", key_alg, "-g", "sha256", "-s", scheme, "-u",
            "ak2.pub",
        ],
    )
    .unwrap();
    let scheme_arg = format!("--scheme={scheme}");
    tpm2::run(
        &ak.tpm,
        "tpm2_quote",
        &[
            "-c",
            "ak2.ctx",
            "-l",
            "sha256:0,1,4,7",
            "-q",
            nonce,
            "-m",
            "tother.msg",
            "-s",
            "tother.sig",
            "-o",
            "tother.pcrs",
            "-g",
            "sha256",
            &scheme_arg,
        ],
    )
    .unwrap();
    std::fs::copy(
        ak.tpm.scratch().join("q256.yaml"),
        ak.tpm.scratch().join("tother.yaml"),
    )
    .unwrap();
    assert_rejected(&ak, "tother", nonce, "sha256", "bad_signature");

    // Without --nonce the nonce is shown, not checked.
    let r = ours(&ak, "ak.pub", "q256", None);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains(nonce) && r.stdout.contains("not checked"),
        "{}",
        r.stdout
    );

    // A PCR missing from the supplied values is an error naming it.
    let yaml = ak.tpm.scratch().join("tmiss.yaml");
    copy(&ak, "q256", "tmiss");
    let text = std::fs::read_to_string(&yaml).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("7 :"))
        .collect();
    std::fs::write(&yaml, kept.join("\n")).unwrap();
    let r = ours(&ak, "ak.pub", "tmiss", Some(nonce));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("(missing_pcr)") && r.stderr.contains("PCR 7"),
        "{}",
        r.stderr
    );
}

#[test]
fn rsassa_matches_tpm2_checkquote() {
    exercise("rsa", "rsassa");
}

#[test]
fn rsapss_is_accepted_with_libtpms_salt_and_tampering_rejected() {
    exercise("rsa", "rsapss");
}

#[test]
fn ecdsa_matches_tpm2_checkquote() {
    exercise("ecc", "ecdsa");
}

#[test]
fn sha1_signing_hash_matches_tpm2_checkquote() {
    let ak = setup("rsa", "rsassa", "sha1");
    let nonce = "abcdef";
    quote(&ak, "q", "sha1:0,1,4,7", nonce, "sha1");
    assert_accepted(&ak, "q", nonce, "sha1");
    assert_rejected(&ak, "q", "abcdee", "sha1", "nonce_mismatch");
}

#[test]
fn unreadable_input_exits_2_and_garbage_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_nodetrust"))
        .args(["quote", "verify", "--ak"])
        .arg(d.join("nope"))
        .args(["--message", "x", "--signature", "y", "--pcrs", "z"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(d.join("ak"), b"\x00\x01garbage").unwrap();
    std::fs::write(d.join("m"), b"m").unwrap();
    std::fs::write(d.join("s"), b"s").unwrap();
    std::fs::write(
        d.join("p"),
        "sha256:\n  0 : 0x".to_string() + &"00".repeat(32),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodetrust"))
        .current_dir(d)
        .args([
            "quote",
            "verify",
            "--ak",
            "ak",
            "--message",
            "m",
            "--signature",
            "s",
            "--pcrs",
            "p",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(malformed_ak)"), "{err}");
}
