//! RBAC at any moment over the store: a base snapshot ([`Base`], `kubetrail rbac import`) and the RBAC writes
//! recorded after it (create, update, patch, delete of roles, cluster roles and their bindings), replayed in
//! order by [`kubetrail_rbac::State::apply`]. On it: who could make a request at a moment ([`who_can`]), the
//! grants added and removed in a range and by whom ([`diff`]), what one identity was granted and how that
//! changed ([`grants`]), and what it was granted against what it used, with a least-privilege proposal
//! ([`unused`]).
//!
//! The engine must be opened over the base's cluster, from the base's time to the moment asked
//! ([`Base::scope`]): the writes are read in time order, one row per request, with their stored events.

use std::ops::ControlFlow;

use futures::StreamExt;

use kubetrail_rbac::{
    Access, GrantChange, GrantedRule, PolicyRule, Proposal, RbacWrite, Snapshot, State, Subject,
    Uncertain, Used, UserRef, WhoCan,
};
use serde::Serialize;

use crate::reports::{ReportError, sql_str};
use crate::{Engine, EventRow, RowQuery, Scope};
use serde_json::Value;

/// The RBAC writes: the four kinds of `rbac.authorization.k8s.io`, written.
const WRITES: &str = "\"api_group\" = 'rbac.authorization.k8s.io' AND \"resource\" IN ('roles', 'clusterroles', \
     'rolebindings', 'clusterrolebindings') AND \"verb\" IN ('create', 'update', 'patch', 'delete', \
     'deletecollection')";

/// The longest a write is taken to run (kube-apiserver's `--min-request-timeout` default is 30 minutes, and
/// writes end far sooner): writes received this long after one are known to finish after it.
const MAX_WRITE_US: i64 = 30 * 60 * 1_000_000;

/// The most changes a diff or an identity's grants list.
pub const MAX_CHANGES: usize = 10_000;

/// A snapshot of a cluster's RBAC, and when it was taken.
#[derive(Debug, Clone)]
pub struct Base {
    /// The cluster it is of (`None`: the store's every cluster, for a store of one).
    pub cluster: Option<String>,
    /// When it was taken, in microseconds since the epoch.
    pub taken_us: i64,
    pub snapshot: Snapshot,
}

impl Base {
    /// The part of the store to open an engine over to know RBAC at `at_us`: the base's cluster, from when it
    /// was taken to `at_us`.
    pub fn scope(&self, at_us: i64) -> Scope {
        Scope {
            cluster: self.cluster.clone(),
            since: jiff::Timestamp::from_microsecond(self.taken_us).ok(),
            until: jiff::Timestamp::from_microsecond(at_us).ok(),
        }
    }

    /// When it was taken, as RFC 3339.
    pub fn taken(&self) -> String {
        crate::format_time_us(self.taken_us)
    }
}

/// One recorded RBAC write and what it changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub time: String,
    pub audit_id: String,
    pub cluster: String,
    /// Who wrote it.
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    pub source_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `patch RoleBinding "prod/x"`.
    pub write: String,
    pub code: Option<i32>,
    /// The grants it added and removed.
    pub grants: Vec<GrantChange>,
    pub notes: Vec<String>,
    /// Whether it left an object uncertain.
    pub uncertain: bool,
}

/// RBAC as replayed.
#[derive(Debug)]
pub struct Replayed {
    pub state: State,
    /// RBAC writes read (every one, refused and dry runs included).
    pub writes: usize,
    /// The writes from the recording time on that changed a grant or the certainty of an object.
    pub changes: Vec<Change>,
    /// Changes past [`MAX_CHANGES`], not kept.
    pub more: usize,
}

