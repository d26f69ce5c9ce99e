//! The engine is total: any JSON value (and any string) is evaluated or refused, never a panic.

use kubetrail_detect::{Config, Engine, RuleSet};
use proptest::prelude::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn engine() -> Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(load).clone()
}

fn load() -> Engine {
    let mut set = RuleSet::new();
    let mut files: Vec<String> = std::fs::read_dir(format!("{FIXTURES}/sigma"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.push(format!("{FIXTURES}/pack/pack.yml"));
    files.push(format!("{FIXTURES}/pack/correlations.yml"));
    for f in files {
        set.add_file(&f, &std::fs::read_to_string(&f).unwrap())
            .unwrap();
    }
    Engine::new(&set, Config::default()).unwrap()
}

/// Keys the rules read, so generated values reach the matchers (and arbitrary keys too).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("verb".to_string()),
        Just("objectRef".to_string()),
        Just("resource".to_string()),
        Just("subresource".to_string()),
        Just("namespace".to_string()),
        Just("user".to_string()),
        Just("username".to_string()),
        Just("groups".to_string()),
        Just("sourceIPs".to_string()),
        Just("requestObject".to_string()),
        Just("spec".to_string()),
        Just("template".to_string()),
        Just("containers".to_string()),
        Just("securityContext".to_string()),
        Just("privileged".to_string()),
        Just("capabilities".to_string()),
        Just("add".to_string()),
        Just("volumes".to_string()),
        Just("hostPath".to_string()),
        Just("path".to_string()),
        Just("responseStatus".to_string()),
        Just("code".to_string()),
        Just("annotations".to_string()),
        Just("authorization.k8s.io/decision".to_string()),
        Just("requestReceivedTimestamp".to_string()),
        Just("auditID".to_string()),
        ".{0,12}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("create".to_string()),
            Just("pods".to_string()),
            Just("exec".to_string()),
            Just("secrets".to_string()),
            Just("prod".to_string()),
            Just("system:anonymous".to_string()),
            Just("10.0.0.1".to_string()),
            Just("2026-11-25T02:00:00Z".to_string()),
            Just("9999-99-99T99:99:99Z".to_string()),
            ".{0,20}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_json_never_panics(events in prop::collection::vec(json(), 1..8)) {
        let mut e = engine();
        let mut out = Vec::new();
        for v in &events {
            let line = v.to_string();
            prop_assert!(e.process(&line, &mut out).is_ok());
            prop_assert!(e.matching_rules(&line).is_ok());
        }
        e.flush(&mut out);
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let mut e = engine();
        let mut out = Vec::new();
        let _ = e.process(&s, &mut out);
        e.flush(&mut out);
    }
}
