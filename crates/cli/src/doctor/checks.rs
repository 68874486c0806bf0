//! The checks, in the runbook's order, as a pure function of what was seen ([`evaluate`]).
//!
//! 1. The agent's DaemonSet: namespace, DaemonSet `cit-trust-agent` (desired = ready), the
//!    `tpm-enabled=true` label on every node that has a TPM.
//! 2. Per node: the agent pod; its init container `init-tcsd` (`nodetrust-agent check`, whose
//!    `PASS|FAIL <check>: ...` lines and `VERDICT:` line are read from its log); the agent
//!    container `run-trust-agent`.
//! 3. The ConfigMap and Secret `cit-server-info`; the Trust Server answers; the runbook's probe
//!    with the agent account from the Secret.
//! 4. Per node: host registered (and so its AK activated: the server stores a host only after
//!    credential activation), the agent's `/v2/host`, the TPM (present, answering, lockout,
//!    owner secret, measured launch, event log), the last attestation and the verdict.
//! 5. Per node: the `is-trusted` label against the effective verdict, and when they disagree,
//!    why (no labeller leader, labeller API errors, node not matched to a host).
//!
//! Where a fact is reported: the TPM's dictionary-attack lockout is not in the agent's API; it
//! comes from `init-tcsd`'s `dictionary-attack lockout` line (the state when the pod started)
//! and from the agent's own log, where a TPM command refused for lockout is logged with the
//! words "dictionary-attack lockout" (the state since). The owner secret and the event log come
//! from `init-tcsd`'s `endorsement hierarchy` and `event log` lines. A fact no source gives is a
//! WARN saying so.

use std::collections::BTreeMap;

use nodetrust_proto::trust::{rfc3339, Trust};

use super::facts::{
    Cluster, ContainerFacts, Facts, HostEntry, Lookup, NodeFacts, PodFacts, Probe, State,
};
use super::names;
use super::report::{quote, Check, Section, Status};

/// How a node was matched to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// `systemUUID` = hardware UUID (case-insensitive).
    Uuid,
    /// Node name = host name.
    Name,
}

/// The host of a node, by the labeller's rule: `systemUUID` = hardware UUID, else node name =
/// host name.
pub fn host_of<'a>(node: &NodeFacts, hosts: &'a [HostEntry]) -> Option<(&'a HostEntry, MatchedBy)> {
    let uuid = node.system_uuid.trim();
    if !uuid.is_empty() {
        if let Some(h) = hosts
            .iter()
            .find(|h| h.hardware_uuid.trim().eq_ignore_ascii_case(uuid))
        {
            return Some((h, MatchedBy::Uuid));
        }
    }
    hosts
        .iter()
        .find(|h| h.name == node.name)
        .map(|h| (h, MatchedBy::Name))
}

fn label<'a>(node: &'a NodeFacts, key: &str) -> Option<&'a str> {
    node.labels.get(key).map(String::as_str)
}

fn pods_on<'a>(cluster: &'a Cluster, node: &str) -> Vec<&'a PodFacts> {
    match &cluster.pods {
        Ok(p) => p.iter().filter(|p| p.node == node).collect(),
        Err(_) => Vec::new(),
    }
}

/// The nodes doctor looks at, by name: `--node`, else every node that carries
/// `tpm-enabled=true`, runs an agent pod, has a registered host, or carries the trust label or
/// the labeller's verdict annotation.
pub fn in_scope(cluster: &Cluster, hosts: Option<&[HostEntry]>, only: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| match only {
            Some(o) => n.name == o,
            None => {
                label(n, names::TPM_LABEL) == Some("true")
                    || !pods_on(cluster, &n.name).is_empty()
                    || hosts.is_some_and(|h| host_of(n, h).is_some())
                    || n.labels.contains_key(names::TRUST_LABEL)
                    || n.annotations.contains_key(names::VERDICT_ANNOTATION)
            }
        })
        .map(|n| n.name.clone())
        .collect();
    out.sort();
    out
}

/// A `PASS|FAIL <check>: <detail>` line of `nodetrust-agent check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    /// Passed.
    pub pass: bool,
    /// The check's name.
    pub name: String,
    /// Its detail.
    pub detail: String,
}

/// The check lines and the verdict line of an `init-tcsd` log.
pub fn check_lines(log: &str) -> (Vec<CheckLine>, Option<String>) {
    let mut lines = Vec::new();
    let mut verdict = None;
    for l in log.lines() {
        let l = l.trim();
        if let Some(v) = l.strip_prefix("VERDICT:") {
            verdict = Some(quote(v));
            continue;
        }
        let (pass, rest) = match (l.strip_prefix("PASS "), l.strip_prefix("FAIL ")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => continue,
        };
        if let Some((name, detail)) = rest.split_once(": ") {
            lines.push(CheckLine {
                pass,
                name: name.trim().to_string(),
                detail: detail.trim().to_string(),
            });
        }
    }
    (lines, verdict)
}

/// What an agent's log says about its trouble with the server or the TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The server refused the EK (`ek_not_endorsed`).
    EkNotEndorsed,
    /// The server refused the agent account (401).
    AccountRefused,
    /// Another TPM holds the host name or hardware UUID (`identity_conflict`).
    IdentityConflict,
    /// The agent does not trust the server's certificate.
    ServerTls,
    /// The agent cannot reach the server.
    ServerUnreachable,
    /// A TPM command was refused for dictionary-attack lockout.
    Lockout,
}

/// The last line of `log` showing each signal.
pub fn signals(log: &str) -> BTreeMap<u8, (Signal, String)> {
    let mut out = BTreeMap::new();
    for l in log.lines() {
        let lower = l.to_ascii_lowercase();
        let found = if lower.contains("ek_not_endorsed")
            || lower.contains("does not accept this tpm's ek")
        {
            Some(Signal::EkNotEndorsed)
        } else if lower.contains("refused the agent's account") {
            Some(Signal::AccountRefused)
        } else if lower.contains("identity_conflict")
            || lower.contains("already has this host with another tpm")
        {
            Some(Signal::IdentityConflict)
        } else if lower.contains("tls handshake with the trust server failed")
            || lower.contains("server certificate not trusted")
        {
            Some(Signal::ServerTls)
        } else if lower.contains("trust server is not answering") {
            Some(Signal::ServerUnreachable)
        } else if lower.contains("dictionary-attack lockout") && !lower.contains("not in lockout") {
            Some(Signal::Lockout)
        } else {
            None
        };
        if let Some(s) = found {
            out.insert(s as u8, (s, quote(l)));
        }
    }
    out
}

fn has(sig: &BTreeMap<u8, (Signal, String)>, s: Signal) -> Option<&str> {
    sig.get(&(s as u8)).map(|(_, l)| l.as_str())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines
        .get(start..)
        .unwrap_or_default()
        .iter()
        .map(|l| quote(l))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn describe(s: &State) -> String {
    match s {
        State::Running => "running".into(),
        State::Waiting { reason, message } if message.is_empty() => format!("waiting ({reason})"),
        State::Waiting { reason, message } => format!("waiting ({reason}: {})", quote(message)),
        State::Terminated {
            reason, exit_code, ..
        } => format!("terminated ({reason}, exit code {exit_code})"),
        State::Unknown => "no state reported".into(),
    }
}

fn log_of<'a>(pod: &'a PodFacts, container: &str) -> Option<&'a str> {
    pod.logs
        .get(container)
        .and_then(|r| r.as_ref().ok())
        .map(String::as_str)
}

/// One node's context.
struct NodeView<'a> {
    node: &'a NodeFacts,
    pod: Option<&'a PodFacts>,
    init_log: Option<&'a str>,
    agent_log: Option<&'a str>,
    init_lines: Vec<CheckLine>,
    signals: BTreeMap<u8, (Signal, String)>,
}

impl NodeView<'_> {
    /// The init container's line for a check, unless it says the check was not made.
    fn init_line(&self, name: &str) -> Option<&CheckLine> {
        self.init_lines
            .iter()
            .find(|l| l.name == name)
            .filter(|l| !l.detail.starts_with("not checked"))
    }
}

