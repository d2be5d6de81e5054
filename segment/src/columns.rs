//! The columnar block codec: how a batch of events is laid out inside one block.
//!
//! A block is one rkyv-archived [`BlockV1`]. Events are not stored as rows: the order column
//! (`kinds`) holds each event's kind in append order, `ts` holds timestamp deltas, and every
//! field of every kind has its own byte stream ([`KindColumnsV1`]), written as LEB128
//! varints (signed values zigzag-encoded, related values as differences). Strings are block
//! dictionary ids; addresses, endpoints and connection ids are block-local tables defined on
//! first use, so a connection's repeated `(pid, fd, start_ns)` and endpoints cost one small id
//! per event. Payload prefixes of one kind sit together in one stream. zstd then compresses
//! the archive; see `docs/format.md` for the stream numbering of each kind.
//!
//! Decoding walks the order column and pulls each event from its kind's streams, so events
//! come back exactly in the order they were appended. Every read is bounds-checked: a damaged
//! or hostile block gives an error, never a panic.

use std::collections::HashMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::event::*;

/// Streams per kind (fields beyond this are a format error).
pub const MAX_STREAMS: usize = 16;

/// One block, as archived (after zstd decompression).
///
/// **Do not reorder fields**: this is the on-disk layout of format version 1.
#[derive(Archive, Serialize, Deserialize, Debug, Default)]
pub struct BlockV1 {
    /// Number of events.
    pub events: u32,
    /// Timestamp the first delta is relative to.
    pub base_ts: u64,
    /// Order column: the kind discriminant of each event, in append order.
    pub kinds: Vec<u8>,
    /// Zigzag varint timestamp deltas (each relative to the previous event), in append order.
    pub ts: Vec<u8>,
    /// String dictionary.
    pub strings: Vec<String>,
    /// Address table, 16 bytes per address.
    pub addrs: Vec<u8>,
    /// Shared streams: connection and endpoint definitions (see [`shared`]).
    pub shared: Vec<Vec<u8>>,
    /// The field streams of each kind present in the block.
    pub columns: Vec<KindColumnsV1>,
}

/// The field streams of one kind.
#[derive(Archive, Serialize, Deserialize, Debug, Default)]
pub struct KindColumnsV1 {
    /// Kind discriminant.
    pub kind: u8,
    /// Field streams, numbered per kind.
    pub streams: Vec<Vec<u8>>,
}

/// Indexes of the shared streams.
pub mod shared {
    /// New connection: pid.
    pub const CONN_PID: usize = 0;
    /// New connection: fd, zigzag.
    pub const CONN_FD: usize = 1;
    /// New connection: start_ns, zigzag delta from the first event using it.
    pub const CONN_START: usize = 2;
    /// New endpoint: address table index.
    pub const EP_ADDR: usize = 3;
    /// New endpoint: port.
    pub const EP_PORT: usize = 4;
    /// Number of shared streams.
    pub const COUNT: usize = 5;
}

// ---------------------------------------------------------------------------------------------
// Varints

fn put(s: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        s.push((v as u8) | 0x80);
        v >>= 7;
    }
    s.push(v as u8);
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_i(s: &mut Vec<u8>, v: i64) {
    put(s, zz(v));
}

/// Why a block could not be decoded.
pub type DecodeError = &'static str;

/// A read cursor over one stream.
#[derive(Clone, Copy, Default)]
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, pos: 0 }
    }

    #[inline(always)]
    fn u(&mut self) -> Result<u64, DecodeError> {
        // Fast paths: most values fit in one or two bytes.
        if let Some(&byte) = self.b.get(self.pos) {
            if byte < 0x80 {
                self.pos += 1;
                return Ok(u64::from(byte));
            }
            if let Some(&b1) = self.b.get(self.pos + 1) {
                if b1 < 0x80 {
                    self.pos += 2;
                    return Ok(u64::from(byte & 0x7f) | (u64::from(b1) << 7));
                }
            }
        }
        self.u_slow()
    }

    #[inline(never)]
    fn u_slow(&mut self) -> Result<u64, DecodeError> {
        // With ten bytes left, a fixed-size window lets the loop unroll without bounds checks.
        if let Some(w) = self.b.get(self.pos..self.pos + 10) {
            let w: &[u8; 10] = w.try_into().map_err(|_| "stream ended inside a value")?;
            let mut v: u64 = 0;
            for (i, &byte) in w.iter().enumerate() {
                v |= u64::from(byte & 0x7f) << (7 * i);
                if byte < 0x80 {
                    if i == 9 && byte > 1 {
                        return Err("varint overflows 64 bits");
                    }
                    self.pos += i + 1;
                    return Ok(v);
                }
            }
            return Err("varint longer than 10 bytes");
        }
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.b.get(self.pos) else {
                return Err("stream ended inside a value");
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err("varint longer than 10 bytes");
            }
        }
    }

    #[inline(always)]
    fn i(&mut self) -> Result<i64, DecodeError> {
        self.u().map(unzz)
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u()?).map_err(|_| "value out of range for u32")
    }

    #[inline(always)]
    fn i32(&mut self) -> Result<i32, DecodeError> {
        i32::try_from(self.i()?).map_err(|_| "value out of range for i32")
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let Some(&byte) = self.b.get(self.pos) else {
            return Err("stream ended inside a value");
        };
        self.pos += 1;
        Ok(byte)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(n).map_err(|_| "length out of range")?;
        let end = self.pos.checked_add(n).ok_or("length out of range")?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or("payload longer than its stream")?;
        self.pos = end;
        Ok(s)
    }

    /// A count of elements that each take at least one byte of this stream (bounds
    /// allocations by the data actually present).
    fn count_for(&self, n: u64) -> Result<usize, DecodeError> {
        let left = (self.b.len() - self.pos.min(self.b.len())) as u64;
        if n > left {
            return Err("element count larger than its stream");
        }
        usize::try_from(n).map_err(|_| "count out of range")
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder

/// A fast, non-cryptographic hasher for the encoder's dictionaries (keys come from our own
/// events, not from an adversary; SipHash was a visible share of write time).
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(a));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[derive(Default)]
struct KindEnc {
    streams: [Vec<u8>; MAX_STREAMS],
    /// Running state for delta-encoded fields (e.g. allocation addresses).
    last: u64,
}

impl KindEnc {
    fn len(&self) -> usize {
        self.streams.iter().map(Vec::len).sum()
    }
}

