//! The "Profiles" section of `index.html`: leak verdicts first with their growth charts, RSS
//! against the tracked heap per suspect process, cgroups and OOM kills, then the CPU top
//! functions and flame graph per service, and the off-CPU flame graph.
//!
//! Flame graphs are drawn by inferno and embedded as `data:` documents in sandboxed iframes:
//! the page stays one self-contained file without script (the sandbox runs none of
//! inferno's), inferno's styles and ids stay inside their frame, and the frames' tooltips
//! still name every function. Their size is bounded: 1000 px wide, frames under 0.2% (2 px)
//! dropped (`min_width`), stacks cut at [`MAX_DEPTH`] frames.

use std::fmt::Write as _;

use base64::Engine as _;
use plotters::style::RGBColor;

use super::{charts, escape_html as esc, format_wall, human_count};
use crate::model::Analysis;
use crate::profiles::{FunctionShare, LeakSuspect, Profiles, Verdict};

/// Leak suspects listed.
const TOP_SUSPECTS: usize = 15;
/// Growth charts (suspects judged leak or growing cache), at most.
const GROWTH_CHARTS: usize = 6;
/// Processes with an RSS-versus-heap chart, at most.
const MEMORY_CHARTS: usize = 6;
/// Services with a CPU table and flame graph, at most (by samples).
const CPU_SERVICES: usize = 6;
/// Functions per service table.
const TOP_FUNCTIONS: usize = 15;
/// Frames of a stack drawn, at most (the outermost ones).
pub(crate) const MAX_DEPTH: usize = 64;
const FLAME_WIDTH: usize = 1000;
/// inferno's `min_width` is a percentage of the width: 0.2% is 2 px.
const FLAME_MIN_WIDTH_PCT: f64 = 0.2;

/// The section's CSS.
pub(crate) const CSS: &str = r#"
iframe.flame{width:100%;border:1px solid #dde1e8;border-radius:4px;background:#fff}
.stack{font-family:ui-monospace,monospace;font-size:11.5px}
"#;

/// Bytes for people: `950 B`, `12.3 KiB`, `4.56 MiB`.
pub(crate) fn human_bytes(v: f64) -> String {
    let a = v.abs();
    if a < 1024.0 {
        format!("{v:.0} B")
    } else if a < 1024.0 * 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MiB", v / 1048576.0)
    } else {
        format!("{:.2} GiB", v / 1073741824.0)
    }
}

fn verdict_pill(v: Verdict) -> String {
    let class = match v {
        Verdict::Leak => "critical",
        Verdict::GrowingCache => "warning",
        Verdict::Steady => "ok",
    };
    format!("<span class=\"pill {class}\">{}</span>", v.name())
}

/// The innermost frames of a folded stack, for a table cell (the whole in the tooltip).
fn short_stack(stack: &str) -> String {
    let frames: Vec<&str> = stack.split(';').collect();
    let shown = if frames.len() > 4 {
        format!("… {}", frames[frames.len() - 4..].join(" → "))
    } else {
        frames.join(" → ")
    };
    format!(
        "<span class=\"stack\" title=\"{}\">{}</span>",
        esc(stack),
        esc(&shown)
    )
}

/// Renders the section (nothing when the capture has no profile event).
pub(crate) fn render(a: &Analysis, h: &mut String) {
    let p = &a.profiles;
    if p.is_empty() {
        return;
    }
    h.push_str("<section id=\"profiles\"><h2>Profiles</h2>");
    let _ = write!(
        h,
        "<p class=\"muted\">{} CPU samples{}, {} off-CPU blocks, {} sampled allocations \
         ({} frees of unsampled memory), {} samples with a truncated stack.</p>",
        human_count(p.cpu_samples as f64),
        p.cpu_frequency_hz
            .map(|f| format!(" (≈{f:.0} Hz per CPU)"))
            .unwrap_or_default(),
        human_count(p.offcpu_events as f64),
        human_count(p.heap_samples as f64),
        human_count(p.unmatched_frees as f64),
        human_count(p.truncated_stacks as f64),
    );
    leaks(p, h);
    memory(p, h);
    cpu(p, h);
    offcpu(p, h);
    h.push_str("</section>\n");
}

