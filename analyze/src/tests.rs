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
fn responses_cut_off_after_their_headers_are_failed_requests() {
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    s.exec(t, 10, 1, "/usr/bin/client", &["client"]);
    s.exec(t, 20, 1, "/usr/bin/server", &["server"]);
    s.listen(t + 1, 20, 7000);
    let req = |method: &str, path: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    };
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n";
    let body = [b'x'; 50];
    let (h, b) = (head.len() as u64, body.len() as u64);
    let mut at = t + 1_000_000;
    let mut conn = |s: &mut Synth<Vec<Event>>, method: &str, path: &str| {
        at += 10_000_000;
        let c = s.connect(at, 10, 20, 7000);
        let r = req(method, path);
        s.exchange(&c, at + 1_000, &r, r.len() as u64, head, h, 100_000);
        (c, r.len() as u64, at)
    };
    // The server dies between the headers and the body: the client's kernel got the headers.
    let (c, sent, at1) = conn(&mut s, "GET", "/cut");
    s.server_closes(&c, at1 + 2_000_000, sent, h);
    // The body follows in a write of its own: whole.
    let (c, sent, at2) = conn(&mut s, "GET", "/whole");
    s.response_more(&c, at2 + 500_000, &body);
    s.server_closes(&c, at2 + 2_000_000, sent, h + b);
    // The client stops reading and closes first (it gave up): the server's answer stands.
    let (c, sent, at3) = conn(&mut s, "GET", "/abandoned");
    s.close(&c, at3 + 2_000_000, sent, h);
    // A HEAD response declares a length it does not carry.
    let (c, sent, at4) = conn(&mut s, "HEAD", "/head");
    s.server_closes(&c, at4 + 2_000_000, sent, h);
    // Cut off by a reset.
    let (c, sent, at5) = conn(&mut s, "GET", "/reset");
    s.reset_to_client(at5 + 1_900_000, &c);
    s.server_closes(&c, at5 + 2_000_000, sent, h);
    let a = run(&s.finish(), ServicesFile::default());
    let row = |target: &str| {
        let r = a
            .requests
            .iter()
            .find(|r| r.target == target && r.client == "client")
            .unwrap_or_else(|| panic!("no row for {target}: {:?}", a.requests));
        (r.status, r.error)
    };
    assert_eq!(row("/cut"), (crate::INCOMPLETE_RESPONSE_CLOSED, true));
    assert_eq!(row("/whole"), ("200", false));
    assert_eq!(row("/abandoned"), ("200", false));
    assert_eq!(row("/head"), ("200", false));
    assert_eq!(row("/reset"), (crate::INCOMPLETE_RESPONSE_RESET, true));
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!((e.requests, e.errors), (5, 2), "{e:?}");
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

