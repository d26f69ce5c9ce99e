//! The only edits the pipeline makes to an event's JSON: cutting an event too large to store, the way
//! kube-apiserver's truncate backend does, and kubetrail's own annotations.
//!
//! Cutting keeps every member but `requestObject` and `responseObject` and records the original size in the
//! `kubetrail.io/truncated` annotation. When even that is too large (a huge annotation or URI), only the
//! request's metadata is kept: the members of an audit event ([`kubetrail_model::EVENT_KEYS`]) but its
//! bodies, each at most [`MAX_MEMBER_BYTES`] (a longer string is cut, so a huge auditID still leaves an
//! event; a longer object is left out). The input may be the
//! beginning of an event cut anywhere (a log line longer than the line limit): the members complete before
//! the cut are kept, which for kube-apiserver's field order is all of the metadata.
//!
//! Hand-written rather than a `serde_json::Value` round trip: the bodies being dropped can be tens of MiB and
//! must not be parsed, and a cut event is not valid JSON at all.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Annotation on an event stored cut: the event's original size in bytes.
pub const TRUNCATED: &str = "kubetrail.io/truncated";
/// Annotation on a request that reused an earlier request's auditID with different content: what the
/// earlier request was.
pub const AUDIT_ID_REUSE: &str = "kubetrail.io/audit-id-reuse";

/// The largest member kept in a metadata-only event.
pub const MAX_MEMBER_BYTES: usize = 64 << 10;

fn is_body(key: &str) -> bool {
    key == "requestObject" || key == "responseObject"
}

/// The top-level members of a JSON object, as raw text, in order; stops at the first member that is not
/// complete (the rest of a cut object). `None` if `json` does not start an object.
fn members(json: &str) -> Option<Vec<(String, &str)>> {
    let s = json.trim_start();
    let mut rest = s.strip_prefix('{')?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if !rest.starts_with('"') {
            break;
        }
        let mut keys = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        let Some(Ok(key)) = keys.next() else { break };
        rest = rest[keys.byte_offset()..].trim_start();
        let Some(after) = rest.strip_prefix(':') else {
            break;
        };
        let mut values = serde_json::Deserializer::from_str(after).into_iter::<&RawValue>();
        let Some(Ok(value)) = values.next() else {
            break;
        };
        out.push((key, value.get()));
        rest = after[values.byte_offset()..].trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None => break,
        }
    }
    Some(out)
}

/// Writes an object of `members`, with `extra` annotations merged into its `annotations` (created if
/// missing; an `annotations` that is not an object is replaced).
fn write(members: &[(String, &str)], extra: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(members.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
    out.push('{');
    let mut annotated = false;
    let mut first = true;
    let mut put = |out: &mut String, key: &str, value: &str| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(&Value::String(key.to_owned()).to_string());
        out.push(':');
        out.push_str(value);
    };
    for (key, value) in members {
        if key == "annotations" && !extra.is_empty() {
            let mut map = serde_json::from_str::<Map<String, Value>>(value).unwrap_or_default();
            for (k, v) in extra {
                map.insert((*k).to_owned(), Value::String((*v).to_owned()));
            }
            put(&mut out, key, &Value::Object(map).to_string());
            annotated = true;
        } else {
            put(&mut out, key, value);
        }
    }
    if !annotated && !extra.is_empty() {
        let map: Map<String, Value> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        put(&mut out, "annotations", &Value::Object(map).to_string());
    }
    out.push('}');
    out
}

