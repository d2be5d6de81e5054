//! End-to-end tests of `retrace capture` against real sockets and processes (needs root).
//!
//! Each test starts the real daemon (`retrace capture --out DIR ...`), makes real kernel
//! activity (an HTTP server and client, a refused connect, packet loss through iptables, a DNS
//! exchange, exec/exit, an OOM kill), stops the daemon, reads the capture back with
//! `retrace replay DIR --output jsonl`, and asserts exact values: pids, 4-tuples, errno, exit
//! codes, byte counts, payload prefixes.
//!
//! Without root every test prints `skipped: needs root (...)` and passes, unless
//! `RETRACE_REQUIRE_BPF=1` is set, in which case it fails (CI sets it).
//!
//! Tests run one at a time (a global lock): several daemons at once would compete for the two
//! CPUs and make timing-sensitive steps (retransmits, OOM) slower, not more correct.

// Every child is owned by a `ChildGuard`, whose Drop kills and reaps it: clippy cannot see that.
#![allow(clippy::zombie_processes)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::ChildGuard;
use retrace_segment::{
    Direction, Endpoint, Event, EventBody, L7Message, LossMarker, Manifest, ProcExec, ProcExit,
    TcpEvent, TcpSample, TcpSampleKind, TcpStep, UdpMessage,
};

const BIN: &str = env!("CARGO_BIN_EXE_retrace");
/// Debian's python3 (not a pyenv shim: its comm and pid must be python's own).
const PYTHON: &str = "/usr/bin/python3";

// ---------------------------------------------------------------------------------------------
// Skipping and serialising

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the global lock and tells whether the test can run. Without root: skips (prints why
/// and returns `None`), or fails when `RETRACE_REQUIRE_BPF=1`.
fn root_or_skip(test: &str) -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        let why = format!("needs root (running as uid {euid}): loads BPF programs");
        if std::env::var("RETRACE_REQUIRE_BPF").as_deref() == Ok("1") {
            panic!("{test}: RETRACE_REQUIRE_BPF=1 but {why}");
        }
        eprintln!("{test}: skipped: {why}");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id(), t)
}

fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("retrace-{tag}-"))
        .tempdir()
        .expect("temp dir")
}

// ---------------------------------------------------------------------------------------------
// Children that are always reaped

// ---------------------------------------------------------------------------------------------
// The daemon

