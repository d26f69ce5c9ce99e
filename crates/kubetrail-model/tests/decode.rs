//! `decode_value` over real events and the managed clouds' envelopes (fixtures/README.md gives provenance).

use std::borrow::Cow;
use std::path::Path;

use kubetrail_model::{DecodeError, Envelope, Event, Record, Stage, decode_value};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode(json: &str) -> Vec<Result<Record<'_>, DecodeError>> {
    let mut out = Vec::new();
    decode_value(json, &mut |r| out.push(r));
    out
}

/// Decodes every non-empty line; returns the records and the errors.
fn decode_lines(text: &str) -> (Vec<Record<'_>>, Vec<DecodeError>) {
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        decode_value(line, &mut |r| match r {
            Ok(r) => records.push(r),
            Err(e) => errors.push(e),
        });
    }
    (records, errors)
}

fn parse<'a>(r: &'a Record<'_>) -> Event<'a> {
    Event::parse(&r.json).unwrap_or_else(|e| panic!("{e}: {}", r.json))
}

#[test]
fn falco_trace_files_decode_and_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/falco");
    let (mut events, mut errors) = (0, Vec::new());
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let (records, errs) = decode_lines(&text);
        for r in &records {
            assert_eq!(r.envelope, Envelope::Native);
            assert!(
                matches!(r.json, Cow::Borrowed(_)),
                "native events are not copied"
            );
            parse(r);
        }
        events += records.len();
        errors.extend(
            errs.into_iter()
                .map(|e| (path.file_name().unwrap().to_owned(), e)),
        );
    }
    assert_eq!(events, 11);
    // fal_01_003.json is `{"kind": 0}`.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "fal_01_003.json");
    assert_eq!(errors[0].1.index, None);
    assert!(
        errors[0]
            .1
            .reason
            .contains("expected `Event` or `EventList`"),
        "{}",
        errors[0].1
    );
}

#[test]
fn audit2rbac_log_decodes_with_impersonation() {
    let text = fixture("audit2rbac_demo.log");
    let (records, errors) = decode_lines(&text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(records.len(), 37);
    let events: Vec<Event> = records.iter().map(parse).collect();
    let first = &events[0];
    assert_eq!(first.user.username, "system:admin");
    assert_eq!(first.impersonated_user.as_ref().unwrap().username, "bob");
    assert_eq!(first.code(), Some(403));
    assert_eq!(
        first.received_at().unwrap().to_string(),
        "2017-09-11T19:55:05Z"
    );
    assert!(events.iter().all(|e| e.impersonated_user.is_some()));
    assert_eq!(events.iter().filter(|e| e.code() == Some(403)).count(), 11);
}

#[test]
fn eks_native_lines_are_native() {
    let text = fixture("panther_eks_native.jsonl");
    let (records, errors) = decode_lines(&text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(records.len(), 19);
    for r in &records {
        assert_eq!((r.envelope, r.cluster.as_deref()), (Envelope::Native, None));
        parse(r);
    }
}

#[test]
fn eks_cloudwatch_batch_names_the_cluster_and_rejects_other_streams() {
    let text = fixture("eks_cloudwatch_batch.json");
    let results = decode(&text);
    assert_eq!(results.len(), 3);
    let demo = fixture("audit2rbac_demo.log");
    for (r, line) in results[..2].iter().zip(demo.lines()) {
        let r = r.as_ref().unwrap();
        assert_eq!(r.envelope, Envelope::EksCloudWatch);
        assert_eq!(r.cluster.as_deref(), Some("prod-eu"));
        assert_eq!(r.json, line, "the inner event is intact");
        parse(r);
    }
    let err = results[2].as_ref().unwrap_err();
    assert_eq!(err.index, Some(2));
    assert!(err.reason.contains("not a Kubernetes audit event"), "{err}");

    let control = r#"{"messageType":"CONTROL_MESSAGE","logGroup":"","logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}"#;
    assert!(decode(control).is_empty());
}

#[test]
fn eks_cloudwatch_records() {
    let text = fixture("eks_cloudwatch_records.jsonl");
    let (records, errors) = decode_lines(&text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(
            (r.envelope, r.cluster.as_deref()),
            (Envelope::EksCloudWatch, None)
        );
        parse(r);
    }
}

#[test]
fn aks_records_decode_in_string_and_object_form() {
    let text = fixture("panther_aks.jsonl");
    let (records, errors) = decode_lines(&text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(records.len(), 34);
    assert!(records.iter().all(|r| r.envelope == Envelope::Aks));
    // Panther wrote most of these by hand without `auditID`, `level` and `stage`; two are complete.
    assert_eq!(
        records
            .iter()
            .filter(|r| Event::parse(&r.json).is_ok())
            .count(),
        2
    );
    let anon = records
        .iter()
        .find(|r| r.json.contains("system:anonymous") && r.cluster.is_some());
    assert_eq!(anon.unwrap().cluster.as_deref(), Some("cluster"));

    let text = fixture("aks_eventhub_records.json");
    let results = decode(&text);
    assert_eq!(results.len(), 3);
    let (string, object) = (results[0].as_ref().unwrap(), results[1].as_ref().unwrap());
    assert!(matches!(string.json, Cow::Owned(_)));
    assert!(
        matches!(object.json, Cow::Borrowed(_)),
        "an object log is not copied"
    );
    assert_eq!(object.cluster.as_deref(), Some("AKS-PROD"));
    assert_eq!((string.index, object.index), (0, 1));
    parse(string);
    parse(object);
    let err = results[2].as_ref().unwrap_err();
    assert_eq!(err.index, Some(2));
    assert!(err.reason.contains("category `kube-apiserver`"), "{err}");
}

#[test]
fn gke_entries_become_native_events() {
    let text = fixture("panther_gke.jsonl");
    let (records, errors) = decode_lines(&text);
    assert_eq!(records.len() + errors.len(), 57);
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.reason
            == "GKE entry for `deploymentmanager.googleapis.com`, not a Kubernetes audit event (method `v2.deploymentmanager.deployments.insert`)"),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.reason.contains("`compute.googleapis.com`"))
    );
    for r in &records {
        assert_eq!(r.envelope, Envelope::Gke);
        let ev = parse(r);
        assert_eq!(ev.stage, Stage::ResponseComplete);
        assert_eq!(ev.api_version.as_deref(), Some("audit.k8s.io/v1"));
        assert!(!ev.verb.is_empty(), "{}", r.json);
    }
}

