//! Output formats of `retrace replay`: `text` (one readable line per event, like `sysdig -r`),
//! `jsonl` (one JSON object per event: the event as serialized by serde, plus wall time, node
//! and process), and `csv` (the fixed columns of [`CSV_COLUMNS`]).

use std::fmt::Write as _;
use std::io::{self, Write};

use retrace_segment::{Direction, Event, EventBody, MarkSource, TcpStep};
use serde::Serialize;

use crate::merge::ReplayedEvent;
use crate::time::{format_duration, format_wall, WallFormatter};
use crate::view::{direction_name, sample_name, tcp_step_name, EventView};

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(OutputFormat::Text),
            "jsonl" | "json" => Ok(OutputFormat::Jsonl),
            "csv" => Ok(OutputFormat::Csv),
            _ => Err(format!("unknown output format '{s}' (text, jsonl, csv)")),
        }
    }
}

/// The columns of the CSV output, in order.
pub const CSV_COLUMNS: [&str; 20] = [
    "time",
    "wall_ns",
    "mono_ns",
    "node",
    "kind",
    "step",
    "pid",
    "tid",
    "comm",
    "exe",
    "cgroup",
    "fd",
    "direction",
    "laddr",
    "lport",
    "raddr",
    "rport",
    "size",
    "details",
    "payload",
];

/// Writes events in one of the formats.
pub struct EventWriter<W: Write> {
    format: OutputFormat,
    payload_bytes: usize,
    out: Sink<W>,
    line: String,
    clock: WallFormatter,
}

enum Sink<W: Write> {
    Plain(W),
    Csv(Box<crate::csv_cell::CsvWriter<W>>),
}

impl<W: Write> EventWriter<W> {
    /// A writer of `format` to `out`; payloads are shown up to `payload_bytes` bytes in text and
    /// CSV (JSON carries them whole).
    pub fn new(out: W, format: OutputFormat, payload_bytes: usize) -> io::Result<Self> {
        let out = match format {
            OutputFormat::Csv => {
                let mut w = crate::csv_cell::CsvWriter::new(csv::Writer::from_writer(out));
                w.write_record(CSV_COLUMNS).map_err(csv_io)?;
                Sink::Csv(Box::new(w))
            }
            _ => Sink::Plain(out),
        };
        Ok(Self {
            format,
            payload_bytes,
            out,
            line: String::with_capacity(256),
            clock: WallFormatter::default(),
        })
    }

    /// Writes one event.
    pub fn write(&mut self, ev: &ReplayedEvent) -> io::Result<()> {
        match (&mut self.out, self.format) {
            (Sink::Plain(w), OutputFormat::Text) => {
                self.line.clear();
                text_line_with(&mut self.line, ev, self.payload_bytes, &mut self.clock);
                self.line.push('\n');
                w.write_all(self.line.as_bytes())
            }
            (Sink::Plain(w), _) => {
                serde_json::to_writer(&mut *w, &JsonRecord::new(ev)).map_err(io::Error::other)?;
                w.write_all(b"\n")
            }
            (Sink::Csv(w), _) => {
                let rec = csv_record(ev, self.payload_bytes);
                w.write_record(&rec).map_err(csv_io)
            }
        }
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        match self.out {
            Sink::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Sink::Csv(w) => w.into_inner(),
        }
    }
}

fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// The JSON form of one event: `{"time", "wall_ns", "node", "comm", "exe", "cgroup", "ts",
/// "body": {"kind": ..., ...}, "payload_text"}`.
#[derive(Serialize)]
struct JsonRecord<'a> {
    time: String,
    wall_ns: u64,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event,
    /// The payload prefix as escaped text, for reading and grepping.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_text: Option<String>,
}

impl<'a> JsonRecord<'a> {
    fn new(ev: &'a ReplayedEvent) -> Self {
        let v = ev.view();
        JsonRecord {
            time: format_wall(ev.wall_ns),
            wall_ns: ev.wall_ns,
            node: &ev.node,
            comm: v.comm(),
            exe: v.exe(),
            cgroup: v.cgroup(),
            event: &ev.event,
            payload_text: v.payload().map(|p| escape_payload(p, usize::MAX)),
        }
    }
}