/// Every check, in the runbook's order.
pub fn evaluate(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let ns = f.namespace.as_str();
    let hosts = f.remote.hosts.as_ref().ok().map(Vec::as_slice);
    let scope = in_scope(&f.cluster, hosts, f.only_node.as_deref());
    let nodes: Vec<&NodeFacts> = scope
        .iter()
        .filter_map(|n| f.cluster.nodes.iter().find(|x| &x.name == n))
        .collect();

    // Step 1: the DaemonSet.
    out.push(match &f.cluster.namespace {
        Lookup::Found(()) => Check::new(1, "namespace", Section::PodMissing, Status::Pass, format!("namespace {ns} exists")),
        Lookup::Missing => Check::new(1, "namespace", Section::PodMissing, Status::Fail, format!("namespace {ns} does not exist"))
            .remedy("create the namespace, the DaemonSet and the ConfigMap/Secret: `kubectl apply -k deploy/` (or --namespace if it lives elsewhere)")
            .cause(format!("namespace {ns} does not exist: nothing of nodetrust is deployed there"), "kubectl get namespaces"),
        Lookup::Error(e) => Check::new(1, "namespace", Section::PodMissing, Status::Fail, e)
            .remedy("use a kubeconfig whose user may read namespaces, DaemonSets, pods, logs, ConfigMaps, Secrets, nodes and leases")
            .cause(format!("cannot read namespace {ns}"), "kubectl auth can-i --list -n kubx-cit"),
    });
    let ds = match &f.cluster.daemonset {
        Lookup::Found(d) => Some(d),
        _ => None,
    };
    out.push(match &f.cluster.daemonset {
        Lookup::Found(d) => {
            let selector = d
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let saw = format!(
                "DaemonSet {ns}/{} desired {}, current {}, ready {}, node selector {}",
                names::DAEMONSET,
                d.desired,
                d.current,
                d.ready,
                if selector.is_empty() { "(none)".into() } else { selector.clone() }
            );
            if d.node_selector.get(names::TPM_LABEL).map(String::as_str) != Some("true") {
                Check::new(1, "daemonset", Section::PodMissing, Status::Warn, format!("{saw}: its node selector is not {}=true", names::TPM_LABEL))
                    .remedy("the runbook's DaemonSet selects nodes with ibm-cloud.kubernetes.io/tpm-enabled=true; apply deploy/agent-daemonset.yaml")
            } else if d.desired == 0 {
                Check::new(1, "daemonset", Section::PodMissing, Status::Warn, format!("{saw}: it runs on no node"))
                    .remedy("label the nodes that have a TPM: `kubectl label node NODE ibm-cloud.kubernetes.io/tpm-enabled=true`")
            } else if d.ready < d.desired {
                Check::new(1, "daemonset", Section::PodMissing, Status::Warn, format!("{saw}: {} of {} pods are not ready (see the per-node checks)", d.desired - d.ready, d.desired))
                    .remedy(format!("`kubectl -n {ns} get pods -o wide -l {}` shows which", names::POD_SELECTOR))
            } else {
                Check::new(1, "daemonset", Section::PodMissing, Status::Pass, saw)
            }
        }
        Lookup::Missing => Check::new(1, "daemonset", Section::PodMissing, Status::Fail, format!("no DaemonSet {} in namespace {ns}", names::DAEMONSET))
            .remedy("deploy the agent: `kubectl apply -k deploy/` (deploy/agent-daemonset.yaml); check you are looking at the right cluster and namespace")
            .cause(format!("the DaemonSet {ns}/{} does not exist: no agent runs anywhere", names::DAEMONSET), format!("kubectl -n {ns} get ds")),
        Lookup::Error(e) => Check::new(1, "daemonset", Section::PodMissing, Status::Fail, e)
            .remedy("use a kubeconfig whose user may read DaemonSets in the namespace")
            .cause(format!("cannot read the DaemonSet {ns}/{}", names::DAEMONSET), format!("kubectl -n {ns} get ds")),
    });
    let enabled: Vec<&str> = f
        .cluster
        .nodes
        .iter()
        .filter(|n| label(n, names::TPM_LABEL) == Some("true"))
        .map(|n| n.name.as_str())
        .collect();
    if f.only_node.is_none() {
        out.push(if !enabled.is_empty() {
            Check::new(1, "tpm-enabled nodes", Section::PodMissing, Status::Pass, format!("{} node(s) carry {}=true: {}", enabled.len(), names::TPM_LABEL, enabled.iter().take(20).copied().collect::<Vec<_>>().join(", ")))
        } else if scope.is_empty() {
            Check::new(1, "tpm-enabled nodes", Section::PodMissing, Status::Fail, format!("no node carries {}=true, and none runs an agent or has a registered host", names::TPM_LABEL))
                .remedy("label each node with a TPM: `kubectl label node NODE ibm-cloud.kubernetes.io/tpm-enabled=true`")
                .cause(format!("no node is labelled {}=true: the DaemonSet runs no agent", names::TPM_LABEL), "kubectl get nodes -L ibm-cloud.kubernetes.io/tpm-enabled")
        } else {
            Check::new(1, "tpm-enabled nodes", Section::PodMissing, Status::Warn, format!("no node carries {}=true (see the per-node checks)", names::TPM_LABEL))
        });
    }

    let views: Vec<NodeView<'_>> = nodes
        .iter()
        .map(|n| {
            let pods = pods_on(&f.cluster, &n.name);
            // Several pods on a node (a rollout): the one whose agent runs, else the first.
            let pod = pods
                .iter()
                .find(|p| p.containers.iter().any(|c| c.state == State::Running))
                .or(pods.first())
                .copied();
            let init_name = ds
                .and_then(|d| d.init_containers.first())
                .map_or(names::INIT, String::as_str);
            let agent_name = ds
                .and_then(|d| d.containers.first())
                .map_or(names::AGENT, String::as_str);
            let init_log = pod.and_then(|p| {
                log_of(p, init_name).or_else(|| p.init.first().and_then(|c| log_of(p, &c.name)))
            });
            let agent_log = pod.and_then(|p| {
                log_of(p, agent_name)
                    .or_else(|| p.containers.first().and_then(|c| log_of(p, &c.name)))
            });
            NodeView {
                node: n,
                pod,
                init_log,
                agent_log,
                init_lines: init_log.map(|l| check_lines(l).0).unwrap_or_default(),
                signals: agent_log.map(signals).unwrap_or_default(),
            }
        })
        .collect();

    for v in &views {
        node_steps_1_2(f, ds, v, hosts, &mut out);
    }

    // Step 3: settings and the Trust Server.
    step_3(f, &mut out);

    for v in &views {
        node_step_4_5(f, v, &mut out);
    }
    if f.only_node.is_none() {
        out.push(lease_check(f));
    }
    out
}

