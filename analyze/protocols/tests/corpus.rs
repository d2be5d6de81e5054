//! Parsers against bytes recorded from real servers and clients (`tests/data/record.sh`).
//! The expected values come from how `record.sh` drove each client.

mod util;

use retrace_protocols::{detect, dns, redact::redact_in_place, Exchange, Protocol, Role};
use util::{client_exchanges, load, messages, replay, server_exchanges, summary};

fn s(v: &str) -> String {
    v.to_string()
}

fn row(method: &str, route: &str, status: &str, error: bool) -> (String, String, String, bool) {
    (s(method), s(route), s(status), error)
}

/// Client and server side see the same exchanges (same timestamps here: one capture point).
fn both_sides(rel: &str) -> Vec<Exchange> {
    let c = client_exchanges(rel);
    let srv = server_exchanges(rel);
    assert_eq!(
        summary(&c),
        summary(&srv),
        "{rel}: client and server sides differ"
    );
    for x in &c {
        if let Some(l) = x.latency_ns() {
            assert!(
                l > 0 && l < 10_000_000_000,
                "{rel}: odd latency {l} in {x:?}"
            );
        }
    }
    c
}

/// Total bytes sent in one direction of one stream.
fn bytes(rel: &str, stream: u32, from_client: bool) -> u64 {
    load(rel)
        .iter()
        .filter(|p| p.stream == stream && p.from_client == from_client)
        .map(|p| p.size)
        .sum()
}

#[test]
fn detection_from_first_client_bytes() {
    let cases = [
        ("http/nginx_keepalive.rec", Protocol::Http1),
        ("http2/nginx_h2c.rec", Protocol::Http2),
        ("grpc/python_unary.rec", Protocol::Http2),
        ("redis/cli_session.rec", Protocol::Redis),
        ("redis/inline.rec", Protocol::Redis),
        ("postgres/psql_scram.rec", Protocol::Postgres),
        ("postgres/pgbench_extended.rec", Protocol::Postgres),
        ("memcached/text_session.rec", Protocol::Memcached),
        ("dns/dig_udp.rec", Protocol::Dns),
        ("dns/dig_tcp.rec", Protocol::Dns),
    ];
    for (rel, want) in cases {
        let first = load(rel)
            .into_iter()
            .find(|p| p.from_client)
            .expect("client packet");
        assert_eq!(detect(&first.bytes), want, "{rel}");
    }
    // MySQL: the server speaks first; the first command is recognized on its own too.
    let my = load("mysql/cli_session.rec");
    let cmd = my.iter().filter(|p| p.from_client).nth(1).expect("command");
    assert_eq!(detect(&cmd.bytes), Protocol::Mysql);
    assert_eq!(detect(b"\x00\x01\x02garbage\xff"), Protocol::Unknown);
    assert_eq!(detect(b""), Protocol::Unknown);
}

