//! Cases from the security review: writes whose effect the replay must not get wrong while saying it is
//! certain, proposals that must not grant refused requests, YAML that hostile names cannot break, and the
//! work one write may cost.

use kubetrail_rbac::{Access, Key, Kind, PolicyRule, RbacWrite, State, Used, UserRef, propose};
use serde_json::{Value, json};

mod common;
use common::{cluster_role, crb, state_of, user};

/// A write by `mallory` (request `a1`).
fn write<'a>(
    verb: &'a str,
    resource: &'a str,
    ns: Option<&'a str>,
    name: Option<&'a str>,
) -> RbacWrite<'a> {
    RbacWrite {
        user: "mallory",
        audit_id: "a1",
        ..common::write(verb, resource, ns, name)
    }
}

fn all_secrets() -> Value {
    json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}])
}

fn get_secrets() -> Access {
    Access::resource("get", "", "secrets", "").in_namespace("ns1")
}

/// `(name, uncertain)` of each subject allowed (but `system:masters`).
fn allowed(s: &State, q: &Access) -> Vec<(String, bool)> {
    s.who_can(q)
        .allowed
        .iter()
        .skip(1)
        .map(|a| (a.subject.name.clone(), a.uncertain))
        .collect()
}

fn used(verb: &str, resource: &str, ns: &str, name: &str, allowed: bool) -> Used {
    Used {
        verb: verb.into(),
        resource: resource.into(),
        namespace: Some(ns.to_string()).filter(|n| !n.is_empty()),
        name: Some(name.to_string()).filter(|n| !n.is_empty()),
        count: 1,
        allowed,
        ..Used::default()
    }
}

fn rule(verbs: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    PolicyRule {
        verbs: v(verbs),
        api_groups: vec![String::new()],
        resources: v(resources),
        resource_names: v(names),
        ..PolicyRule::default()
    }
}

// H2: refused requests are not proposed and do not widen.

#[test]
fn refused_probes_are_never_proposed_nor_widen_a_rule() {
    let bob = UserRef {
        name: "bob".into(),
        groups: vec![],
    };
    let p = propose(
        &bob,
        &[],
        &[
            used("get", "secrets", "ns1", "db", false),
            used("get", "secrets", "ns2", "db", false),
            used("get", "secrets", "ns1", "", false),
            used("get", "configmaps", "ns1", "cfg", true),
        ],
    );
    assert!(p.cluster_rules.is_empty(), "{:?}", p.cluster_rules);
    assert_eq!(p.namespace_rules.len(), 1);
    assert_eq!(
        p.namespace_rules[0].rules,
        vec![rule(&["get"], &["configmaps"], &["cfg"])]
    );
    assert_eq!(p.refused.len(), 3);
    for line in p.yaml.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("secrets"), "{line}\n{}", p.yaml);
    }
    // An allowed request is not widened by a refused one of another name or namespace.
    let p = propose(
        &bob,
        &[],
        &[
            used("get", "secrets", "ns1", "db", true),
            used("get", "secrets", "ns2", "other", false),
        ],
    );
    assert!(p.cluster_rules.is_empty());
    assert_eq!(
        p.namespace_rules[0].rules,
        vec![rule(&["get"], &["secrets"], &["db"])]
    );
}

#[test]
fn a_widened_rule_says_why_in_a_comment() {
    let bob = UserRef {
        name: "bob".into(),
        groups: vec![],
    };
    let p = propose(
        &bob,
        &[],
        &[
            used("get", "secrets", "ns1", "a", true),
            used("get", "secrets", "ns2", "b", true),
            used("get", "configmaps", "ns3", "x", true),
            used("get", "configmaps", "ns3", "y", true),
        ],
    );
    assert_eq!(p.cluster_rules, vec![rule(&["get"], &["secrets"], &[])]);
    assert!(
        p.yaml.contains(
            "rules:\n# get secrets: used in 2 namespaces -> ClusterRole (every namespace); used with 2 names -> every name\n- apiGroups:"
        ),
        "{}",
        p.yaml
    );
    assert!(
        p.yaml
            .contains("rules:\n# get configmaps: used with 2 names -> every name\n- apiGroups:"),
        "{}",
        p.yaml
    );
}

// H3: names chosen by an attacker cannot add YAML keys.

/// The top-level keys a proposal's documents may have.
const KEYS: [&str; 6] = [
    "apiVersion:",
    "kind:",
    "metadata:",
    "rules:",
    "roleRef:",
    "subjects:",
];

