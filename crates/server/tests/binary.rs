//! The `nodetrust-server` binary: flags and environment, the generated TLS pair, the runbook
//! probe, a clean stop on SIGTERM, and a restart on the same database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port below the kernel's ephemeral range ([`nodetrust_testkit::free_port`]).
fn free_port() -> u16 {
    nodetrust_testkit::free_port().unwrap()
}

fn start(dir: &std::path::Path, port: u16) -> Child {
    start_with(dir, port, &[])
}

/// [`start`] with more environment variables.
fn start_with(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
        .envs(env.iter().copied())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--db", &format!("sqlite://{}/server.db", dir.display())])
        .args(["--state-dir", &dir.display().to_string()])
        .args(["--attest-interval", "5s", "--report-validity", "1m"])
        .env("NODETRUST_ADMIN_USERNAME", "admin")
        .env("NODETRUST_ADMIN_PASSWORD", "admin-pw")
        .env("MTWILSON_API_USERNAME", "agent")
        .env("MTWILSON_API_PASSWORD", "agent-pw")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn curl(port: u16, creds: Option<&str>, path: &str) -> String {
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut args = vec!["-o", "/dev/null", "-s", "-k", "-w", "%{http_code}"];
    if let Some(c) = creds {
        args.extend(["-u", c]);
    }
    args.push(&url);
    String::from_utf8(Command::new("curl").args(&args).output().unwrap().stdout).unwrap()
}

fn wait_ready(port: u16) {
    let start = Instant::now();
    while curl(port, None, "/healthz") != "200" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut child: Child) -> String {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn binary_serves_the_probe_stops_cleanly_and_restarts_on_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(dir.path(), port);
    wait_ready(port);
    assert!(dir.path().join("server.crt").exists() && dir.path().join("server.key").exists());
    assert_eq!(
        curl(
            port,
            Some("agent:agent-pw"),
            "/mtwilson/v2/tpm-endorsements"
        ),
        "200"
    );
    assert_eq!(
        curl(port, Some("agent:nope"), "/mtwilson/v2/tpm-endorsements"),
        "401"
    );
    assert_eq!(curl(port, None, "/mtwilson/v2/tpm-endorsements"), "401");
    assert_eq!(
        curl(port, Some("admin:admin-pw"), "/mtwilson/v2/hosts"),
        "200"
    );
    assert_eq!(curl(port, None, "/readyz"), "200");
    let log = stop(server);
    assert!(
        !log.contains("agent-pw") && !log.contains("admin-pw"),
        "secrets in the log: {log}"
    );
    assert!(log.contains("server TLS certificate"), "{log}");
    let cores = std::thread::available_parallelism().unwrap().get();
    let workers = (cores / 2).max(1);
    assert!(log.contains(&format!("workers={workers}")), "{log}");
    let cert_before = std::fs::read(dir.path().join("server.crt")).unwrap();
    let port2 = free_port();
    // A count other than the default, set by the environment.
    let set = (workers + 1).to_string();
    let server = start_with(dir.path(), port2, &[("NODETRUST_WORKER_THREADS", &set)]);
    wait_ready(port2);
    // A second server on the same SQLite file is refused while this one runs.
    let refused = start(dir.path(), free_port()).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("another nodetrust-server serves this SQLite database"),
        "{}: {err}",
        refused.status
    );
    assert_eq!(
        curl(port2, Some("admin:admin-pw"), "/mtwilson/v2/hosts"),
        "200"
    );
    assert_eq!(
        std::fs::read(dir.path().join("server.crt")).unwrap(),
        cert_before,
        "the generated pair is kept"
    );
    let log = stop(server);
    assert!(log.contains(&format!("workers={set}")), "{log}");
}

#[test]
fn help_documents_the_interface_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--db",
        "--state-dir",
        "--tls-cert",
        "--tls-key",
        "--ek-ca-dir",
        "--attest-interval",
        "--report-validity",
        "--report-retention",
        "--change-retention",
        "NODETRUST_REPORT_RETENTION",
        "NODETRUST_CHANGE_RETENTION",
        "--worker-threads",
        "NODETRUST_WORKER_THREADS",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(
        help.contains("0.0.0.0:8443")
            && help.contains("sqlite:///var/lib/nodetrust/server.db")
            && help.contains("10m")
            && help.contains("[default: 7d]")
    );
}

#[test]
fn a_retention_shorter_than_the_validity_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
        .args([
            "--db",
            &format!("sqlite://{}/server.db", dir.path().display()),
        ])
        .args(["--report-validity", "1h"])
        .env("NODETRUST_CHANGE_RETENTION", "30m")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--change-retention (30m) is shorter than --report-validity (1h)"),
        "{err}"
    );
    assert!(
        !dir.path().join("server.db").exists(),
        "refused before opening the database"
    );
}
