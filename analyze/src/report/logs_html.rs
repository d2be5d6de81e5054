//! The page's logs section: per service, its log patterns (error patterns first) with their
//! counts over the capture as a small bar chart, the template and a sample, and the failed
//! requests their events were logged for. Every captured string is escaped.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{escape_html as esc, format_wall, human_ms, traces_html};
use crate::logs::{Level, LogPattern};
use crate::model::Analysis;

const CSS: &str = r#"
#logs .lv{display:inline-block;padding:0 7px;border-radius:9px;color:#fff;font-size:11.5px;background:#6b7280}
#logs .lv.error,#logs .lv.critical{background:#d43c3c}#logs .lv.warning{background:#d99100}
#logs .lv.info{background:#3b82c4}
#logs td.t code{white-space:pre-wrap;word-break:break-all}
#logs details{font-size:12.5px}
"#;

/// Services shown at most, and patterns per service.
const MAX_SERVICES: usize = 12;
const MAX_PATTERNS: usize = 20;
/// Bars of a pattern's chart at most.
const MAX_BARS: u64 = 120;

/// `1 line`, `2 lines`.
fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn level_badge(l: Level) -> String {
    format!("<span class=\"lv {0}\">{0}</span>", l.name())
}

fn bar_colour(l: Level) -> &'static str {
    match l {
        Level::Error | Level::Critical => "#d43c3c",
        Level::Warning => "#d99100",
        Level::Info => "#3b82c4",
        _ => "#9aa3b2",
    }
}

/// A pattern's events per bucket over the capture, as a small SVG bar chart.
fn sparkline(a: &Analysis, p: &LogPattern) -> String {
    let span = a.window_end_ns.saturating_sub(a.window_start_ns).max(1);
    let bucket = a.bucket_ns.max(span.div_ceil(MAX_BARS)).max(1);
    let n = span.div_ceil(bucket).max(1) as usize;
    let mut counts = vec![0u64; n];
    for &(sec, k) in &p.per_second {
        let i = (sec.saturating_sub(a.window_start_ns) / bucket) as usize;
        if let Some(c) = counts.get_mut(i.min(n - 1)) {
            *c += k;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = (160.0, 24.0);
    let bw = w / n as f64;
    let mut s = format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <title>{} events, at most {max} per {} s</title>\
         <line x1=\"0\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" stroke=\"#dde1e8\"/>",
        p.count,
        bucket as f64 / 1e9
    );
    for (i, &c) in counts.iter().enumerate().filter(|(_, &c)| c > 0) {
        let bh = (c as f64 / max as f64 * (h - 2.0)).max(1.0);
        let _ = write!(
            s,
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{}\"/>",
            i as f64 * bw,
            h - bh,
            (bw - 0.3).max(0.6),
            bh,
            bar_colour(p.level)
        );
    }
    s.push_str("</svg>");
    s
}

/// Writes the logs section into `h` (nothing when the capture has no log writes).
pub(crate) fn render(a: &Analysis, h: &mut String) {
    let l = &a.logs;
    if l.writes == 0 {
        return;
    }
    let _ = write!(
        h,
        "<section id=\"logs\"><style>{CSS}</style><h2>Logs</h2><p class=\"muted\">{} ({}) in \
         {} from {}: {} to stdout, stderr and log files, {} bytes of which {} captured; {} \
         longer than the captured prefix (what they cut off is counted on their events, not \
         shown).{} Files: logs.csv, log_patterns.csv.</p>",
        plural(l.event_count, "log event"),
        plural(l.lines, "line"),
        plural(l.patterns.len() as u64, "pattern"),
        plural(l.services.len() as u64, "service"),
        plural(l.writes, "write"),
        l.bytes,
        l.captured_bytes,
        plural(l.cut_off_writes, "write"),
        if l.not_kept > 0 {
            format!(
                " {} events past the first {} are counted in their patterns but not in logs.csv \
                 (its bound on memory).",
                l.not_kept,
                l.events.len()
            )
        } else {
            String::new()
        }
    );
    // services with error events first
    let errors = l.errors_per_second();
    let mut services: Vec<&str> = l.services.iter().map(String::as_str).collect();
    let errs = |s: &str| errors.get(s).map_or(0, |m| m.values().sum::<u64>());
    services.sort_by(|x, y| errs(y).cmp(&errs(x)).then(x.cmp(y)));
    let linked: BTreeSet<u128> = if a.traces_skipped {
        BTreeSet::new()
    } else {
        let (slowest, failed) = traces_html::choose(&a.traces);
        slowest
            .into_iter()
            .chain(failed)
            .filter_map(|i| a.traces.get(i).map(|t| t.trace_id(&a.requests)))
            .collect()
    };
    if services.len() > MAX_SERVICES {
        let _ = write!(
            h,
            "<p class=\"muted\">The {MAX_SERVICES} services with the most error events of {} \
             are shown.</p>",
            services.len()
        );
    }
    for s in services.iter().take(MAX_SERVICES) {
        let pats: Vec<&LogPattern> = l.patterns.iter().filter(|p| p.service == *s).collect();
        let _ = write!(
            h,
            "<h3><code>{}</code></h3><p class=\"muted\">{}, {}.{}</p>\
             <table><thead><tr><th>pattern</th><th>level</th><th>events</th><th>over time</th>\
             <th>template</th><th>failed requests logged for</th></tr></thead><tbody>",
            esc(s),
            plural(pats.len() as u64, "pattern"),
            plural(errs(s), "error event"),
            if pats.len() > MAX_PATTERNS {
                format!(" The first {MAX_PATTERNS} are shown.")
            } else {
                String::new()
            }
        );
        for p in pats.iter().take(MAX_PATTERNS) {
            let _ = write!(
                h,
                "<tr id=\"log-{0}\"><td>{0}</td><td>{1}</td><td class=\"n\">{2}</td><td>{3}</td>\
                 <td class=\"t\"><code>{4}</code><details><summary>sample, first {5}, last {6}\
                 </summary><code>{7}</code></details></td><td>",
                esc(&p.id),
                level_badge(p.level),
                p.count,
                sparkline(a, p),
                esc(&p.template),
                esc(&format_wall(p.first_ns)),
                esc(&format_wall(p.last_ns)),
                esc(&p.sample)
            );
            if p.failed_request_count > 0 {
                let _ = write!(h, "{}: ", p.failed_request_count);
                let mut first = true;
                for &i in &p.failed_requests {
                    let Some(r) = a.requests.get(i) else { continue };
                    if !first {
                        h.push_str(", ");
                    }
                    first = false;
                    let trace = if a.traces_skipped {
                        String::new()
                    } else {
                        let id = a.requests.trace_id_of_root(a.requests.root_of(i));
                        if linked.contains(&id) {
                            format!(" <a href=\"#trace-{id:032x}\">trace</a>")
                        } else {
                            String::new()
                        }
                    };
                    let _ = write!(
                        h,
                        "<span title=\"row {i} of requests.csv\">#{i} <code>{} {} → {}</code> \
                         {}{trace}</span>",
                        esc(r.method),
                        esc(r.target),
                        esc(r.status),
                        human_ms(r.latency_ns.map(|l| l as f64 / 1e6)),
                    );
                }
            }
            h.push_str("</td></tr>");
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");
}
