//! Profiles: memory-leak suspects, RSS against the tracked heap, cgroup memory, CPU and
//! off-CPU profiles, from the capture's profile events (format version 3), symbolized offline
//! from the symbol tables the capture carries.
//!
//! [`Collector`] is fed by `Analyzer::push` (one line) in the one replay pass and aggregates
//! as it goes, in bounded memory: heap samples live by address until freed ([`heap`]), CPU
//! and off-CPU weights and sampled page faults (resident growth by code) summed by (process,
//! user stack, kernel stack) ([`cpu`]), levels over
//! time on one shared grid of at most [`series::MAX_BUCKETS`] buckets ([`series`]), stack and
//! binary definitions once per node ([`symbolize`]). [`Collector::finish`] resolves the
//! stacks into a [`Catalog`] of locations, attributes processes to their services and judges
//! the leak suspects; the result is `Analysis::profiles` ([`Profiles`]): leaks.csv, cpu.csv,
//! offcpu.csv, memory.csv, the folded stacks, the report's Profiles section, the findings'
//! `memory_leak`, the alert rules' memory metrics, and `retrace export pprof`.

pub mod cpu;
pub mod heap;
pub mod series;
pub mod symbolize;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use retrace_segment::{Event, EventBody};
use serde::{Deserialize, Serialize};

pub use cpu::{folded, folded_name, FunctionShare, StackWeight};
pub use heap::{sample_weight, Verdict};
pub use symbolize::{Catalog, Location, Mapping};

use cpu::Tally;
use heap::HeapTracker;
use series::{linear_fit, Grid, Level};
use symbolize::Definitions;

/// Intervals between CPU samples kept to derive the sampling frequency.
const MAX_INTERVALS: usize = 8192;
/// Leak suspects listed in summary.json, at most.
pub const SUMMARY_SUSPECTS: usize = 20;
/// Functions per service listed in summary.json, at most.
pub const SUMMARY_FUNCTIONS: usize = 10;
/// RSS grows when a line fits it (R² ≥ 0.6) and adds this share of its mean over the span.
const RSS_GROWTH_SHARE: f64 = 0.1;

/// One process's allocating stack, judged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LeakSuspect {
    /// The process's service.
    pub service: String,
    /// Node name.
    pub node: String,
    /// Process id.
    pub pid: u32,
    /// The stack, folded from the outermost frame to the allocator (`main;f;malloc`).
    pub stack: String,
    /// Locations ([`Catalog`] indexes), innermost first.
    #[serde(skip)]
    pub locations: Vec<u32>,
    /// Outstanding bytes at the end (weight-corrected estimate).
    pub outstanding_bytes: f64,
    /// Outstanding allocations at the end (weight-corrected estimate).
    pub allocations: f64,
    /// Bytes allocated in all (weight-corrected).
    pub allocated_bytes: f64,
    /// Allocations made in all (weight-corrected).
    pub allocated_count: f64,
    /// Sampled allocations seen.
    pub samples: u64,
    /// Growth of the outstanding bytes, bytes/s (least squares over the buckets).
    pub growth_bytes_per_s: f64,
    /// How well a line fits the outstanding bytes (R²).
    pub growth_r2: f64,
    /// Share of the bytes allocated before the age threshold still outstanding at the end.
    pub old_outstanding_share: Option<f64>,
    /// First sampled allocation, wall ns.
    pub first_seen_ns: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Outstanding bytes per bucket of the grid.
    #[serde(skip)]
    pub series: Vec<f64>,
}

/// What a process's RSS does next to its tracked heap.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemoryTrend {
    /// Neither grows.
    #[default]
    Stable,
    /// RSS grows, the tracked heap does not (or far less): native memory outside the tracked
    /// allocator (mmap, another allocator, a library's own pools).
    RssOutsideHeap,
    /// The tracked heap grows and RSS with it.
    HeapDrivesRss,
    /// The tracked heap grows within resident memory that does not grow (freed memory
    /// reused).
    HeapWithinRss,
    /// RSS grows and no allocation of the process is tracked.
    RssGrowing,
}

