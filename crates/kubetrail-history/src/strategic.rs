//! Kubernetes strategic merge patch, applied as kube-apiserver does (k8s.io/apimachinery
//! `pkg/util/strategicpatch`, `StrategicMergeMapPatch` with `MergeParallelList` and `IgnoreUnmatchedNulls`).
//! Written by hand: no Rust crate implements it. The patch strategies and merge keys come from the table in
//! `schema` (the common built-in kinds' Go struct tags), not from a schema: a list it does not name is
//! replaced whole.
//!
//! What it does, as the Go code does:
//! - maps merge recursively; `null` deletes a key (and is dropped where there is nothing to delete);
//! - a list with a merge key merges item by item (a patch item merges into the item with the same key, new
//!   items are added), `{"<key>": X, "$patch": "delete"}` deletes the item, an item `{"$patch": "replace"}`
//!   makes the list the patch's other items;
//! - a merged list of primitives (`finalizers`) is the union of both;
//! - the order of a merged list: the patch's items in the patch's order, interleaved with the items only the
//!   object had in their earlier order (so an added container comes first, as kube-apiserver puts it);
//!   `$setElementOrder/<list>` sets it;
//! - `$patch: replace` on a map makes it the patch's map, `$patch: delete` makes it empty (`{}`: Go's
//!   `handleDirectiveInMergeMap` returns an empty map, it does not remove the key);
//! - `$retainKeys` removes the keys of the map it does not name (and refuses a patch that sets one);
//! - `$deleteFromPrimitiveList/<list>` removes values from a primitive list;
//! - every other list is replaced whole.
//!
//! Differences: a value for a field the target lacks has its directives applied to an empty value (Go
//! stores it as sent, directives included, which decoding then drops or misreads); the consistency check of
//! `$setElementOrder` against the patch list is not made; past [`MAX_DEPTH`] levels the patch's subtree
//! replaces the target's.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::diff::{MAX_DEPTH, key_text};
use crate::path::{self, Seg};
use crate::schema::{self, DELETE_PRIMITIVES, PATCH, RETAIN_KEYS, SET_ORDER, is_directive};

/// Why a strategic merge patch does not apply: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub(crate) path: String,
    pub(crate) reason: String,
}