/// Replays the writes the engine holds (open it with [`Base::scope`]) on `base`, keeping the changes of those
/// at or after `record_from_us`.
///
/// Writes are applied in the order they finished (their `ResponseComplete` stage), not the order they were
/// received: a client that sends a grant slowly and a revocation fast has the revocation received last but
/// committed first, and the apiserver ends with the grant. Rows come in receive order, so a write is held
/// until a row received after it finished arrives (every later write finishes later): memory is the writes
/// in flight at once.
pub async fn replay(
    engine: &Engine,
    base: &Base,
    record_from_us: Option<i64>,
) -> Result<Replayed, ReportError> {
    let mut r = Replayer {
        state: State::from_snapshot(&base.snapshot),
        record_from_us,
        writes: 0,
        changes: Vec::new(),
        more: 0,
        held: Vec::new(),
        last: std::collections::HashMap::new(),
    };
    let predicate = format!(
        "{WRITES} AND \"time\" > to_timestamp_micros({})",
        base.taken_us
    );
    engine
        .requests(
            Some(&predicate),
            RowQuery {
                with_event: true,
                ..RowQuery::default()
            },
            |row| {
                r.writes += 1;
                let event = row
                    .event
                    .as_deref()
                    .and_then(kubetrail_history::parse_event)
                    .unwrap_or_default();
                let finished = event
                    .get("stageTimestamp")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map_or(row.time_us, |t| t.as_microsecond().max(row.time_us))
                    // No write runs longer than the apiserver lets a request run: a stage time past that (a
                    // clock jump, a forged event) must not hold every later write in memory.
                    .min(row.time_us.saturating_add(MAX_WRITE_US));
                r.release(row.time_us);
                r.held.push((finished, row, event));
                ControlFlow::Continue(())
            },
        )
        .await?;
    r.release(i64::MAX);
    Ok(Replayed {
        state: r.state,
        writes: r.writes,
        changes: r.changes,
        more: r.more,
    })
}

/// [`replay`]'s state: RBAC as replayed so far, and the writes received but not yet known to be next.
struct Replayer {
    state: State,
    record_from_us: Option<i64>,
    writes: usize,
    changes: Vec<Change>,
    more: usize,
    /// (finished, row, event) of writes received, not applied yet.
    held: Vec<(i64, EventRow, Value)>,
    /// When the last write applied to each object finished, and its auditID.
    last: std::collections::HashMap<kubetrail_rbac::Key, (i64, String)>,
}

impl Replayer {
    /// Applies, in the order they finished, the held writes that finished before `received_us`.
    fn release(&mut self, received_us: i64) {
        self.held
            .sort_by_key(|(finished, row, _)| (*finished, row.time_us));
        let ready = self
            .held
            .partition_point(|(finished, ..)| *finished < received_us);
        let rest = self.held.split_off(ready);
        for (finished, row, event) in std::mem::replace(&mut self.held, rest) {
            self.apply(&row, &event);
            self.overlap(finished, &row);
        }
    }

    /// Two writes to one object in flight at once were ordered by the apiserver, not by when they
    /// finished: the object is uncertain from then on.
    fn overlap(&mut self, finished: i64, row: &EventRow) {
        let (Some(kind), Some(name)) = (
            row.resource
                .as_deref()
                .and_then(kubetrail_rbac::Kind::from_resource),
            row.name.as_deref().filter(|n| !n.is_empty()),
        ) else {
            return;
        };
        if !(200..300).contains(&row.code.unwrap_or(0)) {
            return;
        }
        let key = kubetrail_rbac::Key::new(kind, row.namespace.as_deref().unwrap_or(""), name);
        if let Some((prev_finished, prev_id)) = self.last.get(&key)
            && *prev_finished > row.time_us
        {
            let why = format!(
                "writes {prev_id} and {} were in flight at once: the order the apiserver applied them in is not \
                 recorded",
                row.audit_id
            );
            self.state.mark_uncertain(&key, &row.time(), why);
        }
        self.last.insert(key, (finished, row.audit_id.clone()));
    }

    fn apply(&mut self, row: &EventRow, event: &Value) {
        let time = row.time();
        let w = RbacWrite {
            time: &time,
            audit_id: &row.audit_id,
            user: &row.user,
            impersonated_user: row.impersonated_user.as_deref(),
            source_ips: &row.source_ips,
            user_agent: row.user_agent.as_deref(),
            verb: &row.verb,
            resource: row.resource.as_deref().unwrap_or(""),
            api_group: row.api_group.as_deref(),
            subresource: row.subresource.as_deref(),
            namespace: row.namespace.as_deref(),
            name: row.name.as_deref(),
            uri: &row.uri,
            level: &row.level,
            code: row.code,
            request_object: event.get("requestObject"),
            response_object: event.get("responseObject"),
        };
        let applied = self.state.apply(&w);
        let recorded = self.record_from_us.is_none_or(|from| row.time_us >= from);
        if !recorded || (applied.changes.is_empty() && !applied.became_uncertain) {
            return;
        }
        if self.changes.len() >= MAX_CHANGES {
            self.more += 1;
            return;
        }
        let object = match (&row.namespace, &row.name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            (Some(ns), None) => format!("{ns}/*"),
            (None, None) => "*".into(),
        };
        self.changes.push(Change {
            write: format!(
                "{} {} {object:?}",
                row.verb,
                row.resource.as_deref().unwrap_or("")
            ),
            time,
            audit_id: row.audit_id.clone(),
            cluster: row.cluster.clone(),
            by: row.user.clone(),
            impersonated_user: row.impersonated_user.clone(),
            source_ips: row.source_ips.clone(),
            user_agent: row.user_agent.clone(),
            code: row.code,
            grants: applied.changes,
            notes: applied.notes,
            uncertain: applied.became_uncertain,
        });
    }
}

