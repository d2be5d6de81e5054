//! The dataset on disk: hive-style partition directories, Parquet files written by one thread
//! behind a bounded channel, and the whole directory renamed into place when complete.
//!
//! Layout: `OUT/table=NAME/node=NODE/hour=YYYY-MM-DDTHH/part-KEY-SEQ.parquet`; tables about
//! the whole analysis have no `node=` level, tables without times no `hour=` level. A node
//! name is written percent-encoded (bytes other than `A-Za-z0-9._-`), as pyarrow and Spark
//! decode partition values. `KEY` names the export (its nodes and start: known when the
//! analysis ends, so the files are renamed then), so that datasets of several exports can be
//! copied into one tree; `SEQ` counts the files of one partition
//! (a partition closed and reopened, when events come back to an hour already left).
//!
//! Files: zstd-compressed; rising times, row numbers and durations delta-encoded, ids as
//! delta byte arrays ([`encoding_of`]); a table's batches sorted by its [`Table::ORDER`]; row
//! groups of at most 1 Mi rows or 64 MiB; the schema version and table name in the file's
//! key-value metadata. Memory: at most [`IN_FLIGHT`] batches wait for the writer thread, and
//! each open file keeps its row group in progress (encoded) until it is flushed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use anyhow::Context as _;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::columns::Table;

/// Version of the dataset's schema (`docs/parquet.md`), in every file's key-value metadata
/// under [`SCHEMA_VERSION_KEY`]. Bumped when a column changes meaning or type or goes away;
/// columns added at the end keep it.
pub const SCHEMA_VERSION: u32 = 1;
/// The key-value metadata key of [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "retrace.schema_version";
/// The key-value metadata key of the table's name.
pub const TABLE_KEY: &str = "retrace.table";
/// Rows of a row group, at most.
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// Encoded bytes of a row group, at most (estimated by the writer).
pub const ROW_GROUP_BYTES: usize = 64 << 20;
/// Rows of a record batch handed to the writer thread.
pub const BATCH_ROWS: usize = 1 << 16;
/// Batches waiting for the writer thread, at most.
const IN_FLIGHT: usize = 2;
/// One hour, ns.
pub const HOUR_NS: u64 = 3_600_000_000_000;

/// Where a batch of rows goes: the partition values (absent levels: none in the path).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    /// The node (`node=`).
    pub node: Option<Arc<str>>,
    /// Hours since the epoch (`hour=`).
    pub hour: Option<u64>,
}

impl Partition {
    /// The partition of a row of `node` at `wall_ns`.
    pub fn at(node: &Arc<str>, wall_ns: u64) -> Self {
        Self {
            node: Some(Arc::clone(node)),
            hour: Some(wall_ns / HOUR_NS),
        }
    }

    /// The partition of a row about the whole analysis at `wall_ns`.
    pub fn hour_of(wall_ns: u64) -> Self {
        Self {
            node: None,
            hour: Some(wall_ns / HOUR_NS),
        }
    }

    /// The partition of a row about the whole analysis, without time.
    pub fn whole() -> Self {
        Self {
            node: None,
            hour: None,
        }
    }

    /// The directories below the table's.
    fn dir(&self) -> PathBuf {
        let mut p = PathBuf::new();
        if let Some(n) = &self.node {
            p.push(format!("node={}", encode_value(n)));
        }
        if let Some(h) = self.hour {
            p.push(format!("hour={}", hour_name(h)));
        }
        p
    }
}

