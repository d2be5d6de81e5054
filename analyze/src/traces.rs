//! Zero-code distributed traces: every request row has a CLIENT span (its caller's end), a
//! SERVER span (its callee's end) or both, joined by their connection. This module gives each
//! row's top span its parent, the SERVER span of another row, by the first rule that applies:
//!
//! 1. `header`: the call carries the trace id (W3C `traceparent`, B3) or `X-Request-ID` of an
//!    inbound request of the same process that was in progress when the call was written
//!    (bounded by that request's own duration, so an id seen again later, or on a
//!    long-lived connection, does not merge unrelated traces);
//! 2. `thread`: the thread that wrote the call was serving exactly one inbound request (it had
//!    read it and not yet written its response). Several in progress on one thread are
//!    pipelined requests of one socket, or requests handed to a worker thread by another
//!    (read by one thread, answered by this one), served in order: the call belongs to the
//!    one answered next. Several from different sockets read by this thread itself make an
//!    event loop: the rule does not apply;
//! 3. `proxy`: an event-loop proxy (nginx) with no header: the one inbound request of the same
//!    process with the same method and target that started before the call and was answered
//!    after it; none is linked when several could be (`ambiguous`).
//!
//! Then [`summarize`] turns the linked table into traces (`traces.csv`), the coverage figures
//! and, per endpoint, where the time went.

use std::collections::{BTreeMap, VecDeque};

use crate::engine::{Interner, Map};
use crate::model::{
    ends_of, span_name, DownstreamTime, Ends, Link, RequestRow, TimeBreakdown, TraceCoverage,
    TraceSummary, EMPTY, NO_LATENCY, NO_ROW,
};

/// What the linker needs of a row beyond its [`SpanFacts`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LinkIn {
    /// Thread that wrote the SERVER span's response, 0 when unknown.
    pub server_tid_out: u32,
    /// The server's socket (side index), for pipelined requests; `u32::MAX` when none.
    pub server_socket: u32,
    /// `X-Request-ID` of the request (string id), [`EMPTY`] when none.
    pub request_id: u32,
}

/// Threads started in processes with sockets: (node string id, pid, tid) → (wall ns, the
/// thread that started it), in time order.
pub(crate) type Spawns = Map<(u32, u32, u32), Vec<(u64, u32)>>;

/// How many thread starts the thread rule follows back from a call.
const SPAWN_DEPTH: usize = 4;

/// How long after an inbound request started a call may still inherit its header id when the
/// inbound request was never answered.
const HEADER_WINDOW_NS: u64 = 60_000_000_000;

/// At most this many inbound requests in progress are collected for one call (event loops
/// with more in flight are ambiguous for the thread rule anyway).
const THREAD_SCAN: usize = 16;

/// At most this many inbound requests of a timeline are stepped over for one call (a request
/// in progress for long, e.g. a long poll, on a busy event loop).
const WALK: usize = 4096;

/// A SERVER span, as the linker sees it (32 bytes: there is one per inbound request in
/// flight of every process that made calls, in each timeline).
#[derive(Clone, Copy)]
struct Inbound {
    row: u32,
    socket: u32,
    start: u64,
    /// End (first response byte), `u64::MAX` when none was seen.
    end: u64,
    /// The latest end of this request and of every one started before it in its group.
    reach: u64,
}

impl Inbound {
    /// Row `row`'s SERVER span (`reach` is set by [`Timelines::add`]).
    fn of(rows: &[RequestRow], links: &[LinkIn], row: u32) -> Self {
        let r = &rows[row as usize];
        let start = r.spans.server_ts_ns;
        Self {
            row,
            socket: links
                .get(row as usize)
                .map_or(u32::MAX, |l| l.server_socket),
            start,
            end: end_of(start, r.server_latency_ns),
            reach: 0,
        }
    }
}

fn end_of(start: u64, latency: u64) -> u64 {
    if latency == NO_LATENCY {
        u64::MAX
    } else {
        start.saturating_add(latency)
    }
}

