//! Capture directories: layout, manifest, rotation, ring mode, pins, quota, crash recovery.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use retrace_segment::*;
use util::*;

fn opts(dir: &Path) -> CaptureOptions {
    CaptureOptions {
        dir: dir.to_path_buf(),
        node: header(1).node,
        streams: vec!["tcp".into(), "l7".into()],
        options: [("payload_bytes".to_string(), "256".to_string())]
            .into_iter()
            .collect(),
        ..CaptureOptions::default()
    }
}

/// Bytes of every file in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

/// Every event of a capture, in segment then block order.
fn read_capture(dir: &Path) -> Vec<Event> {
    let c = Capture::open(dir).expect("capture opens");
    let mut out = Vec::new();
    for i in 0..c.segment_paths().len() {
        out.extend(read_all(&c.open_segment(i).expect("segment opens")));
    }
    out
}

#[test]
fn layout_permissions_and_manifest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cap");
    let mut w = CaptureWriter::create(opts(&dir), StateSnapshot::default()).expect("create");
    let evs = sample_events(1_000, 100);
    for e in &evs {
        w.append(e.clone()).expect("append");
    }
    w.record_loss(EventKind::L7, 7);
    let stats = w.close().expect("close");
    assert_eq!(stats.events, 100);
    assert_eq!(stats.segments, 1);
    assert_eq!(stats.events_by_kind["tcp"], 50);

    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let c = Capture::open(&dir).expect("opens");
    assert_eq!(c.segment_paths().len(), 1);
    let seg = &c.segment_paths()[0];
    assert_eq!(mode(seg), 0o600);
    assert_eq!(mode(&dir.join(MANIFEST_FILE)), 0o600);
    let name = seg
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let b = name.as_bytes();
    assert_eq!(name.len(), "20261124T062115Z-000001.rseg".len(), "{name}");
    assert!(
        b[..8].iter().all(u8::is_ascii_digit) && b[8] == b'T' && b[15] == b'Z',
        "{name}"
    );
    assert!(name.ends_with("-000001.rseg"), "{name}");

    let m = c.manifest().expect("manifest");
    assert_eq!(m.format_version, FORMAT_VERSION);
    assert_eq!(m.node.name, "node-a");
    assert_eq!(m.options["payload_bytes"], "256");
    assert_eq!(m.segments.len(), 1);
    assert!(m.segments[0].sealed);
    assert_eq!(m.segments[0].events, 100);
    assert_eq!(
        (m.segments[0].first_ts, m.segments[0].last_ts),
        (1_000, 1_000 + 99 * 1000)
    );
    assert_eq!(m.totals.events, 100);
    assert_eq!(m.totals.dropped, 7);
    assert_eq!(m.totals.dropped_by_kind["l7"], 7);
    assert_eq!(m.totals.bytes_on_disk, dir_bytes(&dir));
    assert!(m.ended_wall_ns.is_some());
    assert!(c.missing_segments().is_empty());
    let r = c.open_segment(0).expect("segment");
    assert!(r.is_sealed());
    assert_eq!(r.header().capture_id, m.capture_id);
    assert_eq!(read_all(&r), evs);
}

#[test]
fn directory_holding_a_capture_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = CaptureWriter::create(opts(tmp.path()), StateSnapshot::default()).expect("create");
    w.close().expect("close");
    assert!(matches!(
        CaptureWriter::create(opts(tmp.path()), StateSnapshot::default()),
        Err(SegmentError::CaptureExists { .. })
    ));
}

#[test]
fn rotation_by_size_keeps_every_event_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = CaptureOptions {
        block_max_bytes: 2_000,
        segment_max_bytes: 5_000,
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    let evs = sample_events(0, 3_000);
    for e in &evs {
        w.append(e.clone()).expect("append");
    }
    let stats = w.close().expect("close");
    assert!(stats.segments >= 3, "{stats:?}");
    let c = Capture::open(tmp.path()).expect("opens");
    assert_eq!(c.segment_paths().len() as u64, stats.segments);
    let m = c.manifest().expect("manifest");
    assert!(m.segments.iter().all(|s| s.sealed));
    for (i, s) in m.segments.iter().enumerate() {
        assert_eq!(s.seq, i as u64 + 1);
        let r = c.open_segment(i).expect("segment");
        assert_eq!(r.header().seq, s.seq);
        assert_eq!(r.file_len(), s.bytes);
    }
    assert_eq!(read_capture(tmp.path()), evs);
}

