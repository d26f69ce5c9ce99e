//! The columnar store: the write-ahead log converted into time-partitioned Parquet files that any lake engine
//! (DataFusion, DuckDB, Athena, Trino, Spark, ClickHouse) reads, with the forensic fields flattened into
//! columns and the full redacted event kept beside them.
//!
//! [`ColumnarWriter`] owns the log cursor `columnar`: [`flush`](ColumnarWriter::flush) converts what the
//! cursor has not yet converted, in bounded chunks, and commits the cursor only after the chunk's files are
//! durable; [`compact`](ColumnarWriter::compact) merges small files. [`list_files`] is the partition pruning a
//! query engine starts from. This module owns no query and no retention.
//!
//! # Layout
//!
//! ```text
//! <root>/cluster=<cluster>/date=YYYY-MM-DD/hour=HH/<first_seq:020>-<last_seq:020>.parquet
//! <root>/cluster=<cluster>/date=YYYY-MM-DD/hour=all/<first_seq:020>-<last_seq:020>.parquet   (day file)
//! ```
//!
//! Once a day is closed ([`ColumnarOptions::day_close`] after it ended) and its files hold at most
//! [`ColumnarOptions::compact_day_bytes`], compaction merges every file of the date into one day file under
//! `hour=all`: a year is then 365 files instead of 8,760, and per-file costs (opening, footers, page
//! indexes) dominate queries over long ranges. A day file is named by the lowest and highest seq of its
//! inputs; any other file of its date whose range lies inside it is an input a crash left behind (files
//! written later have higher seqs), skipped by readers and removed by the next compaction. A late event
//! for a closed day lands in its hour's directory as usual and is folded into a new day file next time.
//!
//! Hive-style partitions by the event's `time` in UTC. The cluster directory is the cluster name with every
//! byte other than ASCII letters, digits, `-`, `_` and a non-leading `.` written as `%XX` (so the mapping is
//! one to one); the empty name is `__HIVE_DEFAULT_PARTITION__`. The raw name is in the `cluster` column.
//! `first_seq`/`last_seq` are the lowest and highest log seq of the rows in the file (the rows of one
//! partition between them are all in the file). Files are written as `.<name>.tmp`, fsynced, renamed, and
//! the directory fsynced: a reader never sees a partial file, and ignores names starting with `.`.
//!
//! # Schema
//!
//! | column | type | |
//! |---|---|---|
//! | `time` | Timestamp(µs, UTC) | `requestReceivedTimestamp`, else `stageTimestamp`, else `received` |
//! | `stage_time` | Timestamp(µs, UTC) null | `stageTimestamp` |
//! | `received` | Timestamp(µs, UTC) | when kubetrail received the event |
//! | `seq` | UInt64 | the write-ahead log seq (unique per event) |
//! | `cluster` | Utf8 | |
//! | `audit_id` | Utf8 | `auditID` (bloom filter) |
//! | `stage` | Utf8 | `RequestReceived`, `ResponseStarted`, `ResponseComplete`, `Panic` |
//! | `level` | Utf8 | `Metadata`, `Request`, `RequestResponse` (`""` if absent) |
//! | `verb` | Utf8 | `""` if absent |
//! | `user` | Utf8 | `user.username`, the authenticated user (`""` if absent; bloom filter) |
//! | `groups` | `List<Utf8>` | `user.groups` |
//! | `impersonated_user` | Utf8 null | `impersonatedUser.username` |
//! | `impersonated_groups` | `List<Utf8>` | `impersonatedUser.groups` |
//! | `source_ips` | `List<Utf8>` | `sourceIPs` |
//! | `ip` | Utf8 null | the first source IP (bloom filter) |
//! | `user_agent` | Utf8 null | `userAgent` |
//! | `uri` | Utf8 | `requestURI` (`""` if absent) |
//! | `resource`, `subresource`, `namespace`, `name`, `api_group`, `api_version` | Utf8 null | `objectRef.*`, null when absent or empty (`namespace` and `name` have bloom filters) |
//! | `code` | Int32 null | `responseStatus.code` |
//! | `decision` | Utf8 null | annotation `authorization.k8s.io/decision` (`allow`, `forbid`) |
//! | `reason` | Utf8 null | annotation `authorization.k8s.io/reason` |
//! | `latency_us` | Int64 null | `stageTimestamp` − `requestReceivedTimestamp` |
//! | `event` | Utf8 | the full event JSON, as stored (redacted) |
//!
//! The columns are read from the event parsed as [`kubetrail_model::Event`] (the one event model; its strings
//! borrow from the log payload where they hold no escapes). Every list's items are non-null Utf8 named
//! `item`. An event that does not parse as one (it cannot come from the pipeline, which parsed it) still gets
//! a row: the log record's own fields, `time` = `received`, empty lists, nulls and the raw text in `event`.
//!
//! Files are zstd-compressed (level 3; `event` level 9 in pages up to 8 MiB), with dictionary encoding (the
//! writer's default, off for `audit_id` and `event`; delta encoding for `time`, `stage_time`, `received` and
//! `seq`), page-level statistics and a page index (none for `event`), bloom filters on `user`, `name`,
//! `audit_id`, `namespace` and `ip`, rows sorted by (`user`, `time`, `seq`) and declared sorted by (`user`,
//! `time`), pages of at most 2,048 rows and row groups of [`ColumnarOptions::row_group_rows`]. Sorting by
//! identity does two things: an identity's rows share a few pages, so page statistics skip the rest of a file
//! (the timeline of one identity), and similar events sit together, so the JSON compresses ~14% better.
//!
//! # Crash safety
//!
//! The cursor is committed after a chunk's files are durable, so a crash leaves at worst files whose rows the
//! cursor still points before. Within one partition the files' seq ranges never overlap (each chunk's file
//! holds all of the partition's rows of that chunk), so a row is already stored exactly when its partition
//! has a file whose range holds its seq: [`ColumnarWriter::open`] indexes the ranges of files at or past the
//! cursor, and `flush` skips those rows, whatever the new chunk boundaries. Compaction merges only runs of
//! files adjacent in seq order and names the result by the run's range, so a file whose range lies inside
//! another file's range of the same partition is an input left by a compaction that crashed after its output
//! was durable (or whose removal was not recorded yet): [`list_files`] never returns it and the next
//! `compact` removes it, telling its recorder first.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::{
    ArrayRef, AsArray, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, UInt64Type,
};
use arrow::error::ArrowError;
use kubetrail_model::{Event, ObjectReference};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::record::EventRecord;
use crate::wal::{Cursor, Wal, WalError};

/// The log cursor the writer owns.
pub const CURSOR_NAME: &str = "columnar";

/// The directory name of the empty cluster name (what Hive and Spark write for a null partition value).
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Written into every file's key-value metadata, so a later format can tell the files apart.
const FORMAT_KEY: &str = "kubetrail.columnar.version";
const FORMAT_VERSION: &str = "1";

/// Rows per Arrow batch handed to the Parquet writer (and read back when compacting).
const BATCH_ROWS: usize = 8192;
/// Rows per batch read from each input of a merge: bounds a merge's memory to inputs × this × row size.
const MERGE_BATCH_ROWS: usize = 1024;

