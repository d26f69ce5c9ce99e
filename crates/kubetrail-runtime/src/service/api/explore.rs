//! The reads the web console adds to the query API:
//!
//! - `GET /api/v1/histogram` (`where`, `since`, `until`, `cluster`): requests matching per time bucket,
//!   about 120 buckets of a round size over the range (or over the matches' own span);
//! - `GET /api/v1/export` (the same, plus `format=jsonl|csv`): the matching requests as a download, streamed,
//!   at most [`MAX_EXPORT`] (a last line says when more matched; `kubetrail query` has no limit);
//! - `GET /api/v1/events/{auditID}`: every stored stage of one request;
//! - `GET /api/v1/volume` (`since`, `until`, `cluster`; the last 7 days by default): events and bytes per hour,
//!   the noisy groups at three grains with the None rule `policy simulate` would suggest, the estimated
//!   GB/day and retention footprint, and each sink's lag.
//!
//! Bytes come from the Parquet footers (the `event` column's uncompressed size is the stored JSON's, the
//! file sizes are the store's), so volume never decodes an event.

use std::collections::HashMap;
use std::ops::ControlFlow;

use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use kubetrail_engine::EventRow;
use kubetrail_policy::{NOISY_SHARE, RuleTarget, RuleWho, none_rule};

use super::*;

/// The most requests one export carries.
pub const MAX_EXPORT: usize = 100_000;
/// About how many buckets a histogram has.
const BUCKETS: i64 = 120;
/// Bucket sizes a histogram may use, in seconds.
const BUCKET_SIZES: [i64; 13] = [
    1,
    10,
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    7 * 86_400,
    30 * 86_400,
];
/// Groups of each grain the volume report lists.
const TOP_GROUPS: usize = 10;
/// Distinct (user, verb, resource) groups read before the rest are counted together.
const MAX_GROUP_ROWS: usize = 200_000;
/// The range volume covers when none is given.
const VOLUME_DEFAULT_DAYS: i64 = 7;

fn text(c: &Cell) -> String {
    c.text()
}

/// The round bucket size (seconds) giving at most about [`BUCKETS`] buckets over `span_us`.
fn bucket_seconds(span_us: i64) -> i64 {
    let span = (span_us / 1_000_000).max(1);
    BUCKET_SIZES
        .iter()
        .copied()
        .find(|b| span / b <= BUCKETS)
        .unwrap_or(BUCKET_SIZES[BUCKET_SIZES.len() - 1])
}

/// `GET /api/v1/histogram`: `{"bucket_seconds", "buckets": [[start (RFC 3339), requests]], "total"}`, empty
/// buckets included between the first and last.
pub(super) async fn histogram(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/histogram", &["where"])?;
    let scope = p.scope()?;
    let job = Job::Histogram {
        predicate: where_sql(&p)?,
        since_us: scope.since.map(|t| t.as_microsecond()),
        until_us: scope.until.map(|t| t.as_microsecond()),
    };
    answer(&api, scope, job).await
}

/// The histogram's answer.
pub(super) async fn histogram_answer(
    engine: &Engine,
    predicate: Option<String>,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<u8>, ApiError> {
    let (mut lo, mut hi) = (since_us, until_us);
    if lo.is_none() || hi.is_none() {
        let bounds = engine.time_bounds(predicate.as_deref()).await?;
        lo = lo.or(bounds.map(|b| b.0));
        hi = hi.or(bounds.map(|b| b.1));
    }
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(job::to_json(
            &json!({ "bucket_seconds": 60, "buckets": [], "total": 0 }),
        ));
    };
    // A short or single-point range still gets a readable chart: at least the hour up to its end.
    let lo = if since_us.is_none() {
        lo.min(hi - 3_600_000_000)
    } else {
        lo
    };
    let size = bucket_seconds(hi - lo);
    let size_us = size * 1_000_000;
    let counts: HashMap<i64, i64> = engine
        .counts(predicate.as_deref(), size_us, true)
        .await?
        .into_iter()
        .collect();
    let (first, last) = (lo.div_euclid(size_us), hi.div_euclid(size_us));
    let mut buckets = Vec::new();
    let mut total = 0;
    for b in first..=last {
        let n = counts.get(&b).copied().unwrap_or(0);
        total += n;
        buckets.push(json!([kubetrail_engine::format_time_us(b * size_us), n]));
    }
    Ok(job::to_json(&json!({
        "bucket_seconds": size,
        "buckets": buckets,
        "total": total,
    })))
}

