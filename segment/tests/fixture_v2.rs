//! The frozen format-v2 fixture: `tests/data/v2/capture/` was written once by
//! `generate_v2_fixture` (run with `RETRACE_GENERATE_FIXTURE=1 cargo test -p retrace-segment
//! --test fixture_v2 -- --ignored`) and committed. Every future build must read it exactly.
//! Version 2 added event kind 16, `thread` ([`ThreadStart`]); the other kinds are covered by
//! the v1 fixture. Never regenerate it for format version 2: add a `v3/` fixture instead.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use retrace_segment::*;

const CAPTURE_ID: &str = "fixture-v2";
const STARTED_WALL_NS: u64 = 1_796_546_775_000_000_000; // 2026-12-06T08:46:15Z

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2/capture")
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "fixture-node".into(),
        hostname: "fixture-node.example".into(),
        kernel: "6.1.0-retrace".into(),
        boot_time_ns: 1_796_500_000_000_000_000,
        clock: ClockSync {
            mono_ns: 46_775_000_000_000,
            wall_ns: STARTED_WALL_NS,
        },
        cpus: 2,
    }
}

/// A process that accepts a connection, reads a request on a handler thread, starts a worker
/// thread, which starts another.
fn batch() -> Vec<Event> {
    let t0 = 46_775_000_000_000u64;
    let web = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 8080);
    let cli = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 45_678);
    let conn = ConnId {
        pid: 300,
        fd: 5,
        start_ns: t0,
    };
    let thread = |ts: u64, parent_tid: u32, tid: u32| {
        Event::new(
            ts,
            EventBody::ThreadStart(ThreadStart {
                pid: 300,
                parent_tid,
                tid,
            }),
        )
    };
    vec![
        Event::new(
            t0,
            EventBody::Tcp(TcpEvent {
                conn,
                tid: 300,
                local: web,
                remote: cli,
                step: TcpStep::Accepted,
            }),
        ),
        thread(t0 + 1_000, 300, 301),
        Event::new(
            t0 + 2_000,
            EventBody::L7(L7Message {
                conn,
                tid: 301,
                direction: Direction::Ingress,
                size: 18,
                payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                tcp_seq: Some(7),
                folded_calls: 0,
                folded_bytes: 0,
                local: web,
                remote: cli,
            }),
        ),
        thread(t0 + 3_000, 301, 302),
        // A thread id below its parent's (ids wrap around at pid_max).
        thread(t0 + 4_000, 302, 17),
    ]
}

#[test]
#[ignore = "writes the frozen fixture; run only to create a new format version's fixture"]
fn generate_v2_fixture() {
    if std::env::var_os("RETRACE_GENERATE_FIXTURE").is_none() {
        eprintln!(
            "set RETRACE_GENERATE_FIXTURE=1 to (re)write {}",
            fixture_dir().display()
        );
        return;
    }
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let opts = CaptureOptions {
        dir: dir.clone(),
        node: node(),
        streams: vec!["all".into()],
        ..CaptureOptions::default()
    };
    let state = StateSnapshot {
        processes: Vec::new(),
        listening: Vec::new(),
        connections: Vec::new(),
    };
    let mut w = CaptureWriter::create_with_id(opts, state, CAPTURE_ID.into(), STARTED_WALL_NS)
        .expect("create");
    for e in batch() {
        w.append(e).expect("append");
    }
    w.close().expect("close");
}

#[test]
fn v2_fixture_reads_exactly() {
    let c = Capture::open(fixture_dir()).expect("fixture opens");
    let m = c.manifest().expect("manifest");
    assert_eq!(m.format_version, 2);
    assert_eq!(m.capture_id, CAPTURE_ID);
    assert_eq!(m.totals.events, 5);
    assert_eq!(m.totals.events_by_kind["thread"], 3);
    assert_eq!(m.segments.len(), 1);
    let r = c.open_segment(0).expect("segment opens");
    assert!(r.is_sealed());
    assert!(r.damage().is_empty());
    assert_eq!(r.header().format_version, 2);
    assert_eq!(r.header().min_reader_version, 2);
    assert_eq!(r.header().node, node());
    assert_eq!(r.blocks().len(), 1);
    assert_eq!(r.read_block(0).expect("block reads"), batch());
}
