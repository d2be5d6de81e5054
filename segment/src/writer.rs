//! [`SegmentWriter`]: writes one segment file (header, blocks, footer).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Event kinds (the per-kind counters' length).
const KINDS: usize = crate::event::EventKind::ALL.len();

use crate::columns::BlockBuilder;
use crate::error::SegmentError;
use crate::event::{ClockSync, Event, NodeInfo, StateSnapshot};
use crate::format::{self, FooterV1, FrameHeader, HeaderBodyV1, IndexEntryV1, Prefix};

/// The header of a segment: who wrote it, when, and the state at its start.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentHeader {
    /// Format version of the file (set by the writer to [`format::FORMAT_VERSION`]).
    pub format_version: u16,
    /// Oldest reader version able to read the file (set by the writer).
    pub min_reader_version: u16,
    /// Event model version of the writer (set by the writer to [`crate::MODEL_VERSION`]).
    pub model_version: u16,
    /// Capture id, shared by every segment of one capture.
    pub capture_id: String,
    /// Sequence number of this segment in its capture (1-based).
    pub seq: u64,
    /// The node that recorded it.
    pub node: NodeInfo,
    /// Monotonic↔wall mapping taken when the segment was started.
    pub clock: ClockSync,
    /// Streams (event kinds) the capture records.
    pub streams: Vec<String>,
    /// Writer software and version (set by the writer).
    pub writer: String,
    /// State at the segment's start (process table, listening sockets, open connections).
    pub state: StateSnapshot,
}

impl Default for SegmentHeader {
    fn default() -> Self {
        Self {
            format_version: format::FORMAT_VERSION,
            min_reader_version: format::MIN_READER_VERSION,
            model_version: crate::event::MODEL_VERSION,
            capture_id: String::new(),
            seq: 0,
            node: NodeInfo::default(),
            clock: ClockSync::default(),
            streams: Vec::new(),
            writer: writer_name(),
            state: StateSnapshot::default(),
        }
    }
}

fn writer_name() -> String {
    format!("retrace-segment {}", env!("CARGO_PKG_VERSION"))
}

impl SegmentHeader {
    pub(crate) fn to_body(&self) -> HeaderBodyV1 {
        HeaderBodyV1 {
            model_version: crate::event::MODEL_VERSION,
            capture_id: self.capture_id.clone(),
            seq: self.seq,
            node: self.node.clone(),
            clock: self.clock,
            streams: self.streams.clone(),
            writer: writer_name(),
            state: self.state.clone(),
        }
    }

    pub(crate) fn from_body(p: &Prefix, b: HeaderBodyV1) -> Self {
        Self {
            format_version: p.format_version,
            min_reader_version: p.min_reader_version,
            model_version: b.model_version,
            capture_id: b.capture_id,
            seq: b.seq,
            node: b.node,
            clock: b.clock,
            streams: b.streams,
            writer: b.writer,
            state: b.state,
        }
    }
}

/// Where one block sits in a segment, and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Offset of the block's frame in the file.
    pub offset: u64,
    /// Compressed payload length.
    pub compressed_len: u32,
    /// Uncompressed payload length.
    pub uncompressed_len: u32,
    /// Events in the block.
    pub events: u32,
    /// Smallest timestamp in the block.
    pub min_ts: u64,
    /// Largest timestamp in the block.
    pub max_ts: u64,
}

impl BlockInfo {
    /// Bytes the block's frame takes on disk.
    pub fn frame_len(&self) -> u64 {
        format::FRAME_HEADER_LEN as u64 + u64::from(self.compressed_len)
    }
}

/// Options of a [`SegmentWriter`].
#[derive(Debug, Clone)]
pub struct SegmentWriterOptions {
    /// zstd level for blocks and header.
    pub zstd_level: i32,
    /// A block is written once its encoded size reaches this many bytes.
    pub block_max_bytes: usize,
    /// fdatasync after every block, on a thread of the writer's own so that writing never
    /// waits for the disk (a block is durable once [`SegmentWriter::sync`] returns, and
    /// within one sync's time of its write anyway); the header and the footer are synced
    /// before their call returns.
    pub sync: bool,
}

