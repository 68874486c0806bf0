//! `nodetrust doctor`: walks the troubleshooting runbook (docs/runbook.md) for the operator and
//! names the most likely root cause per node.
//!
//! # Layout
//! - [`gather`]: reads the cluster (Kubernetes API: nodes, namespace, DaemonSet, pods and their
//!   logs, ConfigMap, Secret, Lease), the Trust Server (the runbook's probe with the agent
//!   account decoded from the Secret; hosts with the operator's reader account) and each
//!   agent's `/v2/host` (pinned with the certificate SHA-256 the server holds).
//! - [`facts`]: what was read, as plain values.
//! - [`checks`]: the checks, in the runbook's order, a pure function of the facts.
//! - [`report`]: PASS / WARN / FAIL lines, the summary, text or JSON.
//!
//! Exit status: 0 when no check fails (warnings allowed), 1 when one fails, 2 when doctor
//! cannot run (bad arguments, no kubeconfig, the Kubernetes API unusable).

mod checks;
mod facts;
mod gather;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::client::ServerArgs;
use crate::output::errln;
use crate::CliError;

/// The runbook's names.
pub mod names {
    /// The namespace.
    pub const NAMESPACE: &str = "kubx-cit";
    /// The agent DaemonSet.
    pub const DAEMONSET: &str = "cit-trust-agent";
    /// Its pods' label selector when the DaemonSet cannot be read.
    pub const POD_SELECTOR: &str = "app.kubernetes.io/name=cit-trust-agent";
    /// The init container (`nodetrust-agent check`).
    pub const INIT: &str = "init-tcsd";
    /// The agent container.
    pub const AGENT: &str = "run-trust-agent";
    /// ConfigMap and Secret.
    pub const SERVER_INFO: &str = "cit-server-info";
    /// The ConfigMap keys the runbook lists.
    pub const CONFIGMAP_KEYS: [&str; 4] = [
        "MTWILSON_API_USERNAME",
        "MTWILSON_SERVER",
        "MTWILSON_SERVER_PORT",
        "TRUSTAGENT_ADMIN_USERNAME",
    ];
    /// The Secret keys the runbook lists that must not be empty.
    pub const SECRET_KEYS: [&str; 2] = ["MTWILSON_API_PASSWORD", "TRUSTAGENT_ADMIN_PASSWORD"];
    /// The Secret key that may be empty (no owner auth value).
    pub const OWNER_SECRET: &str = "TPM_OWNER_SECRET";
    /// The labeller's Lease.
    pub const LEASE: &str = "nodetrust-labeller";
    /// The label of nodes with a TPM.
    pub const TPM_LABEL: &str = "ibm-cloud.kubernetes.io/tpm-enabled";
    /// The trust label.
    pub const TRUST_LABEL: &str = nodetrust_labeller::desired::DEFAULT_LABEL_KEY;
    /// The labeller's verdict annotation.
    pub const VERDICT_ANNOTATION: &str = nodetrust_labeller::desired::VERDICT;
}

/// `nodetrust doctor`.
#[derive(Debug, Args)]
pub struct DoctorCommand {
    /// Look at this node only (its name in Kubernetes).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Kubeconfig of the cluster. [default: $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the agent DaemonSet, the ConfigMap/Secret cit-server-info and the
    /// labeller's Lease.
    #[arg(long, value_name = "NS", default_value = names::NAMESPACE)]
    pub namespace: String,
    /// The Trust Server: --server overrides the ConfigMap's server_url (or MTWILSON_SERVER and
    /// MTWILSON_SERVER_PORT); a reader account (NODETRUST_ADMIN_USERNAME/PASSWORD) reads the
    /// hosts; without --pin, --ca or --insecure the ConfigMap's TRUSTAGENT_SERVER_PIN pins it.
    #[command(flatten)]
    pub server: ServerArgs,
}

