//! Redaction: the one place secret material leaves an audit event, before anything stores, ships or shows it.
//!
//! kube-apiserver logs bodies verbatim at `Request` and `RequestResponse` level, whatever kind of object they
//! hold, and policies in the wild log secrets at those levels by mistake. So kubetrail never trusts the policy:
//! every event passes through [`Redactor::redact`] before its first byte reaches disk, and nothing downstream
//! can take an event that did not (a [`Redacted`] can only be made here).
//!
//! What is redacted (the key stays, the value becomes a marker):
//! - Secret `data` and `stringData` values, in request and response bodies: a Secret, a SecretList's items,
//!   a Secret nested anywhere (a `List`, a `Table` row, a `Status`, any object with `kind: Secret`), and, for
//!   requests on the `secrets` resource, anything shaped like one: merge and strategic merge patches
//!   (`{"data":{..},"stringData":{..}}` at any depth), JSON patches (`{"op":..,"path":"/data/x","value":..}`,
//!   `path: /data` with an object value, and any op whose path is not plainly metadata) and a body that is a
//!   bare string. kubectl's `kubectl.kubernetes.io/last-applied-configuration` annotation holds a whole copy
//!   of the Secret: its values are redacted inside it (the whole annotation, if it is not JSON).
//! - The issued token of a TokenRequest (`status.token`, `serviceaccounts/token` responses).
//! - The reviewed token of a TokenReview (`spec.token`, in the request and the response).
//! - Credentials in the request URI's query string (`access_token`, `token`, `id_token` and friends, keys
//!   compared case-insensitively after percent-decoding): the key stays, the value becomes a marker.
//!
//! The marker is `kubetrail-redacted:len=N:hmac=F`: `N` is the value's length in bytes (of the decoded value
//! for base64 `data`) and `F` the first 16 bytes of HMAC-SHA256 under the installation's [`RedactionKey`],
//! base64url without padding, over the value's bytes (decoded for `data`, so a value written through
//! `stringData` and read back through `data` has the same fingerprint). Why a keyed fingerprint and never a
//! plain hash: it lets an investigator tell that two events carried the same secret, or that a leaked token
//! was the one a TokenRequest issued, while a hash would let anyone holding the logs confirm guesses of
//! low-entropy values (passwords, short tokens) offline. Without the key, markers say nothing but the length.
//!
//! Cost: most events cannot carry any of this, and for them [`Redactor::redact`] decides with a few substring
//! checks on the raw bodies and returns the input borrowed, untouched. Only a possibly sensitive event is
//! parsed into a `serde_json::Value`, redacted and re-serialized (field order may change). Values are never
//! logged, here or in errors.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use kubetrail_model::Event;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::Sha256;

/// The prefix of every marker; a string of exactly the marker's shape is taken as already redacted.
const MARKER_PREFIX: &str = "kubetrail-redacted:len=";
/// Bytes of the HMAC kept in a marker (128 bits: collisions are not a concern at audit volumes).
const FINGERPRINT_BYTES: usize = 16;
/// kubectl's copy of the whole applied object, Secret values included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Query parameters that carry credentials (compared lower-cased).
const URI_TOKEN_KEYS: &[&str] = &[
    "access_token",
    "token",
    "id_token",
    "refresh_token",
    "client_secret",
    "password",
];

/// The installation's secret key for fingerprints. The binary creates it once and stores it; never printed.
#[derive(Clone)]
pub struct RedactionKey([u8; 32]);

impl RedactionKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        RedactionKey(b)
    }
}

impl fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedactionKey(..)")
    }
}

/// An event's JSON after redaction. Only [`Redactor::redact`] makes one, so holding one proves it was redacted.
#[derive(Debug, Clone)]
pub struct Redacted<'a> {
    json: Cow<'a, str>,
}