const HOUR_US: i64 = 3_600_000_000;
/// The `hour=` directory of a date's day file.
const DAY_HOUR: &str = "all";

/// Columns with bloom filters: the values a selective forensic query looks up.
pub const BLOOM_FILTER_COLUMNS: [&str; 5] = ["user", "name", "audit_id", "namespace", "ip"];

/// The `user` column's index in [`schema`].
const USER_COLUMN: usize = 9;
/// Rows per data page at most (checked every 1,024 rows written).
const PAGE_ROWS: usize = 2048;

/// How the writer batches and compacts.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnarOptions {
    /// The most log records converted per chunk (one set of files, one cursor commit).
    pub flush_rows: usize,
    /// The most event JSON bytes per chunk: with `flush_rows`, what bounds a flush's memory.
    pub flush_bytes: usize,
    /// How long an event may wait before it is queryable: [`ColumnarWriter::flush_if_due`] writes once the
    /// oldest unconverted record is this old (or `flush_rows` are waiting).
    pub flush_interval: Duration,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Files smaller than this are merged by [`ColumnarWriter::compact`].
    pub compact_file_bytes: u64,
    /// Compaction merges a run of at least this many small files.
    pub compact_min_files: usize,
    /// ... and at most this many at once (a merge holds one batch of each in memory).
    pub compact_max_files: usize,
    /// A closed day whose files hold at most this many bytes in all is merged into one day file (0: never).
    pub compact_day_bytes: u64,
    /// A day is closed (its files are merged into a day file) this long after it ended: late events have
    /// arrived and the archive has taken the day's hourly files.
    pub day_close: Duration,
}

impl Default for ColumnarOptions {
    fn default() -> ColumnarOptions {
        ColumnarOptions {
            flush_rows: 262_144,
            flush_bytes: 256 << 20,
            flush_interval: Duration::from_secs(5),
            row_group_rows: 65_536,
            compact_file_bytes: 32 << 20,
            compact_min_files: 5,
            compact_max_files: 64,
            compact_day_bytes: 256 << 20,
            day_close: Duration::from_secs(2 * 3600),
        }
    }
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Log records read.
    pub records: u64,
    /// Rows written.
    pub rows: u64,
    /// Records whose rows were already in a file (written before a crash, the cursor not yet committed).
    pub already_stored: u64,
    /// Events whose JSON did not parse: stored with the record's fields only.
    pub unparsed: u64,
    /// Log records that are not event records (skipped).
    pub undecodable: u64,
    /// Seqs the log had released before this cursor read them.
    pub lost: u64,
    pub files: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// The cursor position afterwards: every record before it is in a file.
    pub position: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Merges done (each wrote one file).
    pub merges: u64,
    pub files_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rows: u64,
    /// Inputs of a compaction that crashed after writing its output, deleted.
    pub leftovers_removed: u64,
    /// Of the merges, closed days merged into one day file.
    pub days: u64,
}

/// One Parquet file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFile {
    pub path: PathBuf,
    /// The raw cluster name (decoded from the directory name).
    pub cluster: String,
    /// The start of the partition's hour (UTC); its rows have `time` in [hour, hour + 1h). For a day file,
    /// the start of its date; its rows have `time` in that date.
    pub hour: jiff::Timestamp,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    /// A day file (`hour=all`): every hour of its date merged once the day was closed.
    pub day: bool,
}

impl PartitionFile {
    /// The end of the time its rows may have (exclusive): an hour, or a day for a day file, after `hour`.
    pub fn end(&self) -> jiff::Timestamp {
        let span = if self.day { 24 } else { 1 };
        self.hour
            .checked_add(jiff::SignedDuration::from_hours(span))
            .unwrap_or(jiff::Timestamp::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ColumnarError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("failed to access `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read or write parquet file `{path}`: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("failed to build columns: {0}")]
    Arrow(#[from] ArrowError),
    /// The caller's record of files about to be removed failed: nothing was removed.
    #[error("failed to record the files a compaction removes: {0}")]
    Record(String),
    #[error(
        "merging into `{path}` produced {got} rows from inputs holding {expected}: the inputs are kept"
    )]
    RowCount {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ColumnarError + '_ {
    move |source| ColumnarError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn pq_err(path: &Path) -> impl FnOnce(ParquetError) -> ColumnarError + '_ {
    move |source| ColumnarError::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

/// The schema of every file (see the module docs).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let list = || DataType::List(list_item());
            let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                Field::new("time", ts(), false),
                Field::new("stage_time", ts(), true),
                Field::new("received", ts(), false),
                Field::new("seq", DataType::UInt64, false),
                s("cluster", false),
                s("audit_id", false),
                s("stage", false),
                s("level", false),
                s("verb", false),
                s("user", false),
                Field::new("groups", list(), false),
                s("impersonated_user", true),
                Field::new("impersonated_groups", list(), false),
                Field::new("source_ips", list(), false),
                s("ip", true),
                s("user_agent", true),
                s("uri", false),
                s("resource", true),
                s("subresource", true),
                s("namespace", true),
                s("name", true),
                s("api_group", true),
                s("api_version", true),
                Field::new("code", DataType::Int32, true),
                s("decision", true),
                s("reason", true),
                Field::new("latency_us", DataType::Int64, true),
                s("event", false),
            ]))
        })
        .clone()
}

fn list_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Utf8, false))
}

/// zstd level of the `event` column: on generated events in 8 MiB pages, level 9 stores the JSON in 16% fewer
/// bytes than level 5 for ~1.5x its compression time (an 8 MiB page: 0.12 s against 0.08 s on one core), which
/// conversion affords (the log absorbs bursts; `serve` converts a few thousand events per second).
const EVENT_LEVEL: i32 = 9;

fn writer_props(row_group_rows: usize) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(zstd_level(3))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: USER_COLUMN as i32,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            },
        ]))
        // Pages of at most ~2,000 rows: with rows sorted by user, page statistics then skip all but an
        // identity's own pages (the timeline of one identity among many reads a few pages per file).
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            FORMAT_KEY.to_string(),
            FORMAT_VERSION.to_string(),
        )]))
        .set_column_dictionary_enabled(ColumnPath::from("event"), false)
        .set_column_dictionary_enabled(ColumnPath::from("audit_id"), false)
        .set_column_statistics_enabled(ColumnPath::from("event"), EnabledStatistics::None);
    // The event JSON is 90% of the bytes: zstd 5 (lazy matching) in 8 MiB pages stores it in ~1/17 of its
    // size where level 3 in 1 MiB pages needs ~1/14, for ~25% more conversion time (measured in
    // tests/columnar.rs); level 9 (`EVENT_LEVEL`) saves another 16%. Queries filter on the other columns and
    // read `event` only for the rows they keep.
    b = b
        .set_column_compression(ColumnPath::from("event"), zstd_level(EVENT_LEVEL))
        .set_column_data_page_size_limit(ColumnPath::from("event"), 8 << 20);
    // Sorted or nearly sorted integers: deltas take a byte or two where plain values take four or five.
    for col in ["time", "stage_time", "received", "seq"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    for col in BLOOM_FILTER_COLUMNS {
        b = b
            .set_column_bloom_filter_enabled(ColumnPath::from(col), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(col), 0.01)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(col), row_group_rows.max(1) as u64);
    }
    b.build()
}

