//! `nodetrust-agent check`: can the agent use this TPM? One line per check on standard output,
//! `PASS|FAIL <check>: <what was seen> [remedy]`, then a verdict line.
//!
//! The checks, in order (a check whose prerequisite failed is reported as not checked):
//! 1. `device` — for a `device:` TCTI, the path exists, is a character device and opens
//!    read-write (the permission a container needs).
//! 2. `tpm answers` — `TPM2_GetCapability` answers (after `TPM2_Startup(CLEAR)` when the TPM was
//!    never started); who made the TPM; a software TPM is named.
//! 3. `dictionary-attack lockout` — `TPMA_PERMANENT.inLockout` and `TPM_PT_LOCKOUT_COUNTER`
//!    against `TPM_PT_MAX_AUTH_FAIL`.
//! 4. `endorsement hierarchy` — enabled, and the EK and AK are created / loaded exactly as the
//!    agent does at start, with the configured `TPM_OWNER_SECRET` (the AK is saved in the state
//!    directory, as the agent would on its first start).
//! 5. `event log` and `IMA log` — readable when configured; an absent log at the default path
//!    is fine (quotes are served without it).
//!
//! Exit status: 0 when every check passes, 1 when one fails, 2 on bad arguments (clap's own
//! status for a bad flag, and ours for a bad setting).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nodetrust_tpm::auth::Secret;
use nodetrust_tpm::probe::{probe, TpmState};
use nodetrust_tpm::tss::is_software_tcti;
use nodetrust_tpm::{AkAlgorithm, Attester as _, TpmError, TssAttester, TssConfig};

use crate::config::{
    read_file_config, Cli, ConfigError, FileConfig, DEFAULT_CONFIG, DEFAULT_EVENTLOG,
    DEFAULT_IMA_LOG, DEFAULT_STATE_DIR, DEFAULT_TCTI,
};

/// Most bytes of a log the check reads (it only proves the log is readable).
const LOG_READ_LIMIT: u64 = 64 * 1024 * 1024;

/// A log path and whether it was configured (flag, environment or file) or is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPath {
    /// The file.
    pub path: PathBuf,
    /// Set explicitly: then it must be readable.
    pub configured: bool,
}

/// The settings the checks use: the TPM-related subset of the agent's settings, resolved with the
/// same precedence (flags > environment > config file > defaults). The admin and server
/// settings are not needed and not required.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// TCTI.
    pub tcti: String,
    /// State directory (AK blobs).
    pub state_dir: PathBuf,
    /// Measured-boot event log.
    pub eventlog: LogPath,
    /// IMA log.
    pub ima_log: LogPath,
    /// Owner / endorsement auth.
    pub owner_secret: Secret,
    /// AK algorithm.
    pub ak_algorithm: AkAlgorithm,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn log_path(cli: Option<&PathBuf>, file: Option<&PathBuf>, default: &str) -> LogPath {
    match cli.or(file) {
        Some(p) => LogPath {
            path: p.clone(),
            configured: true,
        },
        None => LogPath {
            path: default.into(),
            configured: false,
        },
    }
}

impl CheckSettings {
    /// Resolves the settings from parsed flags (with the environment already applied by clap),
    /// the environment-only variables read through `env`, and the config file.
    pub fn resolve(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(p) => read_file_config(p)?,
            None if Path::new(DEFAULT_CONFIG).exists() => {
                read_file_config(Path::new(DEFAULT_CONFIG))?
            }
            None => FileConfig::default(),
        };
        let owner_secret =
            match non_empty(env("TPM_OWNER_SECRET")).or(non_empty(file.tpm_owner_secret.clone())) {
                Some(s) => Secret::parse(&s).map_err(|e| ConfigError::Invalid(e.to_string()))?,
                None => Secret::default(),
            };
        let ak_algorithm =
            match non_empty(cli.ak_algorithm.clone()).or(non_empty(file.ak_algorithm.clone())) {
                Some(s) => AkAlgorithm::from_name(&s).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "--ak-algorithm {s:?}: expected rsa2048 or ecc-p256"
                    ))
                })?,
                None => AkAlgorithm::default(),
            };
        Ok(Self {
            tcti: non_empty(cli.tcti.clone())
                .or(non_empty(file.tcti.clone()))
                .unwrap_or_else(|| DEFAULT_TCTI.to_string()),
            state_dir: cli
                .state_dir
                .clone()
                .or(file.state_dir.clone())
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            eventlog: log_path(
                cli.eventlog.as_ref(),
                file.eventlog.as_ref(),
                DEFAULT_EVENTLOG,
            ),
            ima_log: log_path(cli.ima_log.as_ref(), file.ima_log.as_ref(), DEFAULT_IMA_LOG),
            owner_secret,
            ak_algorithm,
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Passed.
    pub pass: bool,
    /// The check's name.
    pub name: &'static str,
    /// What was seen, and the remedy when it failed.
    pub detail: String,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        write!(f, "{verdict} {}: {}", self.name, self.detail)
    }
}

