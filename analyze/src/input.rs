//! Reading captures (through retrace-replay's time-ordered merge) into an [`Analyzer`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use retrace_replay::{Replay, ReplayOptions, ReplayedEvent};
use retrace_segment::ProcessInfo;

use crate::engine::{Analyzer, ReadStats};
use crate::{AnalyzeError, AnalyzeOptions};

/// Events per batch handed from the reading thread to the analyzer.
const BATCH: usize = 2048;
/// Batches queued between the two threads.
const IN_FLIGHT: usize = 4;

/// Whether `RETRACE_ANALYZE_TIMING=1` asks for per-phase CPU times on stderr.
pub fn timing() -> bool {
    std::env::var_os("RETRACE_ANALYZE_TIMING").is_some_and(|v| v == "1")
}

/// Prints the time since the last checkpoint when [`timing`] is on.
pub(crate) struct Checkpoints(Option<(std::time::Instant, f64)>);

impl Checkpoints {
    pub(crate) fn new() -> Self {
        Self(timing().then(|| (std::time::Instant::now(), thread_cpu_s())))
    }

    pub(crate) fn at(&mut self, what: &str) {
        if let Some((t, c)) = &mut self.0 {
            let cpu = thread_cpu_s();
            let (rss, peak) = rss_mib();
            eprintln!(
                "timing:   {what}: {:.3} s wall, {:.3} s cpu (this thread), RSS {rss} MiB (peak {peak})",
                t.elapsed().as_secs_f64(),
                cpu - *c
            );
            *t = std::time::Instant::now();
            *c = cpu;
        }
    }
}

/// The process's resident memory now and at its peak, MiB (0 when unknown).
pub fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time of the calling thread so far, seconds (0 when unknown).
pub fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Reads every capture in `paths` in time order and feeds the analyzer, then `observer`.
pub(crate) fn feed(
    paths: &[PathBuf],
    opts: &AnalyzeOptions,
    analyzer: &mut Analyzer,
    observer: &mut dyn crate::Observer,
) -> Result<ReadStats, AnalyzeError> {
    let ropts = ReplayOptions {
        from: opts.from,
        to: opts.to,
        clock: if opts.no_clock_correction {
            retrace_replay::ClockMode::Off
        } else {
            retrace_replay::ClockMode::Estimate
        },
        ..Default::default()
    };
    let replay = Replay::open(paths, ropts).map_err(|e| match e {
        // (It names its path already.)
        retrace_replay::ReplayError::Input { path, message } => {
            AnalyzeError::Capture { path, message }
        }
        e => AnalyzeError::Capture {
            path: paths.first().cloned().unwrap_or_default(),
            message: e.to_string(),
        },
    })?;
    let (_, total) = replay.progress();
    let done = replay.progress_counter();
    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "analyzing {bar:40} {percent:>3}% {binary_bytes}/{binary_total_bytes} eta {eta}",
        ) {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    // The replay (decompression, decoding, merging, process and socket tables) runs on its own
    // thread and hands batches of events over a bounded channel; used batches go back to it to
    // be cleared (their events dropped) and refilled, so that neither allocation nor freeing
    // falls on the analyzer's thread. At most `IN_FLIGHT + 1` batches exist at a time.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<ReplayedEvent>>(IN_FLIGHT);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<ReplayedEvent>>(IN_FLIGHT + 1);
    let replay = std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut replay = replay;
            loop {
                let mut batch = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                batch.clear();
                batch.extend(replay.by_ref().take(BATCH));
                let last = batch.len() < BATCH;
                if (!batch.is_empty() && full_tx.send(batch).is_err()) || last {
                    break;
                }
            }
            (replay, thread_cpu_s())
        });
        // Node names → analyzer indexes, cached per input.
        let mut node_of_input: Vec<Option<u16>> = Vec::new();
        let mut last_hint: Option<(u16, Arc<ProcessInfo>)> = None;
        let mut n: u64 = 0;
        for batch in full_rx {
            for ev in &batch {
                let idx = match node_of_input.get(ev.input).copied().flatten() {
                    Some(i) => i,
                    None => {
                        let i = analyzer.node(&ev.node);
                        if node_of_input.len() <= ev.input {
                            node_of_input.resize(ev.input + 1, None);
                        }
                        node_of_input[ev.input] = Some(i);
                        i
                    }
                };
                if let Some(p) = &ev.process {
                    // The same process (same table entry) as the last hint adds nothing.
                    let seen = last_hint
                        .as_ref()
                        .is_some_and(|(i, q)| *i == idx && Arc::ptr_eq(p, q));
                    if !seen {
                        analyzer.process_hint(idx, p);
                        last_hint = Some((idx, Arc::clone(p)));
                    }
                }
                analyzer.push_with_endpoints(idx, ev.wall_ns, &ev.event, ev.endpoints);
            }
            observer.batch(&batch);
            n += batch.len() as u64;
            // Full when the reader is ahead by IN_FLIGHT + 1 batches: then this one is freed here.
            let _ = empty_tx.try_send(batch);
            if let Some(b) = &bar {
                if n % (16 * BATCH as u64) < BATCH as u64 {
                    b.set_position(done.load(Ordering::Relaxed).min(total));
                }
            }
        }
        drop(empty_tx);
        producer.join().map_err(|_| AnalyzeError::Capture {
            path: paths.first().cloned().unwrap_or_default(),
            message: "the capture reader failed unexpectedly".into(),
        })
    })?;
    let (replay, reader_cpu) = replay;
    if timing() {
        eprintln!(
            "timing: reader thread {reader_cpu:.2} s cpu; analyzer thread {:.2} s cpu (feed)",
            thread_cpu_s()
        );
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = replay.report();
    // Damage everywhere and not one block read: not a capture to analyze (as `retrace replay`
    // says), rather than an empty report.
    if report.blocks_read == 0 {
        if let Some(first) = report.damage.first() {
            return Err(AnalyzeError::Capture {
                path: first.path.clone(),
                message: format!(
                    "nothing could be read ({}); expected a capture directory or segment files \
                     written by `retrace capture`",
                    first.message.lines().next().unwrap_or_default()
                ),
            });
        }
    }
    let mut manifest_dropped: BTreeMap<String, u64> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut warnings = Vec::new();
    let mut unclean_stops = 0;
    for input in &report.inputs {
        unclean_stops += input.restarts.iter().filter(|r| !r.clean).count() as u64
            + u64::from(input.has_manifest && input.ended_wall_ns.is_none());
        for (k, v) in &input.manifest_dropped_by_kind {
            *manifest_dropped.entry(k.clone()).or_insert(0) += v;
        }
        missing.extend(input.missing_segments.iter().cloned());
        if let Some(p) = &input.manifest_problem {
            warnings.push(format!("{}: {p}", input.path.display()));
        }
        warnings.extend(input.interruptions());
        // Nodes that recorded nothing in the window still belong to the capture.
        analyzer.node(&input.node);
    }
    for d in &report.damage {
        warnings.push(d.to_string());
    }
    for o in report
        .clock_offsets
        .iter()
        .filter(|o| o.samples == 0 && o.node != o.reference)
    {
        warnings.push(format!("clock of node {}: {}", o.node, o.note));
    }
    if report.reorder_overflows > 0 {
        warnings.push(format!(
            "{} events arrived too far out of order to be merged exactly",
            report.reorder_overflows
        ));
    }
    Ok(ReadStats {
        damaged_blocks: report.damaged_blocks,
        missing_segments: missing,
        manifest_dropped,
        warnings,
        unclean_stops,
        clock_offsets: report.clock_offsets.clone(),
    })
}
