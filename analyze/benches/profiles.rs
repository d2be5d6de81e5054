//! Benchmark: the profiles' share of an analysis.
//!
//! 1. What the `Analyzer::push` hook costs on events that are not profile events: the
//!    `shop` stack's events (HTTP and RESP traffic) fed to `profiles::Collector::push` alone,
//!    ns per event, and the share of the analyzer's measured throughput that is.
//! 2. A profile-heavy capture: `synth_profiles::leaky_service` in exact mode (every malloc and
//!    free of two processes recorded, ~1 900 events/s) for `RETRACE_BENCH_PROFILE_SECONDS`
//!    (default 3000 s, ~5.6 M events), written with the real capture writer and analyzed
//!    from disk: events/s, peak memory (VmHWM), and the leak's growth against the truth.

use std::path::PathBuf;
use std::time::Instant;

use retrace_analyze::profiles::Collector;
use retrace_analyze::synth::{self, ShopOptions};
use retrace_analyze::synth_profiles::{self as sp, ProfileOptions};
use retrace_segment::Event;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // 1. The hook on other events.
    let opts = ShopOptions {
        requests: 100_000,
        ..Default::default()
    };
    let events: Vec<Event> = synth::shop(Vec::new(), &opts);
    let mut c = Collector::default();
    let rounds = 10;
    let t = Instant::now();
    for _ in 0..rounds {
        for (i, e) in events.iter().enumerate() {
            c.push(0, e.ts + i as u64, std::hint::black_box(e));
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / (rounds * events.len()) as f64;
    // The whole analysis of the same events, for the ratio.
    let clock = synth::synth_clock();
    let t = Instant::now();
    let a = retrace_analyze::analyze_events(
        events.iter().map(|e| ("node-a", clock.to_wall(e.ts), e)),
        Default::default(),
    )
    .expect("analysis");
    let whole = t.elapsed().as_nanos() as f64 / events.len() as f64;
    println!(
        "profiles hook on {} non-profile events x{rounds}: {ns:.2} ns/event ({:.2} s per 10 M \
         events); the whole analysis of them {whole:.0} ns/event ({} requests): the hook is \
         {:.3}% of it",
        events.len(),
        ns * 1e7 / 1e9,
        a.total_requests,
        ns / whole * 100.0
    );

    // 2. A profile-heavy capture, from disk.
    let seconds: u64 = std::env::var("RETRACE_BENCH_PROFILE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let dir = tempfile::tempdir().expect("temp dir");
    let cap: PathBuf = dir.path().join("capture");
    let popts = ProfileOptions {
        seconds,
        period: 1,
        ..Default::default()
    };
    let t = Instant::now();
    let n = sp::write_profile_capture(&cap, &popts).expect("capture");
    println!(
        "generated {n} profile events ({seconds} s, exact mode) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let before = vm_hwm_kib();
    let t = Instant::now();
    let a = retrace_analyze::analyze(&[cap], &Default::default()).expect("analysis");
    let s = t.elapsed().as_secs_f64();
    let top = &a.profiles.leak_suspects[0];
    println!(
        "analyzed in {s:.2} s: {:.2} M events/s; VmHWM {} MiB (before the analysis {} MiB); \
         top suspect {} ({}), growth {:.0} B/s vs {:.0} ({:+.2}%); {} CPU samples",
        n as f64 / s / 1e6,
        vm_hwm_kib() / 1024,
        before / 1024,
        top.stack,
        top.verdict.name(),
        top.growth_bytes_per_s,
        sp::LEAK_BYTES_PER_S,
        (top.growth_bytes_per_s / sp::LEAK_BYTES_PER_S - 1.0) * 100.0,
        a.profiles.cpu_samples
    );
}