fn csv_record(ev: &ReplayedEvent, payload_bytes: usize) -> Vec<String> {
    let v = ev.view();
    let opt = |o: Option<String>| o.unwrap_or_default();
    let mut details = String::new();
    details_of(&mut details, &v, 0);
    vec![
        format_wall(ev.wall_ns),
        ev.wall_ns.to_string(),
        ev.event.ts.to_string(),
        escape_controls(&ev.node).into_owned(),
        ev.event.kind().name().to_string(),
        opt(v.step().map(str::to_string)),
        opt(v.pid().map(|p| p.to_string())),
        opt(v.tid().map(|p| p.to_string())),
        opt(v.comm().map(|s| escape_controls(s).into_owned())),
        opt(v.exe().map(|s| escape_controls(s).into_owned())),
        opt(v.cgroup().map(|s| escape_controls(s).into_owned())),
        opt(v.fd().map(|p| p.to_string())),
        opt(v.direction().map(|d| direction_name(d).to_string())),
        opt(v.local().map(|e| e.addr.to_string())),
        opt(v.local().map(|e| e.port.to_string())),
        opt(v.remote().map(|e| e.addr.to_string())),
        opt(v.remote().map(|e| e.port.to_string())),
        opt(v.size().map(|s| s.to_string())),
        details,
        opt(v.payload().map(|p| escape_payload(p, payload_bytes))),
    ]
}

/// Appends the text line of an event (without the newline):
/// `TIME NODE COMM(PID[/TID]) KIND DETAILS`.
pub fn text_line(out: &mut String, ev: &ReplayedEvent, payload_bytes: usize) {
    text_line_with(out, ev, payload_bytes, &mut WallFormatter::default());
}

fn text_line_with(
    out: &mut String,
    ev: &ReplayedEvent,
    payload_bytes: usize,
    clock: &mut WallFormatter,
) {
    let v = ev.view();
    clock.push(out, ev.wall_ns);
    out.push(' ');
    out.push_str(&escape_str(&ev.node));
    out.push(' ');
    match v.pid() {
        Some(pid) => {
            let _ = write!(out, "{}({pid}", escape_str(v.comm().unwrap_or("?")));
            if let Some(tid) = v.tid().filter(|t| *t != pid) {
                let _ = write!(out, "/{tid}");
            }
            out.push(')');
        }
        None => out.push('-'),
    }
    out.push(' ');
    out.push_str(ev.event.kind().name());
    out.push(' ');
    details_of(out, &v, payload_bytes);
    while out.ends_with(' ') {
        out.pop();
    }
}

