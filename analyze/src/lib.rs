//! Offline analysis of retrace captures: connections and L7 exchanges, services and the
//! service map, RED metrics per edge, service and endpoint, and the report (CSV files,
//! `summary.json` and a self-contained `index.html`).
//!
//! Reading runs on its own thread (decompression, decoding, merging: retrace-replay), handing
//! batches of events to the analyzer's thread over a bounded channel; the aggregation uses
//! polars' thread pool and `requests.csv` is formatted on several threads. The output does
//! not depend on the threads: the same capture gives byte-identical files.
//! `RETRACE_ANALYZE_TIMING=1` prints the CPU time of each phase on stderr.
//!
//! ```no_run
//! # use std::path::{Path, PathBuf};
//! # fn main() -> Result<(), retrace_analyze::AnalyzeError> {
//! let analysis = retrace_analyze::analyze(&[PathBuf::from("capture/")], &Default::default())?;
//! retrace_analyze::write_report(&analysis, Path::new("report/"))?;
//! # Ok(()) }
//! ```

pub mod alerts;
mod config_file;
mod engine;
pub mod findings;
mod input;
mod join;
mod l7;
pub mod logs;
mod model;
mod permute;
pub mod profiles;
mod report;
pub mod services;
pub mod slo;
mod stats;
pub mod synth;
pub mod synth_profiles;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_traces;
mod traces;

use std::path::PathBuf;

pub use config_file::yaml_message;
pub use engine::{
    Analyzer, ReadStats, INCOMPLETE_RESPONSE_CLOSED, INCOMPLETE_RESPONSE_RESET, NO_RESPONSE_CLOSED,
    NO_RESPONSE_RESET,
};
pub use findings::FindingsConfig;
pub use input::{rss_mib, thread_cpu_s, timing};
pub use model::*;
pub use report::{escape_html, format_wall, write_report};
pub use retrace_replay::TimeSpec;
pub use services::ServicesFile;
pub use slo::{
    AlertFiring, AlertRuleResult, Breach, BurnWindow, ObjectiveResult, SloOptions, SloReport,
    SloStatus,
};
pub use stats::{bucket_width_ns, ERROR_RATE_CRITICAL, ERROR_RATE_WARNING};

