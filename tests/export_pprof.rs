//! `retrace export pprof` end to end, read by an independent pprof reader: Go's own
//! `go tool pprof` (Debian's `golang-go`, installed by `scripts/install-deps.sh`; it works
//! offline). The capture is `synth_profiles`' (a leak, a churn, a cache, known CPU shares,
//! blocking reads), written to disk and analyzed by the binary; what pprof computes from the
//! exported files (`-raw` samples, `-top` flat and cumulative values) must equal leaks.csv,
//! cpu.csv and offcpu.csv of `retrace analyze` on the same capture.
//!
//! Without `go` the test is skipped with a message, except under `RETRACE_REQUIRE_BPF=1`
//! (CI), where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

use retrace_analyze::synth_profiles::{write_profile_capture, ProfileOptions};

/// The `go` command, if installed (Debian: /usr/bin/go, /usr/lib/go/bin/go).
fn go() -> Option<PathBuf> {
    for c in ["go", "/usr/lib/go/bin/go"] {
        let ok = Command::new(c)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(PathBuf::from(c));
        }
    }
    assert!(
        std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
        "go (golang-go) is missing but RETRACE_REQUIRE_BPF=1 requires this test to run \
         (scripts/install-deps.sh installs it)"
    );
    eprintln!("SKIPPED: no `go` for `go tool pprof` (scripts/install-deps.sh installs golang-go)");
    None
}