/// Builds one block incrementally as events are appended.
#[derive(Default)]
pub struct BlockBuilder {
    events: u32,
    base_ts: u64,
    last_ts: u64,
    min_ts: u64,
    max_ts: u64,
    kinds: Vec<u8>,
    ts: Vec<u8>,
    strings: Vec<String>,
    string_ids: FxMap<String, u64>,
    addrs: Vec<u8>,
    addr_ids: FxMap<Addr, u64>,
    endpoint_ids: FxMap<Endpoint, u64>,
    conn_ids: FxMap<ConnId, u64>,
    shared: [Vec<u8>; shared::COUNT],
    cols: Vec<Option<Box<KindEnc>>>,
    /// Emptied column encoders of the previous block, by kind, taken when a kind first
    /// appears (see [`BlockBuilder::recycled`]).
    spare_cols: Vec<Option<Box<KindEnc>>>,
    encoded_len: usize,
    by_kind: [u32; EventKind::ALL.len()],
    /// Bytes of strings a reader will materialize (every reference counted).
    string_bytes: usize,
}

impl BlockBuilder {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty block that reuses the buffers of `done` (a block just archived): a writer
    /// that recycles its blocks this way allocates, and grows its buffers, once.
    pub fn recycled(done: BlockV1) -> Self {
        fn emptied(mut v: Vec<u8>) -> Vec<u8> {
            v.clear();
            v
        }
        let mut strings = done.strings;
        strings.clear();
        let mut b = Self {
            kinds: emptied(done.kinds),
            ts: emptied(done.ts),
            addrs: emptied(done.addrs),
            strings,
            ..Self::default()
        };
        for (slot, v) in b.shared.iter_mut().zip(done.shared) {
            *slot = emptied(v);
        }
        for col in done.columns {
            let k = usize::from(col.kind);
            let mut enc = Box::<KindEnc>::default();
            for (slot, v) in enc.streams.iter_mut().zip(col.streams) {
                *slot = emptied(v);
            }
            if b.spare_cols.len() <= k {
                b.spare_cols.resize_with(k + 1, || None);
            }
            b.spare_cols[k] = Some(enc);
        }
        b
    }

    /// Events appended so far.
    pub fn events(&self) -> u32 {
        self.events
    }

    /// True when no event was appended.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Smallest and largest timestamps appended (0, 0 when empty).
    pub fn ts_range(&self) -> (u64, u64) {
        (self.min_ts, self.max_ts)
    }

    /// Events per kind discriminant.
    pub fn by_kind(&self) -> &[u32; EventKind::ALL.len()] {
        &self.by_kind
    }

    /// True when the block should be written now: `max_bytes` of encoded events (at most
    /// [`crate::capture::MAX_BLOCK_TARGET`]), [`crate::capture::MAX_BLOCK_EVENTS`] events, or
    /// half the strings a reader may materialize from one block.
    pub fn is_full(&self, max_bytes: usize) -> bool {
        self.encoded_len >= max_bytes.min(crate::capture::MAX_BLOCK_TARGET)
            || self.events >= crate::capture::MAX_BLOCK_EVENTS
            || self.string_bytes >= MAX_STRING_BYTES_PER_BLOCK / 2
    }