impl Redacted<'_> {
    /// The event's JSON text, with every sensitive value replaced by a marker.
    pub fn as_str(&self) -> &str {
        &self.json
    }

    pub fn into_owned(self) -> Redacted<'static> {
        Redacted {
            json: Cow::Owned(self.json.into_owned()),
        }
    }

    /// Whether anything was replaced (otherwise the text is the input, byte for byte).
    pub fn is_modified(&self) -> bool {
        matches!(self.json, Cow::Owned(_))
    }
}

/// How many values of each kind one or more events had redacted.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedactionCounts {
    /// Secret `data`/`stringData` values (also inside last-applied annotations and patches).
    pub secret_values: u64,
    /// TokenRequest `status.token`.
    pub token_request_tokens: u64,
    /// TokenReview `spec.token`.
    pub token_review_tokens: u64,
    /// Credentials in request URI query strings.
    pub uri_tokens: u64,
    /// Request or response bodies dropped whole because they could not be read as JSON values (nested past
    /// serde_json's depth limit, or numbers out of range): redacting what cannot be read means removing it.
    pub dropped_bodies: u64,
}

impl RedactionCounts {
    pub fn total(&self) -> u64 {
        self.secret_values
            + self.token_request_tokens
            + self.token_review_tokens
            + self.uri_tokens
            + self.dropped_bodies
    }

    pub fn add(&mut self, other: &Self) {
        self.secret_values += other.secret_values;
        self.token_request_tokens += other.token_request_tokens;
        self.token_review_tokens += other.token_review_tokens;
        self.uri_tokens += other.uri_tokens;
        self.dropped_bodies += other.dropped_bodies;
    }
}

/// Replaces secret values in audit events with keyed fingerprints. Cheap to share; pure.
#[derive(Clone)]
pub struct Redactor {
    key: RedactionKey,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").finish_non_exhaustive()
    }
}

/// What the request was about, as far as redaction cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Secrets,
    TokenRequest,
    TokenReview,
    Other,
}

/// How a value is measured and fingerprinted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Secret `data`: base64 of the bytes (measured decoded when it decodes).
    Base64,
    Plain,
}

impl Redactor {
    pub fn new(key: RedactionKey) -> Self {
        Redactor { key }
    }

