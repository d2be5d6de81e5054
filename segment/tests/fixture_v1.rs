//! The frozen format-v1 fixture: `tests/data/v1/capture/` was written once by
//! `generate_v1_fixture` (run with `RETRACE_GENERATE_FIXTURE=1 cargo test -p retrace-segment
//! --test fixture_v1 -- --ignored`) and committed. Every future build must read it exactly.
//! Never regenerate it for format version 1: add a `v2/` fixture next to it instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use retrace_segment::*;

const CAPTURE_ID: &str = "fixture-v1";
const STARTED_WALL_NS: u64 = 1_795_501_275_000_000_000; // 2026-11-24T06:21:15Z

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1/capture")
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "fixture-node".into(),
        hostname: "fixture-node.example".into(),
        kernel: "6.18.0-retrace".into(),
        boot_time_ns: 1_795_400_000_000_000_000,
        clock: ClockSync {
            mono_ns: 101_275_000_000_000,
            wall_ns: STARTED_WALL_NS,
        },
        cpus: 2,
    }
}

fn initial_state() -> StateSnapshot {
    StateSnapshot {
        processes: vec![ProcessInfo {
            pid: 1,
            ppid: 0,
            comm: "systemd".into(),
            exe: "/usr/lib/systemd/systemd".into(),
            cmdline: vec!["/sbin/init".into()],
            cgroup: "/init.scope".into(),
            container_id: None,
        }],
        listening: vec![ListenSocket {
            pid: 1,
            fd: 40,
            local: Endpoint::new(Ipv4Addr::UNSPECIFIED, 22),
        }],
        connections: Vec::new(),
    }
}

/// Two batches (one per segment), covering every event kind.
fn batches() -> [Vec<Event>; 2] {
    let t0 = 101_275_000_000_000u64;
    let web = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 8080);
    let cli = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 45_678);
    let v6 = Endpoint::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        53,
    );
    let conn = ConnId {
        pid: 200,
        fd: 7,
        start_ns: t0 + 3_000,
    };
    let srv = ConnId {
        pid: 300,
        fd: 9,
        start_ns: t0 + 3_500,
    };
    let tcp = |c: ConnId, local, remote, step| {
        EventBody::Tcp(TcpEvent {
            conn: c,
            tid: c.pid,
            local,
            remote,
            step,
        })
    };
    let l7 = |c: ConnId, dir, payload: &str, local, remote| {
        EventBody::L7(L7Message {
            conn: c,
            tid: c.pid + 1,
            direction: dir,
            size: payload.len() as u64 + 10,
            payload: payload.as_bytes().to_vec(),
            tcp_seq: Some(1_000),
            folded_calls: 1,
            folded_bytes: 10,
            local,
            remote,
        })
    };
    let first = vec![
        Event::new(t0, EventBody::Node(node())),
        Event::new(
            t0 + 1_000,
            EventBody::ProcExec(ProcExec {
                pid: 200,
                ppid: 1,
                comm: "curl".into(),
                exe: "/usr/bin/curl".into(),
                cmdline: vec!["curl".into(), "http://10.0.0.2:8080/users/42".into()],
                cgroup: "/user.slice/session-1.scope".into(),
                container_id: None,
            }),
        ),
        Event::new(
            t0 + 2_000,
            EventBody::ProcFork(ProcFork {
                parent_pid: 1,
                child_pid: 300,
                comm: "api".into(),
            }),
        ),
        Event::new(
            t0 + 2_500,
            tcp(srv, web, Endpoint::default(), TcpStep::ListenOpen),
        ),
        Event::new(t0 + 3_000, tcp(conn, cli, web, TcpStep::ConnectAttempt)),
        Event::new(
            t0 + 3_400,
            tcp(conn, cli, web, TcpStep::Established { latency_ns: 400 }),
        ),
        Event::new(t0 + 3_500, tcp(srv, web, cli, TcpStep::Accepted)),
        Event::new(
            t0 + 4_000,
            l7(
                conn,
                Direction::Egress,
                "GET /users/42 HTTP/1.1\r\nHost: api\r\n\r\n",
                cli,
                web,
            ),
        ),
        Event::new(
            t0 + 4_100,
            l7(
                srv,
                Direction::Ingress,
                "GET /users/42 HTTP/1.1\r\nHost: api\r\n\r\n",
                web,
                cli,
            ),
        ),
        Event::new(
            t0 + 9_000,
            l7(
                srv,
                Direction::Egress,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                web,
                cli,
            ),
        ),
        Event::new(
            t0 + 9_500,
            EventBody::TcpSample(TcpSample {
                what: TcpSampleKind::Retransmit,
                local: web,
                remote: cli,
                state: 1,
                srtt_us: 120,
                pid: Some(300),
            }),
        ),
        Event::new(
            t0 + 10_000,
            tcp(
                conn,
                cli,
                web,
                TcpStep::Closed {
                    bytes_sent: 40,
                    bytes_received: 60,
                },
            ),
        ),
    ];
    let second = vec![
        Event::new(
            t0 + 20_000,
            EventBody::Udp(UdpMessage {
                pid: 200,
                tid: 200,
                direction: Direction::Egress,
                local: Endpoint::default(),
                remote: v6,
                size: 33,
                payload: vec![0x12, 0x34, 1, 0, 0, 1, 0, 0],
            }),
        ),
        Event::new(
            t0 + 21_000,
            EventBody::StackDef(StackDef {
                id: 7,
                pid: Some(300),
                frames: vec![0x5555_0000_1000, 0x5555_0000_2000],
                symbols: vec!["handler".into(), "main".into()],
            }),
        ),
        Event::new(
            t0 + 22_000,
            EventBody::CpuSample(CpuSample {
                pid: 300,
                tid: 301,
                cpu: 1,
                user_stack: Some(7),
                kernel_stack: None,
            }),
        ),
        Event::new(
            t0 + 23_000,
            EventBody::AllocSample(AllocSample {
                pid: 300,
                tid: 301,
                size: 4096,
                addr: 0x7f00_0000_0000,
                stack: 7,
            }),
        ),
        Event::new(
            t0 + 24_000,
            EventBody::AllocSnapshot(AllocSnapshot {
                pid: 300,
                rss_bytes: 10 << 20,
                by_stack: vec![OutstandingAllocs {
                    stack: 7,
                    bytes: 4096,
                    count: 1,
                }],
            }),
        ),
        Event::new(
            t0 + 25_000,
            EventBody::Log(LogWrite {
                pid: 300,
                tid: 301,
                fd: 2,
                path: String::new(),
                size: 12,
                payload: b"error: boom\n".to_vec(),
            }),
        ),
        Event::new(
            t0 + 26_000,
            EventBody::Loss(LossMarker {
                kind: EventKind::L7,
                cpu: 0,
                count: 3,
                reason: LossReason::RingFull,
                from_ns: t0 + 25_500,
                to_ns: t0 + 26_000,
            }),
        ),
        Event::new(
            t0 + 27_000,
            EventBody::Mark(Mark {
                source: MarkSource::User,
                note: "fixture mark".into(),
            }),
        ),
        Event::new(
            t0 + 28_000,
            EventBody::OomKill(OomKill {
                pid: 300,
                comm: "api".into(),
            }),
        ),
        Event::new(
            t0 + 28_500,
            EventBody::ProcExit(ProcExit {
                pid: 300,
                comm: "api".into(),
                exit_code: 0,
                signal: 9,
                oom_killed: true,
            }),
        ),
        Event::new(
            t0 + 29_000,
            tcp(srv, web, Endpoint::default(), TcpStep::ListenClose),
        ),
        Event::new(
            t0 + 30_000,
            tcp(
                ConnId {
                    pid: 200,
                    fd: 8,
                    start_ns: t0 + 29_000,
                },
                cli,
                web,
                TcpStep::Failed {
                    errno: 111,
                    latency_ns: 1_000,
                },
            ),
        ),
    ];
    [first, second]
}

