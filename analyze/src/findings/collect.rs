//! What the findings need that the rest of the analysis does not keep, collected in the
//! analyzer's streaming pass with bounded memory: each process's life (exec, first listen,
//! exit with its code, signal or OOM kill), and the smoothed RTT sampled by client sockets as
//! a small histogram per (process, server endpoint, second). At the end ([`finish`]) these,
//! the connections' retransmits and resets (the analyzer's samples, attributed to sides by the
//! join) and the connects become per-edge, per-bucket counters ([`NetFacts`]).

use std::collections::BTreeMap;

use retrace_segment::{Endpoint, ProcExit, TcpSample};

use crate::engine::Map;
use crate::join::{Connections, Sample, SampleKind};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exit {
    /// Wall ns.
    pub ts: u64,
    /// Exit code (when not killed).
    pub code: i32,
    /// The signal that killed it, 0 when none.
    pub signal: i32,
    /// Killed by the OOM killer.
    pub oom: bool,
}

/// A process's life, as far as the capture saw it (wall ns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Life {
    /// Its exec.
    pub exec: Option<u64>,
    /// Its first listen.
    pub listen: Option<u64>,
    /// Its exit.
    pub exit: Option<Exit>,
    /// An OOM kill event naming it.
    pub oom: Option<u64>,
}

/// A histogram of RTTs in µs: bins of 1/8 of a power of two, sparse (bin, count) by bin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hist(Vec<(u8, u32)>);

impl Hist {
    fn bin(us: u32) -> u8 {
        if us <= 1 {
            return 0;
        }
        let b = (f64::from(us).log2() * 8.0).floor();
        b.clamp(0.0, 255.0) as u8
    }

    /// Adds a value.
    pub(crate) fn add(&mut self, us: u32) {
        self.add_n(Self::bin(us), 1);
    }

    fn add_n(&mut self, bin: u8, n: u32) {
        match self.0.binary_search_by_key(&bin, |&(b, _)| b) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(n),
            Err(i) => self.0.insert(i, (bin, n)),
        }
    }

    /// Adds another histogram.
    pub(crate) fn merge(&mut self, other: &Hist) {
        for &(b, n) in &other.0 {
            self.add_n(b, n);
        }
    }

    /// Values added.
    pub(crate) fn count(&self) -> u64 {
        self.0.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// The `q` quantile (0..=1), µs: the middle of its bin (within 5%).
    pub(crate) fn quantile(&self, q: f64) -> Option<u32> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(b, n) in &self.0 {
            seen += u64::from(n);
            if seen >= rank {
                let mid = 2f64.powf((f64::from(b) + 0.5) / 8.0);
                return Some(mid.round().min(f64::from(u32::MAX)) as u32);
            }
        }
        None
    }
}

/// At most this many RTT histograms are kept: past it, their time slots double in width
/// (merged), so that a long capture costs no more than a short one.
const RTT_CAP: usize = 1 << 16;

/// Collected during the streaming pass (see the module doc).
#[derive(Default)]
pub(crate) struct Collector {
    lives: Map<(u16, u32), Life>,
    /// Client-side srtt: (node, pid, server endpoint, slot) → histogram; a slot is
    /// `2^rtt_shift` seconds.
    rtt: Map<(u16, u32, Endpoint, u64), Hist>,
    rtt_shift: u32,
    /// Per client socket (node, pid, local and remote endpoints): the second of its last RTT
    /// sample. A busy socket is sampled on its own syscalls and by the socket sampler too; one
    /// sample a second keeps busy and idle sockets of equal weight in the histograms. Cleared
    /// past [`RTT_CAP`] sockets (bounded memory: one may then count twice in a second).
    rtt_seen: Map<(u16, u32, Endpoint, Endpoint), u64>,
}

impl Collector {
    /// A process image was executed.
    pub(crate) fn exec(&mut self, node: u16, pid: u32, ts: u64) {
        self.lives
            .entry((node, pid))
            .or_default()
            .exec
            .get_or_insert(ts);
    }

    /// A process started listening.
    pub(crate) fn listen(&mut self, node: u16, pid: u32, ts: u64) {
        self.lives
            .entry((node, pid))
            .or_default()
            .listen
            .get_or_insert(ts);
    }

