//! One object's write requests replayed in time order: what each changed, from the state the earlier ones
//! left. The state is one JSON value (the object as last known, or unknown); nothing else accumulates.
//!
//! Bodies come from the audit log, so what is known depends on the level each request was logged at: a
//! `RequestResponse` event's response is the object after the write (the truth, defaults and all), a
//! `Request` event's body is what the client sent (a whole object for create and update, a patch for patch),
//! a `Metadata` event says only that a write happened, after which the state is unknown until a create or an
//! update records a whole object again.

use serde_json::{Map, Value};

use crate::diff::{self, FieldChange, Val};
use crate::patch::{self, PatchType};
use crate::schema::Scope;

/// One write request to the object, as stored (bodies already redacted), in time order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Write<'a> {
    /// `create`, `update`, `patch`, `delete` (`deletecollection` too); others are [`Action::Other`].
    pub verb: &'a str,
    /// `None` for the object itself; `status`, `scale`, `ephemeralcontainers`, `binding`, ...
    pub subresource: Option<&'a str>,
    /// `None` or `""` for the core group.
    pub api_group: Option<&'a str>,
    /// The resource (`deployments`).
    pub resource: &'a str,
    /// The request URI, with its query.
    pub uri: &'a str,
    /// `Metadata`, `Request`, `RequestResponse` or `None`.
    pub level: &'a str,
    /// The response code; `None`: no response recorded.
    pub code: Option<i32>,
    pub request_object: Option<&'a Value>,
    pub response_object: Option<&'a Value>,
}

/// What a write did to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Patched,
    Deleted,
    /// Another verb, or a subresource that does not change the object (`exec`, `binding`, `eviction`, ...).
    Other,
}

/// What one write changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    pub action: Action,
    /// The patch type, for patches whose body was recorded.
    pub patch: Option<PatchType>,
    /// Whether the patch type was inferred (the audit log does not record it).
    pub patch_assumed: bool,
    /// The fields it changed, at most [`MAX_CHANGES`](crate::diff::MAX_CHANGES).
    pub changes: Vec<FieldChange>,
    /// Changes past the cap, not listed.
    pub more: usize,
    /// Whether `before` sides come from a known earlier state (else they are Unknown).
    pub before_known: bool,
    /// What the reader must know, in words (`refused (403): nothing changed`, `logged at Metadata: the
    /// change itself was not recorded`, ...).
    pub notes: Vec<String>,
}

/// The state of one object through its writes.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The object as last known; `None`: unknown (or deleted).
    state: Option<Value>,
}

/// Which part of the object a write is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The object (or a subresource whose body is the whole object: `ephemeralcontainers`, `resize`).
    Object,
    Status,
    Scale,
    /// A subresource that does not change the object.
    Other,
}

const METADATA_ONLY: &str = "logged at Metadata: the change itself was not recorded";
const RESPONSE_IS_AFTER: &str = "the stored response shows the object after the change";

impl Replay {
    pub fn new() -> Replay {
        Replay::default()
    }

    /// The object as last known: `None` when unknown (nothing recorded yet, a write logged without its
    /// body, a patch that did not apply) or deleted.
    pub fn state(&self) -> Option<&Value> {
        self.state.as_ref()
    }