fn fail(path: &[Seg<'_>], reason: impl Into<String>) -> Fail {
    Fail {
        path: path::render(path),
        reason: reason.into(),
    }
}

type Res<T> = Result<T, Fail>;

/// `patch` (an object) applied to `target` (anything else is taken as an empty object).
pub(crate) fn apply(target: &Value, patch: &Map<String, Value>) -> Res<Value> {
    let original = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(original, patch, None, &mut Vec::new(), 0).map(Value::Object)
}

/// `patch` merged into the map `original` that sits under `field` (a list item: under its list's name).
fn merge_map<'p>(
    mut original: Map<String, Value>,
    patch: &'p Map<String, Value>,
    field: Option<&'p str>,
    path: &mut Vec<Seg<'p>>,
    depth: usize,
) -> Res<Map<String, Value>> {
    if let Some(directive) = patch.get(PATCH) {
        return match directive.as_str() {
            Some("replace") => Ok(clean_map(patch, depth)),
            Some("delete") => Ok(Map::new()),
            _ => Err(fail(
                path,
                format!("unknown {PATCH} directive {}", short(directive)),
            )),
        };
    }
    if depth >= MAX_DEPTH {
        return Ok(clean_map(patch, depth));
    }
    if let Some(keep) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = keep
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect())
            .ok_or_else(|| fail(path, format!("{RETAIN_KEYS} is not a list of field names")))?;
        if let Some(k) = patch
            .iter()
            .find(|(k, v)| !v.is_null() && !is_directive(k) && !keep.contains(&k.as_str()))
            .map(|(k, _)| k)
        {
            return Err(fail(
                path,
                format!("the patch sets {k}, which its {RETAIN_KEYS} leaves out"),
            ));
        }
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut ordered: Vec<&str> = Vec::new();
    for (k, order) in patch {
        let Some(list) = k.strip_prefix(SET_ORDER) else {
            continue;
        };
        let Some(order) = order.as_array() else {
            return Err(fail(path, format!("{k} is not a list")));
        };
        path.push(Seg::Key(Cow::Borrowed(list)));
        let before = match original.get(list) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err(fail(path, "not a list in the target")),
        };
        let merged = match (before.clone(), patch.get(list)) {
            (_, Some(p)) if !p.is_array() => return Err(fail(path, "not a list in the patch")),
            (Some(o), None) => o,
            (None, Some(Value::Array(p))) => fresh_list(p, list, field, path, depth + 1),
            (Some(o), Some(Value::Array(p))) => merge_list(o, p, list, field, path, depth + 1)?,
            _ => {
                path.pop();
                continue;
            }
        };
        let mk = schema::merge_key(field, list);
        let sorted = reorder(merged, order, before.as_deref().unwrap_or(&[]), mk);
        path.pop();
        original.insert(list.to_string(), Value::Array(sorted));
        ordered.push(list);
    }
    for (k, value) in patch {
        if let Some(list) = k.strip_prefix(DELETE_PRIMITIVES) {
            let Some(gone) = value.as_array() else {
                return Err(fail(path, format!("{k} is not a list")));
            };
            if let Some(Value::Array(items)) = original.get_mut(list) {
                items.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if is_directive(k) || ordered.contains(&k.as_str()) {
            continue;
        }
        if value.is_null() {
            original.remove(k);
            continue;
        }
        path.push(Seg::Key(Cow::Borrowed(k)));
        let merged = match original.get_mut(k) {
            Some(slot) => match (std::mem::take(slot), value) {
                (Value::Object(o), Value::Object(p)) => {
                    Value::Object(merge_map(o, p, Some(k), path, depth + 1)?)
                }
                (Value::Array(o), Value::Array(p)) => {
                    Value::Array(merge_list(o, p, k, field, path, depth + 1)?)
                }
                (_, value) => fresh(value, k, field, path, depth + 1),
            },
            None => fresh(value, k, field, path, depth + 1),
        };
        path.pop();
        original.insert(k.clone(), merged);
    }
    Ok(original)
}

/// The value of a field the target lacks (or has with another type): `value` applied to an empty one.
fn fresh<'p>(
    value: &'p Value,
    key: &'p str,
    parent: Option<&'p str>,
    path: &mut Vec<Seg<'p>>,
    depth: usize,
) -> Value {
    match value {
        Value::Object(p) => Value::Object(
            merge_map(Map::new(), p, Some(key), path, depth)
                .unwrap_or_else(|_| clean_map(p, depth)),
        ),
        Value::Array(p) => Value::Array(fresh_list(p, key, parent, path, depth)),
        other => other.clone(),
    }
}

fn fresh_list<'p>(
    patch: &'p [Value],
    key: &'p str,
    parent: Option<&'p str>,
    path: &mut Vec<Seg<'p>>,
    depth: usize,
) -> Vec<Value> {
    merge_list(Vec::new(), patch, key, parent, path, depth)
        .unwrap_or_else(|_| clean_list(patch, depth))
}

/// The list `key` of a map under `parent`: merged when the table gives it a strategy, else replaced.
fn merge_list<'p>(
    original: Vec<Value>,
    patch: &'p [Value],
    key: &'p str,
    parent: Option<&'p str>,
    path: &mut Vec<Seg<'p>>,
    depth: usize,
) -> Res<Vec<Value>> {
    let mk = schema::merge_key(parent, key);
    if (mk.is_none() && !schema::merges_primitives(parent, key)) || depth >= MAX_DEPTH {
        return Ok(clean_list(patch, depth));
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let mut kinds = original.iter().chain(patch).map(kind);
    let first = kinds.next().unwrap_or(Kind::Null);
    if kinds.any(|k| k != first) {
        return Err(fail(path, "the list's items are not all of one type"));
    }
    match first {
        Kind::List => return Err(fail(path, "lists of lists cannot be merged")),
        Kind::Object => {}
        _ => {
            let server = positions(&original, None);
            let mut seen = HashSet::new();
            let merged: Vec<Value> = original
                .into_iter()
                .chain(patch.iter().cloned())
                .filter(|v| seen.insert(key_text(v)))
                .collect();
            return Ok(order(merged, &positions(patch, None), &server, None));
        }
    }
    let Some(mk) = mk else {
        return Err(fail(
            path,
            "a list of objects without a merge key cannot be merged",
        ));
    };
    let mut original = original;
    let mut replace = false;
    let mut plain: Vec<&'p Map<String, Value>> = Vec::new();
    for item in patch {
        let Value::Object(m) = item else { continue };
        match m.get(PATCH) {
            None => plain.push(m),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let v = m.get(mk).ok_or_else(|| {
                        fail(path, format!("an item to delete has no merge key {mk}"))
                    })?;
                    original.retain(|o| o.get(mk) != Some(v));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(fail(path, "merging lists cannot be specified in the patch"));
                }
                _ => {
                    return Err(fail(
                        path,
                        format!("unknown {PATCH} directive {}", short(d)),
                    ));
                }
            },
        }
    }
    if replace {
        return Ok(plain
            .iter()
            .map(|m| Value::Object(clean_map(m, depth)))
            .collect());
    }
    let server = positions(&original, Some(mk));
    let mut at: HashMap<String, usize> = HashMap::new();
    for (i, o) in original.iter().enumerate() {
        if let Some(k) = o.get(mk) {
            at.entry(key_text(k)).or_insert(i);
        }
    }
    for p in &plain {
        let v = p
            .get(mk)
            .ok_or_else(|| fail(path, format!("an item has no merge key {mk}")))?;
        path.push(Seg::Match(mk, Cow::Borrowed(v)));
        match at.get(&key_text(v)).copied() {
            Some(j) => {
                let o = match std::mem::take(&mut original[j]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                original[j] = Value::Object(merge_map(o, p, Some(key), path, depth + 1)?);
            }
            None => {
                at.insert(key_text(v), original.len());
                original.push(Value::Object(merge_map(
                    Map::new(),
                    p,
                    Some(key),
                    path,
                    depth + 1,
                )?));
            }
        }
        path.pop();
    }
    let patch_order: HashMap<String, usize> = plain
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((key_text(p.get(mk)?), i)))
        .rev()
        .collect();
    Ok(order(original, &patch_order, &server, Some(mk)))
}

