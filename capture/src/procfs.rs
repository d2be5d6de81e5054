//! What /proc says at capture start: live processes, their TCP sockets and log files.
//!
//! Everything here reads files that may vanish while we read them (processes exit): a
//! missing file is "unknown", never an error.

use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use retrace_segment::{Addr, Endpoint, ProcessInfo};

/// Reads a process's facts from `/proc/PID`, or `None` when it is gone.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let stat = fs::read_to_string(format!("{base}/stat")).ok()?;
    let (comm, ppid) = parse_stat(&stat)?;
    let cmdline = fs::read(format!("{base}/cmdline"))
        .map(|b| split_args(&b))
        .unwrap_or_default();
    let exe = fs::read_link(format!("{base}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = read_cgroup(pid).unwrap_or_default();
    let container_id = container_id(&cgroup);
    Some(ProcessInfo {
        pid,
        ppid,
        comm,
        exe,
        cmdline,
        cgroup,
        container_id,
    })
}

/// `comm` and `ppid` from the text of /proc/PID/stat (the comm may hold spaces and parens).
fn parse_stat(stat: &str) -> Option<(String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// Splits NUL-separated arguments (a trailing NUL is not an empty argument).
pub fn split_args(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|c| *c == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The process's cgroup path: the v2 unified one when set, else the v1 `memory` controller's,
/// else the first non-root one.
pub fn read_cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    Some(pick_cgroup(&text))
}

/// Where a process's memory controller keeps its figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryCgroup {
    /// cgroup v2: `memory.current`, `memory.max`, `memory.events`.
    V2(std::path::PathBuf),
    /// cgroup v1: `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.oom_control`.
    V1(std::path::PathBuf),
}

/// The directory of a process's memory controller: v2 (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid host) when it has the memory files, else v1's
/// `memory` hierarchy.
pub fn memory_cgroup(pid: u32) -> Option<MemoryCgroup> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut unified = None;
    let mut memory = None;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            unified = Some(path);
        } else if ctrls.split(',').any(|c| c == "memory") {
            memory = Some(path);
        }
    }
    let dir = |root: &str, path: &str| {
        std::path::PathBuf::from(format!("{root}{}", path.trim_end_matches('/')))
    };
    let v2 = unified.and_then(|u| {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(|root| dir(root, u))
            .find(|d| d.join("memory.current").exists())
            .map(MemoryCgroup::V2)
    });
    v2.or_else(|| {
        memory
            .map(|m| dir("/sys/fs/cgroup/memory", m))
            .filter(|d| d.join("memory.usage_in_bytes").exists())
            .map(MemoryCgroup::V1)
    })
}

fn pick_cgroup(text: &str) -> String {
    let mut unified = None;
    let mut memory = None;
    let mut other = None;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            unified = Some(path);
        } else if ctrls.split(',').any(|c| c == "memory") {
            memory = Some(path);
        } else if path != "/" && other.is_none() {
            other = Some(path);
        }
    }
    [unified, memory, other]
        .into_iter()
        .flatten()
        .find(|p| *p != "/")
        .or(unified)
        .or(memory)
        .unwrap_or("/")
        .to_string()
}

/// The container id a cgroup path names: a 64-hex-digit component (docker, containerd,
/// cri-o, podman: `docker-<id>.scope`, `cri-containerd-<id>.scope`, `/docker/<id>`...).
pub fn container_id(cgroup: &str) -> Option<String> {
    for comp in cgroup.split('/') {
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        let tail = comp.rsplit(['-', ':']).next().unwrap_or(comp);
        if tail.len() == 64 && tail.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(tail.to_string());
        }
    }
    None
}

/// Pids of live processes (thread-group leaders).
pub fn pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<u32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// A TCP socket from /proc/net/tcp{,6}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSocket {
    /// Local endpoint.
    pub local: Endpoint,
    /// Remote endpoint.
    pub remote: Endpoint,
    /// Kernel TCP state (1 ESTABLISHED, 10 LISTEN...).
    pub state: u8,
    /// Socket inode.
    pub inode: u64,
}

/// Parses /proc/net/tcp or /proc/net/tcp6 text.
pub fn parse_net_tcp(text: &str, v6: bool) -> Vec<NetSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = parse_hex_endpoint(f.get(1)?, v6)?;
            let remote = parse_hex_endpoint(f.get(2)?, v6)?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            Some(NetSocket {
                local,
                remote,
                state,
                inode,
            })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4, the 32-bit word in host order) or 32 hex digits (IPv6, four host
/// order words).
fn parse_hex_endpoint(s: &str, v6: bool) -> Option<Endpoint> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let addr = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Addr::from(std::net::IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        let w = u32::from_str_radix(addr, 16).ok()?;
        Addr::from(Ipv4Addr::from(w.to_ne_bytes()))
    };
    Some(Endpoint { addr, port })
}

