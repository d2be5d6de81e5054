//! Alert rules (`retrace analyze --alerts FILE.yaml`): the seed's `alerts.yaml`, plain or as
//! the ConfigMap that carries it (`data: alerts.yaml: |`), evaluated over the capture's
//! timeline for every called service.
//!
//! ```yaml
//! alerts:
//!   - name: SLO Breach
//!     condition: slo.availability < target
//!     for: 5m
//!     severity: critical            # critical, warning (default) or info
//!   - name: High Error Rate
//!     condition: error_rate > 1% and request_rate > 1
//!     for: 5m
//!     service: "api*"               # optional: only these services (a glob)
//!   - name: Latency Degradation
//!     condition: latency.p99 > baseline * 2
//!     for: 10m
//! ```
//!
//! Metrics, each over the short window (5 m scaled like the burn-rate windows) ending at every
//! step of the timeline: `slo.availability` and `slo.latency` (the good share of the
//! objectives, compared with a percentage or `target`, the service's own), `error_rate` (a
//! percentage), `request_rate` (requests per second), `latency.p50` `.p75` `.p90` `.p95`
//! `.p99` `.p999` `.max` (a duration: `500ms`, `1s`), and `container.memory.usage` (a
//! percentage of the limit of the service's cgroup, the highest of its cgroups, at the end of
//! each step, from the profiles' cgroup memory samples; a capture without them, or an
//! unlimited cgroup, gives "no data" and the rule never fires). Right-hand sides: a value, `target`, `baseline`,
//! `baseline * 2` (or `2 * baseline`): the same metric over the baseline (the capture's own
//! first quarter, or `--baseline CAPTURE` as a whole). Comparisons `<` `<=` `>` `>=` `==`
//! `!=`, combined with `and`, `or` and parentheses (`and` binds first). `for:` is scaled like
//! the windows (a 60 s capture evaluates `for: 5m` as 5 s); the report gives both.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use crate::config_file::{error as config_error, find_line, unwrap_configmap, yaml_error};
use crate::model::Analysis;
use crate::slo::{
    accumulate, quantile, AlertFiring, AlertRuleResult, DurationNs, Glob, ServiceData, SloConfig,
    Timeline,
};
use crate::AnalyzeError;

/// Why memory rules have no data.
pub const MEMORY_NOTE: &str =
    "no cgroup memory with a limit recorded for the service (a capture without the mem stream)";

/// A metric of a condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// Good share of the availability objective (fraction).
    SloAvailability,
    /// Good share of the latency objective (fraction).
    SloLatency,
    /// Failed share of the calls (fraction).
    ErrorRate,
    /// Calls per second.
    RequestRate,
    /// A latency quantile (0..=1), ns.
    Latency(f64),
    /// Memory usage of the service's cgroup, fraction of its limit (profiles).
    MemoryUsage,
}

const METRICS: &str = "slo.availability, slo.latency, error_rate, request_rate, latency.p50, \
                       latency.p75, latency.p90, latency.p95, latency.p99, latency.p999, \
                       latency.max, container.memory.usage";

impl Metric {
    fn parse(s: &str) -> Option<Metric> {
        Some(match s {
            "slo.availability" => Metric::SloAvailability,
            "slo.latency" => Metric::SloLatency,
            "error_rate" => Metric::ErrorRate,
            "request_rate" | "rps" => Metric::RequestRate,
            "latency.p50" => Metric::Latency(0.5),
            "latency.p75" => Metric::Latency(0.75),
            "latency.p90" => Metric::Latency(0.9),
            "latency.p95" => Metric::Latency(0.95),
            "latency.p99" => Metric::Latency(0.99),
            "latency.p999" => Metric::Latency(0.999),
            "latency.max" => Metric::Latency(1.0),
            "container.memory.usage" | "memory.usage" => Metric::MemoryUsage,
            _ => return None,
        })
    }

    fn name(self) -> String {
        match self {
            Metric::SloAvailability => "slo.availability".into(),
            Metric::SloLatency => "slo.latency".into(),
            Metric::ErrorRate => "error_rate".into(),
            Metric::RequestRate => "request_rate".into(),
            Metric::Latency(q) if q >= 1.0 => "latency.max".into(),
            Metric::Latency(q) if q > 0.99 => "latency.p999".into(),
            Metric::Latency(q) => format!("latency.p{}", (q * 100.0).round()),
            Metric::MemoryUsage => "container.memory.usage".into(),
        }
    }

