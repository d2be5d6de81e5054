//! `retrace scenario run`: services, capture, traffic, faults, analysis; cleanup whatever
//! happens.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::cgroup::Isolation;
use super::guard::{self, AbortFlag, DropRule, Proc, TempDir};
use super::loadgen;
use super::spec::{self, FaultAction, Scenario, ServiceSpec, Vars};
use super::RunArgs;
use crate::cmd::check;

/// Debian's python3 (with python3-psycopg2 and python3-redis), not a pyenv shim.
pub const PYTHON: &str = "/usr/bin/python3";

/// Runs one scenario.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let mut sc = spec::load_scenario(&args.scenario)?;
    // Ports taken (another scenario running, anything else): move those services rather than
    // refuse, so runs can share a machine (a CI runner, say).
    let free_port = || -> anyhow::Result<u16> {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
        Ok(l.local_addr()?.port())
    };
    for (name, from, to) in sc.move_busy_ports(port_busy, free_port)? {
        println!("service {name}: port {from} is in use, using {to}");
    }
    let pre = preflight(&sc, args)?;
    let abort = guard::install_signal_flag()?;
    guard::become_subreaper().context("becoming a child subreaper")?;
    if pre.uses_iptables {
        let n = guard::remove_stale_rules()?;
        if n > 0 {
            eprintln!("removed {n} iptables rule(s) left by an earlier, killed run");
        }
    }
    // Everything started from here on inherits the runner's own cgroup, and the capture
    // records only that cgroup.
    let isolation = match Isolation::enter() {
        Ok(i) => Some(i),
        Err(e) => {
            eprintln!(
                "retrace scenario: warning: the scenario's processes are not isolated ({e:#}); \
                 other activity on this machine may show up in the capture"
            );
            None
        }
    };
    let result = {
        let cgroup = isolation.as_ref().map(|i| i.name().to_string());
        let mut stack = Stack::new(&sc, args, pre, abort.clone(), cgroup)?;
        let r = stack.run_all(t0);
        // Everything is stopped here, before analysis, on success and failure alike.
        stack.shutdown();
        r
    };
    let swept = guard::sweep_children();
    if !swept.is_empty() {
        eprintln!("killed {} stray process(es): {swept:?}", swept.len());
    }
    // back where the runner was; the (now empty) cgroup is removed
    drop(isolation);
    let mut timings = result?;
    let print_timings = |timings: &[(String, f64)]| {
        println!("\ntimings:");
        for (name, secs) in timings {
            println!("  {name:<22} {secs:>7.2} s");
        }
        println!("  {:<22} {:>7.2} s", "total", t0.elapsed().as_secs_f64());
    };
    let t_an = Instant::now();
    let code = match analyze_and_check(&sc, args) {
        Ok(code) => code,
        Err(e) => {
            print_timings(&timings);
            return Err(e);
        }
    };
    timings.push(("analyze + check".to_string(), t_an.elapsed().as_secs_f64()));
    print_timings(&timings);
    let mut phases: BTreeMap<String, f64> = timings.into_iter().collect();
    phases.insert("total".to_string(), t0.elapsed().as_secs_f64());
    std::fs::write(
        args.out.join("timings.json"),
        serde_json::to_string_pretty(&phases)?,
    )?;
    Ok(code)
}

