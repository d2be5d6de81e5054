//! The page's opening section: the findings as an incident timeline (what, where, when, why,
//! with the evidence a click away), before the map. Every captured string is escaped.

use std::fmt::Write as _;

use std::collections::{BTreeMap, BTreeSet};

use super::{escape_html as esc, format_wall, human_ms, traces_html};
use crate::model::{Analysis, Finding, Severity, TcpPoint};

const CSS: &str = r#"
#findings .f{border-left:4px solid #9aa3b2;padding:6px 12px;margin:8px 0;background:#fafbfc}
#findings .f.critical{border-color:#d43c3c}#findings .f.warning{border-color:#d99100}
#findings .f.child{margin-left:28px}
#findings .what{font-weight:600;font-size:14px}
#findings .meta{font-size:12.5px;color:#4b5563;margin:2px 0}
#findings .why{font-size:13px;margin:4px 0}
#findings ul{margin:4px 0 4px 18px;padding:0;font-size:12.5px}
#findings .sev{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:11.5px;background:#6b7280}
#findings .sev.critical{background:#d43c3c}#findings .sev.warning{background:#d99100}
#findings .verdict{font-size:15px;margin:4px 0 8px}
#findings svg text{font-size:11px;fill:#1d2330}
"#;

/// Rows of requests shown per finding.
const SAMPLE_ROWS: usize = 6;

fn sev(s: Severity) -> String {
    format!("<span class=\"sev {0}\">{0}</span>", s.name())
}

fn clock(ns: u64) -> String {
    let w = format_wall(ns);
    w.get(11..23).unwrap_or(&w).to_string()
}

fn rel(a: &Analysis, ns: u64) -> String {
    format!(
        "+{:.1} s",
        ns.saturating_sub(a.window_start_ns) as f64 / 1e9
    )
}

/// Writes the findings section into `h`.
pub(crate) fn render(a: &Analysis, h: &mut String) {
    let _ = write!(
        h,
        "<section id=\"findings\"><style>{CSS}</style><h2>What went wrong</h2>"
    );
    let serious: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    if serious.is_empty() {
        let _ = write!(
            h,
            "<p class=\"verdict\">No problem found: no failed connections, error bursts, retransmit bursts, \
             resets cutting requests, DNS failures, OOM kills or restarts above the thresholds.{}</p>",
            if a.findings.is_empty() {
                String::new()
            } else {
                format!(" {} informational finding(s) below.", a.findings.len())
            }
        );
    } else {
        let roots = serious.iter().filter(|f| f.caused_by.is_empty()).count();
        let first = serious.iter().map(|f| f.start_ns).min().unwrap_or(0);
        let _ = write!(
            h,
            "<p class=\"verdict\">{} problem(s), {} finding(s) in all; the first at {} ({}).</p>",
            roots.max(1),
            a.findings.len(),
            esc(&clock(first)),
            esc(&rel(a, first))
        );
    }
    timeline(a, h);
    let links = Links::new(a);
    // Root findings, each followed by the findings it caused (depth first).
    let mut shown = vec![false; a.findings.len()];
    for (i, f) in a.findings.iter().enumerate() {
        if f.caused_by.is_empty() {
            card(a, &links, f, 0, h);
            shown[i] = true;
            children(a, &links, &f.id, 1, &mut shown, h);
        }
    }
    for (i, f) in a.findings.iter().enumerate() {
        if !shown[i] {
            card(a, &links, f, 1, h);
        }
    }
    network(a, &links, h);
    h.push_str(
        "<p class=\"muted\">All findings: findings.csv; per edge over time: tcp.csv; DNS: dns.csv. \
         Thresholds: Coroot's inspections, overridable with <code>--findings-config</code>.</p>\
         </section>\n",
    );
}

fn children(
    a: &Analysis,
    links: &Links,
    id: &str,
    depth: usize,
    shown: &mut [bool],
    h: &mut String,
) {
    if depth > 8 {
        return;
    }
    for (i, f) in a.findings.iter().enumerate() {
        if !shown[i] && f.caused_by.iter().any(|c| c == id) {
            shown[i] = true;
            card(a, links, f, depth, h);
            children(a, links, &f.id, depth + 1, shown, h);
        }
    }
}