fn leaks(p: &Profiles, h: &mut String) {
    if p.leaks.is_empty() {
        return;
    }
    h.push_str(
        "<h3>Leak suspects</h3><p class=\"reason\">Outstanding memory per allocating stack \
         (sampled, weight-corrected). leak: steady growth, old allocations never freed; \
         growing_cache: growth that flattens or gets freed; steady: no lasting growth.</p>\
         <table><tr><th>verdict</th><th>service</th><th>pid</th><th>stack</th>\
         <th>outstanding</th><th>allocations</th><th>growth</th><th>first seen</th></tr>",
    );
    for l in p.leak_suspects.iter().take(TOP_SUSPECTS) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.0}</td><td class=\"n\">{}/s</td><td>{}</td></tr>",
            verdict_pill(l.verdict),
            esc(&l.service),
            l.pid,
            short_stack(&l.stack),
            human_bytes(l.outstanding_bytes),
            l.allocations,
            human_bytes(l.growth_bytes_per_s),
            esc(&format_wall(l.first_seen_ns)),
        );
    }
    h.push_str("</table>");
    let growing: Vec<&LeakSuspect> = p
        .leak_suspects
        .iter()
        .filter(|l| l.verdict != Verdict::Steady)
        .take(GROWTH_CHARTS)
        .collect();
    if growing.is_empty() {
        return;
    }
    h.push_str("<div class=\"charts\">");
    for l in growing {
        let runs = runs(&l.series, |_| true, p);
        let _ = write!(
            h,
            "<div><div class=\"reason\">{} pid {}: {}</div>",
            esc(&l.service),
            l.pid,
            short_stack(&l.stack)
        );
        chart(
            h,
            "outstanding bytes",
            &[("MiB", RGBColor(212, 60, 60), runs)],
            p,
        );
        h.push_str("</div>");
    }
    h.push_str("</div>");
}

/// Runs of (seconds, MiB) with data (not NaN) of a bucket series.
fn runs(v: &[f64], keep: impl Fn(usize) -> bool, p: &Profiles) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur = Vec::new();
    for (i, y) in v.iter().enumerate() {
        if y.is_nan() || !keep(i) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let x = (i as f64 + 1.0) * p.series_bucket_ns as f64 / 1e9;
        cur.push((x, y / 1048576.0));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn chart(h: &mut String, title: &str, lines: &[charts::Line<'_>], p: &Profiles) {
    let n = lines
        .iter()
        .flat_map(|l| l.2.iter().flatten())
        .map(|pt| pt.0)
        .fold(0.0f64, f64::max)
        .max(p.series_bucket_ns as f64 / 1e9);
    match charts::draw(title, "MiB", lines, n) {
        Ok(svg) => h.push_str(&svg),
        Err(e) => {
            let _ = write!(h, "<p class=\"muted\">chart unavailable: {}</p>", esc(&e));
        }
    }
}

fn opt_rate(v: Option<f64>) -> String {
    v.map_or("–".into(), |g| format!("{}/s", human_bytes(g)))
}

fn memory(p: &Profiles, h: &mut String) {
    if !p.processes.is_empty() {
        h.push_str(
            "<h3>Memory: RSS and tracked heap</h3><table><tr><th>service</th><th>pid</th>\
             <th>RSS</th><th>RSS growth</th><th>tracked heap</th><th>heap growth</th>\
             <th>reading</th></tr>",
        );
        for m in &p.processes {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td>{}{}</td></tr>",
                esc(&m.service),
                m.pid,
                m.rss_end.map_or("–".into(), human_bytes),
                opt_rate(m.rss_growth_bytes_per_s),
                m.heap_end.map_or("–".into(), human_bytes),
                opt_rate(m.heap_growth_bytes_per_s),
                esc(m.trend.describe()),
                m.oom_killed_ns
                    .map(|t| format!(" · OOM-killed at {}", esc(&format_wall(t))))
                    .unwrap_or_default(),
            );
        }
        h.push_str("</table>");
        // Charts for the processes whose memory moves, or that hold a suspect.
        let mut charted = 0;
        h.push_str("<div class=\"charts\">");
        for m in &p.processes {
            let suspect = p
                .leak_suspects
                .iter()
                .any(|l| l.pid == m.pid && l.node == m.node && l.verdict != Verdict::Steady);
            if charted >= MEMORY_CHARTS
                || (m.trend == crate::profiles::MemoryTrend::Stable && !suspect)
            {
                continue;
            }
            charted += 1;
            let _ = write!(
                h,
                "<div><div class=\"reason\">{} pid {}</div>",
                esc(&m.service),
                m.pid
            );
            let mut lines = vec![(
                "RSS anon",
                RGBColor(40, 110, 200),
                runs(&m.rss_anon, |_| true, p),
            )];
            if !m.heap.is_empty() {
                let first = m.heap.iter().position(|x| *x != 0.0).unwrap_or(0);
                lines.push((
                    "tracked heap",
                    RGBColor(212, 60, 60),
                    runs(&m.heap, |i| i >= first, p),
                ));
            }
            chart(h, "RSS and tracked heap", &lines, p);
            h.push_str("</div>");
        }
        h.push_str("</div>");
    }
    faults(p, h);
    if !p.cgroups.is_empty() {
        h.push_str(
            "<h3>cgroups</h3><table><tr><th>cgroup</th><th>node</th><th>peak usage</th>\
             <th>limit</th><th>growth</th><th>time to limit</th><th>OOM kills</th></tr>",
        );
        for c in &p.cgroups {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td></tr>",
                esc(&c.cgroup),
                esc(&c.node),
                human_bytes(c.peak_usage as f64),
                c.limit
                    .map_or("unlimited".into(), |l| human_bytes(l as f64)),
                opt_rate(c.growth_bytes_per_s),
                c.seconds_to_limit
                    .map_or("–".into(), |s| format!("{s:.0} s")),
                c.oom_kills
            );
        }
        h.push_str("</table>");
    }
    for o in &p.ooms {
        let _ = write!(
            h,
            "<p><span class=\"pill critical\">OOM kill</span> {} pid {} at {}: RSS growth before \
             it {}{}</p>",
            esc(&o.service),
            o.pid,
            esc(&format_wall(o.ts_ns)),
            opt_rate(o.rss_growth_bytes_per_s),
            o.top_stack
                .as_ref()
                .map(|s| format!(
                    "; fastest-growing stack {} ({})",
                    short_stack(s),
                    opt_rate(o.top_stack_growth_bytes_per_s)
                ))
                .unwrap_or_default()
        );
    }
}

