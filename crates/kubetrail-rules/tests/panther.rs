//! Agreement with Panther's labelled native events, per use case: how often the pack's rules for a use case
//! fire exactly where Panther's rule for it expects an alert. Run with `--nocapture` for the table.

use std::collections::BTreeSet;

use kubetrail_detect::{Config, Engine, RuleSet};

/// Panther rule → the built-in rules of the same use case.
const USE_CASES: &[(&str, &[&str])] = &[
    (
        "Amazon.EKS.AnonymousAPIAccess",
        &[
            "kt-anonymous-allowed",
            "kt-anonymous-public",
            "kt-api-scanner-probe",
        ],
    ),
    (
        "Kubernetes.API.AnonymousAccess",
        &["kt-anonymous-allowed", "kt-anonymous-public"],
    ),
    (
        "Amazon.EKS.Audit.SystemNamespaceFromPublicIP",
        &["kt-sa-token-external"],
    ),
    (
        "Kubernetes.System.Principal.PublicIP",
        &["kt-sa-token-external"],
    ),
    (
        "Kubernetes.AdmissionController.Created",
        &["kt-webhook-config-change"],
    ),
    (
        "Kubernetes.BulkSecretAccess",
        &[
            "kt-secret-read-prod",
            "kt-secret-list-cluster",
            "kt-secret-denied",
        ],
    ),
    (
        "Kubernetes.Secrets.DumpAllNamespaces",
        &["kt-secret-list-cluster"],
    ),
    (
        "Kubernetes.ClusterRoleBinding.Privileged",
        &[
            "kt-rbac-bind-cluster-admin",
            "kt-rbac-bind-admin-edit",
            "kt-rbac-bind-system-role",
        ],
    ),
    (
        "Kubernetes.CronJob.CreatedOrModified",
        &["kt-cronjob-system", "kt-cronjob-change"],
    ),
    (
        "Kubernetes.DaemonSet.Created",
        &["kt-daemonset-system", "kt-daemonset-change"],
    ),
    (
        "Kubernetes.Pod.Dangerous.Capabilities",
        &["kt-pod-dangerous-capabilities"],
    ),
    (
        "Kubernetes.Pod.Exec",
        &["kt-exec-prod-system", "kt-exec-other"],
    ),
    (
        "Kubernetes.Pod.StealServiceAccountToken",
        &["kt-exec-prod-system", "kt-exec-other"],
    ),
    ("Kubernetes.Pod.Host.IPC", &["kt-pod-host-pid-ipc"]),
    ("Kubernetes.Pod.Host.PID", &["kt-pod-host-pid-ipc"]),
    ("Kubernetes.Pod.Host.Network", &["kt-pod-host-network"]),
    (
        "Kubernetes.Pod.HostPath.Volume",
        &["kt-pod-sensitive-hostpath"],
    ),
    (
        "Kubernetes.Pod.Privileged.Created",
        &["kt-pod-privileged", "kt-pod-run-as-root"],
    ),
    (
        "Kubernetes.Pod.SystemNamespace",
        &["kt-pod-system-namespace"],
    ),
    (
        "Kubernetes.Role.NodeProxyPermissions",
        &["kt-rbac-role-exec-proxy-token"],
    ),
    (
        "Kubernetes.Role.PodExec",
        &["kt-rbac-role-exec-proxy-token"],
    ),
    ("Kubernetes.Role.Wildcard", &["kt-rbac-role-dangerous"]),
    (
        "Kubernetes.ServiceAccount.TokenCreated",
        &["kt-sa-token-request", "kt-sa-token-system"],
    ),
    (
        "Kubernetes.SystemRole.Modified",
        &["kt-rbac-system-role-changed"],
    ),
    (
        "Kubernetes.ClientCertificate.Created",
        &["kt-csr-client-certificate"],
    ),
    ("Kubernetes.Ingress.NoTLS", &["kt-ingress-no-tls"]),
    (
        "Kubernetes.API.Multiple403.PublicIP",
        &[
            "kt-forbidden-burst-ip",
            "kt-forbidden-burst-user",
            "kt-sa-token-external",
        ],
    ),
    ("Kubernetes.Role.WritePermissions", &["kt-rbac-role-write"]),
    ("Kubernetes.Secret.AccessDenied", &["kt-secret-denied"]),
    (
        "Kubernetes.Service.NodePort.Deployed",
        &["kt-service-exposed"],
    ),
];

#[test]
fn agreement_with_panther_per_use_case() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/panther");
    let events = std::fs::read_to_string(format!("{dir}/native_k8s_audit_events.jsonl")).unwrap();
    let events: Vec<&str> = events.lines().collect();
    let manifest = std::fs::read_to_string(format!("{dir}/native_manifest.tsv")).unwrap();
    let mut set = RuleSet::new();
    for f in kubetrail_rules::builtin() {
        set.add_file(f.name, f.yaml).unwrap();
    }
    let engine = Engine::new(&set, Config::default()).unwrap();
    let (mut agree_all, mut total_all) = (0, 0);
    println!(
        "{:<46} {:>5} {:>5} {:>5} {:>5}  agreement",
        "Panther rule", "TP", "FN", "FP", "TN"
    );
    for (panther, ours) in USE_CASES {
        let (mut tp, mut fn_, mut fp, mut tn) = (0, 0, 0, 0);
        let mut disagreements = Vec::new();
        for row in manifest.lines().skip(1) {
            let cols: Vec<&str> = row.split('\t').collect();
            if cols.get(1) != Some(panther) {
                continue;
            }
            let line: usize = cols[0].parse().unwrap();
            let expected = cols[3] == "True";
            let fired: BTreeSet<String> = engine
                .matching_rules(events[line - 1])
                .unwrap()
                .into_iter()
                .map(|m| m.id.clone())
                .collect();
            let ours_fired = ours.iter().any(|id| fired.contains(*id));
            match (expected, ours_fired) {
                (true, true) => tp += 1,
                (true, false) => fn_ += 1,
                (false, true) => fp += 1,
                (false, false) => tn += 1,
            }
            if expected != ours_fired {
                disagreements.push(format!("line {line} \"{}\"", cols[2]));
            }
        }
        let n = tp + fn_ + fp + tn;
        assert!(n > 0, "{panther}: no events");
        agree_all += tp + tn;
        total_all += n;
        println!(
            "{panther:<46} {tp:>5} {fn_:>5} {fp:>5} {tn:>5}  {:>3.0}%{}",
            100.0 * (tp + tn) as f64 / n as f64,
            if disagreements.is_empty() {
                String::new()
            } else {
                format!("  differs on {}", disagreements.join(", "))
            }
        );
    }
    let rate = agree_all as f64 / total_all as f64;
    println!(
        "overall agreement: {agree_all}/{total_all} ({:.0}%)",
        100.0 * rate
    );
    assert!(rate >= 0.75, "{rate}");
}
