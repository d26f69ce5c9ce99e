use super::*;
use serde_json::json;

const URI: &str = "/apis/apps/v1/namespaces/prod/deployments/api";

fn deployment(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "api", "namespace": "prod", "uid": "u-1", "resourceVersion": "10"},
           "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "api", "image": image}]}}},
           "status": {"replicas": 3}})
}

fn write<'a>(
    verb: &'a str,
    level: &'a str,
    req: Option<&'a Value>,
    resp: Option<&'a Value>,
) -> Write<'a> {
    Write {
        verb,
        subresource: None,
        api_group: Some("apps"),
        resource: "deployments",
        uri: URI,
        level,
        code: Some(200),
        request_object: req,
        response_object: resp,
    }
}

fn lines(step: &Step) -> Vec<String> {
    step.changes.iter().map(ToString::to_string).collect()
}

#[test]
fn create_lists_every_field_then_updates_diff_against_it() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    let step = r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    assert_eq!(step.action, Action::Created);
    assert!(step.before_known);
    assert_eq!(
        lines(&step),
        [
            "apiVersion: (absent) -> apps/v1",
            "kind: (absent) -> Deployment",
            "metadata.name: (absent) -> api",
            "metadata.namespace: (absent) -> prod",
            "spec.replicas: (absent) -> 3",
            "spec.template.spec.containers[0].image: (absent) -> corp/api:2",
            "spec.template.spec.containers[0].name: (absent) -> api",
        ],
        "no uid, resourceVersion or status"
    );
    assert_eq!(r.state(), Some(&created));

    let mut updated = deployment("evil/api:2");
    updated["metadata"]["resourceVersion"] = json!("11");
    updated["status"] = json!({"replicas": 0});
    let step = r.step(&write("update", "Request", Some(&updated), None));
    assert_eq!(step.action, Action::Updated);
    assert_eq!(
        lines(&step),
        ["spec.template.spec.containers[0].image: corp/api:2 -> evil/api:2"]
    );
    assert!(step.notes.is_empty(), "{:?}", step.notes);
    // The body's status is not the object's: an update to the main resource keeps it.
    assert_eq!(r.state().unwrap()["status"], json!({"replicas": 3}));
}

#[test]
fn patches_apply_to_the_known_state() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    // A sidecar by strategic merge: both containers stay, the added one is listed by itself.
    let doc = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "miner", "image": "evil/miner", "securityContext": {"privileged": true}}]}}}});
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert_eq!(step.action, Action::Patched);
    assert_eq!(step.patch, Some(PatchType::StrategicMerge));
    assert!(step.patch_assumed && step.before_known);
    assert_eq!(
        lines(&step),
        [
            "spec.template.spec.containers[0].image: (absent) -> evil/miner",
            "spec.template.spec.containers[0].name: (absent) -> miner",
            "spec.template.spec.containers[0].securityContext.privileged: (absent) -> true",
        ]
    );
    assert!(
        step.notes[0].starts_with("interpreted as a strategic merge patch"),
        "{:?}",
        step.notes
    );
    assert_eq!(
        r.state()
            .unwrap()
            .pointer("/spec/template/spec/containers/1/name"),
        Some(&json!("api"))
    );
    // A JSON patch on the state just made.
    let doc = json!([{"op": "replace", "path": "/spec/replicas", "value": 0}]);
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert_eq!(
        (step.patch, step.patch_assumed),
        (Some(PatchType::Json), false)
    );
    assert_eq!(lines(&step), ["spec.replicas: 3 -> 0"]);
    assert!(step.notes.is_empty(), "{:?}", step.notes);
    // A list-free patch needs no note on its type.
    let doc = json!({"metadata": {"labels": {"tier": "web"}}});
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert_eq!(lines(&step), ["metadata.labels.tier: (absent) -> web"]);
    assert!(step.notes.is_empty(), "{:?}", step.notes);
}