/// Inbound requests grouped by a key (a thread, a header id, a method and target), each
/// group in order of start, kept only while they can still be in progress: the linker sweeps
/// the rows in time order, adding each inbound request when it starts ([`Timelines::add`]) and
/// letting go of those answered before the calls reached ([`Timelines::reached`]), so that
/// its memory follows the requests in flight, not the capture's length.
struct Timelines<K> {
    groups: Map<K, VecDeque<Inbound>>,
    /// Calls the sweep reached since the last eviction.
    calls: u32,
    /// The end of an inbound request never answered that has a next one in its group: it was
    /// in progress until that one started (its thread or process moved on). By (row, which
    /// of the row's keys).
    unanswered_ends: Map<(u32, u8), u64>,
}

impl<K: Eq + Copy + std::hash::Hash> Timelines<K> {
    /// Empty timelines for the inbound requests `inbound` (rows in order of start), whose
    /// keys are `keys(row)`: notes the end of each one never answered.
    fn new<const N: usize>(
        inbound: &[u32],
        rows: &[RequestRow],
        keys: impl Fn(u32) -> [Option<K>; N],
    ) -> Self {
        let mut last_unanswered: Map<K, (u32, u8)> = Map::default();
        let mut unanswered_ends = Map::default();
        for &row in inbound {
            let r = &rows[row as usize];
            for (slot, key) in keys(row).into_iter().enumerate() {
                let Some(key) = key else { continue };
                let start = r.spans.server_ts_ns;
                if let Some(prev) = last_unanswered.remove(&key) {
                    unanswered_ends.insert(prev, start);
                }
                if r.server_latency_ns == NO_LATENCY {
                    last_unanswered.insert(key, (row, slot as u8));
                }
            }
        }
        Self {
            groups: Map::default(),
            calls: 0,
            unanswered_ends,
        }
    }

    /// Adds inbound request `s` under `key` (its `slot`-th key): it started at or after every
    /// one added before.
    fn add(&mut self, key: K, slot: u8, mut s: Inbound) {
        if s.end == u64::MAX {
            if let Some(&end) = self.unanswered_ends.get(&(s.row, slot)) {
                s.end = end;
            }
        }
        let group = self.groups.entry(key).or_default();
        s.reach = group.back().map_or(s.end, |b| b.reach.max(s.end));
        group.push_back(s);
    }

    /// The sweep reached a call at `t` (calls come in time order). Every [`EVICT_EVERY`]
    /// calls, lets go of the inbound requests that no call at `t` or later can find in
    /// progress (they, and every one before them in their group, were answered before `t`).
    fn reached(&mut self, t: u64) {
        self.calls += 1;
        if self.calls < EVICT_EVERY {
            return;
        }
        self.calls = 0;
        self.groups.retain(|_, group| {
            while group.front().is_some_and(|s| s.reach < t) {
                group.pop_front();
            }
            !group.is_empty()
        });
    }

    fn get(&self, k: &K) -> Option<&VecDeque<Inbound>> {
        self.groups.get(k)
    }
}

/// How many calls a sweep reaches between two evictions of its [`Timelines`] (and how many
/// rows [`summarize`] reads between two of its own).
const EVICT_EVERY: u32 = 4096;

/// The inbound requests of a sweep, in order of start, handed out as the calls reach them.
struct Arrivals<'a> {
    inbound: &'a [u32],
    rows: &'a [RequestRow],
    next: usize,
}

impl<'a> Arrivals<'a> {
    fn new(inbound: &'a [u32], rows: &'a [RequestRow]) -> Self {
        Self {
            inbound,
            rows,
            next: 0,
        }
    }

    /// The rows of the inbound requests started at or before `t` not handed out yet (a
    /// step from where the last call stopped: calls are dense, a search would cost more).
    fn until(&mut self, t: u64) -> &'a [u32] {
        let from = self.next;
        while let Some(&j) = self.inbound.get(self.next) {
            if self.rows[j as usize].spans.server_ts_ns > t {
                break;
            }
            self.next += 1;
        }
        &self.inbound[from..self.next]
    }
}

