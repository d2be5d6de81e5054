//! ELF images as the profiler reads them from the binaries of captured processes
//! (`retrace_capture::profile::elf::Binary::parse`: build id, function symbols, unwind
//! sections, program headers), and the landing-pad check of uprobe offsets: any bytes give a
//! binary or an error, never a panic (an overflow included); a parsed binary's address
//! translations agree, and every symbol is found at its own offset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_capture::profile::elf::{probe_offset_past_landing_pad, Binary};

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Binary::parse(data) else {
        return;
    };
    for s in b.symbols.iter().take(64) {
        let _ = b.function_offset(&s.name);
        // Symbols are one per offset: each is found at its own offset.
        assert_eq!(b.symbol_at(s.offset).map(|f| f.offset), Some(s.offset));
        // An offset's stated address maps back into the same load segment's bytes.
        if let Some(v) = b.offset_to_vaddr(s.offset) {
            assert!(b.vaddr_to_offset(v).is_some(), "{v:#x} of {:#x}", s.offset);
        }
        let p = probe_offset_past_landing_pad(data, s.offset);
        assert!(
            p == s.offset || p == s.offset + 4,
            "endbr64 is 4 bytes, moved to {p}"
        );
    }
});
