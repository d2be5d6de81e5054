//! The CSV files. Headers start with the columns issue 4 fixes; extra columns follow.

use std::path::Path;

use retrace_replay::csv_cell::{csv_cell, CsvWriter};

use super::{fmt_ms, format_wall};
use crate::model::Analysis;
use crate::AnalyzeError;

fn err(path: &Path, e: impl std::fmt::Display) -> AnalyzeError {
    AnalyzeError::Report {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A CSV file whose cells are made safe for spreadsheets ([`csv_cell`]).
pub(super) fn writer(path: &Path) -> Result<CsvWriter<std::fs::File>, AnalyzeError> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_path(path)
        .map(CsvWriter::new)
        .map_err(|e| err(path, e))
}

fn ns_ms(v: Option<u64>) -> String {
    fmt_ms(v.map(|ns| ns as f64 / 1e6))
}

/// RFC 3339 UTC timestamps with nanoseconds, the date and time of day formatted once per
/// second.
#[derive(Default)]
struct WallFormatter {
    secs: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `secs`.
    prefix: String,
    out: String,
}

impl WallFormatter {
    fn format(&mut self, ns: u64) -> &str {
        let secs = ns / 1_000_000_000;
        if self.secs != Some(secs) {
            let full = format_wall(secs * 1_000_000_000);
            // Without the nine digits of nanoseconds and the `Z`.
            self.prefix = full[..full.len().saturating_sub(10)].to_string();
            self.secs = Some(secs);
        }
        let mut digits = [b'0'; 9];
        let mut nanos = ns % 1_000_000_000;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        self.out.clear();
        self.out.push_str(&self.prefix);
        self.out.extend(digits.iter().map(|&d| char::from(d)));
        self.out.push('Z');
        &self.out
    }
}

/// Writes the CSV files of services, edges and endpoints.
pub(crate) fn write_tables(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let path = dir.join("services.csv");
    let mut w = writer(&path)?;
    let e = |x| err(&path, x);
    w.write_record([
        "service",
        "instances",
        "requests",
        "errors",
        "error_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "status",
        "kind",
        "requests_sent",
        "calls",
        "failed_connections",
        "ports",
        "executables",
        "reasons",
    ])
    .map_err(e)?;
    for s in &a.services {
        let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
        w.write_record([
            s.service.clone(),
            s.instances.to_string(),
            s.requests.to_string(),
            s.errors.to_string(),
            format!("{:.6}", s.error_rate),
            fmt_ms(s.p50_ms),
            fmt_ms(s.p95_ms),
            fmt_ms(s.p99_ms),
            s.status.name().to_string(),
            s.kind.clone(),
            s.requests_sent.to_string(),
            s.calls.to_string(),
            s.failed_connections.to_string(),
            ports.join(" "),
            s.executables.join(" "),
            s.reasons.join("; "),
        ])
        .map_err(e)?;
    }
    w.flush().map_err(|x| err(&path, x))?;

    let path = dir.join("edges.csv");
    let mut w = writer(&path)?;
    let e = |x| err(&path, x);
    w.write_record([
        "client",
        "server",
        "protocol",
        "connections",
        "failed_connections",
        "requests",
        "errors",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "retransmits",
        "bytes_sent",
        "bytes_received",
        "status",
        "rate_per_s",
        "server_p50_ms",
        "server_p99_ms",
        "reasons",
    ])
    .map_err(e)?;
    for x in &a.edges {
        w.write_record([
            x.client.clone(),
            x.server.clone(),
            x.protocol.clone(),
            x.connections.to_string(),
            x.failed_connections.to_string(),
            x.requests.to_string(),
            x.errors.to_string(),
            fmt_ms(x.p50_ms),
            fmt_ms(x.p95_ms),
            fmt_ms(x.p99_ms),
            x.retransmits.to_string(),
            x.bytes_sent.to_string(),
            x.bytes_received.to_string(),
            x.status.name().to_string(),
            format!("{:.3}", x.rate_per_s),
            fmt_ms(x.server_p50_ms),
            fmt_ms(x.server_p99_ms),
            x.reasons.join("; "),
        ])
        .map_err(e)?;
    }
    w.flush().map_err(|x| err(&path, x))?;

    let path = dir.join("endpoints.csv");
    let mut w = writer(&path)?;
    let e = |x| err(&path, x);
    w.write_record([
        "service", "protocol", "route", "requests", "errors", "p50_ms", "p95_ms", "p99_ms",
    ])
    .map_err(e)?;
    for x in &a.endpoints {
        w.write_record([
            x.service.clone(),
            x.protocol.clone(),
            x.route.clone(),
            x.requests.to_string(),
            x.errors.to_string(),
            fmt_ms(x.p50_ms),
            fmt_ms(x.p95_ms),
            fmt_ms(x.p99_ms),
        ])
        .map_err(e)?;
    }
    w.flush().map_err(|x| err(&path, x))?;
    Ok(())
}

/// Writes `requests.csv` (the bulk of the report: one line per request).
pub(crate) fn write_requests(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let header = [
        "ts",
        "client",
        "server",
        "protocol",
        "method",
        "target",
        "status",
        "latency_ms",
        "trace_id",
        "route",
        "error",
        "server_latency_ms",
        "node",
    ];
    let path = dir.join("requests.csv");
    write_by_blocks(a, a.requests.len(), &path, &header, format_requests)
}

const SPANS_CSV: &str = "spans.csv";
const TRACES_CSV: &str = "traces.csv";
/// The files written with trace linking only.
pub(super) const TRACE_FILES: [&str; 2] = [SPANS_CSV, TRACES_CSV];

/// Writes `spans.csv`: one line per span (a request row's CLIENT span, then its SERVER
/// span).
pub(crate) fn write_spans(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let header = [
        "trace_id",
        "span_id",
        "parent_span_id",
        "kind",
        "service",
        "peer",
        "protocol",
        "name",
        "target",
        "start",
        "duration_ms",
        "status",
        "error",
        "link",
        "node",
        "confidence",
        "pid",
        "tid",
        "server_address",
        "client_address",
        "request_index",
    ];
    let path = dir.join(SPANS_CSV);
    write_by_blocks(a, a.requests.len(), &path, &header, format_spans)
}

/// Writes `traces.csv`: one line per trace.
pub(crate) fn write_traces(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let header = [
        "trace_id",
        "root_service",
        "root_name",
        "start",
        "duration_ms",
        "spans",
        "services",
        "errors",
        "root_request_index",
    ];
    let path = dir.join(TRACES_CSV);
    write_by_blocks(a, a.traces.len(), &path, &header, format_traces)
}

/// The lines of `traces.csv` for the traces `rows`, into `buf` (cleared first).
fn format_traces(a: &Analysis, rows: std::ops::Range<usize>, mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    let mut wall = WallFormatter::default();
    for t in a.traces.get(rows).unwrap_or_default() {
        let mut line = Line::new(&mut buf);
        line.hex(t.trace_id(&a.requests), 32);
        line.text(t.root_service(&a.requests));
        line.text(t.root_name(&a.requests));
        line.plain(wall.format(t.start_ns));
        line.ms(Some(t.duration_ns));
        line.num(t.spans);
        line.num(t.services);
        line.num(t.errors);
        line.num(t.root as u64);
        line.end();
    }
    buf
}

/// Writes a CSV file of `n` rows' lines: the header, then blocks of rows formatted by
/// `format` on several threads, written in order by this one (a worker is at most two blocks
/// ahead, and buffers are reused).
fn write_by_blocks(
    a: &Analysis,
    n: usize,
    path: &Path,
    header: &[&str],
    format: fn(&Analysis, std::ops::Range<usize>, Vec<u8>) -> Vec<u8>,
) -> Result<(), AnalyzeError> {
    use std::io::Write as _;
    let path = path.to_path_buf();
    let e = |x: std::io::Error| err(&path, x);
    let file = std::fs::File::create(&path).map_err(e)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut head = Vec::new();
    push_record(&mut head, header);
    out.write_all(&head).map_err(e)?;
    let blocks = n.div_ceil(ROWS_PER_BLOCK);
    let workers = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .clamp(1, 4)
        .min(blocks.max(1));
    let pool: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<(), AnalyzeError> {
        let mut queues = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            queues.push(rx);
            let pool = &pool;
            scope.spawn(move || {
                for b in (w..blocks).step_by(workers) {
                    let buf = pool
                        .lock()
                        .ok()
                        .and_then(|mut p| p.pop())
                        .unwrap_or_default();
                    let rows = b * ROWS_PER_BLOCK..((b + 1) * ROWS_PER_BLOCK).min(n);
                    if tx.send(format(a, rows, buf)).is_err() {
                        break;
                    }
                }
            });
        }
        for b in 0..blocks {
            let buf = queues[b % workers]
                .recv()
                .map_err(|_| AnalyzeError::Report {
                    path: path.clone(),
                    message: "a formatting thread failed unexpectedly".into(),
                })?;
            out.write_all(&buf).map_err(e)?;
            if let Ok(mut p) = pool.lock() {
                p.push(buf);
            }
        }
        Ok(())
    })?;
    out.flush().map_err(e)?;
    Ok(())
}