    /// What `w` changed, and the state after it.
    pub fn step(&mut self, w: &Write<'_>) -> Step {
        let target = match w.subresource.filter(|s| !s.is_empty()) {
            None | Some("ephemeralcontainers" | "resize") => Target::Object,
            Some("status") => Target::Status,
            Some("scale") => Target::Scale,
            Some(_) => Target::Other,
        };
        let whole = w.subresource.is_none_or(str::is_empty);
        let action = match (w.verb, target) {
            (_, Target::Other) => Action::Other,
            ("create", Target::Object) if whole => Action::Created,
            ("update", _) => Action::Updated,
            ("patch", _) => Action::Patched,
            ("delete" | "deletecollection", Target::Object) if whole => Action::Deleted,
            _ => Action::Other,
        };
        let mut step = Step {
            action,
            patch: None,
            patch_assumed: false,
            changes: Vec::new(),
            more: 0,
            before_known: self.state.is_some(),
            notes: Vec::new(),
        };
        if let Some(code) = w.code.filter(|c| *c >= 400) {
            if action == Action::Patched
                && let Some(doc) = w.request_object
            {
                let (kind, assumed) = patch::guess(doc, w.api_group, w.resource, w.uri);
                (step.patch, step.patch_assumed) = (Some(kind), assumed);
            }
            let word = if code >= 500 { "failed" } else { "refused" };
            step.notes.push(format!("{word} ({code}): nothing changed"));
            return step;
        }
        if dry_run(w.uri) {
            // Validated and answered as if made, never stored: its response looks like the object after it.
            step.action = Action::Other;
            step.notes
                .push("dry run (dryRun in the request): nothing changed".to_string());
            return step;
        }
        if w.code.is_none() {
            step.notes
                .push("no response recorded: taken as done".to_string());
        }
        match action {
            Action::Other => self.other(w, &mut step),
            Action::Deleted => self.deleted(w, &mut step),
            _ if w.level.eq_ignore_ascii_case("metadata")
                || w.level.eq_ignore_ascii_case("none") =>
            {
                self.forget(&mut step, METADATA_ONLY);
            }
            _ if w.request_object.is_none() && w.response_object.is_none() => {
                self.forget(&mut step, "no body recorded: the change itself is unknown");
            }
            Action::Created => self.created(w, &mut step),
            Action::Updated | Action::Patched => match target {
                Target::Scale => self.scale(w, &mut step),
                Target::Status if action == Action::Updated => {
                    self.update(w, &mut step, Scope::OnlyStatus)
                }
                Target::Status => self.patch(w, &mut step, Scope::OnlyStatus),
                _ if action == Action::Updated => self.update(w, &mut step, Scope::NoStatus),
                _ => self.patch(w, &mut step, Scope::NoStatus),
            },
        }
        // Notes quote the client's text (pointers, names): no marker leaves.
        for n in &mut step.notes {
            if let std::borrow::Cow::Owned(clean) = crate::marker::replace(n, "[redacted]") {
                *n = clean;
            }
        }
        step
    }

    /// The change is not known: nor is the state after it.
    fn forget(&mut self, step: &mut Step, note: &str) {
        step.notes.push(note.to_string());
        step.before_known = false;
        self.state = None;
    }

    fn other(&mut self, w: &Write<'_>, step: &mut Step) {
        let sub = w.subresource.unwrap_or("");
        let note = match (sub, w.verb) {
            ("binding", _) => match w
                .request_object
                .and_then(|b| b.get("target"))
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
            {
                Some(node) => {
                    // The binding sets the pod's node: later diffs must not show it as theirs.
                    if let Some(state) = self.state.as_mut() {
                        set(state, "spec", "nodeName", Value::String(node.to_string()));
                    }
                    format!("scheduled to node {}", shown(node))
                }
                None => "scheduled to a node (the binding's body was not recorded)".to_string(),
            },
            ("eviction", _) => {
                "eviction requested: the pod is deleted if its disruption budget allows".to_string()
            }
            ("", verb) => format!("{} request: not a change to the object", shown(verb)),
            (sub, verb) => format!(
                "{} on the {} subresource: the object itself is not changed",
                shown(verb),
                shown(sub)
            ),
        };
        step.notes.push(note);
    }

