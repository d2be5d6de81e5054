//! Byte layout constants and the fixed-size structures of a segment file (see the crate doc
//! and `docs/format.md`): file prefix, frame header, trailer, and the rkyv-archived header
//! body and footer index.
//!
//! **Do not reorder the fields of the archived types in this module**: their archived layout
//! is the on-disk format. Change them only together with [`FORMAT_VERSION`].

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::SegmentError;
use crate::event::{ClockSync, NodeInfo, StateSnapshot};

/// The first eight bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"\x89RTRC\r\n\x1a";
/// The format version this build writes. 2: event kind 16, `thread` ([`crate::ThreadStart`]).
/// 3: the profile kinds 17-24 (`binary`, `ustack`, `malloc`, `free`, `offcpu`, `mem`,
/// `cgroup_mem`, `fault`).
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The oldest reader version that can read the files this build writes (stored in each file):
/// a version 2 reader does not know event kinds 17-24.
pub const MIN_READER_VERSION: u16 = 3;

/// rkyv layout flag: little-endian primitives.
pub const LAYOUT_LITTLE_ENDIAN: u32 = 1;
/// rkyv layout flag: aligned primitives.
pub const LAYOUT_ALIGNED: u32 = 2;
/// rkyv layout flag: 32-bit relative pointers and sizes.
pub const LAYOUT_POINTER_32: u32 = 4;
/// The rkyv layout of this build (pinned by the crate's rkyv features).
pub const LAYOUT: u32 = LAYOUT_LITTLE_ENDIAN | LAYOUT_ALIGNED | LAYOUT_POINTER_32;

/// Size of the fixed file prefix.
pub const PREFIX_LEN: usize = 32;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 40;
/// Size of the trailer that ends a sealed segment.
pub const TRAILER_LEN: usize = 16;

/// Tag of a block frame.
pub const TAG_BLOCK: [u8; 4] = *b"RBLK";
/// Tag of the footer frame.
pub const TAG_FOOTER: [u8; 4] = *b"RFTR";
/// Last four bytes of a sealed segment.
pub const TRAILER_MAGIC: [u8; 4] = *b"REND";

/// Largest header body, compressed or not.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;
/// Largest uncompressed block.
pub const MAX_BLOCK_BYTES: u64 = 64 << 20;
/// Largest compressed block (zstd's worst-case bound for [`MAX_BLOCK_BYTES`], rounded up).
pub const MAX_BLOCK_COMPRESSED: u64 = MAX_BLOCK_BYTES + (1 << 20);
/// Most events in one block (bounds the memory a decoded block takes: 136 bytes per event).
pub const MAX_BLOCK_EVENTS: u32 = 1 << 20;
/// Largest footer, compressed or not.
pub const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// The fixed 32-byte prefix of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Version of the writer.
    pub format_version: u16,
    /// Oldest reader version that can read the file.
    pub min_reader_version: u16,
    /// rkyv layout flags.
    pub layout: u32,
    /// Length of the compressed header body.
    pub body_len: u32,
    /// Length of the header body after decompression.
    pub body_uncompressed_len: u32,
    /// CRC-32 of the compressed header body.
    pub body_crc: u32,
}

