//! `RuntimeAppraisal::appraise_log` (entries read in place from the log's bytes) gives exactly
//! the outcome and state of parsing the log and calling `appraise`: for ascii and binary logs,
//! each bank set, quotes that cover all or part of the log, logs appraised in two calls,
//! failing, excluded, violation, unsigned `ima-sig` and `ima` entries, and edited bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_appraise::runtime::{
    BootAggregateRule, RuntimeAppraisal, RuntimePolicy, ViolationRule,
};
use nodetrust_eventlog::ima::{BankRule, ImaLog, ImaReplay};
use nodetrust_testkit::ima::{fake_boot_pcrs, ImaLogBuilder};
use nodetrust_tpm_wire::{HashAlg, PcrValues};
use proptest::prelude::*;

/// Both ways on the same bytes; the outcomes (or errors) and the states must be equal.
fn both(
    state: &RuntimeAppraisal,
    policy: &nodetrust_appraise::runtime::CompiledPolicy,
    first: u64,
    bytes: &[u8],
    q: &PcrValues,
) -> (RuntimeAppraisal, bool) {
    let mut slow = state.clone();
    let slow_out = ImaLog::parse(bytes).map(|l| slow.appraise(policy, first, &l.entries, q));
    let mut fast = state.clone();
    let fast_out = fast.appraise_log(policy, first, bytes, q);
    assert_eq!(fast_out, slow_out);
    assert_eq!(fast, slow);
    (fast, slow_out.is_ok_and(|o| o.is_trusted()))
}

fn quote_prefix(boot: &PcrValues, b: &ImaLogBuilder, n: usize, banks: &[HashAlg]) -> PcrValues {
    let mut r = ImaReplay::new(banks, BankRule::Recompute);
    r.extend(&b.entries()[..n]).unwrap();
    let mut q = PcrValues::new();
    for (bank, i, v) in boot.iter() {
        q.insert(bank, i, v.to_vec()).unwrap();
    }
    for &bank in banks {
        let v = r
            .value(bank, 10)
            .map_or_else(|| vec![0; bank.size()], <[u8]>::to_vec);
        q.insert(bank, 10, v).unwrap();
    }
    q
}

