//! The capture loop: load, seed, consume, convert, queue, write; stop cleanly.
//!
//! Threads: the calling thread owns the BPF skeleton and the ring buffers (consumer); a writer
//! thread owns the [`EventSink`]. Between them a bounded queue of event batches with a byte
//! budget: when the writer falls behind, batches are dropped and counted per kind (loss
//! markers with reason `QueueFull`), so memory stays bounded whatever the event rate.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};
use retrace_bpf::types::{rt_fd_key, rt_fd_kind, rt_fd_val, rt_hdr_flags, rt_kind};
use retrace_bpf::{OpenRetraceSkel, RetraceSkelBuilder};
use retrace_protocols::redact::UserRules;
use retrace_segment::{
    ClockSync, ConnId, Event, EventBody, EventKind, ListenSocket, LossMarker, LossReason, Mark,
    MarkSource, NodeInfo, OpenConnection, StateSnapshot,
};

use crate::config::{CaptureConfig, Stream};
use crate::convert::{self, Converter, ProcTable};
use crate::marks;
use crate::procfs::{self, FdTarget};
use crate::sink::{EventSink, SinkStats};
use crate::CaptureError;

/// Kernel records per batch handed to the writer.
const BATCH_RECORDS: usize = 512;
/// Bytes of kernel records per batch handed to the writer (a batch is sent at whichever of
/// the two limits comes first).
const BATCH_BYTES: usize = 256 << 10;
/// Batches waiting for the writer.
const QUEUE_BATCHES: usize = 256;
/// Bytes of kernel records waiting for the writer.
const QUEUE_BYTES: usize = 24 << 20;
/// Emptied batch buffers kept for reuse.
const SPARE_BUFFERS: usize = 8;
/// How long a poll waits for a wakeup (records are submitted without wakeups below the
/// threshold, so this is the consumption period at low rates).
const POLL_PERIOD: Duration = Duration::from_millis(20);
/// A block is written at most this long after its first event: with the writer's 100 ms
/// tick and the rings' 20 ms poll, a `kill -9` loses well under a second of events, with
/// room left for a machine busy enough to delay the writer (at 500 ms, one crash of six lost
/// 1.36 s in a CI run; blocks are synced in the background, so a slow disk does not add).
const BLOCK_MAX_AGE: Duration = Duration::from_millis(250);
/// How often drop counters and pending marks are looked at.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// What a finished capture did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// The capture directory.
    pub dir: PathBuf,
    /// Wall time captured.
    pub elapsed: Duration,
    /// Kernel records received.
    pub records: u64,
    /// Records that could not be parsed (should stay 0).
    pub bad_records: u64,
    /// Dropped in the kernel (ring full), by event kind name.
    pub dropped_ring: BTreeMap<String, u64>,
    /// Dropped in user space (queue full), by event kind name.
    pub dropped_queue: BTreeMap<String, u64>,
    /// Runs of each program the kernel skipped because a BPF program was already running on
    /// that CPU (its recursion protection: a softirq's tracepoint on top of a traced syscall),
    /// by program name; only those that missed any. Not yet loss markers in the capture.
    pub skipped_runs: BTreeMap<String, u64>,
    /// Secret values redacted.
    pub redacted: u64,
    /// Marks recorded.
    pub marks: u64,
    /// What the writer reports.
    pub writer: SinkStats,
    /// What the profiler did, when it ran.
    pub profile: Option<crate::profile::ProfileSummary>,
}

impl Summary {
    /// Every dropped event, kernel and user space.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_ring.values().sum::<u64>() + self.dropped_queue.values().sum::<u64>()
    }
}

/// Kernel records copied out of the rings as they are (each one: its length as a native u32,
/// then its bytes), converted into events by the writer thread: the payload buffers of the
/// events are then allocated and freed by one thread, and the ring consumer does no more
/// than a copy per record.
#[derive(Debug, Default)]
struct RecordBatch {
    buf: Vec<u8>,
    count: usize,
}

impl RecordBatch {
    fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self { buf, count: 0 }
    }

    fn push(&mut self, record: &[u8]) {
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf
            .extend_from_slice(&record[..(len as usize).min(record.len())]);
        self.count += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.buf.as_slice();
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_ne_bytes(*len) as usize;
            let (rec, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some(rec)
        })
    }
}

/// Messages from the consumer to the writer thread.
enum Msg {
    /// Kernel records, and the bytes they count in the queue's budget.
    Records(RecordBatch, usize),
    Control(Vec<Event>),
    /// Profile samples and the definitions they need.
    Profile(crate::profile::Batch),
    /// A mark at a monotonic time, and how far around it segments are pinned.
    Mark(u64, Mark, u64),
    Stop,
}

/// Flags the signal handlers set.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// SIGINT or SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// SIGUSR1.
    pub mark: Arc<AtomicBool>,
}

impl Signals {
    /// Registers SIGINT, SIGTERM (stop) and SIGUSR1 (mark).
    pub fn install() -> Result<Self, CaptureError> {
        let s = Signals::default();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&s.stop))
                .map_err(|e| CaptureError::io("signal handler", e))?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&s.mark))
            .map_err(|e| CaptureError::io("signal handler", e))?;
        Ok(s)
    }
}

/// The monotonic↔wall mapping now: the pair read closest together out of a few tries.
pub fn clock_sync() -> ClockSync {
    let mut best = (u64::MAX, ClockSync::default());
    for _ in 0..5 {
        let m0 = marks::monotonic_ns();
        let w = marks::realtime_ns();
        let m1 = marks::monotonic_ns();
        let gap = m1.saturating_sub(m0);
        if gap < best.0 {
            best = (
                gap,
                ClockSync {
                    mono_ns: m0 + gap / 2,
                    wall_ns: w,
                },
            );
        }
    }
    best.1
}

/// Facts about this node.
pub fn node_info(name: Option<&str>) -> NodeInfo {
    let (kernel, hostname, boot_time_ns, cpus) = procfs::node_facts();
    NodeInfo {
        name: name.map(str::to_string).unwrap_or_else(|| hostname.clone()),
        hostname,
        kernel,
        boot_time_ns,
        clock: clock_sync(),
        cpus,
    }
}

/// Builds the writer for a config (the segment crate's `CaptureWriter`).
pub fn open_writer(
    cfg: &CaptureConfig,
    node: &NodeInfo,
    state: StateSnapshot,
) -> Result<Box<dyn EventSink>, CaptureError> {
    let keep = match cfg.keep {
        crate::KeepPolicy::All => retrace_segment::Keep::All,
        crate::KeepPolicy::Age(d) => retrace_segment::Keep::Age(d),
        crate::KeepPolicy::Bytes(b) => retrace_segment::Keep::Bytes(b),
    };
    let opts = retrace_segment::CaptureOptions {
        dir: cfg.out.clone(),
        node: node.clone(),
        streams: cfg.streams.names(),
        options: cfg.manifest_options(),
        segment_max_bytes: cfg.segment_size,
        segment_max_age: cfg.segment_time,
        keep,
        max_size: cfg.max_size,
        zstd_level: cfg.zstd_level,
        block_max_age: BLOCK_MAX_AGE,
        ..Default::default()
    };
    // A restart in the same directory continues the capture (new segments after the old).
    Ok(Box::new(retrace_segment::CaptureWriter::resume_or_create(
        opts, state,
    )?))
}

/// Runs a capture until SIGINT/SIGTERM or `--duration`, writing through the segment crate.
pub fn run(cfg: &CaptureConfig) -> Result<Summary, CaptureError> {
    cfg.validate()?;
    if let Some(pid) = marks::other_daemon(&cfg.out) {
        return Err(CaptureError::Config(format!(
            "{}: a capture is already running there (pid {pid}); stop it first or choose \
             another directory",
            cfg.out.display()
        )));
    }
    match crate::doctor::preflight(&cfg.streams.names(), &cfg.out) {
        Ok(checks) => {
            for c in checks
                .iter()
                .filter(|c| c.status == crate::doctor::Status::Warn)
            {
                eprintln!("retrace: warning: {c}");
            }
        }
        Err(e) => return Err(CaptureError::Preflight(e.to_string())),
    }
    let signals = Signals::install()?;
    run_with(cfg, &signals, |node, state| open_writer(cfg, node, state))
}

