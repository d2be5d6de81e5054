//! What the programs need of the kernel besides their attach points: the BPF helpers they
//! call, read from the compiled object (never listed by hand), and the first Linux release of
//! each, so that a kernel without one is told precisely what it lacks and what needs it.
//!
//! A kernel knows a helper when its own BTF has a member of `enum bpf_func_id` with that
//! helper's id (ids are stable: new helpers are only ever appended). Backporting
//! distributions (RHEL) carry helpers newer than their version number says, so the check is
//! on the BTF, not on the release.

use std::collections::{BTreeMap, BTreeSet};

use crate::stack::{Analysis, StackError};

/// A BPF helper the programs call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Helper {
    /// `BPF_FUNC_*` id.
    pub id: u32,
    /// Name without the `bpf_` prefix, as in `enum bpf_func_id` (`loop`, `task_pt_regs`).
    pub name: &'static str,
    /// The first mainline Linux release that has it.
    pub since: &'static str,
}

/// The helpers our programs call, with their first release (from the kernel's
/// `include/uapi/linux/bpf.h` history). A helper the object calls that is missing here is
/// still checked, only named by its id (a unit test keeps this table complete).
pub const KNOWN_HELPERS: &[Helper] = &[
    helper(1, "map_lookup_elem", "3.19"),
    helper(2, "map_update_elem", "3.19"),
    helper(3, "map_delete_elem", "3.19"),
    helper(5, "ktime_get_ns", "4.1"),
    helper(7, "get_prandom_u32", "4.1"),
    helper(8, "get_smp_processor_id", "4.1"),
    helper(14, "get_current_pid_tgid", "4.2"),
    helper(16, "get_current_comm", "4.2"),
    helper(67, "get_stack", "4.18"),
    helper(112, "probe_read_user", "5.5"),
    helper(113, "probe_read_kernel", "5.5"),
    helper(114, "probe_read_user_str", "5.5"),
    helper(115, "probe_read_kernel_str", "5.5"),
    helper(130, "ringbuf_output", "5.8"),
    helper(131, "ringbuf_reserve", "5.8"),
    helper(132, "ringbuf_submit", "5.8"),
    helper(134, "ringbuf_query", "5.8"),
    helper(137, "skc_to_tcp_sock", "5.9"),
    helper(158, "get_current_task_btf", "5.11"),
    helper(162, "sock_from_file", "5.11"),
    helper(174, "get_attach_cookie", "5.15"),
    helper(175, "task_pt_regs", "5.15"),
    helper(181, "loop", "5.17"),
];

const fn helper(id: u32, name: &'static str, since: &'static str) -> Helper {
    Helper { id, name, since }
}

/// `bpf_loop`'s id: the one helper the programs can do without (configuration `has_bpf_loop`:
/// bounded loops instead, on kernels before 5.17).
pub const BPF_LOOP: u32 = 181;

/// `bpf_task_pt_regs`'s id (5.15+): the profiler's CPU samples taken in kernel mode get the
/// user registers from it (configuration `has_task_pt_regs`), else keep only the kernel stack.
pub const TASK_PT_REGS: u32 = 175;

/// `bpf_get_attach_cookie`'s id: only the heap sampler's uprobe-session program calls it, and
/// that program is loaded only where the kernel has uprobe sessions (6.13+).
pub const GET_ATTACH_COOKIE: u32 = 174;

/// What the programs do instead of a helper the kernel lacks, for those they can do without.
pub fn fallback(id: u32) -> Option<&'static str> {
    match id {
        BPF_LOOP => Some("the fd walks at fork, exec and exit run as bounded loops instead"),
        GET_ATTACH_COOKIE => {
            Some("heap sampling uses entry and return probes instead of one uprobe session program")
        }
        TASK_PT_REGS => {
            Some("CPU samples taken in kernel mode keep their kernel stack only (no user stack)")
        }
        _ => None,
    }
}

/// The helpers the running kernel has: the ids of `enum bpf_func_id` in its BTF
/// (`/sys/kernel/btf/vmlinux`); `None` when there is no BTF or no such enum.
pub fn kernel_helpers() -> Option<BTreeSet<u32>> {
    let btf = libbpf_rs::Btf::from_vmlinux().ok()?;
    helpers_in(&btf)
}

/// Whether the running kernel attaches uprobe sessions (`BPF_TRACE_UPROBE_SESSION` in its
/// `enum bpf_attach_type`, Linux 6.13+): the heap sampler then cancels the return probe of
/// unsampled calls at their entry. `false` when there is no BTF.
pub fn kernel_has_uprobe_session() -> bool {
    let Ok(btf) = libbpf_rs::Btf::from_vmlinux() else {
        return false;
    };
    btf.type_by_name::<libbpf_rs::btf::types::Enum<'_>>("bpf_attach_type")
        .is_some_and(|e| {
            e.iter()
                .any(|m| m.name.and_then(|n| n.to_str()) == Some("BPF_TRACE_UPROBE_SESSION"))
        })
}

