//! Named components and differences on real logs: what an operator reads in a verdict.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use nodetrust_eventlog::build::LogBuilder;
use nodetrust_eventlog::{describe, diff, ComponentKind, Event, EventLog, Replay};
use nodetrust_tpm_wire::HashAlg;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        nodetrust_testkit::fixtures_dir()
            .join("eventlogs")
            .join(name),
    )
    .unwrap()
}

fn components(log: &EventLog<'_>) -> Vec<(u32, ComponentKind, String, Option<String>)> {
    log.events
        .iter()
        .map(|e| {
            let c = describe(e);
            (e.pcr, c.kind, c.name, c.detail)
        })
        .collect()
}

#[test]
fn gce_ubuntu_boot_chain_is_named() {
    let bytes = fixture("event-gce-ubuntu-2104-log.bin");
    let log = EventLog::parse(&bytes).unwrap();
    let c = components(&log);
    let has = |pcr: u32, kind: ComponentKind, name: &str, detail: Option<&str>| {
        assert!(
            c.iter()
                .any(|x| x.0 == pcr && x.1 == kind && x.2 == name && x.3.as_deref() == detail),
            "missing PCR {pcr} {kind:?} {name:?} {detail:?}"
        );
    };
    has(
        4,
        ComponentKind::BootApplication,
        "\\EFI\\ubuntu\\shimx64.efi",
        Some("shim"),
    );
    has(
        4,
        ComponentKind::BootApplication,
        "\\EFI\\ubuntu\\grubx64.efi",
        Some("grub"),
    );
    has(
        7,
        ComponentKind::SecureBootVariable,
        "SecureBoot",
        Some("disabled"),
    );
    for v in ["PK", "KEK", "db", "dbx"] {
        has(7, ComponentKind::SecureBootVariable, v, None);
    }
    has(
        9,
        ComponentKind::Kernel,
        "/boot/vmlinuz-5.11.0-1008-gcp",
        None,
    );
    has(
        0,
        ComponentKind::CrtmVersion,
        "GCE Virtual Firmware v1",
        None,
    );
    let cmdline = c
        .iter()
        .find(|x| x.1 == ComponentKind::KernelCommandLine)
        .unwrap();
    assert_eq!(cmdline.0, 8);
    assert!(
        cmdline
            .2
            .ends_with("ima_hash=sha256 console=ttyS0 panic=-1"),
        "{}",
        cmdline.2
    );
    assert_eq!(
        c.iter().filter(|x| x.1 == ComponentKind::Separator).count(),
        8
    );
    assert!(
        c.iter()
            .filter(|x| x.1 == ComponentKind::GrubCommand)
            .count()
            > 50
    );
    let boot = c.iter().find(|x| x.2 == "Boot0003").unwrap();
    assert!(
        boot.3
            .as_deref()
            .unwrap()
            .ends_with("/\\EFI\\ubuntu\\shimx64.efi"),
        "{boot:?}"
    );
}

#[test]
fn systemd_boot_and_shim_logs_are_named() {
    let bytes = fixture("event-sd-boot-fedora37.bin");
    let log = EventLog::parse(&bytes).unwrap();
    let c = components(&log);
    assert!(c.iter().any(|x| x.0 == 12
        && x.1 == ComponentKind::KernelCommandLine
        && x.2 == "console=ttyS0 console=tty0 efi=debug"));
    assert!(c
        .iter()
        .any(|x| x.0 == 9 && x.1 == ComponentKind::Initrd && x.2 == "Linux initrd"));
    assert!(c.iter().any(|x| x
        .3
        .as_deref()
        .is_some_and(|d| d.contains("\\EFI\\systemd\\systemd-bootx64.efi"))));

    let bytes = fixture("event-moklisttrusted.bin");
    let log = EventLog::parse(&bytes).unwrap();
    let c = components(&log);
    for v in ["MokList", "MokListX", "MokListTrusted"] {
        assert!(
            c.iter()
                .any(|x| x.0 == 14 && x.1 == ComponentKind::ShimState && x.2 == v),
            "{v}"
        );
    }
    assert!(c
        .iter()
        .any(|x| x.0 == 7 && x.1 == ComponentKind::Authority && x.2 == "db"));
    assert!(c.iter().any(|x| x.0 == 9
        && x.1 == ComponentKind::Initrd
        && x.2.ends_with("initramfs-5.14.0-130.el9.x86_64.img")));
}

