//! Cleanup guards: whatever happens (error, Ctrl-C, panic), a scenario run leaves no process
//! running and no iptables rule behind.
//!
//! - Every process is started in its own process group, with a parent-death signal, and is
//!   owned by a [`Proc`] whose `Drop` stops the whole group (its stop signal, then SIGKILL).
//! - The runner is a child subreaper: anything that escapes its process group is re-parented
//!   to the runner, and [`sweep_children`] kills and reaps it at the end.
//! - Every iptables rule is owned by a [`DropRule`] whose `Drop` deletes it; rules carry a
//!   comment naming the runner's pid, so a later run deletes rules a killed run left.
//! - SIGINT, SIGTERM and SIGHUP only raise a flag ([`install_signal_flag`]): the runner's
//!   loops poll it and unwind normally, running every `Drop`.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Raised by SIGINT, SIGTERM or SIGHUP.
#[derive(Clone, Debug)]
pub struct AbortFlag(Arc<AtomicBool>);

impl AbortFlag {
    /// A flag no signal raises (tests).
    pub fn new() -> Self {
        AbortFlag(Arc::new(AtomicBool::new(false)))
    }

    /// Whether a signal arrived.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Raises it.
    #[cfg(test)]
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst)
    }

    /// Fails when raised.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.raised() {
            anyhow::bail!("interrupted: stopping everything");
        }
        Ok(())
    }

    /// Sleeps `d`, waking early (with an error) when raised.
    pub fn sleep(&self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }
}

impl Default for AbortFlag {
    fn default() -> Self {
        Self::new()
    }
}

/// Routes SIGINT, SIGTERM and SIGHUP to a flag instead of killing the runner.
pub fn install_signal_flag() -> anyhow::Result<AbortFlag> {
    let flag = AbortFlag::new();
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&flag.0))
            .with_context(|| format!("installing a handler for signal {sig}"))?;
    }
    Ok(flag)
}

/// Makes this process a child subreaper (orphaned descendants come back to it).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no
    // memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether any process of group `pgid` exists (zombies included).
pub fn group_alive(pgid: i32) -> bool {
    match kill(-pgid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() != Some(libc::ESRCH),
    }
}

/// Reaps whatever of group `pgid` has exited and is our child; returns the exit status of
/// `leader` when it was among them.
fn reap_group(pgid: i32, leader: i32) -> Option<i32> {
    let mut leader_status = None;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-pgid, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        if pid == leader {
            leader_status = Some(status);
        }
    }
    leader_status
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// exit(code).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Ended {
    fn from_wait(status: i32) -> Ended {
        if libc::WIFEXITED(status) {
            Ended::Code(libc::WEXITSTATUS(status))
        } else {
            Ended::Signal(libc::WTERMSIG(status))
        }
    }

    /// Exit code 0.
    pub fn success(self) -> bool {
        self == Ended::Code(0)
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Code(c) => write!(f, "exit code {c}"),
            Ended::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A process group we started, stopped (group-wide) when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Name, for messages.
    pub name: String,
    pid: i32,
    stop_signal: i32,
    ended: Option<Ended>,
    group_gone: bool,
}

