//! Reads one or more captures back as one stream of events ordered by wall-clock time, with a
//! time window, a filter, and the process and socket tables that give every event its context.
//! Never touches the kernel; knows nothing of the bytes on disk (that is `retrace-segment`).
//!
//! # Main types
//!
//! - [`Replay`]: opened from paths (capture directories or segment files, one or several
//!   nodes) and [`ReplayOptions`] (`from`, `to`, `filter`); an `Iterator<Item =`
//!   [`ReplayedEvent`]`>`. Segments are opened lazily and blocks decoded on demand: memory is
//!   bounded by the blocks that overlap the current moment, not by the capture's size (see
//!   [`merge`] for how the k-way merge keeps order).
//! - [`ReplayedEvent`]: the [`Event`](retrace_segment::Event), the node name, the wall-clock
//!   time, the owning process ([`ProcessInfo`](retrace_segment::ProcessInfo): comm, exe,
//!   cgroup...) and the socket endpoints as known at that moment.
//! - [`Report`] ([`Replay::report`]): events by kind, time span, bytes on disk and
//!   uncompressed, compression ratio, drops recorded, damage, missing segments, sealing.
//! - [`Filter`]: sysdig/tcpdump-style expressions (`kind = l7 and port 80 and not comm =
//!   curl`), see [`filter`]. [`TimeSpec`]: `--from/--to` forms, see [`time`].
//! - [`output`]: the `text`, `jsonl` and `csv` formats of `retrace replay`.
//!
//! # Example
//!
//! ```no_run
//! use retrace_replay::{Filter, Replay, ReplayOptions, TimeSpec};
//!
//! let opts = ReplayOptions {
//!     from: Some(TimeSpec::parse("+30s")?),
//!     filter: Some(Filter::parse("kind = l7 and port = 5432")?),
//!     ..Default::default()
//! };
//! let mut replay = Replay::open(&["capture-a", "capture-b"], opts)?;
//! for ev in replay.by_ref() {
//!     println!("{} {} {:?} {:?}", ev.wall_ns, ev.node, ev.comm(), ev.event.kind());
//! }
//! let report = replay.report();
//! eprintln!("{} events, {} damaged blocks", report.events_matched, report.damaged_blocks);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Damage
//!
//! A damaged block, a torn tail or an unreadable segment inside a capture directory does not
//! stop the replay: what can be read is read, and each damage is recorded in
//! [`Report::damage`] (and handed out as found by [`Replay::take_new_damage`]). A single
//! segment file that is not a segment, or has an unsupported version, and a path that does
//! not exist, fail [`Replay::open`] with a one-line [`ReplayError`].
//!
//! **Architecture invariant:** replay reads captures through `retrace-segment` only; it never
//! touches the kernel and never parses segment bytes itself.

pub mod clock;
pub mod csv_cell;
pub mod filter;
pub mod inputs;
pub mod merge;
pub mod output;
pub mod report;
pub mod source;
pub mod state;
pub mod time;
pub mod view;

use std::path::Path;

pub use clock::{ClockMode, ClockOffset};
pub use filter::{Filter, FilterError};
pub use merge::{Replay, ReplayError, ReplayOptions, ReplayedEvent};
pub use output::{EventWriter, OutputFormat};
pub use report::{InputReport, Report};
pub use source::DamageInfo;
pub use state::{ProcessTable, SocketTable};
pub use time::{TimeError, TimeSpec};
pub use view::EventView;

impl Replay {
    /// Opens capture directories and/or segment files (several nodes are merged by wall
    /// clock, their clock offsets estimated and corrected first unless `opts.clock` says
    /// otherwise: see [`clock`]). Fails on a missing path, a path that is not a capture, and a
    /// single segment file that cannot be read (not a retrace segment, unsupported version).
    pub fn open<P: AsRef<Path>>(
        paths: &[P],
        mut opts: ReplayOptions,
    ) -> Result<Replay, ReplayError> {
        let mut offsets = Vec::new();
        if paths.len() > 1 && opts.clock == ClockMode::Estimate {
            offsets = clock::estimate(paths, &opts)?;
            opts.clock = ClockMode::Fixed(clock::corrections(&offsets));
        }
        let mut sources: Vec<Box<dyn source::InputSource>> = Vec::with_capacity(paths.len());
        let mut problems = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let input = inputs::CaptureInput::open(p).map_err(|e| ReplayError::Input {
                path: p.to_path_buf(),
                message: strip_path_prefix(&inputs::one_line(&e), p),
            })?;
            problems.push(input.manifest_problem().map(str::to_string));
            sources.push(Box::new(input));
        }
        let mut replay = Replay::from_sources(sources, opts)?;
        replay.set_manifest_problems(problems);
        replay.set_clock_offsets(offsets);
        Ok(replay)
    }
}

/// `"path: message"` → `"message"`, since [`ReplayError::Input`] names the path itself.
fn strip_path_prefix(msg: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    msg.strip_prefix(&prefix).unwrap_or(msg).to_string()
}
