//! Errors: one variant per way reading or writing a segment can fail.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing a segment or a capture directory.
///
/// Every kind of damage a file can carry has its own variant, so that callers (and the
/// `known_errors` tests) can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// An I/O error on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not start with the segment magic.
    #[error("not a retrace segment")]
    NotASegment,
    /// The file's format version cannot be read by this build.
    #[error(
        "unsupported segment format version {found} (this build reads versions {oldest} to {newest})"
    )]
    UnsupportedVersion {
        /// Version written in the file.
        found: u16,
        /// Oldest version this build reads.
        oldest: u16,
        /// Newest version this build reads.
        newest: u16,
    },
    /// The file was written with rkyv layout options (endianness, alignment, pointer width)
    /// that this build does not use.
    #[error("segment written with rkyv layout flags {found:#x}, this build uses {expected:#x}")]
    UnsupportedLayout {
        /// Flags in the file.
        found: u32,
        /// Flags of this build.
        expected: u32,
    },
    /// The file is empty.
    #[error("empty file: not a retrace segment")]
    Empty,
    /// The file ends inside its header.
    #[error("truncated segment header: {available} of {needed} bytes")]
    TruncatedHeader {
        /// Bytes the header needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A checksum does not match the bytes it covers.
    #[error("checksum mismatch in {what} at offset {offset}: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// What the checksum covers ("header", "frame header", "block", "footer", "trailer").
        what: &'static str,
        /// Offset of the covered structure in the file.
        offset: u64,
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The file ends inside a block frame.
    #[error("truncated block at offset {offset}: {available} of {needed} bytes present")]
    TruncatedBlock {
        /// Offset of the frame.
        offset: u64,
        /// Bytes the frame needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A length read from the file is larger than any valid file can hold.
    #[error("absurd {what} length {len} at offset {offset} (limit {limit})")]
    AbsurdLength {
        /// Which length.
        what: &'static str,
        /// Offset of the structure holding it.
        offset: u64,
        /// The length read.
        len: u64,
        /// The bound it exceeds.
        limit: u64,
    },
    /// Where a block frame was expected, something else was found.
    #[error("no block frame at offset {offset} (tag {tag:02x?})")]
    BadFrame {
        /// Offset.
        offset: u64,
        /// The four bytes found instead of a frame tag.
        tag: [u8; 4],
    },
    /// The segment has no valid footer: it was not sealed (writer killed, or still writing).
    #[error("segment not sealed: no valid footer")]
    MissingFooter,
    /// Compressed data could not be decompressed, or decompressed to the wrong size.
    #[error("cannot decompress {what} at offset {offset}: {reason}")]
    Decompress {
        /// What ("header", "block", "footer").
        what: &'static str,
        /// Offset of the frame.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// Decompressed data failed validation (rkyv checked access, or the column decoder).
    #[error("invalid {what} at offset {offset}: {reason}")]
    InvalidArchive {
        /// What ("header", "block", "footer").
        what: &'static str,
        /// Offset of the frame.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A block index out of range was asked for.
    #[error("no block {index}: the segment has {count}")]
    NoSuchBlock {
        /// Index asked for.
        index: usize,
        /// Blocks present.
        count: usize,
    },
    /// A segment index out of range was asked for.
    #[error("no segment {index}: the capture has {count}")]
    NoSuchSegment {
        /// Index asked for.
        index: usize,
        /// Segments present.
        count: usize,
    },
    /// A path that is neither a segment file nor a capture directory.
    #[error("{}: not a retrace capture (no manifest.json and no .rseg segments)", path.display())]
    NotACapture {
        /// The path.
        path: PathBuf,
    },
    /// The capture directory already holds a capture.
    #[error("{}: already holds a capture (manifest.json or .rseg files); choose an empty directory", path.display())]
    CaptureExists {
        /// The directory.
        path: PathBuf,
    },
    /// `manifest.json` could not be parsed.
    #[error("{}: bad manifest: {reason}", path.display())]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The hard size quota would be exceeded by something that cannot be dropped.
    #[error("capture size quota of {limit} bytes would be exceeded ({needed} bytes needed)")]
    QuotaExceeded {
        /// The quota.
        limit: u64,
        /// Bytes the directory would need.
        needed: u64,
    },
    /// An event or header cannot be encoded (e.g. too large for one block).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The writer was used after a failed write left it unusable.
    #[error("segment writer is closed after an earlier error")]
    WriterClosed,
}

impl SegmentError {
    /// An [`SegmentError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SegmentError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Damage found when opening a segment: what could not be read, and why.
#[derive(Debug)]
pub struct Damage {
    /// The segment file (empty for in-memory segments).
    pub path: PathBuf,
    /// Offset of the first byte that could not be read.
    pub offset: u64,
    /// Bytes that could not be read (from `offset`).
    pub bytes_lost: u64,
    /// Why.
    pub error: SegmentError,
}
