//! Many nodes, for real: three "nodes" on this machine, each a network namespace (joined by
//! a veth pair) and a cgroup with its own `retrace capture --cgroup` daemon, one of them
//! running with its wall clock set back 2.5 s; the clock offsets `retrace` estimates from the
//! connections between them, and the cross-node edge and traces joined after the correction
//! and not before (needs root; runs, not skips, when `RETRACE_REQUIRE_BPF=1`).
//!
//! How the clock is set back: node b's daemon runs with Debian's libfaketime preloaded
//! (`LD_PRELOAD`, `FAKETIME=-2.5s`, the library of the `faketime` package), which moves what `clock_gettime(CLOCK_REALTIME)` returns to that process by
//! −2.5 s and leaves `CLOCK_MONOTONIC` alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`). A daemon
//! stamps events with the kernel's monotonic clock and records the monotonic↔wall mapping
//! in each segment header from `CLOCK_REALTIME`: node b's capture therefore says that every
//! event happened 2.5 s before it did, exactly as a node whose clock is 2.5 s slow would. The
//! server and client themselves are not under faketime.
//!
//! Ground truth: the server's own log (one line per request it answered, with the client's
//! address) and the client's count of answers; the offset applied (−2.5 s exactly, up to
//! the daemon's reading of the two clocks, well under a microsecond).
//!
//! Node c runs nothing that talks to a or b: its offset must be reported as unknown (0).
//!
//! `RETRACE_FLEET_KEEP=DIR` copies the three captures to `DIR` (how `tests/fleet/capture` was
//! made).

// Every child is owned by a `ChildGuard`, whose Drop kills and reaps it: clippy cannot see that.
#![allow(clippy::zombie_processes)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{may_run, path, retrace, root, text, ChildGuard, RunDir};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_retrace");
/// Debian's python3 (not a pyenv shim).
const PYTHON: &str = "/usr/bin/python3";
/// The offset applied to node b's wall clock, ns.
const APPLIED_NS: i64 = -2_500_000_000;
/// How far the estimate may be from it.
const TOLERANCE_NS: u64 = 1_000_000;
/// Connections and requests per connection of the client.
const CONNECTIONS: usize = 10;
const REQUESTS: usize = 20;

fn sh(cmd: &str) {
    let st = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .expect("run sh");
    assert!(st.success(), "failed: {cmd}");
}

/// The cgroup2 (unified) hierarchy's mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
        })
        .expect("a cgroup2 hierarchy mounted")
}

/// Two network namespaces joined by a veth pair (10.231.x.1 and .2), and three cgroups;
/// all removed when dropped.
struct Nodes {
    tag: String,
    cgroups: PathBuf,
    subnet: u8,
}

impl Nodes {
    fn new() -> Nodes {
        let pid = std::process::id();
        let tag = format!("{:x}", pid % 0xfffff);
        let subnet = (pid % 200) as u8 + 20;
        let n = Nodes {
            cgroups: cgroup2_mount(),
            tag,
            subnet,
        };
        let t = &n.tag;
        sh(&format!(
            "ip netns add rtfa{t} && ip netns add rtfb{t} && \
             ip link add rtva{t} type veth peer name rtvb{t} && \
             ip link set rtva{t} netns rtfa{t} && ip link set rtvb{t} netns rtfb{t} && \
             ip -n rtfa{t} addr add {a}/24 dev rtva{t} && ip -n rtfb{t} addr add {b}/24 dev rtvb{t} && \
             ip -n rtfa{t} link set rtva{t} up && ip -n rtfb{t} link set rtvb{t} up && \
             ip -n rtfa{t} link set lo up && ip -n rtfb{t} link set lo up",
            a = n.addr('a'),
            b = n.addr('b'),
        ));
        for node in ['a', 'b', 'c'] {
            std::fs::create_dir(n.cgroup_dir(node)).expect("create the node's cgroup");
        }
        n
    }

    fn addr(&self, node: char) -> String {
        format!("10.231.{}.{}", self.subnet, if node == 'a' { 1 } else { 2 })
    }

    /// The cgroup's name, as `retrace capture --cgroup` matches it (a part of the path).
    fn cgroup(&self, node: char) -> String {
        format!("retrace-fleet-{}-{node}-node", self.tag)
    }

    fn cgroup_dir(&self, node: char) -> PathBuf {
        self.cgroups.join(self.cgroup(node))
    }