/// Rows per block formatted at once by [`write_by_blocks`]: ~1 MiB of `spans.csv`. Blocks of
/// 16 Ki rows (4-8 MiB) made the CSV files' writing twice as slow on the 10 M-event benchmark:
/// the kernel's copy of the blocks into the page cache took 17% of the analysis' CPU samples
/// (1% with blocks of 1 MiB, which the writing thread reads while they are still in the CPU's
/// caches), and they held ~20 MiB more.
const ROWS_PER_BLOCK: usize = 4_096;

/// The lines of `requests.csv` for `rows`, into `buf` (cleared first).
fn format_requests(a: &Analysis, rows: std::ops::Range<usize>, mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    let mut wall = WallFormatter::default();
    for r in rows.filter_map(|i| a.requests.get(i)) {
        let mut line = Line::new(&mut buf);
        line.plain(wall.format(r.ts_ns));
        line.text(r.client);
        line.text(r.server);
        line.text(r.protocol);
        line.text(r.method);
        line.text(r.target);
        line.text(r.status);
        line.ms(r.latency_ns);
        line.text(r.trace_id.unwrap_or(""));
        line.text(r.route);
        line.plain(if r.error { "1" } else { "0" });
        line.ms(r.server_latency_ns);
        line.text(r.node);
        line.end();
    }
    buf
}

