//! lint, generate and simulate, driven as their users drive them.

use kubetrail_model::{Event, Level};
use kubetrail_policy::{GenerateOptions, Grain, Severity, Simulator, generate, lint, load};

fn lint_codes(yaml: &str) -> Vec<(Severity, &'static str, Option<usize>)> {
    lint(&load(yaml))
        .into_iter()
        .map(|f| (f.severity, f.code, f.rule))
        .collect()
}

const HEADER: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";

#[test]
fn generated_policy_is_accepted_and_lints_clean() {
    for opts in [
        GenerateOptions::default(),
        GenerateOptions {
            production_namespaces: vec!["prod".into(), "payments".into()],
            noisy_users: vec!["system:serviceaccount:argocd:argocd-application-controller".into()],
            pod_bodies: true,
        },
    ] {
        let yaml = generate(&opts);
        let loaded = load(&yaml);
        assert!(
            loaded.policy.is_some(),
            "kube-apiserver would refuse: {:?}",
            loaded.diagnostics
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let findings = lint(&loaded);
        assert!(
            findings.is_empty(),
            "generated policy has findings: {findings:#?}"
        );
    }
}

#[test]
fn generated_policy_without_pod_bodies_warns_about_the_blind_spot() {
    let yaml = generate(&GenerateOptions {
        pod_bodies: false,
        ..GenerateOptions::default()
    });
    let codes = lint_codes(&yaml);
    assert!(
        codes
            .iter()
            .any(|(s, c, _)| *s == Severity::Warning && *c == "pod-spec-not-logged"),
        "{codes:?}"
    );
    assert!(
        codes.iter().all(|(s, _, _)| *s != Severity::Error),
        "{codes:?}"
    );
}

#[test]
fn secrets_at_request_response_is_an_error_with_a_fix() {
    // The seed's dangerous policy: everything, secrets included, at RequestResponse.
    let yaml = format!(
        "{HEADER}rules:\n- level: Metadata\n  resources:\n  - group: \"\"\n    resources: [\"pods\"]\n- level: RequestResponse\n"
    );
    let findings = lint(&load(&yaml));
    let f = findings
        .iter()
        .find(|f| f.code == "sensitive-values-logged" && f.message.starts_with("secret"))
        .expect("secrets at RequestResponse must be reported");
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.rule, Some(1));
    assert_eq!(f.line, Some(8));
    assert!(
        f.fix.contains("level: Metadata") && f.fix.contains("secrets") && f.fix.contains("rule 1"),
        "{}",
        f.fix
    );
}

#[test]
fn secrets_behind_an_earlier_metadata_rule_are_not_reported() {
    let yaml = format!(
        "{HEADER}omitStages: [RequestReceived]\nrules:\n- level: Metadata\n  resources:\n  - group: \"\"\n    resources: [secrets, configmaps, serviceaccounts/token]\n  - group: authentication.k8s.io\n    resources: [tokenreviews]\n- level: RequestResponse\n"
    );
    let codes = lint_codes(&yaml);
    assert!(
        !codes
            .iter()
            .any(|(_, c, _)| *c == "sensitive-values-logged"),
        "{codes:?}"
    );
}

#[test]
fn secret_writes_at_request_leak_values() {
    let yaml = format!(
        "{HEADER}rules:\n- level: Request\n  resources:\n  - group: \"\"\n    resources: [secrets]\n- level: Metadata\n"
    );
    let findings = lint(&load(&yaml));
    assert!(
        findings.iter().any(|f| f.code == "sensitive-values-logged"
            && f.message.contains("secret creates")
            && f.message.contains("request body")),
        "{findings:#?}"
    );
}

#[test]
fn misindented_verbs_are_an_error() {
    // kube-apiserver drops `verbs` under `resources`: the rule silences every verb on leases.
    let yaml = format!(
        "{HEADER}rules:\n- level: None\n  resources:\n  - group: coordination.k8s.io\n    resources: [leases]\n    verbs: [watch, get, list]\n- level: Metadata\n"
    );
    let findings = lint(&load(&yaml));
    let f = findings
        .iter()
        .find(|f| f.code == "ignored-field")
        .expect("dropped field reported");
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.line, Some(8));
    assert_eq!(f.rule, Some(0));
}

#[test]
fn high_value_requests_falling_to_none_are_errors() {
    let yaml = format!(
        "{HEADER}rules:\n- level: None\n  resources:\n  - group: \"\"\n    resources: [secrets]\n- level: Metadata\n  verbs: [get, list, watch]\n"
    );
    let findings = lint(&load(&yaml));
    let secrets = findings
        .iter()
        .find(|f| f.code == "high-value-unaudited" && f.message.contains("`secrets`"))
        .unwrap();
    assert_eq!(
        (secrets.severity, secrets.rule, secrets.line),
        (Severity::Error, Some(0), Some(4))
    );
    // Writes match no rule at all: the default None.
    assert!(
        findings.iter().any(|f| f.code == "high-value-unaudited"
            && f.rule.is_none()
            && f.message.contains("clusterrolebindings")),
        "{findings:#?}"
    );
}

