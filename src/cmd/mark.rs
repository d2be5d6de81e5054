//! `retrace mark DIR "note"`: record a mark in the capture running into DIR.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `retrace mark`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The running capture's directory (its `--out`).
    pub dir: PathBuf,
    /// The note (e.g. "deploy v2.3 started").
    #[arg(default_value = "")]
    pub note: String,
}

/// Runs `retrace mark`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ts = retrace_capture::marks::send_mark(&args.dir, &args.note)
        .with_context(|| format!("cannot mark the capture in {}", args.dir.display()))?;
    println!("marked {} at monotonic {ts} ns", args.dir.display());
    Ok(ExitCode::SUCCESS)
}
