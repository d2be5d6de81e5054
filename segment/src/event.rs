//! The event model: everything a capture can hold, independent of the kernel's struct layouts.
//!
//! This is model version [`MODEL_VERSION`]. It is archived with rkyv inside segment blocks, so
//! **do not reorder, retype or remove fields of these types**: add new variants at the end of
//! enums and bump the format version in `crate::format` when the archived layout changes.
//!
//! Conventions:
//! - `ts` is kernel monotonic time in nanoseconds (`bpf_ktime_get_ns`, CLOCK_MONOTONIC); a
//!   [`ClockSync`] in the segment header and in [`NodeInfo`] events maps it to wall time.
//! - Addresses are IPv6, with IPv4 stored IPv4-mapped (`::ffff:a.b.c.d`), see [`Addr`].
//! - Sockets are identified by [`ConnId`]: `(pid, fd, start_ns)` tells fd reuse apart.
//! - Stacks are stored once, as [`StackDef`] events, and referred to by [`StackId`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rkyv::{Archive, Deserialize as RDeserialize, Serialize as RSerialize};
use serde::{Deserialize, Serialize};

/// Version of the event model carried by this crate.
pub const MODEL_VERSION: u16 = 3;

/// One recorded event: a timestamp and what happened.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Kernel monotonic nanoseconds.
    pub ts: u64,
    /// What happened.
    pub body: EventBody,
}

impl Event {
    /// A new event at `ts` (monotonic ns).
    pub fn new(ts: u64, body: EventBody) -> Self {
        Self { ts, body }
    }

    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    /// The process this event belongs to, when it has one.
    pub fn pid(&self) -> Option<u32> {
        match &self.body {
            EventBody::ProcExec(e) => Some(e.pid),
            EventBody::ProcFork(e) => Some(e.child_pid),
            EventBody::ProcExit(e) => Some(e.pid),
            EventBody::Tcp(e) => Some(e.conn.pid),
            EventBody::L7(e) => Some(e.conn.pid),
            EventBody::TcpSample(e) => e.pid,
            EventBody::Udp(e) => Some(e.pid),
            EventBody::OomKill(e) => Some(e.pid),
            EventBody::AllocSample(e) => Some(e.pid),
            EventBody::AllocSnapshot(e) => Some(e.pid),
            EventBody::CpuSample(e) => Some(e.pid),
            EventBody::StackDef(e) => e.pid,
            EventBody::Log(e) => Some(e.pid),
            EventBody::ThreadStart(e) => Some(e.pid),
            EventBody::Binary(_) => None,
            EventBody::UserStack(e) => Some(e.pid),
            EventBody::HeapAlloc(e) => Some(e.pid),
            EventBody::HeapFree(e) => Some(e.pid),
            EventBody::OffCpu(e) => Some(e.pid),
            EventBody::MemUsage(e) => Some(e.pid),
            EventBody::CgroupMemory(_) => None,
            EventBody::PageFault(e) => Some(e.pid),
            EventBody::Loss(_) | EventBody::Mark(_) | EventBody::Node(_) => None,
        }
    }
}

/// The kinds of events, used by filters, stream selection and loss markers.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum EventKind {
    /// [`ProcExec`]
    ProcExec = 0,
    /// [`ProcFork`]
    ProcFork = 1,
    /// [`ProcExit`]
    ProcExit = 2,
    /// [`TcpEvent`]
    Tcp = 3,
    /// [`L7Message`]
    L7 = 4,
    /// [`TcpSample`]
    TcpSample = 5,
    /// [`UdpMessage`]
    Udp = 6,
    /// [`OomKill`]
    OomKill = 7,
    /// [`AllocSample`]
    AllocSample = 8,
    /// [`AllocSnapshot`]
    AllocSnapshot = 9,
    /// [`CpuSample`]
    CpuSample = 10,
    /// [`StackDef`]
    StackDef = 11,
    /// [`LogWrite`]
    Log = 12,
    /// [`LossMarker`]
    Loss = 13,
    /// [`Mark`]
    Mark = 14,
    /// [`NodeInfo`]
    Node = 15,
    /// [`ThreadStart`] (format version 2)
    ThreadStart = 16,
    /// [`BinaryInfo`] (format version 3)
    Binary = 17,
    /// [`UserStack`] (format version 3)
    UserStack = 18,
    /// [`HeapAlloc`] (format version 3)
    HeapAlloc = 19,
    /// [`HeapFree`] (format version 3)
    HeapFree = 20,
    /// [`OffCpu`] (format version 3)
    OffCpu = 21,
    /// [`MemUsage`] (format version 3)
    MemUsage = 22,
    /// [`CgroupMemory`] (format version 3)
    CgroupMemory = 23,
    /// [`PageFault`] (format version 3)
    PageFault = 24,
}