#[test]
fn rotation_by_age() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = CaptureOptions {
        segment_max_age: Duration::from_millis(30),
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    let evs = sample_events(0, 20);
    for e in &evs[..10] {
        w.append(e.clone()).expect("append");
    }
    w.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(40));
    w.tick().expect("tick");
    for e in &evs[10..] {
        w.append(e.clone()).expect("append");
    }
    let stats = w.close().expect("close");
    assert_eq!(stats.segments, 2);
    assert_eq!(read_capture(tmp.path()), evs);
}

#[test]
fn block_written_at_most_block_max_age_after_its_first_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = CaptureOptions {
        block_max_age: Duration::from_millis(500),
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    let evs = sample_events(0, 3);
    w.append(evs[0].clone()).expect("append");
    w.tick().expect("tick");
    assert!(Capture::open(tmp.path())
        .expect("opens")
        .segment_paths()
        .is_empty());
    std::thread::sleep(Duration::from_millis(520));
    w.tick().expect("tick");
    // Readable while the writer is still open (unsealed segment).
    let c = Capture::open(tmp.path()).expect("opens");
    let r = c.open_segment(0).expect("segment");
    assert!(!r.is_sealed());
    assert_eq!(read_all(&r), evs[..1]);
    drop(w);
}

#[test]
fn killed_writer_leaves_flushed_blocks_readable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = CaptureWriter::create(opts(tmp.path()), StateSnapshot::default()).expect("create");
    let evs = sample_events(0, 50);
    for e in &evs[..30] {
        w.append(e.clone()).expect("append");
    }
    w.flush().expect("flush");
    for e in &evs[30..] {
        w.append(e.clone()).expect("append");
    }
    std::mem::forget(w); // no close, no drop: like SIGKILL
    let c = Capture::open(tmp.path()).expect("opens");
    let r = c.open_segment(0).expect("segment");
    assert!(!r.is_sealed());
    assert!(r.damage().is_empty());
    assert_eq!(read_all(&r), evs[..30]);
    let m = c
        .manifest()
        .expect("manifest written when the segment started");
    assert_eq!(m.segments.len(), 1);
    assert!(!m.segments[0].sealed);
}

fn exec(pid: u32, comm: &str) -> EventBody {
    EventBody::ProcExec(ProcExec {
        pid,
        ppid: 1,
        comm: comm.into(),
        exe: format!("/usr/bin/{comm}"),
        cmdline: vec![comm.into()],
        cgroup: "/system.slice".into(),
        container_id: None,
    })
}

#[test]
fn each_segment_header_holds_the_state_at_its_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = CaptureOptions {
        segment_max_bytes: 1,
        ..opts(tmp.path())
    };
    let initial = StateSnapshot {
        processes: vec![ProcessInfo {
            pid: 1,
            comm: "init".into(),
            ..ProcessInfo::default()
        }],
        ..StateSnapshot::default()
    };
    let mut w = CaptureWriter::create(o, initial).expect("create");
    let ep = Endpoint::new(std::net::Ipv4Addr::LOCALHOST, 6379);
    let conn = ConnId {
        pid: 10,
        fd: 6,
        start_ns: 3,
    };
    w.append(Event::new(1, exec(10, "redis-server")))
        .expect("append");
    w.append(Event::new(
        2,
        EventBody::Tcp(TcpEvent {
            conn,
            tid: 10,
            local: ep,
            remote: ep,
            step: TcpStep::ListenOpen,
        }),
    ))
    .expect("append");
    w.flush().expect("flush"); // segment 1 full: rotates
    w.append(Event::new(
        3,
        EventBody::ProcExit(ProcExit {
            pid: 1,
            comm: "init".into(),
            exit_code: 0,
            signal: 9,
            oom_killed: false,
        }),
    ))
    .expect("append");
    w.flush().expect("flush");
    w.append(Event::new(4, exec(11, "nginx"))).expect("append");
    w.close().expect("close");
    let c = Capture::open(tmp.path()).expect("opens");
    assert_eq!(c.segment_paths().len(), 3);
    let states: Vec<StateSnapshot> = (0..3)
        .map(|i| c.open_segment(i).expect("segment").header().state.clone())
        .collect();
    let pids = |s: &StateSnapshot| s.processes.iter().map(|p| p.pid).collect::<Vec<_>>();
    assert_eq!(pids(&states[0]), [1]);
    assert_eq!(pids(&states[1]), [1, 10]);
    assert_eq!(states[1].listening.len(), 1);
    assert_eq!(states[1].listening[0].local, ep);
    assert_eq!(pids(&states[2]), [10]);
    assert_eq!(states[2].processes[0].exe, "/usr/bin/redis-server");
}

