//! End-to-end tests of `retrace replay`: captures written with `retrace-segment`'s writers,
//! replayed through the binary.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use retrace_segment::{
    clock_now, CaptureOptions, CaptureWriter, ClockSync, ConnId, Direction, Endpoint, Event,
    EventBody, EventKind, L7Message, LossMarker, LossReason, Mark, MarkSource, NodeInfo, ProcExec,
    ProcessInfo, SegmentHeader, SegmentReader, SegmentWriter, StateSnapshot, TcpEvent, TcpStep,
};
use serde_json::Value;

/// 2026-11-24T06:30:00Z in ns.
const T0: u64 = 1_795_501_800_000_000_000;
const SEC: u64 = 1_000_000_000;

fn retrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(args)
        .output()
        .expect("run retrace")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

fn ok(args: &[&str]) -> String {
    let o = retrace(args);
    assert!(
        o.status.success(),
        "retrace {args:?} failed: {}",
        stderr(&o)
    );
    stdout(&o)
}

fn jsonl(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["replay", "-o", "jsonl"];
    all.extend_from_slice(args);
    ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn mark(ts: u64, note: &str) -> Event {
    Event::new(
        ts,
        EventBody::Mark(Mark {
            source: MarkSource::User,
            note: note.into(),
        }),
    )
}

fn l7(ts: u64, pid: u32, lport: u16, rport: u16, payload: &str) -> Event {
    Event::new(
        ts,
        EventBody::L7(L7Message {
            conn: ConnId {
                pid,
                fd: 5,
                start_ns: 1,
            },
            tid: pid,
            direction: Direction::Egress,
            size: payload.len() as u64 + 100,
            payload: payload.as_bytes().to_vec(),
            tcp_seq: None,
            folded_calls: 0,
            folded_bytes: 0,
            local: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), lport),
            remote: Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), rport),
        }),
    )
}

fn process(pid: u32, comm: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 1,
        comm: comm.into(),
        exe: format!("/usr/bin/{comm}"),
        cmdline: vec![comm.into()],
        cgroup: format!("/system.slice/{comm}.service"),
        container_id: None,
    }
}

fn node(name: &str, clock: ClockSync) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        hostname: name.into(),
        kernel: "6.18.0".into(),
        boot_time_ns: clock.wall_ns.saturating_sub(clock.mono_ns),
        clock,
        cpus: 2,
    }
}

/// Writes one segment file with the given clock, one block per inner vec.
fn write_segment(
    path: &Path,
    name: &str,
    clock: ClockSync,
    state: StateSnapshot,
    blocks: &[Vec<Event>],
    seal: bool,
) {
    let header = SegmentHeader {
        capture_id: format!("test-{name}"),
        seq: 1,
        node: node(name, clock),
        clock,
        streams: vec!["all".into()],
        state,
        ..Default::default()
    };
    let mut w = SegmentWriter::create(path, &header).expect("create segment");
    for block in blocks {
        for ev in block {
            w.append(ev).expect("append");
        }
        w.flush().expect("flush");
    }
    if seal {
        w.seal().expect("seal");
    }
}

/// Node a's monotonic clock reads 1 s at T0; node b's reads 500 s at T0.
fn two_nodes(dir: &Path) -> (PathBuf, PathBuf) {
    let ca = ClockSync {
        mono_ns: SEC,
        wall_ns: T0,
    };
    let cb = ClockSync {
        mono_ns: 500 * SEC,
        wall_ns: T0,
    };
    let a = dir.join("a.rseg");
    let b = dir.join("b.rseg");
    let state_a = StateSnapshot {
        processes: vec![process(42, "nginx")],
        ..Default::default()
    };
    let state_b = StateSnapshot {
        processes: vec![process(77, "postgres")],
        ..Default::default()
    };
    write_segment(
        &a,
        "web-1",
        ca,
        state_a,
        &[
            vec![
                mark(SEC, "a@0s"),
                l7(SEC + 2 * SEC, 42, 8080, 51000, "GET /users/7 HTTP/1.1\r\n"),
            ],
            // Out of order across blocks: 3.5 s is written after 4 s (another CPU).
            vec![
                mark(SEC + 4 * SEC, "a@4s"),
                mark(SEC + 3 * SEC + SEC / 2, "a@3.5s"),
            ],
            vec![mark(SEC + 6 * SEC, "a@6s")],
        ],
        true,
    );
    write_segment(
        &b,
        "db-1",
        cb,
        state_b,
        &[
            vec![
                mark(500 * SEC + SEC, "b@1s"),
                l7(500 * SEC + 3 * SEC, 77, 5432, 40000, "SELECT 1"),
            ],
            vec![mark(500 * SEC + 5 * SEC, "b@5s")],
        ],
        true,
    );
    (a, b)
}

