//! `nodetrust bench`: how fast this machine appraises evidence, to size a server.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::output::outln;
use crate::quote::{rejected, Evidence, LoadedEvidence};
use crate::CliError;

/// `nodetrust bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Verify one quote's evidence repeatedly on one thread and print the rate.
    ///
    /// Takes the same arguments as `quote verify`. The evidence is verified once first; if it
    /// is rejected, the command fails as `quote verify` does, so it never measures a failing
    /// path. With `--eventlog`, each appraisal also parses and replays the log against the
    /// quoted values. The last line is `appraisals/s: N`.
    Appraisal(AppraisalArgs),
    /// Parse and replay a measured-boot event log repeatedly on one thread and print the rate.
    ///
    /// Each iteration parses the file's bytes (already in memory) and replays every bank. The log
    /// is checked once first and a bad log fails as `eventlog replay` does. The last line is
    /// `replays/s: N`.
    Eventlog(EventlogArgs),
    /// Appraise an IMA log against a runtime policy repeatedly on one thread and print the
    /// rate in entries.
    ///
    /// Each pass reads the log's bytes (already in memory, ascii or binary) in place, checks
    /// or binds each entry's template hash, replays every entry into PCR 10 of `--bank`
    /// (comparing with the quote after each) and checks it against the compiled policy (digest
    /// lookup, excludes, ima-sig signatures), from entry 0, as a first attestation does
    /// (`RuntimeAppraisal::appraise_log`); the quote is the log's own replay and the boot
    /// aggregate is not checked. The policy is compiled once,
    /// before the clock starts (its time is printed). The last line is `entries/s: N`.
    Ima(ImaArgs),
}

/// Arguments of `bench ima`.
#[derive(Debug, Args)]
pub struct ImaArgs {
    /// The IMA log file.
    log: std::path::PathBuf,
    /// The runtime policy (JSON).
    #[arg(long)]
    policy: std::path::PathBuf,
    /// The PCR bank replayed (`sha1` or `sha256`).
    #[arg(long, default_value = "sha256")]
    bank: String,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// Arguments of `bench eventlog`.
#[derive(Debug, Args)]
pub struct EventlogArgs {
    /// The event log file.
    file: std::path::PathBuf,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// Arguments of `bench appraisal`.
#[derive(Debug, Args)]
pub struct AppraisalArgs {
    #[command(flatten)]
    evidence: Evidence,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Appraisal(a) => appraisal(&a),
        BenchCommand::Eventlog(a) => eventlog(&a),
        BenchCommand::Ima(a) => ima(&a),
    }
}

/// Calls `f` repeatedly for `seconds` and returns (iterations, elapsed).
pub fn measure(seconds: f64, mut f: impl FnMut()) -> Result<(u64, Duration), CliError> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(CliError::Usage(
            "--seconds must be between 0 and 3600".to_string(),
        ));
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        for _ in 0..16 {
            f();
        }
        n += 16;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok((n, elapsed));
        }
    }
}

