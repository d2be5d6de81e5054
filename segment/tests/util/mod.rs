//! Shared helpers for the segment tests: event strategies and sample events.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use proptest::prelude::*;
use retrace_segment::*;

pub fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (0u8..4, any::<u16>())
            .prop_map(|(a, port)| Endpoint::new(Ipv4Addr::new(10, 0, 0, a), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, port)| Endpoint {
            addr: Addr(a),
            port
        }),
    ]
}

pub fn arb_conn() -> impl Strategy<Value = ConnId> {
    prop_oneof![
        (0u32..3, 0i32..4, 0u64..3).prop_map(|(pid, fd, start_ns)| ConnId { pid, fd, start_ns }),
        (any::<u32>(), any::<i32>(), any::<u64>()).prop_map(|(pid, fd, start_ns)| ConnId {
            pid,
            fd,
            start_ns
        }),
    ]
}

pub fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z]{1,3}", ".{0,20}"]
}

fn arb_dir() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Egress), Just(Direction::Ingress)]
}

fn arb_kind() -> impl Strategy<Value = EventKind> {
    (0u8..16).prop_map(|k| EventKind::from_u8(k).expect("valid kind"))
}

fn arb_step() -> impl Strategy<Value = TcpStep> {
    prop_oneof![
        Just(TcpStep::ConnectAttempt),
        any::<u64>().prop_map(|latency_ns| TcpStep::Established { latency_ns }),
        (any::<i32>(), any::<u64>())
            .prop_map(|(errno, latency_ns)| TcpStep::Failed { errno, latency_ns }),
        Just(TcpStep::Accepted),
        (any::<u64>(), any::<u64>()).prop_map(|(bytes_sent, bytes_received)| TcpStep::Closed {
            bytes_sent,
            bytes_received
        }),
        Just(TcpStep::ListenOpen),
        Just(TcpStep::ListenClose),
    ]
}

fn arb_payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

