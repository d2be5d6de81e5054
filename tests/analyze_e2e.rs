//! End to end, as root: a real stack on loopback (the `checkout` and `api-down` scenarios:
//! a load client, nginx as a reverse proxy, a Python api calling a Python users service,
//! Redis and PostgreSQL), run, captured and analyzed by `retrace scenario run`, then the
//! analysis compared with the ground truth the programs write themselves:
//!
//! - nginx's access log (`logs/nginx.log`, format `retrace_timed` in
//!   `scenarios/common/nginx.conf`): every client request with its status, `$request_time`
//!   (server side, ms resolution), and every upstream attempt with its status and
//!   `$upstream_response_time` (nginx as the api's client, ms resolution);
//! - the api's request log (`logs/api.log`): every request with its status and the time from
//!   reading the request line to writing the response headers (µs resolution);
//! - the users service's request log (`logs/users.log`) and the load generator's report
//!   (`loadgen.json`).
//!
//! Asserted: exactly the expected edges between the stack's services, request and error
//! counts equal to the logs, Redis and PostgreSQL calls equal to what the api's code does for
//! the requests it logged, and latency percentiles within the logs' resolution.
//!
//! `churn_counts_every_request_once` holds "every request is counted exactly once" on the
//! `churn` scenario: the api opens fresh connections for every request from a short-lived
//! thread (fd numbers reused within milliseconds, loopback 4-tuples repeating), users is
//! stopped for 9 s (refused connects) and 5 % of the packets towards Redis are dropped for
//! 10 s. Its ground truth: the servers' own logs (nginx, api, users), every downstream call
//! the api logged with its outcome (`call ...` lines, scenarios/common/api.py), the load
//! generator's report, and the kernel's own record beside the run: an ftrace instance
//! (retransmits per port from `tcp:tcp_retransmit_skb`, the 4-tuples of outgoing connections)
//! and bpftrace (the api's close/connect fds; the retransmits again, shown only: it misses
//! some, see `KERNEL_TRUTH_BT`). Asserted: served requests and errors per service,
//! attempts/errors/failed connections per edge (1 %), no stray edge or service, no request
//! reported unanswered that its caller saw answered, retransmits per edge within 5 % of the
//! kernel's count; and that the run stressed what it should (4-tuples repeated, fds reused
//! within 1 ms). Needs bpftrace (Debian package; tracefs is mounted if absent).
//! `RETRACE_CHURN_RUN=<kept run folder>` checks a kept run again without root (its
//! `run/analysis` as it is: re-analyze into it first to judge a changed analyzer).
//!
//! Not root: prints "skipped: needs root" and passes, unless `RETRACE_REQUIRE_BPF=1` (CI),
//! then it fails. The run folder is deleted on success and kept (its path printed) on
//! failure.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

mod common;
use common::*;

use retrace_analyze::Analysis;

/// Both scenarios use the same ports: one live run at a time.
static LIVE: Mutex<()> = Mutex::new(());

/// The stack's services, as named by `scenarios/common/services.yaml`.
const STACK: &[&str] = &["client", "nginx", "api", "users", "redis", "postgres"];

/// Every edge between the stack's services, with its protocol.
const EXPECTED_EDGES: &[(&str, &str, &str)] = &[
    ("client", "nginx", "http"),
    ("nginx", "api", "http"),
    ("api", "users", "http"),
    ("api", "redis", "redis"),
    ("api", "postgres", "postgres"),
];

/// One row of `requests.csv`.
#[derive(Debug)]
struct Req {
    client: String,
    server: String,
    protocol: String,
    method: String,
    target: String,
    status: String,
    latency_ms: Option<f64>,
    server_latency_ms: Option<f64>,
}

/// A finished scenario run and its analysis.
struct Run {
    dir: RunDir,
    out: PathBuf,
    analysis: Analysis,
    requests: Vec<Req>,
    secs: f64,
    /// What `retrace scenario run` printed (port moves, faults, timings).
    stdout: String,
}

impl Run {
    fn log(&self, name: &str) -> String {
        let p = self.out.join("logs").join(format!("{name}.log"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    fn edge(&self, client: &str, server: &str) -> &retrace_analyze::EdgeStats {
        let v: Vec<_> = self
            .analysis
            .edges
            .iter()
            .filter(|e| e.client == client && e.server == server)
            .collect();
        assert_eq!(
            v.len(),
            1,
            "edge {client} -> {server}: expected one (one protocol), found {v:?}"
        );
        v[0]
    }

    fn service(&self, name: &str) -> &retrace_analyze::ServiceStats {
        self.analysis
            .services
            .iter()
            .find(|s| s.service == name)
            .unwrap_or_else(|| panic!("no service {name} in the analysis"))
    }

    fn rows<'a>(&'a self, client: &'a str, server: &'a str) -> impl Iterator<Item = &'a Req> {
        self.requests
            .iter()
            .filter(move |r| r.client == client && r.server == server)
    }
}

fn run_scenario(name: &str) -> Run {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!(
        "retrace-e2e-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("run folder");
    let dir = RunDir(dir);
    let out = dir.0.join("run");
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["scenario", "run"])
        .arg(root.join("scenarios").join(name))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("running retrace scenario run");
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!(
        "--- retrace scenario run {name} ({secs:.1} s, {}):\n{stdout}{stderr}",
        o.status
    );
    // Exit 1 with an analysis means the scenario's own expectations failed: this test
    // judges the analysis against the ground truth itself, so it goes on.
    let summary = out.join("analysis").join("summary.json");
    assert!(
        summary.is_file(),
        "retrace scenario run {name} wrote no analysis ({})",
        o.status
    );
    let analysis: Analysis =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary.json"))
            .expect("summary.json parses");
    let requests = read_requests(&out.join("analysis").join("requests.csv"));
    Run {
        dir,
        out,
        analysis,
        requests,
        secs,
        stdout: stdout.into_owned(),
    }
}

fn read_requests(path: &Path) -> Vec<Req> {
    let mut rd = csv::Reader::from_path(path).expect("requests.csv");
    let headers = rd.headers().expect("header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("requests.csv has no column {name}: {headers:?}"))
    };
    let (c, s, p, m, t, st, l, sl) = (
        col("client"),
        col("server"),
        col("protocol"),
        col("method"),
        col("target"),
        col("status"),
        col("latency_ms"),
        col("server_latency_ms"),
    );
    let num = |v: &str| (!v.is_empty()).then(|| v.parse::<f64>().expect("a latency"));
    rd.records()
        .map(|r| {
            let r = r.expect("a requests.csv record");
            Req {
                client: r[c].to_string(),
                server: r[s].to_string(),
                protocol: r[p].to_string(),
                method: r[m].to_string(),
                target: r[t].to_string(),
                status: r[st].to_string(),
                latency_ms: num(&r[l]),
                server_latency_ms: num(&r[sl]),
            }
        })
        .collect()
}

fn bad(line: &str) -> ! {
    panic!("malformed access log line: {line}")
}

/// One line of nginx's `retrace_timed` access log.
#[derive(Debug)]
struct NginxLine {
    status: u16,
    request_time_ms: f64,
    /// One per upstream attempt (empty when nginx answered itself).
    upstream: Vec<(u16, Option<f64>)>,
    path: String,
}

/// The value of `key="..."` in `line`.
fn quoted<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)? + key.len();
    let rest = &line[i..];
    Some(&rest[..rest.find('"')?])
}

