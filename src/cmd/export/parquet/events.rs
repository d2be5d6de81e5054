//! The decoded events as tables, one per family of event kinds (`docs/parquet.md`), filled as
//! the replay hands them over and cut into batches of [`BATCH_ROWS`] rows per (node, hour).
//!
//! Every table starts with `time` (wall clock, `timestamp[ns, UTC]`) and `kind` (the event
//! kind's name, as `retrace replay` and its filters name it). Monotonic times of the capture
//! (a socket's start, a loss interval) are converted to wall clock with the event's own
//! mapping. Endpoints are the event's, or the replay's socket table's when the event has
//! none; an unspecified address or port is null. `comm` is the owning process's command name
//! at that moment (the replay's process table), null when unknown.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use retrace_replay::ReplayedEvent;
use retrace_segment::{
    Addr, ConnId, Direction, Endpoint, EventBody, LossReason, MarkSource, TcpSampleKind, TcpStep,
};

use super::columns::{
    bits, count, i32_of, push_stack_count, table, ts, Bin, Bool, I64List, StackCounts, Str,
    StrList, Table, Time, I32, I64,
};
use super::dataset::{Partition, Sink, BATCH_ROWS, HOUR_NS};

table! {
    /// Process life: `exec`, `fork` (pid is the child's, ppid the parent's), `exit`,
    /// `thread` (a thread started: tid the new one, parent_tid its starter), `oom`.
    pub struct Process = "events_process" {
        time: Time,
        kind: Str,
        pid: I64,
        ppid: I64 null,
        tid: I64 null,
        parent_tid: I64 null,
        comm: Str null,
        exe: Str null,
        cmdline: StrList null,
        cgroup: Str null,
        container_id: Str null,
        exit_code: I32 null,
        signal: I32 null,
        oom_killed: Bool null,
    }
}

table! {
    /// TCP connection lifecycle steps.
    pub struct Tcp = "events_tcp" {
        time: Time,
        kind: Str,
        step: Str,
        pid: I64,
        fd: I32,
        conn_start: Time,
        tid: I64 null,
        comm: Str null,
        local_addr: Str null,
        local_port: I32 null,
        remote_addr: Str null,
        remote_port: I32 null,
        latency_ns: I64 null,
        errno: I32 null,
        bytes_sent: I64 null,
        bytes_received: I64 null,
    }
}

table! {
    /// Starts of application messages on TCP sockets, with their captured first bytes. Each
    /// batch is grouped by connection (time order within it): the connection's columns
    /// become runs, and its messages, alike, sit side by side for the compressor.
    pub struct L7 = "events_l7" order [pid, fd, conn_start, time] {
        time: Time,
        kind: Str,
        pid: I64,
        fd: I32,
        conn_start: Time,
        tid: I64,
        comm: Str null,
        direction: Str,
        size: I64,
        payload: Bin,
        tcp_seq: I64 null,
        folded_calls: I64,
        folded_bytes: I64,
        local_addr: Str null,
        local_port: I32 null,
        remote_addr: Str null,
        remote_port: I32 null,
    }
}

table! {
    /// Retransmits, resets and RTT samples.
    pub struct TcpSample = "events_tcp_sample" {
        time: Time,
        kind: Str,
        what: Str,
        pid: I64 null,
        comm: Str null,
        local_addr: Str null,
        local_port: I32 null,
        remote_addr: Str null,
        remote_port: I32 null,
        state: I32,
        srtt_us: I64 null,
    }
}

table! {
    /// UDP datagrams (DNS in practice), with their captured first bytes.
    pub struct Udp = "events_udp" {
        time: Time,
        kind: Str,
        pid: I64,
        tid: I64,
        comm: Str null,
        direction: Str,
        local_addr: Str null,
        local_port: I32 null,
        remote_addr: Str null,
        remote_port: I32 null,
        size: I64,
        payload: Bin,
    }
}

table! {
    /// CPU stack samples (stacks in `events_stack`).
    pub struct Cpu = "events_cpu" {
        time: Time,
        kind: Str,
        pid: I64,
        tid: I64,
        comm: Str null,
        cpu: I32,
        user_stack: I64 null,
        kernel_stack: I64 null,
    }
}

