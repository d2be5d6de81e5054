//! The [`InputSource`] / [`SegmentSource`] implementations over `retrace-segment`'s
//! [`Capture`] and [`SegmentReader`].

use std::path::{Path, PathBuf};

use retrace_segment::{Capture, ClockSync, Event, SegmentError, SegmentReader, StateSnapshot};

use crate::source::{BlockMeta, DamageInfo, InputSource, ManifestFacts, SegmentSource};

/// A capture directory or a single segment file, opened with [`Capture::open`].
pub struct CaptureInput {
    capture: Capture,
    single_file: bool,
    lens: Vec<u64>,
}

impl CaptureInput {
    /// Opens `path`: a capture directory or one segment file (whose header is validated now).
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        let capture = Capture::open(path)?;
        let single_file = !path.is_dir();
        let lens = capture
            .segment_paths()
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        Ok(Self {
            capture,
            single_file,
            lens,
        })
    }

    /// Why the manifest was present but not used, if it was.
    pub fn manifest_problem(&self) -> Option<&str> {
        self.capture.manifest_problem()
    }
}

impl InputSource for CaptureInput {
    fn path(&self) -> &Path {
        self.capture.path()
    }

    fn is_single_file(&self) -> bool {
        self.single_file
    }

    fn segment_count(&self) -> usize {
        self.capture.segment_paths().len()
    }

    fn segment_path(&self, i: usize) -> PathBuf {
        self.capture
            .segment_paths()
            .get(i)
            .cloned()
            .unwrap_or_default()
    }

    fn segment_len(&self, i: usize) -> u64 {
        self.lens.get(i).copied().unwrap_or(0)
    }

    fn open_segment(&self, i: usize) -> Result<Box<dyn SegmentSource>, String> {
        match self.capture.open_segment(i) {
            Ok(reader) => Ok(Box::new(SegmentInput { reader })),
            Err(e) => {
                let msg = one_line(&e);
                let prefix = format!("{}: ", self.segment_path(i).display());
                Err(msg
                    .strip_prefix(&prefix)
                    .map_or(msg.clone(), str::to_string))
            }
        }
    }

    fn manifest(&self) -> Option<ManifestFacts> {
        let m = self.capture.manifest()?;
        Some(ManifestFacts {
            node: m.node.name.clone(),
            started_wall_ns: m.started_wall_ns,
            ended_wall_ns: m.ended_wall_ns,
            dropped: m.totals.dropped,
            dropped_by_kind: m.totals.dropped_by_kind.clone(),
            events: m.totals.events,
            missing_segments: self.capture.missing_segments(),
            restarts: m.restarts.clone(),
        })
    }
}

/// One segment, read with [`SegmentReader`].
pub struct SegmentInput {
    reader: SegmentReader,
}

impl SegmentSource for SegmentInput {
    fn path(&self) -> &Path {
        self.reader.path()
    }

    fn node_name(&self) -> String {
        let node = &self.reader.header().node;
        if node.name.is_empty() {
            node.hostname.clone()
        } else {
            node.name.clone()
        }
    }

    fn clock(&self) -> ClockSync {
        self.reader.header().clock
    }

    fn state(&self) -> &StateSnapshot {
        &self.reader.header().state
    }

    fn blocks(&self) -> Vec<BlockMeta> {
        self.reader
            .blocks()
            .iter()
            .map(|b| BlockMeta {
                offset: b.offset,
                compressed_len: u64::from(b.compressed_len),
                uncompressed_len: u64::from(b.uncompressed_len),
                events: u64::from(b.events),
                min_ts: b.min_ts,
                max_ts: b.max_ts,
            })
            .collect()
    }

    fn read_block(&self, i: usize) -> Result<Vec<Event>, String> {
        self.reader.read_block(i).map_err(|e| one_line(&e))
    }

    fn damage(&self) -> Vec<DamageInfo> {
        self.reader
            .damage()
            .iter()
            // An unsealed segment (writer still running or killed) is not damage by itself;
            // a torn tail shows up as its own damage.
            .filter(|d| !(matches!(d.error, SegmentError::MissingFooter) && d.bytes_lost == 0))
            .map(|d| DamageInfo {
                path: if d.path.as_os_str().is_empty() {
                    self.reader.path().to_path_buf()
                } else {
                    d.path.clone()
                },
                offset: d.offset,
                bytes_lost: d.bytes_lost,
                message: one_line(&d.error),
            })
            .collect()
    }

    fn is_sealed(&self) -> bool {
        self.reader.is_sealed()
    }

    fn file_len(&self) -> u64 {
        self.reader.file_len()
    }
}

/// An error as one line (no embedded newlines).
pub(crate) fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace(['\n', '\r'], " ")
}
