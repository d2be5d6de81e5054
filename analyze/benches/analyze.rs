//! Benchmark: analyze ~10 M synthetic-but-realistic events (the `shop` stack of
//! `retrace_analyze::synth`: HTTP and RESP traffic between five services, both sides of every
//! loopback connection captured) written with the real capture writer; prints wall time and
//! peak memory (VmHWM of a child process that only analyzes), then runs
//! `tshark -r X.pcap -q -z http,tree` over a pcap of the same exchanges (as seen on the wire
//! once, client side) and prints the ratio.
//!
//! Environment: `RETRACE_BENCH_EVENTS` (default 10 000 000), `RETRACE_BENCH_DIR` (where the
//! capture and pcap are kept between runs; default a directory under the system temp dir),
//! `RETRACE_BENCH_TSHARK=0` to skip tshark. The CPU time (all threads) and the load average
//! are printed too: on a shared machine they tell how far the wall time can be trusted.
//! `RETRACE_ANALYZE_TIMING=1` adds the CPU time of each phase (the child's stderr, shown when
//! the child is run by hand: `BENCH_BINARY --child-analyze CAPTURE_DIR`).
//! The shop capture holds no log writes; the log pipeline is measured apart on
//! `RETRACE_BENCH_LOG_WRITES` (default 1 000 000) realistic writes made in memory (Python
//! records, some with a traceback, nginx error lines, JSON lines); `RETRACE_BENCH_LOGS_ONLY=1`
//! runs only that.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use retrace_analyze::synth::{self, ShopOptions, Sink};
use retrace_segment::{Direction, Event, EventBody};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system, all threads) of this process so far, seconds.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / 100.0
}

/// Writes events to a capture and the client side of every L7 message to a pcap.
struct Both {
    writer: retrace_segment::CaptureWriter,
    pcap: std::io::BufWriter<std::fs::File>,
    seq: HashMap<(u16, u16), u32>,
    events: u64,
    packets: u64,
}

