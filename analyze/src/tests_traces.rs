//! Tests of the trace linking (`traces.rs`) on synthetic events: each rule, the cases that
//! break naive rules (keep-alive connections used by several threads, DNS lookups between
//! calls, pipelined requests, event loops, ids seen again later), and the ids and files.

use std::collections::BTreeMap;

use retrace_segment::Event;

use crate::synth::{Conn, Synth};
use crate::{analyze_events, Analysis, Link, ServicesFile, SpanKind};

const MS: u64 = 1_000_000;
const T0: u64 = 5_000_000_000;

fn run(evs: &[Event]) -> Analysis {
    let clock = crate::synth::synth_clock();
    analyze_events(
        evs.iter().map(|e| ("node-a", clock.to_wall(e.ts), e)),
        ServicesFile::default(),
    )
    .expect("analysis")
}

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
}

/// The front service's name (program and port).
const FRONT: &str = "front:7000";

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// A client (pid 10), a front service (pid 20, port 7000) and a back service (pid 30, port
/// 8000), all captured.
fn three_tier(s: &mut Synth<Vec<Event>>) {
    s.exec(T0, 10, 1, "/usr/bin/client", &["client"]);
    s.exec(T0, 20, 1, "/usr/bin/front", &["front"]);
    s.exec(T0, 30, 1, "/usr/bin/back", &["back"]);
    s.listen(T0 + 1, 20, 7000);
    s.listen(T0 + 1, 30, 8000);
}

/// An exchange on `c` whose request the client writes on thread `ctid` at `at` and the
/// server reads on `stid` 10 µs later; the server answers on `stid` at `answer`, read by the
/// client 10 µs later.
#[allow(clippy::too_many_arguments)]
fn exchange(
    s: &mut Synth<Vec<Event>>,
    c: &Conn,
    ctid: u32,
    stid: u32,
    at: u64,
    answer: u64,
    req: &[u8],
) {
    s.message(c, at, true, true, ctid, req);
    s.message(c, at + 10_000, false, false, stid, req);
    s.message(c, answer, false, true, stid, OK);
    s.message(c, answer + 10_000, true, false, ctid, OK);
}

/// The parent (its request's target and span kind) of every CLIENT span of `service`, by
/// the call's target: `(parent target, link)`.
fn parents_of_calls(a: &Analysis, service: &str) -> BTreeMap<String, (String, Link)> {
    let spans: Vec<_> = a.requests.spans().collect();
    let by_id: BTreeMap<u64, _> = spans.iter().map(|s| (s.span_id, *s)).collect();
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client && s.service == service)
        .map(|s| {
            let parent = s
                .parent_span_id
                .and_then(|p| by_id.get(&p))
                .map(|p| {
                    assert_eq!(p.kind, SpanKind::Server, "a call's parent is a SERVER span");
                    assert_eq!(p.service, service, "a call's parent is in its own service");
                    assert_eq!(p.trace_id, s.trace_id, "parent and child share the trace");
                    p.target.to_string()
                })
                .unwrap_or_default();
            (s.target.to_string(), (parent, s.link))
        })
        .collect()
}

