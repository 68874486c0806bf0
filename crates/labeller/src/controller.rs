//! The labelling loop shared by the embedded labeller and `nodetrust label`: it keeps what it
//! knows of every host's trust (from [`TrustUpdate`]s), watches the nodes in scope, and brings
//! each node to [`desired`](crate::desired::desired) whenever either side changes, and every
//! resync period (so `--stale-after` acts even when no verdict arrives).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use nodetrust_proto::trust::{millis, EffectiveTrust, Trust};
use tokio::sync::mpsc;

use crate::api::{apply_node, Applied, RateLimiter};
use crate::desired::{current_label, desired, patch_for, Policy};
use crate::leader::{try_acquire, LeaseConfig};
use crate::metrics::Metrics;

/// What the labeller knows of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTrust {
    /// Host name (the agent's node name).
    pub name: String,
    /// Hardware UUID (a node's `status.nodeInfo.systemUUID`).
    pub hardware_uuid: String,
    /// The stored trust.
    pub trust: EffectiveTrust,
    /// The id of the report behind it.
    pub report_id: Option<String>,
}

/// News from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustUpdate {
    /// Every host the server has (replaces all that was known).
    Snapshot(Vec<HostTrust>),
    /// One host changed, committed at `at` (Unix ms, for the latency metric).
    Host {
        /// The host.
        host: HostTrust,
        /// Commit time of the change.
        at: Option<i64>,
    },
    /// A host was deleted.
    Removed(String),
}

/// Settings of the labeller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Label, stale-after, taint.
    pub policy: Policy,
    /// Label selector of the nodes in scope.
    pub node_selector: String,
    /// Client-side rate limit (calls per second).
    pub kube_qps: f32,
    /// Client-side burst.
    pub kube_burst: u32,
    /// Leader election; `None`: this process always labels.
    pub lease: Option<LeaseConfig>,
    /// Post Kubernetes Events on trust changes.
    pub events: bool,
    /// Re-check every node this often.
    pub resync: Duration,
    /// Namespace of the Events (node events live in `default`).
    pub event_namespace: String,
    /// Now, in Unix ms (the server passes its injected clock).
    pub clock: Clock,
}

/// The labeller's clock: Unix milliseconds.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(|| millis(std::time::SystemTime::now())))
    }

    /// Now, Unix ms.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Settings {
    /// Defaults: the runbook's selector, client-go's rate limit, resync every 10 s.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            node_selector: crate::desired::DEFAULT_NODE_SELECTOR.into(),
            kube_qps: 5.0,
            kube_burst: 10,
            lease: None,
            events: true,
            resync: Duration::from_secs(10),
            event_namespace: "default".into(),
            clock: Clock::system(),
        }
    }
}

#[derive(Debug, Default)]
struct Hosts {
    by_name: HashMap<String, HostTrust>,
    by_uuid: HashMap<String, String>,
}

impl Hosts {
    fn insert(&mut self, h: HostTrust) {
        if let Some(old) = self.by_name.get(&h.name) {
            self.by_uuid.remove(&old.hardware_uuid.to_ascii_lowercase());
        }
        self.by_uuid
            .insert(h.hardware_uuid.to_ascii_lowercase(), h.name.clone());
        self.by_name.insert(h.name.clone(), h);
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.by_name.remove(name) {
            self.by_uuid.remove(&old.hardware_uuid.to_ascii_lowercase());
        }
    }

