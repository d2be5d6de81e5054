//! [`Report`]: what a replay read, skipped, lost and found damaged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::clock::ClockOffset;
use crate::source::DamageInfo;
use crate::time::{format_duration, format_wall};

/// One input of a replay, as seen so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InputReport {
    /// The path given.
    pub path: PathBuf,
    /// Node name.
    pub node: String,
    /// Segments in the input.
    pub segments: u64,
    /// Segments opened.
    pub segments_opened: u64,
    /// Opened segments that were sealed.
    pub segments_sealed: u64,
    /// Segments listed in the manifest but not on disk.
    pub missing_segments: Vec<String>,
    /// Events dropped according to the manifest totals.
    pub manifest_dropped: Option<u64>,
    /// The same, by kind name.
    pub manifest_dropped_by_kind: BTreeMap<String, u64>,
    /// Events written according to the manifest totals.
    pub manifest_events: Option<u64>,
    /// When the capture started (wall ns), from the manifest.
    pub started_wall_ns: Option<u64>,
    /// Why `manifest.json` was present but could not be used.
    pub manifest_problem: Option<String>,
    /// When the capture was closed (wall ns), from the manifest; `None` while the daemon
    /// runs, or when it was killed before closing it.
    pub ended_wall_ns: Option<u64>,
    /// Whether the input has a usable manifest.
    pub has_manifest: bool,
    /// Restarts of the capture in its directory, from the manifest.
    pub restarts: Vec<retrace_segment::Restart>,
}

impl InputReport {
    /// The interruptions of this input's recording, one sentence each: every restart (what
    /// was not recorded between the two daemons; after an unclean stop, the events the killed
    /// daemon still held, at most its last second, are lost and were never counted), and a
    /// capture left without its end (the daemon still runs, or was killed).
    pub fn interruptions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.restarts {
            let gap = r.resumed_wall_ns.saturating_sub(r.last_wall_ns);
            let last = if r.last_wall_ns > 0 {
                format!("its last event on disk at {}", format_wall(r.last_wall_ns))
            } else {
                "no event on disk".to_string()
            };
            if r.clean {
                out.push(format!(
                    "{}: stopped cleanly ({last}) and restarted at {}: nothing recorded for {}",
                    self.path.display(),
                    format_wall(r.resumed_wall_ns),
                    format_duration(gap)
                ));
            } else {
                out.push(format!(
                    "{}: the capture daemon was killed or crashed ({last}, in {}) and restarted \
                     at {}: nothing recorded for {}; the events it had not yet written (at most \
                     its last second) are lost and uncounted",
                    self.path.display(),
                    if r.last_segment.is_empty() {
                        "-"
                    } else {
                        &r.last_segment
                    },
                    format_wall(r.resumed_wall_ns),
                    format_duration(gap)
                ));
            }
        }
        if self.has_manifest && self.ended_wall_ns.is_none() {
            out.push(format!(
                "{}: not closed: the capture daemon is still running, or was killed or crashed \
                 (then the events it had not yet written, at most its last second, are lost and \
                 uncounted)",
                self.path.display()
            ));
        }
        out
    }
}

/// Statistics and damage of a replay. Complete once the [`crate::Replay`] is exhausted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The inputs.
    pub inputs: Vec<InputReport>,
    /// Events decoded from blocks.
    pub events_read: u64,
    /// Events inside the time window.
    pub events_in_window: u64,
    /// Events that passed the window and the filter (those yielded).
    pub events_matched: u64,
    /// Matched events by kind name.
    pub events_by_kind: BTreeMap<String, u64>,
    /// Wall time of the first matched event.
    pub first_wall_ns: Option<u64>,
    /// Wall time of the last matched event.
    pub last_wall_ns: Option<u64>,
    /// Size of the segment files opened.
    pub bytes_on_disk: u64,
    /// Compressed bytes of the blocks decoded.
    pub bytes_compressed: u64,
    /// Uncompressed bytes of the blocks decoded.
    pub bytes_uncompressed: u64,
    /// Blocks decoded.
    pub blocks_read: u64,
    /// Blocks skipped whole because they lie outside the time window.
    pub blocks_skipped: u64,
    /// Damaged regions: torn tails, bad blocks, unreadable segments.
    pub damaged_blocks: u64,
    /// Bytes that could not be read.
    pub bytes_lost: u64,
    /// Each damage, in the order found.
    pub damage: Vec<DamageInfo>,
    /// Events recorded as dropped by loss markers in the window.
    pub drops_recorded: u64,
    /// The same, by kind name of the dropped events.
    pub drops_by_kind: BTreeMap<String, u64>,
    /// Events emitted before one already emitted (block time ranges that lied, or the
    /// reorder buffer's bound was reached). 0 on healthy captures.
    pub out_of_order: u64,
    /// Times the reorder buffer reached its bound and had to emit early.
    pub reorder_overflows: u64,
    /// The clock offset of every node against the first, when several were merged with
    /// their offsets estimated (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clock_offsets: Vec<ClockOffset>,
}

