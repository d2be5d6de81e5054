//! Static check of the BPF stack: does every program's worst call chain fit in 512 bytes on
//! any kernel?
//!
//! The verifier of kernels without BPF private stacks (all before 6.13, and some later builds)
//! limits the *combined* stack of a call chain: a program's frame plus the frame of every
//! bpf-to-bpf subprogram it calls, transitively, each rounded up, must stay within
//! [`MAX_STACK`] bytes ("combined stack size of 2 calls is 704. Too large"). Kernels with
//! private stacks accept deeper chains, so loading the programs on the build machine proves
//! nothing about the others. This module proves it from the compiled object alone.
//!
//! [`Analysis::from_elf`] reads the BPF ELF object (the one the skeleton embeds,
//! [`crate::object`]), decodes every function of every program section (`tp_btf/...`,
//! `iter/...`) and of `.text` (the subprograms), and finds for each:
//!
//! - its frame depth: the deepest byte below `r10` it touches or points at, in whole 8-byte
//!   slots as the verifier counts them (loads and stores based on `r10` or on a register
//!   holding `r10 + constant`, and `rX = r10; rX += -N` address computations, which is how a
//!   stack buffer is handed to a helper), found by a small data-flow pass over the function's
//!   control flow;
//! - its calls: bpf-to-bpf calls (`call` with `src_reg` 1, `BPF_PSEUDO_CALL`), whose target is
//!   found as libbpf finds it (`bpf_object__reloc_code`): through the relocation against a
//!   `.text` symbol, `st_value / 8 + imm + 1`, or, without relocation, `insn + imm + 1` in the
//!   same section; and callbacks (`bpf_loop` and the like), whose address is loaded by a
//!   `ld_imm64` relocated against `.text` (libbpf turns it into `src_reg` 4,
//!   `BPF_PSEUDO_FUNC`) at byte `st_value + imm`. Calls relocated against an extern symbol are
//!   kfunc calls: no frame of the chain.
//!
//! The kernel's `check_max_stack_depth` walks a program's calls *and* the callbacks it
//! references (`bpf_pseudo_func`) as frames of one chain (only async callbacks, such as
//! timers', are checked as chains of their own; we have none), each frame counted as
//! `round_up(max(depth, 1), 32)` by the interpreter's granularity (JITed kernels from 6.x
//! round to 16, which is never more). [`Analysis::chains`] models exactly that,
//! conservatively: every referenced callback is a call, every frame rounded to 32.
//!
//! The depth found here is an upper bound of what the verifier tracks (it counts only the
//! bytes a path really touches, after dead-code elimination), so a chain that fits here fits
//! there. One difference is expected in the verifier's statistics, not in its check: when it
//! inlines a `bpf_loop`, it adds 24 bytes (3 slots, plus alignment) to the caller's frame,
//! after the combined-stack check (`optimize_bpf_loop` runs after `check_max_stack_depth`).
//! Measured on 6.18 and compared subprogram by subprogram (`capture/tests/verifier_stack.rs`):
//! every depth equal, but for those 24 bytes. [`verifier_stack_depths`] parses the verifier's own `stack depth A+B+C` statistics
//! line (log level `BPF_LOG_STATS`) for cross-checks, and [`Analysis::libbpf_order`] gives the
//! order in which libbpf appends the subprograms to a program, which is the order of that
//! line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind, SymbolKind};

/// The verifier's limit of a call chain's combined stack, in bytes (`MAX_BPF_STACK`).
pub const MAX_STACK: u32 = 512;
/// Granularity each frame is rounded up to (the interpreter's; JITed kernels use 16).
pub const FRAME_GRANULE: u32 = 32;
/// Most frames a call chain may have (`MAX_CALL_FRAMES`).
pub const MAX_FRAMES: usize = 8;

/// Size of one BPF instruction slot.
const INSN: usize = 8;
/// Deepest offset below `r10` the data-flow pass follows before it calls an offset variable.
const TRACK_LIMIT: i64 = 1 << 16;