fn parse_nginx(log: &str) -> Vec<NginxLine> {
    let mut v = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("access ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().take(3).collect();
        if f.len() < 3 {
            bad(line);
        }
        let status: u16 = f[1].parse().unwrap_or_else(|_| bad(line));
        let rt: f64 = f[2].parse().unwrap_or_else(|_| bad(line));
        let us = quoted(line, "us=\"").unwrap_or_else(|| bad(line));
        let ut = quoted(line, "ut=\"").unwrap_or_else(|| bad(line));
        let split = |s: &str| -> Vec<String> {
            s.split([',', ':'])
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty() && x != "-")
                .collect()
        };
        let statuses = split(us);
        let mut times = split(ut).into_iter();
        let upstream = statuses
            .iter()
            .map(|s| {
                let t = times.next().and_then(|t| t.parse::<f64>().ok());
                (s.parse().unwrap_or(0), t.map(|t| t * 1000.0))
            })
            .collect();
        let request = line
            .rfind(" \"")
            .map(|i| line[i + 2..].trim_end_matches('"'))
            .unwrap_or_else(|| bad(line));
        let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
        v.push(NginxLine {
            status,
            request_time_ms: rt * 1000.0,
            upstream,
            path,
        });
    }
    v
}

/// One line of a Python service's request log:
/// `epoch method path status ms [ms-from-request-line-to-headers]`.
#[derive(Debug)]
struct PyLine {
    path: String,
    status: u16,
    ms: f64,
    first_ms: Option<f64>,
}

fn parse_python(log: &str) -> Vec<PyLine> {
    log.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if !(5..=6).contains(&f.len()) || f[0].parse::<f64>().is_err() {
                return None; // a traceback or another message
            }
            Some(PyLine {
                path: f[2].to_string(),
                status: f[3].parse().ok()?,
                ms: f[4].parse().ok()?,
                first_ms: f.get(5).and_then(|v| v.parse().ok()),
            })
        })
        .filter(|l| l.path != "/health")
        .collect()
}

/// Linear-interpolation quantile (the analyzer's method), over unsorted values.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil().min((v.len() - 1) as f64) as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// Collects every comparison, prints them as a table, fails at the end if any failed.
#[derive(Default)]
struct Checks {
    lines: Vec<(bool, String)>,
    /// Requests that may be in flight in a process when a fault kills it, for comparisons
    /// with the killed process's own log: it cannot log what it was serving when it died
    /// (though it may already have called its backends for it). 0 (exact) unless the
    /// scenario kills a service. Comparisons with the logs of processes that live on (nginx,
    /// users) stay exact: a request cut off by the kill is a failed request of its edge
    /// (`no response (reset)`), as nginx logs a failed upstream attempt.
    in_flight_slack: u64,
}

impl Checks {
    /// Like `eq`, but allows `in_flight_slack` requests of difference at a fault boundary.
    fn near(&mut self, what: &str, measured: u64, truth: u64) {
        let slack = self.in_flight_slack;
        self.lines.push((
            measured.abs_diff(truth) <= slack,
            format!("{what}: analyzed {measured}, ground truth {truth} (in-flight slack {slack})"),
        ));
    }

    /// `measured` within `rel * truth` (rounded up) plus `slack` of `truth`.
    fn within(&mut self, what: &str, measured: u64, truth: u64, rel: f64, slack: u64) {
        let tol = (rel * truth as f64).ceil() as u64 + slack;
        let diff = measured as i64 - truth as i64;
        let pct = if truth > 0 {
            format!("{:+.2}%", 100.0 * diff as f64 / truth as f64)
        } else {
            "n/a".to_string()
        };
        self.lines.push((
            measured.abs_diff(truth) <= tol,
            format!(
                "{what}: analyzed {measured}, ground truth {truth}, diff {diff:+} ({pct}), tolerance {tol}"
            ),
        ));
    }

    fn eq(&mut self, what: &str, measured: u64, truth: u64) {
        self.lines.push((
            measured == truth,
            format!("{what}: analyzed {measured}, ground truth {truth}"),
        ));
    }

    fn holds(&mut self, what: &str, ok: bool, detail: String) {
        self.lines.push((ok, format!("{what}: {detail}")));
    }

    /// Percentiles of `truth_values` against the analyzed ones, within
    /// `max(rel * truth, abs_ms)`.
    fn percentiles(
        &mut self,
        what: &str,
        analyzed: [Option<f64>; 3],
        truth_values: &[f64],
        rel: f64,
        abs_ms: f64,
    ) {
        for (i, q) in [0.50, 0.95, 0.99].into_iter().enumerate() {
            let name = ["p50", "p95", "p99"][i];
            let t = quantile(truth_values, q);
            let (ok, detail) = match (analyzed[i], t) {
                (Some(a), Some(t)) => {
                    let tol = (rel * t).max(abs_ms);
                    (
                        (a - t).abs() <= tol,
                        format!(
                            "analyzed {a:.3} ms, ground truth {t:.3} ms (n={}), diff {:+.3} ms, tolerance {tol:.3} ms",
                            truth_values.len(),
                            a - t
                        ),
                    )
                }
                (a, t) => (false, format!("analyzed {a:?}, ground truth {t:?}")),
            };
            self.lines.push((ok, format!("{what} {name}: {detail}")));
        }
    }

    fn finish(self, title: &str, run: &Run) {
        let mut text = format!("\n=== {title} ({:.1} s) ===\n", run.secs);
        let a = &run.analysis;
        let _ = writeln!(
            text,
            "capture: {} events, {} dropped {:?}, completeness {:.4}, warnings {:?}",
            a.events, a.dropped, a.dropped_by_kind, a.completeness, a.warnings
        );
        for e in &a.edges {
            let _ = writeln!(
                text,
                "edge {} -> {} {}: conns {} failed {} requests {} errors {} p50/p95/p99 {:?}/{:?}/{:?} server p50/p99 {:?}/{:?}",
                e.client,
                e.server,
                e.protocol,
                e.connections,
                e.failed_connections,
                e.requests,
                e.errors,
                e.p50_ms,
                e.p95_ms,
                e.p99_ms,
                e.server_p50_ms,
                e.server_p99_ms
            );
        }
        let failed = self.lines.iter().filter(|(ok, _)| !ok).count();
        for (ok, l) in &self.lines {
            let _ = writeln!(text, "{} {l}", if *ok { "ok  " } else { "FAIL" });
        }
        println!("{text}");
        assert!(
            failed == 0,
            "{title}: {failed} of {} comparisons with the ground truth failed (see above; run folder {})",
            self.lines.len(),
            run.dir.0.display()
        );
    }
}