/// A rule as one line: `get,list secrets [names: a,b]` or `get /healthz`.
pub fn rule_text(rule: &PolicyRule) -> String {
    let verbs = rule.verbs.join(",");
    if !rule.non_resource_urls.is_empty() {
        return format!("{verbs} {}", rule.non_resource_urls.join(","));
    }
    let resources: Vec<String> = rule
        .resources
        .iter()
        .flat_map(|r| {
            rule.api_groups.iter().map(move |g| {
                if g.is_empty() {
                    r.clone()
                } else {
                    format!("{r}.{g}")
                }
            })
        })
        .collect();
    let mut s = format!("{verbs} {}", resources.join(","));
    if !rule.resource_names.is_empty() {
        s.push_str(&format!(" [names: {}]", rule.resource_names.join(",")));
    }
    s
}

/// A subject as the authorizer names it: `User "alice"`, `ServiceAccount "ns/name"`.
pub fn subject_text(s: &Subject) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => format!("ServiceAccount {:?}", format!("{}/{}", s.namespace, s.name)),
        kind => format!("{kind} {:?}", s.name),
    }
}

/// `who-can`'s answer.
#[derive(Debug, Serialize)]
pub struct WhoCanAnswer {
    /// The moment asked.
    pub at: String,
    /// When the base snapshot was taken.
    pub base: String,
    /// RBAC writes replayed on it.
    pub writes: usize,
    pub allowed: Vec<AllowedRow>,
    pub notes: Vec<String>,
    pub uncertain: Vec<Uncertain>,
}

/// One subject allowed.
#[derive(Debug, Serialize)]
pub struct AllowedRow {
    /// The name the apiserver authenticates (a service account's `system:serviceaccount:NS:NAME`).
    pub subject: String,
    pub kind: String,
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub uncertain: bool,
}

