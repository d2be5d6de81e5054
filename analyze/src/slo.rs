//! Service level objectives, error budgets and burn-rate breaches.
//!
//! Every service that was called has two objectives, with Coroot's defaults when no file says
//! otherwise: **availability** (99% of the requests its clients made succeed) and **latency**
//! (99% of the answered requests faster than 500 ms). Availability counts what the clients
//! saw: a 5xx, a protocol error, no response, and a connection refused or timed out are
//! failures (the request table's `error`, failed connects included, as `calls` counts them);
//! latency is the client side's when the client was captured, else the server side's.
//!
//! The objectives file (`retrace analyze --slo FILE.yaml`) is the seed's, plain or as the
//! ConfigMap that carries it (`data: config.yaml: |`):
//!
//! ```yaml
//! slo:
//!   availability:
//!     default: 99.9                 # percent of requests that succeed
//!     overrides:
//!       - service: "payment-*"      # a glob (`*`, `?`) on the service name
//!         target: 99.99
//!       - service: api              # requests of one endpoint ("METHOD route") left out
//!         endpoint: "GET /health"
//!         exclude: true
//!   latency:
//!     default:
//!       p99: 100ms                  # p50 p75 p90 p95 p99 p999: that share faster than this
//!     overrides:
//!       - service: "api-gateway"
//!         p99: 50ms
//!       - service: api              # a long-polling route judged against its own threshold
//!         endpoint: "GET /poll*"
//!         p99: 30s
//! ```
//!
//! The first matching override wins. An override with `endpoint` applies to that endpoint's
//! requests inside the service's objective (its own latency threshold, or `exclude: true`).
//!
//! **Burn rates** follow the SRE workbook's multi-window, multi-burn-rate alerts (as Coroot):
//! a breach needs the burn rate (failed share / (1 - target)) above the factor over both a long
//! and a short window: 1 h & 5 m above 14.4, 6 h & 30 m above 6, 1 d & 2 h above 3, 3 d & 6 h
//! above 1, for a 30-day budget period. A capture shorter than an hour scales every window and
//! the period by `capture / 1 h` (ratios kept: a 60 s capture uses 60 s & 5 s, a 12 h period);
//! pairs whose long window is longer than the capture are not used. The windows used are in
//! the report. A breach interval is the run of time buckets (a fifth of the short window
//! each) burning above the factor, gaps shorter than the short window bridged, in which the
//! two-window condition held (with at least [`MIN_BAD_IN_SHORT_WINDOW`] failures in the short
//! window): its start and end are the outage's, not the alert's detection and reset delays.
//! The budget is counted in requests: `budget_consumed` is the breach's failures over the
//! failures the period allows at the capture's traffic; the period is taken to start with the
//! capture.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::Map;
use crate::model::{Analysis, NO_LATENCY};
use crate::AnalyzeError;

/// Default availability target, percent (Coroot's).
pub const DEFAULT_AVAILABILITY_PERCENT: f64 = 99.0;
/// Default latency threshold, ms (Coroot's: 99% of requests faster than 500 ms).
pub const DEFAULT_LATENCY_MS: f64 = 500.0;
/// Default share of requests that must be faster than the threshold, percent.
pub const DEFAULT_LATENCY_PERCENT: f64 = 99.0;
/// A short window with fewer failures than this never breaches: one or two failed requests
/// of a quiet service are not an outage.
pub const MIN_BAD_IN_SHORT_WINDOW: u64 = 3;
/// The baseline of alert rules (`baseline`) without `--baseline`: this first share of the
/// capture.
pub const OWN_BASELINE_SHARE: f64 = 0.25;

const S: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * S;
const HOUR: u64 = 3600 * S;
/// The SRE workbook's budget period.
const PERIOD: u64 = 30 * 24 * HOUR;

/// The SRE workbook's window pairs: (long, short, burn-rate factor, severity).
const PAIRS: [(u64, u64, f64, &str); 4] = [
    (HOUR, 5 * MINUTE, 14.4, "page"),
    (6 * HOUR, 30 * MINUTE, 6.0, "page"),
    (24 * HOUR, 2 * HOUR, 3.0, "ticket"),
    (72 * HOUR, 6 * HOUR, 1.0, "ticket"),
];

// ---------------------------------------------------------------------------------------------
// The objectives file.

/// A glob on names: `*` any run of characters, `?` any one character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(pub String);

