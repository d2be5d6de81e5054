//! `retrace export pprof CAPTURE... --type heap|cpu|offcpu --out FILE.pb.gz`: the profiles of
//! the analysis as a gzipped `profile.proto`, the format `go tool pprof` and `pprof` read.
//!
//! - `heap`: sample types `alloc_objects`/count, `alloc_space`/bytes,
//!   `inuse_objects`/count, `inuse_space`/bytes (the default), as Go's heap profiles have
//!   them; every value weight-corrected (a sample of `size` bytes taken with mean period P
//!   stands for `1 / (1 - exp(-size / P))` allocations), in use meaning outstanding at the end
//!   of the capture.
//! - `cpu`: `samples`/count and `cpu`/nanoseconds, each sample worth one sampling period. The
//!   capture does not record its sampling frequency: the period is `1 s / --frequency` when
//!   given, else the frequency the samples' spacing shows (the median interval between
//!   consecutive samples of one CPU, rounded to a whole Hz), else 99 Hz.
//! - `offcpu`: `contentions`/count and `delay`/nanoseconds by blocking stack.
//!
//! One mapping per binary (its path as the file name, its GNU build id; the one holding
//! `main` first, which pprof takes for the main binary), the kernel and anonymous memory; a location per (mapping, address) with the address being the file
//! offset (user frames) or the kernel address, and its function; functions by name. Samples
//! carry the labels `service` and `pid`. Nothing is symbolized again: the functions are the
//! analysis's, named from the capture's symbol tables.
//!
//! The messages are written by hand from pprof's `profile.proto` with prost's derive.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use prost::Message;
use retrace_analyze::profiles::Profiles;
use retrace_analyze::Analysis;

use crate::cmd::analyze::Input;

/// Arguments of `retrace export pprof`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    /// File to write (`-`: standard output).
    #[arg(long, short, value_name = "FILE.pb.gz")]
    out: PathBuf,
    /// Which profile.
    #[arg(long = "type", value_enum, default_value_t = ProfileType::Heap)]
    kind: ProfileType,
    /// CPU sampling frequency per CPU, Hz (default: what the samples' spacing shows, else 99).
    #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    frequency: Option<u32>,
}

/// The profiles `retrace export pprof` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileType {
    /// Outstanding and allocated memory by allocating stack.
    Heap,
    /// CPU samples by stack.
    Cpu,
    /// Time blocked off CPU by stack.
    Offcpu,
}