/// Tolerances. nginx logs times in whole ms: each logged time is within 1 ms of the true
/// one (difference of two ms-truncated clocks), so every order statistic, hence every
/// percentile, is too; plus nginx's cached clock (updated once per event-loop turn).
const NGINX_REL: f64 = 0.05;
const NGINX_ABS_MS: f64 = 2.0;
/// The api logs in µs, from `monotonic()` taken right after the read and the write that
/// the capture times, with some Python between the syscall and the clock, and the GIL: a
/// thread that returns from a syscall waits for it (up to the 5 ms switch interval) before it
/// can read the clock, which moves the app's tail, not the kernel's, when the machine is busy
/// (2 cores, the three scenarios of this file at once: one run measured p95 6.069 ms against
/// the app's 6.439 ms, with p50 and p99 within 0.03 ms).
const PY_REL: f64 = 0.08;
const PY_ABS_MS: f64 = 0.25;

fn edge_set(run: &Run) -> BTreeSet<(String, String, String)> {
    run.analysis
        .edges
        .iter()
        .filter(|e| STACK.contains(&e.client.as_str()) && STACK.contains(&e.server.as_str()))
        .map(|e| (e.client.clone(), e.server.clone(), e.protocol.clone()))
        .collect()
}

fn check_edges(c: &mut Checks, run: &Run) {
    let want: BTreeSet<(String, String, String)> = EXPECTED_EDGES
        .iter()
        .map(|(a, b, p)| (a.to_string(), b.to_string(), p.to_string()))
        .collect();
    let got = edge_set(run);
    c.holds(
        "edges between the stack's services",
        got == want,
        format!(
            "missing {:?}, unexpected {:?}",
            want.difference(&got).collect::<Vec<_>>(),
            got.difference(&want).collect::<Vec<_>>()
        ),
    );
}

/// Client-facing counts and nginx's latency.
fn check_front(c: &mut Checks, run: &Run, nginx: &[NginxLine]) {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.out.join("loadgen.json")).expect("loadgen.json"))
            .expect("loadgen.json parses");
    let front = run.edge("client", "nginx");
    c.eq(
        "client -> nginx requests vs nginx access log",
        front.requests,
        nginx.len() as u64,
    );
    c.eq(
        "client -> nginx requests vs load generator",
        front.requests,
        report["requests"].as_u64().unwrap_or(0),
    );
    let fivexx = nginx.iter().filter(|l| l.status >= 500).count() as u64;
    c.eq("client -> nginx errors vs nginx 5xx", front.errors, fivexx);
    c.eq(
        "client -> nginx errors vs load generator",
        front.errors,
        report["errors"].as_u64().unwrap_or(0),
    );
    c.eq(
        "nginx service requests vs access log",
        run.service("nginx").requests,
        nginx.len() as u64,
    );
    let rt: Vec<f64> = nginx.iter().map(|l| l.request_time_ms).collect();
    let s = run.service("nginx");
    c.percentiles(
        "nginx server-side latency vs $request_time",
        [s.p50_ms, s.p95_ms, s.p99_ms],
        &rt,
        NGINX_REL,
        NGINX_ABS_MS,
    );
}

/// nginx -> api: attempts, errors, latency seen by nginx and by the api.
fn check_api(c: &mut Checks, run: &Run, nginx: &[NginxLine], api: &[PyLine]) {
    let attempts: Vec<&(u16, Option<f64>)> = nginx.iter().flat_map(|l| &l.upstream).collect();
    let failed_attempts = attempts.iter().filter(|(s, _)| *s >= 500).count() as u64;
    let e = run.edge("nginx", "api");
    c.eq(
        "nginx -> api requests (incl. failed connections) vs upstream attempts in access log",
        e.requests,
        attempts.len() as u64,
    );
    c.eq(
        "nginx -> api errors vs failed upstream attempts (5xx) in access log",
        e.errors,
        failed_attempts,
    );
    let answered = run
        .rows("nginx", "api")
        .filter(|r| r.status.parse::<u16>().is_ok())
        .count() as u64;
    c.eq(
        "nginx -> api answered requests vs api request log",
        answered,
        api.len() as u64,
    );
    let api_5xx = api.iter().filter(|l| l.status >= 500).count() as u64;
    let answered_5xx = run
        .rows("nginx", "api")
        .filter(|r| r.status.parse::<u16>().is_ok_and(|s| s >= 500))
        .count() as u64;
    c.eq(
        "nginx -> api 5xx answers vs api request log",
        answered_5xx,
        api_5xx,
    );
    // nginx's view of the api (client side, ms resolution).
    let ut: Vec<f64> = attempts
        .iter()
        .filter(|(s, _)| *s < 500)
        .filter_map(|(_, t)| *t)
        .collect();
    let answered_lat: Vec<f64> = run
        .rows("nginx", "api")
        .filter(|r| r.status.parse::<u16>().is_ok_and(|s| s < 500))
        .filter_map(|r| r.latency_ms)
        .collect();
    c.percentiles(
        "nginx -> api client-side latency (answered < 500) vs $upstream_response_time",
        [
            quantile(&answered_lat, 0.5),
            quantile(&answered_lat, 0.95),
            quantile(&answered_lat, 0.99),
        ],
        &ut,
        NGINX_REL,
        NGINX_ABS_MS,
    );
    if failed_attempts == 0 {
        c.percentiles(
            "nginx -> api edge latency (edges.csv) vs $upstream_response_time",
            [e.p50_ms, e.p95_ms, e.p99_ms],
            &ut,
            NGINX_REL,
            NGINX_ABS_MS,
        );
    }
    // The api's own view (server side, µs resolution).
    let first: Vec<f64> = api.iter().filter_map(|l| l.first_ms).collect();
    assert_eq!(
        first.len(),
        api.len(),
        "the api's request log lacks the request-line-to-headers column (scenarios/common/api.py)"
    );
    let slat: Vec<f64> = run
        .rows("nginx", "api")
        .filter_map(|r| r.server_latency_ms)
        .collect();
    c.percentiles(
        "api server-side latency (requests.csv) vs api request log",
        [
            quantile(&slat, 0.5),
            quantile(&slat, 0.95),
            quantile(&slat, 0.99),
        ],
        &first,
        PY_REL,
        PY_ABS_MS,
    );
}

