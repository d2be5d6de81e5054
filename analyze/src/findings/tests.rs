//! The findings engine on synthetic events (`crate::synth`).

use retrace_segment::{Event, EventBody, OomKill, ProcExit};

use super::*;
use crate::synth::{self, Synth};
use crate::{analyze_events, ServicesFile};

const MS: u64 = 1_000_000;

fn run(evs: &[Event]) -> Analysis {
    let clock = synth::synth_clock();
    analyze_events(
        evs.iter().map(|e| ("node-a", clock.to_wall(e.ts), e)),
        ServicesFile::default(),
    )
    .expect("analysis")
}

fn exit(s: &mut Synth<Vec<Event>>, ts: u64, pid: u32, signal: i32, oom: bool) {
    s.push(Event::new(
        ts,
        EventBody::ProcExit(ProcExit {
            pid,
            comm: "python3".into(),
            exit_code: 0,
            signal,
            oom_killed: oom,
        }),
    ));
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// wrk (pid 10) calls api (pid 20, port 18081) every 100 ms for 20 s; the api dies at 8 s
/// (`signal`, `oom`), wrk's connects are refused until a new api (pid 21) listens at 13 s.
fn outage(signal: i32, oom: bool) -> Vec<Event> {
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/wrk", &["wrk"]);
    s.exec(t0, 20, 1, "/usr/bin/python3", &["python3", "api.py"]);
    s.listen(t0 + MS, 20, 18081);
    let mut c = s.connect(t0 + 10 * MS, 10, 20, 18081);
    let mut t = t0 + 100 * MS;
    while t < t0 + 20 * S {
        if t < t0 + 8 * S || t >= t0 + 13 * S + 200 * MS {
            s.exchange(&c, t, GET, GET.len() as u64, OK, OK.len() as u64, 2 * MS);
        } else if t >= t0 + 8 * S + 50 * MS && t < t0 + 13 * S {
            s.refused(t, 10, 18081);
        }
        if t == t0 + 8 * S {
            if oom {
                s.push(Event::new(
                    t + 10 * MS,
                    EventBody::OomKill(OomKill {
                        pid: 20,
                        comm: "python3".into(),
                    }),
                ));
            }
            exit(&mut s, t + 20 * MS, 20, signal, oom);
            s.reset_to_client(t + 21 * MS, &c);
        }
        if t == t0 + 13 * S {
            s.exec(t, 21, 1, "/usr/bin/python3", &["python3", "api.py"]);
            s.listen(t + 100 * MS, 21, 18081);
            c = s.connect(t + 150 * MS, 10, 21, 18081);
        }
        t += 100 * MS;
    }
    s.finish()
}

fn rel(a: &Analysis, ns: u64) -> f64 {
    ns.saturating_sub(a.window_start_ns) as f64 / 1e9
}

#[test]
fn a_killed_server_is_one_finding_tied_to_its_exit_and_restart() {
    let a = run(&outage(9, false));
    let all: Vec<String> = a
        .findings
        .iter()
        .map(|f| format!("{} {} {} {}", f.kind, f.service, f.summary, f.likely_cause))
        .collect();
    let cf: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| f.kind == "connection_failures")
        .collect();
    assert_eq!(cf.len(), 1, "{all:#?}");
    let f = cf[0];
    assert_eq!(f.service, "python3:18081");
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        (rel(&a, f.start_ns) - 8.05).abs() < 0.2,
        "{}",
        rel(&a, f.start_ns)
    );
    assert!(
        (rel(&a, f.end_ns) - 12.95).abs() < 0.2,
        "{}",
        rel(&a, f.end_ns)
    );
    assert!(
        f.likely_cause.contains("not listening"),
        "{}",
        f.likely_cause
    );
    assert!(f.likely_cause.contains("SIGKILL"), "{}", f.likely_cause);
    assert!(
        f.likely_cause.contains("listening again"),
        "{}",
        f.likely_cause
    );
    assert!(f.summary.contains("ECONNREFUSED 49"), "{}", f.summary);
    assert!(
        f.evidence
            .iter()
            .any(|e| e.contains("reset as it went down")),
        "{:?}",
        f.evidence
    );
    // The exit and the restart are its cause, not findings of their own; the reset is its
    // evidence.
    assert!(
        !a.findings
            .iter()
            .any(|f| matches!(f.kind.as_str(), "restart" | "process_exit" | "resets")),
        "{all:#?}"
    );
    assert_eq!(f.id, "F1");
}