/// Runs a capture with given signal flags and writer factory (tests use a memory sink).
pub fn run_with(
    cfg: &CaptureConfig,
    signals: &Signals,
    make_sink: impl FnOnce(&NodeInfo, StateSnapshot) -> Result<Box<dyn EventSink>, CaptureError>,
) -> Result<Summary, CaptureError> {
    cfg.validate()?;
    let rules = match &cfg.redact_rules {
        Some(path) => crate::redact_rules::load(path)?,
        None => UserRules::default(),
    };
    let started = Instant::now();
    let start_mono = marks::monotonic_ns();
    let self_pid = std::process::id();

    quiet_libbpf();
    let mut storage = MaybeUninit::uninit();
    let mut open = RetraceSkelBuilder::default()
        .open(&mut storage)
        .map_err(|e| CaptureError::bpf("opening the BPF object", e))?;
    let ring_plan = configure(&mut open, cfg, self_pid)?;
    let (loaded, logs) = load_logged(open, 0);
    let mut skel = loaded.map_err(|e| logs.error(e))?;
    let data_rings = create_data_rings(ring_plan, &skel)?;

    // Seed the process table and the kernel's fd table from /proc before attaching.
    let mut procs = ProcTable::from_proc();
    procs.remove(self_pid);
    let mut converter = Converter::new(procs, cfg.cgroup.clone());
    let mut state = seed(cfg, &skel, &mut converter, start_mono, self_pid);
    if cfg.redact {
        redact_state(&mut state, &rules);
    }

    skel.attach()
        .map_err(|e| CaptureError::bpf("attaching the BPF programs", e))?;
    if cfg.streams.has(Stream::Tcp) || cfg.streams.has(Stream::L7) {
        resolve_seeded(&skel);
    }

    std::fs::create_dir_all(&cfg.out).map_err(|e| CaptureError::io(&cfg.out, e))?;
    let node = node_info(cfg.node.as_deref());
    let sink = make_sink(&node, state)?;
    // Loaded, attached, seeded, directory open: what is left needs a few capabilities only
    // (capabilities are per thread: dropped before any other thread starts).
    match crate::privileges::drop_unneeded(cfg.profile.needs()) {
        Ok(kept) if cfg.verbose => eprintln!("retrace: capabilities kept: {}", kept.join(", ")),
        Ok(_) => {}
        Err(e) => eprintln!("retrace: warning: {e}"),
    }

    let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_BATCHES);
    let (spare_tx, spare_rx) = mpsc::sync_channel::<Vec<u8>>(SPARE_BUFFERS);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(WriterCounters {
        redact: cfg.redact,
        rules,
        ..Default::default()
    });
    let writer = {
        let in_flight = Arc::clone(&in_flight);
        let counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("retrace-writer".into())
            .spawn(move || writer_loop(sink, converter, rx, &spare_tx, &in_flight, &counters))
            .map_err(|e| CaptureError::io("writer thread", e))?
    };
    // The node facts first, so that a capture read alone can map its times.
    let _ = tx.send(Msg::Control(vec![Event::new(
        node.clock.mono_ns,
        EventBody::Node(node.clone()),
    )]));
    // The pid file says the daemon runs (`retrace mark` signals it; tests wait for it): written
    // once the writer thread is up, with the capabilities it keeps.
    let pid_file = match marks::write_pid_file(&cfg.out) {
        Ok(path) => path,
        Err(e) => {
            // The writer seals what it was sent and stops.
            let _ = tx.send(Msg::Stop);
            drop(tx);
            let _ = writer.join();
            return Err(e);
        }
    };

    let profiler = {
        let tx = tx.clone();
        let scope = crate::profile::memory::Scope {
            pid: cfg.pid,
            cgroup: cfg.cgroup.clone(),
            self_pid,
        };
        crate::profile::Profiler::start(&cfg.profile, self_pid, scope, move |b| {
            tx.send(Msg::Profile(b)).is_ok()
        })?
    };

    let consumer = Rc::new(RefCell::new(Consumer {
        batch: RecordBatch::with_buffer(Vec::with_capacity(BATCH_BYTES)),
        tx: tx.clone(),
        spare: spare_rx,
        in_flight: Arc::clone(&in_flight),
        records: 0,
        dropped_queue: [0; EventKind::ALL.len()],
    }));

    let mut builder = RingBufferBuilder::new();
    let rings: Vec<&dyn MapCore> = std::iter::once(&skel.maps.rb_ctl as &dyn MapCore)
        .chain(data_rings.iter().map(|r| r as &dyn MapCore))
        .collect();
    for map in rings {
        let c = Rc::clone(&consumer);
        builder
            .add(map, move |bytes: &[u8]| {
                c.borrow_mut().on_record(bytes);
                0
            })
            .map_err(|e| CaptureError::bpf("ring buffer", e))?;
    }
    let rings = builder
        .build()
        .map_err(|e| CaptureError::bpf("ring buffer", e))?;

    let mut drops = DropCounters::new(ring_plan.cpus);
    let mut last_house = Instant::now();
    let mut last_house_mono = start_mono;
    let mut dropped_queue_seen = [0u64; EventKind::ALL.len()];
    let mut summary = Summary {
        dir: cfg.out.clone(),
        ..Default::default()
    };
    let mut status = Status::new(cfg.verbose);
    let deadline = cfg.duration.map(|d| started + d);
    let mut sock_sampler = SockSampler::new(&skel, cfg);
    let pin_ns = u64::try_from(cfg.pin.as_nanos()).unwrap_or(u64::MAX);
    let mut writer_failed = false;

    loop {
        let stop =
            signals.stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d);
        // poll wakes early when a ring passed its threshold; consume takes the rest
        let _ = rings.poll(POLL_PERIOD);
        if let Some(s) = sock_sampler.as_mut() {
            s.run_when_due();
        }
        let _ = rings.consume();
        consumer.borrow_mut().send_batch();

        let mark_signal = signals.mark.swap(false, Ordering::Relaxed);
        if mark_signal || last_house.elapsed() >= HOUSEKEEPING || stop {
            let now_mono = marks::monotonic_ns();
            // marks: notes first; a bare SIGUSR1 is a mark of its own
            let notes = marks::take_notes(&cfg.out);
            if mark_signal && notes.is_empty() {
                summary.marks += 1;
                let m = Mark {
                    source: MarkSource::Signal,
                    note: "SIGUSR1".into(),
                };
                writer_failed |= tx.send(Msg::Mark(now_mono, m, pin_ns)).is_err();
            }
            for (ts, note) in notes {
                summary.marks += 1;
                let m = Mark {
                    source: MarkSource::User,
                    note,
                };
                writer_failed |= tx.send(Msg::Mark(ts, m, pin_ns)).is_err();
            }
            if last_house.elapsed() >= HOUSEKEEPING || stop {
                // loss markers for what moved since the last look
                let mut losses = drops.poll(&skel, last_house_mono, now_mono);
                let queue_now = consumer.borrow().dropped_queue;
                for (i, k) in EventKind::ALL.iter().enumerate() {
                    let d = queue_now[i] - dropped_queue_seen[i];
                    if d > 0 {
                        losses.push(loss_event(
                            *k,
                            u32::MAX,
                            d,
                            LossReason::QueueFull,
                            last_house_mono,
                            now_mono,
                        ));
                    }
                }
                dropped_queue_seen = queue_now;
                if !losses.is_empty() {
                    writer_failed |= tx.send(Msg::Control(losses)).is_err();
                }
                status.line(&consumer.borrow(), &drops, &in_flight);
                last_house = Instant::now();
                last_house_mono = now_mono;
            }
        }
        if writer_failed {
            break;
        }
        if stop {
            break;
        }
    }

    // Detach first so that nothing new arrives, then drain what the rings still hold.
    skel.links = Default::default();
    let _ = rings.consume();
    consumer.borrow_mut().send_batch();
    let end_mono = marks::monotonic_ns();
    let mut losses = drops.poll(&skel, last_house_mono, end_mono);
    let queue_now = consumer.borrow().dropped_queue;
    for (i, k) in EventKind::ALL.iter().enumerate() {
        let d = queue_now[i] - dropped_queue_seen[i];
        if d > 0 {
            losses.push(loss_event(
                *k,
                u32::MAX,
                d,
                LossReason::QueueFull,
                last_house_mono,
                end_mono,
            ));
        }
    }
    if !losses.is_empty() {
        let _ = tx.send(Msg::Control(losses));
    }
    summary.profile = profiler.map(crate::profile::Profiler::stop);
    let _ = tx.send(Msg::Stop);
    drop(tx);
    let c = consumer.borrow();
    summary.records = c.records;
    for (i, k) in EventKind::ALL.iter().enumerate() {
        if c.dropped_queue[i] > 0 {
            summary
                .dropped_queue
                .insert(k.name().into(), c.dropped_queue[i]);
        }
    }
    drop(c);
    summary.dropped_ring = drops.totals_by_name();
    summary.skipped_runs = skipped_runs(&skel);
    let result = writer
        .join()
        .map_err(|_| CaptureError::Writer("panicked".into()))?;
    let _ = std::fs::remove_file(&pid_file);
    summary.writer = result?;
    summary.redacted = counters.redacted.load(Ordering::Relaxed);
    summary.bad_records = counters.bad_records.load(Ordering::Relaxed);
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The runs each loaded program missed to the kernel's recursion protection
/// (`bpf_prog_info.recursion_misses`, Linux 5.12+), by name, those above 0.
fn skipped_runs(skel: &retrace_bpf::RetraceSkel<'_>) -> BTreeMap<String, u64> {
    use libbpf_rs::skel::Skel;
    let mut out = BTreeMap::new();
    for prog in skel.object().progs() {
        let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: `info` is a valid bpf_prog_info of `len` bytes, written by the kernel only
        // during the call; the fd is the loaded program's, alive for the call.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
                prog.as_fd().as_raw_fd(),
                &mut info,
                &mut len,
            )
        };
        if rc == 0 && info.recursion_misses > 0 {
            out.insert(
                prog.name().to_string_lossy().into_owned(),
                info.recursion_misses,
            );
        }
    }
    out
}