fn pass(name: &'static str, detail: impl Into<String>) -> Outcome {
    Outcome {
        pass: true,
        name,
        detail: detail.into(),
    }
}

fn fail(name: &'static str, detail: impl Into<String>) -> Outcome {
    Outcome {
        pass: false,
        name,
        detail: detail.into(),
    }
}

fn not_checked(name: &'static str, because: &str) -> Outcome {
    fail(name, format!("not checked: {because}"))
}

/// The device path of a `device` TCTI (`device` alone is tpm2-tss's `/dev/tpm0`), or `None` for
/// another TCTI.
pub fn device_path(tcti: &str) -> Option<PathBuf> {
    let t = tcti.trim();
    let (name, conf) = t.split_once(':').unwrap_or((t, ""));
    if name != "device" {
        return None;
    }
    let path = conf.split(',').next().unwrap_or_default().trim();
    Some(if path.is_empty() {
        PathBuf::from("/dev/tpm0")
    } else {
        PathBuf::from(path)
    })
}

fn check_device(tcti: &str) -> Outcome {
    const NAME: &str = "device";
    let Some(path) = device_path(tcti) else {
        return pass(
            NAME,
            format!("TCTI `{tcti}` is not a device TCTI: no device file to open"),
        );
    };
    let shown = path.display();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(
                NAME,
                format!(
                    "{shown} does not exist. Remedy: enable the TPM 2.0 in the firmware setup, check that the \
                     kernel driver is loaded (tpm_tis or tpm_crb: `ls /dev/tpm*` on the node), and mount the \
                     device into the container (hostPath {shown}, type CharDevice); or point --tcti at the \
                     right device"
                ),
            )
        }
        Err(e) => return fail(NAME, format!("{shown}: {e}")),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if !meta.file_type().is_char_device() {
            return fail(
                NAME,
                format!(
                    "{shown} exists but is not a character device. Remedy: mount the node's TPM device \
                     there (hostPath type CharDevice)"
                ),
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(_) => pass(NAME, format!("{shown} is present and opens read-write")),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => fail(
            NAME,
            format!(
                "{shown} exists but cannot be opened read-write: {e}. Remedy: run the agent as root, or \
                 in the group that owns the device (`tss` on most distributions: add its GID to the pod's \
                 supplementalGroups); in a container the device cgroup must allow it (privileged, or a \
                 device plugin)"
            ),
        ),
        Err(e) => fail(
            NAME,
            format!(
                "{shown} cannot be opened: {e}. Remedy: another process may hold a TPM without a resource \
                 manager (/dev/tpm0 admits one user): use /dev/tpmrm0"
            ),
        ),
    }
}

fn check_answers(tcti: &str, state: &Result<TpmState, TpmError>) -> Outcome {
    const NAME: &str = "tpm answers";
    match state {
        Ok(s) => {
            let mut detail = format!(
                "TPM 2.0 by {} ({}), firmware {}",
                s.manufacturer, s.vendor, s.firmware_version
            );
            if s.sent_startup {
                detail.push_str("; it had not been started: sent TPM2_Startup(CLEAR)");
            }
            if is_software_tcti(tcti) || (s.vendor.contains("SW") && s.vendor.contains("TPM")) {
                detail.push_str(
                    "; SOFTWARE TPM: its evidence proves nothing about this machine, never use it in production",
                );
            }
            pass(NAME, detail)
        }
        Err(e) => fail(NAME, e.to_string()),
    }
}

fn check_lockout(s: &TpmState) -> Outcome {
    const NAME: &str = "dictionary-attack lockout";
    let counter = format!(
        "{} failed authorization(s) counted, lockout at {}",
        s.lockout_counter, s.max_auth_fail
    );
    if s.in_lockout || (s.max_auth_fail > 0 && s.lockout_counter >= s.max_auth_fail) {
        return fail(
            NAME,
            format!(
                "the TPM is in dictionary-attack lockout ({counter}; one failure is forgotten every {} s). \
                 Remedy: wait until the counter drops below the maximum, or reset it with \
                 `tpm2_dictionarylockout --clear-lockout` and the lockout auth{}; then find what sends wrong \
                 passwords (a wrong TPM_OWNER_SECRET is the usual cause)",
                s.lockout_interval,
                if s.lockout_auth_set {
                    " (`-p` with the lockout secret)"
                } else {
                    ""
                }
            ),
        );
    }
    if s.lockout_counter > 0 {
        return pass(
            NAME,
            format!("not in lockout ({counter}: something has sent wrong passwords; check TPM_OWNER_SECRET)"),
        );
    }
    pass(NAME, format!("not in lockout ({counter})"))
}

