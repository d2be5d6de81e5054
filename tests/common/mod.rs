//! What the integration tests share: the repository root, running the `retrace` binary, and
//! for the live tests, whether they may run here (root) and a run folder kept on failure.
//! Each test file takes what it needs (`mod common;`), so some of it is unused in each.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the tests run the binary from there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `retrace ARGS` in the repository root.
pub fn retrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run retrace")
}

/// Standard output then standard error of a run, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The effective user id of this process.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether a live test can run here; panics when it cannot but must (CI).
pub fn may_run(test: &str) -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    if std::env::var_os("RETRACE_REQUIRE_BPF").is_some_and(|v| v == "1") {
        panic!("{test}: needs root to capture, and RETRACE_REQUIRE_BPF=1 requires it to run");
    }
    eprintln!("{test}: skipped: needs root (live capture with eBPF)");
    false
}

/// A run folder, removed when the test passes, kept for diagnosis when it fails.
pub struct RunDir(pub PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("run folder kept for diagnosis: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The analyzer's services file of a scenario (`analyze: services:`, or its base's).
pub fn services_file(dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dir.join("scenario.yaml")).expect("read scenario.yaml");
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("scenario.yaml is YAML");
    if let Some(s) = v
        .get("analyze")
        .and_then(|a| a.get("services"))
        .and_then(|s| s.as_str())
    {
        return Some(dir.join(s));
    }
    let base = v.get("extends").and_then(|e| e.as_str())?;
    services_file(&dir.join(base))
}

/// The Python of the project's venv (`RETRACE_PY_VENV`, default `/opt/retrace-py`, made by
/// `scripts/install-deps.sh`) when `import IMPORTS` works in it and `also` holds (another tool
/// the test needs, e.g. Java); `None`, the test skipped, otherwise, which is a failure under
/// `RETRACE_REQUIRE_BPF=1` (CI must run every test against the real thing).
pub fn venv_python(imports: &str, also: bool, what: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("RETRACE_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/retrace-py"));
    let py = venv.join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {imports}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok && also {
        return Some(py);
    }
    assert!(
        std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
        "{what} missing (venv {}: import {imports}: {ok}) but RETRACE_REQUIRE_BPF=1 requires \
         this test to run (scripts/install-deps.sh installs it)",
        venv.display()
    );
    eprintln!(
        "SKIPPED: {what} missing (venv {}; scripts/install-deps.sh)",
        venv.display()
    );
    None
}

/// A child process killed (SIGKILL) and reaped when dropped, even when the test panics: a
/// failed test leaves no capture daemon or server running.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut std::process::Command) -> Self {
        Self(Some(
            cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        ))
    }

    /// Guards a child already spawned.
    pub fn of(child: std::process::Child) -> Self {
        Self(Some(child))
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// Sends it a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.0 {
            // SAFETY: kill(2) on our own child's pid, not reaped yet.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits for the exit, at most `timeout`; `None` while it is still running.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        let child = self.0.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().ok().flatten() {
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The child, no longer guarded.
    pub fn take(&mut self) -> std::process::Child {
        self.0.take().expect("child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
