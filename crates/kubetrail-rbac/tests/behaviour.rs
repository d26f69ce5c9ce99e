//! kubetrail's own cases: replay of recorded writes, who-can, diffs, proposals, snapshot and access parsing,
//! and the real audit2rbac demo log.

use std::collections::BTreeMap;

use kubetrail_rbac::{
    Access, AccessError, GrantedRule, Key, Kind, PolicyRule, RbacWrite, SnapshotError, State, Used,
    UserRef, diff, parse_access, parse_snapshot, propose,
};
use serde_json::{Value, json};

mod common;
use common::{cluster_role, crb, rb, state_of, user, write};

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    PolicyRule {
        verbs: v(verbs),
        api_groups: v(groups),
        resources: v(resources),
        ..PolicyRule::default()
    }
}

fn names(s: &State, q: &Access) -> Vec<String> {
    s.who_can(q)
        .allowed
        .iter()
        .map(|a| format!("{}:{}", a.subject.kind, a.subject.name))
        .collect()
}

#[test]
fn replay_create_patch_update_delete_changes_grants() {
    let mut s = State::new();
    let role = cluster_role(
        "reader",
        json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]),
    );
    let a = s.apply(&RbacWrite {
        response_object: Some(&role),
        ..write("create", "clusterroles", None, Some("reader"))
    });
    assert!(a.changes.is_empty(), "a role alone grants nothing");
    let binding = crb("read-all", "reader", user("bob"));
    let a = s.apply(&RbacWrite {
        request_object: Some(&binding),
        level: "Request",
        ..write("create", "clusterrolebindings", None, None)
    });
    assert_eq!(a.changes.len(), 1);
    assert!(a.changes[0].added);
    assert_eq!(a.changes[0].subject.name, "bob");
    assert_eq!(a.changes[0].rules, vec![rule(&["get"], &[""], &["pods"])]);
    let who = s.who_can(&Access::resource("get", "", "pods", "").in_namespace("ns1"));
    assert_eq!(
        who.allowed[1].why,
        r#"RBAC: allowed by ClusterRoleBinding "read-all" of ClusterRole "reader" to User "bob""#
    );

    // A JSON patch (RFC 6902) adding a rule, recorded without a response.
    let jp = json!([{"op": "add", "path": "/rules/-", "value": {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}}]);
    let a = s.apply(&RbacWrite {
        request_object: Some(&jp),
        level: "Request",
        ..write("patch", "clusterroles", None, Some("reader"))
    });
    assert_eq!(a.changes.len(), 1, "{a:?}");
    assert!(a.changes[0].added);
    assert_eq!(
        a.changes[0].rules,
        vec![rule(&["get"], &[""], &["secrets"])]
    );

    // A merge patch replaces the rules list whole (RBAC kinds have no merge keys).
    let mp = json!({"rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]});
    let a = s.apply(&RbacWrite {
        request_object: Some(&mp),
        level: "Request",
        ..write("patch", "clusterroles", None, Some("reader"))
    });
    let lost: Vec<&PolicyRule> = a
        .changes
        .iter()
        .filter(|c| !c.added)
        .flat_map(|c| &c.rules)
        .collect();
    let gained: Vec<&PolicyRule> = a
        .changes
        .iter()
        .filter(|c| c.added)
        .flat_map(|c| &c.rules)
        .collect();
    assert_eq!(
        lost,
        vec![
            &rule(&["get"], &[""], &["pods"]),
            &rule(&["get"], &[""], &["secrets"])
        ]
    );
    assert_eq!(gained, vec![&rule(&["list"], &[""], &["pods"])]);

    // An update moves the binding to alice.
    let moved = crb("read-all", "reader", user("alice"));
    let a = s.apply(&RbacWrite {
        request_object: Some(&moved),
        level: "Request",
        ..write("update", "clusterrolebindings", None, Some("read-all"))
    });
    let summary: Vec<(bool, String)> = a
        .changes
        .iter()
        .map(|c| (c.added, c.subject.name.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![(false, "bob".to_string()), (true, "alice".to_string())]
    );

    let a = s.apply(&write(
        "delete",
        "clusterrolebindings",
        None,
        Some("read-all"),
    ));
    assert_eq!(a.changes.len(), 1);
    assert!(!a.changes[0].added);
    assert!(
        s.object(&Key::new(Kind::ClusterRoleBinding, "", "read-all"))
            .is_none()
    );
    assert!(s.grants().is_empty());
}

#[test]
fn metadata_writes_make_objects_uncertain_until_a_body_is_recorded() {
    let mut s = state_of(vec![
        cluster_role(
            "reader",
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]),
        ),
        crb("read-all", "reader", user("bob")),
    ]);
    let key = Key::new(Kind::ClusterRole, "", "reader");
    let a = s.apply(&RbacWrite {
        level: "Metadata",
        impersonated_user: Some("carol"),
        time: "2024-02-02T10:00:00Z",
        ..write("patch", "clusterroles", None, Some("reader"))
    });
    assert!(a.became_uncertain);
    assert!(a.changes.is_empty(), "it still grants what it last granted");
    let u = s.uncertain();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].key, key);
    assert_eq!(u[0].since, "2024-02-02T10:00:00Z");
    assert_eq!(
        u[0].why,
        "patch by system:admin (as carol) logged at Metadata: its body was not recorded"
    );
    let who = s.who_can(&Access::resource("get", "", "pods", ""));
    assert_eq!(who.allowed[1].subject.name, "bob");
    assert!(who.allowed[1].uncertain);
    assert!(
        !who.allowed[0].uncertain,
        "system:masters does not depend on RBAC"
    );
    assert_eq!(
        who.uncertain.iter().map(|u| &u.key).collect::<Vec<_>>(),
        vec![&key]
    );

    // A second Metadata write keeps the first time.
    s.apply(&RbacWrite {
        level: "Metadata",
        time: "2024-02-03T00:00:00Z",
        ..write("update", "clusterroles", None, Some("reader"))
    });
    assert_eq!(s.uncertain()[0].since, "2024-02-02T10:00:00Z");

    // An update with its body makes it certain again.
    let body = cluster_role(
        "reader",
        json!([{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]),
    );
    let a = s.apply(&RbacWrite {
        request_object: Some(&body),
        level: "Request",
        ..write("update", "clusterroles", None, Some("reader"))
    });
    assert!(!a.became_uncertain);
    assert!(s.uncertain().is_empty());
    assert!(!s.who_can(&Access::resource("list", "", "pods", "")).allowed[1].uncertain);

    // A create at Metadata: the object exists with unknown content.
    let a = s.apply(&RbacWrite {
        level: "Metadata",
        ..write("create", "rolebindings", Some("ns1"), Some("mystery"))
    });
    assert!(a.became_uncertain);
    let k = Key::new(Kind::RoleBinding, "ns1", "mystery");
    assert_eq!(
        s.object(&k).and_then(|o| o.get("kind")),
        Some(&json!("RoleBinding"))
    );
    assert_eq!(
        s.uncertain()[0].why,
        "create by system:admin logged at Metadata: its body was not recorded"
    );
    let who = s.who_can(&Access::resource("get", "", "secrets", "").in_namespace("ns1"));
    assert!(
        who.uncertain.iter().any(|u| u.key == k),
        "an uncertain binding in scope is listed"
    );
}

