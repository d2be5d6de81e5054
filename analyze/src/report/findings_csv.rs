//! `findings.csv`, `tcp.csv` and `dns.csv` (the findings engine's outputs).

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

fn write_csv(path: &Path, header: &[&str], rows: Vec<Vec<String>>) -> Result<(), AnalyzeError> {
    let mut w = super::csv_out::writer(path)?;
    w.write_record(header).map_err(|e| err(path, e))?;
    for r in rows {
        w.write_record(&r).map_err(|e| err(path, e))?;
    }
    w.flush().map_err(|e| err(path, e))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or(String::new(), |x| x.to_string())
}

/// Writes the three files into `dir`.
pub(crate) fn write(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let findings = a
        .findings
        .iter()
        .map(|f| {
            let mut evidence = f.evidence.clone();
            if !f.caused_by.is_empty() {
                evidence.push(format!("follows {}", f.caused_by.join(", ")));
            }
            if !f.sample_requests.is_empty() {
                let rows: Vec<String> = f.sample_requests.iter().map(usize::to_string).collect();
                evidence.push(format!("sample requests.csv rows: {}", rows.join(" ")));
            }
            vec![
                format_wall(f.start_ns),
                format_wall(f.end_ns),
                f.severity.name().to_string(),
                f.kind.clone(),
                f.service.clone(),
                f.edge.clone(),
                format!("{}: {}", f.id, f.summary),
                f.likely_cause.clone(),
                evidence.join(" | "),
            ]
        })
        .collect();
    write_csv(
        &dir.join("findings.csv"),
        &[
            "start",
            "end",
            "severity",
            "kind",
            "service",
            "edge",
            "summary",
            "likely_cause",
            "evidence",
        ],
        findings,
    )?;
    let tcp = a
        .tcp
        .iter()
        .map(|p| {
            vec![
                format_wall(p.ts_ns),
                p.client.clone(),
                p.server.clone(),
                p.connects.to_string(),
                p.failed_connects.to_string(),
                p.failure_cause.clone(),
                p.retransmits.to_string(),
                opt(p.rtt_p50_us),
                opt(p.rtt_p99_us),
                p.resets_sent.to_string(),
                p.resets_received.to_string(),
                p.opened.to_string(),
                p.closed.to_string(),
                fmt_ms(p.lifetime_p50_ms),
                fmt_ms(p.lifetime_p99_ms),
                p.bytes_sent.to_string(),
                p.bytes_received.to_string(),
                p.synack_retransmits.to_string(),
                p.zero_window_client.to_string(),
                p.zero_window_server.to_string(),
            ]
        })
        .collect();
    write_csv(
        &dir.join("tcp.csv"),
        &[
            "ts",
            "client",
            "server",
            "connects",
            "failed_connects",
            "failure_cause",
            "retransmits",
            "rtt_p50_us",
            "rtt_p99_us",
            "resets_sent",
            "resets_received",
            "opened",
            "closed",
            "lifetime_p50_ms",
            "lifetime_p99_ms",
            "bytes_sent",
            "bytes_received",
            "synack_retransmits",
            "zero_window_client",
            "zero_window_server",
        ],
        tcp,
    )?;
    let dns = a
        .dns
        .iter()
        .map(|d| {
            vec![
                d.resolver.clone(),
                d.name.clone(),
                d.queries.to_string(),
                d.nxdomain.to_string(),
                d.server_errors.to_string(),
                d.timeouts.to_string(),
                fmt_ms(d.p50_ms),
                fmt_ms(d.p95_ms),
                format_wall(d.first_ns),
                format_wall(d.last_ns),
            ]
        })
        .collect();
    write_csv(
        &dir.join("dns.csv"),
        &[
            "resolver",
            "name",
            "queries",
            "nxdomain",
            "server_errors",
            "timeouts",
            "p50_ms",
            "p95_ms",
            "first",
            "last",
        ],
        dns,
    )
}
