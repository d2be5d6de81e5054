//! Feeds arbitrary bytes to `SegmentReader::from_bytes` and reads every block: whatever the
//! bytes, the reader must return errors, never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_segment::SegmentReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SegmentReader::from_bytes(data.to_vec()) {
        let _ = r.header();
        let _ = r.is_sealed();
        let _ = r.damage().len();
        for i in 0..r.blocks().len() {
            if let Ok(events) = r.read_block(i) {
                for e in &events {
                    let _ = e.kind();
                }
            }
        }
    }
});
