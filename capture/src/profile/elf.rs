//! What the profiler needs from a binary (executable or shared library), read once per file:
//! its GNU build id, its function symbols in file-offset terms (so that a capture names
//! functions without the file), the sections framehop unwinds with (`.eh_frame`,
//! `.eh_frame_hdr`, `.text`, `.got`), and the program headers that turn a file offset into the
//! address the ELF states (SVMA).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use object::elf::{FileHeader64, PT_LOAD};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{LittleEndian, Object, ObjectSection, ObjectSymbol, SymbolKind};
use retrace_segment::Symbol;

/// Unwind section data shared by every process that maps the binary.
pub type Data = Arc<[u8]>;

/// One loadable segment: file range and the address it states.
#[derive(Clone, Copy, Debug)]
struct Load {
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// A binary, parsed.
#[derive(Debug)]
pub struct Binary {
    /// GNU build id, lower-case hex; empty when none.
    pub build_id: String,
    /// Function symbols by file offset, sorted.
    pub symbols: Vec<Symbol>,
    loads: Vec<Load>,
    /// `.eh_frame`: framehop's input, as the ELF states it.
    pub eh_frame: Option<(Range<u64>, Data)>,
    /// `.eh_frame_hdr`.
    pub eh_frame_hdr: Option<(Range<u64>, Data)>,
    /// `.got` range.
    pub got: Option<Range<u64>>,
    /// `.debug_frame` (rarely present in distribution binaries).
    pub debug_frame: Option<Data>,
    /// Every function name (aliases included) and its file offset.
    by_name: std::collections::HashMap<String, u64>,
}

impl Binary {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Binary, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses an ELF image.
    pub fn parse(bytes: &[u8]) -> Result<Binary, String> {
        let file = ElfFile64::<LittleEndian>::parse(bytes).map_err(|e| e.to_string())?;
        let endian = file.endian();
        let header: &FileHeader64<LittleEndian> = file.elf_header();
        let mut loads = Vec::new();
        for ph in header
            .program_headers(endian, bytes)
            .map_err(|e| e.to_string())?
        {
            if ph.p_type(endian) == PT_LOAD {
                loads.push(Load {
                    offset: ph.p_offset(endian),
                    vaddr: ph.p_vaddr(endian),
                    filesz: ph.p_filesz(endian),
                });
            }
        }
        let build_id = file
            .build_id()
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default();
        let section = |name: &str| -> Option<(Range<u64>, Data)> {
            let s = file.section_by_name(name)?;
            let data = s.data().ok()?;
            Some((
                s.address()..s.address().saturating_add(s.size()),
                Arc::from(data),
            ))
        };
        let mut b = Binary {
            build_id,
            symbols: Vec::new(),
            loads,
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            got: file
                .section_by_name(".got")
                .map(|s| s.address()..s.address().saturating_add(s.size())),
            debug_frame: section(".debug_frame").map(|(_, d)| d),
            by_name: std::collections::HashMap::new(),
        };
        b.symbols = b.function_symbols(&file);
        Ok(b)
    }

    fn function_symbols(&mut self, file: &ElfFile64<'_, LittleEndian>) -> Vec<Symbol> {
        let mut out = Vec::new();
        let mut take = |sym: object::read::elf::ElfSymbol64<'_, '_, LittleEndian>| {
            if sym.kind() != SymbolKind::Text || sym.address() == 0 || sym.is_undefined() {
                return;
            }
            let Ok(name) = sym.name() else { return };
            if name.is_empty() {
                return;
            }
            let Some(offset) = self.vaddr_to_offset(sym.address()) else {
                return;
            };
            out.push(Symbol {
                offset,
                size: sym.size(),
                // stored as the binary has it: the analysis demangles for display
                name: name.to_string(),
            });
        };
        // .symtab when the binary kept it, else the dynamic symbols (stripped libraries)
        let mut any = false;
        for sym in file.symbols() {
            any = true;
            take(sym);
        }
        if !any {
            for sym in file.dynamic_symbols() {
                take(sym);
            }
        }
        for s in &out {
            self.by_name.entry(s.name.clone()).or_insert(s.offset);
        }
        // aliases at one address (`free`, `cfree`, `__libc_free`): the plainest name names it
        let plain = |s: &Symbol| {
            (
                s.name.bytes().take_while(|b| *b == b'_').count(),
                s.name.len(),
            )
        };
        out.sort_by(|a, b| {
            a.offset
                .cmp(&b.offset)
                .then(plain(a).cmp(&plain(b)))
                .then(a.name.cmp(&b.name))
        });
        out.dedup_by(|b, a| a.offset == b.offset);
        out
    }

