//! `kubetrail policy lint|simulate|generate`, run as a user runs them (the README's quick start).

use std::path::PathBuf;

use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn generated_policy(dir: &TempDir) -> PathBuf {
    let out = cargo_bin_cmd!("kubetrail")
        .args(["policy", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    write(
        dir,
        "generated.yaml",
        std::str::from_utf8(&out.stdout).unwrap(),
    )
}

/// The seed's dangerous policy: everything at RequestResponse, secrets included.
const EVERYTHING: &str =
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n";

#[test]
fn generate_passes_check_and_lints_clean() {
    let dir = TempDir::new().unwrap();
    let policy = generated_policy(&dir);
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "check"])
        .arg(&policy)
        .assert()
        .success()
        .stdout("");
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "lint"])
        .arg(&policy)
        .assert()
        .success()
        .stdout("")
        .stderr(predicate::str::contains("0 errors, 0 warnings"));
}

#[test]
fn generate_piped_into_check_and_lint_is_clean() {
    let yaml = cargo_bin_cmd!("kubetrail")
        .args(["policy", "generate", "--production-namespace", "prod"])
        .output()
        .unwrap()
        .stdout;
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "check", "-"])
        .write_stdin(yaml.clone())
        .assert()
        .success();
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "lint", "-"])
        .write_stdin(yaml)
        .assert()
        .success()
        .stdout("");
}

#[test]
fn lint_reports_secrets_at_request_response_as_an_error_with_a_fix() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "everything.yaml", EVERYTHING);
    cargo_bin_cmd!("kubetrail")
        .args(["policy", "lint"])
        .arg(&policy)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "everything.yaml:4: error[sensitive-values-logged] (rule 0): secret reads",
        ))
        .stdout(predicate::str::contains(
            "fix: insert before rule 0: `- level: Metadata`",
        ));
    let out = cargo_bin_cmd!("kubetrail")
        .args(["policy", "lint", "--format", "json"])
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let findings: Vec<serde_json::Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        findings
            .iter()
            .any(|f| f["code"] == "sensitive-values-logged"
                && f["severity"] == "error"
                && f["line"] == 4)
    );
    assert!(
        findings
            .iter()
            .all(|f| f["fix"].as_str().is_some_and(|s| !s.is_empty()))
    );
}

#[test]
fn simulate_names_the_controller_manager_watch_loop_as_noise() {
    let dir = TempDir::new().unwrap();
    let everything = write(&dir, "everything.yaml", EVERYTHING);
    let traffic = cargo_bin_cmd!("kubetrail")
        .args(["gen", "--count", "20000", "--seed", "3"])
        .output()
        .unwrap();
    assert!(traffic.status.success());
    let traffic = write(
        &dir,
        "traffic.jsonl",
        std::str::from_utf8(&traffic.stdout).unwrap(),
    );
    let out = cargo_bin_cmd!("kubetrail")
        .args(["policy", "simulate", "--format", "json", "--policy"])
        .arg(&everything)
        .arg(&traffic)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["events_in"], 20000);
    assert_eq!(r["events_kept"], 20000);
    assert!(r["gb_per_day"].as_f64().unwrap() > 0.0);
    let noisy = r["noisy"].as_array().unwrap();
    let cm = noisy
        .iter()
        .find(|n| {
            n["user"] == "system:kube-controller-manager"
                && n["verb"] == "watch"
                && !n["resource"].is_null()
        })
        .unwrap_or_else(|| panic!("controller-manager watch loop not flagged: {noisy:#?}"));
    assert!(cm["share"].as_f64().unwrap() > 0.10);
    let suggestion = cm["suggestion"].as_str().unwrap();
    assert!(suggestion.starts_with("- level: None\n"), "{suggestion}");

    // Applying the suggestion silences the group: it is no longer kept, so no longer noisy.
    let fixed = format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{suggestion}- level: RequestResponse\n"
    );
    let fixed = write(&dir, "fixed.yaml", &fixed);
    let out = cargo_bin_cmd!("kubetrail")
        .args(["policy", "simulate", "--format", "json", "--policy"])
        .arg(&fixed)
        .arg(&traffic)
        .output()
        .unwrap();
    let r2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r2["rules"][0]["events"], cm["events"]);
    assert_eq!(
        r2["events_kept"].as_u64().unwrap(),
        20000 - cm["events"].as_u64().unwrap()
    );
}

#[test]
fn simulate_per_event_rows_follow_input_order() {
    let dir = TempDir::new().unwrap();
    let policy = generated_policy(&dir);
    let traffic = cargo_bin_cmd!("kubetrail")
        .args(["gen", "--count", "300", "--stages"])
        .output()
        .unwrap();
    let input: Vec<serde_json::Value> = std::str::from_utf8(&traffic.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let out = cargo_bin_cmd!("kubetrail")
        .args([
            "policy",
            "simulate",
            "--per-event",
            "--format",
            "json",
            "--policy",
        ])
        .arg(&policy)
        .write_stdin(traffic.stdout.clone())
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), input.len());
    for (row, ev) in rows.iter().zip(&input) {
        assert_eq!(row["auditID"], ev["auditID"]);
        assert_eq!(row["stage"], ev["stage"]);
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 7, "{row}");
        // The generated policy omits RequestReceived everywhere.
        if ev["stage"] == "RequestReceived" {
            assert_eq!(row["kept"], false);
        }
        assert_eq!(
            row["kept"] == true,
            row["level"] != "None" && ev["stage"] != "RequestReceived"
        );
    }
    assert!(
        rows.iter()
            .any(|r| !r["rule"].is_null() && r["level"] == "None")
    );
}

#[test]
fn simulate_reports_malformed_lines_and_goes_on() {
    let dir = TempDir::new().unwrap();
    let policy = write(&dir, "everything.yaml", EVERYTHING);
    let good = r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","verb":"get","requestURI":"/healthz","user":{"username":"u"}}"#;
    let input = write(
        &dir,
        "mixed.jsonl",
        &format!("{good}\n{{\"kind\": 0}}\nnot json\n{good}\n"),
    );
    let out = cargo_bin_cmd!("kubetrail")
        .args(["policy", "simulate", "--format", "json", "--policy"])
        .arg(&policy)
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["events_in"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mixed.jsonl:2") && stderr.contains("mixed.jsonl:3"),
        "{stderr}"
    );
}