    /// The host of a node: by `systemUUID` = hardware UUID, else node name = host name.
    fn for_node(&self, node: &Node) -> Option<&HostTrust> {
        let uuid = node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.system_uuid.to_ascii_lowercase());
        uuid.and_then(|u| self.by_uuid.get(&u))
            .and_then(|n| self.by_name.get(n))
            .or_else(|| {
                node.metadata
                    .name
                    .as_ref()
                    .and_then(|n| self.by_name.get(n))
            })
    }

    /// The node names a host may be on, among `nodes`.
    fn nodes_of<'a>(&self, host: &str, nodes: &'a HashMap<String, Node>) -> Vec<&'a str> {
        nodes
            .iter()
            .filter(|(_, n)| self.for_node(n).is_some_and(|h| h.name == host))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Runs the labeller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    mut updates: mpsc::Receiver<TrustUpdate>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let limiter = Arc::new(RateLimiter::new(settings.kube_qps, settings.kube_burst));
    let nodes_api: Api<Node> = Api::all(client.clone());
    let events_api: Api<Event> = Api::namespaced(client.clone(), &settings.event_namespace);
    let mut hosts = Hosts::default();
    let mut nodes: HashMap<String, Node> = HashMap::new();
    let mut nodes_ready = false;
    let mut leader = settings.lease.is_none();
    metrics.set_leader(leader);
    let mut watch = watcher(
        nodes_api.clone(),
        watcher::Config::default().labels(&settings.node_selector),
    )
    .default_backoff()
    .boxed();
    // Leadership runs on a task of its own with its own small rate budget, so renewals never
    // wait behind a long sync's patches (which stop as soon as leadership is lost).
    let (leader_tx, mut leader_rx) = tokio::sync::watch::channel(leader);
    let lease_task = settings.lease.clone().map(|cfg| {
        let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
        tokio::spawn(lease_loop(api, cfg, leader_tx, metrics.clone()))
    });
    let mut resync = tokio::time::interval(settings.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut init_buffer: Option<HashMap<String, Node>> = None;
    let mut updates_open = true;
    tokio::pin!(shutdown);
    tracing::info!(selector = %settings.node_selector, label = %settings.policy.label_key, "labeller started");

    let ctx = Ctx {
        nodes_api,
        events_api,
        limiter,
        metrics: metrics.clone(),
        settings: settings.clone(),
        leader: leader_rx.clone(),
    };
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            changed = leader_rx.changed(), if lease_task.is_some() => {
                if changed.is_err() {
                    // The lease task ended: no longer the leader.
                    leader = false;
                    metrics.set_leader(false);
                    continue;
                }
                let held = *leader_rx.borrow_and_update();
                if held != leader {
                    leader = held;
                    if held && nodes_ready {
                        ctx.reconcile_all(&hosts, &mut nodes).await;
                    }
                }
            }
            update = updates.recv(), if updates_open => {
                // A closed channel (the source stopped): keep what is known until shutdown.
                let Some(update) = update else {
                    updates_open = false;
                    continue;
                };
                let touched: Vec<String> = match update {
                    TrustUpdate::Snapshot(all) => {
                        hosts = Hosts::default();
                        for h in all { hosts.insert(h); }
                        nodes.keys().cloned().collect()
                    }
                    TrustUpdate::Host { host, at } => {
                        let name = host.name.clone();
                        if let Some(at) = at { metrics.change_pending(&name, at); }
                        hosts.insert(host);
                        let on = hosts.nodes_of(&name, &nodes);
                        if on.is_empty() { metrics.change_dropped(&name); }
                        on.into_iter().map(str::to_string).collect()
                    }
                    TrustUpdate::Removed(name) => {
                        let on: Vec<String> = hosts.nodes_of(&name, &nodes).into_iter().map(str::to_string).collect();
                        hosts.remove(&name);
                        metrics.change_dropped(&name);
                        on
                    }
                };
                if leader && nodes_ready {
                    for n in touched { ctx.reconcile(&hosts, &mut nodes, &n).await; }
                }
            }
            ev = watch.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(watcher::Event::Init) => init_buffer = Some(HashMap::new()),
                    Ok(watcher::Event::InitApply(n)) => {
                        if let (Some(b), Some(name)) = (init_buffer.as_mut(), n.metadata.name.clone()) {
                            b.insert(name, n);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        nodes = init_buffer.take().unwrap_or_default();
                        nodes_ready = true;
                        if leader { ctx.reconcile_all(&hosts, &mut nodes).await; }
                    }
                    Ok(watcher::Event::Apply(n)) => {
                        if let Some(name) = n.metadata.name.clone() {
                            nodes.insert(name.clone(), n);
                            if leader && nodes_ready { ctx.reconcile(&hosts, &mut nodes, &name).await; }
                        }
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        if let Some(name) = &n.metadata.name { nodes.remove(name); }
                    }
                    Err(e) => {
                        ctx.metrics.api_error(None);
                        tracing::warn!(error = %e, "node watch failed; it restarts with back-off");
                    }
                }
            }
            _ = resync.tick() => {
                if leader && nodes_ready { ctx.reconcile_all(&hosts, &mut nodes).await; }
            }
        }
    }
    if let Some(t) = lease_task {
        t.abort();
    }
    metrics.set_leader(false);
    tracing::info!("labeller stopped");
}

/// Takes, keeps or watches the Lease every renew period; says whether this process holds it.
async fn lease_loop(
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
) {
    let limiter = RateLimiter::new(2.0, 2);
    let mut tick = tokio::time::interval(cfg.renew_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let was = *leader.borrow();
        let now = match try_acquire(&api, &cfg, &limiter, &metrics).await {
            Ok(held) => {
                if held {
                    last_renewed = tokio::time::Instant::now();
                }
                held
            }
            Err(e) => {
                tracing::warn!(error = %e, "labeller lease: API error");
                // A holder that cannot renew stops before another may take over.
                if was && last_renewed.elapsed() >= cfg.duration.mul_f32(0.8) {
                    tracing::warn!("labeller lease not renewed in time: stepping down");
                    false
                } else {
                    was
                }
            }
        };
        if now != was {
            tracing::info!(leader = now, identity = %cfg.identity, "labeller leadership changed");
            metrics.set_leader(now);
            if leader.send(now).is_err() {
                return;
            }
        }
    }
}

