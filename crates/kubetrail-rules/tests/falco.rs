//! The pack against Falco's real k8s_audit trace files, as the collector stores them (redacted): every file
//! where Falco's default rules expect a security detection must raise the built-in rule of the same use
//! case; every other file (Falco's "K8s <Object> Created/Deleted" activity rules, its site allow lists, and
//! the files where Falco expects nothing) may raise nothing of medium or above, for the reason given.

mod common;

use std::collections::BTreeSet;

use kubetrail_detect::Level;

/// File, the Falco rule upstream expects, and the built-in rules that must alert.
const SECURITY: &[(&str, &str, &[&str])] = &[
    (
        "anonymous_creates_namespace_foo.json",
        "Anonymous Request Allowed",
        &["kt-anonymous-allowed"],
    ),
    (
        "attach_cluster_admin_role.json",
        "Attach to cluster-admin Role",
        &["kt-rbac-bind-cluster-admin"],
    ),
    ("attach_pod.json", "Attach/Exec Pod", &["kt-exec-other"]),
    ("exec_pod.json", "Attach/Exec Pod", &["kt-exec-other"]),
    (
        "create_cluster_role_pod_exec.json",
        "ClusterRole With Pod Exec Created",
        &["kt-rbac-role-exec-proxy-token"],
    ),
    (
        "create_cluster_role_wildcard_resources.json",
        "ClusterRole With Wildcard Created",
        &["kt-rbac-role-dangerous"],
    ),
    (
        "create_cluster_role_wildcard_verbs.json",
        "ClusterRole With Wildcard Created",
        &["kt-rbac-role-dangerous"],
    ),
    (
        "create_cluster_role_write_privileges.json",
        "ClusterRole With Write Privileges Created",
        &["kt-rbac-role-write"],
    ),
    (
        "delete_cluster_role_kube_aggregator.json",
        "System ClusterRole Modified/Deleted",
        &["kt-rbac-system-role-changed"],
    ),
    (
        "modify_cluster_role_node_problem_detector.json",
        "System ClusterRole Modified/Deleted",
        &["kt-rbac-system-role-changed"],
    ),
    // Pods that replicaset-controller creates from a Deployment whose write is not in the file: the pack
    // reports them as the Deployment's, once per template (low: who wrote it is not in the trail).
    (
        "create_nginx_pod_privileged.json",
        "Create Privileged Pod",
        &["kt-pod-privileged"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "Create Privileged Pod",
        &["kt-pod-privileged"],
    ),
    (
        "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
        "Create Privileged Pod",
        &["kt-pod-privileged"],
    ),
    (
        "create_nginx_pod_hostnetwork.json",
        "Create HostNetwork Pod",
        &["kt-pod-host-network"],
    ),
    (
        "create_nginx_pod_sensitive_mount.json",
        "Create Sensitive Mount Pod",
        &["kt-pod-sensitive-hostpath"],
    ),
    (
        "create_nginx_pod_sensitive_mount_2nd_container.json",
        "Create Sensitive Mount Pod",
        &["kt-pod-sensitive-hostpath"],
    ),
    (
        "create_pod_kube_system_namespace.json",
        "Pod Created in Kube Namespace",
        &["kt-pod-system-namespace"],
    ),
    (
        "create_pod_kube_public_namespace.json",
        "Pod Created in Kube Namespace",
        &["kt-pod-system-namespace"],
    ),
    (
        "create_serviceaccount_kube_system_namespace.json",
        "Service Account Created in Kube Namespace",
        &["kt-sa-system-namespace"],
    ),
    (
        "create_serviceaccount_kube_public_namespace.json",
        "Service Account Created in Kube Namespace",
        &["kt-sa-system-namespace"],
    ),
    (
        "create_configmap_sensitive_values.json",
        "Create/Modify Configmap With Private Credentials",
        &["kt-configmap-credentials"],
    ),
    (
        "create_nginx_service_nodeport.json",
        "Create NodePort Service",
        &["kt-service-exposed"],
    ),
];

/// Files where Falco expects no security detection, and why the pack agrees (nothing of medium or above).
const QUIET: &[(&str, &str)] = &[
    ("create_nginx_pod_unprivileged.json", "an ordinary pod"),
    ("create_nginx_pod_nohostnetwork.json", "an ordinary pod"),
    (
        "create_nginx_pod_unsensitive_mount.json",
        "a hostPath outside the sensitive list",
    ),
    (
        "create_configmap_no_sensitive_values.json",
        "no credential-like value",
    ),
    (
        "create_nginx_service_nonodeport.json",
        "a ClusterIP service",
    ),
    (
        "create_kube_system_secret.json",
        "the control plane's own secret",
    ),
    (
        "create_service_account_token_secret.json",
        "the control plane's token secret",
    ),
    ("fal_01_003.json", "not an audit event"),
    // Falco's site allow lists (`allowed_k8s_users`, `allowed_namespaces`) are a site's policy, not a
    // default: the pack raises nothing for a namespace created by an ordinary user.
    (
        "some-user_creates_namespace_foo.json",
        "Falco's allow lists are site policy",
    ),
    (
        "minikube_creates_namespace_foo.json",
        "Falco's allow lists are site policy",
    ),
];

/// Falco's informational activity rules ("K8s <Object> Created/Deleted"): the pack does not alert on
/// activity (everything is in the store for `kubetrail who` and `timeline`), so nothing of medium or above.
const ACTIVITY: &[&str] = &[
    "create_clusterrole.json",
    "create_clusterrolebinding.json",
    "create_configmap.json",
    "create_deployment.json",
    "create_secret.json",
    "create_service.json",
    "create_serviceaccount.json",
    "delete_clusterrole.json",
    "delete_clusterrolebinding.json",
    "delete_configmap.json",
    "delete_deployment.json",
    "delete_namespace_foo.json",
    "delete_secret.json",
    "delete_service.json",
    "delete_serviceaccount.json",
];

fn raised(file: &str) -> Vec<kubetrail_detect::Alert> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/falco");
    let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
    let events: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(common::stored)
        .collect();
    common::alerts(&events)
}