/// Errors of the analysis: the object is not what the analysis understands.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The ELF object could not be read.
    #[error("reading the BPF object: {0}")]
    Elf(#[from] object::Error),
    /// A call or callback reference whose target is not the start of a function.
    #[error("{function}: instruction {insn} refers to byte {target} of {section}, which starts no function")]
    BadTarget {
        /// Function holding the call.
        function: String,
        /// Instruction index within its section.
        insn: usize,
        /// Section of the target.
        section: String,
        /// Byte offset of the target in that section.
        target: i64,
    },
    /// A function that calls itself, directly or not (the verifier rejects recursion).
    #[error("recursive call chain: {0}")]
    Recursion(String),
    /// A section whose size is not a whole number of instructions.
    #[error("section {0} is not a whole number of 8-byte instructions")]
    Truncated(String),
}

/// How a function reaches another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Edge {
    /// A bpf-to-bpf call (`BPF_PSEUDO_CALL`).
    Call,
    /// A callback handed to a helper (`bpf_loop` ...; `ld_imm64` of a function,
    /// `BPF_PSEUDO_FUNC`): the verifier counts it as a frame of the chain.
    Callback,
}

/// One reference from a function to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Index of the callee in [`Analysis::functions`].
    pub callee: usize,
    /// Call or callback.
    pub edge: Edge,
    /// Instruction index (in the caller's section) of the `call` or `ld_imm64`.
    pub insn: usize,
}

/// One function of the object: a program or a subprogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Symbol name (`rt_sys_exit`, `on_data`).
    pub name: String,
    /// ELF section (`tp_btf/sys_exit`, `.text`).
    pub section: String,
    /// First instruction index in the section.
    pub start: usize,
    /// Number of instruction slots (`ld_imm64` takes two).
    pub len: usize,
    /// Deepest byte below `r10` touched or pointed at, rounded up to whole 8-byte slots as
    /// the verifier counts them (0: no stack).
    pub depth: u32,
    /// True when an `r10`-derived pointer was moved by a non-constant amount: its accesses
    /// could not be bounded statically (the verifier then counts what it sees).
    pub variable_offset: bool,
    /// Calls and callbacks, in instruction order.
    pub calls: Vec<Reference>,
    /// Kernel helpers it calls (`BPF_FUNC_*` ids: `call` with src_reg 0), in order, once each.
    pub helpers: Vec<u32>,
}

impl Function {
    /// True for a program's entry (a function outside `.text`).
    pub fn is_program(&self) -> bool {
        self.section != ".text"
    }

    /// What this frame counts for in a chain: `round_up(max(depth, 1), 32)`.
    pub fn frame(&self) -> u32 {
        frame_size(self.depth)
    }
}

/// A worst chain below a function: its total, and the functions from it down, each with how
/// it was reached.
type Worst = (u32, Vec<(usize, Option<Edge>)>);

/// `round_up(max(depth, 1), 32)`: what one frame counts for in a call chain.
pub fn frame_size(depth: u32) -> u32 {
    depth.max(1).div_ceil(FRAME_GRANULE) * FRAME_GRANULE
}

/// One frame of a call chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Index in [`Analysis::functions`].
    pub function: usize,
    /// Function name.
    pub name: String,
    /// Its stack depth.
    pub depth: u32,
    /// What it counts for ([`frame_size`]).
    pub counted: u32,
    /// How it was reached from the previous frame (`None` for the program itself).
    pub via: Option<Edge>,
}

/// A program's worst call chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Program (function) name.
    pub program: String,
    /// Its section (`tp_btf/sys_exit`).
    pub section: String,
    /// The frames, program first.
    pub frames: Vec<Frame>,
    /// Sum of the counted frames.
    pub total: u32,
}

impl Chain {
    /// True when the chain fits the verifier's limits on every kernel: total within
    /// [`MAX_STACK`], at most [`MAX_FRAMES`] frames.
    pub fn fits(&self) -> bool {
        self.total <= MAX_STACK && self.frames.len() <= MAX_FRAMES
    }

    /// `rt_sys_exit→on_data`: the chain's function names.
    pub fn path(&self) -> String {
        let names: Vec<&str> = self.frames.iter().map(|f| f.name.as_str()).collect();
        names.join("→")
    }
}

