//! The embedded query engine: Apache DataFusion over the columnar store's Parquet partitions, or over the
//! same table fed from elsewhere ([`Source`]: a fleet's ClickHouse table in [`clickhouse`], the S3 archive's
//! Parquet in [`lake`]), so every question answers alike whatever holds the events.
//!
//! Owns the `events` table ([`Engine::open`]), the `kt_json_match` UDF that `kubetrail-query`'s SQL calls,
//! running SQL as a stream of Arrow batches ([`Engine::stream`]) and reading the store's columns back into
//! [`EventRow`]s, one per request or per stage ([`Engine::requests`]). It does not write, flush or delete:
//! the caller makes recent events queryable first by flushing the write-ahead log into Parquet
//! (`kubetrail_store::ColumnarWriter::flush`; the CLI does it before every query, the server every second).
//!
//! # The `events` table
//!
//! The files of [`kubetrail_store::columnar::list_files`] for the [`Scope`]'s cluster and hours (partition
//! pruning by directory names, no file opened), read with the store's schema as one ListingTable declared
//! sorted by `time` in each file, behind a filter on `time` for the scope's exact bounds and on `cluster`.
//! Parquet row-group statistics, page indexes and bloom filters prune the rest, filters are pushed into the
//! scan (late materialization: the `event` column is decoded only for matching rows) and only the columns a
//! query names are read. So `--sql` runs against the same bounded table as `--where`. The table's `event` is
//! the stored event whatever the file's format: in format 3 files it is computed (`kt_event`) from
//! `event_rest` and the columns it left values to (`kubetrail_store::columnar::restore`); the format's own
//! `event_rest` and `event_elided` are not part of the table.
//!
//! # Memory
//!
//! Results stream: [`Engine::stream`] yields batches as the scan produces them, and the session's memory
//! pool is bounded ([`MEMORY_LIMIT`]): a sort or aggregation over more than that spills to disk (at most
//! [`MAX_SPILL_BYTES`]) or fails with a resources error, never holding a year in memory. Row queries with a
//! limit are top-k. What the pool does not see, what scalar functions make, is bounded by [`capped`].

pub mod capped;
pub mod clickhouse;
pub mod counts;
pub mod history;
pub mod lake;
pub mod limits;
pub mod observed;
pub mod rbac;
pub mod reports;
pub mod whois;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, TimeUnit, TimestampMicrosecondType, UInt64Type};
use datafusion::arrow::compute::cast;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, col, lit,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use kubetrail_query::{JsonOp, json_match_str};
use kubetrail_store::columnar::{self, PartitionFile};

/// The most memory a query's operators (sorts, aggregations, joins) may hold before spilling or failing.
pub const MEMORY_LIMIT: usize = 1 << 30;

/// The most a query may spill to the temporary directory before failing with a resources error (DataFusion's
/// own default is 100 GB).
pub const MAX_SPILL_BYTES: u64 = 8 << 30;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("failed to list the store's files: {0}")]
    Store(#[from] kubetrail_store::ColumnarError),
    #[error("{0}")]
    Query(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The source cannot be used as configured (a name, a file it needs).
    #[error("{0}")]
    Source(String),
}

/// A credential from its file (a ClickHouse password, an S3 secret key), read when a source is opened: the
/// text without surrounding whitespace; an empty or unreadable file is an error naming it (never its content).
fn secret_file(what: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{what} `{}` cannot be read: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{what} `{}` is empty", path.display()));
    }
    Ok(text.to_string())
}

/// What holds the events a query reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The local store: the Parquet files under a data directory's `store`.
    Store(PathBuf),
    /// A ClickHouse table filled by the `clickhouse` sink of one collector or many.
    ClickHouse(clickhouse::ClickHouseSource),
    /// The S3 archive's Parquet files ([`Engine::open_any`] fetches what a question needs).
    Lake(lake::LakeSource),
    /// Several stores' Parquet files read as one table (a fetched lake's replicas).
    Stores(Vec<PathBuf>),
}

