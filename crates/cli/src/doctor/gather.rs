//! Reading what doctor judges: the Kubernetes objects (kube-rs, typed by k8s-openapi), the
//! Trust Server (the runbook's probe with the agent account from the Secret, and the host list
//! with the operator's reader account through [`crate::client::Client`]) and each agent's
//! `/v2/host` (pinned with the certificate SHA-256 the server holds for it).
//!
//! Bounds: logs are read with `tailLines` and `limitBytes`; HTTP bodies are cut at
//! [`MAX_BODY`]; every network call has a timeout. The Secret's values stay in
//! [`SecretValues`], whose `Debug` shows only key names, and are only ever sent as basic auth.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStatus, Namespace, Node, Pod, Secret,
};
use kube::api::{ListParams, LogParams};
use kube::Api;
use nodetrust_labeller::api::status_code;
use nodetrust_proto::agent::HostInfo;
use nodetrust_tls::{
    certificate_rejection, provider, BaseUrl, CertCheck, ServerVerifier, TrustFlags,
};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::facts::{
    Cluster, ContainerFacts, DaemonSetFacts, HostDetail, HostEntry, LeaseFacts, Lookup, NodeFacts,
    PodFacts, Probe, State,
};
use super::names;
use crate::client::{parse_pin, Client, ServerArgs};
use crate::CliError;

/// Largest HTTP body read from the server or an agent.
pub const MAX_BODY: usize = 4 << 20;
/// Log lines read per container.
const LOG_LINES: i64 = 60;
/// Log bytes read per container.
const LOG_BYTES: i64 = 64 * 1024;
/// Most pods whose logs are read.
const MAX_POD_LOGS: usize = 200;
/// Most host details and agents asked.
const MAX_HOSTS: usize = 200;

/// The Secret's values (decoded). `Debug` shows the key names only.
#[derive(Default, Clone)]
pub struct SecretValues(BTreeMap<String, String>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretValues {
    /// A value, when present and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn api_error(what: &str, e: &kube::Error) -> String {
    let text = e.to_string();
    let cut: String = text.chars().take(300).collect();
    match status_code(e) {
        Some(403) => {
            format!("{what}: forbidden (HTTP 403): the kubeconfig's user may not read it ({cut})")
        }
        Some(code) => format!("{what}: the Kubernetes API answered HTTP {code}: {cut}"),
        None => format!("{what}: {cut}"),
    }
}

async fn lookup<K>(api: &Api<K>, name: &str, what: &str) -> Lookup<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(o)) => Lookup::Found(o),
        Ok(None) => Lookup::Missing,
        Err(e) => Lookup::Error(api_error(what, &e)),
    }
}

fn map<T, U>(l: Lookup<T>, f: impl FnOnce(T) -> U) -> Lookup<U> {
    match l {
        Lookup::Found(t) => Lookup::Found(f(t)),
        Lookup::Missing => Lookup::Missing,
        Lookup::Error(e) => Lookup::Error(e),
    }
}

fn node_facts(n: Node) -> NodeFacts {
    NodeFacts {
        name: n.metadata.name.unwrap_or_default(),
        labels: n.metadata.labels.unwrap_or_default(),
        annotations: n.metadata.annotations.unwrap_or_default(),
        system_uuid: n
            .status
            .and_then(|s| s.node_info)
            .map(|i| i.system_uuid)
            .unwrap_or_default(),
    }
}

fn ds_facts(ds: DaemonSet) -> DaemonSetFacts {
    let status = ds.status.unwrap_or_default();
    let spec = ds.spec.unwrap_or_default();
    let pod_selector = spec
        .selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pod_spec = spec.template.spec.unwrap_or_default();
    DaemonSetFacts {
        desired: status.desired_number_scheduled,
        current: status.current_number_scheduled,
        ready: status.number_ready,
        node_selector: pod_spec.node_selector.unwrap_or_default(),
        pod_selector,
        init_containers: pod_spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect(),
        containers: pod_spec.containers.into_iter().map(|c| c.name).collect(),
    }
}

