//! The streaming engine: one alert per request, grouping of repeats, tuning, health probes, correlation,
//! bounded state, and the alert's JSON line.

use kubetrail_detect::{Alert, Config, Engine, Exception, RuleSet, Selection, Text};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn pack() -> RuleSet {
    let mut set = RuleSet::new();
    for f in ["pack/pack.yml", "pack/correlations.yml"] {
        let src = std::fs::read_to_string(format!("{FIXTURES}/{f}")).unwrap();
        set.add_file(f, &src).unwrap_or_else(|e| panic!("{e}"));
    }
    set
}

fn run(engine: &mut Engine, events: &[String]) -> Vec<Alert> {
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out).unwrap();
    }
    engine.flush(&mut out);
    out
}

/// A minimal event at `t` seconds after 2026-11-25T02:00:00Z.
#[allow(clippy::too_many_arguments)]
fn ev(
    id: &str,
    t: u32,
    stage: &str,
    user: &str,
    verb: &str,
    resource: &str,
    ns: &str,
    extra: &str,
) -> String {
    let (h, m, s) = (2 + t / 3600, (t / 60) % 60, t % 60);
    let ns = if ns.is_empty() {
        String::new()
    } else {
        format!(r#","namespace":"{ns}""#)
    };
    let (res, sub) = resource.split_once('/').unwrap_or((resource, ""));
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/x","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["203.0.113.7"],"userAgent":"kubectl/v1.29.0","objectRef":{{"resource":"{res}","subresource":"{sub}","name":"n-{id}"{ns}}},"requestReceivedTimestamp":"2026-11-25T{h:02}:{m:02}:{s:02}.000000Z","stageTimestamp":"2026-11-25T{h:02}:{m:02}:{s:02}.100000Z"{extra}}}"#
    )
}

fn rule_ids(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.rule.id.as_str()).collect()
}

#[test]
fn one_alert_per_request_across_stages() {
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    let events = [
        ev(
            "a1",
            0,
            "RequestReceived",
            "alice",
            "create",
            "pods/exec",
            "prod",
            "",
        ),
        ev(
            "a1",
            0,
            "ResponseStarted",
            "alice",
            "create",
            "pods/exec",
            "prod",
            "",
        ),
        ev(
            "a1",
            1,
            "ResponseComplete",
            "alice",
            "create",
            "pods/exec",
            "prod",
            r#","responseStatus":{"code":101}"#,
        ),
    ];
    let alerts = run(&mut e, &events);
    assert_eq!(rule_ids(&alerts), ["kt-exec", "kt-exec-prod"]);
    assert!(
        alerts
            .iter()
            .all(|a| a.audit_ids == ["a1"] && a.count == 1 && !a.update)
    );
    assert_eq!(e.stats().duplicate_stages, 4);
}

