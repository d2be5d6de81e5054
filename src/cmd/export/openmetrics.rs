//! `retrace export openmetrics CAPTURE... --out metrics.txt`: RED metrics per service, edge
//! and endpoint, and the TCP figures of each edge, as OpenMetrics text with timestamps: one
//! sample per series at the end of each time bucket of the analysis, what a Prometheus that
//! had scraped the capture's services at that step would hold. Load it with `promtool tsdb
//! create-blocks-from openmetrics FILE DIR`. The names and labels are `docs/openmetrics.md`.
//!
//! Names follow the OpenTelemetry conventions as Prometheus spells them (`.` as `_`, the unit
//! as a suffix, `_total` on counters) under the `retrace` namespace: counters are cumulative
//! from the start of the capture; durations are histograms in seconds with the bucket
//! boundaries OpenTelemetry advises for `http.server.request.duration`. Where the analysis has
//! a time series (a service's requests, errors and percentiles per bucket; an edge's TCP
//! figures) it is written as it is; the edge and endpoint series are the analysis' request
//! rows counted per bucket (what its edges.csv and endpoints.csv total: a failed connection
//! attempt in the edge the analysis put it in).
//!
//! Label values are escaped as OpenMetrics asks (`\\`, `\"`, `\n`); families come one after
//! the other, each series' samples in time order, and the file ends with `# EOF`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use retrace_analyze::Analysis;

use crate::cmd::analyze::Input;

/// Arguments of `retrace export openmetrics`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    /// File to write (`-`: standard output).
    #[arg(long, short, value_name = "FILE.txt")]
    out: PathBuf,
}

