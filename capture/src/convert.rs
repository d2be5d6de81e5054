//! The ONE place where kernel records (`retrace_bpf::types`, defined in bpf/src/retrace.h)
//! become events of the on-disk model (`retrace_segment::event`).
//!
//! The file format does not follow the kernel ABI: when a kernel struct changes, this module
//! changes, and the event model stays.

use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr};

use retrace_bpf::types::{rt_data, rt_hdr, rt_hdr_flags, rt_kind, rt_proc, rt_tcp, rt_tcp_step};
use retrace_segment::{
    Addr, ConnId, Direction, Endpoint, Event, EventBody, EventKind, L7Message, LogWrite, OomKill,
    ProcExec, ProcExit, ProcFork, ProcessInfo, TcpEvent, TcpSample, TcpSampleKind, TcpStep,
    ThreadStart, UdpMessage,
};

use crate::procfs;

/// Why a record could not be converted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than its fixed part.
    #[error("kernel record of kind {kind} is {len} bytes, shorter than its {need}-byte layout")]
    Short {
        /// Kind found in the header.
        kind: u16,
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A kind this build does not know.
    #[error("unknown kernel record kind {0}")]
    UnknownKind(u16),
}

/// A kernel record, parsed from ring-buffer bytes.
#[derive(Debug)]
pub enum Record<'a> {
    /// exec, fork, exit, OOM.
    Proc(Box<rt_proc>),
    /// TCP lifecycle and samples.
    Tcp(rt_tcp),
    /// L7, UDP or log record and its payload.
    Data(rt_data, &'a [u8]),
}