/// Thread-per-request: two worker threads of `front` serve two inbound requests at once; each
/// calls `back` over ONE keep-alive connection (used by thread 21, then by 22, then 21
/// again), with a DNS lookup between calls. Every call belongs to the request its thread was
/// serving; the connection's reuse across threads and the lookup change nothing.
#[test]
fn calls_belong_to_the_request_their_thread_serves() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    let in1 = s.connect(T0 + MS, 10, 20, 7000);
    let in2 = s.connect(T0 + MS, 10, 20, 7000);
    let out = s.connect(T0 + MS, 20, 30, 8000);
    // Inbound 1 on worker 21 (10 ms..30 ms), inbound 2 on worker 22 (11 ms..31 ms).
    s.message(&in1, T0 + 10 * MS, true, true, 10, &get("/order/1", ""));
    s.message(
        &in1,
        T0 + 10 * MS + 10_000,
        false,
        false,
        21,
        &get("/order/1", ""),
    );
    s.message(&in2, T0 + 11 * MS, true, true, 11, &get("/order/2", ""));
    s.message(
        &in2,
        T0 + 11 * MS + 10_000,
        false,
        false,
        22,
        &get("/order/2", ""),
    );
    let r = |p: &str| get(p, "");
    exchange(
        &mut s,
        &out,
        21,
        31,
        T0 + 12 * MS,
        T0 + 13 * MS,
        &r("/user/1"),
    );
    s.dns_on(
        T0 + 14 * MS,
        20,
        21,
        "db.local",
        std::net::Ipv4Addr::new(10, 0, 0, 9),
    );
    exchange(
        &mut s,
        &out,
        22,
        31,
        T0 + 15 * MS,
        T0 + 16 * MS,
        &r("/user/2"),
    );
    exchange(
        &mut s,
        &out,
        21,
        31,
        T0 + 17 * MS,
        T0 + 18 * MS,
        &r("/cart/1"),
    );
    exchange(
        &mut s,
        &out,
        22,
        31,
        T0 + 19 * MS,
        T0 + 20 * MS,
        &r("/cart/2"),
    );
    s.message(&in1, T0 + 30 * MS, false, true, 21, OK);
    s.message(&in1, T0 + 30 * MS + 10_000, true, false, 10, OK);
    s.message(&in2, T0 + 31 * MS, false, true, 22, OK);
    s.message(&in2, T0 + 31 * MS + 10_000, true, false, 11, OK);
    let a = run(&s.finish());
    let p = parents_of_calls(&a, FRONT);
    for (call, parent) in [
        ("/user/1", "/order/1"),
        ("/cart/1", "/order/1"),
        ("db.local", "/order/1"),
        ("/user/2", "/order/2"),
        ("/cart/2", "/order/2"),
    ] {
        assert_eq!(
            p.get(call),
            Some(&(parent.to_string(), Link::Thread)),
            "{call}: {p:?}"
        );
    }
    let cov = &a.trace_coverage;
    assert_eq!(cov.client_spans_in_servers, 5, "{cov:?}");
    assert_eq!(cov.client_spans_linked, 5, "{cov:?}");
    assert_eq!(cov.by_link.get("thread"), Some(&5));
    // Two traces (one per order), each: client -> front -> {3 calls, back}.
    let traces: Vec<_> = a
        .traces
        .iter()
        .filter(|t| t.root_service(&a.requests) == "client")
        .collect();
    assert_eq!(traces.len(), 2, "{:?}", a.traces);
    for t in traces {
        // client span + front server span + 2 HTTP calls (client + server spans) + order 1's
        // DNS lookup (client only).
        assert!(t.spans == 6 || t.spans == 7, "{t:?}");
        assert_eq!(t.services, 3 + u32::from(t.spans == 7), "{t:?}");
    }
}

/// Keep-alive requests one after the other on one inbound connection, served by one thread:
/// each call belongs to the request read last before it.
#[test]
fn consecutive_requests_on_one_connection_keep_their_calls() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    let inb = s.connect(T0 + MS, 10, 20, 7000);
    let out = s.connect(T0 + MS, 20, 30, 8000);
    for k in 0..4u64 {
        let at = T0 + (10 + 10 * k) * MS;
        let path = format!("/order/{k}");
        s.message(&inb, at, true, true, 10, &get(&path, ""));
        s.message(&inb, at + 10_000, false, false, 21, &get(&path, ""));
        let call = get(&format!("/user/{k}"), "");
        exchange(&mut s, &out, 21, 31, at + MS, at + 2 * MS, &call);
        s.message(&inb, at + 3 * MS, false, true, 21, OK);
        s.message(&inb, at + 3 * MS + 10_000, true, false, 10, OK);
    }
    let a = run(&s.finish());
    let p = parents_of_calls(&a, FRONT);
    for k in 0..4 {
        assert_eq!(
            p.get(&format!("/user/{k}")),
            Some(&(format!("/order/{k}"), Link::Thread)),
            "{p:?}"
        );
    }
}