#[test]
fn an_oom_kill_is_critical_and_the_cause() {
    let a = run(&outage(9, true));
    let f = a
        .findings
        .iter()
        .find(|f| f.kind == "connection_failures")
        .expect("connection failures");
    assert!(f.likely_cause.contains("OOM-killed"), "{}", f.likely_cause);
    let oom = a
        .findings
        .iter()
        .find(|f| f.kind == "oom_kill")
        .expect("an OOM finding");
    assert_eq!(oom.severity, Severity::Critical);
    assert_eq!(oom.service, "python3:18081");
}

/// A steady client with a retransmit every 5 s, and a burst of 5/s from 10 s to 20 s.
fn lossy() -> Vec<Event> {
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/wrk", &["wrk"]);
    s.exec(t0, 20, 1, "/usr/bin/python3", &["python3", "api.py"]);
    s.listen(t0 + MS, 20, 18081);
    let c = s.connect(t0 + 10 * MS, 10, 20, 18081);
    let mut t = t0 + 100 * MS;
    let mut k = 0u64;
    while t < t0 + 30 * S {
        let lossy = t >= t0 + 10 * S && t < t0 + 20 * S;
        let lat = if lossy && k % 5 == 0 {
            200 * MS
        } else {
            2 * MS
        };
        s.exchange(&c, t, GET, GET.len() as u64, OK, OK.len() as u64, lat);
        if (lossy && k % 2 == 0) || k % 50 == 0 {
            s.retransmit_by(t + MS, &c, k % 4 == 0);
        }
        k += 1;
        t += 100 * MS;
    }
    s.finish()
}

#[test]
fn a_retransmit_burst_is_found_with_its_window_and_the_slower_requests() {
    let a = run(&lossy());
    let rt: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| f.kind == "retransmits")
        .collect();
    assert_eq!(rt.len(), 1, "{:#?}", a.findings);
    let f = rt[0];
    assert_eq!(f.edge, "wrk -> python3:18081");
    assert!(
        (rel(&a, f.start_ns) - 10.0).abs() <= 1.0,
        "{}",
        rel(&a, f.start_ns)
    );
    assert!(
        (rel(&a, f.end_ns) - 20.0).abs() <= 1.0,
        "{}",
        rel(&a, f.end_ns)
    );
    assert!(f.summary.contains("50 TCP retransmits"), "{}", f.summary);
    assert!(f.summary.contains("p99"), "slower requests: {}", f.summary);
    // Who sent the segments again: every other one the client's socket.
    assert!(
        f.evidence.iter().any(|e| e.starts_with("sent again by wrk: 25 ")
            && e.contains("by python3:18081: 25 ")),
        "{:?}",
        f.evidence
    );
    // Its sample requests are the slowest of the window.
    for &i in &f.sample_requests {
        let r = a.requests.get(i).expect("row");
        assert!(r.latency_ns.unwrap_or(0) > 100 * MS);
    }
    // tcp.csv's series counts every retransmit once.
    let total: u64 = a.tcp.iter().map(|p| p.retransmits).sum();
    let edge: u64 = a.edges.iter().map(|e| e.retransmits).sum();
    assert_eq!(total, edge);
}