impl Proc {
    /// Spawns `cmd` as the leader of a new process group. The child gets `death_signal` when
    /// the runner dies (even by SIGKILL).
    pub fn spawn(
        name: &str,
        cmd: &mut Command,
        stop_signal: i32,
        death_signal: i32,
    ) -> anyhow::Result<Proc> {
        cmd.process_group(0);
        // SAFETY: the closure runs between fork and exec and only calls prctl and getppid,
        // which are async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    death_signal as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The runner may have died between fork and prctl.
                if libc::getppid() == 1 {
                    return Err(io::Error::other("parent died"));
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        // The std handle is dropped without waiting: this guard reaps the group itself.
        drop(child);
        Ok(Proc {
            name: name.to_string(),
            pid,
            stop_signal,
            ended: None,
            group_gone: false,
        })
    }

    /// Process id (= process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How the leader ended, if it did.
    pub fn try_wait(&mut self) -> Option<Ended> {
        if self.ended.is_none() {
            if let Some(st) = reap_group(self.pid, self.pid) {
                self.ended = Some(Ended::from_wait(st));
            }
        }
        self.ended
    }

    /// Sends a signal to the whole group.
    pub fn signal(&self, sig: i32) {
        if !self.group_gone {
            let _ = kill(-self.pid, sig);
        }
    }

    /// Stops the group: the stop signal, up to `grace` to exit, then SIGKILL. Returns how
    /// the leader ended.
    pub fn stop(&mut self, grace: Duration) -> Option<Ended> {
        self.stop_with(self.stop_signal, grace)
    }

    /// Like [`Proc::stop`] with another first signal.
    pub fn stop_with(&mut self, sig: i32, grace: Duration) -> Option<Ended> {
        if self.group_gone {
            return self.ended;
        }
        self.signal(sig);
        let start = Instant::now();
        let mut killed = false;
        loop {
            self.try_wait();
            // Reap re-parented members too, so the group can vanish.
            reap_group(self.pid, self.pid);
            if !group_alive(self.pid) {
                self.group_gone = true;
                return self.ended;
            }
            if !killed && start.elapsed() >= grace {
                self.signal(libc::SIGKILL);
                killed = true;
            }
            if start.elapsed() >= grace + Duration::from_secs(10) {
                // A member in uninterruptible sleep, or not our child: give up waiting.
                eprintln!(
                    "retrace scenario: process group {} ({}) still exists after SIGKILL",
                    self.pid, self.name
                );
                return self.ended;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the leader to exit on its own, up to `timeout`.
    #[cfg(test)]
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Ended> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(e) = self.try_wait() {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Kills and reaps every child of this process that no guard owns (processes that left
/// their group and were re-parented to us as subreaper). Returns their pids.
pub fn sweep_children() -> Vec<i32> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut found = Vec::new();
    for pid in children_of(me) {
        let _ = kill(pid, libc::SIGKILL);
        found.push(pid);
    }
    for pid in &found {
        let mut status = 0;
        // SAFETY: valid out-pointer.
        unsafe { libc::waitpid(*pid, &mut status, 0) };
    }
    found
}

/// Pids whose parent is `parent` (from /proc).
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let _state = it.next();
        if it.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// iptables.

/// Comment tag of the rules a run adds.
pub const RULE_TAG: &str = "retrace-scenario";

/// An iptables rule dropping a share of the packets towards a TCP port on loopback; deleted
/// when dropped.
#[derive(Debug)]
pub struct DropRule {
    spec: Vec<String>,
    active: bool,
}

fn iptables(args: &[String]) -> anyhow::Result<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .context("running iptables (Debian package iptables)")?;
    if !out.status.success() {
        anyhow::bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rule arguments after `-I OUTPUT` / `-D OUTPUT`.
pub fn drop_rule_spec(port: u16, probability: f64, owner_pid: u32) -> Vec<String> {
    [
        "-o",
        "lo",
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        &format!("{probability:.4}"),
        "-m",
        "comment",
        "--comment",
        &format!("{RULE_TAG}:{owner_pid}"),
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl DropRule {
    /// Adds the rule.
    pub fn add(port: u16, probability: f64) -> anyhow::Result<DropRule> {
        let spec = drop_rule_spec(port, probability, std::process::id());
        let mut args = vec!["-I".to_string(), "OUTPUT".to_string()];
        args.extend(spec.iter().cloned());
        iptables(&args)?;
        Ok(DropRule { spec, active: true })
    }

    /// Deletes the rule (once).
    pub fn remove(&mut self) -> anyhow::Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let mut args = vec!["-D".to_string(), "OUTPUT".to_string()];
        args.extend(self.spec.iter().cloned());
        iptables(&args).map(|_| ())
    }
}

impl Drop for DropRule {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("retrace scenario: removing iptables rule: {e:#}");
        }
    }
}

/// From `iptables -S OUTPUT` output, the delete arguments of rules tagged by runs that are
/// no longer alive.
pub fn stale_rules(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in listing.lines() {
        let Some(rest) = line.strip_prefix("-A OUTPUT ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let Some(i) = words.iter().position(|w| *w == "--comment") else {
            continue;
        };
        let Some(tag) = words.get(i + 1).map(|w| w.trim_matches('"')) else {
            continue;
        };
        let Some(pid) = tag
            .strip_prefix(RULE_TAG)
            .and_then(|t| t.strip_prefix(':'))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let mut args = vec!["-D".to_string(), "OUTPUT".to_string()];
        // `iptables -S` quotes the comment; the delete must name it bare.
        args.extend(words.iter().map(|w| w.trim_matches('"').to_string()));
        out.push(args);
    }
    out
}

/// Deletes rules left by runs that were killed (SIGKILL leaves no chance to clean up).
pub fn remove_stale_rules() -> anyhow::Result<usize> {
    let listing = iptables(&["-S".to_string(), "OUTPUT".to_string()])?;
    let stale = stale_rules(&listing, |pid| Path::new(&format!("/proc/{pid}")).exists());
    for args in &stale {
        iptables(args)?;
    }
    Ok(stale.len())
}

/// Our rules currently installed (tests).
#[cfg(test)]
pub fn our_rules() -> anyhow::Result<Vec<String>> {
    let listing = iptables(&["-S".to_string(), "OUTPUT".to_string()])?;
    let tag = format!("{RULE_TAG}:{}", std::process::id());
    Ok(listing
        .lines()
        .filter(|l| l.contains(&tag))
        .map(String::from)
        .collect())
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("retrace scenario: removing {}: {e}", self.0.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_rule_listing() {
        let listing = "-P OUTPUT ACCEPT\n\
-A OUTPUT -o lo -p tcp -m tcp --dport 15432 -m statistic --mode random --probability 0.25000000000 -m comment --comment retrace-scenario:4242 -j DROP\n\
-A OUTPUT -o lo -p tcp -m tcp --dport 15433 -m comment --comment \"retrace-scenario:7\" -j DROP\n\
-A OUTPUT -p tcp --dport 22 -j ACCEPT\n";
        let stale = stale_rules(listing, |pid| pid == 7);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0][0], "-D");
        assert_eq!(stale[0][1], "OUTPUT");
        assert!(stale[0].contains(&"retrace-scenario:4242".to_string()));
        assert!(stale_rules(listing, |_| true).is_empty());
        let all = stale_rules(listing, |_| false);
        assert_eq!(all.len(), 2);
        assert!(
            all[1].contains(&"retrace-scenario:7".to_string()),
            "{:?}",
            all[1]
        );
        assert!(all.iter().flatten().all(|w| !w.contains('"')));
    }

    #[test]
    fn proc_guard_kills_the_whole_group_on_drop() {
        // A shell that starts a grandchild ignoring SIGTERM: the group must still vanish.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "trap '' TERM; sleep 300 & sleep 300"]);
        let p = Proc::spawn("t", &mut cmd, libc::SIGTERM, libc::SIGKILL).expect("spawn");
        let pgid = p.pid();
        std::thread::sleep(Duration::from_millis(200));
        assert!(group_alive(pgid));
        let start = Instant::now();
        // Shorten the grace period by stopping explicitly with a small grace, then drop.
        let mut p = p;
        p.stop(Duration::from_millis(300));
        assert!(!group_alive(pgid), "group {pgid} survived");
        assert!(start.elapsed() < Duration::from_secs(8));
        drop(p);
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("300");
        let p = Proc::spawn("t2", &mut cmd, libc::SIGTERM, libc::SIGKILL).expect("spawn");
        let pgid = p.pid();
        drop(p);
        assert!(!group_alive(pgid));
    }

    #[test]
    fn proc_guard_runs_on_panic() {
        let mut pgid = 0;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cmd = Command::new("/bin/sleep");
            cmd.arg("300");
            let p = Proc::spawn("t", &mut cmd, libc::SIGTERM, libc::SIGKILL).expect("spawn");
            pgid = p.pid();
            panic!("boom");
        }));
        assert!(r.is_err());
        assert!(pgid > 0);
        assert!(!group_alive(pgid));
    }

    #[test]
    fn exit_status_is_reported() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exit 3"]);
        let mut p = Proc::spawn("t", &mut cmd, libc::SIGTERM, libc::SIGKILL).expect("spawn");
        assert_eq!(p.wait_timeout(Duration::from_secs(5)), Some(Ended::Code(3)));
    }

    #[test]
    fn abort_flag_interrupts_sleep() {
        let f = AbortFlag::new();
        let g = f.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            g.raise();
        });
        let start = Instant::now();
        assert!(f.sleep(Duration::from_secs(10)).is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().expect("join");
    }