    fn is_ratio(self) -> bool {
        matches!(
            self,
            Metric::SloAvailability | Metric::SloLatency | Metric::ErrorRate | Metric::MemoryUsage
        )
    }

    fn format(self, v: f64) -> String {
        match self {
            Metric::Latency(_) => format!("{:.3}ms", v / 1e6),
            Metric::RequestRate => format!("{v:.2}/s"),
            _ => format!("{:.2}%", v * 100.0),
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
    /// Whether larger values are worse (the value reported is the largest).
    fn high_is_bad(self) -> bool {
        matches!(self, Op::Gt | Op::Ge | Op::Ne)
    }
}

/// The right-hand side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rhs {
    /// A value in the metric's unit (fraction, ns, per second).
    Value(f64),
    /// The service's objective target (fraction).
    Target,
    /// The baseline value times a factor.
    Baseline(f64),
}

/// A condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// `metric op rhs`.
    Cmp(Metric, Op, Rhs),
    /// Both.
    And(Box<Cond>, Box<Cond>),
    /// Either.
    Or(Box<Cond>, Box<Cond>),
}

/// One rule.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// Name.
    pub name: String,
    /// The condition as written.
    pub condition_text: String,
    /// The condition.
    pub condition: Cond,
    /// `for:`, ns.
    pub for_ns: u64,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// Services it applies to (all when none).
    pub service: Option<Glob>,
}

/// The rules of an alerts file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AlertRules {
    /// Where they came from.
    pub source: String,
    /// Rules in file order.
    pub rules: Vec<AlertRule>,
}

#[derive(Deserialize)]
struct RawFile {
    alerts: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    condition: String,
    #[serde(rename = "for")]
    for_: Option<DurationNs>,
    severity: Option<String>,
    service: Option<String>,
    description: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The condition language.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// A number and the unit written right after it (`%`, `ms`, ...).
    Num(f64, String),
    Op(Op),
    Star,
    Open,
    Close,
}

