//! `nodetrust doctor` against a fake cluster (the testkit's Kubernetes API stand-in), a fake
//! Trust Server and fake agents (HTTPS, pinned): a healthy cluster passes every check, and each
//! scenario breaks exactly one thing of one runbook section and must be named first in the
//! summary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use common::FakeServer;
use nodetrust_testkit::kubeapi::FakeApiServer;
use serde_json::{json, Value};

const NS: &str = "kubx-cit";
const TPM_LABEL: &str = "ibm-cloud.kubernetes.io/tpm-enabled";
const TRUST_LABEL: &str = "ibm-cloud.kubernetes.io/is-trusted";
const AGENT_PASSWORD: &str = "agent-account-password-7f3a";
const TA_PASSWORD: &str = "trustagent-admin-password-91c2";
const READER_PASSWORD: &str = "reader-password";
const NODES: [(&str, &str); 2] = [
    ("worker-1", "4C4C4544-0031-3510-8052-B2C04F4E3132"),
    ("worker-2", "4C4C4544-0032-3510-8052-B2C04F4E3132"),
];

const INIT_OK: &str = "PASS device: /dev/tpmrm0 is present and opens read-write
PASS tpm answers: TPM 2.0 by IBM (IBM), firmware 1.38
PASS dictionary-attack lockout: not in lockout (0 failed authorization(s) counted, lockout at 3)
PASS endorsement hierarchy: enabled, no auth value needed; EK RSA 2048; EK certificate in NV
PASS state directory: AK (rsa2048) loaded or created in /var/lib/nodetrust
PASS event log: /sys/kernel/security/tpm0/binary_bios_measurements is readable (29384 bytes)
PASS IMA log: /sys/kernel/security/ima/binary_runtime_measurements is readable (1200 bytes)
VERDICT: ready: all 7 checks passed; the agent can use the TPM at `device:/dev/tpmrm0`
";
const AGENT_OK: &str = "2025-06-01T10:00:00Z  INFO nodetrust_agent: listening on 0.0.0.0:1443
2025-06-01T10:00:01Z  INFO nodetrust_agent::register: registering with the Trust Server attempt=1
2025-06-01T10:00:02Z  INFO nodetrust_agent::register: registered
";

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// What the fake Trust Server says about one host.
#[derive(Clone)]
struct Host {
    uuid: String,
    url: String,
    pin: String,
    verdict: &'static str,
    reasons: Vec<String>,
}

impl Host {
    fn entry(&self, name: &str) -> Value {
        let now = SystemTime::now();
        json!({
            "name": name, "hardware_uuid": self.uuid, "connection_url": self.url,
            "status": "connected",
            "trust": {
                "verdict": self.verdict, "reasons": self.reasons,
                "attested_at": rfc3339(now - Duration::from_secs(30)),
                "expires_at": rfc3339(now + Duration::from_secs(3600)),
            }
        })
    }

    fn detail(&self, name: &str) -> Value {
        let mut v = self.entry(name);
        let o = v.as_object_mut().unwrap();
        o.insert("status_detail".into(), Value::Null);
        o.insert("tls_cert_sha256".into(), json!(self.pin));
        o.insert("software_tpm".into(), json!(false));
        o.insert(
            "registered".into(),
            json!(rfc3339(SystemTime::now() - Duration::from_secs(86_400))),
        );
        o.insert("host_info".into(), Value::Null);
        v
    }
}

type Hosts = Arc<Mutex<BTreeMap<String, Host>>>;

fn host_info(name: &str, uuid: &str) -> Value {
    json!({
        "host_name": name, "hardware_uuid": uuid, "os_name": "Ubuntu", "os_version": "24.04",
        "kernel_version": "6.8.0-45-generic", "tpm_version": "2.0", "tpm_manufacturer": "IBM",
        "tpm_firmware_version": "1.38", "pcr_banks": ["SHA1", "SHA256"], "measured_launch": true,
        "secure_boot": true, "software_tpm": false, "agent_version": "0.1.0"
    })
}

