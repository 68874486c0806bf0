//! End to end: a crypto-agile log built here is extended event by event into a swtpm, quoted
//! with tpm2-tools, and `nodetrust quote verify --eventlog` accepts it; the same log with one
//! event altered is rejected naming exactly the PCRs that no longer match.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a panic is a failed test"
)]

use std::path::Path;
use std::process::{Command, Output};

use nodetrust_eventlog::build::{image_load_event, variable_data, LogBuilder};
use nodetrust_eventlog::types as t;
use nodetrust_eventlog::uefi::Guid;
use nodetrust_testkit::{tpm2, Swtpm};
use nodetrust_tpm_wire::HashAlg;

const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

/// A small boot: firmware, Secure Boot variables, shim and grub, kernel and command line.
fn boot_log(grub_image: &[u8]) -> LogBuilder {
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.event(
        0,
        t::EV_S_CRTM_VERSION,
        &"1.0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    );
    b.measured(
        0,
        t::EV_EFI_PLATFORM_FIRMWARE_BLOB,
        b"firmware volume",
        &[0u8; 16],
    );
    b.event(
        7,
        t::EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(Guid::GLOBAL_VARIABLE, "SecureBoot", &[1]),
    );
    b.event(
        7,
        t::EV_EFI_VARIABLE_DRIVER_CONFIG,
        &variable_data(Guid::IMAGE_SECURITY_DATABASE, "db", b"db-cert"),
    );
    for pcr in 0..8 {
        b.event(pcr, t::EV_SEPARATOR, &[0, 0, 0, 0]);
    }
    b.event(
        4,
        t::EV_EFI_ACTION,
        b"Calling EFI Application from Boot Option",
    );
    b.measured(
        4,
        t::EV_EFI_BOOT_SERVICES_APPLICATION,
        b"shim image",
        &image_load_event("\\EFI\\ubuntu\\shimx64.efi", 10),
    );
    b.measured(
        4,
        t::EV_EFI_BOOT_SERVICES_APPLICATION,
        grub_image,
        &image_load_event("\\EFI\\ubuntu\\grubx64.efi", 10),
    );
    b.measured(9, t::EV_IPL, b"kernel bytes", b"/boot/vmlinuz-6.1.0\0");
    b.measured(
        8,
        t::EV_IPL,
        b"/boot/vmlinuz-6.1.0 root=/dev/sda1 ro",
        b"kernel_cmdline: /boot/vmlinuz-6.1.0 root=/dev/sda1 ro\0",
    );
    b
}

fn extend_all(tpm: &Swtpm, log: &LogBuilder) {
    for ev in log.events() {
        if ev.event_type == t::EV_NO_ACTION {
            continue;
        }
        let values: Vec<String> = ev
            .digests
            .iter()
            .map(|(a, d)| format!("{}={}", a.name(), hex::encode(d)))
            .collect();
        tpm2::run(
            tpm,
            "tpm2_pcrextend",
            &[&format!("{}:{}", ev.pcr, values.join(","))],
        )
        .unwrap();
    }
}

fn nodetrust(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodetrust"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn quote_verify_with_eventlog_end_to_end() {
    let tpm = Swtpm::start().unwrap();
    let good = boot_log(b"grub image");
    extend_all(&tpm, &good);
    let dir = tpm.scratch().to_path_buf();
    std::fs::write(dir.join("good.bin"), good.bytes()).unwrap();

    tpm2::run(
        &tpm,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"],
    )
    .unwrap();
    tpm2::run(
        &tpm,
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.pub",
        ],
    )
    .unwrap();
    let sel = "sha1:0,4,7,8,9+sha256:0,4,7,8,9";
    tpm2::run(
        &tpm,
        "tpm2_quote",
        &[
            "-c", "ak.ctx", "-l", sel, "-q", "abcdef01", "-m", "q.msg", "-s", "q.sig", "-o",
            "q.pcrs", "-g", "sha256",
        ],
    )
    .unwrap();
    let pcrs = tpm2::run(&tpm, "tpm2_pcrread", &[sel]).unwrap();
    std::fs::write(dir.join("q.yaml"), &pcrs.stdout).unwrap();

    let verify = |log: &str| {
        nodetrust(
            &[
                "quote",
                "verify",
                "--ak",
                "ak.pub",
                "--message",
                "q.msg",
                "--signature",
                "q.sig",
                "--pcrs",
                "q.yaml",
                "--nonce",
                "abcdef01",
                "--eventlog",
                log,
            ],
            &dir,
        )
    };

    // The genuine log replays to the quoted values of all ten PCRs.
    let ok = verify("good.bin");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("quote: genuine"), "{}", text(&ok));
    assert!(
        out.contains("event log: replays to the quoted values of 10 PCRs"),
        "{}",
        text(&ok)
    );

    // The replay command agrees with tpm2_pcrread's values too.
    let r = nodetrust(
        &["eventlog", "replay", "good.bin", "--pcrs", "q.yaml"],
        &dir,
    );
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));

    // One event altered: grub's image digest. Only PCR 4, in both banks, may be named.
    let bad = boot_log(b"another grub image");
    std::fs::write(dir.join("bad.bin"), bad.bytes()).unwrap();
    let rejected = verify("bad.bin");
    assert_eq!(rejected.status.code(), Some(1), "{}", text(&rejected));
    let err = String::from_utf8_lossy(&rejected.stderr);
    assert!(err.contains("(eventlog_mismatch)"), "{}", text(&rejected));
    assert!(
        err.contains("sha1:4 replays to") && err.contains("sha256:4 replays to"),
        "{}",
        text(&rejected)
    );
    for other in [
        "sha1:0 ",
        "sha1:7 ",
        "sha1:8 ",
        "sha1:9 ",
        "sha256:0 ",
        "sha256:7 ",
        "sha256:8 ",
        "sha256:9 ",
    ] {
        assert!(
            !err.contains(other),
            "{other} must not be named: {}",
            text(&rejected)
        );
    }

    // JSON output carries the reason for machines.
    let json = nodetrust(
        &[
            "quote",
            "verify",
            "--ak",
            "ak.pub",
            "--message",
            "q.msg",
            "--signature",
            "q.sig",
            "--pcrs",
            "q.yaml",
            "--eventlog",
            "bad.bin",
            "--format",
            "json",
        ],
        &dir,
    );
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["reason"], "eventlog_mismatch");

    // eventlog replay --pcrs names the same PCRs.
    let r = nodetrust(&["eventlog", "replay", "bad.bin", "--pcrs", "q.yaml"], &dir);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("sha256:4 replays to"),
        "{}",
        text(&r)
    );

    // The diff explains what changed.
    let d = nodetrust(&["eventlog", "diff", "good.bin", "bad.bin"], &dir);
    assert_eq!(d.status.code(), Some(1), "{}", text(&d));
    let stmt = String::from_utf8_lossy(&d.stdout);
    assert!(
        stmt.contains("PCR 4: boot application \\EFI\\ubuntu\\grubx64.efi changed (sha256 "),
        "{}",
        text(&d)
    );
    assert_eq!(stmt.lines().count(), 1, "{}", text(&d));

    // bench appraisal takes the same evidence, log included, and fails as quote verify does.
    for (log, code) in [("good.bin", 0), ("bad.bin", 1)] {
        let b = nodetrust(
            &[
                "bench",
                "appraisal",
                "--ak",
                "ak.pub",
                "--message",
                "q.msg",
                "--signature",
                "q.sig",
                "--pcrs",
                "q.yaml",
                "--eventlog",
                log,
                "--seconds",
                "0.2",
            ],
            &dir,
        );
        assert_eq!(b.status.code(), Some(code), "{log}: {}", text(&b));
        if code == 0 {
            assert!(String::from_utf8_lossy(&b.stdout)
                .lines()
                .last()
                .unwrap()
                .starts_with("appraisals/s: "));
        } else {
            assert!(
                String::from_utf8_lossy(&b.stderr).contains("(eventlog_mismatch)"),
                "{}",
                text(&b)
            );
        }
    }

    // A truncated log is rejected as malformed, naming the event and offset.
    let bytes = good.bytes();
    std::fs::write(dir.join("cut.bin"), &bytes[..bytes.len() - 7]).unwrap();
    let cut = verify("cut.bin");
    assert_eq!(cut.status.code(), Some(1), "{}", text(&cut));
    let err = String::from_utf8_lossy(&cut.stderr);
    assert!(
        err.contains("(malformed_eventlog)") && err.contains("event 17 at byte offset"),
        "{}",
        text(&cut)
    );

    // A missing file is unreadable input: exit 2.
    let missing = verify("nope.bin");
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
}