/// Runs `go tool pprof ARGS FILE` (its cache and home in `tmp`); its standard output.
fn pprof(go: &Path, tmp: &Path, args: &[&str], file: &Path) -> String {
    let o = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", tmp)
        .env("GOCACHE", tmp.join("gocache"))
        .env("PPROF_TMPDIR", tmp)
        .output()
        .expect("go tool pprof");
    assert!(
        o.status.success(),
        "go tool pprof {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One sample of `-raw`: values, function names leaf first, labels.
#[derive(Debug, Default)]
struct RawSample {
    values: Vec<i64>,
    frames: Vec<String>,
    labels: BTreeMap<String, String>,
}

/// What `-raw` prints: the header lines, the samples, and the mappings.
#[derive(Debug, Default)]
struct Raw {
    header: Vec<String>,
    samples: Vec<RawSample>,
    /// Location id → (function, mapping id).
    mappings: Vec<String>,
}

fn parse_raw(text: &str) -> Raw {
    let mut raw = Raw::default();
    let mut section = "header";
    let mut stacks: Vec<Vec<u64>> = Vec::new();
    let mut locations: BTreeMap<u64, String> = BTreeMap::new();
    for line in text.lines() {
        match line.trim() {
            "Samples:" => {
                section = "samples";
                continue;
            }
            "Locations" => {
                section = "locations";
                continue;
            }
            "Mappings" => {
                section = "mappings";
                continue;
            }
            _ => {}
        }
        match section {
            "header" => raw.header.push(line.to_string()),
            "samples" => {
                if let Some((vals, locs)) = line
                    .split_once(':')
                    .filter(|(v, _)| v.split_whitespace().all(|x| x.parse::<i64>().is_ok()))
                {
                    raw.samples.push(RawSample {
                        values: vals
                            .split_whitespace()
                            .map(|v| v.parse().expect("a number"))
                            .collect(),
                        ..Default::default()
                    });
                    stacks.push(
                        locs.split_whitespace()
                            .map(|l| l.parse().expect("a number"))
                            .collect(),
                    );
                } else if let Some((k, v)) = line.trim().split_once(":[") {
                    if let Some(s) = raw.samples.last_mut() {
                        s.labels
                            .insert(k.to_string(), v.trim_end_matches(']').to_string());
                    }
                } else {
                    // The sample types.
                    raw.header.push(line.to_string());
                }
            }
            "locations" => {
                // `     1: 0xa0010 M=1 malloc :0 s=0`
                let mut it = line.split_whitespace();
                let id = it.next().and_then(|i| i.trim_end_matches(':').parse().ok());
                let func = it.nth(2);
                if let (Some(id), Some(f)) = (id, func) {
                    locations.insert(id, f.to_string());
                }
            }
            _ => raw.mappings.push(line.to_string()),
        }
    }
    for (s, locs) in raw.samples.iter_mut().zip(stacks) {
        s.frames = locs.iter().map(|l| locations[l].clone()).collect();
    }
    raw
}

/// `-top` rows: function → (flat, cum), values as printed with `-unit` of the type.
fn parse_top(text: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    let mut table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("flat") {
            table = true;
            continue;
        }
        if !table {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 {
            let num = |s: &str| {
                s.trim_end_matches(|c: char| c.is_alphabetic())
                    .parse::<f64>()
            };
            if let (Ok(flat), Ok(cum)) = (num(f[0]), num(f[3])) {
                out.insert(f[5..].join(" "), (flat, cum));
            }
        }
    }
    out
}

fn csv_rows(p: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(p).expect("the CSV file");
    let headers = r.headers().expect("CSV headers").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("a CSV record");
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn go_tool_pprof_reads_the_profiles_and_agrees_with_the_report() {
    let Some(go) = go() else { return };
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir = tmp.path();
    let cap = dir.join("capture");
    write_profile_capture(&cap, &ProfileOptions::default()).expect("the capture");
    let report = dir.join("report");
    let o = retrace(&["analyze", "--quiet", path(&cap), "--out", path(&report)]);
    assert!(o.status.success(), "analyze: {}", text(&o));
    let export = |t: &str| {
        let out = dir.join(format!("{t}.pb.gz"));
        let o = retrace(&[
            "export",
            "pprof",
            "--type",
            t,
            path(&cap),
            "--out",
            path(&out),
        ]);
        assert!(o.status.success(), "export {t}: {}", text(&o));
        out
    };

    // Heap: every stack of leaks.csv is a sample with the same in-use bytes and objects.
    let heap = export("heap");
    let raw = parse_raw(&pprof(&go, dir, &["-raw"], &heap));
    assert!(
        raw.header
            .iter()
            .any(|l| l.contains("inuse_space/bytes[dflt]")),
        "{:?}",
        raw.header
    );
    let leaks = csv_rows(&report.join("leaks.csv"));
    assert_eq!(raw.samples.len(), leaks.len());
    for l in &leaks {
        let mut frames: Vec<String> = l["stack"].split(';').map(String::from).collect();
        frames.reverse();
        let s = raw
            .samples
            .iter()
            .find(|s| {
                s.frames == frames
                    && s.labels.get("service") == Some(&l["service"])
                    && s.labels.get("pid") == Some(&l["pid"])
            })
            .unwrap_or_else(|| panic!("no pprof sample for {l:?}: {raw:#?}"));
        assert_eq!(s.values[3].to_string(), l["outstanding_bytes"], "{l:?}");
        let allocs: f64 = l["allocations"].parse().expect("a number");
        assert_eq!(s.values[2], allocs.round() as i64, "{l:?}");
    }
    assert!(
        raw.mappings
            .iter()
            .any(|m| m.starts_with("1: ") && m.contains("/usr/local/bin/leaky aa11")),
        "build id and file name, the main binary first: {:?}",
        raw.mappings
    );
    assert!(
        raw.mappings
            .iter()
            .any(|m| m.contains("/usr/lib/x86_64-linux-gnu/libc.so.6 bb22")),
        "{:?}",
        raw.mappings
    );
    // pprof's own top: leak_buffer holds the most in-use bytes below main.
    let top = parse_top(&pprof(
        &go,
        dir,
        &["-top", "-unit=bytes", "-sample_index=inuse_space"],
        &heap,
    ));
    let leak_row = leaks
        .iter()
        .find(|l| l["stack"].ends_with("leak_buffer;malloc"))
        .expect("found");
    assert_eq!(
        top["leak_buffer"].1,
        leak_row["outstanding_bytes"]
            .parse::<f64>()
            .expect("a number")
    );
    eprintln!(
        "pprof heap: leak_buffer in use {} B (leaks.csv {}), {} samples",
        top["leak_buffer"].1,
        leak_row["outstanding_bytes"],
        raw.samples.len()
    );

    // CPU: pprof's flat and cumulative sample counts are cpu.csv's self and total.
    let cpu = export("cpu");
    let raw = parse_raw(&pprof(&go, dir, &["-raw"], &cpu));
    assert!(
        raw.header.iter().any(|l| l.trim() == "Period: 10101010"),
        "99 Hz from the samples' spacing: {:?}",
        raw.header
    );
    let top = parse_top(&pprof(
        &go,
        dir,
        &["-top", "-nodecount=1000", "-sample_index=samples"],
        &cpu,
    ));
    let rows = csv_rows(&report.join("cpu.csv"));
    let total: f64 = top.values().map(|v| v.0).sum();
    for r in rows.iter().filter(|r| r["service"] == "leaky") {
        let (flat, cum) = top[&r["function"]];
        assert_eq!(cum.to_string(), r["samples"], "{r:?}");
        let self_pct: f64 = r["self_pct"].parse().expect("a number");
        assert!(
            (flat * 100.0 / total - self_pct).abs() < 0.006,
            "{r:?} flat {flat}"
        );
    }
    let hottest = top
        .iter()
        .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
        .expect("a maximum");
    assert_eq!(hottest.0, "compute_hot");
    eprintln!(
        "pprof cpu: {} samples, compute_hot flat {:.2}% (cpu.csv {})",
        total,
        hottest.1 .0 * 100.0 / total,
        rows.iter()
            .find(|r| r["function"] == "compute_hot")
            .expect("found")["self_pct"]
    );

    // Off-CPU: the blocking stack's cumulative delay is offcpu.csv's blocked seconds.
    let off = export("offcpu");
    let top = parse_top(&pprof(
        &go,
        dir,
        &["-top", "-nodecount=1000", "-unit=ns", "-sample_index=delay"],
        &off,
    ));
    let rows = csv_rows(&report.join("offcpu.csv"));
    let wait = rows
        .iter()
        .find(|r| r["function"] == "wait_for_input")
        .expect("found");
    let blocked_ns = wait["blocked_s"].parse::<f64>().expect("a number") * 1e9;
    assert!(
        (top["wait_for_input"].1 - blocked_ns).abs() < 1.0,
        "{top:?}"
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let out = tmp.path().join("x.pb.gz");
    let o = retrace(&[
        "export",
        "pprof",
        "--type",
        "memory",
        "nowhere",
        "--out",
        path(&out),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("heap"), "names the choices: {}", text(&o));
    let o = retrace(&[
        "export",
        "pprof",
        path(&tmp.path().join("none")),
        "--out",
        path(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!out.exists());
}
