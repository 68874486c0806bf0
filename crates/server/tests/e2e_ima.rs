//! Runtime integrity end to end with real processes: `nodetrust-server`, `nodetrust-agent
//! --ima-log` on swtpm. No machine here has IMA in its kernel, so the testkit writes each
//! node's IMA log ([`ImaLogBuilder`]) and extends its entries into the swtpm's PCR 10 (with the
//! agent stopped: swtpm serves one connection at a time), as the kernel would.
//!
//! - `runtime_flavor_policy_names_files_replay_and_reboot`: a RUNTIME flavor learned from the
//!   gold host (`{"from_host", "parts": ["PLATFORM", "OS", "RUNTIME"]}`) trusts hosts running
//!   only its files; an operator's policy with a trusted signing key and an excluded path
//!   trusts a host running a signed file and an unknown file under `/tmp`; an unknown binary
//!   makes a host untrusted with its path in the reasons (not before the quote covers it); a
//!   log edited or truncated to hide an entry no longer replays; a reboot starts over at entry
//!   0; hosts without a RUNTIME flavor are not asked for their IMA log.
//! - `hundred_thousand_entries_appraised_once_each`: 100,000 entries in four attestations,
//!   each answer bounded (the server asks again), every entry appraised exactly once
//!   (`nodetrust_ima_entries_appraised_total`, `nodetrust_ima_entries_received_total`).
//!
//! The agent binary is the workspace's `target/<profile>/nodetrust-agent` (built here when
//! missing).
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

use nodetrust_appraise::runtime::RuntimePolicy;
use nodetrust_eventlog::build::{image_load_event, LogBuilder};
use nodetrust_eventlog::types;
use nodetrust_testkit::ima::{ImaLogBuilder, TestKeyKind, TestSigningKey};
use nodetrust_testkit::{tpm2, Swtpm};
use nodetrust_tpm_wire::{HashAlg, PcrValues};
use serde_json::{json, Value};

mod common;
use common::e2e::{api, curl, endorse_own_ek, extend_event, server_pin, TA_PASSWORD, TA_USER};
use common::processes::{agent_binary, free_port, wait_until, Proc};

const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

/// What every node of the fleet runs.
const FILES: [(&str, &[u8]); 8] = [
    ("/usr/lib/systemd/systemd", b"systemd 252"),
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", b"glibc 2.36"),
    ("/usr/bin/bash", b"bash 5.2"),
    ("/usr/bin/containerd", b"containerd 1.7"),
    ("/usr/bin/kubelet", b"kubelet 1.30"),
    ("/usr/bin/runc", b"runc 1.1"),
    ("/usr/sbin/sshd", b"openssh 9.2"),
    ("/etc/ld.so.cache", b"ld cache"),
];

/// Extends a measured boot into the swtpm and writes its event log.
fn boot(tpm: &Swtpm, log_path: &Path) {
    let mut log = LogBuilder::crypto_agile(&BANKS);
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
    log.event(
        8,
        types::EV_IPL,
        b"kernel_cmdline: /vmlinuz-6.1 root=/dev/sda2 ro ima_policy=tcb",
    );
    log.event(9, types::EV_IPL, b"/boot/vmlinuz-6.1");
    for e in log.events() {
        extend_event(tpm, e);
    }
    std::fs::write(log_path, log.bytes()).unwrap();
}

/// PCRs 0-9 of `bank` as the TPM holds them.
fn boot_pcrs(tpm: &Swtpm, bank: HashAlg) -> PcrValues {
    let out = tpm2::run(
        tpm,
        "tpm2_pcrread",
        &[&format!("{}:0,1,2,3,4,5,6,7,8,9", bank.name())],
    )
    .unwrap();
    let mut v = PcrValues::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if let Some((i, hexv)) = line.trim().split_once(" : 0x") {
            v.insert(
                bank,
                i.trim().parse().unwrap(),
                hex::decode(hexv.trim()).unwrap(),
            )
            .unwrap();
        }
    }
    assert_eq!(v.len(), 10, "PCRs 0-9 of {bank}");
    v
}

