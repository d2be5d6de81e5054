//! `retrace`: record what the kernel sees, analyze it later, anywhere.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("retrace: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Maps allocations of [`retrace_analyze::MMAP_THRESHOLD`] bytes and more on their own, for
/// good (see there why), before any thread starts.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes =
            libc::c_int::try_from(retrace_analyze::MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt sets one parameter of glibc's allocator; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        }
    }
}
