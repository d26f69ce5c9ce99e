//! A small deterministic YAML writer for the shapes a proposal holds (Role, ClusterRole, RoleBinding,
//! ClusterRoleBinding), in the layout of kubectl's and audit2rbac's output: keys in alphabetical order, lists
//! of scalars as `- item`, scalars plain when YAML reads them back as the same string, else double-quoted
//! with YAML escapes. YAML 1.1 parsers (go-yaml v2, PyYAML, so kubectl's older clients) also break lines at
//! U+0085, U+2028 and U+2029, so those (and every character YAML does not call printable, and the bidi
//! controls that reorder what a reviewer sees) are escaped in scalars and replaced in comments: a name in a
//! comment cannot start a key of its own.

use std::fmt::Write as _;

use crate::model::{PolicyRule, RBAC_GROUP, Subject};

/// The API version of the objects written.
const API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// `s` as a YAML scalar that reads back as the string `s`.
pub fn scalar(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// `s` double-quoted with YAML's escapes: every line break and every character that is not plainly visible
/// (controls, U+0085 as `\N`, U+2028 as `\L`, U+2029 as `\P`, bidi controls as `\uXXXX`) escaped.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if hidden(c) => {
                let n = c as u32;
                if n <= 0xff {
                    let _ = write!(out, "\\x{n:02x}");
                } else if n <= 0xffff {
                    let _ = write!(out, "\\u{n:04x}");
                } else {
                    let _ = write!(out, "\\U{n:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `c` must not appear raw in the output: a control character (C0, DEL, C1, including U+0085), a
/// line or paragraph separator, a character YAML does not allow (U+FFFE, U+FFFF), or a zero-width or
/// bidi formatting character (U+200B-U+200F, U+202A-U+202E, U+2060-U+2069, U+FEFF).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fffe}'
                | '\u{ffff}'
        )
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
    // Anything that might read as a number (a digit, sign or dot first); `@` and `` ` `` are reserved
    // indicators and `:` an indicator: none may start a plain scalar.
    if first.is_ascii_digit() || matches!(first, '+' | '-' | '.' | '@' | ':') {
        return false;
    }
    let safe =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '-' | '@');
    s.chars().all(safe) && !s.ends_with(':') && !s.contains("::") && !s.contains(": ")
}

/// A Role (`namespace` set) or ClusterRole; `notes[i]` are comments written above rule `i`.
pub fn role(
    name: &str,
    namespace: Option<&str>,
    rules: &[PolicyRule],
    notes: &[Vec<String>],
) -> String {
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
    for (i, r) in rules.iter().enumerate() {
        for note in notes.get(i).into_iter().flatten() {
            out.push_str(&comment(note));
        }
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

/// `# text` for each line of `text` (split at `\n` only; each line's [`hidden`] characters escaped), so a
/// comment cannot end early by any line break a YAML 1.1 or 1.2 parser knows.
pub fn comment(text: &str) -> String {
    text.split('\n')
        .map(|l| format!("# {}\n", escaped(l)))
        .collect()
}

/// `s` with every [`hidden`] character (line breaks included) written as `\u{XXXX}`: text from the audit
/// log for a comment, kept on its line.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if hidden(c) {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}
