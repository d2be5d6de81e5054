//! The streaming part of an analysis: events in (time order per node), connection sides,
//! exchanges, processes and DNS names accumulated; [`Analyzer::finish`] resolves services,
//! joins the two ends of connections (by 4-tuple and time: [`crate::join`]) and aggregates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use retrace_segment::{
    Addr, ConnId, Direction, Endpoint, Event, EventBody, EventKind, NodeInfo, ProcessInfo,
    StateSnapshot, TcpSample, TcpSampleKind, TcpStep,
};

use crate::join::{self, Connections, Facts, Opened, Sample, SampleKind, Span};
use crate::l7::{self, Parsed};
use crate::model::{
    Analysis, Ends, EndsIds, NodeSummary, PayloadStats, RequestRow, SpanFacts, EMPTY, NO_LATENCY,
};
use crate::services::{unit_of_cgroup, ProcessFacts, ServicesFile};
use crate::stats;
use crate::traces::LinkIn;

/// Hash map with a fast, fixed-seed hasher (keys here are not attacker-chosen in a way that
/// matters: a capture is analyzed once, offline).
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Interns strings to `u32` ids; id 0 is the empty string. Keys of up to 24 bytes (most
/// methods, statuses, paths, routes) sit inline in the table: a lookup compares them without
/// another memory access.
#[derive(Debug)]
pub(crate) struct Interner {
    map: Map<l7::Text, u32>,
    pub(crate) strings: Vec<String>,
}

impl Default for Interner {
    fn default() -> Self {
        let mut i = Self {
            map: Map::default(),
            strings: Vec::new(),
        };
        i.intern("");
        i
    }
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.push(s.to_string());
        self.map.insert(l7::Text::from(s), id);
        id
    }

    pub(crate) fn map_get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }

    pub(crate) fn get(&self, id: u32) -> &str {
        self.strings
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// The last few strings interned for one field of few distinct values (methods, statuses,
/// routes): most exchanges repeat one of them, found without hashing.
#[derive(Default)]
struct RecentIds {
    slots: [(String, u32); 4],
    next: usize,
}

impl RecentIds {
    fn get(&mut self, strings: &mut Interner, s: &str) -> u32 {
        if let Some((_, id)) = self.slots.iter().find(|(k, id)| *id != 0 && k == s) {
            return *id;
        }
        let id = strings.intern(s);
        if id != EMPTY {
            let slot = &mut self.slots[self.next];
            slot.0.clear();
            slot.0.push_str(s);
            slot.1 = id;
            self.next = (self.next + 1) % self.slots.len();
        }
        id
    }
}

/// Caches in front of the interner for the fields of exchanges.
#[derive(Default)]
struct Recent {
    protocols: Vec<(&'static str, u32)>,
    method: RecentIds,
    route: RecentIds,
    status: RecentIds,
}

impl Recent {
    /// The slot of protocol `p` among those met (the parsers' static names: a dozen), for
    /// [`Ex::pack`]; its string id is [`Recent::protocol`]'s.
    fn protocol_slot(&mut self, strings: &mut Interner, p: &'static str) -> u8 {
        let slot = match self.protocols.iter().position(|(q, _)| std::ptr::eq(*q, p)) {
            Some(slot) => slot,
            None => {
                self.protocols.push((p, strings.intern(p)));
                self.protocols.len() - 1
            }
        };
        u8::try_from(slot).unwrap_or(u8::MAX)
    }

    /// The string id of the protocol in `slot`.
    fn protocol(&self, slot: u8) -> u32 {
        self.protocols.get(usize::from(slot)).map_or(EMPTY, |p| p.1)
    }
}

#[derive(Default, Debug, Clone)]
struct Proc {
    ppid: u32,
    comm: String,
    exe: String,
    cmdline: String,
    cgroup: String,
    container_id: Option<String>,
    ports: BTreeSet<u16>,
}

/// One side (one process's socket) of one TCP connection.
struct Side {
    node: u16,
    pid: u32,
    client: bool,
    local: Endpoint,
    remote: Endpoint,
    parser: Option<l7::Side>,
    protocol: Option<&'static str>,
    sent: u64,
    received: u64,
    closed_bytes: Option<(u64, u64)>,
    /// When the socket was opened (wall ns), exactly or at the latest.
    opened: Opened,
    /// When the socket was closed (wall ns).
    closed_at: Option<u64>,
    established: bool,
    failed: bool,
    /// Thread that connected (0 when not seen).
    tid: u32,
    /// The last message starts (time, thread) of this side, for the exchanges' threads
    /// (dropped when the side closes).
    starts: MessageThreads,
    /// Bytes per second it carried: (second since the epoch, sent, received), for tcp.csv
    /// (one entry per second with traffic).
    traffic: Vec<(u64, u64, u64)>,
    /// Its exchanges, in the order they completed (in time order once
    /// [`Analyzer::sort_exchanges`] ran); let go once its rows are made.
    exchanges: Vec<Ex>,
}

/// The threads of a side's recent message starts: an exchange's request and response start
/// with a message, found here by time. A ring of the last [`MessageThreads::CAP`].
#[derive(Default)]
struct MessageThreads {
    ring: Vec<(u64, u32)>,
    next: usize,
}

impl MessageThreads {
    const CAP: usize = 32;

    fn push(&mut self, ts: u64, tid: u32) {
        if self.ring.len() < Self::CAP {
            self.ring.push((ts, tid));
        } else {
            self.ring[self.next] = (ts, tid);
        }
        self.next = (self.next + 1) % Self::CAP;
    }

    /// The thread of the message that started at `ts`, 0 when forgotten.
    fn at(&self, ts: u64) -> u32 {
        self.ring
            .iter()
            .find(|&&(t, _)| t == ts)
            .map_or(0, |&(_, tid)| tid)
    }

    fn clear(&mut self) {
        self.ring = Vec::new();
        self.next = 0;
    }
}

/// A parsed exchange of one side, strings interned: 48 bytes, as the read keeps one per
/// exchange of the capture until the rows are made (the threads, the protocol and the flags
/// packed in one word, see [`Ex::pack`]).
#[derive(Clone, Copy)]
struct Ex {
    ts: u64,
    latency: u64,
    method: u32,
    target: u32,
    route: u32,
    status: u32,
    trace: u32,
    /// `X-Request-ID` (string id).
    request_id: u32,
    packed: u64,
}

/// Bits of a thread id in [`Ex::packed`]: Linux's ids stay below 2^22 (`PID_MAX_LIMIT`).
const EX_TID_BITS: u32 = 24;
const EX_TID_MASK: u64 = (1 << EX_TID_BITS) - 1;
const EX_PROTOCOL_SHIFT: u32 = 2 * EX_TID_BITS;
const EX_ERROR: u64 = 1 << 56;
const EX_CUT_OFF: u64 = 1 << 57;
const _: () = assert!(std::mem::size_of::<Ex>() == 48);

impl Ex {
    /// `packed`: `tid_request` (thread that wrote (client) or read (server) the request's
    /// first byte), `tid_response` (that read (client) or wrote (server) the response's),
    /// each 0 when unknown (or out of range); the protocol's slot in [`Recent`]; whether the
    /// exchange failed, and whether it was cut off (failed because its connection closed
    /// before any response byte: see `close_side`).
    fn pack(tid_request: u32, tid_response: u32, protocol: u8, error: bool, cut_off: bool) -> u64 {
        let tid = |t: u32| {
            Some(u64::from(t))
                .filter(|&t| t <= EX_TID_MASK)
                .unwrap_or(0)
        };
        tid(tid_request)
            | tid(tid_response) << EX_TID_BITS
            | u64::from(protocol) << EX_PROTOCOL_SHIFT
            | Self::flag_bits(error, cut_off)
    }

    /// The bits of the two flags.
    fn flag_bits(error: bool, cut_off: bool) -> u64 {
        (if error { EX_ERROR } else { 0 }) | if cut_off { EX_CUT_OFF } else { 0 }
    }

    fn tid_request(&self) -> u32 {
        (self.packed & EX_TID_MASK) as u32
    }

    fn tid_response(&self) -> u32 {
        (self.packed >> EX_TID_BITS & EX_TID_MASK) as u32
    }

    fn protocol_slot(&self) -> u8 {
        (self.packed >> EX_PROTOCOL_SHIFT) as u8
    }

    fn error(&self) -> bool {
        self.packed & EX_ERROR != 0
    }

    fn cut_off(&self) -> bool {
        self.packed & EX_CUT_OFF != 0
    }

    /// This exchange with `error` and `cut_off` set as given.
    fn with_flags(self, error: bool, cut_off: bool) -> Self {
        Ex {
            packed: self.packed & !Self::flag_bits(true, true) | Self::flag_bits(error, cut_off),
            ..self
        }
    }
}

struct Failure {
    node: u16,
    pid: u32,
    remote: Endpoint,
    ts: u64,
    errno: i32,
    /// The side of the attempt, when the capture saw its socket (its SYN retransmits are
    /// attributed to it).
    side: Option<u32>,
    /// Thread that connected, 0 when unknown.
    tid: u32,
}

/// A DNS query of a captured process, waiting for its response: keyed by
/// `(node, pid, local, remote, transaction id)`.
type DnsKey = (u16, u32, Endpoint, Endpoint, u16);

/// A DNS query seen from the client, answered or not.
struct DnsQuery {
    node: u16,
    pid: u32,
    tid: u32,
    /// The server (resolver) asked.
    remote: Endpoint,
    /// When the query was sent (wall ns).
    ts: u64,
    /// Query type and name (ids into the interner).
    qtype: u32,
    name: u32,
    /// Response code (`NOERROR`, `NXDOMAIN`...; interned), whether it is a failure, and the
    /// latency, once answered.
    answer: Option<(u32, bool, u64)>,
}

/// How long a DNS query may stay unanswered before the capture's end, for it to count as
/// failed (resolvers retry after 5 s by default).
const DNS_TIMEOUT_NS: u64 = 5_000_000_000;

/// Status of a DNS query never answered within [`DNS_TIMEOUT_NS`].
pub const DNS_NO_RESPONSE: &str = "no response (timeout)";

impl join::Request for Ex {
    fn method(&self) -> u32 {
        self.method
    }

    fn target(&self) -> u32 {
        self.target
    }
}

/// Whether a DNS response code is a failure of the resolver. `NXDOMAIN` is an answer (the
/// name does not exist), routine when search domains are tried, so it is not.
fn dns_failed(rcode: &str) -> bool {
    !matches!(rcode, "NOERROR" | "NXDOMAIN")
}

/// The name and kind of every process that took part, by (node, pid).
type Names = BTreeMap<(u16, u32), (String, String)>;

/// Ids of strings shared by the rows.
struct RowIds {
    /// Node names by node index.
    nodes: Vec<u32>,
    tcp: u32,
    connect: u32,
}

impl RowIds {
    fn node(&self, node: u16) -> u32 {
        self.nodes.get(usize::from(node)).copied().unwrap_or(EMPTY)
    }
}

/// What the rows of every connection side are made from, beside the sides themselves.
#[derive(Clone, Copy)]
struct SideFacts<'a> {
    conns: &'a Connections,
    facts: &'a Facts,
    /// `(client, server)` names of each side's ends (string ids).
    ends: &'a [(u32, u32)],
    ids: &'a RowIds,
    /// `(client, server)` addresses of each side's connection (string ids).
    addrs: &'a [(u32, u32)],
    /// The statuses of requests cut off by a close, when any was interned.
    closed_unanswered: Option<u32>,
    closed_incomplete: Option<u32>,
}

/// Request rows and connection rows, for the aggregation.
struct Rows {
    rows: Vec<RequestRow>,
    /// Whether each row is a request its server served (or, seen only from the client, was
    /// sent to serve); not a connection attempt that failed: that is a failed request of its
    /// caller only (`served[i]` is `rows[i]`'s).
    served: Vec<bool>,
    /// What the trace linker needs of each row beyond its spans (`links[i]` is `rows[i]`'s).
    links: Vec<LinkIn>,
    /// What the rows share, by [`RequestRow::ends`].
    ends: EndsIds,
    conns: Vec<stats::ConnRow>,
}

impl Rows {
    /// Adds `row`, whose ends are `ends`.
    fn push(&mut self, mut row: RequestRow, ends: Ends, served: bool, link: LinkIn) {
        row.ends = self.ends.id(ends);
        self.rows.push(row);
        self.served.push(served);
        self.links.push(link);
    }
}

/// Events lost, by kind and in all, and the completeness claimed.
struct Losses {
    dropped_by_kind: BTreeMap<String, u64>,
    dropped: u64,
    completeness: f64,
}

/// Consumes events and produces an [`Analysis`].
pub struct Analyzer {
    services_file: ServicesFile,
    /// Link spans into traces (see [`Analyzer::link_traces`]).
    traces: bool,
    nodes: Vec<NodeSummary>,
    procs: Map<(u16, u32), Proc>,
    conns: Map<(u16, ConnId), u32>,
    sides: Vec<Side>,
    failures: Vec<Failure>,
    /// Retransmits and resets received, attributed to their connections at the end (they
    /// carry a 4-tuple, not a socket).
    samples: Vec<Sample>,
    /// Intervals (node, from, to; wall ns) in which the capture lost L7 messages.
    l7_losses: Vec<(u16, u64, u64)>,
    dns_names: HashMap<IpAddr, String>,
    /// Threads started in processes with sockets: (node, pid, tid) → (wall ns, starting
    /// thread), for the trace linking's thread rule.
    spawns: Map<(u16, u32, u32), Vec<(u64, u32)>>,
    /// DNS queries of captured processes (client side), in the order they were sent.
    dns_queries: Vec<DnsQuery>,
    /// Queries waiting for their response (indexes into `dns_queries`).
    dns_pending: Map<DnsKey, usize>,
    strings: Interner,
    recent: Recent,
    parsed: Vec<Parsed>,
    payload: PayloadStats,
    events: u64,
    events_by_kind: BTreeMap<String, u64>,
    /// Events by kind (`EventKind as usize`), folded into `events_by_kind` at the end.
    kind_counts: [u64; 32],
    kinds_seen: Vec<EventKind>,
    dropped_by_kind: BTreeMap<String, u64>,
    window: Option<(u64, u64)>,
    marks: Vec<(u64, String)>,
    hint_endpoints: Option<(Endpoint, Endpoint)>,
    /// What the findings need beyond the rest (process lives, RTT): `crate::findings`.
    net: crate::findings::collect::Collector,
    /// Log writes split into events and patterns (crate::logs).
    logs: crate::logs::Collector,
    /// Thresholds of the findings engine.
    findings_config: crate::findings::FindingsConfig,
    /// Heap, CPU, off-CPU and memory samples: `crate::profiles`.
    profiles: crate::profiles::Collector,
}

/// Statistics carried from reading into the analysis.
#[derive(Default, Debug, Clone)]
pub struct ReadStats {
    /// Blocks that could not be read.
    pub damaged_blocks: u64,
    /// Segments missing on disk.
    pub missing_segments: Vec<String>,
    /// Drops reported by manifests (by kind), used when larger than the loss markers seen.
    pub manifest_dropped: BTreeMap<String, u64>,
    /// Problems, for the report.
    pub warnings: Vec<String>,
    /// Times a capture daemon stopped without closing its capture (killed, crashed): each
    /// lost the events it still held, uncounted.
    pub unclean_stops: u64,
    /// Clock offsets of the nodes, as the replay estimated them (several nodes only).
    pub clock_offsets: Vec<retrace_replay::ClockOffset>,
}

/// Status of a request whose connection was closed before any byte of its response arrived.
pub const NO_RESPONSE_CLOSED: &str = "no response (closed)";
/// Status of a request whose connection was reset before any byte of its response arrived.
pub const NO_RESPONSE_RESET: &str = "no response (reset)";
/// Status of a request whose response was cut off by its connection's close: the client's
/// kernel received fewer bytes than the response declared (the status line, not the body).
pub const INCOMPLETE_RESPONSE_CLOSED: &str = "incomplete response (closed)";
/// Status of a request whose response was cut off by a reset of its connection.
pub const INCOMPLETE_RESPONSE_RESET: &str = "incomplete response (reset)";

fn errno_name(errno: i32) -> String {
    match errno {
        111 => "ECONNREFUSED".into(),
        110 => "ETIMEDOUT".into(),
        104 => "ECONNRESET".into(),
        113 => "EHOSTUNREACH".into(),
        101 => "ENETUNREACH".into(),
        99 => "EADDRNOTAVAIL".into(),
        n => format!("errno {n}"),
    }
}

/// An endpoint not known yet: no port. A connect attempt knows its local address before its
/// port (`127.0.0.1:0` until the SYN leaves), so a side keeps looking for its port in later
/// events (established, messages, close): without it, it joins nothing.
fn is_unspecified(e: &Endpoint) -> bool {
    e.port == 0
}

impl Analyzer {
    /// A new analyzer using `services_file`'s rules and objectives.
    pub fn new(services_file: ServicesFile) -> Self {
        Self {
            services_file,
            traces: true,
            spawns: Map::default(),
            nodes: Vec::new(),
            procs: Map::default(),
            conns: Map::default(),
            sides: Vec::new(),
            failures: Vec::new(),
            samples: Vec::new(),
            l7_losses: Vec::new(),
            dns_names: HashMap::new(),
            dns_queries: Vec::new(),
            dns_pending: Map::default(),
            strings: Interner::default(),
            recent: Recent::default(),
            parsed: Vec::new(),
            payload: PayloadStats::default(),
            events: 0,
            events_by_kind: BTreeMap::new(),
            kind_counts: [0; 32],
            kinds_seen: Vec::new(),
            dropped_by_kind: BTreeMap::new(),
            window: None,
            marks: Vec::new(),
            hint_endpoints: None,
            net: Default::default(),
            logs: Default::default(),
            findings_config: Default::default(),
            profiles: Default::default(),
        }
    }

    /// The thresholds of the findings engine (Coroot's defaults otherwise).
    pub fn findings_config(&mut self, config: crate::findings::FindingsConfig) {
        self.findings_config = config;
    }

    /// The index of node `name`, registering it on first use.
    pub fn node(&mut self, name: &str) -> u16 {
        if let Some(i) = self.nodes.iter().position(|n| n.name == name) {
            return i as u16;
        }
        self.nodes.push(NodeSummary {
            name: name.to_string(),
            ..Default::default()
        });
        (self.nodes.len() - 1) as u16
    }

    /// Records facts about a node (hostname, kernel).
    pub fn node_info(&mut self, node: u16, info: &NodeInfo) {
        if let Some(n) = self.nodes.get_mut(usize::from(node)) {
            if n.hostname.is_empty() {
                n.hostname = info.hostname.clone();
            }
            if n.kernel.is_empty() {
                n.kernel = info.kernel.clone();
            }
        }
    }

    /// Seeds processes, listening sockets and open connections known at a segment's start.
    /// Entries already known are left alone.
    pub fn seed_state(&mut self, node: u16, state: &StateSnapshot, ts: u64) {
        for p in &state.processes {
            self.procs.entry((node, p.pid)).or_insert_with(|| Proc {
                ppid: p.ppid,
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                cmdline: p.cmdline.join(" "),
                cgroup: p.cgroup.clone(),
                container_id: p.container_id.clone(),
                ports: BTreeSet::new(),
            });
        }
        for l in &state.listening {
            self.procs
                .entry((node, l.pid))
                .or_default()
                .ports
                .insert(l.local.port);
        }
        for c in &state.connections {
            if !self.conns.contains_key(&(node, c.conn)) {
                self.new_side(node, c.conn, !c.inbound, c.local, c.remote, Opened::By(ts));
            }
        }
    }

    fn new_side(
        &mut self,
        node: u16,
        conn: ConnId,
        client: bool,
        local: Endpoint,
        remote: Endpoint,
        opened: Opened,
    ) -> u32 {
        let idx = self.sides.len() as u32;
        self.sides.push(Side {
            node,
            pid: conn.pid,
            client,
            local,
            remote,
            parser: Some(l7::Side::new(client)),
            protocol: None,
            sent: 0,
            received: 0,
            closed_bytes: None,
            opened,
            closed_at: None,
            established: !client,
            failed: false,
            tid: 0,
            starts: MessageThreads::default(),
            traffic: Vec::new(),
            exchanges: Vec::new(),
        });
        self.conns.insert((node, conn), idx);
        self.procs.entry((node, conn.pid)).or_default();
        idx
    }

    fn see_ts(&mut self, ts: u64) {
        self.window = Some(match self.window {
            None => (ts, ts),
            Some((a, b)) => (a.min(ts), b.max(ts)),
        });
    }

    /// Fills in what is missing about a process from the replay's process table (processes
    /// that started before the capture).
    pub fn process_hint(&mut self, node: u16, p: &ProcessInfo) {
        let e = self.procs.entry((node, p.pid)).or_default();
        if e.exe.is_empty() && e.comm.is_empty() {
            e.ppid = p.ppid;
            e.comm.clone_from(&p.comm);
            e.exe.clone_from(&p.exe);
            e.cmdline = p.cmdline.join(" ");
            e.cgroup.clone_from(&p.cgroup);
            e.container_id.clone_from(&p.container_id);
        }
    }

    /// Like [`Analyzer::push`], with the socket endpoints known from elsewhere (the replay's
    /// socket table) for L7 messages that do not carry them.
    pub fn push_with_endpoints(
        &mut self,
        node: u16,
        ts: u64,
        ev: &Event,
        endpoints: Option<(Endpoint, Endpoint)>,
    ) {
        self.hint_endpoints = endpoints;
        self.push(node, ts, ev);
        self.hint_endpoints = None;
    }

    /// Whether to link spans into traces (on by default).
    pub fn link_traces(&mut self, on: bool) {
        self.traces = on;
    }

    /// Feeds one event of `node`; `ts` is its wall-clock time (ns since the epoch). Events of
    /// one node must come in time order.
    pub fn push(&mut self, node: u16, ts: u64, ev: &Event) {
        self.events += 1;
        if let Some(n) = self.nodes.get_mut(usize::from(node)) {
            n.events += 1;
        }
        let kind = ev.kind();
        match self.kind_counts.get_mut(kind as usize) {
            Some(c) => {
                if *c == 0 {
                    self.kinds_seen.push(kind);
                }
                *c += 1;
            }
            None => {
                *self
                    .events_by_kind
                    .entry(kind.name().to_string())
                    .or_insert(0) += 1
            }
        }
        self.see_ts(ts);
        self.profiles.push(node, ts, ev);
        match &ev.body {
            EventBody::ProcExec(e) => {
                self.net.exec(node, e.pid, ts);
                let p = self.procs.entry((node, e.pid)).or_default();
                p.ppid = e.ppid;
                p.comm.clone_from(&e.comm);
                p.exe.clone_from(&e.exe);
                p.cmdline = e.cmdline.join(" ");
                p.cgroup.clone_from(&e.cgroup);
                p.container_id.clone_from(&e.container_id);
            }
            EventBody::ProcFork(e) => {
                let parent = self.procs.get(&(node, e.parent_pid)).cloned();
                let p = self.procs.entry((node, e.child_pid)).or_default();
                if let Some(parent) = parent {
                    p.exe = parent.exe;
                    p.cmdline = parent.cmdline;
                    p.cgroup = parent.cgroup;
                    p.container_id = parent.container_id;
                }
                p.ppid = e.parent_pid;
                p.comm.clone_from(&e.comm);
            }
            EventBody::ProcExit(e) => {
                self.net.exit(node, ts, e);
                self.logs.exit(node, e.pid);
                let p = self.procs.entry((node, e.pid)).or_default();
                if p.comm.is_empty() {
                    p.comm.clone_from(&e.comm);
                }
            }
            EventBody::Tcp(e) => self.tcp(node, ts, e),
            EventBody::L7(m) => {
                let key = (node, m.conn);
                let (mut local, mut remote) = (m.local, m.remote);
                if let Some((l, r)) = self.hint_endpoints {
                    if is_unspecified(&local) {
                        local = l;
                    }
                    if is_unspecified(&remote) {
                        remote = r;
                    }
                }
                let idx = match self.conns.get(&key) {
                    Some(&i) => i,
                    None => {
                        // A socket opened before the capture.
                        let client = !self.is_server_end(node, Some(m.conn.pid), &local, &remote);
                        self.payload.orphan_messages += 1;
                        self.new_side(node, m.conn, client, local, remote, Opened::By(ts))
                    }
                };
                let egress = m.direction == Direction::Egress;
                let side = &mut self.sides[idx as usize];
                if is_unspecified(&side.local) && !is_unspecified(&local) {
                    side.local = local;
                }
                if is_unspecified(&side.remote) && !is_unspecified(&remote) {
                    side.remote = remote;
                }
                side.starts.push(ts, m.tid);
                let total = m.size.saturating_add(m.folded_bytes);
                if egress {
                    side.sent = side.sent.saturating_add(total);
                } else {
                    side.received = side.received.saturating_add(total);
                }
                let (out_b, in_b) = if egress { (total, 0) } else { (0, total) };
                let sec = ts / 1_000_000_000;
                match side.traffic.last_mut() {
                    Some(t) if t.0 == sec => {
                        t.1 = t.1.saturating_add(out_b);
                        t.2 = t.2.saturating_add(in_b);
                    }
                    _ => side.traffic.push((sec, out_b, in_b)),
                }
                if let Some(parser) = side.parser.as_mut() {
                    parser.push(
                        ts,
                        egress,
                        m.size,
                        &m.payload,
                        m.folded_bytes,
                        &mut self.parsed,
                    );
                    if side.protocol.is_none() {
                        side.protocol = parser.protocol();
                    }
                }
                self.drain_parsed(idx, false);
            }
            EventBody::TcpSample(s) => self.tcp_sample(node, ts, s),
            EventBody::Log(w) => self.logs.push(node, ts, w),
            EventBody::Udp(u) => {
                if u.remote.port != 53 && u.local.port != 53 {
                    return;
                }
                match l7::parse_dns(&u.payload) {
                    Some(d) => {
                        self.payload.dns_messages += 1;
                        // The client's side of a query to a resolver: a request of an edge.
                        if u.remote.port == 53 {
                            let key = (node, u.pid, u.local, u.remote, d.id);
                            match (d.is_response, u.direction) {
                                (false, Direction::Egress) => {
                                    self.dns_pending.insert(key, self.dns_queries.len());
                                    let qtype = self.strings.intern(&d.qtype);
                                    let name = self.strings.intern(&d.name);
                                    self.dns_queries.push(DnsQuery {
                                        node,
                                        pid: u.pid,
                                        tid: u.tid,
                                        remote: u.remote,
                                        ts,
                                        qtype,
                                        name,
                                        answer: None,
                                    });
                                }
                                (true, Direction::Ingress) => {
                                    if let Some(i) = self.dns_pending.remove(&key) {
                                        let rcode = self.strings.intern(&d.rcode);
                                        let failed = dns_failed(&d.rcode);
                                        if let Some(q) = self.dns_queries.get_mut(i) {
                                            q.answer =
                                                Some((rcode, failed, ts.saturating_sub(q.ts)));
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        if d.is_response && !d.name.is_empty() {
                            for a in d.addrs {
                                self.dns_names.entry(a).or_insert_with(|| d.name.clone());
                            }
                        }
                    }
                    None => self.payload.dns_unparsed += 1,
                }
            }
            EventBody::Loss(l) => {
                if l.kind == EventKind::L7 {
                    // The interval is on the node's monotonic clock, like `ev.ts`.
                    let wall = |mono: u64| {
                        if ts >= ev.ts {
                            mono.saturating_add(ts - ev.ts)
                        } else {
                            mono.saturating_sub(ev.ts - ts)
                        }
                    };
                    self.l7_losses.push((
                        node,
                        wall(l.from_ns.min(l.to_ns)),
                        wall(l.to_ns.max(l.from_ns)),
                    ));
                }
                *self
                    .dropped_by_kind
                    .entry(l.kind.name().to_string())
                    .or_insert(0) += l.count;
            }
            EventBody::Mark(m) => self.marks.push((ts, m.note.clone())),
            EventBody::Node(n) => self.node_info(node, n),
            EventBody::OomKill(o) => self.net.oom(node, o.pid, ts),
            EventBody::ThreadStart(t) => self
                .spawns
                .entry((node, t.pid, t.tid))
                .or_default()
                .push((ts, t.parent_tid)),
            _ => {}
        }
    }

    /// Whether the end `local` of a connection whose opening the capture did not see is its
    /// server's: its process listens on the local port; failing that, the remote port is
    /// ephemeral and the local one is not.
    fn is_server_end(
        &self,
        node: u16,
        pid: Option<u32>,
        local: &Endpoint,
        remote: &Endpoint,
    ) -> bool {
        let listens = pid.is_some_and(|pid| {
            self.procs
                .get(&(node, pid))
                .is_some_and(|p| p.ports.contains(&local.port))
        });
        listens || (local.port < 32768 && remote.port >= 32768)
    }

    /// Keeps retransmits and resets received for [`Connections::tally`].
    fn tcp_sample(&mut self, node: u16, ts: u64, s: &TcpSample) {
        let kind = match s.what {
            TcpSampleKind::Retransmit => SampleKind::Retransmit,
            TcpSampleKind::ResetReceived => SampleKind::ResetReceived,
            TcpSampleKind::SynAckRetransmit => SampleKind::SynAckRetransmit,
            TcpSampleKind::ZeroWindow => SampleKind::ZeroWindow,
            TcpSampleKind::Rtt => {
                let server_side = self.is_server_end(node, s.pid, &s.local, &s.remote);
                self.net.rtt(node, ts, s, server_side);
                return;
            }
            TcpSampleKind::ResetSent => return,
        };
        self.samples.push(Sample {
            node,
            ts,
            kind,
            local: s.local,
            remote: s.remote,
            state: s.state,
            pid: s.pid,
        });
    }

    fn tcp(&mut self, node: u16, ts: u64, e: &retrace_segment::TcpEvent) {
        let key = (node, e.conn);
        match &e.step {
            TcpStep::ListenOpen => {
                self.net.listen(node, e.conn.pid, ts);
                self.procs
                    .entry((node, e.conn.pid))
                    .or_default()
                    .ports
                    .insert(e.local.port);
            }
            TcpStep::ListenClose => {}
            TcpStep::ConnectAttempt => {
                if !self.conns.contains_key(&key) {
                    let i = self.new_side(node, e.conn, true, e.local, e.remote, Opened::At(ts));
                    self.sides[i as usize].tid = e.tid;
                }
            }
            TcpStep::Established { latency_ns } => {
                let idx = match self.conns.get(&key) {
                    Some(&i) => i,
                    None => {
                        let at = Opened::At(ts.saturating_sub(*latency_ns));
                        self.new_side(node, e.conn, true, e.local, e.remote, at)
                    }
                };
                let s = &mut self.sides[idx as usize];
                s.established = true;
                if s.tid == 0 {
                    s.tid = e.tid;
                }
                s.local = e.local;
                if !is_unspecified(&e.remote) {
                    s.remote = e.remote;
                }
            }
            TcpStep::Failed { errno, .. } => {
                let side = self.conns.remove(&key);
                let mut tid = e.tid;
                let remote = match side {
                    Some(i) => {
                        let s = &mut self.sides[i as usize];
                        s.parser = None;
                        s.starts.clear();
                        if tid == 0 {
                            tid = s.tid;
                        }
                        s.failed = true;
                        // the port the attempt was sent from: its SYN retransmits carry it
                        if !is_unspecified(&e.local) {
                            s.local = e.local;
                        }
                        if is_unspecified(&e.remote) {
                            s.remote
                        } else {
                            e.remote
                        }
                    }
                    None => e.remote,
                };
                self.procs.entry((node, e.conn.pid)).or_default();
                self.failures.push(Failure {
                    node,
                    pid: e.conn.pid,
                    remote,
                    ts,
                    errno: *errno,
                    side,
                    tid,
                });
            }
            TcpStep::Accepted => {
                if !self.conns.contains_key(&key) {
                    self.new_side(node, e.conn, false, e.local, e.remote, Opened::At(ts));
                }
                self.procs
                    .entry((node, e.conn.pid))
                    .or_default()
                    .ports
                    .insert(e.local.port);
            }
            TcpStep::Closed {
                bytes_sent,
                bytes_received,
            } => {
                if let Some(idx) = self.conns.remove(&key) {
                    let s = &mut self.sides[idx as usize];
                    s.closed_bytes = Some((*bytes_sent, *bytes_received));
                    if is_unspecified(&s.local) {
                        s.local = e.local;
                    }
                    if is_unspecified(&s.remote) {
                        s.remote = e.remote;
                    }
                    self.close_side(idx, Some(ts));
                }
            }
        }
    }

    /// Ends a side's parsing. `closed`: the socket was closed (not merely still open when the
    /// capture ended), so requests still waiting for their first response byte never got one:
    /// they are failed requests, labelled [`NO_RESPONSE_CLOSED`] here and
    /// [`NO_RESPONSE_RESET`] at the end when their connection was reset after they were sent
    /// (see `label_resets`: resets are attributed to connections once all sides are known).
    fn close_side(&mut self, idx: u32, closed: Option<u64>) {
        let side = &mut self.sides[idx as usize];
        side.closed_at = closed;
        if let Some(parser) = side.parser.take() {
            if side.protocol.is_none() {
                side.protocol = parser.protocol();
            }
            let c = parser.counters();
            self.payload.messages += c.messages;
            self.payload.truncated += c.truncated;
            self.payload.unparsed += c.unparsed;
            if side.protocol.is_none() && c.messages > 0 {
                self.payload.unknown += c.messages;
                self.payload.unknown_connections += 1;
            }
            let from = self.parsed.len();
            parser.finish(&mut self.parsed);
            // What the client's kernel received over the connection: a response declaring
            // more was cut off. (Only on the client's side: a sender's own count may still
            // miss bytes in flight, and a server's `sendfile` body is no syscall we see.)
            let received = side
                .closed_bytes
                .filter(|_| side.client)
                .map(|(_, received)| received);
            if closed.is_some() {
                for x in &mut self.parsed[from..] {
                    if x.response_ts.is_none() {
                        x.error = true;
                        x.status = NO_RESPONSE_CLOSED.into();
                    } else if x
                        .response_end
                        .zip(received)
                        .is_some_and(|(end, received)| received < end)
                    {
                        x.error = true;
                        x.status = INCOMPLETE_RESPONSE_CLOSED.into();
                    }
                }
            }
            self.drain_parsed(idx, closed.is_some());
        }
        self.sides[idx as usize].starts.clear();
    }

    /// Interns the exchanges parsed for `side`; `closing`: they come from its close.
    fn drain_parsed(&mut self, side: u32, closing: bool) {
        if self.parsed.is_empty() {
            return;
        }
        let mut parsed = std::mem::take(&mut self.parsed);
        let Some(s) = self.sides.get_mut(side as usize) else {
            return;
        };
        let (starts, exchanges) = (&s.starts, &mut s.exchanges);
        // By reference: the exchanges are not moved out, only dropped by `clear`.
        for x in &parsed {
            let latency = match x.response_ts {
                Some(r) => r.saturating_sub(x.request_ts),
                None => NO_LATENCY,
            };
            let protocol = self
                .recent
                .protocol_slot(&mut self.strings, x.protocol.name());
            let cut_off =
                closing && (x.response_ts.is_none() || x.status == INCOMPLETE_RESPONSE_CLOSED);
            let ex = Ex {
                ts: x.request_ts,
                latency,
                method: self.recent.method.get(&mut self.strings, &x.method),
                target: self.strings.intern(&x.target),
                route: self.recent.route.get(&mut self.strings, &x.route),
                status: self.recent.status.get(&mut self.strings, &x.status),
                trace: x
                    .trace_id
                    .as_deref()
                    .map(|t| self.strings.intern(t))
                    .unwrap_or(EMPTY),
                request_id: x
                    .request_id
                    .as_deref()
                    .map(|t| self.strings.intern(t))
                    .unwrap_or(EMPTY),
                packed: Ex::pack(
                    starts.at(x.request_ts),
                    x.response_ts.map_or(0, |r| starts.at(r)),
                    protocol,
                    x.error,
                    cut_off,
                ),
            };
            exchanges.push(ex);
        }
        parsed.clear();
        self.parsed = parsed;
    }

    /// A request cut off by a close is a failure only if the capture could have seen its
    /// response: when L7 messages of its node were lost between the request and the close,
    /// the response may have been among them, and the request is left unanswered (no status,
    /// not an error) as one still open at the end of the capture.
    fn forgive_cut_offs_in_losses(&mut self) {
        if self.l7_losses.is_empty() {
            return;
        }
        // Per node: intervals by start, with the running maximum of their ends.
        let mut losses = std::mem::take(&mut self.l7_losses);
        losses.sort_unstable();
        let mut reach = Vec::with_capacity(losses.len());
        let mut node_max: Option<(u16, u64)> = None;
        for &(n, _, to) in &losses {
            let m = match node_max {
                Some((mn, m)) if mn == n => m.max(to),
                _ => to,
            };
            node_max = Some((n, m));
            reach.push(m);
        }
        // (An incomplete response is the kernel's word, not the capture's: never forgiven.)
        for side in &mut self.sides {
            let (node, to) = (side.node, side.closed_at.unwrap_or(u64::MAX));
            for x in side
                .exchanges
                .iter_mut()
                .filter(|x| x.cut_off() && x.latency == NO_LATENCY)
            {
                // The last interval of this node starting at or before `to`.
                let i = losses.partition_point(|&(n, f, _)| (n, f) <= (node, to));
                let overlaps = i > 0 && losses[i - 1].0 == node && reach[i - 1] >= x.ts;
                if overlaps {
                    *x = x.with_flags(false, false);
                    x.status = EMPTY;
                }
            }
        }
        self.l7_losses = losses;
    }

    /// Ends the analysis, in steps: fold the event counts, close the sides still open,
    /// forgive cut-offs in losses, name processes, join the ends of connections and attribute
    /// their samples, label resets, name each side's ends, sort each side's exchanges by
    /// time, make the rows (connections, failed connects, DNS), gather the services, count
    /// losses, and aggregate.
    pub fn finish(mut self, read: ReadStats) -> Result<Analysis, crate::AnalyzeError> {
        self.fold_kind_counts();
        self.close_open_sides();
        self.forgive_cut_offs_in_losses();

        let mut cp = crate::input::Checkpoints::new();
        let names = self.name_services();
        let resolver = self.resolver(&names);
        let (window_start, window_end) = self.window.unwrap_or((0, 0));
        let (conns, facts) = self.join();
        self.label_resets(&facts);
        let ends = self.name_ends(&conns, &names, &resolver);
        let net = self.net_facts(&conns, &ends, &names, window_start, window_end);
        self.sort_exchanges();
        self.fail_connections_reset_before_any_byte(&conns, &facts);
        let ids = self.row_ids();
        cp.at("close, names, join, grouping");

        let exchanges: usize = self.sides.iter().map(|s| s.exchanges.len()).sum();
        let mut out = Rows {
            rows: Vec::with_capacity(exchanges),
            served: Vec::with_capacity(exchanges),
            links: Vec::with_capacity(exchanges),
            ends: EndsIds::default(),
            conns: Vec::new(),
        };
        let addrs = self.side_addresses();
        let sides = SideFacts {
            conns: &conns,
            facts: &facts,
            ends: &ends,
            ids: &ids,
            addrs: &addrs,
            closed_unanswered: self.strings.map_get(NO_RESPONSE_CLOSED),
            closed_incomplete: self.strings.map_get(INCOMPLETE_RESPONSE_CLOSED),
        };
        self.rows_from_connections(&sides, &mut out);
        self.rows_from_failures(&names, &resolver, &conns, &facts, &ids, &mut out);
        self.rows_from_dns(&names, &resolver, window_end, &ids, &mut out);
        // Every exchange is in `rows` now (and let go: in many small blocks, whose pages go
        // back to the system here rather than count in the aggregation's peak).
        crate::release_free_memory();
        cp.at("rows");
        let spawns = self.traces.then(|| {
            std::mem::take(&mut self.spawns)
                .into_iter()
                .map(|((node, pid, tid), v)| ((ids.node(node), pid, tid), v))
                .collect::<crate::traces::Spawns>()
        });

        let services = self.services(&names, &out);
        let losses = self.losses(&read);
        let mut nodes: Vec<NodeSummary> = self.nodes.clone();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut marks = self.marks.clone();
        marks.sort();

        let input = stats::Input {
            rows: out.rows,
            ends: out.ends.into_list(),
            served: out.served,
            conns: out.conns,
            strings: std::mem::take(&mut self.strings),
            services,
            services_file: &self.services_file,
            window_start,
            window_end,
            id_seed: self.id_seed(window_start),
            links: std::mem::take(&mut out.links),
            spawns,
        };
        cp.at("services");
        let mut analysis = stats::aggregate(input)?;
        analysis.nodes = nodes.iter().map(|n| n.name.clone()).collect();
        analysis.node_details = nodes;
        analysis.events = self.events;
        analysis.events_by_kind = self.events_by_kind.clone();
        analysis.dropped = losses.dropped;
        analysis.dropped_by_kind = losses.dropped_by_kind;
        analysis.damaged_blocks = read.damaged_blocks;
        analysis.missing_segments = read.missing_segments;
        analysis.completeness = losses.completeness;
        analysis.warnings = read.warnings;
        analysis.clock_offsets = read.clock_offsets;
        analysis.payload = self.payload.clone();
        analysis.marks = marks;
        cp.at("aggregate");
        analysis.logs = self.logs_report(&names, &analysis.requests);
        if analysis.logs.not_kept > 0 {
            analysis.warnings.push(format!(
                "logs: {} log events past the first {} are counted in log_patterns.csv but not \
                 listed in logs.csv (bounded memory)",
                analysis.logs.not_kept,
                analysis.logs.events.len()
            ));
        }
        cp.at("logs");
        analysis.profiles = self.finish_profiles(&names, window_end);
        cp.at("profiles");
        crate::findings::detect(&mut analysis, &net, &self.findings_config);
        Ok(analysis)
    }

    /// Folds the per-kind event counters into `events_by_kind`.
    fn fold_kind_counts(&mut self) {
        for k in std::mem::take(&mut self.kinds_seen) {
            let n = std::mem::take(&mut self.kind_counts[k as usize]);
            *self.events_by_kind.entry(k.name().to_string()).or_insert(0) += n;
        }
    }

    /// Ends the parsing of the sides still open at the end of the capture: a request of
    /// theirs may yet be answered, so none is cut off.
    fn close_open_sides(&mut self) {
        let open: Vec<u32> = {
            let mut v: Vec<u32> = self.conns.values().copied().collect();
            v.sort_unstable();
            v
        };
        self.conns.clear();
        for idx in open {
            self.close_side(idx, None);
        }
    }

    /// Joins the two ends of every connection (by tuple and time) and attributes the
    /// retransmits and resets to their connections.
    fn join(&mut self) -> (Connections, Facts) {
        let spans = self
            .sides
            .iter()
            .map(|s| Span {
                node: s.node,
                pid: s.pid,
                client: s.client,
                local: s.local,
                remote: s.remote,
                opened: s.opened,
                closed: s.closed_at,
                joinable: !s.failed && !is_unspecified(&s.remote),
            })
            .collect();
        let conns = Connections::join(spans);
        let facts = conns.tally(&self.samples);
        // The samples stay for the findings (`net_facts`), which drops them.
        (conns, facts)
    }

    /// A request cut off by its connection's close was reset when the side received a reset
    /// of that connection after the request was sent.
    fn label_resets(&mut self, facts: &Facts) {
        let (mut reset, mut incomplete) = (None, None);
        for (side, x) in self
            .sides
            .iter_mut()
            .enumerate()
            .flat_map(|(i, s)| s.exchanges.iter_mut().map(move |x| (i as u32, x)))
            .filter(|(_, x)| x.cut_off())
        {
            if facts.reset_since(side, x.ts) {
                x.status = if x.latency == NO_LATENCY {
                    *reset.get_or_insert_with(|| self.strings.intern(NO_RESPONSE_RESET))
                } else {
                    *incomplete
                        .get_or_insert_with(|| self.strings.intern(INCOMPLETE_RESPONSE_RESET))
                };
            }
        }
    }

    /// Who is on each end of each side's connection, `(client, server)` (ids into
    /// `self.strings`): the named process of each captured end; an end not captured is named
    /// from the address (a listener, a DNS name, the address itself).
    fn name_ends(
        &mut self,
        conns: &Connections,
        names: &Names,
        resolver: &Resolver,
    ) -> Vec<(u32, u32)> {
        let name_of = |side: &Side| {
            names
                .get(&(side.node, side.pid))
                .map(|n| n.0.clone())
                .unwrap_or_default()
        };
        let mut ends = Vec::with_capacity(self.sides.len());
        for (i, s) in self.sides.iter().enumerate() {
            let me = name_of(s);
            let other = conns
                .peer(i as u32)
                .map(|j| name_of(&self.sides[j as usize]));
            let (client, server) = if s.client {
                (
                    me,
                    other.unwrap_or_else(|| resolver.server(s.node, &s.remote)),
                )
            } else {
                (other.unwrap_or_else(|| resolver.client(&s.remote)), me)
            };
            ends.push((self.strings.intern(&client), self.strings.intern(&server)));
        }
        ends
    }

    /// Puts each side's exchanges in time order (they come in the order they completed;
    /// the sort is stable, and skipped when they are in order already).
    fn sort_exchanges(&mut self) {
        for side in &mut self.sides {
            if side.exchanges.windows(2).any(|w| w[0].ts > w[1].ts) {
                side.exchanges.sort_by_key(|x| x.ts);
            }
        }
    }

    /// A seed for span and trace ids, from what identifies the capture (its nodes and its
    /// start): the same capture gives the same ids, two captures different ones.
    fn id_seed(&self, window_start: u64) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        };
        for n in &self.nodes {
            eat(n.name.as_bytes());
            eat(&[0]);
        }
        eat(&window_start.to_le_bytes());
        h
    }

    /// `(client, server)` addresses (`ip:port`, string ids) of each side's connection.
    fn side_addresses(&mut self) -> Vec<(u32, u32)> {
        let mut out = Vec::with_capacity(self.sides.len());
        for i in 0..self.sides.len() {
            let s = &self.sides[i];
            let (c, sv) = if s.client {
                (s.local, s.remote)
            } else {
                (s.remote, s.local)
            };
            let name = |e: &Endpoint| {
                if is_unspecified(e) {
                    String::new()
                } else {
                    e.to_string()
                }
            };
            let (c, sv) = (name(&c), name(&sv));
            out.push((self.strings.intern(&c), self.strings.intern(&sv)));
        }
        out
    }

    /// Ids of the strings every kind of row uses.
    fn row_ids(&mut self) -> RowIds {
        let nodes: Vec<u32> = self
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .map(|n| self.strings.intern(&n))
            .collect();
        RowIds {
            nodes,
            tcp: self.strings.intern("tcp"),
            connect: self.strings.intern("CONNECT"),
        }
    }

    /// One connection row per connection (a joined pair is one, counted from its client
    /// side), and a request row per exchange: the client's exchanges with the server-side
    /// latency of the server exchange they pair with, then the server's exchanges the client
    /// side did not see.
    fn rows_from_connections(&mut self, sides: &SideFacts<'_>, out: &mut Rows) {
        let conns = sides.conns;
        for i in 0..self.sides.len() {
            let paired_server = !self.sides[i].client && conns.peer(i as u32).is_some();
            if paired_server {
                continue; // accounted for by the client side
            }
            self.rows_of_side(i, sides, out);
            // Its exchanges, and its peer's (a server: read by this side only), are in rows
            // now: let them go, so that the rows and the exchanges never coexist whole.
            self.sides[i].exchanges = Vec::new();
            if let Some(j) = conns.peer(i as u32) {
                if !self.sides[j as usize].client {
                    self.sides[j as usize].exchanges = Vec::new();
                }
            }
        }
    }

    /// The rows of side `i` (a client, or a server whose client was not captured): see
    /// [`Analyzer::rows_from_connections`].
    fn rows_of_side(&self, i: usize, sides: &SideFacts<'_>, out: &mut Rows) {
        let SideFacts {
            conns,
            facts,
            ends,
            ids,
            addrs,
            closed_unanswered,
            closed_incomplete,
        } = *sides;
        let s = &self.sides[i];
        let (client, server) = ends[i];
        if client == EMPTY || server == EMPTY {
            return;
        }
        let peer = conns.peer(i as u32);
        // This side closed while its peer's end stayed open: it left, it was not left.
        let closed_first =
            peer.is_some_and(|j| match (s.closed_at, self.sides[j as usize].closed_at) {
                (Some(mine), Some(theirs)) => mine < theirs,
                (Some(_), None) => true,
                (None, _) => false,
            });
        if s.failed {
            return; // accounted for by its failed connect
        }
        let node = ids.node(s.node);
        let mine = &s.exchanges;
        let theirs: &[Ex] = peer.map_or(&[], |j| &self.sides[j as usize].exchanges);
        let proto = s
            .protocol
            .or_else(|| peer.and_then(|j| self.sides[j as usize].protocol))
            .map(|p| self.strings.map_get(p).unwrap_or(ids.tcp))
            .unwrap_or(ids.tcp);
        let (sent, received) = s.closed_bytes.unwrap_or((s.sent, s.received));
        let (bytes_sent, bytes_received) = if s.client {
            (sent, received)
        } else {
            (received, sent)
        };
        out.conns.push(stats::ConnRow {
            client,
            server,
            protocol: proto,
            failed: false,
            bytes_sent,
            bytes_received,
            retransmits: facts.retransmits(conns, i as u32),
        });
        let (client_addr, server_addr) = addrs[i];
        let peer_side = peer.map(|j| &self.sides[j as usize]);
        // The spans of an exchange: `mine` of this side, `answer` of the peer's.
        let spans = |mine: Option<&Ex>, answer: Option<&Ex>| {
            let (cx, sx, server_side) = if s.client {
                (mine, answer, peer_side.zip(peer))
            } else {
                (None, mine, Some((s, i as u32)))
            };
            let mut f = SpanFacts::default();
            // The protocol: each exchange's own (`row`).
            let mut e = Ends {
                client,
                server,
                node,
                client_addr,
                server_addr,
                ..Ends::NONE
            };
            let mut l = LinkIn {
                server_socket: u32::MAX,
                ..LinkIn::default()
            };
            if let Some(x) = cx {
                f.set(SpanFacts::CLIENT, true);
                e.client_node = node;
                e.client_pid = s.pid;
                f.client_tid = x.tid_request();
                l.request_id = x.request_id;
            }
            if let (Some(y), Some((ss, sj))) = (sx, server_side) {
                f.set(SpanFacts::SERVER, true);
                e.server_node = ids.node(ss.node);
                e.server_pid = ss.pid;
                f.server_tid = y.tid_request();
                f.server_ts_ns = y.ts;
                l.server_tid_out = y.tid_response();
                l.server_socket = sj;
                if l.request_id == EMPTY {
                    l.request_id = y.request_id;
                }
            }
            (f, e, l)
        };
        let row = |x: &Ex, server_latency: u64, spans: SpanFacts, ends: Ends| {
            let row = RequestRow {
                ts_ns: x.ts,
                latency_ns: x.latency,
                server_latency_ns: server_latency,
                ends: 0, // given by `Rows::push`
                method: x.method,
                target: x.target,
                route: x.route,
                status: x.status,
                spans: spans.of_request(x.trace, x.error()),
            };
            let ends = Ends {
                protocol: self.recent.protocol(x.protocol_slot()),
                ..ends
            };
            (row, ends)
        };
        let pairs = join::align(mine, theirs);
        let mut seen_by_client = vec![false; theirs.len()];
        for (k, x) in mine.iter().enumerate() {
            let answer = match pairs[k] {
                Some(j) if s.client => {
                    seen_by_client[j] = true;
                    Some(&theirs[j])
                }
                _ => None,
            };
            let server_latency = match answer {
                Some(y) => y.latency,
                None if s.client => NO_LATENCY,
                None => x.latency,
            };
            let (f, e, l) = spans(Some(x), answer);
            match answer {
                // Closed by the client's own end (its process died, it gave up) after the
                // server answered: the server's answer, not a failure of the server. (A
                // reset stays a failure: the client's code saw it.) So is a response the
                // client stopped reading and closed on before the server closed its end.
                Some(y)
                    if x.cut_off()
                        && y.latency != NO_LATENCY
                        && (Some(x.status) == closed_unanswered
                            || (Some(x.status) == closed_incomplete && closed_first)) =>
                {
                    let answered = Ex {
                        status: y.status,
                        ..x.with_flags(y.error(), x.cut_off())
                    };
                    let (r, e) = row(&answered, server_latency, f, e);
                    out.push(r, e, true, l);
                }
                _ => {
                    let (r, e) = row(x, server_latency, f, e);
                    out.push(r, e, true, l);
                }
            }
        }
        // Exchanges the server saw that the client side did not.
        for (y, _) in theirs
            .iter()
            .zip(&seen_by_client)
            .filter(|(_, &seen)| !seen)
        {
            let (f, e, l) = spans(None, Some(y));
            let (r, e) = row(y, y.latency, f, e);
            out.push(r, e, true, l);
        }
    }

    /// Failed connects: a failed connection of the caller's edge and a failed request
    /// (`CONNECT`, the errno as status) of the caller, not a request the server served.
    /// A connection that its client saw established, then reset before a byte went either
    /// way, is a failed connect (ECONNRESET) of the client's edge, as the client's own code
    /// sees it: a server that was going down accepted the handshake in the kernel and never
    /// read. Not a connection of an unknown protocol beside the edge's real one.
    fn fail_connections_reset_before_any_byte(&mut self, conns: &Connections, facts: &Facts) {
        const ECONNRESET: i32 = 104;
        for i in 0..self.sides.len() {
            let s = &self.sides[i];
            let side = i as u32;
            let silent = |j: u32| {
                self.sides[j as usize].exchanges.is_empty()
                    && matches!(self.sides[j as usize].closed_bytes, Some((0, 0)) | None)
            };
            let Some(closed) = s.closed_at else {
                continue;
            };
            if !s.client
                || s.failed
                || s.closed_bytes != Some((0, 0))
                || !silent(side)
                || conns.peer(side).is_some_and(|j| !silent(j))
                || !facts.reset_since(side, s.opened.earliest())
            {
                continue;
            }
            let f = Failure {
                node: s.node,
                pid: s.pid,
                remote: s.remote,
                ts: closed,
                errno: ECONNRESET,
                side: Some(side),
                tid: s.tid,
            };
            self.sides[i].failed = true;
            self.failures.push(f);
        }
    }

    fn rows_from_failures(
        &mut self,
        names: &Names,
        resolver: &Resolver,
        conns: &Connections,
        facts: &Facts,
        ids: &RowIds,
        out: &mut Rows,
    ) {
        for f in &self.failures {
            let client = names
                .get(&(f.node, f.pid))
                .map(|n| n.0.clone())
                .unwrap_or_default();
            let server = resolver.server(f.node, &f.remote);
            let client = self.strings.intern(&client);
            let server = self.strings.intern(&server);
            let status = self.strings.intern(&errno_name(f.errno));
            let target = self.strings.intern(&f.remote.to_string());
            let node = ids.node(f.node);
            out.conns.push(stats::ConnRow {
                client,
                server,
                protocol: ids.tcp,
                failed: true,
                bytes_sent: 0,
                bytes_received: 0,
                retransmits: f.side.map_or(0, |s| facts.retransmits(conns, s)),
            });
            let spans = SpanFacts {
                flags: SpanFacts::CLIENT | SpanFacts::ERROR,
                client_tid: f.tid,
                ..SpanFacts::default()
            };
            let ends = Ends {
                client,
                server,
                protocol: ids.tcp,
                node,
                client_node: node,
                client_pid: f.pid,
                server_addr: target,
                ..Ends::NONE
            };
            let row = RequestRow {
                ts_ns: f.ts,
                latency_ns: NO_LATENCY,
                server_latency_ns: NO_LATENCY,
                ends: 0,
                method: ids.connect,
                target,
                route: ids.connect,
                status,
                spans,
            };
            out.push(row, ends, false, LinkIn::default());
        }
    }

    /// DNS queries of captured clients: requests of the client -> resolver edge. A query
    /// still unanswered when the capture ended counts only once it has waited long enough.
    fn rows_from_dns(
        &mut self,
        names: &Names,
        resolver: &Resolver,
        window_end: u64,
        ids: &RowIds,
        out: &mut Rows,
    ) {
        let dns = self.strings.intern("dns");
        let no_response = self.strings.intern(DNS_NO_RESPONSE);
        for q in &self.dns_queries {
            let (status, error, latency) = match q.answer {
                Some(answer) => answer,
                None if window_end.saturating_sub(q.ts) >= DNS_TIMEOUT_NS => {
                    (no_response, true, NO_LATENCY)
                }
                None => continue,
            };
            let client = names
                .get(&(q.node, q.pid))
                .map(|n| n.0.clone())
                .unwrap_or_default();
            if client.is_empty() {
                continue;
            }
            let server = resolver.server(q.node, &q.remote);
            let client = self.strings.intern(&client);
            let server = self.strings.intern(&server);
            let node = ids.node(q.node);
            let spans = SpanFacts {
                flags: SpanFacts::CLIENT,
                client_tid: q.tid,
                ..SpanFacts::default()
            };
            let ends = Ends {
                client,
                server,
                protocol: dns,
                node,
                client_node: node,
                client_pid: q.pid,
                server_addr: self.strings.intern(&q.remote.to_string()),
                ..Ends::NONE
            };
            let row = RequestRow {
                ts_ns: q.ts,
                latency_ns: latency,
                server_latency_ns: NO_LATENCY,
                ends: 0,
                method: q.qtype,
                target: q.name,
                route: q.name,
                status,
                spans: spans.of_request(EMPTY, error),
            };
            out.push(row, ends, true, LinkIn::default());
        }
        self.dns_queries = Vec::new();
    }

    /// Services: every named process group, plus peers seen only from outside; only those
    /// that took part in a connection or listen.
    fn services(&self, names: &Names, out: &Rows) -> BTreeMap<String, stats::ServiceInfo> {
        let mut services: BTreeMap<String, stats::ServiceInfo> = BTreeMap::new();
        for ((node, pid), (name, kind)) in names {
            let e = services
                .entry(name.clone())
                .or_insert_with(|| stats::ServiceInfo {
                    kind: kind.clone(),
                    ..Default::default()
                });
            e.instances.insert((*node, *pid));
            if let Some(p) = self.procs.get(&(*node, *pid)) {
                let exe = if p.exe.is_empty() {
                    p.comm.clone()
                } else {
                    p.exe.clone()
                };
                if !exe.is_empty() {
                    e.executables.insert(exe);
                }
                e.ports.extend(p.ports.iter().copied());
            }
        }
        let peer_kind = |name: &str| {
            if name.parse::<IpAddr>().is_ok() || name.parse::<std::net::SocketAddr>().is_ok() {
                "address"
            } else {
                "dns"
            }
        };
        let ids = out.ends.list().iter().flat_map(|e| [e.client, e.server]);
        let ids = ids.chain(out.conns.iter().flat_map(|c| [c.client, c.server]));
        let mut seen = vec![false; self.strings.strings.len()];
        for id in ids {
            match seen.get_mut(id as usize) {
                Some(true) => continue,
                Some(s) => *s = true,
                None => {}
            }
            let name = self.strings.get(id);
            if !services.contains_key(name) {
                services.insert(
                    name.to_string(),
                    stats::ServiceInfo {
                        kind: peer_kind(name).into(),
                        ..Default::default()
                    },
                );
            }
        }
        // Keep only services that took part in something.
        let mut active: BTreeSet<String> = BTreeSet::new();
        for c in &out.conns {
            active.insert(self.strings.get(c.client).to_string());
            active.insert(self.strings.get(c.server).to_string());
        }
        for (name, info) in services.iter() {
            if !info.ports.is_empty() {
                active.insert(name.clone());
            }
        }
        services.retain(|k, _| active.contains(k));
        services
    }

    /// What the capture lost, and the completeness claimed.
    fn losses(&self, read: &ReadStats) -> Losses {
        let mut dropped_by_kind = self.dropped_by_kind.clone();
        for (k, v) in &read.manifest_dropped {
            let e = dropped_by_kind.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        let dropped: u64 = dropped_by_kind.values().sum();
        let denom = self.events + dropped;
        let mut completeness = if denom == 0 {
            1.0
        } else {
            self.events as f64 / denom as f64
        };
        if read.damaged_blocks > 0 || !read.missing_segments.is_empty() || read.unclean_stops > 0 {
            // Damage and unclean stops lose an unknown number of events: never claim
            // completeness.
            completeness = completeness.min(0.999);
        }
        Losses {
            dropped_by_kind,
            dropped,
            completeness,
        }
    }

    /// Names every process that took part in a connection or listened: `(name, kind)`.
    fn name_services(&self) -> Names {
        self.name_processes(&BTreeSet::new())
    }

    /// The profiles, their processes named as services: those the network analysis named
    /// keep their names; the others (processes with no connection) are named by the same
    /// rules, without renaming the first.
    fn finish_profiles(&mut self, names: &Names, window_end: u64) -> crate::profiles::Profiles {
        let collector = std::mem::take(&mut self.profiles);
        let extra: BTreeSet<(u16, u32)> = collector
            .processes()
            .into_iter()
            .filter(|k| !names.contains_key(k))
            .collect();
        let more = if extra.is_empty() {
            Names::new()
        } else {
            self.name_processes(&extra)
        };
        let by_index: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let mut profiles = collector.finish(
            &by_index,
            |node, pid| {
                names
                    .get(&(node, pid))
                    .or_else(|| more.get(&(node, pid)))
                    .map(|n| n.0.clone())
                    .unwrap_or_else(|| format!("pid {pid}"))
            },
            window_end,
        );
        // The services of each cgroup: its named processes'.
        for c in &mut profiles.cgroups {
            let mut services = BTreeSet::new();
            for (key, (name, _)) in names.iter().chain(more.iter()) {
                let node_matches = by_index.get(usize::from(key.0)) == Some(&c.node);
                if node_matches && self.procs.get(key).is_some_and(|p| p.cgroup == c.cgroup) {
                    services.insert(name.clone());
                }
            }
            c.services = services.into_iter().collect();
        }
        profiles
    }

    /// Names every process that took part in a connection or listened, and the `extra` ones
    /// (processes that only wrote logs or were only profiled: named like the others, without
    /// changing their names, and not counted among a unit's executables): `(name, kind)`.
    fn name_processes(&self, extra: &BTreeSet<(u16, u32)>) -> Names {
        let mut relevant: BTreeSet<(u16, u32)> = BTreeSet::new();
        for s in &self.sides {
            relevant.insert((s.node, s.pid));
        }
        for f in &self.failures {
            relevant.insert((f.node, f.pid));
        }
        for q in &self.dns_queries {
            relevant.insert((q.node, q.pid));
        }
        for (k, p) in &self.procs {
            if !p.ports.is_empty() {
                relevant.insert(*k);
            }
        }
        // The program's name: its comm (what `ps` and `top` show: `redis-server` even though
        // Debian's binary is `redis-check-rdb`, `python3` for `python3.11`), or the executable's
        // file name when comm is missing or cut at 15 bytes.
        let exe_base = |p: &Proc| -> String {
            let b = p.exe.rsplit('/').next().unwrap_or("");
            if p.comm.is_empty() || (p.comm.len() >= 15 && b.starts_with(p.comm.as_str())) {
                if b.is_empty() {
                    "unknown".to_string()
                } else {
                    b.to_string()
                }
            } else {
                p.comm.clone()
            }
        };
        // Ports of a process, or of its closest ancestor of the same executable (pre-fork
        // servers and nginx workers share their parent's listening socket).
        let ports_of = |key: (u16, u32)| -> BTreeSet<u16> {
            let mut k = key;
            let base = self.procs.get(&key).map(&exe_base).unwrap_or_default();
            for _ in 0..16 {
                let Some(p) = self.procs.get(&k) else { break };
                if !p.ports.is_empty() {
                    return p.ports.clone();
                }
                let parent = (k.0, p.ppid);
                match self.procs.get(&parent) {
                    Some(pp) if p.ppid != 0 && exe_base(pp) == base => k = parent,
                    _ => break,
                }
            }
            BTreeSet::new()
        };
        // Units are services only when all their relevant processes run one executable.
        let mut unit_exes: BTreeMap<(u16, String), BTreeSet<String>> = BTreeMap::new();
        for k in relevant.iter().chain(extra) {
            if let Some(p) = self.procs.get(k) {
                if let Some(u) = unit_of_cgroup(&p.cgroup) {
                    unit_exes
                        .entry((k.0, u.to_string()))
                        .or_default()
                        .insert(exe_base(p));
                }
            }
        }
        let empty = Proc::default();
        let mut out = BTreeMap::new();
        let named_now = if extra.is_empty() {
            relevant
        } else {
            extra.clone()
        };
        for k in named_now {
            let p = self.procs.get(&k).unwrap_or(&empty);
            let ports: Vec<u16> = ports_of(k).into_iter().collect();
            let facts = ProcessFacts {
                comm: &p.comm,
                exe: &p.exe,
                cmdline: &p.cmdline,
                cgroup: &p.cgroup,
                ports: &ports,
            };
            let base = exe_base(p);
            let named = if let Some(n) = self.services_file.name_for(&facts) {
                (n.to_string(), "services-file".to_string())
            } else if let Some(c) = p.container_id.as_deref().filter(|c| !c.is_empty()) {
                let short: String = c.chars().take(12).collect();
                (format!("{base}@{short}"), "container".to_string())
            } else if let Some(u) = unit_of_cgroup(&p.cgroup).filter(|u| {
                unit_exes
                    .get(&(k.0, u.to_string()))
                    .is_some_and(|s| s.len() == 1)
            }) {
                (u.to_string(), "unit".to_string())
            } else if ports.is_empty() {
                (base, "exe".to_string())
            } else {
                let ps: Vec<String> = ports.iter().map(u16::to_string).collect();
                (format!("{base}:{}", ps.join(",")), "exe+port".to_string())
            };
            out.insert(k, named);
        }
        out
    }

    /// Where listeners and local addresses are, for naming the far end of connections.
    fn resolver(&self, names: &Names) -> Resolver {
        let mut local_addrs = std::collections::HashSet::new();
        for s in &self.sides {
            local_addrs.insert((s.node, s.local.addr));
        }
        let mut listeners: BTreeMap<(u16, u16), String> = BTreeMap::new();
        for ((n, pid), (name, _)) in names {
            if let Some(p) = self.procs.get(&(*n, *pid)) {
                for port in &p.ports {
                    listeners.entry((*n, *port)).or_insert_with(|| name.clone());
                }
            }
        }
        Resolver {
            local_addrs,
            listeners,
            nodes: self.nodes.len() as u16,
            dns: self.dns_names.clone(),
        }
    }

    /// Kinds of events seen so far (for progress displays).
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// Names the far end of connections.
struct Resolver {
    local_addrs: std::collections::HashSet<(u16, Addr)>,
    listeners: BTreeMap<(u16, u16), String>,
    nodes: u16,
    dns: HashMap<IpAddr, String>,
}

impl Resolver {
    /// The service behind `remote` as seen from `node`: a captured listener (on this node for
    /// loopback and local addresses, else on the node owning the address), else a DNS name the
    /// capture resolved, else the address.
    fn server(&self, node: u16, remote: &Endpoint) -> String {
        let ip = remote.addr.ip();
        if ip.is_loopback() || self.local_addrs.contains(&(node, remote.addr)) {
            if let Some(n) = self.listeners.get(&(node, remote.port)) {
                return n.clone();
            }
        } else {
            for n in 0..self.nodes {
                if self.local_addrs.contains(&(n, remote.addr)) {
                    if let Some(name) = self.listeners.get(&(n, remote.port)) {
                        return name.clone();
                    }
                }
            }
        }
        match self.dns.get(&ip) {
            Some(name) => format!("{name}:{}", remote.port),
            None => remote.to_string(),
        }
    }

    /// A client seen only from the server side: its address, or a name the capture resolved.
    fn client(&self, remote: &Endpoint) -> String {
        let ip = remote.addr.ip();
        match self.dns.get(&ip) {
            Some(name) => name.clone(),
            None => ip.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Findings (issue 12): what the findings engine needs from the streaming pass and the join.

impl Analyzer {
    /// Per-edge, per-bucket TCP counters and process lives for `crate::findings`; drops the
    /// retransmit and reset samples (attributed to sides by the join).
    fn net_facts(
        &mut self,
        conns: &Connections,
        ends: &[(u32, u32)],
        names: &Names,
        window_start: u64,
        window_end: u64,
    ) -> crate::findings::collect::NetFacts {
        use crate::findings::collect::{finish, SideBrief};
        let samples = std::mem::take(&mut self.samples);
        let sides: Vec<SideBrief> = self
            .sides
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                // what the close's byte counters hold beyond the messages (calls folded into
                // counters), at the close
                let mut traffic = std::mem::take(&mut s.traffic);
                if let (Some((sent, received)), Some(at)) = (s.closed_bytes, s.closed_at) {
                    let (out_b, in_b) = traffic
                        .iter()
                        .fold((0u64, 0u64), |a, t| (a.0 + t.1, a.1 + t.2));
                    if sent > out_b || received > in_b {
                        traffic.push((
                            at / 1_000_000_000,
                            sent.saturating_sub(out_b),
                            received.saturating_sub(in_b),
                        ));
                    }
                }
                SideBrief {
                    node: s.node,
                    pid: s.pid,
                    client: s.client,
                    failed: s.failed,
                    connected_at: match s.opened {
                        Opened::At(t) if s.client => Some(t),
                        _ => None,
                    },
                    remote: s.remote,
                    opened_at: match s.opened {
                        Opened::At(t) => Some(t),
                        Opened::By(_) => None,
                    },
                    closed_at: s.closed_at,
                    represents: s.client || conns.peer(i as u32).is_none(),
                    traffic,
                }
            })
            .collect();
        let ends: Vec<(String, String)> = ends
            .iter()
            .map(|&(c, s)| {
                (
                    self.strings.get(c).to_string(),
                    self.strings.get(s).to_string(),
                )
            })
            .collect();
        let node_names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let procs = &self.procs;
        let comms = |node: u16, pid: u32| {
            procs
                .get(&(node, pid))
                .map(|p| p.comm.clone())
                .unwrap_or_default()
        };
        let report_bucket = stats::bucket_width_ns(window_end.saturating_sub(window_start));
        finish(
            std::mem::take(&mut self.net),
            &sides,
            &ends,
            &samples,
            conns,
            names,
            &comms,
            &node_names,
            window_start,
            self.findings_config.bucket_ns(report_bucket),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Logs (crate::logs)

impl Analyzer {
    /// The log report: every log-writing process named by the analysis's grouping, the error
    /// events attached to their requests.
    fn logs_report(
        &mut self,
        names: &Names,
        requests: &crate::model::RequestTable,
    ) -> crate::logs::LogReport {
        let logs = std::mem::take(&mut self.logs);
        if logs.is_empty() {
            return crate::logs::LogReport::default();
        }
        let extra: BTreeSet<(u16, u32)> = logs
            .processes()
            .filter(|k| !names.contains_key(k))
            .collect();
        let more = if extra.is_empty() {
            Names::new()
        } else {
            self.name_processes(&extra)
        };
        let service_of = |node: u16, pid: u32| -> String {
            names
                .get(&(node, pid))
                .or_else(|| more.get(&(node, pid)))
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("pid {pid}"))
        };
        let nodes = self.nodes.iter().map(|n| n.name.clone()).collect();
        let mut report = logs.finish(service_of, nodes);
        crate::logs::attach(&mut report, requests);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(packed: u64) -> Ex {
        Ex {
            ts: 1,
            latency: 2,
            method: 3,
            target: 4,
            route: 5,
            status: 6,
            trace: 7,
            request_id: 8,
            packed,
        }
    }

    #[test]
    fn an_exchange_keeps_its_threads_protocol_and_flags_apart() {
        // Linux's largest thread id, one past the packed range, and every flag combination.
        let max_tid = (1 << 22) - 1;
        for (tq, tr, slot, error, cut_off) in [
            (max_tid, 17, 255, true, false),
            (0, max_tid, 0, false, true),
            (1 << EX_TID_BITS, 9, 3, true, true),
            (5, u32::MAX, 1, false, false),
        ] {
            let x = ex(Ex::pack(tq, tr, slot, error, cut_off));
            let fits = |t: u32| if t < 1 << EX_TID_BITS { t } else { 0 };
            assert_eq!(x.tid_request(), fits(tq));
            assert_eq!(x.tid_response(), fits(tr));
            assert_eq!(x.protocol_slot(), slot);
            assert_eq!((x.error(), x.cut_off()), (error, cut_off));
            // Flags rewritten, the rest untouched.
            let y = x.with_flags(!error, !cut_off);
            assert_eq!((y.error(), y.cut_off()), (!error, !cut_off));
            assert_eq!(
                (y.tid_request(), y.tid_response(), y.protocol_slot()),
                (x.tid_request(), x.tid_response(), slot)
            );
            assert_eq!((y.ts, y.latency, y.request_id), (1, 2, 8));
        }
    }

    #[test]
    fn protocols_get_one_slot_each() {
        let mut strings = Interner::default();
        let mut recent = Recent::default();
        let (http, redis) = ("http", "redis");
        let a = recent.protocol_slot(&mut strings, http);
        let b = recent.protocol_slot(&mut strings, redis);
        assert_ne!(a, b);
        assert_eq!(recent.protocol_slot(&mut strings, http), a);
        assert_eq!(strings.get(recent.protocol(a)), "http");
        assert_eq!(strings.get(recent.protocol(b)), "redis");
        assert_eq!(recent.protocol(200), EMPTY, "a slot never given");
    }
}
