use super::*;
use serde_json::json;

/// `(target, patch, expected)`: `None` expected when the patch must fail.
type Case = (Value, Value, Option<Value>);

fn run(kind: PatchType, cases: Vec<Case>) {
    for (i, (target, patch, expected)) in cases.into_iter().enumerate() {
        let got = apply(kind, &target, &patch);
        match expected {
            Some(e) => assert_eq!(
                got.as_ref().ok(),
                Some(&e),
                "{} case {i}: {got:?}",
                kind.as_str()
            ),
            None => assert!(
                got.is_err(),
                "{} case {i} should fail: {got:?}",
                kind.as_str()
            ),
        }
    }
}

/// RFC 6902 appendix A (A.13, a document with a duplicate key, is a JSON parser matter), and copy.
#[test]
fn json_patch_follows_rfc_6902() {
    run(
        PatchType::Json,
        vec![
            // A.1 adding an object member
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}]),
                Some(json!({"baz": "qux", "foo": "bar"})),
            ),
            // A.2 adding an array element
            (
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
                Some(json!({"foo": ["bar", "qux", "baz"]})),
            ),
            // A.3 removing an object member
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}]),
                Some(json!({"foo": "bar"})),
            ),
            // A.4 removing an array element
            (
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}]),
                Some(json!({"foo": ["bar", "baz"]})),
            ),
            // A.5 replacing a value
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
                Some(json!({"baz": "boo", "foo": "bar"})),
            ),
            // A.6 moving a value
            (
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
                Some(json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})),
            ),
            // A.7 moving an array element
            (
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
                Some(json!({"foo": ["all", "cows", "eat", "grass"]})),
            ),
            // A.8 testing a value: success
            (
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}]),
                Some(json!({"baz": "qux", "foo": ["a", 2, "c"]})),
            ),
            // A.9 testing a value: error
            (
                json!({"baz": "qux"}),
                json!([{"op": "test", "path": "/baz", "value": "bar"}]),
                None,
            ),
            // A.10 adding a nested member object
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
                Some(json!({"foo": "bar", "child": {"grandchild": {}}})),
            ),
            // A.11 ignoring unrecognized elements
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]),
                Some(json!({"foo": "bar", "baz": "qux"})),
            ),
            // A.12 adding to a nonexistent target
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
                None,
            ),
            // A.14 ~ escape ordering
            (
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": 10}]),
                Some(json!({"/": 9, "~1": 10})),
            ),
            // A.15 comparing strings and numbers
            (
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": "10"}]),
                None,
            ),
            // A.16 adding an array value (`-` appends)
            (
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
                Some(json!({"foo": ["bar", ["abc", "def"]]})),
            ),
            // copy
            (
                json!({"a": {"b": 1}}),
                json!([{"op": "copy", "from": "/a", "path": "/c"}]),
                Some(json!({"a": {"b": 1}, "c": {"b": 1}})),
            ),
            // `~1` in a key, as kubectl writes an annotation's
            (
                json!({"metadata": {"annotations": {}}}),
                json!([{"op": "add", "path": "/metadata/annotations/app.kubernetes.io~1name", "value": "x"}]),
                Some(json!({"metadata": {"annotations": {"app.kubernetes.io/name": "x"}}})),
            ),
            // replace of a missing member fails (kube-apiserver's json patch refuses it too)
            (
                json!({"a": 1}),
                json!([{"op": "replace", "path": "/b", "value": 2}]),
                None,
            ),
            // an index past the end fails
            (
                json!({"a": [1]}),
                json!([{"op": "add", "path": "/a/5", "value": 2}]),
                None,
            ),
            // not a list, an unknown op, a missing value
            (json!({}), json!({"op": "add"}), None),
            (json!({}), json!([{"op": "frobnicate", "path": "/a"}]), None),
            (json!({}), json!([{"op": "add", "path": "/a"}]), None),
            (
                json!({}),
                json!([{"op": "add", "path": "a", "value": 1}]),
                None,
            ),
        ],
    );
}

