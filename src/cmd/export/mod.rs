//! `retrace export FORMAT CAPTURE... --out FILE`: the analysis of captures in formats other
//! tools read. One module per format (`otlp`, `pprof`, `parquet`, `openmetrics`, `chrome`), each a subcommand with its own `Args` (the
//! shared [`crate::cmd::analyze::Input`] flattened in) and `run`.

pub mod chrome;
pub mod openmetrics;
pub mod otlp;
pub mod parquet;
pub mod pprof;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
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
    /// Heap, CPU or off-CPU profiles as gzipped pprof `profile.proto` (what `go tool pprof`
    /// reads), symbolized from the capture.
    Pprof(pprof::Args),
    /// The analysis' tables (requests, spans, traces, TCP series, findings, SLO results) and
    /// the decoded events as a Parquet dataset partitioned by node and hour (hive style):
    /// `DIR/table=requests/node=web-1/hour=2026-12-06T12/part-….parquet`. Schema:
    /// docs/parquet.md.
    Parquet(parquet::Args),
    /// RED metrics per service, edge and endpoint and the TCP figures of each edge as
    /// OpenMetrics text with timestamps (one sample per series per time bucket), for
    /// `promtool tsdb create-blocks-from openmetrics`. Names: docs/openmetrics.md.
    Openmetrics(openmetrics::Args),
    /// The requests of a time window (`--from`, `--to`) as a Chrome trace (Trace Event
    /// Format: chrome://tracing, Perfetto): a timeline per process and thread, a slice per
    /// span, flow arrows from each span's parent to it.
    Chrome(chrome::Args),
}

/// Runs `retrace export`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.format {
        Format::Otlp(a) => otlp::run(a),
        Format::Pprof(a) => pprof::run(a),
        Format::Parquet(a) => parquet::run(a),
        Format::Openmetrics(a) => openmetrics::run(a),
        Format::Chrome(a) => chrome::run(a),
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