/// All TCP sockets of the host's network namespace, by inode.
pub fn tcp_sockets() -> HashMap<u64, NetSocket> {
    let mut m = HashMap::new();
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = fs::read_to_string(path) {
            for s in parse_net_tcp(&text, v6) {
                if s.inode != 0 {
                    m.insert(s.inode, s);
                }
            }
        }
    }
    m
}

/// What an open fd of a process is, when it matters to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdTarget {
    /// A socket, by inode.
    Socket(u64),
    /// A file under /var/log.
    LogFile(String),
}

/// The interesting fds of a process: sockets, and files under /var/log.
pub fn process_fds(pid: u32) -> Vec<(i32, FdTarget)> {
    let dir = format!("/proc/{pid}/fd");
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        if let Some(t) = classify_fd_target(&target) {
            v.push((fd, t));
        }
    }
    v.sort_by_key(|(fd, _)| *fd);
    v
}

fn classify_fd_target(target: &Path) -> Option<FdTarget> {
    let s = target.to_str()?;
    if let Some(inode) = s.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
        return inode.parse().ok().map(FdTarget::Socket);
    }
    if s.starts_with("/var/log/") {
        return Some(FdTarget::LogFile(s.to_string()));
    }
    None
}

/// The path an fd of a process points to, when it is readable.
pub fn fd_path(pid: u32, fd: i32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Kernel release, hostname, boot time (wall ns), CPUs.
pub fn node_facts() -> (String, String, u64, u32) {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let btime = fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    (kernel, hostname, btime.saturating_mul(1_000_000_000), cpus)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let s = "1234 (my (odd) proc) S 77 1234 1234 0 -1 4194560 ...";
        assert_eq!(parse_stat(s), Some(("my (odd) proc".to_string(), 77)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn args() {
        assert_eq!(
            split_args(b"curl\0-s\0http://x/\0"),
            ["curl", "-s", "http://x/"]
        );
        assert!(split_args(b"").is_empty());
    }

    #[test]
    fn cgroups_and_containers() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/01a3\n0::/\n";
        assert_eq!(pick_cgroup(v1), "/process_api/01a3");
        let v2 = "0::/system.slice/nginx.service\n";
        assert_eq!(pick_cgroup(v2), "/system.slice/nginx.service");
        assert_eq!(pick_cgroup("0::/\n"), "/");
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(container_id(&format!("/docker/{id}")), Some(id.clone()));
        assert_eq!(
            container_id(&format!(
                "/kubepods/burstable/pod1/cri-containerd-{id}.scope"
            )),
            Some(id)
        );
        assert_eq!(container_id("/system.slice/nginx.service"), None);
    }

    #[test]
    fn net_tcp_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 109 1 0000000047a1ecaa 100 0 0 10 0\n   1: 020200C0:BB46 507100CB:0050 01 00000000:00000000 03:0000019A 00000000     0        0 555 3 000000005ff43252\n";
        let v = parse_net_tcp(text, false);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].local.to_string(), "127.0.0.1:8080");
        assert_eq!(v[0].state, 10);
        assert_eq!(v[0].inode, 109);
        assert_eq!(v[1].local.to_string(), "192.0.2.2:47942");
        assert_eq!(v[1].remote.to_string(), "203.0.113.80:80");
        let v6 = "h\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 42 1\n";
        let v = parse_net_tcp(v6, true);
        assert_eq!(v[0].local.to_string(), "[::1]:8080");
        assert_eq!(v[0].inode, 42);
    }

    #[test]
    fn fd_targets() {
        assert_eq!(
            classify_fd_target(Path::new("socket:[12345]")),
            Some(FdTarget::Socket(12345))
        );
        assert_eq!(
            classify_fd_target(Path::new("/var/log/nginx/access.log")),
            Some(FdTarget::LogFile("/var/log/nginx/access.log".into()))
        );
        assert_eq!(classify_fd_target(Path::new("/dev/null")), None);
    }

    #[test]
    fn this_process_is_visible() {
        let me = std::process::id();
        let info = process_info(me).unwrap();
        assert_eq!(info.pid, me);
        assert!(!info.comm.is_empty());
        assert!(pids().contains(&me));
    }
}