#[test]
#[ignore = "writes the frozen fixture; run only to create a new format version's fixture"]
fn generate_v1_fixture() {
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
        options: [("payload_bytes".to_string(), "256".to_string())]
            .into_iter()
            .collect(),
        segment_max_bytes: 1, // one block per segment
        ..CaptureOptions::default()
    };
    let mut w =
        CaptureWriter::create_with_id(opts, initial_state(), CAPTURE_ID.into(), STARTED_WALL_NS)
            .expect("create");
    for batch in batches() {
        for e in batch {
            w.append(e).expect("append");
        }
        w.flush().expect("flush");
    }
    w.record_loss(EventKind::L7, 3);
    w.close().expect("close");
}

#[test]
fn v1_fixture_reads_exactly() {
    let c = Capture::open(fixture_dir()).expect("fixture opens");
    let names: Vec<String> = c
        .segment_paths()
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "20261124T062115Z-000001.rseg",
            "20261124T062115Z-000002.rseg"
        ]
    );
    assert!(c.missing_segments().is_empty());

    let m = c.manifest().expect("manifest");
    assert_eq!(m.format_version, 1);
    assert_eq!(m.capture_id, CAPTURE_ID);
    assert_eq!(m.node, node());
    assert_eq!(m.streams, ["all"]);
    assert_eq!(m.options["payload_bytes"], "256");
    assert_eq!(m.started_wall_ns, STARTED_WALL_NS);
    assert_eq!(m.marks, [(101_275_000_027_000, "fixture mark".to_string())]);
    assert_eq!(m.totals.events, 24);
    assert_eq!(m.totals.events_by_kind["tcp"], 7);
    assert_eq!(m.totals.events_by_kind["l7"], 3);
    assert_eq!(m.totals.dropped, 3);
    assert_eq!(m.totals.dropped_by_kind["l7"], 3);
    assert_eq!(m.segments.len(), 2);
    assert_eq!(
        (
            m.segments[0].seq,
            m.segments[0].events,
            m.segments[0].sealed
        ),
        (1, 12, true)
    );
    assert_eq!(
        (m.segments[1].first_ts, m.segments[1].last_ts),
        (101_275_000_020_000, 101_275_000_030_000)
    );

    let expected = batches();
    for (i, batch) in expected.iter().enumerate() {
        let r = c.open_segment(i).expect("segment opens");
        assert!(r.is_sealed());
        assert!(r.damage().is_empty());
        assert_eq!(r.header().format_version, 1);
        assert_eq!(r.header().min_reader_version, 1);
        assert_eq!(r.header().model_version, 1);
        assert_eq!(r.header().capture_id, CAPTURE_ID);
        assert_eq!(r.header().seq, i as u64 + 1);
        assert_eq!(r.header().node, node());
        assert_eq!(r.header().writer, "retrace-segment 0.1.0");
        assert_eq!(r.file_len(), m.segments[i].bytes);
        assert_eq!(r.blocks().len(), 1);
        assert_eq!(&r.read_block(0).expect("block reads"), batch);
    }
    // State at the start of each segment.
    let s0 = c.open_segment(0).expect("segment").header().state.clone();
    assert_eq!(s0, initial_state());
    let s1 = c.open_segment(1).expect("segment").header().state.clone();
    let pids: Vec<u32> = s1.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [1, 200, 300]);
    assert_eq!(s1.listening.len(), 2);
    assert_eq!(
        s1.connections.len(),
        1,
        "the accepted connection is still open"
    );
    assert!(s1.connections[0].inbound);
}
