//! The join of a connection's two ends, and the pairing of their exchanges.
//!
//! A capture sees a TCP connection from each captured end: a client side (the socket that
//! connected) and a server side (the socket that accepted), each with its 4-tuple, its node
//! and its lifetime. [`Connections::join`] finds, for every side, the side at the other end
//! of the same connection, if the capture holds it.
//!
//! The 4-tuple alone does not identify a connection: on a busy node ephemeral ports are
//! reused (30,000 loopback connections a minute against 28,000 ports), so one tuple carries
//! several successive connections within one capture. Sides are therefore joined by tuple
//! *and* time: on one tuple, connections follow each other, so the clients and the servers of
//! a tuple are merged in the order they opened, a server pairing with the client it can
//! belong to (it opened after the client connected and before the next client of the tuple
//! connected, allowing [`CROSS_NODE_SKEW_NS`] between the clocks of two nodes). A side open
//! before the capture (seeded from a state snapshot, or first met in a message) has an open
//! time known only as an upper bound ([`Opened::By`]); a side still open at the end has no
//! close time. Tuples local to a node (loopback, or the same address at both ends) join only
//! within that node.
//!
//! Samples taken in softirq context (retransmits, resets received) carry a 4-tuple, not a
//! socket: [`Connections::owner`] attributes each to the one side that was live on its tuple
//! at its time (preferring the process it names), so that reused tuples do not count one
//! retransmit several times. [`Connections::tally`] counts them per side;
//! [`Facts::retransmits`] per connection (a joined pair is one connection).
//!
//! [`align`] pairs the exchanges of a joined client side with those of its server side.

use retrace_segment::Endpoint;

use crate::engine::Map;

/// How far apart the clocks of two nodes may be, when joining the two ends of a connection
/// between them.
pub(crate) const CROSS_NODE_SKEW_NS: u64 = 250_000_000;

/// Slack between the timestamps of one node (events converted from different segments may
/// differ by rounding in the clock mapping).
pub(crate) const SAME_NODE_SLACK_NS: u64 = 1_000_000;

/// When a side's socket was opened, as far as the capture knows (wall ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// At this time: the connect (client) or the accept (server) was captured.
    At(u64),
    /// At or before this time: the socket was already open when first seen (seeded from a
    /// state snapshot, or first met in a message).
    By(u64),
}

impl Opened {
    /// The earliest time the socket can have been opened.
    pub(crate) fn earliest(self) -> u64 {
        match self {
            Opened::At(t) => t,
            Opened::By(_) => 0,
        }
    }

    /// The latest time the socket can have been opened.
    pub(crate) fn latest(self) -> u64 {
        match self {
            Opened::At(t) | Opened::By(t) => t,
        }
    }
}

/// What the join needs to know of one side.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Span {
    /// Node index.
    pub node: u16,
    /// Owning process.
    pub pid: u32,
    /// The side that connected (else the side that accepted).
    pub client: bool,
    /// Local endpoint.
    pub local: Endpoint,
    /// Remote endpoint.
    pub remote: Endpoint,
    /// When it was opened.
    pub opened: Opened,
    /// When it was closed; `None` when still open at the end of the capture.
    pub closed: Option<u64>,
    /// Whether it may join a peer (not for failed connects or sides without a remote).
    pub joinable: bool,
}

/// What a [`Sample`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SampleKind {
    /// A segment was retransmitted by the socket.
    Retransmit,
    /// The socket received a reset.
    ResetReceived,
    /// The listener sent a SYN-ACK of the connection again (a retransmit too).
    SynAckRetransmit,
    /// The socket's peer advertised a zero window (the socket sampler's).
    ZeroWindow,
}

/// A TCP sample of one node, keyed by the 4-tuple of the socket it was taken on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    /// Node index.
    pub node: u16,
    /// Wall ns.
    pub ts: u64,
    /// What happened.
    pub kind: SampleKind,
    /// Local endpoint of the socket.
    pub local: Endpoint,
    /// Remote endpoint of the socket.
    pub remote: Endpoint,
    /// TCP state (kernel numbering).
    pub state: u8,
    /// Owning process, when the capture could attribute the socket.
    pub pid: Option<u32>,
}

impl Sample {
    /// Taken while the connection was being opened (SYN_SENT, SYN_RECV, NEW_SYN_RECV): it
    /// belongs to the side opened at or after it, not to an earlier one on the same tuple.
    fn opening(&self) -> bool {
        matches!(self.state, 2 | 3 | 12)
    }
}

