//! `nodetrust-sim` against the real `nodetrust-server` binary: the simulator's CA given to the
//! server's `--ek-ca-dir`, a few hundred hosts registered over HTTPS (EK certificates checked,
//! credentials activated), a flavor imported from the first, every host trusted through the
//! API, and attestations counted in `/metrics`. Without the CA the registration is refused.
//! With `--mode push` the hosts (but the gold one) push their evidence, are stored without an
//! address, and are trusted. With `--boot-log` and a real machine's log the flavor holds that
//! log's events and every host is trusted.
//!
//! The server binary is the one built beside `nodetrust-sim` (`cargo test --workspace` builds
//! both; alone: `cargo build -p nodetrust-server && cargo test -p nodetrust-sim`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyper::Method;
use nodetrust_sim::client::{Credentials, Server, ServerTrust};

const ADMIN: (&str, &str) = ("admin", "admin-pw");
const AGENT: (&str, &str) = ("agent", "agent-pw");

fn sim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodetrust-sim"))
}

fn server_bin() -> PathBuf {
    let p = sim_bin().with_file_name("nodetrust-server");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p nodetrust-server)",
        p.display()
    );
    p
}

/// A free loopback port below the kernel's ephemeral range ([`nodetrust_testkit::free_port`]).
fn free_port() -> u16 {
    nodetrust_testkit::free_port().unwrap()
}

/// Kills the child on drop (a failed assertion leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_server(dir: &Path, port: u16, ca_dir: Option<&Path>) -> Running {
    let mut c = Command::new(server_bin());
    c.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--db", &format!("sqlite://{}/server.db", dir.display())])
        .args(["--state-dir", &dir.join("state").display().to_string()])
        .args(["--attest-interval", "2s", "--report-validity", "1m"])
        .env("NODETRUST_ADMIN_USERNAME", ADMIN.0)
        .env("NODETRUST_ADMIN_PASSWORD", ADMIN.1)
        .env("MTWILSON_API_USERNAME", AGENT.0)
        .env("MTWILSON_API_PASSWORD", AGENT.1)
        .env("TRUSTAGENT_ADMIN_USERNAME", "ta")
        .env("TRUSTAGENT_ADMIN_PASSWORD", "ta-pw")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(ca) = ca_dir {
        c.args(["--ek-ca-dir", &ca.display().to_string()]);
    }
    Running(c.spawn().unwrap())
}

fn sim_command(dir: &Path, port: u16, hosts: usize) -> Command {
    let mut c = Command::new(sim_bin());
    c.arg("run")
        .args(["--server", &format!("https://127.0.0.1:{port}")])
        .args(["--ca-dir", &dir.join("ca").display().to_string()])
        .args(["--hosts", &hosts.to_string()])
        .args([
            "--server-ca",
            &dir.join("state/server.crt").display().to_string(),
        ])
        .env("NODETRUST_ADMIN_USERNAME", ADMIN.0)
        .env("NODETRUST_ADMIN_PASSWORD", ADMIN.1)
        .env("MTWILSON_API_USERNAME", AGENT.0)
        .env("MTWILSON_API_PASSWORD", AGENT.1)
        .env("TRUSTAGENT_ADMIN_USERNAME", "ta")
        .env("TRUSTAGENT_ADMIN_PASSWORD", "ta-pw")
        .env_remove("NODETRUST_SERVER_CA")
        .env_remove("NODETRUST_SERVER_PIN");
    c
}

fn write_ca(dir: &Path) {
    let out = Command::new(sim_bin())
        .args(["ca", "--out", &dir.join("ca").display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join("ca/nodetrust-sim-ek-ca.pem").exists());
}

async fn get(server: &Server, path: &str, creds: &Credentials) -> (u16, String) {
    let mut conn = server.conn();
    match conn.call(Method::GET, path, creds, None).await {
        Ok(a) => (a.status, String::from_utf8_lossy(&a.body).into_owned()),
        Err(e) => (0, e.to_string()),
    }
}

async fn wait_ready(server: &Server) {
    let anyone = Credentials::basic("-", "-");
    let start = Instant::now();
    while get(server, "/healthz", &anyone).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the server (with the simulator's CA as its `--ek-ca-dir` when `with_ca`), waits for
/// its self-signed certificate and `/readyz`, and returns it with a client trusting exactly
/// that certificate.
async fn start_ready(dir: &Path, port: u16, with_ca: bool) -> (Running, Server) {
    let ca = dir.join("ca");
    let running = start_server(dir, port, with_ca.then_some(ca.as_path()));
    let start = Instant::now();
    while !dir.join("state/server.crt").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no server certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = Server::new(
        &format!("https://127.0.0.1:{port}"),
        &ServerTrust::CaFile(dir.join("state/server.crt")),
    )
    .unwrap();
    wait_ready(&server).await;
    (running, server)
}

/// Starts `nodetrust-sim run` and reads its output until `registered: N`.
fn run_until_registered(
    dir: &Path,
    port: u16,
    hosts: usize,
    extra: &[&str],
) -> (Running, Vec<String>) {
    let mut sim = sim_command(dir, port, hosts)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = sim.stdout.take().unwrap();
    let sim = Running(sim);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = l == format!("registered: {hosts}");
                lines.push(l);
                if done {
                    return (sim, lines);
                }
            }
            Err(_) => panic!("no `registered: {hosts}` line; the simulator printed {lines:#?}"),
        }
    }
}

