//! `retrace diff`: compares the analyses of two captures.
//!
//! Services and edges that appeared or disappeared, and per edge the change of request rate,
//! error rate, latency percentiles, retransmits and failed connections. Thresholds given with
//! `--fail-on` decide the exit code:
//!
//! ```text
//! --fail-on "p99 > +20%, errors > +0.5pp, new-edge, rate < -30%, retransmits > +10"
//! ```
//!
//! A rule is a keyword (`new-edge`, `gone-edge`, `new-service`, `gone-service`) or
//! `METRIC > +CHANGE` / `METRIC < -CHANGE`, where METRIC is one of `rate` (requests/s),
//! `errors` (error rate), `p50`, `p95`, `p99`, `retransmits`, `failed-connections`, and CHANGE
//! is relative (`20%`), in percentage points for `errors` (`0.5pp`), in milliseconds for
//! percentiles (`5ms`) or absolute (`10`). Percentiles of an edge with fewer than
//! `--min-requests` requests on either side are not judged (noise).

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::check::{self, EdgeExt, EdgeStats, JunitCase, Snapshot};

/// Default rules when `--fail-on` is not given.
pub const DEFAULT_FAIL_ON: &str = "p99 > +20%, errors > +0.5pp, new-edge";

/// Arguments of `retrace diff`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The reference: a capture directory or segment file, or an analysis directory (holding
    /// the summary.json that `retrace analyze` wrote).
    pub base: PathBuf,
    /// The capture to judge against the reference (same forms as BASE).
    pub candidate: PathBuf,
    /// Comma-separated rules; crossing any makes the exit code 1.
    #[arg(long, value_name = "RULES", default_value = DEFAULT_FAIL_ON)]
    pub fail_on: String,
    /// Below this many requests (on either side) an edge's percentiles are not judged.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub min_requests: u64,
    /// Directory for diff.html and diff.csv (without it, only the table on stdout and the
    /// exit code: nothing is written).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Service naming rules passed to the analyzer (see `retrace analyze --services`).
    #[arg(long, value_name = "FILE.yaml")]
    pub services: Option<PathBuf>,
    /// Also write the verdicts as JUnit XML.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Runs `retrace diff`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rules = parse_rules(&args.fail_on).context("--fail-on")?;
    let base = load(&args.base, args.services.as_deref())?;
    let cand = load(&args.candidate, args.services.as_deref())?;
    let report = compare(&base, &cand, &rules, args.min_requests);
    print!("{}", render_table(&report));
    let title = format!("{} → {}", args.base.display(), args.candidate.display());
    let written = match &args.out {
        Some(out) => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let csv_path = out.join("diff.csv");
            write_csv(&report, &csv_path)?;
            let html_path = out.join("diff.html");
            std::fs::write(&html_path, render_html(&report, &title, &args.fail_on))
                .with_context(|| format!("writing {}", html_path.display()))?;
            format!("; wrote {} and {}", csv_path.display(), html_path.display())
        }
        None => String::new(),
    };
    if let Some(j) = &args.junit {
        check::write_junit(j, &format!("retrace diff {title}"), &junit_cases(&report))?;
    }
    let crossed = report.failures();
    println!("{crossed} rule(s) crossed{written}");
    Ok(if crossed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load(path: &Path, services: Option<&Path>) -> anyhow::Result<Snapshot> {
    let summary = path.join("summary.json");
    let is_capture = path.join("manifest.json").exists()
        || std::fs::read_dir(path).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "rseg"))
        });
    if path.is_dir() && summary.is_file() && !is_capture {
        let text = std::fs::read_to_string(&summary)
            .with_context(|| format!("reading {}", summary.display()))?;
        let a: retrace_analyze::Analysis = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an analysis summary", summary.display()))?;
        return Ok(Snapshot::from_analysis(&a));
    }
    check::analyze_capture(&[path.to_path_buf()], services)
}

// ---------------------------------------------------------------------------------------------
// Rules.