/// Per-side facts attributed from samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Facts {
    /// Retransmits of each side's own socket.
    pub side_retransmits: Vec<u64>,
    /// The last reset each side received while open (a reset after its close cannot have
    /// cut off its requests).
    pub last_reset: Vec<Option<u64>>,
    /// Samples no side could own (no side of their node on their tuple).
    pub unowned: u64,
}

impl Facts {
    /// Retransmits of the connection `side` belongs to: its own and its peer's.
    pub(crate) fn retransmits(&self, conns: &Connections, side: u32) -> u64 {
        let own = |s: u32| self.side_retransmits.get(s as usize).copied().unwrap_or(0);
        own(side) + conns.peer(side).map_or(0, own)
    }

    /// Whether `side`'s connection was reset (a reset received by `side`) at or after `ts`.
    pub(crate) fn reset_since(&self, side: u32, ts: u64) -> bool {
        self.last_reset
            .get(side as usize)
            .copied()
            .flatten()
            .is_some_and(|r| r >= ts)
    }
}

/// Where a tuple is unique: tuples local to a node (loopback, same address both ends) are
/// per node; others are shared by every node.
fn scope(node: u16, a: &Endpoint, b: &Endpoint) -> Option<u16> {
    (a.addr.ip().is_loopback() || a.addr == b.addr).then_some(node)
}

/// A tuple oriented server endpoint first, with its scope.
type TupleKey = (Option<u16>, Endpoint, Endpoint);

/// The joined sides of a capture.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    spans: Vec<Span>,
    peer: Vec<Option<u32>>,
    /// Sides by socket (node, local, remote), in the order they opened.
    sockets: Map<(u16, Endpoint, Endpoint), Vec<u32>>,
}

impl Connections {
    /// Joins the sides `spans` (indexed as given) into connections.
    pub(crate) fn join(spans: Vec<Span>) -> Self {
        let open_key = |i: &u32| {
            let s = &spans[*i as usize];
            (s.opened.latest(), s.opened.earliest(), *i)
        };
        let mut tuples: Map<TupleKey, (Vec<u32>, Vec<u32>)> = Map::default();
        let mut sockets: Map<(u16, Endpoint, Endpoint), Vec<u32>> = Map::default();
        for (i, s) in spans.iter().enumerate() {
            let i = i as u32;
            sockets
                .entry((s.node, s.local, s.remote))
                .or_default()
                .push(i);
            if !s.joinable {
                continue;
            }
            let (server_ep, client_ep) = if s.client {
                (s.remote, s.local)
            } else {
                (s.local, s.remote)
            };
            let e = tuples
                .entry((scope(s.node, &server_ep, &client_ep), server_ep, client_ep))
                .or_default();
            if s.client {
                e.0.push(i);
            } else {
                e.1.push(i);
            }
        }
        let mut peer = vec![None; spans.len()];
        for (clients, servers) in tuples.values_mut() {
            if clients.is_empty() || servers.is_empty() {
                continue;
            }
            clients.sort_unstable_by_key(open_key);
            servers.sort_unstable_by_key(open_key);
            for (c, s) in merge(&spans, clients, servers) {
                peer[c as usize] = Some(s);
                peer[s as usize] = Some(c);
            }
        }
        for v in sockets.values_mut() {
            v.sort_unstable_by_key(open_key);
        }
        Self {
            spans,
            peer,
            sockets,
        }
    }

    /// The side at the other end of `side`'s connection, when the capture holds it.
    pub(crate) fn peer(&self, side: u32) -> Option<u32> {
        self.peer.get(side as usize).copied().flatten()
    }

    /// The side a sample was taken on: among the sides of its node with its tuple (of the
    /// process it names, when it names one of them), the one live at its time. A sample
    /// taken while a connection was opening goes to the side opened at or after it; another
    /// goes to the side last opened before it, unless that side was closed and the next one
    /// opened closer to the sample. A sample on a tuple no side has is given to the side at
    /// the other end of the same connection on that node (the local socket that sent it was
    /// not a captured side). A SYN sent again by a connect that then failed goes to that
    /// failed connect (see [`Connections::failed_connect_of`]).
    pub(crate) fn owner(&self, s: &Sample) -> Option<u32> {
        self.owner_on(s, s.local, s.remote)
            .or_else(|| self.owner_on(s, s.remote, s.local))
            .or_else(|| self.failed_connect_of(s))
    }

