//! The query API of `kubetrail serve`: `/api/v1/query`, `/api/v1/who`, `/api/v1/timeline`, `/api/v1/scope`,
//! `/api/v1/whois`, `/api/v1/rbac/{who-can,grants,diff,unused}` (RBAC at any moment: `rbac`),
//! `/api/v1/history` (one object's writes and what each changed), `/api/v1/sessions` (exec, attach,
//! port-forward), `/api/v1/clusters` (and `/clusters/names`), `/api/v1/gaps` and `/api/v1/coverage`, JSON, with the CLI's
//! semantics (the same parameters as the flags, the same reports); and
//! the alerts: `GET /api/v1/alerts`, `GET /api/v1/alerts/{id}`, `POST /api/v1/alerts/{id}/{ack|resolve|
//! reopen|assign|note}`, each change recorded with the authenticated caller; the suppressions:
//! `GET /api/v1/suppressions`, `POST /api/v1/suppressions`, `POST /api/v1/suppressions/{id}/lift`.
//!
//! Parameters come as a query string (`GET`) or as a JSON object (`POST`, for SQL that should not sit in a
//! URL): `since`, `until`, `cluster` everywhere; `where` or `sql`, `limit`, `all_stages` for `query`; `verb`,
//! `resource`, `namespace`, `limit` for `who`; `user` and/or `credential_id` for `timeline` and `scope`;
//! `identity` for `whois` (who or what is behind a username, an AWS ARN or a credential id); `resource` (as
//! `deployments/NAME`), `namespace`, `limit`, `with_status` for `history`; `user`, `namespace`, `limit`, `credential_id` for `sessions`; `longer_than` for `gaps`
//! and `coverage` (whose `since` and `until` bound when events were received). An unknown or misplaced
//! parameter is an error, never ignored.
//!
//! The server authenticates every call like the webhook before it gets here (`router_with_api`). Each
//! handler checks its parameters and makes a `job::Job`; `serve` runs every job in a worker process of its
//! own (`worker`: killed at the time limit or when the client hangs up, bounded in memory by the kernel, so
//! no query can stall or abort the collector); [`Isolation::InProcess`] runs them on the query runtime
//! instead, for tests and embedding. At most [`CONCURRENT_QUERIES`] run at once (429 beyond), each for at
//! most [`QUERY_TIMEOUT`] (504), each answer at most [`MAX_ROWS`] rows (`truncated` says when more
//! matched). `sql` and `where` are bounded in size, tokens and terms (`kubetrail_engine::limits`, 400 naming
//! the limit), and the threads that plan have the stack the largest accepted query needs
//! ([`query_runtime`]). SQL is read-only (the engine refuses DDL, DML and statements). A query holds its
//! slot until its work has ended (its worker reaped), not until its answer is sent; answers stream to the
//! client as it reads (`Streamed`), and a client that hangs up ends its query. The store is read as the
//! collector leaves it: the log is converted into Parquet once 5 s old (or sooner when many events wait), so
//! an acknowledged event is found within about five seconds.

mod explore;
mod job;
mod rbac;
mod worker;

pub use worker::{DEFAULT_WORKER_MEMORY, WORKER_ARG, main as worker_main};

use job::Job;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kubetrail_engine::reports::{
    self, ClustersRequest, GapsRequest, ReportError, ReportRequest, ScopeRequest, TimelineRequest,
    WhoRequest,
};
use kubetrail_engine::{Cell, Engine, EngineError, RowQuery, Scope, limits};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

/// Queries running at once; more are answered 429 with `Retry-After`.
pub const CONCURRENT_QUERIES: usize = 2;
/// The longest a query may run before it is abandoned (504).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The most rows (events, result rows, requests) one answer carries.
pub const MAX_ROWS: usize = 10_000;
/// The longest identity `whois` looks up, in bytes.
const MAX_IDENTITY: usize = 1024;
/// The largest `POST` body of parameters.
const MAX_PARAMS_BYTES: usize = 1 << 20;

/// The runtime queries run on: their own threads (a heavy query never delays a webhook acknowledgement) with
/// the stack the largest accepted query needs ([`limits::QUERY_STACK_BYTES`]).
pub fn query_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_stack_size(limits::QUERY_STACK_BYTES)
        .thread_name("kubetrail-query")
        .enable_all()
        .build()
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct QueryApi {
    /// What queries read: the data directory's `store`, or a ClickHouse table.
    source: kubetrail_engine::Source,
    /// The data directory (alerts and their workflow).
    data: PathBuf,
    /// The runtime queries run on.
    runtime: tokio::runtime::Handle,
    slots: Arc<Semaphore>,
    /// The longest suppression accepted, in days.
    max_suppression_days: u32,
    /// The longest a query may run ([`QUERY_TIMEOUT`] unless set).
    timeout: Duration,
    /// The most requests an export carries (`MAX_EXPORT` (100,000) unless set).
    max_export: usize,
    /// Where queries run.
    isolation: Isolation,
    /// Numbers the workers' spill directories.
    spills: Arc<std::sync::atomic::AtomicU64>,
}

/// Where queries run.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// Each in a worker process started from `exe` (`kubetrail`, run with [`WORKER_ARG`]), which may map at
    /// most `memory` bytes of data beside its threads' stacks: what the collector does (see `worker`).
    Worker { exe: PathBuf, memory: u64 },
    /// On the query runtime, in this process: for tests and embedding. The limits of time and memory hold
    /// only where a query yields and allocates through the engine's pool.
    InProcess,
}