fn label(v: &Value) -> String {
    match v["body"]["kind"].as_str() {
        Some("mark") => v["body"]["note"].as_str().unwrap_or("?").to_string(),
        Some(k) => format!("{k}:{}", v["node"].as_str().unwrap_or("?")),
        None => "?".into(),
    }
}

#[test]
fn two_nodes_are_merged_by_wall_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_nodes(dir.path());
    let evs = jsonl(&[p(&a), p(&b)]);
    let labels: Vec<String> = evs.iter().map(label).collect();
    assert_eq!(
        labels,
        ["a@0s", "b@1s", "l7:web-1", "l7:db-1", "a@3.5s", "a@4s", "b@5s", "a@6s"]
    );
    let walls: Vec<u64> = evs
        .iter()
        .map(|v| v["wall_ns"].as_u64().expect("wall_ns"))
        .collect();
    assert_eq!(walls[0], T0);
    assert_eq!(walls[1], T0 + SEC);
    assert!(walls.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(evs[3]["time"], "2026-11-24T06:30:03.000000000Z");
    // The process table gives comm/exe/cgroup from each segment's snapshot.
    assert_eq!(evs[2]["comm"], "nginx");
    assert_eq!(evs[3]["comm"], "postgres");
    assert_eq!(evs[3]["cgroup"], "/system.slice/postgres.service");
    // The event itself round-trips.
    assert_eq!(evs[3]["ts"], 503 * SEC);
    assert_eq!(evs[3]["payload_text"], "SELECT 1");
}

#[test]
fn text_output_is_one_readable_line_per_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_nodes(dir.path());
    let out = ok(&["replay", p(&a), p(&b), "--payload-bytes", "12"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(
        lines[2],
        "2026-11-24T06:30:02.000000000Z web-1 nginx(42) l7 egress fd=5 10.0.0.1:8080 -> 10.0.0.2:51000 size=123 \"GET /users/7...\""
    );
    assert_eq!(
        lines[0],
        "2026-11-24T06:30:00.000000000Z web-1 - mark [user] \"a@0s\""
    );
}

#[test]
fn filters_positional_and_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_nodes(dir.path());
    let (a, b) = (p(&a), p(&b));
    // tcpdump style, after the paths.
    let evs = jsonl(&[a, b, "kind", "=", "l7", "and", "port", "5432"]);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["node"], "db-1");
    // Every event of a pid is matched by its comm, from the process table.
    let evs = jsonl(&[a, b, "-f", "comm = nginx"]);
    assert_eq!(evs.iter().map(label).collect::<Vec<_>>(), ["l7:web-1"]);
    let evs = jsonl(&[a, b, "-f", "node = db-1 or payload contains \"/users/\""]);
    assert_eq!(evs.len(), 4);
    let evs = jsonl(&[a, b, "-f", "kind = mark", "not", "node", "web-1"]);
    assert_eq!(evs.iter().map(label).collect::<Vec<_>>(), ["b@1s", "b@5s"]);
    let evs = jsonl(&[
        a,
        b,
        "--",
        "addr",
        "10.0.0.0/30",
        "and",
        "exe",
        "startswith",
        "/usr/bin/p",
    ]);
    assert_eq!(evs.len(), 1);
    let evs = jsonl(&[a, b, "-f", "pid in (42, 77) and direction = egress"]);
    assert_eq!(evs.len(), 2);
}

