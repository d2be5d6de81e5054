//! `retrace analyze` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace analyze`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace analyze`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace analyze` is not implemented yet")
}