impl EngineError {
    /// Whether the query itself is at fault (SQL syntax, an unknown column or function, a type mismatch,
    /// something unsupported), not the store or the engine.
    pub fn is_invalid_query(&self) -> bool {
        match self {
            EngineError::Query(e) => {
                matches!(
                    e.find_root(),
                    DataFusionError::SQL(..)
                        | DataFusionError::Plan(_)
                        | DataFusionError::SchemaError(..)
                        | DataFusionError::NotImplemented(_)
                ) || bad_pattern(&e.to_string())
            }
            EngineError::Arrow(e) => bad_pattern(&e.to_string()),
            _ => false,
        }
    }

    /// Whether the query needed more memory than [`MEMORY_LIMIT`].
    pub fn is_resources_exhausted(&self) -> bool {
        match self {
            EngineError::Query(e) => {
                matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
            }
            _ => false,
        }
    }
}

/// What a query may use: its operators' memory pool, and where and how much it spills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Bytes sorts, aggregations and joins may hold before spilling or failing ([`MEMORY_LIMIT`]).
    pub memory: usize,
    /// The directory spill files go to (the system's temporary directory when `None`).
    pub spill_dir: Option<PathBuf>,
    /// The most bytes a query may spill ([`MAX_SPILL_BYTES`]).
    pub max_spill: u64,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            memory: MEMORY_LIMIT,
            spill_dir: None,
            max_spill: MAX_SPILL_BYTES,
        }
    }
}

/// Whether an error is a pattern of the query's that does not compile (a regular expression, or a `LIKE`
/// made into one, that is invalid or over the regex crate's size limit). It reaches us as text: the scan
/// wraps the kernel's error into the Parquet reader's.
fn bad_pattern(message: &str) -> bool {
    message.contains("Regular expression did not compile") || message.contains("regex parse error")
}

/// Which part of the store a query sees: a cluster (all if `None`) and a time range (`time` between both,
/// inclusive; open when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub cluster: Option<String>,
    pub since: Option<jiff::Timestamp>,
    pub until: Option<jiff::Timestamp>,
}

/// A DataFusion session with the table `events` registered over the store.
pub struct Engine {
    ctx: SessionContext,
    files: Vec<PartitionFile>,
    root: PathBuf,
    /// The ClickHouse table under `events`, when that is the source: aggregates go to it whole.
    clickhouse: Option<Arc<clickhouse::ClickHouseTable>>,
    scope: Scope,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.root)
            .field("files", &self.files.len())
            .finish()
    }
}

impl Engine {
    /// Registers `events` over the Parquet files under `root` (the data directory's `store`) that `scope`
    /// may need. Reads directory names only; a store with no file yet is an empty table.
    pub fn open(root: &Path, scope: &Scope) -> Result<Engine, EngineError> {
        Engine::open_with(root, scope, &Resources::default())
    }

    /// [`Engine::open`] within `resources`.
    pub fn open_with(
        root: &Path,
        scope: &Scope,
        resources: &Resources,
    ) -> Result<Engine, EngineError> {
        Engine::open_source(&Source::Store(root.to_path_buf()), scope, resources)
    }

