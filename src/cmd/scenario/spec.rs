//! The `scenario.yaml` format.
//!
//! ```yaml
//! name: checkout
//! description: client -> nginx -> api -> users, Redis and PostgreSQL behind the api
//! extends: ../checkout        # optional: take services, traffic, capture, analyzer naming from there
//! services:                   # started in this order, stopped in reverse
//!   - name: redis
//!     command: /usr/bin/redis-server
//!     args: ["--port", "{port}", "--dir", "{dir}"]
//!     env: { KEY: value }
//!     user: redis             # run as this user (default: root)
//!     port: 16379
//!     ready: { http: /health, timeout: 20s }   # without `http`: the TCP port accepts
//!     setup: [[cmd, arg...]]  # before start, as `user`
//!     after_ready: [[cmd, arg...]]
//!     templates: { "{scenario}/nginx.conf": "{dir}/nginx.conf" }  # rendered with placeholders
//!     stop_signal: INT        # TERM (default), INT, QUIT
//! service_env:                # extra environment by service name, over its `env` (also for
//!   api: { MODE: "1" }        # services taken by `extends`: a variant without a copy of them)
//! traffic:
//!   duration: 24s
//!   rate: 40                  # requests/s over all connections (omit for closed loop)
//!   concurrency: 4            # keep-alive connections
//!   ids: 500                  # `{id}` in URLs: a random integer in 1..=ids
//!   requests:                 # `{id}`, `{seq}` (1, 2, ... unique in the run) in URL, headers, body
//!     - { method: GET, url: "http://127.0.0.1:18080/checkout/{id}", weight: 4 }
//!     - { url: "http://127.0.0.1:18080/products/7", headers: { X-Seq: "{seq}" } }
//! faults:                     # times from the start of the traffic
//!   - { at: 8s, stop: api, for: 8s }           # or kill: api; start: api
//!   - { at: 4s, loss: { port: 15432, probability: 0.25 }, for: 14s }
//!   - { at: 4s, http: { method: POST, url: "http://127.0.0.1:18081/admin/delay?ms=100" } }
//!   - { at: 4s, leak: { mb_per_s: 20, max_mb: 200 }, for: 10s }
//! capture: { streams: [proc, tcp, l7] }
//! analyze: { services: services.yaml }       # naming rules for the analyzer
//! expect: { ... }             # the `retrace check` format
//! ```
//!
//! Placeholders in commands, args, env values, templates and URLs: `{scenario}` (the folder
//! of the scenario file that declares the service: the base's for inherited services), `{run}` (the run's work folder), `{dir}` (this service's own folder in
//! it), `{port}` (this service's port), `{port:NAME}` (another service's), `{pg_bin}` (the
//! installed PostgreSQL's bin folder), `{python}` (Debian's python3, /usr/bin/python3).
//!
//! A declared port that is busy when the run starts (another scenario, anything else on the
//! machine) is replaced by a free one, and the traffic URLs and faults that name it follow
//! ([`Scenario::move_busy_ports`]); write ports through placeholders elsewhere.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cmd::check::{yaml_error, Expectations};

/// A duration written `8s`, `500ms`, `1m 30s`, or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor (not an untagged enum): errors keep the scalar's line and column.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 8s, 500ms or 1m 30s")
            }
            fn visit_f64<E: serde::de::Error>(self, s: f64) -> Result<Dur, E> {
                if s >= 0.0 && s.is_finite() && s < 1e9 {
                    Ok(Dur(Duration::from_secs_f64(s)))
                } else {
                    Err(E::custom(format!("expected a duration, found {s}")))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, s: u64) -> Result<Dur, E> {
                self.visit_f64(s as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, s: i64) -> Result<Dur, E> {
                self.visit_f64(s as f64)
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Dur, E> {
                humantime::parse_duration(t.trim()).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "expected a duration like 8s, 500ms or 1m 30s, found {t:?} ({e})"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0.as_secs_f64())
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Readiness check of a service.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// `GET` this path on the service's port until it answers 200; without it, wait until
    /// the TCP port accepts connections.
    pub http: Option<String>,
    /// Give up after this long (default 30 s).
    pub timeout: Option<Dur>,
}

/// Signal that stops a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    /// SIGTERM.
    #[default]
    Term,
    /// SIGINT (PostgreSQL's fast shutdown).
    Int,
    /// SIGQUIT (nginx's graceful shutdown).
    Quit,
}

impl StopSignal {
    /// The signal number.
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Term => libc::SIGTERM,
            StopSignal::Int => libc::SIGINT,
            StopSignal::Quit => libc::SIGQUIT,
        }
    }
}