#[test]
fn a_failing_json_patch_op_fails_the_whole_patch_and_is_named() {
    let target = json!({"spec": {"replicas": 1}});
    let patch = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "test", "path": "/spec/replicas", "value": 5},
        {"op": "replace", "path": "/spec/x", "value": 1}
    ]);
    let err = apply(PatchType::Json, &target, &patch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "op 2 (replace): path /spec/x does not exist"
    );
    let err = apply(
        PatchType::Json,
        &target,
        &json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "op 0 (test): the value at /spec/replicas is not the one tested"
    );
    let err = apply(
        PatchType::Json,
        &target,
        &json!([{"op": "move", "from": "/nope", "path": "/a"}]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "op 0 (move): from path /nope does not exist"
    );
    let err = apply(
        PatchType::Json,
        &target,
        &json!([{"op": "jump", "path": "/a"}]),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), r#"op 0: unknown operation "jump""#);
}

/// RFC 7386 appendix A, the whole table.
#[test]
fn merge_patch_follows_rfc_7386() {
    run(
        PatchType::Merge,
        vec![
            (
                json!({"a": "b"}),
                json!({"a": "c"}),
                Some(json!({"a": "c"})),
            ),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                Some(json!({"a": "b", "b": "c"})),
            ),
            (json!({"a": "b"}), json!({"a": null}), Some(json!({}))),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                Some(json!({"b": "c"})),
            ),
            (
                json!({"a": ["b"]}),
                json!({"a": "c"}),
                Some(json!({"a": "c"})),
            ),
            (
                json!({"a": "c"}),
                json!({"a": ["b"]}),
                Some(json!({"a": ["b"]})),
            ),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                Some(json!({"a": {"b": "d"}})),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                Some(json!({"a": [1]})),
            ),
            (
                json!(["a", "b"]),
                json!(["c", "d"]),
                Some(json!(["c", "d"])),
            ),
            (json!({"a": "b"}), json!(["c"]), Some(json!(["c"]))),
            (json!({"a": "foo"}), json!(null), Some(json!(null))),
            (json!({"a": "foo"}), json!("bar"), Some(json!("bar"))),
            (
                json!({"e": null}),
                json!({"a": 1}),
                Some(json!({"e": null, "a": 1})),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                Some(json!({"a": "b"})),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                Some(json!({"a": {"bb": {}}})),
            ),
        ],
    );
}

