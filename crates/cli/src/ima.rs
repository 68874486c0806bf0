//! `nodetrust ima`: the Linux IMA runtime measurement log.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use nodetrust_eventlog::ima::{BankRule, ImaLog, ImaReplay};
use nodetrust_tpm_wire::HashAlg;

use crate::input;
use crate::output::outln;
use crate::{CliError, Format};

/// `nodetrust ima ...`
#[derive(Debug, Subcommand)]
pub enum ImaCommand {
    /// Replay an IMA log into PCR 10 (or the PCRs its entries name) and print the values.
    ///
    /// FILE is `ascii_runtime_measurements` or `binary_runtime_measurements` (detected), with
    /// templates ima, ima-ng or ima-sig. The SHA-1 bank is extended with the logged template
    /// hashes; the SHA-256 bank with the template data hashed by SHA-256, as Linux >= 5.1 does
    /// (`--padded-sha1` for older kernels, which extended the zero-padded SHA-1 hash).
    /// Violations extend all-ones. Text output is `tpm2_pcrread` YAML; JSON is
    /// `{"sha1": {"10": "hex"}, "sha256": {...}}`. Entries whose template hash is not the hash
    /// of their data are listed as findings (on stderr in text mode) and make the exit code 1.
    Replay(ReplayArgs),
}

/// Arguments of `ima replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The IMA log file.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Extend banks other than SHA-1 with the zero-padded SHA-1 template hash (Linux < 5.1).
    #[arg(long)]
    pub padded_sha1: bool,
}

/// Runs an `ima` subcommand.
pub fn run(cmd: ImaCommand) -> Result<(), CliError> {
    match cmd {
        ImaCommand::Replay(a) => replay(&a),
    }
}

fn replay(a: &ReplayArgs) -> Result<(), CliError> {
    let json = a.format == Format::Json;
    let bytes = input::read(&a.file, "IMA log")?;
    let log = ImaLog::parse(&bytes).map_err(|e| CliError::Rejected {
        reason: "malformed_ima_log",
        message: format!("IMA log {}: {e}", a.file.display()),
        json,
    })?;
    let rule = if a.padded_sha1 {
        BankRule::PaddedSha1
    } else {
        BankRule::Recompute
    };
    let mut state = ImaReplay::new(&[HashAlg::Sha1, HashAlg::Sha256], rule);
    state.extend(&log.entries).map_err(|e| CliError::Rejected {
        reason: "malformed_ima_log",
        message: format!("IMA log {}: {e}", a.file.display()),
        json,
    })?;
    let values = state.values();
    if json {
        outln!("{}", values.to_json());
    } else {
        outln!(
            "# entries: {}, violations: {}",
            state.entries_replayed(),
            state.violations()
        );
        let mut current = None;
        for (alg, pcr, v) in values.iter() {
            if current != Some(alg) {
                outln!("{}:", alg.name());
                current = Some(alg);
            }
            outln!("  {pcr:<2} : 0x{}", hex::encode_upper(v));
        }
    }
    let findings = log.check();
    if findings.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = findings.iter().map(ToString::to_string).collect();
    Err(CliError::Rejected {
        reason: "ima_template_hash_mismatch",
        message: list.join("; "),
        json: false,
    })
}
