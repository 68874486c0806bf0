//! Properties of runtime appraisal: globs mean what their regular-expression translation means,
//! signature headers and policy files never panic, and appraising a log in any number of
//! chunks gives the state of appraising it at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_appraise::runtime::{
    encode_ima_signature, parse_ima_signature, Glob, KeyId, RuntimeAppraisal, RuntimePolicy,
};
use nodetrust_testkit::ima::{fake_boot_pcrs, ImaLogBuilder};
use nodetrust_tpm_wire::{HashAlg, PcrValues};
use proptest::prelude::*;

fn glob_regex(g: &str) -> regex::Regex {
    let mut out = String::from("^");
    for c in g.chars() {
        match c {
            '*' => out.push_str("(?s:.*)"),
            '?' => out.push_str("(?s:.)"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    regex::Regex::new(&out).unwrap()
}

proptest! {
    #[test]
    fn globs_match_like_their_regex(pattern in "[a/*?é.]{1,12}", path in "[a/é.]{0,16}") {
        let g = Glob::new(&pattern).unwrap();
        prop_assert_eq!(g.matches(&path), glob_regex(&pattern).is_match(&path));
    }

    #[test]
    fn signature_headers_never_panic_and_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(s) = parse_ima_signature(&bytes) {
            if let (3, Some(h)) = (s.sig_type, s.hash()) {
                prop_assert_eq!(&encode_ima_signature(h, s.key_id, &s.signature), &bytes);
            }
        }
        let f = encode_ima_signature(HashAlg::Sha256, KeyId(7), &bytes);
        let ok = parse_ima_signature(&f);
        prop_assert_eq!(ok.is_ok(), !bytes.is_empty() && bytes.len() <= 1024);
    }

    #[test]
    fn policy_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = RuntimePolicy::from_json(&bytes);
        let _ = RuntimePolicy::from_keylime(&bytes);
    }

    #[test]
    fn appraising_in_chunks_is_appraising_at_once(
        cuts in proptest::collection::vec(0usize..60, 0..6),
        unknown in proptest::collection::vec(0usize..60, 0..4),
    ) {
        let boot = fake_boot_pcrs(&[HashAlg::Sha256]);
        let mut gold = ImaLogBuilder::new();
        gold.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
        let mut b = gold.clone();
        for i in 0..60 {
            if unknown.contains(&i) {
                b.file(&format!("/unknown/{i}"), b"?");
            } else {
                b.file(&format!("/usr/bin/f{i}"), format!("{i}").as_bytes());
                gold.file(&format!("/usr/bin/f{i}"), format!("{i}").as_bytes());
            }
        }
        let mut p = RuntimePolicy::new();
        p.learn(gold.entries()).unwrap();
        let policy = p.compile().unwrap();
        let mut q = PcrValues::new();
        for (bank, i, v) in boot.iter() {
            q.insert(bank, i, v.to_vec()).unwrap();
        }
        q.insert(HashAlg::Sha256, 10, b.pcr10(HashAlg::Sha256)).unwrap();
        let entries = b.entries();
        let mut once = RuntimeAppraisal::new();
        let all = once.appraise(&policy, 0, entries, &q);

        // In chunks, each appraised against the PCR 10 its prefix replays to.
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c + 1).collect();
        bounds.push(entries.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut chunked = RuntimeAppraisal::new();
        let mut start = 0;
        let mut appraised = 0;
        for end in bounds {
            let mut prefix = ImaLogBuilder::new();
            for e in &entries[..end] {
                if e.path == "boot_aggregate" {
                    prefix.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
                } else {
                    prefix.file_digest(&e.path, &e.file_alg, e.file_digest.clone());
                }
            }
            let mut qi = q.clone();
            qi.insert(HashAlg::Sha256, 10, prefix.pcr10(HashAlg::Sha256)).unwrap();
            let out = chunked.appraise(&policy, start as u64, &entries[start..], &qi);
            prop_assert!(out.problem.is_none());
            prop_assert_eq!(out.entries as usize, end);
            appraised += out.appraised;
            start = end;
        }
        prop_assert_eq!(appraised, entries.len() as u64);
        prop_assert_eq!(&chunked, &once);
        prop_assert_eq!(all.failures_total as usize, unknown.iter().collect::<std::collections::BTreeSet<_>>().len());
    }
}
