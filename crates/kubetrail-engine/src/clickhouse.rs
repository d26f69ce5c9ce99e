//! The `events` table over ClickHouse: the table kubetrail's `clickhouse` sink fills, from one collector or a
//! fleet of them (an HA pair, a collector per cluster), so that every question sees every cluster's events.
//!
//! ClickHouse does the scan. The filters of a question on columns its table holds (time, cluster, user, verb,
//! stage, resource, namespace, name, code, source IP...) are compiled into its `WHERE`, where its sorting key
//! `(cluster, user, time, id)` and day partitions prune and moves them to `PREWHERE` (the events' text is read
//! only for matching rows). The copies of one event that replicas and retries sent (rows with one id, which
//! the table merges only in the background) are dropped here as they come, by id, rather than by `FINAL`,
//! which merges on read and keeps ClickHouse from reading the small columns first. Counts computed there
//! count distinct ids. The matching rows come back with their
//! stored events, and each becomes
//! the store's row through the store's own code ([`kubetrail_store::columnar::batch`]). DataFusion then
//! answers every question (`who`, `timeline`, `scope`, `--where`, `--sql`, histograms, exports) exactly as
//! it does over the local store: the same SQL and functions over the same rows, so the same answers.
//!
//! - **Superset filters.** Filters are pushed as inexact: DataFusion applies them again, so a compiled
//!   filter only has to keep every row the original keeps. A missing value is `''` (or code `0`) in
//!   ClickHouse and null in the store: `IS NULL` becomes `= ''`, and `!=`, `<` keep the empty ones too.
//!   Anything else (patterns, dotted paths, functions) is not pushed and runs here.
//! - **No value is SQL text.** 18.16 has no query parameters: a string is `unhex('...')` of its bytes (hex
//!   digits only, whatever it holds), a number is formatted from its typed value, a name is one of the
//!   table's fixed columns.
//! - **Bounded.** Every read runs with `readonly=1` and the [`ReadLimits`] (rows, bytes, seconds), enforced
//!   by the server; past them the question fails with a resources error that says to narrow it.
//! - **What the table lacks.** There is no log position across collectors: `seq`, which orders the rows of
//!   one `time`, is made from the row ([`fleet_seq`]): a request's stages in the order the apiserver writes
//!   them, requests of the same microsecond in an order that is the same on every read (paging with an
//!   offset stays stable), not their arrival order. `source` is null.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use kubetrail_sinks::clickhouse::{ClickHouse, ClickHouseConfig, ReadError, ReadLimits};
use kubetrail_sinks::http::{Auth, HttpConfig};
use kubetrail_store::EventRecord;
use kubetrail_store::columnar;
use kubetrail_store::record::clip;
use serde::{Deserialize, Serialize};

/// Rows per batch made from ClickHouse's answer.
const BATCH_ROWS: usize = 8192;

/// Where the ClickHouse table is and what a read may cost (the config's `query:` with `backend: clickhouse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickHouseSource {
    /// The HTTP interface, `http://clickhouse:8123` (or https).
    pub url: String,
    pub database: String,
    pub table: String,
    /// A ClickHouse user (a read-only one is enough: every read is `readonly=1` anyway).
    pub user: Option<String>,
    /// A file holding the user's password, read when the engine opens (never sent to a worker as text).
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for a self-signed server.
    pub ca_file: Option<PathBuf>,
    /// The most rows one read returns.
    pub max_rows: u64,
    /// The most bytes one read returns (as the server counts its columns).
    pub max_bytes: u64,
    /// The longest one read runs, in seconds.
    pub max_seconds: u64,
}

impl ClickHouseSource {
    /// Defaults for the limits: a million rows, 256 MiB, 60 s.
    pub const DEFAULT_MAX_ROWS: u64 = 1_000_000;
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
    pub const DEFAULT_MAX_SECONDS: u64 = 60;

    /// The client for this source: checks the names, reads the password file; connects to nothing.
    pub fn client(&self) -> Result<ClickHouse, String> {
        let mut http = HttpConfig {
            timeout: std::time::Duration::from_secs(self.max_seconds.saturating_add(10)),
            extra_ca: self.ca_file.clone(),
            ..HttpConfig::default()
        };
        if let Some(user) = &self.user {
            let password = match &self.password_file {
                Some(p) => crate::secret_file("ClickHouse password file", p)?,
                None => String::new(),
            };
            http.auth = Auth::Basic {
                user: user.clone(),
                password: password.into(),
            };
        }
        ClickHouse::new(ClickHouseConfig {
            url: self.url.clone(),
            database: self.database.clone(),
            table: self.table.clone(),
            retention_days: None,
            cluster: None,
            http,
        })
        .map_err(|e| e.to_string())
    }

