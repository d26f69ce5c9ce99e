//! Redaction: no Secret value, bearer token or TokenRequest token survives, whatever shape carries it; nor
//! ConfigMap values and env values under secret-like names, credentials in query strings and passwords in exec
//! commands, while what is not secret stays readable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kubetrail_model::Event;
use kubetrail_policy::{RedactionConfig, RedactionCounts, RedactionKey, Redactor};
use proptest::prelude::*;
use serde_json::{Value, json};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn redactor(seed: u8) -> Redactor {
    Redactor::new(RedactionKey::from_bytes([seed; 32]))
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

/// A ResponseComplete event at RequestResponse level about `resource[/subresource]` (core group).
fn event(
    verb: &str,
    resource: &str,
    subresource: &str,
    uri: &str,
    request: Option<Value>,
    response: Option<Value>,
) -> String {
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "7e0cbccf-0a7b-4e5c-9d8f-1b0c2d3e4f50",
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": verb,
        "user": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.7"],
        "objectRef": {"resource": resource, "namespace": "prod", "name": "db", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-01-01T00:00:00.000000Z",
        "stageTimestamp": "2026-01-01T00:00:00.010000Z"
    });
    if !subresource.is_empty() {
        e["objectRef"]["subresource"] = json!(subresource);
    }
    if let Some(r) = request {
        e["requestObject"] = r;
    }
    if let Some(r) = response {
        e["responseObject"] = r;
    }
    e.to_string()
}

/// Redacts `json` with `r`, checking the output is still an event.
fn run(r: &Redactor, json: &str) -> (String, RedactionCounts, bool) {
    let event = Event::parse(json).expect("fixture is an event");
    let (out, counts) = r.redact(&event, json);
    Event::parse(out.as_str()).expect("redacted output is an event");
    (out.as_str().to_owned(), counts, out.is_modified())
}

/// Neither the secret, nor its base64, nor its JSON spelling appears in `out`.
fn assert_absent(out: &str, secrets: &[&str]) {
    for s in secrets {
        let escaped = serde_json::to_string(s).unwrap();
        for form in [
            s.to_string(),
            b64(s),
            escaped[1..escaped.len() - 1].to_owned(),
        ] {
            assert!(!out.contains(&form), "`{form}` survived in {out}");
        }
    }
}

fn assert_present(out: &str, needles: &[&str]) {
    for n in needles {
        assert!(out.contains(n), "`{n}` missing from {out}");
    }
}

/// The marker the redactor puts in place of `value` (found through a one-value secret event).
fn marker_of(r: &Redactor, value: &str) -> String {
    let json = event(
        "create",
        "secrets",
        "",
        "/api/v1/namespaces/prod/secrets",
        Some(json!({"kind": "Secret", "apiVersion": "v1", "stringData": {"v": value}})),
        None,
    );
    let (out, _, _) = run(r, &json);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["requestObject"]["stringData"]["v"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(b64(v))))
        .collect();
    let string_data: serde_json::Map<String, Value> = string_data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db", "namespace": "prod"},
        "type": "Opaque", "data": data, "stringData": string_data
    })
}

#[test]
fn secret_create_at_request_response() {
    let r = redactor(1);
    let mut request = secret(
        &[("password", "correct-horse-battery")],
        &[("api-key", "AKIAEXAMPLEKEY0001")],
    );
    let applied = secret(&[("password", "correct-horse-battery")], &[]);
    request["metadata"]["annotations"] = json!({LAST_APPLIED: applied.to_string(), "team": "db"});
    let response = secret(
        &[
            ("password", "correct-horse-battery"),
            ("api-key", "AKIAEXAMPLEKEY0001"),
        ],
        &[],
    );
    let json = event(
        "create",
        "secrets",
        "",
        "/api/v1/namespaces/prod/secrets",
        Some(request),
        Some(response),
    );
    let (out, counts, modified) = run(&r, &json);
    assert!(modified);
    assert_absent(&out, &["correct-horse-battery", "AKIAEXAMPLEKEY0001"]);
    assert_present(
        &out,
        &[
            "\"password\"",
            "\"api-key\"",
            "\"team\":\"db\"",
            LAST_APPLIED,
        ],
    );
    assert_eq!(counts.secret_values, 5, "{counts:?}");
    assert_eq!(counts.total(), 5);
    // `data` is fingerprinted decoded, so the same value reads the same through data and stringData.
    let marker = marker_of(&r, "correct-horse-battery");
    assert_eq!(marker, marker_of(&r, "correct-horse-battery"));
    assert!(
        marker.starts_with("kubetrail-redacted:len=21:hmac="),
        "{marker}"
    );
    // request data, response data, and inside the last-applied copy
    assert_eq!(out.matches(&marker).count(), 3, "{out}");
    assert_eq!(out.matches(&marker_of(&r, "AKIAEXAMPLEKEY0001")).count(), 2);
}

#[test]
fn markers_depend_on_the_key_and_the_value() {
    let (a, b) = (redactor(1), redactor(2));
    assert_eq!(marker_of(&a, "s3cret-value"), marker_of(&a, "s3cret-value"));
    assert_ne!(marker_of(&a, "s3cret-value"), marker_of(&b, "s3cret-value"));
    assert_ne!(marker_of(&a, "s3cret-value"), marker_of(&a, "s3cret-valuf"));
    let m = marker_of(&a, "s3cret-value");
    let fingerprint = m.rsplit("hmac=").next().unwrap();
    assert_eq!(
        fingerprint.len(),
        22,
        "16 bytes, base64url without padding: {m}"
    );
}

#[test]
fn secret_list_response() {
    let r = redactor(1);
    // List items carry no kind of their own.
    let mut a = secret(&[("tls.key", "-----BEGIN PRIVATE KEY-----MIIEvQ")], &[]);
    let mut b = secret(&[("token", "eyJhbGciOiJSUzI1NiJ9.payload.sig")], &[]);
    a.as_object_mut().unwrap().remove("kind");
    b.as_object_mut().unwrap().remove("kind");
    let list = json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}, "items": [a, b]});
    let json = event(
        "list",
        "secrets",
        "",
        "/api/v1/namespaces/prod/secrets",
        None,
        Some(list),
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &[
            "-----BEGIN PRIVATE KEY-----MIIEvQ",
            "eyJhbGciOiJSUzI1NiJ9.payload.sig",
        ],
    );
    assert_present(
        &out,
        &["\"tls.key\"", "\"token\"", "\"resourceVersion\":\"42\""],
    );
    assert_eq!(counts.secret_values, 2);
}

#[test]
fn secret_merge_and_strategic_patches() {
    let r = redactor(1);
    let applied = secret(&[("password", "new-password-42")], &[]).to_string();
    let patch = json!({
        "data": {"password": b64("new-password-42"), "old": null},
        "stringData": {"pin": "8675309-jenny"},
        "metadata": {"annotations": {LAST_APPLIED: applied}}
    });
    let json = event(
        "patch",
        "secrets",
        "",
        "/api/v1/namespaces/prod/secrets/db",
        Some(patch),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["new-password-42", "8675309-jenny"]);
    assert_present(&out, &["\"password\"", "\"pin\"", "\"old\":null"]);
    assert_eq!(counts.secret_values, 3);
}

#[test]
fn secret_json_patches() {
    let r = redactor(1);
    let patch = json!([
        {"op": "add", "path": "/data/password", "value": b64("json-patch-secret-1")},
        {"op": "replace", "path": "/data", "value": {"user": b64("json-patch-secret-2")}},
        {"op": "test", "path": "/stringData/pin", "value": "json-patch-secret-3"},
        {"op": "add", "path": "/Data/typo", "value": "json-patch-secret-4"},
        {"op": "replace", "path": "", "value": secret(&[("k", "json-patch-secret-5")], &[])},
        {"op": "add", "path": "/metadata/labels/app", "value": "web"},
        {"op": "remove", "path": "/data/old"}
    ]);
    let json = event(
        "patch",
        "secrets",
        "",
        "/api/v1/namespaces/prod/secrets/db",
        Some(patch),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &[
            "json-patch-secret-1",
            "json-patch-secret-2",
            "json-patch-secret-3",
            "json-patch-secret-4",
            "json-patch-secret-5",
        ],
    );
    assert_present(
        &out,
        &[
            "/data/password",
            "\"user\"",
            "/metadata/labels/app",
            "\"web\"",
            "/data/old",
        ],
    );
    assert_eq!(counts.secret_values, 5);
}