/// Connections opened one every 250 ms, one request each; from 10 s to 20 s each handshake
/// needs its SYN-ACK sent again (a full accept queue) and its request waits a second more.
#[test]
fn repeated_handshakes_are_retransmits_blamed_on_the_accept_queue() {
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/wrk", &["wrk"]);
    s.exec(t0, 20, 1, "/usr/bin/python3", &["python3", "api.py"]);
    s.listen(t0 + MS, 20, 18081);
    let mut t = t0 + 100 * MS;
    let mut repeated = 0;
    while t < t0 + 30 * S {
        let slow = t >= t0 + 10 * S && t < t0 + 20 * S;
        let c = s.connect(t, 10, 20, 18081);
        if slow {
            s.synack_retransmit(t + 10 * MS, &c, 20);
            repeated += 1;
        }
        let lat = if slow { 1_000 * MS } else { 2 * MS };
        s.exchange(
            &c,
            t + 20 * MS,
            GET,
            GET.len() as u64,
            OK,
            OK.len() as u64,
            lat,
        );
        s.close(
            &c,
            t + 20 * MS + lat + MS,
            GET.len() as u64,
            OK.len() as u64,
        );
        t += 250 * MS;
    }
    let a = run(&s.finish());
    let synacks: u64 = a.tcp.iter().map(|p| p.synack_retransmits).sum();
    let total: u64 = a.tcp.iter().map(|p| p.retransmits).sum();
    assert_eq!((synacks, total), (repeated, repeated));
    let edge: u64 = a.edges.iter().map(|e| e.retransmits).sum();
    assert_eq!(edge, repeated);
    let f = a
        .findings
        .iter()
        .find(|f| f.kind == "retransmits")
        .unwrap_or_else(|| panic!("no retransmit finding: {:#?}", a.findings));
    assert_eq!(f.edge, "wrk -> python3:18081");
    assert!(
        f.likely_cause.contains("accept queue full"),
        "{}",
        f.likely_cause
    );
    assert!(
        f.evidence
            .iter()
            .any(|e| e.starts_with(&format!("{repeated} of them SYN-ACKs"))),
        "{:?}",
        f.evidence
    );
    // Sent again by the server's end.
    assert!(
        f.evidence
            .iter()
            .any(|e| e.contains(&format!("by python3:18081: {repeated} "))),
        "{:?}",
        f.evidence
    );
}

/// The server stops reading one connection from 10 s to 15 s: the sampler finds the client's
/// socket unable to send once a second; one finding names the server as the reader that
/// stopped, in that window.
#[test]
fn a_zero_window_names_the_end_that_stopped_reading() {
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/wrk", &["wrk"]);
    s.exec(t0, 20, 1, "/usr/bin/python3", &["python3", "api.py"]);
    s.listen(t0 + MS, 20, 18081);
    let c = s.connect(t0 + 10 * MS, 10, 20, 18081);
    let mut t = t0 + 100 * MS;
    while t < t0 + 30 * S {
        s.exchange(&c, t, GET, GET.len() as u64, OK, OK.len() as u64, 2 * MS);
        t += 100 * MS;
    }
    for k in 0..5 {
        s.zero_window(t0 + 10 * S + k * S + 500 * MS, &c, true, 10);
    }
    let a = run(&s.finish());
    let zw: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| f.kind == "zero_window")
        .collect();
    assert_eq!(zw.len(), 1, "{:#?}", a.findings);
    let f = zw[0];
    assert_eq!(
        (f.service.as_str(), f.edge.as_str()),
        ("python3:18081", "wrk -> python3:18081")
    );
    assert!(
        f.summary
            .starts_with("python3:18081 stopped reading requests from wrk"),
        "{}",
        f.summary
    );
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        (rel(&a, f.start_ns) - 10.0).abs() <= 1.0,
        "{}",
        rel(&a, f.start_ns)
    );
    assert!(
        (rel(&a, f.end_ns) - 15.0).abs() <= 1.0,
        "{}",
        rel(&a, f.end_ns)
    );
    let client: u64 = a.tcp.iter().map(|p| p.zero_window_client).sum();
    let server: u64 = a.tcp.iter().map(|p| p.zero_window_server).sum();
    assert_eq!((client, server), (5, 0));
}

