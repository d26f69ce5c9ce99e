//! The RBAC objects of the simulated cluster at [`Config::start`], as
//! `kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A -o json` prints them.
//!
//! Kubernetes' bootstrap policy (its own testdata, embedded from `data/bootstrap-rbac.json`; see the README
//! there) plus the cluster's own: every binding and role the traffic's `authorization.k8s.io/reason`
//! annotations name, with the subjects its users match (a test keeps the two in step). Aggregated
//! ClusterRoles (`admin`, `edit`, `view`) carry the rules the aggregation controller gives them. Nothing a
//! scenario creates is there (RbacEscalation's `default-sa-admin`, the access grant's
//! [`crate::access_grant::BINDING`]): they do not exist yet at the start.

use serde_json::{Value, json};

use crate::Config;
use crate::access_grant as ag;
use crate::cluster::Cluster;
use crate::rng::Rand;
use crate::time::ts_secs;

const BOOTSTRAP: &str = include_str!("../data/bootstrap-rbac.json");
const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const DAY_US: i64 = 86_400_000_000;

/// The cluster's RBAC objects at `cfg.start` (a `v1` `List`, pretty-printed JSON). Depends on
/// `cfg.start`, `cfg.seed` and `cfg.nodes` only; uids, resourceVersions and creation times are those of a
/// cluster created months before the start.
pub fn rbac_snapshot(cfg: &Config) -> String {
    let start = cfg.start.as_microsecond();
    // The traffic's resourceVersion at the start: every object here was written before.
    let rv_start = Cluster::new(&mut Rand::new(cfg.seed, 0), cfg.nodes).rv;
    let mut rng = Rand::new(cfg.seed, 4);
    let created = start - rng.range(300, 700) as i64 * DAY_US;

    let bootstrap: Value =
        serde_json::from_str(BOOTSTRAP).expect("embedded bootstrap policy is JSON");
    let mut items: Vec<Value> = bootstrap["items"].as_array().cloned().unwrap_or_default();
    let n_bootstrap = items.len();
    items.extend(later_bootstrap());
    items.extend(cluster_objects());
    aggregate(&mut items);

    // Bootstrap objects are written in the apiserver's first seconds; the cluster's own over its life.
    let span_secs = ((start - DAY_US - created) / 1_000_000).max(1) as usize;
    for (i, item) in items.iter_mut().enumerate() {
        let (at, rv) = if i < n_bootstrap + 2 {
            let at = created + 20_000_000 + i as i64 * 40_000;
            (at, 60 + 2 * i as u64)
        } else {
            let at = created + 3_600_000_000 + rng.below(span_secs) as i64 * 1_000_000;
            let age = (at - created) as f64 / (start - created) as f64;
            (at, 1_000 + (age * rv_start as f64 * 0.9) as u64)
        };
        let meta = item["metadata"].as_object_mut().expect("metadata");
        meta.insert("uid".into(), rng.uuid().into());
        meta.insert("resourceVersion".into(), rv.to_string().into());
        meta.insert("creationTimestamp".into(), ts_secs(at).into());
    }

    let kind_order = |v: &Value| match v["kind"].as_str() {
        Some("ClusterRole") => 0,
        Some("ClusterRoleBinding") => 1,
        Some("Role") => 2,
        _ => 3,
    };
    let key = |v: &Value| {
        let m = &v["metadata"];
        (
            kind_order(v),
            m["namespace"].as_str().unwrap_or("").to_string(),
            m["name"].as_str().unwrap_or("").to_string(),
        )
    };
    items.sort_by_key(key);
    let list = json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    });
    serde_json::to_string_pretty(&list).expect("JSON") + "\n"
}

