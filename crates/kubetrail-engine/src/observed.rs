//! The one query behind `kubetrail policy observed`: the stored events counted by what an audit policy decides
//! on (cluster, API group, resource and subresource or URL path, verb, namespace, identity) and by the level
//! and stage recorded, with the first and last time of each. `kubetrail_policy::observed` turns the rows into
//! the policy that was applied and compares them with a policy file.
//!
//! The `events` table holds one row per stored stage (unlike [`Engine::requests`], which reads one per
//! request), so every stage recorded is counted: `omitStages` is read from them. Usernames are not kept one by
//! one, which would make a row per kubelet and per service account: identities are kept by their groups, the
//! usernames a caller names by name (the control plane's, which only their names tell apart, and those a
//! policy's `users` name), and the rest represented by one username of theirs: no rule can tell them apart. The rows are bounded ([`MAX_ROWS`]): past that the most frequent
//! are kept and the answer says it was cut.

use futures::StreamExt;

use crate::reports::sql_str;
use crate::{Cell, Engine, EngineError};

/// The most rows [`observed`] returns by default.
pub const MAX_ROWS: usize = 200_000;

/// Events of one kind of request at one level and stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRow {
    pub cluster: String,
    /// `""` is the core group (and the group of a non-resource request).
    pub api_group: String,
    /// `""` for a non-resource request.
    pub resource: String,
    pub subresource: String,
    /// The URL path without the query, for a non-resource request; `""` for a resource request.
    pub path: String,
    pub verb: String,
    /// `""` for cluster-scoped requests.
    pub namespace: String,
    /// A username named by the caller, `""` when the requests had none, else the first (in byte order) of the
    /// usernames with these groups and everything else of the row.
    pub user: String,
    pub groups: Vec<String>,
    pub level: String,
    pub stage: String,
    /// Events.
    pub count: u64,
    /// When the first and last of them were received (`time`), in microseconds since the epoch.
    pub first_us: i64,
    pub last_us: i64,
}

/// The rows of [`observed`], and whether there were more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRows {
    pub rows: Vec<ObservedRow>,
    /// The range holds more kinds of requests than `limit`: the least frequent were left out.
    pub truncated: bool,
}

/// The SQL of [`observed`]: at most `limit + 1` rows, the most frequent first. Refused and failed requests
/// are left out: their namespaces, resources and paths are the caller's to choose, and a flood of made-up
/// ones would push a real kind past the limit.
fn observed_sql(named_users: &[&str], limit: usize) -> String {
    let mut named = String::from("\"user\" = ''");
    if !named_users.is_empty() {
        let list: Vec<String> = named_users.iter().map(|u| sql_str(u)).collect();
        named = format!("{named} OR \"user\" IN ({})", list.join(", "));
    }
    format!(
        "SELECT cluster, api_group, resource, subresource, path, verb, namespace, min(\"user\") AS \"user\", \
         groups, level, stage, count(*) AS n, CAST(min(\"time\") AS BIGINT) AS first_us, \
         CAST(max(\"time\") AS BIGINT) AS last_us \
         FROM (SELECT cluster, coalesce(api_group, '') AS api_group, coalesce(resource, '') AS resource, \
         coalesce(subresource, '') AS subresource, \
         CASE WHEN resource IS NULL THEN split_part(uri, '?', 1) ELSE '' END AS path, verb, \
         coalesce(namespace, '') AS namespace, \"user\", \
         CASE WHEN {named} THEN \"user\" END AS named, groups, level, stage, \"time\" FROM events \
         WHERE code IS NULL OR code < 400) AS e \
         GROUP BY cluster, api_group, resource, subresource, path, verb, namespace, named, groups, level, stage \
         ORDER BY n DESC, cluster, api_group, resource, subresource, path, verb, namespace, \"user\", level, stage \
         LIMIT {}",
        limit.saturating_add(1)
    )
}

/// The events of the engine's scope counted by cluster, API group, resource, subresource, URL path (of
/// non-resource requests), verb, namespace, identity (its groups; `named_users` by name, the others by a
/// username of theirs), level and stage: at most `limit` rows, the most frequent, with `truncated` when there
/// were more.
pub async fn observed(
    engine: &Engine,
    named_users: &[&str],
    limit: usize,
) -> Result<ObservedRows, EngineError> {
    let mut stream = engine.stream(&observed_sql(named_users, limit)).await?;
    let mut out = ObservedRows::default();
    while let Some(batch) = stream.next().await {
        for cells in crate::cells(&batch?)? {
            if out.rows.len() >= limit {
                out.truncated = true;
                return Ok(out);
            }
            out.rows.push(row(cells));
        }
    }
    Ok(out)
}