/// What the api does behind each request it logged (see scenarios/common/api.py): one
/// users call and one Redis GET per checkout; a price SELECT and an order INSERT per
/// successful checkout; one product SELECT per product.
fn check_backends(c: &mut Checks, run: &Run, api: &[PyLine], users: &[PyLine]) {
    let checkouts = api.iter().filter(|l| l.path.starts_with("/checkout/"));
    let checkout_200 = checkouts.clone().filter(|l| l.status == 200).count() as u64;
    let products_200 = api
        .iter()
        .filter(|l| l.path.starts_with("/products/") && l.status == 200)
        .count() as u64;
    c.eq(
        "api -> users requests vs users request log",
        run.edge("api", "users").requests,
        users.len() as u64,
    );
    c.near(
        "api -> users requests vs checkouts in the api log",
        run.edge("api", "users").requests,
        checkouts.count() as u64,
    );
    c.eq(
        "api -> users errors vs users 5xx",
        run.edge("api", "users").errors,
        users.iter().filter(|l| l.status >= 500).count() as u64,
    );
    // Compared with the api's own log, which a stopped api cannot complete: a checkout it
    // was serving may have made its calls without being logged (`near`: the in-flight slack,
    // 0 outside api-down).
    let gets = run
        .rows("api", "redis")
        .filter(|r| r.method.eq_ignore_ascii_case("GET"))
        .count() as u64;
    c.near(
        "api -> redis GETs vs successful checkouts in the api log",
        gets,
        checkout_200,
    );
    let pg = |prefix: &str| {
        run.rows("api", "postgres")
            .filter(|r| r.protocol == "postgres")
            .filter(|r| {
                r.target
                    .trim_start()
                    .to_ascii_uppercase()
                    .starts_with(prefix)
            })
            .count() as u64
    };
    c.near(
        "api -> postgres price SELECTs vs successful checkouts",
        pg("SELECT PRICE FROM PRODUCTS"),
        checkout_200,
    );
    c.near(
        "api -> postgres order INSERTs vs successful checkouts",
        pg("INSERT INTO ORDERS"),
        checkout_200,
    );
    c.near(
        "api -> postgres product SELECTs vs products in the api log",
        pg("SELECT ID, NAME, PRICE FROM PRODUCTS"),
        products_200,
    );
    c.eq(
        "api -> postgres errors",
        run.edge("api", "postgres").errors,
        0,
    );
    // The users service's own view, when its log has the µs column (as the api's does).
    let first: Vec<f64> = users.iter().filter_map(|l| l.first_ms).collect();
    if !users.is_empty() && first.len() == users.len() {
        let slat: Vec<f64> = run
            .rows("api", "users")
            .filter_map(|r| r.server_latency_ms)
            .collect();
        c.percentiles(
            "users server-side latency vs users request log",
            [
                quantile(&slat, 0.5),
                quantile(&slat, 0.95),
                quantile(&slat, 0.99),
            ],
            &first,
            PY_REL,
            PY_ABS_MS,
        );
    } else {
        let ms: Vec<f64> = users.iter().map(|l| l.ms).collect();
        println!(
            "users: its log has no request-line-to-headers column; handler time p50/p99 {:?}/{:?} ms (not compared)",
            quantile(&ms, 0.5),
            quantile(&ms, 0.99)
        );
    }
}

#[test]
fn checkout_analysis_matches_the_ground_truth() {
    if !may_run("checkout_analysis_matches_the_ground_truth") {
        return;
    }
    let _live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let run = run_scenario("checkout");
    let nginx = parse_nginx(&run.log("nginx"));
    let nginx: Vec<NginxLine> = nginx.into_iter().filter(|l| l.path != "/health").collect();
    let api = parse_python(&run.log("api"));
    let users = parse_python(&run.log("users"));
    assert!(
        nginx.len() > 100,
        "too few requests in nginx's log: {}",
        nginx.len()
    );
    let mut c = Checks::default();
    check_edges(&mut c, &run);
    check_front(&mut c, &run, &nginx);
    check_api(&mut c, &run, &nginx, &api);
    check_backends(&mut c, &run, &api, &users);
    c.finish("checkout vs ground truth", &run);
}

#[test]
fn api_down_errors_match_the_ground_truth() {
    if !may_run("api_down_errors_match_the_ground_truth") {
        return;
    }
    let _live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let run = run_scenario("api-down");
    let nginx = parse_nginx(&run.log("nginx"));
    let nginx: Vec<NginxLine> = nginx.into_iter().filter(|l| l.path != "/health").collect();
    let api = parse_python(&run.log("api"));
    let users = parse_python(&run.log("users"));
    // The api is stopped mid-run: at most the load generator's concurrency (4 connections)
    // of requests can be in flight in it at that moment, missing from its own log although
    // their calls to users, Redis and PostgreSQL were made (only the api-log comparisons use
    // this slack). Requests nginx had sent on its keepalive
    // connections when the api died, and the kill reset, are counted as failed nginx -> api
    // requests, exactly as nginx's log counts failed upstream attempts (before requests cut
    // off by a close or reset were counted as errors, 328 analyzed errors faced 331 logged).
    let mut c = Checks {
        in_flight_slack: 4,
        ..Checks::default()
    };
    check_edges(&mut c, &run);
    let fivexx = nginx.iter().filter(|l| l.status >= 500).count();
    c.holds(
        "the api's stop shows in nginx's log",
        fivexx > 0,
        format!("{fivexx} 5xx answers of {}", nginx.len()),
    );
    let e = run.edge("nginx", "api");
    c.holds(
        "nginx -> api shows the api's stop",
        e.failed_connections + e.errors > 0,
        format!(
            "{} failed connections, {} errors",
            e.failed_connections, e.errors
        ),
    );
    check_front(&mut c, &run, &nginx);
    check_api(&mut c, &run, &nginx, &api);
    check_backends(&mut c, &run, &api, &users);
    c.finish("api-down vs ground truth", &run);
}

// ---------------------------------------------------------------------------------------------
// churn: every request counted exactly once, with fresh connections per request.

/// The kernel's own record of the churn run, beside the capture and independent of it: an
/// ftrace instance (no BPF) records `tcp:tcp_retransmit_skb` (every retransmit, its ports and
/// error) and `sock:inet_sock_set_state` out of SYN-SENT (every outgoing connection's
/// 4-tuple); bpftrace records the close/connect syscalls of python3 processes (the api's fd
/// reuse) and the retransmits once more. bpftrace's retransmit count is shown, not used: a
/// classic-tracepoint BPF program is skipped when it fires inside another BPF program on the
/// same CPU (a softirq retransmit during a capture program: `recursion_misses` in `bpftool
/// prog`), and on this stack it missed ~2 % (1609 of ftrace's 1638 towards PostgreSQL).
const KERNEL_TRUTH_BT: &str = r#"
BEGIN { printf("READY\n"); }
tracepoint:tcp:tcp_retransmit_skb { printf("R %d %d %d %d\n", args->sport, args->dport, args->err, args->state); }
tracepoint:syscalls:sys_enter_close /comm == "python3"/ { printf("X %d %d %llu\n", pid, args->fd, nsecs); }
tracepoint:syscalls:sys_enter_connect /comm == "python3"/ { printf("K %d %d %llu\n", pid, args->fd, nsecs); }
"#;

