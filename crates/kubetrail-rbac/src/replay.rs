//! One recorded RBAC write applied to a [`State`], in time order. What is known depends on what the audit
//! log recorded (as in kubetrail-history's replay of one object):
//!
//! - writes that did not succeed (no response code, as a `RequestReceived` event has none; a code outside
//!   2xx) and dry runs (`dryRun` in the URI) change nothing;
//! - `create`/`update` take the object after the write: the recorded response when it is an object, else
//!   the request body;
//! - `patch` takes the recorded response, else applies the recorded patch to the known object
//!   (kubetrail_history::patch: the type is inferred, and the RBAC kinds have no strategic merge keys, so
//!   `rules` and `subjects` are replaced whole by either merge patch);
//! - `delete` removes the object; `deletecollection` removes the objects its recorded response lists, else,
//!   as what its selector matched was not recorded, makes every object of the kind in its namespace (or
//!   everywhere) uncertain;
//! - a create/update/patch logged at `Metadata` (or without a body) makes the object uncertain from its time:
//!   it is known to have changed, not how; a create at `Metadata` makes an object that exists with unknown
//!   content. An uncertain object keeps granting what it last granted; a later create or update with a body
//!   (or any recorded response) makes it certain again.

use serde::Serialize;
use serde_json::Value;

use kubetrail_history::patch::{self, PatchType};
use kubetrail_history::replay::dry_run;

use crate::diff::{GrantChange, diff_grants};
use crate::model::{Key, Kind, RBAC_GROUP};
use crate::snapshot::key_of;
use crate::state::{Mark, State};

/// One recorded write request, as stored.
#[derive(Debug, Clone, Copy)]
pub struct RbacWrite<'a> {
    pub time: &'a str,
    pub audit_id: &'a str,
    pub user: &'a str,
    pub impersonated_user: Option<&'a str>,
    pub source_ips: &'a [String],
    pub user_agent: Option<&'a str>,
    /// `create`, `update`, `patch`, `delete`, `deletecollection`; other verbs are ignored.
    pub verb: &'a str,
    /// `roles`, `clusterroles`, `rolebindings`, `clusterrolebindings`.
    pub resource: &'a str,
    /// Must be `rbac.authorization.k8s.io`, else the write is ignored.
    pub api_group: Option<&'a str>,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub uri: &'a str,
    /// `Metadata`, `Request`, `RequestResponse` (or `None`).
    pub level: &'a str,
    pub code: Option<i32>,
    pub request_object: Option<&'a Value>,
    pub response_object: Option<&'a Value>,
}

/// What one write did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The grants it added and removed.
    pub changes: Vec<GrantChange>,
    pub notes: Vec<String>,
    /// Whether it left an object uncertain (its effect was not recorded).
    pub became_uncertain: bool,
}