/// The kind-specific part of a text line. `payload_bytes == 0` leaves payloads out.
fn details_of(out: &mut String, v: &EventView<'_>, payload_bytes: usize) {
    let arrow = |d: Direction| if d == Direction::Egress { "->" } else { "<-" };
    let pair = |out: &mut String, sep: &str| match (v.local(), v.remote()) {
        (Some(l), Some(r)) => {
            let _ = write!(out, "{l} {sep} {r}");
        }
        (Some(l), None) => {
            let _ = write!(out, "{l}");
        }
        (None, Some(r)) => {
            let _ = write!(out, "? {sep} {r}");
        }
        (None, None) => out.push_str("? -> ?"),
    };
    let payload = |out: &mut String, p: &[u8]| {
        if payload_bytes > 0 && !p.is_empty() {
            let _ = write!(out, " \"{}\"", escape_payload(p, payload_bytes));
        }
    };
    match &v.event.body {
        EventBody::ProcExec(e) => {
            let _ = write!(
                out,
                "exe={} ppid={} cmdline=\"{}\"",
                escape_str(&e.exe),
                e.ppid,
                escape_str(&e.cmdline.join(" "))
            );
            if !e.cgroup.is_empty() {
                let _ = write!(out, " cgroup={}", escape_str(&e.cgroup));
            }
            if let Some(c) = &e.container_id {
                let _ = write!(out, " container={}", escape_str(c));
            }
        }
        EventBody::ProcFork(e) => {
            let _ = write!(out, "parent={} child={}", e.parent_pid, e.child_pid);
        }
        EventBody::ProcExit(e) => {
            if e.signal != 0 {
                let _ = write!(out, "signal={}", e.signal);
            } else {
                let _ = write!(out, "code={}", e.exit_code);
            }
            if e.oom_killed {
                out.push_str(" oom_killed");
            }
        }
        EventBody::Tcp(e) => {
            let _ = write!(out, "{} ", tcp_step_name(&e.step));
            match e.step {
                TcpStep::ListenOpen | TcpStep::ListenClose => match v.local() {
                    Some(l) => {
                        let _ = write!(out, "{l}");
                    }
                    None => out.push('?'),
                },
                TcpStep::Accepted => pair(out, "<-"),
                _ => pair(out, "->"),
            }
            let _ = write!(out, " fd={}", e.conn.fd);
            match e.step {
                TcpStep::Established { latency_ns } => {
                    let _ = write!(out, " latency={}", format_duration(latency_ns));
                }
                TcpStep::Failed { errno, latency_ns } => {
                    let _ = write!(out, " errno={errno}");
                    if let Some(name) = errno_name(errno) {
                        let _ = write!(out, " ({name})");
                    }
                    let _ = write!(out, " after {}", format_duration(latency_ns));
                }
                TcpStep::Closed {
                    bytes_sent,
                    bytes_received,
                } => {
                    let _ = write!(out, " sent={bytes_sent} received={bytes_received}");
                }
                _ => {}
            }
        }
        EventBody::L7(e) => {
            let _ = write!(out, "{} fd={} ", direction_name(e.direction), e.conn.fd);
            pair(out, arrow(e.direction));
            let _ = write!(out, " size={}", e.size);
            if e.folded_calls > 0 {
                let _ = write!(out, " folded={}/{}B", e.folded_calls, e.folded_bytes);
            }
            payload(out, &e.payload);
        }
        EventBody::TcpSample(e) => {
            let _ = write!(out, "{} ", sample_name(e.what));
            pair(out, "->");
            let _ = write!(out, " state={}", tcp_state_name(e.state));
            if e.srtt_us > 0 {
                let _ = write!(
                    out,
                    " srtt={}",
                    format_duration(u64::from(e.srtt_us) * 1000)
                );
            }
        }
        EventBody::Udp(e) => {
            let _ = write!(out, "{} ", direction_name(e.direction));
            pair(out, arrow(e.direction));
            let _ = write!(out, " size={}", e.size);
            payload(out, &e.payload);
        }
        EventBody::OomKill(e) => {
            let _ = write!(out, "victim={}", e.pid);
        }
        EventBody::AllocSample(e) => {
            let _ = write!(out, "size={} addr={:#x} stack={}", e.size, e.addr, e.stack);
        }
        EventBody::AllocSnapshot(e) => {
            let bytes: u64 = e.by_stack.iter().map(|s| s.bytes).sum();
            let count: u64 = e.by_stack.iter().map(|s| s.count).sum();
            let _ = write!(
                out,
                "rss={} outstanding={bytes}B/{count} stacks={}",
                e.rss_bytes,
                e.by_stack.len()
            );
        }
        EventBody::CpuSample(e) => {
            let _ = write!(out, "cpu={}", e.cpu);
            if let Some(s) = e.user_stack {
                let _ = write!(out, " ustack={s}");
            }
            if let Some(s) = e.kernel_stack {
                let _ = write!(out, " kstack={s}");
            }
        }
        EventBody::StackDef(e) => {
            let _ = write!(out, "id={} frames={}", e.id, e.frames.len());
            if let Some(top) = e.symbols.first() {
                let _ = write!(out, " top={}", escape_str(top));
            }
        }
        EventBody::Log(e) => {
            let _ = write!(out, "fd={}", e.fd);
            if !e.path.is_empty() {
                let _ = write!(out, " path={}", escape_str(&e.path));
            }
            let _ = write!(out, " size={}", e.size);
            payload(out, &e.payload);
        }
        EventBody::Loss(e) => {
            let _ = write!(out, "{} {} event(s) dropped", e.count, e.kind.name());
            if let Some(reason) = v.step() {
                let _ = write!(out, " ({reason})");
            }
            if e.cpu != u32::MAX {
                let _ = write!(out, " on cpu {}", e.cpu);
            }
            let _ = write!(
                out,
                " over {}",
                format_duration(e.to_ns.saturating_sub(e.from_ns))
            );
        }
        EventBody::Mark(e) => {
            let src = match e.source {
                MarkSource::User => "user",
                MarkSource::Signal => "signal",
                MarkSource::Trigger => "trigger",
            };
            let _ = write!(out, "[{src}] \"{}\"", escape_str(&e.note));
        }
        EventBody::Node(e) => {
            let _ = write!(
                out,
                "name={} hostname={} kernel={} cpus={}",
                escape_str(&e.name),
                escape_str(&e.hostname),
                escape_str(&e.kernel),
                e.cpus
            );
        }
        EventBody::ThreadStart(e) => {
            let _ = write!(out, "started_by={} tid={}", e.parent_tid, e.tid);
        }
        EventBody::Binary(e) => {
            let _ = write!(
                out,
                "id={} build_id={} path={} symbols={}",
                e.id,
                escape_str(&e.build_id),
                escape_str(&e.path),
                e.symbols.len()
            );
        }
        EventBody::UserStack(e) => {
            let _ = write!(out, "id={} frames={}", e.id, e.frames.len());
            if e.truncated {
                out.push_str(" truncated");
            }
        }
        EventBody::HeapAlloc(e) => {
            let _ = write!(
                out,
                "size={} addr={:#x} period={} stack={}",
                e.size, e.addr, e.period, e.stack
            );
        }
        EventBody::HeapFree(e) => {
            let _ = write!(out, "addr={:#x}", e.addr);
        }
        EventBody::OffCpu(e) => {
            let _ = write!(
                out,
                "blocked={} syscall={}",
                format_duration(e.blocked_ns),
                e.syscall
            );
            if let Some(s) = e.user_stack {
                let _ = write!(out, " ustack={s}");
            }
            if let Some(s) = e.kernel_stack {
                let _ = write!(out, " kstack={s}");
            }
        }
        EventBody::MemUsage(e) => {
            let _ = write!(
                out,
                "rss_anon={} rss_file={} rss_shmem={}",
                e.rss_anon, e.rss_file, e.rss_shmem
            );
        }
        EventBody::PageFault(e) => {
            let _ = write!(
                out,
                "addr={:#x} weight={} stack={}",
                e.addr, e.weight, e.stack
            );
        }
        EventBody::CgroupMemory(e) => {
            let _ = write!(out, "cgroup={} usage={}", escape_str(&e.cgroup), e.usage);
            match e.limit {
                Some(l) => {
                    let _ = write!(out, " limit={l}");
                }
                None => out.push_str(" limit=max"),
            }
            let _ = write!(out, " oom_kills={}", e.oom_kills);
        }
    }
}

