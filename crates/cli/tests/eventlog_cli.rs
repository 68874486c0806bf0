//! `nodetrust eventlog`, `nodetrust ima` and `nodetrust bench eventlog` as an operator runs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use nodetrust_tpm_wire::{HashAlg, PcrValues};

fn fixture(name: &str) -> PathBuf {
    nodetrust_testkit::fixtures_dir()
        .join("eventlogs")
        .join(name)
}

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

#[test]
fn replay_prints_what_tpm2_eventlog_prints_and_checks_pcrs() {
    let gce = fixture("event-gce-ubuntu-2104-log.bin");
    let gce = gce.to_str().unwrap();
    let json = run(&["eventlog", "replay", gce, "--format", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", show(&json));
    let ours = PcrValues::from_json_value(&serde_json::from_slice(&json.stdout).unwrap()).unwrap();
    let oracle = Command::new("tpm2_eventlog").arg(gce).output().unwrap();
    let text = String::from_utf8(oracle.stdout).unwrap();
    let want = PcrValues::parse(text.split_once("\npcrs:\n").unwrap().1).unwrap();
    assert_eq!(ours, want);
    assert_eq!(ours.banks().count(), 3);

    // Text output is tpm2_pcrread YAML: it can be given back as --pcrs.
    let dir = tempfile::tempdir().unwrap();
    let yaml = run(&["eventlog", "replay", gce]);
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, &yaml.stdout).unwrap();
    assert_eq!(
        PcrValues::parse(&String::from_utf8_lossy(&yaml.stdout)).unwrap(),
        want
    );
    let ok = run(&["eventlog", "replay", gce, "--pcrs", good.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));

    // Two wrong values: both named, and nothing else.
    let mut v = ours.to_json();
    v["sha256"]["4"] = serde_json::Value::String("00".repeat(32));
    v["sha1"]["14"] = serde_json::Value::String("11".repeat(20));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let r = run(&["eventlog", "replay", gce, "--pcrs", bad.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1), "{}", show(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("(eventlog_mismatch)"), "{err}");
    assert!(
        err.contains("sha256:4 replays to") && err.contains("sha1:14 replays to"),
        "{err}"
    );
    assert_eq!(err.matches("replays to").count(), 2, "{err}");
}

#[test]
fn show_lists_named_events_and_rejects_corrupt_logs() {
    let gce = fixture("event-gce-ubuntu-2104-log.bin");
    let o = run(&[
        "eventlog",
        "show",
        gce.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "crypto-agile");
    assert_eq!(v["banks"], serde_json::json!(["sha1", "sha256", "sha384"]));
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 112);
    assert!(events.iter().any(|e| e["component"]["text"]
        == "boot application \\EFI\\ubuntu\\grubx64.efi (grub)"
        && e["pcr"] == 4));
    assert!(events.iter().all(|e| e["digests"].as_object().is_some()));
    let text = run(&[
        "eventlog",
        "show",
        fixture("event-arch-linux.bin").to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains(
            "event 24 (PCR 8, EV_IPL): the sha256 digest is not the hash of the event data"
        ),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&gce).unwrap();
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &bytes[..1000]).unwrap();
    for cmd in [
        vec!["eventlog", "show"],
        vec!["eventlog", "replay"],
        vec!["bench", "eventlog"],
    ] {
        let mut args = cmd.clone();
        args.push(cut.to_str().unwrap());
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("(malformed_eventlog)") && err.contains("at byte offset"),
            "{cmd:?}: {err}"
        );
    }
    let missing = run(&["eventlog", "show", "/nonexistent/log.bin"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn diff_of_identical_logs_is_clean() {
    let a = fixture("event-moklisttrusted.bin");
    let o = run(&["eventlog", "diff", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let b = fixture("event-postcode.bin");
    let o = run(&[
        "eventlog",
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["same"], false);
    assert!(v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["statement"].as_str().unwrap().starts_with("PCR 4: ")));
}

#[test]
fn ima_replay_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ascii_runtime_measurements");
    let line = "10 cff3da2ff339a1f07bb0dbcbc0381e794ed09555 ima-ng sha256:3e5e8ad9d8b4dd191413aba6166c7a975c3eab903d1fad77ecfa2d5810d6585c /usr/bin/kmod\n";
    std::fs::write(&log, line).unwrap();
    let o = run(&["ima", "replay", log.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let th = hex::decode("cff3da2ff339a1f07bb0dbcbc0381e794ed09555").unwrap();
    assert_eq!(
        v["sha1"]["10"],
        hex::encode(HashAlg::Sha1.extend(&[0; 20], &th))
    );
    assert!(v["sha256"]["10"].is_string());
    std::fs::write(&log, line.replace("kmod", "kmodx")).unwrap();
    let o = run(&["ima", "replay", log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("entry 0 (/usr/bin/kmodx)"),
        "{}",
        show(&o)
    );

    let b = run(&[
        "bench",
        "eventlog",
        fixture("event-gce-ubuntu-2104-log.bin").to_str().unwrap(),
        "--seconds",
        "0.2",
    ]);
    assert_eq!(b.status.code(), Some(0), "{}", show(&b));
    let out = String::from_utf8_lossy(&b.stdout);
    let last = out.lines().last().unwrap();
    let rate: f64 = last.strip_prefix("replays/s: ").unwrap().parse().unwrap();
    assert!(rate > 0.0);
}

#[test]
fn help_explains_each_command() {
    for (args, needle) in [
        (vec!["eventlog", "show", "--help"], "crypto-agile"),
        (vec!["eventlog", "replay", "--help"], "--pcrs"),
        (vec!["eventlog", "diff", "--help"], "gold"),
        (vec!["ima", "replay", "--help"], "ima-sig"),
        (vec!["bench", "eventlog", "--help"], "replays/s"),
        (vec!["quote", "verify", "--help"], "--eventlog"),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(needle),
            "{args:?}"
        );
    }
}
