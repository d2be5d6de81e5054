//! Feeds arbitrary bytes, as if they were a decompressed block that passed its checksum, to
//! rkyv's checked access and the column decoder: the part of the reader that checksums
//! shield from `segment_reader`'s random inputs. Must return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = retrace_segment::columns::decode_bytes(data) {
        // A block that decodes must re-encode to something that decodes to the same events.
        let again = retrace_segment::columns::encode_bytes(&events).expect("re-encodes");
        let back = retrace_segment::columns::decode_bytes(&again).expect("re-decodes");
        assert_eq!(back, events);
    }
});
