//! `logs.csv` (one log event a row, time order) and `log_patterns.csv` (one pattern of one
//! service a row). Captured text is hostile: besides the CSV quoting, a field that a
//! spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
//! return) is prefixed with `'` (OWASP's CSV injection advice).

use std::path::Path;

use super::format_wall;
use crate::model::Analysis;
use crate::AnalyzeError;

fn err(path: &Path, e: impl std::fmt::Display) -> AnalyzeError {
    AnalyzeError::Report {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// `s`, made inert for spreadsheets: the one rule of every CSV file
/// ([`retrace_replay::csv_cell::csv_cell`]).
pub(crate) fn no_formula(s: &str) -> std::borrow::Cow<'_, str> {
    retrace_replay::csv_cell::csv_cell(s)
}

fn writer(path: &Path) -> Result<csv::Writer<std::io::BufWriter<std::fs::File>>, AnalyzeError> {
    let f = std::fs::File::create(path).map_err(|e| err(path, e))?;
    Ok(csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(std::io::BufWriter::with_capacity(1 << 20, f)))
}

/// Writes `logs.csv` and `log_patterns.csv` into `dir`.
pub(crate) fn write(a: &Analysis, dir: &Path) -> Result<(), AnalyzeError> {
    let l = &a.logs;
    let path = dir.join("logs.csv");
    let mut w = writer(&path)?;
    w.write_record([
        "ts",
        "service",
        "pid",
        "level",
        "pattern_id",
        "message",
        "node",
        "tid",
        "stream",
        "lines",
        "cut_off_bytes",
        "request",
        "trace_id",
    ])
    .map_err(|e| err(&path, e))?;
    for e in &l.events {
        let pattern = l.pattern_of(e).map_or("", |p| p.id.as_str());
        let (request, trace) = match e.request {
            Some(r) => {
                let trace = if a.traces_skipped {
                    String::new()
                } else {
                    let id = a.requests.trace_id_of_root(a.requests.root_of(r as usize));
                    format!("{id:032x}")
                };
                (r.to_string(), trace)
            }
            None => (String::new(), String::new()),
        };
        w.write_record([
            format_wall(e.ts_ns).as_str(),
            &no_formula(l.service_of(e)),
            &e.pid.to_string(),
            e.level.name(),
            pattern,
            &no_formula(&e.message),
            &no_formula(l.nodes.get(usize::from(e.node)).map_or("", String::as_str)),
            &e.tid.to_string(),
            &no_formula(l.streams.get(e.stream as usize).map_or("", String::as_str)),
            &e.lines.to_string(),
            &e.cut_off_bytes.to_string(),
            &request,
            &trace,
        ])
        .map_err(|e| err(&path, e))?;
    }
    w.flush().map_err(|e| err(&path, e))?;

    let path = dir.join("log_patterns.csv");
    let mut w = writer(&path)?;
    w.write_record([
        "pattern_id",
        "service",
        "level",
        "template",
        "count",
        "first",
        "last",
        "sample",
        "lines",
        "failed_requests",
        "failed_request_rows",
    ])
    .map_err(|e| err(&path, e))?;
    for p in &l.patterns {
        let rows: Vec<String> = p.failed_requests.iter().map(usize::to_string).collect();
        w.write_record([
            p.id.as_str(),
            &no_formula(&p.service),
            p.level.name(),
            &no_formula(&p.template),
            &p.count.to_string(),
            &format_wall(p.first_ns),
            &format_wall(p.last_ns),
            &no_formula(&p.sample),
            &p.lines.to_string(),
            &p.failed_request_count.to_string(),
            &rows.join(" "),
        ])
        .map_err(|e| err(&path, e))?;
    }
    w.flush().map_err(|e| err(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_made_inert() {
        assert_eq!(no_formula("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(no_formula("-2+3"), "'-2+3");
        assert_eq!(no_formula("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(no_formula("ERROR boom"), "ERROR boom");
    }
}