/// A healthy cluster: two TPM nodes, each with a running agent pod, a registered trusted
/// host and the label "true"; the ConfigMap/Secret; a fresh labeller Lease.
struct World {
    k8s: FakeApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: String,
    server: FakeServer,
    _agents: Vec<FakeServer>,
    hosts: Hosts,
}

fn pod_name(node: &str) -> String {
    format!("cit-trust-agent-{}", node.replace("worker-", "w"))
}

fn status(name: &str, state: Value, ready: bool, restarts: i32) -> Value {
    json!({"name": name, "image": "nodetrust/nodetrust-agent:0.1.0", "imageID": "", "ready": ready,
           "restartCount": restarts, "state": state})
}

fn pod(node: &str, init: Value, main: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(node), "namespace": NS,
                     "labels": {"app.kubernetes.io/name": "cit-trust-agent"}},
        "spec": {"nodeName": node,
                 "initContainers": [{"name": "init-tcsd", "image": "nodetrust/nodetrust-agent:0.1.0"}],
                 "containers": [{"name": "run-trust-agent", "image": "nodetrust/nodetrust-agent:0.1.0"}]},
        "status": {"phase": "Running", "initContainerStatuses": [init], "containerStatuses": [main]}
    })
}

fn healthy_pod(node: &str) -> Value {
    pod(
        node,
        status(
            "init-tcsd",
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            true,
            0,
        ),
        status(
            "run-trust-agent",
            json!({"running": {"startedAt": "2025-06-01T10:00:00Z"}}),
            true,
            0,
        ),
    )
}