impl MemoryTrend {
    /// A sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            MemoryTrend::Stable => "stable",
            MemoryTrend::RssOutsideHeap => {
                "heap stable, RSS growing: native memory outside the tracked allocator"
            }
            MemoryTrend::HeapDrivesRss => "heap growing, RSS growing with it",
            MemoryTrend::HeapWithinRss => {
                "heap growing, RSS stable: the allocator reuses memory already resident"
            }
            MemoryTrend::RssGrowing => "RSS growing (no allocation tracked in this process)",
        }
    }
}

/// A process's memory over time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ProcessMemory {
    /// Service.
    pub service: String,
    /// Node name.
    pub node: String,
    /// Process id.
    pub pid: u32,
    /// RSS (anon + file + shmem) at the end, bytes.
    pub rss_end: Option<f64>,
    /// Tracked heap (outstanding, weight-corrected) at the end, bytes.
    pub heap_end: Option<f64>,
    /// Growth of the anonymous RSS, bytes/s.
    pub rss_growth_bytes_per_s: Option<f64>,
    /// Growth of the tracked heap, bytes/s.
    pub heap_growth_bytes_per_s: Option<f64>,
    /// The two side by side.
    pub trend: MemoryTrend,
    /// OOM-killed at (wall ns).
    pub oom_killed_ns: Option<u64>,
    /// Resident anonymous memory per bucket (NaN: no sample yet).
    #[serde(skip)]
    pub rss_anon: Vec<f64>,
    /// Resident file-backed memory per bucket.
    #[serde(skip)]
    pub rss_file: Vec<f64>,
    /// Resident shared memory per bucket.
    #[serde(skip)]
    pub rss_shmem: Vec<f64>,
    /// Tracked heap per bucket (empty when none is tracked).
    #[serde(skip)]
    pub heap: Vec<f64>,
}

/// A cgroup's memory over time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CgroupMemorySummary {
    /// Node name.
    pub node: String,
    /// cgroup path.
    pub cgroup: String,
    /// Services with a process in it.
    pub services: Vec<String>,
    /// Highest usage seen, bytes.
    pub peak_usage: u64,
    /// Last limit seen, bytes (none: unlimited).
    pub limit: Option<u64>,
    /// Growth of the usage, bytes/s.
    pub growth_bytes_per_s: Option<f64>,
    /// At that rate, seconds from the end until the limit.
    pub seconds_to_limit: Option<f64>,
    /// OOM kills in the cgroup during the capture.
    pub oom_kills: u64,
    /// Usage per bucket.
    #[serde(skip)]
    pub usage: Vec<f64>,
    /// Limit per bucket (NaN: unlimited or unknown).
    #[serde(skip)]
    pub limits: Vec<f64>,
}

/// An OOM kill and the growth before it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct OomGrowth {
    /// Service.
    pub service: String,
    /// Node name.
    pub node: String,
    /// Process id.
    pub pid: u32,
    /// When, wall ns.
    pub ts_ns: u64,
    /// RSS growth before it, bytes/s.
    pub rss_growth_bytes_per_s: Option<f64>,
    /// The process's fastest-growing allocating stack, folded.
    pub top_stack: Option<String>,
    /// Its growth, bytes/s.
    pub top_stack_growth_bytes_per_s: Option<f64>,
}

