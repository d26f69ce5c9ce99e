//! `kubetrail gen` as a user runs it.

use assert_cmd::Command;
use predicates::prelude::*;

fn gen_cmd(args: &[&str]) -> Vec<u8> {
    Command::cargo_bin("kubetrail")
        .unwrap()
        .arg("gen")
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone()
}

#[test]
fn same_seed_is_byte_identical_and_counts_lines() {
    let a = gen_cmd(&["--count", "100", "--seed", "7"]);
    let b = gen_cmd(&["--count", "100", "--seed", "7"]);
    assert_eq!(a, b);
    let text = String::from_utf8(a).unwrap();
    assert_eq!(text.lines().count(), 100);
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert!(
            v["requestReceivedTimestamp"]
                .as_str()
                .unwrap()
                .starts_with("2026-01-01T00:")
        );
    }
    assert_ne!(text.as_bytes(), gen_cmd(&["--count", "100", "--seed", "8"]));
}

#[test]
fn duration_and_rate_set_the_count_and_file_output_matches_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let args = [
        "--duration",
        "2m",
        "--rate",
        "5",
        "--attacks",
        "--stages",
        "--nodes",
        "3",
    ];
    Command::cargo_bin("kubetrail")
        .unwrap()
        .arg("gen")
        .args(args)
        .arg("-o")
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    let file = std::fs::read(&path).unwrap();
    assert_eq!(file, gen_cmd(&args));
    assert_eq!(file.iter().filter(|&&b| b == b'\n').count(), 600);
}

#[test]
fn default_is_ten_thousand_events() {
    let out = gen_cmd(&[]);
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 10_000);
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["--rate", "0"][..],
        &["--duration", "10 minutes"],
        &["--count", "5", "--duration", "1m"],
        &["--start", "yesterday"],
        &["--nodes", "0"],
    ] {
        Command::cargo_bin("kubetrail")
            .unwrap()
            .arg("gen")
            .args(args)
            .assert()
            .code(2);
    }
}

#[test]
fn help_shows_an_example() {
    Command::cargo_bin("kubetrail")
        .unwrap()
        .args(["gen", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("Examples:")
                .and(predicate::str::contains("--attacks"))
                .and(predicate::str::contains("same bytes")),
        );
}