/// Opens, configures and loads the BPF programs for `cfg` without attaching them: the
/// verifier's verdict on this kernel (needs root). A refusal names the program and carries
/// the end of the verifier's log ([`CaptureError::Refused`]).
pub fn verify_load(cfg: &CaptureConfig) -> Result<(), CaptureError> {
    let report = load_report(cfg, 0)?;
    match report.failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The verifier log level that adds statistics to each program's log: instructions
/// processed and `stack depth A+B+C`, one number per subprogram (`BPF_LOG_STATS`).
pub const BPF_LOG_STATS: u32 = 4;
/// Bytes of verifier log kept per program (kernels from 6.4 keep the end of a longer log,
/// where the reason of a refusal is; older ones keep its start).
const PROGRAM_LOG_BYTES: usize = 1 << 20;
/// Lines of the verifier log shown when a program is refused.
pub const LOG_TAIL_LINES: usize = 20;

/// What happened to one program in a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramState {
    /// Passed the verifier and loaded.
    Loaded,
    /// Refused (by the verifier, or by libbpf before it).
    Failed,
    /// Selected, but not tried: loading stopped at an earlier program's failure.
    NotTried,
    /// Not selected by the streams (not loaded).
    Disabled,
}

/// One program of a load, with what the kernel said about it.
#[derive(Clone, Debug)]
pub struct ProgramVerdict {
    /// Program name (`rt_sys_exit`).
    pub name: String,
    /// Its section (`tp_btf/sys_exit`).
    pub section: String,
    /// What happened.
    pub state: ProgramState,
    /// The verifier's log: statistics when asked for ([`BPF_LOG_STATS`]), the reason of a
    /// refusal on failure; empty otherwise.
    pub log: String,
}

/// The verdict of one load of the real programs, configured as `retrace capture` would
/// ([`load_report`]).
#[derive(Debug)]
pub struct LoadReport {
    /// Every program of the object, in load order.
    pub programs: Vec<ProgramVerdict>,
    /// The load's error ([`CaptureError::Refused`] when a program was refused), if any.
    pub failure: Option<CaptureError>,
}

/// Opens, configures (as `retrace capture` would for `cfg`) and loads the programs without
/// attaching them, each with its own verifier log at `log_level` (0, or [`BPF_LOG_STATS`]
/// for statistics): one verdict per program. Fails only when the object cannot be opened or
/// configured; a refused load is in [`LoadReport::failure`]. Needs root.
pub fn load_report(cfg: &CaptureConfig, log_level: u32) -> Result<LoadReport, CaptureError> {
    cfg.validate()?;
    quiet_libbpf();
    let mut storage = MaybeUninit::uninit();
    let mut open = RetraceSkelBuilder::default()
        .open(&mut storage)
        .map_err(|e| CaptureError::bpf("opening the BPF object", e))?;
    configure(&mut open, cfg, std::process::id())?;
    let (loaded, logs) = load_logged(open, log_level);
    let ok = loaded.is_ok();
    let failure = loaded.err().map(|e| logs.error(e));
    Ok(LoadReport {
        programs: logs.verdicts(ok),
        failure,
    })
}

/// The last `lines` non-empty lines of a verifier log (the reason of a refusal is at its end:
/// "combined stack size of 2 calls is 704. Too large").
pub fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Per-program verifier log buffers of one load, and libbpf's messages during it.
struct ProgramLogs {
    /// (name, section, selected, buffer)
    programs: Vec<(String, String, bool, Vec<u8>)>,
    /// libbpf's warnings while loading (they name the program that failed).
    libbpf: Vec<String>,
}