impl Report {
    /// Uncompressed bytes per compressed byte of the blocks decoded.
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.bytes_compressed > 0)
            .then(|| self.bytes_uncompressed as f64 / self.bytes_compressed as f64)
    }

    /// Events dropped according to the manifests, summed over the inputs that have one.
    pub fn manifest_dropped(&self) -> Option<u64> {
        let v: Vec<u64> = self
            .inputs
            .iter()
            .filter_map(|i| i.manifest_dropped)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }

    /// Events dropped according to the manifests, by kind name, summed over the inputs.
    pub fn manifest_dropped_by_kind(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for i in &self.inputs {
            for (k, n) in &i.manifest_dropped_by_kind {
                *out.entry(k.clone()).or_default() += n;
            }
        }
        out
    }

    /// Segments listed in manifests but missing on disk, over all inputs.
    pub fn missing_segments(&self) -> Vec<String> {
        self.inputs
            .iter()
            .flat_map(|i| i.missing_segments.iter().cloned())
            .collect()
    }

    /// Segments opened, and of those how many were sealed.
    pub fn segments(&self) -> (u64, u64) {
        self.inputs.iter().fold((0, 0), |(o, s), i| {
            (o + i.segments_opened, s + i.segments_sealed)
        })
    }

    /// The report as JSON (the `--stats --output jsonl` form).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("compression_ratio".into(), self.compression_ratio().into());
            obj.insert("manifest_dropped".into(), self.manifest_dropped().into());
            let (opened, sealed) = self.segments();
            obj.insert("segments_opened".into(), opened.into());
            obj.insert("segments_sealed".into(), sealed.into());
            obj.insert("missing_segments".into(), self.missing_segments().into());
            let interruptions: Vec<String> =
                self.inputs.iter().flat_map(|i| i.interruptions()).collect();
            obj.insert("interruptions".into(), interruptions.into());
            obj.insert(
                "first_time".into(),
                self.first_wall_ns.map(format_wall).into(),
            );
            obj.insert(
                "last_time".into(),
                self.last_wall_ns.map(format_wall).into(),
            );
        }
        v
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {} ({b} B)", UNITS[u])
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.inputs {
            writeln!(
                f,
                "input        {} (node {}): {} segment(s), {} opened, {} sealed{}",
                i.path.display(),
                if i.node.is_empty() { "?" } else { &i.node },
                i.segments,
                i.segments_opened,
                i.segments_sealed,
                if i.segments_opened > i.segments_sealed {
                    ", NOT all sealed"
                } else {
                    ""
                }
            )?;
        }
        writeln!(f, "events       {}", self.events_matched)?;
        for (kind, n) in &self.events_by_kind {
            writeln!(f, "  {kind:<14} {n}")?;
        }
        if self.events_matched != self.events_read {
            writeln!(
                f,
                "events read  {} ({} in the time window)",
                self.events_read, self.events_in_window
            )?;
        }
        match (self.first_wall_ns, self.last_wall_ns) {
            (Some(a), Some(b)) => writeln!(
                f,
                "time span    {} .. {} ({})",
                format_wall(a),
                format_wall(b),
                format_duration(b.saturating_sub(a))
            )?,
            _ => writeln!(f, "time span    -")?,
        }
        writeln!(f, "on disk      {}", human_bytes(self.bytes_on_disk))?;
        writeln!(f, "uncompressed {}", human_bytes(self.bytes_uncompressed))?;
        match self.compression_ratio() {
            Some(r) => writeln!(f, "compression  {r:.2}x ({} blocks)", self.blocks_read)?,
            None => writeln!(f, "compression  - (no block read)")?,
        }
        write!(
            f,
            "drops        {} recorded by loss markers",
            self.drops_recorded
        )?;
        if !self.drops_by_kind.is_empty() {
            let parts: Vec<String> = self
                .drops_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        match self.manifest_dropped() {
            Some(d) => writeln!(f, "; {d} in manifest totals")?,
            None => writeln!(f, "; no manifest")?,
        }
        writeln!(
            f,
            "damage       {} damaged block(s), {} lost",
            self.damaged_blocks,
            human_bytes(self.bytes_lost)
        )?;
        for d in &self.damage {
            writeln!(f, "  {d}")?;
        }
        let interruptions: Vec<String> =
            self.inputs.iter().flat_map(|i| i.interruptions()).collect();
        if interruptions.is_empty() {
            writeln!(f, "interrupted  no")?;
        } else {
            writeln!(f, "interrupted  {} time(s)", interruptions.len())?;
            for i in &interruptions {
                writeln!(f, "  {i}")?;
            }
        }
        let missing = self.missing_segments();
        if missing.is_empty() {
            writeln!(f, "missing      none")?;
        } else {
            writeln!(
                f,
                "missing      {} segment(s): {}",
                missing.len(),
                missing.join(", ")
            )?;
        }
        let (opened, sealed) = self.segments();
        writeln!(
            f,
            "sealed       {}",
            if opened == sealed {
                "yes".to_string()
            } else {
                format!("no ({sealed} of {opened} segments)")
            }
        )?;
        if self.out_of_order > 0 {
            writeln!(f, "out of order {} event(s)", self.out_of_order)?;
        }
        if !self.clock_offsets.is_empty() {
            writeln!(f, "clocks       (node's clock minus the reference's)")?;
            for o in &self.clock_offsets {
                writeln!(f, "  {o}")?;
            }
        }
        Ok(())
    }
}
