//! Appraisal of real (software-signed) quotes against flavors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use nodetrust_appraise::{
    appraise, flavors_from_evidence, quote_selection, EventLogEvidence, Flavor, FlavorPart,
    HostContext, MatchPolicy, MeasuredEvent, Trust,
};
use nodetrust_testkit::soft::SoftTpm;
use nodetrust_tpm_wire::{verify_quote, HashAlg, VerifiedQuote};

const NONCE: &[u8] = &[7u8; 32];
const VALIDITY: Duration = Duration::from_secs(600);

fn sha256(s: &str) -> Vec<u8> {
    HashAlg::Sha256.digest(s.as_bytes())
}

/// A boot: events extended into the TPM and recorded in a log.
fn boot(tpm: &mut SoftTpm, events: &[(u8, &str, &str)]) -> EventLogEvidence {
    let mut log = Vec::new();
    for (pcr, label, content) in events {
        let d = sha256(content);
        tpm.extend(HashAlg::Sha256, *pcr, &d);
        log.push(MeasuredEvent::new(*pcr, label.to_string()).with_digest(HashAlg::Sha256, &d));
    }
    EventLogEvidence::replay_from(log)
}

const GOLD_BOOT: &[(u8, &str, &str)] = &[
    (0, "firmware blob", "bios v1"),
    (7, "secure boot variable SecureBoot", "sb on"),
    (4, "boot application \\EFI\\BOOT\\shimx64.efi", "shim 15.7"),
    (
        4,
        "boot application \\EFI\\debian\\grubx64.efi",
        "grub 2.06",
    ),
    (8, "grub_cmd: set root", "set root"),
    (8, "kernel_cmdline: root=/dev/sda1 node=a", "cmdline a"),
    (9, "/boot/vmlinuz-6.1", "kernel 6.1"),
    (9, "/boot/initrd.img-6.1", "initrd a"),
];

fn all_pcrs() -> BTreeMap<HashAlg, BTreeSet<u8>> {
    quote_selection(&[] as &[Flavor], "x")
}

fn verified(tpm: &mut SoftTpm, sel: &BTreeMap<HashAlg, BTreeSet<u8>>) -> VerifiedQuote {
    let q = tpm.quote(NONCE, sel).unwrap();
    verify_quote(tpm.ak_public(), &q.attest, &q.signature, &q.pcrs, NONCE).unwrap()
}

fn ctx(host: &str) -> HostContext<'_> {
    HostContext {
        host_name: host,
        software_tpm: false,
    }
}

fn gold_flavors(parts: &[FlavorPart]) -> Vec<Flavor> {
    let mut gold = SoftTpm::new().unwrap();
    let log = boot(&mut gold, GOLD_BOOT);
    let v = verified(&mut gold, &all_pcrs());
    let mut flavors = flavors_from_evidence(&v, Some(&log), parts, "gold", false).unwrap();
    for (i, f) in flavors.iter_mut().enumerate() {
        f.id = format!("f{i}");
        f.validate().unwrap();
    }
    flavors
}

#[test]
fn same_boot_as_gold_host_is_trusted_and_expires() {
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os]);
    let mut host = SoftTpm::new().unwrap();
    let log = boot(&mut host, GOLD_BOOT);
    let sel = quote_selection(&flavors, "node-1");
    let v = verified(&mut host, &sel);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let verdict = appraise(
        &v,
        Some(&log),
        &flavors,
        &MatchPolicy::default(),
        &ctx("node-1"),
        now,
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Trusted, "{:?}", verdict.reasons());
    assert_eq!(verdict.expires_at(), now + VALIDITY);
    assert!(!verdict.is_expired(now + Duration::from_secs(599)));
    assert!(verdict.is_expired(now + VALIDITY));
}

#[test]
fn changed_boot_loader_is_untrusted_with_a_reason_naming_pcr_4_and_the_component() {
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os]);
    let mut host = SoftTpm::new().unwrap();
    let mut boot_events = GOLD_BOOT.to_vec();
    boot_events[3] = (
        4,
        "boot application \\EFI\\debian\\grubx64.efi",
        "grub 2.12 evil",
    );
    let log = boot(&mut host, &boot_events);
    let v = verified(&mut host, &quote_selection(&flavors, "node-1"));
    let verdict = appraise(
        &v,
        Some(&log),
        &flavors,
        &MatchPolicy::default(),
        &ctx("node-1"),
        SystemTime::now(),
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Untrusted);
    let text = verdict.reasons().join("\n");
    assert!(
        text.contains("PCR 4: boot application \\EFI\\debian\\grubx64.efi changed"),
        "{text}"
    );
    assert!(
        !text.contains("PLATFORM:"),
        "PLATFORM still matches: {text}"
    );
}

