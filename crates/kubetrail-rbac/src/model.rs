//! The four RBAC kinds as the authorizer reads them (k8s.io/api `rbac/v1` types): object keys, policy rules,
//! subjects and role references, read from JSON totally (a field of the wrong type reads as absent) and
//! boundedly (at most [`MAX_RULES`] rules, [`MAX_SUBJECTS`] subjects, [`MAX_STRINGS`] strings per rule
//! field, [`MAX_LABELS`] labels and selector terms are kept). The apiserver reads all of them, so an object
//! cut is not known: the cut is noted and the object is uncertain (a `*` after 10,000 junk verbs is not read,
//! so what it grants is not known).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::selector::Selector;

/// The RBAC API group.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The most rules read from one role.
pub const MAX_RULES: usize = 10_000;
/// The most subjects read from one binding.
pub const MAX_SUBJECTS: usize = 10_000;
/// The most strings read from one rule field (`verbs`, `resources`, ...).
pub const MAX_STRINGS: usize = 10_000;
/// The most aggregation selectors read from one ClusterRole.
pub const MAX_SELECTORS: usize = 1_000;
/// The most labels read from one role.
pub const MAX_LABELS: usize = 1_000;

/// One of the four RBAC kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Role,
        Kind::ClusterRole,
        Kind::RoleBinding,
        Kind::ClusterRoleBinding,
    ];

    /// The kind of a resource plural (`rolebindings`).
    pub fn from_resource(resource: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_resource() == resource)
    }

    /// The resource plural (`rolebindings`).
    pub fn as_resource(self) -> &'static str {
        match self {
            Kind::Role => "roles",
            Kind::ClusterRole => "clusterroles",
            Kind::RoleBinding => "rolebindings",
            Kind::ClusterRoleBinding => "clusterrolebindings",
        }
    }

    /// The kind of an object's `kind` field (`RoleBinding`).
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The `kind` field (`RoleBinding`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Role => "Role",
            Kind::ClusterRole => "ClusterRole",
            Kind::RoleBinding => "RoleBinding",
            Kind::ClusterRoleBinding => "ClusterRoleBinding",
        }
    }

    /// Whether objects of the kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::Role | Kind::RoleBinding)
    }

    /// Whether the kind is a binding.
    pub fn is_binding(self) -> bool {
        matches!(self, Kind::RoleBinding | Kind::ClusterRoleBinding)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object's identity. The namespace is `""` for the cluster kinds (whatever was given).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl Key {
    /// The key of `kind` `namespace/name`; the namespace is dropped for the cluster kinds.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Key {
        let namespace = if kind.namespaced() { namespace } else { "" };
        Key {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Key {
    /// `ClusterRole "admin"`, `RoleBinding "ns1/read"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, go_quote(&self.name))
        } else {
            write!(
                f,
                "{} {}",
                self.kind,
                go_quote(&format!("{}/{}", self.namespace, self.name))
            )
        }
    }
}

/// A rule of a role: k8s.io/api `rbac/v1.PolicyRule`. An empty `resourceNames` means every name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A rule from its JSON (fields of the wrong type read as empty; each list capped at [`MAX_STRINGS`]).
    pub fn from_json(v: &Value) -> PolicyRule {
        PolicyRule::read(v, "rule", &mut Vec::new())
    }

    /// A rule from its JSON, noting each field cut (`at` names the rule: `rules[3]`).
    pub(crate) fn read(v: &Value, at: &str, notes: &mut Vec<String>) -> PolicyRule {
        let mut field = |name: &str| strings(v.get(name), &format!("{at}.{name}"), notes);
        PolicyRule {
            verbs: field("verbs"),
            api_groups: field("apiGroups"),
            resources: field("resources"),
            resource_names: field("resourceNames"),
            non_resource_urls: field("nonResourceURLs"),
        }
    }
}

/// A binding's subject, or who was allowed. For a ServiceAccount whose binding left the namespace empty,
/// `namespace` is the one the apiserver defaults it to (the RoleBinding's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount` (anything else matches no one).
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

impl Subject {
    /// The user name the subject matches: `system:serviceaccount:NS:NAME` for a ServiceAccount, the name for a
    /// User (and, for a Group, the group's name).
    pub fn username(&self) -> String {
        if self.kind == "ServiceAccount" {
            format!("system:serviceaccount:{}:{}", self.namespace, self.name)
        } else {
            self.name.clone()
        }
    }

    pub(crate) fn from_json(v: &Value) -> Subject {
        Subject {
            kind: string(v.get("kind")),
            name: string(v.get("name")),
            namespace: string(v.get("namespace")),
        }
    }
}

/// A binding's `roleRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

/// An identity as the authorizer sees it: a user name and its groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub name: String,
    pub groups: Vec<String>,
}