impl QueryApi {
    pub fn new(data: PathBuf, runtime: tokio::runtime::Handle) -> QueryApi {
        QueryApi {
            source: kubetrail_engine::Source::Store(data.join("store")),
            data,
            runtime,
            slots: Arc::new(Semaphore::new(CONCURRENT_QUERIES)),
            max_suppression_days: crate::alerting::suppress::DEFAULT_MAX_DAYS,
            timeout: QUERY_TIMEOUT,
            max_export: explore::MAX_EXPORT,
            isolation: Isolation::InProcess,
            spills: Arc::default(),
        }
    }

    /// Answers from `source` instead of the data directory's store (`query.backend`).
    pub fn source(mut self, source: kubetrail_engine::Source) -> QueryApi {
        self.source = source;
        self
    }

    /// Runs each query as `isolation` says. With workers, what the spill directory (`DATA/spill`) holds is
    /// left by a collector that stopped without cleaning up (the data directory has one writer): removed.
    pub fn isolation(mut self, isolation: Isolation) -> QueryApi {
        if matches!(isolation, Isolation::Worker { .. }) {
            let _ = std::fs::remove_dir_all(self.data.join(worker::SPILL_DIR));
        }
        self.isolation = isolation;
        self
    }

    /// The longest suppression `POST /api/v1/suppressions` accepts (`alerts.max_suppression_days`).
    pub fn max_suppression_days(mut self, days: u32) -> QueryApi {
        self.max_suppression_days = days;
        self
    }

    /// Exports carry at most `n` requests instead of `MAX_EXPORT` (100,000).
    pub fn with_max_export(mut self, n: usize) -> QueryApi {
        self.max_export = n;
        self
    }

    /// Queries run for at most `timeout` instead of [`QUERY_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> QueryApi {
        self.timeout = timeout;
        self
    }

    /// How many queries hold a slot now.
    pub fn running(&self) -> usize {
        CONCURRENT_QUERIES - self.slots.available_permits()
    }

    /// The API's routes (to be put behind the server's authentication, which lets in `reader` and above):
    /// reads for readers, alert workflow for responders, suppressions for admins.
    pub fn router(self) -> Router {
        use kubetrail_server::{Role, needs};
        let reads = Router::new()
            .route("/api/v1/query", get(query).post(query))
            .route("/api/v1/who", get(who).post(who))
            .route("/api/v1/timeline", get(timeline).post(timeline))
            .route("/api/v1/scope", get(scope).post(scope))
            .route("/api/v1/whois", get(whois))
            .route("/api/v1/rbac/who-can", get(rbac::who_can))
            .route("/api/v1/rbac/grants", get(rbac::grants))
            .route("/api/v1/rbac/diff", get(rbac::diff))
            .route("/api/v1/rbac/unused", get(rbac::unused))
            .route("/api/v1/history", get(history))
            .route("/api/v1/sessions", get(sessions))
            .route("/api/v1/clusters", get(clusters))
            .route("/api/v1/clusters/names", get(cluster_names))
            .route("/api/v1/gaps", get(gaps))
            .route("/api/v1/coverage", get(coverage))
            .route("/api/v1/histogram", get(explore::histogram))
            .route("/api/v1/export", get(explore::export))
            .route("/api/v1/events/{audit_id}", get(explore::event))
            .route("/api/v1/volume", get(explore::volume))
            .route("/api/v1/alerts", get(alerts_list))
            .route("/api/v1/alerts/{id}", get(alert_show))
            .route("/api/v1/suppressions", get(suppressions_list));
        let respond = Router::new().route(
            "/api/v1/alerts/{id}/{action}",
            axum::routing::post(alert_change),
        );
        let govern = Router::new()
            .route("/api/v1/suppressions", axum::routing::post(suppression_add))
            .route(
                "/api/v1/suppressions/{id}/lift",
                axum::routing::post(suppression_lift),
            );
        reads
            .merge(needs(Role::Responder, respond))
            .merge(needs(Role::Admin, govern))
            .with_state(Arc::new(self))
    }
}

/// Every parameter of every endpoint; each endpoint says which it takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    since: Option<String>,
    until: Option<String>,
    cluster: Option<String>,
    #[serde(rename = "where")]
    where_: Option<String>,
    sql: Option<String>,
    limit: Option<usize>,
    all_stages: Option<bool>,
    verb: Option<String>,
    resource: Option<String>,
    namespace: Option<String>,
    user: Option<String>,
    offset: Option<usize>,
    format: Option<String>,
    longer_than: Option<String>,
    with_status: Option<bool>,
    credential_id: Option<String>,
    identity: Option<String>,
    at: Option<String>,
    name: Option<String>,
}