#[test]
fn a_recorded_response_is_the_state_after() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    let doc = json!({"spec": {"replicas": 5}});
    let mut response = deployment("corp/api:2");
    response["spec"]["replicas"] = json!(5);
    response["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "2"});
    let step = r.step(&write(
        "patch",
        "RequestResponse",
        Some(&doc),
        Some(&response),
    ));
    assert_eq!(
        lines(&step),
        [
            r#"metadata.annotations["deployment.kubernetes.io/revision"]: (absent) -> "2""#,
            "spec.replicas: 3 -> 5"
        ]
    );
    assert_eq!(step.notes, [RESPONSE_IS_AFTER]);
    assert_eq!(r.state(), Some(&response));
}

#[test]
fn metadata_level_writes_make_the_state_unknown() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    let step = r.step(&write("patch", "Metadata", None, None));
    assert_eq!(step.action, Action::Patched);
    assert_eq!(step.notes, [METADATA_ONLY]);
    assert!(step.changes.is_empty() && step.patch.is_none() && !step.before_known);
    assert_eq!(r.state(), None);
    // The next patch shows only what it sets.
    let doc = json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "evil/api:2"}]}}}});
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert!(!step.before_known);
    assert_eq!(
        lines(&step),
        ["spec.template.spec.containers[name=api].image: ? -> evil/api:2"]
    );
    assert_eq!(
        step.notes[0],
        "no earlier state recorded: the fields the patch sets"
    );
    assert_eq!(r.state(), None);
    // An update records the whole object again.
    let updated = deployment("corp/api:3");
    let step = r.step(&write("update", "Request", Some(&updated), None));
    assert!(step.changes.is_empty() && !step.before_known);
    assert_eq!(
        step.notes,
        ["no earlier state recorded: the update's full body is the object after it"]
    );
    assert_eq!(r.state(), Some(&updated));
    // A patch whose response is recorded, on an unknown state: what it sets, and the state from then on.
    r.step(&write("update", "Metadata", None, None));
    let response = deployment("corp/api:4");
    let step = r.step(&write(
        "patch",
        "RequestResponse",
        Some(&doc),
        Some(&response),
    ));
    assert!(!step.before_known);
    assert_eq!(step.changes.len(), 1);
    assert!(step.notes.contains(&RESPONSE_IS_AFTER.to_string()));
    assert_eq!(r.state(), Some(&response));
}

#[test]
fn refused_writes_change_nothing() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    let doc = json!({"spec": {"replicas": 50}});
    let mut w = write("patch", "RequestResponse", Some(&doc), None);
    w.code = Some(403);
    let step = r.step(&w);
    assert_eq!(step.notes, ["refused (403): nothing changed"]);
    assert!(step.changes.is_empty());
    assert_eq!(step.patch, Some(PatchType::StrategicMerge));
    w.code = Some(503);
    assert_eq!(r.step(&w).notes, ["failed (503): nothing changed"]);
    let mut d = write("delete", "Metadata", None, None);
    d.code = Some(404);
    assert_eq!(r.step(&d).action, Action::Deleted);
    assert_eq!(r.state(), Some(&created));
}

#[test]
fn deletes_end_the_object_unless_it_is_only_marked() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    let step = r.step(&write("delete", "Metadata", None, None));
    assert_eq!(step.action, Action::Deleted);
    assert_eq!(step.notes, ["deleted"]);
    assert_eq!(r.state(), None);

    let mut held = deployment("corp/api:2");
    held["metadata"]["finalizers"] = json!(["example.com/guard"]);
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&held),
        Some(&held),
    ));
    let mut marked = held.clone();
    marked["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let step = r.step(&write("delete", "RequestResponse", None, Some(&marked)));
    assert_eq!(step.action, Action::Deleted);
    assert_eq!(
        lines(&step),
        ["metadata.deletionTimestamp: (absent) -> 2026-01-01T00:00:00Z"]
    );
    assert!(step.notes[0].starts_with("marked for deletion"));
    assert_eq!(r.state(), Some(&marked));
}