/// A client and a server of HTTP on 127.0.0.1:7000, and a request builder.
fn client_server(s: &mut Synth<Vec<Event>>, t: u64) {
    s.exec(t, 10, 1, "/usr/bin/client", &["client"]);
    s.exec(t, 20, 1, "/usr/bin/server", &["server"]);
    s.listen(t + 1, 20, 7000);
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// One tuple carrying three successive connections (ephemeral ports run around on a busy
/// node): each client side joins its own server side, so there is no edge from the bare
/// address (`127.0.0.1 -> server:7000`) and every request is counted once, with its
/// server-side latency.
#[test]
fn reused_tuples_make_no_phantom_edges_and_count_each_request_once() {
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    client_server(&mut s, t);
    for k in 0..3u64 {
        let at = t + 1_000_000 + k * 100_000_000;
        let c = s.connect_from(at, 10, 40000, 20, 7000);
        for j in 0..2u64 {
            let r = get(&format!("/c{k}/r{j}"));
            let ts = at + 1_000_000 + j * 10_000_000;
            s.exchange(&c, ts, &r, r.len() as u64, OK, OK.len() as u64, 2_000_000);
        }
        s.close(&c, at + 50_000_000, 100, 100);
    }
    let a = run(&s.finish(), ServicesFile::default());
    let edges: Vec<String> = a
        .edges
        .iter()
        .map(|e| format!("{} -> {}", e.client, e.server))
        .collect();
    assert_eq!(edges, vec!["client -> server:7000"], "{:?}", a.edges);
    let e = &a.edges[0];
    assert_eq!((e.requests, e.connections), (6, 3), "{e:?}");
    assert_eq!(
        e.server_p50_ms,
        Some(2.0),
        "every request paired with its server side"
    );
    let server = a.service("server:7000").expect("server");
    assert_eq!((server.requests, server.calls), (6, 6));
    assert_eq!(a.total_requests, 6);
    assert!(a.service("127.0.0.1").is_none(), "{:?}", a.services);
}

/// Retransmits on a reused tuple belong to the one connection live when they were sent:
/// each counted once on its edge, whichever socket sent it.
#[test]
fn retransmits_count_once_per_connection_on_reused_tuples() {
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    client_server(&mut s, t);
    for k in 0..3u64 {
        let at = t + 1_000_000 + k * 100_000_000;
        let c = s.connect_from(at, 10, 40000, 20, 7000);
        let r = get("/x");
        s.exchange(
            &c,
            at + 1_000_000,
            &r,
            r.len() as u64,
            OK,
            OK.len() as u64,
            1_000_000,
        );
        match k {
            1 => s.retransmit_by(at + 2_000_000, &c, false),
            2 => {
                s.retransmit_by(at + 2_000_000, &c, true);
                s.retransmit_by(at + 3_000_000, &c, false);
            }
            _ => {}
        }
        s.close(&c, at + 50_000_000, 100, 100);
    }
    let a = run(&s.finish(), ServicesFile::default());
    let total: u64 = a.edges.iter().map(|e| e.retransmits).sum();
    assert_eq!(total, 3, "{:?}", a.edges);
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!(e.retransmits, 3);
    assert_eq!(e.reasons, vec!["3 TCP retransmits".to_string()]);
}

/// A reset is the reset of the connection that received it: the same loopback tuple on
/// another node, reset while this node's request waited, does not make this node's request
/// "reset"; and the two nodes' loopback connections are not joined to each other.
#[test]
fn resets_and_joins_keep_to_their_node_and_connection() {
    let t = 5_000_000_000u64;
    let node = |server_exe: &str, reset: bool| {
        let mut s = Synth::new(Vec::new());
        s.exec(t, 10, 1, "/usr/bin/client", &["client"]);
        s.exec(t, 20, 1, server_exe, &["server"]);
        s.listen(t + 1, 20, 7000);
        let c = s.connect_from(t + 1_000_000, 10, 40000, 20, 7000);
        let r = get("/wait");
        s.request(&c, t + 2_000_000, &r, r.len() as u64);
        if reset {
            s.reset_to_client(t + 3_000_000, &c);
        }
        s.close(&c, t + 4_000_000, 0, 0);
        s.finish()
    };
    let a_events = node("/usr/bin/server-a", false);
    let b_events = node("/usr/bin/server-b", true);
    let clock = synth::synth_clock();
    let mut all: Vec<(&str, u64, &Event)> = a_events
        .iter()
        .map(|e| ("node-a", clock.to_wall(e.ts), e))
        .chain(b_events.iter().map(|e| ("node-b", clock.to_wall(e.ts), e)))
        .collect();
    // Node b's events first at equal times: its reset comes before node a's close.
    all.sort_by_key(|&(n, ts, _)| (ts, n != "node-b"));
    let a = analyze_events(all, ServicesFile::default()).expect("analysis");
    let status = |server: &str| {
        let r: Vec<_> = a.requests.iter().filter(|r| r.server == server).collect();
        assert_eq!(r.len(), 1, "{server}: {r:?}");
        (r[0].status, r[0].node)
    };
    assert_eq!(
        status("server-a:7000"),
        (crate::NO_RESPONSE_CLOSED, "node-a")
    );
    assert_eq!(
        status("server-b:7000"),
        (crate::NO_RESPONSE_RESET, "node-b")
    );
    let edges: Vec<String> = a
        .edges
        .iter()
        .map(|e| format!("{} -> {}", e.client, e.server))
        .collect();
    assert_eq!(
        edges,
        vec!["client -> server-a:7000", "client -> server-b:7000"]
    );
}

/// A client and a server:7000 (see `client_server`) with one answered request on a
/// connection closed by `t` + 3 ms.
fn one_answered_request(t: u64) -> Synth<Vec<Event>> {
    let mut s = Synth::new(Vec::new());
    client_server(&mut s, t);
    let c = s.connect(t + 1_000_000, 10, 20, 7000);
    let r = get("/ok");
    s.exchange(
        &c,
        t + 2_000_000,
        &r,
        r.len() as u64,
        OK,
        OK.len() as u64,
        100_000,
    );
    s.close(&c, t + 3_000_000, r.len() as u64, OK.len() as u64);
    s
}

/// A client whose `Established` the capture did not see keeps `127.0.0.1:0` from its connect
/// attempt until a message or its close names its port: it must still join its server (else
/// the server's side makes a `127.0.0.1 -> server` edge of its own).
#[test]
fn a_client_known_only_by_its_connect_attempt_joins_its_server() {
    let t = 5_000_000_000u64;
    let mut s = one_answered_request(t);
    let c = s.connect_unconfirmed(t + 4_000_000, 10, 45000, 20, 7000);
    let r = get("/late");
    s.exchange(
        &c,
        t + 5_000_000,
        &r,
        r.len() as u64,
        OK,
        OK.len() as u64,
        100_000,
    );
    s.close(&c, t + 6_000_000, r.len() as u64, OK.len() as u64);
    let a = run(&s.finish(), ServicesFile::default());
    let edges: Vec<String> = a
        .edges
        .iter()
        .map(|e| format!("{} -> {}", e.client, e.server))
        .collect();
    assert_eq!(edges, vec!["client -> server:7000"], "{edges:?}");
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!(e.requests, 2, "{e:?}");
    assert!(e.server_p50_ms.is_some(), "joined: {e:?}");
}

/// A client that closes (dies, gives up) after the server answered but before reading the
/// answer: the server did not fail, it answered (the api-down run: the api killed while
/// PostgreSQL's answer to its BEGIN was on its way).
#[test]
fn an_answer_the_client_closed_before_reading_is_not_a_server_failure() {
    let t = 5_000_000_000u64;
    let mut s = one_answered_request(t);
    let c = s.connect(t + 4_000_000, 10, 20, 7000);
    let r = get("/slow");
    s.answered_unread(&c, t + 5_000_000, &r, OK, 100_000);
    s.close(&c, t + 6_000_000, r.len() as u64, 0);
    let a = run(&s.finish(), ServicesFile::default());
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!((e.requests, e.errors), (2, 0), "{e:?}");
    let server = a.service("server:7000").expect("server");
    assert_eq!((server.requests, server.errors), (2, 0), "{server:?}");
}

/// A connect that times out sent its SYN several times: those retransmits are the failed
/// attempt's, on its caller's edge.
#[test]
fn a_syn_sent_again_by_a_connect_whose_failure_lost_its_port_counts_on_the_edge() {
    let t = 5_000_000_000u64;
    let mut s = one_answered_request(t);
    s.refused_after_syn_retry(t + 4_000_000, 10, 45678, 7000);
    let a = run(&s.finish(), ServicesFile::default());
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!((e.failed_connections, e.retransmits), (2, 1), "{e:?}");
}

#[test]
fn syn_retransmits_of_a_failed_connect_count_on_the_edge() {
    let t = 5_000_000_000u64;
    let mut s = one_answered_request(t);
    s.timed_out(t + 4_000_000, 10, 45678, 7000, 3);
    let a = run(&s.finish(), ServicesFile::default());
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!(
        (e.requests, e.failed_connections, e.retransmits),
        (2, 1, 3),
        "{e:?}"
    );
}

/// A server going down completes handshakes in the kernel and resets them unread: its caller
/// sees a connect fail (ECONNRESET). That is a failed connection of the caller's edge, not a
/// connection of some other protocol beside it.
#[test]
fn a_connection_reset_before_any_byte_is_a_failed_connect() {
    let t = 5_000_000_000u64;
    let mut s = one_answered_request(t);
    let dead = s.connect(t + 4_000_000, 10, 20, 7000);
    s.reset_to_client(t + 4_100_000, &dead);
    s.close(&dead, t + 4_200_000, 0, 0);
    let a = run(&s.finish(), ServicesFile::default());
    let edges: Vec<_> = a.edges_between("client", "server:7000").collect();
    assert_eq!(edges.len(), 1, "one edge, its protocol's: {edges:?}");
    let e = edges[0];
    assert_eq!(e.protocol, "http");
    assert_eq!(
        (e.requests, e.errors, e.failed_connections),
        (2, 1, 1),
        "{e:?}"
    );
    let server = a.service("server:7000").expect("server");
    assert_eq!((server.requests, server.errors), (1, 0), "{server:?}");
    assert_eq!((server.calls, server.failed_connections), (2, 1));
}

/// A refused connect is a failed request of its caller's edge, not a request the server
/// served: the server's `requests` (and its error rate, endpoints and series) count what
/// it served; `calls` and `failed_connections` keep the callers' view.
#[test]
fn refused_connects_are_failed_calls_not_served_requests() {
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    client_server(&mut s, t);
    let c = s.connect(t + 1_000_000, 10, 20, 7000);
    for j in 0..4u64 {
        let r = get("/ok");
        let ts = t + 2_000_000 + j * 1_000_000;
        s.exchange(&c, ts, &r, r.len() as u64, OK, OK.len() as u64, 100_000);
    }
    s.close(&c, t + 10_000_000, 100, 100);
    for j in 0..2u64 {
        s.refused(t + 20_000_000 + j * 1_000_000, 10, 7000);
    }
    let a = run(&s.finish(), ServicesFile::default());
    let e = a
        .edges_between("client", "server:7000")
        .next()
        .expect("edge");
    assert_eq!(
        (e.requests, e.errors, e.failed_connections),
        (6, 2, 2),
        "the caller's view: {e:?}"
    );
    let server = a.service("server:7000").expect("server");
    assert_eq!(
        (server.requests, server.errors, server.error_rate),
        (4, 0, 0.0),
        "served: {server:?}"
    );
    assert_eq!((server.calls, server.failed_connections), (6, 2));
    assert_eq!(server.status, Health::Critical, "{:?}", server.reasons);
    assert_eq!(server.reasons, vec!["2 failed connections".to_string()]);
    let client = a.service("client").expect("client");
    assert_eq!(client.requests_sent, 6);
    // Endpoints and series of the server count what it served.
    let routes: Vec<(&str, u64)> = a
        .endpoints
        .iter()
        .filter(|x| x.service == "server:7000")
        .map(|x| (x.route.as_str(), x.requests))
        .collect();
    assert_eq!(routes, vec![("GET /ok", 4)]);
    let series: u64 = a
        .series
        .iter()
        .filter(|x| x.service == "server:7000")
        .flat_map(|x| x.points.iter().map(|p| p.requests))
        .sum();
    assert_eq!(series, 4);
    // The CSV carries both views.
    let dir = tempfile::tempdir().expect("tempdir");
    write_report(&a, dir.path()).expect("report");
    let csv = std::fs::read_to_string(dir.path().join("services.csv")).expect("services.csv");
    let header: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
    let row: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("server:7000,"))
        .unwrap_or("")
        .split(',')
        .collect();
    let col = |name: &str| {
        let i = header.iter().position(|h| *h == name).expect(name);
        row[i]
    };
    assert_eq!(
        (col("requests"), col("calls"), col("failed_connections")),
        ("4", "6", "2")
    );
}