impl fmt::Display for Chain {
    /// `rt_sys_exit (tp_btf/sys_exit): rt_sys_exit 352 → on_data 352 = 704/512 bytes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.program, self.section)?;
        for (i, fr) in self.frames.iter().enumerate() {
            if i > 0 {
                let arrow = match fr.via {
                    Some(Edge::Callback) => " ⇒ ",
                    _ => " → ",
                };
                f.write_str(arrow)?;
            }
            write!(f, "{} {}", fr.name, fr.counted)?;
            if fr.counted != fr.depth {
                write!(f, " (depth {})", fr.depth)?;
            }
        }
        write!(f, " = {}/{MAX_STACK} bytes", self.total)?;
        if self.frames.len() > MAX_FRAMES {
            write!(f, ", {} frames > {MAX_FRAMES}", self.frames.len())?;
        }
        Ok(())
    }
}

/// Every function of a BPF object, with its frame and its calls.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    /// Programs and subprograms, in section then address order.
    pub functions: Vec<Function>,
}

impl Analysis {
    /// Analyzes a BPF ELF object (e.g. [`crate::object`]).
    pub fn from_elf(bytes: &[u8]) -> Result<Self, StackError> {
        let file = object::File::parse(bytes)?;
        // Functions per executable section, by start byte.
        let mut by_section: BTreeMap<usize, BTreeMap<u64, (String, u64)>> = BTreeMap::new();
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Text {
                continue;
            }
            let Some(sec) = sym.section_index() else {
                continue;
            };
            let name = sym.name()?.to_string();
            by_section
                .entry(sec.0)
                .or_default()
                .insert(sym.address(), (name, sym.size()));
        }
        let mut functions = Vec::new();
        // (section index, start byte) -> function index
        let mut index: BTreeMap<(usize, u64), usize> = BTreeMap::new();
        let mut sections = Vec::new();
        for section in file.sections() {
            if section.kind() != SectionKind::Text {
                continue;
            }
            let Some(funcs) = by_section.get(&section.index().0) else {
                continue;
            };
            let name = section.name()?.to_string();
            let data = section.data()?;
            if data.len() % INSN != 0 {
                return Err(StackError::Truncated(name));
            }
            let slots = data.len() / INSN;
            let starts: Vec<u64> = funcs.keys().copied().collect();
            for (k, (&addr, (fname, size))) in funcs.iter().enumerate() {
                let start = usize::try_from(addr).unwrap_or(usize::MAX) / INSN;
                let end = if *size > 0 {
                    start + usize::try_from(*size).unwrap_or(0) / INSN
                } else {
                    starts
                        .get(k + 1)
                        .map_or(slots, |&a| usize::try_from(a).unwrap_or(0) / INSN)
                };
                index.insert((section.index().0, addr), functions.len());
                functions.push(Function {
                    name: fname.clone(),
                    section: name.clone(),
                    start,
                    len: end.min(slots).saturating_sub(start),
                    depth: 0,
                    variable_offset: false,
                    calls: Vec::new(),
                    helpers: Vec::new(),
                });
            }
            sections.push(section.index());
        }

