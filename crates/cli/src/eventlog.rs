//! `nodetrust eventlog`: read a measured-boot event log, replay it, compare it.
//!
//! A log that cannot be parsed is rejected evidence (exit 1, reason `malformed_eventlog`, the
//! message names the event number and byte offset); a file that cannot be read is exit 2.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use nodetrust_eventlog::{component, diff, integrity, EventLog, Replay};
use nodetrust_tpm_wire::PcrValues;

use crate::input;
use crate::output::{errln, outln};
use crate::{CliError, Format};

/// `nodetrust eventlog ...`
#[derive(Debug, Subcommand)]
pub enum EventlogCommand {
    /// List every event: PCR, type, what it measured (boot loader, kernel, Secure Boot
    /// variable...), digests, and integrity findings.
    ///
    /// FILE is a TCG PC Client log in either format (SHA-1 or crypto-agile), e.g.
    /// /sys/kernel/security/tpm0/binary_bios_measurements. Event types and data are not covered
    /// by the digests: they are labels for humans; only replay against a quote binds a log.
    Show(ShowArgs),
    /// Replay the log into every bank it declares and print the PCR values it leads to.
    ///
    /// Prints only the PCRs the log touches. Text output is the YAML `tpm2_pcrread` prints, so
    /// it can be given back to `--pcrs`; JSON is `{"sha256": {"0": "hex", ...}}`. With `--pcrs`,
    /// exits 1 naming every PCR (touched by the log and present in PCRS) whose replayed value
    /// differs. PCRs 17-22 start at all-ones until a measured launch; PCR 0 honours the
    /// StartupLocality event.
    Replay(ReplayArgs),
    /// Explain how a host's log differs from its gold machine's, one statement per line.
    ///
    /// Events are matched PCR by PCR; changed components are named (boot applications by path,
    /// Secure Boot variables by name, the kernel command line by its text). Exit 0 when the logs
    /// measure the same things, 1 when they differ.
    Diff(DiffArgs),
}

/// Arguments of `eventlog show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The event log file.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `eventlog replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The event log file.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Expected PCR values: `tpm2_pcrread` YAML or JSON `{"sha256": {"4": "hex"}}`, as for
    /// `quote verify --pcrs`. Exit 1 naming every mismatching PCR.
    #[arg(long, value_name = "PCRS")]
    pub pcrs: Option<PathBuf>,
}

/// Arguments of `eventlog diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The gold machine's event log.
    pub gold: PathBuf,
    /// The host's event log.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs an `eventlog` subcommand.
pub fn run(cmd: EventlogCommand) -> Result<(), CliError> {
    match cmd {
        EventlogCommand::Show(a) => show(&a),
        EventlogCommand::Replay(a) => replay(&a),
        EventlogCommand::Diff(a) => diff_cmd(&a),
    }
}

/// Parses `bytes` read from `path`, or rejects the log naming where it is malformed.
pub fn parse<'a>(bytes: &'a [u8], path: &Path, json: bool) -> Result<EventLog<'a>, CliError> {
    EventLog::parse(bytes).map_err(|e| CliError::Rejected {
        reason: "malformed_eventlog",
        message: format!("event log {}: {e}", path.display()),
        json,
    })
}

fn banks(log: &EventLog<'_>) -> Vec<String> {
    log.algorithms()
        .iter()
        .map(|a| nodetrust_eventlog::tcg::alg_name(a.id))
        .collect()
}