#[test]
fn without_a_log_the_reason_still_names_the_pcr_and_values() {
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os]);
    let mut host = SoftTpm::new().unwrap();
    let mut boot_events = GOLD_BOOT.to_vec();
    boot_events[2] = (4, "boot application shim", "other shim");
    boot(&mut host, &boot_events);
    let v = verified(&mut host, &quote_selection(&flavors, "node-1"));
    // Gold flavors were made with a log, so OS PCRs 8/9 check events: without a log they fail too.
    let verdict = appraise(
        &v,
        None,
        &flavors,
        &MatchPolicy::default(),
        &ctx("node-1"),
        SystemTime::now(),
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Untrusted);
    let text = verdict.reasons().join("\n");
    assert!(text.contains("PCR 4 (sha256): value"), "{text}");
    assert!(text.contains("host sent no event log"), "{text}");
}

#[test]
fn host_unique_events_are_split_from_os_and_bound_to_their_host() {
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os, FlavorPart::HostUnique]);
    let hu: Vec<&Flavor> = flavors
        .iter()
        .filter(|f| f.part == FlavorPart::HostUnique)
        .collect();
    assert_eq!(hu.len(), 1);
    assert_eq!(hu[0].host_name.as_deref(), Some("gold"));
    // Another host with its own command line and initrd matches OS (shared events) and has no
    // HOST_UNIQUE flavor of its own, so HOST_UNIQUE is not required for it.
    let mut host = SoftTpm::new().unwrap();
    let mut boot_events = GOLD_BOOT.to_vec();
    boot_events[5] = (8, "kernel_cmdline: root=/dev/sda1 node=b", "cmdline b");
    boot_events[7] = (9, "/boot/initrd.img-6.1", "initrd b");
    let log = boot(&mut host, &boot_events);
    let v = verified(&mut host, &quote_selection(&flavors, "node-b"));
    let verdict = appraise(
        &v,
        Some(&log),
        &flavors,
        &MatchPolicy::default(),
        &ctx("node-b"),
        SystemTime::now(),
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Trusted, "{:?}", verdict.reasons());
    // The gold host itself, booted with another command line, fails its HOST_UNIQUE flavor.
    let verdict = appraise(
        &v,
        Some(&log),
        &flavors,
        &MatchPolicy::default(),
        &ctx("gold"),
        SystemTime::now(),
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Untrusted);
    let text = verdict.reasons().join("\n");
    assert!(
        text.contains("HOST_UNIQUE: PCR 8: kernel_cmdline: root=/dev/sda1 node=a is missing")
            || text.contains("HOST_UNIQUE: PCR 8: unexpected kernel_cmdline"),
        "{text}"
    );
    assert!(!text.contains("OS: PCR"), "{text}");
}

#[test]
fn a_tampered_log_is_not_believed() {
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os]);
    let mut host = SoftTpm::new().unwrap();
    boot(&mut host, &[(4, "boot application evil", "evil")]);
    // The host claims the gold log, which does not replay to its quoted PCRs.
    let mut gold_only = SoftTpm::new().unwrap();
    let claimed = boot(&mut gold_only, GOLD_BOOT);
    let v = verified(&mut host, &quote_selection(&flavors, "node-1"));
    let verdict = appraise(
        &v,
        Some(&claimed),
        &flavors,
        &MatchPolicy::default(),
        &ctx("node-1"),
        SystemTime::now(),
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Untrusted);
    assert!(
        verdict.reasons()[0].contains("event log does not match the quoted PCRs"),
        "{:?}",
        verdict.reasons()
    );
}

#[test]
fn any_of_several_flavors_per_part_matches_and_missing_parts_fail() {
    let mut flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os]);
    // A second OS flavor (the new kernel being rolled out).
    let mut host = SoftTpm::new().unwrap();
    let mut new_kernel = GOLD_BOOT.to_vec();
    new_kernel[6] = (9, "/boot/vmlinuz-6.6", "kernel 6.6");
    let log = boot(&mut host, &new_kernel);
    let v = verified(&mut host, &quote_selection(&flavors, "n"));
    let now = SystemTime::now();
    let before = appraise(
        &v,
        Some(&log),
        &flavors,
        &MatchPolicy::default(),
        &ctx("n"),
        now,
        VALIDITY,
    );
    assert_eq!(before.verdict(), Trust::Untrusted);
    assert!(
        before
            .reasons()
            .join("\n")
            .contains("PCR 9: /boot/vmlinuz-6.1 is missing")
            || before
                .reasons()
                .join("\n")
                .contains("PCR 9: unexpected /boot/vmlinuz-6.6"),
        "{:?}",
        before.reasons()
    );
    let mut os2 =
        flavors_from_evidence(&v, Some(&log), &[FlavorPart::Os], "canary", false).unwrap();
    os2[0].id = "os2".into();
    flavors.extend(os2);
    let after = appraise(
        &v,
        Some(&log),
        &flavors,
        &MatchPolicy::default(),
        &ctx("n"),
        now,
        VALIDITY,
    );
    assert_eq!(after.verdict(), Trust::Trusted, "{:?}", after.reasons());
    // With no PLATFORM flavor the host cannot be trusted.
    let os_only: Vec<Flavor> = flavors
        .into_iter()
        .filter(|f| f.part == FlavorPart::Os)
        .collect();
    let verdict = appraise(
        &v,
        Some(&log),
        &os_only,
        &MatchPolicy::default(),
        &ctx("n"),
        now,
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Untrusted);
    assert!(verdict
        .reasons()
        .iter()
        .any(|r| r.contains("no PLATFORM flavor is defined")));
}

