//! retrace's capture format: the one crate that knows the bytes on disk.
//!
//! # Types
//!
//! - [`event`]: the versioned event model, everything a capture can hold.
//! - [`SegmentWriter`] writes one segment file; [`CaptureWriter`] writes a capture directory
//!   (segments + `manifest.json`), rotating, keeping a ring, honouring pins and a hard quota.
//! - [`SegmentReader`] reads one segment, validating everything, recovering a torn tail up to
//!   the last whole block and reporting the loss as [`Damage`]; [`Capture`] opens a directory
//!   or a single segment. Blocks are read whole ([`SegmentReader::read_block`]), into a
//!   reused vector ([`SegmentReader::read_block_into`]), streamed one owned event at a time
//!   ([`SegmentReader::for_each_event`]) or lent one event at a time, decoded in place with
//!   no allocation per event ([`SegmentReader::visit_events`], the fastest).
//!
//! # Format version 1 (full spec: `docs/format.md`)
//!
//! Design constraints: a capture stays readable for years, survives a crash of the writer's
//! machine, and is safe to open when it comes from someone else. Hence: versioned, framed,
//! checksummed, every length bounded, every archive validated before use, no `unsafe`.
//!
//! ```text
//! segment = prefix header-body block* [footer trailer]      all integers little-endian
//! prefix (32 B)  magic "\x89RTRC\r\n\x1a" | format_version u16 | min_reader_version u16
//!                | layout u32 (rkyv: 1 little-endian | 2 aligned | 4 32-bit pointers)
//!                | body_len u32 | body_uncompressed_len u32 | body_crc32 u32 | prefix_crc32 u32
//! header-body    zstd(rkyv(HeaderBodyV1)): capture id, seq, node, clock, streams, writer,
//!                StateSnapshot (processes, listening sockets, open connections at the start)
//! frame (40 B)   tag "RBLK"|"RFTR" | compressed_len u32 | uncompressed_len u32 | events u32
//!                | min_ts u64 | max_ts u64 | payload_crc32 u32 | frame_header_crc32 u32
//!                then compressed_len bytes of payload
//! block payload  zstd(rkyv(BlockV1)): columnar batch of events (below)
//! footer payload zstd(rkyv(FooterV1)): block index (offset, lengths, events, min/max ts),
//!                events per kind
//! trailer (16 B) footer_offset u64 | crc32(footer_offset) u32 | "REND"
//! ```
//!
//! Versions: bytes 0..12 are frozen forever. A reader accepts a file when
//! `format_version >= OLDEST_READABLE_VERSION` and `min_reader_version <= FORMAT_VERSION`,
//! else [`SegmentError::UnsupportedVersion`] names both. A writer may leave
//! `min_reader_version` below its own version only for additive changes.
//!
//! Blocks are columnar (module [`columns`]): an order column with each event's kind in
//! append order, zigzag varint timestamp deltas, one byte stream per field of each kind,
//! strings as dictionary ids, connections and endpoints as block-local tables defined on
//! first use, payload prefixes together. The reader walks the order column, so events come
//! back exactly in the order they were appended.
//!
//! Recovery rules: a block is written whole with one `write`, so a process killed at any
//! moment leaves every block written before it readable; each is then fdatasync'ed on a
//! thread of the writer's own (`syncer.rs`: the writer never waits for the disk, whose stalls
//! would hold the next blocks in memory, where a `kill -9` loses them), so after a machine
//! crash every block flushed (`CaptureWriter::flush`, sealing) stays readable too. Opening reads the prefix, the header body and the 40-byte
//! frame headers only. A bad prefix rejects the file; a damaged header body is reported as
//! [`Damage`] and the blocks are still read. A frame that is cut short, has a bad frame-header CRC, an unknown tag
//! or an absurd length ends the scan: the blocks before it are returned, the rest is
//! reported as [`Damage`] with the bytes lost. When the segment is sealed (valid trailer and
//! footer), the footer's index lets the scan skip a damaged frame and go on with the next
//! indexed block. A bad payload CRC, a failed decompression or an invalid archive fails
//! only [`SegmentReader::read_block`] for that block.
//!
//! Limits (checked before any allocation): header body ≤ 64 MiB, block ≤ 64 MiB
//! uncompressed (≤ 65 MiB compressed), events per block ≤ its uncompressed length and ≤ 2^20,
//! footer ≤ 64 MiB; counts inside a block are bounded by the bytes of their stream.
//!
//! A capture directory holds `<capture-start-utc>-<seq>.rseg` segments (mode 0600, the
//! directory 0700) and `manifest.json` (rewritten atomically: temporary file, fsync,
//! rename, directory fsync).

pub mod capture;
pub mod columns;
pub mod error;
// rkyv's derived resolver for enums with struct variants (`TcpStepResolver`) has fields
// without docs that no attribute reaches; every item written by hand in `event` is documented.
#[allow(missing_docs)]
pub mod event;
pub mod format;
pub mod manifest;
pub mod reader;
pub mod state;
mod syncer;
pub mod writer;

pub use capture::{
    clock_now, utc_stamp, Capture, CaptureOptions, CaptureWriter, Keep, WriterStats,
};
pub use error::{Damage, SegmentError};
pub use event::*;
pub use format::{FORMAT_VERSION, OLDEST_READABLE_VERSION};
pub use manifest::{Manifest, ManifestSegment, Restart, Totals, MANIFEST_FILE};
pub use reader::SegmentReader;
pub use state::StateTracker;
pub use writer::{
    encode_header, BlockInfo, EncodedBlock, SealSummary, SegmentHeader, SegmentWriter,
    SegmentWriterOptions,
};
