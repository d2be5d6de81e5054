//! The SLO section of `index.html`: the incident timeline (breaches, fired alerts, marks), the
//! alert rules, and one panel per service as in the seed's picture (target, current, budget
//! remaining, error-rate and request-rate sparklines, the latency distribution).

use std::fmt::Write as _;

use super::{escape_html as esc, format_wall, human_count, human_ms};
use crate::model::Analysis;
use crate::slo::{short_duration, ObjectiveResult, SloSeries, SloStatus};

const CSS: &str = "<style>\
.slo-grid{display:flex;flex-wrap:wrap;gap:12px}\
.slo-card{border:1px solid #dde1e8;border-radius:8px;padding:8px 12px;min-width:520px;flex:1 1 520px}\
.slo-card h3{margin:2px 0 8px}\
.slo-row{display:flex;gap:10px;flex-wrap:wrap}\
.slo-box{border:1px solid #eceef2;border-radius:6px;padding:6px 10px;flex:1 1 220px;font-size:12.5px}\
.slo-box b{font-size:13px}\
.slo-met{color:#2e9d52}.slo-breached{color:#d99100}.slo-missed{color:#d43c3c}.slo-no_data{color:#6b7280}\
.slo-dist{font-size:12.5px;margin-top:6px;font-variant-numeric:tabular-nums}\
</style>";

/// A budget time for people: `4h 32m`, `12m 5s`, `40s`.
pub(crate) fn human_budget(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

fn mark(s: SloStatus) -> &'static str {
    match s {
        SloStatus::Met => "✓ met",
        SloStatus::Breached => "! breached",
        SloStatus::Missed => "✗ missed",
        SloStatus::NoData => "– no data",
    }
}

fn budget_text(o: &ObjectiveResult) -> String {
    let time = if o.budget_remaining <= 0.0 {
        "exhausted".to_string()
    } else {
        match o.budget_remaining_s {
            Some(s) => format!(
                "{} at the current burn rate ×{:.2}",
                human_budget(s),
                o.current_burn_rate
            ),
            None => "not burning".to_string(),
        }
    };
    format!(
        "{:.2}% of the period's budget · {time}",
        o.budget_remaining * 100.0
    )
}

fn objective_box(o: Option<&ObjectiveResult>, title: &str) -> String {
    let Some(o) = o else {
        return format!(
            "<div class=\"slo-box\"><b>{title}</b><br><span class=\"muted\">none</span></div>"
        );
    };
    let target = match o.threshold_ms {
        Some(ms) => format!("{}% faster than {}", o.target, human_ms(Some(ms))),
        None => format!("{}% of requests succeed", o.target),
    };
    let current = match o.actual {
        Some(x) => format!("{x:.2}% ({} of {} bad)", o.bad, o.requests),
        None => "no requests".into(),
    };
    format!(
        "<div class=\"slo-box\"><b>{title}</b><br>Target: {}<br>Current: {} \
         <span class=\"slo-{}\">{}</span><br>Budget remaining: {}</div>",
        esc(&target),
        esc(&current),
        o.status.name(),
        mark(o.status),
        esc(&budget_text(o))
    )
}

/// A sparkline of `v` (at most 120 points, grouped by sums of `num` over sums of `den` when
/// `den` is given, else sums per second of `secs_per_point`).
fn sparkline(points: &[f64], color: &str) -> String {
    let w = 220.0;
    let h = 34.0;
    let max = points.iter().copied().fold(0.0, f64::max);
    let n = points.len().max(2) as f64 - 1.0;
    let mut pts = String::new();
    for (i, v) in points.iter().enumerate() {
        let x = i as f64 * w / n;
        let y = if max > 0.0 {
            h - 2.0 - (v / max) * (h - 4.0)
        } else {
            h - 2.0
        };
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        pts.trim_end()
    )
}

