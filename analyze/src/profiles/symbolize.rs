//! Offline symbolization: the capture's own `Binary` symbol tables name user frames, kernel
//! stacks arrive named; every frame becomes a [`Location`] of a [`Catalog`] shared by the
//! profiles and the pprof export.
//!
//! Definitions are kept per node (ids are unique within a capture's node only); a definition
//! seen again in a later segment keeps the first.

use std::collections::HashMap;

use retrace_segment::{BinaryInfo, Frame, StackDef, StackId, Symbol, UserStack};
use serde::{Deserialize, Serialize};

/// A binary (or the kernel, or anonymous memory) that locations point into.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Mapping {
    /// GNU build id, lower-case hex (empty when unknown).
    pub build_id: String,
    /// Path of the binary as the process mapped it (`[kernel]`, `[anonymous]`).
    pub path: String,
}

impl Mapping {
    /// The file name of the path (what a frame without a symbol is named after).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// One frame: an address in a mapping, and the function it is in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Location {
    /// Index into [`Catalog::mappings`].
    pub mapping: u32,
    /// File offset in the binary (user frames), kernel address, or virtual address for
    /// anonymous memory.
    pub address: u64,
    /// Index into [`Catalog::functions`].
    pub function: u32,
}

/// Functions, mappings and locations of every resolved stack, each stored once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Catalog {
    /// Function names.
    pub functions: Vec<String>,
    /// Binaries.
    pub mappings: Vec<Mapping>,
    /// Frames.
    pub locations: Vec<Location>,
    #[serde(skip)]
    function_ids: HashMap<String, u32>,
    #[serde(skip)]
    location_ids: HashMap<(u32, u64), u32>,
    #[serde(skip)]
    mapping_ids: HashMap<MappingKey, u32>,
}

/// What a mapping is, before it has an index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum MappingKey {
    Binary(u16, u32),
    Kernel,
    Anonymous,
}

impl Catalog {
    /// The name of a location's function.
    pub fn function_of(&self, loc: u32) -> &str {
        self.locations
            .get(loc as usize)
            .and_then(|l| self.functions.get(l.function as usize))
            .map_or("[unknown]", String::as_str)
    }

    fn function(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.function_ids.get(name) {
            return i;
        }
        let i = self.functions.len() as u32;
        self.functions.push(name.to_string());
        self.function_ids.insert(name.to_string(), i);
        i
    }

    fn mapping(&mut self, key: MappingKey, make: impl FnOnce() -> Mapping) -> u32 {
        if let Some(&i) = self.mapping_ids.get(&key) {
            return i;
        }
        let i = self.mappings.len() as u32;
        self.mappings.push(make());
        self.mapping_ids.insert(key, i);
        i
    }

    fn location(&mut self, mapping: u32, address: u64, name: impl FnOnce() -> String) -> u32 {
        if let Some(&i) = self.location_ids.get(&(mapping, address)) {
            return i;
        }
        let function = self.function(&name());
        let i = self.locations.len() as u32;
        self.locations.push(Location {
            mapping,
            address,
            function,
        });
        self.location_ids.insert((mapping, address), i);
        i
    }
}

/// The name of the function of `symbols` (sorted by offset) that holds `offset`: the last
/// symbol starting at or before it, if its size reaches it (size 0: up to the next symbol).
pub fn symbol_at(symbols: &[Symbol], offset: u64) -> Option<&str> {
    let i = symbols.partition_point(|s| s.offset <= offset);
    // Among symbols at the same offset (aliases), the first listed wins.
    let mut j = i.checked_sub(1)?;
    let start = symbols[j].offset;
    while j > 0 && symbols[j - 1].offset == start {
        j -= 1;
    }
    // The sized alias that reaches `offset`, else an unsized one bounded by the next symbol.
    let next = symbols.get(i).map(|s| s.offset);
    let mut unsized_fits = None;
    for s in &symbols[j..i] {
        if s.size > 0 {
            if offset < s.offset.saturating_add(s.size) {
                return Some(&s.name);
            }
        } else if unsized_fits.is_none() && next.is_none_or(|n| offset < n) {
            unsized_fits = Some(s.name.as_str());
        }
    }
    unsized_fits
}

/// The definitions of a capture (binaries, user stacks, kernel stacks), per node.
#[derive(Default)]
pub(crate) struct Definitions {
    binaries: HashMap<(u16, u32), BinaryInfo>,
    user: HashMap<(u16, StackId), UserStack>,
    kernel: HashMap<(u16, StackId), StackDef>,
}

impl Definitions {
    pub(crate) fn binary(&mut self, node: u16, b: &BinaryInfo) {
        self.binaries
            .entry((node, b.id))
            .or_insert_with(|| b.clone());
    }

    pub(crate) fn user_stack(&mut self, node: u16, s: &UserStack) {
        self.user.entry((node, s.id)).or_insert_with(|| s.clone());
    }

    pub(crate) fn stack_def(&mut self, node: u16, s: &StackDef) {
        self.kernel.entry((node, s.id)).or_insert_with(|| s.clone());
    }

    /// Whether a user stack was truncated by the unwinder.
    pub(crate) fn truncated(&self, node: u16, id: StackId) -> bool {
        self.user.get(&(node, id)).is_some_and(|s| s.truncated)
    }

    /// The locations of user stack `id` then kernel stack `kernel`, innermost first (kernel
    /// frames are the innermost when both are given). A stack the capture never defined is
    /// one `[unknown stack]` frame.
    pub(crate) fn resolve(
        &self,
        cat: &mut Catalog,
        node: u16,
        user: Option<StackId>,
        kernel: Option<StackId>,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        if let Some(k) = kernel {
            self.resolve_kernel(cat, node, k, &mut out);
        }
        if let Some(u) = user {
            self.resolve_user(cat, node, u, &mut out);
        }
        out
    }

