//! What happened to one Kubernetes object, change by change, from its stored audit events; and which exec,
//! attach or port-forward session a request was. Pure interpretation: no IO, no async; total on any input
//! (odd JSON gives notes, never a panic) and bounded output (capped change lists, cut values, a replay state
//! of one JSON value).
//!
//! - [`diff`]: the leaf-level changes between two states of an object.
//! - [`patch`]: the type of a stored patch request, applying it, and the fields it sets.
//! - [`replay`]: one object's writes in time order, each with what it changed.
//! - [`session`]: exec/attach/port-forward requests from their URIs.

pub mod diff;
#[cfg(test)]
mod fuzz;
mod marker;
pub mod patch;
mod path;
pub mod replay;
mod schema;
pub mod session;
mod strategic;

pub use diff::{FieldChange, Val};
pub use patch::PatchType;
pub use replay::{Action, Replay, Step, Write};
pub use session::{Session, SessionKind, printable, shell_word};

/// How deep [`parse_event`] keeps a stored event: below serde_json's limit of 128 levels.
pub const MAX_EVENT_DEPTH: usize = 100;

/// A stored event as JSON, even one serde_json would refuse where Go's reader, and so kube-apiserver, takes
/// it (a body may carry an unknown field only to make the event unreadable): a subtree nested deeper than
/// [`MAX_EVENT_DEPTH`] (Go takes 10,000 levels) is replaced by the string `"[nested too deep]"`, and a lone
/// UTF-16 surrogate escape (`"\ud800"`) by U+FFFD, as Go reads it; the rest of the body, the change it
/// hides among, is still read. `None` for text that is not JSON.
pub fn parse_event(text: &str) -> Option<serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(_) => serde_json::from_str(&cut_deep(text, MAX_EVENT_DEPTH)).ok(),
    }
}