/// The columns of an export's CSV.
const CSV_COLUMNS: [&str; 12] = [
    "time",
    "audit_id",
    "user",
    "verb",
    "resource",
    "namespace",
    "name",
    "source_ip",
    "code",
    "decision",
    "user_agent",
    "cluster",
];

fn csv_row(r: &EventRow) -> String {
    let cells = [
        r.time(),
        r.audit_id.clone(),
        r.user.clone(),
        r.verb.clone(),
        r.resource_path(),
        r.namespace.clone().unwrap_or_default(),
        r.name.clone().unwrap_or_default(),
        r.source_ips.first().cloned().unwrap_or_default(),
        r.code.map(|c| c.to_string()).unwrap_or_default(),
        r.decision.clone().unwrap_or_default(),
        r.user_agent.clone().unwrap_or_default(),
        r.cluster.clone(),
    ];
    let mut line = cells
        .iter()
        .map(|c| crate::text::csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// `GET /api/v1/export`: the matching requests (one per request, its last stage) as JSON lines (the stored
/// events) or CSV (the table's columns), as an attachment, streamed as the query makes them.
///
/// The status is decided before the first byte: an invalid query is 400 like any other. What happens after
/// it can no longer change the status or a header, so the body's end says it: past [`MAX_EXPORT`] requests
/// (or [`QueryApi::with_max_export`]'s limit) a last line says the export was truncated (JSON lines:
/// `{"kubetrail_export":{"truncated":true,"requests":N}}`; CSV: `# kubetrail export truncated at N
/// requests: ...`), and a query that fails or runs out of time midway ends with such a line naming the
/// error, then the response is cut off (no terminating chunk), so no client takes it for a whole file. The
/// export runs within the slot and time limits like any query, in at most a few chunks of memory: rows are
/// sent in chunks of about [`EXPORT_CHUNK`] bytes through a channel of a few chunks, and the query
/// waits while the client does not read.
pub(super) async fn export(State(api): State<Arc<QueryApi>>, req: Request<Body>) -> Response {
    match export_inner(api, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The bytes an export gathers before sending them.
const EXPORT_CHUNK: usize = 64 << 10;

/// The last line of an export that is not all there.
fn export_note(csv: bool, truncated_at: Option<usize>, error: Option<&str>) -> String {
    match (csv, truncated_at, error) {
        (false, Some(n), _) => {
            format!(
                "{}\n",
                json!({ "kubetrail_export": { "truncated": true, "requests": n } })
            )
        }
        (false, None, e) => format!("{}\n", json!({ "kubetrail_export": { "error": e } })),
        (true, Some(n), _) => format!(
            "# kubetrail export truncated at {n} requests: narrow it with since/until or a filter\r\n"
        ),
        (true, None, e) => format!(
            "# kubetrail export failed: {}\r\n",
            e.unwrap_or_default().replace(['\r', '\n'], " ")
        ),
    }
}

async fn export_inner(api: Arc<QueryApi>, req: Request<Body>) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/export", &["where", "format"])?;
    let csv = match p.format.as_deref().unwrap_or("jsonl") {
        "jsonl" | "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::bad(format!(
                "`format` `{other}` is not jsonl or csv"
            )));
        }
    };
    let scope = p.scope()?;
    let job = Job::Export {
        predicate: where_sql(&p)?,
        csv,
        max: api.max_export,
    };
    let note: fn(&str) -> String = if csv {
        |m| export_note(true, None, Some(m))
    } else {
        |m| export_note(false, None, Some(m))
    };
    let body = Streamed::start(&api, scope, job, Some(note)).await?;
    let (kind, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "jsonl")
    };
    Ok((
        [
            (CONTENT_TYPE, kind.to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"kubetrail-export.{ext}\""),
            ),
        ],
        body.into_body(),
    )
        .into_response())
}