    /// A key for another purpose, derived from the installation's key (HMAC-SHA256 of `purpose`); the
    /// installation key itself never leaves the redactor.
    pub fn derive_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key.0)
            .expect("HMAC takes keys of any length");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// Redacts one event. `json` must be the text `event` was parsed from (`Event::parse(json)`).
    ///
    /// Events that cannot carry a secret come back borrowed and byte-identical; the others are re-serialized
    /// with every sensitive value replaced by a marker (see the module docs).
    pub fn redact<'a>(&self, event: &Event<'_>, json: &'a str) -> (Redacted<'a>, RedactionCounts) {
        let mut counts = RedactionCounts::default();
        let context = context_of(event);
        let bodies = [event.request_object, event.response_object];
        let bodies_sensitive = bodies
            .iter()
            .flatten()
            .any(|b| context != Context::Other || may_hold_sensitive_kind(b));
        let uri = self.redact_uri(&event.request_uri, &mut counts);
        if !bodies_sensitive && uri.is_none() {
            return (borrowed(json), counts);
        }

        let Ok(Value::Object(mut root)) = serde_json::from_str::<Value>(json) else {
            return self.fallback(event, json, context, counts);
        };
        if let Some(uri) = uri {
            root.insert("requestURI".to_owned(), Value::String(uri));
        }
        for field in ["requestObject", "responseObject"] {
            if let Some(body) = root.get_mut(field) {
                self.redact_body(body, context, &mut counts);
            }
        }
        if counts.total() == 0 {
            return (borrowed(json), counts);
        }
        let text = serde_json::to_string(&Value::Object(root))
            .unwrap_or_else(|_| unreachable!("a Value with string keys always serializes"));
        (
            Redacted {
                json: Cow::Owned(text),
            },
            counts,
        )
    }

    /// When the event text parsed as an `Event` but not as a `Value`: rebuild it from the typed event without
    /// the bodies that might hold a secret.
    fn fallback<'a>(
        &self,
        event: &Event<'_>,
        json: &'a str,
        context: Context,
        mut counts: RedactionCounts,
    ) -> (Redacted<'a>, RedactionCounts) {
        let mut event = event.clone();
        for body in [&mut event.request_object, &mut event.response_object] {
            if body.is_some_and(|b| context != Context::Other || may_hold_sensitive_kind(b)) {
                *body = None;
                counts.dropped_bodies += 1;
            }
        }
        let mut scratch = RedactionCounts::default();
        if let Some(uri) = self.redact_uri(&event.request_uri, &mut scratch) {
            event.request_uri = Cow::Owned(uri);
        }
        counts.uri_tokens = scratch.uri_tokens;
        if counts.total() == 0 {
            return (borrowed(json), counts);
        }
        let text = serde_json::to_string(&event)
            .unwrap_or_else(|_| unreachable!("an Event with string keys always serializes"));
        (
            Redacted {
                json: Cow::Owned(text),
            },
            counts,
        )
    }

    fn redact_body(&self, body: &mut Value, context: Context, counts: &mut RedactionCounts) {
        match (context, &mut *body) {
            // Not JSON the apiserver decoded (a YAML apply patch, say): nothing tells keys from values.
            (Context::Secrets, Value::String(_)) => {
                self.replace(body, Encoding::Plain, &mut counts.secret_values)
            }
            (Context::Secrets, Value::Array(ops)) => self.redact_json_patch(ops, counts),
            (Context::TokenRequest, Value::Object(map)) => {
                self.redact_at(map, "status", "token", &mut counts.token_request_tokens)
            }
            (Context::TokenReview, Value::Object(map)) => {
                self.redact_at(map, "spec", "token", &mut counts.token_review_tokens)
            }
            (Context::TokenRequest | Context::TokenReview, Value::String(_)) => {
                let counter = if context == Context::TokenRequest {
                    &mut counts.token_request_tokens
                } else {
                    &mut counts.token_review_tokens
                };
                self.replace(body, Encoding::Plain, counter)
            }
            _ => {}
        }
        self.walk(body, context == Context::Secrets, counts);
    }

    /// Visits every object: Secrets (by kind, or everything under a `secrets` request) lose their values,
    /// TokenRequests and TokenReviews their tokens, wherever they are nested.
    fn walk(&self, value: &mut Value, in_secret: bool, counts: &mut RedactionCounts) {
        match value {
            Value::Object(map) => {
                let kind = match map.get("kind").and_then(Value::as_str) {
                    Some("Secret" | "SecretList") => Context::Secrets,
                    Some("TokenRequest") => Context::TokenRequest,
                    Some("TokenReview") => Context::TokenReview,
                    _ => Context::Other,
                };
                let in_secret = in_secret || kind == Context::Secrets;
                match kind {
                    Context::TokenRequest => {
                        self.redact_at(map, "status", "token", &mut counts.token_request_tokens)
                    }
                    Context::TokenReview => {
                        self.redact_at(map, "spec", "token", &mut counts.token_review_tokens)
                    }
                    Context::Secrets | Context::Other => {}
                }
                for (key, child) in map.iter_mut() {
                    match key.as_str() {
                        "data" if in_secret => self.redact_entries(child, Encoding::Base64, counts),
                        "stringData" if in_secret => {
                            self.redact_entries(child, Encoding::Plain, counts)
                        }
                        LAST_APPLIED if in_secret => self.redact_last_applied(child, counts),
                        _ => self.walk(child, in_secret, counts),
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, in_secret, counts);
                }
            }
            _ => {}
        }
    }

    /// A Secret's `data` or `stringData`: each value becomes a marker; anything else there, whole.
    fn redact_entries(&self, value: &mut Value, encoding: Encoding, counts: &mut RedactionCounts) {
        match value {
            Value::Object(map) => {
                for entry in map.values_mut() {
                    self.replace(entry, encoding, &mut counts.secret_values);
                }
            }
            _ => self.replace(value, encoding, &mut counts.secret_values),
        }
    }

    /// kubectl's last-applied copy of a Secret: redact inside it, or all of it if it is not JSON.
    fn redact_last_applied(&self, value: &mut Value, counts: &mut RedactionCounts) {
        let Value::String(text) = value else {
            self.walk(value, true, counts);
            return;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(mut applied) => {
                let before = counts.secret_values;
                self.walk(&mut applied, true, counts);
                if counts.secret_values != before {
                    *text = applied.to_string();
                }
            }
            Err(_) => self.replace(value, Encoding::Plain, &mut counts.secret_values),
        }
    }

    /// A JSON patch (RFC 6902) on a Secret: values under `/data` and `/stringData` (whole maps too), and any
    /// value at a path that is not plainly metadata. Whole-object and metadata values are left to `walk`.
    fn redact_json_patch(&self, ops: &mut [Value], counts: &mut RedactionCounts) {
        for op in ops {
            let Value::Object(op) = op else { continue };
            let Some(path) = op.get("path").and_then(Value::as_str) else {
                continue;
            };
            let path = path.to_owned();
            let Some(value) = op.get_mut("value") else {
                continue;
            };
            match path.as_str() {
                "/data" => self.redact_entries(value, Encoding::Base64, counts),
                "/stringData" => self.redact_entries(value, Encoding::Plain, counts),
                p if p.starts_with("/data/") => {
                    self.replace(value, Encoding::Base64, &mut counts.secret_values)
                }
                p if p.starts_with("/stringData/") => {
                    self.replace(value, Encoding::Plain, &mut counts.secret_values)
                }
                "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration" => {
                    self.redact_last_applied(value, counts)
                }
                "" | "/" | "/type" | "/immutable" | "/kind" | "/apiVersion" => {}
                p if p == "/metadata" || p.starts_with("/metadata/") => {}
                // A path we cannot read (a typo, other casing, an array index): its value may be a secret.
                _ => self.replace(value, Encoding::Plain, &mut counts.secret_values),
            }
        }
    }

    /// `map[outer][inner]` becomes a marker, if present.
    fn redact_at(&self, map: &mut Map<String, Value>, outer: &str, inner: &str, counter: &mut u64) {
        if let Some(Value::Object(outer)) = map.get_mut(outer)
            && let Some(value) = outer.get_mut(inner)
        {
            self.replace(value, Encoding::Plain, counter);
        }
    }

    /// Replaces one value by its marker (null, and markers already made, stay as they are).
    fn replace(&self, value: &mut Value, encoding: Encoding, counter: &mut u64) {
        let marker = match &*value {
            Value::Null => return,
            Value::String(s) if is_marker(s) => return,
            Value::String(s) => match encoding {
                Encoding::Base64 => match STANDARD.decode(s.as_bytes()) {
                    Ok(bytes) => self.marker(&bytes),
                    Err(_) => self.marker(s.as_bytes()),
                },
                Encoding::Plain => self.marker(s.as_bytes()),
            },
            other => self.marker(other.to_string().as_bytes()),
        };
        *value = Value::String(marker);
        *counter += 1;
    }

    fn marker(&self, bytes: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(bytes);
        let tag = mac.finalize().into_bytes();
        format!(
            "{MARKER_PREFIX}{}:hmac={}",
            bytes.len(),
            URL_SAFE_NO_PAD.encode(&tag[..FINGERPRINT_BYTES])
        )
    }

    /// The request URI with credential values in its query replaced, or `None` if it has none.
    fn redact_uri(&self, uri: &str, counts: &mut RedactionCounts) -> Option<String> {
        let (path, query) = uri.split_once('?')?;
        let mut changed = false;
        let mut out = String::with_capacity(uri.len() + 64);
        out.push_str(path);
        out.push('?');
        for (i, param) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match param.split_once('=') {
                Some((key, value)) if is_token_key(key) && !is_marker(value) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(&self.marker(&percent_decode(value)));
                    counts.uri_tokens += 1;
                    changed = true;
                }
                _ => out.push_str(param),
            }
        }
        changed.then_some(out)
    }
}

