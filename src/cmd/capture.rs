//! `retrace capture`: record what the kernel sees into a capture directory (needs root).
//!
//! The options are parsed here; the work is `retrace_capture::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use retrace_capture::config::{parse_duration, parse_size};
use retrace_capture::{CaptureConfig, KeepPolicy, Streams, Summary};

/// Arguments of `retrace capture`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Capture directory (created 0700; segment files 0600).
    #[arg(long, short = 'o', default_value = "retrace-capture")]
    pub out: PathBuf,
    /// Stop after this long (30s, 15m, 2h); default: until SIGINT or SIGTERM.
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Hard quota on the directory's size (e.g. 10GiB): events beyond it are dropped and counted.
    #[arg(long, value_parser = size)]
    pub max_size: Option<u64>,
    /// Start a new segment file at this size.
    #[arg(long, value_parser = size, default_value = "256MiB")]
    pub segment_size: u64,
    /// Start a new segment file at this age.
    #[arg(long, value_parser = duration, default_value = "10m")]
    pub segment_time: Duration,
    /// Ring mode: keep the last `15m` or the last `2GiB` of segments, deleting older ones.
    #[arg(long, value_parser = keep)]
    pub keep: Option<KeepPolicy>,
    /// In ring mode, a mark keeps the segments from this long before to this long after it.
    #[arg(long, value_parser = duration, default_value = "5m")]
    pub pin: Duration,
    /// Only this process (tgid); filtered in the kernel.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only processes with this command name (as in /proc/PID/comm); filtered in the kernel.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only processes whose cgroup path contains this string.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Only TCP connections with this local or remote port; filtered in the kernel.
    #[arg(long)]
    pub port: Option<u16>,
    /// Bytes of payload kept at the start of each message (max 4096).
    #[arg(long, default_value_t = 512)]
    pub payload_bytes: u32,
    /// Node name recorded in the capture (default: the hostname).
    #[arg(long)]
    pub node: Option<String>,
    /// Streams to record: proc, tcp, l7, dns, logs (comma-separated) or all.
    #[arg(long, default_value = "proc,tcp,l7,dns,logs", value_parser = streams)]
    pub streams: Streams,
    /// Size of the kernel ring buffers for payload records, split between one ring per CPU
    /// (each at least 1 MiB, or the whole size when smaller: more in all on machines with
    /// many CPUs); the proc/tcp ring is a quarter of it.
    #[arg(long, value_parser = size, default_value = "8MiB")]
    pub ring_size: u64,
    /// Keep secrets (HTTP Authorization and cookies, PostgreSQL passwords) in payloads.
    #[arg(long)]
    pub no_redact: bool,
    /// zstd compression level of segment blocks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// Print rates and drops every second on stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}
fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}
fn keep(s: &str) -> Result<KeepPolicy, String> {
    s.parse()
        .map_err(|e: retrace_capture::CaptureError| e.to_string())
}
fn streams(s: &str) -> Result<Streams, String> {
    s.parse()
        .map_err(|e: retrace_capture::CaptureError| e.to_string())
}

impl Args {
    fn config(self) -> CaptureConfig {
        CaptureConfig {
            out: self.out,
            duration: self.duration,
            max_size: self.max_size,
            segment_size: self.segment_size,
            segment_time: self.segment_time,
            keep: self.keep.unwrap_or(KeepPolicy::All),
            pin: self.pin,
            pid: self.pid,
            comm: self.comm,
            cgroup: self.cgroup,
            port: self.port,
            payload_bytes: self.payload_bytes,
            node: self.node,
            streams: self.streams,
            ring_size: self.ring_size,
            redact: !self.no_redact,
            zstd_level: self.zstd_level,
            verbose: self.verbose,
        }
    }
}

/// Runs `retrace capture`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = args.config();
    eprintln!(
        "retrace: capturing {} into {} ({}); SIGINT or SIGTERM stops, `retrace mark {} NOTE` marks",
        cfg.streams.names().join(","),
        cfg.out.display(),
        cfg.duration
            .map(|d| format!("for {}s", d.as_secs_f64()))
            .unwrap_or_else(|| "until stopped".into()),
        cfg.out.display(),
    );
    let summary = retrace_capture::run(&cfg).context("capture failed")?;
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &Summary) {
    let secs = s.elapsed.as_secs_f64().max(1e-3);
    let w = &s.writer;
    println!("capture: {}", s.dir.display());
    println!(
        "  {:.1}s, {} events ({:.0}/s), {} kernel records",
        secs,
        w.events,
        w.events as f64 / secs,
        s.records
    );
    for (kind, n) in &w.events_by_kind {
        println!("    {kind:<16} {n}");
    }
    let dropped = s.dropped_total() + w.dropped_quota;
    println!("  dropped: {dropped}");
    for (kind, n) in &s.dropped_ring {
        println!("    {kind:<16} {n} (kernel ring full)");
    }
    for (kind, n) in &s.dropped_queue {
        println!("    {kind:<16} {n} (writer queue full)");
    }
    if w.dropped_quota > 0 {
        println!("    {:<16} {} (--max-size reached)", "any", w.dropped_quota);
    }
    for (prog, n) in &s.skipped_runs {
        println!(
            "  skipped by the kernel: {prog} {n} runs (a BPF program already running on that CPU)"
        );
    }
    if s.bad_records > 0 {
        println!("  unreadable kernel records: {}", s.bad_records);
    }
    let ratio = if w.bytes_on_disk > 0 {
        w.bytes_uncompressed as f64 / w.bytes_on_disk as f64
    } else {
        0.0
    };
    println!(
        "  bytes: {} on disk in {} segment(s), {} uncompressed (ratio {:.1}x)",
        w.bytes_on_disk, w.segments, w.bytes_uncompressed, ratio
    );
    if w.segments_deleted > 0 {
        println!("  segments deleted by --keep: {}", w.segments_deleted);
    }
    println!("  marks: {}, secrets redacted: {}", s.marks, s.redacted);
}