#[test]
fn software_tpm_needs_a_flavor_that_allows_it() {
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os]);
    let mut host = SoftTpm::new().unwrap();
    let log = boot(&mut host, GOLD_BOOT);
    let v = verified(&mut host, &quote_selection(&flavors, "n"));
    let soft = HostContext {
        host_name: "n",
        software_tpm: true,
    };
    let verdict = appraise(
        &v,
        Some(&log),
        &flavors,
        &MatchPolicy::default(),
        &soft,
        SystemTime::now(),
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Untrusted);
    assert!(verdict.reasons().join("\n").contains("software TPM"));
    let allowing: Vec<Flavor> = flavors
        .into_iter()
        .map(|f| Flavor {
            allow_software_tpm: true,
            ..f
        })
        .collect();
    let verdict = appraise(
        &v,
        Some(&log),
        &allowing,
        &MatchPolicy::default(),
        &soft,
        SystemTime::now(),
        VALIDITY,
    );
    assert_eq!(verdict.verdict(), Trust::Trusted);
}

#[test]
fn flavors_round_trip_through_json_and_reject_bad_input() {
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os, FlavorPart::HostUnique]);
    for f in &flavors {
        let json = serde_json::to_string(f).unwrap();
        let back: Flavor = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, f);
    }
    let bad_pcr = r#"{"label":"x","part":"OS","pcrs":[{"bank":"sha256","index":0,"value":"00"}]}"#;
    let f: Flavor = serde_json::from_str(bad_pcr).unwrap();
    assert!(f
        .validate()
        .unwrap_err()
        .to_string()
        .contains("PCR 0 is not part of OS"));
    let short = r#"{"label":"x","part":"OS","pcrs":[{"bank":"sha256","index":4,"value":"00"}]}"#;
    let f: Flavor = serde_json::from_str(short).unwrap();
    assert!(f.validate().unwrap_err().to_string().contains("needs 32"));
    let unknown = r#"{"label":"x","part":"OS","pcrs":[],"colour":"red"}"#;
    assert!(serde_json::from_str::<Flavor>(unknown).is_err());
}

#[test]
fn host_unique_import_needs_a_log() {
    let mut gold = SoftTpm::new().unwrap();
    boot(&mut gold, GOLD_BOOT);
    let v = verified(&mut gold, &all_pcrs());
    let err =
        flavors_from_evidence(&v, None, &[FlavorPart::HostUnique], "gold", false).unwrap_err();
    assert!(err.to_string().contains("no event log"));
    let only_values = flavors_from_evidence(&v, None, &[FlavorPart::Os], "gold", false).unwrap();
    assert!(only_values[0].pcrs.iter().all(|r| r.value.is_some()));
}

#[test]
fn the_failure_kind_says_replay_mismatch_flavor_mismatch_or_no_flavor() {
    use nodetrust_appraise::Failure;
    let flavors = gold_flavors(&[FlavorPart::Platform, FlavorPart::Os]);
    let run =
        |events: &[(u8, &str, &str)], claimed: Option<&[(u8, &str, &str)]>, flavors: &[Flavor]| {
            let mut host = SoftTpm::new().unwrap();
            let mut log = boot(&mut host, events);
            if let Some(c) = claimed {
                log = boot(&mut SoftTpm::new().unwrap(), c);
            }
            let v = verified(&mut host, &quote_selection(flavors, "node-1"));
            appraise(
                &v,
                Some(&log),
                flavors,
                &MatchPolicy::default(),
                &ctx("node-1"),
                SystemTime::now(),
                VALIDITY,
            )
        };
    let trusted = run(GOLD_BOOT, None, &flavors);
    assert_eq!(trusted.verdict(), Trust::Trusted, "{:?}", trusted.reasons());
    assert_eq!(trusted.failure(), None);

    let mut evil = GOLD_BOOT.to_vec();
    evil[3] = (
        4,
        "boot application \\EFI\\debian\\grubx64.efi",
        "grub evil",
    );
    let mismatch = run(&evil, None, &flavors);
    assert_eq!(
        mismatch.failure(),
        Some(Failure::FlavorMismatch {
            part: FlavorPart::Os
        })
    );
    assert_eq!(mismatch.failure().unwrap().reason(), "flavor_mismatch");

    let liar = run(&evil, Some(GOLD_BOOT), &flavors);
    assert_eq!(liar.failure(), Some(Failure::ReplayMismatch));
    assert_eq!(liar.failure().unwrap().reason(), "replay_mismatch");

    let platform_only = gold_flavors(&[FlavorPart::Platform]);
    let none = run(GOLD_BOOT, None, &platform_only);
    assert_eq!(
        none.failure(),
        Some(Failure::NoFlavor {
            part: FlavorPart::Os
        })
    );
    assert_eq!(none.failure().unwrap().reason(), "no_flavor");
}
