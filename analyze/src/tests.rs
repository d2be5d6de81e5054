//! Tests of the whole analysis on synthetic events.

use std::collections::BTreeMap;
use std::path::Path;

use retrace_segment::{Event, EventKind};

use crate::synth::{self, ShopOptions, Synth};
use crate::{analyze_events, write_report, Analysis, Health, ServicesFile};

fn events(opts: &ShopOptions) -> Vec<Event> {
    synth::shop(Vec::new(), opts)
}

fn run(evs: &[Event], services: ServicesFile) -> Analysis {
    let clock = synth::synth_clock();
    analyze_events(
        evs.iter().map(|e| ("node-a", clock.to_wall(e.ts), e)),
        services,
    )
    .expect("analysis")
}

fn shop(opts: &ShopOptions) -> Analysis {
    run(&events(opts), ServicesFile::default())
}

/// Percentile as numpy's default ("linear") method computes it from a sorted list.
fn linear_percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (h - lo as f64))
}

#[test]
fn services_are_grouped_by_program_and_port() {
    let a = shop(&ShopOptions::default());
    let names: Vec<&str> = a.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        names,
        [
            "127.0.0.1:18083",
            "curl",
            "nginx:8080",
            "python3:18081",
            "python3:18082",
            "redis-server:6379",
            "wrk"
        ]
    );
    let nginx = a.service("nginx:8080").expect("nginx");
    assert_eq!(nginx.instances, 3, "master and two workers");
    assert_eq!(nginx.kind, "exe+port");
    assert_eq!(a.service("python3:18081").expect("api").instances, 1);
    assert_eq!(a.service("wrk").expect("wrk").kind, "exe");
    assert_eq!(a.service("127.0.0.1:18083").expect("peer").instances, 0);
}

#[test]
fn edges_carry_requests_errors_failures_and_retransmits() {
    let opts = ShopOptions {
        requests: 2000,
        ..Default::default()
    };
    let a = shop(&opts);
    let edge = |c: &str, s: &str| {
        let v: Vec<_> = a.edges_between(c, s).collect();
        assert_eq!(v.len(), 1, "one edge {c} -> {s}: {:?}", a.edges);
        v[0].clone()
    };
    let front = edge("wrk", "nginx:8080");
    assert_eq!(front.protocol, "http");
    assert_eq!(front.requests, 2000);
    assert_eq!(front.connections, 4);
    let b1 = edge("nginx:8080", "python3:18081");
    let b2 = edge("nginx:8080", "python3:18082");
    assert_eq!(b1.requests + b2.requests, 2000);
    assert_eq!(b1.errors, 0);
    assert_eq!(
        b2.errors,
        b2.requests / 10,
        "every tenth call to :18082 fails"
    );
    assert_eq!(front.errors, b2.errors, "nginx passes the 500s on");
    let r1 = edge("python3:18081", "redis-server:6379");
    assert_eq!(r1.protocol, "redis");
    assert_eq!(r1.requests, b1.requests);
    // Retransmits are joined by 4-tuple to the backend edges.
    let expected_rtx = (0..2000u64).filter(|i| i % 997 == 13).count() as u64;
    assert_eq!(b1.retransmits + b2.retransmits, expected_rtx);
    // Refused connections: failed connections and failed requests of curl.
    let refused = (0..2000u64).filter(|i| i % 500 == 250).count() as u64;
    let c = edge("curl", "127.0.0.1:18083");
    assert_eq!(c.failed_connections, refused);
    assert_eq!((c.requests, c.errors), (refused, refused));
    assert_eq!(c.status, Health::Critical);
    assert!(
        c.reasons.iter().any(|r| r.contains("failed connections")),
        "{:?}",
        c.reasons
    );
    assert_eq!(b2.status, Health::Critical, "10% errors");
    assert!(
        b2.reasons.iter().any(|r| r.starts_with("error rate 10.")),
        "{:?}",
        b2.reasons
    );
    // Bytes from the close events of the client side.
    assert!(front.bytes_sent > 2000 * 60 && front.bytes_received > front.bytes_sent);
    // ... and the one DNS query of the shop's client.
    assert_eq!(a.total_requests, 2000 * 3 + refused + 1);
}

