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
    /// Capture directory (created 0700, every file in it 0600). One that already holds a
    /// capture is continued (a restart after a stop or a crash): new segments follow the old
    /// ones, which are kept. Exit status 3: the filesystem filled up (see docs/format.md).
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
    /// Redaction rules of your own, added to the built-in ones: YAML with `headers`, `keys`
    /// and `patterns` (regular expressions); see docs/redaction.md.
    #[arg(long, value_name = "FILE.yaml")]
    pub redact_rules: Option<PathBuf>,
    /// zstd compression level of segment blocks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// Print rates and drops every second on stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Socket sampler: this often, every connection of a followed process gives an RTT sample
    /// (idle ones too) and, when its peer advertises a zero window, a zero-window sample;
    /// sockets of the capture's network namespace ("off": never).
    #[arg(long, default_value = "1s", value_parser = optional_duration)]
    pub sock_interval: OptionalDuration,
    /// CPU profile: samples per second on every CPU, with kernel and user stacks (0: off).
    #[arg(long, default_value_t = 0, help_heading = "Profiles")]
    pub cpu_hz: u64,
    /// Off-CPU profile: record syscalls that blocked at least this long, with their stacks
    /// (e.g. 1ms; off by default: it runs at every context switch and syscall exit).
    #[arg(long, value_parser = duration, help_heading = "Profiles")]
    pub offcpu: Option<Duration>,
    /// Memory growth: poll RSS per process and memory per cgroup this often ("off": never).
    #[arg(long, default_value = "1s", value_parser = optional_duration, help_heading = "Profiles")]
    pub mem_interval: OptionalDuration,
    /// Heap profile of this process: allocator uprobes, sampled by bytes (repeatable).
    #[arg(long, help_heading = "Profiles")]
    pub mem_pid: Vec<u32>,
    /// Heap profile of processes with this command name, also those started later (repeatable).
    #[arg(long, help_heading = "Profiles")]
    pub mem_comm: Vec<String>,
    /// Heap sampling: mean bytes allocated between two samples (1: every allocation).
    #[arg(long, value_parser = size, default_value = "512KiB", help_heading = "Profiles")]
    pub mem_sample_bytes: u64,
    /// Page faults on new pages (resident memory growing): sample one in N with its stack, so
    /// that growth is attributed to code without allocator probes (0: off); only in the
    /// --mem-pid/--mem-comm processes when any are given.
    #[arg(long, default_value_t = 0, help_heading = "Profiles")]
    pub faults: u32,
    /// Bytes of user stack copied per sample for unwinding (multiple of 1KiB, at most 16KiB).
    #[arg(long, value_parser = size, default_value = "16KiB", help_heading = "Profiles")]
    pub stack_bytes: u64,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}
fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}
/// A duration, or "off".
#[derive(Clone, Copy, Debug)]
pub struct OptionalDuration(pub Option<Duration>);

fn optional_duration(s: &str) -> Result<OptionalDuration, String> {
    if s == "off" {
        return Ok(OptionalDuration(None));
    }
    duration(s).map(|d| OptionalDuration(Some(d)))
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
            redact_rules: self.redact_rules,
            zstd_level: self.zstd_level,
            verbose: self.verbose,
            sock_interval: self.sock_interval.0,
            profile: retrace_capture::profile::ProfileConfig {
                cpu_hz: self.cpu_hz,
                offcpu_min: self.offcpu,
                mem_interval: self.mem_interval.0,
                heap_pids: self.mem_pid,
                heap_comms: self.mem_comm,
                heap_sample_bytes: self.mem_sample_bytes,
                stack_bytes: u32::try_from(self.stack_bytes).unwrap_or(u32::MAX),
                fault_every: self.faults,
            },
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
    let summary = match retrace_capture::run(&cfg) {
        Ok(s) => s,
        Err(e) if e.is_disk_full() => {
            eprintln!(
                "retrace: capture stopped: the filesystem of {} is full ({e}); the segments \
                 written before are sealed where room was left for their footer, and readable up to \
                 their last whole block; free space and run the same command again to \
                 continue the capture",
                cfg.out.display()
            );
            return Ok(ExitCode::from(DISK_FULL));
        }
        Err(e) => return Err(e).context("capture failed"),
    };
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `retrace capture` when its filesystem filled up (2 is bad input or another
/// failure, 1 is not used by `capture`).
pub const DISK_FULL: u8 = 3;

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
    if let Some(p) = &s.profile {
        let mut samples: Vec<_> = p.samples.iter().collect();
        samples.sort();
        let list: Vec<String> = samples.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "  profiles: {}; {} user stacks unwound ({} stopped early), {} unreadable binaries",
            if list.is_empty() {
                "no samples".to_string()
            } else {
                list.join(", ")
            },
            p.unwind.stacks,
            p.unwind.truncated,
            p.unwind.unreadable_binaries
        );
        if !p.heap_processes.is_empty() {
            println!("  heap sampling in pid(s) {:?}", p.heap_processes);
        }
        for f in &p.heap_failures {
            println!("  heap sampling not attached: {f}");
        }
    }
}
