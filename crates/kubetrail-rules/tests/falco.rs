//! The pack against Falco's real k8s_audit trace files: for every file whose expected Falco detection is a use
//! case the pack covers, the pack alerts with the mapped rule; the others are listed with the reason.

use std::collections::BTreeSet;

use kubetrail_detect::{Config, Engine, RuleSet};

/// File, what Falco's default rules expect, and the built-in rules that must alert (empty: none may alert
/// at medium or above, for the reason given).
const MAPPING: &[(&str, &str, &[&str], &str)] = &[
    (
        "anonymous_creates_namespace_foo.json",
        "Anonymous Request Allowed",
        &["kt-anonymous-allowed"],
        "",
    ),
    (
        "attach_cluster_admin_role.json",
        "Attach to cluster-admin Role",
        &["kt-rbac-bind-cluster-admin"],
        "",
    ),
    ("attach_pod.json", "Attach/Exec Pod", &["kt-exec-other"], ""),
    ("exec_pod.json", "Attach/Exec Pod", &["kt-exec-other"], ""),
    (
        "create_cluster_role_pod_exec.json",
        "ClusterRole With Pod Exec Created",
        &["kt-rbac-role-exec-proxy-token"],
        "",
    ),
    (
        "create_cluster_role_wildcard_resources.json",
        "ClusterRole With Wildcard Created",
        &["kt-rbac-role-dangerous"],
        "",
    ),
    (
        "create_cluster_role_wildcard_verbs.json",
        "ClusterRole With Wildcard Created",
        &["kt-rbac-role-dangerous"],
        "",
    ),
    (
        "delete_cluster_role_kube_aggregator.json",
        "System ClusterRole Modified/Deleted",
        &["kt-rbac-system-role-changed"],
        "",
    ),
    (
        "modify_cluster_role_node_problem_detector.json",
        "System ClusterRole Modified/Deleted",
        &["kt-rbac-system-role-changed"],
        "",
    ),
    (
        "create_cluster_role_write_privileges.json",
        "ClusterRole With Write Privileges Created",
        &[],
        "a role that may delete pods or write configmaps is ordinary; the pack reports wildcards, escalate/bind/impersonate, exec, nodes/proxy and tokens",
    ),
    (
        "create_nginx_pod_privileged.json",
        "Create Privileged Pod",
        &[],
        "the pod is created by replicaset-controller from a template; the pack reports the template when a person or tool writes it",
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "Create Privileged Pod",
        &[],
        "as above: created by a controller",
    ),
    (
        "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
        "Create Privileged Pod",
        &[],
        "as above: created by a controller",
    ),
    (
        "create_nginx_pod_hostnetwork.json",
        "Create HostNetwork Pod",
        &[],
        "as above: created by a controller",
    ),
    (
        "create_nginx_pod_sensitive_mount.json",
        "Create Sensitive Mount Pod",
        &[],
        "as above: created by a controller",
    ),
    (
        "create_nginx_pod_sensitive_mount_2nd_container.json",
        "Create Sensitive Mount Pod",
        &[],
        "as above: created by a controller",
    ),
    (
        "create_pod_kube_system_namespace.json",
        "Pod Created in Kube Namespace",
        &[],
        "as above: created by a controller",
    ),
    (
        "create_pod_kube_public_namespace.json",
        "Pod Created in Kube Namespace",
        &[],
        "as above: created by a controller",
    ),
    (
        "create_serviceaccount_kube_system_namespace.json",
        "Service Account Created in Kube Namespace",
        &[],
        "a service account alone grants nothing; its bindings and token requests are reported",
    ),
    (
        "create_serviceaccount_kube_public_namespace.json",
        "Service Account Created in Kube Namespace",
        &[],
        "as above",
    ),
    (
        "create_configmap_sensitive_values.json",
        "Create/Modify Configmap With Private Credentials",
        &[],
        "inspecting configmap values for credentials is not in the pack",
    ),
    (
        "create_nginx_service_nodeport.json",
        "Create NodePort Service",
        &[],
        "exposure, not an attack step",
    ),
];

#[test]
fn falco_trace_files_are_covered_as_mapped() {
    let mut set = RuleSet::new();
    for f in kubetrail_rules::builtin() {
        set.add_file(f.name, f.yaml).unwrap();
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/falco");
    let mut files: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    for (file, falco, want, why) in MAPPING {
        files.remove(*file);
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let mut e = Engine::new(&set, Config::default()).unwrap();
        let mut alerts = Vec::new();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            e.process(l, &mut alerts).unwrap();
        }
        e.flush(&mut alerts);
        let raised: BTreeSet<&str> = alerts.iter().map(|a| a.rule.id.as_str()).collect();
        println!(
            "{file}: Falco {falco:?} -> {raised:?}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        );
        for id in *want {
            assert!(
                raised.contains(id),
                "{file}: expected {id}, raised {raised:?}"
            );
        }
        if want.is_empty() {
            assert!(raised.is_empty(), "{file}: {why}, but raised {raised:?}");
        }
    }
    // The rest: Falco's informational "K8s <Object> Created/Deleted" activity rules, which the pack does
    // not have (everything is in the audit store), and one malformed file. None may raise anything but
    // what is listed.
    for file in &files {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let mut e = Engine::new(&set, Config::default()).unwrap();
        let mut alerts = Vec::new();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let _ = e.process(l, &mut alerts);
        }
        e.flush(&mut alerts);
        let raised: BTreeSet<&str> = alerts.iter().map(|a| a.rule.id.as_str()).collect();
        println!("{file}: activity only -> {raised:?}");
        assert!(raised.is_empty(), "{file}: {raised:?}");
    }
}