/// A service the scenario starts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Name (used in faults and logs).
    pub name: String,
    /// Program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run as this user (and its group).
    pub user: Option<String>,
    /// TCP port it listens on (loopback).
    pub port: u16,
    /// How to know it is up.
    #[serde(default)]
    pub ready: Ready,
    /// Commands run before it starts, as `user`.
    #[serde(default)]
    pub setup: Vec<Vec<String>>,
    /// Commands run once it is ready (as `user`).
    #[serde(default)]
    pub after_ready: Vec<Vec<String>>,
    /// Files rendered with the placeholders: source → destination.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Signal that stops it.
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// Folder of the scenario file that declares it (`{scenario}` in its strings).
    #[serde(skip)]
    pub origin: PathBuf,
}

/// One kind of request the traffic sends.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// `http://host:port/path`, `{id}` replaced by a random id, `{seq}` by the request's
    /// sequence number in the run (also in header values and the body).
    pub url: String,
    /// Relative frequency.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
}

fn default_method() -> String {
    "GET".to_string()
}

fn default_weight() -> u32 {
    1
}

/// The load the scenario drives.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// How long.
    pub duration: Dur,
    /// Requests per second over all connections (open loop); none: as fast as answered.
    pub rate: Option<f64>,
    /// Keep-alive connections (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// `{id}` ranges over 1..=ids (default 100).
    #[serde(default = "default_ids")]
    pub ids: u64,
    /// Give up on a response after this long (default 5 s).
    pub timeout: Option<Dur>,
    /// What to send.
    pub requests: Vec<RequestSpec>,
    /// Seed of the request mix (default 1: the same sequence every run).
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_concurrency() -> u32 {
    4
}
fn default_ids() -> u64 {
    100
}
fn default_seed() -> u64 {
    1
}

/// Packet loss on a port, with iptables.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    /// Destination TCP port whose packets are dropped (towards the server).
    pub port: u16,
    /// Probability of a drop, 0..1.
    pub probability: f64,
}

/// An HTTP call (e.g. to an admin endpoint that adds latency).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// Method.
    #[serde(default = "default_method")]
    pub method: String,
    /// URL.
    pub url: String,
    /// Body.
    pub body: Option<String>,
}

/// A process that leaks memory.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakSpec {
    /// Growth, MiB per second.
    pub mb_per_s: u32,
    /// Stop growing here, MiB.
    pub max_mb: u32,
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Stop a service (its stop signal); `for` brings it back.
    Stop(String),
    /// SIGKILL a service; `for` brings it back.
    Kill(String),
    /// Start a stopped service.
    Start(String),
    /// Drop packets towards a port; `for` removes the rule.
    Loss(LossSpec),
    /// Send one HTTP request.
    Http(HttpCall),
    /// Start a leaking process; `for` ends it.
    Leak(LeakSpec),
}

/// A fault at a given time of the traffic.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawFault")]
pub struct Fault {
    /// When, from the start of the traffic.
    pub at: Dur,
    /// For how long (then undone), when the action can be undone.
    pub for_: Option<Dur>,
    /// What.
    pub action: FaultAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: Dur,
    #[serde(rename = "for")]
    for_: Option<Dur>,
    stop: Option<String>,
    kill: Option<String>,
    start: Option<String>,
    loss: Option<LossSpec>,
    http: Option<HttpCall>,
    leak: Option<LeakSpec>,
}

