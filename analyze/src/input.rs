//! Reading captures (through retrace-replay's time-ordered merge) into an [`Analyzer`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use retrace_replay::{Replay, ReplayOptions};

use crate::engine::{Analyzer, ReadStats};
use crate::{AnalyzeError, AnalyzeOptions};

/// Reads every capture in `paths` in time order and feeds the analyzer.
pub(crate) fn feed(
    paths: &[PathBuf],
    opts: &AnalyzeOptions,
    analyzer: &mut Analyzer,
) -> Result<ReadStats, AnalyzeError> {
    let ropts = ReplayOptions {
        from: opts.from,
        to: opts.to,
        ..Default::default()
    };
    let mut replay = Replay::open(paths, ropts).map_err(|e| AnalyzeError::Capture {
        path: paths.first().cloned().unwrap_or_default(),
        message: e.to_string(),
    })?;
    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let (_, total) = replay.progress();
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
    // Node names → analyzer indexes, cached per input.
    let mut node_of_input: Vec<Option<u16>> = Vec::new();
    let mut n: u64 = 0;
    while let Some(ev) = replay.next() {
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
            analyzer.process_hint(idx, p);
        }
        analyzer.push_with_endpoints(idx, ev.wall_ns, &ev.event, ev.endpoints);
        n += 1;
        if n % 65_536 == 0 {
            if let Some(b) = &bar {
                b.set_position(replay.progress().0);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = replay.report();
    let mut manifest_dropped: BTreeMap<String, u64> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut warnings = Vec::new();
    for input in &report.inputs {
        for (k, v) in &input.manifest_dropped_by_kind {
            *manifest_dropped.entry(k.clone()).or_insert(0) += v;
        }
        missing.extend(input.missing_segments.iter().cloned());
        if let Some(p) = &input.manifest_problem {
            warnings.push(format!("{}: {p}", input.path.display()));
        }
        // Nodes that recorded nothing in the window still belong to the capture.
        analyzer.node(&input.node);
    }
    for d in &report.damage {
        warnings.push(d.to_string());
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
    })
}