fn node_steps_1_2(
    f: &Facts,
    ds: Option<&super::facts::DaemonSetFacts>,
    v: &NodeView<'_>,
    hosts: Option<&[HostEntry]>,
    out: &mut Vec<Check>,
) {
    let ns = f.namespace.as_str();
    let n = v.node;
    let name = n.name.as_str();
    let tpm = label(n, names::TPM_LABEL);
    if tpm == Some("true") {
        out.push(
            Check::new(
                1,
                "tpm-enabled label",
                Section::PodMissing,
                Status::Pass,
                format!("{}=true", names::TPM_LABEL),
            )
            .node(name),
        );
    } else {
        let mut evidence = Vec::new();
        if let Some((h, by)) = hosts.and_then(|h| host_of(n, h)) {
            evidence.push(format!(
                "the Trust Server has host {} registered for it (by {})",
                quote(&h.name),
                if by == MatchedBy::Uuid {
                    "systemUUID"
                } else {
                    "name"
                }
            ));
        }
        if v.pod.is_some() {
            evidence.push("an agent pod runs on it".into());
        }
        if let Some(l) = label(n, names::TRUST_LABEL) {
            evidence.push(format!("it carries {}={}", names::TRUST_LABEL, quote(l)));
        }
        let what = match tpm {
            Some(other) => format!("{}={} (not \"true\")", names::TPM_LABEL, quote(other)),
            None => format!("no label {}", names::TPM_LABEL),
        };
        let saw = if evidence.is_empty() {
            format!("{what}: the DaemonSet runs no agent on it and the labeller ignores it")
        } else {
            format!("{what}, but it has a TPM: {}", evidence.join("; "))
        };
        out.push(
            Check::new(1, "tpm-enabled label", Section::PodMissing, Status::Fail, saw)
                .node(name)
                .remedy(format!("if the node has a TPM: `kubectl label node {name} {}=true --overwrite` (the DaemonSet then runs the agent there and the labeller looks after it)", names::TPM_LABEL))
                .cause(
                    format!("node {name} lacks the label {}=true: no agent runs there and its trust label is not maintained", names::TPM_LABEL),
                    format!("kubectl label node {name} {}=true --overwrite", names::TPM_LABEL),
                ),
        );
    }

    // Step 2: the pod and its containers.
    let Some(pod) = v.pod else {
        let (saw, cause, next) = match (&f.cluster.pods, ds) {
            (Err(e), _) => (e.clone(), "cannot list the agent pods".to_string(), format!("kubectl -n {ns} get pods -o wide")),
            (Ok(_), None) => (
                format!("no agent pod on {name}: there is no DaemonSet {}", names::DAEMONSET),
                format!("no agent pod on {name}: the DaemonSet {} is missing", names::DAEMONSET),
                format!("kubectl -n {ns} get ds"),
            ),
            (Ok(_), Some(_)) if tpm != Some("true") => (
                format!("no agent pod on {name}: the DaemonSet selects only nodes with {}=true", names::TPM_LABEL),
                format!("no agent pod on {name}: it lacks {}=true", names::TPM_LABEL),
                format!("kubectl label node {name} {}=true --overwrite", names::TPM_LABEL),
            ),
            (Ok(_), Some(_)) => (
                format!("no pod of {} on {name} although it carries {}=true", names::DAEMONSET, names::TPM_LABEL),
                format!("the DaemonSet does not run a pod on {name} (taints, resources, or a DaemonSet not yet rolled out)"),
                format!("kubectl -n {ns} describe ds {}", names::DAEMONSET),
            ),
        };
        out.push(
            Check::new(2, "agent pod", Section::PodMissing, Status::Fail, saw)
                .node(name)
                .remedy(format!("`kubectl -n {ns} describe ds {}` shows why a node gets no pod (node selector, taints without tolerations, resources)", names::DAEMONSET))
                .cause(cause, next),
        );
        return;
    };
    let pod_name = pod.name.as_str();
    out.push(
        Check::new(
            2,
            "agent pod",
            Section::PodMissing,
            Status::Pass,
            format!("pod {} ({})", quote(pod_name), quote(&pod.phase)),
        )
        .node(name),
    );

    let init_name = ds
        .and_then(|d| d.init_containers.first())
        .map_or(names::INIT, String::as_str);
    let init = pod
        .init
        .iter()
        .find(|c| c.name == init_name)
        .or(pod.init.first());
    let init_done =
        init.is_some_and(|c| matches!(&c.state, State::Terminated { exit_code: 0, .. }));
    match init {
        None => out.push(
            Check::new(2, "init container", Section::AgentNotStarting, Status::Warn, format!("pod {pod_name} reports no init container status (expected {init_name}, the TPM check)"))
                .node(name)
                .remedy("apply deploy/agent-daemonset.yaml, whose init container runs `nodetrust-agent check`"),
        ),
        Some(c) if init_done => {
            let (_, verdict) = v.init_log.map(check_lines).unwrap_or_default();
            out.push(
                Check::new(2, "init container", Section::AgentNotStarting, Status::Pass, format!(
                    "{} completed{}",
                    c.name,
                    verdict.map(|v| format!(": {v}")).unwrap_or_default()
                ))
                .node(name),
            );
        }
        Some(c) if c.state == State::Running => out.push(
            Check::new(2, "init container", Section::AgentNotStarting, Status::Warn, format!("{} is still running (the TPM check)", c.name))
                .node(name)
                .remedy(format!("wait, then `kubectl -n {ns} logs {pod_name} -c {}`", c.name)),
        ),
        Some(c) => out.push(init_failure(ns, name, pod_name, c, v)),
    }

    let agent_name = ds
        .and_then(|d| d.containers.first())
        .map_or(names::AGENT, String::as_str);
    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == agent_name)
        .or(pod.containers.first());
    let logs_cmd = |c: &str, prev: bool| {
        format!(
            "kubectl -n {ns} logs {pod_name} -c {c}{}",
            if prev { " --previous" } else { "" }
        )
    };
    out.push(match agent {
        None => Check::new(2, "agent container", Section::AgentNotStarting, Status::Fail, format!("pod {pod_name} reports no status for {agent_name}"))
            .node(name)
            .remedy(format!("`kubectl -n {ns} describe pod {pod_name}`"))
            .cause(format!("the agent container {agent_name} has not started on {name}"), format!("kubectl -n {ns} describe pod {pod_name}")),
        Some(c) if c.state == State::Running && c.ready => {
            let restarts = if c.restarts > 0 {
                format!(", {} restart(s) (last end: {})", c.restarts, c.last.as_ref().map(describe).unwrap_or_else(|| "unknown".into()))
            } else {
                String::new()
            };
            Check::new(2, "agent container", Section::AgentNotStarting, Status::Pass, format!("{} running and ready{restarts}", c.name)).node(name)
        }
        Some(c) if c.state == State::Running => Check::new(2, "agent container", Section::AgentNotStarting, Status::Warn, format!("{} running but not ready (its HTTPS port does not answer yet); {} restart(s)", c.name, c.restarts))
            .node(name)
            .remedy(format!("`{}`", logs_cmd(&c.name, false))),
        Some(c) if !init_done => Check::new(2, "agent container", Section::AgentNotStarting, Status::Fail, format!("{} not started ({}): the init container has not completed", c.name, describe(&c.state)))
            .node(name)
            .remedy("fix what the init container reports (above)")
            .cause(format!("the agent on {name} waits for its init container"), format!("kubectl -n {ns} describe pod {pod_name}")),
        Some(c) => {
            let tail = v.agent_log.map(|l| last_lines(l, 3)).unwrap_or_default();
            let last = c.last.as_ref().map(|s| format!("; last end: {}", describe(s))).unwrap_or_default();
            Check::new(2, "agent container", Section::AgentNotStarting, Status::Fail, format!(
                "{} is {} with {} restart(s){last}{}",
                c.name,
                describe(&c.state),
                c.restarts,
                if tail.is_empty() { String::new() } else { format!("; last log lines: {tail}") }
            ))
            .node(name)
            .remedy(format!("read why it stops: `{}`; a TPM error names its remedy (runbook: TPM problems); a server error, see the Trust Server checks", logs_cmd(&c.name, c.restarts > 0)))
            .cause(
                format!("the agent container on {name} is not running ({}){}", describe(&c.state), if tail.is_empty() { String::new() } else { format!(": {}", last_lines(v.agent_log.unwrap_or_default(), 1)) }),
                logs_cmd(&c.name, c.restarts > 0),
            )
        }
    });
}