/// A parse error at a byte offset of the condition.
#[derive(Debug)]
struct ParseError {
    at: usize,
    message: String,
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push((start, Tok::Ident(s[start..i].to_string())));
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let num: f64 = s[start..i].parse().map_err(|_| ParseError {
                at: start,
                message: format!("expected a number, found {:?}", &s[start..i]),
            })?;
            let u = i;
            while i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'%') {
                i += 1;
            }
            out.push((start, Tok::Num(num, s[u..i].to_string())));
        } else {
            let two = s.get(i..i + 2).unwrap_or("");
            let (tok, len) = match (two, c) {
                ("<=", _) => (Tok::Op(Op::Le), 2),
                (">=", _) => (Tok::Op(Op::Ge), 2),
                ("==", _) => (Tok::Op(Op::Eq), 2),
                ("!=", _) => (Tok::Op(Op::Ne), 2),
                ("&&", _) => (Tok::Ident("and".into()), 2),
                ("||", _) => (Tok::Ident("or".into()), 2),
                (_, b'<') => (Tok::Op(Op::Lt), 1),
                (_, b'>') => (Tok::Op(Op::Gt), 1),
                (_, b'*') => (Tok::Star, 1),
                (_, b'(') => (Tok::Open, 1),
                (_, b')') => (Tok::Close, 1),
                _ => {
                    return Err(ParseError {
                        at: start,
                        message: format!(
                            "unexpected {:?}: expected a metric, a comparison (< <= > >= == !=), \
                             a value, `and`, `or` or parentheses",
                            s[start..].chars().next().unwrap_or(' ')
                        ),
                    })
                }
            };
            i += len;
            out.push((start, tok));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: &'a [(usize, Tok)],
    pos: usize,
    len: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(p, _)| *p)
    }
    fn err<T>(&self, message: String) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.at(),
            message,
        })
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(k))
    }

    fn expr(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.and_expr()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.atom()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.atom()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Cond, ParseError> {
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let c = self.expr()?;
            if self.peek() != Some(&Tok::Close) {
                return self.err("expected `)`".into());
            }
            self.pos += 1;
            return Ok(c);
        }
        let metric = match self.peek() {
            Some(Tok::Ident(m)) => match Metric::parse(m) {
                Some(x) => x,
                None => {
                    return self.err(format!("unknown metric {m:?}: expected one of {METRICS}"))
                }
            },
            _ => return self.err(format!("expected a metric (one of {METRICS})")),
        };
        self.pos += 1;
        let op = match self.peek() {
            Some(Tok::Op(o)) => *o,
            _ => return self.err("expected a comparison: < <= > >= == !=".into()),
        };
        self.pos += 1;
        let rhs = self.rhs(metric)?;
        Ok(Cond::Cmp(metric, op, rhs))
    }

    fn rhs(&mut self, metric: Metric) -> Result<Rhs, ParseError> {
        let start = self.at();
        match self.peek().cloned() {
            Some(Tok::Ident(w)) if w == "target" => {
                if !matches!(metric, Metric::SloAvailability | Metric::SloLatency) {
                    return self.err(format!(
                        "`target` is the objective of slo.availability and slo.latency, not of {}",
                        metric.name()
                    ));
                }
                self.pos += 1;
                Ok(Rhs::Target)
            }
            Some(Tok::Ident(w)) if w == "baseline" => {
                self.pos += 1;
                if self.peek() == Some(&Tok::Star) {
                    self.pos += 1;
                    match self.peek() {
                        Some(Tok::Num(k, u)) if u.is_empty() => {
                            let k = *k;
                            self.pos += 1;
                            Ok(Rhs::Baseline(k))
                        }
                        _ => self.err("expected a factor after `baseline *` (like 2)".into()),
                    }
                } else {
                    Ok(Rhs::Baseline(1.0))
                }
            }
            Some(Tok::Num(k, u)) => {
                self.pos += 1;
                if u.is_empty() && self.peek() == Some(&Tok::Star) {
                    self.pos += 1;
                    if self.keyword("baseline") {
                        self.pos += 1;
                        return Ok(Rhs::Baseline(k));
                    }
                    return self.err("expected `baseline` after `FACTOR *`".into());
                }
                let v = value_in_unit(metric, k, &u)
                    .map_err(|message| ParseError { at: start, message })?;
                Ok(Rhs::Value(v))
            }
            _ => self.err(format!(
                "expected a value for {} ({}), `baseline`{}",
                metric.name(),
                unit_hint(metric),
                if matches!(metric, Metric::SloAvailability | Metric::SloLatency) {
                    " or `target`"
                } else {
                    ""
                }
            )),
        }
    }
}

fn unit_hint(m: Metric) -> &'static str {
    match m {
        Metric::Latency(_) => "a duration like 500ms or 1s",
        Metric::RequestRate => "requests per second, like 10",
        _ => "a percentage like 1% or 99.9%",
    }
}

fn value_in_unit(m: Metric, v: f64, unit: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "expected {} for {}, found {v}{unit}",
            unit_hint(m),
            m.name()
        )
    };
    match m {
        _ if m.is_ratio() => match unit {
            "%" => Ok(v / 100.0),
            _ => Err(bad()),
        },
        Metric::Latency(_) => crate::slo::parse_duration(&format!("{v}{unit}"))
            .filter(|_| !unit.is_empty())
            .map(|ns| ns as f64)
            .ok_or_else(bad),
        _ => match unit {
            "" | "/s" => Ok(v),
            _ => Err(bad()),
        },
    }
}

/// Parses a condition; errors carry the byte offset in it.
fn parse_condition(s: &str) -> Result<Cond, ParseError> {
    let toks = tokenize(s)?;
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        len: s.len(),
    };
    let c = p.expr()?;
    if p.pos < toks.len() {
        return p.err("expected `and`, `or` or the end of the condition".into());
    }
    Ok(c)
}

impl AlertRules {
    /// Reads an alerts file (plain, or a ConfigMap with `data: alerts.yaml: |`).
    pub fn load(path: &Path) -> Result<Self, AnalyzeError> {
        Self::parse(&crate::config_file::read(path)?, path)
    }

