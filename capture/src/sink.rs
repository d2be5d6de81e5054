//! Where the daemon's events go: [`EventSink`], implemented by the segment crate's
//! `CaptureWriter` (the real thing) and by [`MemorySink`] (tests).

use std::collections::BTreeMap;

use retrace_segment::{Event, EventKind};

use crate::CaptureError;

/// Totals a sink reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Events written.
    pub events: u64,
    /// Events written, by kind name.
    pub events_by_kind: BTreeMap<String, u64>,
    /// Bytes on disk.
    pub bytes_on_disk: u64,
    /// Bytes before compression.
    pub bytes_uncompressed: u64,
    /// Segment files created.
    pub segments: u64,
    /// Segments deleted by the ring policy.
    pub segments_deleted: u64,
    /// Events dropped by the hard quota.
    pub dropped_quota: u64,
}

/// A destination for events (the writer thread's only view of the capture directory).
pub trait EventSink: Send {
    /// Appends one event (the caller keeps it, and may reuse its buffers).
    fn append(&mut self, ev: &Event) -> Result<(), CaptureError>;
    /// Periodic work: flush old blocks, rotate, apply the ring policy. Called every 100 ms.
    fn tick(&mut self) -> Result<(), CaptureError>;
    /// Writes the open block now.
    fn flush(&mut self) -> Result<(), CaptureError>;
    /// Keeps segments overlapping `[from_ns, to_ns]` (monotonic) out of the ring's deletions.
    fn pin(&mut self, from_ns: u64, to_ns: u64);
    /// Adds dropped events to the capture's totals.
    fn record_loss(&mut self, kind: EventKind, count: u64);
    /// Totals so far.
    fn stats(&self) -> SinkStats;
    /// Which segment appends go to now: it changes when a new segment is started (profile
    /// definitions are written again in each).
    fn segment_seq(&self) -> u64 {
        0
    }
    /// Flushes, seals and writes the manifest.
    fn close(self: Box<Self>) -> Result<SinkStats, CaptureError>;
}

/// Appends an event the daemon made itself (not converted from a kernel record): a loss
/// marker is also counted in the sink's drop totals (the manifest's).
pub fn append_own(sink: &mut dyn EventSink, ev: &Event) -> Result<(), CaptureError> {
    if let retrace_segment::EventBody::Loss(l) = &ev.body {
        sink.record_loss(l.kind, l.count);
    }
    sink.append(ev)
}

impl EventSink for retrace_segment::CaptureWriter {
    fn append(&mut self, ev: &Event) -> Result<(), CaptureError> {
        Ok(retrace_segment::CaptureWriter::append_ref(self, ev)?)
    }
    fn tick(&mut self) -> Result<(), CaptureError> {
        Ok(retrace_segment::CaptureWriter::tick(self)?)
    }
    fn flush(&mut self) -> Result<(), CaptureError> {
        Ok(retrace_segment::CaptureWriter::flush(self)?)
    }
    fn pin(&mut self, from_ns: u64, to_ns: u64) {
        retrace_segment::CaptureWriter::pin(self, from_ns, to_ns)
    }
    fn record_loss(&mut self, kind: EventKind, count: u64) {
        retrace_segment::CaptureWriter::record_loss(self, kind, count)
    }
    fn stats(&self) -> SinkStats {
        convert_stats(retrace_segment::CaptureWriter::stats(self))
    }
    fn segment_seq(&self) -> u64 {
        retrace_segment::CaptureWriter::segment_seq(self)
    }
    fn close(self: Box<Self>) -> Result<SinkStats, CaptureError> {
        let s = retrace_segment::CaptureWriter::close(*self)?;
        Ok(convert_stats(&s))
    }
}

fn convert_stats(s: &retrace_segment::WriterStats) -> SinkStats {
    SinkStats {
        events: s.events,
        events_by_kind: s.events_by_kind.clone(),
        bytes_on_disk: s.bytes_on_disk,
        bytes_uncompressed: s.bytes_uncompressed,
        segments: s.segments,
        segments_deleted: s.segments_deleted,
        dropped_quota: s.dropped_quota,
    }
}

/// Keeps events in memory (tests).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Events appended.
    pub events: Vec<Event>,
    /// Pins asked for.
    pub pins: Vec<(u64, u64)>,
    /// Losses recorded.
    pub losses: BTreeMap<EventKind, u64>,
    /// Ticks seen.
    pub ticks: u64,
}

impl EventSink for MemorySink {
    fn append(&mut self, ev: &Event) -> Result<(), CaptureError> {
        self.events.push(ev.clone());
        Ok(())
    }
    fn tick(&mut self) -> Result<(), CaptureError> {
        self.ticks += 1;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
    fn pin(&mut self, from_ns: u64, to_ns: u64) {
        self.pins.push((from_ns, to_ns));
    }
    fn record_loss(&mut self, kind: EventKind, count: u64) {
        *self.losses.entry(kind).or_default() += count;
    }
    fn stats(&self) -> SinkStats {
        let mut by = BTreeMap::new();
        for e in &self.events {
            *by.entry(e.kind().name().to_string()).or_default() += 1;
        }
        SinkStats {
            events: self.events.len() as u64,
            events_by_kind: by,
            ..Default::default()
        }
    }
    fn close(self: Box<Self>) -> Result<SinkStats, CaptureError> {
        Ok(self.stats())
    }
}