#[test]
fn falco_trace_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/falco");
    let mut files: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let mut caught = 0;
    let mut missed = Vec::new();
    for (file, falco, want) in SECURITY {
        assert!(files.remove(*file), "{file} listed twice or missing");
        let alerts = raised(file);
        let ids: BTreeSet<&str> = alerts.iter().map(|a| a.rule.id.as_str()).collect();
        println!("{file}: Falco {falco:?} -> {ids:?}");
        if want.iter().all(|id| ids.contains(id)) {
            caught += 1;
        } else {
            missed.push(format!("{file}: want {want:?}, raised {ids:?}"));
        }
    }
    println!("security traces alerting: {caught}/{}", SECURITY.len());
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
    for (file, why) in QUIET
        .iter()
        .copied()
        .chain(ACTIVITY.iter().map(|f| (*f, "activity only")))
    {
        assert!(files.remove(file), "{file} listed twice or missing");
        let loud: Vec<String> = raised(file)
            .iter()
            .filter(|a| a.severity >= Level::Medium)
            .map(|a| format!("{} {}", a.rule.id, a.severity))
            .collect();
        println!("{file}: {why} -> {loud:?}");
        assert!(loud.is_empty(), "{file} ({why}): {loud:?}");
    }
    assert!(files.is_empty(), "files without an expectation: {files:?}");
}

/// The rollout case the issue names: one Deployment's replicas, each created by replicaset-controller from
/// a privileged template logged without its body, give one alert, in the name of who wrote the Deployment.
#[test]
fn a_privileged_deployment_written_at_metadata_is_one_alert_in_the_writers_name() {
    let pod = include_str!("falco/create_nginx_pod_privileged.json").trim();
    let v: serde_json::Value = serde_json::from_str(pod).unwrap();
    let rs = v["requestObject"]["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let deployment = rs.rsplit_once('-').unwrap().0.to_string();
    let write = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "w1",
        "stage": "ResponseComplete", "verb": "create",
        "requestURI": "/apis/apps/v1/namespaces/default/deployments",
        "user": {"username": "mallory@example.com", "groups": ["system:authenticated"]},
        "objectRef": {"resource": "deployments", "namespace": "default", "name": deployment, "apiGroup": "apps", "apiVersion": "v1"},
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": "2018-10-25T13:58:00.000000Z",
    });
    let mut events = vec![write.to_string()];
    for i in 0..3 {
        let mut p = v.clone();
        p["auditID"] = format!("p{i}").into();
        events.push(p.to_string());
    }
    let alerts = common::alerts(&events);
    let privileged: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule.id == "kt-pod-privileged")
        .collect();
    assert_eq!(privileged.len(), 1, "{privileged:?}");
    let a = privileged[0];
    assert_eq!(a.actor.username, "mallory@example.com");
    assert_eq!(a.severity, Level::High);
    let owner = a.owner.as_ref().unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", deployment.as_str())
    );
    assert!(
        a.summary.contains("mallory@example.com wrote Deployment"),
        "{}",
        a.summary
    );

    // Without the write in the trail: still raised, once, low, in the controller's name.
    let alerts = common::alerts(&events[1..]);
    let privileged: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule.id == "kt-pod-privileged")
        .collect();
    assert_eq!(privileged.len(), 1);
    assert_eq!(privileged[0].severity, Level::Low);
    assert!(
        privileged[0]
            .actor
            .username
            .ends_with(":replicaset-controller")
    );
}