fn kubeconfig(flag: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let path = flag
        .or_else(|| {
            std::env::var_os("KUBECONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
        .ok_or_else(|| {
            CliError::Usage("no kubeconfig: give --kubeconfig FILE or set KUBECONFIG".into())
        })?;
    if !path.is_file() {
        return Err(CliError::Usage(format!(
            "no kubeconfig at {}: give --kubeconfig FILE or set KUBECONFIG",
            path.display()
        )));
    }
    Ok(path)
}

/// Runs every check and prints them. Exits 1 itself when a check fails (the report is the
/// output; no error line follows it).
pub fn run(cmd: DoctorCommand) -> Result<(), CliError> {
    let kubeconfig = kubeconfig(cmd.kubeconfig.clone())?;
    let timeout = Duration::from_secs(cmd.server.timeout.clamp(1, 300));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the I/O runtime: {e}")))?;
    let ns = cmd.namespace.clone();
    let only = cmd.node.clone();

    // Kubernetes.
    let (cluster, secret) = runtime.block_on(async {
        let kube = nodetrust_labeller::client::from_kubeconfig(&kubeconfig)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        match tokio::time::timeout(
            timeout.saturating_mul(4),
            gather::cluster(kube, &ns, only.as_deref()),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(CliError::Usage(format!(
                "cannot use the Kubernetes API: {e}"
            ))),
            Err(_) => Err(CliError::Usage(format!(
                "the Kubernetes API did not answer within {}s",
                timeout.saturating_mul(4).as_secs()
            ))),
        }
    })?;
    if let Some(n) = &only {
        if !cluster.nodes.iter().any(|x| &x.name == n) {
            return Err(CliError::Usage(format!(
                "no node named {n:?} in the cluster (`kubectl get nodes`)"
            )));
        }
    }

    // The Trust Server: where, how to trust it, the probe.
    let mut server = cmd.server.clone();
    let cm = match &cluster.configmap {
        facts::Lookup::Found(cm) => Some(cm),
        _ => None,
    };
    if !gather::trust_chosen(&server) {
        if let Some(pin) = cm
            .and_then(|c| c.get("TRUSTAGENT_SERVER_PIN"))
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
        {
            server.pin = Some(pin.to_string());
        }
    }
    let url = gather::server_url(server.server.as_deref(), &cluster.configmap);
    let cm_get = |k: &str| {
        cm.and_then(|c| c.get(k))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let probe = match &url {
        Ok((u, _)) => {
            let user = cm_get("MTWILSON_API_USERNAME").unwrap_or_default();
            let password = secret
                .get("MTWILSON_API_PASSWORD")
                .unwrap_or_default()
                .to_string();
            runtime.block_on(gather::probe(u, &server, &user, &password, timeout))
        }
        Err(e) => facts::Probe::NotRun(e.clone()),
    };

    // Hosts, with the reader account (outside the runtime: the client blocks on its own).
    let (hosts, details) = match (&url, &probe) {
        (Ok((u, _)), facts::Probe::Answered { .. }) => gather::hosts(&server, u, |list| {
            let scope = checks::in_scope(&cluster, Some(list), only.as_deref());
            cluster
                .nodes
                .iter()
                .filter(|n| scope.contains(&n.name))
                .filter_map(|n| checks::host_of(n, list).map(|(h, _)| h.name.clone()))
                .collect()
        }),
        (Err(e), _) => (Err(e.clone()), Default::default()),
        (Ok(_), _) => (
            Err("the Trust Server is not answering (see the server check)".into()),
            Default::default(),
        ),
    };

    // Agents, pinned with the certificate SHA-256 the server holds.
    let targets: Vec<(String, String, String)> = match &hosts {
        Ok(list) => list
            .iter()
            .filter_map(|h| {
                let pin = details
                    .get(&h.name)?
                    .as_ref()
                    .ok()?
                    .tls_cert_sha256
                    .clone()?;
                Some((h.name.clone(), h.connection_url.clone(), pin))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let agents = runtime.block_on(gather::agents(
        targets,
        cm_get("TRUSTAGENT_ADMIN_USERNAME"),
        secret.get("TRUSTAGENT_ADMIN_PASSWORD").map(str::to_string),
        timeout.min(Duration::from_secs(10)),
    ));
    drop(secret);

    let facts = facts::Facts {
        namespace: ns.clone(),
        now_ms: nodetrust_proto::trust::millis(std::time::SystemTime::now()),
        only_node: only.clone(),
        cluster,
        remote: facts::Remote {
            url: url.clone(),
            probe,
            hosts,
            details,
            agents,
        },
    };
    let checks = checks::evaluate(&facts);
    let scope = checks::in_scope(
        &facts.cluster,
        facts.remote.hosts.as_ref().ok().map(Vec::as_slice),
        only.as_deref(),
    );
    let summary = report::summary(&checks, &scope);
    let server_text = match &url {
        Ok((u, from)) => format!("{u} (from {from})"),
        Err(_) => "(none)".into(),
    };
    if cmd.server.json() {
        report::print_json(
            &checks,
            &summary,
            json!({"namespace": ns, "nodes": scope, "server": server_text}),
        );
    } else {
        report::print_text(
            &format!(
                "nodetrust doctor: namespace {ns}, {} node(s) looked at, Trust Server {}",
                scope.len(),
                crate::output::truncate(&crate::output::printable(&server_text, false), 200)
            ),
            &checks,
            &summary,
        );
    }
    if checks.iter().any(|c| c.status == report::Status::Fail) {
        crate::output::finish();
        std::process::exit(1);
    }
    if scope.is_empty() {
        errln!("nodetrust doctor: no node to look at");
    }
    Ok(())
}
