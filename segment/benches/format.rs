//! Segment format benchmark: write and read a realistic mix of events, print the figures.
//!
//! Mix: TCP connection lifecycles (repeating client/server pids, a few service addresses,
//! ephemeral client ports) and L7 messages with ~200-byte HTTP payload prefixes. Reading is
//! compared with plain zstd decompression of the same compressed blocks, measured in the same
//! run: that is the physical limit for reading.
//!
//! Times are CPU time of the benchmark thread (per core), so that a busy machine does not
//! distort them.
//!
//! Run: `cargo bench -p retrace-segment` (options: `--events N`, `--only conn`).

use std::hint::black_box;
use std::net::Ipv4Addr;

use retrace_segment::format::FRAME_HEADER_LEN;
use retrace_segment::*;

/// A small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mix {
    /// Connection events and L7 messages, as a busy HTTP service produces them.
    Realistic,
    /// Connection lifecycle events only.
    ConnectionsOnly,
    /// L7 messages only.
    L7Only,
}

const PATHS: [&str; 6] = [
    "/api/v1/users/{}",
    "/api/v1/orders/{}/items",
    "/health",
    "/api/v1/cart/{}",
    "/static/app.{}.js",
    "/api/v1/search?q=item{}",
];

fn request(rng: &mut Rng, host: &str) -> Vec<u8> {
    let path =
        PATHS[rng.below(PATHS.len() as u64) as usize].replace("{}", &rng.below(5000).to_string());
    let id = rng.next();
    let s = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: python-requests/2.31.0\r\n\
         Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\
         X-Request-ID: {:016x}{:016x}\r\n\r\n",
        id,
        id.rotate_left(17)
    );
    s.into_bytes().into_iter().take(200).collect()
}

fn response(rng: &mut Rng) -> Vec<u8> {
    let (code, text) = match rng.below(20) {
        0 => (500, "Internal Server Error"),
        1 => (404, "Not Found"),
        _ => (200, "OK"),
    };
    let len = 20 + rng.below(4000);
    let s = format!(
        "HTTP/1.1 {code} {text}\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 06:{:02}:{:02} GMT\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: keep-alive\r\n\r\n\
         {{\"id\":{},\"name\":\"item\",\"price\":{}}}",
        rng.below(60),
        rng.below(60),
        rng.below(100000),
        rng.below(10000)
    );
    s.into_bytes().into_iter().take(200).collect()
}

