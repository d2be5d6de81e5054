//! Clock offsets between nodes, estimated from the connections that cross them, and the
//! correction the merge applies before it orders events by wall-clock time.
//!
//! Each node maps its monotonic timestamps to wall-clock time with its own `CLOCK_REALTIME`
//! (the segment header's [`ClockSync`](retrace_segment::ClockSync)); two nodes whose clocks
//! disagree by more than the join's tolerance would show a connection's two ends seconds
//! apart, and the analyzer could not join them.
//!
//! # The estimate (NTP's, on recorded exchanges)
//!
//! A connection whose two ends were captured on two nodes, each from its open (the client's
//! `Established`, the server's `Accepted`), is followed *turn by turn*: a turn is a run of
//! messages in one direction (the capture emits an L7 record when the direction of transfer
//! changes), so on a request/response protocol turn `n` of the client and turn `n` of the
//! server are the same bytes, written on one side and read on the other. A request turn
//! followed by its response turn gives four times: `t1` (client wrote, client clock), `t2`
//! (server read, server clock), `t3` (server wrote), `t4` (client read), and one sample of the
//! server's clock minus the client's:
//!
//! ```text
//! offset = ((t2 - t1) + (t3 - t4)) / 2        delay = (t4 - t1) - (t3 - t2)
//! ```
//!
//! exact when the two one-way delays are equal. The estimate of a pair of nodes is the
//! **median** of the half of its samples with the shortest round trips (NTP's clock filter: a
//! long round trip holds a wake-up or a thread start on one side, which skews its sample by
//! half of it; the median is robust to the odd pipelined or mismatched turn). Its error bound
//! is the larger of those samples' spread (half the distance between their 5th and 95th
//! percentiles, at least 1 µs) and half the longest of their round trips (NTP's bound: with
//! both one-way delays at least 0, a sample's true offset is within half its round trip of
//! it; on a veth pair the request's way is measured from the write's exit, so one way can
//! look near 0 and the other the whole round trip: a bias of up to half of it, which is
//! what was seen, 20 µs of 50).
//! Offsets are relative to the first node given (the reference); a node
//! reached only through another (A talks to B, B to C) gets the sum along the path of the
//! pairs with the most samples, errors added. A node with no captured connection to the
//! reference's group keeps offset 0 and is reported so.
//!
//! Turns are keyed by the connection's 4-tuple, its occurrence on that tuple in the node's
//! capture (ephemeral ports are reused) and the turn number. Loopback connections and
//! connections between two addresses of one node are left out (they cross no clock).
//!
//! # Cost
//!
//! Each input is read once more, on its own, before the merge (TCP and L7 events kept): first
//! only the two minutes after all inputs (and the window asked for) have started, which is
//! enough for any pair of nodes that talk; only when a node found no connection there is the
//! whole of every input read, so that "no connection" is said of the whole capture.
//!
//! # Bounded memory
//!
//! A node keeps at most [`MAX_TURNS_PER_NODE`] turns and [`MAX_TURNS_PER_CONNECTION`] per
//! connection. Connections are kept or left by a hash of their 4-tuple under a threshold that
//! halves whenever the store is full, so that every node keeps the same connections: the
//! matching uses the lowest threshold of all nodes.
//!
//! # The correction
//!
//! A node whose offset is larger than its error bound is corrected: its wall-clock times are
//! moved by `-offset` before the merge, so analyze, replay and every export see the reference's
//! clock. An offset within its error bound is left uncorrected (it cannot be told from 0).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use retrace_segment::{Direction, Endpoint, EventBody, TcpStep};
use serde::{Deserialize, Serialize};

use crate::filter::Filter;
use crate::merge::{Replay, ReplayError, ReplayOptions};
use crate::time::TimeSpec;

/// Turns a node keeps at most for the estimate.
pub const MAX_TURNS_PER_NODE: usize = 400_000;
/// Turns kept per connection (the first ones).
pub const MAX_TURNS_PER_CONNECTION: u32 = 64;
/// Samples a pair of nodes needs before its offset is trusted.
pub const MIN_SAMPLES: usize = 3;
/// How much of the inputs the estimate reads first (from where all of them have started).
pub const ESTIMATE_SPAN_NS: u64 = 120_000_000_000;
/// Read before that start too: the offsets being estimated can put a node's events earlier.
pub const ESTIMATE_MARGIN_NS: u64 = 10_000_000_000;

