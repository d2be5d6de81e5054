//! Logs: the captured writes to stdout, stderr and log files (`LogWrite` events) turned into
//! log events with a level and a pattern, counted per service over time, and the error events
//! attached to the requests their process was serving.
//!
//! Fed by the one replay stream (`Analyzer::push` hands every `LogWrite` to [`Collector`]):
//! `lines` splits each stream (process, fd or file) into lines and events (a traceback is one
//! event; what the captured prefix cut off is counted, not invented), `level` tells each
//! event's level, `pattern` masks its variable tokens and clusters it into a template
//! (Drain-like). At the end [`Collector::finish`] names each process's service (the
//! analysis's own grouping) and makes one [`LogPattern`] per (service, template);
//! [`attach`] then finds, for each error event, the request its thread was serving (the
//! request's SERVER span: same process and thread, the event within the span or just after),
//! else the one failed request of its process in progress then.
//!
//! Memory is bounded: streams, templates and kept events are capped; past
//! [`MAX_KEPT_EVENTS`] events are counted in their patterns (exact counts and series) but not
//! kept for `logs.csv`, and the report says how many.

pub mod level;
mod lines;
pub mod pattern;

use std::collections::{BTreeMap, HashMap};

pub use level::Level;
pub(crate) use lines::cap as cap_str;
use retrace_segment::LogWrite;

use crate::model::RequestTable;

/// Events kept for `logs.csv` at most.
pub const MAX_KEPT_EVENTS: usize = 1_000_000;
/// Bytes of messages kept for `logs.csv` at most.
const MAX_KEPT_BYTES: usize = 128 << 20;
/// Distinct log file paths named at most (more share one name).
const MAX_LABELS: usize = 65_536;
/// Streams followed at once at most (more: all are ended and followed anew).
const MAX_STREAMS: usize = 16_384;
/// An error event logged this long after the end of the request its thread served is still
/// that request's (loggers that write after the response), ns.
const AFTER_RESPONSE_NS: u64 = 100_000_000;
/// Failed requests kept per pattern.
const PATTERN_REQUESTS: usize = 8;

/// One log event of `logs.csv`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LogEvent {
    /// Time of its first line's write, wall ns.
    pub ts_ns: u64,
    /// Index into [`LogReport::nodes`].
    pub node: u16,
    /// Process.
    pub pid: u32,
    /// Thread that wrote it.
    pub tid: u32,
    /// Index into [`LogReport::services`].
    pub service: u32,
    /// Index into [`LogReport::streams`].
    pub stream: u32,
    /// Level.
    pub level: Level,
    /// Index into [`LogReport::patterns`].
    pub pattern: u32,
    /// Its first line.
    pub message: String,
    /// Lines in it.
    pub lines: u32,
    /// Bytes written for it that the capture did not keep.
    pub cut_off_bytes: u64,
    /// The request (row of requests.csv) it was logged for, when found.
    pub request: Option<u32>,
}

/// One pattern of one service (`log_patterns.csv`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LogPattern {
    /// `P1`, `P2`... (services in order, then errors first, then by count).
    pub id: String,
    /// Service.
    pub service: String,
    /// Level.
    pub level: Level,
    /// The template (`user <NUM> not found`).
    pub template: String,
    /// Events.
    pub count: u64,
    /// Lines of its events.
    pub lines: u64,
    /// First event, wall ns.
    pub first_ns: u64,
    /// Last event, wall ns.
    pub last_ns: u64,
    /// Its first event's message.
    pub sample: String,
    /// Events per second: (second's start, wall ns; events), seconds with events only.
    pub per_second: Vec<(u64, u64)>,
    /// Failed requests (rows) its events were logged for: the first few.
    pub failed_requests: Vec<usize>,
    /// How many failed requests its events were logged for.
    pub failed_request_count: u64,
}

/// The logs of an analysis.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LogReport {
    /// Node names.
    pub nodes: Vec<String>,
    /// Services that wrote logs.
    pub services: Vec<String>,
    /// Streams: `stdout`, `stderr`, a log file's path, `fd N`.
    pub streams: Vec<String>,
    /// Kept events, in time order.
    pub events: Vec<LogEvent>,
    /// Patterns.
    pub patterns: Vec<LogPattern>,
    /// Writes seen.
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes captured (the prefixes).
    pub captured_bytes: u64,
    /// Writes whose prefix did not hold all of it.
    pub cut_off_writes: u64,
    /// Lines (in events; blank lines outside tracebacks are not counted).
    pub lines: u64,
    /// Events.
    pub event_count: u64,
    /// Events not kept (over [`MAX_KEPT_EVENTS`], or their messages over 128 MiB); counted
    /// in their patterns.
    pub not_kept: u64,
}

