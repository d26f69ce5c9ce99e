//! The task-shaped reports (`who`, `timeline`, `scope`, `clusters`, and the audit trail's own silences:
//! `gaps` and `coverage`) as data: titled sections of rows, each built from a few queries over an
//! [`Engine`]. The CLI renders them as tables, markdown or JSON lines; the HTTP API serializes them as one
//! JSON object. Both take the same requests, so both answer the same.

use datafusion::common::DataFusionError;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use crate::counts::{Received, ReceivedBucket, Tally};
use crate::{Cell, Engine, EngineError, EventRow, RowQuery, Scope};
use futures::StreamExt;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The request's values do not make a query (the message says which).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A report: titled sections of rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub title: String,
    pub sections: Vec<Section>,
}

/// One section: a table with a note printed after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: String,
    /// `title` in snake case, the section's key in JSON output.
    pub key: String,
    /// Column names as printed (`SOURCE IPS`); JSON keys are [`Section::json_keys`].
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub note: Option<String>,
}

impl Section {
    /// The column names as JSON keys: lowercase, `_` for spaces (`source_ips`).
    pub fn json_keys(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|h| h.to_lowercase().replace(' ', "_"))
            .collect()
    }
}

impl Report {
    pub(crate) fn new(title: String) -> Report {
        Report {
            title,
            sections: Vec::new(),
        }
    }

    pub(crate) fn section(
        &mut self,
        title: &str,
        columns: Vec<&'static str>,
        rows: Vec<Vec<String>>,
        note: Option<String>,
    ) {
        self.sections.push(Section {
            title: title.to_string(),
            key: title.to_lowercase().replace([' ', '/'], "_"),
            columns,
            rows,
            note,
        });
    }

    /// The report as one JSON object: `{"title", "sections": [{"title", "key", "note", "rows": [{column:
    /// value}]}]}`, the columns keyed as [`Section::json_keys`] says.
    pub fn to_json(&self) -> serde_json::Value {
        let sections = self
            .sections
            .iter()
            .map(|s| {
                let keys = s.json_keys();
                let rows: Vec<serde_json::Value> = s
                    .rows
                    .iter()
                    .map(|r| {
                        let obj: serde_json::Map<String, serde_json::Value> = keys
                            .iter()
                            .zip(r)
                            .map(|(k, v)| (k.clone(), v.clone().into()))
                            .collect();
                        obj.into()
                    })
                    .collect();
                serde_json::json!({
                    "title": s.title,
                    "key": s.key,
                    "columns": keys,
                    "rows": rows,
                    "note": s.note,
                })
            })
            .collect::<Vec<_>>();
        serde_json::json!({ "title": self.title, "sections": sections })
    }
}

impl Engine {
    /// The requests matching `predicate` (SQL) in time order, collected.
    pub async fn rows(
        &self,
        predicate: Option<&str>,
        query: RowQuery,
    ) -> Result<Vec<EventRow>, EngineError> {
        let mut out = Vec::new();
        self.requests(predicate, query, |r| {
            out.push(r);
            ControlFlow::Continue(())
        })
        .await?;
        Ok(out)
    }

    /// The rows of a SQL query, with its column names, at most `limit` rows and
    /// [`crate::limits::MAX_ANSWER_BYTES`] of values (a resources error beyond).
    pub async fn sql_rows(
        &self,
        sql: &str,
        limit: Option<usize>,
    ) -> Result<(Vec<String>, Vec<Vec<Cell>>), EngineError> {
        let mut stream = self.stream(sql).await?;
        let names: Vec<String> = stream
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = stream.next().await {
            for row in crate::cells(&batch?)? {
                if limit.is_some_and(|l| out.len() >= l) {
                    return Ok((names, out));
                }
                bytes += row.iter().map(Cell::bytes).sum::<usize>();
                if bytes > crate::limits::MAX_ANSWER_BYTES {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "the answer would exceed {} bytes after {} rows: ask for fewer rows or smaller \
                         values",
                        crate::limits::MAX_ANSWER_BYTES,
                        out.len()
                    ))
                    .into());
                }
                out.push(row);
            }
        }
        Ok((names, out))
    }
}

/// `who VERB RESOURCE[/NAME] [-n NAMESPACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoRequest {
    /// A verb or a glob (`*`).
    pub verb: String,
    /// `pods`, or `pods/web-1` for one object.
    pub resource: String,
    pub namespace: Option<String>,
    /// At most this many requests.
    pub limit: usize,
}

/// `timeline --user U [--credential-id C]`: one identity, one credential of it, or (user empty) whoever
/// presented one credential.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineRequest {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub credential: Option<String>,
}

/// `scope --user U [--credential-id C]`, as [`TimelineRequest`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScopeRequest {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub credential: Option<String>,
}

/// Who a timeline or scope is of: `alice`, `credential JTI=…`, `alice with credential JTI=…`.
fn subject_title(user: &str, credential: Option<&str>) -> String {
    match (user, credential) {
        ("", Some(c)) => format!("credential {c}"),
        (u, Some(c)) => format!("{u} with credential {c}"),
        (u, None) => u.to_string(),
    }
}

/// `clusters`: each cluster's events, as of `now_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClustersRequest {
    /// Now, in microseconds since the epoch: the last hour's rate and how long each cluster has been quiet.
    pub now_us: i64,
}

/// `gaps` (and `coverage`, which asks the same): the silences of each cluster's sources, measured on
/// `received` (the collector's clock, when an event arrived), in the events received between `since` and
/// `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapsRequest {
    /// From this time; from the first event stored when `None`.
    pub since: Option<jiff::Timestamp>,
    /// Up to this time (inclusive); `now_us` when `None`.
    pub until: Option<jiff::Timestamp>,
    /// Only this cluster (all when `None`).
    pub cluster: Option<String>,
    /// A silence is a gap when it is longer than this: [`GapsRequest::DEFAULT_LONGER_THAN`] unless asked, at
    /// least a second.
    pub longer_than: jiff::SignedDuration,
    /// Now, in microseconds since the epoch: the end of a range without `until`, and when the report was
    /// made.
    pub now_us: i64,
}