/// The Deployment of the Kubernetes docs' "Update API Objects in Place Using kubectl patch".
fn patch_demo() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "patch-demo"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
                    "template": {"metadata": {"labels": {"app": "nginx"}},
                                 "spec": {"containers": [{"name": "patch-demo-ctr", "image": "nginx"}],
                                          "tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]}}}})
}

/// `patch_demo` with its pod spec's `containers` and `tolerations` as given.
fn patch_demo_with(containers: Value, tolerations: Value) -> Value {
    let mut d = patch_demo();
    d["spec"]["template"]["spec"]["containers"] = containers;
    d["spec"]["template"]["spec"]["tolerations"] = tolerations;
    d
}

fn pod_spec(spec: Value) -> Value {
    json!({"spec": {"template": {"spec": spec}}})
}

#[test]
fn strategic_merge_and_merge_differ_on_lists_as_the_docs_show() {
    let tolerations = json!([{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]);
    let add_redis =
        pod_spec(json!({"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}));
    // Strategic merge keeps both containers (the patch's first, as kube-apiserver orders them).
    run(
        PatchType::StrategicMerge,
        vec![(
            patch_demo(),
            add_redis.clone(),
            Some(patch_demo_with(
                json!([{"name": "patch-demo-ctr-2", "image": "redis"}, {"name": "patch-demo-ctr", "image": "nginx"}]),
                tolerations.clone(),
            )),
        )],
    );
    // A JSON merge patch replaces the list.
    run(
        PatchType::Merge,
        vec![(
            patch_demo(),
            add_redis,
            Some(patch_demo_with(
                json!([{"name": "patch-demo-ctr-2", "image": "redis"}]),
                tolerations.clone(),
            )),
        )],
    );
    // Tolerations have no merge key: both replace them.
    let ssd = json!([{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]);
    let containers = json!([{"name": "patch-demo-ctr", "image": "nginx"}]);
    for kind in [PatchType::StrategicMerge, PatchType::Merge] {
        run(
            kind,
            vec![(
                patch_demo(),
                pod_spec(json!({"tolerations": ssd})),
                Some(patch_demo_with(containers.clone(), ssd.clone())),
            )],
        );
    }
}

#[test]
fn strategic_merge_follows_kube_apiserver() {
    let two = json!({"spec": {"containers": [
        {"name": "nginx", "image": "nginx-1.0"}, {"name": "log-tailer", "image": "log-tailer-1.0"}]}});
    run(
        PatchType::StrategicMerge,
        vec![
            // An item merges into the one with its key; the others stay.
            (
                two.clone(),
                json!({"spec": {"containers": [{"name": "nginx", "image": "nginx-2.0"}]}}),
                Some(json!({"spec": {"containers": [
                 {"name": "nginx", "image": "nginx-2.0"}, {"name": "log-tailer", "image": "log-tailer-1.0"}]}})),
            ),
            // `$patch: delete` on a list item.
            (
                two.clone(),
                json!({"spec": {"containers": [{"name": "log-tailer", "$patch": "delete"}]}}),
                Some(json!({"spec": {"containers": [{"name": "nginx", "image": "nginx-1.0"}]}})),
            ),
            // `$patch: replace` in a list: the list is the patch's other items.
            (
                two.clone(),
                json!({"spec": {"containers": [{"name": "nginx", "image": "nginx-1.0"}, {"$patch": "replace"}]}}),
                Some(json!({"spec": {"containers": [{"name": "nginx", "image": "nginx-1.0"}]}})),
            ),
            // `$patch: replace` on a map.
            (
                json!({"spec": {"selector": {"matchLabels": {"a": "1"}, "x": 1}, "replicas": 1}}),
                json!({"spec": {"selector": {"$patch": "replace", "matchLabels": {"b": "2"}}}}),
                Some(json!({"spec": {"selector": {"matchLabels": {"b": "2"}}, "replicas": 1}})),
            ),
            // `$patch: delete` on a map empties it (Go's handleDirectiveInMergeMap).
            (
                json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}, "type": "RollingUpdate"}}}),
                json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}),
                Some(json!({"spec": {"strategy": {"rollingUpdate": {}, "type": "RollingUpdate"}}})),
            ),
            // `$retainKeys` (the docs' retainkeys-demo).
            (
                json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "30%", "maxUnavailable": "25%"}}}}),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                Some(json!({"spec": {"strategy": {"type": "Recreate"}}})),
            ),
            // `$setElementOrder` orders the merged list.
            (
                two.clone(),
                json!({"spec": {"$setElementOrder/containers": [{"name": "log-tailer"}, {"name": "nginx"}],
                             "containers": [{"name": "nginx", "image": "nginx-2.0"}]}}),
                Some(json!({"spec": {"containers": [
                 {"name": "log-tailer", "image": "log-tailer-1.0"}, {"name": "nginx", "image": "nginx-2.0"}]}})),
            ),
            // `$deleteFromPrimitiveList`.
            (
                json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
                Some(json!({"metadata": {"finalizers": ["a", "c"]}})),
            ),
            // A merged primitive list is unioned (the patch's new values first, as Go orders them).
            (
                json!({"metadata": {"finalizers": ["a", "b"]}}),
                json!({"metadata": {"finalizers": ["b", "c"]}}),
                Some(json!({"metadata": {"finalizers": ["a", "b", "c"]}})),
            ),
            (
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": ["z"]}}),
                Some(json!({"metadata": {"finalizers": ["z", "a"]}})),
            ),
            // Any other primitive list is replaced.
            (
                json!({"spec": {"containers": [{"name": "c", "args": ["a", "b"]}]}}),
                json!({"spec": {"containers": [{"name": "c", "args": ["x"]}]}}),
                Some(json!({"spec": {"containers": [{"name": "c", "args": ["x"]}]}})),
            ),
            // null deletes; a null for a missing key is dropped, in new maps too.
            (
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                json!({"metadata": {"labels": {"a": null, "c": null}, "annotations": {"x": null, "y": "1"}}}),
                Some(json!({"metadata": {"labels": {"b": "2"}, "annotations": {"y": "1"}}})),
            ),
            // env by name, container ports by containerPort, Service ports by port.
            (
                json!({"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                             "ports": [{"containerPort": 80, "name": "http"}]}]}}),
                json!({"spec": {"containers": [{"name": "c", "env": [{"name": "B", "value": "3"}],
                                             "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}),
                Some(
                    json!({"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}],
                                                  "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]}]}}),
                ),
            ),
            (
                json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
                json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
                Some(json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}})),
            ),
            // Another type replaces.
            (
                json!({"spec": {"x": {"a": 1}}}),
                json!({"spec": {"x": 5}}),
                Some(json!({"spec": {"x": 5}})),
            ),
            // A new list's delete directives delete nothing and are not stored.
            (
                json!({"spec": {}}),
                json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}, {"name": "b"}]}}),
                Some(json!({"spec": {"containers": [{"name": "b"}]}})),
            ),
            // A CRD schema's `$ref` is a field, not a directive.
            (
                json!({"spec": {}}),
                json!({"spec": {"$ref": "#/x"}}),
                Some(json!({"spec": {"$ref": "#/x"}})),
            ),
            // Refused as kube-apiserver refuses them.
            (
                json!({"spec": {"strategy": {"type": "A"}}}),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
                None,
            ),
            (
                two.clone(),
                json!({"spec": {"containers": [{"image": "x"}]}}),
                None,
            ),
            (two.clone(), json!({"spec": {"$patch": "explode"}}), None),
            (
                two.clone(),
                json!({"spec": {"containers": ["nginx"]}}),
                None,
            ),
            (json!({}), json!(["not", "an", "object"]), None),
        ],
    );
}