/// `text` (JSON) with each object or list that starts deeper than `max` levels replaced by
/// `"[nested too deep]"`: a byte scan that follows strings and their escapes, no recursion.
fn cut_deep(text: &str, max: usize) -> String {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = string_end(b, i);
                push_string(&mut out, &b[i..end]);
                i = end;
                continue;
            }
            b'{' | b'[' if depth >= max => {
                // Skip the whole value.
                let mut d = 0usize;
                let mut j = i;
                while j < b.len() {
                    match b[j] {
                        b'"' => {
                            j = string_end(b, j);
                            continue;
                        }
                        b'{' | b'[' => d += 1,
                        b'}' | b']' => {
                            d -= 1;
                            if d == 0 {
                                j += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                out.extend_from_slice(b"\"[nested too deep]\"");
                i = j;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(b[i]);
        i += 1;
    }
    // Cut only at ASCII bytes: still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// A JSON string (with its quotes) with each `\uXXXX` escape of a lone surrogate written `\ufffd`.
fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    let unit = |at: usize| -> Option<u32> {
        if s.get(at) == Some(&b'\\') && s.get(at + 1) == Some(&b'u') {
            std::str::from_utf8(s.get(at + 2..at + 6)?)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        } else {
            None
        }
    };
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            match unit(i) {
                Some(hi @ 0xD800..=0xDBFF) if matches!(unit(i + 6), Some(0xDC00..=0xDFFF)) => {
                    let _ = hi;
                    out.extend_from_slice(&s[i..i + 12]);
                    i += 12;
                }
                Some(0xD800..=0xDFFF) => {
                    out.extend_from_slice(b"\\ufffd");
                    i += 6;
                }
                _ => {
                    // Any other escape, whole (`\\`, `\"`): the next byte is not a structure.
                    out.extend_from_slice(&s[i..(i + 2).min(s.len())]);
                    i += 2;
                }
            }
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
}

/// The index just past the string that starts with the quote at `start` (or the end of `b`).
fn string_end(b: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// The API group of the built-in kinds' resources (`""`: the core group), for telling a built-in object
/// from a custom resource of the same plural (`services` and Knative's `services.serving.knative.dev`).
const BUILTIN_GROUPS: [(&str, &str); 40] = [
    ("pods", ""),
    ("services", ""),
    ("configmaps", ""),
    ("secrets", ""),
    ("serviceaccounts", ""),
    ("namespaces", ""),
    ("nodes", ""),
    ("endpoints", ""),
    ("persistentvolumeclaims", ""),
    ("persistentvolumes", ""),
    ("replicationcontrollers", ""),
    ("resourcequotas", ""),
    ("limitranges", ""),
    ("podtemplates", ""),
    ("deployments", "apps"),
    ("replicasets", "apps"),
    ("statefulsets", "apps"),
    ("daemonsets", "apps"),
    ("controllerrevisions", "apps"),
    ("jobs", "batch"),
    ("cronjobs", "batch"),
    ("roles", "rbac.authorization.k8s.io"),
    ("rolebindings", "rbac.authorization.k8s.io"),
    ("clusterroles", "rbac.authorization.k8s.io"),
    ("clusterrolebindings", "rbac.authorization.k8s.io"),
    ("ingresses", "networking.k8s.io"),
    ("ingressclasses", "networking.k8s.io"),
    ("networkpolicies", "networking.k8s.io"),
    ("poddisruptionbudgets", "policy"),
    ("horizontalpodautoscalers", "autoscaling"),
    (
        "mutatingwebhookconfigurations",
        "admissionregistration.k8s.io",
    ),
    (
        "validatingwebhookconfigurations",
        "admissionregistration.k8s.io",
    ),
    (
        "validatingadmissionpolicies",
        "admissionregistration.k8s.io",
    ),
    (
        "validatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
    ),
    ("customresourcedefinitions", "apiextensions.k8s.io"),
    ("leases", "coordination.k8s.io"),
    ("certificatesigningrequests", "certificates.k8s.io"),
    ("storageclasses", "storage.k8s.io"),
    ("priorityclasses", "scheduling.k8s.io"),
    ("runtimeclasses", "node.k8s.io"),
];

/// The API group of the built-in resource `resource` (`""` for the core group), `None` when no built-in
/// kind has that plural.
pub fn builtin_group(resource: &str) -> Option<&'static str> {
    BUILTIN_GROUPS
        .iter()
        .find(|(r, _)| *r == resource)
        .map(|(_, g)| *g)
}

/// The command that shows an object's history: `kubetrail history deployments/api -n prod` (`namespace`
/// empty for a cluster-scoped object; the group written out, `services.serving.knative.dev/api`, when it is
/// not the built-in kind's), each argument quoted for a shell ([`shell_word`]).
pub fn history_command(resource: &str, group: &str, namespace: &str, name: &str) -> String {
    // An empty group is the core group, or not known (an alert's target does not carry it).
    let kind = if group.is_empty() || builtin_group(resource) == Some(group) {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let object = shell_word(&format!("{kind}/{name}"));
    if namespace.is_empty() {
        format!("kubetrail history {object}")
    } else {
        format!("kubetrail history {object} -n {}", shell_word(namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_nested_deeper_than_serde_reads_are_read_with_the_deep_part_cut() {
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        let text = format!(
            r#"{{"requestObject":{{"x":{deep},"s":"a \"[{{\" b","spec":{{"image":"evil/api:2"}}}}}}"#
        );
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
        let v = parse_event(&text).expect("read");
        assert_eq!(v["requestObject"]["spec"]["image"], "evil/api:2");
        assert_eq!(
            v["requestObject"]["s"], "a \"[{\" b",
            "strings are not scanned as structure"
        );
        let mut x = &v["requestObject"]["x"];
        let mut levels = 0;
        while let Some(inner) = x.get(0) {
            x = inner;
            levels += 1;
        }
        assert_eq!(x, "[nested too deep]");
        assert!(levels < MAX_EVENT_DEPTH);
        assert_eq!(parse_event("not json"), None);
        // A lone surrogate escape, which Go reads as U+FFFD and serde_json refuses: the change beside it read.
        let lone = r#"{"requestObject":{"metadata":{"annotations":{"x":"\ud800"}},"spec":{"image":"evil/api:2"},"ok":"\ud83d\ude00"}}"#;
        assert!(serde_json::from_str::<serde_json::Value>(lone).is_err());
        let v = parse_event(lone).expect("read");
        assert_eq!(v["requestObject"]["spec"]["image"], "evil/api:2");
        assert_eq!(
            v["requestObject"]["metadata"]["annotations"]["x"],
            "\u{fffd}"
        );
        assert_eq!(
            v["requestObject"]["ok"], "\u{1f600}",
            "a valid pair is kept"
        );
    }

    #[test]
    fn history_commands_are_quoted() {
        assert_eq!(
            history_command("deployments", "apps", "prod", "api"),
            "kubetrail history deployments/api -n prod"
        );
        assert_eq!(
            history_command("nodes", "", "", "n1"),
            "kubetrail history nodes/n1"
        );
        assert_eq!(
            history_command("configmaps", "", "a b", "x;rm"),
            "kubetrail history 'configmaps/x;rm' -n 'a b'"
        );
        assert_eq!(
            history_command("services", "serving.knative.dev", "prod", "api"),
            "kubetrail history services.serving.knative.dev/api -n prod",
            "a custom resource with a built-in plural names its group"
        );
        assert_eq!(
            history_command("certificates", "cert-manager.io", "prod", "tls"),
            "kubetrail history certificates.cert-manager.io/tls -n prod"
        );
    }
}