#[test]
fn pod_creates_at_metadata_warn() {
    let yaml = format!("{HEADER}omitStages: [RequestReceived]\nrules:\n- level: Metadata\n");
    let codes = lint_codes(&yaml);
    assert!(
        codes.contains(&(Severity::Warning, "pod-spec-not-logged", Some(0))),
        "{codes:?}"
    );
    assert!(
        codes.contains(&(Severity::Warning, "controller-loops-logged", Some(0))),
        "{codes:?}"
    );
    assert!(
        codes.contains(&(Severity::Warning, "health-probes-logged", Some(0))),
        "{codes:?}"
    );
    assert!(
        !codes.iter().any(|(_, c, _)| *c == "request-received-kept"),
        "{codes:?}"
    );
}

#[test]
fn invalid_policy_is_an_error() {
    let codes = lint_codes(&format!("{HEADER}rules:\n- level: Everything\n"));
    assert_eq!(codes, vec![(Severity::Error, "invalid-policy", Some(0))]);
}

fn event(user: &str, verb: &str, resource: &str, ts: &str, body: bool) -> String {
    let body = if body {
        r#","requestObject":{"kind":"Pod","spec":{"containers":[{"name":"a","image":"nginx"}]}}"#
    } else {
        ""
    };
    format!(
        r#"{{"level":"Request","auditID":"{user}-{verb}-{ts}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/{resource}","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"objectRef":{{"resource":"{resource}","namespace":"default","apiVersion":"v1"}},"requestReceivedTimestamp":"{ts}"{body}}}"#
    )
}

#[test]
fn simulate_counts_rules_noise_and_volume() {
    let policy = load(&format!("{HEADER}rules:\n- level: None\n  verbs: [watch]\n- level: Metadata\n  resources:\n  - group: \"\"\n    resources: [pods]\n")).policy.unwrap();
    let mut lines = Vec::new();
    for i in 0..8 {
        lines.push(event(
            "system:kube-controller-manager",
            "list",
            "endpoints",
            &format!("2026-01-01T00:00:0{i}Z"),
            false,
        ));
    }
    lines.push(event(
        "alice",
        "create",
        "pods",
        "2026-01-01T00:00:08Z",
        true,
    ));
    lines.push(event(
        "alice",
        "watch",
        "pods",
        "2026-01-01T00:00:09Z",
        false,
    ));
    let mut sim = Simulator::new(&policy, None);
    let mut kept = Vec::new();
    for l in &lines {
        let ev = Event::parse(l).unwrap();
        kept.push(sim.observe(&ev, l.len() as u64).keeps(ev.stage));
    }
    let r = sim.report();
    assert_eq!(
        kept,
        [
            false, false, false, false, false, false, false, false, true, false
        ]
    );
    assert_eq!((r.events_in, r.events_kept), (10, 1));
    assert_eq!(
        r.bytes_in,
        lines.iter().map(|l| l.len() as u64).sum::<u64>()
    );
    // Metadata drops the request body of the pod create.
    assert!(
        r.bytes_kept < lines[8].len() as u64 && r.bytes_kept > 100,
        "{}",
        r.bytes_kept
    );
    assert_eq!(r.span_seconds, Some(9.0));
    let per_day = r.bytes_kept as f64 / 9.0 * 86_400.0 / 1e9;
    assert!((r.gb_per_day.unwrap() - per_day).abs() < 1e-12);
    assert_eq!(
        r.rules
            .iter()
            .map(|v| (v.index, v.events))
            .collect::<Vec<_>>(),
        [(Some(0), 1), (Some(1), 1), (None, 8)]
    );
    // The only kept event is 100% of the kept volume: every grain flags it.
    let finest = r
        .noisy
        .iter()
        .find(|n| n.grain == Grain::UserVerbResource)
        .unwrap();
    assert_eq!(finest.user.as_deref(), Some("alice"));
    assert_eq!(finest.resource.as_deref(), Some("pods"));
    assert!(finest.suggestion.contains("level: None") && finest.suggestion.contains("\"alice\""));
}

#[test]
fn against_reports_level_changes() {
    let a = load(&format!("{HEADER}rules:\n- level: RequestResponse\n"))
        .policy
        .unwrap();
    let b = load(&format!("{HEADER}rules:\n- level: None\n  users: [system:kube-controller-manager]\n- level: Metadata\n")).policy.unwrap();
    let lines = [
        event(
            "system:kube-controller-manager",
            "list",
            "endpoints",
            "2026-01-01T00:00:00Z",
            false,
        ),
        event("alice", "create", "pods", "2026-01-01T00:00:01Z", true),
    ];
    let mut sim = Simulator::new(&a, Some(&b));
    for l in &lines {
        sim.observe(&Event::parse(l).unwrap(), l.len() as u64);
    }
    let c = sim.report().against.unwrap();
    assert_eq!(c.events_kept, 1);
    assert_eq!(c.events_kept_delta, -1);
    assert!(c.bytes_kept_delta < -(lines[0].len() as i64));
    let changes: Vec<_> = c
        .changes
        .iter()
        .map(|ch| (ch.from, ch.to, ch.events))
        .collect();
    assert!(
        changes.contains(&(Level::RequestResponse, Level::None, 1)),
        "{changes:?}"
    );
    assert!(
        changes.contains(&(Level::RequestResponse, Level::Metadata, 1)),
        "{changes:?}"
    );
}