    /// Registers `events` over `source`, as `scope` sees it, within `resources`: the same table, functions
    /// and limits whatever holds the events.
    pub fn open_source(
        source: &Source,
        scope: &Scope,
        resources: &Resources,
    ) -> Result<Engine, EngineError> {
        let list = |roots: &[PathBuf]| -> Result<Vec<PartitionFile>, EngineError> {
            let mut files = Vec::new();
            for root in roots.iter().filter(|r| r.is_dir()) {
                files.extend(columnar::list_files(
                    root,
                    scope.cluster.as_deref(),
                    scope.since,
                    scope.until,
                )?);
            }
            Ok(files)
        };
        let (root, files) = match source {
            Source::Store(root) => (root.clone(), list(std::slice::from_ref(root))?),
            Source::Stores(roots) => (roots.first().cloned().unwrap_or_default(), list(roots)?),
            Source::ClickHouse(_) => (PathBuf::new(), Vec::new()),
            Source::Lake(_) => {
                return Err(EngineError::Source(
                    "the lake's files are fetched first: open it with Engine::open_any".into(),
                ));
            }
        };
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true)
            .set_bool("datafusion.execution.parquet.bloom_filter_on_read", true);
        // The store's strings are Utf8; keeping them so (not views) keeps the schema the store documents.
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        let mut runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(resources.memory, 1.0)
            .with_max_temp_directory_size(resources.max_spill);
        if let Some(dir) = &resources.spill_dir {
            runtime = runtime.with_temp_file_path(dir);
        }
        let runtime = runtime.build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(limits::YieldEveryBatch))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udf(json_match_udf());
        ctx.register_udf(whois::user_extra_udf());
        capped::install(&ctx)?;

        let schema = columnar::schema();
        let clickhouse = match source {
            Source::ClickHouse(c) => Some(Arc::new(
                clickhouse::ClickHouseTable::new(c).map_err(EngineError::Source)?,
            )),
            _ => None,
        };
        let table: Arc<dyn datafusion::catalog::TableProvider> = if let Some(c) = &clickhouse {
            c.clone()
        } else if files.is_empty() {
            Arc::new(MemTable::try_new(schema, vec![vec![]])?)
        } else {
            let urls = files
                .iter()
                .map(|f| ListingTableUrl::parse(f.path.to_string_lossy()))
                .collect::<Result<Vec<_>, _>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            // No declared sort order: files are sorted by (user, time), older ones by time; queries that
            // need an order say so.
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema);
            Arc::new(ListingTable::try_new(config)?)
        };
        let mut df = ctx.read_table(table)?;
        let ts = |t: jiff::Timestamp| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(t.as_microsecond()),
                Some("UTC".into()),
            ))
        };
        if let Some(since) = scope.since {
            df = df.filter(col("time").gt_eq(ts(since)))?;
        }
        if let Some(until) = scope.until {
            df = df.filter(col("time").lt_eq(ts(until)))?;
        }
        if let Some(cluster) = &scope.cluster {
            df = df.filter(col("cluster").eq(lit(cluster.as_str())))?;
        }
        // `events_text`: `events` and `text`, the stored event as the file holds it (format 3's `event_rest`
        // without what its columns hold, else `event`): what a search of the event's text (`whois`) reads
        // without putting every event back together.
        let mut with_text = view_columns();
        with_text.push(
            datafusion::functions::expr_fn::coalesce(vec![col("event"), col("event_rest")])
                .alias("text"),
        );
        ctx.register_table("events_text", df.clone().select(with_text)?.into_view())?;
        df = df.select(view_columns())?;
        ctx.register_table("events", df.into_view())?;
        Ok(Engine {
            ctx,
            files,
            root,
            clickhouse,
            scope: scope.clone(),
        })
    }

    /// [`Engine::open_source`] for any source: the lake's files a question needs are fetched first.
    pub async fn open_any(
        source: &Source,
        scope: &Scope,
        resources: &Resources,
    ) -> Result<Engine, EngineError> {
        match source {
            Source::Lake(lake) => {
                let roots = lake.fetch(scope).await.map_err(EngineError::Source)?;
                Engine::open_source(&Source::Stores(roots), scope, resources)
            }
            other => Engine::open_source(other, scope, resources),
        }
    }

    /// The files the table reads (after partition pruning).
    pub fn files(&self) -> &[PartitionFile] {
        &self.files
    }

    /// The DataFusion session, for callers that build plans themselves.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans `sql` against `events` and starts it: batches arrive as the scan produces them. Only queries
    /// run: DDL (`CREATE EXTERNAL TABLE` would read any file the process can), DML and statements (`SET`)
    /// are refused, so SQL from the HTTP API reaches nothing but the store.
    pub async fn stream(&self, sql: &str) -> Result<SendableRecordBatchStream, EngineError> {
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, read_only).await?;
        Ok(df.execute_stream().await?)
    }

    /// Runs a row query: the columns of [`EventRow`] (and `event` when `with_event`) of the events matching
    /// `predicate` (a SQL boolean expression over `events`' columns, e.g. from
    /// `kubetrail_query::Expr::to_sql`; all events if `None`), in time order, one row per request
    /// (its `ResponseComplete` stage, else `Panic`, else the latest stage stored) unless `all_stages`, at most
    /// `limit` rows (none if `None`), handing each row to `f` until it breaks.
    ///
    /// All stages of a request share `time` (the time the request was received), so one per request is
    /// chosen among the rows of equal `time` as they stream: memory is one such run, not the result.
    pub async fn requests(
        &self,
        predicate: Option<&str>,
        query: RowQuery,
        mut f: impl FnMut(EventRow) -> ControlFlow<()>,
    ) -> Result<(), EngineError> {
        self.requests_async(predicate, query, |row| std::future::ready(f(row)))
            .await
    }

    /// [`Engine::requests`] with an async `f`: a caller that passes rows on (to a client) waits for room
    /// there between rows.
    pub async fn requests_async<Fut: Future<Output = ControlFlow<()>>>(
        &self,
        predicate: Option<&str>,
        query: RowQuery,
        mut f: impl FnMut(EventRow) -> Fut,
    ) -> Result<(), EngineError> {
        let mut fetch = query.limit.map(|n| {
            if query.all_stages {
                n
            } else {
                n.saturating_mul(4)
            }
        });
        // Hands `row` to `f` unless the limit is reached; false to stop.
        async fn emit<Fut: Future<Output = ControlFlow<()>>>(
            f: &mut impl FnMut(EventRow) -> Fut,
            row: EventRow,
            emitted: &mut usize,
            limit: Option<usize>,
        ) -> bool {
            if limit.is_some_and(|n| *emitted >= n) {
                return false;
            }
            *emitted += 1;
            f(row).await.is_continue()
        }
        loop {
            let sql = row_sql(predicate, query.with_event, fetch);
            let mut stream = self.stream(&sql).await?;
            let mut emitted = 0usize;
            let mut fetched = 0usize;
            let mut run: Vec<EventRow> = Vec::new();
            let mut done = false;
            'stream: while let Some(batch) = stream.next().await {
                let batch = batch?;
                fetched += batch.num_rows();
                for row in EventRow::from_batch(&batch)? {
                    if query.all_stages {
                        if !emit(&mut f, row, &mut emitted, query.limit).await {
                            done = true;
                            break 'stream;
                        }
                        continue;
                    }
                    if run.first().is_some_and(|r| r.time_us != row.time_us) {
                        for r in one_per_request(std::mem::take(&mut run)) {
                            if !emit(&mut f, r, &mut emitted, query.limit).await {
                                done = true;
                                break 'stream;
                            }
                        }
                    }
                    run.push(row);
                }
            }
            if done || query.all_stages {
                return Ok(());
            }
            let cut = fetch.is_some_and(|n| fetched >= n);
            if !cut {
                for r in one_per_request(run) {
                    if !emit(&mut f, r, &mut emitted, query.limit).await {
                        break;
                    }
                }
                return Ok(());
            }
            // The limit of rows cut the stream before `limit` requests were complete (requests with several
            // stages): the last run may miss stages. Ask again for more rows.
            if query.limit.is_some_and(|n| emitted >= n) {
                return Ok(());
            }
            fetch = fetch.map(|n| n.saturating_mul(4));
        }
    }
}

