//! What one replayed write costs (H4 of the security review): one ClusterRole write re-resolves every
//! aggregated role, and its grant changes must be found per (binding, role), not copied per subject. The
//! work is counted in rule comparisons ([`kubetrail_rbac::Applied::compared`]).

use kubetrail_rbac::{RbacWrite, State, parse_snapshot};
use serde_json::{Value, json};

mod common;

/// A write of `name` recorded with its response body.
fn write<'a>(verb: &'a str, resource: &'a str, name: &'a str, body: &'a Value) -> RbacWrite<'a> {
    RbacWrite {
        response_object: Some(body),
        ..common::write(verb, resource, None, Some(name))
    }
}

fn rules(n: usize, prefix: &str) -> Value {
    (0..n)
        .map(
            |i| json!({"verbs": ["get"], "apiGroups": [""], "resources": [format!("{prefix}{i}")]}),
        )
        .collect()
}

fn cluster_role(name: &str, labelled: bool, rules: Value) -> Value {
    let labels = if labelled {
        json!({"agg": "true"})
    } else {
        json!({})
    };
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": name, "labels": labels}, "rules": rules})
}

fn crb(name: &str, role: &str, users: usize) -> Value {
    let subjects: Vec<Value> = (0..users)
        .map(|i| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": format!("u{i}")}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

#[test]
fn one_clusterrole_write_costs_per_role_not_per_subject() {
    let mut big = cluster_role("big", false, json!([]));
    big["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]});
    let items = vec![
        big,
        cluster_role("parts", true, rules(10_000, "r")),
        crb("everyone", "big", 100),
        cluster_role("small", false, rules(100, "s")),
    ];
    let snap = parse_snapshot(
        json!({"kind": "List", "items": items})
            .to_string()
            .as_bytes(),
    )
    .expect("snapshot");
    let mut s = State::from_snapshot(&snap);

    // A ClusterRole that aggregates into `big`: each of the 100 subjects gains its one rule.
    let new = cluster_role("new", true, rules(1, "n"));
    let a = s.apply(&write("create", "clusterroles", "new", &new));
    assert_eq!(a.changes.len(), 100, "{:?}", a.notes);
    assert!(a.changes.iter().all(|c| c.added && c.rules.len() == 1));
    // Once the role's 10,001 rules against its 10,000 before, not once per subject (4,000,000).
    assert!(a.compared <= 50_000, "{} rule comparisons", a.compared);

    // One that does not: nothing changes, and nothing is copied per subject.
    let other = cluster_role("other", false, rules(1, "o"));
    let a = s.apply(&write("create", "clusterroles", "other", &other));
    assert!(a.changes.is_empty());
    assert!(a.compared <= 50_000, "{} rule comparisons", a.compared);

    // Past the limits (2,000 subjects gaining 100 rules each: 200,000 rules), the changes are cut, and said so.
    let wide = crb("wide", "small", 2_000);
    let a = s.apply(&write("create", "clusterrolebindings", "wide", &wide));
    assert_eq!(a.changes.len(), 1_000, "cut at 100,000 rules");
    assert!(
        a.notes
            .iter()
            .any(|n| n.starts_with("grant changes not all listed")),
        "{:?}",
        a.notes
    );
}