fn world() -> World {
    let hosts: Hosts = Arc::new(Mutex::new(BTreeMap::new()));
    let mut agents = Vec::new();
    for (name, uuid) in NODES {
        let info = host_info(name, uuid);
        let agent = FakeServer::start(move |seen| {
            if seen.authorization != basic("tagentadmin", TA_PASSWORD) {
                return (
                    401,
                    br#"{"error":"authentication required","reason":"unauthorized"}"#.to_vec(),
                );
            }
            match seen.path.as_str() {
                "/v2/host" => (200, info.to_string().into_bytes()),
                _ => (
                    404,
                    br#"{"error":"no such path","reason":"not_found"}"#.to_vec(),
                ),
            }
        });
        hosts.lock().unwrap().insert(
            name.to_string(),
            Host {
                uuid: uuid.to_string(),
                url: agent.url.clone(),
                pin: agent.pin.clone(),
                verdict: "trusted",
                reasons: vec!["matched flavors PLATFORM gold-1, OS gold-1".into()],
            },
        );
        agents.push(agent);
    }
    let state = hosts.clone();
    let server = FakeServer::start(move |seen| {
        let unauthorized = (
            401,
            br#"{"error":"authentication required","reason":"unauthorized"}"#.to_vec(),
        );
        let hosts = state.lock().unwrap();
        match seen.path.as_str() {
            "/mtwilson/v2/tpm-endorsements" => {
                if seen.authorization == basic("agent", AGENT_PASSWORD) {
                    (200, br#"{"tpm_endorsements":[]}"#.to_vec())
                } else {
                    unauthorized
                }
            }
            _ if seen.authorization != basic("reader", READER_PASSWORD) => unauthorized,
            "/mtwilson/v2/hosts" => {
                let list: Vec<Value> = hosts.iter().map(|(n, h)| h.entry(n)).collect();
                (200, json!({"hosts": list}).to_string().into_bytes())
            }
            p => match p
                .strip_prefix("/mtwilson/v2/hosts/")
                .and_then(|n| hosts.get(n).map(|h| h.detail(n)))
            {
                Some(d) => (200, d.to_string().into_bytes()),
                None => (
                    404,
                    br#"{"error":"no such host","reason":"not_found"}"#.to_vec(),
                ),
            },
        }
    });

    let k8s = FakeApiServer::start().unwrap();
    k8s.add_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    for (name, uuid) in NODES {
        k8s.add_node(name, &[(TPM_LABEL, "true"), (TRUST_LABEL, "true")], uuid)
            .unwrap();
        k8s.add_object(healthy_pod(name)).unwrap();
        k8s.set_pod_log(NS, &pod_name(name), "init-tcsd", INIT_OK);
        k8s.set_pod_log(NS, &pod_name(name), "run-trust-agent", AGENT_OK);
    }
    k8s.add_node("control-1", &[], "4C4C4544-0099-3510-8052-B2C04F4E3132")
        .unwrap();
    k8s.add_object(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cit-trust-agent", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "cit-trust-agent"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "cit-trust-agent"}},
                "spec": {"nodeSelector": {TPM_LABEL: "true"},
                         "initContainers": [{"name": "init-tcsd", "image": "nodetrust/nodetrust-agent:0.1.0"}],
                         "containers": [{"name": "run-trust-agent", "image": "nodetrust/nodetrust-agent:0.1.0"}]}
            }
        },
        "status": {"currentNumberScheduled": 2, "desiredNumberScheduled": 2, "numberMisscheduled": 0,
                   "numberReady": 2}
    }))
    .unwrap();
    let (host, port) = server
        .url
        .trim_start_matches("https://")
        .split_once(':')
        .unwrap();
    k8s.add_object(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cit-server-info", "namespace": NS},
        "data": {"MTWILSON_API_USERNAME": "agent", "MTWILSON_SERVER": host, "MTWILSON_SERVER_PORT": port,
                 "TRUSTAGENT_ADMIN_USERNAME": "tagentadmin", "server_url": server.url,
                 "TRUSTAGENT_SERVER_PIN": server.pin}
    }))
    .unwrap();
    k8s.add_object(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "cit-server-info", "namespace": NS},
        "data": {"MTWILSON_API_PASSWORD": b64(AGENT_PASSWORD), "TRUSTAGENT_ADMIN_PASSWORD": b64(TA_PASSWORD),
                 "TPM_OWNER_SECRET": ""}
    }))
    .unwrap();
    k8s.add_object(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "nodetrust-labeller", "namespace": NS},
        "spec": {"holderIdentity": "cit-trust-server-6d9f-x2", "leaseDurationSeconds": 3600,
                 "renewTime": humantime::format_rfc3339_micros(SystemTime::now()).to_string()}
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    k8s.write_kubeconfig(&kc).unwrap();
    World {
        k8s,
        kubeconfig: kc.display().to_string(),
        _dir: dir,
        server,
        _agents: agents,
        hosts,
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The first summary line.
    fn first_cause(&self) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains("ROOT CAUSE"))
            .unwrap_or_else(|| panic!("no ROOT CAUSE line:\n{}\n{}", self.stdout, self.stderr))
    }

    fn assert_fails_first_with(&self, node: &str, words: &[&str]) {
        assert_eq!(self.code, Some(1), "{}\n{}", self.stdout, self.stderr);
        let first = self.first_cause();
        assert!(
            first.starts_with(&format!("{node}: ROOT CAUSE")),
            "first cause is not {node}'s: {first}\n{}",
            self.stdout
        );
        for w in words {
            assert!(
                first.contains(w),
                "first cause lacks {w:?}: {first}\n{}",
                self.stdout
            );
        }
        self.assert_no_secret();
    }

    fn assert_no_secret(&self) {
        for s in [
            AGENT_PASSWORD,
            TA_PASSWORD,
            READER_PASSWORD,
            "wrong-password-0000",
        ] {
            assert!(
                !self.stdout.contains(s) && !self.stderr.contains(s),
                "a password was printed"
            );
        }
    }
}

fn doctor(w: &World, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_nodetrust"))
        .arg("doctor")
        .args(["--kubeconfig", &w.kubeconfig])
        .args(args)
        .env_clear()
        .env("NODETRUST_ADMIN_USERNAME", "reader")
        .env("NODETRUST_ADMIN_PASSWORD", READER_PASSWORD)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("WARN ") || l.starts_with("FAIL "))
        .collect()
}