#[test]
fn repeats_by_one_actor_group_into_one_alert() {
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    let mut events: Vec<String> = (0..5)
        .map(|i| {
            ev(
                &format!("x{i}"),
                i * 30,
                "ResponseComplete",
                "alice",
                "create",
                "pods/exec",
                "dev",
                "",
            )
        })
        .collect();
    // Another actor is its own alert; the same actor after the window is a new alert.
    events.push(ev(
        "y0",
        100,
        "ResponseComplete",
        "bob",
        "create",
        "pods/exec",
        "dev",
        "",
    ));
    events.push(ev(
        "x9",
        900,
        "ResponseComplete",
        "alice",
        "create",
        "pods/exec",
        "dev",
        "",
    ));
    let alerts = run(&mut e, &events);
    let lines: Vec<(String, bool, u64, usize)> = alerts
        .iter()
        .map(|a| {
            (
                a.actor.username.clone(),
                a.update,
                a.count,
                a.audit_ids.len(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("alice".to_string(), false, 1, 1),
            ("bob".to_string(), false, 1, 1),
            // The window (10 minutes from the first) closed when x9 arrived: the update lists all five.
            ("alice".to_string(), true, 5, 5),
            ("alice".to_string(), false, 1, 1),
        ]
    );
    assert_eq!(alerts[0].id, alerts[2].id);
    assert_ne!(alerts[0].id, alerts[3].id);
    assert_eq!(alerts[2].audit_ids, ["x0", "x1", "x2", "x3", "x4"]);
    assert_eq!(alerts[2].time, "2026-11-25T02:00:00Z");
    assert_eq!(alerts[2].last_time, "2026-11-25T02:02:00Z");
}

#[test]
fn replay_is_deterministic() {
    let events: Vec<String> = (0..20)
        .map(|i| {
            ev(
                &format!("d{i}"),
                i * 7,
                "ResponseComplete",
                &format!("u{}", i % 3),
                "get",
                "secrets",
                "prod",
                "",
            )
        })
        .collect();
    let a = run(
        &mut Engine::new(&pack(), Config::default()).unwrap(),
        &events,
    );
    let b = run(
        &mut Engine::new(&pack(), Config::default()).unwrap(),
        &events,
    );
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn alert_serializes_as_the_design_line() {
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    let alerts = run(
        &mut e,
        &[ev(
            "s1",
            5,
            "ResponseComplete",
            "system:serviceaccount:web:api",
            "get",
            "secrets",
            "prod",
            r#","responseStatus":{"code":200}"#,
        )],
    );
    let a = alerts
        .iter()
        .find(|a| a.rule.id == "kt-secret-read-prod")
        .unwrap();
    let v: serde_json::Value = serde_json::to_value(a).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "id",
        "rule",
        "severity",
        "auditIDs",
        "time",
        "actor",
        "sourceIPs",
        "summary",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    assert_eq!(
        v["rule"],
        serde_json::json!({"id": "kt-secret-read-prod", "title": "Secret read in a production namespace"})
    );
    assert_eq!(v["severity"], "high");
    assert_eq!(v["auditIDs"], serde_json::json!(["s1"]));
    assert_eq!(v["time"], "2026-11-25T02:00:05Z");
    assert_eq!(v["actor"]["username"], "system:serviceaccount:web:api");
    // Added to the contract's fields: the first request's particulars, for triage.
    assert_eq!(v["target"]["verb"], "get");
    assert_eq!(v["target"]["resource"], "secrets");
    assert_eq!(v["target"]["namespace"], "prod");
    assert_eq!(v["sourceIPs"], serde_json::json!(["203.0.113.7"]));
    assert_eq!(
        v["summary"],
        "system:serviceaccount:web:api get secrets n-s1 in namespace prod (200)"
    );
}

#[test]
fn exceptions_by_identity_namespace_image_agent_and_cidr() {
    let exec = |id: &str, user: &str, ns: &str| {
        ev(
            id,
            0,
            "ResponseComplete",
            user,
            "create",
            "pods/exec",
            ns,
            "",
        )
    };
    let count = |exceptions: Vec<Exception>, event: &str| {
        let mut e = Engine::new(
            &pack(),
            Config {
                exceptions,
                ..Config::default()
            },
        )
        .unwrap();
        run(&mut e, &[event.to_string()])
            .iter()
            .filter(|a| a.rule.id == "kt-exec")
            .count()
    };
    let x = |f: fn(&mut Exception)| {
        let mut e = Exception {
            rule: Some("kt-exec".into()),
            ..Exception::default()
        };
        f(&mut e);
        vec![e]
    };
    let base = exec("e1", "system:serviceaccount:ci:runner", "ci");
    assert_eq!(count(vec![], &base), 1);
    assert_eq!(
        count(
            x(|e| e.user = Some(Text::parse("system:serviceaccount:ci:*").unwrap())),
            &base
        ),
        0
    );
    assert_eq!(
        count(
            x(|e| e.user = Some(Text::parse("system:serviceaccount:ci").unwrap())),
            &base
        ),
        1,
        "exact is exact"
    );
    assert_eq!(
        count(x(|e| e.namespace = Some(Text::parse("ci").unwrap())), &base),
        0
    );
    assert_eq!(
        count(x(|e| e.namespace = Some(Text::parse("c").unwrap())), &base),
        1
    );
    assert_eq!(
        count(x(|e| e.user_agent_prefix = Some("kubectl/".into())), &base),
        0
    );
    assert_eq!(
        count(x(|e| e.source_cidr = Some("203.0.113.0/24".into())), &base),
        0
    );
    assert_eq!(
        count(x(|e| e.source_cidr = Some("10.0.0.0/8".into())), &base),
        1
    );
    // Every criterion must hold.
    assert_eq!(
        count(
            x(|e| {
                e.namespace = Some(Text::parse("ci").unwrap());
                e.source_cidr = Some("10.0.0.0/8".into());
            }),
            &base
        ),
        1
    );
    // Global exceptions apply to every rule.
    let global = vec![Exception {
        user: Some(Text::parse("system:serviceaccount:ci:runner").unwrap()),
        ..Exception::default()
    }];
    assert_eq!(count(global, &base), 0);
    // Images: every image of the pod must be in the repository.
    let pod = |images: &str| {
        ev(
            "p1",
            0,
            "ResponseComplete",
            "alice",
            "create",
            "pods",
            "prod",
            &format!(r#","requestObject":{{"spec":{{"containers":[{images}]}}}}"#),
        )
    };
    let img = |f: fn(&mut Exception), event: &str| {
        let mut ex = Exception {
            rule: Some("kt-pod-privileged".into()),
            ..Exception::default()
        };
        f(&mut ex);
        let mut e = Engine::new(
            &pack(),
            Config {
                exceptions: vec![ex],
                ..Config::default()
            },
        )
        .unwrap();
        run(&mut e, &[event.to_string()])
            .iter()
            .filter(|a| a.rule.id == "kt-pod-privileged")
            .count()
    };
    let trusted = pod(
        r#"{"image":"registry.example.com/infra/agent:1.2","securityContext":{"privileged":true}}"#,
    );
    let mixed = pod(
        r#"{"image":"registry.example.com/infra/agent:1.2","securityContext":{"privileged":true}},{"image":"evil/miner"}"#,
    );
    assert_eq!(
        img(
            |e| e.image = Some(Text::parse("registry.example.com/infra/agent").unwrap()),
            &trusted
        ),
        0
    );
    assert_eq!(
        img(
            |e| e.image = Some(Text::parse("registry.example.com/infra/*").unwrap()),
            &trusted
        ),
        0
    );
    assert_eq!(
        img(
            |e| e.image = Some(Text::parse("registry.example.com/infra/*").unwrap()),
            &mixed
        ),
        1
    );
    assert_eq!(
        img(
            |e| e.image = Some(Text::parse("registry.example.com/infra/agent:1.2").unwrap()),
            &trusted
        ),
        1,
        "a tag is not a repository"
    );
}

#[test]
fn invalid_exceptions_are_refused() {
    let bad = |ex: Exception| {
        Engine::new(
            &pack(),
            Config {
                exceptions: vec![ex],
                ..Config::default()
            },
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        bad(Exception {
            rule: Some("kt-exec".into()),
            ..Exception::default()
        }),
        "exception 0 (kt-exec): an exception needs at least one of user, namespace, image, userAgentPrefix, sourceCIDR; to silence a rule entirely, disable it"
    );
    assert_eq!(
        bad(Exception {
            rule: Some("nope".into()),
            namespace: Some(Text::parse("x").unwrap()),
            ..Exception::default()
        }),
        "exception 0 (nope): no loaded rule has the id or name `nope`"
    );
    assert_eq!(
        bad(Exception {
            source_cidr: Some("10/8".into()),
            ..Exception::default()
        }),
        "exception 0 (all rules): `10/8` is not a CIDR network"
    );
    let json = r#"{"user": "*admin*"}"#;
    let e = serde_json::from_str::<Exception>(json)
        .unwrap_err()
        .to_string();
    assert!(e.contains("never by substring"), "{e}");
}

#[test]
fn sigma_filters_apply_without_editing_rules() {
    let mut set = pack();
    set.add_file(
        "filters/ci.yml",
        "title: CI may exec in dev\nid: f-ci\nlogsource: {product: kubernetes, service: audit}\nfilter:\n  rules: [kt-exec]\n  selection:\n    user.username|startswith: 'system:serviceaccount:ci:'\n    objectRef.namespace: dev\n  condition: not selection\n",
    )
    .unwrap();
    let mut e = Engine::new(&set, Config::default()).unwrap();
    let alerts = run(
        &mut e,
        &[
            ev(
                "f1",
                0,
                "ResponseComplete",
                "system:serviceaccount:ci:runner",
                "create",
                "pods/exec",
                "dev",
                "",
            ),
            ev(
                "f2",
                1,
                "ResponseComplete",
                "system:serviceaccount:ci:runner",
                "create",
                "pods/exec",
                "staging",
                "",
            ),
        ],
    );
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.rule.id == "kt-exec")
            .flat_map(|a| a.audit_ids.clone())
            .collect::<Vec<_>>(),
        ["f2"]
    );
}

#[test]
fn rules_disabled_by_id_or_tag() {
    let events = [ev(
        "g1",
        0,
        "ResponseComplete",
        "alice",
        "create",
        "pods/exec",
        "prod",
        "",
    )];
    let ids = |selection: Selection| {
        let mut e = Engine::new(
            &pack(),
            Config {
                selection,
                ..Config::default()
            },
        )
        .unwrap();
        let a = run(&mut e, &events);
        rule_ids(&a)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(Selection::default()), ["kt-exec", "kt-exec-prod"]);
    assert_eq!(
        ids(Selection {
            disabled: vec!["kt-exec".into()],
            ..Selection::default()
        }),
        ["kt-exec-prod"]
    );
    assert!(
        ids(Selection {
            disabled_tags: vec!["attack.t1609".into()],
            ..Selection::default()
        })
        .is_empty()
    );
    assert_eq!(
        ids(Selection {
            disabled_tags: vec!["attack.t1609".into()],
            enabled: vec!["kt-exec-prod".into()],
            ..Selection::default()
        }),
        ["kt-exec-prod"]
    );
}

#[test]
fn anonymous_health_probes_never_alert() {
    let mut set = RuleSet::new();
    set.add_file(
        "anon.yml",
        "title: Anything anonymous\nid: anon\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel:\n    user.username: system:anonymous\n  condition: sel\n",
    )
    .unwrap();
    let probe = |uri: &str| {
        format!(
            r#"{{"auditID":"{uri}","verb":"get","requestURI":"{uri}","user":{{"username":"system:anonymous","groups":["system:unauthenticated"]}}}}"#
        )
    };
    let mut e = Engine::new(&set, Config::default()).unwrap();
    let events: Vec<String> = [
        "/healthz",
        "/livez",
        "/readyz?verbose",
        "/version",
        "/healthz/etcd",
        "/readyz/ping",
    ]
    .iter()
    .map(|u| probe(u))
    .collect();
    assert!(run(&mut e, &events).is_empty());
    assert_eq!(e.stats().health_probes, 6);
    // Near misses are not probes.
    let events: Vec<String> = ["/healthzz", "/api/v1/secrets", "/versions"]
        .iter()
        .map(|u| probe(u))
        .collect();
    let alerts = run(&mut e, &events);
    // One alert, and its update grouping the three requests of the same actor.
    assert_eq!(alerts.last().map(|a| (a.update, a.count)), Some((true, 3)));
    assert_eq!(e.stats().health_probes, 6);
}

#[test]
fn correlation_event_count_fires_once_per_burst() {
    let forbidden = |i: u32, t: u32, user: &str| {
        ev(
            &format!("f{user}{i}"),
            t,
            "ResponseComplete",
            user,
            "list",
            "secrets",
            "prod",
            r#","responseStatus":{"code":403}"#,
        )
    };
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    // 25 forbidden requests by mallory within 2 minutes, 9 by bob (below threshold).
    let mut events: Vec<String> = (0..25).map(|i| forbidden(i, i * 5, "mallory")).collect();
    events.extend((0..9).map(|i| forbidden(i, i * 5, "bob")));
    events.sort_by_key(|l| l[l.find("requestReceivedTimestamp").unwrap()..].to_string());
    let alerts = run(&mut e, &events);
    let bursts: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule.id == "kt-forbidden-burst")
        .collect();
    assert_eq!(bursts.len(), 1, "{alerts:#?}");
    assert_eq!(bursts[0].actor.username, "mallory");
    assert_eq!(bursts[0].audit_ids.len(), 10);
    assert_eq!(bursts[0].severity.as_str(), "medium");
    // The correlated rule does not alert on its own (generate: false).
    assert!(!alerts.iter().any(|a| a.rule.id == "kt-forbidden"));
    // Ten spread over more than the timespan do not fire.
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    let slow: Vec<String> = (0..10).map(|i| forbidden(i, i * 40, "carol")).collect();
    assert!(
        run(&mut e, &slow)
            .iter()
            .all(|a| a.rule.id != "kt-forbidden-burst")
    );
}

#[test]
fn correlation_value_count_of_distinct_secrets() {
    let read = |id: &str, t: u32, name: &str| {
        ev(
            id,
            t,
            "ResponseComplete",
            "system:serviceaccount:web:api",
            "get",
            "secrets",
            "dev",
            "",
        )
        .replace(&format!("n-{id}"), name)
    };
    // The same secret read 30 times is one distinct value.
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    let same: Vec<String> = (0..30)
        .map(|i| read(&format!("s{i}"), i, "db-password"))
        .collect();
    assert!(
        run(&mut e, &same)
            .iter()
            .all(|a| a.rule.id != "kt-secrets-many")
    );
    // Twelve different secrets within a minute fire once.
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    let many: Vec<String> = (0..12)
        .map(|i| read(&format!("m{i}"), i * 5, &format!("secret-{i}")))
        .collect();
    let alerts = run(&mut e, &many);
    let fired: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule.id == "kt-secrets-many")
        .collect();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].audit_ids.len(), 10);
    assert!(
        fired[0].summary.starts_with("10 distinct `objectRef.name`"),
        "{}",
        fired[0].summary
    );
}