/// Writes `n` events in blocks of `per_block`, one block per flush.
fn write_blocks(w: &mut CaptureWriter, ts0: u64, n: usize, per_block: usize) -> Vec<Event> {
    let evs = sample_events(ts0, n);
    for chunk in evs.chunks(per_block) {
        for e in chunk {
            w.append(e.clone()).expect("append");
        }
        w.flush().expect("flush");
    }
    evs
}

#[test]
fn keep_bytes_deletes_oldest_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let limit = 12_000;
    let o = CaptureOptions {
        segment_max_bytes: 2_000,
        keep: Keep::Bytes(limit),
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    let evs = write_blocks(&mut w, 0, 4_000, 100);
    let stats = w.close().expect("close");
    assert!(stats.segments_deleted > 0, "{stats:?}");
    assert!(
        dir_bytes(tmp.path()) <= limit,
        "{} > {limit}",
        dir_bytes(tmp.path())
    );
    let c = Capture::open(tmp.path()).expect("opens");
    assert!(c.missing_segments().is_empty());
    let m = c.manifest().expect("manifest");
    assert_eq!(
        m.segments.len() as u64,
        stats.segments - stats.segments_deleted
    );
    assert_eq!(m.totals.events, 4_000, "totals count deleted segments too");
    // What is left is the newest events, contiguous up to the last one.
    let left = read_capture(tmp.path());
    assert!(!left.is_empty() && left.len() < evs.len());
    assert_eq!(left[..], evs[evs.len() - left.len()..]);
    assert_eq!(m.segments[0].seq, stats.segments_deleted + 1);
}

#[test]
fn keep_age_deletes_segments_older_than_the_newest_event_minus_age() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = CaptureOptions {
        segment_max_bytes: 1, // one block per segment
        keep: Keep::Age(Duration::from_micros(500)),
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    // 20 blocks of 10 events, 1 µs apart: each segment spans 9 µs, 10 µs between starts.
    let evs = write_blocks(&mut w, 1_000_000, 2_000, 100);
    w.close().expect("close");
    let newest = evs.last().expect("events").ts;
    let m = Capture::open(tmp.path())
        .expect("opens")
        .manifest()
        .cloned()
        .expect("manifest");
    assert!(m.segments.len() < 20);
    for s in &m.segments {
        assert!(
            s.last_ts >= newest - 500_000,
            "{s:?} should have been deleted"
        );
    }
    let first_kept = m.segments[0].first_ts;
    // The segment just before the first kept one ended before the cutoff.
    assert!(first_kept > newest - 500_000 - 100_000);
}

#[test]
fn pinned_segments_survive_ring_mode() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = CaptureOptions {
        segment_max_bytes: 1,
        keep: Keep::Bytes(6_000),
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    // Pin the time of the second block before it is written.
    w.pin(100_000 + 5_000, 100_000 + 6_000);
    let evs = write_blocks(&mut w, 0, 3_000, 100);
    let stats = w.close().expect("close");
    assert!(stats.segments_deleted > 0);
    let c = Capture::open(tmp.path()).expect("opens");
    let m = c.manifest().expect("manifest");
    let pinned: Vec<_> = m.segments.iter().filter(|s| s.pinned).collect();
    assert_eq!(pinned.len(), 1, "{:?}", m.segments);
    assert_eq!(pinned[0].seq, 2);
    let r = c
        .open_segment(0)
        .expect("pinned segment is the oldest left");
    assert_eq!(read_all(&r), evs[100..200]);
}

