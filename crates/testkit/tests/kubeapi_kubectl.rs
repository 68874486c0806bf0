//! The Kubernetes API stand-in (`nodetrust_testkit::kubeapi`) driven by the real kubectl, and
//! its server semantics checked over raw HTTP: conflicts, expiry, validation, patches, watches,
//! pagination and injected faults.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nodetrust_testkit::kubeapi::{FakeApiServer, Fault};
use serde_json::{json, Value};

const TPM: &str = "ibm-cloud.kubernetes.io/tpm-enabled";

fn kubectl_bin() -> PathBuf {
    let p = PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into()));
    assert!(
        p.exists(),
        "kubectl not found at {}: install kubectl or set KUBECTL to its path",
        p.display()
    );
    p
}

/// A server with three workers (two TPM-enabled) and a kubeconfig for it.
struct Cluster {
    api: FakeApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn cluster() -> Cluster {
    let api = FakeApiServer::start().unwrap();
    api.add_node("worker-1", &[(TPM, "true")], "uuid-1")
        .unwrap();
    api.add_node("worker-2", &[(TPM, "true")], "uuid-2")
        .unwrap();
    api.add_node("worker-3", &[(TPM, "false")], "uuid-3")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    Cluster {
        api,
        _dir: dir,
        kubeconfig,
    }
}

fn kubectl(kc: &Path, args: &[&str]) -> Output {
    Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", kc.parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed ({}): stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl should have failed: stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One HTTP/1.0 request (the response ends when the server closes): status, headers, body.
fn raw(
    api: &FakeApiServer,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(api.addr()).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = ct {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

fn call(
    api: &FakeApiServer,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (code, _, b) = raw(api, method, path, ct, &text);
    (code, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

const MERGE: Option<&str> = Some("application/merge-patch+json");
const SMP: Option<&str> = Some("application/strategic-merge-patch+json");
const JSONPATCH: Option<&str> = Some("application/json-patch+json");
const JSON: Option<&str> = Some("application/json");

fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// A watch read line by line on its own connection.
struct Watch {
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Watch {
    fn open(api: &FakeApiServer, path_and_query: &str) -> Watch {
        let mut s = TcpStream::connect(api.addr()).unwrap();
        s.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            // Skip the head.
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Watch { lines: rx }
    }

    fn next(&self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("no watch event within 10 s")
    }

    /// Whether the stream ended (the server closed it) within 10 s.
    fn ends(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return true,
                _ => continue,
            }
        }
        false
    }
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- kubectl

#[test]
fn kubectl_get_nodes_lists_seeded_nodes_and_filters_by_label() {
    let c = cluster();
    let table = ok(&kubectl(&c.kubeconfig, &["get", "nodes"]));
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["worker-1", "worker-2", "worker-3"], "{table}");
    assert!(table.starts_with("NAME"), "{table}");

    let out = ok(&kubectl(
        &c.kubeconfig,
        &["get", "nodes", "-l", &format!("{TPM}=true"), "-o", "json"],
    ));
    let list: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["worker-1", "worker-2"]);
    assert_eq!(
        list["items"][0]["status"]["nodeInfo"]["systemUUID"],
        "uuid-1"
    );

    let out = ok(&kubectl(
        &c.kubeconfig,
        &["get", "nodes", "-l", &format!("{TPM}!=true"), "-o", "name"],
    ));
    assert_eq!(out.trim(), "node/worker-3");
}

#[test]
fn kubectl_label_and_annotate_follow_server_rules() {
    let c = cluster();
    let out = ok(&kubectl(
        &c.kubeconfig,
        &["label", "node", "worker-1", "foo=bar"],
    ));
    assert!(out.contains("node/worker-1 labeled"), "{out}");
    assert_eq!(
        c.api.node("worker-1").unwrap()["metadata"]["labels"]["foo"],
        "bar"
    );

    // Without --overwrite kubectl refuses on its own, and sends no PATCH.
    let patches = c.api.count_requests("PATCH", "/api/v1/nodes/worker-1");
    let err = failed(&kubectl(
        &c.kubeconfig,
        &["label", "node", "worker-1", "foo=baz"],
    ));
    assert!(err.contains("already has a value (bar)"), "{err}");
    assert_eq!(
        c.api.count_requests("PATCH", "/api/v1/nodes/worker-1"),
        patches
    );

    ok(&kubectl(
        &c.kubeconfig,
        &["label", "node", "worker-1", "foo=baz", "--overwrite"],
    ));
    assert_eq!(
        c.api.node("worker-1").unwrap()["metadata"]["labels"]["foo"],
        "baz"
    );

    // kubectl checks a label value itself before sending anything ...
    let patches = c.api.count_requests("PATCH", "/api/v1/nodes/worker-1");
    let err = failed(&kubectl(
        &c.kubeconfig,
        &[
            "label",
            "node",
            "worker-1",
            "bad=-starts-with-dash",
            "--overwrite",
        ],
    ));
    assert!(err.contains("invalid label value"), "{err}");
    assert_eq!(
        c.api.count_requests("PATCH", "/api/v1/nodes/worker-1"),
        patches
    );
    // ... and a raw patch shows the server's 422 message.
    let err = failed(&kubectl(
        &c.kubeconfig,
        &[
            "patch",
            "node",
            "worker-1",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"bad":"-starts-with-dash"}}}"#,
        ],
    ));
    assert!(err.contains("The Node \"worker-1\" is invalid"), "{err}");
    assert!(
        err.contains("metadata.labels: Invalid value: \"-starts-with-dash\""),
        "{err}"
    );
    assert!(c.api.node("worker-1").unwrap()["metadata"]["labels"]
        .get("bad")
        .is_none());
    assert!(c
        .api
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.status == 422));

