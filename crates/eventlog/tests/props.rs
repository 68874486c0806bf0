//! Property tests: random and mutated logs never panic either parser (or anything downstream
//! of a successful parse), and built logs round-trip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use nodetrust_eventlog::build::LogBuilder;
use nodetrust_eventlog::ima::{BankRule, ImaLog, ImaReplay};
use nodetrust_eventlog::{describe, diff, integrity, EventLog, Replay};
use nodetrust_tpm_wire::HashAlg;
use proptest::prelude::*;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = nodetrust_testkit::fixtures_dir().join("eventlogs");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Everything a verifier does with a log that parsed.
fn exercise_tcg(bytes: &[u8]) {
    if let Ok(log) = EventLog::parse(bytes) {
        let r = Replay::run(&log);
        let _ = r.values();
        for e in &log.events {
            let _ = describe(e).to_string();
        }
        let _ = integrity::check(&log);
        // A log differs from itself only when it has no bank to compare by.
        let same = diff(&log, &log);
        assert!(
            same.is_empty()
                || (same.len() == 1 && same[0].change == nodetrust_eventlog::Change::NoCommonBank)
        );
    }
}

fn exercise_ima(bytes: &[u8]) {
    if let Ok(log) = ImaLog::parse(bytes) {
        let _ = log.check();
        let mut r = ImaReplay::new(&[HashAlg::Sha1, HashAlg::Sha256], BankRule::Recompute);
        let _ = r.extend(&log.entries);
        let _ = r.values();
    }
    let _ = ImaLog::parse_binary(bytes);
    let _ = ImaLog::parse_ascii(&String::from_utf8_lossy(bytes));
}

const IMA_SAMPLE: &str = "10 0adefe762c149c7cec19da62f0da1297fcfbffff ima-ng sha256:0000000000000000000000000000000000000000000000000000000000000000 boot_aggregate\n\
10 06e804489a77ddab51b9ef27e17053c0e5d503bd ima-sig sha1:1cb84b12db45d7da8de58ba6744187db84082f0e /usr/bin/zmore 030202531f402500483046022100bff9c02dc7b270c83cc94bfec10eecd42831de2cdcb04f024369a14623bc3a91022100cc4d015ae932fb98d6846645ed7d1bb1afd4621ec9089bc087126f191886dd31\n\
10 ef7a0aff83dd46603ebd13d1d789445365adb3b3 ima 0f8b3432535d5eab912ad3ba744507e35e3617c1 /init\n";

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite32(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u32),
                Just(u32::MAX),
                Just(0x8000_0000),
                0u32..64,
                any::<u32>()
            ]
        )
            .prop_map(|(i, v)| Mutation::Overwrite32(i, v)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        let n = b.len();
        match m {
            Mutation::Flip(i, x) => b[i % n] ^= x,
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % n;
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Overwrite32(i, v) => {
                let at = (i % n) & !3;
                for (k, byte) in v.to_le_bytes().iter().enumerate() {
                    if let Some(x) = b.get_mut(at + k) {
                        *x = *byte;
                    }
                }
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise_tcg(&bytes);
        exercise_ima(&bytes);
    }

    #[test]
    fn mutated_fixtures_never_panic(which in 0usize..12, muts in proptest::collection::vec(mutation(), 1..6)) {
        let logs = fixtures();
        let bytes = apply(logs[which % logs.len()].clone(), &muts);
        exercise_tcg(&bytes);
    }

    #[test]
    fn mutated_ima_logs_never_panic(binary in any::<bool>(), muts in proptest::collection::vec(mutation(), 1..6)) {
        let ascii = ImaLog::parse(IMA_SAMPLE.as_bytes()).unwrap();
        let base = if binary { nodetrust_eventlog::ima::to_binary(&ascii.entries) } else { IMA_SAMPLE.as_bytes().to_vec() };
        exercise_ima(&apply(base, &muts));
    }

    /// Build → parse → the same events, and replay equals folding the extends by hand.
    #[test]
    fn built_logs_round_trip(
        agile in any::<bool>(),
        events in proptest::collection::vec((0u32..24, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..40),
    ) {
        let banks = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384];
        let mut b = if agile { LogBuilder::crypto_agile(&banks) } else { LogBuilder::sha1() };
        for (pcr, ty, data) in &events {
            b.event(*pcr, *ty, data);
        }
        let bytes = b.bytes();
        if !agile && events.is_empty() {
            prop_assert_eq!(EventLog::parse(&bytes).unwrap_err().kind, nodetrust_eventlog::ParseErrorKind::Empty);
            return Ok(());
        }
        let log = EventLog::parse(&bytes).unwrap();
        let parsed: Vec<_> = log.measurements().map(|e| (e.pcr, e.event_type, e.data.to_vec())).collect();
        let built: Vec<_> = b.events().iter().map(|e| (e.pcr, e.event_type, e.data.clone())).collect();
        prop_assert_eq!(parsed, built);
        let r = Replay::run(&log);
        for alg in if agile { &banks[..] } else { &banks[..1] } {
            for pcr in 0u8..24 {
                let init = if (17..=22).contains(&pcr) { 0xFF } else { 0 };
                let mut v = vec![init; alg.size()];
                let mut launched = false;
                for (p, ty, data) in &events {
                    if *ty == nodetrust_eventlog::types::EV_NO_ACTION {
                        continue;
                    }
                    if *p == 17 && !launched {
                        launched = true;
                        if (17..=22).contains(&pcr) {
                            v = vec![0; alg.size()];
                        }
                    }
                    if *p == u32::from(pcr) {
                        v = alg.extend(&v, &alg.digest(data));
                    }
                }
                let hcrtm = events.iter().take_while(|(p, ty, _)| !(*p == 0 && *ty != nodetrust_eventlog::types::EV_EFI_HCRTM_EVENT && *ty != nodetrust_eventlog::types::EV_NO_ACTION)).any(|(p, ty, _)| *p == 0 && *ty == nodetrust_eventlog::types::EV_EFI_HCRTM_EVENT);
                if pcr == 0 && hcrtm {
                    continue; // locality 4 start: covered by replay_rules
                }
                prop_assert_eq!(r.get(*alg, pcr).unwrap(), v.as_slice(), "{} PCR {}", alg, pcr);
            }
        }
    }
}
