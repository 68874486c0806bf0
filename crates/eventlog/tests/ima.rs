//! IMA logs: entries printed by real kernels (ima, ima-ng and ima-sig lines published in the
//! Linux IMA documentation and keylime's test data) rebuild to template data whose SHA-1 is the
//! template hash the kernel logged; replay, violations and incremental replay.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use nodetrust_eventlog::ima::{
    replay_from, to_binary, BankRule, ImaLog, ImaReplay, ImaReplayError, Template,
};
use nodetrust_tpm_wire::HashAlg;

const REAL: &str = "\
10 7971593a7ad22a7cce5b234e4bc5d71b04696af4 ima b5a166c10d153b7cc3e5b4f1eab1f71672b7c524 boot_aggregate
10 ef7a0aff83dd46603ebd13d1d789445365adb3b3 ima 0f8b3432535d5eab912ad3ba744507e35e3617c1 /init
10 247dba6fc82b346803660382d1973c019243e59f ima 747acb096b906392a62734916e0bb39cef540931 ld-2.9.so
10 0adefe762c149c7cec19da62f0da1297fcfbffff ima-ng sha256:0000000000000000000000000000000000000000000000000000000000000000 boot_aggregate
10 cff3da2ff339a1f07bb0dbcbc0381e794ed09555 ima-ng sha256:3e5e8ad9d8b4dd191413aba6166c7a975c3eab903d1fad77ecfa2d5810d6585c /usr/bin/kmod
10 7c23cc970eceec906f7a41bc2fbde770d7092209 ima-ng sha256:72ade6ae3d35cfe5ede7a77b1c0ed1d1782a899445fdcb219c0e994a084a70d5 /bin/busybox
10 06e804489a77ddab51b9ef27e17053c0e5d503bd ima-sig sha1:1cb84b12db45d7da8de58ba6744187db84082f0e /usr/bin/zmore 030202531f402500483046022100bff9c02dc7b270c83cc94bfec10eecd42831de2cdcb04f024369a14623bc3a91022100cc4d015ae932fb98d6846645ed7d1bb1afd4621ec9089bc087126f191886dd31
10 5426cf3031a43f5bfca183d79950698a95a728f6 ima-sig sha256:f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e /lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko
10 0000000000000000000000000000000000000000 ima-ng sha256:0000000000000000000000000000000000000000000000000000000000000000 /root/test-dir/d/test-file
";

#[test]
fn real_kernel_entries_rebuild_to_their_template_hash() {
    let log = ImaLog::parse(REAL.as_bytes()).unwrap();
    assert_eq!(log.entries.len(), 9);
    assert!(log.check().is_empty(), "{:?}", log.check());
    assert_eq!(log.entries[0].template, Template::Ima);
    assert_eq!(log.entries[0].path, "boot_aggregate");
    assert_eq!(log.entries[4].template, Template::ImaNg);
    assert_eq!(log.entries[4].file_alg, "sha256");
    assert_eq!(log.entries[4].path, "/usr/bin/kmod");
    assert_eq!(log.entries[6].template, Template::ImaSig);
    assert_eq!(
        log.entries[6].signature.as_ref().unwrap()[..3],
        [0x03, 0x02, 0x02]
    );
    assert_eq!(log.entries[6].path, "/usr/bin/zmore");
    assert_eq!(log.entries[7].signature, None);
    assert!(log.entries[8].is_violation());
}

#[test]
fn a_changed_path_or_digest_is_a_finding() {
    let tampered = REAL
        .replace("/usr/bin/kmod", "/usr/bin/kmodx")
        .replace("72ade6ae3d35", "72ade6ae3d36");
    let log = ImaLog::parse(tampered.as_bytes()).unwrap();
    let f: Vec<usize> = log.check().iter().map(|f| f.entry).collect();
    assert_eq!(f, vec![4, 5]);
    assert!(log.check()[0].to_string().contains("/usr/bin/kmodx"));
}

fn fold(alg: HashAlg, digests: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    digests.fold(vec![0u8; alg.size()], |acc, d| alg.extend(&acc, &d))
}

#[test]
fn replay_extends_template_hashes_and_all_ones_for_violations() {
    let log = ImaLog::parse(REAL.as_bytes()).unwrap();
    let mut r = ImaReplay::new(&[HashAlg::Sha1, HashAlg::Sha256], BankRule::Recompute);
    r.extend(&log.entries).unwrap();
    assert_eq!(r.entries_replayed(), 9);
    assert_eq!(r.violations(), 1);
    // SHA-1 bank: the logged hashes, then 20 bytes of 0xFF for the violation.
    let sha1 = fold(
        HashAlg::Sha1,
        log.entries.iter().map(|e| {
            if e.is_violation() {
                vec![0xFF; 20]
            } else {
                e.template_hash.clone()
            }
        }),
    );
    assert_eq!(r.value(HashAlg::Sha1, 10).unwrap(), sha1.as_slice());
    // SHA-256 bank: SHA-256 of each template data (32 bytes of 0xFF for the violation).
    let sha256 = fold(
        HashAlg::Sha256,
        log.entries.iter().map(|e| {
            if e.is_violation() {
                vec![0xFF; 32]
            } else {
                HashAlg::Sha256.digest(&e.template_data)
            }
        }),
    );
    assert_eq!(r.value(HashAlg::Sha256, 10).unwrap(), sha256.as_slice());
    assert_ne!(
        sha256,
        fold(
            HashAlg::Sha256,
            log.entries.iter().map(|e| {
                let mut d = e.template_hash.clone();
                d.resize(32, 0);
                d
            })
        )
    );
    // Older kernels: zero-padded SHA-1 template hashes.
    let mut old = ImaReplay::new(&[HashAlg::Sha256], BankRule::PaddedSha1);
    old.extend(&log.entries).unwrap();
    let padded = fold(
        HashAlg::Sha256,
        log.entries.iter().map(|e| {
            if e.is_violation() {
                vec![0xFF; 32]
            } else {
                let mut d = e.template_hash.clone();
                d.resize(32, 0);
                d
            }
        }),
    );
    assert_eq!(old.value(HashAlg::Sha256, 10).unwrap(), padded.as_slice());
    assert_eq!(r.values().len(), 2);
}