    /// Approximate size of the archived block before compression.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    fn string(&mut self, s: &str) -> u64 {
        self.string_bytes += s.len();
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        self.encoded_len += s.len() + 8;
        id
    }

    fn endpoint(&mut self, ep: &Endpoint) -> u64 {
        if let Some(&id) = self.endpoint_ids.get(ep) {
            return id;
        }
        let id = self.endpoint_ids.len() as u64;
        self.endpoint_ids.insert(*ep, id);
        let addr_id = match self.addr_ids.get(&ep.addr) {
            Some(&a) => a,
            None => {
                let a = self.addr_ids.len() as u64;
                self.addr_ids.insert(ep.addr, a);
                self.addrs.extend_from_slice(&ep.addr.0);
                self.encoded_len += 16;
                a
            }
        };
        put(&mut self.shared[shared::EP_ADDR], addr_id);
        put(&mut self.shared[shared::EP_PORT], u64::from(ep.port));
        self.encoded_len += 4;
        id
    }

    fn conn(&mut self, c: &ConnId, ts: u64) -> u64 {
        if let Some(&id) = self.conn_ids.get(c) {
            return id;
        }
        let id = self.conn_ids.len() as u64;
        self.conn_ids.insert(*c, id);
        put(&mut self.shared[shared::CONN_PID], u64::from(c.pid));
        put_i(&mut self.shared[shared::CONN_FD], i64::from(c.fd));
        put_i(
            &mut self.shared[shared::CONN_START],
            c.start_ns.wrapping_sub(ts) as i64,
        );
        self.encoded_len += 8;
        id
    }

    /// Appends one event.
    pub fn push(&mut self, ev: &Event) {
        if self.events == 0 {
            self.base_ts = ev.ts;
            self.last_ts = ev.ts;
            self.min_ts = ev.ts;
            self.max_ts = ev.ts;
        }
        self.min_ts = self.min_ts.min(ev.ts);
        self.max_ts = self.max_ts.max(ev.ts);
        let kind = ev.kind().as_u8();
        self.kinds.push(kind);
        put_i(&mut self.ts, ev.ts.wrapping_sub(self.last_ts) as i64);
        self.last_ts = ev.ts;
        self.events += 1;
        self.by_kind[usize::from(kind)] += 1;

        let k = usize::from(kind);
        if self.cols.len() <= k {
            self.cols.resize_with(k + 1, || None);
        }
        let mut enc = match self.cols[k].take() {
            Some(enc) => enc,
            None => self
                .spare_cols
                .get_mut(k)
                .and_then(Option::take)
                .unwrap_or_default(),
        };
        let before = enc.len();
        self.encode(ev, &mut enc);
        self.encoded_len += enc.len() - before + 2;
        self.cols[k] = Some(enc);
    }

    fn encode(&mut self, ev: &Event, e: &mut KindEnc) {
        let s = &mut e.streams;
        match &ev.body {
            EventBody::ProcExec(p) => {
                put(&mut s[0], u64::from(p.pid));
                put_i(&mut s[1], i64::from(p.ppid) - i64::from(p.pid));
                let id = self.string(&p.comm);
                put(&mut s[2], id);
                let id = self.string(&p.exe);
                put(&mut s[3], id);
                put(&mut s[4], p.cmdline.len() as u64);
                for a in &p.cmdline {
                    let id = self.string(a);
                    put(&mut s[5], id);
                }
                let id = self.string(&p.cgroup);
                put(&mut s[6], id);
                let id = p.container_id.as_deref().map_or(0, |c| self.string(c) + 1);
                put(&mut s[7], id);
            }
            EventBody::ProcFork(f) => {
                put(&mut s[0], u64::from(f.parent_pid));
                put_i(&mut s[1], i64::from(f.child_pid) - i64::from(f.parent_pid));
                let id = self.string(&f.comm);
                put(&mut s[2], id);
            }
            EventBody::ProcExit(x) => {
                put(&mut s[0], u64::from(x.pid));
                let id = self.string(&x.comm);
                put(&mut s[1], id);
                put_i(&mut s[2], i64::from(x.exit_code));
                put_i(&mut s[3], i64::from(x.signal));
                s[4].push(u8::from(x.oom_killed));
            }
            EventBody::Tcp(t) => {
                let c = self.conn(&t.conn, ev.ts);
                put(&mut s[0], c);
                put_i(&mut s[1], i64::from(t.tid) - i64::from(t.conn.pid));
                let l = self.endpoint(&t.local);
                put(&mut s[2], l);
                let r = self.endpoint(&t.remote);
                put(&mut s[3], r);
                match &t.step {
                    TcpStep::ConnectAttempt => s[4].push(0),
                    TcpStep::Established { latency_ns } => {
                        s[4].push(1);
                        put(&mut s[5], *latency_ns);
                    }
                    TcpStep::Failed { errno, latency_ns } => {
                        s[4].push(2);
                        put(&mut s[5], *latency_ns);
                        put_i(&mut s[6], i64::from(*errno));
                    }
                    TcpStep::Accepted => s[4].push(3),
                    TcpStep::Closed {
                        bytes_sent,
                        bytes_received,
                    } => {
                        s[4].push(4);
                        put(&mut s[7], *bytes_sent);
                        put(&mut s[8], *bytes_received);
                    }
                    TcpStep::ListenOpen => s[4].push(5),
                    TcpStep::ListenClose => s[4].push(6),
                }
            }
            EventBody::L7(m) => {
                let c = self.conn(&m.conn, ev.ts);
                put(&mut s[0], c);
                put_i(&mut s[1], i64::from(m.tid) - i64::from(m.conn.pid));
                let flags = dir_bit(m.direction) | (u8::from(m.tcp_seq.is_some()) << 1);
                s[2].push(flags);
                put_i(
                    &mut s[3],
                    m.size.wrapping_sub(m.payload.len() as u64) as i64,
                );
                put(&mut s[4], m.payload.len() as u64);
                s[5].extend_from_slice(&m.payload);
                if let Some(seq) = m.tcp_seq {
                    put(&mut s[6], u64::from(seq));
                }
                put(&mut s[7], u64::from(m.folded_calls));
                put(&mut s[8], m.folded_bytes);
                let l = self.endpoint(&m.local);
                put(&mut s[9], l);
                let r = self.endpoint(&m.remote);
                put(&mut s[10], r);
            }
            EventBody::TcpSample(t) => {
                // Bit 3 extends `what` (readers before it refuse the byte): with 0 a SYN-ACK's
                // retransmit, with 1 a zero window.
                let what = match t.what {
                    TcpSampleKind::Retransmit => 0,
                    TcpSampleKind::ResetSent => 1,
                    TcpSampleKind::ResetReceived => 2,
                    TcpSampleKind::Rtt => 3,
                    TcpSampleKind::SynAckRetransmit => 8,
                    TcpSampleKind::ZeroWindow => 9,
                };
                s[0].push(what | (u8::from(t.pid.is_some()) << 2));
                let l = self.endpoint(&t.local);
                put(&mut s[1], l);
                let r = self.endpoint(&t.remote);
                put(&mut s[2], r);
                s[3].push(t.state);
                put(&mut s[4], u64::from(t.srtt_us));
                if let Some(pid) = t.pid {
                    put(&mut s[5], u64::from(pid));
                }
            }
            EventBody::Udp(u) => {
                put(&mut s[0], u64::from(u.pid));
                put_i(&mut s[1], i64::from(u.tid) - i64::from(u.pid));
                s[2].push(dir_bit(u.direction));
                let l = self.endpoint(&u.local);
                put(&mut s[3], l);
                let r = self.endpoint(&u.remote);
                put(&mut s[4], r);
                put_i(
                    &mut s[5],
                    u.size.wrapping_sub(u.payload.len() as u64) as i64,
                );
                put(&mut s[6], u.payload.len() as u64);
                s[7].extend_from_slice(&u.payload);
            }
            EventBody::OomKill(o) => {
                put(&mut s[0], u64::from(o.pid));
                let id = self.string(&o.comm);
                put(&mut s[1], id);
            }
            EventBody::AllocSample(a) => {
                put(&mut s[0], u64::from(a.pid));
                put_i(&mut s[1], i64::from(a.tid) - i64::from(a.pid));
                put(&mut s[2], a.size);
                put_i(&mut s[3], a.addr.wrapping_sub(e.last) as i64);
                e.last = a.addr;
                put(&mut s[4], a.stack);
            }
            EventBody::AllocSnapshot(a) => {
                put(&mut s[0], u64::from(a.pid));
                put(&mut s[1], a.rss_bytes);
                put(&mut s[2], a.by_stack.len() as u64);
                for o in &a.by_stack {
                    put(&mut s[3], o.stack);
                    put(&mut s[4], o.bytes);
                    put(&mut s[5], o.count);
                }
            }
            EventBody::CpuSample(c) => {
                put(&mut s[0], u64::from(c.pid));
                put_i(&mut s[1], i64::from(c.tid) - i64::from(c.pid));
                put(&mut s[2], u64::from(c.cpu));
                s[3].push(
                    u8::from(c.user_stack.is_some()) | (u8::from(c.kernel_stack.is_some()) << 1),
                );
                if let Some(u) = c.user_stack {
                    put(&mut s[4], u);
                }
                if let Some(k) = c.kernel_stack {
                    put(&mut s[5], k);
                }
            }
            EventBody::StackDef(d) => {
                put(&mut s[0], d.id);
                s[1].push(u8::from(d.pid.is_some()));
                if let Some(pid) = d.pid {
                    put(&mut s[2], u64::from(pid));
                }
                put(&mut s[3], d.frames.len() as u64);
                let mut prev = 0u64;
                for f in &d.frames {
                    put_i(&mut s[4], f.wrapping_sub(prev) as i64);
                    prev = *f;
                }
                put(&mut s[5], d.symbols.len() as u64);
                for sym in &d.symbols {
                    let id = self.string(sym);
                    put(&mut s[6], id);
                }
            }
            EventBody::Log(l) => {
                put(&mut s[0], u64::from(l.pid));
                put_i(&mut s[1], i64::from(l.tid) - i64::from(l.pid));
                put_i(&mut s[2], i64::from(l.fd));
                let id = self.string(&l.path);
                put(&mut s[3], id);
                put_i(
                    &mut s[4],
                    l.size.wrapping_sub(l.payload.len() as u64) as i64,
                );
                put(&mut s[5], l.payload.len() as u64);
                s[6].extend_from_slice(&l.payload);
            }
            EventBody::Loss(l) => {
                s[0].push(l.kind.as_u8());
                put(&mut s[1], u64::from(l.cpu));
                put(&mut s[2], l.count);
                s[3].push(match l.reason {
                    LossReason::RingFull => 0,
                    LossReason::MapFull => 1,
                    LossReason::QueueFull => 2,
                    LossReason::Sampled => 3,
                });
                put_i(&mut s[4], l.from_ns.wrapping_sub(ev.ts) as i64);
                put_i(&mut s[5], l.to_ns.wrapping_sub(ev.ts) as i64);
            }
            EventBody::Mark(m) => {
                s[0].push(match m.source {
                    MarkSource::User => 0,
                    MarkSource::Signal => 1,
                    MarkSource::Trigger => 2,
                });
                let id = self.string(&m.note);
                put(&mut s[1], id);
            }
            EventBody::Node(n) => {
                for (i, text) in [&n.name, &n.hostname, &n.kernel].into_iter().enumerate() {
                    let id = self.string(text);
                    put(&mut s[i], id);
                }
                put(&mut s[3], n.boot_time_ns);
                put(&mut s[4], n.clock.mono_ns);
                put(&mut s[5], n.clock.wall_ns);
                put(&mut s[6], u64::from(n.cpus));
            }
            EventBody::ThreadStart(t) => {
                put(&mut s[0], u64::from(t.pid));
                put_i(&mut s[1], i64::from(t.parent_tid) - i64::from(t.pid));
                put_i(&mut s[2], i64::from(t.tid) - i64::from(t.parent_tid));
            }
            EventBody::Binary(b) => {
                put(&mut s[0], u64::from(b.id));
                let id = self.string(&b.build_id);
                put(&mut s[1], id);
                let id = self.string(&b.path);
                put(&mut s[2], id);
                put(&mut s[3], b.symbols.len() as u64);
                let mut prev = 0u64;
                for sym in &b.symbols {
                    put_i(&mut s[4], sym.offset.wrapping_sub(prev) as i64);
                    prev = sym.offset;
                    put(&mut s[5], sym.size);
                    put(&mut s[6], sym.name.len() as u64);
                    s[7].extend_from_slice(sym.name.as_bytes());
                }
            }
            EventBody::UserStack(u) => {
                put(&mut s[0], u.id);
                put(&mut s[1], u64::from(u.pid));
                s[2].push(u8::from(u.truncated));
                put(&mut s[3], u.frames.len() as u64);
                for f in &u.frames {
                    put(&mut s[4], u64::from(f.binary));
                    put(&mut s[5], f.offset);
                }
            }
            EventBody::HeapAlloc(a) => {
                put(&mut s[0], u64::from(a.pid));
                put_i(&mut s[1], i64::from(a.tid) - i64::from(a.pid));
                put(&mut s[2], a.size);
                put_i(&mut s[3], a.addr.wrapping_sub(e.last) as i64);
                e.last = a.addr;
                put(&mut s[4], a.period);
                put(&mut s[5], a.stack);
            }
            EventBody::HeapFree(f) => {
                put(&mut s[0], u64::from(f.pid));
                put_i(&mut s[1], i64::from(f.tid) - i64::from(f.pid));
                put_i(&mut s[2], f.addr.wrapping_sub(e.last) as i64);
                e.last = f.addr;
            }
            EventBody::OffCpu(o) => {
                put(&mut s[0], u64::from(o.pid));
                put_i(&mut s[1], i64::from(o.tid) - i64::from(o.pid));
                put(&mut s[2], o.blocked_ns);
                put_i(&mut s[3], i64::from(o.syscall));
                s[4].push(
                    u8::from(o.user_stack.is_some()) | (u8::from(o.kernel_stack.is_some()) << 1),
                );
                if let Some(u) = o.user_stack {
                    put(&mut s[5], u);
                }
                if let Some(k) = o.kernel_stack {
                    put(&mut s[6], k);
                }
            }
            EventBody::MemUsage(m) => {
                put(&mut s[0], u64::from(m.pid));
                put(&mut s[1], m.rss_anon);
                put(&mut s[2], m.rss_file);
                put(&mut s[3], m.rss_shmem);
            }
            EventBody::PageFault(f) => {
                put(&mut s[0], u64::from(f.pid));
                put_i(&mut s[1], i64::from(f.tid) - i64::from(f.pid));
                put_i(&mut s[2], f.addr.wrapping_sub(e.last) as i64);
                e.last = f.addr;
                put(&mut s[3], f.weight);
                put(&mut s[4], f.stack);
            }
            EventBody::CgroupMemory(c) => {
                let id = self.string(&c.cgroup);
                put(&mut s[0], id);
                put(&mut s[1], c.usage);
                s[2].push(u8::from(c.limit.is_some()));
                if let Some(limit) = c.limit {
                    put(&mut s[3], limit);
                }
                put(&mut s[4], c.oom_kills);
            }
        }
    }

    /// Finishes the block: the value to archive.
    pub fn finish(self) -> BlockV1 {
        let columns = self
            .cols
            .into_iter()
            .enumerate()
            .filter_map(|(k, enc)| {
                let enc = enc?;
                let mut streams: Vec<Vec<u8>> = enc.streams.into_iter().collect();
                while streams.last().is_some_and(Vec::is_empty) {
                    streams.pop();
                }
                Some(KindColumnsV1 {
                    kind: k as u8,
                    streams,
                })
            })
            .collect();
        BlockV1 {
            events: self.events,
            base_ts: self.base_ts,
            kinds: self.kinds,
            ts: self.ts,
            strings: self.strings,
            addrs: self.addrs,
            shared: self.shared.into_iter().collect(),
            columns,
        }
    }
}