/// The ids of `enum bpf_func_id` in `btf`.
pub fn helpers_in(btf: &libbpf_rs::Btf<'_>) -> Option<BTreeSet<u32>> {
    let e = btf.type_by_name::<libbpf_rs::btf::types::Enum<'_>>("bpf_func_id")?;
    Some(
        e.iter()
            .filter_map(|m| u32::try_from(m.value).ok())
            .collect(),
    )
}

/// The known facts of helper `id`, if it is in [`KNOWN_HELPERS`].
pub fn known(id: u32) -> Option<&'static Helper> {
    KNOWN_HELPERS.iter().find(|h| h.id == id)
}

/// `bpf_NAME (Linux X+)`, or `BPF helper #ID` for one not in [`KNOWN_HELPERS`].
pub fn describe(id: u32) -> String {
    match known(id) {
        Some(h) => format!("bpf_{} (Linux {}+)", h.name, h.since),
        None => format!("BPF helper #{id}"),
    }
}

/// For every helper the object's programs call (directly or through their subprograms and
/// callbacks), the programs that call it.
pub fn helpers_by_program(analysis: &Analysis) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (root, program) in analysis.programs() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![root];
        let mut ids = BTreeSet::new();
        while let Some(f) = stack.pop() {
            if !seen.insert(f) {
                continue;
            }
            let Some(func) = analysis.functions.get(f) else {
                continue;
            };
            ids.extend(func.helpers.iter().copied());
            stack.extend(func.calls.iter().map(|c| c.callee));
        }
        for id in ids {
            out.entry(id).or_default().push(program.name.clone());
        }
    }
    out
}

/// [`helpers_by_program`] of the embedded object ([`crate::object`]).
pub fn embedded_helpers() -> Result<BTreeMap<u32, Vec<String>>, StackError> {
    let mut all: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (_, bytes) in crate::objects() {
        for (id, programs) in helpers_by_program(&Analysis::from_elf(bytes)?) {
            all.entry(id).or_default().extend(programs);
        }
    }
    Ok(all)
}

/// A helper the kernel lacks, and the programs that need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// `BPF_FUNC_*` id.
    pub id: u32,
    /// The programs that call it.
    pub programs: Vec<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (needed by {})",
            describe(self.id),
            self.programs.join(", ")
        )?;
        if let Some(instead) = fallback(self.id) {
            write!(f, ": {instead}")?;
        }
        Ok(())
    }
}

/// The helpers of `needed` that are not among `kernel` (the ids of the kernel's
/// `enum bpf_func_id`).
pub fn missing(needed: &BTreeMap<u32, Vec<String>>, kernel: &BTreeSet<u32>) -> Vec<Missing> {
    needed
        .iter()
        .filter(|(id, _)| !kernel.contains(id))
        .map(|(&id, programs)| Missing {
            id,
            programs: programs.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_helper_the_object_calls_is_known() {
        let needed = embedded_helpers().expect("analysis of the embedded object");
        assert!(
            needed.contains_key(&131),
            "ringbuf_reserve not found: {needed:?}"
        );
        let unknown: Vec<u32> = needed
            .keys()
            .copied()
            .filter(|&id| known(id).is_none())
            .collect();
        assert!(
            unknown.is_empty(),
            "add these helper ids to KNOWN_HELPERS with their first Linux release: {unknown:?}"
        );
    }

    #[test]
    fn the_running_kernel_lists_its_helpers() {
        // Every kernel we run on has BTF; this one's enum must at least know map lookups.
        let Some(ids) = kernel_helpers() else {
            panic!("no enum bpf_func_id in /sys/kernel/btf/vmlinux");
        };
        assert!(ids.contains(&1) && ids.len() > 100, "{} ids", ids.len());
    }

    #[test]
    fn bpf_loop_is_needed_by_the_fd_walks() {
        let needed = embedded_helpers().expect("analysis of the embedded object");
        let users = needed.get(&181).expect("bpf_loop is called");
        for p in ["rt_fork", "rt_exec", "rt_exit"] {
            assert!(users.iter().any(|u| u == p), "{p} not among {users:?}");
        }
    }

    #[test]
    fn a_kernel_without_a_helper_is_told_which_and_who_needs_it() {
        let needed = embedded_helpers().expect("analysis of the embedded object");
        // A 5.15 kernel: everything up to task_pt_regs (175), no bpf_loop (181).
        let kernel: BTreeSet<u32> = (0..=180).collect();
        let gone = missing(&needed, &kernel);
        assert_eq!(gone.len(), 1, "{gone:?}");
        let text = gone[0].to_string();
        assert!(
            text.starts_with("bpf_loop (Linux 5.17+) (needed by "),
            "{text}"
        );
        assert!(text.ends_with("run as bounded loops instead"), "{text}");
        assert!(fallback(gone[0].id).is_some());
        assert!(text.contains("rt_fork"), "{text}");
        assert!(missing(&needed, &(0..=300).collect()).is_empty());
    }
}
