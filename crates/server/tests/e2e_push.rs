//! Push mode end to end with real processes: `nodetrust-server`, `nodetrust-agent --mode push`
//! on swtpm, a measured-boot log extended into the TPM. The push host registers, is trusted
//! from the evidence it pushes (the flavor imported from a pull gold host), becomes untrusted
//! naming PCR 4 once its boot changes, and `unknown` once its verdict expires after its agent
//! stops pushing; the server never connects to it (no address stored, no attestation on the
//! server's initiative, no report while the agent is gone). After its first push, each push
//! answers the challenge the last verdict carried, in one request.
//!
//! The agent binary is the workspace's `target/<profile>/nodetrust-agent` (built by
//! `cargo test --workspace`, or built here when missing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nodetrust_eventlog::build::{image_load_event, LogBuilder};
use nodetrust_eventlog::types;
use nodetrust_testkit::Swtpm;
use nodetrust_tpm_wire::HashAlg;
use serde_json::{json, Value};

mod common;
use common::e2e::{api, endorse_own_ek, extend_event, server_pin, TA_PASSWORD, TA_USER};
use common::processes::{agent_binary, free_port, wait_until, Proc};

/// Extends a boot into the swtpm and writes its log.
fn boot(tpm: &Swtpm, log_path: &Path) {
    let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    log.measured(0, types::EV_POST_CODE, b"firmware v1", b"POST CODE");
    for pcr in 0..8 {
        log.event(pcr, types::EV_SEPARATOR, &[0, 0, 0, 0]);
    }
    log.measured(
        4,
        types::EV_EFI_BOOT_SERVICES_APPLICATION,
        b"grub 2.06",
        &image_load_event("\\EFI\\debian\\grubx64.efi", 9),
    );
    log.event(9, types::EV_IPL, b"/boot/vmlinuz-6.1");
    for e in log.events() {
        extend_event(tpm, e);
    }
    std::fs::write(log_path, log.bytes()).unwrap();
}

/// Appends an event to PCR 4 of a running boot (the node booted another loader).
fn extend_pcr4(tpm: &Swtpm, log_path: &Path, what: &str) {
    let mut bytes = std::fs::read(log_path).unwrap();
    let mut extra = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    let header_len = extra.bytes().len();
    extra.measured(
        4,
        types::EV_EFI_BOOT_SERVICES_APPLICATION,
        what.as_bytes(),
        &image_load_event("\\EFI\\other\\loader.efi", 9),
    );
    extend_event(tpm, &extra.events()[0]);
    bytes.extend_from_slice(&extra.bytes()[header_len..]);
    std::fs::write(log_path, bytes).unwrap();
}

struct Node {
    name: &'static str,
    uuid: &'static str,
    tpm: Swtpm,
    state: tempfile::TempDir,
    log: PathBuf,
    port: u16,
}

impl Node {
    fn new(name: &'static str, uuid: &'static str) -> Self {
        let tpm = Swtpm::start().expect("swtpm (run `make test`, which installs it)");
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("binary_bios_measurements");
        boot(&tpm, &log);
        Self {
            name,
            uuid,
            tpm,
            state,
            log,
            port: free_port(),
        }
    }