impl Params {
    /// The names of the parameters given.
    fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut note = |name: &'static str, set: bool| {
            if set {
                out.push(name);
            }
        };
        note("since", self.since.is_some());
        note("until", self.until.is_some());
        note("cluster", self.cluster.is_some());
        note("where", self.where_.is_some());
        note("sql", self.sql.is_some());
        note("limit", self.limit.is_some());
        note("all_stages", self.all_stages.is_some());
        note("verb", self.verb.is_some());
        note("resource", self.resource.is_some());
        note("namespace", self.namespace.is_some());
        note("user", self.user.is_some());
        note("offset", self.offset.is_some());
        note("format", self.format.is_some());
        note("longer_than", self.longer_than.is_some());
        note("with_status", self.with_status.is_some());
        note("credential_id", self.credential_id.is_some());
        note("identity", self.identity.is_some());
        note("at", self.at.is_some());
        note("name", self.name.is_some());
        out
    }

    /// Refuses parameters `endpoint` does not take.
    fn only(&self, endpoint: &str, allowed: &[&str]) -> Result<(), ApiError> {
        let common = ["since", "until", "cluster"];
        match self
            .given()
            .into_iter()
            .find(|p| !common.contains(p) && !allowed.contains(p))
        {
            Some(p) => Err(ApiError::bad(format!(
                "`{p}` is not a parameter of {endpoint} (it takes since, until, cluster, {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// Refuses parameters an RBAC endpoint does not take (`cluster` and `allowed`: its moment is its own).
    fn only_rbac(&self, endpoint: &str, allowed: &[&str]) -> Result<(), ApiError> {
        match self
            .given()
            .into_iter()
            .find(|p| *p != "cluster" && !allowed.contains(p))
        {
            Some(p) => Err(ApiError::bad(format!(
                "`{p}` is not a parameter of {endpoint} (it takes cluster, {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn scope(&self) -> Result<Scope, ApiError> {
        let time = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(crate::duration::parse_time)
                .transpose()
                .map_err(|e| ApiError::bad(format!("`{name}`: {e}")))
        };
        Ok(Scope {
            cluster: self.cluster.clone(),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
        })
    }

    fn limit(&self, default: usize) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(default),
            Some(0) => Err(ApiError::bad("`limit` must be at least 1")),
            Some(n) if n > MAX_ROWS => Err(ApiError::bad(format!(
                "`limit` is at most {MAX_ROWS}: narrow the query with since/until or a filter"
            ))),
            Some(n) => Ok(n),
        }
    }

    /// `user` and `credential_id` of a timeline or scope: at least one, neither empty when given.
    fn subject(&self) -> Result<(String, Option<String>), ApiError> {
        let credential = match &self.credential_id {
            Some(c) => Some(
                self.required("credential_id", &self.credential_id)
                    .map(|_| c.trim().to_string())?,
            ),
            None => None,
        };
        let user = match (&self.user, &credential) {
            (Some(_), _) | (None, None) => self.required("user", &self.user)?.to_string(),
            (None, Some(_)) => String::new(),
        };
        Ok((user, credential))
    }

    fn required<'a>(&self, name: &str, v: &'a Option<String>) -> Result<&'a str, ApiError> {
        match v.as_deref() {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ApiError::bad(format!("`{name}` is required"))),
        }
    }
}

/// An error answer: a status and `{"error": message, ...details}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
            retry_after: None,
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = if e.is_invalid_query() {
            StatusCode::BAD_REQUEST
        } else if e.is_resources_exhausted() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "query failed");
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e {
            ReportError::Invalid(m) => ApiError::bad(m),
            ReportError::Engine(e) => e.into(),
        }
    }
}

/// The parameters of a request: its query string, or its JSON body for `POST`.
async fn params(req: Request) -> Result<Params, ApiError> {
    if req.method() == Method::POST {
        let body = axum::body::to_bytes(req.into_body(), MAX_PARAMS_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the parameters exceed {MAX_PARAMS_BYTES} bytes"),
                )
            })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params::default());
        }
        return serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad(format!("the body is not a JSON object of parameters: {e}"))
        });
    }
    Query::<Params>::try_from_uri(req.uri())
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad(e.body_text()))
}

/// Starts `job` within the concurrency and time limits: it takes a slot (429 when none is free), holds it
/// until the job's work has ended (in a worker: the process reaped; in process: its future dropped, streams,
/// plans and DataFusion's own tasks with it) and runs for at most the time limit (504). The answer's chunks
/// come through the receiver; dropping the [`Started`] before it finishes (the client hung up) aborts it.
fn start(
    api: &QueryApi,
    scope: Scope,
    job: Job,
) -> Result<(Started, tokio::sync::mpsc::Receiver<bytes::Bytes>), ApiError> {
    let Ok(slot) = api.slots.clone().try_acquire_owned() else {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{CONCURRENT_QUERIES} queries are already running: retry shortly"),
        );
        e.retry_after = Some(1);
        return Err(e);
    };
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let timeout = api.timeout;
    let limited = move |work: std::pin::Pin<
        Box<dyn Future<Output = Result<(), ApiError>> + Send>,
    >| async move {
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the query ran longer than {} s: narrow it with since/until or a filter",
                        timeout.as_secs()
                    ),
                ))
            })
    };
    let task = match &api.isolation {
        Isolation::InProcess => {
            let source = api.source.clone();
            let work = async move {
                job.run(&source, scope, &kubetrail_engine::Resources::default(), tx)
                    .await
            };
            api.runtime.spawn(Holding {
                work: Box::pin(limited(Box::pin(work))),
                _slot: slot,
            })
        }
        Isolation::Worker { exe, memory } => {
            let n = api
                .spills
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let order = job::Order {
                source: api.source.clone(),
                scope: (&scope).into(),
                job,
                parent: std::process::id(),
                memory: *memory,
                spill: api.data.join(worker::SPILL_DIR).join(format!("query-{n}")),
            };
            let work = worker::run(exe.clone(), order, tx, slot, api.runtime.clone());
            api.runtime.spawn(limited(Box::pin(work)))
        }
    };
    Ok((Started { task }, rx))
}

/// Runs `job` (see [`start`]) and answers its JSON document, streamed as it comes.
async fn answer(api: &QueryApi, scope: Scope, job: Job) -> Result<Response, ApiError> {
    let body = Streamed::start(api, scope, job, None).await?;
    let mut response = (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into_body(),
    )
        .into_response();
    // From ClickHouse, what this collector has not shipped is missing: the answer says so in a header.
    if let kubetrail_engine::Source::ClickHouse(_) = api.source {
        let data = api.data.clone();
        let note = tokio::task::spawn_blocking(move || {
            crate::shipping::worker::clickhouse_shortfall(&data)
        })
        .await
        .ok()
        .flatten();
        // A header takes visible ASCII only (an error's text may hold anything).
        let ascii = |n: String| -> String {
            n.chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect()
        };
        if let Some(v) = note.and_then(|n| HeaderValue::from_str(&ascii(n)).ok()) {
            response.headers_mut().insert("x-kubetrail-incomplete", v);
        }
    }
    Ok(response)
}