fn dir_bit(d: Direction) -> u8 {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

fn dir_of(flags: u8) -> Direction {
    if flags & 1 == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder

struct KindDec<'a> {
    s: [Cur<'a>; MAX_STREAMS],
    last: u64,
}

struct Ctx<'a> {
    strings: &'a rkyv::vec::ArchivedVec<rkyv::string::ArchivedString>,
    addrs: &'a [u8],
    shared: [Cur<'a>; shared::COUNT],
    conns: Vec<ConnId>,
    endpoints: Vec<Endpoint>,
    /// Bytes of strings still allowed to be materialized from this block.
    string_budget: usize,
}

/// Most bytes of dictionary strings one block may materialize: a hostile block referencing a
/// long string from many events must not exhaust memory.
pub const MAX_STRING_BYTES_PER_BLOCK: usize = 256 << 20;

impl Ctx<'_> {
    fn string(&mut self, id: u64) -> Result<String, DecodeError> {
        let i = usize::try_from(id).map_err(|_| "string id out of range")?;
        let s = self
            .strings
            .get(i)
            .ok_or("string id out of range")?
            .as_str();
        self.string_budget = self
            .string_budget
            .checked_sub(s.len())
            .ok_or("strings of the block exceed the decoding limit")?;
        Ok(s.to_owned())
    }

    fn opt_string(&mut self, id: u64) -> Result<Option<String>, DecodeError> {
        if id == 0 {
            Ok(None)
        } else {
            self.string(id - 1).map(Some)
        }
    }

    #[inline(always)]
    fn conn(&mut self, id: u64, ts: u64) -> Result<ConnId, DecodeError> {
        let n = self.conns.len() as u64;
        if id < n {
            return Ok(self.conns[id as usize]);
        }
        if id > n {
            return Err("connection id not defined yet");
        }
        let pid = self.shared[shared::CONN_PID].u32()?;
        let fd = self.shared[shared::CONN_FD].i32()?;
        let start_ns = ts.wrapping_add(self.shared[shared::CONN_START].i()? as u64);
        let c = ConnId { pid, fd, start_ns };
        self.conns.push(c);
        Ok(c)
    }

    #[inline(always)]
    fn endpoint(&mut self, id: u64) -> Result<Endpoint, DecodeError> {
        let n = self.endpoints.len() as u64;
        if id < n {
            return Ok(self.endpoints[id as usize]);
        }
        if id > n {
            return Err("endpoint id not defined yet");
        }
        let a = usize::try_from(self.shared[shared::EP_ADDR].u()?)
            .map_err(|_| "address id out of range")?;
        let bytes = a
            .checked_mul(16)
            .and_then(|start| self.addrs.get(start..start.checked_add(16)?))
            .ok_or("address id out of range")?;
        let mut addr = [0u8; 16];
        addr.copy_from_slice(bytes);
        let port =
            u16::try_from(self.shared[shared::EP_PORT].u()?).map_err(|_| "port out of range")?;
        let ep = Endpoint {
            addr: Addr(addr),
            port,
        };
        self.endpoints.push(ep);
        Ok(ep)
    }
}

fn tid_of(pid: u32, d: i64) -> Result<u32, DecodeError> {
    i64::from(pid)
        .checked_add(d)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("thread id out of range")
}

fn size_of(len: usize, d: i64) -> u64 {
    (len as u64).wrapping_add(d as u64)
}

/// Decodes a validated archived block into its events, in append order.
pub fn decode(b: &ArchivedBlockV1) -> Result<Vec<Event>, DecodeError> {
    let mut out = Vec::with_capacity(b.kinds.len());
    decode_into(b, &mut out)?;
    Ok(out)
}

/// Decodes a validated archived block, handing each event to `sink` in append order; returns
/// the number of events.
pub fn decode_with(b: &ArchivedBlockV1, sink: impl FnMut(Event)) -> Result<usize, DecodeError> {
    struct Owned<F>(Slots, F);
    impl<F: FnMut(Event)> Target for Owned<F> {
        #[inline(always)]
        fn body(&mut self, kind: u8, ts: u64) -> &mut EventBody {
            self.0.body(kind, ts)
        }
        #[inline(always)]
        fn decoded(&mut self, kind: u8) {
            let slot = self.0.get(kind);
            (self.1)(Event {
                ts: slot.ts,
                body: std::mem::replace(&mut slot.body, EventBody::empty()),
            })
        }
    }
    walk(b, &mut Owned(Slots::new(), sink))
}

/// Decodes a validated archived block, appending its events to `out` in append order, each
/// decoded in place where it ends up; returns the number of events. On an error, `out` may
/// hold some of the block's events.
pub fn decode_into(b: &ArchivedBlockV1, out: &mut Vec<Event>) -> Result<usize, DecodeError> {
    struct Collect<'v>(&'v mut Vec<Event>);
    impl Target for Collect<'_> {
        #[inline(always)]
        fn body(&mut self, _kind: u8, ts: u64) -> &mut EventBody {
            self.0.push(Event {
                ts,
                body: EventBody::empty(),
            });
            let last = self.0.len() - 1;
            &mut self.0[last].body
        }
        #[inline(always)]
        fn decoded(&mut self, _kind: u8) {}
    }
    walk(b, &mut Collect(out))
}