fn tcp_state_name(state: u8) -> String {
    const NAMES: [&str; 13] = [
        "?",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    NAMES
        .get(usize::from(state))
        .filter(|_| state != 0)
        .map_or_else(|| state.to_string(), |s| s.to_string())
}

/// The name of common connect errnos.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        4 => "EINTR",
        11 => "EAGAIN",
        13 => "EACCES",
        22 => "EINVAL",
        24 => "EMFILE",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        115 => "EINPROGRESS",
        _ => return None,
    })
}

/// Escapes captured bytes for display: printable ASCII as is, `\r \n \t \\ \"`, other bytes
/// as `\xNN`; at most `max` input bytes, with `...` when cut.
pub fn escape_payload(p: &[u8], max: usize) -> String {
    let shown = &p[..p.len().min(max)];
    let mut s = String::with_capacity(shown.len() + 8);
    for &b in shown {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    if shown.len() < p.len() {
        s.push_str("...");
    }
    s
}

/// Control characters of captured text escaped as in [`escape_str`], nothing else: the CSV
/// columns of names and paths (quoting is the CSV writer's job), which go to terminals too.
fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Escapes captured text (command lines, notes) the same way: control characters escaped.
fn escape_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use retrace_segment::{
        ConnId, Endpoint, L7Message, LossMarker, LossReason, ProcessInfo, TcpEvent,
    };
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const T0: u64 = 1_795_501_800_000_000_000;

    fn replayed(event: Event) -> ReplayedEvent {
        let endpoints = crate::view::event_endpoints(&event);
        ReplayedEvent {
            event,
            wall_ns: T0 + 123_456_789,
            node: "web-1".into(),
            input: 0,
            process: Some(Arc::new(ProcessInfo {
                pid: 42,
                comm: "nginx".into(),
                exe: "/usr/sbin/nginx".into(),
                cgroup: "/system.slice/nginx.service".into(),
                ..Default::default()
            })),
            endpoints,
        }
    }

    fn l7(payload: &[u8]) -> ReplayedEvent {
        replayed(Event::new(
            5,
            EventBody::L7(L7Message {
                conn: ConnId {
                    pid: 42,
                    fd: 9,
                    start_ns: 1,
                },
                tid: 43,
                direction: Direction::Ingress,
                size: 77,
                payload: payload.to_vec(),
                tcp_seq: None,
                folded_calls: 0,
                folded_bytes: 0,
                local: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 80),
                remote: Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 51000),
            }),
        ))
    }

    #[test]
    fn text_lines() {
        let mut s = String::new();
        text_line(&mut s, &l7(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 16);
        assert_eq!(
            s,
            "2026-11-24T06:30:00.123456789Z web-1 nginx(42/43) l7 ingress fd=9 10.0.0.1:80 <- 10.0.0.2:51000 size=77 \"GET / HTTP/1.1\\r\\n...\""
        );
        let mut s = String::new();
        let ev = replayed(Event::new(
            5,
            EventBody::Tcp(TcpEvent {
                conn: ConnId {
                    pid: 42,
                    fd: 3,
                    start_ns: 1,
                },
                tid: 42,
                local: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 40000),
                remote: Endpoint::new(Ipv4Addr::new(10, 0, 0, 3), 5432),
                step: TcpStep::Failed {
                    errno: 111,
                    latency_ns: 1_500_000,
                },
            }),
        ));
        text_line(&mut s, &ev, 16);
        assert_eq!(
            s,
            "2026-11-24T06:30:00.123456789Z web-1 nginx(42) tcp failed 10.0.0.1:40000 -> 10.0.0.3:5432 fd=3 errno=111 (ECONNREFUSED) after 1.50ms"
        );
        let mut s = String::new();
        let mut ev = replayed(Event::new(
            5,
            EventBody::Loss(LossMarker {
                kind: retrace_segment::EventKind::L7,
                cpu: 1,
                count: 12,
                reason: LossReason::RingFull,
                from_ns: 0,
                to_ns: 2_000_000,
            }),
        ));
        ev.process = None;
        text_line(&mut s, &ev, 16);
        assert_eq!(
            s,
            "2026-11-24T06:30:00.123456789Z web-1 - loss 12 l7 event(s) dropped (ring_full) on cpu 1 over 2.00ms"
        );
    }

    #[test]
    fn captured_text_never_reaches_the_terminal_raw() {
        let mut ev = l7(b"x");
        ev.process = Some(Arc::new(ProcessInfo {
            pid: 42,
            comm: "evil\x1b[2J".into(),
            ..Default::default()
        }));
        let mut s = String::new();
        text_line(&mut s, &ev, 16);
        assert!(!s.contains('\x1b'), "{s}");
        assert!(s.contains("evil\\u{1b}[2J(42/43)"), "{s}");
    }

    #[test]
    fn payload_escaping() {
        assert_eq!(
            escape_payload(b"a\"b\\c\x00\xff\n", 100),
            "a\\\"b\\\\c\\x00\\xff\\n"
        );
        assert_eq!(escape_payload(b"abcdef", 3), "abc...");
        assert_eq!(escape_payload(b"abc", 3), "abc");
        // Terminal escape sequences never reach the terminal raw.
        assert_eq!(escape_payload(b"\x1b[31m", 10), "\\x1b[31m");
    }

    #[test]
    fn jsonl_and_csv() {
        let ev = l7(b"GET /\r\n");
        let mut w = EventWriter::new(Vec::new(), OutputFormat::Jsonl, 64).expect("writer");
        w.write(&ev).expect("write");
        let out = w.finish().expect("finish");
        let line = String::from_utf8(out).expect("utf8");
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
        assert_eq!(v["time"], "2026-11-24T06:30:00.123456789Z");
        assert_eq!(v["wall_ns"], T0 + 123_456_789);
        assert_eq!(v["node"], "web-1");
        assert_eq!(v["comm"], "nginx");
        assert_eq!(v["ts"], 5);
        assert_eq!(v["body"]["kind"], "l7");
        assert_eq!(v["body"]["direction"], "ingress");
        assert_eq!(v["body"]["local"]["addr"], "10.0.0.1");
        assert_eq!(v["payload_text"], "GET /\\r\\n");
        // The event part round-trips through serde.
        let back: Event =
            serde_json::from_value(serde_json::json!({"ts": v["ts"], "body": v["body"]}))
                .expect("event");
        assert_eq!(back, ev.event);

        let mut w = EventWriter::new(Vec::new(), OutputFormat::Csv, 64).expect("writer");
        w.write(&ev).expect("write");
        let out = String::from_utf8(w.finish().expect("finish")).expect("utf8");
        let mut rdr = csv::Reader::from_reader(out.as_bytes());
        let headers: Vec<String> = rdr
            .headers()
            .expect("headers")
            .iter()
            .map(String::from)
            .collect();
        assert_eq!(headers, CSV_COLUMNS);
        let rec = rdr.records().next().expect("one record").expect("valid");
        let col = |name: &str| {
            let i = CSV_COLUMNS.iter().position(|c| *c == name).expect("column");
            rec.get(i).expect("field").to_string()
        };
        assert_eq!(col("kind"), "l7");
        assert_eq!(col("pid"), "42");
        assert_eq!(col("comm"), "nginx");
        assert_eq!(col("lport"), "80");
        assert_eq!(col("raddr"), "10.0.0.2");
        assert_eq!(col("direction"), "ingress");
        assert_eq!(col("payload"), "GET /\\r\\n");
        assert_eq!(col("step"), "");
    }
}
