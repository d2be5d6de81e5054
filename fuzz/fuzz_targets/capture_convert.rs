//! Kernel records as the capture daemon reads them from the ring buffers, converted into
//! events (`retrace_capture::convert`): records framed by a 16-bit little-endian length.
//! Parsing gives a record or an error, never a panic or a read out of bounds; the converter
//! turns any sequence of records into events (or none) without panicking, and every event
//! it makes can be written to a segment block and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_capture::convert::{parse_record, record_used_len, Converter, ProcTable};
use retrace_segment::columns::{decode_bytes, encode_bytes};

fuzz_target!(|data: &[u8]| {
    let mut conv = Converter::new(ProcTable::default(), None).without_proc_reads();
    let mut events = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let rec = &rest[..len.min(rest.len())];
        rest = &rest[rec.len()..];
        assert!(record_used_len(rec) <= rec.len());
        if let Ok(r) = parse_record(rec) {
            if let Some(ev) = conv.convert(r) {
                events.push(ev);
            }
        }
    }
    let bytes = encode_bytes(&events).expect("converted events encode");
    assert_eq!(decode_bytes(&bytes).expect("and decode"), events);
});