    let out = ok(&kubectl(
        &c.kubeconfig,
        &[
            "annotate",
            "node",
            "worker-2",
            "nodetrust.io/reason=pcr 7 mismatch",
        ],
    ));
    assert!(out.contains("node/worker-2 annotated"), "{out}");
    assert_eq!(
        c.api.node("worker-2").unwrap()["metadata"]["annotations"]["nodetrust.io/reason"],
        "pcr 7 mismatch"
    );
    // Removing a label with `key-`.
    ok(&kubectl(
        &c.kubeconfig,
        &["label", "node", "worker-1", "foo-"],
    ));
    assert!(c.api.node("worker-1").unwrap()["metadata"]["labels"]
        .get("foo")
        .is_none());
    // worker-3 was never written to.
    assert_eq!(c.api.count_requests("PATCH", "worker-3"), 0);
    assert_eq!(c.api.count_requests("PUT", "worker-3"), 0);
}

#[test]
fn kubectl_watch_prints_changes_made_through_the_api() {
    let c = cluster();
    let mut child = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["get", "nodes", "-w", "--output-watch-events", "-o", "json"])
        .env_remove("KUBECONFIG")
        .env("HOME", c.kubeconfig.parent().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        let mut de = serde_json::Deserializer::from_reader(stdout).into_iter::<Value>();
        while let Some(Ok(v)) = de.next() {
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    // The initial list comes first: three ADDED.
    for _ in 0..3 {
        let ev = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        seen.push(ev);
    }
    assert!(seen.iter().all(|e| e["type"] == "ADDED"), "{seen:?}");
    // Wait until kubectl's WATCH request is in, then change a node through the API.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .api
        .requests()
        .iter()
        .any(|r| r.query.contains("watch=true"))
    {
        assert!(Instant::now() < deadline, "kubectl never opened a watch");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-2",
        MERGE,
        &json!({"metadata": {"labels": {"ibm-cloud.kubernetes.io/is-trusted": "false"}}}),
    );
    assert_eq!(code, 200);
    let ev = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(ev["type"], "MODIFIED", "{ev}");
    assert_eq!(ev["object"]["metadata"]["name"], "worker-2");
    assert_eq!(
        ev["object"]["metadata"]["labels"]["ibm-cloud.kubernetes.io/is-trusted"],
        "false"
    );
}

#[test]
fn kubectl_get_lease_after_create() {
    let c = cluster();
    let (code, lease) = call(
        &c.api,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
        JSON,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "nodetrust-labeller"},
                "spec": {"holderIdentity": "server-0", "leaseDurationSeconds": 15}}),
    );
    assert_eq!(code, 201, "{lease}");
    let out = ok(&kubectl(
        &c.kubeconfig,
        &["get", "lease", "-n", "kube-system"],
    ));
    assert!(
        out.lines().any(|l| l.starts_with("nodetrust-labeller")),
        "{out}"
    );
    let out = ok(&kubectl(
        &c.kubeconfig,
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            "nodetrust-labeller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    ));
    assert_eq!(out, "server-0");
    let err = failed(&kubectl(
        &c.kubeconfig,
        &["get", "lease", "-n", "kube-system", "nope"],
    ));
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[test]
fn kubectl_taint_add_and_remove() {
    let c = cluster();
    c.api
        .update("nodes", None, "worker-1", |n| {
            n["spec"]["taints"] = json!([{"key": "other", "effect": "NoSchedule"}]);
        })
        .unwrap();
    let out = ok(&kubectl(
        &c.kubeconfig,
        &[
            "taint",
            "nodes",
            "worker-1",
            "nodetrust.io/untrusted=true:NoExecute",
        ],
    ));
    assert!(out.contains("node/worker-1 tainted"), "{out}");
    // kubectl sends the whole list (taints have no merge key): both taints remain.
    let taints = c.api.node("worker-1").unwrap()["spec"]["taints"].clone();
    let taints = taints.as_array().unwrap();
    assert_eq!(taints.len(), 2, "{taints:?}");
    assert!(taints.contains(&json!({"key": "other", "effect": "NoSchedule"})));
    assert!(taints.contains(
        &json!({"key": "nodetrust.io/untrusted", "value": "true", "effect": "NoExecute"})
    ));
    assert!(c.api.requests().iter().any(|r| r.method == "PATCH"
        && r.content_type.as_deref() == Some("application/strategic-merge-patch+json")));
    let out = ok(&kubectl(
        &c.kubeconfig,
        &[
            "taint",
            "nodes",
            "worker-1",
            "nodetrust.io/untrusted:NoExecute-",
        ],
    ));
    assert!(out.contains("untainted"), "{out}");
    assert_eq!(
        c.api.node("worker-1").unwrap()["spec"]["taints"],
        json!([{"key": "other", "effect": "NoSchedule"}])
    );
}

#[test]
fn kubectl_reads_doctor_objects_and_pod_logs() {
    let c = cluster();
    let ns = "kubx-cit";
    c.api
        .add_object(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "trust-agent", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "trust-agent"}},
                     "template": {"metadata": {"labels": {"app": "trust-agent"}},
                                  "spec": {"containers": [{"name": "run-trust-agent", "image": "x"}]}}},
            "status": {"desiredNumberScheduled": 2, "numberReady": 1}}))
        .unwrap();
    c.api
        .add_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "trust-agent-abcde", "namespace": ns, "labels": {"app": "trust-agent"}},
            "spec": {"nodeName": "worker-1", "containers": [{"name": "run-trust-agent", "image": "x"},
                                                           {"name": "sidecar", "image": "y"}]},
            "status": {"phase": "Running"}}))
        .unwrap();
    c.api
        .add_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "trust-agent-config", "namespace": ns}, "data": {"a": "b"}}))
        .unwrap();
    c.api
        .add_object(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "trust-agent-tls", "namespace": ns}, "type": "Opaque",
            "data": {"k": "dg=="}}))
        .unwrap();
    c.api.set_pod_log(
        ns,
        "trust-agent-abcde",
        "run-trust-agent",
        "line 1\nline 2\nTPM: quote ok\n",
    );

    let out = ok(&kubectl(
        &c.kubeconfig,
        &["get", "ds,pods,cm,secrets", "-n", ns],
    ));
    for want in [
        "daemonset.apps/trust-agent",
        "pod/trust-agent-abcde",
        "configmap/trust-agent-config",
        "secret/trust-agent-tls",
    ] {
        assert!(out.contains(want), "missing {want} in:\n{out}");
    }
    let out = ok(&kubectl(
        &c.kubeconfig,
        &[
            "logs",
            "-n",
            ns,
            "trust-agent-abcde",
            "-c",
            "run-trust-agent",
        ],
    ));
    assert_eq!(out, "line 1\nline 2\nTPM: quote ok\n");
    let out = ok(&kubectl(
        &c.kubeconfig,
        &[
            "logs",
            "-n",
            ns,
            "trust-agent-abcde",
            "-c",
            "run-trust-agent",
            "--tail",
            "1",
        ],
    ));
    assert_eq!(out, "TPM: quote ok\n");
    let err = failed(&kubectl(
        &c.kubeconfig,
        &["logs", "-n", ns, "trust-agent-abcde", "-c", "nope"],
    ));
    assert!(err.contains("container nope is not valid"), "{err}");
    let out = ok(&kubectl(
        &c.kubeconfig,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=worker-1",
            "-o",
            "name",
        ],
    ));
    assert_eq!(out.trim(), "pod/trust-agent-abcde");
}

