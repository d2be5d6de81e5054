//! The built-in load generator: keep-alive HTTP/1.1 over std `TcpStream`s, one thread per
//! connection, open loop at a fixed rate (or closed loop), a deterministic request mix.
//!
//! It runs as its own process (`retrace scenario loadgen`, started through a symlink named
//! `client` so the capture shows a `client` process) and writes a JSON report: the ground
//! truth of what was sent and answered.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::spec::{parse_url, TrafficSpec};

/// Largest response head or body accepted.
const MAX_RESPONSE: usize = 16 << 20;

/// A small deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; never all-zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Picks an index by weight.
pub fn pick(weights: &[u32], rng: &mut Rng) -> usize {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut x = rng.below(total);
    for (i, &w) in weights.iter().enumerate() {
        if x < u64::from(w) {
            return i;
        }
        x -= u64::from(w);
    }
    weights.len().saturating_sub(1)
}

/// One parsed HTTP response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// The server wants the connection closed.
    pub close: bool,
}

/// `{id}` and `{seq}` of a URL path, header value or body filled in: the request's random id
/// and its sequence number (1, 2, ... over all connections, in the order the requests are
/// made: unique in a run, for ground truth carried through the services, e.g. a header).
pub fn fill_in(template: &str, id: u64, seq: u64) -> String {
    template
        .replace("{id}", &id.to_string())
        .replace("{seq}", &seq.to_string())
}