    fn deleted(&mut self, w: &Write<'_>, step: &mut Step) {
        // A delete that only marks the object (finalizers, a grace period) returns it with a deletion
        // timestamp; it stays until they are done.
        let kept = w.response_object.filter(|r| {
            looks_like_object(r)
                && r.pointer("/metadata/deletionTimestamp")
                    .is_some_and(|t| !t.is_null())
                && (w.code == Some(202)
                    || r.pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| !f.is_empty())
                    || r.pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .is_some_and(|s| s > 0))
        });
        match kept {
            Some(after) => {
                if let Some(before) = &self.state {
                    (step.changes, step.more) = diff::changes_in(before, after, Scope::NoStatus);
                }
                step.notes.push(
                    "marked for deletion: it stays until its finalizers or grace period are done"
                        .to_string(),
                );
                self.state = Some(after.clone());
            }
            None => {
                step.notes.push("deleted".to_string());
                self.state = None;
            }
        }
    }

    fn created(&mut self, w: &Write<'_>, step: &mut Step) {
        let after = w
            .response_object
            .filter(|r| looks_like_object(r))
            .or(w.request_object.filter(|r| r.is_object()));
        let Some(after) = after else {
            self.forget(
                step,
                "no object recorded: what it was created with is unknown",
            );
            return;
        };
        (step.changes, step.more) =
            diff::changes_in(&Value::Object(Map::new()), after, Scope::NoStatus);
        step.before_known = true;
        self.state = Some(after.clone());
    }

    /// An update: the body is the whole object after it (of which only `status` counts for the status
    /// subresource, and everything but `status` for the object).
    fn update(&mut self, w: &Write<'_>, step: &mut Step, scope: Scope) {
        let response = w.response_object.filter(|r| looks_like_object(r));
        let Some(body) = response.or(w.request_object.filter(|r| r.is_object())) else {
            self.forget(
                step,
                "no object recorded: what it was updated to is unknown",
            );
            return;
        };
        match self.state.take() {
            Some(before) => {
                let after = if response.is_some() {
                    body.clone()
                } else {
                    merged_part(&before, body, scope)
                };
                (step.changes, step.more) = diff::changes_in(&before, &after, scope);
                self.state = Some(after);
            }
            None if scope == Scope::OnlyStatus => {
                step.before_known = false;
                step.notes.push(
                    "no earlier state recorded: the update's body is the status after it"
                        .to_string(),
                );
                self.state = response.cloned();
            }
            None => {
                step.before_known = false;
                step.notes.push(
                    "no earlier state recorded: the update's full body is the object after it"
                        .to_string(),
                );
                self.state = Some(body.clone());
            }
        }
    }

    fn patch(&mut self, w: &Write<'_>, step: &mut Step, scope: Scope) {
        let response = w.response_object.filter(|r| looks_like_object(r));
        let Some(doc) = w.request_object else {
            // Only the response: the object after, without the patch.
            match (self.state.take(), response) {
                (Some(before), Some(after)) => {
                    (step.changes, step.more) = diff::changes_in(&before, after, scope);
                    step.notes.push(RESPONSE_IS_AFTER.to_string());
                    self.state = Some(after.clone());
                }
                (_, after) => {
                    step.before_known = false;
                    step.notes
                        .push("the patch was not recorded: what it changed is unknown".to_string());
                    self.state = after.cloned();
                }
            }
            return;
        };
        let (kind, assumed) = patch::guess(doc, w.api_group, w.resource, w.uri);
        (step.patch, step.patch_assumed) = (Some(kind), assumed);
        if !doc.is_object() && !doc.is_array() {
            // Not JSON (a YAML body, as server-side apply may send): nothing can be applied or listed.
            self.state = response.cloned();
            step.before_known = false;
            step.notes.push(
                "the patch body is not a JSON object or list (YAML, as a server-side apply may send): what it \
                 changed is not shown"
                    .to_string(),
            );
            return;
        }
        let described = |step: &mut Step| {
            let d = patch::described(kind, doc, scope);
            step.changes = d.changes;
            step.more = d.more;
            step.before_known = false;
            step.notes.extend(d.notes);
        };
        match (self.state.take(), response) {
            (Some(before), Some(after)) => {
                (step.changes, step.more) = diff::changes_in(&before, after, scope);
                step.notes.push(RESPONSE_IS_AFTER.to_string());
                self.state = Some(after.clone());
            }
            (None, Some(after)) => {
                step.notes
                    .push("no earlier state recorded: the fields the patch sets".to_string());
                described(step);
                type_note(step, kind, assumed, doc);
                step.notes.push(RESPONSE_IS_AFTER.to_string());
                self.state = Some(after.clone());
            }
            (Some(before), None) => match patch::apply(kind, &before, doc) {
                Ok(applied) => {
                    let after = merged_part(&before, &applied, scope);
                    (step.changes, step.more) = diff::changes_in(&before, &after, scope);
                    type_note(step, kind, assumed, doc);
                    if assumed && matches!(kind, PatchType::StrategicMerge | PatchType::Apply) {
                        other_reading(step, &before, &after, doc, scope);
                    }
                    self.state = Some(after);
                }
                Err(e) => {
                    step.notes.push(format!(
                        "the patch did not apply to the recorded earlier state ({e}): the fields it sets"
                    ));
                    described(step);
                    type_note(step, kind, assumed, doc);
                    self.state = None;
                }
            },
            (None, None) => {
                step.notes
                    .push("no earlier state recorded: the fields the patch sets".to_string());
                described(step);
                type_note(step, kind, assumed, doc);
            }
        }
    }

    /// The scale subresource: a `Scale` object's `spec.replicas` is the object's.
    fn scale(&mut self, w: &Write<'_>, step: &mut Step) {
        let replicas_of = |v: &Value| {
            v.pointer("/spec/replicas")
                .filter(|r| !r.is_null())
                .cloned()
        };
        let before = self
            .state
            .as_ref()
            .and_then(|s| s.pointer("/spec/replicas"))
            .cloned();
        let after = if let Some(r) = w.response_object.and_then(replicas_of) {
            Some(r)
        } else if w.verb == "update" {
            w.request_object.and_then(replicas_of)
        } else if let Some(doc) = w.request_object {
            let (kind, assumed) = patch::guess(doc, w.api_group, w.resource, w.uri);
            (step.patch, step.patch_assumed) = (Some(kind), assumed);
            let scale =
                serde_json::json!({"spec": {"replicas": before.clone().unwrap_or(Value::Null)}});
            patch::apply(kind, &scale, doc)
                .ok()
                .and_then(|s| replicas_of(&s))
        } else {
            None
        };
        let Some(after) = after else {
            self.forget(step, "the new replica count was not recorded");
            return;
        };
        match self.state.as_mut() {
            Some(state) => {
                let spec = |r: Option<Value>| serde_json::json!({"spec": r.map_or_else(|| serde_json::json!({}), |r| serde_json::json!({"replicas": r}))});
                (step.changes, step.more) =
                    diff::changes_in(&spec(before), &spec(Some(after.clone())), Scope::All);
                set(state, "spec", "replicas", after);
            }
            None => {
                step.before_known = false;
                step.notes
                    .push("no earlier state recorded: the replica count it sets".to_string());
                step.changes = vec![FieldChange {
                    path: "spec.replicas".to_string(),
                    before: Val::Unknown,
                    after: Val::of(&after),
                }];
            }
        }
    }
}