#[test]
fn correlation_temporal_ordered_rbac_then_workload() {
    let rbac = |t: u32, user: &str| {
        ev(
            &format!("r{t}{user}"),
            t,
            "ResponseComplete",
            user,
            "create",
            "clusterrolebindings",
            "",
            r#","responseStatus":{"code":201}"#,
        )
        .replace(
            r#""resource":"clusterrolebindings""#,
            r#""resource":"clusterrolebindings","apiGroup":"rbac.authorization.k8s.io""#,
        )
    };
    let workload = |t: u32, user: &str| {
        ev(
            &format!("w{t}{user}"),
            t,
            "ResponseComplete",
            user,
            "create",
            "deployments",
            "prod",
            r#","responseStatus":{"code":201}"#,
        )
    };
    let fired = |events: &[String]| {
        let mut e = Engine::new(&pack(), Config::default()).unwrap();
        run(&mut e, events)
            .into_iter()
            .filter(|a| a.rule.id == "kt-rbac-then-workload")
            .collect::<Vec<_>>()
    };
    // In order within ten minutes: fires, listing both requests.
    let a = fired(&[rbac(0, "mallory"), workload(120, "mallory")]);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].audit_ids, ["r0mallory", "w120mallory"]);
    // Out of order, out of the window, or by another identity: nothing.
    assert!(fired(&[workload(0, "mallory"), rbac(60, "mallory")]).is_empty());
    assert!(fired(&[rbac(0, "mallory"), workload(700, "mallory")]).is_empty());
    assert!(fired(&[rbac(0, "mallory"), workload(60, "alice")]).is_empty());
}

