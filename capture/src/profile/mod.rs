//! The profiler: the capture's `cpu`, `offcpu`, `heap` and `mem` streams (issue 13).
//!
//! It runs on a thread of its own beside the ring consumer and the writer: it loads the
//! profiler's BPF object (`retrace_bpf::profile`), opens one cpu-clock perf event per CPU,
//! attaches the allocator uprobes to the chosen processes (found again by name as they start),
//! consumes its ring, unwinds each user stack copy with the binaries' `.eh_frame` (stack bytes
//! never leave this thread), polls memory, and hands the writer batches of events together
//! with the definitions (binaries, stacks) they need. The writer ([`DefWriter`]) writes a
//! definition before its first use in every segment, so each segment stands alone.
//!
//! Modules: `elf` (build ids, symbols, unwind sections, where to probe `free`), `unwind`
//! (per-process unwinders, normalization, interning), `memory` (RSS and cgroup polling).

pub mod elf;
pub mod memory;
pub mod unwind;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, RingBufferBuilder};
use retrace_bpf::profile::types::{rt_alloc_fn, rt_prof, rt_prof_flags, rt_prof_kind};
use retrace_bpf::profile::{ProfileSkel, ProfileSkelBuilder};
use retrace_segment::{
    CpuSample, Event, EventBody, EventKind, HeapAlloc, HeapFree, LossMarker, LossReason, OffCpu,
    PageFault, StackId,
};

use crate::doctor::{perf_event_open, PerfEventAttr};
use crate::sink::EventSink;
use crate::CaptureError;
use unwind::Stacks;

/// What the profiler records.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileConfig {
    /// CPU samples per second per CPU; 0: off.
    pub cpu_hz: u64,
    /// Off-CPU: the shortest blocked time in one syscall recorded; `None`: off.
    pub offcpu_min: Option<Duration>,
    /// Memory (RSS, cgroups) polling interval; `None`: off.
    pub mem_interval: Option<Duration>,
    /// Heap sampling: processes by pid.
    pub heap_pids: Vec<u32>,
    /// Heap sampling: processes by command name (15 bytes at most, as the kernel keeps it),
    /// including those that start later.
    pub heap_comms: Vec<String>,
    /// Mean bytes between heap samples; 1: every allocation.
    pub heap_sample_bytes: u64,
    /// Bytes of user stack copied per sample (a multiple of 1 KiB, at most 16 KiB).
    pub stack_bytes: u32,
    /// Page faults on new pages: one sampled in this many, with its stack; 0: off. Only in the
    /// heap-profiled processes when any are chosen, else in every process.
    pub fault_every: u32,
}

impl ProfileConfig {
    /// What the profiler will do that needs capabilities the daemon otherwise drops once
    /// attached (opening binaries through /proc/PID/map_files for unwinding, allocator
    /// uprobes on processes that start later).
    pub fn needs(&self) -> crate::privileges::ProfilerNeeds {
        let heap = !self.heap_pids.is_empty() || !self.heap_comms.is_empty();
        crate::privileges::ProfilerNeeds {
            read_binaries: heap
                || self.cpu_hz > 0
                || self.offcpu_min.is_some()
                || self.fault_every > 0,
            uprobes: heap,
        }
    }
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            cpu_hz: 0,
            offcpu_min: None,
            mem_interval: Some(Duration::from_secs(1)),
            heap_pids: Vec::new(),
            heap_comms: Vec::new(),
            heap_sample_bytes: 512 * 1024,
            stack_bytes: 16 * 1024,
            fault_every: 0,
        }
    }
}