impl Engine {
    /// The latest successful writes (create, update or patch, `ResponseComplete`, not a subresource) of one
    /// object, newest first, at most `limit`: who last wrote a workload, for an alert on a pod a controller
    /// made from it. The values are literals of a plan, never SQL text (object names come from events).
    pub async fn last_writes(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<EventRow>, EngineError> {
        use datafusion::prelude::{col, lit};
        let verbs = ["create", "update", "patch"].map(lit).to_vec();
        let df = self
            .ctx
            .table("events")
            .await?
            .filter(
                col("resource")
                    .eq(lit(resource))
                    .and(col("namespace").eq(lit(namespace)))
                    .and(col("name").eq(lit(name)))
                    .and(col("verb").in_list(verbs, false))
                    .and(col("stage").eq(lit("ResponseComplete")))
                    .and(
                        col("subresource")
                            .is_null()
                            .or(col("subresource").eq(lit(""))),
                    )
                    .and(col("code").is_null().or(col("code").lt(lit(400)))),
            )?
            .sort(vec![
                col("time").sort(false, true),
                col("seq").sort(false, true),
            ])?
            .limit(0, Some(limit))?;
        let mut rows = Vec::new();
        for batch in df.collect().await? {
            rows.extend(EventRow::from_batch(&batch)?);
        }
        Ok(rows)
    }
}

/// How [`Engine::requests`] reads rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowQuery {
    pub all_stages: bool,
    pub limit: Option<usize>,
    /// Read the stored (redacted) event JSON too.
    pub with_event: bool,
}

