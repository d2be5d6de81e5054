//! Live-heap tracking and leak verdicts.
//!
//! Sampled allocations are kept live by address per process until their free; each stands for
//! `1 / (1 - exp(-size / period))` allocations of its size (period 1: exactly one), so
//! outstanding bytes and counts are weight-corrected estimates of the whole heap of a stack.
//! Per process and allocating stack: outstanding and allocated totals, and two levels over
//! time (outstanding bytes, bytes allocated so far) on the shared grid. Memory is bounded by
//! the outstanding samples and the distinct stacks, never by the allocation count.
//!
//! Verdicts, per stack over its process's life in the capture:
//! - **leak**: outstanding bytes grow steadily (a least-squares line fits them, R² ≥
//!   [`MIN_R2`], and explains at least half the peak), still growing in the last third, and
//!   the allocations older than the age threshold (a quarter of the process's span, 1 s to
//!   10 min) are still outstanding (≥ [`LEAK_SURVIVORS`] of their bytes);
//! - **growing cache**: growth that flattens (the last third grows at less than
//!   [`FLAT_RATIO`] of the whole) or whose old allocations get freed;
//! - **steady**: no such growth (churn: allocated and freed).

use std::collections::HashMap;

use retrace_segment::{HeapAlloc, HeapFree, StackId};
use serde::{Deserialize, Serialize};

use super::series::{linear_fit, Fit, Grid, Level};

/// A growth must fit a line at least this well (R²) to count.
pub const MIN_R2: f64 = 0.6;
/// The last third growing at less than this share of the overall rate is flattening.
pub const FLAT_RATIO: f64 = 0.3;
/// Share of the old allocations' bytes still outstanding for a leak.
pub const LEAK_SURVIVORS: f64 = 0.8;
/// Points (buckets) a verdict needs; fewer is steady ("not enough data").
const MIN_POINTS: usize = 5;

/// What a stack's outstanding memory does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Steady growth, old allocations never freed.
    Leak,
    /// Growth that flattens or gets freed.
    GrowingCache,
    /// No lasting growth.
    #[default]
    Steady,
}

impl Verdict {
    /// The name in CSV and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::GrowingCache => "growing_cache",
            Verdict::Steady => "steady",
        }
    }
}

/// The weight of a sample of `size` bytes taken with mean period `period`.
pub fn sample_weight(size: u64, period: u64) -> f64 {
    if period <= 1 || size == 0 {
        return 1.0;
    }
    let p = 1.0 - (-(size as f64) / period as f64).exp();
    if p <= 0.0 {
        1.0
    } else {
        1.0 / p
    }
}

struct Live {
    slot: u32,
    size: u64,
    weight: f64,
    ts: u64,
}

/// One process's allocations from one stack id.
pub(crate) struct Slot {
    pub node: u16,
    pub pid: u32,
    pub stack: StackId,
    pub outstanding_bytes: f64,
    pub outstanding_count: f64,
    pub alloc_bytes: f64,
    pub alloc_count: f64,
    pub samples: u64,
    pub first_seen: u64,
    pub level: Level,
    pub allocated: Level,
}

/// The streaming side.
#[derive(Default)]
pub(crate) struct HeapTracker {
    live: HashMap<(u16, u32), HashMap<u64, Live>>,
    slot_of: HashMap<(u16, u32, StackId), u32>,
    pub slots: Vec<Slot>,
    /// Frees of addresses with no sampled allocation (unsampled, or allocated before).
    pub unmatched_frees: u64,
}

impl HeapTracker {
    pub(crate) fn alloc(&mut self, grid: &mut Grid, node: u16, ts: u64, a: &HeapAlloc) {
        // An address handed out again without a free seen: the old one was freed.
        self.free_addr(grid, node, ts, a.pid, a.addr);
        let key = (node, a.pid, a.stack);
        let slot = match self.slot_of.get(&key) {
            Some(&s) => s,
            None => {
                let s = self.slots.len() as u32;
                self.slots.push(Slot {
                    node,
                    pid: a.pid,
                    stack: a.stack,
                    outstanding_bytes: 0.0,
                    outstanding_count: 0.0,
                    alloc_bytes: 0.0,
                    alloc_count: 0.0,
                    samples: 0,
                    first_seen: ts,
                    level: Level::new(0.0),
                    allocated: Level::new(0.0),
                });
                self.slot_of.insert(key, s);
                s
            }
        };
        let w = sample_weight(a.size, a.period);
        let s = &mut self.slots[slot as usize];
        let bytes = w * a.size as f64;
        s.outstanding_bytes += bytes;
        s.outstanding_count += w;
        s.alloc_bytes += bytes;
        s.alloc_count += w;
        s.samples += 1;
        s.level.set(grid, ts, s.outstanding_bytes);
        s.allocated.set(grid, ts, s.alloc_bytes);
        self.live.entry((node, a.pid)).or_default().insert(
            a.addr,
            Live {
                slot,
                size: a.size,
                weight: w,
                ts,
            },
        );
    }