/// How the merge treats the clocks of several nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClockMode {
    /// Estimate the offsets from the connections between the nodes and correct them
    /// (when the inputs are opened from paths; in-memory sources are not corrected).
    #[default]
    Estimate,
    /// Trust every node's clock as recorded.
    Off,
    /// Move input `i`'s wall-clock times by `-offsets[i]` ns.
    Fixed(Vec<i64>),
}

/// One node's clock against the reference node's, as estimated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockOffset {
    /// The node.
    pub node: String,
    /// The node its offset is relative to (the first input).
    pub reference: String,
    /// This node's clock minus the reference's, ns (0 when it could not be estimated).
    pub offset_ns: i64,
    /// Error bound of the offset, ns (the samples' spread, summed along the path).
    pub error_ns: u64,
    /// Request/response exchanges the estimate rests on (of the pair closest to it on the
    /// path; 0 for the reference and for nodes not reached).
    pub samples: u64,
    /// Whether its times were corrected (moved by `-offset_ns`).
    pub corrected: bool,
    /// How it was found, in words.
    pub note: String,
}

impl std::fmt::Display for ClockOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:+.3} ms ± {:.3} ms against {} ({} exchange(s)){}; {}",
            self.node,
            self.offset_ns as f64 / 1e6,
            self.error_ns as f64 / 1e6,
            self.reference,
            self.samples,
            if self.corrected {
                ", corrected"
            } else {
                ", not corrected"
            },
            self.note
        )
    }
}

/// The key of a turn, the same on both ends of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TurnKey {
    client: Endpoint,
    server: Endpoint,
    occurrence: u32,
    turn: u32,
}

/// One end's view of a turn.
#[derive(Clone, Copy, Debug)]
struct Turn {
    /// Bytes going client → server.
    to_server: bool,
    /// This end is the client.
    client_end: bool,
    /// When the turn's first message was written or read (the node's wall ns).
    wall: u64,
    /// Hash of the 4-tuple (the sampling key).
    hash: u64,
}

/// A connection followed since its open.
struct Live {
    client_end: bool,
    key: TurnKey,
    hash: u64,
    last: Option<Direction>,
}

/// The turns of one node.
#[derive(Default)]
struct NodeTurns {
    live: HashMap<(Endpoint, Endpoint), Live>,
    occurrences: HashMap<(Endpoint, Endpoint), u32>,
    turns: HashMap<TurnKey, Turn>,
    threshold: u64,
    /// Read through a window that left some of the input out.
    partial: bool,
}

impl NodeTurns {
    fn new() -> Self {
        Self {
            threshold: u64::MAX,
            ..Default::default()
        }
    }

    fn opened(&mut self, local: Endpoint, remote: Endpoint, client_end: bool) {
        if local.port == 0 || remote.port == 0 || local.addr == remote.addr {
            return;
        }
        if local.addr.ip().is_loopback() || remote.addr.ip().is_loopback() {
            return;
        }
        let (client, server) = if client_end {
            (local, remote)
        } else {
            (remote, local)
        };
        let hash = tuple_hash(client, server);
        let n = self.occurrences.entry((client, server)).or_insert(0);
        let occurrence = *n;
        *n += 1;
        self.live.insert(
            (local, remote),
            Live {
                client_end,
                key: TurnKey {
                    client,
                    server,
                    occurrence,
                    turn: 0,
                },
                hash,
                last: None,
            },
        );
    }

    fn message(&mut self, local: Endpoint, remote: Endpoint, dir: Direction, wall: u64) {
        let Some(live) = self.live.get_mut(&(local, remote)) else {
            return;
        };
        if live.last == Some(dir) {
            return;
        }
        live.last = Some(dir);
        let key = live.key;
        live.key.turn += 1;
        if key.turn >= MAX_TURNS_PER_CONNECTION || live.hash >= self.threshold {
            return;
        }
        let to_server = live.client_end == (dir == Direction::Egress);
        self.turns.insert(
            key,
            Turn {
                to_server,
                client_end: live.client_end,
                wall,
                hash: live.hash,
            },
        );
        if self.turns.len() > MAX_TURNS_PER_NODE {
            self.threshold /= 2;
            let t = self.threshold;
            self.turns.retain(|_, turn| turn.hash < t);
        }
    }

