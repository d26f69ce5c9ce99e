//! `kubetrail detect` and `kubetrail rules` as a user runs them: own rules with fixtures, alerts as JSON lines
//! and as text, bad rules and bad events reported with their location.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

fn run(args: &[&str]) -> (String, String, i32) {
    let out = kubetrail().args(args).output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn own_rules_alert_with_json_and_text() {
    let dir = rules_dir();
    let rules = dir.to_str().unwrap();
    let events = tempfile::NamedTempFile::new().unwrap();
    let mut text = std::fs::read_to_string(dir.join("secrets-listed.positive.jsonl")).unwrap();
    text.push_str("{\"kind\":\"Event\", not json\n");
    text.push_str(&std::fs::read_to_string(dir.join("secrets-listed.negative.jsonl")).unwrap());
    std::fs::write(events.path(), &text).unwrap();
    let file = events.path().to_str().unwrap();

    let (out, err, code) = run(&[
        "detect",
        "--no-builtin",
        "--rules",
        rules,
        "--format",
        "json",
        file,
    ]);
    assert_eq!(code, 1, "an alert is a finding: {err}");
    let alerts: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 1, "{out}");
    let a = &alerts[0];
    assert_eq!(a["rule"]["id"], "test-secrets-listed");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["actor"]["username"], "eve@example.com");
    assert_eq!(a["sourceIPs"][0], "198.51.100.7");
    assert_eq!(a["auditIDs"][0], "5a1c0e55-0000-4000-8000-000000000001");
    assert_eq!(a["time"], "2026-01-01T03:00:00Z");
    // The malformed line is skipped with its location; the events after it are still read.
    assert!(err.contains(":2"), "{err}");
    assert!(err.contains("2 events, 1 alerts (1 high)"), "{err}");

    let (out, _, code) = run(&["detect", "--no-builtin", "--rules", rules, file]);
    assert_eq!(code, 1);
    assert!(out.starts_with("HIGH     test-secrets-listed"), "{out}");
    assert!(out.contains("eve@example.com from 198.51.100.7"), "{out}");
    assert!(
        out.contains("runbook: kubetrail rules show test-secrets-listed"),
        "{out}"
    );

    // Below the threshold asked for: nothing, exit 0.
    let (out, _, code) = run(&[
        "detect",
        "--no-builtin",
        "--rules",
        rules,
        "--min-severity",
        "critical",
        file,
    ]);
    assert_eq!((out.as_str(), code), ("", 0));
}

