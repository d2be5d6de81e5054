//! Synthetic profile events with a known truth, for tests and the benchmark: a service whose
//! `leak_buffer` leaks 64 KiB every 100 ms, whose `churn` allocates and frees 200 blocks of
//! 1 KiB per 100 ms, whose `cache_put` fills a cache that stops growing at 40% of the run;
//! CPU samples with known shares; blocking reads off CPU; its RSS and cgroup; and a second
//! process whose RSS grows outside its (stable) tracked heap.
//!
//! Allocations are sampled as the capture does: Poisson by bytes with mean `period` (a
//! countdown of exponentially distributed bytes, as tcmalloc does), frees reported only for
//! sampled addresses, stacks and binaries defined before their first use.

use retrace_segment::{
    BinaryInfo, CgroupMemory, CpuSample, Event, EventBody, Frame, HeapAlloc, HeapFree, MemUsage,
    OffCpu, OomKill, PageFault, ProcExec, ProcExit, StackDef, Symbol, UserStack,
};

use crate::synth::{synth_node, Rng, Sink, Synth};

/// Options of [`leaky_service`].
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// Length of the run, seconds.
    pub seconds: u64,
    /// Mean sampling period of the heap, bytes (1: every allocation).
    pub period: u64,
    /// CPU sampling frequency per CPU, Hz.
    pub cpu_hz: u64,
    /// Seed of the pseudo-random numbers.
    pub seed: u64,
    /// The leaky process is OOM-killed this many seconds in (and stops).
    pub oom_kill_at_s: Option<u64>,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        Self {
            seconds: 60,
            period: 64 * 1024,
            cpu_hz: 99,
            seed: 42,
            oom_kill_at_s: None,
        }
    }
}

/// The leaking process.
pub const LEAKY_PID: u32 = 300;
/// The process whose RSS grows outside its heap.
pub const NATIVE_PID: u32 = 301;
/// Bytes `leak_buffer` leaks per second.
pub const LEAK_BYTES_PER_S: f64 = 64.0 * 1024.0 * 10.0;
/// Bytes per second by which `native`'s anonymous RSS grows.
pub const NATIVE_RSS_BYTES_PER_S: f64 = 1024.0 * 1024.0;
/// The CPU truth of the leaky process: (function, total share, self share), in percent.
pub const CPU_TRUTH: &[(&str, f64, f64)] = &[
    ("main", 100.0, 0.0),
    ("compute_hot", 60.0, 60.0),
    ("compute_warm", 25.0, 0.0),
    ("memcpy", 25.0, 25.0),
    ("flush_log", 15.0, 0.0),
    ("copy_user_generic", 15.0, 15.0),
];
/// The off-CPU truth: `wait_for_input` blocks 80 ms and `sleep_a_bit` 10 ms every 100 ms.
pub const OFFCPU_TRUTH: &[(&str, f64)] = &[("wait_for_input", 80.0 / 90.0 * 100.0)];
/// The cgroup of both processes.
pub const CGROUP: &str = "/system.slice/leaky.service";
/// Its limit.
pub const CGROUP_LIMIT: u64 = 1 << 30;

const APP: u32 = 1;
const LIBC: u32 = 2;

/// The functions of the program and of libc: (binary, offset, size, name).
const FUNCS: &[(u32, u64, u64, &str)] = &[
    (APP, 0x1000, 0x80, "main"),
    (APP, 0x1100, 0x40, "leak_buffer"),
    (APP, 0x1200, 0x40, "churn"),
    (APP, 0x1300, 0x40, "cache_put"),
    (APP, 0x1400, 0x100, "compute_hot"),
    (APP, 0x1500, 0x40, "compute_warm"),
    (APP, 0x1600, 0x40, "flush_log"),
    (APP, 0x1700, 0x40, "wait_for_input"),
    (APP, 0x1800, 0, "sleep_a_bit"),
    (LIBC, 0x2_9000, 0x100, "__libc_start_main"),
    (LIBC, 0xa_0000, 0x200, "malloc"),
    (LIBC, 0xa_1000, 0x100, "free"),
    (LIBC, 0xb_0000, 0x300, "memcpy"),
    (LIBC, 0xc_0000, 0x50, "write"),
    (LIBC, 0xc_1000, 0x50, "read"),
    (LIBC, 0xc_2000, 0x50, "nanosleep"),
    (APP, 0x1900, 0x40, "grow_arena"),
];