        // Second pass: decode each function, resolve its references.
        for sec_index in sections {
            let section = file.section_by_index(sec_index)?;
            let sec_name = section.name()?.to_string();
            let data = section.data()?;
            // relocations of this section: instruction index -> (target section, symbol value)
            let mut relocs: BTreeMap<usize, (Option<usize>, u64)> = BTreeMap::new();
            for (offset, rel) in section.relocations() {
                let target = match rel.target() {
                    RelocationTarget::Symbol(si) => {
                        let sym = file.symbol_by_index(si)?;
                        (sym.section_index().map(|s| s.0), sym.address())
                    }
                    RelocationTarget::Section(si) => (Some(si.0), 0),
                    _ => (None, 0),
                };
                relocs.insert(usize::try_from(offset).unwrap_or(usize::MAX) / INSN, target);
            }
            let members: Vec<usize> = (0..functions.len())
                .filter(|&i| functions[i].section == sec_name)
                .collect();
            for fi in members {
                let (start, len) = (functions[fi].start, functions[fi].len);
                let insns = decode(data, start, len);
                let (depth, variable) = frame_depth(&insns);
                let mut calls = Vec::new();
                let mut helpers = BTreeSet::new();
                for ins in &insns {
                    let at = start + ins.slot;
                    if ins.code == 0x85 && ins.src == 0 {
                        helpers.insert(ins.imm.unsigned_abs());
                    }
                    // (target section, target byte, edge)
                    let target = match (ins.code, relocs.get(&at)) {
                        // a call relocated against an undefined (extern) symbol is a kfunc
                        // call (libbpf makes it `BPF_PSEUDO_KFUNC_CALL`): it runs on the
                        // kernel's stack, not a BPF frame of the chain
                        (0x85, Some(&(None, _))) if ins.src == 1 => None,
                        (0x85, reloc) if ins.src == 1 => {
                            let (sec, base) = match reloc {
                                Some(&(sec, value)) => (sec, i64::try_from(value).unwrap_or(0)),
                                None => (Some(sec_index.0), 0),
                            };
                            let slot = match reloc {
                                Some(_) => base / INSN as i64 + i64::from(ins.imm) + 1,
                                None => at as i64 + i64::from(ins.imm) + 1,
                            };
                            Some((sec, slot * INSN as i64, Edge::Call))
                        }
                        (0x18, Some(&(Some(sec), value)))
                            if by_section.contains_key(&sec) && ins.src != 2 =>
                        {
                            let byte = i64::try_from(value).unwrap_or(0) + i64::from(ins.imm);
                            Some((Some(sec), byte, Edge::Callback))
                        }
                        (0x18, None) if ins.src == 4 => {
                            let slot = at as i64 + i64::from(ins.imm) + 1;
                            Some((Some(sec_index.0), slot * INSN as i64, Edge::Callback))
                        }
                        _ => None,
                    };
                    let Some((sec, byte, edge)) = target else {
                        continue;
                    };
                    let callee = sec
                        .zip(u64::try_from(byte).ok())
                        .and_then(|(s, b)| index.get(&(s, b)).copied());
                    let Some(callee) = callee else {
                        let section = sec
                            .and_then(|s| file.section_by_index(object::SectionIndex(s)).ok())
                            .and_then(|s| s.name().ok().map(str::to_string))
                            .unwrap_or_else(|| "?".into());
                        return Err(StackError::BadTarget {
                            function: functions[fi].name.clone(),
                            insn: at,
                            section,
                            target: byte,
                        });
                    };
                    calls.push(Reference {
                        callee,
                        edge,
                        insn: at,
                    });
                }
                let f = &mut functions[fi];
                f.depth = depth;
                f.variable_offset = variable;
                f.calls = calls;
                f.helpers = helpers.into_iter().collect();
            }
        }
        Ok(Self { functions })
    }

    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The programs (functions outside `.text`), in object order.
    pub fn programs(&self) -> impl Iterator<Item = (usize, &Function)> {
        self.functions
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_program())
    }

    /// The worst call chain of the function at `root` (a program): the one whose counted
    /// frames sum highest (on a tie, the one with more frames).
    pub fn worst_chain(&self, root: usize) -> Result<Chain, StackError> {
        let mut memo: BTreeMap<usize, Worst> = BTreeMap::new();
        let mut on_path = Vec::new();
        let (total, path) = self.worst_from(root, &mut memo, &mut on_path)?;
        let mut frames = Vec::with_capacity(path.len() + 1);
        let root_f = &self.functions[root];
        frames.push(Frame {
            function: root,
            name: root_f.name.clone(),
            depth: root_f.depth,
            counted: root_f.frame(),
            via: None,
        });
        for (fi, via) in path.into_iter().skip(1) {
            let f = &self.functions[fi];
            frames.push(Frame {
                function: fi,
                name: f.name.clone(),
                depth: f.depth,
                counted: f.frame(),
                via,
            });
        }
        Ok(Chain {
            program: root_f.name.clone(),
            section: root_f.section.clone(),
            frames,
            total,
        })
    }

    /// The worst chain from `fi` down.
    fn worst_from(
        &self,
        fi: usize,
        memo: &mut BTreeMap<usize, Worst>,
        on_path: &mut Vec<usize>,
    ) -> Result<Worst, StackError> {
        if let Some(done) = memo.get(&fi) {
            return Ok(done.clone());
        }
        if on_path.contains(&fi) {
            let mut names: Vec<&str> = on_path
                .iter()
                .map(|&i| self.functions[i].name.as_str())
                .collect();
            names.push(self.functions[fi].name.as_str());
            return Err(StackError::Recursion(names.join("→")));
        }
        on_path.push(fi);
        let f = &self.functions[fi];
        let mut best: Worst = (0, Vec::new());
        let mut seen = BTreeSet::new();
        for call in &f.calls {
            if !seen.insert((call.callee, call.edge)) {
                continue;
            }
            let (t, mut p) = self.worst_from(call.callee, memo, on_path)?;
            if let Some(first) = p.first_mut() {
                first.1 = Some(call.edge);
            }
            if t > best.0 || (t == best.0 && p.len() > best.1.len()) {
                best = (t, p);
            }
        }
        on_path.pop();
        let mut path = vec![(fi, None)];
        path.extend(best.1);
        let result = (f.frame() + best.0, path);
        memo.insert(fi, result.clone());
        Ok(result)
    }

    /// The worst chain of every program, in object order.
    pub fn chains(&self) -> Result<Vec<Chain>, StackError> {
        self.programs().map(|(i, _)| self.worst_chain(i)).collect()
    }

    /// The functions of program `root` in the order libbpf lays them out when it loads it
    /// (`bpf_object__reloc_code`): the program, then, depth first, each subprogram appended
    /// when first referenced (and its own references relocated at once), in instruction order.
    /// That is the order of the verifier's subprograms, and so of its `stack depth A+B+C`
    /// statistics line.
    pub fn libbpf_order(&self, root: usize) -> Vec<usize> {
        fn visit(a: &Analysis, f: usize, order: &mut Vec<usize>) {
            let mut refs: Vec<&Reference> = a.functions[f].calls.iter().collect();
            refs.sort_by_key(|r| r.insn);
            for r in refs {
                if !order.contains(&r.callee) {
                    order.push(r.callee);
                    visit(a, r.callee, order);
                }
            }
        }
        let mut order = vec![root];
        visit(self, root, &mut order);
        order
    }
}