/// A bar per finding over the capture's window.
fn timeline(a: &Analysis, h: &mut String) {
    if a.findings.is_empty() {
        return;
    }
    let (w, row, left) = (900.0, 18.0, 260.0);
    let span = a.window_end_ns.saturating_sub(a.window_start_ns).max(1) as f64;
    let x =
        |ns: u64| left + (ns.saturating_sub(a.window_start_ns) as f64 / span) * (w - left - 10.0);
    let n = a.findings.len().min(30);
    let height = row * n as f64 + 22.0;
    let _ = write!(
        h,
        "<svg role=\"img\" aria-label=\"findings timeline\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"0 0 {w} {height}\"><line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" \
         stroke=\"#9aa3b2\"/><text x=\"{left}\" y=\"{ty}\">{}</text><text x=\"{}\" y=\"{ty}\" \
         text-anchor=\"end\">{}</text>",
        w - 10.0,
        esc(&clock(a.window_start_ns)),
        w - 10.0,
        esc(&clock(a.window_end_ns)),
        y = row * n as f64 + 4.0,
        ty = row * n as f64 + 17.0,
    );
    for (k, f) in a.findings.iter().take(n).enumerate() {
        let y = k as f64 * row + 3.0;
        let (x0, x1) = (x(f.start_ns), x(f.end_ns));
        let color = match f.severity {
            Severity::Critical => "#d43c3c",
            Severity::Warning => "#d99100",
            Severity::Info => "#9aa3b2",
        };
        let label = format!("{} {} {}", f.id, f.kind, f.service);
        let _ = write!(
            h,
            "<a href=\"#finding-{id}\"><text x=\"0\" y=\"{ty}\">{label}</text>\
             <rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\" rx=\"2\">\
             <title>{title}</title></rect></a>",
            (x1 - x0).max(3.0),
            row - 6.0,
            id = esc(&f.id),
            ty = y + 10.0,
            label = esc(&label),
            title = esc(&f.summary),
        );
    }
    h.push_str("</svg>");
}

/// Where the evidence is on the page: the traces shown as waterfalls, the network panel's
/// rows.
struct Links {
    /// Trace ids with a waterfall in the traces section.
    traces: BTreeSet<u128>,
    /// `client -> server` → row id in the network panel.
    edges: BTreeMap<String, usize>,
    /// Request row → the first error log event logged for it: (pattern id, message).
    logged: BTreeMap<usize, (String, String)>,
}

impl Links {
    fn new(a: &Analysis) -> Self {
        let traces = if a.traces_skipped {
            BTreeSet::new()
        } else {
            let (slowest, failed) = traces_html::choose(&a.traces);
            slowest
                .into_iter()
                .chain(failed)
                .filter_map(|i| a.traces.get(i).map(|t| t.trace_id(&a.requests)))
                .collect()
        };
        let mut logged = BTreeMap::new();
        for e in a.logs.events.iter().filter(|e| e.level.is_error()) {
            if let Some(r) = e.request {
                logged.entry(r as usize).or_insert_with(|| {
                    let id = a.logs.pattern_of(e).map_or(String::new(), |p| p.id.clone());
                    (id, e.message.clone())
                });
            }
        }
        Self {
            traces,
            edges: net_edge_rows(a),
            logged,
        }
    }
}

