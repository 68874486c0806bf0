//! `nodetrust bench`: how fast this machine appraises evidence, to size a server.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::quote::{rejected, Evidence, LoadedEvidence};
use crate::CliError;

/// `nodetrust bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Verify one quote's evidence repeatedly on one thread and print the rate.
    ///
    /// Takes the same arguments as `quote verify`. The evidence is verified once first; if it
    /// is rejected, the command fails as `quote verify` does, so it never measures a failing
    /// path. The last line is `appraisals/s: N`.
    Appraisal(AppraisalArgs),
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
    loaded.verify().map_err(|e| rejected(&e, json))?;
    let mut failures = 0u64;
    let (n, elapsed) = measure(a.seconds, || {
        if loaded.verify().is_err() {
            failures += 1;
        }
    })?;
    if failures > 0 {
        return Err(CliError::Usage(format!(
            "{failures} of {n} verifications failed during the run"
        )));
    }
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "verifications: {n} in {:.3} s on one thread",
        elapsed.as_secs_f64()
    );
    println!("appraisals/s: {rate:.0}");
    Ok(())
}
