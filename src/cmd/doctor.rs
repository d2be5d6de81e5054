//! `retrace doctor`: checks that this machine can capture, one line per check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use retrace_capture::doctor::{self, DoctorOptions, Status};

/// Arguments of `retrace doctor`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 when capture can work (warnings allowed), 1 when a check failed, \
                  2 on bad arguments."
)]
pub struct Args {
    /// Streams whose attach points to check (comma-separated: proc,tcp,l7,dns,logs).
    #[arg(long, value_delimiter = ',', default_value = "proc,tcp,l7,dns,logs")]
    pub streams: Vec<String>,
    /// Where the capture would be written: its free disk space is checked.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Repair what can be repaired safely: mount tracefs when it is missing.
    #[arg(long)]
    pub fix: bool,
}

/// Runs `retrace doctor`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = DoctorOptions {
        streams: args.streams,
        out: args.out,
        fix: args.fix,
    };
    let checks = doctor::run_checks(&opts).context("doctor")?;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    if failed > 0 {
        println!("{failed} check(s) failed: capture cannot work here until they are fixed");
        Ok(ExitCode::from(1))
    } else {
        println!(
            "capture can work here ({} checks, {warned} warning(s))",
            checks.len()
        );
        Ok(ExitCode::SUCCESS)
    }
}