#[test]
fn refused_dry_run_and_unfinished_writes_change_nothing() {
    let mut s = state_of(vec![
        crb("b", "r", user("bob")),
        cluster_role(
            "r",
            json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
        ),
    ]);
    let before = s.grants();
    let a = s.apply(&RbacWrite {
        code: Some(403),
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert_eq!(a.notes, vec!["refused (403): nothing changed"]);
    let a = s.apply(&RbacWrite {
        code: None,
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.notes[0].starts_with("no response recorded"));
    let a = s.apply(&RbacWrite {
        uri: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b?dryRun=All",
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.notes[0].starts_with("dry run"));
    let a = s.apply(&RbacWrite {
        api_group: Some("example.com"),
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.changes.is_empty());
    let a = s.apply(&write("get", "clusterrolebindings", None, Some("b")));
    assert!(a.changes.is_empty());
    assert_eq!(s.grants(), before);
    assert!(s.uncertain().is_empty());
    // The same delete, done: the grant goes.
    let a = s.apply(&write("delete", "clusterrolebindings", None, Some("b")));
    assert_eq!(a.changes.len(), 1);
}

#[test]
fn deletecollection_makes_the_namespace_uncertain_unless_its_response_lists_what_went() {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r", "namespace": "ns1"},
                      "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
    let items = vec![
        role,
        rb("ns1", "a", "Role", "r", user("bob")),
        rb("ns1", "b", "Role", "r", user("carol")),
        rb("ns2", "c", "ClusterRole", "x", user("dave")),
    ];
    let mut s = state_of(items.clone());
    let a = s.apply(&RbacWrite {
        level: "Metadata",
        ..write("deletecollection", "rolebindings", Some("ns1"), None)
    });
    assert!(a.became_uncertain);
    let keys: Vec<String> = s.uncertain().iter().map(|u| u.key.name.clone()).collect();
    assert_eq!(keys, vec!["a", "b"]);
    assert!(
        s.uncertain()[0]
            .why
            .contains("which objects its selector matched was not recorded")
    );

    let mut s = state_of(items);
    let resp = json!({"kind": "RoleBindingList", "items": [{"metadata": {"name": "a", "namespace": "ns1"}}]});
    let a = s.apply(&RbacWrite {
        response_object: Some(&resp),
        ..write("deletecollection", "rolebindings", Some("ns1"), None)
    });
    assert!(!a.became_uncertain);
    assert_eq!(a.changes.len(), 1);
    assert_eq!(a.changes[0].subject.name, "bob");
    assert!(s.object(&Key::new(Kind::RoleBinding, "ns1", "b")).is_some());
}

#[test]
fn who_can_through_a_rolebinding_to_a_clusterrole_is_limited_to_its_namespace() {
    let s = state_of(vec![
        cluster_role(
            "edit",
            json!([
                {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"]},
                {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}
            ]),
        ),
        rb(
            "ns1",
            "editors",
            "ClusterRole",
            "edit",
            json!([
                {"kind": "ServiceAccount", "name": "builder"},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}
            ]),
        ),
        rb("ns1", "broken", "Role", "missing", user("eve")),
        crb(
            "cluster-sa",
            "edit",
            json!([{"kind": "ServiceAccount", "name": "nobody"}]),
        ),
    ]);
    let q = parse_access("get", "secrets", Some("ns1")).expect("access");
    let who = s.who_can(&q);
    assert_eq!(
        names(&s, &q),
        vec![
            "Group:system:masters",
            "ServiceAccount:builder",
            "Group:devs"
        ]
    );
    let sa = &who.allowed[1];
    assert_eq!(
        sa.subject.namespace, "ns1",
        "an empty ServiceAccount namespace defaults to the RoleBinding's"
    );
    assert_eq!(sa.subject.username(), "system:serviceaccount:ns1:builder");
    assert_eq!(
        sa.why,
        r#"RBAC: allowed by RoleBinding "editors/ns1" of ClusterRole "edit" to ServiceAccount "builder/ns1""#
    );
    assert_eq!(sa.role, Some(Key::new(Kind::ClusterRole, "", "edit")));
    assert!(
        who.notes
            .iter()
            .any(|n| n.contains("references Role \"missing\", which does not exist")),
        "{:?}",
        who.notes
    );
    assert!(
        who.notes.iter().any(|n| n.contains("matches no one")),
        "{:?}",
        who.notes
    );
    assert_eq!(
        names(&s, &q.clone().in_namespace("ns2")),
        vec!["Group:system:masters"]
    );
    assert_eq!(
        names(&s, &Access::resource("get", "", "secrets", "")),
        vec!["Group:system:masters"]
    );
    // nonResourceURLs are only granted by ClusterRoleBindings.
    assert_eq!(
        names(&s, &parse_access("get", "/healthz", None).expect("path")),
        vec!["Group:system:masters"]
    );
    // The authorizer agrees, and names the missing role when it denies.
    let sa_user = UserRef {
        name: "system:serviceaccount:ns1:builder".into(),
        groups: vec![],
    };
    assert!(s.authorize(&sa_user, &q).allowed);
    let eve = UserRef {
        name: "eve".into(),
        groups: vec![],
    };
    let d = s.authorize(&eve, &q);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: role.rbac.authorization.k8s.io "missing" not found"#
    );
    let boss = UserRef {
        name: "x".into(),
        groups: vec!["system:masters".into()],
    };
    assert!(s.authorize(&boss, &q).allowed);
    // rules_for: the RoleBinding's rules, in its namespace only.
    let rules = s.rules_for(&sa_user);
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().all(|r| r.namespace.as_deref() == Some("ns1")));
}

#[test]
fn a_new_labelled_clusterrole_adds_to_aggregated_roles_at_once() {
    let edit = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "edit"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]},
        "rules": []});
    let mut s = state_of(vec![
        edit,
        rb("ns1", "editors", "ClusterRole", "edit", user("bob")),
    ]);
    let before = s.clone();
    let crd_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-edit", "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
        "rules": [{"verbs": ["*"], "apiGroups": ["example.com"], "resources": ["widgets"]}]});
    let a = s.apply(&RbacWrite {
        response_object: Some(&crd_role),
        ..write("create", "clusterroles", None, Some("widgets-edit"))
    });
    assert_eq!(a.changes.len(), 1, "{a:?}");
    assert_eq!(
        a.changes[0].binding,
        Key::new(Kind::RoleBinding, "ns1", "editors")
    );
    assert_eq!(a.changes[0].role, Key::new(Kind::ClusterRole, "", "edit"));
    assert_eq!(
        a.changes[0].rules,
        vec![rule(&["*"], &["example.com"], &["widgets"])]
    );
    assert_eq!(diff(&before, &s), a.changes);
    assert_eq!(
        names(
            &s,
            &Access::resource("delete", "example.com", "widgets", "").in_namespace("ns1")
        ),
        vec!["Group:system:masters", "User:bob"]
    );
    // Deleting it takes the rule away again.
    let a = s.apply(&write("delete", "clusterroles", None, Some("widgets-edit")));
    assert_eq!(a.changes.len(), 1);
    assert!(!a.changes[0].added);
}