// ---------------------------------------------------------------- server semantics

#[test]
fn stale_resource_version_gets_409_conflict_status() {
    let c = cluster();
    let node = c.api.node("worker-1").unwrap();
    let rv = rv_of(&node);
    // A first write succeeds with the current resourceVersion and bumps it.
    let (code, after) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        MERGE,
        &json!({"metadata": {"resourceVersion": rv.to_string(), "labels": {"a": "1"}}}),
    );
    assert_eq!(code, 200, "{after}");
    assert!(rv_of(&after) > rv);
    assert_eq!(rv_of(&after), c.api.resource_version());
    // The same precondition is now stale: PATCH and PUT both get 409.
    let (code, st) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        MERGE,
        &json!({"metadata": {"resourceVersion": rv.to_string(), "labels": {"a": "2"}}}),
    );
    assert_eq!(code, 409);
    assert_status(&st, 409, "Conflict");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));
    let (code, st) = call(&c.api, "PUT", "/api/v1/nodes/worker-1", JSON, &node);
    assert_eq!(code, 409);
    assert_status(&st, 409, "Conflict");
    assert_eq!(
        c.api.node("worker-1").unwrap()["metadata"]["labels"]["a"],
        "1"
    );

    // Leases: duplicate POST is AlreadyExists, stale PUT is Conflict, fresh PUT works.
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}});
    let (code, created) = call(&c.api, "POST", path, JSON, &lease);
    assert_eq!(code, 201);
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].as_str().is_some());
    let (code, st) = call(&c.api, "POST", path, JSON, &lease);
    assert_status(&st, 409, "AlreadyExists");
    assert_eq!(code, 409);
    let mut mine = created.clone();
    mine["spec"]["holderIdentity"] = json!("b");
    let (code, updated) = call(&c.api, "PUT", &format!("{path}/l"), JSON, &mine);
    assert_eq!(code, 200, "{updated}");
    let (code, st) = call(&c.api, "PUT", &format!("{path}/l"), JSON, &mine);
    assert_eq!(code, 409);
    assert_status(&st, 409, "Conflict");
    let (code, st) = call(&c.api, "GET", &format!("{path}/gone"), None, &Value::Null);
    assert_eq!(code, 404);
    assert_status(&st, 404, "NotFound");
    // POST into a namespace that does not exist: 404 for the namespace.
    let (code, st) = call(
        &c.api,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/nowhere/leases",
        JSON,
        &lease,
    );
    assert_eq!(code, 404);
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("namespaces \"nowhere\" not found"));
}

