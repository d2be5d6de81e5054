//! Feeds arbitrary bytes, as if they were a decompressed block that passed its checksum, to
//! rkyv's checked access and the column decoder: the part of the reader that checksums
//! shield from `segment_reader`'s random inputs. Must return errors, never panic; the three
//! ways the decoder hands events out (owned, lent from reused slots, collected in place)
//! must agree, error for error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_segment::columns::{decode_bytes, decode_bytes_via, encode_bytes, DecodePath};

fuzz_target!(|data: &[u8]| {
    let owned = decode_bytes(data);
    for path in [DecodePath::Lent, DecodePath::Collected] {
        let other = decode_bytes_via(data, path);
        match (&owned, &other) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{path:?} differs"),
            // (The messages of rkyv's validation name addresses, which differ per copy.)
            (Err(_), Err(_)) => {}
            _ => panic!("{path:?}: {other:?} where the owned path gave {owned:?}"),
        }
    }
    if let Ok(events) = owned {
        // A block that decodes must re-encode to something that decodes to the same events.
        let again = encode_bytes(&events).expect("re-encodes");
        let back = decode_bytes(&again).expect("re-decodes");
        assert_eq!(back, events);
    }
});
