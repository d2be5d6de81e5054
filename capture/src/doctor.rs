//! `retrace doctor`: can this machine capture, and if not, what to do about it.
//!
//! Every check looks at the real thing where it can: it parses the kernel's BTF, finds each
//! attach point the selected streams use, creates a real BPF ring buffer, loads a trivial BPF
//! program, then (for `retrace doctor`) loads the real programs configured as `retrace
//! capture` would for the same options, one check per program (a refusal shows the end of the
//! verifier's log), checks statically that every program's call chain fits the 512-byte BPF
//! stack of any kernel ([`retrace_bpf::stack`]), opens a real software perf event and a real
//! uprobe, and measures free disk space where the capture will be written. Each check yields
//! one [`Check`]: a status, what was found, and, when it failed, what to do.
//!
//! Two entry points:
//! - [`run_checks`] runs everything and returns every check (for `retrace doctor`);
//! - [`preflight`] is what `retrace capture` calls before loading anything: it returns the
//!   checks when capture can work, and a [`DoctorError::CannotCapture`] carrying the failed
//!   checks (its `Display` lists each failure with its fix) when it cannot. It mounts tracefs
//!   when an attach point needs it and it is missing, as the daemon would have to anyway.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::btf::BtfType;
use libbpf_rs::{Btf, MapHandle, MapType};

use crate::daemon::{self, ProgramState, BPF_LOG_STATS, LOG_TAIL_LINES};
use crate::CaptureConfig;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Where tracefs is normally mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where tracefs appears when only debugfs is mounted.
pub const TRACEFS_DEBUGFS: &str = "/sys/kernel/debug/tracing";
/// The uprobe PMU.
pub const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";

/// Every stream `retrace capture` knows, in the order `--streams` documents them.
pub const ALL_STREAMS: [&str; 5] = ["proc", "tcp", "l7", "dns", "logs"];

/// Free space below which capture refuses to start (the segment writer needs room for at least
/// one segment and the manifest).
pub const MIN_FREE_BYTES: u64 = 256 << 20;
/// Free space below which doctor warns.
pub const WARN_FREE_BYTES: u64 = 2 << 30;

/// Size of the ring buffer the ring-buffer check creates (the daemon's default ring size).
const RINGBUF_TEST_BYTES: u32 = 4 << 20;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// Unknown stream name.
    #[error("unknown stream {0:?} (known: proc, tcp, l7, dns, logs)")]
    UnknownStream(String),
    /// At least one check failed: capture cannot work on this machine as it is.
    #[error("{}", failed_summary(.failed))]
    CannotCapture {
        /// The failed checks, each with its fix.
        failed: Vec<Check>,
        /// Every check, in order, for callers that want to print them all.
        all: Vec<Check>,
    },
}

fn failed_summary(failed: &[Check]) -> String {
    let mut s = String::from("this machine cannot capture (`retrace doctor` tells more):");
    for c in failed {
        s.push_str("\n  ");
        s.push_str(&c.to_string());
    }
    s
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but something deserves attention (low disk, optional feature missing).
    Warn,
    /// Capture cannot work (for the selected streams) until this is fixed.
    Fail,
}

impl Status {
    /// The word printed in front of the check.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check: its name, outcome, what was found, and what to do when it is not ok.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `btf`, `tracepoint sock/inet_sock_set_state`.
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// What was found (always set).
    pub detail: String,
    /// What to do; set when `status` is not [`Status::Ok`].
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// True when this check failed.
    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }
}

impl fmt::Display for Check {
    /// `ok   btf: ...` or `FAIL tracefs: not mounted; fix: mount -t tracefs ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {}: {}",
            self.status.label(),
            self.name,
            self.detail
        )?;
        if let Some(fix) = &self.fix {
            // after a multi-line detail (a verifier log), the fix goes on a line of its own
            if self.detail.contains('\n') {
                write!(f, "\n     fix: {fix}")?;
            } else {
                write!(f, "; fix: {fix}")?;
            }
        }
        Ok(())
    }
}

/// How a BPF program attaches, which decides what the kernel must offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `tp_btf/NAME` or `raw_tp/NAME`: needs the `btf_trace_NAME` type in the kernel BTF; works
    /// without tracefs.
    Btf,
    /// `tracepoint/CATEGORY/NAME`: needs tracefs mounted to find the event id.
    Tracefs,
}

/// One kernel attach point a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    /// Tracepoint category (`sched`, `sock`, `syscalls`...).
    pub category: &'static str,
    /// Tracepoint name.
    pub name: &'static str,
    /// How it is attached.
    pub via: Via,
}

const fn btf(category: &'static str, name: &'static str) -> AttachPoint {
    AttachPoint {
        category,
        name,
        via: Via::Btf,
    }
}

/// The syscall exit raw tracepoint every syscall-based stream uses (one program reads the
/// arguments from the saved registers at exit: no entry program).
const RAW_SYSCALLS: [AttachPoint; 1] = [btf("raw_syscalls", "sys_exit")];

/// The attach points a stream needs, as the BPF programs in `bpf/src/retrace.bpf.c` attach them
/// (all `tp_btf/...` today: no tracefs needed). Keep in step with the `SEC(...)` lines there.
pub fn attach_points(stream: &str) -> Result<Vec<AttachPoint>, DoctorError> {
    let v = match stream {
        "proc" => vec![
            btf("sched", "sched_process_exec"),
            btf("sched", "sched_process_fork"),
            btf("sched", "sched_process_exit"),
            btf("oom", "mark_victim"),
        ],
        "tcp" => {
            let mut v = vec![
                btf("sock", "inet_sock_set_state"),
                btf("tcp", "tcp_retransmit_skb"),
                btf("tcp", "tcp_retransmit_synack"),
                btf("tcp", "tcp_send_reset"),
                btf("tcp", "tcp_receive_reset"),
            ];
            v.extend(RAW_SYSCALLS);
            v
        }
        "l7" | "dns" | "logs" => RAW_SYSCALLS.to_vec(),
        other => return Err(DoctorError::UnknownStream(other.to_string())),
    };
    Ok(v)
}

