//! A small deterministic YAML writer for the shapes a proposal holds (Role, ClusterRole, RoleBinding,
//! ClusterRoleBinding), in the layout of kubectl's and audit2rbac's output: keys in alphabetical order, lists
//! of scalars as `- item`, scalars plain when YAML reads them back as the same string, else double-quoted
//! with JSON escapes (a JSON string is a valid YAML double-quoted scalar).

use std::fmt::Write as _;

use crate::model::{PolicyRule, RBAC_GROUP, Subject};

/// The API version of the objects written.
const API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// `s` as a YAML scalar that reads back as the string `s`.
pub fn scalar(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// Whether `s` may be written plain.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Words YAML 1.1 or 1.2 reads as booleans or null.
    const SPECIAL: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    if SPECIAL.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return false;
    }
    // Anything that might read as a number (a digit, sign or dot first).
    if first.is_ascii_digit() || matches!(first, '+' | '-' | '.') {
        return false;
    }
    let safe =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '-' | '@');
    s.chars().all(safe) && !s.ends_with(':') && !s.contains("::") && !s.contains(": ")
}

/// A Role (`namespace` set) or ClusterRole.
pub fn role(name: &str, namespace: Option<&str>, rules: &[PolicyRule]) -> String {
    let mut out = String::new();
    let kind = if namespace.is_some() {
        "Role"
    } else {
        "ClusterRole"
    };
    header(&mut out, kind, name, namespace);
    if rules.is_empty() {
        out.push_str("rules: []\n");
        return out;
    }
    out.push_str("rules:\n");
    for r in rules {
        let fields: [(&str, &Vec<String>); 5] = [
            ("apiGroups", &r.api_groups),
            ("nonResourceURLs", &r.non_resource_urls),
            ("resourceNames", &r.resource_names),
            ("resources", &r.resources),
            ("verbs", &r.verbs),
        ];
        let mut first = true;
        for (field, items) in fields {
            if items.is_empty() && field != "verbs" {
                continue;
            }
            let lead = if first { "- " } else { "  " };
            first = false;
            if items.is_empty() {
                let _ = writeln!(out, "{lead}{field}: []");
                continue;
            }
            let _ = writeln!(out, "{lead}{field}:");
            for i in items {
                let _ = writeln!(out, "  - {}", scalar(i));
            }
        }
    }
    out
}

/// A RoleBinding (`namespace` set, to a Role of that name) or ClusterRoleBinding (to a ClusterRole).
pub fn binding(name: &str, namespace: Option<&str>, subject: &Subject) -> String {
    let mut out = String::new();
    let (kind, role_kind) = if namespace.is_some() {
        ("RoleBinding", "Role")
    } else {
        ("ClusterRoleBinding", "ClusterRole")
    };
    header(&mut out, kind, name, namespace);
    let _ = writeln!(
        out,
        "roleRef:\n  apiGroup: {RBAC_GROUP}\n  kind: {role_kind}\n  name: {}",
        scalar(name)
    );
    out.push_str("subjects:\n");
    if subject.kind == "ServiceAccount" {
        let _ = writeln!(
            out,
            "- kind: ServiceAccount\n  name: {}\n  namespace: {}",
            scalar(&subject.name),
            scalar(&subject.namespace)
        );
    } else {
        let _ = writeln!(
            out,
            "- apiGroup: {RBAC_GROUP}\n  kind: {}\n  name: {}",
            scalar(&subject.kind),
            scalar(&subject.name)
        );
    }
    out
}

fn header(out: &mut String, kind: &str, name: &str, namespace: Option<&str>) {
    let _ = writeln!(
        out,
        "apiVersion: {API_VERSION}\nkind: {kind}\nmetadata:\n  name: {}",
        scalar(name)
    );
    if let Some(ns) = namespace {
        let _ = writeln!(out, "  namespace: {}", scalar(ns));
    }
}

/// `# text` for each line of `text` (control characters replaced: a comment cannot end early).
pub fn comment(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l: String = l
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            format!("# {l}\n")
        })
        .collect()
}