#[test]
fn a_malformed_filter_is_a_one_line_error_with_a_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = two_nodes(dir.path());
    let o = retrace(&["replay", p(&a), "-f", "kind = l7 and prot = 80"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("at column 15: unknown field 'prot'"), "{err}");
    let o = retrace(&["replay", p(&a), "pid", "=", "abc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("at column 7: 'pid' expects a number"),
        "{}",
        stderr(&o)
    );
    let o = retrace(&["replay", p(&a), "--from", "yesterday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--from: invalid time 'yesterday'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn time_window_relative_absolute_and_time_of_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_nodes(dir.path());
    let (a, b) = (p(&a), p(&b));
    let names = |args: &[&str]| jsonl(args).iter().map(label).collect::<Vec<_>>();
    assert_eq!(
        names(&[a, b, "--from", "+3s", "--to", "+5s"]),
        ["l7:db-1", "a@3.5s", "a@4s", "b@5s"]
    );
    assert_eq!(
        names(&[
            a,
            b,
            "--from",
            "2026-11-24T06:30:04Z",
            "--to",
            "2026-11-24T08:30:05+02:00"
        ]),
        ["a@4s", "b@5s"]
    );
    assert_eq!(names(&[a, b, "--from", "06:30:05.5"]), ["a@6s"]);
    assert_eq!(names(&[a, b, "--to", "1s"]), ["a@0s", "b@1s"]);
    let o = retrace(&["replay", a, "--from", "+5s", "--to", "+1s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("empty time window"), "{}", stderr(&o));
}

#[test]
fn csv_has_a_header_and_fixed_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_nodes(dir.path());
    let out = ok(&["replay", p(&a), p(&b), "-o", "csv", "kind", "=", "l7"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("time,wall_ns,mono_ns,node,kind,step,pid,tid,comm,exe,cgroup,fd,direction,laddr,lport,raddr,rport,size,details,payload")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].starts_with("2026-11-24T06:30:02.000000000Z,1795501802000000000,3000000000,web-1,l7,,42,42,nginx,/usr/bin/nginx,/system.slice/nginx.service,5,egress,10.0.0.1,8080,10.0.0.2,51000,123,"), "{}", rows[0]);
    // The payload has \r\n: escaped, so one row stays one line.
    assert!(
        rows[0].ends_with(",GET /users/7 HTTP/1.1\\r\\n"),
        "{}",
        rows[0]
    );
}

/// A capture directory written by the capture writer, with a process exec, a connection,
/// L7 messages, loss markers and recorded losses.
fn capture_dir(dir: &Path) -> (PathBuf, u64) {
    let cap = dir.join("cap");
    let now = clock_now();
    let opts = CaptureOptions {
        dir: cap.clone(),
        node: node("node-x", now),
        streams: vec!["proc".into(), "tcp".into(), "l7".into()],
        ..Default::default()
    };
    let mut w = CaptureWriter::create(opts, StateSnapshot::default()).expect("create capture");
    let t = now.mono_ns;
    w.append(Event::new(
        t + 1_000,
        EventBody::ProcExec(ProcExec {
            pid: 300,
            ppid: 1,
            comm: "curl".into(),
            exe: "/usr/bin/curl".into(),
            cmdline: vec!["curl".into(), "http://10.0.0.2/".into()],
            cgroup: "/user.slice".into(),
            container_id: None,
        }),
    ))
    .expect("append");
    w.append(Event::new(
        t + 2_000,
        EventBody::Tcp(TcpEvent {
            conn: ConnId {
                pid: 300,
                fd: 5,
                start_ns: 1,
            },
            tid: 300,
            local: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 40000),
            remote: Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 80),
            step: TcpStep::Established {
                latency_ns: 150_000,
            },
        }),
    ))
    .expect("append");
    let body = "GET / HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: curl/8\r\n\r\n";
    for i in 0..2000u64 {
        w.append(l7(t + 10_000 + i * 1_000, 300, 40000, 80, body))
            .expect("append");
    }
    w.append(Event::new(
        t + 5_000_000,
        EventBody::Loss(LossMarker {
            kind: EventKind::L7,
            cpu: 1,
            count: 17,
            reason: LossReason::RingFull,
            from_ns: t,
            to_ns: t + 5_000_000,
        }),
    ))
    .expect("append");
    w.record_loss(EventKind::L7, 17);
    w.close().expect("close");
    (cap, 2003)
}

#[test]
fn stats_of_a_capture_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cap, events) = capture_dir(dir.path());
    let out = ok(&["replay", p(&cap), "--stats", "-o", "jsonl"]);
    let s: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(s["events_matched"], events);
    assert_eq!(s["events_by_kind"]["l7"], 2000);
    assert_eq!(s["events_by_kind"]["exec"], 1);
    assert_eq!(s["events_by_kind"]["tcp"], 1);
    assert_eq!(s["events_by_kind"]["loss"], 1);
    assert_eq!(s["drops_recorded"], 17);
    assert_eq!(s["manifest_dropped"], 17);
    assert_eq!(s["inputs"][0]["manifest_dropped_by_kind"]["l7"], 17);
    assert_eq!(s["damaged_blocks"], 0);
    assert_eq!(s["segments_opened"], 1);
    assert_eq!(s["segments_sealed"], 1);
    assert_eq!(s["missing_segments"], serde_json::json!([]));
    assert!(s["bytes_on_disk"].as_u64().expect("bytes") > 0);
    let ratio = s["compression_ratio"].as_f64().expect("ratio");
    assert!(
        ratio > 5.0,
        "2000 repeated HTTP requests compress well: {ratio}"
    );
    // The text form names the same figures.
    let text = ok(&["replay", p(&cap), "--stats"]);
    assert!(text.contains(&format!("events       {events}")), "{text}");
    assert!(text.contains("l7             2000"), "{text}");
    assert!(
        text.contains("drops        17 recorded by loss markers (l7 17); 17 in manifest totals"),
        "{text}"
    );
    assert!(text.contains("sealed       yes"), "{text}");
    assert!(text.contains("damage       0 damaged block(s)"), "{text}");
    // The exec event names the process for every later event of pid 300.
    let evs = jsonl(&[p(&cap), "-f", "comm = curl and kind = l7", "-n", "3"]);
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[0]["exe"], "/usr/bin/curl");
    // A missing segment listed in the manifest is reported.
    let seg = fs::read_dir(&cap)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "rseg"))
        .expect("a segment");
    fs::rename(&seg, dir.path().join("moved.rseg")).expect("move the segment away");
    let out = ok(&["replay", p(&cap), "--stats", "-o", "jsonl"]);
    let s: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(s["missing_segments"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["events_matched"], 0);
}