/// What a threshold is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Requests per second.
    Rate,
    /// errors / requests.
    Errors,
    /// Median latency.
    P50,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// TCP retransmits.
    Retransmits,
    /// Failed connections.
    FailedConnections,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Metric; 7] = [
        Metric::Rate,
        Metric::Errors,
        Metric::P50,
        Metric::P95,
        Metric::P99,
        Metric::Retransmits,
        Metric::FailedConnections,
    ];

    /// Name as written in rules.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Rate => "rate",
            Metric::Errors => "errors",
            Metric::P50 => "p50",
            Metric::P95 => "p95",
            Metric::P99 => "p99",
            Metric::Retransmits => "retransmits",
            Metric::FailedConnections => "failed-connections",
        }
    }

    fn parse(s: &str) -> Option<Metric> {
        Some(match s {
            "rate" | "requests" => Metric::Rate,
            "errors" | "error-rate" | "error_rate" => Metric::Errors,
            "p50" => Metric::P50,
            "p95" => Metric::P95,
            "p99" => Metric::P99,
            "retransmits" => Metric::Retransmits,
            "failed-connections" | "failed_connections" => Metric::FailedConnections,
            _ => return None,
        })
    }

    fn is_percentile(self) -> bool {
        matches!(self, Metric::P50 | Metric::P95 | Metric::P99)
    }

    fn value(self, e: &EdgeStats, window_s: f64) -> Option<f64> {
        match self {
            Metric::Rate => Some(if window_s > 0.0 {
                e.requests as f64 / window_s
            } else {
                0.0
            }),
            Metric::Errors => Some(e.error_rate()),
            Metric::P50 => e.p50_ms,
            Metric::P95 => e.p95_ms,
            Metric::P99 => e.p99_ms,
            Metric::Retransmits => Some(e.retransmits as f64),
            Metric::FailedConnections => Some(e.failed_connections as f64),
        }
    }

    fn format(self, v: Option<f64>) -> String {
        match v {
            None => "-".to_string(),
            Some(v) => match self {
                Metric::Rate => format!("{v:.2}/s"),
                Metric::Errors => format!("{:.2}%", v * 100.0),
                Metric::P50 | Metric::P95 | Metric::P99 => format!("{v:.2}ms"),
                Metric::Retransmits | Metric::FailedConnections => format!("{v:.0}"),
            },
        }
    }
}

/// How a change is measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// Relative to the base, percent.
    Percent(f64),
    /// Percentage points (error rate).
    Points(f64),
    /// Milliseconds (percentiles).
    Millis(f64),
    /// In the metric's own unit.
    Absolute(f64),
}

/// One `--fail-on` rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// An edge present only in the candidate.
    NewEdge,
    /// An edge present only in the base.
    GoneEdge,
    /// A service present only in the candidate.
    NewService,
    /// A service present only in the base.
    GoneService,
    /// A metric moved beyond a threshold.
    Threshold {
        /// Measured on.
        metric: Metric,
        /// `>`: an increase beyond `amount`; `<`: a decrease beyond it.
        increase: bool,
        /// Size of the change (always positive).
        amount: Amount,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::NewEdge => f.write_str("new-edge"),
            Rule::GoneEdge => f.write_str("gone-edge"),
            Rule::NewService => f.write_str("new-service"),
            Rule::GoneService => f.write_str("gone-service"),
            Rule::Threshold {
                metric,
                increase,
                amount,
            } => {
                let (op, sign) = if *increase { (">", "+") } else { ("<", "-") };
                let amt = match amount {
                    Amount::Percent(v) => format!("{v}%"),
                    Amount::Points(v) => format!("{v}pp"),
                    Amount::Millis(v) => format!("{v}ms"),
                    Amount::Absolute(v) => format!("{v}"),
                };
                write!(f, "{} {op} {sign}{amt}", metric.name())
            }
        }
    }
}

/// Parses a comma-separated list of rules.
pub fn parse_rules(text: &str) -> anyhow::Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for raw in text.split(',') {
        let r = raw.trim();
        if r.is_empty() {
            continue;
        }
        rules.push(parse_rule(r).map_err(|e| anyhow::anyhow!("rule {r:?}: {e}"))?);
    }
    Ok(rules)
}