table! {
    /// Sampled allocations.
    pub struct Alloc = "events_alloc" {
        time: Time,
        kind: Str,
        pid: I64,
        tid: I64,
        comm: Str null,
        size: I64,
        addr: I64,
        stack: I64,
    }
}

table! {
    /// Outstanding allocations of a process by stack, at a moment.
    pub struct AllocSnapshot = "events_alloc_snapshot" {
        time: Time,
        kind: Str,
        pid: I64,
        comm: Str null,
        rss_bytes: I64,
        by_stack: StackCounts,
    }
}

table! {
    /// Stacks, stored once and referred to by id (per node).
    pub struct Stack = "events_stack" {
        time: Time,
        kind: Str,
        stack_id: I64,
        pid: I64 null,
        frames: I64List,
        symbols: StrList,
    }
}

table! {
    /// Writes to stdout/stderr and log files, with their first bytes.
    pub struct Log = "events_log" {
        time: Time,
        kind: Str,
        pid: I64,
        tid: I64,
        comm: Str null,
        fd: I32,
        path: Str,
        size: I64,
        payload: Bin,
    }
}

table! {
    /// Loss markers: events of `lost_kind` the capture dropped.
    pub struct Loss = "events_loss" {
        time: Time,
        kind: Str,
        lost_kind: Str,
        cpu: I32 null,
        lost: I64,
        reason: Str,
        interval_start: Time,
        interval_end: Time,
    }
}

table! {
    /// Marks: a user's notes, signals and triggers.
    pub struct Mark = "events_mark" {
        time: Time,
        kind: Str,
        source: Str,
        note: Str,
    }
}

table! {
    /// Facts about the node that recorded the capture.
    pub struct Node = "events_node" {
        time: Time,
        kind: Str,
        name: Str,
        hostname: Str,
        kernel: Str,
        boot_time: Time,
        clock_mono_ns: I64,
        clock_wall: Time,
        cpus: I32,
    }
}

table! {
    /// Binaries that user stacks point into, with their symbols (as parallel lists).
    pub struct Binary = "events_binary" {
        time: Time,
        kind: Str,
        binary_id: I64,
        build_id: Str,
        path: Str,
        symbol_offsets: I64List,
        symbol_sizes: I64List,
        symbol_names: StrList,
    }
}

table! {
    /// User stacks unwound at capture time, frames as (binary, file offset).
    pub struct UserStack = "events_ustack" {
        time: Time,
        kind: Str,
        stack_id: I64,
        pid: I64,
        frame_binaries: I64List,
        frame_offsets: I64List,
        truncated: Bool,
    }
}

table! {
    /// Sampled heap allocations (`malloc`) and their frees (`free`).
    pub struct Heap = "events_heap" {
        time: Time,
        kind: Str,
        pid: I64,
        tid: I64,
        comm: Str null,
        addr: I64,
        size: I64 null,
        period: I64 null,
        stack: I64 null,
    }
}

table! {
    /// Threads off CPU in a syscall.
    pub struct OffCpu = "events_offcpu" {
        time: Time,
        kind: Str,
        pid: I64,
        tid: I64,
        comm: Str null,
        blocked_ns: I64,
        syscall: I32,
        user_stack: I64 null,
        kernel_stack: I64 null,
    }
}

table! {
    /// A process's resident memory at a moment.
    pub struct Mem = "events_mem" {
        time: Time,
        kind: Str,
        pid: I64,
        comm: Str null,
        rss_anon: I64,
        rss_file: I64,
        rss_shmem: I64,
    }
}

table! {
    /// A cgroup's memory at a moment.
    pub struct CgroupMem = "events_cgroup_mem" {
        time: Time,
        kind: Str,
        cgroup: Str,
        usage: I64,
        limit: I64 null,
        oom_kills: I64,
    }
}

table! {
    /// Sampled user page faults on pages not present (resident memory growing).
    pub struct Fault = "events_fault" {
        time: Time,
        kind: Str,
        pid: I64,
        tid: I64,
        comm: Str null,
        addr: I64,
        weight: I64,
        stack: I64,
    }
}

