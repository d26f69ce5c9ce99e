//! Field names, and the one-pass extraction of the referenced fields from an event's JSON.
//!
//! A field is a dotted path into the audit event (`objectRef.namespace`,
//! `requestObject.spec.containers.securityContext.privileged`). A path through an array visits every element,
//! so a rule matches if any element matches. A JSON key that itself contains dots (annotation keys such as
//! `authorization.k8s.io/decision`) is matched as if it were nested objects: the field
//! `annotations.authorization.k8s.io/decision` reads that annotation. Numeric path segments (array indexes)
//! are not supported; they would never match.
//!
//! The paths every loaded rule uses are compiled into a trie; extraction walks the event once and
//! skips every subtree no path enters, without building a tree of the event.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::value::Val;

/// The first segment of every event field a rule may name (the model's list of an `Event`'s top-level keys).
pub use kubetrail_model::EVENT_KEYS as EVENT_FIELDS;

/// Field names SigmaHQ's Kubernetes audit rules use that are not paths of the event, and what they mean here
/// (a field mapping, as a pySigma processing pipeline would apply, so those rules load unmodified).
pub const SIGMA_ALIASES: &[(&str, &str)] = &[
    // `kubernetes_audit_rbac_permisions_listing.yml`, `kubernetes_audit_sidecar_injection.yml`.
    ("apiGroup", "objectRef.apiGroup"),
    // `kubernetes_audit_hostpath_mount.yml`: "a hostPath volume is mounted".
    ("hostPath", "kubetrail.pod.hostPaths"),
    // `kubernetes_audit_privileged_pod_creation.yml`: "capabilities are added".
    ("capabilities", "kubetrail.pod.capabilities"),
];