/// Runs `retrace export openmetrics`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let analysis = args.input.analyze()?;
    let t1 = Instant::now();
    let stats = super::write_output(&args.out, |w| write_openmetrics(&analysis, w))?;
    if !args.input.quiet {
        eprintln!(
            "{} samples of {} series written to {} (analysis {:.2} s, export {:.2} s)",
            stats.samples,
            stats.series,
            args.out.display(),
            (t1 - t0).as_secs_f64(),
            t1.elapsed().as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Upper bounds of the duration histograms' buckets, seconds (OpenTelemetry's advice for
/// `http.server.request.duration`), then `+Inf`.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// What [`write_openmetrics`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Series (metric name and label set).
    pub series: u64,
    /// Samples.
    pub samples: u64,
}

/// One series' figures per bucket of the analysis.
#[derive(Clone, Default)]
struct Red {
    /// Requests, failed requests, answered requests, sum of their latencies (ns), histogram
    /// counts (non-cumulative) per bucket of the analysis.
    buckets: BTreeMap<u64, RedBucket>,
}

#[derive(Clone, Default)]
struct RedBucket {
    requests: u64,
    errors: u64,
    answered: u64,
    sum_ns: u128,
    hist: [u64; DURATION_BUCKETS.len()],
}

impl Red {
    fn add(&mut self, bucket: u64, error: bool, latency_ns: Option<u64>) {
        let b = self.buckets.entry(bucket).or_default();
        b.requests += 1;
        b.errors += u64::from(error);
        if let Some(ns) = latency_ns {
            b.answered += 1;
            b.sum_ns += u128::from(ns);
            let s = ns as f64 / 1e9;
            if let Some(i) = DURATION_BUCKETS.iter().position(|&le| s <= le) {
                b.hist[i] += 1;
            }
        }
    }
}

/// Writes the metrics of `a` as OpenMetrics text.
pub fn write_openmetrics(a: &Analysis, w: &mut dyn Write) -> std::io::Result<Written> {
    let mut out = Out {
        w,
        written: Written::default(),
        bucket_ns: a.bucket_ns.max(1),
        start_ns: a.window_start_ns,
        buckets: bucket_count(a),
    };
    services(a, &mut out)?;
    let (edges, endpoints) = red_from_rows(a, out.bucket_ns);
    out.red(
        "retrace_edge",
        "requests from a client service to a server service over one protocol (failed \
         connection attempts included, as failed requests)",
        &edges,
    )?;
    out.red(
        "retrace_endpoint",
        "requests a service served on one endpoint (method and route)",
        &endpoints,
    )?;
    tcp(a, &mut out)?;
    out.w.write_all(b"# EOF\n")?;
    Ok(out.written)
}

/// Buckets of the analysis' window.
fn bucket_count(a: &Analysis) -> u64 {
    let span = a.window_end_ns.saturating_sub(a.window_start_ns);
    span / a.bucket_ns.max(1) + 1
}

/// Labels of a series, in order.
type Labels = Vec<(&'static str, String)>;

/// The edge and endpoint series: the request rows counted per bucket.
fn red_from_rows(a: &Analysis, bucket_ns: u64) -> (BTreeMap<Labels, Red>, BTreeMap<Labels, Red>) {
    // A failed connection attempt (protocol `tcp`) counts in the edge of its pair's usual
    // protocol: the one the analysis gave its failed connections.
    let fold: BTreeMap<(&str, &str), &str> = a
        .edges
        .iter()
        .filter(|e| e.failed_connections > 0)
        .map(|e| ((e.client.as_str(), e.server.as_str()), e.protocol.as_str()))
        .collect();
    let mut edges: BTreeMap<(&str, &str, &str), Red> = BTreeMap::new();
    let mut endpoints: BTreeMap<(&str, &str, String), Red> = BTreeMap::new();
    for r in a.requests.iter() {
        let b = r.ts_ns.saturating_sub(a.window_start_ns) / bucket_ns;
        let protocol = match fold.get(&(r.client, r.server)) {
            Some(p) if r.is_failed_connect() => p,
            _ => r.protocol,
        };
        edges
            .entry((r.client, r.server, protocol))
            .or_default()
            .add(b, r.error, r.latency_ns);
        if !r.is_failed_connect() {
            // A service's own latency: its side's when captured, else its client's.
            let lat = r.server_latency_ns.or(r.latency_ns);
            let name = endpoint_name(
                r.method,
                if r.route.is_empty() {
                    r.target
                } else {
                    r.route
                },
            );
            endpoints
                .entry((r.server, r.protocol, name))
                .or_default()
                .add(b, r.error, lat);
        }
    }
    let edges = edges
        .into_iter()
        .map(|((c, s, p), red)| {
            (
                vec![
                    ("client", c.into()),
                    ("server", s.into()),
                    ("protocol", p.into()),
                ],
                red,
            )
        })
        .collect();
    let endpoints = endpoints
        .into_iter()
        .map(|((s, p, e), red)| {
            (
                vec![
                    ("service", s.into()),
                    ("protocol", p.into()),
                    ("endpoint", e),
                ],
                red,
            )
        })
        .collect();
    (edges, endpoints)
}

/// An endpoint's name as endpoints.csv has it: `METHOD route`, or either alone.
fn endpoint_name(method: &str, route: &str) -> String {
    if method == route || route.is_empty() {
        method.to_string()
    } else if method.is_empty() {
        route.to_string()
    } else {
        format!("{method} {route}")
    }
}

struct Out<'w> {
    w: &'w mut dyn Write,
    written: Written,
    bucket_ns: u64,
    start_ns: u64,
    buckets: u64,
}

impl Out<'_> {
    /// `# TYPE`, `# UNIT` (when given) and `# HELP` of a family.
    fn family(&mut self, name: &str, kind: &str, unit: &str, help: &str) -> std::io::Result<()> {
        writeln!(self.w, "# TYPE {name} {kind}")?;
        if !unit.is_empty() {
            writeln!(self.w, "# UNIT {name} {unit}")?;
        }
        writeln!(self.w, "# HELP {name} {}", escape_help(help))
    }

    /// One sample: `name{labels} value timestamp` (seconds, with milliseconds).
    fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, String)],
        extra: Option<(&str, &str)>,
        value: f64,
        ts_ns: u64,
    ) -> std::io::Result<()> {
        self.w.write_all(name.as_bytes())?;
        let mut first = true;
        for (k, v) in labels.iter().map(|(k, v)| (*k, v.as_str())).chain(extra) {
            self.w.write_all(if first { b"{" } else { b"," })?;
            first = false;
            write!(self.w, "{k}=\"")?;
            write_escaped(self.w, v)?;
            self.w.write_all(b"\"")?;
        }
        if !first {
            self.w.write_all(b"}")?;
        }
        // Prometheus keeps milliseconds: the bucket ends are whole milliseconds anyway.
        let ms = ts_ns / 1_000_000;
        writeln!(self.w, " {} {}.{:03}", number(value), ms / 1000, ms % 1000)?;
        self.written.samples += 1;
        Ok(())
    }

    /// End of bucket `b`, wall ns.
    fn end_of(&self, b: u64) -> u64 {
        self.start_ns + (b + 1) * self.bucket_ns
    }

    /// Requests and errors counters and the duration histogram of each series of `red`.
    fn red(
        &mut self,
        prefix: &str,
        what: &str,
        red: &BTreeMap<Labels, Red>,
    ) -> std::io::Result<()> {
        let requests = format!("{prefix}_requests");
        self.family(&requests, "counter", "", &format!("{what}: requests"))?;
        for (labels, r) in red {
            self.counter_series(&format!("{requests}_total"), labels, r, |b| b.requests)?;
        }
        let errors = format!("{prefix}_request_errors");
        self.family(&errors, "counter", "", &format!("{what}: failed requests"))?;
        for (labels, r) in red {
            self.counter_series(&format!("{errors}_total"), labels, r, |b| b.errors)?;
        }
        let dur = format!("{prefix}_request_duration_seconds");
        self.family(
            &dur,
            "histogram",
            "seconds",
            &format!("{what}: duration of the answered requests"),
        )?;
        for (labels, r) in red {
            self.histogram_series(&dur, labels, r)?;
        }
        Ok(())
    }

    /// A cumulative counter of one series, sampled at the end of every bucket from its first.
    fn counter_series(
        &mut self,
        name: &str,
        labels: &Labels,
        r: &Red,
        f: impl Fn(&RedBucket) -> u64,
    ) -> std::io::Result<()> {
        let Some(&first) = r.buckets.keys().next() else {
            return Ok(());
        };
        self.written.series += 1;
        let mut total = 0u64;
        for b in first..self.buckets {
            total += r.buckets.get(&b).map_or(0, &f);
            self.sample(name, labels, None, total as f64, self.end_of(b))?;
        }
        Ok(())
    }

    fn histogram_series(&mut self, name: &str, labels: &Labels, r: &Red) -> std::io::Result<()> {
        let Some(&first) = r.buckets.keys().next() else {
            return Ok(());
        };
        self.written.series += 1;
        let (mut hist, mut count, mut sum_ns) = ([0u64; DURATION_BUCKETS.len()], 0u64, 0u128);
        let bucket = format!("{name}_bucket");
        let (count_name, sum_name) = (format!("{name}_count"), format!("{name}_sum"));
        for b in first..self.buckets {
            if let Some(x) = r.buckets.get(&b) {
                for (h, v) in hist.iter_mut().zip(x.hist) {
                    *h += v;
                }
                count += x.answered;
                sum_ns += x.sum_ns;
            }
            let ts = self.end_of(b);
            let mut cum = 0u64;
            for (le, h) in DURATION_BUCKETS.iter().zip(hist) {
                cum += h;
                self.sample(&bucket, labels, Some(("le", &number(*le))), cum as f64, ts)?;
            }
            self.sample(&bucket, labels, Some(("le", "+Inf")), count as f64, ts)?;
            self.sample(&count_name, labels, None, count as f64, ts)?;
            self.sample(&sum_name, labels, None, sum_ns as f64 / 1e9, ts)?;
        }
        Ok(())
    }
}