/// Decodes a validated archived block, lending each event to `visit` in append order; returns
/// the number of events.
///
/// The fastest way to look at every event: events are decoded in place, and the payload
/// buffer of one event is reused for the next of its kind, so a visitor that only reads
/// (counts, filters, parses in place) allocates and moves nothing per event. Clone what must
/// outlive the call.
pub fn visit(b: &ArchivedBlockV1, visit: impl FnMut(&Event)) -> Result<usize, DecodeError> {
    struct Lend<F>(Slots, F);
    impl<F: FnMut(&Event)> Target for Lend<F> {
        #[inline(always)]
        fn body(&mut self, kind: u8, ts: u64) -> &mut EventBody {
            self.0.body(kind, ts)
        }
        #[inline(always)]
        fn decoded(&mut self, kind: u8) {
            (self.1)(self.0.get(kind))
        }
    }
    walk(b, &mut Lend(Slots::new(), visit))
}

/// Where the decoding loop puts each event.
trait Target {
    /// The body to decode an event of `kind` at `ts` into (overwritten in place).
    fn body(&mut self, kind: u8, ts: u64) -> &mut EventBody;
    /// The event just decoded into [`Target::body`] is complete.
    fn decoded(&mut self, kind: u8);
}

/// Slots: a power of two above the number of kinds (kinds are masked, not bounds-checked).
const SLOTS: usize = EventKind::ALL.len().next_power_of_two();

/// One event slot per kind, so that a kind's buffers are reused by its next event.
struct Slots([Event; SLOTS]);

impl Slots {
    fn new() -> Self {
        Slots(std::array::from_fn(|_| Event {
            ts: 0,
            body: EventBody::empty(),
        }))
    }

    #[inline(always)]
    fn get(&mut self, kind: u8) -> &mut Event {
        &mut self.0[usize::from(kind) & (SLOTS - 1)]
    }

    #[inline(always)]
    fn body(&mut self, kind: u8, ts: u64) -> &mut EventBody {
        let slot = self.get(kind);
        slot.ts = ts;
        &mut slot.body
    }
}