impl ProfileConfig {
    /// Whether the BPF profiler object is needed at all.
    pub fn needs_bpf(&self) -> bool {
        self.cpu_hz > 0
            || self.fault_every > 0
            || self.offcpu_min.is_some()
            || !self.heap_pids.is_empty()
            || !self.heap_comms.is_empty()
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), CaptureError> {
        if self.cpu_hz > 10_000 {
            return Err(CaptureError::Config(format!(
                "--cpu-hz {}: at most 10000 samples per second",
                self.cpu_hz
            )));
        }
        if self.heap_sample_bytes == 0 {
            return Err(CaptureError::Config(
                "--mem-sample-bytes 0: give a mean sampling period in bytes (1: every allocation)"
                    .into(),
            ));
        }
        if self.stack_bytes == 0 || self.stack_bytes % 1024 != 0 || self.stack_bytes > 16384 {
            return Err(CaptureError::Config(format!(
                "stack copy of {} bytes: a multiple of 1024, at most 16384",
                self.stack_bytes
            )));
        }
        for c in &self.heap_comms {
            if c.is_empty() || c.len() > 15 {
                return Err(CaptureError::Config(format!(
                    "--mem-comm {c:?}: a command name of 1 to 15 bytes, as in /proc/PID/comm"
                )));
            }
        }
        Ok(())
    }
}

/// What the profiler hands the writer: definitions first, then the events that use them.
#[derive(Debug, Default)]
pub struct Batch {
    /// New definitions (`Binary`, `UserStack`, `StackDef`), in the order they must be written.
    pub defs: Vec<Event>,
    /// Samples, memory polls, loss markers.
    pub events: Vec<Event>,
}

/// What the profiler did, for the capture's summary.
#[derive(Clone, Debug, Default)]
pub struct ProfileSummary {
    /// Samples by kind.
    pub samples: HashMap<&'static str, u64>,
    /// Processes whose allocator was probed.
    pub heap_processes: Vec<u32>,
    /// Heap attach failures (process and reason).
    pub heap_failures: Vec<String>,
    /// Unwinding counters.
    pub unwind: unwind::UnwindStats,
}

/// The running profiler thread.
pub struct Profiler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ProfileSummary>,
}