/// Fills each aggregated ClusterRole's rules as the clusterrole-aggregation controller does: the rules of
/// every ClusterRole its selectors match, in name order, each once.
fn aggregate(items: &mut [Value]) {
    fn rules_of(items: &[Value], i: usize, depth: usize) -> Vec<Value> {
        let role = &items[i];
        let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else {
            return role["rules"].as_array().cloned().unwrap_or_default();
        };
        let mut matches: Vec<(String, usize)> = items
            .iter()
            .enumerate()
            .filter(|&(j, other)| {
                j != i
                    && other["kind"] == "ClusterRole"
                    && selectors.iter().any(|s| {
                        s["matchLabels"].as_object().is_some_and(|want| {
                            want.iter()
                                .all(|(k, v)| other["metadata"]["labels"][k.as_str()] == *v)
                        })
                    })
            })
            .map(|(j, other)| (other["metadata"]["name"].as_str().unwrap_or("").into(), j))
            .collect();
        matches.sort();
        let mut rules: Vec<Value> = Vec::new();
        for (_, j) in matches {
            if depth > 8 {
                break;
            }
            for r in rules_of(items, j, depth + 1) {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
        rules
    }
    let filled: Vec<(usize, Vec<Value>)> = (0..items.len())
        .filter(|&i| items[i]["aggregationRule"].is_object())
        .map(|i| (i, rules_of(items, i, 0)))
        .collect();
    for (i, rules) in filled {
        items[i]["rules"] = Value::Array(rules);
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn named_rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resourceNames": names, "resources": resources, "verbs": verbs})
}

fn url_rule(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

/// Metadata of an object a Helm chart installed.
fn helm(name: &str, ns: &str, release: &str, release_ns: &str) -> Value {
    let mut m = json!({
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": release},
        "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": release_ns},
    });
    if !ns.is_empty() {
        m["namespace"] = ns.into();
    }
    m
}

fn plain(name: &str, ns: &str) -> Value {
    let mut m = json!({ "name": name });
    if !ns.is_empty() {
        m["namespace"] = ns.into();
    }
    m
}

fn cluster_role(metadata: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRole", "metadata": metadata, "rules": rules})
}

fn role(metadata: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": RBAC_V1, "kind": "Role", "metadata": metadata, "rules": rules})
}

/// A subject: `User`, `Group`, or `ServiceAccount` as `namespace/name`.
fn subject(kind: &str, name: &str) -> Value {
    match (kind, name.split_once('/')) {
        ("ServiceAccount", Some((ns, sa))) => {
            json!({"kind": "ServiceAccount", "name": sa, "namespace": ns})
        }
        _ => json!({"apiGroup": RBAC_GROUP, "kind": kind, "name": name}),
    }
}

fn binding(
    kind: &str,
    metadata: Value,
    role_kind: &str,
    role: &str,
    subjects: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": RBAC_V1,
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role},
        "subjects": subjects,
    })
}

/// Two bootstrap bindings newer than the stored testdata of `cluster-role-bindings.yaml` (Kubernetes 1.20
/// and 1.22 added them; a v1.30 cluster has them).
fn later_bootstrap() -> Vec<Value> {
    let meta = |name: &str| {
        json!({
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        })
    };
    vec![
        binding(
            "ClusterRoleBinding",
            meta("system:monitoring"),
            "ClusterRole",
            "system:monitoring",
            vec![subject("Group", "system:monitoring")],
        ),
        binding(
            "ClusterRoleBinding",
            meta("system:service-account-issuer-discovery"),
            "ClusterRole",
            "system:service-account-issuer-discovery",
            vec![subject("Group", "system:serviceaccounts")],
        ),
    ]
}