/// The JSON type of a list item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    List,
    Object,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(_) => Kind::Number,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::List,
        Value::Object(_) => Kind::Object,
    }
}

/// What identifies an item: its merge key's value, or the item itself (primitives).
fn ident(v: &Value, mk: Option<&str>) -> Option<String> {
    match mk {
        Some(mk) => v.get(mk).map(key_text),
        None => Some(key_text(v)),
    }
}

/// The first position of each item in `list`.
fn positions(list: &[Value], mk: Option<&str>) -> HashMap<String, usize> {
    let mut at = HashMap::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        if let Some(k) = ident(v, mk) {
            at.entry(k).or_insert(i);
        }
    }
    at
}

/// `merged` with `$setElementOrder`'s `order` applied (Go's `mergePatchIntoOriginal`).
fn reorder(
    merged: Vec<Value>,
    order_list: &[Value],
    before: &[Value],
    mk: Option<&str>,
) -> Vec<Value> {
    order(
        merged,
        &positions(order_list, mk),
        &positions(before, mk),
        mk,
    )
}

/// `merged` ordered as kube-apiserver orders a merged list (Go's `normalizeElementOrder`): the items the
/// patch names in the patch's order, the others in the target's, interleaved by the target's order.
fn order(
    merged: Vec<Value>,
    patch: &HashMap<String, usize>,
    server: &HashMap<String, usize>,
    mk: Option<&str>,
) -> Vec<Value> {
    let at = |v: &Value, positions: &HashMap<String, usize>| {
        ident(v, mk).and_then(|k| positions.get(&k).copied())
    };
    let (mut patched, mut server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| at(v, patch).is_some());
    patched.sort_by_key(|v| at(v, patch).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| at(v, server).unwrap_or(usize::MAX));
    // Go's `mergeSortedSlice`: a server-only item goes first only when both are in the target and it was
    // earlier there.
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patched.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                matches!((at(l, server), at(r, server)), (Some(a), Some(b)) if a < b)
            }
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// A map as a replacement value: directives and `null`s dropped (as decoding drops them).
fn clean_map(m: &Map<String, Value>, depth: usize) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !is_directive(k) && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v, depth + 1)))
        .collect()
}

fn clean_list(list: &[Value], depth: usize) -> Vec<Value> {
    list.iter().map(|v| clean(v, depth + 1)).collect()
}

fn clean(v: &Value, depth: usize) -> Value {
    match v {
        _ if depth >= 2 * MAX_DEPTH => v.clone(),
        Value::Object(m) => Value::Object(clean_map(m, depth)),
        Value::Array(a) => Value::Array(clean_list(a, depth)),
        other => other.clone(),
    }
}

/// A directive's value in an error: short, and never a redaction marker.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 || crate::marker::contains(&s) {
        "(not replace, delete or merge)".to_string()
    } else {
        s
    }
}
