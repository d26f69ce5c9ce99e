//! `history`: every request that wrote one object, in order, with what each changed (the create body, a
//! patch's fields, an update's diff against the state known before it), read from the stored events and
//! interpreted by [`kubetrail_history`]; and `sessions`: every exec, attach and port-forward, with its
//! command, terminal, start, end and duration, as a [`Report`].
//!
//! Both read only the requests they are about (the object's name has a bloom filter; sessions are a
//! subresource of `pods`), one row per request, streamed: an object's history is replayed as its rows
//! arrive, and only what it changed is kept.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use kubetrail_history::{Action, FieldChange, PatchType, Replay, Val, Write};
use serde::Serialize;

use crate::reports::{Report, ReportError, sql_str};
use crate::{Engine, EventRow, RowQuery};

/// The most requests a history lists unless asked for fewer.
pub const DEFAULT_HISTORY_LIMIT: usize = 1000;
/// The most requests a history or a session list may be asked for.
pub const MAX_LIMIT: usize = 10_000;
/// The longest value a change shows (longer strings end in `…`; longer objects are shown as their JSON
/// cut there): a changed ConfigMap of megabytes must not make the answer megabytes.
const MAX_VALUE_CHARS: usize = 2000;

/// Short names and singulars of the common kinds, as `kubectl` takes them, to their resource.
const ALIASES: [(&str, &str); 44] = [
    ("po", "pods"),
    ("pod", "pods"),
    ("deploy", "deployments"),
    ("deployment", "deployments"),
    ("rs", "replicasets"),
    ("replicaset", "replicasets"),
    ("sts", "statefulsets"),
    ("statefulset", "statefulsets"),
    ("ds", "daemonsets"),
    ("daemonset", "daemonsets"),
    ("job", "jobs"),
    ("cj", "cronjobs"),
    ("cronjob", "cronjobs"),
    ("svc", "services"),
    ("service", "services"),
    ("cm", "configmaps"),
    ("configmap", "configmaps"),
    ("secret", "secrets"),
    ("sa", "serviceaccounts"),
    ("serviceaccount", "serviceaccounts"),
    ("ns", "namespaces"),
    ("namespace", "namespaces"),
    ("no", "nodes"),
    ("node", "nodes"),
    ("ing", "ingresses"),
    ("ingress", "ingresses"),
    ("netpol", "networkpolicies"),
    ("networkpolicy", "networkpolicies"),
    ("pvc", "persistentvolumeclaims"),
    ("persistentvolumeclaim", "persistentvolumeclaims"),
    ("pv", "persistentvolumes"),
    ("persistentvolume", "persistentvolumes"),
    ("role", "roles"),
    ("rolebinding", "rolebindings"),
    ("clusterrole", "clusterroles"),
    ("clusterrolebinding", "clusterrolebindings"),
    ("crd", "customresourcedefinitions"),
    ("customresourcedefinition", "customresourcedefinitions"),
    (
        "mutatingwebhookconfiguration",
        "mutatingwebhookconfigurations",
    ),
    (
        "validatingwebhookconfiguration",
        "validatingwebhookconfigurations",
    ),
    ("hpa", "horizontalpodautoscalers"),
    ("pdb", "poddisruptionbudgets"),
    ("lease", "leases"),
    ("ep", "endpoints"),
];

/// The resource and API group `kind` names: a plural resource as is, a `kubectl` short name or singular
/// of a common kind as its resource; a group after the first dot (`services.serving.knative.dev`); without
/// one, the built-in kind's group (`deployments`: `apps`), or `None` for a plural no built-in kind has.
pub fn resource_name(kind: &str) -> (String, Option<String>) {
    let kind = kind.trim().to_ascii_lowercase();
    let (base, group) = match kind.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (kind, None),
    };
    let resource = ALIASES
        .iter()
        .find(|(alias, _)| *alias == base)
        .map_or(base, |(_, r)| r.to_string());
    let group = group.or_else(|| kubetrail_history::builtin_group(&resource).map(String::from));
    (resource, group)
}