const GLW: &[&str] = &["get", "list", "watch"];
const LW: &[&str] = &["list", "watch"];
const CRUD: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// The operators' ClusterRoles, each bound by a ClusterRoleBinding of its name to the service account of its
/// name: (name = service account, namespace, Helm release, rules).
fn operators() -> Vec<(&'static str, &'static str, &'static str, Vec<Value>)> {
    let leases = rule(
        &["coordination.k8s.io"],
        &["leases"],
        &["get", "create", "update", "patch"],
    );
    let events = rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]);
    vec![
        (
            "coredns",
            "kube-system",
            "coredns",
            vec![
                rule(&[""], &["endpoints", "services", "pods", "namespaces"], LW),
                rule(&["discovery.k8s.io"], &["endpointslices"], LW),
            ],
        ),
        (
            "cert-manager",
            "cert-manager",
            "cert-manager",
            vec![
                rule(
                    &["cert-manager.io"],
                    &[
                        "certificates",
                        "certificates/status",
                        "certificaterequests",
                        "certificaterequests/status",
                        "issuers",
                        "issuers/status",
                        "clusterissuers",
                        "clusterissuers/status",
                    ],
                    CRUD,
                ),
                rule(
                    &["acme.cert-manager.io"],
                    &["orders", "orders/status", "challenges", "challenges/status"],
                    CRUD,
                ),
                rule(&[""], &["secrets"], CRUD),
                events.clone(),
                leases.clone(),
            ],
        ),
        (
            "cert-manager-cainjector",
            "cert-manager",
            "cert-manager",
            vec![
                rule(
                    &["admissionregistration.k8s.io"],
                    &[
                        "mutatingwebhookconfigurations",
                        "validatingwebhookconfigurations",
                    ],
                    &["get", "list", "watch", "update", "patch"],
                ),
                rule(
                    &["apiextensions.k8s.io"],
                    &["customresourcedefinitions"],
                    &["get", "list", "watch", "update", "patch"],
                ),
                rule(&[""], &["secrets"], GLW),
                events.clone(),
                leases.clone(),
            ],
        ),
        (
            "argocd-application-controller",
            "argocd",
            "argocd",
            vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
        ),
        (
            "argocd-server",
            "argocd",
            "argocd",
            vec![
                rule(
                    &["argoproj.io"],
                    &["applications", "applicationsets", "appprojects"],
                    CRUD,
                ),
                rule(&[""], &["events"], LW),
                rule(&[""], &["pods", "pods/log"], &["get"]),
            ],
        ),
        (
            "ingress-nginx",
            "ingress-nginx",
            "ingress-nginx",
            vec![
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "nodes",
                        "pods",
                        "secrets",
                        "namespaces",
                    ],
                    LW,
                ),
                rule(&[""], &["nodes"], &["get"]),
                rule(&[""], &["services"], GLW),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                    GLW,
                ),
                rule(&["networking.k8s.io"], &["ingresses/status"], &["update"]),
                rule(&["discovery.k8s.io"], &["endpointslices"], GLW),
                events.clone(),
                rule(&["coordination.k8s.io"], &["leases"], CRUD),
            ],
        ),
        (
            "prometheus",
            "monitoring",
            "kube-prometheus-stack",
            vec![
                rule(
                    &[""],
                    &["nodes", "nodes/metrics", "services", "endpoints", "pods"],
                    GLW,
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], GLW),
                rule(&["networking.k8s.io"], &["ingresses"], GLW),
                rule(&[""], &["configmaps"], &["get"]),
                rule(
                    &["monitoring.coreos.com"],
                    &["servicemonitors", "podmonitors", "prometheusrules"],
                    GLW,
                ),
                url_rule(&["/metrics", "/metrics/slis"], &["get"]),
            ],
        ),
        (
            "kube-state-metrics",
            "monitoring",
            "kube-prometheus-stack",
            vec![
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "secrets",
                        "nodes",
                        "pods",
                        "services",
                        "serviceaccounts",
                        "resourcequotas",
                        "replicationcontrollers",
                        "limitranges",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "namespaces",
                        "endpoints",
                    ],
                    LW,
                ),
                rule(
                    &["apps"],
                    &["statefulsets", "daemonsets", "deployments", "replicasets"],
                    LW,
                ),
                rule(&["batch"], &["cronjobs", "jobs"], LW),
                rule(&["autoscaling"], &["horizontalpodautoscalers"], LW),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                rule(&["policy"], &["poddisruptionbudgets"], LW),
                rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                    LW,
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], LW),
                rule(
                    &["storage.k8s.io"],
                    &["storageclasses", "volumeattachments"],
                    LW,
                ),
                rule(
                    &["admissionregistration.k8s.io"],
                    &[
                        "mutatingwebhookconfigurations",
                        "validatingwebhookconfigurations",
                    ],
                    LW,
                ),
                rule(
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingressclasses", "ingresses"],
                    LW,
                ),
                rule(&["coordination.k8s.io"], &["leases"], LW),
                rule(
                    &[RBAC_GROUP],
                    &[
                        "clusterrolebindings",
                        "clusterroles",
                        "rolebindings",
                        "roles",
                    ],
                    LW,
                ),
            ],
        ),
        (
            "metrics-server",
            "kube-system",
            "metrics-server",
            vec![
                rule(&[""], &["nodes/metrics"], &["get"]),
                rule(&[""], &["pods", "nodes"], GLW),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
    ]
}

