//! The analysis' tables (what `retrace analyze` writes as CSV) as Parquet tables, taken from
//! [`Analysis`] as it is: requests, spans, traces, the TCP series of each edge (tcp.csv),
//! findings, and the SLO results (objectives, breaches, alert firings).
//!
//! Requests and spans belong to the node that saw them and are partitioned by node and hour;
//! the rest is about the whole analysis: partitioned by the hour of its start, or not at all
//! (objectives). Durations are integer nanoseconds (`*_ns`), not the CSVs' rounded
//! milliseconds; ids are the CSVs' lower-case hex strings; `request_index` is the 0-based
//! row of requests.csv.

use std::collections::BTreeMap;
use std::sync::Arc;

use retrace_analyze::{Analysis, Link};

use super::columns::{count, table, ts, Bool, I64List, Str, StrList, Table, Time, F64, I64};
use super::dataset::{Partition, Sink, BATCH_ROWS};

table! {
    /// Every request (requests.csv), in time order.
    pub struct Requests = "requests" {
        time: Time,
        client: Str,
        server: Str,
        protocol: Str,
        method: Str,
        target: Str,
        route: Str,
        status: Str,
        error: Bool,
        latency_ns: I64 null,
        server_latency_ns: I64 null,
        trace_id: Str null,
        request_index: I64,
    }
}

table! {
    /// Every span (spans.csv): a request's CLIENT span, then its SERVER span.
    pub struct Spans = "spans" {
        start: Time,
        trace_id: Str,
        span_id: Str,
        parent_span_id: Str null,
        kind: Str,
        service: Str,
        peer: Str,
        protocol: Str,
        name: Str,
        target: Str,
        duration_ns: I64 null,
        status: Str,
        error: Bool,
        link: Str null,
        confidence: F64 null,
        pid: I64,
        tid: I64,
        server_address: Str,
        client_address: Str,
        request_index: I64,
    }
}

table! {
    /// Every trace (traces.csv).
    pub struct Traces = "traces" {
        start: Time,
        trace_id: Str,
        root_service: Str,
        root_name: Str,
        duration_ns: I64,
        spans: I64,
        services: I64,
        errors: I64,
        root_request_index: I64,
    }
}

table! {
    /// The TCP series of every edge (tcp.csv): one row per edge and bucket.
    pub struct TcpSeries = "tcp" {
        time: Time,
        client: Str,
        server: Str,
        connects: I64,
        failed_connects: I64,
        failure_cause: Str,
        retransmits: I64,
        rtt_p50_us: I64 null,
        rtt_p99_us: I64 null,
        resets_sent: I64,
        resets_received: I64,
        synack_retransmits: I64,
        zero_window_client: I64,
        zero_window_server: I64,
    }
}

table! {
    /// The findings (findings.csv, with the evidence as a list).
    pub struct Findings = "findings" {
        start: Time,
        end: Time,
        id: Str,
        severity: Str,
        kind: Str,
        service: Str,
        edge: Str,
        processes: StrList,
        summary: Str,
        likely_cause: Str,
        evidence: StrList,
        caused_by: StrList,
        sample_requests: I64List,
    }
}

table! {
    /// The service level objectives (slo.csv).
    pub struct Objectives = "slo" {
        service: Str,
        objective: Str,
        target: F64,
        actual: F64 null,
        budget_remaining: F64,
        status: Str,
        threshold_ms: F64 null,
        requests: I64,
        bad: I64,
        current_burn_rate: F64,
        budget_remaining_s: F64 null,
    }
}

table! {
    /// Burn-rate breaches (breaches.csv).
    pub struct Breaches = "breaches" {
        start: Time,
        end: Time,
        detected: Time,
        service: Str,
        objective: Str,
        peak_burn_rate: F64,
        budget_consumed: F64,
        severity: Str,
        windows: Str,
    }
}

table! {
    /// Alert rules that fired (alerts.csv).
    pub struct Alerts = "alerts" {
        start: Time,
        end: Time,
        name: Str,
        severity: Str,
        service: Str,
        value: Str,
    }
}