#[test]
fn status_writes_change_only_status_and_object_writes_never_do() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    let mut body = deployment("ignored/by:status");
    body["status"] = json!({"replicas": 3, "readyReplicas": 3});
    let mut w = write("update", "Request", Some(&body), None);
    w.subresource = Some("status");
    let step = r.step(&w);
    assert_eq!(step.action, Action::Updated);
    assert_eq!(lines(&step), ["status.readyReplicas: (absent) -> 3"]);
    let state = r.state().unwrap();
    assert_eq!(state["status"]["readyReplicas"], json!(3));
    assert_eq!(
        state.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("corp/api:2"))
    );
    // A status patch.
    let doc = json!({"status": {"readyReplicas": 1}});
    let mut w = write("patch", "Request", Some(&doc), None);
    w.subresource = Some("status");
    assert_eq!(lines(&r.step(&w)), ["status.readyReplicas: 3 -> 1"]);
    // A main-resource patch that names status: the apiserver ignores it.
    let doc = json!({"status": {"readyReplicas": 99}, "spec": {"paused": true}});
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert_eq!(lines(&step), ["spec.paused: (absent) -> true"]);
    assert_eq!(r.state().unwrap()["status"]["readyReplicas"], json!(1));
}

#[test]
fn scale_writes_set_the_replica_count() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    let scale = json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "api"}, "spec": {"replicas": 10}});
    let mut w = write("update", "Request", Some(&scale), None);
    w.subresource = Some("scale");
    let step = r.step(&w);
    assert_eq!(step.action, Action::Updated);
    assert_eq!(lines(&step), ["spec.replicas: 3 -> 10"]);
    assert_eq!(r.state().unwrap()["spec"]["replicas"], json!(10));
    // kubectl scale's patch.
    let doc = json!({"spec": {"replicas": 0}});
    let mut w = write("patch", "Request", Some(&doc), None);
    w.subresource = Some("scale");
    let step = r.step(&w);
    assert_eq!(
        (step.action, step.patch),
        (Action::Patched, Some(PatchType::StrategicMerge))
    );
    assert_eq!(lines(&step), ["spec.replicas: 10 -> 0"]);
    // Unknown state: the count it sets.
    let mut r = Replay::new();
    let step = r.step(&w);
    assert_eq!(lines(&step), ["spec.replicas: ? -> 0"]);
    assert!(!step.before_known);
    assert_eq!(r.state(), None);
}

#[test]
fn other_subresources_do_not_change_the_object() {
    let mut r = Replay::new();
    let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let mut w = write("create", "RequestResponse", Some(&pod), Some(&pod));
    w.resource = "pods";
    w.api_group = None;
    r.step(&w);
    let binding = json!({"kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-7"}});
    let mut b = write("create", "RequestResponse", Some(&binding), None);
    b.subresource = Some("binding");
    let step = r.step(&b);
    assert_eq!(step.action, Action::Other);
    assert_eq!(step.notes, ["scheduled to node node-7"]);
    assert!(step.changes.is_empty());
    assert_eq!(r.state().unwrap()["spec"]["nodeName"], json!("node-7"));
    let mut e = write("create", "Metadata", None, None);
    e.subresource = Some("exec");
    let step = r.step(&e);
    assert_eq!(step.action, Action::Other);
    assert_eq!(
        step.notes,
        ["create on the exec subresource: the object itself is not changed"]
    );
    assert!(r.state().is_some());
    // An ephemeral container is a change to the pod.
    let doc = json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}});
    let mut p = write("patch", "Request", Some(&doc), None);
    p.subresource = Some("ephemeralcontainers");
    p.api_group = None;
    let step = r.step(&p);
    assert_eq!(step.action, Action::Patched);
    assert_eq!(
        lines(&step),
        [
            "spec.ephemeralContainers[0].image: (absent) -> busybox",
            "spec.ephemeralContainers[0].name: (absent) -> debugger"
        ]
    );
}

