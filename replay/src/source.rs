//! What the merge needs from the inputs, as two small traits: an [`InputSource`] (a capture
//! directory or one segment file: an ordered list of segments, opened on demand) and a
//! [`SegmentSource`] (one open segment: header facts, block index, blocks on request).
//!
//! [`crate::Replay`] works on these traits, so the merge can be tested on in-memory inputs and
//! does not depend on how `retrace-segment` lays out its types.

use std::path::{Path, PathBuf};

use retrace_segment::{ClockSync, Event, StateSnapshot};

/// One block of a segment, as listed in its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockMeta {
    /// Offset in the file.
    pub offset: u64,
    /// Bytes on disk.
    pub compressed_len: u64,
    /// Bytes once decompressed.
    pub uncompressed_len: u64,
    /// Events in the block.
    pub events: u64,
    /// Smallest event timestamp (monotonic ns).
    pub min_ts: u64,
    /// Largest event timestamp (monotonic ns).
    pub max_ts: u64,
}

/// Damage found in an input: what could not be read, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DamageInfo {
    /// The file.
    pub path: PathBuf,
    /// Offset of the first byte that could not be read.
    pub offset: u64,
    /// Bytes that could not be read.
    pub bytes_lost: u64,
    /// Why.
    pub message: String,
}

impl std::fmt::Display for DamageInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} at offset {} ({} bytes lost)",
            self.path.display(),
            self.message,
            self.offset,
            self.bytes_lost
        )
    }
}

/// Facts from a capture's manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestFacts {
    /// Node name.
    pub node: String,
    /// When the capture started (wall ns).
    pub started_wall_ns: u64,
    /// When it ended (wall ns), when it was closed.
    pub ended_wall_ns: Option<u64>,
    /// Events dropped, as totalled by the writer (loss markers and quota drops).
    pub dropped: u64,
    /// The same, by kind name.
    pub dropped_by_kind: std::collections::BTreeMap<String, u64>,
    /// Events written, as totalled by the writer.
    pub events: u64,
    /// Segments listed in the manifest that are not on disk.
    pub missing_segments: Vec<String>,
    /// Restarts of the capture in its directory (after a clean stop or a crash).
    pub restarts: Vec<retrace_segment::Restart>,
}

/// One open segment.
pub trait SegmentSource: Send {
    /// The file.
    fn path(&self) -> &Path;
    /// Name of the node that recorded it.
    fn node_name(&self) -> String;
    /// The monotonic→wall mapping recorded in its header.
    fn clock(&self) -> ClockSync;
    /// The state at its start.
    fn state(&self) -> &StateSnapshot;
    /// Its whole blocks, in write order.
    fn blocks(&self) -> Vec<BlockMeta>;
    /// Decodes block `i`: its events in write order.
    fn read_block(&self, i: usize) -> Result<Vec<Event>, String>;
    /// Damage found when opening (a torn tail, ...).
    fn damage(&self) -> Vec<DamageInfo>;
    /// Whether the segment was sealed (footer present).
    fn is_sealed(&self) -> bool;
    /// Size of the file.
    fn file_len(&self) -> u64;
}

/// One input: a capture directory or a single segment file.
pub trait InputSource: Send {
    /// The path given.
    fn path(&self) -> &Path;
    /// Whether the input is one segment file (whose open errors are fatal) rather than a
    /// capture directory (where an unreadable segment is damage).
    fn is_single_file(&self) -> bool;
    /// Number of segments, in time order.
    fn segment_count(&self) -> usize;
    /// Path of segment `i`.
    fn segment_path(&self, i: usize) -> PathBuf;
    /// Size on disk of segment `i` (0 when unknown).
    fn segment_len(&self, i: usize) -> u64;
    /// Opens segment `i`.
    fn open_segment(&self, i: usize) -> Result<Box<dyn SegmentSource>, String>;
    /// Facts from the manifest, when there is one.
    fn manifest(&self) -> Option<ManifestFacts>;
}

#[cfg(test)]
pub(crate) mod mem {
    //! In-memory inputs for tests.

    use super::*;

    /// A segment held in memory: blocks of events; a block may be marked damaged.
    #[derive(Clone, Debug, Default)]
    pub struct MemSegment {
        pub path: PathBuf,
        pub node: String,
        pub clock: ClockSync,
        pub state: StateSnapshot,
        pub blocks: Vec<Result<Vec<Event>, String>>,
        pub sealed: bool,
    }

    impl SegmentSource for MemSegment {
        fn path(&self) -> &Path {
            &self.path
        }
        fn node_name(&self) -> String {
            self.node.clone()
        }
        fn clock(&self) -> ClockSync {
            self.clock
        }
        fn state(&self) -> &StateSnapshot {
            &self.state
        }
        fn blocks(&self) -> Vec<BlockMeta> {
            let mut offset = 100;
            self.blocks
                .iter()
                .map(|b| {
                    let (events, min_ts, max_ts) = match b {
                        Ok(evs) => (
                            evs.len() as u64,
                            evs.iter().map(|e| e.ts).min().unwrap_or(0),
                            evs.iter().map(|e| e.ts).max().unwrap_or(0),
                        ),
                        Err(_) => (0, 0, 0),
                    };
                    let m = BlockMeta {
                        offset,
                        compressed_len: 10 * events + 10,
                        uncompressed_len: 40 * events + 10,
                        events,
                        min_ts,
                        max_ts,
                    };
                    offset += m.compressed_len;
                    m
                })
                .collect()
        }
        fn read_block(&self, i: usize) -> Result<Vec<Event>, String> {
            self.blocks
                .get(i)
                .cloned()
                .unwrap_or_else(|| Err("no such block".into()))
        }
        fn damage(&self) -> Vec<DamageInfo> {
            Vec::new()
        }
        fn is_sealed(&self) -> bool {
            self.sealed
        }
        fn file_len(&self) -> u64 {
            self.blocks().iter().map(|b| b.compressed_len).sum::<u64>() + 100
        }
    }

    /// An input made of in-memory segments; `None` is a segment that fails to open.
    #[derive(Clone, Debug, Default)]
    pub struct MemInput {
        pub path: PathBuf,
        pub segments: Vec<Option<MemSegment>>,
        pub manifest: Option<ManifestFacts>,
        pub single_file: bool,
    }

    impl InputSource for MemInput {
        fn path(&self) -> &Path {
            &self.path
        }
        fn is_single_file(&self) -> bool {
            self.single_file
        }
        fn segment_count(&self) -> usize {
            self.segments.len()
        }
        fn segment_path(&self, i: usize) -> PathBuf {
            self.path.join(format!("{i}.rseg"))
        }
        fn segment_len(&self, i: usize) -> u64 {
            self.segments
                .get(i)
                .and_then(|s| s.as_ref())
                .map_or(0, |s| s.file_len())
        }
        fn open_segment(&self, i: usize) -> Result<Box<dyn SegmentSource>, String> {
            match self.segments.get(i) {
                Some(Some(s)) => Ok(Box::new(s.clone())),
                _ => Err("not a retrace segment".into()),
            }
        }
        fn manifest(&self) -> Option<ManifestFacts> {
            self.manifest.clone()
        }
    }
}