#[test]
fn no_op_write_keeps_the_resource_version() {
    let c = cluster();
    let rv = c.api.resource_version();
    let (code, v) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        SMP,
        &json!({"metadata": {"labels": {TPM: "true"}}}),
    );
    assert_eq!(code, 200);
    assert_eq!(c.api.resource_version(), rv, "{v}");
}

#[test]
fn watch_from_a_compacted_resource_version_gets_410_expired_error_event() {
    let c = cluster();
    let old = c.api.resource_version();
    call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        MERGE,
        &json!({"metadata": {"labels": {"x": "1"}}}),
    );
    c.api.compact_history();
    let w = Watch::open(
        &c.api,
        &format!("/api/v1/nodes?watch=true&resourceVersion={old}"),
    );
    let ev = w.next();
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_status(&ev["object"], 410, "Expired");
    assert!(w.ends());
    // A continue token from before the compaction is too old as well.
    let (code, page) = call(&c.api, "GET", "/api/v1/nodes?limit=1", None, &Value::Null);
    assert_eq!(code, 200);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-2",
        MERGE,
        &json!({"metadata": {"labels": {"x": "1"}}}),
    );
    c.api.compact_history();
    let (code, st) = call(
        &c.api,
        "GET",
        &format!("/api/v1/nodes?limit=1&continue={token}"),
        None,
        &Value::Null,
    );
    assert_eq!(code, 410, "{st}");
    assert_status(&st, 410, "Expired");
}