    /// A process exited.
    pub(crate) fn exit(&mut self, node: u16, ts: u64, e: &ProcExit) {
        self.lives.entry((node, e.pid)).or_default().exit = Some(Exit {
            ts,
            code: e.exit_code,
            signal: e.signal,
            oom: e.oom_killed,
        });
    }

    /// The OOM killer chose `pid`.
    pub(crate) fn oom(&mut self, node: u16, pid: u32, ts: u64) {
        self.lives
            .entry((node, pid))
            .or_default()
            .oom
            .get_or_insert(ts);
    }

    /// An RTT sample; `server_side`: taken on a socket its process accepted (those are
    /// not kept: the client's view is the edge's RTT).
    pub(crate) fn rtt(&mut self, node: u16, ts: u64, s: &TcpSample, server_side: bool) {
        let Some(pid) = s.pid else { return };
        if server_side || s.srtt_us == 0 || s.remote.port == 0 {
            return;
        }
        let second = ts / 1_000_000_000;
        if self.rtt_seen.len() >= RTT_CAP {
            self.rtt_seen.clear();
        }
        if self.rtt_seen.insert((node, pid, s.local, s.remote), second) == Some(second) {
            return;
        }
        let slot = second >> self.rtt_shift;
        self.rtt
            .entry((node, pid, s.remote, slot))
            .or_default()
            .add(s.srtt_us);
        if self.rtt.len() > RTT_CAP {
            self.coarsen();
        }
    }

    /// Doubles the RTT slots' width, merging their histograms.
    fn coarsen(&mut self) {
        self.rtt_shift += 1;
        let old = std::mem::take(&mut self.rtt);
        for ((node, pid, remote, slot), h) in old {
            self.rtt
                .entry((node, pid, remote, slot >> 1))
                .or_default()
                .merge(&h);
        }
    }
}

/// One bucket of one edge.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EdgeBucket {
    /// Connections the client established.
    pub connects: u64,
    /// Retransmits while the connection carried data (established, opening, close-wait).
    pub retransmits: u64,
    /// Retransmits while it was being closed (FIN_WAIT1, LAST_ACK, CLOSING): a FIN sent again.
    pub retransmits_closing: u64,
    /// Of all the retransmits, those the server's end sent (the others: the client's).
    pub retransmits_by_server: u64,
    /// Of the retransmits, SYN-ACKs the server's listener sent again (handshakes it had to
    /// repeat: the last ACK lost, or dropped because its accept queue was full).
    pub synack_retransmits: u64,
    /// Zero-window samples of the client's sockets (the server stopped reading requests).
    pub zero_window_client: u64,
    /// Zero-window samples of the server's sockets (the client stopped reading responses).
    pub zero_window_server: u64,
    /// Resets received by the client's side (sent by the server).
    pub resets_to_client: u64,
    /// Resets received by the server's side (sent by the client).
    pub resets_to_server: u64,
    /// Client-side srtt, µs.
    pub rtt: Hist,
    /// Connections opened (churn: the clients' connects, or the servers' accepts when the
    /// client was not captured).
    pub opened: u64,
    /// Connections closed.
    pub closed: u64,
    /// Lifetimes of the connections closed in the bucket whose opening was seen, ns.
    pub lifetimes: Vec<u64>,
    /// Bytes from client to server.
    pub bytes_sent: u64,
    /// Bytes from server to client.
    pub bytes_received: u64,
}

/// A named process and its life.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProcFact {
    /// Its service.
    pub service: String,
    /// Node name.
    pub node: String,
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Its life.
    pub life: Life,
}

/// Per-edge, per-bucket TCP counters and the life of every named process.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NetFacts {
    /// Start of bucket 0, wall ns.
    pub start_ns: u64,
    /// Bucket width, ns.
    pub bucket_ns: u64,
    /// (client, server) → bucket index → counters.
    pub edges: BTreeMap<(String, String), BTreeMap<u64, EdgeBucket>>,
    /// Named processes, by service, node, pid.
    pub processes: Vec<ProcFact>,
}

/// What [`finish`] needs of one side of a connection.
pub(crate) struct SideBrief {
    pub node: u16,
    pub pid: u32,
    pub client: bool,
    pub failed: bool,
    /// When it connected (clients whose connect was captured).
    pub connected_at: Option<u64>,
    pub remote: Endpoint,
    /// When it was opened, when known exactly.
    pub opened_at: Option<u64>,
    /// When it was closed.
    pub closed_at: Option<u64>,
    /// It stands for its connection in the churn and bytes of its edge: a client's side, or
    /// a server's whose client was not captured.
    pub represents: bool,
    /// (second since the epoch, sent, received) with traffic.
    pub traffic: Vec<(u64, u64, u64)>,
}