fn zstd_level(level: i32) -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(level).expect("a valid zstd level"))
}

// ---------------------------------------------------------------------------------------------------------
// Rows: the event parsed as `kubetrail_model::Event`, borrowing from the log payload where it can, and the
// columns' values moved out of it.

/// The annotation the `decision` column holds.
const DECISION: &str = "authorization.k8s.io/decision";
/// The annotation the `reason` column holds.
const REASON: &str = "authorization.k8s.io/reason";

/// One row to be: the record's own fields and the columns' values from the event, borrowing from the log
/// payload.
#[derive(Debug)]
struct Row<'a> {
    seq: u64,
    time: i64,
    stage_time: Option<i64>,
    latency: Option<i64>,
    received: i64,
    cluster: &'a str,
    audit_id: &'a str,
    stage: &'a str,
    event: &'a str,
    /// Empty when the event did not parse.
    cols: EventColumns<'a>,
}

/// The columns that come from the event (see the module docs); all empty or null when it did not parse.
#[derive(Debug, Default)]
struct EventColumns<'a> {
    level: &'static str,
    verb: Cow<'a, str>,
    user: Cow<'a, str>,
    groups: Vec<Cow<'a, str>>,
    impersonated_user: Option<Cow<'a, str>>,
    impersonated_groups: Vec<Cow<'a, str>>,
    source_ips: Vec<Cow<'a, str>>,
    user_agent: Option<Cow<'a, str>>,
    uri: Cow<'a, str>,
    object_ref: Option<ObjectReference<'a>>,
    code: Option<i32>,
    decision: Option<Cow<'a, str>>,
    reason: Option<Cow<'a, str>>,
}

impl<'a> EventColumns<'a> {
    /// Moves the columns' values out of `ev` (no string is copied).
    fn from_event(ev: Event<'a>) -> EventColumns<'a> {
        let (decision, reason) = match ev.annotations {
            Some(mut a) => (a.remove(DECISION), a.remove(REASON)),
            None => (None, None),
        };
        let (impersonated_user, impersonated_groups) = match ev.impersonated_user {
            // `username` is left out when empty (Kubernetes writes it with `omitempty`): null, as when absent.
            Some(u) => (Some(u.username).filter(|n| !n.is_empty()), u.groups),
            None => (None, Vec::new()),
        };
        EventColumns {
            level: ev.level.as_str(),
            verb: ev.verb,
            user: ev.user.username,
            groups: ev.user.groups,
            impersonated_user,
            impersonated_groups,
            source_ips: ev.source_ips,
            user_agent: ev.user_agent,
            uri: ev.request_uri,
            object_ref: ev.object_ref,
            code: ev.response_status.and_then(|s| s.code),
            decision,
            reason,
        }
    }
}

fn clamp_us(us: i64) -> i64 {
    us.clamp(
        jiff::Timestamp::MIN.as_microsecond(),
        jiff::Timestamp::MAX.as_microsecond(),
    )
}

fn parse_time(s: Option<&str>) -> Option<i64> {
    s.and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_microsecond())
}

impl<'a> Row<'a> {
    /// The `user` column's value: rows are sorted by it first.
    fn user(&self) -> &str {
        &self.cols.user
    }

    /// The row for a record; `false` with it when the event JSON did not parse.
    fn new(seq: u64, rec: &EventRecord<'a>) -> (Row<'a>, bool) {
        let event: &'a str = match &rec.event {
            Cow::Borrowed(s) => s,
            Cow::Owned(_) => unreachable!("decoded records borrow"),
        };
        let borrowed = |c: &Cow<'a, str>| -> &'a str {
            match c {
                Cow::Borrowed(s) => s,
                Cow::Owned(_) => unreachable!("decoded records borrow"),
            }
        };
        let received = clamp_us(rec.received_us);
        let (requested, stage_time, cols, parsed) = match Event::parse(event) {
            Ok(ev) => (
                parse_time(
                    ev.request_received_timestamp
                        .as_deref()
                        .or(ev.timestamp.as_deref()),
                ),
                parse_time(ev.stage_timestamp.as_deref()),
                EventColumns::from_event(ev),
                true,
            ),
            Err(_) => (None, None, EventColumns::default(), false),
        };
        let latency = requested.zip(stage_time).map(|(r, s)| s - r);
        let row = Row {
            seq,
            time: requested.or(stage_time).unwrap_or(received),
            stage_time,
            latency,
            received,
            cluster: borrowed(&rec.cluster),
            audit_id: borrowed(&rec.audit_id),
            stage: borrowed(&rec.stage),
            event,
            cols,
        };
        (row, parsed)
    }

    fn hour(&self) -> i64 {
        self.time.div_euclid(HOUR_US)
    }
}

/// Column builders for one batch.
struct Columns {
    time: TimestampMicrosecondBuilder,
    stage_time: TimestampMicrosecondBuilder,
    received: TimestampMicrosecondBuilder,
    seq: UInt64Builder,
    cluster: StringBuilder,
    audit_id: StringBuilder,
    stage: StringBuilder,
    level: StringBuilder,
    verb: StringBuilder,
    user: StringBuilder,
    groups: ListBuilder<StringBuilder>,
    impersonated_user: StringBuilder,
    impersonated_groups: ListBuilder<StringBuilder>,
    source_ips: ListBuilder<StringBuilder>,
    ip: StringBuilder,
    user_agent: StringBuilder,
    uri: StringBuilder,
    resource: StringBuilder,
    subresource: StringBuilder,
    namespace: StringBuilder,
    name: StringBuilder,
    api_group: StringBuilder,
    api_version: StringBuilder,
    code: Int32Builder,
    decision: StringBuilder,
    reason: StringBuilder,
    latency_us: Int64Builder,
    event: StringBuilder,
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

impl Columns {
    fn new(rows: usize, event_bytes: usize) -> Columns {
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        let list =
            || ListBuilder::with_capacity(StringBuilder::new(), rows).with_field(list_item());
        Columns {
            time: ts(),
            stage_time: ts(),
            received: ts(),
            seq: UInt64Builder::with_capacity(rows),
            cluster: s(),
            audit_id: StringBuilder::with_capacity(rows, rows * 36),
            stage: s(),
            level: s(),
            verb: s(),
            user: s(),
            groups: list(),
            impersonated_user: s(),
            impersonated_groups: list(),
            source_ips: list(),
            ip: s(),
            user_agent: s(),
            uri: StringBuilder::with_capacity(rows, rows * 64),
            resource: s(),
            subresource: s(),
            namespace: s(),
            name: s(),
            api_group: s(),
            api_version: s(),
            code: Int32Builder::with_capacity(rows),
            decision: s(),
            reason: s(),
            latency_us: Int64Builder::with_capacity(rows),
            event: StringBuilder::with_capacity(rows, event_bytes),
        }
    }