#[test]
fn correlation_state_is_bounded_with_a_million_keys() {
    // One forbidden request from each of a million identities: a million group keys for the burst rule.
    let mut set = RuleSet::new();
    set.add_file(
        "c.yml",
        "title: F\nid: f\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel: {responseStatus.code: 403}\n  condition: sel\n---\ntitle: Burst\nid: burst\ncorrelation:\n  type: event_count\n  rules: [f]\n  group-by: [user.username]\n  timespan: 1h\n  condition: {gte: 10}\n",
    )
    .unwrap();
    let line = |i: u32| {
        format!(
            r#"{{"auditID":"a{i}","verb":"get","user":{{"username":"user-{i}@example.com"}},"responseStatus":{{"code":403}},"requestReceivedTimestamp":"2026-11-25T02:00:00Z"}}"#
        )
    };
    // Uncapped: report bytes per key.
    let cfg = Config {
        max_requests: 1,
        ..Config::default()
    };
    let mut e = Engine::new(&set, cfg.clone()).unwrap();
    let mut out = Vec::new();
    for i in 0..1_000_000 {
        e.process(&line(i), &mut out).unwrap();
    }
    let s = e.stats();
    assert_eq!(s.correlation_keys, 1_000_000);
    let per_key = e.state_bytes() / 1_000_000;
    eprintln!(
        "correlation state: {} bytes for 1M keys, {per_key} bytes/key",
        e.state_bytes()
    );
    assert!(per_key < 300, "{per_key} bytes per key");
    // Capped: the key count stays under the cap and the evictions are counted.
    let mut e = Engine::new(
        &set,
        Config {
            max_correlation_keys: 100_000,
            ..cfg
        },
    )
    .unwrap();
    for i in 0..1_000_000 {
        e.process(&line(i), &mut out).unwrap();
    }
    let s = e.stats();
    assert!(s.correlation_keys <= 100_000, "{s:?}");
    assert!(s.correlation_evictions >= 900_000, "{s:?}");
    assert!(out.is_empty());
}