impl LogReport {
    /// The service of `e`.
    pub fn service_of(&self, e: &LogEvent) -> &str {
        self.services
            .get(e.service as usize)
            .map_or("", String::as_str)
    }

    /// The pattern of `e`.
    pub fn pattern_of(&self, e: &LogEvent) -> Option<&LogPattern> {
        self.patterns.get(e.pattern as usize)
    }

    /// Error events (error and critical) per (service, second): from the patterns, so exact
    /// even when events were not kept.
    pub fn errors_per_second(&self) -> BTreeMap<&str, BTreeMap<u64, u64>> {
        let mut out: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
        for p in self.patterns.iter().filter(|p| p.level.is_error()) {
            let m = out.entry(p.service.as_str()).or_default();
            for &(s, n) in &p.per_second {
                *m.entry(s).or_default() += n;
            }
        }
        out
    }
}

/// (node, pid, fd, stream label id).
type StreamKey = (u16, u32, i32, u32);

/// Exact counts of one template in one process.
#[derive(Default)]
struct Counted {
    events: u64,
    lines: u64,
    first: u64,
    last: u64,
    sample: String,
    per_second: BTreeMap<u64, u64>,
}

struct Kept {
    ev: lines::Event,
    node: u16,
    pid: u32,
    stream: u32,
    cluster: u32,
}

/// The streaming side: fed every `LogWrite`, in time order per node.
pub(crate) struct Collector {
    streams: HashMap<StreamKey, lines::Stream>,
    labels: Vec<String>,
    label_ids: HashMap<String, u32>,
    clusters: pattern::Clusters,
    counts: HashMap<(u16, u32, u32), Counted>,
    kept: Vec<Kept>,
    kept_bytes: usize,
    /// [`MAX_KEPT_EVENTS`] (smaller in tests).
    keep_at_most: usize,
    buf: Vec<lines::Event>,
    writes: u64,
    bytes: u64,
    captured: u64,
    cut_writes: u64,
    lines: u64,
    events: u64,
    not_kept: u64,
}

impl Default for Collector {
    fn default() -> Self {
        Self {
            streams: HashMap::new(),
            labels: vec!["stdout".into(), "stderr".into()],
            label_ids: HashMap::new(),
            clusters: pattern::Clusters::default(),
            counts: HashMap::new(),
            kept: Vec::new(),
            kept_bytes: 0,
            keep_at_most: MAX_KEPT_EVENTS,
            buf: Vec::new(),
            writes: 0,
            bytes: 0,
            captured: 0,
            cut_writes: 0,
            lines: 0,
            events: 0,
            not_kept: 0,
        }
    }
}

impl Collector {
    /// Whether any write was seen.
    pub fn is_empty(&self) -> bool {
        self.writes == 0
    }

    /// The (node, pid) of every process that wrote.
    pub fn processes(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.counts.keys().map(|&(n, p, _)| (n, p))
    }

    fn label(&mut self, w: &LogWrite) -> u32 {
        match (w.fd, w.path.is_empty()) {
            (1, true) => 0,
            (2, true) => 1,
            _ => {
                let owned;
                let name: &str = if w.path.is_empty() {
                    owned = format!("fd {}", w.fd);
                    &owned
                } else {
                    &w.path
                };
                if let Some(&id) = self.label_ids.get(name) {
                    return id;
                }
                if self.labels.len() >= MAX_LABELS {
                    return self.label_of_others();
                }
                let id = self.labels.len() as u32;
                self.labels.push(name.to_string());
                self.label_ids.insert(name.to_string(), id);
                id
            }
        }
    }

    /// The name shared by the files past [`MAX_LABELS`].
    fn label_of_others(&mut self) -> u32 {
        const OTHERS: &str = "(other log files)";
        if let Some(&id) = self.label_ids.get(OTHERS) {
            return id;
        }
        let id = self.labels.len() as u32;
        self.labels.push(OTHERS.to_string());
        self.label_ids.insert(OTHERS.to_string(), id);
        id
    }

    /// One write of `node` at wall time `ts`.
    pub fn push(&mut self, node: u16, ts: u64, w: &LogWrite) {
        self.writes += 1;
        self.bytes += w.size;
        self.captured += w.payload.len() as u64;
        if w.size > w.payload.len() as u64 {
            self.cut_writes += 1;
        }
        let label = self.label(w);
        let key = (node, w.pid, w.fd, label);
        if !self.streams.contains_key(&key) && self.streams.len() >= MAX_STREAMS {
            self.end_streams(|_| true);
        }
        let s = self.streams.entry(key).or_default();
        s.write(ts, w.tid, w.size, &w.payload, &mut self.buf);
        self.record_buffered(node, w.pid, label);
    }

    /// A process exited: its streams end.
    pub fn exit(&mut self, node: u16, pid: u32) {
        if !self.streams.is_empty() {
            self.end_streams(|k| k.0 == node && k.1 == pid);
        }
    }