/// Inbound requests of one group in progress at `t` (started at or before, answered at or
/// after), the latest first, at most `cap`. The walk back stops where no earlier request can
/// still be in progress (`reach`), so a thread serving one request at a time costs a step or
/// two. False when the walk was cut short ([`WALK`] steps): there may be more.
fn in_progress(group: &VecDeque<Inbound>, t: u64, cap: usize, out: &mut Vec<Inbound>) -> bool {
    out.clear();
    for (step, s) in group.iter().rev().filter(|s| s.start <= t).enumerate() {
        if s.reach < t {
            return true;
        }
        if step >= WALK {
            return false;
        }
        if s.end >= t {
            out.push(*s);
            if out.len() >= cap {
                return true;
            }
        }
    }
    true
}

/// Two inbound requests of the same method and target read closer together than this are
/// not told apart by their order: the proxy rule links neither's call.
const SAME_TIME_NS: u64 = 100_000;

/// Where one row's top span hangs, as [`link`] found it.
#[derive(Clone, Copy)]
struct Top {
    parent: u32,
    link: Link,
    confidence: u8,
}

/// What [`link`] found, to be written into the rows it read ([`Linked::apply`]).
pub(crate) struct Linked {
    /// The rows whose top span was given a parent, and where it hangs.
    tops: Vec<(u32, Top)>,
    coverage: TraceCoverage,
}

impl Linked {
    /// Sets `parent`, `link`, `confidence` and `root` of every row's span facts (the rows
    /// [`link`] read, in the same order); returns the coverage.
    pub(crate) fn apply(self, rows: &mut [RequestRow]) -> TraceCoverage {
        for (i, top) in self.tops {
            let Some(r) = rows.get_mut(i as usize) else {
                continue;
            };
            r.spans.parent = top.parent;
            r.spans.link = top.link;
            r.spans.confidence = top.confidence;
        }
        set_roots(rows);
        self.coverage
    }
}

