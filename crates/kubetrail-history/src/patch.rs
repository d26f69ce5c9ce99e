//! The three patch types of a `patch` request: which one a stored request was ([`guess`]: audit events do not
//! record the Content-Type), what it does to a known state ([`apply`]), and what it sets when nothing earlier
//! is known ([`describe`]).
//!
//! JSON patch (RFC 6902) and JSON merge patch (RFC 7386) are the `json-patch` crate's. Kubernetes strategic
//! merge patch has no Rust crate: it is written by hand (module `strategic`, after k8s.io/apimachinery's
//! `strategicpatch`), with the merge keys of the common built-in kinds as a table, not a schema (a list the
//! table does not name is replaced whole, as a JSON merge patch replaces it). A server-side apply patch is
//! applied as a strategic merge of the applied configuration: the fields it sets take its values; field
//! ownership, and the removal of fields the manager set before and no longer sets, are not modelled.

use std::borrow::Cow;

use serde::Deserialize as _;
use serde_json::Value;

use crate::diff::{FieldChange, Leaves, MAX_DEPTH, Out, Side};
use crate::path::{self, Seg};
use crate::schema::{self, DELETE_PRIMITIVES, PATCH, RETAIN_KEYS, SET_ORDER, Scope, is_directive};
use crate::strategic;

