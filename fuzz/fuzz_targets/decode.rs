//! Input bytes as the binary and the webhook read them: `decode_value` → `Event::parse` of each record →
//! `attributes()` → a fixed policy's `evaluate` → `Redactor::redact` with a fixed key.
//!
//! Checks: nothing panics (the model and policy crates promise totality on any input), and the redaction
//! invariant: for an event on the `secrets` resource, no string found under `data` of the original
//! `requestObject`/`responseObject` is still at that place in the redacted output (unless it already is a
//! redaction marker, which the redactor keeps by design).

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