/// A partition value as a path segment: percent-encoded outside `A-Za-z0-9._-`; the empty
/// string as Hive's null.
pub fn encode_value(v: &str) -> String {
    if v.is_empty() {
        return "__HIVE_DEFAULT_PARTITION__".into();
    }
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYY-MM-DDTHH` (UTC) of hour `h` since the epoch.
pub fn hour_name(h: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(h.saturating_mul(3600));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(..13).unwrap_or(&s).to_string()
}

enum Msg {
    Batch {
        table: &'static str,
        partition: Partition,
        batch: RecordBatch,
        /// [`Table::ORDER`]: sorted by these columns on the writer thread.
        order: &'static [&'static str],
    },
    Close {
        table: &'static str,
        partition: Partition,
    },
    /// Answered once everything sent before it is written.
    Barrier(SyncSender<()>),
}

/// What was written, per table.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// Table name → (rows, files, bytes).
    pub tables: BTreeMap<&'static str, TableTotals>,
}

/// Totals of one table.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableTotals {
    /// Rows.
    pub rows: u64,
    /// Files.
    pub files: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

impl Written {
    /// Bytes of every file.
    pub fn bytes(&self) -> u64 {
        self.tables.values().map(|t| t.bytes).sum()
    }
}

/// What the writer thread wrote, and its files (to be named when the export's key is known).
type WrittenFiles = (Written, Vec<PathBuf>);

/// The sending end: cheap to clone, used from any thread.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Msg>,
}

impl Sink {
    /// Cuts the rows of `t` into a batch for `partition` (nothing when it has none).
    pub fn send<T: Table>(&self, partition: &Partition, t: &mut T) -> anyhow::Result<()> {
        if t.rows() == 0 {
            return Ok(());
        }
        let schema = Arc::new(Schema::new(T::fields()));
        let batch = RecordBatch::try_new(schema, t.finish())
            .with_context(|| format!("building a batch of table {}", T::NAME))?;
        self.tx
            .send(Msg::Batch {
                table: T::NAME,
                partition: partition.clone(),
                batch,
                order: T::ORDER,
            })
            .map_err(|_| anyhow::anyhow!("the Parquet writer stopped"))
    }

    /// Waits until the writer thread has written everything sent before.
    pub fn sync(&self) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .send(Msg::Barrier(tx))
            .map_err(|_| anyhow::anyhow!("the Parquet writer stopped"))?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("the Parquet writer stopped"))
    }

    /// Closes the file of `partition` of table `T`: later rows go to a new file.
    pub fn close<T: Table>(&self, partition: &Partition) -> anyhow::Result<()> {
        self.tx
            .send(Msg::Close {
                table: T::NAME,
                partition: partition.clone(),
            })
            .map_err(|_| anyhow::anyhow!("the Parquet writer stopped"))
    }
}

/// A dataset being written into a temporary directory beside its destination.
pub struct Dataset {
    out: PathBuf,
    tmp: PathBuf,
    sink: Option<Sink>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<WrittenFiles>>>,
}

impl Dataset {
    /// Starts a dataset for `out` (which must not exist, or be an empty directory).
    pub fn create(out: &Path) -> anyhow::Result<Self> {
        match std::fs::symlink_metadata(out) {
            Ok(m) if m.is_dir() => {
                let mut entries =
                    std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
                if entries.next().is_some() {
                    anyhow::bail!(
                        "{}: exists and is not empty (the dataset is written as a new \
                         directory: remove it or give another)",
                        out.display()
                    );
                }
            }
            Ok(_) => anyhow::bail!("{}: exists and is not a directory", out.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("{}", out.display())),
        }
        let name = out
            .file_name()
            .with_context(|| format!("{}: not a directory name", out.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = out.with_file_name(tmp_name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
        let root = tmp.clone();
        let thread = std::thread::Builder::new()
            .name("parquet-writer".into())
            .spawn(move || write_files(&root, rx))
            .context("starting the Parquet writer thread")?;
        Ok(Self {
            out: out.to_path_buf(),
            tmp,
            sink: Some(Sink { tx }),
            thread: Some(thread),
        })
    }

    /// The sending end.
    pub fn sink(&self) -> Sink {
        // Present until `finish` or drop takes it.
        self.sink.clone().unwrap_or_else(|| {
            let (tx, _) = std::sync::mpsc::sync_channel(0);
            Sink { tx }
        })
    }

    /// Closes every file, names the files after `key` (`part-KEY-SEQ.parquet`) and renames
    /// the directory into place.
    pub fn finish(mut self, key: &str) -> anyhow::Result<Written> {
        self.sink = None;
        let (written, files) = match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r?,
            _ => anyhow::bail!("the Parquet writer failed unexpectedly"),
        };
        for f in files {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("part-"))
                .map(|seq| format!("part-{key}-{seq}"));
            if let Some(name) = name {
                std::fs::rename(&f, f.with_file_name(name))
                    .with_context(|| format!("renaming {}", f.display()))?;
            }
        }
        if self.out.is_dir() {
            // Checked empty at the start.
            std::fs::remove_dir(&self.out)
                .with_context(|| format!("replacing {}", self.out.display()))?;
        }
        std::fs::rename(&self.tmp, &self.out)
            .with_context(|| format!("renaming into {}", self.out.display()))?;
        Ok(written)
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        self.sink = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            // Not finished: leave nothing half-written behind.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// With `RETRACE_ANALYZE_TIMING=1`, prints the writer thread's CPU time so far.
fn writer_timing(when: &str) {
    if retrace_analyze::timing() {
        eprintln!(
            "timing: export: writer thread {when}: {:.2} s cpu",
            retrace_analyze::thread_cpu_s()
        );
    }
}

/// The writer properties of every file of table `table`.
fn properties(table: &str, schema: &Schema) -> anyhow::Result<WriterProperties> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![
            KeyValue::new(SCHEMA_VERSION_KEY.into(), SCHEMA_VERSION.to_string()),
            KeyValue::new(TABLE_KEY.into(), table.to_string()),
        ]));
    for f in schema.fields() {
        let col = ColumnPath::from(f.name().as_str());
        // Captured bytes: mostly distinct, and their bounds prune nothing (comparing every
        // value for them was a tenth of the writer's time).
        if matches!(f.data_type(), DataType::Binary) {
            b = b
                .set_column_dictionary_enabled(col.clone(), false)
                .set_column_statistics_enabled(col.clone(), EnabledStatistics::None);
        }
        if let Some(encoding) = encoding_of(f.name(), f.data_type()) {
            b = b
                .set_column_dictionary_enabled(col.clone(), false)
                .set_column_encoding(col, encoding);
        }
    }
    Ok(b.build())
}

/// The encoding of a column when it is not the default (a dictionary, falling back to plain):
/// - times that rise row by row (`time`, `start`), row numbers (`*_index`) and durations
///   (`*duration_ns`, `*latency_ns`): delta-encoded, as the capture stores its times;
/// - trace and span ids (structured: the capture's seed, then a number rising with time,
///   `RequestTable::span_id`): delta byte arrays, which store each id as the length of the
///   prefix it shares with the previous one and the rest (2 or 3 hex digits).
fn encoding_of(name: &str, data_type: &DataType) -> Option<Encoding> {
    let delta_int = match data_type {
        DataType::Timestamp(..) => name == "time" || name == "start",
        DataType::Int64 => {
            name.ends_with("_index")
                || name.ends_with("duration_ns")
                || name.ends_with("latency_ns")
        }
        _ => false,
    };
    let id = matches!(data_type, DataType::Utf8)
        && matches!(name, "trace_id" | "span_id" | "parent_span_id");
    if delta_int {
        Some(Encoding::DELTA_BINARY_PACKED)
    } else if id {
        Some(Encoding::DELTA_BYTE_ARRAY)
    } else {
        None
    }
}

/// Columns of a [`Table::ORDER`], at most.
const MAX_ORDER: usize = 4;

/// `batch` with its rows sorted by the integer or time columns `order` (stable: rows equal on
/// every key keep their order; nulls first).
fn sorted(batch: RecordBatch, order: &[&str]) -> anyhow::Result<RecordBatch> {
    if order.is_empty() || batch.num_rows() < 2 {
        return Ok(batch);
    }
    anyhow::ensure!(
        order.len() <= MAX_ORDER,
        "more than {MAX_ORDER} sort columns"
    );
    // Each row's keys then its number: an unstable sort of distinct tuples is a stable sort.
    let mut rows: Vec<SortKey> = (0..u32::try_from(batch.num_rows())?)
        .map(|i| ([0; MAX_ORDER], i))
        .collect();
    for (slot, name) in order.iter().enumerate() {
        let col = batch
            .column_by_name(name)
            .with_context(|| format!("no column {name}"))?;
        anyhow::ensure!(
            put_keys(col.as_ref(), slot, &mut rows),
            "column {name} is no integer"
        );
    }
    rows.sort_unstable();
    let indices = arrow_array::UInt32Array::from_iter_values(rows.into_iter().map(|(_, i)| i));
    Ok(arrow_select::take::take_record_batch(&batch, &indices)?)
}

/// A row's sort keys, then its number.
type SortKey = ([i64; MAX_ORDER], u32);

/// Puts the values of an integer or time column (null as `i64::MIN`) into key `slot` of each
/// row; false for other types.
fn put_keys(col: &dyn arrow_array::Array, slot: usize, rows: &mut [SortKey]) -> bool {
    use arrow_array::cast::AsArray as _;
    use arrow_array::types::{Int32Type, Int64Type, TimestampNanosecondType};
    fn put<T: arrow_array::ArrowPrimitiveType>(
        a: &arrow_array::PrimitiveArray<T>,
        as_i64: impl Fn(T::Native) -> i64,
        slot: usize,
        rows: &mut [SortKey],
    ) {
        for (row, v) in rows.iter_mut().zip(a.iter()) {
            row.0[slot] = v.map_or(i64::MIN, &as_i64);
        }
    }
    match col.data_type() {
        DataType::Int64 => put(col.as_primitive::<Int64Type>(), |v| v, slot, rows),
        DataType::Int32 => put(col.as_primitive::<Int32Type>(), i64::from, slot, rows),
        DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, _) => put(
            col.as_primitive::<TimestampNanosecondType>(),
            |v| v,
            slot,
            rows,
        ),
        _ => return false,
    }
    true
}

struct Open {
    writer: ArrowWriter<BufWriter<File>>,
    path: PathBuf,
}

/// The writer thread: files opened on their first batch, closed when asked or at the end.
fn write_files(root: &Path, rx: Receiver<Msg>) -> anyhow::Result<WrittenFiles> {
    let mut files = Vec::new();
    let mut open: BTreeMap<(&'static str, Partition), Open> = BTreeMap::new();
    let mut seq: BTreeMap<(&'static str, Partition), u32> = BTreeMap::new();
    let mut written = Written::default();
    let close = |o: Open, table: &'static str, written: &mut Written| -> anyhow::Result<()> {
        let meta = o
            .writer
            .close()
            .with_context(|| format!("writing {}", o.path.display()))?;
        let bytes = std::fs::metadata(&o.path).map(|m| m.len()).unwrap_or(0);
        let t = written.tables.entry(table).or_default();
        t.rows += u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
        t.files += 1;
        t.bytes += bytes;
        Ok(())
    };
    for msg in rx {
        match msg {
            Msg::Batch {
                table,
                partition,
                batch,
                order,
            } => {
                let batch = sorted(batch, order)
                    .with_context(|| format!("sorting a batch of table {table}"))?;
                let k = (table, partition);
                let o = match open.get_mut(&k) {
                    Some(o) => o,
                    None => {
                        let n = seq.entry(k.clone()).or_insert(0);
                        let dir = root.join(format!("table={table}")).join(k.1.dir());
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        let path = dir.join(format!("part-{n}.parquet"));
                        *n += 1;
                        files.push(path.clone());
                        let file = File::create(&path)
                            .with_context(|| format!("creating {}", path.display()))?;
                        let props = properties(table, batch.schema_ref())?;
                        let writer = ArrowWriter::try_new(
                            BufWriter::with_capacity(1 << 20, file),
                            batch.schema(),
                            Some(props),
                        )
                        .with_context(|| format!("starting {}", path.display()))?;
                        open.entry(k).or_insert(Open { writer, path })
                    }
                };
                o.writer
                    .write(&batch)
                    .with_context(|| format!("writing {}", o.path.display()))?;
            }
            Msg::Close { table, partition } => {
                if let Some(o) = open.remove(&(table, partition)) {
                    close(o, table, &mut written)?;
                }
            }
            Msg::Barrier(done) => {
                writer_timing("at a barrier");
                let _ = done.send(());
            }
        }
    }
    for ((table, _), o) in std::mem::take(&mut open) {
        close(o, table, &mut written)?;
    }
    writer_timing("done");
    Ok((written, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_names_are_utc_hours() {
        // 2026-12-06T12:34:56Z
        let ns = 1_796_560_496u64 * 1_000_000_000;
        assert_eq!(hour_name(ns / HOUR_NS), "2026-12-06T12");
        assert_eq!(hour_name(0), "1970-01-01T00");
    }

    #[test]
    fn partition_values_are_percent_encoded() {
        assert_eq!(encode_value("web-1.prod_a"), "web-1.prod_a");
        assert_eq!(encode_value("a/b=c d"), "a%2Fb%3Dc%20d");
        assert_eq!(encode_value("é"), "%C3%A9");
        assert_eq!(encode_value(""), "__HIVE_DEFAULT_PARTITION__");
    }

    #[test]
    fn a_batch_is_sorted_by_its_order_stably_with_nulls_first() {
        use arrow_array::{Array, Int32Array, Int64Array, StringArray, TimestampNanosecondArray};
        let schema = Arc::new(Schema::new(vec![
            arrow_schema::Field::new("pid", DataType::Int64, true),
            arrow_schema::Field::new("fd", DataType::Int32, false),
            arrow_schema::Field::new(
                "time",
                DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            arrow_schema::Field::new("what", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(7),
                    Some(3),
                    None,
                    Some(7),
                    Some(3),
                ])),
                Arc::new(Int32Array::from(vec![1, 9, 5, 1, 2])),
                Arc::new(
                    TimestampNanosecondArray::from(vec![10, 20, 30, 10, 50]).with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"])),
            ],
        )
        .expect("a batch");
        let out = sorted(batch.clone(), &["pid", "fd", "time"]).expect("sorted");
        let what = out
            .column(3)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("strings");
        let got: Vec<&str> = (0..what.len()).map(|i| what.value(i)).collect();
        // null pid first; 3 by fd; 7's two rows equal on every key keep their order.
        assert_eq!(got, ["c", "e", "b", "a", "d"]);
        assert_eq!(out.schema(), batch.schema());
        // No order: untouched; a column that is no integer: an error, not a panic.
        assert_eq!(sorted(batch.clone(), &[]).expect("unsorted"), batch);
        assert!(sorted(batch.clone(), &["what"]).is_err());
        assert!(sorted(batch, &["nope"]).is_err());
    }

    #[test]
    fn ids_times_and_durations_get_delta_encodings() {
        let ts = DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, Some("UTC".into()));
        let delta = Some(Encoding::DELTA_BINARY_PACKED);
        assert_eq!(encoding_of("time", &ts), delta);
        assert_eq!(encoding_of("start", &ts), delta);
        assert_eq!(encoding_of("conn_start", &ts), None);
        assert_eq!(encoding_of("request_index", &DataType::Int64), delta);
        assert_eq!(encoding_of("server_latency_ns", &DataType::Int64), delta);
        assert_eq!(encoding_of("pid", &DataType::Int64), None);
        let ids = Some(Encoding::DELTA_BYTE_ARRAY);
        assert_eq!(encoding_of("trace_id", &DataType::Utf8), ids);
        assert_eq!(encoding_of("parent_span_id", &DataType::Utf8), ids);
        assert_eq!(encoding_of("service", &DataType::Utf8), None);
    }
}
