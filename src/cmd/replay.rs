//! `retrace replay` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace replay`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace replay`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace replay` is not implemented yet")
}