impl ProgramLogs {
    fn log(buf: &[u8]) -> String {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    /// The program that failed: the one libbpf names in its warnings, else the last selected
    /// program with a log (loading stops at the first failure).
    fn failed(&self) -> Option<usize> {
        let named = self.libbpf.iter().find_map(|m| {
            let rest = m.split("prog '").nth(1)?;
            let name = rest.split('\'').next()?;
            self.programs.iter().position(|p| p.0 == name)
        });
        named.or_else(|| {
            self.programs
                .iter()
                .rposition(|p| p.2 && !Self::log(&p.3).trim().is_empty())
        })
    }

    /// The error of a failed load: the program and the end of its log when known.
    fn error(&self, source: libbpf_rs::Error) -> CaptureError {
        match self.failed() {
            Some(i) => {
                let (name, section, _, buf) = &self.programs[i];
                let log = Self::log(buf);
                let mut tail = log_tail(&log, LOG_TAIL_LINES);
                if tail.is_empty() {
                    tail = log_tail(&self.libbpf.concat(), LOG_TAIL_LINES);
                }
                CaptureError::Refused {
                    program: format!("{name} ({section})"),
                    log_tail: tail,
                    source,
                }
            }
            None => {
                let said: Vec<&str> = self
                    .libbpf
                    .iter()
                    .map(|m| m.trim().trim_start_matches("libbpf: "))
                    .filter(|m| !m.is_empty())
                    .collect();
                let what = if said.is_empty() {
                    "loading the BPF programs".to_string()
                } else {
                    format!("loading the BPF programs (libbpf: {})", said.join("; "))
                };
                CaptureError::bpf(what, source)
            }
        }
    }

    fn verdicts(&self, ok: bool) -> Vec<ProgramVerdict> {
        let failed = if ok { None } else { self.failed() };
        self.programs
            .iter()
            .enumerate()
            .map(|(i, (name, section, selected, buf))| ProgramVerdict {
                name: name.clone(),
                section: section.clone(),
                state: match (selected, failed) {
                    (false, _) => ProgramState::Disabled,
                    (true, None) if ok => ProgramState::Loaded,
                    (true, Some(f)) if i == f => ProgramState::Failed,
                    (true, Some(f)) if i < f => ProgramState::Loaded,
                    _ => ProgramState::NotTried,
                },
                log: Self::log(buf),
            })
            .collect()
    }
}

/// Loads `open` with a verifier log buffer of its own for each program (libbpf fills it on
/// failure even at `log_level` 0), libbpf's warnings kept instead of printed.
fn load_logged(
    mut open: OpenRetraceSkel<'_>,
    log_level: u32,
) -> (libbpf_rs::Result<retrace_bpf::RetraceSkel<'_>>, ProgramLogs) {
    use libbpf_rs::AsRawLibbpf;
    let mut logs = ProgramLogs {
        programs: Vec::new(),
        libbpf: Vec::new(),
    };
    for mut prog in open.open_object_mut().progs_mut() {
        let mut buf = vec![
            0u8;
            if prog.autoload() {
                PROGRAM_LOG_BYTES
            } else {
                0
            }
        ];
        if prog.autoload() {
            prog.set_log_level(log_level);
            // SAFETY: the buffer is valid for `buf.len()` bytes and outlives the load (it is
            // moved into `logs`, which does not move its heap allocation); libbpf writes it
            // only while loading.
            unsafe {
                libbpf_rs::libbpf_sys::bpf_program__set_log_buf(
                    prog.as_libbpf_object().as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len() as _,
                );
            }
        }
        logs.programs.push((
            prog.name().to_string_lossy().into_owned(),
            prog.section().to_string_lossy().into_owned(),
            prog.autoload(),
            buf,
        ));
    }
    let mark = libbpf_messages_mark(true);
    let loaded = open.load();
    logs.libbpf = libbpf_messages_since(mark);
    (loaded, logs)
}

/// The payload rings: one per possible CPU, each `bytes` long.
#[derive(Clone, Copy, Debug)]
struct DataRings {
    cpus: usize,
    bytes: u32,
}

/// Creates the payload rings and puts each in its CPU's slot of `rb_data`: a CPU never
/// contends with another for a ring's lock and producer position. The handles are the
/// consumer's way in (the kernel keeps the rings alive while `rb_data` holds them).
fn create_data_rings(
    rings: DataRings,
    skel: &retrace_bpf::RetraceSkel<'_>,
) -> Result<Vec<libbpf_rs::MapHandle>, CaptureError> {
    let DataRings { cpus, bytes } = rings;
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut rings = Vec::with_capacity(cpus);
    for cpu in 0..cpus {
        let ring = libbpf_rs::MapHandle::create(
            libbpf_rs::MapType::RingBuf,
            Some("rt_data_cpu"),
            0,
            0,
            bytes,
            &opts,
        )
        .map_err(|e| CaptureError::bpf("creating a payload ring", e))?;
        let key = u32::try_from(cpu).unwrap_or(u32::MAX).to_ne_bytes();
        let fd = ring.as_fd().as_raw_fd().to_ne_bytes();
        skel.maps
            .rb_data
            .update(&key, &fd, MapFlags::ANY)
            .map_err(|e| CaptureError::bpf("installing a payload ring", e))?;
        rings.push(ring);
    }
    Ok(rings)
}

/// libbpf's recent warnings, numbered, and how many loads keep them off stderr.
struct LibbpfMessages {
    next: u64,
    recent: std::collections::VecDeque<(u64, String)>,
    held: usize,
}

static LIBBPF_MESSAGES: std::sync::Mutex<LibbpfMessages> = std::sync::Mutex::new(LibbpfMessages {
    next: 0,
    recent: std::collections::VecDeque::new(),
    held: 0,
});

fn libbpf_messages() -> std::sync::MutexGuard<'static, LibbpfMessages> {
    LIBBPF_MESSAGES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts keeping libbpf's warnings (off stderr while `hold`): returns the mark to pass to
/// [`libbpf_messages_since`].
fn libbpf_messages_mark(hold: bool) -> u64 {
    let mut m = libbpf_messages();
    m.held += usize::from(hold);
    m.next
}

/// libbpf's warnings since `mark`; releases the hold taken by [`libbpf_messages_mark`].
fn libbpf_messages_since(mark: u64) -> Vec<String> {
    let mut m = libbpf_messages();
    m.held = m.held.saturating_sub(1);
    m.recent
        .iter()
        .filter(|(n, _)| *n >= mark)
        .map(|(_, s)| s.clone())
        .collect()
}

/// Keeps libbpf's chatter to warnings, on stderr (kept instead while a load holds them).
fn quiet_libbpf() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        if level != libbpf_rs::PrintLevel::Warn {
            return;
        }
        let mut m = libbpf_messages();
        if m.held == 0 {
            eprint!("libbpf: {msg}");
        }
        let n = m.next;
        m.next += 1;
        m.recent.push_back((n, msg));
        if m.recent.len() > 256 {
            m.recent.pop_front();
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, print)));
}

/// Sets the load-time constants and map sizes; disables the programs of unselected streams.
/// Returns the payload rings to create once loaded.
/// Set to `1` to verify and run the bounded-loop fallback of the fd walks even on a kernel
/// that has `bpf_loop` (the kernel matrix tests it this way on kernels that have it).
pub const NO_BPF_LOOP_ENV: &str = "RETRACE_NO_BPF_LOOP";

/// Whether the programs may call `bpf_loop` (Linux 5.17+, or a backport): read from the
/// kernel's BTF; without an answer, assume it (a kernel without BTF loads no tp_btf program).
fn use_bpf_loop() -> bool {
    if std::env::var_os(NO_BPF_LOOP_ENV).is_some_and(|v| v == "1") {
        return false;
    }
    retrace_bpf::features::kernel_helpers()
        .is_none_or(|ids| ids.contains(&retrace_bpf::features::BPF_LOOP))
}

fn configure(
    open: &mut OpenRetraceSkel<'_>,
    cfg: &CaptureConfig,
    self_pid: u32,
) -> Result<DataRings, CaptureError> {
    let s = cfg.streams;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or_else(|| CaptureError::Config("BPF object has no .rodata".into()))?;
    ro.self_tgid = self_pid;
    ro.filter_tgid = cfg.pid.unwrap_or(0);
    if let Some(comm) = &cfg.comm {
        ro.filter_comm_set = 1;
        for (i, b) in comm.bytes().take(15).enumerate() {
            ro.filter_comm[i] = b as i8;
        }
    }
    ro.filter_port = cfg.port.unwrap_or(0);
    ro.payload_bytes = cfg.payload_bytes;
    ro.en_proc = u8::from(s.has(Stream::Proc));
    ro.en_tcp = u8::from(s.has(Stream::Tcp) || s.has(Stream::L7));
    ro.en_l7 = u8::from(s.has(Stream::L7));
    ro.en_dns = u8::from(s.has(Stream::Dns));
    ro.en_logs = u8::from(s.has(Stream::Logs));
    ro.has_bpf_loop = u8::from(use_bpf_loop());
    let cpus = libbpf_rs::num_possible_cpus().unwrap_or(1).max(1);
    let rings = DataRings {
        cpus,
        bytes: cfg.data_ring_bytes_per_cpu(cpus),
    };
    let data = rings.bytes;
    let ctl = cfg.ctl_ring_bytes();
    // wake the consumer when a ring is a quarter full; otherwise it polls every 20 ms
    ro.wakeup_data_bytes = u64::from(data / 4);
    ro.wakeup_ctl_bytes = u64::from(ctl / 4);
    ro.wake_check_mask = wake_check_every(data, cfg.payload_bytes) - 1;
    // one payload ring per CPU (created after load by `create_data_rings`)
    open.maps
        .rb_data
        .set_max_entries(u32::try_from(cpus).unwrap_or(u32::MAX))
        .map_err(|e| CaptureError::bpf("sizing rb_data", e))?;
    open.maps
        .rb_ctl
        .set_max_entries(ctl)
        .map_err(|e| CaptureError::bpf("sizing rb_ctl", e))?;
    let p = &mut open.progs;
    let proc = s.has(Stream::Proc);
    let tcp = s.has(Stream::Tcp) || s.has(Stream::L7);
    let sys = tcp || s.has(Stream::Dns) || s.has(Stream::Logs);
    p.rt_oom.set_autoload(proc);
    // fork also hands followed sockets and log files to the child; exec and exit also forget
    // the fds they close
    for prog in [&mut p.rt_exec, &mut p.rt_exit, &mut p.rt_fork] {
        prog.set_autoload(proc || sys);
    }
    for prog in [
        &mut p.rt_set_state,
        &mut p.rt_retransmit,
        &mut p.rt_retransmit_synack,
        &mut p.rt_send_reset,
        &mut p.rt_receive_reset,
    ] {
        prog.set_autoload(tcp);
    }
    p.rt_sys_exit.set_autoload(sys);
    // the seed resolver runs once, by hand (see `resolve_seeded`), not through attach()
    p.rt_seed.set_autoload(tcp);
    p.rt_seed.set_autoattach(false);
    // the socket sampler runs by hand too, every --sock-interval (see `SockSampler`)
    p.rt_sock_sample
        .set_autoload(tcp && cfg.sock_interval.is_some());
    p.rt_sock_sample.set_autoattach(false);
    Ok(rings)
}