/// Calls `$m!(field, Type)` for every event table of a [`Tables`].
macro_rules! each_table {
    ($m:ident) => {
        $m!(process, Process);
        $m!(tcp, Tcp);
        $m!(l7, L7);
        $m!(tcp_sample, TcpSample);
        $m!(udp, Udp);
        $m!(cpu, Cpu);
        $m!(alloc, Alloc);
        $m!(alloc_snapshot, AllocSnapshot);
        $m!(stack, Stack);
        $m!(log, Log);
        $m!(loss, Loss);
        $m!(mark, Mark);
        $m!(node, Node);
        $m!(binary, Binary);
        $m!(ustack, UserStack);
        $m!(heap, Heap);
        $m!(offcpu, OffCpu);
        $m!(mem, Mem);
        $m!(cgroup_mem, CgroupMem);
        $m!(fault, Fault);
    };
}

/// Every event table of one partition (node, hour).
struct Tables {
    process: Process,
    tcp: Tcp,
    l7: L7,
    tcp_sample: TcpSample,
    udp: Udp,
    cpu: Cpu,
    alloc: Alloc,
    alloc_snapshot: AllocSnapshot,
    stack: Stack,
    log: Log,
    loss: Loss,
    mark: Mark,
    node: Node,
    binary: Binary,
    ustack: UserStack,
    heap: Heap,
    offcpu: OffCpu,
    mem: Mem,
    cgroup_mem: CgroupMem,
    fault: Fault,
}

impl Tables {
    fn new() -> Self {
        Self {
            process: Process::new(),
            tcp: Tcp::new(),
            l7: L7::new(),
            tcp_sample: TcpSample::new(),
            udp: Udp::new(),
            cpu: Cpu::new(),
            alloc: Alloc::new(),
            alloc_snapshot: AllocSnapshot::new(),
            stack: Stack::new(),
            log: Log::new(),
            loss: Loss::new(),
            mark: Mark::new(),
            node: Node::new(),
            binary: Binary::new(),
            ustack: UserStack::new(),
            heap: Heap::new(),
            offcpu: OffCpu::new(),
            mem: Mem::new(),
            cgroup_mem: CgroupMem::new(),
            fault: Fault::new(),
        }
    }

    /// Sends every table's rows; with `close`, closes their files too.
    fn flush(&mut self, p: &Partition, sink: &Sink, close: bool) -> anyhow::Result<()> {
        macro_rules! flush_one {
            ($f:ident, $t:ident) => {
                sink.send(p, &mut self.$f)?;
                if close {
                    sink.close::<$t>(p)?;
                }
            };
        }
        each_table!(flush_one);
        Ok(())
    }
}

/// The event tables: name and columns.
pub fn schemas() -> Vec<(&'static str, Vec<arrow_schema::Field>)> {
    let mut v = Vec::new();
    macro_rules! schema {
        ($f:ident, $t:ident) => {
            v.push((<$t as Table>::NAME, <$t as Table>::fields()));
        };
    }
    each_table!(schema);
    v
}

/// Addresses formatted once each (bounded).
#[derive(Default)]
struct Addrs(HashMap<Addr, Box<str>>);

impl Addrs {
    const MAX: usize = 1 << 16;

    /// The address and port of `e`, each `None` when unspecified.
    fn of(&mut self, e: &Endpoint) -> (Option<&str>, Option<i32>) {
        let port = (e.port != 0).then_some(i32::from(e.port));
        if e.addr.ip().is_unspecified() {
            return (None, port);
        }
        if self.0.len() >= Self::MAX && !self.0.contains_key(&e.addr) {
            self.0.clear();
        }
        let s = self
            .0
            .entry(e.addr)
            .or_insert_with(|| e.addr.to_string().into_boxed_str());
        (Some(&**s), port)
    }
}

/// Receives the replayed events and writes them, table by table, into the dataset.
pub struct EventWriter {
    sink: Sink,
    open: Vec<(Partition, Box<Tables>)>,
    addrs: Addrs,
    /// Rows written, by event kind.
    counts: BTreeMap<&'static str, u64>,
    error: Option<anyhow::Error>,
}

