//! Redaction: no Secret value, bearer token or TokenRequest token survives, whatever shape carries it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kubetrail_model::Event;
use kubetrail_policy::{RedactionCounts, RedactionKey, Redactor};
use proptest::prelude::*;
use serde_json::{Value, json};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn redactor(seed: u8) -> Redactor {
    Redactor::new(RedactionKey::from_bytes([seed; 32]))
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

/// A ResponseComplete event at RequestResponse level about `resource[/subresource]`.
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
    let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"token": "not-a-secret"}});
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