/// What [`run_checks`] looks at.
#[derive(Clone, Debug)]
pub struct DoctorOptions {
    /// Streams to check attach points for (names from [`ALL_STREAMS`]).
    pub streams: Vec<String>,
    /// Where the capture would be written (need not exist yet).
    pub out: PathBuf,
    /// Repair what can be repaired safely: mount tracefs when it is missing (whether or not the
    /// selected streams need it).
    pub fix: bool,
    /// Load the real BPF programs, configured as `retrace capture` would with these options
    /// (streams, filters, payload size, ring size), one check per program; `None`: only the
    /// trivial program is loaded.
    pub programs: Option<CaptureConfig>,
}

/// Runs every check, in order: kernel, privileges, BTF, tracefs, attach points of each stream,
/// BPF program load, ring buffer, perf events, uprobes, memlock, lockdown, output directory.
///
/// Unknown stream names give an error before anything is checked.
pub fn run_checks(opts: &DoctorOptions) -> Result<Vec<Check>, DoctorError> {
    run_checks_inner(opts, false)
}

/// [`run_checks`]; `mount_if_needed` mounts tracefs when an attach point needs it.
fn run_checks_inner(
    opts: &DoctorOptions,
    mount_if_needed: bool,
) -> Result<Vec<Check>, DoctorError> {
    let mut points: Vec<AttachPoint> = Vec::new();
    for s in &opts.streams {
        for p in attach_points(s)? {
            if !points.contains(&p) {
                points.push(p);
            }
        }
    }
    let needs_tracefs = points.iter().any(|p| p.via == Via::Tracefs);

    let mut checks = vec![check_kernel(), check_privileges()];
    let btf = load_btf();
    checks.push(match &btf {
        Ok(detail) => Check::ok("btf", detail.clone()),
        Err(c) => c.clone(),
    });
    let (tracefs_check, tracefs) = check_tracefs(
        opts.fix || (mount_if_needed && needs_tracefs),
        needs_tracefs,
    );
    checks.push(tracefs_check);
    let kernel_btf = if btf.is_ok() {
        Btf::from_vmlinux().ok()
    } else {
        None
    };
    for p in &points {
        checks.push(check_attach_point(
            p,
            kernel_btf.as_ref(),
            tracefs.as_deref(),
        ));
    }
    checks.push(check_prog_load());
    checks.push(check_helpers(kernel_btf.as_ref()));
    checks.push(check_stack());
    if let Some(cfg) = &opts.programs {
        checks.extend(check_programs(cfg));
    }
    checks.push(check_ringbuf());
    checks.push(check_perf_event());
    checks.push(check_uprobe());
    checks.push(check_memlock());
    if let Some(c) = check_lockdown() {
        checks.push(c);
    }
    checks.push(check_out_dir(&opts.out));
    Ok(checks)
}

