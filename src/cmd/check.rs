//! `retrace check`: assertions over the analysis of one capture, for CI.
//!
//! The expectations file is YAML (the same format is embedded under `expect:` in a
//! scenario's `scenario.yaml`, and `--expect` accepts either):
//!
//! ```yaml
//! services:
//!   - name: api
//!     max_error_rate: 1%        # or 0.01
//!     max_p99_ms: 300
//!     requests: { min: 100, max: 5000 }   # requests it served
//!   - name: users
//!     calls: { min: 100 }                  # requests its callers made (served + failed connects)
//!     min_failed_connections: 1            # its callers' connection attempts that failed
//! edges:
//!   - edge: nginx -> api
//!     protocol: http            # optional: only edges of this protocol
//!     max_error_rate: 0.5%
//!     max_retransmits: 0
//!   - edge: client -> api
//!     exists: false
//! only_services: [client, nginx, api, users, redis, postgres]
//! only_edges: ["client -> nginx", "nginx -> api"]
//! traces:                       # over the linked spans (see `TraceExpect`)
//!   min_client_linked: 95%      # CLIENT spans of serving processes given a parent
//!   min_server_linked: 99%      # SERVER spans whose client was captured, linked to it
//!   routes:
//!     - service: nginx
//!       name: "GET /checkout/{id}"               # the SERVER span's name
//!       reaches: [api, users, redis, postgres]   # spans of each in its traces
//!       min_share: 95%                           # of its traces (default: all)
//! findings:                     # the findings engine's (findings.csv)
//!   - { kind: connection_failures, service: api, min_severity: critical }
//!   - { kind: retransmits, edge: api -> redis }   # min_severity: warning by default
//!   - { kind: retransmits, exists: false }        # none worth a look
//! max_finding_severity: info    # nothing worth a look (a healthy run)
//! slo:                          # one entry or a list (objectives: `--slo`, default Coroot's)
//!   - { service: api, availability: met }       # met, breached, missed, no_data, or a list
//!   - { service: users, latency: [met, breached], max_breaches: 0 }
//! alerts:                       # rules: `--alerts FILE.yaml`
//!   fired: [SLO Breach]
//!   not_fired: [Memory Pressure]
//! ```
//!
//! Every key of every entry is one assertion; `check` prints one line per assertion with the
//! measured value, exits 1 when any fails, and writes JUnit XML with `--junit`.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use retrace_analyze::Health;
use serde::Deserialize;

/// Arguments of `retrace check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Capture directory (or segment file) to analyze.
    pub capture: PathBuf,
    /// Expectations: a YAML file in the format above, or a scenario.yaml (its `expect:`).
    #[arg(long, value_name = "FILE.yaml")]
    pub expect: PathBuf,
    /// Service naming rules passed to the analyzer (see `retrace analyze --services`);
    /// default: the one a scenario file given to --expect names.
    #[arg(long, value_name = "FILE.yaml")]
    pub services: Option<PathBuf>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    #[command(flatten)]
    pub objectives: super::analyze::Objectives,
}

/// Runs `retrace check`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (expect, scenario_services) = load_expectations(&args.expect)?;
    let services = args.services.clone().or(scenario_services);
    let mut opts = retrace_analyze::AnalyzeOptions {
        services_file: services.clone(),
        ..Default::default()
    };
    args.objectives.apply(&mut opts);
    let analysis = retrace_analyze::analyze(std::slice::from_ref(&args.capture), &opts)?;
    let results = evaluate_analysis(&expect, &analysis);
    print!("{}", render_results(&results));
    if let Some(junit) = &args.junit {
        let cases: Vec<JunitCase> = results.iter().map(JunitCase::from).collect();
        let name = format!("retrace check {}", args.capture.display());
        write_junit(junit, &name, &cases)?;
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    println!(
        "{} assertions, {} passed, {} failed",
        results.len(),
        results.len() - failed,
        failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// ---------------------------------------------------------------------------------------------
// What check and diff look at: a flat view of an analysis.

pub use retrace_analyze::{EdgeStats, ServiceStats};

/// What `check` and `diff` need of an edge beyond its fields.
pub trait EdgeExt {
    /// `client -> server`.
    fn key(&self) -> String;
    /// errors / requests (0 without requests).
    fn error_rate(&self) -> f64;
}

impl EdgeExt for EdgeStats {
    fn key(&self) -> String {
        format!("{} -> {}", self.client, self.server)
    }

    fn error_rate(&self) -> f64 {
        ratio(self.errors, self.requests)
    }
}

fn ratio(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    }
}

/// The parts of an analysis that `check` and `diff` judge.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Snapshot {
    /// Length of the analyzed window, seconds.
    pub window_s: f64,
    /// Services, by name.
    pub services: Vec<ServiceStats>,
    /// Edges.
    pub edges: Vec<EdgeStats>,
    /// The findings engine's findings.
    pub findings: Vec<retrace_analyze::Finding>,
    /// Objectives, breaches and alerts.
    pub slo: retrace_analyze::SloReport,
}

impl Snapshot {
    /// The view of an analysis.
    pub fn from_analysis(a: &retrace_analyze::Analysis) -> Snapshot {
        let window_s = a.window_end_ns.saturating_sub(a.window_start_ns) as f64 / 1e9;
        let services = a.services.clone();
        let edges = a.edges.clone();
        Snapshot {
            window_s,
            services,
            edges,
            findings: a.findings.clone(),
            slo: a.slo.clone(),
        }
    }
}

/// Analyzes captures with the library and returns the view `check`/`diff` judge.
pub fn analyze_capture(paths: &[PathBuf], services: Option<&Path>) -> anyhow::Result<Snapshot> {
    let analysis = run_analysis(paths, services)?;
    Ok(Snapshot::from_analysis(&analysis))
}

/// Runs the analyzer on captures.
pub fn run_analysis(
    paths: &[PathBuf],
    services: Option<&Path>,
) -> anyhow::Result<retrace_analyze::Analysis> {
    let opts = retrace_analyze::AnalyzeOptions {
        services_file: services.map(Path::to_path_buf),
        ..Default::default()
    };
    Ok(retrace_analyze::analyze(paths, &opts)?)
}

// ---------------------------------------------------------------------------------------------
// The expectations file.

/// A fraction, written as a number (`0.01`) or a percentage (`"1%"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio(pub f64);

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor (not an untagged enum): errors keep the scalar's line and column.
        struct V;
        const WHAT: &str = "a fraction between 0 and 1 (0.01) or a percentage (\"1%\")";
        fn check<E: serde::de::Error>(v: f64) -> Result<Ratio, E> {
            if (0.0..=1.0).contains(&v) {
                Ok(Ratio(v))
            } else {
                Err(E::custom(format!("expected {WHAT}, found {v}")))
            }
        }
        impl serde::de::Visitor<'_> for V {
            type Value = Ratio;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(WHAT)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ratio, E> {
                check(v)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ratio, E> {
                check(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ratio, E> {
                check(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Ratio, E> {
                let num = t
                    .trim()
                    .strip_suffix('%')
                    .ok_or_else(|| E::custom(format!("expected {WHAT}, found {t:?}")))?;
                let v: f64 = num
                    .trim()
                    .parse()
                    .map_err(|_| E::custom(format!("expected {WHAT}, found {t:?}")))?;
                check(v / 100.0)
            }
        }
        d.deserialize_any(V)
    }
}

/// An inclusive range of counts; either end may be left out.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CountRange {
    /// At least.
    pub min: Option<u64>,
    /// At most.
    pub max: Option<u64>,
}

/// One or several accepted health states.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StatusSet {
    /// Exactly this one.
    One(Health),
    /// Any of these.
    Any(Vec<Health>),
}

