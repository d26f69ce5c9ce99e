//! What a query asks for, as data. A handler checks its parameters and turns them into a [`Job`]; the job
//! runs over an engine opened for its scope, in a worker process ([`super::worker`]) or in this process
//! ([`super::Isolation::InProcess`]), and sends its answer's bytes to an [`Out`]: one JSON document, or an
//! export's chunks as they are made. The job's outcome is its result: an [`ApiError`] after some bytes
//! have been sent ends an export with a note; before, it is the answer.

use kubetrail_engine::Resources;
use serde::Serialize;

use super::*;

/// Where a job's answer goes, a chunk at a time.
pub(super) type Out = tokio::sync::mpsc::Sender<bytes::Bytes>;

/// A job with what the worker needs to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Order {
    /// What the job reads.
    pub source: kubetrail_engine::Source,
    pub scope: WireScope,
    pub job: Job,
    /// The process that started the worker: the worker does nothing for another.
    pub parent: u32,
    /// The most bytes of data (heap and thread stacks) the worker may map.
    pub memory: u64,
    /// The directory the query spills to, the collector's to remove once the worker has ended.
    pub spill: PathBuf,
}

/// A [`Scope`] as it crosses into the worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct WireScope {
    cluster: Option<String>,
    since_us: Option<i64>,
    until_us: Option<i64>,
}

impl From<&Scope> for WireScope {
    fn from(s: &Scope) -> WireScope {
        WireScope {
            cluster: s.cluster.clone(),
            since_us: s.since.map(|t| t.as_microsecond()),
            until_us: s.until.map(|t| t.as_microsecond()),
        }
    }
}

impl From<WireScope> for Scope {
    fn from(s: WireScope) -> Scope {
        let time = |us: Option<i64>| us.and_then(|us| jiff::Timestamp::from_microsecond(us).ok());
        Scope {
            cluster: s.cluster,
            since: time(s.since_us),
            until: time(s.until_us),
        }
    }
}

/// One question to the engine; its parameters already checked (a `where` is compiled to SQL, limits are
/// within bounds).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub(super) enum Job {
    /// `/api/v1/query` with `sql`.
    Sql {
        sql: String,
        limit: usize,
    },
    /// `/api/v1/query` with `where` or nothing.
    Events {
        predicate: Option<String>,
        all_stages: bool,
        offset: usize,
        limit: usize,
    },
    /// `/api/v1/events/{auditID}`: the scope's stages, or with `whole_store`, when the scope has none, the
    /// whole store's; 404 when no stage is stored.
    Stages {
        audit_id: String,
        whole_store: bool,
    },
    Who {
        verb: String,
        resource: String,
        namespace: Option<String>,
        limit: usize,
    },
    Timeline(TimelineRequest),
    Scope(ScopeRequest),
    /// `/api/v1/whois`.
    Whois(kubetrail_engine::whois::WhoisRequest),
    /// `/api/v1/rbac/...`.
    Rbac(rbac::RbacJob),
    /// `/api/v1/history`: one object's writes.
    History(kubetrail_engine::history::HistoryRequest),
    /// `/api/v1/sessions`.
    Sessions(kubetrail_engine::history::SessionsRequest),
    /// `/api/v1/histogram` (the scope's own range, in microseconds).
    Histogram {
        predicate: Option<String>,
        since_us: Option<i64>,
        until_us: Option<i64>,
    },
    /// `/api/v1/volume`, with what the collector's data directory says beside the store.
    Volume {
        since: Option<String>,
        until: Option<String>,
        retention_days: u32,
        sinks: Vec<serde_json::Value>,
    },
    /// `/api/v1/clusters`, as of `now_us`.
    Clusters {
        now_us: i64,
    },
    /// `/api/v1/clusters/names`: the console's cluster picker.
    ClusterNames,
    /// `/api/v1/gaps` (the range of `received`, in microseconds; the engine's scope is
    /// `GapsRequest::scope`'s, wider).
    Gaps(Silences),
    /// `/api/v1/coverage`: the same request.
    Coverage(Silences),
    /// `/api/v1/export`: streamed.
    Export {
        predicate: Option<String>,
        csv: bool,
        max: usize,
    },
}

/// The request of `gaps` and `coverage` as it crosses into the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Silences {
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub cluster: Option<String>,
    pub longer_than_us: i64,
    pub now_us: i64,
}

impl From<&GapsRequest> for Silences {
    fn from(r: &GapsRequest) -> Silences {
        Silences {
            since_us: r.since.map(|t| t.as_microsecond()),
            until_us: r.until.map(|t| t.as_microsecond()),
            cluster: r.cluster.clone(),
            longer_than_us: i64::try_from(r.longer_than.as_micros()).unwrap_or(i64::MAX),
            now_us: r.now_us,
        }
    }
}

impl From<Silences> for GapsRequest {
    fn from(s: Silences) -> GapsRequest {
        let time = |us: Option<i64>| us.and_then(|us| jiff::Timestamp::from_microsecond(us).ok());
        GapsRequest {
            since: time(s.since_us),
            until: time(s.until_us),
            cluster: s.cluster,
            longer_than: jiff::SignedDuration::from_micros(s.longer_than_us),
            now_us: s.now_us,
        }
    }
}

