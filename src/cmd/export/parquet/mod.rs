//! `retrace export parquet CAPTURE... --out DIR`: the analysis' tables and the decoded events
//! as a Parquet dataset, partitioned by node and hour (hive style), for Spark, DuckDB,
//! ClickHouse, Trino or pandas. The schema (versioned) is `docs/parquet.md`.
//!
//! One pass over the captures: the analysis reads them, and every batch of events it took is
//! handed to [`events::EventWriter`] ([`retrace_analyze::analyze_observed`]), which fills one
//! table per event family and sends full batches to the writer thread of
//! [`dataset::Dataset`]; when the analysis is done, [`analysis::write`] adds its tables. Memory
//! stays bounded whatever the capture's size (beyond what the analysis itself keeps): a
//! batch of rows per open table, a few batches in the channel, and each open file's row
//! group in progress, encoded. Everything is written into a temporary directory beside
//! `--out`, renamed when complete.
//!
//! Why arrow-rs' `parquet` crate and not polars' writer: it writes a record batch at a time
//! into row groups it flushes by size, and it takes per-column encodings, so that the times,
//! which rise row by row, are delta-encoded as the capture stores them (polars' writer
//! chooses plain or dictionary encodings itself); and it needs no change to the features of
//! polars, which stays in `retrace-analyze`.

mod analysis;
pub(crate) mod columns;
mod dataset;
mod events;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::cmd::analyze::Input;

/// Arguments of `retrace export parquet`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    /// Directory to create for the dataset (it must not exist, or be empty).
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Only the analysis' tables, not the events.
    #[arg(long)]
    no_events: bool,
}

