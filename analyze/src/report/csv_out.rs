//! The CSV files. Headers start with the columns issue 4 fixes; extra columns follow.

use std::path::Path;

use super::{fmt_ms, format_wall};
use crate::model::Analysis;
use crate::AnalyzeError;

fn err(path: &Path, e: impl std::fmt::Display) -> AnalyzeError {
    AnalyzeError::Report {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn writer(path: &Path) -> Result<csv::Writer<std::fs::File>, AnalyzeError> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_path(path)
        .map_err(|e| err(path, e))
}

fn ns_ms(v: Option<u64>) -> String {
    fmt_ms(v.map(|ns| ns as f64 / 1e6))
}

/// Writes the four CSV files.
pub(crate) fn write_all(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
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

    let path = dir.join("requests.csv");
    let file = std::fs::File::create(&path).map_err(|x| err(&path, x))?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(std::io::BufWriter::with_capacity(1 << 20, file));
    let e = |x| err(&path, x);
    w.write_record([
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
    ])
    .map_err(e)?;
    for r in a.requests.iter() {
        w.write_record([
            format_wall(r.ts_ns).as_str(),
            r.client,
            r.server,
            r.protocol,
            r.method,
            r.target,
            r.status,
            ns_ms(r.latency_ns).as_str(),
            r.trace_id.unwrap_or(""),
            r.route,
            if r.error { "1" } else { "0" },
            ns_ms(r.server_latency_ns).as_str(),
            r.node,
        ])
        .map_err(e)?;
    }
    w.flush().map_err(|x| err(&path, x))?;
    Ok(())
}