impl StatusSet {
    fn contains(&self, s: Health) -> bool {
        match self {
            StatusSet::One(x) => *x == s,
            StatusSet::Any(v) => v.contains(&s),
        }
    }
    fn describe(&self) -> String {
        match self {
            StatusSet::One(x) => x.to_string(),
            StatusSet::Any(v) => v
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("|"),
        }
    }
}

/// Assertions about one service.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceExpect {
    /// Service name.
    pub name: String,
    /// Whether it must be present (default) or absent.
    #[serde(default)]
    pub exists: Option<bool>,
    /// Error rate at most.
    pub max_error_rate: Option<Ratio>,
    /// Error rate at least (to assert an expected failure).
    pub min_error_rate: Option<Ratio>,
    /// p99 at most, ms.
    pub max_p99_ms: Option<f64>,
    /// Requests it served within.
    pub requests: Option<CountRange>,
    /// Requests its callers made to it (served, and connection attempts that failed) within.
    pub calls: Option<CountRange>,
    /// Failed connection attempts of its callers at most.
    pub max_failed_connections: Option<u64>,
    /// Failed connection attempts of its callers at least.
    pub min_failed_connections: Option<u64>,
    /// Health among.
    pub status: Option<StatusSet>,
}

/// Assertions about one edge.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeExpect {
    /// `client -> server`.
    pub edge: EdgeName,
    /// Only edges of this protocol.
    pub protocol: Option<String>,
    /// Whether it must be present (default) or absent.
    pub exists: Option<bool>,
    /// Error rate at most.
    pub max_error_rate: Option<Ratio>,
    /// Error rate at least.
    pub min_error_rate: Option<Ratio>,
    /// p99 at most, ms.
    pub max_p99_ms: Option<f64>,
    /// Requests within.
    pub requests: Option<CountRange>,
    /// Retransmits at most.
    pub max_retransmits: Option<u64>,
    /// Retransmits at least.
    pub min_retransmits: Option<u64>,
    /// Failed connections at most.
    pub max_failed_connections: Option<u64>,
    /// Failed connections at least.
    pub min_failed_connections: Option<u64>,
    /// Health among.
    pub status: Option<StatusSet>,
}

/// `client -> server`, parsed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeName {
    /// Calling service.
    pub client: String,
    /// Called service.
    pub server: String,
}

impl fmt::Display for EdgeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.client, self.server)
    }
}

impl std::str::FromStr for EdgeName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected an edge written `client -> server`, found {s:?}");
        let (c, sv) = s.split_once("->").ok_or_else(bad)?;
        let (c, sv) = (c.trim(), sv.trim());
        if c.is_empty() || sv.is_empty() || sv.contains("->") {
            return Err(bad());
        }
        Ok(EdgeName {
            client: c.to_string(),
            server: sv.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for EdgeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A whole expectations file.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Per-service assertions.
    #[serde(default)]
    pub services: Vec<ServiceExpect>,
    /// Per-edge assertions.
    #[serde(default)]
    pub edges: Vec<EdgeExpect>,
    /// No service beyond these.
    pub only_services: Option<Vec<String>>,
    /// No edge beyond these.
    pub only_edges: Option<Vec<EdgeName>>,
    /// Assertions over the traces.
    #[serde(default)]
    pub traces: Option<TraceExpect>,
    /// Findings expected (or not).
    #[serde(default)]
    pub findings: Vec<FindingExpect>,
    /// No finding above this severity.
    pub max_finding_severity: Option<retrace_analyze::Severity>,
    /// Assertions on service level objectives.
    #[serde(default, deserialize_with = "one_or_many")]
    pub slo: Vec<SloExpect>,
    /// Assertions on alert rules.
    pub alerts: Option<AlertsExpect>,
}

/// A finding expected, or not: every key given must match.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingExpect {
    /// Its kind (`connection_failures`, `retransmits`, ...).
    pub kind: Option<String>,
    /// Its service.
    pub service: Option<String>,
    /// Its edge.
    pub edge: Option<EdgeName>,
    /// At least this severity (default warning).
    pub min_severity: Option<retrace_analyze::Severity>,
    /// Whether one must be present (default) or none.
    pub exists: Option<bool>,
}

impl FindingExpect {
    fn matches(&self, f: &retrace_analyze::Finding) -> bool {
        self.kind.as_ref().is_none_or(|k| *k == f.kind)
            && self.service.as_ref().is_none_or(|s| *s == f.service)
            && self
                .edge
                .as_ref()
                .is_none_or(|e| format!("{} -> {}", e.client, e.server) == f.edge)
            && f.severity
                >= self
                    .min_severity
                    .unwrap_or(retrace_analyze::Severity::Warning)
    }

    fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(k) = &self.kind {
            v.push(k.clone());
        }
        if let Some(s) = &self.service {
            v.push(format!("service {s}"));
        }
        if let Some(e) = &self.edge {
            v.push(format!("edge {e}"));
        }
        v.push(format!(
            "severity >= {}",
            self.min_severity
                .unwrap_or(retrace_analyze::Severity::Warning)
                .name()
        ));
        v.join(", ")
    }
}

impl Expectations {
    /// Whether nothing at all is asserted.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.edges.is_empty()
            && self.only_services.is_none()
            && self.only_edges.is_none()
            && self.traces.as_ref().is_none_or(TraceExpect::is_empty)
            && self.findings.is_empty()
            && self.max_finding_severity.is_none()
            && self.slo.is_empty()
            && self.alerts.is_none()
    }
}

/// One value or a list of them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One.
    One(T),
    /// Several.
    Many(Vec<T>),
}

fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    // A sequence or a single mapping; errors of an entry keep their location.
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an entry or a list of entries")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut v = Vec::new();
            while let Some(x) = seq.next_element()? {
                v.push(x);
            }
            Ok(v)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            Ok(vec![T::deserialize(
                serde::de::value::MapAccessDeserializer::new(map),
            )?])
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// Assertions about one service's objectives.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloExpect {
    /// Service name.
    pub service: String,
    /// Status of its availability objective among these.
    pub availability: Option<OneOrMany<retrace_analyze::SloStatus>>,
    /// Status of its latency objective among these.
    pub latency: Option<OneOrMany<retrace_analyze::SloStatus>>,
    /// Breaches (of either objective) at most.
    pub max_breaches: Option<u64>,
    /// Breaches at least.
    pub min_breaches: Option<u64>,
}

