//! `nodetrust`: the operator's command line.
//!
//! Exit codes are the same for every command: 0 success, 1 the evidence was checked and
//! rejected (the one line printed says why), 2 bad arguments or unreadable input.
#![forbid(unsafe_code)]

mod bench;
mod error;
mod eventlog;
mod ima;
mod input;
mod quote;

use clap::{Parser, Subcommand};

pub use error::CliError;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Lines for a human.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "nodetrust",
    version,
    about = "TPM-rooted trust for Kubernetes nodes: the operator's command line",
    long_about = "TPM-rooted trust for Kubernetes nodes: the operator's command line.\n\n\
        Exit codes: 0 success; 1 the evidence was checked and rejected (one line says why); \
        2 bad arguments or unreadable input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline checks of TPM 2.0 quotes.
    #[command(subcommand)]
    Quote(quote::QuoteCommand),
    /// Measure how fast this machine appraises evidence, to size a server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Measured-boot event logs: show, replay, diff against a gold machine's log.
    #[command(subcommand)]
    Eventlog(eventlog::EventlogCommand),
    /// The Linux IMA runtime measurement log: replay into PCR 10.
    #[command(subcommand)]
    Ima(ima::ImaCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quote(c) => quote::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Eventlog(c) => eventlog::run(c),
        Command::Ima(c) => ima::run(c),
    };
    if let Err(e) = result {
        e.report();
        std::process::exit(e.exit_code());
    }
}
