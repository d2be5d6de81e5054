//! [`Replay`]: the k-way merge of inputs into one stream ordered by wall-clock time.
//!
//! # How the merge stays ordered with bounded memory
//!
//! Every block of every open segment is known by its index entry (`min_ts`, `max_ts`) before
//! it is decoded. Blocks wait in a *pending* heap keyed by their smallest wall-clock time;
//! decoded events wait in a *reorder buffer* (each block's events sorted by wall time, merged
//! through a small heap of run heads). The merge decodes the
//! next pending block while its smallest time is not after the smallest buffered event, then
//! emits that event. An event is emitted only when no block still pending can hold an earlier
//! one, so events that are slightly out of order inside a block or across blocks (different
//! CPUs) come out in order, while only the blocks overlapping the current moment are in memory.
//!
//! Segments are opened lazily: opening segment `k` of an input schedules segment `k + 1` at the
//! smallest time of segment `k`'s blocks, so at most about two segments per input are open.
//! This assumes a segment holds no event earlier than the earliest event of the segment before
//! it (true when rotation happens by size or age, far above cross-CPU skew); an event breaking
//! it is still emitted, and counted in [`Report::out_of_order`].
//! Monotonic timestamps are mapped to wall time with each segment header's [`ClockSync`], which
//! is what lines up several nodes.
//!
//! The reorder buffer is bounded ([`ReplayOptions::max_buffered_events`]): when a lying block
//! index would make it grow further, events are emitted early and counted in
//! [`Report::out_of_order`] instead of exhausting memory.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use retrace_segment::{ClockSync, Endpoint, Event, EventBody, ProcessInfo, StateSnapshot};

use crate::clock::ClockMode;
use crate::filter::Filter;
use crate::report::{InputReport, Report};
use crate::source::{BlockMeta, DamageInfo, InputSource, SegmentSource};
use crate::state::{ProcessTable, SocketTable};
use crate::time::{format_wall, TimeSpec};
use crate::view::{event_endpoints, EventView};

/// Default bound of the reorder buffer, in events.
pub const DEFAULT_MAX_BUFFERED_EVENTS: usize = 4_000_000;

/// What to replay: a time window and a filter.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Start of the window (inclusive); `None` = the beginning.
    pub from: Option<TimeSpec>,
    /// End of the window (inclusive); `None` = the end.
    pub to: Option<TimeSpec>,
    /// Only events that pass this filter are yielded.
    pub filter: Option<Filter>,
    /// Bound of the reorder buffer (events decoded but not emitted yet).
    pub max_buffered_events: usize,
    /// Clock offsets between nodes: estimated and corrected (default), off, or given.
    pub clock: ClockMode,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            filter: None,
            max_buffered_events: DEFAULT_MAX_BUFFERED_EVENTS,
            clock: ClockMode::default(),
        }
    }
}

/// An input could not be replayed at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No path was given.
    #[error("no capture given")]
    NoInputs,
    /// A path could not be opened as a capture (missing, not a segment, unsupported version).
    #[error("{}: {message}", path.display())]
    Input {
        /// The path.
        path: PathBuf,
        /// Why, on one line.
        message: String,
    },
    /// `from` is after `to`.
    #[error("empty time window: --from {from} is after --to {to}")]
    EmptyWindow {
        /// `from`, resolved, RFC 3339.
        from: String,
        /// `to`, resolved, RFC 3339.
        to: String,
    },
}

/// One event of the merged stream, with its context.
#[derive(Clone, Debug)]
pub struct ReplayedEvent {
    /// The event as recorded (its `ts` is the node's monotonic ns).
    pub event: Event,
    /// Wall-clock ns since the epoch, through the segment's clock mapping.
    pub wall_ns: u64,
    /// Name of the node that recorded it.
    pub node: Arc<str>,
    /// Index of the input (in the order given) it came from.
    pub input: usize,
    /// The owning process, from the process table at that moment.
    pub process: Option<Arc<ProcessInfo>>,
    /// `(local, remote)` endpoints, from the event or the socket table.
    pub endpoints: Option<(Endpoint, Endpoint)>,
}

impl ReplayedEvent {
    /// The event with its context, as filters and output formats see it.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            event: &self.event,
            node: &self.node,
            process: self.process.as_deref(),
            endpoints: self.endpoints,
        }
    }

    /// Command name of the owning process.
    pub fn comm(&self) -> Option<&str> {
        self.view().comm()
    }

    /// Executable of the owning process.
    pub fn exe(&self) -> Option<&str> {
        self.view().exe()
    }

    /// cgroup of the owning process.
    pub fn cgroup(&self) -> Option<&str> {
        self.view().cgroup()
    }
}

struct Pending {
    key: u64,
    order: u64,
    what: PendingWhat,
}

enum PendingWhat {
    Open {
        input: usize,
        seg: usize,
    },
    Block {
        input: usize,
        seg: usize,
        block: usize,
        meta: BlockMeta,
        min_wall: u64,
    },
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.key, self.order) == (o.key, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.key, self.order).cmp(&(o.key, o.order))
    }
}