/// How far before its range a gaps report looks for each source's last event, so that a source silent since
/// before the range (or all through it) is seen as silent, not as absent.
pub const GAPS_LOOKBACK: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// How far past the end of its range a gaps report reads events by their own `time`: an apiserver's clock
/// ahead of the collector's.
const GAPS_CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// The most gaps a report lists (the counts and totals are of all of them).
pub const MAX_GAPS_LISTED: usize = 10_000;

impl GapsRequest {
    /// `detection.silence_after`'s default: a source quiet for longer than five minutes is silent.
    pub const DEFAULT_LONGER_THAN: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

    /// The part of the store to open an [`Engine`] over for this request. The store is partitioned by each
    /// event's `time` (when it happened) and the range is of `received` (when it arrived), which is later:
    /// the scope starts a [`GAPS_LOOKBACK`] before the range (the events before it it reads, and those that
    /// happened before it and arrived in it, such as a collector catching up) and ends an hour after it (an
    /// apiserver's clock ahead). Events that happened more than that before their arrival (an import of
    /// older logs) are not read.
    pub fn scope(&self) -> Scope {
        Scope {
            cluster: self.cluster.clone(),
            since: self
                .since
                .and_then(|t| t.checked_sub(GAPS_LOOKBACK).ok())
                .or(self.since),
            until: self
                .until
                .map(|t| t.checked_add(GAPS_CLOCK_SKEW).unwrap_or(t)),
        }
    }

    /// Refuses what makes no report: a threshold under a second, an empty range.
    pub fn check(&self) -> Result<(), ReportError> {
        if self.longer_than < jiff::SignedDuration::from_secs(1) {
            return Err(ReportError::Invalid(
                "a gap is at least a second long: give `longer_than` as `1s` or more (`5m`)".into(),
            ));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(ReportError::Invalid(format!(
                "the range is empty: `since` ({since}) is not before `until` ({until})"
            )));
        }
        if self.until.is_none()
            && self
                .since
                .is_some_and(|s| s.as_microsecond() >= self.now_us)
        {
            return Err(ReportError::Invalid(
                "the range is empty: `since` is not in the past".into(),
            ));
        }
        Ok(())
    }

    /// The end of the range, in microseconds: never after now (a source is not silent in the future).
    fn end_us(&self) -> i64 {
        self.until
            .map_or(self.now_us, |t| t.as_microsecond().min(self.now_us))
    }

    /// `from X to Y` of the title.
    fn range_text(&self) -> String {
        let since = self
            .since
            .map_or("the first event stored".to_string(), |t| {
                crate::format_time_us(t.as_microsecond())
            });
        let until = match self.until {
            Some(t) => crate::format_time_us(t.as_microsecond()),
            None => format!("now ({})", crate::format_time_us(self.now_us)),
        };
        let cluster = match &self.cluster {
            Some(c) => format!("cluster {c}"),
            None => "every cluster".to_string(),
        };
        format!("{cluster}, events received from {since} to {until}")
    }
}

/// Any of the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRequest {
    Who(WhoRequest),
    Timeline(TimelineRequest),
    Scope(ScopeRequest),
    Clusters(ClustersRequest),
    Gaps(GapsRequest),
    /// The coverage of the range: the same request as `gaps`.
    Coverage(GapsRequest),
    Sessions(crate::history::SessionsRequest),
    Whois(crate::whois::WhoisRequest),
}

/// Builds the report `req` asks for.
pub async fn build(engine: &Engine, req: &ReportRequest) -> Result<Report, ReportError> {
    match req {
        ReportRequest::Who(r) => who(engine, r).await,
        ReportRequest::Timeline(r) => timeline(engine, r).await,
        ReportRequest::Scope(r) => scope(engine, r).await,
        ReportRequest::Clusters(r) => clusters(engine, r).await,
        ReportRequest::Gaps(r) => gaps(engine, r).await,
        ReportRequest::Coverage(r) => coverage(engine, r).await,
        ReportRequest::Sessions(r) => crate::history::sessions(engine, r).await,
        ReportRequest::Whois(r) => crate::whois::whois(engine, r).await,
    }
}

/// A `--where` comparison, quoted so any value stays one value; a glob when the value has `*` or `?`.
fn cmp(field: &str, value: &str) -> String {
    let quoted = format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let op = if value.contains(['*', '?']) { "~" } else { "=" };
    format!("{field} {op} {quoted}")
}

/// A SQL string literal.
pub(crate) fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What an audit level means for what is knowable about a request.
pub fn level_meaning(level: &str) -> &'static str {
    match level {
        "Metadata" => "Metadata: the object body was not recorded",
        "Request" => "Request: the request body was recorded, the response body was not",
        "RequestResponse" => "RequestResponse: request and response bodies were recorded",
        "None" => "None: not audited",
        _ => "unknown level: what was recorded cannot be told",
    }
}

fn outcome(r: &EventRow) -> String {
    let mut s = match r.code {
        Some(c) if c < 400 => format!("{c} ok"),
        Some(c) => format!("{c} failed"),
        None => format!("no response recorded ({})", r.stage),
    };
    if let Some(d) = &r.decision {
        s.push_str(&format!(", authz {d}"));
    }
    s
}

fn identity(r: &EventRow) -> String {
    match &r.impersonated_user {
        Some(u) => format!("{} as {u}", r.user),
        None => r.user.clone(),
    }
}

fn object(r: &EventRow) -> String {
    match (&r.namespace, &r.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (Some(ns), None) => format!("{ns}/*"),
        (None, Some(n)) => n.clone(),
        (None, None) => "*".into(),
    }
}

fn texts(rows: &[Vec<Cell>]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(Cell::text).collect())
        .collect()
}