impl TryFrom<RawFault> for Fault {
    type Error = String;
    fn try_from(r: RawFault) -> Result<Self, String> {
        let mut actions = Vec::new();
        if let Some(s) = r.stop {
            actions.push(FaultAction::Stop(s));
        }
        if let Some(s) = r.kill {
            actions.push(FaultAction::Kill(s));
        }
        if let Some(s) = r.start {
            actions.push(FaultAction::Start(s));
        }
        if let Some(l) = r.loss {
            if !(l.probability > 0.0 && l.probability <= 1.0) {
                return Err(format!(
                    "loss probability must be in (0, 1], found {}",
                    l.probability
                ));
            }
            actions.push(FaultAction::Loss(l));
        }
        if let Some(h) = r.http {
            actions.push(FaultAction::Http(h));
        }
        if let Some(l) = r.leak {
            actions.push(FaultAction::Leak(l));
        }
        if actions.len() != 1 {
            return Err(format!(
                "a fault takes exactly one of stop, kill, start, loss, http, leak (found {})",
                actions.len()
            ));
        }
        let action = actions.remove(0);
        if r.for_.is_some() && matches!(action, FaultAction::Start(_) | FaultAction::Http(_)) {
            return Err("`for` applies to stop, kill, loss and leak only".to_string());
        }
        Ok(Fault {
            at: r.at,
            for_: r.for_,
            action,
        })
    }
}

/// What the capture records.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// `--streams` of `retrace capture`.
    #[serde(default = "default_streams")]
    pub streams: Vec<String>,
    /// Extra arguments of `retrace capture`.
    #[serde(default)]
    pub args: Vec<String>,
}

fn default_streams() -> Vec<String> {
    ["proc", "tcp", "l7"].map(String::from).to_vec()
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            streams: default_streams(),
            args: Vec::new(),
        }
    }
}

/// How the result is analyzed.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeSpec {
    /// Service naming rules (relative to the scenario folder).
    pub services: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default)]
    description: String,
    extends: Option<String>,
    services: Option<Vec<ServiceSpec>>,
    #[serde(default)]
    service_env: BTreeMap<String, BTreeMap<String, String>>,
    traffic: Option<TrafficSpec>,
    #[serde(default)]
    faults: Vec<Fault>,
    capture: Option<CaptureSpec>,
    analyze: Option<AnalyzeSpec>,
    #[serde(default)]
    expect: Expectations,
}

/// A whole scenario, `extends` resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Services, in start order.
    pub services: Vec<ServiceSpec>,
    /// The load.
    pub traffic: TrafficSpec,
    /// Faults, by time.
    pub faults: Vec<Fault>,
    /// Capture options.
    pub capture: CaptureSpec,
    /// Service naming rules file for the analyzer (absolute).
    pub services_file: Option<PathBuf>,
    /// Expectations.
    pub expect: Expectations,
}

