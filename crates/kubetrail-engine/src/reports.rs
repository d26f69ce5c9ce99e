//! The task-shaped reports (`who`, `timeline`, `scope`) as data: titled sections of rows, each built from a
//! few queries over an [`Engine`]. The CLI renders them as tables, markdown or JSON lines; the HTTP API
//! serializes them as one JSON object. Both take the same requests, so both answer the same.

use datafusion::common::DataFusionError;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use crate::{Cell, Engine, EngineError, EventRow, RowQuery};
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
    fn new(title: String) -> Report {
        Report {
            title,
            sections: Vec::new(),
        }
    }

    fn section(
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

/// `timeline --user U`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineRequest {
    pub user: String,
}

/// `scope --user U`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequest {
    pub user: String,
}

/// `clusters`: each cluster's events, as of `now_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClustersRequest {
    /// Now, in microseconds since the epoch: the last hour's rate and how long each cluster has been quiet.
    pub now_us: i64,
}

/// Any of the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRequest {
    Who(WhoRequest),
    Timeline(TimelineRequest),
    Scope(ScopeRequest),
    Clusters(ClustersRequest),
}

/// Builds the report `req` asks for.
pub async fn build(engine: &Engine, req: &ReportRequest) -> Result<Report, ReportError> {
    match req {
        ReportRequest::Who(r) => who(engine, r).await,
        ReportRequest::Timeline(r) => timeline(engine, r).await,
        ReportRequest::Scope(r) => scope(engine, r).await,
        ReportRequest::Clusters(r) => clusters(engine, r).await,
    }
}

/// A `--where` comparison, quoted so any value stays one value; a glob when the value has `*` or `?`.
fn cmp(field: &str, value: &str) -> String {
    let quoted = format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let op = if value.contains(['*', '?']) { "~" } else { "=" };
    format!("{field} {op} {quoted}")
}

/// A SQL string literal.
fn sql_str(s: &str) -> String {
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

fn identity_predicate(user: &str) -> String {
    format!(
        "(\"user\" = {u} OR \"impersonated_user\" = {u})",
        u = sql_str(user)
    )
}

fn require_user(user: &str) -> Result<(), ReportError> {
    if user.trim().is_empty() {
        return Err(ReportError::Invalid(
            "give the identity: a username as the apiserver authenticated it".into(),
        ));
    }
    Ok(())
}

/// Everything an identity did (also through impersonation), grouped by resource and verb, with first and
/// last seen, IPs, user agents and failures.
pub async fn timeline(engine: &Engine, req: &TimelineRequest) -> Result<Report, ReportError> {
    require_user(&req.user)?;
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
        u = sql_str(&req.user),
        pred = identity_predicate(&req.user)
    );
    let (_, rows) = engine.sql_rows(&sql, None).await?;
    let total_failures: u64 = rows
        .iter()
        .filter_map(|r| r.get(6))
        .map(|c| c.text().parse::<u64>().unwrap_or(0))
        .sum();
    let mut report = Report::new(format!("timeline of {}", req.user));
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
                identity_predicate(&req.user)
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

/// The incident responder's first report on a suspect identity: where it came from (and who else used those
/// addresses), secrets read, RBAC changed, workloads created (privileged or not), exec/attach sessions,
/// tokens minted, impersonation, and what it created that still exists as far as the store knows.
pub async fn scope(engine: &Engine, req: &ScopeRequest) -> Result<Report, ReportError> {
    require_user(&req.user)?;
    let me = identity_predicate(&req.user);
    let all = RowQuery::default();
    let with_body = RowQuery {
        with_event: true,
        ..RowQuery::default()
    };
    let mut report = Report::new(format!("scope of {}", req.user));

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

    // Exec, attach, port-forward.
    let sessions = engine
        .rows(
            Some(&format!(
                "{me} AND \"resource\" = 'pods' AND \"subresource\" IN ('exec', 'attach', 'portforward')"
            )),
            all,
        )
        .await?;
    report.section(
        "exec/attach sessions",
        BASIC_COLUMNS.to_vec(),
        sessions.iter().map(basic).collect(),
        None,
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