#[test]
fn http1_keepalive_nginx() {
    let rel = "http/nginx_keepalive.rec";
    let xs = both_sides(rel);
    assert_eq!(
        summary(&xs),
        vec![
            row("GET", "/users/{id}/orders/{id}", "200", false),
            row("GET", "/fail", "503", true)
        ]
    );
    assert_eq!(
        xs[0].target,
        "/users/42/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6"
    );
    for x in &xs {
        assert_eq!(x.protocol, Protocol::Http1);
        assert_eq!(
            x.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(x.request_id.as_deref(), Some("req-7f3a"));
        assert!(
            x.host
                .as_deref()
                .is_some_and(|h| h.starts_with("127.0.0.1:")),
            "{x:?}"
        );
        assert!(!x.truncated);
    }
    assert_eq!(
        xs.iter().map(|x| x.request_bytes).sum::<u64>(),
        bytes(rel, 0, true)
    );
    assert_eq!(
        xs.iter().map(|x| x.response_bytes).sum::<u64>(),
        bytes(rel, 0, false)
    );
}

#[test]
fn http1_post_big_pipelined_python() {
    let rel = "http/nginx_post.rec";
    let xs = both_sides(rel);
    assert_eq!(summary(&xs), vec![row("POST", "/users/", "200", false)]);
    assert_eq!(xs[0].request_bytes, bytes(rel, 0, true));

    let rel = "http/nginx_big.rec";
    let xs = both_sides(rel);
    assert_eq!(summary(&xs), vec![row("GET", "/big", "200", false)]);
    assert!(xs[0].response_bytes > 3000, "{:?}", xs[0]);
    assert_eq!(xs[0].response_bytes, bytes(rel, 0, false));

    let xs = both_sides("http/nginx_pipelined.rec");
    assert_eq!(
        summary(&xs),
        vec![
            row("GET", "/users/{id}", "200", false),
            row("GET", "/nope/{id}", "404", false),
            row("GET", "/users/{id}", "200", false),
        ]
    );
    // Three responses in one read: same first-byte time for all three.
    assert!(xs
        .iter()
        .all(|x| x.response_ts == xs[0].response_ts && x.request_ts == xs[0].request_ts));

    let xs = both_sides("http/python_get.rec");
    assert_eq!(
        summary(&xs),
        vec![
            row("GET", "/index.html", "200", false),
            row("GET", "/missing/{id}", "404", false)
        ]
    );
}

#[test]
fn http2_and_grpc() {
    let xs = both_sides("http2/nginx_h2c.rec");
    assert_eq!(
        summary(&xs),
        vec![
            row("GET", "/api/items/{id}", "200", false),
            row("GET", "/api/fail", "503", true)
        ]
    );
    assert!(xs.iter().all(|x| x.protocol == Protocol::Http2));
    assert_eq!(
        xs[0].trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );

    let xs = both_sides("grpc/python_unary.rec");
    assert_eq!(
        summary(&xs),
        vec![
            row("POST", "/demo.Greeter/SayHello", "OK", false),
            row("POST", "/demo.Greeter/Fail", "NOT_FOUND", true),
        ]
    );
    assert!(xs
        .iter()
        .all(|x| x.protocol == Protocol::Grpc && x.response_ts.is_some()));
}

#[test]
fn redis_cli_pipe_inline() {
    let xs = both_sides("redis/cli_session.rec");
    let ok = |m: &str| row(m, m, "OK", false);
    assert_eq!(
        summary(&xs),
        vec![
            ok("COMMAND"),
            ok("SET"),
            ok("GET"),
            row("LPUSH", "LPUSH", "WRONGTYPE", true),
            row("NOSUCHCMD", "NOSUCHCMD", "ERR", true),
            ok("INCR"),
            ok("GET"),
            ok("MGET"),
            ok("SET"),
            ok("GET"),
        ]
    );
    assert_eq!(xs[1].target, "user:1");
    // COMMAND DOCS: a 170 kB reply, of which 512 bytes were kept.
    assert!(xs[0].truncated && xs[0].response_bytes > 100_000);
    // SET big <700 bytes>: the request itself is cut by the prefix.
    assert!(xs[8].truncated && xs[8].request_bytes > 700);

    let xs = both_sides("redis/pipe.rec");
    assert_eq!(
        summary(&xs),
        vec![
            ok("PING"),
            ok("SET"),
            row("INCR", "INCR", "ERR", true),
            ok("ECHO")
        ]
    );
    let xs = both_sides("redis/inline.rec");
    assert_eq!(summary(&xs), vec![ok("PING"), ok("EXISTS"), ok("QUIT")]);
    assert_eq!(xs[1].target, "user:1");
}

#[test]
fn postgres_simple_queries_and_errors() {
    let xs = both_sides("postgres/psql_scram.rec");
    let q = |r: &str, st: &str| row("query", r, st, st != "OK");
    assert_eq!(
        summary(&xs),
        vec![
            q("SELECT ? AS one", "OK"),
            q("INSERT INTO items VALUES (?, ?)", "OK"),
            q("INSERT INTO items VALUES (?, ?)", "ERROR 23505"),
            q("SELECT * FROM missing_table", "ERROR 42P01"),
            q("SELEC ?", "ERROR 42601"),
            q("SELECT id, name FROM items WHERE id = ?", "OK"),
        ]
    );
    assert_eq!(xs[0].target, "SELECT 1 AS one;");
    let xs = both_sides("postgres/psql_cleartext.rec");
    assert_eq!(
        summary(&xs),
        vec![row("query", "SELECT count(*) FROM items", "OK", false)]
    );
}

#[test]
fn postgres_extended_protocol() {
    let route = "SELECT ?::int + ? AS next";
    let xs = both_sides("postgres/pgbench_extended.rec");
    assert_eq!(summary(&xs), vec![row("execute", route, "OK", false); 3]);
    assert!(xs.iter().all(|x| x.target == "SELECT $1::int + 1 AS next;"));

    // Named prepared statement: one Parse, then Bind/Execute/Sync naming it.
    let xs = both_sides("postgres/pgbench_prepared.rec");
    let executes: Vec<_> = xs.iter().filter(|x| x.method == "execute").collect();
    assert_eq!(executes.len(), 3);
    assert!(executes
        .iter()
        .all(|x| x.route == route && x.status == "OK"));

    let xs = both_sides("postgres/pgbench_error.rec");
    assert_eq!(
        summary(&xs),
        vec![row("execute", "SELECT ?/?", "ERROR 22012", true)]
    );
}

#[test]
fn mysql_text_and_binary_protocol() {
    let xs = both_sides("mysql/cli_session.rec");
    // The mariadb client stops at the first error.
    assert_eq!(
        summary(&xs),
        vec![
            row("COM_QUERY", "SELECT ?", "OK", false),
            row("COM_QUERY", "INSERT INTO items VALUES (?,?)", "OK", false),
            row(
                "COM_QUERY",
                "INSERT INTO items VALUES (?,?)",
                "ERROR 1062",
                true
            ),
        ]
    );
    let xs = both_sides("mysql/prepared.rec");
    let q = "SELECT id, name FROM items WHERE id = ?";
    assert_eq!(
        summary(&xs),
        vec![
            row("COM_STMT_PREPARE", q, "OK", false),
            row("COM_STMT_EXECUTE", q, "OK", false),
            row(
                "COM_STMT_PREPARE",
                "SELECT * FROM no_such_table WHERE id = ?",
                "ERROR 1146",
                true
            ),
        ]
    );
    assert_eq!(
        xs[1].target, q,
        "the execute names the prepared statement's text"
    );
}

#[test]
fn memcached_text() {
    let xs = both_sides("memcached/text_session.rec");
    assert_eq!(
        summary(&xs),
        vec![
            row("set", "set", "STORED", false),
            row("get", "get", "HIT", false),
            row("get", "get", "MISS", false),
            row("incr", "incr", "CLIENT_ERROR", true),
            row("bogus", "bogus", "ERROR", true),
            row("delete", "delete", "DELETED", false),
            row("get", "get", "MISS", false),
            row("get", "get", "MISS", false),
        ]
    );
    assert_eq!(xs[0].target, "user:1");
}

#[test]
fn dns_udp_and_tcp() {
    let packets = load("dns/dig_udp.rec");
    let parsed: Vec<_> = packets
        .iter()
        .map(|p| dns::parse(&p.bytes).expect("dns message"))
        .collect();
    let view: Vec<_> = parsed
        .iter()
        .map(|m| {
            (
                m.is_response,
                m.name.as_str(),
                m.qtype.as_str(),
                m.rcode.as_str(),
                m.answers.len(),
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (false, "api.example.test", "A", "NOERROR", 0),
            (true, "api.example.test", "A", "NOERROR", 1),
            (false, "nope.example.test", "A", "NOERROR", 0),
            (true, "nope.example.test", "A", "NXDOMAIN", 0),
            (false, "api.example.test", "AAAA", "NOERROR", 0),
            (true, "api.example.test", "AAAA", "NXDOMAIN", 0),
        ]
    );
    for pair in parsed.chunks(2) {
        assert_eq!(pair[0].id, pair[1].id);
    }
    let a = &parsed[1].answers[0];
    assert_eq!(
        (a.name.as_str(), a.rtype.as_str(), a.data.as_str()),
        ("api.example.test", "A", "10.1.2.3")
    );
    assert!(
        !parsed[3].is_server_error(),
        "NXDOMAIN is an answer, not a server error"
    );

    // The same through sessions (a UDP "connection" per query), and over TCP.
    let xs = both_sides("dns/dig_udp.rec");
    assert_eq!(
        summary(&xs),
        vec![
            row("A", "api.example.test", "NOERROR", false),
            row("A", "nope.example.test", "NXDOMAIN", false),
            row("AAAA", "api.example.test", "NXDOMAIN", false),
        ]
    );
    let xs = both_sides("dns/dig_tcp.rec");
    assert_eq!(
        summary(&xs),
        vec![row("A", "api.example.test", "NOERROR", false)]
    );
}

/// Every corpus, every prefix length, merged or packet by packet: never a panic, and the
/// request/response protocols keep their exchange count from 128-byte prefixes up.
#[test]
fn prefixes_and_packet_feeding_never_break() {
    let corpora = [
        "http/nginx_keepalive.rec",
        "http/nginx_pipelined.rec",
        "http/nginx_post.rec",
        "redis/cli_session.rec",
        "postgres/psql_scram.rec",
        "postgres/pgbench_extended.rec",
        "mysql/prepared.rec",
        "memcached/text_session.rec",
        "grpc/python_unary.rec",
        "http2/nginx_h2c.rec",
        "dns/dig_tcp.rec",
    ];
    for rel in corpora {
        let packets = load(rel);
        let full = replay(&messages(&packets, 4096), Role::Client).len();
        for prefix in [0usize, 1, 5, 16, 64, 128, 256, 512] {
            let n = replay(&messages(&packets, prefix), Role::Client).len();
            if prefix >= 128 && !rel.starts_with("grpc") && !rel.starts_with("http2") {
                assert_eq!(n, full, "{rel} with {prefix}-byte prefixes");
            }
        }
        // Packet by packet (a capture that emits every write), both roles: the same
        // exchanges as one message per change of direction.
        let per_packet: Vec<_> = replay(&packets, Role::Client)
            .into_iter()
            .map(|(_, x)| (x.method, x.route, x.status))
            .collect();
        let merged: Vec<_> = replay(&messages(&packets, 4096), Role::Client)
            .into_iter()
            .map(|(_, x)| (x.method, x.route, x.status))
            .collect();
        assert_eq!(per_packet, merged, "{rel}: per-packet feeding differs");
        let _ = replay(&packets, Role::Server);
    }
}

/// Redaction on the recorded bytes: the secrets the clients sent are gone, everything else in
/// the corpora is untouched, and the parsers give the same answers on redacted bytes.
#[test]
fn redaction_on_recorded_traffic() {
    let secrets: [(&str, &[&[u8]]); 3] = [
        (
            "http/nginx_keepalive.rec",
            &[b"s3cr3t-t0ken", b"c00kie-secret"],
        ),
        ("postgres/psql_cleartext.rec", &[b"clear-text-pw"]),
        ("postgres/psql_scram.rec", &[b"n,,n=,r=", b"c=biws,r="]),
    ];
    for (rel, words) in secrets {
        let mut packets = load(rel);
        let before: Vec<u8> = packets.iter().flat_map(|p| p.bytes.clone()).collect();
        for w in words {
            assert!(
                before.windows(w.len()).any(|x| x == *w),
                "{rel}: secret not in the corpus"
            );
        }
        let mut count = 0;
        for p in &mut packets {
            if p.from_client {
                count += redact_in_place(&mut p.bytes);
            }
        }
        let after: Vec<u8> = packets.iter().flat_map(|p| p.bytes.clone()).collect();
        assert_eq!(before.len(), after.len());
        for w in words {
            assert!(
                !after.windows(w.len()).any(|x| x == *w),
                "{rel}: secret left after redaction"
            );
        }
        assert!(count >= words.len().min(2), "{rel}: {count} redactions");
        // Same exchanges from redacted bytes.
        let a = replay(&messages(&load(rel), 512), Role::Client);
        let b = replay(&messages(&packets, 512), Role::Client);
        let strip = |v: Vec<(u32, Exchange)>| {
            v.into_iter()
                .map(|(_, x)| (x.method, x.route, x.status))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(a), strip(b), "{rel}");
    }
    // Corpora without secrets: not one byte changes, in either direction.
    for rel in [
        "http/nginx_pipelined.rec",
        "http/nginx_post.rec",
        "http/python_get.rec",
        "redis/cli_session.rec",
        "redis/pipe.rec",
        "mysql/cli_session.rec",
        "mysql/prepared.rec",
        "memcached/text_session.rec",
        "postgres/pgbench_extended.rec",
        "dns/dig_udp.rec",
        "http2/nginx_h2c.rec",
    ] {
        for p in load(rel) {
            let mut b = p.bytes.clone();
            let n = redact_in_place(&mut b);
            let pg_auth = rel.starts_with("postgres") && p.bytes.first() == Some(&b'p');
            if !pg_auth {
                assert_eq!(
                    (n, &b),
                    (0, &p.bytes),
                    "{rel}: redaction touched plain bytes"
                );
            }
        }
    }
}

/// Header fields of every client HEADERS frame (one HPACK decoder for the connection).
fn h2_client_headers(packets: &[util::Packet]) -> Vec<(String, String)> {
    let mut dec = loona_hpack::Decoder::new();
    let mut out = Vec::new();
    for p in packets.iter().filter(|p| p.from_client) {
        let b = &p.bytes;
        let mut pos = if b.starts_with(b"PRI * HTTP/2.0") {
            24
        } else {
            0
        };
        while pos + 9 <= b.len() {
            let len = (usize::from(b[pos]) << 16)
                | (usize::from(b[pos + 1]) << 8)
                | usize::from(b[pos + 2]);
            let (t, flags) = (b[pos + 3], b[pos + 4]);
            let body = &b[pos + 9..pos + 9 + len];
            if t == 1 {
                let mut s = 0;
                let mut e = body.len();
                if flags & 0x8 != 0 {
                    s += 1;
                    e -= usize::from(body[0]);
                }
                if flags & 0x20 != 0 {
                    s += 5;
                }
                dec.decode_with_cb(&body[s..e], |n, v| {
                    out.push((
                        String::from_utf8_lossy(&n).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    ))
                })
                .expect("hpack");
            }
            pos += 9 + len;
        }
    }
    out
}

/// gRPC metadata `authorization` (an HPACK literal, as grpcio sends it) is masked in place and
/// the connection still decodes: the other headers and the exchanges are unchanged.
#[test]
fn redaction_of_http2_headers_on_recorded_grpc() {
    let rel = "grpc/python_unary.rec";
    let packets = load(rel);
    let before = h2_client_headers(&packets);
    assert!(
        before.contains(&(s("authorization"), s("Bearer grpc-s3cret-t0ken"))),
        "{before:?}"
    );

    let mut red = packets.clone();
    let mut count = 0;
    for p in &mut red {
        count += redact_in_place(&mut p.bytes);
        assert_eq!(
            p.bytes.len(),
            packets
                .iter()
                .find(|q| q.ts_ns == p.ts_ns)
                .map_or(0, |q| q.bytes.len())
        );
    }
    assert_eq!(count, 1);
    let after = h2_client_headers(&red);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0);
        if b.0 == "authorization" {
            assert!(!a.1.is_empty() && a.1.bytes().all(|c| c == b'*'), "{a:?}");
        } else {
            assert_eq!(b.1, a.1, "{} changed", b.0);
        }
    }
    let x1 = replay(&messages(&packets, 512), Role::Client);
    let x2 = replay(&messages(&red, 512), Role::Client);
    assert_eq!(x1, x2);
    assert_eq!(x1[0].1.request_id.as_deref(), Some("grpc-req-1"));
}