/// Page size assumed for faults (x86_64).
const PAGE: f64 = 4096.0;

/// Resident growth by code: the stacks that touched new pages (sampled page faults).
fn faults(p: &Profiles, h: &mut String) {
    if p.faults.is_empty() {
        return;
    }
    let mut rows: Vec<&crate::profiles::StackWeight> = p.faults.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.value));
    h.push_str(
        "<h3>Resident growth by code (page faults on new pages)</h3><table><tr><th>service</th>\
         <th>pid</th><th>stack</th><th>pages</th><th>≈ memory</th></tr>",
    );
    for f in rows.iter().take(TOP_SUSPECTS) {
        let stack = crate::profiles::folded_stack(&f.locations, &p.catalog);
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            esc(&f.service),
            f.pid,
            short_stack(&stack),
            f.value,
            human_bytes(f.value as f64 * PAGE)
        );
    }
    h.push_str("</table>");
}

fn function_table(
    h: &mut String,
    rows: &[&FunctionShare],
    value: &str,
    fmt: impl Fn(u64) -> String,
) {
    let _ = write!(
        h,
        "<table><tr><th>function</th><th>total</th><th>self</th><th>{}</th></tr>",
        esc(value)
    );
    for f in rows {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td class=\"n\">{:.1}%</td><td class=\"n\">{:.1}%</td>\
             <td class=\"n\">{}</td></tr>",
            esc(&f.function),
            f.total_pct,
            f.self_pct,
            fmt(f.total)
        );
    }
    h.push_str("</table>");
}

fn cpu(p: &Profiles, h: &mut String) {
    if p.cpu.is_empty() {
        return;
    }
    // Services by samples.
    let mut per: std::collections::BTreeMap<&str, u64> = Default::default();
    for s in &p.cpu {
        *per.entry(s.service.as_str()).or_default() += s.value;
    }
    let mut services: Vec<(&str, u64)> = per.into_iter().collect();
    services.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: u64 = services.iter().map(|s| s.1).sum();
    h.push_str("<h3>CPU</h3>");
    let folded = super::profiles_csv::cpu_folded(p);
    for (service, samples) in services.iter().take(CPU_SERVICES) {
        let _ = write!(
            h,
            "<h3>CPU profile: {} <span class=\"muted\">({} samples, {:.1}% of all)</span></h3>",
            esc(service),
            human_count(*samples as f64),
            *samples as f64 * 100.0 / total.max(1) as f64
        );
        let rows: Vec<&FunctionShare> = p
            .cpu_functions
            .iter()
            .filter(|f| f.service == *service)
            .take(TOP_FUNCTIONS)
            .collect();
        function_table(h, &rows, "samples", |v| v.to_string());
        let lines = folded.iter().filter(|(l, _)| {
            l.split(';').next() == Some(crate::profiles::folded_name(service).as_str())
        });
        flame(h, lines, "samples");
    }
}

