//! The process table and the socket table of one node, kept current while replaying.
//!
//! Seeded from each segment header's [`StateSnapshot`] and updated by exec, fork, exit and TCP
//! events in time order, so that every event of a pid can be given its command name,
//! executable and cgroup, and every L7 message its endpoints.

use std::collections::HashMap;

/// The tables' maps: foldhash, seeded per process (fast on small keys such as pids and
/// connection ids, and still not predictable by whoever wrote the capture).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use retrace_segment::{ConnId, Endpoint, Event, EventBody, ProcessInfo, StateSnapshot, TcpStep};

/// Processes exited longer ago than this (stream time) may be forgotten when the table is big.
const EXITED_GRACE_NS: u64 = 10_000_000_000;
/// Above this many processes, exited ones are pruned.
const PROCESS_PRUNE_AT: usize = 1 << 16;
/// Above this many sockets, those of exited processes are pruned.
const SOCKET_PRUNE_AT: usize = 1 << 18;
/// Hard bound on sockets: beyond it the table is cleared (memory stays bounded).
const SOCKET_HARD_LIMIT: usize = 1 << 21;

#[derive(Clone, Debug)]
struct ProcEntry {
    info: Arc<ProcessInfo>,
    /// Wall time of the information (snapshot or event).
    updated_wall: u64,
    exited_wall: Option<u64>,
}

/// The processes of one node, as known at the current point of the replay.
#[derive(Clone, Debug, Default)]
pub struct ProcessTable {
    map: Map<u32, ProcEntry>,
}

impl ProcessTable {
    /// The process `pid`, when known (exited processes stay known for a while).
    pub fn get(&self, pid: u32) -> Option<&Arc<ProcessInfo>> {
        self.map.get(&pid).map(|e| &e.info)
    }

    /// Whether `pid` has exited.
    pub fn has_exited(&self, pid: u32) -> bool {
        self.map.get(&pid).is_some_and(|e| e.exited_wall.is_some())
    }

    /// Number of processes known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no process is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes in a segment's snapshot taken at `wall`: processes not known yet are added, and
    /// entries older than the snapshot are replaced by it.
    pub(crate) fn apply_snapshot(&mut self, wall: u64, snap: &StateSnapshot) {
        for p in &snap.processes {
            match self.map.get(&p.pid) {
                Some(e) if e.updated_wall > wall => {}
                _ => {
                    self.map.insert(
                        p.pid,
                        ProcEntry {
                            info: Arc::new(p.clone()),
                            updated_wall: wall,
                            exited_wall: None,
                        },
                    );
                }
            }
        }
    }

    /// Applies an event (in time order).
    pub(crate) fn apply_event(&mut self, wall: u64, ev: &Event) {
        match &ev.body {
            EventBody::ProcExec(e) => {
                let info = ProcessInfo {
                    pid: e.pid,
                    ppid: e.ppid,
                    comm: e.comm.clone(),
                    exe: e.exe.clone(),
                    cmdline: e.cmdline.clone(),
                    cgroup: e.cgroup.clone(),
                    container_id: e.container_id.clone(),
                };
                self.map.insert(
                    e.pid,
                    ProcEntry {
                        info: Arc::new(info),
                        updated_wall: wall,
                        exited_wall: None,
                    },
                );
            }
            EventBody::ProcFork(e) => {
                let mut info = match self.map.get(&e.parent_pid) {
                    Some(parent) => (*parent.info).clone(),
                    None => ProcessInfo::default(),
                };
                info.pid = e.child_pid;
                info.ppid = e.parent_pid;
                if !e.comm.is_empty() {
                    info.comm = e.comm.clone();
                }
                self.map.insert(
                    e.child_pid,
                    ProcEntry {
                        info: Arc::new(info),
                        updated_wall: wall,
                        exited_wall: None,
                    },
                );
            }
            EventBody::ProcExit(e) => match self.map.get_mut(&e.pid) {
                Some(entry) => {
                    entry.exited_wall = Some(wall);
                    entry.updated_wall = wall;
                }
                None => {
                    let info = ProcessInfo {
                        pid: e.pid,
                        comm: e.comm.clone(),
                        ..Default::default()
                    };
                    self.map.insert(
                        e.pid,
                        ProcEntry {
                            info: Arc::new(info),
                            updated_wall: wall,
                            exited_wall: Some(wall),
                        },
                    );
                }
            },
            _ => {}
        }
        if self.map.len() > PROCESS_PRUNE_AT {
            self.map.retain(|_, e| {
                e.exited_wall
                    .is_none_or(|x| x.saturating_add(EXITED_GRACE_NS) > wall)
            });
        }
    }
}

/// The sockets of one node: endpoints by [`ConnId`], so that events that do not carry them can
/// be given them.
#[derive(Clone, Debug, Default)]
pub struct SocketTable {
    map: Map<ConnId, (Endpoint, Endpoint)>,
}

impl SocketTable {
    /// `(local, remote)` of a socket, when known.
    pub fn get(&self, conn: &ConnId) -> Option<(Endpoint, Endpoint)> {
        self.map.get(conn).copied()
    }