    fn closed(&mut self, local: Endpoint, remote: Endpoint) {
        self.live.remove(&(local, remote));
    }
}

/// A stable hash of a 4-tuple (the same for both ends within one process).
fn tuple_hash(client: Endpoint, server: Endpoint) -> u64 {
    let mut h = DefaultHasher::new();
    (client, server).hash(&mut h);
    h.finish()
}

/// Reads the turns of one input (its own clock, uncorrected).
fn node_turns(
    path: &Path,
    opts: &ReplayOptions,
    window: Option<(u64, u64)>,
) -> Result<(String, NodeTurns), ReplayError> {
    let ropts = ReplayOptions {
        from: window.map(|w| TimeSpec::Absolute(w.0)),
        to: window.map(|w| TimeSpec::Absolute(w.1)),
        filter: Filter::parse("kind = tcp or kind = l7").ok(),
        max_buffered_events: opts.max_buffered_events,
        clock: ClockMode::Off,
    };
    let mut replay = Replay::open(&[path], ropts)?;
    let mut turns = NodeTurns::new();
    for ev in replay.by_ref() {
        match &ev.event.body {
            EventBody::Tcp(t) => match t.step {
                TcpStep::Established { .. } => turns.opened(t.local, t.remote, true),
                TcpStep::Accepted => turns.opened(t.local, t.remote, false),
                TcpStep::Closed { .. } => turns.closed(t.local, t.remote),
                _ => {}
            },
            EventBody::L7(m) => {
                if let Some((local, remote)) = ev.endpoints {
                    turns.message(local, remote, m.direction, ev.wall_ns);
                }
            }
            _ => {}
        }
    }
    let node = replay
        .nodes()
        .first()
        .map_or_else(String::new, |n| n.to_string());
    let report = replay.report();
    turns.partial = report.blocks_skipped > 0 || report.events_in_window < report.events_read;
    Ok((node, turns))
}

/// One exchange's offset (server − client) and round-trip delay, ns.
#[derive(Clone, Copy, Debug)]
struct Sample {
    offset: i64,
    delay: u64,
}

/// Offset samples (server − client) per pair of nodes `(client, server)`, from the turns of
/// every node.
fn samples(nodes: &[NodeTurns]) -> HashMap<(usize, usize), Vec<Sample>> {
    let threshold = nodes.iter().map(|n| n.threshold).min().unwrap_or(u64::MAX);
    let mut servers: HashMap<TurnKey, (usize, Turn)> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for (k, t) in &n.turns {
            if !t.client_end && t.hash < threshold {
                servers.insert(*k, (i, *t));
            }
        }
    }
    let mut out: HashMap<(usize, usize), Vec<Sample>> = HashMap::new();
    for (c, n) in nodes.iter().enumerate() {
        for (k, req) in &n.turns {
            if !req.client_end || !req.to_server || req.hash >= threshold {
                continue;
            }
            let next = TurnKey {
                turn: k.turn + 1,
                ..*k
            };
            let Some(resp) = n.turns.get(&next) else {
                continue;
            };
            let (Some((s, sreq)), Some((s2, sresp))) = (servers.get(k), servers.get(&next)) else {
                continue;
            };
            if s != s2 || *s == c || resp.to_server || !sreq.to_server || sresp.to_server {
                continue;
            }
            let (t1, t4) = (i128::from(req.wall), i128::from(resp.wall));
            let (t2, t3) = (i128::from(sreq.wall), i128::from(sresp.wall));
            let offset = ((t2 - t1) + (t3 - t4)) / 2;
            let delay = ((t4 - t1) - (t3 - t2)).max(0);
            if let (Ok(offset), Ok(delay)) = (i64::try_from(offset), u64::try_from(delay)) {
                out.entry((c, *s))
                    .or_default()
                    .push(Sample { offset, delay });
            }
        }
    }
    out
}

