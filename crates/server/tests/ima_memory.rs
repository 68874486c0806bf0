//! What the incremental IMA appraisal costs the server per host, measured (docs/PERFORMANCE.md,
//! "IMA"): the stored state (one `ima_state` row), the state decoded in memory during an
//! attestation, and one agent answer of entries parsed.
//!
//! `size_of_the_stored_state_does_not_grow_with_the_log` runs with the tests; the measurement is
//! a benchmark: `cargo test -p nodetrust-server --release --test ima_memory -- --ignored
//! --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::print_stdout,
    reason = "test code: a panic is a failed test; the benchmark prints its figures"
)]

use std::collections::BTreeMap;

use nodetrust_appraise::runtime::{RuntimeAppraisal, RuntimePolicy};
use nodetrust_eventlog::ima::ImaLog;
use nodetrust_proto::agent::MAX_IMA_ENTRIES;
use nodetrust_testkit::ima::{fake_boot_pcrs, ImaLogBuilder};
use nodetrust_tpm_wire::{HashAlg, PcrValues};

/// A log of `boot_aggregate` and `n` files (1,000 distinct ones, run over and over), the
/// policy of the first `listed` distinct files, and the appraisal of the log under it, as the
/// server stores it (`{"flavors": {id: state}}`).
fn appraised(n: usize, listed: usize) -> (String, RuntimeAppraisal) {
    let boot = fake_boot_pcrs(&[HashAlg::Sha256]);
    let mut log = ImaLogBuilder::new();
    log.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    for i in 0..n {
        log.file(
            &format!("/usr/libexec/worker/task-{:04}", i % 1000),
            format!("task {}", i % 1000).as_bytes(),
        );
    }
    let mut policy = RuntimePolicy::new();
    let take = (listed + 1).min(log.len());
    policy.learn(&log.entries()[1..take]).unwrap();
    let compiled = policy.compile().unwrap();
    let mut quoted: PcrValues = boot;
    for b in [HashAlg::Sha1, HashAlg::Sha256] {
        quoted.insert(b, 10, log.pcr10(b)).unwrap();
    }
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&compiled, 0, log.entries(), &quoted);
    assert!(out.problem.is_none(), "{out:?}");
    let stored = serde_json::json!({"flavors": {"0123456789abcdef0123456789abcdef": state}});
    (stored.to_string(), state)
}

#[test]
fn size_of_the_stored_state_does_not_grow_with_the_log() {
    let (small, s) = appraised(100, 1000);
    assert_eq!(s.entries(), 101);
    assert_eq!(s.failures_total(), 0);
    let (large, s) = appraised(20_000, 1000);
    assert_eq!(s.entries(), 20_001);
    // The same size but for the digits of the counts.
    assert!(
        large.len() <= small.len() + 8,
        "{} vs {}",
        large.len(),
        small.len()
    );
    assert!(large.len() < 1024, "{large}");
    // Failures: at most 20 listed, the rest counted.
    let (failing, s) = appraised(20_000, 100);
    assert_eq!(s.failures().len(), 20);
    assert_eq!(s.failures_total(), 18_000);
    assert!(failing.len() < 8 * 1024, "{}", failing.len());
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[ignore = "benchmark: cargo test -p nodetrust-server --release --test ima_memory -- --ignored --nocapture"]
fn memory_per_host() {
    const HOSTS: usize = 20_000;
    // One agent answer: the most entries the server holds at once for one attestation
    // (measured first, before freed memory could be reused).
    let mut log = ImaLogBuilder::new();
    for i in 0..MAX_IMA_ENTRIES as usize {
        log.file(&format!("/usr/lib/x86_64-linux-gnu/lib{i:05}.so.1"), b"x");
    }
    let bytes = log.binary();
    let before = rss();
    let parsed = ImaLog::parse_binary(&bytes).unwrap();
    let after = rss();
    println!(
        "one answer of {} entries: {} bytes on the wire (before base64), {} bytes parsed ({} per entry)",
        parsed.entries.len(),
        bytes.len(),
        after.saturating_sub(before),
        after.saturating_sub(before) / parsed.entries.len() as u64
    );
    drop((log, parsed));
    for (what, listed) in [
        ("trusted host", 1000),
        ("host with 18,000 failing entries (20 listed)", 100),
    ] {
        let (json, _) = appraised(20_000, listed);
        let before = rss();
        let held: Vec<BTreeMap<String, BTreeMap<String, RuntimeAppraisal>>> = (0..HOSTS)
            .map(|_| serde_json::from_str(&json).unwrap())
            .collect();
        let after = rss();
        println!(
            "{what}: stored row state {} bytes; decoded in memory {} bytes per host ({} hosts held)",
            json.len(),
            (after.saturating_sub(before)) / HOSTS as u64,
            held.len()
        );
        drop(held);
    }
}