/// The columns [`EventRow::from_batch`] reads, in SQL.
pub const ROW_COLUMNS: &str = "\"time\", \"seq\", \"cluster\", \"audit_id\", \"stage\", \"level\", \
     \"verb\", \"user\", \"groups\", \"impersonated_user\", \"impersonated_groups\", \"source_ips\", \
     \"user_agent\", \"uri\", \"resource\", \"subresource\", \"namespace\", \"name\", \"api_group\", \
     \"code\", \"decision\", \"reason\"";

fn row_sql(predicate: Option<&str>, with_event: bool, limit: Option<usize>) -> String {
    let mut sql = format!("SELECT {ROW_COLUMNS}");
    if with_event {
        sql.push_str(", \"event\"");
    }
    sql.push_str(" FROM events");
    if let Some(p) = predicate {
        sql.push_str(" WHERE (");
        sql.push_str(p);
        sql.push(')');
    }
    sql.push_str(" ORDER BY \"time\", \"seq\"");
    if let Some(n) = limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    sql
}

/// The rows of one `time`, one per auditID (in the order of their first row), each request's best stage.
fn one_per_request(run: Vec<EventRow>) -> Vec<EventRow> {
    let mut out: Vec<EventRow> = Vec::with_capacity(run.len());
    for row in run {
        match out
            .iter_mut()
            .find(|r| r.audit_id == row.audit_id && !r.audit_id.is_empty())
        {
            Some(prev) if stage_rank(&row.stage) >= stage_rank(&prev.stage) => *prev = row,
            Some(_) => {}
            None => out.push(row),
        }
    }
    out
}

fn stage_rank(stage: &str) -> u8 {
    match stage {
        "ResponseComplete" => 4,
        "Panic" => 3,
        "ResponseStarted" => 2,
        "RequestReceived" => 1,
        _ => 0,
    }
}

/// One row of the store, as [`ROW_COLUMNS`] reads it. Columns a batch lacks are left empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRow {
    /// `time` in microseconds since the epoch (UTC).
    pub time_us: i64,
    pub seq: u64,
    pub cluster: String,
    pub audit_id: String,
    pub stage: String,
    pub level: String,
    pub verb: String,
    pub user: String,
    pub groups: Vec<String>,
    pub impersonated_user: Option<String>,
    pub impersonated_groups: Vec<String>,
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
    pub uri: String,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub api_group: Option<String>,
    pub code: Option<i32>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    /// The stored (redacted) event JSON, when read.
    pub event: Option<String>,
}

impl EventRow {
    /// `time` as RFC 3339 UTC.
    pub fn time(&self) -> String {
        format_time_us(self.time_us)
    }