#[test]
fn grouping_state_is_bounded() {
    let mut e = Engine::new(
        &pack(),
        Config {
            max_groups: 100,
            ..Config::default()
        },
    )
    .unwrap();
    let events: Vec<String> = (0..1000)
        .map(|i| {
            ev(
                &format!("b{i}"),
                0,
                "ResponseComplete",
                &format!("user{i}"),
                "create",
                "pods/exec",
                "dev",
                "",
            )
        })
        .collect();
    let alerts = run(&mut e, &events);
    assert_eq!(alerts.iter().filter(|a| !a.update).count(), 1000);
    assert!(e.stats().group_evictions >= 900);
}

#[test]
fn invalid_json_is_an_error_not_a_panic() {
    let mut e = Engine::new(&pack(), Config::default()).unwrap();
    let mut out = Vec::new();
    assert!(e.process("{\"verb\":", &mut out).is_err());
    assert!(e.process("", &mut out).is_err());
    assert_eq!(e.stats().invalid, 2);
}

fn with(extra: &str) -> RuleSet {
    let mut set = RuleSet::new();
    set.add_file(
        "base.yml",
        "title: Get\nid: get\nname: any_get\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel: {verb: get}\n  condition: sel\n---\ntitle: Delete\nid: del\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel: {verb: delete}\n  condition: sel\n",
    )
    .unwrap();
    set.add_file("corr.yml", extra).unwrap();
    set
}

