//! [`SegmentReader`]: opens one segment, validates its header, finds its whole blocks, and
//! decodes them on demand.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;

use crate::columns::{self, ArchivedBlockV1};
use crate::error::{Damage, SegmentError};
use crate::event::Event;
use crate::format::{
    self, ArchivedFooterV1, ArchivedHeaderBodyV1, FooterV1, FrameHeader, HeaderBodyV1, Prefix,
    FRAME_HEADER_LEN, PREFIX_LEN, TRAILER_LEN,
};
use crate::writer::{BlockInfo, SegmentHeader};

enum Source {
    Bytes(Vec<u8>),
    File(File),
}

impl Source {
    /// Reads exactly `buf.len()` bytes at `off`.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, off),
            Source::Bytes(b) => {
                let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
                let start = usize::try_from(off).map_err(|_| eof())?;
                let end = start.checked_add(buf.len()).ok_or_else(eof)?;
                buf.copy_from_slice(b.get(start..end).ok_or_else(eof)?);
                Ok(())
            }
        }
    }
}

thread_local! {
    /// Reused buffer for compressed frames read from files, one per thread.
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Reused decompression buffer (aligned for rkyv), one per thread.
    static SCRATCH: RefCell<AlignedVec<16>> = RefCell::new(AlignedVec::new());
    /// Reused zstd decompression context, one per thread.
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// Reads one segment file (or an in-memory copy of one).
///
/// Opening validates the header and walks the block frames (40-byte frame headers only, no
/// payload is read); [`SegmentReader::read_block`] then reads, checks, decompresses,
/// validates and decodes one block. A torn tail or a damaged frame is reported by
/// [`SegmentReader::damage`]; the whole blocks before it stay readable.
pub struct SegmentReader {
    path: PathBuf,
    src: Source,
    len: u64,
    header: SegmentHeader,
    blocks: Vec<BlockInfo>,
    sealed: bool,
    events_by_kind: Option<Vec<u64>>,
    damage: Vec<Damage>,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("blocks", &self.blocks.len())
            .field("sealed", &self.sealed)
            .field("damage", &self.damage)
            .finish()
    }
}

