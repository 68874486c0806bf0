//! `nodetrust label`: the standalone labeller, for clusters whose Trust Server runs elsewhere
//! (the runbook's own arrangement). It polls the server's hosts API with a `reader` account
//! and applies the same desired state as the labeller embedded in the server (the code is
//! `nodetrust-labeller`'s). When the server does not answer, answers an error, or answers
//! something that does not parse, no label changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use nodetrust_labeller::args::{parse_duration, LabelArgs};
use nodetrust_labeller::{HostTrust, TrustUpdate};
use nodetrust_proto::trust::{parse_rfc3339, EffectiveTrust};
use nodetrust_proto::views::{HostList, HostSummary};

use crate::client::{Client, ServerArgs};
use crate::output::errln;
use crate::CliError;

/// `nodetrust label --server URL --kubeconfig FILE`.
#[derive(Debug, Args)]
pub struct LabelCommand {
    /// Kubeconfig of the cluster whose nodes are labelled. [default: $KUBECONFIG, else
    /// ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How often the server is asked.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Poll once, apply, and exit (for cron jobs and tests).
    #[arg(long)]
    pub once: bool,
    /// Labelling options.
    #[command(flatten)]
    pub label: LabelArgs,
    /// The Trust Server (a `reader` account is enough).
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What the server said, as the labeller's input.
fn host_trust(h: HostSummary) -> HostTrust {
    let attested_at = h.trust.attested_at.as_deref().and_then(parse_rfc3339);
    HostTrust {
        name: h.name,
        hardware_uuid: h.hardware_uuid,
        trust: EffectiveTrust {
            verdict: attested_at.map(|_| h.trust.verdict),
            reasons: h.trust.reasons,
            attested_at,
            expires_at: h.trust.expires_at.as_deref().and_then(parse_rfc3339),
            status: h.status,
            status_detail: None,
        },
        report_id: None,
    }
}

/// One poll: every host, or why there is nothing to apply.
fn poll(client: &Client) -> Result<Vec<HostTrust>, String> {
    let answer = client.get("/mtwilson/v2/hosts").map_err(|e| match e {
        CliError::Server {
            status,
            reason,
            message,
            ..
        } => {
            format!("the server answered {status} {reason}: {message}")
        }
        CliError::Rejected { message, .. } | CliError::Usage(message) => message,
    })?;
    let list: HostList = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("the server's host list does not parse: {e}"))?;
    Ok(list.hosts.into_iter().map(host_trust).collect())
}

/// Runs the poller (until interrupted, or one round with `--once`).
pub fn run(cmd: LabelCommand) -> Result<(), CliError> {
    cmd.label.validate().map_err(CliError::Usage)?;
    // The labeller logs what it does (RUST_LOG, default info) on stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    let kubeconfig = cmd
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
        .ok_or_else(|| CliError::Usage("no kubeconfig: give --kubeconfig FILE".into()))?;
    let client = Client::new(&cmd.server)?;
    // One round: a bad answer is an error and nothing is touched.
    let first = if cmd.once {
        Some(poll(&client).map_err(|e| CliError::Rejected {
            reason: "no_verdicts",
            message: format!("no labels changed: {e}"),
            json: false,
        })?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the I/O runtime: {e}")))?;
    let kube = runtime
        .block_on(nodetrust_labeller::client::from_kubeconfig(&kubeconfig))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut settings = cmd.label.settings();
    settings.resync = settings.resync.min(cmd.interval);
    let metrics = Arc::new(nodetrust_labeller::Metrics::default());
    if let Some(hosts) = first {
        let n = hosts.len();
        runtime
            .block_on(nodetrust_labeller::sync_once(
                kube,
                &settings,
                hosts,
                metrics.clone(),
            ))
            .map_err(|e| CliError::Usage(format!("Kubernetes API: {e}")))?;
        errln!(
            "nodetrust label: {n} hosts from the Trust Server; {} nodes patched",
            metrics.patches()
        );
        return Ok(());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let interval = cmd.interval;
    // The server client blocks on its own runtime: it polls from a thread of its own.
    let poller = std::thread::spawn(move || {
        let mut announce = true;
        loop {
            match poll(&client) {
                Ok(hosts) => {
                    let n = hosts.len();
                    if tx.blocking_send(TrustUpdate::Snapshot(hosts)).is_err() {
                        return;
                    }
                    if announce {
                        errln!("nodetrust label: {n} hosts from the Trust Server");
                        announce = false;
                    }
                }
                Err(e) => {
                    errln!("nodetrust label: no labels changed this round: {e}");
                }
            }
            std::thread::sleep(interval);
        }
    });
    runtime.block_on(async move {
        let labeller = tokio::spawn(nodetrust_labeller::run(
            kube,
            settings,
            rx,
            metrics,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        // SIGINT, or SIGTERM (a pod being stopped).
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let _ = stop_tx.send(true);
        let _ = labeller.await;
    });
    drop(poller);
    Ok(())
}