    #[test]
    fn rules_of_killed_runs_are_removed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("iptables").arg("-V").output().is_err() {
            eprintln!("skipped: needs root and iptables");
            return;
        }
        // A pid that is gone: a child that exited and was reaped.
        let mut c = Command::new("/bin/true").spawn().expect("spawn");
        let dead = c.id();
        c.wait().expect("wait");
        let mut add = vec!["-I".to_string(), "OUTPUT".to_string()];
        add.extend(drop_rule_spec(2, 0.5, dead));
        iptables(&add).expect("add a rule as a killed run would leave it");
        let tag = format!("{RULE_TAG}:{dead}");
        let listed = |tag: &str| {
            iptables(&["-S".to_string(), "OUTPUT".to_string()])
                .expect("list")
                .contains(tag)
        };
        assert!(listed(&tag));
        assert!(remove_stale_rules().expect("removes") >= 1);
        assert!(!listed(&tag));
    }

    #[test]
    fn drop_rule_is_removed_even_on_panic() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("iptables").arg("-V").output().is_err() {
            eprintln!("skipped: needs root and iptables");
            return;
        }
        let r = std::panic::catch_unwind(|| {
            let _rule = DropRule::add(1, 0.5).expect("add");
            assert_eq!(our_rules().expect("list").len(), 1);
            panic!("boom");
        });
        assert!(r.is_err());
        assert!(our_rules().expect("list").is_empty());
    }
}