#[test]
fn secret_nested_in_other_objects() {
    let r = redactor(1);
    // A List created through some other resource, a Table with full objects, an escaped kind.
    let body = json!({
        "kind": "List",
        "items": [
            {"kind": "ConfigMap", "data": {"color": "blue"}},
            {"kind": "Table", "rows": [{"cells": ["db"], "object": secret(&[("k", "nested-secret-1")], &[])}]},
        ]
    });
    let json = event(
        "create",
        "widgets",
        "",
        "/apis/example.com/v1/widgets",
        Some(body),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["nested-secret-1"]);
    assert_present(&out, &["\"color\":\"blue\""]);
    assert_eq!(counts.secret_values, 1);

    let escaped = event("create", "widgets", "", "/apis/example.com/v1/widgets", None, None).replacen(
        "\"requestURI\"",
        r#""responseObject":{"kind":"Secr\u0065t","stringData":{"k":"escaped-kind-secret"}},"requestURI""#,
        1,
    );
    let (out, counts, _) = run(&r, &escaped);
    assert_absent(&out, &["escaped-kind-secret"]);
    assert_eq!(counts.secret_values, 1);
}

#[test]
fn token_request_response() {
    let r = redactor(1);
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";
    let request = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}});
    let mut response = request.clone();
    response["status"] = json!({"token": token, "expirationTimestamp": "2026-01-01T01:00:00Z"});
    let json = event(
        "create",
        "serviceaccounts",
        "token",
        "/api/v1/namespaces/prod/serviceaccounts/default/token",
        Some(request),
        Some(response),
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &[token]);
    assert_present(
        &out,
        &["\"token\":\"kubetrail-redacted:len=", "expirationTimestamp"],
    );
    assert_eq!(counts.token_request_tokens, 1);
    assert_eq!(counts.total(), 1);
}

#[test]
fn token_review_request_and_response() {
    let r = redactor(1);
    let token = "sha256~reviewed-bearer-token-value";
    let request = json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": {"token": token}});
    let mut response = request.clone();
    response["status"] = json!({"authenticated": true, "user": {"username": "bob"}});
    let json = event(
        "create",
        "tokenreviews",
        "",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(request),
        Some(response),
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &[token]);
    assert_present(
        &out,
        &[
            "\"token\":\"kubetrail-redacted:len=",
            "\"username\":\"bob\"",
        ],
    );
    assert_eq!(counts.token_review_tokens, 2);
}

#[test]
fn uri_tokens() {
    let r = redactor(1);
    let uri = "/api/v1/namespaces/prod/pods/web/exec?command=sh&Access_Token=uri-secret-token-1&stdin=true&id_token=uri-secret-token-2&%74oken=uri-secret-token-3";
    let json = event("create", "pods", "exec", uri, None, None);
    let (out, counts, modified) = run(&r, &json);
    assert!(modified);
    assert_absent(
        &out,
        &[
            "uri-secret-token-1",
            "uri-secret-token-2",
            "uri-secret-token-3",
        ],
    );
    assert_present(
        &out,
        &[
            "command=sh&Access_Token=kubetrail-redacted:len=18:hmac=",
            "&stdin=true&id_token=",
            "&%74oken=",
        ],
    );
    assert_eq!(counts.uri_tokens, 3);
}

#[test]
fn non_sensitive_events_come_back_borrowed() {
    let r = redactor(1);
    let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
    // ConfigMap keys and env names that are not secret-like keep their values.
    let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"LOG_LEVEL": "info", "author": "alice"}});
    for json in [
        event(
            "create",
            "pods",
            "",
            "/api/v1/namespaces/prod/pods",
            Some(pod.clone()),
            Some(pod),
        ),
        event(
            "update",
            "configmaps",
            "",
            "/api/v1/namespaces/prod/configmaps/x",
            Some(cm),
            None,
        ),
        // A secret read at Metadata level has no bodies: nothing to redact.
        event(
            "get",
            "secrets",
            "",
            "/api/v1/namespaces/prod/secrets/db",
            None,
            None,
        ),
        event(
            "list",
            "pods",
            "",
            "/api/v1/pods?limit=500&resourceVersion=0",
            None,
            None,
        ),
    ] {
        let event = Event::parse(&json).unwrap();
        let (out, counts) = r.redact(&event, &json);
        assert!(!out.is_modified(), "{json}");
        assert_eq!(out.as_str(), json);
        assert_eq!(counts.total(), 0);
        assert!(
            std::ptr::eq(out.as_str(), json.as_str()),
            "borrowed, not copied"
        );
    }
}

#[test]
fn generated_traffic_parses_after_redaction() {
    let r = redactor(1);
    let mut generator = kubetrail_gen::Generator::new(kubetrail_gen::Config {
        attacks: true,
        ..Default::default()
    });
    let (mut modified, mut borrowed) = (0, 0);
    let mut buf = Vec::new();
    for _ in 0..20_000 {
        buf.clear();
        generator.next_into(&mut buf);
        let json = std::str::from_utf8(&buf).unwrap();
        let (out, _, m) = run(&r, json);
        if m {
            modified += 1;
        } else {
            borrowed += 1;
            assert_eq!(out, json);
        }
    }
    assert!(
        borrowed > modified * 10,
        "{borrowed} borrowed, {modified} modified"
    );
}

#[test]
fn redaction_is_idempotent() {
    let r = redactor(1);
    let json = event(
        "create",
        "secrets",
        "",
        "/api/v1/namespaces/prod/secrets?token=abcdefgh",
        Some(secret(&[("a", "idempotent-1")], &[("b", "idempotent-2")])),
        None,
    );
    let (once, counts, _) = run(&r, &json);
    assert_eq!(counts.total(), 3);
    let (twice, counts, modified) = run(&r, &once);
    assert_eq!(counts.total(), 0);
    assert!(!modified);
    assert_eq!(once, twice);
}

// Regression guard: a body serde_json's Value cannot hold (a number out of f64 range) is dropped, not kept.
#[test]
fn unreadable_sensitive_body_is_dropped() {
    let r = redactor(1);
    let json = event("create", "secrets", "", "/api/v1/namespaces/prod/secrets", None, None).replacen(
        "\"requestURI\"",
        r#""requestObject":{"kind":"Secret","stringData":{"k":"unreadable-secret"},"n":1e400},"requestURI""#,
        1,
    );
    let event = Event::parse(&json).expect("the typed parse keeps the body raw");
    let (out, counts) = r.redact(&event, &json);
    assert_absent(out.as_str(), &["unreadable-secret"]);
    assert_eq!(counts.dropped_bodies, 1);
    Event::parse(out.as_str()).unwrap();
}

// Property: whatever the shape and depth, no generated secret value (nor its base64) survives.

/// Where a Secret-shaped body is put.
#[derive(Debug, Clone)]
enum Wrap {
    List,
    Status,
    Field,
    Array,
    TableRow,
}

fn wrap(v: Value, w: &Wrap) -> Value {
    match w {
        Wrap::List => {
            json!({"kind": "List", "apiVersion": "v1", "items": [json!({"kind": "Pod"}), v]})
        }
        Wrap::Status => {
            json!({"kind": "Status", "details": {"causes": [{"message": "x", "object": v}]}})
        }
        Wrap::Field => json!({"spec": {"template": v}, "kind": "Widget"}),
        Wrap::Array => json!({"kind": "Widget", "items": [[v]]}),
        Wrap::TableRow => json!({"kind": "Table", "rows": [{"cells": [1], "object": v}]}),
    }
}

#[derive(Debug, Clone)]
enum Shape {
    /// A Secret (or SecretList) nested in other objects, about any resource.
    Nested {
        list: bool,
        wraps: Vec<Wrap>,
        resource: &'static str,
    },
    /// A merge patch on a secret.
    MergePatch,
    /// A JSON patch on a secret, each value by one of several op forms.
    JsonPatch(Vec<u8>),
    /// kubectl's last-applied annotation on a Secret in any body.
    LastApplied,
}

fn secret_values() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        "[a-zA-Z0-9 !#$%&()*+,./:;<=>?@^_{|}~\"\\\\é世-]{10,32}",
        1..6,
    )
}

fn shapes() -> impl Strategy<Value = Shape> {
    let wrapper = prop_oneof![
        Just(Wrap::List),
        Just(Wrap::Status),
        Just(Wrap::Field),
        Just(Wrap::Array),
        Just(Wrap::TableRow)
    ];
    prop_oneof![
        (
            any::<bool>(),
            prop::collection::vec(wrapper, 0..6),
            prop::sample::select(vec!["secrets", "configmaps", "widgets", "pods"]),
        )
            .prop_map(|(list, wraps, resource)| Shape::Nested {
                list,
                wraps,
                resource
            }),
        Just(Shape::MergePatch),
        prop::collection::vec(0u8..6, 6).prop_map(Shape::JsonPatch),
        Just(Shape::LastApplied),
    ]
}