/// Groups buckets so that at most 120 remain: (requests, errors) per group.
fn grouped(s: &SloSeries) -> (Vec<(u64, u64)>, usize) {
    let n = s.requests.len();
    let k = n.div_ceil(120).max(1);
    let v = (0..n.div_ceil(k))
        .map(|g| {
            let r = g * k..((g + 1) * k).min(n);
            (s.requests[r.clone()].iter().sum(), s.errors[r].iter().sum())
        })
        .collect();
    (v, k)
}

fn timeline(a: &Analysis) -> String {
    let r = &a.slo;
    let (t0, t1) = (
        a.window_start_ns,
        a.window_end_ns.max(a.window_start_ns + 1),
    );
    let mut rows: Vec<&str> = r
        .breaches
        .iter()
        .map(|b| b.service.as_str())
        .chain(r.alerts.iter().map(|f| f.service.as_str()))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let mut h = String::new();
    if rows.is_empty() && a.marks.is_empty() {
        h.push_str("<p class=\"muted\">No breach and no alert fired.</p>");
        return h;
    }
    let (label_w, plot_w, row_h) = (140.0, 760.0, 22.0);
    let height = 26.0 + row_h * rows.len() as f64;
    let x = |ns: u64| label_w + (ns.clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64 * plot_w;
    let _ = write!(
        h,
        "<svg width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"incident timeline\" \
         font-size=\"11\">",
        label_w + plot_w + 10.0
    );
    let _ = write!(
        h,
        "<text x=\"{label_w}\" y=\"12\" fill=\"#6b7280\">{}</text>\
         <text x=\"{}\" y=\"12\" text-anchor=\"end\" fill=\"#6b7280\">{}</text>",
        esc(&format_wall(t0)),
        label_w + plot_w,
        esc(&format_wall(t1))
    );
    for (i, svc) in rows.iter().enumerate() {
        let y = 18.0 + row_h * i as f64;
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{:.1}\">{}</text><rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{plot_w}\" \
             height=\"{:.1}\" fill=\"#f0f2f5\"/>",
            y + 13.0,
            esc(svc),
            row_h - 4.0
        );
        for b in r.breaches.iter().filter(|b| b.service == *svc) {
            let (xa, xb) = (x(b.start_ns), x(b.end_ns));
            let _ = write!(
                h,
                "<rect x=\"{xa:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d43c3c\" \
                 opacity=\"0.8\"><title>{} breach {} → {} (peak burn ×{:.1})</title></rect>",
                (xb - xa).max(1.5),
                (row_h - 4.0) / 2.0,
                esc(&b.objective),
                esc(&format_wall(b.start_ns)),
                esc(&format_wall(b.end_ns)),
                b.peak_burn_rate
            );
        }
        for f in r.alerts.iter().filter(|f| f.service == *svc) {
            let (xa, xb) = (x(f.start_ns), x(f.end_ns));
            let _ = write!(
                h,
                "<rect x=\"{xa:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d99100\" \
                 opacity=\"0.85\"><title>alert {} ({}) {} → {}: {}</title></rect>",
                y + (row_h - 4.0) / 2.0,
                (xb - xa).max(1.5),
                (row_h - 4.0) / 2.0,
                esc(&f.name),
                esc(&f.severity),
                esc(&format_wall(f.start_ns)),
                esc(&format_wall(f.end_ns)),
                esc(&f.value)
            );
        }
    }
    for (ts, note) in &a.marks {
        let xm = x(*ts);
        let _ = write!(
            h,
            "<line x1=\"{xm:.1}\" x2=\"{xm:.1}\" y1=\"14\" y2=\"{height}\" stroke=\"#1d2330\" \
             stroke-dasharray=\"3 2\"><title>mark {}</title></line>",
            esc(note)
        );
    }
    h.push_str("</svg>");
    h.push_str(
        "<p class=\"muted\">Red: burn-rate breaches (upper half of a row); amber: alerts firing \
         (lower half); dashed: marks.</p>",
    );
    // The same, as a list.
    let mut events: Vec<(u64, String)> = Vec::new();
    for b in &r.breaches {
        events.push((
            b.start_ns,
            format!(
                "<td>breach</td><td><code>{}</code></td><td>{} · {} · peak burn ×{:.1} · {:.3}% \
                 of the budget · detected {}</td><td>{}</td>",
                esc(&b.service),
                esc(&b.objective),
                esc(&b.windows),
                b.peak_burn_rate,
                b.budget_consumed * 100.0,
                esc(&format_wall(b.detected_ns)),
                esc(&format_wall(b.end_ns))
            ),
        ));
    }
    for f in &r.alerts {
        events.push((
            f.start_ns,
            format!(
                "<td>alert ({})</td><td><code>{}</code></td><td>{}: {}</td><td>{}</td>",
                esc(&f.severity),
                esc(&f.service),
                esc(&f.name),
                esc(&f.value),
                esc(&format_wall(f.end_ns))
            ),
        ));
    }
    for (ts, note) in &a.marks {
        events.push((
            *ts,
            format!("<td>mark</td><td></td><td>{}</td><td></td>", esc(note)),
        ));
    }
    events.sort_by_key(|x| x.0);
    h.push_str(
        "<table><thead><tr><th>start</th><th>what</th><th>service</th><th>detail</th>\
         <th>end</th></tr></thead><tbody>",
    );
    for (ts, row) in events {
        let _ = write!(h, "<tr><td>{}</td>{row}</tr>", esc(&format_wall(ts)));
    }
    h.push_str("</tbody></table>");
    h
}

