//! `kubetrail policy check|explain`, run as a user runs them.

use std::path::PathBuf;

use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;
use tempfile::TempDir;

const VALID: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-proxy"]
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
    verbs: ["watch", "get", "list"]
- level: Metadata
  resources:
  - group: ""
    resources: [secrets]
- level: Request
"#;

const INVALID: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: metadata\n";

const SECRET_GET: &str = r#"{"level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/secrets/db","verb":"get","user":{"username":"alice","groups":["devs"]},"objectRef":{"resource":"secrets","namespace":"default","name":"db","apiVersion":"v1"}}"#;

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_valid_policy_exits_0_and_still_prints_warnings() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "policy.yaml", VALID);
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "check"])
        .arg(&policy)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "policy.yaml:11:5: warning: rules[1].resources[0].verbs",
        ));
}

#[test]
fn check_invalid_policy_exits_1_with_file_line_and_help() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "bad.yaml", INVALID);
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "check"])
        .arg(&policy)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "bad.yaml:4:10: error: rules[0].level: Unsupported value: 'metadata'",
        ))
        .stdout(predicate::str::contains(
            "  help: levels are case-sensitive: write `Metadata`",
        ));
}

#[test]
fn check_json_prints_one_object_per_diagnostic() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "bad.yaml", INVALID);
    let out = cargo_bin_cmd!("kubetrail")
        .args(["policy", "check", "--format", "json"])
        .arg(&policy)
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["severity"], "error");
    assert_eq!(lines[0]["line"], 4);
    assert_eq!(lines[0]["path"], "rules[0].level");
}

#[test]
fn check_policy_without_rules_is_refused() {
    let dir = TempDir::new().unwrap();
    let policy = write(
        &dir,
        "empty.yaml",
        "apiVersion: audit.k8s.io/v1\nkind: Policy\n",
    );
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "check"])
        .arg(&policy)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "loaded illegal policy with 0 rules",
        ));
}

#[test]
fn check_missing_file_exits_2_naming_it() {
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "check", "/nonexistent/audit-policy.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/audit-policy.yaml"));
}

#[test]
fn explain_names_the_matching_rule_and_why_earlier_rules_did_not_match() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "policy.yaml", VALID);
    let event = write(&dir, "event.json", SECRET_GET);
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "explain"])
        .arg(&policy)
        .arg("--event")
        .arg(format!("@{}", event.display()))
        .assert()
        .code(0)
        .stdout(predicate::str::contains("rule 2 ("))
        .stdout(predicate::str::contains(
            "policy.yaml:12) matches: level Metadata",
        ))
        .stdout(predicate::str::contains("RequestReceived   omitted"))
        .stdout(predicate::str::contains(
            "user `alice` is not in users [system:kube-proxy]",
        ));
}

#[test]
fn explain_json_takes_the_event_inline() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "policy.yaml", VALID);
    let out = cargo_bin_cmd!("kubetrail")
        .args(["policy", "explain", "--format", "json"])
        .arg(&policy)
        .args(["--event", SECRET_GET])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["auditID"], "a1");
    assert_eq!(v["decision"]["rule"], 2);
    assert_eq!(v["decision"]["level"], "Metadata");
    assert_eq!(
        v["decision"]["omitStages"],
        serde_json::json!(["RequestReceived"])
    );
    assert_eq!(v["matched"]["line"], 12);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 2);
}

#[test]
fn explain_refuses_an_invalid_policy() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "bad.yaml", INVALID);
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "explain"])
        .arg(&policy)
        .args(["--event", SECRET_GET])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.yaml:4:10: error"));
}