    /// `resource[/subresource]`, or the URI for a non-resource request.
    pub fn resource_path(&self) -> String {
        match (&self.resource, &self.subresource) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.clone(),
            _ => self.uri.clone(),
        }
    }

    /// Reads the rows of a batch by column name.
    pub fn from_batch(batch: &RecordBatch) -> Result<Vec<EventRow>, EngineError> {
        let n = batch.num_rows();
        let mut rows = vec![EventRow::default(); n];
        let column = |name: &str| batch.column_by_name(name);
        if let Some(a) = column("time") {
            let a = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let a = a.as_primitive::<TimestampMicrosecondType>();
            for (i, r) in rows.iter_mut().enumerate() {
                r.time_us = a.value(i);
            }
        }
        if let Some(a) = column("seq") {
            let a = cast(a, &DataType::UInt64)?;
            let a = a.as_primitive::<UInt64Type>();
            for (i, r) in rows.iter_mut().enumerate() {
                r.seq = a.value(i);
            }
        }
        if let Some(a) = column("code") {
            let a = cast(a, &DataType::Int32)?;
            let a = a.as_primitive::<Int32Type>();
            for (i, r) in rows.iter_mut().enumerate() {
                r.code = a.is_valid(i).then(|| a.value(i));
            }
        }
        let strings: [(&str, SetString); 18] = [
            ("cluster", |r, v| r.cluster = v.unwrap_or_default()),
            ("audit_id", |r, v| r.audit_id = v.unwrap_or_default()),
            ("stage", |r, v| r.stage = v.unwrap_or_default()),
            ("level", |r, v| r.level = v.unwrap_or_default()),
            ("verb", |r, v| r.verb = v.unwrap_or_default()),
            ("user", |r, v| r.user = v.unwrap_or_default()),
            ("uri", |r, v| r.uri = v.unwrap_or_default()),
            ("impersonated_user", |r, v| r.impersonated_user = v),
            ("user_agent", |r, v| r.user_agent = v),
            ("resource", |r, v| r.resource = v),
            ("subresource", |r, v| r.subresource = v),
            ("namespace", |r, v| r.namespace = v),
            ("name", |r, v| r.name = v),
            ("api_group", |r, v| r.api_group = v),
            ("decision", |r, v| r.decision = v),
            ("reason", |r, v| r.reason = v),
            ("event", |r, v| r.event = v),
            ("ip", |r, v| {
                if r.source_ips.is_empty() {
                    r.source_ips.extend(v)
                }
            }),
        ];
        for (name, set) in strings {
            if let Some(a) = column(name) {
                let a = cast(a, &DataType::Utf8)?;
                let a = a.as_string::<i32>();
                for (i, r) in rows.iter_mut().enumerate() {
                    set(r, a.is_valid(i).then(|| a.value(i).to_string()));
                }
            }
        }
        let lists: [(&str, GetList); 3] = [
            ("groups", |r| &mut r.groups),
            ("impersonated_groups", |r| &mut r.impersonated_groups),
            ("source_ips", |r| &mut r.source_ips),
        ];
        for (name, get) in lists {
            if let Some(a) = column(name) {
                for (i, r) in rows.iter_mut().enumerate() {
                    *get(r) = list_strings(a, i)?;
                }
            }
        }
        Ok(rows)
    }
}

type SetString = fn(&mut EventRow, Option<String>);
type GetList = fn(&mut EventRow) -> &mut Vec<String>;

/// The strings of the list at `row` of a list column (empty when null).
pub fn list_strings(array: &ArrayRef, row: usize) -> Result<Vec<String>, EngineError> {
    if array.is_null(row) {
        return Ok(Vec::new());
    }
    let values = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(row),
        DataType::LargeList(_) => array.as_list::<i64>().value(row),
        _ => return Ok(Vec::new()),
    };
    let values = cast(&values, &DataType::Utf8)?;
    let values = values.as_string::<i32>();
    Ok((0..values.len())
        .filter(|&i| values.is_valid(i))
        .map(|i| values.value(i).to_string())
        .collect())
}

/// Microseconds since the epoch as RFC 3339 UTC (`2026-01-02T03:04:05.123456Z`).
pub fn format_time_us(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(t) => format!("{t:.6}"),
        Err(_) => us.to_string(),
    }
}

/// One value of an arbitrary query's result, for printing.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    List(Vec<String>),
}