/// What `retrace capture` calls before it loads anything.
///
/// Runs [`run_checks`] for `streams` and `out` with tracefs repair on (tracefs is mounted when
/// an attach point needs it and it is missing). Returns every check when none failed (warnings
/// included, for the caller to print), and [`DoctorError::CannotCapture`] otherwise; its
/// `Display` is a ready-made multi-line explanation: each failed check with its fix.
pub fn preflight(streams: &[String], out: &Path) -> Result<Vec<Check>, DoctorError> {
    let opts = DoctorOptions {
        streams: streams.to_vec(),
        out: out.to_path_buf(),
        fix: false,
        // capture loads them right after, and names a refused program itself
        programs: None,
    };
    let all = run_checks_inner(&opts, true)?;
    let failed: Vec<Check> = all.iter().filter(|c| c.failed()).cloned().collect();
    if failed.is_empty() {
        Ok(all)
    } else {
        Err(DoctorError::CannotCapture { failed, all })
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

fn kernel_release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `(major, minor)` of a release string like `6.18.44-foo`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_kernel() -> Check {
    let name = "kernel";
    match kernel_release() {
        None => Check::warn(
            name,
            "cannot read /proc/sys/kernel/osrelease",
            "is /proc mounted?",
        ),
        Some(rel) => match parse_release(&rel) {
            Some(v) if v >= (5, 15) => Check::ok(name, format!("Linux {rel}")),
            // Distributions backport BPF features (RHEL 9's 5.14 has most of 6.x's): the
            // helper check says what this one really lacks.
            Some(v) if v >= (5, 8) => Check::warn(
                name,
                format!("Linux {rel} is older than 5.15, the oldest release with every BPF helper retrace needs"),
                "see the bpf helpers check: it reads what this kernel really has",
            ),
            Some(_) => Check::fail(
                name,
                format!("Linux {rel} is older than 5.8 (no BPF ring buffer, no CAP_BPF)"),
                "run retrace on Linux 5.15 or newer (Debian 12, Ubuntu 22.04 and later ship one)",
            ),
            None => Check::warn(
                name,
                format!("unrecognised release {rel:?}"),
                "check the kernel is 5.15+",
            ),
        },
    }
}

/// Effective capability set from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

fn check_privileges() -> Check {
    let name = "privileges";
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let who = if euid == 0 {
        "root".to_string()
    } else {
        format!("uid {euid}")
    };
    let Some(caps) = effective_caps() else {
        return Check::warn(name, format!("{who}, capabilities unknown"), "run as root");
    };
    let bpf = has_cap(caps, CAP_BPF) || has_cap(caps, CAP_SYS_ADMIN);
    let perfmon = has_cap(caps, CAP_PERFMON) || has_cap(caps, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !bpf {
        missing.push("CAP_BPF");
    }
    if !perfmon {
        missing.push("CAP_PERFMON");
    }
    let setcap = "run as root (sudo retrace ...), or grant the binary \
                  `setcap cap_bpf,cap_perfmon,cap_net_admin,cap_sys_ptrace+ep $(command -v retrace)`";
    if !missing.is_empty() {
        return Check::fail(
            name,
            format!("{who} without {} (CapEff {caps:#x})", missing.join(" and ")),
            setcap,
        );
    }
    let mut have = vec![];
    for (cap, n) in [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    ] {
        if has_cap(caps, cap) {
            have.push(n);
        }
    }
    if !has_cap(caps, CAP_SYS_PTRACE) && euid != 0 {
        return Check::warn(
            name,
            format!("{who} with {}", have.join(" ")),
            "without CAP_SYS_PTRACE the process table and open sockets of other users' \
             processes cannot be read from /proc at start; add cap_sys_ptrace",
        );
    }
    Check::ok(name, format!("{who} with {}", have.join(" ")))
}

/// Validates /sys/kernel/btf/vmlinux: present, readable, BTF magic.
fn load_btf() -> Result<String, Check> {
    let name = "btf";
    let fix = "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian 11+, Ubuntu 20.10+, \
               RHEL 8.2+ kernels have it)";
    let bytes = match fs::read(VMLINUX_BTF) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Check::fail(
                name,
                format!("{VMLINUX_BTF} does not exist"),
                fix,
            ));
        }
        Err(e) => {
            return Err(Check::fail(
                name,
                format!("cannot read {VMLINUX_BTF}: {e}"),
                "run as root, or check that /sys is mounted",
            ));
        }
    };
    if bytes.len() < 24 || u16::from_le_bytes([bytes[0], bytes[1]]) != 0xeb9f {
        return Err(Check::fail(
            name,
            format!("{VMLINUX_BTF} is not BTF (bad magic)"),
            fix,
        ));
    }
    match Btf::from_vmlinux() {
        Ok(btf) => Ok(format!(
            "{VMLINUX_BTF} ({:.1} MB, {} types)",
            bytes.len() as f64 / 1e6,
            btf.len()
        )),
        Err(e) => Err(Check::fail(
            name,
            format!("libbpf cannot parse {VMLINUX_BTF}: {e}"),
            fix,
        )),
    }
}

