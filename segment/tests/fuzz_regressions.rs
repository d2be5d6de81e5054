//! Inputs that once crashed a fuzz target (`fuzz/`), kept under `tests/data/fuzz/<target>/`:
//! each must now give an error or a valid result, never a panic.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd {
            let p = e.expect("entry").path();
            out.push((p.display().to_string(), std::fs::read(&p).expect("read")));
        }
    }
    out
}

#[test]
fn block_decode_crashes_stay_fixed() {
    let cases = inputs("block_decode");
    assert!(!cases.is_empty());
    for (name, bytes) in cases {
        // crash-c8ef15f9: a thread id delta near i64::MAX overflowed `pid + delta`.
        if let Ok(events) = retrace_segment::columns::decode_bytes(&bytes) {
            let again = retrace_segment::columns::encode_bytes(&events).expect("re-encodes");
            assert_eq!(
                retrace_segment::columns::decode_bytes(&again).expect("re-decodes"),
                events,
                "{name}"
            );
        }
    }
}

#[test]
fn segment_reader_crashes_stay_fixed() {
    for (_name, bytes) in inputs("segment_reader") {
        if let Ok(r) = retrace_segment::SegmentReader::from_bytes(bytes) {
            for i in 0..r.blocks().len() {
                let _ = r.read_block(i);
            }
        }
    }
}