#[test]
fn percentiles_are_exact_and_client_side() {
    let a = shop(&ShopOptions {
        requests: 1500,
        ..Default::default()
    });
    for e in &a.edges {
        let mut lat: Vec<f64> = a
            .requests
            .iter()
            .filter(|r| r.client == e.client && r.server == e.server)
            .filter_map(|r| r.latency_ns)
            .map(|ns| ns as f64 / 1e6)
            .collect();
        lat.sort_by(f64::total_cmp);
        for (q, got) in [(0.5, e.p50_ms), (0.95, e.p95_ms), (0.99, e.p99_ms)] {
            let want = linear_percentile(&lat, q);
            match (want, got) {
                // Reported values are rounded to the nanosecond.
                (Some(w), Some(g)) => assert!((w - g).abs() <= 6e-7, "{e:?} q{q}: {w} vs {g}"),
                (None, None) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    // Client-side latency is 40 µs longer than the server side on each exchange here.
    let front = a.edges_between("wrk", "nginx:8080").next().expect("edge");
    let (c, s) = (
        front.p50_ms.expect("p50"),
        front.server_p50_ms.expect("server p50"),
    );
    assert!((c - s - 0.04).abs() < 2e-6, "client {c} server {s}");
    for r in a.requests.iter().filter(|r| r.client == "wrk") {
        assert_eq!(
            r.latency_ns.expect("lat") - r.server_latency_ns.expect("slat"),
            40_000
        );
    }
}

#[test]
fn services_file_names_and_merges() {
    let f = ServicesFile::parse(
        "latency_objective_ms: 1\nservices:\n  - name: api\n    cmdline: 'app\\.py'\n  - name: frontend\n    comm: nginx\n    latency_objective_ms: 10000\n",
        Path::new("s.yaml"),
    )
    .expect("valid");
    let a = run(&events(&ShopOptions::default()), f);
    let api = a.service("api").expect("merged backends");
    assert_eq!(api.instances, 2);
    assert_eq!(api.kind, "services-file");
    assert!(a.service("python3:18081").is_none());
    let e = a.edges_between("frontend", "api").next().expect("edge");
    assert_eq!(e.requests, ShopOptions::default().requests);
    // Objective of 1 ms for the api: its latency is over it; the frontend's 10 s is not.
    assert!(
        e.reasons.iter().any(|r| r.contains("objective 1 ms")),
        "{:?}",
        e.reasons
    );
    let w = a.edges_between("wrk", "frontend").next().expect("edge");
    assert!(
        !w.reasons.iter().any(|r| r.contains("objective")),
        "{:?}",
        w.reasons
    );
}

#[test]
fn peers_are_named_by_dns_or_address() {
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    s.exec(t, 10, 1, "/usr/bin/psql", &["psql"]);
    s.dns(
        t + 1000,
        10,
        "db.internal",
        std::net::Ipv4Addr::new(10, 0, 0, 7),
    );
    // A connection to a server that was not captured: only the client side exists.
    let remote = retrace_segment::Endpoint::new(std::net::Ipv4Addr::new(10, 0, 0, 7), 5432);
    let conn = retrace_segment::ConnId {
        pid: 10,
        fd: 3,
        start_ns: t + 2_000_000,
    };
    let local = retrace_segment::Endpoint::new(std::net::Ipv4Addr::new(10, 0, 0, 2), 51000);
    for (ts, step) in [
        (t + 2_000_000, retrace_segment::TcpStep::ConnectAttempt),
        (
            t + 2_100_000,
            retrace_segment::TcpStep::Established {
                latency_ns: 100_000,
            },
        ),
        (
            t + 9_000_000,
            retrace_segment::TcpStep::Closed {
                bytes_sent: 10,
                bytes_received: 20,
            },
        ),
    ] {
        s.push(Event::new(
            ts,
            retrace_segment::EventBody::Tcp(retrace_segment::TcpEvent {
                conn,
                tid: 10,
                local,
                remote,
                step,
            }),
        ));
    }
    s.refused(t + 10_000_000, 10, 6000);
    let evs = s.finish();
    let a = run(&evs, ServicesFile::default());
    let e = a
        .edges_between("psql", "db.internal:5432")
        .next()
        .expect("named by DNS");
    assert_eq!((e.connections, e.bytes_sent, e.bytes_received), (1, 10, 20));
    assert_eq!(e.protocol, "tcp");
    assert_eq!(a.service("db.internal:5432").expect("svc").kind, "dns");
    assert!(a.edges_between("psql", "127.0.0.1:6000").next().is_some());
    assert_eq!(a.payload.dns_messages, 2);
}

#[test]
fn garbage_and_truncation_are_counted_not_fatal() {
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    s.exec(t, 10, 1, "/usr/bin/client", &["client"]);
    s.exec(t, 20, 1, "/usr/bin/server", &["server"]);
    s.listen(t + 1, 20, 7000);
    let c = s.connect(t + 1000, 10, 20, 7000);
    let mut rng = synth::Rng::new(7);
    for i in 0..50u64 {
        let junk: Vec<u8> = (0..64).map(|_| rng.below(256) as u8).collect();
        s.exchange(
            &c,
            t + 1_000_000 * (i + 1),
            &junk,
            64,
            &junk[..10],
            10,
            100_000,
        );
    }
    // A truncated HTTP request: the prefix stops in the headers.
    let c2 = s.connect(t + 100_000_000, 10, 20, 7000);
    s.exchange(
        &c2,
        t + 101_000_000,
        b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Ag",
        4000,
        b"HTTP/1.1 200 OK\r\n",
        900,
        1_000_000,
    );
    s.close(&c, t + 200_000_000, 0, 0);
    s.close(&c2, t + 200_000_000, 0, 0);
    let a = run(&s.finish(), ServicesFile::default());
    assert!(
        a.payload.unknown > 0 || a.payload.unparsed > 0,
        "{:?}",
        a.payload
    );
    assert!(a.payload.unknown_connections >= 1, "{:?}", a.payload);
    let html = crate::report::render_html(&a);
    assert!(html.contains("unknown protocol"), "payload figures shown");
}

#[test]
fn report_is_escaped_and_deterministic() {
    let evil = "/<script>alert(1)</script>\"";
    let opts = ShopOptions {
        requests: 300,
        odd_path: Some(evil.to_string()),
        ..Default::default()
    };
    let evs = events(&opts);
    let a1 = run(&evs, ServicesFile::default());
    let a2 = run(&evs, ServicesFile::default());
    assert!(
        a1.requests.iter().any(|r| r.target == evil),
        "the odd path was parsed"
    );
    let d1 = tempfile::tempdir().expect("tmp");
    let d2 = tempfile::tempdir().expect("tmp");
    write_report(&a1, d1.path()).expect("report");
    write_report(&a2, d2.path()).expect("report");
    let files = [
        "index.html",
        "services.csv",
        "edges.csv",
        "requests.csv",
        "endpoints.csv",
        "summary.json",
    ];
    for f in files {
        let x = std::fs::read(d1.path().join(f)).expect("read");
        let y = std::fs::read(d2.path().join(f)).expect("read");
        assert!(!x.is_empty(), "{f} empty");
        assert!(
            x == y,
            "{f} differs between two analyses of the same events"
        );
    }
    let html = std::fs::read_to_string(d1.path().join("index.html")).expect("html");
    assert!(
        !html.contains("<script"),
        "no script element, and the captured one is escaped"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;"),
        "shown as text"
    );
    assert!(html.contains("<svg id=\"service-map\""));
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing external"
    );
    // CSV headers start with the columns the issue fixes.
    let head = |f: &str| {
        std::fs::read_to_string(d1.path().join(f))
            .expect("csv")
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(head("services.csv")
        .starts_with("service,instances,requests,errors,error_rate,p50_ms,p95_ms,p99_ms,status"));
    assert!(head("edges.csv").starts_with("client,server,protocol,connections,failed_connections,requests,errors,p50_ms,p95_ms,p99_ms,retransmits,bytes_sent,bytes_received,status"));
    assert!(head("requests.csv")
        .starts_with("ts,client,server,protocol,method,target,status,latency_ms,trace_id"));
    assert!(head("endpoints.csv").starts_with("service,"));
    // The evil path is quoted properly in CSV (it contains a double quote).
    let reqs = std::fs::read_to_string(d1.path().join("requests.csv")).expect("csv");
    assert!(
        reqs.contains("\"/<script>alert(1)</script>\"\"\""),
        "CSV quoting"
    );
    // summary.json round-trips into an Analysis (without the requests).
    let back: Analysis =
        serde_json::from_slice(&std::fs::read(d1.path().join("summary.json")).expect("json"))
            .expect("parse");
    assert_eq!(back.edges, a1.edges);
    assert_eq!(back.services, a1.services);
}

#[test]
fn losses_and_marks_reach_the_summary() {
    let mut s = Synth::new(Vec::new());
    s.loss(5_000_000_000, EventKind::L7, 25);
    s.mark(5_000_000_100, "deploy <v2>");
    s.exec(5_000_000_200, 1, 0, "/sbin/init", &["init"]);
    let a = run(&s.finish(), ServicesFile::default());
    assert_eq!(a.dropped, 25);
    assert_eq!(a.dropped_by_kind, BTreeMap::from([("l7".to_string(), 25)]));
    assert!((a.completeness - 3.0 / 28.0).abs() < 1e-12);
    assert_eq!(a.marks.len(), 1);
    let html = crate::report::render_html(&a);
    assert!(html.contains("deploy &lt;v2&gt;"));
}

#[test]
fn requests_cut_off_by_a_close_or_reset_are_failed_requests() {
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    s.exec(t, 10, 1, "/usr/bin/client", &["client"]);
    s.exec(t, 20, 1, "/usr/bin/server", &["server"]);
    s.listen(t + 1, 20, 7000);
    let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    // Answered, then one request the server never answers: it resets the connection.
    let c1 = s.connect(t + 1_000, 10, 20, 7000);
    let r = req("/answered");
    s.exchange(
        &c1,
        t + 1_000_000,
        &r,
        r.len() as u64,
        ok,
        ok.len() as u64,
        100_000,
    );
    let r = req("/reset");
    s.request(&c1, t + 2_000_000, &r, r.len() as u64);
    s.reset_to_client(t + 3_000_000, &c1);
    s.close(&c1, t + 3_000_100, 0, 0);
    // A request whose connection is closed (FIN) before any response byte.
    let c2 = s.connect(t + 4_000_000, 10, 20, 7000);
    let r = req("/closed");
    s.request(&c2, t + 5_000_000, &r, r.len() as u64);
    s.close(&c2, t + 6_000_000, 0, 0);
    // A request still waiting when the capture ends is not a failure: it may yet be answered.
    let c3 = s.connect(t + 7_000_000, 10, 20, 7000);
    let r = req("/pending");
    s.request(&c3, t + 8_000_000, &r, r.len() as u64);
    // The capture lost L7 messages between a request and its close: the response may have
    // been among them, so the request is not called a failure.
    let c4 = s.connect(t + 9_000_000, 10, 20, 7000);
    let r = req("/lost");
    s.request(&c4, t + 10_000_000, &r, r.len() as u64);
    s.loss(t + 10_500_000, EventKind::L7, 3);
    s.close(&c4, t + 11_000_000, 0, 0);
    let a = run(&s.finish(), ServicesFile::default());
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!((e.requests, e.errors), (5, 2), "{e:?}");
    let row = |target: &str| {
        a.requests
            .iter()
            .find(|r| r.target == target)
            .unwrap_or_else(|| panic!("no row for {target}: {:?}", a.requests))
    };
    assert_eq!(
        (row("/answered").status, row("/answered").error),
        ("200", false)
    );
    let reset = row("/reset");
    assert_eq!(
        (reset.status, reset.error),
        (crate::NO_RESPONSE_RESET, true)
    );
    assert_eq!(reset.latency_ns, None);
    let closed = row("/closed");
    assert_eq!(
        (closed.status, closed.error),
        (crate::NO_RESPONSE_CLOSED, true)
    );
    let pending = row("/pending");
    assert_eq!((pending.status, pending.error), ("", false));
    let lost = row("/lost");
    assert_eq!((lost.status, lost.error), ("", false));
    let server = a.service("server:7000").expect("server");
    assert_eq!((server.requests, server.errors), (5, 2));
}

/// DNS queries of a captured process are requests of its edge to the resolver: latency from
/// the query to the response, NXDOMAIN an answer, SERVFAIL and a query never answered
/// (past the resolver's 5 s timeout before the capture's end) failures; one still within its
/// timeout at the end is not counted at all.
#[test]
fn dns_queries_are_requests_to_the_resolver() {
    use retrace_segment::{Direction, Endpoint, EventBody, UdpMessage};
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    s.exec(t, 20, 1, "/usr/bin/curl", &["curl", "http://db.internal/"]);
    let resolver = Endpoint::new(std::net::Ipv4Addr::new(10, 0, 0, 53), 53);
    let local = Endpoint::new(std::net::Ipv4Addr::new(10, 0, 0, 2), 40000);
    let addr = std::net::Ipv4Addr::new(10, 0, 0, 7);
    let udp = |s: &mut Synth<Vec<Event>>, ts: u64, direction: Direction, p: Vec<u8>| {
        s.push(Event::new(
            ts,
            EventBody::Udp(UdpMessage {
                pid: 20,
                tid: 20,
                direction,
                local,
                remote: resolver,
                size: p.len() as u64,
                payload: p,
            }),
        ));
    };
    // (id, rcode flags byte, sent at, answered after)
    let queries: [(u16, u8, u64, Option<u64>); 5] = [
        (1, 0x80, 0, Some(400_000)),            // NOERROR in 0.4 ms
        (2, 0x83, 1_000_000, Some(2_000_000)),  // NXDOMAIN in 2 ms
        (3, 0x82, 2_000_000, Some(30_000_000)), // SERVFAIL in 30 ms
        (4, 0x80, 3_000_000, None),             // never answered, 10 s before the end
        (5, 0x80, 10_000_000_000, None),        // sent 3 s before the end: may yet be answered
    ];
    for (id, rcode, at, answer) in queries {
        let (q, mut r) = synth::dns_packets(id, "db.internal", addr);
        r[3] = rcode;
        udp(&mut s, t + at, Direction::Egress, q);
        if let Some(after) = answer {
            udp(&mut s, t + at + after, Direction::Ingress, r);
        }
    }
    s.mark(t + 13_000_000_000, "end");
    let a = run(&s.finish(), ServicesFile::default());
    let e = a
        .edges_between("curl", "10.0.0.53:53")
        .find(|e| e.protocol == "dns")
        .unwrap_or_else(|| panic!("a dns edge to the resolver: {:?}", a.edges));
    assert_eq!((e.requests, e.errors), (4, 2), "{e:?}");
    assert_eq!(e.connections, 0);
    // Exact percentiles over the answered queries' latencies (0.4, 2, 30 ms).
    assert_eq!(e.p50_ms, Some(2.0));
    let statuses: Vec<&str> = a
        .requests
        .iter()
        .filter(|r| r.protocol == "dns")
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        vec![
            "NOERROR",
            "NXDOMAIN",
            "SERVFAIL",
            crate::engine::DNS_NO_RESPONSE
        ]
    );
    assert!(a
        .requests
        .iter()
        .filter(|r| r.protocol == "dns")
        .all(|r| r.method == "A" && r.target == "db.internal"));
}