impl Profiler {
    /// Starts the profiler thread; returns once its programs are loaded and attached (or
    /// failed to), so that a refusal is the capture's error at start.
    pub fn start(
        cfg: &ProfileConfig,
        self_pid: u32,
        scope: memory::Scope,
        send: impl Fn(Batch) -> bool + Send + 'static,
    ) -> Result<Option<Profiler>, CaptureError> {
        cfg.validate()?;
        if !cfg.needs_bpf() && cfg.mem_interval.is_none() {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), CaptureError>>(1);
        let cfg = cfg.clone();
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("retrace-profiler".into())
            .spawn(move || run(&cfg, self_pid, &scope, &stop2, &ready_tx, &send))
            .map_err(|e| CaptureError::io("profiler thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Some(Profiler { stop, thread })),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(CaptureError::Writer("the profiler thread stopped".into())),
        }
    }

    /// Stops the profiler: detaches, drains its ring, sends the last batch.
    pub fn stop(self) -> ProfileSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Converts records into events; owns the stack tables.
struct Converter {
    stacks: Stacks,
    /// `--cgroup`: only processes in it (their verdicts cached).
    scope: memory::Scope,
    in_scope: HashMap<u32, bool>,
    heap_period: u64,
    events: Vec<Event>,
    samples: HashMap<&'static str, u64>,
    rec: Box<rt_prof>,
    bad: u64,
}

impl Converter {
    fn on_record(&mut self, bytes: &[u8]) {
        let head = std::mem::size_of::<rt_prof>() - self.rec.ustack.len();
        if bytes.len() < head {
            self.bad += 1;
            return;
        }
        let n = bytes.len().min(std::mem::size_of::<rt_prof>());
        // SAFETY: rt_prof is plain old data (integers and byte arrays, generated from
        // profile.h), so any bytes are a valid value; at most size_of::<rt_prof>() bytes are
        // copied into the boxed value.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&mut *self.rec as *mut rt_prof).cast::<u8>(),
                n,
            );
        }
        let r = &*self.rec;
        if self.scope.cgroup.is_some() {
            let scope = &self.scope;
            let ok = *self.in_scope.entry(r.pid).or_insert_with(|| {
                crate::procfs::read_cgroup(r.pid).is_some_and(|c| scope.cgroup_ok(&c))
            });
            if !ok {
                return;
            }
        }
        let ustack_len = (r.ustack_len as usize).min(n - head);
        let user_regs = r.flags & rt_prof_flags::RT_PF_USER_REGS.0 != 0;
        let return_ip = r.flags & rt_prof_flags::RT_PF_RETURN_IP.0 != 0;
        let (ts, pid, tid) = (r.ts, r.pid, r.tid);
        let user_stack = |stacks: &mut Stacks, r: &rt_prof| -> Option<StackId> {
            if !user_regs || r.sp == 0 {
                return None;
            }
            stacks.user_stack(
                ts,
                pid,
                r.ip,
                r.sp,
                r.bp,
                &r.ustack[..ustack_len],
                return_ip,
            )
        };
        let kernel_stack = |stacks: &mut Stacks, r: &rt_prof| -> Option<StackId> {
            let len = usize::try_from(r.kstack_len).unwrap_or(0) / 8;
            let frames: Vec<u64> = r.kstack[..len.min(r.kstack.len())]
                .iter()
                .copied()
                .take_while(|a| *a != 0)
                .collect();
            stacks.kernel_stack(ts, &frames)
        };
        let body = match rt_prof_kind(r.kind) {
            rt_prof_kind::RT_P_CPU => {
                let user_stack = user_stack(&mut self.stacks, r);
                let kernel_stack = kernel_stack(&mut self.stacks, r);
                EventBody::CpuSample(CpuSample {
                    pid,
                    tid,
                    cpu: r.cpu,
                    user_stack,
                    kernel_stack,
                })
            }
            rt_prof_kind::RT_P_ALLOC => {
                // a sample whose stack could not be kept still counts its bytes: stack 0
                let stack = user_stack(&mut self.stacks, r).unwrap_or(0);
                EventBody::HeapAlloc(HeapAlloc {
                    pid,
                    tid,
                    size: r.size,
                    addr: r.addr,
                    period: self.heap_period,
                    stack,
                })
            }
            rt_prof_kind::RT_P_FREE => EventBody::HeapFree(HeapFree {
                pid,
                tid,
                addr: r.addr,
            }),
            rt_prof_kind::RT_P_OFFCPU => {
                let user_stack = user_stack(&mut self.stacks, r);
                EventBody::OffCpu(OffCpu {
                    pid,
                    tid,
                    blocked_ns: r.size,
                    syscall: r.syscall,
                    user_stack,
                    kernel_stack: None,
                })
            }
            rt_prof_kind::RT_P_FAULT => {
                let stack = user_stack(&mut self.stacks, r).unwrap_or(0);
                EventBody::PageFault(PageFault {
                    pid,
                    tid,
                    addr: r.addr,
                    weight: r.size,
                    stack,
                })
            }
            _ => {
                self.bad += 1;
                return;
            }
        };
        *self.samples.entry(body.kind().name()).or_default() += 1;
        self.events.push(Event::new(ts, body));
    }
}

fn event_kind(k: u32) -> Option<EventKind> {
    match rt_prof_kind(k) {
        rt_prof_kind::RT_P_CPU => Some(EventKind::CpuSample),
        rt_prof_kind::RT_P_ALLOC => Some(EventKind::HeapAlloc),
        rt_prof_kind::RT_P_FREE => Some(EventKind::HeapFree),
        rt_prof_kind::RT_P_OFFCPU => Some(EventKind::OffCpu),
        rt_prof_kind::RT_P_FAULT => Some(EventKind::PageFault),
        _ => None,
    }
}