/// The export's work: the matching requests, in chunks of about [`EXPORT_CHUNK`] bytes, at most `max` (then
/// the note that says so); stops when nobody reads.
pub(super) async fn export_rows(
    engine: Engine,
    predicate: Option<String>,
    csv: bool,
    max: usize,
    tx: job::Out,
) -> Result<(), ApiError> {
    // What the rows' futures share: the text not sent yet, the requests written, whether more matched.
    let state = Arc::new(std::sync::Mutex::new(ExportState {
        out: if csv {
            format!("{}\r\n", CSV_COLUMNS.join(","))
        } else {
            String::new()
        },
        ..ExportState::default()
    }));
    let query = RowQuery {
        all_stages: false,
        limit: Some(max + 1),
        with_event: !csv,
    };
    engine
        .requests_async(predicate.as_deref(), query, |r| {
            let (state, tx) = (state.clone(), tx.clone());
            async move {
                let chunk = {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    if s.written == max {
                        s.truncated = true;
                        return ControlFlow::Break(());
                    }
                    s.written += 1;
                    if csv {
                        s.out.push_str(&csv_row(&r));
                    } else if let Some(e) = &r.event {
                        s.out.push_str(e);
                        s.out.push('\n');
                    }
                    (s.out.len() >= EXPORT_CHUNK).then(|| std::mem::take(&mut s.out))
                };
                if let Some(chunk) = chunk
                    && tx.send(chunk.into()).await.is_err()
                {
                    // The client is gone: stop.
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
        })
        .await?;
    let rest = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if s.truncated {
            s.out.push_str(&export_note(csv, Some(max), None));
        }
        std::mem::take(&mut s.out)
    };
    if !rest.is_empty() {
        let _ = tx.send(rest.into()).await;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct ExportState {
    out: String,
    written: usize,
    truncated: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventParams {
    since: Option<String>,
    until: Option<String>,
}

/// `GET /api/v1/events/{auditID}[?since=&until=]`: `{"auditID", "stages": [stored events in time order],
/// "more"}`: every stored stage of every request with that auditID (a client chooses its `Audit-ID` header,
/// so several requests can share one), at most [`EVENT_STAGES`], `more` when there are others; 404 when no
/// stage is stored. `since`/`until` (the request's time, as the console knows it) narrow the
/// files read; when nothing is found there, the whole store is searched.
pub(super) async fn event(
    State(api): State<Arc<QueryApi>>,
    axum::extract::Path(audit_id): axum::extract::Path<String>,
    Query(p): Query<EventParams>,
) -> Result<Response, ApiError> {
    if audit_id.is_empty() || audit_id.len() > 256 || audit_id.chars().any(char::is_control) {
        return Err(ApiError::bad("not an auditID"));
    }
    let time = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(crate::duration::parse_time)
            .transpose()
            .map_err(|e| ApiError::bad(format!("`{name}`: {e}")))
    };
    let window = Scope {
        cluster: None,
        since: time("since", &p.since)?,
        until: time("until", &p.until)?,
    };
    // The window first; when nothing is stored there, the whole store.
    let job = Job::Stages {
        audit_id,
        whole_store: window != Scope::default(),
    };
    answer(&api, window, job).await
}

/// Every stored stage of the request(s) with `audit_id`: 404 when there is none.
pub(super) async fn stages(engine: &Engine, audit_id: &str) -> Result<Vec<u8>, ApiError> {
    let predicate = format!("\"audit_id\" = '{}'", audit_id.replace('\'', "''"));
    let query = RowQuery {
        all_stages: true,
        limit: Some(EVENT_STAGES + 1),
        with_event: true,
    };
    let rows = engine.rows(Some(&predicate), query).await?;
    if rows.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no stored event has auditID `{audit_id}`"),
        ));
    }
    let more = rows.len() > EVENT_STAGES;
    let stages = stored_events(rows.into_iter().take(EVENT_STAGES));
    Ok(job::to_json(&StagesAnswer {
        audit_id: audit_id.to_string(),
        stages,
        more,
    }))
}

/// `/api/v1/events/{auditID}`'s answer (the stages as stored: see [`stored_events`]).
#[derive(Debug, serde::Serialize)]
struct StagesAnswer {
    #[serde(rename = "auditID")]
    audit_id: String,
    stages: Vec<Box<RawValue>>,
    more: bool,
}

/// Stages the event view answers at most: a request has four, and a reused auditID is rare; an attacker
/// reusing one many times is still seen (`more`, the alert, the search).
const EVENT_STAGES: usize = 256;

/// One (user, verb, resource) group's count.
#[derive(Debug, Clone)]
struct GroupRow {
    user: String,
    verb: String,
    api_group: String,
    resource: String,
    url: bool,
    events: u64,
}

/// `GET /api/v1/volume`.
pub(super) async fn volume(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only("/api/v1/volume", &[])?;
    let mut scope = p.scope()?;
    if scope.since.is_none() {
        let end = scope.until.unwrap_or_else(jiff::Timestamp::now);
        scope.since = end
            .checked_sub(jiff::SignedDuration::from_hours(24 * VOLUME_DEFAULT_DAYS))
            .ok();
    }
    let data = api.data.clone();
    let retention_days = kubetrail_store::retention::RetentionPolicy::load(&data)
        .map(|r| r.default_days)
        .unwrap_or(kubetrail_store::retention::DEFAULT_DAYS);
    let job = Job::Volume {
        since: scope.since.map(|t| t.to_string()),
        until: scope.until.map(|t| t.to_string()),
        retention_days,
        sinks: sink_status(&data),
    };
    answer(&api, scope, job).await
}

