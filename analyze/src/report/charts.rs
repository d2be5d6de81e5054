//! Per-service time charts (rate, errors, latency) drawn with plotters' SVG backend.
//!
//! Only numbers go into the charts; service names stay in the HTML, where they are escaped.

use plotters::prelude::*;

use crate::model::ServiceSeries;

const W: u32 = 420;
const H: u32 = 200;

fn series_xy(
    s: &ServiceSeries,
    start_ns: u64,
    f: impl Fn(usize) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for (i, p) in s.points.iter().enumerate() {
        match f(i) {
            Some(y) => cur.push(((p.start_ns.saturating_sub(start_ns)) as f64 / 1e9, y)),
            None if !cur.is_empty() => runs.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// A named, coloured line of (x, y) points.
pub(super) type Line<'a> = (&'a str, RGBColor, Vec<Vec<(f64, f64)>>);

pub(super) fn draw(
    title: &str,
    y_desc: &str,
    lines: &[Line<'_>],
    x_max: f64,
) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let y_max = lines
            .iter()
            .flat_map(|l| l.2.iter().flatten().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1.0)
            // room above the data for the legend box (upper right), so it hides no point
            * if lines.len() > 1 { 1.45 } else { 1.1 };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(28)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max.max(1e-9), 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc(y_desc)
            .x_labels(6)
            .y_labels(5)
            .label_style(("sans-serif", 10))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, colour, runs) in lines {
            let c = *colour;
            // One line per run of buckets with data: no line drawn across gaps.
            let mut labelled = false;
            for run in runs {
                let series = chart
                    .draw_series(LineSeries::new(run.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
                if !labelled {
                    series
                        .label(*name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c));
                    labelled = true;
                }
            }
        }
        if lines.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 10))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Three SVG charts for one service: requests/s, errors/s, latency p50/p99 (ms).
pub(crate) fn service_charts(
    s: &ServiceSeries,
    start_ns: u64,
    end_ns: u64,
    bucket_ns: u64,
) -> String {
    let secs = bucket_ns as f64 / 1e9;
    let x_max = (end_ns.saturating_sub(start_ns)) as f64 / 1e9;
    let rate = series_xy(s, start_ns, |i| Some(s.points[i].requests as f64 / secs));
    let errors = series_xy(s, start_ns, |i| Some(s.points[i].errors as f64 / secs));
    let p50 = series_xy(s, start_ns, |i| s.points[i].p50_ms);
    let p99 = series_xy(s, start_ns, |i| s.points[i].p99_ms);
    let blue = RGBColor(40, 110, 200);
    let red = RGBColor(212, 60, 60);
    let orange = RGBColor(217, 145, 0);
    let mut out = String::new();
    for r in [
        draw(
            "requests per second",
            "req/s",
            &[("req/s", blue, rate)],
            x_max,
        ),
        draw(
            "errors per second",
            "err/s",
            &[("err/s", red, errors)],
            x_max,
        ),
        draw(
            "latency",
            "ms",
            &[("p50", blue, p50), ("p99", orange, p99)],
            x_max,
        ),
    ] {
        match r {
            Ok(svg) => out.push_str(&svg),
            Err(e) => {
                out.push_str("<p class=\"muted\">chart unavailable: ");
                out.push_str(&super::escape_html(&e));
                out.push_str("</p>");
            }
        }
    }
    out
}
