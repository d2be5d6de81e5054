//! `manifest.json`: what a capture directory holds, rewritten atomically.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::SegmentError;
use crate::event::NodeInfo;

/// File name of the manifest in a capture directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Largest manifest accepted when reading (a bound on memory for hostile directories).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// A capture directory's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the segments.
    pub format_version: u16,
    /// Capture id.
    pub capture_id: String,
    /// The node that recorded the capture.
    pub node: NodeInfo,
    /// Streams (event kinds) recorded.
    pub streams: Vec<String>,
    /// Capture options, as given by the capture daemon.
    pub options: BTreeMap<String, String>,
    /// Segments, oldest first (deleted segments are removed).
    pub segments: Vec<ManifestSegment>,
    /// Totals over the capture's life (deleted segments included).
    pub totals: Totals,
    /// Capture start, wall-clock ns since the epoch.
    pub started_wall_ns: u64,
    /// Capture end, when closed.
    pub ended_wall_ns: Option<u64>,
    /// Marks: (monotonic ns, note).
    pub marks: Vec<(u64, String)>,
    /// Each time the capture was continued by a new daemon in the same directory, oldest
    /// first (absent in captures written by one daemon only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<Restart>,
}

/// A restart of the capture in its directory: what the previous daemon left, and when the
/// new one continued. Between `last_wall_ns` and `resumed_wall_ns` nothing was recorded; when
/// the previous daemon did not close the capture (killed, crashed, machine lost), the events
/// it still held in memory (at most its last second) are lost too, uncounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// Whether the previous daemon closed the capture (its end was in the manifest).
    pub clean: bool,
    /// The last segment the previous daemon wrote ("" when none).
    pub last_segment: String,
    /// The last event on disk before the restart (monotonic ns), 0 when none.
    pub last_ts: u64,
    /// The same on the wall clock (ns since the epoch, by that segment's clock), 0 when none.
    pub last_wall_ns: u64,
    /// When the new daemon continued the capture (wall ns).
    pub resumed_wall_ns: u64,
}

/// One segment listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSegment {
    /// File name within the directory.
    pub file: String,
    /// Sequence number.
    pub seq: u64,
    /// First event timestamp (monotonic ns), 0 when empty.
    pub first_ts: u64,
    /// Last event timestamp (monotonic ns), 0 when empty.
    pub last_ts: u64,
    /// Events in whole blocks.
    pub events: u64,
    /// File length.
    pub bytes: u64,
    /// True once the footer was written.
    pub sealed: bool,
    /// Kept by a pin, whatever the ring mode says.
    pub pinned: bool,
}

/// Totals over a capture's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Events written.
    pub events: u64,
    /// Bytes currently on disk (segments and manifest).
    pub bytes_on_disk: u64,
    /// Uncompressed bytes of the blocks written.
    pub bytes_uncompressed: u64,
    /// Events written, by kind name.
    pub events_by_kind: BTreeMap<String, u64>,
    /// Events lost (recorded losses plus quota drops).
    pub dropped: u64,
    /// Events lost, by kind name.
    pub dropped_by_kind: BTreeMap<String, u64>,
}

impl Manifest {
    /// Reads and parses `path` (bounded size).
    pub fn read(path: &Path) -> Result<Self, SegmentError> {
        let meta = fs::metadata(path).map_err(|e| SegmentError::io(path, e))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(SegmentError::BadManifest {
                path: path.to_path_buf(),
                reason: format!(
                    "{} bytes, more than the {MAX_MANIFEST_BYTES} byte limit",
                    meta.len()
                ),
            });
        }
        let bytes = fs::read(path).map_err(|e| SegmentError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| SegmentError::BadManifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The JSON text written to disk.
    pub fn to_json(&self) -> Result<Vec<u8>, SegmentError> {
        let mut v = serde_json::to_vec_pretty(self)
            .map_err(|e| SegmentError::Encode(format!("manifest: {e}")))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Writes `json` to `dir/manifest.json` atomically: a temporary file (mode 0600) written
    /// and synced, renamed over the old one, then the directory synced.
    pub fn write_atomic(dir: &Path, json: &[u8]) -> Result<(), SegmentError> {
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let dst = dir.join(MANIFEST_FILE);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| SegmentError::io(&tmp, e))?;
        if let Err(e) = f.write_all(json).and_then(|()| f.sync_all()) {
            // A full disk: the old manifest stays, the partial one goes.
            drop(f);
            let _ = fs::remove_file(&tmp);
            return Err(SegmentError::io(&tmp, e));
        }
        drop(f);
        fs::rename(&tmp, &dst).map_err(|e| SegmentError::io(&dst, e))?;
        sync_dir(dir)
    }
}

/// fsyncs a directory (so renames and deletions in it are durable).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SegmentError::io(dir, e))
}
