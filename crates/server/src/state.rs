//! The state shared by request handlers and the attestation engine.

use std::sync::Arc;
use std::time::Duration;

use crate::agent_client::AgentConnector;
use crate::auth::{ensure_account, Authenticator, Role};
use crate::clock::Clock;
use crate::config::Config;
use crate::ekca::EkCaBundle;
use crate::jws::{self, Signer};
use crate::metrics::Metrics;
use crate::store::{millis, Store};

/// How long a registration challenge stays open by default.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);

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

/// Everything shared.
#[derive(Debug)]
pub struct Inner {
    /// The store.
    pub store: Store,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Random bytes (nonces, registration secrets).
    pub random: Arc<dyn crate::clock::Random>,
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
    /// The scheduler's state in this process (in flight, due again, wake-ups, agent events).
    pub queue: crate::queue::Queue,
    /// The embedded labeller's metrics, once it runs.
    pub labeller_metrics: std::sync::OnceLock<Arc<nodetrust_labeller::Metrics>>,
    /// The policy the embedded labeller runs with, once it runs (the fleet view's LABEL column).
    pub labeller_policy: std::sync::OnceLock<nodetrust_labeller::Policy>,
    /// Every host, kept in memory for lists (the fleet view, `GET /mtwilson/v2/hosts`).
    pub host_list: crate::hostlist::HostList,
    /// The flavors, read and written only through here (it keeps appraisal's cache right).
    pub flavors: crate::flavors::Flavors,
    /// Runtime (IMA) policies of RUNTIME flavors, compiled once per flavor.
    pub runtime_policies: crate::policy_cache::PolicyCache,
    /// Open push-mode challenges ([`crate::push`]).
    pub push: crate::push_slots::PushSlots,
    /// The pinned AKs of hosts attested lately, parsed once ([`crate::ak_cache`]).
    pub ak_cache: crate::ak_cache::AkCache,
    /// Each host's last trusted appraisal, reused while its inputs are unchanged
    /// ([`crate::reuse`]).
    pub appraisals: crate::reuse::Appraisals,
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
            challenge_ttl: CHALLENGE_TTL,
            agent_event_interval: Duration::from_secs(5),
        };
        let flavors = crate::flavors::Flavors::new(store.clone(), Arc::clone(&clock));
        let auth = Authenticator::with_clock(config.auth_limits.clone(), Arc::clone(&clock));
        Ok(Self(Arc::new(Inner {
            store,
            clock,
            random: Arc::clone(&config.random),
            agents,
            auth,
            signer,
            metrics: Metrics::default(),
            ek_cas,
            settings,
            queue: crate::queue::Queue::default(),
            flavors,
            runtime_policies: crate::policy_cache::PolicyCache::new(),
            labeller_metrics: std::sync::OnceLock::new(),
            labeller_policy: std::sync::OnceLock::new(),
            host_list: crate::hostlist::HostList::new(),
            push: crate::push_slots::PushSlots::default(),
            ak_cache: crate::ak_cache::AkCache::default(),
            appraisals: crate::reuse::Appraisals::default(),
        })))
    }

    /// Whether an agent event of `host` may schedule an attestation now (at most one per
    /// [`Settings::agent_event_interval`]); records it when it may.
    pub fn agent_event_due(&self, host: &str) -> bool {
        self.queue.agent_event_due(
            host,
            self.clock.instant(),
            self.settings.agent_event_interval,
        )
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        millis(self.clock.now())
    }
}