impl Default for SegmentWriterOptions {
    fn default() -> Self {
        Self {
            zstd_level: 3,
            block_max_bytes: 1 << 20,
            sync: true,
        }
    }
}

/// A block encoded and compressed, ready to be written (or dropped by a quota).
#[derive(Debug)]
pub struct EncodedBlock {
    /// The whole frame: frame header then compressed payload.
    pub frame: Vec<u8>,
    /// Its index entry (offset filled in when written).
    pub info: BlockInfo,
    /// Events per kind discriminant.
    pub by_kind: [u32; KINDS],
}

/// What a sealed segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSummary {
    /// The file.
    pub path: PathBuf,
    /// Its final length.
    pub bytes: u64,
    /// Events in it.
    pub events: u64,
    /// Blocks in it.
    pub blocks: u64,
    /// Smallest and largest timestamps (0 when empty).
    pub min_ts: u64,
    /// Largest timestamp.
    pub max_ts: u64,
}

/// Writes one segment file: the header at creation, then one framed block per
/// [`SegmentWriter::flush`] (or whenever the open block reaches its size), then the footer
/// at [`SegmentWriter::seal`].
///
/// A segment dropped without `seal` stays readable up to its last written block.
pub struct SegmentWriter {
    path: PathBuf,
    file: File,
    offset: u64,
    opts: SegmentWriterOptions,
    block: BlockBuilder,
    block_started: Option<Instant>,
    index: Vec<IndexEntryV1>,
    by_kind: [u64; KINDS],
    events: u64,
    bytes_uncompressed: u64,
    min_ts: u64,
    max_ts: u64,
    failed: bool,
    /// Syncs the blocks in the background (`sync` set).
    syncer: Option<crate::syncer::Syncer>,
}

thread_local! {
    /// Reused zstd compression context, one per thread: a fresh context per block costs
    /// its allocation and initialisation every time.
    static CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    /// Reused buffer blocks are archived into before compression, one per thread: a fresh
    /// one per block is paged in again for every block.
    static ARCHIVE: std::cell::Cell<rkyv::util::AlignedVec> =
        std::cell::Cell::new(rkyv::util::AlignedVec::new());
}

/// zstd-compresses `data` at `level` with this thread's reused context.
fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    CCTX.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            // Re-entered (not done today): a one-off context.
            return zstd::bulk::compress(data, level);
        };
        match slot.as_mut() {
            Some((l, c)) if *l == level => c.compress(data),
            _ => {
                let mut c = zstd::bulk::Compressor::new(level)?;
                let out = c.compress(data);
                *slot = Some((level, c));
                out
            }
        }
    })
}

/// Encodes a header: prefix then compressed body.
pub fn encode_header(header: &SegmentHeader, zstd_level: i32) -> Result<Vec<u8>, SegmentError> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(&header.to_body())
        .map_err(|e| SegmentError::Encode(format!("header: {e}")))?;
    let compressed =
        compress(&body, zstd_level).map_err(|e| SegmentError::Encode(format!("header: {e}")))?;
    let too_big = |len: usize| {
        u32::try_from(len)
            .ok()
            .filter(|&l| u64::from(l) <= format::MAX_HEADER_BYTES)
            .ok_or(SegmentError::Encode(format!(
                "header of {len} bytes exceeds the {} byte limit",
                format::MAX_HEADER_BYTES
            )))
    };
    let prefix = Prefix {
        format_version: format::FORMAT_VERSION,
        min_reader_version: format::MIN_READER_VERSION,
        layout: format::LAYOUT,
        body_len: too_big(compressed.len())?,
        body_uncompressed_len: too_big(body.len())?,
        body_crc: crc32fast::hash(&compressed),
    };
    let mut out = Vec::with_capacity(format::PREFIX_LEN + compressed.len());
    out.extend_from_slice(&prefix.encode());
    out.extend_from_slice(&compressed);
    Ok(out)
}