/// Rebuilds a log event by event, letting `edit` change events (None drops one).
fn rebuild(
    log: &EventLog<'_>,
    mut edit: impl FnMut(&Event<'_>) -> Option<(Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<u8> {
    let banks: Vec<HashAlg> = log.algorithms().iter().filter_map(|a| a.hash()).collect();
    let mut b = LogBuilder::crypto_agile(&banks);
    for e in log.measurements() {
        let Some((data, measured)) = edit(e) else {
            continue;
        };
        let digests = match measured {
            Some(m) => banks.iter().map(|h| (*h, h.digest(&m))).collect(),
            None => e
                .digests
                .iter()
                .map(|d| (d.hash().unwrap(), d.bytes.to_vec()))
                .collect(),
        };
        b.event_with_digests(e.pcr, e.event_type, digests, &data);
    }
    b.bytes()
}

#[test]
fn rebuilding_a_real_log_reproduces_its_bytes() {
    let bytes = fixture("event-gce-ubuntu-2104-log.bin");
    let log = EventLog::parse(&bytes).unwrap();
    let again = rebuild(&log, |e| Some((e.data.to_vec(), None)));
    assert_eq!(again, bytes);
    assert_eq!(EventLog::parse(&again).unwrap(), log);
}

#[test]
fn diff_explains_changes_in_words() {
    let bytes = fixture("event-gce-ubuntu-2104-log.bin");
    let gold = EventLog::parse(&bytes).unwrap();
    for name in [
        "event-arch-linux.bin",
        "event-uefi-sha1-log.bin",
        "event-gce-ubuntu-2104-log.bin",
        "event-moklisttrusted.bin",
    ] {
        let b = fixture(name);
        let l = EventLog::parse(&b).unwrap();
        assert!(diff(&l, &l).is_empty(), "{name} differs from itself");
    }

    let old_cmdline = "kernel_cmdline: /boot/vmlinuz-5.11.0-1008-gcp root=PARTUUID=bf817bdf-6a3a-4221-8edb-2c1ca7c5537f ro scsi_mod.use_blk_mq=Y ima_hash=sha256 console=ttyS0 panic=-1\0";
    let new_cmdline = old_cmdline.replace("panic=-1", "panic=-1 init=/bin/sh");
    let host_bytes = rebuild(&gold, |e| {
        let c = describe(e);
        match (c.kind, c.name.as_str()) {
            (ComponentKind::KernelCommandLine, _) => Some((
                new_cmdline.as_bytes().to_vec(),
                Some(new_cmdline.as_bytes()[16..new_cmdline.len() - 1].to_vec()),
            )),
            (ComponentKind::BootApplication, "\\EFI\\ubuntu\\grubx64.efi") => {
                Some((e.data.to_vec(), Some(b"patched grub".to_vec())))
            }
            (ComponentKind::SecureBootVariable, "db") => {
                Some((e.data.to_vec(), Some(b"another db".to_vec())))
            }
            (ComponentKind::SecureBootVariable, "dbx") => None,
            _ => Some((e.data.to_vec(), None)),
        }
    });
    let host = EventLog::parse(&host_bytes).unwrap();
    let text: Vec<String> = diff(&gold, &host).iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    assert!(
        text[0].starts_with("PCR 4: boot application \\EFI\\ubuntu\\grubx64.efi changed (sha256 "),
        "{text:#?}"
    );
    assert!(
        text[1].starts_with("PCR 7: db variable changed (sha256 "),
        "{text:#?}"
    );
    assert!(
        text[2].starts_with("PCR 7: dbx variable measured on the gold machine but not on the host"),
        "{text:#?}"
    );
    assert!(
        text[3].starts_with("PCR 8: kernel command line differs: `/boot/vmlinuz-5.11.0-1008-gcp"),
        "{text:#?}"
    );
    assert!(text[3].ends_with("panic=-1 init=/bin/sh`"), "{text:#?}");
    let reasons: Vec<&str> = diff(&gold, &host).iter().map(|d| d.reason()).collect();
    assert_eq!(
        reasons,
        [
            "boot_image_changed",
            "secure_boot_changed",
            "component_removed",
            "kernel_command_line_changed"
        ]
    );

    // Exactly the PCRs named in the diff replay differently.
    let (g, h) = (Replay::run(&gold), Replay::run(&host));
    let differing: Vec<u8> = (0..24)
        .filter(|p| g.get(HashAlg::Sha256, *p) != h.get(HashAlg::Sha256, *p))
        .collect();
    assert_eq!(differing, vec![4, 7, 8]);
    // Integrity: the new command line was measured as grub does, but the db event's data no
    // longer hashes to its digest (this test changed the digest only).
    let findings = nodetrust_eventlog::integrity::check(&host);
    assert_eq!(findings.len(), 3, "{findings:?}");
    assert!(findings
        .iter()
        .all(|f| f.pcr == 7 && describe(&host.events[f.event]).name == "db"));
}

/// What a statement says, written with `format!` from the component's parts: the definition
/// `Component::subject` and `Component::statement` (built without formatting) must keep.
fn statement_by_format(c: &nodetrust_eventlog::Component) -> (String, String) {
    use ComponentKind as K;
    let subject = match c.kind {
        K::SecureBootVariable | K::BootVariable | K::ShimState if !c.name.is_empty() => {
            format!("{} variable", c.name)
        }
        K::Authority if !c.name.is_empty() => format!("Secure Boot authority from {}", c.name),
        K::KernelCommandLine | K::GrubCommand | K::Separator => c.kind.label().to_string(),
        _ if c.name.is_empty() => c.kind.label().to_string(),
        _ => format!("{} {}", c.kind.label(), c.name),
    };
    let head = match c.kind {
        K::KernelCommandLine | K::GrubCommand => format!("{}: {}", c.kind.label(), c.name),
        _ => subject.clone(),
    };
    let statement = match &c.detail {
        Some(d) => format!("{head} ({d})"),
        None => head,
    };
    (subject, statement)
}

#[test]
fn every_real_events_statement_is_its_parts_formatted() {
    let dir = nodetrust_testkit::fixtures_dir().join("eventlogs");
    let mut seen = std::collections::BTreeSet::new();
    let mut events = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let Ok(log) = EventLog::parse(&bytes) else {
            continue;
        };
        for e in &log.events {
            let c = describe(e);
            let (subject, statement) = statement_by_format(&c);
            assert_eq!(c.subject(), subject, "{}: {c:?}", path.display());
            assert_eq!(c.statement(), statement, "{}: {c:?}", path.display());
            assert_eq!(c.to_string(), statement);
            seen.insert(c.kind);
            events += 1;
        }
    }
    // The fixtures hold grub's commands and command lines, files, variables with details.
    assert!(events > 400, "only {events} events read");
    for kind in [
        ComponentKind::GrubCommand,
        ComponentKind::KernelCommandLine,
        ComponentKind::BootApplication,
        ComponentKind::SecureBootVariable,
        ComponentKind::BootVariable,
        ComponentKind::Separator,
    ] {
        assert!(seen.contains(&kind), "no {kind:?} in the fixtures");
    }
}