/// The ftrace events of the kernel truth, with their filters.
const KERNEL_TRUTH_EVENTS: &[(&str, &str)] = &[
    ("tcp/tcp_retransmit_skb", ""),
    ("sock/inet_sock_set_state", "oldstate == 2 && protocol == 6"),
];

/// bpftrace and an ftrace instance running beside the scenario.
struct KernelTruth {
    child: Option<std::process::Child>,
    out: PathBuf,
    err: PathBuf,
    /// The ftrace instance, removed on drop.
    instance: Option<PathBuf>,
}

/// What the kernel truth recorded: bpftrace's output and errors, ftrace's trace, and the
/// events ftrace lost (overruns).
struct KernelRecord {
    bt_out: String,
    bt_err: String,
    trace: String,
    trace_lost: u64,
}

impl KernelTruth {
    /// Starts the ftrace instance and bpftrace, and waits (at most 60 s) until bpftrace's
    /// probes are attached. Errors are reported by the checks (as missing truth).
    fn start() -> (KernelTruth, Vec<String>) {
        let mut errors = Vec::new();
        let base =
            std::env::temp_dir().join(format!("retrace-e2e-churn-bpftrace-{}", std::process::id()));
        let mut kt = KernelTruth {
            child: None,
            out: base.with_extension("out"),
            err: base.with_extension("err"),
            instance: None,
        };
        // Both read tracepoints through tracefs.
        let tracing = Path::new("/sys/kernel/tracing");
        if !tracing.join("events/tcp").is_dir() {
            match Command::new("mount")
                .args(["-t", "tracefs", "nodev"])
                .arg(tracing)
                .status()
            {
                Ok(st) if st.success() => {}
                r => errors.push(format!(
                    "mount -t tracefs nodev {}: {r:?}",
                    tracing.display()
                )),
            }
        }
        let inst = tracing
            .join("instances")
            .join(format!("retrace-e2e-churn-{}", std::process::id()));
        let setup = || -> std::io::Result<()> {
            std::fs::create_dir(&inst)?;
            std::fs::write(inst.join("buffer_size_kb"), "8192")?;
            for (event, filter) in KERNEL_TRUTH_EVENTS {
                let dir = inst.join("events").join(event);
                if !filter.is_empty() {
                    std::fs::write(dir.join("filter"), filter)?;
                }
                std::fs::write(dir.join("enable"), "1")?;
            }
            std::fs::write(inst.join("tracing_on"), "1")
        };
        let ok = setup();
        if inst.is_dir() {
            kt.instance = Some(inst.clone());
        }
        if let Err(e) = ok {
            errors.push(format!("ftrace instance {}: {e}", inst.display()));
        }
        let file = |p: &Path| std::fs::File::create(p);
        let child = file(&kt.out).and_then(|o| {
            let e = file(&kt.err)?;
            Command::new("bpftrace")
                .args(["-B", "line", "-e", KERNEL_TRUTH_BT])
                .stdin(std::process::Stdio::null())
                .stdout(o)
                .stderr(e)
                .spawn()
        });
        match child {
            Ok(c) => kt.child = Some(c),
            Err(e) => {
                errors.push(format!(
                    "starting bpftrace: {e} (Debian package bpftrace, scripts/install-deps.sh)"
                ));
                return (kt, errors);
            }
        }
        let t = Instant::now();
        loop {
            if std::fs::read_to_string(&kt.out).is_ok_and(|o| o.contains("READY")) {
                break;
            }
            if let Some(Ok(Some(st))) = kt.child.as_mut().map(|c| c.try_wait()) {
                errors.push(format!(
                    "bpftrace exited at start ({st}): {}",
                    std::fs::read_to_string(&kt.err).unwrap_or_default().trim()
                ));
                kt.child = None;
                break;
            }
            if t.elapsed() > std::time::Duration::from_secs(60) {
                errors.push("bpftrace did not attach its probes within 60 s".into());
                kt.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        (kt, errors)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops bpftrace (SIGINT, then SIGKILL after 20 s) and the ftrace instance; returns what
    /// they recorded.
    fn stop(mut self) -> KernelRecord {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if t.elapsed() > std::time::Duration::from_secs(20) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        self.kill();
        let mut rec = KernelRecord {
            bt_out: std::fs::read_to_string(&self.out).unwrap_or_default(),
            bt_err: std::fs::read_to_string(&self.err).unwrap_or_default(),
            trace: String::new(),
            trace_lost: 0,
        };
        if let Some(inst) = &self.instance {
            let _ = std::fs::write(inst.join("tracing_on"), "0");
            rec.trace = std::fs::read_to_string(inst.join("trace")).unwrap_or_default();
            for cpu in std::fs::read_dir(inst.join("per_cpu"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let stats = std::fs::read_to_string(cpu.path().join("stats")).unwrap_or_default();
                for line in stats.lines() {
                    if let Some(n) = line
                        .strip_prefix("overrun: ")
                        .or_else(|| line.strip_prefix("dropped events: "))
                    {
                        rec.trace_lost += n.trim().parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
        rec
    }
}

impl Drop for KernelTruth {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
        if let Some(inst) = self.instance.take() {
            for (event, _) in KERNEL_TRUTH_EVENTS {
                let _ = std::fs::write(inst.join("events").join(event).join("enable"), "0");
            }
            if let Err(e) = std::fs::remove_dir(&inst) {
                eprintln!("removing ftrace instance {}: {e}", inst.display());
            }
        }
    }
}

/// What the kernel saw, by the stack's server ports.
#[derive(Default)]
struct Kernel {
    /// Successful retransmits (err 0) with this server port as source or destination (ftrace).
    retransmits: std::collections::BTreeMap<u16, u64>,
    /// Retransmit attempts that failed (err != 0), same keying (ftrace).
    failed_retransmits: std::collections::BTreeMap<u16, u64>,
    /// bpftrace's count of successful retransmits, same keying (shown, not compared).
    bpftrace_retransmits: std::collections::BTreeMap<u16, u64>,
    /// Connections leaving SYN-SENT towards a stack port: (source port, server port) → count.
    tuples: std::collections::BTreeMap<(u16, u16), u64>,
    /// Connects of the api on an fd it closed before: ns since that close.
    fd_reuse_ns: Vec<u64>,
    /// Events lost: ftrace's overruns, bpftrace's `Lost N events`.
    trace_lost: u64,
    bpftrace_lost: u64,
    trace_lines: usize,
    bpftrace_lines: usize,
}

/// The value after `key` in an ftrace line (`sport=123 dport=...`).
fn trace_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(key)? + key.len();
    line[i..].split_whitespace().next()
}

fn parse_kernel(rec: &KernelRecord, ports: &[u16], api_pid: Option<u32>) -> Kernel {
    let mut k = Kernel {
        trace_lost: rec.trace_lost,
        ..Kernel::default()
    };
    let port_of = |a: u16, b: u16| {
        if ports.contains(&b) {
            Some(b)
        } else if ports.contains(&a) {
            Some(a)
        } else {
            None
        }
    };
    let ports_of = |line: &str| {
        let p = |key| trace_field(line, key).and_then(|v| v.parse::<u16>().ok());
        Some((p(" sport=")?, p(" dport=")?))
    };
    for line in rec.trace.lines() {
        if line.contains(" tcp_retransmit_skb: ") {
            k.trace_lines += 1;
            let Some((sp, dp)) = ports_of(line) else {
                continue;
            };
            if let Some(p) = port_of(sp, dp) {
                let map = if trace_field(line, " err=") == Some("0") {
                    &mut k.retransmits
                } else {
                    &mut k.failed_retransmits
                };
                *map.entry(p).or_insert(0) += 1;
            }
        } else if line.contains(" inet_sock_set_state: ") {
            k.trace_lines += 1;
            if let Some((sp, dp)) = ports_of(line) {
                if ports.contains(&dp) {
                    *k.tuples.entry((sp, dp)).or_insert(0) += 1;
                }
            }
        }
    }
    let mut fd_events: Vec<(u64, bool, u32)> = Vec::new(); // (ns, is_close, fd)
    for line in rec.bt_out.lines().chain(rec.bt_err.lines()) {
        if let Some(i) = line.find("Lost ") {
            if let Some(n) = line[i + 5..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            {
                k.bpftrace_lost += n;
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        match f.first().copied() {
            Some("R") => {
                k.bpftrace_lines += 1;
                if let (Some(sp), Some(dp), Some(&"0")) = (num(1), num(2), f.get(3)) {
                    if let Some(p) = port_of(sp as u16, dp as u16) {
                        *k.bpftrace_retransmits.entry(p).or_insert(0) += 1;
                    }
                }
            }
            Some(kind @ ("X" | "K")) => {
                k.bpftrace_lines += 1;
                if let (Some(pid), Some(fd), Some(ns)) = (num(1), num(2), num(3)) {
                    if api_pid.is_some_and(|a| u64::from(a) == pid) {
                        fd_events.push((ns, kind == "X", fd as u32));
                    }
                }
            }
            _ => {}
        }
    }
    // bpftrace's per-CPU buffers are not in time order: sort before pairing.
    fd_events.sort_unstable();
    let mut closed_at: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for (ns, is_close, fd) in fd_events {
        if is_close {
            closed_at.insert(fd, ns);
        } else if let Some(c) = closed_at.get(&fd) {
            k.fd_reuse_ns.push(ns - c);
        }
    }
    k.fd_reuse_ns.sort_unstable();
    k
}

/// One downstream call of the api (`call <epoch> <service> <op> <outcome> <ms>`, logged in
/// API_FRESH_CONNECTIONS mode, see scenarios/common/api.py).
#[derive(Debug)]
struct Call {
    service: String,
    op: String,
    outcome: String,
}

impl Call {
    fn ok(&self) -> bool {
        self.outcome == "ok"
    }
    /// Failed as the analyzer counts a failed request: an error, or a 5xx answer.
    fn failed(&self) -> bool {
        self.outcome.starts_with("error:") || self.outcome.parse::<u16>().is_ok_and(|s| s >= 500)
    }
    /// An answer came back (ok, another HTTP status, a PostgreSQL error).
    fn answered(&self) -> bool {
        self.ok() || self.outcome.parse::<u16>().is_ok() || self.sql_error()
    }
    /// PostgreSQL answered with an error (its SQLSTATE), at startup (CONNECT) or to a query.
    fn sql_error(&self) -> bool {
        self.outcome
            .strip_prefix("error:")
            // SQLSTATE: five digits or capital letters (not `reset`, `close`...)
            .is_some_and(|k| {
                k.len() == 5
                    && k.bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            })
    }
    /// The connection could not be opened, or was reset before the request could be written
    /// (`SEND`): no byte went either way, nothing reached the server.
    fn failed_connect(&self) -> bool {
        matches!(self.op.as_str(), "CONNECT" | "SEND") && self.failed() && !self.sql_error()
    }
}

fn parse_calls(log: &str) -> Vec<Call> {
    log.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 6 || f[0] != "call" || f[1].parse::<f64>().is_err() {
                return None;
            }
            Some(Call {
                service: f[2].to_string(),
                op: f[3].to_string(),
                outcome: f[4].to_string(),
            })
        })
        .collect()
}

/// The api's pid, from the first line of its log in API_FRESH_CONNECTIONS mode.
fn api_pid(log: &str) -> Option<u32> {
    log.lines().find_map(|l| {
        l.strip_prefix("api: pid ")?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

/// The stack's ports (scenarios/checkout/scenario.yaml), after the runner's moves of busy
/// ones ("service NAME: port A is in use, using B").
fn stack_ports(stdout: &str) -> std::collections::BTreeMap<&'static str, u16> {
    let mut ports: std::collections::BTreeMap<&'static str, u16> = [
        ("postgres", 25432),
        ("redis", 26379),
        ("users", 28082),
        ("api", 28081),
        ("nginx", 28080),
    ]
    .into_iter()
    .collect();
    for line in stdout.lines() {
        let Some(rest) = line.trim().strip_prefix("service ") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once(": port ") else {
            continue;
        };
        let Some(to) = rest
            .split_once("is in use, using ")
            .and_then(|(_, to)| to.trim().parse::<u16>().ok())
        else {
            continue;
        };
        if let Some(p) = ports.get_mut(name) {
            *p = to;
        }
    }
    ports
}

/// A kept run folder of this test (`RETRACE_CHURN_RUN`), checked again without running
/// anything: its `run/analysis` as it is, its logs, the kernel truth files and `runner.out`.
fn kept_churn_run(dir: &Path) -> (Run, KernelRecord) {
    let out = dir.join("run");
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_default();
    let analysis: Analysis = serde_json::from_slice(
        &std::fs::read(out.join("analysis").join("summary.json")).expect("summary.json"),
    )
    .expect("summary.json parses");
    let requests = read_requests(&out.join("analysis").join("requests.csv"));
    let run = Run {
        // never removed: not this test's folder
        dir: RunDir(dir.to_path_buf()),
        stdout: read(dir.join("runner.out")),
        out,
        analysis,
        requests,
        secs: 0.0,
    };
    let rec = KernelRecord {
        bt_out: read(dir.join("bpftrace.out")),
        bt_err: read(dir.join("bpftrace.err")),
        trace: read(dir.join("ftrace.txt")),
        trace_lost: read(dir.join("ftrace.lost")).trim().parse().unwrap_or(0),
    };
    (run, rec)
}

#[test]
fn churn_counts_every_request_once() {
    // RETRACE_CHURN_RUN=<kept run folder>: check that run again (no root, nothing runs), e.g.
    // after `retrace analyze DIR/run/capture --services scenarios/common/services.yaml
    // --out DIR/run/analysis` with a changed analyzer.
    if let Some(dir) = std::env::var_os("RETRACE_CHURN_RUN") {
        let (run, rec) = kept_churn_run(Path::new(&dir));
        let run = std::mem::ManuallyDrop::new(run);
        check_churn(&run, &rec, &[]);
        return;
    }
    if !may_run("churn_counts_every_request_once") {
        return;
    }
    let _live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let (kernel, errors) = KernelTruth::start();
    let run = run_scenario("churn");
    let rec = kernel.stop();
    // Kept with the run for diagnosis (and RETRACE_CHURN_RUN).
    let keep = |name: &str, text: &str| {
        let _ = std::fs::write(run.dir.0.join(name), text);
    };
    keep("bpftrace.out", &rec.bt_out);
    keep("bpftrace.err", &rec.bt_err);
    keep("ftrace.txt", &rec.trace);
    keep("ftrace.lost", &rec.trace_lost.to_string());
    keep("runner.out", &run.stdout);
    check_churn(&run, &rec, &errors);
}

/// The edge `client -> server` over `protocol`, if the analysis has it.
fn edge_of<'a>(
    run: &'a Run,
    client: &str,
    server: &str,
    protocol: &str,
) -> Option<&'a retrace_analyze::EdgeStats> {
    run.analysis
        .edges
        .iter()
        .find(|e| e.client == client && e.server == server && e.protocol == protocol)
}

fn check_churn(run: &Run, rec: &KernelRecord, truth_errors: &[String]) {
    let nginx: Vec<NginxLine> = parse_nginx(&run.log("nginx"))
        .into_iter()
        .filter(|l| l.path != "/health")
        .collect();
    let api_log = run.log("api");
    let api = parse_python(&api_log);
    let calls = parse_calls(&api_log);
    let users = parse_python(&run.log("users"));
    let ports = stack_ports(&run.stdout);
    let port_list: Vec<u16> = ports.values().copied().collect();
    let pid = api_pid(&api_log);
    let k = parse_kernel(rec, &port_list, pid);

    let mut c = Checks::default();
    // The run is what it should be: load, faults, and the stress it exists for.
    c.holds(
        "the api ran with fresh connections (API_FRESH_CONNECTIONS=1)",
        pid.is_some() && !calls.is_empty(),
        format!("api pid {pid:?}, {} downstream calls logged", calls.len()),
    );
    c.holds(
        "load",
        nginx.len() >= 2000,
        format!(
            "{} requests in nginx's log, {} in the api's, {} in users'",
            nginx.len(),
            api.len(),
            users.len()
        ),
    );
    let refused = calls
        .iter()
        .filter(|c| c.service == "users" && c.outcome == "error:refused")
        .count() as u64;
    c.holds(
        "users' stop shows as refused connects in the api's log",
        refused > 0,
        format!("{refused} refused connects to users"),
    );
    c.holds(
        "the kernel truth ran and lost nothing (ftrace instance, bpftrace)",
        truth_errors.is_empty()
            && k.trace_lines > 0
            && k.bpftrace_lines > 0
            && k.trace_lost == 0
            && k.bpftrace_lost == 0,
        format!(
            "ftrace {} events, {} lost; bpftrace {} events, {} lost{}",
            k.trace_lines,
            k.trace_lost,
            k.bpftrace_lines,
            k.bpftrace_lost,
            if truth_errors.is_empty() {
                String::new()
            } else {
                format!("; {}", truth_errors.join("; "))
            }
        ),
    );
    let conns: u64 = k.tuples.values().sum();
    let repeated: Vec<(&(u16, u16), &u64)> = k.tuples.iter().filter(|(_, n)| **n > 1).collect();
    let reuses: u64 = repeated.iter().map(|(_, n)| **n - 1).sum();
    let mut by_server = String::new();
    for (name, port) in &ports {
        let n: u64 = repeated
            .iter()
            .filter(|((_, p), _)| p == port)
            .map(|(_, n)| **n - 1)
            .sum();
        if n > 0 {
            let _ = write!(by_server, " {name} {n}");
        }
    }
    c.holds(
        "4-tuples repeat (ftrace: connections leaving SYN-SENT)",
        reuses >= 100,
        format!(
            "{conns} connections, {} distinct 4-tuples, {} repeated, {reuses} reuses (by server:{by_server})",
            k.tuples.len(),
            repeated.len()
        ),
    );
    let fast = |ns: u64| k.fd_reuse_ns.iter().filter(|&&d| d < ns).count();
    c.holds(
        "fd numbers reused within milliseconds (bpftrace: the api's close then connect on one fd)",
        fast(1_000_000) >= 100,
        format!(
            "{} connects on a closed fd, {} within 1 ms, {} within 100 us, median {:.3} ms",
            k.fd_reuse_ns.len(),
            fast(1_000_000),
            fast(100_000),
            k.fd_reuse_ns
                .get(k.fd_reuse_ns.len() / 2)
                .map_or(f64::NAN, |&d| d as f64 / 1e6)
        ),
    );

    // No stray edges or services: the stack's, nothing else (no address, no python3:PORT).
    let want: BTreeSet<(String, String, String)> = EXPECTED_EDGES
        .iter()
        .map(|(a, b, p)| (a.to_string(), b.to_string(), p.to_string()))
        .collect();
    let got: BTreeSet<(String, String, String)> = run
        .analysis
        .edges
        .iter()
        .map(|e| (e.client.clone(), e.server.clone(), e.protocol.clone()))
        .collect();
    let extra: Vec<String> = run
        .analysis
        .edges
        .iter()
        .filter(|e| !want.contains(&(e.client.clone(), e.server.clone(), e.protocol.clone())))
        .map(|e| {
            format!(
                "{} -> {} {} ({} requests)",
                e.client, e.server, e.protocol, e.requests
            )
        })
        .collect();
    c.holds(
        "edges: exactly the stack's",
        got == want,
        format!(
            "missing {:?}, stray {extra:?}",
            want.difference(&got).collect::<Vec<_>>()
        ),
    );
    let stray_services: Vec<&str> = run
        .analysis
        .services
        .iter()
        .map(|s| s.service.as_str())
        .filter(|s| !STACK.contains(s))
        .collect();
    c.holds(
        "services: exactly the stack's",
        stray_services.is_empty(),
        format!("stray {stray_services:?}"),
    );

    // Served requests and their errors, by each server's own log (1%): what reached it, not
    // its callers' failed connects (refused while users was stopped).
    // A call that failed after it was sent (timeout, reset) may have been served: slack.
    let of = |service: &'static str| calls.iter().filter(move |c| c.service == service);
    let sent_then_failed = |service: &'static str| {
        of(service)
            .filter(|c| c.failed() && !c.answered() && !c.failed_connect())
            .count() as u64
    };
    // The ground truth agrees with itself: users logged what the api saw answered.
    c.within(
        "(ground truth) users request log vs the api's answered calls to users",
        users.len() as u64,
        of("users").filter(|c| c.answered()).count() as u64,
        0.01,
        0,
    );
    let truth: [(&str, &str, u64, u64, u64); 5] = [
        (
            "nginx",
            "nginx's access log",
            nginx.len() as u64,
            nginx.iter().filter(|l| l.status >= 500).count() as u64,
            0,
        ),
        (
            "api",
            "the api's request log",
            api.len() as u64,
            api.iter().filter(|l| l.status >= 500).count() as u64,
            0,
        ),
        (
            "users",
            "users' request log",
            users.len() as u64,
            users.iter().filter(|l| l.status >= 500).count() as u64,
            // a request users read but died before answering (stopped mid-request) is in
            // no log of its own: the api saw it reset or cut off
            sent_then_failed("users"),
        ),
        (
            "redis",
            "the api's answered calls",
            of("redis").filter(|c| c.answered()).count() as u64,
            0,
            sent_then_failed("redis"),
        ),
        (
            "postgres",
            "the api's answered calls (errors: SQL errors)",
            of("postgres").filter(|c| c.answered()).count() as u64,
            of("postgres").filter(|c| c.sql_error()).count() as u64,
            sent_then_failed("postgres"),
        ),
    ];
    for (service, source, requests, errors, slack) in truth {
        let s = run.service(service);
        c.within(
            &format!("{service} served (services.csv requests) vs {source}"),
            s.requests,
            requests,
            0.01,
            slack,
        );
        c.within(
            &format!("{service} served errors (services.csv errors) vs {source}"),
            s.errors,
            errors,
            0.01,
            slack,
        );
    }
    // Its callers' view of users: what they addressed to it (served plus refused).
    let u = run.service("users");
    c.within(
        "users calls (callers' attempts, services.csv calls) vs the api's calls to users",
        u.calls,
        of("users").count() as u64,
        0.01,
        0,
    );
    c.within(
        "users failed connections (services.csv) vs the api's refused connects",
        u.failed_connections,
        of("users").filter(|c| c.failed_connect()).count() as u64,
        0.01,
        0,
    );

    // The callers' side, per edge: attempts, errors and failed connections by the callers'
    // own logs (nginx's for its clients and its upstream attempts, the api's calls).
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.out.join("loadgen.json")).expect("loadgen.json"))
            .expect("loadgen.json parses");
    let num = |k: &str| report[k].as_u64().unwrap_or(0);
    let attempts = nginx.iter().flat_map(|l| &l.upstream).count() as u64;
    struct Truth {
        requests: u64,
        errors: u64,
        failed_connections: u64,
        /// Requests that got no answer (closed or reset before it), per the caller.
        unanswered: u64,
    }
    let backend = |service: &'static str| Truth {
        requests: of(service).count() as u64,
        errors: of(service).filter(|c| c.failed()).count() as u64,
        failed_connections: of(service).filter(|c| c.failed_connect()).count() as u64,
        unanswered: of(service)
            .filter(|c| {
                !c.failed_connect() && matches!(c.outcome.as_str(), "error:closed" | "error:reset")
            })
            .count() as u64,
    };
    let edges = [
        (
            "client",
            "nginx",
            "http",
            "the load generator and nginx's access log",
            Truth {
                requests: nginx.len() as u64,
                errors: nginx.iter().filter(|l| l.status >= 500).count() as u64,
                failed_connections: num("connect_errors"),
                unanswered: num("requests").saturating_sub(num("responses")),
            },
        ),
        (
            "nginx",
            "api",
            "http",
            "nginx's upstream attempts, the api's log",
            Truth {
                requests: attempts,
                errors: api.iter().filter(|l| l.status >= 500).count() as u64
                    + attempts.saturating_sub(api.len() as u64),
                failed_connections: 0,
                unanswered: attempts.saturating_sub(api.len() as u64),
            },
        ),
        ("api", "users", "http", "the api's calls", backend("users")),
        ("api", "redis", "redis", "the api's calls", backend("redis")),
        (
            "api",
            "postgres",
            "postgres",
            "the api's calls",
            backend("postgres"),
        ),
    ];
    for (client, server, protocol, source, t) in &edges {
        let name = format!("{client} -> {server}");
        let Some(e) = edge_of(run, client, server, protocol) else {
            c.holds(&name, false, format!("no {protocol} edge in the analysis"));
            continue;
        };
        c.within(
            &format!("{name} requests (attempts) vs {source}"),
            e.requests,
            t.requests,
            0.01,
            0,
        );
        c.within(
            &format!("{name} errors vs {source}"),
            e.errors,
            t.errors,
            0.01,
            0,
        );
        c.within(
            &format!("{name} failed connections vs {source}"),
            e.failed_connections,
            t.failed_connections,
            0.01,
            0,
        );
        // No invented failures: a request reported cut off by a close or reset (on any edge
        // towards this server, stray ones included) only where its caller saw it so.
        let unanswered = |status: &str| {
            run.requests
                .iter()
                .filter(|r| r.server == *server && r.status == status)
                .count() as u64
        };
        // A response cut off after its status line (Python's IncompleteRead) is unanswered
        // too, for the caller: `incomplete response (closed|reset)`.
        let (closed, reset) = (
            unanswered("no response (closed)") + unanswered("incomplete response (closed)"),
            unanswered("no response (reset)") + unanswered("incomplete response (reset)"),
        );
        c.eq(
            &format!(
                "requests to {server} reported unanswered ({closed} closed, {reset} reset, with no response or an incomplete one) vs {source}"
            ),
            closed + reset,
            t.unanswered,
        );
    }

    // Retransmits per edge against the kernel's own count (ftrace, tcp:tcp_retransmit_skb
    // with err 0), by the edge's server port (both directions of its connections), within 5%.
    // A BPF program does not run when its tracepoint fires while a BPF program is already
    // running on that CPU (the kernel's recursion protection: a retransmit timer's softirq on
    // top of a traced syscall): every BPF tracer misses those few, retrace as bpftrace does.
    // What bpftrace missed in the same run, against ftrace, is their measure, and the slack
    // (seen: 2 of 20 on nginx -> api, with bpftrace missing 3).
    for (client, server, protocol, _, _) in &edges {
        let port = ports[server];
        let get = |m: &std::collections::BTreeMap<u16, u64>| m.get(&port).copied().unwrap_or(0);
        let elsewhere: u64 = run
            .analysis
            .edges
            .iter()
            .filter(|e| e.server == *server && (e.client != *client || e.protocol != *protocol))
            .map(|e| e.retransmits)
            .sum();
        c.within(
            &format!(
                "{client} -> {server} retransmits vs kernel (port {port}; kernel also: {} failed attempts; bpftrace saw {}; other edges to {server}: {elsewhere})",
                get(&k.failed_retransmits),
                get(&k.bpftrace_retransmits)
            ),
            edge_of(run, client, server, protocol).map_or(0, |e| e.retransmits),
            get(&k.retransmits),
            0.05,
            get(&k.retransmits).saturating_sub(get(&k.bpftrace_retransmits)),
        );
    }
    c.finish("churn vs ground truth", run);
}
