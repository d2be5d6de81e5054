//! `index.html`: one self-contained page (inline CSS and SVG, no script, no external resource).

use std::fmt::Write as _;

use super::{charts, escape_html as esc, format_wall, human_count, human_ms, map, traces_html};
use crate::model::{Analysis, Health};

/// Services with charts, at most (by requests served).
const MAX_CHARTS: usize = 12;
/// Endpoints listed, at most.
const TOP_ENDPOINTS: usize = 25;

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c5cad6;font-size:13px}
main{padding:8px 28px 40px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;margin:16px 0;padding:12px 18px}
h2{font-size:16px;margin:4px 0 10px}
h3{font-size:14px;margin:14px 0 4px}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pill{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:11.5px}
.ok{background:#2e9d52}.warning{background:#d99100}.critical{background:#d43c3c}
.muted{color:#6b7280}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;font-size:13px}
.kv div:nth-child(odd){color:#6b7280}
.map{overflow-x:auto}
#service-map .node-name{font-size:13px;font-weight:600;fill:#1d2330}
#service-map .node-sub{font-size:11px;fill:#4b5563}
#service-map .edge-label{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}
.charts{display:flex;flex-wrap:wrap;gap:6px}
.reason{font-size:11.5px;color:#6b7280}
code{word-break:break-all}
"#;

fn pill(h: Health) -> String {
    format!("<span class=\"pill {0}\">{0}</span>", h.name())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn duration(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Renders the page.
pub(crate) fn render(a: &Analysis) -> String {
    let mut h = String::with_capacity(256 * 1024);
    let secs = a.window_secs();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>retrace report</title><style>{CSS}{}{}</style></head><body>\n\
         <header><h1>retrace report</h1><p>{} → {} ({}) · nodes: {}</p></header><main>\n",
        traces_html::CSS,
        super::profiles_html::CSS,
        esc(&format_wall(a.window_start_ns)),
        esc(&format_wall(a.window_end_ns)),
        duration(a.window_end_ns.saturating_sub(a.window_start_ns)),
        esc(&a.nodes.join(", "))
    );

    super::findings_html::render(a, &mut h);
    // Capture facts and completeness.
    h.push_str("<section id=\"capture\"><h2>Capture</h2><div class=\"kv\">");
    let mut kv = |k: &str, v: String| {
        let _ = write!(h, "<div>{}</div><div>{v}</div>", esc(k));
    };
    for n in &a.node_details {
        kv(
            &format!("node {}", n.name),
            format!(
                "{} events{}{}",
                n.events,
                if n.hostname.is_empty() {
                    String::new()
                } else {
                    format!(" · host {}", esc(&n.hostname))
                },
                if n.kernel.is_empty() {
                    String::new()
                } else {
                    format!(" · kernel {}", esc(&n.kernel))
                }
            ),
        );
    }
    kv(
        "window",
        format!(
            "{} → {}",
            esc(&format_wall(a.window_start_ns)),
            esc(&format_wall(a.window_end_ns))
        ),
    );
    kv("events", a.events.to_string());
    let kinds: Vec<String> = a
        .events_by_kind
        .iter()
        .map(|(k, v)| format!("{} {v}", esc(k)))
        .collect();
    kv("by kind", kinds.join(" · "));
    let dropped: Vec<String> = a
        .dropped_by_kind
        .iter()
        .map(|(k, v)| format!("{} {v}", esc(k)))
        .collect();
    kv(
        "dropped",
        if a.dropped == 0 {
            "0".to_string()
        } else {
            format!("{} ({})", a.dropped, dropped.join(" · "))
        },
    );
    kv("damaged blocks", a.damaged_blocks.to_string());
    if !a.missing_segments.is_empty() {
        kv("missing segments", esc(&a.missing_segments.join(", ")));
    }
    kv(
        "completeness",
        format!(
            "{}{}",
            pct(a.completeness),
            if a.completeness < 0.99 {
                " <span class=\"pill warning\">incomplete</span>"
            } else {
                ""
            }
        ),
    );
    let p = &a.payload;
    kv(
        "payloads",
        format!(
            "{} messages · {} truncated · {} unknown protocol ({} connections) · {} unparsable · \
             {} on sockets seen mid-life · DNS {} parsed, {} not",
            p.messages,
            p.truncated,
            p.unknown,
            p.unknown_connections,
            p.unparsed,
            p.orphan_messages,
            p.dns_messages,
            p.dns_unparsed
        ),
    );
    kv(
        "requests",
        format!(
            "{} ({}/s) · {} failed ({})",
            a.total_requests,
            human_count(a.total_requests as f64 / secs),
            a.total_errors,
            pct(if a.total_requests == 0 {
                0.0
            } else {
                a.total_errors as f64 / a.total_requests as f64
            })
        ),
    );
    for (ts, note) in &a.marks {
        kv("mark", format!("{} {}", esc(&format_wall(*ts)), esc(note)));
    }
    for o in &a.clock_offsets {
        kv("clock", esc(&o.to_string()));
    }
    for w in &a.warnings {
        kv("warning", esc(w));
    }
    h.push_str("</div></section>\n");

    // Map.
    h.push_str(
        "<section id=\"map\"><h2>Service map</h2><p class=\"muted\">Clients on the left, \
         backends on the right; colours show health (green ok, amber warning, red critical). \
         Labels: protocol, request rate, p99 latency, errors, failed connections.</p><div class=\"map\">",
    );
    h.push_str(&map::render(a));
    h.push_str("</div></section>\n");

    // Services.
    h.push_str(
        "<section id=\"services\"><h2>Services</h2><table><thead><tr><th>service</th>\
         <th>status</th><th>instances</th><th title=\"requests it served\">served</th><th>rate</th>\
         <th>errors</th><th>error rate</th><th>p50</th><th>p95</th><th>p99</th>\
         <th title=\"requests its callers made to it: served, and connection attempts that \
         failed\">calls</th><th title=\"its callers' connection attempts that failed\">failed \
         connects</th><th>sent</th><th>identified by</th><th>why</th></tr></thead><tbody>",
    );
    for s in &a.services {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}/s</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td>\
             <td class=\"reason\">{}</td></tr>",
            esc(&s.service),
            pill(s.status),
            s.instances,
            s.requests,
            human_count(s.requests as f64 / secs),
            s.errors,
            pct(s.error_rate),
            human_ms(s.p50_ms),
            human_ms(s.p95_ms),
            human_ms(s.p99_ms),
            s.calls,
            s.failed_connections,
            s.requests_sent,
            esc(&s.kind),
            esc(&s.reasons.join("; "))
        );
    }
    h.push_str("</tbody></table></section>\n");
    h.push_str(&super::slo_html::render(a));
    traces_html::render(a, &mut h);
    super::logs_html::render(a, &mut h);
    super::profiles_html::render(a, &mut h);

    // Charts.
    let mut charted: Vec<&crate::model::ServiceSeries> = a.series.iter().collect();
    let served = |name: &str| a.service(name).map_or(0, |s| s.requests);
    charted.sort_by(|x, y| {
        served(&y.service)
            .cmp(&served(&x.service))
            .then(x.service.cmp(&y.service))
    });
    let _ =
        write!(
        h,
        "<section id=\"charts\"><h2>Over time</h2><p class=\"muted\">Requests served per service, \
         in buckets of {}.{}</p>",
        duration(a.bucket_ns),
        if charted.len() > MAX_CHARTS {
            format!(" The {MAX_CHARTS} busiest services of {} are shown.", charted.len())
        } else {
            String::new()
        }
    );
    for s in charted.iter().take(MAX_CHARTS) {
        let _ = write!(h, "<h3>{}</h3><div class=\"charts\">", esc(&s.service));
        h.push_str(&charts::service_charts(
            s,
            a.window_start_ns,
            a.window_end_ns,
            a.bucket_ns,
        ));
        h.push_str("</div>");
    }
    if charted.is_empty() {
        h.push_str("<p class=\"muted\">No requests.</p>");
    }
    h.push_str("</section>\n");

    // Top endpoints.
    let mut eps: Vec<&crate::model::EndpointStats> = a.endpoints.iter().collect();
    eps.sort_by(|x, y| {
        y.requests
            .cmp(&x.requests)
            .then_with(|| (&x.service, &x.route).cmp(&(&y.service, &y.route)))
    });
    let _ = write!(
        h,
        "<section id=\"endpoints\"><h2>Top endpoints</h2><p class=\"muted\">{} endpoints in all \
         (endpoints.csv); the busiest {} here.</p><table><thead><tr><th>service</th>\
         <th>protocol</th><th>route</th><th>requests</th><th>errors</th><th>p50</th><th>p95</th>\
         <th>p99</th></tr></thead><tbody>",
        a.endpoints.len(),
        TOP_ENDPOINTS.min(a.endpoints.len())
    );
    for e in eps.iter().take(TOP_ENDPOINTS) {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            esc(&e.service),
            esc(&e.protocol),
            esc(&e.route),
            e.requests,
            e.errors,
            human_ms(e.p50_ms),
            human_ms(e.p95_ms),
            human_ms(e.p99_ms)
        );
    }
    h.push_str("</tbody></table></section>\n");

    // Edges.
    h.push_str(
        "<section id=\"edges\"><h2>Edges</h2><table><thead><tr><th>client</th><th>server</th>\
         <th>protocol</th><th>status</th><th>connections</th><th>failed</th><th>requests</th>\
         <th>rate</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th><th>server p99</th>\
         <th>retransmits</th><th>sent</th><th>received</th><th>why</th></tr></thead><tbody>",
    );
    for e in &a.edges {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}/s</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"reason\">{}</td></tr>",
            esc(&e.client),
            esc(&e.server),
            esc(&e.protocol),
            pill(e.status),
            e.connections,
            e.failed_connections,
            e.requests,
            human_count(e.rate_per_s),
            e.errors,
            human_ms(e.p50_ms),
            human_ms(e.p95_ms),
            human_ms(e.p99_ms),
            human_ms(e.server_p99_ms),
            e.retransmits,
            e.bytes_sent,
            e.bytes_received,
            esc(&e.reasons.join("; "))
        );
    }
    h.push_str("</tbody></table></section>\n");
    h.push_str(
        "<p class=\"muted\">Generated by retrace analyze. Full data: services.csv, edges.csv, \
         endpoints.csv, requests.csv, summary.json.</p></main></body></html>\n",
    );
    h
}