/// An event loop (every message on thread 20): the thread rule does not apply to calls made
/// while several inbound requests are in progress. The proxy rule links a call to the
/// inbound request with its method and target; of several such requests, to the earliest not
/// yet proxied (first come, first served), and to none when two were read at the same moment.
#[test]
fn an_event_loop_links_by_target_first_come_first_served_and_never_guesses() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    // Inbound requests in progress together (read at these µs after T0 + 10 ms): /a/1, /a/2,
    // /same twice 50 µs apart, /fifo twice 1 ms apart.
    let inbound = [
        ("/a/1", 0),
        ("/a/2", 1_000),
        ("/same", 2_000),
        ("/same", 2_050),
        ("/fifo", 3_000),
        ("/fifo", 4_000),
    ];
    let ins: Vec<Conn> = inbound
        .iter()
        .map(|_| s.connect(T0 + MS, 10, 20, 7000))
        .collect();
    let outs: Vec<Conn> = inbound
        .iter()
        .map(|_| s.connect(T0 + MS, 20, 30, 8000))
        .collect();
    for (k, (c, (t, us))) in ins.iter().zip(inbound).enumerate() {
        let at = T0 + 10 * MS + us * 1_000;
        s.message(c, at, true, true, 10 + k as u32, &get(t, ""));
        s.message(c, at + 10_000, false, false, 20, &get(t, ""));
    }
    // Proxied in order, answered, then the inbound requests answered.
    for (k, (c, (t, _))) in outs.iter().zip(inbound).enumerate() {
        let at = T0 + (20 + k as u64) * MS;
        exchange(&mut s, c, 20, 31, at, at + 5 * MS, &get(t, ""));
    }
    for (k, c) in ins.iter().enumerate() {
        let at = T0 + (40 + k as u64) * MS;
        s.message(c, at, false, true, 20, OK);
        s.message(c, at + 10_000, true, false, 10 + k as u32, OK);
    }
    let a = run(&s.finish());
    let by_id: BTreeMap<u64, _> = a.requests.spans().map(|s| (s.span_id, s)).collect();
    let calls: Vec<_> = a
        .requests
        .spans()
        .filter(|s| s.kind == SpanKind::Client && s.service == FRONT)
        .collect();
    assert_eq!(calls.len(), inbound.len());
    for (k, c) in calls.iter().enumerate() {
        let parent = c.parent_span_id.and_then(|p| by_id.get(&p));
        if c.target == "/same" {
            assert!(parent.is_none(), "ambiguous: {c:?} under {parent:?}");
            assert_eq!(c.link, Link::Root);
            continue;
        }
        let p = parent.expect("linked");
        assert_eq!((p.target, c.link), (c.target, Link::Proxy));
        // The k-th call belongs to the k-th inbound request (the one on ins[k]).
        assert_eq!(p.client_address, ins[k].client_ep.to_string(), "{c:?}");
        assert!(
            c.confidence >= 0.5 && c.confidence < 1.0,
            "{}",
            c.confidence
        );
    }
    assert_eq!(a.trace_coverage.ambiguous, 2);
    assert_eq!(a.trace_coverage.by_link.get("proxy"), Some(&4));
}

