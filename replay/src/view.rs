//! [`EventView`]: one event with what the replay knows around it (node, process, socket), and
//! the derived fields that filters and output formats read.

use retrace_segment::{Direction, Endpoint, Event, EventBody, ProcessInfo, TcpSampleKind, TcpStep};

/// One event seen with its context: the node that recorded it, the process that owns it (from
/// the process table) and the socket endpoints (from the event, or the socket table when the
/// event does not carry them).
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// The event.
    pub event: &'a Event,
    /// Name of the node that recorded it.
    pub node: &'a str,
    /// The owning process as known when the event happened.
    pub process: Option<&'a ProcessInfo>,
    /// `(local, remote)` socket endpoints, when the event concerns a socket and they are known.
    pub endpoints: Option<(Endpoint, Endpoint)>,
}

impl<'a> EventView<'a> {
    /// The process id of the event, when it has one.
    pub fn pid(&self) -> Option<u32> {
        self.event.pid()
    }

    /// The parent process id, from the event or the process table.
    pub fn ppid(&self) -> Option<u32> {
        match &self.event.body {
            EventBody::ProcExec(e) => Some(e.ppid),
            EventBody::ProcFork(e) => Some(e.parent_pid),
            _ => self.process.map(|p| p.ppid),
        }
    }

    /// The thread id, for events taken in a thread's context.
    pub fn tid(&self) -> Option<u32> {
        match &self.event.body {
            EventBody::Tcp(e) if e.tid != 0 => Some(e.tid),
            EventBody::L7(e) => Some(e.tid),
            EventBody::Udp(e) => Some(e.tid),
            EventBody::AllocSample(e) => Some(e.tid),
            EventBody::CpuSample(e) => Some(e.tid),
            EventBody::Log(e) => Some(e.tid),
            EventBody::HeapAlloc(e) => Some(e.tid),
            EventBody::HeapFree(e) => Some(e.tid),
            EventBody::OffCpu(e) => Some(e.tid),
            EventBody::PageFault(e) => Some(e.tid),
            _ => None,
        }
    }

