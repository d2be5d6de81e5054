//! `retrace capture` (not implemented yet).

use std::process::ExitCode;

/// Arguments of `retrace capture`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `retrace capture`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`retrace capture` is not implemented yet")
}