    fn limits(&self) -> ReadLimits {
        ReadLimits {
            max_rows: self.max_rows,
            max_bytes: self.max_bytes,
            max_seconds: self.max_seconds,
        }
    }
}

/// The store's table ([`columnar::schema`]) over a ClickHouse table.
pub struct ClickHouseTable {
    client: ClickHouse,
    limits: ReadLimits,
    url: String,
}

impl std::fmt::Debug for ClickHouseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseTable")
            .field("url", &self.url)
            .field("table", &self.client.qualified_table())
            .finish()
    }
}

impl ClickHouseTable {
    pub fn new(source: &ClickHouseSource) -> Result<ClickHouseTable, String> {
        Ok(ClickHouseTable {
            client: source.client()?,
            limits: source.limits(),
            url: kubetrail_sinks::http::redact_url(&source.url),
        })
    }

    /// Runs `SELECT columns FROM table [WHERE conditions] tail FORMAT JSONEachRow` within the limits and
    /// returns the answer's text (one JSON object a line).
    async fn select(
        &self,
        columns: &str,
        conditions: &[String],
        tail: &str,
    ) -> Result<String, DataFusionError> {
        let mut sql = format!("SELECT {columns} FROM {}", self.client.qualified_table());
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" {tail} FORMAT JSONEachRow"));
        let body = self
            .client
            .read(&sql, &self.limits)
            .await
            .map_err(|e| self.error(e))?;
        String::from_utf8(body.into()).map_err(|e| {
            DataFusionError::External(
                format!("ClickHouse at {}: answer is not UTF-8: {e}", self.url).into(),
            )
        })
    }

    /// Each line of an answer of [`ClickHouseTable::select`] as a `T`; an error names the row.
    fn rows<'a, T: Deserialize<'a>>(
        &self,
        text: &'a str,
    ) -> impl Iterator<Item = Result<T, DataFusionError>> + 'a {
        let url = self.url.clone();
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(move |(i, line)| {
                serde_json::from_str(line).map_err(|e| {
                    DataFusionError::External(
                        format!("ClickHouse at {url}: row {} of the answer: {e}", i + 1).into(),
                    )
                })
            })
    }

    /// An aggregate computed there whole (it must count copies of one event once, by id): its rows as JSON
    /// objects.
    pub(crate) async fn aggregate(
        &self,
        columns: &str,
        conditions: &[String],
        tail: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, DataFusionError> {
        let text = self.select(columns, conditions, tail).await?;
        self.rows(&text).collect()
    }

    fn error(&self, e: ReadError) -> DataFusionError {
        match e {
            ReadError::Limit(why) => DataFusionError::ResourcesExhausted(format!(
                "the question needs more of ClickHouse than the query backend allows ({why}): narrow it with \
                 --since/--until, --cluster or a filter on user, verb, resource, namespace or name, or raise \
                 query.max_rows, max_mb or timeout"
            )),
            // The error names the server.
            ReadError::Failed(e) => DataFusionError::External(format!("ClickHouse: {e}").into()),
        }
    }

    async fn read(&self, filters: &[Expr]) -> Result<Vec<RecordBatch>, DataFusionError> {
        let conditions: Vec<String> = filters.iter().filter_map(compile).collect();
        let text = self
            .select(
                "id, cluster, received_us, audit_id, stage, event",
                &conditions,
                "",
            )
            .await?;
        let mut batches = Vec::new();
        let mut chunk: Vec<(u64, EventRecord<'_>)> = Vec::with_capacity(BATCH_ROWS);
        let mut seen = std::collections::HashSet::new();
        for row in self.rows::<ChRow<'_>>(&text) {
            let row = row?;
            // Another copy of an event already read (an HA pair's, a retry's, not merged yet).
            if !seen.insert(row.id.clone()) {
                continue;
            }
            chunk.push((
                fleet_seq(&row.audit_id, &row.stage, &row.id),
                // The store keeps these fields cut to a record's limit: the same values here.
                EventRecord {
                    received_us: i64::try_from(row.received_us).unwrap_or(i64::MAX),
                    cluster: Cow::Owned(clip(&row.cluster).to_string()),
                    source: Cow::Borrowed(""),
                    audit_id: Cow::Owned(clip(&row.audit_id).to_string()),
                    stage: Cow::Owned(clip(&row.stage).to_string()),
                    variant: Cow::Borrowed(""),
                    event: row.event,
                },
            ));
            if chunk.len() == BATCH_ROWS {
                batches.push(columnar::batch(&chunk)?);
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            batches.push(columnar::batch(&chunk)?);
        }
        Ok(batches)
    }
}

/// One row of the answer.
#[derive(Deserialize)]
struct ChRow<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    cluster: Cow<'a, str>,
    received_us: u64,
    #[serde(borrow)]
    audit_id: Cow<'a, str>,
    #[serde(borrow)]
    stage: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
}