fn run(
    cfg: &ProfileConfig,
    self_pid: u32,
    scope: &memory::Scope,
    stop: &AtomicBool,
    ready: &SyncSender<Result<(), CaptureError>>,
    send: &dyn Fn(Batch) -> bool,
) -> ProfileSummary {
    let mut summary = ProfileSummary::default();
    let mut storage = MaybeUninit::uninit();
    let mut skel: Option<ProfileSkel<'_>> = None;
    let mut links: Vec<Link> = Vec::new();
    if cfg.needs_bpf() {
        match load(cfg, self_pid, scope.pid, &mut storage) {
            Ok((s, l)) => {
                skel = Some(s);
                links = l;
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return summary;
            }
        }
    }
    let converter = Rc::new(RefCell::new(Converter {
        stacks: Stacks::new(),
        scope: scope.clone(),
        in_scope: HashMap::new(),
        heap_period: cfg.heap_sample_bytes,
        events: Vec::new(),
        samples: HashMap::new(),
        rec: Box::default(),
        bad: 0,
    }));
    let ring = match &skel {
        Some(s) => {
            let mut b = RingBufferBuilder::new();
            let c = Rc::clone(&converter);
            let added = b
                .add(&s.maps.rb_prof as &dyn MapCore, move |bytes: &[u8]| {
                    c.borrow_mut().on_record(bytes);
                    0
                })
                .map(|_| ());
            match added.and_then(|()| b.build()) {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = ready.send(Err(CaptureError::bpf("profiler ring buffer", e)));
                    return summary;
                }
            }
        }
        None => None,
    };
    let mut heap = HeapTargets {
        session: use_uprobe_session(),
        ..Default::default()
    };
    if let Some(s) = &skel {
        heap.refresh(cfg, s, &mut summary);
    }
    let _ = ready.send(Ok(()));

    let mut drops: HashMap<(u32, usize), u64> = HashMap::new();
    let mut last_mem = Instant::now() - cfg.mem_interval.unwrap_or_default();
    let mut last_house = Instant::now();
    let mut last_mono = crate::marks::monotonic_ns();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            links.clear();
            heap.links.clear();
        }
        if let Some(r) = &ring {
            if stopping {
                let _ = r.consume();
            } else {
                let _ = r.poll(Duration::from_millis(100));
            }
        } else if !stopping {
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut batch = Batch::default();
        if let Some(iv) = cfg.mem_interval {
            if last_mem.elapsed() >= iv || stopping {
                batch
                    .events
                    .extend(memory::poll(crate::marks::monotonic_ns(), scope));
                last_mem = Instant::now();
            }
        }
        if last_house.elapsed() >= Duration::from_secs(1) || stopping {
            let now = crate::marks::monotonic_ns();
            if let Some(s) = &skel {
                batch
                    .events
                    .extend(poll_drops(s, &mut drops, last_mono, now));
                heap.refresh(cfg, s, &mut summary);
            }
            last_mono = now;
            last_house = Instant::now();
        }
        {
            let mut c = converter.borrow_mut();
            batch.defs = c.stacks.take_defs();
            let mut samples = std::mem::take(&mut c.events);
            samples.append(&mut batch.events);
            batch.events = samples;
        }
        if (!batch.defs.is_empty() || !batch.events.is_empty()) && !send(batch) {
            break;
        }
        if stopping {
            break;
        }
    }
    let c = converter.borrow();
    summary.samples = c.samples.clone();
    summary.unwind = c.stacks.stats;
    summary
}

type Loaded<'o> = (ProfileSkel<'o>, Vec<Link>);