/// Links the rows (in time order; `links[i]` belongs to `rows[i]`) without writing them,
/// so that it can run beside what else reads them: see [`Linked::apply`]. One sweep of the
/// calls in time order for the header and thread rules, a second for the proxy rule over the
/// calls left; each keeps only the inbound requests that can still be in progress.
pub(crate) fn link(
    rows: &[RequestRow],
    ends: &[Ends],
    links: &[LinkIn],
    spawns: &Spawns,
) -> Linked {
    let e = |r: &RequestRow| ends_of(ends, r);
    let mut cov = TraceCoverage::default();
    // The calls linked (a row's own facts stand for the others).
    let mut tops: Vec<(u32, Top)> = Vec::new();
    let mut cp = crate::input::Checkpoints::new();
    // Processes that made calls: only their inbound requests can be parents.
    let mut callers: Vec<(u32, u32)> = rows
        .iter()
        .filter(|r| r.spans.client())
        .map(|r| e(r).client_process())
        .collect();
    callers.sort_unstable();
    callers.dedup();
    // Their inbound requests, in order of start (the server's clock); the callers that served
    // some of them.
    let mut served = vec![false; callers.len()];
    let mut inbound: Vec<u32> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.spans.server() && {
                let at = callers.binary_search(&e(r).server_process());
                if let Ok(k) = at {
                    served[k] = true;
                }
                at.is_ok()
            }
        })
        .map(|(i, _)| i as u32)
        .collect();
    // Rows are in time order, and a server reads a request after its client wrote it: mostly
    // sorted already, and the sort of the indices alone is as fast as that of (time, index)
    // pairs, in a quarter of the memory.
    inbound.sort_by_key(|&i| rows[i as usize].spans.server_ts_ns);
    let servers: Vec<(u32, u32)> = callers
        .iter()
        .zip(&served)
        .filter(|(_, &s)| s)
        .map(|(c, _)| *c)
        .collect();
    drop(served);
    let thread_key = |i: u32| {
        let r = &rows[i as usize];
        let l = links.get(i as usize).copied().unwrap_or_default();
        let worker = if l.server_tid_out != 0 {
            l.server_tid_out
        } else {
            r.spans.server_tid
        };
        let (node, pid) = e(r).server_process();
        [(worker != 0).then_some((node, pid, worker))]
    };
    let header_keys = |i: u32| {
        let (r, l) = (
            &rows[i as usize],
            links.get(i as usize).copied().unwrap_or_default(),
        );
        let (node, pid) = e(r).server_process();
        [r.trace_id(), l.request_id].map(|id| (id != EMPTY).then_some((node, pid, id)))
    };
    let span = |row| Inbound::of(rows, links, row);
    let mut by_thread = Timelines::new(&inbound, rows, thread_key);
    let mut by_header = Timelines::new(&inbound, rows, header_keys);
    // A request read by one thread and answered by another (handed to a worker).
    let handed_off = |s: &Inbound| {
        let tid = links.get(s.row as usize).map_or(0, |l| l.server_tid_out);
        tid != 0 && tid != rows[s.row as usize].spans.server_tid
    };
    cp.at("links: inbound requests in order");

    // Calls in time order (the rows'), so that the proxy rule takes inbound requests first
    // come, first served.
    let calls = (0..rows.len() as u32).filter(|&i| rows[i as usize].spans.client());
    let mut found = Vec::new();
    // Calls left to the proxy rule.
    let mut for_proxy: Vec<u32> = Vec::new();
    let mut arrivals = Arrivals::new(&inbound, rows);
    for i in calls {
        let r = &rows[i as usize];
        let (t, trace, f) = (r.ts_ns, r.trace_id(), r.spans);
        let (node, pid) = e(r).client_process();
        let l = links.get(i as usize).copied().unwrap_or_default();
        for &j in arrivals.until(t) {
            let [thread] = thread_key(j);
            if let Some(k) = thread {
                by_thread.add(k, 0, span(j));
            }
            for (slot, k) in header_keys(j).into_iter().enumerate() {
                if let Some(k) = k {
                    by_header.add(k, slot as u8, span(j));
                }
            }
        }
        by_thread.reached(t);
        by_header.reached(t);
        cov.client_spans += 1;
        if servers.binary_search(&(node, pid)).is_err() {
            continue; // a process that served nothing: its calls are roots
        }
        cov.client_spans_in_servers += 1;
        let not_me = |s: &Inbound| s.row != i;

        // 1. header
        let mut parent: Option<(u32, Link, u8)> = None;
        for id in [trace, l.request_id] {
            if id == EMPTY || parent.is_some() {
                continue;
            }
            if let Some(tl) = by_header.get(&(node, pid, id)) {
                let _ = in_progress(tl, t, THREAD_SCAN, &mut found);
                parent = found
                    .iter()
                    .filter(|s| not_me(s))
                    .find(|s| s.end != u64::MAX || t - s.start <= HEADER_WINDOW_NS)
                    .map(|s| (s.row, Link::Header, 100));
            }
        }

        // 2. thread
        found.clear();
        if parent.is_none() && f.client_tid != 0 {
            if let Some(tl) = by_thread.get(&(node, pid, f.client_tid)) {
                // Two in progress on different sockets, not handed off: an event loop (the
                // usual case that fails the rule), known without collecting more.
                let mut complete = in_progress(tl, t, 3, &mut found);
                found.retain(not_me);
                let loop_like = found.len() >= 2
                    && found[0].socket != found[1].socket
                    && !(handed_off(&found[0]) && handed_off(&found[1]));
                if !loop_like && complete && found.len() >= 2 {
                    complete = in_progress(tl, t, THREAD_SCAN, &mut found);
                    found.retain(not_me);
                }
                parent = match found.as_slice() {
                    _ if !complete => None,
                    [] => None,
                    [one] => Some((one.row, Link::Thread, 100)),
                    many => {
                        let pipelined = many.iter().all(|s| s.socket == many[0].socket);
                        let all_handed_off = many.iter().all(handed_off);
                        (pipelined || all_handed_off).then(|| {
                            let next = many
                                .iter()
                                .min_by_key(|s| (s.end, s.start, s.row))
                                .map_or(NO_ROW, |s| s.row);
                            (next, Link::Thread, if pipelined { 100 } else { 90 })
                        })
                    }
                };
            }
            // The thread serves nothing: was it started by a thread serving one request, to
            // do that request's work (a worker thread per request), the call within it?
            if found.is_empty() && parent.is_none() {
                parent = spawned_for(
                    &by_thread,
                    spawns,
                    (node, pid),
                    f.client_tid,
                    t,
                    i,
                    &mut found,
                );
            }
        }

        match parent.filter(|p| p.0 != NO_ROW) {
            Some(p) => set_parent(&mut tops, &mut cov, i, p),
            None => for_proxy.push(i),
        }
    }
    drop((by_thread, by_header));

    cp.at("links: header and thread rules");
    // 3. proxy, for the calls left, in time order: inbound requests by process, method and
    // target only where such a call exists.
    // Inserted one by one, not collected: the keys repeat (a proxy forwards the same few
    // targets), and a map sized for every call left was 19 MiB at the analysis' peak.
    let mut wanted: Map<(u32, u32, u32, u32), ()> = Map::default();
    for &i in &for_proxy {
        let r = &rows[i as usize];
        let (node, pid) = e(r).client_process();
        wanted.insert((node, pid, r.method, r.target), ());
    }
    let call_key = |i: u32| {
        let r = &rows[i as usize];
        let (node, pid) = e(r).server_process();
        let key = (node, pid, r.method, r.target);
        [wanted.contains_key(&key).then_some(key)]
    };
    let mut by_call = Timelines::new(&inbound, rows, call_key);
    let mut proxied = vec![false; rows.len()];
    let mut arrivals = Arrivals::new(&inbound, rows);
    for &i in &for_proxy {
        let r = &rows[i as usize];
        let (t, latency) = (r.ts_ns, r.latency_ns);
        let (node, pid) = e(r).client_process();
        for &j in arrivals.until(t) {
            if let [Some(k)] = call_key(j) {
                by_call.add(k, 0, span(j));
            }
        }
        by_call.reached(t);
        let Some(tl) = by_call.get(&(node, pid, r.method, r.target)) else {
            continue;
        };
        let call_end = end_of(t, latency);
        let complete = in_progress(tl, t, usize::MAX, &mut found);
        found.retain(|s| {
            s.row != i && !proxied[s.row as usize] && (call_end == u64::MAX || s.end >= call_end)
        });
        // First come, first served: the earliest inbound request not yet proxied, unless
        // another was read at the same moment (their order tells nothing).
        found.sort_unstable_by_key(|s| (s.start, s.row));
        let parent = match found.as_slice() {
            _ if !complete => {
                cov.ambiguous += 1;
                None
            }
            [] => None,
            [one] => Some((one.row, 95)),
            [first, second, ..] if second.start - first.start >= SAME_TIME_NS => {
                Some((first.row, (100 / found.len()).max(50) as u8))
            }
            _ => {
                cov.ambiguous += 1;
                None
            }
        };
        if let Some((p, confidence)) = parent {
            proxied[p as usize] = true;
            set_parent(&mut tops, &mut cov, i, (p, Link::Proxy, confidence));
        }
    }
    drop((by_call, inbound));
    cp.at("links: proxy rule");

    for r in rows.iter() {
        if r.spans.server() {
            cov.server_spans += 1;
            if r.spans.client() {
                cov.server_spans_with_client += 1;
                cov.server_spans_linked += 1;
            }
        }
    }
    // Links by rule, counted by `set_parent` in `cov.by_link` under "" until now.
    if cov.server_spans_linked > 0 {
        cov.by_link
            .insert(Link::Connection.name().into(), cov.server_spans_linked);
    }
    cov.spans = cov.client_spans + cov.server_spans;
    Linked {
        tops,
        coverage: cov,
    }
}