/// `history RESOURCE/NAME [-n NAMESPACE]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HistoryRequest {
    /// The resource (`deployments`; short names and singulars are taken, see [`resource_name`]).
    pub resource: String,
    /// Its API group (`""`: the core group); `None`: any (a plural no built-in kind has, given without
    /// its group), each group's object replayed on its own.
    pub group: Option<String>,
    pub name: String,
    /// `None` for a cluster-scoped object (and for an object of any namespace: then each namespace's object
    /// is replayed on its own).
    pub namespace: Option<String>,
    /// At most this many requests, the first ones in time.
    pub limit: usize,
    /// Also the writes of its `status` subresource (controllers reporting progress: many, and rarely what a
    /// responder looks for; counted and left out otherwise).
    pub with_status: bool,
}

impl HistoryRequest {
    /// `RESOURCE/NAME`, as the CLI and API take it.
    pub fn parse(
        object: &str,
        namespace: Option<String>,
        limit: usize,
    ) -> Result<HistoryRequest, ReportError> {
        let Some((kind, name)) = object.split_once('/') else {
            return Err(ReportError::Invalid(format!(
                "`{object}` names no object: give RESOURCE/NAME (`deployments/payments-api`)"
            )));
        };
        let (resource, group) = resource_name(kind);
        if resource.is_empty() || name.trim().is_empty() || name.contains('/') {
            return Err(ReportError::Invalid(format!(
                "`{object}` names no object: give RESOURCE/NAME (`deployments/payments-api`)"
            )));
        }
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ReportError::Invalid(format!(
                "the limit is 1 to {MAX_LIMIT} requests, not {limit}"
            )));
        }
        Ok(HistoryRequest {
            resource,
            group,
            name: name.trim().to_string(),
            namespace: namespace.filter(|n| !n.is_empty()),
            limit,
            with_status: false,
        })
    }

    /// The object as `kubectl` names it: `deployments/payments-api -n prod`, the group written out when it
    /// is not the built-in kind's (`services.serving.knative.dev/api`).
    pub fn object(&self) -> String {
        let kind = match self.group.as_deref() {
            Some(g)
                if !g.is_empty() && kubetrail_history::builtin_group(&self.resource) != Some(g) =>
            {
                format!("{}.{g}", self.resource)
            }
            _ => self.resource.clone(),
        };
        match &self.namespace {
            Some(ns) => format!("{kind}/{} -n {ns}", self.name),
            None => format!("{kind}/{}", self.name),
        }
    }
}

/// One object's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// `deployments/payments-api -n prod`.
    pub object: String,
    pub resource: String,
    pub name: String,
    pub namespace: Option<String>,
    /// The requests that wrote it, in time order.
    pub entries: Vec<Entry>,
    /// More requests are stored than the limit let through.
    pub truncated: bool,
    /// What the reader must know about the whole answer (nothing found, a limit).
    pub notes: Vec<String>,
}

/// One request that wrote the object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub time: String,
    pub cluster: String,
    pub namespace: Option<String>,
    pub user: String,
    pub impersonated_user: Option<String>,
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
    pub api_group: Option<String>,
    pub verb: String,
    pub subresource: Option<String>,
    pub code: Option<i32>,
    pub level: String,
    pub audit_id: String,
    pub action: Action,
    pub patch: Option<PatchType>,
    pub patch_assumed: bool,
    /// Whether each change's `before` comes from a state recorded earlier.
    pub before_known: bool,
    pub changes: Vec<FieldChange>,
    /// Changes not listed (past the cap of one request's).
    pub more: usize,
    pub notes: Vec<String>,
}

impl Entry {
    /// `mallory@corp.example (as admin)` and where from: `from 203.0.113.9 (kubectl/v1.30)`.
    pub fn who(&self) -> String {
        let mut s = match &self.impersonated_user {
            Some(u) => format!("{} as {u}", self.user),
            None => self.user.clone(),
        };
        if !self.source_ips.is_empty() {
            s.push_str(&format!(" from {}", self.source_ips.join(",")));
        }
        s
    }

    /// `patch` (`patch deployments/scale`), with the patch type when known.
    pub fn request(&self) -> String {
        let mut s = self.verb.clone();
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" ({sub})"));
        }
        if let Some(p) = self.patch {
            s.push_str(&format!(
                ", {}{}",
                p.as_str(),
                if self.patch_assumed {
                    " (inferred)"
                } else {
                    ""
                }
            ));
        }
        s
    }
}