/// The volume report's answer.
pub(super) async fn volume_answer(
    engine: &Engine,
    since: Option<String>,
    until: Option<String>,
    retention_days: u32,
    sinks: Vec<serde_json::Value>,
) -> Result<Vec<u8>, ApiError> {
    // Stored and JSON bytes per hour from the files' footers.
    let mut per_hour: std::collections::BTreeMap<i64, (u64, u64, u64)> = Default::default();
    // A day file's bytes are spread over its date's hours in proportion to their events.
    let mut per_day: HashMap<i64, (u64, u64)> = HashMap::new();
    for f in engine.files() {
        let stats = kubetrail_store::columnar::file_stats(&f.path).unwrap_or_default();
        let hour = f.hour.as_second() / 3600;
        let e = if f.day {
            let d = per_day.entry(hour).or_default();
            (&mut d.0, &mut d.1)
        } else {
            let e = per_hour.entry(hour).or_default();
            (&mut e.1, &mut e.2)
        };
        *e.0 += f.bytes;
        *e.1 += stats.event_bytes;
    }
    for (h, n) in engine.counts(None, 3_600_000_000, false).await? {
        per_hour.entry(h).or_default().0 = n.max(0) as u64;
    }
    for (start, (stored, json)) in per_day {
        let hours: Vec<i64> = (start..start + 24).collect();
        let events: u64 = hours
            .iter()
            .map(|h| per_hour.get(h).map_or(0, |e| e.0))
            .sum();
        for h in hours {
            let e = per_hour.entry(h).or_default();
            let share = if events == 0 {
                1.0 / 24.0
            } else {
                e.0 as f64 / events as f64
            };
            e.1 += (stored as f64 * share).round() as u64;
            e.2 += (json as f64 * share).round() as u64;
        }
    }
    per_hour.retain(|_, e| *e != (0, 0, 0));
    let events: u64 = per_hour.values().map(|v| v.0).sum();
    let stored: u64 = per_hour.values().map(|v| v.1).sum();
    let json_bytes: u64 = per_hour.values().map(|v| v.2).sum();
    let hours: Vec<serde_json::Value> = per_hour
        .iter()
        .map(|(h, (n, stored, json))| {
            json!({
                "hour": kubetrail_engine::format_time_us(h * 3_600_000_000),
                "events": n,
                "stored_bytes": stored,
                "json_bytes": json,
            })
        })
        .collect();
    // Days covered: from the first to the last hour with data (at least one hour).
    let span_hours = match (per_hour.keys().next(), per_hour.keys().next_back()) {
        (Some(a), Some(b)) => (b - a + 1) as f64,
        _ => 0.0,
    };
    let per_day = |bytes: u64| (span_hours > 0.0).then(|| bytes as f64 / span_hours * 24.0 / 1e9);
    let avg_json = if events == 0 {
        0.0
    } else {
        json_bytes as f64 / events as f64
    };

    let sql = "SELECT \"user\", \"verb\", coalesce(\"api_group\", ''), \
                   CASE WHEN \"resource\" IS NULL THEN split_part(\"uri\", '?', 1) \
                   WHEN \"subresource\" IS NULL THEN \"resource\" \
                   ELSE concat(\"resource\", '/', \"subresource\") END, \
                   \"resource\" IS NULL, count(*) AS n FROM events GROUP BY 1, 2, 3, 4, 5 \
                   ORDER BY n DESC";
    let (_, rows) = engine.sql_rows(sql, Some(MAX_GROUP_ROWS)).await?;
    let groups: Vec<GroupRow> = rows
        .iter()
        .map(|r| GroupRow {
            user: text(&r[0]),
            verb: text(&r[1]),
            api_group: text(&r[2]),
            resource: text(&r[3]),
            url: matches!(r[4], Cell::Bool(true)),
            events: Cell::as_i64(&r[5]).unwrap_or(0).max(0) as u64,
        })
        .collect();
    let noisy = noisy_groups(&groups, events, avg_json);
    Ok(job::to_json(&json!({
        "since": since,
        "until": until,
        "events": events,
        "stored_bytes": stored,
        "json_bytes": json_bytes,
        "avg_event_bytes": avg_json.round(),
        "hours": hours,
        "json_gb_per_day": per_day(json_bytes),
        "stored_gb_per_day": per_day(stored),
        "retention_days": retention_days,
        "retention_gb": per_day(stored).map(|d| d * f64::from(retention_days)),
        "noisy_share": NOISY_SHARE,
        "groups": noisy,
        "sinks": sinks,
    })))
}

