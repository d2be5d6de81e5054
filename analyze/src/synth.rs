//! Synthetic but realistic events, for tests, benchmarks and demonstrations: processes that
//! exec, listen, connect and exchange real HTTP/1.1 and RESP payloads on loopback, both sides
//! of each connection captured, in the order a capture would hold them.
//!
//! [`Synth`] builds events into a reorder buffer and hands them, in time order, to a sink
//! (a `Vec`, a capture writer, ...), so that very large streams need little memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use retrace_segment::{
    ClockSync, ConnId, Direction, Endpoint, Event, EventBody, L7Message, LossMarker, LossReason,
    Mark, MarkSource, NodeInfo, ProcExec, ProcFork, TcpEvent, TcpSample, TcpSampleKind, TcpStep,
    UdpMessage,
};

/// Wall-clock time of monotonic 0 in synthetic captures: 2026-11-24T06:00:00Z minus 1000 s.
pub const SYNTH_WALL_AT_MONO_ZERO: u64 = 1_795_500_000_000_000_000 - 1_000_000_000_000;

/// The clock of synthetic captures.
pub fn synth_clock() -> ClockSync {
    ClockSync {
        mono_ns: 0,
        wall_ns: SYNTH_WALL_AT_MONO_ZERO,
    }
}

/// The node facts of synthetic captures.
pub fn synth_node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.to_string(),
        hostname: name.to_string(),
        kernel: "6.18.0-synthetic".to_string(),
        boot_time_ns: SYNTH_WALL_AT_MONO_ZERO,
        clock: synth_clock(),
        cpus: 2,
    }
}

/// Where [`Synth`] hands its events.
pub trait Sink {
    /// Takes one event.
    fn put(&mut self, ev: Event);
}

impl Sink for Vec<Event> {
    fn put(&mut self, ev: Event) {
        self.push(ev);
    }
}

/// A [`Sink`] calling a closure.
pub struct FnSink<F: FnMut(Event)>(pub F);

impl<F: FnMut(Event)> Sink for FnSink<F> {
    fn put(&mut self, ev: Event) {
        (self.0)(ev)
    }
}

/// An established connection between two captured processes.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    /// The client's socket.
    pub client: ConnId,
    /// The server's socket.
    pub server: ConnId,
    /// Client endpoint.
    pub client_ep: Endpoint,
    /// Server endpoint.
    pub server_ep: Endpoint,
}

/// Builds events; see the module docs.
pub struct Synth<S: Sink> {
    sink: S,
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: Vec<Option<Event>>,
    free: Vec<usize>,
    seq: u64,
    next_fd: i32,
    next_port: u16,
    /// Largest timestamp pushed so far.
    horizon: u64,
}

fn lo(port: u16) -> Endpoint {
    Endpoint::new(std::net::Ipv4Addr::LOCALHOST, port)
}