    /// Parses an alerts file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AnalyzeError> {
        let (inner, dl, dc) = unwrap_configmap(text, path, "alerts.yaml")?;
        let raw: RawFile =
            serde_yaml_ng::from_str(&inner).map_err(|e| yaml_error(path, &e, dl, dc))?;
        let Some(raw) = raw.alerts else {
            return Err(config_error(
                path,
                Some(dl + 1),
                None,
                "expected an `alerts:` list of rules (name, condition, for, severity)".into(),
            ));
        };
        let mut rules = Vec::new();
        let mut from = 0;
        for (i, r) in raw.into_iter().enumerate() {
            let line0 = find_line(&inner, "condition", from);
            from = line0.unwrap_or(from);
            let line = line0.map(|l| l + dl);
            let _ = &r.description;
            if r.name.trim().is_empty() {
                return Err(config_error(
                    path,
                    line,
                    None,
                    format!("alerts[{i}]: expected a non-empty name"),
                ));
            }
            let condition = parse_condition(&r.condition).map_err(|e| {
                // The column of the offending token: where the value starts on its line.
                let col = line0
                    .and_then(|l| inner.lines().nth(l - 1))
                    .and_then(|l| l.find(r.condition.as_str()))
                    .map(|c| c + 1 + e.at + dc);
                config_error(
                    path,
                    line,
                    col,
                    format!(
                        "alerts[{i}] ({}): condition {:?}: {}",
                        r.name, r.condition, e.message
                    ),
                )
            })?;
            let severity = r.severity.unwrap_or_else(|| "warning".into());
            if !matches!(severity.as_str(), "critical" | "warning" | "info") {
                return Err(config_error(
                    path,
                    find_line(&inner, "severity", from.saturating_sub(1)).map(|l| l + dl),
                    None,
                    format!(
                        "alerts[{i}] ({}): expected severity critical, warning or info, found {severity:?}",
                        r.name
                    ),
                ));
            }
            rules.push(AlertRule {
                name: r.name,
                condition_text: r.condition,
                condition,
                for_ns: r.for_.map_or(0, |d| d.0),
                severity,
                service: r.service.map(Glob),
            });
        }
        Ok(AlertRules {
            source: path.display().to_string(),
            rules,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Baselines.

/// The value of every metric of every service over a baseline.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Baseline {
    /// What it is.
    pub source: String,
    values: BTreeMap<String, BaseValues>,
}

#[derive(Clone, Debug, PartialEq, Default)]
struct BaseValues {
    total: u64,
    bad: u64,
    lat_total: u64,
    lat_slow: u64,
    secs: f64,
    /// (quantile, ns).
    latency: Vec<(f64, f64)>,
}

const QUANTILES: [f64; 7] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0];

impl Baseline {
    fn from_range(source: String, data: &[ServiceData], tl: &Timeline, buckets: usize) -> Self {
        let nb = buckets.clamp(1, tl.buckets);
        let secs = (nb as u64 * tl.resolution_ns)
            .min(tl.end_ns - tl.start_ns)
            .max(1) as f64
            / 1e9;
        let mut values = BTreeMap::new();
        for d in data {
            let mut lats = d.lats[..d.lat_off[nb]].to_vec();
            let latency = QUANTILES
                .iter()
                .filter_map(|&q| quantile(&mut lats, q).map(|v| (q, v)))
                .collect();
            values.insert(
                d.name.clone(),
                BaseValues {
                    total: d.total[..nb].iter().sum(),
                    bad: d.bad[..nb].iter().sum(),
                    lat_total: d.lat_total[..nb].iter().sum(),
                    lat_slow: d.lat_slow[..nb].iter().sum(),
                    secs,
                    latency,
                },
            );
        }
        Baseline { source, values }
    }

    /// The capture's own first `share`.
    pub(crate) fn own(data: &[ServiceData], tl: &Timeline, share: f64) -> Self {
        let nb = ((tl.buckets as f64 * share).round() as usize).max(1);
        Self::from_range("own".into(), data, tl, nb)
    }

    /// A whole other analysis (`--baseline CAPTURE`), judged with the same objectives.
    pub fn from_analysis(a: &Analysis, config: &SloConfig, source: &str) -> Self {
        let span = a.window_end_ns.saturating_sub(a.window_start_ns).max(1);
        let resolution = (span / 60).max(1);
        let tl = Timeline {
            start_ns: a.window_start_ns,
            end_ns: a.window_end_ns.max(a.window_start_ns + 1),
            resolution_ns: resolution,
            buckets: span.div_ceil(resolution).max(1) as usize,
        };
        let data = accumulate(a, config, &tl);
        Self::from_range(source.to_string(), &data, &tl, tl.buckets)
    }