#[test]
fn the_shop_finds_its_refused_port_and_its_failing_backend() {
    // The synthetic shop: curl connects to a port nothing listens on, and one backend fails
    // one call in ten (500) all along, which nginx passes on.
    let evs = synth::shop(Vec::new(), &synth::ShopOptions::default());
    let a = run(&evs);
    let bad: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    let kinds: Vec<(&str, &str)> = bad
        .iter()
        .map(|f| (f.kind.as_str(), f.service.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("errors", "python3:18082"),
            ("upstream_errors", "nginx:8080"),
            ("connection_failures", "127.0.0.1:18083")
        ],
        "{bad:#?}"
    );
    assert!(bad[0]
        .summary
        .contains("failed 100 of 1000 requests (10.0%"));
    assert!(
        bad[0].likely_cause.contains("500 ×100"),
        "{}",
        bad[0].likely_cause
    );
    assert_eq!(bad[1].caused_by, vec![bad[0].id.clone()]);
    assert!(bad[2].likely_cause.starts_with("nothing was listening"));
    // Without the failing calls, only the refused port remains.
    let quiet = run(&synth::shop(
        Vec::new(),
        &synth::ShopOptions {
            error_every: 0,
            ..Default::default()
        },
    ));
    let kinds: Vec<&str> = quiet
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .map(|f| f.kind.as_str())
        .collect();
    assert_eq!(kinds, ["connection_failures"]);
}

#[test]
fn thresholds_come_from_the_configuration() {
    let evs = lossy();
    let clock = synth::synth_clock();
    let mut an = crate::Analyzer::new(ServicesFile::default());
    let cfg = FindingsConfig::parse(
        "retransmits:\n  min_total: 1000\n",
        std::path::Path::new("f"),
    )
    .expect("valid");
    an.findings_config(cfg);
    let node = an.node("node-a");
    for e in &evs {
        an.push(node, clock.to_wall(e.ts), e);
    }
    let a = an.finish(Default::default()).expect("analysis");
    assert!(!a.findings.iter().any(|f| f.kind == "retransmits"));
}

/// `pid` asks 127.0.0.53 for `name` at `ts`; the answer (`rcode`, 0 NOERROR, 2 SERVFAIL,
/// 3 NXDOMAIN) comes `latency` later, or never (`None`).
fn dns_query(
    s: &mut Synth<Vec<Event>>,
    ts: u64,
    pid: u32,
    id: u16,
    name: &str,
    answer: Option<(u8, u64)>,
) {
    use retrace_segment::{Direction, Endpoint, UdpMessage};
    let server = Endpoint::new(std::net::Ipv4Addr::new(127, 0, 0, 53), 53);
    let local = Endpoint::new(std::net::Ipv4Addr::new(127, 0, 0, 1), 45000);
    let (q, mut r) = synth::dns_packets(id, name, std::net::Ipv4Addr::new(10, 0, 0, 1));
    let mut msgs = vec![(ts, Direction::Egress, q)];
    if let Some((rcode, latency)) = answer {
        r[3] = (r[3] & 0xf0) | rcode;
        msgs.push((ts + latency, Direction::Ingress, r));
    }
    for (t, direction, payload) in msgs {
        s.push(Event::new(
            t,
            EventBody::Udp(UdpMessage {
                pid,
                tid: pid,
                direction,
                local,
                remote: server,
                size: payload.len() as u64,
                payload,
            }),
        ));
    }
}