    /// The failed connect a sample taken while opening belongs to: a connect that fails never
    /// learns its local port (the kernel has given it back when the failure is seen: the side
    /// keeps `address:0`, or no address at all), so its sample is found by its process, local
    /// address and remote, among the connects open at its time (the latest opened; any of
    /// them is the same edge).
    /// Only retransmits: the reset a refused connect receives is its refusal (its side
    /// already says ECONNREFUSED), not an open connection reset.
    fn failed_connect_of(&self, s: &Sample) -> Option<u32> {
        if !s.opening() || s.kind != SampleKind::Retransmit {
            return None;
        }
        let portless = Endpoint { port: 0, ..s.local };
        [portless, Endpoint::default()].iter().find_map(|local| {
            let all = self.sockets.get(&(s.node, *local, s.remote))?;
            all.iter().rev().copied().find(|&i| {
                let sp = &self.spans[i as usize];
                s.pid.is_none_or(|p| sp.pid == p)
                    && sp.opened.earliest() <= s.ts
                    && sp.closed.is_none_or(|c| c >= s.ts)
            })
        })
    }

    fn owner_on(&self, s: &Sample, local: Endpoint, remote: Endpoint) -> Option<u32> {
        let all = self.sockets.get(&(s.node, local, remote))?;
        let mine: Vec<u32>;
        let cands: &[u32] = match s.pid {
            Some(pid) if all.iter().any(|&i| self.spans[i as usize].pid == pid) => {
                mine = all
                    .iter()
                    .copied()
                    .filter(|&i| self.spans[i as usize].pid == pid)
                    .collect();
                &mine
            }
            _ => all,
        };
        let span = |i: u32| &self.spans[i as usize];
        // The side last opened at or before the sample (it may have been), and the first one
        // surely opened after it.
        let (mut before, mut after) = (None, None);
        for &i in cands {
            if span(i).opened.earliest() <= s.ts {
                before = Some(i);
            } else if after.is_none() {
                after = Some(i);
            }
        }
        match (before, after) {
            (None, a) => a,
            (Some(b), None) => Some(b),
            (Some(b), Some(a)) => match span(b).closed.filter(|&c| c < s.ts) {
                // Still open at the sample: a connection of this tuple was live, its own.
                None => Some(b),
                Some(_) if s.opening() => Some(a),
                Some(c) => {
                    let since_close = s.ts - c;
                    let until_open = span(a).opened.earliest().saturating_sub(s.ts);
                    Some(if since_close <= until_open { b } else { a })
                }
            },
        }
    }

    /// Attributes `samples` to their sides.
    pub(crate) fn tally(&self, samples: &[Sample]) -> Facts {
        let mut f = Facts {
            side_retransmits: vec![0; self.spans.len()],
            last_reset: vec![None; self.spans.len()],
            unowned: 0,
        };
        for s in samples {
            let Some(i) = self.owner(s) else {
                f.unowned += 1;
                continue;
            };
            match s.kind {
                SampleKind::Retransmit | SampleKind::SynAckRetransmit => {
                    f.side_retransmits[i as usize] += 1
                }
                SampleKind::ZeroWindow => {}
                SampleKind::ResetReceived => {
                    if self.spans[i as usize].closed.is_some_and(|c| c < s.ts) {
                        continue;
                    }
                    let r = &mut f.last_reset[i as usize];
                    *r = Some(r.map_or(s.ts, |r| r.max(s.ts)));
                }
            }
        }
        f
    }
}

/// Pairs the clients and the servers of one tuple, both in the order they opened: each
/// server with the client it can belong to. A server opened (surely) before the client
/// connected, or closed before, has no client in the capture; a server opened (surely) after
/// the next client connected belongs to that one or a later one, so the client has no server
/// in the capture. The accept may come after the client closed (a client that gave up while
/// its connection waited in the accept queue).
fn merge(spans: &[Span], clients: &[u32], servers: &[u32]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < clients.len() && j < servers.len() {
        let (ci, si) = (clients[i], servers[j]);
        let (c, s) = (&spans[ci as usize], &spans[si as usize]);
        let slack = if c.node == s.node {
            SAME_NODE_SLACK_NS
        } else {
            CROSS_NODE_SKEW_NS
        };
        let c_from = c.opened.earliest();
        let s_ended_before = s.closed.is_some_and(|e| e.saturating_add(slack) < c_from);
        if s.opened.latest().saturating_add(slack) < c_from || s_ended_before {
            j += 1;
            continue;
        }
        let next_client_first = clients.get(i + 1).is_some_and(|&n| {
            let n = &spans[n as usize];
            s.opened.earliest().saturating_add(slack) >= n.opened.latest()
        });
        if next_client_first {
            i += 1;
            continue;
        }
        out.push((ci, si));
        i += 1;
        j += 1;
    }
    out
}