fn set_parent(
    tops: &mut Vec<(u32, Top)>,
    cov: &mut TraceCoverage,
    i: u32,
    (parent, link, confidence): (u32, Link, u8),
) {
    tops.push((
        i,
        Top {
            parent,
            link,
            confidence,
        },
    ));
    cov.client_spans_linked += 1;
    match cov.by_link.get_mut(link.name()) {
        Some(n) => *n += 1,
        None => {
            cov.by_link.insert(link.name().to_string(), 1);
        }
    }
}

/// Leaves every row a trace of its own (linking skipped).
pub(crate) fn unlinked(rows: &mut [RequestRow]) {
    for (i, r) in rows.iter_mut().enumerate() {
        r.spans.root = i as u32;
    }
}

/// The inbound request a call belongs to when its thread was started (directly, or through
/// threads started by it) by a thread that was serving exactly that request, which is still
/// in progress at the call.
fn spawned_for(
    by_thread: &Timelines<(u32, u32, u32)>,
    spawns: &Spawns,
    (node, pid): (u32, u32),
    tid: u32,
    t: u64,
    me: u32,
    found: &mut Vec<Inbound>,
) -> Option<(u32, Link, u8)> {
    let (mut tid, mut at) = (tid, t);
    for _ in 0..SPAWN_DEPTH {
        // The latest start of this thread id before `at` (ids are reused).
        let starts = spawns.get(&(node, pid, tid))?;
        let &(started, by) = starts.iter().rev().find(|&&(s, _)| s <= at)?;
        if let Some(tl) = by_thread.get(&(node, pid, by)) {
            if !in_progress(tl, started, THREAD_SCAN, found) {
                return None;
            }
            found.retain(|s| s.row != me && s.end >= t);
            match found.as_slice() {
                [] => {}
                [one] => return Some((one.row, Link::Thread, 90)),
                _ => return None,
            }
        }
        (tid, at) = (by, started);
    }
    None
}