/// Who made the matching requests: user, groups, impersonation, source IPs, user agent, time, outcome,
/// auditID and what the audit level says about what is knowable.
pub async fn who(engine: &Engine, req: &WhoRequest) -> Result<Report, ReportError> {
    if req.verb.trim().is_empty() || req.resource.trim().is_empty() {
        return Err(ReportError::Invalid(
            "`who` needs a verb and a resource (`delete pods/web-1`)".into(),
        ));
    }
    let (resource, name) = match req.resource.split_once('/') {
        Some((r, n)) if !n.is_empty() => (r.to_string(), Some(n.to_string())),
        _ => (req.resource.trim_end_matches('/').to_string(), None),
    };
    let mut terms = vec![cmp("verb", &req.verb), cmp("resource", &resource)];
    if let Some(n) = &name {
        terms.push(cmp("name", n));
    }
    if let Some(ns) = &req.namespace {
        terms.push(cmp("namespace", ns));
    }
    let predicate = kubetrail_query::parse(&terms.join(" and "))
        .map_err(|e| ReportError::Invalid(e.to_string()))?
        .to_sql();
    let limit = req.limit.max(1);
    let rows = engine
        .rows(
            Some(&predicate),
            RowQuery {
                limit: Some(limit),
                ..RowQuery::default()
            },
        )
        .await?;
    let mut report = Report::new(format!(
        "who {} {}{}",
        req.verb,
        req.resource,
        req.namespace
            .as_ref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default()
    ));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.time(),
                r.cluster.clone(),
                identity(r),
                r.groups.join(","),
                r.source_ips.join(","),
                r.user_agent.clone().unwrap_or_default(),
                format!("{} {}", r.verb, r.resource_path()),
                object(r),
                outcome(r),
                r.audit_id.clone(),
                level_meaning(&r.level).to_string(),
            ]
        })
        .collect();
    let note = if rows.is_empty() {
        Some(match engine.clickhouse {
            Some(_) => "no matching request in the time range; widen since/until?".to_string(),
            None => format!(
                "no matching request in {} file(s) of the time range; widen since/until?",
                engine.files().len(),
            ),
        })
    } else if rows.len() >= limit {
        Some(format!(
            "showing the first {} (raise the limit)",
            rows.len()
        ))
    } else {
        None
    };
    report.section(
        "requests",
        vec![
            "TIME",
            "CLUSTER",
            "USER",
            "GROUPS",
            "SOURCE IPS",
            "USER AGENT",
            "REQUEST",
            "OBJECT",
            "OUTCOME",
            "AUDIT ID",
            "LEVEL",
        ],
        table,
        note,
    );
    Ok(report)
}

/// The requests of an identity (also as impersonated), of one credential of it, or (no user) of one
/// credential whoever presented it.
pub(crate) fn identity_predicate(user: &str, credential: Option<&str>) -> String {
    let mut terms = Vec::new();
    if !user.is_empty() {
        terms.push(format!(
            "(\"user\" = {u} OR \"impersonated_user\" = {u})",
            u = sql_str(user)
        ));
    }
    if let Some(c) = credential {
        terms.push(crate::whois::credential_predicate(c));
    }
    format!("({})", terms.join(" AND "))
}

fn require_user(user: &str, credential: Option<&str>) -> Result<(), ReportError> {
    if credential.is_some_and(|c| c.trim().is_empty()) {
        return Err(ReportError::Invalid(
            "the credential id is empty: give it as whois lists it (JTI=..., X509SHA256=..., an access key id)"
                .into(),
        ));
    }
    if user.trim().is_empty() && credential.is_none() {
        return Err(ReportError::Invalid(
            "give the identity: a username as the apiserver authenticated it, or a credential id"
                .into(),
        ));
    }
    Ok(())
}

/// Everything an identity did (also through impersonation), grouped by resource and verb, with first and
/// last seen, IPs, user agents and failures.
pub async fn timeline(engine: &Engine, req: &TimelineRequest) -> Result<Report, ReportError> {
    require_user(&req.user, req.credential.as_deref())?;
    let sql = format!(
        "SELECT COALESCE(\"resource\" || CASE WHEN \"subresource\" IS NULL THEN '' ELSE '/' || \"subresource\" END, \
         \"uri\") AS res, \"verb\", \
         CASE WHEN \"user\" = {u} THEN '' ELSE 'as this identity, by ' || \"user\" END AS via, \
         min(\"time\") AS first_seen, max(\"time\") AS last_seen, count(DISTINCT \"audit_id\") AS requests, \
         count(DISTINCT CASE WHEN \"code\" >= 400 THEN \"audit_id\" END) AS failures, \
         count(DISTINCT \"namespace\") AS namespaces, \
         array_to_string(array_agg(DISTINCT \"ip\"), ',') AS ips, \
         array_to_string(array_agg(DISTINCT \"user_agent\"), ' | ') AS user_agents \
         FROM events WHERE {pred} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        u = if req.user.is_empty() {
            "\"user\"".to_string()
        } else {
            sql_str(&req.user)
        },
        pred = identity_predicate(&req.user, req.credential.as_deref())
    );
    let (_, rows) = engine.sql_rows(&sql, None).await?;
    let total_failures: u64 = rows
        .iter()
        .filter_map(|r| r.get(6))
        .map(|c| c.text().parse::<u64>().unwrap_or(0))
        .sum();
    let mut report = Report::new(format!(
        "timeline of {}",
        subject_title(&req.user, req.credential.as_deref())
    ));
    let note = if rows.is_empty() {
        "no request by this identity in range".to_string()
    } else {
        format!("{total_failures} failed request(s)")
    };
    report.section(
        "activity by resource and verb",
        vec![
            "RESOURCE",
            "VERB",
            "VIA",
            "FIRST SEEN",
            "LAST SEEN",
            "REQUESTS",
            "FAILURES",
            "NAMESPACES",
            "IPS",
            "USER AGENTS",
        ],
        texts(&rows),
        Some(note),
    );
    let failures = engine
        .rows(
            Some(&format!(
                "{} AND \"code\" >= 400",
                identity_predicate(&req.user, req.credential.as_deref())
            )),
            RowQuery {
                limit: Some(50),
                ..RowQuery::default()
            },
        )
        .await?;
    report.section(
        "failures",
        vec![
            "TIME",
            "CLUSTER",
            "REQUEST",
            "OBJECT",
            "OUTCOME",
            "SOURCE IPS",
            "AUDIT ID",
        ],
        failures
            .iter()
            .map(|r| {
                vec![
                    r.time(),
                    r.cluster.clone(),
                    format!("{} {}", r.verb, r.resource_path()),
                    object(r),
                    outcome(r),
                    r.source_ips.join(","),
                    r.audit_id.clone(),
                ]
            })
            .collect(),
        (failures.len() >= 50).then(|| "the first 50".to_string()),
    );
    Ok(report)
}