    pub(crate) fn free(&mut self, grid: &mut Grid, node: u16, ts: u64, f: &HeapFree) {
        if !self.free_addr(grid, node, ts, f.pid, f.addr) {
            self.unmatched_frees += 1;
        }
    }

    fn free_addr(&mut self, grid: &mut Grid, node: u16, ts: u64, pid: u32, addr: u64) -> bool {
        let Some(l) = self
            .live
            .get_mut(&(node, pid))
            .and_then(|m| m.remove(&addr))
        else {
            return false;
        };
        let s = &mut self.slots[l.slot as usize];
        s.outstanding_bytes = (s.outstanding_bytes - l.weight * l.size as f64).max(0.0);
        s.outstanding_count = (s.outstanding_count - l.weight).max(0.0);
        s.level.set(grid, ts, s.outstanding_bytes);
        true
    }

    /// Weighted bytes of each slot's live allocations made before `cutoff(node, pid)`.
    pub(crate) fn old_live(&self, cutoff: impl Fn(u16, u32) -> u64) -> Vec<f64> {
        let mut out = vec![0.0; self.slots.len()];
        let mut keys: Vec<&(u16, u32)> = self.live.keys().collect();
        keys.sort_unstable();
        for k in keys {
            let c = cutoff(k.0, k.1);
            // By address, so that the sums (floating point) do not depend on hashing.
            let mut live: Vec<(&u64, &Live)> = self.live[k].iter().collect();
            live.sort_unstable_by_key(|(a, _)| **a);
            for (_, l) in live {
                if l.ts < c {
                    out[l.slot as usize] += l.weight * l.size as f64;
                }
            }
        }
        out
    }
}

/// The verdict's inputs and result for one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Judgement {
    pub verdict: Verdict,
    pub growth: Option<Fit>,
    pub survivors: Option<f64>,
}

/// Judges a level series over buckets `from..to` (bucket ends at `x(i)` seconds), with the
/// share of old allocations still outstanding when known.
pub(crate) fn judge(
    vals: &[f64],
    from: usize,
    to: usize,
    x: impl Fn(usize) -> f64,
    survivors: Option<f64>,
) -> Judgement {
    let to = to.min(vals.len());
    let steady = Judgement {
        verdict: Verdict::Steady,
        growth: None,
        survivors,
    };
    if to <= from || to - from < MIN_POINTS {
        return steady;
    }
    let pts = |a: usize, b: usize| (a..b).map(|i| (x(i), vals[i]));
    let Some(fit) = linear_fit(pts(from, to)) else {
        return steady;
    };
    let judged = Judgement {
        growth: Some(fit),
        ..steady
    };
    let peak = vals[from..to].iter().copied().fold(0.0f64, f64::max);
    let span = x(to - 1) - x(from);
    let growing = fit.slope > 0.0 && fit.r2 >= MIN_R2 && fit.slope * span >= 0.5 * peak;
    if !growing {
        return judged;
    }
    let third = (to - from) / 3;
    let last = linear_fit(pts(to - third.max(2), to)).map_or(0.0, |f| f.slope);
    let flattening = last < FLAT_RATIO * fit.slope;
    let freed = survivors.is_some_and(|s| s < LEAK_SURVIVORS);
    Judgement {
        verdict: if flattening || freed {
            Verdict::GrowingCache
        } else {
            Verdict::Leak
        },
        ..judged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_poisson_sampling_probability() {
        assert_eq!(sample_weight(100, 1), 1.0);
        // Size equal to the period: sampled with probability 1 - 1/e.
        let w = sample_weight(1000, 1000);
        assert!((w - 1.0 / (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        // Small allocations stand for about period/size allocations.
        let w = sample_weight(8, 524_288);
        assert!((w - 65536.5).abs() < 1.0, "{w}");
    }

    #[test]
    fn verdicts_on_shapes() {
        let x = |i: usize| i as f64;
        let line: Vec<f64> = (0..60).map(|i| 1000.0 * i as f64).collect();
        let j = judge(&line, 0, 60, x, Some(1.0));
        assert_eq!(j.verdict, Verdict::Leak);
        assert!((j.growth.expect("a growth").slope - 1000.0).abs() < 1e-6);
        // The same growth with its old allocations freed is a cache.
        assert_eq!(
            judge(&line, 0, 60, x, Some(0.3)).verdict,
            Verdict::GrowingCache
        );
        let plateau: Vec<f64> = (0..60).map(|i| 1000.0 * i.min(25) as f64).collect();
        assert_eq!(
            judge(&plateau, 0, 60, x, Some(1.0)).verdict,
            Verdict::GrowingCache
        );
        let churn: Vec<f64> = (0..60).map(|i| ((i * 7919) % 13) as f64 * 500.0).collect();
        assert_eq!(judge(&churn, 0, 60, x, Some(0.0)).verdict, Verdict::Steady);
        assert_eq!(judge(&line, 0, 3, x, None).verdict, Verdict::Steady);
    }
}