#[test]
fn log_covering_no_quoted_pcr_is_rejected() {
    let tpm = Swtpm::start().unwrap();
    let mut b = LogBuilder::crypto_agile(&BANKS);
    b.event(14, t::EV_IPL, b"MokList\0");
    extend_all(&tpm, &b);
    let dir = tpm.scratch().to_path_buf();
    std::fs::write(dir.join("l.bin"), b.bytes()).unwrap();
    tpm2::run(
        &tpm,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"],
    )
    .unwrap();
    tpm2::run(
        &tpm,
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.pub",
        ],
    )
    .unwrap();
    tpm2::run(
        &tpm,
        "tpm2_quote",
        &[
            "-c", "ak.ctx", "-l", "sha256:0", "-q", "01", "-m", "q.msg", "-s", "q.sig", "-g",
            "sha256",
        ],
    )
    .unwrap();
    let pcrs = tpm2::run(&tpm, "tpm2_pcrread", &["sha256:0"]).unwrap();
    std::fs::write(dir.join("q.yaml"), &pcrs.stdout).unwrap();
    let o = nodetrust(
        &[
            "quote",
            "verify",
            "--ak",
            "ak.pub",
            "--message",
            "q.msg",
            "--signature",
            "q.sig",
            "--pcrs",
            "q.yaml",
            "--eventlog",
            "l.bin",
        ],
        &dir,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(eventlog_not_covered)"),
        "{}",
        text(&o)
    );
}