fn appraisal(a: &AppraisalArgs) -> Result<(), CliError> {
    let json = a.evidence.format == crate::Format::Json;
    let loaded = LoadedEvidence::load(&a.evidence)?;
    let q = loaded.verify().map_err(|e| rejected(&e, json))?;
    // With --eventlog, an appraisal also replays the log against the quoted values.
    let log = match &a.evidence.eventlog {
        Some(path) => {
            crate::eventlog::check_quote(path, q.pcrs(), json)?;
            Some(crate::input::read(path, "event log")?)
        }
        None => None,
    };
    let mut failures = 0u64;
    let (n, elapsed) = measure(a.seconds, || {
        let ok = match (loaded.verify(), &log) {
            (Ok(q), Some(bytes)) => crate::eventlog::replays_to(bytes, q.pcrs()),
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        if !ok {
            failures += 1;
        }
    })?;
    if failures > 0 {
        return Err(CliError::Usage(format!(
            "{failures} of {n} verifications failed during the run"
        )));
    }
    let rate = n as f64 / elapsed.as_secs_f64();
    outln!(
        "verifications: {n} in {:.3} s on one thread",
        elapsed.as_secs_f64()
    );
    outln!("appraisals/s: {rate:.0}");
    Ok(())
}

fn eventlog(a: &EventlogArgs) -> Result<(), CliError> {
    let bytes = crate::input::read(&a.file, "event log")?;
    let log = crate::eventlog::parse(&bytes, &a.file, false)?;
    let events = log.events.len();
    drop(log);
    let mut failures = 0u64;
    let (n, elapsed) = measure(a.seconds, || {
        match nodetrust_eventlog::EventLog::parse(std::hint::black_box(&bytes)) {
            Ok(log) => {
                std::hint::black_box(nodetrust_eventlog::Replay::run(&log));
            }
            Err(_) => failures += 1,
        }
    })?;
    if failures > 0 {
        return Err(CliError::Usage(format!(
            "{failures} of {n} parses failed during the run"
        )));
    }
    let secs = elapsed.as_secs_f64();
    let rate = n as f64 / secs;
    outln!("log: {} bytes, {events} events", bytes.len());
    outln!("replays: {n} in {secs:.3} s on one thread");
    outln!("MB/s: {:.1}", rate * bytes.len() as f64 / 1e6);
    outln!("replays/s: {rate:.0}");
    Ok(())
}

fn ima(a: &ImaArgs) -> Result<(), CliError> {
    use nodetrust_appraise::runtime::RuntimeAppraisal;
    use nodetrust_eventlog::ima::{BankRule, ImaLog};

    let bank = nodetrust_tpm_wire::HashAlg::from_name(&a.bank)
        .ok_or_else(|| CliError::Usage(format!("--bank {:?}: sha1 or sha256", a.bank)))?;
    let (bytes, log) = crate::ima::read_log(&a.log)?;
    let entries = log.entries.len() as u64;
    let quoted = crate::ima::self_quote(&log, &[bank], BankRule::Recompute)?;
    drop(log);
    let policy = crate::policy::read_policy(&a.policy)?;
    let start = Instant::now();
    let compiled = crate::ima::compile(policy, true)?;
    let compile_time = start.elapsed();
    // One pass outside the clock: it must replay, and says how many entries fail; the
    // owned-entry path must agree with the in-place one.
    let check = ImaLog::parse(&bytes)
        .map(|l| RuntimeAppraisal::new().appraise(&compiled, 0, &l.entries, &quoted))
        .map_err(|e| CliError::Usage(format!("IMA log: {e}")))?;
    if let Some(p) = &check.problem {
        return Err(CliError::Usage(format!("the log cannot be appraised: {p}")));
    }
    let fast = RuntimeAppraisal::new()
        .appraise_log(&compiled, 0, &bytes, &quoted)
        .map_err(|e| CliError::Usage(format!("IMA log: {e}")))?;
    if fast != check {
        return Err(CliError::Usage(
            "appraising the bytes in place and the parsed entries disagree".to_string(),
        ));
    }
    let mut failures = 0u64;
    let (n, elapsed) = measure(a.seconds, || {
        match RuntimeAppraisal::new().appraise_log(
            &compiled,
            0,
            std::hint::black_box(&bytes),
            &quoted,
        ) {
            Ok(out) => {
                std::hint::black_box(&out);
            }
            Err(_) => failures += 1,
        }
    })?;
    if failures > 0 {
        return Err(CliError::Usage(format!(
            "{failures} of {n} parses failed during the run"
        )));
    }
    // For comparison: the log parsed into owned entries, then appraised.
    let (n2, elapsed2) = measure(a.seconds / 2.0, || {
        if let Ok(l) = ImaLog::parse(std::hint::black_box(&bytes)) {
            let out = RuntimeAppraisal::new().appraise(&compiled, 0, &l.entries, &quoted);
            std::hint::black_box(&out);
        }
    })?;
    let secs = elapsed.as_secs_f64();
    let form = if bytes.first().is_some_and(u8::is_ascii_digit) {
        "ascii"
    } else {
        "binary"
    };
    outln!(
        "log: {} bytes, {entries} entries, {form} ({} not allowed by the policy)",
        bytes.len(),
        check.failures_total
    );
    outln!(
        "policy: {} paths, {} digests, compiled in {:.1} ms",
        compiled.paths(),
        compiled.digest_count(),
        compile_time.as_secs_f64() * 1e3
    );
    outln!(
        "parsed into owned entries, then appraised: {:.0} entries/s",
        (n2 * entries) as f64 / elapsed2.as_secs_f64()
    );
    outln!(
        "an entry appraised = read from the log bytes + template hash checked or bound + \
         extended into PCR 10 ({bank}) + looked up in the policy; the replay compared with the \
         quote after each entry"
    );
    outln!("{n} passes in {secs:.3} s on one thread");
    outln!("entries/s: {:.0}", (n * entries) as f64 / secs);
    Ok(())
}