fn build(values: &[String], shape: &Shape) -> (&'static str, Value) {
    let data: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(i, v)| (format!("k{i}"), json!(b64(v))))
        .collect();
    let string_data: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(i, v)| (format!("k{i}"), json!(v)))
        .collect();
    let secret = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"}, "data": data, "stringData": string_data});
    match shape {
        Shape::Nested {
            list,
            wraps,
            resource,
        } => {
            let mut body = if *list {
                let mut item = secret;
                item.as_object_mut().unwrap().remove("kind");
                json!({"kind": "SecretList", "items": [item]})
            } else {
                secret
            };
            for w in wraps {
                body = wrap(body, w);
            }
            (resource, body)
        }
        Shape::MergePatch => ("secrets", json!({"data": data, "stringData": string_data})),
        Shape::JsonPatch(forms) => {
            let ops = values
                .iter()
                .enumerate()
                .map(|(i, v)| match forms[i % forms.len()] {
                    0 => json!({"op": "add", "path": format!("/data/k{i}"), "value": b64(v)}),
                    1 => json!({"op": "replace", "path": format!("/stringData/k{i}"), "value": v}),
                    2 => json!({"op": "add", "path": "/data", "value": {format!("k{i}"): b64(v)}}),
                    3 => json!({"op": "test", "path": format!("/data/k{i}"), "value": b64(v)}),
                    4 => json!({"op": "replace", "path": "", "value": {"kind": "Secret", "stringData": {"k": v}}}),
                    _ => json!({"op": "add", "path": format!("/unknown/{i}"), "value": v}),
                })
                .collect();
            ("secrets", Value::Array(ops))
        }
        Shape::LastApplied => {
            let body = json!({"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: secret.to_string()}}});
            ("secrets", body)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_secret_value_survives(values in secret_values(), shape in shapes(), in_response: bool, key: u8) {
        let (resource, body) = build(&values, &shape);
        let (request, response) = if in_response { (None, Some(body)) } else { (Some(body), None) };
        let json = event("patch", resource, "", "/api/v1/namespaces/prod/x", request, response);
        let (out, counts, modified) = run(&redactor(key), &json);
        prop_assert!(modified);
        prop_assert!(counts.secret_values >= values.len() as u64);
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        for v in &refs {
            let escaped = serde_json::to_string(v).unwrap();
            for form in [v.to_string(), b64(v), escaped[1..escaped.len() - 1].to_owned()] {
                prop_assert!(!out.contains(&form), "`{}` survived in {}", form, out);
            }
        }
    }

    #[test]
    fn no_uri_token_survives(
        tokens in prop::collection::vec("[A-Za-z0-9._~-]{12,40}", 1..4),
        keys in prop::collection::vec(prop::sample::select(vec!["access_token", "TOKEN", "id_token", "Id_Token"]), 4),
    ) {
        let query: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| format!("watch=true&{}={t}", keys[i % keys.len()]))
            .collect();
        let uri = format!("/api/v1/pods?{}", query.join("&"));
        let (out, counts, _) = run(&redactor(1), &event("watch", "pods", "", &uri, None, None));
        prop_assert_eq!(counts.uri_tokens, tokens.len() as u64);
        for t in &tokens {
            prop_assert!(!out.contains(t.as_str()), "`{}` survived in {}", t, out);
        }
    }
}

// Secret values outside Secrets: ConfigMaps, env, last-applied copies, query strings, exec commands.

/// An event like `event`'s about `group`/`resource[/subresource]`, with `verb`.
#[allow(clippy::too_many_arguments)]
fn event_in(
    group: &str,
    resource: &str,
    subresource: &str,
    verb: &str,
    uri: &str,
    request: Option<Value>,
    response: Option<Value>,
) -> String {
    let mut e: Value =
        serde_json::from_str(&event(verb, resource, subresource, uri, request, response)).unwrap();
    if !group.is_empty() {
        e["objectRef"]["apiGroup"] = json!(group);
        e["objectRef"]["apiVersion"] = json!("v1");
    }
    e.to_string()
}

/// Line `n` (from 0) of a fixture in `tests/fixtures/redact/`.
fn fixture(name: &str, n: usize) -> String {
    let text = match name {
        "configmap_sensitive" => {
            include_str!("fixtures/redact/falco-create_configmap_sensitive_values.jsonl")
        }
        "configmap_plain" => {
            include_str!("fixtures/redact/falco-create_configmap_no_sensitive_values.jsonl")
        }
        "exec" => include_str!("fixtures/redact/falco-exec_pod.jsonl"),
        "deployment" => include_str!("fixtures/redact/falco-create_deployment.jsonl"),
        _ => unreachable!("no fixture {name}"),
    };
    text.lines().nth(n).expect("fixture line").to_owned()
}

/// The fixture exec event with `query` as its request URI's query.
fn exec_event(query: &str) -> String {
    let mut e: Value = serde_json::from_str(&fixture("exec", 0)).unwrap();
    e["requestURI"] = json!(format!(
        "/api/v1/namespaces/default/pods/nginx-deployment-7998647bdf-phvq7/exec?{query}"
    ));
    e.to_string()
}

fn env_var(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn env_from_secret(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

fn config_map(data: Value, binary_data: Value) -> Value {
    json!({
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "app-config", "namespace": "prod", "labels": {"app": "web"}},
        "data": data, "binaryData": binary_data
    })
}

/// A string field of the output's body at a JSON pointer.
fn at(out: &str, pointer: &str) -> Value {
    let v: Value = serde_json::from_str(out).unwrap();
    v.pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} missing from {out}"))
        .clone()
}

#[test]
fn configmap_values_under_secret_like_keys() {
    let r = redactor(1);
    let cm = config_map(
        json!({
            "DB_PASSWORD": "hunter2-db-pass",
            "LOG_LEVEL": "info",
            "api-token": "tok-1234567890",
            "AUTHOR": "alice",
            "cache.ttl": "300"
        }),
        json!({"private_key": b64("binary-private-key-bytes"), "logo.png": b64("png-bytes-not-secret")}),
    );
    let json = event(
        "create",
        "configmaps",
        "",
        "/api/v1/namespaces/prod/configmaps",
        Some(cm.clone()),
        Some(cm),
    );
    let (out, counts, modified) = run(&r, &json);
    assert!(modified);
    assert_absent(
        &out,
        &[
            "hunter2-db-pass",
            "tok-1234567890",
            "binary-private-key-bytes",
        ],
    );
    assert_present(
        &out,
        &[
            r#""LOG_LEVEL":"info""#,
            r#""AUTHOR":"alice""#,
            r#""cache.ttl":"300""#,
            &format!(r#""logo.png":"{}""#, b64("png-bytes-not-secret")),
        ],
    );
    assert_eq!(counts.configmap_values, 6, "{counts:?}");
    assert_eq!(counts.total(), 6);
    // The same fingerprint as the value read through a Secret (binaryData measured decoded).
    assert_eq!(
        at(&out, "/requestObject/data/DB_PASSWORD"),
        json!(marker_of(&r, "hunter2-db-pass"))
    );
    assert_eq!(
        at(&out, "/responseObject/binaryData/private_key"),
        json!(marker_of(&r, "binary-private-key-bytes"))
    );
}

#[test]
fn configmap_files_keep_their_evidence() {
    let r = redactor(1);
    // Falco's sensitive ConfigMaps: credentials inside `access.properties`, whose key is not secret-like.
    for n in 0..6 {
        let json = fixture("configmap_sensitive", n);
        let (out, counts, modified) = run(&r, &json);
        assert!(modified, "line {n}");
        assert_absent(&out, &["MY-KEY", "MY-ID"]);
        assert_present(
            &out,
            &[
                "aws_secret_access_key = kubetrail-redacted:len=6:hmac=",
                "color.good=purple\\ncolor.bad=yellow",
                "\"access.properties\"",
            ],
        );
        assert_eq!(counts.configmap_values, 4, "line {n}: {counts:?}");
    }
    // A file with everything in it, as a ConfigMap update.
    let file = "spring.datasource.url=jdbc:postgresql://db:5432/app?user=app&password=inline-pw-1\n\
                spring.datasource.password = spring-pw-2\n\
                redis:\n  url: redis://default:redis-pw-3@redis:6379/0\n  password: \"yaml-pw-4\"\n\
                tls:\n  key: |\n    -----BEGIN EC PRIVATE KEY-----\n    MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n    -----END EC PRIVATE KEY-----\n\
                log.level = debug\n\
                max.connections: 200\n";
    let cm = config_map(json!({"application.properties": file}), json!({}));
    let json = event(
        "update",
        "configmaps",
        "",
        "/api/v1/namespaces/prod/configmaps/app-config",
        Some(cm),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &[
            "inline-pw-1",
            "spring-pw-2",
            "redis-pw-3",
            "yaml-pw-4",
            "MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY",
        ],
    );
    assert_present(
        &out,
        &[
            "jdbc:postgresql://db:5432/app?user=app&password=kubetrail-redacted:len=11:hmac=",
            "redis://default:kubetrail-redacted:len=10:hmac=",
            "log.level = debug",
            "max.connections: 200",
            "spring.datasource.password = kubetrail-redacted",
        ],
    );
    assert_eq!(counts.configmap_values, 5, "{counts:?}");
    // Nothing secret: untouched, borrowed.
    let json = fixture("configmap_plain", 0);
    let (out, counts, modified) = run(&r, &json);
    assert!(!modified);
    assert_eq!(out, json);
    assert_eq!(counts.total(), 0);
}

#[test]
fn configmaps_in_lists_and_tables() {
    let r = redactor(1);
    let mut item = config_map(
        json!({"db_password": "list-secret-1", "color": "blue"}),
        json!({}),
    );
    item.as_object_mut().unwrap().remove("kind");
    let list =
        json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": [item]});
    let table = json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "columnDefinitions": [{"name": "Name", "type": "string"}],
        "rows": [{"cells": ["app-config"], "object": config_map(json!({"SMTP_PASS": "table-secret-2", "color": "blue"}), json!({}))}]
    });
    let nested = json!({"kind": "List", "apiVersion": "v1", "items": [config_map(json!({"apiKey": "nested-secret-3"}), json!({}))]});
    for (resource, body, secret) in [
        ("configmaps", list, "list-secret-1"),
        ("configmaps", table, "table-secret-2"),
        ("widgets", nested, "nested-secret-3"),
    ] {
        let json = event(
            "list",
            resource,
            "",
            "/api/v1/namespaces/prod/x",
            None,
            Some(body),
        );
        let (out, counts, _) = run(&r, &json);
        assert_absent(&out, &[secret]);
        assert_eq!(counts.configmap_values, 1, "{resource}: {out}");
        if secret != "nested-secret-3" {
            assert_present(&out, &[r#""color":"blue""#]);
        }
    }
}

#[test]
fn configmap_merge_patch() {
    let r = redactor(1);
    let patch = json!({
        "data": {"DB_PASSWORD": "merge-secret-1", "color": "blue", "old": null},
        "binaryData": {"api_key": b64("merge-secret-2")},
        "metadata": {"labels": {"token-rotation": "weekly"}}
    });
    let json = event(
        "patch",
        "configmaps",
        "",
        "/api/v1/namespaces/prod/configmaps/app-config",
        Some(patch),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["merge-secret-1", "merge-secret-2"]);
    assert_present(
        &out,
        &[
            r#""color":"blue""#,
            r#""old":null"#,
            r#""token-rotation":"weekly""#,
        ],
    );
    assert_eq!(counts.configmap_values, 2);
}

#[test]
fn configmap_json_patch() {
    let r = redactor(1);
    let patch = json!([
        {"op": "add", "path": "/data/api_token", "value": "json-secret-1"},
        {"op": "replace", "path": "/data", "value": {"password": "json-secret-2", "mode": "fast"}},
        {"op": "add", "path": "/binaryData/ssh~1private_key", "value": b64("json-secret-3")},
        {"op": "add", "path": "/data/settings.conf", "value": "db.password = json-secret-4\nretries = 3"},
        {"op": "add", "path": "/data/color", "value": "blue"},
        {"op": "remove", "path": "/data/old_token"}
    ]);
    let json = event(
        "patch",
        "configmaps",
        "",
        "/api/v1/namespaces/prod/configmaps/app-config",
        Some(patch),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &[
            "json-secret-1",
            "json-secret-2",
            "json-secret-3",
            "json-secret-4",
        ],
    );
    assert_present(
        &out,
        &[
            "/data/api_token",
            r#""mode":"fast""#,
            "retries = 3",
            r#""value":"blue""#,
            "/data/old_token",
        ],
    );
    assert_eq!(counts.configmap_values, 4);
}

/// Falco's Deployment with `env` (and an init container's) added to its pod template.
fn deployment_with_env(env: Value, init_env: Value) -> String {
    let mut e: Value = serde_json::from_str(&fixture("deployment", 0)).unwrap();
    let spec = &mut e["requestObject"]["spec"]["template"]["spec"];
    spec["containers"][0]["env"] = env;
    spec["initContainers"] = json!([{"name": "migrate", "image": "migrate:1", "env": init_env}]);
    e["responseObject"] = e["requestObject"].clone();
    e.to_string()
}

#[test]
fn deployment_env_values() {
    let r = redactor(1);
    let json = deployment_with_env(
        json!([
            env_var("DB_PASSWORD", "deploy-secret-1"),
            env_var("LOG_LEVEL", "info"),
            env_from_secret("API_KEY", "api", "key"),
            env_var("GITHUB_TOKEN", "ghp_deploysecret2"),
            env_var("CI_COMMIT_AUTHOR", "Alice Example"),
            env_var("PASSTHROUGH_MODE", "on")
        ]),
        json!([env_var("MIGRATION_DB_PASS", "deploy-secret-3")]),
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &["deploy-secret-1", "ghp_deploysecret2", "deploy-secret-3"],
    );
    assert_present(
        &out,
        &[
            r#"{"name":"LOG_LEVEL","value":"info"}"#,
            r#""secretKeyRef":{"key":"key","name":"api"}"#,
            r#"{"name":"CI_COMMIT_AUTHOR","value":"Alice Example"}"#,
            r#"{"name":"PASSTHROUGH_MODE","value":"on"}"#,
            r#""name":"DB_PASSWORD""#,
        ],
    );
    assert_eq!(counts.env_values, 6, "request and response: {counts:?}");
    assert_eq!(
        at(
            &out,
            "/requestObject/spec/template/spec/containers/0/env/0/value"
        ),
        json!(marker_of(&r, "deploy-secret-1"))
    );
}

#[test]
fn env_in_every_pod_spec() {
    let r = redactor(1);
    let spec = |value: &str| json!({"containers": [{"name": "app", "image": "app:1", "env": [env_var("REDIS_PASSWORD", value), env_var("TZ", "UTC")]}]});
    let meta = json!({"name": "x", "namespace": "prod"});
    let cases = [
        (
            "batch",
            "cronjobs",
            "",
            json!({"kind": "CronJob", "apiVersion": "batch/v1", "metadata": meta, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": spec("cron-secret")}}}}}),
        ),
        (
            "batch",
            "jobs",
            "",
            json!({"kind": "Job", "apiVersion": "batch/v1", "metadata": meta, "spec": {"template": {"spec": spec("job-secret")}}}),
        ),
        (
            "apps",
            "statefulsets",
            "",
            json!({"kind": "StatefulSetList", "apiVersion": "apps/v1", "items": [{"metadata": meta, "spec": {"template": {"spec": spec("sts-secret")}}}]}),
        ),
        (
            "apps",
            "daemonsets",
            "status",
            json!({"kind": "DaemonSet", "apiVersion": "apps/v1", "metadata": meta, "spec": {"template": {"spec": spec("ds-secret")}}}),
        ),
        (
            "apps",
            "replicasets",
            "",
            json!({"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": meta, "spec": {"template": {"spec": spec("rs-secret")}}}),
        ),
        (
            "",
            "podtemplates",
            "",
            json!({"kind": "PodTemplate", "apiVersion": "v1", "metadata": meta, "template": {"spec": spec("podtemplate-secret")}}),
        ),
        (
            "",
            "replicationcontrollers",
            "",
            json!({"kind": "ReplicationController", "apiVersion": "v1", "metadata": meta, "spec": {"template": {"spec": spec("rc-secret")}}}),
        ),
        (
            "",
            "pods",
            "ephemeralcontainers",
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": {"containers": [{"name": "app", "image": "app:1"}], "ephemeralContainers": [{"name": "debugger", "image": "busybox", "env": [env_var("DEBUG_TOKEN", "ephemeral-secret"), env_var("TZ", "UTC")]}]}}),
        ),
        (
            "",
            "pods",
            "",
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": [{"cells": ["x"], "object": {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec("table-secret")}}]}),
        ),
        (
            "argoproj.io",
            "rollouts",
            "",
            json!({"kind": "Rollout", "apiVersion": "argoproj.io/v1alpha1", "metadata": meta, "spec": {"template": {"spec": spec("custom-secret")}}}),
        ),
    ];
    for (group, resource, subresource, body) in cases {
        let secret = body.to_string();
        let secret = [
            "cron-secret",
            "job-secret",
            "sts-secret",
            "ds-secret",
            "rs-secret",
            "podtemplate-secret",
            "rc-secret",
            "ephemeral-secret",
            "table-secret",
            "custom-secret",
        ]
        .into_iter()
        .find(|s| secret.contains(s))
        .unwrap();
        let json = event_in(
            group,
            resource,
            subresource,
            "update",
            "/apis/x",
            Some(body.clone()),
            Some(body),
        );
        let (out, counts, _) = run(&r, &json);
        assert_absent(&out, &[secret]);
        assert_present(&out, &[r#"{"name":"TZ","value":"UTC"}"#]);
        assert_eq!(counts.env_values, 2, "{resource}/{subresource}: {counts:?}");
    }
}

#[test]
fn env_in_patches() {
    let r = redactor(1);
    let strategic = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [env_var("DB_PASSWORD", "patch-secret-1"), env_var("TZ", "UTC")]}]}}}});
    let json = event_in(
        "apps",
        "deployments",
        "",
        "patch",
        "/apis/apps/v1/namespaces/prod/deployments/web",
        Some(strategic),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["patch-secret-1"]);
    assert_present(&out, &[r#"{"name":"TZ","value":"UTC"}"#]);
    assert_eq!(counts.env_values, 1);

    let ops = json!([
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": env_var("REDIS_PASSWORD", "patch-secret-2")},
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/3/value", "value": "patch-secret-3"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env", "value": [env_var("SMTP_PASS", "patch-secret-4"), env_var("TZ", "UTC")]},
        {"op": "add", "path": "/spec/template/spec/containers/1/env/0/name", "value": "LOG_LEVEL"},
        {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "sidecar", "image": "s:1", "env": [env_var("AUTH_TOKEN", "patch-secret-5")]}},
        {"op": "replace", "path": "/spec/replicas", "value": 3}
    ]);
    let json = event_in(
        "apps",
        "deployments",
        "",
        "patch",
        "/apis/apps/v1/namespaces/prod/deployments/web",
        Some(ops),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &[
            "patch-secret-2",
            "patch-secret-3",
            "patch-secret-4",
            "patch-secret-5",
        ],
    );
    assert_present(
        &out,
        &[
            r#"{"name":"TZ","value":"UTC"}"#,
            r#""value":"LOG_LEVEL""#,
            "/spec/template/spec/containers/0/env/3/value",
            r#""value":3"#,
        ],
    );
    assert_eq!(counts.env_values, 4, "{counts:?}");
}