/// An answer as it streams: the status waits for its first chunk (or for its end when there is none: an
/// error, or nothing to send), so an error before any byte is the answer. After it, an error can no longer
/// change the status: the body ends with `note`'s line (an export's) when there is one, then an error that
/// cuts the response off (no terminating chunk), so no client takes it for a whole answer. Chunks come
/// through a channel of [`CHUNKS_AHEAD`]: a client that does not read makes the query wait, until its time
/// limit. Dropped (the client hung up), it aborts the query.
struct Streamed {
    first: Option<bytes::Bytes>,
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    started: Option<Started>,
    /// The last line of an answer cut short by `message`.
    note: Option<fn(&str) -> String>,
    failed: Option<String>,
}

impl Streamed {
    async fn start(
        api: &QueryApi,
        scope: Scope,
        job: Job,
        note: Option<fn(&str) -> String>,
    ) -> Result<Streamed, ApiError> {
        let (started, mut rx) = start(api, scope, job)?;
        let (started, first) = match rx.recv().await {
            Some(chunk) => (Some(started), Some(chunk)),
            None => {
                started.finish().await?;
                (None, None)
            }
        };
        Ok(Streamed {
            first,
            rx,
            started,
            note,
            failed: None,
        })
    }

    fn into_body(self) -> Body {
        Body::from_stream(futures::stream::unfold(self, Streamed::next))
    }

    async fn next(mut self) -> Option<(Result<bytes::Bytes, std::io::Error>, Streamed)> {
        if let Some(message) = self.failed.take() {
            return Some((Err(std::io::Error::other(message)), self));
        }
        if let Some(chunk) = self.first.take() {
            return Some((Ok(chunk), self));
        }
        if let Some(chunk) = self.rx.recv().await {
            return Some((Ok(chunk), self));
        }
        let started = self.started.take()?;
        let Err(e) = started.finish().await else {
            return None;
        };
        let message = e.body["error"]
            .as_str()
            .unwrap_or("internal error")
            .to_string();
        match self.note {
            Some(note) => {
                let line = note(&message);
                self.failed = Some(message);
                Some((Ok(line.into()), self))
            }
            None => Some((Err(std::io::Error::other(message)), self)),
        }
    }
}

/// The largest JSON answer (the engine bounds collected values to `limits::MAX_ANSWER_BYTES`; JSON can
/// double them).
const MAX_ANSWER_JSON: usize = 4 * limits::MAX_ANSWER_BYTES;

/// The chunks of an answer made ahead of its reader.
const CHUNKS_AHEAD: usize = 4;

/// A query's work and its slot: however the future ends (done, timed out, aborted), the work is dropped
/// first (fields drop in order), then the slot is free.
struct Holding<F> {
    work: std::pin::Pin<Box<F>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.work.as_mut().poll(cx)
    }
}

/// A query running; aborted when dropped before it finished.
#[derive(Debug)]
struct Started {
    task: tokio::task::JoinHandle<Result<(), ApiError>>,
}

impl Started {
    /// The query's result.
    async fn finish(mut self) -> Result<(), ApiError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "a query task failed");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                ))
            }
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = Result<Json<serde_json::Value>, ApiError>;

/// The most rows `offset` may skip: paging deeper means narrowing the query.
pub const MAX_OFFSET: usize = 100_000;

/// The SQL of the `where` parameter (none when absent); a syntax error answers 400 with its place, an
/// expression over the engine's limits 400 naming the limit.
fn where_sql(p: &Params) -> Result<Option<String>, ApiError> {
    let Some(expr) = p.where_.as_deref() else {
        return Ok(None);
    };
    limits::check_where_bytes(expr).map_err(|e| ApiError::bad(format!("`where` {e}")))?;
    let expr = kubetrail_query::parse(expr).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        body: json!({
            "error": e.to_string(),
            "offset": e.offset,
            "len": e.len,
        }),
        retry_after: None,
    })?;
    limits::check_where_terms(&expr).map_err(|e| ApiError::bad(format!("`where` {e}")))?;
    Ok(Some(expr.to_sql()))
}

/// `/api/v1/query`: `where` (or nothing) answers `{"events": [stored events], "count", "truncated"}`, one
/// per request unless `all_stages`; `sql` answers `{"columns", "rows": [[...]], "count", "truncated"}`.
async fn query(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only(
        "/api/v1/query",
        &["where", "sql", "limit", "offset", "all_stages"],
    )?;
    let scope = p.scope()?;
    let limit = p.limit(100)?;
    if let Some(sql) = p.sql.clone() {
        if p.where_.is_some() || p.all_stages.is_some() || p.offset.is_some() {
            return Err(ApiError::bad(
                "`sql` is a whole query: give it without `where`, `offset` and `all_stages`",
            ));
        }
        limits::check_sql(&sql).map_err(|e| ApiError::bad(format!("`sql` {e}")))?;
        return answer(&api, scope, Job::Sql { sql, limit }).await;
    }
    let predicate = where_sql(&p)?;
    let offset = p.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::bad(format!(
            "`offset` is at most {MAX_OFFSET}: narrow the query with since/until or a filter"
        )));
    }
    let job = Job::Events {
        predicate,
        all_stages: p.all_stages.unwrap_or(false),
        offset,
        limit,
    };
    answer(&api, scope, job).await
}