fn parse_rule(r: &str) -> Result<Rule, String> {
    match r {
        "new-edge" => return Ok(Rule::NewEdge),
        "gone-edge" | "missing-edge" => return Ok(Rule::GoneEdge),
        "new-service" => return Ok(Rule::NewService),
        "gone-service" | "missing-service" => return Ok(Rule::GoneService),
        _ => {}
    }
    let (metric_s, increase, value_s) = if let Some((m, v)) = r.split_once('>') {
        (m, true, v)
    } else if let Some((m, v)) = r.split_once('<') {
        (m, false, v)
    } else {
        return Err("expected new-edge, gone-edge, new-service, gone-service, or METRIC > +CHANGE / METRIC < -CHANGE".into());
    };
    let metric = Metric::parse(metric_s.trim()).ok_or_else(|| {
        format!(
            "unknown metric {:?}: expected rate, errors, p50, p95, p99, retransmits or failed-connections",
            metric_s.trim()
        )
    })?;
    let v = value_s.trim();
    let unsigned = match v.chars().next() {
        Some('+') if increase => &v[1..],
        Some('-') if !increase => &v[1..],
        Some('+' | '-') => {
            return Err("`>` takes an increase (+N), `<` a decrease (-N)".into());
        }
        _ => v,
    };
    let (num, amount): (&str, fn(f64) -> Amount) = if let Some(n) = unsigned.strip_suffix("pp") {
        (n, Amount::Points)
    } else if let Some(n) = unsigned.strip_suffix('%') {
        (n, Amount::Percent)
    } else if let Some(n) = unsigned.strip_suffix("ms") {
        (n, Amount::Millis)
    } else {
        (unsigned, Amount::Absolute)
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a number in {v:?} (like +20%, +0.5pp, +5ms, +10)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!(
            "expected a non-negative finite change, found {v:?}"
        ));
    }
    let amount = amount(n);
    match amount {
        Amount::Points(_) if metric != Metric::Errors => {
            return Err("percentage points (pp) apply to `errors` only".into())
        }
        Amount::Millis(_) if !metric.is_percentile() => {
            return Err("milliseconds apply to p50, p95, p99 only".into())
        }
        Amount::Absolute(_) if metric == Metric::Errors => {
            return Err("write an error-rate change in pp (+0.5pp) or % (+20%)".into())
        }
        Amount::Absolute(_) if metric.is_percentile() => {
            return Err("write a latency change in ms (+5ms) or % (+20%)".into())
        }
        _ => {}
    }
    Ok(Rule::Threshold {
        metric,
        increase,
        amount,
    })
}

/// Whether the move from `base` to `cand` crosses a threshold.
pub fn crosses(base: f64, cand: f64, increase: bool, amount: Amount) -> bool {
    let delta = if increase { cand - base } else { base - cand };
    match amount {
        Amount::Percent(p) => {
            if base == 0.0 {
                // Any move away from zero in the watched direction is infinitely large.
                delta > 0.0
            } else {
                delta / base.abs() * 100.0 > p
            }
        }
        Amount::Points(p) => delta * 100.0 > p,
        Amount::Millis(v) | Amount::Absolute(v) => delta > v,
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison.

/// What became of a service or edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// In both.
    Both,
    /// Only in the candidate.
    New,
    /// Only in the base.
    Gone,
}

impl Presence {
    fn name(self) -> &'static str {
        match self {
            Presence::Both => "both",
            Presence::New => "new",
            Presence::Gone => "gone",
        }
    }
}

/// Verdict of one compared value.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Within every rule.
    Ok,
    /// Crossed these rules.
    Fail(Vec<String>),
    /// Not judged, and why.
    NotJudged(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok => f.write_str("ok"),
            Verdict::Fail(r) => write!(f, "FAIL ({})", r.join("; ")),
            Verdict::NotJudged(w) => write!(f, "not judged ({w})"),
        }
    }
}

/// One metric of one edge, compared.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRow {
    /// The metric.
    pub metric: Metric,
    /// In the base.
    pub base: Option<f64>,
    /// In the candidate.
    pub cand: Option<f64>,
    /// Verdict under the rules.
    pub verdict: Verdict,
}

/// One edge, compared.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeDiff {
    /// `client -> server`.
    pub edge: String,
    /// Protocol.
    pub protocol: String,
    /// Appeared, disappeared, or in both.
    pub presence: Presence,
    /// Its own verdict (new/gone rules).
    pub verdict: Verdict,
    /// Metrics (empty unless in both).
    pub metrics: Vec<MetricRow>,
    /// Requests in base and candidate.
    pub requests: (u64, u64),
}

/// One service, compared (presence only).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDiff {
    /// Name.
    pub name: String,
    /// Appeared, disappeared, or in both.
    pub presence: Presence,
    /// Requests in base and candidate.
    pub requests: (u64, u64),
    /// Error rate in base and candidate.
    pub error_rate: (f64, f64),
    /// Verdict (new/gone rules).
    pub verdict: Verdict,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffReport {
    /// Services.
    pub services: Vec<ServiceDiff>,
    /// Edges.
    pub edges: Vec<EdgeDiff>,
    /// Window lengths, seconds.
    pub windows: (f64, f64),
}

