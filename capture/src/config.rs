//! What a capture is asked to do: streams, filters, limits, parsed and validated.
//!
//! The CLI (`src/cmd/capture.rs`) fills a [`CaptureConfig`]; everything here is plain data
//! with parsers for the human forms (`2GiB`, `15m`, `proc,tcp`), so it is unit-tested
//! without a kernel.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::CaptureError;

/// A stream of events the capture can record, each selectable with `--streams`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// exec, fork, exit (code, signal), OOM victims.
    Proc,
    /// TCP lifecycle (connect, established, failed, accept, close, listen), retransmits,
    /// resets, RTT samples.
    Tcp,
    /// Payload prefixes of message starts on TCP sockets.
    L7,
    /// UDP datagrams to or from port 53.
    Dns,
    /// Writes to fd 1 and 2 and to files under /var/log.
    Logs,
}

impl Stream {
    /// Every stream, in order.
    pub const ALL: [Stream; 5] = [
        Stream::Proc,
        Stream::Tcp,
        Stream::L7,
        Stream::Dns,
        Stream::Logs,
    ];

    /// The name used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Proc => "proc",
            Stream::Tcp => "tcp",
            Stream::L7 => "l7",
            Stream::Dns => "dns",
            Stream::Logs => "logs",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stream {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stream::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                CaptureError::Config(format!(
                    "unknown stream {s:?} (known: proc, tcp, l7, dns, logs)"
                ))
            })
    }
}

/// A set of streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Streams(u8);

impl Streams {
    /// The default set: all of them.
    pub fn all() -> Self {
        Stream::ALL.into_iter().collect()
    }

    /// True when `s` is selected.
    pub fn has(self, s: Stream) -> bool {
        self.0 & (1 << s as u8) != 0
    }

    /// Adds `s`.
    pub fn insert(&mut self, s: Stream) {
        self.0 |= 1 << s as u8;
    }

    /// The selected streams, in order.
    pub fn list(self) -> Vec<Stream> {
        Stream::ALL.into_iter().filter(|s| self.has(*s)).collect()
    }

    /// Names of the selected streams.
    pub fn names(self) -> Vec<String> {
        self.list().iter().map(|s| s.name().to_string()).collect()
    }

    /// True when nothing is selected.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Stream> for Streams {
    fn from_iter<I: IntoIterator<Item = Stream>>(iter: I) -> Self {
        let mut s = Streams(0);
        for k in iter {
            s.insert(k);
        }
        s
    }
}

impl FromStr for Streams {
    type Err = CaptureError;
    /// `proc,tcp,l7`; `all` for every stream. `l7` implies `tcp` (it needs its socket table).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = Streams(0);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                return Ok(Streams::all());
            }
            set.insert(part.parse()?);
        }
        if set.is_empty() {
            return Err(CaptureError::Config("--streams selects nothing".into()));
        }
        if set.has(Stream::L7) {
            set.insert(Stream::Tcp);
        }
        Ok(set)
    }
}

/// How much of a ring capture to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepPolicy {
    /// Keep everything (up to `--max-size`).
    All,
    /// Keep segments younger than this.
    Age(Duration),
    /// Keep at most this many bytes of segments.
    Bytes(u64),
}

impl FromStr for KeepPolicy {
    type Err = CaptureError;
    /// `15m`, `2h`, `90s` (an age) or `2GiB`, `500MB` (a size); `all`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "all" {
            return Ok(KeepPolicy::All);
        }
        if let Ok(d) = parse_duration(s) {
            return Ok(KeepPolicy::Age(d));
        }
        parse_size(s).map(KeepPolicy::Bytes).map_err(|_| {
            CaptureError::Config(format!(
                "--keep {s:?}: expected an age (15m, 2h) or a size (2GiB, 500MB)"
            ))
        })
    }
}