    fn value(&self, service: &str, m: Metric) -> Option<f64> {
        let v = self.values.get(service)?;
        metric_of(m, v.total, v.bad, v.lat_total, v.lat_slow, v.secs, |q| {
            v.latency.iter().find(|(x, _)| *x == q).map(|(_, ns)| *ns)
        })
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn metric_of(
    m: Metric,
    total: u64,
    bad: u64,
    lat_total: u64,
    lat_slow: u64,
    secs: f64,
    latency: impl FnOnce(f64) -> Option<f64>,
) -> Option<f64> {
    match m {
        Metric::SloAvailability => ratio(total - bad, total),
        Metric::SloLatency => ratio(lat_total - lat_slow, lat_total),
        Metric::ErrorRate => ratio(bad, total),
        Metric::RequestRate => Some(total as f64 / secs),
        Metric::Latency(q) => latency(q),
        Metric::MemoryUsage => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// Three-valued truth: a metric without data neither holds nor fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Truth {
    Yes,
    No,
    NoData,
}

struct ServiceEval<'a> {
    d: &'a ServiceData,
    tl: &'a Timeline,
    window: usize,
    baseline: &'a Baseline,
    cache: Vec<(String, Vec<Option<f64>>)>,
}

impl ServiceEval<'_> {
    fn series(&mut self, m: Metric) -> &[Option<f64>] {
        let key = m.name();
        if let Some(i) = self.cache.iter().position(|(k, _)| *k == key) {
            return &self.cache[i].1;
        }
        let d = self.d;
        let w = self.window;
        let n = self.tl.buckets;
        let sum = |v: &[u64], i: usize| -> u64 { v[(i + 1).saturating_sub(w)..=i].iter().sum() };
        let mut scratch = Vec::new();
        let vals: Vec<Option<f64>> = if m == Metric::MemoryUsage {
            // A level: its value at the end of the bucket.
            (0..n).map(|i| d.memory.get(i).copied().flatten()).collect()
        } else {
            (0..n)
                .map(|i| {
                    let a = (i + 1).saturating_sub(w);
                    let secs = ((i + 1 - a) as u64 * self.tl.resolution_ns) as f64 / 1e9;
                    metric_of(
                        m,
                        sum(&d.total, i),
                        sum(&d.bad, i),
                        sum(&d.lat_total, i),
                        sum(&d.lat_slow, i),
                        secs,
                        |q| {
                            scratch.clear();
                            scratch.extend_from_slice(&d.lats[d.lat_off[a]..d.lat_off[i + 1]]);
                            quantile(&mut scratch, q)
                        },
                    )
                })
                .collect()
        };
        self.cache.push((key, vals));
        let last = self.cache.len() - 1;
        &self.cache[last].1
    }

    fn target(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::SloAvailability => Some(self.d.availability / 100.0),
            Metric::SloLatency => Some(self.d.latency.percent / 100.0),
            _ => None,
        }
    }