    /// The file offset of a stated address.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| vaddr >= l.vaddr && vaddr - l.vaddr < l.filesz)
            .and_then(|l| (vaddr - l.vaddr).checked_add(l.offset))
    }

    /// The stated address of a file offset.
    pub fn offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| offset >= l.offset && offset - l.offset < l.filesz)
            .and_then(|l| (offset - l.offset).checked_add(l.vaddr))
    }

    /// The file offset of a defined function by name.
    pub fn function_offset(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    /// The symbol covering a file offset.
    pub fn symbol_at(&self, offset: u64) -> Option<&Symbol> {
        let i = self.symbols.partition_point(|s| s.offset <= offset);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        let next = self.symbols.get(i).map_or(u64::MAX, |n| n.offset);
        let end = if s.size > 0 {
            s.offset.saturating_add(s.size)
        } else {
            next
        };
        (offset < end).then_some(s)
    }
}

/// The registers a `free` probe reads: its argument.
pub const FREE_ARGS: &[iced_x86::Register] = &[iced_x86::Register::RDI];

/// The registers an allocation function's probes read: its arguments (up to
/// `posix_memalign`'s three) and the stack pointer, under which a return probe finds the
/// return address it replaces.
pub const ALLOC_ARGS: &[iced_x86::Register] = &[
    iced_x86::Register::RDI,
    iced_x86::Register::RSI,
    iced_x86::Register::RDX,
    iced_x86::Register::RSP,
];

