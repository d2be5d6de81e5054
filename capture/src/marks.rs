//! Marks: a note at a moment, handed from `retrace mark DIR "note"` to the running daemon.
//!
//! Handoff: the daemon writes its pid to `DIR/daemon.pid`. `retrace mark` writes the note to
//! `DIR/marks/<mono_ns>-<pid>.note` (first line: CLOCK_MONOTONIC ns when the mark was asked
//! for; the rest: the note), atomically (temporary name, then rename), and sends SIGUSR1 to
//! the daemon. The daemon picks up every `*.note` file on SIGUSR1 and also every second (so a
//! lost signal only delays a mark), records a `Mark` event at the note's time and deletes the
//! file. SIGUSR1 with no note file records a mark of source `Signal`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::CaptureError;

/// Name of the pid file in the capture directory.
pub const PID_FILE: &str = "daemon.pid";
/// Directory of pending notes in the capture directory.
pub const MARKS_DIR: &str = "marks";
/// Longest note kept (bytes); longer notes are cut at a character boundary.
pub const MAX_NOTE: usize = 4096;

/// CLOCK_MONOTONIC now, in ns (the clock of kernel timestamps).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME now, in ns since the epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Writes `DIR/daemon.pid` for this process.
/// Like everything in the capture directory, it is private: file 0600, `marks/` 0700.
pub fn write_pid_file(dir: &Path) -> Result<PathBuf, CaptureError> {
    let path = dir.join(PID_FILE);
    private_file(&path)
        .and_then(|mut f| writeln!(f, "{}", std::process::id()))
        .map_err(|e| CaptureError::io(&path, e))?;
    let marks = dir.join(MARKS_DIR);
    private_dir(&marks).map_err(|e| CaptureError::io(&marks, e))?;
    Ok(path)
}

/// Creates (or truncates) a file readable by its owner only (0600).
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Creates a directory readable by its owner only (0700), or makes an existing one so.
fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// The pid of another `retrace` process capturing into `dir` right now, if any (its
/// `daemon.pid` names a live process whose command name is `retrace`: a pid file left by a
/// killed daemon, its pid since reused by another program, does not count).
pub fn other_daemon(dir: &Path) -> Option<i32> {
    let pid = running_daemon(dir).ok()?;
    if u32::try_from(pid).ok()? == std::process::id() {
        return None;
    }
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "retrace").then_some(pid)
}

/// Reads the daemon's pid from `DIR/daemon.pid` and checks that it runs.
pub fn running_daemon(dir: &Path) -> Result<i32, CaptureError> {
    let path = dir.join(PID_FILE);
    let text = fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CaptureError::NotRunning(format!(
                "no capture is running in {} (no {PID_FILE}; start one with `retrace capture --out {}`)",
                dir.display(),
                dir.display()
            ))
        } else {
            CaptureError::io(&path, e)
        }
    })?;
    let pid: i32 = text.trim().parse().map_err(|_| {
        CaptureError::NotRunning(format!("{}: not a pid: {:?}", path.display(), text.trim()))
    })?;
    if pid <= 0 {
        return Err(CaptureError::NotRunning(format!(
            "{}: bad pid {pid}",
            path.display()
        )));
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return Err(CaptureError::NotRunning(format!(
            "the capture in {} is not running any more (process {pid} is gone)",
            dir.display()
        )));
    }
    Ok(pid)
}

/// Hands `note` to the daemon capturing into `dir`; returns the mark's monotonic time.
pub fn send_mark(dir: &Path, note: &str) -> Result<u64, CaptureError> {
    let pid = running_daemon(dir)?;
    let ts = monotonic_ns();
    let marks = dir.join(MARKS_DIR);
    private_dir(&marks).map_err(|e| CaptureError::io(&marks, e))?;
    let name = format!("{ts}-{}", std::process::id());
    let tmp = marks.join(format!(".{name}.tmp"));
    let path = marks.join(format!("{name}.note"));
    {
        let mut f = private_file(&tmp).map_err(|e| CaptureError::io(&tmp, e))?;
        write!(f, "{ts}\n{}", truncate_note(note)).map_err(|e| CaptureError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CaptureError::io(&tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| CaptureError::io(&path, e))?;
    // SAFETY: sending SIGUSR1 to a pid we just checked; no memory is involved.
    let rc = unsafe { libc::kill(pid, libc::SIGUSR1) };
    if rc != 0 {
        return Err(CaptureError::io(
            dir.join(PID_FILE),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(ts)
}

fn truncate_note(note: &str) -> &str {
    if note.len() <= MAX_NOTE {
        return note;
    }
    let mut end = MAX_NOTE;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    &note[..end]
}

/// Takes every pending note in `dir` (oldest first): `(mono_ns, note)`. Files are deleted;
/// unreadable ones are skipped and deleted too (so they cannot wedge the daemon).
pub fn take_notes(dir: &Path) -> Vec<(u64, String)> {
    let marks = dir.join(MARKS_DIR);
    let Ok(rd) = fs::read_dir(&marks) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("note") {
            continue;
        }
        let text = fs::read(&p).unwrap_or_default();
        let _ = fs::remove_file(&p);
        let text = String::from_utf8_lossy(&text[..text.len().min(MAX_NOTE + 32)]).into_owned();
        let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let ts = first.trim().parse().unwrap_or_else(|_| monotonic_ns());
        out.push((ts, truncate_note(rest).to_string()));
    }
    out.sort();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_through_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_pid_file(dir.path()).unwrap();
        // we are the "daemon": marks go to ourselves, SIGUSR1 ignored for the test
        // SAFETY: ignoring SIGUSR1 in this test process so that the signal does not kill it.
        unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
        let t1 = send_mark(dir.path(), "deploy v2").unwrap();
        let t2 = send_mark(dir.path(), "second\nline").unwrap();
        let notes = take_notes(dir.path());
        assert_eq!(
            notes,
            vec![
                (t1, "deploy v2".to_string()),
                (t2, "second\nline".to_string())
            ]
        );
        assert!(take_notes(dir.path()).is_empty());
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = send_mark(dir.path(), "x").unwrap_err().to_string();
        assert!(err.contains("no capture is running"), "{err}");
        fs::write(dir.path().join(PID_FILE), "999999999\n").unwrap();
        let err = send_mark(dir.path(), "x").unwrap_err().to_string();
        assert!(
            err.contains("not running any more") || err.contains("bad pid"),
            "{err}"
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_NOTE);
        let t = truncate_note(&s);
        assert!(t.len() <= MAX_NOTE);
        assert!(s.starts_with(t));
    }
}