impl DiffReport {
    /// Number of crossed rules.
    pub fn failures(&self) -> usize {
        let n = |v: &Verdict| match v {
            Verdict::Fail(r) => r.len(),
            _ => 0,
        };
        self.services.iter().map(|s| n(&s.verdict)).sum::<usize>()
            + self
                .edges
                .iter()
                .map(|e| n(&e.verdict) + e.metrics.iter().map(|m| n(&m.verdict)).sum::<usize>())
                .sum::<usize>()
    }
}

fn presence_verdict(p: Presence, rules: &[Rule], new: Rule, gone: Rule) -> Verdict {
    let hit = match p {
        Presence::Both => None,
        Presence::New => rules.contains(&new).then_some(new),
        Presence::Gone => rules.contains(&gone).then_some(gone),
    };
    match hit {
        Some(r) => Verdict::Fail(vec![r.to_string()]),
        None => Verdict::Ok,
    }
}

/// Compares two snapshots under rules.
pub fn compare(base: &Snapshot, cand: &Snapshot, rules: &[Rule], min_requests: u64) -> DiffReport {
    let mut services = Vec::new();
    let mut names: Vec<&str> = base
        .services
        .iter()
        .chain(&cand.services)
        .map(|s| s.service.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let b = base.services.iter().find(|s| s.service == name);
        let c = cand.services.iter().find(|s| s.service == name);
        let presence = match (b, c) {
            (Some(_), Some(_)) => Presence::Both,
            (None, _) => Presence::New,
            (_, None) => Presence::Gone,
        };
        services.push(ServiceDiff {
            name: name.to_string(),
            presence,
            requests: (b.map_or(0, |s| s.requests), c.map_or(0, |s| s.requests)),
            error_rate: (
                b.map_or(0.0, |s| s.error_rate),
                c.map_or(0.0, |s| s.error_rate),
            ),
            verdict: presence_verdict(presence, rules, Rule::NewService, Rule::GoneService),
        });
    }

    let key = |e: &EdgeStats| (e.client.clone(), e.server.clone(), e.protocol.clone());
    let mut keys: Vec<(String, String, String)> =
        base.edges.iter().chain(&cand.edges).map(key).collect();
    keys.sort();
    keys.dedup();
    let mut edges = Vec::new();
    for k in keys {
        let b = base.edges.iter().find(|e| key(e) == k);
        let c = cand.edges.iter().find(|e| key(e) == k);
        let presence = match (b, c) {
            (Some(_), Some(_)) => Presence::Both,
            (None, _) => Presence::New,
            (_, None) => Presence::Gone,
        };
        let mut metrics = Vec::new();
        if let (Some(b), Some(c)) = (b, c) {
            for m in Metric::ALL {
                let bv = m.value(b, base.window_s);
                let cv = m.value(c, cand.window_s);
                let applicable: Vec<&Rule> = rules
                    .iter()
                    .filter(|r| matches!(r, Rule::Threshold { metric, .. } if *metric == m))
                    .collect();
                let fewest = b.requests.min(c.requests);
                let verdict = if applicable.is_empty() {
                    Verdict::Ok
                } else if m.is_percentile() && fewest < min_requests {
                    Verdict::NotJudged(format!("{fewest} < {min_requests} requests"))
                } else {
                    match (bv, cv) {
                        (Some(x), Some(y)) => {
                            let crossed: Vec<String> = applicable
                                .iter()
                                .filter(|r| match r {
                                    Rule::Threshold {
                                        increase, amount, ..
                                    } => crosses(x, y, *increase, *amount),
                                    _ => false,
                                })
                                .map(|r| r.to_string())
                                .collect();
                            if crossed.is_empty() {
                                Verdict::Ok
                            } else {
                                Verdict::Fail(crossed)
                            }
                        }
                        _ => Verdict::NotJudged("no latency measured".to_string()),
                    }
                };
                metrics.push(MetricRow {
                    metric: m,
                    base: bv,
                    cand: cv,
                    verdict,
                });
            }
        }
        edges.push(EdgeDiff {
            edge: format!("{} -> {}", k.0, k.1),
            protocol: k.2,
            presence,
            verdict: presence_verdict(presence, rules, Rule::NewEdge, Rule::GoneEdge),
            metrics,
            requests: (b.map_or(0, |e| e.requests), c.map_or(0, |e| e.requests)),
        });
    }
    DiffReport {
        services,
        edges,
        windows: (base.window_s, cand.window_s),
    }
}