impl Job {
    /// Runs the job over `source`, as `scope` sees it, within `resources`, sending its answer to
    /// `out`.
    pub(super) async fn run(
        self,
        source: &kubetrail_engine::Source,
        scope: Scope,
        resources: &Resources,
        out: Out,
    ) -> Result<(), ApiError> {
        let engine = Engine::open_any(source, &scope, resources).await?;
        let answer: Vec<u8> = match self {
            Job::Export {
                predicate,
                csv,
                max,
            } => return explore::export_rows(engine, predicate, csv, max, out).await,
            Job::Sql { sql, limit } => sql_answer(&engine, &sql, limit).await?,
            Job::Events {
                predicate,
                all_stages,
                offset,
                limit,
            } => events_answer(&engine, predicate, all_stages, offset, limit).await?,
            Job::Stages {
                audit_id,
                whole_store,
            } => match explore::stages(&engine, &audit_id).await {
                Err(e) if e.status == StatusCode::NOT_FOUND && whole_store => {
                    let engine = Engine::open_any(source, &Scope::default(), resources).await?;
                    explore::stages(&engine, &audit_id).await?
                }
                answer => answer?,
            },
            Job::Who {
                verb,
                resource,
                namespace,
                limit,
            } => {
                let req = WhoRequest {
                    verb,
                    resource,
                    namespace,
                    limit,
                };
                report_answer(&engine, ReportRequest::Who(req)).await?
            }
            Job::Timeline(req) => report_answer(&engine, ReportRequest::Timeline(req)).await?,
            Job::Scope(req) => report_answer(&engine, ReportRequest::Scope(req)).await?,
            Job::Whois(req) => report_answer(&engine, ReportRequest::Whois(req)).await?,
            Job::Rbac(job) => rbac::run(&engine, source, resources, job).await?,
            Job::History(req) => to_json(&kubetrail_engine::history::history(&engine, &req).await?),
            Job::Sessions(req) => report_answer(&engine, ReportRequest::Sessions(req)).await?,
            Job::ClusterNames => to_json(&serde_json::json!({
                "clusters": engine.cluster_names().await?,
            })),
            Job::Clusters { now_us } => {
                report_answer(&engine, ReportRequest::Clusters(ClustersRequest { now_us })).await?
            }
            Job::Gaps(s) => report_answer(&engine, ReportRequest::Gaps(s.into())).await?,
            Job::Coverage(s) => report_answer(&engine, ReportRequest::Coverage(s.into())).await?,
            Job::Histogram {
                predicate,
                since_us,
                until_us,
            } => explore::histogram_answer(&engine, predicate, since_us, until_us).await?,
            Job::Volume {
                since,
                until,
                retention_days,
                sinks,
            } => explore::volume_answer(&engine, since, until, retention_days, sinks).await?,
        };
        // Decided before the first byte goes out: past it, the status could not say so.
        if answer.len() > MAX_ANSWER_JSON {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the answer is over {} MiB: narrow the query with since/until, a filter or a limit",
                    MAX_ANSWER_JSON >> 20
                ),
            ));
        }
        // A receiver that is gone has hung up: nobody waits for the answer.
        let _ = out.send(answer.into()).await;
        Ok(())
    }
}

/// JSON of a value the API made (its own types and `serde_json::Value`s: never fails).
pub(super) fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

async fn sql_answer(engine: &Engine, sql: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
    let (columns, mut rows) = engine.sql_rows(sql, Some(limit + 1)).await?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    let rows: Vec<Vec<serde_json::Value>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(Cell::into_json).collect())
        .collect();
    Ok(to_json(&json!({
        "columns": columns,
        "count": rows.len(),
        "truncated": truncated,
        "rows": rows,
    })))
}

async fn events_answer(
    engine: &Engine,
    predicate: Option<String>,
    all_stages: bool,
    offset: usize,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let row_query = RowQuery {
        all_stages,
        limit: Some(offset + limit + 1),
        with_event: true,
    };
    let rows = engine.rows(predicate.as_deref(), row_query).await?;
    let truncated = rows.len() > offset + limit;
    let events = stored_events(rows.into_iter().skip(offset).take(limit));
    Ok(to_json(&EventsAnswer {
        count: events.len(),
        offset,
        truncated,
        events,
    }))
}

async fn report_answer(engine: &Engine, req: ReportRequest) -> Result<Vec<u8>, ApiError> {
    Ok(to_json(&reports::build(engine, &req).await?.to_json()))
}

/// An [`ApiError`] as it crosses out of the worker.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireError {
    status: u16,
    body: serde_json::Value,
    retry_after: Option<u32>,
}

impl From<ApiError> for WireError {
    fn from(e: ApiError) -> WireError {
        WireError {
            status: e.status.as_u16(),
            body: e.body,
            retry_after: e.retry_after,
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: e.body,
            retry_after: e.retry_after,
        }
    }
}
