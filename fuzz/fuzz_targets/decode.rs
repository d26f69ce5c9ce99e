//! Input bytes as the binary and the webhook read them: `decode_value` → `Event::parse` of each record →
//! `attributes()` → a fixed policy's `evaluate` → `Redactor::redact` with a fixed key.
//!
//! Checks: nothing panics (the model and policy crates promise totality on any input), and the redaction
//! invariants (a value already a redaction marker is kept by design):
//! - for an event on the `secrets` resource, no string found under `data` of the original
//!   `requestObject`/`responseObject` is still at that place in the redacted output;
//! - for an event on a pod-bearing resource (`pods`, `deployments`, `cronjobs`... of the core, `apps`,
//!   `extensions` and `batch` groups), every `env` entry anywhere in a redacted body whose `name` contains
//!   `password`, `secret` or `token` (ASCII case-insensitive: a subset of the redactor's secret-like names)
//!   has no literal `value` left but a marker;
//! - for an event on `configmaps`, the same for the keys of the bodies' top-level `data` and `binaryData`;
//! - for any event, the request URI's query parameters named `token`, `access_token`, `password` or `secret`
//!   (after percent-decoding, any case) carry markers, and so do exec `command` arguments `--password=VALUE`.

#![no_main]

use std::borrow::Cow;
use std::sync::LazyLock;

use kubetrail_model::{Event, decode_value};
use kubetrail_policy::{GenerateOptions, Policy, RedactionKey, Redactor};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

static REDACTOR: LazyLock<Redactor> =
    LazyLock::new(|| Redactor::new(RedactionKey::from_bytes([7; 32])));

/// The recommended policy (`kubetrail policy generate`): users, groups, verbs, resources, namespaces and
/// non-resource URLs, so evaluation walks every matcher.
static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let opts = GenerateOptions {
        production_namespaces: vec!["prod".into()],
        noisy_users: vec!["system:serviceaccount:ops:operator".into()],
        pod_bodies: true,
    };
    let loaded = kubetrail_policy::load(&kubetrail_policy::generate(&opts));
    loaded.policy.expect("the generated policy loads")
});

fuzz_target!(|data: &[u8]| {
    let text = match std::str::from_utf8(data) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(data),
    };
    // Whole, as a document or a webhook body is read...
    decode(&text);
    // ...and line by line, as JSON lines are.
    if text.trim().contains('\n') {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            decode(line);
        }
    }
});

fn decode(text: &str) {
    decode_value(text, &mut |result| {
        let Ok(record) = result else { return };
        let Ok(event) = Event::parse(&record.json) else {
            return;
        };
        let attributes = event.attributes();
        let _ = POLICY.evaluate(&attributes);
        let _ = (event.received_at(), event.code());
        let (redacted, _counts) = REDACTOR.redact(&event, &record.json);
        check_secrets_redacted(&event, redacted.as_str());
        check_secret_like_redacted(&event, redacted.as_str());
    });
}

/// The bodies of an event, found without parsing the rest of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bodies<'a> {
    #[serde(borrow, default)]
    request_object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_object: Option<&'a RawValue>,
}

fn check_secrets_redacted(event: &Event<'_>, redacted: &str) {
    if event.object_ref.as_ref().is_none_or(|o| o.resource != "secrets") {
        return;
    }
    let after: Bodies = serde_json::from_str(redacted)
        .unwrap_or_else(|e| panic!("redacted secrets event is not an object with bodies: {e}"));
    let pairs = [
        ("requestObject", event.request_object, after.request_object),
        ("responseObject", event.response_object, after.response_object),
    ];
    for (field, before, after) in pairs {
        let Some(before) = before else { continue };
        // A body serde_json cannot read as a Value (too deep, a number out of range) must be dropped.
        let Ok(before) = serde_json::from_str::<Value>(before.get()) else {
            assert!(
                after.is_none_or(|a| a.get() == "null"),
                "{field}: unreadable secrets body kept"
            );
            continue;
        };
        let secrets = data_strings(&before);
        if secrets.is_empty() {
            continue;
        }
        let Some(after) = after else { continue };
        let after: Value = serde_json::from_str(after.get())
            .unwrap_or_else(|e| panic!("{field}: redacted body is not JSON: {e}"));
        let after_data = after.get("data");
        for (key, value) in secrets {
            let kept = match key {
                None => after_data.and_then(Value::as_str),
                Some(key) => after_data.and_then(|d| d.get(key)).and_then(Value::as_str),
            };
            assert!(
                kept != Some(value),
                "{field}.data{}: secret value of {} bytes survived redaction",
                key.map(|k| format!(".{k}")).unwrap_or_default(),
                value.len()
            );
        }
    }
}