/// Assertions about alert rules (given with `--alerts`).
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertsExpect {
    /// Rules (by name) that must have fired.
    #[serde(default)]
    pub fired: Vec<String>,
    /// Rules that must not have fired.
    #[serde(default)]
    pub not_fired: Vec<String>,
}

fn statuses(want: &OneOrMany<retrace_analyze::SloStatus>) -> Vec<retrace_analyze::SloStatus> {
    match want {
        OneOrMany::One(s) => vec![*s],
        OneOrMany::Many(v) => v.clone(),
    }
}

/// The `slo:` and `alerts:` assertions.
fn evaluate_slo(expect: &Expectations, snap: &Snapshot, c: &mut Collector) {
    let r = &snap.slo;
    for se in &expect.slo {
        c.subject = format!("slo {}", se.service);
        for (objective, want) in [("availability", &se.availability), ("latency", &se.latency)] {
            let Some(want) = want else { continue };
            let want = statuses(want);
            let names: Vec<&str> = want.iter().map(|s| s.name()).collect();
            let (measured, ok) = match r.objective(&se.service, objective) {
                Some(o) => (
                    format!(
                        "{} (actual {}, target {}%, budget remaining {:.2}%)",
                        o.status,
                        o.actual.map_or("none".to_string(), |x| format!("{x:.3}%")),
                        o.target,
                        o.budget_remaining * 100.0
                    ),
                    want.contains(&o.status),
                ),
                None => (
                    "no objective (the service was not called)".to_string(),
                    want.contains(&retrace_analyze::SloStatus::NoData),
                ),
            };
            c.push(format!("{objective} is {}", names.join("|")), measured, ok);
        }
        let breaches: Vec<&retrace_analyze::Breach> = r
            .breaches
            .iter()
            .filter(|b| b.service == se.service)
            .collect();
        let listed: Vec<String> = breaches
            .iter()
            .map(|b| {
                format!(
                    "{} {} -> {}",
                    b.objective,
                    retrace_analyze::format_wall(b.start_ns),
                    retrace_analyze::format_wall(b.end_ns)
                )
            })
            .collect();
        let n = breaches.len() as u64;
        let desc = match (se.min_breaches, se.max_breaches) {
            (Some(a), Some(b)) => Some(format!("breaches in [{a}, {b}]")),
            (Some(a), None) => Some(format!("breaches >= {a}")),
            (None, Some(b)) => Some(format!("breaches <= {b}")),
            (None, None) => None,
        };
        if let Some(desc) = desc {
            let ok =
                se.min_breaches.is_none_or(|a| n >= a) && se.max_breaches.is_none_or(|b| n <= b);
            c.push(
                desc,
                if listed.is_empty() {
                    "0".to_string()
                } else {
                    format!("{n}: {}", listed.join("; "))
                },
                ok,
            );
        }
    }
    if let Some(ae) = &expect.alerts {
        c.subject = "alerts".to_string();
        let fired_for = |name: &str| -> Vec<&str> {
            let mut v: Vec<&str> = r
                .alerts
                .iter()
                .filter(|f| f.name == name)
                .map(|f| f.service.as_str())
                .collect();
            v.dedup();
            v
        };
        let known = |name: &str| r.alert_rules.iter().any(|x| x.name == name);
        for name in &ae.fired {
            let on = fired_for(name);
            let measured = if !known(name) {
                "no such rule (give the rules with --alerts)".to_string()
            } else if on.is_empty() {
                "did not fire".to_string()
            } else {
                format!("fired for {}", on.join(", "))
            };
            c.push(format!("{name:?} fired"), measured, !on.is_empty());
        }
        for name in &ae.not_fired {
            let on = fired_for(name);
            let measured = if !known(name) {
                "no such rule (give the rules with --alerts)".to_string()
            } else if on.is_empty() {
                "did not fire".to_string()
            } else {
                format!("fired for {}", on.join(", "))
            };
            c.push(
                format!("{name:?} did not fire"),
                measured,
                known(name) && on.is_empty(),
            );
        }
    }
}

/// A YAML error as `file:line:column: message`.
pub fn yaml_error(path: &Path, err: &serde_yaml_ng::Error) -> anyhow::Error {
    let msg = retrace_analyze::yaml_message(err);
    match err.location() {
        Some(loc) => {
            anyhow::anyhow!(
                "{}:{}:{}: {}",
                path.display(),
                loc.line(),
                loc.column(),
                msg
            )
        }
        None => anyhow::anyhow!("{}: {}", path.display(), msg),
    }
}

/// Parses expectations from text (`path` only names the file in errors). Accepts a scenario
/// file too: then its `expect:` section is used.
pub fn parse_expectations(path: &Path, text: &str) -> anyhow::Result<Expectations> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e))?;
    let is_scenario = value
        .as_mapping()
        .is_some_and(|m| m.contains_key("traffic") || m.contains_key("expect"));
    let expect = if is_scenario {
        super::scenario::spec::parse_scenario(path, text)?.expect
    } else if value.is_null() {
        anyhow::bail!("{}: empty file: expected expectations (services:, edges:, only_services:, only_edges:, traces:)", path.display())
    } else {
        serde_yaml_ng::from_str::<Expectations>(text).map_err(|e| yaml_error(path, &e))?
    };
    if expect.is_empty() {
        anyhow::bail!("{}: no assertions in this file", path.display());
    }
    Ok(expect)
}

/// Reads and parses an expectations file; for a scenario file, also returns the analyzer's
/// services file the scenario names.
pub fn load_expectations(path: &Path) -> anyhow::Result<(Expectations, Option<PathBuf>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading expectations {}", path.display()))?;
    let expect = parse_expectations(path, &text)?;
    let is_scenario = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        .ok()
        .and_then(|v| {
            v.as_mapping()
                .map(|m| m.contains_key("traffic") || m.contains_key("expect"))
        })
        .unwrap_or(false);
    let services = if is_scenario {
        super::scenario::spec::load_scenario(path)?.services_file
    } else {
        None
    };
    Ok((expect, services))
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// The outcome of one assertion.
#[derive(Clone, Debug, PartialEq)]
pub struct AssertionResult {
    /// What is asserted about: `service api`, `edge nginx -> api`, `services`.
    pub subject: String,
    /// The assertion: `error rate <= 1.00%`.
    pub assertion: String,
    /// What was measured.
    pub measured: String,
    /// Whether it held.
    pub passed: bool,
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.2} ms"),
        None => "none".to_string(),
    }
}

struct Collector {
    subject: String,
    out: Vec<AssertionResult>,
}

impl Collector {
    fn push(&mut self, assertion: String, measured: String, passed: bool) {
        self.out.push(AssertionResult {
            subject: self.subject.clone(),
            assertion,
            measured,
            passed,
        });
    }