/// The type of a patch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchType {
    /// RFC 6902 JSON patch (`application/json-patch+json`).
    Json,
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`).
    Merge,
    /// Kubernetes strategic merge patch (`application/strategic-merge-patch+json`, kubectl patch's default).
    StrategicMerge,
    /// Server-side apply (`application/apply-patch+yaml`).
    Apply,
}

impl PatchType {
    /// `json patch`, `json merge patch`, `strategic merge patch`, `apply patch`.
    pub fn as_str(self) -> &'static str {
        match self {
            PatchType::Json => "json patch",
            PatchType::Merge => "json merge patch",
            PatchType::StrategicMerge => "strategic merge patch",
            PatchType::Apply => "apply patch",
        }
    }
}

/// Why a patch does not apply to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// A JSON patch that is not a list.
    #[error("a json patch is a list of operations")]
    NotAList,
    /// A strategic merge or apply patch that is not an object.
    #[error("a {} is a json object", .0.as_str())]
    NotAnObject(PatchType),
    /// A JSON patch operation that is not one (no `op`, an unknown `op`, a missing `path` or `value`).
    #[error("op {index}: {reason}")]
    InvalidOp { index: usize, reason: String },
    /// A JSON patch operation that failed (the whole patch then fails, as kube-apiserver fails it).
    #[error("op {index} ({op}): {reason}")]
    OpFailed {
        index: usize,
        op: &'static str,
        reason: String,
    },
    /// A strategic merge patch that kube-apiserver would refuse.
    #[error("{path}: {reason}")]
    Strategic { path: String, reason: String },
}

/// kubectl's field managers of requests that are not server-side apply.
const KUBECTL_MANAGERS: &[&str] = &[
    "kubectl-client-side-apply",
    "kubectl-patch",
    "kubectl-edit",
    "kubectl-set",
    "kubectl-label",
    "kubectl-annotate",
    "kubectl-rollout",
    "kubectl-scale",
];

/// The API groups of the built-in kinds (which take strategic merge patches).
const BUILTIN_GROUPS: &[&str] = &[
    "apps",
    "batch",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "policy",
    "autoscaling",
    "admissionregistration.k8s.io",
    "storage.k8s.io",
    "coordination.k8s.io",
    "certificates.k8s.io",
    "scheduling.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "events.k8s.io",
    "apiextensions.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
];

/// The type of the patch `doc` sent to `resource` of `api_group` with the request URI `uri`. Audit events do
/// not record the request's Content-Type, so it is inferred; the flag is true when it was a guess:
/// - a list is a JSON patch (certain);
/// - an object with strategic merge directives (`$patch`, `$retainKeys`, `$setElementOrder/…`,
///   `$deleteFromPrimitiveList/…`) anywhere is most likely a strategic merge patch, but still a guess: a JSON
///   merge patch may carry the same keys, which the apiserver drops as unknown fields;
/// - a whole object (`apiVersion`, `kind`, `metadata.name`) sent with a `fieldManager` that is not one of
///   kubectl's non-apply commands (or with `force`) is taken as a server-side apply;
/// - any other object is a strategic merge patch on a built-in kind (kubectl patch's default) and a JSON
///   merge patch on any other group (kube-apiserver refuses strategic merge for custom resources).
///
/// `resource` is taken for rules by kind; none needs it yet.
pub fn guess(doc: &Value, api_group: Option<&str>, resource: &str, uri: &str) -> (PatchType, bool) {
    let _ = resource;
    let Value::Object(m) = doc else {
        return match doc {
            Value::Array(_) => (PatchType::Json, false),
            // A string is a body that was not JSON (YAML, as server-side apply may send).
            _ => (PatchType::Apply, true),
        };
    };
    if has_directive(doc) {
        return (PatchType::StrategicMerge, true);
    }
    let whole = m.contains_key("apiVersion")
        && m.contains_key("kind")
        && m.get("metadata").and_then(|md| md.get("name")).is_some();
    if whole && applied(uri) {
        return (PatchType::Apply, true);
    }
    match api_group {
        None | Some("") => (PatchType::StrategicMerge, true),
        Some(g) if BUILTIN_GROUPS.contains(&g) => (PatchType::StrategicMerge, true),
        Some(_) => (PatchType::Merge, true),
    }
}

/// Whether the request URI's query reads as server-side apply's.
fn applied(uri: &str) -> bool {
    let mut manager = None;
    for (k, v) in crate::session::go_query(uri) {
        match &*k {
            "force" => return true,
            "fieldManager" if manager.is_none() => manager = Some(v),
            _ => {}
        }
    }
    manager.is_some_and(|m| !KUBECTL_MANAGERS.iter().any(|k| m.starts_with(k)))
}

/// Whether an object holds a strategic merge directive at any depth (iteratively: any depth is safe).
fn has_directive(doc: &Value) -> bool {
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if m.keys().any(|k| is_directive(k)) {
                    return true;
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    false
}

/// `doc` applied to `target` as a patch of type `kind`, with kube-apiserver's semantics (see the module
/// docs). A JSON patch whose operation fails (a `test` included) fails whole.
pub fn apply(kind: PatchType, target: &Value, doc: &Value) -> Result<Value, PatchError> {
    match kind {
        PatchType::Json => json_patch_apply(target, doc),
        PatchType::Merge => {
            let mut out = target.clone();
            json_patch::merge(&mut out, doc);
            Ok(out)
        }
        PatchType::StrategicMerge | PatchType::Apply => {
            let Value::Object(patch) = doc else {
                return Err(PatchError::NotAnObject(kind));
            };
            strategic::apply(target, patch).map_err(|f| PatchError::Strategic {
                path: f.path,
                reason: f.reason,
            })
        }
    }
}

/// An RFC 6902 patch applied to a copy of `target` (the copy is dropped when an operation fails).
fn json_patch_apply(target: &Value, doc: &Value) -> Result<Value, PatchError> {
    use json_patch::PatchOperation;
    let Value::Array(ops) = doc else {
        return Err(PatchError::NotAList);
    };
    let mut parsed = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let name = op.get("op").and_then(Value::as_str);
        let known = name.and_then(op_name);
        let Some(known) = known else {
            return Err(PatchError::InvalidOp {
                index,
                reason: match name {
                    Some(n) if n.len() <= 20 && !crate::marker::contains(n) => {
                        format!("unknown operation {n:?}")
                    }
                    Some(_) => "unknown operation".to_string(),
                    None => "no operation (`op`)".to_string(),
                },
            });
        };
        // Parsed without serde's messages, which could quote a value.
        let parsed_op = PatchOperation::deserialize(op).map_err(|_| PatchError::InvalidOp {
            index,
            reason: format!(
                "invalid {known} operation (it needs a `path` that is a JSON pointer{})",
                needs(known)
            ),
        })?;
        parsed.push(parsed_op);
    }
    let mut out = target.clone();
    // `copy` can double a subtree with each operation: kube-apiserver bounds what a patch copies in all
    // (its request size), and so does this, counted in values, one operation at a time.
    if parsed.iter().any(|o| matches!(o, PatchOperation::Copy(_))) {
        let mut copied = 0usize;
        for (index, op) in parsed.iter().enumerate() {
            if let PatchOperation::Copy(c) = op
                && let Some(v) = out.pointer(c.from.as_str())
            {
                copied += values(v, MAX_COPIED_VALUES - copied.min(MAX_COPIED_VALUES));
                if copied >= MAX_COPIED_VALUES {
                    return Err(PatchError::OpFailed {
                        index,
                        op: "copy",
                        reason: format!(
                            "the patch copies more than {MAX_COPIED_VALUES} values in all (kube-apiserver \
                             refuses such a patch): not replayed"
                        ),
                    });
                }
            }
            json_patch::patch_unsafe(&mut out, std::slice::from_ref(op)).map_err(|mut e| {
                e.operation = index;
                json_error(&parsed, e)
            })?;
        }
        return Ok(out);
    }
    json_patch::patch_unsafe(&mut out, &parsed).map_err(|e| json_error(&parsed, e))?;
    Ok(out)
}

/// The most values (leaves and containers) the `copy` operations of one JSON patch may copy in all.
pub const MAX_COPIED_VALUES: usize = 1_000_000;

/// The values in `v` (itself, its members, theirs...), counted up to `cap`.
fn values(v: &Value, cap: usize) -> usize {
    let mut n = 0;
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        n += 1;
        if n >= cap {
            return cap;
        }
        match x {
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    n
}

/// The error of the operation a JSON patch failed at, without the client's values.
fn json_error(parsed: &[json_patch::PatchOperation], e: json_patch::PatchError) -> PatchError {
    use json_patch::{PatchErrorKind, PatchOperation};
    {
        let index = e.operation;
        let op = parsed.get(index).map_or("op", |o| op_label(o));
        let path = crate::marker::replace(e.path.as_str(), "[redacted]").into_owned();
        let from = match parsed.get(index) {
            Some(PatchOperation::Move(m)) => m.from.as_str(),
            Some(PatchOperation::Copy(c)) => c.from.as_str(),
            _ => "",
        };
        let from = crate::marker::replace(from, "[redacted]");
        let reason = match e.kind {
            PatchErrorKind::TestFailed => format!("the value at {path} is not the one tested"),
            PatchErrorKind::InvalidFromPointer => format!("from path {from} does not exist"),
            PatchErrorKind::CannotMoveInsideItself => format!("cannot move {from} into itself"),
            _ => format!("path {path} does not exist"),
        };
        PatchError::OpFailed { index, op, reason }
    }
}

/// The RFC 6902 operation named `n`.
fn op_name(n: &str) -> Option<&'static str> {
    ["add", "remove", "replace", "move", "copy", "test"]
        .into_iter()
        .find(|k| *k == n)
}

fn op_label(op: &json_patch::PatchOperation) -> &'static str {
    use json_patch::PatchOperation as P;
    match op {
        P::Add(_) => "add",
        P::Remove(_) => "remove",
        P::Replace(_) => "replace",
        P::Move(_) => "move",
        P::Copy(_) => "copy",
        P::Test(_) => "test",
    }
}

/// What else an operation needs, for an error.
fn needs(op: &str) -> &'static str {
    match op {
        "add" | "replace" | "test" => " and a `value`",
        "move" | "copy" => " and a `from` pointer",
        _ => "",
    }
}

/// The fields the patch `doc` of type `kind` sets, when nothing earlier is known: each as a leaf
/// [`FieldChange`] with `before` [`Val::Unknown`](crate::Val::Unknown) and `after` the value it sets
/// ([`Val::Absent`](crate::Val::Absent) for a removal), at most [`MAX_CHANGES`](crate::diff::MAX_CHANGES).
///
/// Paths: a JSON patch's pointers in dotted form (`/spec/containers/0/image` is `spec.containers[0].image`;
/// a step of digits is read as an index, `-` as `[+]`, an append); a merge-keyed list item of a strategic
/// merge or apply patch by its key (`spec.containers[name=api].image`: there is no index when nothing earlier
/// is known), a value added to a merged primitive list as `metadata.finalizers[+]`, one removed by
/// `$deleteFromPrimitiveList` as `metadata.finalizers[-]` (before: the value). A map the patch empties with
/// `$patch: delete` shows as `{}`; other directives are not fields and are not listed. The value a `move` or
/// `copy` puts is unknown (`?`).
pub fn describe(kind: PatchType, doc: &Value) -> Vec<FieldChange> {
    describe_capped(kind, doc).0
}

/// [`describe`], and how many more fields there were past the cap (not listed).
pub fn describe_capped(kind: PatchType, doc: &Value) -> (Vec<FieldChange>, usize) {
    let d = described(kind, doc, Scope::All);
    (d.changes, d.more)
}

/// What [`describe`] finds, with what it cannot say as a field (a move, a replaced list, ...).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Described {
    pub(crate) changes: Vec<FieldChange>,
    pub(crate) more: usize,
    pub(crate) notes: Vec<String>,
}

pub(crate) fn described(kind: PatchType, doc: &Value, scope: Scope) -> Described {
    let mut d = Describer {
        out: Out::new(scope),
        notes: Vec::new(),
        strategic: matches!(kind, PatchType::StrategicMerge | PatchType::Apply),
    };
    match (kind, doc) {
        (PatchType::Json, _) => d.json(doc),
        (_, Value::Object(_)) => d.map(&mut Vec::new(), None, doc, 0, None),
        (_, other) => {
            d.notes
                .push(format!("the patch is not a json object ({})", what(other)));
        }
    }
    Described {
        changes: d.out.list,
        more: d.out.more,
        // Names from the patch (a `$retainKeys` list, pointers) are the client's text: no marker leaves.
        notes: d
            .notes
            .into_iter()
            .map(|n| crate::marker::replace(&n, "[redacted]").into_owned())
            .collect(),
    }
}

/// A JSON value's type, in words.
fn what(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The fields of a patch document, gathered.
struct Describer {
    out: Out,
    notes: Vec<String>,
    strategic: bool,
}

/// A path for a note: `the object` for the root.
fn named(path: &[Seg<'_>]) -> String {
    if path.is_empty() {
        "the object".to_string()
    } else {
        path::render(path)
    }
}

impl Describer {
    fn json(&mut self, doc: &Value) {
        let Value::Array(ops) = doc else {
            self.notes.push(format!(
                "a json patch is a list of operations, not {}",
                what(doc)
            ));
            return;
        };
        for (i, op) in ops.iter().enumerate() {
            let name = op.get("op").and_then(Value::as_str).and_then(op_name);
            let segs = op
                .get("path")
                .and_then(Value::as_str)
                .and_then(path::from_pointer);
            let (Some(name), Some(segs)) = (name, segs) else {
                self.notes.push(format!("op {i} is not a valid operation"));
                continue;
            };
            let mut segs: Vec<Seg<'_>> = segs;
            let from = op
                .get("from")
                .and_then(Value::as_str)
                .and_then(path::from_pointer);
            let excluded = self.out.scope.excludes(&segs);
            match (name, op.get("value")) {
                ("add" | "replace", Some(v)) if !excluded => {
                    let depth = segs.len();
                    self.out.leaves(&mut segs, v, depth, Leaves::Set);
                }
                ("remove", _) if !excluded => self.out.emit(&segs, Side::Unknown, Side::Absent),
                ("move" | "copy", _) => {
                    let Some(from) = from else {
                        self.notes.push(format!("op {i} is not a valid operation"));
                        continue;
                    };
                    if name == "move" && !self.out.scope.excludes(&from) {
                        self.out.emit(&from, Side::Unknown, Side::Absent);
                    }
                    if !excluded {
                        self.out.emit(&segs, Side::Unknown, Side::Unknown);
                    }
                    let verb = if name == "move" { "moves" } else { "copies" };
                    self.notes.push(format!(
                        "op {i} {verb} {} to {}",
                        named(&from),
                        named(&segs)
                    ));
                }
                ("test", _) if !excluded => {
                    self.notes.push(format!(
                        "op {i} requires {} to have a given value",
                        named(&segs)
                    ));
                }
                ("add" | "replace" | "test", None) => {
                    self.notes.push(format!("op {i} is not a valid operation"));
                }
                _ => {}
            }
        }
    }

    /// The fields a map of the patch sets; `skip` is a list item's merge key (shown in its path).
    fn map<'v>(
        &mut self,
        path: &mut Vec<Seg<'v>>,
        field: Option<&'v str>,
        v: &'v Value,
        depth: usize,
        skip: Option<&str>,
    ) {
        let Value::Object(m) = v else { return };
        if depth >= MAX_DEPTH {
            self.out.emit(path, Side::Unknown, Side::Of(v));
            return;
        }
        if self.strategic {
            match m.get(PATCH).map(|d| d.as_str()) {
                Some(Some("replace")) => self.notes.push(format!(
                    "{} is replaced whole: fields the patch does not set are removed",
                    named(path)
                )),
                Some(Some("delete")) => {
                    self.out.emit(path, Side::Unknown, Side::EmptyObject);
                    return;
                }
                Some(_) => self.notes.push(format!(
                    "{} has an unknown {PATCH} directive (kube-apiserver refuses the patch)",
                    named(path)
                )),
                None => {}
            }
            if let Some(keep) = m.get(RETAIN_KEYS) {
                let keep: Vec<&str> = keep
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                self.notes.push(format!(
                    "{} keeps only {}: its other fields are removed",
                    named(path),
                    if keep.is_empty() {
                        "nothing".to_string()
                    } else {
                        keep.join(", ")
                    }
                ));
            }
        }
        for (k, child) in m {
            if Some(k.as_str()) == skip {
                continue;
            }
            if self.strategic && is_directive(k) {
                if let Some(list) = k.strip_prefix(DELETE_PRIMITIVES)
                    && let Value::Array(gone) = child
                {
                    path.push(Seg::Key(Cow::Borrowed(list)));
                    if !self.out.scope.excludes(path) {
                        path.push(Seg::Delete);
                        for g in gone {
                            self.out.emit(path, Side::Of(g), Side::Absent);
                        }
                        path.pop();
                    }
                    path.pop();
                } else if k.starts_with(SET_ORDER) {
                    // Only an order.
                }
                continue;
            }
            path.push(Seg::Key(Cow::Borrowed(k)));
            if !self.out.scope.excludes(path) {
                match child {
                    Value::Null => self.out.emit(path, Side::Unknown, Side::Absent),
                    // Merges nothing into an existing map (makes an empty one where there is none).
                    Value::Object(o) if o.is_empty() => {}
                    Value::Object(_) => self.map(path, Some(k), child, depth + 1, None),
                    Value::Array(items) => self.list(path, k, field, child, items, depth + 1),
                    _ => self.out.emit(path, Side::Unknown, Side::Of(child)),
                }
            }
            path.pop();
        }
    }

    /// The list `key` of a map under `parent`.
    fn list<'v>(
        &mut self,
        path: &mut Vec<Seg<'v>>,
        key: &'v str,
        parent: Option<&'v str>,
        v: &'v Value,
        items: &'v [Value],
        depth: usize,
    ) {
        if items.is_empty() || depth >= MAX_DEPTH {
            self.out.emit(path, Side::Unknown, Side::Of(v));
            return;
        }
        let mk = self
            .strategic
            .then(|| schema::merge_key(parent, key))
            .flatten()
            .filter(|_| items.iter().all(Value::is_object));
        if let Some(mk) = mk {
            if items.iter().any(|i| directive(i) == Some("replace")) {
                self.notes.push(format!(
                    "{} is replaced whole: items the patch does not list are removed",
                    named(path)
                ));
                for (i, item) in items.iter().filter(|i| directive(i).is_none()).enumerate() {
                    path.push(Seg::Index(i));
                    self.map(path, Some(key), item, depth + 1, None);
                    path.pop();
                }
                return;
            }
            for (i, item) in items.iter().enumerate() {
                let id = item
                    .get(mk)
                    .filter(|k| !k.is_object() && !k.is_array() && !k.is_null());
                path.push(match id {
                    Some(k) => Seg::Match(mk, Cow::Borrowed(k)),
                    None => Seg::Index(i),
                });
                if directive(item) == Some("delete") {
                    self.out.emit(path, Side::Unknown, Side::Absent);
                } else if item.as_object().is_some_and(|m| {
                    m.keys()
                        .any(|k| Some(k.as_str()) != id.map(|_| mk) && !is_directive(k))
                }) {
                    self.map(path, Some(key), item, depth + 1, id.map(|_| mk));
                } else {
                    self.out.emit(path, Side::Unknown, Side::Of(item));
                }
                path.pop();
            }
            return;
        }
        if self.strategic && schema::merges_primitives(parent, key) {
            path.push(Seg::Append);
            for item in items {
                self.out.leaves(path, item, depth + 1, Leaves::Set);
            }
            path.pop();
            return;
        }
        // Replaced whole: the patch's list is the list after.
        for (i, item) in items.iter().enumerate() {
            path.push(Seg::Index(i));
            self.out.leaves(path, item, depth + 1, Leaves::Set);
            path.pop();
        }
    }
}

/// A list item's `$patch` directive.
fn directive(item: &Value) -> Option<&str> {
    item.get(PATCH).and_then(Value::as_str)
}

/// Whether `doc` has a list anywhere (where a strategic merge and a JSON merge patch differ).
pub(crate) fn has_list(doc: &Value) -> bool {
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(_) => return true,
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests;