/// A wall time moved by `-offset` (a node's clock brought onto the reference's).
fn shift_wall(wall_ns: u64, offset: i64) -> u64 {
    let v = i128::from(wall_ns) - i128::from(offset);
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// A segment's clock mapping with the node's offset taken out.
fn corrected_clock(clock: ClockSync, offset: i64) -> ClockSync {
    ClockSync {
        mono_ns: clock.mono_ns,
        wall_ns: shift_wall(clock.wall_ns, offset),
    }
}

/// Decoded events waiting to be emitted: one run per decoded block (its events in write
/// order plus their `(wall, index)` keys sorted), merged through a small heap of run heads. An
/// event is moved once in and once out; only the 16-byte keys are sorted.
#[derive(Default)]
struct ReorderBuffer {
    runs: Vec<Option<Run>>,
    free: Vec<usize>,
    heads: BinaryHeap<Reverse<(u64, u64, usize)>>,
    len: usize,
    order: u64,
}

struct Run {
    input: usize,
    /// The block's events in write order; each is taken once (its key is unique), leaving
    /// an empty mark behind.
    events: Vec<Event>,
    keys: Vec<(u64, u32)>,
    pos: usize,
}

impl ReorderBuffer {
    /// Adds the events of one block, in write order, with their wall-clock times.
    fn push_run(&mut self, input: usize, events: Vec<Event>, clock: ClockSync) {
        if events.is_empty() {
            return;
        }
        let mut keys: Vec<(u64, u32)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (clock.to_wall(e.ts), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        // The index breaks ties: equal times keep their write order.
        sort_block_keys(&mut keys);
        let first = keys[0].0;
        self.len += events.len();
        let run = Some(Run {
            input,
            events,
            keys,
            pos: 0,
        });
        let slot = match self.free.pop() {
            Some(slot) => {
                self.runs[slot] = run;
                slot
            }
            None => {
                self.runs.push(run);
                self.runs.len() - 1
            }
        };
        self.order += 1;
        self.heads.push(Reverse((first, self.order, slot)));
    }

    /// Time of the earliest event.
    fn peek_wall(&self) -> Option<u64> {
        self.heads.peek().map(|Reverse((w, ..))| *w)
    }

    /// Takes the earliest event: `(wall, input, event)`.
    fn pop(&mut self) -> Option<(u64, usize, Event)> {
        let Reverse((_, order, slot)) = self.heads.pop()?;
        let run = self.runs.get_mut(slot)?.as_mut()?;
        let (wall, idx) = *run.keys.get(run.pos)?;
        run.pos += 1;
        let input = run.input;
        let event = run
            .events
            .get_mut(idx as usize)
            .map(|e| std::mem::replace(e, Event::new(0, EventBody::empty())));
        self.len -= 1;
        match run.keys.get(run.pos) {
            Some((next, _)) => self.heads.push(Reverse((*next, order, slot))),
            None => {
                self.runs[slot] = None;
                self.free.push(slot);
            }
        }
        event.map(|e| (wall, input, e))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = ReorderBuffer::default();
    }
}

struct OpenSeg {
    reader: Box<dyn SegmentSource>,
    clock: ClockSync,
    max_wall: u64,
    remaining: usize,
    /// File bytes outside blocks (header, footer), counted as progress when the segment is done.
    slack: u64,
}

struct InputState {
    source: Box<dyn InputSource>,
    node: Arc<str>,
    open: HashMap<usize, OpenSeg>,
    procs: ProcessTable,
    socks: SocketTable,
    /// Snapshots of opened segments, applied when the stream reaches their time.
    snapshots: VecDeque<(u64, StateSnapshot)>,
    seeded: bool,
    /// This node's clock minus the reference's (ns): its wall times are moved by `-offset`.
    clock_offset: i64,
}

/// One time-ordered stream of events from one or more captures. See the crate documentation.
pub struct Replay {
    inputs: Vec<InputState>,
    pending: BinaryHeap<Reverse<Pending>>,
    buffer: ReorderBuffer,
    order: u64,
    from: u64,
    to: u64,
    start_wall: u64,
    filter: Option<Filter>,
    max_buffered: usize,
    report: Report,
    damage_drained: usize,
    last_wall: u64,
    progress_done: Arc<AtomicU64>,
    progress_total: u64,
    finished: bool,
}

impl Replay {
    /// Opens inputs given as [`InputSource`]s. A single-file input that cannot be opened (not
    /// a segment, unsupported version) is an error; damage inside captures is not, it is
    /// reported by [`Replay::report`].
    pub fn from_sources(
        sources: Vec<Box<dyn InputSource>>,
        opts: ReplayOptions,
    ) -> Result<Replay, ReplayError> {
        if sources.is_empty() {
            return Err(ReplayError::NoInputs);
        }
        let mut report = Report::default();
        let mut progress_total = 0;
        let mut inputs = Vec::with_capacity(sources.len());
        let offsets = match &opts.clock {
            ClockMode::Fixed(v) => v.clone(),
            ClockMode::Estimate | ClockMode::Off => Vec::new(),
        };
        for (i, source) in sources.into_iter().enumerate() {
            let clock_offset = offsets.get(i).copied().unwrap_or(0);
            let manifest = source.manifest();
            let segments = source.segment_count();
            progress_total += (0..segments).map(|i| source.segment_len(i)).sum::<u64>();
            report.inputs.push(InputReport {
                path: source.path().to_path_buf(),
                node: manifest
                    .as_ref()
                    .map(|m| m.node.clone())
                    .unwrap_or_default(),
                segments: segments as u64,
                missing_segments: manifest
                    .as_ref()
                    .map(|m| m.missing_segments.clone())
                    .unwrap_or_default(),
                manifest_dropped: manifest.as_ref().map(|m| m.dropped),
                manifest_dropped_by_kind: manifest
                    .as_ref()
                    .map(|m| m.dropped_by_kind.clone())
                    .unwrap_or_default(),
                manifest_events: manifest.as_ref().map(|m| m.events),
                started_wall_ns: manifest
                    .as_ref()
                    .map(|m| shift_wall(m.started_wall_ns, clock_offset)),
                ended_wall_ns: manifest
                    .as_ref()
                    .and_then(|m| m.ended_wall_ns)
                    .map(|w| shift_wall(w, clock_offset)),
                has_manifest: manifest.is_some(),
                restarts: manifest
                    .as_ref()
                    .map(|m| m.restarts.clone())
                    .unwrap_or_default(),
                ..Default::default()
            });
            let node: Arc<str> = match manifest.as_ref().map(|m| m.node.as_str()) {
                Some(n) if !n.is_empty() => n.into(),
                _ => "".into(),
            };
            inputs.push(InputState {
                source,
                node,
                open: HashMap::new(),
                procs: ProcessTable::default(),
                socks: SocketTable::default(),
                snapshots: VecDeque::new(),
                seeded: false,
                clock_offset,
            });
        }
        let mut r = Replay {
            inputs,
            pending: BinaryHeap::new(),
            buffer: ReorderBuffer::default(),
            order: 0,
            from: 0,
            to: u64::MAX,
            start_wall: 0,
            filter: opts.filter,
            max_buffered: opts.max_buffered_events.max(1),
            report,
            damage_drained: 0,
            last_wall: 0,
            progress_done: Arc::new(AtomicU64::new(0)),
            progress_total,
            finished: false,
        };
        // Open the first readable segment of every input now: it gives the node name, the
        // start of the data, and the errors worth failing on.
        for input in 0..r.inputs.len() {
            if r.inputs[input].source.segment_count() == 0 {
                continue;
            }
            if r.inputs[input].source.is_single_file() {
                if let Err(message) = r.try_open_first(input) {
                    let path = r.inputs[input].source.path().to_path_buf();
                    return Err(ReplayError::Input { path, message });
                }
            } else {
                r.push(0, PendingWhat::Open { input, seg: 0 });
            }
        }
        while let Some(Reverse(p)) = r.pending.peek() {
            if p.key != 0 || !matches!(p.what, PendingWhat::Open { .. }) {
                break;
            }
            if let Some(Reverse(p)) = r.pending.pop() {
                r.process(p);
            }
        }
        for (i, input) in r.inputs.iter_mut().enumerate() {
            if input.node.is_empty() {
                input.node = input.source.path().display().to_string().into();
            }
            r.report.inputs[i].node = input.node.to_string();
        }
        let data_start = r.pending.iter().map(|Reverse(p)| p.key).min();
        let manifest_start = r
            .report
            .inputs
            .iter()
            .filter_map(|i| i.started_wall_ns)
            .min();
        r.start_wall = data_start.or(manifest_start).unwrap_or(0);
        r.from = opts.from.map_or(0, |t| t.resolve(r.start_wall));
        r.to = opts.to.map_or(u64::MAX, |t| t.resolve(r.start_wall));
        if r.from > r.to {
            return Err(ReplayError::EmptyWindow {
                from: format_wall(r.from),
                to: format_wall(r.to),
            });
        }
        // Drop the blocks of the first segments that the window excludes.
        let pending = std::mem::take(&mut r.pending).into_vec();
        for Reverse(p) in pending {
            match p.what {
                PendingWhat::Block {
                    input,
                    seg,
                    meta,
                    min_wall,
                    ..
                } if !r.block_wanted(input, seg, min_wall) => {
                    r.skip_block(input, seg, &meta);
                }
                _ => r.pending.push(Reverse(p)),
            }
        }
        Ok(r)
    }

    /// Opens the single segment of a one-file input, failing instead of recording damage.
    fn try_open_first(&mut self, input: usize) -> Result<(), String> {
        let reader = self.inputs[input].source.open_segment(0)?;
        self.opened(input, 0, 0, reader);
        Ok(())
    }

    pub(crate) fn set_clock_offsets(&mut self, offsets: Vec<crate::ClockOffset>) {
        self.report.clock_offsets = offsets;
    }

    pub(crate) fn set_manifest_problems(&mut self, problems: Vec<Option<String>>) {
        for (rep, p) in self.report.inputs.iter_mut().zip(problems) {
            rep.manifest_problem = p;
        }
    }

    /// Wall-clock start of the data (the earliest block of the inputs), against which relative
    /// times are resolved.
    pub fn start_wall_ns(&self) -> u64 {
        self.start_wall
    }

    /// The window, resolved: `(from, to)` in wall ns, inclusive.
    pub fn window(&self) -> (u64, u64) {
        (self.from, self.to)
    }

    /// Node names of the inputs, in the order given.
    pub fn nodes(&self) -> Vec<Arc<str>> {
        self.inputs.iter().map(|i| i.node.clone()).collect()
    }

    /// The process table of input `input` at the current point of the stream.
    pub fn processes(&self, input: usize) -> Option<&ProcessTable> {
        self.inputs.get(input).map(|i| &i.procs)
    }

    /// The socket table of input `input` at the current point of the stream.
    pub fn sockets(&self, input: usize) -> Option<&SocketTable> {
        self.inputs.get(input).map(|i| &i.socks)
    }

    /// Statistics and damage so far; complete once the iterator is exhausted.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Damage found since the last call (for printing warnings as they are found).
    pub fn take_new_damage(&mut self) -> Vec<DamageInfo> {
        let new = self.report.damage[self.damage_drained..].to_vec();
        self.damage_drained = self.report.damage.len();
        new
    }

    /// A counter of the bytes processed so far, shared, for a progress bar drawn from another
    /// thread (it advances even while the filter matches nothing).
    pub fn progress_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.progress_done)
    }

    /// `(bytes processed, bytes in all segment files)`, for a progress bar.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.progress_done
                .load(AtomicOrdering::Relaxed)
                .min(self.progress_total),
            self.progress_total,
        )
    }

    fn push(&mut self, key: u64, what: PendingWhat) {
        self.order += 1;
        self.pending.push(Reverse(Pending {
            key,
            order: self.order,
            what,
        }));
    }

    fn damage(&mut self, d: DamageInfo) {
        self.report.damaged_blocks += 1;
        self.report.bytes_lost += d.bytes_lost;
        self.report.damage.push(d);
    }

    fn block_wanted(&self, input: usize, seg: usize, min_wall: u64) -> bool {
        let seg_max = self.inputs[input]
            .open
            .get(&seg)
            .map_or(u64::MAX, |s| s.max_wall);
        min_wall <= self.to && seg_max >= self.from
    }

    fn skip_block(&mut self, input: usize, seg: usize, meta: &BlockMeta) {
        self.report.blocks_skipped += 1;
        self.progress_done
            .fetch_add(meta.compressed_len, AtomicOrdering::Relaxed);
        self.block_done(input, seg);
    }

    fn block_done(&mut self, input: usize, seg: usize) {
        let open = &mut self.inputs[input].open;
        if let Some(s) = open.get_mut(&seg) {
            s.remaining = s.remaining.saturating_sub(1);
            if s.remaining == 0 {
                self.progress_done
                    .fetch_add(s.slack, AtomicOrdering::Relaxed);
                open.remove(&seg);
            }
        }
    }

    fn process(&mut self, p: Pending) {
        match p.what {
            PendingWhat::Open { input, seg } => {
                let source = &self.inputs[input].source;
                match source.open_segment(seg) {
                    Ok(reader) => self.opened(input, seg, p.key, reader),
                    Err(message) => {
                        let path = source.segment_path(seg);
                        let len = source.segment_len(seg);
                        let next = seg + 1 < source.segment_count();
                        self.progress_done.fetch_add(len, AtomicOrdering::Relaxed);
                        self.damage(DamageInfo {
                            path,
                            offset: 0,
                            bytes_lost: len,
                            message,
                        });
                        if next {
                            self.push(
                                p.key,
                                PendingWhat::Open {
                                    input,
                                    seg: seg + 1,
                                },
                            );
                        }
                    }
                }
            }
            PendingWhat::Block {
                input,
                seg,
                block,
                meta,
                min_wall,
            } => {
                if !self.block_wanted(input, seg, min_wall) {
                    self.skip_block(input, seg, &meta);
                    return;
                }
                let Some(s) = self.inputs[input].open.get(&seg) else {
                    return;
                };
                let clock = s.clock;
                match s.reader.read_block(block) {
                    Ok(events) => {
                        self.report.blocks_read += 1;
                        self.report.bytes_compressed += meta.compressed_len;
                        self.report.bytes_uncompressed += meta.uncompressed_len;
                        self.report.events_read += events.len() as u64;
                        self.buffer.push_run(input, events, clock);
                    }
                    Err(message) => {
                        let path = s.reader.path().to_path_buf();
                        self.damage(DamageInfo {
                            path,
                            offset: meta.offset,
                            bytes_lost: meta.compressed_len,
                            message,
                        });
                    }
                }
                self.progress_done
                    .fetch_add(meta.compressed_len, AtomicOrdering::Relaxed);
                self.block_done(input, seg);
            }
        }
    }

    /// Takes in a freshly opened segment: damage, stats, snapshot, blocks, the next segment.
    fn opened(&mut self, input: usize, seg: usize, key: u64, reader: Box<dyn SegmentSource>) {
        for d in reader.damage() {
            self.damage(d);
        }
        let file_len = reader.file_len();
        {
            let rep = &mut self.report.inputs[input];
            rep.segments_opened += 1;
            if reader.is_sealed() {
                rep.segments_sealed += 1;
            }
        }
        self.report.bytes_on_disk += file_len;
        let st = &mut self.inputs[input];
        if st.node.is_empty() {
            let name = reader.node_name();
            if !name.is_empty() {
                st.node = name.into();
            }
        }
        let clock = corrected_clock(reader.clock(), st.clock_offset);
        if st.seeded {
            st.snapshots
                .push_back((clock.wall_ns, reader.state().clone()));
        } else {
            st.procs.apply_snapshot(clock.wall_ns, reader.state());
            st.socks.apply_snapshot(reader.state());
            st.seeded = true;
        }
        let blocks = reader.blocks();
        let walls: Vec<(u64, u64)> = blocks
            .iter()
            .map(|b| (clock.to_wall(b.min_ts), clock.to_wall(b.max_ts)))
            .collect();
        let max_wall = walls.iter().map(|w| w.1).max().unwrap_or(0);
        let min_key = walls.iter().map(|w| w.0).min().unwrap_or(key);
        let in_blocks: u64 = blocks.iter().map(|b| b.compressed_len).sum();
        let slack = file_len.saturating_sub(in_blocks);
        let has_next = seg + 1 < st.source.segment_count();
        if blocks.is_empty() {
            self.progress_done.fetch_add(slack, AtomicOrdering::Relaxed);
        } else {
            st.open.insert(
                seg,
                OpenSeg {
                    reader,
                    clock,
                    max_wall,
                    remaining: blocks.len(),
                    slack,
                },
            );
        }
        for (i, (meta, (min_wall, _))) in blocks.into_iter().zip(walls).enumerate() {
            if self.block_wanted(input, seg, min_wall) {
                self.push(
                    min_wall,
                    PendingWhat::Block {
                        input,
                        seg,
                        block: i,
                        meta,
                        min_wall,
                    },
                );
            } else {
                self.skip_block(input, seg, &meta);
            }
        }
        if has_next {
            self.push(
                min_key,
                PendingWhat::Open {
                    input,
                    seg: seg + 1,
                },
            );
        }
    }

    /// Decodes pending blocks that may hold events earlier than the earliest buffered one.
    fn fill(&mut self) {
        while let Some(Reverse(top)) = self.pending.peek() {
            match self.buffer.peek_wall() {
                Some(wall) => {
                    if top.key > wall {
                        break;
                    }
                    if self.buffer.len() >= self.max_buffered {
                        self.report.reorder_overflows += 1;
                        break;
                    }
                }
                None if top.key > self.to => {
                    self.drop_pending();
                    break;
                }
                None => {}
            }
            if let Some(Reverse(p)) = self.pending.pop() {
                self.process(p);
            }
        }
    }

    fn drop_pending(&mut self) {
        for Reverse(p) in std::mem::take(&mut self.pending).into_vec() {
            if let PendingWhat::Block {
                input, seg, meta, ..
            } = p.what
            {
                self.skip_block(input, seg, &meta);
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.drop_pending();
        self.buffer.clear();
        for input in &mut self.inputs {
            input.open.clear();
        }
    }
}

impl Iterator for Replay {
    type Item = ReplayedEvent;

    fn next(&mut self) -> Option<ReplayedEvent> {
        if self.finished {
            return None;
        }
        loop {
            self.fill();
            let Some((wall, input, event)) = self.buffer.pop() else {
                self.finish();
                return None;
            };
            let b = Emitted { wall, input, event };
            if b.wall > self.to {
                self.finish();
                return None;
            }
            let st = &mut self.inputs[b.input];
            while st.snapshots.front().is_some_and(|(w, _)| *w <= b.wall) {
                if let Some((w, snap)) = st.snapshots.pop_front() {
                    st.procs.apply_snapshot(w, &snap);
                    st.socks.apply_snapshot(&snap);
                }
            }
            let endpoints = match &b.event.body {
                EventBody::L7(m) if !known(&m.local) && !known(&m.remote) => {
                    st.socks.get(&m.conn).or_else(|| event_endpoints(&b.event))
                }
                _ => event_endpoints(&b.event),
            };
            st.procs.apply_event(b.wall, &b.event);
            st.socks.apply_event(&b.event, &st.procs);
            if b.wall < self.from {
                continue;
            }
            self.report.events_in_window += 1;
            if let EventBody::Loss(l) = &b.event.body {
                self.report.drops_recorded += l.count;
                *self
                    .report
                    .drops_by_kind
                    .entry(l.kind.name().to_string())
                    .or_default() += l.count;
            }
            let process = b.event.pid().and_then(|pid| st.procs.get(pid).cloned());
            if let Some(f) = &self.filter {
                let view = EventView {
                    event: &b.event,
                    node: &st.node,
                    process: process.as_deref(),
                    endpoints,
                };
                if !f.matches(&view) {
                    continue;
                }
            }
            if b.wall < self.last_wall {
                self.report.out_of_order += 1;
            } else {
                self.last_wall = b.wall;
            }
            let rep = &mut self.report;
            rep.events_matched += 1;
            let kind = b.event.kind().name();
            match rep.events_by_kind.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    rep.events_by_kind.insert(kind.to_string(), 1);
                }
            }
            rep.first_wall_ns = Some(rep.first_wall_ns.map_or(b.wall, |w| w.min(b.wall)));
            rep.last_wall_ns = Some(rep.last_wall_ns.map_or(b.wall, |w| w.max(b.wall)));
            return Some(ReplayedEvent {
                event: b.event,
                wall_ns: b.wall,
                node: st.node.clone(),
                input: b.input,
                process,
                endpoints,
            });
        }
    }
}