/// What an object means to the authorizer.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Role(RoleBody),
    Binding(BindingBody),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RoleBody {
    pub rules: Vec<PolicyRule>,
    /// `Some` for a ClusterRole with an `aggregationRule`: its selectors (an `Err` is one the apiserver's
    /// `LabelSelectorAsSelector` refuses).
    pub aggregation: Option<Vec<Result<Selector, String>>>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct BindingBody {
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

impl Body {
    /// An object of `kind` with nothing known (a placeholder for an object whose content was not recorded).
    pub(crate) fn empty(kind: Kind) -> Body {
        if kind.is_binding() {
            Body::Binding(BindingBody::default())
        } else {
            Body::Role(RoleBody::default())
        }
    }

    /// The meaning of object `v` of `kind`, with a note on each part that was cut (none: all was read).
    pub(crate) fn parse(kind: Kind, v: &Value) -> (Body, Vec<String>) {
        let mut notes = Vec::new();
        let body = if kind.is_binding() {
            let r = v.get("roleRef");
            let subjects = capped(v.get("subjects"), MAX_SUBJECTS, "subjects", &mut notes)
                .iter()
                .map(Subject::from_json)
                .collect();
            Body::Binding(BindingBody {
                role_ref: RoleRef {
                    api_group: string(r.and_then(|r| r.get("apiGroup"))),
                    kind: string(r.and_then(|r| r.get("kind"))),
                    name: string(r.and_then(|r| r.get("name"))),
                },
                subjects,
            })
        } else {
            let rules = capped(v.get("rules"), MAX_RULES, "rules", &mut notes)
                .iter()
                .enumerate()
                .map(|(i, r)| PolicyRule::read(r, &format!("rules[{i}]"), &mut notes))
                .collect();
            let aggregation = match (kind, v.get("aggregationRule")) {
                (Kind::ClusterRole, Some(a)) if !a.is_null() => Some(
                    capped(
                        a.get("clusterRoleSelectors"),
                        MAX_SELECTORS,
                        "clusterRoleSelectors",
                        &mut notes,
                    )
                    .iter()
                    .enumerate()
                    .map(|(i, sel)| {
                        selector_cut(sel, i, &mut notes);
                        Selector::parse(sel)
                    })
                    .collect(),
                ),
                _ => None,
            };
            let labels = v
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    if m.len() > MAX_LABELS {
                        notes.push(cut_note("metadata.labels", MAX_LABELS, m.len()));
                    }
                    m.iter()
                        .take(MAX_LABELS)
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Body::Role(RoleBody {
                rules,
                aggregation,
                labels,
            })
        };
        (body, notes)
    }
}

/// The items of list `v` (none when it is not a list), at most `max`, noting the cut.
fn capped<'v>(
    v: Option<&'v Value>,
    max: usize,
    what: &str,
    notes: &mut Vec<String>,
) -> &'v [Value] {
    let items = v
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if items.len() > max {
        notes.push(cut_note(what, max, items.len()));
        &items[..max]
    } else {
        items
    }
}

/// `rules: cut at 10000 entries (10001 given): what follows was not read`.
fn cut_note(what: &str, max: usize, given: usize) -> String {
    format!("{what}: cut at {max} entries ({given} given): what follows was not read")
}

/// Notes the parts of aggregation selector `i` that [`Selector::parse`] cuts at [`MAX_LABELS`].
fn selector_cut(sel: &Value, i: usize, notes: &mut Vec<String>) {
    let at = format!("aggregationRule.clusterRoleSelectors[{i}]");
    if let Some(n) = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.len())
        && n > MAX_LABELS
    {
        notes.push(cut_note(&format!("{at}.matchLabels"), MAX_LABELS, n));
    }
    let exprs = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if exprs.len() > MAX_LABELS {
        notes.push(cut_note(
            &format!("{at}.matchExpressions"),
            MAX_LABELS,
            exprs.len(),
        ));
    }
    for (j, e) in exprs.iter().take(MAX_LABELS).enumerate() {
        if let Some(n) = e.get("values").and_then(Value::as_array).map(Vec::len)
            && n > MAX_LABELS
        {
            notes.push(cut_note(
                &format!("{at}.matchExpressions[{j}].values"),
                MAX_LABELS,
                n,
            ));
        }
    }
}

/// The strings of a JSON list (other items skipped), at most [`MAX_STRINGS`] (a cut noted as `what`'s).
fn strings(v: Option<&Value>, what: &str, notes: &mut Vec<String>) -> Vec<String> {
    let Some(a) = v.and_then(Value::as_array) else {
        return Vec::new();
    };
    let out: Vec<String> = a
        .iter()
        .filter_map(Value::as_str)
        .take(MAX_STRINGS)
        .map(str::to_string)
        .collect();
    if out.len() == MAX_STRINGS && a.len() > MAX_STRINGS {
        let given = a.iter().filter(|s| s.is_string()).count();
        if given > MAX_STRINGS {
            notes.push(cut_note(what, MAX_STRINGS, given));
        }
    }
    out
}

/// A JSON string field, `""` when absent or not a string.
pub(crate) fn string(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

/// `s` quoted as Go's `%q` quotes it (the authorizer's reason strings are built with it).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