/// The analysis tables: name and columns.
pub fn schemas() -> Vec<(&'static str, Vec<arrow_schema::Field>)> {
    fn one<T: Table>() -> (&'static str, Vec<arrow_schema::Field>) {
        (T::NAME, T::fields())
    }
    vec![
        one::<Requests>(),
        one::<Spans>(),
        one::<Traces>(),
        one::<TcpSeries>(),
        one::<Findings>(),
        one::<Objectives>(),
        one::<Breaches>(),
        one::<Alerts>(),
    ]
}

/// Rows by partition, cut into batches as they fill. Rows come about in time order: when
/// one of a later hour comes, the partitions more than an hour older are closed (a row that
/// still comes for one of them goes to a new file).
struct Parts<T: Table> {
    open: BTreeMap<Partition, T>,
    latest: Option<u64>,
}

impl<T: Table> Parts<T> {
    fn new() -> Self {
        Self {
            open: BTreeMap::new(),
            latest: None,
        }
    }

    /// The table of `p`; `sink` takes its rows when it is full.
    fn at(&mut self, p: Partition, sink: &Sink) -> anyhow::Result<&mut T> {
        if p.hour > self.latest {
            self.latest = p.hour;
            let old: Vec<Partition> = self
                .open
                .keys()
                .filter(|q| q.hour.is_some_and(|h| h + 1 < p.hour.unwrap_or(0)))
                .cloned()
                .collect();
            for q in old {
                if let Some(mut t) = self.open.remove(&q) {
                    sink.send(&q, &mut t)?;
                    sink.close::<T>(&q)?;
                }
            }
        }
        let t = self.open.entry(p.clone()).or_insert_with(T::new);
        if t.rows() >= BATCH_ROWS {
            sink.send(&p, t)?;
        }
        Ok(t)
    }

    fn finish(mut self, sink: &Sink) -> anyhow::Result<()> {
        for (p, t) in &mut self.open {
            sink.send(p, t)?;
        }
        Ok(())
    }
}

/// Writes every analysis table into `sink`, letting go of each part of the analysis once
/// written: the small tables and the traces first, so that the requests and spans, the bulk,
/// are written with little more than the request table in memory.
pub fn write(mut a: Analysis, sink: &Sink, t0: std::time::Instant) -> anyhow::Result<()> {
    tcp(&a, sink)?;
    findings(&a, sink)?;
    slo(&a, sink)?;
    if !a.traces_skipped {
        traces(&a, sink)?;
    }
    super::stamp(t0, "traces handed over");
    a.traces = Vec::new();
    a.time_breakdown = Vec::new();
    a.series = Vec::new();
    retrace_analyze::release_free_memory();
    requests(&a, sink)?;
    super::stamp(t0, "requests handed over");
    if !a.traces_skipped {
        spans(&a, sink)?;
    }
    Ok(())
}

/// The last `width` (at most 32) lower hex digits of `id`, in `buf` (reused: no allocation
/// per row; `format!` was a tenth of the spans' time).
fn hex(buf: &mut [u8; 32], id: u128, width: usize) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let width = width.min(32);
    let mut v = id;
    for b in buf[..width].iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
    // Hex digits are ASCII.
    std::str::from_utf8(&buf[..width]).unwrap_or_default()
}

/// Node names as shared strings (a partition holds one).
#[derive(Default)]
struct Names(BTreeMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.0.get(s) {
            return Arc::clone(n);
        }
        let n: Arc<str> = Arc::from(s);
        self.0.insert(s.to_string(), Arc::clone(&n));
        n
    }
}

fn requests(a: &Analysis, sink: &Sink) -> anyhow::Result<()> {
    let mut parts = Parts::<Requests>::new();
    let mut names = Names::default();
    for (i, r) in a.requests.iter().enumerate() {
        let t = parts.at(Partition::at(&names.get(r.node), r.ts_ns), sink)?;
        t.time.append_value(ts(r.ts_ns));
        t.client.append_value(r.client);
        t.server.append_value(r.server);
        t.protocol.append_value(r.protocol);
        t.method.append_value(r.method);
        t.target.append_value(r.target);
        t.route.append_value(r.route);
        t.status.append_value(r.status);
        t.error.append_value(r.error);
        t.latency_ns.append_option(r.latency_ns.map(count));
        t.server_latency_ns
            .append_option(r.server_latency_ns.map(count));
        t.trace_id.append_option(r.trace_id);
        t.request_index.append_value(count(i as u64));
    }
    parts.finish(sink)
}