/// What can go wrong in an analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Reading or writing a file failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (in the message, not a `source`: printed once).
        error: std::io::Error,
    },
    /// A configuration file (`--services`, `--slo`, `--alerts`, `--findings-config`) is
    /// malformed.
    #[error("{}{}: {message}", path.display(), location(*line, *column))]
    Config {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A capture could not be read at all.
    #[error("{path}: {message}")]
    Capture {
        /// The capture.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// No capture was given.
    #[error("no capture given")]
    NoInput,
    /// The aggregation engine failed.
    #[error("aggregation failed: {0}")]
    Aggregate(String),
    /// Writing the report failed.
    #[error("writing {path}: {message}")]
    Report {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// Options of an analysis.
#[derive(Clone, Debug, Default)]
pub struct AnalyzeOptions {
    /// `--services FILE.yaml`: names, merges and objectives of services.
    pub services_file: Option<PathBuf>,
    /// Only events at or after this time (absolute, time of day, or relative to the start).
    pub from: Option<TimeSpec>,
    /// Only events up to this time.
    pub to: Option<TimeSpec>,
    /// Show a progress bar on stderr when it is a terminal.
    pub progress: bool,
    /// Do not link spans into traces (no spans.csv, traces.csv, waterfalls): what linking
    /// costs is measured against this.
    pub no_traces: bool,
    /// `--findings-config FILE.yaml`: thresholds of the findings engine.
    pub findings_config: Option<PathBuf>,
    /// `--slo FILE.yaml`: service level objectives (defaults: Coroot's).
    pub slo_file: Option<PathBuf>,
    /// `--alerts FILE.yaml`: alert rules evaluated over the timeline.
    pub alerts_file: Option<PathBuf>,
    /// `--baseline CAPTURE`: what `baseline` means in alert rules (default: the capture's own
    /// first quarter).
    pub baseline: Vec<PathBuf>,
    /// Trust every node's clock as recorded instead of estimating and correcting the
    /// offsets between nodes (`--no-clock-correction`).
    pub no_clock_correction: bool,
}

impl AnalyzeOptions {
    /// Loads the services file, if any.
    pub fn load_services(&self) -> Result<ServicesFile, AnalyzeError> {
        match &self.services_file {
            Some(p) => ServicesFile::load(p),
            None => Ok(ServicesFile::default()),
        }
    }

    /// Loads the findings configuration, if any (else Coroot's defaults).
    pub fn load_findings_config(&self) -> Result<FindingsConfig, AnalyzeError> {
        match &self.findings_config {
            Some(p) => FindingsConfig::load(p),
            None => Ok(FindingsConfig::default()),
        }
    }
}

/// Analyzes the captures at `paths` (capture directories or segment files).
pub fn analyze(paths: &[PathBuf], opts: &AnalyzeOptions) -> Result<Analysis, AnalyzeError> {
    analyze_observed(paths, opts, &mut NoObserver)
}

/// Allocations of at least this many bytes are mapped on their own (glibc's
/// `M_MMAP_THRESHOLD`), so that freeing one gives its memory back to the system at once.
/// glibc's own threshold rises to the size of the largest mapped block freed (up to 32 MiB);
/// after that, the analysis' big short-lived buffers (polars' group-bys, the export's Parquet
/// row groups) come from heaps that keep their pages, and the phases' peaks add up. The
/// `retrace` binary fixes the threshold at start; the analyze benchmark gives its child the
/// same through `MALLOC_MMAP_THRESHOLD_`. On the 10 M-event benchmark capture, when this was
/// 1 MiB: `analyze`'s peak 594 -> 525 MiB, `export parquet`'s 849 -> 572 MiB, for ~2 s more
/// system time in the export on this VM (pages mapped afresh; a first touch costs ~12 us
/// here). 4 MiB since the request rows shrank (peaks ~400 MiB at 1 MiB): the batches and
/// pages of a few MiB that the export makes and frees by the thousand stay in the heaps, for
/// ~20 MiB more at the peak (export ~430 MiB, analyze ~420) and 1.5 s less system time in the
/// export (3.5 -> 1.9 s; wall 15.8-16.5 -> 14.4-14.9 s in alternating runs); at 8 MiB the
/// analysis peaks at ~490 MiB, at 32 MiB the export at ~490.
pub const MMAP_THRESHOLD: usize = 4 << 20;

/// Gives the pages of freed memory that glibc's heaps keep back to the system
/// (`malloc_trim`): freed blocks under [`MMAP_THRESHOLD`] stay in the heaps of the threads that
/// freed them, and count in the resident memory of every later phase. Called where a phase
/// has let go of much (a few ms each).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heaps; it takes their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What sees the replayed events beside the analysis ([`analyze_observed`]).
pub trait Observer {
    /// A batch of events, in time order, on the analyzer's thread after the analyzer took it.
    fn batch(&mut self, events: &[retrace_replay::ReplayedEvent]);
    /// The read is over; the analysis' last steps (its memory's peak) come next: the time to
    /// let go of what the observer holds.
    fn read_done(&mut self) {}
}

/// Sees nothing.
struct NoObserver;

impl Observer for NoObserver {
    fn batch(&mut self, _: &[retrace_replay::ReplayedEvent]) {}
}

/// [`analyze`], handing every batch of replayed events (in time order) to `observer` too:
/// what an export of the events reads in the same pass over the capture as the analysis
/// (`retrace export parquet`).
pub fn analyze_observed(
    paths: &[PathBuf],
    opts: &AnalyzeOptions,
    observer: &mut dyn Observer,
) -> Result<Analysis, AnalyzeError> {
    if paths.is_empty() {
        return Err(AnalyzeError::NoInput);
    }
    let services = opts.load_services()?;
    let findings = opts.load_findings_config()?;
    let mut slo_opts = slo::load_options(opts.slo_file.as_deref(), opts.alerts_file.as_deref())?;
    if !opts.baseline.is_empty() {
        let base_opts = AnalyzeOptions {
            services_file: opts.services_file.clone(),
            progress: opts.progress,
            no_traces: true,
            ..Default::default()
        };
        let base = analyze(&opts.baseline, &base_opts)?;
        let names: Vec<String> = opts
            .baseline
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        slo_opts.baseline = Some(alerts::Baseline::from_analysis(
            &base,
            &slo_opts.config,
            &names.join(", "),
        ));
    }
    let mut analyzer = Analyzer::new(services);
    analyzer.link_traces(!opts.no_traces);
    analyzer.findings_config(findings);
    let read = input::feed(paths, opts, &mut analyzer, observer)?;
    observer.read_done();
    let before = input::thread_cpu_s();
    let mut analysis = analyzer.finish(read)?;
    if input::timing() {
        eprintln!(
            "timing: finish {:.2} s cpu (analyzer thread)",
            input::thread_cpu_s() - before
        );
    }
    let before = input::thread_cpu_s();
    analysis.slo = slo::evaluate(&analysis, &slo_opts);
    if input::timing() {
        eprintln!(
            "timing: slo {:.3} s cpu (analyzer thread)",
            input::thread_cpu_s() - before
        );
    }
    Ok(analysis)
}

/// Analyzes events given directly: `(node name, wall-clock ns, event)`, in time order per node.
/// Used by tests and by tools that build events in memory.
pub fn analyze_events<'a>(
    events: impl IntoIterator<Item = (&'a str, u64, &'a retrace_segment::Event)>,
    services: ServicesFile,
) -> Result<Analysis, AnalyzeError> {
    let mut analyzer = Analyzer::new(services);
    let mut last: Option<(&str, u16)> = None;
    for (node, ts, ev) in events {
        let idx = match last {
            Some((n, i)) if n == node => i,
            _ => {
                let i = analyzer.node(node);
                last = Some((node, i));
                i
            }
        };
        analyzer.push(idx, ts, ev);
    }
    let mut analysis = analyzer.finish(ReadStats::default())?;
    analysis.slo = slo::evaluate(&analysis, &SloOptions::default());
    Ok(analysis)
}