#[test]
fn watch_replays_history_streams_live_and_applies_selector_transitions() {
    let c = cluster();
    let start = c.api.resource_version();
    call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        MERGE,
        &json!({"metadata": {"labels": {"step": "1"}}}),
    );
    // Resume from `start`: the change above is replayed, then live ones follow.
    let w = Watch::open(
        &c.api,
        &format!("/api/v1/nodes?watch=1&resourceVersion={start}&labelSelector={TPM}%3Dtrue"),
    );
    let ev = w.next();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["labels"]["step"].as_str()
        ),
        (Some("MODIFIED"), Some("1"))
    );
    // worker-3 does not match the selector: its change is not sent.
    call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-3",
        MERGE,
        &json!({"metadata": {"labels": {"step": "2"}}}),
    );
    // worker-2 stops matching: DELETED.
    call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-2",
        MERGE,
        &json!({"metadata": {"labels": {TPM: "false"}}}),
    );
    let ev = w.next();
    assert_eq!(ev["type"], "DELETED", "{ev}");
    assert_eq!(ev["object"]["metadata"]["name"], "worker-2");
    // A new node that matches: ADDED.
    c.api
        .add_node("worker-4", &[(TPM, "true")], "uuid-4")
        .unwrap();
    let ev = w.next();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("worker-4"))
    );
    assert_eq!(rv_of(&ev["object"]), c.api.resource_version());
    c.api.delete("nodes", None, "worker-4").unwrap();
    let ev = w.next();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("worker-4"))
    );

    // Without a resourceVersion: synthetic ADDED for every current object, then live.
    let w = Watch::open(
        &c.api,
        "/api/v1/nodes?watch=true&fieldSelector=metadata.name%3Dworker-1",
    );
    let ev = w.next();
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("worker-1"))
    );

    // Bookmarks when asked for, and the stream ends after timeoutSeconds.
    let rv = c.api.resource_version();
    let w = Watch::open(
        &c.api,
        &format!("/api/v1/nodes?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"),
    );
    let ev = w.next();
    assert_eq!(ev["type"], "BOOKMARK", "{ev}");
    assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv.to_string());
    assert!(w.ends());
}

#[test]
fn invalid_labels_and_oversized_annotations_get_422_invalid() {
    let c = cluster();
    for (labels, bad) in [
        (json!({"ok": "has space"}), "has space"),
        (json!({"Bad_Prefix/x": "v"}), "Bad_Prefix/x"),
        (json!({"k": "v".repeat(64)}), "vvvv"),
        (json!({"-k": "v"}), "-k"),
    ] {
        let (code, st) = call(
            &c.api,
            "PATCH",
            "/api/v1/nodes/worker-1",
            MERGE,
            &json!({"metadata": {"labels": labels}}),
        );
        assert_eq!(code, 422, "{st}");
        assert_status(&st, 422, "Invalid");
        let msg = st["message"].as_str().unwrap();
        assert!(
            msg.starts_with("Node \"worker-1\" is invalid: metadata.labels"),
            "{msg}"
        );
        assert!(msg.contains(bad), "{msg}");
        assert_eq!(st["details"]["causes"][0]["field"], "metadata.labels");
    }
    let big = "a".repeat(256 * 1024);
    let (code, st) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        MERGE,
        &json!({"metadata": {"annotations": {"nodetrust.io/report": big}}}),
    );
    assert_eq!(code, 422);
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("metadata.annotations: Too long"));
    // Nothing was stored by any of these.
    let n = c.api.node("worker-1").unwrap();
    assert!(n["metadata"].get("annotations").is_none());
    assert_eq!(n["metadata"]["labels"].as_object().unwrap().len(), 2);
}

#[test]
fn json_patch_ops_apply_in_order_and_a_failed_test_changes_nothing() {
    let c = cluster();
    let rv = rv_of(&c.api.node("worker-1").unwrap());
    let (code, n) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        JSONPATCH,
        &json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv.to_string()},
            {"op": "add", "path": "/metadata/labels/ibm-cloud.kubernetes.io~1is-trusted", "value": "true"},
            {"op": "replace", "path": "/metadata/labels/ibm-cloud.kubernetes.io~1tpm-enabled", "value": "yes"},
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}},
            {"op": "remove", "path": "/metadata/annotations/a"}
        ]),
    );
    assert_eq!(code, 200, "{n}");
    assert_eq!(
        n["metadata"]["labels"]["ibm-cloud.kubernetes.io/is-trusted"],
        "true"
    );
    assert_eq!(n["metadata"]["labels"][TPM], "yes");
    assert_eq!(n["metadata"]["annotations"], json!({}));
    let (code, st) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        JSONPATCH,
        &json!([
            {"op": "replace", "path": "/metadata/labels/ibm-cloud.kubernetes.io~1is-trusted", "value": "false"},
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv.to_string()}
        ]),
    );
    assert_eq!(code, 422, "{st}");
    assert_eq!(
        c.api.node("worker-1").unwrap()["metadata"]["labels"]["ibm-cloud.kubernetes.io/is-trusted"],
        "true"
    );
    let (code, _) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        Some("application/apply-patch+yaml"),
        &json!({}),
    );
    assert_eq!(code, 415);
}