/// Whether a sample's state is one of a connection that carries data (not being closed).
fn carries_data(state: u8) -> bool {
    // 1 ESTABLISHED, 2 SYN_SENT, 3 SYN_RECV, 8 CLOSE_WAIT, 12 NEW_SYN_RECV
    matches!(state, 1 | 2 | 3 | 8 | 12)
}

/// Everything the streaming pass and the join know, as [`NetFacts`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    c: Collector,
    sides: &[SideBrief],
    ends: &[(String, String)],
    samples: &[Sample],
    conns: &Connections,
    names: &BTreeMap<(u16, u32), (String, String)>,
    comms: &dyn Fn(u16, u32) -> String,
    node_names: &[String],
    start_ns: u64,
    bucket_ns: u64,
) -> NetFacts {
    let bucket_ns = bucket_ns.max(1);
    let bucket = |ts: u64| ts.saturating_sub(start_ns) / bucket_ns;
    let mut edges: BTreeMap<(String, String), BTreeMap<u64, EdgeBucket>> = BTreeMap::new();
    let edge_of = |i: usize| ends.get(i).filter(|(c, s)| !c.is_empty() && !s.is_empty());
    for (i, s) in sides.iter().enumerate() {
        let (Some(at), Some(e)) = (s.connected_at, edge_of(i)) else {
            continue;
        };
        if s.client && !s.failed {
            let b = edges
                .entry(e.clone())
                .or_default()
                .entry(bucket(at))
                .or_default();
            b.connects += 1;
        }
    }
    // Churn, lifetimes and bytes: each connection counted once, from the side standing for it.
    for (i, s) in sides.iter().enumerate() {
        let Some(e) = edge_of(i).filter(|_| s.represents && !s.failed) else {
            continue;
        };
        let m = edges.entry(e.clone()).or_default();
        if let Some(at) = s.opened_at {
            m.entry(bucket(at)).or_default().opened += 1;
        }
        if let Some(at) = s.closed_at {
            let b = m.entry(bucket(at)).or_default();
            b.closed += 1;
            if let Some(open) = s.opened_at {
                b.lifetimes.push(at.saturating_sub(open));
            }
        }
        for &(sec, out_b, in_b) in &s.traffic {
            let b = m
                .entry(bucket(sec.saturating_mul(1_000_000_000)))
                .or_default();
            let (to_server, to_client) = if s.client {
                (out_b, in_b)
            } else {
                (in_b, out_b)
            };
            b.bytes_sent += to_server;
            b.bytes_received += to_client;
        }
    }
    for smp in samples {
        let Some(i) = conns.owner(smp) else { continue };
        let i = i as usize;
        let (Some(e), Some(side)) = (edge_of(i), sides.get(i)) else {
            continue;
        };
        let b = edges
            .entry(e.clone())
            .or_default()
            .entry(bucket(smp.ts))
            .or_default();
        // The end that sent it: the sample's local endpoint is the retransmitting socket's.
        let by_server =
            (side.client && smp.local == side.remote) || (!side.client && smp.local != side.remote);
        if matches!(
            smp.kind,
            SampleKind::Retransmit | SampleKind::SynAckRetransmit
        ) && by_server
        {
            b.retransmits_by_server += 1;
        }
        match smp.kind {
            // The end that could not send: the sample's socket.
            SampleKind::ZeroWindow if by_server => b.zero_window_server += 1,
            SampleKind::ZeroWindow => b.zero_window_client += 1,
            SampleKind::SynAckRetransmit => {
                b.retransmits += 1;
                b.synack_retransmits += 1;
            }
            SampleKind::Retransmit if carries_data(smp.state) => b.retransmits += 1,
            SampleKind::Retransmit => b.retransmits_closing += 1,
            SampleKind::ResetReceived if side.client => b.resets_to_client += 1,
            SampleKind::ResetReceived => b.resets_to_server += 1,
        }
    }
    // RTT: the client side (node, pid, server endpoint) names the edge.
    let mut client_edges: BTreeMap<(u16, u32, Endpoint), usize> = BTreeMap::new();
    for (i, s) in sides.iter().enumerate() {
        if s.client && !s.failed && edge_of(i).is_some() {
            client_edges.entry((s.node, s.pid, s.remote)).or_insert(i);
        }
    }
    let shift = c.rtt_shift;
    let mut rtt: Vec<_> = c.rtt.into_iter().collect();
    rtt.sort_unstable_by_key(|&(k, _)| k);
    for ((node, pid, remote, sec), h) in rtt {
        // A slot wider than a bucket lands in the bucket of its start.
        let Some(e) = client_edges
            .get(&(node, pid, remote))
            .and_then(|&i| edge_of(i))
        else {
            continue;
        };
        let b = edges
            .entry(e.clone())
            .or_default()
            .entry(bucket((sec << shift).saturating_mul(1_000_000_000)))
            .or_default();
        b.rtt.merge(&h);
    }
    let mut processes: Vec<ProcFact> = names
        .iter()
        .map(|(&(node, pid), (service, _))| ProcFact {
            service: service.clone(),
            node: node_names
                .get(usize::from(node))
                .cloned()
                .unwrap_or_default(),
            pid,
            comm: comms(node, pid),
            life: c.lives.get(&(node, pid)).copied().unwrap_or_default(),
        })
        .collect();
    processes.sort_by(|a, b| (&a.service, &a.node, a.pid).cmp(&(&b.service, &b.node, b.pid)));
    NetFacts {
        start_ns,
        bucket_ns,
        edges,
        processes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_memory_is_bounded_whatever_the_length() {
        let mut c = Collector::default();
        let s = TcpSample {
            what: retrace_segment::TcpSampleKind::Rtt,
            local: Endpoint::new(std::net::Ipv4Addr::LOCALHOST, 40000),
            remote: Endpoint::new(std::net::Ipv4Addr::LOCALHOST, 5432),
            state: 1,
            srtt_us: 100,
            pid: Some(7),
        };
        // Four sockets' worth of samples every second for three days.
        for sec in 0..3 * 86_400u64 {
            for pid in 0..4 {
                c.rtt(
                    0,
                    sec * 1_000_000_000,
                    &TcpSample {
                        pid: Some(pid),
                        ..s.clone()
                    },
                    false,
                );
            }
        }
        assert!(c.rtt.len() <= RTT_CAP, "{}", c.rtt.len());
        assert!(c.rtt_shift >= 2);
        let n: u64 = c.rtt.values().map(Hist::count).sum();
        assert_eq!(n, 4 * 3 * 86_400, "no sample lost in the merging");
    }

    #[test]
    fn a_socket_counts_once_a_second_however_often_sampled() {
        let mut c = Collector::default();
        let at = |port: u16, srtt_us: u32| TcpSample {
            what: retrace_segment::TcpSampleKind::Rtt,
            local: Endpoint::new(std::net::Ipv4Addr::LOCALHOST, port),
            remote: Endpoint::new(std::net::Ipv4Addr::LOCALHOST, 5432),
            state: 1,
            srtt_us,
            pid: Some(7),
        };
        // A busy socket: its own syscalls and the sampler, twice in each second; an idle one:
        // the sampler only.
        for sec in 0..10u64 {
            let t = sec * 1_000_000_000;
            c.rtt(0, t + 100, &at(40000, 900), false);
            c.rtt(0, t + 500_000_000, &at(40000, 900), false);
            c.rtt(0, t + 200, &at(40001, 100), false);
        }
        // Both sockets go to the histograms of their process and server: 10 seconds, one
        // sample each a second (30 without the rule, the busy socket weighing double).
        let mut all = Hist::default();
        for h in c.rtt.values() {
            all.merge(h);
        }
        assert_eq!(all.count(), 20, "one sample a second each");
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Hist::default();
        for us in 1..=1000u32 {
            h.add(us);
        }
        let p50 = f64::from(h.quantile(0.5).expect("values"));
        let p99 = f64::from(h.quantile(0.99).expect("values"));
        assert!((p50 - 500.0).abs() / 500.0 < 0.06, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.06, "{p99}");
        assert_eq!(Hist::default().quantile(0.5), None);
        let mut g = Hist::default();
        g.merge(&h);
        g.merge(&h);
        assert_eq!(g.count(), 2000);
    }
}
