//! The static stack analysis (`retrace_bpf::stack`) against the verifier of the running
//! kernel: the real programs, configured as `retrace capture` configures them, are loaded
//! with the verifier's statistics (`BPF_LOG_STATS`), and each subprogram's depth in its
//! `stack depth A+B+C` line must be at most what the analysis found for that function (the
//! verifier counts only the bytes a path really touches, so it may see fewer, never more).
//!
//! Needs root: without it the tests print `skipped: needs root` and pass, unless
//! `RETRACE_REQUIRE_BPF=1` is set, in which case they fail.

use retrace_bpf::stack::{self, Analysis};
use retrace_capture::daemon::{load_report, ProgramState, BPF_LOG_STATS};
use retrace_capture::{CaptureConfig, Streams};

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        let why = format!("needs root (running as uid {euid}): loads BPF programs");
        if std::env::var("RETRACE_REQUIRE_BPF").as_deref() == Ok("1") {
            panic!("{test}: RETRACE_REQUIRE_BPF=1 but {why}");
        }
        eprintln!("{test}: skipped: {why}");
        return false;
    }
    true
}

/// What the verifier may report for a function: its static depth, and when it hands a
/// callback to `bpf_loop`, the 24 bytes (plus alignment to 8) the verifier adds to its frame
/// when it inlines the loop, after the combined-stack check (`optimize_bpf_loop`).
fn verifier_bound(a: &Analysis, f: usize) -> u32 {
    let func = &a.functions[f];
    let inlined_loop = func.calls.iter().any(|c| c.edge == stack::Edge::Callback);
    if inlined_loop {
        func.depth.next_multiple_of(8) + 24
    } else {
        func.depth
    }
}

/// Whether the programs are loaded with `bpf_loop` here (as `retrace capture` decides).
fn uses_bpf_loop() -> bool {
    let forced_off = std::env::var(retrace_capture::daemon::NO_BPF_LOOP_ENV).as_deref() == Ok("1");
    !forced_off
        && retrace_bpf::features::kernel_helpers()
            .is_none_or(|ids| ids.contains(&retrace_bpf::features::BPF_LOOP))
}

/// The functions of `order` the verifier keeps: those reachable from `root` through calls that
/// are live in this configuration. With `bpf_loop`, the bounded-loop fallbacks (`*_bounded`)
/// are dead code; without it, the callbacks handed to `bpf_loop` are.
fn live(a: &Analysis, root: usize, order: &[usize], bpf_loop: bool) -> Vec<usize> {
    let mut seen = vec![false; a.functions.len()];
    let mut todo = vec![root];
    while let Some(f) = todo.pop() {
        if std::mem::replace(&mut seen[f], true) {
            continue;
        }
        for c in &a.functions[f].calls {
            let dead = if bpf_loop {
                a.functions[c.callee].name.ends_with("_bounded")
            } else {
                c.edge == stack::Edge::Callback
            };
            if !dead {
                todo.push(c.callee);
            }
        }
    }
    order.iter().copied().filter(|&f| seen[f]).collect()
}

#[test]
fn verifier_depths_are_within_the_static_analysis() {
    if !root_or_skip("verifier_depths_are_within_the_static_analysis") {
        return;
    }
    let a = Analysis::from_elf(retrace_bpf::object()).expect("object analyzes");
    let cfg = CaptureConfig {
        streams: "all".parse::<Streams>().expect("streams"),
        ..Default::default()
    };
    let report = load_report(&cfg, BPF_LOG_STATS).expect("object opens");
    if let Some(e) = &report.failure {
        panic!("the programs do not load here: {e}");
    }
    let mut problems = Vec::new();
    println!("program: verifier stack depth per subprogram (static depth) in libbpf's order");
    for p in &report.programs {
        assert_eq!(p.state, ProgramState::Loaded, "{}", p.name);
        let depths = stack::verifier_stack_depths(&p.log)
            .unwrap_or_else(|| panic!("{}: no `stack depth` line in:\n{}", p.name, p.log));
        let (root, _) = a
            .programs()
            .find(|(_, f)| f.name == p.name)
            .unwrap_or_else(|| panic!("{} not in the analysis", p.name));
        let order = live(&a, root, &a.libbpf_order(root), uses_bpf_loop());
        let shown: Vec<String> = order
            .iter()
            .zip(&depths)
            .map(|(&f, d)| format!("{} {d} ({})", a.functions[f].name, a.functions[f].depth))
            .collect();
        println!("  {}: {}", p.name, shown.join(" + "));
        if depths.len() != order.len() {
            problems.push(format!(
                "{}: the verifier has {} subprograms, the analysis {} ({:?})",
                p.name,
                depths.len(),
                order.len(),
                order
                    .iter()
                    .map(|&f| &a.functions[f].name)
                    .collect::<Vec<_>>()
            ));
            continue;
        }
        for (&f, &d) in order.iter().zip(&depths) {
            let bound = verifier_bound(&a, f);
            if d > bound {
                problems.push(format!(
                    "{}: the verifier counts {d} bytes for {}, the static analysis {bound}",
                    p.name, a.functions[f].name
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the static analysis under-estimates:\n  {}",
        problems.join("\n  ")
    );
}