#[test]
fn strategic_merge_replaces_taints_whole_and_merges_labels() {
    let c = cluster();
    c.api
        .update("nodes", None, "worker-1", |n| {
            n["spec"]["taints"] = json!([{"key": "a", "effect": "NoSchedule"}]);
        })
        .unwrap();
    let (code, n) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        SMP,
        &json!({"metadata": {"labels": {"x": "1"}},
                "spec": {"taints": [{"key": "nodetrust.io/untrusted", "effect": "NoExecute"}]}}),
    );
    assert_eq!(code, 200, "{n}");
    // Node.spec.taints has no patch merge key in k8s.io/api: the list is replaced.
    assert_eq!(
        n["spec"]["taints"],
        json!([{"key": "nodetrust.io/untrusted", "effect": "NoExecute"}])
    );
    assert_eq!(n["metadata"]["labels"]["x"], "1");
    assert_eq!(n["metadata"]["labels"][TPM], "true");
    // `$patch: delete` needs a merge key; on taints the server refuses it.
    let (code, st) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        SMP,
        &json!({"spec": {"taints": [{"key": "nodetrust.io/untrusted", "$patch": "delete"}]}}),
    );
    assert_eq!(code, 422, "{st}");
    let (code, n) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        SMP,
        &json!({"spec": {"taints": null}}),
    );
    assert_eq!(code, 200);
    assert!(n["spec"].get("taints").is_none(), "{n}");
    // Status is kept on the main endpoint and written through /status.
    let (_, n) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        SMP,
        &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    assert_eq!(n["status"]["conditions"][0]["status"], "True");
    let (_, n) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1/status",
        SMP,
        &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    assert_eq!(n["status"]["conditions"][0]["status"], "False");
    assert_eq!(n["status"]["conditions"].as_array().unwrap().len(), 1);
}