fn tracefs_root() -> Option<PathBuf> {
    [TRACEFS, TRACEFS_DEBUGFS]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

fn mount_tracefs() -> Result<(), io::Error> {
    let src = CString::new("tracefs").map_err(io::Error::other)?;
    let target = CString::new(TRACEFS).map_err(io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; a null
    // data pointer is allowed for tracefs.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Returns the check and, when tracefs is usable, its root. `mount`: mount it when missing.
fn check_tracefs(mount: bool, needed: bool) -> (Check, Option<PathBuf>) {
    let name = "tracefs";
    if let Some(root) = tracefs_root() {
        return (
            Check::ok(name, format!("mounted at {}", root.display())),
            Some(root),
        );
    }
    let how = format!("mount -t tracefs nodev {TRACEFS} (or run `retrace doctor --fix`)");
    if mount {
        return match mount_tracefs() {
            Ok(()) if tracefs_root().is_some() => (
                Check::ok(name, format!("was not mounted: mounted it at {TRACEFS}")),
                tracefs_root(),
            ),
            Ok(()) => (
                Check::fail(name, "mounted but has no events/ directory", how),
                None,
            ),
            Err(e) => (
                Check::fail(name, format!("not mounted, and mounting failed: {e}"), how),
                None,
            ),
        };
    }
    let c = if needed {
        Check::fail(
            name,
            format!("not mounted at {TRACEFS}: tracepoint programs cannot attach"),
            how,
        )
    } else {
        Check::ok(
            name,
            format!(
                "not mounted at {TRACEFS}; not needed: the selected streams attach through BTF"
            ),
        )
    };
    (c, None)
}

fn check_attach_point(p: &AttachPoint, btf: Option<&Btf<'_>>, tracefs: Option<&Path>) -> Check {
    let name = format!("tracepoint {}/{}", p.category, p.name);
    let btf_id: Option<Option<u32>> = btf.map(|b| {
        b.type_by_name::<BtfType<'_>>(&format!("btf_trace_{}", p.name))
            .map(|t| u32::from(t.type_id()))
    });
    let id = tracefs.and_then(|root| {
        fs::read_to_string(root.join("events").join(p.category).join(p.name).join("id"))
            .ok()
            .map(|s| s.trim().to_string())
    });
    let mut found = Vec::new();
    if let Some(Some(type_id)) = btf_id {
        found.push(format!("BTF type {type_id}"));
    }
    if let Some(id) = &id {
        found.push(format!("tracefs id {id}"));
    }
    let detail = if found.is_empty() {
        "not found".to_string()
    } else {
        found.join(", ")
    };
    let missing_fix = format!(
        "this kernel lacks the {}/{} tracepoint (CONFIG_TRACEPOINTS and the subsystem's \
         events): use a newer kernel, or leave out the streams that need it",
        p.category, p.name
    );
    match p.via {
        Via::Btf => match btf_id {
            // Found: prove it by attaching a program that does nothing.
            Some(Some(type_id)) => match attach_tp_btf(type_id) {
                Ok(()) => Check::ok(name, format!("{detail}; a tp_btf program attached")),
                Err(e) => Check::fail(
                    name,
                    format!("{detail}, but attaching a tp_btf program failed: {e}"),
                    bpf_errno_fix(&e),
                ),
            },
            Some(None) => Check::fail(name, detail, missing_fix),
            None => Check::fail(
                name,
                "cannot tell: kernel BTF unavailable",
                "fix the btf check first",
            ),
        },
        Via::Tracefs => match (&id, tracefs) {
            (Some(_), _) => Check::ok(name, detail),
            (None, None) => Check::fail(
                name,
                format!("{detail}; tracefs is not mounted"),
                format!("mount -t tracefs nodev {TRACEFS}"),
            ),
            (None, Some(_)) => Check::fail(name, detail, missing_fix),
        },
    }
}

/// Loads `r0 = 0; exit` as a `tp_btf` (BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP) program for the
/// tracepoint whose `btf_trace_*` type is `btf_id`, attaches it, then detaches and unloads it.
fn attach_tp_btf(btf_id: u32) -> Result<(), io::Error> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const BPF_PROG_TYPE_TRACING: u64 = 26;
    const BPF_TRACE_RAW_TP: u64 = 23;
    let insns: [u64; 2] = [0xb7, 0x95]; // mov64 r0, 0; exit
    let license = b"GPL\0";
    let mut attr = [0u64; 16];
    attr[0] = BPF_PROG_TYPE_TRACING | (2u64 << 32); // prog_type, insn_cnt
    attr[1] = insns.as_ptr() as u64; // insns
    attr[2] = license.as_ptr() as u64; // license
    attr[6..8].copy_from_slice(&name_words(b"rt_doctor")); // prog_name (offset 48)
    attr[8] = BPF_TRACE_RAW_TP << 32; // prog_ifindex = 0, expected_attach_type
    attr[13] = u64::from(btf_id) << 32; // line_info_cnt = 0, attach_btf_id
    let fd = sys_bpf(BPF_PROG_LOAD, &mut attr);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut open = [0u64; 2];
    open[1] = u64::from(prog.as_raw_fd() as u32); // name = NULL (BTF-typed), prog_fd
    let link = sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut open);
    if link < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, a fresh fd owned by nobody else; closing it detaches the program.
    drop(unsafe { OwnedFd::from_raw_fd(link as i32) });
    Ok(())
}

/// A program name as the two u64 words of `char prog_name[16]`.
fn name_words(name: &[u8]) -> [u64; 2] {
    let mut b = [0u8; 16];
    let n = name.len().min(15);
    b[..n].copy_from_slice(&name[..n]);
    let lo = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let hi = u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    [lo, hi]
}

/// `bpf(2)` with an attribute buffer.
fn sys_bpf(cmd: libc::c_long, attr: &mut [u64]) -> libc::c_long {
    let size = std::mem::size_of_val(attr);
    // SAFETY: `attr` is a valid, writable buffer of `size` bytes for the duration of the call;
    // the kernel reads at most `size` bytes of it.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size) }
}

/// Loads `r0 = 0; exit` as a socket filter: proves bpf(2) and the verifier work.
fn check_prog_load() -> Check {
    let name = "bpf program load";
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u64 = 1;
    // mov64 r0, 0 (opcode 0xb7); exit (opcode 0x95).
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = b"GPL\0";
    let mut attr = [0u64; 16];
    attr[0] = BPF_PROG_TYPE_SOCKET_FILTER | (2u64 << 32); // prog_type, insn_cnt
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let fd = sys_bpf(BPF_PROG_LOAD, &mut attr);
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Check::fail(
            name,
            format!("bpf(BPF_PROG_LOAD) failed: {e}"),
            bpf_errno_fix(&e),
        );
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Check::ok(name, "loaded and released a trivial program")
}

/// The static stack check of the embedded object: every program's worst call chain within
/// the 512 bytes of kernels without BPF private stacks.
/// Does the kernel have every BPF helper our programs call? Read from its BTF, not guessed from
/// its release (distributions backport helpers).
fn check_helpers(btf: Option<&Btf<'_>>) -> Check {
    let name = "bpf helpers";
    let needed = match retrace_bpf::features::embedded_helpers() {
        Ok(n) => n,
        Err(e) => {
            return Check::warn(
                name,
                format!("cannot analyze the BPF object: {e}"),
                "report it: the helpers the programs need are unchecked",
            )
        }
    };
    let Some(kernel) = btf.and_then(retrace_bpf::features::helpers_in) else {
        return Check::warn(
            name,
            "the kernel's BTF has no enum bpf_func_id: cannot tell which helpers it has",
            "the program checks below will say whether the programs load",
        );
    };
    let missing = retrace_bpf::features::missing(&needed, &kernel);
    if missing.is_empty() {
        let newest = needed
            .keys()
            .max()
            .map(|&id| retrace_bpf::features::describe(id));
        return Check::ok(
            name,
            format!(
                "all {} helpers the programs call are here (the newest: {})",
                needed.len(),
                newest.unwrap_or_default()
            ),
        );
    }
    let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
    let detail = format!("this kernel lacks {}", list.join("; "));
    if missing
        .iter()
        .all(|m| retrace_bpf::features::fallback(m.id).is_some())
    {
        return Check::warn(
            name,
            detail,
            "nothing to do: the programs do without them (a kernel with them loads faster)",
        );
    }
    Check::fail(
        name,
        detail,
        "run retrace on a kernel that has them (Linux 5.15 or newer has them all; see the \
         README's kernel section)",
    )
}

fn check_stack() -> Check {
    let name = "bpf stack";
    let chains = match retrace_bpf::stack::embedded_chains() {
        Ok(c) => c,
        Err(e) => {
            return Check::warn(
                name,
                format!("cannot analyze the BPF object: {e}"),
                "report it: the stack of the programs is unchecked",
            )
        }
    };
    let Some(worst) = chains.iter().max_by_key(|c| (c.total, c.frames.len())) else {
        return Check::warn(name, "the BPF object has no programs", "report it");
    };
    let over: Vec<String> = chains
        .iter()
        .filter(|c| !c.fits())
        .map(ToString::to_string)
        .collect();
    if over.is_empty() {
        Check::ok(
            name,
            format!(
                "worst chain {} {}/{} bytes (fits every kernel)",
                worst.path(),
                worst.total,
                retrace_bpf::stack::MAX_STACK
            ),
        )
    } else {
        Check::warn(
            name,
            format!(
                "call chains over the {}-byte stack of kernels without BPF private stacks:\n{}",
                retrace_bpf::stack::MAX_STACK,
                indent(&over.join("\n"))
            ),
            "kernels before 6.13 (and some later builds) refuse these programs: this build of \
             retrace captures only where the programs load (see the `bpf program` checks)",
        )
    }
}

/// `processed 5234 insns (limit ...)` and `stack depth 0+248+120` of a statistics log, as
/// `5234 insns, stack 0+248+120`.
fn verifier_stats(log: &str) -> String {
    let insns = log.lines().find_map(|l| {
        l.trim()
            .strip_prefix("processed ")
            .and_then(|r| r.split_whitespace().next())
    });
    let stack = log
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("stack depth "));
    match (insns, stack) {
        (Some(i), Some(s)) => format!("{i} insns, stack {s}"),
        (Some(i), None) => format!("{i} insns"),
        (None, Some(s)) => format!("stack {s}"),
        (None, None) => "loaded".into(),
    }
}