/// Kinds whose objects outlive the request that made them: what an attacker leaves behind.
const PERSISTENT: [&str; 12] = [
    "clusterrolebindings",
    "rolebindings",
    "clusterroles",
    "roles",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "cronjobs",
    "daemonsets",
    "deployments",
    "statefulsets",
    "serviceaccounts",
    "secrets",
];

/// The most objects the scope report's "objects changed" lists.
const MAX_CHANGED_OBJECTS: usize = 1000;

/// Privilege flags of a created workload from its recorded body: `None` when the body was not recorded.
fn privilege(event: Option<&str>) -> Option<Vec<&'static str>> {
    let v: serde_json::Value = serde_json::from_str(event?).ok()?;
    v.get("requestObject")?;
    let mut flags = Vec::new();
    for prefix in [
        "requestObject.spec",
        "requestObject.spec.template.spec",
        "requestObject.spec.jobTemplate.spec.template.spec",
    ] {
        for (path, flag) in [
            ("containers.securityContext.privileged", "privileged"),
            ("initContainers.securityContext.privileged", "privileged"),
            ("hostPID", "hostPID"),
            ("hostNetwork", "hostNetwork"),
            ("hostIPC", "hostIPC"),
        ] {
            let full = format!("{prefix}.{path}");
            if kubetrail_query::json_match(&v, &full, kubetrail_query::JsonOp::Eq, &["true"])
                && !flags.contains(&flag)
            {
                flags.push(flag);
            }
        }
        if kubetrail_query::json_match(
            &v,
            &format!("{prefix}.volumes.hostPath.path"),
            kubetrail_query::JsonOp::Glob,
            &["*"],
        ) && !flags.contains(&"hostPath")
        {
            flags.push("hostPath");
        }
    }
    Some(flags)
}