/// Everything the profile events of a capture tell.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Profiles {
    /// CPU samples.
    pub cpu_samples: u64,
    /// The CPU sampling frequency the samples' spacing shows (median interval per CPU), Hz.
    pub cpu_frequency_hz: Option<f64>,
    /// Off-CPU blocking episodes.
    pub offcpu_events: u64,
    /// Page faults on new pages, weight-corrected (sampled: `fault` events).
    pub page_faults: u64,
    /// Sampled allocations.
    pub heap_samples: u64,
    /// Frees whose allocation was not sampled.
    pub unmatched_frees: u64,
    /// Samples whose user stack the unwinder cut short.
    pub truncated_stacks: u64,
    /// Start of the grid of the series, wall ns.
    pub series_start_ns: u64,
    /// Bucket width of the series, ns.
    pub series_bucket_ns: u64,
    /// The first [`SUMMARY_SUSPECTS`] of `leaks`.
    pub leak_suspects: Vec<LeakSuspect>,
    /// Top functions per service (at most [`SUMMARY_FUNCTIONS`] each).
    pub cpu_top: Vec<FunctionShare>,
    /// Top blocking functions per service, by blocked time (at most [`SUMMARY_FUNCTIONS`]).
    pub offcpu_top: Vec<FunctionShare>,
    /// Processes with memory samples or a tracked heap.
    pub processes: Vec<ProcessMemory>,
    /// cgroups with memory samples.
    pub cgroups: Vec<CgroupMemorySummary>,
    /// OOM kills with the growth before them.
    pub ooms: Vec<OomGrowth>,
    /// Every allocating stack per process, judged (leaks.csv): leaks first, then growing
    /// caches, then steady ones; fastest-growing, then largest first.
    #[serde(skip)]
    pub leaks: Vec<LeakSuspect>,
    /// Every function per service (cpu.csv).
    #[serde(skip)]
    pub cpu_functions: Vec<FunctionShare>,
    /// Every blocking function per service (offcpu.csv; values in ns).
    #[serde(skip)]
    pub offcpu_functions: Vec<FunctionShare>,
    /// CPU samples by stack.
    #[serde(skip)]
    pub cpu: Vec<StackWeight>,
    /// Off-CPU time by stack (value: ns blocked; count: episodes).
    #[serde(skip)]
    pub offcpu: Vec<StackWeight>,
    /// Pages touched for the first time by stack (value: faults, weight-corrected; count:
    /// samples): resident growth attributed to code without allocator probes.
    #[serde(skip)]
    pub faults: Vec<StackWeight>,
    /// Functions, mappings and locations of the stacks.
    #[serde(skip)]
    pub catalog: Catalog,
}

impl Profiles {
    /// Whether the capture had no profile event (summary.json then has no `profiles`).
    pub fn is_empty(&self) -> bool {
        self.cpu_samples == 0
            && self.offcpu_events == 0
            && self.page_faults == 0
            && self.heap_samples == 0
            && self.processes.is_empty()
            && self.cgroups.is_empty()
    }

    /// The highest usage of `service`'s cgroups at wall time `ts`, as a fraction of its limit
    /// (`container.memory.usage` of the alert rules); none without a limited cgroup sample.
    pub fn memory_usage_share(&self, service: &str, ts: u64) -> Option<f64> {
        if self.series_bucket_ns == 0 || ts < self.series_start_ns {
            return None;
        }
        let i = ((ts - self.series_start_ns) / self.series_bucket_ns) as usize;
        self.cgroups
            .iter()
            .filter(|c| c.services.iter().any(|s| s == service))
            .filter_map(|c| {
                let i = i.min(c.usage.len().checked_sub(1)?);
                let (u, l) = (c.usage[i], *c.limits.get(i)?);
                (!u.is_nan() && !l.is_nan() && l > 0.0).then(|| u / l)
            })
            .reduce(f64::max)
    }

    /// Start of bucket `i` of the series, wall ns.
    pub fn bucket_start(&self, i: usize) -> u64 {
        self.series_start_ns
            .saturating_add(self.series_bucket_ns.saturating_mul(i as u64))
    }
}

#[derive(Default)]
struct ProcMem {
    anon: Level,
    file: Level,
    shmem: Level,
}