/// The lines of `spans.csv` for the spans of `rows`, into `buf` (cleared first). Ids,
/// numbers and times are written straight into the line ([`Line`]); the name goes through a
/// buffer reused from line to line.
fn format_spans(a: &Analysis, rows: std::ops::Range<usize>, mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    let mut wall = WallFormatter::default();
    let mut name = String::new();
    for i in rows {
        for s in a.requests.spans_of(i) {
            name.clear();
            crate::model::write_span_name(&mut name, s.protocol, s.method, s.route);
            let mut line = Line::new(&mut buf);
            line.hex(s.trace_id, 32);
            line.hex(u128::from(s.span_id), 16);
            match s.parent_span_id {
                Some(p) => line.hex(u128::from(p), 16),
                None => line.plain(""),
            }
            line.plain(s.kind.name());
            line.text(s.service);
            line.text(s.peer);
            line.text(s.protocol);
            line.text(&name);
            line.text(s.target);
            line.plain(wall.format(s.start_ns));
            line.ms(s.duration_ns);
            line.text(s.status);
            line.plain(if s.error { "1" } else { "0" });
            line.plain(s.link.name());
            line.text(s.node);
            if s.link == crate::model::Link::Root {
                line.plain("");
            } else {
                line.hundredths((s.confidence * 100.0).round() as u32);
            }
            line.num(s.pid);
            line.num(s.tid);
            line.text(s.server_address);
            line.text(s.client_address);
            line.num(s.request as u64);
            line.end();
        }
    }
    buf
}