impl<S: Sink> Synth<S> {
    /// A builder handing events to `sink` in time order.
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
            next_fd: 10,
            next_port: 40000,
            horizon: 0,
        }
    }

    /// Queues an event.
    pub fn push(&mut self, ev: Event) {
        self.horizon = self.horizon.max(ev.ts);
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(ev);
                i
            }
            None => {
                self.slots.push(Some(ev));
                self.slots.len() - 1
            }
        };
        let ts = self.slots[slot].as_ref().map_or(0, |e| e.ts);
        self.heap.push(Reverse((ts, self.seq, slot)));
        self.seq += 1;
    }

    /// Hands every queued event older than `ts` to the sink.
    pub fn flush_before(&mut self, ts: u64) {
        while let Some(Reverse((t, _, slot))) = self.heap.peek().copied() {
            if t >= ts {
                break;
            }
            self.heap.pop();
            if let Some(ev) = self.slots[slot].take() {
                self.free.push(slot);
                self.sink.put(ev);
            }
        }
    }

    /// Hands every queued event to the sink and returns it.
    pub fn finish(mut self) -> S {
        self.flush_before(u64::MAX);
        self.sink
    }

    /// A process exec.
    pub fn exec(&mut self, ts: u64, pid: u32, ppid: u32, exe: &str, cmdline: &[&str]) {
        let base = exe.rsplit('/').next().unwrap_or(exe);
        // As the kernel shows them: Debian's python3.11 runs with comm `python3`.
        let comm: String = if base.starts_with("python3") {
            "python3".to_string()
        } else {
            base.chars().take(15).collect()
        };
        self.push(Event::new(
            ts,
            EventBody::ProcExec(ProcExec {
                pid,
                ppid,
                comm,
                exe: exe.to_string(),
                cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
                cgroup: "/user.slice/user-0.slice/session-1.scope".to_string(),
                container_id: None,
            }),
        ));
    }

    /// A fork (the child runs the parent's program).
    pub fn fork(&mut self, ts: u64, parent: u32, child: u32, comm: &str) {
        self.push(Event::new(
            ts,
            EventBody::ProcFork(ProcFork {
                parent_pid: parent,
                child_pid: child,
                comm: comm.into(),
            }),
        ));
    }

    fn fd(&mut self) -> i32 {
        self.next_fd += 1;
        self.next_fd
    }

    /// A listening socket on 127.0.0.1:`port`.
    pub fn listen(&mut self, ts: u64, pid: u32, port: u16) {
        let fd = self.fd();
        self.push(Event::new(
            ts,
            EventBody::Tcp(TcpEvent {
                conn: ConnId {
                    pid,
                    fd,
                    start_ns: ts,
                },
                tid: pid,
                local: lo(port),
                remote: Endpoint::default(),
                step: TcpStep::ListenOpen,
            }),
        ));
    }

    fn tcp(&mut self, ts: u64, conn: ConnId, local: Endpoint, remote: Endpoint, step: TcpStep) {
        self.push(Event::new(
            ts,
            EventBody::Tcp(TcpEvent {
                conn,
                tid: conn.pid,
                local,
                remote,
                step,
            }),
        ));
    }

    /// `client_pid` connects to 127.0.0.1:`port` where `server_pid` accepts (50 µs later).
    pub fn connect(&mut self, ts: u64, client_pid: u32, server_pid: u32, port: u16) -> Conn {
        self.next_port = if self.next_port >= 60999 {
            40000
        } else {
            self.next_port + 1
        };
        let from = self.next_port;
        self.connect_from(ts, client_pid, from, server_pid, port)
    }

    /// Like [`Synth::connect`], from the client port `from` (to reuse a 4-tuple, as busy
    /// nodes do when ephemeral ports run around).
    pub fn connect_from(
        &mut self,
        ts: u64,
        client_pid: u32,
        from: u16,
        server_pid: u32,
        port: u16,
    ) -> Conn {
        let client_ep = lo(from);
        let server_ep = lo(port);
        let client = ConnId {
            pid: client_pid,
            fd: self.fd(),
            start_ns: ts,
        };
        let server = ConnId {
            pid: server_pid,
            fd: self.fd(),
            start_ns: ts + 50_000,
        };
        self.tcp(
            ts,
            client,
            Endpoint::default(),
            server_ep,
            TcpStep::ConnectAttempt,
        );
        self.tcp(
            ts + 40_000,
            client,
            client_ep,
            server_ep,
            TcpStep::Established { latency_ns: 40_000 },
        );
        self.tcp(ts + 50_000, server, server_ep, client_ep, TcpStep::Accepted);
        Conn {
            client,
            server,
            client_ep,
            server_ep,
        }
    }

    /// Like [`Synth::connect_from`], but the capture saw no `Established` of the client: its
    /// connect attempt knows its address but not yet its port (`127.0.0.1:0`, as the kernel
    /// reports it at SYN_SENT).
    pub fn connect_unconfirmed(
        &mut self,
        ts: u64,
        client_pid: u32,
        from: u16,
        server_pid: u32,
        port: u16,
    ) -> Conn {
        let client_ep = lo(from);
        let server_ep = lo(port);
        let client = ConnId {
            pid: client_pid,
            fd: self.fd(),
            start_ns: ts,
        };
        let server = ConnId {
            pid: server_pid,
            fd: self.fd(),
            start_ns: ts + 50_000,
        };
        self.tcp(ts, client, lo(0), server_ep, TcpStep::ConnectAttempt);
        self.tcp(ts + 50_000, server, server_ep, client_ep, TcpStep::Accepted);
        Conn {
            client,
            server,
            client_ep,
            server_ep,
        }
    }

    /// `client_pid` starts connecting to 127.0.0.1:`port` (its socket, before any port is bound).
    fn attempt(&mut self, ts: u64, client_pid: u32, port: u16) -> ConnId {
        let client = ConnId {
            pid: client_pid,
            fd: self.fd(),
            start_ns: ts,
        };
        self.tcp(
            ts,
            client,
            Endpoint::default(),
            lo(port),
            TcpStep::ConnectAttempt,
        );
        client
    }

    /// A connection attempt to 127.0.0.1:`port` refused (no listener).
    pub fn refused(&mut self, ts: u64, client_pid: u32, port: u16) {
        let client = self.attempt(ts, client_pid, port);
        self.tcp(
            ts + 30_000,
            client,
            Endpoint::default(),
            lo(port),
            TcpStep::Failed {
                errno: 111,
                latency_ns: 30_000,
            },
        );
    }

    /// A connection attempt from 127.0.0.1:`from` to 127.0.0.1:`port` that times out after
    /// `syn_retries` SYN retransmits (one a second, softirq context: no pid).
    pub fn timed_out(&mut self, ts: u64, client_pid: u32, from: u16, port: u16, syn_retries: u64) {
        let client = self.attempt(ts, client_pid, port);
        for k in 1..=syn_retries {
            self.push(Event::new(
                ts + k * 1_000_000_000,
                EventBody::TcpSample(TcpSample {
                    what: TcpSampleKind::Retransmit,
                    local: lo(from),
                    remote: lo(port),
                    state: 2, // SYN_SENT
                    srtt_us: 0,
                    pid: None,
                }),
            ));
        }
        let end = ts + (syn_retries + 1) * 1_000_000_000;
        self.tcp(
            end,
            client,
            lo(from),
            lo(port),
            TcpStep::Failed {
                errno: 110,
                latency_ns: end - ts,
            },
        );
    }

    /// A connect from local port `from` whose SYN is sent again 10 ms later and then refused
    /// (its port reused at full speed); the failure, as the kernel reports it, no longer
    /// knows the local port (`127.0.0.1:0`). Another connect opens and is refused meanwhile.
    pub fn refused_after_syn_retry(&mut self, ts: u64, client_pid: u32, from: u16, port: u16) {
        let client = self.attempt(ts, client_pid, port);
        let other = self.attempt(ts + 2_000_000, client_pid, port);
        self.tcp(
            ts + 2_015_000,
            other,
            lo(0),
            lo(port),
            TcpStep::Failed {
                errno: 111,
                latency_ns: 15_000,
            },
        );
        self.push(Event::new(
            ts + 10_000_000,
            EventBody::TcpSample(TcpSample {
                what: TcpSampleKind::Retransmit,
                local: lo(from),
                remote: lo(port),
                state: 2, // SYN_SENT
                srtt_us: 0,
                pid: Some(client_pid),
            }),
        ));
        self.tcp(
            ts + 10_010_000,
            client,
            lo(0),
            lo(port),
            TcpStep::Failed {
                errno: 111,
                latency_ns: 10_010_000,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn l7(
        &mut self,
        ts: u64,
        conn: ConnId,
        dir: Direction,
        local: Endpoint,
        remote: Endpoint,
        payload: &[u8],
        size: u64,
    ) {
        self.l7_on(ts, conn, conn.pid, dir, local, remote, payload, size);
    }

    /// One message of `c` on thread `tid`: written (`egress`) or read by the client's end
    /// (`client_end`) or the server's.
    pub fn message(
        &mut self,
        c: &Conn,
        ts: u64,
        client_end: bool,
        egress: bool,
        tid: u32,
        payload: &[u8],
    ) {
        let (conn, local, remote) = if client_end {
            (c.client, c.client_ep, c.server_ep)
        } else {
            (c.server, c.server_ep, c.client_ep)
        };
        let dir = if egress {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let size = payload.len() as u64;
        self.l7_on(ts, conn, tid, dir, local, remote, payload, size);
    }

    #[allow(clippy::too_many_arguments)]
    fn l7_on(
        &mut self,
        ts: u64,
        conn: ConnId,
        tid: u32,
        dir: Direction,
        local: Endpoint,
        remote: Endpoint,
        payload: &[u8],
        size: u64,
    ) {
        self.push(Event::new(
            ts,
            EventBody::L7(L7Message {
                conn,
                tid,
                direction: dir,
                size,
                payload: payload.to_vec(),
                tcp_seq: None,
                folded_calls: 0,
                folded_bytes: 0,
                local,
                remote,
            }),
        ));
    }

    /// One request/response: the client writes at `ts`, the server reads 20 µs later, answers
    /// `server_latency_ns` after reading, the client reads 20 µs after that. Payloads are
    /// prefixes of `req_size`/`resp_size` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn exchange(
        &mut self,
        c: &Conn,
        ts: u64,
        req: &[u8],
        req_size: u64,
        resp: &[u8],
        resp_size: u64,
        server_latency_ns: u64,
    ) {
        let (ce, se) = (c.client_ep, c.server_ep);
        self.l7(ts, c.client, Direction::Egress, ce, se, req, req_size);
        self.l7(
            ts + 20_000,
            c.server,
            Direction::Ingress,
            se,
            ce,
            req,
            req_size,
        );
        let t = ts + 20_000 + server_latency_ns;
        self.l7(t, c.server, Direction::Egress, se, ce, resp, resp_size);
        self.l7(
            t + 20_000,
            c.client,
            Direction::Ingress,
            ce,
            se,
            resp,
            resp_size,
        );
    }

    /// A request the client writes at `ts` and the server reads 20 µs later, with no response
    /// (yet).
    pub fn request(&mut self, c: &Conn, ts: u64, req: &[u8], req_size: u64) {
        let (ce, se) = (c.client_ep, c.server_ep);
        self.l7(ts, c.client, Direction::Egress, ce, se, req, req_size);
        self.l7(
            ts + 20_000,
            c.server,
            Direction::Ingress,
            se,
            ce,
            req,
            req_size,
        );
    }

    /// A request the server answers `server_latency_ns` after reading it, while the client
    /// never reads the answer (it closes first: its process dies, or it gives up).
    pub fn answered_unread(
        &mut self,
        c: &Conn,
        ts: u64,
        req: &[u8],
        resp: &[u8],
        server_latency_ns: u64,
    ) {
        self.request(c, ts, req, req.len() as u64);
        let (ce, se) = (c.client_ep, c.server_ep);
        let t = ts + 20_000 + server_latency_ns;
        self.l7(
            t,
            c.server,
            Direction::Egress,
            se,
            ce,
            resp,
            resp.len() as u64,
        );
    }

    /// The client receives a reset from the server (softirq context: no pid).
    pub fn reset_to_client(&mut self, ts: u64, c: &Conn) {
        self.push(Event::new(
            ts,
            EventBody::TcpSample(TcpSample {
                what: TcpSampleKind::ResetReceived,
                local: c.client_ep,
                remote: c.server_ep,
                state: 1,
                srtt_us: 80,
                pid: None,
            }),
        ));
    }

    /// Both sides close.
    pub fn close(&mut self, c: &Conn, ts: u64, client_sent: u64, client_received: u64) {
        self.tcp(
            ts,
            c.client,
            c.client_ep,
            c.server_ep,
            TcpStep::Closed {
                bytes_sent: client_sent,
                bytes_received: client_received,
            },
        );
        self.tcp(
            ts + 10_000,
            c.server,
            c.server_ep,
            c.client_ep,
            TcpStep::Closed {
                bytes_sent: client_received,
                bytes_received: client_sent,
            },
        );
    }

    /// The server closes (its process died, it gave up), the client 10 µs later.
    pub fn server_closes(&mut self, c: &Conn, ts: u64, client_sent: u64, client_received: u64) {
        self.tcp(
            ts,
            c.server,
            c.server_ep,
            c.client_ep,
            TcpStep::Closed {
                bytes_sent: client_received,
                bytes_received: client_sent,
            },
        );
        self.tcp(
            ts + 10_000,
            c.client,
            c.client_ep,
            c.server_ep,
            TcpStep::Closed {
                bytes_sent: client_sent,
                bytes_received: client_received,
            },
        );
    }

    /// More bytes of a response (its body): the server writes them at `ts`, the client reads
    /// them 20 µs later.
    pub fn response_more(&mut self, c: &Conn, ts: u64, bytes: &[u8]) {
        let (ce, se) = (c.client_ep, c.server_ep);
        let n = bytes.len() as u64;
        self.l7(ts, c.server, Direction::Egress, se, ce, bytes, n);
        self.l7(ts + 20_000, c.client, Direction::Ingress, ce, se, bytes, n);
    }

    /// A retransmit by the server's socket of the connection (softirq context: no pid).
    pub fn retransmit(&mut self, ts: u64, c: &Conn) {
        self.retransmit_by(ts, c, false);
    }

    /// A retransmit by the client's (`client`) or the server's socket of the connection.
    pub fn retransmit_by(&mut self, ts: u64, c: &Conn, client: bool) {
        let (local, remote) = if client {
            (c.client_ep, c.server_ep)
        } else {
            (c.server_ep, c.client_ep)
        };
        self.push(Event::new(
            ts,
            EventBody::TcpSample(TcpSample {
                what: TcpSampleKind::Retransmit,
                local,
                remote,
                state: 1,
                srtt_us: 80,
                pid: None,
            }),
        ));
    }

    /// The server's listener sends the connection's SYN-ACK again (taken on the request
    /// socket: NEW_SYN_RECV, owned by the listener's process).
    pub fn synack_retransmit(&mut self, ts: u64, c: &Conn, server_pid: u32) {
        self.push(Event::new(
            ts,
            EventBody::TcpSample(TcpSample {
                what: TcpSampleKind::SynAckRetransmit,
                local: c.server_ep,
                remote: c.client_ep,
                state: 12,
                srtt_us: 0,
                pid: Some(server_pid),
            }),
        ));
    }

    /// The socket sampler finds the client's (`client`) or the server's socket of the
    /// connection unable to send: its peer advertises a zero window.
    pub fn zero_window(&mut self, ts: u64, c: &Conn, client: bool, pid: u32) {
        let (local, remote) = if client {
            (c.client_ep, c.server_ep)
        } else {
            (c.server_ep, c.client_ep)
        };
        self.push(Event::new(
            ts,
            EventBody::TcpSample(TcpSample {
                what: TcpSampleKind::ZeroWindow,
                local,
                remote,
                state: 1,
                srtt_us: 0,
                pid: Some(pid),
            }),
        ));
    }

    /// A DNS query and its answer (`name` → `addr`) over UDP.
    pub fn dns(&mut self, ts: u64, pid: u32, name: &str, addr: std::net::Ipv4Addr) {
        self.dns_on(ts, pid, pid, name, addr);
    }

    /// A DNS lookup like [`Synth::dns`], by thread `tid` of `pid`.
    pub fn dns_on(&mut self, ts: u64, pid: u32, tid: u32, name: &str, addr: std::net::Ipv4Addr) {
        let server = Endpoint::new(std::net::Ipv4Addr::new(127, 0, 0, 53), 53);
        let local = lo(45000);
        let (q, r) = dns_packets(0x1234, name, addr);
        for (t, dir, p) in [
            (ts, Direction::Egress, q),
            (ts + 300_000, Direction::Ingress, r),
        ] {
            self.push(Event::new(
                t,
                EventBody::Udp(UdpMessage {
                    pid,
                    tid,
                    direction: dir,
                    local,
                    remote: server,
                    size: p.len() as u64,
                    payload: p,
                }),
            ));
        }
    }

    /// A loss marker.
    pub fn loss(&mut self, ts: u64, kind: retrace_segment::EventKind, count: u64) {
        self.push(Event::new(
            ts,
            EventBody::Loss(LossMarker {
                kind,
                cpu: 0,
                count,
                reason: LossReason::RingFull,
                from_ns: ts.saturating_sub(1_000_000),
                to_ns: ts,
            }),
        ));
    }

    /// A user mark.
    pub fn mark(&mut self, ts: u64, note: &str) {
        self.push(Event::new(
            ts,
            EventBody::Mark(Mark {
                source: MarkSource::User,
                note: note.into(),
            }),
        ));
    }
}

/// A DNS query for `name` (type A) and a response answering `addr`, as wire bytes.
pub fn dns_packets(id: u16, name: &str, addr: std::net::Ipv4Addr) -> (Vec<u8>, Vec<u8>) {
    let mut qname = Vec::new();
    for label in name.split('.') {
        qname.push(label.len().min(63) as u8);
        qname.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    qname.push(0);
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&qname);
    q.extend_from_slice(&[0, 1, 0, 1]);
    let mut r = Vec::new();
    r.extend_from_slice(&id.to_be_bytes());
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(&qname);
    r.extend_from_slice(&[0, 1, 0, 1]);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&addr.octets());
    (q, r)
}

/// Parameters of [`shop`].
#[derive(Clone, Debug)]
pub struct ShopOptions {
    /// Requests sent by the load generator to nginx.
    pub requests: u64,
    /// Requests per second.
    pub rate: u64,
    /// One request path carries this string (e.g. an XSS attempt) when set.
    pub odd_path: Option<String>,
    /// Every n-th request to the second backend fails with a 500 (0: never).
    pub error_every: u64,
}

impl Default for ShopOptions {
    fn default() -> Self {
        Self {
            requests: 2000,
            rate: 200,
            odd_path: None,
            error_every: 10,
        }
    }
}

/// Stable pseudo-random numbers (xorshift), so synthetic captures are reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The demonstration stack, all on loopback: `wrk` → nginx (master + 2 workers, :8080) →
/// two Python backends (`app.py` on :18081 and :18082) → redis-server (:6379); `curl` hitting
/// a stopped backend on :18083 (refused). Returns the sink.
pub fn shop<S: Sink>(sink: S, opts: &ShopOptions) -> S {
    let mut s = Synth::new(sink);
    let t0 = 1_000_000_000_000u64; // mono ns: 1000 s after boot
    s.push(Event::new(t0, EventBody::Node(synth_node("node-a"))));
    s.exec(
        t0 + 1_000,
        200,
        1,
        "/usr/sbin/nginx",
        &["nginx: master process /usr/sbin/nginx"],
    );
    s.listen(t0 + 2_000, 200, 8080);
    for w in [201, 202] {
        s.fork(t0 + 3_000, 200, w, "nginx");
    }
    s.exec(
        t0 + 4_000,
        300,
        1,
        "/usr/bin/python3.11",
        &["python3", "app.py", "--port", "18081"],
    );
    s.listen(t0 + 5_000, 300, 18081);
    s.exec(
        t0 + 6_000,
        310,
        1,
        "/usr/bin/python3.11",
        &["python3", "app.py", "--port", "18082"],
    );
    s.listen(t0 + 7_000, 310, 18082);
    s.exec(
        t0 + 8_000,
        400,
        1,
        "/usr/bin/redis-server",
        &["redis-server", "*:6379"],
    );
    s.listen(t0 + 9_000, 400, 6379);
    s.exec(
        t0 + 10_000,
        100,
        1,
        "/usr/bin/wrk",
        &["wrk", "-c4", "http://127.0.0.1:8080/"],
    );
    s.exec(
        t0 + 11_000,
        110,
        1,
        "/usr/bin/curl",
        &["curl", "http://127.0.0.1:18083/health"],
    );
    s.dns(
        t0 + 12_000,
        300,
        "cache.internal",
        std::net::Ipv4Addr::new(10, 0, 0, 9),
    );

    let start = t0 + 1_000_000;
    // Persistent connections: wrk → each worker, each worker → each backend, backends → redis.
    let front: Vec<Conn> = (0..4)
        .map(|i| s.connect(start + i * 1000, 100, 201 + (i % 2) as u32, 8080))
        .collect();
    let back: Vec<Conn> = (0..4)
        .map(|i| {
            let (pid, port) = if i % 2 == 0 {
                (300, 18081)
            } else {
                (310, 18082)
            };
            s.connect(start + 10_000 + i * 1000, 201 + (i / 2) as u32, pid, port)
        })
        .collect();
    let cache: Vec<Conn> = [300u32, 310]
        .iter()
        .map(|&p| s.connect(start + 20_000, p, 400, 6379))
        .collect();
    let mut rng = Rng::new(42);
    let gap = 1_000_000_000 / opts.rate.max(1);
    let mut t = start + 1_000_000;
    let mut sent = [0u64; 16];
    let mut received = [0u64; 16];
    let mut backend_calls = [0u64; 2];
    for i in 0..opts.requests {
        let user = rng.below(5000);
        let path = match (&opts.odd_path, i) {
            (Some(p), 7) => p.clone(),
            _ if i % 5 == 0 => format!("/api/orders/{}", rng.below(100000)),
            _ => format!("/api/users/{user}"),
        };
        let fc = i as usize % front.len();
        // The worker serving this front connection, and one of its two backend connections.
        let bc = 2 * (fc % 2) + (i as usize / 4) % 2;
        let b = &back[bc];
        let which = bc % 2; // 0: :18081, 1: :18082
        backend_calls[which] += 1;
        let fail = which == 1 && opts.error_every > 0 && backend_calls[1] % opts.error_every == 0;
        let redis_lat = 80_000 + rng.below(120_000);
        let app_lat =
            2_000_000 + rng.below(6_000_000) + if rng.below(100) == 0 { 40_000_000 } else { 0 };
        // Timeline: wrk writes at t; nginx reads at t+20µs, writes upstream at t+60µs; the
        // backend reads 20µs later, calls redis, answers; nginx answers wrk.
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
        );
        let up_req = format!(
            "GET {path} HTTP/1.1\r\nHost: backend\r\nConnection: keep-alive\r\nUser-Agent: wrk\r\n\r\n"
        );
        let body = if fail {
            "{\"error\":\"internal\"}"
        } else {
            "{\"id\":1,\"name\":\"x\"}"
        };
        let status = if fail {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let app_resp = format!(
            "HTTP/1.1 {status}\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let resp = format!(
            "HTTP/1.1 {status}\r\nServer: nginx/1.22.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        let key = format!("user:{user}");
        let redis_req = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        let redis_resp = b"$20\r\n{\"id\":1,\"name\":\"x\"}\r\n";
        let backend_total = 20_000 + redis_lat + 40_000 + app_lat;
        let nginx_total = 40_000 + backend_total + 40_000;
        s.exchange(
            &front[fc],
            t,
            req.as_bytes(),
            req.len() as u64,
            resp.as_bytes(),
            resp.len() as u64,
            nginx_total,
        );
        s.exchange(
            b,
            t + 60_000,
            up_req.as_bytes(),
            up_req.len() as u64,
            app_resp.as_bytes(),
            app_resp.len() as u64,
            backend_total,
        );
        s.exchange(
            &cache[which],
            t + 100_000,
            redis_req.as_bytes(),
            redis_req.len() as u64,
            redis_resp,
            redis_resp.len() as u64,
            redis_lat,
        );
        sent[fc] += req.len() as u64;
        received[fc] += resp.len() as u64;
        if i % 997 == 13 {
            s.retransmit(t + 30_000, b);
        }
        if i % 500 == 250 {
            s.refused(t + 5_000, 110, 18083);
        }
        t += gap / 2 + rng.below(gap);
        s.flush_before(t.saturating_sub(200_000_000));
    }
    let end = t + 100_000_000;
    for (i, c) in front.iter().enumerate() {
        s.close(c, end, sent[i], received[i]);
    }
    for c in back.iter().chain(cache.iter()) {
        s.close(c, end + 100_000, 0, 0);
    }
    s.mark(end + 200_000, "synthetic run done");
    s.finish()
}

/// A [`Sink`] appending to a capture; the first error is kept and later events are dropped.
pub struct CaptureSink {
    writer: retrace_segment::CaptureWriter,
    /// Events appended.
    pub events: u64,
    error: Option<retrace_segment::SegmentError>,
}

impl CaptureSink {
    /// Appends to `writer`.
    pub fn new(writer: retrace_segment::CaptureWriter) -> Self {
        Self {
            writer,
            events: 0,
            error: None,
        }
    }

    /// Closes the capture: the events written, or the first error.
    pub fn close(self) -> Result<u64, retrace_segment::SegmentError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.writer.close()?;
        Ok(self.events)
    }
}

impl Sink for CaptureSink {
    fn put(&mut self, ev: Event) {
        if self.error.is_none() {
            match self.writer.append(ev) {
                Ok(()) => self.events += 1,
                Err(e) => self.error = Some(e),
            }
        }
    }
}

/// Writes the [`shop`] stack as a capture directory at `dir` (node `node-a`); returns the
/// number of events written.
pub fn write_shop_capture(
    dir: &std::path::Path,
    opts: &ShopOptions,
) -> Result<u64, retrace_segment::SegmentError> {
    let copts = retrace_segment::CaptureOptions {
        dir: dir.to_path_buf(),
        node: synth_node("node-a"),
        streams: vec!["tcp".into(), "l7".into(), "proc".into()],
        ..Default::default()
    };
    let writer = retrace_segment::CaptureWriter::create(copts, Default::default())?;
    let sink = shop(
        CaptureSink {
            writer,
            events: 0,
            error: None,
        },
        opts,
    );
    if let Some(e) = sink.error {
        return Err(e);
    }
    let events = sink.events;
    sink.writer.close()?;
    Ok(events)
}
