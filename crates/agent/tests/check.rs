//! `nodetrust-agent check` against a real software TPM: every check passes on a healthy TPM;
//! a missing device, a TPM in dictionary-attack lockout, an unreadable configured event log fail
//! with exit status 1 and name the check; bad arguments exit with 2.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::process::{Command, Stdio};

use nodetrust_testkit::{tpm2, Swtpm};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn line(&self, check: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                l.strip_prefix("PASS ")
                    .or_else(|| l.strip_prefix("FAIL "))
                    .is_some_and(|rest| rest.starts_with(&format!("{check}:")))
            })
            .unwrap_or_else(|| panic!("no line for check {check:?} in:\n{}", self.stdout))
    }
}

/// `nodetrust-agent FLAGS... check` with a clean environment and the given extra variables.
fn check(flags: &[String], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodetrust-agent"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TRUSTAGENT_CONFIG", "/dev/null")
        .args(flags)
        .arg("check")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Flags for a TPM with event and IMA logs in `dir` (configured, so they must be readable).
fn flags(tcti: &str, dir: &std::path::Path) -> Vec<String> {
    let eventlog = dir.join("binary_bios_measurements");
    let ima = dir.join("binary_runtime_measurements");
    std::fs::write(&eventlog, [0u8; 32]).unwrap();
    std::fs::write(&ima, [0u8; 16]).unwrap();
    vec![
        format!("--tcti={tcti}"),
        format!("--state-dir={}", dir.join("state").display()),
        format!("--eventlog={}", eventlog.display()),
        format!("--ima-log={}", ima.display()),
    ]
}

#[test]
fn healthy_software_tpm_passes_every_check() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let run = check(&flags(&tpm.tcti(), dir.path()), &[]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for name in [
        "device",
        "tpm answers",
        "dictionary-attack lockout",
        "endorsement hierarchy",
        "state directory",
        "event log",
        "IMA log",
    ] {
        assert!(run.line(name).starts_with("PASS "), "{}", run.stdout);
    }
    assert!(!run.stdout.contains("FAIL "), "{}", run.stdout);
    assert!(
        run.line("tpm answers").contains("SOFTWARE TPM"),
        "{}",
        run.stdout
    );
    assert!(
        run.line("dictionary-attack lockout")
            .contains("0 failed authorization"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("VERDICT: ready"), "{}", run.stdout);
    // The AK was created where the agent keeps it, as on the agent's first start.
    let saved: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(saved.iter().any(|n| n.starts_with("ak-")), "{saved:?}");
}

#[test]
fn missing_device_fails_the_device_check_with_a_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-tpmrm0");
    let run = check(
        &flags(&format!("device:{}", missing.display()), dir.path()),
        &[],
    );
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let device = run.line("device");
    assert!(device.starts_with("FAIL device: "), "{device}");
    assert!(device.contains("does not exist"), "{device}");
    assert!(device.contains("Remedy"), "{device}");
    assert!(
        run.line("tpm answers").contains("not checked"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("VERDICT: not ready"), "{}", run.stdout);
}

#[test]
fn a_regular_file_in_place_of_the_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("tpmrm0");
    std::fs::write(&fake, b"").unwrap();
    let run = check(
        &flags(&format!("device:{}", fake.display()), dir.path()),
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.line("device").contains("not a character device"),
        "{}",
        run.stdout
    );
}

#[test]
fn tpm_in_dictionary_attack_lockout_fails_the_lockout_check() {
    let tpm = Swtpm::start().unwrap();
    tpm2::lock_out(&tpm).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let run = check(&flags(&tpm.tcti(), dir.path()), &[]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(run.line("device").starts_with("PASS"), "{}", run.stdout);
    assert!(
        run.line("tpm answers").starts_with("PASS"),
        "{}",
        run.stdout
    );
    let lockout = run.line("dictionary-attack lockout");
    assert!(lockout.starts_with("FAIL "), "{lockout}");
    assert!(lockout.contains("lockout at 1"), "{lockout}");
    assert!(lockout.contains("tpm2_dictionarylockout"), "{lockout}");
    assert!(
        run.line("endorsement hierarchy").contains("not checked"),
        "{}",
        run.stdout
    );
}

#[test]
fn disabled_endorsement_hierarchy_fails_its_check() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(
        &tpm,
        "tpm2_hierarchycontrol",
        &["-C", "p", "ehEnable", "clear"],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = check(&flags(&tpm.tcti(), dir.path()), &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let eh = run.line("endorsement hierarchy");
    assert!(eh.starts_with("FAIL "), "{eh}");
    assert!(eh.contains("ehEnable"), "{eh}");
}

#[test]
fn configured_event_log_that_is_missing_fails() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut f = flags(&tpm.tcti(), dir.path());
    for flag in &mut f {
        if flag.starts_with("--eventlog=") {
            *flag = format!("--eventlog={}", dir.path().join("absent.bin").display());
        }
    }
    let run = check(&f, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.line("event log").starts_with("FAIL "), "{}", run.stdout);
    assert!(run.line("IMA log").starts_with("PASS "), "{}", run.stdout);
}

#[test]
fn bad_arguments_exit_with_status_2() {
    let run = check(&["--no-such-flag".to_string()], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = check(
        &["--tcti=device:/nonexistent".to_string()],
        &[("TPM_OWNER_SECRET", "hex:zz")],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("TPM_OWNER_SECRET"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("zz"),
        "the secret is not echoed: {}",
        run.stderr
    );
}

#[test]
fn endorsement_auth_value_needs_the_configured_owner_secret() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(&tpm, "tpm2_changeauth", &["-c", "e", "endorsement-secret"]).unwrap();
    tpm2::run(&tpm, "tpm2_changeauth", &["-c", "o", "endorsement-secret"]).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let run = check(&flags(&tpm.tcti(), dir.path()), &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let eh = run.line("endorsement hierarchy");
    assert!(
        eh.starts_with("FAIL ") && eh.contains("TPM_OWNER_SECRET"),
        "{eh}"
    );

    let run = check(
        &flags(&tpm.tcti(), dir.path()),
        &[("TPM_OWNER_SECRET", "not-the-secret")],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let eh = run.line("endorsement hierarchy");
    assert!(
        eh.starts_with("FAIL ") && eh.contains("wrong or missing"),
        "{eh}"
    );
    assert!(
        !run.stdout.contains("not-the-secret"),
        "the secret is not echoed"
    );

    let run = check(
        &flags(&tpm.tcti(), dir.path()),
        &[("TPM_OWNER_SECRET", "endorsement-secret")],
    );
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.line("endorsement hierarchy")
            .contains("with TPM_OWNER_SECRET"),
        "{}",
        run.stdout
    );
}