fn state(s: Option<ContainerState>) -> State {
    let Some(s) = s else { return State::Unknown };
    if let Some(t) = s.terminated {
        return State::Terminated {
            reason: t.reason.unwrap_or_default(),
            exit_code: t.exit_code,
            message: t.message.unwrap_or_default(),
        };
    }
    if let Some(w) = s.waiting {
        return State::Waiting {
            reason: w.reason.unwrap_or_default(),
            message: w.message.unwrap_or_default(),
        };
    }
    if s.running.is_some() {
        return State::Running;
    }
    State::Unknown
}

fn container(c: ContainerStatus) -> ContainerFacts {
    let last = match state(c.last_state) {
        State::Unknown => None,
        s => Some(s),
    };
    ContainerFacts {
        name: c.name,
        state: state(c.state),
        ready: c.ready,
        restarts: c.restart_count,
        last,
    }
}

fn pod_facts(p: Pod) -> PodFacts {
    let status = p.status.unwrap_or_default();
    PodFacts {
        name: p.metadata.name.unwrap_or_default(),
        node: p.spec.and_then(|s| s.node_name).unwrap_or_default(),
        phase: status.phase.unwrap_or_default(),
        init: status
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(container)
            .collect(),
        containers: status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .map(container)
            .collect(),
        logs: BTreeMap::new(),
    }
}

fn lease_facts(l: Lease) -> LeaseFacts {
    let spec = l.spec.unwrap_or_default();
    LeaseFacts {
        holder: spec.holder_identity,
        renewed_ms: spec
            .renew_time
            .or(spec.acquire_time)
            .map(|t| t.0.as_millisecond()),
        duration_s: i64::from(spec.lease_duration_seconds.unwrap_or(15)),
    }
}

async fn log(
    api: &Api<Pod>,
    pod: &str,
    container: Option<&str>,
    previous: bool,
    lines: i64,
) -> Result<String, String> {
    let lp = LogParams {
        container: container.map(str::to_string),
        tail_lines: Some(lines),
        limit_bytes: Some(LOG_BYTES),
        previous,
        ..LogParams::default()
    };
    match api.logs(pod, &lp).await {
        Ok(text) => Ok(text
            .chars()
            .take(usize::try_from(LOG_BYTES).unwrap_or(65_536))
            .collect()),
        Err(e) => Err(api_error(&format!("log of {pod}"), &e)),
    }
}