fn load<'o>(
    cfg: &ProfileConfig,
    self_pid: u32,
    filter_pid: Option<u32>,
    storage: &'o mut MaybeUninit<libbpf_rs::OpenObject>,
) -> Result<Loaded<'o>, CaptureError> {
    let mut open = ProfileSkelBuilder::default()
        .open(storage)
        .map_err(|e| CaptureError::bpf("opening the profiler's BPF object", e))?;
    {
        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| CaptureError::Config("profiler BPF object has no .rodata".into()))?;
        ro.heap_period = cfg.heap_sample_bytes;
        ro.offcpu_min_ns = cfg.offcpu_min.map_or(u64::MAX, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
        });
        ro.self_tgid = self_pid;
        ro.filter_tgid = filter_pid.unwrap_or(0);
        ro.ustack_chunks = cfg.stack_bytes / 1024;
        ro.fault_every = cfg.fault_every.max(1);
        ro.faults_of_mem_tgids = !cfg.heap_pids.is_empty() || !cfg.heap_comms.is_empty();
        ro.has_task_pt_regs = retrace_bpf::features::kernel_helpers()
            .is_none_or(|ids| ids.contains(&retrace_bpf::features::TASK_PT_REGS));
    }
    // Programs not used are not loaded.
    let heap = !cfg.heap_pids.is_empty() || !cfg.heap_comms.is_empty();
    let session = heap && use_uprobe_session();
    {
        let p = &mut open.progs;
        p.rt_cpu.set_autoload(cfg.cpu_hz > 0);
        p.rt_fault.set_autoload(cfg.fault_every > 0);
        p.rt_offcpu_switch.set_autoload(cfg.offcpu_min.is_some());
        p.rt_offcpu_exit.set_autoload(cfg.offcpu_min.is_some());
        for prog in [
            &mut p.rt_malloc,
            &mut p.rt_calloc,
            &mut p.rt_realloc,
            &mut p.rt_memalign,
            &mut p.rt_posix_memalign,
            &mut p.rt_alloc_ret,
        ] {
            prog.set_autoload(heap && !session);
        }
        p.rt_alloc_session.set_autoload(session);
        p.rt_free.set_autoload(heap);
    }
    let skel = open
        .load()
        .map_err(|e| CaptureError::bpf("loading the profiler's BPF programs", e))?;
    let mut links = Vec::new();
    if cfg.fault_every > 0 {
        links.push(
            skel.progs
                .rt_fault
                .attach()
                .map_err(|e| CaptureError::bpf("attaching page_fault_user (faults)", e))?,
        );
    }
    if cfg.offcpu_min.is_some() {
        links.push(
            skel.progs
                .rt_offcpu_switch
                .attach()
                .map_err(|e| CaptureError::bpf("attaching sched_switch (off-CPU)", e))?,
        );
        links.push(
            skel.progs
                .rt_offcpu_exit
                .attach()
                .map_err(|e| CaptureError::bpf("attaching sys_exit (off-CPU)", e))?,
        );
    }
    if cfg.cpu_hz > 0 {
        for cpu in online_cpus() {
            const PERF_TYPE_SOFTWARE: u32 = 1;
            const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
            const FREQ: u64 = 1 << 10;
            let mut attr = PerfEventAttr::new(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK);
            attr.words[2] = cfg.cpu_hz; // sample_freq
            attr.words[5] = FREQ; // enabled, frequency mode
            let fd = perf_event_open(&mut attr, -1, cpu as i32).map_err(|e| {
                CaptureError::io(format!("perf_event_open(cpu-clock, cpu {cpu})"), e)
            })?;
            use std::os::fd::{AsRawFd, IntoRawFd};
            let link = skel
                .progs
                .rt_cpu
                .attach_perf_event(fd.as_raw_fd())
                .map_err(|e| {
                    CaptureError::bpf(format!("attaching the CPU sampler on cpu {cpu}"), e)
                })?;
            // the link owns the event from now on: destroying it closes the fd
            let _ = fd.into_raw_fd();
            links.push(link);
        }
    }
    Ok((skel, links))
}

/// Env switch: `RETRACE_NO_UPROBE_SESSION=1` uses entry and return probes even where the
/// kernel has uprobe sessions (to test and measure the fallback).
pub const NO_UPROBE_SESSION_ENV: &str = "RETRACE_NO_UPROBE_SESSION";

fn use_uprobe_session() -> bool {
    std::env::var_os(NO_UPROBE_SESSION_ENV).is_none_or(|v| v != "1")
        && retrace_bpf::features::kernel_has_uprobe_session()
}

/// The online CPUs (`/sys/devices/system/cpu/online`: `0-3,5`), CPU 0 when unreadable.
fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut out = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            out.extend(a..=b.min(a + 4096));
        }
    }
    if out.is_empty() {
        out.push(0);
    }
    out
}