#[derive(Default)]
struct CgroupTrack {
    usage: Level,
    limit: Level,
    peak: u64,
    last_limit: Option<u64>,
    oom_first: Option<u64>,
    oom_last: u64,
}

/// The streaming side: fed every event, keeps only what the profiles need.
#[derive(Default)]
pub struct Collector {
    grid: Grid,
    defs: Definitions,
    heap: HeapTracker,
    cpu: Tally,
    offcpu: Tally,
    faults: Tally,
    mem: HashMap<(u16, u32), ProcMem>,
    cgroups: HashMap<(u16, String), CgroupTrack>,
    /// (node, pid) → OOM kill time.
    ooms: BTreeMap<(u16, u32), u64>,
    /// (node, pid) → exit time.
    exits: HashMap<(u16, u32), u64>,
    /// (node, cpu) → last CPU sample.
    cpu_last: HashMap<(u16, u32), u64>,
    intervals: Vec<u64>,
    truncated: u64,
    heap_samples: u64,
    last_ts: u64,
}

impl Collector {
    /// Feeds one event of `node` at wall time `ts`.
    pub fn push(&mut self, node: u16, ts: u64, ev: &Event) {
        match &ev.body {
            EventBody::Binary(b) => self.defs.binary(node, b),
            EventBody::UserStack(s) => self.defs.user_stack(node, s),
            EventBody::StackDef(s) => self.defs.stack_def(node, s),
            EventBody::CpuSample(c) => {
                self.see(ts);
                if let Some(u) = c.user_stack {
                    self.truncated += u64::from(self.defs.truncated(node, u));
                }
                self.cpu.add((node, c.pid, c.user_stack, c.kernel_stack), 1);
                if let Some(prev) = self.cpu_last.insert((node, c.cpu), ts) {
                    let d = ts.saturating_sub(prev);
                    if d > 0 && d < 1_000_000_000 && self.intervals.len() < MAX_INTERVALS {
                        self.intervals.push(d);
                    }
                }
            }
            EventBody::OffCpu(o) => {
                self.see(ts);
                self.offcpu
                    .add((node, o.pid, o.user_stack, o.kernel_stack), o.blocked_ns);
            }
            EventBody::PageFault(f) => {
                self.see(ts);
                self.faults
                    .add((node, f.pid, Some(f.stack), None), f.weight.max(1));
            }
            EventBody::HeapAlloc(a) => {
                self.see(ts);
                self.heap_samples += 1;
                self.heap.alloc(&mut self.grid, node, ts, a);
            }
            EventBody::HeapFree(f) => {
                self.see(ts);
                self.heap.free(&mut self.grid, node, ts, f);
            }
            EventBody::MemUsage(m) => {
                self.see(ts);
                let p = self.mem.entry((node, m.pid)).or_insert_with(|| ProcMem {
                    anon: Level::new(f64::NAN),
                    file: Level::new(f64::NAN),
                    shmem: Level::new(f64::NAN),
                });
                p.anon.set(&mut self.grid, ts, m.rss_anon as f64);
                p.file.set(&mut self.grid, ts, m.rss_file as f64);
                p.shmem.set(&mut self.grid, ts, m.rss_shmem as f64);
            }
            EventBody::CgroupMemory(c) => {
                self.see(ts);
                let key = (node, c.cgroup.clone());
                let t = self.cgroups.entry(key).or_insert_with(|| CgroupTrack {
                    usage: Level::new(f64::NAN),
                    limit: Level::new(f64::NAN),
                    ..Default::default()
                });
                t.usage.set(&mut self.grid, ts, c.usage as f64);
                t.limit
                    .set(&mut self.grid, ts, c.limit.map_or(f64::NAN, |l| l as f64));
                t.peak = t.peak.max(c.usage);
                t.last_limit = c.limit;
                t.oom_first.get_or_insert(c.oom_kills);
                t.oom_last = c.oom_kills;
            }
            EventBody::OomKill(o) => {
                self.ooms.entry((node, o.pid)).or_insert(ts);
            }
            EventBody::ProcExit(e) => {
                self.exits.insert((node, e.pid), ts);
                if e.oom_killed {
                    self.ooms.entry((node, e.pid)).or_insert(ts);
                }
            }
            _ => {}
        }
    }

