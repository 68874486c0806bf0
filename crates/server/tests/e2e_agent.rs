//! End to end with real processes: `nodetrust-server`, `nodetrust-agent` on swtpm (one per
//! node), measured-boot logs extended into the TPMs. Register, import the flavor from the gold
//! host, trusted; restart an agent on a TPM whose PCR 4 now differs and see `untrusted` naming
//! PCR 4 within 2 s; stop an agent and see `unreachable` then `unknown`, never `untrusted`;
//! restart the server on the same database with nothing lost.
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
use std::time::{Duration, Instant};

use nodetrust_eventlog::build::{image_load_event, LogBuilder};
use nodetrust_eventlog::types;
use nodetrust_testkit::Swtpm;
use nodetrust_tpm_wire::HashAlg;
use serde_json::{json, Value};

mod common;
use common::e2e::{api, endorse_own_ek, extend_event, server_pin, TA_PASSWORD, TA_USER};
use common::processes::{agent_binary, free_port, wait_until, Proc};

/// Extends a boot into the swtpm and writes its log.
fn boot(tpm: &Swtpm, log_path: &Path, grub: &str, extra: Option<&str>) {
    let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    log.measured(0, types::EV_POST_CODE, b"firmware v1", b"POST CODE");
    for pcr in 0..8 {
        log.event(pcr, types::EV_SEPARATOR, &[0, 0, 0, 0]);
    }
    log.measured(
        4,
        types::EV_EFI_BOOT_SERVICES_APPLICATION,
        b"shim 15.7",
        &image_load_event("\\EFI\\BOOT\\shimx64.efi", 9),
    );
    log.measured(
        4,
        types::EV_EFI_BOOT_SERVICES_APPLICATION,
        grub.as_bytes(),
        &image_load_event("\\EFI\\debian\\grubx64.efi", 9),
    );
    if let Some(e) = extra {
        log.measured(
            4,
            types::EV_EFI_BOOT_SERVICES_APPLICATION,
            e.as_bytes(),
            &image_load_event("\\EFI\\other\\loader.efi", 9),
        );
    }
    log.event(
        8,
        types::EV_IPL,
        b"kernel_cmdline: /vmlinuz-6.1 root=/dev/sda2 ro",
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

struct Server {
    dir: PathBuf,
    port: u16,
    ca_dir: PathBuf,
}

impl Server {
    fn start(&self) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--db",
                &format!("sqlite://{}/server.db", self.dir.display()),
            ])
            .args(["--state-dir", &self.dir.display().to_string()])
            .args(["--ek-ca-dir", &self.ca_dir.display().to_string()])
            .args(["--attest-interval", "60s", "--report-validity", "4s"])
            .env("NODETRUST_ADMIN_USERNAME", "admin")
            .env("NODETRUST_ADMIN_PASSWORD", "admin-pw")
            .env("MTWILSON_API_USERNAME", "agent")
            .env("MTWILSON_API_PASSWORD", "agent-pw")
            .env("TRUSTAGENT_ADMIN_USERNAME", TA_USER)
            .env("TRUSTAGENT_ADMIN_PASSWORD", TA_PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port = self.port;
        wait_until("the server", Duration::from_secs(30), || {
            api(port, "GET", "/healthz", None).0 == 200
        });
        Proc(child)
    }

    fn pin(&self) -> String {
        server_pin(&self.dir)
    }
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
    fn new(name: &'static str, uuid: &'static str, grub: &str) -> Self {
        let tpm = Swtpm::start().expect("swtpm (run `make test`, which installs it)");
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("binary_bios_measurements");
        boot(&tpm, &log, grub, None);
        Self {
            name,
            uuid,
            tpm,
            state,
            log,
            port: free_port(),
        }
    }

    fn start_agent(&self, server: &Server) -> Proc {
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
            .args([
                "--server-url",
                &format!("https://127.0.0.1:{}", server.port),
            ])
            .args(["--server-pin", &server.pin()])
            .args(["--ak-algorithm", "ecc-p256"])
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

fn trust(port: u16, host: &str) -> Value {
    api(port, "GET", &format!("/mtwilson/v2/hosts/{host}"), None).1
}

#[test]
fn real_agents_on_swtpm_trusted_then_pcr4_untrusted_then_unreachable_unknown() {
    let ca = tempfile::tempdir().unwrap();
    let gold = Node::new("gold", "00000000-0000-0000-0000-00000000g01d", "grub 2.06");
    let node = Node::new(
        "node-1",
        "00000000-0000-0000-0000-000000000001",
        "grub 2.06",
    );
    std::fs::copy(
        &gold.tpm.template().issuer_cert,
        ca.path().join("issuer.pem"),
    )
    .unwrap();
    std::fs::copy(&gold.tpm.template().root_cert, ca.path().join("root.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server {
        dir: dir.path().to_path_buf(),
        port: free_port(),
        ca_dir: ca.path().to_path_buf(),
    };
    let srv = server.start();
    let port = server.port;

    // Every swtpm of the testkit is a copy of one manufactured TPM, so all share one EK; a
    // host's identity is its EK, so node-1 gets its own (a new endorsement primary seed) and an
    // admin endorses it for node-1's hardware UUID.
    endorse_own_ek(&node.tpm, node.state.path(), node.uuid, port);
    // Both agents register (gold's EK certificate chains to the swtpm CA; node-1's EK is
    // endorsed), prove their AK, start.
    let gold_agent = gold.start_agent(&server);
    let node_agent = node.start_agent(&server);
    wait_until("registration", Duration::from_secs(60), || {
        api(port, "GET", "/mtwilson/v2/hosts/gold", None).0 == 200
            && api(port, "GET", "/mtwilson/v2/hosts/node-1", None).0 == 200
    });
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(json!({"from_host": "gold"})),
    );
    assert_eq!(s, 201, "{f}");
    for host in ["gold", "node-1"] {
        let (s, r) = api(
            port,
            "POST",
            "/mtwilson/v2/host-attestations",
            Some(json!({"host_name": host})),
        );
        assert_eq!(
            (s, r["verdict"].as_str()),
            (200, Some("trusted")),
            "{host}: {r}"
        );
    }

    // node-1 restarts on a TPM whose PCR 4 now differs: untrusted, naming PCR 4, within 2 s.
    node_agent.stop();
    extend_pcr4(&node.tpm, &node.log, "another boot loader");
    let restarted = Instant::now();
    let node_agent = node.start_agent(&server);
    wait_until(
        "untrusted after the restart",
        Duration::from_secs(2),
        || trust(port, "node-1")["trust"]["verdict"] == "untrusted",
    );
    assert!(restarted.elapsed() < Duration::from_secs(2));
    let t = trust(port, "node-1");
    let reasons = t["trust"]["reasons"].to_string();
    assert!(reasons.contains("PCR 4"), "{t}");
    assert!(reasons.contains("loader.efi"), "{t}");

    // The gold agent stops: unreachable, then unknown once its verdict expires; never untrusted.
    let (s, r) = api(
        port,
        "POST",
        "/mtwilson/v2/host-attestations",
        Some(json!({"host_name": "gold"})),
    );
    assert_eq!((s, r["verdict"].as_str()), (200, Some("trusted")), "{r}");
    let reports_while_up = api(port, "GET", "/mtwilson/v2/reports?host_name=gold", None).1
        ["reports"]
        .as_array()
        .unwrap()
        .len();
    gold_agent.stop();
    let (s, e) = api(
        port,
        "POST",
        "/mtwilson/v2/host-attestations",
        Some(json!({"host_name": "gold"})),
    );
    assert_eq!((s, e["reason"].as_str()), (502, Some("agent_error")), "{e}");
    let t = trust(port, "gold");
    assert_eq!(t["status"], "unreachable", "{t}");
    assert_ne!(t["trust"]["verdict"], "untrusted", "{t}");
    wait_until("unknown after expiry", Duration::from_secs(6), || {
        trust(port, "gold")["trust"]["verdict"] == "unknown"
    });
    let (s, _) = api(
        port,
        "POST",
        "/mtwilson/v2/host-attestations",
        Some(json!({"host_name": "gold"})),
    );
    assert_eq!(s, 502);
    let (_, reports) = api(port, "GET", "/mtwilson/v2/reports?host_name=gold", None);
    let reports = reports["reports"].as_array().unwrap();
    let since_stop = &reports[..reports.len() - reports_while_up];
    assert!(
        !since_stop.is_empty() && since_stop.iter().all(|r| r["verdict"] == "unknown"),
        "{since_stop:?}"
    );

    // The server restarts on the same database: hosts, flavors and reports are all there.
    let (_, hosts_before) = api(port, "GET", "/mtwilson/v2/hosts", None);
    let (_, flavors_before) = api(port, "GET", "/mtwilson/v2/flavors", None);
    let (_, reports_before) = api(port, "GET", "/mtwilson/v2/reports?limit=1000", None);
    srv.stop();
    let srv = server.start();
    assert_eq!(
        api(port, "GET", "/mtwilson/v2/flavors", None).1,
        flavors_before
    );
    // The same reports (each read signs them anew: compared without their signatures).
    let (_, key) = api(port, "GET", "/mtwilson/v2/signing-key", None);
    assert_eq!(
        common::unsigned_reports(
            &api(port, "GET", "/mtwilson/v2/reports?limit=1000", None).1,
            &key["jwk"]
        ),
        common::unsigned_reports(&reports_before, &key["jwk"])
    );
    let (_, hosts_after) = api(port, "GET", "/mtwilson/v2/hosts", None);
    let names = |v: &Value| {
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&hosts_before), names(&hosts_after));
    // And it still attests node-1 through its pinned AK and TLS certificate.
    let (s, r) = api(
        port,
        "POST",
        "/mtwilson/v2/host-attestations",
        Some(json!({"host_name": "node-1"})),
    );
    assert_eq!((s, r["verdict"].as_str()), (200, Some("untrusted")), "{r}");
    drop(node_agent);
    drop(srv);
}