#[test]
fn healthy_cluster_passes_every_check_through_configmap_url_and_pin() {
    let w = world();
    let r = doctor(&w, &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let lines = check_lines(&r.stdout);
    assert!(lines.len() > 25, "{}", r.stdout);
    for l in &lines {
        assert!(l.starts_with("PASS "), "not PASS: {l}\n{}", r.stdout);
    }
    for needed in [
        "PASS cluster daemonset",
        "PASS cluster agent account: GET /mtwilson/v2/tpm-endorsements",
        "PASS worker-1 init container: init-tcsd completed",
        "PASS worker-2 agent answers: agent 0.1.0 at https://127.0.0.1:",
        "PASS worker-1 trust label",
        "PASS worker-2 verdict: trusted",
    ] {
        assert!(
            r.stdout.contains(needed),
            "missing {needed:?}:\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("control-1"),
        "a node without a TPM is not looked at"
    );
    assert!(r.stdout.contains("nothing is broken"));
    r.assert_no_secret();
    // The runbook's probe was made with the agent account from the Secret.
    let probes: Vec<_> = w
        .server
        .requests()
        .into_iter()
        .filter(|s| s.path == "/mtwilson/v2/tpm-endorsements")
        .collect();
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].authorization, basic("agent", AGENT_PASSWORD));
    // Doctor only reads the cluster.
    assert!(
        w.k8s.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        w.k8s.requests()
    );
}