fn change_text(m: Metric, b: Option<f64>, c: Option<f64>) -> String {
    match (b, c) {
        (Some(b), Some(c)) => {
            if m == Metric::Errors {
                format!("{:+.2}pp", (c - b) * 100.0)
            } else if b == 0.0 {
                if c == 0.0 {
                    "=".to_string()
                } else {
                    format!("{:+.2} (from 0)", c)
                }
            } else {
                format!("{:+.1}%", (c - b) / b * 100.0)
            }
        }
        _ => "-".to_string(),
    }
}

/// The table printed on stdout.
pub fn render_table(r: &DiffReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "windows: base {:.1}s, candidate {:.1}s",
        r.windows.0, r.windows.1
    );
    let _ = writeln!(s, "\nSERVICES");
    for sv in &r.services {
        let _ = writeln!(
            s,
            "  {:<5} {:<28} requests {:>7} -> {:<7} errors {:>7} -> {:<7}  {}",
            sv.presence.name(),
            sv.name,
            sv.requests.0,
            sv.requests.1,
            format!("{:.2}%", sv.error_rate.0 * 100.0),
            format!("{:.2}%", sv.error_rate.1 * 100.0),
            sv.verdict
        );
    }
    let _ = writeln!(s, "\nEDGES");
    for e in &r.edges {
        let _ = writeln!(
            s,
            "  {:<5} {} ({})  requests {} -> {}  {}",
            e.presence.name(),
            e.edge,
            e.protocol,
            e.requests.0,
            e.requests.1,
            e.verdict
        );
        for m in &e.metrics {
            let _ = writeln!(
                s,
                "        {:<19} {:>12} -> {:<12} {:>16}  {}",
                m.metric.name(),
                m.metric.format(m.base),
                m.metric.format(m.cand),
                change_text(m.metric, m.base, m.cand),
                m.verdict
            );
        }
    }
    s
}

fn csv_num(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.6}")).unwrap_or_default()
}

