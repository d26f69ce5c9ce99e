//! Helpers the test binaries share: a recorded write, RBAC objects as JSON, a state from objects. Each binary
//! uses some of them.
#![allow(dead_code)]

use kubetrail_rbac::{RbacWrite, State, parse_snapshot};
use serde_json::{Value, json};

pub fn write<'a>(
    verb: &'a str,
    resource: &'a str,
    ns: Option<&'a str>,
    name: Option<&'a str>,
) -> RbacWrite<'a> {
    RbacWrite {
        time: "2024-01-01T00:00:00Z",
        audit_id: "a",
        user: "system:admin",
        impersonated_user: None,
        source_ips: &[],
        user_agent: None,
        verb,
        resource,
        api_group: Some("rbac.authorization.k8s.io"),
        subresource: None,
        namespace: ns,
        name,
        uri: "/apis/rbac.authorization.k8s.io/v1/x",
        level: "RequestResponse",
        code: Some(200),
        request_object: None,
        response_object: None,
    }
}

pub fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

pub fn crb(name: &str, role: &str, subjects: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

pub fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}, "subjects": subjects})
}

pub fn user(name: &str) -> Value {
    json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}])
}

pub fn state_of(items: Vec<Value>) -> State {
    let snap = parse_snapshot(
        json!({"kind": "List", "apiVersion": "v1", "items": items})
            .to_string()
            .as_bytes(),
    )
    .expect("snapshot");
    State::from_snapshot(&snap)
}