/// Serializes a request.
pub fn request_bytes(
    method: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
) -> Vec<u8> {
    let mut s = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: retrace-scenario\r\nAccept: */*\r\n"
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

fn read_more(stream: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn eof() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "connection closed mid-response",
    )
}

fn too_big() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "response too large")
}

/// Reads one response; `buf` keeps bytes already read beyond it (pipelining-safe).
pub fn read_response(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> std::io::Result<Response> {
    let (status, head_len, content_length, chunked, close) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut cl = None;
                let mut chunked = false;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    let v = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("content-length") {
                        cl = v.trim().parse::<usize>().ok();
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = v.to_ascii_lowercase().contains("chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let v = v.to_ascii_lowercase();
                        if v.contains("close") {
                            close = true;
                        } else if v.contains("keep-alive") {
                            close = false;
                        }
                    }
                }
                break (status, n, cl, chunked, close);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_RESPONSE {
                    return Err(too_big());
                }
                if read_more(stream, buf)? == 0 {
                    return Err(eof());
                }
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad response: {e}"),
                ))
            }
        }
    };
    buf.drain(..head_len);
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if buf.len() > MAX_RESPONSE {
                    return Err(too_big());
                }
                if read_more(stream, buf)? == 0 {
                    return Err(eof());
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
                return Err(too_big());
            }
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        let empty = i == 0;
                        buf.drain(..i + 2);
                        if empty {
                            break;
                        }
                        continue;
                    }
                    if read_more(stream, buf)? == 0 {
                        return Err(eof());
                    }
                }
                break;
            }
            while buf.len() < size + 2 {
                if read_more(stream, buf)? == 0 {
                    return Err(eof());
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
        body
    } else if let Some(n) = content_length {
        if n > MAX_RESPONSE {
            return Err(too_big());
        }
        while buf.len() < n {
            if read_more(stream, buf)? == 0 {
                return Err(eof());
            }
        }
        buf.drain(..n).collect()
    } else {
        // Body until the connection closes.
        loop {
            if buf.len() > MAX_RESPONSE {
                return Err(too_big());
            }
            if read_more(stream, buf)? == 0 {
                break;
            }
        }
        let b = std::mem::take(buf);
        return Ok(Response {
            status,
            body: b,
            close: true,
        });
    };
    Ok(Response {
        status,
        body,
        close,
    })
}

/// Sends one request on a fresh connection (fault actions, readiness checks).
pub fn http_once(
    method: &str,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let (host, port, path) = parse_url(url).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let addr = resolve(&host, port)?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {url}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let headers = BTreeMap::from([("Connection".to_string(), "close".to_string())]);
    s.write_all(&request_bytes(method, &host, port, &path, &headers, body))?;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, method == "HEAD")
        .with_context(|| format!("reading the response of {url}"))
}

fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host}: no address"))
}

/// Latency summary.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Exact percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Second {
    /// Requests answered 1xx-4xx.
    pub ok: u64,
    /// 5xx answers, connection and I/O failures.
    pub errors: u64,
}

/// What the load generator did.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LoadReport {
    /// Seconds the traffic lasted.
    pub duration_s: f64,
    /// Requests attempted.
    pub requests: u64,
    /// Responses received.
    pub responses: u64,
    /// Responses by status code.
    pub by_status: BTreeMap<String, u64>,
    /// Responses 5xx plus failures.
    pub errors: u64,
    /// Connections refused, reset, timed out while connecting.
    pub connect_errors: u64,
    /// Failures after connecting (reset, timeout, bad response).
    pub io_errors: u64,
    /// Connections opened.
    pub connections: u64,
    /// Latency of answered requests.
    pub latency: Latency,
    /// Per second: ok and errors.
    pub timeline: Vec<Second>,
    /// Requests per URL template.
    pub by_request: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Shared {
    report: LoadReport,
    latencies: Vec<f64>,
}

/// Runs the traffic until its duration ends or `stop` is raised.
pub fn run_traffic(t: &TrafficSpec, stop: &AtomicBool) -> anyhow::Result<LoadReport> {
    let targets: Vec<(String, u16, String, SocketAddr)> = t
        .requests
        .iter()
        .map(|r| {
            let (h, p, path) = parse_url(&r.url).map_err(|e| anyhow::anyhow!("{}: {e}", r.url))?;
            let addr = resolve(&h, p)?;
            Ok((h, p, path, addr))
        })
        .collect::<anyhow::Result<_>>()?;
    let weights: Vec<u32> = t.requests.iter().map(|r| r.weight).collect();
    let next_seq = AtomicU64::new(1);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let start = Instant::now();
    let duration = t.duration.0;
    let secs = duration.as_secs() as usize + 1;
    if let Ok(mut s) = shared.lock() {
        s.report.timeline = vec![Second::default(); secs];
    }
    let timeout = t.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5));
    let workers = t.concurrency as usize;
    // Open loop: worker w sends at start + (w + k * workers) / rate.
    let interval = t.rate.map(|r| Duration::from_secs_f64(workers as f64 / r));
    std::thread::scope(|scope| {
        for w in 0..workers {
            let shared = Arc::clone(&shared);
            let targets = &targets;
            let weights = &weights;
            let next_seq = &next_seq;
            scope.spawn(move || {
                let mut rng = Rng::new(t.seed.wrapping_add(w as u64 * 7919));
                let mut conn: Option<(usize, TcpStream, Vec<u8>)> = None;
                let offset = interval.map(|i| i.mul_f64(w as f64 / workers as f64));
                let mut k: u32 = 0;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let (Some(iv), Some(off)) = (interval, offset) {
                        let due = off + iv * k;
                        k += 1;
                        // A worker that fell behind (slow answers) does not catch up after
                        // the end: the traffic lasts `duration`, not `rate * duration` requests.
                        if due >= duration || start.elapsed() >= duration {
                            break;
                        }
                        let el = start.elapsed();
                        if due > el {
                            std::thread::sleep(due - el);
                        }
                    } else if start.elapsed() >= duration {
                        break;
                    }
                    let i = pick(weights, &mut rng);
                    let spec = &t.requests[i];
                    let (host, port, path_t, addr) = &targets[i];
                    let id = 1 + rng.below(t.ids);
                    let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                    let fill = |s: &str| fill_in(s, id, seq);
                    let path = fill(path_t);
                    let body = spec.body.as_deref().map(fill);
                    let sent_at = Instant::now();
                    let sec = (start.elapsed().as_secs() as usize).min(secs - 1);
                    // Reuse the connection when it goes to the same server.
                    if conn
                        .as_ref()
                        .is_some_and(|(ti, _, _)| targets[*ti].3 != *addr)
                    {
                        conn = None;
                    }
                    let mut opened = false;
                    if conn.is_none() {
                        match TcpStream::connect_timeout(addr, timeout) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                let _ = s.set_read_timeout(Some(timeout));
                                let _ = s.set_write_timeout(Some(timeout));
                                conn = Some((i, s, Vec::new()));
                                opened = true;
                            }
                            Err(_) => {
                                if let Ok(mut s) = shared.lock() {
                                    s.report.requests += 1;
                                    s.report.connect_errors += 1;
                                    s.report.errors += 1;
                                    s.report.timeline[sec].errors += 1;
                                    *s.report.by_request.entry(spec.url.clone()).or_insert(0) += 1;
                                }
                                if interval.is_none() {
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                                continue;
                            }
                        }
                    }
                    let Some((_, stream, buf)) = conn.as_mut() else {
                        continue;
                    };
                    let headers: BTreeMap<String, String> = spec
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), fill(v)))
                        .collect();
                    let bytes =
                        request_bytes(&spec.method, host, *port, &path, &headers, body.as_deref());
                    let result = stream
                        .write_all(&bytes)
                        .and_then(|_| read_response(stream, buf, spec.method == "HEAD"));
                    let latency_ms = sent_at.elapsed().as_secs_f64() * 1000.0;
                    let mut close = false;
                    if let Ok(mut s) = shared.lock() {
                        s.report.requests += 1;
                        if opened {
                            s.report.connections += 1;
                        }
                        *s.report.by_request.entry(spec.url.clone()).or_insert(0) += 1;
                        match &result {
                            Ok(r) => {
                                s.report.responses += 1;
                                *s.report.by_status.entry(r.status.to_string()).or_insert(0) += 1;
                                s.latencies.push(latency_ms);
                                if r.status >= 500 || r.status == 0 {
                                    s.report.errors += 1;
                                    s.report.timeline[sec].errors += 1;
                                } else {
                                    s.report.timeline[sec].ok += 1;
                                }
                                close = r.close;
                            }
                            Err(_) => {
                                s.report.io_errors += 1;
                                s.report.errors += 1;
                                s.report.timeline[sec].errors += 1;
                                close = true;
                            }
                        }
                    }
                    if close {
                        conn = None;
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let mut s = match Arc::try_unwrap(shared) {
        Ok(m) => m
            .into_inner()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?,
        Err(_) => anyhow::bail!("load threads still hold the report"),
    };
    s.latencies.sort_by(f64::total_cmp);
    let l = &s.latencies;
    s.report.latency = Latency {
        p50_ms: percentile(l, 0.50),
        p90_ms: percentile(l, 0.90),
        p99_ms: percentile(l, 0.99),
        max_ms: l.last().copied().unwrap_or(0.0),
    };
    s.report.duration_s = elapsed.as_secs_f64();
    Ok(s.report)
}

/// `retrace scenario loadgen`: reads the traffic (JSON), runs it, writes the report (JSON).
pub fn main(spec: &Path, report: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(spec).with_context(|| format!("reading {}", spec.display()))?;
    let t: TrafficSpec =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", spec.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    let r = run_traffic(&t, &stop)?;
    let json = serde_json::to_string_pretty(&r)?;
    std::fs::write(report, json).with_context(|| format!("writing {}", report.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::scenario::spec::RequestSpec;
    use std::net::TcpListener;

    #[test]
    fn parses_length_chunked_and_close_bodies() {
        let mut data: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nHTTP/1.0 404 Not Found\r\n\r\ngone";
        let mut buf = Vec::new();
        let r = read_response(&mut data, &mut buf, false).expect("first");
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"hello"[..], false)
        );
        let r = read_response(&mut data, &mut buf, false).expect("second");
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (502, &b"abcde"[..], false)
        );
        let r = read_response(&mut data, &mut buf, false).expect("third");
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (404, &b"gone"[..], true)
        );
        let mut short: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nab";
        assert!(read_response(&mut short, &mut Vec::new(), false).is_err());
        let mut junk: &[u8] = b"\x00\x01garbage\r\n\r\n";
        assert!(read_response(&mut junk, &mut Vec::new(), false).is_err());
    }

    #[test]
    fn fills_in_id_and_seq() {
        assert_eq!(fill_in("/x/{id}?s={seq}", 7, 42), "/x/7?s=42");
        assert_eq!(fill_in("req-{seq}-{seq}", 1, 3), "req-3-3");
        let headers = BTreeMap::from([("X-Seq".to_string(), fill_in("{seq}", 1, 9))]);
        let bytes = request_bytes("GET", "h", 80, "/", &headers, None);
        assert!(String::from_utf8_lossy(&bytes).contains("\r\nX-Seq: 9\r\n"));
    }

    #[test]
    fn weights_and_percentiles() {
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[pick(&[1, 0, 3], &mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((2200..2800).contains(&counts[0]), "{counts:?}");
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
    }

    #[test]
    fn drives_a_real_server_at_a_rate() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = Vec::new();
                    let mut n = 0u32;
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(k) = s.read(&mut chunk) else { return };
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_string();
                            buf.drain(..i + 4);
                            n += 1;
                            let code = if head.contains("/fail") { 500 } else { 200 };
                            let _ = s.write_all(
                                format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok")
                                    .as_bytes(),
                            );
                            let _ = n;
                        }
                    }
                });
            }
        });
        let t = TrafficSpec {
            duration: super::super::spec::Dur(Duration::from_millis(1000)),
            rate: Some(100.0),
            concurrency: 2,
            ids: 10,
            timeout: None,
            requests: vec![
                RequestSpec {
                    method: "GET".into(),
                    url: format!("http://127.0.0.1:{port}/ok/{{id}}"),
                    weight: 3,
                    headers: BTreeMap::new(),
                    body: None,
                },
                RequestSpec {
                    method: "GET".into(),
                    url: format!("http://127.0.0.1:{port}/fail"),
                    weight: 1,
                    headers: BTreeMap::new(),
                    body: None,
                },
            ],
            seed: 1,
        };
        let r = run_traffic(&t, &AtomicBool::new(false)).expect("runs");
        assert_eq!(r.requests, 100, "{r:?}");
        assert_eq!(r.responses, 100);
        assert_eq!(r.connections, 2, "keep-alive");
        assert_eq!(r.errors, r.by_status.get("500").copied().unwrap_or(0));
        assert!(r.errors > 10 && r.errors < 45, "{r:?}");
        assert_eq!(r.timeline.iter().map(|s| s.ok + s.errors).sum::<u64>(), 100);
    }
}
