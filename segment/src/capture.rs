//! Capture directories: [`CaptureWriter`] (segments + manifest, rotation, ring mode, pins,
//! hard quota) and [`Capture`] (open a directory or a single segment for reading).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::columns::BlockBuilder;
use crate::error::SegmentError;
use crate::event::{ClockSync, Event, EventBody, EventKind, NodeInfo, StateSnapshot};
use crate::format::{self, FRAME_HEADER_LEN, TRAILER_LEN};
use crate::manifest::{sync_dir, Manifest, ManifestSegment, Restart, Totals, MANIFEST_FILE};
use crate::reader::SegmentReader;
use crate::state::StateTracker;
use crate::writer::{
    encode_block, encode_header, BlockInfo, EncodedBlock, SegmentHeader, SegmentWriter,
    SegmentWriterOptions,
};

/// Blocks are cut at this many encoded bytes at most, whatever the options say, well below
/// the format's 64 MiB limit.
pub const MAX_BLOCK_TARGET: usize = 16 << 20;

/// Blocks are cut at this many events at most: a decoded block (136 bytes per event) then
/// stays small enough for the CPU caches when a reader collects it.
pub const MAX_BLOCK_EVENTS: u32 = 32_768;

/// File name extension of segments.
pub const SEGMENT_EXT: &str = "rseg";

// ---------------------------------------------------------------------------------------------
// Reading

/// A capture opened for reading: a directory, or a single segment file.
#[derive(Debug)]
pub struct Capture {
    path: PathBuf,
    manifest: Option<Manifest>,
    manifest_problem: Option<String>,
    segments: Vec<PathBuf>,
}

impl Capture {
    /// Opens a capture directory (`manifest.json` optional: `*.rseg` files are scanned
    /// either way) or a single segment file (its header is validated now).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SegmentError> {
        let path = path.as_ref();
        let meta = fs::metadata(path).map_err(|e| SegmentError::io(path, e))?;
        if !meta.is_dir() {
            SegmentReader::open(path)?;
            return Ok(Self {
                path: path.to_path_buf(),
                manifest: None,
                manifest_problem: None,
                segments: vec![path.to_path_buf()],
            });
        }
        let mpath = path.join(MANIFEST_FILE);
        let (manifest, manifest_problem) = match Manifest::read(&mpath) {
            Ok(m) => (Some(m), None),
            Err(SegmentError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                (None, None)
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let mut segments = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| SegmentError::io(path, e))? {
            let entry = entry.map_err(|e| SegmentError::io(path, e))?;
            let p = entry.path();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file && p.extension().is_some_and(|x| x == SEGMENT_EXT) {
                segments.push(p);
            }
        }
        segments.sort_by_key(|p| segment_sort_key(p));
        if manifest.is_none() && manifest_problem.is_none() && segments.is_empty() {
            return Err(SegmentError::NotACapture {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            manifest,
            manifest_problem,
            segments,
        })
    }

    /// The path opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The manifest, when the directory has a valid one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Why `manifest.json` was present but not used (unparsable, too large...).
    pub fn manifest_problem(&self) -> Option<&str> {
        self.manifest_problem.as_deref()
    }

    /// Segment files, in time order (by capture start, then sequence number).
    pub fn segment_paths(&self) -> &[PathBuf] {
        &self.segments
    }

    /// Opens segment `i` of [`Capture::segment_paths`].
    pub fn open_segment(&self, i: usize) -> Result<SegmentReader, SegmentError> {
        let p = self.segments.get(i).ok_or(SegmentError::NoSuchSegment {
            index: i,
            count: self.segments.len(),
        })?;
        SegmentReader::open(p)
    }

    /// Segments the manifest lists that are not on disk.
    pub fn missing_segments(&self) -> Vec<String> {
        let Some(m) = &self.manifest else {
            return Vec::new();
        };
        m.segments
            .iter()
            .filter(|s| {
                !self
                    .segments
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| n == s.file.as_str()))
            })
            .map(|s| s.file.clone())
            .collect()
    }
}