impl EventKind {
    /// Every kind, in discriminant order.
    pub const ALL: [EventKind; 25] = [
        EventKind::ProcExec,
        EventKind::ProcFork,
        EventKind::ProcExit,
        EventKind::Tcp,
        EventKind::L7,
        EventKind::TcpSample,
        EventKind::Udp,
        EventKind::OomKill,
        EventKind::AllocSample,
        EventKind::AllocSnapshot,
        EventKind::CpuSample,
        EventKind::StackDef,
        EventKind::Log,
        EventKind::Loss,
        EventKind::Mark,
        EventKind::Node,
        EventKind::ThreadStart,
        EventKind::Binary,
        EventKind::UserStack,
        EventKind::HeapAlloc,
        EventKind::HeapFree,
        EventKind::OffCpu,
        EventKind::MemUsage,
        EventKind::CgroupMemory,
        EventKind::PageFault,
    ];

    /// The short name used on the command line, in filters and in output.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ProcExec => "exec",
            EventKind::ProcFork => "fork",
            EventKind::ProcExit => "exit",
            EventKind::Tcp => "tcp",
            EventKind::L7 => "l7",
            EventKind::TcpSample => "tcp_sample",
            EventKind::Udp => "udp",
            EventKind::OomKill => "oom",
            EventKind::AllocSample => "alloc",
            EventKind::AllocSnapshot => "alloc_snapshot",
            EventKind::CpuSample => "cpu",
            EventKind::StackDef => "stack",
            EventKind::Log => "log",
            EventKind::Loss => "loss",
            EventKind::Mark => "mark",
            EventKind::Node => "node",
            EventKind::ThreadStart => "thread",
            EventKind::Binary => "binary",
            EventKind::UserStack => "ustack",
            EventKind::HeapAlloc => "malloc",
            EventKind::HeapFree => "free",
            EventKind::OffCpu => "offcpu",
            EventKind::MemUsage => "mem",
            EventKind::CgroupMemory => "cgroup_mem",
            EventKind::PageFault => "fault",
        }
    }

    /// Parses a name given by [`EventKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The discriminant, as stored on disk.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The kind for a stored discriminant.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happened. New variants go at the end.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A process image was replaced (execve).
    ProcExec(ProcExec),
    /// A process was forked.
    ProcFork(ProcFork),
    /// A process (thread-group leader) exited.
    ProcExit(ProcExit),
    /// A TCP connection lifecycle step.
    Tcp(TcpEvent),
    /// The start of an application-level message on a TCP socket.
    L7(L7Message),
    /// A retransmit, reset or RTT sample.
    TcpSample(TcpSample),
    /// A UDP datagram (DNS in practice).
    Udp(UdpMessage),
    /// The OOM killer chose a victim.
    OomKill(OomKill),
    /// A sampled allocation.
    AllocSample(AllocSample),
    /// Outstanding allocations by stack at a moment.
    AllocSnapshot(AllocSnapshot),
    /// A CPU stack sample.
    CpuSample(CpuSample),
    /// A stack, stored once and referred to by id.
    StackDef(StackDef),
    /// A write to stdout/stderr or a log file.
    Log(LogWrite),
    /// Events were dropped.
    Loss(LossMarker),
    /// A user's note or a trigger.
    Mark(Mark),
    /// Facts about the node that recorded the capture.
    Node(NodeInfo),
    /// A thread was started (format version 2).
    ThreadStart(ThreadStart),
    /// A binary whose code user stacks point into: its build id and symbols (format 3).
    Binary(BinaryInfo),
    /// A user stack unwound at capture time, frames normalized to (binary, file offset)
    /// (format 3).
    UserStack(UserStack),
    /// A sampled heap allocation (format 3).
    HeapAlloc(HeapAlloc),
    /// A sampled allocation was freed (format 3).
    HeapFree(HeapFree),
    /// A thread was off CPU in a syscall for at least the capture's minimum (format 3).
    OffCpu(OffCpu),
    /// A process's resident memory at a moment (format 3).
    MemUsage(MemUsage),
    /// A cgroup's memory usage and limit at a moment (format 3).
    CgroupMemory(CgroupMemory),
    /// A sampled user page fault that mapped a new page (format 3).
    PageFault(PageFault),
}