/// The same event loop with an `X-Request-ID` on every request: the header links even the
/// requests with the same target. An id seen again after its request was answered (a client
/// reusing ids) does not join the old trace.
#[test]
fn header_ids_link_within_their_request_only() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    let ins: Vec<Conn> = (0..2).map(|_| s.connect(T0 + MS, 10, 20, 7000)).collect();
    let outs: Vec<Conn> = (0..3).map(|_| s.connect(T0 + MS, 20, 30, 8000)).collect();
    for (k, c) in ins.iter().enumerate() {
        let at = T0 + (10 + k as u64) * MS;
        let req = get("/same", &format!("X-Request-ID: id-{k}\r\n"));
        s.message(c, at, true, true, 10 + k as u32, &req);
        s.message(c, at + 10_000, false, false, 20, &req);
    }
    // Proxied in the other order.
    for (n, k) in [1u64, 0].into_iter().enumerate() {
        let at = T0 + (20 + n as u64) * MS;
        let req = get("/same", &format!("X-Request-ID: id-{k}\r\n"));
        exchange(&mut s, &outs[n], 20, 31, at, at + 5 * MS, &req);
    }
    for (k, c) in ins.iter().enumerate() {
        let at = T0 + (40 + k as u64) * MS;
        s.message(c, at, false, true, 20, OK);
        s.message(c, at + 10_000, true, false, 10 + k as u32, OK);
    }
    // A call with id-0 a second after its request was answered (no request in progress).
    let late = T0 + 1_100 * MS;
    let req = get("/other", "X-Request-ID: id-0\r\n");
    exchange(&mut s, &outs[2], 20, 31, late, late + MS, &req);
    let a = run(&s.finish());
    let by_id: BTreeMap<u64, _> = a.requests.spans().map(|s| (s.span_id, s)).collect();
    let calls: Vec<_> = a
        .requests
        .spans()
        .filter(|s| s.kind == SpanKind::Client && s.service == FRONT)
        .collect();
    assert_eq!(calls.len(), 3);
    for c in &calls {
        let parent = c.parent_span_id.and_then(|p| by_id.get(&p));
        if c.target == "/other" {
            assert!(parent.is_none(), "late id joined an old trace: {parent:?}");
            continue;
        }
        let p = parent.expect("linked by header");
        assert_eq!(c.link, Link::Header);
        // outs[0] carried id-1 (ins[1]'s), outs[1] id-0.
        let n = outs
            .iter()
            .position(|o| o.client_ep.to_string() == c.client_address)
            .expect("a call of outs");
        let k = 1 - n;
        assert_eq!(
            p.client_address,
            ins[k].client_ep.to_string(),
            "{c:?} under {p:?}"
        );
    }
    // Each inbound request got exactly one call.
    let mut per_parent: BTreeMap<u64, u32> = BTreeMap::new();
    for c in &calls {
        if let Some(p) = c.parent_span_id {
            *per_parent.entry(p).or_default() += 1;
        }
    }
    assert_eq!(per_parent.values().copied().collect::<Vec<_>>(), vec![1, 1]);
}