#[test]
fn rules_show_and_test_own_rules() {
    let dir = rules_dir();
    let rules = dir.to_str().unwrap();
    let (out, err, code) = run(&[
        "rules",
        "show",
        "test-secrets-listed",
        "--no-builtin",
        "--rules",
        rules,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("severity: high"), "{out}");
    assert!(out.contains("ATT&CK: T1552.007"), "{out}");
    assert!(
        out.contains("runbook:\n  Check who it was: kubetrail timeline"),
        "{out}"
    );
    assert!(out.contains("  - Backup tools"), "{out}");

    let (out, _, code) = run(&["rules", "list", "--no-builtin", "--rules", rules]);
    assert_eq!(code, 0);
    assert!(out.contains("test-secrets-listed"), "{out}");
    assert!(out.contains("1 rules"), "{out}");

    // The built-in pack passes its own fixtures, embedded in the binary.
    let (out, err, code) = run(&["rules", "test"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(out.contains("ok    kt-secret-read-prod"), "{out}");

    let (out, err, code) = run(&["rules", "test", rules]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok    "), "{out}");
    assert!(out.contains("1 tested, 1 passed, 0 failed"), "{out}");

    // A negative fixture that does alert fails the test.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["secrets-listed.yml", "secrets-listed.positive.jsonl"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::copy(
        dir.join("secrets-listed.positive.jsonl"),
        tmp.path().join("secrets-listed.negative.jsonl"),
    )
    .unwrap();
    let (out, _, code) = run(&["rules", "test", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`test-secrets-listed` alerted on its negative events"),
        "{out}"
    );
}

#[test]
fn a_bad_rule_is_refused_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "title: Bad\nid: test-bad\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  selection:\n    verb|sometimes: get\n  condition: selection\n",
    )
    .unwrap();
    let (_, err, code) = run(&[
        "detect",
        "--no-builtin",
        "--rules",
        bad.to_str().unwrap(),
        "-",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.yml:6:"), "{err}");
    assert!(err.contains("sometimes"), "{err}");
}

#[test]
fn policy_lint_names_the_rules_a_policy_blinds() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n    resources: [{group: \"\", resources: [secrets]}]\n  - level: Metadata\n",
    )
    .unwrap();
    let rules = rules_dir();
    let (out, _, code) = run(&[
        "policy",
        "lint",
        policy.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let blind: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|f| f["code"] == "detection-blind")
        .collect();
    assert_eq!(blind.len(), 1, "{out}");
    assert_eq!(blind[0]["rule"], 0);
    assert_eq!(blind[0]["line"], 4);
    assert!(
        blind[0]["message"]
            .as_str()
            .unwrap()
            .contains("`test-secrets-listed`"),
        "{out}"
    );
    // Without --rules, no detection findings.
    let (out, _, _) = run(&[
        "policy",
        "lint",
        policy.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(!out.contains("detection-blind"), "{out}");
}

/// The seed's breach: an unknown service account reads a production secret, binds itself to cluster-admin,
/// creates a privileged pod with the host's root filesystem mounted and execs into it. The built-in pack
/// raises each step with its severity and a runbook.
#[test]
fn the_built_in_pack_raises_each_step_of_the_seed_breach() {
    let sa = "system:serviceaccount:default:build-bot";
    let groups =
        r#"["system:serviceaccounts","system:serviceaccounts:default","system:authenticated"]"#;
    let ev = |id: &str, t: &str, level: &str, verb: &str, uri: &str, object: &str, extra: &str| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{level}","auditID":"{id}","stage":"ResponseComplete","requestURI":"{uri}","verb":"{verb}","user":{{"username":"{sa}","groups":{groups}}},"sourceIPs":["203.0.113.99"],"userAgent":"kubectl/v1.31.0 (linux/amd64) kubernetes/abc","objectRef":{object},"responseStatus":{{"metadata":{{}},"code":201}},{extra}"requestReceivedTimestamp":"2026-03-01T02:0{t}.000000Z","stageTimestamp":"2026-03-01T02:0{t}.100000Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}}}"#
        )
    };
    let events = [
        ev(
            "b0000000-0000-4000-8000-000000000001",
            "1:00",
            "Metadata",
            "get",
            "/api/v1/namespaces/prod-payments/secrets/stripe-api-key",
            r#"{"resource":"secrets","namespace":"prod-payments","name":"stripe-api-key","apiVersion":"v1"}"#,
            "",
        ),
        ev(
            "b0000000-0000-4000-8000-000000000002",
            "2:00",
            "RequestResponse",
            "create",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            r#"{"resource":"clusterrolebindings","name":"build-bot-admin","apiGroup":"rbac.authorization.k8s.io","apiVersion":"v1"}"#,
            r#""requestObject":{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"build-bot-admin"},"subjects":[{"kind":"ServiceAccount","name":"build-bot","namespace":"default"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"}},"#,
        ),
        ev(
            "b0000000-0000-4000-8000-000000000003",
            "3:00",
            "Request",
            "create",
            "/api/v1/namespaces/prod-payments/pods",
            r#"{"resource":"pods","namespace":"prod-payments","name":"debug-root","apiVersion":"v1"}"#,
            r#""requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"debug-root","namespace":"prod-payments"},"spec":{"containers":[{"name":"sh","image":"alpine:3.20","securityContext":{"privileged":true},"volumeMounts":[{"name":"host","mountPath":"/host"}]}],"volumes":[{"name":"host","hostPath":{"path":"/"}}]}},"#,
        ),
        ev(
            "b0000000-0000-4000-8000-000000000004",
            "4:00",
            "Metadata",
            "create",
            "/api/v1/namespaces/prod-payments/pods/debug-root/exec?command=sh&stdin=true&tty=true",
            r#"{"resource":"pods","namespace":"prod-payments","name":"debug-root","subresource":"exec","apiVersion":"v1"}"#,
            "",
        ),
    ];
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), events.join("\n") + "\n").unwrap();
    let (out, err, code) = run(&["detect", "--format", "json", file.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let alerts: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let raised = |rule: &str| -> &serde_json::Value {
        alerts
            .iter()
            .find(|a| a["rule"]["id"] == rule)
            .unwrap_or_else(|| panic!("no {rule} alert in {out}"))
    };
    for (rule, severity, audit_id) in [
        (
            "kt-secret-read-prod",
            "high",
            "b0000000-0000-4000-8000-000000000001",
        ),
        (
            "kt-rbac-bind-cluster-admin",
            "critical",
            "b0000000-0000-4000-8000-000000000002",
        ),
        (
            "kt-pod-privileged",
            "high",
            "b0000000-0000-4000-8000-000000000003",
        ),
        (
            "kt-pod-sensitive-hostpath",
            "high",
            "b0000000-0000-4000-8000-000000000003",
        ),
        (
            "kt-exec-prod-system",
            "high",
            "b0000000-0000-4000-8000-000000000004",
        ),
    ] {
        let a = raised(rule);
        assert_eq!(a["severity"], severity, "{a}");
        // The triage context travels in the alert: who (groups), with what, to what, which technique.
        assert_eq!(a["actor"]["groups"][0], "system:serviceaccounts", "{a}");
        assert!(
            a["userAgent"].as_str().unwrap().starts_with("kubectl/"),
            "{a}"
        );
        assert!(a["target"]["verb"].is_string(), "{a}");
        assert!(a["attack"][0].as_str().unwrap().starts_with('T'), "{a}");
        assert_eq!(a["auditIDs"][0], audit_id, "{a}");
        assert_eq!(a["actor"]["username"], sa);
        // Each has a runbook a tier-1 analyst can follow, with kubetrail commands in it.
        let (doc, _, code) = run(&["rules", "show", rule]);
        assert_eq!(code, 0);
        let runbook = &doc[doc.find("runbook:").unwrap_or_else(|| panic!("{doc}"))..];
        assert!(runbook.contains("kubetrail "), "{rule}: {runbook}");
    }
}

/// Tuning from the config file: a rule disabled by id, an exception by identity prefix, and an exception that
/// would match by substring refused by `config check` and by `detect`.
#[test]
fn tuning_from_the_config_file() {
    let dir = rules_dir();
    let positive = dir.join("secrets-listed.positive.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("kubetrail.yaml");
    let detect = |yaml: &str| {
        std::fs::write(&config, yaml).unwrap();
        run(&[
            "detect",
            "--config",
            config.to_str().unwrap(),
            "--format",
            "json",
            positive.to_str().unwrap(),
        ])
    };
    let base = format!(
        "detection:\n  builtin: false\n  rules: [{}]\n",
        dir.display()
    );
    let (out, _, code) = detect(&base);
    assert_eq!(code, 1);
    assert!(out.contains("test-secrets-listed"), "{out}");

    let (out, _, code) = detect(&format!("{base}  disabled: [test-secrets-listed]\n"));
    assert_eq!((out.as_str(), code), ("", 0));

    let (out, _, code) = detect(&format!(
        "{base}  exceptions:\n    - {{rule: test-secrets-listed, user: \"eve@*\", reason: backup job}}\n"
    ));
    assert_eq!((out.as_str(), code), ("", 0));

    let substring = format!("{base}  exceptions:\n    - {{user: \"*eve*\"}}\n");
    let (_, err, code) = detect(&substring);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never by substring"), "{err}");
    std::fs::write(&config, &substring).unwrap();
    let (out, err, code) = run(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(code, 1, "an invalid config is a finding: {out}{err}");
    assert!(
        format!("{out}{err}").contains("never by substring"),
        "{out}{err}"
    );
}

#[test]
fn an_alert_names_its_target() {
    let dir = rules_dir();
    let (out, _, _) = run(&[
        "detect",
        "--no-builtin",
        "--rules",
        dir.to_str().unwrap(),
        "--format",
        "json",
        dir.join("secrets-listed.positive.jsonl").to_str().unwrap(),
    ]);
    let a: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(a["target"]["verb"], "list");
    assert_eq!(a["target"]["resource"], "secrets");
    assert!(a["target"].get("namespace").is_none(), "cluster-wide: {a}");
    assert_eq!(a["target"]["requestURI"], "/api/v1/secrets?limit=500");
    assert_eq!(a["attack"], serde_json::json!(["T1552.007"]));
    assert_eq!(
        a["actor"]["groups"],
        serde_json::json!(["system:authenticated"])
    );
}
