//! Settings: flags win over environment variables, which win over the config file, which wins
//! over the defaults.
//!
//! Environment names are the runbook's where it has one (`TRUSTAGENT_ADMIN_USERNAME`,
//! `MTWILSON_SERVER`, `server_url`, `TPM_OWNER_SECRET`...), `TRUSTAGENT_*` otherwise. Secrets
//! (passwords, the owner secret) have no flag, so they never show in a process list: they come
//! from the environment (a Kubernetes Secret) or the config file. The config file is TOML with
//! the flag names in snake case (see [`FileConfig`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use nodetrust_tpm::auth::Secret;
use nodetrust_tpm::AkAlgorithm;
use serde::Deserialize;

/// Default TCTI: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1443";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nodetrust";
/// Default measured-boot event log.
pub const DEFAULT_EVENTLOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Default IMA log.
pub const DEFAULT_IMA_LOG: &str = "/sys/kernel/security/ima/binary_runtime_measurements";
/// Config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/nodetrust/agent.toml";
/// Server port when `MTWILSON_SERVER` is set without `MTWILSON_SERVER_PORT`.
pub const DEFAULT_SERVER_PORT: u16 = 8443;

const ENV_HELP: &str = "\
Environment only (secrets have no flag; config file keys in brackets):
  TRUSTAGENT_ADMIN_USERNAME  user for HTTP basic auth on /v2/* (required) [admin_username]
  TRUSTAGENT_ADMIN_PASSWORD  its password (required) [admin_password]
  MTWILSON_API_USERNAME      the agent's account at the Trust Server [api_username]
  MTWILSON_API_PASSWORD      its password [api_password]
  MTWILSON_SERVER            Trust Server host, used when server_url is unset [mtwilson_server]
  MTWILSON_SERVER_PORT       Trust Server port [default: 8443] [mtwilson_server_port]
  TPM_OWNER_SECRET           owner/endorsement auth value, when the TPM has one; `hex:...`
                             for raw bytes; the agent never takes ownership
                             [default: none] [tpm_owner_secret]
  RUST_LOG                   log filter [default: info]

Precedence: flags > environment > config file > defaults. Without a server
(server_url or MTWILSON_SERVER) the agent serves its API and does not register.";

/// Command line. Every flag can also be set through the environment variable shown, or the
/// config file key of the same name (snake case).
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "nodetrust-agent", version, about = "nodetrust Trust Agent: serves TPM evidence over HTTPS and registers the node with the Trust Server.", after_help = ENV_HELP)]
pub struct Cli {
    /// TPM access (TCTI): `device:/dev/tpmrm0` (the kernel resource manager), `tabrmd`, or
    /// `swtpm:host=H,port=P` (a software TPM: never for production) [default: device:/dev/tpmrm0]
    #[arg(long, env = "TRUSTAGENT_TCTI", value_name = "TCTI")]
    pub tcti: Option<String>,
    /// Address and port of the HTTPS API [default: 0.0.0.0:1443]
    #[arg(long, env = "TRUSTAGENT_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Directory for the AK blobs and the generated TLS certificate; must persist across restarts
    /// and reboots [default: /var/lib/nodetrust]
    #[arg(long, env = "TRUSTAGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Measured-boot event log served with quotes; absent is fine
    /// [default: /sys/kernel/security/tpm0/binary_bios_measurements]
    #[arg(long, env = "TRUSTAGENT_EVENTLOG", value_name = "PATH")]
    pub eventlog: Option<PathBuf>,
    /// IMA runtime measurement log (binary), served from the entry the server asks for (hosts
    /// with a RUNTIME flavor); absent is fine: no IMA
    /// [default: /sys/kernel/security/ima/binary_runtime_measurements]
    #[arg(long, env = "TRUSTAGENT_IMA_LOG", value_name = "PATH")]
    pub ima_log: Option<PathBuf>,
    /// Host name reported to the server (the Kubernetes node name) [default: the system host name]
    #[arg(long, env = "TRUSTAGENT_HOST_NAME", value_name = "NAME")]
    pub host_name: Option<String>,
    /// Hardware UUID reported to the server [default: DMI product_uuid (the node's systemUUID), or a
    /// UUID derived from /etc/machine-id, with a warning, where there is no DMI]
    #[arg(long, env = "TRUSTAGENT_HARDWARE_UUID", value_name = "UUID")]
    pub hardware_uuid: Option<String>,
    /// URL the server uses to reach this agent [default: https://HOST_NAME:LISTEN_PORT]
    #[arg(long, env = "TRUSTAGENT_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Trust Server base URL, e.g. https://10.0.0.1:8443 [default: https://$MTWILSON_SERVER:$MTWILSON_SERVER_PORT
    /// when MTWILSON_SERVER is set; else none: no registration]
    #[arg(long, env = "server_url", value_name = "URL")]
    pub server_url: Option<String>,
    /// CA certificate(s) (PEM) that the Trust Server's TLS certificate must chain to, or the
    /// server's own certificate (even self-signed CA:TRUE), trusted byte for byte [default: none]
    #[arg(long, env = "TRUSTAGENT_SERVER_CA", value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// SHA-256 fingerprint (hex, colons allowed) of the Trust Server's TLS certificate, instead of
    /// --server-ca [default: none]
    #[arg(long, env = "TRUSTAGENT_SERVER_PIN", value_name = "SHA256")]
    pub server_pin: Option<String>,
    /// TLS certificate chain (PEM) for the API [default: generated self-signed into the state dir]
    #[arg(long, env = "TRUSTAGENT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the API [default: generated with the certificate]
    #[arg(long, env = "TRUSTAGENT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Algorithm of the AK created on first start: `rsa2048` (RSASSA-SHA256, most compatible) or
    /// `ecc-p256` (ECDSA-SHA256, faster) [default: rsa2048]
    #[arg(long, env = "TRUSTAGENT_AK_ALGORITHM", value_name = "ALG")]
    pub ak_algorithm: Option<String>,
    /// How the Trust Server attests this node, chosen at registration: `pull` (the server
    /// connects to this agent's API) or `push` (the agent asks the server for a challenge and
    /// posts its evidence on the server's schedule; for nodes that accept no inbound
    /// connection) [default: pull]
    #[arg(long, env = "TRUSTAGENT_MODE", value_name = "MODE")]
    pub mode: Option<String>,
    /// Most API connections open at once; more are closed as they arrive [default: 256]
    #[arg(long, env = "TRUSTAGENT_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Close an API connection that brings no complete request head for this long: after its
    /// TLS handshake, between its requests (kept alive), or while it dribbles its headers
    /// (e.g. `90s`, `2m`) [default: 90s]
    #[arg(long, env = "TRUSTAGENT_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Config file (TOML, keys as the flags in snake case) [default: /etc/nodetrust/agent.toml if it exists]
    #[arg(long, env = "TRUSTAGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do instead of serving the API.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands. Flags go before the subcommand: `nodetrust-agent --tcti=... check`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Check that the agent can use the TPM (device present, TPM answers, not in
    /// dictionary-attack lockout, endorsement hierarchy usable, logs readable) and exit:
    /// 0 when every check passes, 1 when one fails, 2 on bad arguments.
    Check,
}

/// The config file: every flag (snake case) and the environment-only settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See `--tcti`.
    pub tcti: Option<String>,
    /// See `--max-connections`.
    pub max_connections: Option<usize>,
    /// See `--idle-timeout`.
    pub idle_timeout: Option<String>,
    /// See `--listen`.
    pub listen: Option<SocketAddr>,
    /// See `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// See `--eventlog`.
    pub eventlog: Option<PathBuf>,
    /// See `--ima-log`.
    pub ima_log: Option<PathBuf>,
    /// See `--host-name`.
    pub host_name: Option<String>,
    /// See `--hardware-uuid`.
    pub hardware_uuid: Option<String>,
    /// See `--advertise-url`.
    pub advertise_url: Option<String>,
    /// See `--server-url`.
    pub server_url: Option<String>,
    /// See `--server-ca`.
    pub server_ca: Option<PathBuf>,
    /// See `--server-pin`.
    pub server_pin: Option<String>,
    /// See `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// See `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// See `--ak-algorithm`.
    pub ak_algorithm: Option<String>,
    /// See `--mode`.
    pub mode: Option<String>,
    /// `TRUSTAGENT_ADMIN_USERNAME`.
    pub admin_username: Option<String>,
    /// `TRUSTAGENT_ADMIN_PASSWORD`.
    pub admin_password: Option<String>,
    /// `MTWILSON_API_USERNAME`.
    pub api_username: Option<String>,
    /// `MTWILSON_API_PASSWORD`.
    pub api_password: Option<String>,
    /// `MTWILSON_SERVER`.
    pub mtwilson_server: Option<String>,
    /// `MTWILSON_SERVER_PORT`.
    pub mtwilson_server_port: Option<u16>,
    /// `TPM_OWNER_SECRET`.
    pub tpm_owner_secret: Option<String>,
}

/// A configuration mistake, said so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("config file {path}: {detail}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// A setting is missing or wrong.
    #[error("{0}")]
    Invalid(String),
}

/// User name and password for HTTP basic auth. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How the agent trusts the Trust Server's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// Certificates must chain to these CA certificates (PEM file).
    Ca(PathBuf),
    /// The end-entity certificate's SHA-256.
    Pin([u8; 32]),
}

/// Where and how to register.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Base URL (`https://host:port`).
    pub url: String,
    /// TLS trust.
    pub trust: ServerTrust,
    /// The agent's account.
    pub credentials: Credentials,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// TCTI.
    pub tcti: String,
    /// API listen address.
    pub listen: SocketAddr,
    /// State directory.
    pub state_dir: PathBuf,
    /// Event log path.
    pub eventlog: PathBuf,
    /// IMA log path.
    pub ima_log: PathBuf,
    /// Explicit host name.
    pub host_name: Option<String>,
    /// Explicit hardware UUID.
    pub hardware_uuid: Option<String>,
    /// Explicit advertise URL.
    pub advertise_url: Option<String>,
    /// The Trust Server, when configured.
    pub server: Option<ServerSettings>,
    /// API certificate file.
    pub tls_cert: Option<PathBuf>,
    /// API key file.
    pub tls_key: Option<PathBuf>,
    /// AK algorithm.
    pub ak_algorithm: AkAlgorithm,
    /// Pull or push.
    pub mode: nodetrust_proto::push::AgentMode,
    /// Most API connections open at once.
    pub max_connections: usize,
    /// Time an API connection may go without a complete request head.
    pub idle_timeout: std::time::Duration,
    /// API basic-auth credentials.
    pub admin: Credentials,
    /// Owner / endorsement auth.
    pub owner_secret: Secret,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Parses a SHA-256 fingerprint in hex, with or without colons.
pub fn parse_pin(s: &str) -> Result<[u8; 32], ConfigError> {
    let clean: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bytes = hex::decode(&clean)
        .map_err(|_| ConfigError::Invalid(format!("--server-pin {s:?} is not hex")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        ConfigError::Invalid(format!(
            "--server-pin has {} bytes; a SHA-256 has 32",
            bytes.len()
        ))
    })
}

pub(crate) fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

impl Settings {
    /// Resolves settings from parsed flags (clap has already applied the environment to them),
    /// the environment-only variables read through `env`, and the config file.
    pub fn resolve(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(p) => read_file_config(p)?,
            None if Path::new(DEFAULT_CONFIG).exists() => {
                read_file_config(Path::new(DEFAULT_CONFIG))?
            }
            None => FileConfig::default(),
        };
        let env = |k: &str| non_empty(env(k));

        let admin_username = env("TRUSTAGENT_ADMIN_USERNAME").or(non_empty(file.admin_username));
        let admin_password = env("TRUSTAGENT_ADMIN_PASSWORD").or(non_empty(file.admin_password));
        let admin = match (admin_username, admin_password) {
            (Some(username), Some(password)) => Credentials { username, password },
            _ => {
                return Err(ConfigError::Invalid(
                    "TRUSTAGENT_ADMIN_USERNAME and TRUSTAGENT_ADMIN_PASSWORD must be set: the API serves only \
                     authenticated callers"
                        .into(),
                ))
            }
        };

        let owner_secret = match env("TPM_OWNER_SECRET").or(non_empty(file.tpm_owner_secret)) {
            Some(s) => Secret::parse(&s).map_err(|e| ConfigError::Invalid(e.to_string()))?,
            None => Secret::default(),
        };

        let ak_algorithm = match non_empty(cli.ak_algorithm).or(non_empty(file.ak_algorithm)) {
            Some(s) => AkAlgorithm::from_name(&s).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--ak-algorithm {s:?}: expected rsa2048 or ecc-p256"
                ))
            })?,
            None => AkAlgorithm::default(),
        };

        let mode = match non_empty(cli.mode).or(non_empty(file.mode)) {
            Some(s) => match s.trim().to_ascii_lowercase().as_str() {
                "pull" => nodetrust_proto::push::AgentMode::Pull,
                "push" => nodetrust_proto::push::AgentMode::Push,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "--mode {s:?}: expected pull or push"
                    )))
                }
            },
            None => nodetrust_proto::push::AgentMode::Pull,
        };

        let server_url = match non_empty(cli.server_url).or(non_empty(file.server_url)) {
            Some(u) => Some(u),
            None => {
                let port = match env("MTWILSON_SERVER_PORT") {
                    Some(p) => Some(p.trim().parse::<u16>().map_err(|_| {
                        ConfigError::Invalid(format!(
                            "MTWILSON_SERVER_PORT {p:?} is not a port number"
                        ))
                    })?),
                    None => file.mtwilson_server_port,
                };
                env("MTWILSON_SERVER")
                    .or(non_empty(file.mtwilson_server))
                    .map(|h| {
                        format!(
                            "https://{}:{}",
                            h.trim(),
                            port.unwrap_or(DEFAULT_SERVER_PORT)
                        )
                    })
            }
        };
        let server = match server_url {
            None => None,
            Some(url) => {
                if !url.starts_with("https://") {
                    return Err(ConfigError::Invalid(format!(
                        "server_url {url:?} must start with https://"
                    )));
                }
                let trust = match (cli.server_ca.or(file.server_ca), non_empty(cli.server_pin).or(non_empty(file.server_pin))) {
                    (_, Some(pin)) => ServerTrust::Pin(parse_pin(&pin)?),
                    (Some(ca), None) => ServerTrust::Ca(ca),
                    (None, None) => {
                        return Err(ConfigError::Invalid(
                            "a Trust Server is configured but not how to trust its TLS certificate: set --server-ca FILE \
                             or --server-pin SHA256"
                                .into(),
                        ))
                    }
                };
                let username = env("MTWILSON_API_USERNAME").or(non_empty(file.api_username));
                let password = env("MTWILSON_API_PASSWORD").or(non_empty(file.api_password));
                let (Some(username), Some(password)) = (username, password) else {
                    return Err(ConfigError::Invalid(
                        "a Trust Server is configured: MTWILSON_API_USERNAME and MTWILSON_API_PASSWORD must be set".into(),
                    ));
                };
                Some(ServerSettings {
                    url,
                    trust,
                    credentials: Credentials { username, password },
                })
            }
        };

        let tls_cert = cli.tls_cert.or(file.tls_cert);
        let tls_key = cli.tls_key.or(file.tls_key);
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "--tls-cert and --tls-key go together".into(),
            ));
        }

        let max_connections = cli
            .max_connections
            .or(file.max_connections)
            .unwrap_or(crate::server::MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ConfigError::Invalid(
                "--max-connections must be at least 1".into(),
            ));
        }
        let idle_timeout = match non_empty(cli.idle_timeout).or(non_empty(file.idle_timeout)) {
            None => crate::server::IDLE_TIMEOUT,
            Some(t) => match humantime::parse_duration(t.trim()) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "--idle-timeout {t:?} is not a duration above zero (e.g. 90s, 2m)"
                    )))
                }
            },
        };

        let listen = match (cli.listen, file.listen) {
            (Some(l), _) | (None, Some(l)) => l,
            (None, None) => DEFAULT_LISTEN
                .parse()
                .map_err(|_| ConfigError::Invalid("default listen address".into()))?,
        };

        Ok(Self {
            tcti: non_empty(cli.tcti)
                .or(non_empty(file.tcti))
                .unwrap_or_else(|| DEFAULT_TCTI.to_string()),
            listen,
            state_dir: cli
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            eventlog: cli
                .eventlog
                .or(file.eventlog)
                .unwrap_or_else(|| DEFAULT_EVENTLOG.into()),
            ima_log: cli
                .ima_log
                .or(file.ima_log)
                .unwrap_or_else(|| DEFAULT_IMA_LOG.into()),
            host_name: non_empty(cli.host_name).or(non_empty(file.host_name)),
            hardware_uuid: non_empty(cli.hardware_uuid).or(non_empty(file.hardware_uuid)),
            advertise_url: non_empty(cli.advertise_url).or(non_empty(file.advertise_url)),
            server,
            tls_cert,
            tls_key,
            ak_algorithm,
            mode,
            max_connections,
            idle_timeout,
            admin,
            owner_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a panic is a failed test"
    )]
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const ADMIN: &[(&str, &str)] = &[
        ("TRUSTAGENT_ADMIN_USERNAME", "admin"),
        ("TRUSTAGENT_ADMIN_PASSWORD", "pw"),
    ];

    #[test]
    fn mode_is_pull_unless_push_is_asked() {
        let cli = |mode: Option<&str>| Cli {
            config: Some("/dev/null".into()),
            mode: mode.map(str::to_string),
            ..Cli::default()
        };
        use nodetrust_proto::push::AgentMode;
        let mode = |m| Settings::resolve(cli(m), &env_of(ADMIN)).map(|s| s.mode);
        assert_eq!(mode(None).unwrap(), AgentMode::Pull);
        assert_eq!(mode(Some("pull")).unwrap(), AgentMode::Pull);
        assert_eq!(mode(Some("PUSH")).unwrap(), AgentMode::Push);
        let e = mode(Some("poll")).unwrap_err().to_string();
        assert!(
            e.contains("--mode \"poll\"") && e.contains("pull or push"),
            "{e}"
        );
    }

    #[test]
    fn connection_limits() {
        let cli = |max: Option<usize>, idle: Option<&str>| Cli {
            config: Some("/dev/null".into()),
            max_connections: max,
            idle_timeout: idle.map(str::to_string),
            ..Cli::default()
        };
        let s = Settings::resolve(cli(None, None), &env_of(ADMIN)).unwrap();
        assert_eq!(s.max_connections, crate::server::MAX_CONNECTIONS);
        assert_eq!(s.idle_timeout, crate::server::IDLE_TIMEOUT);
        let s = Settings::resolve(cli(Some(8), Some("2m")), &env_of(ADMIN)).unwrap();
        assert_eq!(s.max_connections, 8);
        assert_eq!(s.idle_timeout, std::time::Duration::from_secs(120));
        for (max, idle) in [(Some(0), None), (None, Some("soon")), (None, Some("0s"))] {
            assert!(Settings::resolve(cli(max, idle), &env_of(ADMIN)).is_err());
        }
    }

    #[test]
    fn defaults_and_admin_required() {
        let cli = Cli {
            config: Some("/dev/null".into()),
            ..Cli::default()
        };
        let s = Settings::resolve(cli.clone(), &env_of(ADMIN)).unwrap();
        assert_eq!(s.tcti, DEFAULT_TCTI);
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert!(s.server.is_none());
        assert!(!format!("{s:?}").contains("\"pw\""));
        assert!(Settings::resolve(cli, &env_of(&[])).is_err());
    }

    #[test]
    fn precedence_and_server() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "tcti = \"swtpm:host=127.0.0.1,port=1\"\nlisten = \"127.0.0.1:9\"\nadmin_username = \"f\"\nadmin_password = \"f\"\n\
             mtwilson_server = \"10.0.0.1\"\nmtwilson_server_port = 24239\napi_username = \"agent\"\napi_password = \"x\"\n\
             server_pin = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:7".parse().unwrap()),
            ..Cli::default()
        };
        let s = Settings::resolve(cli, &env_of(ADMIN)).unwrap();
        assert_eq!(s.listen.port(), 7, "flag wins over file");
        assert_eq!(
            s.tcti, "swtpm:host=127.0.0.1,port=1",
            "file wins over default"
        );
        assert_eq!(s.admin.username, "admin", "environment wins over file");
        let server = s.server.unwrap();
        assert_eq!(server.url, "https://10.0.0.1:24239");
        assert!(matches!(server.trust, ServerTrust::Pin(_)));

        let cli = Cli {
            config: Some(file),
            server_url: Some("https://a.example:1".into()),
            ..Cli::default()
        };
        let s = Settings::resolve(cli, &env_of(ADMIN)).unwrap();
        assert_eq!(
            s.server.unwrap().url,
            "https://a.example:1",
            "server_url wins over MTWILSON_SERVER"
        );
    }
}
