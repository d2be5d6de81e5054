//! Stacks at capture time: a user stack copied by the kernel (registers and the top of the
//! stack) is unwound here with the binaries' `.eh_frame` (framehop), each frame normalized to
//! (binary, file offset), and interned; kernel stacks are symbolized from `/proc/kallsyms`.
//! New definitions (`BinaryInfo`, `UserStack`, `StackDef`) are queued for the writer, which
//! puts them before their first use in every segment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
use retrace_segment::{
    BinaryId, BinaryInfo, Event, EventBody, Frame, StackDef, StackId, UserStack,
};

use super::elf::{Binary, Data};

/// Deepest user stack kept.
const MAX_FRAMES: usize = 128;
/// How often a process's mappings may be re-read when an address falls outside them.
const REFRESH_AFTER: Duration = Duration::from_secs(1);
/// Most distinct stacks one capture interns; past it, samples keep no stack (counted).
pub const MAX_STACKS: usize = 500_000;
/// Most processes whose unwinders are kept at once (least recently used are dropped).
const MAX_PROCS: usize = 512;

/// One file-backed mapping of a process.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Executable.
    pub exec: bool,
    /// (device, inode): the file's identity.
    pub file: (u64, u64),
    /// Path as mapped.
    pub path: String,
}

/// Reads `/proc/PID/maps`: the file-backed mappings.
pub fn read_maps(pid: u32) -> std::io::Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text.lines().filter_map(parse_maps_line).collect())
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut parts = line.splitn(6, ' ');
    let range = parts.next()?;
    let perms = parts.next()?;
    let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
    let dev = parts.next()?;
    let inode: u64 = parts.next()?.parse().ok()?;
    let path = parts.next().unwrap_or("").trim_start();
    if inode == 0 || !path.starts_with('/') {
        return None;
    }
    let (s, e) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let dev = (u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?;
    Some(Mapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        offset,
        exec: perms.as_bytes().get(2) == Some(&b'x'),
        file: (dev, inode),
        path: path.trim_end_matches(" (deleted)").to_string(),
    })
}

/// The path under which the daemon reads a process's file (its mount namespace).
pub fn proc_path(pid: u32, m: &Mapping) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
}

struct KnownBinary {
    id: BinaryId,
    parsed: Option<Arc<Binary>>,
}

struct ProcUnwinder {
    unwinder: UnwinderX86_64<Data>,
    /// Executable and other file mappings with the binary they belong to.
    maps: Vec<(Mapping, BinaryId)>,
    read_at: Instant,
    used: u64,
}

/// Counters of what unwinding did.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnwindStats {
    /// User stacks unwound.
    pub stacks: u64,
    /// Stacks whose unwinding stopped before the outermost frame.
    pub truncated: u64,
    /// Samples left without a stack: the intern table was full.
    pub table_full: u64,
    /// Binaries that could not be read or parsed.
    pub unreadable_binaries: u64,
}

/// Interned stacks and binaries of one capture, and the unwinders of the processes sampled.
pub struct Stacks {
    binaries: HashMap<(u64, u64), KnownBinary>,
    procs: HashMap<u32, ProcUnwinder>,
    cache: CacheX86_64,
    user: HashMap<(u32, Vec<Frame>, bool), StackId>,
    kernel: HashMap<Vec<u64>, StackId>,
    kallsyms: Vec<(u64, String)>,
    next_stack: StackId,
    next_binary: BinaryId,
    clock: u64,
    /// Definitions made since the last [`Stacks::take_defs`].
    defs: Vec<Event>,
    /// Counters.
    pub stats: UnwindStats,
}

impl Default for Stacks {
    fn default() -> Self {
        Self::new()
    }
}

impl Stacks {
    /// An empty table; kernel symbols are read from `/proc/kallsyms` (empty when unreadable).
    pub fn new() -> Self {
        Stacks {
            binaries: HashMap::new(),
            procs: HashMap::new(),
            cache: CacheX86_64::new(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            kallsyms: read_kallsyms(),
            next_stack: 1,
            next_binary: 0,
            clock: 0,
            defs: Vec::new(),
            stats: UnwindStats::default(),
        }
    }

    /// The definitions made since the last call, in the order they must be written.
    pub fn take_defs(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.defs)
    }