    fn range(&mut self, what: &str, r: &CountRange, v: u64) {
        let desc = match (r.min, r.max) {
            (Some(a), Some(b)) => format!("{what} in [{a}, {b}]"),
            (Some(a), None) => format!("{what} >= {a}"),
            (None, Some(b)) => format!("{what} <= {b}"),
            (None, None) => format!("{what} (any)"),
        };
        let ok = r.min.is_none_or(|a| v >= a) && r.max.is_none_or(|b| v <= b);
        self.push(desc, v.to_string(), ok);
    }

    /// [`Self::range`] between `min` and `max`, when either is set.
    fn bounds(&mut self, what: &str, min: Option<u64>, max: Option<u64>, v: u64) {
        if min.is_some() || max.is_some() {
            self.range(what, &CountRange { min, max }, v);
        }
    }

    fn rates(&mut self, max: Option<Ratio>, min: Option<Ratio>, rate: f64, errors: u64, req: u64) {
        let measured = format!("{} ({errors}/{req})", pct(rate));
        if let Some(m) = max {
            self.push(
                format!("error rate <= {}", pct(m.0)),
                measured.clone(),
                rate <= m.0,
            );
        }
        if let Some(m) = min {
            self.push(format!("error rate >= {}", pct(m.0)), measured, rate >= m.0);
        }
    }

    fn p99(&mut self, max: Option<f64>, p99: Option<f64>) {
        if let Some(m) = max {
            // No latency measured (no requests) does not violate an upper bound.
            let ok = p99.is_none_or(|v| v <= m);
            self.push(format!("p99 <= {m} ms"), ms(p99), ok);
        }
    }

    fn status(&mut self, want: &Option<StatusSet>, got: Health) {
        if let Some(w) = want {
            self.push(
                format!("status is {}", w.describe()),
                got.to_string(),
                w.contains(got),
            );
        }
    }
}

/// Several edges between the same pair (one per protocol) judged as one.
struct EdgeAgg {
    requests: u64,
    errors: u64,
    retransmits: u64,
    failed_connections: u64,
    p99: Option<f64>,
    status: Health,
    protocols: Vec<String>,
}

fn aggregate_edges<'a>(edges: impl Iterator<Item = &'a EdgeStats>) -> Option<EdgeAgg> {
    let mut agg: Option<EdgeAgg> = None;
    for e in edges {
        let a = agg.get_or_insert(EdgeAgg {
            requests: 0,
            errors: 0,
            retransmits: 0,
            failed_connections: 0,
            p99: None,
            status: Health::Ok,
            protocols: Vec::new(),
        });
        a.requests += e.requests;
        a.errors += e.errors;
        a.retransmits += e.retransmits;
        a.failed_connections += e.failed_connections;
        // The worst p99 of the protocols: an upper bound must hold for each of them.
        a.p99 = match (a.p99, e.p99_ms) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        a.status = a.status.max(e.status);
        a.protocols.push(e.protocol.clone());
    }
    agg
}

/// Evaluates every assertion of `expect` against `snap`.
pub fn evaluate(expect: &Expectations, snap: &Snapshot) -> Vec<AssertionResult> {
    let mut c = Collector {
        subject: String::new(),
        out: Vec::new(),
    };
    for se in &expect.services {
        c.subject = format!("service {}", se.name);
        let found = snap.services.iter().find(|s| s.service == se.name);
        let want = se.exists.unwrap_or(true);
        let seen = match found {
            Some(s) => format!("present ({} requests)", s.requests),
            None => "absent".to_string(),
        };
        c.push(
            if want { "exists" } else { "does not exist" }.to_string(),
            seen,
            found.is_some() == want,
        );
        let Some(s) = found else { continue };
        c.rates(
            se.max_error_rate,
            se.min_error_rate,
            s.error_rate,
            s.errors,
            s.requests,
        );
        c.p99(se.max_p99_ms, s.p99_ms);
        if let Some(r) = &se.requests {
            c.range("requests", r, s.requests);
        }
        if let Some(r) = &se.calls {
            c.range("calls", r, s.calls);
        }
        c.bounds(
            "failed connections",
            se.min_failed_connections,
            se.max_failed_connections,
            s.failed_connections,
        );
        c.status(&se.status, s.status);
    }
    for ee in &expect.edges {
        let proto = ee.protocol.as_deref();
        c.subject = match proto {
            Some(p) => format!("edge {} ({p})", ee.edge),
            None => format!("edge {}", ee.edge),
        };
        let agg = aggregate_edges(snap.edges.iter().filter(|e| {
            e.client == ee.edge.client
                && e.server == ee.edge.server
                && proto.is_none_or(|p| e.protocol.eq_ignore_ascii_case(p))
        }));
        let want = ee.exists.unwrap_or(true);
        let seen = match &agg {
            Some(a) => format!(
                "present ({}, {} requests)",
                a.protocols.join("+"),
                a.requests
            ),
            None => "absent".to_string(),
        };
        c.push(
            if want { "exists" } else { "does not exist" }.to_string(),
            seen,
            agg.is_some() == want,
        );
        let Some(a) = agg else { continue };
        c.rates(
            ee.max_error_rate,
            ee.min_error_rate,
            ratio(a.errors, a.requests),
            a.errors,
            a.requests,
        );
        c.p99(ee.max_p99_ms, a.p99);
        if let Some(r) = &ee.requests {
            c.range("requests", r, a.requests);
        }
        c.bounds(
            "retransmits",
            ee.min_retransmits,
            ee.max_retransmits,
            a.retransmits,
        );
        c.bounds(
            "failed connections",
            ee.min_failed_connections,
            ee.max_failed_connections,
            a.failed_connections,
        );
        c.status(&ee.status, a.status);
    }
    if let Some(allowed) = &expect.only_services {
        c.subject = "services".to_string();
        let extra: Vec<&str> = snap
            .services
            .iter()
            .map(|s| s.service.as_str())
            .filter(|n| !allowed.iter().any(|a| a == n))
            .collect();
        c.push(
            format!("none beyond [{}]", allowed.join(", ")),
            if extra.is_empty() {
                format!("{} services, none extra", snap.services.len())
            } else {
                format!("extra: {}", extra.join(", "))
            },
            extra.is_empty(),
        );
    }
    if let Some(allowed) = &expect.only_edges {
        c.subject = "edges".to_string();
        let mut extra: Vec<String> = snap
            .edges
            .iter()
            .filter(|e| {
                !allowed
                    .iter()
                    .any(|a| a.client == e.client && a.server == e.server)
            })
            .map(EdgeExt::key)
            .collect();
        extra.dedup();
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        c.push(
            format!("none beyond [{}]", list.join(", ")),
            if extra.is_empty() {
                format!("{} edges, none extra", snap.edges.len())
            } else {
                format!("extra: {}", extra.join(", "))
            },
            extra.is_empty(),
        );
    }
    for fe in &expect.findings {
        c.subject = "findings".to_string();
        let found: Vec<&str> = snap
            .findings
            .iter()
            .filter(|f| fe.matches(f))
            .map(|f| f.id.as_str())
            .collect();
        let want = fe.exists.unwrap_or(true);
        c.push(
            format!(
                "{} finding: {}",
                if want { "a" } else { "no" },
                fe.describe()
            ),
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            },
            found.is_empty() != want,
        );
    }
    if let Some(max) = expect.max_finding_severity {
        c.subject = "findings".to_string();
        let above: Vec<String> = snap
            .findings
            .iter()
            .filter(|f| f.severity > max)
            .map(|f| format!("{} {} {} {}", f.id, f.severity.name(), f.kind, f.service))
            .collect();
        c.push(
            format!("none above {}", max.name()),
            if above.is_empty() {
                format!("{} findings, none above", snap.findings.len())
            } else {
                above.join("; ")
            },
            above.is_empty(),
        );
    }
    evaluate_slo(expect, snap, &mut c);
    c.out
}