    fn start_agent(&self, server_port: u16, server_pin: &str, mode: &str) -> Proc {
        let child = Command::new(agent_binary())
            .args(["--tcti", &self.tpm.tcti()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--state-dir", &self.state.path().display().to_string()])
            .args(["--eventlog", &self.log.display().to_string()])
            .args(["--host-name", self.name, "--hardware-uuid", self.uuid])
            .args([
                "--advertise-url",
                &format!("https://127.0.0.1:{}", self.port),
            ])
            .args(["--server-url", &format!("https://127.0.0.1:{server_port}")])
            .args(["--server-pin", server_pin])
            .args(["--ak-algorithm", "ecc-p256"])
            .args(["--mode", mode])
            .env("TRUSTAGENT_CONFIG", "/dev/null")
            .env("TRUSTAGENT_ADMIN_USERNAME", TA_USER)
            .env("TRUSTAGENT_ADMIN_PASSWORD", TA_PASSWORD)
            .env("MTWILSON_API_USERNAME", "agent")
            .env("MTWILSON_API_PASSWORD", "agent-pw")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc(child)
    }
}

fn host(port: u16, name: &str) -> Value {
    api(port, "GET", &format!("/mtwilson/v2/hosts/{name}"), None).1
}

fn reports(port: u16, name: &str) -> Vec<Value> {
    api(
        port,
        "GET",
        &format!("/mtwilson/v2/reports?host_name={name}&limit=1000"),
        None,
    )
    .1["reports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn pushed_attestations(port: u16) -> f64 {
    metric_sum(port, "nodetrust_attestations_total{")
}

/// The sum of the `/metrics` samples whose line starts with `prefix`.
fn metric_sum(port: u16, prefix: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-s", "-k", &format!("https://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_push_agent_on_swtpm_is_trusted_then_untrusted_after_a_changed_boot_then_unknown() {
    let ca = tempfile::tempdir().unwrap();
    let gold = Node::new("gold", "00000000-0000-0000-0000-00000000g01d");
    let node = Node::new("push-1", "00000000-0000-0000-0000-0000000000p1");
    std::fs::copy(
        &gold.tpm.template().issuer_cert,
        ca.path().join("issuer.pem"),
    )
    .unwrap();
    std::fs::copy(&gold.tpm.template().root_cert, ca.path().join("root.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Proc(
        Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--db",
                &format!("sqlite://{}/server.db", dir.path().display()),
            ])
            .args(["--state-dir", &dir.path().display().to_string()])
            .args(["--ek-ca-dir", &ca.path().display().to_string()])
            .args(["--attest-interval", "1s", "--report-validity", "4s"])
            .env("NODETRUST_ADMIN_USERNAME", "admin")
            .env("NODETRUST_ADMIN_PASSWORD", "admin-pw")
            .env("MTWILSON_API_USERNAME", "agent")
            .env("MTWILSON_API_PASSWORD", "agent-pw")
            .env("TRUSTAGENT_ADMIN_USERNAME", TA_USER)
            .env("TRUSTAGENT_ADMIN_PASSWORD", TA_PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the server", Duration::from_secs(30), || {
        api(port, "GET", "/healthz", None).0 == 200
    });
    let server_pin = server_pin(dir.path());
    endorse_own_ek(&node.tpm, node.state.path(), node.uuid, port);

    // The gold host is pulled (flavors are imported from a pull host); push-1 pushes.
    let _gold_agent = gold.start_agent(port, &server_pin, "pull");
    let push_agent = node.start_agent(port, &server_pin, "push");
    wait_until("registration", Duration::from_secs(60), || {
        api(port, "GET", "/mtwilson/v2/hosts/gold", None).0 == 200
            && api(port, "GET", "/mtwilson/v2/hosts/push-1", None).0 == 200
    });
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(json!({"from_host": "gold"})),
    );
    assert_eq!(s, 201, "{f}");

    // Trusted from the evidence it pushes (each push at most an interval + 10 % apart).
    wait_until("push-1 trusted", Duration::from_secs(15), || {
        host(port, "push-1")["trust"]["verdict"] == "trusted"
    });
    let h = host(port, "push-1");
    assert_eq!(h["connection_url"], "push:", "no address is kept: {h}");
    assert_eq!(h["status"], "connected", "{h}");
    // The server never attests it on its own initiative.
    let (s, e) = api(
        port,
        "POST",
        "/mtwilson/v2/host-attestations",
        Some(json!({"host_name": "push-1"})),
    );
    assert_eq!((s, e["reason"].as_str()), (409, Some("push_host")), "{e}");
    // It keeps pushing: new reports, counted in the metrics.
    let (n0, m0) = (reports(port, "push-1").len(), pushed_attestations(port));
    wait_until("more pushes", Duration::from_secs(10), || {
        reports(port, "push-1").len() >= n0 + 2 && pushed_attestations(port) >= m0 + 2.0
    });
    // Each push answers the challenge its last verdict carried: one request. (A challenge
    // given before the flavors were imported asks for other PCRs: refused once, 409.)
    let ahead = "nodetrust_push_evidence_total{challenge=\"ahead\"}";
    let stale = "nodetrust_push_evidence_total{challenge=\"stale\"}";
    let (a0, s0) = (metric_sum(port, ahead), metric_sum(port, stale));
    assert!(s0 <= 1.0, "{s0} refused");
    wait_until("pushes in one request", Duration::from_secs(10), || {
        metric_sum(port, ahead) >= a0 + 3.0
    });
    assert_eq!(metric_sum(port, stale), s0, "none refused since");

    // Its boot changes: the next push is untrusted, naming PCR 4 and the new loader.
    extend_pcr4(&node.tpm, &node.log, "another boot loader");
    wait_until("push-1 untrusted", Duration::from_secs(10), || {
        host(port, "push-1")["trust"]["verdict"] == "untrusted"
    });
    let reasons = host(port, "push-1")["trust"]["reasons"].to_string();
    assert!(
        reasons.contains("PCR 4") && reasons.contains("loader.efi"),
        "{reasons}"
    );

    // The agent stops pushing: the verdict holds until it expires, then the host is unknown,
    // with no attestation made by the server meanwhile.
    push_agent.stop();
    // (an evidence posted just before the stop is appraised and stored right after it)
    std::thread::sleep(Duration::from_millis(500));
    let stopped = reports(port, "push-1").len();
    wait_until("push-1 unknown", Duration::from_secs(10), || {
        host(port, "push-1")["trust"]["verdict"] == "unknown"
    });
    assert_eq!(
        reports(port, "push-1").len(),
        stopped,
        "no report was made for push-1 after its agent stopped"
    );
    // The pull gold host is attested all along.
    assert_eq!(host(port, "gold")["trust"]["verdict"], "trusted");
}