/// The event cut to at most `limit` bytes: bodies dropped, then metadata only. `original` is what the
/// `kubetrail.io/truncated` annotation says. `None` when nothing of an event could be read.
pub fn cut(json: &str, limit: usize, original: &str) -> Option<String> {
    let all = members(json)?;
    let extra = [(TRUNCATED, original)];
    let without_bodies: Vec<(String, &str)> =
        all.iter().filter(|(k, _)| !is_body(k)).cloned().collect();
    let out = write(&without_bodies, &extra);
    if out.len() <= limit {
        return Some(out);
    }
    // Strings too long are cut (owned here), other members too long are left out.
    let mut clipped: Vec<(String, String)> = Vec::new();
    let mut metadata: Vec<(String, &str)> = Vec::new();
    for (k, v) in without_bodies {
        if !kubetrail_model::EVENT_KEYS.contains(&k.as_str()) {
            continue;
        }
        if v.len() <= MAX_MEMBER_BYTES {
            metadata.push((k, v));
        } else if let Ok(text) = serde_json::from_str::<String>(v) {
            let mut end = (MAX_MEMBER_BYTES / 2).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            clipped.push((k, Value::String(text[..end].to_owned()).to_string()));
        }
    }
    metadata.extend(clipped.iter().map(|(k, v)| (k.clone(), v.as_str())));
    // At most EVENT_KEYS.len() members of MAX_MEMBER_BYTES each: far below any record limit.
    Some(write(&metadata, &extra))
}

/// The event with one more annotation (an existing one of the same key is replaced). `None` if `json` is not
/// an object.
pub fn annotate(json: &str, key: &str, value: &str) -> Option<String> {
    let all = members(json)?;
    Some(write(&all, &[(key, value)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn cut_drops_bodies_and_records_the_size() {
        let json = r#"{"kind":"Event","auditID":"a","stage":"ResponseComplete","verb":"list","requestObject":{"x":1},"responseObject":{"items":["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]},"annotations":{"authorization.k8s.io/decision":"allow"},"stageTimestamp":"t"}"#;
        let out = v(&cut(json, 200, "12345").unwrap());
        assert_eq!(out["auditID"], "a");
        assert_eq!(out["stageTimestamp"], "t");
        assert!(out.get("requestObject").is_none() && out.get("responseObject").is_none());
        assert_eq!(out["annotations"][TRUNCATED], "12345");
        assert_eq!(out["annotations"]["authorization.k8s.io/decision"], "allow");
    }

    #[test]
    fn cut_falls_back_to_metadata_and_reads_a_cut_line() {
        let huge = "x".repeat(MAX_MEMBER_BYTES + 1);
        let json = format!(
            r#"{{"auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/pods","bogus":"{huge}","responseObject":{{"items":["#
        );
        let out = v(&cut(&json, 1000, "over 9").unwrap());
        assert_eq!(out["requestURI"], "/api/v1/pods");
        assert!(out.get("bogus").is_none());
        assert_eq!(out["annotations"][TRUNCATED], "over 9");
        assert_eq!(cut("not json", 10, "1"), None);
        // Cut inside a key or a value: what came before is kept.
        let out = v(&cut(
            r#"{"auditID":"a","stage":"RequestReceived","verb":"ge"#,
            10,
            "1",
        )
        .unwrap());
        assert_eq!(out["auditID"], "a");
        assert!(out.get("verb").is_none());
    }

    // Regression: a metadata member over the size bound was left out, and an event without its auditID is
    // no event: a huge Audit-ID header lost the request altogether.
    #[test]
    fn a_huge_audit_id_is_cut_not_dropped() {
        let id = "i".repeat(MAX_MEMBER_BYTES * 2);
        let json = format!(r#"{{"level":"Metadata","auditID":"{id}","stage":"ResponseComplete"}}"#);
        let out = v(&cut(&json, 1000, "9").unwrap());
        let kept = out["auditID"].as_str().unwrap();
        assert!(!kept.is_empty() && id.starts_with(kept) && kept.len() <= MAX_MEMBER_BYTES);
        assert!(kubetrail_model::Event::parse(&out.to_string()).is_ok());
    }

    #[test]
    fn annotate_merges_into_existing_annotations() {
        let out = v(&annotate(r#"{"auditID":"a","annotations":{"k":"v"}}"#, "n", "w").unwrap());
        assert_eq!(out["annotations"], v(r#"{"k":"v","n":"w"}"#));
        let out = v(&annotate(r#"{"auditID":"a"}"#, "n", "w\"\n").unwrap());
        assert_eq!(out["annotations"]["n"], "w\"\n");
        assert_eq!(out["auditID"], "a");
        assert_eq!(annotate("[]", "n", "w"), None);
    }
}