#[test]
fn hostile_names_cannot_add_keys_to_the_proposed_yaml() {
    let inject = "x\u{2028}aggregationRule:\u{2028}  clusterRoleSelectors:\u{2029}  - {}\u{85}rules: []\r\n--- \u{202e}";
    let mallory = UserRef {
        name: format!("bob{inject}"),
        groups: vec![],
    };
    let p = propose(
        &mallory,
        &[],
        &[
            used("get", "secrets", "ns1", inject, false),
            used("get", "pods", "ns1", &format!("@p{inject}"), true),
            used("get", "configmaps", "ns1", "`q", true),
        ],
    );
    assert!(
        !p.yaml.contains("\n# --- "),
        "a name does not start a comment line of its own\n{}",
        p.yaml
    );
    for bad in ['\u{2028}', '\u{2029}', '\u{85}', '\u{202e}', '\r'] {
        assert!(!p.yaml.contains(bad), "raw {bad:?} in\n{}", p.yaml);
    }
    // Every line (split at every break a YAML 1.1 parser knows) is a comment, a document separator, an
    // indented or list line, or one of the expected keys.
    for line in p
        .yaml
        .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .filter(|l| !l.is_empty())
    {
        let ok = line.starts_with("# ")
            || line == "---"
            || line.starts_with("  ")
            || line.starts_with("- ")
            || KEYS.iter().any(|k| line.starts_with(k));
        assert!(ok, "unexpected line {line:?} in\n{}", p.yaml);
        assert!(!line.starts_with("--- "), "{line:?}");
    }
    assert_eq!(p.yaml.matches("\nrules:").count(), 1, "{}", p.yaml);
    // A scalar starting with `@` or a backtick is quoted, the breaks escaped as YAML's \L, \P, \N.
    assert!(
        p.yaml.contains(r#"  - "@px\LaggregationRule:\L  clusterRoleSelectors:\P  - {}\Nrules: []\r\n--- \u202e""#),
        "{}",
        p.yaml
    );
    assert!(p.yaml.contains("  - \"`q\"\n"), "{}", p.yaml);
}

// H1a: a create whose name was not recorded.

#[test]
fn a_create_with_generate_name_is_kept_under_a_placeholder_and_uncertain() {
    let mut s = state_of(vec![cluster_role("all-secrets", all_secrets())]);
    let mut body = crb("", "all-secrets", user("mallory"));
    body["metadata"] = json!({"generateName": "evil-"});
    let a = s.apply(&RbacWrite {
        level: "Request",
        request_object: Some(&body),
        ..write("create", "clusterrolebindings", None, None)
    });
    assert!(a.became_uncertain, "{a:?}");
    assert_eq!(a.changes.len(), 1, "{a:?}");
    assert_eq!(a.changes[0].subject.name, "mallory");
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), true)]
    );
    let u = s.uncertain();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].key.name, "evil-*/generated by request a1");
    assert_eq!(
        u[0].why,
        "create by mallory created with generateName \"evil-\": its name was not recorded"
    );

    // At Metadata, nothing of it is known but that it exists: who-can says its answer may be incomplete.
    let mut s = state_of(vec![cluster_role("all-secrets", all_secrets())]);
    let a = s.apply(&RbacWrite {
        level: "Metadata",
        ..write("create", "rolebindings", Some("ns1"), None)
    });
    assert!(a.became_uncertain, "{a:?}");
    let who = s.who_can(&get_secrets());
    assert_eq!(who.uncertain.len(), 1, "{who:?}");
    assert_eq!(who.uncertain[0].key.kind, Kind::RoleBinding);

    // A recorded response has the real name: the truth, certain.
    let mut s = state_of(vec![cluster_role("all-secrets", all_secrets())]);
    let made = crb("evil-x7k2p", "all-secrets", user("mallory"));
    let a = s.apply(&RbacWrite {
        request_object: Some(&body),
        response_object: Some(&made),
        ..write("create", "clusterrolebindings", None, None)
    });
    assert!(!a.became_uncertain);
    assert!(
        s.object(&Key::new(Kind::ClusterRoleBinding, "", "evil-x7k2p"))
            .is_some()
    );
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), false)]
    );
}

// H1b: a delete that only sets deletionTimestamp.

