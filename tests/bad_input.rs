//! Bad arguments and bad files, for every subcommand: one clear error on standard error (what
//! is wrong, where, and what was expected), exit code 2, no panic, and nothing written half:
//! no output file or directory is left behind by a run that failed.
//!
//! One table, [`cases`]: each row is a command line (`{CAP}` a small valid capture, `{OUT}`
//! an output path that must not exist afterwards, `{DIR}` the folder of the fixtures) and the
//! words its error must contain. Runs without root (`capture` and `doctor` only get bad
//! flags: anything further loads BPF programs); `mark` needs no daemon to fail cleanly.
//! Unreadable files cannot be tested as root (root reads mode-000 files), so a directory
//! given as a file stands for them.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{retrace, text};
use retrace_analyze::synth::{write_shop_capture, ShopOptions};

/// `(name, arguments, words the error must contain)`.
fn cases() -> Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)> {
    vec![
        (
            "unknown subcommand",
            vec!["bogus"],
            vec!["unrecognized subcommand 'bogus'"],
        ),
        (
            "doctor: unknown flag",
            vec!["doctor", "--bogus"],
            vec!["unexpected argument '--bogus'"],
        ),
        (
            "capture: bad size",
            vec!["capture", "--max-size", "lots"],
            vec!["'lots'", "--max-size", "examples: 512MiB"],
        ),
        (
            "capture: bad duration",
            vec!["capture", "--duration", "forever"],
            vec!["'forever'", "--duration"],
        ),
        (
            "mark: no capture running",
            vec!["mark", "{DIR}/nope", "note"],
            vec!["{DIR}/nope", "no capture is running", "retrace capture"],
        ),
        (
            "replay: no path",
            vec!["replay"],
            vec!["required", "<PATH>"],
        ),
        (
            "replay: missing path",
            vec!["replay", "{DIR}/missing"],
            vec!["{DIR}/missing", "No such file"],
        ),
        (
            "replay: not a segment",
            vec!["replay", "{DIR}/junk.rseg"],
            vec!["{DIR}/junk.rseg", "not a retrace segment"],
        ),
        (
            "replay: capture of junk",
            vec!["replay", "{DIR}/junkcap"],
            vec!["junkcap/junk.rseg", "nothing could be read"],
        ),
        (
            "replay: bad filter value",
            vec!["replay", "{CAP}", "-f", "pid = abc"],
            vec!["column 7", "'pid' expects a number", "'abc'"],
        ),
        (
            "replay: unbalanced filter",
            vec!["replay", "{CAP}", "-f", "(port = 80"],
            vec!["invalid filter", "column"],
        ),
        (
            "replay: bad --from",
            vec!["replay", "{CAP}", "--from", "yesterday"],
            vec!["--from", "'yesterday'", "expected RFC 3339"],
        ),
        (
            "replay: window backwards",
            vec!["replay", "{CAP}", "--from", "+10s", "--to", "+5s"],
            vec!["--from", "after --to"],
        ),
        (
            "replay: bad format",
            vec!["replay", "{CAP}", "-o", "xml"],
            vec!["'xml'", "--output"],
        ),
        (
            "replay: bad number",
            vec!["replay", "{CAP}", "--payload-bytes", "lots"],
            vec!["'lots'", "--payload-bytes"],
        ),
        (
            "analyze: no --out",
            vec!["analyze", "{CAP}"],
            vec!["required", "--out"],
        ),
        (
            "analyze: missing capture",
            vec!["analyze", "{DIR}/missing", "--out", "{OUT}"],
            vec!["{DIR}/missing", "No such file"],
        ),
        (
            "analyze: not a segment",
            vec!["analyze", "{DIR}/junk.rseg", "--out", "{OUT}"],
            vec!["junk.rseg", "not a retrace segment"],
        ),
        (
            "analyze: capture of junk",
            vec!["analyze", "{DIR}/junkcap", "--out", "{OUT}"],
            vec![
                "junkcap/junk.rseg",
                "nothing could be read",
                "expected a capture",
            ],
        ),
        (
            "analyze: services YAML",
            vec![
                "analyze",
                "{CAP}",
                "--out",
                "{OUT}",
                "--services",
                "{DIR}/bad.yaml",
            ],
            vec!["{DIR}/bad.yaml:2:1"],
        ),
        (
            "analyze: services missing",
            vec![
                "analyze",
                "{CAP}",
                "--out",
                "{OUT}",
                "--services",
                "{DIR}/missing.yaml",
            ],
            vec!["{DIR}/missing.yaml", "No such file"],
        ),
        (
            "analyze: services a directory",
            vec!["analyze", "{CAP}", "--out", "{OUT}", "--services", "{DIR}"],
            vec!["{DIR}", "Is a directory"],
        ),
        (
            "analyze: slo YAML",
            vec![
                "analyze",
                "{CAP}",
                "--out",
                "{OUT}",
                "--slo",
                "{DIR}/bad.yaml",
            ],
            vec!["{DIR}/bad.yaml:2:1"],
        ),
        (
            "analyze: alerts not YAML rules",
            vec![
                "analyze",
                "{CAP}",
                "--out",
                "{OUT}",
                "--alerts",
                "{DIR}/word.yaml",
            ],
            vec!["{DIR}/word.yaml:1:1", "expected a mapping"],
        ),
        (
            "analyze: findings config key",
            vec![
                "analyze",
                "{CAP}",
                "--out",
                "{OUT}",
                "--findings-config",
                "{DIR}/services.yaml",
            ],
            vec![
                "{DIR}/services.yaml:1:1",
                "unknown field `services`",
                "expected one of",
            ],
        ),
        (
            "analyze: baseline missing",
            vec![
                "analyze",
                "{CAP}",
                "--out",
                "{OUT}",
                "--baseline",
                "{DIR}/missing",
            ],
            vec!["{DIR}/missing", "No such file"],
        ),
        (
            "analyze: bad --to",
            vec!["analyze", "{CAP}", "--out", "{OUT}", "--to", "noon"],
            vec!["--to", "'noon'"],
        ),
        (
            "analyze: out not creatable",
            vec!["analyze", "{CAP}", "--out", "/proc/retrace-bad-input"],
            vec!["/proc/retrace-bad-input"],
        ),
        (
            "analyze: out under a file",
            vec!["analyze", "{CAP}", "--out", "{DIR}/bad.yaml/report"],
            vec!["{DIR}/bad.yaml/report", "Not a directory"],
        ),
        (
            "check: no --expect",
            vec!["check", "{CAP}"],
            vec!["required", "--expect"],
        ),
        (
            "check: expect missing",
            vec!["check", "{CAP}", "--expect", "{DIR}/missing.yaml"],
            vec!["{DIR}/missing.yaml", "No such file"],
        ),
        (
            "check: expect YAML",
            vec!["check", "{CAP}", "--expect", "{DIR}/bad.yaml"],
            vec!["{DIR}/bad.yaml:2:1"],
        ),
        (
            "check: expect empty",
            vec!["check", "{CAP}", "--expect", "{DIR}/empty.yaml"],
            vec!["{DIR}/empty.yaml", "empty file", "expected"],
        ),
        (
            "check: capture missing",
            vec!["check", "{DIR}/missing", "--expect", "{DIR}/expect.yaml"],
            vec!["{DIR}/missing", "No such file"],
        ),
        (
            "check: junit not writable",
            vec![
                "check",
                "{CAP}",
                "--expect",
                "{DIR}/expect.yaml",
                "--junit",
                "/proc/retrace-bad.xml",
            ],
            vec!["/proc/retrace-bad.xml"],
        ),
        (
            "diff: base missing",
            vec!["diff", "{DIR}/missing", "{CAP}"],
            vec!["{DIR}/missing", "No such file"],
        ),
        (
            "diff: candidate of junk",
            vec!["diff", "{CAP}", "{DIR}/junkcap"],
            vec!["junkcap/junk.rseg", "nothing could be read"],
        ),
        (
            "diff: bad rule",
            vec!["diff", "{CAP}", "{CAP}", "--fail-on", "p99 >> 3"],
            vec!["--fail-on", "p99 >> 3", "expected a number"],
        ),
        (
            "diff: out not creatable",
            vec!["diff", "{CAP}", "{CAP}", "--out", "/proc/retrace-bad-diff"],
            vec!["/proc/retrace-bad-diff"],
        ),
        (
            "export: missing capture",
            vec!["export", "otlp", "{DIR}/missing", "--out", "{OUT}"],
            vec!["{DIR}/missing", "No such file"],
        ),
        (
            "export: not a segment",
            vec!["export", "otlp", "{DIR}/junk.rseg", "--out", "{OUT}"],
            vec!["junk.rseg", "not a retrace segment"],
        ),
        (
            "export: services YAML",
            vec![
                "export",
                "otlp",
                "{CAP}",
                "--out",
                "{OUT}",
                "--services",
                "{DIR}/bad.yaml",
            ],
            vec!["{DIR}/bad.yaml:2:1"],
        ),
        (
            "export: batch 0",
            vec!["export", "otlp", "{CAP}", "--out", "{OUT}", "--batch", "0"],
            vec!["'0'", "--batch"],
        ),
        (
            "export: out not creatable",
            vec!["export", "otlp", "{CAP}", "--out", "/proc/retrace-bad.json"],
            vec!["/proc/retrace-bad.json"],
        ),
        (
            "export: unknown format",
            vec!["export", "xlsx", "{CAP}"],
            vec!["unrecognized subcommand 'xlsx'"],
        ),
        (
            "scenario: file missing",
            vec!["scenario", "validate", "{DIR}/missing.yaml"],
            vec!["{DIR}/missing.yaml", "No such file"],
        ),
        (
            "scenario: YAML",
            vec!["scenario", "validate", "{DIR}/bad.yaml"],
            vec!["{DIR}/bad.yaml:2:1"],
        ),
    ]
}