#[test]
fn healthy_cluster_as_one_json_document() {
    let w = world();
    let r = doctor(&w, &["--format", "json", "--node", "worker-2"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["summary"], json!([]));
    let checks = doc["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["status"] == "PASS"), "{doc:#}");
    assert!(
        checks
            .iter()
            .all(|c| c["node"].is_null() || c["node"] == "worker-2"),
        "only the node asked for"
    );
    let c = checks.iter().find(|c| c["name"] == "verdict").unwrap();
    for key in ["status", "name", "node", "saw", "remedy", "section"] {
        assert!(c.get(key).is_some(), "{key} missing in {c}");
    }
    assert!(c["section"]
        .as_str()
        .unwrap()
        .starts_with("docs/runbook.md#"));
}

#[test]
fn missing_daemonset_is_named_first() {
    let w = world();
    w.k8s
        .delete("daemonsets", Some(NS), "cit-trust-agent")
        .unwrap();
    for (n, _) in NODES {
        w.k8s.delete("pods", Some(NS), &pod_name(n)).unwrap();
    }
    let r = doctor(&w, &[]);
    r.assert_fails_first_with(
        "worker-1",
        &["DaemonSet kubx-cit/cit-trust-agent does not exist"],
    );
    assert!(
        r.first_cause().contains("kubectl -n kubx-cit get ds"),
        "{}",
        r.first_cause()
    );
    assert!(r.stdout.contains("FAIL cluster daemonset"));
}

#[test]
fn node_with_a_tpm_but_without_the_tpm_enabled_label_is_named() {
    let w = world();
    w.k8s
        .update("nodes", None, "worker-2", |n| {
            n["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove(TPM_LABEL);
        })
        .unwrap();
    w.k8s
        .delete("pods", Some(NS), &pod_name("worker-2"))
        .unwrap();
    let r = doctor(&w, &[]);
    r.assert_fails_first_with(
        "worker-2",
        &["lacks the label ibm-cloud.kubernetes.io/tpm-enabled=true"],
    );
    assert!(
        r.stdout
            .contains("but it has a TPM: the Trust Server has host worker-2 registered for it (by systemUUID)"),
        "{}",
        r.stdout
    );
    assert!(r
        .first_cause()
        .contains("kubectl label node worker-2 ibm-cloud.kubernetes.io/tpm-enabled=true"));
    assert_eq!(
        r.stdout.matches("ROOT CAUSE").count(),
        1,
        "worker-1 is healthy: {}",
        r.stdout
    );
}

fn break_init(w: &World, node: &str, log: &str) {
    w.k8s
        .set_object(pod(
            node,
            status(
                "init-tcsd",
                json!({"terminated": {"exitCode": 1, "reason": "Error"}}),
                false,
                4,
            ),
            status(
                "run-trust-agent",
                json!({"waiting": {"reason": "PodInitializing"}}),
                false,
                0,
            ),
        ))
        .unwrap();
    w.k8s.set_pod_log(NS, &pod_name(node), "init-tcsd", log);
    w.k8s
        .set_pod_log(NS, &pod_name(node), "run-trust-agent", "");
}

#[test]
fn init_container_failing_on_a_missing_tpm_is_named() {
    let w = world();
    break_init(
        &w,
        "worker-1",
        "FAIL device: /dev/tpmrm0 does not exist. Remedy: enable the TPM 2.0 in the firmware setup, check that the kernel driver is loaded\n\
         FAIL tpm answers: not checked: no TPM device\n\
         VERDICT: not ready: 4 of 7 checks failed; fix the first FAIL above and run the check again\n",
    );
    // A node without a TPM never registered.
    w.hosts.lock().unwrap().remove("worker-1");
    let r = doctor(&w, &[]);
    r.assert_fails_first_with("worker-1", &["no TPM device", "FAIL device"]);
    assert!(r
        .first_cause()
        .contains("kubectl -n kubx-cit logs cit-trust-agent-w1 -c init-tcsd"));
    assert!(
        r.stdout
            .contains("remedy: enable the TPM 2.0 in the firmware setup"),
        "{}",
        r.stdout
    );
}

/// Lockout is reported from the init container's `dictionary-attack lockout` line (the agent's
/// API does not carry it) and, once the agent runs, from its log.
#[test]
fn tpm_in_dictionary_attack_lockout_is_named_in_text_and_json() {
    let w = world();
    break_init(
        &w,
        "worker-2",
        "PASS device: /dev/tpmrm0 is present and opens read-write\n\
         PASS tpm answers: TPM 2.0 by IFX (IFX), firmware 7.85\n\
         FAIL dictionary-attack lockout: the TPM is in dictionary-attack lockout (3 failed authorization(s) counted, lockout at 3; one failure is forgotten every 7200 s). Remedy: wait until the counter drops below the maximum, or reset it with `tpm2_dictionarylockout --clear-lockout`\n\
         FAIL endorsement hierarchy: not checked: the TPM is in lockout\n\
         VERDICT: not ready: 2 of 7 checks failed\n",
    );
    let r = doctor(&w, &[]);
    r.assert_fails_first_with("worker-2", &["dictionary-attack lockout"]);
    assert!(
        r.stdout.contains("FAIL worker-2 tpm lockout"),
        "{}",
        r.stdout
    );
    let r = doctor(&w, &["--format", "json"]);
    assert_eq!(r.code, Some(1));
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["healthy"], false);
    assert_eq!(doc["summary"][0]["node"], "worker-2");
    assert_eq!(doc["summary"][0]["check"], "init container");
    assert!(doc["summary"][0]["cause"]
        .as_str()
        .unwrap()
        .contains("lockout"));
    assert_eq!(doc["summary"][0]["section"], "docs/runbook.md#tpm-problems");
    assert_eq!(
        doc["summary"].as_array().unwrap().len(),
        1,
        "worker-1 is healthy"
    );
}

#[test]
fn wrong_agent_password_in_the_secret_is_named_and_never_printed() {
    let w = world();
    w.k8s
        .update("secrets", Some(NS), "cit-server-info", |s| {
            s["data"]["MTWILSON_API_PASSWORD"] = json!(b64("wrong-password-0000"));
        })
        .unwrap();
    let r = doctor(&w, &[]);
    r.assert_fails_first_with(
        "worker-1",
        &[
            "refuses the agent account \"agent\"",
            "MTWILSON_API_PASSWORD",
            "HTTP 401",
        ],
    );
    assert!(r.stdout.contains("FAIL cluster agent account"));
    let seen = w.server.requests();
    let probe = seen
        .iter()
        .find(|s| s.path == "/mtwilson/v2/tpm-endorsements")
        .unwrap();
    assert_eq!(
        probe.authorization,
        basic("agent", "wrong-password-0000"),
        "the Secret's value was used"
    );
}

#[test]
fn trust_server_down_is_named() {
    let w = world();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    w.k8s
        .update("configmaps", Some(NS), "cit-server-info", |c| {
            c["data"]["server_url"] = json!(format!("https://127.0.0.1:{port}"));
        })
        .unwrap();
    let r = doctor(&w, &[]);
    r.assert_fails_first_with(
        "worker-1",
        &["the Trust Server does not answer at https://127.0.0.1:"],
    );
    assert!(
        r.first_cause().contains("cit-trust-server"),
        "{}",
        r.first_cause()
    );
    assert!(
        r.stdout
            .contains("WARN worker-1 host registered: not checked"),
        "{}",
        r.stdout
    );
}

#[test]
fn unendorsed_ek_is_named_from_the_agents_log() {
    let w = world();
    w.hosts.lock().unwrap().remove("worker-2");
    w.k8s
        .update("nodes", None, "worker-2", |n| {
            n["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove(TRUST_LABEL);
        })
        .unwrap();
    w.k8s.set_pod_log(
        NS,
        &pod_name("worker-2"),
        "run-trust-agent",
        &format!("{AGENT_OK}2025-06-01T10:00:05Z ERROR nodetrust_agent::register: registering: the server does not accept this TPM's EK: registration refused: the EK (sha256 ab12) is not listed in tpm-endorsements; the agent sent no EK certificate. Add the EK with POST /mtwilson/v2/tpm-endorsements, or put its manufacturer's CA in --ek-ca-dir; remedy: an administrator accepts it with `nodetrust endorsement add --ek-public FILE`; retrying attempt=4 retry_in=30s\n"),
    );
    let r = doctor(&w, &[]);
    r.assert_fails_first_with("worker-2", &["EK is not endorsed", "ek_not_endorsed"]);
    assert!(
        r.first_cause().contains(&format!(
            "nodetrust endorsement add --ek-public EK.pub --hardware-uuid {}",
            NODES[1].1
        )),
        "{}",
        r.first_cause()
    );
}

#[test]
fn node_rebooted_into_an_unknown_kernel_is_untrusted_with_its_pcr_reason() {
    let w = world();
    {
        let mut hosts = w.hosts.lock().unwrap();
        let h = hosts.get_mut("worker-1").unwrap();
        h.verdict = "untrusted";
        h.reasons = vec![
            "PCR 8: kernel /boot/vmlinuz-6.9.0-rc1 changed (sha256 1f2e… expected 9a8b…)".into(),
            "PCR 9: initrd /boot/initrd.img-6.9.0-rc1 changed".into(),
        ];
    }
    w.k8s
        .update("nodes", None, "worker-1", |n| {
            n["metadata"]["labels"][TRUST_LABEL] = json!("false");
        })
        .unwrap();
    let r = doctor(&w, &[]);
    r.assert_fails_first_with(
        "worker-1",
        &[
            "worker-1 is untrusted",
            "PCR 8: kernel /boot/vmlinuz-6.9.0-rc1 changed",
        ],
    );
    assert!(r.first_cause().contains("nodetrust report show worker-1"));
    assert!(
        r.stdout.contains("PASS worker-1 trust label"),
        "the label follows the verdict: {}",
        r.stdout
    );
}

#[test]
fn label_disagreeing_with_the_verdict_names_the_missing_labeller_leader() {
    let w = world();
    w.k8s
        .update("nodes", None, "worker-2", |n| {
            n["metadata"]["labels"][TRUST_LABEL] = json!("false");
        })
        .unwrap();
    w.k8s
        .delete("leases", Some(NS), "nodetrust-labeller")
        .unwrap();
    let r = doctor(&w, &[]);
    r.assert_fails_first_with(
        "worker-2",
        &[
            "ibm-cloud.kubernetes.io/is-trusted on worker-2 disagrees with the verdict (trusted)",
            "no labeller leader",
        ],
    );
    assert!(r
        .first_cause()
        .contains("kubectl -n kubx-cit get lease nodetrust-labeller -o yaml"));
    assert!(r.stdout.contains("WARN cluster labeller leader"));
}

#[test]
fn doctor_cannot_run_without_a_kubeconfig_or_with_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nodetrust"))
            .arg("doctor")
            .args(args)
            .env_clear()
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no kubeconfig"));
    let missing = dir.path().join("nope");
    let out = run(&["--kubeconfig", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
    // A node that does not exist is a bad argument too.
    let w = world();
    let r = doctor(&w, &["--node", "no-such-node"]);
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
}
