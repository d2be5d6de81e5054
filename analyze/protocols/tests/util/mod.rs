//! Reading the recorded corpora (`tests/data/<protocol>/<name>.rec`, written by
//! `tests/data/record.sh`) and replaying them through `Session`s.

#![allow(dead_code)]

use std::path::PathBuf;

use retrace_protocols::{Exchange, Role, Session};

/// One captured packet payload.
#[derive(Clone, Debug)]
pub struct Packet {
    pub stream: u32,
    pub ts_ns: u64,
    /// Client to server.
    pub from_client: bool,
    /// Real payload size.
    pub size: u64,
    /// Recorded prefix (up to 4096 bytes).
    pub bytes: Vec<u8>,
}

pub fn data_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Loads a `.rec` file.
pub fn load(rel: &str) -> Vec<Packet> {
    let text = std::fs::read_to_string(data_path(rel)).expect("corpus file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 5, "bad line in {rel}: {l}");
            Packet {
                stream: f[0].parse().expect("stream"),
                ts_ns: f[1].parse::<u64>().expect("ts") * 1000,
                from_client: f[2] == "c",
                size: f[3].parse().expect("size"),
                bytes: unhex(f[4]),
            }
        })
        .collect()
}

/// Messages as the capture daemon emits them: consecutive packets of one stream in one
/// direction merged into one message (first timestamp, total size), the payload cut to
/// `prefix` bytes.
pub fn messages(packets: &[Packet], prefix: usize) -> Vec<Packet> {
    let mut out: Vec<Packet> = Vec::new();
    let mut streams: Vec<u32> = packets.iter().map(|p| p.stream).collect();
    streams.sort_unstable();
    streams.dedup();
    for s in streams {
        let mut cur: Option<Packet> = None;
        for p in packets.iter().filter(|p| p.stream == s) {
            match &mut cur {
                Some(c) if c.from_client == p.from_client => {
                    c.size += p.size;
                    let room = prefix.saturating_sub(c.bytes.len());
                    c.bytes
                        .extend_from_slice(&p.bytes[..p.bytes.len().min(room)]);
                }
                _ => {
                    if let Some(c) = cur.take() {
                        out.push(c);
                    }
                    let mut c = p.clone();
                    c.bytes.truncate(prefix);
                    cur = Some(c);
                }
            }
        }
        out.extend(cur);
    }
    out
}

/// Replays messages of every stream through one session per stream for `role`; returns all
/// exchanges (stream order, then time order) and the sessions' protocol and stats.
pub fn replay(msgs: &[Packet], role: Role) -> Vec<(u32, Exchange)> {
    replay_full(msgs, role).0
}

/// Per stream: protocol and parse statistics.
pub type StreamInfo = (
    u32,
    retrace_protocols::Protocol,
    retrace_protocols::ParseStats,
);

pub fn replay_full(msgs: &[Packet], role: Role) -> (Vec<(u32, Exchange)>, Vec<StreamInfo>) {
    let mut streams: Vec<u32> = msgs.iter().map(|p| p.stream).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut all = Vec::new();
    let mut infos = Vec::new();
    for s in streams {
        let mut session = Session::new(role);
        for m in msgs.iter().filter(|m| m.stream == s) {
            let egress = match role {
                Role::Client => m.from_client,
                Role::Server => !m.from_client,
            };
            for x in session.push(m.ts_ns, egress, m.size, &m.bytes) {
                all.push((s, x));
            }
        }
        infos.push((s, session.protocol(), session.stats().clone()));
        for x in session.finish() {
            all.push((s, x));
        }
    }
    (all, infos)
}

/// Exchanges of a corpus replayed as the capture would see it (512-byte prefixes), client side.
pub fn client_exchanges(rel: &str) -> Vec<Exchange> {
    replay(&messages(&load(rel), 512), Role::Client)
        .into_iter()
        .map(|(_, x)| x)
        .collect()
}

/// Same, server side.
pub fn server_exchanges(rel: &str) -> Vec<Exchange> {
    replay(&messages(&load(rel), 512), Role::Server)
        .into_iter()
        .map(|(_, x)| x)
        .collect()
}

/// A short view of exchanges for assertions: (method, route, status, error).
pub fn summary(xs: &[Exchange]) -> Vec<(String, String, String, bool)> {
    xs.iter()
        .map(|x| {
            (
                x.method.to_string(),
                x.route.to_string(),
                x.status.to_string(),
                x.error,
            )
        })
        .collect()
}