#[test]
fn gke_pod_exec() {
    let line = fixture("panther_gke.jsonl")
        .lines()
        .find(|l| l.contains("disallowed.user@example.com"))
        .unwrap()
        .to_owned();
    let results = decode(&line);
    let r = results[0].as_ref().unwrap();
    let ev = parse(r);
    let a = ev.attributes();
    assert_eq!(
        (
            a.verb,
            a.api_group,
            a.resource,
            a.subresource,
            a.namespace,
            a.name
        ),
        (
            "create",
            "",
            "pods",
            "exec",
            "example",
            "one-off-valerii-tovstyk-1646666967280"
        )
    );
    assert_eq!(
        a.path,
        "/api/v1/namespaces/example/pods/one-off-valerii-tovstyk-1646666967280/exec"
    );
    assert_eq!(a.user, Some("disallowed.user@example.com"));
    assert_eq!(ev.source_ips, ["88.88.88.88"]);
    assert_eq!(
        ev.user_agent.as_deref(),
        Some("kubectl/v1.40.8 (darwin/amd64) kubernetes/6575935")
    );
    assert_eq!(
        ev.received_at().unwrap().to_string(),
        "2022-03-04T16:01:49.978756Z"
    );
    assert_eq!(ev.level, kubetrail_model::Level::Metadata);
    assert_eq!(ev.code(), Some(201));
    assert_eq!(r.cluster, None);
    // No insertId: the auditID is a stable hash of the entry.
    assert_eq!(
        parse(decode(&line)[0].as_ref().unwrap()).audit_id,
        ev.audit_id
    );
}

#[test]
fn gke_failed_create_with_cluster_and_space_separated_time() {
    let line = fixture("panther_gke.jsonl")
        .lines()
        .find(|l| l.contains("test-privileged-pod\\\" already exists"))
        .unwrap()
        .to_owned();
    let results = decode(&line);
    let r = results[0].as_ref().unwrap();
    assert_eq!(r.cluster.as_deref(), Some("some-project-cluster"));
    let ev = parse(r);
    assert_eq!(ev.code(), Some(409));
    assert_eq!(
        ev.received_at().unwrap().to_string(),
        "2024-02-13T13:13:24.07914Z"
    );
    assert_eq!(ev.level, kubetrail_model::Level::RequestResponse);
    assert!(ev.request_object.is_some());
    let status = ev.response_status.unwrap();
    assert_eq!(
        status.message.as_deref(),
        Some("pods \"test-privileged-pod\" already exists")
    );
}