/// One CSV line built field by field into a buffer, with this module's settings (`,`
/// between fields, `\n` at the end). Text that came from the capture goes through
/// [`csv_cell`] and is quoted when it must be ([`Line::text`]); what this module makes
/// itself (hex ids, non-negative numbers, RFC 3339 times, fixed names) can start no formula
/// and holds no separator, so it is copied as it is.
struct Line<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Line<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }

    /// A field of captured or user-given text.
    fn text(&mut self, s: &str) {
        self.sep();
        push_cell(self.out, s);
    }

    /// A field this module made (see the type's doc).
    fn plain(&mut self, s: &str) {
        self.sep();
        self.out.extend_from_slice(s.as_bytes());
    }

    /// `v`'s low `digits` hex digits, zero-padded.
    fn hex(&mut self, v: u128, digits: u32) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.sep();
        for i in (0..digits).rev() {
            self.out.push(HEX[((v >> (4 * i)) & 0xf) as usize]);
        }
    }

    fn num(&mut self, v: impl itoa::Integer) {
        self.sep();
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// `v / 100` with two decimals.
    fn hundredths(&mut self, v: u32) {
        self.num(v / 100);
        let cents = v % 100;
        self.out
            .extend_from_slice(&[b'.', b'0' + (cents / 10) as u8, b'0' + (cents % 10) as u8]);
    }

    /// Nanoseconds as milliseconds with three decimals, empty when `None`: the text of
    /// [`fmt_ms`] of `ns / 1e6`, without the float formatting machinery for all but the
    /// values exactly halfway between two microseconds (and those beyond f64's exact
    /// integers).
    fn ms(&mut self, ns: Option<u64>) {
        self.sep();
        let Some(ns) = ns else { return };
        let (us, rest) = (ns / 1000, ns % 1000);
        if rest == 500 || ns >= 1 << 53 {
            self.out.extend_from_slice(ns_ms(Some(ns)).as_bytes());
            return;
        }
        let us = if rest > 500 { us + 1 } else { us };
        self.out
            .extend_from_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
        let frac = us % 1000;
        self.out.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }

    fn end(self) {
        self.out.push(b'\n');
    }
}

/// One CSV record as [`CsvWriter`] writes it with this module's settings (each field made
/// safe for spreadsheets by [`csv_cell`], `,` between fields, `\n` after the record, a field
/// quoted when it holds `,`, `"`, `\r` or `\n`, its quotes doubled), without the `csv`
/// crate's per-field state machine. Records of one empty field (which
/// `csv` writes as `""`) do not occur here: every record has 13 fields.
fn push_record(out: &mut Vec<u8>, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_cell(out, f);
    }
    out.push(b'\n');
}

/// One field: made safe for spreadsheets by [`csv_cell`], quoted when it holds `,`, `"`,
/// `\r` or `\n` (its quotes doubled).
fn push_cell(out: &mut Vec<u8>, f: &str) {
    let f = csv_cell(f);
    let f = f.as_bytes();
    if f.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push(b'"');
        for &b in f {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(f);
    }
}