/// How many payload records a CPU submits between two looks at the data ring's fill level (a
/// power of two, 1 to 64): at most a quarter of the wakeup threshold (a quarter of the ring)
/// in records of the largest size.
fn wake_check_every(ring: u32, payload_bytes: u32) -> u64 {
    let record = (std::mem::size_of::<retrace_bpf::types::rt_data>() as u64)
        + u64::from(payload_bytes).max(1);
    let fit = (u64::from(ring) / 16 / record).clamp(1, 64);
    1 << (63 - fit.leading_zeros())
}

/// Seeds the kernel's fd table (sockets and log files open before the capture) and builds the
/// initial state snapshot.
fn seed(
    cfg: &CaptureConfig,
    skel: &retrace_bpf::RetraceSkel<'_>,
    converter: &mut Converter,
    start_mono: u64,
    self_pid: u32,
) -> StateSnapshot {
    let tcp = cfg.streams.has(Stream::Tcp) || cfg.streams.has(Stream::L7);
    let logs = cfg.streams.has(Stream::Logs);
    let sockets = if tcp {
        procfs::tcp_sockets()
    } else {
        Default::default()
    };
    let listen_ports: std::collections::HashSet<u16> = sockets
        .values()
        .filter(|s| s.state == 10)
        .map(|s| s.local.port)
        .collect();
    let mut state = StateSnapshot {
        processes: converter.procs.snapshot(),
        ..Default::default()
    };
    let pids: Vec<u32> = state.processes.iter().map(|p| p.pid).collect();
    for pid in pids {
        if pid == self_pid || cfg.pid.is_some_and(|f| f != pid) {
            continue;
        }
        let info = converter.procs.get(pid);
        if let (Some(c), Some(i)) = (&cfg.comm, info) {
            if &i.comm != c {
                continue;
            }
        }
        if let (Some(c), Some(i)) = (&cfg.cgroup, info) {
            if !i.cgroup.contains(c.as_str()) {
                continue;
            }
        }
        if !(tcp || logs) {
            continue;
        }
        for (fd, target) in procfs::process_fds(pid) {
            match target {
                FdTarget::Socket(inode) => {
                    let Some(s) = sockets.get(&inode) else {
                        continue;
                    };
                    if let Some(p) = cfg.port {
                        if s.local.port != p && s.remote.port != p {
                            continue;
                        }
                    }
                    if s.state == 10 {
                        state.listening.push(ListenSocket {
                            pid,
                            fd,
                            local: s.local,
                        });
                        continue;
                    }
                    let inbound = listen_ports.contains(&s.local.port);
                    state.connections.push(OpenConnection {
                        conn: ConnId {
                            pid,
                            fd,
                            start_ns: start_mono,
                        },
                        local: s.local,
                        remote: s.remote,
                        inbound,
                    });
                    let mut flags = rt_hdr_flags::RT_F_SEEDED.0;
                    if inbound {
                        flags |= rt_hdr_flags::RT_F_INBOUND.0;
                    }
                    put_fd(skel, pid, fd, rt_fd_kind::RT_FD_TCP.0, flags, start_mono);
                }
                FdTarget::LogFile(path) if logs => {
                    put_fd(skel, pid, fd, rt_fd_kind::RT_FD_LOG.0, 0, start_mono);
                    converter.set_log_path(pid, fd, path);
                }
                FdTarget::LogFile(_) => {}
            }
        }
    }
    state
}

/// Runs the `rt_seed` iterator once over every task's open files: it resolves the kernel
/// socket of each TCP fd seeded from /proc, so that a seeded socket closed before any read or
/// write still reports its close. Best effort: without it, seeded sockets are resolved on
/// their first read or write (and one closed before that is not reported).
fn resolve_seeded(skel: &retrace_bpf::RetraceSkel<'_>) {
    if let Ok(link) = skel.progs.rt_seed.attach() {
        run_iterator(&link);
    }
}

/// Runs a BPF iterator program once over everything it walks: its programs print nothing,
/// reading the iterator to the end is what runs them.
fn run_iterator(link: &libbpf_rs::Link) {
    use std::io::Read;
    let Ok(mut iter) = libbpf_rs::Iter::new(link) else {
        return;
    };
    let mut buf = [0u8; 256];
    while let Ok(n) = iter.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// The socket sampler (`rt_sock_sample`, an iterator over the TCP sockets of the daemon's
/// network namespace): run every `--sock-interval`, it emits an RTT sample for every
/// connection of a followed process and a zero-window sample for those whose peer has no room.
struct SockSampler {
    link: libbpf_rs::Link,
    every: Duration,
    last: Instant,
}

impl SockSampler {
    /// The sampler, attached; `None` when off, or when the kernel refuses it (the capture
    /// goes on without: the RTT of busy sockets still comes from their syscalls).
    fn new(skel: &retrace_bpf::RetraceSkel<'_>, cfg: &CaptureConfig) -> Option<Self> {
        let every = cfg.sock_interval?;
        let tcp = cfg.streams.has(Stream::Tcp) || cfg.streams.has(Stream::L7);
        if !tcp {
            return None;
        }
        match skel.progs.rt_sock_sample.attach() {
            Ok(link) => Some(Self {
                link,
                every,
                last: Instant::now(),
            }),
            Err(e) => {
                eprintln!("retrace: socket sampler off: {e}");
                None
            }
        }
    }

    /// Runs the iterator once when a period has passed since the last run.
    fn run_when_due(&mut self) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        run_iterator(&self.link);
    }
}

fn put_fd(
    skel: &retrace_bpf::RetraceSkel<'_>,
    pid: u32,
    fd: i32,
    kind: u32,
    flags: u32,
    start: u64,
) {
    let k = rt_fd_key { tgid: pid, fd };
    let v = rt_fd_val {
        sk: 0,
        start_ns: start,
        kind,
        flags,
    };
    let _ = skel
        .maps
        .fds
        .update(pod_bytes(&k), pod_bytes(&v), MapFlags::ANY);
    // fork, exec and exit walk the fds of the processes in fd_owners only
    let _ = skel
        .maps
        .fd_owners
        .update(&pid.to_ne_bytes(), &[1u8], MapFlags::ANY);
}

fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `T` is one of the skeleton's plain repr(C) key/value types without padding
    // holes (sizes pinned by the static asserts in retrace.h); viewing it as bytes is sound
    // for its size and the borrow's lifetime.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn loss_event(
    kind: EventKind,
    cpu: u32,
    count: u64,
    reason: LossReason,
    from_ns: u64,
    to_ns: u64,
) -> Event {
    Event::new(
        to_ns,
        EventBody::Loss(LossMarker {
            kind,
            cpu,
            count,
            reason,
            from_ns,
            to_ns,
        }),
    )
}

/// The per-CPU ring-full counters of the kernel, and what was already reported.
struct DropCounters {
    seen: Vec<[u64; 16]>,
    totals: [u64; 16],
}

impl DropCounters {
    fn new(ncpu: usize) -> Self {
        Self {
            seen: vec![[0; 16]; ncpu],
            totals: [0; 16],
        }
    }

    /// Loss markers for counters that moved since the last poll.
    fn poll(&mut self, skel: &retrace_bpf::RetraceSkel<'_>, from: u64, to: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for kind in 1..rt_kind::RT_K__COUNT.0 {
            let Some(ek) = convert::event_kind(kind) else {
                continue;
            };
            let Ok(Some(per_cpu)) = skel
                .maps
                .drops
                .lookup_percpu(&kind.to_ne_bytes(), MapFlags::ANY)
            else {
                continue;
            };
            for (cpu, v) in per_cpu.iter().enumerate() {
                let Some(bytes) = v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                    continue;
                };
                let now = u64::from_ne_bytes(bytes);
                let Some(seen) = self.seen.get_mut(cpu) else {
                    continue;
                };
                let k = kind as usize;
                let d = now.saturating_sub(seen[k]);
                if d > 0 {
                    seen[k] = now;
                    self.totals[k] += d;
                    out.push(loss_event(
                        ek,
                        cpu as u32,
                        d,
                        LossReason::RingFull,
                        from,
                        to,
                    ));
                }
            }
        }
        out
    }

    fn total(&self) -> u64 {
        self.totals.iter().sum()
    }

    fn totals_by_name(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (k, v) in self.totals.iter().enumerate() {
            if *v > 0 {
                if let Some(ek) = convert::event_kind(k as u32) {
                    *m.entry(ek.name().to_string()).or_default() += v;
                }
            }
        }
        m
    }
}

