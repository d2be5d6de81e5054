//! `retrace scenario`: run, capture and analyze real workloads (`scenarios/<name>/`).
//!
//! `retrace scenario run scenarios/checkout --out DIR` checks that it can capture (root,
//! `retrace doctor`), starts the scenario's services with real programs, starts `retrace
//! capture`, drives the traffic, applies the faults, stops everything, analyzes the capture
//! into `DIR/analysis` and checks the scenario's expectations. Whatever happens (an error,
//! Ctrl-C, a panic) no process and no iptables rule is left behind (see `guard`).

pub mod cgroup;
pub mod guard;
pub mod loadgen;
pub mod runner;
pub mod spec;

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `retrace scenario`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Run a scenario for real (needs root): services, capture, traffic, faults, analysis.
    Run(RunArgs),
    /// Check scenario files and print what each would do, without running anything.
    Validate {
        /// Scenario folders (or scenario.yaml files).
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// The built-in load generator (started by `run`).
    #[command(hide = true)]
    Loadgen {
        /// Traffic, as JSON.
        #[arg(long)]
        spec: PathBuf,
        /// Where to write the report (JSON).
        #[arg(long)]
        report: PathBuf,
    },
}

/// Arguments of `retrace scenario run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The scenario folder (holding scenario.yaml).
    pub scenario: PathBuf,
    /// Output directory (must not exist or be empty): capture/, analysis/, logs/, reports.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the expectation results as JUnit XML.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Keep the services' work folder (data directories, rendered configs) for debugging.
    #[arg(long)]
    pub keep_workdir: bool,
}

/// Runs `retrace scenario`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Run(a) => runner::run(&a),
        Sub::Validate { scenarios } => {
            for s in &scenarios {
                let sc = spec::load_scenario(s)?;
                println!(
                    "{}: {} services, {} of traffic, {} faults, {} service and {} edge expectations",
                    sc.name,
                    sc.services.len(),
                    sc.traffic.duration,
                    sc.faults.len(),
                    sc.expect.services.len(),
                    sc.expect.edges.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Sub::Loadgen { spec, report } => {
            loadgen::main(&spec, &report)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