/// Span and trace ids: non-zero, unique, the same for the same capture; parents exist;
/// spans.csv and traces.csv agree with them.
#[test]
fn ids_are_unique_stable_and_written() {
    let opts = crate::synth::ShopOptions {
        requests: 300,
        ..Default::default()
    };
    let evs = crate::synth::shop(Vec::new(), &opts);
    let a = run(&evs);
    let b = run(&evs);
    let ids: Vec<(u128, u64, Option<u64>)> = a
        .requests
        .spans()
        .map(|s| (s.trace_id, s.span_id, s.parent_span_id))
        .collect();
    let again: Vec<(u128, u64, Option<u64>)> = b
        .requests
        .spans()
        .map(|s| (s.trace_id, s.span_id, s.parent_span_id))
        .collect();
    assert_eq!(ids, again);
    let unique: std::collections::BTreeSet<u64> = ids.iter().map(|x| x.1).collect();
    assert_eq!(unique.len(), ids.len(), "span ids are unique");
    assert!(ids.iter().all(|x| x.0 != 0 && x.1 != 0));
    for (trace, _, parent) in &ids {
        if let Some(p) = parent {
            let found = ids.iter().find(|x| x.1 == *p).expect("parent exists");
            assert_eq!(found.0, *trace);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    crate::write_report(&a, dir.path()).expect("report");
    let spans = std::fs::read_to_string(dir.path().join("spans.csv")).expect("spans.csv");
    assert_eq!(spans.lines().count(), ids.len() + 1);
    let traces = std::fs::read_to_string(dir.path().join("traces.csv")).expect("traces.csv");
    assert_eq!(traces.lines().count(), a.traces.len() + 1);
    let spans_in_traces: u64 = a.traces.iter().map(|t| u64::from(t.spans)).sum();
    assert_eq!(spans_in_traces, ids.len() as u64);
    assert_eq!(a.trace_coverage.traces, a.traces.len() as u64);
}

/// One TCP step of a socket with explicit endpoints (for connections between nodes).
fn tcp_step(
    ts: u64,
    pid: u32,
    fd: i32,
    local: retrace_segment::Endpoint,
    remote: retrace_segment::Endpoint,
    step: retrace_segment::TcpStep,
) -> Event {
    Event::new(
        ts,
        retrace_segment::EventBody::Tcp(retrace_segment::TcpEvent {
            conn: retrace_segment::ConnId {
                pid,
                fd,
                start_ns: T0,
            },
            tid: pid,
            local,
            remote,
            step,
        }),
    )
}

/// One L7 message of a socket with explicit endpoints.
#[allow(clippy::too_many_arguments)]
fn l7_msg(
    ts: u64,
    pid: u32,
    tid: u32,
    fd: i32,
    local: retrace_segment::Endpoint,
    remote: retrace_segment::Endpoint,
    egress: bool,
    payload: &[u8],
) -> Event {
    Event::new(
        ts,
        retrace_segment::EventBody::L7(retrace_segment::L7Message {
            conn: retrace_segment::ConnId {
                pid,
                fd,
                start_ns: T0,
            },
            tid,
            direction: if egress {
                retrace_segment::Direction::Egress
            } else {
                retrace_segment::Direction::Ingress
            },
            size: payload.len() as u64,
            payload: payload.to_vec(),
            tcp_seq: None,
            folded_calls: 0,
            folded_bytes: 0,
            local,
            remote,
        }),
    )
}

/// Two nodes, each with its own capture: a client on node a calls `front` on node b
/// (10.0.0.1 -> 10.0.0.2:7000), which calls `back` on its own node. One trace across the
/// nodes: client (a) -> front (b), joined by the connection's 4-tuple and time, then front's
/// call under front's request by its thread.
#[test]
fn a_trace_crosses_nodes_by_the_connection() {
    use retrace_segment::{Endpoint, TcpStep};
    let ip = |d: u8| std::net::Ipv4Addr::new(10, 0, 0, d);
    let (client_ep, front_ep) = (Endpoint::new(ip(1), 41000), Endpoint::new(ip(2), 7000));
    let req = get("/order/9", "");
    let mut a = Synth::new(Vec::new());
    a.exec(T0, 10, 1, "/usr/bin/client", &["client"]);
    a.push(tcp_step(
        T0 + MS,
        10,
        3,
        client_ep,
        front_ep,
        TcpStep::ConnectAttempt,
    ));
    let est = TcpStep::Established {
        latency_ns: 100_000,
    };
    a.push(tcp_step(T0 + MS + 100_000, 10, 3, client_ep, front_ep, est));
    a.push(l7_msg(
        T0 + 10 * MS,
        10,
        10,
        3,
        client_ep,
        front_ep,
        true,
        &req,
    ));
    a.push(l7_msg(
        T0 + 30 * MS,
        10,
        10,
        3,
        client_ep,
        front_ep,
        false,
        OK,
    ));
    let mut b = Synth::new(Vec::new());
    three_tier(&mut b);
    b.push(tcp_step(
        T0 + MS + 50_000,
        20,
        9,
        front_ep,
        client_ep,
        TcpStep::Accepted,
    ));
    b.push(l7_msg(
        T0 + 10 * MS + 80_000,
        20,
        21,
        9,
        front_ep,
        client_ep,
        false,
        &req,
    ));
    let out = b.connect(T0 + 2 * MS, 20, 30, 8000);
    exchange(
        &mut b,
        &out,
        21,
        31,
        T0 + 12 * MS,
        T0 + 14 * MS,
        &get("/user/9", ""),
    );
    b.push(l7_msg(
        T0 + 29 * MS,
        20,
        21,
        9,
        front_ep,
        client_ep,
        true,
        OK,
    ));
    let (a, b) = (a.finish(), b.finish());
    let clock = crate::synth::synth_clock();
    let mut all: Vec<(&str, u64, &Event)> = a
        .iter()
        .map(|e| ("node-a", clock.to_wall(e.ts), e))
        .chain(b.iter().map(|e| ("node-b", clock.to_wall(e.ts), e)))
        .collect();
    all.sort_by_key(|&(n, ts, _)| (ts, n));
    let an = analyze_events(all, ServicesFile::default()).expect("analysis");
    let spans: Vec<_> = an.requests.spans().collect();
    let find = |service: &str, kind: SpanKind, target: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.kind == kind && s.target == target)
            .unwrap_or_else(|| panic!("{service} {kind:?} {target}: {spans:#?}"))
    };
    let root = find("client", SpanKind::Client, "/order/9");
    let front = find(FRONT, SpanKind::Server, "/order/9");
    let call = find(FRONT, SpanKind::Client, "/user/9");
    let back = find("back:8000", SpanKind::Server, "/user/9");
    assert_eq!((root.node, front.node), ("node-a", "node-b"));
    assert_eq!(root.parent_span_id, None);
    assert_eq!(front.parent_span_id, Some(root.span_id));
    assert_eq!(front.link, Link::Connection);
    assert_eq!(call.parent_span_id, Some(front.span_id));
    assert_eq!(call.link, Link::Thread);
    assert_eq!(back.parent_span_id, Some(call.span_id));
    for s in [front, call, back] {
        assert_eq!(s.trace_id, root.trace_id);
    }
    let t = an
        .traces
        .iter()
        .find(|t| t.trace_id(&an.requests) == root.trace_id)
        .expect("the trace");
    assert_eq!((t.spans, t.services), (4, 3));
}

