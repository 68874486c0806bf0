//! Every real log in the fixtures parses, and replays to exactly the PCR values that
//! `tpm2_eventlog` (tpm2-tools, the reference implementation) prints for it, bank by bank.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use std::path::PathBuf;
use std::process::Command;

use nodetrust_eventlog::{EventLog, LogFormat, Replay};
use nodetrust_tpm_wire::PcrValues;

fn fixtures() -> Vec<PathBuf> {
    let dir = nodetrust_testkit::fixtures_dir().join("eventlogs");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixtures {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    out.sort();
    assert!(
        out.len() >= 12,
        "expected the 12 real logs, found {}",
        out.len()
    );
    out
}

/// Runs `tpm2_eventlog FILE` and reads its `pcrs:` section.
fn oracle(path: &PathBuf) -> (PcrValues, String) {
    let out = Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .expect("tpm2_eventlog must be installed (apt-get install tpm2-tools)");
    assert!(
        out.status.success(),
        "tpm2_eventlog failed on {}",
        path.display()
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, pcrs) = text.split_once("\npcrs:\n").expect("a pcrs: section");
    let values = if pcrs.trim().is_empty() {
        PcrValues::new()
    } else {
        PcrValues::parse(pcrs).unwrap()
    };
    (values, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_fixture_replays_like_tpm2_eventlog() {
    let mut compared = 0;
    for path in fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let log = EventLog::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let replay = Replay::run(&log);
        let (want, _) = oracle(&path);
        let got = replay.values();
        for (alg, pcr, v) in want.iter() {
            assert_eq!(
                got.get(alg, pcr).map(hex::encode),
                Some(hex::encode(v)),
                "{}: {alg}:{pcr}",
                path.display()
            );
            compared += 1;
        }
        assert_eq!(got, want, "{}: same PCR set and values", path.display());
        assert!(replay.unsupported().is_empty());
    }
    assert!(compared > 100, "only {compared} PCR values compared");
}

#[test]
fn event_counts_match_tpm2_eventlog() {
    for path in fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let out = Command::new("tpm2_eventlog").arg(&path).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let pcr_lines = text
            .lines()
            .filter(|l| l.trim_start().starts_with("PCRIndex:"))
            .count();
        // In the SHA-1 format tpm2_eventlog lists every event; in the crypto-agile format too
        // (the Spec ID structure is its event 0, as it is ours).
        assert_eq!(log.events.len(), pcr_lines, "{}", path.display());
        assert_eq!(log.trailing_padding, 0, "{}", path.display());
        let expect_sha1 = path.file_name().unwrap().to_str().unwrap().contains("sha1");
        assert_eq!(
            log.format == LogFormat::Sha1,
            expect_sha1,
            "{}",
            path.display()
        );
    }
}

/// Our integrity findings name the same events as `tpm2_eventlog`'s warnings.
#[test]
fn integrity_findings_match_tpm2_eventlog_warnings() {
    let mut flagged = 0;
    for path in fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let mut ours: Vec<usize> = nodetrust_eventlog::integrity::check(&log)
            .iter()
            .map(|f| f.event)
            .collect();
        ours.dedup();
        let (_, stderr) = oracle(&path);
        let theirs: Vec<usize> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("WARN: Event "))
            .filter_map(|l| l.split(['\'', ' ']).next())
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(ours, theirs, "{}", path.display());
        flagged += ours.len();
    }
    assert_eq!(flagged, 1, "event 24 of event-arch-linux.bin");
}
