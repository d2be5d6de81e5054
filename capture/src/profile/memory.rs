//! Memory growth, always on: each process's resident memory (anon, file, shmem from
//! `/proc/PID/status`) and each of their cgroups' usage, limit and OOM kills (cgroup v2
//! `memory.current`, `memory.max`, `memory.events`), polled a few times a second at most.
//! Polling was chosen over `kmem/rss_stat`, which fires on every RSS counter change (each
//! page-fault batch) in every process: a poll costs the daemon ~20 µs per process and the
//! workload nothing.

use std::collections::BTreeSet;

use retrace_segment::{CgroupMemory, Event, EventBody, MemUsage};

/// Which processes are followed.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this process.
    pub pid: Option<u32>,
    /// Only processes whose cgroup path starts with this.
    pub cgroup: Option<String>,
    /// Never this process (the daemon).
    pub self_pid: u32,
}

/// One poll: a `MemUsage` per process with resident anonymous or file memory, then a
/// `CgroupMemory` per cgroup they are in.
pub fn poll(ts: u64, scope: &Scope) -> Vec<Event> {
    let mut out = Vec::new();
    let mut cgroups = BTreeSet::new();
    let pids: Vec<u32> = match scope.pid {
        Some(p) => vec![p],
        None => std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    for pid in pids {
        if pid == scope.self_pid {
            continue;
        }
        let Some(cg) = cgroup_of(pid) else { continue };
        if let Some(want) = &scope.cgroup {
            if !cg.starts_with(want.as_str()) {
                continue;
            }
        }
        let Some(m) = rss_of(pid) else { continue };
        out.push(Event::new(ts, EventBody::MemUsage(m)));
        cgroups.insert(cg);
    }
    for cg in cgroups {
        if let Some(c) = cgroup_memory(&cg) {
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

/// The cgroup v2 path of a process (`/` for the root).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// A cgroup's memory figures from the v2 hierarchy (`None` when it has no memory controller
/// files, e.g. the root cgroup).
pub fn cgroup_memory(cgroup: &str) -> Option<CgroupMemory> {
    let dir = format!("/sys/fs/cgroup{}", cgroup.trim_end_matches('/'));
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
    let usage = read("memory.current")?.trim().parse().ok()?;
    let limit = read("memory.max").and_then(|m| m.trim().parse::<u64>().ok());
    let oom_kills = read("memory.events")
        .and_then(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Some(CgroupMemory {
        cgroup: cgroup.to_string(),
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