#[test]
fn diff_lists_removed_then_added_grants_with_only_the_rules_that_changed() {
    let r = |rules: Value| cluster_role("r", rules);
    let before = state_of(vec![
        r(json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}])),
        crb("b", "r", user("bob")),
    ]);
    let after = state_of(vec![
        r(
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]),
        ),
        crb(
            "b",
            "r",
            json!([{"kind": "User", "name": "bob"}, {"kind": "User", "name": "mallory"}]),
        ),
    ]);
    let d = diff(&before, &after);
    let got: Vec<(bool, String, usize)> = d
        .iter()
        .map(|c| (c.added, c.subject.name.clone(), c.rules.len()))
        .collect();
    assert_eq!(
        got,
        vec![(true, "bob".into(), 1), (true, "mallory".into(), 2)]
    );
    assert_eq!(d[0].rules, vec![rule(&["get"], &[""], &["secrets"])]);
    let back = diff(&after, &before);
    assert!(back.iter().all(|c| !c.added));
    assert!(diff(&before, &before).is_empty());
}

#[test]
fn snapshot_errors_name_the_item() {
    let err = |s: &str| parse_snapshot(s.as_bytes()).expect_err(s).to_string();
    assert!(matches!(parse_snapshot(b"{"), Err(SnapshotError::Json(_))));
    assert_eq!(
        err(
            r#"{"kind":"List","items":[{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}},3]}"#
        ),
        "items[1]: not an object"
    );
    assert_eq!(
        err(
            r#"{"kind":"List","items":[{"kind":"Role","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"x"}}]}"#
        ),
        "items[0]: Role x has no metadata.namespace"
    );
    assert_eq!(
        err(
            r#"{"kind":"List","items":[{"kind":"List","items":[{},{"kind":"ClusterRole","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{}}]}]}"#
        ),
        "items[0].items[0]: has no kind"
    );
    assert_eq!(
        err(
            r#"[{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"b"}}]"#
        ),
        "[0]: ClusterRoleBinding b: has no roleRef"
    );
    assert_eq!(
        err(
            r#"{"kind":"ClusterRole","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"r"},"rules":{}}"#
        ),
        "the document: ClusterRole r: rules is not a list"
    );
    let ok = parse_snapshot(
        br#"{"kind":"List","items":[{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}},
            {"kind":"Role","apiVersion":"example.com/v1","metadata":{"name":"p","namespace":"n"}},
            {"kind":"ClusterRole","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"r"}}]}"#,
    )
    .expect("snapshot");
    assert_eq!(ok.objects.len(), 1);
    assert_eq!(
        ok.skipped,
        vec![
            "items[0]: kind Pod is not RBAC".to_string(),
            "items[1]: kind Role of apiVersion \"example.com/v1\" is not rbac.authorization.k8s.io"
                .to_string(),
        ]
    );
    let single = parse_snapshot(br#"{"kind":"ClusterRole","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"r"}}"#).expect("one");
    assert_eq!(single.objects[0].key, Key::new(Kind::ClusterRole, "", "r"));
}

#[test]
fn access_reads_can_i_words() {
    let a = parse_access("get", "deployments.apps/scale", Some("prod")).expect("ok");
    assert_eq!(
        (
            a.api_group.as_str(),
            a.resource.as_str(),
            a.subresource.as_str()
        ),
        ("apps", "deployments", "scale")
    );
    assert_eq!(a.namespace.as_deref(), Some("prod"));
    let a = parse_access("create", "pods/exec", None)
        .expect("ok")
        .with_name("web-0");
    assert_eq!(
        (
            a.resource.as_str(),
            a.subresource.as_str(),
            a.name.as_deref()
        ),
        ("pods", "exec", Some("web-0"))
    );
    assert_eq!(
        parse_access("get", "secrets", None).expect("ok").api_group,
        ""
    );
    assert_eq!(
        parse_access("get", "/healthz", None)
            .expect("ok")
            .non_resource_url
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        parse_access("get", "/logs/*", None),
        Err(AccessError::WildcardPath("/logs/*".into()))
    );
    assert_eq!(
        parse_access("get", "/healthz", Some("ns")),
        Err(AccessError::PathInNamespace("/healthz".into()))
    );
    assert_eq!(parse_access("", "pods", None), Err(AccessError::NoVerb));
    assert!(parse_access("get", "a/b/c", None).is_err());
    assert!(parse_access("get", "pods.", None).is_err());
    assert!(parse_access("get", " ", None).is_err());
}

#[test]
fn propose_lists_unused_grants_and_refused_requests() {
    let bob = UserRef {
        name: "bob".into(),
        groups: vec!["system:authenticated".into()],
    };
    let used = vec![
        Used {
            verb: "get".into(),
            resource: "configmaps".into(),
            namespace: Some("app".into()),
            name: Some("cfg".into()),
            count: 4,
            allowed: true,
            ..Used::default()
        },
        Used {
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: Some("app".into()),
            count: 1,
            allowed: false,
            ..Used::default()
        },
    ];
    let granted = vec![
        GrantedRule {
            rule: rule(&["get"], &[""], &["configmaps"]),
            binding: Key::new(Kind::RoleBinding, "app", "b"),
            role: Key::new(Kind::Role, "app", "r"),
            namespace: Some("app".into()),
        },
        GrantedRule {
            rule: rule(&["delete"], &["*"], &["*"]),
            binding: Key::new(Kind::ClusterRoleBinding, "", "c"),
            role: Key::new(Kind::ClusterRole, "", "c"),
            namespace: None,
        },
    ];
    let p = propose(&bob, &granted, &used);
    assert_eq!(p.unused, vec![granted[1].clone()]);
    assert!(p.not_granted.is_empty());
    assert_eq!(p.refused, vec![used[1].clone()]);
    assert_eq!(p.name, "kubetrail:least-privilege:bob");
    assert!(p.cluster_rules.is_empty());
    assert_eq!(p.namespace_rules.len(), 1);
    assert_eq!(
        p.namespace_rules[0].rules,
        vec![PolicyRule {
            resource_names: vec!["cfg".into()],
            ..rule(&["get"], &[""], &["configmaps"])
        },]
    );
    let want = "\
# Least-privilege RBAC for bob from 2 distinct request(s) (audit2rbac's algorithm).
# Refused by the apiserver (1), not proposed:
#   list secrets in app (1 times)
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: kubetrail:least-privilege:bob
  namespace: app
rules:
- apiGroups:
  - \"\"
  resourceNames:
  - cfg
  resources:
  - configmaps
  verbs:
  - get
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kubetrail:least-privilege:bob
  namespace: app
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: kubetrail:least-privilege:bob
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: bob
";
    assert_eq!(p.yaml, want);
    // A service account is bound as one, named by its name.
    let sa = UserRef {
        name: "system:serviceaccount:ns1:Sa.1".into(),
        groups: vec![],
    };
    let p = propose(
        &sa,
        &[],
        &[Used {
            verb: "get".into(),
            non_resource_url: Some("/metrics".into()),
            count: 1,
            allowed: true,
            ..Used::default()
        }],
    );
    assert_eq!(p.name, "kubetrail:least-privilege:sa-1");
    assert!(
        p.yaml
            .contains("- kind: ServiceAccount\n  name: Sa.1\n  namespace: ns1\n"),
        "{}",
        p.yaml
    );
    assert!(
        p.yaml
            .contains("- nonResourceURLs:\n  - /metrics\n  verbs:\n  - get\n"),
        "{}",
        p.yaml
    );
}

/// The real audit2rbac demo log (v1beta1, 2017): its RBAC writes are all logged at Metadata.
#[test]
fn audit2rbac_demo_log_replays_to_uncertain_objects_and_proposes_bobs_roles() {
    let path = format!(
        "{}/tests/fixtures/audit2rbac_demo_501d132.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let events: Vec<Value> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    assert_eq!(events.len(), 67);
    let mut s = State::new();
    let mut refused = 0;
    let mut used: BTreeMap<(String, String, String, String, bool), u64> = BTreeMap::new();
    for e in &events {
        let o = &e["objectRef"];
        let str_of = |v: &Value| v.as_str().map(str::to_string);
        if o["apiGroup"] == "rbac.authorization.k8s.io" {
            let a = s.apply(&RbacWrite {
                time: e["timestamp"].as_str().unwrap_or_default(),
                audit_id: e["auditID"].as_str().unwrap_or_default(),
                user: e["user"]["username"].as_str().unwrap_or_default(),
                impersonated_user: e["impersonatedUser"]["username"].as_str(),
                source_ips: &[],
                user_agent: None,
                verb: e["verb"].as_str().unwrap_or_default(),
                resource: o["resource"].as_str().unwrap_or_default(),
                api_group: o["apiGroup"].as_str(),
                subresource: o["subresource"].as_str(),
                namespace: o["namespace"].as_str(),
                name: o["name"].as_str(),
                uri: e["requestURI"].as_str().unwrap_or_default(),
                level: e["level"].as_str().unwrap_or_default(),
                code: e["responseStatus"]["code"].as_i64().map(|c| c as i32),
                request_object: e.get("requestObject"),
                response_object: e.get("responseObject"),
            });
            refused += a
                .notes
                .iter()
                .filter(|n| n.starts_with("refused (404)"))
                .count();
        } else if e["impersonatedUser"]["username"] == "bob" {
            let path = e["requestURI"]
                .as_str()
                .unwrap_or_default()
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            let key = (
                e["verb"].as_str().unwrap_or_default().to_string(),
                str_of(&o["resource"]).unwrap_or_default(),
                str_of(&o["namespace"]).unwrap_or_default(),
                if o.is_null() { path } else { String::new() },
                e["responseStatus"]["code"] != 403,
            );
            *used.entry(key).or_default() += 1;
        }
    }
    assert_eq!(refused, 2, "the first deletes found nothing (404)");
    let u = s.uncertain();
    let keys: Vec<&Key> = u.iter().map(|u| &u.key).collect();
    assert_eq!(
        keys,
        vec![
            &Key::new(Kind::Role, "default", "audit2rbac:bob"),
            &Key::new(Kind::RoleBinding, "default", "audit2rbac:bob")
        ]
    );
    assert!(u.iter().all(|u| u.since == "2017-09-11T19:57:46Z"));
    assert_eq!(
        u[0].why,
        "create by system:admin logged at Metadata: its body was not recorded"
    );
    assert!(s.grants().is_empty(), "their content was never recorded");

    let used: Vec<Used> = used
        .into_iter()
        .map(|((verb, resource, ns, path, allowed), count)| Used {
            verb,
            resource,
            namespace: Some(ns).filter(|n| !n.is_empty()),
            non_resource_url: Some(path).filter(|p| !p.is_empty()),
            count,
            allowed,
            ..Used::default()
        })
        .collect();
    let bob = UserRef {
        name: "bob".into(),
        groups: vec!["system:authenticated".into()],
    };
    let p = propose(&bob, &[], &used);
    // audit2rbac proposes list pods cluster-wide and list nodes (bob was refused those, in ns1 and on
    // nodes); refused requests are not proposed and do not widen: only what bob was allowed.
    assert!(p.cluster_rules.is_empty(), "{:?}", p.cluster_rules);
    assert_eq!(p.namespace_rules.len(), 1);
    assert_eq!(p.namespace_rules[0].namespace, "default");
    assert_eq!(
        p.namespace_rules[0].rules,
        vec![rule(&["get", "list", "watch"], &[""], &["pods"])]
    );
    assert_eq!(p.refused.len(), 3);
    assert!(!p.yaml.contains("kind: ClusterRole"), "{}", p.yaml);
}

#[test]
fn yaml_scalars_are_quoted_when_plain_would_read_differently() {
    let p = propose(
        &UserRef {
            name: "true".into(),
            groups: vec![],
        },
        &[],
        &[Used {
            verb: "get".into(),
            api_group: "*".into(),
            resource: "on".into(),
            allowed: true,
            count: 1,
            ..Used::default()
        }],
    );
    assert!(p.yaml.contains("  - \"*\"\n"), "{}", p.yaml);
    assert!(p.yaml.contains("  - \"on\"\n"), "{}", p.yaml);
    assert!(p.yaml.contains("  name: \"true\"\n"), "{}", p.yaml);
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "",
                "List",
                "Role",
                "ClusterRole",
                "RoleBinding",
                "ClusterRoleBinding",
                "rbac.authorization.k8s.io/v1",
                "ns",
                "x",
                "*",
                "ServiceAccount",
                "User",
                "Group"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "kind",
                            "apiVersion",
                            "metadata",
                            "name",
                            "namespace",
                            "items",
                            "rules",
                            "subjects",
                            "roleRef",
                            "verbs",
                            "resources",
                            "apiGroups",
                            "aggregationRule",
                            "clusterRoleSelectors",
                            "matchLabels",
                            "matchExpressions",
                            "labels",
                            "op",
                            "path",
                            "value"
                        ]),
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_snapshot_and_apply_are_total(doc in json_value(), body in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..64), verb in prop::sample::select(vec!["create", "update", "patch", "delete", "deletecollection"]), level in prop::sample::select(vec!["Metadata", "Request", "RequestResponse"])) {
            let _ = parse_snapshot(&bytes);
            let mut s = match parse_snapshot(doc.to_string().as_bytes()) {
                Ok(snap) => State::from_snapshot(&snap),
                Err(_) => State::new(),
            };
            for resource in ["roles", "clusterroles", "rolebindings", "clusterrolebindings"] {
                s.apply(&RbacWrite { level, request_object: Some(&body), ..write(verb, resource, Some("ns"), Some("x")) });
                s.apply(&RbacWrite { level, response_object: Some(&body), ..write(verb, resource, Some("ns"), None) });
                s.apply(&RbacWrite { level, request_object: Some(&doc), ..write("patch", resource, Some("ns"), Some("x")) });
            }
            let _ = s.who_can(&Access::resource("get", "", "x", "").in_namespace("ns"));
            let _ = s.grants();
            let _ = s.uncertain();
            let _ = s.rules_for(&UserRef { name: "x".into(), groups: vec!["x".into()] });
        }
    }
}
