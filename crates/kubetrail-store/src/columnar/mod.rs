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
//! | `event` | Utf8 null | the full event JSON, as stored (redacted), in files of format 1 and 2; null in format 3 |
//! | `source` | Utf8 null | how it arrived: `webhook:<identity>` (the authenticated sender: an event posted by any identity but the apiserver's stands out), `webhook` (no authentication), `file:<path>`, `import`; null in files of format 1, which lacked the column |
//! | `event_rest` | Utf8 null | format 3: the event JSON with the top-level `auditID`, `requestReceivedTimestamp`, `stageTimestamp` and `requestURI` values that `audit_id`, `time`, `stage_time` and `uri` hold exactly replaced by `null` (see `elide`; half the bytes of a file); null in older files |
//! | `event_elided` | UInt8 null | format 3: which values `event_rest` left out (bits 1, 2, 4, 8 in that order); null in older files |
//!
//! The stored event of a row is `event` where it is set, otherwise [`restore`] of `event_rest` (the engine's
//! `events` table does this; [`stored_event`] for a batch read directly). Another engine (DuckDB, Athena)
//! reading format 3 finds the elided values in those columns, exactly as they were in the event.
//!
//! The columns are read from the event parsed as [`kubetrail_model::Event`] (the one event model; its strings
//! borrow from the log payload where they hold no escapes). Every list's items are non-null Utf8 named
//! `item`. An event that does not parse as one (it cannot come from the pipeline, which parsed it) still gets
//! a row: the log record's own fields, `time` = `received`, empty lists, nulls and the raw text in
//! `event_rest`.
//!
//! Files are zstd-compressed (level 3; `event_rest` in pages up to 8 MiB, at level 3 in hour files and 9 in
//! day files, which are kept), with dictionary encoding (the writer's default, off for `audit_id` and
//! `event_rest`; delta encoding for `time`, `stage_time`, `received` and `seq`), page-level statistics and a
//! page index (none for `event` and `event_rest`), bloom filters on `user`, `name`,
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
//!
//! # Modules
//!
//! - `schema`: the Arrow schema of every file ([`schema`]) and the Parquet writer's properties;
//! - `elide`: format 3's `event_rest`, the event without the values its columns hold, and [`restore`],
//!   which writes them back ([`stored_event`] for one row of a batch);
//! - `rows`: a log record and its parsed event as a row, and the column builders of a batch;
//! - `files`: the layout on disk (partition directories, file names), listing files ([`list_files`]),
//!   their footer statistics ([`file_stats`]) and writing one durably;
//! - `writer`: [`ColumnarWriter`], its cursor and `flush`;
//! - `compact`: merging small files and closed days ([`ColumnarWriter::compact`]).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

use crate::wal::WalError;

mod compact;
mod elide;
mod files;
mod rows;
mod schema;
mod writer;

pub use elide::{Elided, Flat, RestoreError, elide, restore, stored_event};
pub use files::{FileStats, PartitionFile, cluster_dir_name, file_stats, list_files};
pub use rows::batch;
pub use schema::{BLOOM_FILTER_COLUMNS, schema};
pub use writer::ColumnarWriter;

/// The log cursor the writer owns.
pub const CURSOR_NAME: &str = "columnar";

/// The directory name of the empty cluster name (what Hive and Spark write for a null partition value).
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Rows per Arrow batch handed to the Parquet writer (and read back when compacting).
const BATCH_ROWS: usize = 8192;

const HOUR_US: i64 = 3_600_000_000;
/// The `hour=` directory of a date's day file.
const DAY_HOUR: &str = "all";

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