/// Sets every row's `root`, following parents; a cycle (impossible with consistent clocks,
/// conceivable across nodes whose clocks disagree) is cut where it closes.
fn set_roots(rows: &mut [RequestRow]) {
    const TODO: u8 = 0;
    const BUSY: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![TODO; rows.len()];
    let mut path: Vec<u32> = Vec::new();
    for start in 0..rows.len() {
        if state[start] == DONE {
            continue;
        }
        path.clear();
        let mut cur = start as u32;
        let root = loop {
            match state[cur as usize] {
                DONE => break rows[cur as usize].spans.root,
                BUSY => {
                    // A cycle: cut it at `cur`, which becomes a root.
                    let f = &mut rows[cur as usize].spans;
                    f.parent = NO_ROW;
                    f.link = Link::Root;
                    f.confidence = 0;
                    break cur;
                }
                _ => {}
            }
            state[cur as usize] = BUSY;
            path.push(cur);
            let p = rows[cur as usize].spans.parent;
            if p == NO_ROW || p as usize >= rows.len() {
                break cur;
            }
            cur = p;
        };
        for &k in &path {
            rows[k as usize].spans.root = root;
            state[k as usize] = DONE;
        }
    }
}

/// What [`summarize`] finds.
pub(crate) struct Summary {
    pub traces: Vec<TraceSummary>,
    pub breakdown: Vec<TimeBreakdown>,
    /// Linking was skipped.
    pub skipped: bool,
}

impl Summary {
    /// Nothing: linking was skipped.
    pub(crate) fn skipped() -> Self {
        Self {
            traces: Vec::new(),
            breakdown: Vec::new(),
            skipped: true,
        }
    }
}

/// An endpoint: (service, protocol, method, route), string ids.
type Endpoint = (u32, u32, u32, u32);

/// The distinct services of every trace: the first four of each in 16 bytes (free slots
/// hold [`EMPTY`], never a service), the rest of the few traces with more in a map by trace.
#[derive(Default)]
struct ServiceSets {
    first: Vec<[u32; 4]>,
    more: Map<u32, Vec<u32>>,
}

impl ServiceSets {
    /// A trace with no service yet.
    fn push(&mut self) {
        self.first.push([EMPTY; 4]);
    }