impl SegmentReader {
    /// Opens a segment file: header validated, block frames found.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SegmentError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| SegmentError::io(path, e))?;
        let meta = file.metadata().map_err(|e| SegmentError::io(path, e))?;
        if meta.is_dir() {
            return Err(SegmentError::io(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "is a directory, not a segment"),
            ));
        }
        Self::from_source(path.to_path_buf(), Source::File(file), meta.len())
    }

    /// Opens an in-memory segment (same checks as [`SegmentReader::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SegmentError> {
        let len = bytes.len() as u64;
        Self::from_source(PathBuf::new(), Source::Bytes(bytes), len)
    }

    fn io_err(&self, e: io::Error) -> SegmentError {
        SegmentError::io(&self.path, e)
    }

    fn from_source(path: PathBuf, src: Source, len: u64) -> Result<Self, SegmentError> {
        let io = |e| SegmentError::io(&path, e);
        let mut prefix = [0u8; PREFIX_LEN];
        let n = len.min(PREFIX_LEN as u64) as usize;
        src.read_at(0, &mut prefix[..n]).map_err(io)?;
        let p = Prefix::decode(&prefix[..n])?;
        let header_end = PREFIX_LEN as u64 + u64::from(p.body_len);
        if len < header_end {
            return Err(SegmentError::TruncatedHeader {
                needed: header_end,
                available: len,
            });
        }
        let mut body = vec![0u8; p.body_len as usize];
        src.read_at(PREFIX_LEN as u64, &mut body).map_err(io)?;
        // The prefix (with its CRC) says where the body ends, so a damaged body costs the
        // header's contents, not the blocks after it: it is reported as damage.
        let parsed = Self::header_body(&p, &body);
        let (header, header_damage) = match parsed {
            Ok(b) => (SegmentHeader::from_body(&p, b), None),
            Err(e) => {
                let h = SegmentHeader {
                    format_version: p.format_version,
                    min_reader_version: p.min_reader_version,
                    model_version: 0,
                    writer: String::new(),
                    ..SegmentHeader::default()
                };
                (h, Some(e))
            }
        };
        let mut r = SegmentReader {
            path,
            src,
            len,
            header,
            blocks: Vec::new(),
            sealed: false,
            events_by_kind: None,
            damage: Vec::new(),
        };
        if let Some(e) = header_damage {
            r.damage_at(PREFIX_LEN as u64, u64::from(p.body_len), e);
        }
        r.scan(header_end)?;
        Ok(r)
    }

    /// Checks, decompresses and validates the header body.
    fn header_body(p: &Prefix, body: &[u8]) -> Result<HeaderBodyV1, SegmentError> {
        let computed = crc32fast::hash(body);
        if computed != p.body_crc {
            return Err(SegmentError::BadChecksum {
                what: "header",
                offset: PREFIX_LEN as u64,
                stored: p.body_crc,
                computed,
            });
        }
        with_decompressed(
            body,
            p.body_uncompressed_len as usize,
            "header",
            PREFIX_LEN as u64,
            |b| {
                let a = rkyv::access::<ArchivedHeaderBodyV1, rkyv::rancor::Error>(b)
                    .map_err(|e| e.to_string())?;
                rkyv::deserialize::<HeaderBodyV1, rkyv::rancor::Error>(a).map_err(|e| e.to_string())
            },
        )
    }

    /// True when the header body could not be read (see [`SegmentReader::damage`]): the
    /// header then holds only the versions, and the blocks are still read.
    pub fn header_damaged(&self) -> bool {
        self.damage
            .first()
            .is_some_and(|d| d.offset == PREFIX_LEN as u64 && self.header.model_version == 0)
    }

    /// Reads and validates the footer; `Ok(None)` when there is no trailer.
    fn footer(&self, header_end: u64) -> Result<Option<(u64, FooterV1)>, SegmentError> {
        if self.len < header_end + (FRAME_HEADER_LEN + TRAILER_LEN) as u64 {
            return Ok(None);
        }
        let mut t = [0u8; TRAILER_LEN];
        self.src
            .read_at(self.len - TRAILER_LEN as u64, &mut t)
            .map_err(|e| self.io_err(e))?;
        let Some(off) = format::decode_trailer(&t) else {
            return Ok(None);
        };
        let invalid = |reason: &str| SegmentError::InvalidArchive {
            what: "footer",
            offset: off,
            reason: reason.to_string(),
        };
        if off < header_end || off > self.len - (FRAME_HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(invalid("trailer points outside the file"));
        }
        let mut fhb = [0u8; FRAME_HEADER_LEN];
        self.src
            .read_at(off, &mut fhb)
            .map_err(|e| self.io_err(e))?;
        let fh = FrameHeader::decode(&fhb, off)?;
        if fh.tag != format::TAG_FOOTER {
            return Err(invalid("trailer does not point at a footer frame"));
        }
        if off + fh.frame_len() + TRAILER_LEN as u64 != self.len {
            return Err(invalid("footer length does not reach the trailer"));
        }
        let payload = self.payload(off, &fh, "footer")?;
        let footer = with_decompressed(
            &payload,
            fh.uncompressed_len as usize,
            "footer",
            off,
            |bytes| {
                let a = rkyv::access::<ArchivedFooterV1, rkyv::rancor::Error>(bytes)
                    .map_err(|e| e.to_string())?;
                rkyv::deserialize::<FooterV1, rkyv::rancor::Error>(a).map_err(|e| e.to_string())
            },
        )?;
        let mut next = header_end;
        for b in &footer.blocks {
            let end = b
                .offset
                .checked_add(FRAME_HEADER_LEN as u64 + u64::from(b.compressed_len))
                .ok_or_else(|| invalid("block index entry out of range"))?;
            if b.offset < next || end > off {
                return Err(invalid("block index entries overlap or leave the body"));
            }
            next = end;
        }
        Ok(Some((off, footer)))
    }

    /// Walks the frames from `header_end`, filling `blocks`, `damage` and `sealed`.
    fn scan(&mut self, header_end: u64) -> Result<(), SegmentError> {
        let footer = match self.footer(header_end) {
            Ok(f) => f,
            Err(SegmentError::Io { path, source }) => {
                return Err(SegmentError::Io { path, source });
            }
            Err(e) => {
                // A trailer exists but its footer is damaged: the scan below finds the
                // blocks; report the footer's damage.
                self.damage.push(Damage {
                    path: self.path.clone(),
                    offset: self.len,
                    bytes_lost: 0,
                    error: e,
                });
                None
            }
        };
        let (footer_off, index) = match &footer {
            Some((off, f)) => (Some(*off), f.blocks.as_slice()),
            None => (None, &[][..]),
        };
        let mut pos = header_end;
        loop {
            if Some(pos) == footer_off || pos == self.len {
                break;
            }
            let resync = |pos: u64| index.iter().map(|e| e.offset).find(|&o| o > pos);
            let left = self.len - pos;
            if left < FRAME_HEADER_LEN as u64 {
                self.damage_at(
                    pos,
                    left,
                    SegmentError::TruncatedBlock {
                        offset: pos,
                        needed: FRAME_HEADER_LEN as u64,
                        available: left,
                    },
                );
                break;
            }
            let mut fhb = [0u8; FRAME_HEADER_LEN];
            self.src
                .read_at(pos, &mut fhb)
                .map_err(|e| self.io_err(e))?;
            let fh = match FrameHeader::decode(&fhb, pos) {
                Ok(fh) => fh,
                Err(e) => {
                    // With a valid footer index we can skip to the next indexed block.
                    let next = resync(pos).or(footer_off);
                    match next {
                        Some(n) => {
                            self.damage_at(pos, n - pos, e);
                            pos = n;
                            continue;
                        }
                        None => {
                            self.damage_at(pos, left, e);
                            break;
                        }
                    }
                }
            };
            if fh.tag == format::TAG_FOOTER {
                // A footer that the trailer does not confirm: torn while sealing, or damaged.
                let needed = fh.frame_len() + TRAILER_LEN as u64;
                let err = if needed > left {
                    SegmentError::TruncatedBlock {
                        offset: pos,
                        needed,
                        available: left,
                    }
                } else {
                    SegmentError::MissingFooter
                };
                self.damage_at(pos, left, err);
                break;
            }
            if fh.frame_len() > left {
                self.damage_at(
                    pos,
                    left,
                    SegmentError::TruncatedBlock {
                        offset: pos,
                        needed: fh.frame_len(),
                        available: left,
                    },
                );
                break;
            }
            self.blocks.push(BlockInfo {
                offset: pos,
                compressed_len: fh.compressed_len,
                uncompressed_len: fh.uncompressed_len,
                events: fh.events,
                min_ts: fh.min_ts,
                max_ts: fh.max_ts,
            });
            pos += fh.frame_len();
        }
        if let Some((_, f)) = footer {
            self.sealed = true;
            self.events_by_kind = Some(f.events_by_kind);
        }
        Ok(())
    }

    fn damage_at(&mut self, offset: u64, bytes_lost: u64, error: SegmentError) {
        self.damage.push(Damage {
            path: self.path.clone(),
            offset,
            bytes_lost,
            error,
        });
    }

    /// Reads a frame's payload and checks its CRC.
    fn payload(
        &self,
        off: u64,
        fh: &FrameHeader,
        what: &'static str,
    ) -> Result<Vec<u8>, SegmentError> {
        self.with_payload(off, fh, what, |p| Ok(p.to_vec()))
    }

    /// Runs `f` on a frame's payload once its CRC is checked: borrowed in place for an
    /// in-memory segment, read into a reused per-thread buffer for a file.
    fn with_payload<T>(
        &self,
        off: u64,
        fh: &FrameHeader,
        what: &'static str,
        f: impl FnOnce(&[u8]) -> Result<T, SegmentError>,
    ) -> Result<T, SegmentError> {
        let len = fh.compressed_len as usize;
        let truncated = || SegmentError::TruncatedBlock {
            offset: off,
            needed: fh.frame_len(),
            available: self.len.saturating_sub(off),
        };
        let check = |payload: &[u8]| {
            let computed = crc32fast::hash(payload);
            if computed != fh.payload_crc {
                return Err(SegmentError::BadChecksum {
                    what,
                    offset: off,
                    stored: fh.payload_crc,
                    computed,
                });
            }
            Ok(())
        };
        match &self.src {
            Source::Bytes(bytes) => {
                let payload = usize::try_from(off)
                    .ok()
                    .and_then(|o| o.checked_add(FRAME_HEADER_LEN))
                    .and_then(|start| bytes.get(start..start.checked_add(len)?))
                    .ok_or_else(truncated)?;
                check(payload)?;
                f(payload)
            }
            Source::File(file) => COMPRESSED.with(|cell| {
                let mut fresh = Vec::new();
                // A re-entrant call (none today) falls back to a fresh buffer.
                let mut guard = cell.try_borrow_mut().ok();
                let buf: &mut Vec<u8> = match guard.as_deref_mut() {
                    Some(b) => b,
                    None => &mut fresh,
                };
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                let payload = &mut buf[..len];
                file.read_exact_at(payload, off + FRAME_HEADER_LEN as u64)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof {
                            truncated()
                        } else {
                            self.io_err(e)
                        }
                    })?;
                check(payload)?;
                let r = f(payload);
                if buf.len() > 8 << 20 {
                    *buf = Vec::new();
                }
                r
            }),
        }
    }

    /// The file (empty for in-memory segments).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The whole blocks found.
    pub fn blocks(&self) -> &[BlockInfo] {
        &self.blocks
    }

    /// True when the footer (block index) is present and valid.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// `Err(SegmentError::MissingFooter)` when the segment was not sealed.
    pub fn check_sealed(&self) -> Result<(), SegmentError> {
        if self.sealed {
            Ok(())
        } else {
            Err(SegmentError::MissingFooter)
        }
    }

    /// Events per kind discriminant, from the footer of a sealed segment.
    pub fn events_by_kind(&self) -> Option<&[u64]> {
        self.events_by_kind.as_deref()
    }

    /// Length of the file.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Events in the whole blocks found (from their frame headers).
    pub fn events(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.events)).sum()
    }

    /// Damage found at open: torn tail, damaged frames, damaged footer.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Reads block `i`: checksum, decompression, rkyv validation, column decoding. Events come
    /// back in the order they were appended.
    pub fn read_block(&self, i: usize) -> Result<Vec<Event>, SegmentError> {
        let mut out = Vec::new();
        self.read_block_into(i, &mut out)?;
        Ok(out)
    }

    /// Like [`SegmentReader::read_block`], into `out` (cleared first), reusing its memory;
    /// each event is decoded in place where it ends up: the fastest way to collect events.
    pub fn read_block_into(&self, i: usize, out: &mut Vec<Event>) -> Result<(), SegmentError> {
        out.clear();
        let n = self.blocks.get(i).map_or(0, |b| b.events as usize);
        out.reserve(n.min(crate::capture::MAX_BLOCK_EVENTS as usize));
        let r = self.with_block(i, |a, b| {
            let n = columns::decode_into(a, out).map_err(str::to_string)?;
            let out_of_range = out.iter().any(|e| e.ts < b.min_ts || e.ts > b.max_ts);
            Ok((n, out_of_range))
        });
        if r.is_err() {
            out.clear();
        }
        r.map(|_| ())
    }

    /// Decodes block `i`, handing each event to `f` in append order, without collecting them.
    /// On an error, `f` may already have seen some of the block's events. Returns the
    /// number of events.
    pub fn for_each_event(
        &self,
        i: usize,
        mut f: impl FnMut(Event),
    ) -> Result<usize, SegmentError> {
        self.with_block(i, |a, b| {
            let mut out_of_range = false;
            let n = columns::decode_with(a, |e| {
                out_of_range |= e.ts < b.min_ts || e.ts > b.max_ts;
                f(e)
            })
            .map_err(str::to_string)?;
            Ok((n, out_of_range))
        })
    }

    /// Decodes block `i`, lending each event to `f` in append order: the fastest way to look
    /// at every event, as nothing is allocated per event (clone what must outlive the call).
    /// On an error, `f` may already have seen some of the block's events. Returns the number
    /// of events.
    pub fn visit_events(&self, i: usize, mut f: impl FnMut(&Event)) -> Result<usize, SegmentError> {
        self.with_block(i, |a, b| {
            let mut out_of_range = false;
            let n = columns::visit(a, |e| {
                out_of_range |= e.ts < b.min_ts || e.ts > b.max_ts;
                f(e)
            })
            .map_err(str::to_string)?;
            Ok((n, out_of_range))
        })
    }

    /// Checks block `i`'s frame, decompresses and validates it, and runs `decode` on the
    /// archive; `decode` returns the number of events and whether a timestamp fell outside
    /// the frame header's range.
    fn with_block(
        &self,
        i: usize,
        decode: impl FnOnce(&ArchivedBlockV1, &BlockInfo) -> Result<(usize, bool), String>,
    ) -> Result<usize, SegmentError> {
        let b = *self.blocks.get(i).ok_or(SegmentError::NoSuchBlock {
            index: i,
            count: self.blocks.len(),
        })?;
        let fh = FrameHeader {
            tag: format::TAG_BLOCK,
            compressed_len: b.compressed_len,
            uncompressed_len: b.uncompressed_len,
            events: b.events,
            min_ts: b.min_ts,
            max_ts: b.max_ts,
            payload_crc: 0,
        };
        let mut fhb = [0u8; FRAME_HEADER_LEN];
        self.src
            .read_at(b.offset, &mut fhb)
            .map_err(|e| self.io_err(e))?;
        let stored = FrameHeader::decode(&fhb, b.offset)?;
        if (FrameHeader {
            payload_crc: 0,
            ..stored
        }) != fh
        {
            return Err(SegmentError::InvalidArchive {
                what: "block",
                offset: b.offset,
                reason: "frame header changed since the segment was opened".into(),
            });
        }
        self.with_payload(b.offset, &stored, "block", |payload| {
            with_decompressed(
                payload,
                b.uncompressed_len as usize,
                "block",
                b.offset,
                |bytes| {
                    let a = rkyv::access::<ArchivedBlockV1, rkyv::rancor::Error>(bytes)
                        .map_err(|e| e.to_string())?;
                    if a.events.to_native() != b.events {
                        return Err("event count differs from the frame header".to_string());
                    }
                    let (n, out_of_range) = decode(a, &b)?;
                    if out_of_range {
                        return Err("timestamp outside the frame header's range".to_string());
                    }
                    Ok(n)
                },
            )
        })
    }
}

