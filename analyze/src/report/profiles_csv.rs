//! The profiles' files: `leaks.csv`, `cpu.csv`, `offcpu.csv`, `memory.csv` and the folded
//! stacks `cpu.folded` (samples), `offcpu.folded` (µs blocked) and `heap.folded`
//! (outstanding bytes), written only when the capture has profile events.

use std::io::Write as _;
use std::path::Path;

use super::format_wall;
use crate::model::Analysis;
use crate::profiles::{folded, Profiles};
use crate::AnalyzeError;

fn err(path: &Path, e: impl std::fmt::Display) -> AnalyzeError {
    AnalyzeError::Report {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write_csv(path: &Path, header: &[&str], rows: Vec<Vec<String>>) -> Result<(), AnalyzeError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_path(path)
        .map_err(|e| err(path, e))?;
    w.write_record(header).map_err(|e| err(path, e))?;
    for r in rows {
        w.write_record(&r).map_err(|e| err(path, e))?;
    }
    w.flush().map_err(|e| err(path, e))
}

fn num(v: f64) -> String {
    if v.is_nan() {
        String::new()
    } else {
        format!("{v:.0}")
    }
}

const LEAKS_CSV: &str = "leaks.csv";
const CPU_CSV: &str = "cpu.csv";
const OFFCPU_CSV: &str = "offcpu.csv";
const MEMORY_CSV: &str = "memory.csv";
const CPU_FOLDED: &str = "cpu.folded";
const OFFCPU_FOLDED: &str = "offcpu.folded";
const HEAP_FOLDED: &str = "heap.folded";
const FAULTS_FOLDED: &str = "faults.folded";
/// Every file [`write`] writes (only for captures with profile events).
pub(super) const FILES: [&str; 8] = [
    LEAKS_CSV,
    CPU_CSV,
    OFFCPU_CSV,
    MEMORY_CSV,
    CPU_FOLDED,
    OFFCPU_FOLDED,
    HEAP_FOLDED,
    FAULTS_FOLDED,
];

/// Writes the profile files into `dir`, when there is anything to write.
pub(crate) fn write(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let p = &a.profiles;
    if p.is_empty() {
        return Ok(());
    }
    write_csv(
        &dir.join(LEAKS_CSV),
        &[
            "service",
            "pid",
            "stack",
            "outstanding_bytes",
            "allocations",
            "growth_bytes_per_s",
            "first_seen",
            "verdict",
        ],
        p.leaks
            .iter()
            .map(|l| {
                vec![
                    l.service.clone(),
                    l.pid.to_string(),
                    l.stack.clone(),
                    num(l.outstanding_bytes),
                    format!("{:.1}", l.allocations),
                    format!("{:.1}", l.growth_bytes_per_s),
                    format_wall(l.first_seen_ns),
                    l.verdict.name().to_string(),
                ]
            })
            .collect(),
    )?;
    write_csv(
        &dir.join(CPU_CSV),
        &["service", "function", "total_pct", "self_pct", "samples"],
        p.cpu_functions
            .iter()
            .map(|f| {
                vec![
                    f.service.clone(),
                    f.function.clone(),
                    format!("{:.2}", f.total_pct),
                    format!("{:.2}", f.self_pct),
                    f.total.to_string(),
                ]
            })
            .collect(),
    )?;
    write_csv(
        &dir.join(OFFCPU_CSV),
        &[
            "service",
            "function",
            "total_pct",
            "self_pct",
            "blocked_s",
            "self_blocked_s",
        ],
        p.offcpu_functions
            .iter()
            .map(|f| {
                vec![
                    f.service.clone(),
                    f.function.clone(),
                    format!("{:.2}", f.total_pct),
                    format!("{:.2}", f.self_pct),
                    format!("{:.6}", f.total as f64 / 1e9),
                    format!("{:.6}", f.self_value as f64 / 1e9),
                ]
            })
            .collect(),
    )?;
    write_csv(
        &dir.join(MEMORY_CSV),
        &[
            "time",
            "kind",
            "service",
            "node",
            "pid",
            "cgroup",
            "rss_anon",
            "rss_file",
            "rss_shmem",
            "heap",
            "usage",
            "limit",
        ],
        memory_rows(p),
    )?;
    let folded_file = |name: &str, lines: Vec<(String, u64)>| {
        let path = dir.join(name);
        let mut out = Vec::new();
        for (line, v) in lines {
            let _ = writeln!(out, "{line} {v}");
        }
        super::write_file(&path, &out)
    };
    folded_file(CPU_FOLDED, cpu_folded(p))?;
    folded_file(OFFCPU_FOLDED, offcpu_folded(p))?;
    folded_file(HEAP_FOLDED, heap_folded(p))?;
    folded_file(
        FAULTS_FOLDED,
        folded(
            p.faults
                .iter()
                .map(|s| (s.service.as_str(), s.locations.as_slice(), s.value)),
            &p.catalog,
        ),
    )?;
    Ok(())
}

/// CPU samples by stack, the service as the root frame.
pub(crate) fn cpu_folded(p: &Profiles) -> Vec<(String, u64)> {
    folded(
        p.cpu
            .iter()
            .map(|s| (s.service.as_str(), s.locations.as_slice(), s.value)),
        &p.catalog,
    )
}

/// Off-CPU µs by blocking stack, the service as the root frame.
pub(crate) fn offcpu_folded(p: &Profiles) -> Vec<(String, u64)> {
    folded(
        p.offcpu
            .iter()
            .map(|s| (s.service.as_str(), s.locations.as_slice(), s.value / 1000)),
        &p.catalog,
    )
}

/// Outstanding bytes by allocating stack, the service as the root frame.
pub(crate) fn heap_folded(p: &Profiles) -> Vec<(String, u64)> {
    folded(
        p.leaks.iter().map(|l| {
            (
                l.service.as_str(),
                l.locations.as_slice(),
                l.outstanding_bytes.round() as u64,
            )
        }),
        &p.catalog,
    )
}

fn memory_rows(p: &Profiles) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for m in &p.processes {
        let len = m.rss_anon.len().max(m.heap.len());
        let at = |v: &[f64], i: usize| v.get(i).copied().map_or(String::new(), num);
        let first = (0..len).find(|&i| {
            m.rss_anon.get(i).is_some_and(|x| !x.is_nan())
                || m.heap.get(i).is_some_and(|x| *x != 0.0)
        });
        let Some(first) = first else { continue };
        for i in first..len {
            rows.push(vec![
                format_wall(p.bucket_start(i)),
                "process".into(),
                m.service.clone(),
                m.node.clone(),
                m.pid.to_string(),
                String::new(),
                at(&m.rss_anon, i),
                at(&m.rss_file, i),
                at(&m.rss_shmem, i),
                at(&m.heap, i),
                String::new(),
                String::new(),
            ]);
        }
    }
    for c in &p.cgroups {
        for (i, u) in c.usage.iter().enumerate() {
            if u.is_nan() {
                continue;
            }
            rows.push(vec![
                format_wall(p.bucket_start(i)),
                "cgroup".into(),
                String::new(),
                c.node.clone(),
                String::new(),
                c.cgroup.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                num(*u),
                c.limits.get(i).copied().map_or(String::new(), num),
            ]);
        }
    }
    rows
}