    /// Number of sockets known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no socket is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn apply_snapshot(&mut self, snap: &StateSnapshot) {
        for c in &snap.connections {
            self.map.entry(c.conn).or_insert((c.local, c.remote));
        }
    }

    /// Applies an event (in time order), after the event itself was given its endpoints.
    pub(crate) fn apply_event(&mut self, ev: &Event, procs: &ProcessTable) {
        let EventBody::Tcp(t) = &ev.body else { return };
        match t.step {
            TcpStep::Closed { .. } | TcpStep::ListenClose | TcpStep::Failed { .. } => {
                self.map.remove(&t.conn);
            }
            _ => {
                let entry = self.map.entry(t.conn).or_insert((t.local, t.remote));
                // Later steps know more (the local port is 0 at connect time).
                if t.local.port != 0 {
                    entry.0 = t.local;
                }
                if t.remote.port != 0 {
                    entry.1 = t.remote;
                }
            }
        }
        if self.map.len() > SOCKET_PRUNE_AT {
            self.map.retain(|c, _| !procs.has_exited(c.pid));
            if self.map.len() > SOCKET_HARD_LIMIT {
                self.map.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retrace_segment::{OpenConnection, ProcExec, ProcExit, ProcFork, TcpEvent};
    use std::net::Ipv4Addr;

    fn exec(pid: u32, comm: &str) -> Event {
        Event::new(
            0,
            EventBody::ProcExec(ProcExec {
                pid,
                ppid: 1,
                comm: comm.into(),
                exe: format!("/bin/{comm}"),
                cmdline: vec![comm.into()],
                cgroup: "/a".into(),
                container_id: None,
            }),
        )
    }

    #[test]
    fn exec_fork_exit() {
        let mut t = ProcessTable::default();
        t.apply_event(10, &exec(5, "sh"));
        t.apply_event(
            20,
            &Event::new(
                0,
                EventBody::ProcFork(ProcFork {
                    parent_pid: 5,
                    child_pid: 6,
                    comm: "sh".into(),
                }),
            ),
        );
        let child = t.get(6).expect("child known");
        assert_eq!(
            (child.comm.as_str(), child.exe.as_str(), child.ppid),
            ("sh", "/bin/sh", 5)
        );
        t.apply_event(30, &exec(6, "curl"));
        assert_eq!(t.get(6).map(|p| p.exe.as_str()), Some("/bin/curl"));
        t.apply_event(
            40,
            &Event::new(
                0,
                EventBody::ProcExit(ProcExit {
                    pid: 6,
                    comm: "curl".into(),
                    exit_code: 0,
                    signal: 0,
                    oom_killed: false,
                }),
            ),
        );
        assert!(t.has_exited(6));
        assert_eq!(
            t.get(6).map(|p| p.comm.as_str()),
            Some("curl"),
            "kept after exit"
        );
    }

    #[test]
    fn snapshots_do_not_override_newer_events() {
        let mut t = ProcessTable::default();
        t.apply_event(100, &exec(5, "new"));
        let snap = StateSnapshot {
            processes: vec![
                ProcessInfo {
                    pid: 5,
                    comm: "old".into(),
                    ..Default::default()
                },
                ProcessInfo {
                    pid: 7,
                    comm: "seven".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        t.apply_snapshot(50, &snap);
        assert_eq!(t.get(5).map(|p| p.comm.as_str()), Some("new"));
        assert_eq!(t.get(7).map(|p| p.comm.as_str()), Some("seven"));
        t.apply_snapshot(200, &snap);
        assert_eq!(
            t.get(5).map(|p| p.comm.as_str()),
            Some("old"),
            "newer snapshot wins"
        );
    }

    #[test]
    fn sockets_learn_endpoints_and_forget_closed() {
        let procs = ProcessTable::default();
        let mut s = SocketTable::default();
        let conn = ConnId {
            pid: 1,
            fd: 3,
            start_ns: 9,
        };
        let remote = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 80);
        let tcp = |step, lport| {
            Event::new(
                0,
                EventBody::Tcp(TcpEvent {
                    conn,
                    tid: 1,
                    local: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), lport),
                    remote,
                    step,
                }),
            )
        };
        s.apply_event(&tcp(TcpStep::ConnectAttempt, 0), &procs);
        assert_eq!(s.get(&conn).map(|(l, _)| l.port), Some(0));
        s.apply_event(&tcp(TcpStep::Established { latency_ns: 1 }, 40000), &procs);
        assert_eq!(
            s.get(&conn),
            Some((Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 40000), remote))
        );
        s.apply_event(
            &tcp(
                TcpStep::Closed {
                    bytes_sent: 1,
                    bytes_received: 2,
                },
                40000,
            ),
            &procs,
        );
        assert_eq!(s.get(&conn), None);
        s.apply_snapshot(&StateSnapshot {
            connections: vec![OpenConnection {
                conn,
                local: Endpoint::default(),
                remote,
                inbound: true,
            }],
            ..Default::default()
        });
        assert_eq!(s.get(&conn).map(|(_, r)| r), Some(remote));
    }
}
