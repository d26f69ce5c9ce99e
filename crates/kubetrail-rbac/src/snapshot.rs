//! A base snapshot of RBAC: the JSON of `kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A
//! -o json` (a `List` whose `items` are the objects), or one object, a JSON array of objects, or a `List` of
//! `List`s (at most [`MAX_LIST_DEPTH`] deep). Items of other kinds (or of the same kind names in another API
//! group) are skipped and named in [`Snapshot::skipped`]; at most [`MAX_OBJECTS`] objects are read.

use serde::Serialize;
use serde_json::Value;

use crate::model::{Key, Kind, RBAC_GROUP};

/// The most objects a snapshot may hold.
pub const MAX_OBJECTS: usize = 100_000;
/// How deep `List`s may nest.
pub const MAX_LIST_DEPTH: usize = 4;
/// The most skipped items named (the rest are counted in the last line).
pub const MAX_SKIPPED_LINES: usize = 1_000;

/// One RBAC object of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    pub key: Key,
    pub value: Value,
}

/// The RBAC objects of a snapshot, in file order, and the items that were not read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub objects: Vec<Object>,
    /// `items[3]: kind Pod is not RBAC`, one line per item (at most [`MAX_SKIPPED_LINES`]).
    pub skipped: Vec<String>,
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("{path}: {reason}")]
    Item { path: String, reason: String },
    #[error("more than {MAX_OBJECTS} objects")]
    TooMany,
}

/// The snapshot in `bytes`.
pub fn parse_snapshot(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| SnapshotError::Json(e.to_string()))?;
    let mut snap = Snapshot::default();
    let mut skipped = 0usize;
    walk(&root, String::new(), 0, &mut snap, &mut skipped)?;
    if skipped > MAX_SKIPPED_LINES {
        snap.skipped.push(format!(
            "and {} more items skipped",
            skipped - MAX_SKIPPED_LINES
        ));
    }
    Ok(snap)
}

fn walk(
    v: &Value,
    path: String,
    depth: usize,
    snap: &mut Snapshot,
    skipped: &mut usize,
) -> Result<(), SnapshotError> {
    let err = |path: &str, reason: String| SnapshotError::Item {
        path: if path.is_empty() {
            "the document".to_string()
        } else {
            path.to_string()
        },
        reason,
    };
    let items = match v {
        Value::Array(items) => Some((items, "")),
        Value::Object(m) if is_list(m) => match m.get("items") {
            Some(Value::Array(items)) => Some((items, ".items")),
            Some(Value::Null) | None => return Ok(()),
            Some(_) => return Err(err(&path, "items is not a list".to_string())),
        },
        _ => None,
    };
    if let Some((items, field)) = items {
        if depth >= MAX_LIST_DEPTH {
            return Err(err(
                &path,
                format!("lists nest deeper than {MAX_LIST_DEPTH}"),
            ));
        }
        let prefix = if path.is_empty() {
            field.trim_start_matches('.').to_string()
        } else {
            format!("{path}{field}")
        };
        for (i, item) in items.iter().enumerate() {
            walk(item, format!("{prefix}[{i}]"), depth + 1, snap, skipped)?;
        }
        return Ok(());
    }
    let Value::Object(m) = v else {
        return Err(err(&path, "not an object".to_string()));
    };
    let Some(kind) = m.get("kind").and_then(Value::as_str) else {
        return Err(err(&path, "has no kind".to_string()));
    };
    let api_version = m
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let rbac = api_version
        .split_once('/')
        .is_some_and(|(g, _)| g == RBAC_GROUP);
    let skip = match Kind::from_kind(kind) {
        None => Some(format!("kind {kind} is not RBAC")),
        Some(_) if !rbac => Some(format!(
            "kind {kind} of apiVersion {api_version:?} is not {RBAC_GROUP}"
        )),
        Some(_) => None,
    };
    if let Some(why) = skip {
        *skipped += 1;
        if *skipped <= MAX_SKIPPED_LINES {
            snap.skipped.push(format!("{}: {why}", shown_path(&path)));
        }
        return Ok(());
    }
    let kind = Kind::from_kind(kind).unwrap_or(Kind::Role);
    let key = key_of(kind, v).map_err(|r| err(&path, r))?;
    for field in ["rules", "subjects"] {
        if m.get(field).is_some_and(|f| !f.is_null() && !f.is_array()) {
            return Err(err(
                &path,
                format!("{kind} {}: {field} is not a list", key.name),
            ));
        }
    }
    if kind.is_binding() && !m.get("roleRef").is_some_and(Value::is_object) {
        return Err(err(&path, format!("{kind} {}: has no roleRef", key.name)));
    }
    if snap.objects.len() >= MAX_OBJECTS {
        return Err(SnapshotError::TooMany);
    }
    snap.objects.push(Object {
        key,
        value: v.clone(),
    });
    Ok(())
}

fn shown_path(path: &str) -> &str {
    if path.is_empty() {
        "the document"
    } else {
        path
    }
}

/// Whether an object is a list of objects (`List`, `RoleList`, ... with `items`).
fn is_list(m: &serde_json::Map<String, Value>) -> bool {
    m.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        || (m.get("kind").is_none() && m.contains_key("items"))
}

/// The key of object `v` of `kind`, or what is missing.
pub(crate) fn key_of(kind: Kind, v: &Value) -> Result<Key, String> {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} has no metadata.name"))?;
    let namespace = v
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.namespaced() && namespace.is_empty() {
        return Err(format!("{kind} {name} has no metadata.namespace"));
    }
    Ok(Key::new(kind, namespace, name))
}