#[test]
fn a_patch_that_does_not_apply_shows_what_it_sets() {
    let mut r = Replay::new();
    let created = deployment("corp/api:2");
    r.step(&write(
        "create",
        "RequestResponse",
        Some(&created),
        Some(&created),
    ));
    let doc = json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/spec/template/spec/containers/0/args", "value": ["-x"]},
        {"op": "replace", "path": "/spec/x", "value": 1}
    ]);
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert_eq!(
        step.notes[0],
        "the patch did not apply to the recorded earlier state (op 2 (replace): path /spec/x does not exist): \
         the fields it sets"
    );
    assert!(!step.before_known);
    assert_eq!(
        lines(&step),
        [
            "spec.template.spec.containers[0].args[0]: ? -> -x",
            "spec.x: ? -> 1"
        ]
    );
    assert_eq!(r.state(), None);
}

#[test]
fn secrets_stay_redacted_through_a_replay() {
    const M1: &str = "kubetrail-redacted:len=8:hmac=AAAAAAAAAAAAAAAAAAAAAA";
    const M2: &str = "kubetrail-redacted:len=9:hmac=BBBBBBBBBBBBBBBBBBBBBB";
    let mut r = Replay::new();
    let secret = |m: &str| json!({"kind": "Secret", "metadata": {"name": "db"}, "data": {"password": m, "user": "YXBw"}});
    let (s1, s2) = (secret(M1), secret(M2));
    let mut w = write("create", "RequestResponse", Some(&s1), Some(&s1));
    w.resource = "secrets";
    let created = r.step(&w);
    let same = r.step(&write("update", "Request", Some(&s1), None));
    let changed = r.step(&write("update", "Request", Some(&s2), None));
    assert!(same.changes.is_empty());
    assert_eq!(
        lines(&changed),
        ["data.password: [redacted] -> [redacted, changed]"]
    );
    for step in [&created, &same, &changed] {
        let text = format!("{step:?}{}", serde_json::to_string(step).unwrap());
        assert!(
            !text.contains("hmac") && !text.contains("AAAA") && !text.contains("BBBB"),
            "{text}"
        );
    }
}

#[test]
fn odd_bodies_never_panic() {
    let odd = [
        json!(null),
        json!(1),
        json!("x"),
        json!([1, [2]]),
        json!({"metadata": 5}),
        json!({"spec": []}),
    ];
    for verb in ["create", "update", "patch", "delete", "get"] {
        for sub in [None, Some("status"), Some("scale"), Some("binding")] {
            for body in &odd {
                let mut r = Replay::new();
                let base = deployment("a");
                r.step(&write(
                    "create",
                    "RequestResponse",
                    Some(&base),
                    Some(&base),
                ));
                let mut w = write(verb, "RequestResponse", Some(body), Some(body));
                w.subresource = sub;
                let step = r.step(&w);
                let _ = step.changes.iter().map(ToString::to_string).count();
                let mut w = write(verb, "Request", Some(body), None);
                w.subresource = sub;
                r.step(&w);
            }
        }
    }
    assert_eq!(Replay::new().step(&Write::default()).action, Action::Other);
}

#[test]
fn a_patch_read_as_strategic_merge_says_what_a_merge_patch_would_also_have_done() {
    // A client may send the same document as a JSON merge patch: the containers list is then replaced, and
    // the sidecar it does not name is gone. The log cannot tell which; the note says what else it would be.
    let mut r = Replay::new();
    let mut created = deployment("corp/api:2");
    created["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "falco-sidecar", "image": "falco:0.38"}));
    r.step(&write("create", "Request", Some(&created), None));
    let doc = json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "evil/api:2"}]}}}});
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert_eq!(step.patch, Some(PatchType::StrategicMerge));
    assert_eq!(
        lines(&step),
        ["spec.template.spec.containers[0].image: corp/api:2 -> evil/api:2"]
    );
    let note = step
        .notes
        .iter()
        .find(|n| n.starts_with("sent as a JSON merge patch instead"))
        .unwrap_or_else(|| panic!("{:?}", step.notes));
    assert!(
        note.ends_with("it would also have: spec.template.spec.containers[1]: 2 fields removed"),
        "{note}"
    );
    // A patch with no list reads the same either way: no such note.
    let doc = json!({"spec": {"replicas": 5}});
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert!(
        step.notes
            .iter()
            .all(|n| !n.starts_with("sent as a JSON merge patch")),
        "{:?}",
        step.notes
    );
}