/// Sorts `<stamp>-<seq>.rseg` by stamp, then numeric sequence, then name.
fn segment_sort_key(p: &Path) -> (String, u64, String) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".rseg").unwrap_or(&name);
    match stem.rsplit_once('-') {
        Some((stamp, seq)) => match seq.parse::<u64>() {
            Ok(n) => (stamp.to_string(), n, name.clone()),
            Err(_) => (stem.to_string(), 0, name.clone()),
        },
        None => (stem.to_string(), 0, name.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Which segments ring mode keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep every segment.
    All,
    /// Delete unpinned segments (never the current one) whose last event is older than
    /// this, measured against the newest event's timestamp.
    Age(Duration),
    /// Delete the oldest unpinned segments (never the current one) while the directory
    /// holds more bytes.
    Bytes(u64),
}

/// Options of a [`CaptureWriter`].
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The capture directory (created mode 0700; must not already hold a capture).
    pub dir: PathBuf,
    /// The node.
    pub node: NodeInfo,
    /// Streams (event kinds) recorded.
    pub streams: Vec<String>,
    /// Options recorded in the manifest as given.
    pub options: BTreeMap<String, String>,
    /// A block is written when its encoded events reach this many bytes.
    pub block_max_bytes: usize,
    /// A block is written at most this long after its first event (by [`CaptureWriter::tick`]).
    pub block_max_age: Duration,
    /// A segment is sealed and a new one started past this many bytes.
    pub segment_max_bytes: u64,
    /// A segment is sealed and a new one started this long after it was created.
    pub segment_max_age: Duration,
    /// Ring mode.
    pub keep: Keep,
    /// Hard quota on the bytes of the directory (segments + manifest), never exceeded:
    /// when full, ring mode deletes old segments; otherwise new events are dropped and
    /// counted.
    pub max_size: Option<u64>,
    /// zstd level.
    pub zstd_level: i32,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("."),
            node: NodeInfo::default(),
            streams: Vec::new(),
            options: BTreeMap::new(),
            block_max_bytes: 1 << 20,
            block_max_age: Duration::from_secs(1),
            segment_max_bytes: 256 << 20,
            segment_max_age: Duration::from_secs(600),
            keep: Keep::All,
            max_size: None,
            zstd_level: 3,
        }
    }
}

impl CaptureOptions {
    /// Blocks of at most an eighth of `max_size` (in encoded bytes, more than they take on
    /// disk): under a small quota, a block as large as the default (1 MiB) plus the current
    /// segment, which is never deleted, would not fit, and ring mode would drop events
    /// instead of deleting older segments.
    fn blocks_fitted_to_quota(mut self) -> Self {
        if let Some(max) = self.max_size {
            let eighth = usize::try_from(max / 8).unwrap_or(usize::MAX).max(4 << 10);
            self.block_max_bytes = self.block_max_bytes.min(eighth);
        }
        self
    }
}

/// What a [`CaptureWriter`] has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Events written to disk (in whole blocks).
    pub events: u64,
    /// Events written, by kind name.
    pub events_by_kind: BTreeMap<String, u64>,
    /// Blocks written.
    pub blocks: u64,
    /// Segments created.
    pub segments: u64,
    /// Bytes the directory holds now (segments + manifest).
    pub bytes_on_disk: u64,
    /// Uncompressed bytes of the blocks written.
    pub bytes_uncompressed: u64,
    /// Events dropped because the quota was full.
    pub dropped_quota: u64,
    /// Segments deleted by ring mode or to make room under the quota.
    pub segments_deleted: u64,
}

struct OpenSegment {
    writer: SegmentWriter,
    opened: Instant,
}

/// Writes a capture directory: timestamped segments plus `manifest.json`.
///
/// Call [`CaptureWriter::close`] at the end; a writer dropped without it still flushes,
/// seals and writes the manifest, ignoring errors (a killed process leaves every block
/// flushed before readable, and an unsealed last segment).
pub struct CaptureWriter {
    opts: CaptureOptions,
    capture_id: String,
    stamp: String,
    started_wall_ns: u64,
    state: StateTracker,
    block: BlockBuilder,
    block_started: Option<Instant>,
    next_header_state: Option<StateSnapshot>,
    cur: Option<OpenSegment>,
    next_seq: u64,
    segments: Vec<ManifestSegment>,
    pins: Vec<(u64, u64)>,
    marks: Vec<(u64, String)>,
    restarts: Vec<Restart>,
    totals: Totals,
    stats: WriterStats,
    manifest_len: u64,
    last_ts: u64,
    manifest_skipped: u64,
    closed: bool,
}