/// Where to put a uprobe on a function whose probe reads only the registers `keep` as they
/// were at the entry, found by decoding its first instructions: the first one the kernel's
/// uprobes handle without single-stepping a copy of it out of line (a push, a nop, a jump, a
/// call or a conditional branch: emulated), provided nothing before it wrote a register of
/// `keep` and no branch came before it; else the entry. An out-of-line single step costs a
/// second trap: measured here, a probe on glibc's `free` entry (`test %rdi,%rdi`) cost 55 µs
/// per call against 1 µs for `malloc` (`push %r12`); jemalloc's `free` reaches its first
/// branch after ten instructions, its `malloc` after a `cmp`.
pub fn probe_offset(bytes: &[u8], offset: u64, keep: &[iced_x86::Register]) -> u64 {
    use iced_x86::OpAccess;
    use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic};
    let Some(code) = usize::try_from(offset).ok().and_then(|o| bytes.get(o..)) else {
        return offset;
    };
    let mut decoder = Decoder::with_ip(64, code, offset, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    for _ in 0..32 {
        let ins = decoder.decode();
        if ins.is_invalid() {
            break;
        }
        let emulated = matches!(ins.mnemonic(), Mnemonic::Push | Mnemonic::Nop)
            || matches!(
                ins.flow_control(),
                FlowControl::UnconditionalBranch
                    | FlowControl::ConditionalBranch
                    | FlowControl::Call
            );
        if emulated && ins.code() != Code::Endbr64 {
            return ins.ip();
        }
        if ins.flow_control() != FlowControl::Next {
            break; // a return or an indirect branch: nothing after it is on every path
        }
        let writes_kept = info.info(&ins).used_registers().iter().any(|r| {
            keep.contains(&r.register().full_register())
                && matches!(
                    r.access(),
                    OpAccess::Write
                        | OpAccess::ReadWrite
                        | OpAccess::CondWrite
                        | OpAccess::ReadCondWrite
                )
        });
        if writes_kept {
            break;
        }
    }
    offset
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An ELF64 header and one `PT_LOAD` stating `vaddr` for `filesz` bytes from offset 0, no
    /// sections: what a hostile or corrupt binary mapped by a captured process may claim.
    fn elf_with_load(vaddr: u64, filesz: u64) -> Vec<u8> {
        let mut b = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
        b.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
        b.extend_from_slice(&1u32.to_le_bytes()); // e_version
        b.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        b.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for v in [64u16, 56, 1, 64, 0, 0] {
            // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&PT_LOAD.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes()); // p_flags: r-x
        for v in [0u64, vaddr, vaddr, filesz, filesz, 0x1000] {
            // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Found while writing the fuzz target `elf_binary`: a load segment stated at the top of
    /// the address space made `vaddr + filesz` overflow (a panic in debug builds, a wrong
    /// answer in release).
    #[test]
    fn fuzz_elf_binary_load_at_the_top_of_the_address_space_does_not_overflow() {
        let b = Binary::parse(&elf_with_load(u64::MAX - 10, 100)).expect("a minimal ELF");
        assert_eq!(b.vaddr_to_offset(u64::MAX - 5), Some(5));
        assert_eq!(b.vaddr_to_offset(u64::MAX - 11), None);
        assert_eq!(b.offset_to_vaddr(5), Some(u64::MAX - 5));
        // Offsets whose address would be past the end of the address space have none.
        assert_eq!(b.offset_to_vaddr(50), None);
        assert!(b.symbol_at(0).is_none());
    }

    #[test]
    fn the_probe_goes_to_the_first_emulated_instruction_with_rdi_intact() {
        // endbr64; push rbp: the push
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x55];
        assert_eq!(probe_offset(&code, 0, FREE_ARGS), 4);
        // glibc 2.36's free: test rdi,rdi; je ...: the branch
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        assert_eq!(probe_offset(&free, 0, FREE_ARGS), 3);
        // mov rdi, rax (rdi overwritten) before the push: the entry
        let clobber = [0x48, 0x89, 0xc7, 0x55];
        assert_eq!(probe_offset(&clobber, 0, FREE_ARGS), 0);
        // out of range: unchanged
        assert_eq!(probe_offset(&code, 99, FREE_ARGS), 99);
    }

    /// Debian 12's jemalloc 5.3 (redis-server's allocator): `free` reaches its first branch
    /// after ten instructions that leave rdi alone, `malloc` after a `cmp`; a `sub rsp` before
    /// the branch keeps an allocation probe at the entry (its return probe needs the return
    /// address at rsp), not a free probe.
    #[test]
    fn jemalloc_probes_go_past_the_instructions_before_the_first_branch() {
        let free: &[u8] = &[
            0x48, 0x89, 0xf8, // mov rax, rdi
            0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, // mov rdx, [rip+...]
            0x48, 0x89, 0xf9, // mov rcx, rdi
            0x48, 0xc1, 0xe8, 0x1a, // shr rax, 0x1a
            0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, // and rcx, ...
            0x25, 0xf0, 0x00, 0x00, 0x00, // and eax, 0xf0
            0x64, 0x48, 0x03, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // add rax, fs:[0]
            0x48, 0x01, 0xd0, // add rax, rdx
            0x48, 0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, // cmp rcx, [rax+0x1b0]
            0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00, // jne
        ];
        assert_eq!(probe_offset(free, 0, FREE_ARGS), 0x30);
        let malloc: &[u8] = &[
            0x48, 0x81, 0xff, 0x00, 0x10, 0x00, 0x00, // cmp rdi, 0x1000
            0x0f, 0x87, 0x93, 0x00, 0x00, 0x00, // ja
        ];
        assert_eq!(probe_offset(malloc, 0, ALLOC_ARGS), 7);
        let frame_first: &[u8] = &[
            0x48, 0x83, 0xec, 0x18, // sub rsp, 0x18
            0x0f, 0x87, 0x93, 0x00, 0x00, 0x00, // ja
        ];
        assert_eq!(probe_offset(frame_first, 0, ALLOC_ARGS), 0);
        assert_eq!(probe_offset(frame_first, 0, FREE_ARGS), 4);
    }

    #[test]
    fn libc_free_is_found_with_its_probe_offset_decoded() {
        let Some(path) = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists()) else {
            return;
        };
        let b = Binary::read(path).unwrap();
        assert_eq!(b.build_id.len(), 40, "libc has a 20-byte GNU build id");
        let free = b.function_offset("free").unwrap();
        let malloc = b.function_offset("malloc").unwrap();
        assert_ne!(free, malloc);
        assert_eq!(b.symbol_at(free).unwrap().name, "free");
        let bytes = std::fs::read(path).unwrap();
        let at = probe_offset(&bytes, free, FREE_ARGS);
        assert!(
            at > free && at < free + 16,
            "free at {free:#x}, probed at {at:#x}"
        );
        assert!(b.eh_frame_hdr.is_some() && b.eh_frame.is_some());
        let v = b.offset_to_vaddr(free).unwrap();
        assert_eq!(b.vaddr_to_offset(v), Some(free));
    }
}