fn analyze_and_check(sc: &Scenario, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let capture = args.out.join("capture");
    let analysis = check::run_analysis(&[capture], sc.services_file.as_deref())?;
    let report_dir = args.out.join("analysis");
    retrace_analyze::write_report(&analysis, &report_dir)
        .with_context(|| format!("writing the report into {}", report_dir.display()))?;
    println!("analysis written to {}", report_dir.display());
    if sc.expect.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let results = check::evaluate_analysis(&sc.expect, &analysis);
    let text = check::render_results(&results);
    print!("\nexpectations:\n{text}");
    std::fs::write(args.out.join("check.txt"), &text)?;
    if let Some(j) = &args.junit {
        let cases: Vec<check::JunitCase> = results.iter().map(check::JunitCase::from).collect();
        check::write_junit(j, &format!("retrace scenario {}", sc.name), &cases)?;
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    println!("{} expectations, {failed} failed", results.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// ---------------------------------------------------------------------------------------------
// Preflight: everything that can be checked before anything starts.

struct Preflight {
    vars: Vars,
    uses_iptables: bool,
    exe: PathBuf,
    capture_exe: PathBuf,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest installed PostgreSQL's bin folder.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn find_program(p: &str) -> Option<PathBuf> {
    if p.contains('/') {
        let path = PathBuf::from(p);
        return path.is_file().then_some(path);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

/// uid and gid of a user.
fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            let uid = f[2].parse().with_context(|| format!("uid of {name}"))?;
            let gid = f[3].parse().with_context(|| format!("gid of {name}"))?;
            return Ok((uid, gid));
        }
    }
    anyhow::bail!("no user {name:?} on this machine (install the package that creates it)")
}

/// Whether a service cannot take TCP `port` on loopback: something listens there, or it
/// cannot be bound.
fn port_busy(port: u16) -> bool {
    listening(port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// Whether something listens on TCP `port` (from /proc/net/tcp{,6}, without connecting).
pub fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let mut it = l.split_whitespace();
                let local = it.nth(1).unwrap_or("");
                let state = it.nth(1).unwrap_or("");
                state == "0A" && local.ends_with(&want)
            })
        })
    })
}

fn preflight(sc: &Scenario, args: &RunArgs) -> anyhow::Result<Preflight> {
    if !is_root() {
        anyhow::bail!(
            "`retrace scenario run` needs root: the capture uses eBPF and faults use iptables \
             (run it with sudo); nothing was started"
        );
    }
    if args.out.exists()
        && std::fs::read_dir(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} exists and is not empty: give a new directory with --out",
            args.out.display()
        );
    }
    let exe = std::env::current_exe().context("locating the retrace binary")?;
    // `RETRACE_BIN`: another retrace binary for `doctor` and `capture` (e.g. a release build).
    let capture_exe = std::env::var_os("RETRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.clone());
    let mut vars = Vars::default();
    vars.map
        .insert("scenario".into(), sc.dir.display().to_string());
    vars.map.insert("python".into(), PYTHON.into());
    if let Some(b) = pg_bin() {
        vars.map.insert("pg_bin".into(), b.display().to_string());
    }
    for s in &sc.services {
        vars.map
            .insert(format!("port:{}", s.name), s.port.to_string());
    }
    let mut problems = Vec::new();
    for s in &sc.services {
        let mut v = vars.clone();
        v.map.insert("port".into(), s.port.to_string());
        v.map
            .insert("scenario".into(), s.origin.display().to_string());
        let mut programs = vec![s.command.clone()];
        programs.extend(
            s.setup
                .iter()
                .chain(&s.after_ready)
                .filter_map(|c| c.first().cloned()),
        );
        for p in programs {
            let r = v.render(&p);
            if r.contains("{pg_bin}") {
                problems.push(format!(
                    "service {}: needs PostgreSQL (Debian package postgresql): no /usr/lib/postgresql/*/bin/postgres",
                    s.name
                ));
            } else if find_program(&r).is_none() {
                problems.push(format!("service {}: program {r} not found", s.name));
            }
        }
        if let Some(u) = &s.user {
            if let Err(e) = lookup_user(u) {
                problems.push(format!("service {}: {e:#}", s.name));
            }
        }
        if port_busy(s.port) {
            problems.push(format!(
                "service {}: port {} is already in use",
                s.name, s.port
            ));
        }
        for src in s.templates.keys() {
            let p = v.render(src);
            if !Path::new(&p).is_file() {
                problems.push(format!("service {}: template {p} not found", s.name));
            }
        }
    }
    if sc
        .services
        .iter()
        .any(|s| s.command.contains("python") || s.command == "{python}")
        && Command::new(PYTHON)
            .args(["-c", "import psycopg2, redis"])
            .stderr(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
    {
        problems.push(format!(
            "{PYTHON} cannot import psycopg2 and redis: apt-get install python3-psycopg2 python3-redis"
        ));
    }
    let uses_iptables = sc
        .faults
        .iter()
        .any(|f| matches!(f.action, FaultAction::Loss(_)));
    if uses_iptables
        && !Command::new("iptables")
            .args(["-w", "-S", "OUTPUT"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        problems.push("packet-loss faults need iptables (Debian package iptables) working".into());
    }
    // Can capture work? Ask `retrace doctor` for the streams this scenario records.
    let mut probe_dir = args.out.clone();
    while !probe_dir.exists() {
        match probe_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe_dir = p.to_path_buf(),
            _ => {
                probe_dir = PathBuf::from(".");
                break;
            }
        }
    }
    let doctor = Command::new(&capture_exe)
        .arg("doctor")
        .arg("--streams")
        .arg(sc.capture.streams.join(","))
        .arg("--out")
        .arg(&probe_dir)
        .output()
        .context("running retrace doctor")?;
    if !doctor.status.success() {
        problems.push(format!(
            "capture cannot work here (retrace doctor):\n{}{}",
            String::from_utf8_lossy(&doctor.stdout),
            String::from_utf8_lossy(&doctor.stderr)
        ));
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "scenario {} cannot run; nothing was started:\n  - {}",
            sc.name,
            problems.join("\n  - ")
        );
    }
    Ok(Preflight {
        vars,
        uses_iptables,
        exe,
        capture_exe,
    })
}