/// The ring consumer's state (lives on the loading thread).
struct Consumer {
    batch: RecordBatch,
    tx: SyncSender<Msg>,
    /// Buffers the writer emptied, for the next batches.
    spare: Receiver<Vec<u8>>,
    in_flight: Arc<AtomicUsize>,
    records: u64,
    dropped_queue: [u64; EventKind::ALL.len()],
}

impl Consumer {
    fn on_record(&mut self, bytes: &[u8]) {
        self.records += 1;
        self.batch.push(&bytes[..convert::record_used_len(bytes)]);
        if self.batch.count >= BATCH_RECORDS || self.batch.buf.len() >= BATCH_BYTES {
            self.send_batch();
        }
    }

    /// Hands the batch to the writer, or drops it (counted per kind) when the queue is full.
    fn send_batch(&mut self) {
        if self.batch.count == 0 {
            return;
        }
        let buf = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES));
        let batch = std::mem::replace(&mut self.batch, RecordBatch::with_buffer(buf));
        let bytes = batch.buf.len();
        let over = self.in_flight.load(Ordering::Relaxed) + bytes > QUEUE_BYTES;
        let res = if over {
            Err(batch)
        } else {
            self.in_flight.fetch_add(bytes, Ordering::Relaxed);
            match self.tx.try_send(Msg::Records(batch, bytes)) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(Msg::Records(b, _)))
                | Err(TrySendError::Disconnected(Msg::Records(b, _))) => {
                    self.in_flight.fetch_sub(bytes, Ordering::Relaxed);
                    Err(b)
                }
                Err(_) => Ok(()),
            }
        };
        if let Err(lost) = res {
            count_by_kind(lost.iter(), &mut self.dropped_queue);
        }
    }
}

/// What the writer thread counts, read by the loading thread at the end.
#[derive(Debug, Default)]
struct WriterCounters {
    /// Redact secrets before the sink.
    redact: bool,
    /// The user's rules, added to the built-in ones.
    rules: UserRules,
    /// Secret values redacted.
    redacted: AtomicU64,
    /// Records that could not be parsed.
    bad_records: AtomicU64,
}

/// Redacts secrets in an event before it reaches disk (payloads, log writes, command lines)
/// by the built-in rules and the user's; returns how many.
pub fn redact_event(ev: &mut Event, rules: &UserRules) -> usize {
    use retrace_protocols::redact::{redact_args_with, redact_with};
    match &mut ev.body {
        EventBody::L7(m) => redact_with(&mut m.payload, rules),
        EventBody::Log(m) => redact_with(&mut m.payload, rules),
        EventBody::Udp(m) => redact_with(&mut m.payload, rules),
        EventBody::ProcExec(e) => redact_args_with(&mut e.cmdline, rules),
        _ => 0,
    }
}

/// Redacts the command lines of the processes of a state snapshot (read from /proc).
fn redact_state(state: &mut StateSnapshot, rules: &UserRules) -> usize {
    state
        .processes
        .iter_mut()
        .map(|p| retrace_protocols::redact::redact_args_with(&mut p.cmdline, rules))
        .sum()
}

/// Counts kernel records by the kind of event they make, into `counts` (indexed by
/// [`EventKind::as_u8`]); records of no known kind are not counted.
fn count_by_kind<'a>(
    records: impl Iterator<Item = &'a [u8]>,
    counts: &mut [u64; EventKind::ALL.len()],
) {
    for rec in records {
        let kind = convert::record_kind(rec)
            .ok()
            .and_then(|k| convert::event_kind(u32::from(k)));
        if let Some(k) = kind {
            counts[k.as_u8() as usize] += 1;
        }
    }
}

/// Counts an event that will never be written into `counts`, by kind: a loss marker counts
/// the losses it reports (as [`crate::sink::append_own`] would have recorded them), any other
/// event itself.
fn count_unwritten_event(ev: &Event, counts: &mut [u64; EventKind::ALL.len()]) {
    match &ev.body {
        EventBody::Loss(l) => counts[l.kind.as_u8() as usize] += l.count,
        _ => counts[ev.kind().as_u8() as usize] += 1,
    }
}

/// Counts what a message holds that will never be written, by kind, into `counts`.
fn count_unwritten(msg: &Msg, counts: &mut [u64; EventKind::ALL.len()]) {
    match msg {
        Msg::Records(batch, _) => count_by_kind(batch.iter(), counts),
        Msg::Control(events) => {
            for ev in events {
                count_unwritten_event(ev, counts);
            }
        }
        Msg::Profile(batch) => {
            for ev in batch.defs.iter().chain(&batch.events) {
                count_unwritten_event(ev, counts);
            }
        }
        Msg::Mark(..) => counts[EventKind::Mark.as_u8() as usize] += 1,
        Msg::Stop => {}
    }
}

fn writer_loop(
    mut sink: Box<dyn EventSink>,
    mut converter: Converter,
    rx: Receiver<Msg>,
    spare: &SyncSender<Vec<u8>>,
    in_flight: &AtomicUsize,
    counters: &WriterCounters,
) -> Result<SinkStats, CaptureError> {
    let mut last_tick = Instant::now();
    let mut result: Result<(), CaptureError> = Ok(());
    let mut defs = crate::profile::DefWriter::default();
    // Records of a batch after the one whose append failed: never written.
    let mut unwritten = [0u64; EventKind::ALL.len()];
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(100));
        let step = (|| -> Result<bool, CaptureError> {
            match msg {
                Ok(Msg::Records(batch, bytes)) => {
                    in_flight.fetch_sub(bytes, Ordering::Relaxed);
                    let mut bad = 0u64;
                    let mut redacted = 0u64;
                    let mut res = Ok(());
                    let mut records = batch.iter();
                    while let Some(rec) = records.next() {
                        let Ok(rec) = convert::parse_record(rec) else {
                            bad += 1;
                            continue;
                        };
                        let Some(mut ev) = converter.convert(rec) else {
                            continue;
                        };
                        if counters.redact {
                            redacted += redact_event(&mut ev, &counters.rules) as u64;
                        }
                        res = sink.append(&ev);
                        converter.reclaim(ev);
                        if res.is_err() {
                            // (The sink counts the event it failed on with its block.)
                            count_by_kind(records.by_ref(), &mut unwritten);
                            break;
                        }
                    }
                    drop(records);
                    counters.bad_records.fetch_add(bad, Ordering::Relaxed);
                    counters.redacted.fetch_add(redacted, Ordering::Relaxed);
                    let _ = spare.try_send(batch.buf);
                    res?;
                }
                Ok(Msg::Control(events)) => {
                    let mut events = events.iter();
                    while let Some(ev) = events.next() {
                        if let Err(e) = crate::sink::append_own(sink.as_mut(), ev) {
                            for rest in events.by_ref() {
                                count_unwritten_event(rest, &mut unwritten);
                            }
                            return Err(e);
                        }
                    }
                }
                Ok(Msg::Profile(batch)) => defs.write(batch, sink.as_mut())?,
                Ok(Msg::Mark(ts, m, pin_ns)) => {
                    sink.append(&Event::new(ts, EventBody::Mark(m)))?;
                    sink.pin(ts.saturating_sub(pin_ns), ts.saturating_add(pin_ns));
                    sink.flush()?;
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(true),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_tick.elapsed() >= Duration::from_millis(100) {
                sink.tick()?;
                last_tick = Instant::now();
            }
            Ok(false)
        })();
        match step {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        // A failed writer (a full disk) writes nothing more: what is still queued is lost,
        // counted in the manifest's totals (written when there is room left). The queue is
        // closed then, so that the consumer counts what comes after as dropped.
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Records(_, bytes) = &msg {
                in_flight.fetch_sub(*bytes, Ordering::Relaxed);
            }
            count_unwritten(&msg, &mut unwritten);
        }
        drop(rx);
        for (k, &n) in EventKind::ALL.iter().zip(&unwritten) {
            if n > 0 {
                sink.record_loss(*k, n);
            }
        }
    }
    // Always try to seal what was written, even after an error.
    let closed = sink.close();
    result?;
    closed
}