/// Sorts a block's `(wall, index)` keys. Usually they are in order already (one ring buffer
/// delivers events nearly in time order), which one pass checks. Otherwise a stable LSD radix
/// sort on the time offset within the block (the span of a block is short, so a few passes of
/// 11 bits cover it) keeps equal times in write order, in linear time whatever the disorder.
fn sort_block_keys(keys: &mut Vec<(u64, u32)>) {
    if keys.is_sorted() {
        return;
    }
    if keys.len() < 256 {
        keys.sort_unstable();
        return;
    }
    let min = keys.iter().map(|k| k.0).min().unwrap_or(0);
    let max = keys.iter().map(|k| k.0).max().unwrap_or(0);
    let bits = 64 - (max - min).leading_zeros();
    const DIGIT: u32 = 11;
    const BUCKETS: usize = 1 << DIGIT;
    // The index order of the input is the write order: ties must keep it, and LSD radix
    // passes are stable.
    debug_assert!(keys.windows(2).all(|w| w[0].1 < w[1].1));
    let mut src = std::mem::take(keys);
    let mut dst = vec![(0u64, 0u32); src.len()];
    let mut shift = 0;
    while shift < bits {
        let digit = |k: &(u64, u32)| ((k.0 - min) >> shift) as usize & (BUCKETS - 1);
        let mut starts = vec![0usize; BUCKETS];
        for k in &src {
            starts[digit(k)] += 1;
        }
        let mut at = 0;
        for c in starts.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for k in &src {
            let d = digit(k);
            dst[starts[d]] = *k;
            starts[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
        shift += DIGIT;
    }
    *keys = src;
}

struct Emitted {
    wall: u64,
    input: usize,
    event: Event,
}

fn known(e: &Endpoint) -> bool {
    e.port != 0 || !e.addr.ip().is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorted, nearly sorted, far from sorted, with ties (kept in write order), wide spans:
    /// the same result as a full sort (a key lost or doubled would lose or repeat an event).
    #[test]
    fn keys_sort_whatever_their_disorder() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for displacement in [0u64, 1, 3, 10, 100, 1_000, 100_000] {
            for len in [0usize, 1, 2, 17, 1_000, 7_000] {
                let mut keys: Vec<(u64, u32)> = (0..len)
                    .map(|i| {
                        let late = if displacement == 0 {
                            0
                        } else {
                            next() % displacement
                        };
                        ((i as u64 * 3 / 2).saturating_sub(late), i as u32)
                    })
                    .collect();
                let mut want = keys.clone();
                want.sort_unstable();
                sort_block_keys(&mut keys);
                assert_eq!(keys, want, "displacement {displacement}, {len} keys");
            }
        }
        let mut reversed: Vec<(u64, u32)> =
            (0..5_000u32).map(|i| (5_000 - u64::from(i), i)).collect();
        sort_block_keys(&mut reversed);
        assert!(reversed.is_sorted());
        // A span of the whole u64 range (hostile clocks) takes every pass.
        let mut wide: Vec<(u64, u32)> = (0..3_000u32)
            .map(|i| (next() | if i % 2 == 0 { 1 << 63 } else { 0 }, i))
            .collect();
        let mut want = wide.clone();
        want.sort_unstable();
        sort_block_keys(&mut wide);
        assert_eq!(wide, want);
    }

    use crate::source::mem::{MemInput, MemSegment};
    use crate::source::ManifestFacts;
    use retrace_segment::{
        ConnId, Direction, EventKind, L7Message, LossMarker, LossReason, Mark, MarkSource,
        ProcExec, StateSnapshot,
    };
    use std::net::Ipv4Addr;

    const T0: u64 = 1_795_501_800_000_000_000;

    fn mark(ts: u64, note: &str) -> Event {
        Event::new(
            ts,
            EventBody::Mark(Mark {
                source: MarkSource::User,
                note: note.into(),
            }),
        )
    }

    fn l7(ts: u64, pid: u32, port: u16) -> Event {
        Event::new(
            ts,
            EventBody::L7(L7Message {
                conn: ConnId {
                    pid,
                    fd: 4,
                    start_ns: 0,
                },
                tid: pid,
                direction: Direction::Egress,
                size: 10,
                payload: b"hello".to_vec(),
                tcp_seq: None,
                folded_calls: 0,
                folded_bytes: 0,
                local: Endpoint::new(Ipv4Addr::LOCALHOST, 40000),
                remote: Endpoint::new(Ipv4Addr::LOCALHOST, port),
            }),
        )
    }

    fn seg(node: &str, clock: ClockSync, blocks: Vec<Vec<Event>>) -> MemSegment {
        MemSegment {
            path: format!("{node}.rseg").into(),
            node: node.into(),
            clock,
            state: StateSnapshot::default(),
            blocks: blocks.into_iter().map(Ok).collect(),
            sealed: true,
        }
    }

    fn input(name: &str, segments: Vec<MemSegment>) -> Box<dyn InputSource> {
        Box::new(MemInput {
            path: name.into(),
            segments: segments.into_iter().map(Some).collect(),
            manifest: None,
            single_file: false,
        })
    }

    fn run(inputs: Vec<Box<dyn InputSource>>, opts: ReplayOptions) -> (Vec<ReplayedEvent>, Report) {
        let mut r = Replay::from_sources(inputs, opts).expect("opens");
        let evs: Vec<ReplayedEvent> = r.by_ref().collect();
        (evs, r.report().clone())
    }

    fn notes(evs: &[ReplayedEvent]) -> Vec<String> {
        evs.iter()
            .map(|e| match &e.event.body {
                EventBody::Mark(m) => m.note.clone(),
                other => format!("{:?}", other.kind()),
            })
            .collect()
    }

    #[test]
    fn a_replay_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Replay>();
        send::<ReplayedEvent>();
    }

    #[test]
    fn two_nodes_are_merged_by_wall_clock() {
        // Node a: mono 1_000 is T0. Node b booted at another time: mono 9_000_000 is T0.
        let ca = ClockSync {
            mono_ns: 1_000,
            wall_ns: T0,
        };
        let cb = ClockSync {
            mono_ns: 9_000_000,
            wall_ns: T0,
        };
        let a = seg(
            "a",
            ca,
            vec![
                vec![mark(1_000, "a0"), mark(1_020, "a20")],
                vec![mark(1_050, "a50")],
            ],
        );
        let b = seg(
            "b",
            cb,
            vec![vec![
                mark(9_000_010, "b10"),
                mark(9_000_030, "b30"),
                mark(9_000_060, "b60"),
            ]],
        );
        let (evs, rep) = run(
            vec![input("ia", vec![a]), input("ib", vec![b])],
            ReplayOptions::default(),
        );
        assert_eq!(notes(&evs), ["a0", "b10", "a20", "b30", "a50", "b60"]);
        assert_eq!(evs[1].node.as_ref(), "b");
        assert_eq!(evs[1].wall_ns, T0 + 10);
        assert_eq!(evs[0].node.as_ref(), "a");
        assert_eq!(rep.events_matched, 6);
        assert_eq!(rep.out_of_order, 0);
        assert_eq!(rep.first_wall_ns, Some(T0));
        assert_eq!(rep.last_wall_ns, Some(T0 + 60));
        assert_eq!(rep.inputs[1].node, "b");
    }

    #[test]
    fn events_out_of_order_across_blocks_come_out_sorted() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        // Block 2 holds an event (ts 15) earlier than block 1's last (ts 20): another CPU.
        let s = seg(
            "n",
            c,
            vec![
                vec![mark(10, "10"), mark(30, "30"), mark(20, "20")],
                vec![mark(15, "15"), mark(40, "40")],
                vec![mark(35, "35"), mark(50, "50")],
            ],
        );
        let (evs, rep) = run(vec![input("i", vec![s])], ReplayOptions::default());
        assert_eq!(notes(&evs), ["10", "15", "20", "30", "35", "40", "50"]);
        assert_eq!(rep.out_of_order, 0);
        assert_eq!(rep.blocks_read, 3);
    }

    #[test]
    fn equal_timestamps_keep_write_order() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let s = seg(
            "n",
            c,
            vec![vec![mark(5, "x"), mark(5, "y")], vec![mark(5, "z")]],
        );
        let (evs, _) = run(vec![input("i", vec![s])], ReplayOptions::default());
        assert_eq!(notes(&evs), ["x", "y", "z"]);
    }

    /// Deterministic pseudo-random check: many segments and blocks, events jittered across
    /// block boundaries, two nodes; the output is the sorted input, whatever the layout.
    #[test]
    fn randomized_layouts_merge_exactly() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..40 {
            let mut all = Vec::new();
            let mut inputs = Vec::new();
            for node in 0..2u64 {
                let clock = ClockSync {
                    mono_ns: 1_000_000 * node,
                    wall_ns: T0 + node * 7,
                };
                let mut segments = Vec::new();
                let mut t = 1_000_000 * node + 100;
                let nseg = 1 + rnd(4);
                for _ in 0..nseg {
                    // A segment starts at least one jitter span after the previous one's
                    // start, with one on-time event (what rotation by size or age gives).
                    t += 25;
                    let mut blocks = vec![vec![mark(t, &format!("{round}-{node}-{}", all.len()))]];
                    all.push((clock.to_wall(t), format!("{round}-{node}-{}", all.len())));
                    for _ in 0..(1 + rnd(5)) {
                        let mut block = Vec::new();
                        for _ in 0..rnd(30) {
                            t += rnd(10);
                            // Jitter: an event may be up to 25 ns older than the writer's clock.
                            let ts = t.saturating_sub(rnd(25));
                            let note = format!("{round}-{node}-{}", all.len());
                            all.push((clock.to_wall(ts), note.clone()));
                            block.push(mark(ts, &note));
                        }
                        blocks.push(block);
                    }
                    segments.push(seg(&format!("n{node}"), clock, blocks));
                }
                inputs.push(input(&format!("i{node}"), segments));
            }
            let (evs, rep) = run(inputs, ReplayOptions::default());
            let got: Vec<u64> = evs.iter().map(|e| e.wall_ns).collect();
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(got, sorted, "round {round}: output is ordered");
            let mut want: Vec<String> = all.iter().map(|(_, n)| n.clone()).collect();
            let mut have = notes(&evs);
            want.sort();
            have.sort();
            assert_eq!(have, want, "round {round}: every event exactly once");
            assert_eq!(rep.out_of_order, 0);
        }
    }

    #[test]
    fn the_reorder_buffer_is_bounded() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        // 100 blocks that all start at ts 0 (their min) but hold late events: an honest index
        // would force keeping them all; the bound of 10 events makes the merge emit early.
        let blocks: Vec<Vec<Event>> = (0..100u64)
            .map(|i| vec![mark(0, "zero"), mark(1_000 + i, "late")])
            .collect();
        let opts = ReplayOptions {
            max_buffered_events: 10,
            ..Default::default()
        };
        let mut r =
            Replay::from_sources(vec![input("i", vec![seg("n", c, blocks)])], opts).expect("opens");
        let mut max_buffered = 0;
        let mut n = 0;
        while r.next().is_some() {
            n += 1;
            max_buffered = max_buffered.max(r.buffer.len());
        }
        assert_eq!(n, 200);
        assert!(max_buffered <= 12, "buffer stayed bounded: {max_buffered}");
        assert!(r.report().reorder_overflows > 0);
    }

    #[test]
    fn segments_are_opened_lazily() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let segments: Vec<MemSegment> = (0..20u64)
            .map(|s| {
                seg(
                    "n",
                    c,
                    vec![vec![mark(s * 100, "a"), mark(s * 100 + 50, "b")]],
                )
            })
            .collect();
        let mut r = Replay::from_sources(vec![input("i", segments)], ReplayOptions::default())
            .expect("opens");
        let mut max_open = 0;
        let mut n = 0;
        while r.next().is_some() {
            n += 1;
            max_open = max_open.max(r.inputs[0].open.len());
        }
        assert_eq!(n, 40);
        assert!(
            max_open <= 2,
            "at most two segments open at once, saw {max_open}"
        );
        assert_eq!(r.report().inputs[0].segments_opened, 20);
    }

    #[test]
    fn time_window_relative_and_absolute() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let s = seg(
            "n",
            c,
            vec![
                vec![mark(0, "0s"), mark(10_000_000_000, "10s")],
                vec![mark(20_000_000_000, "20s"), mark(30_000_000_000, "30s")],
                vec![mark(40_000_000_000, "40s")],
            ],
        );
        let opts = ReplayOptions {
            from: Some(TimeSpec::parse("+10s").expect("t")),
            to: Some(TimeSpec::parse("30s").expect("t")),
            ..Default::default()
        };
        let (evs, rep) = run(vec![input("i", vec![s.clone()])], opts);
        assert_eq!(notes(&evs), ["10s", "20s", "30s"]);
        assert_eq!(rep.events_in_window, 3);
        // The last block is entirely after the window: never decoded.
        assert_eq!(rep.blocks_read, 2);
        let opts = ReplayOptions {
            from: Some(TimeSpec::parse("2026-11-24T06:30:15Z").expect("t")),
            to: Some(TimeSpec::parse("06:30:35").expect("t")),
            ..Default::default()
        };
        let (evs, _) = run(vec![input("i", vec![s.clone()])], opts);
        assert_eq!(notes(&evs), ["20s", "30s"]);
        let opts = ReplayOptions {
            from: Some(TimeSpec::parse("+30s").expect("t")),
            to: Some(TimeSpec::parse("+10s").expect("t")),
            ..Default::default()
        };
        let err = Replay::from_sources(vec![input("i", vec![s])], opts)
            .err()
            .expect("empty window");
        assert!(
            err.to_string().contains("--from 2026-11-24T06:30:30"),
            "{err}"
        );
    }

    #[test]
    fn whole_segments_before_the_window_are_skipped_but_seed_the_tables() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let mut s0 = seg("n", c, vec![vec![mark(0, "early")]]);
        s0.state.processes.push(ProcessInfo {
            pid: 9,
            comm: "old".into(),
            ..Default::default()
        });
        let mut s1 = seg(
            "n",
            ClockSync {
                mono_ns: 100,
                wall_ns: T0 + 100,
            },
            vec![vec![l7(100, 9, 80), l7(200, 9, 80)]],
        );
        s1.state.processes.push(ProcessInfo {
            pid: 9,
            comm: "svc".into(),
            ..Default::default()
        });
        let opts = ReplayOptions {
            from: Some(TimeSpec::Relative(150)),
            ..Default::default()
        };
        let (evs, rep) = run(vec![input("i", vec![s0, s1])], opts);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].comm(), Some("svc"));
        assert_eq!(rep.blocks_skipped, 1);
        assert_eq!(rep.blocks_read, 1);
    }

    #[test]
    fn process_table_gives_comm_to_every_event_of_a_pid() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let mut s = seg(
            "n",
            c,
            vec![vec![
                l7(10, 7, 5432),
                Event::new(
                    20,
                    EventBody::ProcExec(ProcExec {
                        pid: 7,
                        ppid: 1,
                        comm: "psql".into(),
                        exe: "/usr/bin/psql".into(),
                        cmdline: vec!["psql".into()],
                        cgroup: "/user.slice".into(),
                        container_id: None,
                    }),
                ),
                l7(30, 7, 5432),
                l7(40, 8, 6379),
            ]],
        );
        s.state.processes.push(ProcessInfo {
            pid: 7,
            comm: "bash".into(),
            exe: "/usr/bin/bash".into(),
            cgroup: "/user.slice".into(),
            ..Default::default()
        });
        let filter = Filter::parse("comm = psql").expect("filter");
        let opts = ReplayOptions {
            filter: Some(filter),
            ..Default::default()
        };
        let (evs, rep) = run(vec![input("i", vec![s.clone()])], opts);
        assert_eq!(evs.iter().map(|e| e.event.ts).collect::<Vec<_>>(), [20, 30]);
        assert_eq!(evs[1].exe(), Some("/usr/bin/psql"));
        assert_eq!(rep.events_matched, 2);
        assert_eq!(rep.events_in_window, 4);
        let (evs, _) = run(vec![input("i", vec![s])], ReplayOptions::default());
        assert_eq!(evs[0].comm(), Some("bash"), "from the snapshot");
        assert_eq!(evs[3].comm(), None, "pid 8 is unknown");
    }

    #[test]
    fn damage_is_reported_and_reading_goes_on() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let mut s = seg("n", c, vec![vec![mark(1, "a")], vec![], vec![mark(3, "c")]]);
        s.blocks[1] = Err("checksum mismatch in block".into());
        let good = seg("n", c, vec![vec![mark(5, "e")]]);
        let inp = Box::new(MemInput {
            path: "dir".into(),
            segments: vec![Some(s), None, Some(good)],
            manifest: Some(ManifestFacts {
                node: "n".into(),
                dropped: 7,
                missing_segments: vec!["gone.rseg".into()],
                ..Default::default()
            }),
            single_file: false,
        });
        let mut r = Replay::from_sources(vec![inp], ReplayOptions::default()).expect("opens");
        let evs: Vec<ReplayedEvent> = r.by_ref().collect();
        assert_eq!(notes(&evs), ["a", "c", "e"]);
        let rep = r.report().clone();
        assert_eq!(rep.damaged_blocks, 2);
        assert_eq!(rep.damage[0].message, "checksum mismatch in block");
        assert_eq!(rep.damage[1].message, "not a retrace segment");
        assert_eq!(rep.damage[1].path, std::path::Path::new("dir/1.rseg"));
        assert!(rep.bytes_lost > 0);
        assert_eq!(rep.manifest_dropped(), Some(7));
        assert_eq!(rep.missing_segments(), ["gone.rseg"]);
        assert_eq!(r.take_new_damage().len(), 2);
        assert!(r.take_new_damage().is_empty());
        let text = rep.to_string();
        assert!(text.contains("2 damaged block(s)"), "{text}");
        assert!(
            text.contains("missing      1 segment(s): gone.rseg"),
            "{text}"
        );
    }

    #[test]
    fn single_file_open_errors_are_fatal() {
        let inp = Box::new(MemInput {
            path: "x.rseg".into(),
            segments: vec![None],
            manifest: None,
            single_file: true,
        });
        let err = Replay::from_sources(vec![inp], ReplayOptions::default())
            .err()
            .expect("fails");
        assert_eq!(err.to_string(), "x.rseg: not a retrace segment");
    }

    #[test]
    fn loss_markers_are_counted() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let loss = |ts, count| {
            Event::new(
                ts,
                EventBody::Loss(LossMarker {
                    kind: EventKind::L7,
                    cpu: 0,
                    count,
                    reason: LossReason::RingFull,
                    from_ns: 0,
                    to_ns: ts,
                }),
            )
        };
        let s = seg("n", c, vec![vec![loss(1, 5), l7(2, 1, 80), loss(3, 7)]]);
        let opts = ReplayOptions {
            filter: Some(Filter::parse("kind = l7").expect("f")),
            ..Default::default()
        };
        let (evs, rep) = run(vec![input("i", vec![s])], opts);
        assert_eq!(evs.len(), 1);
        assert_eq!(
            rep.drops_recorded, 12,
            "drops are counted whatever the filter"
        );
        assert_eq!(rep.drops_by_kind.get("l7"), Some(&12));
        assert_eq!(rep.events_by_kind.get("l7"), Some(&1));
        assert_eq!(rep.events_by_kind.get("loss"), None);
    }

    #[test]
    fn l7_without_endpoints_gets_them_from_the_socket_table() {
        let c = ClockSync {
            mono_ns: 0,
            wall_ns: T0,
        };
        let mut bare = l7(10, 3, 0);
        if let EventBody::L7(m) = &mut bare.body {
            m.local = Endpoint::default();
            m.remote = Endpoint::default();
        }
        let mut s = seg("n", c, vec![vec![bare]]);
        s.state.connections.push(retrace_segment::OpenConnection {
            conn: ConnId {
                pid: 3,
                fd: 4,
                start_ns: 0,
            },
            local: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 33333),
            remote: Endpoint::new(Ipv4Addr::new(10, 0, 0, 9), 6379),
            inbound: false,
        });
        let opts = ReplayOptions {
            filter: Some(Filter::parse("rport = 6379").expect("f")),
            ..Default::default()
        };
        let (evs, _) = run(vec![input("i", vec![s])], opts);
        assert_eq!(evs.len(), 1);
    }
}