    fn unknown_stack(cat: &mut Catalog, out: &mut Vec<u32>) {
        let m = cat.mapping(MappingKey::Anonymous, anonymous);
        out.push(cat.location(m, 0, || "[unknown stack]".to_string()));
    }

    fn resolve_kernel(&self, cat: &mut Catalog, node: u16, id: StackId, out: &mut Vec<u32>) {
        let Some(s) = self.kernel.get(&(node, id)) else {
            return Self::unknown_stack(cat, out);
        };
        let m = cat.mapping(MappingKey::Kernel, || Mapping {
            build_id: String::new(),
            path: "[kernel]".into(),
        });
        for (i, &addr) in s.frames.iter().enumerate() {
            let name = s.symbols.get(i).filter(|n| !n.is_empty());
            out.push(cat.location(m, addr, || match name {
                Some(n) => n.clone(),
                None => format!("0x{addr:x}"),
            }));
        }
    }

    fn resolve_user(&self, cat: &mut Catalog, node: u16, id: StackId, out: &mut Vec<u32>) {
        let Some(s) = self.user.get(&(node, id)) else {
            return Self::unknown_stack(cat, out);
        };
        for f in &s.frames {
            out.push(self.user_frame(cat, node, f));
        }
    }

    fn user_frame(&self, cat: &mut Catalog, node: u16, f: &Frame) -> u32 {
        if f.binary == Frame::UNKNOWN_BINARY {
            let m = cat.mapping(MappingKey::Anonymous, anonymous);
            let addr = f.offset;
            return cat.location(m, addr, || format!("[unknown] 0x{addr:x}"));
        }
        let bin = self.binaries.get(&(node, f.binary));
        let m = cat.mapping(MappingKey::Binary(node, f.binary), || match bin {
            Some(b) => Mapping {
                build_id: b.build_id.clone(),
                path: b.path.clone(),
            },
            None => Mapping {
                build_id: String::new(),
                path: format!("[binary {}]", f.binary),
            },
        });
        let off = f.offset;
        cat.location(m, off, || {
            match bin.and_then(|b| symbol_at(&b.symbols, off)) {
                Some(name) => name.to_string(),
                None => {
                    let file = bin
                        .map(|b| b.path.rsplit('/').next().unwrap_or(&b.path).to_string())
                        .unwrap_or_else(|| format!("[binary {}]", f.binary));
                    format!("{file}+0x{off:x}")
                }
            }
        })
    }
}

fn anonymous() -> Mapping {
    Mapping {
        build_id: String::new(),
        path: "[anonymous]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(offset: u64, size: u64, name: &str) -> Symbol {
        Symbol {
            offset,
            size,
            name: name.into(),
        }
    }

    #[test]
    fn symbol_lookup_by_offset_sizes_and_gaps() {
        let syms = vec![
            sym(0x100, 0x10, "a"),
            sym(0x200, 0, "b_unsized"),
            sym(0x300, 0x20, "c"),
            sym(0x300, 0x20, "c_alias"),
            sym(0x400, 0, "last_unsized"),
        ];
        assert_eq!(symbol_at(&syms, 0x50), None);
        assert_eq!(symbol_at(&syms, 0x100), Some("a"));
        assert_eq!(symbol_at(&syms, 0x10f), Some("a"));
        assert_eq!(symbol_at(&syms, 0x110), None, "past a's size");
        assert_eq!(symbol_at(&syms, 0x2ff), Some("b_unsized"), "up to the next");
        assert_eq!(symbol_at(&syms, 0x305), Some("c"), "first alias");
        assert_eq!(symbol_at(&syms, 0x320), None);
        assert_eq!(symbol_at(&syms, 0x9999), Some("last_unsized"));
        assert_eq!(symbol_at(&[], 0x10), None);
    }

    #[test]
    fn frames_without_symbols_are_named_after_their_binary_or_address() {
        let mut d = Definitions::default();
        d.binary(
            0,
            &BinaryInfo {
                id: 1,
                build_id: "ab".into(),
                path: "/usr/lib/libx.so.1".into(),
                symbols: vec![sym(0x1000, 0x100, "f")],
            },
        );
        d.user_stack(
            0,
            &UserStack {
                id: 7,
                pid: 10,
                frames: vec![
                    Frame {
                        binary: 1,
                        offset: 0x1010,
                    },
                    Frame {
                        binary: 1,
                        offset: 0x5000,
                    },
                    Frame {
                        binary: 2,
                        offset: 0x10,
                    },
                    Frame {
                        binary: Frame::UNKNOWN_BINARY,
                        offset: 0x7f00,
                    },
                ],
                truncated: false,
            },
        );
        // A later definition of the same id is ignored.
        d.user_stack(
            0,
            &UserStack {
                id: 7,
                pid: 10,
                frames: vec![],
                truncated: true,
            },
        );
        let mut cat = Catalog::default();
        let locs = d.resolve(&mut cat, 0, Some(7), None);
        let names: Vec<&str> = locs.iter().map(|&l| cat.function_of(l)).collect();
        assert_eq!(
            names,
            [
                "f",
                "libx.so.1+0x5000",
                "[binary 2]+0x10",
                "[unknown] 0x7f00"
            ]
        );
        assert_eq!(cat.mappings[0].build_id, "ab");
        // Ids are per node: node 1 has no stack 7.
        let locs = d.resolve(&mut cat, 1, Some(7), None);
        assert_eq!(cat.function_of(locs[0]), "[unknown stack]");
    }
}