/// Decompresses `src` (exactly `len` bytes expected) into an aligned scratch buffer and runs
/// `f` on it.
fn with_decompressed<T>(
    src: &[u8],
    len: usize,
    what: &'static str,
    offset: u64,
    f: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, SegmentError> {
    SCRATCH.with(|cell| {
        let mut fresh = AlignedVec::<16>::new();
        // A re-entrant call (none today) falls back to a fresh buffer instead of panicking.
        let mut guard = cell.try_borrow_mut().ok();
        let buf: &mut AlignedVec<16> = match guard.as_deref_mut() {
            Some(b) => b,
            None => &mut fresh,
        };
        // Zero only what was never written: zstd overwrites the first `len` bytes.
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let got = DCTX
            .with(|d| {
                match d
                    .try_borrow_mut()
                    .ok()
                    .as_deref_mut()
                    .and_then(Option::as_mut)
                {
                    Some(dctx) => dctx.decompress_to_buffer(src, &mut buf[..len]),
                    None => zstd::bulk::decompress_to_buffer(src, &mut buf[..len]),
                }
            })
            .map_err(|e| SegmentError::Decompress {
                what,
                offset,
                reason: e.to_string(),
            })?;
        if got != len {
            return Err(SegmentError::Decompress {
                what,
                offset,
                reason: format!("{got} bytes instead of {len}"),
            });
        }
        let r = f(&buf[..len]).map_err(|reason| SegmentError::InvalidArchive {
            what,
            offset,
            reason,
        });
        if buf.capacity() > 8 << 20 {
            *buf = AlignedVec::new();
        }
        r
    })
}