fn attestations_ok(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("nodetrust_attestations_total{result=\"trusted\",reason=\"ok\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The unlabelled counter `name` in `metrics`.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// Waits until the simulator's agents have left out an unchanged event log and unchanged PCR
/// values (the server named them in their quote requests) at least `n` times.
async fn wait_logs_left_out(server: &Server, n: f64) {
    let admin = Credentials::basic(ADMIN.0, ADMIN.1);
    let start = Instant::now();
    loop {
        let (_, m) = get(server, "/metrics", &admin).await;
        let left_out = counter(&m, "nodetrust_event_logs_left_out_total")
            .min(counter(&m, "nodetrust_pcr_values_left_out_total"));
        if left_out >= n {
            assert_eq!(counter(&m, "nodetrust_event_logs_needed_total"), 0.0, "{m}");
            assert_eq!(counter(&m, "nodetrust_pcr_values_needed_total"), 0.0, "{m}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{left_out} event logs left out, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_hosts_register_with_the_server_binary_and_are_trusted() {
    const HOSTS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path());
    let port = free_port();
    let (server_proc, server) = start_ready(dir.path(), port, true).await;

    let (sim, lines) = run_until_registered(dir.path(), port, HOSTS, &[]);
    assert!(
        lines.iter().any(|l| l == "flavor imported from sim-0"),
        "{lines:#?}"
    );

    // Every host trusted, as the API tells it.
    let admin = Credentials::basic(ADMIN.0, ADMIN.1);
    let start = Instant::now();
    let verdicts = loop {
        let (status, body) = get(&server, "/mtwilson/v2/hosts", &admin).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let hosts = v["hosts"].as_array().unwrap().clone();
        let trusted = hosts
            .iter()
            .filter(|h| h["trust"]["verdict"] == "trusted")
            .count();
        if hosts.len() == HOSTS && trusted == HOSTS {
            break hosts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{trusted} of {} hosts trusted: {}",
            hosts.len(),
            hosts
                .iter()
                .find(|h| h["trust"]["verdict"] != "trusted")
                .map(|h| h.to_string())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(verdicts
        .iter()
        .all(|h| h["status"] == "connected" && h["name"].as_str().unwrap().starts_with("sim-")));

    // Attestations keep coming (every host is due every 2 s).
    let (_, m1) = get(&server, "/metrics", &admin).await;
    let first = attestations_ok(&m1);
    assert!(first >= HOSTS as f64, "{first} trusted attestations: {m1}");
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, m2) = get(&server, "/metrics", &admin).await;
        if attestations_ok(&m2) > first {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nodetrust_attestations_total did not rise from {first}"
        );
    }
    // Once appraised, a host's unchanged log is left out of its answers.
    wait_logs_left_out(&server, HOSTS as f64).await;
    assert!(sim.terminate().success());
    assert!(server_proc.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_simulator_ca_the_server_refuses_its_hosts() {
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path());
    let port = free_port();
    let (_server_proc, _) = start_ready(dir.path(), port, false).await;
    let out = tokio::task::spawn_blocking({
        let mut c = sim_command(dir.path(), port, 3);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 403") && err.contains("ek_not_endorsed"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("registered:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_push_hosts_are_trusted_without_the_server_connecting_to_them() {
    const HOSTS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path());
    let port = free_port();
    let (server_proc, server) = start_ready(dir.path(), port, true).await;
    let (sim, _) = run_until_registered(dir.path(), port, HOSTS, &["--mode", "push"]);
    let admin = Credentials::basic(ADMIN.0, ADMIN.1);
    let start = Instant::now();
    let hosts = loop {
        let (status, body) = get(&server, "/mtwilson/v2/hosts", &admin).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let hosts = v["hosts"].as_array().unwrap().clone();
        if hosts.len() == HOSTS && hosts.iter().all(|h| h["trust"]["verdict"] == "trusted") {
            break hosts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not every host trusted: {hosts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The gold host sim-0 is pulled; every other host pushes and has no address.
    for h in &hosts {
        let push = h["name"] != "sim-0";
        assert_eq!(h["connection_url"] == "push:", push, "{h}");
    }
    // Pushes keep coming, and are counted as attestations.
    let (_, m1) = get(&server, "/metrics", &admin).await;
    let first = attestations_ok(&m1);
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, m2) = get(&server, "/metrics", &admin).await;
        if attestations_ok(&m2) >= first + HOSTS as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pushed attestations did not rise from {first}"
        );
    }
    wait_logs_left_out(&server, HOSTS as f64).await;
    assert!(sim.terminate().success());
    assert!(server_proc.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_measuring_a_real_machines_log_are_trusted() {
    const HOSTS: usize = 20;
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eventlogs/event-gce-ubuntu-2104-log.bin");
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path());
    let port = free_port();
    let (server_proc, server) = start_ready(dir.path(), port, true).await;
    let (sim, _) = run_until_registered(
        dir.path(),
        port,
        HOSTS,
        &["--boot-log", log.to_str().unwrap()],
    );
    let admin = Credentials::basic(ADMIN.0, ADMIN.1);
    // The flavors learned from sim-0 hold the log's events: 97 of its 112 in SHA-256 (the
    // kernel command line and the initrd are left to a host's own flavor).
    let (status, body) = get(&server, "/mtwilson/v2/flavors", &admin).await;
    assert_eq!(status, 200, "{body}");
    let flavors: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events: usize = flavors["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["pcrs"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["bank"] == "sha256")
        .map(|r| r["events"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(events >= 90, "{events} events in the flavors: {body}");
    let start = Instant::now();
    loop {
        let (status, body) = get(&server, "/mtwilson/v2/hosts", &admin).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let hosts = v["hosts"].as_array().unwrap().clone();
        if hosts.len() == HOSTS && hosts.iter().all(|h| h["trust"]["verdict"] == "trusted") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not every host trusted: {hosts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_logs_left_out(&server, HOSTS as f64).await;
    assert!(sim.terminate().success());
    assert!(server_proc.terminate().success());
}
