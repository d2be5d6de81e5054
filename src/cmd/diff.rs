//! `retrace diff` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace diff`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace diff`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace diff` is not implemented yet")
}