impl EventBody {
    /// A body that owns no memory (an empty user mark): what a slot holds once its event has
    /// been taken out.
    pub fn empty() -> Self {
        EventBody::Mark(Mark {
            source: MarkSource::User,
            note: String::new(),
        })
    }

    /// The kind of this body.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::ProcExec(_) => EventKind::ProcExec,
            EventBody::ProcFork(_) => EventKind::ProcFork,
            EventBody::ProcExit(_) => EventKind::ProcExit,
            EventBody::Tcp(_) => EventKind::Tcp,
            EventBody::L7(_) => EventKind::L7,
            EventBody::TcpSample(_) => EventKind::TcpSample,
            EventBody::Udp(_) => EventKind::Udp,
            EventBody::OomKill(_) => EventKind::OomKill,
            EventBody::AllocSample(_) => EventKind::AllocSample,
            EventBody::AllocSnapshot(_) => EventKind::AllocSnapshot,
            EventBody::CpuSample(_) => EventKind::CpuSample,
            EventBody::StackDef(_) => EventKind::StackDef,
            EventBody::Log(_) => EventKind::Log,
            EventBody::Loss(_) => EventKind::Loss,
            EventBody::Mark(_) => EventKind::Mark,
            EventBody::Node(_) => EventKind::Node,
            EventBody::ThreadStart(_) => EventKind::ThreadStart,
            EventBody::Binary(_) => EventKind::Binary,
            EventBody::UserStack(_) => EventKind::UserStack,
            EventBody::HeapAlloc(_) => EventKind::HeapAlloc,
            EventBody::HeapFree(_) => EventKind::HeapFree,
            EventBody::OffCpu(_) => EventKind::OffCpu,
            EventBody::MemUsage(_) => EventKind::MemUsage,
            EventBody::CgroupMemory(_) => EventKind::CgroupMemory,
            EventBody::PageFault(_) => EventKind::PageFault,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process as known at a moment: used by exec events and by segment state snapshots.
#[derive(
    Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq, Default,
)]
pub struct ProcessInfo {
    /// Process id (tgid).
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Kernel command name (at most 15 bytes).
    pub comm: String,
    /// Executable path, when known.
    pub exe: String,
    /// Command line arguments.
    pub cmdline: Vec<String>,
    /// cgroup path (v2 unified path, or the v1 `memory` controller's path).
    pub cgroup: String,
    /// Container id, when the cgroup names one.
    pub container_id: Option<String>,
}

/// A process image was replaced (execve).
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProcExec {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Kernel command name.
    pub comm: String,
    /// Executable path.
    pub exe: String,
    /// Command line arguments.
    pub cmdline: Vec<String>,
    /// cgroup path.
    pub cgroup: String,
    /// Container id, when the cgroup names one.
    pub container_id: Option<String>,
}

/// A thread was started in a process that has sockets: which thread started it (the trace
/// linking's thread rule follows work handed to a new thread).
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ThreadStart {
    /// Process id (tgid).
    pub pid: u32,
    /// The thread that started it.
    pub parent_tid: u32,
    /// The new thread.
    pub tid: u32,
}

/// A process was forked.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProcFork {
    /// The parent's process id.
    pub parent_pid: u32,
    /// The child's process id.
    pub child_pid: u32,
    /// The child's command name (inherited from the parent).
    pub comm: String,
}

/// A process exited.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProcExit {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Exit code (0-255) when it exited normally.
    pub exit_code: i32,
    /// The signal that killed it, 0 when none.
    pub signal: i32,
    /// Chosen by the OOM killer.
    pub oom_killed: bool,
}

/// The OOM killer chose a victim.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OomKill {
    /// The victim's process id.
    pub pid: u32,
    /// The victim's command name, when known.
    pub comm: String,
}

// ---------------------------------------------------------------------------------------------
// Network