/// Reads the cluster. `Err` only when the Kubernetes API cannot be used at all (the node list
/// fails): doctor then cannot run.
pub async fn cluster(
    client: kube::Client,
    ns: &str,
    only_node: Option<&str>,
) -> Result<(Cluster, SecretValues), String> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let nodes = nodes_api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("cannot list the nodes", &e))?
        .items
        .into_iter()
        .map(node_facts)
        .collect::<Vec<_>>();
    let namespace = map(
        lookup(
            &Api::<Namespace>::all(client.clone()),
            ns,
            &format!("namespace {ns}"),
        )
        .await,
        |_| (),
    );
    let daemonset = map(
        lookup(
            &Api::<DaemonSet>::namespaced(client.clone(), ns),
            names::DAEMONSET,
            &format!("DaemonSet {ns}/{}", names::DAEMONSET),
        )
        .await,
        ds_facts,
    );
    let configmap = map(
        lookup(
            &Api::<ConfigMap>::namespaced(client.clone(), ns),
            names::SERVER_INFO,
            &format!("ConfigMap {ns}/{}", names::SERVER_INFO),
        )
        .await,
        |c| c.data.unwrap_or_default(),
    );
    let mut values = SecretValues::default();
    let secret = map(
        lookup(
            &Api::<Secret>::namespaced(client.clone(), ns),
            names::SERVER_INFO,
            &format!("Secret {ns}/{}", names::SERVER_INFO),
        )
        .await,
        |s| {
            let mut keys = BTreeMap::new();
            for (k, v) in s.data.unwrap_or_default() {
                let text = String::from_utf8_lossy(&v.0).trim().to_string();
                keys.insert(k.clone(), text.is_empty());
                values.0.insert(k, text);
            }
            // stringData is write-only on a real API server; a stand-in may return it.
            for (k, v) in s.string_data.unwrap_or_default() {
                keys.entry(k.clone()).or_insert(v.trim().is_empty());
                values.0.entry(k).or_insert_with(|| v.trim().to_string());
            }
            keys
        },
    );
    let lease = map(
        lookup(
            &Api::<Lease>::namespaced(client.clone(), ns),
            names::LEASE,
            &format!("Lease {ns}/{}", names::LEASE),
        )
        .await,
        lease_facts,
    );
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = match &daemonset {
        Lookup::Found(ds) if !ds.pod_selector.is_empty() => ds.pod_selector.clone(),
        _ => names::POD_SELECTOR.to_string(),
    };
    let pods = match pods_api
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => {
            let mut pods: Vec<PodFacts> = list.items.into_iter().map(pod_facts).collect();
            let mut read = 0usize;
            for p in &mut pods {
                if only_node.is_some_and(|n| n != p.node) || read >= MAX_POD_LOGS {
                    continue;
                }
                read += 1;
                let all: Vec<(String, bool)> = p
                    .init
                    .iter()
                    .chain(p.containers.iter())
                    .map(|c| {
                        let crashed = !matches!(c.state, State::Running) && c.restarts > 0;
                        (c.name.clone(), crashed)
                    })
                    .collect();
                for (name, crashed) in all {
                    let mut text = log(&pods_api, &p.name, Some(&name), false, LOG_LINES).await;
                    if crashed && text.as_ref().map_or(true, |t| t.trim().is_empty()) {
                        text = log(&pods_api, &p.name, Some(&name), true, LOG_LINES).await;
                    }
                    p.logs.insert(name, text);
                }
            }
            Ok(pods)
        }
        Err(e) => Err(api_error(&format!("pods of {ns} with {selector}"), &e)),
    };
    // The labeller's own log, when the Lease holder is a pod here (its API errors).
    let labeller_log = match &lease {
        Lookup::Found(LeaseFacts {
            holder: Some(holder),
            ..
        }) => match pods_api.get_opt(holder).await {
            Ok(Some(_)) => Some(log(&pods_api, holder, None, false, 400).await),
            _ => None,
        },
        _ => None,
    };
    Ok((
        Cluster {
            namespace,
            daemonset,
            nodes,
            pods,
            configmap,
            secret,
            lease,
            labeller_log,
        },
        values,
    ))
}

/// The Trust Server's URL: `--server` (or `NODETRUST_SERVER`), else the ConfigMap's
/// `server_url`, else its `MTWILSON_SERVER` and `MTWILSON_SERVER_PORT`.
pub fn server_url(
    flag: Option<&str>,
    configmap: &Lookup<BTreeMap<String, String>>,
) -> Result<(String, &'static str), String> {
    if let Some(u) = flag.map(str::trim).filter(|u| !u.is_empty()) {
        return Ok((u.to_string(), "--server"));
    }
    let Lookup::Found(cm) = configmap else {
        return Err(format!(
            "no Trust Server URL: the ConfigMap {} is not readable and --server is not given",
            names::SERVER_INFO
        ));
    };
    let get = |k: &str| cm.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(u) = get("server_url") {
        return Ok((u.to_string(), "ConfigMap server_url"));
    }
    if let Some(host) = get("MTWILSON_SERVER") {
        let port = get("MTWILSON_SERVER_PORT").unwrap_or("8443");
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        return Ok((
            format!("https://{host}:{port}"),
            "ConfigMap MTWILSON_SERVER and MTWILSON_SERVER_PORT",
        ));
    }
    Err(format!(
        "no Trust Server URL: the ConfigMap {} has neither server_url nor MTWILSON_SERVER, and --server is not given",
        names::SERVER_INFO
    ))
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the operator chose how to trust the server (flag or environment).
pub fn trust_chosen(args: &ServerArgs) -> bool {
    args.insecure
        || args.pin.is_some()
        || args.ca.is_some()
        || env_var("NODETRUST_SERVER_PIN").is_some()
        || env_var("NODETRUST_SERVER_CA").is_some()
}

/// The server's certificate check, as [`crate::client`] chooses it (`--insecure`, `--pin`,
/// `--ca`, `NODETRUST_SERVER_PIN`, `NODETRUST_SERVER_CA`, the system bundle).
fn server_verifier(args: &ServerArgs) -> Result<ServerVerifier, String> {
    let usage = |e: CliError| match e {
        CliError::Usage(m) => m,
        other => format!("{other:?}"),
    };
    if args.insecure {
        return Ok(ServerVerifier::with_check(CertCheck::Any));
    }
    if let Some(p) = args.pin.clone().or_else(|| {
        (args.ca.is_none())
            .then(|| env_var("NODETRUST_SERVER_PIN"))
            .flatten()
    }) {
        return Ok(ServerVerifier::new(parse_pin(&p).map_err(usage)?));
    }
    let ca = args
        .ca
        .clone()
        .or_else(|| env_var("NODETRUST_SERVER_CA").map(Into::into))
        .or_else(|| env_var("SSL_CERT_FILE").map(Into::into))
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let pem = std::fs::read(&ca).map_err(|e| {
        format!(
            "cannot read the CA file {}: {e} (give --ca, --pin or --insecure)",
            ca.display()
        )
    })?;
    ServerVerifier::from_ca_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))
}

