//! The report: CSV files, `summary.json` and `index.html`.

mod charts;
mod csv_out;
mod findings_csv;
mod findings_html;
mod html;
mod logs_csv;
mod logs_html;
mod map;
mod profiles_csv;
pub(crate) mod profiles_html;
mod slo_html;
mod traces_html;

use std::path::Path;

use crate::model::Analysis;
use crate::AnalyzeError;

/// Writes `services.csv`, `edges.csv`, `requests.csv`, `endpoints.csv`, `slo.csv`,
/// `breaches.csv`, `alerts.csv`, `summary.json` and `index.html` into `out_dir` (created when missing). The same analysis gives byte-identical
/// files.
pub fn write_report(analysis: &Analysis, out_dir: &Path) -> Result<(), AnalyzeError> {
    std::fs::create_dir_all(out_dir).map_err(|error| AnalyzeError::Io {
        path: out_dir.to_path_buf(),
        error,
    })?;
    remove_stale(analysis, out_dir)?;
    // requests.csv (most of the work) on another thread, the rest on this one.
    std::thread::scope(|scope| {
        let requests = scope.spawn(|| {
            let mut cp = crate::input::Checkpoints::new();
            let mut r = csv_out::write_requests(analysis, out_dir);
            if !analysis.traces_skipped {
                r = r.and_then(|()| csv_out::write_spans(analysis, out_dir));
            }
            cp.at("report: requests.csv");
            r
        });
        let rest = write_summaries(analysis, out_dir);
        let requests = requests.join().unwrap_or_else(|_| {
            Err(AnalyzeError::Report {
                path: out_dir.join("requests.csv"),
                message: "the writer failed unexpectedly".into(),
            })
        });
        rest.and(requests)
    })
}

/// Removes the optional files this analysis does not write, left in `out_dir` by an earlier
/// report (a `--no-traces` run after one with traces, a capture without profiles after one
/// with): a directory never mixes two analyses. Each writer names its own files.
fn remove_stale(analysis: &Analysis, out_dir: &Path) -> Result<(), AnalyzeError> {
    if analysis.traces_skipped {
        remove_files(out_dir, &csv_out::TRACE_FILES)?;
    }
    if analysis.profiles.is_empty() {
        remove_files(out_dir, &profiles_csv::FILES)?;
    }
    Ok(())
}

/// Removes the files `names` of `dir` that exist.
fn remove_files(dir: &Path, names: &[&str]) -> Result<(), AnalyzeError> {
    for name in names {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(AnalyzeError::Io { path, error });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes everything but `requests.csv`.
fn write_summaries(analysis: &Analysis, out_dir: &Path) -> Result<(), AnalyzeError> {
    let mut cp = crate::input::Checkpoints::new();
    csv_out::write_tables(analysis, out_dir)?;
    findings_csv::write(analysis, out_dir)?;
    logs_csv::write(analysis, out_dir)?;
    if !analysis.traces_skipped {
        csv_out::write_traces(analysis, out_dir)?;
    }
    csv_out::write_slo(analysis, out_dir)?;
    profiles_csv::write(analysis, out_dir)?;
    cp.at("report: tables");
    let json_path = out_dir.join("summary.json");
    let mut json = serde_json::to_vec_pretty(analysis).map_err(|e| AnalyzeError::Report {
        path: json_path.clone(),
        message: e.to_string(),
    })?;
    json.push(b'\n');
    write_file(&json_path, &json)?;
    cp.at("report: summary.json");
    let html = render_html(analysis);
    let r = write_file(&out_dir.join("index.html"), html.as_bytes());
    cp.at("report: index.html");
    r
}

/// The HTML page of an analysis.
pub(crate) fn render_html(analysis: &Analysis) -> String {
    html::render(analysis)
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), AnalyzeError> {
    std::fs::write(path, bytes).map_err(|error| AnalyzeError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// Escapes text for HTML and SVG (element content and quoted attribute values).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters from captured bytes are not valid in XML/SVG text.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A latency in ms with a stable format, empty when none.
pub(crate) fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{x:.3}"),
        None => String::new(),
    }
}

/// A latency for people: `850 µs`, `12.3 ms`, `1.25 s`.
pub(crate) fn human_ms(v: Option<f64>) -> String {
    match v {
        None => "–".to_string(),
        Some(x) if x < 1.0 => format!("{:.0} µs", x * 1000.0),
        Some(x) if x < 10.0 => format!("{x:.2} ms"),
        Some(x) if x < 1000.0 => format!("{x:.1} ms"),
        Some(x) => format!("{:.2} s", x / 1000.0),
    }
}

/// A count for people: `950`, `12.3k`, `4.56M`.
pub(crate) fn human_count(n: f64) -> String {
    if n < 1000.0 {
        if n.fract() == 0.0 {
            format!("{n:.0}")
        } else {
            format!("{n:.1}")
        }
    } else if n < 1e6 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{:.2}M", n / 1e6)
    }
}

/// Wall-clock ns since the epoch as RFC 3339 UTC with nanoseconds.
pub fn format_wall(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            escape_html("/<script>alert(1)</script>\"'&"),
            "/&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"
        );
        assert_eq!(escape_html("a\u{1}b"), "a\u{FFFD}b");
    }

    #[test]
    fn wall_times() {
        assert_eq!(format_wall(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_wall(1_795_500_148_123_456_789),
            "2026-11-24T06:02:28.123456789Z"
        );
        assert_eq!(
            format_wall(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn human_formats() {
        assert_eq!(human_ms(Some(0.25)), "250 µs");
        assert_eq!(human_ms(Some(12.34)), "12.3 ms");
        assert_eq!(human_ms(Some(1500.0)), "1.50 s");
        assert_eq!(human_count(12_345.0), "12.3k");
        assert_eq!(fmt_ms(None), "");
        assert_eq!(fmt_ms(Some(1.0 / 3.0)), "0.333");
    }
}
