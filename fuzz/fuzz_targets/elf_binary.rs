//! ELF images as the profiler reads them from the binaries of captured processes
//! (`retrace_capture::profile::elf::Binary::parse`: build id, function symbols, unwind
//! sections, program headers), and the choice of a uprobe's offset by decoding a function's
//! first instructions: any bytes give a binary or an error, never a panic (an overflow
//! included); a parsed binary's address translations agree, every symbol is found at its own
//! offset, and a probe offset stays within the first instructions of its function.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_capture::profile::elf::{probe_offset, Binary, ALLOC_ARGS, FREE_ARGS};

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Binary::parse(data) else {
        return;
    };
    for s in b.symbols.iter().take(64) {
        let _ = b.function_offset(&s.name);
        // Symbols are one per offset: each is found at its own offset.
        assert_eq!(b.symbol_at(s.offset).map(|f| f.offset), Some(s.offset));
        // An offset's stated address maps back into a load segment.
        if let Some(v) = b.offset_to_vaddr(s.offset) {
            assert!(b.vaddr_to_offset(v).is_some(), "{v:#x} of {:#x}", s.offset);
        }
        // At most 32 instructions of at most 15 bytes past the entry, for a free probe and
        // for an allocation probe; the latter (more registers kept) never goes further.
        let free = probe_offset(data, s.offset, FREE_ARGS);
        let alloc = probe_offset(data, s.offset, ALLOC_ARGS);
        for p in [free, alloc] {
            assert!(
                p >= s.offset && p - s.offset < 32 * 15,
                "probe at {p:#x} for {:#x}",
                s.offset
            );
        }
        assert!(
            alloc == s.offset || alloc == free,
            "{alloc:#x} vs {free:#x}"
        );
    }
});