#[test]
fn correlation_temporal_any_order_and_generate() {
    let set = with(
        "title: Get and delete\nid: both\nlevel: high\ncorrelation:\n  type: temporal\n  rules: [any_get, del]\n  group-by: [user.username]\n  timespan: 1m\n  generate: true\n",
    );
    let fired = |events: &[String]| {
        let mut e = Engine::new(&set, Config::default()).unwrap();
        run(&mut e, events)
    };
    // Either order within the minute fires; `generate: true` keeps the rules' own alerts.
    let a = fired(&[
        ev(
            "d1",
            0,
            "ResponseComplete",
            "eve",
            "delete",
            "pods",
            "dev",
            "",
        ),
        ev(
            "g1",
            30,
            "ResponseComplete",
            "eve",
            "get",
            "pods",
            "dev",
            "",
        ),
    ]);
    assert_eq!(rule_ids(&a), ["del", "get", "both"]);
    assert_eq!(a[2].severity.as_str(), "high");
    let a = fired(&[
        ev(
            "d1",
            0,
            "ResponseComplete",
            "eve",
            "delete",
            "pods",
            "dev",
            "",
        ),
        ev(
            "g1",
            90,
            "ResponseComplete",
            "eve",
            "get",
            "pods",
            "dev",
            "",
        ),
    ]);
    assert_eq!(rule_ids(&a), ["del", "get"]);
}

#[test]
fn correlation_falling_condition_is_decided_when_the_window_closes() {
    // Exactly two deletes by one identity in ten minutes (a "low and slow" shape), grouped with an alias.
    let set = with(
        "title: Two deletes\nid: two\ncorrelation:\n  type: event_count\n  rules: [del]\n  group-by: [actor]\n  aliases:\n    actor:\n      del: user.username\n  timespan: 10m\n  condition: {eq: 2}\n",
    );
    let mut e = Engine::new(&set, Config::default()).unwrap();
    let events = [
        ev(
            "a",
            0,
            "ResponseComplete",
            "eve",
            "delete",
            "pods",
            "dev",
            "",
        ),
        ev(
            "b",
            60,
            "ResponseComplete",
            "eve",
            "delete",
            "pods",
            "dev",
            "",
        ),
        ev(
            "c",
            0,
            "ResponseComplete",
            "bob",
            "delete",
            "pods",
            "dev",
            "",
        )
        .replace("02:00:00", "02:00:01"),
        ev(
            "x",
            1200,
            "ResponseComplete",
            "zed",
            "get",
            "pods",
            "dev",
            "",
        ),
    ];
    let mut out = Vec::new();
    for l in &events[..3] {
        e.process(l, &mut out).unwrap();
    }
    assert!(out.is_empty(), "undecided while the window is open");
    e.process(&events[3], &mut out).unwrap();
    let two: Vec<&Alert> = out.iter().filter(|a| a.rule.id == "two").collect();
    assert_eq!(two.len(), 1, "{out:#?}");
    assert_eq!(two[0].actor.username, "eve");
    assert_eq!(two[0].audit_ids, ["a", "b"]);
}