#[test]
fn a_torn_tail_is_read_up_to_the_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("torn.rseg");
    let clock = ClockSync {
        mono_ns: 0,
        wall_ns: T0,
    };
    let blocks: Vec<Vec<Event>> = (0..3u64)
        .map(|b| {
            (0..50u64)
                .map(|i| mark(b * 100 + i, &format!("b{b}e{i}")))
                .collect()
        })
        .collect();
    write_segment(&path, "n", clock, StateSnapshot::default(), &blocks, false);
    let len = fs::metadata(&path).expect("meta").len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len - 20).expect("truncate inside the last block");
    drop(f);
    let o = retrace(&["replay", p(&path), "-o", "jsonl"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 100, "the two whole blocks");
    let err = stderr(&o);
    assert!(err.contains("warning: damage:"), "{err}");
    assert!(err.contains("truncated block"), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("retrace: warning:")),
        "{err}"
    );
    let out = ok(&["replay", p(&path), "--stats", "-o", "jsonl"]);
    let s: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(s["damaged_blocks"], 1);
    assert!(s["bytes_lost"].as_u64().expect("lost") > 0);
    assert_eq!(s["segments_sealed"], 0);
    assert_eq!(s["events_matched"], 100);
}

#[test]
fn a_corrupt_block_is_skipped_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.rseg");
    let clock = ClockSync {
        mono_ns: 0,
        wall_ns: T0,
    };
    let blocks: Vec<Vec<Event>> = (0..3u64)
        .map(|b| {
            (0..50u64)
                .map(|i| mark(b * 100 + i, &format!("b{b}e{i}")))
                .collect()
        })
        .collect();
    write_segment(&path, "n", clock, StateSnapshot::default(), &blocks, true);
    let r = SegmentReader::open(&path).expect("open");
    let middle = r.blocks()[1];
    drop(r);
    let mut bytes = fs::read(&path).expect("read");
    let at = usize::try_from(middle.offset).expect("offset") + 40 + 5;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).expect("write");
    let o = retrace(&["replay", p(&path), "-o", "jsonl"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let notes: Vec<String> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["body"]["note"].to_string())
        .collect();
    assert_eq!(notes.len(), 100);
    assert!(
        notes.iter().all(|n| !n.contains("b1e")),
        "the bad block's events are not invented"
    );
    assert!(
        stderr(&o).contains(&format!("at offset {}", middle.offset)),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |args: &[&str], needle: &str| {
        let o = retrace(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(o.stdout.is_empty());
    };
    let missing = dir.path().join("nope");
    check(&["replay", p(&missing)], "No such file or directory");
    let junk = dir.path().join("junk.rseg");
    fs::write(
        &junk,
        b"GIF89a this is not a capture at all, just some bytes",
    )
    .expect("write");
    check(&["replay", p(&junk)], "not a retrace segment");
    let empty = dir.path().join("empty.rseg");
    fs::write(&empty, b"").expect("write");
    check(&["replay", p(&empty)], "not a retrace segment");

    // Versions: bytes 8..10 hold the format version, 10..12 the oldest reader version.
    let seg = dir.path().join("v.rseg");
    write_segment(
        &seg,
        "n",
        ClockSync::default(),
        StateSnapshot::default(),
        &[vec![mark(1, "x")]],
        true,
    );
    let good = fs::read(&seg).expect("read");
    let mut newer = good.clone();
    newer[8..10].copy_from_slice(&9u16.to_le_bytes());
    newer[10..12].copy_from_slice(&9u16.to_le_bytes());
    let newer_path = dir.path().join("newer.rseg");
    fs::write(&newer_path, &newer).expect("write");
    check(
        &["replay", p(&newer_path)],
        &format!(
            "unsupported segment format version 9 (this build reads versions 1 to {})",
            retrace_segment::FORMAT_VERSION
        ),
    );
    let mut older = good;
    older[8..10].copy_from_slice(&0u16.to_le_bytes());
    let older_path = dir.path().join("older.rseg");
    fs::write(&older_path, &older).expect("write");
    check(
        &["replay", p(&older_path)],
        "unsupported segment format version 0",
    );

    // A directory whose only segment is too new: nothing can be read.
    let capdir = dir.path().join("capdir");
    fs::create_dir(&capdir).expect("mkdir");
    fs::write(capdir.join("20261124T063000Z-1.rseg"), &newer).expect("write");
    let o = retrace(&["replay", p(&capdir)]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.contains("nothing could be read") && l.contains("version 9")),
        "{err}"
    );
    // A directory that is not a capture.
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).expect("mkdir");
    check(&["replay", p(&plain)], "not a retrace capture");
}