/// A value shown at most [`MAX_VALUE_CHARS`] long: a longer string (or object, as its JSON text) as its head
/// and tail around `…` with its length, so what follows padding is still seen.
fn clip(v: Val) -> Val {
    let cut = |s: &str| {
        let (text, _) = kubetrail_history::diff::head_tail(s, MAX_VALUE_CHARS);
        Val::Value(serde_json::Value::String(format!(
            "{text} ({} characters)",
            s.chars().count()
        )))
    };
    match v {
        Val::Value(serde_json::Value::String(s)) if s.chars().count() > MAX_VALUE_CHARS => cut(&s),
        Val::Value(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
            let text = v.to_string();
            if text.chars().count() > MAX_VALUE_CHARS {
                cut(&text)
            } else {
                Val::Value(v)
            }
        }
        v => v,
    }
}

/// The body under `key` of a stored event, when recorded.
fn body<'a>(event: Option<&'a serde_json::Value>, key: &str) -> Option<&'a serde_json::Value> {
    event?.get(key).filter(|v| !v.is_null())
}

/// Every request that wrote the object of `req`, replayed in order (per cluster and namespace: an object's
/// name is only unique there).
pub async fn history(engine: &Engine, req: &HistoryRequest) -> Result<History, ReportError> {
    let mut ns = match &req.namespace {
        Some(ns) => format!("\"namespace\" = {}", sql_str(ns)),
        None => "TRUE".to_string(),
    };
    // The group too: a custom resource may share a built-in plural (Knative's `services`).
    if let Some(g) = &req.group {
        ns.push_str(&format!(
            " AND COALESCE(\"api_group\", '') = {}",
            sql_str(g)
        ));
    }
    let object = format!(
        "\"resource\" = {r} AND {ns} AND \"name\" = {n} AND \"verb\" IN ('create', 'update', 'patch', 'delete')",
        r = sql_str(&req.resource),
        n = sql_str(&req.name),
    );
    let status = if req.with_status {
        "TRUE"
    } else {
        "(\"subresource\" IS NULL OR \"subresource\" <> 'status')"
    };
    let predicate = format!(
        "({object} AND {status}) OR (\"resource\" = {r} AND {ns} AND \"verb\" = 'deletecollection' AND \
         \"name\" IS NULL AND \"subresource\" IS NULL)",
        r = sql_str(&req.resource),
    );
    let mut replays: BTreeMap<(String, Option<String>, String), Replay> = BTreeMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut truncated = false;
    let mut too_big = false;
    let mut bytes = 0usize;
    let limit = req.limit.clamp(1, MAX_LIMIT);
    let mut failure: Option<ReportError> = None;
    engine
        .requests(
            Some(&predicate),
            RowQuery {
                with_event: true,
                limit: Some(limit + 1),
                ..RowQuery::default()
            },
            |row| {
                if entries.len() >= limit {
                    truncated = true;
                    return ControlFlow::Break(());
                }
                match entry(&mut replays, row) {
                    Ok(Some(e)) => {
                        // The answer's size: a flood of big changes must not make it unbounded.
                        bytes += serde_json::to_vec(&e).map_or(0, |v| v.len());
                        entries.push(e);
                        if bytes > crate::limits::MAX_ANSWER_BYTES {
                            truncated = true;
                            too_big = true;
                            return ControlFlow::Break(());
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            },
        )
        .await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let mut notes = Vec::new();
    let groups: std::collections::BTreeSet<&str> =
        replays.keys().map(|(_, _, g)| g.as_str()).collect();
    if groups.len() > 1 {
        notes.push(format!(
            "objects of {} API groups share this name ({}): each is replayed on its own; give \
             RESOURCE.GROUP/NAME for one",
            groups.len(),
            groups
                .iter()
                .map(|g| if g.is_empty() { "core" } else { g })
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if entries.is_empty() {
        notes.push(format!(
            "no write of {} is stored in the time range: widen since/until, or check the name and \
             namespace (`kubetrail who '*' {}/{}`)",
            req.object(),
            req.resource,
            req.name
        ));
    } else if entries.first().is_some_and(|e| e.action != Action::Created) && !truncated {
        notes.push(
            "its creation is not in the time range, or it was created with generateName (the create request \
             does not carry the name it got): the first writes are compared with no earlier state"
                .to_string(),
        );
    }
    if !entries.is_empty() && entries.iter().all(|e| e.level == "Metadata") {
        notes.push(
            "every write was logged at Metadata: who and when are known, what changed is not (the audit \
             policy records this kind without bodies; `kubetrail policy lint`)"
                .to_string(),
        );
    }
    if too_big {
        notes.push(format!(
            "showing the first {} writes, {} MiB of changes: narrow since/until",
            entries.len(),
            crate::limits::MAX_ANSWER_BYTES >> 20
        ));
    } else if truncated {
        notes.push(format!(
            "showing the first {limit} writes: narrow since/until or raise the limit"
        ));
    }
    if !req.with_status {
        let (_, rows) = engine
            .sql_rows(
                &format!(
                    "SELECT count(DISTINCT \"audit_id\") FROM events WHERE {object} AND \"subresource\" = 'status'"
                ),
                None,
            )
            .await?;
        let n = rows
            .first()
            .and_then(|r| r.first())
            .and_then(|c| c.as_i64())
            .unwrap_or(0);
        if n > 0 {
            notes.push(format!(
                "{n} write(s) of its status (controllers reporting progress) not shown: ask with status \
                 (`--with-status`)"
            ));
        }
    }
    Ok(History {
        object: req.object(),
        resource: req.resource.clone(),
        name: req.name.clone(),
        namespace: req.namespace.clone(),
        entries,
        truncated,
        notes,
    })
}

/// The entry of one stored request, replayed on its object's state.
fn entry(
    replays: &mut BTreeMap<(String, Option<String>, String), Replay>,
    row: EventRow,
) -> Result<Option<Entry>, ReportError> {
    let event: Option<serde_json::Value> = row
        .event
        .as_deref()
        .and_then(kubetrail_history::parse_event);
    let key = (
        row.cluster.clone(),
        row.namespace.clone(),
        row.api_group.clone().unwrap_or_default(),
    );
    let replay = replays.entry(key).or_default();
    let collection = row.verb == "deletecollection";
    let step = if collection {
        // A delete of every object of the kind in the namespace (or those its selector matched): this one
        // may be among them. What it deleted is not in the event.
        None
    } else {
        let write = Write {
            verb: &row.verb,
            subresource: row.subresource.as_deref(),
            api_group: row.api_group.as_deref(),
            resource: row.resource.as_deref().unwrap_or(""),
            uri: &row.uri,
            level: &row.level,
            code: row.code,
            request_object: body(event.as_ref(), "requestObject"),
            response_object: body(event.as_ref(), "responseObject"),
        };
        Some(replay.step(&write))
    };
    let (action, patch, patch_assumed, before_known, changes, more, notes) = match step {
        Some(s) => (
            s.action,
            s.patch,
            s.patch_assumed,
            s.before_known,
            s.changes,
            s.more,
            s.notes,
        ),
        None => (
            Action::Deleted,
            None,
            false,
            false,
            Vec::new(),
            0,
            vec![format!(
                "a deletecollection of {} in the namespace{}: this object may have been among those deleted",
                row.resource.as_deref().unwrap_or("the kind"),
                match row.code {
                    Some(c) if c >= 400 => format!(" (refused, {c})"),
                    _ => String::new(),
                }
            )],
        ),
    };
    let changes = changes
        .into_iter()
        .map(|c| FieldChange {
            path: c.path,
            before: clip(c.before),
            after: clip(c.after),
        })
        .collect();
    Ok(Some(Entry {
        time: row.time(),
        cluster: row.cluster,
        namespace: row.namespace,
        user: row.user,
        impersonated_user: row.impersonated_user,
        source_ips: row.source_ips,
        user_agent: row.user_agent,
        api_group: row.api_group,
        verb: row.verb,
        subresource: row.subresource,
        code: row.code,
        level: row.level,
        audit_id: row.audit_id,
        action,
        patch,
        patch_assumed,
        before_known,
        changes,
        more,
        notes,
    }))
}

/// `sessions [--user U] [-n NAMESPACE]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct SessionsRequest {
    pub user: Option<String>,
    /// Only sessions opened with this credential (`JTI=…`, `X509SHA256=…`, an access key id).
    #[serde(default)]
    pub credential: Option<String>,
    pub namespace: Option<String>,
    /// At most this many sessions, the first ones in time.
    pub limit: usize,
}

/// The columns of the sessions section.
const SESSION_COLUMNS: [&str; 17] = [
    "START",
    "END",
    "DURATION",
    "CLUSTER",
    "USER",
    "AS",
    "SOURCE IPS",
    "USER AGENT",
    "KIND",
    "POD",
    "CONTAINER",
    "COMMAND",
    "STDIN",
    "TTY",
    "OUTCOME",
    "AUDIT ID",
    "NOTE",
];

/// Every exec, attach and port-forward (by `req.user`, in `req.namespace`) as a session: its pod and
/// container, its command, whether it had stdin and a terminal, who and from where, its start (the
/// request's receipt), end (its `ResponseComplete` stage: when the stream closed) and duration, and its
/// outcome.
pub async fn sessions(engine: &Engine, req: &SessionsRequest) -> Result<Report, ReportError> {
    if req.limit == 0 || req.limit > MAX_LIMIT {
        return Err(ReportError::Invalid(format!(
            "the limit is 1 to {MAX_LIMIT} sessions, not {}",
            req.limit
        )));
    }
    let limit = req.limit;
    // Through the pod, or straight on its node's kubelet (`nodes/proxy`, which skips the pod's own
    // authorization: the exec an attacker with node access would choose).
    let mut terms = vec![
        "((\"resource\" = 'pods' AND \"subresource\" IN ('exec', 'attach', 'portforward')) OR \
         (\"resource\" = 'nodes' AND \"subresource\" = 'proxy' AND \
         regexp_like(\"uri\", 'proxy[^?]*(%|/\\.|exec|run|attach|portforward)', 'i')))"
            .to_string(),
    ];
    if let Some(u) = &req.user {
        terms.push(format!(
            "(\"user\" = {u} OR \"impersonated_user\" = {u})",
            u = sql_str(u)
        ));
    }
    if let Some(c) = &req.credential {
        terms.push(crate::whois::credential_predicate(c));
    }
    if let Some(ns) = &req.namespace {
        // A node's proxy names the namespace in its path: checked once parsed.
        terms.push(format!(
            "(\"namespace\" = {} OR \"resource\" = 'nodes')",
            sql_str(ns)
        ));
    }
    let predicate = terms.join(" AND ");
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut truncated;
    // The limit is of sessions: a proxied path the SQL keeps may be no session (`/proxy/exec-not`), and a
    // flood of them must not use up the limit. Read with the limit first (the usual case: none is refused,
    // and the engine keeps only the first rows); when refused rows filled it, read again without one.
    let mut fetch = Some(limit + 1);
    loop {
        rows.clear();
        truncated = false;
        let (mut handed, mut refused) = (0usize, 0usize);
        engine
            .requests(
                Some(&predicate),
                RowQuery {
                    with_event: true,
                    limit: fetch,
                    ..RowQuery::default()
                },
                |row| {
                    handed += 1;
                    let proxied = row.resource.as_deref() == Some("nodes");
                    let reached = proxied
                        .then(|| kubetrail_history::session::parse_node_proxy(&row.uri))
                        .flatten();
                    if proxied
                        && (reached.is_none()
                            || req
                                .namespace
                                .as_ref()
                                .is_some_and(|ns| reached.as_ref().is_some_and(|(n, ..)| n != ns)))
                    {
                        refused += 1;
                        return ControlFlow::Continue(());
                    }
                    if rows.len() >= limit {
                        truncated = true;
                        return ControlFlow::Break(());
                    }
                    rows.push(session_row(&row));
                    ControlFlow::Continue(())
                },
            )
            .await?;
        let cut = fetch.is_some_and(|n| handed >= n);
        if refused == 0 || !cut || truncated || fetch.is_none() {
            break;
        }
        fetch = None;
    }
    let mut title = "sessions".to_string();
    if let Some(u) = &req.user {
        title.push_str(&format!(" of {u}"));
    }
    if let Some(ns) = &req.namespace {
        title.push_str(&format!(" in namespace {ns}"));
    }
    let note = if rows.is_empty() {
        Some("no exec, attach or port-forward in the time range".to_string())
    } else if truncated {
        Some(format!(
            "showing the first {limit}: narrow since/until or raise the limit"
        ))
    } else {
        Some(
            "START is when the apiserver received the request, END its ResponseComplete stage (the stream \
             closed); the command is as the client sent it, passwords redacted"
                .to_string(),
        )
    };
    let mut report = Report {
        title,
        sections: Vec::new(),
    };
    report.sections.push(crate::reports::Section {
        title: "sessions".into(),
        key: "sessions".into(),
        columns: SESSION_COLUMNS.to_vec(),
        rows,
        note,
    });
    Ok(report)
}

/// One session's row.
fn session_row(row: &EventRow) -> Vec<String> {
    let event: Option<serde_json::Value> = row
        .event
        .as_deref()
        .and_then(kubetrail_history::parse_event);
    let proxied = (row.resource.as_deref() == Some("nodes"))
        .then(|| kubetrail_history::session::parse_node_proxy(&row.uri))
        .flatten();
    let session = match &proxied {
        Some((.., s)) => Some(s.clone()),
        None => row
            .subresource
            .as_deref()
            .and_then(|s| kubetrail_history::session::parse(s, &row.uri)),
    };
    let end_us = event
        .as_ref()
        .and_then(|e| e.get("stageTimestamp"))
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_microsecond());
    let complete = row.stage == "ResponseComplete";
    let (end, duration, mut note) = match end_us {
        Some(end) if complete => (
            crate::format_time_us(end),
            crate::reports::human_length(end - row.time_us),
            String::new(),
        ),
        _ => (
            String::new(),
            String::new(),
            format!(
                "no end recorded (latest stage {}): still open, or the policy omits ResponseComplete",
                row.stage
            ),
        ),
    };
    let (kind, container, command, stdin, tty) = match &session {
        Some(s) => (
            match s.kind {
                kubetrail_history::SessionKind::Exec => "exec",
                kubetrail_history::SessionKind::Attach => "attach",
                kubetrail_history::SessionKind::PortForward => "portforward",
            }
            .to_string(),
            s.container.clone().unwrap_or_default(),
            if s.kind == kubetrail_history::SessionKind::PortForward {
                s.ports
                    .iter()
                    .map(|p| format!("port {p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                s.command_line()
            },
            yes_no(s.stdin),
            yes_no(s.tty),
        ),
        None => (
            row.subresource.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ),
    };
    if let Some(s) = session.as_ref().filter(|s| s.dropped > 0) {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&format!(
            "{} query pair(s) the apiserver ignores (a `;` or a bad escape) left out of the command",
            s.dropped
        ));
    }
    if command.is_empty() && kind == "exec" {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str("no command in the request URI");
    }
    let pod = match (&proxied, &row.namespace, &row.name) {
        (Some((ns, pod, _)), ..) => {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&format!(
                "straight on the kubelet of node {} (nodes/proxy): not authorized or audited as the pod's exec",
                row.name.as_deref().unwrap_or("?")
            ));
            format!("{ns}/{pod}")
        }
        (None, Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, None, Some(n)) => n.clone(),
        _ => String::new(),
    };
    let outcome = match row.code {
        Some(101) => "101 ok (stream opened)".to_string(),
        Some(c) if c < 400 => format!("{c} ok"),
        Some(c) => format!("{c} refused"),
        None => format!("no response recorded ({})", row.stage),
    };
    vec![
        row.time(),
        end,
        duration,
        row.cluster.clone(),
        row.user.clone(),
        row.impersonated_user.clone().unwrap_or_default(),
        row.source_ips.join(","),
        row.user_agent.clone().unwrap_or_default(),
        kind,
        pod,
        container,
        command,
        stdin,
        tty,
        outcome,
        row.audit_id.clone(),
        note,
    ]
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}
