//! `nodetrust ima`: the Linux IMA runtime measurement log.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use nodetrust_appraise::runtime::{
    BootAggregateRule, CompiledPolicy, RuntimeAppraisal, RuntimeOutcome, RuntimePolicy,
};
use nodetrust_eventlog::ima::{BankRule, ImaLog, ImaReplay};
use nodetrust_tpm_wire::{HashAlg, PcrValues};

use crate::input;
use crate::output::{errln, outln};
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
    /// Appraise an IMA log against a runtime policy (`nodetrust policy create runtime`).
    ///
    /// LOG is ascii or binary (detected). Every entry must be allowed: its digest listed for
    /// its path, its path excluded, or its ima-sig signature made by a trusted key. Each entry
    /// that is not is printed (`RUNTIME: /usr/bin/curl: sha256:... not in policy`).
    /// With `--pcrs` (tpm2_pcrread YAML or JSON of a quote) the log must also replay to the
    /// quoted PCR 10 and the boot_aggregate must match PCRs 0-9; without it the log is only
    /// checked against itself and the boot_aggregate is not checked. Exit 0 when every entry
    /// is allowed, 1 when any is not (or the log does not replay to --pcrs), 2 when the log or
    /// the policy cannot be read.
    Appraise(AppraiseArgs),
}

/// Arguments of `ima appraise`.
#[derive(Debug, Args)]
pub struct AppraiseArgs {
    /// The IMA log file.
    pub log: PathBuf,
    /// The runtime policy (JSON).
    #[arg(long)]
    pub policy: PathBuf,
    /// The quoted PCR values (PCR 10; PCRs 0-9 of the boot_aggregate's bank).
    #[arg(long)]
    pub pcrs: Option<PathBuf>,
    /// Banks other than SHA-1 were extended with the zero-padded SHA-1 hash (Linux < 5.1).
    #[arg(long)]
    pub padded_sha1: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
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
        ImaCommand::Appraise(a) => appraise(&a),
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

/// Reads and parses an IMA log; any problem is unreadable input (exit 2).
pub fn read_log(path: &std::path::Path) -> Result<(Vec<u8>, ImaLog), CliError> {
    let bytes = input::read(path, "IMA log")?;
    let log = ImaLog::parse(&bytes)
        .map_err(|e| CliError::Usage(format!("IMA log {}: {e}", path.display())))?;
    Ok((bytes, log))
}

/// PCR 10 (and any other PCR the entries extend) as the log itself replays them, in `banks`:
/// the "quote" of an offline check.
pub fn self_quote(log: &ImaLog, banks: &[HashAlg], rule: BankRule) -> Result<PcrValues, CliError> {
    let mut state = ImaReplay::new(banks, rule);
    state
        .extend(&log.entries)
        .map_err(|e| CliError::Usage(format!("IMA log: {e}")))?;
    let mut values = state.values();
    for b in banks {
        if values.get(*b, 10).is_none() {
            // An empty log: PCR 10 at its reset value.
            let _ = values.insert(*b, 10, vec![0; b.size()]);
        }
    }
    Ok(values)
}

/// Compiles `policy`, without the boot-aggregate check when `no_quote`.
pub fn compile(mut policy: RuntimePolicy, no_quote: bool) -> Result<CompiledPolicy, CliError> {
    if no_quote {
        policy.boot_aggregate = BootAggregateRule::Ignore;
    }
    policy
        .compile()
        .map_err(|e| CliError::Usage(format!("runtime policy: {e}")))
}

fn appraise(a: &AppraiseArgs) -> Result<(), CliError> {
    let json = a.format == Format::Json;
    let (_, log) = read_log(&a.log)?;
    let policy = crate::policy::read_policy(&a.policy)?;
    let rule = if a.padded_sha1 {
        BankRule::PaddedSha1
    } else {
        BankRule::Recompute
    };
    let quoted = match &a.pcrs {
        Some(p) => input::read_pcrs(p)?,
        None => {
            if policy.boot_aggregate == BootAggregateRule::Require && !json {
                errln!("nodetrust: note: boot_aggregate not checked (no --pcrs)");
            }
            self_quote(&log, &[HashAlg::Sha1, HashAlg::Sha256], rule)?
        }
    };
    let compiled = compile(policy, a.pcrs.is_none())?;
    let mut state = RuntimeAppraisal::with_bank_rule(rule).with_failure_limit(usize::MAX);
    let out = state.appraise(&compiled, 0, &log.entries, &quoted);
    // Offline, the SHA-256 "quote" is the log's own replay: check each template hash too.
    let edited: Vec<String> = if a.pcrs.is_none() {
        log.check()
            .iter()
            .map(|f| {
                format!(
                    "RUNTIME: {}: the logged template hash is not the hash of the entry (entry {})",
                    crate::output::printable(&f.path, false),
                    f.entry
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let failing = out.failures_total + edited.len() as u64;
    if json {
        let failures: Vec<serde_json::Value> = out
            .failures
            .iter()
            .map(|f| {
                serde_json::json!({"entry": f.entry, "path": f.path, "reason": f.kind.label(), "statement": f.to_string()})
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "allowed": out.problem.is_none() && failing == 0,
                "entries": log.entries.len(),
                "appraised": out.appraised,
                "unquoted": out.unquoted,
                "problem": out.problem.as_ref().map(ToString::to_string),
                "failures_total": failing,
                "failures": failures,
                "template_hash_mismatches": edited,
                "violations": out.violations,
                "allowed_by": {
                    "digest": out.allowed.digest,
                    "excluded": out.allowed.excluded,
                    "signature": out.allowed.signature,
                    "violation": out.allowed.violation,
                    "boot_aggregate": out.allowed.boot_aggregate,
                },
            })
        );
    } else {
        print_outcome(&out, &edited, log.entries.len());
    }
    if let Some(p) = &out.problem {
        return Err(CliError::Rejected {
            reason: p.label(),
            message: p.to_string(),
            json: false,
        });
    }
    if failing > 0 {
        return Err(CliError::Rejected {
            reason: "runtime_policy",
            message: format!(
                "{failing} of {} entries not allowed by {}",
                out.appraised,
                a.policy.display()
            ),
            json: false,
        });
    }
    Ok(())
}

fn print_outcome(out: &RuntimeOutcome, edited: &[String], entries: usize) {
    if let Some(p) = &out.problem {
        outln!("{}", crate::output::printable(&p.to_string(), false));
        return;
    }
    for f in &out.failures {
        outln!("{}", crate::output::printable(&f.to_string(), false));
    }
    for e in edited {
        outln!("{e}");
    }
    let c = out.allowed;
    outln!(
        "# {} entries appraised of {entries}: {} allowed by digest, {} excluded, {} by signature, \
         {} boot_aggregate, {} not allowed; violations: {}",
        out.appraised,
        c.digest,
        c.excluded,
        c.signature,
        c.boot_aggregate,
        out.failures_total + edited.len() as u64,
        out.violations
    );
    if out.unquoted > 0 {
        outln!(
            "# {} entries logged after the quoted PCR 10 were not appraised",
            out.unquoted
        );
    }
}
