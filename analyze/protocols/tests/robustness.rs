//! Fuzz-like property tests: no bytes make detection, parsing or pairing panic, and the
//! bookkeeping stays sane (timestamps ordered, memory bounded).

mod util;

use proptest::prelude::*;
use retrace_protocols::{detect, dns, Role, Session, MAX_PENDING};

/// Real first messages of each protocol, to mutate (random bytes alone rarely get past
/// detection).
fn seeds() -> Vec<Vec<util::Packet>> {
    [
        "http/nginx_keepalive.rec",
        "http2/nginx_h2c.rec",
        "grpc/python_unary.rec",
        "redis/cli_session.rec",
        "postgres/psql_scram.rec",
        "postgres/pgbench_prepared.rec",
        "mysql/prepared.rec",
        "memcached/text_session.rec",
        "dns/dig_tcp.rec",
    ]
    .iter()
    .map(|rel| util::messages(&util::load(rel), 512))
    .collect()
}

fn check_session(role: Role, msgs: &[(bool, u64, Vec<u8>)]) {
    let mut s = Session::new(role);
    let mut all = Vec::new();
    for (i, (egress, size, bytes)) in msgs.iter().enumerate() {
        all.extend(s.push(i as u64 * 1000, *egress, *size, bytes));
    }
    let stats = s.stats().clone();
    all.extend(s.finish());
    assert!(stats.pushes == msgs.len() as u64);
    for x in &all {
        if let Some(r) = x.response_ts {
            assert!(r >= x.request_ts, "{x:?}");
        }
        assert!(x.target.len() <= 256 && x.route.len() <= 256);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(msgs in proptest::collection::vec(
        (any::<bool>(), 0u64..100_000, proptest::collection::vec(any::<u8>(), 0..600)), 0..12)
    ) {
        for (_, _, b) in &msgs {
            let _ = detect(b);
            let _ = dns::parse(b);
        }
        check_session(Role::Client, &msgs);
        check_session(Role::Server, &msgs);
    }

    #[test]
    fn mutated_real_traffic(
        which in 0usize..9,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::collection::vec(0usize..600, 1..4),
        role_server in any::<bool>(),
    ) {
        let all = seeds();
        let msgs = &all[which];
        let mut fed: Vec<(bool, u64, Vec<u8>)> = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let mut b = m.bytes.clone();
            for (j, (pos, val)) in flips.iter().enumerate() {
                if !b.is_empty() && (i + j) % 3 == 0 {
                    let p = pos % b.len();
                    b[p] = *val;
                }
            }
            let c = cut[i % cut.len()];
            b.truncate(c);
            fed.push((m.from_client != role_server, m.size, b));
        }
        check_session(if role_server { Role::Server } else { Role::Client }, &fed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// HPACK decoding of arbitrary header blocks in well-formed HEADERS frames.
    #[test]
    fn random_hpack_blocks(
        blocks in proptest::collection::vec((any::<bool>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)), 1..6),
    ) {
        let mut fed = vec![(true, 24u64, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec())];
        for (i, (egress, flags, block)) in blocks.into_iter().enumerate() {
            let mut f = Vec::new();
            f.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
            f.push(if i % 2 == 0 { 1 } else { 9 }); // HEADERS, CONTINUATION
            f.push(flags);
            f.extend_from_slice(&(1 + 2 * i as u32).to_be_bytes());
            f.extend_from_slice(&block);
            fed.push((egress, f.len() as u64, f));
        }
        check_session(Role::Client, &fed);
    }

    /// Each protocol's parsers on arbitrary bytes: a real first message fixes the protocol,
    /// then anything follows, in both directions.
    #[test]
    fn random_bytes_after_detection(
        which in 0usize..9,
        msgs in proptest::collection::vec(
            (any::<bool>(), 0u64..100_000, proptest::collection::vec(any::<u8>(), 0..300)), 1..10),
        role_server in any::<bool>(),
    ) {
        let all = seeds();
        let first = &all[which][0];
        let mut fed = vec![(first.from_client != role_server, first.size, first.bytes.clone())];
        fed.extend(msgs);
        check_session(if role_server { Role::Server } else { Role::Client }, &fed);
    }
}

/// A client that never gets answers: the queue stays bounded and the oldest requests come
/// back without a response.
#[test]
fn pending_queue_is_bounded() {
    let mut s = Session::new(Role::Client);
    let mut out = Vec::new();
    for i in 0..(MAX_PENDING as u64 + 100) {
        out.extend(s.push(i, true, 16, b"GET /x HTTP/1.1\r\n\r\n"));
    }
    assert_eq!(out.len(), 100);
    assert!(out.iter().all(|x| x.response_ts.is_none()));
    assert_eq!(s.stats().evicted, 100);
    assert_eq!(s.finish().len(), MAX_PENDING);
}

/// Unknown bytes are counted, not parsed; a session stops trying after a few messages.
#[test]
fn garbage_is_counted() {
    let mut s = Session::new(Role::Client);
    for i in 0..20 {
        assert!(s
            .push(i, i % 2 == 0, 8, &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3])
            .is_empty());
    }
    assert_eq!(s.protocol(), retrace_protocols::Protocol::Unknown);
    assert_eq!(s.stats().unparsed, 20);
    assert!(s.finish().is_empty());
}

/// Without payloads (or with prefixes that cannot be parsed), changes of direction still give
/// one exchange per request/response turn, with its timing.
#[test]
fn direction_changes_without_payload() {
    let mut s = Session::new(Role::Client);
    let mut out = Vec::new();
    out.extend(s.push(0, true, 20, b"GET / HTTP/1.1\r\n\r\n"));
    out.extend(s.push(
        10,
        false,
        40,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ));
    for i in 1..4u64 {
        out.extend(s.push(100 * i, true, 300, b""));
        out.extend(s.push(100 * i + 7, false, 900, b""));
    }
    out.extend(s.finish());
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].status, "200");
    for (i, x) in out.iter().enumerate().skip(1) {
        assert_eq!(x.request_ts, 100 * i as u64);
        assert_eq!(x.latency_ns(), Some(7));
        assert_eq!((x.request_bytes, x.response_bytes), (300, 900));
    }
}

/// `Expect: 100-continue`: the body sent after the interim response belongs to the request.
#[test]
fn http_100_continue() {
    let mut s = Session::new(Role::Client);
    let mut out = Vec::new();
    out.extend(s.push(
        0,
        true,
        80,
        b"POST /up HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    ));
    out.extend(s.push(5, false, 25, b"HTTP/1.1 100 Continue\r\n\r\n"));
    out.extend(s.push(9, true, 5, b"hello"));
    out.extend(s.push(
        20,
        false,
        38,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    ));
    out.extend(s.finish());
    assert_eq!(out.len(), 1);
    assert_eq!(
        (
            out[0].status.as_str(),
            out[0].request_bytes,
            out[0].response_ts
        ),
        ("201", 85, Some(5))
    );
}