/// Evaluates every assertion of `expect` against an analysis: [`evaluate`] on its
/// [`Snapshot`], then the trace assertions ([`evaluate_traces`]).
pub fn evaluate_analysis(
    expect: &Expectations,
    a: &retrace_analyze::Analysis,
) -> Vec<AssertionResult> {
    let mut results = evaluate(expect, &Snapshot::from_analysis(a));
    if let Some(t) = &expect.traces {
        results.extend(evaluate_traces(t, a));
    }
    results
}

/// One line per assertion.
pub fn render_results(results: &[AssertionResult]) -> String {
    let mut s = String::new();
    for r in results {
        let _ = writeln!(
            s,
            "{}  {}: {} (measured: {})",
            if r.passed { "PASS" } else { "FAIL" },
            r.subject,
            r.assertion,
            r.measured
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Traces: assertions over the spans the analysis linked into traces (`traces:`).

/// Assertions about the traces (`traces:`).
///
/// `min_client_linked` and `min_server_linked` bound the linked shares of the analysis's
/// trace coverage (summary.json `trace_coverage`): the CLIENT spans made by processes that
/// served requests which were given a parent, and the SERVER spans whose client was captured
/// which were linked to it. A route's `reaches` asserts that the traces holding one of its
/// SERVER spans (`service` and span `name`, as in spans.csv) also hold a span of each listed
/// service (the service's own span: a call that never got through does not count); at least
/// `min_share` of them (default: all). A route no trace holds fails.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TraceExpect {
    /// Linked share of the CLIENT spans of processes that served requests, at least.
    pub min_client_linked: Option<Ratio>,
    /// Linked share of the SERVER spans whose client was captured, at least.
    pub min_server_linked: Option<Ratio>,
    /// Number of traces within.
    pub count: Option<CountRange>,
    /// Routes whose traces must reach services.
    #[serde(default)]
    pub routes: Vec<RouteExpect>,
}

impl TraceExpect {
    /// Whether nothing is asserted.
    pub fn is_empty(&self) -> bool {
        self.min_client_linked.is_none()
            && self.min_server_linked.is_none()
            && self.count.is_none()
            && self.routes.is_empty()
    }
}

/// The services a route's traces must reach.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteExpect {
    /// The service serving the route.
    pub service: String,
    /// The name of its SERVER span (`GET /checkout/{id}`).
    pub name: String,
    /// Services with a span in each of the route's traces.
    #[serde(default)]
    pub reaches: Vec<String>,
    /// Share of the route's traces that must reach all of them (default 1).
    pub min_share: Option<Ratio>,
}

/// What a route's traces reached.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RouteReach {
    /// Traces holding a SERVER span of the route.
    pub traces: u64,
    /// Of those, reaching every listed service.
    pub reaching_all: u64,
    /// Per listed service (in the order listed), the route's traces without a span of it.
    pub missing: Vec<u64>,
    /// Other names of the route's service's SERVER spans (sorted, for the message when the
    /// route has no trace).
    pub other_names: Vec<String>,
}

/// Measures what the traces of each route of `routes` reached, in one pass over the spans
/// for the routes' SERVER spans and one for the listed services' spans.
pub fn route_reach(a: &retrace_analyze::Analysis, routes: &[RouteExpect]) -> Vec<RouteReach> {
    use retrace_analyze::SpanKind;
    use std::collections::{BTreeSet, HashMap, HashSet};
    // Per route: its traces, and for each, which listed services a span was seen of.
    let mut traces: Vec<HashMap<u128, Vec<bool>>> = vec![HashMap::new(); routes.len()];
    let mut others: Vec<BTreeSet<String>> = vec![BTreeSet::new(); routes.len()];
    let serving: HashSet<&str> = routes.iter().map(|r| r.service.as_str()).collect();
    for s in a.requests.spans() {
        if s.kind != SpanKind::Server || !serving.contains(s.service) {
            continue;
        }
        let name = s.name();
        for (i, r) in routes.iter().enumerate() {
            if r.service != s.service {
                continue;
            }
            if r.name == name {
                traces[i]
                    .entry(s.trace_id)
                    .or_insert_with(|| vec![false; r.reaches.len()]);
            } else if others[i].len() < 8 {
                others[i].insert(name.clone());
            }
        }
    }
    let reached: HashSet<&str> = routes
        .iter()
        .flat_map(|r| r.reaches.iter().map(String::as_str))
        .collect();
    for s in a.requests.spans() {
        if !reached.contains(s.service) {
            continue;
        }
        for (i, r) in routes.iter().enumerate() {
            let Some(seen) = traces[i].get_mut(&s.trace_id) else {
                continue;
            };
            for (j, want) in r.reaches.iter().enumerate() {
                if want == s.service {
                    seen[j] = true;
                }
            }
        }
    }
    routes
        .iter()
        .zip(traces)
        .zip(others)
        .map(|((r, t), o)| {
            let mut missing = vec![0u64; r.reaches.len()];
            let mut reaching_all = 0;
            for seen in t.values() {
                if seen.iter().all(|&x| x) {
                    reaching_all += 1;
                }
                for (m, &x) in missing.iter_mut().zip(seen) {
                    *m += u64::from(!x);
                }
            }
            RouteReach {
                traces: t.len() as u64,
                reaching_all,
                missing,
                other_names: o.into_iter().collect(),
            }
        })
        .collect()
}