#[test]
fn a_delete_held_by_finalizers_keeps_granting() {
    let base = || {
        state_of(vec![
            cluster_role("all-secrets", all_secrets()),
            crb("b", "all-secrets", user("mallory")),
        ])
    };
    let mut pending = crb("b", "all-secrets", user("mallory"));
    pending["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    pending["metadata"]["finalizers"] = json!(["example.com/keep"]);
    let mut s = base();
    let a = s.apply(&RbacWrite {
        response_object: Some(&pending),
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.changes.is_empty(), "{a:?}");
    assert!(
        a.notes.iter().any(|n| n.contains("deletion pending")),
        "{a:?}"
    );
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), false)]
    );
    // Removing the last finalizer deletes it.
    let mut done = pending.clone();
    done["metadata"]["finalizers"] = json!([]);
    let a = s.apply(&RbacWrite {
        response_object: Some(&done),
        ..write("patch", "clusterrolebindings", None, Some("b"))
    });
    assert_eq!(a.changes.len(), 1, "{a:?}");
    assert!(allowed(&s, &get_secrets()).is_empty());

    // No response: the known object's finalizers, or the body's propagationPolicy, may keep it.
    let mut with_finalizer = crb("b", "all-secrets", user("mallory"));
    with_finalizer["metadata"]["finalizers"] = json!(["example.com/keep"]);
    let mut s = state_of(vec![
        cluster_role("all-secrets", all_secrets()),
        with_finalizer,
    ]);
    let a = s.apply(&RbacWrite {
        level: "Request",
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.became_uncertain, "{a:?}");
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), true)]
    );
    let foreground = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Foreground"});
    let mut s = base();
    let a = s.apply(&RbacWrite {
        level: "Request",
        request_object: Some(&foreground),
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.became_uncertain, "{a:?}");
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), true)]
    );

    // A client cannot set deletionTimestamp (a create clears it, an update keeps the stored one): an update
    // of a created object that claims one, without finalizers, does not delete it.
    let mut s = base();
    let mut forged = crb("f", "all-secrets", user("eve"));
    forged["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    for verb in ["create", "update"] {
        s.apply(&RbacWrite {
            level: "Request",
            request_object: Some(&forged),
            ..write(verb, "clusterrolebindings", None, Some("f"))
        });
    }
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), false), ("eve".to_string(), false)]
    );

    // deletecollection: a listed item with finalizers stays.
    let mut s = base();
    let list = json!({"kind": "ClusterRoleBindingList", "items": [{"metadata": {"name": "b", "finalizers": ["example.com/keep"]}}]});
    let a = s.apply(&RbacWrite {
        response_object: Some(&list),
        ..write("deletecollection", "clusterrolebindings", None, None)
    });
    assert!(a.changes.is_empty(), "{a:?}");
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), false)]
    );
}

// H1c: a delete's dry run is in its body when it has one.

#[test]
fn a_delete_reads_dry_run_from_its_body() {
    let base = || {
        state_of(vec![
            cluster_role("all-secrets", all_secrets()),
            crb("b", "all-secrets", user("mallory")),
        ])
    };
    let dry = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]});
    let mut s = base();
    let a = s.apply(&RbacWrite {
        level: "Request",
        request_object: Some(&dry),
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.changes.is_empty() && !a.became_uncertain, "{a:?}");
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), false)]
    );
    let a = s.apply(&RbacWrite {
        level: "Request",
        request_object: Some(&dry),
        ..write("deletecollection", "clusterrolebindings", None, None)
    });
    assert!(a.changes.is_empty() && !a.became_uncertain, "{a:?}");

    // `?dryRun=All` with a body that has none: the body decides, a real delete.
    let real = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"});
    let mut s = base();
    let a = s.apply(&RbacWrite {
        level: "Request",
        uri: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b?dryRun=All",
        request_object: Some(&real),
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert_eq!(a.changes.len(), 1, "{a:?}");
    assert!(allowed(&s, &get_secrets()).is_empty());

    // At Metadata the body is not known: `?dryRun=All` may have been overridden.
    let mut s = base();
    let a = s.apply(&RbacWrite {
        level: "Metadata",
        uri: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b?dryRun=All",
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.became_uncertain, "{a:?}");
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), true)]
    );
}

// H1d: an object cut at a limit is uncertain.

#[test]
fn an_object_cut_at_a_limit_is_uncertain() {
    let mut verbs: Vec<String> = (0..10_000).map(|i| format!("junk{i}")).collect();
    verbs.push("*".into());
    let wide = json!([{"verbs": verbs, "apiGroups": [""], "resources": ["secrets"]}]);
    let mut s = state_of(vec![
        cluster_role("wide", wide.clone()),
        crb("b", "wide", user("mallory")),
    ]);
    let who = s.who_can(&get_secrets());
    assert_eq!(who.uncertain.len(), 1, "{:?}", who.uncertain);
    assert_eq!(
        who.uncertain[0].key,
        Key::new(Kind::ClusterRole, "", "wide")
    );
    assert_eq!(who.uncertain[0].since, "the snapshot");
    assert_eq!(
        who.uncertain[0].why,
        "rules[0].verbs: cut at 10000 entries (10001 given): what follows was not read"
    );
    // The same written by a create.
    let role = cluster_role("wide2", wide);
    let a = s.apply(&RbacWrite {
        response_object: Some(&role),
        ..write("create", "clusterroles", None, Some("wide2"))
    });
    assert!(a.became_uncertain, "{a:?}");
    // Too many labels: which aggregation selects it is not known.
    let labels: serde_json::Map<String, Value> = (0..1_001)
        .map(|i| (format!("l{i:04}"), json!("x")))
        .collect();
    let mut role = cluster_role("labelled", json!([]));
    role["metadata"]["labels"] = Value::Object(labels);
    let s = state_of(vec![role]);
    assert_eq!(s.uncertain().len(), 1);
    assert!(
        s.uncertain()[0]
            .why
            .starts_with("metadata.labels: cut at 1000 entries")
    );
}