fn quote(boot: &PcrValues, b: &ImaLogBuilder, banks: &[HashAlg]) -> PcrValues {
    let mut q = PcrValues::new();
    for (bank, i, v) in boot.iter() {
        q.insert(bank, i, v.to_vec()).unwrap();
    }
    for &bank in banks {
        q.insert(bank, 10, b.pcr10(bank)).unwrap();
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn in_place_is_parse_then_appraise(
        kinds in proptest::collection::vec(0u8..8, 1..40),
        binary in any::<bool>(),
        banks in 0u8..3,
        quoted_upto in 0usize..45,
        split in 0usize..45,
        edit in proptest::option::of((any::<usize>(), any::<u8>())),
        require_boot in any::<bool>(),
        allow_violations in any::<bool>(),
    ) {
        let banks: &[HashAlg] = match banks {
            0 => &[HashAlg::Sha1],
            1 => &[HashAlg::Sha256],
            _ => &[HashAlg::Sha1, HashAlg::Sha256],
        };
        let boot = fake_boot_pcrs(&[HashAlg::Sha1, HashAlg::Sha256]);
        let mut b = ImaLogBuilder::new();
        b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
        let mut p = RuntimePolicy::new();
        p.add_exclude("/tmp/*").unwrap();
        for (i, k) in kinds.iter().enumerate() {
            let path = format!("/usr/bin/f{i} with space");
            match k {
                0..=2 => {
                    let e = b.file(&path, format!("{i}").as_bytes()).clone();
                    p.add_digest(&e.path, nodetrust_appraise::runtime::FileDigest::of(HashAlg::Sha256, format!("{i}").as_bytes())).unwrap();
                }
                3 => { b.file(&format!("/unknown/{i}"), b"?"); }
                4 => { b.file(&format!("/tmp/x{i}"), b"t"); }
                5 => { b.violation(&format!("/var/db{i}")); }
                6 => {
                    b.sig_file(&path, HashAlg::Sha256, format!("{i}").as_bytes(), Vec::new());
                    p.add_digest(&path, nodetrust_appraise::runtime::FileDigest::of(HashAlg::Sha256, format!("{i}").as_bytes())).unwrap();
                }
                _ => { b.file_ima(&path, b"old"); }
            }
        }
        p.boot_aggregate = if require_boot { BootAggregateRule::Require } else { BootAggregateRule::Ignore };
        p.violations = if allow_violations { ViolationRule::Allow } else { ViolationRule::Fail };
        let policy = p.compile().unwrap();

        // A quote taken after `quoted_upto` entries; the log sent has them all.
        let upto = quoted_upto.min(b.len());
        let q = quote_prefix(&boot, &b, upto, banks);
        let mut bytes = if binary { b.binary() } else { b.ascii().into_bytes() };
        if let Some((at, v)) = edit {
            if !bytes.is_empty() {
                let n = bytes.len();
                bytes[at % n] = v;
            }
        }
        let (after, _) = both(&RuntimeAppraisal::new(), &policy, 0, &bytes, &q);

        // The rest in a second call, from where the first stopped, against the final quote.
        let split = split.min(b.len());
        let first = RuntimeAppraisal::new();
        let (first, _) = both(&first, &policy, 0, &if binary { b_prefix_binary(&b, split) } else { b_prefix_ascii(&b, split) }, &q);
        let rest = if binary { b.binary_from(first.entries() as usize) } else { b.ascii_from(first.entries() as usize).into_bytes() };
        let q_end = quote(&boot, &b, banks);
        both(&first, &policy, first.entries(), &rest, &q_end);
        both(&after, &policy, after.entries(), &rest, &q_end);
    }
}

fn b_prefix_binary(b: &ImaLogBuilder, n: usize) -> Vec<u8> {
    let all = b.binary();
    let rest = b.binary_from(n);
    all[..all.len() - rest.len()].to_vec()
}

fn b_prefix_ascii(b: &ImaLogBuilder, n: usize) -> Vec<u8> {
    let all = b.ascii();
    let rest = b.ascii_from(n);
    all.as_bytes()[..all.len() - rest.len()].to_vec()
}

#[test]
fn a_trusted_log_is_appraised_in_place_in_both_forms() {
    let boot = fake_boot_pcrs(&[HashAlg::Sha1, HashAlg::Sha256]);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    for i in 0..50 {
        b.file(&format!("/usr/lib/l{i}.so"), &[i as u8]);
    }
    let mut p = RuntimePolicy::new();
    p.learn(b.entries()).unwrap();
    let policy = p.compile().unwrap();
    for banks in [
        &[HashAlg::Sha1][..],
        &[HashAlg::Sha256],
        &[HashAlg::Sha1, HashAlg::Sha256],
    ] {
        let q = quote(&boot, &b, banks);
        for bytes in [b.binary(), b.ascii().into_bytes()] {
            let (state, trusted) = both(&RuntimeAppraisal::new(), &policy, 0, &bytes, &q);
            assert!(trusted);
            assert_eq!(state.entries(), 51);
        }
    }
}

/// Longer than the batches the in-place path reads (32 entries): every kind of allowed entry
/// across batch boundaries, quoted at points inside and at the edges of batches, appraised
/// whole and in two calls.
#[test]
fn long_logs_agree_at_every_batch_edge() {
    let boot = fake_boot_pcrs(&[HashAlg::Sha1, HashAlg::Sha256]);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    let mut p = RuntimePolicy::new();
    p.add_exclude("/tmp/*").unwrap();
    p.violations = ViolationRule::Allow;
    for i in 0..150 {
        match i % 7 {
            0 => {
                b.file(&format!("/tmp/t{i}"), b"t");
            }
            1 => {
                b.violation(&format!("/var/db{i}"));
            }
            2 => {
                let path = format!("/usr/bin/s{i}");
                let content = format!("{i}");
                b.sig_file(&path, HashAlg::Sha256, content.as_bytes(), Vec::new());
                p.add_digest(
                    &path,
                    nodetrust_appraise::runtime::FileDigest::of(
                        HashAlg::Sha256,
                        content.as_bytes(),
                    ),
                )
                .unwrap();
            }
            _ => {
                let path = format!("/usr/lib/x86_64-linux-gnu/lib{i}.so");
                b.file(&path, format!("{i}").as_bytes());
                p.add_digest(
                    &path,
                    nodetrust_appraise::runtime::FileDigest::of(
                        HashAlg::Sha256,
                        format!("{i}").as_bytes(),
                    ),
                )
                .unwrap();
            }
        }
    }
    let policy = p.compile().unwrap();
    for banks in [
        &[HashAlg::Sha1][..],
        &[HashAlg::Sha256],
        &[HashAlg::Sha1, HashAlg::Sha256],
    ] {
        for upto in [0, 1, 31, 32, 33, 64, 95, 150, 151] {
            let q = quote_prefix(&boot, &b, upto, banks);
            for binary in [false, true] {
                let bytes = if binary {
                    b.binary()
                } else {
                    b.ascii().into_bytes()
                };
                let (state, trusted) = both(&RuntimeAppraisal::new(), &policy, 0, &bytes, &q);
                assert_eq!(state.entries(), upto as u64, "{banks:?} {upto} {binary}");
                assert!(trusted || upto < b.len(), "{banks:?} {upto} {binary}");
                for split in [1, 32, 40, 100] {
                    let first = if binary {
                        b_prefix_binary(&b, split)
                    } else {
                        b_prefix_ascii(&b, split)
                    };
                    let qs = quote_prefix(&boot, &b, split, banks);
                    let (s1, _) = both(&RuntimeAppraisal::new(), &policy, 0, &first, &qs);
                    let rest = if binary {
                        b.binary_from(split)
                    } else {
                        b.ascii_from(split).into_bytes()
                    };
                    let (s2, _) = both(&s1, &policy, s1.entries(), &rest, &q);
                    assert_eq!(
                        s2.entries(),
                        upto.max(split) as u64,
                        "{banks:?} {upto} {split}"
                    );
                }
            }
        }
    }
}

/// Paths that are not UTF-8. The in-place path compares bytes; the full parser refuses an
/// ascii log that is not UTF-8 and reads a binary path lossily (U+FFFD for each bad byte), so
/// a binary entry can be listed under its lossy path. Both ways must agree on each.
#[test]
fn paths_that_are_not_utf8_agree() {
    let boot = fake_boot_pcrs(&[HashAlg::Sha1, HashAlg::Sha256]);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    let mut p = RuntimePolicy::new();
    // Past the first 4 KiB, which decide whether a log is read as ascii.
    for i in 0..50 {
        let path = format!("/usr/lib/filler/{i}");
        b.file(&path, b"f");
        p.add_digest(
            &path,
            nodetrust_appraise::runtime::FileDigest::of(HashAlg::Sha256, b"f"),
        )
        .unwrap();
    }
    let marked = "/usr/bin/a\u{FFFD}";
    b.file(marked, b"x");
    b.violation("/var/log/\u{FFFD}");
    b.file("/usr/bin/plain", b"y");
    p.violations = ViolationRule::Allow;
    for (path, content) in [
        (marked.to_string(), &b"x"[..]),
        ("/usr/bin/a\u{FFFD}\u{FFFD}\u{FFFD}".to_string(), b"x"),
        ("/usr/bin/plain".to_string(), b"y"),
    ] {
        p.add_digest(
            &path,
            nodetrust_appraise::runtime::FileDigest::of(HashAlg::Sha256, content),
        )
        .unwrap();
    }
    let policy = p.compile().unwrap();
    // U+FFFD (EF BF BD) becomes three bytes that are not UTF-8, the length kept.
    let spoil = |mut bytes: Vec<u8>| {
        let mut i = 0;
        while i + 3 <= bytes.len() {
            if bytes[i..i + 3] == [0xEF, 0xBF, 0xBD] {
                bytes[i..i + 3].copy_from_slice(&[0xFF, 0xFE, 0xFD]);
            }
            i += 1;
        }
        bytes
    };
    for banks in [&[HashAlg::Sha1][..], &[HashAlg::Sha256]] {
        let q = quote(&boot, &b, banks);
        let ascii = spoil(b.ascii().into_bytes());
        assert!(ascii[..4096].is_ascii() && !ascii.is_ascii());
        assert!(ImaLog::parse(&ascii).is_err());
        both(&RuntimeAppraisal::new(), &policy, 0, &ascii, &q);
        // Each spoiled line alone, after the rest as it was.
        for (n, line) in b.ascii().lines().enumerate().skip(51) {
            let mut one = b
                .ascii()
                .lines()
                .take(n)
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes();
            one.push(b'\n');
            one.extend(spoil(line.as_bytes().to_vec()));
            both(
                &RuntimeAppraisal::new(),
                &policy,
                0,
                &one,
                &quote_prefix(&boot, &b, n + 1, banks),
            );
        }

        let binary = spoil(b.binary());
        // The quote of the spoiled log, so that the SHA-256 bank binds its bytes.
        let parsed = ImaLog::parse(&binary).unwrap();
        let mut r = ImaReplay::new(banks, BankRule::Recompute);
        r.extend(&parsed.entries).unwrap();
        let mut qb = q.clone();
        for &bank in banks {
            qb.insert(bank, 10, r.value(bank, 10).unwrap().to_vec())
                .unwrap();
        }
        let (_, trusted) = both(&RuntimeAppraisal::new(), &policy, 0, &binary, &qb);
        // SHA-1 checks the logged template hashes, which the spoiled bytes no longer match.
        assert_eq!(trusted, banks == [HashAlg::Sha256], "{banks:?}");
    }
}