    /// Ends the streams `which` selects, in key order (deterministic).
    fn end_streams(&mut self, which: impl Fn(&StreamKey) -> bool) {
        let mut keys: Vec<StreamKey> = self.streams.keys().copied().filter(&which).collect();
        keys.sort_unstable();
        for k in keys {
            if let Some(mut s) = self.streams.remove(&k) {
                s.finish(&mut self.buf);
                self.record_buffered(k.0, k.1, k.3);
            }
        }
    }

    fn record_buffered(&mut self, node: u16, pid: u32, stream: u32) {
        let mut buf = std::mem::take(&mut self.buf);
        for ev in buf.drain(..) {
            self.record(node, pid, stream, ev);
        }
        self.buf = buf;
    }

    fn record(&mut self, node: u16, pid: u32, stream: u32, ev: lines::Event) {
        self.events += 1;
        self.lines += u64::from(ev.lines);
        let words = pattern::mask(pattern::message_text(&ev.message));
        let cluster = self.clusters.add(ev.level, words);
        let c = self.counts.entry((node, pid, cluster)).or_default();
        if c.events == 0 {
            c.first = ev.ts_ns;
            c.sample.clone_from(&ev.message);
        }
        c.events += 1;
        c.lines += u64::from(ev.lines);
        c.first = c.first.min(ev.ts_ns);
        c.last = c.last.max(ev.ts_ns);
        *c.per_second.entry(ev.ts_ns / 1_000_000_000).or_default() += 1;
        if self.kept.len() < self.keep_at_most && self.kept_bytes < MAX_KEPT_BYTES {
            self.kept_bytes += ev.message.len();
            self.kept.push(Kept {
                ev,
                node,
                pid,
                stream,
                cluster,
            });
        } else {
            self.not_kept += 1;
        }
    }

    /// Ends every stream and makes the report: `service_of` names a process's service,
    /// `nodes` are the node names by index.
    pub fn finish(
        mut self,
        service_of: impl Fn(u16, u32) -> String,
        nodes: Vec<String>,
    ) -> LogReport {
        self.end_streams(|_| true);
        // services
        let mut proc_service: BTreeMap<(u16, u32), String> = BTreeMap::new();
        for &(n, p, _) in self.counts.keys() {
            proc_service
                .entry((n, p))
                .or_insert_with(|| service_of(n, p));
        }
        let services: Vec<String> = {
            let mut v: Vec<String> = proc_service.values().cloned().collect();
            v.sort();
            v.dedup();
            v
        };
        // patterns per (service, template), from the exact counts, in key order
        let mut counts: Vec<((u16, u32, u32), Counted)> = self.counts.into_iter().collect();
        counts.sort_by_key(|(k, _)| *k);
        let mut agg: BTreeMap<(&str, u32), LogPattern> = BTreeMap::new();
        let mut secs: BTreeMap<(&str, u32), BTreeMap<u64, u64>> = BTreeMap::new();
        for ((n, p, cluster), c) in &counts {
            let service = proc_service.get(&(*n, *p)).map_or("", String::as_str);
            let Some(cl) = self.clusters.get(*cluster) else {
                continue;
            };
            let e = agg
                .entry((service, *cluster))
                .or_insert_with(|| LogPattern {
                    service: service.to_string(),
                    level: cl.level,
                    template: cl.template(),
                    first_ns: u64::MAX,
                    ..Default::default()
                });
            e.count += c.events;
            e.lines += c.lines;
            if c.first < e.first_ns {
                e.first_ns = c.first;
                e.sample.clone_from(&c.sample);
            }
            e.last_ns = e.last_ns.max(c.last);
            let s = secs.entry((service, *cluster)).or_default();
            for (&sec, &k) in &c.per_second {
                *s.entry(sec).or_default() += k;
            }
        }
        let mut order: Vec<((&str, u32), LogPattern)> = agg.into_iter().collect();
        order.sort_by(|(ka, a), (kb, b)| {
            (
                a.service.as_str(),
                std::cmp::Reverse(a.level),
                std::cmp::Reverse(a.count),
            )
                .cmp(&(
                    b.service.as_str(),
                    std::cmp::Reverse(b.level),
                    std::cmp::Reverse(b.count),
                ))
                .then_with(|| a.template.cmp(&b.template))
                .then(ka.1.cmp(&kb.1))
        });
        let mut index: HashMap<(String, u32), u32> = HashMap::new();
        let mut patterns = Vec::with_capacity(order.len());
        for (i, ((service, cluster), mut p)) in order.into_iter().enumerate() {
            p.id = format!("P{}", i + 1);
            p.per_second = secs
                .get(&(service, cluster))
                .map(|m| m.iter().map(|(&s, &n)| (s * 1_000_000_000, n)).collect())
                .unwrap_or_default();
            index.insert((service.to_string(), cluster), i as u32);
            patterns.push(p);
        }
        let service_idx: HashMap<&str, u32> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i as u32))
            .collect();
        let mut events: Vec<LogEvent> = Vec::with_capacity(self.kept.len());
        for k in self.kept {
            let service = proc_service
                .get(&(k.node, k.pid))
                .map_or("", String::as_str);
            events.push(LogEvent {
                ts_ns: k.ev.ts_ns,
                node: k.node,
                pid: k.pid,
                tid: k.ev.tid,
                service: service_idx.get(service).copied().unwrap_or(0),
                stream: k.stream,
                level: k.ev.level,
                pattern: index
                    .get(&(service.to_string(), k.cluster))
                    .copied()
                    .unwrap_or(0),
                message: k.ev.message,
                lines: k.ev.lines,
                cut_off_bytes: k.ev.cut_off_bytes,
                request: None,
            });
        }
        // time order; the order of recording among equal times (stable)
        events.sort_by_key(|e| (e.ts_ns, e.node, e.pid, e.tid));
        LogReport {
            nodes,
            services,
            streams: self.labels,
            events,
            patterns,
            writes: self.writes,
            bytes: self.bytes,
            captured_bytes: self.captured,
            cut_off_writes: self.cut_writes,
            lines: self.lines,
            event_count: self.events,
            not_kept: self.not_kept,
        }
    }
}