fn check_endorsement(settings: &CheckSettings, state: &TpmState) -> Vec<Outcome> {
    const NAME: &str = "endorsement hierarchy";
    if !state.endorsement_enabled {
        return vec![fail(
            NAME,
            TpmError::Disabled {
                detail: "TPMA_STARTUP_CLEAR.ehEnable is clear".into(),
            }
            .to_string(),
        )];
    }
    let mut config = TssConfig::new(settings.tcti.clone(), settings.state_dir.clone());
    config.owner_secret = settings.owner_secret.clone();
    config.ak_algorithm = settings.ak_algorithm;
    let attester = match TssAttester::open(config) {
        Ok(a) => a,
        Err(e @ TpmError::State { .. }) => {
            return vec![
                pass(NAME, "enabled; the EK was created"),
                fail("state directory", e.to_string()),
            ]
        }
        Err(e) => return vec![fail(NAME, e.to_string())],
    };
    let auth = match (state.endorsement_auth_set, settings.owner_secret.is_empty()) {
        (true, _) => "with TPM_OWNER_SECRET",
        (false, false) => "no auth value needed (TPM_OWNER_SECRET is set but unused)",
        (false, true) => "no auth value needed",
    };
    let ek = match attester.ek() {
        Ok(ek) => ek,
        Err(e) => return vec![fail(NAME, e.to_string())],
    };
    let ek_text = nodetrust_tpm_wire::Public::from_tpm2b(&ek.public)
        .map(|p| p.describe())
        .unwrap_or_else(|e| format!("unreadable public area: {e}"));
    let cert = if ek.certificate.is_some() {
        "EK certificate in NV"
    } else {
        "no EK certificate in NV (the server must be given the EK or its CA another way)"
    };
    vec![
        pass(NAME, format!("enabled, {auth}; EK {ek_text}; {cert}")),
        pass(
            "state directory",
            format!(
                "AK ({}) loaded or created in {}",
                settings.ak_algorithm.name(),
                settings.state_dir.display()
            ),
        ),
    ]
}

fn check_log(name: &'static str, log: &LogPath) -> Outcome {
    let shown = log.path.display();
    let file = match std::fs::File::open(&log.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !log.configured => {
            return pass(
                name,
                format!("{shown} (default path) is absent: quotes are served without it"),
            )
        }
        Err(e) => {
            return fail(
                name,
                format!(
                    "{shown} cannot be opened: {e}. Remedy: mount securityfs (/sys/kernel/security) into the \
                     container read-only and run as root, or fix or remove the configured path"
                ),
            )
        }
    };
    let mut buf = Vec::new();
    match file.take(LOG_READ_LIMIT).read_to_end(&mut buf) {
        Ok(n) => pass(name, format!("{shown} is readable ({n} bytes)")),
        Err(e) => fail(name, format!("{shown} cannot be read: {e}")),
    }
}

/// Runs every check.
pub fn run_checks(settings: &CheckSettings) -> Vec<Outcome> {
    let mut out = Vec::new();
    let device = check_device(&settings.tcti);
    let device_ok = device.pass;
    out.push(device);
    if device_ok {
        let state = probe(&settings.tcti);
        out.push(check_answers(&settings.tcti, &state));
        match state {
            Ok(state) => {
                let lockout = check_lockout(&state);
                let lockout_ok = lockout.pass;
                out.push(lockout);
                if lockout_ok {
                    out.extend(check_endorsement(settings, &state));
                } else {
                    out.push(not_checked(
                        "endorsement hierarchy",
                        "the TPM is in lockout",
                    ));
                }
            }
            Err(_) => {
                out.push(not_checked(
                    "dictionary-attack lockout",
                    "the TPM does not answer",
                ));
                out.push(not_checked(
                    "endorsement hierarchy",
                    "the TPM does not answer",
                ));
            }
        }
    } else {
        for name in [
            "tpm answers",
            "dictionary-attack lockout",
            "endorsement hierarchy",
        ] {
            out.push(not_checked(name, "no TPM device"));
        }
    }
    out.push(check_log("event log", &settings.eventlog));
    out.push(check_log("IMA log", &settings.ima_log));
    out
}

/// `nodetrust-agent check`: prints the checks and the verdict; the exit status says it too.
pub fn main(cli: &Cli) -> ExitCode {
    let settings = match CheckSettings::resolve(cli, &|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nodetrust-agent check: {e}");
            return ExitCode::from(2);
        }
    };
    let outcomes = run_checks(&settings);
    for o in &outcomes {
        println!("{o}");
    }
    let failed = outcomes.iter().filter(|o| !o.pass).count();
    if failed == 0 {
        println!(
            "VERDICT: ready: all {} checks passed; the agent can use the TPM at `{}`",
            outcomes.len(),
            settings.tcti
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "VERDICT: not ready: {failed} of {} checks failed; fix the first FAIL above and run the check again",
            outcomes.len()
        );
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_of_tctis() {
        assert_eq!(
            device_path("device:/dev/tpmrm0"),
            Some(PathBuf::from("/dev/tpmrm0"))
        );
        assert_eq!(device_path("device"), Some(PathBuf::from("/dev/tpm0")));
        assert_eq!(device_path("swtpm:host=127.0.0.1,port=2321"), None);
        assert_eq!(device_path("tabrmd"), None);
    }
}