impl Scenario {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Moves every service whose declared port is busy (another run of a scenario, anything
    /// else on the machine) to a port from `free_port`, and follows the move wherever the
    /// scenario names that port: traffic and HTTP-fault URLs and packet-loss faults
    /// (`{port}`/`{port:NAME}` placeholders follow by themselves). Services are named by
    /// program, not port, so the analysis does not change. Returns `(service, from, to)`.
    pub fn move_busy_ports(
        &mut self,
        busy: impl Fn(u16) -> bool,
        mut free_port: impl FnMut() -> anyhow::Result<u16>,
    ) -> anyhow::Result<Vec<(String, u16, u16)>> {
        let declared: Vec<u16> = self.services.iter().map(|s| s.port).collect();
        let mut moves = Vec::new();
        for s in &mut self.services {
            if !busy(s.port) {
                continue;
            }
            // A port another service of this scenario declares would clash later.
            let to = loop {
                let p = free_port()?;
                if !declared.contains(&p) && !moves.iter().any(|(_, _, t)| *t == p) {
                    break p;
                }
            };
            moves.push((s.name.clone(), s.port, to));
            s.port = to;
        }
        let moved = |port: u16| {
            moves
                .iter()
                .find(|(_, from, _)| *from == port)
                .map(|(_, _, to)| *to)
        };
        let move_url = |url: &mut String| {
            if let Ok((host, port, path)) = parse_url(url) {
                if let Some(to) = moved(port) {
                    *url = format!("http://{host}:{to}{path}");
                }
            }
        };
        for r in &mut self.traffic.requests {
            move_url(&mut r.url);
        }
        for f in &mut self.faults {
            match &mut f.action {
                FaultAction::Loss(l) => {
                    if let Some(to) = moved(l.port) {
                        l.port = to;
                    }
                }
                FaultAction::Http(h) => move_url(&mut h.url),
                _ => {}
            }
        }
        Ok(moves)
    }
}

/// Parses a scenario file's text (sections only; `extends` not resolved, folder unknown).
pub fn parse_scenario(path: &Path, text: &str) -> anyhow::Result<Scenario> {
    let raw: RawScenario = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = raw.name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".to_string())
    });
    let (own_services, own_traffic) = (raw.services.is_some(), raw.traffic.is_some());
    let mut sc = Scenario {
        name,
        description: raw.description,
        dir: dir.clone(),
        services: raw
            .services
            .unwrap_or_default()
            .into_iter()
            .map(|mut svc| {
                svc.origin = dir.clone();
                svc
            })
            .collect(),
        traffic: raw.traffic.unwrap_or(TrafficSpec {
            duration: Dur(Duration::ZERO),
            rate: None,
            concurrency: 0,
            ids: default_ids(),
            timeout: None,
            requests: Vec::new(),
            seed: default_seed(),
        }),
        faults: raw.faults,
        capture: raw.capture.clone().unwrap_or_default(),
        services_file: raw
            .analyze
            .as_ref()
            .and_then(|a| a.services.as_ref())
            .map(|s| dir.join(s)),
        expect: raw.expect,
    };
    if let Some(base) = &raw.extends {
        let base_dir = dir.join(base);
        let base_file = base_dir.join("scenario.yaml");
        let text = std::fs::read_to_string(&base_file).with_context(|| {
            format!(
                "{}: extends {base:?}: reading {}",
                path.display(),
                base_file.display()
            )
        })?;
        let b: RawScenario =
            serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(&base_file, &e))?;
        if b.extends.is_some() {
            anyhow::bail!(
                "{}: extends {}, which extends another: one level only",
                path.display(),
                base_file.display()
            );
        }
        if !own_services {
            sc.services = b.services.unwrap_or_default();
            for svc in &mut sc.services {
                svc.origin = base_dir.clone();
            }
        }
        if !own_traffic {
            if let Some(t) = b.traffic {
                sc.traffic = t;
            }
        }
        if raw.capture.is_none() {
            sc.capture = b.capture.unwrap_or_default();
        }
        if raw.analyze.is_none() {
            sc.services_file = b.analyze.and_then(|a| a.services).map(|s| base_dir.join(s));
        }
    }
    for (name, env) in raw.service_env {
        let Some(svc) = sc.services.iter_mut().find(|s| s.name == name) else {
            anyhow::bail!("{}: service_env: no service named {name:?}", path.display());
        };
        svc.env.extend(env);
    }
    validate(path, &sc)?;
    Ok(sc)
}

/// Reads `DIR/scenario.yaml` (or the file itself when given one).
pub fn load_scenario(path: &Path) -> anyhow::Result<Scenario> {
    let file = if path.is_dir() {
        path.join("scenario.yaml")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading scenario {}", file.display()))?;
    let mut sc = parse_scenario(&file, &text)?;
    sc.dir = std::fs::canonicalize(&sc.dir)
        .with_context(|| format!("resolving {}", sc.dir.display()))?;
    for svc in &mut sc.services {
        svc.origin = std::fs::canonicalize(&svc.origin)
            .with_context(|| format!("resolving {}", svc.origin.display()))?;
    }
    if let Some(f) = &sc.services_file {
        sc.services_file = Some(
            std::fs::canonicalize(f)
                .with_context(|| format!("{}: services file {}", file.display(), f.display()))?,
        );
    }
    Ok(sc)
}

fn validate(path: &Path, sc: &Scenario) -> anyhow::Result<()> {
    let p = path.display();
    if sc.services.is_empty() {
        anyhow::bail!(
            "{p}: no services (a `services:` list, or `extends:` a scenario that has one)"
        );
    }
    if sc.traffic.requests.is_empty() || sc.traffic.duration.0.is_zero() {
        anyhow::bail!("{p}: no traffic (`traffic:` with a duration and requests)");
    }
    if sc.traffic.concurrency == 0 || sc.traffic.concurrency > 1024 {
        anyhow::bail!("{p}: traffic.concurrency must be 1..=1024");
    }
    if let Some(r) = sc.traffic.rate {
        if !(r > 0.0 && r <= 100_000.0) {
            anyhow::bail!("{p}: traffic.rate must be in (0, 100000] requests/s");
        }
    }
    if sc.traffic.requests.iter().all(|r| r.weight == 0) {
        anyhow::bail!("{p}: every request has weight 0");
    }
    for r in &sc.traffic.requests {
        parse_url(&r.url).map_err(|e| anyhow::anyhow!("{p}: traffic url {:?}: {e}", r.url))?;
    }
    let mut names = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    for s in &sc.services {
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            anyhow::bail!(
                "{p}: service name {:?}: use letters, digits, - and _",
                s.name
            );
        }
        if !names.insert(s.name.as_str()) {
            anyhow::bail!("{p}: two services named {:?}", s.name);
        }
        if !ports.insert(s.port) {
            anyhow::bail!("{p}: two services on port {}", s.port);
        }
        for cmd in s.setup.iter().chain(&s.after_ready) {
            if cmd.is_empty() {
                anyhow::bail!(
                    "{p}: service {}: an empty setup/after_ready command",
                    s.name
                );
            }
        }
    }
    for f in &sc.faults {
        match &f.action {
            FaultAction::Stop(n) | FaultAction::Kill(n) | FaultAction::Start(n)
                if sc.service(n).is_none() =>
            {
                anyhow::bail!("{p}: fault at {}: no service named {n:?}", f.at);
            }
            FaultAction::Http(h) => {
                parse_url(&h.url)
                    .map_err(|e| anyhow::anyhow!("{p}: fault url {:?}: {e}", h.url))?;
            }
            _ => {}
        }
        if f.at.0 > sc.traffic.duration.0 {
            anyhow::bail!(
                "{p}: fault at {} is after the end of the traffic ({})",
                f.at,
                sc.traffic.duration
            );
        }
    }
    Ok(())
}

