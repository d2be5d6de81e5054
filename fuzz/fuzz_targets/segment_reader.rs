//! Feeds arbitrary bytes to `SegmentReader::from_bytes` and reads every block: whatever the
//! bytes, the reader must return errors, never panic, hang or allocate without bound, and its
//! collecting and lending paths must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_segment::SegmentReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SegmentReader::from_bytes(data.to_vec()) {
        let _ = r.header();
        let _ = r.is_sealed();
        let _ = r.damage().len();
        for i in 0..r.blocks().len() {
            let read = r.read_block(i);
            // The lending reader must see exactly what the collecting one returns.
            let mut lent = Vec::new();
            let visited = r.visit_events(i, |e| lent.push(e.clone()));
            match (&read, &visited) {
                (Ok(events), Ok(n)) => {
                    assert_eq!(*n, events.len());
                    assert_eq!(&lent, events);
                }
                (Err(_), Err(_)) => {}
                _ => panic!("block {i}: read {read:?}, visited {visited:?}"),
            }
        }
    }
});