    fn see(&mut self, ts: u64) {
        self.last_ts = self.last_ts.max(ts);
    }

    /// Processes with profile data (to be named as services).
    pub fn processes(&self) -> BTreeSet<(u16, u32)> {
        let mut out: BTreeSet<(u16, u32)> = self.mem.keys().copied().collect();
        out.extend(self.heap.slots.iter().map(|s| (s.node, s.pid)));
        out.extend(self.cpu.by_stack.keys().map(|k| (k.0, k.1)));
        out.extend(self.offcpu.by_stack.keys().map(|k| (k.0, k.1)));
        out.extend(self.faults.by_stack.keys().map(|k| (k.0, k.1)));
        out
    }

    /// Resolves and judges everything; `service(node, pid)` names a process's service,
    /// `nodes[i]` is node `i`'s name, `end_ns` the end of the capture (wall ns).
    pub fn finish(
        mut self,
        nodes: &[String],
        service: impl Fn(u16, u32) -> String,
        end_ns: u64,
    ) -> Profiles {
        let node_name = |n: u16| nodes.get(usize::from(n)).cloned().unwrap_or_default();
        let mut out = Profiles {
            heap_samples: self.heap_samples,
            unmatched_frees: self.heap.unmatched_frees,
            truncated_stacks: self.truncated,
            ..Default::default()
        };
        let Some(t0) = self.grid.t0 else {
            // No timed profile event; stacks alone make no profile.
            return out;
        };
        let end_ns = end_ns.max(self.last_ts);
        let n = self.grid.index(end_ns) + 1;
        let grid = self.grid;
        out.series_start_ns = t0;
        out.series_bucket_ns = grid.width;
        // Seconds from the grid's start to the end of bucket i.
        let x = |i: usize| (grid.start_of(i + 1).saturating_sub(t0)) as f64 / 1e9;
        let bucket =
            |ts: u64| (ts.saturating_sub(t0) / grid.width).min(n.saturating_sub(1) as u64) as usize;
        let end_of = |node: u16, pid: u32| {
            self.exits
                .get(&(node, pid))
                .copied()
                .unwrap_or(end_ns)
                .min(end_ns)
        };

        // Heap: the age threshold of each process is a quarter of its span (1 s to 10 min),
        // taken at bucket granularity: allocations before the cutoff bucket are old.
        let mut heap_first: HashMap<(u16, u32), u64> = HashMap::new();
        for s in &self.heap.slots {
            let e = heap_first.entry((s.node, s.pid)).or_insert(s.first_seen);
            *e = (*e).min(s.first_seen);
        }
        let cutoff_bucket = |node: u16, pid: u32| {
            let first = heap_first.get(&(node, pid)).copied().unwrap_or(t0);
            let end = end_of(node, pid);
            let age = (end.saturating_sub(first) / 4).clamp(1_000_000_000, 600_000_000_000);
            bucket(end.saturating_sub(age))
        };
        let old = self
            .heap
            .old_live(|node, pid| grid.start_of(cutoff_bucket(node, pid)));
        let mut cat = Catalog::default();
        // (node, pid, locations) → merged slot
        struct Merged {
            s: LeakSuspect,
            level: Level,
            old: f64,
            alloc_before: f64,
        }
        let mut merged: BTreeMap<(u16, u32, Vec<u32>), Merged> = BTreeMap::new();
        let mut order: Vec<(u16, u32, Vec<u32>)> = Vec::new();
        for (i, slot) in self.heap.slots.iter_mut().enumerate() {
            slot.level.finish(&grid, n);
            slot.allocated.finish(&grid, n);
            let locs = self
                .defs
                .resolve(&mut cat, slot.node, Some(slot.stack), None);
            let c = cutoff_bucket(slot.node, slot.pid);
            let before = if c == 0 {
                0.0
            } else {
                slot.allocated.values().get(c - 1).copied().unwrap_or(0.0)
            };
            let key = (slot.node, slot.pid, locs.clone());
            let m = merged.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Merged {
                    s: LeakSuspect {
                        service: service(slot.node, slot.pid),
                        node: node_name(slot.node),
                        pid: slot.pid,
                        locations: locs,
                        first_seen_ns: slot.first_seen,
                        ..Default::default()
                    },
                    level: Level::new(0.0),
                    old: 0.0,
                    alloc_before: 0.0,
                }
            });
            m.s.outstanding_bytes += slot.outstanding_bytes;
            m.s.allocations += slot.outstanding_count;
            m.s.allocated_bytes += slot.alloc_bytes;
            m.s.allocated_count += slot.alloc_count;
            m.s.samples += slot.samples;
            m.s.first_seen_ns = m.s.first_seen_ns.min(slot.first_seen);
            m.level.add(&slot.level);
            m.old += old[i];
            m.alloc_before += before;
        }
        let mut heap_of: BTreeMap<(u16, u32), Level> = BTreeMap::new();
        let mut leaks = Vec::with_capacity(merged.len());
        for (key, mut m) in merged {
            let (node, pid, _) = key;
            let from = bucket(m.s.first_seen_ns);
            let to = bucket(end_of(node, pid)) + 1;
            let survivors = (m.alloc_before > 0.0).then(|| (m.old / m.alloc_before).min(1.0));
            let j = heap::judge(m.level.values(), from, to, x, survivors);
            m.s.verdict = j.verdict;
            m.s.growth_bytes_per_s = j.growth.map_or(0.0, |f| f.slope);
            m.s.growth_r2 = j.growth.map_or(0.0, |f| f.r2);
            m.s.old_outstanding_share = survivors;
            m.s.stack = folded_stack(&m.s.locations, &cat);
            heap_of
                .entry((node, pid))
                .or_insert_with(|| Level::new(0.0))
                .add(&m.level);
            m.s.series = m.level.values().to_vec();
            leaks.push(m.s);
        }
        // The worst first: leaks, then growing caches, then the rest; fastest-growing, then
        // largest first within each.
        leaks.sort_by(|a, b| {
            a.verdict
                .cmp(&b.verdict)
                .then(b.growth_bytes_per_s.total_cmp(&a.growth_bytes_per_s))
                .then(b.outstanding_bytes.total_cmp(&a.outstanding_bytes))
                .then(
                    (&a.service, &a.node, a.pid, &a.stack)
                        .cmp(&(&b.service, &b.node, b.pid, &b.stack)),
                )
        });
        out.leak_suspects = leaks.iter().take(SUMMARY_SUSPECTS).cloned().collect();

        // Processes: RSS next to the tracked heap.
        let mut pids: BTreeSet<(u16, u32)> = self.mem.keys().copied().collect();
        pids.extend(heap_of.keys().copied());
        for (node, pid) in pids {
            let mut pm = ProcessMemory {
                service: service(node, pid),
                node: node_name(node),
                pid,
                oom_killed_ns: self.ooms.get(&(node, pid)).copied(),
                ..Default::default()
            };
            let to = bucket(end_of(node, pid)) + 1;
            if let Some(m) = self.mem.get_mut(&(node, pid)) {
                for l in [&mut m.anon, &mut m.file, &mut m.shmem] {
                    l.finish(&grid, n);
                }
                pm.rss_anon = m.anon.values().to_vec();
                pm.rss_file = m.file.values().to_vec();
                pm.rss_shmem = m.shmem.values().to_vec();
            }
            if let Some(h) = heap_of.get(&(node, pid)) {
                pm.heap = h.values().to_vec();
            }
            let last = |v: &[f64]| v.get(to.saturating_sub(1)).copied().filter(|x| !x.is_nan());
            pm.rss_end = last(&pm.rss_anon).map(|a| {
                a + last(&pm.rss_file).unwrap_or(0.0) + last(&pm.rss_shmem).unwrap_or(0.0)
            });
            pm.heap_end = last(&pm.heap);
            let from = |v: &[f64]| v.iter().position(|x| !x.is_nan() && *x != 0.0);
            // Growing: a line fits (R² ≥ MIN_R2) and adds `share` of the mean (RSS) or of the
            // peak (heap) over the span.
            let growth = |v: &[f64], share: f64, of_peak: bool| -> (Option<f64>, bool) {
                let Some(a) = from(v) else {
                    return (None, false);
                };
                let to = to.min(v.len());
                if to <= a + 1 {
                    return (None, false);
                }
                let fit = linear_fit((a..to).map(|i| (x(i), v[i])));
                let mean = v[a..to].iter().filter(|x| !x.is_nan()).sum::<f64>() / (to - a) as f64;
                let peak = v[a..to].iter().copied().fold(0.0f64, f64::max);
                let span = x(to - 1) - x(a);
                let base = if of_peak { peak } else { mean };
                let growing = fit.is_some_and(|f| {
                    f.slope > 0.0 && f.r2 >= heap::MIN_R2 && f.slope * span >= share * base
                });
                (fit.map(|f| f.slope), growing)
            };
            let (rss_g, rss_growing) = growth(&pm.rss_anon, RSS_GROWTH_SHARE, false);
            let (heap_g, heap_growing) = growth(&pm.heap, 0.5, true);
            pm.rss_growth_bytes_per_s = rss_g;
            pm.heap_growth_bytes_per_s = heap_g;
            pm.trend = match (pm.heap.is_empty(), rss_growing, heap_growing) {
                (true, true, _) => MemoryTrend::RssGrowing,
                (true, false, _) => MemoryTrend::Stable,
                (false, true, true) if heap_g.unwrap_or(0.0) >= 0.5 * rss_g.unwrap_or(0.0) => {
                    MemoryTrend::HeapDrivesRss
                }
                (false, true, _) => MemoryTrend::RssOutsideHeap,
                (false, false, true) if !pm.rss_anon.is_empty() => MemoryTrend::HeapWithinRss,
                _ => MemoryTrend::Stable,
            };
            out.processes.push(pm);
        }

        // cgroups.
        let mut cgs: Vec<((u16, String), CgroupTrack)> = self.cgroups.drain().collect();
        cgs.sort_by(|a, b| a.0.cmp(&b.0));
        for ((node, cgroup), mut t) in cgs {
            t.usage.finish(&grid, n);
            t.limit.finish(&grid, n);
            let v = t.usage.values();
            let a = v.iter().position(|x| !x.is_nan()).unwrap_or(0);
            let fit = linear_fit((a..v.len()).map(|i| (x(i), v[i])));
            let growth = fit.map(|f| f.slope);
            let last = v.iter().rev().find(|x| !x.is_nan()).copied();
            let seconds_to_limit = match (t.last_limit, growth, last) {
                (Some(l), Some(g), Some(u)) if g > 0.0 => Some(((l as f64 - u) / g).max(0.0)),
                _ => None,
            };
            out.cgroups.push(CgroupMemorySummary {
                node: node_name(node),
                cgroup,
                services: Vec::new(),
                peak_usage: t.peak,
                limit: t.last_limit,
                growth_bytes_per_s: growth,
                seconds_to_limit,
                oom_kills: t.oom_last.saturating_sub(t.oom_first.unwrap_or(t.oom_last)),
                usage: v.to_vec(),
                limits: t.limit.values().to_vec(),
            });
        }

        // CPU and off-CPU, resolved in key order (the catalog's ids do not depend on hashing).
        out.cpu = self.weights(&self.cpu, &mut cat, &node_name, &service);
        out.offcpu = self.weights(&self.offcpu, &mut cat, &node_name, &service);
        out.faults = self.weights(&self.faults, &mut cat, &node_name, &service);
        // saturating: a hostile capture's weights may add up past u64
        let total = |v: &[StackWeight], f: fn(&StackWeight) -> u64| {
            v.iter().fold(0u64, |a, s| a.saturating_add(f(s)))
        };
        out.page_faults = total(&out.faults, |s| s.value);
        out.cpu_samples = total(&out.cpu, |s| s.value);
        out.offcpu_events = total(&out.offcpu, |s| s.count);
        out.cpu_functions = cpu::top_functions(&out.cpu, &cat);
        out.offcpu_functions = cpu::top_functions(&out.offcpu, &cat);
        out.cpu_top = top_per_service(&out.cpu_functions);
        out.offcpu_top = top_per_service(&out.offcpu_functions);
        out.cpu_frequency_hz = median(&mut self.intervals).map(|ns| 1e9 / ns as f64);

        // OOM kills and the growth before them.
        for (&(node, pid), &ts) in &self.ooms {
            let name = node_name(node);
            let pm = out
                .processes
                .iter()
                .find(|p| p.node == name && p.pid == pid);
            let top = leaks
                .iter()
                .filter(|l| l.node == name && l.pid == pid && l.growth_bytes_per_s > 0.0)
                .max_by(|a, b| a.growth_bytes_per_s.total_cmp(&b.growth_bytes_per_s));
            out.ooms.push(OomGrowth {
                service: service(node, pid),
                node: name.clone(),
                pid,
                ts_ns: ts,
                rss_growth_bytes_per_s: pm.and_then(|p| p.rss_growth_bytes_per_s),
                top_stack: top.map(|l| l.stack.clone()),
                top_stack_growth_bytes_per_s: top.map(|l| l.growth_bytes_per_s),
            });
        }
        out.leaks = leaks;
        out.catalog = cat;
        out
    }

    fn weights(
        &self,
        tally: &Tally,
        cat: &mut Catalog,
        node_name: &impl Fn(u16) -> String,
        service: &impl Fn(u16, u32) -> String,
    ) -> Vec<StackWeight> {
        let mut keys: Vec<_> = tally.by_stack.iter().collect();
        keys.sort_unstable_by_key(|(k, _)| **k);
        let mut merged: BTreeMap<WeightKey, (u64, u64)> = BTreeMap::new();
        for (&(node, pid, user, kernel), &(value, count)) in keys {
            let locs = self.defs.resolve(cat, node, user, kernel);
            let e = merged
                .entry((service(node, pid), node_name(node), pid, locs))
                .or_default();
            e.0 = e.0.saturating_add(value);
            e.1 += count;
        }
        merged
            .into_iter()
            .map(
                |((service, node, pid, locations), (value, count))| StackWeight {
                    service,
                    node,
                    pid,
                    locations,
                    value,
                    count,
                },
            )
            .collect()
    }
}

/// (service, node, pid, locations) of a resolved stack.
type WeightKey = (String, String, u32, Vec<u32>);

fn top_per_service(all: &[FunctionShare]) -> Vec<FunctionShare> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    let mut n = 0;
    for f in all {
        if current != Some(f.service.as_str()) {
            current = Some(&f.service);
            n = 0;
        }
        if n < SUMMARY_FUNCTIONS {
            out.push(f.clone());
            n += 1;
        }
    }
    out
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// A stack of locations (innermost first) folded from the outermost frame: `main;f;malloc`.
pub fn folded_stack(locs: &[u32], cat: &Catalog) -> String {
    let mut s = String::new();
    for &l in locs.iter().rev() {
        if !s.is_empty() {
            s.push(';');
        }
        s.push_str(&folded_name(cat.function_of(l)));
    }
    s
}
