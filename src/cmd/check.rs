//! `retrace check` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace check`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace check`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace check` is not implemented yet")
}