impl Both {
    fn packet(&mut self, wall_ns: u64, sport: u16, dport: u16, payload: &[u8]) {
        let seq = *self.seq.get(&(sport, dport)).unwrap_or(&1);
        let ack = *self.seq.get(&(dport, sport)).unwrap_or(&1);
        self.seq
            .insert((sport, dport), seq.wrapping_add(payload.len() as u32));
        let len = 14 + 20 + 20 + payload.len();
        let mut p = Vec::with_capacity(16 + len);
        p.extend_from_slice(&((wall_ns / 1_000_000_000) as u32).to_le_bytes());
        p.extend_from_slice(&(((wall_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        p.extend_from_slice(&(len as u32).to_le_bytes());
        p.extend_from_slice(&(len as u32).to_le_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ack.to_be_bytes());
        p.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        let _ = self.pcap.write_all(&p);
        self.packets += 1;
    }
}

impl Sink for Both {
    fn put(&mut self, ev: Event) {
        if let EventBody::L7(m) = &ev.body {
            // Client sides only (ephemeral local port): the wire carries each message once.
            if m.local.port >= 40000 {
                let wall = synth::synth_clock().to_wall(ev.ts);
                let (s, d) = match m.direction {
                    Direction::Egress => (m.local.port, m.remote.port),
                    Direction::Ingress => (m.remote.port, m.local.port),
                };
                let payload = m.payload.clone();
                self.packet(wall, s, d, &payload);
            }
        }
        if self.writer.append(ev).is_ok() {
            self.events += 1;
        }
    }
}

fn generate(dir: &Path, events: u64) -> (PathBuf, PathBuf) {
    let cap = dir.join(format!("capture-{events}"));
    let pcap = dir.join(format!("traffic-{events}.pcap"));
    if cap.join("manifest.json").exists() && pcap.exists() {
        eprintln!("reusing {} and {}", cap.display(), pcap.display());
        return (cap, pcap);
    }
    let _ = std::fs::remove_dir_all(&cap);
    std::fs::create_dir_all(dir).expect("bench dir");
    let t = Instant::now();
    let copts = retrace_segment::CaptureOptions {
        dir: cap.clone(),
        node: synth::synth_node("node-a"),
        ..Default::default()
    };
    let writer = retrace_segment::CaptureWriter::create(copts, Default::default()).expect("writer");
    let mut file =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&pcap).expect("pcap"));
    // pcap global header: magic, v2.4, tz 0, sigfigs 0, snaplen 65535, Ethernet.
    file.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])
    .expect("pcap header");
    let sink = Both {
        writer,
        pcap: file,
        seq: HashMap::new(),
        events: 0,
        packets: 0,
    };
    // ~12 events per front request (3 exchanges x 4 messages) plus connection events.
    let opts = ShopOptions {
        requests: events / 12,
        rate: 20_000,
        error_every: 25,
        odd_path: None,
    };
    let mut sink = synth::shop(sink, &opts);
    sink.pcap.flush().expect("flush pcap");
    let (n, packets) = (sink.events, sink.packets);
    sink.writer.close().expect("close capture");
    eprintln!(
        "generated {n} events ({packets} packets in the pcap) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (cap, pcap)
}

fn child(cap: &Path, no_traces: bool) {
    let t = Instant::now();
    let opts = retrace_analyze::AnalyzeOptions {
        no_traces,
        ..Default::default()
    };
    let a = retrace_analyze::analyze(&[cap.to_path_buf()], &opts).expect("analyze");
    let analyze_s = t.elapsed().as_secs_f64();
    let out = std::env::temp_dir().join("retrace-bench-report");
    let t2 = Instant::now();
    retrace_analyze::write_report(&a, &out).expect("report");
    let report_s = t2.elapsed().as_secs_f64();
    println!(
        "CHILD events={} requests={} analyze_s={analyze_s:.3} report_s={report_s:.3} vmhwm_kib={} cpu_s={:.2}",
        a.events,
        a.total_requests,
        vm_hwm_kib(),
        process_cpu_s()
    );
}

/// What one analysis child measured.
struct ChildRun {
    events: f64,
    requests: f64,
    analyze_s: f64,
    report_s: f64,
    hwm_kib: f64,
    cpu_s: f64,
    wall_s: f64,
}

/// Analyzes `cap` in a child process (so that its peak memory is the analysis' own).
fn run_child(cap: &Path, no_traces: bool) -> ChildRun {
    let t = Instant::now();
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("exe"));
    cmd.arg("--child-analyze").arg(cap);
    // The allocator policy of the `retrace` binary.
    cmd.env(
        "MALLOC_MMAP_THRESHOLD_",
        retrace_analyze::MMAP_THRESHOLD.to_string(),
    );
    if no_traces {
        cmd.arg("--no-traces");
    }
    let out = cmd.output().expect("child");
    let wall_s = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!("analysis failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD"))
        .unwrap_or("");
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    ChildRun {
        events: field("events"),
        requests: field("requests"),
        analyze_s: field("analyze_s"),
        report_s: field("report_s"),
        hwm_kib: field("vmhwm_kib"),
        cpu_s: field("cpu_s"),
        wall_s,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-analyze") {
        child(
            Path::new(&args[i + 1]),
            args.iter().any(|a| a == "--no-traces"),
        );
        return;
    }
    if std::env::var("RETRACE_BENCH_LOGS_ONLY").as_deref() == Ok("1") {
        logs_phase();
        return;
    }
    let events: u64 = std::env::var("RETRACE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = std::env::var_os("RETRACE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("retrace-analyze-bench"));
    let (cap, pcap) = generate(&dir, events);

    let with = run_child(&cap, false);
    let analyze_s = with.analyze_s;
    let report_s = with.report_s;
    println!(
        "retrace-analyze: {} events, {} requests",
        with.events, with.requests
    );
    println!(
        "  analyze {analyze_s:.2} s + report {report_s:.2} s (process wall {:.2} s, cpu {:.2} s), peak RSS {:.0} MiB",
        with.wall_s,
        with.cpu_s,
        with.hwm_kib / 1024.0
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let l: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("  load average during the run: {}", l.join(" "));
    }
    println!(
        "  {:.2} M events/s; goals: < 10 s and < 2048 MiB",
        with.events / (analyze_s + report_s) / 1e6
    );
    // The same capture without trace linking: what linking (spans.csv and traces.csv
    // included) costs.
    let without = run_child(&cap, true);
    let (a, b) = (
        with.analyze_s + with.report_s,
        without.analyze_s + without.report_s,
    );
    println!(
        "  without trace linking: analyze {:.2} s + report {:.2} s (cpu {:.2} s), peak RSS {:.0} MiB",
        without.analyze_s,
        without.report_s,
        without.cpu_s,
        without.hwm_kib / 1024.0,
    );
    println!(
        "  traces add {:+.1}% wall ({:+.1}% analysis alone), {:+.1}% cpu (all threads, report included), {:+.0} MiB (goal <= +25% analysis time; the wall figures are only as good as the load average)",
        (a / b - 1.0) * 100.0,
        (with.analyze_s / without.analyze_s - 1.0) * 100.0,
        (with.cpu_s / without.cpu_s - 1.0) * 100.0,
        (with.hwm_kib - without.hwm_kib) / 1024.0
    );

    logs_phase();

    if std::env::var("RETRACE_BENCH_TSHARK").as_deref() == Ok("0") {
        return;
    }
    let t = Instant::now();
    let ts = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-q", "-z", "http,tree"])
        .output();
    let tshark_s = t.elapsed().as_secs_f64();
    match ts {
        Ok(o) if o.status.success() => {
            let summary = String::from_utf8_lossy(&o.stdout);
            let total = summary
                .lines()
                .find(|l| l.contains("Total HTTP Packets"))
                .unwrap_or("")
                .trim()
                .to_string();
            println!("tshark -z http,tree over the same traffic: {tshark_s:.2} s ({total})");
            println!(
                "ratio tshark / retrace-analyze: {:.1}x (goal >= 50x)",
                tshark_s / (analyze_s + report_s)
            );
        }
        Ok(o) => println!("tshark failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("tshark not run: {e}"),
    }
}