/// Reads CLOCK_MONOTONIC and CLOCK_REALTIME together.
pub fn clock_now() -> ClockSync {
    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        if rc != 0 {
            return 0;
        }
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec).unwrap_or(0)
    }
    ClockSync {
        mono_ns: read(libc::CLOCK_MONOTONIC),
        wall_ns: read(libc::CLOCK_REALTIME),
    }
}

/// `YYYYMMDDTHHMMSSZ` for wall-clock ns since the epoch (UTC).
pub fn utc_stamp(wall_ns: u64) -> String {
    let secs = wall_ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian calendar), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn kind_name_of(i: usize) -> &'static str {
    EventKind::ALL.get(i).map_or("unknown", |k| k.name())
}

impl CaptureWriter {
    /// Creates the capture directory (mode 0700; it may exist but must not hold a capture)
    /// and writes an empty manifest. `initial_state` is the state at the capture's start
    /// (seeded from /proc by the daemon).
    pub fn create(
        opts: CaptureOptions,
        initial_state: StateSnapshot,
    ) -> Result<Self, SegmentError> {
        let now = clock_now();
        let id = format!("{}-{:08x}", utc_stamp(now.wall_ns), std::process::id());
        Self::create_with_id(opts, initial_state, id, now.wall_ns)
    }

    /// Like [`CaptureWriter::create`] with a given capture id and start time (segment names
    /// derive from the start time).
    pub fn create_with_id(
        opts: CaptureOptions,
        initial_state: StateSnapshot,
        capture_id: String,
        started_wall_ns: u64,
    ) -> Result<Self, SegmentError> {
        let opts = opts.blocks_fitted_to_quota();
        let dir = opts.dir.clone();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| SegmentError::io(&dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| SegmentError::io(&dir, e))?;
        for entry in fs::read_dir(&dir).map_err(|e| SegmentError::io(&dir, e))? {
            let entry = entry.map_err(|e| SegmentError::io(&dir, e))?;
            let p = entry.path();
            if p.file_name().is_some_and(|n| n == MANIFEST_FILE)
                || p.extension().is_some_and(|x| x == SEGMENT_EXT)
            {
                return Err(SegmentError::CaptureExists { path: dir });
            }
        }
        let mut w = Self {
            stamp: utc_stamp(started_wall_ns),
            opts,
            capture_id,
            started_wall_ns,
            state: StateTracker::new(initial_state),
            block: BlockBuilder::new(),
            block_started: None,
            next_header_state: None,
            cur: None,
            next_seq: 1,
            segments: Vec::new(),
            pins: Vec::new(),
            marks: Vec::new(),
            restarts: Vec::new(),
            totals: Totals::default(),
            stats: WriterStats::default(),
            manifest_len: 0,
            last_ts: 0,
            manifest_skipped: 0,
            closed: false,
        };
        w.write_manifest(None)?;
        Ok(w)
    }