/// Analyzes `bytes` and returns every program's worst chain (see [`Analysis::chains`]).
pub fn chains(bytes: &[u8]) -> Result<Vec<Chain>, StackError> {
    Analysis::from_elf(bytes)?.chains()
}

/// The worst chains of every object the crate embeds ([`crate::objects`]).
pub fn embedded_chains() -> Result<Vec<Chain>, StackError> {
    let mut all = Vec::new();
    for (_, bytes) in crate::objects() {
        all.extend(chains(bytes)?);
    }
    Ok(all)
}

/// The per-subprogram depths of the verifier's statistics line `stack depth 352+352+0`
/// (printed with log level `BPF_LOG_STATS`, 4), or `None` when the log has none.
pub fn verifier_stack_depths(log: &str) -> Option<Vec<u32>> {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("stack depth "))?;
    line.trim()
        .split('+')
        .map(|d| d.trim().parse().ok())
        .collect()
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug)]
struct Insn {
    /// Slot index within the function.
    slot: usize,
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
    /// Slots taken (2 for `ld_imm64`).
    width: usize,
}

fn decode(data: &[u8], start: usize, len: usize) -> Vec<Insn> {
    let mut out = Vec::with_capacity(len);
    let mut slot = 0;
    while slot < len {
        let at = (start + slot) * INSN;
        let Some(b) = data.get(at..at + INSN) else {
            break;
        };
        let code = b[0];
        let width = if code == 0x18 { 2 } else { 1 };
        out.push(Insn {
            slot,
            code,
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            width,
        });
        slot += width;
    }
    out
}

/// What a register holds, as far as the stack is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// Nothing known (or not a stack pointer).
    Unknown,
    /// A known scalar (`r2 = 8`), so that `r1 += r2` stays a constant move.
    Const(i64),
    /// May hold `r10 + k` (the lowest such `k` over the paths reaching here).
    Fp(i64),
}

type Regs = [Val; 11];