fn indent(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(|l| format!("    {l}")).collect();
    lines.join("\n")
}

/// Loads the real programs as `retrace capture` would for `cfg` (not attached), with the
/// verifier's statistics: one check per selected program.
fn check_programs(cfg: &CaptureConfig) -> Vec<Check> {
    let report = match daemon::load_report(cfg, BPF_LOG_STATS) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                "bpf programs",
                format!("cannot open the BPF object: {e}"),
                "check the options (run `retrace capture --help`)",
            )]
        }
    };
    program_checks(&report)
}

/// One check per selected program of a load (and one for a failure no program explains).
fn program_checks(report: &daemon::LoadReport) -> Vec<Check> {
    let failed = report
        .programs
        .iter()
        .find(|p| p.state == ProgramState::Failed)
        .map(|p| p.name.clone());
    if let (None, Some(e)) = (&failed, &report.failure) {
        // the load failed before any program reached the verifier: one check says why
        let selected = report
            .programs
            .iter()
            .filter(|p| p.state != ProgramState::Disabled)
            .count();
        return vec![Check::fail(
            "bpf programs",
            format!("none of the {selected} programs loaded: {e}"),
            match e {
                crate::CaptureError::Bpf { source, .. } => {
                    let errno = match source.kind() {
                        libbpf_rs::ErrorKind::PermissionDenied => libc::EPERM,
                        libbpf_rs::ErrorKind::OutOfMemory => libc::ENOMEM,
                        libbpf_rs::ErrorKind::Unsupported => libc::ENOSYS,
                        _ => 0,
                    };
                    bpf_errno_fix(&io::Error::from_raw_os_error(errno))
                }
                _ => "see the message above".into(),
            },
        )];
    }
    let mut checks = Vec::new();
    for p in &report.programs {
        let name = format!("bpf program {}", p.name);
        checks.push(match p.state {
            ProgramState::Disabled => continue,
            ProgramState::Loaded => Check::ok(
                name,
                format!("{}: verified ({})", p.section, verifier_stats(&p.log)),
            ),
            ProgramState::Failed => {
                let mut tail = daemon::log_tail(&p.log, LOG_TAIL_LINES);
                if tail.is_empty() {
                    if let Some(e) = &report.failure {
                        tail = e.to_string();
                    }
                }
                Check::fail(
                    name,
                    format!(
                        "{}: refused by this kernel; the end of the verifier's log:\n{}",
                        p.section,
                        indent(&tail)
                    ),
                    "this build of retrace cannot capture these streams on this kernel: capture \
                     without the streams that need this program (--streams), and report this \
                     log",
                )
            }
            ProgramState::NotTried => Check::warn(
                name,
                format!(
                    "{}: not tried (loading stopped at {})",
                    p.section,
                    failed.as_deref().unwrap_or("an earlier failure")
                ),
                "fix the failure above first",
            ),
        });
    }
    checks
}

fn bpf_errno_fix(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "run as root or with CAP_BPF+CAP_PERFMON; check /proc/sys/kernel/unprivileged_bpf_disabled, \
             kernel lockdown, and seccomp profiles of the container (Docker needs --privileged or \
             a profile allowing bpf)"
                .to_string()
        }
        Some(libc::ENOSYS) => "the kernel was built without CONFIG_BPF_SYSCALL".to_string(),
        Some(libc::ENOMEM) => "raise the memlock limit (ulimit -l unlimited) or free memory".to_string(),
        _ => "see dmesg for the kernel's reason".to_string(),
    }
}

