//! `kubetrail retention` as a user runs it: generated traffic spread over 500 days imported, the old part
//! planned and deleted, holds keeping what they name, and `kubetrail verify` passing afterwards.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use jiff::{SignedDuration, Timestamp};
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::Value;

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

fn days_ago(days: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_hours(24 * days)
}

/// 600 events from 500 days ago, one every ~19 hours (to ~37 days ago), imported into `dir/data`.
fn data_dir(dir: &Path) -> PathBuf {
    let out = kubetrail()
        .args(["gen", "--count", "600", "--rate", "0.000015", "--seed", "5"])
        .arg("--start")
        .arg(days_ago(500).to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let events = dir.join("events.jsonl");
    std::fs::write(&events, out.stdout).unwrap();
    let data = dir.join("data");
    kubetrail()
        .arg("import")
        .arg("--data")
        .arg(&data)
        .arg(&events)
        .assert()
        .success();
    data
}

fn json_lines(cmd: &mut Command) -> Vec<Value> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn plan(data: &Path) -> Vec<Value> {
    json_lines(
        kubetrail()
            .args(["retention", "plan", "--format", "json", "--data"])
            .arg(data),
    )
}

fn with_action<'a>(lines: &'a [Value], action: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["action"] == action).collect()
}

fn hour(line: &Value) -> Timestamp {
    line["hour"].as_str().unwrap().parse().unwrap()
}

fn verify(data: &Path) {
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(data)
        .assert()
        .success()
        .stdout(contains("deletions recorded"));
}

#[test]
fn retention_deletes_what_expired_keeps_a_year_and_verify_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let files = |data: &Path| kubetrail_store::integrity::parquet_files(data).unwrap();
    let before = files(&data);

    // The plan: the hours older than 400 days, nothing newer.
    let lines = plan(&data);
    let delete = with_action(&lines, "delete");
    let cutoff = days_ago(400);
    assert!(delete.len() > 50, "{} to delete", delete.len());
    for d in &delete {
        assert!(hour(d) + SignedDuration::from_hours(1) <= cutoff, "{d}");
        assert_eq!(d["retention"]["by"], "default");
        assert_eq!(d["retention"]["days"], 400);
        assert!(data.join(d["path"].as_str().unwrap()).is_file());
    }
    let summary = lines.last().unwrap();
    assert_eq!(summary["action"], "summary");
    assert_eq!(summary["delete_files"], delete.len());
    assert_eq!(
        summary["keep_files"].as_u64().unwrap() as usize,
        before.len() - delete.len()
    );
    kubetrail()
        .args(["retention", "plan", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(contains(format!("would delete {} files", delete.len())));

    // Nothing is deleted without --yes.
    kubetrail()
        .args(["retention", "apply", "--data"])
        .arg(&data)
        .assert()
        .code(2)
        .stderr(contains("--yes"));
    assert_eq!(files(&data), before);

    // A hold over the oldest ten days keeps those files.
    let (since, until) = (days_ago(501), days_ago(490));
    kubetrail()
        .args([
            "retention",
            "hold",
            "add",
            "--id",
            "CASE-9",
            "--reason",
            "case 9",
        ])
        .arg("--since")
        .arg(since.to_string())
        .arg("--until")
        .arg(until.to_string())
        .arg("--data")
        .arg(&data)
        .env("USER", "alice")
        .assert()
        .success()
        .stdout(contains("added hold `CASE-9`"));
    let lines = plan(&data);
    let held = with_action(&lines, "held");
    assert!(!held.is_empty());
    for h in &held {
        assert_eq!(h["holds"], serde_json::json!(["CASE-9"]));
        assert!(hour(h) <= until && hour(h) + SignedDuration::from_hours(1) > since);
    }
    let deleting = with_action(&lines, "delete").len();
    assert_eq!(deleting + held.len(), delete.len());

    // Apply deletes exactly the plan's files; verify accepts the recorded deletions.
    let applied = json_lines(
        kubetrail()
            .args(["retention", "apply", "--yes", "--format", "json", "--data"])
            .arg(&data),
    );
    let deleted = with_action(&applied, "deleted");
    assert_eq!(deleted.len(), deleting);
    for d in &deleted {
        assert!(!data.join(d["path"].as_str().unwrap()).exists());
    }
    for h in &held {
        assert!(data.join(h["path"].as_str().unwrap()).is_file());
    }
    assert_eq!(files(&data).len(), before.len() - deleting);
    verify(&data);

    let lines = plan(&data);
    assert!(with_action(&lines, "delete").is_empty());
    assert_eq!(with_action(&lines, "held").len(), held.len());

    // Releasing the hold (logged with who) brings its files back under retention.
    kubetrail()
        .args(["retention", "hold", "list", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(contains("CASE-9").and(contains("case 9")));
    kubetrail()
        .args(["retention", "hold", "release", "CASE-9", "--data"])
        .arg(&data)
        .env("USER", "bob")
        .assert()
        .success()
        .stdout(contains("released hold `CASE-9`"));
    let log = std::fs::read_to_string(data.join("retention-holds.log")).unwrap();
    let log: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The user as $USER claims it, beside the uid no environment changes.
    let by: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["by"].as_str().unwrap()))
        .collect();
    assert_eq!(by.len(), 2);
    assert_eq!(by[0].0, "add");
    assert!(by[0].1.starts_with("cli:alice (uid "), "{by:?}");
    assert_eq!(by[1].0, "release");
    assert!(by[1].1.starts_with("cli:bob (uid "), "{by:?}");
    assert_eq!(with_action(&plan(&data), "delete").len(), held.len());
    kubetrail()
        .args(["retention", "apply", "--yes", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(contains(format!("deleted {} files", held.len())));
    verify(&data);
    assert_eq!(files(&data).len(), before.len() - delete.len());

    // A file removed by hand is not retention: verify names it.
    let victim = files(&data)[0].clone();
    std::fs::remove_file(data.join(&victim)).unwrap();
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .assert()
        .code(1)
        .stdout(contains("missing"));
}

#[test]
fn a_bad_policy_file_is_an_error_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("retention.yaml"),
        "classes:\n  - name: noisy\n    days: 7\n    match: {verb: [watch]}\n",
    )
    .unwrap();
    kubetrail()
        .args(["retention", "plan", "--data"])
        .arg(&data)
        .assert()
        .code(2)
        .stderr(contains("retention.yaml").and(contains("unknown field `verb`")));
    std::fs::write(
        data.join("retention.yaml"),
        "classes:\n  - name: noisy\n    days: 7\n    match: {verbs: [watch], users: ['system:kube-*']}\n",
    )
    .unwrap();
    kubetrail()
        .args(["retention", "plan", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(contains("noisy 7 days").and(contains("would delete 0 files")));
}
