//! Ground truth for the findings engine: the bundled scenario captures analyzed again, their
//! findings compared with `faults.json`, written by the scenario runner when it applied each
//! fault (seconds on the runner's clock, which starts as it spawns the load generator).
//!
//! The goals of issue 12: a server stopped for N s gives one finding whose window is within
//! 2 s of the truth, with the cause "not listening / process exited" and the callers' errors
//! attached; loss on one edge gives a retransmit finding on that edge only, its window within
//! 5 s; a healthy run gives nothing above info. The same capture gives the same findings,
//! byte for byte.

use std::path::Path;

use retrace_analyze::{Analysis, Finding, Severity};

mod common;

use common::{root, services_file};

fn analyze(name: &str) -> Analysis {
    let dir = root().join("scenarios").join(name);
    let opts = retrace_analyze::AnalyzeOptions {
        services_file: services_file(&dir),
        ..Default::default()
    };
    retrace_analyze::analyze(&[dir.join("capture")], &opts).expect("analysis")
}

/// `(t_s, what)` of the scenario's faults.
fn faults(name: &str) -> Vec<(f64, String)> {
    let path = root().join("scenarios").join(name).join("faults.json");
    let text = std::fs::read_to_string(&path).expect("faults.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("faults.json is JSON");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|f| {
            (
                f["t_s"].as_f64().expect("t_s"),
                f["what"].as_str().expect("what").to_string(),
            )
        })
        .collect()
}

/// The time of the fault whose description contains `what`, s.
fn fault_at(faults: &[(f64, String)], what: &str) -> f64 {
    faults
        .iter()
        .find(|(_, w)| w.contains(what))
        .unwrap_or_else(|| panic!("no fault {what:?} in {faults:?}"))
        .0
}

/// The runner's time zero: it starts its clock as it spawns the load generator (the
/// `client` service), whose first request follows within milliseconds. (The capture itself
/// starts earlier, before the services.)
fn zero(a: &Analysis) -> u64 {
    a.requests
        .iter()
        .filter(|r| r.client == "client")
        .map(|r| r.ts_ns)
        .min()
        .expect("the load generator's requests")
}

/// A finding's window in seconds on the runner's clock.
fn window(a: &Analysis, f: &Finding) -> (f64, f64) {
    let z = zero(a);
    let s = |ns: u64| (ns as f64 - z as f64) / 1e9;
    (s(f.start_ns), s(f.end_ns))
}