/// One pass without watching: lists the nodes in scope and brings each to its desired state
/// (`nodetrust label --once`). No leader election: the caller is the only labeller.
pub async fn sync_once(
    client: Client,
    settings: &Settings,
    all: Vec<HostTrust>,
    metrics: Arc<Metrics>,
) -> Result<(), kube::Error> {
    let (_always, leader) = tokio::sync::watch::channel(true);
    let ctx = Ctx {
        leader,
        nodes_api: Api::all(client.clone()),
        events_api: Api::namespaced(client, &settings.event_namespace),
        limiter: Arc::new(RateLimiter::new(settings.kube_qps, settings.kube_burst)),
        metrics,
        settings: settings.clone(),
    };
    let mut hosts = Hosts::default();
    for h in all {
        hosts.insert(h);
    }
    let mut nodes = HashMap::new();
    let mut params = kube::api::ListParams::default()
        .labels(&settings.node_selector)
        .limit(500);
    loop {
        ctx.limiter.acquire().await;
        let page = ctx.nodes_api.list(&params).await?;
        for n in page.items {
            if let Some(name) = n.metadata.name.clone() {
                nodes.insert(name, n);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => break,
        }
    }
    ctx.reconcile_all(&hosts, &mut nodes).await;
    Ok(())
}

struct Ctx {
    /// Whether this process may write (checked before each node: a long sync stops as soon as
    /// leadership is lost).
    leader: tokio::sync::watch::Receiver<bool>,
    nodes_api: Api<Node>,
    events_api: Api<Event>,
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    settings: Settings,
}

impl Ctx {
    async fn reconcile_all(&self, hosts: &Hosts, nodes: &mut HashMap<String, Node>) {
        let names: Vec<String> = nodes.keys().cloned().collect();
        let unmatched = nodes
            .values()
            .filter(|n| hosts.for_node(n).is_none())
            .count();
        self.metrics.set_nodes(
            u64::try_from(nodes.len()).unwrap_or(0),
            u64::try_from(unmatched).unwrap_or(0),
        );
        for n in names {
            if !*self.leader.borrow() {
                tracing::info!("leadership lost: this sync stops");
                return;
            }
            self.reconcile(hosts, nodes, &n).await;
        }
    }

    async fn reconcile(&self, hosts: &Hosts, nodes: &mut HashMap<String, Node>, name: &str) {
        let Some(node) = nodes.get(name).cloned() else {
            return;
        };
        let Some(host) = hosts.for_node(&node) else {
            // A node with no host is left alone (and counted).
            return;
        };
        let policy = &self.settings.policy;
        let host_name = host.name.clone();
        let trust = host.trust.clone();
        let report = host.report_id.clone();
        let before = current_label(&node, policy).map(str::to_string);
        let clock = self.settings.clock.clone();
        let make = |n: &Node| {
            let at = trust.at(clock.now());
            patch_for(n, &desired(Some(&at), report.as_deref(), policy), policy)
        };
        match apply_node(&self.nodes_api, &self.limiter, &self.metrics, node, make).await {
            Ok(Applied::Unchanged) => {
                self.metrics
                    .change_applied(&host_name, self.settings.clock.now());
            }
            Ok(Applied::Patched(n)) => {
                self.metrics
                    .change_applied(&host_name, self.settings.clock.now());
                let after = current_label(&n, policy).map(str::to_string);
                if after != before {
                    let at = trust.at(self.settings.clock.now());
                    tracing::info!(node = %name, host = %host_name, label = ?after, verdict = %at.verdict, "node label changed");
                    if self.settings.events {
                        self.event(
                            &n,
                            before.as_deref(),
                            after.as_deref(),
                            at.verdict,
                            &at.reasons,
                        )
                        .await;
                    }
                }
                nodes.insert(name.to_string(), *n);
            }
            Ok(Applied::Gone) => {
                nodes.remove(name);
            }
            Err(e) => {
                // Left as it is; the next resync tries again.
                tracing::warn!(node = %name, error = %e, "node not labelled (API error); retried at the next resync");
            }
        }
    }

    async fn event(
        &self,
        node: &Node,
        before: Option<&str>,
        after: Option<&str>,
        verdict: Trust,
        reasons: &[String],
    ) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (kind, reason) = if verdict == Trust::Trusted {
            ("Normal", "NodeTrusted")
        } else {
            ("Warning", "NodeNotTrusted")
        };
        let message = crate::desired::shorten(
            &std::iter::once(format!(
                "{}: {} -> {} ({verdict})",
                self.settings.policy.label_key,
                before.unwrap_or("(none)"),
                after.unwrap_or("(none)")
            ))
            .chain(reasons.iter().cloned())
            .collect::<Vec<_>>(),
            1024,
        );
        let now = Time(Timestamp::now());
        let ev = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}.nodetrust.")),
                namespace: Some(self.settings.event_namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(name.clone()),
                uid: node.metadata.uid.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(kind.into()),
            source: Some(EventSource {
                component: Some("nodetrust-labeller".into()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        self.limiter.acquire().await;
        if let Err(e) = self.events_api.create(&PostParams::default(), &ev).await {
            self.metrics.api_error(crate::api::status_code(&e));
            tracing::debug!(node = %name, error = %e, "event not posted");
        }
    }
}