    fn truth(&mut self, c: &Cond, i: usize) -> Truth {
        match c {
            Cond::Cmp(m, op, rhs) => {
                let Some(v) = self.series(*m)[i] else {
                    return Truth::NoData;
                };
                let r = match rhs {
                    Rhs::Value(x) => Some(*x),
                    Rhs::Target => self.target(*m),
                    Rhs::Baseline(k) => self.baseline.value(&self.d.name, *m).map(|b| b * k),
                };
                match r {
                    Some(r) if op.holds(v, r) => Truth::Yes,
                    Some(_) => Truth::No,
                    None => Truth::NoData,
                }
            }
            Cond::And(a, b) => match (self.truth(a, i), self.truth(b, i)) {
                (Truth::No, _) | (_, Truth::No) => Truth::No,
                (Truth::Yes, Truth::Yes) => Truth::Yes,
                _ => Truth::NoData,
            },
            Cond::Or(a, b) => match (self.truth(a, i), self.truth(b, i)) {
                (Truth::Yes, _) | (_, Truth::Yes) => Truth::Yes,
                (Truth::No, Truth::No) => Truth::No,
                _ => Truth::NoData,
            },
        }
    }
}

fn comparisons(c: &Cond, out: &mut Vec<(Metric, Op)>) {
    match c {
        Cond::Cmp(m, op, _) => out.push((*m, *op)),
        Cond::And(a, b) | Cond::Or(a, b) => {
            comparisons(a, out);
            comparisons(b, out);
        }
    }
}

/// Evaluates every rule for every service; `window` is the metrics' window in buckets,
/// `scale` scales `for:`.
pub(crate) fn evaluate(
    rules: &AlertRules,
    data: &[ServiceData],
    tl: &Timeline,
    window: usize,
    scale: f64,
    baseline: &Baseline,
) -> (Vec<AlertRuleResult>, Vec<AlertFiring>) {
    let mut results = Vec::new();
    let mut firings = Vec::new();
    let mut evals: Vec<ServiceEval<'_>> = data
        .iter()
        .map(|d| ServiceEval {
            d,
            tl,
            window,
            baseline,
            cache: Vec::new(),
        })
        .collect();
    for rule in &rules.rules {
        let for_ns = (rule.for_ns as f64 * scale).round() as u64;
        let mut cmps = Vec::new();
        comparisons(&rule.condition, &mut cmps);
        let mut any_data = false;
        let mut fired = false;
        for ev in evals.iter_mut() {
            if rule
                .service
                .as_ref()
                .is_some_and(|g| !g.matches(&ev.d.name))
            {
                continue;
            }
            let first = window.saturating_sub(1).min(tl.buckets - 1);
            let mut run_start: Option<usize> = None;
            let mut firing: Option<(usize, usize)> = None;
            let mut spans = Vec::new();
            for i in first..tl.buckets {
                let t = ev.truth(&rule.condition, i);
                any_data |= t != Truth::NoData;
                if t == Truth::Yes {
                    let a = *run_start.get_or_insert(i);
                    if firing.is_none() && tl.end_of(i) - tl.end_of(a) >= for_ns {
                        firing = Some((i, i));
                    }
                    if let Some(f) = &mut firing {
                        f.1 = i;
                    }
                } else {
                    run_start = None;
                    if let Some(f) = firing.take() {
                        spans.push(f);
                    }
                }
            }
            spans.extend(firing);
            for (a, b) in spans {
                fired = true;
                let mut value = String::new();
                for (m, op) in &cmps {
                    let s = ev.series(*m);
                    let vals = s[a..=b].iter().flatten().copied();
                    let worst = if op.high_is_bad() {
                        vals.fold(None, |acc: Option<f64>, v| {
                            Some(acc.map_or(v, |x| x.max(v)))
                        })
                    } else {
                        vals.fold(None, |acc: Option<f64>, v| {
                            Some(acc.map_or(v, |x| x.min(v)))
                        })
                    };
                    if let Some(w) = worst {
                        if !value.is_empty() {
                            value.push_str(", ");
                        }
                        let _ = write!(value, "{}={}", m.name(), m.format(w));
                    }
                }
                firings.push(AlertFiring {
                    name: rule.name.clone(),
                    severity: rule.severity.clone(),
                    service: ev.d.name.clone(),
                    start_ns: tl.end_of(a),
                    end_ns: tl.end_of(b),
                    value,
                });
            }
        }
        let memory = cmps.iter().any(|(m, _)| *m == Metric::MemoryUsage);
        let (status, note) = if fired {
            ("fired", String::new())
        } else if !any_data {
            (
                "no_data",
                if memory {
                    format!("container.memory.usage: {MEMORY_NOTE}")
                } else {
                    "no requests to judge (or no baseline for them)".to_string()
                },
            )
        } else {
            ("quiet", String::new())
        };
        results.push(AlertRuleResult {
            name: rule.name.clone(),
            severity: rule.severity.clone(),
            condition: rule.condition_text.clone(),
            for_s: rule.for_ns as f64 / 1e9,
            effective_for_s: for_ns as f64 / 1e9,
            status: status.into(),
            note,
        });
    }
    firings
        .sort_by(|x, y| (x.start_ns, &x.name, &x.service).cmp(&(y.start_ns, &y.name, &y.service)));
    (results, firings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(s: &str) -> Cond {
        parse_condition(s).unwrap_or_else(|e| panic!("{s}: {} at {}", e.message, e.at))
    }

    #[test]
    fn conditions_parse() {
        assert_eq!(
            cond("slo.availability < target"),
            Cond::Cmp(Metric::SloAvailability, Op::Lt, Rhs::Target)
        );
        assert_eq!(
            cond("error_rate > 1%"),
            Cond::Cmp(Metric::ErrorRate, Op::Gt, Rhs::Value(0.01))
        );
        assert_eq!(
            cond("latency.p99 > baseline * 2"),
            Cond::Cmp(Metric::Latency(0.99), Op::Gt, Rhs::Baseline(2.0))
        );
        assert_eq!(
            cond("latency.p95 >= 250ms"),
            Cond::Cmp(Metric::Latency(0.95), Op::Ge, Rhs::Value(250e6))
        );
        let c = cond("error_rate > 1% and request_rate > 5 or (latency.max > 1s)");
        match c {
            Cond::Or(a, _) => assert!(matches!(*a, Cond::And(_, _))),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cond("container.memory.usage > 90%"),
            Cond::Cmp(Metric::MemoryUsage, Op::Gt, Rhs::Value(0.9))
        );
    }

    fn err(s: &str) -> (usize, String) {
        let e = parse_condition(s).expect_err(s);
        (e.at, e.message)
    }

    #[test]
    fn bad_conditions_say_where_and_what() {
        let (at, m) = err("error_rat > 1%");
        assert_eq!(at, 0);
        assert!(
            m.contains("unknown metric") && m.contains("error_rate"),
            "{m}"
        );
        let (at, m) = err("error_rate > 1");
        assert_eq!(at, 13);
        assert!(m.contains("percentage"), "{m}");
        let (at, m) = err("latency.p99 > 500");
        assert_eq!(at, 14);
        assert!(m.contains("duration"), "{m}");
        let (_, m) = err("error_rate > target");
        assert!(m.contains("target"), "{m}");
        let (at, m) = err("error_rate > 1% error_rate");
        assert_eq!(at, 16);
        assert!(m.contains("`and`, `or`"), "{m}");
        let (_, m) = err("(error_rate > 1%");
        assert!(m.contains("`)`"), "{m}");
        let (_, m) = err("error_rate ~ 1%");
        assert!(m.contains("unexpected"), "{m}");
    }

    #[test]
    fn rules_files_plain_and_configmap() {
        let plain = "alerts:\n  - name: SLO Breach\n    condition: slo.availability < target\n    for: 5m\n    severity: critical\n";
        let r = AlertRules::parse(plain, Path::new("a.yaml")).expect("plain");
        assert_eq!(r.rules.len(), 1);
        assert_eq!(r.rules[0].for_ns, 300_000_000_000);
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coroot-alerts\ndata:\n  alerts.yaml: |\n    alerts:\n      - name: High Error Rate\n        condition: error_rate > 1%\n        for: 5m\n        severity: warning\n";
        let r2 = AlertRules::parse(cm, Path::new("cm.yaml")).expect("configmap");
        assert_eq!(r2.rules[0].name, "High Error Rate");
        // A malformed condition inside the ConfigMap: the file's line and column.
        let bad = cm.replace("error_rate > 1%", "error_rate >> 1%");
        let e = AlertRules::parse(&bad, Path::new("cm.yaml"))
            .expect_err("malformed")
            .to_string();
        assert!(e.starts_with("cm.yaml:9:"), "{e}");
        assert!(
            e.contains("High Error Rate") && e.contains("expected"),
            "{e}"
        );
        let col: usize = e
            .split(':')
            .nth(2)
            .and_then(|c| c.parse().ok())
            .expect("a column");
        // `        condition: error_rate >> 1%`: the second `>` is at column 32.
        assert_eq!(col, 32, "{e}");
        let e = AlertRules::parse(
            "alerts:\n  - name: x\n    condition: error_rate > 1%\n    fro: 5m\n",
            Path::new("a.yaml"),
        )
        .expect_err("unknown key")
        .to_string();
        assert!(
            e.starts_with("a.yaml:4:") && e.contains("unknown field `fro`"),
            "{e}"
        );
        let e = AlertRules::parse(
            "alerts:\n  - name: x\n    condition: error_rate > 1%\n    severity: loud\n",
            Path::new("a.yaml"),
        )
        .expect_err("bad severity")
        .to_string();
        assert!(
            e.starts_with("a.yaml:4") && e.contains("critical, warning or info"),
            "{e}"
        );
    }
}