#[test]
fn hard_quota_is_never_exceeded_and_drops_are_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let max = 20_000;
    let o = CaptureOptions {
        segment_max_bytes: 4_000,
        max_size: Some(max),
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    let evs = sample_events(0, 10_000);
    for chunk in evs.chunks(50) {
        for e in chunk {
            w.append(e.clone()).expect("append");
        }
        w.flush().expect("flush");
        assert!(
            dir_bytes(tmp.path()) <= max,
            "{} > {max}",
            dir_bytes(tmp.path())
        );
    }
    let stats = w.close().expect("close");
    assert!(dir_bytes(tmp.path()) <= max);
    assert!(stats.dropped_quota > 0);
    assert_eq!(stats.events + stats.dropped_quota, 10_000);
    let c = Capture::open(tmp.path()).expect("opens");
    let m = c.manifest().expect("manifest");
    assert_eq!(m.totals.dropped, stats.dropped_quota);
    assert_eq!(
        m.totals.dropped_by_kind["tcp"] + m.totals.dropped_by_kind["l7"],
        stats.dropped_quota
    );
    // What was kept is the beginning, whole and readable.
    let kept = read_capture(tmp.path());
    assert_eq!(kept.len() as u64, stats.events);
    assert_eq!(kept[..], evs[..kept.len()]);
    for i in 0..c.segment_paths().len() {
        assert!(c.open_segment(i).expect("segment").is_sealed());
    }
}

#[test]
fn hard_quota_in_ring_mode_deletes_instead_of_dropping() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let max = 20_000;
    let o = CaptureOptions {
        segment_max_bytes: 4_000,
        max_size: Some(max),
        keep: Keep::Bytes(u64::MAX),
        ..opts(tmp.path())
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    let evs = write_blocks(&mut w, 0, 10_000, 50);
    assert!(dir_bytes(tmp.path()) <= max);
    let stats = w.close().expect("close");
    assert!(dir_bytes(tmp.path()) <= max);
    assert_eq!(stats.dropped_quota, 0);
    assert!(stats.segments_deleted > 0);
    let kept = read_capture(tmp.path());
    assert_eq!(kept[..], evs[evs.len() - kept.len()..]);
}

#[test]
fn capture_open_errors_and_fallbacks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Capture::open(tmp.path().join("nope")),
        Err(SegmentError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
    ));
    assert!(matches!(
        Capture::open(tmp.path()),
        Err(SegmentError::NotACapture { .. })
    ));
    let txt = tmp.path().join("notes.txt");
    std::fs::write(&txt, "hello").expect("write");
    assert!(matches!(
        Capture::open(&txt),
        Err(SegmentError::NotASegment)
    ));

    // A capture without its manifest is still read, by scanning the segments.
    let dir = tmp.path().join("cap");
    let o = CaptureOptions {
        segment_max_bytes: 1,
        ..opts(&dir)
    };
    let mut w = CaptureWriter::create(o, StateSnapshot::default()).expect("create");
    let evs = write_blocks(&mut w, 0, 300, 100);
    w.close().expect("close");
    let c = Capture::open(&dir).expect("opens");
    let first = c.segment_paths()[0].clone();
    std::fs::remove_file(&first).expect("rm");
    let c = Capture::open(&dir).expect("opens");
    assert_eq!(
        c.missing_segments(),
        [first.file_name().expect("name").to_string_lossy()]
    );
    std::fs::write(dir.join(MANIFEST_FILE), "{ not json").expect("write");
    let c = Capture::open(&dir).expect("opens without a usable manifest");
    assert!(c.manifest().is_none());
    assert!(c.manifest_problem().is_some());
    assert_eq!(read_capture(&dir), evs[100..]);
    // A single segment file.
    let seg = Capture::open(&c.segment_paths()[0]).expect("single segment");
    assert_eq!(seg.segment_paths().len(), 1);
    assert!(seg.manifest().is_none());
}

#[test]
fn marks_are_listed_in_the_manifest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = CaptureWriter::create(opts(tmp.path()), StateSnapshot::default()).expect("create");
    w.append(Event::new(
        42,
        EventBody::Mark(Mark {
            source: MarkSource::User,
            note: "deploy v2".into(),
        }),
    ))
    .expect("append");
    w.close().expect("close");
    let c = Capture::open(tmp.path()).expect("opens");
    assert_eq!(
        c.manifest().expect("manifest").marks,
        [(42, "deploy v2".to_string())]
    );
}