/// Extends entries `from..` of `log` into PCR 10 (both banks), 2,000 per tpm2_pcrextend.
fn extend_ima(tpm: &Swtpm, log: &ImaLogBuilder, from: usize) {
    let args = log.pcrextend_args(&BANKS, from);
    for chunk in args.chunks(2000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        // tpm2::run would also flush transient objects: fine here, no agent is connected.
        tpm2::run(tpm, "tpm2_pcrextend", &refs).unwrap();
    }
}

/// A counter of the server's `/metrics` (0 when absent).
fn metric(port: u16, name: &str) -> u64 {
    let (_, v) = curl(&[&format!("https://127.0.0.1:{port}/metrics")], None);
    let text = v.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Attests `host` now: (verdict, reasons as one text, the report).
fn attest(port: u16, host: &str) -> (String, String, Value) {
    let (s, r) = api(
        port,
        "POST",
        "/mtwilson/v2/host-attestations",
        Some(json!({"host_name": host})),
    );
    assert_eq!(s, 200, "{host}: {r}");
    (
        r["verdict"].as_str().unwrap().to_string(),
        r["reasons"].to_string(),
        r,
    )
}

/// The payload of a signed report (JWS compact form), as JSON.
fn signed_payload(report: &Value) -> Value {
    use base64::Engine as _;
    let jws = report["signed_report"].as_str().unwrap();
    let payload = jws.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

struct Server {
    dir: tempfile::TempDir,
    port: u16,
    ca_dir: tempfile::TempDir,
}

impl Server {
    fn start(template: &nodetrust_testkit::TemplateInfo) -> (Self, Proc) {
        // Attestations come from the test (and from agents' start events) only.
        Self::start_every(template, "1h")
    }

    /// A server that attests (or has pushed) every `interval`.
    fn start_every(template: &nodetrust_testkit::TemplateInfo, interval: &str) -> (Self, Proc) {
        let ca_dir = tempfile::tempdir().unwrap();
        std::fs::copy(&template.issuer_cert, ca_dir.path().join("issuer.pem")).unwrap();
        std::fs::copy(&template.root_cert, ca_dir.path().join("root.pem")).unwrap();
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            ca_dir,
        };
        let child = Command::new(env!("CARGO_BIN_EXE_nodetrust-server"))
            .args(["--listen", &format!("127.0.0.1:{}", s.port)])
            .args([
                "--db",
                &format!("sqlite://{}/server.db", s.dir.path().display()),
            ])
            .args(["--state-dir", &s.dir.path().display().to_string()])
            .args(["--ek-ca-dir", &s.ca_dir.path().display().to_string()])
            .args(["--attest-interval", interval, "--report-validity", "10m"])
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
        let port = s.port;
        wait_until("the server", Duration::from_secs(30), || {
            api(port, "GET", "/healthz", None).0 == 200
        });
        (s, Proc(child))
    }

    fn pin(&self) -> String {
        server_pin(self.dir.path())
    }
}

/// A node: a swtpm, its boot, its IMA log (what the TPM's PCR 10 holds), an agent port.
struct Node {
    name: &'static str,
    uuid: &'static str,
    tpm: Swtpm,
    state: tempfile::TempDir,
    eventlog: PathBuf,
    ima_path: PathBuf,
    /// The entries extended into PCR 10.
    ima: ImaLogBuilder,
    port: u16,
}

impl Node {
    /// Boots, then measures `boot_aggregate` and [`FILES`].
    fn new(name: &'static str, uuid: &'static str) -> Self {
        let tpm = Swtpm::start().expect("swtpm (run `make test`, which installs it)");
        let state = tempfile::tempdir().unwrap();
        let eventlog = state.path().join("binary_bios_measurements");
        let ima_path = state.path().join("binary_runtime_measurements");
        let mut node = Self {
            name,
            uuid,
            tpm,
            state,
            eventlog,
            ima_path,
            ima: ImaLogBuilder::new(),
            port: free_port(),
        };
        node.boot();
        node
    }

    /// Boots (the TPM's PCRs are at reset): measured boot, then a new IMA log of
    /// `boot_aggregate` and [`FILES`].
    fn boot(&mut self) {
        boot(&self.tpm, &self.eventlog);
        let mut ima = ImaLogBuilder::new();
        ima.boot_aggregate(&boot_pcrs(&self.tpm, HashAlg::Sha256), HashAlg::Sha256)
            .unwrap();
        for (path, content) in FILES {
            ima.file(path, content);
        }
        extend_ima(&self.tpm, &ima, 0);
        std::fs::write(&self.ima_path, ima.binary()).unwrap();
        self.ima = ima;
    }

    /// Measures more entries (the agent must be stopped): extended, and written to the log.
    fn measure(&mut self, add: impl FnOnce(&mut ImaLogBuilder)) {
        let from = self.ima.len();
        add(&mut self.ima);
        extend_ima(&self.tpm, &self.ima, from);
        std::fs::write(&self.ima_path, self.ima.binary()).unwrap();
    }

    fn start_agent(&self, server: &Server) -> Proc {
        self.start_agent_in(server, "pull")
    }

    /// Starts the agent in `mode` (`pull` or `push`).
    fn start_agent_in(&self, server: &Server, mode: &str) -> Proc {
        let child = Command::new(agent_binary())
            .args(["--mode", mode])
            .args(["--tcti", &self.tpm.tcti()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--state-dir", &self.state.path().display().to_string()])
            .args(["--eventlog", &self.eventlog.display().to_string()])
            .args(["--ima-log", &self.ima_path.display().to_string()])
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
        let port = self.port;
        wait_until("the agent", Duration::from_secs(30), || {
            curl(&[&format!("https://127.0.0.1:{port}/version")], None).0 == 200
        });
        Proc(child)
    }
}

fn registered(port: u16, hosts: &[&str]) {
    wait_until("registration", Duration::from_secs(60), || {
        hosts
            .iter()
            .all(|h| api(port, "GET", &format!("/mtwilson/v2/hosts/{h}"), None).0 == 200)
    });
}

#[test]
fn runtime_flavor_policy_names_files_replay_and_reboot() {
    let mut gold = Node::new("gold", "00000000-0000-0000-0000-00000000g01d");
    let mut node1 = Node::new("node-1", "00000000-0000-0000-0000-000000000001");
    let mut node2 = Node::new("node-2", "00000000-0000-0000-0000-000000000002");
    let vendor = TestSigningKey::generate(TestKeyKind::EcdsaP256).unwrap();
    // node-2 also runs a file signed by the vendor's key and a build artefact under /tmp.
    node2.measure(|l| {
        l.signed_file(
            "/opt/vendor/agent.so",
            HashAlg::Sha256,
            b"vendor agent",
            &vendor,
        )
        .unwrap();
        l.file("/tmp/build-7f3a/cc1", b"a compiler nobody listed");
    });
    let (server, _srv) = Server::start(gold.tpm.template());
    let port = server.port;
    endorse_own_ek(&node1.tpm, node1.state.path(), node1.uuid, port);
    endorse_own_ek(&node2.tpm, node2.state.path(), node2.uuid, port);
    let mut gold_agent = gold.start_agent(&server);
    let mut node1_agent = node1.start_agent(&server);
    let node2_agent = node2.start_agent(&server);
    registered(port, &["gold", "node-1", "node-2"]);

    // Without a RUNTIME flavor nobody is asked for an IMA log.
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
    );
    assert_eq!(s, 201, "{f}");
    for host in ["gold", "node-1", "node-2"] {
        let (v, why, _) = attest(port, host);
        assert_eq!(v, "trusted", "{host}: {why}");
    }
    assert_eq!(metric(port, "nodetrust_ima_entries_received_total"), 0);

    // The runtime policy learned from gold's IMA log: listed, and gold and node-1 (the same
    // files) trusted; node-2 untrusted, naming its two unlisted files.
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(json!({"from_host": "gold", "parts": ["RUNTIME"]})),
    );
    assert_eq!(s, 201, "{f}");
    let learned = f["flavors"][0].clone();
    assert_eq!(learned["part"], "RUNTIME", "{f}");
    let digests = learned["runtime"]["digests"].as_object().unwrap();
    assert_eq!(digests.len(), FILES.len(), "{learned}");
    assert!(digests.contains_key("/usr/bin/kubelet"));
    assert!(!digests.contains_key("boot_aggregate"));
    let (_, list) = api(port, "GET", "/mtwilson/v2/flavors", None);
    assert!(
        list["flavors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == learned["id"] && f["part"] == "RUNTIME"),
        "{list}"
    );
    for host in ["gold", "node-1"] {
        let (v, why, report) = attest(port, host);
        assert_eq!(v, "trusted", "{host}: {why}");
        // The match is in the signed report, like every other part's.
        let payload = signed_payload(&report);
        assert!(
            payload["reasons"]
                .to_string()
                .contains("RUNTIME: matches flavor"),
            "{payload}"
        );
    }
    let (v, why, _) = attest(port, "node-2");
    assert_eq!(v, "untrusted", "{why}");
    assert!(
        why.contains("RUNTIME: /opt/vendor/agent.so: sha256:"),
        "{why}"
    );
    assert!(why.contains("not in policy"), "{why}");
    assert!(why.contains("/tmp/build-7f3a/cc1"), "{why}");

    // An operator's policy: the learned digests, the vendor's key, `/tmp/*` excluded. It
    // replaces the learned one; node-2's signed file is allowed, its /tmp file ignored.
    let mut policy = learned["runtime"].clone();
    policy["label"] = json!("worker image with vendor agent");
    policy["keys"] = json!([{"public_key": vendor.public_key_pem(), "label": "vendor"}]);
    policy["excludes"] = json!(["/tmp/*"]);
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(
            json!({"label": "operator RUNTIME", "part": "RUNTIME", "allow_software_tpm": true, "runtime": policy}),
        ),
    );
    assert_eq!(s, 201, "{f}");
    let operator_id = f["flavors"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = api(
        port,
        "DELETE",
        &format!("/mtwilson/v2/flavors/{}", learned["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(s, 204);
    for host in ["gold", "node-1", "node-2"] {
        let (v, why, _) = attest(port, host);
        assert_eq!(v, "trusted", "{host}: {why}");
    }
    assert!(
        metric(
            port,
            "nodetrust_ima_appraisals_restarted_total{reason=\"policy_changed\"}"
        ) >= 3
    );

    // node-1 runs an unknown binary. Logged but not yet in PCR 10 (the log is read after the
    // quote): not covered by the quote, so not appraised yet.
    let mut later = node1.ima.clone();
    later.file("/usr/bin/curl", b"curl 8.0 from somewhere");
    std::fs::write(&node1.ima_path, later.binary()).unwrap();
    let (v, why, _) = attest(port, "node-1");
    assert_eq!(v, "trusted", "{why}");
    // Then extended: untrusted, naming the file.
    node1_agent.stop();
    node1.measure(|l| {
        l.file("/usr/bin/curl", b"curl 8.0 from somewhere");
    });
    node1_agent = node1.start_agent(&server);
    let (v, why, report) = attest(port, "node-1");
    assert_eq!(v, "untrusted", "{why}");
    assert!(why.contains("RUNTIME: /usr/bin/curl: sha256:"), "{why}");
    assert!(why.contains("not in policy"), "{why}");
    assert!(
        signed_payload(&report)["reasons"]
            .to_string()
            .contains("/usr/bin/curl"),
        "{report}"
    );
    // Sticky: the entry stays in the log until a reboot.
    let (v, why, _) = attest(port, "node-1");
    assert_eq!(v, "untrusted", "{why}");
    assert!(why.contains("/usr/bin/curl"), "{why}");

    // node-2 runs netcat, and its log is edited to show bash instead: no longer replays.
    let node2_agent = {
        node2_agent.stop();
        let shown = {
            let mut s = node2.ima.clone();
            s.file("/usr/bin/bash", b"bash 5.2");
            s
        };
        node2.measure(|l| {
            l.file("/usr/bin/nc", b"netcat");
        });
        std::fs::write(&node2.ima_path, shown.binary()).unwrap();
        node2.start_agent(&server)
    };
    let (v, why, _) = attest(port, "node-2");
    assert_eq!(v, "untrusted", "{why}");
    assert!(
        why.contains("does not replay to the quoted PCR 10"),
        "{why}"
    );

    // gold runs a binary and its log is cut before it: no longer replays either.
    gold_agent.stop();
    let before = gold.ima.clone();
    gold.measure(|l| {
        l.file("/usr/bin/evil", b"evil");
    });
    std::fs::write(&gold.ima_path, before.binary()).unwrap();
    gold_agent = gold.start_agent(&server);
    let (v, why, _) = attest(port, "gold");
    assert_eq!(v, "untrusted", "{why}");
    assert!(
        why.contains("does not replay to the quoted PCR 10"),
        "{why}"
    );

    // node-1 reboots into a clean state: appraisal starts over at entry 0, trusted again.
    let reboots = metric(
        port,
        "nodetrust_ima_appraisals_restarted_total{reason=\"reboot\"}",
    );
    let appraised = metric(port, "nodetrust_ima_entries_appraised_total");
    node1_agent.stop();
    node1.tpm.restart_in_place().unwrap();
    node1.boot();
    let node1_agent = node1.start_agent(&server);
    let (v, why, _) = attest(port, "node-1");
    assert_eq!(v, "trusted", "{why}");
    assert_eq!(
        metric(
            port,
            "nodetrust_ima_appraisals_restarted_total{reason=\"reboot\"}"
        ),
        reboots + 1
    );
    // Every entry of the new boot's log (boot_aggregate and the files), from entry 0.
    assert_eq!(
        metric(port, "nodetrust_ima_entries_appraised_total") - appraised,
        node1.ima.len() as u64
    );

    // Without the RUNTIME flavor the IMA logs are neither asked for nor looked at: gold, whose
    // log no longer replays, is trusted on its boot flavors alone.
    let (s, _) = api(
        port,
        "DELETE",
        &format!("/mtwilson/v2/flavors/{operator_id}"),
        None,
    );
    assert_eq!(s, 204);
    let received = metric(port, "nodetrust_ima_entries_received_total");
    let (v, why, _) = attest(port, "gold");
    assert_eq!(v, "trusted", "{why}");
    assert!(!why.contains("RUNTIME"), "{why}");
    assert_eq!(
        metric(port, "nodetrust_ima_entries_received_total"),
        received
    );
    drop((gold_agent, node1_agent, node2_agent));
}

/// The `i`-th file a worker node runs: 1,000 distinct files, run over and over.
fn worker_file(i: usize) -> (String, Vec<u8>) {
    (
        format!("/usr/libexec/worker/task-{:04}", i % 1000),
        format!("task {}", i % 1000).into_bytes(),
    )
}

/// Adds the RUNTIME flavor `workers`: the boot's files and the 1,000 worker files.
fn post_worker_policy(port: u16) {
    let mut policy = RuntimePolicy::new();
    let mut sample = ImaLogBuilder::new();
    for (path, content) in FILES {
        sample.file(path, content);
    }
    for i in 0..1000 {
        let (p, c) = worker_file(i);
        sample.file(&p, &c);
    }
    policy.learn(sample.entries()).unwrap();
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(
            json!({"label": "workers", "part": "RUNTIME", "allow_software_tpm": true, "runtime": serde_json::to_value(&policy).unwrap()}),
        ),
    );
    assert_eq!(s, 201, "{f}");
}

#[test]
fn hundred_thousand_entries_appraised_once_each() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 25_000;
    // More than one answer holds: the server asks the agent again within an attestation.
    const _: () = assert!(PER_ROUND > nodetrust_proto::agent::MAX_IMA_ENTRIES as usize);
    let mut node = Node::new("busy", "00000000-0000-0000-0000-0000000b0b00");
    let (server, _srv) = Server::start(node.tpm.template());
    let port = server.port;
    let mut agent = node.start_agent(&server);
    registered(port, &["busy"]);
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(json!({"from_host": "busy", "parts": ["PLATFORM", "OS"]})),
    );
    assert_eq!(s, 201, "{f}");
    // A policy of the boot's files and 1,000 more, which the node runs over and over.
    post_worker_policy(port);
    let (v, why, _) = attest(port, "busy");
    assert_eq!(v, "trusted", "{why}");
    let mut total = node.ima.len() as u64;
    assert_eq!(metric(port, "nodetrust_ima_entries_appraised_total"), total);

    for round in 0..ROUNDS {
        agent.stop();
        node.measure(|l| {
            for i in round * PER_ROUND..(round + 1) * PER_ROUND {
                let (p, c) = worker_file(i);
                l.file(&p, &c);
            }
        });
        total += PER_ROUND as u64;
        agent = node.start_agent(&server);
        let (v, why, _) = attest(port, "busy");
        assert_eq!(v, "trusted", "round {round}: {why}");
        // Each entry appraised once, and sent once, across attestations.
        assert_eq!(
            metric(port, "nodetrust_ima_entries_appraised_total"),
            total,
            "round {round}"
        );
        assert_eq!(
            metric(port, "nodetrust_ima_entries_received_total"),
            total,
            "round {round}"
        );
    }
    assert!(total > 100_000);
    // Nothing new: nothing appraised again.
    let (v, why, _) = attest(port, "busy");
    assert_eq!(v, "trusted", "{why}");
    assert_eq!(metric(port, "nodetrust_ima_entries_appraised_total"), total);
    drop(agent);
}

/// A push host cannot be asked for more of its IMA log within an attestation: a log longer than
/// one answer is appraised over several pushes, each entry once, the verdict `unknown` (never
/// `untrusted`) until the log reaches a quote, then `trusted`.
#[test]
fn push_host_log_longer_than_one_answer_is_appraised_over_several_pushes() {
    const EXTRA: usize = 40_000;
    const _: () = assert!(EXTRA > 2 * nodetrust_proto::agent::MAX_IMA_ENTRIES as usize);
    let gold = Node::new("gold", "00000000-0000-0000-0000-00000000901d");
    let mut node = Node::new("pushy", "00000000-0000-0000-0000-0000000f0511");
    let (server, _srv) = Server::start_every(gold.tpm.template(), "1s");
    let port = server.port;
    node.measure(|l| {
        for i in 0..EXTRA {
            let (p, c) = worker_file(i);
            l.file(&p, &c);
        }
    });
    endorse_own_ek(&node.tpm, node.state.path(), node.uuid, port);
    let _gold_agent = gold.start_agent(&server);
    registered(port, &["gold"]);
    let (s, f) = api(
        port,
        "POST",
        "/mtwilson/v2/flavors",
        Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
    );
    assert_eq!(s, 201, "{f}");
    post_worker_policy(port);
    // The gold host's own log (appraised at its next attestation) before the push host starts.
    let gold_entries = gold.ima.len() as u64;
    wait_until("gold's IMA log appraised", Duration::from_secs(30), || {
        metric(port, "nodetrust_ima_entries_appraised_total") == gold_entries
    });
    let _agent = node.start_agent_in(&server, "push");
    registered(port, &["pushy"]);
    wait_until("pushy trusted", Duration::from_secs(60), || {
        api(port, "GET", "/mtwilson/v2/hosts/pushy", None).1["trust"]["verdict"] == "trusted"
    });
    let (s, v) = api(
        port,
        "GET",
        "/mtwilson/v2/reports?host_name=pushy&limit=100",
        None,
    );
    assert_eq!(s, 200, "{v}");
    let reports = v["reports"].as_array().unwrap();
    let verdicts: Vec<&str> = reports
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert!(
        !verdicts.contains(&"untrusted"),
        "an unfinished appraisal read untrusted: {v}"
    );
    // 40,000 entries and more take at least three answers of 16,384: two pushes ended unknown.
    let in_progress = reports
        .iter()
        .filter(|r| {
            r["reasons"]
                .to_string()
                .contains("appraised over several pushes")
        })
        .count();
    assert!(in_progress >= 2, "{verdicts:?}: {v}");
    assert_eq!(
        metric(port, "nodetrust_ima_entries_appraised_total") - gold_entries,
        node.ima.len() as u64,
        "each of the push host's entries appraised once"
    );
}