/// `http://host:port/path` split into (host, port, path).
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// Values of the placeholders.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    /// Name → value.
    pub map: BTreeMap<String, String>,
}

impl Vars {
    /// Replaces every `{name}` whose name is known; others are left as written.
    pub fn render(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            match after.find('}') {
                Some(j) if self.map.contains_key(&after[..j]) => {
                    out.push_str(&self.map[&after[..j]]);
                    rest = &after[j + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: t
services:
  - name: redis
    command: /usr/bin/redis-server
    args: ["--port", "{port}"]
    port: 16379
  - name: api
    command: "{python}"
    args: ["{scenario}/api.py"]
    port: 18081
    ready: { http: /health, timeout: 5s }
    stop_signal: INT
traffic:
  duration: 20s
  rate: 40
  requests:
    - { url: "http://127.0.0.1:18081/x/{id}", weight: 3 }
faults:
  - { at: 5s, stop: api, for: 5s }
  - { at: 2s, loss: { port: 16379, probability: 0.2 }, for: 10s }
expect:
  edges:
    - edge: client -> api
"#;

    #[test]
    fn busy_ports_move_and_the_scenario_follows() {
        let mut sc = parse_scenario(Path::new("/x/t/scenario.yaml"), GOOD).expect("parses");
        // 16379 is taken; the first free port offered is another service's own port.
        let mut offers = vec![18081, 40001].into_iter();
        let moves = sc
            .move_busy_ports(|p| p == 16379, || Ok(offers.next().expect("offer")))
            .expect("moves");
        assert_eq!(moves, vec![("redis".to_string(), 16379, 40001)]);
        assert_eq!(sc.services[0].port, 40001);
        assert_eq!(sc.services[1].port, 18081);
        assert!(matches!(
            sc.faults[1].action,
            FaultAction::Loss(LossSpec { port: 40001, .. })
        ));
        // The api did not move: its URL stays.
        assert_eq!(sc.traffic.requests[0].url, "http://127.0.0.1:18081/x/{id}");
        let moves = sc
            .move_busy_ports(|p| p == 18081, || Ok(40002))
            .expect("moves");
        assert_eq!(moves, vec![("api".to_string(), 18081, 40002)]);
        assert_eq!(sc.traffic.requests[0].url, "http://127.0.0.1:40002/x/{id}");
        // Nothing busy, nothing moves.
        assert!(sc
            .move_busy_ports(|_| false, || anyhow::bail!("not asked"))
            .expect("no moves")
            .is_empty());
    }

    #[test]
    fn parses_a_scenario() {
        let sc = parse_scenario(Path::new("/x/t/scenario.yaml"), GOOD).expect("parses");
        assert_eq!(sc.services.len(), 2);
        assert_eq!(sc.services[1].stop_signal, StopSignal::Int);
        assert_eq!(sc.traffic.duration, Dur(Duration::from_secs(20)));
        assert_eq!(sc.traffic.concurrency, 4);
        assert_eq!(sc.faults[0].action, FaultAction::Stop("api".into()));
        assert_eq!(sc.faults[0].for_, Some(Dur(Duration::from_secs(5))));
        assert!(matches!(
            sc.faults[1].action,
            FaultAction::Loss(LossSpec { port: 16379, .. })
        ));
        assert_eq!(sc.expect.edges.len(), 1);
    }

    #[test]
    fn errors_point_at_the_line() {
        let bad = GOOD.replace("stop_signal: INT", "stop_signal: KILL");
        let err = format!(
            "{:#}",
            parse_scenario(Path::new("s.yaml"), &bad).expect_err("bad")
        );
        assert!(err.starts_with("s.yaml:13:"), "{err}");
        assert!(err.contains("expected one of"), "{err}");

        let bad = GOOD.replace(
            "  - { at: 5s, stop: api, for: 5s }",
            "  - { at: 5s, stop: api, kill: api }",
        );
        let err = format!(
            "{:#}",
            parse_scenario(Path::new("s.yaml"), &bad).expect_err("bad")
        );
        assert!(err.starts_with("s.yaml:20:"), "{err}");
        assert!(err.contains("exactly one of"), "{err}");

        let bad = GOOD.replace("duration: 20s", "duration: twenty");
        let err = format!(
            "{:#}",
            parse_scenario(Path::new("s.yaml"), &bad).expect_err("bad")
        );
        assert!(err.starts_with("s.yaml:15:"), "{err}");
        assert!(err.contains("expected a duration"), "{err}");

        let bad = GOOD.replace("    port: 18081\n", "    port: 18081\n    prot: 3\n");
        let err = format!(
            "{:#}",
            parse_scenario(Path::new("s.yaml"), &bad).expect_err("bad")
        );
        assert!(err.starts_with("s.yaml:12:"), "{err}");
        assert!(err.contains("unknown field `prot`"), "{err}");

        let bad = GOOD.replace("stop: api, for", "stop: apx, for");
        let err = format!(
            "{:#}",
            parse_scenario(Path::new("s.yaml"), &bad).expect_err("bad")
        );
        assert!(err.contains("no service named \"apx\""), "{err}");
    }

    #[test]
    fn service_env_reaches_inherited_services() {
        let dir = std::env::temp_dir().join(format!("retrace-spec-env-{}", std::process::id()));
        let base = dir.join("base");
        let variant = dir.join("variant");
        std::fs::create_dir_all(&base).expect("base folder");
        std::fs::create_dir_all(&variant).expect("variant folder");
        let base_text = GOOD.replace("    stop_signal: INT\n", "    env: { A: \"1\", B: x }\n");
        std::fs::write(base.join("scenario.yaml"), &base_text).expect("base file");
        let text = "extends: ../base\nservice_env:\n  api: { B: \"2\", C: \"{port}\" }\n";
        let file = variant.join("scenario.yaml");
        let sc = parse_scenario(&file, text).expect("parses");
        let api = sc.service("api").expect("inherited api");
        let env: Vec<(&str, &str)> = api
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, vec![("A", "1"), ("B", "2"), ("C", "{port}")]);
        assert!(sc.service("redis").expect("redis").env.is_empty());
        let err = format!(
            "{:#}",
            parse_scenario(
                &file,
                "extends: ../base\nservice_env: { apx: { B: \"2\" } }\n"
            )
            .expect_err("unknown service")
        );
        assert!(
            err.contains("service_env: no service named \"apx\""),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn placeholders() {
        let mut v = Vars::default();
        v.map.insert("port".into(), "80".into());
        v.map.insert("port:api".into(), "81".into());
        assert_eq!(v.render("a{port}b{port:api}{unknown}{"), "a80b81{unknown}{");
        assert_eq!(
            parse_url("http://127.0.0.1:18080/x/{id}?q=1"),
            Ok(("127.0.0.1".into(), 18080, "/x/{id}?q=1".into()))
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://x:99999/").is_err());
    }
}