    /// The command name: from the event itself for exec/fork/exit/oom, else the process table.
    pub fn comm(&self) -> Option<&'a str> {
        match &self.event.body {
            EventBody::ProcExec(e) => Some(e.comm.as_str()),
            EventBody::ProcFork(e) => Some(e.comm.as_str()),
            EventBody::ProcExit(e) if !e.comm.is_empty() => Some(e.comm.as_str()),
            EventBody::OomKill(e) if !e.comm.is_empty() => Some(e.comm.as_str()),
            _ => self
                .process
                .map(|p| p.comm.as_str())
                .filter(|c| !c.is_empty()),
        }
    }

    /// The executable path, from an exec event or the process table.
    pub fn exe(&self) -> Option<&'a str> {
        match &self.event.body {
            EventBody::ProcExec(e) => Some(e.exe.as_str()),
            _ => self
                .process
                .map(|p| p.exe.as_str())
                .filter(|c| !c.is_empty()),
        }
    }

    /// The cgroup path, from an exec event or the process table.
    pub fn cgroup(&self) -> Option<&'a str> {
        match &self.event.body {
            EventBody::ProcExec(e) => Some(e.cgroup.as_str()),
            _ => self
                .process
                .map(|p| p.cgroup.as_str())
                .filter(|c| !c.is_empty()),
        }
    }

    /// The container id, when the cgroup names one.
    pub fn container(&self) -> Option<&'a str> {
        match &self.event.body {
            EventBody::ProcExec(e) => e.container_id.as_deref(),
            _ => self.process.and_then(|p| p.container_id.as_deref()),
        }
    }

    /// The file descriptor the event concerns.
    pub fn fd(&self) -> Option<i32> {
        match &self.event.body {
            EventBody::Tcp(e) => Some(e.conn.fd),
            EventBody::L7(e) => Some(e.conn.fd),
            EventBody::Log(e) => Some(e.fd),
            _ => None,
        }
    }

    /// Which way data went (L7 and UDP messages).
    pub fn direction(&self) -> Option<Direction> {
        match &self.event.body {
            EventBody::L7(e) => Some(e.direction),
            EventBody::Udp(e) => Some(e.direction),
            _ => None,
        }
    }

    /// The local endpoint, when known (an unspecified address with port 0 counts as unknown).
    pub fn local(&self) -> Option<Endpoint> {
        self.endpoints.map(|(l, _)| l).filter(known)
    }

    /// The remote endpoint, when known.
    pub fn remote(&self) -> Option<Endpoint> {
        self.endpoints.map(|(_, r)| r).filter(known)
    }

    /// The real size of the data the event concerns.
    pub fn size(&self) -> Option<u64> {
        match &self.event.body {
            EventBody::L7(e) => Some(e.size),
            EventBody::Udp(e) => Some(e.size),
            EventBody::Log(e) => Some(e.size),
            EventBody::AllocSample(e) => Some(e.size),
            EventBody::HeapAlloc(e) => Some(e.size),
            _ => None,
        }
    }

    /// The captured payload prefix (L7, UDP, log writes).
    pub fn payload(&self) -> Option<&'a [u8]> {
        match &self.event.body {
            EventBody::L7(e) => Some(&e.payload),
            EventBody::Udp(e) => Some(&e.payload),
            EventBody::Log(e) => Some(&e.payload),
            _ => None,
        }
    }

    /// The errno of a failed connect.
    pub fn errno(&self) -> Option<i32> {
        match &self.event.body {
            EventBody::Tcp(e) => match e.step {
                TcpStep::Failed { errno, .. } => Some(errno),
                _ => None,
            },
            _ => None,
        }
    }

    /// The sub-kind: the TCP step, the TCP sample kind, the loss reason or the mark source.
    pub fn step(&self) -> Option<&'static str> {
        match &self.event.body {
            EventBody::Tcp(e) => Some(tcp_step_name(&e.step)),
            EventBody::TcpSample(e) => Some(sample_name(e.what)),
            EventBody::Loss(e) => Some(match e.reason {
                retrace_segment::LossReason::RingFull => "ring_full",
                retrace_segment::LossReason::MapFull => "map_full",
                retrace_segment::LossReason::QueueFull => "queue_full",
                retrace_segment::LossReason::Sampled => "sampled",
            }),
            EventBody::Mark(e) => Some(match e.source {
                retrace_segment::MarkSource::User => "user",
                retrace_segment::MarkSource::Signal => "signal",
                retrace_segment::MarkSource::Trigger => "trigger",
            }),
            _ => None,
        }
    }
}

fn known(e: &Endpoint) -> bool {
    e.port != 0 || !e.addr.ip().is_unspecified()
}

/// The endpoints an event carries itself, `(local, remote)`.
pub(crate) fn event_endpoints(ev: &Event) -> Option<(Endpoint, Endpoint)> {
    match &ev.body {
        EventBody::Tcp(e) => Some((e.local, e.remote)),
        EventBody::L7(e) => Some((e.local, e.remote)),
        EventBody::TcpSample(e) => Some((e.local, e.remote)),
        EventBody::Udp(e) => Some((e.local, e.remote)),
        _ => None,
    }
}

/// Name of a TCP step, as used in filters (`step = established`) and output.
pub fn tcp_step_name(step: &TcpStep) -> &'static str {
    match step {
        TcpStep::ConnectAttempt => "connect_attempt",
        TcpStep::Established { .. } => "established",
        TcpStep::Failed { .. } => "failed",
        TcpStep::Accepted => "accepted",
        TcpStep::Closed { .. } => "closed",
        TcpStep::ListenOpen => "listen_open",
        TcpStep::ListenClose => "listen_close",
    }
}

/// Name of a TCP sample kind.
pub fn sample_name(what: TcpSampleKind) -> &'static str {
    match what {
        TcpSampleKind::Retransmit => "retransmit",
        TcpSampleKind::ResetSent => "reset_sent",
        TcpSampleKind::ResetReceived => "reset_received",
        TcpSampleKind::Rtt => "rtt",
        TcpSampleKind::SynAckRetransmit => "synack_retransmit",
        TcpSampleKind::ZeroWindow => "zero_window",
    }
}

/// Name of a direction, as used in filters and output.
pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}
