//! `retrace export FORMAT CAPTURE... --out FILE`: the analysis of captures in formats other
//! tools read. One module per format (`otlp`), each a subcommand with its own `Args` (the
//! shared [`Input`] flattened in) and `run`.

pub mod otlp;

use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

/// Arguments of `retrace export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The output format.
    #[command(subcommand)]
    pub format: Format,
}

/// The formats `retrace export` writes.
#[derive(clap::Subcommand, Debug)]
pub enum Format {
    /// Traces as OTLP/JSON (`{"resourceSpans":[...]}`) with the OpenTelemetry semantic
    /// conventions: the body an OTLP/HTTP endpoint takes (`POST /v1/traces`, `Content-Type:
    /// application/json`).
    Otlp(otlp::Args),
}

/// Runs `retrace export`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.format {
        Format::Otlp(a) => otlp::run(a),
    }
}

/// What every export reads: the captures, the service naming rules and the time window, as
/// `retrace analyze` takes them.
#[derive(clap::Args, Debug)]
pub struct Input {
    /// Capture directories or segment files (several are merged, e.g. one per node).
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// YAML file naming and merging services (see `retrace analyze --services`).
    #[arg(long, value_name = "FILE.yaml")]
    pub services: Option<PathBuf>,
    /// Start of the window: RFC 3339 time, time of day (`14:03:10`), or offset from the
    /// capture start (`+30s`).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<retrace_analyze::TimeSpec>,
    /// End of the window (same forms as --from).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<retrace_analyze::TimeSpec>,
    /// Print nothing but errors (no progress bar, no summary line).
    #[arg(long)]
    pub quiet: bool,
}

fn parse_time(s: &str) -> Result<retrace_analyze::TimeSpec, String> {
    retrace_analyze::TimeSpec::parse(s).map_err(|e| e.to_string())
}

impl Input {
    /// Analyzes the captures.
    pub fn analyze(&self) -> anyhow::Result<retrace_analyze::Analysis> {
        let opts = retrace_analyze::AnalyzeOptions {
            services_file: self.services.clone(),
            progress: !self.quiet && std::io::stderr().is_terminal(),
            from: self.from,
            to: self.to,
            // Spans and traces are what the exports are made of.
            no_traces: false,
            findings_config: None,
            ..Default::default()
        };
        let names: Vec<String> = self
            .captures
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        retrace_analyze::analyze(&self.captures, &opts)
            .with_context(|| format!("analyzing {}", names.join(", ")))
    }
}

/// Writes an export through a buffer into `out` (`-`: standard output). A new or regular
/// file is written under a temporary name beside it and renamed when complete, so that a
/// failed export leaves no truncated file under the name asked for; anything else that
/// exists (a symbolic link, a FIFO, a device) is opened and written as it is.
pub fn write_output<T>(
    out: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    let ctx = || format!("writing {}", out.display());
    if out == Path::new("-") {
        let stdout = std::io::stdout();
        let mut w = BufWriter::with_capacity(1 << 16, stdout.lock());
        let v = write(&mut w).context("writing to standard output")?;
        w.flush().context("writing to standard output")?;
        return Ok(v);
    }
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => anyhow::bail!("{}: is a directory", out.display()),
        Ok(m) if !m.is_file() => {
            // Replacing it would replace the link or the device itself.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(out)
                .with_context(|| format!("opening {}", out.display()))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let v = write(&mut w).with_context(ctx)?;
            w.flush().with_context(ctx)?;
            return Ok(v);
        }
        _ => {}
    }
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a file name", out.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    let result = (|| -> anyhow::Result<T> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", out.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let v = write(&mut w).with_context(ctx)?;
        w.flush().with_context(ctx)?;
        drop(w);
        std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
        Ok(v)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