    /// Forgets a process's unwinder (it exited).
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    /// Unwinds a user stack copied at `sp` and interns it. `return_ip`: `ip` is a return
    /// address (symbolize `ip - 1`).
    #[allow(clippy::too_many_arguments)]
    pub fn user_stack(
        &mut self,
        ts: u64,
        pid: u32,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
        return_ip: bool,
    ) -> Option<StackId> {
        self.clock += 1;
        if !self.procs.contains_key(&pid) || self.stale(pid, ip) {
            self.load_process(pid);
        }
        let proc = self.procs.get_mut(&pid)?;
        proc.used = self.clock;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())?;
            let off = usize::try_from(off).map_err(|_| ())?;
            let bytes = stack.get(off..off + 8).ok_or(())?;
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            Ok(u64::from_le_bytes(b))
        };
        let regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut iter = proc
            .unwinder
            .iter_frames(ip, regs, &mut self.cache, &mut read_stack);
        let mut addrs = Vec::with_capacity(32);
        let mut truncated = false;
        loop {
            match iter.next() {
                Ok(Some(f)) => {
                    let lookup = match f {
                        FrameAddress::InstructionPointer(a) if return_ip => a.saturating_sub(1),
                        FrameAddress::InstructionPointer(a) => a,
                        FrameAddress::ReturnAddress(a) => a.get().saturating_sub(1),
                    };
                    addrs.push(lookup);
                    if addrs.len() >= MAX_FRAMES {
                        truncated = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    truncated = true;
                    break;
                }
            }
        }
        let frames: Vec<Frame> = addrs
            .iter()
            .map(|&a| {
                proc.maps
                    .iter()
                    .find(|(m, _)| a >= m.start && a < m.end)
                    .map_or(
                        Frame {
                            binary: Frame::UNKNOWN_BINARY,
                            offset: a,
                        },
                        |(m, id)| Frame {
                            binary: *id,
                            offset: a - m.start + m.offset,
                        },
                    )
            })
            .collect();
        self.stats.stacks += 1;
        if truncated {
            self.stats.truncated += 1;
        }
        let key = (pid, frames, truncated);
        if let Some(id) = self.user.get(&key) {
            return Some(*id);
        }
        if self.user.len() + self.kernel.len() >= MAX_STACKS {
            self.stats.table_full += 1;
            return None;
        }
        let id = self.next_stack;
        self.next_stack += 1;
        let (pid, frames, truncated) = key;
        self.defs.push(Event::new(
            ts,
            EventBody::UserStack(UserStack {
                id,
                pid,
                frames: frames.clone(),
                truncated,
            }),
        ));
        self.user.insert((pid, frames, truncated), id);
        Some(id)
    }

    /// Interns a kernel stack (addresses innermost first), symbolized from kallsyms.
    pub fn kernel_stack(&mut self, ts: u64, frames: &[u64]) -> Option<StackId> {
        if frames.is_empty() {
            return None;
        }
        if let Some(id) = self.kernel.get(frames) {
            return Some(*id);
        }
        if self.user.len() + self.kernel.len() >= MAX_STACKS {
            self.stats.table_full += 1;
            return None;
        }
        let id = self.next_stack;
        self.next_stack += 1;
        let symbols = frames.iter().map(|&a| self.kernel_symbol(a)).collect();
        self.defs.push(Event::new(
            ts,
            EventBody::StackDef(StackDef {
                id,
                pid: None,
                frames: frames.to_vec(),
                symbols,
            }),
        ));
        self.kernel.insert(frames.to_vec(), id);
        Some(id)
    }

    fn kernel_symbol(&self, addr: u64) -> String {
        let i = self.kallsyms.partition_point(|(a, _)| *a <= addr);
        match i.checked_sub(1).and_then(|i| self.kallsyms.get(i)) {
            Some((_, name)) => name.clone(),
            None => format!("{addr:#x}"),
        }
    }

    fn stale(&self, pid: u32, ip: u64) -> bool {
        self.procs.get(&pid).is_some_and(|p| {
            !p.maps.iter().any(|(m, _)| ip >= m.start && ip < m.end)
                && p.read_at.elapsed() >= REFRESH_AFTER
        })
    }

    fn load_process(&mut self, pid: u32) {
        // a process gone already gets no modules: its frames stay raw addresses, and its
        // maps are not read again before REFRESH_AFTER
        let maps = read_maps(pid).unwrap_or_default();
        if self.procs.len() >= MAX_PROCS {
            if let Some(old) = self
                .procs
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(k, _)| *k)
            {
                self.procs.remove(&old);
            }
        }
        let mut unwinder = UnwinderX86_64::new();
        let mut with_ids = Vec::with_capacity(maps.len());
        // one module per file: its address range over all its mappings
        let mut files: Vec<(u64, u64)> = maps.iter().filter(|m| m.exec).map(|m| m.file).collect();
        files.sort_unstable();
        files.dedup();
        // the files with code: frames can only point there
        for m in maps.iter().filter(|m| files.binary_search(&m.file).is_ok()) {
            let id = self.binary_for(pid, m);
            with_ids.push((m.clone(), id));
        }
        for file in files {
            let Some(b) = self.binaries.get(&file).and_then(|k| k.parsed.clone()) else {
                continue;
            };
            let of_file: Vec<&Mapping> = maps.iter().filter(|m| m.file == file).collect();
            let Some(first) = of_file.first() else {
                continue;
            };
            let start = of_file.iter().map(|m| m.start).min().unwrap_or(first.start);
            let end = of_file.iter().map(|m| m.end).max().unwrap_or(first.end);
            let Some(first_svma) = b.offset_to_vaddr(first.offset) else {
                continue;
            };
            let base_avma = first.start.wrapping_sub(first_svma);
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                // .text is left out: framehop reads it only to guess at prologues and
                // epilogues where CFI is missing, and copying it (tens of MiB for some
                // libraries) cost more than it gave
                got_svma: b.got.clone(),
                eh_frame_svma: b.eh_frame.as_ref().map(|(r, _)| r.clone()),
                eh_frame: b.eh_frame.as_ref().map(|(_, d)| Arc::clone(d)),
                eh_frame_hdr_svma: b.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
                eh_frame_hdr: b.eh_frame_hdr.as_ref().map(|(_, d)| Arc::clone(d)),
                debug_frame: b.debug_frame.clone(),
                ..Default::default()
            };
            unwinder.add_module(Module::new(first.path.clone(), start..end, base_avma, info));
        }
        self.procs.insert(
            pid,
            ProcUnwinder {
                unwinder,
                maps: with_ids,
                read_at: Instant::now(),
                used: self.clock,
            },
        );
    }

    /// The capture-local id of a mapping's file, parsing it (and queueing its definition) the
    /// first time it is seen.
    fn binary_for(&mut self, pid: u32, m: &Mapping) -> BinaryId {
        if let Some(k) = self.binaries.get(&m.file) {
            return k.id;
        }
        let id = self.next_binary;
        self.next_binary += 1;
        let parsed = match Binary::read(&proc_path(pid, m))
            .or_else(|_| Binary::read(&PathBuf::from(format!("/proc/{pid}/root{}", m.path))))
        {
            Ok(b) => Some(Arc::new(b)),
            Err(_) => {
                self.stats.unreadable_binaries += 1;
                None
            }
        };
        let (build_id, symbols) = parsed
            .as_ref()
            .map(|b| (b.build_id.clone(), b.symbols.clone()))
            .unwrap_or_default();
        self.defs.push(Event::new(
            0,
            EventBody::Binary(BinaryInfo {
                id,
                build_id,
                path: m.path.clone(),
                symbols,
            }),
        ));
        self.binaries.insert(m.file, KnownBinary { id, parsed });
        id
    }
}

fn read_kallsyms() -> Vec<(u64, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return Vec::new();
    };
    let mut out: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let addr = u64::from_str_radix(p.next()?, 16).ok()?;
            let kind = p.next()?;
            let name = p.next()?;
            (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| (addr, name.to_string()))
        })
        .collect();
    out.sort_unstable_by_key(|(a, _)| *a);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_and_anonymous_ones_are_skipped() {
        let m = parse_maps_line(
            "7f1c2a400000-7f1c2a428000 r-xp 00028000 fe:01 1183416                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(m.start, 0x7f1c_2a40_0000);
        assert_eq!(m.offset, 0x28000);
        assert!(m.exec);
        assert_eq!(m.file, ((0xfe << 32) | 1, 1_183_416));
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert!(
            parse_maps_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0          [stack]").is_none()
        );
        let d =
            parse_maps_line("400000-401000 r-xp 00000000 08:01 42 /tmp/leak (deleted)").unwrap();
        assert_eq!(d.path, "/tmp/leak");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod live_tests {
    use super::*;

    #[test]
    fn own_maps_have_code() {
        let maps = read_maps(std::process::id()).unwrap();
        assert!(maps.iter().any(|m| m.exec), "{maps:?}");
    }
}