#[test]
fn pagination_walks_every_item_once() {
    let c = cluster();
    for i in 4..=7 {
        c.api.add_node(&format!("worker-{i}"), &[], "u").unwrap();
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/nodes?limit=3".to_string();
    let mut pages = 0;
    loop {
        let (code, page) = call(&c.api, "GET", &path, None, &Value::Null);
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["kind"], "NodeList");
        pages += 1;
        for n in page["items"].as_array().unwrap() {
            names.push(n["metadata"]["name"].as_str().unwrap().to_string());
        }
        match page["metadata"]["continue"].as_str() {
            Some(t) => path = format!("/api/v1/nodes?limit=3&continue={t}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (1..=7).map(|i| format!("worker-{i}")).collect();
    assert_eq!(names, want);
}

#[test]
fn injected_faults_answer_until_used_up_or_cleared() {
    let c = cluster();
    c.api.inject(Fault::Status {
        code: 503,
        times: 2,
        path_contains: Some("/nodes".into()),
        method: Some("GET".into()),
    });
    // Another path is not affected.
    assert_eq!(
        call(&c.api, "GET", "/api/v1/namespaces", None, &Value::Null).0,
        200
    );
    for _ in 0..2 {
        let (code, st) = call(&c.api, "GET", "/api/v1/nodes", None, &Value::Null);
        assert_eq!(code, 503);
        assert_status(&st, 503, "ServiceUnavailable");
    }
    assert_eq!(
        call(&c.api, "GET", "/api/v1/nodes", None, &Value::Null).0,
        200
    );

    c.api.inject(Fault::Status {
        code: 429,
        times: 1,
        path_contains: None,
        method: None,
    });
    let (code, head, body) = raw(&c.api, "GET", "/api/v1/nodes", None, "");
    assert_eq!(code, 429);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_status(
        &serde_json::from_str(&body).unwrap(),
        429,
        "TooManyRequests",
    );

    c.api.inject(Fault::ConflictStorm { times: 2 });
    let rv = rv_of(&c.api.node("worker-1").unwrap());
    for _ in 0..2 {
        let (code, st) = call(
            &c.api,
            "PATCH",
            "/api/v1/nodes/worker-1",
            MERGE,
            &json!({"metadata": {"resourceVersion": rv.to_string(), "labels": {"a": "b"}}}),
        );
        assert_eq!(code, 409);
        assert_status(&st, 409, "Conflict");
    }
    let (code, _) = call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-1",
        MERGE,
        &json!({"metadata": {"resourceVersion": rv.to_string(), "labels": {"a": "b"}}}),
    );
    assert_eq!(code, 200);

    c.api.inject(Fault::Status {
        code: 500,
        times: 100,
        path_contains: None,
        method: None,
    });
    assert_eq!(
        call(&c.api, "GET", "/api/v1/nodes", None, &Value::Null).0,
        500
    );
    c.api.clear_faults();
    assert_eq!(
        call(&c.api, "GET", "/api/v1/nodes", None, &Value::Null).0,
        200
    );

    c.api.inject(Fault::Delay { ms: 300, times: 1 });
    let t = Instant::now();
    assert_eq!(call(&c.api, "GET", "/version", None, &Value::Null).0, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the delay was not applied"
    );

    let rv = c.api.resource_version();
    let w = Watch::open(
        &c.api,
        &format!("/api/v1/nodes?watch=true&resourceVersion={rv}"),
    );
    // Make sure the watch is registered before dropping it.
    call(
        &c.api,
        "PATCH",
        "/api/v1/nodes/worker-3",
        MERGE,
        &json!({"metadata": {"labels": {"z": "1"}}}),
    );
    assert_eq!(w.next()["type"], "MODIFIED");
    c.api.inject(Fault::DropWatches);
    assert!(w.ends(), "the watch stayed open after DropWatches");

    let log = c.api.requests();
    assert!(log
        .iter()
        .any(|r| r.status == 503 && r.path == "/api/v1/nodes"));
    assert_eq!(c.api.count_requests("PATCH", "worker-2"), 0);
}

#[test]
fn discovery_documents_name_the_served_resources() {
    let c = cluster();
    let (_, v) = call(&c.api, "GET", "/api/v1", None, &Value::Null);
    let names: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for want in [
        "nodes",
        "namespaces",
        "pods",
        "pods/log",
        "configmaps",
        "secrets",
        "events",
        "services",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let (_, v) = call(&c.api, "GET", "/apis", None, &Value::Null);
    let groups: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["preferredVersion"]["groupVersion"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        ["apps/v1", "coordination.k8s.io/v1", "events.k8s.io/v1"]
    );
    let (code, v) = call(
        &c.api,
        "GET",
        "/apis/coordination.k8s.io/v1",
        None,
        &Value::Null,
    );
    assert_eq!(code, 200);
    assert_eq!(v["resources"][0]["name"], "leases");
    // Events through both APIs are stored and listed.
    let (code, _) = call(
        &c.api,
        "POST",
        "/api/v1/namespaces/default/events",
        JSON,
        &json!({"metadata": {"name": "e1"}, "reason": "Untrusted", "involvedObject": {"kind": "Node", "name": "worker-1"}}),
    );
    assert_eq!(code, 201);
    let (code, _) = call(
        &c.api,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        JSON,
        &json!({"metadata": {"name": "e2"}, "reason": "Trusted", "regarding": {"kind": "Node", "name": "worker-2"}}),
    );
    assert_eq!(code, 201);
    let (_, l) = call(
        &c.api,
        "GET",
        "/api/v1/namespaces/default/events?fieldSelector=reason%3DUntrusted",
        None,
        &Value::Null,
    );
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let (_, l) = call(
        &c.api,
        "GET",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        None,
        &Value::Null,
    );
    assert_eq!(l["items"][0]["regarding"]["name"], "worker-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_stops_inside_a_tokio_runtime() {
    let api = FakeApiServer::start().unwrap();
    api.add_node("n", &[], "u").unwrap();
    let addr = api.addr();
    let body = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /api/v1/nodes/n HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(body.contains("\"systemUUID\":\"u\""), "{body}");
    drop(api);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the server still listens after drop"
    );
}