fn card(a: &Analysis, links: &Links, f: &Finding, depth: usize, h: &mut String) {
    let _ = write!(
        h,
        "<div class=\"f {}{}\" id=\"finding-{}\"><div class=\"what\">{} {} · {}</div>",
        f.severity.name(),
        if depth > 0 { " child" } else { "" },
        esc(&f.id),
        sev(f.severity),
        esc(&f.id),
        esc(&f.summary)
    );
    let mut where_ = format!("<code>{}</code>", esc(&f.service));
    if !f.edge.is_empty() {
        match links.edges.get(&f.edge) {
            Some(k) => {
                let _ = write!(
                    where_,
                    " · edge <a href=\"#net-edge-{k}\"><code>{}</code></a>",
                    esc(&f.edge)
                );
            }
            None => {
                let _ = write!(where_, " · edge <code>{}</code>", esc(&f.edge));
            }
        }
    }
    if !f.processes.is_empty() {
        let _ = write!(
            where_,
            " · processes <code>{}</code>",
            esc(&f.processes.join(", "))
        );
    }
    let _ = write!(
        h,
        "<div class=\"meta\">{} · where: {} · when: {} → {} ({} → {}, {:.1} s)</div>",
        esc(&f.kind),
        where_,
        esc(&clock(f.start_ns)),
        esc(&clock(f.end_ns)),
        esc(&rel(a, f.start_ns)),
        esc(&rel(a, f.end_ns)),
        f.end_ns.saturating_sub(f.start_ns) as f64 / 1e9
    );
    let _ = write!(
        h,
        "<div class=\"why\">Likely cause: {}</div>",
        esc(&f.likely_cause)
    );
    if !f.caused_by.is_empty() {
        let links: Vec<String> = f
            .caused_by
            .iter()
            .map(|c| format!("<a href=\"#finding-{0}\">{0}</a>", esc(c)))
            .collect();
        let _ = write!(h, "<div class=\"meta\">Follows {}</div>", links.join(", "));
    }
    h.push_str("<details><summary>Evidence</summary><ul>");
    for e in &f.evidence {
        let _ = write!(h, "<li>{}</li>", esc(e));
    }
    h.push_str("</ul>");
    if !f.sample_requests.is_empty() {
        // the error lines logged for them, next to them (when any)
        let logged = f
            .sample_requests
            .iter()
            .take(SAMPLE_ROWS)
            .any(|i| links.logged.contains_key(i));
        let _ = write!(
            h,
            "<table><thead><tr><th>#</th><th>time</th><th>client</th><th>server</th>\
             <th>request</th><th>status</th><th>latency</th><th>trace</th>{}</tr></thead><tbody>",
            if logged { "<th>error logged</th>" } else { "" }
        );
        for &i in f.sample_requests.iter().take(SAMPLE_ROWS) {
            let Some(r) = a.requests.get(i) else { continue };
            let trace = if a.traces_skipped {
                String::new()
            } else {
                let id = a.requests.trace_id_of_root(a.requests.root_of(i));
                if links.traces.contains(&id) {
                    format!("<a href=\"#trace-{id:032x}\"><code>{id:032x}</code></a>")
                } else {
                    format!("<code>{id:032x}</code>")
                }
            };
            let _ = write!(
                h,
                "<tr><td class=\"n\">{i}</td><td class=\"n\">{}</td><td><code>{}</code></td>\
                 <td><code>{}</code></td><td><code>{} {}</code></td><td>{}</td><td class=\"n\">{}</td>\
                 <td>{trace}</td>{}</tr>",
                esc(&clock(r.ts_ns)),
                esc(r.client),
                esc(r.server),
                esc(r.method),
                esc(r.target),
                esc(r.status),
                human_ms(r.latency_ns.map(|l| l as f64 / 1e6)),
                match (logged, links.logged.get(&i)) {
                    (false, _) => String::new(),
                    (true, None) => "<td></td>".to_string(),
                    (true, Some((id, msg))) => format!(
                        "<td><a href=\"#log-{0}\">{0}</a> <code>{1}</code></td>",
                        esc(id),
                        esc(crate::logs::cap_str(msg, 200))
                    ),
                },
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str(
        "<div class=\"meta\">See also: <a href=\"#edges\">edges</a> · \
         <a href=\"#services\">services</a> · <a href=\"#traces\">traces</a> \
         (# is the row of requests.csv)</div></details></div>",
    );
}

/// `client -> server` → the id of its row in the network panel (`net-edge-K`): the service
/// map links its edges there.
pub(crate) fn net_edge_rows(a: &Analysis) -> BTreeMap<String, usize> {
    per_edge(&a.tcp)
        .keys()
        .enumerate()
        .map(|(k, (c, s))| (format!("{c} -> {s}"), k))
        .collect()
}

/// Per edge, its series summed over the capture.
#[derive(Default)]
struct EdgeTotals {
    connects: u64,
    failed: u64,
    causes: BTreeMap<String, u64>,
    retransmits: u64,
    resets_sent: u64,
    resets_received: u64,
    /// The buckets' RTT p50s (their median is shown) and the worst p99.
    rtt_p50s: Vec<u32>,
    rtt_p99: Option<u32>,
    opened: u64,
    closed: u64,
    /// The worst bucket's lifetime p99, ms.
    lifetime_p99_ms: Option<f64>,
    bytes_sent: u64,
    bytes_received: u64,
}

fn per_edge(tcp: &[TcpPoint]) -> BTreeMap<(&str, &str), EdgeTotals> {
    let mut m: BTreeMap<(&str, &str), EdgeTotals> = BTreeMap::new();
    for p in tcp {
        let e = m.entry((p.client.as_str(), p.server.as_str())).or_default();
        e.connects += p.connects;
        e.failed += p.failed_connects;
        for part in p.failure_cause.split(' ').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = part.rsplit_once(':') {
                *e.causes.entry(k.to_string()).or_default() += v.parse::<u64>().unwrap_or(0);
            }
        }
        e.retransmits += p.retransmits;
        e.resets_sent += p.resets_sent;
        e.resets_received += p.resets_received;
        e.rtt_p50s.extend(p.rtt_p50_us);
        e.rtt_p99 = e.rtt_p99.max(p.rtt_p99_us);
        e.opened += p.opened;
        e.closed += p.closed;
        e.lifetime_p99_ms = match (e.lifetime_p99_ms, p.lifetime_p99_ms) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        e.bytes_sent += p.bytes_sent;
        e.bytes_received += p.bytes_received;
    }
    m
}

/// Bytes for people (`1.2 MB`).
fn human_bytes(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{:.1} kB", n as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

/// The network panel: per edge, its TCP health over the capture (tcp.csv summed), as the
/// seed's "Network Health" box: retransmission rate, RTT, connects and failed connects with
/// their cause, churn, lifetimes, bytes, and the edge's findings. Open when an edge has a
/// finding (the map's edges link to their rows).
fn network(a: &Analysis, links: &Links, h: &mut String) {
    let edges = per_edge(&a.tcp);
    if edges.is_empty() {
        return;
    }
    let open = a
        .findings
        .iter()
        .any(|f| !f.edge.is_empty() && f.severity > Severity::Info);
    let secs = a.window_secs();
    let _ = write!(
        h,
        "<details id=\"network\"{}><summary><strong>Network health per edge</strong> \
         <span class=\"muted\">({} edges; over time: tcp.csv)</span></summary><table><thead><tr>\
         <th>client</th><th>server</th><th>connects</th><th>failed connects</th><th>cause</th>\
         <th>retransmits</th><th>retransmit rate</th><th>RTT p50 (median bucket)</th>\
         <th>RTT p99 (worst bucket)</th><th>resets sent</th><th>resets received</th>\
         <th>opened / closed</th><th>lifetime p99 (worst bucket)</th><th>sent / received</th>\
         <th>findings</th></tr></thead><tbody>",
        if open { " open" } else { "" },
        edges.len()
    );
    for ((c, s), e) in &edges {
        let name = format!("{c} -> {s}");
        let k = links.edges.get(&name).copied().unwrap_or(0);
        let causes: Vec<String> = e.causes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let found: Vec<String> = a
            .findings
            .iter()
            .filter(|f| f.edge == name)
            .map(|f| {
                format!(
                    "<a href=\"#finding-{0}\" class=\"sev {1}\">{0}</a>",
                    esc(&f.id),
                    f.severity.name()
                )
            })
            .collect();
        let mut p50s = e.rtt_p50s.clone();
        p50s.sort_unstable();
        let p50 = p50s.get(p50s.len().saturating_sub(1) / 2).copied();
        let us = |v: Option<u32>| human_ms(v.map(|us| f64::from(us) / 1000.0));
        let _ = write!(
            h,
            "<tr id=\"net-edge-{k}\"><td><code>{}</code></td><td><code>{}</code></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.2}/s</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{} / {}</td><td>{}</td></tr>",
            esc(c),
            esc(s),
            e.connects,
            e.failed,
            esc(&causes.join(", ")),
            e.retransmits,
            e.retransmits as f64 / secs,
            us(p50),
            us(e.rtt_p99),
            e.resets_sent,
            e.resets_received,
            e.opened,
            e.closed,
            human_ms(e.lifetime_p99_ms),
            human_bytes(e.bytes_sent),
            human_bytes(e.bytes_received),
            found.join(" ")
        );
    }
    h.push_str("</tbody></table></details>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_strings_are_escaped() {
        let a = Analysis {
            window_start_ns: 1_000_000_000,
            window_end_ns: 11_000_000_000,
            findings: vec![Finding {
                id: "F1".into(),
                start_ns: 2_000_000_000,
                end_ns: 5_000_000_000,
                severity: Severity::Critical,
                kind: "connection_failures".into(),
                service: "<script>alert(1)</script>".into(),
                edge: "a -> <b>".into(),
                processes: vec!["n/1 <img>".into()],
                summary: "x \"y\" <z>".into(),
                likely_cause: "<i>why</i>".into(),
                evidence: vec!["<e>".into()],
                ..Default::default()
            }],
            tcp: vec![TcpPoint {
                ts_ns: 2_000_000_000,
                client: "a".into(),
                server: "<b>".into(),
                failed_connects: 3,
                failure_cause: "ECONNREFUSED:3".into(),
                rtt_p99_us: Some(1500),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut h = String::new();
        render(&a, &mut h);
        for bad in ["<script>", "<b>", "<img>", "<z>", "<i>", "<e>"] {
            assert!(!h.contains(bad), "{bad} unescaped");
        }
        assert!(h.contains("&lt;script&gt;"));
        // The edge links to its row in the network panel, which links back.
        assert!(h.contains("href=\"#net-edge-0\""), "{h}");
        assert!(h.contains("<tr id=\"net-edge-0\">"));
        assert!(h.contains("ECONNREFUSED 3"));
        assert!(h.contains("1.50 ms"));
        assert!(h.contains("id=\"finding-F1\""));
        assert!(h.contains("1 problem(s)"));
    }

    #[test]
    fn nothing_found_says_so() {
        let a = Analysis::default();
        let mut h = String::new();
        render(&a, &mut h);
        assert!(h.contains("No problem found"));
    }
}