fn merge(into: &mut Regs, from: &Regs) -> bool {
    let mut changed = false;
    for (a, b) in into.iter_mut().zip(from) {
        let m = match (*a, *b) {
            (Val::Fp(x), Val::Fp(y)) => Val::Fp(x.min(y)),
            // a pointer on one path only: keep it, its accesses count
            (Val::Fp(x), _) | (_, Val::Fp(x)) => Val::Fp(x),
            (x, y) if x == y => x,
            _ => Val::Unknown,
        };
        if m != *a {
            *a = m;
            changed = true;
        }
    }
    changed
}

/// The deepest byte below `r10` the function touches or points at, and whether an
/// `r10`-derived pointer was moved by a variable amount. A forward data-flow over the
/// function's control flow (jumps within it): registers holding `r10 + constant` are followed
/// through moves and constant adds (constants included); where paths join, the lowest offset
/// is kept, and a pointer on any path counts.
fn frame_depth(insns: &[Insn]) -> (u32, bool) {
    fn note(addr: i64, deepest: &mut i64) {
        if addr < *deepest {
            *deepest = addr;
        }
    }
    if insns.is_empty() {
        return (0, false);
    }
    let by_slot: BTreeMap<usize, usize> =
        insns.iter().enumerate().map(|(i, x)| (x.slot, i)).collect();
    let mut state: Vec<Option<Regs>> = vec![None; insns.len()];
    let mut entry: Regs = [Val::Unknown; 11];
    entry[10] = Val::Fp(0);
    state[0] = Some(entry);
    let mut work = vec![0usize];
    let mut deepest: i64 = 0;
    let mut variable = false;
    while let Some(i) = work.pop() {
        let Some(mut r) = state[i] else { continue };
        let ins = insns[i];
        let (dst, src) = (usize::from(ins.dst).min(10), usize::from(ins.src).min(10));
        let class = ins.code & 0x07;
        let mut next: Vec<usize> = Vec::with_capacity(2);
        let fallthrough = by_slot.get(&(ins.slot + ins.width)).copied();
        let imm = i64::from(ins.imm);
        match class {
            // LD: ld_imm64 (and legacy packet loads, which clobber r0-r5)
            0x00 => {
                if ins.code == 0x18 {
                    r[dst] = Val::Unknown;
                } else {
                    r[..6].fill(Val::Unknown);
                }
                next.extend(fallthrough);
            }
            // LDX
            0x01 => {
                if let Val::Fp(base) = r[src] {
                    note(base + i64::from(ins.off), &mut deepest);
                }
                r[dst] = Val::Unknown;
                next.extend(fallthrough);
            }
            // ST, STX
            0x02 | 0x03 => {
                if let Val::Fp(base) = r[dst] {
                    note(base + i64::from(ins.off), &mut deepest);
                }
                if class == 0x03 && ins.code & 0xe0 == 0xc0 {
                    // atomic: the fetching ones write src (or r0 for cmpxchg)
                    r[src] = Val::Unknown;
                    r[0] = Val::Unknown;
                }
                next.extend(fallthrough);
            }
            // ALU64, ALU
            0x04 | 0x07 => {
                let op = ins.code & 0xf0;
                let by_reg = ins.code & 0x08 != 0;
                let operand = if by_reg { r[src] } else { Val::Const(imm) };
                let value = match (class, op, r[dst], operand) {
                    (0x07, 0xb0, _, v) if ins.off == 0 => v, // mov
                    (0x04, 0xb0, _, Val::Const(c)) if ins.off == 0 => {
                        Val::Const(i64::from(c as u32)) // mov32
                    }
                    (0x07, 0x00, Val::Fp(p), Val::Const(c)) => Val::Fp(p + c), // add
                    (0x07, 0x00, Val::Const(c), Val::Fp(p)) => Val::Fp(p + c),
                    (0x07, 0x10, Val::Fp(p), Val::Const(c)) => Val::Fp(p - c), // sub
                    (0x07, 0x00, Val::Const(a), Val::Const(b)) => Val::Const(a.wrapping_add(b)),
                    (0x07, 0x10, Val::Const(a), Val::Const(b)) => Val::Const(a.wrapping_sub(b)),
                    (_, _, d, o) => {
                        if let Val::Fp(p) = d {
                            variable = true;
                            note(p, &mut deepest);
                        } else if let (true, Val::Fp(p)) = (by_reg, o) {
                            variable = true;
                            note(p, &mut deepest);
                        }
                        Val::Unknown
                    }
                };
                let value = match value {
                    Val::Fp(v) if v.abs() > TRACK_LIMIT => {
                        variable = true;
                        Val::Unknown
                    }
                    v => v,
                };
                if let Val::Fp(v) = value {
                    note(v, &mut deepest);
                }
                if dst != 10 {
                    r[dst] = value;
                }
                next.extend(fallthrough);
            }
            // JMP, JMP32
            _ => match ins.code & 0xf0 {
                0x80 => {
                    // call: r0-r5 clobbered
                    r[..6].fill(Val::Unknown);
                    next.extend(fallthrough);
                }
                0x90 => {} // exit
                0x00 => {
                    // ja (gotol, in JMP32, takes imm)
                    let d = if class == 0x06 {
                        imm
                    } else {
                        i64::from(ins.off)
                    };
                    next.extend(jump(&by_slot, ins, d));
                }
                _ => {
                    next.extend(fallthrough);
                    next.extend(jump(&by_slot, ins, i64::from(ins.off)));
                }
            },
        }
        for n in next {
            let changed = match &mut state[n] {
                Some(s) => merge(s, &r),
                slot @ None => {
                    *slot = Some(r);
                    true
                }
            };
            if changed {
                work.push(n);
            }
        }
    }
    // whole 8-byte slots, as the verifier counts them
    let depth = u32::try_from(-deepest.max(-TRACK_LIMIT)).unwrap_or(u32::MAX);
    (depth.next_multiple_of(8), variable)
}

