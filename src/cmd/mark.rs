//! `retrace mark` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace mark`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace mark`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace mark` is not implemented yet")
}
