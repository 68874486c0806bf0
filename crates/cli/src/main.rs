//! `nodetrust`: the operator's command line.
//!
//! Exit codes are the same for every command: 0 success, 1 the evidence was checked and
//! rejected (the one line printed says why) or the Trust Server answered with an error, 2 bad
//! arguments, unreadable input, or no usable connection to the Trust Server. 141 when stdout is
//! closed before the output is written (`| head`), quietly, as a shell shows SIGPIPE.
//!
//! No answer of a server, however long, malformed or hostile, makes it panic: table cells are
//! cut to a bounded width, a body of unexpected shape is an error message.
#![forbid(unsafe_code)]
// Output goes through `output::{outln, errln}`, which never panic on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod bench;
mod client;
mod doctor;
mod error;
mod eventlog;
mod ima;
mod input;
mod label;
mod output;
mod policy;
mod quote;
mod users;

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
        Exit codes: 0 success; 1 the evidence was checked and rejected (one line says why), or \
        the Trust Server answered with an error (its reason is printed); 2 bad arguments, \
        unreadable input, or the Trust Server unreachable or failing TLS (which, is said)."
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
    /// The Linux IMA runtime measurement log: replay into PCR 10, appraise against a runtime
    /// policy.
    #[command(subcommand)]
    Ima(ima::ImaCommand),
    /// Runtime (IMA) policies: create (from a gold host's IMA log, a file tree or a Keylime
    /// policy), show, diff.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Trust Server: registered hosts (list, show, delete).
    #[command(subcommand)]
    Hosts(admin::HostsCommand),
    /// Trust Server: flavors, the gold standard (import from a host, list, delete).
    #[command(subcommand)]
    Flavor(admin::FlavorCommand),
    /// Trust Server: trust reports (a host's latest verdict, or its history).
    #[command(subcommand)]
    Report(admin::ReportCommand),
    /// Trust Server: attest a host now and print the new report.
    Attest(admin::AttestArgs),
    /// Trust Server: EKs accepted for registration, tpm-endorsements (add, list, revoke).
    #[command(subcommand)]
    Endorsement(admin::EndorsementCommand),
    /// Trust Server: accounts (add, list, passwd, delete). Needs an admin account.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Kubernetes: label nodes ibm-cloud.kubernetes.io/is-trusted from a Trust Server's
    /// verdicts (the standalone labeller, polling with a reader account).
    Label(Box<label::LabelCommand>),
    /// Kubernetes + Trust Server: walk the troubleshooting runbook (docs/runbook.md) and name
    /// the most likely root cause per node. Exit 0 healthy (warnings allowed), 1 a check
    /// failed, 2 doctor cannot run.
    Doctor(Box<doctor::DoctorCommand>),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quote(c) => quote::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Eventlog(c) => eventlog::run(c),
        Command::Ima(c) => ima::run(c),
        Command::Policy(c) => policy::run(c),
        Command::Hosts(c) => admin::run_hosts(c),
        Command::Flavor(c) => admin::run_flavor(c),
        Command::Report(c) => admin::run_report(c),
        Command::Attest(c) => admin::run_attest(c),
        Command::Endorsement(c) => admin::run_endorsement(c),
        Command::User(c) => users::run(c),
        Command::Label(c) => label::run(*c),
        Command::Doctor(c) => doctor::run(*c),
    };
    if let Err(e) = result {
        e.report();
        output::finish();
        std::process::exit(e.exit_code());
    }
    output::finish();
}