/// A thread started by the thread serving a request, to do that request's work (Python's
/// `threading.Thread(...).start(); join()` in a handler): its calls belong to that request,
/// through the capture's thread starts, even with another request in progress at once.
/// The acceptor thread that started the handlers serves nothing: its starts are followed
/// past it, not to a request.
#[test]
fn work_handed_to_a_new_thread_keeps_its_request() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    let start = |s: &mut Synth<Vec<Event>>, ts: u64, parent_tid: u32, tid: u32| {
        s.push(Event::new(
            ts,
            retrace_segment::EventBody::ThreadStart(retrace_segment::ThreadStart {
                pid: 20,
                parent_tid,
                tid,
            }),
        ));
    };
    let in1 = s.connect(T0 + MS, 10, 20, 7000);
    let in2 = s.connect(T0 + MS, 10, 20, 7000);
    let out1 = s.connect(T0 + 2 * MS, 20, 30, 8000);
    let out2 = s.connect(T0 + 2 * MS, 20, 30, 8000);
    // The acceptor (20) starts handlers 21 and 22.
    start(&mut s, T0 + 5 * MS, 20, 21);
    start(&mut s, T0 + 5 * MS + 1, 20, 22);
    s.message(&in1, T0 + 10 * MS, true, true, 10, &get("/order/1", ""));
    s.message(
        &in1,
        T0 + 10 * MS + 10_000,
        false,
        false,
        21,
        &get("/order/1", ""),
    );
    s.message(&in2, T0 + 11 * MS, true, true, 11, &get("/order/2", ""));
    s.message(
        &in2,
        T0 + 11 * MS + 10_000,
        false,
        false,
        22,
        &get("/order/2", ""),
    );
    // Each handler starts a worker; worker 40 starts a helper 41 of its own.
    start(&mut s, T0 + 12 * MS, 21, 40);
    start(&mut s, T0 + 12 * MS + 500_000, 22, 50);
    start(&mut s, T0 + 13 * MS, 40, 41);
    exchange(
        &mut s,
        &out1,
        41,
        31,
        T0 + 14 * MS,
        T0 + 15 * MS,
        &get("/user/1", ""),
    );
    exchange(
        &mut s,
        &out2,
        50,
        32,
        T0 + 14 * MS,
        T0 + 16 * MS,
        &get("/user/2", ""),
    );
    s.message(&in1, T0 + 30 * MS, false, true, 21, OK);
    s.message(&in1, T0 + 30 * MS + 10_000, true, false, 10, OK);
    s.message(&in2, T0 + 31 * MS, false, true, 22, OK);
    s.message(&in2, T0 + 31 * MS + 10_000, true, false, 11, OK);
    // A thread started by the acceptor calls later, with no request in progress: a root.
    let out3 = s.connect(T0 + 40 * MS, 20, 30, 8000);
    start(&mut s, T0 + 40 * MS, 20, 60);
    exchange(
        &mut s,
        &out3,
        60,
        33,
        T0 + 41 * MS,
        T0 + 42 * MS,
        &get("/refresh", ""),
    );
    let a = run(&s.finish());
    let p = parents_of_calls(&a, FRONT);
    assert_eq!(
        p.get("/user/1"),
        Some(&("/order/1".to_string(), Link::Thread)),
        "{p:?}"
    );
    assert_eq!(
        p.get("/user/2"),
        Some(&("/order/2".to_string(), Link::Thread)),
        "{p:?}"
    );
    assert_eq!(
        p.get("/refresh"),
        Some(&(String::new(), Link::Root)),
        "{p:?}"
    );
}