/// The median and the error bound (half the 5th–95th percentile spread, at least 1 µs) of
/// sorted samples.
fn median_and_spread(sorted: &[i64]) -> (i64, u64) {
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        ((i128::from(sorted[n / 2 - 1]) + i128::from(sorted[n / 2])) / 2) as i64
    };
    let rank = |p: usize| sorted[((n * p).div_ceil(100)).clamp(1, n) - 1];
    let spread = (i128::from(rank(95)) - i128::from(rank(5))).unsigned_abs() / 2;
    (median, u64::try_from(spread).unwrap_or(u64::MAX).max(1_000))
}

/// One pair's estimate: `b`'s clock minus `a`'s.
#[derive(Clone, Copy, Debug)]
struct PairEstimate {
    offset: i64,
    error: u64,
    samples: usize,
}

/// Pair estimates (`a < b`, offset of `b` minus `a`) from the samples (see the module
/// documentation for the filter, the median and the error bound).
fn pair_estimates(
    samples: HashMap<(usize, usize), Vec<Sample>>,
) -> HashMap<(usize, usize), PairEstimate> {
    let mut merged: HashMap<(usize, usize), Vec<Sample>> = HashMap::new();
    for ((c, s), v) in samples {
        if c < s {
            merged.entry((c, s)).or_default().extend(v);
        } else {
            merged
                .entry((s, c))
                .or_default()
                .extend(v.into_iter().map(|x| Sample {
                    offset: x.offset.saturating_neg(),
                    ..x
                }));
        }
    }
    merged
        .into_iter()
        .filter(|(_, v)| v.len() >= MIN_SAMPLES)
        .map(|(k, mut v)| {
            let all = v.len();
            // NTP's clock filter trusts the shortest round trips most: a long one holds a
            // wake-up or a thread start on one side, which skews its offset by half of it.
            v.sort_unstable_by_key(|x| (x.delay, x.offset));
            v.truncate(all.div_ceil(2).max(MIN_SAMPLES));
            let max_delay = v.last().map_or(0, |x| x.delay);
            let mut offsets: Vec<i64> = v.iter().map(|x| x.offset).collect();
            offsets.sort_unstable();
            let (offset, spread) = median_and_spread(&offsets);
            let error = spread.max(max_delay / 2);
            (
                k,
                PairEstimate {
                    offset,
                    error,
                    samples: all,
                },
            )
        })
        .collect()
}

/// Offsets of every node against node 0 from the pair estimates: a tree grown from node 0,
/// each step taking the pair with the most samples to a node not reached yet.
fn solve(names: &[String], pairs: &HashMap<(usize, usize), PairEstimate>) -> Vec<ClockOffset> {
    let n = names.len();
    let reference = names.first().cloned().unwrap_or_default();
    let mut reached: Vec<Option<(i64, u64, usize, String)>> = vec![None; n];
    if n > 0 {
        reached[0] = Some((0, 0, 0, String::new()));
    }
    loop {
        // (samples, from, to, offset of `to` minus `from`, error)
        let mut best: Option<(usize, usize, usize, i64, u64)> = None;
        let mut keys: Vec<&(usize, usize)> = pairs.keys().collect();
        keys.sort_unstable();
        for &(a, b) in keys {
            let p = pairs[&(a, b)];
            let step = match (reached[a].is_some(), reached[b].is_some()) {
                (true, false) => (p.samples, a, b, p.offset, p.error),
                (false, true) => (p.samples, b, a, p.offset.saturating_neg(), p.error),
                _ => continue,
            };
            if best.is_none_or(|bst| step.0 > bst.0) {
                best = Some(step);
            }
        }
        let Some((samples, from, to, offset, error)) = best else {
            break;
        };
        let Some((base, base_err, _, _)) = reached[from].clone() else {
            break;
        };
        let how = if from == 0 {
            format!("from its connections with {reference}")
        } else {
            format!("through {} (from their connections)", names[from])
        };
        reached[to] = Some((
            base.saturating_add(offset),
            base_err.saturating_add(error),
            samples,
            how,
        ));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| match &reached[i] {
            Some((offset, error, samples, how)) => ClockOffset {
                node: name.clone(),
                reference: reference.clone(),
                offset_ns: *offset,
                error_ns: *error,
                samples: *samples as u64,
                corrected: i > 0 && offset.unsigned_abs() > *error,
                note: if i == 0 {
                    "the reference".to_string()
                } else if offset.unsigned_abs() > *error {
                    how.clone()
                } else {
                    format!("{how}; within its error bound, left as recorded")
                },
            },
            None => ClockOffset {
                node: name.clone(),
                reference: reference.clone(),
                offset_ns: 0,
                error_ns: 0,
                samples: 0,
                corrected: false,
                note: format!(
                    "no captured connection between it and {reference}'s nodes: offset left at 0"
                ),
            },
        })
        .collect()
}

