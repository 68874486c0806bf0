//! The state shared by request handlers and the attestation engine.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::agent_client::AgentConnector;
use crate::auth::{ensure_account, Authenticator, Role};
use crate::clock::Clock;
use crate::config::Config;
use crate::ekca::EkCaBundle;
use crate::jws::{self, Signer};
use crate::metrics::Metrics;
use crate::store::{millis, Store};

/// Settings the handlers and the engine read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Attestation interval.
    pub attest_interval: Duration,
    /// Verdict validity.
    pub report_validity: Duration,
    /// How long reports are kept (each registered host's latest is always kept).
    pub report_retention: Duration,
    /// How long change-feed rows are kept.
    pub change_retention: Duration,
    /// Most attestations in flight.
    pub attest_concurrency: usize,
    /// Largest request body.
    pub max_body: usize,
    /// This replica's name (leases).
    pub replica: String,
    /// How long a registration challenge stays open.
    pub challenge_ttl: Duration,
    /// Agent events of one host closer together than this are coalesced into one attestation.
    pub agent_event_interval: Duration,
}

/// Hosts whose agent events are remembered for coalescing (the oldest are forgotten first).
const MAX_EVENT_HOSTS: usize = 100_000;

/// Everything shared.
#[derive(Debug)]
pub struct Inner {
    /// The store.
    pub store: Store,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The agents.
    pub agents: Arc<dyn AgentConnector>,
    /// Authentication.
    pub auth: Authenticator,
    /// The report signer.
    pub signer: Signer,
    /// Metrics.
    pub metrics: Metrics,
    /// Manufacturer CAs for EK certificates.
    pub ek_cas: EkCaBundle,
    /// Settings.
    pub settings: Settings,
    /// Wakes the scheduler (a host became due now).
    pub wake: Notify,
    /// Hosts being attested by this process.
    pub in_flight: Mutex<HashSet<String>>,
    /// Hosts made due again while being attested: attested once more when that ends.
    pub again: Mutex<HashSet<String>>,
    /// When each host's last agent event scheduled an attestation.
    pub agent_events: Mutex<HashMap<String, Instant>>,
    /// The embedded labeller's metrics, once it runs.
    pub labeller_metrics: std::sync::OnceLock<Arc<nodetrust_labeller::Metrics>>,
    /// Flavors read recently, and when.
    pub flavor_cache: Mutex<Option<(std::time::Instant, Arc<Vec<nodetrust_appraise::Flavor>>)>>,
}

/// The shared state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An account could not be set up.
    #[error("setting up account {name}: {detail}")]
    Account {
        /// Account.
        name: String,
        /// Cause.
        detail: String,
    },
    /// The signing key is unusable.
    #[error(transparent)]
    Sign(#[from] jws::SignError),
    /// The EK CA directory is unusable.
    #[error("--ek-ca-dir: {0}")]
    EkCa(String),
    /// Settings that contradict each other.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl AppState {
    /// Builds the state: loads the signing key (made on first start), the EK CAs, and creates
    /// or updates the configured admin and agent accounts.
    pub async fn new(
        config: &Config,
        store: Store,
        clock: Arc<dyn Clock>,
        agents: Arc<dyn AgentConnector>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let now = millis(clock.now());
        let accounts = [
            (&config.admin_username, &config.admin_password, Role::Admin),
            (&config.agent_username, &config.agent_password, Role::Agent),
        ];
        for (user, password, role) in accounts {
            if let (Some(u), Some(p)) = (user, password) {
                ensure_account(&store, u, p, role, now)
                    .await
                    .map_err(|detail| StartError::Account {
                        name: u.clone(),
                        detail,
                    })?;
            }
        }
        let mut key_error = None;
        let key = store
            .key_or_insert("report-signing", || {
                jws::generate_key().unwrap_or_else(|e| {
                    key_error = Some(e);
                    String::new()
                })
            })
            .await?;
        if let Some(e) = key_error {
            return Err(e.into());
        }
        let signer = Signer::from_pkcs8_b64(&key)?;
        let ek_cas = match &config.ek_ca_dir {
            Some(dir) => EkCaBundle::load_dir(dir).map_err(StartError::EkCa)?,
            None => EkCaBundle::default(),
        };
        let settings = Settings {
            attest_interval: config.attest_interval,
            report_validity: config.report_validity,
            report_retention: config.report_retention,
            change_retention: config.change_retention,
            attest_concurrency: config.attest_concurrency.max(1),
            max_body: config.max_body,
            replica: config.replica(),
            challenge_ttl: crate::registrar::CHALLENGE_TTL,
            agent_event_interval: Duration::from_secs(5),
        };
        Ok(Self(Arc::new(Inner {
            store,
            clock,
            agents,
            auth: Authenticator::with_limits(config.auth_limits.clone()),
            signer,
            metrics: Metrics::default(),
            ek_cas,
            settings,
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            again: Mutex::new(HashSet::new()),
            agent_events: Mutex::new(HashMap::new()),
            flavor_cache: Mutex::new(None),
            labeller_metrics: std::sync::OnceLock::new(),
        })))
    }

    /// Whether an agent event of `host` may schedule an attestation now (at most one per
    /// [`Settings::agent_event_interval`]); records it when it may.
    pub fn agent_event_due(&self, host: &str) -> bool {
        let Ok(mut m) = self.agent_events.lock() else {
            return true;
        };
        let now = Instant::now();
        let interval = self.settings.agent_event_interval;
        if m.get(host)
            .is_some_and(|t| now.duration_since(*t) < interval)
        {
            return false;
        }
        if m.len() >= MAX_EVENT_HOSTS {
            m.retain(|_, t| now.duration_since(*t) < interval);
            if m.len() >= MAX_EVENT_HOSTS {
                m.clear();
            }
        }
        m.insert(host.to_string(), now);
        true
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        millis(self.clock.now())
    }
}