/// Two requests pipelined in one read on one connection, served in order by one thread: the
/// calls made before the first response belong to the first request, the later ones to the
/// second.
#[test]
fn pipelined_requests_keep_their_calls() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    let inb = s.connect(T0 + MS, 10, 20, 7000);
    let out = s.connect(T0 + MS, 20, 30, 8000);
    let both = [get("/order/1", ""), get("/order/2", "")].concat();
    s.message(&inb, T0 + 10 * MS, true, true, 10, &both);
    s.message(&inb, T0 + 10 * MS + 10_000, false, false, 21, &both);
    exchange(
        &mut s,
        &out,
        21,
        31,
        T0 + 11 * MS,
        T0 + 12 * MS,
        &get("/user/1", ""),
    );
    s.message(&inb, T0 + 13 * MS, false, true, 21, OK);
    exchange(
        &mut s,
        &out,
        21,
        31,
        T0 + 14 * MS,
        T0 + 15 * MS,
        &get("/user/2", ""),
    );
    s.message(&inb, T0 + 16 * MS, false, true, 21, OK);
    s.message(
        &inb,
        T0 + 16 * MS + 10_000,
        true,
        false,
        10,
        &[OK, OK].concat(),
    );
    let a = run(&s.finish());
    let servers: Vec<_> = a
        .requests
        .spans()
        .filter(|s| s.kind == SpanKind::Server && s.service == FRONT)
        .map(|s| s.target.to_string())
        .collect();
    assert_eq!(
        servers,
        ["/order/1", "/order/2"],
        "the parser split the pipelined read"
    );
    let p = parents_of_calls(&a, FRONT);
    for k in 1..=2 {
        assert_eq!(
            p.get(&format!("/user/{k}")),
            Some(&(format!("/order/{k}"), Link::Thread)),
            "{p:?}"
        );
    }
}

/// A long capture holds a request row per request and a summary per trace (2.5 M and 1.2 M
/// in the 10 M-event benchmark): each of their bytes is megabytes of the analysis' peak (the
/// sizes docs/ARCHITECTURE.md gives, "What grows with the capture").
#[test]
fn request_rows_and_trace_summaries_stay_small() {
    assert!(std::mem::size_of::<crate::model::RequestRow>() <= 80);
    assert!(std::mem::size_of::<crate::model::Ends>() <= 40);
    assert!(std::mem::size_of::<crate::TraceSummary>() <= 40);
}