/// The stretch of the inputs the estimate reads first: [`ESTIMATE_SPAN_NS`] from where all
/// inputs (and the window asked for) have started, with [`ESTIMATE_MARGIN_NS`] before it.
fn estimate_window<P: AsRef<Path>>(
    paths: &[P],
    opts: &ReplayOptions,
) -> Result<(u64, u64), ReplayError> {
    let mut starts = Vec::with_capacity(paths.len());
    for p in paths {
        let ropts = ReplayOptions {
            clock: ClockMode::Off,
            ..Default::default()
        };
        starts.push(Replay::open(&[p.as_ref()], ropts)?.start_wall_ns());
    }
    let earliest = starts.iter().copied().min().unwrap_or(0);
    let latest = starts.iter().copied().max().unwrap_or(0);
    let from = opts.from.map_or(0, |t| t.resolve(earliest));
    let base = latest.max(from);
    Ok((
        base.saturating_sub(ESTIMATE_MARGIN_NS),
        base.saturating_add(ESTIMATE_SPAN_NS),
    ))
}

/// Estimates the clock offset of every input against the first, reading each input on its
/// own (TCP and L7 events only): first the [`ESTIMATE_SPAN_NS`] after all have started (the
/// window's start, when one is asked for), then, when a node found no connection there, the
/// whole of every input (unless the first read already covered them). See the module
/// documentation.
pub fn estimate<P: AsRef<Path>>(
    paths: &[P],
    opts: &ReplayOptions,
) -> Result<Vec<ClockOffset>, ReplayError> {
    let window = estimate_window(paths, opts)?;
    let (first, partial) = estimate_in(paths, opts, Some(window))?;
    if !partial || first.iter().skip(1).all(|o| o.samples > 0) {
        return Ok(first);
    }
    Ok(estimate_in(paths, opts, None)?.0)
}

fn estimate_in<P: AsRef<Path>>(
    paths: &[P],
    opts: &ReplayOptions,
    window: Option<(u64, u64)>,
) -> Result<(Vec<ClockOffset>, bool), ReplayError> {
    let mut names = Vec::with_capacity(paths.len());
    let mut nodes = Vec::with_capacity(paths.len());
    for p in paths {
        let (name, turns) = node_turns(p.as_ref(), opts, window)?;
        names.push(name);
        nodes.push(turns);
    }
    let partial = nodes.iter().any(|n| n.partial);
    let pairs = pair_estimates(samples(&nodes));
    Ok((solve(&names, &pairs), partial))
}