/// The decoding loop: walks the order column, decodes each event in place into the body the
/// target gives, and tells the target when it is complete.
#[inline(always)]
fn walk(b: &ArchivedBlockV1, target: &mut impl Target) -> Result<usize, DecodeError> {
    let n = b.events.to_native() as usize;
    if b.kinds.len() != n {
        return Err("order column length differs from the event count");
    }
    let mut shared_curs = [Cur::default(); shared::COUNT];
    for (i, s) in b.shared.iter().enumerate().take(shared::COUNT) {
        shared_curs[i] = Cur::new(s.as_slice());
    }
    let mut ctx = Ctx {
        strings: &b.strings,
        addrs: b.addrs.as_slice(),
        shared: shared_curs,
        conns: Vec::new(),
        endpoints: Vec::new(),
        string_budget: MAX_STRING_BYTES_PER_BLOCK,
    };
    let mut decs: Vec<Option<KindDec<'_>>> = EventKind::ALL.iter().map(|_| None).collect();
    for col in b.columns.iter() {
        let k = usize::from(col.kind);
        if k >= decs.len() {
            return Err("unknown event kind in the column list");
        }
        if col.streams.len() > MAX_STREAMS {
            return Err("too many streams for a kind");
        }
        if decs[k].is_some() {
            return Err("kind listed twice in the column list");
        }
        let mut s = [Cur::default(); MAX_STREAMS];
        for (i, st) in col.streams.iter().enumerate() {
            s[i] = Cur::new(st.as_slice());
        }
        decs[k] = Some(KindDec { s, last: 0 });
    }
    let mut ts_cur = Cur::new(b.ts.as_slice());
    let mut ts = b.base_ts.to_native();
    for &kind in b.kinds.iter() {
        ts = ts.wrapping_add(ts_cur.i()? as u64);
        let Some(Some(dec)) = decs.get_mut(usize::from(kind)) else {
            return Err("event of a kind without columns");
        };
        decode_one(kind, ts, dec, &mut ctx, target.body(kind, ts))?;
        target.decoded(kind);
    }
    Ok(n)
}

/// Copies a payload into the buffer of the previous event in `slot` (reusing its memory) and
/// hands it out.
#[inline(always)]
fn payload_from(bytes: &[u8], slot: &mut EventBody) -> Vec<u8> {
    let mut p = match slot {
        EventBody::L7(m) => std::mem::take(&mut m.payload),
        EventBody::Udp(m) => std::mem::take(&mut m.payload),
        EventBody::Log(m) => std::mem::take(&mut m.payload),
        _ => Vec::new(),
    };
    p.clear();
    p.extend_from_slice(bytes);
    p
}

#[inline(always)]
fn decode_one(
    kind: u8,
    ts: u64,
    d: &mut KindDec<'_>,
    ctx: &mut Ctx<'_>,
    slot: &mut EventBody,
) -> Result<(), DecodeError> {
    let s = &mut d.s;
    let kind = EventKind::from_u8(kind).ok_or("unknown event kind")?;
    *slot = match kind {
        EventKind::Tcp => {
            let conn = ctx.conn(s[0].u()?, ts)?;
            let tid = tid_of(conn.pid, s[1].i()?)?;
            let local = ctx.endpoint(s[2].u()?)?;
            let remote = ctx.endpoint(s[3].u()?)?;
            let step = match s[4].byte()? {
                0 => TcpStep::ConnectAttempt,
                1 => TcpStep::Established {
                    latency_ns: s[5].u()?,
                },
                2 => {
                    let latency_ns = s[5].u()?;
                    TcpStep::Failed {
                        errno: s[6].i32()?,
                        latency_ns,
                    }
                }
                3 => TcpStep::Accepted,
                4 => {
                    let bytes_sent = s[7].u()?;
                    TcpStep::Closed {
                        bytes_sent,
                        bytes_received: s[8].u()?,
                    }
                }
                5 => TcpStep::ListenOpen,
                6 => TcpStep::ListenClose,
                _ => return Err("unknown TCP step"),
            };
            let t = TcpEvent {
                conn,
                tid,
                local,
                remote,
                step,
            };
            // The hot kinds overwrite a slot of their own kind in place (no drop, no move
            // of the whole body).
            if let EventBody::Tcp(old) = slot {
                *old = t;
                return Ok(());
            }
            EventBody::Tcp(t)
        }
        EventKind::L7 => {
            let conn = ctx.conn(s[0].u()?, ts)?;
            let tid = tid_of(conn.pid, s[1].i()?)?;
            let flags = s[2].byte()?;
            if flags > 3 {
                return Err("unknown L7 flags");
            }
            let size_d = s[3].i()?;
            let len = s[4].u()?;
            let payload = payload_from(s[5].take(len)?, slot);
            let size = size_of(payload.len(), size_d);
            let tcp_seq = if flags & 2 != 0 {
                Some(s[6].u32()?)
            } else {
                None
            };
            let folded_calls = s[7].u32()?;
            let folded_bytes = s[8].u()?;
            let local = ctx.endpoint(s[9].u()?)?;
            let remote = ctx.endpoint(s[10].u()?)?;
            let m = L7Message {
                conn,
                tid,
                direction: dir_of(flags),
                size,
                payload,
                tcp_seq,
                folded_calls,
                folded_bytes,
                local,
                remote,
            };
            if let EventBody::L7(old) = slot {
                *old = m;
                return Ok(());
            }
            EventBody::L7(m)
        }
        _ => return decode_rare(kind, ts, d, ctx, slot),
    };
    Ok(())
}

