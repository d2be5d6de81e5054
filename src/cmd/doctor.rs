//! `retrace doctor`: checks that this machine can capture, one line per check: among them,
//! the real BPF programs loaded as `retrace capture` would load them with the same streams
//! and filters (one check per program), and the static check of their stack.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use retrace_capture::doctor::{self, DoctorOptions, Status};
use retrace_capture::{CaptureConfig, Streams};

/// Arguments of `retrace doctor`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 when capture can work (warnings allowed), 1 when a check failed, \
                  2 on bad arguments."
)]
pub struct Args {
    /// Streams whose attach points to check and whose programs to load (comma-separated:
    /// proc,tcp,l7,dns,logs).
    #[arg(long, value_delimiter = ',', default_value = "proc,tcp,l7,dns,logs")]
    pub streams: Vec<String>,
    /// Where the capture would be written: its free disk space is checked.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Repair what can be repaired safely: mount tracefs when it is missing.
    #[arg(long)]
    pub fix: bool,
    /// Load only a trivial BPF program, not the real ones.
    #[arg(long)]
    pub no_programs: bool,
    /// The options of `retrace capture` that change what is loaded: the real programs are
    /// loaded as capture would load them with these (and `--streams`).
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The options of `retrace capture` that shape the BPF programs (same names and defaults).
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Only this process (tgid), as for `retrace capture`.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only processes with this command name, as for `retrace capture`.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only TCP connections with this local or remote port, as for `retrace capture`.
    #[arg(long)]
    pub port: Option<u16>,
    /// Bytes of payload kept at the start of each message, as for `retrace capture`.
    #[arg(long, default_value_t = 512)]
    pub payload_bytes: u32,
    /// Size of the kernel ring buffers, as for `retrace capture`.
    #[arg(long, value_parser = size, default_value = "8MiB")]
    pub ring_size: u64,
}

fn size(s: &str) -> Result<u64, String> {
    retrace_capture::config::parse_size(s).map_err(|e| e.to_string())
}

impl LoadArgs {
    /// The capture configuration these options and `streams` give (what is loaded).
    fn config(self, streams: &[String], out: &std::path::Path) -> anyhow::Result<CaptureConfig> {
        let streams: Streams = streams.join(",").parse().context("--streams")?;
        Ok(CaptureConfig {
            out: out.to_path_buf(),
            pid: self.pid,
            comm: self.comm,
            port: self.port,
            payload_bytes: self.payload_bytes,
            streams,
            ring_size: self.ring_size,
            ..Default::default()
        })
    }
}

/// Runs `retrace doctor`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let programs = if args.no_programs {
        None
    } else {
        Some(args.load.config(&args.streams, &args.out)?)
    };
    let opts = DoctorOptions {
        streams: args.streams,
        out: args.out,
        fix: args.fix,
        programs,
    };
    let checks = doctor::run_checks(&opts).context("doctor")?;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    if failed > 0 {
        println!("{failed} check(s) failed: capture cannot work here until they are fixed");
        Ok(ExitCode::from(1))
    } else {
        println!(
            "capture can work here ({} checks, {warned} warning(s))",
            checks.len()
        );
        Ok(ExitCode::SUCCESS)
    }
}
