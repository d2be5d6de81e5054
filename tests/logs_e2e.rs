//! Logs end to end, as root: a real Python service (Debian's /usr/bin/python3 running
//! `tests/logs/service.py`) logging through Python's `logging` on stderr (INFO per request,
//! WARNING for some, ERROR with a traceback for a known set, some tracebacks longer than the
//! capture's 512-byte prefix, and http.server's own access line after each), captured live
//! (`retrace capture --pid`), analyzed, and compared with the service's own stderr file, which
//! is the truth (every record is one write(2): stderr is line-buffered):
//!
//! - one log event per record, in order, with the record's level and first line;
//! - the record's line count, or, for a record longer than the prefix, exactly the bytes the
//!   prefix cut off counted on the event (and fewer lines: they were not captured);
//! - one pattern per kind of record, its count the number of such records;
//! - each ERROR attached to the request it was logged for (`/item/<n>`, answered 500), with
//!   a trace id in logs.csv; a `log_errors` finding for the service;
//! - logs.csv and log_patterns.csv byte-identical from two analyses of the capture;
//! - and, in tcp.csv, the service's connections opened and closed and the bytes each way
//!   equal to what the client (this test) made, sent and read.
//!
//! Not root: prints "skipped" and passes, unless `RETRACE_REQUIRE_BPF=1` (CI): then it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

use retrace_analyze::logs::Level;

/// The capture's payload prefix (the default, given explicitly).
const PREFIX: usize = 512;
/// Requests made: /item/0 .. /item/39.
const REQUESTS: u32 = 40;
/// As in service.py.
const ERRORS: [u32; 5] = [30, 31, 32, 33, 34];

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One record of the service's stderr: what the truth says of one log event.
#[derive(Debug)]
struct Record {
    level: Level,
    first_line: String,
    lines: u32,
    bytes: usize,
}

/// A record's first line: `2026-12-06 12:00:00,123 LEVEL shop: ...` or an access line.
fn record_level(line: &str) -> Option<Level> {
    if line.starts_with("127.0.0.1 - - [") {
        return Some(Level::Unknown);
    }
    let b = line.as_bytes();
    let stamp = b.len() > 24
        && b[4] == b'-'
        && b[10] == b' '
        && b[19] == b','
        && b[..4].iter().all(u8::is_ascii_digit);
    if !stamp {
        return None;
    }
    let rest = &line[24..];
    let level = rest.split(' ').next()?;
    let l = match level {
        "INFO" => Level::Info,
        "WARNING" => Level::Warning,
        "ERROR" => Level::Error,
        _ => return None,
    };
    rest.contains(" shop: ").then_some(l)
}

fn parse_truth(text: &str) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        match record_level(bare) {
            Some(level) => out.push(Record {
                level,
                first_line: bare.to_string(),
                lines: 1,
                bytes: line.len(),
            }),
            None => {
                let r = out
                    .last_mut()
                    .unwrap_or_else(|| panic!("stderr starts with a stray line: {line:?}"));
                r.lines += 1;
                r.bytes += line.len();
            }
        }
    }
    out
}

fn start_capture(out: &Path, pid: u32) -> (ChildGuard, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .arg("capture")
        .arg("--out")
        .arg(out)
        .args(["--streams", "proc,tcp,l7,logs", "--duration", "120s"])
        .args(["--payload-bytes", &PREFIX.to_string()])
        .args(["--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start retrace capture");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[capture] {line}");
            let _ = tx.send(line);
        }
    });
    (ChildGuard::of(child), rx)
}

/// One request on a fresh connection: the response, and the request's length.
fn get(port: u16, n: u32) -> (String, usize) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    let req = format!("GET /item/{n} HTTP/1.1\r\nHost: shop\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    (resp, req.len())
}