/// An IP address, IPv4 stored IPv4-mapped in IPv6 (16 bytes, network order).
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// The address as a std [`IpAddr`] (IPv4 for mapped addresses).
    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Addr(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => Addr(v6.octets()),
        }
    }
}

impl From<Ipv4Addr> for Addr {
    fn from(ip: Ipv4Addr) -> Self {
        Addr(ip.to_ipv6_mapped().octets())
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

impl Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.ip())
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<IpAddr>()
            .map(Addr::from)
            .map_err(serde::de::Error::custom)
    }
}

/// An address and port.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
)]
pub struct Endpoint {
    /// Address.
    pub addr: Addr,
    /// Port (host order).
    pub port: u16,
}

impl Endpoint {
    /// A new endpoint.
    pub fn new(addr: impl Into<Addr>, port: u16) -> Self {
        Self {
            addr: addr.into(),
            port,
        }
    }

    /// As a std socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

/// Identifies one socket of one process over its life: `(pid, fd, start_ns)`.
///
/// `start_ns` is the monotonic time the socket was first seen (connect, accept, or the capture
/// start for sockets seeded from /proc), so a reused fd gives a different id.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
)]
pub struct ConnId {
    /// Owning process id (tgid).
    pub pid: u32,
    /// File descriptor in that process.
    pub fd: i32,
    /// When the socket was first seen (monotonic ns).
    pub start_ns: u64,
}

/// A step in a TCP connection's life.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum TcpStep {
    /// connect() was called (CLOSE→SYN_SENT).
    ConnectAttempt,
    /// The connection was established by our connect (SYN_SENT→ESTABLISHED).
    Established {
        /// Connect latency, attempt to established (ns).
        latency_ns: u64,
    },
    /// The connect failed.
    Failed {
        /// errno (e.g. 111 ECONNREFUSED, 110 ETIMEDOUT).
        errno: i32,
        /// Time from attempt to failure (ns).
        latency_ns: u64,
    },
    /// An inbound connection was accepted.
    Accepted,
    /// The socket was closed.
    Closed {
        /// Bytes written by this side.
        bytes_sent: u64,
        /// Bytes read by this side.
        bytes_received: u64,
    },
    /// A listening socket was opened.
    ListenOpen,
    /// A listening socket was closed.
    ListenClose,
}

/// A TCP connection lifecycle event.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TcpEvent {
    /// The socket.
    pub conn: ConnId,
    /// Thread that made the call, 0 when not in process context.
    pub tid: u32,
    /// Local endpoint.
    pub local: Endpoint,
    /// Remote endpoint (unspecified for listen events).
    pub remote: Endpoint,
    /// What happened.
    pub step: TcpStep,
}

/// Which way bytes went, seen from the process that owns the socket.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Written / sent by the process.
    Egress,
    /// Read / received by the process.
    Ingress,
}

/// The start of an application message on a TCP socket: the first bytes written or read after
/// the direction of transfer changed (or every call, for protocols that opt in).
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct L7Message {
    /// The socket.
    pub conn: ConnId,
    /// Thread that made the call.
    pub tid: u32,
    /// Write or read.
    pub direction: Direction,
    /// Bytes actually transferred by the syscall (the real size, not the copied prefix).
    pub size: u64,
    /// The first bytes, up to the capture's `--payload-bytes`, after redaction.
    pub payload: Vec<u8>,
    /// TCP sequence number of the first byte, if known.
    pub tcp_seq: Option<u32>,
    /// Syscalls in the same direction folded into the previous message since it was emitted.
    pub folded_calls: u32,
    /// Bytes of those folded syscalls.
    pub folded_bytes: u64,
    /// Local endpoint, when known.
    pub local: Endpoint,
    /// Remote endpoint, when known.
    pub remote: Endpoint,
}

/// What a [`TcpSample`] reports.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum TcpSampleKind {
    /// A segment was retransmitted.
    Retransmit,
    /// A reset was sent.
    ResetSent,
    /// A reset was received.
    ResetReceived,
    /// A smoothed-RTT sample.
    Rtt,
    /// A listener sent a SYN-ACK again (the handshake's last ACK was lost, or dropped because
    /// the accept queue was full); taken on the connection's tuple, in state NEW_SYN_RECV.
    SynAckRetransmit,
    /// The socket sampler found the peer advertising a zero window: its application stopped
    /// reading and this end cannot send (one sample per sampler pass while it lasts).
    ZeroWindow,
}

