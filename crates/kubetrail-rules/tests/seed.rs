//! The issue's seed breach: a secret read in production by an unknown service account, a ClusterRoleBinding
//! to cluster-admin, a privileged pod mounting the host, and an exec into it, each raised with its severity
//! and a runbook.

use kubetrail_detect::{Config, Engine, Level, RuleSet};

const BREACH: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"b1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/payments-db","verb":"get","user":{"username":"system:serviceaccount:tools:report-runner","groups":["system:serviceaccounts","system:serviceaccounts:tools","system:authenticated"]},"sourceIPs":["10.42.3.17"],"userAgent":"python-requests/2.31.0","objectRef":{"resource":"secrets","namespace":"prod","name":"payments-db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-25T02:00:00.000000Z","stageTimestamp":"2026-11-25T02:00:00.004000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"tools-read\" of ClusterRole \"view-secrets\" to ServiceAccount \"report-runner/tools\""}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"b2","stage":"ResponseComplete","requestURI":"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings","verb":"create","user":{"username":"system:serviceaccount:tools:report-runner","groups":["system:serviceaccounts","system:serviceaccounts:tools","system:authenticated"]},"sourceIPs":["10.42.3.17"],"userAgent":"python-requests/2.31.0","objectRef":{"resource":"clusterrolebindings","name":"report-runner-admin","apiGroup":"rbac.authorization.k8s.io","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"report-runner-admin"},"subjects":[{"kind":"ServiceAccount","name":"report-runner","namespace":"tools"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"}},"requestReceivedTimestamp":"2026-11-25T02:01:00.000000Z","stageTimestamp":"2026-11-25T02:01:00.006000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"b3","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/tools/pods","verb":"create","user":{"username":"system:serviceaccount:tools:report-runner","groups":["system:serviceaccounts","system:serviceaccounts:tools","system:authenticated"]},"sourceIPs":["10.42.3.17"],"userAgent":"python-requests/2.31.0","objectRef":{"resource":"pods","namespace":"tools","name":"debug-host","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"debug-host","namespace":"tools"},"spec":{"containers":[{"name":"sh","image":"docker.io/library/alpine:3.19","command":["sleep","infinity"],"securityContext":{"privileged":true},"volumeMounts":[{"name":"host","mountPath":"/host"}]}],"volumes":[{"name":"host","hostPath":{"path":"/"}}]}},"requestReceivedTimestamp":"2026-11-25T02:02:00.000000Z","stageTimestamp":"2026-11-25T02:02:00.008000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"b4","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/tools/pods/debug-host/exec?command=chroot&command=%2Fhost&command=sh&container=sh&stdin=true&stdout=true&tty=true","verb":"create","user":{"username":"system:serviceaccount:tools:report-runner","groups":["system:serviceaccounts","system:serviceaccounts:tools","system:authenticated"]},"sourceIPs":["10.42.3.17"],"userAgent":"python-requests/2.31.0","objectRef":{"resource":"pods","namespace":"tools","name":"debug-host","subresource":"exec","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2026-11-25T02:03:00.000000Z","stageTimestamp":"2026-11-25T02:03:00.300000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;

#[test]
fn the_seed_breach_raises_each_step() {
    let mut set = RuleSet::new();
    for f in kubetrail_rules::builtin() {
        set.add_file(f.name, f.yaml).unwrap();
    }
    let mut e = Engine::new(&set, Config::default()).unwrap();
    let mut alerts = Vec::new();
    for l in BREACH.lines() {
        e.process(l, &mut alerts).unwrap();
    }
    e.flush(&mut alerts);
    let got: Vec<(String, Level, String)> = alerts
        .iter()
        .filter(|a| !a.update)
        .map(|a| (a.rule.id.clone(), a.severity, a.audit_ids.join(",")))
        .collect();
    for (id, level, audit) in [
        ("kt-secret-read-prod", Level::High, "b1"),
        ("kt-rbac-bind-cluster-admin", Level::Critical, "b2"),
        ("kt-pod-privileged", Level::High, "b3"),
        ("kt-pod-sensitive-hostpath", Level::High, "b3"),
        ("kt-exec-other", Level::Low, "b4"),
    ] {
        assert!(
            got.contains(&(id.to_string(), level, audit.to_string())),
            "{id} {level} on {audit}: {got:?}"
        );
        let runbook = set.get(id).unwrap().meta().extra_str("runbook").unwrap();
        assert!(runbook.contains("kubetrail "), "{id}");
    }
    // The host pod, then the exec into it; the grant, then the pod: by the same identity within minutes.
    assert!(
        got.iter()
            .any(|(id, l, _)| id == "kt-host-pod-then-exec" && *l == Level::Critical),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(id, l, _)| id == "kt-rbac-then-workload" && *l == Level::High),
        "{got:?}"
    );
}