#[test]
fn strategic_merge_errors_say_where() {
    let err = apply(
        PatchType::StrategicMerge,
        &json!({"spec": {"containers": [{"name": "a"}]}}),
        &json!({"spec": {"containers": [{"image": "x"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.containers: an item has no merge key name"
    );
}

#[test]
fn apply_patches_merge_the_applied_configuration() {
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "patch-demo"},
                         "spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr", "image": "nginx:2"}]}}}});
    let mut expected = patch_demo();
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    run(
        PatchType::Apply,
        vec![(patch_demo(), applied, Some(expected))],
    );
}

#[test]
fn deep_patches_do_not_overflow() {
    let mut patch = json!({"x": 1});
    let mut target = json!({"x": 0});
    for _ in 0..120 {
        patch = json!({"a": patch});
        target = json!({"a": target});
    }
    let got = apply(PatchType::StrategicMerge, &target, &patch).unwrap();
    assert_eq!(got, patch);
    assert!(has_directive(
        &json!({"a": [[{"b": {"$patch": "delete"}}]]})
    ));
}

/// `(doc, api group, uri, expected guess)`.
type GuessCase<'a> = (Value, Option<&'a str>, String, (PatchType, bool));

#[test]
fn guesses_the_patch_type() {
    let uri = "/apis/apps/v1/namespaces/prod/deployments/api";
    let whole = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {}});
    let cases: Vec<GuessCase<'_>> = vec![
        (
            json!([{"op": "remove", "path": "/spec/replicas"}]),
            Some("apps"),
            uri.into(),
            (PatchType::Json, false),
        ),
        (
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}}),
            Some("example.com"),
            uri.into(),
            // Still a guess: a merge patch may carry the key, dropped by the apiserver as unknown.
            (PatchType::StrategicMerge, true),
        ),
        (
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
            None,
            uri.into(),
            // Still a guess: a merge patch may carry the key, dropped by the apiserver as unknown.
            (PatchType::StrategicMerge, true),
        ),
        (
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}]}}),
            None,
            uri.into(),
            // Still a guess: a merge patch may carry the key, dropped by the apiserver as unknown.
            (PatchType::StrategicMerge, true),
        ),
        (
            whole.clone(),
            Some("apps"),
            format!("{uri}?fieldManager=argocd-controller"),
            (PatchType::Apply, true),
        ),
        (
            whole.clone(),
            Some("apps"),
            format!("{uri}?fieldManager=kubectl&force=true"),
            (PatchType::Apply, true),
        ),
        (
            whole.clone(),
            Some("apps"),
            format!("{uri}?fieldManager=kubectl-client-side-apply"),
            (PatchType::StrategicMerge, true),
        ),
        (
            whole.clone(),
            Some("apps"),
            format!("{uri}?fieldManager=kubectl-edit"),
            (PatchType::StrategicMerge, true),
        ),
        (
            whole.clone(),
            Some("apps"),
            uri.into(),
            (PatchType::StrategicMerge, true),
        ),
        (
            json!({"spec": {"replicas": 3}}),
            Some("apps"),
            format!("{uri}?fieldManager=kubectl-patch"),
            (PatchType::StrategicMerge, true),
        ),
        (
            json!({"metadata": {"labels": {"a": "b"}}}),
            None,
            "/api/v1/namespaces/prod/pods/p".into(),
            (PatchType::StrategicMerge, true),
        ),
        (
            json!({"metadata": {"labels": {"a": "b"}}}),
            Some(""),
            "/api/v1/nodes/n".into(),
            (PatchType::StrategicMerge, true),
        ),
        (
            json!({"spec": {"replicas": 3}}),
            Some("cert-manager.io"),
            "/apis/cert-manager.io/v1/x".into(),
            (PatchType::Merge, true),
        ),
        (
            json!("odd"),
            Some("apps"),
            uri.into(),
            (PatchType::Apply, true),
        ),
    ];
    for (i, (doc, group, uri, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            guess(&doc, group, "deployments", &uri),
            expected,
            "case {i}"
        );
    }
    assert_eq!(PatchType::StrategicMerge.as_str(), "strategic merge patch");
    assert_eq!(
        serde_json::to_value(PatchType::StrategicMerge).unwrap(),
        json!("strategic_merge")
    );
}