/// A retransmit, reset or RTT sample, taken in softirq context and matched by 4-tuple.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TcpSample {
    /// What this is.
    pub what: TcpSampleKind,
    /// Local endpoint.
    pub local: Endpoint,
    /// Remote endpoint.
    pub remote: Endpoint,
    /// TCP state (kernel numbering: 1 ESTABLISHED ... 12 NEW_SYN_RECV).
    pub state: u8,
    /// Smoothed RTT in microseconds, 0 when unknown.
    pub srtt_us: u32,
    /// Owning process, when the socket could be attributed.
    pub pid: Option<u32>,
}

/// A UDP datagram (DNS in practice).
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UdpMessage {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Sent or received.
    pub direction: Direction,
    /// Local endpoint (may be unspecified when unbound).
    pub local: Endpoint,
    /// Remote endpoint.
    pub remote: Endpoint,
    /// Real datagram size.
    pub size: u64,
    /// The first bytes.
    pub payload: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Profiles

/// A stack id, unique within a capture's node.
pub type StackId = u64;

/// A stack, stored once and referred to by id.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StackDef {
    /// The id events refer to.
    pub id: StackId,
    /// Process whose address space user frames belong to; `None` for kernel stacks.
    pub pid: Option<u32>,
    /// Instruction addresses, innermost first.
    pub frames: Vec<u64>,
    /// Symbolized frames, when symbolized at capture time (same length as `frames`, or empty).
    pub symbols: Vec<String>,
}

/// A sampled allocation.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AllocSample {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Allocated bytes.
    pub size: u64,
    /// Address returned.
    pub addr: u64,
    /// User stack.
    pub stack: StackId,
}

/// Outstanding allocations of one stack in a snapshot.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OutstandingAllocs {
    /// The allocating stack.
    pub stack: StackId,
    /// Bytes not freed yet.
    pub bytes: u64,
    /// Allocations not freed yet.
    pub count: u64,
}

/// Outstanding allocations by stack for one process at a moment.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AllocSnapshot {
    /// Process id.
    pub pid: u32,
    /// Resident set size at that moment, bytes.
    pub rss_bytes: u64,
    /// Outstanding allocations, by stack.
    pub by_stack: Vec<OutstandingAllocs>,
}

/// A CPU stack sample.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CpuSample {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CPU the sample was taken on.
    pub cpu: u32,
    /// User stack, if any.
    pub user_stack: Option<StackId>,
    /// Kernel stack, if any.
    pub kernel_stack: Option<StackId>,
}

// ---------------------------------------------------------------------------------------------
// Profiles, format version 3: stacks unwound at capture time and normalized, so that a
// capture names functions on a machine without its binaries.
//
// A user stack's frames are (binary, file offset) pairs; the binary's build id and the symbol
// table needed to name those offsets travel in the capture as `BinaryInfo` events. Kernel
// stacks are `StackDef`s (pid `None`), symbolized at capture time from the kernel's symbols.
// Definitions (`BinaryInfo`, `UserStack`, `StackDef`) precede their first use in every
// segment, so each segment is self-contained; ids are unique within a capture's node.

/// A capture-local binary id, as [`BinaryInfo::id`] and [`Frame::binary`].
pub type BinaryId = u32;

/// A function symbol of a binary.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Symbol {
    /// File offset of the function's first byte (the ELF symbol's address translated through
    /// the program header that loads it).
    pub offset: u64,
    /// Size in bytes (0 when the symbol table does not say; it then reaches the next symbol).
    pub size: u64,
    /// Name, demangled when it was mangled.
    pub name: String,
}

/// A binary (executable or shared library) that user frames point into.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BinaryInfo {
    /// The id frames refer to.
    pub id: BinaryId,
    /// GNU build id, lower-case hex; empty when the binary has none.
    pub build_id: String,
    /// Path of the binary as the process mapped it.
    pub path: String,
    /// Function symbols (`.symtab`, else `.dynsym`), sorted by offset.
    pub symbols: Vec<Symbol>,
}

/// One user frame, normalized.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
pub struct Frame {
    /// The binary, or [`Frame::UNKNOWN_BINARY`] when the address is in no file mapping
    /// (anonymous memory, JIT code); `offset` is then the virtual address.
    pub binary: BinaryId,
    /// File offset within the binary. For frames other than the innermost, the offset of
    /// the return address minus one (inside the call instruction).
    pub offset: u64,
}