    /// Continues the capture in `opts.dir` when it holds one (a restart after a stop or a
    /// crash), else creates it as [`CaptureWriter::create`] does.
    ///
    /// Continuing keeps every segment on disk as it is (an unsealed one stays unsealed: it
    /// reads up to its last whole block) and starts new ones after them, numbered on from the
    /// highest sequence number, under the same capture id. The manifest is made right from the
    /// files: each segment's events, time range, length and sealing as read from disk (the
    /// previous daemon may have written blocks after its last manifest rewrite, or deleted a
    /// segment before it), the totals increased by the blocks the old manifest did not count,
    /// and a [`Restart`] recording where the previous daemon stopped and whether it closed the
    /// capture. `initial_state` is the state at the restart (seeded from /proc again).
    pub fn resume_or_create(
        opts: CaptureOptions,
        initial_state: StateSnapshot,
    ) -> Result<Self, SegmentError> {
        let now = clock_now();
        let holds_capture = fs::read_dir(&opts.dir).is_ok_and(|rd| {
            rd.filter_map(Result::ok).any(|e| {
                let p = e.path();
                p.file_name().is_some_and(|n| n == MANIFEST_FILE)
                    || p.extension().is_some_and(|x| x == SEGMENT_EXT)
            })
        });
        if !holds_capture {
            return Self::create(opts, initial_state);
        }
        let opts = opts.blocks_fitted_to_quota();
        let dir = opts.dir.clone();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| SegmentError::io(&dir, e))?;
        let cap = Capture::open(&dir)?;
        let old = cap.manifest().cloned();
        let found = recount_segments(&cap, old.as_ref());
        let mut totals = old.as_ref().map(|m| m.totals.clone()).unwrap_or_default();
        totals.events += found.new_events;
        totals.bytes_uncompressed += found.new_uncompressed;
        for (i, &n) in found.new_by_kind.iter().enumerate() {
            if n > 0 {
                *totals
                    .events_by_kind
                    .entry(kind_name_of(i).to_string())
                    .or_insert(0) += n;
            }
        }
        let capture_id = old
            .as_ref()
            .map(|m| m.capture_id.clone())
            .or(found.capture_id.clone())
            .unwrap_or_else(|| format!("{}-{:08x}", utc_stamp(now.wall_ns), std::process::id()));
        let started_wall_ns = old
            .as_ref()
            .map_or(found.started_wall_ns.unwrap_or(now.wall_ns), |m| {
                m.started_wall_ns
            });
        let mut restarts = old.as_ref().map(|m| m.restarts.clone()).unwrap_or_default();
        restarts.push(Restart {
            clean: old.as_ref().is_some_and(|m| m.ended_wall_ns.is_some()),
            last_segment: found.last_segment.clone(),
            last_ts: found.last_ts,
            last_wall_ns: found.last_wall_ns,
            resumed_wall_ns: now.wall_ns,
        });
        // Pins of the previous run are kept as pins of the segments they covered.
        let pins: Vec<(u64, u64)> = found
            .segments
            .iter()
            .filter(|s| s.pinned)
            .map(|s| (s.first_ts, s.last_ts))
            .collect();
        let stats = WriterStats {
            bytes_on_disk: found.segments.iter().map(|s| s.bytes).sum(),
            ..WriterStats::default()
        };
        let next_seq = found.segments.iter().map(|s| s.seq).max().unwrap_or(0) + 1;
        let mut w = Self {
            // A new stamp: the new segments sort after the old ones (stamp, then sequence).
            stamp: utc_stamp(now.wall_ns),
            opts,
            capture_id,
            started_wall_ns,
            state: StateTracker::new(initial_state),
            block: BlockBuilder::new(),
            block_started: None,
            next_header_state: None,
            cur: None,
            next_seq,
            segments: found.segments,
            pins,
            marks: old.as_ref().map(|m| m.marks.clone()).unwrap_or_default(),
            restarts,
            totals,
            stats,
            manifest_len: fs::metadata(dir.join(MANIFEST_FILE)).map_or(0, |m| m.len()),
            last_ts: found.last_ts,
            manifest_skipped: 0,
            closed: false,
        };
        w.refresh_pins();
        w.write_manifest(None)?;
        Ok(w)
    }

    /// The capture id.
    pub fn capture_id(&self) -> &str {
        &self.capture_id
    }

    /// The capture directory.
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// The state as of the last event appended.
    pub fn state(&self) -> StateSnapshot {
        self.state.snapshot()
    }

    /// Appends an event: keeps the state snapshot current, writes the block when it is full,
    /// rotates when due.
    pub fn append(&mut self, ev: Event) -> Result<(), SegmentError> {
        self.append_ref(&ev)
    }

    /// Like [`CaptureWriter::append`], from a borrowed event (the caller keeps its buffers,
    /// to reuse them for the next one).
    pub fn append_ref(&mut self, ev: &Event) -> Result<(), SegmentError> {
        if self.cur.is_none() && self.block.is_empty() && self.next_header_state.is_none() {
            // This event starts a new segment: its header holds the state before it.
            self.next_header_state = Some(self.state.snapshot());
        }
        if self.block.is_empty() {
            self.block_started = Some(Instant::now());
        }
        self.block.push(ev);
        self.state.apply(ev);
        self.last_ts = self.last_ts.max(ev.ts);
        if let EventBody::Mark(m) = &ev.body {
            self.marks.push((ev.ts, m.note.clone()));
        }
        if self.block.is_full(self.opts.block_max_bytes) {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Call at least every 100 ms: writes a block older than `block_max_age`, rotates a
    /// segment older than `segment_max_age`, applies `keep`.
    pub fn tick(&mut self) -> Result<(), SegmentError> {
        if self
            .block_started
            .is_some_and(|t| t.elapsed() >= self.opts.block_max_age)
        {
            self.flush_block()?;
        }
        if self
            .cur
            .as_ref()
            .is_some_and(|c| c.opened.elapsed() >= self.opts.segment_max_age)
        {
            self.flush_block()?;
            self.rotate()?;
        }
        self.apply_keep()
    }

    /// Writes the open block now, durably: returns once every block written is on disk.
    pub fn flush(&mut self) -> Result<(), SegmentError> {
        self.flush_block()?;
        match &self.cur {
            Some(cur) => cur.writer.sync(),
            None => Ok(()),
        }
    }

    /// Keeps the segments overlapping `[from_ts, to_ts]` (monotonic ns), including ones not
    /// written yet, whatever `keep` says.
    pub fn pin(&mut self, from_ts: u64, to_ts: u64) {
        self.pins.push((from_ts.min(to_ts), from_ts.max(to_ts)));
        self.refresh_pins();
    }

    /// Adds lost events to the manifest totals (the caller appends the
    /// [`crate::LossMarker`] events itself).
    pub fn record_loss(&mut self, kind: EventKind, count: u64) {
        self.totals.dropped += count;
        *self
            .totals
            .dropped_by_kind
            .entry(kind.name().to_string())
            .or_insert(0) += count;
    }

    /// The sequence number of the next segment: it changes when a segment is started, so
    /// callers that keep each segment self-contained know when to repeat definitions.
    pub fn segment_seq(&self) -> u64 {
        self.next_seq
    }

    /// What was done so far.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Flushes, seals the current segment, writes the manifest with the end time.
    pub fn close(mut self) -> Result<WriterStats, SegmentError> {
        self.finish()?;
        Ok(self.stats.clone())
    }

    /// Every step is tried even when one before failed (a full disk fails the last block
    /// but may leave room for the footer): the first error is returned.
    fn finish(&mut self) -> Result<(), SegmentError> {
        self.closed = true;
        let flushed = self.flush_block();
        let sealed = self.rotate();
        let kept = self.apply_keep();
        let ended = clock_now().wall_ns;
        let written = self.write_manifest(Some(ended));
        flushed.and(sealed).and(kept).and(written)
    }

    fn pinned(&self, s: &ManifestSegment) -> bool {
        self.pins
            .iter()
            .any(|&(from, to)| s.first_ts <= to && s.last_ts >= from)
    }

    fn refresh_pins(&mut self) {
        let flags: Vec<bool> = self.segments.iter().map(|s| self.pinned(s)).collect();
        for (s, p) in self.segments.iter_mut().zip(flags) {
            s.pinned = p;
        }
    }

    /// Bytes of the directory now: segments plus manifest.
    fn usage(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>() + self.manifest_len
    }

    /// Bytes to keep free for sealing the current segment and rewriting the manifest.
    fn reserve(&self, blocks: usize) -> u64 {
        let footer = (FRAME_HEADER_LEN + TRAILER_LEN + 256) as u64 + 48 * blocks as u64;
        let manifest = self.manifest_len + 512;
        footer + manifest
    }

    /// Deletes the oldest unpinned segment other than the current one; false when none.
    fn delete_oldest(&mut self) -> Result<bool, SegmentError> {
        let cur_file = self.cur.as_ref().map(|c| c.writer.path().to_path_buf());
        let Some(i) = self.segments.iter().position(|s| {
            !self.pinned(s) && cur_file.as_deref() != Some(&self.opts.dir.join(&s.file))
        }) else {
            return Ok(false);
        };
        let s = self.segments.remove(i);
        let p = self.opts.dir.join(&s.file);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                self.segments.insert(i, s);
                return Err(SegmentError::io(p, e));
            }
        }
        self.stats.segments_deleted += 1;
        self.stats.bytes_on_disk = self.usage();
        Ok(true)
    }

    fn apply_keep(&mut self) -> Result<(), SegmentError> {
        let mut deleted = false;
        match self.opts.keep {
            Keep::All => {}
            Keep::Age(age) => {
                let cutoff = self
                    .last_ts
                    .saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
                let cur_file = self.cur.as_ref().map(|c| c.writer.path().to_path_buf());
                let old: Vec<String> = self
                    .segments
                    .iter()
                    .filter(|s| {
                        s.last_ts < cutoff
                            && !self.pinned(s)
                            && cur_file.as_deref() != Some(&self.opts.dir.join(&s.file))
                    })
                    .map(|s| s.file.clone())
                    .collect();
                for f in old {
                    let p = self.opts.dir.join(&f);
                    match fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(SegmentError::io(p, e)),
                    }
                    self.segments.retain(|s| s.file != f);
                    self.stats.segments_deleted += 1;
                    deleted = true;
                }
            }
            Keep::Bytes(limit) => {
                while self.usage() > limit && self.delete_oldest()? {
                    deleted = true;
                }
            }
        }
        if deleted {
            sync_dir(&self.opts.dir)?;
            self.write_manifest(None)?;
        }
        self.stats.bytes_on_disk = self.usage();
        Ok(())
    }

    /// Makes room for `need` more bytes under the quota (deleting old segments in ring
    /// mode). False when it cannot.
    fn make_room(&mut self, need: u64) -> Result<bool, SegmentError> {
        let Some(max) = self.opts.max_size else {
            return Ok(true);
        };
        loop {
            let blocks = self.cur.as_ref().map_or(0, |c| c.writer.blocks()) + 1;
            let total = self.usage() + need + self.reserve(blocks);
            if total <= max {
                return Ok(true);
            }
            if self.opts.keep == Keep::All || !self.delete_oldest()? {
                return Ok(false);
            }
        }
    }

    /// Writes the open block (whole, then fdatasync), creating the segment if needed.
    fn flush_block(&mut self) -> Result<(), SegmentError> {
        if self.block.is_empty() {
            return Ok(());
        }
        self.block_started = None;
        let enc = encode_block(&mut self.block, self.opts.zstd_level)?;
        let mut need = enc.frame.len() as u64;
        let mut header = None;
        if self.cur.is_none() {
            let clock = clock_now();
            let h = SegmentHeader {
                capture_id: self.capture_id.clone(),
                seq: self.next_seq,
                node: self.opts.node.clone(),
                clock,
                streams: self.opts.streams.clone(),
                state: self
                    .next_header_state
                    .clone()
                    .unwrap_or_else(|| self.state.snapshot()),
                ..SegmentHeader::default()
            };
            let bytes = encode_header(&h, self.opts.zstd_level)?;
            need += bytes.len() as u64;
            header = Some(bytes);
        }
        if !self.make_room(need)? {
            self.stats.dropped_quota += u64::from(enc.info.events);
            self.count_dropped(&enc.by_kind);
            return Ok(());
        }
        let by_kind = enc.by_kind;
        let info = match self.write_encoded(header, enc) {
            Ok(Some(info)) => info,
            Ok(None) => return Ok(()),
            Err(e) => {
                // A full disk, when starting the block's segment or writing the block: its
                // events are lost, and counted as such.
                self.count_dropped(&by_kind);
                return Err(e);
            }
        };
        self.stats.events += u64::from(info.events);
        self.stats.blocks += 1;
        self.stats.bytes_uncompressed += u64::from(info.uncompressed_len);
        self.totals.events += u64::from(info.events);
        self.totals.bytes_uncompressed += u64::from(info.uncompressed_len);
        for (i, &n) in by_kind.iter().enumerate() {
            if n > 0 {
                let name = kind_name_of(i).to_string();
                *self.stats.events_by_kind.entry(name.clone()).or_insert(0) += u64::from(n);
                *self.totals.events_by_kind.entry(name).or_insert(0) += u64::from(n);
            }
        }
        let Some(cur) = self.cur.as_ref() else {
            return Ok(());
        };
        let (first, last) = cur.writer.ts_range();
        let (events, bytes) = (cur.writer.events_written(), cur.writer.bytes_written());
        let new_segment = cur.writer.blocks() == 1;
        if let Some(s) = self.segments.last_mut() {
            (s.first_ts, s.last_ts, s.events, s.bytes) = (first, last, events, bytes);
        }
        self.refresh_pins();
        self.stats.bytes_on_disk = self.usage();
        if new_segment {
            self.write_manifest(None)?;
        }
        if bytes >= self.opts.segment_max_bytes {
            self.rotate()?;
        }
        self.apply_keep()
    }

    /// Writes an encoded block into the open segment, first starting one with `header` when
    /// given; `None` when there is no segment to write into.
    fn write_encoded(
        &mut self,
        header: Option<Vec<u8>>,
        enc: EncodedBlock,
    ) -> Result<Option<BlockInfo>, SegmentError> {
        if let Some(bytes) = header {
            let file = format!("{}-{:06}.{SEGMENT_EXT}", self.stamp, self.next_seq);
            let writer = SegmentWriter::create_encoded(
                &self.opts.dir.join(&file),
                &bytes,
                SegmentWriterOptions {
                    zstd_level: self.opts.zstd_level,
                    block_max_bytes: self.opts.block_max_bytes,
                    sync: true,
                },
            )?;
            self.segments.push(ManifestSegment {
                file,
                seq: self.next_seq,
                first_ts: enc.info.min_ts,
                last_ts: enc.info.max_ts,
                events: 0,
                bytes: writer.bytes_written(),
                sealed: false,
                pinned: false,
            });
            self.next_seq += 1;
            self.next_header_state = None;
            self.stats.segments += 1;
            self.cur = Some(OpenSegment {
                writer,
                opened: Instant::now(),
            });
            sync_dir(&self.opts.dir)?;
        }
        match self.cur.as_mut() {
            Some(cur) => cur.writer.write_block(enc).map(Some),
            None => Ok(None),
        }
    }

    /// Adds a block's events, by kind, to the dropped totals.
    fn count_dropped(&mut self, by_kind: &[u32]) {
        for (i, &n) in by_kind.iter().enumerate() {
            if n > 0 {
                self.totals.dropped += u64::from(n);
                *self
                    .totals
                    .dropped_by_kind
                    .entry(kind_name_of(i).to_string())
                    .or_insert(0) += u64::from(n);
            }
        }
    }

    /// Seals the current segment (if any) and rewrites the manifest.
    fn rotate(&mut self) -> Result<(), SegmentError> {
        let Some(cur) = self.cur.take() else {
            return Ok(());
        };
        // The quota reserve kept room for the footer; check anyway, and leave the segment
        // unsealed (still readable) rather than exceed the quota.
        let footer_len = cur.writer.encode_footer()?.len() as u64;
        let fits = self
            .opts
            .max_size
            .is_none_or(|max| self.usage() + footer_len <= max);
        let mut sealed = Ok(());
        if fits {
            match cur.writer.seal_flushed() {
                Ok(summary) => {
                    if let Some(s) = self.segments.last_mut() {
                        s.bytes = summary.bytes;
                        s.sealed = true;
                    }
                }
                Err(e) => sealed = Err(e),
            }
        }
        self.refresh_pins();
        self.stats.bytes_on_disk = self.usage();
        let written = self.write_manifest(None);
        sealed.and(written)
    }

    fn manifest(&self, ended: Option<u64>) -> Manifest {
        let mut totals = self.totals.clone();
        totals.bytes_on_disk = self.usage();
        Manifest {
            format_version: format::FORMAT_VERSION,
            capture_id: self.capture_id.clone(),
            node: self.opts.node.clone(),
            streams: self.opts.streams.clone(),
            options: self.opts.options.clone(),
            segments: self.segments.clone(),
            totals,
            started_wall_ns: self.started_wall_ns,
            ended_wall_ns: ended,
            marks: self.marks.clone(),
            restarts: self.restarts.clone(),
        }
    }

    /// Rewrites the manifest atomically, unless that would break the quota (then the old
    /// one stays; readers scan the segments anyway).
    fn write_manifest(&mut self, ended: Option<u64>) -> Result<(), SegmentError> {
        let mut json = self.manifest(ended).to_json()?;
        // bytes_on_disk inside the manifest counts the manifest itself: fix it up once.
        let segs: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let mut m = self.manifest(ended);
        m.totals.bytes_on_disk = segs + json.len() as u64;
        json = m.to_json()?;
        if let Some(max) = self.opts.max_size {
            // The old manifest and the temporary file coexist until the rename.
            if self.usage() + json.len() as u64 > max {
                self.manifest_skipped += 1;
                return Ok(());
            }
        }
        Manifest::write_atomic(&self.opts.dir, &json)?;
        self.manifest_len = json.len() as u64;
        self.stats.bytes_on_disk = self.usage();
        Ok(())
    }

    /// Manifest rewrites skipped because they would have broken the quota.
    pub fn manifest_writes_skipped(&self) -> u64 {
        self.manifest_skipped
    }
}

