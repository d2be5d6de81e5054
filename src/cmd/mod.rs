//! Subcommands: one module each, with its clap `Args` and a `run` returning the exit code.

pub mod analyze;
pub mod capture;
pub mod check;
pub mod diff;
pub mod doctor;
pub mod export;
pub mod mark;
pub mod replay;
pub mod scenario;
#[cfg(test)]
mod yaml_mutations;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Zero-instrumentation, eBPF-based observability after the fact.
///
/// Record what the kernel sees (processes, TCP connections, L7 requests and responses,
/// retransmits, DNS, log writes) into self-contained capture files with `retrace capture`, then
/// replay and analyze them on any machine, without root.
#[derive(Parser, Debug)]
#[command(name = "retrace", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that this machine can capture (BTF, privileges, tracepoints, ring buffers, disk).
    Doctor(doctor::Args),
    /// Record what the kernel sees into a capture directory (needs root).
    Capture(capture::Args),
    /// Record a mark (a note at this moment) in a running capture.
    Mark(mark::Args),
    /// Read captures back as one time-ordered stream of events.
    Replay(replay::Args),
    /// Analyze captures: services, service map, RED metrics; writes an HTML report and CSVs.
    Analyze(analyze::Args),
    /// Check the analysis of a capture against expectations (for CI).
    Check(check::Args),
    /// Compare the analyses of two captures.
    Diff(diff::Args),
    /// Export the analysis of captures for other tools: traces as OTLP/JSON, tables and events as
    /// Parquet, metrics as OpenMetrics, a window as a Chrome trace.
    Export(export::Args),
    /// Run, capture and analyze real workloads (scenarios/).
    Scenario(scenario::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::Capture(args) => capture::run(args),
        Command::Mark(args) => mark::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Check(args) => check::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Export(args) => export::run(args),
        Command::Scenario(args) => scenario::run(args),
    }
}
