//! `nodetrust bench appraisal`: measures genuine evidence, and refuses to measure a failing path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::process::Command;

use nodetrust_testkit::{tpm2, Swtpm};

fn bench(tpm: &Swtpm, nonce: &str) -> std::process::Output {
    let d = tpm.scratch();
    Command::new(env!("CARGO_BIN_EXE_nodetrust"))
        .current_dir(d)
        .args([
            "bench",
            "appraisal",
            "--ak",
            "ak.pub",
            "--message",
            "q.msg",
            "--signature",
            "q.sig",
            "--pcrs",
            "p.yaml",
        ])
        .args(["--nonce", nonce, "--seconds", "0.3"])
        .output()
        .unwrap()
}

#[test]
fn bench_appraisal_prints_a_rate_and_fails_on_bad_evidence() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(
        &tpm,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"],
    )
    .unwrap();
    tpm2::run(
        &tpm,
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.pub",
        ],
    )
    .unwrap();
    tpm2::run(
        &tpm,
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,1,2,3,4,5,6,7",
            "-q",
            "aa55",
            "-m",
            "q.msg",
            "-s",
            "q.sig",
            "-g",
            "sha256",
        ],
    )
    .unwrap();
    let out = tpm2::run(&tpm, "tpm2_pcrread", &["sha256:0,1,2,3,4,5,6,7"]).unwrap();
    std::fs::write(tpm.scratch().join("p.yaml"), out.stdout).unwrap();

    let ok = bench(&tpm, "aa55");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let last = stdout.lines().last().unwrap();
    let rate: f64 = last
        .strip_prefix("appraisals/s: ")
        .expect("last line is the rate")
        .parse()
        .unwrap();
    assert!(rate > 0.0);

    let bad = bench(&tpm, "aa56");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("(nonce_mismatch)"));
    assert!(!String::from_utf8_lossy(&bad.stdout).contains("appraisals/s"));
}
