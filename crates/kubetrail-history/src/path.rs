//! Field paths as a change shows them: `spec.template.spec.containers[0].image`, keys that are not simple
//! identifiers JSON-quoted in brackets (`metadata.labels["app.kubernetes.io/name"]`), list items of a merge
//! list named by their key when there is no index (`containers[name=api]`).

use std::borrow::Cow;

use serde_json::Value;

use crate::marker;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg<'a> {
    /// A map key.
    Key(Cow<'a, str>),
    /// A list index.
    Index(usize),
    /// The item of a merge list whose merge key (first) has the value (second): `[name=api]`.
    Match(&'static str, Cow<'a, Value>),
    /// An item appended to a list (a JSON patch `add` to `/-`, a value added to a merged primitive list).
    Append,
    /// A value deleted from a primitive list (`$deleteFromPrimitiveList`).
    Delete,
}

impl Seg<'_> {
    /// The key, when this is one.
    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            Seg::Key(k) => Some(k),
            _ => None,
        }
    }
}

/// A key written bare (`spec`, `tier`, `nginx-config`).
fn simple(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The path as shown: `(root)` for the whole value.
pub(crate) fn render(segs: &[Seg<'_>]) -> String {
    if segs.is_empty() {
        return "(root)".to_string();
    }
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                let k = marker::replace(k, "[redacted]");
                if simple(&k) {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&k);
                } else {
                    out.push('[');
                    out.push_str(&Value::String(k.into_owned()).to_string());
                    out.push(']');
                }
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Seg::Match(key, value) => {
                out.push('[');
                out.push_str(key);
                out.push('=');
                match &**value {
                    Value::String(s) => {
                        let s = marker::replace(s, "[redacted]");
                        if !s.is_empty()
                            && s.bytes().all(|b| {
                                b.is_ascii_alphanumeric()
                                    || matches!(b, b'_' | b'-' | b'.' | b'/' | b':')
                            })
                        {
                            out.push_str(&s);
                        } else {
                            out.push_str(&Value::String(s.into_owned()).to_string());
                        }
                    }
                    other => out.push_str(&other.to_string()),
                }
                out.push(']');
            }
            Seg::Append => out.push_str("[+]"),
            Seg::Delete => out.push_str("[-]"),
        }
    }
    out
}

/// The steps of an RFC 6901 JSON pointer (`/spec/containers/0/image`): `~1` is `/`, `~0` is `~`; a step of
/// digits is taken as a list index and `-` as an append (without the document, `0` could also be a map key:
/// the index reading is the common one). `None` when it is not a pointer.
pub(crate) fn from_pointer(pointer: &str) -> Option<Vec<Seg<'static>>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|raw| {
                let step = raw.replace("~1", "/").replace("~0", "~");
                if step == "-" {
                    Seg::Append
                } else if !step.is_empty()
                    && step.bytes().all(|b| b.is_ascii_digit())
                    && (step == "0" || !step.starts_with('0'))
                    && let Ok(i) = step.parse()
                {
                    Seg::Index(i)
                } else {
                    Seg::Key(Cow::Owned(step))
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> Seg<'_> {
        Seg::Key(Cow::Borrowed(k))
    }

    #[test]
    fn renders_paths_readably() {
        assert_eq!(
            render(&[key("spec"), key("containers"), Seg::Index(0), key("image")]),
            "spec.containers[0].image"
        );
        assert_eq!(
            render(&[
                key("metadata"),
                key("labels"),
                key("app.kubernetes.io/name")
            ]),
            r#"metadata.labels["app.kubernetes.io/name"]"#
        );
        let api = json!("api");
        let odd = json!("a b");
        let port = json!(80);
        assert_eq!(
            render(&[
                key("containers"),
                Seg::Match("name", Cow::Borrowed(&api)),
                key("image")
            ]),
            "containers[name=api].image"
        );
        assert_eq!(
            render(&[key("containers"), Seg::Match("name", Cow::Borrowed(&odd))]),
            r#"containers[name="a b"]"#
        );
        assert_eq!(
            render(&[
                key("ports"),
                Seg::Match("containerPort", Cow::Borrowed(&port))
            ]),
            "ports[containerPort=80]"
        );
        assert_eq!(render(&[key("finalizers"), Seg::Append]), "finalizers[+]");
        assert_eq!(render(&[]), "(root)");
        assert_eq!(render(&[key("")]), r#"[""]"#);
    }

    #[test]
    fn reads_json_pointers() {
        assert_eq!(
            render(&from_pointer("/spec/template/spec/containers/0/image").unwrap()),
            "spec.template.spec.containers[0].image"
        );
        assert_eq!(
            render(&from_pointer("/metadata/annotations/a~1b~0c").unwrap()),
            r#"metadata.annotations["a/b~c"]"#
        );
        assert_eq!(render(&from_pointer("/spec/x/-").unwrap()), "spec.x[+]");
        assert_eq!(render(&from_pointer("/a/01").unwrap()), "a.01");
        assert_eq!(from_pointer("no-slash"), None);
        assert_eq!(from_pointer(""), Some(Vec::new()));
    }
}
