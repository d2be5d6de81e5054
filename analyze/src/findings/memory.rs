//! Memory findings from the profiles: `memory_leak` (an allocating stack judged a leak, the
//! stack as evidence) and `memory_growth` (RSS growing outside the tracked heap: the seed's
//! "heap stable, container memory growing"); an OOM kill of the same process follows from
//! them (`Out::memory_causes`, read by the OOM detector, which also cites the growth before
//! the kill).

use super::{Cx, Out};
use crate::model::{Finding, Severity};
use crate::profiles::{MemoryTrend, Verdict};
use crate::report::profiles_html::human_bytes;

/// Leak findings per process, at most (the fastest-growing stacks).
const LEAKS_PER_PROCESS: usize = 3;

fn rate(v: f64) -> String {
    format!("{}/s", human_bytes(v))
}

/// The innermost frame of a folded stack that is not the allocator itself.
fn culprit(stack: &str) -> &str {
    const ALLOCATORS: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "operator new",
        "__libc_malloc",
        "__libc_calloc",
        "__libc_realloc",
    ];
    stack
        .rsplit(';')
        .find(|f| !ALLOCATORS.iter().any(|a| f.starts_with(a)))
        .unwrap_or(stack)
}

impl Cx<'_> {
    pub(super) fn memory(&self, out: &mut Out) {
        let p = &self.a.profiles;
        let end = self.a.window_end_ns;
        let mut per_process: std::collections::BTreeMap<(&str, u32), usize> = Default::default();
        let mut leaks: Vec<_> = p
            .leaks
            .iter()
            .filter(|l| l.verdict == Verdict::Leak)
            .collect();
        leaks.sort_by(|a, b| {
            (&a.service, &a.node, a.pid)
                .cmp(&(&b.service, &b.node, b.pid))
                .then(b.growth_bytes_per_s.total_cmp(&a.growth_bytes_per_s))
                .then(a.stack.cmp(&b.stack))
        });
        for l in leaks {
            let n = per_process.entry((&l.node, l.pid)).or_default();
            *n += 1;
            if *n > LEAKS_PER_PROCESS {
                continue;
            }
            let proc_mem = p
                .processes
                .iter()
                .find(|m| m.node == l.node && m.pid == l.pid);
            let oom = proc_mem.and_then(|m| m.oom_killed_ns);
            let mut evidence = vec![
                format!("allocating stack: {}", l.stack.replace(';', " → ")),
                format!(
                    "outstanding {} in {:.0} allocations at the end, growing {} (R² {:.2}) \
                     since {}",
                    human_bytes(l.outstanding_bytes),
                    l.allocations,
                    rate(l.growth_bytes_per_s),
                    l.growth_r2,
                    self.when(l.first_seen_ns)
                ),
            ];
            if let Some(s) = l.old_outstanding_share {
                evidence.push(format!(
                    "{:.0}% of the bytes allocated before the age threshold never freed",
                    s * 100.0
                ));
            }
            if let Some(m) = proc_mem {
                evidence.push(format!(
                    "process memory: {} (RSS {}, RSS growth {})",
                    m.trend.describe(),
                    m.rss_end.map_or("–".into(), human_bytes),
                    m.rss_growth_bytes_per_s.map_or("–".into(), rate)
                ));
            }
            let i = out.push(
                Finding {
                    start_ns: l.first_seen_ns,
                    end_ns: oom.unwrap_or(end),
                    severity: if oom.is_some() {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    kind: "memory_leak".into(),
                    service: l.service.clone(),
                    processes: vec![format!("{}/{}", l.node, l.pid)],
                    summary: format!(
                        "{} leaks memory from {}: {} never freed",
                        l.service,
                        culprit(&l.stack),
                        rate(l.growth_bytes_per_s)
                    ),
                    likely_cause: format!(
                        "{} allocates and never frees: its outstanding memory grows steadily \
                         and its old allocations stay live",
                        culprit(&l.stack)
                    ),
                    evidence,
                    ..Default::default()
                },
                Vec::new(),
            );
            out.memory_causes
                .entry((l.service.clone(), l.pid))
                .or_insert(i);
        }
        for m in &p.processes {
            if !matches!(
                m.trend,
                MemoryTrend::RssOutsideHeap | MemoryTrend::RssGrowing
            ) {
                continue;
            }
            let first = m
                .rss_anon
                .iter()
                .position(|x| !x.is_nan())
                .map_or(self.a.window_start_ns, |i| p.bucket_start(i));
            let i = out.push(
                Finding {
                    start_ns: first,
                    end_ns: m.oom_killed_ns.unwrap_or(end),
                    severity: if m.oom_killed_ns.is_some() {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    kind: "memory_growth".into(),
                    service: m.service.clone(),
                    processes: vec![format!("{}/{}", m.node, m.pid)],
                    summary: format!(
                        "{} pid {}: RSS grows {}; {}",
                        m.service,
                        m.pid,
                        m.rss_growth_bytes_per_s.map_or("–".into(), rate),
                        m.trend.describe()
                    ),
                    likely_cause: if m.trend == MemoryTrend::RssOutsideHeap {
                        "memory allocated outside the tracked allocator (mmap, a library's own \
                         allocator or pools) and not returned"
                            .into()
                    } else {
                        "resident memory grows; no allocation of the process was tracked".into()
                    },
                    evidence: std::iter::once(format!(
                        "RSS {} at the end; tracked heap {} (growth {})",
                        m.rss_end.map_or("–".into(), human_bytes),
                        m.heap_end.map_or("–".into(), human_bytes),
                        m.heap_growth_bytes_per_s.map_or("–".into(), rate)
                    ))
                    .chain(
                        p.faults
                            .iter()
                            .filter(|f| f.node == m.node && f.pid == m.pid)
                            .max_by(|a, b| {
                                a.value.cmp(&b.value).then(b.locations.cmp(&a.locations))
                            })
                            .map(|f| {
                                format!(
                                    "new pages touched most by: {} ({} pages)",
                                    crate::profiles::folded_stack(&f.locations, &p.catalog)
                                        .replace(';', " → "),
                                    f.value
                                )
                            }),
                    )
                    .collect(),
                    ..Default::default()
                },
                Vec::new(),
            );
            out.memory_causes
                .entry((m.service.clone(), m.pid))
                .or_insert(i);
        }
    }

    /// What the profiles tell of the growth before process `pid`'s OOM kill.
    pub(super) fn oom_growth(&self, service: &str, pid: u32) -> Vec<String> {
        self.a
            .profiles
            .ooms
            .iter()
            .filter(|o| o.service == service && o.pid == pid)
            .flat_map(|o| {
                let mut v = Vec::new();
                if let Some(g) = o.rss_growth_bytes_per_s {
                    v.push(format!("RSS grew {} before the kill", rate(g)));
                }
                if let (Some(s), Some(g)) = (&o.top_stack, o.top_stack_growth_bytes_per_s) {
                    v.push(format!(
                        "fastest-growing allocating stack: {} ({})",
                        s.replace(';', " → "),
                        rate(g)
                    ));
                }
                v
            })
            .collect()
    }
}