/// Evaluates the trace assertions against an analysis.
pub fn evaluate_traces(t: &TraceExpect, a: &retrace_analyze::Analysis) -> Vec<AssertionResult> {
    let mut c = Collector {
        subject: "traces".to_string(),
        out: Vec::new(),
    };
    let cov = &a.trace_coverage;
    let share = |what: &str, min: Option<Ratio>, v: f64, n: u64, of: u64, c: &mut Collector| {
        if let Some(m) = min {
            c.push(
                format!("{what} linked >= {}", pct(m.0)),
                format!("{} ({n}/{of})", pct(v)),
                v >= m.0,
            );
        }
    };
    share(
        "client spans",
        t.min_client_linked,
        cov.client_share(),
        cov.client_spans_linked,
        cov.client_spans_in_servers,
        &mut c,
    );
    share(
        "server spans",
        t.min_server_linked,
        cov.server_share(),
        cov.server_spans_linked,
        cov.server_spans_with_client,
        &mut c,
    );
    if let Some(r) = &t.count {
        c.range("traces", r, a.traces.len() as u64);
    }
    for (r, m) in t.routes.iter().zip(route_reach(a, &t.routes)) {
        c.subject = format!("route {} {:?}", r.service, r.name);
        let min = r.min_share.map_or(1.0, |x| x.0);
        let assertion = if r.reaches.is_empty() {
            "has traces".to_string()
        } else {
            format!(
                "reaches {} in >= {} of its traces",
                r.reaches.join(", "),
                pct(min)
            )
        };
        if m.traces == 0 {
            let others = if m.other_names.is_empty() {
                format!("no SERVER span of {}", r.service)
            } else {
                format!("{}'s SERVER spans: {}", r.service, m.other_names.join(", "))
            };
            c.push(
                assertion,
                format!("no trace holds this route ({others})"),
                false,
            );
            continue;
        }
        let v = m.reaching_all as f64 / m.traces as f64;
        let mut measured = format!("{} ({}/{})", pct(v), m.reaching_all, m.traces);
        let short: Vec<String> = r
            .reaches
            .iter()
            .zip(&m.missing)
            .filter(|(_, &n)| n > 0)
            .map(|(s, n)| format!("{s} in {n}"))
            .collect();
        if !short.is_empty() {
            let _ = write!(measured, "; missing {}", short.join(", "));
        }
        c.push(assertion, measured, v >= min);
    }
    c.out
}

// ---------------------------------------------------------------------------------------------
// JUnit XML (shared with `diff`).

/// One JUnit test case.
#[derive(Clone, Debug, PartialEq)]
pub struct JunitCase {
    /// Grouping (`classname`).
    pub class: String,
    /// Test name.
    pub name: String,
    /// Failure message, when it failed.
    pub failure: Option<String>,
    /// Extra text (`system-out`).
    pub output: String,
}

impl From<&AssertionResult> for JunitCase {
    fn from(r: &AssertionResult) -> Self {
        JunitCase {
            class: r.subject.clone(),
            name: r.assertion.clone(),
            failure: (!r.passed).then(|| format!("measured: {}", r.measured)),
            output: format!("measured: {}", r.measured),
        }
    }
}