/// The log pipeline alone: realistic writes of 40 processes through the analyzer.
fn logs_phase() {
    let n: u64 = std::env::var("RETRACE_BENCH_LOG_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut evs: Vec<Event> = Vec::with_capacity(n as usize);
    let mut rng = synth::Rng::new(7);
    let t0 = 1_000_000_000_000u64;
    for i in 0..n {
        let pid = 1000 + (i % 40) as u32;
        let id = rng.below(100_000);
        let text = match rng.below(100) {
            0..=69 => format!(
                "2026-12-06 12:00:{:02},{:03} INFO shop.api: served GET /items/{id} for user u{} in {}.{} ms\n",
                i % 60, i % 1000, id % 97, id % 50, id % 10
            ),
            70..=84 => format!(
                "{{\"ts\":\"2026-12-06T12:00:00Z\",\"level\":\"warn\",\"msg\":\"cache miss for key user:{id}\",\"shard\":{}}}\n",
                id % 8
            ),
            85..=94 => format!(
                "2026/12/06 12:00:00 [error] {pid}#{pid}: *{id} connect() failed (111: Connection refused) while connecting to upstream, client: 10.0.{}.{}, server: _, request: \"GET /checkout/{id} HTTP/1.1\", upstream: \"http://127.0.0.1:28081/checkout/{id}\"\n",
                id % 256, id % 199
            ),
            _ => format!(
                "2026-12-06 12:00:00,000 ERROR shop.api: failed to load item {id}\nTraceback (most recent call last):\n  File \"/srv/api.py\", line 40, in get\n    load({id})\n  File \"/srv/api.py\", line 12, in load\n    raise ValueError(f\"item {{n}} is broken\")\nValueError: item {id} is broken\n"
            ),
        };
        let b = text.into_bytes();
        let keep = b.len().min(512);
        evs.push(Event::new(
            t0 + i * 10_000,
            EventBody::Log(retrace_segment::LogWrite {
                pid,
                tid: pid,
                fd: 2,
                path: String::new(),
                size: b.len() as u64,
                payload: b[..keep].to_vec(),
            }),
        ));
    }
    let cpu = process_cpu_s();
    let t = Instant::now();
    let mut an = retrace_analyze::Analyzer::new(Default::default());
    let node = an.node("bench");
    for e in &evs {
        an.push(node, e.ts, e);
    }
    let a = an.finish(Default::default()).expect("analysis");
    let wall = t.elapsed().as_secs_f64();
    let cpu = process_cpu_s() - cpu;
    println!(
        "logs: {n} writes, {} events, {} patterns: {wall:.2} s wall, {cpu:.2} s cpu (all \
         threads), {:.2} µs cpu per write",
        a.logs.event_count,
        a.logs.patterns.len(),
        cpu / n as f64 * 1e6
    );
}