impl Frame {
    /// [`Frame::binary`] of a frame outside any file mapping.
    pub const UNKNOWN_BINARY: BinaryId = u32::MAX;
}

/// A user stack, unwound at capture time, stored once and referred to by id.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UserStack {
    /// The id events refer to (shared id space with [`StackDef`]).
    pub id: StackId,
    /// Process whose address space it was taken in.
    pub pid: u32,
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
    /// The unwinding stopped before the outermost frame (the stack copy ended, or unwind
    /// information was missing).
    pub truncated: bool,
}

/// A sampled heap allocation (malloc, calloc, realloc, memalign family).
///
/// Sampling is by bytes: on average one sample every `period` bytes allocated (Poisson, as
/// tcmalloc and jemalloc do); `period` 1 means every allocation. An allocation of `size`
/// bytes stands for `1 / (1 - exp(-size / period))` allocations of its size.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HeapAlloc {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Bytes requested.
    pub size: u64,
    /// Address returned.
    pub addr: u64,
    /// The mean sampling period in bytes (1: every allocation).
    pub period: u64,
    /// The allocating user stack ([`UserStack`] id).
    pub stack: StackId,
}

/// A sampled allocation was freed (or reallocated).
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HeapFree {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The address freed (that of an earlier [`HeapAlloc`] of the process).
    pub addr: u64,
}

/// A thread blocked off CPU inside one syscall for at least the capture's minimum.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OffCpu {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Time spent off CPU during the syscall, ns.
    pub blocked_ns: u64,
    /// The syscall number (x86_64), or -1 when unknown.
    pub syscall: i32,
    /// The user stack at the syscall ([`UserStack`] id).
    pub user_stack: Option<StackId>,
    /// The kernel stack where it blocked ([`StackDef`] id).
    pub kernel_stack: Option<StackId>,
}

/// A process's resident memory at a moment.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MemUsage {
    /// Process id.
    pub pid: u32,
    /// Resident anonymous memory, bytes.
    pub rss_anon: u64,
    /// Resident file-backed memory, bytes.
    pub rss_file: u64,
    /// Resident shared memory, bytes.
    pub rss_shmem: u64,
}

/// A sampled user page fault on a page not present: memory the process touched for the first
/// time (resident memory growing), attributed to code without allocator probes. One fault in
/// `weight` is sampled, so each stands for `weight` faults.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PageFault {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The faulting address.
    pub addr: u64,
    /// Faults this sample stands for.
    pub weight: u64,
    /// The user stack at the fault ([`UserStack`] id).
    pub stack: StackId,
}

/// A cgroup's memory at a moment.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CgroupMemory {
    /// cgroup path (v2 unified path).
    pub cgroup: String,
    /// Memory in use (`memory.current`), bytes.
    pub usage: u64,
    /// The limit (`memory.max`), bytes; `None` when unlimited.
    pub limit: Option<u64>,
    /// OOM kills in the cgroup so far (`memory.events` oom_kill).
    pub oom_kills: u64,
}

// ---------------------------------------------------------------------------------------------
// Logs, loss, marks, node

/// A write to stdout/stderr or a log file.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LogWrite {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// File descriptor written to.
    pub fd: i32,
    /// Path of the file, empty for fd 1 and 2.
    pub path: String,
    /// Real size of the write.
    pub size: u64,
    /// The first bytes.
    pub payload: Vec<u8>,
}

/// Why events were dropped.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// The kernel ring buffer was full.
    RingFull,
    /// A per-CPU scratch area or map was full.
    MapFull,
    /// The user-space queue to the writer was full.
    QueueFull,
    /// Dropped deliberately by sampling or a rate limit.
    Sampled,
}

/// Events of `kind` were dropped on `cpu` between `from_ns` and `to_ns`.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LossMarker {
    /// The kind of the dropped events (`lost_kind` in JSON: the event's own tag is `kind`).
    #[serde(rename = "lost_kind", alias = "dropped_kind")]
    pub kind: EventKind,
    /// CPU, or `u32::MAX` when not per CPU.
    pub cpu: u32,
    /// How many were dropped.
    pub count: u64,
    /// Why.
    pub reason: LossReason,
    /// Start of the interval (monotonic ns).
    pub from_ns: u64,
    /// End of the interval (monotonic ns).
    pub to_ns: u64,
}