/// Encodes and compresses `builder`'s block into a frame, leaving in its place an empty
/// builder that reuses its buffers.
pub(crate) fn encode_block(
    builder: &mut BlockBuilder,
    zstd_level: i32,
) -> Result<EncodedBlock, SegmentError> {
    let block = std::mem::take(builder);
    let (min_ts, max_ts) = block.ts_range();
    let by_kind = *block.by_kind();
    let events = block.events();
    let value = block.finish();
    let mut buf = ARCHIVE.take();
    buf.clear();
    let archived = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&value, buf);
    *builder = BlockBuilder::recycled(value);
    let archived = archived.map_err(|e| SegmentError::Encode(format!("block: {e}")))?;
    let frame = frame_block(&archived, zstd_level, events, min_ts, max_ts, by_kind);
    ARCHIVE.set(archived);
    frame
}

/// Compresses an archived block and frames it.
fn frame_block(
    archived: &[u8],
    zstd_level: i32,
    events: u32,
    min_ts: u64,
    max_ts: u64,
    by_kind: [u32; KINDS],
) -> Result<EncodedBlock, SegmentError> {
    if archived.len() as u64 > format::MAX_BLOCK_BYTES {
        return Err(SegmentError::Encode(format!(
            "block of {} bytes exceeds the {} byte limit (an event too large?)",
            archived.len(),
            format::MAX_BLOCK_BYTES
        )));
    }
    let compressed =
        compress(archived, zstd_level).map_err(|e| SegmentError::Encode(format!("block: {e}")))?;
    let compressed_len = u32::try_from(compressed.len())
        .map_err(|_| SegmentError::Encode("compressed block too large".into()))?;
    let uncompressed_len = archived.len() as u32;
    let fh = FrameHeader {
        tag: format::TAG_BLOCK,
        compressed_len,
        uncompressed_len,
        events,
        min_ts,
        max_ts,
        payload_crc: crc32fast::hash(&compressed),
    };
    let mut frame = Vec::with_capacity(format::FRAME_HEADER_LEN + compressed.len());
    frame.extend_from_slice(&fh.encode());
    frame.extend_from_slice(&compressed);
    Ok(EncodedBlock {
        frame,
        info: BlockInfo {
            offset: 0,
            compressed_len,
            uncompressed_len,
            events,
            min_ts,
            max_ts,
        },
        by_kind,
    })
}

impl SegmentWriter {
    /// Creates `path` (which must not exist, mode 0600) and writes the header, with default
    /// options.
    pub fn create(path: impl AsRef<Path>, header: &SegmentHeader) -> Result<Self, SegmentError> {
        Self::create_with(path, header, SegmentWriterOptions::default())
    }

    /// Creates `path` (which must not exist, mode 0600) and writes the header.
    pub fn create_with(
        path: impl AsRef<Path>,
        header: &SegmentHeader,
        opts: SegmentWriterOptions,
    ) -> Result<Self, SegmentError> {
        let bytes = encode_header(header, opts.zstd_level)?;
        Self::create_encoded(path.as_ref(), &bytes, opts)
    }