    fn push(&mut self, r: &Row<'_>) {
        let c = &r.cols;
        self.time.append_value(r.time);
        self.stage_time.append_option(r.stage_time);
        self.received.append_value(r.received);
        self.seq.append_value(r.seq);
        self.cluster.append_value(r.cluster);
        self.audit_id.append_value(r.audit_id);
        self.stage.append_value(r.stage);
        self.level.append_value(c.level);
        self.verb.append_value(&c.verb);
        self.user.append_value(&c.user);
        append_list(&mut self.groups, &c.groups);
        self.impersonated_user
            .append_option(c.impersonated_user.as_deref());
        append_list(&mut self.impersonated_groups, &c.impersonated_groups);
        append_list(&mut self.source_ips, &c.source_ips);
        self.ip
            .append_option(c.source_ips.first().map(AsRef::as_ref));
        self.user_agent.append_option(c.user_agent.as_deref());
        self.uri.append_value(&c.uri);
        let o = c.object_ref.as_ref();
        let field =
            |f: for<'r, 's> fn(&'r ObjectReference<'s>) -> &'r str| o.and_then(|o| non_empty(f(o)));
        self.resource.append_option(field(|o| &o.resource));
        self.subresource.append_option(field(|o| &o.subresource));
        self.namespace.append_option(field(|o| &o.namespace));
        self.name.append_option(field(|o| &o.name));
        self.api_group.append_option(field(|o| &o.api_group));
        self.api_version.append_option(field(|o| &o.api_version));
        self.code.append_option(c.code);
        self.decision.append_option(c.decision.as_deref());
        self.reason.append_option(c.reason.as_deref());
        self.latency_us.append_option(r.latency);
        self.event.append_value(r.event);
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.stage_time.finish()),
            Arc::new(self.received.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.cluster.finish()),
            Arc::new(self.audit_id.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.verb.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.groups.finish()),
            Arc::new(self.impersonated_user.finish()),
            Arc::new(self.impersonated_groups.finish()),
            Arc::new(self.source_ips.finish()),
            Arc::new(self.ip.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.uri.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.subresource.finish()),
            Arc::new(self.namespace.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.api_group.finish()),
            Arc::new(self.api_version.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.decision.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.latency_us.finish()),
            Arc::new(self.event.finish()),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

fn append_list(b: &mut ListBuilder<StringBuilder>, items: &[Cow<'_, str>]) {
    for item in items {
        b.values().append_value(item);
    }
    b.append(true);
}

// ---------------------------------------------------------------------------------------------------------
// Paths.

/// The directory name of a cluster (see the module docs: one to one, and safe as a path component).
pub fn cluster_dir_name(cluster: &str) -> String {
    if cluster.is_empty() {
        return DEFAULT_PARTITION.to_string();
    }
    let mut out = String::with_capacity(cluster.len());
    for (i, b) in cluster.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || b == b'-'
            || (b == b'_' && !(i == 0 && cluster == DEFAULT_PARTITION))
            || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The cluster name a directory name stands for, if it is one [`cluster_dir_name`] makes.
fn cluster_from_dir_name(dir: &str) -> Option<String> {
    if dir == DEFAULT_PARTITION {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(dir.len());
    let mut it = dir.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let name = String::from_utf8(bytes).ok()?;
    (cluster_dir_name(&name) == dir).then_some(name)
}

/// `cluster=<c>/date=YYYY-MM-DD/hour=HH`, relative to the root.
fn partition_dir(cluster: &str, hour: i64) -> PathBuf {
    let t = jiff::Timestamp::from_second(hour * 3600).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let t = jiff::tz::Offset::UTC.to_datetime(t);
    PathBuf::from(format!("cluster={}", cluster_dir_name(cluster)))
        .join(format!("date={}", t.date()))
        .join(format!("hour={:02}", t.hour()))
}

fn file_name(first_seq: u64, last_seq: u64) -> String {
    format!("{first_seq:020}-{last_seq:020}.parquet")
}

fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_hour(date: &str, hour: &str) -> Option<jiff::Timestamp> {
    if hour.len() != 2 {
        return None;
    }
    let date: jiff::civil::Date = date.parse().ok()?;
    let hour: i8 = hour.parse().ok().filter(|h| (0..24).contains(h))?;
    jiff::tz::Offset::UTC
        .to_timestamp(date.at(hour, 0, 0, 0))
        .ok()
}

fn sync_dir(dir: &Path) -> Result<(), ColumnarError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Creates `root/rel` and every missing directory on the way, each made durable in its parent.
fn ensure_dir(root: &Path, rel: &Path) -> Result<PathBuf, ColumnarError> {
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
    }
    Ok(dir)
}

fn read_dir_names(dir: &Path) -> Result<Vec<(String, PathBuf)>, ColumnarError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every file of the store (leftovers included), grouped by partition directory, each group sorted by seq.
/// With `clean`, removes the `.tmp` files a crash left behind.
fn scan(
    root: &Path,
    cluster: Option<&str>,
    clean: bool,
) -> Result<BTreeMap<PathBuf, Vec<PartitionFile>>, ColumnarError> {
    let mut parts = BTreeMap::new();
    let want = cluster.map(cluster_dir_name);
    for (cname, cpath) in read_dir_names(root)? {
        let Some(cdir) = cname.strip_prefix("cluster=") else {
            continue;
        };
        if want.as_deref().is_some_and(|w| w != cdir) {
            continue;
        }
        let Some(cluster) = cluster_from_dir_name(cdir) else {
            continue;
        };
        for (dname, dpath) in read_dir_names(&cpath)? {
            let Some(date) = dname.strip_prefix("date=") else {
                continue;
            };
            for (hname, hpath) in read_dir_names(&dpath)? {
                let Some(hour) = hname.strip_prefix("hour=") else {
                    continue;
                };
                let day = hour == DAY_HOUR;
                let Some(hour) = parse_hour(date, if day { "00" } else { hour }) else {
                    continue;
                };
                let mut files = Vec::new();
                for (fname, fpath) in read_dir_names(&hpath)? {
                    if fname.starts_with('.') {
                        if clean && fname.ends_with(".tmp") {
                            fs::remove_file(&fpath).map_err(io_err(&fpath))?;
                        }
                        continue;
                    }
                    let Some((first_seq, last_seq)) = parse_file_name(&fname) else {
                        continue;
                    };
                    let bytes = match fs::metadata(&fpath) {
                        Ok(m) => m.len(),
                        // Removed by a compaction since the listing.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err(&fpath)(e)),
                    };
                    files.push(PartitionFile {
                        path: fpath,
                        cluster: cluster.clone(),
                        hour,
                        first_seq,
                        last_seq,
                        bytes,
                        day,
                    });
                }
                if !files.is_empty() {
                    files.sort_by_key(|f| (f.first_seq, Reverse(f.last_seq)));
                    parts.insert(hpath, files);
                }
            }
        }
    }
    Ok(parts)
}

/// Splits a partition's files (sorted by first seq, then widest first) into the live ones and those whose
/// range lies inside another's: inputs of a compaction whose output is durable.
fn split_leftovers(files: Vec<PartitionFile>) -> (Vec<PartitionFile>, Vec<PartitionFile>) {
    let mut live: Vec<PartitionFile> = Vec::with_capacity(files.len());
    let mut leftovers = Vec::new();
    for f in files {
        match live.last() {
            Some(prev) if prev.last_seq >= f.last_seq => leftovers.push(f),
            _ => live.push(f),
        }
    }
    (live, leftovers)
}

/// The live files and the leftovers of every partition: [`split_leftovers`] within each directory, and, per
/// cluster and date, every other file whose range lies inside a day file's range (the day file holds its rows:
/// the day merge took every file of the date, and files written later have higher seqs).
#[allow(clippy::type_complexity)]
fn split_all(
    parts: BTreeMap<PathBuf, Vec<PartitionFile>>,
) -> (
    Vec<(PathBuf, Vec<PartitionFile>)>,
    Vec<(PathBuf, Vec<PartitionFile>)>,
) {
    let mut live = Vec::new();
    let mut leftovers = Vec::new();
    // Day files' ranges by their date directory.
    let mut days: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
    let mut split = Vec::new();
    for (dir, files) in parts {
        let (l, left) = split_leftovers(files);
        if l.first().is_some_and(|f| f.day)
            && let Some(date) = dir.parent()
        {
            days.entry(date.to_path_buf())
                .or_default()
                .extend(l.iter().map(|f| (f.first_seq, f.last_seq)));
        }
        split.push((dir, l, left));
    }
    for (dir, l, mut left) in split {
        let ranges = dir.parent().and_then(|d| days.get(d));
        let (keep, inside): (Vec<_>, Vec<_>) = l.into_iter().partition(|f| {
            f.day
                || !ranges
                    .is_some_and(|r| r.iter().any(|&(a, b)| a <= f.first_seq && f.last_seq <= b))
        });
        left.extend(inside);
        if !keep.is_empty() {
            live.push((dir.clone(), keep));
        }
        if !left.is_empty() {
            leftovers.push((dir, left));
        }
    }
    (live, leftovers)
}

/// What a file's footer says about it, without reading its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Rows (stored events, one per stage).
    pub rows: u64,
    /// The uncompressed bytes of the `event` column: about the stored (redacted) JSON's size.
    pub event_bytes: u64,
}

/// The footer statistics of one store file.
pub fn file_stats(path: &Path) -> Result<FileStats, ColumnarError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = File::open(path).map_err(io_err(path))?;
    let reader = SerializedFileReader::new(file).map_err(pq_err(path))?;
    let meta = reader.metadata();
    let event = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "event");
    let mut stats = FileStats {
        rows: meta.file_metadata().num_rows().max(0) as u64,
        event_bytes: 0,
    };
    if let Some(i) = event {
        for rg in meta.row_groups() {
            stats.event_bytes += rg.column(i).uncompressed_size().max(0) as u64;
        }
    }
    Ok(stats)
}

/// The store's files in `cluster` (all clusters if `None`) whose hour partitions (or day files) overlap
/// [`since`, `until`] (both inclusive; open when `None`), sorted by cluster, hour and seq. Reads directory
/// names only; never returns a file a compaction has superseded.
pub fn list_files(
    root: &Path,
    cluster: Option<&str>,
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
) -> Result<Vec<PartitionFile>, ColumnarError> {
    let mut out = Vec::new();
    for (_, files) in split_all(scan(root, cluster, false)?).0 {
        let f = &files[0];
        if since.is_some_and(|s| f.end() <= s) || until.is_some_and(|u| f.hour > u) {
            continue;
        }
        out.extend(files);
    }
    out.sort_by(|a, b| (&a.cluster, a.hour, a.first_seq).cmp(&(&b.cluster, b.hour, b.first_seq)));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Writing.

/// Writes `batches` to `dir/name` durably: a `.tmp` file, fsynced, renamed, the directory fsynced.
fn write_file(
    dir: &Path,
    name: &str,
    props: &WriterProperties,
    mut batches: impl FnMut(&mut ArrowWriter<File>) -> Result<(), ColumnarError>,
) -> Result<u64, ColumnarError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w =
            ArrowWriter::try_new(file, schema(), Some(props.clone())).map_err(pq_err(&tmp))?;
        batches(&mut w)?;
        let file = w.into_inner().map_err(pq_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        let bytes = file.metadata().map_err(io_err(&tmp))?.len();
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(dir)?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Converts the write-ahead log into Parquet partitions; owns the log cursor [`CURSOR_NAME`].
#[derive(Debug)]
pub struct ColumnarWriter {
    root: PathBuf,
    wal: Arc<Wal>,
    cursor: Cursor,
    opts: ColumnarOptions,
    props: WriterProperties,
    /// Seq ranges of the files at or past the cursor, per partition directory (relative to the root): rows
    /// already stored by a flush whose cursor commit a crash prevented. Almost always empty.
    stored: HashMap<PathBuf, Vec<(u64, u64)>>,
}

impl ColumnarWriter {
    /// Opens (creating) the store at `root`, removing the `.tmp` files a crash left (the inputs of a
    /// compaction whose output is durable stay until the next compaction, skipped by queries); and indexes files written past the cursor so they are not written
    /// twice.
    pub fn open(
        root: &Path,
        wal: Arc<Wal>,
        opts: ColumnarOptions,
    ) -> Result<ColumnarWriter, ColumnarError> {
        if !root.is_dir() {
            fs::create_dir_all(root).map_err(io_err(root))?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let cursor = wal.cursor(CURSOR_NAME)?;
        let mut w = ColumnarWriter {
            root: root.to_path_buf(),
            props: writer_props(opts.row_group_rows),
            wal,
            cursor,
            opts,
            stored: HashMap::new(),
        };
        let position = w.cursor.position();
        // Leftovers of a crashed compaction stay until the next compaction, which records their removal.
        for (dir, live) in split_all(scan(root, None, true)?).0 {
            let ranges: Vec<(u64, u64)> = live
                .iter()
                .filter(|f| f.last_seq >= position)
                .map(|f| (f.first_seq, f.last_seq))
                .collect();
            if !ranges.is_empty() {
                let rel = dir.strip_prefix(root).unwrap_or(&dir).to_path_buf();
                w.stored.insert(rel, ranges);
            }
        }
        Ok(w)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn options(&self) -> &ColumnarOptions {
        &self.opts
    }

    /// The first log seq not yet in a file.
    pub fn position(&self) -> u64 {
        self.cursor.position()
    }

    /// Converts every record the cursor has not yet converted, up to the log's `durable_seq` as of the call,
    /// in chunks of at most `flush_rows` records and `flush_bytes` bytes, each chunk's files made durable and
    /// then the cursor committed past it. Call it at shutdown and at the end of an import; for the periodic
    /// call use [`flush_if_due`](Self::flush_if_due), which writes fewer, larger files.
    pub fn flush(&mut self) -> Result<FlushStats, ColumnarError> {
        let end = self.wal.durable_seq();
        let mut stats = FlushStats::default();
        while self.cursor.position() < end {
            self.flush_chunk(end, &mut stats)?;
        }
        stats.position = self.cursor.position();
        Ok(stats)
    }

    /// [`flush`](Self::flush), when it is due: `flush_rows` records are waiting, or the oldest waiting one was
    /// received `flush_interval` ago or more. Otherwise does nothing. Call it every second or so.
    pub fn flush_if_due(&mut self) -> Result<FlushStats, ColumnarError> {
        let position = self.cursor.position();
        let waiting = self.wal.durable_seq().saturating_sub(position);
        let idle = FlushStats {
            position,
            ..FlushStats::default()
        };
        if waiting == 0 {
            return Ok(idle);
        }
        if waiting < self.opts.flush_rows as u64 {
            let oldest = match self.wal.read_from(position)?.next() {
                Some(item) => item?.1,
                None => return Ok(idle),
            };
            if let Ok(rec) = EventRecord::decode(&oldest) {
                let age_us = jiff::Timestamp::now()
                    .as_microsecond()
                    .saturating_sub(rec.received_us);
                if age_us < self.opts.flush_interval.as_micros() as i64 {
                    return Ok(idle);
                }
            }
        }
        self.flush()
    }

    fn flush_chunk(&mut self, end: u64, stats: &mut FlushStats) -> Result<(), ColumnarError> {
        let start = self.cursor.position();
        let mut payloads: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        for item in self.wal.read_from(start)? {
            let (seq, payload) = item?;
            if seq >= end {
                break;
            }
            bytes += payload.len();
            payloads.push((seq, payload));
            if payloads.len() >= self.opts.flush_rows.max(1) || bytes >= self.opts.flush_bytes {
                break;
            }
        }
        let next = payloads.last().map_or(end, |(seq, _)| seq + 1);
        let first = payloads.first().map_or(end, |(seq, _)| *seq);
        stats.lost += first.saturating_sub(start);
        stats.records += payloads.len() as u64;

        let mut rows = Vec::with_capacity(payloads.len());
        for (seq, payload) in &payloads {
            match EventRecord::decode(payload) {
                Ok(rec) => {
                    let (row, parsed) = Row::new(*seq, &rec);
                    stats.unparsed += u64::from(!parsed);
                    rows.push(row);
                }
                Err(_) => stats.undecodable += 1,
            }
        }
        let mut parts: HashMap<(&str, i64), Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            parts.entry((r.cluster, r.hour())).or_default().push(i);
        }
        let mut parts: Vec<_> = parts.into_iter().collect();
        parts.sort_unstable_by_key(|(k, _)| *k);
        for ((cluster, hour), idx) in parts {
            let rel = partition_dir(cluster, hour);
            // `idx` is in seq order here. Rows already in a file are skipped, and the rest is cut where a
            // stored range lies between two rows, so that no new file's range holds a file it does not
            // replace (which would make that file look like a compaction's leftover).
            let mut groups = vec![Vec::new()];
            let ranges = self.stored.get(&rel).map(Vec::as_slice).unwrap_or_default();
            let mut prev: Option<u64> = None;
            for i in idx {
                let s = rows[i].seq;
                if ranges.iter().any(|&(a, b)| a <= s && s <= b) {
                    stats.already_stored += 1;
                    continue;
                }
                if prev.is_some_and(|p| ranges.iter().any(|&(a, _)| p < a && a < s)) {
                    groups.push(Vec::new());
                }
                prev = Some(s);
                groups.last_mut().expect("one group at least").push(i);
            }
            for mut idx in groups.into_iter().filter(|g| !g.is_empty()) {
                let first_seq = rows[idx[0]].seq;
                let last_seq = rows[idx[idx.len() - 1]].seq;
                idx.sort_by(|&a, &b| {
                    let (x, y) = (&rows[a], &rows[b]);
                    (x.user(), x.time, x.seq).cmp(&(y.user(), y.time, y.seq))
                });
                let dir = ensure_dir(&self.root, &rel)?;
                let name = file_name(first_seq, last_seq);
                let written = write_file(&dir, &name, &self.props, |w| {
                    for chunk in idx.chunks(BATCH_ROWS) {
                        let event_bytes = chunk.iter().map(|&i| rows[i].event.len()).sum();
                        let mut cols = Columns::new(chunk.len(), event_bytes);
                        for &i in chunk {
                            cols.push(&rows[i]);
                        }
                        let batch = cols.finish()?;
                        w.write(&batch).map_err(pq_err(&dir))?;
                    }
                    Ok(())
                })?;
                stats.files += 1;
                stats.bytes += written;
                stats.rows += idx.len() as u64;
            }
        }
        self.cursor.commit(next)?;
        self.stored.retain(|_, ranges| {
            ranges.retain(|&(_, b)| b >= next);
            !ranges.is_empty()
        });
        Ok(())
    }

    fn remove_files(&self, dir: &Path, files: &[PartitionFile]) -> Result<(), ColumnarError> {
        for f in files {
            match fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&f.path)(e)),
            }
        }
        if !files.is_empty() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Merges runs of small files (under `compact_file_bytes`; at least `compact_min_files`, at most
    /// `compact_max_files` of them, adjacent in seq order) of each partition into one file sorted by time,
    /// removing the inputs only after the output is durable; repeats until no partition has such a run. Only
    /// files before the cursor are merged. Removes without telling anyone: a store under signed checkpoints
    /// uses [`compact_recorded`](Self::compact_recorded).
    pub fn compact(&mut self) -> Result<CompactStats, ColumnarError> {
        self.compact_recorded(&mut |_| Ok(()))
    }

    /// [`compact`](Self::compact), handing every file it is about to remove (merged inputs, and the inputs
    /// a crashed compaction left) to `record` first, all at once, after every output is durable: the caller
    /// records the deletions (in a signed checkpoint) so they are not mistaken for tampering. If `record`
    /// fails nothing is removed; the inputs stay as leftovers that queries skip, removed by a later call.
    pub fn compact_recorded(
        &mut self,
        record: &mut dyn FnMut(&[PathBuf]) -> Result<(), String>,
    ) -> Result<CompactStats, ColumnarError> {
        let mut stats = CompactStats::default();
        let position = self.cursor.position();
        let min = self.opts.compact_min_files.max(2);
        let max = self.opts.compact_max_files.max(min);
        let mut remove: Vec<(PathBuf, Vec<PartitionFile>)> = Vec::new();
        let (parts, leftovers) = split_all(scan(&self.root, None, false)?);
        for (dir, files) in leftovers {
            stats.leftovers_removed += files.len() as u64;
            remove.push((dir, files));
        }
        // Per date directory, its partitions' live files after the merges of small runs.
        let mut dates: BTreeMap<PathBuf, Vec<(PathBuf, Vec<PartitionFile>)>> = BTreeMap::new();
        for (dir, mut live) in parts {
            let mut gone = Vec::new();
            let small = self.opts.compact_file_bytes;
            while let Some(run) = find_run(&live, position, small, min, max) {
                let inputs: Vec<PartitionFile> = live.drain(run.clone()).collect();
                let Some(merged) = self.merge(&dir, &inputs, false, &mut stats)? else {
                    break;
                };
                live.insert(run.start, merged);
                // An input may be the output of an earlier merge of this pass.
                gone.extend(inputs);
            }
            if !gone.is_empty() {
                remove.push((dir.clone(), gone));
            }
            if let Some(date) = dir.parent() {
                dates
                    .entry(date.to_path_buf())
                    .or_default()
                    .push((dir, live));
            }
        }
        // Closed days: every file of the date into one day file (fewer files is what makes a year of
        // queries fast), when the day is small enough and wholly converted.
        let closed_before = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(24))
            .and_then(|t| t.checked_sub(self.opts.day_close))
            .unwrap_or(jiff::Timestamp::MIN);
        for (date, dirs) in dates {
            let inputs: Vec<PartitionFile> = dirs.into_iter().flat_map(|(_, f)| f).collect();
            let Some(first) = inputs.first() else {
                continue;
            };
            let start = first.hour;
            let total: u64 = inputs.iter().map(|f| f.bytes).sum();
            // One file is as good as a day file: nothing to gain.
            if inputs.len() < 2
                || self.opts.compact_day_bytes == 0
                || start > closed_before
                || total > self.opts.compact_day_bytes
                || inputs.iter().any(|f| f.last_seq >= position)
            {
                continue;
            }
            let rel = date.strip_prefix(&self.root).unwrap_or(&date);
            let dir = ensure_dir(&self.root, &rel.join(format!("hour={DAY_HOUR}")))?;
            let mut inputs = inputs;
            inputs.sort_by_key(|f| (f.first_seq, f.last_seq));
            if self.merge(&dir, &inputs, true, &mut stats)?.is_none() {
                continue;
            }
            stats.days += 1;
            for f in inputs {
                let parent = f.path.parent().map(Path::to_path_buf).unwrap_or_default();
                remove.push((parent, vec![f]));
            }
        }
        let paths: Vec<PathBuf> = remove
            .iter()
            .flat_map(|(_, files)| files.iter().map(|f| f.path.clone()))
            .collect();
        if paths.is_empty() {
            return Ok(stats);
        }
        record(&paths).map_err(ColumnarError::Record)?;
        for (dir, files) in &remove {
            self.remove_files(dir, files)?;
        }
        Ok(stats)
    }

    /// Merges `inputs` (adjacent files of one partition, or with `day` every file of a closed date) into one
    /// durable file in `dir`, named by the lowest and highest seq (the caller removes the inputs). `None` if an
    /// input is not in this build's schema (it is left alone).
    fn merge(
        &self,
        dir: &Path,
        inputs: &[PartitionFile],
        day: bool,
        stats: &mut CompactStats,
    ) -> Result<Option<PartitionFile>, ColumnarError> {
        let mut readers = Vec::with_capacity(inputs.len());
        let mut expected = 0u64;
        for f in inputs {
            let file = File::open(&f.path).map_err(io_err(&f.path))?;
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq_err(&f.path))?;
            if builder.schema().fields() != schema().fields() {
                return Ok(None);
            }
            expected += builder.metadata().file_metadata().num_rows() as u64;
            let reader = builder
                .with_batch_size(MERGE_BATCH_ROWS)
                .build()
                .map_err(pq_err(&f.path))?;
            readers.push((f.path.clone(), reader));
        }
        let first_seq = inputs.iter().map(|f| f.first_seq).min().unwrap_or(0);
        let last_seq = inputs.iter().map(|f| f.last_seq).max().unwrap_or(0);
        let name = file_name(first_seq, last_seq);
        let out_path = dir.join(&name);
        let mut got = 0u64;
        let bytes = write_file(dir, &name, &self.props, |w| {
            let mut merge = Merge::new(readers.len());
            for (i, (path, reader)) in readers.iter_mut().enumerate() {
                merge.load(i, reader.next().transpose().map_err(arrow_in(path))?);
            }
            let mut out: Vec<(usize, usize)> = Vec::with_capacity(BATCH_ROWS);
            while let Some(Reverse((_, _, _, i))) = merge.heap.pop() {
                out.push((i, merge.pos[i]));
                merge.pos[i] += 1;
                let exhausted = merge.pos[i] == merge.batches[i].num_rows();
                if exhausted || out.len() >= BATCH_ROWS {
                    got += out.len() as u64;
                    merge.emit(&mut out, w, dir)?;
                }
                if exhausted {
                    let (path, reader) = &mut readers[i];
                    merge.load(i, reader.next().transpose().map_err(arrow_in(path))?);
                } else {
                    merge.push(i);
                }
            }
            got += out.len() as u64;
            merge.emit(&mut out, w, dir)
        })?;
        if got != expected {
            let _ = fs::remove_file(&out_path);
            return Err(ColumnarError::RowCount {
                path: out_path,
                expected,
                got,
            });
        }
        stats.merges += 1;
        stats.files_in += inputs.len() as u64;
        stats.bytes_in += inputs.iter().map(|f| f.bytes).sum::<u64>();
        stats.bytes_out += bytes;
        stats.rows += got;
        Ok(Some(PartitionFile {
            path: out_path,
            cluster: inputs[0].cluster.clone(),
            hour: inputs
                .iter()
                .map(|f| f.hour)
                .min()
                .unwrap_or(inputs[0].hour),
            first_seq,
            last_seq,
            bytes,
            day,
        }))
    }
}

fn arrow_in(path: &Path) -> impl FnOnce(ArrowError) -> ColumnarError + '_ {
    move |e| ColumnarError::Parquet {
        path: path.to_path_buf(),
        source: ParquetError::ArrowError(e.to_string()),
    }
}

