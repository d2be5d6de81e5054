//! `retrace replay`: reads captures back as one time-ordered stream of events, with a time
//! window and a filter, as text, JSON lines or CSV; or prints statistics with `--stats`.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use retrace_replay::filter::FIELDS;
use retrace_replay::{
    ClockMode, EventWriter, Filter, FilterError, OutputFormat, Replay, ReplayOptions, TimeSpec,
};

/// Output formats, for clap.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One readable line per event (like `sysdig -r`).
    Text,
    /// One JSON object per event.
    Jsonl,
    /// CSV with a header line and fixed columns.
    Csv,
}

/// Arguments of `retrace replay`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Capture directories or segment files (several: several nodes, merged by wall clock),
    /// optionally followed by the words of a filter expression, tcpdump style: the first word
    /// that is a field name, `not`, `!` or `(` starts it.
    #[arg(required = true, value_name = "PATH")]
    words: Vec<String>,

    /// Filter expression words after `--` (when a word could be taken for a path).
    #[arg(last = true, value_name = "FILTER")]
    filter_words: Vec<String>,

    /// Filter expression, e.g. `kind = l7 and port = 5432 and not comm = psql`.
    #[arg(short, long, value_name = "EXPR")]
    filter: Option<String>,

    /// Start of the window: RFC 3339 (2026-11-24T06:30:00Z), HH:MM:SS (UTC, on the day the
    /// capture started), or relative to the capture start (+30s, 5m, 1h30m).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,

    /// End of the window (inclusive), same forms as --from.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    output: Format,

    /// Print statistics instead of events: events by kind, time span, bytes on disk and
    /// uncompressed, compression ratio, drops, damage, missing segments, sealing (as one JSON
    /// object with `--output jsonl`).
    #[arg(long)]
    stats: bool,

    /// Payload bytes shown per event in text and CSV output (JSON carries them whole).
    #[arg(long, value_name = "N", default_value_t = 64)]
    payload_bytes: usize,

    /// Stop after N events.
    #[arg(short = 'n', long, value_name = "N")]
    limit: Option<u64>,

    /// Never show a progress bar (it is shown on long reads when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,

    /// Trust every node's clock as recorded (by default, with several nodes, the clock
    /// offsets between them are estimated from their connections and corrected; `--stats`
    /// shows them).
    #[arg(long)]
    no_clock_correction: bool,
}

const AFTER_HELP: &str = "\
Filter fields: kind step pid ppid tid comm exe cgroup container port lport rport addr (host)
laddr raddr fd direction node payload size errno. Operators: = == != < <= > >= contains
startswith endswith in (a, b, c); joined by and/or/not (also && || !) with parentheses.
`port 80` means `port = 80`; port and addr match either endpoint; addresses take CIDR
prefixes; a test on a field the event lacks is false.

Examples:
  retrace replay /var/lib/retrace/cap1
  retrace replay cap1 cap2 --from +30s --to +2m kind = l7 and port 5432
  retrace replay cap1 -f 'comm = nginx and payload contains \"POST /login\"' -o jsonl
  retrace replay cap1 --from 06:30:00 --to 06:35:00 addr 10.0.0.0/8 and not kind = tcp_sample
  retrace replay cap1 --stats

Damage (a torn tail, a bad block) is reported on stderr and in --stats; what can be read is
read and the exit code is 0. A missing path, a file that is not a capture or an unsupported
format version exit with code 2.";