#[test]
fn dns_failures_per_name_and_resolver() {
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/curl", &["curl"]);
    for k in 0..20u64 {
        let t = t0 + k * 500 * MS;
        let id = k as u16 * 4;
        dns_query(&mut s, t, 10, id, "ok.example", Some((0, MS)));
        dns_query(&mut s, t + MS, 10, id + 1, "typo.example", Some((3, MS)));
        dns_query(
            &mut s,
            t + 2 * MS,
            10,
            id + 2,
            "slow.example",
            Some((0, 300 * MS)),
        );
        if k < 3 {
            dns_query(
                &mut s,
                t + 3 * MS,
                10,
                id + 3,
                "broken.example",
                Some((2, MS)),
            );
        }
    }
    // Unanswered, long enough before the end to count.
    dns_query(&mut s, t0 + 2 * S, 10, 999, "lost.example", None);
    dns_query(
        &mut s,
        t0 + 9_500 * MS,
        10,
        998,
        "ok.example",
        Some((0, MS)),
    );
    s.exec(t0 + 12 * S, 11, 1, "/usr/bin/true", &["true"]);
    let a = run(&s.finish());
    let by_name = |n: &str| a.dns.iter().find(|d| d.name == n).expect(n).clone();
    assert_eq!(by_name("typo.example").nxdomain, 20);
    assert_eq!(by_name("broken.example").server_errors, 3);
    assert_eq!(by_name("lost.example").timeouts, 1);
    assert_eq!(by_name("ok.example").queries, 21);
    assert!(by_name("slow.example").p95_ms.is_some_and(|p| p > 250.0));
    let dns: BTreeMap<&str, &Finding> = a
        .findings
        .iter()
        .filter(|f| f.kind == "dns")
        .map(|f| (f.summary.split(' ').nth(1).unwrap_or(""), f))
        .collect();
    let names: Vec<&str> = dns.keys().copied().collect();
    assert_eq!(
        names,
        [
            "broken.example",
            "lost.example",
            "slow.example",
            "typo.example"
        ]
    );
    assert_eq!(dns["typo.example"].severity, Severity::Warning);
    assert!(dns["typo.example"].likely_cause.contains("does not exist"));
    assert_eq!(dns["broken.example"].severity, Severity::Critical);
    assert_eq!(dns["lost.example"].severity, Severity::Critical);
    assert!(dns["slow.example"].summary.contains("p95"));
    assert!(
        dns.values().all(|f| f.service == "127.0.0.53:53"),
        "{dns:#?}"
    );
}