/// Runs `retrace export parquet`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let dataset = dataset::Dataset::create(&args.out)?;
    let mut events = EventsObserver {
        writer: (!args.no_events).then(|| events::EventWriter::new(dataset.sink())),
        written: None,
        t0,
    };
    let names: Vec<String> = args
        .input
        .captures
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let analysis =
        retrace_analyze::analyze_observed(&args.input.captures, &args.input.options(), &mut events);
    let analysis =
        anyhow::Context::with_context(analysis, || format!("analyzing {}", names.join(", ")))?;
    stamp(t0, "analysis done");
    let event_rows = match events.written.take() {
        Some(rows) => rows?,
        None => Default::default(),
    };
    let key = export_key(&analysis);
    analysis::write(analysis, &dataset.sink(), t0)?;
    stamp(t0, "analysis tables handed over");
    let written = dataset.finish(&key)?;
    stamp(t0, "files closed");
    if !args.input.quiet {
        let rows = |schemas: Vec<(&str, _)>| -> u64 {
            schemas
                .iter()
                .filter_map(|(n, _)| written.tables.get(n))
                .map(|t| t.rows)
                .sum()
        };
        eprintln!(
            "{} events ({} rows) and {} analysis rows ({} requests) in {} files, {:.1} MiB, \
             written to {} in {:.2} s",
            event_rows.values().sum::<u64>(),
            rows(events::schemas()),
            rows(analysis::schemas()),
            written.tables.get("requests").map_or(0, |t| t.rows),
            written.tables.values().map(|t| t.files).sum::<u64>(),
            written.bytes() as f64 / (1 << 20) as f64,
            args.out.display(),
            t0.elapsed().as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands the events to the [`events::EventWriter`], and closes its files as soon as the read
/// is over: they are written while the analysis makes its tables, and their row groups in
/// progress are gone before the analysis' peak.
struct EventsObserver {
    writer: Option<events::EventWriter>,
    /// What the writer's `finish` said: rows by event kind.
    written: Option<anyhow::Result<std::collections::BTreeMap<&'static str, u64>>>,
    /// When the export started ([`stamp`]).
    t0: Instant,
}

/// With `RETRACE_ANALYZE_TIMING=1`, prints the wall time since `t0` at which `what` happened,
/// and the resident memory then and at its peak.
pub(crate) fn stamp(t0: Instant, what: &str) {
    if retrace_analyze::timing() {
        let (rss, peak) = retrace_analyze::rss_mib();
        eprintln!(
            "timing: export: {what} at {:.2} s, RSS {rss} MiB (peak {peak})",
            t0.elapsed().as_secs_f64(),
        );
    }
}

impl retrace_analyze::Observer for EventsObserver {
    fn batch(&mut self, batch: &[retrace_replay::ReplayedEvent]) {
        if let Some(w) = &mut self.writer {
            w.observe(batch);
        }
    }

    fn read_done(&mut self) {
        stamp(self.t0, "read done");
        if let Some(w) = self.writer.take() {
            self.written = Some(w.finish());
        }
        // The writer thread's buffers of the event files are free now; so are the reader's.
        retrace_analyze::release_free_memory();
        stamp(self.t0, "event files written");
    }
}

/// Names the files of an export: 16 hex digits of a hash of its nodes and its start, so that
/// the same capture gives the same names and two captures different ones.
fn export_key(a: &retrace_analyze::Analysis) -> String {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for n in &a.nodes {
        eat(n.as_bytes());
        eat(&[0]);
    }
    eat(&a.window_start_ns.to_le_bytes());
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use arrow_schema::{DataType, Field, TimeUnit};

    /// A type as pyarrow prints it (how docs/parquet.md writes types).
    fn pyarrow_type(dt: &DataType) -> String {
        match dt {
            DataType::Timestamp(TimeUnit::Nanosecond, Some(tz)) => {
                format!("timestamp[ns, tz={tz}]")
            }
            DataType::Int32 => "int32".into(),
            DataType::Int64 => "int64".into(),
            DataType::Float64 => "double".into(),
            DataType::Boolean => "bool".into(),
            DataType::Utf8 => "string".into(),
            DataType::Binary => "binary".into(),
            DataType::List(f) => format!("list<item: {}>", pyarrow_type(f.data_type())),
            DataType::Struct(fields) => {
                let inner: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        let null = if f.is_nullable() { "" } else { " not null" };
                        format!("{}: {}{null}", f.name(), pyarrow_type(f.data_type()))
                    })
                    .collect();
                format!("struct<{}>", inner.join(", "))
            }
            other => panic!("no pyarrow name for {other:?}"),
        }
    }

    /// A documented column: name, type, nullable.
    type Column = (String, String, bool);

    /// The column tables of docs/parquet.md: table name → columns.
    fn documented() -> Vec<(String, Vec<Column>)> {
        let doc = include_str!("../../../../docs/parquet.md");
        let mut out: Vec<(String, Vec<Column>)> = Vec::new();
        for line in doc.lines() {
            if let Some(name) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
                out.push((name.to_string(), Vec::new()));
            } else if let (Some(last), Some(row)) = (out.last_mut(), line.strip_prefix("| ")) {
                let cells: Vec<&str> = row.split(" | ").collect();
                if cells.len() >= 3 && cells[0] != "column" && !cells[0].starts_with("---") {
                    last.1
                        .push((cells[0].into(), cells[1].into(), cells[2] == "yes"));
                }
            }
        }
        out
    }

    #[test]
    fn the_documented_schema_is_the_written_one() {
        let doc = documented();
        let code: Vec<(&str, Vec<Field>)> = super::analysis::schemas()
            .into_iter()
            .chain(super::events::schemas())
            .collect();
        let doc_names: Vec<&str> = doc.iter().map(|(n, _)| n.as_str()).collect();
        let code_names: Vec<&str> = code.iter().map(|(n, _)| *n).collect();
        assert_eq!(doc_names, code_names, "tables of docs/parquet.md");
        for ((name, cols), (_, fields)) in doc.iter().zip(&code) {
            let written: Vec<Column> = fields
                .iter()
                .map(|f| {
                    (
                        f.name().clone(),
                        pyarrow_type(f.data_type()),
                        f.is_nullable(),
                    )
                })
                .collect();
            assert_eq!(cols, &written, "columns of table {name} in docs/parquet.md");
        }
    }

    #[test]
    fn the_documented_version_is_the_written_one() {
        let doc = include_str!("../../../../docs/parquet.md");
        let v = super::dataset::SCHEMA_VERSION;
        assert!(doc.contains(&format!("**Schema version: {v}.**")));
        assert!(doc.contains(&format!("(`retrace.schema_version = \"{v}\"`)")));
    }
}