/// `/api/v1/query`'s answer of events.
#[derive(Debug, serde::Serialize)]
struct EventsAnswer {
    count: usize,
    offset: usize,
    truncated: bool,
    events: Vec<Box<RawValue>>,
}

/// The stored events of `rows`, as stored: their text is valid JSON, but may be nested deeper than
/// serde_json reads into a value (128 levels), so it is never parsed, and the answer holding it is serialized
/// from a struct, never through `serde_json::Value` (`json!` would parse it, and fail).
fn stored_events(rows: impl Iterator<Item = kubetrail_engine::EventRow>) -> Vec<Box<RawValue>> {
    rows.filter_map(|r| r.event)
        .filter_map(|e| RawValue::from_string(e).ok())
        .collect()
}

/// `/api/v1/who`: the `who` report (`verb`, `resource` as `pods` or `pods/NAME`, `namespace`, `limit`).
async fn who(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/who", &["verb", "resource", "namespace", "limit"])?;
    let job = Job::Who {
        verb: p.required("verb", &p.verb)?.to_string(),
        resource: p.required("resource", &p.resource)?.to_string(),
        namespace: p.namespace.clone(),
        limit: p.limit(1000)?,
    };
    answer(&api, p.scope()?, job).await
}

/// `/api/v1/timeline`: everything `user` did (with `credential_id`: with that credential; without `user`:
/// whoever presented it).
async fn timeline(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/timeline", &["user", "credential_id"])?;
    let (user, credential) = p.subject()?;
    let job = Job::Timeline(TimelineRequest { user, credential });
    answer(&api, p.scope()?, job).await
}

/// `/api/v1/whois`: who or what is behind `identity` (a username, an AWS ARN or session name, a credential
/// id).
async fn whois(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/whois", &["identity"])?;
    let identity = p.required("identity", &p.identity)?.trim().to_string();
    if identity.len() > MAX_IDENTITY {
        return Err(ApiError::bad(format!(
            "`identity` is at most {MAX_IDENTITY} bytes"
        )));
    }
    let job = Job::Whois(kubetrail_engine::whois::WhoisRequest { identity });
    answer(&api, p.scope()?, job).await
}

/// `/api/v1/clusters`: the clusters whose events the source holds, with their counts, rate and last event.
async fn clusters(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/clusters", &[])?;
    let now_us = jiff::Timestamp::now().as_microsecond();
    answer(&api, p.scope()?, Job::Clusters { now_us }).await
}

/// The range `gaps` covers without `since`, as `kubetrail gaps`.
const GAPS_SINCE: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);
/// The range `coverage` covers without `since`, as `kubetrail coverage`.
const COVERAGE_SINCE: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

/// The `gaps` and `coverage` request of `p` (`since` `default` before `until` or now when not given), and
/// the scope the engine opens for it (wider: `GapsRequest::scope`).
fn silences(
    p: &Params,
    endpoint: &str,
    default: jiff::SignedDuration,
) -> Result<(Scope, job::Silences), ApiError> {
    p.only(endpoint, &["longer_than"])?;
    let scope = p.scope()?;
    let now = jiff::Timestamp::now();
    let longer_than = match p.longer_than.as_deref() {
        None => GapsRequest::DEFAULT_LONGER_THAN,
        Some(d) => {
            crate::duration::parse(d).map_err(|e| ApiError::bad(format!("`longer_than`: {e}")))?
        }
    };
    let since = match scope.since {
        Some(t) => t,
        None => scope
            .until
            .unwrap_or(now)
            .checked_sub(default)
            .map_err(|e| ApiError::bad(format!("`until`: {e}")))?,
    };
    let req = GapsRequest {
        since: Some(since),
        until: scope.until,
        cluster: scope.cluster,
        longer_than,
        now_us: now.as_microsecond(),
    };
    // Refused here, before a slot is taken: an empty range, a threshold under a second.
    req.check()?;
    Ok((req.scope(), (&req).into()))
}

/// `/api/v1/gaps`: the periods longer than `longer_than` (default 5m) in which a cluster's source delivered
/// no event, in the events received from `since` (default: 7 days before `until`) to `until` (default now).
async fn gaps(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Result<Response, ApiError> {
    let p = params(req).await?;
    let (scope, s) = silences(&p, "/api/v1/gaps", GAPS_SINCE)?;
    answer(&api, scope, Job::Gaps(s)).await
}

/// `/api/v1/coverage`: what the audit trail holds in the range (default: the 30 days before `until`), per
/// cluster and source, with its gaps, levels and stages.
async fn coverage(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    let (scope, s) = silences(&p, "/api/v1/coverage", COVERAGE_SINCE)?;
    answer(&api, scope, Job::Coverage(s)).await
}

/// `/api/v1/clusters/names`: `{"clusters": [names]}` in the scope, without counting anything (the console's
/// picker asks on every page).
async fn cluster_names(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/clusters/names", &[])?;
    answer(&api, p.scope()?, Job::ClusterNames).await
}

/// `/api/v1/history`: every write of the object `resource` (`deployments/NAME`) in `namespace`, with what
/// each changed.
async fn history(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only(
        "/api/v1/history",
        &["resource", "namespace", "limit", "with_status"],
    )?;
    let object = p.required("resource", &p.resource)?;
    let limit = match p.limit {
        None => kubetrail_engine::history::DEFAULT_HISTORY_LIMIT,
        Some(n) => n,
    };
    // Checked here, before a slot is taken.
    let mut req =
        kubetrail_engine::history::HistoryRequest::parse(object, p.namespace.clone(), limit)?;
    req.with_status = p.with_status.unwrap_or(false);
    let job = Job::History(req);
    answer(&api, p.scope()?, job).await
}

/// `/api/v1/sessions`: every exec, attach and port-forward (by `user`, into `namespace`), as a report.
async fn sessions(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only(
        "/api/v1/sessions",
        &["user", "namespace", "limit", "credential_id"],
    )?;
    let job = Job::Sessions(kubetrail_engine::history::SessionsRequest {
        user: p.user.clone().filter(|u| !u.trim().is_empty()),
        credential: p.credential_id.clone().filter(|c| !c.trim().is_empty()),
        namespace: p.namespace.clone().filter(|n| !n.trim().is_empty()),
        limit: p.limit(1000)?,
    });
    answer(&api, p.scope()?, job).await
}

/// `/api/v1/scope`: the incident report on a suspect `user` (and/or one `credential_id`).
async fn scope(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/scope", &["user", "credential_id"])?;
    let (user, credential) = p.subject()?;
    answer(
        &api,
        p.scope()?,
        Job::Scope(ScopeRequest { user, credential }),
    )
    .await
}

// ---- alerts ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsParams {
    status: Option<crate::alerting::store::Status>,
    all: Option<bool>,
    min_severity: Option<kubetrail_detect::Level>,
}