#[test]
fn a_dry_run_changes_nothing() {
    // The attacker's change, then a dry run "reverting" it: answered 200 with the object as it would be.
    let mut r = Replay::new();
    r.step(&write(
        "create",
        "Request",
        Some(&deployment("corp/api:2")),
        None,
    ));
    let swap = json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "evil/api:2"}]}}}});
    r.step(&write("patch", "Request", Some(&swap), None));
    let back = json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "corp/api:2"}]}}}});
    let clean = deployment("corp/api:2");
    let mut dry = write("patch", "RequestResponse", Some(&back), Some(&clean));
    dry.uri = "/apis/apps/v1/namespaces/prod/deployments/api?dryRun=All&fieldManager=kubectl-patch";
    let step = r.step(&dry);
    assert_eq!(step.action, Action::Other);
    assert!(step.changes.is_empty());
    assert!(step.notes[0].starts_with("dry run"), "{:?}", step.notes);
    assert_eq!(
        r.state().unwrap()["spec"]["template"]["spec"]["containers"][0]["image"],
        "evil/api:2",
        "the state is the real one"
    );
    // A pair the apiserver drops (Go's ParseQuery refuses a `;`) does not make a real change a dry run.
    for uri in [
        "/apis/apps/v1/namespaces/prod/deployments/api?dryRun=All;",
        "/apis/apps/v1/namespaces/prod/deployments/api?dryRun=All%zz",
    ] {
        let mut real = write("patch", "Request", Some(&back), None);
        real.uri = uri;
        let step = r.step(&real);
        assert_eq!(step.action, Action::Patched, "{uri}");
        assert_eq!(
            lines(&step),
            ["spec.template.spec.containers[0].image: evil/api:2 -> corp/api:2"]
        );
        r.step(&write("patch", "Request", Some(&swap), None));
    }
}

#[test]
fn a_directive_does_not_make_a_patch_a_strategic_merge() {
    // A JSON merge patch may carry a directive the apiserver drops as an unknown field: still a guess, and
    // what the merge patch would have removed is said.
    let mut r = Replay::new();
    let mut created = deployment("corp/api:2");
    created["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "falco-sidecar", "image": "falco:0.38"}));
    r.step(&write("create", "Request", Some(&created), None));
    let doc = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "api", "image": "evil/api:2"}], "$setElementOrder/zz": []}}}});
    let step = r.step(&write("patch", "Request", Some(&doc), None));
    assert!(step.patch_assumed);
    assert!(
        step.notes
            .iter()
            .any(|n| n.contains("containers[1]: 2 fields removed")),
        "{:?}",
        step.notes
    );
}

#[test]
fn a_body_that_is_not_json_is_not_applied() {
    let mut r = Replay::new();
    r.step(&write(
        "create",
        "Request",
        Some(&deployment("corp/api:2")),
        None,
    ));
    let yaml = Value::String("apiVersion: apps/v1\nkind: Deployment\n".into());
    let step = r.step(&write("patch", "Request", Some(&yaml), None));
    assert!(step.changes.is_empty(), "{:?}", lines(&step));
    assert!(r.state().is_none(), "the state after it is unknown");
    assert!(
        step.notes.iter().any(|n| n.contains("not a JSON object")),
        "{:?}",
        step.notes
    );
}
