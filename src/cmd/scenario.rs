//! `retrace scenario` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace scenario`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace scenario`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace scenario` is not implemented yet")
}