fn jump(by_slot: &BTreeMap<usize, usize>, ins: Insn, delta: i64) -> Option<usize> {
    let target = i64::try_from(ins.slot).ok()? + delta + 1;
    by_slot.get(&usize::try_from(target).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[1] = dst | (src << 4);
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        b
    }

    fn depth_of(code: &[[u8; 8]]) -> (u32, bool) {
        let data: Vec<u8> = code.iter().flatten().copied().collect();
        frame_depth(&decode(&data, 0, code.len()))
    }

    #[test]
    fn frames_round_to_32_and_never_count_zero() {
        assert_eq!(frame_size(0), 32);
        assert_eq!(frame_size(1), 32);
        assert_eq!(frame_size(32), 32);
        assert_eq!(frame_size(33), 64);
        assert_eq!(frame_size(344), 352);
    }

    #[test]
    fn depth_from_stores_loads_and_address_computations() {
        // *(u64 *)(r10 - 8) = r1; r0 = *(u32 *)(r10 - 12); exit
        assert_eq!(
            depth_of(&[
                insn(0x7b, 10, 1, -8, 0),
                insn(0x61, 0, 10, -12, 0),
                insn(0x95, 0, 0, 0, 0)
            ]),
            (16, false)
        );
        // r2 = r10; r2 += -200; call 1 (helper); exit: the buffer handed to a helper counts
        assert_eq!(
            depth_of(&[
                insn(0xbf, 2, 10, 0, 0),
                insn(0x07, 2, 0, 0, -200),
                insn(0x85, 0, 0, 0, 1),
                insn(0x95, 0, 0, 0, 0)
            ]),
            (200, false)
        );
        // r3 = r10; r3 += -64; r4 = r3; *(u8 *)(r4 - 100) = 1: followed through moves
        assert_eq!(
            depth_of(&[
                insn(0xbf, 3, 10, 0, 0),
                insn(0x07, 3, 0, 0, -64),
                insn(0xbf, 4, 3, 0, 0),
                insn(0x72, 4, 0, -100, 1),
                insn(0x95, 0, 0, 0, 0)
            ]),
            (168, false)
        );
        // a helper call clobbers r1-r5: r1 no longer points into the stack after it
        assert_eq!(
            depth_of(&[
                insn(0xbf, 1, 10, 0, 0),
                insn(0x85, 0, 0, 0, 1),
                insn(0x72, 1, 0, -300, 1),
                insn(0x95, 0, 0, 0, 0)
            ]),
            (0, false)
        );
    }

    #[test]
    fn depth_follows_branches_and_skips_ld_imm64_halves() {
        // if r1 == 0 goto +2; r2 = r10; goto +1; r2 = 0 ll (2 slots)...
        // r2 is an r10 copy on one path only: the store through it still counts
        assert_eq!(
            depth_of(&[
                insn(0x15, 1, 0, 3, 0),   // 0: if r1 == 0 goto 4
                insn(0xbf, 2, 10, 0, 0),  // 1: r2 = r10
                insn(0x05, 0, 0, 3, 0),   // 2: goto 6
                insn(0x95, 0, 0, 0, 0),   // 3: (dead) exit
                insn(0x18, 3, 0, 0, 0),   // 4: r3 = imm64 ...
                insn(0x00, 0, 0, 0, 0),   //    ... second half
                insn(0x72, 2, 0, -40, 1), // 6: *(u8 *)(r2 - 40) = 1
                insn(0x95, 0, 0, 0, 0),   // 7: exit
            ]),
            (40, false)
        );
        // r1 = r10; r2 = 8; r1 += r2; *(u8 *)(r1 - 100) = 0: a known constant moves it
        assert_eq!(
            depth_of(&[
                insn(0xbf, 1, 10, 0, 0),
                insn(0xb7, 2, 0, 0, 8),
                insn(0x0f, 1, 2, 0, 0),
                insn(0x72, 1, 0, -100, 0),
                insn(0x95, 0, 0, 0, 0)
            ]),
            (96, false)
        );
        // r1 = r10; r1 += r2 (unknown): a variable offset is flagged
        assert!(
            depth_of(&[
                insn(0xbf, 1, 10, 0, 0),
                insn(0x0f, 1, 2, 0, 0),
                insn(0x95, 0, 0, 0, 0)
            ])
            .1
        );
    }

    #[test]
    fn verifier_stats_line_parses() {
        let log = "processed 1234 insns (limit 1000000) max_states_per_insn 4\n\
                   verification time 900 usec\nstack depth 352+352+0\n";
        assert_eq!(verifier_stack_depths(log), Some(vec![352, 352, 0]));
        assert_eq!(verifier_stack_depths("stack depth 8\n"), Some(vec![8]));
        assert_eq!(verifier_stack_depths("nothing here"), None);
    }

    fn chain_of(depths: &[u32], calls: &[(usize, usize, Edge)]) -> Analysis {
        let functions = depths
            .iter()
            .enumerate()
            .map(|(i, &d)| Function {
                name: format!("f{i}"),
                section: if i == 0 {
                    "tp_btf/x".into()
                } else {
                    ".text".into()
                },
                start: 0,
                len: 1,
                depth: d,
                variable_offset: false,
                helpers: Vec::new(),
                calls: calls
                    .iter()
                    .filter(|c| c.0 == i)
                    .enumerate()
                    .map(|(k, c)| Reference {
                        callee: c.1,
                        edge: c.2,
                        insn: k,
                    })
                    .collect(),
            })
            .collect();
        Analysis { functions }
    }

    #[test]
    fn worst_chain_takes_the_deepest_path_and_counts_callbacks() {
        // f0(344) calls f1(8) and f2(100); f1 hands f3(300) to bpf_loop
        let a = chain_of(
            &[344, 8, 100, 300],
            &[
                (0, 1, Edge::Call),
                (0, 2, Edge::Call),
                (1, 3, Edge::Callback),
            ],
        );
        let c = a.worst_chain(0).expect("no recursion");
        assert_eq!(c.path(), "f0→f1→f3");
        assert_eq!(c.total, 352 + 32 + 320);
        assert!(!c.fits());
        assert_eq!(
            c.to_string(),
            "f0 (tp_btf/x): f0 352 (depth 344) → f1 32 (depth 8) ⇒ f3 320 (depth 300) = 704/512 bytes"
        );
        // depth first, as libbpf appends them: f1, then f1's callback f3, then f2
        assert_eq!(a.libbpf_order(0), vec![0, 1, 3, 2]);
        let small = chain_of(&[0], &[]);
        assert_eq!(small.worst_chain(0).expect("chain").total, 32);
    }

    #[test]
    fn recursion_is_an_error() {
        let a = chain_of(&[8, 8], &[(0, 1, Edge::Call), (1, 1, Edge::Call)]);
        assert!(matches!(a.worst_chain(0), Err(StackError::Recursion(_))));
    }
}