fn format_name(log: &EventLog<'_>) -> &'static str {
    match log.format {
        nodetrust_eventlog::LogFormat::Sha1 => "sha1",
        nodetrust_eventlog::LogFormat::CryptoAgile => "crypto-agile",
    }
}

fn show(a: &ShowArgs) -> Result<(), CliError> {
    let json = a.format == Format::Json;
    let bytes = input::read(&a.file, "event log")?;
    let log = parse(&bytes, &a.file, json)?;
    let findings = integrity::check(&log);
    let mut out = String::new();
    if json {
        let events: Vec<serde_json::Value> = log
            .events
            .iter()
            .map(|ev| {
                let c = component::describe(ev);
                let digests: serde_json::Map<String, serde_json::Value> = ev
                    .digests
                    .iter()
                    .map(|d| {
                        (
                            d.alg_name(),
                            serde_json::Value::String(hex::encode(d.bytes)),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "number": ev.number,
                    "offset": ev.offset,
                    "pcr": ev.pcr,
                    "type": ev.event_type,
                    "type_name": ev.type_label(),
                    "digests": digests,
                    "data_size": ev.data.len(),
                    "component": {
                        "kind": c.kind.id(),
                        "name": c.name,
                        "detail": c.detail,
                        "text": c.to_string(),
                    },
                })
            })
            .collect();
        let v = serde_json::json!({
            "format": format_name(&log),
            "banks": banks(&log),
            "size": log.size,
            "trailing_padding": log.trailing_padding,
            "events": events,
            "findings": findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        emit(&format!("{v}\n"));
        return Ok(());
    }
    let _ = writeln!(
        out,
        "log: {} format, banks {}, {} events, {} bytes",
        format_name(&log),
        banks(&log).join(","),
        log.events.len(),
        log.size
    );
    if let Some(spec) = &log.spec_id {
        let _ = writeln!(
            out,
            "spec: platform class {}, version {}.{} errata {}, uintn size {}, vendor data {}",
            spec.platform_class,
            spec.spec_version_major,
            spec.spec_version_minor,
            spec.spec_errata,
            spec.uintn_size,
            if spec.vendor_info.is_empty() {
                "none".to_string()
            } else {
                hex::encode(spec.vendor_info)
            }
        );
    }
    for ev in &log.events {
        let _ = writeln!(
            out,
            "#{:<4} PCR {:<2} {:<34} {}",
            ev.number,
            ev.pcr,
            ev.type_label(),
            component::describe(ev)
        );
        for d in &ev.digests {
            let _ = writeln!(out, "        {:<7} {}", d.alg_name(), hex::encode(d.bytes));
        }
    }
    if log.trailing_padding > 0 {
        let _ = writeln!(
            out,
            "padding: {} bytes after the last event",
            log.trailing_padding
        );
    }
    if findings.is_empty() {
        let _ = writeln!(out, "findings: none");
    } else {
        let _ = writeln!(out, "findings:");
        for f in &findings {
            let _ = writeln!(out, "  {f}");
        }
    }
    emit(&out);
    Ok(())
}

/// Writes `text` to stdout; a closed pipe (`| head`) ends the process quietly.
fn emit(text: &str) {
    crate::output::raw(text);
}

/// Prints PCR values as `tpm2_pcrread` YAML.
fn print_yaml(values: &PcrValues) {
    let mut current = None;
    for (alg, pcr, v) in values.iter() {
        if current != Some(alg) {
            outln!("{}:", alg.name());
            current = Some(alg);
        }
        outln!("  {pcr:<2} : 0x{}", hex::encode_upper(v));
    }
}

fn replay(a: &ReplayArgs) -> Result<(), CliError> {
    let json = a.format == Format::Json;
    let bytes = input::read(&a.file, "event log")?;
    let expected = a.pcrs.as_deref().map(input::read_pcrs).transpose()?;
    let log = parse(&bytes, &a.file, json)?;
    let r = Replay::run(&log);
    if let Some(expected) = &expected {
        check_values(&r, expected, &a.file, "the given PCR values", json)?;
    }
    let values = r.values();
    if json {
        outln!("{}", values.to_json());
    } else {
        print_yaml(&values);
        for alg in r.unsupported() {
            errln!(
                "note: bank {} not replayed (algorithm not supported)",
                nodetrust_eventlog::tcg::alg_name(*alg)
            );
        }
    }
    Ok(())
}

/// Requires the replay of the log at `path` to match `expected` on every PCR both cover.
pub fn check_values(
    r: &Replay,
    expected: &PcrValues,
    path: &Path,
    what: &str,
    json: bool,
) -> Result<usize, CliError> {
    let cmp = r.compare(expected);
    if cmp.is_empty() {
        return Err(CliError::Rejected {
            reason: "eventlog_not_covered",
            message: format!(
                "event log {}: {what} hold none of the PCRs the log extends",
                path.display()
            ),
            json,
        });
    }
    let bad: Vec<String> = cmp
        .iter()
        .filter(|c| !c.matches)
        .map(ToString::to_string)
        .collect();
    if !bad.is_empty() {
        return Err(CliError::Rejected {
            reason: "eventlog_mismatch",
            message: format!(
                "event log {} does not replay to {what}: {}",
                path.display(),
                bad.join("; ")
            ),
            json,
        });
    }
    Ok(cmp.len())
}

/// For `quote verify --eventlog`: the log must replay to the quoted values of every PCR it
/// touches that the quote covers. Returns a summary line.
pub fn check_quote(path: &Path, quoted: &PcrValues, json: bool) -> Result<String, CliError> {
    let bytes = input::read(path, "event log")?;
    let log = parse(&bytes, path, json)?;
    let banks: Vec<nodetrust_tpm_wire::HashAlg> = quoted.banks().collect();
    let r = Replay::run_banks(&log, &banks);
    let n = check_values(&r, quoted, path, "the quoted PCR values", json)?;
    let covered: Vec<String> = r
        .compare(quoted)
        .iter()
        .map(|c| format!("{}:{}", c.alg, c.pcr))
        .collect();
    Ok(format!(
        "replays to the quoted values of {n} PCRs ({})",
        covered.join(",")
    ))
}

/// Whether the log parses and replays to `quoted` on every PCR both cover (bench loop).
pub fn replays_to(bytes: &[u8], quoted: &PcrValues) -> bool {
    let Ok(log) = EventLog::parse(bytes) else {
        return false;
    };
    let banks: Vec<nodetrust_tpm_wire::HashAlg> = quoted.banks().collect();
    let cmp = Replay::run_banks(&log, &banks).compare(quoted);
    !cmp.is_empty() && cmp.iter().all(|c| c.matches)
}

fn diff_cmd(a: &DiffArgs) -> Result<(), CliError> {
    let json = a.format == Format::Json;
    let gold_bytes = input::read(&a.gold, "gold event log")?;
    let host_bytes = input::read(&a.file, "event log")?;
    let gold = parse(&gold_bytes, &a.gold, json)?;
    let host = parse(&host_bytes, &a.file, json)?;
    let diffs = diff::diff(&gold, &host);
    if json {
        let v: Vec<serde_json::Value> = diffs
            .iter()
            .map(|d| serde_json::json!({"pcr": d.pcr, "reason": d.reason(), "statement": d.to_string()}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"same": diffs.is_empty(), "differences": v})
        );
    } else if diffs.is_empty() {
        outln!("the logs measure the same components");
    } else {
        for d in &diffs {
            outln!("{d}");
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(CliError::Rejected {
            reason: "eventlog_differs",
            message: format!(
                "{} difference{} from the gold log {}",
                diffs.len(),
                if diffs.len() == 1 { "" } else { "s" },
                a.gold.display()
            ),
            json: false,
        })
    }
}