fn borrowed(json: &str) -> Redacted<'_> {
    Redacted {
        json: Cow::Borrowed(json),
    }
}

/// What the request was about: the object reference, or, when there is none, the request path.
fn context_of(event: &Event<'_>) -> Context {
    match &event.object_ref {
        Some(o) => context_for(&o.resource, &o.subresource),
        None => {
            let path = event.request_uri.split('?').next().unwrap_or("");
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            // The resource is the segment before the name or the last one; check both positions from the end.
            match segments.as_slice() {
                [.., resource, _name, sub] if context_for(resource, sub) != Context::Other => {
                    context_for(resource, sub)
                }
                [.., resource, _name] if context_for(resource, "") != Context::Other => {
                    context_for(resource, "")
                }
                [.., resource] => context_for(resource, ""),
                [] => Context::Other,
            }
        }
    }
}

fn context_for(resource: &str, subresource: &str) -> Context {
    match (resource, subresource) {
        ("secrets", _) => Context::Secrets,
        ("serviceaccounts", "token") | ("tokenrequests", _) => Context::TokenRequest,
        ("tokenreviews", _) => Context::TokenReview,
        _ => Context::Other,
    }
}

/// Whether a body could name a sensitive kind. A superset of `walk`'s checks: every such kind contains
/// `Secret` or `TokenRe`, unless the JSON spells it with `\u` escapes, which also sends the body to `walk`.
fn may_hold_sensitive_kind(body: &RawValue) -> bool {
    let text = body.get();
    text.contains("Secret") || text.contains("TokenRe") || text.contains("\\u")
}