/// The kinds that are rare in a capture, out of the hot loop (so that the TCP and L7 paths keep
/// their registers).
#[cold]
#[inline(never)]
fn decode_rare(
    kind: EventKind,
    ts: u64,
    d: &mut KindDec<'_>,
    ctx: &mut Ctx<'_>,
    slot: &mut EventBody,
) -> Result<(), DecodeError> {
    let s = &mut d.s;
    *slot = match kind {
        EventKind::ProcExec => {
            let pid = s[0].u32()?;
            let ppid = tid_of(pid, s[1].i()?)?;
            let comm = ctx.string(s[2].u()?)?;
            let exe = ctx.string(s[3].u()?)?;
            let n = s[4].u()?;
            let n = s[5].count_for(n)?;
            let mut cmdline = Vec::with_capacity(n);
            for _ in 0..n {
                cmdline.push(ctx.string(s[5].u()?)?);
            }
            let cgroup = ctx.string(s[6].u()?)?;
            let container_id = ctx.opt_string(s[7].u()?)?;
            EventBody::ProcExec(ProcExec {
                pid,
                ppid,
                comm,
                exe,
                cmdline,
                cgroup,
                container_id,
            })
        }
        EventKind::ProcFork => {
            let parent_pid = s[0].u32()?;
            let child_pid = tid_of(parent_pid, s[1].i()?)?;
            let comm = ctx.string(s[2].u()?)?;
            EventBody::ProcFork(ProcFork {
                parent_pid,
                child_pid,
                comm,
            })
        }
        EventKind::ProcExit => {
            let pid = s[0].u32()?;
            let comm = ctx.string(s[1].u()?)?;
            let exit_code = s[2].i32()?;
            let signal = s[3].i32()?;
            let oom_killed = bool_of(s[4].byte()?)?;
            EventBody::ProcExit(ProcExit {
                pid,
                comm,
                exit_code,
                signal,
                oom_killed,
            })
        }
        EventKind::TcpSample => {
            let flags = s[0].byte()?;
            let what = match flags & 0b1011 {
                0 => TcpSampleKind::Retransmit,
                1 => TcpSampleKind::ResetSent,
                2 => TcpSampleKind::ResetReceived,
                3 => TcpSampleKind::Rtt,
                8 => TcpSampleKind::SynAckRetransmit,
                9 => TcpSampleKind::ZeroWindow,
                _ => return Err("unknown TCP sample flags"),
            };
            if flags > 15 {
                return Err("unknown TCP sample flags");
            }
            let local = ctx.endpoint(s[1].u()?)?;
            let remote = ctx.endpoint(s[2].u()?)?;
            let state = s[3].byte()?;
            let srtt_us = s[4].u32()?;
            let pid = if flags & 4 != 0 {
                Some(s[5].u32()?)
            } else {
                None
            };
            EventBody::TcpSample(TcpSample {
                what,
                local,
                remote,
                state,
                srtt_us,
                pid,
            })
        }
        EventKind::Udp => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let flags = s[2].byte()?;
            if flags > 1 {
                return Err("unknown UDP flags");
            }
            let local = ctx.endpoint(s[3].u()?)?;
            let remote = ctx.endpoint(s[4].u()?)?;
            let size_d = s[5].i()?;
            let len = s[6].u()?;
            let payload = payload_from(s[7].take(len)?, slot);
            let size = size_of(payload.len(), size_d);
            EventBody::Udp(UdpMessage {
                pid,
                tid,
                direction: dir_of(flags),
                local,
                remote,
                size,
                payload,
            })
        }
        EventKind::OomKill => {
            let pid = s[0].u32()?;
            EventBody::OomKill(OomKill {
                pid,
                comm: ctx.string(s[1].u()?)?,
            })
        }
        EventKind::AllocSample => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let size = s[2].u()?;
            let addr = d.last.wrapping_add(s[3].i()? as u64);
            d.last = addr;
            let stack = s[4].u()?;
            EventBody::AllocSample(AllocSample {
                pid,
                tid,
                size,
                addr,
                stack,
            })
        }
        EventKind::AllocSnapshot => {
            let pid = s[0].u32()?;
            let rss_bytes = s[1].u()?;
            let n = s[2].u()?;
            let n = s[3].count_for(n)?;
            let mut by_stack = Vec::with_capacity(n);
            for _ in 0..n {
                let stack = s[3].u()?;
                let bytes = s[4].u()?;
                by_stack.push(OutstandingAllocs {
                    stack,
                    bytes,
                    count: s[5].u()?,
                });
            }
            EventBody::AllocSnapshot(AllocSnapshot {
                pid,
                rss_bytes,
                by_stack,
            })
        }
        EventKind::CpuSample => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let cpu = s[2].u32()?;
            let flags = s[3].byte()?;
            if flags > 3 {
                return Err("unknown CPU sample flags");
            }
            let user_stack = if flags & 1 != 0 {
                Some(s[4].u()?)
            } else {
                None
            };
            let kernel_stack = if flags & 2 != 0 {
                Some(s[5].u()?)
            } else {
                None
            };
            EventBody::CpuSample(CpuSample {
                pid,
                tid,
                cpu,
                user_stack,
                kernel_stack,
            })
        }
        EventKind::StackDef => {
            let id = s[0].u()?;
            let pid = match s[1].byte()? {
                0 => None,
                1 => Some(s[2].u32()?),
                _ => return Err("unknown stack flags"),
            };
            let n = s[3].u()?;
            let n = s[4].count_for(n)?;
            let mut frames = Vec::with_capacity(n);
            let mut prev = 0u64;
            for _ in 0..n {
                prev = prev.wrapping_add(s[4].i()? as u64);
                frames.push(prev);
            }
            let n = s[5].u()?;
            let n = s[6].count_for(n)?;
            let mut symbols = Vec::with_capacity(n);
            for _ in 0..n {
                symbols.push(ctx.string(s[6].u()?)?);
            }
            EventBody::StackDef(StackDef {
                id,
                pid,
                frames,
                symbols,
            })
        }
        EventKind::Log => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let fd = s[2].i32()?;
            let path = ctx.string(s[3].u()?)?;
            let size_d = s[4].i()?;
            let len = s[5].u()?;
            let payload = payload_from(s[6].take(len)?, slot);
            let size = size_of(payload.len(), size_d);
            EventBody::Log(LogWrite {
                pid,
                tid,
                fd,
                path,
                size,
                payload,
            })
        }
        EventKind::Loss => {
            let kind = EventKind::from_u8(s[0].byte()?).ok_or("unknown lost kind")?;
            let cpu = s[1].u32()?;
            let count = s[2].u()?;
            let reason = match s[3].byte()? {
                0 => LossReason::RingFull,
                1 => LossReason::MapFull,
                2 => LossReason::QueueFull,
                3 => LossReason::Sampled,
                _ => return Err("unknown loss reason"),
            };
            let from_ns = ts.wrapping_add(s[4].i()? as u64);
            let to_ns = ts.wrapping_add(s[5].i()? as u64);
            EventBody::Loss(LossMarker {
                kind,
                cpu,
                count,
                reason,
                from_ns,
                to_ns,
            })
        }
        EventKind::Mark => {
            let source = match s[0].byte()? {
                0 => MarkSource::User,
                1 => MarkSource::Signal,
                2 => MarkSource::Trigger,
                _ => return Err("unknown mark source"),
            };
            EventBody::Mark(Mark {
                source,
                note: ctx.string(s[1].u()?)?,
            })
        }
        EventKind::Node => {
            let name = ctx.string(s[0].u()?)?;
            let hostname = ctx.string(s[1].u()?)?;
            let kernel = ctx.string(s[2].u()?)?;
            let boot_time_ns = s[3].u()?;
            let mono_ns = s[4].u()?;
            let wall_ns = s[5].u()?;
            let cpus = s[6].u32()?;
            EventBody::Node(NodeInfo {
                name,
                hostname,
                kernel,
                boot_time_ns,
                clock: ClockSync { mono_ns, wall_ns },
                cpus,
            })
        }
        EventKind::ThreadStart => {
            let pid = s[0].u32()?;
            let parent_tid = tid_of(pid, s[1].i()?)?;
            let tid = tid_of(parent_tid, s[2].i()?)?;
            EventBody::ThreadStart(ThreadStart {
                pid,
                parent_tid,
                tid,
            })
        }
        EventKind::Binary => {
            let id = s[0].u32()?;
            let build_id = ctx.string(s[1].u()?)?;
            let path = ctx.string(s[2].u()?)?;
            let n = s[3].u()?;
            let n = s[4].count_for(n)?;
            let mut symbols = Vec::with_capacity(n);
            let mut prev = 0u64;
            for _ in 0..n {
                prev = prev.wrapping_add(s[4].i()? as u64);
                let size = s[5].u()?;
                let len = s[6].u()?;
                let name = String::from_utf8_lossy(s[7].take(len)?).into_owned();
                symbols.push(Symbol {
                    offset: prev,
                    size,
                    name,
                });
            }
            EventBody::Binary(BinaryInfo {
                id,
                build_id,
                path,
                symbols,
            })
        }
        EventKind::UserStack => {
            let id = s[0].u()?;
            let pid = s[1].u32()?;
            let truncated = match s[2].byte()? {
                0 => false,
                1 => true,
                _ => return Err("unknown user stack flags"),
            };
            let n = s[3].u()?;
            let n = s[4].count_for(n)?;
            let mut frames = Vec::with_capacity(n);
            for _ in 0..n {
                let binary = s[4].u32()?;
                frames.push(Frame {
                    binary,
                    offset: s[5].u()?,
                });
            }
            EventBody::UserStack(UserStack {
                id,
                pid,
                frames,
                truncated,
            })
        }
        EventKind::HeapAlloc => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let size = s[2].u()?;
            let addr = d.last.wrapping_add(s[3].i()? as u64);
            d.last = addr;
            let period = s[4].u()?;
            let stack = s[5].u()?;
            EventBody::HeapAlloc(HeapAlloc {
                pid,
                tid,
                size,
                addr,
                period,
                stack,
            })
        }
        EventKind::HeapFree => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let addr = d.last.wrapping_add(s[2].i()? as u64);
            d.last = addr;
            EventBody::HeapFree(HeapFree { pid, tid, addr })
        }
        EventKind::OffCpu => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let blocked_ns = s[2].u()?;
            let syscall = i32::try_from(s[3].i()?).map_err(|_| "syscall number out of range")?;
            let flags = s[4].byte()?;
            if flags > 3 {
                return Err("unknown off-CPU flags");
            }
            let user_stack = if flags & 1 != 0 {
                Some(s[5].u()?)
            } else {
                None
            };
            let kernel_stack = if flags & 2 != 0 {
                Some(s[6].u()?)
            } else {
                None
            };
            EventBody::OffCpu(OffCpu {
                pid,
                tid,
                blocked_ns,
                syscall,
                user_stack,
                kernel_stack,
            })
        }
        EventKind::MemUsage => {
            let pid = s[0].u32()?;
            let rss_anon = s[1].u()?;
            let rss_file = s[2].u()?;
            EventBody::MemUsage(MemUsage {
                pid,
                rss_anon,
                rss_file,
                rss_shmem: s[3].u()?,
            })
        }
        EventKind::PageFault => {
            let pid = s[0].u32()?;
            let tid = tid_of(pid, s[1].i()?)?;
            let addr = d.last.wrapping_add(s[2].i()? as u64);
            d.last = addr;
            let weight = s[3].u()?;
            EventBody::PageFault(PageFault {
                pid,
                tid,
                addr,
                weight,
                stack: s[4].u()?,
            })
        }
        EventKind::CgroupMemory => {
            let cgroup = ctx.string(s[0].u()?)?;
            let usage = s[1].u()?;
            let limit = match s[2].byte()? {
                0 => None,
                1 => Some(s[3].u()?),
                _ => return Err("unknown cgroup memory flags"),
            };
            EventBody::CgroupMemory(CgroupMemory {
                cgroup,
                usage,
                limit,
                oom_kills: s[4].u()?,
            })
        }
        EventKind::Tcp | EventKind::L7 => return Err("hot kind on the rare path"),
    };
    Ok(())
}