/// Sets `state.<map>.<key>` (making the map if need be; nothing when `state` is not an object).
fn set(state: &mut Value, map: &str, key: &str, value: Value) {
    if let Some(m) = state
        .as_object_mut()
        .map(|o| o.entry(map).or_insert_with(|| Value::Object(Map::new())))
        .and_then(Value::as_object_mut)
    {
        m.insert(key.to_string(), value);
    }
}

/// The state after a write to one part of the object, the rest kept from `before`: for the object, `after`
/// with `before`'s status (a write to the main resource cannot change it); for the status subresource,
/// `before` with `after`'s status.
fn merged_part(before: &Value, after: &Value, scope: Scope) -> Value {
    let (mut base, from) = match scope {
        Scope::OnlyStatus => (before.clone(), after),
        _ => (after.clone(), before),
    };
    if let Some(base) = base.as_object_mut() {
        match from.get("status") {
            Some(s) => {
                base.insert("status".to_string(), s.clone());
            }
            None => {
                base.remove("status");
            }
        }
    }
    base
}

/// The note on an inferred patch type, where the type matters (a list in the patch, or an apply).
fn type_note(step: &mut Step, kind: PatchType, assumed: bool, doc: &Value) {
    if !assumed {
        return;
    }
    let note = match kind {
        PatchType::StrategicMerge if patch::has_list(doc) => {
            "interpreted as a strategic merge patch (the audit log does not record the patch type); a JSON \
             merge patch would replace lists whole"
        }
        PatchType::Merge if patch::has_list(doc) => {
            "interpreted as a JSON merge patch (the audit log does not record the patch type; custom \
             resources take no strategic merge patch): lists are replaced whole"
        }
        PatchType::Apply => {
            "interpreted as a server-side apply (the audit log does not record the patch type): the fields it \
             sets; fields its manager no longer sets are not shown as removed"
        }
        _ => return,
    };
    step.notes.push(note.to_string());
}