fn is_token_key(key: &str) -> bool {
    let key = percent_decode(key);
    URI_TOKEN_KEYS
        .iter()
        .any(|k| key.eq_ignore_ascii_case(k.as_bytes()))
}

/// `%XX` decoded (and `+` as space, as query strings do); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Exactly the shape `marker` makes: `kubetrail-redacted:len=<digits>:hmac=<22 base64url chars>`.
fn is_marker(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(MARKER_PREFIX) else {
        return false;
    };
    let Some((len, fingerprint)) = rest.split_once(":hmac=") else {
        return false;
    };
    !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && fingerprint.len() == 22
        && fingerprint
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%41b"), b"aAb");
        assert_eq!(percent_decode("a%4"), b"a%4");
        assert_eq!(percent_decode("%zz"), b"%zz");
        assert_eq!(percent_decode("a+b"), b"a b");
        assert_eq!(percent_decode("%41"), b"A");
    }

    #[test]
    fn markers_are_recognised() {
        let r = Redactor::new(RedactionKey::from_bytes([7; 32]));
        let m = r.marker(b"hunter2");
        assert!(is_marker(&m), "{m}");
        assert!(m.starts_with("kubetrail-redacted:len=7:hmac="));
        assert!(!is_marker("kubetrail-redacted:len=7:hmac=short"));
        assert!(!is_marker(
            "kubetrail-redacted:len=:hmac=AAAAAAAAAAAAAAAAAAAAAA"
        ));
    }

    #[test]
    fn debug_never_prints_the_key() {
        let key = RedactionKey::from_bytes([0xAB; 32]);
        assert_eq!(format!("{key:?}"), "RedactionKey(..)");
        assert!(!format!("{:?}", Redactor::new(key)).contains("171"));
    }
}