/// The rows of a keep-alive connection share one `Ends` (services, protocol, each end's node,
/// process and address), kept once: two connections of 30 requests each keep two, and every
/// span still reads its own connection's ends.
#[test]
fn rows_of_a_connection_share_their_ends() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    let conns = [
        s.connect(T0 + MS, 10, 20, 7000),
        s.connect(T0 + MS, 10, 20, 7000),
    ];
    for k in 0..30u64 {
        for (n, c) in conns.iter().enumerate() {
            let at = T0 + (10 + 10 * k) * MS + n as u64 * MS;
            exchange(
                &mut s,
                c,
                11,
                21,
                at,
                at + MS,
                &get(&format!("/item/{k}"), ""),
            );
        }
    }
    let a = run(&s.finish());
    let t = &a.requests;
    assert_eq!(t.len(), 60);
    assert_eq!(t.ends.len(), 2, "{:?}", t.ends);
    let mut client_addresses = std::collections::BTreeSet::new();
    for i in 0..t.len() {
        let (Some(c), Some(sv)) = (t.span(i, SpanKind::Client), t.span(i, SpanKind::Server)) else {
            panic!("row {i}: both ends were captured");
        };
        assert_eq!((c.service, c.peer, c.pid, c.tid), ("client", FRONT, 10, 11));
        assert_eq!(
            (sv.service, sv.peer, sv.pid, sv.tid),
            (FRONT, "client", 20, 21)
        );
        assert_eq!(c.client_address, sv.client_address);
        assert!(
            sv.server_address.ends_with(":7000"),
            "{}",
            sv.server_address
        );
        client_addresses.insert(c.client_address.to_string());
    }
    assert_eq!(client_addresses.len(), 2, "{client_addresses:?}");
}

/// "Where the time went" unions the overlapping calls of a long request, even when thousands
/// of other requests come between them (the summary lets go of a parent's covered time only
/// once the parent has ended).
#[test]
fn a_long_request_keeps_its_covered_time_across_many_rows() {
    let mut s = Synth::new(Vec::new());
    three_tier(&mut s);
    let inbound = s.connect(T0 + MS, 10, 20, 7000);
    let a = s.connect(T0 + MS, 20, 30, 8000);
    let b = s.connect(T0 + MS, 20, 30, 8000);
    let direct = s.connect(T0 + MS, 10, 30, 8000);
    // /slow on front thread 21 (500 ms .. 10 s); its calls A (1 s .. 9.5 s) and B (9 s ..
    // 9.2 s), both on thread 21: they overlap.
    let slow = get("/slow", "");
    exchange(
        &mut s,
        &inbound,
        11,
        21,
        T0 + 500 * MS,
        T0 + 10_000 * MS,
        &slow,
    );
    let call_a = get("/a", "");
    exchange(&mut s, &a, 21, 31, T0 + 1000 * MS, T0 + 9500 * MS, &call_a);
    // 5000 requests of the client straight to back between them.
    for k in 0..5000u64 {
        let at = T0 + 1100 * MS + k * MS;
        exchange(&mut s, &direct, 12, 32, at, at + MS / 2, &get("/x", ""));
    }
    exchange(
        &mut s,
        &b,
        21,
        33,
        T0 + 9000 * MS,
        T0 + 9200 * MS,
        &get("/b", ""),
    );
    let an = run(&s.finish());
    let p = parents_of_calls(&an, FRONT);
    assert_eq!(p.get("/a"), Some(&("/slow".to_string(), Link::Thread)));
    assert_eq!(p.get("/b"), Some(&("/slow".to_string(), Link::Thread)));
    let slow = an
        .time_breakdown
        .iter()
        .find(|t| t.service == FRONT && t.name.ends_with("/slow"))
        .expect("a breakdown of /slow");
    assert_eq!(slow.requests, 1);
    // Covered: 1 s .. 9.5 s + 10 µs (B lies inside A): 8500.01 ms of 9499.99 ms.
    let covered = slow.total_ms - slow.self_ms;
    assert!((covered - 8500.01).abs() < 0.001, "{slow:?}");
    let back: u64 = slow.downstream.iter().map(|d| d.calls).sum();
    assert_eq!(back, 2, "{slow:?}");
}
