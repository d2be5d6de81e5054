//! retrace's capture format. The one crate that knows the bytes on disk.
//!
//! - [`event`]: the versioned event model, everything a capture can hold.
//! - [`SegmentWriter`] / [`CaptureWriter`]: append events, framed in compressed, checksummed
//!   blocks; rotate segments; seal them with a footer; keep a ring of segments.
//! - [`SegmentReader`] / [`Capture`]: read segments back, validating everything, recovering a
//!   torn tail up to the last whole block and reporting the loss as [`Damage`].
//!
//! STUB: API sketch to be filled in by the segment implementation.

pub mod event;

pub use event::*;

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or writing a segment.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not start with the segment magic.
    #[error("not a retrace segment")]
    NotASegment,
    /// The file's format version cannot be read by this build.
    #[error("unsupported format version {found} (this build reads versions {oldest} to {newest})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Oldest version this build reads.
        oldest: u16,
        /// Newest version this build reads.
        newest: u16,
    },
}

/// The segment header.
#[derive(Debug, Clone, Default)]
pub struct SegmentHeader {
    /// Node that recorded it.
    pub node: NodeInfo,
    /// Capture id.
    pub capture_id: String,
    /// State at the segment's start.
    pub state: StateSnapshot,
}

/// A block that could not be read, and what was lost.
#[derive(Debug)]
pub struct Damage {
    /// Offset of the damaged block.
    pub offset: u64,
    /// Bytes that could not be read.
    pub bytes_lost: u64,
    /// Why.
    pub error: SegmentError,
}

/// Reads one segment file.
pub struct SegmentReader {
    header: SegmentHeader,
}

impl SegmentReader {
    /// Opens a segment file.
    pub fn open(_path: impl AsRef<Path>) -> Result<Self, SegmentError> {
        Err(SegmentError::NotASegment)
    }

    /// The header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The next block's events, or the damage that stopped reading.
    pub fn next_block(&mut self) -> Option<Result<Vec<Event>, Damage>> {
        None
    }
}

/// Writes a capture directory.
pub struct CaptureWriter;

/// Writes one segment file.
pub struct SegmentWriter;

/// A capture directory (or a single segment) opened for reading.
pub struct Capture;