fn frame(name: &str) -> Frame {
    let (binary, offset) = FUNCS
        .iter()
        .find(|f| f.3 == name)
        .map_or((Frame::UNKNOWN_BINARY, 0), |f| (f.0, f.1 + 0x10));
    Frame { binary, offset }
}

/// User stacks (innermost first, without `__libc_start_main`), by id.
const STACKS: &[(u64, &[&str])] = &[
    (1, &["malloc", "leak_buffer", "main"]),
    (2, &["malloc", "churn", "main"]),
    (3, &["malloc", "cache_put", "main"]),
    (4, &["compute_hot", "main"]),
    (5, &["memcpy", "compute_warm", "main"]),
    (6, &["write", "flush_log", "main"]),
    (7, &["read", "wait_for_input", "main"]),
    (8, &["nanosleep", "sleep_a_bit", "main"]),
    (9, &["grow_arena", "main"]),
];
/// Kernel stacks (innermost first), by id.
const KSTACKS: &[(u64, &[&str])] = &[
    (
        100,
        &[
            "copy_user_generic",
            "vfs_write",
            "ksys_write",
            "do_syscall_64",
        ],
    ),
    (101, &["schedule", "pipe_read", "vfs_read", "do_syscall_64"]),
    (
        102,
        &[
            "schedule",
            "do_nanosleep",
            "hrtimer_nanosleep",
            "do_syscall_64",
        ],
    ),
];

struct Sampler {
    rng: Rng,
    period: u64,
    until: f64,
}

impl Sampler {
    fn new(seed: u64, period: u64) -> Self {
        let mut s = Self {
            rng: Rng::new(seed),
            period,
            until: 0.0,
        };
        s.until = s.draw();
        s
    }

    fn draw(&mut self) -> f64 {
        if self.period <= 1 {
            return 0.0;
        }
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        -(1.0 - u).ln() * self.period as f64
    }

    /// Whether an allocation of `size` bytes is sampled.
    fn sample(&mut self, size: u64) -> bool {
        if self.period <= 1 {
            return true;
        }
        self.until -= size as f64;
        if self.until < 0.0 {
            self.until = self.draw();
            true
        } else {
            false
        }
    }
}

struct Proc {
    pid: u32,
    next_addr: u64,
    /// Sampled live addresses of the cache, oldest first, with all cache blocks' addresses.
    cache: std::collections::VecDeque<(u64, bool)>,
    heap_true: f64,
}