/// The `seq` of a row from ClickHouse, which breaks ties between rows of one `time`: 48 bits of the auditID's
/// FNV-1a hash (one request's rows together), its stage's place in a request (RequestReceived first), and the
/// low 12 bits of the shipping id's content digest (requests that reuse an auditID). Deterministic: every
/// read and every collector orders alike.
pub fn fleet_seq(audit_id: &str, stage: &str, id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in audit_id.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let rank: u64 = match stage {
        "RequestReceived" => 1,
        "ResponseStarted" => 2,
        "ResponseComplete" => 3,
        "Panic" => 4,
        _ => 0,
    };
    let content = id
        .rsplit('-')
        .next()
        .filter(|d| d.len() == 16)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .unwrap_or(0);
    (hash & 0xFFFF_FFFF_FFFF) << 16 | rank << 12 | (content & 0xFFF)
}

#[async_trait::async_trait]
impl TableProvider for ClickHouseTable {
    fn schema(&self) -> SchemaRef {
        columnar::schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match compile(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let schema = columnar::schema();
        if let Some(columns) = projection {
            let names: Vec<&str> = columns
                .iter()
                .map(|&i| schema.field(i).name().as_str())
                .collect();
            if names.iter().all(|n| native(n).is_some()) {
                let projected = Arc::new(schema.project(columns)?);
                let batches = self.read_native(filters, &names, &projected).await?;
                return Ok(MemorySourceConfig::try_new_exec(
                    &[batches],
                    projected,
                    None,
                )?);
            }
        }
        let batches = self.read(filters).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            schema,
            projection.cloned(),
        )?)
    }
}

/// The ClickHouse columns a store column is made from when the question needs none of the event's other
/// fields: the same values the store's writer computes, without reading the events. Columns whose empty
/// value the store keeps as `""` but ClickHouse cannot tell from absent (user agent, decision, reason,
/// impersonated user) are not among them.
fn native(column: &str) -> Option<&'static [&'static str]> {
    Some(match column {
        "time" => &["time_us"],
        "received" => &["received_us"],
        "seq" => &["audit_id", "stage", "id"],
        "cluster" => &["cluster"],
        "audit_id" => &["audit_id"],
        "stage" => &["stage"],
        "level" => &["level"],
        "verb" => &["verb"],
        "user" => &["user"],
        "groups" => &["groups"],
        "source_ips" | "ip" => &["source_ips"],
        "uri" => &["request_uri"],
        "resource" => &["resource"],
        "subresource" => &["subresource"],
        "namespace" => &["namespace"],
        "name" => &["name"],
        "api_group" => &["api_group"],
        "code" => &["response_code"],
        _ => return None,
    })
}

/// One row of a native read: the columns asked for.
#[derive(Deserialize, Default)]
#[serde(default)]
struct NativeRow<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    time_us: u64,
    received_us: u64,
    #[serde(borrow)]
    cluster: Cow<'a, str>,
    #[serde(borrow)]
    audit_id: Cow<'a, str>,
    #[serde(borrow)]
    stage: Cow<'a, str>,
    #[serde(borrow)]
    level: Cow<'a, str>,
    #[serde(borrow)]
    verb: Cow<'a, str>,
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    groups: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    source_ips: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    request_uri: Cow<'a, str>,
    #[serde(borrow)]
    resource: Cow<'a, str>,
    #[serde(borrow)]
    subresource: Cow<'a, str>,
    #[serde(borrow)]
    namespace: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    api_group: Cow<'a, str>,
    response_code: i32,
}