/// A running `retrace capture`, its output directory and its stderr.
struct Daemon {
    child: ChildGuard,
    out: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `retrace capture --out DIR --streams STREAMS --duration 300s EXTRA...` and
    /// returns once its BPF programs are attached and events flow.
    fn start(streams: &str, extra: &[&str]) -> Daemon {
        let dir = temp_dir("capture");
        let out = dir.path().join("cap");
        let mut cmd = Command::new(BIN);
        cmd.arg("capture")
            .arg("--out")
            .arg(&out)
            .args(["--streams", streams, "--duration", "300s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut cmd);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let inner = child.0.as_mut().expect("child");
        for stream in [
            Box::new(inner.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(inner.stderr.take().expect("stderr")),
        ] {
            let lines = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[capture] {line}");
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let mut d = Daemon {
            child,
            out,
            stderr,
            _dir: dir,
        };
        d.wait_ready();
        d
    }

    fn output(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Ready = the capture directory holds a segment (the writer is open) and the daemon has
    /// said something on its output (it prints once attached), then a margin for the rings.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.wait_timeout(Duration::ZERO) {
                panic!("capture exited early with {st}:\n{}", self.output());
            }
            let has_segment = fs::read_dir(&self.out)
                .map(|rd| {
                    rd.filter_map(Result::ok).any(|e| {
                        e.path().extension().is_some_and(|x| x == "rseg")
                            || e.file_name() == "manifest.json"
                    })
                })
                .unwrap_or(false);
            let said_something = !self.output().is_empty();
            if has_segment && said_something {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "capture not ready after 60 s (segment: {has_segment}):\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(700));
    }

    /// SIGTERM, then waits for a clean exit (status 0) and returns the capture directory.
    fn stop(mut self) -> Capture {
        self.child.signal(libc::SIGTERM);
        let st = self.child.wait_timeout(Duration::from_secs(60));
        let out = self.output();
        assert!(
            st.is_some(),
            "capture still running 60 s after SIGTERM:\n{out}"
        );
        let st = st.expect("status");
        assert!(
            st.success(),
            "capture exited with {st} after SIGTERM:\n{out}"
        );
        let _ = self.child.take();
        Capture {
            out: self.out,
            _dir: self._dir,
            daemon_output: out,
        }
    }

    /// SIGKILL, waits, returns the capture directory as the daemon left it.
    fn kill(mut self) -> Capture {
        self.child.signal(libc::SIGKILL);
        let st = self
            .child
            .wait_timeout(Duration::from_secs(10))
            .expect("killed");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
        let _ = self.child.take();
        let out = self.output();
        Capture {
            out: self.out,
            _dir: self._dir,
            daemon_output: out,
        }
    }
}

/// A finished capture directory.
struct Capture {
    out: PathBuf,
    _dir: tempfile::TempDir,
    daemon_output: String,
}

impl Capture {
    /// `retrace replay PATH --output jsonl`, parsed. Fails the test on a non-zero exit.
    fn events(&self) -> Vec<Event> {
        replay_jsonl(&self.out)
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.out)
            .expect("capture dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rseg"))
            .collect();
        v.sort();
        v
    }

    fn manifest(&self) -> Manifest {
        let path = self.out.join("manifest.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.daemon_output));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("manifest.json: {e}\n{text}"))
    }
}

fn run_replay(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .arg("replay")
        .args(args)
        .output()
        .expect("run retrace replay");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses one jsonl line: `{"ts":..,"body":{"kind":..}}` (serde of `Event`), or the same body
/// flattened next to `ts`.
fn parse_event(line: &str) -> Event {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad jsonl line {line:?}: {e}"));
    if v.get("body").is_some() {
        return serde_json::from_value(v).unwrap_or_else(|e| panic!("bad event {line:?}: {e}"));
    }
    let ts = v
        .get("ts")
        .and_then(|t| t.as_u64())
        .unwrap_or_else(|| panic!("no ts: {line}"));
    let body: EventBody =
        serde_json::from_value(v).unwrap_or_else(|e| panic!("bad event {line:?}: {e}"));
    Event::new(ts, body)
}

fn replay_jsonl(path: &Path) -> Vec<Event> {
    let (st, stdout, stderr) =
        run_replay(&[path.as_os_str(), "--output".as_ref(), "jsonl".as_ref()]);
    assert!(
        st.success(),
        "retrace replay {} failed ({st}):\n{stderr}",
        path.display()
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_event)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Selecting events

fn tcp_events(evs: &[Event]) -> Vec<(u64, &TcpEvent)> {
    evs.iter()
        .filter_map(|e| match &e.body {
            EventBody::Tcp(t) => Some((e.ts, t)),
            _ => None,
        })
        .collect()
}

fn l7_of(evs: &[Event], pid: u32, local: SocketAddr, remote: SocketAddr) -> Vec<&L7Message> {
    evs.iter()
        .filter_map(|e| match &e.body {
            EventBody::L7(m)
                if m.conn.pid == pid
                    && m.local.socket_addr() == local
                    && m.remote.socket_addr() == remote =>
            {
                Some(m)
            }
            _ => None,
        })
        .collect()
}

fn samples(evs: &[Event], what: TcpSampleKind) -> Vec<&TcpSample> {
    evs.iter()
        .filter_map(|e| match &e.body {
            EventBody::TcpSample(s) if s.what == what => Some(s),
            _ => None,
        })
        .collect()
}

fn losses(evs: &[Event]) -> Vec<&LossMarker> {
    evs.iter()
        .filter_map(|e| match &e.body {
            EventBody::Loss(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn ep(a: SocketAddr) -> Endpoint {
    Endpoint::new(a.ip(), a.port())
}

fn describe(evs: &[Event], pred: impl Fn(&Event) -> bool) -> String {
    let mut s = String::new();
    for e in evs.iter().filter(|e| pred(e)).take(60) {
        s.push_str(&format!("  {} {:?}\n", e.ts, e.body));
    }
    s
}

/// Bytes of every L7 message in `dir` of one socket: sizes plus the calls folded into each
/// message (reported by the next message, any direction, and at close by the byte counters).
fn l7_size_prefix(msgs: &[&L7Message], dir: Direction) -> (u64, usize) {
    let mut bytes = 0;
    let mut n = 0;
    for m in msgs.iter().filter(|m| m.direction == dir) {
        bytes += m.size;
        n += 1;
    }
    (bytes, n)
}

// ---------------------------------------------------------------------------------------------
// Helpers for workloads

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A python3 http.server on 127.0.0.1:port serving `root`.
fn python_http_server(root: &Path, port: u16) -> ChildGuard {
    python_http_server_logging(root, port, Stdio::null())
}

/// Like [`python_http_server`], its request log (stderr) written to `log`.
fn python_http_server_logging(root: &Path, port: u16, log: Stdio) -> ChildGuard {
    let g = ChildGuard::spawn(
        Command::new(PYTHON)
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    );
    wait_port(port);
    g
}

/// One HTTP/1.0 exchange from this process: returns (client socket's local address, the
/// response bytes). The request is written with a single write(2).
fn http_get(port: u16, request: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    let local = s.local_addr().expect("local addr");
    s.write_all(request).expect("write request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    (local, resp)
}

// ---------------------------------------------------------------------------------------------
// Tests

/// A real HTTP server (python3 http.server, its own process) and client (this process):
/// connect attempt and established with the right 4-tuple and pids, the accept on the server,
/// request and response payload prefixes on both sides, closes with exact byte counts.
#[test]
fn http_exchange_is_captured_on_both_sides() {
    let Some(_lock) = root_or_skip("http_exchange_is_captured_on_both_sides") else {
        return;
    };
    let www = temp_dir("www");
    let body: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    fs::write(www.path().join("page.txt"), &body).expect("write page");
    let port = free_port();
    let server = python_http_server(www.path(), port);
    let server_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let daemon = Daemon::start("proc,tcp,l7", &[]);
    let tag = nonce();
    let request = format!("GET /page.txt HTTP/1.0\r\nHost: localhost\r\nX-Test: {tag}\r\n\r\n");
    let (client_addr, response) = http_get(port, request.as_bytes());
    assert!(
        response.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(response.ends_with(&body));
    thread::sleep(Duration::from_millis(300)); // let the server close its side
    let cap = daemon.stop();
    let evs = cap.events();

    let me = std::process::id();
    let srv = server.pid();
    let tcp = tcp_events(&evs);
    let dump = || {
        describe(&evs, |e| match &e.body {
            EventBody::Tcp(t) => t.conn.pid == me || t.conn.pid == srv,
            EventBody::L7(m) => m.conn.pid == me || m.conn.pid == srv,
            _ => false,
        })
    };

    // Client side: attempt, established (same socket), closed with exact byte counts.
    let established: Vec<_> = tcp
        .iter()
        .filter(|(_, t)| {
            matches!(t.step, TcpStep::Established { .. })
                && t.local == ep(client_addr)
                && t.remote == ep(server_addr)
        })
        .collect();
    assert_eq!(
        established.len(),
        1,
        "one established for {client_addr}:\n{}",
        dump()
    );
    let (est_ts, est) = established[0];
    assert_eq!(est.conn.pid, me, "established attributed to the client pid");
    assert!(est.conn.fd >= 0, "client fd known: {est:?}");
    let TcpStep::Established { latency_ns } = est.step else {
        unreachable!()
    };
    assert!(
        latency_ns > 0 && latency_ns < 1_000_000_000,
        "connect latency {latency_ns}"
    );
    let attempt = tcp.iter().find(|(_, t)| {
        t.step == TcpStep::ConnectAttempt && t.conn == est.conn && t.remote == ep(server_addr)
    });
    let (att_ts, att) = attempt.unwrap_or_else(|| panic!("no connect attempt:\n{}", dump()));
    assert_eq!(att.conn.pid, me);
    assert!(att_ts <= est_ts);
    let closed = tcp
        .iter()
        .find(|(_, t)| t.conn == est.conn && matches!(t.step, TcpStep::Closed { .. }))
        .unwrap_or_else(|| panic!("no close of the client socket:\n{}", dump()));
    assert_eq!(
        closed.1.step,
        TcpStep::Closed {
            bytes_sent: request.len() as u64,
            bytes_received: response.len() as u64
        },
        "client close counts"
    );

    // Server side: the accept in the server process, closed with the mirror counts.
    let accepted: Vec<_> = tcp
        .iter()
        .filter(|(_, t)| t.step == TcpStep::Accepted && t.remote == ep(client_addr))
        .collect();
    assert_eq!(
        accepted.len(),
        1,
        "one accept of {client_addr}:\n{}",
        dump()
    );
    let acc = accepted[0].1;
    assert_eq!(acc.conn.pid, srv, "accept attributed to the server pid");
    assert_eq!(acc.local, ep(server_addr));
    let sclosed = tcp
        .iter()
        .find(|(_, t)| t.conn == acc.conn && matches!(t.step, TcpStep::Closed { .. }))
        .unwrap_or_else(|| panic!("no close of the server socket:\n{}", dump()));
    assert_eq!(
        sclosed.1.step,
        TcpStep::Closed {
            bytes_sent: response.len() as u64,
            bytes_received: request.len() as u64
        },
        "server close counts"
    );

    // Payloads: the client wrote the request in one write(2) and read the response.
    let cl = l7_of(&evs, me, client_addr, server_addr);
    let first_out = cl.iter().find(|m| m.direction == Direction::Egress);
    let first_out = first_out.unwrap_or_else(|| panic!("no client egress L7:\n{}", dump()));
    assert_eq!(
        first_out.conn, est.conn,
        "L7 and TCP events share the connection id"
    );
    assert_eq!(first_out.size, request.len() as u64);
    assert_eq!(
        first_out.payload,
        request.as_bytes(),
        "whole request (< payload-bytes)"
    );
    let first_in = cl.iter().find(|m| m.direction == Direction::Ingress);
    let first_in = first_in.unwrap_or_else(|| panic!("no client ingress L7:\n{}", dump()));
    assert!(
        first_in.payload.starts_with(b"HTTP/1.0 200"),
        "{first_in:?}"
    );
    assert!(
        response.starts_with(&first_in.payload),
        "payload is a prefix of the response"
    );
    assert!(first_in.payload.len() as u64 <= first_in.size);
    let (cl_in, _) = l7_size_prefix(&cl, Direction::Ingress);
    assert!(cl_in <= response.len() as u64);

    let sv = l7_of(&evs, srv, server_addr, client_addr);
    let s_in = sv.iter().find(|m| m.direction == Direction::Ingress);
    let s_in = s_in.unwrap_or_else(|| panic!("no server ingress L7:\n{}", dump()));
    assert_eq!(s_in.conn, acc.conn);
    assert!(request.as_bytes().starts_with(&s_in.payload) && !s_in.payload.is_empty());
    assert!(
        s_in.payload.starts_with(b"GET /page.txt HTTP/1.0\r\n"),
        "{s_in:?}"
    );
    let s_out = sv.iter().find(|m| m.direction == Direction::Egress);
    let s_out = s_out.unwrap_or_else(|| panic!("no server egress L7:\n{}", dump()));
    assert!(
        s_out.payload.starts_with(b"HTTP/1.0 200 OK\r\n"),
        "{s_out:?}"
    );
    assert!(response.starts_with(&s_out.payload));
    // Payload prefixes are capped by --payload-bytes (default 512).
    for m in cl.iter().chain(sv.iter()) {
        assert!(
            m.payload.len() <= 512,
            "payload longer than --payload-bytes: {}",
            m.payload.len()
        );
        assert!(m.payload.len() as u64 <= m.size);
    }
    assert!(
        losses(&evs).iter().all(|l| l.count == 0),
        "drops at this load: {:?}",
        losses(&evs)
    );
}

/// A connect to a closed port fails with ECONNREFUSED (111), attributed to this process.
#[test]
fn refused_connect_is_a_failed_connect_with_econnrefused() {
    let Some(_lock) = root_or_skip("refused_connect_is_a_failed_connect_with_econnrefused") else {
        return;
    };
    let port = free_port(); // bound then released: nothing listens there now
    let daemon = Daemon::start("tcp", &[]);
    let err = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect_err("port is closed");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    let cap = daemon.stop();
    let evs = cap.events();
    let me = std::process::id();
    let target = Endpoint::new(Ipv4Addr::LOCALHOST, port);
    let mine: Vec<_> = tcp_events(&evs)
        .into_iter()
        .filter(|(_, t)| t.remote == target && t.conn.pid == me)
        .collect();
    let dump = describe(
        &evs,
        |e| matches!(&e.body, EventBody::Tcp(t) if t.remote == target),
    );
    let failed: Vec<_> = mine
        .iter()
        .filter(|(_, t)| matches!(t.step, TcpStep::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "one failed connect to {target}:\n{dump}");
    let TcpStep::Failed { errno, latency_ns } = failed[0].1.step else {
        unreachable!()
    };
    assert_eq!(errno, 111, "ECONNREFUSED");
    assert!(
        latency_ns < 1_000_000_000,
        "refusal on loopback is immediate: {latency_ns}"
    );
    assert!(
        mine.iter().any(|(_, t)| t.step == TcpStep::ConnectAttempt),
        "the attempt is there too:\n{dump}"
    );
    assert!(
        !mine
            .iter()
            .any(|(_, t)| matches!(t.step, TcpStep::Established { .. })),
        "never established:\n{dump}"
    );
}

/// A request written to a server that closed the connection without reading it: the peer's
/// reset comes back within the write itself (over loopback the reset is processed before the
/// write returns), so the socket reaches TCP_CLOSE while the write is still in flight. The
/// write is recorded, the close reported when this process closes the socket (with the bytes
/// sent), and the analysis counts a request without a response, not a failed connect (what
/// it said when the reset dropped the socket's state before the write's exit: the churn
/// test's api saw `GET error:closed`, the analysis a `CONNECT ECONNRESET`).
#[test]
fn a_request_answered_by_a_reset_is_recorded_and_unanswered() {
    let Some(_lock) = root_or_skip("a_request_answered_by_a_reset_is_recorded_and_unanswered")
    else {
        return;
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts and closes at once, never reading: a FIN now, a reset for what comes after.
    thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let daemon = Daemon::start("tcp,l7", &["--port", &port.to_string()]);
    const N: usize = 5;
    let mut conns = Vec::new();
    for i in 0..N {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        thread::sleep(Duration::from_millis(20)); // the FIN is in: CLOSE_WAIT
        let request = format!("GET /item/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(request.as_bytes()).expect("the write succeeds");
        let mut buf = [0u8; 64];
        // End of stream, or the reset: no response either way.
        assert!(!matches!(s.read(&mut buf), Ok(n) if n > 0), "no response");
        conns.push((s.local_addr().expect("local"), request.len() as u64));
    }
    let cap = daemon.stop();
    let evs = cap.events();
    let me = std::process::id();
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for (local, sent) in &conns {
        let dump = describe(&evs, |e| match &e.body {
            EventBody::Tcp(t) => t.local.socket_addr() == *local,
            EventBody::L7(m) => m.local.socket_addr() == *local,
            _ => false,
        });
        let msgs = l7_of(&evs, me, *local, server);
        assert!(
            msgs.iter()
                .any(|m| m.direction == Direction::Egress && m.payload.starts_with(b"GET /item/")),
            "the request written on {local} is recorded:\n{dump}"
        );
        let closed: Vec<u64> = tcp_events(&evs)
            .into_iter()
            .filter(|(_, t)| t.local.socket_addr() == *local && t.conn.pid == me)
            .filter_map(|(_, t)| match t.step {
                TcpStep::Closed { bytes_sent, .. } => Some(bytes_sent),
                _ => None,
            })
            .collect();
        assert_eq!(
            closed,
            [*sent],
            "one close of {local}, with the bytes sent:\n{dump}"
        );
    }
    // The analysis: N requests without a response, no failed connect.
    let report = temp_dir("reset-report");
    let out = common::retrace(&[
        "analyze",
        "--quiet",
        common::path(&cap.out),
        "--out",
        common::path(report.path()),
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    let csv = fs::read_to_string(report.path().join("requests.csv")).expect("requests.csv");
    let mine: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(&format!(":{port},")))
        .collect();
    let unanswered = mine
        .iter()
        .filter(|l| l.contains(",GET,/item/") && l.contains(",no response ("))
        .count();
    assert_eq!(unanswered, N, "{N} requests without a response:\n{csv}");
    assert!(
        !mine.iter().any(|l| l.contains(",CONNECT,")),
        "no failed connect:\n{csv}"
    );
}

/// Removes the iptables rule when dropped (even on panic).
struct IptablesRule(Vec<String>);

impl IptablesRule {
    fn add(spec: &[&str]) -> Self {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        let st = Command::new("iptables")
            .arg("-I")
            .args(&spec)
            .status()
            .expect("run iptables");
        assert!(
            st.success(),
            "iptables -I {spec:?} failed ({st}); is iptables installed?"
        );
        Self(spec)
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let st = Command::new("iptables").arg("-D").args(&self.0).status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!(
                "WARNING: could not remove iptables rule {:?}: {st:?}",
                self.0
            );
        }
    }
}

/// An echo server on an ephemeral port: answers every 1000-byte message with itself.
fn echo_server() -> (u16, thread::JoinHandle<()>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 1000];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        }
    });
    (port, h)
}

/// Ping-pongs `rounds` 1000-byte messages; returns the client socket's local address.
fn ping_pong(port: u16, rounds: usize) -> SocketAddr {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let local = s.local_addr().expect("local");
    let mut buf = [7u8; 1000];
    for _ in 0..rounds {
        s.write_all(&buf).expect("write");
        s.read_exact(&mut buf).expect("read");
    }
    local
}

/// `iptables -m statistic --mode random --probability 0.3 -j DROP` on one port gives
/// retransmits on that connection's 4-tuple, and none on an identical connection beside it.
#[test]
fn packet_loss_gives_retransmits_on_that_connection_only() {
    let Some(_lock) = root_or_skip("packet_loss_gives_retransmits_on_that_connection_only") else {
        return;
    };
    let (lossy_port, lossy_srv) = echo_server();
    let (clean_port, clean_srv) = echo_server();
    let daemon = Daemon::start("tcp", &[]);
    let (lossy_client, clean_client) = {
        let port = lossy_port.to_string();
        let _rule = IptablesRule::add(&[
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.3",
            "-j",
            "DROP",
        ]);
        let clean = thread::spawn(move || ping_pong(clean_port, 40));
        let lossy = ping_pong(lossy_port, 40);
        (lossy, clean.join().expect("clean client"))
    }; // rule removed here
    lossy_srv.join().expect("server");
    clean_srv.join().expect("server");
    let cap = daemon.stop();
    let evs = cap.events();
    let retrans = samples(&evs, TcpSampleKind::Retransmit);
    let lossy_server = SocketAddr::from((Ipv4Addr::LOCALHOST, lossy_port));
    let clean_server = SocketAddr::from((Ipv4Addr::LOCALHOST, clean_port));
    let on = |s: &TcpSample, a: SocketAddr, b: SocketAddr| {
        (s.local == ep(a) && s.remote == ep(b)) || (s.local == ep(b) && s.remote == ep(a))
    };
    let dump = retrans
        .iter()
        .map(|s| {
            format!(
                "  {} -> {} state {} pid {:?}\n",
                s.local, s.remote, s.state, s.pid
            )
        })
        .collect::<String>();
    let lossy = retrans
        .iter()
        .filter(|s| on(s, lossy_client, lossy_server))
        .count();
    let clean = retrans
        .iter()
        .filter(|s| on(s, clean_client, clean_server))
        .count();
    // 40 round trips of 2 segments plus ACKs with 30% of the client-to-server packets
    // dropped: P(no drop at all) = 0.7^80 ≈ 4e-13.
    assert!(
        lossy > 0,
        "no retransmit on {lossy_client}<->{lossy_server}; all:\n{dump}"
    );
    assert_eq!(
        clean, 0,
        "retransmits on the clean connection {clean_client}:\n{dump}"
    );
    // Retransmits run in softirq: they are attributed by socket, not by the current task.
    let unattributed: Vec<_> = retrans
        .iter()
        .filter(|s| on(s, lossy_client, lossy_server) && s.pid != Some(std::process::id()))
        .collect();
    assert!(
        unattributed.is_empty(),
        "{} of {lossy} retransmits not attributed to this process; all:\n{dump}",
        unattributed.len()
    );
}

/// The handshake's last ACK dropped (iptables: pure ACKs to one port) makes the listener send
/// its SYN-ACK again after 1 s: each is a `SynAckRetransmit` sample on that connection's tuple,
/// owned by the listener's process, as many per connection as bpftrace counts on the same
/// tracepoint (`tcp:tcp_retransmit_synack`).
#[test]
fn a_repeated_handshake_is_a_synack_retransmit_of_its_connection() {
    let Some(_lock) = root_or_skip("a_repeated_handshake_is_a_synack_retransmit_of_its_connection")
    else {
        return;
    };
    // The listener opened under the capture: its listen(2) names its owner.
    let daemon = Daemon::start("tcp", &[]);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let out = std::env::temp_dir().join(format!("retrace-synack-bt-{}", std::process::id()));
    let script = format!(
        "BEGIN {{ printf(\"READY\\n\"); }} \
         tracepoint:tcp:tcp_retransmit_synack /args->sport == {port}/ \
         {{ printf(\"synack %d\\n\", args->dport); }}"
    );
    let mut bt = ChildGuard::spawn(
        Command::new("bpftrace")
            .args(["-B", "line", "-e", &script])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("bpftrace output"))
            .stderr(Stdio::inherit()),
    );
    let t = Instant::now();
    while !fs::read_to_string(&out).is_ok_and(|o| o.contains("READY")) {
        assert!(
            bt.wait_timeout(Duration::from_millis(100)).is_none(),
            "bpftrace exited at start (Debian package bpftrace, scripts/install-deps.sh)"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "bpftrace did not attach"
        );
    }
    let clients: Vec<TcpStream> = {
        let _rule = IptablesRule::add(&[
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "--tcp-flags",
            "SYN,ACK,FIN,RST,PSH",
            "ACK",
            "-j",
            "DROP",
        ]);
        let clients = (0..3)
            .map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect"))
            .collect();
        // The first SYN-ACK is sent again 1 s after the first (TCP_TIMEOUT_INIT), the second
        // 2 s later: one each while the rule holds.
        thread::sleep(Duration::from_millis(1_800));
        clients
    }; // rule removed here
    let mut ports = BTreeSet::new();
    for mut c in clients {
        // Data carries an ACK too (with PSH): it completes the handshake.
        c.write_all(b"x").expect("write");
        ports.insert(c.local_addr().expect("local").port());
    }
    listener.set_nonblocking(false).expect("blocking");
    for _ in 0..ports.len() {
        let (mut s, _) = listener.accept().expect("accept");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("read");
    }
    let cap = daemon.stop();
    bt.signal(libc::SIGINT);
    let _ = bt.wait_timeout(Duration::from_secs(20));
    drop(bt);
    let truth = fs::read_to_string(&out).expect("bpftrace output");
    let _ = fs::remove_file(&out);
    let evs = cap.events();
    let synacks = samples(&evs, TcpSampleKind::SynAckRetransmit);
    let server = ep(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    for &client_port in &ports {
        let client = ep(SocketAddr::from((Ipv4Addr::LOCALHOST, client_port)));
        let ours: Vec<_> = synacks
            .iter()
            .filter(|s| s.local == server && s.remote == client)
            .collect();
        let kernel = truth
            .lines()
            .filter(|l| *l == format!("synack {client_port}"))
            .count();
        assert!(kernel >= 1, "bpftrace saw no SYN-ACK sent again:\n{truth}");
        assert_eq!(
            ours.len(),
            kernel,
            "SYN-ACKs sent again to {client}: {ours:?}; bpftrace:\n{truth}"
        );
        for s in ours {
            assert_eq!((s.state, s.pid), (12, Some(std::process::id())), "{s:?}");
        }
    }
}

/// `ss -tin` on the connection from local port `port` (the kernel's own view of it).
fn ss_info(port: u16) -> String {
    let out = Command::new("ss")
        .args(["-tinH", "sport", &format!("= :{port}")])
        .output()
        .expect("ss (Debian package iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server that stops reading: its client writes until its send buffer is full, and the
/// socket sampler finds the client's socket unable to send (a zero window), where `ss` says
/// the kernel found it limited by the receiver's window (`rwnd_limited`). A connection beside
/// it that exchanged once and then idles gets RTT samples while idle (no syscall of its runs),
/// the last one equal to the srtt `ss` shows.
#[test]
fn the_socket_sampler_sees_zero_windows_and_idle_connections() {
    let Some(_lock) = root_or_skip("the_socket_sampler_sees_zero_windows_and_idle_connections")
    else {
        return;
    };
    let daemon = Daemon::start("tcp", &["--sock-interval", "200ms"]);
    let pair = || {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        (c, s)
    };
    let (mut idle_c, mut idle_s) = pair();
    idle_c.write_all(b"ping").expect("write");
    let mut b = [0u8; 4];
    idle_s.read_exact(&mut b).expect("read");
    idle_s.write_all(b"pong").expect("write");
    idle_c.read_exact(&mut b).expect("read");
    let (mut stuck_c, _stuck_s) = pair();
    stuck_c.set_nonblocking(true).expect("nonblocking");
    let chunk = vec![7u8; 64 << 10];
    let mut written = 0usize;
    loop {
        match stuck_c.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    let idle_since = Instant::now();
    thread::sleep(Duration::from_millis(1_500));
    let stuck_port = stuck_c.local_addr().expect("local").port();
    let idle_port = idle_c.local_addr().expect("local").port();
    let (ss_stuck, ss_idle) = (ss_info(stuck_port), ss_info(idle_port));
    let cap = daemon.stop();
    let idle_for = idle_since.elapsed();
    // The kernel's word: the stuck sender was limited by the receiver's window, the idle one
    // was not.
    assert!(
        ss_stuck.contains("rwnd_limited:"),
        "ss does not show the stuck connection (wrote {written} bytes) window-limited:\n{ss_stuck}"
    );
    assert!(!ss_idle.contains("rwnd_limited:"), "{ss_idle}");
    let evs = cap.events();
    let on = |s: &TcpSample, port: u16| s.local.port == port || s.remote.port == port;
    let zero = samples(&evs, TcpSampleKind::ZeroWindow);
    let stuck: Vec<_> = zero.iter().filter(|s| on(s, stuck_port)).collect();
    // 1.5 s at 200 ms: about 7 passes.
    assert!(
        stuck.len() >= 4,
        "zero-window samples on the stuck connection: {stuck:?}"
    );
    for s in &stuck {
        // Taken on the end that cannot send: the client's socket, this process's.
        assert_eq!(s.local.port, stuck_port, "{s:?}");
        assert_eq!(s.pid, Some(std::process::id()), "{s:?}");
    }
    assert!(
        !zero.iter().any(|s| on(s, idle_port)),
        "zero windows on the idle connection: {zero:?}"
    );
    // RTT samples of the idle client's socket while it idled.
    let rtt = samples(&evs, TcpSampleKind::Rtt);
    let idle: Vec<_> = rtt.iter().filter(|s| s.local.port == idle_port).collect();
    assert!(
        idle.len() >= 4,
        "{} RTT samples of the idle connection over {idle_for:?}: {idle:?}",
        idle.len()
    );
    // ss prints the srtt in ms with µs digits (`rtt:0.046/0.023`).
    let ss_rtt_us = ss_idle
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rtt:"))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| (ms * 1000.0).round() as i64)
        .unwrap_or_else(|| panic!("no rtt in ss's output: {ss_idle}"));
    let last = i64::from(idle.last().map_or(0, |s| s.srtt_us));
    assert!(
        (last - ss_rtt_us).abs() <= 1,
        "idle connection's srtt: sampled {last} µs, ss {ss_rtt_us} µs"
    );
}

/// An echo server for any number of connections: every byte read is written back, until EOF.
fn echo_all_server() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// The client of `fd_reuse_is_not_taken_for_the_socket`: connections whose fd stops naming
/// them without a close(2) of that fd (dup2 over it, close_range, exec closing it while an
/// inherited copy keeps the connection open), and one written through a dup(2). After each,
/// the old fd number reads a file.
const FD_REUSE_CLIENT: &str = r#"
import ctypes, os, socket, sys
port, tag, path = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]

def conn(label):
    s = socket.create_connection(("127.0.0.1", port))
    msg = b"PING-" + label + b"-" + tag
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        got += s.recv(100)
    print(label.decode(), s.getsockname()[1], flush=True)
    return s

# dup2 over the socket's only fd: the socket is closed, the fd number now reads a file
a = conn(b"DUP2")
f = os.open(path, os.O_RDONLY)
os.dup2(f, a.fileno())
os.close(f)
assert os.read(a.fileno(), 100).startswith(b"FILEDATA")
os.close(a.detach())

# a dup of the socket: what is written through the copy belongs to the connection
b = conn(b"DUP")
d = os.dup(b.fileno())
os.write(d, b"VIA-DUP-" + tag)
got = b""
while len(got) < len(b"VIA-DUP-" + tag):
    got += b.recv(100)
os.close(d)
b.close()

# close_range(2) over the socket's fd, then the same number reads a file
c = conn(b"RANGE")
n = c.fileno()
libc = ctypes.CDLL(None, use_errno=True)
assert libc.syscall(436, n, n, 0) == 0, ctypes.get_errno()
c.detach()
f = os.open(path, os.O_RDONLY)
assert f == n, (f, n)
assert os.read(f, 100).startswith(b"FILEDATA")
os.close(f)

# exec: the socket's fd (close-on-exec, moved to number 100, out of the way of what the new
# program's start-up opens and closes) is closed by the kernel; an inheritable copy keeps the
# connection open. The new program opens files until one lands on 100 and reads it, then
# talks on the copy.
e = conn(b"EXEC")
os.dup2(e.fileno(), 100, inheritable=False)
os.close(e.detach())
keep = os.dup(100)
os.set_inheritable(keep, True)
prog = ("import os,sys\n"
        "path, keep, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()\n"
        "while os.open('/dev/null', os.O_RDONLY) < 99:\n"
        "    pass\n"
        "fd = os.open(path, os.O_RDONLY)\n"
        "assert fd == 100, fd\n"
        "assert os.read(fd, 100).startswith(b'FILEDATA')\n"
        "msg = b'AFTER-EXEC-' + tag\n"
        "os.write(keep, msg)\n"
        "got = b''\n"
        "while len(got) < len(msg):\n"
        "    got += os.read(keep, 100)\n"
        "os.close(keep)\n"
        "print('EXECED', fd, flush=True)\n")
os.execv(sys.executable, [sys.executable, "-c", prog, path, str(keep), tag.decode()])
"#;

/// An fd that stops naming a followed socket without close(2) of that fd (dup2 over it,
/// close_range, exec closing it) is forgotten: the next file on that number is not read as the
/// connection's traffic; the socket's close is still reported with its byte counts; and a
/// dup(2) of a followed socket is followed too.
#[test]
fn fd_reuse_is_not_taken_for_the_socket() {
    let Some(_lock) = root_or_skip("fd_reuse_is_not_taken_for_the_socket") else {
        return;
    };
    let port = echo_all_server();
    let tag = nonce();
    let dir = temp_dir("fdreuse");
    let file = dir.path().join("data.txt");
    fs::write(&file, format!("FILEDATA-{tag}-not-network-traffic\n")).expect("write file");

    let daemon = Daemon::start("tcp,l7", &[]); // without proc: exec and exit still prune fds
    let out = Command::new(PYTHON)
        .args(["-c", FD_REUSE_CLIENT, &port.to_string(), &tag])
        .arg(&file)
        .output()
        .expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("EXECED"),
        "client failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    thread::sleep(Duration::from_millis(500));
    let cap = daemon.stop();
    let evs = cap.events();

    let ports: std::collections::HashMap<&str, u16> = stdout
        .lines()
        .filter_map(|l| {
            let (label, p) = l.split_once(' ')?;
            Some((label, p.parse().ok()?))
        })
        .collect();
    let dump = || {
        describe(&evs, |e| match &e.body {
            EventBody::Tcp(t) => t.remote.port == port || t.local.port == port,
            EventBody::L7(m) => m.remote.port == port || m.local.port == port,
            _ => false,
        })
    };

    // No file byte is anywhere in the network traffic.
    let file_marker = format!("FILEDATA-{tag}");
    let leaked: Vec<_> = evs
        .iter()
        .filter(|e| match &e.body {
            EventBody::L7(m) => contains(&m.payload, file_marker.as_bytes()),
            _ => false,
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "file bytes read through a reused fd were taken for a socket's traffic: {leaked:#?}"
    );

    // Every connection of the client closed once, with exact byte counts.
    for label in ["DUP2", "DUP", "RANGE", "EXEC"] {
        let local = *ports
            .get(label)
            .unwrap_or_else(|| panic!("no {label} line in {stdout}"));
        let ping = format!("PING-{label}-{tag}").len() as u64;
        let extra = match label {
            "DUP" => format!("VIA-DUP-{tag}").len() as u64,
            "EXEC" => format!("AFTER-EXEC-{tag}").len() as u64,
            _ => 0,
        };
        let closes: Vec<_> = tcp_events(&evs)
            .into_iter()
            .filter(|(_, t)| {
                t.local.port == local
                    && t.remote.port == port
                    && matches!(t.step, TcpStep::Closed { .. })
            })
            .collect();
        assert_eq!(
            closes.len(),
            1,
            "{label}: one close of :{local}\n{}",
            dump()
        );
        assert_eq!(
            closes[0].1.step,
            TcpStep::Closed {
                bytes_sent: ping + extra,
                bytes_received: ping + extra
            },
            "{label}: byte counts at close\n{}",
            dump()
        );
    }

    // The write through the dup'ed fd is an L7 message of the DUP connection.
    let dup_local = ports["DUP"];
    let via_dup = format!("VIA-DUP-{tag}");
    assert!(
        evs.iter().any(|e| matches!(&e.body, EventBody::L7(m)
            if m.local.port == dup_local
                && m.direction == Direction::Egress
                && m.payload == via_dup.as_bytes())),
        "no egress message {via_dup:?} on :{dup_local}\n{}",
        dump()
    );
}

/// Builds a DNS answer for `query`: same id and question, one A record 10.1.2.3.
fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = 0x80; // RA, NOERROR
    r[6..8].copy_from_slice(&1u16.to_be_bytes()); // ANCOUNT
    r[8..12].fill(0); // NSCOUNT, ARCOUNT (drop EDNS)
                      // Cut the additional section: keep header + first question.
    let mut i = 12;
    while r[i] != 0 {
        i += 1 + r[i] as usize;
    }
    r.truncate(i + 5);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
    r
}

/// A DNS exchange between `dig` and a UDP responder on a loopback address, port 53.
#[test]
fn dns_query_and_answer_are_captured() {
    let Some(_lock) = root_or_skip("dns_query_and_answer_are_captured") else {
        return;
    };
    // Any 127/8 address is on lo; take the first one whose port 53 is free.
    let sock = (53..80u8)
        .find_map(|last| UdpSocket::bind((Ipv4Addr::new(127, 0, 0, last), 53)).ok())
        .expect("a free 127.0.0.x:53");
    let server = sock.local_addr().expect("addr");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let daemon = Daemon::start("proc,dns", &[]);
    let name = format!("t{}.retrace.test", nonce());
    let responder = thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let (n, peer) = sock.recv_from(&mut buf).expect("query");
        let answer = dns_answer(&buf[..n]);
        sock.send_to(&answer, peer).expect("answer");
        (buf[..n].to_vec(), answer, peer)
    });
    let dig = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            "53",
            "+tries=1",
            "+time=5",
            &name,
            "A",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dig (dnsutils) installed");
    let dig_pid = dig.id();
    let out = dig.wait_with_output().expect("dig");
    let (query, answer, peer) = responder.join().expect("responder");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10.1.2.3"), "dig got the answer:\n{text}");
    let cap = daemon.stop();
    let evs = cap.events();
    let udp: Vec<(&UdpMessage, u64)> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Udp(u) => Some((u, e.ts)),
            _ => None,
        })
        .collect();
    let dump = udp
        .iter()
        .map(|(u, _)| {
            format!(
                "  pid {} {:?} {} -> {} size {} payload {} bytes\n",
                u.pid,
                u.direction,
                u.local,
                u.remote,
                u.size,
                u.payload.len()
            )
        })
        .collect::<String>();
    let me = std::process::id();
    // Client (dig) side.
    let q = udp.iter().find(|(u, _)| {
        u.pid == dig_pid && u.direction == Direction::Egress && u.remote == ep(server)
    });
    let (q, q_ts) = q.unwrap_or_else(|| panic!("no query from dig ({dig_pid}):\n{dump}"));
    assert_eq!(q.size, query.len() as u64);
    assert_eq!(q.payload, query, "the whole query");
    let a = udp.iter().find(|(u, _)| {
        u.pid == dig_pid && u.direction == Direction::Ingress && u.remote == ep(server)
    });
    let (a, a_ts) = a.unwrap_or_else(|| panic!("no answer to dig:\n{dump}"));
    assert_eq!(a.payload, answer);
    assert_eq!(a.size, answer.len() as u64);
    assert!(q_ts <= a_ts);
    // Responder (this process) side.
    let sq = udp
        .iter()
        .find(|(u, _)| u.pid == me && u.direction == Direction::Ingress && u.remote == ep(peer));
    assert_eq!(
        sq.map(|(u, _)| u.payload.clone()),
        Some(query),
        "responder's read:\n{dump}"
    );
    let sa = udp
        .iter()
        .find(|(u, _)| u.pid == me && u.direction == Direction::Egress && u.remote == ep(peer));
    assert_eq!(
        sa.map(|(u, _)| u.payload.clone()),
        Some(answer),
        "responder's write:\n{dump}"
    );
}

fn execs(evs: &[Event]) -> Vec<&ProcExec> {
    evs.iter()
        .filter_map(|e| match &e.body {
            EventBody::ProcExec(x) => Some(x),
            _ => None,
        })
        .collect()
}

fn exits(evs: &[Event]) -> Vec<&ProcExit> {
    evs.iter()
        .filter_map(|e| match &e.body {
            EventBody::ProcExit(x) => Some(x),
            _ => None,
        })
        .collect()
}

/// A process exec and exit: the command line, parent, exit code; and a kill by signal.
#[test]
fn exec_and_exit_with_code_and_signal() {
    let Some(_lock) = root_or_skip("exec_and_exit_with_code_and_signal") else {
        return;
    };
    let daemon = Daemon::start("proc", &[]);
    let tag = nonce();
    let script = format!("sleep 0.2; exit 42 # {tag}");
    let mut sh = ChildGuard::spawn(Command::new("/bin/sh").args(["-c", &script]));
    let sh_pid = sh.pid();
    let st = sh.wait_timeout(Duration::from_secs(20)).expect("sh exits");
    assert_eq!(st.code(), Some(42));
    let _ = sh.take();
    let mut sleeper = ChildGuard::spawn(Command::new("sleep").arg("1000"));
    let sleeper_pid = sleeper.pid();
    thread::sleep(Duration::from_millis(200));
    sleeper.signal(libc::SIGKILL);
    sleeper
        .wait_timeout(Duration::from_secs(10))
        .expect("killed");
    let _ = sleeper.take();
    let cap = daemon.stop();
    let evs = cap.events();
    let me = std::process::id();

    let ex: Vec<_> = execs(&evs)
        .into_iter()
        .filter(|e| e.pid == sh_pid)
        .collect();
    assert_eq!(
        ex.len(),
        1,
        "one exec of pid {sh_pid}:\n{}",
        describe(&evs, |e| e.pid() == Some(sh_pid))
    );
    let ex = ex[0];
    assert_eq!(ex.ppid, me);
    assert_eq!(ex.comm, "sh");
    assert_eq!(
        ex.cmdline,
        vec!["/bin/sh".to_string(), "-c".into(), script.clone()]
    );
    assert!(ex.exe.ends_with("sh"), "exe {:?}", ex.exe);
    let exit: Vec<_> = exits(&evs)
        .into_iter()
        .filter(|e| e.pid == sh_pid)
        .collect();
    assert_eq!(exit.len(), 1, "one exit of {sh_pid}");
    assert_eq!(
        (exit[0].exit_code, exit[0].signal, exit[0].oom_killed),
        (42, 0, false)
    );
    // The `sleep 0.2` child of sh: a fork then an exec of sleep, exit 0.
    let forks: Vec<u32> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ProcFork(f) if f.parent_pid == sh_pid => Some(f.child_pid),
            _ => None,
        })
        .collect();
    assert_eq!(forks.len(), 1, "sh forked once");
    let child_exec = execs(&evs)
        .into_iter()
        .find(|e| e.pid == forks[0])
        .expect("sleep exec");
    assert_eq!(child_exec.cmdline, vec!["sleep".to_string(), "0.2".into()]);
    let k: Vec<_> = exits(&evs)
        .into_iter()
        .filter(|e| e.pid == sleeper_pid)
        .collect();
    assert_eq!(k.len(), 1, "one exit of the killed sleep");
    assert_eq!((k[0].exit_code, k[0].signal), (0, libc::SIGKILL));
}

/// A cgroup v1 memory cgroup, removed when dropped.
struct MemCgroup(PathBuf);

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("WARNING: could not remove {}", self.0.display());
    }
}

/// An OOM kill in a 32 MiB cgroup v1 memory cgroup: the victim is marked, and its exit says
/// SIGKILL and OOM.
#[test]
fn oom_kill_is_captured_and_marks_the_victim() {
    let Some(_lock) = root_or_skip("oom_kill_is_captured_and_marks_the_victim") else {
        return;
    };
    let root = Path::new("/sys/fs/cgroup/memory");
    if !root.join("memory.limit_in_bytes").exists() {
        // cgroup v2 only machines: the same through memory.max.
        panic!(
            "no cgroup v1 memory controller at {}: cannot provoke an OOM kill",
            root.display()
        );
    }
    let cg = MemCgroup(root.join(format!("retrace-test-{}", nonce())));
    fs::create_dir(&cg.0).expect("create memory cgroup");
    fs::write(cg.0.join("memory.limit_in_bytes"), "33554432").expect("set limit");
    // No swap escape: limit memory+swap too when swap accounting exists.
    let _ = fs::write(cg.0.join("memory.memsw.limit_in_bytes"), "33554432");
    let daemon = Daemon::start("proc", &[]);
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /usr/bin/python3 -c 'b = bytearray(b\"x\") * (512 << 20)'",
        cg.0.display()
    );
    let mut victim = ChildGuard::spawn(Command::new("/bin/sh").args(["-c", &script]));
    let pid = victim.pid();
    let st = victim
        .wait_timeout(Duration::from_secs(60))
        .expect("victim ends");
    let _ = victim.take();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL),
        "python was OOM-killed ({st})"
    );
    let cap = daemon.stop();
    let evs = cap.events();
    let oom: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::OomKill(o) if o.pid == pid => Some(o),
            _ => None,
        })
        .collect();
    let dump = describe(&evs, |e| e.pid() == Some(pid));
    assert_eq!(oom.len(), 1, "one OOM kill of {pid}:\n{dump}");
    assert_eq!(oom[0].comm, "python3");
    let exit: Vec<_> = exits(&evs).into_iter().filter(|e| e.pid == pid).collect();
    assert_eq!(exit.len(), 1, "one exit of {pid}:\n{dump}");
    assert_eq!(
        (exit[0].signal, exit[0].oom_killed),
        (libc::SIGKILL, true),
        "{:?}",
        exit[0]
    );
}

