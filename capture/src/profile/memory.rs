//! Memory growth, always on: each process's resident memory (anon, file, shmem from
//! `/proc/PID/status`) and each of their cgroups' usage, limit and OOM kills (cgroup v2
//! `memory.current`, `memory.max`, `memory.events`; v1's `memory.usage_in_bytes`,
//! `memory.limit_in_bytes`, `memory.oom_control` on hosts without the v2 memory controller),
//! polled a few times a second at most. Polling was chosen over `kmem/rss_stat`, which fires on
//! every RSS counter change (each page-fault batch) in every process: a poll costs the daemon
//! ~20 µs per process and the workload nothing. cgroups are named as exec events name them
//! (`procfs::read_cgroup`), so the analysis ties them to their processes; a cgroup's memory
//! directory is looked up once per poll.

use std::collections::BTreeMap;

use retrace_segment::{CgroupMemory, Event, EventBody, MemUsage};

use crate::procfs::{self, MemoryCgroup};

/// Which processes are followed.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this process.
    pub pid: Option<u32>,
    /// Only processes whose cgroup path contains this (as `--cgroup` means everywhere).
    pub cgroup: Option<String>,
    /// Never this process (the daemon).
    pub self_pid: u32,
}

impl Scope {
    /// Whether a process of this cgroup is followed.
    pub fn cgroup_ok(&self, cgroup: &str) -> bool {
        self.cgroup
            .as_ref()
            .is_none_or(|want| cgroup.contains(want.as_str()))
    }
}

/// One poll: a `MemUsage` per process with resident anonymous or file memory, then a
/// `CgroupMemory` per cgroup they are in.
pub fn poll(ts: u64, scope: &Scope) -> Vec<Event> {
    let mut out = Vec::new();
    let mut cgroups: BTreeMap<String, Option<MemoryCgroup>> = BTreeMap::new();
    let pids = match scope.pid {
        Some(p) => vec![p],
        None => procfs::pids(),
    };
    for pid in pids {
        if pid == scope.self_pid {
            continue;
        }
        let Some(cg) = procfs::read_cgroup(pid) else {
            continue;
        };
        if !scope.cgroup_ok(&cg) {
            continue;
        }
        let Some(m) = rss_of(pid) else { continue };
        out.push(Event::new(ts, EventBody::MemUsage(m)));
        // the memory controller's directory: found once per cgroup and poll
        cgroups
            .entry(cg)
            .or_insert_with(|| procfs::memory_cgroup(pid));
    }
    for (cg, memory) in cgroups {
        if let Some(c) = memory.and_then(|m| cgroup_memory(cg, &m)) {
            out.push(Event::new(ts, EventBody::CgroupMemory(c)));
        }
    }
    out
}

/// The resident memory of a user process (`None` for kernel threads and vanished processes).
pub fn rss_of(pid: u32) -> Option<MemUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(pid, &text)
}

fn parse_status(pid: u32, text: &str) -> Option<MemUsage> {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let v = line[key.len()..].trim().trim_end_matches("kB").trim();
        v.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some(MemUsage {
        pid,
        rss_anon: kib("RssAnon:")?,
        rss_file: kib("RssFile:").unwrap_or(0),
        rss_shmem: kib("RssShmem:").unwrap_or(0),
    })
}

/// A cgroup's memory figures, from whichever hierarchy holds them.
pub fn cgroup_memory(cgroup: String, dir: &MemoryCgroup) -> Option<CgroupMemory> {
    let read = |d: &std::path::Path, f: &str| std::fs::read_to_string(d.join(f)).ok();
    let counter = |text: Option<String>, key: &str| {
        text.and_then(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
    };
    let (usage, limit, oom_kills) = match dir {
        MemoryCgroup::V2(d) => (
            read(d, "memory.current")?.trim().parse().ok()?,
            read(d, "memory.max").and_then(|m| m.trim().parse::<u64>().ok()),
            counter(read(d, "memory.events"), "oom_kill "),
        ),
        MemoryCgroup::V1(d) => (
            read(d, "memory.usage_in_bytes")?.trim().parse().ok()?,
            // v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages)
            read(d, "memory.limit_in_bytes")
                .and_then(|m| m.trim().parse::<u64>().ok())
                .filter(|l| *l < 1 << 62),
            counter(read(d, "memory.oom_control"), "oom_kill "),
        ),
    };
    Some(CgroupMemory {
        cgroup,
        usage,
        limit,
        oom_kills,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_bytes_and_kernel_threads_none() {
        let s = "Name:\tx\nVmRSS:\t  3000 kB\nRssAnon:\t    2048 kB\nRssFile:\t     900 kB\nRssShmem:\t      52 kB\n";
        let m = parse_status(7, s).unwrap();
        assert_eq!(
            (m.rss_anon, m.rss_file, m.rss_shmem),
            (2048 * 1024, 900 * 1024, 52 * 1024)
        );
        assert!(parse_status(2, "Name:\tkthreadd\nThreads:\t1\n").is_none());
    }

    #[test]
    fn this_process_cgroup_has_its_memory_figures() {
        let cg = procfs::read_cgroup(std::process::id()).unwrap();
        let dir = procfs::memory_cgroup(std::process::id());
        // every host of ours has a memory controller, v1 or v2
        let c = cgroup_memory(cg, &dir.unwrap()).unwrap();
        assert!(c.usage > 0, "{c:?}");
    }

    #[test]
    fn this_process_is_measured_against_its_own_status() {
        let me = std::process::id();
        let before = rss_of(me).unwrap();
        // touch 64 MiB of fresh anonymous memory
        let v = vec![1u8; 64 << 20];
        let after = rss_of(me).unwrap();
        assert!(v.iter().step_by(4096).all(|b| *b == 1));
        assert!(
            after.rss_anon >= before.rss_anon + (60 << 20),
            "{before:?} -> {after:?}"
        );
    }
}