#[test]
fn last_applied_copies_of_any_kind() {
    let r = redactor(1);
    // A Deployment applied with kubectl: its env in the spec and in the annotation's copy of it.
    let env = json!([
        env_var("DB_PASSWORD", "applied-secret-1"),
        env_var("LOG_LEVEL", "info")
    ]);
    let mut e: Value = serde_json::from_str(&deployment_with_env(env, json!([]))).unwrap();
    let applied = e["requestObject"].clone();
    e["requestObject"]["metadata"]["annotations"] = json!({LAST_APPLIED: applied.to_string()});
    e.as_object_mut().unwrap().remove("responseObject");
    let (out, counts, _) = run(&r, &e.to_string());
    assert_absent(&out, &["applied-secret-1"]);
    assert_eq!(counts.env_values, 2, "{counts:?}");
    let copy = at(
        &out,
        &format!(
            "/requestObject/metadata/annotations/{}",
            LAST_APPLIED.replace('/', "~1")
        ),
    );
    let copy: Value = serde_json::from_str(copy.as_str().unwrap()).expect("still JSON");
    assert_eq!(
        copy["spec"]["template"]["spec"]["containers"][0]["env"][0],
        json!({"name": "DB_PASSWORD", "value": marker_of(&r, "applied-secret-1")})
    );
    assert_eq!(
        copy["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"],
        "info"
    );

    // A ConfigMap's copy: its secret-like keys.
    let mut cm = config_map(
        json!({"DB_PASSWORD": "applied-secret-2", "LOG_LEVEL": "info"}),
        json!({}),
    );
    cm["metadata"]["annotations"] = json!({LAST_APPLIED: cm.to_string()});
    cm["data"] = json!({"LOG_LEVEL": "info"});
    let json = event(
        "update",
        "configmaps",
        "",
        "/api/v1/namespaces/prod/configmaps/app-config",
        Some(cm),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["applied-secret-2"]);
    assert_present(&out, &["LOG_LEVEL"]);
    assert_eq!(counts.configmap_values, 1);

    // Through a JSON patch of the annotation, and in a custom resource's pod template.
    let copy = json!({"kind": "Widget", "spec": {"template": {"spec": {"containers": [{"name": "a", "env": [env_var("API_KEY", "applied-secret-3")]}]}}}});
    let ops = json!([{"op": "replace", "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration", "value": copy.to_string()}]);
    let json = event_in(
        "example.com",
        "widgets",
        "",
        "patch",
        "/apis/example.com/v1/widgets/w",
        Some(ops),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["applied-secret-3"]);
    assert_eq!(counts.env_values, 1);
}