/// What the segments of a directory hold, read from the files, against an old manifest.
#[derive(Default)]
struct Recount {
    segments: Vec<ManifestSegment>,
    /// Events in blocks the old manifest did not count, and their kinds and bytes.
    new_events: u64,
    new_by_kind: [u64; EventKind::ALL.len()],
    new_uncompressed: u64,
    /// The segment holding the newest event, and that event's time (monotonic and wall).
    last_segment: String,
    last_ts: u64,
    last_wall_ns: u64,
    /// From the first readable segment's header, when there is no manifest.
    capture_id: Option<String>,
    started_wall_ns: Option<u64>,
}

/// Reads every segment of `cap` (its whole blocks) into manifest entries, and counts the
/// blocks that `old` did not: a manifest entry counts the first blocks of its segment (blocks
/// are only appended), so the blocks past its event count are new. A segment that cannot be
/// opened at all (a header cut short) is listed with its length and no events.
fn recount_segments(cap: &Capture, old: Option<&Manifest>) -> Recount {
    let mut out = Recount::default();
    for (i, path) in cap.segment_paths().iter().enumerate() {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let listed = old.and_then(|m| m.segments.iter().find(|s| s.file == file));
        let len = fs::metadata(path).map_or(0, |m| m.len());
        let Ok(reader) = cap.open_segment(i) else {
            out.segments.push(ManifestSegment {
                file,
                seq: listed.map_or(0, |s| s.seq),
                first_ts: 0,
                last_ts: 0,
                events: 0,
                bytes: len,
                sealed: false,
                pinned: listed.is_some_and(|s| s.pinned),
            });
            continue;
        };
        let h = reader.header();
        if out.capture_id.is_none() && !h.capture_id.is_empty() {
            out.capture_id = Some(h.capture_id.clone());
            out.started_wall_ns = Some(h.clock.wall_ns);
        }
        let blocks = reader.blocks();
        let events: u64 = blocks.iter().map(|b| u64::from(b.events)).sum();
        let first_ts = blocks.iter().map(|b| b.min_ts).min().unwrap_or(0);
        let last_ts = blocks.iter().map(|b| b.max_ts).max().unwrap_or(0);
        let mut counted = listed.map_or(0, |s| s.events);
        for (b, info) in blocks.iter().enumerate() {
            if counted >= u64::from(info.events) && counted > 0 {
                counted -= u64::from(info.events);
                continue;
            }
            counted = 0;
            out.new_events += u64::from(info.events);
            out.new_uncompressed += u64::from(info.uncompressed_len);
            let by_kind = &mut out.new_by_kind;
            let _ = reader.visit_events(b, |ev| {
                if let Some(n) = by_kind.get_mut(ev.kind().as_u8() as usize) {
                    *n += 1;
                }
            });
        }
        if !blocks.is_empty() && last_ts >= out.last_ts {
            out.last_ts = last_ts;
            out.last_wall_ns = h.clock.to_wall(last_ts);
            out.last_segment = file.clone();
        }
        out.segments.push(ManifestSegment {
            file,
            seq: h.seq,
            first_ts,
            last_ts,
            events,
            bytes: reader.file_len(),
            sealed: reader.is_sealed(),
            pinned: listed.is_some_and(|s| s.pinned),
        });
    }
    out
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2026-11-24T06:21:15Z
        assert_eq!(utc_stamp(1_795_501_275_000_000_000), "20261124T062115Z");
        // 2000-02-29T23:59:59Z
        assert_eq!(utc_stamp(951_868_799_000_000_000), "20000229T235959Z");
    }

    #[test]
    fn segment_names_sort_numerically() {
        let mut v = [
            PathBuf::from("20261124T062115Z-000010.rseg"),
            PathBuf::from("20261124T062115Z-000002.rseg"),
            PathBuf::from("20261124T062115Z-1000000.rseg"),
            PathBuf::from("20251124T062115Z-000005.rseg"),
        ];
        v.sort_by_key(|p| segment_sort_key(p));
        let names: Vec<_> = v.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            [
                "20251124T062115Z-000005.rseg",
                "20261124T062115Z-000002.rseg",
                "20261124T062115Z-000010.rseg",
                "20261124T062115Z-1000000.rseg"
            ]
        );
    }
}