#[test]
fn limit_and_a_closed_pipe_end_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cap, _) = capture_dir(dir.path());
    let out = ok(&["replay", p(&cap), "-n", "5"]);
    assert_eq!(out.lines().count(), 5);
    // `retrace replay cap | head -1`: the closed pipe is not an error.
    let mut child = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["replay", p(&cap)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut out, &mut first).expect("some output");
    drop(out);
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_rotated_capture_with_a_bad_segment_and_an_unsealed_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = dir.path().join("cap");
    let now = clock_now();
    let opts = CaptureOptions {
        dir: cap.clone(),
        node: node("rot", now),
        block_max_bytes: 2 << 10,
        segment_max_bytes: 8 << 10,
        ..Default::default()
    };
    let state = StateSnapshot {
        processes: vec![process(9, "worker")],
        ..Default::default()
    };
    let mut w = CaptureWriter::create(opts, state).expect("create");
    let total = 6000u64;
    for i in 0..total {
        w.append(l7(
            now.mono_ns + i * 1_000,
            9,
            9000,
            40000 + (i % 1000) as u16,
            &format!("req {i} {}", i * 7919 % 10007),
        ))
        .expect("append");
    }
    w.flush().expect("flush");
    // Never closed (as after a crash): the last segment stays unsealed.
    std::mem::forget(w);
    let mut segs: Vec<PathBuf> = fs::read_dir(&cap)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rseg"))
        .collect();
    segs.sort();
    assert!(
        segs.len() >= 3,
        "rotation made several segments: {}",
        segs.len()
    );
    // Every event of pid 9 gets its comm from the snapshots, across segments.
    let out = ok(&["replay", p(&cap), "--stats", "-o", "jsonl"]);
    let s: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(s["events_matched"], total);
    assert_eq!(s["out_of_order"], 0);
    assert_eq!(s["segments_opened"], segs.len());
    assert_eq!(s["segments_sealed"].as_u64(), Some(segs.len() as u64 - 1));
    let n = ok(&["replay", p(&cap), "comm", "=", "worker"])
        .lines()
        .count() as u64;
    assert_eq!(n, total);
    // Replace a middle segment by junk: its events are lost, the others are read.
    let lost = SegmentReader::open(&segs[1]).expect("open").events();
    fs::write(&segs[1], b"junk junk junk").expect("write");
    let o = retrace(&["replay", p(&cap), "-o", "jsonl"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count() as u64, total - lost);
    let err = stderr(&o);
    assert!(err.contains("not a retrace segment"), "{err}");
    assert!(
        err.contains(&segs[1].display().to_string()),
        "names the segment: {err}"
    );
    let text = ok(&["replay", p(&cap), "--stats"]);
    assert!(text.contains("damage       1 damaged block(s)"), "{text}");
    assert!(
        text.contains(&format!(
            "sealed       no ({} of {} segments)",
            segs.len() - 2,
            segs.len() - 1
        )),
        "{text}"
    );
}