/// A row of [`observed_sql`]'s columns, in order.
fn row(cells: Vec<Cell>) -> ObservedRow {
    let c = &mut cells.into_iter();
    fn text(c: &mut impl Iterator<Item = Cell>) -> String {
        match c.next() {
            Some(Cell::Text(s)) => s,
            Some(other) => other.text(),
            None => String::new(),
        }
    }
    fn int(c: &mut impl Iterator<Item = Cell>) -> i64 {
        c.next().and_then(|v| v.as_i64()).unwrap_or_default()
    }
    ObservedRow {
        cluster: text(c),
        api_group: text(c),
        resource: text(c),
        subresource: text(c),
        path: text(c),
        verb: text(c),
        namespace: text(c),
        user: text(c),
        groups: match c.next() {
            Some(Cell::List(items)) => items,
            _ => Vec::new(),
        },
        level: text(c),
        stage: text(c),
        count: u64::try_from(int(c)).unwrap_or_default(),
        first_us: int(c),
        last_us: int(c),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use kubetrail_store::{ColumnarOptions, ColumnarWriter, EventRecord, Wal, WalOptions};

    use super::*;
    use crate::Scope;

    /// An event at `t` (seconds after 2026-03-01T10:00:00Z).
    fn event(
        id: &str,
        stage: &str,
        level: &str,
        user: &str,
        groups: &str,
        what: &str,
        t: u32,
    ) -> String {
        let object = match what.strip_prefix('/') {
            Some(_) => String::new(),
            None => format!(r#","objectRef":{{{what}}}"#),
        };
        let uri = if what.starts_with('/') {
            what
        } else {
            "/api/v1/x"
        };
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{level}","auditID":"{id}","stage":"{stage}","requestURI":"{uri}","verb":"get","user":{{"username":"{user}","groups":[{groups}]}}{object},"requestReceivedTimestamp":"2026-03-01T10:00:{t:02}Z","stageTimestamp":"2026-03-01T10:00:{t:02}Z"}}"#
        )
    }

    fn store(dir: &Path, lines: &[String]) -> std::path::PathBuf {
        let opts = WalOptions {
            fsync: false,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(&dir.join("wal"), opts).unwrap();
        let wal = Arc::new(wal);
        let payloads: Vec<Vec<u8>> = lines
            .iter()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let rec = EventRecord {
                    received_us: 1,
                    cluster: "prod".into(),
                    source: "test".into(),
                    audit_id: v["auditID"].as_str().unwrap().to_string().into(),
                    stage: v["stage"].as_str().unwrap().to_string().into(),
                    variant: "".into(),
                    event: line.as_str().into(),
                };
                let mut bytes = Vec::new();
                rec.encode(&mut bytes);
                bytes
            })
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        wal.append(&refs).unwrap();
        let root = dir.join("store");
        ColumnarWriter::open(&root, wal, ColumnarOptions::default())
            .unwrap()
            .flush()
            .unwrap();
        root
    }

    #[test]
    fn counts_every_stage_by_identity_class_not_by_user() {
        let nodes = r#""system:nodes","system:authenticated""#;
        let auth = r#""system:authenticated""#;
        let pods = r#""resource":"pods","namespace":"prod","apiVersion":"v1""#;
        let lines = vec![
            // Two kubelets: one row per stage, the first name standing for both.
            event(
                "a",
                "RequestReceived",
                "Metadata",
                "system:node:b",
                nodes,
                pods,
                1,
            ),
            event(
                "a",
                "ResponseComplete",
                "Metadata",
                "system:node:b",
                nodes,
                pods,
                1,
            ),
            event(
                "b",
                "ResponseComplete",
                "Metadata",
                "system:node:a",
                nodes,
                pods,
                5,
            ),
            // Named users stay apart, though their groups are anybody's.
            event(
                "c",
                "ResponseComplete",
                "Metadata",
                "system:kube-scheduler",
                auth,
                pods,
                2,
            ),
            event("d", "ResponseComplete", "Metadata", "alice", auth, pods, 3),
            event("e", "ResponseComplete", "Request", "bob", auth, pods, 4),
            // A non-resource request: its path without the query.
            event(
                "f",
                "ResponseComplete",
                "Metadata",
                "",
                "",
                "/healthz?verbose=1",
                6,
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&store(dir.path(), &lines), &Scope::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let all = rt
            .block_on(observed(&engine, &["system:kube-scheduler"], 100))
            .unwrap();
        assert!(!all.truncated);
        let show = |r: &ObservedRow| {
            format!(
                "{} {}/{}/{}{} {} {} {} [{}] {} {} {} {}-{}",
                r.cluster,
                r.api_group,
                r.resource,
                r.subresource,
                r.path,
                r.verb,
                r.namespace,
                r.user,
                r.groups.join(","),
                r.level,
                r.stage,
                r.count,
                r.first_us % 100_000_000,
                r.last_us % 100_000_000,
            )
        };
        let mut rows: Vec<String> = all.rows.iter().map(show).collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                "prod ///healthz get   [] Metadata ResponseComplete 1 6000000-6000000",
                "prod /pods/ get prod alice [system:authenticated] Metadata ResponseComplete 1 3000000-3000000",
                "prod /pods/ get prod bob [system:authenticated] Request ResponseComplete 1 4000000-4000000",
                "prod /pods/ get prod system:kube-scheduler [system:authenticated] Metadata ResponseComplete 1 2000000-2000000",
                "prod /pods/ get prod system:node:a [system:nodes,system:authenticated] Metadata ResponseComplete 2 1000000-5000000",
                "prod /pods/ get prod system:node:b [system:nodes,system:authenticated] Metadata RequestReceived 1 1000000-1000000",
            ]
        );
        // The most frequent first; a cut says so.
        let one = rt.block_on(observed(&engine, &[], 1)).unwrap();
        assert!(one.truncated);
        assert_eq!(one.rows.len(), 1);
        assert_eq!(one.rows[0].count, 2);
    }
}