impl Cell {
    /// An integer cell's value (`None` for any other, or a `UInt` past `i64`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Cell::Int(n) => Some(*n),
            Cell::UInt(n) => i64::try_from(*n).ok(),
            _ => None,
        }
    }

    /// The value as a table or CSV shows it (a list as its items joined by `,`, null as nothing).
    pub fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(n) => n.to_string(),
            Cell::UInt(n) => n.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Text(s) => s.clone(),
            Cell::List(items) => items.join(","),
        }
    }

    /// About the bytes the value holds (its text; 8 for a number).
    pub fn bytes(&self) -> usize {
        match self {
            Cell::Text(s) => s.len(),
            Cell::List(items) => items.iter().map(|i| i.len() + 8).sum(),
            _ => 8,
        }
    }

    /// The value as JSON: numbers and booleans as themselves, lists as arrays, null as null.
    pub fn into_json(self) -> serde_json::Value {
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::Bool(b) => b.into(),
            Cell::Int(n) => n.into(),
            Cell::UInt(n) => n.into(),
            Cell::Float(f) => f.into(),
            Cell::Text(s) => s.into(),
            Cell::List(items) => items.into(),
        }
    }
}

/// The values of a batch, row by row: timestamps as RFC 3339 UTC, integers, floats and booleans as
/// themselves, lists of anything as their items' text, everything else as Arrow displays it.
pub fn cells(batch: &RecordBatch) -> Result<Vec<Vec<Cell>>, EngineError> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let n = batch.num_rows();
    let mut rows: Vec<Vec<Cell>> = (0..n)
        .map(|_| Vec::with_capacity(batch.num_columns()))
        .collect();
    for a in batch.columns() {
        let dt = a.data_type();
        let push = |rows: &mut Vec<Vec<Cell>>, f: &dyn Fn(usize) -> Cell| {
            for (i, r) in rows.iter_mut().enumerate() {
                r.push(if a.is_null(i) { Cell::Null } else { f(i) });
            }
        };
        if dt.is_signed_integer() {
            let c = cast(a, &DataType::Int64)?;
            let c = c.as_primitive::<arrow::datatypes::Int64Type>();
            push(&mut rows, &|i| Cell::Int(c.value(i)));
        } else if dt.is_unsigned_integer() {
            let c = cast(a, &DataType::UInt64)?;
            let c = c.as_primitive::<UInt64Type>();
            push(&mut rows, &|i| Cell::UInt(c.value(i)));
        } else if dt.is_floating() {
            let c = cast(a, &DataType::Float64)?;
            let c = c.as_primitive::<arrow::datatypes::Float64Type>();
            push(&mut rows, &|i| Cell::Float(c.value(i)));
        } else if matches!(dt, DataType::Boolean) {
            let c = a.as_boolean();
            push(&mut rows, &|i| Cell::Bool(c.value(i)));
        } else if matches!(dt, DataType::Timestamp(_, _)) {
            let c = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let c = c.as_primitive::<TimestampMicrosecondType>();
            push(&mut rows, &|i| Cell::Text(format_time_us(c.value(i))));
        } else if matches!(dt, DataType::List(_) | DataType::LargeList(_)) {
            for (i, r) in rows.iter_mut().enumerate() {
                r.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::List(list_strings(a, i)?)
                });
            }
        } else {
            let f = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())?;
            push(&mut rows, &|i| Cell::Text(f.value(i).to_string()));
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------------------
// kt_event

/// The `events` table's columns over the store's: the documented ones, with `event` the stored event
/// whatever the file's format (`event` in format 1 and 2; format 3's `event_rest` written back by
/// [`columnar::restore`]) and the format's own `event_rest` and `event_elided` left out.
fn view_columns() -> Vec<datafusion::logical_expr::Expr> {
    use datafusion::common::Column;
    use datafusion::logical_expr::Expr;
    let c = |name: &str| Expr::Column(Column::from_name(name));
    columnar::schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|name| !matches!(*name, "event_rest" | "event_elided"))
        .map(|name| match name {
            "event" => ScalarUDF::from(EventUdf {
                signature: Signature::any(7, Volatility::Immutable),
            })
            .call(
                [
                    "event",
                    "event_rest",
                    "event_elided",
                    "audit_id",
                    "time",
                    "stage_time",
                    "uri",
                ]
                .into_iter()
                .map(c)
                .collect(),
            )
            .alias("event"),
            other => c(other),
        })
        .collect()
}

