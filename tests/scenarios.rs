//! Golden scenario tests: every `scenarios/<name>/` keeps a small committed capture
//! (`capture/`) and its blessed analysis (`expected/`: the CSV files and summary.json). This
//! test analyzes each committed capture again and compares, file by file.
//!
//! `UPDATE_EXPECT=1 cargo test --test scenarios` re-blesses (writes `expected/`).
//!
//! With `RETRACE_LIVE=1` (as root, where capture works; CI sets it), a live run of the
//! `lossy-db` scenario is interrupted with SIGINT in the middle of its traffic, and the test
//! checks that no process and no iptables rule is left behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Files of the report compared with the blessed ones.
const GOLDEN_FILES: &[&str] = &["services.csv", "edges.csv", "endpoints.csv", "summary.json"];

/// Compared by digest (line count and FNV-1a 64), to keep the repository small.
const DIGESTED_FILES: &[&str] = &["requests.csv", "spans.csv", "traces.csv"];

fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("lines {} fnv1a64 {h:016x}\n", text.lines().count())
}

fn scenario_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios"))
        .expect("scenarios/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("scenario.yaml").is_file())
        .collect();
    v.sort();
    v
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1);
        }
    }
    format!(
        "line counts differ: expected {}, actual {}",
        expected.lines().count(),
        actual.lines().count()
    )
}

#[test]
fn committed_captures_match_their_blessed_analysis() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let dirs = scenario_dirs();
    assert!(
        dirs.len() >= 3,
        "expected at least 3 scenarios, found {dirs:?}"
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let capture = dir.join("capture");
        if !capture.is_dir() {
            failures.push(format!(
                "{name}: no committed capture in {} (record one with `retrace scenario run` and copy its capture/)",
                capture.display()
            ));
            continue;
        }
        let opts = retrace_analyze::AnalyzeOptions {
            services_file: services_file(dir),
            ..Default::default()
        };
        let analysis = match retrace_analyze::analyze(std::slice::from_ref(&capture), &opts) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: analysis failed: {e}"));
                continue;
            }
        };
        let out = tempfile::tempdir().expect("tempdir");
        retrace_analyze::write_report(&analysis, out.path()).expect("report written");
        let expected_dir = dir.join("expected");
        if update {
            std::fs::create_dir_all(&expected_dir).expect("create expected/");
        }
        let files = GOLDEN_FILES
            .iter()
            .map(|f| (f.to_string(), false))
            .chain(DIGESTED_FILES.iter().map(|f| (format!("{f}.digest"), true)));
        for (f, digested) in files {
            let source = if digested {
                f.trim_end_matches(".digest")
            } else {
                f.as_str()
            };
            let actual = std::fs::read_to_string(out.path().join(source))
                .unwrap_or_else(|e| panic!("{name}: the report has no {source}: {e}"));
            let actual = if digested { digest(&actual) } else { actual };
            let path = expected_dir.join(&f);
            if update {
                std::fs::write(&path, &actual).expect("write expected file");
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == actual => {}
                Ok(expected) => failures.push(format!(
                    "{name}/{f} differs from {}: {}",
                    path.display(),
                    first_difference(&expected, &actual)
                )),
                Err(e) => failures.push(format!("{name}: {}: {e}", path.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n(if the change is intended: UPDATE_EXPECT=1 cargo test --test scenarios)",
        failures.join("\n")
    );
}

#[test]
fn every_scenario_file_is_valid() {
    let exe = env!("CARGO_BIN_EXE_retrace");
    let dirs = scenario_dirs();
    let out = Command::new(exe)
        .arg("scenario")
        .arg("validate")
        .args(&dirs)
        .output()
        .expect("run retrace");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn port_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[3] == "0A" && cols[1].ends_with(&want)
            })
        })
    })
}

fn processes_mentioning(what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(what) {
                out.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

#[test]
fn interrupted_live_run_leaves_nothing_behind() {
    if std::env::var_os("RETRACE_LIVE").is_none_or(|v| v != "1") {
        eprintln!("skipped: set RETRACE_LIVE=1 (as root, where `retrace doctor` passes) to run");
        return;
    }
    assert!(is_root(), "RETRACE_LIVE=1 needs root");
    let exe = env!("CARGO_BIN_EXE_retrace");
    let out = tempfile::tempdir().expect("tempdir");
    let run_dir = out.path().join("run");
    let mut child = Command::new(exe)
        .args(["scenario", "run"])
        .arg(root().join("scenarios/lossy-db"))
        .arg("--out")
        .arg(&run_dir)
        .spawn()
        .expect("start retrace scenario run");
    // Wait until the packet-loss rule is in place (3 s into the traffic), then interrupt.
    let start = Instant::now();
    let rule_seen = loop {
        let rules = Command::new("iptables")
            .args(["-w", "-S", "OUTPUT"])
            .output()
            .expect("iptables");
        if String::from_utf8_lossy(&rules.stdout).contains("retrace-scenario") {
            break true;
        }
        if start.elapsed() > Duration::from_secs(120) || child.try_wait().expect("wait").is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(rule_seen, "the run never installed its packet-loss rule");
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) with a pid we own; no memory involved.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "an interrupted run must not report success"
    );
    let rules = Command::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
        .expect("iptables");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("retrace-scenario"), "rules left: {rules}");
    for port in [25432, 26379, 28080, 28081, 28082] {
        assert!(!port_listening(port), "port {port} still listening");
    }
    let left = processes_mentioning("retrace-scenario-lossy-db");
    assert!(left.is_empty(), "processes left: {left:?}");
    for script in ["common/api.py", "common/users.py"] {
        let left = processes_mentioning(script);
        assert!(left.is_empty(), "processes left: {left:?}");
    }
}

#[test]
fn not_root_is_a_clear_error_before_anything_starts() {
    use std::os::unix::process::CommandExt as _;
    if !is_root() {
        // Already not root: the plain run must refuse.
        let o = Command::new(env!("CARGO_BIN_EXE_retrace"))
            .args([
                "scenario",
                "run",
                "scenarios/checkout",
                "--out",
                "/tmp/retrace-not-root",
            ])
            .current_dir(root())
            .output()
            .expect("run");
        let t = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains("needs root"), "{t}");
        return;
    }
    // As root: drop to nobody for the child. Ports already taken (another run on this
    // machine) say nothing about this run.
    let ports = [25432, 26379, 28080, 28081, 28082];
    let busy_before: Vec<u16> = ports.into_iter().filter(|p| port_listening(*p)).collect();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["scenario", "run"])
        .arg(root().join("scenarios/checkout"))
        .arg("--out")
        .arg(&out)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    let t = String::from_utf8_lossy(&o.stderr);
    if t.contains("Permission denied") && !t.contains("needs root") {
        eprintln!("skipped: the test binary is not reachable by nobody: {t}");
        return;
    }
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("needs root") && t.contains("nothing was started"),
        "{t}"
    );
    assert!(!out.exists(), "nothing may be created");
    for port in ports.into_iter().filter(|p| !busy_before.contains(p)) {
        assert!(!port_listening(port), "port {port} listening");
    }
}