/// `GET /api/v1/alerts`: `{"alerts": [...]}`, newest first, open and acknowledged unless `status` or `all`.
async fn alerts_list(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Answer {
    let p: AlertsParams = Query::<AlertsParams>::try_from_uri(req.uri())
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad(e.body_text()))?;
    let data = api.data.clone();
    let mut alerts = tokio::task::spawn_blocking(move || crate::alerting::store::load(&data))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    alerts.retain(|t| {
        p.min_severity.is_none_or(|m| t.alert.severity >= m)
            && match (p.all.unwrap_or(false), p.status) {
                (true, _) => true,
                (false, Some(s)) => t.status == s,
                (false, None) => matches!(
                    t.status,
                    crate::alerting::store::Status::Open
                        | crate::alerting::store::Status::Acknowledged
                ),
            }
    });
    alerts.reverse();
    alerts.truncate(MAX_ROWS);
    Ok(Json(json!({ "count": alerts.len(), "alerts": alerts })))
}

/// `GET /api/v1/alerts/{id}`: the alert with its status and history.
async fn alert_show(
    State(api): State<Arc<QueryApi>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Answer {
    let data = api.data.clone();
    let t = tokio::task::spawn_blocking(move || crate::alerting::store::find(&data, &id))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("{e:#}")))?;
    Ok(Json(serde_json::to_value(t).unwrap_or_default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    to: Option<String>,
    text: Option<String>,
}

/// `POST /api/v1/alerts/{id}/{ack|resolve|reopen|assign|note}` (`{"to"}` for assign, `{"text"}` for note):
/// recorded with the authenticated caller as who made the change.
async fn alert_change(
    State(api): State<Arc<QueryApi>>,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    axum::Extension(peer): axum::Extension<kubetrail_server::Peer>,
    body: axum::body::Bytes,
) -> Answer {
    let b: ChangeBody = if body.iter().all(u8::is_ascii_whitespace) {
        ChangeBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad(format!("the body is not a JSON object: {e}")))?
    };
    use crate::alerting::store::Action;
    let action = match (action.as_str(), b.to, b.text) {
        ("ack", None, None) => Action::Ack,
        ("resolve", None, None) => Action::Resolve,
        ("reopen", None, None) => Action::Reopen,
        ("assign", Some(to), None) => Action::Assign { to },
        ("note", None, Some(text)) => Action::Note { text },
        ("assign", ..) => return Err(ApiError::bad("assign takes {\"to\": \"ANALYST\"}")),
        ("note", ..) => return Err(ApiError::bad("note takes {\"text\": \"...\"}")),
        ("ack" | "resolve" | "reopen", ..) => {
            return Err(ApiError::bad(format!("{action} takes no body")));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no action `{action}`: ack, resolve, reopen, assign or note"),
            ));
        }
    };
    let by = match &peer.identity {
        Some(i) => format!("api:{i}"),
        None => format!("api:{}", peer.addr.ip()),
    };
    let data = api.data.clone();
    let t = tokio::task::spawn_blocking(move || {
        crate::alerting::store::record(&data, &id, action, &by)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
    .map_err(|e| {
        let m = format!("{e:#}");
        let status = if m.starts_with("no alert") || m.contains("is the start of") {
            StatusCode::NOT_FOUND
        } else if m.contains("someone else resolves it") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, m)
    })?;
    Ok(Json(serde_json::to_value(t).unwrap_or_default()))
}

// ---- suppressions ---------------------------------------------------------------------------------------