fn check_ringbuf() -> Check {
    let name = "ring buffer";
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    match MapHandle::create(
        MapType::RingBuf,
        Some("retrace_doctor"),
        0,
        0,
        RINGBUF_TEST_BYTES,
        &opts,
    ) {
        Ok(map) => {
            drop(map);
            Check::ok(
                name,
                format!("created a {} MiB BPF ring buffer", RINGBUF_TEST_BYTES >> 20),
            )
        }
        Err(e) => {
            // libbpf leaves the kernel's errno in errno.
            let os = io::Error::last_os_error();
            let errno_fix = if os.raw_os_error() == Some(libc::EINVAL) {
                "the kernel has no BPF_MAP_TYPE_RINGBUF (needs Linux 5.8+)".to_string()
            } else {
                bpf_errno_fix(&os)
            };
            Check::fail(
                name,
                format!("cannot create a BPF ring buffer: {e}"),
                errno_fix,
            )
        }
    }
}

/// A `perf_event_attr` as 136 bytes (PERF_ATTR_SIZE_VER7/8 prefix), zeroed.
#[repr(C)]
pub(crate) struct PerfEventAttr {
    pub(crate) words: [u64; 17],
}

impl PerfEventAttr {
    pub(crate) fn new(type_: u32, config: u64) -> Self {
        let mut words = [0u64; 17];
        let size = std::mem::size_of::<Self>() as u64;
        words[0] = u64::from(type_) | (size << 32); // type, size
        words[1] = config; // config
        words[2] = 1_000_000; // sample_period
        words[5] = 1; // flags: disabled
        Self { words }
    }
}

pub(crate) fn perf_event_open(
    attr: &mut PerfEventAttr,
    pid: i32,
    cpu: i32,
) -> Result<OwnedFd, io::Error> {
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    // SAFETY: `attr` points to a valid perf_event_attr-sized buffer whose `size` field tells the
    // kernel how much to read; the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *mut PerfEventAttr,
            pid,
            cpu,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn check_perf_event() -> Check {
    let name = "perf events";
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
    let mut attr = PerfEventAttr::new(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK);
    match perf_event_open(&mut attr, -1, 0) {
        Ok(_fd) => Check::ok(name, "opened a software cpu-clock event on CPU 0"),
        Err(e) => {
            let paranoid = fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            Check::warn(
                name,
                format!("perf_event_open(cpu-clock) failed: {e} (perf_event_paranoid {paranoid})"),
                "needed only for CPU profiling: run as root or with CAP_PERFMON; in containers \
                 allow perf_event_open in the seccomp profile",
            )
        }
    }
}

/// File offset of the ELF entry point of `path`, for a probe that certainly sits on code.
fn elf_entry_offset(path: &Path) -> Option<u64> {
    let b = fs::read(path).ok()?;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes)
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_le_bytes)
    };
    if b.get(0..4)? != b"\x7fELF" || *b.get(4)? != 2 || *b.get(5)? != 1 {
        return None; // not a little-endian ELF64
    }
    let entry = u64_at(24)?;
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let phentsize = usize::from(u16_at(54)?);
    let phnum = usize::from(u16_at(56)?);
    for i in 0..phnum.min(256) {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_LOAD: u32 = 1;
        const PF_X: u32 = 1;
        if u32_at(ph)? != PT_LOAD || u32_at(ph + 4)? & PF_X == 0 {
            continue;
        }
        let (off, vaddr, filesz) = (u64_at(ph + 8)?, u64_at(ph + 16)?, u64_at(ph + 32)?);
        if entry >= vaddr && entry < vaddr.checked_add(filesz)? {
            return Some(entry - vaddr + off);
        }
    }
    None
}

fn check_uprobe() -> Check {
    let name = "uprobes";
    let fix =
        "needed only for TLS and allocation profiling: use a kernel with CONFIG_UPROBE_EVENTS=y";
    let type_ = match fs::read_to_string(Path::new(UPROBE_PMU).join("type")) {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(t) => t,
            Err(_) => {
                return Check::warn(name, format!("{UPROBE_PMU}/type unreadable: {s:?}"), fix)
            }
        },
        Err(e) => return Check::warn(name, format!("no uprobe PMU at {UPROBE_PMU}: {e}"), fix),
    };
    // Probe our own executable at its entry point (already run, so never hit again).
    let exe = match fs::read_link("/proc/self/exe") {
        Ok(p) => p,
        Err(e) => return Check::warn(name, format!("cannot resolve /proc/self/exe: {e}"), fix),
    };
    let Some(offset) = elf_entry_offset(&exe) else {
        return Check::ok(
            name,
            format!("uprobe PMU present (type {type_}); no ELF entry to probe"),
        );
    };
    let Ok(path) = CString::new(exe.as_os_str().as_encoded_bytes()) else {
        return Check::warn(name, "executable path has a NUL byte", fix);
    };
    let mut attr = PerfEventAttr::new(type_, 0);
    attr.words[7] = path.as_ptr() as u64; // config1 = uprobe_path
    attr.words[8] = offset; // config2 = probe_offset
    match perf_event_open(&mut attr, -1, 0) {
        Ok(_fd) => Check::ok(
            name,
            format!("attached a uprobe to {} at {offset:#x}", exe.display()),
        ),
        Err(e) => Check::warn(
            name,
            format!(
                "uprobe PMU present (type {type_}) but perf_event_open of a uprobe failed: {e}"
            ),
            match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    "needed only for TLS and allocation profiling: run as root or with CAP_PERFMON"
                }
                _ => fix,
            },
        ),
    }
}