/// A parsed exchange as [`align`] sees it: method and target ids.
pub(crate) trait Request {
    /// Method id.
    fn method(&self) -> u32;
    /// Target id.
    fn target(&self) -> u32;
}

/// Pairs a connection's client-side exchanges (`mine`, in time order) with its server-side
/// ones (`theirs`): each with the next server exchange of the same method and target, looking
/// a few ahead. Either side may have missed exchanges (a capture that began mid-connection,
/// lost messages), and one missing exchange must not shift every pairing after it. Returns,
/// per client exchange, the index of its server exchange in `theirs`.
pub(crate) fn align<X: Request>(mine: &[X], theirs: &[X]) -> Vec<Option<usize>> {
    const LOOKAHEAD: usize = 8;
    let mut out = Vec::with_capacity(mine.len());
    let mut next = 0;
    for x in mine {
        let found = (next..theirs.len().min(next + LOOKAHEAD)).find(|&j| {
            let y = &theirs[j];
            y.method() == x.method() && y.target() == x.target()
        });
        if let Some(j) = found {
            next = j + 1;
        }
        out.push(found);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn lo(port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::LOCALHOST, port)
    }

    const MS: u64 = 1_000_000;
    const SERVER: u16 = 8080;

    fn client(node: u16, port: u16, opened: Opened, closed: Option<u64>) -> Span {
        Span {
            node,
            pid: 10,
            client: true,
            local: lo(port),
            remote: lo(SERVER),
            opened,
            closed,
            joinable: true,
        }
    }

    fn server(node: u16, port: u16, opened: Opened, closed: Option<u64>) -> Span {
        Span {
            node,
            pid: 20,
            client: false,
            local: lo(SERVER),
            remote: lo(port),
            opened,
            closed,
            joinable: true,
        }
    }

    fn peers(c: &Connections, n: usize) -> Vec<Option<u32>> {
        (0..n as u32).map(|i| c.peer(i)).collect()
    }

    /// Three successive connections on one tuple, each joined to its own server side (sides
    /// listed out of order, server sides first).
    #[test]
    fn tuple_reuse_joins_each_connection_to_its_own_server() {
        let at = Opened::At;
        let spans = vec![
            server(0, 40000, at(200 * MS + 50_000), Some(300 * MS)), // 0
            server(0, 40000, at(50_000), Some(100 * MS)),            // 1
            server(0, 40000, at(400 * MS + 50_000), None),           // 2
            client(0, 40000, at(400 * MS), None),                    // 3
            client(0, 40000, at(0), Some(99 * MS)),                  // 4
            client(0, 40000, at(200 * MS), Some(299 * MS)),          // 5
        ];
        let c = Connections::join(spans);
        assert_eq!(
            peers(&c, 6),
            vec![Some(5), Some(4), Some(3), Some(2), Some(1), Some(0)]
        );
    }

    /// A server side whose client is not in the capture (before, between and after captured
    /// connections on its tuple) stays unjoined, and does not take another's client; a client
    /// whose server is not in the capture likewise.
    #[test]
    fn sides_without_their_other_end_stay_unjoined() {
        let at = Opened::At;
        let spans = vec![
            server(0, 40000, at(10 * MS), Some(20 * MS)), // 0: no client
            client(0, 40000, at(100 * MS), Some(150 * MS)), // 1: no server
            client(0, 40000, at(200 * MS), Some(250 * MS)), // 2
            server(0, 40000, at(200 * MS + 10), Some(251 * MS)), // 3: 2's
            server(0, 40000, at(300 * MS), None),         // 4: no client
        ];
        let c = Connections::join(spans);
        assert_eq!(peers(&c, 5), vec![None, None, Some(3), Some(2), None]);
        // One side alone on its tuple.
        let c = Connections::join(vec![server(0, 40001, at(0), None)]);
        assert_eq!(c.peer(0), None);
        let c = Connections::join(vec![client(0, 40001, at(0), None)]);
        assert_eq!(c.peer(0), None);
    }

    /// Sides open before the capture (open time unknown) join each other; a seeded client
    /// joins a server that accepts it after the capture began (it waited in the accept queue);
    /// a seeded server cannot be the end of a client that connected during the capture.
    #[test]
    fn seeded_sides_join_by_what_is_known_of_their_open_time() {
        let by = Opened::By;
        let at = Opened::At;
        let c = Connections::join(vec![
            client(0, 40000, by(0), Some(5 * MS)),
            server(0, 40000, by(0), None),
        ]);
        assert_eq!(peers(&c, 2), vec![Some(1), Some(0)]);
        let c = Connections::join(vec![
            client(0, 40000, by(0), None),
            server(0, 40000, at(3 * MS), None),
        ]);
        assert_eq!(peers(&c, 2), vec![Some(1), Some(0)]);
        let c = Connections::join(vec![
            server(0, 40000, by(0), Some(10 * MS)),
            client(0, 40000, at(50 * MS), None),
            server(0, 40000, at(50 * MS + 50_000), None),
        ]);
        assert_eq!(peers(&c, 3), vec![None, Some(2), Some(1)]);
        // A seeded client whose server is missing does not take a later client's server.
        let c = Connections::join(vec![
            client(0, 40000, by(0), Some(10 * MS)),
            client(0, 40000, at(50 * MS), None),
            server(0, 40000, at(50 * MS + 50_000), None),
        ]);
        assert_eq!(peers(&c, 3), vec![None, Some(2), Some(1)]);
    }

    /// Loopback tuples join within their node only; tuples between nodes join across them,
    /// within the clock skew allowed.
    #[test]
    fn two_nodes() {
        let at = Opened::At;
        // The same loopback tuple on two nodes: two connections, not one.
        let c = Connections::join(vec![
            client(0, 40000, at(0), None),
            client(1, 40000, at(MS), None),
            server(1, 40000, at(MS + 10), None),
            server(0, 40000, at(10), None),
        ]);
        assert_eq!(peers(&c, 4), vec![Some(3), Some(2), Some(1), Some(0)]);
        // Node 0 (10.0.0.1) calls node 1 (10.0.0.2), whose clock is 100 ms behind.
        let a = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 40000);
        let b = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), SERVER);
        let side = |node, client, local, remote, t: u64| Span {
            node,
            pid: 1,
            client,
            local,
            remote,
            opened: at(t),
            closed: None,
            joinable: true,
        };
        let c = Connections::join(vec![
            side(0, true, a, b, 1000 * MS),
            side(1, false, b, a, 900 * MS),
        ]);
        assert_eq!(peers(&c, 2), vec![Some(1), Some(0)]);
        // Beyond the allowed skew they are different connections.
        let c = Connections::join(vec![
            side(0, true, a, b, 1000 * MS),
            side(1, false, b, a, 500 * MS),
        ]);
        assert_eq!(peers(&c, 2), vec![None, None]);
    }

    /// Failed connects do not join.
    #[test]
    fn unjoinable_sides_are_left_alone() {
        let mut failed = client(0, 40000, Opened::At(0), Some(MS));
        failed.joinable = false;
        let c = Connections::join(vec![failed, server(0, 40000, Opened::At(10), None)]);
        assert_eq!(peers(&c, 2), vec![None, None]);
    }

    fn sample(kind: SampleKind, ts: u64, local: Endpoint, remote: Endpoint, state: u8) -> Sample {
        Sample {
            node: 0,
            ts,
            kind,
            local,
            remote,
            state,
            pid: None,
        }
    }

    /// Retransmits on a reused tuple go to the connection live at their time, once each; a
    /// joined pair counts both directions once.
    #[test]
    fn retransmits_are_attributed_by_time_to_one_connection() {
        let at = Opened::At;
        let spans = vec![
            client(0, 40000, at(0), Some(100 * MS)),           // 0
            server(0, 40000, at(50_000), Some(100 * MS + 10)), // 1
            client(0, 40000, at(200 * MS), Some(300 * MS)),    // 2
            server(0, 40000, at(200 * MS + 50_000), Some(300 * MS + 10)), // 3
            server(0, 40001, at(500 * MS), None),              // 4: client not captured
        ];
        let c = Connections::join(spans);
        let rtx = SampleKind::Retransmit;
        let samples = vec![
            sample(rtx, 10 * MS, lo(SERVER), lo(40000), 1), // server side of conn 1
            sample(rtx, 20 * MS, lo(40000), lo(SERVER), 1), // client side of conn 1
            sample(rtx, 100 * MS + 5, lo(40000), lo(SERVER), 4), // FIN after the close: conn 1
            sample(rtx, 210 * MS, lo(SERVER), lo(40000), 1), // conn 2
            // A SYN-ACK retransmit before the accept of conn 2: conn 2, not conn 1.
            sample(rtx, 200 * MS + 10, lo(SERVER), lo(40000), 12),
            // The client of :40001 is not a side: its retransmit goes to the server's side.
            sample(rtx, 600 * MS, lo(40001), lo(SERVER), 1),
            // A tuple nobody had.
            sample(rtx, 600 * MS, lo(40002), lo(SERVER), 1),
        ];
        let f = c.tally(&samples);
        assert_eq!(f.side_retransmits, vec![2, 1, 0, 2, 1]);
        assert_eq!(f.unowned, 1);
        assert_eq!(f.retransmits(&c, 0), 3);
        assert_eq!(f.retransmits(&c, 1), 3);
        assert_eq!(f.retransmits(&c, 2), 2);
        assert_eq!(f.retransmits(&c, 4), 1);
        let total: u64 = [0u32, 2, 4].iter().map(|&s| f.retransmits(&c, s)).sum();
        assert_eq!(total, 6, "each owned retransmit counted once");
    }

    /// A sample naming its process goes to that process's side when two sides share a tuple
    /// at its time.
    #[test]
    fn samples_prefer_the_side_of_their_process() {
        let mut other = client(0, 40000, Opened::By(0), None);
        other.pid = 99;
        let c = Connections::join(vec![client(0, 40000, Opened::By(0), None), other]);
        let mut s = sample(SampleKind::Retransmit, MS, lo(40000), lo(SERVER), 1);
        s.pid = Some(99);
        assert_eq!(c.owner(&s), Some(1));
        s.pid = Some(10);
        assert_eq!(c.owner(&s), Some(0));
    }

    /// A reset belongs to the connection it was received on: a reset of an earlier
    /// connection on the tuple is not the reset of a later one.
    #[test]
    fn resets_are_attributed_by_time() {
        let at = Opened::At;
        let c = Connections::join(vec![
            client(0, 40000, at(0), Some(100 * MS)),
            client(0, 40000, at(200 * MS), Some(300 * MS)),
        ]);
        let reset = |ts| sample(SampleKind::ResetReceived, ts, lo(40000), lo(SERVER), 7);
        // The second, after the first connection's close, cut nothing off.
        let f = c.tally(&[reset(99 * MS), reset(150 * MS)]);
        assert_eq!(f.last_reset, vec![Some(99 * MS), None]);
        assert!(f.reset_since(0, 50 * MS));
        assert!(!f.reset_since(0, 99 * MS + 1), "a reset before the request");
        assert!(!f.reset_since(1, 0));
    }

    struct X(u32, u32);
    impl Request for X {
        fn method(&self) -> u32 {
            self.0
        }
        fn target(&self) -> u32 {
            self.1
        }
    }

    /// Sides that saw the same exchanges pair one to one; a side that missed one does not shift
    /// the pairings after it; unknown exchanges pair with nothing.
    #[test]
    fn exchanges_align_by_request_not_by_position() {
        // Client saw /a /b /c /d; the server missed /b (lost) and saw /x the client did not.
        let all = vec![
            X(1, 10), // 0 client /a
            X(1, 11), // 1 client /b
            X(1, 12), // 2 client /c
            X(1, 13), // 3 client /d
            X(1, 10), // 4 server /a
            X(1, 99), // 5 server /x
            X(1, 12), // 6 server /c
            X(1, 13), // 7 server /d
        ];
        let pick =
            |v: &[X], at: &[usize]| at.iter().map(|&i| X(v[i].0, v[i].1)).collect::<Vec<X>>();
        let pairs = align(&pick(&all, &[0, 1, 2, 3]), &pick(&all, &[4, 5, 6, 7]));
        assert_eq!(pairs, vec![Some(0), None, Some(2), Some(3)]);
        // By position, /b would have taken /x's latency and every later one shifted.
        let same = align(&pick(&all, &[0, 2, 3]), &pick(&all, &[4, 6, 7]));
        assert_eq!(same, vec![Some(0), Some(1), Some(2)]);
        // A method differing on the same target does not pair.
        let mut other: Vec<X> = all.iter().map(|x| X(x.0, x.1)).collect();
        other[4].0 = 2;
        assert_eq!(align(&pick(&other, &[0]), &pick(&other, &[4])), vec![None]);
        assert_eq!(align(&[], &pick(&all, &[4])), Vec::<Option<usize>>::new());
    }
}