/// Runs `retrace replay`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (paths, mut words) = split_words(&args.words);
    words.extend(args.filter_words.iter().cloned());
    let filter = build_filter(args.filter.as_deref(), &words)?;
    let from = parse_time("--from", args.from.as_deref())?;
    let to = parse_time("--to", args.to.as_deref())?;
    let opts = ReplayOptions {
        from,
        to,
        filter,
        clock: if args.no_clock_correction {
            ClockMode::Off
        } else {
            ClockMode::Estimate
        },
        ..Default::default()
    };
    let mut replay = Replay::open(&paths, opts).map_err(|e| anyhow!("{e}"))?;
    for input in &replay.report().inputs {
        if let Some(p) = &input.manifest_problem {
            eprintln!(
                "retrace: warning: {}: manifest.json not used ({}); reading the segments found",
                input.path.display(),
                one_line(p)
            );
        }
    }

    let progress = progress_bar(&replay, args.no_progress);
    // Follows the bytes processed from a thread, so the bar moves while nothing matches.
    let ticker = progress.as_ref().map(|pb| {
        let pb = pb.clone();
        let counter = replay.progress_counter();
        std::thread::spawn(move || {
            while !pb.is_finished() {
                pb.set_position(counter.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let stdout = io::stdout();
    let mut writer = if args.stats {
        None
    } else {
        let format = match args.output {
            Format::Text => OutputFormat::Text,
            Format::Jsonl => OutputFormat::Jsonl,
            Format::Csv => OutputFormat::Csv,
        };
        Some(EventWriter::new(
            BufWriter::with_capacity(1 << 16, stdout.lock()),
            format,
            args.payload_bytes,
        )?)
    };
    let mut written = 0u64;
    let mut pipe_closed = false;
    while let Some(ev) = replay.next() {
        warn_damage(&mut replay, progress.as_ref());
        if let Some(w) = writer.as_mut() {
            if let Err(e) = w.write(&ev) {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    pipe_closed = true;
                    break;
                }
                return Err(e).context("writing the output");
            }
        }
        written += 1;
        if args.limit.is_some_and(|n| written >= n) {
            break;
        }
    }
    warn_damage(&mut replay, progress.as_ref());
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    if let Some(t) = ticker {
        let _ = t.join();
    }
    if let Some(w) = writer {
        match w.finish() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => pipe_closed = true,
            other => {
                other.context("writing the output")?;
            }
        }
    }
    let report = replay.report();
    if report.blocks_read == 0 && !report.damage.is_empty() {
        let first = &report.damage[0];
        anyhow::bail!(
            "nothing could be read: {}: {}",
            first.path.display(),
            one_line(&first.message)
        );
    }
    if args.stats && !pipe_closed {
        let mut out = stdout.lock();
        let res = match args.output {
            Format::Jsonl => writeln!(out, "{}", report.to_json()),
            _ => write!(out, "{report}"),
        };
        match res.and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing the statistics")
            }
            _ => {}
        }
    }
    if report.damaged_blocks > 0 {
        eprintln!(
            "retrace: warning: {} damaged block(s), {} bytes lost: the stream above is incomplete",
            report.damaged_blocks, report.bytes_lost
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits positional words into paths and filter words: the first word after at least one
/// path that is a field name, a `not`/`!`, a `(`, or a `field=value` word starts the filter.
fn split_words(words: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let starts_filter = |w: &str| {
        let lower = w.to_ascii_lowercase();
        let head: String = lower
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let is_field = FIELDS.iter().any(|(name, ..)| *name == head);
        lower == "not"
            || w.starts_with('!')
            || w.starts_with('(')
            || (is_field
                && (head.len() == lower.len()
                    || lower[head.len()..].starts_with(['=', '!', '<', '>'])))
    };
    // `prot = 80`: a word followed by an operator starts a filter, even with a bad field name
    // (so the error is about the filter, not a missing path).
    let before_op = |i: usize| {
        words.get(i + 1).is_some_and(|n| {
            n.starts_with(['=', '!', '<', '>'])
                || ["contains", "startswith", "endswith", "in"]
                    .contains(&n.to_ascii_lowercase().as_str())
        })
    };
    let split = (1..words.len())
        .find(|&i| starts_filter(&words[i]) || before_op(i))
        .unwrap_or(words.len());
    (
        words[..split].iter().map(PathBuf::from).collect(),
        words[split..].to_vec(),
    )
}

fn build_filter(flag: Option<&str>, words: &[String]) -> anyhow::Result<Option<Filter>> {
    let parse = |expr: &str| {
        Filter::parse(expr).map_err(|e: FilterError| {
            anyhow!(
                "invalid filter `{}` at column {}: {}",
                one_line(expr),
                e.column,
                e.message
            )
        })
    };
    let positional = (!words.is_empty()).then(|| words.join(" "));
    match (flag, positional) {
        (None, None) => Ok(None),
        (Some(a), None) => parse(a).map(Some),
        (None, Some(b)) => parse(&b).map(Some),
        (Some(a), Some(b)) => {
            parse(a)?;
            parse(&b)?;
            parse(&format!("({a}) and ({b})")).map(Some)
        }
    }
}

fn parse_time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<TimeSpec>> {
    value
        .map(|v| TimeSpec::parse(v).map_err(|e| anyhow!("{flag}: {e}")))
        .transpose()
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn progress_bar(replay: &Replay, disabled: bool) -> Option<ProgressBar> {
    let total = replay.progress().1;
    if disabled || !io::stderr().is_terminal() || total < (64 << 20) {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

fn warn_damage(replay: &mut Replay, progress: Option<&ProgressBar>) {
    for d in replay.take_new_damage() {
        let line = format!("retrace: warning: damage: {}", one_line(&d.to_string()));
        match progress {
            Some(pb) => pb.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_split_into_paths_and_filter() {
        let (p, f) = split_words(&w(&[
            "cap1", "cap2", "kind", "=", "l7", "and", "port", "80",
        ]));
        assert_eq!(p, [PathBuf::from("cap1"), PathBuf::from("cap2")]);
        assert_eq!(f.join(" "), "kind = l7 and port 80");
        let (p, f) = split_words(&w(&["cap", "comm=nginx"]));
        assert_eq!((p.len(), f.join(" ")), (1, "comm=nginx".to_string()));
        let (p, f) = split_words(&w(&["cap", "not", "kind", "tcp"]));
        assert_eq!((p.len(), f.len()), (1, 3));
        let (p, f) = split_words(&w(&["cap", "(kind", "=", "l7)"]));
        assert_eq!((p.len(), f.len()), (1, 3));
        // A path that merely starts like a field name stays a path.
        let (p, f) = split_words(&w(&["cap", "ports.rseg"]));
        assert_eq!((p.len(), f.len()), (2, 0));
        // The first word is always a path.
        let (p, f) = split_words(&w(&["kind"]));
        assert_eq!((p.len(), f.len()), (1, 0));
        let (p, f) = split_words(&w(&["cap", "prot", "=", "80"]));
        assert_eq!((p.len(), f.join(" ")), (1, "prot = 80".to_string()));
    }

    #[test]
    fn filters_combine_and_errors_name_the_expression() {
        let f = build_filter(Some("kind = l7"), &w(&["port", "80"]))
            .expect("ok")
            .expect("some");
        assert_eq!(f.as_str(), "(kind = l7) and (port 80)");
        let e = build_filter(None, &w(&["prot", "=", "80"]))
            .expect_err("bad")
            .to_string();
        assert!(
            e.starts_with("invalid filter `prot = 80` at column 1: unknown field 'prot'"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