fn with_uncertainty(mut notes: Vec<String>, uncertain: &[Uncertain]) -> Vec<String> {
    if !uncertain.is_empty() {
        notes.push(format!(
            "uncertain: {} RBAC object(s) were changed without the change being recorded (logged at Metadata, or a \
             deletecollection); the answer assumes they still grant what they last granted: {}",
            uncertain.len(),
            uncertain
                .iter()
                .take(10)
                .map(|u| format!("{} since {} ({})", u.key, u.since, u.why))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    notes
}

const AUTHORIZERS_NOTE: &str = "RBAC only, as the apiserver's RBAC authorizer and its system:masters bypass decide: \
     other authorizers (Node, webhooks such as EKS access policies) may allow more";

/// Who could make `access` at `at_us` (the engine opened with [`Base::scope`] of `at_us`).
pub async fn who_can(
    engine: &Engine,
    base: &Base,
    access: &Access,
    at_us: i64,
) -> Result<WhoCanAnswer, ReportError> {
    let r = replay(engine, base, Some(i64::MAX)).await?;
    let WhoCan {
        allowed,
        notes,
        uncertain,
    } = r.state.who_can(access);
    let allowed = allowed
        .into_iter()
        .map(|a| AllowedRow {
            subject: a.subject.username(),
            kind: a.subject.kind.clone(),
            why: a.why,
            binding: a.binding.map(|k| k.to_string()),
            role: a.role.map(|k| k.to_string()),
            rule: a.rule.as_ref().map(rule_text),
            uncertain: a.uncertain,
        })
        .collect();
    let mut notes = with_uncertainty(notes, &uncertain);
    notes.push(AUTHORIZERS_NOTE.into());
    Ok(WhoCanAnswer {
        at: crate::format_time_us(at_us),
        base: base.taken(),
        writes: r.writes,
        allowed,
        notes,
        uncertain,
    })
}

/// `rbac diff`'s answer: the grants added and removed from `since` to `until`, write by write.
#[derive(Debug, Serialize)]
pub struct DiffAnswer {
    pub since: String,
    pub until: String,
    pub base: String,
    pub writes: usize,
    pub changes: Vec<Change>,
    pub more: usize,
    pub notes: Vec<String>,
}

/// The grants added and removed from `since_us` to `until_us` (the engine opened with [`Base::scope`] of
/// `until_us`), by whom and from where.
pub async fn diff(
    engine: &Engine,
    base: &Base,
    since_us: i64,
    until_us: i64,
) -> Result<DiffAnswer, ReportError> {
    let mut notes = Vec::new();
    if since_us < base.taken_us {
        notes.push(format!(
            "the range starts before the RBAC snapshot ({}): changes before it are not known (import an older \
             snapshot to see them)",
            base.taken()
        ));
    }
    let since_us = since_us.max(base.taken_us);
    let r = replay(engine, base, Some(since_us)).await?;
    let notes = with_uncertainty(notes, &r.state.uncertain());
    Ok(DiffAnswer {
        since: crate::format_time_us(since_us),
        until: crate::format_time_us(until_us),
        base: base.taken(),
        writes: r.writes,
        changes: r.changes,
        more: r.more,
        notes,
    })
}

/// What an identity was granted at the end of a range, and the changes to its grants in the range.
#[derive(Debug, Serialize)]
pub struct GrantsAnswer {
    pub user: String,
    /// The groups it presented (its last request in the store's range), which its grants include.
    pub groups: Vec<String>,
    pub at: String,
    pub base: String,
    pub grants: Vec<GrantRow>,
    pub changes: Vec<ChangeRow>,
    pub notes: Vec<String>,
}

/// One granted rule.
#[derive(Debug, Serialize)]
pub struct GrantRow {
    pub binding: String,
    pub role: String,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
    pub rule: String,
    /// Why it is uncertain, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertain: Option<String>,
}

/// One grant of the identity added or removed.
#[derive(Debug, Serialize)]
pub struct ChangeRow {
    pub time: String,
    pub audit_id: String,
    pub added: bool,
    pub subject: String,
    pub binding: String,
    pub role: String,
    pub rules: Vec<String>,
    pub by: String,
    pub source_ips: Vec<String>,
}

/// The groups `user` presented: in its last request at or before `at_us`, else in its first after (an
/// engine over the whole store, not the base's range: group membership is not RBAC's); none when it made no
/// request.
pub async fn groups_of(
    engine: &Engine,
    user: &str,
    at_us: i64,
) -> Result<Vec<String>, ReportError> {
    for (cmp, order) in [("<=", "DESC"), (">", "ASC")] {
        let sql = format!(
            "SELECT \"groups\" FROM events WHERE \"user\" = {} AND \"impersonated_user\" IS NULL AND \"time\" {cmp} \
             to_timestamp_micros({at_us}) ORDER BY \"time\" {order} LIMIT 1",
            sql_str(user)
        );
        let mut stream = engine.stream(&sql).await?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(crate::EngineError::from)?;
            if batch.num_rows() > 0 {
                return Ok(crate::list_strings(batch.column(0), 0)?);
            }
        }
    }
    Ok(Vec::new())
}

/// What `user` (with `groups`) was granted at `at_us`, and the changes to its grants from `since_us`.
pub async fn grants(
    engine: &Engine,
    base: &Base,
    user: &UserRef,
    since_us: Option<i64>,
    at_us: i64,
) -> Result<GrantsAnswer, ReportError> {
    let r = replay(engine, base, since_us.or(Some(base.taken_us))).await?;
    let uncertain = r.state.uncertain();
    let why = |keys: [&kubetrail_rbac::Key; 2]| {
        uncertain
            .iter()
            .find(|u| keys.contains(&&u.key))
            .map(|u| format!("{} since {}: {}", u.key, u.since, u.why))
    };
    let grants = r
        .state
        .rules_for(user)
        .into_iter()
        .map(|g: GrantedRule| GrantRow {
            uncertain: why([&g.binding, &g.role]),
            binding: g.binding.to_string(),
            role: g.role.to_string(),
            namespace: g.namespace,
            rule: rule_text(&g.rule),
        })
        .collect();
    let applies =
        |g: &GrantChange| kubetrail_rbac::applies_to(user, &g.subject, &g.binding.namespace);
    let changes = r
        .changes
        .iter()
        .flat_map(|c| {
            c.grants
                .iter()
                .filter(|g| applies(g))
                .map(move |g| ChangeRow {
                    time: c.time.clone(),
                    audit_id: c.audit_id.clone(),
                    added: g.added,
                    subject: subject_text(&g.subject),
                    binding: g.binding.to_string(),
                    role: g.role.to_string(),
                    rules: g.rules.iter().map(rule_text).collect(),
                    by: c.by.clone(),
                    source_ips: c.source_ips.clone(),
                })
        })
        .collect();
    Ok(GrantsAnswer {
        user: user.name.clone(),
        groups: user.groups.clone(),
        at: crate::format_time_us(at_us),
        base: base.taken(),
        grants,
        changes,
        notes: with_uncertainty(Vec::new(), &uncertain),
    })
}

/// What `user` used from `since_us` on: its requests, by what the authorizer decides on, refused ones apart
/// (a request's `RequestReceived` stage says nothing of its outcome and is not read).
pub async fn used(engine: &Engine, user: &str, since_us: i64) -> Result<Vec<Used>, ReportError> {
    let sql = format!(
        "SELECT \"verb\", COALESCE(\"api_group\", ''), COALESCE(\"resource\", ''), COALESCE(\"subresource\", ''), \
         \"namespace\", \"name\", CASE WHEN \"resource\" IS NULL THEN split_part(\"uri\", '?', 1) END, \
         count(DISTINCT \"audit_id\"), CASE WHEN \"decision\" = 'forbid' OR \"code\" = 403 THEN 0 ELSE 1 END \
         FROM events WHERE \"user\" = {u} AND \"impersonated_user\" IS NULL AND \"time\" >= to_timestamp_micros({since_us}) \
         AND \"stage\" <> 'RequestReceived' GROUP BY 1, 2, 3, 4, 5, 6, 7, 9 ORDER BY 8 DESC LIMIT 100000",
        u = sql_str(user)
    );
    let (_, rows) = engine.sql_rows(&sql, None).await?;
    let opt = |c: &crate::Cell| {
        let t = c.text();
        (!t.is_empty()).then_some(t)
    };
    Ok(rows
        .iter()
        .filter(|r| r.len() == 9)
        .map(|r| Used {
            verb: r[0].text(),
            api_group: r[1].text(),
            resource: r[2].text(),
            subresource: r[3].text(),
            namespace: opt(&r[4]),
            name: opt(&r[5]),
            non_resource_url: opt(&r[6]),
            count: r[7].as_i64().unwrap_or(0).max(0) as u64,
            allowed: r[8].as_i64() == Some(1),
        })
        .collect())
}

/// `rbac unused`'s answer.
#[derive(Debug, Serialize)]
pub struct UnusedAnswer {
    pub user: String,
    pub groups: Vec<String>,
    pub since: String,
    pub at: String,
    pub base: String,
    pub proposal: Proposal,
    pub notes: Vec<String>,
}

/// What `user` was granted at `at_us` (`engine` opened with [`Base::scope`]) against what it used from
/// `since_us` (`usage`: an engine over that range), and the least-privilege Roles that would allow exactly
/// what it used.
pub async fn unused(
    engine: &Engine,
    usage: &Engine,
    base: &Base,
    user: &UserRef,
    since_us: i64,
    at_us: i64,
) -> Result<UnusedAnswer, ReportError> {
    let r = replay(engine, base, Some(i64::MAX)).await?;
    let granted = r.state.rules_for(user);
    let used = used(usage, &user.name, since_us).await?;
    let proposal = kubetrail_rbac::propose(user, &granted, &used);
    let mut notes = with_uncertainty(Vec::new(), &r.state.uncertain());
    if used.is_empty() {
        notes.push(format!(
            "{} made no request since {}: every grant is unused",
            user.name,
            crate::format_time_us(since_us)
        ));
    }
    notes.push(
        "granted through groups too: a group's grants are shared with its other members, and removing them is \
         not this identity's alone to decide"
            .into(),
    );
    Ok(UnusedAnswer {
        user: user.name.clone(),
        groups: user.groups.clone(),
        since: crate::format_time_us(since_us),
        at: crate::format_time_us(at_us),
        base: base.taken(),
        proposal,
        notes,
    })
}
