//! The capture daemon: the only crate that touches the kernel.
//!
//! Data flow: [`daemon::run`] loads the BPF programs of `retrace-bpf` (streams and filters set
//! as load-time constants), seeds the kernel's socket table and the process table from
//! [`procfs`], then loops: the ring buffers are consumed on a short timer (records are
//! submitted without wakeups), each kernel record is copied as it is into a batch, and the
//! batches go through a bounded queue to a writer thread, which turns each record into an
//! event with [`convert`] (the one place that knows kernel layouts), redacts secrets, and
//! writes it through an [`sink::EventSink`] (a `retrace_segment::CaptureWriter`). Drops are counted everywhere (kernel ring per kind and CPU, user-space queue
//! per kind) and written as loss markers. Marks come from `retrace mark` through [`marks`].
//!
//! - [`config`]: options, parsed and validated.
//! - [`doctor`]: checks of the machine (BTF, privileges, attach points...), also run by
//!   `capture` before loading anything.
//! - [`privileges`]: the capabilities dropped once the programs are attached.
//! - [`redact_rules`]: the user's redaction rules (`--redact-rules`), read from YAML.
//!
//! **Architecture invariant**: nothing here knows the on-disk format; events go through the
//! segment crate's writer.

pub mod config;
pub mod convert;
pub mod daemon;
pub mod doctor;
pub mod marks;
pub mod privileges;
pub mod procfs;
pub mod profile;
pub mod redact_rules;
pub mod sink;

pub use config::{CaptureConfig, KeepPolicy, Stream, Streams};
pub use daemon::{run, Summary};

/// Everything that can stop a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A bad option.
    #[error("{0}")]
    Config(String),
    /// The machine cannot capture (the doctor's explanation).
    #[error("{0}")]
    Preflight(String),
    /// Loading or attaching the BPF programs failed.
    #[error("BPF: {what}: {source}")]
    Bpf {
        /// What was being done.
        what: String,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// The kernel (or libbpf) refused one of the BPF programs.
    #[error("BPF: program {program} was refused ({source}); the end of its verifier log:\n{}", indent(.log_tail))]
    Refused {
        /// The program and its section: `rt_sys_exit (tp_btf/sys_exit)`.
        program: String,
        /// The last lines of the verifier's log (the reason is at its end).
        log_tail: String,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// Writing the capture failed.
    #[error("writing the capture: {0}")]
    Write(#[from] retrace_segment::SegmentError),
    /// A file the daemon or `mark` uses.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `retrace mark` found no running capture.
    #[error("{0}")]
    NotRunning(String),
    /// The writer thread died.
    #[error("the writer thread stopped: {0}")]
    Writer(String),
}

fn indent(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(|l| format!("    {l}")).collect();
    lines.join("\n")
}

impl CaptureError {
    /// Whether the capture stopped because its filesystem is full (ENOSPC) or the user's
    /// disk quota is reached (EDQUOT): the segments written before are sealed when room was
    /// left for their footer, and readable up to their last whole block either way.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            CaptureError::Write(retrace_segment::SegmentError::Io { source, .. }) => source,
            CaptureError::Io { source, .. } => source,
            _ => return false,
        };
        matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }

    pub(crate) fn bpf(what: impl Into<String>, source: libbpf_rs::Error) -> Self {
        CaptureError::Bpf {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        CaptureError::Io {
            path: path.into(),
            source,
        }
    }
}
