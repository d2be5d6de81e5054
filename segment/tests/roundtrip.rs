//! Round trips: arbitrary event batches through the writer and back.

mod util;

use proptest::prelude::*;
use retrace_segment::*;
use util::*;

/// Writes `batches` as blocks of one segment into memory and reads them back.
fn write_segment(batches: &[Vec<Event>], seal: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.rseg");
    let opts = SegmentWriterOptions {
        sync: false,
        ..SegmentWriterOptions::default()
    };
    let mut w = SegmentWriter::create_with(&path, &header(1), opts).expect("create");
    for b in batches {
        for e in b {
            w.append(e).expect("append");
        }
        w.flush().expect("flush");
    }
    if seal {
        w.seal().expect("seal");
    } else {
        drop(w);
    }
    std::fs::read(&path).expect("read back")
}

/// The frame bytes of every block of a segment.
fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let r = SegmentReader::from_bytes(bytes.to_vec()).expect("opens");
    r.blocks()
        .iter()
        .map(|b| {
            let start = b.offset as usize;
            bytes[start..start + b.frame_len() as usize].to_vec()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// A writer reuses each block's buffers for the next one: what it writes must not depend
    /// on the blocks before (same bytes as each block written by a fresh writer).
    #[test]
    fn blocks_do_not_depend_on_the_blocks_before(
        batches in proptest::collection::vec(proptest::collection::vec(arb_event(), 1..40), 1..5),
    ) {
        let together = frames(&write_segment(&batches, true));
        prop_assert_eq!(together.len(), batches.len());
        for (i, b) in batches.iter().enumerate() {
            let alone = frames(&write_segment(std::slice::from_ref(b), true));
            prop_assert_eq!(alone.len(), 1);
            prop_assert!(alone[0] == together[i], "block {} differs when written after others", i);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_batches_round_trip(
        batches in proptest::collection::vec(proptest::collection::vec(arb_event(), 0..40), 0..5),
        seal in any::<bool>(),
    ) {
        let bytes = write_segment(&batches, seal);
        let r = SegmentReader::from_bytes(bytes).expect("opens");
        prop_assert!(r.damage().is_empty(), "damage: {:?}", r.damage());
        prop_assert_eq!(r.is_sealed(), seal);
        let nonempty: Vec<&Vec<Event>> = batches.iter().filter(|b| !b.is_empty()).collect();
        prop_assert_eq!(r.blocks().len(), nonempty.len());
        for (i, b) in nonempty.iter().enumerate() {
            let got = r.read_block(i).expect("block reads");
            prop_assert_eq!(&got, *b);
            // The lending visitor reuses its slots and payload buffers: what it lends must be
            // exactly the same events (no stale bytes from a longer payload before).
            let mut lent = Vec::new();
            let n = r.visit_events(i, |e| lent.push(e.clone())).expect("block visits");
            prop_assert_eq!(n, b.len());
            prop_assert_eq!(&lent, *b);
            let info = r.blocks()[i];
            prop_assert_eq!(info.events as usize, b.len());
            prop_assert_eq!(info.min_ts, b.iter().map(|e| e.ts).min().unwrap_or(0));
            prop_assert_eq!(info.max_ts, b.iter().map(|e| e.ts).max().unwrap_or(0));
        }
        prop_assert_eq!(r.header(), &SegmentHeader { ..header(1) });
    }
}

#[test]
fn header_and_state_round_trip() {
    let mut h = header(7);
    h.state.processes.push(ProcessInfo {
        pid: 42,
        ppid: 1,
        comm: "redis-server".into(),
        exe: "/usr/bin/redis-server".into(),
        cmdline: vec!["redis-server".into(), "*:6379".into()],
        cgroup: "/system.slice/redis.service".into(),
        container_id: None,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.rseg");
    let w = SegmentWriter::create(&path, &h).expect("create");
    w.seal().expect("seal");
    let r = SegmentReader::open(&path).expect("opens");
    assert_eq!(r.header(), &h);
    assert!(r.is_sealed());
    assert!(r.blocks().is_empty());
    assert_eq!(r.path(), path);
}

#[test]
fn events_keep_their_append_order_across_kinds() {
    // Interleaved kinds with timestamps going backwards: order must be preserved exactly.
    let mut evs = sample_events(1_000_000, 50);
    evs.reverse();
    evs.insert(
        3,
        Event::new(
            5,
            EventBody::Mark(Mark {
                source: MarkSource::User,
                note: "x".into(),
            }),
        ),
    );
    let bytes = write_segment(std::slice::from_ref(&evs), true);
    let r = SegmentReader::from_bytes(bytes).expect("opens");
    assert_eq!(read_all(&r), evs);
}

#[test]
fn large_blocks_split_at_block_max_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.rseg");
    let opts = SegmentWriterOptions {
        sync: false,
        block_max_bytes: 4096,
        zstd_level: 1,
    };
    let mut w = SegmentWriter::create_with(&path, &header(1), opts).expect("create");
    let evs = sample_events(0, 2000);
    for e in &evs {
        w.append(e).expect("append");
    }
    let s = w.seal().expect("seal");
    assert_eq!(s.events, 2000);
    let r = SegmentReader::open(&path).expect("opens");
    assert!(r.blocks().len() > 5, "{} blocks", r.blocks().len());
    assert!(r.blocks().iter().all(|b| b.uncompressed_len < 4096 * 2));
    assert_eq!(read_all(&r), evs);
    assert_eq!(
        r.events_by_kind()
            .map(|k| k[EventKind::Tcp.as_u8() as usize]),
        Some(1000)
    );
}

/// Writes seed inputs for the fuzz targets when `RETRACE_FUZZ_SEEDS` names a directory
/// (`fuzz/corpus`): a segment and decompressed blocks of varied events.
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("RETRACE_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(dir.join("block_decode")).expect("mkdir");
    std::fs::create_dir_all(dir.join("segment_reader")).expect("mkdir");
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for i in 0..16 {
        let evs = proptest::collection::vec(arb_event(), 1..12)
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        let block = retrace_segment::columns::encode_bytes(&evs).expect("encode");
        std::fs::write(dir.join(format!("block_decode/seed-{i}")), block).expect("write");
        let seg = write_segment(std::slice::from_ref(&evs), i % 2 == 0);
        std::fs::write(dir.join(format!("segment_reader/seed-{i}")), seg).expect("write");
    }
}

#[test]
fn a_long_string_referenced_by_many_events_is_split_across_blocks() {
    // Stored once per block, but every event materializes it when read: the writer cuts
    // blocks so that a reader never exceeds its per-block string budget.
    let note = "x".repeat(1 << 20);
    let evs: Vec<Event> = (0..300)
        .map(|i| {
            Event::new(
                i,
                EventBody::Mark(Mark {
                    source: MarkSource::User,
                    note: note.clone(),
                }),
            )
        })
        .collect();
    let bytes = write_segment(std::slice::from_ref(&evs), true);
    let r = SegmentReader::from_bytes(bytes).expect("opens");
    assert!(r.blocks().len() >= 3, "{} blocks", r.blocks().len());
    let mut n = 0;
    for i in 0..r.blocks().len() {
        n += r
            .for_each_event(i, |e| assert_eq!(e, evs[e.ts as usize]))
            .expect("block");
    }
    assert_eq!(n, 300);
}

#[test]
fn a_block_materializing_too_many_string_bytes_is_invalid() {
    let note = "y".repeat(1 << 20);
    let evs: Vec<Event> = (0..300)
        .map(|i| {
            Event::new(
                i,
                EventBody::Mark(Mark {
                    source: MarkSource::User,
                    note: note.clone(),
                }),
            )
        })
        .collect();
    // Encoded as one block directly (a hostile writer).
    let block = retrace_segment::columns::encode_bytes(&evs).expect("encode");
    let err = retrace_segment::columns::decode_bytes(&block).expect_err("over budget");
    assert!(err.contains("exceed"), "{err}");
    assert_eq!(
        retrace_segment::columns::decode_bytes(
            &retrace_segment::columns::encode_bytes(&evs[..10]).expect("encode")
        )
        .expect("small block decodes"),
        evs[..10]
    );
}