/// For a binding: `subjects -> roleRef` from the recorded body.
fn binding_summary(event: Option<&str>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(event?).ok()?;
    let obj = v.get("requestObject")?;
    let role = obj.get("roleRef")?;
    let subjects: Vec<String> = obj
        .get("subjects")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .map(|s| {
                    let g = |k: &str| s.get(k).and_then(|x| x.as_str()).unwrap_or("");
                    match g("namespace") {
                        "" => format!("{} {}", g("kind"), g("name")),
                        ns => format!("{} {ns}/{}", g("kind"), g("name")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let g = |k: &str| role.get(k).and_then(|x| x.as_str()).unwrap_or("");
    Some(format!(
        "{} -> {} {}",
        subjects.join(", "),
        g("kind"),
        g("name")
    ))
}

const BASIC_COLUMNS: [&str; 8] = [
    "TIME",
    "CLUSTER",
    "USER",
    "REQUEST",
    "OBJECT",
    "OUTCOME",
    "SOURCE IPS",
    "AUDIT ID",
];

fn basic(r: &EventRow) -> Vec<String> {
    vec![
        r.time(),
        r.cluster.clone(),
        identity(r),
        format!("{} {}", r.verb, r.resource_path()),
        object(r),
        outcome(r),
        r.source_ips.join(","),
        r.audit_id.clone(),
    ]
}

fn columns_with(extra: &'static str) -> Vec<&'static str> {
    let mut c = BASIC_COLUMNS.to_vec();
    c.push(extra);
    c
}

/// The clusters whose events the source holds (one collector's, or a fleet's through ClickHouse): events in
/// the scope, first and last, the last hour's count and rate, and how long since the last event.
pub async fn clusters(engine: &Engine, req: &ClustersRequest) -> Result<Report, ReportError> {
    let list = engine.clusters(req.now_us).await?;
    let mut report = Report::new("clusters".into());
    let quiet = |last_us: i64| {
        let secs = (req.now_us - last_us).max(0) / 1_000_000;
        match secs {
            s if s < 120 => format!("{s}s"),
            s if s < 7200 => format!("{}m", s / 60),
            s if s < 172_800 => format!("{}h", s / 3600),
            s => format!("{}d", s / 86_400),
        }
    };
    let rows = list
        .iter()
        .map(|c| {
            vec![
                c.cluster.clone(),
                c.events.to_string(),
                crate::format_time_us(c.first_us),
                crate::format_time_us(c.last_us),
                c.last_hour.to_string(),
                format!("{:.2}", c.last_hour as f64 / 3600.0),
                quiet(c.last_us),
            ]
        })
        .collect();
    report.section(
        "clusters",
        vec![
            "CLUSTER",
            "EVENTS",
            "FIRST",
            "LAST",
            "LAST HOUR",
            "PER SECOND",
            "QUIET FOR",
        ],
        rows,
        Some(
            "EVENTS counts every stored stage in the time range; PER SECOND is the last hour's rate; a cluster \
             quiet for longer than usual may have lost its audit trail (check its apiservers' audit flags)"
                .into(),
        ),
    );
    Ok(report)
}

/// A length of time for people, in whole seconds (rounded down), zero units left out: `45s`, `32m 10s`,
/// `30m`, `2h 5s`, `3d 4h`; `0s` for less than a second.
pub fn human_length(us: i64) -> String {
    let s = us.max(0) / 1_000_000;
    let parts: Vec<String> = [
        (s / 86_400, "d"),
        (s % 86_400 / 3600, "h"),
        (s % 3600 / 60, "m"),
        (s % 60, "s"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, unit)| format!("{n}{unit}"))
    .collect();
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

/// One silence of a source: no event received from `from_us` to `to_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gap {
    from_us: i64,
    to_us: i64,
    /// No event since: the silence runs to the end of the range.
    ongoing: bool,
}

/// What a report knows of one (cluster, source) in the range.
#[derive(Debug, Default)]
struct Trail {
    cluster: String,
    source: String,
    /// Its last event in the [`GAPS_LOOKBACK`] before the range.
    before_us: Option<i64>,
    /// Its first and last event in the range.
    first_us: Option<i64>,
    last_us: Option<i64>,
    events: u64,
    /// Events per clock hour (the hour's number since the epoch) of the range.
    hours: BTreeMap<i64, u64>,
    gaps: Vec<Gap>,
}

const HOUR_US: i64 = 3_600_000_000;

impl Trail {
    /// The silences longer than `longer_us` between buckets of events, in order.
    fn bucket(&mut self, b: &ReceivedBucket, longer_us: i64) {
        if let Some(prev) = self.last_us.or(self.before_us)
            && b.first_us - prev > longer_us
        {
            self.gaps.push(Gap {
                from_us: prev,
                to_us: b.first_us,
                ongoing: false,
            });
        }
        self.first_us = Some(self.first_us.map_or(b.first_us, |f| f.min(b.first_us)));
        self.last_us = Some(self.last_us.map_or(b.last_us, |l| l.max(b.last_us)));
        self.events += b.events;
        // A bucket divides an hour: its events are all of one hour.
        *self
            .hours
            .entry(b.first_us.div_euclid(HOUR_US))
            .or_default() += b.events;
    }

    /// The silence from the last event to `end_us`, when it is longer than `longer_us`.
    fn end(&mut self, end_us: i64, longer_us: i64) {
        if let Some(last) = self.last_us.or(self.before_us)
            && end_us - last > longer_us
        {
            self.gaps.push(Gap {
                from_us: last,
                to_us: end_us,
                ongoing: true,
            });
        }
    }

    fn gap_row(&self, g: &Gap) -> Vec<String> {
        vec![
            self.cluster.clone(),
            source_text(&self.source),
            crate::format_time_us(g.from_us),
            crate::format_time_us(g.to_us),
            human_length(g.to_us - g.from_us),
            if g.ongoing { "yes" } else { "no" }.to_string(),
        ]
    }
}

/// A source as a report shows it: `unknown` where the store does not say (ClickHouse, files of format 1).
fn source_text(source: &str) -> String {
    if source.is_empty() {
        "unknown".to_string()
    } else {
        source.to_string()
    }
}

/// The largest bucket of `received` (a divisor of a minute, in seconds) no longer than `longer_than`: two
/// events of one bucket are less than a bucket apart, so every silence longer than `longer_than` lies
/// between two buckets, and is measured exactly (the next bucket's first event minus the previous one's
/// last); and a bucket never straddles an hour.
fn bucket_secs(longer_than: jiff::SignedDuration) -> i64 {
    const DIVISORS: [i64; 12] = [60, 30, 20, 15, 12, 10, 6, 5, 4, 3, 2, 1];
    let secs = longer_than.as_secs();
    DIVISORS.into_iter().find(|d| *d <= secs).unwrap_or(1)
}

/// The trail of (cluster, source) in `trails`, made when first met.
fn trail<'a>(
    trails: &'a mut BTreeMap<(String, String), Trail>,
    cluster: &str,
    source: &str,
) -> &'a mut Trail {
    trails
        .entry((cluster.to_string(), source.to_string()))
        .or_insert_with(|| Trail {
            cluster: cluster.to_string(),
            source: source.to_string(),
            ..Trail::default()
        })
}

/// Each (cluster, source)'s events received in the range of `req` and its silences longer than
/// `req.longer_than` among them, in (cluster, source) order: a walk over counts per bucket of `received`
/// (never over the events themselves, nor a sort of them). A source that had not started is not silent: the
/// range's start is a gap only for a source that had events in the [`GAPS_LOOKBACK`] before it.
async fn trails(engine: &Engine, req: &GapsRequest) -> Result<Vec<Trail>, ReportError> {
    req.check()?;
    let longer_us = i64::try_from(req.longer_than.as_micros()).unwrap_or(i64::MAX);
    let since_us = req.since.map(|t| t.as_microsecond());
    let end_us = req.end_us();
    let cluster = req.cluster.as_deref();
    let mut trails: BTreeMap<(String, String), Trail> = BTreeMap::new();
    // Each source's last event before the range: the silence it was in when the range began.
    if let Some(since_us) = since_us {
        let lookback = i64::try_from(GAPS_LOOKBACK.as_micros()).unwrap_or(i64::MAX);
        let before = Received {
            cluster,
            since_us: Some(since_us.saturating_sub(lookback)),
            until_us: Some(since_us - 1),
        };
        engine
            .received_buckets(before, HOUR_US, |b| {
                let t = trail(&mut trails, &b.cluster, &b.source);
                t.before_us = Some(t.before_us.map_or(b.last_us, |l| l.max(b.last_us)));
            })
            .await?;
    }
    let range = Received {
        cluster,
        since_us,
        until_us: Some(end_us),
    };
    let size_us = bucket_secs(req.longer_than) * 1_000_000;
    engine
        .received_buckets(range, size_us, |b| {
            trail(&mut trails, &b.cluster, &b.source).bucket(&b, longer_us);
        })
        .await?;
    let mut out: Vec<Trail> = trails.into_values().collect();
    // An import is a load that ended, not a sender that went quiet (its events' own times are judged by
    // `kubetrail detect` over the files).
    for t in out.iter_mut().filter(|t| t.source != "import") {
        t.end(end_us, longer_us);
    }
    Ok(out)
}

const GAP_COLUMNS: [&str; 6] = ["CLUSTER", "SOURCE", "FROM", "TO", "LENGTH", "ONGOING"];

/// The gaps section of `trails`: every gap in (cluster, source, time) order, at most [`MAX_GAPS_LISTED`].
fn gap_section(report: &mut Report, title: &str, trails: &[Trail], longer: &str) {
    let all: Vec<(&Trail, &Gap)> = trails
        .iter()
        .flat_map(|t| t.gaps.iter().map(move |g| (t, g)))
        .collect();
    let rows: Vec<Vec<String>> = all
        .iter()
        .take(MAX_GAPS_LISTED)
        .map(|(t, g)| t.gap_row(g))
        .collect();
    let mut note = format!(
        "a gap is a silence longer than {longer} in the events a source delivered, on the collector's clock \
         (`received`); ONGOING: no event since, to the end of the range; a source that had not started is not \
         silent"
    );
    if all.len() > rows.len() {
        note = format!(
            "showing the first {} of {} gaps (ask for a longer threshold or a shorter range); {note}",
            rows.len(),
            all.len()
        );
    }
    report.section(title, GAP_COLUMNS.to_vec(), rows, Some(note));
}

/// The periods with no event received, per cluster and source: each silence longer than `longer_than`
/// between two events, and the one from the last event to the end of the range (ongoing).
pub async fn gaps(engine: &Engine, req: &GapsRequest) -> Result<Report, ReportError> {
    let trails = trails(engine, req).await?;
    let longer = human_length(i64::try_from(req.longer_than.as_micros()).unwrap_or(i64::MAX));
    let mut report = Report::new(format!(
        "gaps longer than {longer} in the audit trail: {}",
        req.range_text()
    ));
    gap_section(&mut report, "gaps", &trails, &longer);
    Ok(report)
}

/// `part` of `whole` as a percentage with one decimal (`-` of nothing).
fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// What the audit trail of each cluster and source holds in a range, as evidence: first and last event, the
/// hours with events and their share, the gaps (count, total, each listed), events per hour (average, the
/// lowest full hour, the highest), and per cluster the audit levels and stages recorded.
pub async fn coverage(engine: &Engine, req: &GapsRequest) -> Result<Report, ReportError> {
    let trails = trails(engine, req).await?;
    let end_us = req.end_us();
    let longer = human_length(i64::try_from(req.longer_than.as_micros()).unwrap_or(i64::MAX));
    // The range's clock hours: those it overlaps. Without `since`, from the first event's.
    let start_us = req
        .since
        .map(|t| t.as_microsecond())
        .or_else(|| {
            trails
                .iter()
                .filter_map(|t| t.first_us.or(t.before_us))
                .min()
        })
        .unwrap_or(end_us);
    let first_hour = start_us.div_euclid(HOUR_US);
    // The hour holding the range's last microsecond (an end on the hour does not start another).
    let last_hour = (end_us - 1).div_euclid(HOUR_US).max(first_hour);
    let hours = u64::try_from(last_hour - first_hour + 1).unwrap_or(0);
    let mut report = Report::new(format!(
        "coverage of the audit trail: {}; {hours} hour(s), gaps longer than {longer}; produced {}",
        req.range_text(),
        crate::format_time_us(req.now_us)
    ));
    let rows = trails
        .iter()
        .map(|t| {
            let with_events = t
                .hours
                .keys()
                .filter(|h| (first_hour..=last_hour).contains(h))
                .count() as u64;
            // Within the range: a silence that began before it counts from its start.
            let gap_total: i64 = t
                .gaps
                .iter()
                .map(|g| g.to_us - g.from_us.max(start_us))
                .sum();
            // The source's own hours: from the hour of its first event (a source that had not started is not
            // silent), or the whole range for one that was silent all through it.
            let from_hour = t.first_us.map_or(first_hour, |f| {
                f.div_euclid(HOUR_US).clamp(first_hour, last_hour)
            });
            let active = (last_hour - from_hour + 1).max(1);
            // Full hours: wholly inside the range, and after the source's first event.
            let full = (from_hour..=last_hour).filter(|h| {
                h * HOUR_US >= start_us
                    && t.first_us.is_none_or(|f| h * HOUR_US >= f)
                    && (h + 1) * HOUR_US <= end_us + 1
            });
            let lowest = full
                .map(|h| (t.hours.get(&h).copied().unwrap_or(0), h))
                .min_by_key(|(n, h)| (*n, *h));
            let highest = t
                .hours
                .iter()
                .filter(|(h, _)| (first_hour..=last_hour).contains(h))
                .max_by_key(|(h, n)| (**n, -**h));
            let at = |n: u64, h: i64| format!("{n} at {}", crate::format_time_us(h * HOUR_US));
            vec![
                t.cluster.clone(),
                source_text(&t.source),
                t.first_us.map(crate::format_time_us).unwrap_or_default(),
                t.last_us.map(crate::format_time_us).unwrap_or_default(),
                t.events.to_string(),
                hours.to_string(),
                with_events.to_string(),
                share(with_events, hours),
                t.gaps.len().to_string(),
                human_length(gap_total),
                format!("{:.1}", t.events as f64 / active as f64),
                lowest.map_or("-".to_string(), |(n, h)| at(n, h)),
                highest.map_or("-".to_string(), |(h, n)| at(*n, *h)),
            ]
        })
        .collect::<Vec<_>>();
    let note = if rows.is_empty() {
        "no event was received in the range".to_string()
    } else {
        "HOURS are the clock hours (UTC) the range overlaps, WITH EVENTS those in which the source delivered \
         at least one; PER HOUR is the average from the hour of the source's first event (a source that had not \
         started is not silent), LOWEST FULL HOUR the fewest events in an hour wholly inside the range and \
         after that first event, HIGHEST HOUR the most; GAP TOTAL is the gaps' length within the range"
            .to_string()
    };
    report.section(
        "sources",
        vec![
            "CLUSTER",
            "SOURCE",
            "FIRST",
            "LAST",
            "EVENTS",
            "HOURS",
            "WITH EVENTS",
            "SHARE",
            "GAPS",
            "GAP TOTAL",
            "PER HOUR",
            "LOWEST FULL HOUR",
            "HIGHEST HOUR",
        ],
        rows,
        Some(note),
    );
    gap_section(&mut report, "gaps", &trails, &longer);

    let range = Received {
        cluster: req.cluster.as_deref(),
        since_us: req.since.map(|t| t.as_microsecond()),
        until_us: Some(end_us),
    };
    // Per cluster: the levels every policy may record, with their share, and any other value stored.
    let levels = engine.received_tally(range, Tally::Level).await?;
    let clusters: BTreeSet<&str> = levels.iter().map(|(c, _, _)| c.as_str()).collect();
    let mut level_rows = Vec::new();
    for c in &clusters {
        let mine: Vec<&(String, String, u64)> =
            levels.iter().filter(|(lc, _, _)| lc == c).collect();
        let total: u64 = mine.iter().map(|(_, _, n)| n).sum();
        let known = ["Metadata", "Request", "RequestResponse"];
        for level in known {
            let n = mine
                .iter()
                .find(|(_, l, _)| l == level)
                .map_or(0, |(_, _, n)| *n);
            level_rows.push(vec![
                c.to_string(),
                level.to_string(),
                n.to_string(),
                share(n, total),
            ]);
        }
        for (_, l, n) in mine.iter().filter(|(_, l, _)| !known.contains(&l.as_str())) {
            let name = if l.is_empty() { "(none given)" } else { l };
            level_rows.push(vec![
                c.to_string(),
                name.to_string(),
                n.to_string(),
                share(*n, total),
            ]);
        }
    }
    report.section(
        "levels",
        vec!["CLUSTER", "LEVEL", "EVENTS", "SHARE"],
        level_rows,
        Some(
            "level None is never recorded (what a policy drops leaves no event); Metadata records no body, \
             Request the request's, RequestResponse both"
                .into(),
        ),
    );
    let stages = engine.received_tally(range, Tally::Stage).await?;
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for (c, _, n) in &stages {
        *totals.entry(c).or_default() += n;
    }
    let stage_rows = stages
        .iter()
        .map(|(c, st, n)| {
            vec![
                c.clone(),
                st.clone(),
                n.to_string(),
                share(*n, totals.get(c.as_str()).copied().unwrap_or(0)),
            ]
        })
        .collect();
    report.section(
        "stages",
        vec!["CLUSTER", "STAGE", "EVENTS", "SHARE"],
        stage_rows,
        Some(
            "a stage missing here is omitted by the policy (omitStages) or never reached: RequestReceived and \
             ResponseStarted are often omitted; ResponseComplete is the request's outcome"
                .into(),
        ),
    );
    Ok(report)
}

/// The incident responder's first report on a suspect identity: where it came from (and who else used those
/// addresses), secrets read, RBAC changed, workloads created (privileged or not), exec/attach sessions,
/// tokens minted, impersonation, and what it created that still exists as far as the store knows.
pub async fn scope(engine: &Engine, req: &ScopeRequest) -> Result<Report, ReportError> {
    require_user(&req.user, req.credential.as_deref())?;
    let me = identity_predicate(&req.user, req.credential.as_deref());
    let all = RowQuery::default();
    let with_body = RowQuery {
        with_event: true,
        ..RowQuery::default()
    };
    let mut report = Report::new(format!(
        "scope of {}",
        subject_title(&req.user, req.credential.as_deref())
    ));

    // Where it came from: its source IPs, and who else used them.
    let (_, ip_rows) = engine
        .sql_rows(
            &format!(
                "SELECT \"ip\", count(DISTINCT \"audit_id\") AS requests, min(\"time\") AS first_seen, \
                 max(\"time\") AS last_seen FROM events WHERE {me} AND \"ip\" IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
            ),
            None,
        )
        .await?;
    let ips: Vec<String> = ip_rows.iter().map(|r| r[0].text()).collect();
    report.section(
        "source IPs",
        vec!["IP", "REQUESTS", "FIRST SEEN", "LAST SEEN"],
        texts(&ip_rows),
        None,
    );
    let same_ip = if ips.is_empty() {
        "FALSE".to_string()
    } else {
        let list = ips
            .iter()
            .map(|i| sql_str(i))
            .collect::<Vec<_>>()
            .join(", ");
        format!("\"ip\" IN ({list}) AND ({me}) IS NOT TRUE")
    };
    let (_, others) = engine
        .sql_rows(
            &format!(
                "SELECT \"user\", \"ip\", count(DISTINCT \"audit_id\") AS requests, min(\"time\") AS first_seen, \
                 max(\"time\") AS last_seen FROM events WHERE {same_ip} GROUP BY 1, 2 ORDER BY 4"
            ),
            None,
        )
        .await?;
    report.section(
        "other identities from the same source IPs",
        vec!["USER", "IP", "REQUESTS", "FIRST SEEN", "LAST SEEN"],
        texts(&others),
        Some(
            "a stolen credential or a pivot shows up here: review each identity with `kubetrail scope --user`"
                .into(),
        ),
    );

    // Secrets read, by the identity and by anyone else from its addresses.
    let secrets_pred = "\"resource\" = 'secrets' AND \"verb\" IN ('get', 'list', 'watch')";
    let mut secrets: Vec<Vec<String>> = Vec::new();
    for (who_pred, via) in [(&me, "identity"), (&same_ip, "same source IP")] {
        for r in engine
            .rows(Some(&format!("{who_pred} AND {secrets_pred}")), all)
            .await?
        {
            let mut row = basic(&r);
            row.push(via.to_string());
            secrets.push(row);
        }
    }
    report.section("secrets read", columns_with("FOUND BY"), secrets, None);

    // RBAC.
    let rbac = engine
        .rows(
            Some(&format!(
                "{me} AND \"api_group\" = 'rbac.authorization.k8s.io' AND \"verb\" IN ('create', 'update', \
                 'patch', 'delete', 'deletecollection')"
            )),
            with_body,
        )
        .await?;
    report.section(
        "RBAC objects created or changed",
        columns_with("GRANTS"),
        rbac.iter()
            .map(|r| {
                let mut row = basic(r);
                row.push(binding_summary(r.event.as_deref()).unwrap_or_else(|| {
                    if r.level == "Metadata" {
                        "unknown (Metadata: the body was not recorded)".into()
                    } else {
                        String::new()
                    }
                }));
                row
            })
            .collect(),
        None,
    );

    // Workloads.
    let workloads = engine
        .rows(
            Some(&format!(
                "{me} AND \"verb\" = 'create' AND \"subresource\" IS NULL AND \"resource\" IN ('pods', \
                 'deployments', 'daemonsets', 'statefulsets', 'replicasets', 'jobs', 'cronjobs')"
            )),
            with_body,
        )
        .await?;
    report.section(
        "workloads created",
        columns_with("PRIVILEGE"),
        workloads
            .iter()
            .map(|r| {
                let mut row = basic(r);
                row.push(match privilege(r.event.as_deref()) {
                    Some(f) if f.is_empty() => "not privileged".into(),
                    Some(f) => f.join(","),
                    None => "unknown (the body was not recorded)".into(),
                });
                row
            })
            .collect(),
        None,
    );

    // Exec, attach, port-forward: each session with its command and length.
    let sessions = crate::history::sessions(
        engine,
        &crate::history::SessionsRequest {
            user: (!req.user.is_empty()).then(|| req.user.clone()),
            credential: req.credential.clone(),
            namespace: None,
            limit: 1000,
        },
    )
    .await?;
    for mut s in sessions.sections {
        s.title = "exec/attach/port-forward sessions".into();
        s.key = "sessions".into();
        report.sections.push(s);
    }

    // Every object it wrote, with the command that shows each change (`history`).
    let (_, changed) = engine
        .sql_rows(
            &format!(
                "SELECT \"resource\", \"namespace\", \"name\", COALESCE(\"api_group\", '') AS api_group, \
                 count(DISTINCT \"audit_id\") AS writes, \
                 array_to_string(array_agg(DISTINCT \"verb\"), ',') AS verbs, min(\"time\") AS first_seen, \
                 max(\"time\") AS last_seen FROM events WHERE {me} AND \"verb\" IN ('create', 'update', \
                 'patch', 'delete') AND \"name\" IS NOT NULL AND \"resource\" IS NOT NULL \
                 AND COALESCE(\"code\", 0) < 400 \
                 AND NOT regexp_like(\"uri\", '[?&]dryRun=[A-Za-z]+(&|$)') \
                 GROUP BY 1, 2, 3, 4 ORDER BY 7, 1, 2, 3 LIMIT {MAX_CHANGED_OBJECTS}"
            ),
            None,
        )
        .await?;
    let listed = changed.len();
    report.section(
        "objects changed",
        vec![
            "RESOURCE",
            "NAMESPACE",
            "NAME",
            "API GROUP",
            "WRITES",
            "VERBS",
            "FIRST SEEN",
            "LAST SEEN",
            "HISTORY",
        ],
        changed
            .iter()
            .map(|r| {
                let mut row: Vec<String> = r.iter().map(Cell::text).collect();
                let mut verbs: Vec<&str> = row[5].split(',').collect();
                verbs.sort_unstable();
                row[5] = verbs.join(",");
                row.push(kubetrail_history::history_command(
                    &row[0], &row[3], &row[1], &row[2],
                ));
                row
            })
            .collect(),
        Some(if listed >= MAX_CHANGED_OBJECTS {
            format!(
                "the first {MAX_CHANGED_OBJECTS} objects the identity wrote successfully; `kubetrail history` shows \
                 each change"
            )
        } else {
            "every object the identity wrote successfully; `kubetrail history` shows each change, by anyone".into()
        }),
    );

    // Tokens and certificates.
    let tokens = engine
        .rows(
            Some(&format!(
                "{me} AND \"verb\" = 'create' AND ((\"resource\" = 'serviceaccounts' AND \"subresource\" = \
                 'token') OR \"resource\" = 'certificatesigningrequests' OR \"resource\" = 'tokenrequests')"
            )),
            all,
        )
        .await?;
    report.section(
        "tokens minted",
        BASIC_COLUMNS.to_vec(),
        tokens.iter().map(basic).collect(),
        None,
    );

    // Impersonation, both ways.
    let imp = engine
        .rows(
            Some(&format!("\"impersonated_user\" IS NOT NULL AND {me}")),
            RowQuery {
                limit: Some(1000),
                ..RowQuery::default()
            },
        )
        .await?;
    report.section(
        "impersonation",
        BASIC_COLUMNS.to_vec(),
        imp.iter().map(basic).collect(),
        None,
    );

    // What persists: objects it created (successfully) with no later delete in the store.
    let kinds = PERSISTENT
        .iter()
        .map(|k| sql_str(k))
        .collect::<Vec<_>>()
        .join(", ");
    let created = engine
        .rows(
            Some(&format!(
                "{me} AND \"verb\" = 'create' AND \"subresource\" IS NULL AND \"code\" < 400 AND \"resource\" IN ({kinds})"
            )),
            all,
        )
        .await?;
    let key = |r: &EventRow| {
        (
            r.resource.clone().unwrap_or_default(),
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        )
    };
    let mut deleted: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let names: BTreeSet<String> = created.iter().filter_map(|r| r.name.clone()).collect();
    if !names.is_empty() {
        let name_list = names
            .iter()
            .map(|n| sql_str(n))
            .collect::<Vec<_>>()
            .join(", ");
        for r in engine
            .rows(
                Some(&format!(
                    "\"verb\" = 'delete' AND \"code\" < 400 AND \"resource\" IN ({kinds}) AND \"name\" IN ({name_list})"
                )),
                all,
            )
            .await?
        {
            deleted.insert(key(&r), r.time_us);
        }
    }
    let persists: Vec<Vec<String>> = created
        .iter()
        .filter(|r| deleted.get(&key(r)).is_none_or(|t| *t < r.time_us))
        .map(|r| vec![r.resource_path(), object(r), r.time(), r.audit_id.clone()])
        .collect();
    report.section(
        "what persists now",
        vec!["KIND", "OBJECT", "CREATED", "AUDIT ID"],
        persists,
        Some(
            "created by the identity and not deleted since, as far as the store records: check the cluster"
                .into(),
        ),
    );
    Ok(report)
}