#[test]
fn uri_credentials() {
    let r = redactor(1);
    let names = [
        "apikey",
        "api_key",
        "access_token",
        "token",
        "jwt",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "signature",
        "sig",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "id_token",
        "refresh_token",
        // Other spellings of the same.
        "APIKEY",
        "Api-Key",
        "%61pikey",
        "X%2DAmz%2DSignature",
        "client%5Fsecret",
        "Password",
        // Secret-like names not in the list.
        "db_password",
        "sessionToken",
        "private_key",
    ];
    for (i, name) in names.iter().enumerate() {
        let secret = format!("uri-secret-{i:02}-value");
        let uri = format!(
            "/api/v1/namespaces/prod/services/web:8080/proxy/callback?page=2&{name}={secret}&labelSelector=app%3Dtoken"
        );
        let json = event("get", "services", "proxy", &uri, None, None);
        let (out, counts, _) = run(&r, &json);
        assert_absent(&out, &[&secret]);
        assert_present(
            &out,
            &[
                &format!(
                    "?page=2&{name}=kubetrail-redacted:len={}:hmac=",
                    secret.len()
                ),
                "&labelSelector=app%3Dtoken",
            ],
        );
        assert_eq!(counts.uri_tokens, 1, "{name}");
    }
    // kube-apiserver's own parameters are never credentials, whatever their values.
    let uri = "/api/v1/namespaces/prod/secrets?labelSelector=type%3Dtoken&fieldSelector=metadata.name%3Dpassword&limit=500&continue=eyJ0b2tlbiI6MX0";
    let json = event("list", "secrets", "", uri, None, None);
    let (out, counts, modified) = run(&r, &json);
    assert!(!modified, "{out}");
    assert_eq!(counts.total(), 0);
}

