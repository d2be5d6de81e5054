//! The BPF programs pass this kernel's verifier for every stream selection and option
//! extreme (needs root: skipped, saying so, otherwise).

use retrace_capture::{daemon::verify_load, CaptureConfig, Streams};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn programs_load_for_every_stream_selection() {
    if !is_root() {
        eprintln!("SKIPPED programs_load_for_every_stream_selection: needs root to load BPF");
        return;
    }
    for streams in [
        "all", "proc", "tcp", "l7", "dns", "logs", "proc,tcp", "dns,logs",
    ] {
        let cfg = CaptureConfig {
            streams: streams.parse::<Streams>().expect("valid streams"),
            ..Default::default()
        };
        if let Err(e) = verify_load(&cfg) {
            panic!("--streams {streams}: {e}");
        }
    }
}

#[test]
fn programs_load_with_filters_and_largest_payload() {
    if !is_root() {
        eprintln!("SKIPPED programs_load_with_filters_and_largest_payload: needs root");
        return;
    }
    let cfg = CaptureConfig {
        payload_bytes: 4096,
        pid: Some(1),
        comm: Some("nginx".into()),
        port: Some(8080),
        ring_size: 64 << 10,
        ..Default::default()
    };
    verify_load(&cfg).expect("loads with every filter and 4096-byte payloads");
}