/// The files of `dir`, recursively (relative paths).
fn listing(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(dir).expect("prefix").display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

#[test]
fn bad_arguments_and_files_give_one_clear_error_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fixtures");
    std::fs::create_dir(&dir).expect("mkdir");
    let cap = tmp.path().join("cap");
    write_shop_capture(
        &cap,
        &ShopOptions {
            requests: 40,
            ..Default::default()
        },
    )
    .expect("capture");
    // Fixtures: bytes that are not a segment, a capture directory of such bytes, YAML that
    // does not parse, text that is not the YAML expected, an empty file, a valid services file
    // (given where another kind of file is expected) and a valid expectations file.
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("junk.rseg"), &junk).expect("junk");
    std::fs::create_dir(dir.join("junkcap")).expect("junkcap");
    std::fs::write(dir.join("junkcap/junk.rseg"), &junk).expect("junk");
    std::fs::write(dir.join("bad.yaml"), "services: [\n").expect("bad");
    std::fs::write(dir.join("word.yaml"), "x\n").expect("word");
    std::fs::write(dir.join("empty.yaml"), "").expect("empty");
    std::fs::write(
        dir.join("services.yaml"),
        "services:\n  - name: api\n    cmdline: 'app'\n",
    )
    .expect("services");
    std::fs::write(
        dir.join("expect.yaml"),
        "services:\n  - { name: nginx, max_error_rate: 100% }\n",
    )
    .expect("expect");
    let out = tmp.path().join("out");
    let before = listing(tmp.path());

    let d = dir.to_str().expect("utf-8");
    let c = cap.to_str().expect("utf-8");
    let o = out.to_str().expect("utf-8");
    let mut failures = Vec::new();
    let mut table = String::new();
    for (name, args, words) in cases() {
        let subst = |s: &str| {
            s.replace("{DIR}", d)
                .replace("{CAP}", c)
                .replace("{OUT}", o)
        };
        let args: Vec<String> = args.iter().map(|a| subst(a)).collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = retrace(&argv);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        let first_error = stderr
            .lines()
            .find(|l| {
                l.starts_with("retrace: ") && !l.starts_with("retrace: warning")
                    || l.starts_with("error: ")
            })
            .unwrap_or("");
        let mut problems = Vec::new();
        if run.status.code() != Some(2) {
            problems.push(format!("exit code {:?}, not 2", run.status.code()));
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push("panicked".to_string());
        }
        if first_error.is_empty() {
            problems.push("no `retrace: ` or `error: ` line".to_string());
        }
        for w in &words {
            let w = subst(w);
            if !stderr.contains(&w) {
                problems.push(format!("does not say {w:?}"));
            }
        }
        // One error, on one line (clap's usage lines follow its `error:` line).
        if first_error.starts_with("retrace: ") && last != first_error {
            problems.push(format!("more after the error: {last:?}"));
        }
        let after = listing(tmp.path());
        if after != before {
            let left: Vec<&String> = after.difference(&before).collect();
            problems.push(format!("left behind {left:?}"));
            for p in left {
                let _ = std::fs::remove_dir_all(tmp.path().join(p));
                let _ = std::fs::remove_file(tmp.path().join(p));
            }
        }
        table.push_str(&format!(
            "{:<34} {:>4}  {}\n",
            name,
            run.status.code().map_or("sig".into(), |c| c.to_string()),
            first_error.replace(d, "{DIR}").replace(c, "{CAP}")
        ));
        if !problems.is_empty() {
            failures.push(format!(
                "{name}: {}\n  {}",
                problems.join("; "),
                text(&run).replace('\n', "\n  ")
            ));
        }
    }
    eprintln!("{table}");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
}