fn check_memlock() -> Check {
    let name = "memlock";
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return Check::warn(
            name,
            format!("getrlimit: {}", io::Error::last_os_error()),
            "check ulimit -l",
        );
    }
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    let memcg = kernel_release()
        .and_then(|r| parse_release(&r))
        .is_some_and(|v| v >= (5, 11));
    let detail = format!(
        "RLIMIT_MEMLOCK {} (hard {})",
        show(lim.rlim_cur),
        show(lim.rlim_max)
    );
    if memcg {
        return Check::ok(
            name,
            format!("{detail}; not used: the kernel charges BPF memory to the memory cgroup"),
        );
    }
    // Old kernels charge maps to RLIMIT_MEMLOCK: the rings alone take several MiB.
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= 64 << 20 {
        Check::ok(name, detail)
    } else if lim.rlim_max == libc::RLIM_INFINITY || lim.rlim_max >= 64 << 20 {
        Check::ok(name, format!("{detail}; raised at load time"))
    } else {
        Check::fail(
            name,
            format!("{detail}: too low for the ring buffers on this kernel (< 5.11)"),
            "ulimit -l unlimited (or LimitMEMLOCK=infinity in the systemd unit)",
        )
    }
}

fn check_lockdown() -> Option<Check> {
    let s = fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    let active = s
        .split_whitespace()
        .find(|w| w.starts_with('['))?
        .trim_matches(['[', ']']);
    Some(match active {
        "confidentiality" => Check::fail(
            "lockdown",
            "kernel lockdown is in confidentiality mode: BPF cannot read kernel memory",
            "boot with lockdown=integrity or none (or disable Secure Boot's lockdown)",
        ),
        other => Check::ok("lockdown", format!("mode {other}")),
    })
}

/// The closest existing ancestor of `p` (`p` itself when it exists).
fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(p)
    };
    abs.ancestors().find(|a| a.exists()).map(Path::to_path_buf)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    }
}

