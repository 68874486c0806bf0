//! `nodetrust policy create runtime | show | diff`, `nodetrust ima appraise` and
//! `nodetrust bench ima` as an operator runs them, on logs from the testkit's IMA generator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use std::path::Path;
use std::process::{Command, Output};

use nodetrust_testkit::ima::{fake_boot_pcrs, ImaLogBuilder, TestKeyKind, TestSigningKey};
use nodetrust_tpm_wire::HashAlg;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodetrust"))
        .args(args)
        .output()
        .unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn gold() -> ImaLogBuilder {
    let boot = fake_boot_pcrs(&[HashAlg::Sha256]);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    b.file("/usr/bin/bash", b"bash");
    b.file("/usr/lib/libc.so.6", b"libc");
    b.file_ima("/sbin/init", b"init");
    b
}

#[test]
fn a_policy_learned_from_a_gold_log_allows_that_log_and_names_a_stranger() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut b = gold();
    let gold_log = write(d, "gold.ascii", b.ascii());
    let policy = d.join("runtime.json");
    let policy = policy.to_str().unwrap();
    let o = run(&[
        "policy",
        "create",
        "runtime",
        "--from-ima-log",
        &gold_log,
        "--exclude",
        "/tmp/*",
        "-o",
        policy,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains("3 paths, 3 digests, 1 excludes, 0 signing keys"));

    // The gold log itself, ascii and binary.
    let o = run(&["ima", "appraise", &gold_log, "--policy", policy]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains("3 allowed by digest"), "{}", show(&o));
    let bin = write(d, "gold.bin", b.binary());
    let o = run(&["ima", "appraise", &bin, "--policy", policy]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    // A host that also ran curl and something under /tmp.
    let curl = hex::encode(b.file("/usr/bin/curl", b"curl").file_digest.clone());
    b.file("/tmp/x", b"scratch");
    b.file("/usr/bin/wget", b"wget");
    let host = write(d, "host.bin", b.binary());
    let o = run(&["ima", "appraise", &host, "--policy", policy]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "RUNTIME: /usr/bin/curl: sha256:{curl} not in policy"
        )),
        "{out}"
    );
    assert!(out.contains("RUNTIME: /usr/bin/wget: sha256:"), "{out}");
    assert!(!out.contains("/tmp/x:"), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 of 7 entries not allowed"));

    let o = run(&[
        "ima", "appraise", &host, "--policy", policy, "--format", "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["failures_total"], 2);
    assert_eq!(v["failures"][0]["path"], "/usr/bin/curl");
    assert_eq!(v["failures"][0]["reason"], "not_in_policy");
    assert_eq!(v["allowed_by"]["excluded"], 1);
}

#[test]
fn every_failing_path_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = gold();
    let policy = dir.path().join("p.json");
    let gold_log = write(dir.path(), "gold", b.binary());
    let o = run(&[
        "policy",
        "create",
        "runtime",
        "--from-ima-log",
        &gold_log,
        "-o",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    for i in 0..50 {
        b.file(&format!("/opt/new/{i}"), format!("{i}").as_bytes());
    }
    let log = write(dir.path(), "host", b.ascii());
    let o = run(&[
        "ima",
        "appraise",
        &log,
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    for i in 0..50 {
        assert!(out.contains(&format!("RUNTIME: /opt/new/{i}: ")), "{i}");
    }
}

#[test]
fn unreadable_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b = gold();
    let log = write(d, "log", b.ascii());
    let policy = d.join("p.json");
    let policy = policy.to_str().unwrap();
    run(&[
        "policy",
        "create",
        "runtime",
        "--from-ima-log",
        &log,
        "-o",
        policy,
    ]);
    let missing = d.join("missing").to_str().unwrap().to_string();
    let garbage = write(d, "garbage", [0xffu8, 1, 2, 3, 4, 5]);
    let bad_policy = write(
        d,
        "bad.json",
        r#"{"version": 1, "digests": {"/a": ["md5:zz"]}}"#,
    );
    for args in [
        vec!["ima", "appraise", &missing, "--policy", policy],
        vec!["ima", "appraise", &garbage, "--policy", policy],
        vec!["ima", "appraise", &log, "--policy", &missing],
        vec!["ima", "appraise", &log, "--policy", &bad_policy],
        vec!["ima", "appraise", &log, "--policy", &garbage],
        vec!["policy", "show", &bad_policy],
        vec![
            "policy",
            "create",
            "runtime",
            "--from-ima-log",
            &garbage,
            "-o",
            policy,
        ],
        vec![
            "policy",
            "create",
            "runtime",
            "--from-keylime",
            &garbage,
            "-o",
            policy,
        ],
        vec!["policy", "create", "runtime", "-o", policy],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
    }
}

#[test]
fn quoted_pcrs_bind_the_log_and_the_boot_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b = gold();
    let log = write(d, "log", b.binary());
    let policy = d.join("p.json");
    let policy = policy.to_str().unwrap();
    run(&[
        "policy",
        "create",
        "runtime",
        "--from-ima-log",
        &log,
        "-o",
        policy,
    ]);
    let mut q = fake_boot_pcrs(&[HashAlg::Sha256]);
    q.insert(HashAlg::Sha256, 10, b.pcr10(HashAlg::Sha256))
        .unwrap();
    let pcrs = write(d, "pcrs.json", q.to_json().to_string());
    let o = run(&["ima", "appraise", &log, "--policy", policy, "--pcrs", &pcrs]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains("1 boot_aggregate"), "{}", show(&o));

    // Another PCR 10: the log does not replay.
    let mut wrong = q.clone();
    wrong.insert(HashAlg::Sha256, 10, vec![1; 32]).unwrap();
    let wrong = write(d, "wrong.json", wrong.to_json().to_string());
    let o = run(&[
        "ima", "appraise", &log, "--policy", policy, "--pcrs", &wrong,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stdout(&o).contains("does not replay to the quoted PCR 10"));

    // Another boot's PCR 0.
    let mut other = q.clone();
    other.insert(HashAlg::Sha256, 0, vec![2; 32]).unwrap();
    let other = write(d, "other.json", other.to_json().to_string());
    let o = run(&[
        "ima", "appraise", &log, "--policy", policy, "--pcrs", &other,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stdout(&o).contains("RUNTIME: boot_aggregate: sha256:"));
}

#[test]
fn a_policy_from_a_file_tree_with_signing_keys_and_excludes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("var/log")).unwrap();
    std::fs::write(root.join("usr/bin/bash"), b"bash").unwrap();
    std::fs::write(root.join("usr/bin/ls"), b"ls").unwrap();
    std::fs::write(root.join("var/log/messages"), b"log").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("bash", root.join("usr/bin/sh")).unwrap();
    let key = TestSigningKey::generate(TestKeyKind::Rsa2048).unwrap();
    let cert = write(d, "vendor.crt", key.certificate_pem().unwrap());
    let policy = d.join("p.json");
    let policy = policy.to_str().unwrap();
    let o = run(&[
        "policy",
        "create",
        "runtime",
        "--from-dir",
        root.to_str().unwrap(),
        "--exclude",
        "/var/log/*",
        "--signing-key",
        &cert,
        "--alg",
        "sha256",
        "--alg",
        "sha1",
        "-o",
        policy,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("2 paths, 4 digests, 1 excludes, 1 signing keys"),
        "{}",
        show(&o)
    );
    let shown = run(&["policy", "show", policy, "--digests"]);
    assert_eq!(shown.status.code(), Some(0), "{}", show(&shown));
    let text = stdout(&shown);
    assert!(
        text.contains(&format!("key 0x{:08x} RSA 2048 (vendor.crt)", key.key_id())),
        "{text}"
    );
    assert!(text.contains("glob  /var/log/*"), "{text}");
    assert!(
        text.contains("allowlist: 2 paths, 4 digests (sha1: 2, sha256: 2)"),
        "{text}"
    );
    assert!(text.contains("  /usr/bin/ls sha256:"), "{text}");

    let boot = fake_boot_pcrs(&[HashAlg::Sha256]);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    b.file("/usr/bin/bash", b"bash");
    b.file_alg("/usr/bin/ls", HashAlg::Sha1, b"ls");
    b.file("/var/log/messages", b"changed every minute");
    b.signed_file("/opt/vendor/agent", HashAlg::Sha256, b"agent", &key)
        .unwrap();
    let log = write(d, "log", b.ascii());
    let o = run(&["ima", "appraise", &log, "--policy", policy]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("2 allowed by digest, 1 excluded, 1 by signature"),
        "{}",
        show(&o)
    );
}

#[test]
fn keylime_policies_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kl = serde_json::json!({
        "meta": {"version": 1, "generator": 1},
        "release": 0,
        "digests": {"/usr/bin/bash": [hex::encode(HashAlg::Sha256.digest(b"bash"))]},
        "excludes": ["/tmp/.*", "/(proc|sys)/"],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    });
    let kl = write(d, "keylime.json", kl.to_string());
    let a = d.join("a.json");
    let a = a.to_str().unwrap();
    let o = run(&[
        "policy",
        "create",
        "runtime",
        "--from-keylime",
        &kl,
        "-o",
        a,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = stdout(&run(&["policy", "show", a]));
    assert!(text.contains("glob  /tmp/*"), "{text}");
    assert!(text.contains("regex /(proc|sys)/"), "{text}");

    let b = d.join("b.json");
    let b = b.to_str().unwrap();
    let o = run(&[
        "policy",
        "create",
        "runtime",
        "--from-keylime",
        &kl,
        "--exclude",
        "/var/log/*",
        "--allow-violations",
        "-o",
        b,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = run(&["policy", "diff", a, b]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        stdout(&o),
        "~ violations: fail -> allow\n+ exclude glob /var/log/*\n"
    );
    let o = run(&["policy", "diff", a, a]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(stdout(&o), "the policies allow the same\n");
}

#[test]
fn bench_ima_ends_with_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let b = gold();
    let log = write(dir.path(), "log", b.ascii());
    let policy = dir.path().join("p.json");
    let policy = policy.to_str().unwrap();
    run(&[
        "policy",
        "create",
        "runtime",
        "--from-ima-log",
        &log,
        "-o",
        policy,
    ]);
    let o = run(&[
        "bench",
        "ima",
        &log,
        "--policy",
        policy,
        "--seconds",
        "0.05",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    let last = out.lines().last().unwrap();
    let rate: f64 = last.strip_prefix("entries/s: ").unwrap().parse().unwrap();
    assert!(rate > 0.0);
    assert!(out.contains("policy: 3 paths, 3 digests"), "{out}");
}