#[test]
fn exec_command_passwords() {
    let r = redactor(1);
    let cases = [
        // mysql's -pVALUE: the flag stays, the password goes.
        (
            "command=mysql&command=-uroot&command=-pS3cretPass&command=-e&command=SHOW+DATABASES&container=db&stdin=true",
            "S3cretPass",
            "command=mysql&command=-uroot&command=-pkubetrail-redacted:len=10:hmac=",
            "&command=-e&command=SHOW+DATABASES&container=db&stdin=true",
        ),
        // --password=VALUE, percent-encoded as kubectl sends it.
        (
            "command=psql&command=--password%3DPgS3cret%21&command=-h&command=db",
            "PgS3cret!",
            "command=psql&command=--password%3Dkubetrail-redacted:len=9:hmac=",
            "&command=-h&command=db",
        ),
        // NAME=VALUE inside a shell command.
        (
            "command=sh&command=-c&command=PGPASSWORD%3Dpg-env-secret+psql+-h+db+-U+app&container=db",
            "pg-env-secret",
            "command=sh&command=-c&command=PGPASSWORD%3Dkubetrail-redacted:len=13:hmac=",
            "+psql+-h+db+-U+app&container=db",
        ),
        // The password of a URL.
        (
            "command=psql&command=postgres%3A%2F%2Fapp%3Aurl-pass-123%40db%3A5432%2Fapp",
            "url-pass-123",
            "command=psql&command=postgres%3A%2F%2Fapp%3Akubetrail-redacted:len=12:hmac=",
            "%40db%3A5432%2Fapp",
        ),
        // A bearer token.
        (
            "command=curl&command=-H&command=Authorization%3A+Bearer+eyJhbGciOi.tok&command=http%3A%2F%2Fapi",
            "eyJhbGciOi.tok",
            "command=curl&command=-H&command=Authorization%3A+Bearer+kubetrail-redacted:len=14:hmac=",
            "&command=http%3A%2F%2Fapi",
        ),
    ];
    for (query, secret, before, after) in cases {
        let json = exec_event(query);
        let (out, counts, modified) = run(&r, &json);
        assert!(modified, "{query}");
        assert_absent(&out, &[secret]);
        let encoded: String = url_encoded(secret);
        assert!(!out.contains(&encoded), "`{encoded}` survived in {out}");
        assert_present(&out, &[before, after]);
        assert_eq!(counts.command_args, 1, "{query}: {counts:?}");
        assert_eq!(counts.total(), 1);
        // Typed in a command or stored in a Secret, the same value has the same marker.
        let uri = at(&out, "/requestURI");
        assert!(
            uri.as_str().unwrap().contains(&marker_of(&r, secret)),
            "{uri}"
        );
    }
    // Flags that are not passwords.
    for query in [
        "command=mkdir&command=-p&command=%2Fdata%2Fbackup",
        "command=ssh&command=-p2222&command=bastion",
        "command=netstat&command=-plnt",
        "command=ls&command=-la&command=%2Fvar%2Frun%2Fsecrets",
        "command=docker&command=login&command=--password-stdin&command=registry.example.com",
    ] {
        let json = exec_event(query);
        let (out, counts, modified) = run(&r, &json);
        assert!(!modified, "{query}: {out}");
        assert_eq!(counts.total(), 0);
    }
}

/// `s` percent-encoded as Go's `url.QueryEscape` would (enough for the test values).
fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn configured_patterns_and_parameters() {
    let cfg: RedactionConfig = serde_json::from_value(json!({
        "key_patterns": ["pin", "session-id", ""],
        "uri_parameters": ["X-Goog-Signature", "code"]
    }))
    .unwrap();
    assert_eq!(cfg.key_patterns, ["pin", "session-id", ""]);
    assert!(
        serde_json::from_value::<RedactionConfig>(json!({"key_pattern": ["pin"]})).is_err(),
        "unknown fields are refused"
    );
    assert_eq!(
        serde_json::from_value::<RedactionConfig>(json!({})).unwrap(),
        RedactionConfig::default()
    );
    let key = RedactionKey::from_bytes([1; 32]);
    let configured = Redactor::with_config(key.clone(), &cfg);
    let default = Redactor::new(key);

    let body = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "a", "env": [
        env_var("CARD_PIN", "4242-configured"),
        env_var("PINNED_VERSION", "v1.2.3"),
        env_var("userSessionId", "sess-configured"),
        env_var("DB_PASSWORD", "default-still-applies"),
        env_var("LOG_LEVEL", "info")
    ]}]}});
    let json = event_in(
        "",
        "pods",
        "",
        "create",
        "/api/v1/namespaces/prod/pods?code=oauth-code-123&X-Goog-Signature=deadbeef01&dryRun=All",
        Some(body),
        None,
    );
    let (out, counts, _) = run(&configured, &json);
    assert_absent(
        &out,
        &[
            "4242-configured",
            "sess-configured",
            "default-still-applies",
            "oauth-code-123",
            "deadbeef01",
        ],
    );
    assert_present(
        &out,
        &[
            r#"{"name":"PINNED_VERSION","value":"v1.2.3"}"#,
            r#"{"name":"LOG_LEVEL","value":"info"}"#,
            "&dryRun=All",
        ],
    );
    assert_eq!((counts.env_values, counts.uri_tokens), (3, 2));
    // The defaults alone leave what only the configuration names.
    let (out, counts, _) = run(&default, &json);
    assert_present(
        &out,
        &[
            "4242-configured",
            "sess-configured",
            "oauth-code-123",
            "deadbeef01",
        ],
    );
    assert_absent(&out, &["default-still-applies"]);
    assert_eq!((counts.env_values, counts.uri_tokens), (1, 0));
}

#[test]
fn derived_keys() {
    use hmac::{Hmac, KeyInit, Mac};
    let (a, b) = (redactor(1), redactor(2));
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&[1; 32]).unwrap();
    mac.update(b"kubetrail/dedup/v1");
    let expected: [u8; 32] = mac.finalize().into_bytes().into();
    assert_eq!(a.derive_key(b"kubetrail/dedup/v1"), expected);
    assert_eq!(
        a.derive_key(b"kubetrail/dedup/v1"),
        a.derive_key(b"kubetrail/dedup/v1")
    );
    assert_ne!(a.derive_key(b"a"), a.derive_key(b"b"));
    assert_ne!(a.derive_key(b"a"), b.derive_key(b"a"));
    assert_ne!(a.derive_key(b""), [1; 32]);
}

#[test]
fn counts_add_up() {
    let one = RedactionCounts {
        secret_values: 1,
        token_request_tokens: 2,
        token_review_tokens: 3,
        uri_tokens: 4,
        configmap_values: 5,
        env_values: 6,
        command_args: 7,
        dropped_bodies: 8,
    };
    assert_eq!(one.total(), 36);
    let mut sum = one;
    sum.add(&one);
    assert_eq!(sum.total(), 72);
    assert_eq!(
        (sum.configmap_values, sum.env_values, sum.command_args),
        (10, 12, 14)
    );
}

#[test]
fn benign_env_and_data_come_back_borrowed() {
    let r = redactor(1);
    let env = json!([
        env_var("LOG_LEVEL", "info"),
        env_var("HTTP_PORT", "8080"),
        env_var("CI_COMMIT_AUTHOR", "Alice Example <alice@example.com>"),
        env_var("OAUTH_ISSUER_URL", "https://login.example.com"),
        env_var("DATABASE_URL", "postgres://app@db:5432/app"),
        env_from_secret("DB_PASSWORD", "db", "password"),
        env_from_secret("API_TOKEN", "api", "token"),
        {"name": "EMPTY_SECRET"},
        {"name": "NULL_PASSWORD", "value": null}
    ]);
    let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web", "annotations": {"note": "token rotation weekly"}}, "spec": {
        "imagePullSecrets": [{"name": "regcred"}],
        "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}, {"name": "creds", "secret": {"secretName": "db-credentials"}}],
        "containers": [{"name": "web", "image": "nginx", "env": env}]}});
    let cm = config_map(
        json!({"LOG_LEVEL": "info", "nginx.conf": "server { listen 80; auth_basic off; }", "AUTHOR": "alice"}),
        json!({"logo.png": b64("png")}),
    );
    for json in [
        event_in(
            "",
            "pods",
            "",
            "create",
            "/api/v1/namespaces/prod/pods",
            Some(pod.clone()),
            Some(pod.clone()),
        ),
        event_in(
            "",
            "pods",
            "",
            "patch",
            "/api/v1/namespaces/prod/pods/web",
            Some(pod),
            None,
        ),
        event(
            "create",
            "configmaps",
            "",
            "/api/v1/namespaces/prod/configmaps",
            Some(cm.clone()),
            Some(cm),
        ),
        exec_event("command=env&container=app&stderr=true&stdout=true"),
    ] {
        let event = Event::parse(&json).unwrap();
        let (out, counts) = r.redact(&event, &json);
        assert!(!out.is_modified(), "{}", out.as_str());
        assert_eq!(counts.total(), 0);
        assert!(std::ptr::eq(out.as_str(), json.as_str()));
    }
}

#[test]
fn new_redactions_are_idempotent() {
    let r = redactor(1);
    for json in [
        deployment_with_env(
            json!([env_var("DB_PASSWORD", "idem-1")]),
            json!([env_var("X_TOKEN", "idem-2")]),
        ),
        fixture("configmap_sensitive", 4),
        exec_event(
            "command=mysql&command=-pidem-3&command=--password%3Didem-4&command=postgres%3A%2F%2Fa%3Aidem-5%40db",
        ),
        event(
            "get",
            "services",
            "proxy",
            "/api/v1/namespaces/p/services/s/proxy/x?api_key=idem-6",
            None,
            None,
        ),
    ] {
        let (once, counts, _) = run(&r, &json);
        assert!(counts.total() > 0, "{json}");
        let (twice, counts, modified) = run(&r, &once);
        assert_eq!(counts.total(), 0, "{twice}");
        assert!(!modified);
        assert_eq!(once, twice);
    }
}