/// The first run of at least `min` (at most `max`) adjacent small files wholly before the cursor.
fn find_run(
    files: &[PartitionFile],
    position: u64,
    small: u64,
    min: usize,
    max: usize,
) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for i in 0..=files.len() {
        let ok = files
            .get(i)
            .is_some_and(|f| f.bytes < small && f.last_seq < position);
        if ok && i + 1 - start == max {
            return Some(start..i + 1);
        }
        if !ok {
            if i - start >= min {
                return Some(start..i);
            }
            start = i + 1;
        }
    }
    None
}

/// A k-way merge of sorted inputs by (`user`, `time`, `seq`), one batch of each in memory. Inputs written
/// before files were sorted by `user` come out in a valid order all the same (the merge only reorders
/// between inputs); their rows keep their own order.
struct Merge {
    batches: Vec<RecordBatch>,
    pos: Vec<usize>,
    heap: BinaryHeap<Reverse<MergeKey>>,
}

/// (`user`, `time`, `seq`, input).
type MergeKey = (Box<str>, i64, u64, usize);

impl Merge {
    fn new(n: usize) -> Merge {
        Merge {
            batches: vec![RecordBatch::new_empty(schema()); n],
            pos: vec![0; n],
            heap: BinaryHeap::with_capacity(n),
        }
    }

