//! [`StateTracker`]: keeps a [`StateSnapshot`] current from the events a capture writes, so
//! that each new segment's header holds the state at its start.

use std::collections::BTreeMap;

use crate::event::*;

/// Bound on each table, so that a stream of events that never close cannot grow memory
/// without limit (inserts beyond it are counted in [`StateTracker::overflow`]).
pub const MAX_ENTRIES: usize = 1 << 20;

/// The live processes, listening sockets and open connections, updated from events.
#[derive(Debug, Default, Clone)]
pub struct StateTracker {
    processes: BTreeMap<u32, ProcessInfo>,
    listening: BTreeMap<(u32, i32), ListenSocket>,
    connections: BTreeMap<ConnId, OpenConnection>,
    overflow: u64,
}

impl StateTracker {
    /// A tracker starting from `s`.
    pub fn new(s: StateSnapshot) -> Self {
        let mut t = Self::default();
        for p in s.processes {
            t.processes.insert(p.pid, p);
        }
        for l in s.listening {
            t.listening.insert((l.pid, l.fd), l);
        }
        for c in s.connections {
            t.connections.insert(c.conn, c);
        }
        t
    }

    /// Inserts that were refused because a table was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    fn insert<K: Ord, V>(map: &mut BTreeMap<K, V>, k: K, v: V, overflow: &mut u64) {
        if map.len() >= MAX_ENTRIES && !map.contains_key(&k) {
            *overflow += 1;
        } else {
            map.insert(k, v);
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: &Event) {
        let of = &mut self.overflow;
        match &ev.body {
            EventBody::ProcExec(e) => {
                let p = ProcessInfo {
                    pid: e.pid,
                    ppid: e.ppid,
                    comm: e.comm.clone(),
                    exe: e.exe.clone(),
                    cmdline: e.cmdline.clone(),
                    cgroup: e.cgroup.clone(),
                    container_id: e.container_id.clone(),
                };
                Self::insert(&mut self.processes, e.pid, p, of);
            }
            EventBody::ProcFork(f) => {
                let mut p = self
                    .processes
                    .get(&f.parent_pid)
                    .cloned()
                    .unwrap_or_default();
                p.pid = f.child_pid;
                p.ppid = f.parent_pid;
                p.comm = f.comm.clone();
                Self::insert(&mut self.processes, f.child_pid, p, of);
            }
            EventBody::ProcExit(x) => {
                self.processes.remove(&x.pid);
                self.listening.retain(|(pid, _), _| *pid != x.pid);
                self.connections.retain(|c, _| c.pid != x.pid);
            }
            EventBody::Tcp(t) => match t.step {
                TcpStep::Established { .. } | TcpStep::Accepted => {
                    let c = OpenConnection {
                        conn: t.conn,
                        local: t.local,
                        remote: t.remote,
                        inbound: matches!(t.step, TcpStep::Accepted),
                    };
                    Self::insert(&mut self.connections, t.conn, c, of);
                }
                TcpStep::Failed { .. } | TcpStep::Closed { .. } => {
                    self.connections.remove(&t.conn);
                }
                TcpStep::ListenOpen => {
                    let l = ListenSocket {
                        pid: t.conn.pid,
                        fd: t.conn.fd,
                        local: t.local,
                    };
                    Self::insert(&mut self.listening, (t.conn.pid, t.conn.fd), l, of);
                }
                TcpStep::ListenClose => {
                    self.listening.remove(&(t.conn.pid, t.conn.fd));
                }
                TcpStep::ConnectAttempt => {}
            },
            _ => {}
        }
    }

    /// The current state.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            processes: self.processes.values().cloned().collect(),
            listening: self.listening.values().cloned().collect(),
            connections: self.connections.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(pid: u32, fd: i32) -> ConnId {
        ConnId {
            pid,
            fd,
            start_ns: 1,
        }
    }

    #[test]
    fn exec_fork_exit_and_connections_are_tracked() {
        let mut t = StateTracker::default();
        t.apply(&Event::new(
            1,
            EventBody::ProcExec(ProcExec {
                pid: 10,
                ppid: 1,
                comm: "nginx".into(),
                exe: "/usr/sbin/nginx".into(),
                cmdline: vec!["nginx".into()],
                cgroup: "/system.slice/nginx.service".into(),
                container_id: None,
            }),
        ));
        t.apply(&Event::new(
            2,
            EventBody::ProcFork(ProcFork {
                parent_pid: 10,
                child_pid: 11,
                comm: "nginx".into(),
            }),
        ));
        let ep = Endpoint::new(std::net::Ipv4Addr::LOCALHOST, 80);
        let tcp = |step| {
            EventBody::Tcp(TcpEvent {
                conn: conn(11, 5),
                tid: 11,
                local: ep,
                remote: ep,
                step,
            })
        };
        t.apply(&Event::new(3, tcp(TcpStep::ListenOpen)));
        t.apply(&Event::new(4, tcp(TcpStep::Accepted)));
        let s = t.snapshot();
        assert_eq!(s.processes.len(), 2);
        assert_eq!(s.processes[1].exe, "/usr/sbin/nginx");
        assert_eq!(s.processes[1].ppid, 10);
        assert_eq!(s.listening.len(), 1);
        assert!(s.connections[0].inbound);
        t.apply(&Event::new(
            5,
            tcp(TcpStep::Closed {
                bytes_sent: 1,
                bytes_received: 2,
            }),
        ));
        assert!(t.snapshot().connections.is_empty());
        t.apply(&Event::new(
            6,
            EventBody::ProcExit(ProcExit {
                pid: 11,
                comm: "nginx".into(),
                exit_code: 0,
                signal: 0,
                oom_killed: false,
            }),
        ));
        let s = t.snapshot();
        assert_eq!(s.processes.len(), 1);
        assert!(s.listening.is_empty());
    }
}