fn init_failure(ns: &str, node: &str, pod: &str, c: &ContainerFacts, v: &NodeView<'_>) -> Check {
    let cmd = format!("kubectl -n {ns} logs {pod} -c {}", c.name);
    let state = format!(
        "{} is {} ({} restart(s))",
        c.name,
        describe(&c.state),
        c.restarts
    );
    let (lines, verdict) = v.init_log.map(check_lines).unwrap_or_default();
    let Some(first) = lines.iter().find(|l| !l.pass) else {
        let tail = v.init_log.map(|l| last_lines(l, 3)).unwrap_or_default();
        let saw = if tail.is_empty() {
            format!("{state}; its log is empty or unreadable")
        } else {
            format!("{state}; last log lines: {tail}")
        };
        return Check::new(2, "init container", Section::AgentNotStarting, Status::Fail, saw)
            .node(node)
            .remedy(format!("`{cmd}` says what went wrong; `kubectl -n {ns} describe pod {pod}` shows image or mount problems"))
            .cause(format!("the TPM check ({}) did not complete on {node}", c.name), cmd);
    };
    let (what, section) = match first.name.as_str() {
        "device" => ("no TPM device on the node (missing or disabled TPM, or the device is not mounted)", Section::Tpm),
        "tpm answers" => ("the TPM does not answer", Section::Tpm),
        "dictionary-attack lockout" => ("the TPM is in dictionary-attack lockout", Section::Tpm),
        "endorsement hierarchy" => ("the TPM's endorsement hierarchy is unusable (wrong TPM_OWNER_SECRET, or the hierarchy is disabled)", Section::Tpm),
        "state directory" => ("the agent's state directory (/var/lib/nodetrust) is unusable", Section::AgentNotStarting),
        "event log" | "IMA log" => ("a configured measurement log is unreadable", Section::Tpm),
        _ => ("the TPM check failed", Section::Tpm),
    };
    let (detail, remedy) = match first.detail.split_once("Remedy:") {
        Some((d, r)) => (d.trim(), r.trim().to_string()),
        None => (
            first.detail.as_str(),
            format!("read `{cmd}`; docs/runbook.md explains each check"),
        ),
    };
    Check::new(
        2,
        "init container",
        section,
        Status::Fail,
        format!(
            "{state}; FAIL {}: {}{}",
            quote(&first.name),
            quote(detail),
            verdict
                .map(|v| format!(" (VERDICT: {v})"))
                .unwrap_or_default()
        ),
    )
    .node(node)
    .remedy(remedy)
    .cause(
        format!(
            "{what} on {node} (init container: FAIL {})",
            quote(&first.name)
        ),
        cmd,
    )
}

fn step_3(f: &Facts, out: &mut Vec<Check>) {
    let ns = f.namespace.as_str();
    let info = names::SERVER_INFO;
    // The ConfigMap.
    out.push(match &f.cluster.configmap {
        Lookup::Found(cm) => {
            let get = |k: &str| cm.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
            let missing: Vec<&str> = names::CONFIGMAP_KEYS.iter().copied().filter(|k| get(k).is_none()).collect();
            let port_bad = get("MTWILSON_SERVER_PORT").is_some_and(|p| p.parse::<u16>().is_err());
            if !missing.is_empty() || port_bad {
                let mut saw = Vec::new();
                if !missing.is_empty() {
                    saw.push(format!("missing or empty: {}", missing.join(", ")));
                }
                if port_bad {
                    saw.push(format!("MTWILSON_SERVER_PORT {:?} is not a port number", quote(get("MTWILSON_SERVER_PORT").unwrap_or_default())));
                }
                Check::new(3, "configmap", Section::CannotTalk, Status::Fail, format!("ConfigMap {ns}/{info}: {}", saw.join("; ")))
                    .remedy("set every key the runbook lists (deploy/cit-server-info.yaml) and restart the agents: `kubectl -n kubx-cit rollout restart ds/cit-trust-agent`")
                    .cause(format!("the ConfigMap {info} lacks settings the agents need ({})", missing.join(", ")), format!("kubectl -n {ns} get cm {info} -o yaml"))
            } else if get("server_url").is_none() {
                Check::new(3, "configmap", Section::CannotTalk, Status::Warn, format!("ConfigMap {ns}/{info} has every required key but no server_url (agents use MTWILSON_SERVER:MTWILSON_SERVER_PORT)"))
                    .remedy("add server_url: https://MTWILSON_SERVER:MTWILSON_SERVER_PORT, as the runbook's ConfigMap has")
            } else {
                Check::new(3, "configmap", Section::CannotTalk, Status::Pass, format!(
                    "ConfigMap {ns}/{info} has {}; server_url {}",
                    names::CONFIGMAP_KEYS.join(", "),
                    quote(get("server_url").unwrap_or_default())
                ))
            }
        }
        Lookup::Missing => Check::new(3, "configmap", Section::CannotTalk, Status::Fail, format!("no ConfigMap {ns}/{info}"))
            .remedy("create it from deploy/cit-server-info.yaml: `kubectl apply -k deploy/`")
            .cause(format!("the ConfigMap {info} does not exist: agents have no server to talk to"), format!("kubectl -n {ns} get cm")),
        Lookup::Error(e) => Check::new(3, "configmap", Section::CannotTalk, Status::Fail, e)
            .remedy("use a kubeconfig whose user may read ConfigMaps in the namespace")
            .cause(format!("cannot read the ConfigMap {info}"), format!("kubectl -n {ns} get cm {info} -o yaml")),
    });
    // The Secret (values never shown).
    out.push(match &f.cluster.secret {
        Lookup::Found(keys) => {
            let missing: Vec<&str> = names::SECRET_KEYS.iter().copied().filter(|k| keys.get(*k) != Some(&false)).collect();
            if !missing.is_empty() {
                Check::new(3, "secret", Section::CannotTalk, Status::Fail, format!("Secret {ns}/{info}: missing or empty: {}", missing.join(", ")))
                    .remedy("set them (stringData in deploy/cit-server-info.yaml) and restart the agents: `kubectl -n kubx-cit rollout restart ds/cit-trust-agent`")
                    .cause(format!("the Secret {info} lacks {}", missing.join(", ")), format!("kubectl -n {ns} describe secret {info}"))
            } else if !keys.contains_key(names::OWNER_SECRET) {
                Check::new(3, "secret", Section::CannotTalk, Status::Warn, format!("Secret {ns}/{info} has the passwords but no {} key (the agents then use no owner auth value)", names::OWNER_SECRET))
                    .remedy("add TPM_OWNER_SECRET (empty when the TPMs' hierarchies have no auth value)")
            } else {
                Check::new(3, "secret", Section::CannotTalk, Status::Pass, format!("Secret {ns}/{info} has {} (values not shown)", names::SECRET_KEYS.iter().chain([&names::OWNER_SECRET]).copied().collect::<Vec<_>>().join(", ")))
            }
        }
        Lookup::Missing => Check::new(3, "secret", Section::CannotTalk, Status::Fail, format!("no Secret {ns}/{info}"))
            .remedy("create it from deploy/cit-server-info.yaml: `kubectl apply -k deploy/`")
            .cause(format!("the Secret {info} does not exist: agents have no account"), format!("kubectl -n {ns} get secrets")),
        Lookup::Error(e) => Check::new(3, "secret", Section::CannotTalk, Status::Fail, e)
            .remedy("use a kubeconfig whose user may read Secrets in the namespace")
            .cause(format!("cannot read the Secret {info}"), format!("kubectl -n {ns} describe secret {info}")),
    });
    // The server, and the probe.
    let url = match &f.remote.url {
        Ok((u, from)) => format!("{} (from {from})", quote(u)),
        Err(e) => {
            out.push(
                Check::new(3, "server answers", Section::CannotTalk, Status::Fail, e)
                    .remedy("give --server https://HOST:PORT, or fix server_url in the ConfigMap")
                    .cause(
                        "no Trust Server URL is configured",
                        format!("kubectl -n {ns} get cm {info} -o yaml"),
                    ),
            );
            return;
        }
    };
    let server_cmd =
        format!("kubectl -n {ns} get deploy,pods -l app.kubernetes.io/name=cit-trust-server");
    let user = match &f.cluster.configmap {
        Lookup::Found(cm) => cm
            .get("MTWILSON_API_USERNAME")
            .map(|u| quote(u))
            .unwrap_or_default(),
        _ => String::new(),
    };
    match &f.remote.probe {
        Probe::NotRun(why) => {
            out.push(
                Check::new(
                    3,
                    "server answers",
                    Section::CannotTalk,
                    Status::Warn,
                    format!("not asked: {}", quote(why)),
                )
                .remedy("give --server, --pin or --ca"),
            );
        }
        Probe::Unreachable(why) => {
            out.push(
                Check::new(3, "server answers", Section::CannotTalk, Status::Fail, format!("the Trust Server at {url} does not answer: {}", quote(why)))
                    .remedy(format!("check the server pods and their log (`kubectl -n {ns} logs deploy/cit-trust-server`); from outside the cluster give --server with an address you can reach (e.g. after `kubectl -n {ns} port-forward svc/cit-trust-server 8443`)"))
                    .cause(format!("the Trust Server does not answer at {url}"), server_cmd),
            );
            out.push(Check::new(
                3,
                "agent account",
                Section::CannotTalk,
                Status::Warn,
                "not checked: the server does not answer",
            ));
        }
        Probe::Tls(why) => {
            out.push(
                Check::new(3, "server answers", Section::CannotTalk, Status::Fail, format!("the Trust Server at {url}: {}", quote(why)))
                    .remedy("give doctor the server's certificate SHA-256 (--pin, as logged at the server's start) or its CA (--ca); agents use TRUSTAGENT_SERVER_PIN from the ConfigMap")
                    .cause(format!("the Trust Server's certificate at {url} is not the one expected"), format!("kubectl -n {ns} logs deploy/cit-trust-server | grep 'TLS certificate'")),
            );
            out.push(Check::new(
                3,
                "agent account",
                Section::CannotTalk,
                Status::Warn,
                "not checked: no trusted TLS connection to the server",
            ));
        }
        Probe::Answered { status, reason } => {
            out.push(Check::new(
                3,
                "server answers",
                Section::CannotTalk,
                Status::Pass,
                format!("the Trust Server answers at {url}"),
            ));
            let probe = format!("GET /mtwilson/v2/tpm-endorsements as MTWILSON_API_USERNAME={user:?} with the Secret's MTWILSON_API_PASSWORD");
            let secret_ok = matches!(&f.cluster.secret, Lookup::Found(k) if k.get("MTWILSON_API_PASSWORD") == Some(&false));
            out.push(match status {
                200 => Check::new(3, "agent account", Section::CannotTalk, Status::Pass, format!("{probe}: HTTP 200 (the runbook's probe passes)")),
                _ if !secret_ok || user.is_empty() => Check::new(3, "agent account", Section::CannotTalk, Status::Warn, format!("{probe}: not checkable (the account or password is missing, see above); HTTP {status}")),
                401 => Check::new(3, "agent account", Section::CannotTalk, Status::Fail, format!("{probe}: HTTP 401 ({}): the server does not accept this account and password", quote(reason)))
                    .remedy(format!("make the Secret's MTWILSON_API_PASSWORD the agent account's password (on the server: `nodetrust user passwd {user}`, or set the Secret to the password the server was started with), then `kubectl -n {ns} rollout restart ds/{}`", names::DAEMONSET))
                    .cause(format!("the Trust Server refuses the agent account {user:?}: MTWILSON_API_PASSWORD in the Secret {info} is wrong (HTTP 401), so agents cannot register"), "nodetrust user list"),
                403 => Check::new(3, "agent account", Section::CannotTalk, Status::Fail, format!("{probe}: HTTP 403 ({}): the account exists but may not read endorsements", quote(reason)))
                    .remedy(format!("MTWILSON_API_USERNAME must name an account with the role agent: `nodetrust user add {user} --role agent`"))
                    .cause(format!("the agent account {user:?} has the wrong role"), "nodetrust user list"),
                _ => Check::new(3, "agent account", Section::CannotTalk, Status::Fail, format!("{probe}: HTTP {status} ({})", quote(reason)))
                    .remedy(format!("read the server's log: `kubectl -n {ns} logs deploy/cit-trust-server`"))
                    .cause(format!("the Trust Server fails the runbook's probe (HTTP {status})"), format!("kubectl -n {ns} logs deploy/cit-trust-server")),
            });
        }
    }
}