fn caller(peer: &kubetrail_server::Peer) -> String {
    match &peer.identity {
        Some(i) => format!("api:{i}"),
        None => format!("api:{}", peer.addr.ip()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    status: StatusCode,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
        .map_err(|e| ApiError::new(status, format!("{e:#}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressionsParams {
    all: Option<bool>,
}

/// `GET /api/v1/suppressions[?all=true]`: the suppressions in force (every one with `all`), each with
/// `active`.
async fn suppressions_list(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Answer {
    let p: SuppressionsParams = Query::<SuppressionsParams>::try_from_uri(req.uri())
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad(e.body_text()))?;
    let data = api.data.clone();
    let all = blocking(
        move || crate::alerting::suppress::load(&data),
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await?;
    let now = jiff::Timestamp::now();
    let list: Vec<serde_json::Value> = all
        .iter()
        .filter(|s| p.all.unwrap_or(false) || s.active(now))
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["active"] = serde_json::Value::Bool(s.active(now));
            v
        })
        .collect();
    Ok(Json(json!({ "count": list.len(), "suppressions": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressBody {
    rule: Option<String>,
    user: Option<String>,
    namespace: Option<String>,
    cluster: Option<String>,
    /// RFC 3339.
    until: Option<String>,
    /// `30m`, `4h`, `2d`.
    #[serde(rename = "for")]
    for_: Option<String>,
    reason: String,
}

/// `POST /api/v1/suppressions` with `{"rule"|"user"|"namespace"|"cluster": ..., "for": "4h" | "until": T,
/// "reason": "..."}`: recorded with the authenticated caller.
async fn suppression_add(
    State(api): State<Arc<QueryApi>>,
    axum::Extension(peer): axum::Extension<kubetrail_server::Peer>,
    body: axum::body::Bytes,
) -> Answer {
    let b: SuppressBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not a suppression: {e}")))?;
    let until = match (&b.for_, &b.until) {
        (Some(d), None) => crate::duration::from_now(d).map_err(ApiError::bad)?,
        (None, Some(t)) => t
            .parse::<jiff::Timestamp>()
            .map_err(|_| ApiError::bad(format!("`until` `{t}` is not an RFC 3339 time")))?,
        _ => return Err(ApiError::bad("give exactly one of `for` and `until`")),
    };
    let data = api.data.clone();
    let by = caller(&peer);
    let max_days = api.max_suppression_days;
    let s = blocking(
        move || {
            let selector = crate::alerting::suppress::Selector {
                rule: b.rule,
                user: b.user,
                namespace: b.namespace,
                cluster: b.cluster,
            };
            crate::alerting::suppress::add(&data, selector, until, &b.reason, &by, max_days)
        },
        StatusCode::BAD_REQUEST,
    )
    .await?;
    Ok(Json(serde_json::to_value(s).unwrap_or_default()))
}

/// `POST /api/v1/suppressions/{id}/lift`: ends it now, recorded with the caller.
async fn suppression_lift(
    State(api): State<Arc<QueryApi>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Extension(peer): axum::Extension<kubetrail_server::Peer>,
) -> Answer {
    let data = api.data.clone();
    let by = caller(&peer);
    let s = blocking(
        move || crate::alerting::suppress::lift(&data, &id, &by),
        StatusCode::NOT_FOUND,
    )
    .await?;
    Ok(Json(serde_json::to_value(s).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query runtime and an API over an empty store.
    fn api(timeout: Duration) -> (tokio::runtime::Runtime, QueryApi, tempfile::TempDir) {
        let runtime = query_runtime().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let api =
            QueryApi::new(dir.path().to_path_buf(), runtime.handle().clone()).with_timeout(timeout);
        (runtime, api, dir)
    }

    /// Waits (at most 30 s) until `done`.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_client_that_hangs_up_ends_its_query_and_frees_its_slot() {
        let (runtime, api, _dir) = api(Duration::from_secs(3600));
        let _guard = runtime.enter();
        // A query that never ends by itself.
        let job = Job::Sql {
            sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
                .into(),
            limit: 1,
        };
        let (started, answer) = start(&api, Scope::default(), job).unwrap();
        assert_eq!(api.running(), 1);
        // The client hangs up: its handler, and with it the query's handle, is dropped.
        drop((started, answer));
        until("the slot is free", || api.running() == 0);
        until("no task is left", || {
            runtime.metrics().num_alive_tasks() == 0
        });
    }

    /// A data directory whose store holds `n` requests of about 1.5 KB each, one a millisecond.
    fn data_with(n: usize) -> tempfile::TempDir {
        use kubetrail_store::{ColumnarOptions, ColumnarWriter, EventRecord, Wal, WalOptions};
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            fsync: false,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(&dir.path().join("wal"), opts).unwrap();
        let wal = Arc::new(wal);
        let padding = "x".repeat(1200);
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let t = jiff::Timestamp::from_millisecond(1_780_000_000_000 + i as i64).unwrap();
                let id = format!("id-{i:06}");
                let event = format!(
                    r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/pods?{padding}","verb":"list","user":{{"username":"alice"}},"sourceIPs":["10.0.0.1"],"objectRef":{{"resource":"pods","namespace":"ns","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
                );
                let rec = EventRecord {
                    received_us: 1,
                    cluster: "c".into(),
                    source: "test".into(),
                    audit_id: id.into(),
                    stage: "ResponseComplete".into(),
                    variant: "".into(),
                    event: event.into(),
                };
                let mut bytes = Vec::new();
                rec.encode(&mut bytes);
                bytes
            })
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        wal.append(&refs).unwrap();
        ColumnarWriter::open(&dir.path().join("store"), wal, ColumnarOptions::default())
            .unwrap()
            .flush()
            .unwrap();
        dir
    }

    /// `GET path` through the API's router.
    async fn get(api: &QueryApi, path: &str) -> Response {
        use tower::ServiceExt as _;
        let req = Request::get(path).body(Body::empty()).unwrap();
        api.clone().router().oneshot(req).await.unwrap()
    }

    /// The body's chunks as text until its end, and the error that cut it off, if one did.
    async fn read(response: Response) -> (String, Option<String>) {
        use futures::StreamExt as _;
        let mut body = response.into_body().into_data_stream();
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
                Err(e) => return (text, Some(e.to_string())),
            }
        }
        (text, None)
    }

    #[test]
    fn exports_stream_within_the_limits_and_say_how_they_end() {
        let data = data_with(1000);
        let runtime = query_runtime().unwrap();
        let api = QueryApi::new(data.path().to_path_buf(), runtime.handle().clone())
            .with_max_export(600)
            .with_timeout(Duration::from_secs(1));
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        client.block_on(async {
            // The answer starts while the query runs: 900 KB of events cannot all be in flight.
            let response = get(&api, "/api/v1/export").await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(api.running(), 1, "the export was made before it was answered");
            let (text, error) = read(response).await;
            assert_eq!(error, None);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 601);
            assert!(lines[0].contains(r#""auditID":"id-000000""#), "{}", lines[0]);
            assert!(lines[599].contains(r#""auditID":"id-000599""#));
            assert_eq!(
                lines[600],
                r#"{"kubetrail_export":{"requests":600,"truncated":true}}"#
            );
            let (text, error) = read(get(&api, "/api/v1/export?format=csv").await).await;
            assert_eq!(error, None);
            let lines: Vec<&str> = text.split("\r\n").collect();
            assert_eq!(lines.len(), 603, "header, 600 rows, the note and the empty end");
            assert!(lines[0].starts_with("time,audit_id,user"));
            assert!(lines[601].starts_with("# kubetrail export truncated at 600 requests"));
            // Under the limit: all of it and nothing more.
            let (text, _) = read(get(&api, "/api/v1/export?where=auditid%20~%20id-0000*").await).await;
            assert_eq!(text.lines().count(), 100);
            assert!(!text.contains("kubetrail_export"));
            // A client that does not read: the query waits for it, then meets the time limit; the body
            // ends with the error, then is cut off.
            let response = get(&api, "/api/v1/export").await;
            assert_eq!(response.status(), StatusCode::OK);
            until("the export met its time limit", || api.running() == 0);
            let (text, error) = read(response).await;
            assert!(error.is_some(), "{text}");
            assert!(
                text.trim_end().ends_with(
                    r#"{"kubetrail_export":{"error":"the query ran longer than 1 s: narrow it with since/until or a filter"}}"#
                ),
                "{}",
                &text[text.len().saturating_sub(300)..]
            );
            // A client that hangs up: the query ends, and then its slot is free.
            let response = get(&api, "/api/v1/export").await;
            assert_eq!(api.running(), 1);
            drop(response);
        });
        until("the slot is free", || api.running() == 0);
        until("no task is left", || {
            runtime.metrics().num_alive_tasks() == 0
        });
    }

    #[test]
    fn gaps_and_coverage_check_their_parameters_and_answer_reports() {
        let data = data_with(10);
        let runtime = query_runtime().unwrap();
        let api = QueryApi::new(data.path().to_path_buf(), runtime.handle().clone());
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        client.block_on(async {
            let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
            for (path, error) in [
                (
                    "/api/v1/gaps?user=x",
                    "`user` is not a parameter of /api/v1/gaps",
                ),
                (
                    "/api/v1/coverage?where=x",
                    "`where` is not a parameter of /api/v1/coverage",
                ),
                (
                    "/api/v1/gaps?longer_than=often",
                    "`longer_than`: `often` is not a duration",
                ),
                ("/api/v1/gaps?longer_than=500ms", "at least a second"),
                ("/api/v1/coverage?since=1h&until=2h", "the range is empty"),
                (
                    "/api/v1/gaps?since=yesterday",
                    "`since`: `yesterday` is not a time",
                ),
            ] {
                let response = get(&api, path).await;
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
                let (text, _) = read(response).await;
                let message = json(&text)["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(message.contains(error), "{path}: {message}");
            }
            // The store's events were received in 1970 (and happened in 2026): none in the last week.
            let (text, _) = read(get(&api, "/api/v1/gaps?longer_than=1h&cluster=c").await).await;
            let report = json(&text);
            assert!(
                report["title"].as_str().unwrap().starts_with(
                    "gaps longer than 1h in the audit trail: cluster c, events received from "
                ),
                "{report}"
            );
            assert_eq!(
                report["sections"][0]["columns"],
                json!(["cluster", "source", "from", "to", "length", "ongoing"])
            );
            assert_eq!(report["sections"][0]["rows"], json!([]));
            let (text, _) = read(get(&api, "/api/v1/coverage?since=30d").await).await;
            let report = json(&text);
            let keys: Vec<&str> = report["sections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["key"].as_str().unwrap())
                .collect();
            assert_eq!(keys, ["sources", "gaps", "levels", "stages"]);
            assert_eq!(
                report["sections"][0]["note"],
                "no event was received in the range"
            );
            assert!(report["title"].as_str().unwrap().contains("; produced "));
        });
    }

    /// Runs `sql` through the API's limits: the error's status and message.
    fn sql_error(api: &QueryApi, sql: &'static str) -> (StatusCode, String) {
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let job = Job::Sql {
            sql: sql.into(),
            limit: 10,
        };
        let e = client
            .block_on(answer(api, Scope::default(), job))
            .expect_err(sql);
        (
            e.status,
            e.body["error"].as_str().unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn endless_queries_end_at_the_time_limit() {
        let (runtime, api, _dir) = api(Duration::from_secs(2));
        for sql in [
            "SELECT count(*) FROM generate_series(1, 100000000000)",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
            "SELECT max(a.value + b.value) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
        ] {
            let (status, message) = sql_error(&api, sql);
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{sql}: {message}");
            assert!(message.contains("longer than 2 s"), "{message}");
            // Nothing of it runs on: DataFusion's own tasks ended with it, and the slot is free.
            until("no task is left", || {
                runtime.metrics().num_alive_tasks() == 0
            });
            assert_eq!(api.running(), 0);
        }
    }
}
