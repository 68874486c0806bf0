//! The embedded labeller's source: every host's trust from the store, then each change from
//! the typed change feed ([`crate::feed`]), handed to `nodetrust_labeller::run`. On a
//! [`FeedItem::Resync`] (the follower fell behind retention) every host is read again.

use std::sync::Arc;
use std::time::Duration;

use nodetrust_labeller::leader::LeaseConfig;
use nodetrust_labeller::{HostTrust, TrustUpdate};
use nodetrust_proto::trust::{ChangeKind, FeedItem};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::state::AppState;
use crate::store::{HostRow, StoreError};

/// Whether the configuration turns the labeller on.
pub fn enabled(config: &Config) -> bool {
    config.kubeconfig.is_some() || config.labeller
}

/// Starts the labeller when configured: the Kubernetes client, leader election among
/// replicas, and the task feeding it verdicts. Returns its metrics.
pub async fn start(
    state: &AppState,
    config: &Config,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Vec<tokio::task::JoinHandle<()>>>, nodetrust_labeller::client::ClientError> {
    if !enabled(config) {
        return Ok(None);
    }
    let client = match &config.kubeconfig {
        Some(path) => nodetrust_labeller::client::from_kubeconfig(path).await?,
        None => nodetrust_labeller::client::in_cluster()?,
    };
    let mut settings = config.label.settings();
    let clock = state.clock.clone();
    settings.clock = nodetrust_labeller::Clock(Arc::new(move || crate::store::millis(clock.now())));
    let namespace = config
        .labeller_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "kubx-cit".into());
    settings.lease = Some(LeaseConfig {
        namespace,
        name: "nodetrust-labeller".into(),
        identity: state.settings.replica.clone(),
        duration: config.labeller_lease,
    });
    let metrics = Arc::new(nodetrust_labeller::Metrics::default());
    let _ = state.labeller_policy.set(settings.policy.clone());
    let _ = state.labeller_metrics.set(metrics.clone());
    let (tx, rx) = mpsc::channel(1024);
    let mut stop = shutdown.clone();
    let labeller = tokio::spawn(nodetrust_labeller::run(
        client,
        settings,
        rx,
        metrics,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    let st = state.clone();
    let mut stop = shutdown;
    let source = tokio::spawn(async move {
        tokio::select! {
            () = feed(st, tx) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    });
    tracing::info!(kubeconfig = ?config.kubeconfig, in_cluster = config.kubeconfig.is_none(), "Kubernetes labeller on");
    Ok(Some(vec![labeller, source]))
}

/// A host as the labeller sees it, with its latest report's id.
async fn host_trust(state: &AppState, h: &HostRow) -> Result<HostTrust, StoreError> {
    let report_id = state
        .store
        .reports(Some(&h.name), 1)
        .await?
        .into_iter()
        .next()
        .map(|r| r.id);
    Ok(HostTrust {
        name: h.name.clone(),
        hardware_uuid: h.hardware_uuid.clone(),
        trust: h.effective(),
        report_id,
    })
}

/// Every host with its latest report's id: two queries, whatever the fleet's size.
async fn snapshot(state: &AppState) -> Result<Vec<HostTrust>, StoreError> {
    let mut latest = state.store.latest_report_ids().await?;
    Ok(state
        .store
        .hosts()
        .await?
        .into_iter()
        .map(|h| HostTrust {
            report_id: latest.remove(&h.name),
            trust: h.effective(),
            name: h.name,
            hardware_uuid: h.hardware_uuid,
        })
        .collect())
}

/// Feeds the labeller until its channel closes; database errors are retried.
async fn feed(state: AppState, tx: mpsc::Sender<TrustUpdate>) {
    let retry = Duration::from_secs(1);
    'outer: loop {
        // Position first, then the snapshot: a change in between is seen twice, never missed.
        let head = match state.store.changes_head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "labeller: reading the change feed failed; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        match snapshot(&state).await {
            Ok(all) => {
                if tx.send(TrustUpdate::Snapshot(all)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "labeller: listing hosts failed; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        }
        let mut feed = match state.store.subscribe_from(head).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "labeller: following the change feed failed; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        loop {
            let item = match feed.next().await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "labeller: change feed read failed; retrying");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            let update = match item {
                FeedItem::Resync { .. } => continue 'outer,
                // Whatever the change, the host as it is now: gone, or its current trust (a
                // host deleted and registered again since is taken as it is).
                FeedItem::Change(ev) => match state.store.host(&ev.host).await {
                    Ok(Some(h)) => match host_trust(&state, &h).await {
                        Ok(t) => TrustUpdate::Host {
                            host: t,
                            at: matches!(ev.kind, ChangeKind::Verdict | ChangeKind::Deleted)
                                .then_some(ev.at),
                        },
                        Err(_) => continue 'outer,
                    },
                    Ok(None) => TrustUpdate::Removed(ev.host),
                    Err(_) => continue 'outer,
                },
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }
}