    /// `argv` run in the node's cgroup and (for a and b) network namespace. The shell moves
    /// itself into the cgroup before `ip netns exec` (which remounts /sys for the namespace).
    fn command(&self, node: char, argv: &[&str]) -> Command {
        let procs = self.cgroup_dir(node).join("cgroup.procs");
        let netns = match node {
            'c' => String::new(),
            n => format!("ip netns exec rtf{n}{} ", self.tag),
        };
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > {} && exec {netns}\"$@\"",
                procs.display()
            ))
            .arg("sh")
            .args(argv);
        c
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let t = &self.tag;
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!("ip netns del rtfa{t}; ip netns del rtfb{t}; ip link del rtva{t}"),
            ])
            .stderr(Stdio::null())
            .status();
        for node in ['a', 'b', 'c'] {
            // Processes that just exited may still be leaving the cgroup.
            for _ in 0..50 {
                if std::fs::remove_dir(self.cgroup_dir(node)).is_ok()
                    || !self.cgroup_dir(node).exists()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Debian's libfaketime (the multi-threaded variant), if installed.
fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// Starts `retrace capture` for one node; returns once it has written its first segment.
fn daemon(nodes: &Nodes, node: char, out: &Path, log: &Path, clock_back: bool) -> ChildGuard {
    let mut cmd = Command::new(BIN);
    if clock_back {
        // libfaketime preloaded into the daemon itself (the `faketime` wrapper would stand
        // between the daemon and its signals).
        cmd.env("LD_PRELOAD", libfaketime().expect("libfaketime"))
            .env("FAKETIME", "-2.5s")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    cmd.args(["capture", "--out", path(out), "--duration", "120s"])
        .args(["--node", &format!("node-{node}")])
        .args(["--cgroup", &nodes.cgroup(node)])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).expect("log"))
        .stderr(std::fs::File::create(log.with_extension("err")).expect("log"));
    let mut child = ChildGuard::spawn(&mut cmd);
    let start = Instant::now();
    while !out.join("manifest.json").exists()
        && !std::fs::read_dir(out).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "rseg")))
        })
    {
        if let Some(ok) = child.wait_timeout(Duration::ZERO).map(|st| st.success()) {
            panic!(
                "capture of node {node} exited early ({ok}): {}",
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "capture not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// `retrace analyze` of the captures into `out`; its summary.json.
fn analyze(caps: &[&Path], out: &Path, correct: bool) -> Value {
    let mut args = vec!["analyze", "--quiet", "--out", path(out)];
    args.extend(caps.iter().map(|p| path(p)));
    if !correct {
        args.push("--no-clock-correction");
    }
    let o = retrace(&args);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
        .expect("summary.json is JSON")
}

/// Spans of spans.csv as (kind, span id, parent id, start ns, end ns, node).
fn spans(dir: &Path) -> Vec<(String, String, String, i128, i128, String)> {
    let mut r = csv::Reader::from_path(dir.join("spans.csv")).expect("spans.csv");
    let h = r.headers().expect("header").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect(n);
    let (kind, id, parent, start, dur, node) = (
        col("kind"),
        col("span_id"),
        col("parent_span_id"),
        col("start"),
        col("duration_ms"),
        col("node"),
    );
    r.records()
        .map(|rec| {
            let rec = rec.expect("row");
            let t = humantime::parse_rfc3339(&rec[start]).expect("start is RFC 3339");
            let ns = t
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos() as i128;
            let d = (rec[dur].parse::<f64>().expect("duration") * 1e6) as i128;
            (
                rec[kind].to_string(),
                rec[id].to_string(),
                rec[parent].to_string(),
                ns,
                ns + d,
                rec[node].to_string(),
            )
        })
        .collect()
}

/// Server spans of node b inside their client span of node a (within `slack` ns): how many,
/// of how many server spans with a client parent.
fn nested(dir: &Path, slack: i128) -> (usize, usize) {
    let all = spans(dir);
    let clients: std::collections::HashMap<&str, _> = all
        .iter()
        .filter(|s| s.0 == "client" && s.5 == "node-a")
        .map(|s| (s.1.as_str(), s))
        .collect();
    let mut inside = 0;
    let mut with_parent = 0;
    for s in all.iter().filter(|s| s.0 == "server" && s.5 == "node-b") {
        if let Some(c) = clients.get(s.2.as_str()) {
            with_parent += 1;
            if s.3 >= c.3 - slack && s.4 <= c.4 + slack {
                inside += 1;
            }
        }
    }
    (inside, with_parent)
}

/// Checks what `retrace` makes of the three captures; returns the lines of the report.
fn check_captures(a: &Path, b: &Path, c: &Path, served: usize, work: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    // 1. The offsets, as `replay --stats` reports them.
    let o = retrace(&[
        "replay",
        path(a),
        path(b),
        path(c),
        "--stats",
        "--output",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stats: Value = serde_json::from_slice(&o.stdout).expect("stats JSON");
    let offsets = stats["clock_offsets"].as_array().expect("clock_offsets");
    assert_eq!(offsets.len(), 3, "{stats}");
    let by_node = |n: &str| {
        offsets
            .iter()
            .find(|o| o["node"] == n)
            .unwrap_or_else(|| panic!("no offset for {n}: {stats}"))
    };
    let ob = by_node("node-b");
    let est = ob["offset_ns"].as_i64().expect("offset_ns");
    let err = ob["error_ns"].as_u64().expect("error_ns");
    let samples = ob["samples"].as_u64().expect("samples");
    let off_by = (est - APPLIED_NS).unsigned_abs();
    lines.push(format!(
        "node-b: applied {:+.3} ms, estimated {:+.6} ms ± {:.3} ms from {samples} exchanges \
         (off by {:.3} µs)",
        APPLIED_NS as f64 / 1e6,
        est as f64 / 1e6,
        err as f64 / 1e6,
        off_by as f64 / 1e3
    ));
    assert!(
        off_by <= TOLERANCE_NS,
        "estimate {est} ns, applied {APPLIED_NS}"
    );
    assert!(
        off_by <= err,
        "the applied offset is outside the error bound {err}"
    );
    assert!(err <= TOLERANCE_NS, "error bound {err} ns");
    assert!(
        samples >= (served / 2) as u64,
        "{samples} exchanges of {served}"
    );
    assert_eq!(ob["corrected"], true);
    let oc = by_node("node-c");
    assert_eq!(oc["offset_ns"], 0);
    assert_eq!(oc["corrected"], false);
    let note = oc["note"].as_str().unwrap_or_default();
    assert!(note.contains("no captured connection"), "{note}");
    lines.push(format!("node-c: {note}"));

    // 2. Not corrected: the two ends of the cross-node connections stay apart.
    let before_dir = work.join("before");
    let before = analyze(&[a, b, c], &before_dir, false);
    let cov = &before["trace_coverage"];
    let joined_before = cov["server_spans_with_client"].as_u64().expect("coverage");
    assert!(before.get("clock_offsets").is_none());
    assert_eq!(joined_before, 0, "joined without correction: {cov}");
    let edges_before = before["edges"].as_array().expect("edges").len();
    assert_eq!(edges_before, 2, "{}", before["edges"]);
    lines.push(format!(
        "not corrected: {} server spans of {served} joined to their client, {edges_before} \
         edges (the client's, and an unknown client's at the server), {} traces",
        joined_before, cov["traces"]
    ));

    // 3. Corrected: one edge, every request of the server's log joined to its client, and
    // every server span inside its client span (the corrected times are right).
    let after_dir = work.join("after");
    let after = analyze(&[a, b, c], &after_dir, true);
    let cov = &after["trace_coverage"];
    let joined = cov["server_spans_with_client"].as_u64().expect("coverage");
    assert_eq!(joined as usize, served, "{cov}");
    let edges = after["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0]["requests"].as_u64(), Some(served as u64));
    assert_eq!(after["clock_offsets"].as_array().map(Vec::len), Some(3));
    let slack = err as i128;
    let (inside, with_parent) = nested(&after_dir, slack);
    assert_eq!(with_parent, served);
    assert_eq!(inside, served, "server spans outside their client span");
    let (inside_before, _) = nested(&before_dir, slack);
    lines.push(format!(
        "corrected: {joined} of {served} joined, {} edge, {} traces; {inside} of {served} \
         server spans inside their client span (± the error bound)",
        edges.len(),
        cov["traces"]
    ));
    assert_eq!(inside_before, 0);
    let html = std::fs::read_to_string(after_dir.join("index.html")).expect("index.html");
    // The report shows the estimate (`node-b: -2499.982 ms ± ...`), within the tolerance.
    let shown = html
        .split("node-b: ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the report shows node-b's offset");
    assert!(
        (shown * 1e6 - APPLIED_NS as f64).abs() <= TOLERANCE_NS as f64,
        "the report shows node-b's offset as {shown} ms"
    );
    lines
}

#[test]
fn clock_offsets_estimated_and_corrected_across_three_nodes() {
    if !may_run("clock_offsets_estimated_and_corrected_across_three_nodes") {
        return;
    }
    if libfaketime().is_none() {
        assert!(
            std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
            "faketime is missing (scripts/install-deps.sh installs it)"
        );
        eprintln!("skipped: faketime is missing (scripts/install-deps.sh installs it)");
        return;
    }
    let started = Instant::now();
    let work = RunDir(
        tempfile::Builder::new()
            .prefix("retrace-fleet-")
            .tempdir()
            .expect("tmp")
            .keep(),
    );
    let nodes = Nodes::new();
    let caps: Vec<PathBuf> = ['a', 'b', 'c']
        .iter()
        .map(|n| work.0.join(format!("node-{n}")))
        .collect();
    let mut daemons: Vec<ChildGuard> = ['a', 'b', 'c']
        .iter()
        .zip(&caps)
        .map(|(&n, cap)| {
            daemon(
                &nodes,
                n,
                cap,
                &work.0.join(format!("daemon-{n}.log")),
                n == 'b',
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));

    let server_log = work.0.join("server.log");
    let script = root().join("tests/fleet/server.py");
    let mut server = ChildGuard::spawn(
        nodes
            .command(
                'b',
                &[
                    PYTHON,
                    path(&script),
                    &nodes.addr('b'),
                    "8080",
                    path(&server_log),
                ],
            )
            .stdout(Stdio::piped()),
    );
    let out = server.0.as_mut().and_then(|c| c.stdout.take());
    let mut first = String::new();
    BufReader::new(out.expect("server stdout"))
        .read_line(&mut first)
        .expect("server says it listens");
    assert_eq!(first.trim(), "listening");
    // Node c: a process of its own, talking to nobody else.
    let mut idle = ChildGuard::spawn(&mut nodes.command('c', &["sleep", "30"]));

    let client = root().join("tests/fleet/client.py");
    let o = nodes
        .command(
            'a',
            &[
                PYTHON,
                path(&client),
                &nodes.addr('b'),
                "8080",
                &CONNECTIONS.to_string(),
                &REQUESTS.to_string(),
                "0.005",
            ],
        )
        .output()
        .expect("run the client");
    assert!(o.status.success(), "{}", text(&o));
    let total = CONNECTIONS * REQUESTS;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("200={total}")
    );
    std::thread::sleep(Duration::from_millis(500));
    server.signal(libc::SIGTERM);
    idle.signal(libc::SIGTERM);
    let _ = server.wait_timeout(Duration::from_secs(10));
    let _ = idle.wait_timeout(Duration::from_secs(10));
    for d in &daemons {
        d.signal(libc::SIGTERM);
    }
    for (d, n) in daemons.iter_mut().zip(['a', 'b', 'c']) {
        assert_eq!(
            d.wait_timeout(Duration::from_secs(60))
                .map(|st| st.success()),
            Some(true),
            "capture of node {n}"
        );
    }
    drop(nodes);

    let log = std::fs::read_to_string(&server_log).expect("server log");
    let served = log.lines().filter(|l| l.ends_with(" 200")).count();
    assert_eq!(served, total, "the server's log");
    assert!(log.lines().all(|l| l.contains(" 10.231.")), "{log}");

    let lines = check_captures(&caps[0], &caps[1], &caps[2], served, &work.0);
    for l in &lines {
        eprintln!("fleet: {l}");
    }
    eprintln!("fleet: {:.1} s in all", started.elapsed().as_secs_f64());
    if let Some(keep) = std::env::var_os("RETRACE_FLEET_KEEP") {
        let keep = PathBuf::from(keep);
        for cap in &caps {
            let name = cap.file_name().expect("name");
            sh(&format!(
                "rm -rf '{0}' && mkdir -p '{1}' && cp -r '{2}' '{0}'",
                keep.join(name).display(),
                keep.display(),
                cap.display()
            ));
        }
        std::fs::write(keep.join("server.log"), &log).expect("keep the server log");
    }
}

/// The same checks on the captures of one live run, committed (`tests/fleet/capture`, made
/// with `RETRACE_FLEET_KEEP`): runs anywhere, without root.
#[test]
fn committed_three_node_capture_offsets_and_joins() {
    let dir = root().join("tests/fleet/capture");
    let log = std::fs::read_to_string(dir.join("server.log")).expect("server.log");
    let served = log.lines().filter(|l| l.ends_with(" 200")).count();
    assert_eq!(served, CONNECTIONS * REQUESTS);
    let work = RunDir(
        tempfile::Builder::new()
            .prefix("retrace-fleet-committed-")
            .tempdir()
            .expect("tmp")
            .keep(),
    );
    let caps: Vec<PathBuf> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    for l in check_captures(&caps[0], &caps[1], &caps[2], served, &work.0) {
        eprintln!("fleet (committed): {l}");
    }
    // A window after all the traffic: the estimate's first read (two minutes from the
    // window's start) finds no connection and falls back to the whole captures.
    let stats = |extra: &[&str]| -> Value {
        let mut args = vec!["replay", "--stats", "--output", "jsonl"];
        args.extend(caps.iter().map(|p| path(p)));
        args.extend(extra);
        let o = retrace(&args);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).expect("stats JSON")
    };
    let whole = stats(&[]);
    let late = stats(&["--from", "+10m"]);
    assert_eq!(late["events_matched"], 0);
    assert_eq!(late["clock_offsets"], whole["clock_offsets"]);
}