#[test]
fn errors_at_the_bottom_of_a_chain_are_the_root_and_their_callers_follow() {
    // wrk -> api (18081) -> db (18082); from 10 s to 15 s db answers 500 and api 502.
    const E500: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
    const E502: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/wrk", &["wrk"]);
    s.exec(t0, 20, 1, "/usr/bin/python3", &["python3", "api.py"]);
    s.exec(t0, 30, 1, "/usr/bin/db", &["db"]);
    s.listen(t0 + MS, 20, 18081);
    s.listen(t0 + MS, 30, 18082);
    let up = s.connect(t0 + 10 * MS, 10, 20, 18081);
    let down = s.connect(t0 + 20 * MS, 20, 30, 18082);
    let mut t = t0 + 100 * MS;
    while t < t0 + 25 * S {
        let bad = t >= t0 + 10 * S && t < t0 + 15 * S;
        let (inner, outer) = if bad { (E500, E502) } else { (OK, OK) };
        s.exchange(
            &down,
            t + MS,
            GET,
            GET.len() as u64,
            inner,
            inner.len() as u64,
            2 * MS,
        );
        s.exchange(
            &up,
            t,
            GET,
            GET.len() as u64,
            outer,
            outer.len() as u64,
            5 * MS,
        );
        t += 100 * MS;
    }
    let a = run(&s.finish());
    let serious: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    let roots: Vec<&&Finding> = serious.iter().filter(|f| f.caused_by.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{serious:#?}");
    let root = roots[0];
    assert_eq!(
        (root.kind.as_str(), root.service.as_str()),
        ("errors", "db:18082")
    );
    assert!(root.summary.contains("failed 50 of 50"), "{}", root.summary);
    assert!((rel(&a, root.start_ns) - 10.0).abs() <= 1.0);
    assert!((rel(&a, root.end_ns) - 15.0).abs() <= 1.0);
    let api = serious
        .iter()
        .find(|f| f.service == "python3:18081")
        .expect("the api's errors follow");
    assert_eq!(api.kind, "upstream_errors");
    assert_eq!(api.caused_by, vec![root.id.clone()]);
    assert!(
        api.evidence
            .iter()
            .any(|e| e.contains("50 of its failed requests made a call that failed")),
        "{:?}",
        api.evidence
    );
}

/// tcp.csv's churn, lifetimes and bytes: five connections of known lives and traffic, one of
/// them with calls folded into the close's byte counters.
#[test]
fn churn_lifetimes_and_bytes_per_edge_and_bucket() {
    let t0 = 1_000 * S;
    let mut s = Synth::new(Vec::new());
    s.exec(t0, 10, 1, "/usr/bin/wrk", &["wrk"]);
    s.exec(t0, 20, 1, "/usr/bin/python3", &["python3", "api.py"]);
    s.listen(t0 + MS, 20, 18081);
    // connection k opens at 1 s + k·100 ms, makes k + 1 exchanges, closes (k + 1)·200 ms later
    for k in 0..5u64 {
        let open = t0 + S + k * 100 * MS;
        let c = s.connect(open, 10, 20, 18081);
        for j in 0..=k {
            s.exchange(
                &c,
                open + MS + j * 10 * MS,
                GET,
                GET.len() as u64,
                OK,
                OK.len() as u64,
                MS,
            );
        }
        let (sent, received) = ((k + 1) * GET.len() as u64, (k + 1) * OK.len() as u64);
        // the last connection's close counts 1000 bytes more each way (folded calls)
        let extra = if k == 4 { 1000 } else { 0 };
        s.close(
            &c,
            open + (k + 1) * 200 * MS,
            sent + extra,
            received + extra,
        );
    }
    let a = run(&s.finish());
    let pts: Vec<_> = a
        .tcp
        .iter()
        .filter(|p| p.server == "python3:18081")
        .collect();
    assert!(!pts.is_empty(), "{:#?}", a.tcp);
    let sum = |f: fn(&crate::model::TcpPoint) -> u64| pts.iter().map(|p| f(p)).sum::<u64>();
    assert_eq!(sum(|p| p.opened), 5);
    assert_eq!(sum(|p| p.closed), 5);
    assert_eq!(sum(|p| p.connects), 5);
    assert_eq!(sum(|p| p.bytes_sent), 15 * GET.len() as u64 + 1000);
    assert_eq!(sum(|p| p.bytes_received), 15 * OK.len() as u64 + 1000);
    // lifetimes 200..1000 ms; all closed within [1.2 s, 2.4 s]: per bucket, the quantiles of
    // those closed in it
    let mut lives: Vec<(f64, f64)> = pts
        .iter()
        .filter(|p| p.closed > 0)
        .map(|p| {
            (
                p.lifetime_p50_ms.expect("p50"),
                p.lifetime_p99_ms.expect("p99"),
            )
        })
        .collect();
    lives.sort_by(|a, b| a.0.total_cmp(&b.0));
    // closed in [1 s, 2 s): 200, 400, 600 ms; in [2 s, 3 s): 800, 1000 ms (nearest rank)
    let want = [(400.0, 600.0), (800.0, 1000.0)];
    assert_eq!(lives.len(), 2, "{lives:?}");
    for (got, want) in lives.iter().zip(want) {
        assert!(
            (got.0 - want.0).abs() < 0.5 && (got.1 - want.1).abs() < 0.5,
            "{lives:?}"
        );
    }
}