impl ClickHouseTable {
    /// The rows of `filters` with only `columns` (all [`native`]), as batches of `schema`.
    async fn read_native(
        &self,
        filters: &[Expr],
        columns: &[&str],
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let mut wanted: Vec<&str> = columns
            .iter()
            .flat_map(|c| native(c).unwrap_or_default().iter().copied())
            .collect();
        // The id tells copies of one event apart from distinct events.
        wanted.push("id");
        wanted.sort_unstable();
        wanted.dedup();
        let conditions: Vec<String> = filters.iter().filter_map(compile).collect();
        let text = self.select(&wanted.join(", "), &conditions, "").await?;
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for row in self.rows::<NativeRow<'_>>(&text) {
            let row = row?;
            // Another copy of an event already read.
            if seen.insert(row.id.clone()) {
                rows.push(row);
            }
        }
        rows.chunks(BATCH_ROWS)
            .map(|chunk| native_batch(chunk, columns, schema))
            .collect()
    }
}

/// A batch of `schema` (the store's columns `columns`) from native rows, with the store's nulls.
fn native_batch(
    rows: &[NativeRow<'_>],
    columns: &[&str],
    schema: &SchemaRef,
) -> Result<RecordBatch, DataFusionError> {
    use arrow::array::{
        ArrayRef, Int32Array, ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray,
        UInt64Array,
    };
    let micros = |f: fn(&NativeRow<'_>) -> u64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX)),
            )
            .with_timezone("UTC"),
        )
    };
    let text = |f: for<'r> fn(&'r NativeRow<'_>) -> &'r str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    // The record's own fields, which the store keeps cut to a record's limit.
    let record = |f: for<'r> fn(&'r NativeRow<'_>) -> &'r str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| clip(f(r))),
        ))
    };
    let optional = |f: for<'r> fn(&'r NativeRow<'_>) -> &'r str| -> ArrayRef {
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| Some(f(r)).filter(|s| !s.is_empty())),
        ))
    };
    let list = |f: for<'r> fn(&'r NativeRow<'_>) -> &'r [Cow<'r, str>]| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(
            arrow::datatypes::Field::new("item", arrow::datatypes::DataType::Utf8, false),
        ));
        for r in rows {
            for item in f(r) {
                b.values().append_value(item);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|c| match *c {
            "time" => micros(|r| r.time_us),
            "received" => micros(|r| r.received_us),
            "seq" => Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| fleet_seq(&r.audit_id, &r.stage, &r.id)),
            )) as ArrayRef,
            "cluster" => record(|r| &r.cluster),
            "audit_id" => record(|r| &r.audit_id),
            "stage" => record(|r| &r.stage),
            "level" => text(|r| &r.level),
            "verb" => text(|r| &r.verb),
            "user" => text(|r| &r.user),
            "uri" => text(|r| &r.request_uri),
            "groups" => list(|r| &r.groups),
            "source_ips" => list(|r| &r.source_ips),
            "ip" => Arc::new(StringArray::from_iter(
                rows.iter()
                    .map(|r| r.source_ips.first().map(|s| s.as_ref())),
            )),
            "resource" => optional(|r| &r.resource),
            "subresource" => optional(|r| &r.subresource),
            "namespace" => optional(|r| &r.namespace),
            "name" => optional(|r| &r.name),
            "api_group" => optional(|r| &r.api_group),
            "code" => Arc::new(Int32Array::from_iter(
                rows.iter()
                    .map(|r| Some(r.response_code).filter(|&c| c != 0)),
            )),
            other => unreachable!("`{other}` is not native"),
        })
        .collect();
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )?)
}

