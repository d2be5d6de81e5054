//! `retrace export chrome CAPTURE... --from T --to T --out trace.json`: the requests of a time
//! window as a Chrome trace (the Trace Event Format `chrome://tracing`, Perfetto and
//! Speedscope open), one timeline per process and thread.
//!
//! - Every span of the analysis (a request's CLIENT end in the caller's thread, its SERVER end
//!   in the callee's) is a complete event (`"ph":"X"`) on its process (`pid`) and thread
//!   (`tid`): `name` the span's name (`GET /users/{id}`), `cat` the protocol, `ts` and `dur`
//!   in microseconds from the start of the window (`otherData.origin`), `args` the status, the peer service, the kind, the target, the trace and
//!   span ids, and `error` when it failed. A span with no response has `dur` 0 and
//!   `args.no_response`.
//! - Flow events (`"ph":"s"` then `"ph":"f"` with `"bp":"e"`, one id each) go from a span's
//!   parent to it, where the analysis linked them: a CLIENT span to the SERVER span of the same
//!   exchange, and a SERVER span to the CLIENT spans of the calls it made (its trace's
//!   children). The start sits in the parent's slice, the end at the child's start.
//! - Metadata events (`"ph":"M"`) name each process (`service (node pid N)`) and thread.
//!
//! `pid` is the process id when the analysis has one node; with several, node `i` (in the
//! analysis' order, from 0) adds `i * 10_000_000` (Linux pids stay below 2^22), so that the
//! processes of two nodes do not merge. The file is written as it goes, strings escaped by
//! `serde_json`; events come in a fixed order (metadata, then spans in request order, then
//! flows), so the same capture gives the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use retrace_analyze::{Analysis, SpanKind, SpanView};

use super::otlp::json_str;
use crate::cmd::analyze::Input;

/// Arguments of `retrace export chrome`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    /// File to write (`-`: standard output).
    #[arg(long, short, value_name = "FILE.json")]
    out: PathBuf,
}