/// Writes diff.csv: one row per service, edge presence and edge metric.
pub fn write_csv(r: &DiffReport, path: &Path) -> anyhow::Result<()> {
    let mut w = retrace_replay::csv_cell::CsvWriter::new(
        csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?,
    );
    let mut rows: Vec<[String; 9]> = Vec::new();
    rows.push(
        [
            "kind",
            "subject",
            "protocol",
            "presence",
            "metric",
            "base",
            "candidate",
            "change",
            "verdict",
        ]
        .map(String::from),
    );
    for sv in &r.services {
        rows.push([
            "service".into(),
            sv.name.clone(),
            String::new(),
            sv.presence.name().into(),
            "requests".into(),
            sv.requests.0.to_string(),
            sv.requests.1.to_string(),
            String::new(),
            sv.verdict.to_string(),
        ]);
    }
    for e in &r.edges {
        rows.push([
            "edge".into(),
            e.edge.clone(),
            e.protocol.clone(),
            e.presence.name().into(),
            "requests".into(),
            e.requests.0.to_string(),
            e.requests.1.to_string(),
            String::new(),
            e.verdict.to_string(),
        ]);
        for m in &e.metrics {
            rows.push([
                "edge".into(),
                e.edge.clone(),
                e.protocol.clone(),
                e.presence.name().into(),
                m.metric.name().into(),
                csv_num(m.base),
                csv_num(m.cand),
                change_text(m.metric, m.base, m.cand),
                m.verdict.to_string(),
            ]);
        }
    }
    for row in rows {
        w.write_record(&row)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    check::xml_escape(s)
}

/// diff.html: one self-contained page (inline CSS, no script).
pub fn render_html(r: &DiffReport, title: &str, rules: &str) -> String {
    let mut s = String::new();
    let crossed = r.failures();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>retrace diff: {t}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
th{{background:#f3f3f3}}.fail{{background:#fdd}}.ok{{background:#efe}}.nj{{color:#777}}\
.new{{color:#06c;font-weight:bold}}.gone{{color:#a50;font-weight:bold}}td.n{{text-align:right}}\
</style></head><body>\n<h1>retrace diff</h1>\n<p>{t}</p>\n<p>Rules: <code>{rules}</code>. \
<strong class=\"{cls}\">{crossed} rule(s) crossed</strong>. Windows: base {wb:.1}s, candidate {wc:.1}s.</p>\n",
        t = html_escape(title),
        rules = html_escape(rules),
        cls = if crossed == 0 { "ok" } else { "fail" },
        wb = r.windows.0,
        wc = r.windows.1,
    );
    s.push_str("<h2>Services</h2>\n<table><tr><th>service</th><th>presence</th><th>requests</th><th>error rate</th><th>verdict</th></tr>\n");
    for sv in &r.services {
        let _ = writeln!(
            s,
            "<tr class=\"{}\"><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{} → {}</td><td class=\"n\">{:.2}% → {:.2}%</td><td>{}</td></tr>",
            verdict_class(&sv.verdict),
            html_escape(&sv.name),
            sv.presence.name(),
            sv.presence.name(),
            sv.requests.0,
            sv.requests.1,
            sv.error_rate.0 * 100.0,
            sv.error_rate.1 * 100.0,
            html_escape(&sv.verdict.to_string())
        );
    }
    s.push_str("</table>\n<h2>Edges</h2>\n<table><tr><th>edge</th><th>protocol</th><th>metric</th><th>base</th><th>candidate</th><th>change</th><th>verdict</th></tr>\n");
    for e in &r.edges {
        let _ = writeln!(
            s,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td></td><td>{}</td></tr>",
            verdict_class(&e.verdict),
            html_escape(&e.edge),
            html_escape(&e.protocol),
            e.presence.name(),
            if e.presence == Presence::Both { "requests" } else { e.presence.name() },
            e.requests.0,
            e.requests.1,
            html_escape(&e.verdict.to_string())
        );
        for m in &e.metrics {
            let _ = writeln!(
                s,
                "<tr class=\"{}\"><td></td><td></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                verdict_class(&m.verdict),
                m.metric.name(),
                html_escape(&m.metric.format(m.base)),
                html_escape(&m.metric.format(m.cand)),
                html_escape(&change_text(m.metric, m.base, m.cand)),
                html_escape(&m.verdict.to_string())
            );
        }
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

fn verdict_class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Ok => "",
        Verdict::Fail(_) => "fail",
        Verdict::NotJudged(_) => "nj",
    }
}

fn junit_cases(r: &DiffReport) -> Vec<JunitCase> {
    let mut out = Vec::new();
    let case = |class: String, name: String, v: &Verdict, detail: String| JunitCase {
        class,
        name,
        failure: match v {
            Verdict::Fail(rules) => Some(format!("{}: {detail}", rules.join("; "))),
            _ => None,
        },
        output: format!("{detail} ({v})"),
    };
    for sv in &r.services {
        out.push(case(
            format!("service {}", sv.name),
            "presence".into(),
            &sv.verdict,
            sv.presence.name().into(),
        ));
    }
    for e in &r.edges {
        let class = format!("edge {} ({})", e.edge, e.protocol);
        out.push(case(
            class.clone(),
            "presence".into(),
            &e.verdict,
            e.presence.name().into(),
        ));
        for m in &e.metrics {
            out.push(case(
                class.clone(),
                m.metric.name().into(),
                &m.verdict,
                format!(
                    "{} -> {} ({})",
                    m.metric.format(m.base),
                    m.metric.format(m.cand),
                    change_text(m.metric, m.base, m.cand)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::check::tests::{edge, service};
    use crate::cmd::check::ServiceStats;
    use retrace_analyze::Health;

    #[test]
    fn parses_rules() {
        let r = parse_rules(
            "p99 > +20%, errors > +0.5pp, new-edge,rate < -30%, retransmits > 10, p50>+5ms",
        )
        .expect("parses");
        assert_eq!(
            r,
            vec![
                Rule::Threshold {
                    metric: Metric::P99,
                    increase: true,
                    amount: Amount::Percent(20.0)
                },
                Rule::Threshold {
                    metric: Metric::Errors,
                    increase: true,
                    amount: Amount::Points(0.5)
                },
                Rule::NewEdge,
                Rule::Threshold {
                    metric: Metric::Rate,
                    increase: false,
                    amount: Amount::Percent(30.0)
                },
                Rule::Threshold {
                    metric: Metric::Retransmits,
                    increase: true,
                    amount: Amount::Absolute(10.0)
                },
                Rule::Threshold {
                    metric: Metric::P50,
                    increase: true,
                    amount: Amount::Millis(5.0)
                },
            ]
        );
        assert_eq!(r[0].to_string(), "p99 > +20%");
        assert_eq!(r[3].to_string(), "rate < -30%");
    }

    #[test]
    fn rejects_bad_rules() {
        for (bad, why) in [
            ("p98 > +20%", "unknown metric"),
            ("p99 > -20%", "increase"),
            ("p99 >= +20%", "expected a number"),
            ("rate > +0.5pp", "pp"),
            ("errors > +3", "pp"),
            ("p99 > 5", "ms"),
            ("retransmits > +5ms", "milliseconds"),
            ("p99 +20%", "expected new-edge"),
            ("p99 > +abc%", "expected a number"),
        ] {
            let err = format!("{:#}", parse_rules(bad).expect_err(bad));
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn crossing() {
        assert!(crosses(100.0, 121.0, true, Amount::Percent(20.0)));
        assert!(!crosses(100.0, 120.0, true, Amount::Percent(20.0)));
        assert!(!crosses(100.0, 50.0, true, Amount::Percent(20.0)));
        assert!(crosses(100.0, 60.0, false, Amount::Percent(30.0)));
        assert!(crosses(0.0, 1.0, true, Amount::Percent(20.0)));
        assert!(!crosses(0.0, 0.0, true, Amount::Percent(20.0)));
        assert!(crosses(0.001, 0.0070, true, Amount::Points(0.5)));
        assert!(!crosses(0.001, 0.0055, true, Amount::Points(0.5)));
        assert!(crosses(10.0, 16.0, true, Amount::Millis(5.0)));
    }

    fn svc(name: &str, req: u64, err: u64) -> ServiceStats {
        service(name, req, err, None, Health::Ok)
    }

    #[test]
    fn compares_snapshots() {
        let base = Snapshot {
            window_s: 20.0,
            services: vec![svc("nginx", 1000, 0), svc("api", 1000, 0), svc("old", 5, 0)],
            edges: vec![
                edge("client", "nginx", 1000, 0, 10.0, 0),
                edge("nginx", "api", 1000, 0, 8.0, 0),
                edge("api", "old", 5, 0, 1.0, 0),
                edge("api", "tiny", 10, 0, 1.0, 0),
            ],
            ..Default::default()
        };
        let cand = Snapshot {
            window_s: 20.0,
            services: vec![
                svc("nginx", 1000, 300),
                svc("api", 700, 0),
                svc("cache", 9, 0),
            ],
            edges: vec![
                edge("client", "nginx", 1000, 300, 11.0, 0),
                edge("nginx", "api", 700, 0, 30.0, 4),
                edge("api", "cache", 9, 0, 1.0, 0),
                edge("api", "tiny", 12, 0, 100.0, 0),
            ],
            ..Default::default()
        };
        let rules = parse_rules(DEFAULT_FAIL_ON).expect("ok");
        let r = compare(&base, &cand, &rules, 20);
        let svcs: Vec<(&str, Presence, bool)> = r
            .services
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.presence,
                    matches!(s.verdict, Verdict::Fail(_)),
                )
            })
            .collect();
        assert_eq!(
            svcs,
            vec![
                ("api", Presence::Both, false),
                ("cache", Presence::New, false),
                ("nginx", Presence::Both, false),
                ("old", Presence::Gone, false),
            ]
        );
        let find = |k: &str| r.edges.iter().find(|e| e.edge == k).expect(k);
        assert_eq!(find("api -> cache").presence, Presence::New);
        assert_eq!(
            find("api -> cache").verdict,
            Verdict::Fail(vec!["new-edge".into()])
        );
        assert_eq!(find("api -> old").presence, Presence::Gone);
        assert_eq!(find("api -> old").verdict, Verdict::Ok);
        let metric = |k: &str, m: Metric| {
            find(k)
                .metrics
                .iter()
                .find(|r| r.metric == m)
                .expect("metric")
                .verdict
                .clone()
        };
        // +30pp errors on client -> nginx; p99 +10% stays within +20%.
        assert_eq!(
            metric("client -> nginx", Metric::Errors),
            Verdict::Fail(vec!["errors > +0.5pp".into()])
        );
        assert_eq!(metric("client -> nginx", Metric::P99), Verdict::Ok);
        // p99 8 -> 30 ms crosses.
        assert_eq!(
            metric("nginx -> api", Metric::P99),
            Verdict::Fail(vec!["p99 > +20%".into()])
        );
        // No rule on retransmits: reported, not judged as failure.
        assert_eq!(metric("nginx -> api", Metric::Retransmits), Verdict::Ok);
        // 10 requests < 20: percentiles not judged even though p99 went x100.
        assert!(matches!(
            metric("api -> tiny", Metric::P99),
            Verdict::NotJudged(_)
        ));
        assert_eq!(r.failures(), 3);
        let table = render_table(&r);
        assert!(table.contains("new   api -> cache (http)"), "{table}");
        assert!(table.contains("FAIL (p99 > +20%)"), "{table}");

        let rules =
            parse_rules("new-service, gone-service, gone-edge, retransmits > +2").expect("ok");
        let r = compare(&base, &cand, &rules, 20);
        assert_eq!(r.failures(), 4);
        assert_eq!(
            metric_of(&r, "nginx -> api", Metric::Retransmits),
            Verdict::Fail(vec!["retransmits > +2".into()])
        );
        // Identical inputs never fail.
        let r = compare(
            &base,
            &base,
            &parse_rules("p99 > +0%, errors > +0pp, rate < -0%, new-edge, gone-edge").expect("ok"),
            0,
        );
        assert_eq!(r.failures(), 0);
    }

    fn analysis(api_errors: u64, p99: f64, extra_edge: bool) -> retrace_analyze::Analysis {
        let health = |errors: u64| {
            if errors > 0 {
                Health::Critical
            } else {
                Health::Ok
            }
        };
        let svc = |name: &str, requests: u64, errors: u64| {
            service(name, requests, errors, Some(p99), health(errors))
        };
        let edge = |c: &str, s: &str, protocol: &str, requests: u64, errors: u64| EdgeStats {
            protocol: protocol.into(),
            connections: 4,
            failed_connections: errors / 2,
            status: health(errors),
            rate_per_s: requests as f64 / 20.0,
            ..edge(c, s, requests, errors, p99, 0)
        };
        let mut a = retrace_analyze::Analysis {
            window_start_ns: 1_000_000_000,
            window_end_ns: 21_000_000_000,
            services: vec![svc("api", 800, 0), svc("nginx", 1000, api_errors)],
            edges: vec![
                edge("client", "nginx", "http", 1000, api_errors),
                edge("nginx", "api", "http", 1000 - api_errors, 0),
            ],
            ..Default::default()
        };
        if extra_edge {
            a.edges.push(edge("api", "postgres", "postgres", 800, 0));
        }
        a
    }

    #[test]
    fn compares_hand_built_analyses() {
        let base = Snapshot::from_analysis(&analysis(0, 10.0, false));
        let cand = Snapshot::from_analysis(&analysis(300, 10.5, true));
        assert_eq!(base.window_s, 20.0);
        let rules = parse_rules("p99 > +20%, errors > +0.5pp, new-edge, rate < -20%").expect("ok");
        let r = compare(&base, &cand, &rules, 20);
        assert_eq!(
            metric_of(&r, "client -> nginx", Metric::Errors),
            Verdict::Fail(vec!["errors > +0.5pp".into()])
        );
        // 1000 -> 700 requests over 20 s: 50/s -> 35/s, a 30 % drop.
        assert_eq!(
            metric_of(&r, "nginx -> api", Metric::Rate),
            Verdict::Fail(vec!["rate < -20%".into()])
        );
        assert_eq!(metric_of(&r, "nginx -> api", Metric::P99), Verdict::Ok);
        let pg = r
            .edges
            .iter()
            .find(|e| e.edge == "api -> postgres")
            .expect("edge");
        assert_eq!(
            (pg.presence, pg.protocol.as_str()),
            (Presence::New, "postgres")
        );
        assert_eq!(r.failures(), 3);
        assert_eq!(compare(&base, &base, &rules, 20).failures(), 0);
    }

    fn metric_of(r: &DiffReport, k: &str, m: Metric) -> Verdict {
        r.edges
            .iter()
            .find(|e| e.edge == k)
            .and_then(|e| e.metrics.iter().find(|x| x.metric == m))
            .map(|x| x.verdict.clone())
            .expect("found")
    }

    #[test]
    fn html_is_escaped_and_csv_parses() {
        let mut a = Snapshot {
            window_s: 1.0,
            ..Default::default()
        };
        a.services.push(svc("<script>alert(1)</script>", 1, 0));
        a.edges.push(edge("<img src=x>", "b\"&", 100, 0, 1.0, 0));
        let r = compare(
            &Snapshot::default(),
            &a,
            &parse_rules("new-edge").expect("ok"),
            20,
        );
        let html = render_html(&r, "a <b>", "new-edge");
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("<img src"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("b&quot;&amp;"));
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("diff.csv");
        write_csv(&r, &p).expect("csv");
        let mut rd = csv::Reader::from_path(&p).expect("read");
        let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[1][1], "<img src=x> -> b\"&");
        assert_eq!(&rows[1][3], "new");
        assert_eq!(&rows[1][8], "FAIL (new-edge)");
    }
}
