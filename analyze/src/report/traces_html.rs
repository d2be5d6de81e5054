//! The traces section of `index.html`: how far the linking can be trusted (coverage), where
//! each endpoint's time went, and the slowest and the failed traces as waterfalls, with the
//! requests of the traces shown.
//!
//! Only the chosen traces are rendered (their rows found in one pass over the request table),
//! so a big capture opens as fast as a small one. Anchors are stable: `trace-{trace id}` on a
//! trace, `span-{span id}` on a waterfall row, `req-{request index}` on a request (the row of
//! requests.csv and `request_index` of spans.csv). No script: waterfalls are `<details>`,
//! which browsers open when a link points into them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{escape_html as esc, format_wall, human_ms};
use crate::model::{Analysis, Link, SpanKind, SpanView, TraceCoverage, TraceSummary};

/// Slowest traces shown.
pub(crate) const SLOWEST: usize = 10;
/// Failed traces shown.
pub(crate) const FAILED: usize = 10;
/// Rows of one waterfall, at most (the rest are in spans.csv).
pub(crate) const MAX_SPANS: usize = 200;
/// Endpoints in "where the time went", at most (by total time).
const MAX_BREAKDOWN: usize = 15;
/// Waterfalls open when the page loads (the first of each list).
const OPEN: usize = 1;