fn described_lines(kind: PatchType, doc: Value) -> Vec<String> {
    describe(kind, &doc)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn describes_what_a_patch_sets() {
    const M: &str = "kubetrail-redacted:len=7:hmac=AAAAAAAAAAAAAAAAAAAAAA";
    let image = pod_spec(json!({"containers": [{"name": "api", "image": "evil/api:2"}]}));
    assert_eq!(
        described_lines(PatchType::StrategicMerge, image.clone()),
        ["spec.template.spec.containers[name=api].image: ? -> evil/api:2"]
    );
    // A JSON merge patch's list is the list after, by position.
    assert_eq!(
        described_lines(PatchType::Merge, image),
        [
            "spec.template.spec.containers[0].image: ? -> evil/api:2",
            "spec.template.spec.containers[0].name: ? -> api"
        ]
    );
    assert_eq!(
        described_lines(
            PatchType::Json,
            json!([
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil/api:2"},
                {"op": "remove", "path": "/spec/replicas"},
                {"op": "add", "path": "/spec/template/spec/containers/-",
                 "value": {"name": "x", "securityContext": {"privileged": true}}},
                {"op": "add", "path": "/metadata/annotations/a.io~1b", "value": M},
                {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "test", "path": "/spec/paused", "value": false}
            ])
        ),
        [
            "spec.template.spec.containers[0].image: ? -> evil/api:2",
            "spec.replicas: ? -> (removed)",
            "spec.template.spec.containers[+].name: ? -> x",
            "spec.template.spec.containers[+].securityContext.privileged: ? -> true",
            r#"metadata.annotations["a.io/b"]: ? -> [redacted]"#,
        ]
    );
    assert_eq!(
        described_lines(
            PatchType::StrategicMerge,
            json!({"metadata": {"labels": {"tier": null}, "finalizers": ["a"],
                                "$deleteFromPrimitiveList/finalizers": ["b"], "resourceVersion": "5",
                                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
                   "spec": {"$setElementOrder/containers": [{"name": "api"}, {"name": "log"}],
                            "containers": [{"name": "log", "$patch": "delete"}, {"name": "new"}],
                            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                            "ports": [{"port": 80, "targetPort": 8080}]},
                   "data": {"password": M}})
        ),
        [
            "data.password: ? -> [redacted]",
            "metadata.finalizers[-]: b -> (removed)",
            "metadata.finalizers[+]: ? -> a",
            "metadata.labels.tier: ? -> (removed)",
            "spec.containers[name=log]: ? -> (removed)",
            r#"spec.containers[name=new]: ? -> {"name":"new"}"#,
            "spec.ports[port=80].targetPort: ? -> 8080",
            "spec.strategy.type: ? -> Recreate",
        ]
    );
    let d = described(
        PatchType::StrategicMerge,
        &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                         "selector": {"$patch": "replace", "matchLabels": {"a": "b"}},
                         "rollingUpdate": {"$patch": "delete"}}}),
        Scope::All,
    );
    assert!(
        d.notes
            .contains(&"spec.strategy keeps only type: its other fields are removed".to_string()),
        "{d:?}"
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.starts_with("spec.selector is replaced whole")),
        "{d:?}"
    );
    assert!(
        d.changes
            .iter()
            .any(|c| c.to_string() == "spec.rollingUpdate: ? -> {}"),
        "{d:?}"
    );
    assert!(d.changes.iter().all(|c| !c.path.contains('$')), "{d:?}");
    let d = described(
        PatchType::Json,
        &json!([{"op": "move", "from": "/spec/a", "path": "/spec/b"}, {"op": "bogus"}]),
        Scope::All,
    );
    assert_eq!(
        d.changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["spec.a: ? -> (removed)", "spec.b: ? -> ?"]
    );
    assert_eq!(
        d.notes,
        [
            "op 0 moves spec.a to spec.b",
            "op 1 is not a valid operation"
        ]
    );
    // Scopes: a main-resource write cannot set status.
    let d = described(
        PatchType::Merge,
        &json!({"status": {"phase": "x"}, "spec": {"a": 1}}),
        Scope::NoStatus,
    );
    assert_eq!(d.changes.len(), 1);
    assert!(described_lines(PatchType::StrategicMerge, json!("not an object")).is_empty());
}

#[test]
fn copies_that_double_the_object_are_bounded() {
    // Each copy of the whole object into itself doubles it: 40 of them would be a trillion values.
    let target = json!({"a": (0..100).collect::<Vec<u32>>()});
    let ops: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
        .collect();
    let err = apply(PatchType::Json, &target, &Value::Array(ops)).unwrap_err();
    assert!(err.to_string().contains("copies more than"), "{err}");
    // A few copies are applied, one operation at a time, with the patch's failures where they were.
    let ok = apply(
        PatchType::Json,
        &target,
        &json!([{"op": "copy", "from": "/a/0", "path": "/b"}, {"op": "test", "path": "/b", "value": 0}]),
    )
    .unwrap();
    assert_eq!(ok["b"], 0);
    let failed = apply(
        PatchType::Json,
        &target,
        &json!([{"op": "copy", "from": "/a/0", "path": "/b"}, {"op": "remove", "path": "/nope"}]),
    )
    .unwrap_err();
    assert_eq!(
        failed.to_string(),
        "op 1 (remove): path /nope does not exist"
    );
}