/// The top groups at each grain (user; user+verb; user+verb+resource), each with its share of the events,
/// whether it is noisy (over [`NOISY_SHARE`]) and, when it is, the None rule that silences it.
fn noisy_groups(rows: &[GroupRow], total: u64, avg_bytes: f64) -> serde_json::Value {
    let share = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    let mut by_user: HashMap<&str, u64> = HashMap::new();
    let mut by_verb: HashMap<(&str, &str), u64> = HashMap::new();
    for r in rows {
        *by_user.entry(&r.user).or_default() += r.events;
        *by_verb.entry((&r.user, &r.verb)).or_default() += r.events;
    }
    let entry = |user: &str, verb: Option<&str>, r: Option<&GroupRow>, n: u64| {
        let s = share(n);
        let target = r.map(|r| {
            if r.url {
                RuleTarget::Url(&r.resource)
            } else {
                RuleTarget::Resource {
                    group: &r.api_group,
                    resource: &r.resource,
                }
            }
        });
        let resource = r.map(|r| {
            if r.url || r.api_group.is_empty() {
                r.resource.clone()
            } else {
                format!("{}.{}", r.resource, r.api_group)
            }
        });
        json!({
            "user": user,
            "verb": verb,
            "resource": resource,
            "events": n,
            "bytes": (n as f64 * avg_bytes).round(),
            "share": s,
            "noisy": s > NOISY_SHARE,
            "suggestion": (s > NOISY_SHARE).then(|| none_rule(RuleWho::User(user), verb, target)),
        })
    };
    let mut users: Vec<(&str, u64)> = by_user.into_iter().collect();
    users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut verbs: Vec<((&str, &str), u64)> = by_verb.into_iter().collect();
    verbs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    json!({
        "user": users.iter().take(TOP_GROUPS).map(|(u, n)| entry(u, None, None, *n)).collect::<Vec<_>>(),
        "user_verb": verbs
            .iter()
            .take(TOP_GROUPS)
            .map(|((u, v), n)| entry(u, Some(v), None, *n))
            .collect::<Vec<_>>(),
        "user_verb_resource": rows
            .iter()
            .take(TOP_GROUPS)
            .map(|r| entry(&r.user, Some(&r.verb), Some(r), r.events))
            .collect::<Vec<_>>(),
    })
}

/// Each sink's status file (`DATA/sinks/<name>.status.json`), as written.
fn sink_status(data: &std::path::Path) -> Vec<serde_json::Value> {
    let Ok(dir) = std::fs::read_dir(data.join("sinks")) else {
        return Vec::new();
    };
    let mut out: Vec<serde_json::Value> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".status.json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by_key(|v: &serde_json::Value| v["name"].as_str().unwrap_or("").to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_round_and_few() {
        assert_eq!(bucket_seconds(0), 1);
        assert_eq!(bucket_seconds(60_000_000), 1);
        assert_eq!(bucket_seconds(3_600_000_000), 60);
        assert_eq!(bucket_seconds(86_400_000_000), 900);
        assert_eq!(bucket_seconds(365 * 86_400_000_000), 7 * 86_400);
    }

    #[test]
    fn groups_over_ten_percent_are_noisy_with_a_rule() {
        let row = |user: &str, verb: &str, resource: &str, events| GroupRow {
            user: user.into(),
            verb: verb.into(),
            api_group: String::new(),
            resource: resource.into(),
            url: false,
            events,
        };
        let rows = vec![
            row("system:kube-controller-manager", "watch", "pods", 80),
            row("alice", "get", "pods", 15),
            row("bob", "get", "pods", 5),
        ];
        let g = noisy_groups(&rows, 100, 1000.0);
        let top = &g["user_verb_resource"][0];
        assert_eq!(top["user"], "system:kube-controller-manager");
        assert_eq!(top["noisy"], true);
        assert_eq!(top["bytes"], 80_000.0);
        let rule = top["suggestion"].as_str().unwrap();
        assert!(rule.contains("level: None") && rule.contains("\"watch\""));
        assert!(rule.contains("resources: [\"pods\"]"));
        let bob = &g["user"][2];
        assert_eq!(bob["user"], "bob");
        assert_eq!(bob["noisy"], false);
        assert!(bob["suggestion"].is_null());
    }
}