#[test]
fn logs_match_the_services_own_log() {
    if !may_run("logs_match_the_services_own_log") {
        return;
    }
    let dir = RunDir(std::env::temp_dir().join(format!("retrace-logs-e2e-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("run dir");
    let port = free_port();
    let stderr_path = dir.0.join("service.stderr");
    let service = Command::new("/usr/bin/python3")
        .arg(root().join("tests/logs/service.py"))
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start the service");
    let pid = service.id();
    let service = ChildGuard::of(service);
    wait_for("the service listens", Duration::from_secs(20), || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    });
    // the probe above made no request: truncate nothing, the log is still empty
    let cap = dir.0.join("cap");
    let (mut capture, said) = start_capture(&cap, pid);
    wait_for("the capture is ready", Duration::from_secs(60), || {
        cap.join("manifest.json").exists() && said.try_recv().is_ok()
    });
    std::thread::sleep(Duration::from_millis(700));
    let (mut sent, mut received) = (0u64, 0u64);
    for n in 0..REQUESTS {
        let (resp, req_len) = get(port, n);
        sent += req_len as u64;
        received += resp.len() as u64;
        let want = if ERRORS.contains(&n) {
            " 500 "
        } else {
            " 200 "
        };
        assert!(resp.contains(want), "/item/{n}: {resp}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    capture.signal(libc::SIGTERM);
    let st = capture.take().wait().expect("wait for the capture");
    assert!(st.success(), "capture: {st}");
    drop(service);

    let truth = parse_truth(&std::fs::read_to_string(&stderr_path).expect("stderr"));
    let count = |l: Level| truth.iter().filter(|r| r.level == l).count();
    assert_eq!(count(Level::Error), ERRORS.len());
    assert_eq!(count(Level::Warning), 4);
    assert_eq!(count(Level::Info), REQUESTS as usize - ERRORS.len());
    assert_eq!(count(Level::Unknown), REQUESTS as usize);
    assert!(
        truth.iter().any(|r| r.bytes > PREFIX),
        "some records are longer than the prefix"
    );

    let analyze = || {
        retrace_analyze::analyze(std::slice::from_ref(&cap), &Default::default()).expect("analysis")
    };
    let a = analyze();
    let l = &a.logs;
    let events: Vec<&retrace_analyze::logs::LogEvent> =
        l.events.iter().filter(|e| e.pid == pid).collect();
    assert_eq!(events.len(), truth.len(), "one event per record");
    let mut cut_records = 0;
    for (e, r) in events.iter().zip(&truth) {
        assert_eq!(e.level, r.level, "{r:?} vs {e:?}");
        assert_eq!(e.message, r.first_line);
        if r.bytes <= PREFIX {
            assert_eq!((e.lines, e.cut_off_bytes), (r.lines, 0), "{r:?} vs {e:?}");
        } else {
            cut_records += 1;
            assert_eq!(e.cut_off_bytes, (r.bytes - PREFIX) as u64, "{r:?} vs {e:?}");
            assert!(e.lines < r.lines, "{r:?} vs {e:?}");
        }
    }
    assert!(cut_records >= 2, "the deep tracebacks were cut");
    // one pattern per kind of record
    let service_name = l.service_of(events[0]).to_string();
    let mut pats: Vec<(Level, u64)> = l
        .patterns
        .iter()
        .filter(|p| p.service == service_name)
        .map(|p| (p.level, p.count))
        .collect();
    pats.sort();
    let mut want: Vec<(Level, u64)> = [Level::Unknown, Level::Info, Level::Warning, Level::Error]
        .into_iter()
        .map(|lv| (lv, count(lv) as u64))
        .collect();
    want.sort();
    assert_eq!(
        pats,
        want,
        "patterns of {service_name}: {:#?}",
        l.patterns
            .iter()
            .map(|p| (&p.template, p.count))
            .collect::<Vec<_>>()
    );
    // each error attached to the failed request it was logged for
    for e in events.iter().filter(|e| e.level == Level::Error) {
        let n: u32 = e
            .message
            .rsplit(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .expect("item number");
        let row = e.request.unwrap_or_else(|| panic!("not attached: {e:?}"));
        let r = a.requests.get(row as usize).expect("row");
        assert_eq!((r.target, r.status), (format!("/item/{n}").as_str(), "500"));
    }
    let finding = a
        .findings
        .iter()
        .find(|f| f.kind == "log_errors" && f.service == service_name);
    assert!(finding.is_some(), "{:#?}", a.findings);

    // tcp.csv's churn and bytes of the service's connections (their clients, this test, not
    // captured: counted from the server's side) against what the client sent and read
    let tcp: Vec<_> = a.tcp.iter().filter(|p| p.server == service_name).collect();
    let sum = |f: fn(&retrace_analyze::TcpPoint) -> u64| tcp.iter().map(|p| f(p)).sum::<u64>();
    assert_eq!(
        (sum(|p| p.opened), sum(|p| p.closed)),
        (u64::from(REQUESTS), u64::from(REQUESTS)),
        "{tcp:#?}"
    );
    assert_eq!(
        (sum(|p| p.bytes_sent), sum(|p| p.bytes_received)),
        (sent, received),
        "{tcp:#?}"
    );
    assert!(tcp.iter().any(|p| p.lifetime_p99_ms.is_some()));

    // the files: the same capture gives the same bytes; the errors carry a trace id
    let out1 = dir.0.join("r1");
    let out2 = dir.0.join("r2");
    retrace_analyze::write_report(&a, &out1).expect("report");
    retrace_analyze::write_report(&analyze(), &out2).expect("report");
    for f in ["logs.csv", "log_patterns.csv"] {
        let read = |d: &PathBuf| std::fs::read(d.join(f)).expect(f);
        assert_eq!(read(&out1), read(&out2), "{f} differs between two analyses");
    }
    let csv = std::fs::read_to_string(out1.join("logs.csv")).expect("logs.csv");
    let errors_with_trace = csv
        .lines()
        .filter(|line| line.contains(",error,") && line.contains("failed to load item"))
        .filter(|line| {
            line.rsplit(',')
                .next()
                .is_some_and(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .count();
    assert_eq!(errors_with_trace, ERRORS.len(), "{csv}");
    eprintln!(
        "logs_e2e: {} records ({} lines) in the service's log; {} events, {} patterns of \
         {service_name}; {cut_records} records cut by the {PREFIX}-byte prefix",
        truth.len(),
        truth.iter().map(|r| r.lines).sum::<u32>(),
        events.len(),
        pats.len()
    );
}
