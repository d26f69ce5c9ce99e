//! Property tests: every entry point is total on any JSON (no panic), and its output stays bounded.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::diff::{self, MAX_CHANGES};
use crate::patch::{self, PatchType};
use crate::replay::{Replay, Write};

/// Keys that reach the interesting code: merge lists and their keys, directives, noise, JSON patch fields.
const KEYS: &[&str] = &[
    "spec",
    "metadata",
    "status",
    "containers",
    "name",
    "ports",
    "containerPort",
    "port",
    "env",
    "finalizers",
    "labels",
    "resourceVersion",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$deleteFromPrimitiveList/finalizers",
    "op",
    "path",
    "value",
    "from",
    "a",
    "b",
];

const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "delete",
    "replace",
    "merge",
    "add",
    "remove",
    "move",
    "copy",
    "test",
    "kubetrail-redacted:len=1:hmac=AAAAAAAAAAAAAAAAAAAAAA",
    "/spec/containers/0",
    "/a/-",
    "/~1",
    "/spec",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-2i64..100).prop_map(Value::from),
        proptest::sample::select(STRINGS).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((proptest::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn json_patch() -> impl Strategy<Value = Value> {
    let op = (
        proptest::sample::select(&["add", "remove", "replace", "move", "copy", "test"][..]),
        proptest::sample::select(
            &[
                "",
                "/a",
                "/spec/containers/0",
                "/spec/containers/-",
                "/a/-",
                "/~1",
                "/b/1",
            ][..],
        ),
        proptest::sample::select(&["/a", "/spec", "/x", ""][..]),
        json_value(),
    )
        .prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        );
    prop::collection::vec(op, 0..4).prop_map(Value::Array)
}

const KINDS: [PatchType; 4] = [
    PatchType::Json,
    PatchType::Merge,
    PatchType::StrategicMerge,
    PatchType::Apply,
];

proptest! {
    #[test]
    fn patches_and_diffs_are_total(target in json_value(), doc in json_value(), ops in json_patch()) {
        for doc in [&doc, &ops] {
            let _ = patch::guess(doc, Some("apps"), "deployments", "/x?fieldManager=m");
            for kind in KINDS {
                let (listed, more) = patch::describe_capped(kind, doc);
                prop_assert!(listed.len() <= MAX_CHANGES);
                prop_assert!(more == 0 || listed.len() == MAX_CHANGES);
                for c in &listed {
                    let shown = c.to_string();
                    prop_assert!(!shown.contains("hmac="), "{}", shown);
                }
                if let Ok(after) = patch::apply(kind, &target, doc) {
                    for ignore_status in [true, false] {
                        let (listed, _) = diff::changes_capped(&target, &after, ignore_status);
                        for c in &listed {
                            let shown = c.to_string();
                            prop_assert!(!shown.contains("hmac="), "{}", shown);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn replays_are_total(bodies in prop::collection::vec((json_value(), json_value()), 1..6), codes in prop::collection::vec(proptest::option::of(proptest::sample::select(&[200, 201, 202, 403, 500][..])), 6)) {
        let verbs = ["create", "update", "patch", "delete", "patch", "update"];
        let subs = [None, Some("status"), Some("scale"), None, Some("binding"), Some("ephemeralcontainers")];
        let levels = ["RequestResponse", "Request", "Metadata", "RequestResponse", "Request", "None"];
        let mut r = Replay::new();
        for (i, (req, resp)) in bodies.iter().enumerate() {
            let step = r.step(&Write {
                verb: verbs[i % verbs.len()],
                subresource: subs[(i * 7) % subs.len()],
                api_group: Some("apps"),
                resource: "deployments",
                uri: "/apis/apps/v1/namespaces/a/deployments/d",
                level: levels[(i * 5) % levels.len()],
                code: codes[i % codes.len()],
                request_object: Some(req),
                response_object: (i % 2 == 0).then_some(resp),
            });
            prop_assert!(step.changes.len() <= MAX_CHANGES);
            let text = serde_json::to_string(&step).unwrap_or_default();
            prop_assert!(!text.contains("hmac="), "{}", text);
        }
    }
}