fn poll_drops(
    skel: &ProfileSkel<'_>,
    seen: &mut HashMap<(u32, usize), u64>,
    from: u64,
    to: u64,
) -> Vec<Event> {
    let mut out = Vec::new();
    for kind in 1..rt_prof_kind::RT_P__COUNT.0 {
        let Some(ek) = event_kind(kind) else { continue };
        let Ok(Some(per_cpu)) = skel
            .maps
            .prof_drops
            .lookup_percpu(&kind.to_ne_bytes(), MapFlags::ANY)
        else {
            continue;
        };
        for (cpu, v) in per_cpu.iter().enumerate() {
            let Some(bytes) = v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                continue;
            };
            let now = u64::from_ne_bytes(bytes);
            let s = seen.entry((kind, cpu)).or_default();
            if now > *s {
                out.push(Event::new(
                    to,
                    EventBody::Loss(LossMarker {
                        kind: ek,
                        cpu: cpu as u32,
                        count: now - *s,
                        reason: if ek == EventKind::HeapFree {
                            LossReason::MapFull
                        } else {
                            LossReason::RingFull
                        },
                        from_ns: from,
                        to_ns: to,
                    }),
                ));
                *s = now;
            }
        }
    }
    out
}

/// The processes whose allocator is probed, and their links.
#[derive(Default)]
struct HeapTargets {
    /// Uprobe sessions (one program, unsampled calls cancel their return probe).
    session: bool,
    attached: HashSet<u32>,
    failed: HashSet<u32>,
    links: Vec<Link>,
}

impl HeapTargets {
    /// Attaches to the chosen processes not attached yet (by pid, or by name among the
    /// running processes).
    fn refresh(
        &mut self,
        cfg: &ProfileConfig,
        skel: &ProfileSkel<'_>,
        summary: &mut ProfileSummary,
    ) {
        if cfg.heap_pids.is_empty() && cfg.heap_comms.is_empty() {
            return;
        }
        let mut want: BTreeSet<u32> = cfg.heap_pids.iter().copied().collect();
        if !cfg.heap_comms.is_empty() {
            for pid in crate::procfs::pids() {
                if self.attached.contains(&pid) || self.failed.contains(&pid) {
                    continue;
                }
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if cfg.heap_comms.iter().any(|c| c == comm.trim_end()) {
                    want.insert(pid);
                }
            }
        }
        for pid in want {
            if self.attached.contains(&pid) || self.failed.contains(&pid) {
                continue;
            }
            match attach_allocator(skel, pid, self.session) {
                Ok(mut l) => {
                    self.links.append(&mut l);
                    let _ = skel
                        .maps
                        .mem_tgids
                        .update(&pid.to_ne_bytes(), &[1u8], MapFlags::ANY);
                    self.attached.insert(pid);
                    summary.heap_processes.push(pid);
                }
                Err(e) => {
                    self.failed.insert(pid);
                    summary.heap_failures.push(format!("pid {pid}: {e}"));
                }
            }
        }
    }
}