/// The corrections the merge applies: `-offset` for corrected nodes, 0 for the others.
pub fn corrections(offsets: &[ClockOffset]) -> Vec<i64> {
    offsets
        .iter()
        .map(|o| if o.corrected { o.offset_ns } else { 0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::new(10, 0, 0, last), port)
    }

    /// A client on node 0 and a server on node 1 whose clock is `skew` ahead; one connection
    /// with `n` request/response exchanges, one-way delay `d` each way plus `jitter(i)`.
    fn exchange(skew: i64, n: u32, d: u64, jitter: impl Fn(u32) -> u64) -> Vec<NodeTurns> {
        let (c, s) = (ep(1, 40000), ep(2, 80));
        let mut a = NodeTurns::new();
        let mut b = NodeTurns::new();
        a.opened(c, s, true);
        b.opened(s, c, false);
        let mut t: u64 = 1_000_000_000_000;
        let srv = |t: u64| (i128::from(t) + i128::from(skew)) as u64;
        for i in 0..n {
            a.message(c, s, Direction::Egress, t);
            t += d + jitter(i);
            b.message(s, c, Direction::Ingress, srv(t));
            t += 300_000;
            b.message(s, c, Direction::Egress, srv(t));
            t += d;
            a.message(c, s, Direction::Ingress, t);
            t += 1_000_000;
        }
        vec![a, b]
    }

    #[test]
    fn a_known_skew_is_found_within_the_spread() {
        let nodes = exchange(2_500_000_000, 30, 40_000, |i| u64::from(i % 5) * 10_000);
        let names = vec!["a".to_string(), "b".to_string()];
        let got = solve(&names, &pair_estimates(samples(&nodes)));
        assert_eq!(got[0].offset_ns, 0);
        assert!(!got[0].corrected);
        let b = &got[1];
        assert_eq!(b.samples, 30);
        assert!(b.corrected);
        // Asymmetric jitter of 0..40 µs on the way in: the estimate is off by half of it.
        let err = (b.offset_ns - 2_500_000_000).unsigned_abs();
        assert!(err <= 20_000, "{b:?}");
        // Spread 20 µs; the kept half's round trips 80..100 µs: half the longest, 50 µs.
        assert_eq!(b.error_ns, 50_000, "{b:?}");
    }

    #[test]
    fn a_negative_skew_and_the_server_as_reference() {
        let mut nodes = exchange(-700_000_000, 10, 50_000, |_| 0);
        nodes.reverse();
        let names = vec!["srv".to_string(), "cli".to_string()];
        let got = solve(&names, &pair_estimates(samples(&nodes)));
        assert_eq!(got[1].offset_ns, 700_000_000);
        assert!(got[1].corrected);
        assert_eq!(corrections(&got), vec![0, 700_000_000]);
    }

    #[test]
    fn nodes_without_a_connection_keep_zero_and_say_so() {
        let mut nodes = exchange(1_000_000_000, 10, 50_000, |_| 0);
        nodes.push(NodeTurns::new());
        let names = vec!["a".into(), "b".into(), "lonely".into()];
        let got = solve(&names, &pair_estimates(samples(&nodes)));
        assert_eq!(got[2].offset_ns, 0);
        assert!(!got[2].corrected);
        assert!(got[2].note.contains("no captured connection"), "{}", got[2]);
    }

    #[test]
    fn an_offset_within_its_error_is_not_corrected() {
        let nodes = exchange(2_000, 20, 40_000, |i| u64::from(i % 2) * 30_000);
        let names = vec!["a".to_string(), "b".to_string()];
        let got = solve(&names, &pair_estimates(samples(&nodes)));
        assert!(!got[1].corrected, "{}", got[1]);
        assert_eq!(corrections(&got), vec![0, 0]);
    }

    #[test]
    fn loopback_and_same_address_connections_are_left_out() {
        let mut n = NodeTurns::new();
        let lo = Endpoint::new(Ipv4Addr::LOCALHOST, 5000);
        n.opened(lo, Endpoint::new(Ipv4Addr::LOCALHOST, 80), true);
        n.opened(ep(1, 5000), ep(1, 80), true);
        assert!(n.live.is_empty());
    }

    #[test]
    fn the_store_stays_bounded() {
        let mut n = NodeTurns::new();
        for i in 0..(MAX_TURNS_PER_NODE as u32 / 2 + 10) {
            let c = Endpoint::new(Ipv4Addr::from(0x0a00_0000 + i), 1000);
            n.opened(c, ep(2, 80), true);
            n.message(c, ep(2, 80), Direction::Egress, 1);
            n.message(c, ep(2, 80), Direction::Ingress, 2);
            n.closed(c, ep(2, 80));
        }
        assert!(n.turns.len() <= MAX_TURNS_PER_NODE);
        assert!(n.threshold < u64::MAX);
        assert!(n.turns.values().all(|t| t.hash < n.threshold));
    }

    #[test]
    fn spread_of_samples() {
        let v: Vec<i64> = (0..100).collect();
        let (m, e) = median_and_spread(&v);
        assert_eq!(m, 49);
        assert_eq!(e, 1_000); // (94 - 4) / 2 = 45 ns, raised to the 1 µs floor
        let v: Vec<i64> = (0..100).map(|i| i * 10_000).collect();
        assert_eq!(median_and_spread(&v), (495_000, 450_000));
    }
}