/// The write verbs.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl State {
    /// Applies one recorded write (writes must come in time order).
    pub fn apply(&mut self, w: &RbacWrite<'_>) -> Applied {
        let mut out = Applied::default();
        let Some(kind) = self.relevant(w, &mut out.notes) else {
            return out;
        };
        let namespace = if kind.namespaced() {
            w.namespace.unwrap_or_default()
        } else {
            ""
        };
        let who = who(w);
        if w.verb == "deletecollection" {
            let before = self.grants();
            self.delete_collection(kind, namespace, w, &who, &mut out);
            out.changes = diff_grants(before, self.grants());
            return out;
        }
        let named = w
            .name
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .or_else(|| {
                [w.response_object, w.request_object]
                    .into_iter()
                    .flatten()
                    .find_map(|b| b.pointer("/metadata/name")?.as_str().map(str::to_string))
                    .filter(|n| !n.is_empty())
            });
        let Some(name) = named else {
            out.notes.push(format!(
                "{} of {} by {who}: the object's name was not recorded: not applied",
                w.verb, w.resource
            ));
            return out;
        };
        if kind.namespaced() && namespace.is_empty() {
            out.notes.push(format!(
                "{} of {kind} {name} by {who} without a namespace: not applied",
                w.verb
            ));
            return out;
        }
        let key = Key::new(kind, namespace, &name);
        // The grants this write can change: the binding's, or those of the bindings to the role (and, for a
        // ClusterRole, to every aggregating ClusterRole, which may include it).
        let aggregating: Vec<Key> = if kind == Kind::ClusterRole {
            self.of_kind(Kind::ClusterRole)
                .filter(|(_, e)| matches!(&e.body, crate::model::Body::Role(r) if r.aggregation.is_some()))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            Vec::new()
        };
        let pred = |binding: &Key, role: &Key| {
            if kind.is_binding() {
                *binding == key
            } else {
                *role == key || aggregating.contains(role)
            }
        };
        let before = self.grants_where(&pred);
        match w.verb {
            "delete" => {
                let note = if self.remove(&key) {
                    format!("{key} deleted by {who}")
                } else {
                    format!("{key} deleted by {who} (it was not in the known state)")
                };
                out.notes.push(note);
            }
            "create" | "update" => self.whole(&key, w, &who, &mut out),
            _ => self.patched(&key, w, &who, &mut out),
        }
        let after = self.grants_where(&pred);
        out.changes = diff_grants(before, after);
        out
    }

    /// The kind a write is to, when it is one that can change RBAC (else notes why not).
    fn relevant(&self, w: &RbacWrite<'_>, notes: &mut Vec<String>) -> Option<Kind> {
        if !WRITE_VERBS.contains(&w.verb) {
            notes.push(format!("{}: not a write", w.verb));
            return None;
        }
        if w.api_group != Some(RBAC_GROUP) {
            notes.push(format!(
                "{} of API group {:?}: not RBAC",
                w.resource,
                w.api_group.unwrap_or_default()
            ));
            return None;
        }
        let Some(kind) = Kind::from_resource(w.resource) else {
            notes.push(format!("{}: not an RBAC resource", w.resource));
            return None;
        };
        if let Some(sub) = w.subresource.filter(|s| !s.is_empty()) {
            notes.push(format!(
                "subresource {sub}: RBAC objects have none; not applied"
            ));
            return None;
        }
        match w.code {
            None => {
                notes.push(
                    "no response recorded (a RequestReceived event, or a request that did not finish): nothing changed"
                        .to_string(),
                );
                return None;
            }
            Some(code) if !(200..300).contains(&code) => {
                let word = if code >= 500 { "failed" } else { "refused" };
                notes.push(format!("{word} ({code}): nothing changed"));
                return None;
            }
            Some(_) => {}
        }
        if dry_run(w.uri) {
            notes.push("dry run (dryRun in the request): nothing changed".to_string());
            return None;
        }
        Some(kind)
    }

    /// A create or update: the whole object after it, if recorded.
    fn whole(&mut self, key: &Key, w: &RbacWrite<'_>, who: &str, out: &mut Applied) {
        let body = if metadata_only(w.level) {
            None
        } else {
            w.response_object
                .filter(|r| looks_like_object(r))
                .or(w.request_object.filter(|r| looks_like_object(r)))
        };
        match body.map(|b| with_key(b, key)) {
            Some(v) => {
                let was_uncertain = self.entry(key).is_some_and(|e| e.uncertain.is_some());
                out.notes.extend(self.put(key.clone(), v));
                if was_uncertain {
                    out.notes.push(format!(
                        "{key} is known again: the {} recorded its whole object",
                        w.verb
                    ));
                }
            }
            None => self.forget(key, w, who, not_recorded(w), out),
        }
    }

    /// A patch: the recorded response, else the recorded patch applied to the known object.
    fn patched(&mut self, key: &Key, w: &RbacWrite<'_>, who: &str, out: &mut Applied) {
        if metadata_only(w.level) {
            return self.forget(key, w, who, not_recorded(w), out);
        }
        if let Some(after) = w.response_object.filter(|r| looks_like_object(r)) {
            out.notes
                .extend(self.put(key.clone(), with_key(after, key)));
            return;
        }
        let Some(doc) = w.request_object else {
            return self.forget(key, w, who, not_recorded(w), out);
        };
        let (kind, assumed) = patch::guess(doc, Some(RBAC_GROUP), w.resource, w.uri);
        if assumed && kind == PatchType::Apply {
            out.notes.push(
                "read as a server-side apply (the audit log does not record the patch type): fields its manager no longer sets are not removed"
                    .to_string(),
            );
        }
        let known = self.entry(key).filter(|e| e.known).map(|e| e.value.clone());
        let base = known.clone().unwrap_or_else(|| serde_json::json!({}));
        match patch::apply(kind, &base, doc) {
            Ok(after) if after.is_object() => {
                let earlier = self.entry(key).and_then(|e| e.uncertain.clone());
                let mark = earlier.or_else(|| {
                    known.is_none().then(|| Mark {
                        since: w.time.to_string(),
                        why: format!(
                            "patch by {who} to an object whose earlier state is not known"
                        ),
                    })
                });
                out.notes
                    .extend(self.put(key.clone(), with_key(&after, key)));
                if let (Some(m), Some(e)) = (mark, self.entry_mut(key)) {
                    e.uncertain = Some(m);
                    out.became_uncertain = true;
                }
            }
            Ok(_) => self.forget(
                key,
                w,
                who,
                "the patch does not leave an object".to_string(),
                out,
            ),
            Err(e) => self.forget(
                key,
                w,
                who,
                format!(
                    "its {} did not apply to the known state ({e})",
                    kind.as_str()
                ),
                out,
            ),
        }
    }

    /// The object changed in a way not recorded: uncertain from now (an unknown one exists from now).
    fn forget(
        &mut self,
        key: &Key,
        w: &RbacWrite<'_>,
        who: &str,
        reason: String,
        out: &mut Applied,
    ) {
        let mark = Mark {
            since: w.time.to_string(),
            why: format!("{} by {who} {reason}", w.verb),
        };
        out.notes.push(format!("{key}: {}", mark.why));
        out.became_uncertain = true;
        match self.entry_mut(key) {
            Some(e) => {
                if e.uncertain.is_none() {
                    e.uncertain = Some(mark);
                }
            }
            None => self.put_unknown(key.clone(), mark),
        }
    }

    fn delete_collection(
        &mut self,
        kind: Kind,
        namespace: &str,
        w: &RbacWrite<'_>,
        who: &str,
        out: &mut Applied,
    ) {
        let listed: Option<Vec<Key>> = w
            .response_object
            .filter(|_| !metadata_only(w.level))
            .and_then(|r| r.get("items")?.as_array())
            .map(|items| items.iter().filter_map(|i| key_of(kind, i).ok()).collect());
        if let Some(keys) = listed {
            for k in keys {
                if self.remove(&k) {
                    out.notes
                        .push(format!("{k} deleted by {who} (deletecollection)"));
                }
            }
            return;
        }
        let keys: Vec<Key> = if namespace.is_empty() {
            self.of_kind(kind).map(|(k, _)| k.clone()).collect()
        } else {
            self.of_kind_in(kind, namespace)
                .map(|(k, _)| k.clone())
                .collect()
        };
        let scope = if namespace.is_empty() {
            String::new()
        } else {
            format!(" in {namespace}")
        };
        let why = format!(
            "deletecollection of {}{scope} by {who}: which objects its selector matched was not recorded",
            kind.as_resource()
        );
        out.notes
            .push(format!("{why}: {} object(s) made uncertain", keys.len()));
        for k in keys {
            if let Some(e) = self.entry_mut(&k)
                && e.uncertain.is_none()
            {
                e.uncertain = Some(Mark {
                    since: w.time.to_string(),
                    why: why.clone(),
                });
            }
            out.became_uncertain = true;
        }
    }
}

