//! Dropping the capabilities the daemon no longer needs once its programs are loaded and
//! attached, its rings created and its capture directory open.
//!
//! What it keeps, and why (measured: `tests/reliability.rs` checks the daemon's `CapEff` and
//! that everything still works after the drop):
//! - `CAP_BPF`: every `bpf(2)` call needs it while `kernel.unprivileged_bpf_disabled` is set
//!   (Debian's default), and the daemon still makes some: the drop counters read every second
//!   (loss markers), the programs' run statistics at the end. On a kernel without `CAP_BPF`
//!   (before 5.8) `CAP_SYS_ADMIN` stands for it and is kept instead.
//! - `CAP_PERFMON`: perf events (profiling samples) opened after the start.
//! - `CAP_SYS_PTRACE` and `CAP_DAC_READ_SEARCH`: `/proc/PID/exe`, `/proc/PID/fd` and
//!   `/proc/PID/cmdline` of processes of other users, read when a process is first seen.
//! - Only when the profiler reads the binaries of the processes it samples (CPU or off-CPU
//!   sampling: stacks are unwound with their `.eh_frame`): `CAP_CHECKPOINT_RESTORE`, which
//!   opening `/proc/PID/map_files/*` needs (the mapped file itself, even deleted or in another
//!   mount namespace); `CAP_SYS_ADMIN` stands for it before Linux 5.9.
//! - Only with heap sampling, which puts uprobes on the allocator of processes that start
//!   later, through their `/proc/PID/map_files/*` path: `CAP_SYS_ADMIN` (measured: the uprobe
//!   attach fails with `CAP_CHECKPOINT_RESTORE` and `CAP_PERFMON` alone).
//!
//! Everything else goes, from the effective, permitted and inheritable sets, the ambient set
//! and the bounding set (so that nothing can raise them again, not even an `execve`):
//! `CAP_SYS_ADMIN` (where `CAP_BPF` exists), `CAP_DAC_OVERRIDE`, `CAP_NET_ADMIN`,
//! `CAP_SYS_MODULE`, `CAP_SETUID`... The capture's files belong to the daemon's own user, so
//! writing, rotating and deleting them needs no capability.
//!
//! Capabilities belong to threads: call [`drop_unneeded`] on the loading thread before the
//! writer thread is started (it inherits the reduced sets).

use caps::{CapSet, Capability, CapsHashSet};

use crate::CaptureError;

/// What the profiler does that needs capabilities of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfilerNeeds {
    /// It opens the binaries of other processes through `/proc/PID/map_files`.
    pub read_binaries: bool,
    /// It attaches uprobes to processes that start later.
    pub uprobes: bool,
}

/// The capabilities kept on this kernel (see the module docs).
pub fn kept(profiler: ProfilerNeeds) -> CapsHashSet {
    let supported = caps::runtime::thread_all_supported();
    let mut keep: CapsHashSet = [
        Capability::CAP_PERFMON,
        Capability::CAP_SYS_PTRACE,
        Capability::CAP_DAC_READ_SEARCH,
    ]
    .into_iter()
    .collect();
    if supported.contains(&Capability::CAP_BPF) {
        keep.insert(Capability::CAP_BPF);
    } else {
        keep.insert(Capability::CAP_SYS_ADMIN);
    }
    if profiler.uprobes
        || (profiler.read_binaries && !supported.contains(&Capability::CAP_CHECKPOINT_RESTORE))
    {
        keep.insert(Capability::CAP_SYS_ADMIN);
    } else if profiler.read_binaries {
        keep.insert(Capability::CAP_CHECKPOINT_RESTORE);
    }
    keep.retain(|c| supported.contains(c));
    keep
}

/// Drops every capability but [`kept`] from this thread (and so from the threads it starts
/// afterwards). Returns the names of those it kept, among the ones it had. A daemon given
/// fewer capabilities than that (an unusual setup) keeps what it has of them.
pub fn drop_unneeded(profiler: ProfilerNeeds) -> Result<Vec<String>, CaptureError> {
    let err = |what: &str, e: caps::errors::CapsError| {
        CaptureError::Config(format!("dropping capabilities: {what}: {e}"))
    };
    let had = caps::read(None, CapSet::Permitted).map_err(|e| err("reading them", e))?;
    let keep: CapsHashSet = kept(profiler).intersection(&had).copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    if had.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::runtime::thread_all_supported() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| err("bounding set", e))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient set", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("inheritable set", e))?;
    // Effective must stay within permitted: shrink it first.
    caps::set(None, CapSet::Effective, &keep).map_err(|e| err("effective set", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| err("permitted set", e))?;
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string().to_lowercase()).collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_reading_rings_and_proc_needs_and_never_sys_admin_where_bpf_exists() {
        let read = ProfilerNeeds {
            read_binaries: true,
            uprobes: false,
        };
        let with = kept(read);
        let k = kept(ProfilerNeeds::default());
        assert!(k.is_subset(&with));
        let heap = kept(ProfilerNeeds {
            read_binaries: true,
            uprobes: true,
        });
        assert!(heap.contains(&Capability::CAP_SYS_ADMIN));
        let supported = caps::runtime::thread_all_supported();
        if supported.contains(&Capability::CAP_BPF) {
            assert!(k.contains(&Capability::CAP_BPF));
            assert!(!k.contains(&Capability::CAP_SYS_ADMIN));
        }
        if supported.contains(&Capability::CAP_CHECKPOINT_RESTORE) {
            assert!(with.contains(&Capability::CAP_CHECKPOINT_RESTORE));
            assert!(!with.contains(&Capability::CAP_SYS_ADMIN));
            assert!(!k.contains(&Capability::CAP_CHECKPOINT_RESTORE));
        }
        for gone in [
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_SYS_MODULE,
            Capability::CAP_SETUID,
            Capability::CAP_SETPCAP,
        ] {
            assert!(!k.contains(&gone), "{gone} kept");
        }
        assert!(k.len() <= 4);
    }
}