/// The SLO section.
pub(crate) fn render(a: &Analysis) -> String {
    let r = &a.slo;
    let mut h = String::with_capacity(16 * 1024);
    h.push_str(CSS);
    h.push_str("<section id=\"slo\"><h2>Service level objectives</h2>");
    let windows: Vec<String> = r
        .windows
        .iter()
        .map(|w| {
            format!(
                "{} &amp; {} above {} ({}, from {})",
                esc(&short_duration((w.long_s * 1e9).round() as u64)),
                esc(&short_duration((w.short_s * 1e9).round() as u64)),
                w.factor,
                esc(&w.severity),
                esc(&w.from)
            )
        })
        .collect();
    let _ = write!(
        h,
        "<p class=\"muted\">Objectives: {}. Availability counts what each service's callers saw \
         (5xx, protocol errors, no response, refused or timed-out connections); latency is the \
         callers' when they were captured. Burn-rate windows used: {}{}; budget period {} (30 \
         days{}), taken to start with the capture.</p>",
        esc(&r.source),
        windows.join("; "),
        if r.scale < 1.0 {
            format!(
                " (the SRE workbook's windows scaled ×{:.4} to this capture)",
                r.scale
            )
        } else {
            String::new()
        },
        esc(&human_budget(r.period_s)),
        if r.scale < 1.0 { " scaled alike" } else { "" }
    );
    h.push_str("<h3>Incident timeline</h3>");
    h.push_str(&timeline(a));
    if !r.alert_rules.is_empty() {
        let _ = write!(
            h,
            "<h3>Alert rules</h3><p class=\"muted\">Baseline: {}.</p><table><thead><tr>\
             <th>rule</th><th>severity</th><th>condition</th><th>for</th><th>status</th>\
             <th>note</th></tr></thead><tbody>",
            esc(&r.baseline)
        );
        for rule in &r.alert_rules {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}{}</td><td>{}</td>\
                 <td class=\"reason\">{}</td></tr>",
                esc(&rule.name),
                esc(&rule.severity),
                esc(&rule.condition),
                esc(&short_duration((rule.for_s * 1e9).round() as u64)),
                if rule.effective_for_s != rule.for_s {
                    format!(
                        " (evaluated as {})",
                        esc(&short_duration((rule.effective_for_s * 1e9).round() as u64))
                    )
                } else {
                    String::new()
                },
                esc(&rule.status),
                esc(&rule.note)
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h3>Per service</h3><div class=\"slo-grid\">");
    let secs_per_bucket = r.resolution_ns as f64 / 1e9;
    for s in &r.series {
        let avail = r.objective(&s.service, "availability");
        let lat = r.objective(&s.service, "latency");
        let (groups, k) = grouped(s);
        let err_pts: Vec<f64> = groups
            .iter()
            .map(|&(n, e)| if n == 0 { 0.0 } else { e as f64 / n as f64 })
            .collect();
        let rate_pts: Vec<f64> = groups
            .iter()
            .map(|&(n, _)| n as f64 / (secs_per_bucket * k as f64))
            .collect();
        let total: u64 = s.requests.iter().sum();
        let errors: u64 = s.errors.iter().sum();
        let span = a.window_secs();
        let _ = write!(
            h,
            "<div class=\"slo-card\"><h3><code>{}</code></h3><div class=\"slo-row\">{}{}</div>\
             <div class=\"slo-row\" style=\"margin-top:8px\"><div class=\"slo-box\"><b>Error rate</b> \
             {:.2}%<br>{}</div><div class=\"slo-box\"><b>Request rate</b> {}/s<br>{}</div></div>\
             <div class=\"slo-dist\">Latency distribution: P50 {} · P90 {} · P95 {} · P99 {} · \
             Max {}</div></div>",
            esc(&s.service),
            objective_box(avail, "Availability"),
            objective_box(lat, "Latency"),
            if total == 0 {
                0.0
            } else {
                100.0 * errors as f64 / total as f64
            },
            sparkline(&err_pts, "#d43c3c"),
            human_count(total as f64 / span),
            sparkline(&rate_pts, "#2b6cb0"),
            human_ms(s.latency_ms[0]),
            human_ms(s.latency_ms[1]),
            human_ms(s.latency_ms[2]),
            human_ms(s.latency_ms[3]),
            human_ms(s.latency_ms[4]),
        );
    }
    if r.series.is_empty() {
        h.push_str("<p class=\"muted\">No service was called.</p>");
    }
    h.push_str("</div></section>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_and_configured_strings_are_escaped() {
        use crate::slo::{AlertFiring, AlertRuleResult, Breach, SloReport};
        let evil = "<script>alert(1)</script>";
        let mut a = Analysis {
            window_start_ns: 1_000_000_000,
            window_end_ns: 61_000_000_000,
            marks: vec![(2_000_000_000, evil.to_string())],
            ..Default::default()
        };
        a.slo = SloReport {
            source: evil.into(),
            series: vec![SloSeries {
                service: evil.into(),
                requests: vec![1, 2, 3],
                errors: vec![0, 1, 0],
                latency_ms: [Some(1.0), None, None, Some(2.0), Some(3.0)],
            }],
            breaches: vec![Breach {
                service: evil.into(),
                objective: "availability".into(),
                start_ns: 3_000_000_000,
                end_ns: 9_000_000_000,
                detected_ns: 4_000_000_000,
                peak_burn_rate: 50.0,
                budget_consumed: 0.01,
                severity: "page".into(),
                windows: evil.into(),
            }],
            alerts: vec![AlertFiring {
                name: evil.into(),
                severity: "critical".into(),
                service: evil.into(),
                start_ns: 4_000_000_000,
                end_ns: 8_000_000_000,
                value: evil.into(),
            }],
            alert_rules: vec![AlertRuleResult {
                name: evil.into(),
                severity: "critical".into(),
                condition: evil.into(),
                for_s: 300.0,
                effective_for_s: 5.0,
                status: "fired".into(),
                note: evil.into(),
            }],
            ..Default::default()
        };
        let h = render(&a);
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;"));
        assert!(h.contains("Incident timeline") && h.contains("<svg"));
    }

    #[test]
    fn budget_times() {
        assert_eq!(human_budget(4.0 * 3600.0 + 32.0 * 60.0), "4h 32m");
        assert_eq!(human_budget(725.0), "12m 5s");
        assert_eq!(human_budget(40.2), "40s");
        assert_eq!(human_budget(3.0 * 86_400.0 + 7200.0), "3d 2h");
    }
}