#[test]
fn dropped_writer_flushes_and_seals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = CaptureWriter::create(opts(tmp.path()), StateSnapshot::default()).expect("create");
    let evs = sample_events(0, 20);
    for e in &evs {
        w.append(e.clone()).expect("append");
    }
    drop(w);
    let c = Capture::open(tmp.path()).expect("opens");
    let r = c.open_segment(0).expect("segment");
    assert!(r.is_sealed());
    assert_eq!(read_all(&r), evs);
    assert!(c.manifest().expect("manifest").ended_wall_ns.is_some());
}

/// A writer killed mid-capture (never closed: leaked, as `kill -9` leaves it), then a new one
/// in the same directory: the old segments stay as they were and readable, new ones follow
/// under the same capture id, and the manifest is made right from the files: every segment
/// listed with its events and sealing as on disk, totals equal to what the files hold, the
/// restart recorded (not clean, after the last event on disk).
#[test]
fn a_restart_after_a_kill_continues_the_capture_and_makes_the_manifest_right() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = CaptureOptions {
        block_max_bytes: 2_000,
        ..opts(tmp.path())
    };
    let first = sample_events(0, 1_000);
    let mut w = CaptureWriter::create(o.clone(), StateSnapshot::default()).expect("create");
    let id = w.capture_id().to_string();
    for e in &first {
        w.append(e.clone()).expect("append");
    }
    w.flush().expect("flush");
    // The manifest was last rewritten when the segment started: it counts its first block
    // only. Killed here: no seal, no last manifest.
    std::mem::forget(w);
    let stale = Capture::open(tmp.path()).expect("opens");
    let stale = stale.manifest().expect("manifest").clone();
    assert!(stale.totals.events < 1_000, "{:?}", stale.totals);
    assert!(stale.ended_wall_ns.is_none());

    let mut w =
        CaptureWriter::resume_or_create(o.clone(), StateSnapshot::default()).expect("resume");
    assert_eq!(w.capture_id(), id);
    let second = sample_events(10_000_000_000, 500);
    for e in &second {
        w.append(e.clone()).expect("append");
    }
    w.close().expect("close");

    let c = Capture::open(tmp.path()).expect("opens");
    let m = c.manifest().expect("manifest");
    assert_eq!(c.segment_paths().len(), 2);
    assert_eq!(m.segments.len(), 2);
    assert!(!m.segments[0].sealed, "the killed segment stays unsealed");
    assert!(m.segments[1].sealed);
    assert_eq!(m.segments[0].events, 1_000);
    assert_eq!(m.segments[1].events, 500);
    assert_eq!(m.segments[1].seq, 2);
    assert_eq!(m.totals.events, 1_500);
    assert_eq!(
        m.totals.events_by_kind.values().sum::<u64>(),
        1_500,
        "{:?}",
        m.totals
    );
    assert_eq!(m.totals.bytes_on_disk, dir_bytes(tmp.path()));
    assert_eq!(m.restarts.len(), 1);
    let r = &m.restarts[0];
    assert!(!r.clean);
    assert_eq!(r.last_segment, m.segments[0].file);
    assert_eq!(r.last_ts, first.iter().map(|e| e.ts).max().unwrap_or(0));
    assert!(r.resumed_wall_ns > r.last_wall_ns);
    for i in 0..2 {
        assert_eq!(c.open_segment(i).expect("seg").header().capture_id, id);
    }
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    assert_eq!(read_capture(tmp.path()), all);

    // A clean stop then a restart: recorded as clean, nothing recounted.
    let w = CaptureWriter::resume_or_create(o, StateSnapshot::default()).expect("resume");
    w.close().expect("close");
    let c = Capture::open(tmp.path()).expect("opens");
    let m = c.manifest().expect("manifest");
    assert_eq!(m.totals.events, 1_500);
    assert_eq!(m.restarts.len(), 2);
    assert!(m.restarts[1].clean);
    assert_eq!(m.restarts[1].last_segment, m.segments[1].file);
}