/// `bob`, or `system:admin (as bob)` for an impersonated request.
fn who(w: &RbacWrite<'_>) -> String {
    match w.impersonated_user.filter(|u| !u.is_empty()) {
        Some(as_user) => format!("{} (as {as_user})", w.user),
        None => w.user.to_string(),
    }
}

fn metadata_only(level: &str) -> bool {
    level.eq_ignore_ascii_case("metadata") || level.eq_ignore_ascii_case("none")
}

/// Why a write's effect is unknown: `logged at Metadata: its body was not recorded`.
fn not_recorded(w: &RbacWrite<'_>) -> String {
    if metadata_only(w.level) {
        format!("logged at {}: its body was not recorded", w.level)
    } else {
        "recorded without a body: what it changed is unknown".to_string()
    }
}

/// Whether a stored body is an object (not a `Status`, not a patch).
fn looks_like_object(v: &Value) -> bool {
    v.get("metadata").is_some_and(Value::is_object)
        && v.get("kind").and_then(Value::as_str) != Some("Status")
}

/// `v` with the key's name and namespace (a body of a create may carry only `generateName`).
fn with_key(v: &Value, key: &Key) -> Value {
    let mut v = v.clone();
    if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        md.insert("name".into(), Value::String(key.name.clone()));
        if !key.namespace.is_empty() {
            md.insert("namespace".into(), Value::String(key.namespace.clone()));
        }
    } else if let Some(m) = v.as_object_mut() {
        m.insert(
            "metadata".into(),
            serde_json::json!({"name": key.name, "namespace": key.namespace}),
        );
    }
    v
}