/// The verdict at `now`: the server's effective verdict, `unknown` once it expired since.
fn effective(h: &HostEntry, now_ms: i64) -> (Trust, Vec<String>) {
    if h.trust.verdict != Trust::Unknown {
        if let Some(d) = h.trust.expired_for(now_ms) {
            return (
                Trust::Unknown,
                vec![format!(
                    "the last verdict ({}) expired {}s ago",
                    h.trust.verdict,
                    d.as_secs()
                )],
            );
        }
    }
    (h.trust.verdict, h.trust.reasons.clone())
}

fn reasons_text(r: &[String]) -> String {
    let shown: Vec<String> = r.iter().take(5).map(|s| quote(s)).collect();
    let more = r.len().saturating_sub(5);
    if more > 0 {
        format!("{} (and {more} more)", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

fn node_step_4_5(f: &Facts, v: &NodeView<'_>, out: &mut Vec<Check>) {
    let ns = f.namespace.as_str();
    let n = v.node;
    let name = n.name.as_str();
    let pod = v.pod.map_or("cit-trust-agent-xxxxx", |p| p.name.as_str());
    let agent_logs = format!("kubectl -n {ns} logs {pod} -c {}", names::AGENT);
    let matched = match &f.remote.hosts {
        Err(e) => {
            out.push(Check::new(4, "host registered", Section::CannotTalk, Status::Warn, format!("not checked: the server's host list is not available: {}", quote(e)))
                .node(name)
                .remedy("doctor reads hosts with a reader account: set NODETRUST_ADMIN_USERNAME and NODETRUST_ADMIN_PASSWORD (or --user and --password-file)"));
            None
        }
        Ok(hosts) => match host_of(n, hosts) {
            Some((h, by)) => {
                let detail = f.remote.details.get(&h.name).and_then(|d| d.as_ref().ok());
                let since = detail
                    .and_then(|d| d.registered.as_deref())
                    .map(|r| format!(" since {}", quote(r)))
                    .unwrap_or_default();
                let (status, how) = match by {
                    MatchedBy::Uuid => (Status::Pass, format!("matched by systemUUID {}", quote(&n.system_uuid))),
                    MatchedBy::Name => (
                        if n.system_uuid.trim().is_empty() { Status::Pass } else { Status::Warn },
                        format!("matched by name only: the host's hardware UUID {} is not the node's systemUUID {}", quote(&h.hardware_uuid), quote(&n.system_uuid)),
                    ),
                };
                let mut c = Check::new(4, "host registered", Section::CannotTalk, status, format!(
                    "host {} registered{since}, {how}; its AK was activated (the server stores a host only after credential activation)",
                    quote(&h.name)
                ))
                .node(name);
                if status == Status::Warn {
                    c = c.remedy("the agent's hardware UUID (DMI product_uuid) and the node's systemUUID should be the same machine's; if the node was replaced, delete the old host (`nodetrust hosts delete NAME`) so the new one registers");
                }
                out.push(c);
                Some(h)
            }
            None => {
                let unmatched: Vec<String> = hosts
                    .iter()
                    .filter(|h| {
                        !f.cluster
                            .nodes
                            .iter()
                            .any(|x| host_of(x, std::slice::from_ref(*h)).is_some())
                    })
                    .take(5)
                    .map(|h| format!("{} ({})", quote(&h.name), quote(&h.hardware_uuid)))
                    .collect();
                let base = format!(
                    "no host registered for node {name} (systemUUID {}){}",
                    quote(&n.system_uuid),
                    if unmatched.is_empty() {
                        String::new()
                    } else {
                        format!("; hosts matched to no node: {}", unmatched.join(", "))
                    }
                );
                let (saw, cause, next, remedy) = if let Some(l) =
                    has(&v.signals, Signal::EkNotEndorsed)
                {
                    (
                        format!("{base}; the agent's log: {l}"),
                        format!("registration refused on {name}: the TPM's EK is not endorsed (ek_not_endorsed)"),
                        format!("nodetrust endorsement add --ek-public EK.pub --hardware-uuid {}", n.system_uuid.trim()),
                        "read the EK on the node (`tpm2_createek -c ek.ctx -G rsa -u ek.pub`) and accept it: `nodetrust endorsement add --ek-public ek.pub --hardware-uuid UUID`, or put the TPM maker's CA in the server's --ek-ca-dir; the agent registers at its next attempt".to_string(),
                    )
                } else if let Some(l) = has(&v.signals, Signal::AccountRefused) {
                    (
                        format!("{base}; the agent's log: {l}"),
                        format!("the server refuses {name}'s agent account (MTWILSON_API_PASSWORD)"),
                        "nodetrust user list".to_string(),
                        "make MTWILSON_API_USERNAME/PASSWORD in cit-server-info the server's agent account, then restart the agent pod".to_string(),
                    )
                } else if let Some(l) = has(&v.signals, Signal::IdentityConflict) {
                    (
                        format!("{base}; the agent's log: {l}"),
                        format!("the server has {name} (or its hardware UUID) with another TPM (identity_conflict)"),
                        format!("nodetrust hosts show {name}"),
                        "if the TPM was replaced or the node reinstalled, delete the old host (`nodetrust hosts delete NAME`) and the agent registers again; otherwise two machines claim one identity".to_string(),
                    )
                } else if let Some(l) = has(&v.signals, Signal::ServerTls) {
                    (
                        format!("{base}; the agent's log: {l}"),
                        format!("the agent on {name} does not trust the Trust Server's certificate (TRUSTAGENT_SERVER_PIN)"),
                        format!("kubectl -n {ns} logs deploy/cit-trust-server | grep 'TLS certificate'"),
                        "set TRUSTAGENT_SERVER_PIN in the ConfigMap to the server certificate's SHA-256 (logged at the server's start), or put its CA in the ConfigMap cit-server-ca; restart the agents".to_string(),
                    )
                } else if let Some(l) = has(&v.signals, Signal::ServerUnreachable) {
                    (
                        format!("{base}; the agent's log: {l}"),
                        format!("the agent on {name} cannot reach the Trust Server"),
                        agent_logs.clone(),
                        "check server_url / MTWILSON_SERVER in the ConfigMap against the server's Service, and network policies between the node and the server".to_string(),
                    )
                } else {
                    (
                        base,
                        format!("node {name} has no registered host"),
                        agent_logs.clone(),
                        format!("the agent registers with host name = node name and hardware UUID = systemUUID; read its log: `{agent_logs}`"),
                    )
                };
                out.push(
                    Check::new(4, "host registered", Section::CannotTalk, Status::Fail, saw)
                        .node(name)
                        .remedy(remedy)
                        .cause(cause, next),
                );
                None
            }
        },
    };

    let info = matched.and_then(|h| f.remote.agents.get(&h.name));
    let host_info = info.and_then(|r| r.as_ref().ok());
    let detail = matched.and_then(|h| f.remote.details.get(&h.name));
    // The agent's API.
    if let Some(h) = matched {
        out.push(match (info, detail) {
            (Some(Ok(i)), _) => {
                let mut c = Check::new(4, "agent answers", Section::CannotTalk, Status::Pass, format!(
                    "agent {} at {}: {} {}, kernel {}",
                    quote(&i.agent_version),
                    quote(&h.connection_url),
                    quote(&i.os_name),
                    quote(&i.os_version),
                    quote(&i.kernel_version)
                ))
                .node(name);
                if !i.hardware_uuid.trim().eq_ignore_ascii_case(n.system_uuid.trim()) && !n.system_uuid.trim().is_empty() {
                    c.status = Status::Warn;
                    c.saw = format!("{}; but its hardware UUID {} is not the node's systemUUID {}", c.saw, quote(&i.hardware_uuid), quote(&n.system_uuid));
                }
                c
            }
            (Some(Err(e)), _) => Check::new(4, "agent answers", Section::CannotTalk, Status::Warn, format!("doctor could not ask the agent at {}: {} (the server's view of it is below)", quote(&h.connection_url), quote(e)))
                .node(name)
                .remedy("agents listen on the node's address (hostNetwork): run doctor where it can reach them for the agent-side facts"),
            (None, Some(Err(e))) => Check::new(4, "agent answers", Section::CannotTalk, Status::Warn, format!("not asked: the host detail is not available: {}", quote(e))).node(name),
            (None, _) => Check::new(4, "agent answers", Section::CannotTalk, Status::Warn, "not asked: the server holds no certificate SHA-256 for this agent (tls_cert_sha256), so it cannot be pinned").node(name),
        });
    }

    // The TPM.
    let init_tpm = v.init_line("tpm answers");
    out.push(match (host_info, init_tpm) {
        (Some(i), _) if i.software_tpm => Check::new(4, "tpm", Section::Tpm, Status::Warn, format!("SOFTWARE TPM ({} firmware {}): its evidence proves nothing about this machine", quote(&i.tpm_manufacturer), quote(&i.tpm_firmware_version)))
            .node(name)
            .remedy("never in production: give the node a hardware TPM (--tcti device:/dev/tpmrm0)"),
        (Some(i), _) => Check::new(4, "tpm", Section::Tpm, Status::Pass, format!(
            "TPM {} by {} firmware {}, PCR banks {} (agent's /v2/host)",
            quote(&i.tpm_version),
            quote(&i.tpm_manufacturer),
            quote(&i.tpm_firmware_version),
            quote(&i.pcr_banks.join(","))
        ))
        .node(name),
        (None, Some(l)) if l.pass => Check::new(4, "tpm", Section::Tpm, Status::Pass, format!("{} (init-tcsd at pod start)", quote(&l.detail))).node(name),
        (None, Some(l)) => Check::new(4, "tpm", Section::Tpm, Status::Fail, format!("init-tcsd: FAIL tpm answers: {}", quote(&l.detail)))
            .node(name)
            .remedy("see the init container check above")
            .cause(format!("the TPM of {name} does not answer"), format!("kubectl -n {ns} logs {pod} -c {}", names::INIT)),
        (None, None) => Check::new(4, "tpm", Section::Tpm, Status::Warn, "not available: neither the agent's /v2/host nor an init-tcsd log says whether a TPM answers").node(name),
    });
    // Lockout.
    out.push(if let Some(l) = has(&v.signals, Signal::Lockout) {
        Check::new(4, "tpm lockout", Section::Tpm, Status::Fail, format!("the agent's log: {l}"))
            .node(name)
            .remedy("wait for the lockout recovery time, or `tpm2_dictionarylockout --clear-lockout` with the lockout auth; then find what sends wrong passwords (usually a wrong TPM_OWNER_SECRET)")
            .cause(format!("the TPM of {name} is in dictionary-attack lockout (agent log)"), agent_logs.clone())
    } else {
        match v.init_line("dictionary-attack lockout") {
            Some(l) if l.pass => Check::new(4, "tpm lockout", Section::Tpm, Status::Pass, format!("{} (init-tcsd at pod start; the agent's log reports none since)", quote(&l.detail))).node(name),
            Some(l) => Check::new(4, "tpm lockout", Section::Tpm, Status::Fail, format!("init-tcsd: {}", quote(&l.detail)))
                .node(name)
                .remedy("see the init container check above")
                .cause(format!("the TPM of {name} is in dictionary-attack lockout"), format!("kubectl -n {ns} logs {pod} -c {}", names::INIT)),
            None => Check::new(4, "tpm lockout", Section::Tpm, Status::Warn, "not available: the agent's API does not report lockout, and no init-tcsd log line says it").node(name),
        }
    });
    // Owner secret.
    out.push(match v.init_line("endorsement hierarchy") {
        Some(l) if l.pass => Check::new(4, "owner secret", Section::Tpm, Status::Pass, format!("endorsement hierarchy: {} (init-tcsd)", quote(&l.detail))).node(name),
        Some(l) => Check::new(4, "owner secret", Section::Tpm, Status::Fail, format!("init-tcsd: FAIL endorsement hierarchy: {}", quote(&l.detail)))
            .node(name)
            .remedy("set TPM_OWNER_SECRET in the Secret to the TPM's endorsement/owner auth (empty when there is none); a wrong value counts towards lockout")
            .cause(format!("the TPM of {name} does not accept the owner secret (or its endorsement hierarchy is disabled)"), format!("kubectl -n {ns} logs {pod} -c {}", names::INIT)),
        None => Check::new(4, "owner secret", Section::Tpm, Status::Warn, "not available: no init-tcsd `endorsement hierarchy` line").node(name),
    });
    // Measured launch.
    out.push(match host_info {
        Some(i) if i.measured_launch => Check::new(4, "measured launch", Section::Tpm, Status::Pass, "executed (PCR 17 is not all ones)").node(name),
        Some(_) => Check::new(4, "measured launch", Section::Tpm, Status::Warn, "not executed: PCR 17 is all ones (no tboot/TXT launch)")
            .node(name)
            .remedy("if the flavors require a measured launch, enable TXT in the firmware and boot through tboot; see the runbook's measured-launch section"),
        None => Check::new(4, "measured launch", Section::Tpm, Status::Warn, "not available: the agent's /v2/host was not read").node(name),
    });
    // Event log.
    out.push(match v.init_line("event log") {
        Some(l) if !l.pass => Check::new(
            4,
            "event log",
            Section::Tpm,
            Status::Fail,
            format!("init-tcsd: FAIL event log: {}", quote(&l.detail)),
        )
        .node(name)
        .remedy(
            "mount securityfs (/sys/kernel/security) read-only into the agent and run it as root",
        )
        .cause(
            format!("the measured-boot event log of {name} is unreadable"),
            format!("kubectl -n {ns} logs {pod} -c {}", names::INIT),
        ),
        Some(l) if l.detail.contains("absent") => Check::new(
            4,
            "event log",
            Section::Tpm,
            Status::Warn,
            format!(
                "{} (init-tcsd): verdicts then compare PCRs only and cannot name what changed",
                quote(&l.detail)
            ),
        )
        .node(name)
        .remedy("mount /sys/kernel/security into the agent (deploy/agent-daemonset.yaml does)"),
        Some(l) => Check::new(
            4,
            "event log",
            Section::Tpm,
            Status::Pass,
            format!("{} (init-tcsd)", quote(&l.detail)),
        )
        .node(name),
        None => Check::new(
            4,
            "event log",
            Section::Tpm,
            Status::Warn,
            "not available: no init-tcsd `event log` line",
        )
        .node(name),
    });

    let Some(h) = matched else {
        // Step 5 without a host: the labeller cannot match the node.
        let current = label(n, names::TRUST_LABEL);
        let c = match (&f.remote.hosts, current) {
            (Err(_), _) => Check::new(5, "trust label", Section::NotLabelled, Status::Warn, format!(
                "{}={}; not compared: no verdicts from the server (the labeller's last verdict annotation: {})",
                names::TRUST_LABEL,
                current.map_or_else(|| "(absent)".to_string(), quote),
                n.annotations.get(names::VERDICT_ANNOTATION).map_or_else(|| "(none)".to_string(), |a| quote(a))
            )),
            (Ok(_), Some(l)) => Check::new(5, "trust label", Section::NotLabelled, Status::Warn, format!(
                "{}={} although no host matches the node (systemUUID {}, name {name}): the labeller leaves it as it is",
                names::TRUST_LABEL,
                quote(l),
                quote(&n.system_uuid)
            ))
            .remedy("the label is left from an earlier host; it changes once the node's host registers again"),
            (Ok(_), None) => Check::new(5, "trust label", Section::NotLabelled, Status::Warn, format!("no {} label: no host matches the node (systemUUID {}, name {name})", names::TRUST_LABEL, quote(&n.system_uuid))),
        };
        out.push(c.node(name));
        return;
    };

    // Attestation and verdict.
    let status_detail = detail
        .and_then(|d| d.as_ref().ok())
        .and_then(|d| d.status_detail.clone());
    let attested = h.trust.attested_at.as_deref().map(quote);
    out.push(match h.status {
        nodetrust_proto::trust::HostStatus::Connected => Check::new(4, "attestation", Section::CannotTalk, Status::Pass, format!(
            "the server reaches the agent (connected); last attestation {}",
            attested.clone().unwrap_or_else(|| "none yet".into())
        ))
        .node(name),
        nodetrust_proto::trust::HostStatus::Pending => Check::new(4, "attestation", Section::CannotTalk, Status::Warn, "registered, not attested yet (pending)")
            .node(name)
            .remedy(format!("attest now: `nodetrust attest {}`", h.name)),
        nodetrust_proto::trust::HostStatus::Unreachable => Check::new(4, "attestation", Section::CannotTalk, Status::Fail, format!(
            "the server cannot reach the agent at {} (unreachable{}); last attestation {}",
            quote(&h.connection_url),
            status_detail.as_deref().map(|d| format!(": {}", quote(d))).unwrap_or_default(),
            attested.clone().unwrap_or_else(|| "none".into())
        ))
        .node(name)
        .remedy("the agent listens on the node's address, port 1443 (TRUSTAGENT_ADVERTISE_URL): check the agent pod, the node's firewall and network policies between the server and the node")
        .cause(format!("the Trust Server cannot reach the agent on {name} at {}", quote(&h.connection_url)), format!("nodetrust hosts show {}", h.name)),
    });
    let (verdict, reasons) = effective(h, f.now_ms);
    let times = format!(
        "attested {}, expires {}",
        attested.unwrap_or_else(|| "never".into()),
        h.trust
            .expires_at
            .as_deref()
            .map_or_else(|| "-".to_string(), quote)
    );
    out.push(match verdict {
        Trust::Trusted => Check::new(4, "verdict", Section::NotLabelled, Status::Pass, format!("trusted ({times}): {}", reasons_text(&reasons))).node(name),
        Trust::Untrusted => Check::new(4, "verdict", Section::NotLabelled, Status::Fail, format!("untrusted ({times}): {}", reasons_text(&reasons)))
            .node(name)
            .remedy(format!("if the change is intended (a new kernel, boot loader or firmware), import flavors from a gold node running it (`nodetrust flavor import --from-host GOLD`) and `nodetrust attest {}`; otherwise treat the node as compromised and reload it", h.name))
            .cause(
                format!("{name} is untrusted: {}", reasons.first().map_or_else(|| "no reason given".to_string(), |r| quote(r))),
                format!("nodetrust report show {}", h.name),
            ),
        Trust::Unknown => Check::new(4, "verdict", Section::NotLabelled, Status::Fail, format!("unknown ({times}): {}", reasons_text(&reasons)))
            .node(name)
            .remedy(format!("an unknown verdict keeps the label as it was; make the agent reachable, then `nodetrust attest {}`", h.name))
            .cause(
                format!("{name} has no current verdict (unknown): {}", reasons.first().map_or_else(|| "no reason given".to_string(), |r| quote(r))),
                format!("nodetrust attest {}", h.name),
            ),
    });

    // Step 5: the label.
    out.push(label_check(f, v, h, verdict).node(name));
}

fn lease_state(f: &Facts) -> Result<String, String> {
    match &f.cluster.lease {
        Lookup::Found(l) => {
            let holder = l.holder.as_deref().map_or_else(|| "nobody".to_string(), quote);
            match l.renewed_ms {
                Some(r) if f.now_ms < r.saturating_add(l.duration_s.saturating_mul(1000)) => {
                    Ok(format!("held by {holder}, renewed {}", rfc3339(r)))
                }
                Some(r) => Err(format!(
                    "the Lease {}/{} held by {holder} expired at {} (not renewed since {}): no labeller leader",
                    f.namespace,
                    names::LEASE,
                    rfc3339(r.saturating_add(l.duration_s.saturating_mul(1000))),
                    rfc3339(r)
                )),
                None => Err(format!("the Lease {}/{} has never been renewed: no labeller leader", f.namespace, names::LEASE)),
            }
        }
        Lookup::Missing => Err(format!(
            "no Lease {}/{}: no labeller leader (the server runs without --labeller, or is down; the standalone `nodetrust label` takes no Lease)",
            f.namespace,
            names::LEASE
        )),
        Lookup::Error(e) => Err(quote(e)),
    }
}

fn lease_check(f: &Facts) -> Check {
    match lease_state(f) {
        Ok(s) => Check::new(5, "labeller leader", Section::NotLabelled, Status::Pass, s),
        Err(e) => Check::new(5, "labeller leader", Section::NotLabelled, Status::Warn, e)
            .remedy(format!("the embedded labeller runs in the Trust Server with --labeller: `kubectl -n {} get pods -l app.kubernetes.io/name=cit-trust-server`", f.namespace)),
    }
}

fn label_check(f: &Facts, v: &NodeView<'_>, h: &HostEntry, verdict: Trust) -> Check {
    let ns = f.namespace.as_str();
    let n = v.node;
    let name = n.name.as_str();
    let key = names::TRUST_LABEL;
    let current = label(n, key);
    let shown = current.map_or_else(|| "(absent)".to_string(), |l| format!("{:?}", quote(l)));
    let want = match verdict {
        Trust::Trusted => Some("true"),
        Trust::Untrusted => Some("false"),
        Trust::Unknown => None,
    };
    let Some(want) = want else {
        return Check::new(5, "trust label", Section::NotLabelled, Status::Warn, format!(
            "{key}={shown}: the verdict is unknown, and an unknown verdict leaves the label as it was{}",
            if current == Some("true") { " (still \"true\" without a current verdict)" } else { "" }
        ))
        .remedy("get a current verdict (see the verdict check); `--stale-after` on the labeller turns a long-unknown node \"false\"");
    };
    if current == Some(want) {
        return Check::new(
            5,
            "trust label",
            Section::NotLabelled,
            Status::Pass,
            format!("{key}={shown} agrees with the verdict {verdict}"),
        );
    }
    let annotation = n
        .annotations
        .get(names::VERDICT_ANNOTATION)
        .map_or_else(|| "(none)".to_string(), |a| quote(a));
    let saw = format!("{key}={shown} but the verdict of host {} is {verdict} (label should be {want:?}); the labeller's last verdict annotation: {annotation}", quote(&h.name));
    // Why.
    let api_errors = v.node.name.as_str();
    let errors = f
        .cluster
        .labeller_log
        .as_ref()
        .and_then(|r| r.as_ref().ok())
        .and_then(|log| {
            log.lines()
                .rfind(|l| l.contains("node not labelled") && l.contains(api_errors))
                .map(quote)
        });
    let lease_cmd = format!("kubectl -n {ns} get lease {} -o yaml", names::LEASE);
    let (why, cause, next) = if label(n, names::TPM_LABEL) != Some("true") {
        (
            format!(
                "the labeller only looks after nodes with {}=true",
                names::TPM_LABEL
            ),
            format!(
                "{name}'s label is not maintained: it lacks {}=true",
                names::TPM_LABEL
            ),
            format!(
                "kubectl label node {name} {}=true --overwrite",
                names::TPM_LABEL
            ),
        )
    } else {
        match lease_state(f) {
            Err(e) => (e.clone(), format!("{key} on {name} disagrees with the verdict ({verdict}): {e}"), lease_cmd),
            Ok(held) => match errors {
                Some(line) => (
                    format!("the labeller ({held}) fails to patch the node: {line}"),
                    format!("{key} on {name} disagrees with the verdict ({verdict}): the labeller's Kubernetes API calls fail"),
                    format!("kubectl -n {ns} logs {} | grep {name}", f.cluster.lease.clone().found().and_then(|l| l.holder).unwrap_or_else(|| "deploy/cit-trust-server".into())),
                ),
                None => (
                    format!("the labeller ({held}) has not applied it yet; its log shows no API error for this node"),
                    format!("{key} on {name} disagrees with the verdict ({verdict}) and the labeller has not corrected it"),
                    format!("kubectl -n {ns} logs deploy/cit-trust-server | grep {name}"),
                ),
            },
        }
    };
    Check::new(5, "trust label", Section::NotLabelled, Status::Fail, format!("{saw}; why: {why}"))
        .remedy("the labeller sets the label from the verdict within a resync (10 s); make sure one Trust Server runs with --labeller and its service account may patch nodes (deploy/server.yaml); never set the label by hand")
        .cause(cause, next)
}

impl<T> Lookup<T> {
    /// The object, when found.
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn facts(lease: Lookup<super::super::facts::LeaseFacts>, labeller_log: Option<&str>) -> Facts {
        use super::super::facts::{Probe, Remote};
        let node = NodeFacts {
            name: "n1".into(),
            system_uuid: "u1".into(),
            labels: [
                (names::TPM_LABEL.to_string(), "true".to_string()),
                (names::TRUST_LABEL.to_string(), "false".to_string()),
            ]
            .into(),
            ..NodeFacts::default()
        };
        let host = HostEntry {
            name: "n1".into(),
            hardware_uuid: "U1".into(),
            connection_url: "https://n1:1443".into(),
            status: nodetrust_proto::trust::HostStatus::Connected,
            trust: nodetrust_proto::trust::TrustView {
                verdict: Trust::Trusted,
                reasons: vec![],
                attested_at: None,
                expires_at: None,
            },
        };
        Facts {
            namespace: "kubx-cit".into(),
            now_ms: 10_000_000,
            only_node: None,
            cluster: Cluster {
                namespace: Lookup::Found(()),
                daemonset: Lookup::Missing,
                nodes: vec![node],
                pods: Ok(vec![]),
                configmap: Lookup::Missing,
                secret: Lookup::Missing,
                lease,
                labeller_log: labeller_log.map(|l| Ok(l.to_string())),
            },
            remote: Remote {
                url: Err("none".into()),
                probe: Probe::NotRun("none".into()),
                hosts: Ok(vec![host]),
                details: BTreeMap::new(),
                agents: BTreeMap::new(),
            },
        }
    }

    fn label_saw(f: &Facts) -> Check {
        evaluate(f)
            .into_iter()
            .find(|c| c.name == "trust label")
            .unwrap()
    }

    #[test]
    fn a_label_disagreeing_names_an_expired_lease_or_the_labellers_api_errors() {
        use super::super::facts::LeaseFacts;
        let expired = LeaseFacts {
            holder: Some("server-0".into()),
            renewed_ms: Some(1_000),
            duration_s: 15,
        };
        let c = label_saw(&facts(Lookup::Found(expired), None));
        assert_eq!(c.status, Status::Fail);
        assert!(c.cause.unwrap().contains("expired"), "{}", c.saw);
        let fresh = LeaseFacts {
            holder: Some("server-0".into()),
            renewed_ms: Some(9_999_000),
            duration_s: 15,
        };
        let log = "WARN node not labelled (API error); retried at the next resync node=n1 error=ApiError: forbidden\n";
        let c = label_saw(&facts(Lookup::Found(fresh.clone()), Some(log)));
        assert!(
            c.cause.as_deref().unwrap().contains("API calls fail"),
            "{c:?}"
        );
        assert!(c.saw.contains("forbidden"));
        let c = label_saw(&facts(Lookup::Found(fresh), None));
        assert!(
            c.cause.as_deref().unwrap().contains("has not corrected it"),
            "{c:?}"
        );
    }

    #[test]
    fn init_log_lines_are_parsed() {
        let log = "PASS device: /dev/tpmrm0 is present\nFAIL dictionary-attack lockout: the TPM is in lockout. Remedy: wait\nnoise\nVERDICT: not ready: 1 of 6 checks failed\n";
        let (lines, verdict) = check_lines(log);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].pass);
        assert_eq!(lines[1].name, "dictionary-attack lockout");
        assert!(verdict.unwrap().starts_with("not ready"));
    }

    #[test]
    fn agent_log_signals() {
        let s = signals("INFO ok\nERROR registering: the server does not accept this TPM's EK: registration refused; retrying\nPASS dictionary-attack lockout: not in lockout\n");
        assert!(has(&s, Signal::EkNotEndorsed).is_some());
        assert!(has(&s, Signal::Lockout).is_none());
    }

    #[test]
    fn hosts_match_by_uuid_then_name() {
        let host = |name: &str, uuid: &str| HostEntry {
            name: name.into(),
            hardware_uuid: uuid.into(),
            connection_url: String::new(),
            status: nodetrust_proto::trust::HostStatus::Connected,
            trust: nodetrust_proto::trust::TrustView {
                verdict: Trust::Trusted,
                reasons: vec![],
                attested_at: None,
                expires_at: None,
            },
        };
        let hosts = vec![host("other-name", "ABC"), host("n1", "zzz")];
        let node = NodeFacts {
            name: "n1".into(),
            system_uuid: "abc".into(),
            ..NodeFacts::default()
        };
        assert_eq!(
            host_of(&node, &hosts).map(|(h, by)| (h.name.as_str(), by)),
            Some(("other-name", MatchedBy::Uuid))
        );
        let node = NodeFacts {
            name: "n1".into(),
            system_uuid: "nope".into(),
            ..NodeFacts::default()
        };
        assert_eq!(
            host_of(&node, &hosts).map(|(h, by)| (h.name.as_str(), by)),
            Some(("n1", MatchedBy::Name))
        );
    }
}