    /// Trace `t` has service `s` (not [`EMPTY`]).
    fn see(&mut self, t: u32, s: u32) {
        let Some(first) = self.first.get_mut(t as usize) else {
            return;
        };
        if first.contains(&s) {
            return;
        }
        if let Some(free) = first.iter_mut().find(|x| **x == EMPTY) {
            *free = s;
            return;
        }
        let more = self.more.entry(t).or_default();
        if !more.contains(&s) {
            more.push(s);
        }
    }

    /// The number of distinct services of trace `t`.
    fn len(&self, t: u32) -> u32 {
        let first = self
            .first
            .get(t as usize)
            .map_or(0, |f| f.iter().filter(|&&x| x != EMPTY).count() as u32);
        first + self.more.get(&t).map_or(0, |m| m.len() as u32)
    }
}

/// Traces, and where each endpoint's time went, from the linked rows (time order, `parent`
/// and `root` already rows of this order; `ends` the table's). The root spans' names are
/// interned into `strings`, the table's pool.
pub(crate) fn summarize(rows: &[RequestRow], ends: &[Ends], strings: &mut Interner) -> Summary {
    let e = |r: &RequestRow| ends_of(ends, r);
    // Traces in the order of their first row; `trace_of[root row]` is the index of its
    // trace (rows come in time order, so a trace's first row is usually its root). Summed up
    // in the summaries themselves (`duration_ns` holds the end until the end), their services
    // beside them.
    let mut traces: Vec<TraceSummary> = Vec::new();
    let mut services_of = ServiceSets::default();
    let mut trace_of: Vec<u32> = vec![u32::MAX; rows.len()];
    // Per parent row with calls: until when its SERVER span's time is covered by them (a
    // call made after the span ended adds nothing: the entry is let go, so that the map
    // holds the parents in progress, not every one); per endpoint: (requests, summed
    // duration, time covered by calls).
    let mut covered_until: Map<u32, u64> = Map::default();
    let server_end = |p: &RequestRow| end_of(p.spans.server_ts_ns, p.server_latency_ns);
    let mut endpoints: Map<Endpoint, (u64, u64, u64)> = Map::default();
    // Per (endpoint, downstream service, protocol): (calls, ns).
    let mut downstream: Map<(Endpoint, u32, u32), (u64, u64)> = Map::default();
    for (k, r) in rows.iter().enumerate() {
        let f = &r.spans;
        if k % EVICT_EVERY as usize == 0 {
            covered_until.retain(|&p, _| {
                rows.get(p as usize)
                    .is_some_and(|p| server_end(p) >= r.ts_ns)
            });
        }
        let Some(slot) = trace_of.get_mut(f.root as usize) else {
            continue;
        };
        if *slot == u32::MAX {
            *slot = traces.len() as u32;
            traces.push(TraceSummary {
                root: f.root,
                root_service_id: EMPTY,
                root_name_id: EMPTY,
                start_ns: u64::MAX,
                duration_ns: 0,
                spans: 0,
                services: 0,
                errors: 0,
            });
            services_of.push();
        }
        let a = &mut traces[*slot as usize];
        let mut see = |start: u64, latency: u64| {
            a.start_ns = a.start_ns.min(start);
            a.duration_ns = a.duration_ns.max(if latency == NO_LATENCY {
                start
            } else {
                start.saturating_add(latency)
            });
            a.spans += 1;
            a.errors += u32::from(r.error());
        };
        if f.client() {
            see(r.ts_ns, r.latency_ns);
        }
        if f.server() {
            see(f.server_ts_ns, r.server_latency_ns);
        }
        for s in [e(r).client, e(r).server] {
            if s != EMPTY {
                services_of.see(*slot, s);
            }
        }
        // A call linked under its parent's SERVER span: its time, clipped to the parent's.
        if f.parent != NO_ROW && f.client() && r.latency_ns != NO_LATENCY {
            if let Some(p) = rows.get(f.parent as usize) {
                if p.server_latency_ns != NO_LATENCY {
                    let p_start = p.spans.server_ts_ns;
                    let p_end = server_end(p);
                    let from = r.ts_ns.max(p_start);
                    let to = r.ts_ns.saturating_add(r.latency_ns).min(p_end);
                    let clipped = to.saturating_sub(from);
                    let ep = (e(p).server, e(p).protocol, p.method, p.route);
                    // Calls come in time order: the union of their intervals grows forward.
                    let until = covered_until.entry(f.parent).or_insert(0);
                    let from_new = from.max(*until);
                    if to > from_new {
                        endpoints.entry(ep).or_insert((0, 0, 0)).2 += to - from_new;
                    }
                    *until = (*until).max(to);
                    let d = downstream
                        .entry((ep, e(r).server, e(r).protocol))
                        .or_insert((0, 0));
                    d.0 += 1;
                    d.1 += clipped;
                }
            }
        }
    }
    drop(trace_of);

    // Root services (strings of the table already) and names (one new string each).
    let mut names: Map<(u32, u32, u32), u32> = Map::default();
    for (k, t) in traces.iter_mut().enumerate() {
        let Some(r) = rows.get(t.root as usize) else {
            continue; // never: every root is a row
        };
        let en = e(r);
        t.root_service_id = if r.spans.client() {
            en.client
        } else {
            en.server
        };
        t.root_name_id = *names
            .entry((en.protocol, r.method, r.route))
            .or_insert_with(|| {
                let name = span_name(
                    strings.get(en.protocol),
                    strings.get(r.method),
                    strings.get(r.route),
                );
                strings.intern(&name)
            });
        t.duration_ns = t.duration_ns.saturating_sub(t.start_ns);
        t.services = services_of.len(k as u32);
    }
    drop(services_of);
    traces.sort_unstable_by_key(|t| t.root);

    // Endpoints: every SERVER span with a duration.
    drop(covered_until);
    for r in rows.iter() {
        if !r.spans.server() || r.server_latency_ns == NO_LATENCY {
            continue;
        }
        let ep = endpoints
            .entry((e(r).server, e(r).protocol, r.method, r.route))
            .or_insert((0, 0, 0));
        ep.0 += 1;
        ep.1 += r.server_latency_ns;
    }
    let endpoints: BTreeMap<Endpoint, (u64, u64, u64)> = endpoints.into_iter().collect();
    let mut per_endpoint: BTreeMap<Endpoint, Vec<DownstreamTime>> = BTreeMap::new();
    for ((ep, service, protocol), (calls, ns)) in downstream {
        per_endpoint.entry(ep).or_default().push(DownstreamTime {
            service: strings.get(service).to_string(),
            protocol: strings.get(protocol).to_string(),
            calls,
            total_ms: ns as f64 / 1e6,
        });
    }
    let mut breakdown: Vec<TimeBreakdown> = endpoints
        .into_iter()
        .map(|(ep, (requests, total, covered))| {
            let (service, protocol, method, route) = ep;
            let mut downstream = per_endpoint.remove(&ep).unwrap_or_default();
            downstream.sort_by(|a, b| {
                b.total_ms
                    .total_cmp(&a.total_ms)
                    .then_with(|| a.service.cmp(&b.service))
                    .then_with(|| a.protocol.cmp(&b.protocol))
            });
            TimeBreakdown {
                service: strings.get(service).to_string(),
                name: span_name(
                    strings.get(protocol),
                    strings.get(method),
                    strings.get(route),
                ),
                requests,
                total_ms: total as f64 / 1e6,
                self_ms: total.saturating_sub(covered) as f64 / 1e6,
                downstream,
            }
        })
        .collect();
    breakdown.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    Summary {
        traces,
        breakdown,
        skipped: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_sets_count_each_service_once_beyond_the_first_four() {
        let mut sets = ServiceSets::default();
        sets.push();
        sets.push();
        for s in [7, 3, 7, 9, 1, 3, 12, 40, 12, 41, 40] {
            sets.see(0, s);
        }
        sets.see(1, 5);
        sets.see(1, 5);
        assert_eq!(sets.len(0), 7); // 7 3 9 1 inline, then 12 40 41
        assert_eq!(sets.len(1), 1);
        assert_eq!(sets.len(2), 0); // no such trace
    }
}