    fn load(&mut self, i: usize, batch: Option<RecordBatch>) {
        self.pos[i] = 0;
        match batch.filter(|b| b.num_rows() > 0) {
            Some(b) => {
                self.batches[i] = b;
                self.push(i);
            }
            None => self.batches[i] = RecordBatch::new_empty(schema()),
        }
    }

    fn push(&mut self, i: usize) {
        let b = &self.batches[i];
        let row = self.pos[i];
        let time = b
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .value(row);
        let seq = b.column(3).as_primitive::<UInt64Type>().value(row);
        let user: Box<str> = b.column(USER_COLUMN).as_string::<i32>().value(row).into();
        self.heap.push(Reverse((user, time, seq, i)));
    }

    fn emit(
        &self,
        out: &mut Vec<(usize, usize)>,
        w: &mut ArrowWriter<File>,
        dir: &Path,
    ) -> Result<(), ColumnarError> {
        if out.is_empty() {
            return Ok(());
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let merged = arrow::compute::interleave_record_batch(&refs, out)?;
        let batch = RecordBatch::try_new(schema(), merged.columns().to_vec())?;
        w.write(&batch).map_err(pq_err(dir))?;
        out.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sort_key_column_is_user() {
        assert_eq!(schema().field(USER_COLUMN).name(), "user");
    }

    #[test]
    fn cluster_dir_names_are_one_to_one_and_safe() {
        for (name, dir) in [
            ("prod-eu", "prod-eu"),
            ("", DEFAULT_PARTITION),
            (DEFAULT_PARTITION, "%5F_HIVE_DEFAULT_PARTITION__"),
            ("..", "%2E."),
            ("a/b=c", "a%2Fb%3Dc"),
            ("é", "%C3%A9"),
            ("x%41", "x%2541"),
        ] {
            assert_eq!(cluster_dir_name(name), dir, "{name}");
            assert_eq!(cluster_from_dir_name(dir).as_deref(), Some(name), "{dir}");
        }
        assert_eq!(cluster_from_dir_name("%2e."), None, "not what we write");
    }

    #[test]
    fn partition_dirs_are_utc_hours() {
        let t: jiff::Timestamp = "2026-03-04T05:59:59.999999Z".parse().unwrap();
        let hour = t.as_microsecond().div_euclid(HOUR_US);
        assert_eq!(
            partition_dir("c", hour),
            Path::new("cluster=c/date=2026-03-04/hour=05")
        );
        let before_epoch = (-1i64).div_euclid(HOUR_US);
        assert_eq!(
            partition_dir("c", before_epoch),
            Path::new("cluster=c/date=1969-12-31/hour=23")
        );
    }

    #[test]
    fn leftovers_are_files_inside_another_range() {
        let f = |a, b| PartitionFile {
            path: PathBuf::from(file_name(a, b)),
            cluster: String::new(),
            hour: jiff::Timestamp::UNIX_EPOCH,
            first_seq: a,
            last_seq: b,
            bytes: 1,
            day: false,
        };
        let mut files = vec![f(0, 3), f(5, 9), f(0, 20), f(12, 20), f(21, 22)];
        files.sort_by_key(|f| (f.first_seq, Reverse(f.last_seq)));
        let (live, left) = split_leftovers(files);
        let ranges = |v: &[PartitionFile]| {
            v.iter()
                .map(|f| (f.first_seq, f.last_seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(ranges(&live), [(0, 20), (21, 22)]);
        assert_eq!(ranges(&left), [(0, 3), (5, 9), (12, 20)]);
    }

    #[test]
    fn runs_are_adjacent_small_files_before_the_cursor() {
        let f = |a: u64, bytes| PartitionFile {
            path: PathBuf::new(),
            cluster: String::new(),
            hour: jiff::Timestamp::UNIX_EPOCH,
            first_seq: a,
            last_seq: a,
            bytes,
            day: false,
        };
        let files: Vec<_> = [1, 1, 100, 1, 1, 1, 1, 1, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, &b)| f(i as u64, b))
            .collect();
        assert_eq!(find_run(&files, 100, 10, 5, 64), Some(3..10));
        assert_eq!(find_run(&files, 100, 10, 5, 4), Some(3..7));
        assert_eq!(
            find_run(&files, 7, 10, 5, 64),
            None,
            "seq 7 to 9 not committed"
        );
        assert_eq!(find_run(&files, 100, 10, 8, 64), None);
    }

    #[test]
    fn columns_come_from_the_model_event() {
        let json = r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","verb":"get","user":{"username":"u","groups":["g1","g2"]},"impersonatedUser":{"groups":["ig"]},"sourceIPs":["10.0.0.1","10.0.0.2"],"objectRef":{"resource":"pods","namespace":"","name":"p"},"responseStatus":{"code":200},"annotations":{"authorization.k8s.io/decision":"allow","other":"x"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","stageTimestamp":"2026-01-01T00:00:00.5Z"}"#;
        let rec = EventRecord {
            received_us: 5,
            cluster: "c".into(),
            source: "s".into(),
            audit_id: "a".into(),
            stage: "ResponseComplete".into(),
            variant: "".into(),
            event: json.into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        let rec = EventRecord::decode(&bytes).unwrap();
        let (row, parsed) = Row::new(1, &rec);
        assert!(parsed);
        let c = &row.cols;
        assert_eq!((c.level, &*c.verb, &*c.user), ("Metadata", "get", "u"));
        assert_eq!(c.groups, ["g1", "g2"]);
        // No username: null, as when there is no impersonated user at all.
        assert_eq!(c.impersonated_user, None);
        assert_eq!(c.impersonated_groups, ["ig"]);
        assert_eq!(c.source_ips, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            (c.code, c.decision.as_deref(), c.reason.as_deref()),
            (Some(200), Some("allow"), None)
        );
        assert_eq!(
            (row.latency, row.stage_time.is_some()),
            (Some(500_000), true)
        );
        let mut cols = Columns::new(1, json.len());
        cols.push(&row);
        let batch = cols.finish().unwrap();
        let col = |name: &str| batch.column(schema().index_of(name).unwrap()).clone();
        assert!(col("impersonated_user").is_null(0));
        assert!(col("namespace").is_null(0), "empty is null");
        assert_eq!(col("name").as_string::<i32>().value(0), "p");
        assert_eq!(col("ip").as_string::<i32>().value(0), "10.0.0.1");
    }

    #[test]
    fn unparsable_events_keep_the_record_fields() {
        let rec = EventRecord {
            received_us: 5,
            cluster: "c".into(),
            source: "s".into(),
            audit_id: "id".into(),
            stage: "ResponseComplete".into(),
            variant: "".into(),
            event: "{not json".into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        let rec = EventRecord::decode(&bytes).unwrap();
        let (row, parsed) = Row::new(7, &rec);
        assert!(!parsed);
        assert_eq!((row.time, row.seq, row.audit_id), (5, 7, "id"));
        let mut cols = Columns::new(1, 9);
        cols.push(&row);
        let batch = cols.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
    }
}