/// Styles of the section (appended to the page's).
pub(crate) const CSS: &str = r#"
.wf{font-size:12px;margin:4px 0 10px;border:1px solid #eceef2;border-radius:6px;overflow:hidden}
.wf-row{display:grid;grid-template-columns:minmax(150px,230px) minmax(150px,320px) 1fr 86px 60px;align-items:center;border-bottom:1px solid #f0f2f5;min-height:20px}
.wf-row:last-child{border-bottom:0}
.wf-row:hover{background:#f3f6fb}
.wf-row:target,tr:target{background:#fff6d6}
.wf-row>div{padding:1px 6px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.wf-head{background:#f0f2f5;font-weight:600}
.wf-svc{font-weight:600}
.wf-name{color:#374151}
.wf-dur,.wf-req{text-align:right;font-variant-numeric:tabular-nums}
.wf-req a,.tr-link a{color:#6b7280;text-decoration:none}
.wf-req a:hover,.tr-link a:hover{text-decoration:underline}
.wf-status{margin-left:6px;font-size:11px;font-weight:600}
.wf-kind{display:inline-block;width:13px;font-size:10px;font-weight:700;color:#9aa3b2}
.wf-err .wf-svc,.wf-err .wf-dur,.wf-err .wf-name{color:#c02929}
.wf-track{position:relative;height:18px;background-image:linear-gradient(to right,#e3e6ec 1px,transparent 1px);background-size:25% 100%}
.wf-axis{height:16px;font-weight:400;color:#6b7280;font-size:10.5px}
.wf-axis span{position:absolute;top:1px;transform:translateX(-50%)}
.wf-axis span:first-child{transform:none}.wf-axis span:last-child{transform:translateX(-100%)}
.wf-bar{position:absolute;top:4px;height:10px;min-width:2px;border-radius:2px;background:var(--c)}
.wf-bar.client{top:6px;height:6px;opacity:.55}
.wf-bar.err{background:#d43c3c}
.wf-bar.open{border-radius:2px 0 0 2px;background:repeating-linear-gradient(135deg,var(--c) 0 3px,transparent 3px 6px)}
.wf-bar.open.err{background:repeating-linear-gradient(135deg,#d43c3c 0 3px,transparent 3px 6px)}
#traces p.muted{font-size:13px}
details.trace{margin:6px 0}
details.trace>summary{cursor:pointer;font-size:13px;padding:3px 0}
details.trace>summary code{font-weight:600}
.legend{font-size:11.5px;color:#6b7280;margin:2px 0 8px}
.legend i{display:inline-block;width:22px;height:8px;margin:0 4px 0 10px;vertical-align:middle;border-radius:2px}
.tb{display:grid;grid-template-columns:minmax(180px,330px) 1fr minmax(200px,420px);gap:6px 12px;font-size:12px;align-items:center}
.tb-bar{display:flex;height:14px;border-radius:3px;overflow:hidden;background:#eceef2}
.tb-bar span{display:block;height:100%}
.tb-nums{color:#4b5563}
.tb-nums b{display:inline-block;width:9px;height:9px;border-radius:2px;margin:0 3px 0 6px}
.tb-name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
tr.wf-err td{color:#c02929}
tr.tr-group th{background:#f7f8fa;font-weight:400}
"#;

/// Colours of services in bars (red is kept for errors).
const PALETTE: [&str; 10] = [
    "#3b82c4", "#2e9d7a", "#8a5cc2", "#d98a00", "#7a6a58", "#5b8c2a", "#c2569b", "#4ab0d6",
    "#2a7f8f", "#b0902c",
];

/// One colour per service, the same everywhere in the section: by the service's place in
/// the analysis' sorted list, so that up to ten services never share one.
pub(crate) struct Colors<'a>(BTreeMap<&'a str, &'static str>);

impl<'a> Colors<'a> {
    pub(crate) fn new(a: &'a Analysis) -> Self {
        Self(
            a.services
                .iter()
                .zip(PALETTE.iter().cycle())
                .map(|(s, c)| (s.service.as_str(), *c))
                .collect(),
        )
    }

    /// The colour of `service` (a service the analysis does not list gets a stable one by a
    /// hash of its name).
    pub(crate) fn of(&self, service: &str) -> &'static str {
        self.0.get(service).copied().unwrap_or_else(|| {
            // FNV-1a: stable across runs and platforms.
            let mut h: u32 = 0x811c_9dc5;
            for b in service.bytes() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            PALETTE[(h % PALETTE.len() as u32) as usize]
        })
    }
}

/// Time for people, from ns.
fn ns(v: u64) -> String {
    human_ms(Some(v as f64 / 1e6))
}

fn share(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The traces shown: indexes into `traces`, the slowest (slowest first) and the failed ones
/// (in time order).
pub(crate) fn choose(traces: &[TraceSummary]) -> (Vec<usize>, Vec<usize>) {
    // Slowest: duration, then time (the root row) for ties.
    let slower = |x: &usize, y: &usize| {
        let (a, b) = (&traces[*x], &traces[*y]);
        b.duration_ns.cmp(&a.duration_ns).then(a.root.cmp(&b.root))
    };
    let mut slowest: Vec<usize> = (0..traces.len()).collect();
    if slowest.len() > SLOWEST {
        slowest.select_nth_unstable_by(SLOWEST - 1, slower);
        slowest.truncate(SLOWEST);
    }
    slowest.sort_unstable_by(slower);

    // Failed: the first of each kind (root service and name, errors, spans), then others
    // spread evenly over the failed ones, so that the list spans the incident; shown in time
    // order, the first saying when it started.
    let all: Vec<usize> = (0..traces.len())
        .filter(|&i| traces[i].errors > 0)
        .collect();
    let mut failed: Vec<usize> = Vec::new();
    let mut kinds: BTreeMap<(u32, u32, u32, u32), ()> = BTreeMap::new();
    for &i in &all {
        if failed.len() >= FAILED {
            break;
        }
        let t = &traces[i];
        if kinds
            .insert((t.root_service_id, t.root_name_id, t.errors, t.spans), ())
            .is_none()
        {
            failed.push(i);
        }
    }
    let spread = (0..FAILED).map(|j| all.get(j * all.len() / FAILED));
    for i in spread.flatten().chain(all.iter()) {
        if failed.len() >= FAILED {
            break;
        }
        if !failed.contains(i) {
            failed.push(*i);
        }
    }
    failed.sort_unstable_by_key(|&i| traces[i].root);
    (slowest, failed)
}

/// The spans of one trace (its request rows) in waterfall order: depth first, children by
/// start time (a CLIENT span before the SERVER span of the same request), with their depth.
/// Spans whose parent is not among them start a new tree at depth 0.
pub(crate) fn layout<'a>(a: &'a Analysis, rows: &[usize]) -> Vec<(SpanView<'a>, usize)> {
    let spans: Vec<SpanView<'a>> = rows.iter().flat_map(|&r| a.requests.spans_of(r)).collect();
    let index: BTreeMap<u64, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut tops = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.and_then(|p| index.get(&p)) {
            Some(&p) if p != i => children[p].push(i),
            _ => tops.push(i),
        }
    }
    let key = |&i: &usize| (spans[i].start_ns, spans[i].kind, spans[i].request);
    tops.sort_by_key(key);
    for c in &mut children {
        c.sort_by_key(key);
    }
    let mut order = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = tops.iter().rev().map(|&i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        order.push((i, depth));
        stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
    }
    // A cycle (never made by the linker) would leave spans unreached: show them anyway.
    for (i, s) in seen.iter().enumerate() {
        if !s {
            order.push((i, 0));
        }
    }
    order.into_iter().map(|(i, d)| (spans[i], d)).collect()
}

/// Appends the traces section to the page.
pub(crate) fn render(a: &Analysis, h: &mut String) {
    h.push_str("<section id=\"traces\"><h2>Traces</h2>");
    if a.traces_skipped {
        h.push_str("<p class=\"muted\">Trace linking was skipped (<code>--no-traces</code>).</p></section>\n");
        return;
    }
    let _ = write!(
        h,
        "<p class=\"muted\">Distributed traces rebuilt from the kernel's view, with no \
         instrumentation: each request's CLIENT span (its caller's end) and SERVER span (its \
         callee's end), linked by connection, thread, trace header or proxy rule. {} traces in \
         all (traces.csv, spans.csv).</p>",
        a.traces.len()
    );
    coverage(&a.trace_coverage, h);
    let colors = Colors::new(a);
    breakdown(a, &colors, h);

    let (slowest, failed) = choose(&a.traces);
    let mut roots: Vec<usize> = slowest
        .iter()
        .chain(&failed)
        .map(|&i| a.traces[i].root as usize)
        .collect();
    roots.sort_unstable();
    roots.dedup();
    let rows = a.requests.rows_of_traces(&roots);
    h.push_str(
        "<div class=\"legend\">bars: <i style=\"background:#3b82c4\"></i>SERVER span\
         <i style=\"background:#3b82c4;opacity:.55;height:5px\"></i>CLIENT span\
         <i style=\"background:#d43c3c\"></i>failed\
         <i style=\"background:repeating-linear-gradient(135deg,#3b82c4 0 3px,transparent 3px 6px)\"></i>\
         no response seen · hover a row for its target, status and link rule; <b>#</b> is the \
         request (requests.csv row)</div>",
    );

    // Failed traces first when there are any: during an incident they say what broke.
    let failed_all = a.traces.iter().filter(|t| t.errors > 0).count();
    let lists = [
        (
            "failed-traces",
            "Failed traces",
            format!(
                "{} of {} traces with a failed span: the first of each kind, then others spread \
                 over the capture.",
                failed.len(),
                failed_all
            ),
            "No failed traces.",
            &failed,
        ),
        (
            "slowest-traces",
            "Slowest traces",
            format!("The {} slowest of {}.", slowest.len(), a.traces.len()),
            "No traces.",
            &slowest,
        ),
    ];
    let order: [usize; 2] = if failed.is_empty() { [1, 0] } else { [0, 1] };
    let mut shown: Vec<(&TraceSummary, Vec<(usize, u64)>)> = Vec::new();
    for (id, title, what, none, list) in order.iter().filter_map(|&k| lists.get(k)) {
        let _ = write!(
            h,
            "<h3 id=\"{id}\">{title}</h3><p class=\"muted\">{what}</p>"
        );
        if list.is_empty() {
            let _ = write!(h, "<p class=\"muted\">{none}</p>");
        }
        let mut opened = 0;
        for &i in list.iter() {
            let t = &a.traces[i];
            if shown.iter().any(|(s, _)| s.root == t.root) {
                let _ = write!(
                    h,
                    "<p class=\"tr-link\">{} <a href=\"#trace-{:032x}\">shown above</a></p>",
                    summary_text(a, t),
                    t.trace_id(&a.requests)
                );
                continue;
            }
            let reqs = trace(
                a,
                &colors,
                t,
                rows.get(&(t.root as usize)).map_or(&[][..], Vec::as_slice),
                opened < OPEN,
                h,
            );
            opened += 1;
            shown.push((t, reqs));
        }
    }
    requests(a, &shown, h);
    h.push_str("</section>\n");
}

/// The one-line description of a trace.
fn summary_text(a: &Analysis, t: &TraceSummary) -> String {
    format!(
        "<code>{}</code> {} · <b>{}</b> · {} spans · {} services{} · {}",
        esc(t.root_service(&a.requests)),
        esc(t.root_name(&a.requests)),
        ns(t.duration_ns),
        t.spans,
        t.services,
        if t.errors > 0 {
            format!(
                " · <span class=\"pill critical\">{} failed</span>",
                t.errors
            )
        } else {
            String::new()
        },
        esc(&format_wall(t.start_ns))
    )
}

/// How far the linking can be trusted.
fn coverage(c: &TraceCoverage, h: &mut String) {
    let pill = |x: f64| {
        let class = if x >= 0.95 {
            "ok"
        } else if x >= 0.8 {
            "warning"
        } else {
            "critical"
        };
        format!("<span class=\"pill {class}\">{}</span>", share(x))
    };
    let rules: Vec<String> = c
        .by_link
        .iter()
        .map(|(k, v)| {
            let why = match k.as_str() {
                "connection" => "a SERVER span under the CLIENT span of the same exchange",
                "thread" => "a call made by the thread serving one inbound request",
                "header" => "a call carrying the trace header of an inbound request",
                "proxy" => "an event-loop proxy's call matched to its one inbound request",
                _ => "",
            };
            format!("<span title=\"{}\">{} {v}</span>", esc(why), esc(k))
        })
        .collect();
    let _ = write!(
        h,
        "<h3 id=\"trace-coverage\">Coverage</h3><div class=\"kv\">\
         <div>server spans linked</div><div>{} {} of {} whose client was captured \
         <span class=\"muted\">({} server spans in all)</span></div>\
         <div>client spans linked</div><div>{} {} of {} made by processes that served requests \
         <span class=\"muted\">({} client spans in all; the others are roots)</span></div>\
         <div>links by rule</div><div>{}</div>\
         <div>ambiguous</div><div>{} <span class=\"muted\">calls of event loops left unlinked: \
         several inbound requests could have made them</span></div>\
         <div>traces</div><div>{} traces, {} spans</div></div>",
        pill(c.server_share()),
        c.server_spans_linked,
        c.server_spans_with_client,
        c.server_spans,
        pill(c.client_share()),
        c.client_spans_linked,
        c.client_spans_in_servers,
        c.client_spans,
        if rules.is_empty() {
            "none".to_string()
        } else {
            rules.join(" · ")
        },
        c.ambiguous,
        c.traces,
        c.spans
    );
}

/// Per endpoint, self time versus each downstream service.
fn breakdown(a: &Analysis, colors: &Colors<'_>, h: &mut String) {
    let mut tb: Vec<_> = a
        .time_breakdown
        .iter()
        .filter(|b| b.total_ms > 0.0)
        .collect();
    tb.sort_by(|x, y| {
        y.total_ms
            .total_cmp(&x.total_ms)
            .then_with(|| (&x.service, &x.name).cmp(&(&y.service, &y.name)))
    });
    let _ =
        write!(
        h,
        "<h3 id=\"time-breakdown\">Where the time went</h3><p class=\"muted\">Per endpoint, its \
         server spans' time summed: in the service itself (grey) versus waiting for each \
         downstream service.{}</p>",
        if tb.len() > MAX_BREAKDOWN {
            format!(" The {MAX_BREAKDOWN} endpoints with the most time of {}.", tb.len())
        } else {
            String::new()
        }
    );
    if tb.is_empty() {
        h.push_str("<p class=\"muted\">No linked server spans.</p>");
        return;
    }
    h.push_str("<div class=\"tb\">");
    for b in tb.iter().take(MAX_BREAKDOWN) {
        let down: f64 = b.downstream.iter().map(|d| d.total_ms).sum();
        // Parallel calls can wait longer than the span lasted: scale to the larger.
        let scale = (b.self_ms.max(0.0) + down)
            .max(b.total_ms)
            .max(f64::MIN_POSITIVE);
        let avg = if b.requests > 0 {
            Some(b.total_ms / b.requests as f64)
        } else {
            None
        };
        let _ = write!(
            h,
            "<div class=\"tb-name\" title=\"{} {}\"><code>{}</code> {}<br><span class=\"muted\">{} \
             requests · {} in all · {} each</span></div><div class=\"tb-bar\">",
            esc(&b.service),
            esc(&b.name),
            esc(&b.service),
            esc(&b.name),
            b.requests,
            human_ms(Some(b.total_ms)),
            human_ms(avg)
        );
        let mut nums = Vec::new();
        let self_share = b.self_ms.max(0.0) / scale;
        let _ = write!(
            h,
            "<span style=\"width:{:.3}%;background:#b8bfcc\" title=\"self: {} ({})\"></span>",
            self_share * 100.0,
            human_ms(Some(b.self_ms)),
            share(self_share)
        );
        nums.push(format!(
            "<b style=\"background:#b8bfcc\"></b>self {} ({})",
            share(self_share),
            human_ms(Some(b.self_ms))
        ));
        for d in &b.downstream {
            let x = d.total_ms / scale;
            let _ = write!(
                h,
                "<span style=\"width:{:.3}%;background:{}\" title=\"{} ({}): {} ({}), {} calls\"></span>",
                x * 100.0,
                colors.of(&d.service),
                esc(&d.service),
                esc(&d.protocol),
                human_ms(Some(d.total_ms)),
                share(x),
                d.calls
            );
            nums.push(format!(
                "<b style=\"background:{}\"></b>{} {} ({}, {} calls)",
                colors.of(&d.service),
                esc(&d.service),
                share(x),
                human_ms(Some(d.total_ms)),
                d.calls
            ));
        }
        let _ = write!(h, "</div><div class=\"tb-nums\">{}</div>", nums.join(" "));
    }
    h.push_str("</div>");
}

/// One trace: a `<details>` whose summary describes it, holding its waterfall.
fn trace(
    a: &Analysis,
    colors: &Colors<'_>,
    t: &TraceSummary,
    rows: &[usize],
    open: bool,
    h: &mut String,
) -> Vec<(usize, u64)> {
    let spans = layout(a, rows);
    let _ = write!(
        h,
        "<details class=\"trace\" id=\"trace-{:032x}\"{}><summary>{}{} <span class=\"muted\">trace \
         {:032x}</span></summary>",
        t.trace_id(&a.requests),
        if open { " open" } else { "" },
        summary_text(a, t),
        origin(&spans),
        t.trace_id(&a.requests)
    );
    let shown = waterfall(t, &spans, colors, h);
    h.push_str("</details>\n");
    shown
}

/// Where a failed trace went wrong: its deepest failed span (the earliest of those), whose
/// failure the spans above it only passed on.
fn origin(spans: &[(SpanView<'_>, usize)]) -> String {
    let deepest = spans
        .iter()
        .filter(|(s, _)| s.error)
        .min_by_key(|(s, d)| (std::cmp::Reverse(*d), s.start_ns, s.request, s.kind));
    match deepest {
        Some((s, _)) => format!(
            " · failed at <a href=\"#span-{:016x}\"><code>{}</code> → <code>{}</code>: {}</a>",
            s.span_id,
            esc(s.service),
            esc(s.peer),
            esc(s.status)
        ),
        None => String::new(),
    }
}

/// The waterfall of trace `t` (its spans in [`layout`] order); returns the requests it shows
/// (in the order of their first row) with the span id of their first row.
pub(crate) fn waterfall(
    t: &TraceSummary,
    spans: &[(SpanView<'_>, usize)],
    colors: &Colors<'_>,
    h: &mut String,
) -> Vec<(usize, u64)> {
    let t0 = spans
        .iter()
        .map(|(s, _)| s.start_ns)
        .min()
        .unwrap_or(t.start_ns)
        .min(t.start_ns);
    let end = spans
        .iter()
        .map(|(s, _)| s.start_ns.saturating_add(s.duration_ns.unwrap_or(0)))
        .max()
        .unwrap_or(0)
        .max(t.start_ns.saturating_add(t.duration_ns));
    let total = end.saturating_sub(t0).max(1);
    let pos = |v: u64| v.saturating_sub(t0) as f64 / total as f64 * 100.0;

    h.push_str("<div class=\"wf\"><div class=\"wf-row wf-head\"><div>service</div><div>span</div><div class=\"wf-track wf-axis\">");
    for k in 0..=4u64 {
        let _ = write!(
            h,
            "<span style=\"left:{}%\">{}</span>",
            k * 25,
            ns(total * k / 4)
        );
    }
    h.push_str("</div><div class=\"wf-dur\">duration</div><div class=\"wf-req\">#</div></div>");
    let mut shown: Vec<(usize, u64)> = Vec::new();
    let mut seen: BTreeMap<usize, ()> = BTreeMap::new();
    for (s, depth) in spans.iter().take(MAX_SPANS) {
        if seen.insert(s.request, ()).is_none() {
            shown.push((s.request, s.span_id));
        }
        let name = s.name();
        let left = pos(s.start_ns).min(99.5);
        let (width, dur) = match s.duration_ns {
            Some(d) => ((d as f64 / total as f64 * 100.0).min(100.0 - left), ns(d)),
            None => (100.0 - left, "no response".to_string()),
        };
        let kind = match s.kind {
            SpanKind::Client => "client",
            SpanKind::Server => "server",
        };
        let link = match s.link {
            Link::Root => "root of the trace".to_string(),
            l => format!(
                "linked by {} ({:.0}% confidence)",
                l.name(),
                s.confidence * 100.0
            ),
        };
        let title = format!(
            "{} span of {} → {} ({})\n{}\ntarget: {}\nstatus: {}{}\nstart: +{} · duration: {}\n{}\nnode {} · pid {} · tid {}{}\nrequest #{} · span {:016x}",
            s.kind.name().to_uppercase(),
            s.service,
            s.peer,
            s.protocol,
            name,
            s.target,
            s.status,
            if s.error { " (failed)" } else { "" },
            ns(s.start_ns.saturating_sub(t0)),
            dur,
            link,
            s.node,
            s.pid,
            s.tid,
            if s.client_address.is_empty() && s.server_address.is_empty() {
                String::new()
            } else {
                format!("\n{} → {}", s.client_address, s.server_address)
            },
            s.request,
            s.span_id
        );
        let _ = write!(
            h,
            "<div class=\"wf-row l-{}{}\" id=\"span-{:016x}\" title=\"{}\">\
             <div class=\"wf-svc\" style=\"padding-left:{}px\"><span class=\"wf-kind\">{}</span>{}</div>\
             <div class=\"wf-name\">{}{}</div>\
             <div class=\"wf-track\"><div class=\"wf-bar {}{}{}\" style=\"--c:{};left:{:.3}%;width:{:.3}%\"></div></div>\
             <div class=\"wf-dur\">{}</div><div class=\"wf-req\"><a href=\"#req-{}\">#{}</a></div></div>",
            if s.link == Link::Root { "root" } else { s.link.name() },
            if s.error { " wf-err" } else { "" },
            s.span_id,
            esc(&title),
            6 + (*depth).min(30) * 14,
            if s.kind == SpanKind::Client { "C" } else { "S" },
            esc(s.service),
            esc(&name),
            if s.error {
                format!("<span class=\"wf-status\">{}</span>", esc(s.status))
            } else {
                String::new()
            },
            kind,
            if s.error { " err" } else { "" },
            if s.duration_ns.is_none() { " open" } else { "" },
            colors.of(s.service),
            left,
            width,
            esc(&dur),
            s.request,
            s.request
        );
    }
    if spans.len() > MAX_SPANS {
        let _ = write!(
            h,
            "<div class=\"wf-row\"><div class=\"muted\">… {} more spans in spans.csv</div></div>",
            spans.len() - MAX_SPANS
        );
    }
    h.push_str("</div>");
    shown
}

/// The requests of the traces shown (those of their waterfalls' rows), each linked to its
/// row in the waterfall and back.
fn requests(a: &Analysis, shown: &[(&TraceSummary, Vec<(usize, u64)>)], h: &mut String) {
    let n: usize = shown.iter().map(|(_, v)| v.len()).sum();
    let _ = write!(
        h,
        "<details id=\"trace-requests\"><summary><h3 style=\"display:inline\">Requests of the \
         traces shown</h3> <span class=\"muted\">({n}; # is the row of requests.csv)</span></summary>\
         <table><thead><tr><th>#</th><th>time</th><th>client</th><th>server</th><th>protocol</th>\
         <th>method</th><th>target</th><th>status</th><th>latency</th><th>server latency</th>\
         <th>node</th><th>waterfall</th></tr></thead><tbody>"
    );
    for (t, list) in shown {
        let _ = write!(
            h,
            "<tr class=\"tr-group\"><th colspan=\"12\"><a href=\"#trace-{:032x}\">trace {:032x}</a> \
             <code>{}</code> {}</th></tr>",
            t.trace_id(&a.requests),
            t.trace_id(&a.requests),
            esc(t.root_service(&a.requests)),
            esc(t.root_name(&a.requests))
        );
        for &(i, span) in list {
            let Some(r) = a.requests.get(i) else { continue };
            let _ = write!(
                h,
                "<tr id=\"req-{i}\"{}><td class=\"n\">{i}</td><td class=\"n\">{}</td><td><code>{}</code></td>\
                 <td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"tr-link\">\
                 <a href=\"#span-{span:016x}\">span</a> · <a href=\"#trace-{:032x}\">trace</a></td></tr>",
                if r.error { " class=\"wf-err\"" } else { "" },
                esc(format_wall(r.ts_ns).get(11..).unwrap_or("")),
                esc(r.client),
                esc(r.server),
                esc(r.protocol),
                esc(r.method),
                esc(r.target),
                esc(r.status),
                r.latency_ns.map_or_else(|| "–".to_string(), ns),
                r.server_latency_ns.map_or_else(|| "–".to_string(), ns),
                esc(r.node),
                t.trace_id(&a.requests)
            );
        }
    }
    h.push_str("</tbody></table></details>");
}

#[cfg(test)]
#[path = "traces_html_tests.rs"]
mod tests;