/// Writes the run into `sink`, in time order, and returns it.
pub fn leaky_service<S: Sink>(sink: S, opts: &ProfileOptions) -> S {
    let mut s = Synth::new(sink);
    let t0 = 1_000_000_000_000u64;
    s.push(Event::new(t0, EventBody::Node(synth_node("node-a"))));
    for (i, (pid, exe)) in [
        (LEAKY_PID, "/usr/local/bin/leaky"),
        (NATIVE_PID, "/usr/local/bin/native"),
    ]
    .into_iter()
    .enumerate()
    {
        let comm = exe.rsplit('/').next().unwrap_or(exe);
        s.push(Event::new(
            t0 + 1_000 * (i as u64 + 1),
            EventBody::ProcExec(ProcExec {
                pid,
                ppid: 1,
                comm: comm.into(),
                exe: exe.into(),
                cmdline: vec![comm.into()],
                cgroup: CGROUP.into(),
                container_id: None,
            }),
        ));
    }
    // Definitions first, as a segment holds them.
    for (id, path, build_id) in [
        (APP, "/usr/local/bin/leaky", "aa11"),
        (LIBC, "/usr/lib/x86_64-linux-gnu/libc.so.6", "bb22"),
    ] {
        let mut symbols: Vec<Symbol> = FUNCS
            .iter()
            .filter(|f| f.0 == id)
            .map(|f| Symbol {
                offset: f.1,
                size: f.2,
                name: f.3.to_string(),
            })
            .collect();
        symbols.sort_by_key(|s| s.offset);
        s.push(Event::new(
            t0 + 3_000,
            EventBody::Binary(BinaryInfo {
                id,
                build_id: build_id.into(),
                path: path.into(),
                symbols,
            }),
        ));
    }
    for pid in [LEAKY_PID, NATIVE_PID] {
        for (id, names) in STACKS {
            let mut frames: Vec<Frame> = names.iter().map(|n| frame(n)).collect();
            frames.push(frame("__libc_start_main"));
            s.push(Event::new(
                t0 + 4_000,
                EventBody::UserStack(UserStack {
                    id: id + u64::from(pid) * 1000,
                    pid,
                    frames,
                    truncated: false,
                }),
            ));
        }
    }
    for (id, names) in KSTACKS {
        s.push(Event::new(
            t0 + 5_000,
            EventBody::StackDef(StackDef {
                id: *id,
                pid: None,
                frames: (0..names.len() as u64)
                    .map(|i| 0xffff_ffff_8100_0000 + id * 0x1000 + i * 0x10)
                    .collect(),
                symbols: names.iter().map(|n| n.to_string()).collect(),
            }),
        ));
    }
    let stack = |pid: u32, id: u64| id + u64::from(pid) * 1000;

    let mut sampler = Sampler::new(opts.seed, opts.period);
    let mut rng = Rng::new(opts.seed ^ 0x5eed);
    let mut procs = [LEAKY_PID, NATIVE_PID].map(|pid| Proc {
        pid,
        next_addr: 0x5555_0000_0000 + u64::from(pid) * 0x1_0000_0000,
        cache: Default::default(),
        heap_true: 0.0,
    });
    let start = t0 + 1_000_000_000;
    let ticks = opts.seconds * 10;
    let cache_cap_blocks = (ticks * 4 / 10) as usize;
    let cpu_step = 1_000_000_000 / opts.cpu_hz.max(1);
    let mut next_cpu = [start, start + cpu_step / 2];
    for tick in 0..ticks {
        let tt = start + tick * 100_000_000;
        if opts.oom_kill_at_s.is_some_and(|s| tick == s * 10) {
            s.push(Event::new(
                tt,
                EventBody::OomKill(OomKill {
                    pid: LEAKY_PID,
                    comm: "leaky".into(),
                }),
            ));
            s.push(Event::new(
                tt + 1_000,
                EventBody::ProcExit(ProcExit {
                    pid: LEAKY_PID,
                    comm: "leaky".into(),
                    exit_code: 0,
                    signal: 9,
                    oom_killed: true,
                }),
            ));
            break;
        }
        for p in procs.iter_mut() {
            let mut alloc = |s: &mut Synth<S>, ts: u64, size: u64, id: u64, p: &mut Proc| {
                let addr = p.next_addr;
                p.next_addr += size.next_multiple_of(16) + 16;
                p.heap_true += size as f64;
                let sampled = sampler.sample(size);
                if sampled {
                    s.push(Event::new(
                        ts,
                        EventBody::HeapAlloc(HeapAlloc {
                            pid: p.pid,
                            tid: p.pid,
                            size,
                            addr,
                            period: opts.period,
                            stack: stack(p.pid, id),
                        }),
                    ));
                }
                (addr, sampled)
            };
            let free = |s: &mut Synth<S>, ts: u64, addr: u64, sampled: bool, pid: u32| {
                if sampled {
                    s.push(Event::new(
                        ts,
                        EventBody::HeapFree(HeapFree {
                            pid,
                            tid: pid,
                            addr,
                        }),
                    ));
                }
            };
            if p.pid == LEAKY_PID {
                alloc(&mut s, tt + 1_000, 64 * 1024, 1, p);
                // The cache: 16 KiB a tick, at most `cache_cap_blocks` blocks (evicting the
                // oldest).
                let (addr, sampled) = alloc(&mut s, tt + 2_000, 16 * 1024, 3, p);
                p.cache.push_back((addr, sampled));
                if p.cache.len() > cache_cap_blocks {
                    if let Some((a, smp)) = p.cache.pop_front() {
                        free(&mut s, tt + 2_500, a, smp, p.pid);
                        p.heap_true -= 16.0 * 1024.0;
                    }
                }
            }
            // Churn: 200 blocks of 1 KiB allocated and freed within 5 ms.
            for k in 0..200u64 {
                let ts = tt + 10_000 + k * 20_000;
                let (addr, sampled) = alloc(&mut s, ts, 1024, 2, p);
                free(&mut s, ts + 5_000_000, addr, sampled, p.pid);
                p.heap_true -= 1024.0;
            }
        }
        // Off CPU: wait_for_input 80 ms, sleep_a_bit 10 ms, reported at their end.
        for (at, ns, user, kernel, sys) in [
            (tt + 90_000_000, 80_000_000u64, 7, 101, 0),
            (tt + 99_000_000, 10_000_000, 8, 102, 35),
        ] {
            s.push(Event::new(
                at,
                EventBody::OffCpu(OffCpu {
                    pid: LEAKY_PID,
                    tid: LEAKY_PID,
                    blocked_ns: ns,
                    syscall: sys,
                    user_stack: Some(stack(LEAKY_PID, user)),
                    kernel_stack: Some(kernel),
                }),
            ));
        }
        // CPU samples on two CPUs: 60% compute_hot, 25% memcpy in compute_warm, 15% in the
        // kernel under flush_log's write.
        let tick_end = tt + 100_000_000;
        for (cpu, next) in next_cpu.iter_mut().enumerate() {
            while *next < tick_end {
                let r = rng.below(100);
                let (user, kernel) = match r {
                    0..60 => (4, None),
                    60..85 => (5, None),
                    _ => (6, Some(100)),
                };
                s.push(Event::new(
                    *next,
                    EventBody::CpuSample(CpuSample {
                        pid: LEAKY_PID,
                        tid: LEAKY_PID,
                        cpu: cpu as u32,
                        user_stack: Some(stack(LEAKY_PID, user)),
                        kernel_stack: kernel,
                    }),
                ));
                *next += cpu_step;
            }
        }
        // `native` touches 1 MiB of new pages a second in grow_arena: one fault in 64 sampled.
        let per_s = NATIVE_RSS_BYTES_PER_S as u64 / 4096 / 64;
        for k in (0..per_s).filter(|_| tick % 10 == 9) {
            s.push(Event::new(
                tt + 50_000_000 + k * 1_000,
                EventBody::PageFault(PageFault {
                    pid: NATIVE_PID,
                    tid: NATIVE_PID,
                    addr: 0x7f00_0000_0000 + (tick * 100 + k) * 64 * 4096,
                    weight: 64,
                    stack: stack(NATIVE_PID, 9),
                }),
            ));
        }
        // Memory every 500 ms: RSS follows the true heap (leaky) or grows apart (native).
        if tick % 5 == 4 {
            let secs = (tick + 1) as f64 / 10.0;
            let mut usage = 0u64;
            for p in &procs {
                let anon = if p.pid == LEAKY_PID {
                    4.0 * 1024.0 * 1024.0 + p.heap_true
                } else {
                    4.0 * 1024.0 * 1024.0 + NATIVE_RSS_BYTES_PER_S * secs
                } as u64;
                usage += anon + (2 << 20);
                s.push(Event::new(
                    tick_end,
                    EventBody::MemUsage(MemUsage {
                        pid: p.pid,
                        rss_anon: anon,
                        rss_file: 2 << 20,
                        rss_shmem: 0,
                    }),
                ));
            }
            s.push(Event::new(
                tick_end,
                EventBody::CgroupMemory(CgroupMemory {
                    cgroup: CGROUP.into(),
                    usage,
                    limit: Some(CGROUP_LIMIT),
                    oom_kills: 0,
                }),
            ));
        }
        s.flush_before(tt);
    }
    s.finish()
}

/// Writes [`leaky_service`] as a capture directory at `dir` (node `node-a`); returns the
/// number of events written.
pub fn write_profile_capture(
    dir: &std::path::Path,
    opts: &ProfileOptions,
) -> Result<u64, retrace_segment::SegmentError> {
    let copts = retrace_segment::CaptureOptions {
        dir: dir.to_path_buf(),
        node: synth_node("node-a"),
        streams: vec!["proc".into(), "cpu".into(), "offcpu".into(), "mem".into()],
        ..Default::default()
    };
    let writer = retrace_segment::CaptureWriter::create(copts, Default::default())?;
    leaky_service(crate::synth::CaptureSink::new(writer), opts).close()
}