    /// Creates the file and writes an already encoded header (see [`encode_header`]).
    pub fn create_encoded(
        path: &Path,
        header_bytes: &[u8],
        opts: SegmentWriterOptions,
    ) -> Result<Self, SegmentError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| SegmentError::io(path, e))?;
        let written = file.write_all(header_bytes).and_then(|()| {
            if opts.sync {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // (A full disk, say.) A cut header holds no event: no file is left to be read as
            // a damaged segment.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(SegmentError::io(path, e));
        }
        let syncer = if opts.sync {
            let theirs = file.try_clone().map_err(|e| SegmentError::io(path, e))?;
            Some(crate::syncer::Syncer::start(theirs).map_err(|e| SegmentError::io(path, e))?)
        } else {
            None
        };
        Ok(Self {
            syncer,
            path: path.to_path_buf(),
            file,
            offset: header_bytes.len() as u64,
            opts,
            block: BlockBuilder::new(),
            block_started: None,
            index: Vec::new(),
            by_kind: [0; KINDS],
            events: 0,
            bytes_uncompressed: 0,
            min_ts: 0,
            max_ts: 0,
            failed: false,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Events written in whole blocks so far (not counting the open block).
    pub fn events_written(&self) -> u64 {
        self.events
    }

    /// Uncompressed bytes of the blocks written so far.
    pub fn bytes_uncompressed(&self) -> u64 {
        self.bytes_uncompressed
    }

    /// Blocks written so far.
    pub fn blocks(&self) -> usize {
        self.index.len()
    }

    /// Smallest and largest timestamps of the events written in whole blocks (0, 0 if none).
    pub fn ts_range(&self) -> (u64, u64) {
        (self.min_ts, self.max_ts)
    }

    /// Events waiting in the open block.
    pub fn pending_events(&self) -> u32 {
        self.block.events()
    }

    /// Encoded size of the open block so far.
    pub fn pending_bytes(&self) -> usize {
        self.block.encoded_len()
    }

    /// When the first event of the open block was appended.
    pub fn pending_since(&self) -> Option<Instant> {
        self.block_started
    }

    /// Adds an event to the open block. Returns true when the block has reached
    /// `block_max_bytes` and should be flushed (this method does not write).
    pub fn push(&mut self, ev: &Event) -> bool {
        if self.block.is_empty() {
            self.block_started = Some(Instant::now());
        }
        self.block.push(ev);
        self.block.is_full(self.opts.block_max_bytes)
    }

    /// Adds an event, writing the block when it is full.
    pub fn append(&mut self, ev: &Event) -> Result<(), SegmentError> {
        if self.push(ev) {
            self.flush()?;
        }
        Ok(())
    }

    /// Encodes and compresses the open block, leaving it empty; `None` when it was empty.
    /// Write the result with [`SegmentWriter::write_block`] or drop it.
    pub fn take_block(&mut self) -> Result<Option<EncodedBlock>, SegmentError> {
        if self.block.is_empty() {
            return Ok(None);
        }
        self.block_started = None;
        encode_block(&mut self.block, self.opts.zstd_level).map(Some)
    }

    /// Writes an encoded block (then fdatasync when `sync` is set).
    pub fn write_block(&mut self, mut b: EncodedBlock) -> Result<BlockInfo, SegmentError> {
        if self.failed {
            return Err(SegmentError::WriterClosed);
        }
        b.info.offset = self.offset;
        if let Err(e) = self.file.write_all(&b.frame) {
            self.cut_back();
            return Err(SegmentError::io(&self.path, e));
        }
        if let Some(s) = &self.syncer {
            // An earlier block's sync failed: this one is not kept either.
            if let Err(e) = s.request() {
                self.cut_back();
                return Err(SegmentError::io(&self.path, e));
            }
        }
        self.offset += b.frame.len() as u64;
        let i = b.info;
        if self.index.is_empty() {
            (self.min_ts, self.max_ts) = (i.min_ts, i.max_ts);
        }
        self.min_ts = self.min_ts.min(i.min_ts);
        self.max_ts = self.max_ts.max(i.max_ts);
        self.events += u64::from(i.events);
        self.bytes_uncompressed += u64::from(i.uncompressed_len);
        for (t, n) in self.by_kind.iter_mut().zip(b.by_kind) {
            *t += u64::from(n);
        }
        self.index.push(IndexEntryV1 {
            offset: i.offset,
            compressed_len: i.compressed_len,
            uncompressed_len: i.uncompressed_len,
            events: i.events,
            min_ts: i.min_ts,
            max_ts: i.max_ts,
        });
        Ok(i)
    }

    /// After a failed write (a full disk: part of a frame may have reached the file), cuts
    /// the file back to its last whole block, so that it holds no torn frame and can still
    /// be sealed; when even that fails, no more writes are accepted.
    fn cut_back(&mut self) {
        use std::io::{Seek, SeekFrom};
        let ok = self.file.set_len(self.offset).is_ok()
            && self.file.seek(SeekFrom::Start(self.offset)).is_ok();
        self.failed = !ok;
    }

    /// Waits until every block written so far is on disk (nothing to wait for without
    /// `sync`).
    pub fn sync(&self) -> Result<(), SegmentError> {
        match &self.syncer {
            Some(s) => s.wait().map_err(|e| SegmentError::io(&self.path, e)),
            None => Ok(()),
        }
    }

    /// Writes the open block now (synced in the background when `sync` is set); `None` when
    /// it was empty.
    pub fn flush(&mut self) -> Result<Option<BlockInfo>, SegmentError> {
        match self.take_block()? {
            Some(b) => self.write_block(b).map(Some),
            None => Ok(None),
        }
    }

    /// Encodes the footer that [`SegmentWriter::seal`] would write now (with the trailer),
    /// so a caller can check a size quota first.
    pub fn encode_footer(&self) -> Result<Vec<u8>, SegmentError> {
        let footer = FooterV1 {
            blocks: self.index.clone(),
            events_by_kind: self.by_kind.to_vec(),
        };
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&footer)
            .map_err(|e| SegmentError::Encode(format!("footer: {e}")))?;
        let compressed = compress(&archived, self.opts.zstd_level)
            .map_err(|e| SegmentError::Encode(format!("footer: {e}")))?;
        let fits = |n: usize| {
            u32::try_from(n)
                .ok()
                .filter(|&n| u64::from(n) <= format::MAX_FOOTER_BYTES)
        };
        let (Some(compressed_len), Some(uncompressed_len)) =
            (fits(compressed.len()), fits(archived.len()))
        else {
            return Err(SegmentError::Encode("footer too large".into()));
        };
        let fh = FrameHeader {
            tag: format::TAG_FOOTER,
            compressed_len,
            uncompressed_len,
            events: u32::try_from(self.events).unwrap_or(u32::MAX),
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            payload_crc: crc32fast::hash(&compressed),
        };
        let mut out =
            Vec::with_capacity(format::FRAME_HEADER_LEN + compressed.len() + format::TRAILER_LEN);
        out.extend_from_slice(&fh.encode());
        out.extend_from_slice(&compressed);
        out.extend_from_slice(&format::encode_trailer(self.offset));
        Ok(out)
    }

    /// Writes the open block, then the footer (block index) and trailer, and syncs.
    pub fn seal(mut self) -> Result<SealSummary, SegmentError> {
        self.flush()?;
        self.seal_flushed()
    }

    /// Writes the footer and trailer without flushing the open block (its events are
    /// dropped: the caller took or discarded them).
    pub fn seal_flushed(mut self) -> Result<SealSummary, SegmentError> {
        if self.failed {
            return Err(SegmentError::WriterClosed);
        }
        if let Some(s) = self.syncer.take() {
            s.finish().map_err(|e| SegmentError::io(&self.path, e))?;
        }
        let footer = self.encode_footer()?;
        if let Err(e) = self
            .file
            .write_all(&footer)
            .and_then(|()| self.file.sync_data())
        {
            self.cut_back();
            return Err(SegmentError::io(&self.path, e));
        }
        self.offset += footer.len() as u64;
        Ok(SealSummary {
            path: self.path,
            bytes: self.offset,
            events: self.events,
            blocks: self.index.len() as u64,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        })
    }
}
