//! Keylime (PyPI `keylime`) as an oracle for the IMA code, like tpm2-tools for quotes.
//!
//! [`Keylime::get`] makes (once, shared by every test process) a Python virtual environment
//! under the target directory (`target/keylime-venv-VERSION`) with `keylime` and the few
//! packages its IMA code imports, and runs `keylime_oracle.py` in it: Keylime's own parser
//! (`keylime.ima.ast`), `process_measurement_list` and boot-aggregate computation. A test asks
//! with one JSON request and reads one JSON answer ([`Keylime::call`]).
//!
//! When pip cannot reach PyPI, [`Keylime::get`] returns `Ok(None)` and says so on stderr: the
//! only case a test may skip. Any other problem (no python3, a broken install) is an error.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::Result;

/// The Keylime release the oracle runs.
pub const KEYLIME_VERSION: &str = "7.14.3";
/// What Keylime's IMA code imports besides the standard library (the wheel declares none).
const DEPENDENCIES: &[&str] = &["jsonschema", "cryptography", "lark", "pyyaml", "packaging"];
const ORACLE: &str = include_str!("keylime_oracle.py");

/// A ready Keylime.
#[derive(Debug, Clone)]
pub struct Keylime {
    python: PathBuf,
    script: PathBuf,
}

fn target_dir() -> PathBuf {
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// pip's words for "PyPI cannot be reached".
fn unreachable(stderr: &str) -> bool {
    [
        "NewConnectionError",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "Failed to establish a new connection",
        "ConnectTimeout",
        "ProxyError",
        "Max retries exceeded",
        "No matching distribution found",
        "Could not find a version that satisfies",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

impl Keylime {
    /// The oracle, installed if needed; `Ok(None)` when PyPI cannot be reached.
    pub fn get() -> Result<Option<Self>> {
        // One install per process; other processes are kept apart by the rename below.
        static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INSTALL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let venv = target_dir().join(format!("keylime-venv-{KEYLIME_VERSION}"));
        let python = venv.join("bin/python");
        let ready = venv.join("ready");
        if !ready.exists() {
            // Built aside and renamed into place, so parallel test processes never see half a
            // venv (a venv's python finds its packages relative to itself, so it moves).
            let tmp = target_dir().join(format!(
                "keylime-venv-{KEYLIME_VERSION}.tmp{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(target_dir()).map_err(|e| e.to_string())?;
            let o = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&tmp)
                .output()
                .map_err(|e| format!("python3 -m venv: {e} (is python3 installed?)"))?;
            if !o.status.success() {
                return Err(format!(
                    "python3 -m venv failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            let mut args = vec![
                "-m".to_string(),
                "pip".to_string(),
                "install".to_string(),
                "--quiet".to_string(),
                "--disable-pip-version-check".to_string(),
                format!("keylime=={KEYLIME_VERSION}"),
            ];
            args.extend(DEPENDENCIES.iter().map(|d| d.to_string()));
            let o = Command::new(tmp.join("bin/python"))
                .args(&args)
                .output()
                .map_err(|e| format!("pip: {e}"))?;
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                let _ = std::fs::remove_dir_all(&tmp);
                if unreachable(&err) {
                    eprintln!(
                        "Keylime oracle skipped: pip cannot reach PyPI to install keylime=={KEYLIME_VERSION}: {}",
                        err.lines().last().unwrap_or_default()
                    );
                    return Ok(None);
                }
                return Err(format!("pip install keylime failed: {err}"));
            }
            std::fs::write(tmp.join("ready"), KEYLIME_VERSION).map_err(|e| e.to_string())?;
            if std::fs::rename(&tmp, &venv).is_err() {
                // Another process was first: use its venv.
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        let script = venv.join("keylime_oracle.py");
        let tmp_script = venv.join(format!("keylime_oracle.py.{}", std::process::id()));
        std::fs::write(&tmp_script, ORACLE).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp_script, &script).map_err(|e| e.to_string())?;
        Ok(Some(Self { python, script }))
    }

    /// Runs one request through Keylime's code.
    pub fn call(&self, request: &serde_json::Value) -> Result<serde_json::Value> {
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("keylime oracle: {e}"))?;
        let body = request.to_string();
        let mut stdin = child.stdin.take().ok_or("keylime oracle: no stdin")?;
        let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
        let o = child
            .wait_with_output()
            .map_err(|e| format!("keylime oracle: {e}"))?;
        let _ = writer.join();
        if !o.status.success() {
            return Err(format!(
                "keylime oracle failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("keylime oracle answer: {e}"))
    }
}