/// Where a mark came from.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum MarkSource {
    /// `retrace mark DIR "note"`.
    User,
    /// SIGUSR1 to the daemon.
    Signal,
    /// An automatic trigger.
    Trigger,
}

/// A user's note or a trigger at a time.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Mark {
    /// Where it came from.
    pub source: MarkSource,
    /// The note.
    pub note: String,
}

/// A pairing of monotonic and wall-clock time taken at the same moment.
#[derive(
    Archive,
    RSerialize,
    RDeserialize,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
)]
pub struct ClockSync {
    /// CLOCK_MONOTONIC, ns.
    pub mono_ns: u64,
    /// CLOCK_REALTIME, ns since the Unix epoch.
    pub wall_ns: u64,
}

impl ClockSync {
    /// Converts a monotonic timestamp to wall-clock ns since the epoch.
    pub fn to_wall(&self, mono_ns: u64) -> u64 {
        let delta = i128::from(mono_ns) - i128::from(self.mono_ns);
        let wall = i128::from(self.wall_ns) + delta;
        u64::try_from(wall.max(0)).unwrap_or(u64::MAX)
    }

    /// Converts a wall-clock time (ns since the epoch) to monotonic ns.
    pub fn to_mono(&self, wall_ns: u64) -> u64 {
        let delta = i128::from(wall_ns) - i128::from(self.wall_ns);
        let mono = i128::from(self.mono_ns) + delta;
        u64::try_from(mono.max(0)).unwrap_or(u64::MAX)
    }
}

/// Facts about the node that recorded the capture.
#[derive(
    Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq, Default,
)]
pub struct NodeInfo {
    /// Node name (`--node`, or the hostname).
    pub name: String,
    /// Hostname.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// Boot time, wall-clock ns since the epoch.
    pub boot_time_ns: u64,
    /// Monotonic↔wall mapping taken when this was recorded.
    pub clock: ClockSync,
    /// Number of CPUs.
    pub cpus: u32,
}

// ---------------------------------------------------------------------------------------------
// State snapshots (segment headers)

/// A listening socket at a moment.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ListenSocket {
    /// Owning process.
    pub pid: u32,
    /// File descriptor.
    pub fd: i32,
    /// Local endpoint.
    pub local: Endpoint,
}

/// An open connection at a moment.
#[derive(Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OpenConnection {
    /// The socket.
    pub conn: ConnId,
    /// Local endpoint.
    pub local: Endpoint,
    /// Remote endpoint.
    pub remote: Endpoint,
    /// True when it was accepted (we are the server side).
    pub inbound: bool,
}

/// The state at a segment's start, so that each segment can be read alone.
#[derive(
    Archive, RSerialize, RDeserialize, Serialize, Deserialize, Clone, Debug, PartialEq, Default,
)]
pub struct StateSnapshot {
    /// Live processes.
    pub processes: Vec<ProcessInfo>,
    /// Listening sockets.
    pub listening: Vec<ListenSocket>,
    /// Open connections.
    pub connections: Vec<OpenConnection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.name()), Some(k));
            assert_eq!(EventKind::from_u8(k.as_u8()), Some(k));
        }
        assert_eq!(EventKind::from_u8(EventKind::ALL.len() as u8), None);
    }

    #[test]
    fn ipv4_is_mapped_and_shown_as_v4() {
        let a = Addr::from("10.1.2.3".parse::<IpAddr>().expect("valid"));
        assert_eq!(a.to_string(), "10.1.2.3");
        assert_eq!(a.0[10..12], [0xff, 0xff]);
        let b = Addr::from("2001:db8::1".parse::<IpAddr>().expect("valid"));
        assert_eq!(b.to_string(), "2001:db8::1");
    }

    #[test]
    fn clock_sync_maps_both_ways() {
        let c = ClockSync {
            mono_ns: 1_000,
            wall_ns: 1_700_000_000_000_000_000,
        };
        assert_eq!(c.to_wall(1_500), 1_700_000_000_000_000_500);
        assert_eq!(c.to_mono(c.to_wall(42_000)), 42_000);
        assert_eq!(c.to_wall(0), 1_699_999_999_999_999_000);
    }
}