/// `kt_event(event, event_rest, event_elided, audit_id, time, stage_time, uri) -> Utf8`: the stored event
/// of a row of any format; an error, never a guess, where a file does not hold what format 3 says.
#[derive(Debug, PartialEq, Eq, Hash)]
struct EventUdf {
    signature: Signature,
}

impl ScalarUDFImpl for EventUdf {
    fn name(&self) -> &str {
        "kt_event"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let utf8 = |i: usize| cast(&arrays[i], &DataType::Utf8);
        let (event, rest, audit_id, uri) = (utf8(0)?, utf8(1)?, utf8(3)?, utf8(6)?);
        let (event, rest) = (event.as_string::<i32>(), rest.as_string::<i32>());
        let (audit_id, uri) = (audit_id.as_string::<i32>(), uri.as_string::<i32>());
        let elided = cast(&arrays[2], &DataType::UInt8)?;
        let elided = elided.as_primitive::<arrow::datatypes::UInt8Type>();
        let micros = |i: usize| {
            cast(
                &arrays[i],
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )
        };
        let (time, stage_time) = (micros(4)?, micros(5)?);
        let time = time.as_primitive::<TimestampMicrosecondType>();
        let stage_time = stage_time.as_primitive::<TimestampMicrosecondType>();
        let n = event.len();
        let mut out =
            arrow::array::StringBuilder::with_capacity(n, rest.value_data().len() + n * 128);
        for i in 0..n {
            if event.is_valid(i) {
                out.append_value(event.value(i));
                continue;
            }
            if rest.is_null(i) {
                out.append_null();
                continue;
            }
            let flat = columnar::Flat {
                audit_id: if audit_id.is_valid(i) {
                    audit_id.value(i)
                } else {
                    ""
                },
                time: time.value(i),
                stage_time: stage_time.is_valid(i).then(|| stage_time.value(i)),
                uri: if uri.is_valid(i) { uri.value(i) } else { "" },
            };
            let bits = columnar::Elided(if elided.is_valid(i) {
                elided.value(i)
            } else {
                0
            });
            let restored = columnar::restore(rest.value(i), bits, &flat).map_err(|e| {
                // The auditID is the sender's text: clipped and quoted, it names the row to look at.
                let id: String = flat.audit_id.chars().take(64).collect();
                DataFusionError::Execution(format!(
                    "a store file is damaged: the row of auditID {id:?}: {e} (run `kubetrail verify`)"
                ))
            })?;
            out.append_value(restored);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ---------------------------------------------------------------------------------------------------------
// kt_json_match

/// `kt_json_match(event, path, op, values...) -> Boolean`, as `kubetrail-query` specifies: on each row,
/// `json_match_str(event, path, op, values)`; never null (a null or malformed event, or an unknown `op`, is
/// false).
pub fn json_match_udf() -> ScalarUDF {
    ScalarUDF::from(JsonMatch {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonMatch {
    signature: Signature,
}

impl ScalarUDFImpl for JsonMatch {
    fn name(&self) -> &str {
        "kt_json_match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        if arg_types.len() < 4 {
            return Err(DataFusionError::Plan(
                "kt_json_match(event, path, op, value, ...) takes at least 4 arguments".into(),
            ));
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = arrays.first().map_or(0, |a| a.len());
        let arrays = arrays
            .iter()
            .map(|a| cast(a, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        let strs: Vec<_> = arrays.iter().map(|a| a.as_string::<i32>()).collect();
        let mut out = arrow::array::BooleanBuilder::with_capacity(n);
        let mut values: Vec<&str> = Vec::with_capacity(strs.len().saturating_sub(3));
        for i in 0..n {
            let get = |k: usize| strs[k].is_valid(i).then(|| strs[k].value(i));
            let hit = match (get(0), get(1), get(2).and_then(JsonOp::parse)) {
                (Some(event), Some(path), Some(op)) => {
                    values.clear();
                    values.extend((3..strs.len()).filter_map(get));
                    json_match_str(event, path, op, &values)
                }
                _ => false,
            };
            out.append_value(hit);
        }
        let out = out.finish();
        if all_scalar && n == 1 {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(
                out.value(0),
            ))));
        }
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests;