fn offcpu(p: &Profiles, h: &mut String) {
    if p.offcpu.is_empty() {
        return;
    }
    h.push_str("<h3>Off-CPU: where threads blocked</h3>");
    let rows: Vec<&FunctionShare> = p.offcpu_functions.iter().take(TOP_FUNCTIONS).collect();
    function_table(h, &rows, "blocked", |ns| {
        format!("{:.3} s", ns as f64 / 1e9)
    });
    let folded = super::profiles_csv::offcpu_folded(p);
    flame(h, folded.iter(), "µs");
}

fn flame<'a>(h: &mut String, lines: impl Iterator<Item = &'a (String, u64)>, unit: &str) {
    match flame_graph(lines, unit) {
        Ok(Some((svg, height))) => {
            let data = base64::engine::general_purpose::STANDARD.encode(svg.as_bytes());
            let _ = write!(
                h,
                "<iframe class=\"flame\" sandbox=\"\" height=\"{}\" \
                 src=\"data:image/svg+xml;base64,{data}\" title=\"flame graph\"></iframe>",
                height + 4
            );
        }
        Ok(None) => {}
        Err(e) => {
            let _ = write!(
                h,
                "<p class=\"muted\">flame graph unavailable: {}</p>",
                esc(&e)
            );
        }
    }
}

/// A flame graph of folded lines (`a;b;c value`) with inferno: the SVG and its height, or
/// none when there is nothing to draw.
pub(crate) fn flame_graph<'a>(
    lines: impl Iterator<Item = &'a (String, u64)>,
    unit: &str,
) -> Result<Option<(String, usize)>, String> {
    let text: Vec<String> = lines
        .filter(|(_, v)| *v > 0)
        .map(|(l, v)| {
            let frames: Vec<&str> = l.split(';').collect();
            let kept = if frames.len() > MAX_DEPTH {
                frames[..MAX_DEPTH].join(";")
            } else {
                l.clone()
            };
            format!("{kept} {v}")
        })
        .collect();
    if text.is_empty() {
        return Ok(None);
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = String::new();
    opts.count_name = unit.to_string();
    opts.image_width = Some(FLAME_WIDTH);
    opts.min_width = FLAME_MIN_WIDTH_PCT;
    opts.hash = true;
    opts.deterministic = true;
    opts.font_type = "sans-serif".into();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, text.iter().map(String::as_str), &mut out)
        .map_err(|e| e.to_string())?;
    let svg = String::from_utf8(out).map_err(|e| e.to_string())?;
    let height = svg
        .split_once("height=\"")
        .and_then(|(_, r)| r.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    Ok(Some((svg, height)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_escaped_in_the_flame_graph_and_its_size_is_bounded() {
        let evil = "<script>alert(1)</script>&\"'";
        let mut lines = vec![(format!("svc;main;{evil}"), 50u64)];
        // Many thin frames: dropped under the minimum width.
        for i in 0..5000 {
            lines.push((format!("svc;main;thin_{i}"), 1));
        }
        // A very deep stack: cut.
        let deep: Vec<String> = (0..500).map(|i| format!("d{i}")).collect();
        lines.push((format!("svc;{}", deep.join(";")), 5000));
        let (svg, height) = flame_graph(lines.iter(), "samples")
            .expect("a flame graph")
            .expect("a flame graph");
        assert!(!svg.contains("<script>alert"), "unescaped name");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            !svg.contains("thin_4999"),
            "frames under min width are dropped"
        );
        assert!(!svg.contains(">d100 "), "stacks cut at {MAX_DEPTH}");
        assert!(svg.len() < 400_000, "{} bytes", svg.len());
        assert!(height < 20 * (MAX_DEPTH + 10), "{height}");
        // Deterministic.
        let again = flame_graph(lines.iter(), "samples")
            .expect("a flame graph")
            .expect("a flame graph")
            .0;
        assert_eq!(svg, again);
    }
}