/// The cluster's own roles and bindings (besides the bootstrap policy).
fn cluster_objects() -> Vec<Value> {
    let crb = |meta: Value, role: &str, subjects: Vec<Value>| {
        binding("ClusterRoleBinding", meta, "ClusterRole", role, subjects)
    };
    let mut out = Vec::new();
    for (sa, ns, release, rules) in operators() {
        out.push(cluster_role(helm(sa, "", release, ns), rules));
        out.push(crb(
            helm(sa, "", release, ns),
            sa,
            vec![subject("ServiceAccount", &format!("{ns}/{sa}"))],
        ));
    }

    // People: OIDC groups, and the EKS administrators' IAM role mapped to a group.
    for (name, role, group) in [
        ("oidc-devs-view", "view", "oidc:devs"),
        ("platform-admins", "cluster-admin", "oidc:platform-admins"),
        ("sre-edit", "edit", "oidc:sre"),
        ("eks-platform-admins", "cluster-admin", ag::ADMIN_GROUP),
    ] {
        out.push(crb(plain(name, ""), role, vec![subject("Group", group)]));
    }
    // SREs list nodes: a rule aggregated into `edit` (and so `admin`).
    let mut meta = plain("sre-nodes-view", "");
    meta["labels"] = json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"});
    out.push(cluster_role(meta, vec![rule(&[""], &["nodes"], GLW)]));
    for ns in ["staging", "default"] {
        out.push(binding(
            "RoleBinding",
            plain("devs-edit", ns),
            "ClusterRole",
            "edit",
            vec![subject("Group", "oidc:devs")],
        ));
    }
    out.push(binding(
        "RoleBinding",
        plain("payments-oncall", "prod-payments"),
        "ClusterRole",
        "edit",
        vec![subject("Group", "oidc:payments")],
    ));

    // Leftovers and shortcuts the scenarios exploit.
    out.push(cluster_role(
        plain("secret-reader", ""),
        vec![rule(&[""], &["secrets"], GLW)],
    ));
    out.push(crb(
        plain("web-frontend-debug", ""),
        "secret-reader",
        vec![subject("ServiceAccount", "staging/web-frontend")],
    ));
    out.push(binding(
        "RoleBinding",
        plain("legacy-anon-read", "default"),
        "ClusterRole",
        "view",
        vec![subject("User", "system:anonymous")],
    ));
    out.push(cluster_role(
        helm(ag::METADATA_ONLY_ROLE, "", "grafana", "monitoring"),
        vec![
            rule(&[""], &["nodes", "nodes/metrics", "nodes/stats"], GLW),
            rule(&[""], &["nodes/proxy"], &["get", "create"]),
        ],
    ));
    out.push(crb(
        helm("grafana-node-access", "", "grafana", "monitoring"),
        ag::METADATA_ONLY_ROLE,
        vec![subject("ServiceAccount", "monitoring/grafana")],
    ));

    // Workloads, CI and kube-proxy.
    out.push(role(
        plain("fraud-scorer", "prod-payments"),
        vec![named_rule(
            &[""],
            &["configmaps"],
            &["fraud-scorer-config"],
            &["get", "watch"],
        )],
    ));
    out.push(binding(
        "RoleBinding",
        plain("fraud-scorer", "prod-payments"),
        "Role",
        "fraud-scorer",
        vec![subject("ServiceAccount", "prod-payments/fraud-scorer")],
    ));
    out.push(role(
        helm("gitlab-runner", "ci", "gitlab-runner", "ci"),
        vec![
            rule(&[""], &["pods"], CRUD),
            rule(
                &[""],
                &["pods/attach", "pods/exec"],
                &["create", "get", "patch", "delete"],
            ),
            rule(&[""], &["pods/log"], &["get", "list"]),
            rule(
                &[""],
                &["secrets", "configmaps"],
                &["create", "get", "update", "patch", "delete"],
            ),
            rule(&[""], &["serviceaccounts"], &["get"]),
            rule(&[""], &["services"], &["create", "get"]),
        ],
    ));
    out.push(binding(
        "RoleBinding",
        helm("gitlab-runner", "ci", "gitlab-runner", "ci"),
        "Role",
        "gitlab-runner",
        vec![subject("ServiceAccount", "ci/gitlab-runner")],
    ));
    out.push(cluster_role(
        plain("ci-deployer", ""),
        vec![
            rule(
                &["apps"],
                &["deployments"],
                &["get", "list", "watch", "create", "update", "patch"],
            ),
            rule(&["apps"], &["replicasets"], GLW),
            rule(&[""], &["pods"], GLW),
        ],
    ));
    out.push(crb(
        plain("ci-deployer", ""),
        "ci-deployer",
        vec![subject("ServiceAccount", "ci/deployer")],
    ));
    out.push(crb(
        plain("kubeadm:node-proxier", ""),
        "system:node-proxier",
        vec![subject("ServiceAccount", "kube-system/kube-proxy")],
    ));
    out
}