/// Parses a size: a number with an optional unit `B`, `K`/`KB`/`KiB`, `M`..., `G`..., `T`...
/// (decimal units for `KB`, binary for `K` and `KiB`).
pub fn parse_size(s: &str) -> Result<u64, CaptureError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || CaptureError::Config(format!("bad size {s:?} (examples: 512MiB, 2GiB, 100MB)"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Parses a duration: `500ms`, `30s`, `15m`, `2h`, `1d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, CaptureError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || CaptureError::Config(format!("bad duration {s:?} (examples: 30s, 15m, 2h)"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Largest `--payload-bytes`.
pub const MAX_PAYLOAD_BYTES: u32 = retrace_bpf::PAYLOAD_MAX as u32;

/// Everything `retrace capture` was asked for.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Capture directory.
    pub out: PathBuf,
    /// Stop after this long (None: until SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// Hard quota on the directory's bytes.
    pub max_size: Option<u64>,
    /// Rotate segments at this size.
    pub segment_size: u64,
    /// Rotate segments at this age.
    pub segment_time: Duration,
    /// Ring mode.
    pub keep: KeepPolicy,
    /// A mark pins segments from `pin` before to `pin` after it.
    pub pin: Duration,
    /// Only this process (tgid), in the kernel.
    pub pid: Option<u32>,
    /// Only processes with this command name (at most 15 bytes), in the kernel.
    pub comm: Option<String>,
    /// Only processes whose cgroup path contains this, in user space.
    pub cgroup: Option<String>,
    /// Only TCP connections with this local or remote port, in the kernel.
    pub port: Option<u16>,
    /// Payload prefix kept per message (<= 4096).
    pub payload_bytes: u32,
    /// Node name (default: hostname).
    pub node: Option<String>,
    /// Streams.
    pub streams: Streams,
    /// Size of the payload ring buffers, split between one ring per CPU, each at least 1 MiB
    /// or the whole size (the control ring is a quarter of it, at least 256 KiB).
    pub ring_size: u64,
    /// Redact secrets before they reach disk.
    pub redact: bool,
    /// The user's redaction rules, added to the built-in ones (YAML, `redact_rules`).
    pub redact_rules: Option<PathBuf>,
    /// zstd level of segment blocks (1: the cheapest level that still keeps captures far
    /// smaller than a pcap of the same traffic).
    pub zstd_level: i32,
    /// Print a line per second with rates and drops.
    pub verbose: bool,
    /// How often the socket sampler looks at every followed connection (RTT of idle ones,
    /// zero windows); `None`: never. Only the sockets of the daemon's network namespace.
    pub sock_interval: Option<Duration>,
    /// The profile streams: CPU, off-CPU, heap sampling, memory growth.
    pub profile: crate::profile::ProfileConfig,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::from("retrace-capture"),
            duration: None,
            max_size: None,
            segment_size: 256 << 20,
            segment_time: Duration::from_secs(600),
            keep: KeepPolicy::All,
            pin: Duration::from_secs(300),
            pid: None,
            comm: None,
            cgroup: None,
            port: None,
            payload_bytes: 512,
            node: None,
            streams: Streams::all(),
            ring_size: 8 << 20,
            redact: true,
            redact_rules: None,
            zstd_level: 1,
            verbose: false,
            sock_interval: Some(Duration::from_secs(1)),
            profile: crate::profile::ProfileConfig::default(),
        }
    }
}

impl CaptureConfig {
    /// Checks the values that parsing alone cannot.
    pub fn validate(&self) -> Result<(), CaptureError> {
        let bad = |m: String| Err(CaptureError::Config(m));
        self.profile.validate()?;
        if self.payload_bytes > MAX_PAYLOAD_BYTES {
            return bad(format!(
                "--payload-bytes {} is over the maximum {MAX_PAYLOAD_BYTES}",
                self.payload_bytes
            ));
        }
        if let Some(c) = &self.comm {
            if c.is_empty() || c.len() > 15 {
                return bad(format!(
                    "--comm {c:?}: a command name has 1 to 15 bytes (see /proc/PID/comm)"
                ));
            }
        }
        if self.streams.is_empty() {
            return bad("no stream selected".into());
        }
        if self.ring_size < 64 << 10 || self.ring_size > 1 << 30 {
            return bad(format!(
                "--ring-size {}: choose between 64KiB and 1GiB",
                self.ring_size
            ));
        }
        if self.segment_size < 64 << 10 {
            return bad("--segment-size must be at least 64KiB".into());
        }
        if self.segment_time < Duration::from_secs(1) {
            return bad("--segment-time must be at least 1s".into());
        }
        if let (Some(max), KeepPolicy::Bytes(keep)) = (self.max_size, self.keep) {
            if keep > max {
                return bad(format!(
                    "--keep {keep} bytes is larger than --max-size {max}: the quota would stop \
                     the capture before the ring rotates"
                ));
            }
        }
        Ok(())
    }

    /// The data ring's size: a power of two (the kernel requires it), at least 64 KiB.
    pub fn data_ring_bytes(&self) -> u32 {
        pow2_clamp(self.ring_size)
    }

    /// The size of each CPU's payload ring when `cpus` share the data ring's size: a power
    /// of two, together no more than the data ring, except that each gets at least 1 MiB
    /// (or the whole data ring when that is smaller). Without that floor a machine with many
    /// CPUs would give each a sliver, and one busy CPU would fill its ring in milliseconds.
    pub fn data_ring_bytes_per_cpu(&self, cpus: usize) -> u32 {
        let total = u64::from(self.data_ring_bytes());
        let share = total / (cpus.max(1) as u64);
        let share = if share.is_power_of_two() {
            share
        } else {
            share.next_power_of_two() / 2
        };
        pow2_clamp(share.max(total.min(1 << 20)))
    }

    /// The control ring's size (proc and tcp records): a quarter of the data ring, at least
    /// 256 KiB.
    pub fn ctl_ring_bytes(&self) -> u32 {
        pow2_clamp((self.ring_size / 4).max(256 << 10))
    }

    /// The options as recorded in the manifest.
    pub fn manifest_options(&self) -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        if let Some(d) = self.duration {
            put("duration", format!("{}s", d.as_secs_f64()));
        }
        if let Some(s) = self.max_size {
            put("max_size", s.to_string());
        }
        put("segment_size", self.segment_size.to_string());
        put("segment_time", format!("{}s", self.segment_time.as_secs()));
        put(
            "keep",
            match self.keep {
                KeepPolicy::All => "all".into(),
                KeepPolicy::Age(d) => format!("{}s", d.as_secs()),
                KeepPolicy::Bytes(b) => format!("{b}B"),
            },
        );
        put("pin", format!("{}s", self.pin.as_secs()));
        if let Some(p) = self.pid {
            put("pid", p.to_string());
        }
        if let Some(c) = &self.comm {
            put("comm", c.clone());
        }
        if let Some(c) = &self.cgroup {
            put("cgroup", c.clone());
        }
        if let Some(p) = self.port {
            put("port", p.to_string());
        }
        put("payload_bytes", self.payload_bytes.to_string());
        put("ring_size", self.ring_size.to_string());
        put("redact", self.redact.to_string());
        if let Some(r) = &self.redact_rules {
            put("redact_rules", r.display().to_string());
        }
        m
    }
}

/// Rounds up to a power of two within [64 KiB, 1 GiB].
fn pow2_clamp(v: u64) -> u32 {
    let v = v.clamp(64 << 10, 1 << 30);
    let p = v.next_power_of_two().min(1 << 30);
    u32::try_from(p).unwrap_or(1 << 30)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn streams_parse_and_imply_tcp_for_l7() {
        let s: Streams = "proc,l7".parse().unwrap();
        assert_eq!(s.names(), ["proc", "tcp", "l7"]);
        assert!("proc,bogus".parse::<Streams>().is_err());
        assert!(",".parse::<Streams>().is_err());
        assert_eq!("all".parse::<Streams>().unwrap(), Streams::all());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations_and_keep() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1y").is_err());
        assert_eq!(
            "15m".parse::<KeepPolicy>().unwrap(),
            KeepPolicy::Age(Duration::from_secs(900))
        );
        assert_eq!(
            "2GiB".parse::<KeepPolicy>().unwrap(),
            KeepPolicy::Bytes(2 << 30)
        );
        assert!("soon".parse::<KeepPolicy>().is_err());
    }

    #[test]
    fn validation() {
        let mut c = CaptureConfig::default();
        assert!(c.validate().is_ok());
        c.payload_bytes = 4097;
        assert!(c.validate().is_err());
        c.payload_bytes = 4096;
        c.comm = Some("a-name-longer-than-15".into());
        assert!(c.validate().is_err());
        c.comm = None;
        c.max_size = Some(1 << 30);
        c.keep = KeepPolicy::Bytes(2 << 30);
        assert!(c.validate().is_err());
    }

    #[test]
    fn ring_sizes_are_powers_of_two() {
        let c = CaptureConfig {
            ring_size: 3 << 20,
            ..Default::default()
        };
        assert_eq!(c.data_ring_bytes(), 4 << 20);
        assert_eq!(c.ctl_ring_bytes(), 1 << 20);
        let c = CaptureConfig {
            ring_size: 64 << 10,
            ..Default::default()
        };
        assert_eq!(c.ctl_ring_bytes(), 256 << 10);
        let c = CaptureConfig {
            ring_size: 8 << 20,
            ..Default::default()
        };
        assert_eq!(c.data_ring_bytes_per_cpu(1), 8 << 20);
        assert_eq!(c.data_ring_bytes_per_cpu(2), 4 << 20);
        assert_eq!(c.data_ring_bytes_per_cpu(3), 2 << 20);
        assert_eq!(c.data_ring_bytes_per_cpu(0), 8 << 20);
        assert_eq!(c.data_ring_bytes_per_cpu(8), 1 << 20);
        assert_eq!(c.data_ring_bytes_per_cpu(64), 1 << 20);
        let small = CaptureConfig {
            ring_size: 64 << 10,
            ..Default::default()
        };
        assert_eq!(small.data_ring_bytes_per_cpu(2), 64 << 10);
    }
}
