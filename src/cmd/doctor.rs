//! `retrace doctor` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace doctor`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace doctor`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace doctor` is not implemented yet")
}
