//! Keeps a scenario's processes apart from the rest of the machine.
//!
//! Before it starts anything, the runner moves itself into a cgroup of its own, at the root
//! of the unified (v2) hierarchy. Every process it starts (services, load generator, faults)
//! inherits that cgroup, and the capture records only it (`retrace capture --cgroup NAME`).
//! Without this, whatever else runs on the machine during the scenario (a browser, a package
//! manager, another test suite) would show up in the service map and fail `only_services`.
//! At the end the runner moves back where it was and removes the cgroup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Prefix and suffix of the cgroups this module creates (`retrace-scenario-PID-run`). The
/// suffix keeps one name from being part of another: `retrace capture --cgroup` keeps the
/// processes whose cgroup path contains the name, and without it run 123's name would also
/// select run 1234's processes.
const PREFIX: &str = "retrace-scenario-";
const SUFFIX: &str = "-run";

/// The runner's own cgroup, left (and removed) when dropped.
#[derive(Debug)]
pub struct Isolation {
    dir: PathBuf,
    name: String,
    home: PathBuf,
}

impl Isolation {
    /// Moves this process into a new cgroup. An error says why it could not (the caller then
    /// runs without isolation).
    pub fn enter() -> anyhow::Result<Isolation> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .context("reading /proc/self/mountinfo")?;
        let mount = unified_mount(&mountinfo).context("no cgroup2 (unified) hierarchy mounted")?;
        let own =
            std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let home_rel = unified_path(&own).context("this process has no cgroup v2 path")?;
        remove_stale(&mount);
        let name = cgroup_name(std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Err(e) = std::fs::write(dir.join("cgroup.procs"), "0") {
            let _ = std::fs::remove_dir(&dir);
            return Err(e).with_context(|| format!("moving into {}", dir.display()));
        }
        Ok(Isolation {
            dir,
            name,
            home: mount.join(home_rel.trim_start_matches('/')),
        })
    }

    /// The cgroup's name, as `retrace capture --cgroup` matches it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.home.join("cgroup.procs"), "0") {
            eprintln!(
                "retrace scenario: could not move back to {}: {e}",
                self.home.display()
            );
        }
        // Processes that just exited may still be leaving the cgroup.
        let start = Instant::now();
        while let Err(e) = std::fs::remove_dir(&self.dir) {
            if start.elapsed() > Duration::from_secs(3) {
                eprintln!(
                    "retrace scenario: could not remove {}: {e}",
                    self.dir.display()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The name of the cgroup of the run with this pid.
fn cgroup_name(pid: u32) -> String {
    format!("{PREFIX}{pid}{SUFFIX}")
}

/// Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo.
fn unified_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's path in the unified hierarchy (the `0::` line of /proc/self/cgroup).
fn unified_path(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Removes the cgroups of earlier runs that were killed before they could: an empty one is
/// removed, one still holding processes is left alone (rmdir refuses).
fn remove_stale(mount: &Path) {
    let Ok(entries) = std::fs::read_dir(mount) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(SUFFIX))
        else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_mount_is_found_in_hybrid_and_pure_layouts() {
        let hybrid = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory";
        assert_eq!(
            unified_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(unified_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            unified_mount("37 35 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"),
            None
        );
    }

    /// The capture selects processes whose cgroup path contains the name: no run's name may
    /// be part of another's.
    #[test]
    fn no_run_selects_another_runs_processes() {
        for (a, b) in [(123, 1234), (1, 12), (12, 112), (7, 70)] {
            let path_b = format!("/{}", cgroup_name(b));
            assert!(!path_b.contains(&cgroup_name(a)), "{a} selects {path_b}");
        }
        assert!(format!("/{}", cgroup_name(123)).contains(&cgroup_name(123)));
    }

    #[test]
    fn the_unified_path_is_the_zero_line() {
        let text = "4:memory:/process_api/9f85\n1:cpu:/\n0::/user.slice/session-2.scope\n";
        assert_eq!(
            unified_path(text).as_deref(),
            Some("/user.slice/session-2.scope")
        );
        assert_eq!(unified_path("4:memory:/x\n"), None);
    }
}