/// How a column of the store is held in ClickHouse's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The same non-null string.
    Text(&'static str),
    /// A string that is null in the store where it is `''` in ClickHouse.
    Optional(&'static str),
    /// A time: microseconds in the first column, seconds (`DateTime`, the partition key) in the second.
    Micros(&'static str, Option<&'static str>),
    /// `code`: null in the store where it is 0 in ClickHouse.
    Code,
    /// `ip`, the first source IP: within `source_ips`.
    FirstIp,
}

fn held(column: &str) -> Option<Held> {
    Some(match column {
        "time" => Held::Micros("time_us", Some("time")),
        "received" => Held::Micros("received_us", None),
        "cluster" => Held::Text("cluster"),
        "audit_id" => Held::Text("audit_id"),
        "stage" => Held::Text("stage"),
        "level" => Held::Text("level"),
        "verb" => Held::Text("verb"),
        "user" => Held::Text("user"),
        "uri" => Held::Text("request_uri"),
        "impersonated_user" => Held::Optional("impersonated_user"),
        "user_agent" => Held::Optional("user_agent"),
        "resource" => Held::Optional("resource"),
        "subresource" => Held::Optional("subresource"),
        "namespace" => Held::Optional("namespace"),
        "name" => Held::Optional("name"),
        "api_group" => Held::Optional("api_group"),
        "decision" => Held::Optional("decision"),
        "reason" => Held::Optional("reason"),
        "code" => Held::Code,
        "ip" => Held::FirstIp,
        _ => return None,
    })
}

/// A ClickHouse condition that keeps every row `filter` keeps, if there is one.
pub fn compile(filter: &Expr) -> Option<String> {
    compile_as(filter, false)
}

/// A ClickHouse condition that keeps exactly the rows `filter` keeps, if there is one: for counting there,
/// where DataFusion does not filter again.
pub fn compile_exact(filter: &Expr) -> Option<String> {
    compile_as(filter, true)
}

fn compile_as(filter: &Expr, exact: bool) -> Option<String> {
    let go = |e: &Expr| compile_as(e, exact);
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => Some(format!("({} AND {})", go(left)?, go(right)?)),
            Operator::Or => Some(format!("({} OR {})", go(left)?, go(right)?)),
            _ => match (column(left), literal(right)) {
                (Some(c), Some(v)) => compare(c, *op, v, exact),
                _ => compare(column(right)?, op.swap()?, literal(left)?, exact),
            },
        },
        Expr::InList(list) if !list.negated && !list.list.is_empty() && list.list.len() <= 1000 => {
            let c = column(&list.expr)?;
            let arms = list
                .list
                .iter()
                .map(|v| compare(c, Operator::Eq, literal(v)?, exact))
                .collect::<Option<Vec<_>>>()?;
            Some(format!("({})", arms.join(" OR ")))
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let c = column(expr)?;
            Some(format!(
                "({} AND {})",
                compare(c, Operator::GtEq, literal(low)?, exact)?,
                compare(c, Operator::LtEq, literal(high)?, exact)?
            ))
        }
        // An absent or empty value is null in the store and '' there: the same rows.
        Expr::IsNull(inner) => match held(column(inner)?)? {
            Held::Optional(c) => Some(format!("{c} = ''")),
            // A code of 0 is stored as 0 in both.
            Held::Code if !exact => Some("response_code = 0".into()),
            _ => None,
        },
        _ => None,
    }
}

/// The column an expression names (through an integer cast, which DataFusion adds to compare `code`).
fn column(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(cast) if cast.field.data_type().is_integer() => match &*cast.expr {
            Expr::Column(c) if c.name == "code" => Some("code"),
            _ => None,
        },
        _ => None,
    }
}

/// A literal value, typed.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Micros(i64),
}

/// The longest string pushed into ClickHouse's SQL: hex doubles it, and ClickHouse parses at most
/// `max_query_size` (256 KiB) of a query. A longer value (an attacker can make an Audit-ID or a user agent
/// that long) is left to DataFusion, so the question still answers.
const MAX_PUSHED_BYTES: usize = 16 << 10;

fn literal(e: &Expr) -> Option<Value<'_>> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    Some(match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
            if s.len() <= MAX_PUSHED_BYTES =>
        {
            Value::Text(s)
        }
        ScalarValue::Int8(Some(n)) => Value::Int(i64::from(*n)),
        ScalarValue::Int16(Some(n)) => Value::Int(i64::from(*n)),
        ScalarValue::Int32(Some(n)) => Value::Int(i64::from(*n)),
        ScalarValue::Int64(Some(n)) => Value::Int(*n),
        ScalarValue::UInt8(Some(n)) => Value::Int(i64::from(*n)),
        ScalarValue::UInt16(Some(n)) => Value::Int(i64::from(*n)),
        ScalarValue::UInt32(Some(n)) => Value::Int(i64::from(*n)),
        ScalarValue::UInt64(Some(n)) => Value::Int(i64::try_from(*n).ok()?),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Value::Micros(*us),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Value::Micros(ms.checked_mul(1000)?),
        ScalarValue::TimestampSecond(Some(s), _) => Value::Micros(s.checked_mul(1_000_000)?),
        // A time between two microseconds has no exact bound on a microsecond column: not pushed.
        ScalarValue::TimestampNanosecond(Some(ns), _) if ns % 1000 == 0 => Value::Micros(ns / 1000),
        _ => return None,
    })
}