/// The per-second status line of `--verbose`.
struct Status {
    on: bool,
    last_records: u64,
    last: Instant,
}

impl Status {
    fn new(on: bool) -> Self {
        Self {
            on,
            last_records: 0,
            last: Instant::now(),
        }
    }

    fn line(&mut self, c: &Consumer, drops: &DropCounters, in_flight: &AtomicUsize) {
        if !self.on {
            return;
        }
        let dt = self.last.elapsed().as_secs_f64().max(1e-3);
        let rate = (c.records - self.last_records) as f64 / dt;
        eprintln!(
            "retrace: {:.0} records/s, {} total, dropped ring {} queue {}, queued {} KiB",
            rate,
            c.records,
            drops.total(),
            c.dropped_queue.iter().sum::<u64>(),
            in_flight.load(Ordering::Relaxed) >> 10
        );
        self.last_records = c.records;
        self.last = Instant::now();
    }
}

/// Where the mark notes of a capture directory live (for `retrace mark`).
pub fn marks_dir(dir: &Path) -> PathBuf {
    dir.join(marks::MARKS_DIR)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;

    /// A kernel L7 record (fixed part, then the payload) as the ring hands it over.
    fn l7(payload: &[u8]) -> Vec<u8> {
        let mut d = retrace_bpf::types::rt_data::default();
        d.h.ts = 10;
        d.h.kind = rt_kind::RT_K_L7.0 as u16;
        d.h.pid = 7;
        d.h.tid = 1;
        d.t.family = 2;
        d.size = payload.len() as u64;
        d.payload_len = payload.len() as u32;
        let mut out = pod_bytes(&d).to_vec();
        out.extend_from_slice(payload);
        // ring records are padded to 8 bytes; payload classes leave more room after it
        out.resize(out.len() + 13, 0xAA);
        out
    }

    fn batch(records: &[Vec<u8>]) -> Msg {
        let mut b = RecordBatch::default();
        for r in records {
            b.push(r);
        }
        let bytes = b.buf.len();
        Msg::Records(b, bytes)
    }

    /// Runs the writer loop over `msgs` with a memory sink; returns what reached the sink.
    fn through_writer(msgs: Vec<Msg>, redact: bool) -> (MemorySink, u64) {
        struct Shared(std::sync::Arc<std::sync::Mutex<MemorySink>>);
        impl EventSink for Shared {
            fn append(&mut self, ev: &Event) -> Result<(), CaptureError> {
                self.0.lock().unwrap().append(ev)
            }
            fn tick(&mut self) -> Result<(), CaptureError> {
                self.0.lock().unwrap().tick()
            }
            fn flush(&mut self) -> Result<(), CaptureError> {
                Ok(())
            }
            fn pin(&mut self, a: u64, b: u64) {
                self.0.lock().unwrap().pin(a, b)
            }
            fn record_loss(&mut self, k: EventKind, n: u64) {
                self.0.lock().unwrap().record_loss(k, n)
            }
            fn stats(&self) -> SinkStats {
                self.0.lock().unwrap().stats()
            }
            fn close(self: Box<Self>) -> Result<SinkStats, CaptureError> {
                Ok(self.stats())
            }
        }
        let shared = std::sync::Arc::new(std::sync::Mutex::new(MemorySink::default()));
        let (tx, rx) = mpsc::sync_channel(16);
        let (spare_tx, spare_rx) = mpsc::sync_channel(SPARE_BUFFERS);
        let in_flight = AtomicUsize::new(0);
        let counters = WriterCounters {
            redact,
            ..Default::default()
        };
        let mut batches = 0;
        for m in msgs {
            if let Msg::Records(_, b) = &m {
                in_flight.fetch_add(*b, Ordering::Relaxed);
                batches += 1;
            }
            tx.send(m).unwrap();
        }
        tx.send(Msg::Stop).unwrap();
        writer_loop(
            Box::new(Shared(shared.clone())),
            Converter::new(ProcTable::default(), None).without_proc_reads(),
            rx,
            &spare_tx,
            &in_flight,
            &counters,
        )
        .unwrap();
        assert_eq!(in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(spare_rx.try_iter().count(), batches.min(SPARE_BUFFERS));
        let sink = std::mem::take(&mut *shared.lock().unwrap());
        (sink, counters.redacted.load(Ordering::Relaxed))
    }

    #[test]
    fn secrets_are_redacted_before_the_sink_unless_asked_not_to() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-t0ken\r\n\r\n";
        let (sink, n) = through_writer(vec![batch(&[l7(req)])], true);
        let EventBody::L7(m) = &sink.events[0].body else {
            panic!("not l7")
        };
        assert_eq!(m.payload.len(), req.len(), "redaction keeps the length");
        let text = String::from_utf8_lossy(&m.payload);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("Host: x"));
        assert_eq!(n, 1);

        let (sink, n) = through_writer(vec![batch(&[l7(req), l7(b"second")])], false);
        assert_eq!(sink.events.len(), 2, "every record of the batch");
        let EventBody::L7(m) = &sink.events[0].body else {
            panic!("not l7")
        };
        assert_eq!(m.payload, req);
        assert_eq!(n, 0);
    }

    /// The payload buffer is reused from one event to the next: a short payload after a long
    /// one must carry nothing of it, and a longer one after a short one all of itself.
    #[test]
    fn reused_payload_buffers_carry_nothing_over() {
        let long = b"GET /a/long/path/with/many/segments HTTP/1.1\r\nHost: example\r\n\r\n";
        let (sink, _) = through_writer(
            vec![batch(&[l7(long), l7(b"short"), l7(b""), l7(long)])],
            true,
        );
        let payloads: Vec<&[u8]> = sink
            .events
            .iter()
            .map(|e| match &e.body {
                EventBody::L7(m) => m.payload.as_slice(),
                _ => panic!("not l7"),
            })
            .collect();
        assert_eq!(payloads, vec![&long[..], b"short", b"", &long[..]]);
    }

    #[test]
    fn marks_pin_around_them_and_losses_reach_the_totals() {
        let mark = Mark {
            source: MarkSource::User,
            note: "deploy".into(),
        };
        let loss = loss_event(EventKind::L7, 1, 7, LossReason::RingFull, 100, 200);
        let (sink, _) = through_writer(
            vec![Msg::Mark(1_000, mark, 300), Msg::Control(vec![loss])],
            true,
        );
        assert_eq!(sink.pins, vec![(700, 1_300)]);
        assert_eq!(sink.losses.get(&EventKind::L7), Some(&7));
        assert!(matches!(sink.events[0].body, EventBody::Mark(_)));
        assert_eq!(sink.events[0].ts, 1_000);
        let EventBody::Loss(l) = &sink.events[1].body else {
            panic!("not a loss marker")
        };
        assert_eq!(
            (l.kind, l.cpu, l.count, l.from_ns, l.to_ns),
            (EventKind::L7, 1, 7, 100, 200)
        );
    }

    /// A disk that fills after `room` events: the event an append fails on is counted with
    /// its block (as `CaptureWriter` does), the rest must be counted by the writer loop.
    #[derive(Default)]
    struct Filling {
        room: usize,
        written: usize,
        lost: u64,
    }

    struct FullDisk(Arc<std::sync::Mutex<Filling>>);

    impl EventSink for FullDisk {
        fn append(&mut self, _ev: &Event) -> Result<(), CaptureError> {
            let mut f = self.0.lock().expect("lock");
            if f.written == f.room {
                f.lost += 1;
                return Err(CaptureError::io(
                    "/full",
                    std::io::Error::from_raw_os_error(libc::ENOSPC),
                ));
            }
            f.written += 1;
            Ok(())
        }
        fn tick(&mut self) -> Result<(), CaptureError> {
            Ok(())
        }
        fn flush(&mut self) -> Result<(), CaptureError> {
            Ok(())
        }
        fn pin(&mut self, _: u64, _: u64) {}
        fn record_loss(&mut self, _: EventKind, n: u64) {
            self.0.lock().expect("lock").lost += n;
        }
        fn stats(&self) -> SinkStats {
            SinkStats::default()
        }
        fn close(self: Box<Self>) -> Result<SinkStats, CaptureError> {
            Ok(SinkStats::default())
        }
    }

    #[test]
    fn a_full_disk_counts_every_event_it_did_not_write() {
        let filling = Arc::new(std::sync::Mutex::new(Filling {
            room: 6,
            ..Default::default()
        }));
        let (tx, rx) = mpsc::sync_channel(16);
        let (spare_tx, _spare_rx) = mpsc::sync_channel(SPARE_BUFFERS);
        let in_flight = AtomicUsize::new(0);
        for _ in 0..3 {
            let m = batch(&[l7(b"a"), l7(b"b"), l7(b"c"), l7(b"d")]);
            if let Msg::Records(_, b) = &m {
                in_flight.fetch_add(*b, Ordering::Relaxed);
            }
            tx.send(m).expect("send");
        }
        let mark = Mark {
            source: MarkSource::User,
            note: "after the disk filled".into(),
        };
        tx.send(Msg::Mark(5, mark, 0)).expect("send");
        let loss = loss_event(EventKind::L7, 0, 3, LossReason::RingFull, 1, 2);
        tx.send(Msg::Control(vec![loss])).expect("send");
        tx.send(Msg::Stop).expect("send");
        let res = writer_loop(
            Box::new(FullDisk(Arc::clone(&filling))),
            Converter::new(ProcTable::default(), None).without_proc_reads(),
            rx,
            &spare_tx,
            &in_flight,
            &WriterCounters::default(),
        );
        assert!(
            res.as_ref().is_err_and(CaptureError::is_disk_full),
            "{res:?}"
        );
        let f = filling.lock().expect("lock");
        assert_eq!(f.written, 6);
        // 12 records, a mark and a loss marker reporting 3 ring drops: 6 records written;
        // the 6 others, the mark and the 3 drops the marker reported, counted.
        assert_eq!(f.lost, 10, "lost events counted");
        assert_eq!(
            in_flight.load(Ordering::Relaxed),
            0,
            "the queue's budget given back"
        );
        assert!(tx.send(Msg::Stop).is_err(), "the queue is closed");
    }

    #[test]
    fn a_full_queue_drops_and_counts_per_kind() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let (_spare_tx, spare) = mpsc::sync_channel(1);
        let mut c = Consumer {
            batch: RecordBatch::default(),
            tx,
            spare,
            in_flight: Arc::new(AtomicUsize::new(0)),
            records: 0,
            dropped_queue: [0; EventKind::ALL.len()],
        };
        let mut first = 0;
        for i in 0..3 {
            c.on_record(&l7(b"x"));
            c.on_record(&l7(b"y"));
            if i == 0 {
                first = c.batch.buf.len();
            }
            c.send_batch();
        }
        // the first batch fits in the one-slot queue, the two others are dropped
        assert_eq!(c.records, 6);
        assert_eq!(c.dropped_queue[EventKind::L7.as_u8() as usize], 4);
        assert_eq!(c.in_flight.load(Ordering::Relaxed), first);
        // and the byte budget is enforced too
        c.in_flight.store(QUEUE_BYTES, Ordering::Relaxed);
        c.on_record(&l7(b"z"));
        c.send_batch();
        assert_eq!(c.dropped_queue[EventKind::L7.as_u8() as usize], 5);
    }

    #[test]
    fn record_batches_keep_every_record_whole() {
        let recs = [l7(b"a"), l7(&[b'b'; 600]), Vec::new(), l7(b"")];
        let mut b = RecordBatch::default();
        for r in &recs {
            b.push(r);
        }
        assert_eq!(b.count, 4);
        let back: Vec<&[u8]> = b.iter().collect();
        assert_eq!(back.len(), 4);
        for (x, y) in back.iter().zip(&recs) {
            assert_eq!(*x, y.as_slice());
        }
        let b = RecordBatch::with_buffer(b.buf);
        assert_eq!((b.count, b.buf.len(), b.iter().count()), (0, 0, 0));
    }

    #[test]
    fn wake_checks_fit_the_ring() {
        assert_eq!(wake_check_every(8 << 20, 512), 64);
        assert_eq!(wake_check_every(1 << 20, 4096), 8);
        assert_eq!(wake_check_every(64 << 10, 4096), 1);
        assert_eq!(wake_check_every(256 << 10, 512), 16);
        for (ring, p) in [(64 << 10, 0), (64 << 10, 512), (16 << 20, 4096)] {
            let n = wake_check_every(ring, p);
            assert!(n.is_power_of_two() && (1..=64).contains(&n));
        }
    }

    #[test]
    fn clock_sync_is_consistent() {
        let a = clock_sync();
        let now_wall = marks::realtime_ns();
        let mapped = a.to_wall(marks::monotonic_ns());
        let diff = now_wall.abs_diff(mapped);
        assert!(diff < 50_000_000, "mono→wall mapping off by {diff} ns");
    }

    #[test]
    fn log_tail_keeps_the_last_non_empty_lines() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n\n1: (b7) r0 = 0\n\
                   combined stack size of 2 calls is 704. Too large\n\n\
                   verification time 1200 usec\nstack depth 472+224\n";
        assert_eq!(
            log_tail(log, 3),
            "combined stack size of 2 calls is 704. Too large\n\
             verification time 1200 usec\nstack depth 472+224"
        );
        assert_eq!(log_tail(log, 100).lines().count(), 6);
        assert_eq!(log_tail("", 20), "");
    }

    #[test]
    fn a_failed_load_names_its_program_and_ends_with_its_log() {
        let mut log = vec![0u8; 64];
        log[..27].copy_from_slice(b"1: (b7) r0 = 0\nToo large\n\0\0");
        let logs = ProgramLogs {
            programs: vec![
                (
                    "rt_exec".into(),
                    "tp_btf/sched_process_exec".into(),
                    true,
                    vec![0; 8],
                ),
                (
                    "rt_oom".into(),
                    "tp_btf/mark_victim".into(),
                    false,
                    Vec::new(),
                ),
                ("rt_sys_exit".into(), "tp_btf/sys_exit".into(), true, log),
                ("rt_seed".into(), "iter/task_file".into(), true, vec![0; 8]),
            ],
            libbpf: vec!["prog 'rt_sys_exit': BPF program load failed: -EACCES\n".into()],
        };
        let err = logs.error(libbpf_rs::Error::from_raw_os_error(libc::EACCES));
        let text = err.to_string();
        assert!(
            text.starts_with("BPF: program rt_sys_exit (tp_btf/sys_exit) was refused"),
            "{text}"
        );
        assert!(
            text.ends_with("\n    1: (b7) r0 = 0\n    Too large"),
            "{text}"
        );
        let states: Vec<ProgramState> = logs.verdicts(false).iter().map(|v| v.state).collect();
        assert_eq!(
            states,
            [
                ProgramState::Loaded,
                ProgramState::Disabled,
                ProgramState::Failed,
                ProgramState::NotTried
            ]
        );
    }

    #[test]
    fn a_program_the_verifier_refuses_is_named_with_its_log() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("RETRACE_REQUIRE_BPF").as_deref() == Ok("1") {
                panic!("RETRACE_REQUIRE_BPF=1 but not root");
            }
            eprintln!("skipped: needs root (loads BPF programs)");
            return;
        }
        quiet_libbpf();
        let cfg = CaptureConfig::default();
        let mut storage = MaybeUninit::uninit();
        let mut open = RetraceSkelBuilder::default().open(&mut storage).unwrap();
        configure(&mut open, &cfg, std::process::id()).unwrap();
        // A tracing program's code as a socket filter: the verifier refuses its context reads.
        open.progs
            .rt_oom
            .set_prog_type(libbpf_rs::ProgramType::SocketFilter);
        let (loaded, logs) = load_logged(open, 0);
        let err = logs.error(loaded.err().expect("the verifier refuses it"));
        let CaptureError::Refused {
            program, log_tail, ..
        } = &err
        else {
            panic!("not a refusal: {err}");
        };
        assert_eq!(program, "rt_oom (tp_btf/mark_victim)");
        assert!(!log_tail.is_empty() && log_tail.lines().count() <= LOG_TAIL_LINES);
        println!("{err}");
    }
}