/// Why an HTTPS call failed.
#[derive(Debug)]
pub enum HttpFail {
    /// No TCP connection, or no answer in time.
    Unreachable(String),
    /// TLS failed.
    Tls(String),
    /// Anything else.
    Protocol(String),
}

impl std::fmt::Display for HttpFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(m) | Self::Tls(m) | Self::Protocol(m) => f.write_str(m),
        }
    }
}

const FLAGS: TrustFlags = TrustFlags {
    ca: "--ca",
    pin: "--pin",
};

/// `GET base/path` with basic auth: the status and (bounded) body.
pub async fn https_get(
    base: &BaseUrl,
    path: &str,
    verifier: Arc<ServerVerifier>,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpFail> {
    let where_ = base.authority();
    let call = async {
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpFail::Protocol(format!("TLS configuration: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect((base.host.as_str(), base.port))
            .await
            .map_err(|e| HttpFail::Unreachable(format!("cannot connect to {where_}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(base.host.clone())
            .map_err(|e| HttpFail::Protocol(format!("bad host name: {e}")))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| {
            HttpFail::Tls(match certificate_rejection(&e) {
                Some(cause) => format!(
                    "TLS failure with {where_}: {}",
                    verifier.not_trusted(cause, &FLAGS)
                ),
                None => format!("TLS failure with {where_}: {e}"),
            })
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| HttpFail::Protocol(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let req = Request::get(format!("{}{}", base.path, path))
            .header(hyper::header::HOST, base.authority())
            .header(hyper::header::AUTHORIZATION, format!("Basic {token}"))
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("nodetrust-doctor/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| HttpFail::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| HttpFail::Protocol(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpFail::Protocol(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(HttpFail::Unreachable(format!(
            "no answer from {where_} within {}s",
            timeout.as_secs()
        ))),
    }
}

/// The runbook's probe: `GET /mtwilson/v2/tpm-endorsements` as `MTWILSON_API_USERNAME` with the
/// Secret's `MTWILSON_API_PASSWORD`.
pub async fn probe(
    url: &str,
    args: &ServerArgs,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Probe {
    let base = match BaseUrl::parse(url) {
        Ok(b) => b,
        Err(e) => return Probe::NotRun(e.to_string()),
    };
    let verifier = match server_verifier(args) {
        Ok(v) => Arc::new(v),
        Err(e) => return Probe::NotRun(e),
    };
    match https_get(
        &base,
        "/mtwilson/v2/tpm-endorsements",
        verifier,
        user,
        password,
        timeout,
    )
    .await
    {
        Ok((status, body)) => {
            let reason = serde_json::from_slice::<nodetrust_proto::ErrorBody>(&body)
                .map(|b| b.reason.chars().take(64).collect())
                .unwrap_or_else(|_| format!("http_{status}"));
            Probe::Answered { status, reason }
        }
        Err(HttpFail::Tls(m)) => Probe::Tls(m),
        Err(HttpFail::Unreachable(m)) => Probe::Unreachable(m),
        Err(HttpFail::Protocol(m)) => Probe::Unreachable(format!("the connection failed: {m}")),
    }
}

fn cli_error_text(e: CliError) -> String {
    match e {
        CliError::Server {
            status,
            reason,
            message,
            hint,
            ..
        } => {
            let mut s = format!("the server answered HTTP {status} ({reason}): {message}");
            if let Some(h) = hint {
                s.push_str("; ");
                s.push_str(&h);
            }
            s
        }
        CliError::Rejected { message, .. } | CliError::Usage(message) => message,
    }
}

/// The host list (or why there is none) and the details of some hosts, by name.
pub type HostsRead = (
    Result<Vec<HostEntry>, String>,
    BTreeMap<String, Result<HostDetail, String>>,
);

/// The host list and the details of `wanted` hosts, with the operator's reader account. Runs
/// outside any async runtime ([`Client`] blocks on its own).
pub fn hosts(
    args: &ServerArgs,
    url: &str,
    wanted: impl Fn(&[HostEntry]) -> Vec<String>,
) -> HostsRead {
    let mut details = BTreeMap::new();
    let mut args = args.clone();
    args.server = Some(url.to_string());
    let client = match Client::new(&args) {
        Ok(c) => c,
        Err(e) => return (Err(cli_error_text(e)), details),
    };
    #[derive(serde::Deserialize)]
    struct List {
        hosts: Vec<HostEntry>,
    }
    let list = match client.get("/mtwilson/v2/hosts") {
        Ok(a) => match serde_json::from_slice::<List>(&a.body) {
            Ok(l) => l.hosts,
            Err(e) => {
                return (
                    Err(format!("the server's host list does not parse: {e}")),
                    details,
                )
            }
        },
        Err(e) => return (Err(cli_error_text(e)), details),
    };
    for name in wanted(&list).into_iter().take(MAX_HOSTS) {
        let d = match client.get(&format!(
            "/mtwilson/v2/hosts/{}",
            crate::client::encode(&name)
        )) {
            Ok(a) => serde_json::from_slice::<HostDetail>(&a.body)
                .map_err(|e| format!("the host detail does not parse: {e}")),
            Err(e) => Err(cli_error_text(e)),
        };
        details.insert(name, d);
    }
    (Ok(list), details)
}

/// `GET /v2/host` of each agent: `(host name, connection URL, pinned SHA-256)`.
pub async fn agents(
    targets: Vec<(String, String, String)>,
    user: Option<String>,
    password: Option<String>,
    timeout: Duration,
) -> BTreeMap<String, Result<HostInfo, String>> {
    let mut out = BTreeMap::new();
    let (Some(user), Some(password)) = (user, password) else {
        for (name, ..) in targets {
            out.insert(
                name,
                Err("not asked: TRUSTAGENT_ADMIN_USERNAME (ConfigMap) or TRUSTAGENT_ADMIN_PASSWORD (Secret) is missing".into()),
            );
        }
        return out;
    };
    let mut set = tokio::task::JoinSet::new();
    for (name, url, pin) in targets.into_iter().take(MAX_HOSTS) {
        let (user, password) = (user.clone(), password.clone());
        set.spawn(async move {
            let result = async {
                let base = BaseUrl::parse(&url).map_err(|e| e.to_string())?;
                let pin = parse_pin(&pin).map_err(|_| {
                    format!("the server's tls_cert_sha256 for this host is not a SHA-256: {pin:?}")
                })?;
                let (status, body) = https_get(
                    &base,
                    "/v2/host",
                    Arc::new(ServerVerifier::new(pin)),
                    &user,
                    &password,
                    timeout,
                )
                .await
                .map_err(|e| e.to_string())?;
                if status != 200 {
                    let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                    return Err(format!("the agent answered HTTP {status}: {}", text.trim()));
                }
                serde_json::from_slice::<HostInfo>(&body)
                    .map_err(|e| format!("the agent's /v2/host answer does not parse: {e}"))
            }
            .await;
            (name, result)
        });
    }
    while let Some(r) = set.join_next().await {
        if let Ok((name, result)) = r {
            out.insert(name, result);
        }
    }
    out
}
