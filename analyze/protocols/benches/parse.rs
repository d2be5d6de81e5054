//! Microbenchmark of the parsers on recorded messages (`tests/data`): messages per second
//! through a `Session` (detection done, parsing, pairing, `Exchange` built), next to a peer
//! measured in the same run on the same bytes (bare httparse for HTTP, a bare CRLF scan for
//! Redis) and the redaction pass of the capture daemon.
//!
//! Run: `cargo bench -p retrace-protocols --bench parse` (`BENCH_N` sets the iterations).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use retrace_protocols::{redact::redact_in_place, Role, Session};

fn load(rel: &str) -> Vec<(bool, u64, Vec<u8>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let hex = f[4];
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect();
            let mut b = bytes;
            b.truncate(512);
            (f[2] == "c", f[3].parse().unwrap_or(0), b)
        })
        .collect()
}

/// Messages per second through one session fed the request/response pairs in a loop.
fn session_rate(msgs: &[(bool, u64, Vec<u8>)], n: usize) -> (f64, u64) {
    let mut s = Session::new(Role::Client);
    let mut exchanges = 0u64;
    let start = Instant::now();
    for i in 0..n {
        for (j, (egress, size, bytes)) in msgs.iter().enumerate() {
            let ts = (i * msgs.len() + j) as u64 * 1000;
            exchanges += s.push(ts, *egress, *size, black_box(bytes)).len() as u64;
        }
    }
    exchanges += s.finish().len() as u64;
    let secs = start.elapsed().as_secs_f64();
    ((n * msgs.len()) as f64 / secs, exchanges)
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);

    // HTTP/1: a GET and its response from nginx (the keep-alive corpus, first exchange).
    let http = load("http/nginx_keepalive.rec");
    let http_pair = &http[..2];
    let (rate, ex) = session_rate(http_pair, n);
    let start = Instant::now();
    for _ in 0..n {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut h);
        black_box(req.parse(black_box(&http_pair[0].2)).is_ok());
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut h);
        black_box(resp.parse(black_box(&http_pair[1].2)).is_ok());
    }
    let peer = (2 * n) as f64 / start.elapsed().as_secs_f64();
    println!(
        "http1   session: {:>12.0} messages/s ({ex} exchanges)  bare httparse: {:>12.0} messages/s  ratio {:.2}",
        rate,
        peer,
        rate / peer
    );

    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "http") {
        return;
    }

    // Redis: the SET/GET/LPUSH... exchanges of the redis-cli session (COMMAND DOCS skipped).
    let redis = load("redis/cli_session.rec");
    let redis_msgs: Vec<_> = redis
        .into_iter()
        .skip_while(|m| !(m.0 && m.2.windows(3).any(|w| w == b"SET")))
        .collect();
    let (rate, ex) = session_rate(&redis_msgs, n / 4);
    let start = Instant::now();
    for _ in 0..n / 4 {
        for m in &redis_msgs {
            black_box(memchr::memmem::find_iter(black_box(&m.2), b"\r\n").count());
        }
    }
    let peer = ((n / 4) * redis_msgs.len()) as f64 / start.elapsed().as_secs_f64();
    println!(
        "redis   session: {:>12.0} messages/s ({ex} exchanges)  bare CRLF scan: {:>11.0} messages/s  ratio {:.2}",
        rate,
        peer,
        rate / peer
    );

    // PostgreSQL simple queries (psql session after authentication).
    let pg = load("postgres/psql_scram.rec");
    let pg_msgs: Vec<_> = pg
        .into_iter()
        .filter(|m| !m.2.is_empty())
        .skip_while(|m| !(m.0 && m.2.first() == Some(&b'Q')))
        .collect();
    let (rate, ex) = session_rate(&pg_msgs, n / 4);
    println!("postgres session: {rate:>11.0} messages/s ({ex} exchanges)");

    // Redaction as run by the capture daemon on every payload prefix.
    let mut bytes = 0u64;
    let mut buf = Vec::with_capacity(512);
    let start = Instant::now();
    for _ in 0..n {
        for m in http_pair {
            buf.clear();
            buf.extend_from_slice(&m.2);
            black_box(redact_in_place(black_box(&mut buf)));
            bytes += m.2.len() as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "redact  {:>12.0} payloads/s, {:.0} MB/s (HTTP headers with secrets, copy included)",
        (2 * n) as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    // The common case: nothing to redact (a wrk request, nginx's response headers and body).
    let plain: [&[u8]; 2] = [
        b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 12:00:00 GMT\r\n\
          Content-Type: text/html\r\nContent-Length: 612\r\nLast-Modified: Tue, 24 Nov 2026 \
          11:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6743-264\"\r\nAccept-Ranges: \
          bytes\r\n\r\n<html><body>xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</body></html>\n",
    ];
    let mut bytes = 0u64;
    let start = Instant::now();
    for _ in 0..n {
        for m in plain {
            buf.clear();
            buf.extend_from_slice(m);
            black_box(redact_in_place(black_box(&mut buf)));
            bytes += m.len() as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "redact  {:>12.0} payloads/s, {:.0} MB/s (HTTP without secrets, copy included)",
        (2 * n) as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}