/// The services' series as the analysis has them: served requests and errors per bucket
/// (cumulated), and each bucket's median and 99th percentile latency.
fn services(a: &Analysis, out: &mut Out<'_>) -> std::io::Result<()> {
    let what = "requests a service served (its callers' failed connection attempts excluded)";
    let label = |s: &str| vec![("service", s.to_string())];
    for (family, help, f) in [
        (
            "retrace_service_requests",
            "requests",
            (|p: &retrace_analyze::SeriesPoint| p.requests) as fn(&_) -> u64,
        ),
        ("retrace_service_request_errors", "failed requests", |p| {
            p.errors
        }),
    ] {
        out.family(family, "counter", "", &format!("{what}: {help}"))?;
        let name = format!("{family}_total");
        for s in &a.series {
            if s.points.is_empty() {
                continue;
            }
            out.written.series += 1;
            let mut total = 0;
            for p in &s.points {
                total += f(p);
                let end = p.start_ns + out.bucket_ns;
                out.sample(&name, &label(&s.service), None, total as f64, end)?;
            }
        }
    }
    let name = "retrace_service_request_duration_seconds";
    out.family(
        name,
        "summary",
        "seconds",
        &format!("{what}: median and 99th percentile duration in each time bucket"),
    )?;
    for s in &a.series {
        let mut any = false;
        for p in &s.points {
            let end = p.start_ns + out.bucket_ns;
            for (q, v) in [("0.5", p.p50_ms), ("0.99", p.p99_ms)] {
                if let Some(ms) = v {
                    any = true;
                    out.sample(
                        name,
                        &label(&s.service),
                        Some(("quantile", q)),
                        ms / 1e3,
                        end,
                    )?;
                }
            }
        }
        out.written.series += u64::from(any) * 2;
    }
    Ok(())
}