/// Escapes text for XML content and attribute values; drops characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML document with one suite.
pub fn junit_xml(suite: &str, cases: &[JunitCase]) -> String {
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites tests=\"{}\" failures=\"{failures}\">",
        cases.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
        xml_escape(suite),
        cases.len()
    );
    for c in cases {
        let _ = write!(
            s,
            "    <testcase classname=\"{}\" name=\"{}\">",
            xml_escape(&c.class),
            xml_escape(&c.name)
        );
        if let Some(f) = &c.failure {
            let _ = write!(
                s,
                "<failure message=\"{}\">{}</failure>",
                xml_escape(f),
                xml_escape(f)
            );
        }
        if !c.output.is_empty() {
            let _ = write!(s, "<system-out>{}</system-out>", xml_escape(&c.output));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// Writes a JUnit XML file.
pub fn write_junit(path: &Path, suite: &str, cases: &[JunitCase]) -> anyhow::Result<()> {
    std::fs::write(path, junit_xml(suite, cases))
        .with_context(|| format!("writing JUnit XML {}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An edge as the analyzer reports it, with the fields check and diff look at.
    pub(crate) fn edge(c: &str, s: &str, req: u64, err: u64, p99: f64, rtx: u64) -> EdgeStats {
        EdgeStats {
            client: c.into(),
            server: s.into(),
            protocol: "http".into(),
            connections: 3,
            failed_connections: 0,
            requests: req,
            errors: err,
            p50_ms: Some(p99 / 4.0),
            p95_ms: Some(p99 / 2.0),
            p99_ms: Some(p99),
            retransmits: rtx,
            bytes_sent: 0,
            bytes_received: 0,
            status: Health::Ok,
            reasons: Vec::new(),
            rate_per_s: 0.0,
            server_p50_ms: None,
            server_p99_ms: None,
        }
    }

    /// A service as the analyzer reports it, with the fields check and diff look at.
    pub(crate) fn service(
        name: &str,
        requests: u64,
        errors: u64,
        p99: Option<f64>,
        status: Health,
    ) -> ServiceStats {
        ServiceStats {
            service: name.into(),
            instances: 1,
            requests,
            errors,
            error_rate: ratio(errors, requests),
            p50_ms: p99.map(|p| p / 4.0),
            p95_ms: p99.map(|p| p / 2.0),
            p99_ms: p99,
            status,
            reasons: Vec::new(),
            kind: "exe+port".into(),
            executables: Vec::new(),
            ports: Vec::new(),
            requests_sent: 0,
            calls: requests,
            failed_connections: 0,
            latency_objective_ms: 500.0,
        }
    }

    fn snap() -> Snapshot {
        Snapshot {
            window_s: 20.0,
            services: vec![
                service("nginx", 1000, 0, Some(9.0), Health::Ok),
                service("api", 1000, 30, Some(8.0), Health::Critical),
            ],
            edges: vec![
                edge("client", "nginx", 1000, 0, 9.0, 0),
                edge("nginx", "api", 1000, 30, 8.0, 2),
            ],
            ..Default::default()
        }
    }

    fn parse(text: &str) -> anyhow::Result<Expectations> {
        parse_expectations(Path::new("exp.yaml"), text)
    }

    #[test]
    fn findings_are_asserted() {
        let mut sn = snap();
        sn.findings = vec![
            retrace_analyze::Finding {
                id: "F1".into(),
                severity: retrace_analyze::Severity::Critical,
                kind: "connection_failures".into(),
                service: "api".into(),
                edge: "nginx -> api".into(),
                ..Default::default()
            },
            retrace_analyze::Finding {
                id: "F2".into(),
                severity: retrace_analyze::Severity::Info,
                kind: "retransmits".into(),
                service: "api".into(),
                edge: "nginx -> api".into(),
                ..Default::default()
            },
        ];
        let e = parse(
            "findings:\n  - { kind: connection_failures, service: api, min_severity: critical }\n\
             \x20 - { kind: retransmits, edge: nginx -> api }\n\
             \x20 - { kind: retransmits, edge: nginx -> api, min_severity: info }\n\
             \x20 - { kind: dns, exists: false }\n\
             max_finding_severity: warning\n",
        )
        .expect("parses");
        let r: Vec<(String, String, bool)> = evaluate(&e, &sn)
            .into_iter()
            .map(|r| (r.assertion, r.measured, r.passed))
            .collect();
        let want = |a: &str, m: &str, p: bool| (a.to_string(), m.to_string(), p);
        assert_eq!(
            r,
            vec![
                want(
                    "a finding: connection_failures, service api, severity >= critical",
                    "F1",
                    true
                ),
                want(
                    "a finding: retransmits, edge nginx -> api, severity >= warning",
                    "none",
                    false
                ),
                want(
                    "a finding: retransmits, edge nginx -> api, severity >= info",
                    "F2",
                    true
                ),
                want("no finding: dns, severity >= warning", "none", true),
                want(
                    "none above warning",
                    "F1 critical connection_failures api",
                    false
                ),
            ]
        );
        let err =
            parse("findings:\n  - { kind: dns, min_severity: bad }\n").expect_err("a bad severity");
        assert!(err.to_string().starts_with("exp.yaml:2:"), "{err}");
    }

    #[test]
    fn parses_and_evaluates() {
        let e = parse(
            "services:\n  - name: api\n    max_error_rate: 1%\n    status: [warning, critical]\n\
             edges:\n  - edge: nginx -> api\n    max_retransmits: 1\n    requests: {min: 500, max: 2000}\n    max_p99_ms: 10\n\
             \x20 - edge: client -> api\n    exists: false\n\
             only_services: [nginx, api]\nonly_edges: ['client -> nginx']\n",
        )
        .expect("parses");
        let r = evaluate(&e, &snap());
        let lines: Vec<(String, bool)> = r
            .iter()
            .map(|r| (format!("{}: {}", r.subject, r.assertion), r.passed))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("service api: exists".to_string(), true),
                ("service api: error rate <= 1.00%".to_string(), false),
                ("service api: status is warning|critical".to_string(), true),
                ("edge nginx -> api: exists".to_string(), true),
                ("edge nginx -> api: p99 <= 10 ms".to_string(), true),
                (
                    "edge nginx -> api: requests in [500, 2000]".to_string(),
                    true
                ),
                ("edge nginx -> api: retransmits <= 1".to_string(), false),
                ("edge client -> api: does not exist".to_string(), true),
                ("services: none beyond [nginx, api]".to_string(), true),
                ("edges: none beyond [client -> nginx]".to_string(), false),
            ]
        );
        assert_eq!(r[1].measured, "3.00% (30/1000)");
        assert_eq!(r[9].measured, "extra: nginx -> api");
        let text = render_results(&r);
        assert!(text.contains("FAIL  edge nginx -> api: retransmits <= 1 (measured: 2)"));
    }

    #[test]
    fn slo_and_alert_assertions() {
        let one = parse("slo: { service: api, availability: met }\n").expect("one entry");
        assert_eq!(one.slo.len(), 1);
        let e = parse(
            "slo:\n  - { service: api, availability: [met, breached], max_breaches: 0 }\n  - { service: gone, latency: no_data }\nalerts:\n  fired: [SLO Breach]\n  not_fired: [Memory Pressure]\n",
        )
        .expect("parses");
        let mut s = snap();
        s.slo.objectives.push(retrace_analyze::ObjectiveResult {
            service: "api".into(),
            objective: "availability".into(),
            target: 99.0,
            threshold_ms: None,
            requests: 1000,
            bad: 30,
            actual: Some(97.0),
            budget_remaining: 0.9,
            current_burn_rate: 3.0,
            budget_remaining_s: Some(100.0),
            status: retrace_analyze::SloStatus::Missed,
        });
        s.slo.alert_rules.push(retrace_analyze::AlertRuleResult {
            name: "SLO Breach".into(),
            severity: "critical".into(),
            condition: "slo.availability < target".into(),
            for_s: 300.0,
            effective_for_s: 5.0,
            status: "quiet".into(),
            note: String::new(),
        });
        let r = evaluate(&e, &s);
        let lines: Vec<(String, bool)> = r
            .iter()
            .map(|r| (format!("{}: {}", r.subject, r.assertion), r.passed))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("slo api: availability is met|breached".to_string(), false),
                ("slo api: breaches <= 0".to_string(), true),
                ("slo gone: latency is no_data".to_string(), true),
                ("alerts: \"SLO Breach\" fired".to_string(), false),
                (
                    "alerts: \"Memory Pressure\" did not fire".to_string(),
                    false
                ),
            ]
        );
        assert!(
            r[0].measured.starts_with("missed (actual 97.000%"),
            "{}",
            r[0].measured
        );
        assert_eq!(r[4].measured, "no such rule (give the rules with --alerts)");
        let err = parse("slo:\n  - { service: api, availability: fine }\n")
            .expect_err("bad status")
            .to_string();
        assert!(err.starts_with("exp.yaml:2:"), "{err}");
    }

    #[test]
    fn missing_edge_fails_and_skips_its_metrics() {
        let e = parse("edges:\n  - edge: api -> postgres\n    max_error_rate: 0.01\n").expect("ok");
        let r = evaluate(&e, &snap());
        assert_eq!(r.len(), 1);
        assert!(!r[0].passed);
        assert_eq!(r[0].measured, "absent");
    }

    #[test]
    fn unknown_field_has_file_line_and_expected() {
        let err = parse("edges:\n  - edge: a -> b\n    max_p98_ms: 3\n")
            .expect_err("must fail")
            .to_string();
        assert!(err.starts_with("exp.yaml:3:"), "{err}");
        assert!(err.contains("unknown field `max_p98_ms`"), "{err}");
        assert!(err.contains("expected one of"), "{err}");
    }

    #[test]
    fn bad_values_have_locations() {
        let err = parse("services:\n  - name: x\n    max_error_rate: 150%\n")
            .expect_err("must fail")
            .to_string();
        assert!(err.starts_with("exp.yaml:3:"), "{err}");
        assert!(err.contains("fraction between 0 and 1"), "{err}");
        let err = parse("edges:\n  - edge: a => b\n")
            .expect_err("fail")
            .to_string();
        assert!(err.starts_with("exp.yaml:2:"), "{err}");
        assert!(err.contains("client -> server"), "{err}");
        let err = parse("edges: [\n").expect_err("fail").to_string();
        assert!(err.starts_with("exp.yaml:"), "{err}");
        let err = parse("").expect_err("fail").to_string();
        assert!(err.contains("empty file"), "{err}");
        let err = parse("services:\n  - name: x\n    requests: {min: -3}\n")
            .expect_err("fail")
            .to_string();
        assert!(err.starts_with("exp.yaml:3:"), "{err}");
    }

    #[test]
    fn ratio_forms() {
        let e =
            parse("services:\n  - name: a\n    max_error_rate: 0.5%\n    min_error_rate: 0.001\n")
                .expect("ok");
        assert_eq!(e.services[0].max_error_rate, Some(Ratio(0.005)));
        assert_eq!(e.services[0].min_error_rate, Some(Ratio(0.001)));
    }

    #[test]
    fn junit_escapes_everything() {
        let cases = vec![JunitCase {
            class: "edge a -> <b>".into(),
            name: "p99 <= 5 ms & \"q\"".into(),
            failure: Some("measured: 'x' \u{1} </failure>".into()),
            output: String::new(),
        }];
        let x = junit_xml("suite <&>", &cases);
        assert!(x.contains("name=\"suite &lt;&amp;&gt;\""));
        assert!(x.contains("classname=\"edge a -&gt; &lt;b&gt;\""));
        assert!(x.contains("name=\"p99 &lt;= 5 ms &amp; &quot;q&quot;\""));
        assert!(x.contains("&apos;x&apos; \u{FFFD} &lt;/failure&gt;"));
        assert_eq!(x.matches("</failure>").count(), 1);
        assert!(x.contains("tests=\"1\" failures=\"1\""));
    }

    #[test]
    fn parses_trace_expectations() {
        let e = parse(
            "traces:\n  min_client_linked: 95%\n  min_server_linked: 0.99\n  count: {min: 10}\n  routes:\n\
             \x20   - { service: nginx, name: \"GET /checkout/{id}\", reaches: [api, postgres] }\n",
        )
        .expect("parses");
        let t = e.traces.expect("traces");
        assert_eq!(t.min_client_linked, Some(Ratio(0.95)));
        assert_eq!(t.routes[0].reaches, vec!["api", "postgres"]);
        assert_eq!(t.routes[0].min_share, None);
        let err = parse("traces:\n  routes:\n    - { service: a, name: b, reach: [c] }\n")
            .expect_err("unknown field")
            .to_string();
        assert!(err.starts_with("exp.yaml:3:"), "{err}");
        assert!(err.contains("unknown field `reach`"), "{err}");
        let err = parse("traces:\n  min_server_linked: 2\n")
            .expect_err("range")
            .to_string();
        assert!(err.contains("fraction between 0 and 1"), "{err}");
        // An empty traces block asserts nothing.
        let err = parse("traces: {}\n").expect_err("empty").to_string();
        assert!(err.contains("no assertions"), "{err}");
    }

    /// The synthetic shop: wrk -> nginx (an event loop: few of its calls are linked) -> two
    /// Python backends (threads: all linked) -> Redis.
    fn shop_analysis() -> retrace_analyze::Analysis {
        use retrace_analyze::synth::{write_shop_capture, ShopOptions};
        let dir = tempfile::tempdir().expect("tmp");
        let cap = dir.path().join("cap");
        let opts = ShopOptions {
            requests: 300,
            ..Default::default()
        };
        write_shop_capture(&cap, &opts).expect("capture");
        retrace_analyze::analyze(&[cap], &Default::default()).expect("analysis")
    }

    #[test]
    fn trace_assertions_on_the_shop() {
        let a = shop_analysis();
        let cov = &a.trace_coverage;
        let users = "GET /api/users/{id}";
        let route = |service: &str, reaches: &[&str], min: Option<f64>| RouteExpect {
            service: service.into(),
            name: users.into(),
            reaches: reaches.iter().map(|s| s.to_string()).collect(),
            min_share: min.map(Ratio),
        };
        let t = TraceExpect {
            min_client_linked: Some(Ratio(0.99)),
            min_server_linked: Some(Ratio(0.99)),
            count: Some(CountRange {
                min: Some(1),
                max: None,
            }),
            routes: vec![
                route("python3:18081", &["redis-server:6379"], None),
                route("nginx:8080", &["redis-server:6379"], Some(0.5)),
                route("nginx:8080", &["python3:18081", "python3:18082"], Some(0.0)),
                RouteExpect {
                    name: "GET /nope".into(),
                    ..route("nginx:8080", &["redis-server:6379"], None)
                },
            ],
        };
        let r = evaluate_traces(&t, &a);
        let lines: Vec<(String, bool)> = r
            .iter()
            .map(|r| (format!("{}: {}", r.subject, r.assertion), r.passed))
            .collect();
        // nginx's calls are mostly unlinked (an event loop), its inbound requests all are.
        assert!(
            cov.client_share() < 0.99 && cov.server_share() >= 0.99,
            "{cov:?}"
        );
        assert_eq!(
            lines[..3],
            [
                ("traces: client spans linked >= 99.00%".to_string(), false),
                ("traces: server spans linked >= 99.00%".to_string(), true),
                ("traces: traces >= 1".to_string(), true),
            ]
        );
        assert_eq!(
            r[0].measured,
            format!(
                "{} ({}/{})",
                pct(cov.client_share()),
                cov.client_spans_linked,
                cov.client_spans_in_servers
            )
        );
        // A backend's route: passes only when every one of its traces reached Redis.
        let reach = route_reach(&a, &t.routes);
        assert!(reach[0].traces > 0, "{:?}", reach[0]);
        assert_eq!(r[3].passed, reach[0].reaching_all == reach[0].traces);
        assert!(
            r[3].measured.starts_with(&format!(
                "{} ({}/{})",
                pct(reach[0].reaching_all as f64 / reach[0].traces as f64),
                reach[0].reaching_all,
                reach[0].traces
            )),
            "{}",
            r[3].measured
        );
        // nginx's route reaches Redis exactly in the traces (rooted at wrk) holding a span of
        // Redis: counted another way, from the trace summaries and each one's rows.
        let roots: Vec<usize> = a
            .traces
            .iter()
            .filter(|x| x.root_service(&a.requests) == "wrk" && x.root_name(&a.requests) == users)
            .map(|x| x.root as usize)
            .collect();
        let rows = a.requests.rows_of_traces(&roots);
        let with_all = |services: &[&str]| {
            rows.values()
                .filter(|rows| {
                    services.iter().all(|&want| {
                        rows.iter()
                            .any(|&i| a.requests.spans_of(i).any(|s| s.service == want))
                    })
                })
                .count() as u64
        };
        let with_redis = with_all(&["redis-server:6379"]);
        assert_eq!(reach[1].traces, roots.len() as u64);
        assert_eq!(reach[1].reaching_all, with_redis);
        assert!(
            with_redis > 0 && with_redis < reach[1].traces,
            "{:?}",
            reach[1]
        );
        assert_eq!(reach[1].missing, vec![reach[1].traces - with_redis]);
        assert_eq!(
            r[4].passed,
            with_redis as f64 / reach[1].traces as f64 >= 0.5,
            "{:?}",
            r[4]
        );
        // A request goes to one backend: few traces reach both (nginx's calls are linked by
        // its event loop's rules, which can take two calls for one request's).
        let both = with_all(&["python3:18081", "python3:18082"]);
        assert_eq!(reach[2].reaching_all, both);
        assert!(both * 10 < reach[2].traces, "{:?}", reach[2]);
        assert!(r[5].passed, "min_share 0: {:?}", r[5]);
        assert!(
            r[5].measured.contains("; missing python3:18081 in "),
            "{}",
            r[5].measured
        );
        // A route no trace holds fails, naming the ones there are.
        assert!(!r[6].passed);
        assert_eq!(
            r[6].measured,
            "no trace holds this route (nginx:8080's SERVER spans: GET /api/orders/{id}, \
             GET /api/users/{id})"
        );
        assert_eq!(r[6].subject, "route nginx:8080 \"GET /nope\"");
        assert_eq!(r.len(), 7);
    }
}