/// Whether the request URI asks for a dry run (`dryRun=All`, any value: the apiserver refuses the others).
/// Read as the apiserver reads it: `dryRun=All;` is a pair Go drops, so not a dry run.
pub fn dry_run(uri: &str) -> bool {
    crate::session::go_query(uri).any(|(k, v)| k == "dryRun" && !v.is_empty())
}

/// The most changes a note on the other reading of a patch lists.
const OTHER_READING_LINES: usize = 10;

/// When a patch read as a strategic merge would have done more as a JSON merge patch (the audit log cannot
/// tell them apart: a client chooses the content type, and a merge patch of a list of containers replaces the
/// list, so it can remove a security sidecar while reading as an image change), a note with what else it
/// would have changed.
fn other_reading(step: &mut Step, before: &Value, after: &Value, doc: &Value, scope: Scope) {
    let Ok(merged) = patch::apply(PatchType::Merge, before, doc) else {
        return;
    };
    let alt = merged_part(before, &merged, scope);
    if alt == *after {
        return;
    }
    let (extra, more) = diff::changes_in(after, &alt, scope);
    if extra.is_empty() {
        return;
    }
    // By list item (`...containers[1]`), or by field outside lists: a removed container is one line.
    let mut groups: Vec<(String, usize, bool)> = Vec::new();
    for c in &extra {
        let prefix = match c.path.find(']') {
            Some(i) => c.path[..=i].to_string(),
            None => c.path.clone(),
        };
        let removed = c.after == Val::Absent;
        match groups.iter_mut().find(|(p, ..)| *p == prefix) {
            Some(g) => {
                g.1 += 1;
                g.2 &= removed;
            }
            None => groups.push((prefix, 1, removed)),
        }
    }
    let mut lines: Vec<String> = groups
        .iter()
        .take(OTHER_READING_LINES)
        .map(|(p, n, removed)| {
            let what = if *removed { "removed" } else { "changed" };
            if *n == 1 {
                format!("{p} {what}")
            } else {
                format!("{p}: {n} fields {what}")
            }
        })
        .collect();
    if groups.len() > lines.len() || more > 0 {
        lines.push("and more".to_string());
    }
    step.notes.push(format!(
        "sent as a JSON merge patch instead (the log cannot tell), it would also have: {}",
        lines.join("; ")
    ));
}

/// Whether a stored body is the object (not a `Status`, not a patch).
fn looks_like_object(v: &Value) -> bool {
    v.get("metadata").is_some_and(Value::is_object)
        && v.get("kind").and_then(Value::as_str) != Some("Status")
}

/// A name from a body or URI in a note: bounded, no markers, no control characters.
fn shown(s: &str) -> String {
    let s = crate::marker::replace(s, "[redacted]");
    let mut out: String = s
        .chars()
        .take(128)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 128 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