/// A string as ClickHouse reads it without parsing it: hex digits only.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2 + 9);
    out.push_str("unhex('");
    for b in s.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str("')");
    out
}

fn compare(column: &str, op: Operator, value: Value<'_>, exact: bool) -> Option<String> {
    let sym = match op {
        Operator::Eq => "=",
        Operator::NotEq => "!=",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        _ => return None,
    };
    match (held(column)?, value) {
        // Strings only by equality. The store's nulls are ClickHouse's '': `= 'x'` keeps the same rows, but
        // `!=` and `= ''` keep the empty ones there too (more, never fewer).
        (Held::Text(c), Value::Text(v)) if matches!(op, Operator::Eq | Operator::NotEq) => {
            Some(format!("{c} {sym} {}", text(v)))
        }
        (Held::Optional(c), Value::Text(v))
            if op == Operator::Eq && (!exact || !v.is_empty())
                || op == Operator::NotEq && !exact =>
        {
            Some(format!("{c} {sym} {}", text(v)))
        }
        (Held::FirstIp, Value::Text(v)) if op == Operator::Eq && !exact => {
            Some(format!("has(source_ips, {})", text(v)))
        }
        // A missing code is 0 there and null here: a condition that 0 meets keeps extra rows, so it is not
        // exact.
        (Held::Code, Value::Int(n)) if i32::try_from(n).is_ok() => {
            let zero_meets = match op {
                Operator::Eq => n == 0,
                Operator::NotEq => n != 0,
                Operator::Lt => 0 < n,
                Operator::LtEq => 0 <= n,
                Operator::Gt => 0 > n,
                _ => 0 >= n,
            };
            (!exact || !zero_meets).then(|| format!("response_code {sym} {n}"))
        }
        (Held::Micros(us_col, secs_col), Value::Micros(us)) if us >= 0 => {
            let micros = format!("{us_col} {sym} {us}");
            // The seconds column is the partition key: a bound on it prunes whole days.
            let secs = match (secs_col, op) {
                (Some(c), Operator::Gt | Operator::GtEq) => {
                    Some(format!("{c} >= {}", us / 1_000_000))
                }
                (Some(c), Operator::Lt | Operator::LtEq) => {
                    Some(format!("{c} <= {}", (us + 999_999) / 1_000_000))
                }
                _ => None,
            };
            match secs.filter(|_| us / 1_000_000 < i64::from(u32::MAX)) {
                Some(s) => Some(format!("({micros} AND {s})")),
                None => Some(micros),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, in_list, lit};

    #[test]
    fn values_are_hex_never_text() {
        let evil = "x') OR 1=1 --\\'";
        let sql = compile(&col("user").eq(lit(evil))).unwrap();
        assert_eq!(sql, format!("user = {}", text(evil)));
        let inside = sql
            .trim_start_matches("user = unhex('")
            .trim_end_matches("')");
        assert!(inside.bytes().all(|b| b.is_ascii_hexdigit()), "{sql}");
        assert_eq!(text("ab"), "unhex('6162')");
    }

    #[test]
    fn nulls_of_the_store_are_empty_strings_there() {
        assert_eq!(
            compile(&col("namespace").is_null()).unwrap(),
            "namespace = ''"
        );
        assert_eq!(
            compile(&col("code").is_null()).unwrap(),
            "response_code = 0"
        );
        // `IS NOT NULL` cannot be told apart from an empty string: left to DataFusion.
        assert_eq!(compile(&col("namespace").is_not_null()), None);
        assert_eq!(compile(&col("user").is_null()), None);
    }

    #[test]
    fn only_what_keeps_a_superset_is_pushed() {
        assert_eq!(
            compile(
                &col("verb")
                    .eq(lit("delete"))
                    .and(col("resource").eq(lit("pods")))
            )
            .unwrap(),
            format!(
                "(verb = {} AND resource = {})",
                text("delete"),
                text("pods")
            )
        );
        // A pattern, an order on strings, an unknown column, a function: not pushed.
        assert_eq!(compile(&col("user").like(lit("sys%"))), None);
        assert_eq!(compile(&col("user").lt(lit("m"))), None);
        assert_eq!(compile(&col("api_version").eq(lit("v1"))), None);
        assert_eq!(compile(&col("groups").is_null()), None);
        // One arm that cannot be pushed makes the whole OR unpushable (AND parts are split by DataFusion).
        assert_eq!(
            compile(&col("verb").eq(lit("get")).or(col("user").like(lit("a%")))),
            None
        );
        assert_eq!(
            compile(&in_list(
                col("verb"),
                vec![lit("create"), lit("patch")],
                false
            ))
            .unwrap(),
            format!("(verb = {} OR verb = {})", text("create"), text("patch"))
        );
        assert_eq!(
            compile(&in_list(col("verb"), vec![lit("create")], true)),
            None
        );
        assert_eq!(
            compile(&col("code").gt_eq(lit(400))).unwrap(),
            "response_code >= 400"
        );
        assert_eq!(
            compile(&lit(400).lt_eq(col("code"))).unwrap(),
            "response_code >= 400"
        );
        assert_eq!(
            compile(&col("ip").eq(lit("203.0.113.9"))).unwrap(),
            format!("has(source_ips, {})", text("203.0.113.9"))
        );
    }

    #[test]
    fn seq_orders_a_requests_stages_and_is_stable() {
        let id = |stage: &str| format!("a1-{stage}-00000000000000ff");
        let received = fleet_seq("a1", "RequestReceived", &id("RequestReceived"));
        let complete = fleet_seq("a1", "ResponseComplete", &id("ResponseComplete"));
        assert!(received < complete);
        assert_eq!(
            received >> 16,
            complete >> 16,
            "one request's rows together"
        );
        assert_eq!(
            complete & 0xFFF,
            0xFF,
            "the content digest tells reused auditIDs apart"
        );
        assert_ne!(
            fleet_seq("a2", "RequestReceived", "x") >> 16,
            received >> 16
        );
        assert_eq!(fleet_seq("a1", "Panic", "old-format-id") & 0xFFF, 0);
    }

    #[test]
    fn exact_conditions_keep_the_same_rows_or_are_not_made() {
        assert_eq!(
            compile_exact(&col("namespace").eq(lit("prod"))).unwrap(),
            format!("namespace = {}", text("prod"))
        );
        assert_eq!(
            compile_exact(&col("namespace").is_null()).unwrap(),
            "namespace = ''"
        );
        // Each of these keeps more rows there than here.
        for e in [
            col("namespace").eq(lit("")),
            col("namespace").not_eq(lit("prod")),
            col("ip").eq(lit("10.0.0.1")),
            col("code").is_null(),
            col("code").lt(lit(400)),
            col("code").not_eq(lit(200)),
        ] {
            assert!(compile(&e).is_some(), "{e}");
            assert_eq!(compile_exact(&e), None, "{e}");
        }
        assert_eq!(
            compile_exact(&col("code").gt_eq(lit(400))).unwrap(),
            "response_code >= 400"
        );
        assert_eq!(
            compile_exact(&col("verb").not_eq(lit("get"))).unwrap(),
            format!("verb != {}", text("get"))
        );
    }

    #[test]
    fn times_bound_micros_and_the_partition_key() {
        let t = |us: i64| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(us),
                Some("UTC".into()),
            ))
        };
        assert_eq!(
            compile(&col("time").gt_eq(t(1_700_000_000_500_000))).unwrap(),
            "(time_us >= 1700000000500000 AND time >= 1700000000)"
        );
        assert_eq!(
            compile(&col("time").lt_eq(t(1_700_000_000_500_000))).unwrap(),
            "(time_us <= 1700000000500000 AND time <= 1700000001)"
        );
        assert_eq!(
            compile(&col("received").gt(t(5))).unwrap(),
            "received_us > 5"
        );
        assert_eq!(compile(&col("time").gt(t(-5))), None);
        let ns = |n: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(n),
                Some("UTC".into()),
            ))
        };
        assert_eq!(
            compile(&col("time").lt(ns(1500))),
            None,
            "between two microseconds"
        );
        assert_eq!(
            compile(&col("time").lt(ns(2000))).unwrap(),
            "(time_us < 2 AND time <= 1)"
        );
    }

    #[test]
    fn values_too_long_for_a_query_are_left_to_datafusion() {
        assert!(compile(&col("audit_id").eq(lit("a".repeat(MAX_PUSHED_BYTES)))).is_some());
        assert_eq!(
            compile(&col("audit_id").eq(lit("a".repeat(MAX_PUSHED_BYTES + 1)))),
            None
        );
    }
}
