//! Bytes as an audit policy file → `kubetrail_policy::load` → if it loads, `validate`, `evaluate` and
//! `explain` against fixed request attributes, and `lint`.
//!
//! Checks: nothing panics; a policy that loads has at least one rule and no validation error (kube-apiserver
//! would start with it); `explain` reaches the same decision as `evaluate`, and that decision names a rule that
//! exists.

#![no_main]

use std::borrow::Cow;

use kubetrail_model::Attributes;
use kubetrail_policy::{explain, lint, validate};
use libfuzzer_sys::fuzz_target;

const MASTERS: &[Cow<'static, str>] = &[
    Cow::Borrowed("system:masters"),
    Cow::Borrowed("system:authenticated"),
];
const NODES: &[Cow<'static, str>] = &[
    Cow::Borrowed("system:nodes"),
    Cow::Borrowed("system:authenticated"),
];
const NONE: &[Cow<'static, str>] = &[];

fn resource(
    user: Option<&'static str>,
    groups: &'static [Cow<'static, str>],
    verb: &'static str,
    (namespace, api_group, resource, subresource, name): (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ),
    path: &'static str,
) -> Attributes<'static> {
    Attributes {
        user,
        groups,
        verb,
        namespace,
        api_group,
        resource,
        subresource,
        name,
        path,
        is_resource_request: true,
    }
}

fn requests() -> [Attributes<'static>; 6] {
    [
        resource(
            Some("alice"),
            MASTERS,
            "get",
            ("default", "", "secrets", "", "db-password"),
            "/api/v1/namespaces/default/secrets/db-password",
        ),
        resource(
            Some("system:serviceaccount:kube-system:ci"),
            NONE,
            "create",
            ("", "rbac.authorization.k8s.io", "clusterrolebindings", "", "admin"),
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        ),
        resource(
            Some("system:node:n1"),
            NODES,
            "update",
            ("kube-node-lease", "coordination.k8s.io", "leases", "", "n1"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
        ),
        resource(
            Some("bob"),
            NONE,
            "create",
            ("prod", "", "pods", "exec", "web-0"),
            "/api/v1/namespaces/prod/pods/web-0/exec",
        ),
        Attributes {
            user: None,
            groups: NONE,
            verb: "get",
            namespace: "",
            api_group: "",
            resource: "",
            subresource: "",
            name: "",
            path: "/healthz/ready",
            is_resource_request: false,
        },
        Attributes {
            user: Some(""),
            groups: NONE,
            verb: "list",
            namespace: "",
            api_group: "*",
            resource: "*",
            subresource: "*",
            name: "*",
            path: "/*",
            is_resource_request: false,
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let loaded = kubetrail_policy::load(&text);
    let _ = lint(&loaded);
    let Some(policy) = &loaded.policy else {
        return;
    };
    assert!(!policy.rules.is_empty(), "a policy with no rules loaded");
    let invalid: Vec<_> = validate(policy).into_iter().filter(|d| d.is_error()).collect();
    assert!(invalid.is_empty(), "a loaded policy fails validation: {invalid:?}");
    for a in requests() {
        let decision = policy.evaluate(&a);
        if let Some(rule) = decision.rule {
            assert!(rule < policy.rules.len(), "decision names rule {rule} of {}", policy.rules.len());
        }
        let why = explain(policy, &a);
        assert_eq!(why.decision, decision, "explain and evaluate disagree for {a:?}");
        assert_eq!(why.matched.map(|m| m.index), decision.rule);
    }
});