/// Runs `retrace export chrome`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let analysis = args.input.analyze()?;
    let t1 = Instant::now();
    let stats = super::write_output(&args.out, |w| write_chrome(&analysis, w))?;
    if !args.input.quiet {
        eprintln!(
            "{} spans on {} threads of {} processes, {} flows, written to {} \
             (analysis {:.2} s, export {:.2} s)",
            stats.spans,
            stats.threads,
            stats.processes,
            stats.flows,
            args.out.display(),
            (t1 - t0).as_secs_f64(),
            t1.elapsed().as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`write_chrome`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChromeStats {
    /// Complete events (spans).
    pub spans: u64,
    /// Flow arrows (pairs of `s` and `f`).
    pub flows: u64,
    /// Processes named.
    pub processes: u64,
    /// Threads named.
    pub threads: u64,
}

/// `ns` as the format's microseconds, exactly (three decimals).
struct Micros(u64);

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// Writes the trace of `a`.
pub fn write_chrome(a: &Analysis, w: &mut dyn Write) -> std::io::Result<ChromeStats> {
    let node_index: HashMap<&str, u64> = a
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u64))
        .collect();
    let several = a.nodes.len() > 1;
    let pid_of = |s: &SpanView<'_>| -> u64 {
        let i = if several {
            node_index.get(s.node).copied().unwrap_or(0)
        } else {
            0
        };
        i * 10_000_000 + u64::from(s.pid)
    };
    // Processes and threads, named after the first span seen on them.
    let mut processes: BTreeMap<u64, (String, String, u32)> = BTreeMap::new();
    let mut threads: BTreeMap<(u64, u32), ()> = BTreeMap::new();
    for s in a.requests.spans() {
        let pid = pid_of(&s);
        processes
            .entry(pid)
            .or_insert_with(|| (s.service.to_string(), s.node.to_string(), s.pid));
        threads.insert((pid, s.tid), ());
    }
    let mut stats = ChromeStats {
        processes: processes.len() as u64,
        threads: threads.len() as u64,
        ..Default::default()
    };
    w.write_all(b"{\"displayTimeUnit\":\"ms\",\"otherData\":{\"generator\":")?;
    json_str(w, concat!("retrace ", env!("CARGO_PKG_VERSION")))?;
    w.write_all(b",\"nodes\":")?;
    json_str(w, &a.nodes.join(","))?;
    // Times are relative to the start of the window (f64 microseconds since the epoch would
    // lose the nanoseconds).
    let origin = a.window_start_ns;
    w.write_all(b",\"origin\":")?;
    json_str(w, &retrace_analyze::format_wall(origin))?;
    w.write_all(b"},\"traceEvents\":[\n")?;
    let micros = |ns: u64| Micros(ns.saturating_sub(origin));
    let mut first = true;
    let mut sep = |w: &mut dyn Write| -> std::io::Result<()> {
        if !first {
            w.write_all(b",\n")?;
        }
        first = false;
        Ok(())
    };
    for (pid, (service, node, real)) in &processes {
        sep(w)?;
        write!(
            w,
            "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{pid},\"args\":{{\"name\":"
        )?;
        json_str(w, &format!("{service} ({node} pid {real})"))?;
        w.write_all(b"}}")?;
    }
    for (pid, tid) in threads.keys() {
        sep(w)?;
        write!(
            w,
            "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{pid},\"tid\":{tid},\
             \"args\":{{\"name\":\"tid {tid}\"}}}}"
        )?;
    }
    // Spans, each remembered by id for the flows: (pid, tid, start, end) in µs.
    let mut slices: HashMap<u64, (u64, u32, u64, u64)> = HashMap::new();
    let mut name = String::new();
    for s in a.requests.spans() {
        let pid = pid_of(&s);
        let start = s.start_ns;
        let end = start + s.duration_ns.unwrap_or(0);
        slices.insert(s.span_id, (pid, s.tid, start, end));
        sep(w)?;
        name.clear();
        retrace_analyze::write_span_name(&mut name, s.protocol, s.method, s.route);
        w.write_all(b"{\"ph\":\"X\",\"name\":")?;
        json_str(w, &name)?;
        w.write_all(b",\"cat\":")?;
        json_str(w, s.protocol)?;
        write!(
            w,
            ",\"pid\":{pid},\"tid\":{},\"ts\":{},\"dur\":{},\"args\":{{\"status\":",
            s.tid,
            micros(start),
            Micros(end - start)
        )?;
        json_str(w, s.status)?;
        w.write_all(b",\"peer\":")?;
        json_str(w, s.peer)?;
        w.write_all(b",\"kind\":")?;
        json_str(w, s.kind.name())?;
        w.write_all(b",\"target\":")?;
        json_str(w, s.target)?;
        write!(
            w,
            ",\"trace_id\":\"{:032x}\",\"span_id\":\"{:016x}\"",
            s.trace_id, s.span_id
        )?;
        if s.error {
            w.write_all(b",\"error\":true")?;
        }
        if s.duration_ns.is_none() {
            w.write_all(b",\"no_response\":true")?;
        }
        w.write_all(b"}}")?;
        stats.spans += 1;
    }
    // Flows, parent to child, in the order of the children.
    let mut id = 0u64;
    for s in a.requests.spans() {
        let Some(parent) = s.parent_span_id.and_then(|p| slices.get(&p)) else {
            continue;
        };
        let Some(&(cpid, ctid, cstart, _)) = slices.get(&s.span_id) else {
            continue;
        };
        let &(ppid, ptid, pstart, pend) = parent;
        id += 1;
        let kind = match s.kind {
            SpanKind::Server => "exchange",
            SpanKind::Client => "call",
        };
        // The start inside the parent's slice, as the format binds it there.
        let at = cstart.clamp(pstart, pend.max(pstart));
        sep(w)?;
        write!(
            w,
            "{{\"ph\":\"s\",\"name\":\"{kind}\",\"cat\":\"link\",\"id\":{id},\"pid\":{ppid},\
             \"tid\":{ptid},\"ts\":{}}}",
            micros(at)
        )?;
        sep(w)?;
        write!(
            w,
            "{{\"ph\":\"f\",\"bp\":\"e\",\"name\":\"{kind}\",\"cat\":\"link\",\"id\":{id},\
             \"pid\":{cpid},\"tid\":{ctid},\"ts\":{}}}",
            micros(cstart)
        )?;
        stats.flows += 1;
    }
    w.write_all(b"\n]}\n")?;
    Ok(stats)
}