/// Makes steady activity of every stream kind: HTTP exchanges and short processes.
fn background_load(stop: Arc<std::sync::atomic::AtomicBool>, port: u16) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = http_get(port, b"GET / HTTP/1.0\r\n\r\n");
            let _ = Command::new("true").status();
            n += 1;
            thread::sleep(Duration::from_millis(20));
        }
        n
    })
}

/// SIGTERM mid-capture under load: exit 0, manifest written and consistent with the files,
/// every segment sealed and readable alone, files private to the owner.
#[test]
fn sigterm_leaves_every_file_readable_and_the_manifest_written() {
    let Some(_lock) = root_or_skip("sigterm_leaves_every_file_readable_and_the_manifest_written")
    else {
        return;
    };
    let www = temp_dir("www");
    fs::write(www.path().join("index.html"), "hello\n").expect("index");
    let port = free_port();
    let _server = python_http_server(www.path(), port);
    let daemon = Daemon::start("proc,tcp,l7", &[]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = background_load(Arc::clone(&stop), port);
    thread::sleep(Duration::from_secs(3));
    let cap = daemon.stop(); // mid-load
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = load.join().expect("load");
    assert!(rounds > 10, "load ran ({rounds} rounds)");

    let m = cap.manifest();
    assert!(m.ended_wall_ns.is_some(), "manifest marks the end");
    assert!(!m.segments.is_empty());
    let on_disk: BTreeSet<String> = cap
        .segments()
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = m.segments.iter().map(|s| s.file.clone()).collect();
    assert_eq!(
        listed, on_disk,
        "manifest lists exactly the segments on disk"
    );
    let mut total = 0u64;
    for s in &m.segments {
        assert!(s.sealed, "segment {} sealed", s.file);
        let evs = replay_jsonl(&cap.out.join(&s.file));
        assert_eq!(
            evs.len() as u64,
            s.events,
            "events of {} as the manifest says",
            s.file
        );
        total += s.events;
    }
    assert_eq!(total, m.totals.events, "manifest totals");
    let evs = cap.events();
    assert_eq!(
        evs.len() as u64,
        total,
        "replay of the directory gives every event"
    );
    for kind in ["exec", "tcp", "l7"] {
        assert!(
            m.totals.events_by_kind.get(kind).copied().unwrap_or(0) > 0,
            "{kind} events"
        );
    }
    let (st, stats, stderr) = run_replay(&[cap.out.as_os_str(), "--stats".as_ref()]);
    assert!(st.success(), "replay --stats: {stderr}");
    assert!(!stats.trim().is_empty());
    // Private files: directory 0700, files 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&cap.out), 0o700, "capture dir mode");
    for p in cap
        .segments()
        .iter()
        .chain([cap.out.join("manifest.json")].iter())
    {
        assert_eq!(mode(p), 0o600, "{} mode", p.display());
    }
}

/// SIGKILL mid-capture: every block flushed before the kill stays readable, so an exec made
/// more than a flush interval (1 s) before the kill is in the capture.
#[test]
fn sigkill_leaves_every_flushed_block_readable() {
    let Some(_lock) = root_or_skip("sigkill_leaves_every_flushed_block_readable") else {
        return;
    };
    let www = temp_dir("www");
    fs::write(www.path().join("index.html"), "hello\n").expect("index");
    let port = free_port();
    let _server = python_http_server(www.path(), port);
    let daemon = Daemon::start("proc,tcp,l7", &[]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = background_load(Arc::clone(&stop), port);
    let tag = nonce();
    let mut marker = ChildGuard::spawn(Command::new("/bin/sh").args(["-c", "exit 7", &tag]));
    let marker_pid = marker.pid();
    marker
        .wait_timeout(Duration::from_secs(10))
        .expect("marker exits");
    let _ = marker.take();
    thread::sleep(Duration::from_millis(3500)); // > block_max_age (1 s) + a tick + fdatasync
    let cap = daemon.kill(); // mid-load
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("load");

    let segs = cap.segments();
    assert!(!segs.is_empty(), "segments on disk after SIGKILL");
    let mut total = 0;
    for s in &segs {
        total += replay_jsonl(s).len(); // each file readable alone (torn tail recovered)
    }
    let evs = cap.events();
    assert_eq!(
        evs.len(),
        total,
        "the directory reads as the sum of its files"
    );
    let ex = execs(&evs).into_iter().find(|e| e.pid == marker_pid);
    let ex = ex.unwrap_or_else(|| panic!("exec of {marker_pid} flushed 3.5 s before the kill"));
    assert_eq!(
        ex.cmdline,
        vec!["/bin/sh".to_string(), "-c".into(), "exit 7".into(), tag]
    );
    let exit = exits(&evs)
        .into_iter()
        .find(|e| e.pid == marker_pid)
        .expect("marker exit");
    assert_eq!(exit.exit_code, 7);
    let (st, _stats, stderr) = run_replay(&[cap.out.as_os_str(), "--stats".as_ref()]);
    assert!(st.success(), "replay --stats after SIGKILL: {stderr}");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of a capture directory, plus the decompressed content of every zstd frame found
/// in it (segment blocks are zstd frames), so that a secret is found whether or not it was
/// compressed.
fn all_bytes(dir: &Path) -> Vec<u8> {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let mut all = Vec::new();
    for e in fs::read_dir(dir).expect("dir").filter_map(Result::ok) {
        if !e.file_type().expect("file type").is_file() {
            continue;
        }
        let raw = fs::read(e.path()).expect("read capture file");
        for (i, w) in raw.windows(4).enumerate() {
            if w != ZSTD_MAGIC {
                continue;
            }
            let Ok(dec) = zstd::stream::read::Decoder::with_buffer(&raw[i..]) else {
                continue;
            };
            let mut out = Vec::new();
            // Bounded: a block holds at most ~1 MiB of events.
            if dec
                .single_frame()
                .take(64 << 20)
                .read_to_end(&mut out)
                .is_ok()
            {
                all.extend_from_slice(&out);
            }
        }
        all.extend_from_slice(&raw);
    }
    all
}

/// The Authorization header's value of a captured request never reaches the disk; with
/// `--no-redact` it does (the control that shows the check can fail).
#[test]
fn authorization_header_value_is_not_on_disk() {
    let Some(_lock) = root_or_skip("authorization_header_value_is_not_on_disk") else {
        return;
    };
    let www = temp_dir("www");
    fs::write(www.path().join("index.html"), "hello\n").expect("index");
    let port = free_port();
    let _server = python_http_server(www.path(), port);
    let server_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    for redact in [true, false] {
        let token = format!("s3cr3t{}TOKEN", nonce());
        let extra: &[&str] = if redact { &[] } else { &["--no-redact"] };
        let daemon = Daemon::start("tcp,l7", extra);
        let request =
            format!("GET /index.html HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        let (client, response) = http_get(port, request.as_bytes());
        assert!(response.starts_with(b"HTTP/1.0 200"));
        thread::sleep(Duration::from_millis(200));
        let cap = daemon.stop();
        let evs = cap.events();
        let me = std::process::id();
        let sent = l7_of(&evs, me, client, server_addr);
        let sent = sent.iter().find(|m| m.direction == Direction::Egress);
        let sent = sent.unwrap_or_else(|| panic!("request captured (redact={redact})"));
        assert_eq!(sent.size, request.len() as u64);
        assert_eq!(sent.payload.len(), request.len(), "length kept");
        let stars = "*".repeat(token.len());
        if redact {
            // "Bearer " may be kept or starred too: the token itself must be gone.
            assert!(
                !contains(&sent.payload, token.as_bytes()),
                "token in replayed payload"
            );
            assert!(
                contains(&sent.payload, stars.as_bytes()),
                "value overwritten with '*'"
            );
            assert!(sent
                .payload
                .starts_with(b"GET /index.html HTTP/1.0\r\nHost: x\r\n"));
            // Also on the server's read of the same request.
            let srv_in = evs.iter().any(|e| {
                matches!(&e.body, EventBody::L7(m) if m.remote == ep(client)
                    && m.direction == Direction::Ingress && contains(&m.payload, stars.as_bytes()))
            });
            assert!(srv_in, "the server's read is captured and redacted too");
            for e in &evs {
                if let EventBody::L7(m) = &e.body {
                    assert!(!contains(&m.payload, token.as_bytes()), "token in {m:?}");
                }
            }
            let (st, text, _) = run_replay(&[cap.out.as_os_str()]);
            assert!(st.success());
            assert!(!text.contains(&token), "token in the text replay");
        } else {
            assert!(
                contains(&sent.payload, token.as_bytes()),
                "--no-redact keeps the token"
            );
        }
        // The raw files, and every zstd frame in them decompressed: the token is absent when
        // redacting, present with --no-redact (so this check can fail).
        let on_disk = contains(&all_bytes(&cap.out), token.as_bytes());
        assert_eq!(on_disk, !redact, "token on disk (redact={redact})");
    }
}

/// The secrets of a real client, as a user sends them (issue 16's example): curl with a
/// bearer token, a cookie and an API key in the query string, against a Python server whose
/// log line repeats the query; plus two the user's own rules (`--redact-rules`) name: a custom
/// header (`X-Tenant-Secret`) and an order reference matched by a regular expression. None of
/// them reaches the disk: not in the payloads, not in the server's captured log write, not in
/// curl's exec arguments, not in any file of the directory raw or decompressed, not in the
/// replayed events (JSON lines, and text with whole payloads); the rest of the query does.
/// With `--no-redact` they all do (the control that shows the check can fail).
#[test]
fn secrets_of_a_real_client_are_not_on_disk() {
    let Some(_lock) = root_or_skip("secrets_of_a_real_client_are_not_on_disk") else {
        return;
    };
    let www = temp_dir("www-secrets");
    let port = free_port();
    let log_path = www.path().join("server.log");
    let log = fs::File::create(&log_path).expect("server log");
    let _server = python_http_server_logging(www.path(), port, Stdio::from(log));
    let rules = www.path().join("rules.yaml");
    fs::write(
        &rules,
        "headers: [X-Tenant-Secret]\npatterns:\n  - 'ORD-[0-9a-f]+X'\n",
    )
    .expect("rules file");
    for redact in [true, false] {
        let n = nonce();
        let (token, cookie, key) = (format!("tok{n}X"), format!("ck{n}X"), format!("KEY{n}X"));
        let (tenant, order) = (format!("ts{n}X"), format!("ORD-{n}X"));
        let extra: Vec<&str> = if redact {
            vec!["--redact-rules", rules.to_str().expect("utf-8")]
        } else {
            vec!["--no-redact"]
        };
        let daemon = Daemon::start("proc,tcp,l7,logs", &extra);
        let url = format!("http://127.0.0.1:{port}/x?api_key={key}&ref={order}&user=bob{n}");
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg("-H")
            .arg(format!("Cookie: sid={cookie}"))
            .arg("-H")
            .arg(format!("X-Tenant-Secret: {tenant}"))
            .arg(&url)
            .status()
            .expect("curl runs");
        assert!(status.success(), "curl: {status}");
        thread::sleep(Duration::from_millis(300));
        let cap = daemon.stop();
        let logged = fs::read_to_string(&log_path).expect("server log");
        assert!(
            logged.contains(&key),
            "the server logged the query: {logged}"
        );
        let disk = all_bytes(&cap.out);
        let (_, jsonl, _) =
            run_replay(&[cap.out.as_os_str(), "--output".as_ref(), "jsonl".as_ref()]);
        let (_, text, _) = run_replay(&[
            cap.out.as_os_str(),
            "--payload-bytes".as_ref(),
            "4096".as_ref(),
        ]);
        for secret in [&token, &cookie, &key, &tenant, &order] {
            assert_eq!(
                contains(&disk, secret.as_bytes()),
                !redact,
                "{secret} on disk (redact={redact})"
            );
            if redact {
                assert!(!jsonl.contains(secret.as_str()), "{secret} in replay jsonl");
                assert!(!text.contains(secret.as_str()), "{secret} in replay text");
            }
        }
        if !redact {
            assert!(
                text.contains(&tenant),
                "the text replay shows payloads: {tenant}"
            );
        }
        // What the capture must have seen, redacted or not: the request (both ends), the
        // server's log line and curl's exec, each with the query's other parameter.
        let user = format!("user=bob{n}");
        let evs = cap.events();
        let l7 = evs
            .iter()
            .any(|e| matches!(&e.body, EventBody::L7(m) if contains(&m.payload, user.as_bytes())));
        let logs = evs
            .iter()
            .any(|e| matches!(&e.body, EventBody::Log(m) if contains(&m.payload, user.as_bytes())));
        let exec = evs.iter().any(|e| {
            matches!(&e.body, EventBody::ProcExec(x)
                if x.cmdline.iter().any(|a| a.contains(&user)))
        });
        assert!(l7 && logs && exec, "seen: l7 {l7}, log {logs}, exec {exec}");
    }
}

/// `retrace doctor`: all checks pass as root here; without privileges the privilege, program
/// load and ring buffer checks fail with their fixes and the exit status is 1; a bad stream
/// name is a usage error (2).
#[test]
fn doctor_passes_as_root_and_explains_failures_without_privileges() {
    let Some(_lock) =
        root_or_skip("doctor_passes_as_root_and_explains_failures_without_privileges")
    else {
        return;
    };
    let dir = temp_dir("doctor");
    let out = Command::new(BIN)
        .args(["doctor", "--out"])
        .arg(dir.path())
        .output()
        .expect("run doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "doctor as root:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines[..lines.len() - 1] {
        assert!(
            l.starts_with("ok ") || l.starts_with("WARN "),
            "not ok: {l}"
        );
    }
    for needle in [
        "privileges: root",
        "btf: /sys/kernel/btf/vmlinux",
        "tracepoint sock/inet_sock_set_state:",
        "tracepoint oom/mark_victim:",
        "ring buffer: created",
        "disk (",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }

    // The same as `nobody`, through setpriv (util-linux).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "doctor",
            "--out",
            "/tmp",
        ])
        .output()
        .expect("run setpriv");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "doctor as nobody:\n{text}");
    for needle in [
        "FAIL privileges: uid 65534",
        "FAIL ring buffer:",
        "fix: run as root",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }

    let out = Command::new(BIN)
        .args(["doctor", "--streams", "tcp,bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown stream \"bogus\""));
}