/// A server side whose client was not captured, on a tuple that captured connections also
/// used, stays unjoined (named from its peer's address) and takes no other's client.
#[test]
fn a_server_side_without_its_client_stays_unjoined_on_a_reused_tuple() {
    use retrace_segment::EventBody;
    let mut s = Synth::new(Vec::new());
    let t = 5_000_000_000u64;
    client_server(&mut s, t);
    let mut hidden = None;
    for k in 0..3u64 {
        let at = t + 1_000_000 + k * 100_000_000;
        let c = s.connect_from(at, 10, 40000, 20, 7000);
        let r = get(&format!("/c{k}"));
        s.exchange(
            &c,
            at + 1_000_000,
            &r,
            r.len() as u64,
            OK,
            OK.len() as u64,
            1_000_000,
        );
        s.close(&c, at + 50_000_000, 100, 100);
        if k == 1 {
            hidden = Some(c.client);
        }
    }
    let mut evs = s.finish();
    // The second connection's client side is not in the capture.
    evs.retain(|e| match &e.body {
        EventBody::Tcp(x) => Some(x.conn) != hidden,
        EventBody::L7(m) => Some(m.conn) != hidden,
        _ => true,
    });
    let a = run(&evs, ServicesFile::default());
    let edges: Vec<(String, u64, u64)> = a
        .edges
        .iter()
        .map(|e| {
            (
                format!("{} -> {}", e.client, e.server),
                e.requests,
                e.connections,
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![
            ("127.0.0.1 -> server:7000".to_string(), 1, 1),
            ("client -> server:7000".to_string(), 2, 2)
        ]
    );
    let targets: Vec<(&str, &str)> = a.requests.iter().map(|r| (r.client, r.target)).collect();
    assert_eq!(
        targets,
        vec![("client", "/c0"), ("127.0.0.1", "/c1"), ("client", "/c2")]
    );
    assert_eq!(a.service("server:7000").expect("server").requests, 3);
}