/// The TCP series of each edge (tcp.csv): cumulative counters and each bucket's RTT
/// percentiles.
fn tcp(a: &Analysis, out: &mut Out<'_>) -> std::io::Result<()> {
    let mut by_edge: BTreeMap<(&str, &str), Vec<&retrace_analyze::TcpPoint>> = BTreeMap::new();
    for p in &a.tcp {
        by_edge.entry((&p.client, &p.server)).or_default().push(p);
    }
    for v in by_edge.values_mut() {
        v.sort_by_key(|p| p.ts_ns);
    }
    type Field = fn(&retrace_analyze::TcpPoint) -> u64;
    let counters: [(&str, &str, Field); 6] = [
        (
            "retrace_tcp_connects",
            "connections the client established",
            |p| p.connects,
        ),
        (
            "retrace_tcp_connect_failures",
            "connection attempts of the client that failed",
            |p| p.failed_connects,
        ),
        (
            "retrace_tcp_retransmits",
            "segments retransmitted on the edge's connections (either end)",
            |p| p.retransmits,
        ),
        (
            "retrace_tcp_synack_retransmits",
            "of the retransmits, SYN-ACKs the server sent again (handshakes it repeated)",
            |p| p.synack_retransmits,
        ),
        ("retrace_tcp_resets_sent", "resets the client sent", |p| {
            p.resets_sent
        }),
        (
            "retrace_tcp_resets_received",
            "resets the client received",
            |p| p.resets_received,
        ),
    ];
    for (family, help, f) in counters {
        out.family(
            family,
            "counter",
            "",
            &format!("TCP, client to server service: {help}"),
        )?;
        let name = format!("{family}_total");
        for ((c, s), points) in &by_edge {
            out.written.series += 1;
            let labels = vec![("client", c.to_string()), ("server", s.to_string())];
            let mut total = 0;
            for p in points {
                total += f(p);
                out.sample(&name, &labels, None, total as f64, p.ts_ns + out.bucket_ns)?;
            }
        }
    }
    let name = "retrace_tcp_rtt_seconds";
    out.family(
        name,
        "summary",
        "seconds",
        "TCP, client to server service: median and 99th percentile smoothed RTT the client \
         sampled in each time bucket",
    )?;
    for ((c, s), points) in &by_edge {
        let labels = vec![("client", c.to_string()), ("server", s.to_string())];
        let mut any = false;
        for p in points {
            for (q, v) in [("0.5", p.rtt_p50_us), ("0.99", p.rtt_p99_us)] {
                if let Some(us) = v {
                    any = true;
                    let end = p.ts_ns + out.bucket_ns;
                    out.sample(
                        name,
                        &labels,
                        Some(("quantile", q)),
                        f64::from(us) / 1e6,
                        end,
                    )?;
                }
            }
        }
        out.written.series += u64::from(any) * 2;
    }
    Ok(())
}

/// A number as OpenMetrics writes it: integers without a fraction, others in Rust's
/// shortest round-trip form.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Writes a label value escaped as OpenMetrics asks: `\` as `\\`, `"` as `\"`, a line feed as
/// `\n`.
fn write_escaped(w: &mut dyn Write, v: &str) -> std::io::Result<()> {
    let mut start = 0;
    for (i, c) in v.char_indices() {
        let esc: &[u8] = match c {
            '\\' => b"\\\\",
            '"' => b"\\\"",
            '\n' => b"\\n",
            _ => continue,
        };
        w.write_all(&v.as_bytes()[start..i])?;
        w.write_all(esc)?;
        start = i + c.len_utf8();
    }
    w.write_all(&v.as_bytes()[start..])
}

/// A HELP text escaped as OpenMetrics asks (`\\`, `\n`).
fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Vec::new();
        write_escaped(&mut out, "a\\b\"c\nd é").expect("write");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "a\\\\b\\\"c\\nd é");
    }

    #[test]
    fn numbers_are_written_plainly() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.005), "0.005");
        assert_eq!(number(2.5), "2.5");
    }
}