/// Runs `retrace export pprof`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let analysis = args.input.analyze()?;
    let profile = build(&analysis, args.kind, args.frequency);
    let samples = profile.sample.len();
    let bytes = encode(&profile)?;
    super::write_output(&args.out, |w| w.write_all(&bytes))?;
    if !args.input.quiet {
        eprintln!(
            "{samples} {} samples ({} locations, {} functions) written to {}",
            match args.kind {
                ProfileType::Heap => "heap",
                ProfileType::Cpu => "CPU",
                ProfileType::Offcpu => "off-CPU",
            },
            profile.location.len(),
            profile.function.len(),
            args.out.display()
        );
        if samples == 0 {
            eprintln!("note: the capture has no such profile events");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The CPU sampling period used for `--type cpu`, ns.
pub fn cpu_period_ns(p: &Profiles, frequency: Option<u32>) -> i64 {
    let hz = match frequency {
        Some(f) => f64::from(f),
        None => p
            .cpu_frequency_hz
            .map(f64::round)
            .filter(|f| *f >= 1.0)
            .unwrap_or(99.0),
    };
    (1e9 / hz).round() as i64
}

/// Gzips the encoded profile.
pub fn encode(profile: &proto::Profile) -> anyhow::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .context("compressing the profile")?;
    gz.finish().context("compressing the profile")
}

/// Strings of a profile, `""` first.
struct Strings {
    table: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        Self {
            table: vec![String::new()],
            ids: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }
}

/// The profile of `kind` of an analysis.
pub fn build(a: &Analysis, kind: ProfileType, frequency: Option<u32>) -> proto::Profile {
    let p = &a.profiles;
    let cat = &p.catalog;
    let mut st = Strings::new();
    let vt = |st: &mut Strings, t: &str, u: &str| proto::ValueType {
        r#type: st.id(t),
        unit: st.id(u),
    };
    let (sample_type, period_type, period, default) = match kind {
        ProfileType::Heap => (
            vec![
                vt(&mut st, "alloc_objects", "count"),
                vt(&mut st, "alloc_space", "bytes"),
                vt(&mut st, "inuse_objects", "count"),
                vt(&mut st, "inuse_space", "bytes"),
            ],
            Some(vt(&mut st, "space", "bytes")),
            0,
            st.id("inuse_space"),
        ),
        ProfileType::Cpu => (
            vec![
                vt(&mut st, "samples", "count"),
                vt(&mut st, "cpu", "nanoseconds"),
            ],
            Some(vt(&mut st, "cpu", "nanoseconds")),
            cpu_period_ns(p, frequency),
            st.id("cpu"),
        ),
        ProfileType::Offcpu => (
            vec![
                vt(&mut st, "contentions", "count"),
                vt(&mut st, "delay", "nanoseconds"),
            ],
            Some(vt(&mut st, "delay", "nanoseconds")),
            1,
            st.id("delay"),
        ),
    };
    // (locations innermost first, values, service, pid)
    let rows: Vec<(&[u32], Vec<i64>, &str, u32)> = match kind {
        ProfileType::Heap => p
            .leaks
            .iter()
            .map(|l| {
                (
                    l.locations.as_slice(),
                    vec![
                        l.allocated_count.round() as i64,
                        l.allocated_bytes.round() as i64,
                        l.allocations.round() as i64,
                        l.outstanding_bytes.round() as i64,
                    ],
                    l.service.as_str(),
                    l.pid,
                )
            })
            .collect(),
        ProfileType::Cpu => p
            .cpu
            .iter()
            .map(|s| {
                (
                    s.locations.as_slice(),
                    vec![s.value as i64, (s.value as i64).saturating_mul(period)],
                    s.service.as_str(),
                    s.pid,
                )
            })
            .collect(),
        ProfileType::Offcpu => p
            .offcpu
            .iter()
            .map(|s| {
                (
                    s.locations.as_slice(),
                    vec![s.count as i64, s.value as i64],
                    s.service.as_str(),
                    s.pid,
                )
            })
            .collect(),
    };
    // Only what the samples use, in catalog order (ids from 1).
    let mut loc_id: Vec<u64> = vec![0; cat.locations.len()];
    let mut func_id: Vec<u64> = vec![0; cat.functions.len()];
    let mut map_id: Vec<u64> = vec![0; cat.mappings.len()];
    for (locs, ..) in &rows {
        for &l in locs.iter() {
            if let Some(loc) = cat.locations.get(l as usize) {
                loc_id[l as usize] = 1;
                if let Some(f) = func_id.get_mut(loc.function as usize) {
                    *f = 1;
                }
                if let Some(m) = map_id.get_mut(loc.mapping as usize) {
                    *m = 1;
                }
            }
        }
    }
    let number = |ids: &mut Vec<u64>| {
        let mut n = 0;
        for v in ids.iter_mut() {
            if *v != 0 {
                n += 1;
                *v = n;
            }
        }
    };
    number(&mut loc_id);
    number(&mut func_id);
    number(&mut map_id);
    // pprof takes the first mapping for the main binary ("File:"): the one holding `main`.
    let main = cat
        .locations
        .iter()
        .enumerate()
        .find(|(i, l)| {
            loc_id[*i] != 0
                && cat
                    .functions
                    .get(l.function as usize)
                    .is_some_and(|f| f == "main")
        })
        .map(|(_, l)| l.mapping as usize);
    if let Some(m) = main.filter(|&m| map_id[m] > 1) {
        let mid = map_id[m];
        for v in map_id.iter_mut() {
            if *v != 0 && *v < mid {
                *v += 1;
            }
        }
        map_id[m] = 1;
    }
    let mut limit: Vec<u64> = vec![0; cat.mappings.len()];
    for l in &cat.locations {
        if let Some(m) = limit.get_mut(l.mapping as usize) {
            *m = (*m).max(l.address.saturating_add(1));
        }
    }
    let mut mapping: Vec<proto::Mapping> = cat
        .mappings
        .iter()
        .enumerate()
        .filter(|(i, _)| map_id[*i] != 0)
        .map(|(i, m)| proto::Mapping {
            id: map_id[i],
            memory_start: 0,
            memory_limit: limit[i],
            file_offset: 0,
            filename: st.id(&m.path),
            build_id: st.id(&m.build_id),
            has_functions: true,
            has_filenames: false,
            has_line_numbers: false,
            has_inline_frames: false,
        })
        .collect();
    mapping.sort_by_key(|m| m.id);
    let function = cat
        .functions
        .iter()
        .enumerate()
        .filter(|(i, _)| func_id[*i] != 0)
        .map(|(i, name)| {
            let n = st.id(name);
            proto::Function {
                id: func_id[i],
                name: n,
                system_name: n,
                filename: 0,
                start_line: 0,
            }
        })
        .collect();
    let location = cat
        .locations
        .iter()
        .enumerate()
        .filter(|(i, _)| loc_id[*i] != 0)
        .map(|(i, l)| proto::Location {
            id: loc_id[i],
            mapping_id: map_id.get(l.mapping as usize).copied().unwrap_or(0),
            address: l.address,
            line: vec![proto::Line {
                function_id: func_id.get(l.function as usize).copied().unwrap_or(0),
                line: 0,
            }],
            is_folded: false,
        })
        .collect();
    let (service_key, pid_key) = (st.id("service"), st.id("pid"));
    let sample = rows
        .into_iter()
        .filter(|r| r.1.iter().any(|v| *v != 0))
        .map(|(locs, value, service, pid)| proto::Sample {
            location_id: locs
                .iter()
                .filter_map(|&l| loc_id.get(l as usize).copied())
                .collect(),
            value,
            label: vec![
                proto::Label {
                    key: service_key,
                    str: st.id(service),
                    num: 0,
                    num_unit: 0,
                },
                proto::Label {
                    key: pid_key,
                    str: 0,
                    num: i64::from(pid),
                    num_unit: 0,
                },
            ],
        })
        .collect();
    proto::Profile {
        sample_type,
        sample,
        mapping,
        location,
        function,
        string_table: st.table,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: a.window_start_ns as i64,
        duration_nanos: a.window_end_ns.saturating_sub(a.window_start_ns) as i64,
        period_type,
        period,
        comment: Vec::new(),
        default_sample_type: default,
    }
}

/// pprof's `profile.proto` (github.com/google/pprof, `proto/profile.proto`), the messages
/// written by hand with prost's derive; field numbers as in the .proto.
pub mod proto {
    /// A profile.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        /// What each sample value is.
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        /// The samples.
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        /// Binaries.
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        /// Frames.
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        /// Functions.
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Strings; `""` first.
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        /// Regexp (string id) of frames to drop.
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        /// Regexp (string id) of frames to keep.
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        /// Start, ns since the epoch.
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        /// Length, ns.
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        /// What the period counts.
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        /// Events between samples.
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Comments (string ids).
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        /// The sample type shown by default (string id of its type).
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    /// A value's type and unit (string ids).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        /// e.g. `cpu`.
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        /// e.g. `nanoseconds`.
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// A stack with its values.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Locations, leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One value per sample type.
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        /// Labels.
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    /// A label: a string or a number.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// Key (string id).
        #[prost(int64, tag = "1")]
        pub key: i64,
        /// String value (string id).
        #[prost(int64, tag = "2")]
        pub str: i64,
        /// Numeric value.
        #[prost(int64, tag = "3")]
        pub num: i64,
        /// Unit of the number (string id).
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    /// A binary mapped into memory.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        /// Id, from 1.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// First address.
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        /// Past the last address.
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        /// File offset of `memory_start`.
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        /// Path (string id).
        #[prost(int64, tag = "5")]
        pub filename: i64,
        /// Build id (string id).
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        /// Locations of this mapping have functions.
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        /// ... file names.
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        /// ... line numbers.
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        /// ... inline frames.
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    /// A frame.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        /// Id, from 1.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Its mapping.
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        /// The address (here: file offset, or kernel address).
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// Functions at it, innermost inline first.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        /// Folded frames.
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    /// A function at a location.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        /// The function.
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        /// Source line (0: unknown).
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    /// A function.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        /// Id, from 1.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Name (string id).
        #[prost(int64, tag = "2")]
        pub name: i64,
        /// Name as the system knows it (string id).
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        /// Source file (string id).
        #[prost(int64, tag = "4")]
        pub filename: i64,
        /// First line.
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}