/// Reads a `T` from the start of `bytes`.
fn read_pod<T: Copy>(bytes: &[u8], kind: u16) -> Result<T, RecordError> {
    if bytes.len() < size_of::<T>() {
        return Err(RecordError::Short {
            kind,
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: the length was checked above; `T` is one of the skeleton's generated `repr(C)`
    // record types, made of integers and integer arrays only, for which every bit pattern is
    // valid; `read_unaligned` copes with the ring's 8-byte (not T-aligned) placement.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The kind of a record (its header's `kind`), without parsing the rest.
pub fn record_kind(bytes: &[u8]) -> Result<u16, RecordError> {
    Ok(read_pod::<rt_hdr>(bytes, 0)?.kind)
}

/// How many leading bytes of a ring record carry information: payload records are reserved
/// in size classes, so the room after their payload is left as the kernel found it. Records
/// too short to tell keep their length (parsing them reports the error).
pub fn record_used_len(bytes: &[u8]) -> usize {
    const KIND: usize = std::mem::offset_of!(rt_hdr, kind);
    const PAYLOAD_LEN: usize = std::mem::offset_of!(rt_data, payload_len);
    let Some(kind) = bytes.get(KIND..KIND + 2) else {
        return bytes.len();
    };
    let kind = u16::from_ne_bytes([kind[0], kind[1]]);
    if !matches!(
        rt_kind(u32::from(kind)),
        rt_kind::RT_K_L7 | rt_kind::RT_K_UDP | rt_kind::RT_K_LOG
    ) {
        return bytes.len();
    }
    let Some(p) = bytes.get(PAYLOAD_LEN..PAYLOAD_LEN + 4) else {
        return bytes.len();
    };
    let payload = u32::from_ne_bytes([p[0], p[1], p[2], p[3]]) as usize;
    size_of::<rt_data>()
        .saturating_add(payload)
        .min(bytes.len())
}

/// Parses ring-buffer bytes into a [`Record`].
pub fn parse_record(bytes: &[u8]) -> Result<Record<'_>, RecordError> {
    let kind = record_kind(bytes)?;
    match rt_kind(u32::from(kind)) {
        rt_kind::RT_K_EXEC
        | rt_kind::RT_K_FORK
        | rt_kind::RT_K_EXIT
        | rt_kind::RT_K_OOM
        | rt_kind::RT_K_THREAD => Ok(Record::Proc(Box::new(read_pod(bytes, kind)?))),
        rt_kind::RT_K_TCP | rt_kind::RT_K_TCP_SAMPLE => Ok(Record::Tcp(read_pod(bytes, kind)?)),
        rt_kind::RT_K_L7 | rt_kind::RT_K_UDP | rt_kind::RT_K_LOG => {
            let d: rt_data = read_pod(bytes, kind)?;
            let start = size_of::<rt_data>();
            let len = d.payload_len as usize;
            let payload = bytes.get(start..start + len).ok_or(RecordError::Short {
                kind,
                len: bytes.len(),
                need: start + len,
            })?;
            Ok(Record::Data(d, payload))
        }
        _ => Err(RecordError::UnknownKind(kind)),
    }
}

/// The event kind a kernel record kind becomes (for loss accounting).
pub fn event_kind(kind: u32) -> Option<EventKind> {
    Some(match rt_kind(kind) {
        rt_kind::RT_K_EXEC => EventKind::ProcExec,
        rt_kind::RT_K_FORK => EventKind::ProcFork,
        rt_kind::RT_K_EXIT => EventKind::ProcExit,
        rt_kind::RT_K_OOM => EventKind::OomKill,
        rt_kind::RT_K_THREAD => EventKind::ThreadStart,
        rt_kind::RT_K_TCP => EventKind::Tcp,
        rt_kind::RT_K_TCP_SAMPLE => EventKind::TcpSample,
        rt_kind::RT_K_L7 => EventKind::L7,
        rt_kind::RT_K_UDP => EventKind::Udp,
        rt_kind::RT_K_LOG => EventKind::Log,
        _ => return None,
    })
}

/// A NUL-terminated C string from a fixed array.
fn cstr(a: &[i8]) -> String {
    let bytes: Vec<u8> = a
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Local and remote endpoints of a kernel tuple.
fn endpoints(t: &retrace_bpf::types::rt_tuple) -> (Endpoint, Endpoint) {
    let addr = |b: &[u8; 16]| -> Addr {
        if t.family == 2 {
            Addr::from(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            Addr::from(std::net::IpAddr::V6(Ipv6Addr::from(*b)))
        }
    };
    (
        Endpoint {
            addr: addr(&t.saddr),
            port: t.sport,
        },
        Endpoint {
            addr: addr(&t.daddr),
            port: t.dport,
        },
    )
}

/// Live processes, kept current from the proc stream; the source of state snapshots, of
/// exec enrichment (cgroup, container) and of the user-space `--cgroup` filter.
#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<u32, ProcessInfo>,
}

impl ProcTable {
    /// A table from a /proc snapshot.
    pub fn from_proc() -> Self {
        let procs = procfs::pids()
            .into_iter()
            .filter_map(procfs::process_info)
            .map(|p| (p.pid, p))
            .collect();
        Self { procs }
    }

    /// Looks a process up.
    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// Adds or replaces a process.
    pub fn insert(&mut self, info: ProcessInfo) {
        self.procs.insert(info.pid, info);
    }

    /// Forgets a process.
    pub fn remove(&mut self, pid: u32) -> Option<ProcessInfo> {
        self.procs.remove(&pid)
    }

    /// Every process, by pid.
    pub fn snapshot(&self) -> Vec<ProcessInfo> {
        let mut v: Vec<ProcessInfo> = self.procs.values().cloned().collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

/// How long (kernel time) a process that exited is still known to the converter: records of
/// its last moments come through other rings than its exit (one payload ring per CPU, consumed
/// one after the other), so they are often converted after it.
const EXITED_GRACE_NS: u64 = 5_000_000_000;

/// Turns kernel records into events, keeping the process table current.
#[derive(Debug)]
pub struct Converter {
    /// Live processes.
    pub procs: ProcTable,
    /// Processes that exited less than [`EXITED_GRACE_NS`] ago (by the newest record time), for
    /// their records converted after their exit: by pid, the exit time and what was known.
    exited: HashMap<u32, (u64, ProcessInfo)>,
    /// The same, in exit order, for forgetting them.
    exit_order: VecDeque<(u64, u32)>,
    /// The newest record time seen.
    newest_ts: u64,
    oom_victims: HashSet<u32>,
    log_paths: HashMap<(u32, i32), String>,
    cgroup_filter: Option<String>,
    /// Read /proc for exec enrichment (off in unit tests).
    read_proc: bool,
    /// The payload buffer of the last event written, reused by the next one.
    spare: Vec<u8>,
}

/// Largest payload buffer kept for reuse (payload prefixes are at most 4 KiB).
const SPARE_MAX: usize = 64 << 10;

impl Converter {
    /// A converter over `procs`; `cgroup_filter` keeps only processes whose cgroup path
    /// contains it.
    pub fn new(procs: ProcTable, cgroup_filter: Option<String>) -> Self {
        Self {
            procs,
            exited: HashMap::new(),
            exit_order: VecDeque::new(),
            newest_ts: 0,
            oom_victims: HashSet::new(),
            log_paths: HashMap::new(),
            cgroup_filter,
            read_proc: true,
            spare: Vec::new(),
        }
    }

    /// Takes back the payload buffer of an event that has been written, for the next event
    /// (so that converting a record allocates nothing in the steady state).
    pub fn reclaim(&mut self, ev: Event) {
        let payload = match ev.body {
            EventBody::L7(m) => m.payload,
            EventBody::Udp(m) => m.payload,
            EventBody::Log(m) => m.payload,
            _ => return,
        };
        if payload.capacity() <= SPARE_MAX && payload.capacity() > self.spare.capacity() {
            self.spare = payload;
        }
    }

    /// `bytes` in the reclaimed buffer (or a new one).
    fn payload(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut p = std::mem::take(&mut self.spare);
        p.clear();
        p.extend_from_slice(bytes);
        p
    }

    /// Does not read /proc (for tests fed with synthetic records).
    pub fn without_proc_reads(mut self) -> Self {
        self.read_proc = false;
        self
    }

    fn cgroup_ok(&self, pid: u32) -> bool {
        match &self.cgroup_filter {
            None => true,
            Some(f) => self
                .procs
                .get(pid)
                .or_else(|| self.exited.get(&pid).map(|(_, p)| p))
                .is_some_and(|p| p.cgroup.contains(f.as_str())),
        }
    }

    /// Keeps an exited process for its late records (see [`EXITED_GRACE_NS`]).
    fn bury(&mut self, pid: u32, ts: u64) {
        if let Some(info) = self.procs.remove(pid) {
            self.exited.insert(pid, (ts, info));
            self.exit_order.push_back((ts, pid));
        } else {
            self.log_paths.retain(|(p, _), _| *p != pid);
        }
    }

    /// Forgets the processes that exited more than [`EXITED_GRACE_NS`] before `ts`; a pid
    /// used again meanwhile (fork, exec) is left to its new process.
    fn forget_exited(&mut self, ts: u64) {
        self.newest_ts = self.newest_ts.max(ts);
        while let Some(&(at, pid)) = self.exit_order.front() {
            if at.saturating_add(EXITED_GRACE_NS) >= self.newest_ts {
                break;
            }
            self.exit_order.pop_front();
            if self.exited.get(&pid).is_some_and(|(t, _)| *t == at) {
                self.exited.remove(&pid);
                if self.procs.get(pid).is_none() {
                    self.log_paths.retain(|(p, _), _| *p != pid);
                }
            }
        }
    }

    /// Converts one record; `None` when it is filtered out.
    pub fn convert(&mut self, rec: Record<'_>) -> Option<Event> {
        let ts = match &rec {
            Record::Proc(p) => p.h.ts,
            Record::Tcp(t) => t.h.ts,
            Record::Data(d, _) => d.h.ts,
        };
        self.forget_exited(ts);
        match rec {
            Record::Proc(p) => self.proc(&p),
            Record::Tcp(t) => self.tcp(&t),
            Record::Data(d, payload) => self.data(&d, payload),
        }
    }

    fn proc(&mut self, p: &rt_proc) -> Option<Event> {
        let pid = p.h.pid;
        let comm = cstr(&p.comm);
        let body = match rt_kind(u32::from(p.h.kind)) {
            rt_kind::RT_K_EXEC => {
                let args_len = (p.args_len as usize).min(p.args.len());
                let raw: Vec<u8> = p.args[..args_len].iter().map(|c| *c as u8).collect();
                let cmdline = procfs::split_args(&raw);
                // the program the kernel loaded; /proc/PID/exe only when that path is relative
                // (read later, /proc may already show a newer exec, or nothing)
                let filename = cstr(&p.filename);
                let exe = if filename.starts_with('/') || !self.read_proc {
                    filename
                } else {
                    std::fs::read_link(format!("/proc/{pid}/exe"))
                        .map(|x| x.to_string_lossy().into_owned())
                        .unwrap_or(filename)
                };
                let cgroup = self
                    .read_proc
                    .then(|| procfs::read_cgroup(pid))
                    .flatten()
                    .or_else(|| self.procs.get(pid).map(|x| x.cgroup.clone()))
                    .or_else(|| self.procs.get(p.ppid).map(|x| x.cgroup.clone()))
                    .unwrap_or_default();
                let container_id = procfs::container_id(&cgroup);
                self.procs.insert(ProcessInfo {
                    pid,
                    ppid: p.ppid,
                    comm: comm.clone(),
                    exe: exe.clone(),
                    cmdline: cmdline.clone(),
                    cgroup: cgroup.clone(),
                    container_id: container_id.clone(),
                });
                if !self.cgroup_ok(pid) {
                    return None;
                }
                EventBody::ProcExec(ProcExec {
                    pid,
                    ppid: p.ppid,
                    comm,
                    exe,
                    cmdline,
                    cgroup,
                    container_id,
                })
            }
            rt_kind::RT_K_FORK => {
                let child = p.child_pid;
                let mut info = self.procs.get(pid).cloned().unwrap_or_else(|| ProcessInfo {
                    comm: comm.clone(),
                    ..Default::default()
                });
                info.pid = child;
                info.ppid = pid;
                self.procs.insert(info);
                if !self.cgroup_ok(child) {
                    return None;
                }
                EventBody::ProcFork(ProcFork {
                    parent_pid: pid,
                    child_pid: child,
                    comm,
                })
            }
            rt_kind::RT_K_EXIT => {
                let keep = self.cgroup_ok(pid);
                self.bury(pid, p.h.ts);
                let oom_killed = self.oom_victims.remove(&pid);
                if !keep {
                    return None;
                }
                EventBody::ProcExit(ProcExit {
                    pid,
                    comm,
                    exit_code: p.exit_code,
                    signal: p.signal,
                    oom_killed,
                })
            }
            rt_kind::RT_K_OOM => {
                self.oom_victims.insert(pid);
                if !self.cgroup_ok(pid) {
                    return None;
                }
                EventBody::OomKill(OomKill { pid, comm })
            }
            rt_kind::RT_K_THREAD => {
                if !self.cgroup_ok(pid) {
                    return None;
                }
                EventBody::ThreadStart(ThreadStart {
                    pid,
                    parent_tid: p.h.tid,
                    tid: p.child_pid,
                })
            }
            _ => return None,
        };
        Some(Event::new(p.h.ts, body))
    }

    fn tcp(&mut self, t: &rt_tcp) -> Option<Event> {
        let (local, remote) = endpoints(&t.t);
        let owned = t.h.flags & rt_hdr_flags::RT_F_NO_OWNER.0 as u16 == 0;
        if self.cgroup_filter.is_some() && (!owned || !self.cgroup_ok(t.h.pid)) {
            return None;
        }
        let conn = ConnId {
            pid: t.h.pid,
            fd: t.fd,
            start_ns: t.start_ns,
        };
        let sample = |what| {
            EventBody::TcpSample(TcpSample {
                what,
                local,
                remote,
                state: t.state as u8,
                srtt_us: t.srtt_us,
                pid: owned.then_some(t.h.pid),
            })
        };
        let step = match rt_tcp_step(t.step) {
            rt_tcp_step::RT_TCP_CONNECT => TcpStep::ConnectAttempt,
            rt_tcp_step::RT_TCP_ESTABLISHED => TcpStep::Established {
                latency_ns: t.latency_ns,
            },
            rt_tcp_step::RT_TCP_FAILED => TcpStep::Failed {
                errno: t.err,
                latency_ns: t.latency_ns,
            },
            rt_tcp_step::RT_TCP_ACCEPTED => TcpStep::Accepted,
            rt_tcp_step::RT_TCP_CLOSED => TcpStep::Closed {
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
            },
            rt_tcp_step::RT_TCP_LISTEN => TcpStep::ListenOpen,
            rt_tcp_step::RT_TCP_LISTEN_CLOSE => TcpStep::ListenClose,
            rt_tcp_step::RT_TCP_RETRANSMIT => {
                return Some(Event::new(t.h.ts, sample(TcpSampleKind::Retransmit)))
            }
            rt_tcp_step::RT_TCP_RESET_SENT => {
                return Some(Event::new(t.h.ts, sample(TcpSampleKind::ResetSent)))
            }
            rt_tcp_step::RT_TCP_RESET_RECV => {
                return Some(Event::new(t.h.ts, sample(TcpSampleKind::ResetReceived)))
            }
            rt_tcp_step::RT_TCP_RTT => return Some(Event::new(t.h.ts, sample(TcpSampleKind::Rtt))),
            rt_tcp_step::RT_TCP_SYNACK_RETRANSMIT => {
                return Some(Event::new(t.h.ts, sample(TcpSampleKind::SynAckRetransmit)))
            }
            rt_tcp_step::RT_TCP_ZERO_WINDOW => {
                return Some(Event::new(t.h.ts, sample(TcpSampleKind::ZeroWindow)))
            }
            _ => return None,
        };
        let (local, remote) = match step {
            TcpStep::ListenOpen | TcpStep::ListenClose => (local, Endpoint::default()),
            _ => (local, remote),
        };
        Some(Event::new(
            t.h.ts,
            EventBody::Tcp(TcpEvent {
                conn,
                tid: t.h.tid,
                local,
                remote,
                step,
            }),
        ))
    }

    fn data(&mut self, d: &rt_data, payload: &[u8]) -> Option<Event> {
        let pid = d.h.pid;
        if !self.cgroup_ok(pid) {
            return None;
        }
        let direction = if d.dir == retrace_bpf::types::rt_dir::RT_DIR_INGRESS.0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let (local, remote) = endpoints(&d.t);
        let body = match rt_kind(u32::from(d.h.kind)) {
            rt_kind::RT_K_L7 => EventBody::L7(L7Message {
                conn: ConnId {
                    pid,
                    fd: d.fd,
                    start_ns: d.start_ns,
                },
                tid: d.h.tid,
                direction,
                size: d.size,
                payload: self.payload(payload),
                tcp_seq: None,
                folded_calls: d.folded_calls,
                folded_bytes: d.folded_bytes,
                local,
                remote,
            }),
            rt_kind::RT_K_UDP => EventBody::Udp(UdpMessage {
                pid,
                tid: d.h.tid,
                direction,
                local,
                remote,
                size: d.size,
                payload: self.payload(payload),
            }),
            rt_kind::RT_K_LOG if d.h.flags & rt_hdr_flags::RT_F_LOG_OPEN.0 as u16 != 0 => {
                // not an event: the path of a log file fd, for the writes that follow
                let path = String::from_utf8_lossy(payload).into_owned();
                self.set_log_path(pid, d.fd, path);
                return None;
            }
            rt_kind::RT_K_LOG => {
                let path = if d.fd == 1 || d.fd == 2 {
                    String::new()
                } else {
                    self.log_path(pid, d.fd)
                };
                EventBody::Log(LogWrite {
                    pid,
                    tid: d.h.tid,
                    fd: d.fd,
                    path,
                    size: d.size,
                    payload: self.payload(payload),
                })
            }
            _ => return None,
        };
        Some(Event::new(d.h.ts, body))
    }

    /// Remembers the path of a log file fd (seeded at start).
    pub fn set_log_path(&mut self, pid: u32, fd: i32, path: String) {
        // bounded: forget everything rather than grow without limit
        if self.log_paths.len() >= 65_536 {
            self.log_paths.clear();
        }
        self.log_paths.insert((pid, fd), path);
    }

    fn log_path(&mut self, pid: u32, fd: i32) -> String {
        if let Some(p) = self.log_paths.get(&(pid, fd)) {
            return p.clone();
        }
        let p = if self.read_proc {
            procfs::fd_path(pid, fd).unwrap_or_default()
        } else {
            String::new()
        };
        self.set_log_path(pid, fd, p.clone());
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use retrace_bpf::types::{rt_dir, rt_tuple};

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        let mut out = vec![0u8; size_of::<T>()];
        // SAFETY: T is a plain repr(C) record; copying its bytes into a buffer of its size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (v as *const T).cast::<u8>(),
                out.as_mut_ptr(),
                size_of::<T>(),
            )
        };
        out
    }

    fn tuple4() -> rt_tuple {
        rt_tuple {
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 8080,
            family: 2,
            _pad: 0,
        }
    }

    #[test]
    fn used_length_stops_after_the_payload() {
        let mut d = rt_data::default();
        d.h.kind = rt_kind::RT_K_L7.0 as u16;
        d.payload_len = 3;
        let mut bytes = bytes_of(&d);
        bytes.extend_from_slice(b"abc");
        let used = bytes.len();
        bytes.resize(used + 125, 0xAA); // the rest of a 128-byte class
        assert_eq!(record_used_len(&bytes), used);
        assert!(matches!(
            parse_record(&bytes[..record_used_len(&bytes)]).unwrap(),
            Record::Data(_, b"abc")
        ));
        // a payload_len past the record: the whole record, and parsing says it is short
        d.payload_len = 4000;
        let bytes = bytes_of(&d);
        assert_eq!(record_used_len(&bytes), bytes.len());
        assert!(parse_record(&bytes).is_err());
        // fixed-size records and scraps keep their length
        let t = rt_tcp::default();
        assert_eq!(record_used_len(&bytes_of(&t)), size_of::<rt_tcp>());
        assert_eq!(record_used_len(&[1, 2, 3]), 3);
    }

    #[test]
    fn layouts_match_the_header_asserts() {
        assert_eq!(size_of::<rt_hdr>(), 24);
        assert_eq!(size_of::<rt_tuple>(), 40);
        assert_eq!(size_of::<rt_tcp>(), 128);
        assert_eq!(size_of::<rt_data>(), 120);
        assert_eq!(size_of::<rt_proc>(), 24 + 24 + 16 + 256 + 512);
    }

    #[test]
    fn established_connection() {
        let mut t = rt_tcp::default();
        t.h.ts = 5_000;
        t.h.kind = rt_kind::RT_K_TCP.0 as u16;
        t.h.pid = 42;
        t.h.tid = 43;
        t.t = tuple4();
        t.fd = 7;
        t.start_ns = 4_000;
        t.step = rt_tcp_step::RT_TCP_ESTABLISHED.0;
        t.latency_ns = 1_000;
        let bytes = bytes_of(&t);
        let mut c = Converter::new(ProcTable::default(), None).without_proc_reads();
        let ev = c.convert(parse_record(&bytes).unwrap()).unwrap();
        assert_eq!(ev.ts, 5_000);
        let EventBody::Tcp(e) = ev.body else {
            panic!("not tcp: {ev:?}")
        };
        assert_eq!(
            e.conn,
            ConnId {
                pid: 42,
                fd: 7,
                start_ns: 4_000
            }
        );
        assert_eq!(e.local.to_string(), "127.0.0.1:40000");
        assert_eq!(e.remote.to_string(), "10.1.2.3:8080");
        assert_eq!(e.step, TcpStep::Established { latency_ns: 1_000 });
    }

    #[test]
    fn unowned_retransmit_has_no_pid() {
        let mut t = rt_tcp::default();
        t.h.kind = rt_kind::RT_K_TCP_SAMPLE.0 as u16;
        t.h.flags = rt_hdr_flags::RT_F_NO_OWNER.0 as u16;
        t.t = tuple4();
        t.step = rt_tcp_step::RT_TCP_RETRANSMIT.0;
        t.state = 1;
        let bytes = bytes_of(&t);
        let mut c = Converter::new(ProcTable::default(), None).without_proc_reads();
        let ev = c.convert(parse_record(&bytes).unwrap()).unwrap();
        let EventBody::TcpSample(s) = ev.body else {
            panic!("not a sample")
        };
        assert_eq!(s.what, TcpSampleKind::Retransmit);
        assert_eq!(s.pid, None);
        assert_eq!(s.state, 1);
    }

    #[test]
    fn l7_payload_follows_the_fixed_part() {
        let mut d = rt_data::default();
        d.h.kind = rt_kind::RT_K_L7.0 as u16;
        d.h.pid = 9;
        d.t = tuple4();
        d.dir = rt_dir::RT_DIR_INGRESS.0;
        d.size = 300;
        d.payload_len = 5;
        d.folded_calls = 2;
        d.folded_bytes = 100;
        let mut bytes = bytes_of(&d);
        bytes.extend_from_slice(b"GET /");
        let mut c = Converter::new(ProcTable::default(), None).without_proc_reads();
        let ev = c.convert(parse_record(&bytes).unwrap()).unwrap();
        let EventBody::L7(m) = ev.body else {
            panic!("not l7")
        };
        assert_eq!(m.payload, b"GET /");
        assert_eq!(m.size, 300);
        assert_eq!(m.direction, Direction::Ingress);
        assert_eq!((m.folded_calls, m.folded_bytes), (2, 100));
        // a payload_len beyond the record is an error, not a panic
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(
            parse_record(&bytes),
            Err(RecordError::Short { .. })
        ));
    }

    #[test]
    fn short_and_unknown_records() {
        assert!(matches!(
            parse_record(&[1, 2, 3]),
            Err(RecordError::Short { .. })
        ));
        let mut h = rt_tcp::default();
        h.h.kind = 15;
        assert_eq!(
            parse_record(&bytes_of(&h)).unwrap_err(),
            RecordError::UnknownKind(15)
        );
    }

    #[test]
    fn exec_fork_exit_keep_the_table_and_oom_flag() {
        let mut c = Converter::new(ProcTable::default(), None).without_proc_reads();
        let mut p = rt_proc::default();
        p.h.kind = rt_kind::RT_K_EXEC.0 as u16;
        p.h.pid = 100;
        p.ppid = 1;
        for (i, b) in b"curl".iter().enumerate() {
            p.comm[i] = *b as i8;
        }
        for (i, b) in b"/usr/bin/curl".iter().enumerate() {
            p.filename[i] = *b as i8;
        }
        let args = b"curl\0-s\0http://x/\0";
        for (i, b) in args.iter().enumerate() {
            p.args[i] = *b as i8;
        }
        p.args_len = args.len() as u32;
        let ev = c.convert(Record::Proc(Box::new(p))).unwrap();
        let EventBody::ProcExec(e) = ev.body else {
            panic!()
        };
        assert_eq!(e.cmdline, ["curl", "-s", "http://x/"]);
        assert_eq!(e.exe, "/usr/bin/curl");
        assert_eq!(c.procs.get(100).unwrap().comm, "curl");

        let mut f = rt_proc::default();
        f.h.kind = rt_kind::RT_K_FORK.0 as u16;
        f.h.pid = 100;
        f.child_pid = 101;
        c.convert(Record::Proc(Box::new(f))).unwrap();
        assert_eq!(c.procs.get(101).unwrap().ppid, 100);

        let mut o = rt_proc::default();
        o.h.kind = rt_kind::RT_K_OOM.0 as u16;
        o.h.pid = 101;
        c.convert(Record::Proc(Box::new(o))).unwrap();
        let mut x = rt_proc::default();
        x.h.kind = rt_kind::RT_K_EXIT.0 as u16;
        x.h.pid = 101;
        x.signal = 9;
        let ev = c.convert(Record::Proc(Box::new(x))).unwrap();
        let EventBody::ProcExit(e) = ev.body else {
            panic!()
        };
        assert!(e.oom_killed);
        assert_eq!(e.signal, 9);
        assert!(c.procs.get(101).is_none());
    }

    #[test]
    fn log_open_records_name_the_file_of_later_writes() {
        let mut c = Converter::new(ProcTable::default(), None).without_proc_reads();
        let mut d = rt_data::default();
        d.h.kind = rt_kind::RT_K_LOG.0 as u16;
        d.h.flags = rt_hdr_flags::RT_F_LOG_OPEN.0 as u16;
        d.h.pid = 7;
        d.fd = 3;
        d.payload_len = 17;
        let mut open = bytes_of(&d);
        open.extend_from_slice(b"/var/log/app.log");
        open.push(b'!'); // payload_len counts 17 bytes
        assert!(c.convert(parse_record(&open).unwrap()).is_none());
        d.h.flags = 0;
        d.payload_len = 4;
        d.size = 4;
        let mut w = bytes_of(&d);
        w.extend_from_slice(b"boom");
        let ev = c.convert(parse_record(&w).unwrap()).unwrap();
        let EventBody::Log(l) = ev.body else {
            panic!("not a log write")
        };
        assert_eq!(l.path, "/var/log/app.log!");
        assert_eq!(l.payload, b"boom");
    }

    #[test]
    fn cgroup_filter_applies_to_known_processes() {
        let mut procs = ProcTable::default();
        procs.insert(ProcessInfo {
            pid: 5,
            cgroup: "/system.slice/nginx.service".into(),
            ..Default::default()
        });
        let mut c = Converter::new(procs, Some("nginx".into())).without_proc_reads();
        let mut d = rt_data::default();
        d.h.kind = rt_kind::RT_K_LOG.0 as u16;
        d.h.pid = 5;
        d.fd = 2;
        assert!(c.convert(parse_record(&bytes_of(&d)).unwrap()).is_some());
        d.h.pid = 6;
        assert!(c.convert(parse_record(&bytes_of(&d)).unwrap()).is_none());
    }

    /// A process's last records come through its CPU's payload ring, its exit through the
    /// control ring, consumed first: they are converted after the exit and must not be taken
    /// for another cgroup's (the last response a load client read was lost that way).
    #[test]
    fn records_converted_after_their_process_exit_keep_its_cgroup() {
        let mut procs = ProcTable::default();
        procs.insert(ProcessInfo {
            pid: 5,
            cgroup: "/retrace-scenario-1-run".into(),
            ..Default::default()
        });
        let mut c = Converter::new(procs, Some("retrace-scenario-1".into())).without_proc_reads();
        let mut exit = rt_proc::default();
        exit.h.kind = rt_kind::RT_K_EXIT.0 as u16;
        exit.h.pid = 5;
        exit.h.ts = 2_000_000_000;
        assert!(c.convert(parse_record(&bytes_of(&exit)).unwrap()).is_some());
        let mut d = rt_data::default();
        d.h.kind = rt_kind::RT_K_LOG.0 as u16;
        d.h.pid = 5;
        d.h.ts = 1_999_000_000;
        d.fd = 2;
        assert!(
            c.convert(parse_record(&bytes_of(&d)).unwrap()).is_some(),
            "a record from before the exit, converted after it, was dropped"
        );
        assert!(
            c.procs.get(5).is_none(),
            "an exited process stays in the live table"
        );
        // Long after the exit, the pid is forgotten.
        d.h.pid = 7;
        d.h.ts = 2_000_000_000 + EXITED_GRACE_NS + 1;
        assert!(c.convert(parse_record(&bytes_of(&d)).unwrap()).is_none());
        d.h.pid = 5;
        assert!(c.convert(parse_record(&bytes_of(&d)).unwrap()).is_none());
    }
}