fn check_out_dir(out: &Path) -> Check {
    let name = format!("disk ({})", out.display());
    let Some(dir) = existing_ancestor(out) else {
        return Check::fail(
            name,
            "no existing parent directory",
            "pass an --out on a mounted filesystem",
        );
    };
    if !dir.is_dir() {
        return Check::fail(
            name,
            format!("{} exists and is not a directory", dir.display()),
            "pass an --out that is a directory (or does not exist yet)",
        );
    }
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return Check::fail(name, "path has a NUL byte", "pass another --out");
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Check::fail(
            name,
            format!(
                "{} is not writable: {}",
                dir.display(),
                io::Error::last_os_error()
            ),
            "pass an --out you can write to",
        );
    }
    // SAFETY: an all-zero statvfs is a valid value to be overwritten by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid path and `st` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Check::warn(
            name,
            format!("statvfs({}): {}", dir.display(), io::Error::last_os_error()),
            "check the filesystem",
        );
    }
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let detail = format!(
        "{} free on the filesystem of {}",
        human(free),
        dir.display()
    );
    if free < MIN_FREE_BYTES {
        Check::fail(
            name,
            detail,
            format!(
                "free space, or pass an --out elsewhere (at least {} needed)",
                human(MIN_FREE_BYTES)
            ),
        )
    } else if free < WARN_FREE_BYTES {
        Check::warn(
            name,
            detail,
            "little room: set --max-size or --keep so the capture stays bounded",
        )
    } else {
        Check::ok(name, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_parses() {
        assert_eq!(parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn unknown_stream_is_an_error() {
        let opts = DoctorOptions {
            streams: vec!["nope".into()],
            out: "/tmp".into(),
            fix: false,
            programs: None,
        };
        assert!(matches!(run_checks(&opts), Err(DoctorError::UnknownStream(s)) if s == "nope"));
    }

    #[test]
    fn every_stream_has_attach_points() {
        for s in ALL_STREAMS {
            assert!(!attach_points(s).expect("known stream").is_empty(), "{s}");
        }
    }

    #[test]
    fn check_lines_read_well() {
        let c = Check::fail("tracefs", "not mounted", "mount it");
        assert_eq!(c.to_string(), "FAIL tracefs: not mounted; fix: mount it");
        assert_eq!(Check::ok("btf", "fine").to_string(), "ok   btf: fine");
    }

    #[test]
    fn out_dir_check_sees_free_space_and_non_directories() {
        let dir = std::env::temp_dir();
        let c = check_out_dir(&dir.join("does/not/exist/yet"));
        assert_ne!(c.status, Status::Fail, "{c}");
        assert!(c.detail.contains("free"), "{c}");
        let file = dir.join(format!("retrace-doctor-test-{}", std::process::id()));
        fs::write(&file, b"x").expect("write temp file");
        let c = check_out_dir(&file);
        fs::remove_file(&file).expect("remove temp file");
        assert_eq!(c.status, Status::Fail, "{c}");
    }

    #[test]
    fn every_check_runs_and_explains_its_failures() {
        let opts = DoctorOptions {
            streams: ALL_STREAMS.iter().map(|s| s.to_string()).collect(),
            out: std::env::temp_dir(),
            fix: false,
            programs: None,
        };
        let checks = run_checks(&opts).expect("known streams");
        for c in &checks {
            println!("{c}");
            assert_eq!(c.fix.is_some(), c.status != Status::Ok, "{c}");
            assert!(!c.detail.is_empty(), "{c}");
        }
        // One line per attach point of every stream, plus the fixed checks.
        assert!(checks
            .iter()
            .any(|c| c.name == "tracepoint sock/inet_sock_set_state"));
        assert!(checks.iter().any(|c| c.name == "ring buffer"));
    }

    #[test]
    fn tp_btf_attach_can_fail() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (loads BPF programs)");
            return;
        }
        let btf = Btf::from_vmlinux().expect("kernel BTF");
        let good = btf
            .type_by_name::<BtfType<'_>>("btf_trace_sched_process_exec")
            .expect("tracepoint type");
        assert!(attach_tp_btf(u32::from(good.type_id())).is_ok());
        // A type that is not a tracepoint's: the kernel refuses, so the check can fail.
        let bad = btf
            .type_by_name::<BtfType<'_>>("task_struct")
            .expect("task_struct");
        assert!(attach_tp_btf(u32::from(bad.type_id())).is_err());
    }

    fn is_root_or_skip(test: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("RETRACE_REQUIRE_BPF").as_deref() == Ok("1") {
            panic!("{test}: RETRACE_REQUIRE_BPF=1 but not root");
        }
        eprintln!("{test}: skipped: needs root (loads BPF programs)");
        false
    }

    #[test]
    fn the_real_programs_load_here_one_check_each() {
        if !is_root_or_skip("the_real_programs_load_here_one_check_each") {
            return;
        }
        for (streams, expected) in [
            ("proc,tcp,l7,dns,logs", 12),
            // proc alone: exec, fork, exit, oom
            ("proc", 4),
        ] {
            let opts = DoctorOptions {
                streams: streams.split(',').map(str::to_string).collect(),
                out: std::env::temp_dir(),
                fix: false,
                programs: Some(CaptureConfig {
                    streams: streams.parse().expect("streams"),
                    payload_bytes: 4096,
                    port: Some(8080),
                    ..Default::default()
                }),
            };
            let checks = run_checks(&opts).expect("known streams");
            let programs: Vec<&Check> = checks
                .iter()
                .filter(|c| c.name.starts_with("bpf program rt_"))
                .collect();
            for c in &programs {
                println!("{c}");
                assert_eq!(c.status, Status::Ok, "{c}");
                assert!(c.detail.contains("insns, stack "), "{c}");
            }
            assert_eq!(programs.len(), expected, "--streams {streams}");
            let stack = checks
                .iter()
                .find(|c| c.name == "bpf stack")
                .expect("the stack check runs");
            println!("{stack}");
            assert!(stack.detail.contains("worst chain rt_"), "{stack}");
        }
    }

    #[test]
    fn a_refused_program_shows_the_end_of_its_log() {
        use daemon::{LoadReport, ProgramVerdict};
        let verdict = |name: &str, state, log: &str| ProgramVerdict {
            name: name.into(),
            section: format!("tp_btf/{name}"),
            state,
            log: log.into(),
        };
        let mut log: String = (0..40).map(|i| format!("{i}: (b7) r0 = 0\n")).collect();
        log.push_str("combined stack size of 2 calls is 704. Too large\n");
        let report = LoadReport {
            programs: vec![
                verdict(
                    "rt_exec",
                    ProgramState::Loaded,
                    "processed 809 insns (limit 1000000)\nstack depth 64+24\n",
                ),
                verdict("rt_oom", ProgramState::Disabled, ""),
                verdict("rt_sys_exit", ProgramState::Failed, &log),
                verdict("rt_seed", ProgramState::NotTried, ""),
            ],
            failure: Some(crate::CaptureError::Refused {
                program: "rt_sys_exit (tp_btf/rt_sys_exit)".into(),
                log_tail: String::new(),
                source: libbpf_rs::Error::from_raw_os_error(libc::EACCES),
            }),
        };
        let checks = program_checks(&report);
        let lines: Vec<String> = checks.iter().map(ToString::to_string).collect();
        assert_eq!(checks.len(), 3, "{lines:#?}");
        assert_eq!(
            lines[0],
            "ok   bpf program rt_exec: tp_btf/rt_exec: verified (809 insns, stack 64+24)"
        );
        let refused = &checks[1];
        assert_eq!(refused.status, Status::Fail);
        assert_eq!(refused.name, "bpf program rt_sys_exit");
        let shown: Vec<&str> = refused.detail.lines().skip(1).collect();
        assert_eq!(shown.len(), LOG_TAIL_LINES, "{}", refused.detail);
        assert_eq!(shown[0], "    21: (b7) r0 = 0");
        assert_eq!(
            shown[LOG_TAIL_LINES - 1],
            "    combined stack size of 2 calls is 704. Too large"
        );
        let text = refused.to_string();
        assert!(
            text.ends_with("Too large\n     fix: this build of retrace cannot capture these streams on this kernel: capture without the streams that need this program (--streams), and report this log"),
            "{text}"
        );
        assert_eq!(checks[2].status, Status::Warn);
        assert!(checks[2].detail.contains("loading stopped at rt_sys_exit"));
    }

    #[test]
    fn verifier_statistics_read_well() {
        let log = "processed 17454 insns (limit 1000000) max_states_per_insn 4 total_states 900\n\
                   stack depth 0+248+120\n";
        assert_eq!(verifier_stats(log), "17454 insns, stack 0+248+120");
        assert_eq!(verifier_stats(""), "loaded");
    }

    #[test]
    fn own_executable_has_an_entry_offset() {
        let exe = fs::read_link("/proc/self/exe").expect("self exe");
        assert!(elf_entry_offset(&exe).is_some());
        assert_eq!(elf_entry_offset(Path::new("/proc/self/status")), None);
    }
}
