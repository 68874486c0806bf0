//! What doctor saw, as plain values: the Kubernetes objects it read, the Trust Server's and the
//! agents' answers. [`super::gather`] fills them in; [`super::checks`] judges them without any
//! I/O, so every rule can be tested on values.

use std::collections::BTreeMap;

use nodetrust_proto::agent::HostInfo;
use nodetrust_proto::trust::{HostStatus, TrustView};
use serde::Deserialize;

/// An object looked up by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// It exists.
    Found(T),
    /// The API answered 404.
    Missing,
    /// The API could not be asked or answered an error (the text says which).
    Error(String),
}

/// The DaemonSet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonSetFacts {
    /// `status.desiredNumberScheduled`.
    pub desired: i32,
    /// `status.currentNumberScheduled`.
    pub current: i32,
    /// `status.numberReady`.
    pub ready: i32,
    /// `spec.template.spec.nodeSelector`, `k=v` joined by commas.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.selector.matchLabels`, as a label selector.
    pub pod_selector: String,
    /// Names of the template's init containers.
    pub init_containers: Vec<String>,
    /// Names of the template's containers.
    pub containers: Vec<String>,
}

/// A node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// `status.nodeInfo.systemUUID`.
    pub system_uuid: String,
}

/// A container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Running.
    Running,
    /// Waiting, with its reason (`CrashLoopBackOff`, `PodInitializing`, ...) and message.
    Waiting {
        /// Reason.
        reason: String,
        /// Message.
        message: String,
    },
    /// Terminated.
    Terminated {
        /// Reason (`Completed`, `Error`, ...).
        reason: String,
        /// Exit code.
        exit_code: i32,
        /// Message.
        message: String,
    },
    /// No state reported.
    Unknown,
}

/// A container's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFacts {
    /// Name.
    pub name: String,
    /// Current state.
    pub state: State,
    /// Ready.
    pub ready: bool,
    /// Restarts.
    pub restarts: i32,
    /// The previous run's end, when there was one.
    pub last: Option<State>,
}

/// A pod of the DaemonSet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// Name.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `status.phase`.
    pub phase: String,
    /// `status.initContainerStatuses`.
    pub init: Vec<ContainerFacts>,
    /// `status.containerStatuses`.
    pub containers: Vec<ContainerFacts>,
    /// The last lines of each container's log (or why it could not be read), by container.
    pub logs: BTreeMap<String, Result<String, String>>,
}

/// The Lease of the labeller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFacts {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// Unix ms of `spec.renewTime` (else `acquireTime`).
    pub renewed_ms: Option<i64>,
    /// `spec.leaseDurationSeconds` (15 when absent, as the labeller reads it).
    pub duration_s: i64,
}

/// The Kubernetes side.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The namespace (`kubx-cit`).
    pub namespace: Lookup<()>,
    /// The DaemonSet `cit-trust-agent`.
    pub daemonset: Lookup<DaemonSetFacts>,
    /// Every node.
    pub nodes: Vec<NodeFacts>,
    /// The DaemonSet's pods (all pods of the namespace with its selector).
    pub pods: Result<Vec<PodFacts>, String>,
    /// ConfigMap `cit-server-info`.
    pub configmap: Lookup<BTreeMap<String, String>>,
    /// Secret `cit-server-info`: which keys it has and whether each value is empty. The values
    /// themselves stay in [`super::gather::SecretValues`], never here.
    pub secret: Lookup<BTreeMap<String, bool>>,
    /// Lease `nodetrust-labeller`.
    pub lease: Lookup<LeaseFacts>,
    /// The last lines of the log of the Lease holder's pod, when it is a pod of the namespace.
    pub labeller_log: Option<Result<String, String>>,
}

/// A host in the server's list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostEntry {
    /// Name.
    pub name: String,
    /// Hardware UUID.
    pub hardware_uuid: String,
    /// The agent's URL.
    #[serde(default)]
    pub connection_url: String,
    /// Reachability.
    pub status: HostStatus,
    /// Effective trust when the server answered.
    pub trust: TrustView,
}

/// `GET /mtwilson/v2/hosts/NAME`'s extra fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostDetail {
    /// The last agent error.
    #[serde(default)]
    pub status_detail: Option<String>,
    /// SHA-256 of the agent's TLS certificate.
    #[serde(default)]
    pub tls_cert_sha256: Option<String>,
    /// Software TPM.
    #[serde(default)]
    pub software_tpm: Option<bool>,
    /// When the host registered (RFC 3339).
    #[serde(default)]
    pub registered: Option<String>,
}

/// The probe of the runbook: `GET /mtwilson/v2/tpm-endorsements` with the agent account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Not made (why).
    NotRun(String),
    /// No connection (why).
    Unreachable(String),
    /// TLS failed (why, with the remedy).
    Tls(String),
    /// The server answered.
    Answered {
        /// HTTP status.
        status: u16,
        /// The `reason` of its error body, or `http_NNN`.
        reason: String,
    },
}

/// The server and agents side.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The server's URL and where it came from, or why there is none.
    pub url: Result<(String, &'static str), String>,
    /// The probe.
    pub probe: Probe,
    /// The host list (reader account), or why it is not available.
    pub hosts: Result<Vec<HostEntry>, String>,
    /// Host details, by host name.
    pub details: BTreeMap<String, Result<HostDetail, String>>,
    /// `GET /v2/host` of each matched host's agent, by host name.
    pub agents: BTreeMap<String, Result<HostInfo, String>>,
}

/// Everything.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The namespace looked at.
    pub namespace: String,
    /// Unix ms, now.
    pub now_ms: i64,
    /// `--node`.
    pub only_node: Option<String>,
    /// Kubernetes.
    pub cluster: Cluster,
    /// Server and agents.
    pub remote: Remote,
}