fn describe(a: &Analysis) -> String {
    a.findings
        .iter()
        .map(|f| {
            let (s, e) = window(a, f);
            format!(
                "{} {} {} {} [{}] {s:.2}-{e:.2}: {} | {} | caused_by {:?}",
                f.id,
                f.severity.name(),
                f.kind,
                f.service,
                f.edge,
                f.summary,
                f.likely_cause,
                f.caused_by
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn serious(a: &Analysis) -> Vec<&Finding> {
    a.findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .collect()
}

#[test]
fn a_stopped_server_is_one_finding_with_its_cause_and_its_callers_errors() {
    let a = analyze("api-down");
    let truth = faults("api-down");
    let (down, up) = (
        fault_at(&truth, "api stopped"),
        fault_at(&truth, "api started again"),
    );
    let all = describe(&a);
    // One root finding (the others, if any, follow from it).
    let roots: Vec<&Finding> = serious(&a)
        .into_iter()
        .filter(|f| f.caused_by.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one incident expected:\n{all}");
    let f = roots[0];
    assert_eq!(f.kind, "connection_failures", "{all}");
    assert_eq!(f.service, "api", "{all}");
    assert_eq!(f.severity, Severity::Critical, "{all}");
    let (s, e) = window(&a, f);
    assert!(
        (s - down).abs() <= 2.0,
        "start {s:.2} vs truth {down:.2}\n{all}"
    );
    assert!((e - up).abs() <= 2.0, "end {e:.2} vs truth {up:.2}\n{all}");
    assert!(
        f.likely_cause.contains("not listening") && f.likely_cause.contains("exited"),
        "{}",
        f.likely_cause
    );
    assert!(f.likely_cause.contains("SIGTERM"), "{}", f.likely_cause);
    assert!(
        f.likely_cause.contains("listening again"),
        "the restart: {}",
        f.likely_cause
    );
    // The callers' errors attached: nginx's failed requests, counted, in the evidence.
    let nginx = f
        .evidence
        .iter()
        .find(|l| l.starts_with("nginx (caller) served during"))
        .unwrap_or_else(|| panic!("no caller evidence: {:?}", f.evidence));
    // "nginx (caller) served during: N requests, E errors (R%), ..."
    let errors: u64 = nginx
        .split(", ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(errors >= 100, "nginx's errors during the outage: {nginx}");
    assert!(
        f.evidence
            .iter()
            .any(|l| l.contains("failed connects from nginx")),
        "{:?}",
        f.evidence
    );
    assert!(!f.sample_requests.is_empty());
    for &i in &f.sample_requests {
        let r = a.requests.get(i).expect("a sample row");
        assert!(r.error, "sample {i} is a failure");
    }
    // No retransmit finding worth a look on a run without loss.
    assert!(
        !serious(&a).iter().any(|f| f.kind == "retransmits"),
        "{all}"
    );
}

#[test]
fn loss_on_one_edge_is_a_retransmit_finding_on_that_edge_only() {
    let a = analyze("lossy-db");
    let truth = faults("lossy-db");
    let (from, to) = (
        fault_at(&truth, "dropping"),
        fault_at(&truth, "loss to port 25432 removed"),
    );
    let all = describe(&a);
    let rt: Vec<&Finding> = serious(&a)
        .into_iter()
        .filter(|f| f.kind == "retransmits")
        .collect();
    assert!(!rt.is_empty(), "no retransmit finding:\n{all}");
    assert_eq!(rt.len(), 1, "one window of loss:\n{all}");
    for f in &rt {
        assert_eq!(f.edge, "api -> postgres", "{all}");
    }
    let start = rt.iter().map(|f| window(&a, f).0).fold(f64::MAX, f64::min);
    let end = rt.iter().map(|f| window(&a, f).1).fold(0.0, f64::max);
    assert!(
        (start - from).abs() <= 5.0,
        "start {start:.2} vs {from:.2}\n{all}"
    );
    assert!((end - to).abs() <= 5.0, "end {end:.2} vs {to:.2}\n{all}");
    assert!(
        !a.findings.iter().any(|f| f.kind == "connection_failures"),
        "{all}"
    );
    // The edge's slower requests are in the evidence.
    assert!(
        rt[0]
            .evidence
            .iter()
            .any(|l| l.starts_with("edge requests during")),
        "{:?}",
        rt[0].evidence
    );
}

#[test]
fn a_healthy_run_has_no_findings_above_info() {
    // checkout, and the traces scenarios (the same stack, busier, no fault injected).
    for name in ["checkout", "traces", "traces-header", "traces-worker"] {
        let a = analyze(name);
        assert!(a.total_requests > 500, "{name}: a real run");
        let bad = serious(&a);
        assert!(bad.is_empty(), "{name}:\n{}", describe(&a));
    }
}

#[test]
fn churn_finds_the_stopped_users_and_the_lossy_redis() {
    let a = analyze("churn");
    let truth = faults("churn");
    let all = describe(&a);
    let (down, up) = (
        fault_at(&truth, "users stopped"),
        fault_at(&truth, "users started again"),
    );
    let users: Vec<&Finding> = serious(&a)
        .into_iter()
        .filter(|f| f.kind == "connection_failures" && f.service == "users")
        .collect();
    assert_eq!(users.len(), 1, "{all}");
    let (s, e) = window(&a, users[0]);
    assert!((s - down).abs() <= 2.0, "start {s:.2} vs {down:.2}\n{all}");
    assert!((e - up).abs() <= 2.0, "end {e:.2} vs {up:.2}\n{all}");
    assert!(users[0].likely_cause.contains("not listening"), "{all}");
    let (from, to) = (
        fault_at(&truth, "dropping 5%"),
        fault_at(&truth, "loss to port 26379 removed"),
    );
    let retransmits: Vec<&Finding> = serious(&a)
        .into_iter()
        .filter(|f| f.kind == "retransmits")
        .collect();
    let redis: Vec<&Finding> = retransmits
        .iter()
        .copied()
        .filter(|f| f.edge == "api -> redis")
        .collect();
    // api -> postgres retransmits FINs by the hundred (fresh connections) and nginx -> api a
    // few segments now and then: neither is a loss worth a look.
    assert_eq!(redis.len(), retransmits.len(), "{all}");
    assert!(!redis.is_empty(), "{all}");
    let start = redis
        .iter()
        .map(|f| window(&a, f).0)
        .fold(f64::MAX, f64::min);
    let end = redis.iter().map(|f| window(&a, f).1).fold(0.0, f64::max);
    assert!(
        (start - from).abs() <= 5.0,
        "start {start:.2} vs {from:.2}\n{all}"
    );
    assert!((end - to).abs() <= 5.0, "end {end:.2} vs {to:.2}\n{all}");
}

#[test]
fn the_same_capture_gives_the_same_findings_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut outs = Vec::new();
    for k in 0..2 {
        let a = analyze("api-down");
        let out = dir.path().join(format!("r{k}"));
        retrace_analyze::write_report(&a, &out).expect("report");
        outs.push(out);
    }
    for f in [
        "findings.csv",
        "tcp.csv",
        "dns.csv",
        "summary.json",
        "index.html",
    ] {
        let read = |d: &Path| std::fs::read(d.join(f)).expect("written");
        assert_eq!(read(&outs[0]), read(&outs[1]), "{f} differs");
    }
    let csv = std::fs::read_to_string(outs[0].join("findings.csv")).expect("findings.csv");
    assert!(
        csv.starts_with("start,end,severity,kind,service,edge,summary,likely_cause,evidence\n"),
        "{csv}"
    );
    let tcp = std::fs::read_to_string(outs[0].join("tcp.csv")).expect("tcp.csv");
    assert!(tcp.starts_with(
        "ts,client,server,connects,failed_connects,failure_cause,retransmits,rtt_p50_us,\
         rtt_p99_us,resets_sent,resets_received,opened,closed,lifetime_p50_ms,lifetime_p99_ms,\
         bytes_sent,bytes_received,synack_retransmits,zero_window_client,zero_window_server\n"
    ));
    assert!(tcp.contains("ECONNREFUSED:"), "{tcp}");
    // The page opens with the findings, before the map.
    let html = std::fs::read_to_string(outs[0].join("index.html")).expect("index.html");
    let f = html.find("id=\"findings\"").expect("findings section");
    let m = html.find("id=\"map\"").expect("map section");
    assert!(f < m);
    assert!(html.contains("id=\"network\""), "the network panel");
    assert!(
        html.contains("edge <a href=\"#net-edge-"),
        "the finding's edge links to it"
    );
}