#[test]
fn replay_continues_from_an_offset() {
    let log = ImaLog::parse(REAL.as_bytes()).unwrap();
    let mut whole = ImaReplay::new(&[HashAlg::Sha1, HashAlg::Sha256], BankRule::Recompute);
    whole.extend(&log.entries).unwrap();

    // The verifier saw the first four lines, then the log grew.
    let first: String = REAL.lines().take(4).map(|l| format!("{l}\n")).collect();
    let early = ImaLog::parse(first.as_bytes()).unwrap();
    let state = replay_from(
        ImaReplay::new(&[HashAlg::Sha1, HashAlg::Sha256], BankRule::Recompute),
        &early,
        0,
    )
    .unwrap();
    assert_eq!(state.entries_replayed(), 4);
    let resumed = replay_from(state.clone(), &log, 4).unwrap();
    assert_eq!(resumed, whole);
    // Resuming at the wrong place is refused, not silently wrong.
    assert_eq!(
        replay_from(state, &log, 3).unwrap_err(),
        ImaReplayError::Gap { have: 4, start: 3 }
    );
}

#[test]
fn binary_log_round_trips_and_replays_like_ascii() {
    let ascii = ImaLog::parse(REAL.as_bytes()).unwrap();
    let bin = to_binary(&ascii.entries);
    let parsed = ImaLog::parse(&bin).unwrap();
    assert_eq!(parsed, ascii);
    assert!(parsed.check().is_empty());
    // Truncation names the entry and offset.
    let err = ImaLog::parse_binary(&bin[..bin.len() - 3]).unwrap_err();
    assert_eq!(err.event, 8);
    assert!(
        err.to_string().starts_with("event 8 at byte offset"),
        "{err}"
    );
}

#[test]
fn bad_ascii_lines_are_errors_naming_the_line() {
    let text = format!(
        "{}10 zz ima-ng sha256:00 /x\n",
        REAL.lines().next().unwrap().to_owned() + "\n"
    );
    let err = ImaLog::parse_ascii(&text).unwrap_err();
    assert_eq!(err.event, 1);
    assert_eq!(err.offset, REAL.lines().next().unwrap().len() + 1);
    assert!(
        ImaLog::parse_ascii("10 0adefe762c149c7cec19da62f0da1297fcfbffff ima-buf sha1:00 x\n")
            .is_err()
    );
}

#[test]
fn boot_aggregate_is_the_hash_of_the_boot_pcrs() {
    // From the Linux IMA documentation: ima_boot_aggregate's PCR values and the log's entry.
    let pcrs = [
        "07274edf7147abda49200100fd668ce2c3a374d7",
        "48dff4fbf3a34d56a08dfc1504a3a9d707678ff7",
        "53de584dcef03f6a7dac1a240a835893896f218d",
        "3a3f780f11a4b49969fcaa80cd6e3957c33b2275",
        "acb44e9dd4594d3f121df2848f572e4d891f0574",
        "df72e880e68a2b52e6b6738bb4244b932e0f1c76",
        "585e579e48997fee8efd20830c6a841eb353c628",
        "3a3f780f11a4b49969fcaa80cd6e3957c33b2275",
    ];
    let mut values = nodetrust_tpm_wire::PcrValues::new();
    for (i, v) in pcrs.iter().enumerate() {
        values
            .insert(HashAlg::Sha1, i as u8, hex::decode(v).unwrap())
            .unwrap();
    }
    let agg = nodetrust_eventlog::ima::boot_aggregate(&values, HashAlg::Sha1, 7).unwrap();
    assert_eq!(
        hex::encode(&agg),
        "b5a166c10d153b7cc3e5b4f1eab1f71672b7c524"
    );
    let log = ImaLog::parse(REAL.as_bytes()).unwrap();
    assert_eq!(log.boot_aggregate_matches(&values), Some(true));
    values.insert(HashAlg::Sha1, 4, vec![0; 20]).unwrap();
    assert_eq!(log.boot_aggregate_matches(&values), Some(false));
    assert_eq!(
        log.boot_aggregate_matches(&nodetrust_tpm_wire::PcrValues::new()),
        None
    );
}
