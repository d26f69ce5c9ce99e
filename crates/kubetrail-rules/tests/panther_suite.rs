//! The pack against every inline test of Panther's Kubernetes rules (native, GKE Cloud Audit Log and AKS
//! diagnostic envelopes, decoded as `kubetrail import` decodes them): how many of Panther's positives raise
//! an alert of low or above, and how many of its negatives raise one of medium or above. Every case where the pack
//! deliberately differs is listed below with its reason. `--nocapture` prints each case.

mod common;

use std::collections::BTreeSet;

use kubetrail_detect::Level;

/// Every case where the pack deliberately differs from Panther's label (line of the suite, why): a Panther
/// positive with no alert, or a Panther negative raising medium or above. The test fails when a case differs
/// that is not listed here, or a listed one no longer does.
const DIFFERS: &[(usize, &str)] = &[
    (
        3,
        "an anonymous GET /version: anonymous health and version probes never alert (every load balancer and client sends them); scanners are reported when they probe other paths (kt-api-scanner-probe)",
    ),
    (
        7,
        "an anonymous /healthz from a load balancer's health checker: a health probe",
    ),
    (
        15,
        "a service-account token used from a public address is reported at every stage: a stolen token is stolen whether or not the request completes",
    ),
    (
        16,
        "a stolen service-account token that is denied (403) is still stolen",
    ),
    (
        19,
        "a node's identity requesting a token for a pod's service account is the kubelet's work; a node's address cannot be told from an outsider's without the cloud's ranges",
    ),
    (20, "as line 19"),
    (
        21,
        "a Deployment Manager entry, not a Kubernetes audit event: kubetrail decodes the k8s.io service only",
    ),
    (22, "as line 21"),
    (
        26,
        "Panther's threat-intelligence enrichment (Tor exit nodes) is not in the event; kubetrail has no IP reputation feed",
    ),
    (28, "as line 21"),
    (
        41,
        "container-engine-robot@<project>.iam.gserviceaccount.com can be created by anyone in their own project and bound in a cluster; only GKE's service agent, service-<number>@container-engine-robot.iam.gserviceaccount.com, is the platform",
    ),
    (
        49,
        "an admission webhook changed (update) sends requests somewhere new just like a new one",
    ),
    (
        54,
        "GKE names the caller in principalEmail; authoritySelector is the authority the caller asked for, not who it is, so the event has no user",
    ),
    (
        74,
        "a RoleBinding to cluster-admin makes its subject admin of the namespace: still critical",
    ),
    (
        90,
        "a DaemonSet changed in kube-system runs new code on every node, like a new one",
    ),
    (104, "as line 26"),
    (105, "as line 26"),
    (106, "as line 26"),
    (
        116,
        "an exec into a kube-system pod by a kube-system service account that is not a control-plane controller is how a stolen token moves",
    ),
    (
        119,
        "a single refused request from a public address: people working remotely are refused what they lack every day; bursts of refusals raise kt-forbidden-burst-*, a service account's from outside kt-sa-token-external",
    ),
    (120, "as line 119"),
    (
        143,
        "kube-system:daemon is not a control-plane controller: its pod sharing the host's IPC namespace in kube-system is reported",
    ),
    (
        157,
        "a hostPath under /mnt is not a sensitive host path (the pack reports /, /etc, /proc, /var/lib/kubelet, runtime sockets...)",
    ),
    (
        178,
        "a role updated to grant nodes/proxy is as dangerous as one created with it",
    ),
    (
        186,
        "a role updated to grant pods/exec is as dangerous as one created with it",
    ),
    (
        195,
        "a role updated to grant wildcards is as dangerous as one created with them",
    ),
    (
        224,
        "listing the secrets of a production namespace reads all of them",
    ),
    (
        227,
        "kube-state-metrics listing every secret with a plain GET, not an informer's watch or list from a resourceVersion: what a stolen metrics token does",
    ),
    (
        239,
        "kube-controller-manager requesting a service-account token is the control plane's own work",
    ),
    (251, "as line 116"),
    (263, "as line 16"),
    (
        264,
        "a kube-system service-account token used from a public address: Azure nodes' public addresses cannot be told from an attacker's in the event",
    ),
    (265, "as line 264"),
    (
        268,
        "a service-account token from a public address behind a private first one: the first sourceIPs come from X-Forwarded-For, which the client writes, so a private one proves nothing (a forged header must not hide a stolen token)",
    ),
    (
        278,
        "the system:coredns ClusterRole changed by a person: widening it gives every CoreDNS pod more power",
    ),
];

#[test]
fn panther_suite() {
    let text = include_str!("panther/panther_k8s_rule_tests.jsonl");
    let (mut pos, mut pos_hit, mut neg, mut neg_loud) = (0, 0, 0, 0);
    let mut differs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let rule = case["rule_id"].as_str().unwrap();
        let name = case["test_name"].as_str().unwrap();
        let expected = case["expected_alert"].as_bool().unwrap();
        let raised = common::alerts(&common::stored(&case["event"].to_string()));
        let ids: BTreeSet<String> = raised
            .iter()
            .map(|a| format!("{}({})", a.rule.id, a.severity))
            .collect();
        let loud = raised.iter().any(|a| a.severity >= Level::Medium);
        // An alert is one an analyst sees: low or above.
        let alerted = raised.iter().any(|a| a.severity >= Level::Low);
        let verdict = if expected {
            pos += 1;
            pos_hit += usize::from(alerted);
            if alerted { "ok" } else { "MISSED" }
        } else {
            neg += 1;
            neg_loud += usize::from(loud);
            if loud { "LOUD" } else { "ok" }
        };
        let why = DIFFERS.iter().find(|(l, _)| *l == n + 1).map(|(_, w)| *w);
        if verdict != "ok" {
            differs.push(n + 1);
        }
        println!(
            "{verdict:<6} line {:>3} {rule} \"{name}\" expected={expected} -> {ids:?}{}",
            n + 1,
            why.map(|w| format!(" ({w})")).unwrap_or_default()
        );
    }
    println!(
        "positives alerting: {pos_hit}/{pos} ({:.1}%); negatives at medium or above: {neg_loud}/{neg} ({:.1}%)",
        100.0 * pos_hit as f64 / pos as f64,
        100.0 * neg_loud as f64 / neg as f64
    );
    let listed: Vec<usize> = DIFFERS.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        differs, listed,
        "every difference from Panther has a written reason, and only those differ"
    );
    assert!(pos_hit * 100 >= pos * 85, "{pos_hit}/{pos} positives alert");
    assert!(
        neg_loud * 100 <= neg * 15,
        "{neg_loud}/{neg} negatives loud"
    );
}