// Bodies as kube-apiserver writes them (Go, `kind` first): the fast path reads them by their kind.

/// `v` serialized with `kind` first in every object that has one, as Go writes typed objects (serde_json
/// sorts keys).
fn kind_first(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut parts: Vec<String> = Vec::new();
            if let Some(kind) = map.get("kind") {
                parts.push(format!("\"kind\":{kind}"));
            }
            for (k, v) in map.iter().filter(|(k, _)| *k != "kind") {
                parts.push(format!("{}:{}", Value::String(k.clone()), kind_first(v)));
            }
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(kind_first).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// `event_in`'s event with the bodies spliced in as written (`kind_first`).
fn typed_event(
    group: &str,
    resource: &str,
    subresource: &str,
    verb: &str,
    request: Option<&Value>,
    response: Option<&Value>,
) -> String {
    let mut json = event_in(group, resource, subresource, verb, "/apis/x", None, None);
    for (field, body) in [("requestObject", request), ("responseObject", response)] {
        if let Some(body) = body {
            json = json.replacen(
                "\"requestURI\"",
                &format!("\"{field}\":{},\"requestURI\"", kind_first(body)),
                1,
            );
        }
    }
    Event::parse(&json).expect("an event");
    json
}

fn pod(env: Value, init_env: Value, ephemeral_env: Value) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "web-7d9f", "namespace": "prod", "labels": {"app": "web"}},
        "spec": {
            "volumes": [{"name": "creds", "secret": {"secretName": "db-credentials"}}],
            "initContainers": [{"name": "init", "image": "busybox", "env": init_env}],
            "containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}], "env": env},
                {"name": "sidecar", "image": "envoy", "env": [env_var("TZ", "UTC")]}
            ],
            "ephemeralContainers": [{"name": "debugger", "image": "busybox", "env": ephemeral_env}],
            "imagePullSecrets": [{"name": "regcred"}]
        },
        "status": {"phase": "Pending"}
    })
}

#[test]
fn typed_pods_and_lists() {
    let r = redactor(1);
    let p = pod(
        json!([
            env_var("LOG_LEVEL", "info"),
            env_var("DB_PASSWORD", "typed-secret-1"),
            env_from_secret("API_KEY", "api", "key")
        ]),
        json!([env_var("INIT_TOKEN", "typed-secret-2")]),
        json!([env_var("DEBUG_PWD", "typed-secret-3")]),
    );
    let json = typed_event("", "pods", "", "create", Some(&p), Some(&p));
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &["typed-secret-1", "typed-secret-2", "typed-secret-3"],
    );
    assert_present(
        &out,
        &[
            r#"{"name":"LOG_LEVEL","value":"info"}"#,
            r#"{"name":"TZ","value":"UTC"}"#,
            "regcred",
        ],
    );
    assert_eq!(counts.env_values, 6);

    // A list: the second item's secret comes after the first item's env arrays.
    let mut item = pod(json!([env_var("LOG_LEVEL", "info")]), json!([]), json!([]));
    let first = item.clone();
    item["metadata"]["annotations"] = json!({LAST_APPLIED: pod(json!([env_var("SMTP_PASSWORD", "typed-secret-4")]), json!([]), json!([])).to_string()});
    let list =
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [first, item]});
    let json = typed_event("", "pods", "", "list", None, Some(&list));
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["typed-secret-4"]);
    assert_eq!(counts.env_values, 1);

    // A Deployment's template, and its last-applied copy (before the spec, as Go writes it).
    let applied = json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [{"name": "web", "env": [env_var("GITHUB_TOKEN", "typed-secret-5")]}]}}}});
    let mut deployment = applied.clone();
    deployment["metadata"]["annotations"] = json!({LAST_APPLIED: applied.to_string()});
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([env_var("LOG_LEVEL", "debug")]);
    let json = typed_event(
        "apps",
        "deployments",
        "status",
        "update",
        Some(&deployment),
        None,
    );
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["typed-secret-5"]);
    assert_present(&out, &[r#"{"name":"LOG_LEVEL","value":"debug"}"#]);
    assert_eq!(counts.env_values, 1);

    // A body of another kind than its resource's is read in full.
    let odd = json!({"kind": "ConfigMap", "apiVersion": "v1", "spec": {"env": [env_var("PASSWORD", "typed-secret-6")]}});
    let json = typed_event("", "pods", "", "create", Some(&odd), None);
    let (out, _, _) = run(&r, &json);
    assert_absent(&out, &["typed-secret-6"]);
    let odd = json!({"kind": "Pod", "apiVersion": "v1", "data": {"nested": secret(&[], &[("k", "typed-secret-7")])}});
    let json = typed_event("", "configmaps", "", "create", Some(&odd), None);
    let (out, _, _) = run(&r, &json);
    assert_absent(&out, &["typed-secret-7"]);
    // Nor can a Secret hide in a typed response of a pod-bearing resource.
    let json = typed_event(
        "",
        "pods",
        "",
        "get",
        None,
        Some(&secret(&[("k", "typed-secret-8")], &[])),
    );
    let (out, _, _) = run(&r, &json);
    assert_absent(&out, &["typed-secret-8"]);
}

#[test]
fn typed_configmaps() {
    let r = redactor(1);
    let mut cm = config_map(
        json!({"DB_PASSWORD": "typed-cm-secret-1", "LOG_LEVEL": "info", "app.env": "API_KEY=typed-cm-secret-2\nREGION=eu-west-1\n"}),
        json!({"tls.key": b64("not read: binary under a plain key"), "signing_key": b64("typed-cm-secret-3")}),
    );
    cm["metadata"]["annotations"] = json!({LAST_APPLIED: config_map(json!({"apiToken": "typed-cm-secret-4"}), json!({})).to_string()});
    let json = typed_event("", "configmaps", "", "update", Some(&cm), Some(&cm));
    let (out, counts, _) = run(&r, &json);
    assert_absent(
        &out,
        &[
            "typed-cm-secret-1",
            "typed-cm-secret-2",
            "typed-cm-secret-3",
            "typed-cm-secret-4",
        ],
    );
    assert_present(
        &out,
        &[
            r#""LOG_LEVEL":"info""#,
            "REGION=eu-west-1",
            &b64("not read: binary under a plain key"),
        ],
    );
    assert_eq!(counts.configmap_values, 8, "{counts:?}");

    let mut item = config_map(json!({"password": "typed-cm-secret-5"}), json!({}));
    item.as_object_mut().unwrap().remove("kind");
    let list = json!({"kind": "ConfigMapList", "apiVersion": "v1", "items": [item]});
    let json = typed_event("", "configmaps", "", "list", None, Some(&list));
    let (out, counts, _) = run(&r, &json);
    assert_absent(&out, &["typed-cm-secret-5"]);
    assert_eq!(counts.configmap_values, 1);
}

// Property: no value under a secret-like name survives, in any kind that carries env or ConfigMap data,
// however it is wrapped, sent and serialized; and values under other names stay, byte for byte.

fn secret_like_names() -> impl Strategy<Value = String> {
    let long = (
        prop::sample::select(vec!["", "DB_", "db-", "db.", "my", "X", "app_"]),
        prop::sample::select(vec![
            "PASSWORD",
            "password",
            "Passwd",
            "SECRET",
            "Secret",
            "TOKEN",
            "token",
            "API_KEY",
            "apiKey",
            "api-key",
            "ACCESS_KEY",
            "accessKey",
            "PRIVATE_KEY",
            "privateKey",
            "CREDENTIAL",
            "credentials",
            "passphrase",
            "client_secret",
        ]),
        prop::sample::select(vec!["", "_1", "-v2", "_FILE", "Value"]),
    );
    let short = (
        prop::sample::select(vec!["", "DB_", "db-", "x."]),
        prop::sample::select(vec!["PWD", "pwd", "PASS", "pass", "AUTH", "auth", "PW"]),
        prop::sample::select(vec!["", "_1", "-x", ".v"]),
    );
    let camel = (
        prop::sample::select(vec!["db", "redis", "smtp"]),
        prop::sample::select(vec!["Pwd", "Pass", "Auth"]),
    );
    prop_oneof![
        long.prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        short.prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        camel.prop_map(|(a, b)| format!("{a}{b}")),
    ]
}

fn benign_names() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "LOG_LEVEL",
        "HTTP_PORT",
        "AUTHOR",
        "CI_COMMIT_AUTHOR",
        "PASSTHROUGH",
        "BYPASS_CACHE",
        "color",
        "ui.properties",
        "KAFKA_BOOTSTRAP_SERVERS",
        "TZ",
        "FEATURE_FLAGS",
        "OAUTH_URL",
        "keyspace",
        "compass",
        "SENTRY_ENVIRONMENT",
    ])
    .prop_map(str::to_owned)
}