fn spans(a: &Analysis, sink: &Sink) -> anyhow::Result<()> {
    let mut parts = Parts::<Spans>::new();
    let mut names = Names::default();
    let mut name = String::new();
    let mut id = [0u8; 32];
    for s in a.requests.spans() {
        let t = parts.at(Partition::at(&names.get(s.node), s.start_ns), sink)?;
        t.start.append_value(ts(s.start_ns));
        t.trace_id.append_value(hex(&mut id, s.trace_id, 32));
        t.span_id.append_value(hex(&mut id, s.span_id.into(), 16));
        match s.parent_span_id {
            Some(p) => t.parent_span_id.append_value(hex(&mut id, p.into(), 16)),
            None => t.parent_span_id.append_null(),
        }
        t.kind.append_value(s.kind.name());
        t.service.append_value(s.service);
        t.peer.append_value(s.peer);
        t.protocol.append_value(s.protocol);
        name.clear();
        retrace_analyze::write_span_name(&mut name, s.protocol, s.method, s.route);
        t.name.append_value(&name);
        t.target.append_value(s.target);
        t.duration_ns.append_option(s.duration_ns.map(count));
        t.status.append_value(s.status);
        t.error.append_value(s.error);
        let root = s.link == Link::Root;
        t.link.append_option((!root).then(|| s.link.name()));
        t.confidence.append_option((!root).then_some(s.confidence));
        t.pid.append_value(i64::from(s.pid));
        t.tid.append_value(i64::from(s.tid));
        t.server_address.append_value(s.server_address);
        t.client_address.append_value(s.client_address);
        t.request_index.append_value(count(s.request as u64));
    }
    parts.finish(sink)
}

fn traces(a: &Analysis, sink: &Sink) -> anyhow::Result<()> {
    let mut parts = Parts::<Traces>::new();
    let mut id = [0u8; 32];
    for tr in &a.traces {
        let t = parts.at(Partition::hour_of(tr.start_ns), sink)?;
        t.start.append_value(ts(tr.start_ns));
        t.trace_id
            .append_value(hex(&mut id, tr.trace_id(&a.requests), 32));
        t.root_service.append_value(tr.root_service(&a.requests));
        t.root_name.append_value(tr.root_name(&a.requests));
        t.duration_ns.append_value(count(tr.duration_ns));
        t.spans.append_value(i64::from(tr.spans));
        t.services.append_value(i64::from(tr.services));
        t.errors.append_value(i64::from(tr.errors));
        t.root_request_index.append_value(count(tr.root as u64));
    }
    parts.finish(sink)
}

fn tcp(a: &Analysis, sink: &Sink) -> anyhow::Result<()> {
    let mut parts = Parts::<TcpSeries>::new();
    for p in &a.tcp {
        let t = parts.at(Partition::hour_of(p.ts_ns), sink)?;
        t.time.append_value(ts(p.ts_ns));
        t.client.append_value(&p.client);
        t.server.append_value(&p.server);
        t.connects.append_value(count(p.connects));
        t.failed_connects.append_value(count(p.failed_connects));
        t.failure_cause.append_value(&p.failure_cause);
        t.retransmits.append_value(count(p.retransmits));
        t.rtt_p50_us.append_option(p.rtt_p50_us.map(i64::from));
        t.rtt_p99_us.append_option(p.rtt_p99_us.map(i64::from));
        t.resets_sent.append_value(count(p.resets_sent));
        t.resets_received.append_value(count(p.resets_received));
        t.synack_retransmits
            .append_value(count(p.synack_retransmits));
        t.zero_window_client
            .append_value(count(p.zero_window_client));
        t.zero_window_server
            .append_value(count(p.zero_window_server));
    }
    parts.finish(sink)
}