impl Prefix {
    /// Encodes the prefix, with the CRC of its first 28 bytes.
    pub fn encode(&self) -> [u8; PREFIX_LEN] {
        let mut b = [0u8; PREFIX_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.format_version.to_le_bytes());
        b[10..12].copy_from_slice(&self.min_reader_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.layout.to_le_bytes());
        b[16..20].copy_from_slice(&self.body_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.body_uncompressed_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a prefix from the start of a file (`bytes` may be shorter than
    /// [`PREFIX_LEN`] when the file is).
    ///
    /// Order of checks: empty, magic, versions (bytes 0..12 are frozen for every version),
    /// length, CRC, layout, body length bounds.
    pub fn decode(bytes: &[u8]) -> Result<Prefix, SegmentError> {
        if bytes.is_empty() {
            return Err(SegmentError::Empty);
        }
        let m = bytes.len().min(MAGIC.len());
        if bytes[..m] != MAGIC[..m] {
            return Err(SegmentError::NotASegment);
        }
        if bytes.len() < 12 {
            return Err(SegmentError::TruncatedHeader {
                needed: PREFIX_LEN as u64,
                available: bytes.len() as u64,
            });
        }
        let format_version = u16::from_le_bytes([bytes[8], bytes[9]]);
        let min_reader_version = u16::from_le_bytes([bytes[10], bytes[11]]);
        if format_version < OLDEST_READABLE_VERSION || min_reader_version > FORMAT_VERSION {
            return Err(SegmentError::UnsupportedVersion {
                found: format_version,
                oldest: OLDEST_READABLE_VERSION,
                newest: FORMAT_VERSION,
            });
        }
        if bytes.len() < PREFIX_LEN {
            return Err(SegmentError::TruncatedHeader {
                needed: PREFIX_LEN as u64,
                available: bytes.len() as u64,
            });
        }
        let stored = le_u32(bytes, 28);
        let computed = crc32fast::hash(&bytes[0..28]);
        if stored != computed {
            return Err(SegmentError::BadChecksum {
                what: "header",
                offset: 0,
                stored,
                computed,
            });
        }
        let layout = le_u32(bytes, 12);
        if layout != LAYOUT {
            return Err(SegmentError::UnsupportedLayout {
                found: layout,
                expected: LAYOUT,
            });
        }
        let p = Prefix {
            format_version,
            min_reader_version,
            layout,
            body_len: le_u32(bytes, 16),
            body_uncompressed_len: le_u32(bytes, 20),
            body_crc: le_u32(bytes, 24),
        };
        for (what, len) in [
            ("header body", p.body_len),
            ("header body (uncompressed)", p.body_uncompressed_len),
        ] {
            if u64::from(len) > MAX_HEADER_BYTES {
                return Err(SegmentError::AbsurdLength {
                    what,
                    offset: 0,
                    len: u64::from(len),
                    limit: MAX_HEADER_BYTES,
                });
            }
        }
        Ok(p)
    }
}

/// The fixed 40-byte header in front of every block and of the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// [`TAG_BLOCK`] or [`TAG_FOOTER`].
    pub tag: [u8; 4],
    /// Length of the compressed payload that follows.
    pub compressed_len: u32,
    /// Length of the payload after decompression.
    pub uncompressed_len: u32,
    /// Events in the block (in the whole segment, for the footer).
    pub events: u32,
    /// Smallest event timestamp.
    pub min_ts: u64,
    /// Largest event timestamp.
    pub max_ts: u64,
    /// CRC-32 of the compressed payload.
    pub payload_crc: u32,
}

impl FrameHeader {
    /// Encodes the frame header, with the CRC of its first 36 bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&self.tag);
        b[4..8].copy_from_slice(&self.compressed_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.events.to_le_bytes());
        b[16..24].copy_from_slice(&self.min_ts.to_le_bytes());
        b[24..32].copy_from_slice(&self.max_ts.to_le_bytes());
        b[32..36].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a frame header read at `offset`. Order of checks: tag, length
    /// bounds, header CRC.
    pub fn decode(b: &[u8; FRAME_HEADER_LEN], offset: u64) -> Result<FrameHeader, SegmentError> {
        let tag = [b[0], b[1], b[2], b[3]];
        if tag != TAG_BLOCK && tag != TAG_FOOTER {
            return Err(SegmentError::BadFrame { offset, tag });
        }
        let h = FrameHeader {
            tag,
            compressed_len: le_u32(b, 4),
            uncompressed_len: le_u32(b, 8),
            events: le_u32(b, 12),
            min_ts: le_u64(b, 16),
            max_ts: le_u64(b, 24),
            payload_crc: le_u32(b, 32),
        };
        let (max_c, max_u) = if tag == TAG_BLOCK {
            (MAX_BLOCK_COMPRESSED, MAX_BLOCK_BYTES)
        } else {
            (MAX_FOOTER_BYTES, MAX_FOOTER_BYTES)
        };
        let checks = [
            ("compressed block", u64::from(h.compressed_len), max_c),
            ("uncompressed block", u64::from(h.uncompressed_len), max_u),
        ];
        for (what, len, limit) in checks {
            if len > limit {
                return Err(SegmentError::AbsurdLength {
                    what,
                    offset,
                    len,
                    limit,
                });
            }
        }
        // Every event takes at least one byte of the order column.
        let max_events = h.uncompressed_len.min(MAX_BLOCK_EVENTS);
        if tag == TAG_BLOCK && h.events > max_events {
            return Err(SegmentError::AbsurdLength {
                what: "event count",
                offset,
                len: u64::from(h.events),
                limit: u64::from(max_events),
            });
        }
        let stored = le_u32(b, 36);
        let computed = crc32fast::hash(&b[0..36]);
        if stored != computed {
            return Err(SegmentError::BadChecksum {
                what: "frame header",
                offset,
                stored,
                computed,
            });
        }
        Ok(h)
    }

    /// Bytes the whole frame takes (header + payload).
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.compressed_len)
    }
}

/// Encodes the 16-byte trailer pointing at the footer frame.
pub fn encode_trailer(footer_offset: u64) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    b[0..8].copy_from_slice(&footer_offset.to_le_bytes());
    let crc = crc32fast::hash(&b[0..8]);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b[12..16].copy_from_slice(&TRAILER_MAGIC);
    b
}

/// Decodes a trailer; `None` when these bytes are not one.
pub fn decode_trailer(b: &[u8; TRAILER_LEN]) -> Option<u64> {
    if b[12..16] != TRAILER_MAGIC {
        return None;
    }
    let off = le_u64(b, 0);
    (crc32fast::hash(&b[0..8]) == le_u32(b, 8)).then_some(off)
}

/// The rkyv-archived header body (zstd-compressed after the prefix).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HeaderBodyV1 {
    /// Event model version of the writer.
    pub model_version: u16,
    /// Capture id.
    pub capture_id: String,
    /// Sequence number of the segment in its capture.
    pub seq: u64,
    /// The node.
    pub node: NodeInfo,
    /// Monotonic↔wall mapping taken when the segment was created.
    pub clock: ClockSync,
    /// Streams (event kinds) the capture records.
    pub streams: Vec<String>,
    /// Writer software, e.g. `retrace-segment 0.1.0`.
    pub writer: String,
    /// State at the segment's start.
    pub state: StateSnapshot,
}

/// One entry of the footer's block index.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntryV1 {
    /// Offset of the block's frame.
    pub offset: u64,
    /// Compressed payload length.
    pub compressed_len: u32,
    /// Uncompressed payload length.
    pub uncompressed_len: u32,
    /// Events in the block.
    pub events: u32,
    /// Smallest timestamp.
    pub min_ts: u64,
    /// Largest timestamp.
    pub max_ts: u64,
}

/// The rkyv-archived footer (zstd-compressed in the footer frame).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FooterV1 {
    /// Every block of the segment, in file order.
    pub blocks: Vec<IndexEntryV1>,
    /// Events per kind (indexed by [`crate::EventKind`] discriminant).
    pub events_by_kind: Vec<u64>,
}

/// Little-endian u32 at `at` (caller guarantees the bounds).
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Little-endian u64 at `at` (caller guarantees the bounds).
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