/// Generates `n` events of `mix`.
fn events(n: usize, mix: Mix) -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let services: Vec<Endpoint> = (0..8)
        .map(|i| {
            Endpoint::new(
                Ipv4Addr::new(10, 0, 1, 10 + i),
                [80, 8080, 5432, 6379][i as usize % 4],
            )
        })
        .collect();
    let clients: Vec<(u32, Addr)> = (0..24)
        .map(|i| {
            (
                2000 + i * 7,
                Addr::from(Ipv4Addr::new(10, 0, 2, (i % 6) as u8 + 1)),
            )
        })
        .collect();
    let hosts = [
        "api.internal",
        "orders.internal",
        "cart.internal",
        "static.internal",
    ];
    let mut out = Vec::with_capacity(n);
    let mut ts = 1_000_000_000_000u64;
    let mut port = 32768u16;
    while out.len() < n {
        let (pid, caddr) = clients[rng.below(clients.len() as u64) as usize];
        let svc = services[rng.below(services.len() as u64) as usize];
        port = if port >= 60999 {
            32768
        } else {
            port + 1 + rng.below(3) as u16
        };
        let local = Endpoint { addr: caddr, port };
        let fd = 5 + rng.below(40) as i32;
        ts += 1_000 + rng.below(20_000);
        let conn = ConnId {
            pid,
            fd,
            start_ns: ts,
        };
        let server_conn = ConnId {
            pid: 1000 + u32::from(svc.port % 7),
            fd: 10 + rng.below(200) as i32,
            start_ns: ts + 30_000,
        };
        let tcp = |ts, conn: ConnId, local, remote, step| {
            Event::new(
                ts,
                EventBody::Tcp(TcpEvent {
                    conn,
                    tid: conn.pid,
                    local,
                    remote,
                    step,
                }),
            )
        };
        let conns = mix != Mix::L7Only;
        let l7 = mix != Mix::ConnectionsOnly;
        if conns {
            out.push(tcp(ts, conn, local, svc, TcpStep::ConnectAttempt));
            let lat = 20_000 + rng.below(200_000);
            out.push(tcp(
                ts + lat,
                conn,
                local,
                svc,
                TcpStep::Established { latency_ns: lat },
            ));
            out.push(tcp(
                ts + lat + 5_000,
                server_conn,
                svc,
                local,
                TcpStep::Accepted,
            ));
        }
        let mut t = ts + 300_000;
        let mut sent = 0;
        let mut recv = 0;
        let requests = 1 + rng.below(4);
        if l7 {
            for _ in 0..requests {
                let host = hosts[rng.below(hosts.len() as u64) as usize];
                for (c, dir, payload, l, r) in [
                    (conn, Direction::Egress, request(&mut rng, host), local, svc),
                    (server_conn, Direction::Ingress, Vec::new(), svc, local),
                    (
                        server_conn,
                        Direction::Egress,
                        response(&mut rng),
                        svc,
                        local,
                    ),
                    (conn, Direction::Ingress, Vec::new(), local, svc),
                ] {
                    t += 10_000 + rng.below(500_000);
                    // Both sides see the same bytes: the reading side carries the same prefix.
                    let payload = if payload.is_empty() {
                        out.iter()
                            .rev()
                            .find_map(|e: &Event| match &e.body {
                                EventBody::L7(m) if m.direction == Direction::Egress => {
                                    Some(m.payload.clone())
                                }
                                _ => None,
                            })
                            .unwrap_or_default()
                    } else {
                        payload
                    };
                    let size = payload.len() as u64 + rng.below(3000);
                    if c == conn {
                        if dir == Direction::Egress {
                            sent += size
                        } else {
                            recv += size
                        }
                    }
                    out.push(Event::new(
                        t,
                        EventBody::L7(L7Message {
                            conn: c,
                            tid: c.pid + rng.below(4) as u32,
                            direction: dir,
                            size,
                            payload,
                            tcp_seq: None,
                            folded_calls: 0,
                            folded_bytes: 0,
                            local: l,
                            remote: r,
                        }),
                    ));
                }
            }
        }
        if conns {
            t += 50_000;
            out.push(tcp(
                t,
                conn,
                local,
                svc,
                TcpStep::Closed {
                    bytes_sent: sent,
                    bytes_received: recv,
                },
            ));
            out.push(tcp(
                t + 20_000,
                server_conn,
                svc,
                local,
                TcpStep::Closed {
                    bytes_sent: recv,
                    bytes_received: sent,
                },
            ));
        }
    }
    out.truncate(n);
    // Several connections overlap in time: a nearly sorted stream, as per-CPU buffers give.
    out.sort_by_key(|e| e.ts);
    out
}

struct Written {
    bytes: Vec<u8>,
    secs: f64,
    uncompressed: u64,
}

fn write(evs: &[Event], level: i32) -> Written {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.rseg");
    let opts = SegmentWriterOptions {
        zstd_level: level,
        sync: false,
        ..SegmentWriterOptions::default()
    };
    let t = cpu_secs();
    let mut w = SegmentWriter::create_with(&path, &SegmentHeader::default(), opts).expect("create");
    for e in evs {
        w.append(e).expect("append");
    }
    let uncompressed = {
        w.flush().expect("flush");
        w.bytes_uncompressed()
    };
    w.seal().expect("seal");
    let secs = cpu_secs() - t;
    Written {
        bytes: std::fs::read(&path).expect("read"),
        secs,
        uncompressed,
    }
}

/// CPU time of this thread, in seconds: the figures are per core and do not depend on how
/// busy the machine is (wall-clock time on a shared 2-core machine would).
fn cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Runs `f` repeatedly for at least `min` of CPU time and returns the mean CPU time of one
/// run.
fn cpu_time_of(min: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let start = cpu_secs();
    let mut runs = 0u32;
    while runs < 3 || cpu_secs() - start < min {
        f();
        runs += 1;
    }
    (cpu_secs() - start) / f64::from(runs)
}