/// Writes `slo.csv`, `breaches.csv` and `alerts.csv` (issue 14: the fixed columns first).
pub(crate) fn write_slo(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let r = &a.slo;
    let path = dir.join("slo.csv");
    let mut w = writer(&path)?;
    let e = |x| err(&path, x);
    w.write_record([
        "service",
        "objective",
        "target",
        "actual",
        "budget_remaining",
        "status",
        "threshold_ms",
        "requests",
        "bad",
        "current_burn_rate",
        "budget_remaining_s",
    ])
    .map_err(e)?;
    for o in &r.objectives {
        w.write_record([
            o.service.clone(),
            o.objective.clone(),
            o.target.to_string(),
            o.actual.map_or(String::new(), |x| format!("{x:.4}")),
            format!("{:.6}", o.budget_remaining),
            o.status.name().to_string(),
            fmt_ms(o.threshold_ms),
            o.requests.to_string(),
            o.bad.to_string(),
            format!("{:.3}", o.current_burn_rate),
            o.budget_remaining_s
                .map_or(String::new(), |x| format!("{x:.0}")),
        ])
        .map_err(e)?;
    }
    w.flush().map_err(|x| err(&path, x))?;

    let path = dir.join("breaches.csv");
    let mut w = writer(&path)?;
    let e = |x| err(&path, x);
    w.write_record([
        "service",
        "objective",
        "start",
        "end",
        "peak_burn_rate",
        "budget_consumed",
        "detected",
        "severity",
        "windows",
    ])
    .map_err(e)?;
    for b in &r.breaches {
        w.write_record([
            b.service.clone(),
            b.objective.clone(),
            format_wall(b.start_ns),
            format_wall(b.end_ns),
            format!("{:.3}", b.peak_burn_rate),
            format!("{:.6}", b.budget_consumed),
            format_wall(b.detected_ns),
            b.severity.clone(),
            b.windows.clone(),
        ])
        .map_err(e)?;
    }
    w.flush().map_err(|x| err(&path, x))?;

    let path = dir.join("alerts.csv");
    let mut w = writer(&path)?;
    let e = |x| err(&path, x);
    w.write_record(["name", "severity", "service", "start", "end", "value"])
        .map_err(e)?;
    for f in &r.alerts {
        w.write_record([
            f.name.clone(),
            f.severity.clone(),
            f.service.clone(),
            format_wall(f.start_ns),
            format_wall(f.end_ns),
            f.value.clone(),
        ])
        .map_err(e)?;
    }
    w.flush().map_err(|x| err(&path, x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_written_as_the_csv_crate_writes_them() {
        let mut rng = crate::synth::Rng::new(5);
        let alphabet = [
            "a", ",", "\"", "\r", "\n", " ", "é", "<", "'", "x\"y", "", "\t", ";", "=", "-", "+",
            "@", "1", ".",
        ];
        let mut w = CsvWriter::new(
            csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new()),
        );
        let mut mine = Vec::new();
        for _ in 0..2000 {
            let fields: Vec<String> = (0..13)
                .map(|_| {
                    (0..rng.below(5))
                        .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            w.write_record(&refs).expect("csv");
            push_record(&mut mine, &refs);
        }
        let theirs = w.into_inner().expect("flush");
        assert_eq!(
            String::from_utf8_lossy(&mine),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn fast_formats_match_the_general_ones() {
        let mut rng = crate::synth::Rng::new(11);
        let mut wall = WallFormatter::default();
        let mut s = Vec::new();
        let mut values: Vec<u64> = vec![0, 1, 499, 500, 501, 999_500, 1_000_500, 2_500, 3_500];
        values.extend((0..20_000).map(|_| rng.below(5_000_000_000)));
        values.extend((0..2_000).map(|_| rng.below(10_000) * 1000 + 500));
        for ns in values {
            s.clear();
            Line::new(&mut s).ms(Some(ns));
            assert_eq!(String::from_utf8_lossy(&s), ns_ms(Some(ns)), "{ns} ns");
            let t = 1_795_500_148_000_000_000 + ns * 7;
            assert_eq!(wall.format(t), format_wall(t), "{t}");
        }
        s.clear();
        Line::new(&mut s).ms(None);
        assert!(s.is_empty());
        for v in 0..=100u32 {
            s.clear();
            Line::new(&mut s).hundredths(v);
            let want = format!("{:.2}", f64::from(v) / 100.0);
            assert_eq!(String::from_utf8_lossy(&s), want);
        }
        for v in [0u128, 1, 0xdead_beef, u128::MAX, 1 << 100] {
            s.clear();
            Line::new(&mut s).hex(v, 32);
            assert_eq!(String::from_utf8_lossy(&s), format!("{v:032x}"));
        }
    }
}