/// The strings under a body's top-level `data` (`data` itself when it is a string), with their key; markers
/// (values already redacted) left out.
fn data_strings(body: &Value) -> Vec<(Option<&str>, &str)> {
    match body.get("data") {
        Some(Value::String(s)) if !is_marker(s) => vec![(None, s.as_str())],
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (Some(k.as_str()), v)))
            .filter(|(_, v)| !is_marker(v))
            .collect(),
        _ => Vec::new(),
    }
}

/// The redactor's marker, `kubetrail-redacted:len=N:hmac=F` (a copy of its private `is_marker`).
fn is_marker(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("kubetrail-redacted:len=") else {
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

/// Resources whose bodies carry pod specs (in groups whose bodies the redactor reads for env).
const POD_BEARING: &[&str] = &[
    "pods",
    "podtemplates",
    "replicationcontrollers",
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "controllerrevisions",
    "jobs",
    "cronjobs",
];

/// A subset of the redactor's secret-like names: whatever it redacts, it redacts at least these.
fn secret_like(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|p| name.contains(p))
}

fn check_secret_like_redacted(event: &Event<'_>, redacted: &str) {
    let after: Value = serde_json::from_str(redacted)
        .unwrap_or_else(|e| panic!("redacted event is not JSON: {e}"));
    if let Some(o) = &event.object_ref {
        let group_read = matches!(&*o.api_group, "" | "apps" | "extensions" | "batch");
        let bodies = ["requestObject", "responseObject"].map(|f| after.get(f));
        if group_read
            && POD_BEARING.contains(&&*o.resource)
            && matches!(&*o.subresource, "" | "status" | "ephemeralcontainers")
        {
            for body in bodies.into_iter().flatten() {
                check_env(body);
            }
        }
        if o.api_group.is_empty() && o.resource == "configmaps" {
            for body in bodies.into_iter().flatten() {
                for field in ["data", "binaryData"] {
                    if let Some(Value::Object(map)) = body.get(field) {
                        for (key, value) in map {
                            assert!(
                                !secret_like(key) || value.is_null() || is_marker_value(value),
                                "configmap {field} value of {} bytes under a secret-like key survived",
                                value.to_string().len()
                            );
                        }
                    }
                }
            }
        }
    }
    if let Some(uri) = after.get("requestURI").and_then(Value::as_str) {
        check_uri(uri);
    }
}

/// Every `env` entry in `value` with a secret-like name has a marker (or null) for its `value`.
fn check_env(value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if let ("env", Value::Array(entries)) = (key.as_str(), child) {
                    for entry in entries {
                        let name = entry.get("name").and_then(Value::as_str);
                        if let (Some(name), Some(v)) = (name, entry.get("value")) {
                            assert!(
                                !secret_like(name) || v.is_null() || is_marker_value(v),
                                "env value of {} bytes under a secret-like name survived",
                                v.to_string().len()
                            );
                        }
                    }
                }
                check_env(child);
            }
        }
        Value::Array(items) => items.iter().for_each(check_env),
        _ => {}
    }
}

fn is_marker_value(v: &Value) -> bool {
    v.as_str().is_some_and(is_marker)
}

fn check_uri(uri: &str) {
    let Some((_, query)) = uri.split_once('?') else {
        return;
    };
    for param in query.split('&') {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let key = String::from_utf8_lossy(&percent_decode(key)).to_ascii_lowercase();
        if matches!(
            key.as_str(),
            "token" | "access_token" | "password" | "secret"
        ) {
            assert!(
                value.is_empty() || is_marker(value),
                "query parameter value of {} bytes survived",
                value.len()
            );
        }
        if key == "command" {
            let arg = percent_decode(value);
            if let Some(rest) = arg.strip_prefix(b"--password=")
                && !rest.starts_with(b"\"")
                && !rest.starts_with(b"'")
            {
                let end = rest
                    .iter()
                    .position(|&c| {
                        c.is_ascii_whitespace() || matches!(c, b'&' | b';' | b',' | b'"' | b'\'')
                    })
                    .unwrap_or(rest.len());
                let secret = &rest[..end];
                assert!(
                    secret.is_empty() || std::str::from_utf8(secret).is_ok_and(is_marker),
                    "exec --password value of {} bytes survived",
                    secret.len()
                );
            }
        }
    }
}

/// `%XX` decoded and `+` as space: a copy of the redactor's, kept apart on purpose so that the oracle does not
/// share a bug of the code it checks.
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