pub fn arb_body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            arb_string(),
            arb_string(),
            proptest::collection::vec(arb_string(), 0..4),
            arb_string(),
            proptest::option::of(arb_string())
        )
            .prop_map(|(pid, ppid, comm, exe, cmdline, cgroup, container_id)| {
                EventBody::ProcExec(ProcExec {
                    pid,
                    ppid,
                    comm,
                    exe,
                    cmdline,
                    cgroup,
                    container_id,
                })
            }),
        (any::<u32>(), any::<u32>(), arb_string()).prop_map(|(parent_pid, child_pid, comm)| {
            EventBody::ProcFork(ProcFork {
                parent_pid,
                child_pid,
                comm,
            })
        }),
        (
            any::<u32>(),
            arb_string(),
            any::<i32>(),
            any::<i32>(),
            any::<bool>()
        )
            .prop_map(|(pid, comm, exit_code, signal, oom_killed)| {
                EventBody::ProcExit(ProcExit {
                    pid,
                    comm,
                    exit_code,
                    signal,
                    oom_killed,
                })
            }),
        (
            arb_conn(),
            any::<u32>(),
            arb_endpoint(),
            arb_endpoint(),
            arb_step()
        )
            .prop_map(|(conn, tid, local, remote, step)| {
                EventBody::Tcp(TcpEvent {
                    conn,
                    tid,
                    local,
                    remote,
                    step,
                })
            }),
        (
            arb_conn(),
            any::<u32>(),
            arb_dir(),
            any::<u64>(),
            arb_payload(),
            proptest::option::of(any::<u32>()),
            (any::<u32>(), any::<u64>()),
            (arb_endpoint(), arb_endpoint())
        )
            .prop_map(
                |(conn, tid, direction, size, payload, tcp_seq, (fc, fb), (local, remote))| {
                    EventBody::L7(L7Message {
                        conn,
                        tid,
                        direction,
                        size,
                        payload,
                        tcp_seq,
                        folded_calls: fc,
                        folded_bytes: fb,
                        local,
                        remote,
                    })
                }
            ),
        (
            prop_oneof![
                Just(TcpSampleKind::Retransmit),
                Just(TcpSampleKind::ResetSent),
                Just(TcpSampleKind::ResetReceived),
                Just(TcpSampleKind::Rtt),
                Just(TcpSampleKind::SynAckRetransmit),
                Just(TcpSampleKind::ZeroWindow)
            ],
            arb_endpoint(),
            arb_endpoint(),
            any::<u8>(),
            any::<u32>(),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(what, local, remote, state, srtt_us, pid)| {
                EventBody::TcpSample(TcpSample {
                    what,
                    local,
                    remote,
                    state,
                    srtt_us,
                    pid,
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            arb_dir(),
            arb_endpoint(),
            arb_endpoint(),
            any::<u64>(),
            arb_payload()
        )
            .prop_map(|(pid, tid, direction, local, remote, size, payload)| {
                EventBody::Udp(UdpMessage {
                    pid,
                    tid,
                    direction,
                    local,
                    remote,
                    size,
                    payload,
                })
            }),
        (any::<u32>(), arb_string())
            .prop_map(|(pid, comm)| EventBody::OomKill(OomKill { pid, comm })),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(pid, tid, size, addr, stack)| {
                EventBody::AllocSample(AllocSample {
                    pid,
                    tid,
                    size,
                    addr,
                    stack,
                })
            }),
        (
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(
                (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(stack, bytes, count)| {
                    OutstandingAllocs {
                        stack,
                        bytes,
                        count,
                    }
                }),
                0..4
            )
        )
            .prop_map(|(pid, rss_bytes, by_stack)| {
                EventBody::AllocSnapshot(AllocSnapshot {
                    pid,
                    rss_bytes,
                    by_stack,
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(pid, tid, cpu, user_stack, kernel_stack)| {
                EventBody::CpuSample(CpuSample {
                    pid,
                    tid,
                    cpu,
                    user_stack,
                    kernel_stack,
                })
            }),
        (
            any::<u64>(),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(any::<u64>(), 0..6),
            proptest::collection::vec(arb_string(), 0..6)
        )
            .prop_map(|(id, pid, frames, symbols)| {
                EventBody::StackDef(StackDef {
                    id,
                    pid,
                    frames,
                    symbols,
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            arb_string(),
            any::<u64>(),
            arb_payload()
        )
            .prop_map(|(pid, tid, fd, path, size, payload)| {
                EventBody::Log(LogWrite {
                    pid,
                    tid,
                    fd,
                    path,
                    size,
                    payload,
                })
            }),
        (
            arb_kind(),
            any::<u32>(),
            any::<u64>(),
            prop_oneof![
                Just(LossReason::RingFull),
                Just(LossReason::MapFull),
                Just(LossReason::QueueFull),
                Just(LossReason::Sampled)
            ],
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(kind, cpu, count, reason, from_ns, to_ns)| {
                EventBody::Loss(LossMarker {
                    kind,
                    cpu,
                    count,
                    reason,
                    from_ns,
                    to_ns,
                })
            }),
        (
            prop_oneof![
                Just(MarkSource::User),
                Just(MarkSource::Signal),
                Just(MarkSource::Trigger)
            ],
            arb_string()
        )
            .prop_map(|(source, note)| EventBody::Mark(Mark { source, note })),
        (
            arb_string(),
            arb_string(),
            arb_string(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(
                |(name, hostname, kernel, boot_time_ns, mono_ns, wall_ns, cpus)| {
                    EventBody::Node(NodeInfo {
                        name,
                        hostname,
                        kernel,
                        boot_time_ns,
                        clock: ClockSync { mono_ns, wall_ns },
                        cpus,
                    })
                }
            ),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(pid, parent_tid, tid)| {
            EventBody::ThreadStart(ThreadStart {
                pid,
                parent_tid,
                tid,
            })
        }),
        (
            any::<u32>(),
            arb_string(),
            arb_string(),
            proptest::collection::vec(
                (any::<u64>(), any::<u64>(), arb_string())
                    .prop_map(|(offset, size, name)| Symbol { offset, size, name }),
                0..5
            )
        )
            .prop_map(|(id, build_id, path, symbols)| {
                EventBody::Binary(BinaryInfo {
                    id,
                    build_id,
                    path,
                    symbols,
                })
            }),
        (
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(
                (any::<u32>(), any::<u64>()).prop_map(|(binary, offset)| Frame { binary, offset }),
                0..6
            ),
            any::<bool>()
        )
            .prop_map(|(id, pid, frames, truncated)| {
                EventBody::UserStack(UserStack {
                    id,
                    pid,
                    frames,
                    truncated,
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(pid, tid, size, addr, period, stack)| {
                EventBody::HeapAlloc(HeapAlloc {
                    pid,
                    tid,
                    size,
                    addr,
                    period,
                    stack,
                })
            }),
        (any::<u32>(), any::<u32>(), any::<u64>())
            .prop_map(|(pid, tid, addr)| EventBody::HeapFree(HeapFree { pid, tid, addr })),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(pid, tid, blocked_ns, syscall, user_stack, kernel_stack)| {
                    EventBody::OffCpu(OffCpu {
                        pid,
                        tid,
                        blocked_ns,
                        syscall,
                        user_stack,
                        kernel_stack,
                    })
                }
            ),
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(pid, rss_anon, rss_file, rss_shmem)| {
                EventBody::MemUsage(MemUsage {
                    pid,
                    rss_anon,
                    rss_file,
                    rss_shmem,
                })
            }
        ),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(pid, tid, addr, weight, stack)| {
                EventBody::PageFault(PageFault {
                    pid,
                    tid,
                    addr,
                    weight,
                    stack,
                })
            }),
        (
            arb_string(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            any::<u64>()
        )
            .prop_map(|(cgroup, usage, limit, oom_kills)| {
                EventBody::CgroupMemory(CgroupMemory {
                    cgroup,
                    usage,
                    limit,
                    oom_kills,
                })
            }),
    ]
}

pub fn arb_event() -> impl Strategy<Value = Event> {
    (prop_oneof![0u64..1000, any::<u64>()], arb_body()).prop_map(|(ts, body)| Event { ts, body })
}

/// A header for tests.
pub fn header(seq: u64) -> SegmentHeader {
    SegmentHeader {
        capture_id: "test-capture".into(),
        seq,
        node: NodeInfo {
            name: "node-a".into(),
            hostname: "node-a.example".into(),
            kernel: "6.18.0".into(),
            boot_time_ns: 1_700_000_000_000_000_000,
            clock: ClockSync {
                mono_ns: 5,
                wall_ns: 1_700_000_000_000_000_005,
            },
            cpus: 2,
        },
        clock: ClockSync {
            mono_ns: 10,
            wall_ns: 1_700_000_000_000_000_010,
        },
        streams: vec!["tcp".into(), "l7".into()],
        ..SegmentHeader::default()
    }
}

/// A deterministic mix of events for damage tests: `n` events starting at `ts0`.
pub fn sample_events(ts0: u64, n: usize) -> Vec<Event> {
    let ep = |p| Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), p);
    (0..n)
        .map(|i| {
            let ts = ts0 + i as u64 * 1000;
            let conn = ConnId {
                pid: 100 + (i % 3) as u32,
                fd: 5,
                start_ns: ts0,
            };
            let body = if i % 2 == 0 {
                EventBody::Tcp(TcpEvent {
                    conn,
                    tid: conn.pid,
                    local: ep(40000 + i as u16),
                    remote: ep(80),
                    step: TcpStep::Established {
                        latency_ns: 1234 + i as u64,
                    },
                })
            } else {
                EventBody::L7(L7Message {
                    conn,
                    tid: conn.pid + 1,
                    direction: Direction::Egress,
                    size: 300,
                    payload: format!("GET /item/{i} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes(),
                    tcp_seq: Some(i as u32),
                    folded_calls: 0,
                    folded_bytes: 0,
                    local: ep(40000),
                    remote: ep(80),
                })
            };
            Event::new(ts, body)
        })
        .collect()
}

/// Reads every block of a reader, panicking on any error (for tests).
pub fn read_all(r: &SegmentReader) -> Vec<Event> {
    (0..r.blocks().len())
        .flat_map(|i| r.read_block(i).expect("block reads"))
        .collect()
}
