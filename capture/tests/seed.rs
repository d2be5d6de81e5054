//! Sockets open before the capture starts are seeded from /proc: their messages and their
//! close are captured and attributed to the process holding them, even the close of one never
//! read or written during the capture (needs root).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use retrace_capture::daemon::{run_with, Signals};
use retrace_capture::sink::{EventSink, MemorySink, SinkStats};
use retrace_capture::{CaptureConfig, CaptureError, Streams};
use retrace_segment::{Direction, Event, EventBody, EventKind, TcpStep};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// A sink the test can look into while the capture runs.
struct Shared(Arc<Mutex<MemorySink>>);

impl EventSink for Shared {
    fn append(&mut self, ev: &Event) -> Result<(), CaptureError> {
        self.0.lock().expect("lock").append(ev)
    }
    fn tick(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
    fn pin(&mut self, a: u64, b: u64) {
        self.0.lock().expect("lock").pin(a, b)
    }
    fn record_loss(&mut self, k: EventKind, n: u64) {
        self.0.lock().expect("lock").record_loss(k, n)
    }
    fn stats(&self) -> SinkStats {
        self.0.lock().expect("lock").stats()
    }
    fn close(self: Box<Self>) -> Result<SinkStats, CaptureError> {
        Ok(self.stats())
    }
}

const PEER: &str = r#"
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname())
s, _ = l.accept()
idle = socket.create_connection(l.getsockname())
idle_peer, _ = l.accept()
print(l.getsockname()[1], c.getsockname()[1], c.fileno(), s.fileno(),
      idle.getsockname()[1], idle.fileno(), flush=True)
sys.stdin.readline()
idle.close(); idle_peer.close()
c.sendall(b"ping-from-before")
assert s.recv(100) == b"ping-from-before"
s.sendall(b"pong!")
assert c.recv(100) == b"pong!"
c.close(); s.close()
"#;

#[test]
fn sockets_open_before_the_capture_are_followed() {
    if !is_root() {
        eprintln!("SKIPPED sockets_open_before_the_capture_are_followed: needs root");
        return;
    }
    let mut py = Command::new("python3")
        .args(["-c", PEER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let py_pid = py.id();
    let mut line = String::new();
    BufReader::new(py.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let f: Vec<i64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    let (server_port, client_port, client_fd, server_fd) = (f[0] as u16, f[1] as u16, f[2], f[3]);
    let (idle_port, idle_fd) = (f[4] as u16, f[5]);

    let sink = Arc::new(Mutex::new(MemorySink::default()));
    let state = Arc::new(Mutex::new(None));
    let signals = Signals::default();
    let cfg = CaptureConfig {
        streams: "tcp,l7".parse::<Streams>().expect("streams"),
        pid: Some(py_pid),
        out: tempfile::tempdir().expect("tmp").keep(),
        ..Default::default()
    };
    let capture = {
        let (sink, state, signals) = (sink.clone(), state.clone(), signals.clone());
        std::thread::spawn(move || {
            run_with(&cfg, &signals, |_, st| {
                *state.lock().expect("lock") = Some(st);
                Ok(Box::new(Shared(sink)))
            })
        })
    };
    // running once the node event went through
    let t0 = Instant::now();
    while sink.lock().expect("lock").events.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "capture did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    py.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    assert!(py.wait().expect("python").success());
    std::thread::sleep(Duration::from_millis(300));
    signals.stop.store(true, Ordering::Relaxed);
    let summary = capture.join().expect("thread").expect("capture");
    assert_eq!(summary.dropped_total(), 0);

    let st = state.lock().expect("lock").clone().expect("state");
    let seeded: Vec<_> = st
        .connections
        .iter()
        .filter(|c| c.conn.pid == py_pid)
        .collect();
    assert_eq!(
        seeded.len(),
        4,
        "both ends of both connections in the state snapshot: {seeded:?}"
    );
    let client_conn = seeded
        .iter()
        .find(|c| c.local.port == client_port)
        .expect("client end");
    assert_eq!(client_conn.conn.fd as i64, client_fd);
    assert_eq!(client_conn.remote.port, server_port);
    assert!(!client_conn.inbound);
    let server_conn = seeded
        .iter()
        .find(|c| c.local.port == server_port)
        .expect("server end");
    assert!(server_conn.inbound);
    assert_eq!(server_conn.conn.fd as i64, server_fd);

    let evs = sink.lock().expect("lock").events.clone();
    let l7: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::L7(m) if m.conn.pid == py_pid => Some(m),
            _ => None,
        })
        .collect();
    let sent = l7
        .iter()
        .find(|m| m.conn == client_conn.conn && m.direction == Direction::Egress)
        .unwrap_or_else(|| panic!("client's write on the seeded socket: {l7:?}"));
    assert_eq!(sent.payload, b"ping-from-before");
    assert_eq!(sent.local.port, client_port);
    let got = l7
        .iter()
        .find(|m| m.conn == server_conn.conn && m.direction == Direction::Ingress)
        .expect("server's read");
    assert_eq!(got.payload, b"ping-from-before");
    let closes: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Tcp(t) if t.conn == client_conn.conn => Some(&t.step),
            _ => None,
        })
        .collect();
    assert_eq!(
        closes,
        vec![&TcpStep::Closed {
            bytes_sent: 16,
            bytes_received: 5
        }],
        "the seeded client's close counts bytes since the capture started"
    );

    // The idle connection: no read or write during the capture, only its close, with the
    // 4-tuple it had (the kernel socket is resolved at start, not on first use).
    let idle_conn = seeded
        .iter()
        .find(|c| c.local.port == idle_port)
        .expect("idle client end");
    assert_eq!(idle_conn.conn.fd as i64, idle_fd);
    let idle_closes: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Tcp(t) if t.conn == idle_conn.conn => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(idle_closes.len(), 1, "one close: {idle_closes:?}");
    assert_eq!(
        idle_closes[0].step,
        TcpStep::Closed {
            bytes_sent: 0,
            bytes_received: 0
        }
    );
    assert_eq!(idle_closes[0].local, idle_conn.local);
    assert_eq!(idle_closes[0].remote, idle_conn.remote);
}
