//! `retrace`: record what the kernel sees, analyze it later, anywhere.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("retrace: {err:#}");
            ExitCode::from(2)
        }
    }
}