/// A failed request whose entry carries no RPC status: its response is a Kubernetes `Status` saying so
/// (Panther's "Pod Not Created" case), so the event must not read as a created pod.
#[test]
fn gke_failure_status_response_without_rpc_status() {
    let entry = |response: &str| {
        format!(
            r#"{{"protoPayload":{{"authenticationInfo":{{"principalEmail":"a@example.com"}},"methodName":"io.k8s.core.v1.pods.create","resourceName":"core/v1/namespaces/default/pods/test","response":{response}}},"resource":{{"type":"k8s_cluster","labels":{{"cluster_name":"c"}}}},"timestamp":"2024-02-16T12:55:00Z"}}"#
        )
    };
    let code = |response: &str| {
        let line = entry(response);
        let results = decode(&line);
        parse(results[0].as_ref().unwrap()).code()
    };
    assert_eq!(code(r#"{"status":"Failure"}"#), Some(500));
    // A custom resource whose own status field reads "Failure" was created.
    assert_eq!(
        code(r#"{"kind":"Widget","metadata":{"name":"w"},"status":"Failure"}"#),
        Some(201)
    );
    assert_eq!(
        code(r#"{"kind":"Status","status":"Failure","code":403}"#),
        Some(403)
    );
    assert_eq!(
        code(r#"{"kind":"Pod","metadata":{"name":"test"}}"#),
        Some(201)
    );
}

#[test]
fn gke_non_resource_and_rbac_requests() {
    let check = |method: &str, resource_name: &str, path: &str, group: &str| {
        let line = format!(
            r#"{{"insertId":"id-1","protoPayload":{{"methodName":"{method}","resourceName":"{resource_name}","serviceName":"k8s.io","authenticationInfo":{{"principalEmail":"system:anonymous"}}}},"timestamp":"2024-01-19T13:47:18Z"}}"#
        );
        let results = decode(&line);
        let ev = parse(results[0].as_ref().unwrap());
        assert_eq!(ev.audit_id, "id-1");
        assert_eq!(ev.attributes().path, path, "{method}");
        assert_eq!(ev.attributes().api_group, group, "{method}");
    };
    check("io.k8s.core.v1.healthz.get", "", "/healthz", "");
    check("io.k8s.readyz", "", "/readyz", "");
    check(
        "io.k8s.authorization.rbac.v1.clusterroles.create",
        "rbac.authorization.k8s.io/v1/clusterroles/admin2",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin2",
        "rbac.authorization.k8s.io",
    );
    check(
        "io.k8s.apps.v1.deployments.list",
        "apps/v1/namespaces/prod/deployments",
        "/apis/apps/v1/namespaces/prod/deployments",
        "apps",
    );
}

#[test]
fn eventlist_items_decode_without_kind() {
    let text = fixture("eventlist_webhook.json");
    let results = decode(&text);
    assert_eq!(results.len(), 4);
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap();
        assert_eq!((r.index, r.envelope), (i, Envelope::Native));
        let ev = parse(r);
        assert_eq!(ev.kind, None);
    }
}

#[test]
fn arrays_flatten_events_and_lists() {
    let demo = fixture("audit2rbac_demo.log");
    let lines: Vec<&str> = demo.lines().collect();
    let list =
        r#"{"kind":"EventList","items":[{"level":"None","auditID":"l1","stage":"Panic"},7]}"#;
    let json = format!("[{}, {list}, {{\"kind\": 0}}, {}]", lines[0], lines[1]);
    let results = decode(&json);
    let summary: Vec<(Option<usize>, bool)> = results
        .iter()
        .map(|r| match r {
            Ok(r) => (Some(r.index), true),
            Err(e) => (e.index, false),
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some(0), true),
            (Some(1), true),
            (Some(2), false),
            (Some(3), false),
            (Some(4), true)
        ]
    );
    assert_eq!(results[0].as_ref().unwrap().json, lines[0]);
    assert!(decode("[]").is_empty());
    assert!(decode(r#"{"kind":"EventList","items":null}"#).is_empty());
}

#[test]
fn values_that_are_not_events_are_errors() {
    for (json, expect) in [
        (r#"{"kind": 0}"#, "expected `Event` or `EventList`"),
        (r#"{"kind": "Pod"}"#, "unexpected kind `Pod`"),
        (r#"{"hello": "world"}"#, "not an audit event"),
        ("42", "expected a JSON object or array"),
        ("", "empty input"),
        ("{\"auditID\":", "invalid JSON"),
        (
            r#"{"category":"Administrative","operationName":"Microsoft.Compute/virtualMachines/write"}"#,
            "category `Administrative`",
        ),
        (
            r#"{"protoPayload":{"methodName":"compute.instances.list"}}"#,
            "GKE entry for `compute.instances.list`",
        ),
        (
            r#"{"message":"plain text"}"#,
            "not a Kubernetes audit event",
        ),
        ("[[[[[[[]]]]]]]", "nested deeper"),
    ] {
        let results = decode(json);
        assert_eq!(results.len(), 1, "{json}");
        let err = results[0].as_ref().unwrap_err();
        assert!(err.reason.contains(expect), "{json}: {err}");
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_input(s in "\\PC*") {
        decode_value(&s, &mut |_| {});
    }

    #[test]
    fn never_panics_on_mutated_events(
        which in 0usize..4,
        at in any::<prop::sample::Index>(),
        len in 0usize..8,
        insert in "[\\[\\]{}\":,0-9a-zA-Z\\\\ ./-]{0,6}",
    ) {
        let samples = [
            fixture("panther_gke.jsonl"),
            fixture("aks_eventhub_records.json"),
            fixture("eks_cloudwatch_batch.json"),
            fixture("eventlist_webhook.json"),
        ];
        let line = samples[which].lines().next().unwrap_or_default().to_owned();
        let text = if which == 1 || which == 3 { samples[which].clone() } else { line };
        let mut start = at.index(text.len() + 1);
        while !text.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        let mutated = format!("{}{insert}{}", &text[..start], &text[end.max(start)..]);
        decode_value(&mutated, &mut |r| {
            if let Ok(r) = r {
                let _ = Event::parse(&r.json);
            }
        });
    }
}