/// What holds the values: a pod-bearing kind (env) or a ConfigMap (data).
#[derive(Debug, Clone, Copy)]
enum Holder {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    PodTemplate,
    ReplicationController,
    /// A custom resource with a pod template.
    Rollout,
    ConfigMap,
}

impl Holder {
    /// (group, resource, kind)
    fn meta(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Holder::Pod => ("", "pods", "Pod"),
            Holder::Deployment => ("apps", "deployments", "Deployment"),
            Holder::StatefulSet => ("apps", "statefulsets", "StatefulSet"),
            Holder::DaemonSet => ("apps", "daemonsets", "DaemonSet"),
            Holder::ReplicaSet => ("apps", "replicasets", "ReplicaSet"),
            Holder::Job => ("batch", "jobs", "Job"),
            Holder::CronJob => ("batch", "cronjobs", "CronJob"),
            Holder::PodTemplate => ("", "podtemplates", "PodTemplate"),
            Holder::ReplicationController => {
                ("", "replicationcontrollers", "ReplicationController")
            }
            Holder::Rollout => ("argoproj.io", "rollouts", "Rollout"),
            Holder::ConfigMap => ("", "configmaps", "ConfigMap"),
        }
    }

    /// The object, with `entries` as env (in the container list `containers`) or as data.
    fn object(self, entries: &[(String, String)], containers: &str) -> Value {
        let (_, _, kind) = self.meta();
        let meta = json!({"name": "x", "namespace": "prod"});
        if let Holder::ConfigMap = self {
            let data: serde_json::Map<String, Value> =
                entries.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            return json!({"kind": kind, "apiVersion": "v1", "metadata": meta, "data": data});
        }
        let mut env: Vec<Value> = entries.iter().map(|(k, v)| env_var(k, v)).collect();
        env.push(env_from_secret("FROM_SECRET", "s", "k"));
        let mut spec = json!({"containers": [{"name": "main", "image": "app:1"}]});
        spec[containers] = json!([{"name": "c", "image": "app:1", "env": env}]);
        let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": spec});
        match self {
            Holder::Pod => {
                json!({"kind": kind, "apiVersion": "v1", "metadata": meta, "spec": spec})
            }
            Holder::PodTemplate => {
                json!({"kind": kind, "apiVersion": "v1", "metadata": meta, "template": template})
            }
            Holder::CronJob => {
                json!({"kind": kind, "apiVersion": "batch/v1", "metadata": meta, "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": template}}}})
            }
            _ => {
                json!({"kind": kind, "apiVersion": "x/v1", "metadata": meta, "spec": {"replicas": 2, "template": template}})
            }
        }
    }
}

fn holders() -> impl Strategy<Value = Holder> {
    prop::sample::select(vec![
        Holder::Pod,
        Holder::Deployment,
        Holder::StatefulSet,
        Holder::DaemonSet,
        Holder::ReplicaSet,
        Holder::Job,
        Holder::CronJob,
        Holder::PodTemplate,
        Holder::ReplicationController,
        Holder::Rollout,
        Holder::ConfigMap,
    ])
}

/// How the object is wrapped in the body.
#[derive(Debug, Clone, Copy)]
enum Around {
    Plain,
    /// Its typed list (`DeploymentList`), items without kind.
    List,
    Table,
    /// Only in its own last-applied copy (the object itself without the entries).
    LastApplied,
}

/// How the body is sent.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// A create's request.
    Create,
    /// A get's response.
    Get,
    /// A merge patch: the object without kind.
    Patch,
}

fn shaped(holder: Holder, object: Value, bare: Value, around: Around, sent: Sent) -> Value {
    let (_, _, kind) = holder.meta();
    let mut body = match around {
        Around::Plain => object,
        Around::List => {
            let mut item = object;
            item.as_object_mut().unwrap().remove("kind");
            json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {}, "items": [bare, item]})
        }
        Around::Table => {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": [{"cells": ["x"], "object": object}]})
        }
        Around::LastApplied => {
            let mut visible = bare;
            visible["metadata"]["annotations"] = json!({LAST_APPLIED: object.to_string()});
            visible
        }
    };
    if let Sent::Patch = sent {
        body.as_object_mut().unwrap().remove("kind");
    }
    body
}

/// `value` as it may appear in the output: raw, JSON-escaped once (a body) or twice (a last-applied copy).
fn spellings(value: &str) -> Vec<String> {
    let once = serde_json::to_string(value).unwrap();
    let once = once[1..once.len() - 1].to_owned();
    let twice = serde_json::to_string(&once).unwrap();
    let twice = twice[1..twice.len() - 1].to_owned();
    vec![value.to_owned(), once, twice]
}

#[allow(clippy::too_many_arguments)]
fn holder_event(
    holder: Holder,
    entries: &[(String, String)],
    containers: &str,
    around: Around,
    sent: Sent,
    go_order: bool,
) -> String {
    let (group, resource, _) = holder.meta();
    let object = holder.object(entries, containers);
    let bare = holder.object(&[], containers);
    let body = shaped(holder, object, bare, around, sent);
    let verb = match sent {
        Sent::Create => "create",
        Sent::Get => "get",
        Sent::Patch => "patch",
    };
    let (request, response) = match sent {
        Sent::Get => (None, Some(&body)),
        Sent::Create | Sent::Patch => (Some(&body), None),
    };
    if go_order {
        typed_event(group, resource, "", verb, request, response)
    } else {
        event_in(
            group,
            resource,
            "",
            verb,
            "/apis/x",
            request.cloned(),
            response.cloned(),
        )
    }
}

fn arounds() -> impl Strategy<Value = Around> {
    prop::sample::select(vec![
        Around::Plain,
        Around::List,
        Around::Table,
        Around::LastApplied,
    ])
}

fn sents() -> impl Strategy<Value = Sent> {
    prop::sample::select(vec![Sent::Create, Sent::Get, Sent::Patch])
}

fn container_lists() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["containers", "initContainers", "ephemeralContainers"])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_secret_like_value_survives(
        names in prop::collection::vec(secret_like_names(), 1..5),
        values in secret_values(),
        benign in prop::collection::vec((benign_names(), "[a-z0-9 ]{6,20}"), 0..3),
        holder in holders(),
        containers in container_lists(),
        around in arounds(),
        sent in sents(),
        go_order: bool,
        key: u8,
    ) {
        // Names once each (a ConfigMap's data is a map).
        let mut seen = std::collections::HashSet::new();
        let secrets: Vec<(String, String)> = names
            .iter()
            .cloned()
            .zip(values.iter().cloned())
            .filter(|(n, _)| seen.insert(n.clone()))
            .collect();
        let benign: Vec<(String, String)> =
            benign.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect();
        let mut entries = secrets.clone();
        entries.extend(benign.iter().cloned());
        let json = holder_event(holder, &entries, containers, around, sent, go_order);
        let (out, counts, modified) = run(&redactor(key), &json);
        prop_assert!(modified);
        let redacted = match holder {
            Holder::ConfigMap => counts.configmap_values,
            _ => counts.env_values,
        };
        prop_assert!(redacted >= secrets.len() as u64, "{:?}: {}", counts, out);
        for (_, v) in &secrets {
            for form in spellings(v) {
                prop_assert!(!out.contains(&form), "`{}` survived in {}", form, out);
            }
        }
        for (_, v) in &benign {
            prop_assert!(out.contains(v.as_str()), "benign `{}` lost in {}", v, out);
        }
    }

    #[test]
    fn benign_names_keep_their_values(
        entries in prop::collection::vec((benign_names(), "[a-z0-9 ]{6,20}"), 1..6),
        holder in holders(),
        containers in container_lists(),
        around in arounds(),
        sent in sents(),
        go_order: bool,
    ) {
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<(String, String)> =
            entries.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect();
        let json = holder_event(holder, &entries, containers, around, sent, go_order);
        let event = Event::parse(&json).unwrap();
        let (out, counts) = redactor(1).redact(&event, &json);
        prop_assert!(!out.is_modified(), "{}", out.as_str());
        prop_assert_eq!(counts.total(), 0);
        prop_assert_eq!(out.as_str(), json.as_str());
    }
}