fn findings(a: &Analysis, sink: &Sink) -> anyhow::Result<()> {
    let mut parts = Parts::<Findings>::new();
    for f in &a.findings {
        let t = parts.at(Partition::hour_of(f.start_ns), sink)?;
        t.start.append_value(ts(f.start_ns));
        t.end.append_value(ts(f.end_ns));
        t.id.append_value(&f.id);
        t.severity.append_value(f.severity.name());
        t.kind.append_value(&f.kind);
        t.service.append_value(&f.service);
        t.edge.append_value(&f.edge);
        t.processes.values().extend(f.processes.iter().map(Some));
        t.processes.append(true);
        t.summary.append_value(&f.summary);
        t.likely_cause.append_value(&f.likely_cause);
        t.evidence.values().extend(f.evidence.iter().map(Some));
        t.evidence.append(true);
        t.caused_by.values().extend(f.caused_by.iter().map(Some));
        t.caused_by.append(true);
        t.sample_requests
            .values()
            .extend(f.sample_requests.iter().map(|&r| Some(count(r as u64))));
        t.sample_requests.append(true);
    }
    parts.finish(sink)
}

fn slo(a: &Analysis, sink: &Sink) -> anyhow::Result<()> {
    let r = &a.slo;
    let mut parts = Parts::<Objectives>::new();
    for o in &r.objectives {
        let t = parts.at(Partition::whole(), sink)?;
        t.service.append_value(&o.service);
        t.objective.append_value(&o.objective);
        t.target.append_value(o.target);
        t.actual.append_option(o.actual);
        t.budget_remaining.append_value(o.budget_remaining);
        t.status.append_value(o.status.name());
        t.threshold_ms.append_option(o.threshold_ms);
        t.requests.append_value(count(o.requests));
        t.bad.append_value(count(o.bad));
        t.current_burn_rate.append_value(o.current_burn_rate);
        t.budget_remaining_s.append_option(o.budget_remaining_s);
    }
    parts.finish(sink)?;
    let mut parts = Parts::<Breaches>::new();
    for b in &r.breaches {
        let t = parts.at(Partition::hour_of(b.start_ns), sink)?;
        t.start.append_value(ts(b.start_ns));
        t.end.append_value(ts(b.end_ns));
        t.detected.append_value(ts(b.detected_ns));
        t.service.append_value(&b.service);
        t.objective.append_value(&b.objective);
        t.peak_burn_rate.append_value(b.peak_burn_rate);
        t.budget_consumed.append_value(b.budget_consumed);
        t.severity.append_value(&b.severity);
        t.windows.append_value(&b.windows);
    }
    parts.finish(sink)?;
    let mut parts = Parts::<Alerts>::new();
    for f in &r.alerts {
        let t = parts.at(Partition::hour_of(f.start_ns), sink)?;
        t.start.append_value(ts(f.start_ns));
        t.end.append_value(ts(f.end_ns));
        t.name.append_value(&f.name);
        t.severity.append_value(&f.severity);
        t.service.append_value(&f.service);
        t.value.append_value(&f.value);
    }
    parts.finish(sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_fixed_width_lower_hex() {
        let mut buf = [0u8; 32];
        let ids = [
            0u128,
            1,
            0xabc,
            u128::from(u64::MAX),
            u128::MAX,
            0x0102_0304 << 64,
        ];
        for id in ids {
            assert_eq!(hex(&mut buf, id, 32), format!("{id:032x}"));
            let low = id & u128::from(u64::MAX);
            assert_eq!(hex(&mut buf, low, 16), format!("{low:016x}"));
        }
    }

    #[test]
    fn node_names_are_shared_and_told_apart() {
        let pool = String::from("web-1web-2");
        let (a, b) = (&pool[..5], &pool[5..]);
        let mut names = Names::default();
        let first = names.get(a);
        assert!(Arc::ptr_eq(&first, &names.get(a)));
        assert_eq!(&*names.get(b), "web-2");
        // The same name from elsewhere is the same shared string.
        assert!(Arc::ptr_eq(&first, &names.get(&String::from("web-1"))));
        // A prefix at the same address is another name.
        assert_eq!(&*names.get(&pool[..3]), "web");
    }
}