/// Attaches the allocator probes to every library of `pid` that defines `malloc` and `free`
/// (glibc, and jemalloc or tcmalloc when loaded): entry probes sample, one return probe on
/// each entry point records; every probe goes to the first instruction the kernel emulates
/// before anything it reads changes (see [`elf::probe_offset`]).
fn attach_allocator(skel: &ProfileSkel<'_>, pid: u32, session: bool) -> Result<Vec<Link>, String> {
    let maps = unwind::read_maps(pid).map_err(|e| format!("reading /proc/{pid}/maps: {e}"))?;
    let mut files: Vec<&unwind::Mapping> = maps.iter().filter(|m| m.exec).collect();
    files.sort_by_key(|m| m.file);
    files.dedup_by_key(|m| m.file);
    let mut links = Vec::new();
    for m in files {
        let path: PathBuf = unwind::proc_path(pid, m);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(b) = elf::Binary::parse(&bytes) else {
            continue;
        };
        let (Some(_), Some(free)) = (b.function_offset("malloc"), b.function_offset("free")) else {
            continue;
        };
        let p = &skel.progs;
        let pid_i = pid as i32;
        const ENTRY_POINTS: [(&str, rt_alloc_fn); 6] = [
            ("malloc", rt_alloc_fn::RT_A_MALLOC),
            ("calloc", rt_alloc_fn::RT_A_CALLOC),
            ("realloc", rt_alloc_fn::RT_A_REALLOC),
            ("aligned_alloc", rt_alloc_fn::RT_A_MEMALIGN),
            ("memalign", rt_alloc_fn::RT_A_MEMALIGN),
            ("posix_memalign", rt_alloc_fn::RT_A_POSIX_MEMALIGN),
        ];
        if session {
            // one link: every entry point, the cookie says which
            let mut offsets = Vec::new();
            let mut cookies = Vec::new();
            for (name, f) in ENTRY_POINTS {
                if let Some(off) = b.function_offset(name) {
                    offsets.push(elf::probe_offset(&bytes, off, elf::ALLOC_ARGS) as usize);
                    cookies.push(u64::from(f.0));
                }
            }
            let opts = libbpf_rs::UprobeMultiOpts {
                offsets,
                cookies,
                session: true,
                ..Default::default()
            };
            links.push(
                p.rt_alloc_session
                    .attach_uprobe_multi_with_opts(pid_i, &path, "", opts)
                    .map_err(|e| format!("uprobe session on the allocator of {}: {e}", m.path))?,
            );
        } else {
            for (name, f) in ENTRY_POINTS {
                let Some(off) = b.function_offset(name) else {
                    continue;
                };
                let off = elf::probe_offset(&bytes, off, elf::ALLOC_ARGS);
                let prog = match f {
                    rt_alloc_fn::RT_A_MALLOC => &p.rt_malloc,
                    rt_alloc_fn::RT_A_CALLOC => &p.rt_calloc,
                    rt_alloc_fn::RT_A_REALLOC => &p.rt_realloc,
                    rt_alloc_fn::RT_A_POSIX_MEMALIGN => &p.rt_posix_memalign,
                    _ => &p.rt_memalign,
                };
                links.push(
                    prog.attach_uprobe(false, pid_i, &path, off as usize)
                        .map_err(|e| format!("uprobe {name} in {}: {e}", m.path))?,
                );
                links.push(
                    p.rt_alloc_ret
                        .attach_uprobe(true, pid_i, &path, off as usize)
                        .map_err(|e| format!("uretprobe {name} in {}: {e}", m.path))?,
                );
            }
        }
        let at = elf::probe_offset(&bytes, free, elf::FREE_ARGS);
        links.push(
            p.rt_free
                .attach_uprobe(false, pid_i, &path, at as usize)
                .map_err(|e| format!("uprobe free in {}: {e}", m.path))?,
        );
    }
    if links.is_empty() {
        return Err("no mapped library defines malloc and free".into());
    }
    Ok(links)
}

/// The writer's side: keeps every definition, and writes the ones an event needs before it
/// when the current segment does not have them yet.
#[derive(Default)]
pub struct DefWriter {
    defs: HashMap<DefKey, Event>,
    written: HashSet<DefKey>,
    segment: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum DefKey {
    Binary(u32),
    Stack(StackId),
}

impl DefWriter {
    /// Writes a batch to `sink`: definitions kept, each event preceded by the definitions it
    /// needs that the sink's current segment lacks; loss markers also counted by the sink.
    pub fn write(&mut self, batch: Batch, sink: &mut dyn EventSink) -> Result<(), CaptureError> {
        for d in batch.defs {
            let key = match &d.body {
                EventBody::Binary(b) => DefKey::Binary(b.id),
                EventBody::UserStack(s) => DefKey::Stack(s.id),
                EventBody::StackDef(s) => DefKey::Stack(s.id),
                _ => continue,
            };
            self.defs.entry(key).or_insert(d);
        }
        for ev in batch.events {
            let seg = sink.segment_seq();
            if seg != self.segment {
                self.segment = seg;
                self.written.clear();
            }
            let stacks: [Option<StackId>; 2] = match &ev.body {
                EventBody::CpuSample(c) => [c.user_stack, c.kernel_stack],
                EventBody::HeapAlloc(a) => [Some(a.stack), None],
                EventBody::PageFault(f) => [Some(f.stack), None],
                EventBody::OffCpu(o) => [o.user_stack, o.kernel_stack],
                _ => [None, None],
            };
            for id in stacks.into_iter().flatten() {
                self.ensure(DefKey::Stack(id), ev.ts, sink)?;
            }
            crate::sink::append_own(sink, &ev)?;
        }
        Ok(())
    }