/// Finds the request each error event was logged for (see the module doc) and lists, per
/// pattern, the failed requests its events were logged for.
pub(crate) fn attach(logs: &mut LogReport, table: &RequestTable) {
    use std::collections::HashSet;
    let error_procs: HashSet<(&str, u32)> = logs
        .events
        .iter()
        .filter(|e| e.level.is_error())
        .map(|e| {
            (
                logs.nodes
                    .get(usize::from(e.node))
                    .map_or("", String::as_str),
                e.pid,
            )
        })
        .collect();
    if error_procs.is_empty() {
        return;
    }
    // Served requests of those processes: (start, end, row), by (node, pid, tid) and by
    // (node, pid), in time order.
    type Spans = Vec<(u64, u64, u32)>;
    let mut by_thread: HashMap<(&str, u32, u32), Spans> = HashMap::new();
    let mut by_proc: HashMap<(&str, u32), Spans> = HashMap::new();
    for (i, r) in table.rows.iter().enumerate() {
        let (f, e) = (&r.spans, table.ends_of(r));
        if !f.server() {
            continue;
        }
        let node = table.string(e.server_node);
        if !error_procs.contains(&(node, e.server_pid)) {
            continue;
        }
        let end = if r.server_latency_ns == crate::model::NO_LATENCY {
            u64::MAX
        } else {
            f.server_ts_ns.saturating_add(r.server_latency_ns)
        };
        let span = (f.server_ts_ns, end, i as u32);
        by_thread
            .entry((node, e.server_pid, f.server_tid))
            .or_default()
            .push(span);
        if r.error() {
            by_proc.entry((node, e.server_pid)).or_default().push(span);
        }
    }
    for v in by_thread.values_mut().chain(by_proc.values_mut()) {
        v.sort_unstable();
    }
    let nodes = &logs.nodes;
    let mut per_pattern: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for e in logs.events.iter_mut().filter(|e| e.level.is_error()) {
        let node = nodes.get(usize::from(e.node)).map_or("", String::as_str);
        let ts = e.ts_ns;
        // the thread's request: the last one started at or before the event, the event within
        // it or just after it
        let thread = by_thread.get(&(node, e.pid, e.tid)).and_then(|v| {
            let k = v.partition_point(|s| s.0 <= ts);
            let s = v.get(k.checked_sub(1)?)?;
            (ts <= s.1.saturating_add(AFTER_RESPONSE_NS)).then_some(s.2)
        });
        // else the one failed request of the process in progress then
        let request = thread.or_else(|| {
            let v = by_proc.get(&(node, e.pid))?;
            let k = v.partition_point(|s| s.0 <= ts);
            let mut open = v[..k].iter().filter(|s| ts <= s.1);
            let only = open.next()?;
            open.next().is_none().then_some(only.2)
        });
        e.request = request;
        if let Some(row) = request {
            if table.rows.get(row as usize).is_some_and(|r| r.error()) {
                per_pattern.entry(e.pattern).or_default().push(row as usize);
            }
        }
    }
    for (p, mut rows) in per_pattern {
        rows.sort_unstable();
        rows.dedup();
        if let Some(pat) = logs.patterns.get_mut(p as usize) {
            pat.failed_request_count = rows.len() as u64;
            rows.truncate(PATTERN_REQUESTS);
            pat.failed_requests = rows;
        }
    }
}

#[cfg(test)]
mod tests;