// ---------------------------------------------------------------------------------------------
// The running stack.

struct Service {
    spec: ServiceSpec,
    vars: Vars,
    user: Option<(u32, u32)>,
    dir: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

#[derive(Serialize)]
struct FaultLog {
    t_s: f64,
    what: String,
    /// Wall-clock time, ns since the epoch: the ground truth of live tests (tests/slo_e2e.rs).
    wall_ns: u64,
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Stack<'a> {
    sc: &'a Scenario,
    out: PathBuf,
    logs: PathBuf,
    exe: PathBuf,
    capture_exe: PathBuf,
    abort: AbortFlag,
    services: Vec<Service>,
    capture: Option<Proc>,
    loadgen: Option<Proc>,
    rules: BTreeMap<usize, DropRule>,
    leakers: BTreeMap<usize, Proc>,
    fault_log: Vec<FaultLog>,
    workdir: Option<TempDir>,
    keep_workdir: bool,
    /// The cgroup every process of the scenario is in, when isolated.
    cgroup: Option<String>,
}

impl<'a> Stack<'a> {
    fn new(
        sc: &'a Scenario,
        args: &RunArgs,
        pre: Preflight,
        abort: AbortFlag,
        cgroup: Option<String>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let out = std::fs::canonicalize(&args.out)?;
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs)?;
        // Work folder under /tmp: services running as other users (postgres) must reach it.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let work = PathBuf::from(format!(
            "/tmp/retrace-scenario-{}-{}-{nanos}",
            sc.name,
            std::process::id()
        ));
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        set_mode(&work, 0o755)?;
        let workdir = TempDir(work.clone());
        let mut base = pre.vars;
        base.map.insert("run".into(), work.display().to_string());
        let mut services = Vec::new();
        for s in &sc.services {
            let dir = work.join(&s.name);
            std::fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o755)?;
            let user = s.user.as_deref().map(lookup_user).transpose()?;
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", dir.display()))?;
            }
            let mut vars = base.clone();
            vars.map.insert("dir".into(), dir.display().to_string());
            vars.map.insert("port".into(), s.port.to_string());
            vars.map.insert("name".into(), s.name.clone());
            vars.map
                .insert("scenario".into(), s.origin.display().to_string());
            services.push(Service {
                spec: s.clone(),
                vars,
                user,
                dir,
                proc: None,
                starts: 0,
            });
        }
        Ok(Stack {
            sc,
            out,
            logs,
            exe: pre.exe,
            capture_exe: pre.capture_exe,
            abort,
            services,
            capture: None,
            loadgen: None,
            rules: BTreeMap::new(),
            leakers: BTreeMap::new(),
            fault_log: Vec::new(),
            workdir: Some(workdir),
            keep_workdir: args.keep_workdir,
            cgroup,
        })
    }

    fn log_file(&self, name: &str) -> anyhow::Result<File> {
        let p = self.logs.join(format!("{name}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))
    }

    fn log_tail(&self, name: &str) -> String {
        let p = self.logs.join(format!("{name}.log"));
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!(
            "last lines of {}:\n{}",
            p.display(),
            lines[from..].join("\n")
        )
    }

    fn command(&self, svc: &Service, argv: &[String], log_name: &str) -> anyhow::Result<Command> {
        let (prog, rest) = argv.split_first().context("empty command")?;
        let mut cmd = Command::new(svc.vars.render(prog));
        cmd.args(rest.iter().map(|a| svc.vars.render(a)));
        for (k, v) in &svc.spec.env {
            cmd.env(k, svc.vars.render(v));
        }
        cmd.current_dir(&svc.dir);
        cmd.stdin(Stdio::null());
        let log = self.log_file(log_name)?;
        cmd.stdout(log.try_clone()?);
        cmd.stderr(log);
        if let Some((uid, gid)) = svc.user {
            cmd.uid(uid).gid(gid);
            cmd.env("HOME", &svc.dir);
        }
        Ok(cmd)
    }

    fn run_to_end(&self, svc: &Service, argv: &[String], what: &str) -> anyhow::Result<()> {
        let mut cmd = self.command(svc, argv, &svc.spec.name)?;
        let mut p = Proc::spawn(what, &mut cmd, libc::SIGTERM, libc::SIGKILL)?;
        let start = Instant::now();
        loop {
            self.abort.check()?;
            if let Some(e) = p.try_wait() {
                if !e.success() {
                    anyhow::bail!(
                        "service {}: {what} ({}) failed: {e}\n{}",
                        svc.spec.name,
                        argv.join(" "),
                        self.log_tail(&svc.spec.name)
                    );
                }
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(180) {
                anyhow::bail!("service {}: {what} took more than 3 minutes", svc.spec.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn setup_service(&self, i: usize) -> anyhow::Result<()> {
        let svc = &self.services[i];
        for (src, dst) in &svc.spec.templates {
            let (src, dst) = (svc.vars.render(src), svc.vars.render(dst));
            let text = std::fs::read_to_string(&src).with_context(|| format!("reading {src}"))?;
            std::fs::write(&dst, svc.vars.render(&text))
                .with_context(|| format!("writing {dst}"))?;
        }
        for c in &svc.spec.setup {
            self.run_to_end(svc, c, "setup")?;
        }
        Ok(())
    }

    /// Starts service `i`; `initial`: wait for its HTTP readiness too (before the capture);
    /// during the capture only the listening socket is watched, so no probe traffic is
    /// captured.
    fn start_service(&mut self, i: usize, initial: bool) -> anyhow::Result<()> {
        let name = self.services[i].spec.name.clone();
        let mut argv = vec![self.services[i].spec.command.clone()];
        argv.extend(self.services[i].spec.args.iter().cloned());
        let mut cmd = self.command(&self.services[i], &argv, &name)?;
        let svc = &mut self.services[i];
        let proc = Proc::spawn(
            &name,
            &mut cmd,
            svc.spec.stop_signal.number(),
            libc::SIGKILL,
        )?;
        svc.proc = Some(proc);
        svc.starts += 1;
        let timeout = svc
            .spec
            .ready
            .timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        let port = svc.spec.port;
        let http = svc.spec.ready.http.clone().filter(|_| initial);
        let start = Instant::now();
        loop {
            self.abort.check()?;
            let svc = &mut self.services[i];
            if let Some(e) = svc.proc.as_mut().and_then(Proc::try_wait) {
                anyhow::bail!(
                    "service {name} exited while starting ({e})\n{}",
                    self.log_tail(&name)
                );
            }
            let up = listening(port)
                && match &http {
                    None => true,
                    Some(path) => loadgen::http_once(
                        "GET",
                        &format!("http://127.0.0.1:{port}{path}"),
                        None,
                        Duration::from_secs(1),
                    )
                    .is_ok_and(|r| r.status == 200),
                };
            if up {
                break;
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "service {name} not ready on port {port} after {:?}\n{}",
                    timeout,
                    self.log_tail(&name)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if initial {
            let cmds = self.services[i].spec.after_ready.clone();
            for c in &cmds {
                self.run_to_end(&self.services[i], c, "after_ready")?;
            }
        }
        println!(
            "  {name:<10} ready on port {port} ({:.1} s)",
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn service_index(&self, name: &str) -> anyhow::Result<usize> {
        self.services
            .iter()
            .position(|s| s.spec.name == name)
            .with_context(|| format!("no service {name}"))
    }

    fn stop_service(&mut self, name: &str, kill: bool) -> anyhow::Result<String> {
        let i = self.service_index(name)?;
        let Some(mut p) = self.services[i].proc.take() else {
            return Ok(format!("{name} was not running"));
        };
        let ended = if kill {
            p.stop_with(libc::SIGKILL, Duration::ZERO)
        } else {
            p.stop(Duration::from_secs(10))
        };
        Ok(match ended {
            Some(e) => format!("{name} stopped ({e})"),
            None => format!("{name} stopped"),
        })
    }

    fn start_capture(&mut self) -> anyhow::Result<()> {
        let dir = self.out.join("capture");
        let mut cmd = Command::new(&self.capture_exe);
        cmd.arg("capture")
            .arg("--out")
            .arg(&dir)
            .arg("--streams")
            .arg(self.sc.capture.streams.join(","))
            .arg("--node")
            .arg(&self.sc.name)
            .args(&self.sc.capture.args)
            .stdin(Stdio::null());
        // Only the scenario's processes (the filter follows new processes through the proc
        // stream).
        match &self.cgroup {
            Some(c) if self.sc.capture.streams.iter().any(|s| s == "proc") => {
                cmd.arg("--cgroup").arg(c);
            }
            Some(_) => eprintln!(
                "retrace scenario: warning: the capture has no proc stream, so it cannot keep \
                 to the scenario's cgroup: other activity on this machine may show up"
            ),
            None => {}
        }
        let log = self.log_file("capture")?;
        cmd.stdout(log.try_clone()?).stderr(log);
        // SIGTERM when the runner dies: the capture seals its files.
        let p = Proc::spawn("capture", &mut cmd, libc::SIGINT, libc::SIGTERM)?;
        self.capture = Some(p);
        let start = Instant::now();
        loop {
            self.abort.check()?;
            if let Some(e) = self.capture.as_mut().and_then(Proc::try_wait) {
                anyhow::bail!(
                    "retrace capture exited at start ({e})\n{}",
                    self.log_tail("capture")
                );
            }
            let has_files = std::fs::read_dir(&dir).is_ok_and(|mut rd| rd.next().is_some());
            if has_files && start.elapsed() > Duration::from_millis(1500) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!(
                    "retrace capture wrote nothing into {} within 30 s\n{}",
                    dir.display(),
                    self.log_tail("capture")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "  capture    running into {} ({:.1} s)",
            dir.display(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn stop_capture(&mut self) -> anyhow::Result<()> {
        let Some(mut p) = self.capture.take() else {
            return Ok(());
        };
        match p.stop(Duration::from_secs(60)) {
            Some(e) if e.success() => Ok(()),
            Some(e) => anyhow::bail!(
                "retrace capture ended with {e} instead of exit code 0\n{}",
                self.log_tail("capture")
            ),
            None => anyhow::bail!("retrace capture did not report how it ended"),
        }
    }

    fn apply(&mut self, idx: usize, undo: bool) -> anyhow::Result<String> {
        let f = &self.sc.faults[idx];
        Ok(match (&f.action, undo) {
            (FaultAction::Stop(n), false) => self.stop_service(n, false)?,
            (FaultAction::Kill(n), false) => self.stop_service(n, true)?,
            (FaultAction::Start(n), false)
            | (FaultAction::Stop(n) | FaultAction::Kill(n), true) => {
                let i = self.service_index(n)?;
                if self.services[i].proc.is_some() {
                    format!("{n} already running")
                } else {
                    self.start_service(i, false)?;
                    format!("{n} started again")
                }
            }
            (FaultAction::Loss(l), false) => {
                let r = DropRule::add(l.port, l.probability)?;
                self.rules.insert(idx, r);
                format!(
                    "dropping {:.0}% of packets to port {}",
                    l.probability * 100.0,
                    l.port
                )
            }
            (FaultAction::Loss(l), true) => {
                if let Some(mut r) = self.rules.remove(&idx) {
                    r.remove()?;
                }
                format!("packet loss to port {} removed", l.port)
            }
            (FaultAction::Http(h), _) => {
                let r = loadgen::http_once(
                    &h.method,
                    &h.url,
                    h.body.as_deref(),
                    Duration::from_secs(5),
                )?;
                format!("{} {} -> {}", h.method, h.url, r.status)
            }
            (FaultAction::Leak(l), false) => {
                let mut cmd = Command::new(PYTHON);
                cmd.args(["-c", LEAKER, &l.mb_per_s.to_string(), &l.max_mb.to_string()])
                    .stdin(Stdio::null());
                let log = self.log_file("leak")?;
                cmd.stdout(log.try_clone()?).stderr(log);
                let p = Proc::spawn("leak", &mut cmd, libc::SIGTERM, libc::SIGKILL)?;
                let pid = p.pid();
                self.leakers.insert(idx, p);
                format!(
                    "leaking process started (pid {pid}, {} MiB/s up to {} MiB)",
                    l.mb_per_s, l.max_mb
                )
            }
            (FaultAction::Leak(_), true) => {
                if let Some(mut p) = self.leakers.remove(&idx) {
                    p.stop(Duration::from_secs(2));
                }
                "leaking process stopped".to_string()
            }
            (FaultAction::Start(_), true) => String::new(),
        })
    }

    fn drive(&mut self) -> anyhow::Result<()> {
        let bin = self
            .workdir
            .as_ref()
            .map(|w| w.0.join("bin"))
            .context("no work folder")?;
        std::fs::create_dir_all(&bin)?;
        // Started through a symlink named `client`: the capture sees a `client` process.
        let client = bin.join("client");
        std::os::unix::fs::symlink(&self.exe, &client)
            .with_context(|| format!("linking {}", client.display()))?;
        let spec_path = bin.join("traffic.json");
        std::fs::write(&spec_path, serde_json::to_string(&self.sc.traffic)?)?;
        let report_path = self.out.join("loadgen.json");
        let mut cmd = Command::new(&client);
        cmd.args(["scenario", "loadgen", "--spec"])
            .arg(&spec_path)
            .arg("--report")
            .arg(&report_path)
            .stdin(Stdio::null());
        let log = self.log_file("client")?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let mut timeline: Vec<(Duration, usize, bool)> = Vec::new();
        for (i, f) in self.sc.faults.iter().enumerate() {
            timeline.push((f.at.0, i, false));
            if let Some(d) = f.for_ {
                timeline.push((f.at.0 + d.0, i, true));
            }
        }
        timeline.sort_by_key(|(t, i, undo)| (*t, *undo, *i));
        let duration = self.sc.traffic.duration.0;
        println!(
            "traffic: {} for {} ({} faults)",
            match self.sc.traffic.rate {
                Some(r) => format!("{r} req/s over {} connections", self.sc.traffic.concurrency),
                None => format!("{} connections, closed loop", self.sc.traffic.concurrency),
            },
            self.sc.traffic.duration,
            self.sc.faults.len()
        );
        let start = Instant::now();
        self.loadgen = Some(Proc::spawn(
            "client",
            &mut cmd,
            libc::SIGTERM,
            libc::SIGKILL,
        )?);
        let mut next = 0;
        loop {
            self.abort.check()?;
            let now = start.elapsed();
            while next < timeline.len() && timeline[next].0 <= now {
                let (_, idx, undo) = timeline[next];
                next += 1;
                let what = self.apply(idx, undo)?;
                let t = start.elapsed().as_secs_f64();
                println!("  t+{t:5.1}s  {what}");
                self.fault_log.push(FaultLog {
                    t_s: t,
                    what,
                    wall_ns: wall_ns(),
                });
            }
            for s in &mut self.services {
                if let Some(e) = s.proc.as_mut().and_then(Proc::try_wait) {
                    let msg = format!("{} exited on its own ({e})", s.spec.name);
                    println!("  t+{:5.1}s  {msg}", start.elapsed().as_secs_f64());
                    self.fault_log.push(FaultLog {
                        t_s: start.elapsed().as_secs_f64(),
                        what: msg,
                        wall_ns: wall_ns(),
                    });
                    s.proc = None;
                }
            }
            if let Some(e) = self.loadgen.as_mut().and_then(Proc::try_wait) {
                self.loadgen = None;
                if !e.success() {
                    anyhow::bail!(
                        "the load generator failed ({e})\n{}",
                        self.log_tail("client")
                    );
                }
                break;
            }
            if now > duration + Duration::from_secs(60) {
                anyhow::bail!("the load generator did not finish within 60 s of the traffic's end");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Undo what is still in effect (a `for` reaching past the traffic's end).
        while next < timeline.len() {
            let (_, idx, undo) = timeline[next];
            next += 1;
            if undo {
                let what = self.apply(idx, true)?;
                self.fault_log.push(FaultLog {
                    t_s: start.elapsed().as_secs_f64(),
                    what,
                    wall_ns: wall_ns(),
                });
            }
        }
        std::fs::write(
            self.out.join("faults.json"),
            serde_json::to_string_pretty(&self.fault_log)?,
        )?;
        let text = std::fs::read_to_string(&report_path)
            .with_context(|| format!("reading {}", report_path.display()))?;
        let r: serde_json::Value = serde_json::from_str(&text)?;
        println!(
            "client: {} requests, {} errors ({} connection failures), p50 {:.1} ms, p99 {:.1} ms, statuses {}",
            r["requests"], r["errors"], r["connect_errors"],
            r["latency"]["p50_ms"].as_f64().unwrap_or(0.0),
            r["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
            r["by_status"]
        );
        Ok(())
    }

    fn run_all(&mut self, t0: Instant) -> anyhow::Result<Vec<(String, f64)>> {
        let mut timings = vec![("preflight".to_string(), t0.elapsed().as_secs_f64())];
        let mut t = Instant::now();
        let lap = |name: &str, t: &mut Instant, timings: &mut Vec<(String, f64)>| {
            timings.push((name.to_string(), t.elapsed().as_secs_f64()));
            *t = Instant::now();
        };
        println!("scenario {}: {}", self.sc.name, self.sc.description.trim());
        println!("starting services:");
        for i in 0..self.services.len() {
            self.setup_service(i)?;
            self.start_service(i, true)?;
        }
        lap("start services", &mut t, &mut timings);
        self.start_capture()?;
        lap("start capture", &mut t, &mut timings);
        self.drive()?;
        lap("traffic + faults", &mut t, &mut timings);
        // Let the last responses and closes reach the capture, then seal it.
        self.abort.sleep(Duration::from_millis(500))?;
        self.stop_capture()?;
        lap("stop capture", &mut t, &mut timings);
        Ok(timings)
    }

    /// Stops everything, in reverse order of start. Idempotent.
    fn shutdown(&mut self) {
        if let Some(mut p) = self.loadgen.take() {
            p.stop(Duration::from_secs(2));
        }
        for (_, mut p) in std::mem::take(&mut self.leakers) {
            p.stop(Duration::from_secs(2));
        }
        for (_, mut r) in std::mem::take(&mut self.rules) {
            if let Err(e) = r.remove() {
                eprintln!("retrace scenario: {e:#}");
            }
        }
        if self.capture.is_some() {
            if let Err(e) = self.stop_capture() {
                eprintln!("retrace scenario: {e:#}");
            }
        }
        for s in self.services.iter_mut().rev() {
            if let Some(mut p) = s.proc.take() {
                p.stop(Duration::from_secs(10));
            }
        }
        if self.keep_workdir {
            if let Some(mut w) = self.workdir.take() {
                println!("work folder kept: {}", w.0.display());
                w.0 = PathBuf::new();
                std::mem::forget(w);
            }
        } else {
            self.workdir = None;
        }
    }
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

/// A process that grows by `mb_per_s` MiB per second (pages touched) up to `max_mb`.
const LEAKER: &str = r#"
import sys, time
rate, cap = int(sys.argv[1]), int(sys.argv[2])
keep = []
while True:
    if len(keep) < cap:
        keep.append(b"x" * (1 << 20))
        time.sleep(1.0 / max(rate, 1))
    else:
        time.sleep(0.5)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sees_a_listener_without_connecting() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert!(listening(port));
        drop(l);
        assert!(!listening(port));
    }

    #[test]
    fn finds_programs() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("/nonexistent/x").is_none());
        assert!(lookup_user("root").is_ok_and(|(u, _)| u == 0));
        assert!(lookup_user("no-such-user-here").is_err());
    }
}