// H1e: a 5xx answer may hide a write.

#[test]
fn a_5xx_answer_leaves_the_write_uncertain() {
    let mut s = state_of(vec![
        cluster_role("all-secrets", all_secrets()),
        crb("b", "all-secrets", user("mallory")),
    ]);
    let a = s.apply(&RbacWrite {
        code: Some(504),
        uri: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b?timeout=5ms",
        ..write("delete", "clusterrolebindings", None, Some("b"))
    });
    assert!(a.became_uncertain, "{a:?}");
    assert_eq!(
        allowed(&s, &get_secrets()),
        vec![("mallory".to_string(), true)]
    );
    assert!(
        s.uncertain()[0]
            .why
            .contains("answered 504: the write may have happened")
    );

    let mut s = state_of(vec![cluster_role("all-secrets", all_secrets())]);
    let body = crb("c", "all-secrets", user("eve"));
    let a = s.apply(&RbacWrite {
        code: Some(500),
        level: "Request",
        request_object: Some(&body),
        ..write("create", "clusterrolebindings", None, Some("c"))
    });
    assert!(a.became_uncertain, "{a:?}");
    assert_eq!(allowed(&s, &get_secrets()), vec![("eve".to_string(), true)]);

    // A 4xx changed nothing.
    let a = s.apply(&RbacWrite {
        code: Some(409),
        request_object: Some(&body),
        ..write("create", "clusterrolebindings", None, Some("d"))
    });
    assert!(!a.became_uncertain && a.changes.is_empty());
}

// M2: a ClusterRole made uncertain may now be aggregated.

#[test]
fn an_uncertain_clusterrole_may_be_in_any_aggregated_role() {
    let mut admin = cluster_role("admin", json!([]));
    admin["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]});
    let mut s = state_of(vec![
        admin,
        crb("admins", "admin", user("alice")),
        cluster_role("sneaky", all_secrets()),
    ]);
    assert!(s.who_can(&get_secrets()).uncertain.is_empty());
    // A label patch logged at Metadata: `agg: true` may have been added.
    let a = s.apply(&RbacWrite {
        level: "Metadata",
        ..write("patch", "clusterroles", None, Some("sneaky"))
    });
    assert!(a.became_uncertain);
    let who = s.who_can(&get_secrets());
    let keys: Vec<&Key> = who.uncertain.iter().map(|u| &u.key).collect();
    assert_eq!(
        keys,
        vec![&Key::new(Kind::ClusterRole, "", "sneaky")],
        "{who:?}"
    );
}

/// An uncertain ClusterRole aggregated (or maybe aggregated) beside a certain one makes uncertain only what
/// depends on it: a subject a certain member's rule allows stays certain (an unrecorded change could only add
/// rules there), one allowed only by the uncertain member's rule is uncertain.
#[test]
fn only_what_an_uncertain_member_allows_is_uncertain() {
    let mut view = cluster_role("view", json!([]));
    view["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]});
    let mut certain = cluster_role("certain-member", all_secrets());
    certain["metadata"]["labels"] = json!({"agg": "true"});
    let mut shaky = cluster_role(
        "shaky-member",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]),
    );
    shaky["metadata"]["labels"] = json!({"agg": "true"});
    let mut s = state_of(vec![
        view,
        certain,
        shaky,
        crb("viewers", "view", user("alice")),
        cluster_role("unrelated", json!([])),
    ]);
    for name in ["shaky-member", "unrelated"] {
        let a = s.apply(&RbacWrite {
            level: "Metadata",
            ..write("patch", "clusterroles", None, Some(name))
        });
        assert!(a.became_uncertain);
    }
    let secrets = allowed(&s, &get_secrets());
    assert!(
        secrets.contains(&("alice".to_string(), false)),
        "{secrets:?}"
    );
    let configmaps = Access::resource("get", "", "configmaps", "").in_namespace("prod");
    let cm = allowed(&s, &configmaps);
    assert!(cm.contains(&("alice".to_string(), true)), "{cm:?}");
    // Both uncertain roles are listed: either may have changed the answer.
    assert_eq!(s.who_can(&get_secrets()).uncertain.len(), 2);
}