    fn ensure(
        &mut self,
        key: DefKey,
        ts: u64,
        sink: &mut dyn EventSink,
    ) -> Result<(), CaptureError> {
        if self.written.contains(&key) {
            return Ok(());
        }
        let Some(def) = self.defs.get(&key) else {
            return Ok(());
        };
        if let EventBody::UserStack(s) = &def.body {
            let mut bins: Vec<u32> = s
                .frames
                .iter()
                .map(|f| f.binary)
                .filter(|b| *b != retrace_segment::Frame::UNKNOWN_BINARY)
                .collect();
            bins.sort_unstable();
            bins.dedup();
            for b in bins {
                self.ensure(DefKey::Binary(b), ts, sink)?;
            }
        }
        let Some(def) = self.defs.get(&key) else {
            return Ok(());
        };
        let mut def = def.clone();
        // a definition is written at the time of its first use in the segment
        def.ts = ts;
        sink.append(&def)?;
        self.written.insert(key);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sink::{MemorySink, SinkStats};
    use retrace_segment::{BinaryInfo, Frame, UserStack};

    /// A memory sink whose segment number the test moves.
    #[derive(Default)]
    struct Segmented {
        inner: MemorySink,
        seq: u64,
    }

    impl EventSink for Segmented {
        fn append(&mut self, ev: &Event) -> Result<(), CaptureError> {
            self.inner.append(ev)
        }
        fn tick(&mut self) -> Result<(), CaptureError> {
            Ok(())
        }
        fn flush(&mut self) -> Result<(), CaptureError> {
            Ok(())
        }
        fn pin(&mut self, _: u64, _: u64) {}
        fn record_loss(&mut self, kind: EventKind, count: u64) {
            self.inner.record_loss(kind, count);
        }
        fn stats(&self) -> SinkStats {
            self.inner.stats()
        }
        fn segment_seq(&self) -> u64 {
            self.seq
        }
        fn close(self: Box<Self>) -> Result<SinkStats, CaptureError> {
            Ok(self.inner.stats())
        }
    }

    fn alloc(ts: u64, addr: u64) -> Event {
        Event::new(
            ts,
            EventBody::HeapAlloc(HeapAlloc {
                pid: 1,
                tid: 1,
                size: 8,
                addr,
                period: 1,
                stack: 7,
            }),
        )
    }

    fn kinds(s: &Segmented) -> Vec<&'static str> {
        s.inner.events.iter().map(|e| e.kind().name()).collect()
    }

    #[test]
    fn definitions_come_before_their_first_use_in_every_segment() {
        let mut w = DefWriter::default();
        let mut sink = Segmented {
            seq: 1,
            ..Default::default()
        };
        let batch = Batch {
            defs: vec![
                Event::new(
                    0,
                    EventBody::Binary(BinaryInfo {
                        id: 3,
                        build_id: "ab".into(),
                        path: "/x".into(),
                        symbols: vec![],
                    }),
                ),
                Event::new(
                    0,
                    EventBody::UserStack(UserStack {
                        id: 7,
                        pid: 1,
                        frames: vec![Frame {
                            binary: 3,
                            offset: 16,
                        }],
                        truncated: false,
                    }),
                ),
            ],
            events: vec![
                alloc(10, 64),
                Event::new(
                    11,
                    EventBody::HeapFree(HeapFree {
                        pid: 1,
                        tid: 1,
                        addr: 64,
                    }),
                ),
            ],
        };
        w.write(batch, &mut sink).unwrap();
        assert_eq!(kinds(&sink), ["binary", "ustack", "malloc", "free"]);
        assert_eq!(
            sink.inner.events[0].ts, 10,
            "a definition takes the time of its first use"
        );
        // same segment: no repetition
        let again = Batch {
            defs: vec![],
            events: vec![alloc(12, 72)],
        };
        w.write(again, &mut sink).unwrap();
        assert_eq!(kinds(&sink).len(), 5);
        // a new segment: written again
        sink.seq = 2;
        sink.inner.events.clear();
        let third = Batch {
            defs: vec![],
            events: vec![alloc(13, 80)],
        };
        w.write(third, &mut sink).unwrap();
        assert_eq!(kinds(&sink), ["binary", "ustack", "malloc"]);
    }
}
