//! Configuration: command-line flags, each also settable from the environment.
//!
//! Flag names are the interface the acceptance checks use (`--listen`, `--db`, `--state-dir`,
//! `--tls-cert`, `--tls-key`, `--ek-ca-dir`, `--attest-interval`, `--report-validity`,
//! `--report-retention`, `--change-retention`); the
//! account variables are the runbook's (`MTWILSON_API_USERNAME` / `MTWILSON_API_PASSWORD` for
//! the agent account) plus `NODETRUST_ADMIN_USERNAME` / `NODETRUST_ADMIN_PASSWORD` for the
//! first admin. Secrets are never printed: [`Config`]'s `Debug` redacts them.
//!
//! Precedence: flags, then environment, then the TOML file given with `--config` (keys are the
//! flag names in snake case: `listen = "0.0.0.0:8443"`, `attest_interval = "30s"`), then the
//! defaults.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use nodetrust_labeller::args::parse_duration;

fn default_random() -> std::sync::Arc<dyn crate::clock::Random> {
    std::sync::Arc::new(crate::clock::SystemRandom)
}

/// `nodetrust-server` flags.
#[derive(Clone, Parser)]
#[command(
    name = "nodetrust-server",
    version,
    about = "Trust Server: registers TPM hosts, attests them, and serves verdicts."
)]
pub struct Config {
    /// Address and port of the HTTPS API.
    #[arg(long, env = "NODETRUST_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Database URL: `sqlite:///path/server.db` (embedded, default) or
    /// `postgres://user@host/db` (several replicas share the work).
    #[arg(
        long,
        env = "NODETRUST_DB",
        default_value = "sqlite:///var/lib/nodetrust/server.db"
    )]
    pub db: String,
    /// Directory for generated state (the self-signed TLS pair).
    #[arg(
        long,
        env = "NODETRUST_STATE_DIR",
        default_value = "/var/lib/nodetrust"
    )]
    pub state_dir: PathBuf,
    /// TLS certificate chain (PEM). With `--tls-key`; when both are absent a self-signed pair is
    /// generated into the state dir.
    #[arg(long, env = "NODETRUST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "NODETRUST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Directory of PEM CA certificates (roots and intermediates) of TPM manufacturers: a host
    /// whose EK certificate chains to one of them may register.
    #[arg(long, env = "NODETRUST_EK_CA_DIR")]
    pub ek_ca_dir: Option<PathBuf>,
    /// How often each host is attested (a jitter of up to 10% is added).
    #[arg(long, env = "NODETRUST_ATTEST_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub attest_interval: Duration,
    /// How long a verdict holds; after that, without a new attestation, the host is `unknown`.
    #[arg(long, env = "NODETRUST_REPORT_VALIDITY", default_value = "10m", value_parser = parse_duration)]
    pub report_validity: Duration,
    /// How long attestation reports are kept; older ones are deleted, except each registered
    /// host's latest. At least `--report-validity`. A kept report takes about 1.1 kB: with a
    /// 60 s interval, 7 days is about 11 MB per host (docs/SERVER.md, "Retention").
    #[arg(long, env = "NODETRUST_REPORT_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub report_retention: Duration,
    /// How long entries of the change feed (the `changes` table) are kept; older ones are
    /// deleted. At least `--report-validity`.
    #[arg(long, env = "NODETRUST_CHANGE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub change_retention: Duration,
    /// Timeout of one quote request to an agent.
    #[arg(long, env = "NODETRUST_AGENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub agent_timeout: Duration,
    /// Most attestations in flight at once.
    #[arg(long, env = "NODETRUST_ATTEST_CONCURRENCY", default_value_t = 64)]
    pub attest_concurrency: usize,
    /// Threads that serve the API and run the attestations (default: one for every two
    /// cores, at least one). The database's threads, password checks and report signing run
    /// beside them, and a fleet's usual load is a small part of a core (100,000 hosts every
    /// minute, a sixth), at which fewer threads cost less CPU an attestation: on 2 cores one
    /// thread cost 103 µs an attestation against 130 for two, and registered 100,000 hosts at
    /// once in about 41 s (docs/PERFORMANCE.md).
    #[arg(long, env = "NODETRUST_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "NODETRUST_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Most client connections open at once; more are closed as they arrive.
    #[arg(long, env = "NODETRUST_MAX_CONNECTIONS", default_value_t = crate::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Close a client connection that brings no complete request head for this long: after
    /// its TLS handshake, between its requests (kept alive), or while it dribbles its headers.
    #[arg(long, env = "NODETRUST_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Name of this replica (for leases; default: host name and process id).
    #[arg(long, env = "NODETRUST_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// First admin account's user name.
    #[arg(long, env = "NODETRUST_ADMIN_USERNAME")]
    pub admin_username: Option<String>,
    /// First admin account's password.
    #[arg(long, env = "NODETRUST_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// The agent account's user name (the runbook's ConfigMap).
    #[arg(long, env = "MTWILSON_API_USERNAME")]
    pub agent_username: Option<String>,
    /// The agent account's password (the runbook's Secret).
    #[arg(long, env = "MTWILSON_API_PASSWORD", hide_env_values = true)]
    pub agent_password: Option<String>,
    /// User name the server presents to agents' APIs.
    #[arg(long, env = "TRUSTAGENT_ADMIN_USERNAME")]
    pub trustagent_username: Option<String>,
    /// Password the server presents to agents' APIs.
    #[arg(long, env = "TRUSTAGENT_ADMIN_PASSWORD", hide_env_values = true)]
    pub trustagent_password: Option<String>,
    /// Turn the Kubernetes labeller on with this kubeconfig (the node label
    /// `ibm-cloud.kubernetes.io/is-trusted`). A plain `http://` server without credentials works.
    #[arg(long, env = "NODETRUST_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Turn the Kubernetes labeller on with the pod's service account (in-cluster).
    #[arg(long, env = "NODETRUST_LABELLER")]
    pub labeller: bool,
    /// Namespace of the labeller's leader Lease (default: the pod's namespace, else kubx-cit).
    #[arg(long, env = "NODETRUST_LABELLER_NAMESPACE")]
    pub labeller_namespace: Option<String>,
    /// How long the labeller's leader Lease lasts without renewal (another replica takes over
    /// after it).
    #[arg(long, env = "NODETRUST_LABELLER_LEASE", default_value = "15s", value_parser = parse_duration)]
    pub labeller_lease: Duration,
    /// Labelling options.
    #[command(flatten)]
    pub label: nodetrust_labeller::args::LabelArgs,
    /// Config file (TOML; keys are the flag names in snake case). Flags and environment win
    /// over it.
    #[arg(long, env = "NODETRUST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bounds of password checking and login back-off (not a flag: the defaults, or a test's).
    #[arg(skip)]
    pub auth_limits: crate::auth::AuthLimits,
    /// Where nonces and registration secrets come from (not a flag: the system's CSPRNG, or a
    /// test's pinned source).
    #[arg(skip = default_random())]
    pub random: std::sync::Arc<dyn crate::clock::Random>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags (or `--help` / `--version`, which clap prints).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The config file.
    #[error("config file {path}: {message}")]
    File {
        /// File.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Settings that contradict each other.
    #[error("{0}")]
    Invalid(String),
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("db", &redact_url(&self.db))
            .field("state_dir", &self.state_dir)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("ek_ca_dir", &self.ek_ca_dir)
            .field("attest_interval", &self.attest_interval)
            .field("report_validity", &self.report_validity)
            .field("report_retention", &self.report_retention)
            .field("change_retention", &self.change_retention)
            .field("agent_timeout", &self.agent_timeout)
            .field("attest_concurrency", &self.attest_concurrency)
            .field("worker_threads", &self.worker_threads)
            .field("admin_username", &self.admin_username)
            .field("admin_password", &redact(&self.admin_password))
            .field("agent_username", &self.agent_username)
            .field("agent_password", &redact(&self.agent_password))
            .field("trustagent_username", &self.trustagent_username)
            .field("trustagent_password", &redact(&self.trustagent_password))
            .field("kubeconfig", &self.kubeconfig)
            .field("labeller", &self.labeller)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A database URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = url.get(scheme + 3..at).unwrap_or_default();
            match creds.split_once(':') {
                Some((user, _)) => format!(
                    "{}{user}:<redacted>{}",
                    url.get(..scheme + 3).unwrap_or_default(),
                    url.get(at..).unwrap_or_default()
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The async workers on `cores` cores when not set: half of them (rounded down), at least one.
/// Tokio's own default is one a core; the server's other threads (SQLite's connections and
/// report writer, the blocking pool's password checks and signatures, PostgreSQL when it runs
/// on the same machine) take the rest (docs/PERFORMANCE.md, "Scale, twenty-third round").
pub fn default_worker_threads(cores: usize) -> usize {
    (cores / 2).max(1)
}

impl Config {
    /// The async worker threads to run: `--worker-threads`, or one for every two cores this
    /// process may use, at least one ([`default_worker_threads`]).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || {
                default_worker_threads(
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
                )
            },
            usize::from,
        )
    }

    /// Reads flags, environment and the config file.
    pub fn load_from(
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    ) -> Result<Self, ConfigError> {
        let mut argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let matches = Self::command().try_get_matches_from(argv.clone())?;
        let first = Self::from_arg_matches(&matches)?;
        let Some(path) = first.config.clone() else {
            first.validate()?;
            return Ok(first);
        };
        let file_err = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| file_err(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        let known: Vec<String> = Self::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for (key, value) in table {
            if key == "config" || !known.contains(&key) {
                return Err(file_err(format!("unknown setting {key:?}")));
            }
            if matches!(
                matches.value_source(&key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(file_err(format!(
                        "{key}: expected a string or a number, found {}",
                        other.type_str()
                    )))
                }
            };
            argv.push(format!("--{}", key.replace('_', "-")).into());
            argv.push(value.into());
        }
        let matches = Self::command().try_get_matches_from(argv)?;
        let config = Self::from_arg_matches(&matches)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks settings against each other: each retention is at least `--report-validity`
    /// (a report must outlive its validity).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.label.validate().map_err(ConfigError::Invalid)?;
        let validity = self.report_validity;
        for (flag, retention) in [
            ("--report-retention", self.report_retention),
            ("--change-retention", self.change_retention),
        ] {
            if retention < validity {
                return Err(ConfigError::Invalid(format!(
                    "{flag} ({}) is shorter than --report-validity ({}): a report must outlive its validity",
                    humantime::format_duration(retention),
                    humantime::format_duration(validity)
                )));
            }
        }
        // Several replicas (PostgreSQL): a crashed replica's hosts must be attested again by
        // another before their verdicts expire.
        if self.db.starts_with("postgres") {
            let gap = crate::timing::worst_takeover_gap(self.attest_interval);
            if validity <= gap {
                return Err(ConfigError::Invalid(format!(
                    "--report-validity ({}) is too short for --attest-interval ({}) with several replicas: \
                     when a replica dies its hosts are attested again by another within {} \
                     (the interval plus 10 % jitter, the time to notice the crash, and the attestation), \
                     so their verdicts would expire meanwhile; give --report-validity more than {} \
                     or a shorter --attest-interval",
                    humantime::format_duration(validity),
                    humantime::format_duration(self.attest_interval),
                    humantime::format_duration(gap),
                    humantime::format_duration(gap),
                )));
            }
        }
        Ok(())
    }

    /// A configuration for tests: defaults, with the given database and state dir.
    pub fn for_tests(db: &str, state_dir: PathBuf) -> Self {
        let mut c = Self::parse_from(["nodetrust-server"]);
        c.db = db.to_string();
        c.state_dir = state_dir;
        c
    }

    /// The replica name for leases.
    pub fn replica(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_interface() {
        let c = Config::parse_from(["nodetrust-server"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.db, "sqlite:///var/lib/nodetrust/server.db");
        assert_eq!(c.attest_interval, Duration::from_secs(60));
        assert_eq!(c.report_validity, Duration::from_secs(600));
        assert_eq!(c.report_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.change_retention, Duration::from_secs(7 * 86_400));
        let c = Config::parse_from([
            "nodetrust-server",
            "--attest-interval",
            "5s",
            "--report-validity",
            "2m",
        ]);
        assert_eq!(c.attest_interval, Duration::from_secs(5));
        assert_eq!(c.report_validity, Duration::from_secs(120));
    }

    #[test]
    fn worker_threads_default_to_one_for_two_cores_and_are_at_least_one() {
        for (cores, workers) in [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8), (17, 8)] {
            assert_eq!(default_worker_threads(cores), workers, "{cores} cores");
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let c = Config::parse_from(["nodetrust-server"]);
        assert_eq!(c.worker_threads(), default_worker_threads(cores));
        let c = Config::parse_from(["nodetrust-server", "--worker-threads", "3"]);
        assert_eq!(c.worker_threads(), 3);
        for refused in ["0", "-1", "many"] {
            let flag = format!("--worker-threads={refused}");
            let e = Config::try_parse_from(["nodetrust-server", flag.as_str()]).unwrap_err();
            assert!(e.to_string().contains("--worker-threads"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "worker_threads = 2\n").unwrap();
        let f = file.display().to_string();
        let c = Config::load_from(["nodetrust-server", "--config", &f]).unwrap();
        assert_eq!(c.worker_threads(), 2);
    }

    #[test]
    fn config_file_fills_what_flags_do_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9443\"\nattest_interval = \"30s\"\nattest_concurrency = 8\nreport_validity = \"5m\"\n").unwrap();
        let f = file.display().to_string();
        let c = Config::load_from([
            "nodetrust-server",
            "--config",
            &f,
            "--report-validity",
            "1m",
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9443");
        assert_eq!(c.attest_interval, Duration::from_secs(30));
        assert_eq!(c.attest_concurrency, 8);
        assert_eq!(c.report_validity, Duration::from_secs(60), "the flag wins");
        std::fs::write(&file, "colour = \"red\"\n").unwrap();
        assert!(Config::load_from(["nodetrust-server", "--config", &f])
            .unwrap_err()
            .to_string()
            .contains("unknown setting"));
    }

    #[test]
    fn retention_shorter_than_validity_is_refused() {
        let refused = |args: &[&str]| {
            let argv = ["nodetrust-server"].iter().chain(args).copied();
            match Config::load_from(argv) {
                Err(ConfigError::Invalid(m)) => m,
                other => panic!("{args:?} accepted: {other:?}"),
            }
        };
        let m = refused(&["--report-retention", "5m"]);
        assert!(
            m.contains("--report-retention (5m)") && m.contains("--report-validity (10m)"),
            "{m}"
        );
        let m = refused(&["--report-validity", "2h", "--change-retention", "1h"]);
        assert!(m.contains("--change-retention (1h)"), "{m}");
        // Equal is enough; longer too.
        let c = Config::load_from([
            "nodetrust-server",
            "--report-validity",
            "1h",
            "--report-retention",
            "1h",
            "--change-retention",
            "2days",
        ])
        .unwrap();
        assert_eq!(c.report_retention, Duration::from_secs(3600));
        assert_eq!(c.change_retention, Duration::from_secs(2 * 86_400));
        assert!(Config::load_from(["nodetrust-server", "--report-retention", "soon"]).is_err());
        // From the config file as well.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "report_retention = \"1m\"\n").unwrap();
        let f = file.display().to_string();
        assert!(matches!(
            Config::load_from(["nodetrust-server", "--config", &f]),
            Err(ConfigError::Invalid(_))
        ));
        std::fs::write(&file, "report_retention = \"30d\"\n").unwrap();
        let c = Config::load_from(["nodetrust-server", "--config", &f]).unwrap();
        assert_eq!(c.report_retention, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn replicas_whose_takeover_outlasts_a_verdict_are_refused() {
        let load = |interval: &str, validity: &str, db: &str| {
            Config::load_from([
                "nodetrust-server",
                "--db",
                db,
                "--attest-interval",
                interval,
                "--report-validity",
                validity,
            ])
        };
        let pg = "postgres://nodetrust@db/nodetrust";
        // The and the demo's settings hold a takeover.
        assert!(load("2s", "20s", pg).is_ok());
        assert!(load("5s", "20s", pg).is_ok());
        assert!(load("60s", "10m", pg).is_ok());
        // A verdict living less than an interval and a takeover: refused, and said why.
        match load("60s", "1m", pg) {
            Err(ConfigError::Invalid(m)) => assert!(
                m.contains("--report-validity (1m) is too short for --attest-interval (1m)")
                    && m.contains("with several replicas"),
                "{m}"
            ),
            other => panic!("accepted: {other:?}"),
        }
        assert!(matches!(
            load("10s", "12s", pg),
            Err(ConfigError::Invalid(_))
        ));
        // One SQLite server has no takeover: a short validity is its operator's choice.
        assert!(load("60s", "4s", "sqlite:///tmp/x.db").is_ok());
    }

    #[test]
    fn secrets_are_redacted() {
        let mut c = Config::parse_from(["nodetrust-server", "--db", "postgres://u:hunter2@db/x"]);
        c.agent_password = Some("s3cret".into());
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
