//! Benchmark (ignored; run it in release): IMA entries appraised per second on one core against
//! a 50,000-line runtime policy, `nodetrust bench ima` beside Keylime's
//! `process_measurement_list` on the same log and policy.
//!
//! ```text
//! cargo test --release -p nodetrust-cli --test bench_ima -- --ignored --nocapture
//! NODETRUST_BENCH_SECONDS=10 NODETRUST_BENCH_ENTRIES=200000 cargo test --release ...
//! ```
//! The files are left in `target/ima-bench/` (log.ascii, log.bin, policy.json,
//! keylime-policy.json) to rerun `nodetrust bench ima` by hand.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "benchmark code: a panic is a failed run"
)]

use std::process::Command;

use nodetrust_appraise::runtime::RuntimePolicy;
use nodetrust_testkit::ima::{fake_boot_pcrs, ImaLogBuilder};
use nodetrust_testkit::keylime::Keylime;
use nodetrust_tpm_wire::HashAlg;
use serde_json::json;

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn ima_appraisal_rate_against_keylime() {
    let seconds = env("NODETRUST_BENCH_SECONDS", 5.0);
    let entries = env("NODETRUST_BENCH_ENTRIES", 50_000.0) as usize;
    const POLICY_LINES: usize = 50_000;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ima-bench");
    std::fs::create_dir_all(&dir).unwrap();

    // A boot: boot_aggregate, then `entries` measurements of the policy's 50,000 files
    // (paths and sizes like a distribution's /usr).
    let boot = fake_boot_pcrs(&[HashAlg::Sha1, HashAlg::Sha256]);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    let path = |i: usize| match i % 4 {
        0 => format!("/usr/bin/tool-{i}"),
        1 => format!("/usr/lib/x86_64-linux-gnu/libexample{i}.so.{}", i % 9),
        2 => format!(
            "/usr/lib/python3.11/site-packages/pkg{}/module_{i}.py",
            i % 300
        ),
        _ => format!("/usr/libexec/component/{}/helper-{i}", i % 50),
    };
    for i in 0..entries {
        let f = i % POLICY_LINES;
        b.file(&path(f), format!("contents of file {f}").as_bytes());
    }
    let mut policy = RuntimePolicy::new();
    for f in 0..POLICY_LINES {
        policy
            .add_digest(
                &path(f),
                nodetrust_appraise::runtime::FileDigest::of(
                    HashAlg::Sha256,
                    format!("contents of file {f}").as_bytes(),
                ),
            )
            .unwrap();
    }
    policy.add_exclude("/tmp/*").unwrap();
    policy.add_exclude("/var/log/*").unwrap();
    assert_eq!(policy.digests.len(), POLICY_LINES);
    let ascii = b.ascii();
    std::fs::write(dir.join("log.ascii"), &ascii).unwrap();
    std::fs::write(dir.join("log.bin"), b.binary()).unwrap();
    std::fs::write(dir.join("policy.json"), policy.to_json()).unwrap();
    let mut digests: serde_json::Map<String, serde_json::Value> = policy
        .digests
        .iter()
        .map(|(p, ds)| (p.clone(), json!([hex::encode(&ds[0].digest)])))
        .collect();
    // Keylime checks boot_aggregate as an allowlist line (its verifier adds the value computed
    // from the quote); `nodetrust bench ima` does not check it.
    digests.insert(
        "boot_aggregate".to_string(),
        json!([hex::encode(&b.entries()[0].file_digest)]),
    );
    let kl_policy = json!({
        "meta": {"version": 1, "generator": 0},
        "release": 0,
        "digests": digests,
        "excludes": ["^/tmp/.*$", "^/var/log/.*$"],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    });
    std::fs::write(dir.join("keylime-policy.json"), kl_policy.to_string()).unwrap();

    let mut ours = Vec::new();
    for (name, file) in [("ascii", "log.ascii"), ("binary", "log.bin")] {
        for bank in ["sha256", "sha1"] {
            let o = Command::new(env!("CARGO_BIN_EXE_nodetrust"))
                .args(["bench", "ima"])
                .arg(dir.join(file))
                .arg("--policy")
                .arg(dir.join("policy.json"))
                .args(["--bank", bank, "--seconds", &seconds.to_string()])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success(),
                "{out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(out.contains("(0 not allowed by the policy)"), "{out}");
            println!("nodetrust bench ima ({name} log, {bank} bank):\n{out}");
            let rate: f64 = out
                .lines()
                .last()
                .unwrap()
                .strip_prefix("entries/s: ")
                .unwrap()
                .parse()
                .unwrap();
            ours.push((name, bank, rate));
        }
    }

    let Some(kl) = Keylime::get().unwrap() else {
        return;
    };
    for bank in ["sha256", "sha1"] {
        let answer = kl
            .call(&json!({
                "mode": "bench",
                "log": ascii,
                "policy": kl_policy,
                "bank": bank,
                "pcr10": hex::encode(b.pcr10(HashAlg::from_name(bank).unwrap())),
                "seconds": seconds,
            }))
            .unwrap();
        assert_eq!(
            answer["ok"], true,
            "Keylime did not allow the log: {answer}"
        );
        let theirs = answer["entries_per_second"].as_f64().unwrap();
        let ours_ascii = ours
            .iter()
            .find(|(n, b, _)| *n == "ascii" && *b == bank)
            .unwrap()
            .2;
        println!(
            "Keylime process_measurement_list ({bank} bank, ascii log): {theirs:.0} entries/s \
             ({} passes in {:.1} s); nodetrust ascii: {ours_ascii:.0} entries/s = {:.1}x",
            answer["passes"],
            answer["seconds"].as_f64().unwrap(),
            ours_ascii / theirs
        );
    }
}