impl EventWriter {
    /// A writer sending its batches to `sink`.
    pub fn new(sink: Sink) -> Self {
        Self {
            sink,
            open: Vec::new(),
            addrs: Addrs::default(),
            counts: BTreeMap::new(),
            error: None,
        }
    }

    /// Takes a batch of events (the analysis' observer); after an error, ignores the rest
    /// ([`EventWriter::finish`] returns it).
    pub fn observe(&mut self, batch: &[ReplayedEvent]) {
        if self.error.is_some() {
            return;
        }
        for ev in batch {
            if let Err(e) = self.push(ev) {
                self.error = Some(e);
                return;
            }
        }
    }

    /// Sends what is left, closes every file and waits until the writer thread has written
    /// them (so that their memory is free); the rows written by event kind.
    pub fn finish(mut self) -> anyhow::Result<BTreeMap<&'static str, u64>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        for (p, t) in &mut self.open {
            t.flush(p, &self.sink, true)?;
        }
        self.open.clear();
        self.sink.sync()?;
        Ok(self.counts)
    }

    /// The open partition of `ev`, opened (and older hours of its node closed) when new.
    fn partition_of(&mut self, ev: &ReplayedEvent) -> anyhow::Result<usize> {
        let hour = ev.wall_ns / HOUR_NS;
        let same = |p: &Partition| {
            p.hour == Some(hour) && p.node.as_ref().is_some_and(|n| Arc::ptr_eq(n, &ev.node))
        };
        // The last one used is the likely one.
        if let Some(i) = self.open.iter().rposition(|(p, _)| same(p)) {
            return Ok(i);
        }
        let by_name = |p: &Partition| p.node.as_deref() == Some(&*ev.node);
        if let Some(i) = self
            .open
            .iter()
            .position(|(p, _)| by_name(p) && p.hour == Some(hour))
        {
            return Ok(i);
        }
        // An hour of this node ends when a later one starts (the replay is in time order).
        let mut i = 0;
        while i < self.open.len() {
            if by_name(&self.open[i].0) && self.open[i].0.hour < Some(hour) {
                let (p, mut t) = self.open.swap_remove(i);
                t.flush(&p, &self.sink, true)?;
            } else {
                i += 1;
            }
        }
        self.open
            .push((Partition::at(&ev.node, ev.wall_ns), Box::new(Tables::new())));
        Ok(self.open.len() - 1)
    }

    fn push(&mut self, ev: &ReplayedEvent) -> anyhow::Result<()> {
        let i = self.partition_of(ev)?;
        let (p, t) = &mut self.open[i];
        let kind = ev.event.kind().name();
        *self.counts.entry(kind).or_insert(0) += 1;
        let time = ts(ev.wall_ns);
        // A monotonic time of the event's node as wall clock (the event's own mapping).
        let wall = |mono: u64| -> i64 {
            let w = i128::from(ev.wall_ns) + i128::from(mono) - i128::from(ev.event.ts);
            i64::try_from(w.max(0)).unwrap_or(i64::MAX)
        };
        let comm = ev.comm();
        let ends = |own: (&Endpoint, &Endpoint)| match &ev.endpoints {
            Some((l, r)) if !(l.addr.ip().is_unspecified() && l.port == 0) => (*l, *r),
            _ => (*own.0, *own.1),
        };
        let addrs = &mut self.addrs;
        let sink = &self.sink;
        macro_rules! endpoints {
            ($t:expr, $local:expr, $remote:expr) => {{
                let (a, port) = addrs.of($local);
                $t.local_addr.append_option(a);
                $t.local_port.append_option(port);
                let (a, port) = addrs.of($remote);
                $t.remote_addr.append_option(a);
                $t.remote_port.append_option(port);
            }};
        }
        macro_rules! conn {
            ($t:expr, $c:expr) => {{
                let c: &ConnId = $c;
                $t.pid.append_value(i64::from(c.pid));
                $t.fd.append_value(c.fd);
                $t.conn_start.append_value(wall(c.start_ns));
            }};
        }
        macro_rules! done {
            ($t:expr) => {
                if $t.rows() >= BATCH_ROWS {
                    sink.send(p, &mut $t)?;
                }
            };
        }
        match &ev.event.body {
            EventBody::ProcExec(e) => {
                let t = &mut t.process;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.ppid.append_value(i64::from(e.ppid));
                t.tid.append_null();
                t.parent_tid.append_null();
                t.comm.append_value(&e.comm);
                t.exe.append_value(&e.exe);
                t.cmdline.values().extend(e.cmdline.iter().map(Some));
                t.cmdline.append(true);
                t.cgroup.append_value(&e.cgroup);
                t.container_id.append_option(e.container_id.as_deref());
                t.exit_code.append_null();
                t.signal.append_null();
                t.oom_killed.append_null();
                done!(*t);
            }
            EventBody::ProcFork(e) => {
                let t = &mut t.process;
                process_row(t, time, kind, e.child_pid, Some(e.parent_pid), None, None);
                t.comm.append_value(&e.comm);
                process_tail(t, None);
                done!(*t);
            }
            EventBody::ProcExit(e) => {
                let t = &mut t.process;
                process_row(t, time, kind, e.pid, None, None, None);
                t.comm.append_value(&e.comm);
                process_tail(t, Some((e.exit_code, e.signal, e.oom_killed)));
                done!(*t);
            }
            EventBody::ThreadStart(e) => {
                let t = &mut t.process;
                process_row(t, time, kind, e.pid, None, Some(e.tid), Some(e.parent_tid));
                t.comm.append_option(comm);
                process_tail(t, None);
                done!(*t);
            }
            EventBody::OomKill(e) => {
                let t = &mut t.process;
                process_row(t, time, kind, e.pid, None, None, None);
                t.comm
                    .append_option(Some(e.comm.as_str()).filter(|c| !c.is_empty()).or(comm));
                process_tail(t, None);
                done!(*t);
            }
            EventBody::Tcp(e) => {
                let t = &mut t.tcp;
                t.time.append_value(time);
                t.kind.append_value(kind);
                let (step, latency, errno, sent, received) = match &e.step {
                    TcpStep::ConnectAttempt => ("connect_attempt", None, None, None, None),
                    TcpStep::Established { latency_ns } => {
                        ("established", Some(*latency_ns), None, None, None)
                    }
                    TcpStep::Failed { errno, latency_ns } => {
                        ("failed", Some(*latency_ns), Some(*errno), None, None)
                    }
                    TcpStep::Accepted => ("accepted", None, None, None, None),
                    TcpStep::Closed {
                        bytes_sent,
                        bytes_received,
                    } => (
                        "closed",
                        None,
                        None,
                        Some(*bytes_sent),
                        Some(*bytes_received),
                    ),
                    TcpStep::ListenOpen => ("listen_open", None, None, None, None),
                    TcpStep::ListenClose => ("listen_close", None, None, None, None),
                };
                t.step.append_value(step);
                conn!(t, &e.conn);
                t.tid.append_option((e.tid != 0).then(|| i64::from(e.tid)));
                t.comm.append_option(comm);
                endpoints!(t, &e.local, &e.remote);
                t.latency_ns.append_option(latency.map(count));
                t.errno.append_option(errno);
                t.bytes_sent.append_option(sent.map(count));
                t.bytes_received.append_option(received.map(count));
                done!(*t);
            }
            EventBody::L7(e) => {
                let t = &mut t.l7;
                t.time.append_value(time);
                t.kind.append_value(kind);
                conn!(t, &e.conn);
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.direction.append_value(direction(e.direction));
                t.size.append_value(count(e.size));
                t.payload.append_value(&e.payload);
                t.tcp_seq.append_option(e.tcp_seq.map(i64::from));
                t.folded_calls.append_value(i64::from(e.folded_calls));
                t.folded_bytes.append_value(count(e.folded_bytes));
                let (l, r) = ends((&e.local, &e.remote));
                endpoints!(t, &l, &r);
                done!(*t);
            }
            EventBody::TcpSample(e) => {
                let t = &mut t.tcp_sample;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.what.append_value(match e.what {
                    TcpSampleKind::Retransmit => "retransmit",
                    TcpSampleKind::ResetSent => "reset_sent",
                    TcpSampleKind::ResetReceived => "reset_received",
                    TcpSampleKind::Rtt => "rtt",
                    TcpSampleKind::SynAckRetransmit => "synack_retransmit",
                    TcpSampleKind::ZeroWindow => "zero_window",
                });
                t.pid.append_option(e.pid.map(i64::from));
                t.comm.append_option(comm);
                endpoints!(t, &e.local, &e.remote);
                t.state.append_value(i32::from(e.state));
                t.srtt_us
                    .append_option((e.srtt_us != 0).then_some(i64::from(e.srtt_us)));
                done!(*t);
            }
            EventBody::Udp(e) => {
                let t = &mut t.udp;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.direction.append_value(direction(e.direction));
                endpoints!(t, &e.local, &e.remote);
                t.size.append_value(count(e.size));
                t.payload.append_value(&e.payload);
                done!(*t);
            }
            EventBody::CpuSample(e) => {
                let t = &mut t.cpu;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.cpu.append_value(i32_of(e.cpu));
                t.user_stack.append_option(e.user_stack.map(bits));
                t.kernel_stack.append_option(e.kernel_stack.map(bits));
                done!(*t);
            }
            EventBody::AllocSample(e) => {
                let t = &mut t.alloc;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.size.append_value(count(e.size));
                t.addr.append_value(bits(e.addr));
                t.stack.append_value(bits(e.stack));
                done!(*t);
            }
            EventBody::AllocSnapshot(e) => {
                let t = &mut t.alloc_snapshot;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.comm.append_option(comm);
                t.rss_bytes.append_value(count(e.rss_bytes));
                for s in &e.by_stack {
                    push_stack_count(
                        &mut t.by_stack,
                        bits(s.stack),
                        count(s.bytes),
                        count(s.count),
                    );
                }
                t.by_stack.append(true);
                done!(*t);
            }
            EventBody::StackDef(e) => {
                let t = &mut t.stack;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.stack_id.append_value(bits(e.id));
                t.pid.append_option(e.pid.map(i64::from));
                t.frames
                    .values()
                    .extend(e.frames.iter().map(|&f| Some(bits(f))));
                t.frames.append(true);
                t.symbols.values().extend(e.symbols.iter().map(Some));
                t.symbols.append(true);
                done!(*t);
            }
            EventBody::Log(e) => {
                let t = &mut t.log;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.fd.append_value(e.fd);
                t.path.append_value(&e.path);
                t.size.append_value(count(e.size));
                t.payload.append_value(&e.payload);
                done!(*t);
            }
            EventBody::Loss(e) => {
                let t = &mut t.loss;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.lost_kind.append_value(e.kind.name());
                t.cpu
                    .append_option((e.cpu != u32::MAX).then(|| i32_of(e.cpu)));
                t.lost.append_value(count(e.count));
                t.reason.append_value(match e.reason {
                    LossReason::RingFull => "ring_full",
                    LossReason::MapFull => "map_full",
                    LossReason::QueueFull => "queue_full",
                    LossReason::Sampled => "sampled",
                });
                t.interval_start.append_value(wall(e.from_ns));
                t.interval_end.append_value(wall(e.to_ns));
                done!(*t);
            }
            EventBody::Mark(e) => {
                let t = &mut t.mark;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.source.append_value(match e.source {
                    MarkSource::User => "user",
                    MarkSource::Signal => "signal",
                    MarkSource::Trigger => "trigger",
                });
                t.note.append_value(&e.note);
                done!(*t);
            }
            EventBody::Binary(e) => {
                let t = &mut t.binary;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.binary_id.append_value(i64::from(e.id));
                t.build_id.append_value(&e.build_id);
                t.path.append_value(&e.path);
                t.symbol_offsets
                    .values()
                    .extend(e.symbols.iter().map(|y| Some(bits(y.offset))));
                t.symbol_offsets.append(true);
                t.symbol_sizes
                    .values()
                    .extend(e.symbols.iter().map(|y| Some(count(y.size))));
                t.symbol_sizes.append(true);
                t.symbol_names
                    .values()
                    .extend(e.symbols.iter().map(|y| Some(y.name.as_str())));
                t.symbol_names.append(true);
                done!(*t);
            }
            EventBody::UserStack(e) => {
                let t = &mut t.ustack;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.stack_id.append_value(bits(e.id));
                t.pid.append_value(i64::from(e.pid));
                t.frame_binaries
                    .values()
                    .extend(e.frames.iter().map(|f| Some(i64::from(f.binary))));
                t.frame_binaries.append(true);
                t.frame_offsets
                    .values()
                    .extend(e.frames.iter().map(|f| Some(bits(f.offset))));
                t.frame_offsets.append(true);
                t.truncated.append_value(e.truncated);
                done!(*t);
            }
            EventBody::HeapAlloc(e) => {
                let t = &mut t.heap;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.addr.append_value(bits(e.addr));
                t.size.append_value(count(e.size));
                t.period.append_value(count(e.period));
                t.stack.append_value(bits(e.stack));
                done!(*t);
            }
            EventBody::HeapFree(e) => {
                let t = &mut t.heap;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.addr.append_value(bits(e.addr));
                t.size.append_null();
                t.period.append_null();
                t.stack.append_null();
                done!(*t);
            }
            EventBody::OffCpu(e) => {
                let t = &mut t.offcpu;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.blocked_ns.append_value(count(e.blocked_ns));
                t.syscall.append_value(e.syscall);
                t.user_stack.append_option(e.user_stack.map(bits));
                t.kernel_stack.append_option(e.kernel_stack.map(bits));
                done!(*t);
            }
            EventBody::MemUsage(e) => {
                let t = &mut t.mem;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.comm.append_option(comm);
                t.rss_anon.append_value(count(e.rss_anon));
                t.rss_file.append_value(count(e.rss_file));
                t.rss_shmem.append_value(count(e.rss_shmem));
                done!(*t);
            }
            EventBody::CgroupMemory(e) => {
                let t = &mut t.cgroup_mem;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.cgroup.append_value(&e.cgroup);
                t.usage.append_value(count(e.usage));
                t.limit.append_option(e.limit.map(count));
                t.oom_kills.append_value(count(e.oom_kills));
                done!(*t);
            }
            EventBody::PageFault(e) => {
                let t = &mut t.fault;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.pid.append_value(i64::from(e.pid));
                t.tid.append_value(i64::from(e.tid));
                t.comm.append_option(comm);
                t.addr.append_value(bits(e.addr));
                t.weight.append_value(count(e.weight));
                t.stack.append_value(bits(e.stack));
                done!(*t);
            }
            EventBody::Node(e) => {
                let t = &mut t.node;
                t.time.append_value(time);
                t.kind.append_value(kind);
                t.name.append_value(&e.name);
                t.hostname.append_value(&e.hostname);
                t.kernel.append_value(&e.kernel);
                t.boot_time.append_value(ts(e.boot_time_ns));
                t.clock_mono_ns.append_value(count(e.clock.mono_ns));
                t.clock_wall.append_value(ts(e.clock.wall_ns));
                t.cpus.append_value(i32_of(e.cpus));
                done!(*t);
            }
        }
        Ok(())
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}

/// The first columns of a row of [`Process`] (up to `parent_tid`).
fn process_row(
    t: &mut Process,
    time: i64,
    kind: &str,
    pid: u32,
    ppid: Option<u32>,
    tid: Option<u32>,
    parent_tid: Option<u32>,
) {
    t.time.append_value(time);
    t.kind.append_value(kind);
    t.pid.append_value(i64::from(pid));
    t.ppid.append_option(ppid.map(i64::from));
    t.tid.append_option(tid.map(i64::from));
    t.parent_tid.append_option(parent_tid.map(i64::from));
}

/// The columns of a row of [`Process`] after `comm`: exec's null, `exit`'s when given.
fn process_tail(t: &mut Process, exit: Option<(i32, i32, bool)>) {
    t.exe.append_null();
    t.cmdline.append_null();
    t.cgroup.append_null();
    t.container_id.append_null();
    t.exit_code.append_option(exit.map(|e| e.0));
    t.signal.append_option(exit.map(|e| e.1));
    t.oom_killed.append_option(exit.map(|e| e.2));
}