fn report(name: &str, evs: &[Event], level: i32) {
    let n = evs.len() as f64;
    let w = write(evs, level);
    let r = SegmentReader::from_bytes(w.bytes.clone()).expect("opens");
    assert_eq!(r.events(), evs.len() as u64);
    // Check once that what we time is right.
    let mut back = Vec::with_capacity(evs.len());
    for i in 0..r.blocks().len() {
        back.extend(r.read_block(i).expect("block"));
    }
    assert!(back == evs, "round trip differs");
    drop(back);

    // Streaming, lent: decompress + CRC + validate + decode, each event lent to a visitor
    // (no allocation per event): what `retrace replay --stats` and filters need.
    let read = cpu_time_of(1.0, || {
        let mut count = 0usize;
        for i in 0..r.blocks().len() {
            r.visit_events(i, |e| count += black_box(e).ts as usize & 1)
                .expect("block");
        }
        black_box(count);
    });
    // Streaming, owned: each event handed over by value to a consumer that keeps it.
    let read_owned = cpu_time_of(1.0, || {
        let mut count = 0usize;
        for i in 0..r.blocks().len() {
            r.for_each_event(i, |e| count += black_box(&e).ts as usize & 1)
                .expect("block");
        }
        black_box(count);
    });
    // The same, collecting each block into a Vec<Event> (read_block_into, reused Vec).
    let mut buf_evs = Vec::new();
    let read_vec = cpu_time_of(1.0, || {
        let mut count = 0usize;
        for i in 0..r.blocks().len() {
            r.read_block_into(i, &mut buf_evs).expect("block");
            for e in &buf_evs {
                count += black_box(e).ts as usize & 1;
            }
        }
        black_box(count);
    });
    let frames: Vec<(&[u8], usize)> = r
        .blocks()
        .iter()
        .map(|b| {
            let s = b.offset as usize + FRAME_HEADER_LEN;
            (
                &w.bytes[s..s + b.compressed_len as usize],
                b.uncompressed_len as usize,
            )
        })
        .collect();
    let mut dctx = zstd::bulk::Decompressor::new().expect("dctx");
    let mut buf = vec![0u8; frames.iter().map(|f| f.1).max().unwrap_or(0)];
    let zstd_only = cpu_time_of(1.0, || {
        for (src, len) in &frames {
            let got = dctx
                .decompress_to_buffer(src, &mut buf[..*len])
                .expect("zstd");
            black_box(&buf[..got]);
        }
    });
    let disk = w.bytes.len() as f64;
    println!(
        "{name} ({} events, {} blocks, zstd level {level})",
        evs.len(),
        r.blocks().len()
    );
    println!(
        "  write  {:>8.2} M events/s  {:>7.1} MB/s encoded  {:>6.1} MB/s to disk",
        n / w.secs / 1e6,
        w.uncompressed as f64 / w.secs / 1e6,
        disk / w.secs / 1e6
    );
    println!(
        "  disk   {:>8.2} bytes/event  ({:.2} encoded bytes/event, zstd ratio {:.2})",
        disk / n,
        w.uncompressed as f64 / n,
        w.uncompressed as f64 / disk
    );
    println!(
        "  read   {:>8.2} M events/s  (decompress + CRC + validate + decode, each event lent to a visitor; 1 core)",
        n / read / 1e6
    );
    println!(
        "  read   {:>8.2} M events/s  (the same, each event handed over as an owned Event)",
        n / read_owned / 1e6
    );
    println!(
        "  read   {:>8.2} M events/s  (the same, collected per block into a reused Vec<Event>)",
        n / read_vec / 1e6
    );
    println!(
        "  zstd   {:>8.2} M events/s  ({:.0} MB/s decompressed; plain zstd on the same blocks)",
        n / zstd_only / 1e6,
        w.uncompressed as f64 / zstd_only / 1e6
    );
    println!(
        "  ratio  {:>8.2}x  read time / plain zstd time ({:.2}x owned, {:.2}x collecting)",
        read / zstd_only,
        read_owned / zstd_only,
        read_vec / zstd_only
    );
}

fn main() {
    let mut n = 1_000_000usize;
    let mut only = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => n = args.next().and_then(|v| v.parse().ok()).unwrap_or(n),
            "--only" => only = args.next().unwrap_or_default(),
            _ => {}
        }
    }
    if only == "conn" {
        report(
            "connection events only",
            &events(n, Mix::ConnectionsOnly),
            3,
        );
        return;
    }
    let mix = events(n, Mix::Realistic);
    let tcp = mix.iter().filter(|e| e.kind() == EventKind::Tcp).count();
    println!(
        "retrace segment format benchmark: {n} events, {tcp} TCP connection events, {} L7",
        n - tcp
    );
    report("realistic mix", &mix, 3);
    report(
        "connection events only",
        &events(n, Mix::ConnectionsOnly),
        3,
    );
    report("L7 messages only", &events(n / 4, Mix::L7Only), 3);
}
