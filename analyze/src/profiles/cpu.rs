//! CPU and off-CPU samples aggregated by (process, user stack, kernel stack) as they come,
//! then resolved into stacks of locations, folded stacks and the top functions per service
//! (total: samples with the function anywhere on the stack, once per sample; self: samples
//! with it innermost), as the seed's CPU profile box shows them.

use std::collections::{BTreeMap, HashMap};

use retrace_segment::StackId;
use serde::{Deserialize, Serialize};

use super::symbolize::Catalog;

/// (node, pid, user stack, kernel stack).
pub(crate) type StackKey = (u16, u32, Option<StackId>, Option<StackId>);

/// One resolved stack of one process with its weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct StackWeight {
    /// The process's service.
    pub service: String,
    /// Node name.
    pub node: String,
    /// Process id.
    pub pid: u32,
    /// Locations ([`Catalog::locations`] indexes), innermost first.
    pub locations: Vec<u32>,
    /// CPU samples, or ns blocked off CPU.
    pub value: u64,
    /// Samples (CPU), or blocking episodes (off-CPU).
    pub count: u64,
}

/// A function's share of a service's samples (or blocked time).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct FunctionShare {
    /// Service.
    pub service: String,
    /// Function name.
    pub function: String,
    /// Percent of the service's samples with the function on the stack.
    pub total_pct: f64,
    /// Percent of the service's samples with the function innermost.
    pub self_pct: f64,
    /// Samples (or ns blocked) with the function on the stack.
    pub total: u64,
    /// Samples (or ns blocked) with the function innermost.
    pub self_value: u64,
}

/// Sums of weights per key, as events come.
#[derive(Default)]
pub(crate) struct Tally {
    pub by_stack: HashMap<StackKey, (u64, u64)>,
}

impl Tally {
    pub(crate) fn add(&mut self, key: StackKey, value: u64) {
        let e = self.by_stack.entry(key).or_insert((0, 0));
        e.0 = e.0.saturating_add(value);
        e.1 += 1;
    }
}

/// Per function id: (total, self).
type FunctionSums = HashMap<u32, (u64, u64)>;

/// The top functions of each service, by total then name; all of them.
pub(crate) fn top_functions(stacks: &[StackWeight], cat: &Catalog) -> Vec<FunctionShare> {
    // service → function id → (total, self)
    let mut per: BTreeMap<&str, (u64, FunctionSums)> = BTreeMap::new();
    let mut seen: Vec<u32> = Vec::new();
    for s in stacks {
        let (sum, funcs) = per.entry(s.service.as_str()).or_default();
        *sum = sum.saturating_add(s.value);
        seen.clear();
        for (i, &loc) in s.locations.iter().enumerate() {
            let f = cat
                .locations
                .get(loc as usize)
                .map_or(u32::MAX, |l| l.function);
            let e = funcs.entry(f).or_default();
            if i == 0 {
                e.1 = e.1.saturating_add(s.value);
            }
            if !seen.contains(&f) {
                seen.push(f);
                e.0 = e.0.saturating_add(s.value);
            }
        }
    }
    let mut out = Vec::new();
    for (service, (sum, funcs)) in per {
        let mut rows: Vec<FunctionShare> = funcs
            .into_iter()
            .map(|(f, (t, s))| FunctionShare {
                service: service.to_string(),
                function: cat
                    .functions
                    .get(f as usize)
                    .cloned()
                    .unwrap_or_else(|| "[unknown]".into()),
                total_pct: pct(t, sum),
                self_pct: pct(s, sum),
                total: t,
                self_value: s,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then(b.self_value.cmp(&a.self_value))
                .then(a.function.cmp(&b.function))
        });
        out.extend(rows);
    }
    out
}

fn pct(v: u64, sum: u64) -> f64 {
    if sum == 0 {
        0.0
    } else {
        v as f64 * 100.0 / sum as f64
    }
}

/// Folded stacks (`root;...;leaf value`, the root being `prefix` when given), summed by
/// line and sorted. Separators and line breaks inside names are replaced so that each line
/// keeps its shape.
pub fn folded<'a>(
    items: impl Iterator<Item = (&'a str, &'a [u32], u64)>,
    cat: &Catalog,
) -> Vec<(String, u64)> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for (prefix, locs, value) in items {
        if value == 0 {
            continue;
        }
        let mut line = String::new();
        if !prefix.is_empty() {
            line.push_str(&folded_name(prefix));
        }
        for &l in locs.iter().rev() {
            if !line.is_empty() {
                line.push(';');
            }
            line.push_str(&folded_name(cat.function_of(l)));
        }
        let e = sums.entry(line).or_insert(0);
        *e = e.saturating_add(value);
    }
    sums.into_iter().collect()
}

/// A name as one frame of a folded line: no `;`, no line break, no control character (the
/// count is the last space-separated token, so spaces inside names are fine).
pub fn folded_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    if s.is_empty() {
        "[unnamed]".into()
    } else {
        s
    }
}
