//! Replay benchmark: writes two nodes' captures (a realistic mix of TCP lifecycle events and
//! L7 messages with ~200-byte HTTP payload prefixes, events slightly out of order across
//! CPUs), then prints events/s for:
//!
//! - `decode only`: `SegmentReader::read_block` over every block of every segment, no merge:
//!   the peer, i.e. the limit that reading the format sets;
//! - `replay`: the k-way merge with process/socket tables, no filter;
//! - `replay + filter`: with `kind = l7 and port = 5432 and comm = postgres`;
//! - `replay + text`: formatting every event as a text line into a sink.
//!
//! Run: `cargo bench -p retrace-replay --bench replay` (options: `--events N` per node,
//! default 1 000 000; `--dir PATH` to keep the two captures there).

use std::hint::black_box;
use std::io::sink;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use retrace_replay::{EventWriter, Filter, OutputFormat, Replay, ReplayOptions};
use retrace_segment::*;

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

fn payload(rng: &mut Rng, request: bool) -> Vec<u8> {
    let s = if request {
        format!(
            "GET /api/v1/users/{} HTTP/1.1\r\nHost: api.internal\r\nUser-Agent: python-requests/2.31.0\r\n\
             Accept: */*\r\nConnection: keep-alive\r\nX-Request-ID: {:016x}\r\n\r\n",
            rng.below(5000),
            rng.next()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n\r\n{{\"id\":{}}}",
            rng.below(4000),
            rng.below(100_000)
        )
    };
    s.into_bytes().into_iter().take(200).collect()
}

fn write_node(dir: &Path, name: &str, events: u64, seed: u64) -> PathBuf {
    let cap = dir.join(name);
    let now = clock_now();
    let opts = CaptureOptions {
        dir: cap.clone(),
        node: NodeInfo {
            name: name.into(),
            hostname: name.into(),
            clock: now,
            ..Default::default()
        },
        segment_max_bytes: 16 << 20,
        ..Default::default()
    };
    let procs: Vec<ProcessInfo> = (0..8u32)
        .map(|i| ProcessInfo {
            pid: 1000 + i,
            ppid: 1,
            comm: if i < 4 {
                "postgres".into()
            } else {
                "nginx".into()
            },
            exe: if i < 4 {
                "/usr/lib/postgresql/15/bin/postgres".into()
            } else {
                "/usr/sbin/nginx".into()
            },
            cgroup: "/system.slice/x.service".into(),
            ..Default::default()
        })
        .collect();
    let state = StateSnapshot {
        processes: procs,
        ..Default::default()
    };
    let mut w = CaptureWriter::create(opts, state).expect("create");
    let mut rng = Rng(seed);
    let mut t = now.mono_ns;
    let mut i = 0;
    while i < events {
        t += 1_000 + rng.below(2_000);
        let pid = 1000 + rng.below(8) as u32;
        let port = if pid < 1004 { 5432 } else { 80 };
        let conn = ConnId {
            pid,
            fd: 10 + rng.below(50) as i32,
            start_ns: t,
        };
        let local = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), port);
        let remote = Endpoint::new(
            Ipv4Addr::new(10, 0, 1, rng.below(20) as u8),
            30000 + rng.below(30000) as u16,
        );
        // Another CPU's events arrive up to 50 µs late.
        let jitter = |rng: &mut Rng, t: u64| t - rng.below(50_000);
        let tcp = |ts, step| {
            Event::new(
                ts,
                EventBody::Tcp(TcpEvent {
                    conn,
                    tid: pid,
                    local,
                    remote,
                    step,
                }),
            )
        };
        w.append(tcp(jitter(&mut rng, t), TcpStep::Accepted))
            .expect("append");
        for k in 0..4u64 {
            let direction = if k % 2 == 0 {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            let p = payload(&mut rng, k % 2 == 0);
            let ev = Event::new(
                jitter(&mut rng, t + k * 100),
                EventBody::L7(L7Message {
                    conn,
                    tid: pid,
                    direction,
                    size: p.len() as u64 + rng.below(1000),
                    payload: p,
                    tcp_seq: None,
                    folded_calls: 0,
                    folded_bytes: 0,
                    local,
                    remote,
                }),
            );
            w.append(ev).expect("append");
        }
        w.append(tcp(
            t + 500,
            TcpStep::Closed {
                bytes_sent: 1000,
                bytes_received: 400,
            },
        ))
        .expect("append");
        i += 6;
    }
    w.close().expect("close");
    cap
}

fn rate(n: u64, secs: f64) -> String {
    format!("{:>7.2} M events/s", n as f64 / secs / 1e6)
}

fn main() {
    let mut per_node: u64 = 1_000_000;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--events") {
        per_node = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(per_node);
    }
    // `--dir PATH` keeps the captures there (to replay them with the binary afterwards).
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = match args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
    {
        Some(d) => PathBuf::from(d),
        None => tmp.path().to_path_buf(),
    };
    let t = Instant::now();
    let caps = [
        write_node(&dir, "node-a", per_node, 1),
        write_node(&dir, "node-b", per_node, 2),
    ];
    println!(
        "wrote 2 nodes x {per_node} events in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    // Peer: decode every block, no merge.
    let t = Instant::now();
    let mut decoded = 0u64;
    for cap in &caps {
        let c = Capture::open(cap).expect("open");
        for s in 0..c.segment_paths().len() {
            let r = c.open_segment(s).expect("segment");
            for b in 0..r.blocks().len() {
                let evs = r.read_block(b).expect("block");
                decoded += evs.len() as u64;
                black_box(evs);
            }
        }
    }
    let peer = t.elapsed().as_secs_f64();
    println!(
        "decode only        {} ({decoded} events, {:.2}s)",
        rate(decoded, peer),
        peer
    );

    let run = |name: &str, filter: Option<&str>, text: bool| {
        let opts = ReplayOptions {
            filter: filter.map(|f| Filter::parse(f).expect("filter")),
            ..Default::default()
        };
        let t = Instant::now();
        let mut r = Replay::open(&caps, opts).expect("open");
        let mut n = 0u64;
        let mut out = EventWriter::new(sink(), OutputFormat::Text, 64).expect("writer");
        for ev in r.by_ref() {
            if text {
                out.write(&ev).expect("write");
            }
            n += 1;
            black_box(&ev);
        }
        let secs = t.elapsed().as_secs_f64();
        let rep = r.report();
        println!(
            "{name:<18} {} of events read ({} yielded, {:.2}s, {:.2}x the decode-only time, out of order {})",
            rate(rep.events_read, secs),
            n,
            secs,
            secs / peer,
            rep.out_of_order
        );
        assert_eq!(rep.out_of_order, 0);
    };
    run("replay", None, false);
    run(
        "replay + filter",
        Some("kind = l7 and port = 5432 and comm = postgres"),
        false,
    );
    run("replay + text", None, true);
}