impl Glob {
    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        glob_match(self.0.as_bytes(), s.as_bytes())
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    // Iterative matching with one backtrack point (the last `*`).
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A percentage in (0, 100): `99.9` or `"99.9%"`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Percent(f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WHAT: &str = "a percentage between 0 and 100 (99.9 or \"99.9%\")";
        fn check<E: serde::de::Error>(v: f64) -> Result<Percent, E> {
            if v > 0.0 && v < 100.0 {
                Ok(Percent(v))
            } else {
                Err(E::custom(format!("expected {WHAT}, found {v}")))
            }
        }
        impl serde::de::Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(WHAT)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Percent, E> {
                check(v)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Percent, E> {
                check(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Percent, E> {
                check(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Percent, E> {
                let num = t.trim().trim_end_matches('%').trim();
                let v: f64 = num
                    .parse()
                    .map_err(|_| E::custom(format!("expected {WHAT}, found {t:?}")))?;
                check(v)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in ns: `50ms`, `5s`, `250us`, `1m`, `1.5s`; a bare number is milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DurationNs(pub u64);

/// Parses `50ms`, `5s`, `250us`, `1m`, `2h`, `1.5s` into ns.
pub(crate) fn parse_duration(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mul = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let ns = v * mul;
    (0.0..1e19).contains(&ns).then_some(ns.round() as u64)
}

impl<'de> Deserialize<'de> for DurationNs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WHAT: &str = "a duration like 50ms, 5s or 1m (a bare number is milliseconds)";
        impl serde::de::Visitor<'_> for V {
            type Value = DurationNs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(WHAT)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationNs, E> {
                if v > 0.0 && v.is_finite() && v < 1e12 {
                    Ok(DurationNs((v * 1e6).round() as u64))
                } else {
                    Err(E::custom(format!("expected {WHAT}, found {v}")))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationNs, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationNs, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<DurationNs, E> {
                match parse_duration(t) {
                    Some(ns) if ns > 0 => Ok(DurationNs(ns)),
                    _ => Err(E::custom(format!("expected {WHAT}, found {t:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Debug)]
struct RawFile {
    slo: Option<RawSlo>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    availability: Option<RawAvailability>,
    latency: Option<RawLatency>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAvailability {
    default: Option<Percent>,
    #[serde(default)]
    overrides: Vec<RawAvailabilityOverride>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAvailabilityOverride {
    service: String,
    endpoint: Option<String>,
    target: Option<Percent>,
    exclude: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    default: Option<RawPercentiles>,
    #[serde(default)]
    overrides: Vec<RawLatencyOverride>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawPercentiles {
    p50: Option<DurationNs>,
    p75: Option<DurationNs>,
    p90: Option<DurationNs>,
    p95: Option<DurationNs>,
    p99: Option<DurationNs>,
    p999: Option<DurationNs>,
}

impl RawPercentiles {
    /// The one percentile given: (percent, threshold), `Err` when several, `None` when none.
    fn one(&self) -> Result<Option<LatencyTarget>, String> {
        let all = [
            (50.0, self.p50),
            (75.0, self.p75),
            (90.0, self.p90),
            (95.0, self.p95),
            (99.0, self.p99),
            (99.9, self.p999),
        ];
        let given: Vec<LatencyTarget> = all
            .iter()
            .filter_map(|(p, d)| {
                d.map(|d| LatencyTarget {
                    percent: *p,
                    threshold_ns: d.0,
                })
            })
            .collect();
        match given.len() {
            0 => Ok(None),
            1 => Ok(Some(given[0])),
            _ => Err(
                "expected one percentile (one of p50, p75, p90, p95, p99, p999), found several"
                    .into(),
            ),
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawLatencyOverride {
    service: String,
    endpoint: Option<String>,
    exclude: Option<bool>,
    p50: Option<DurationNs>,
    p75: Option<DurationNs>,
    p90: Option<DurationNs>,
    p95: Option<DurationNs>,
    p99: Option<DurationNs>,
    p999: Option<DurationNs>,
}

/// A latency objective: `percent` of the answered requests faster than `threshold_ns`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyTarget {
    /// Share of requests that must be faster, percent.
    pub percent: f64,
    /// The threshold, ns.
    pub threshold_ns: u64,
}

/// One override of the objectives file.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// Services it applies to.
    pub service: Glob,
    /// Endpoints (`METHOD route`) it applies to; `None`: the whole service.
    pub endpoint: Option<Glob>,
    /// Availability target, percent (availability overrides).
    pub target: Option<f64>,
    /// Latency objective (latency overrides).
    pub latency: Option<LatencyTarget>,
    /// Leave the matching requests out of the objective.
    pub exclude: bool,
}

/// The objectives: defaults and overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct SloConfig {
    /// Where it came from (`defaults` or the file).
    pub source: String,
    /// Availability target, percent.
    pub availability: f64,
    /// Availability overrides, first match wins.
    pub availability_overrides: Vec<Override>,
    /// Latency objective.
    pub latency: LatencyTarget,
    /// Latency overrides, first match wins.
    pub latency_overrides: Vec<Override>,
}

impl Default for SloConfig {
    fn default() -> Self {
        Self {
            source: "defaults".into(),
            availability: DEFAULT_AVAILABILITY_PERCENT,
            availability_overrides: Vec::new(),
            latency: LatencyTarget {
                percent: DEFAULT_LATENCY_PERCENT,
                threshold_ns: (DEFAULT_LATENCY_MS * 1e6) as u64,
            },
            latency_overrides: Vec::new(),
        }
    }
}

impl SloConfig {
    /// Reads an objectives file (plain, or a ConfigMap with `data: config.yaml: |`).
    pub fn load(path: &Path) -> Result<Self, AnalyzeError> {
        Self::parse(&crate::config_file::read(path)?, path)
    }

    /// Parses an objectives file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AnalyzeError> {
        let (inner, dl, dc) = crate::config_file::unwrap_configmap(text, path, "config.yaml")?;
        let raw: RawFile = serde_yaml_ng::from_str(&inner)
            .map_err(|e| crate::config_file::yaml_error(path, &e, dl, dc))?;
        let Some(slo) = raw.slo else {
            return Err(crate::config_file::error(
                path,
                Some(dl + 1),
                None,
                "expected a `slo:` section (with `availability:` and/or `latency:`)".into(),
            ));
        };
        let line_of = |key: &str, nth: usize| -> Option<usize> {
            let mut from = 0;
            let mut found = None;
            for _ in 0..=nth {
                found = crate::config_file::find_line(&inner, key, from);
                from = found?;
            }
            found.map(|l| l + dl)
        };
        let mut cfg = SloConfig {
            source: path.display().to_string(),
            ..SloConfig::default()
        };
        let mut service_items = 0usize;
        if let Some(a) = slo.availability {
            if let Some(p) = a.default {
                cfg.availability = p.0;
            }
            for o in a.overrides {
                let line = line_of("service", service_items);
                service_items += 1;
                let exclude = o.exclude.unwrap_or(false);
                if o.target.is_none() && !exclude {
                    return Err(crate::config_file::error(
                        path,
                        line,
                        None,
                        format!(
                            "availability override for {:?}: expected `target:` or `exclude: true`",
                            o.service
                        ),
                    ));
                }
                if o.endpoint.is_some() && o.target.is_some() {
                    return Err(crate::config_file::error(
                        path,
                        line,
                        None,
                        format!(
                            "availability override for {:?}: a target is per service; an \
                             `endpoint:` override can only `exclude: true` its requests",
                            o.service
                        ),
                    ));
                }
                cfg.availability_overrides.push(Override {
                    service: Glob(o.service),
                    endpoint: o.endpoint.map(Glob),
                    target: o.target.map(|p| p.0),
                    latency: None,
                    exclude,
                });
            }
        }
        if let Some(l) = slo.latency {
            if let Some(d) = l.default {
                match d.one() {
                    Ok(Some(t)) => cfg.latency = t,
                    Ok(None) => {
                        return Err(crate::config_file::error(
                            path,
                            line_of("default", 0),
                            None,
                            "latency default: expected a percentile and its threshold, like \
                             `p99: 500ms`"
                                .into(),
                        ))
                    }
                    Err(m) => {
                        return Err(crate::config_file::error(
                            path,
                            line_of("default", 0),
                            None,
                            format!("latency default: {m}"),
                        ))
                    }
                }
            }
            for o in l.overrides {
                let line = line_of("service", service_items);
                service_items += 1;
                let p = RawPercentiles {
                    p50: o.p50,
                    p75: o.p75,
                    p90: o.p90,
                    p95: o.p95,
                    p99: o.p99,
                    p999: o.p999,
                };
                let target = p.one().map_err(|m| {
                    crate::config_file::error(
                        path,
                        line,
                        None,
                        format!("latency override for {:?}: {m}", o.service),
                    )
                })?;
                let exclude = o.exclude.unwrap_or(false);
                if target.is_none() && !exclude {
                    return Err(crate::config_file::error(
                        path,
                        line,
                        None,
                        format!(
                            "latency override for {:?}: expected a percentile and its \
                             threshold (`p99: 50ms`) or `exclude: true`",
                            o.service
                        ),
                    ));
                }
                cfg.latency_overrides.push(Override {
                    service: Glob(o.service),
                    endpoint: o.endpoint.map(Glob),
                    target: None,
                    latency: target,
                    exclude,
                });
            }
        }
        Ok(cfg)
    }

    /// The availability target of `service`, percent.
    pub fn availability_of(&self, service: &str) -> f64 {
        self.availability_overrides
            .iter()
            .filter(|o| o.endpoint.is_none() && o.service.matches(service))
            .find_map(|o| o.target)
            .unwrap_or(self.availability)
    }

    /// The latency objective of `service`.
    pub fn latency_of(&self, service: &str) -> LatencyTarget {
        self.latency_overrides
            .iter()
            .filter(|o| o.endpoint.is_none() && o.service.matches(service))
            .find_map(|o| o.latency)
            .unwrap_or(self.latency)
    }

    /// Whether a whole service is left out of an objective.
    fn excluded(overrides: &[Override], service: &str) -> bool {
        overrides
            .iter()
            .filter(|o| o.endpoint.is_none() && o.service.matches(service))
            .find(|o| o.exclude || o.target.is_some() || o.latency.is_some())
            .is_some_and(|o| o.exclude)
    }
}

// ---------------------------------------------------------------------------------------------
// The results.

/// How an objective fared over the capture.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SloStatus {
    /// Met over the capture and never breached.
    Met,
    /// Met over the capture, but the budget burned fast enough for a breach at some point.
    Breached,
    /// Not met over the capture (the good share below the target).
    Missed,
    /// No request to judge.
    NoData,
}

impl SloStatus {
    /// `met`, `breached`, `missed`, `no_data`.
    pub fn name(self) -> &'static str {
        match self {
            SloStatus::Met => "met",
            SloStatus::Breached => "breached",
            SloStatus::Missed => "missed",
            SloStatus::NoData => "no_data",
        }
    }
}

impl fmt::Display for SloStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One objective of one service over the capture (a row of slo.csv).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ObjectiveResult {
    /// Service.
    pub service: String,
    /// `availability` or `latency`.
    pub objective: String,
    /// Share of requests that must be good, percent.
    pub target: f64,
    /// Latency threshold, ms (latency objectives).
    pub threshold_ms: Option<f64>,
    /// Requests judged.
    pub requests: u64,
    /// Of which bad (failed, or slower than the threshold).
    pub bad: u64,
    /// Share of good requests, percent; none without requests.
    pub actual: Option<f64>,
    /// Share of the period's error budget left at the end of the capture (negative when
    /// overspent).
    pub budget_remaining: f64,
    /// Burn rate over the last long window of the capture.
    pub current_burn_rate: f64,
    /// Seconds until the budget is spent at the current burn rate; none when not burning.
    pub budget_remaining_s: Option<f64>,
    /// Status.
    pub status: SloStatus,
}

/// One breach: a time the budget burned faster than a window pair allows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Breach {
    /// Service.
    pub service: String,
    /// `availability` or `latency`.
    pub objective: String,
    /// First bucket burning above the factor, wall ns.
    pub start_ns: u64,
    /// End of the last bucket burning above the factor, wall ns.
    pub end_ns: u64,
    /// When the two-window condition first held, wall ns.
    pub detected_ns: u64,
    /// Highest short-window burn rate while the condition held.
    pub peak_burn_rate: f64,
    /// Share of the period's error budget the breach consumed.
    pub budget_consumed: f64,
    /// `page` or `ticket`.
    pub severity: String,
    /// The window pair that detected it: `60s/5s>14.4`.
    pub windows: String,
}

/// One burn-rate window pair, as used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BurnWindow {
    /// Long window, seconds.
    pub long_s: f64,
    /// Short window, seconds.
    pub short_s: f64,
    /// Burn-rate factor both must exceed.
    pub factor: f64,
    /// `page` or `ticket`.
    pub severity: String,
    /// The SRE workbook's pair it was scaled from: `1h/5m`.
    pub from: String,
}

/// A service's requests over time and its latency distribution, for the SLO panel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SloSeries {
    /// Service.
    pub service: String,
    /// Calls per bucket (of `SloReport::resolution_ns`).
    pub requests: Vec<u64>,
    /// Failed calls per bucket.
    pub errors: Vec<u64>,
    /// Latency percentiles over the capture, ms: p50, p90, p95, p99, max.
    pub latency_ms: [Option<f64>; 5],
}

/// What an alert rule did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AlertRuleResult {
    /// Rule name.
    pub name: String,
    /// Severity.
    pub severity: String,
    /// Its condition as written.
    pub condition: String,
    /// `for:` as written, seconds.
    pub for_s: f64,
    /// `for:` as evaluated (scaled like the windows), seconds.
    pub effective_for_s: f64,
    /// `fired`, `quiet` or `no_data`.
    pub status: String,
    /// Why, when there was no data.
    pub note: String,
}

/// One firing of an alert rule for one service (a row of alerts.csv).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AlertFiring {
    /// Rule name.
    pub name: String,
    /// Severity.
    pub severity: String,
    /// Service.
    pub service: String,
    /// When it started firing (the condition held for `for:`), wall ns.
    pub start_ns: u64,
    /// When the condition last held, wall ns.
    pub end_ns: u64,
    /// The worst value of the condition's metrics while firing.
    pub value: String,
}

/// Objectives, breaches and alerts of an analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SloReport {
    /// Where the objectives came from.
    pub source: String,
    /// Window scale: capture / 1 h, at most 1.
    pub scale: f64,
    /// The budget period, seconds (30 days × scale).
    pub period_s: f64,
    /// Width of a time bucket, ns (a fifth of the shortest window).
    pub resolution_ns: u64,
    /// Window pairs used.
    pub windows: Vec<BurnWindow>,
    /// What `baseline` in alert rules means.
    pub baseline: String,
    /// Every objective of every called service (sorted by service, objective).
    pub objectives: Vec<ObjectiveResult>,
    /// Breaches in time order.
    pub breaches: Vec<Breach>,
    /// Alert rules and what they did.
    pub alert_rules: Vec<AlertRuleResult>,
    /// Alert firings in time order.
    pub alerts: Vec<AlertFiring>,
    /// Per-service series for the panel; not in summary.json.
    #[serde(skip)]
    pub series: Vec<SloSeries>,
}

impl SloReport {
    /// The objective `objective` of `service`.
    pub fn objective(&self, service: &str, objective: &str) -> Option<&ObjectiveResult> {
        self.objectives
            .iter()
            .find(|o| o.service == service && o.objective == objective)
    }
}

// ---------------------------------------------------------------------------------------------
// Accumulation: one pass over the request table.

/// What one service's calls looked like, bucket by bucket.
pub(crate) struct ServiceData {
    pub name: String,
    pub availability: f64,
    pub latency: LatencyTarget,
    /// Calls counted for availability, per bucket.
    pub total: Vec<u64>,
    /// Failed ones.
    pub bad: Vec<u64>,
    /// Answered calls counted for latency, per bucket.
    pub lat_total: Vec<u64>,
    /// Slower than their threshold.
    pub lat_slow: Vec<u64>,
    /// Latencies (ns) of the answered calls, in time order.
    pub lats: Vec<u64>,
    /// `lats[lat_off[b]..lat_off[b + 1]]` are bucket `b`'s.
    pub lat_off: Vec<usize>,
    /// cgroup memory usage at the end of each bucket, fraction of the limit (profiles).
    pub memory: Vec<Option<f64>>,
}

/// The buckets of an accumulation.
pub(crate) struct Timeline {
    pub start_ns: u64,
    pub end_ns: u64,
    pub resolution_ns: u64,
    pub buckets: usize,
}

impl Timeline {
    fn new(start_ns: u64, end_ns: u64, resolution_ns: u64) -> Self {
        let span = end_ns.saturating_sub(start_ns);
        let buckets = span.div_ceil(resolution_ns).max(1) as usize;
        Self {
            start_ns,
            end_ns,
            resolution_ns,
            buckets,
        }
    }

    /// Start of bucket `b`.
    pub fn at(&self, b: usize) -> u64 {
        self.start_ns + b as u64 * self.resolution_ns
    }

    /// End of bucket `b` (the window's end at most).
    pub fn end_of(&self, b: usize) -> u64 {
        (self.at(b) + self.resolution_ns).min(self.end_ns.max(self.at(b)))
    }
}

/// Per-endpoint rules of one service, resolved once per (method, route) ids.
struct EndpointRules<'a> {
    avail: Vec<&'a Override>,
    lat: Vec<&'a Override>,
    /// (method, route) → (excluded from availability, excluded from latency, threshold ns).
    cache: Map<(u32, u32), (bool, bool, u64)>,
}

pub(crate) fn accumulate(a: &Analysis, cfg: &SloConfig, tl: &Timeline) -> Vec<ServiceData> {
    let table = &a.requests;
    let nb = tl.buckets;
    let mut slot_of: Vec<u32> = vec![u32::MAX; table.strings.len()];
    let mut out: Vec<ServiceData> = Vec::new();
    let mut rules: Vec<Option<EndpointRules<'_>>> = Vec::new();
    let mut whole: Vec<(bool, bool)> = Vec::new();
    for r in &table.rows {
        let server = table.ends_of(r).server;
        let Some(&slot) = slot_of.get(server as usize) else {
            continue;
        };
        let slot = if slot == u32::MAX {
            let name = table.string(server).to_string();
            let s = out.len() as u32;
            slot_of[server as usize] = s;
            let avail: Vec<&Override> = cfg
                .availability_overrides
                .iter()
                .filter(|o| o.endpoint.is_some() && o.service.matches(&name))
                .collect();
            let lat: Vec<&Override> = cfg
                .latency_overrides
                .iter()
                .filter(|o| o.endpoint.is_some() && o.service.matches(&name))
                .collect();
            rules.push(
                (!avail.is_empty() || !lat.is_empty()).then(|| EndpointRules {
                    avail,
                    lat,
                    cache: Map::default(),
                }),
            );
            whole.push((
                SloConfig::excluded(&cfg.availability_overrides, &name),
                SloConfig::excluded(&cfg.latency_overrides, &name),
            ));
            out.push(ServiceData {
                availability: cfg.availability_of(&name),
                latency: cfg.latency_of(&name),
                name,
                total: vec![0; nb],
                bad: vec![0; nb],
                lat_total: vec![0; nb],
                lat_slow: vec![0; nb],
                lats: Vec::new(),
                lat_off: vec![0; nb + 1],
                memory: Vec::new(),
            });
            s
        } else {
            slot
        };
        let si = slot as usize;
        let d = &mut out[si];
        let b = ((r.ts_ns.saturating_sub(tl.start_ns)) / tl.resolution_ns) as usize;
        let b = b.min(nb - 1);
        let (mut skip_avail, mut skip_lat) = whole[si];
        let mut threshold = d.latency.threshold_ns;
        if let Some(er) = &mut rules[si] {
            let key = (r.method, r.route);
            let (xa, xl, th) = *er.cache.entry(key).or_insert_with(|| {
                let m = table.string(r.method);
                let rt = table.string(r.route);
                let ep = if rt.is_empty() || m == rt {
                    m.to_string()
                } else if m.is_empty() {
                    rt.to_string()
                } else {
                    format!("{m} {rt}")
                };
                let hit = |o: &&&Override| o.endpoint.as_ref().is_some_and(|g| g.matches(&ep));
                let xa = er.avail.iter().find(hit).is_some_and(|o| o.exclude);
                let lo = er.lat.iter().find(hit);
                let xl = lo.is_some_and(|o| o.exclude);
                let th = lo
                    .and_then(|o| o.latency)
                    .map_or(threshold, |t| t.threshold_ns);
                (xa, xl, th)
            });
            skip_avail |= xa;
            skip_lat |= xl;
            threshold = th;
        }
        if !skip_avail {
            d.total[b] += 1;
            d.bad[b] += u64::from(r.error());
        }
        if !skip_lat && r.latency_ns != NO_LATENCY {
            d.lat_total[b] += 1;
            d.lat_slow[b] += u64::from(r.latency_ns > threshold);
            d.lats.push(r.latency_ns);
            d.lat_off[b + 1] += 1;
        }
    }
    for d in &mut out {
        for b in 0..nb {
            d.lat_off[b + 1] += d.lat_off[b];
        }
    }
    memory_usage(a, cfg, tl, &mut out);
    out.sort_by(|x, y| x.name.cmp(&y.name));
    out
}

/// cgroup memory usage per bucket for every service with a limited cgroup in the profiles
/// (services that served nothing get a series of their own).
fn memory_usage(a: &Analysis, cfg: &SloConfig, tl: &Timeline, out: &mut Vec<ServiceData>) {
    let nb = tl.buckets;
    let services: std::collections::BTreeSet<&str> = a
        .profiles
        .cgroups
        .iter()
        .filter(|c| c.limit.is_some())
        .flat_map(|c| c.services.iter().map(String::as_str))
        .collect();
    for name in services {
        let i = match out.iter().position(|d| d.name == name) {
            Some(i) => i,
            None => {
                out.push(ServiceData {
                    availability: cfg.availability_of(name),
                    latency: cfg.latency_of(name),
                    name: name.to_string(),
                    total: vec![0; nb],
                    bad: vec![0; nb],
                    lat_total: vec![0; nb],
                    lat_slow: vec![0; nb],
                    lats: Vec::new(),
                    lat_off: vec![0; nb + 1],
                    memory: Vec::new(),
                });
                out.len() - 1
            }
        };
        out[i].memory = (0..nb)
            .map(|b| a.profiles.memory_usage_share(name, tl.end_of(b)))
            .collect();
    }
}

/// The `q` quantile (0..=1) of `v` (reordered), linear interpolation as the analyzer's
/// percentiles; ns.
pub(crate) fn quantile(v: &mut [u64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (pos.ceil() as usize).min(v.len() - 1);
    let (_, &mut a, right) = v.select_nth_unstable(lo);
    let b = if hi > lo {
        right.iter().copied().min().unwrap_or(a)
    } else {
        a
    };
    Some(a as f64 + (b as f64 - a as f64) * (pos - lo as f64))
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// Everything an SLO evaluation needs beyond the analysis.
#[derive(Clone, Debug, Default)]
pub struct SloOptions {
    /// Objectives.
    pub config: SloConfig,
    /// Alert rules.
    pub rules: crate::alerts::AlertRules,
    /// The baseline for `baseline` in rules, from another capture (`--baseline`).
    pub baseline: Option<crate::alerts::Baseline>,
}

/// A window pair as used: (long ns, short ns, factor, severity, the pair it was scaled from).
type Pair = (u64, u64, f64, &'static str, String);

/// The pairs used for a capture of `span_ns` and the scale.
fn scaled_pairs(span_ns: u64) -> (f64, Vec<Pair>) {
    let scale = (span_ns as f64 / HOUR as f64).min(1.0);
    let mut v = Vec::new();
    for (i, (l, s, f, sev)) in PAIRS.iter().enumerate() {
        let long = ((*l as f64) * scale).round() as u64;
        let short = ((*s as f64) * scale).round() as u64;
        if i > 0 && long > span_ns {
            break;
        }
        v.push((
            long.max(1),
            short.max(1),
            *f,
            *sev,
            format!("{}/{}", human_window(*l), human_window(*s)),
        ));
    }
    (scale, v)
}

fn human_window(ns: u64) -> String {
    if ns % (24 * HOUR) == 0 {
        format!("{}d", ns / (24 * HOUR))
    } else if ns % HOUR == 0 {
        format!("{}h", ns / HOUR)
    } else {
        format!("{}m", ns / MINUTE)
    }
}

/// A duration for windows: `60s`, `5s`, `1.25s`, `5m`.
pub(crate) fn short_duration(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if ns % HOUR == 0 {
        format!("{}h", ns / HOUR)
    } else if ns % MINUTE == 0 && ns >= MINUTE * 2 {
        format!("{}m", ns / MINUTE)
    } else if (s - s.round()).abs() < 1e-9 {
        format!("{}s", s.round())
    } else {
        format!("{s:.2}s")
    }
}

/// Sums of `v` over buckets `[a, b)`.
struct Prefix(Vec<u64>);

impl Prefix {
    fn new(v: &[u64]) -> Self {
        let mut p = Vec::with_capacity(v.len() + 1);
        p.push(0);
        let mut acc = 0;
        for x in v {
            acc += x;
            p.push(acc);
        }
        Self(p)
    }
    /// Sum over the `w` buckets ending with `i` (fewer at the start).
    fn window(&self, i: usize, w: usize) -> u64 {
        let a = (i + 1).saturating_sub(w);
        self.0[i + 1] - self.0[a]
    }
    fn range(&self, a: usize, b: usize) -> u64 {
        self.0[b] - self.0[a]
    }
}

/// Evaluates objectives, breaches and alert rules over an analysis.
pub fn evaluate(a: &Analysis, opts: &SloOptions) -> SloReport {
    let span = a.window_end_ns.saturating_sub(a.window_start_ns).max(1);
    let (scale, pairs) = scaled_pairs(span);
    let resolution = (pairs[0].1 / 5).max(1);
    let period = ((PERIOD as f64) * scale).round().max(1.0);
    let tl = Timeline::new(a.window_start_ns, a.window_end_ns, resolution);
    let data = accumulate(a, &opts.config, &tl);
    let windows: Vec<BurnWindow> = pairs
        .iter()
        .map(|(l, s, f, sev, from)| BurnWindow {
            long_s: *l as f64 / 1e9,
            short_s: *s as f64 / 1e9,
            factor: *f,
            severity: sev.to_string(),
            from: from.clone(),
        })
        .collect();
    let mut report = SloReport {
        source: opts.config.source.clone(),
        scale: round6(scale),
        period_s: round6(period / 1e9),
        resolution_ns: resolution,
        windows,
        ..Default::default()
    };
    let per_bucket = |ns: u64| (ns / resolution).max(1) as usize;
    for d in &data {
        for (objective, total, bad, target) in [
            ("availability", &d.total, &d.bad, d.availability),
            ("latency", &d.lat_total, &d.lat_slow, d.latency.percent),
        ] {
            let eps = 1.0 - target / 100.0;
            let pt = Prefix::new(total);
            let pb = Prefix::new(bad);
            let n_total = pt.range(0, tl.buckets);
            let n_bad = pb.range(0, tl.buckets);
            let burn = |bad: u64, total: u64| {
                if total == 0 {
                    0.0
                } else {
                    bad as f64 / total as f64 / eps
                }
            };
            // The budget of the period in requests, at the capture's traffic.
            let budget = eps * n_total as f64 * period / span as f64;
            let consumed = |bad: u64| {
                if budget > 0.0 {
                    bad as f64 / budget
                } else {
                    0.0
                }
            };
            let mut found: Vec<(usize, usize, usize, usize, f64)> = Vec::new();
            for (pi, (l, s, f, _, _)) in pairs.iter().enumerate() {
                let (wl, ws) = (per_bucket(*l), per_bucket(*s));
                let fires = |i: usize| {
                    i + 1 >= ws
                        && pb.window(i, ws) >= MIN_BAD_IN_SHORT_WINDOW
                        && burn(pb.window(i, wl), pt.window(i, wl)) >= *f
                        && burn(pb.window(i, ws), pt.window(i, ws)) >= *f
                };
                let hot = |b: usize| total[b] > 0 && burn(bad[b], total[b]) >= *f;
                // Runs of hot buckets, gaps shorter than the short window bridged.
                let mut b = 0;
                while b < tl.buckets {
                    if !hot(b) {
                        b += 1;
                        continue;
                    }
                    let first = b;
                    let mut last = b;
                    let mut k = b + 1;
                    while k < tl.buckets && k - last <= ws {
                        if hot(k) {
                            last = k;
                        }
                        k += 1;
                    }
                    let upto = (last + ws).min(tl.buckets);
                    let firing: Vec<usize> = (first..upto).filter(|&i| fires(i)).collect();
                    if let Some(&det) = firing.first() {
                        let peak = firing
                            .iter()
                            .map(|&i| burn(pb.window(i, ws), pt.window(i, ws)))
                            .fold(0.0, f64::max);
                        found.push((first, last, det, pi, peak));
                    }
                    b = last + 1;
                }
            }
            // One breach per time: overlapping ones of several pairs merged (the first pair's
            // severity wins).
            found.sort_by_key(|x| (x.0, x.3));
            let mut merged: Vec<(usize, usize, usize, usize, f64)> = Vec::new();
            for x in found {
                match merged.last_mut() {
                    Some(m) if x.0 <= m.1 => {
                        m.1 = m.1.max(x.1);
                        m.2 = m.2.min(x.2);
                        m.3 = m.3.min(x.3);
                        m.4 = m.4.max(x.4);
                    }
                    _ => merged.push(x),
                }
            }
            for (first, last, det, pi, peak) in &merged {
                let (l, s, f, sev, _) = &pairs[*pi];
                report.breaches.push(Breach {
                    service: d.name.clone(),
                    objective: objective.to_string(),
                    start_ns: tl.at(*first),
                    end_ns: tl.end_of(*last),
                    detected_ns: tl.end_of(*det),
                    peak_burn_rate: round6(*peak),
                    budget_consumed: round6(consumed(pb.range(*first, last + 1))),
                    severity: sev.to_string(),
                    windows: format!("{}/{}>{}", short_duration(*l), short_duration(*s), f),
                });
            }
            let last = tl.buckets - 1;
            let wl = per_bucket(pairs[0].0);
            let current = burn(pb.window(last, wl), pt.window(last, wl));
            let remaining = 1.0 - consumed(n_bad);
            let actual = (n_total > 0).then(|| 100.0 * (n_total - n_bad) as f64 / n_total as f64);
            let status = match actual {
                None => SloStatus::NoData,
                Some(x) if x < target => SloStatus::Missed,
                Some(_) if !merged.is_empty() => SloStatus::Breached,
                Some(_) => SloStatus::Met,
            };
            let remaining_s = (current > 0.0 && n_total > 0)
                .then(|| (remaining.max(0.0) * period / 1e9 / current).max(0.0));
            report.objectives.push(ObjectiveResult {
                service: d.name.clone(),
                objective: objective.to_string(),
                target,
                threshold_ms: (objective == "latency")
                    .then(|| round6(d.latency.threshold_ns as f64 / 1e6)),
                requests: n_total,
                bad: n_bad,
                actual: actual.map(round6),
                budget_remaining: round6(remaining),
                current_burn_rate: round6(current),
                budget_remaining_s: remaining_s.map(|x| x.round()),
                status,
            });
        }
        let mut all = d.lats.clone();
        let mut lat = [None; 5];
        for (k, q) in [0.5, 0.9, 0.95, 0.99, 1.0].into_iter().enumerate() {
            lat[k] = quantile(&mut all, q).map(|ns| round6(ns / 1e6));
        }
        report.series.push(SloSeries {
            service: d.name.clone(),
            requests: d.total.clone(),
            errors: d.bad.clone(),
            latency_ms: lat,
        });
    }
    report.breaches.sort_by(|x, y| {
        (x.start_ns, &x.service, &x.objective).cmp(&(y.start_ns, &y.service, &y.objective))
    });
    let short = per_bucket(pairs[0].1);
    let own_baseline = crate::alerts::Baseline::own(&data, &tl, OWN_BASELINE_SHARE);
    let (baseline, baseline_desc) = match &opts.baseline {
        Some(b) => (
            b,
            format!("the capture given with --baseline ({})", b.source),
        ),
        None => (
            &own_baseline,
            format!(
                "the first {:.0}% of this capture ({})",
                OWN_BASELINE_SHARE * 100.0,
                short_duration(
                    ((span as f64 * OWN_BASELINE_SHARE) as u64 / resolution).max(1) * resolution
                )
            ),
        ),
    };
    report.baseline = baseline_desc;
    let (rules, firings) = crate::alerts::evaluate(&opts.rules, &data, &tl, short, scale, baseline);
    report.alert_rules = rules;
    report.alerts = firings;
    report
}

/// Loads the files an SLO evaluation needs (`--slo`, `--alerts`).
pub fn load_options(slo: Option<&Path>, alerts: Option<&Path>) -> Result<SloOptions, AnalyzeError> {
    Ok(SloOptions {
        config: match slo {
            Some(p) => SloConfig::load(p)?,
            None => SloConfig::default(),
        },
        rules: match alerts {
            Some(p) => crate::alerts::AlertRules::load(p)?,
            None => crate::alerts::AlertRules::default(),
        },
        baseline: None,
    })
}

/// What a breach row looks like in breaches.csv, for tests: service → intervals.
pub fn breach_intervals(r: &SloReport, objective: &str) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut m: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for b in r.breaches.iter().filter(|b| b.objective == objective) {
        m.entry(b.service.clone())
            .or_default()
            .push((b.start_ns, b.end_ns));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Ends, EndsIds, RequestRow, RequestTable, SpanFacts};

    const T0: u64 = 1_800_000_000 * S;

    /// One request: (time s, server, endpoint "METHOD route", failed, latency ms).
    type Req<'a> = (f64, &'a str, &'a str, bool, Option<f64>);

    fn analysis(span_s: u64, reqs: &[Req<'_>]) -> Analysis {
        let mut strings = vec![String::new()];
        let mut id = |s: &str| -> u32 {
            match strings.iter().position(|x| x == s) {
                Some(i) => i as u32,
                None => {
                    strings.push(s.to_string());
                    (strings.len() - 1) as u32
                }
            }
        };
        let mut ends = EndsIds::default();
        let mut rows: Vec<RequestRow> = reqs
            .iter()
            .map(|&(t, server, ep, error, lat)| {
                let (m, r) = ep.split_once(' ').unwrap_or((ep, ""));
                RequestRow {
                    ts_ns: T0 + (t * 1e9) as u64,
                    latency_ns: lat.map_or(NO_LATENCY, |ms| (ms * 1e6) as u64),
                    server_latency_ns: NO_LATENCY,
                    ends: ends.id(Ends {
                        client: id("client"),
                        server: id(server),
                        protocol: id("http"),
                        node: id("n"),
                        ..Ends::NONE
                    }),
                    method: id(m),
                    target: id(r),
                    route: id(r),
                    status: id(if error { "502" } else { "200" }),
                    spans: SpanFacts::default().of_request(0, error),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.ts_ns);
        Analysis {
            window_start_ns: T0,
            window_end_ns: T0 + span_s * S,
            requests: RequestTable {
                strings,
                rows,
                ends: ends.into_list(),
                id_seed: 0,
            },
            ..Default::default()
        }
    }

    /// `rate` requests per second to `server` over [from, to), failing in [fail_from, fail_to).
    fn traffic<'a>(
        server: &'a str,
        rate: u32,
        (from, to): (f64, f64),
        (fail_from, fail_to): (f64, f64),
        out: &mut Vec<Req<'a>>,
    ) {
        let n = ((to - from) * f64::from(rate)) as u32;
        for k in 0..n {
            let t = from + f64::from(k) / f64::from(rate);
            let fail = t >= fail_from && t < fail_to;
            out.push((t, server, "GET /x", fail, (!fail).then_some(5.0)));
        }
    }

    #[test]
    fn globs() {
        let g = |p: &str, s: &str| Glob(p.into()).matches(s);
        assert!(g("payment-*", "payment-api"));
        assert!(!g("payment-*", "api"));
        assert!(g("*", ""));
        assert!(g("a?c", "abc") && !g("a?c", "ac"));
        assert!(g("GET /poll*", "GET /poll/{id}"));
        assert!(g("*-db", "orders-db") && !g("*-db", "orders-dbx"));
    }

    const SEED: &str = "# coroot-config.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coroot-config\n  namespace: coroot\ndata:\n  config.yaml: |\n    slo:\n      # Custom availability targets\n      availability:\n        default: 99.9\n        overrides:\n          - service: \"payment-*\"\n            target: 99.99\n          - service: \"internal-*\"\n            target: 99.0\n\n      # Custom latency targets\n      latency:\n        default:\n          p99: 100ms\n        overrides:\n          - service: \"api-gateway\"\n            p99: 50ms\n          - service: \"batch-processor\"\n            p99: 5s\n";

    #[test]
    fn the_seeds_file_plain_and_as_a_configmap() {
        let cm = SloConfig::parse(SEED, Path::new("coroot-config.yaml")).expect("configmap");
        let inner: String = SEED
            .lines()
            .skip_while(|l| !l.contains("config.yaml: |"))
            .skip(1)
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let plain = SloConfig::parse(&inner, Path::new("slo.yaml")).expect("plain");
        for c in [&cm, &plain] {
            assert_eq!(c.availability_of("payment-api"), 99.99);
            assert_eq!(c.availability_of("internal-cache"), 99.0);
            assert_eq!(c.availability_of("frontend"), 99.9);
            assert_eq!(c.latency_of("api-gateway").threshold_ns, 50_000_000);
            assert_eq!(c.latency_of("batch-processor").threshold_ns, 5 * S);
            assert_eq!(c.latency_of("frontend").threshold_ns, 100_000_000);
            assert_eq!(c.latency_of("frontend").percent, 99.0);
        }
        let d = SloConfig::default();
        assert_eq!(d.availability_of("x"), 99.0);
        assert_eq!(d.latency_of("x").threshold_ns, 500_000_000);
    }

    fn err(text: &str) -> String {
        SloConfig::parse(text, Path::new("conf/slo.yaml"))
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn malformed_objectives_say_where_and_what() {
        let e = err("slo:\n  availability:\n    default: 150\n");
        assert!(e.starts_with("conf/slo.yaml:3:"), "{e}");
        assert!(e.contains("percentage between 0 and 100"), "{e}");
        let e = err("slo:\n  latency:\n    default:\n      p99: fast\n");
        assert!(
            e.starts_with("conf/slo.yaml:4:") && e.contains("duration"),
            "{e}"
        );
        let e = err("slo:\n  availabilty:\n    default: 99\n");
        assert!(
            e.starts_with("conf/slo.yaml:2:") && e.contains("expected `availability`"),
            "{e}"
        );
        let e = err("slo:\n  latency:\n    default:\n      p99: 1s\n      p95: 200ms\n");
        assert!(
            e.starts_with("conf/slo.yaml:3") && e.contains("one percentile"),
            "{e}"
        );
        let e = err("slo:\n  availability:\n    overrides:\n      - service: a\n      - service: b\n        target: 99\n");
        assert!(
            e.starts_with("conf/slo.yaml:4") && e.contains("`target:`"),
            "{e}"
        );
        let e = err("other: 1\n");
        assert!(e.contains("expected a `slo:` section"), "{e}");
        // Inside a ConfigMap: the line in the file, not in the embedded text.
        let e = SloConfig::parse(
            &SEED.replace("p99: 50ms", "p99: 50 parsecs"),
            Path::new("cm.yaml"),
        )
        .expect_err("bad duration")
        .to_string();
        assert!(e.starts_with("cm.yaml:25:18:"), "{e}");
    }

    #[test]
    fn an_outage_breaches_at_its_own_times_and_spends_the_budget() {
        let mut reqs = Vec::new();
        traffic("db", 50, (0.0, 60.0), (20.0, 30.0), &mut reqs);
        traffic("cache", 50, (0.0, 60.0), (5.0, 5.02), &mut reqs);
        let a = analysis(60, &reqs);
        let r = evaluate(&a, &SloOptions::default());
        assert_eq!(r.windows.len(), 1);
        assert_eq!(r.windows[0].long_s, 60.0);
        assert_eq!(r.windows[0].short_s, 5.0);
        assert_eq!(r.resolution_ns, S);
        assert_eq!(r.period_s, 43_200.0);
        assert_eq!(r.breaches.len(), 1, "{:?}", r.breaches);
        let b = &r.breaches[0];
        assert_eq!(
            (b.service.as_str(), b.objective.as_str()),
            ("db", "availability")
        );
        assert_eq!(b.start_ns, T0 + 20 * S);
        assert_eq!(b.end_ns, T0 + 30 * S);
        assert_eq!(b.peak_burn_rate, 100.0);
        // 500 failures of the 21 600 the 12 h period allows at 50/s (1%).
        assert!((b.budget_consumed - 500.0 / 21_600.0).abs() < 1e-6, "{b:?}");
        // Detected once the long window (the whole capture so far) burns at 14.4.
        assert!(
            b.detected_ns > b.start_ns && b.detected_ns <= T0 + 24 * S,
            "{b:?}"
        );
        let db = r.objective("db", "availability").expect("db");
        assert_eq!(db.status, SloStatus::Missed);
        assert_eq!((db.requests, db.bad), (3000, 500));
        assert!((db.budget_remaining - (1.0 - 500.0 / 21_600.0)).abs() < 1e-6);
        // Burning at 500/3000/1% = ×16.7 over the last hour (the capture): the rest of the
        // budget lasts remaining × 12 h / 16.7.
        let want = (1.0 - 500.0 / 21_600.0) * 43_200.0 / (500.0 / 3000.0 / 0.01);
        assert!(
            (db.budget_remaining_s.expect("burning") - want).abs() <= 1.0,
            "{db:?}"
        );
        let cache = r.objective("cache", "availability").expect("cache");
        assert_eq!(
            cache.status,
            SloStatus::Met,
            "one failure is noise: {cache:?}"
        );
        assert_eq!(
            r.objective("db", "latency").map(|o| o.status),
            Some(SloStatus::Met)
        );
        // Deterministic.
        assert_eq!(r, evaluate(&a, &SloOptions::default()));
    }

    #[test]
    fn two_failures_of_a_quiet_service_are_not_a_breach() {
        let mut reqs = Vec::new();
        traffic("quiet", 1, (0.0, 60.0), (30.0, 32.0), &mut reqs);
        let r = evaluate(&analysis(60, &reqs), &SloOptions::default());
        assert!(r.breaches.is_empty(), "{:?}", r.breaches);
        // Over the capture, 2 of 60 failed: the objective is missed all the same.
        assert_eq!(
            r.objective("quiet", "availability").map(|o| o.status),
            Some(SloStatus::Missed)
        );
    }

    #[test]
    fn a_long_polling_endpoint_gets_its_own_threshold() {
        let mut reqs: Vec<Req<'_>> = Vec::new();
        for k in 0..600 {
            let t = f64::from(k) * 0.1;
            let (ep, lat) = if k % 10 == 0 {
                ("GET /poll/{id}", 25_000.0)
            } else {
                ("GET /items", 3.0)
            };
            reqs.push((t, "api", ep, false, Some(lat)));
        }
        let a = analysis(60, &reqs);
        let plain = evaluate(&a, &SloOptions::default());
        let lat = plain.objective("api", "latency").expect("latency");
        assert_eq!(lat.status, SloStatus::Missed, "{lat:?}");
        assert_eq!(lat.bad, 60);
        let cfg = SloConfig::parse(
            "slo:\n  latency:\n    overrides:\n      - service: api\n        endpoint: \"GET /poll*\"\n        p99: 30s\n",
            Path::new("s.yaml"),
        )
        .expect("valid");
        let opts = SloOptions {
            config: cfg,
            ..Default::default()
        };
        let r = evaluate(&a, &opts);
        let lat = r.objective("api", "latency").expect("latency");
        assert_eq!(
            (lat.status, lat.bad, lat.requests),
            (SloStatus::Met, 0, 600)
        );
        let cfg = SloConfig::parse(
            "slo:\n  availability:\n    overrides:\n      - service: \"a*\"\n        endpoint: \"GET /poll*\"\n        exclude: true\n  latency:\n    overrides:\n      - service: api\n        endpoint: \"GET /poll*\"\n        exclude: true\n",
            Path::new("s.yaml"),
        )
        .expect("valid");
        let r = evaluate(
            &a,
            &SloOptions {
                config: cfg,
                ..Default::default()
            },
        );
        assert_eq!(r.objective("api", "latency").map(|o| o.requests), Some(540));
        assert_eq!(
            r.objective("api", "availability").map(|o| o.requests),
            Some(540)
        );
    }

    #[test]
    fn alert_rules_over_the_timeline() {
        let mut reqs = Vec::new();
        traffic("db", 50, (0.0, 60.0), (20.0, 30.0), &mut reqs);
        // Slow from 40 s on: p99 far above the first quarter's.
        for k in 0..200 {
            reqs.push((40.0 + f64::from(k) * 0.1, "db", "GET /x", false, Some(80.0)));
        }
        let a = analysis(60, &reqs);
        let rules = crate::alerts::AlertRules::parse(
            "alerts:\n  - name: High Error Rate\n    condition: error_rate > 1%\n    for: 5m\n  - name: Slow\n    condition: latency.p99 > baseline * 2 and request_rate > 10\n    for: 2m\n  - name: Memory Pressure\n    condition: container.memory.usage > 90%\n  - name: Either\n    condition: container.memory.usage > 90% or error_rate > 50%\n",
            Path::new("a.yaml"),
        )
        .expect("rules");
        let r = evaluate(
            &a,
            &SloOptions {
                rules,
                ..Default::default()
            },
        );
        let st: Vec<(&str, &str)> = r
            .alert_rules
            .iter()
            .map(|x| (x.name.as_str(), x.status.as_str()))
            .collect();
        assert_eq!(
            st,
            [
                ("High Error Rate", "fired"),
                ("Slow", "fired"),
                ("Memory Pressure", "no_data"),
                ("Either", "fired")
            ]
        );
        let f = |name: &str| -> Vec<&AlertFiring> {
            r.alerts.iter().filter(|x| x.name == name).collect()
        };
        let e = f("High Error Rate");
        assert_eq!(e.len(), 1, "{e:?}");
        // Pending from the first step whose 5 s window saw a failure (20 s), firing 5 s
        // (`for: 5m` scaled) later, until the last window with a failure (ending at 34 s).
        assert_eq!(e[0].start_ns, T0 + 26 * S);
        assert_eq!(e[0].end_ns, T0 + 34 * S);
        assert_eq!(e[0].value, "error_rate=100.00%");
        let s = f("Slow");
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(
            s[0].start_ns >= T0 + 42 * S && s[0].end_ns == T0 + 60 * S,
            "{s:?}"
        );
        assert!(s[0].value.starts_with("latency.p99=80.000ms"), "{s:?}");
        assert_eq!(r.alert_rules[1].effective_for_s, 2.0);
        assert!(r.alert_rules[2].note.contains("no cgroup memory"));
    }
}