/// Resolves a rule's field name to the path it reads, or says why it is unknown.
pub(crate) fn canonical(field: &str) -> Result<&str, String> {
    if let Some((_, to)) = SIGMA_ALIASES.iter().find(|(from, _)| *from == field) {
        return Ok(to);
    }
    if field.is_empty() || field.split('.').any(str::is_empty) {
        return Err(format!("invalid field name `{field}`: empty path segment"));
    }
    let first = field.split('.').next().unwrap_or_default();
    if first == "kubetrail" {
        if crate::enrich::FIELDS.iter().any(|f| f.name == field) {
            return Ok(field);
        }
        return Err(format!(
            "unknown enrichment field `{field}`; known: {}",
            crate::enrich::FIELDS
                .iter()
                .map(|f| format!("`{}`", f.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if EVENT_FIELDS.contains(&first) {
        return Ok(field);
    }
    Err(format!(
        "unknown field `{field}`: a field is a dotted path into the audit event starting with one of {}, or a \
         `kubetrail.` enrichment field",
        EVENT_FIELDS
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The slot of a field in [`Fields`].
pub(crate) type Slot = u32;

#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(Box<str>, u32)>,
    /// The slot rules read this path from.
    slot: Option<Slot>,
    /// Further slots the same value goes to (enrichment inputs that rules also name).
    also: Vec<Slot>,
}

/// The referenced paths, as a trie over path segments. Several paths may share one slot (enrichment reads the
/// pod spec at several places into one slot).
#[derive(Debug, Clone)]
pub(crate) struct Trie {
    nodes: Vec<Node>,
    slots: u32,
}

impl Default for Trie {
    fn default() -> Trie {
        Trie {
            nodes: vec![Node::default()],
            slots: 0,
        }
    }
}

impl Trie {
    /// A new slot that no path fills (enrichment values).
    pub(crate) fn virtual_slot(&mut self) -> Slot {
        self.slots += 1;
        self.slots - 1
    }

    /// The slot of `path`, created if new.
    pub(crate) fn insert(&mut self, path: &str) -> Slot {
        let n = self.node(path);
        if let Some(s) = self.nodes[n].slot {
            return s;
        }
        let s = self.virtual_slot();
        self.nodes[n].slot = Some(s);
        s
    }

    /// Makes `path` fill `slot` too (several paths may fill one slot).
    pub(crate) fn insert_into(&mut self, path: &str, slot: Slot) {
        let n = self.node(path);
        let node = &mut self.nodes[n];
        if node.slot != Some(slot) && !node.also.contains(&slot) {
            node.also.push(slot);
        }
    }

    fn node(&mut self, path: &str) -> usize {
        let mut n = 0usize;
        for seg in path.split('.') {
            n = match self.nodes[n].children.iter().find(|(k, _)| &**k == seg) {
                Some(&(_, c)) => c as usize,
                None => {
                    let c = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[n].children.push((seg.into(), c as u32));
                    c
                }
            };
        }
        n
    }

    fn child(&self, n: u32, key: &str) -> Option<u32> {
        let node = &self.nodes[n as usize];
        if let Some(&(_, c)) = node.children.iter().find(|(k, _)| &**k == key) {
            return Some(c);
        }
        if node.children.is_empty() || !key.contains('.') {
            return None;
        }
        // A dotted key reads like nested objects.
        let mut c = n;
        for seg in key.split('.') {
            c = self.nodes[c as usize]
                .children
                .iter()
                .find(|(k, _)| &**k == seg)?
                .1;
        }
        Some(c)
    }

    /// Walks the event once, filling the slots of the paths it holds. Fails only on invalid JSON.
    pub(crate) fn extract<'a>(&self, json: &'a str) -> Result<Fields<'a>, serde_json::Error> {
        let mut out = Fields::new(self.slots);
        let mut de = serde_json::Deserializer::from_str(json);
        At {
            trie: self,
            node: 0,
            out: &mut out,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(out)
    }
}

/// The values of one event, by slot: a flat list with a linked chain per slot (three allocations per event
/// whatever the number of fields).
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    vals: Vec<Val<'a>>,
    next: Vec<u32>,
    head: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl<'a> Fields<'a> {
    pub(crate) fn new(slots: u32) -> Fields<'a> {
        Fields {
            vals: Vec::with_capacity(32),
            next: Vec::with_capacity(32),
            head: vec![NONE; slots as usize],
        }
    }

    pub(crate) fn push(&mut self, slot: Slot, v: Val<'a>) {
        let Some(h) = self.head.get_mut(slot as usize) else {
            return;
        };
        // Bounded: an event cannot make a slot chain longer than the event itself, but cap anyway.
        if self.vals.len() >= u32::MAX as usize - 1 {
            return;
        }
        self.next.push(*h);
        *h = self.vals.len() as u32;
        self.vals.push(v);
    }

    /// The values of a slot (in reverse document order).
    pub(crate) fn get(&self, slot: Slot) -> SlotIter<'_, 'a> {
        SlotIter {
            f: self,
            at: self.head.get(slot as usize).copied().unwrap_or(NONE),
        }
    }

    pub(crate) fn first_str(&self, slot: Slot) -> Option<&str> {
        self.get(slot).find_map(Val::as_str)
    }

    pub(crate) fn has(&self, slot: Slot) -> bool {
        self.head.get(slot as usize).is_some_and(|&h| h != NONE)
    }
}

#[derive(Debug)]
pub(crate) struct SlotIter<'f, 'a> {
    f: &'f Fields<'a>,
    at: u32,
}

impl<'f, 'a> Iterator for SlotIter<'f, 'a> {
    type Item = &'f Val<'a>;

    fn next(&mut self) -> Option<&'f Val<'a>> {
        if self.at == NONE {
            return None;
        }
        let i = self.at as usize;
        self.at = self.f.next[i];
        Some(&self.f.vals[i])
    }
}

struct At<'t, 'f, 'a> {
    trie: &'t Trie,
    node: u32,
    out: &'f mut Fields<'a>,
}

impl<'t, 'f, 'a> At<'t, 'f, 'a> {
    fn put(&mut self, v: Val<'a>) {
        let node = &self.trie.nodes[self.node as usize];
        for &s in &node.also {
            self.out.push(s, v.clone());
        }
        if let Some(s) = node.slot {
            self.out.push(s, v);
        }
    }

    fn reborrow(&mut self, node: u32) -> At<'t, '_, 'a> {
        At {
            trie: self.trie,
            node,
            out: self.out,
        }
    }
}

impl<'de> DeserializeSeed<'de> for At<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(mut self, v: bool) -> Result<(), E> {
        self.put(Val::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(mut self, v: i64) -> Result<(), E> {
        self.put(Val::Num(v as f64));
        Ok(())
    }

    fn visit_u64<E>(mut self, v: u64) -> Result<(), E> {
        self.put(Val::Num(v as f64));
        Ok(())
    }

    fn visit_f64<E>(mut self, v: f64) -> Result<(), E> {
        self.put(Val::Num(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(mut self, v: &'de str) -> Result<(), E> {
        self.put(Val::Str(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(mut self, v: &str) -> Result<(), E> {
        self.put(Val::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(mut self, v: String) -> Result<(), E> {
        self.put(Val::Str(Cow::Owned(v)));
        Ok(())
    }

    fn visit_unit<E>(mut self) -> Result<(), E> {
        self.put(Val::Null);
        Ok(())
    }

    fn visit_none<E>(mut self) -> Result<(), E> {
        self.put(Val::Null);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        // Arrays are transparent: every element is a value of this same field.
        let node = self.node;
        while seq.next_element_seed(self.reborrow(node))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.put(Val::Complex);
        let node = self.node;
        if self.trie.nodes[node as usize].children.is_empty() {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        while let Some(child) = map.next_key_seed(Key {
            trie: self.trie,
            node,
        })? {
            match child {
                Some(c) => map.next_value_seed(self.reborrow(c))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Resolves an object key to the trie child it enters, without allocating.
struct Key<'t> {
    trie: &'t Trie,
    node: u32,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<u32>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<u32>, E> {
        Ok(self.trie.child(self.node, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(t: &Trie, json: &str, slot: Slot) -> Vec<String> {
        let f = t.extract(json).unwrap();
        let mut v: Vec<String> = f
            .get(slot)
            .map(|v| match v {
                Val::Complex => "{}".to_string(),
                Val::Null => "null".to_string(),
                v => v.text().unwrap().into_owned(),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn extracts_only_referenced_paths_through_arrays() {
        let mut t = Trie::default();
        let p = t.insert("requestObject.spec.containers.securityContext.privileged");
        let img = t.insert("requestObject.spec.containers.image");
        let verb = t.insert("verb");
        let json = r#"{"verb":"create","user":{"username":"x"},"requestObject":{"spec":{"containers":[
            {"image":"a","securityContext":{"privileged":false}},
            {"image":"b\u0041","securityContext":{"privileged":true}}, {"image":null}]}}}"#;
        assert_eq!(vals(&t, json, p), ["false", "true"]);
        assert_eq!(vals(&t, json, img), ["a", "bA", "null"]);
        assert_eq!(vals(&t, json, verb), ["create"]);
    }

    #[test]
    fn dotted_keys_read_as_nested() {
        let mut t = Trie::default();
        let d = t.insert("annotations.authorization.k8s.io/decision");
        let r = t.insert("annotations.authorization.k8s.io/reason");
        let json = r#"{"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC"}}"#;
        assert_eq!(vals(&t, json, d), ["allow"]);
        assert_eq!(vals(&t, json, r), ["RBAC"]);
    }

    #[test]
    fn objects_are_present_and_invalid_json_fails() {
        let mut t = Trie::default();
        let o = t.insert("objectRef");
        let n = t.insert("objectRef.name");
        assert_eq!(vals(&t, r#"{"objectRef":{"name":"x"}}"#, o), ["{}"]);
        assert_eq!(vals(&t, r#"{"objectRef":{"name":"x"}}"#, n), ["x"]);
        assert_eq!(vals(&t, r#"[1,2,{"objectRef":{}}]"#, o), ["{}"]);
        assert!(t.extract(r#"{"objectRef":"#).is_err());
        assert!(t.extract(r#"{} {}"#).is_err());
    }
}