/// Validates (rkyv checked access) and decodes an uncompressed block archive: what
/// [`crate::SegmentReader::read_block`] does after checksum and decompression. For fuzzing
/// and tools; `bytes` need not be aligned (they are copied).
pub fn decode_bytes(bytes: &[u8]) -> Result<Vec<Event>, String> {
    decode_bytes_via(bytes, DecodePath::Owned)
}

/// The three ways the decoder hands events out (they share one decoding loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodePath {
    /// Each event handed over by value ([`decode_with`]).
    Owned,
    /// Each event lent from a reused slot ([`visit`]), cloned here.
    Lent,
    /// Events decoded in place into a vector ([`decode_into`]).
    Collected,
}

/// Like [`decode_bytes`], through the given path: for fuzzing that the paths agree.
pub fn decode_bytes_via(bytes: &[u8], path: DecodePath) -> Result<Vec<Event>, String> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let a = rkyv::access::<ArchivedBlockV1, rkyv::rancor::Error>(&aligned)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match path {
        DecodePath::Owned => decode_with(a, |e| out.push(e)),
        DecodePath::Lent => visit(a, |e| out.push(e.clone())),
        DecodePath::Collected => decode_into(a, &mut out),
    }
    .map_err(str::to_string)?;
    Ok(out)
}

/// Encodes events into an uncompressed block archive (the inverse of [`decode_bytes`]).
pub fn encode_bytes(events: &[Event]) -> Result<Vec<u8>, String> {
    let mut b = BlockBuilder::new();
    for e in events {
        b.push(e);
    }
    rkyv::to_bytes::<rkyv::rancor::Error>(&b.finish())
        .map(|v| v.to_vec())
        .map_err(|e| e.to_string())
}

fn bool_of(b: u8) -> Result<bool, DecodeError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err("invalid boolean"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut s = Vec::new();
            put(&mut s, v);
            assert_eq!(Cur::new(&s).u(), Ok(v));
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut s = Vec::new();
            put_i(&mut s, v);
            assert_eq!(Cur::new(&s).i(), Ok(v));
        }
    }

    #[test]
    fn overlong_varints_are_errors() {
        assert!(Cur::new(&[0xff; 11]).u().is_err());
        assert!(
            Cur::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .u()
                .is_err()
        );
        assert!(Cur::new(&[0x80]).u().is_err());
    }
}
