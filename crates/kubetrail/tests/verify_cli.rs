//! `kubetrail checkpoint` and `kubetrail verify` as a user runs them, over a data directory made by
//! `kubetrail import` of generated traffic (its log rewritten into small segments so there are many).

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use kubetrail_store::{Wal, WalOptions};
use predicates::str::contains;
use serde_json::Value;

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

/// Imports 3,000 generated events into `dir/data` and rewrites its log into 64 KiB segments.
fn data_dir(dir: &Path) -> PathBuf {
    let events = dir.join("events.jsonl");
    let out = kubetrail()
        .args(["gen", "--count", "3000", "--seed", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    fs::write(&events, out.stdout).unwrap();
    let data = dir.join("data");
    kubetrail()
        .arg("import")
        .arg("--data")
        .arg(&data)
        .arg(&events)
        .assert()
        .success();

    // `import` signs a checkpoint of its own; start from a store that has none (and no key) yet.
    fs::remove_dir_all(data.join("checkpoints")).unwrap();
    fs::remove_file(data.join("integrity.key")).unwrap();

    let wal_dir = data.join("wal");
    let records: Vec<Vec<u8>> = {
        let (wal, _) = Wal::open(&wal_dir, WalOptions::default()).unwrap();
        wal.read_from(0).unwrap().map(|r| r.unwrap().1).collect()
    };
    assert!(records.len() >= 3000, "{} records", records.len());
    fs::remove_dir_all(&wal_dir).unwrap();
    let opts = WalOptions {
        segment_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&wal_dir, opts).unwrap();
    for batch in records.chunks(50) {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        wal.append(&refs).unwrap();
    }
    data
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
fn checkpoint_then_verify_then_tamper() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let segs = segments(&data);
    assert!(segs.len() > 5, "{} segments", segs.len());

    // No checkpoint yet, and so no key: a usage error that says what to run.
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .assert()
        .code(2)
        .stderr(contains("kubetrail checkpoint create"));

    kubetrail()
        .args(["checkpoint", "create", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(contains("wrote checkpoint 0"));
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .assert()
        .success()
        .stdout(contains("verified"))
        .stdout(contains("1 checkpoints"))
        .stdout(contains(format!("{} segments", segs.len())));

    let pem = kubetrail()
        .args(["checkpoint", "public-key", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(pem.status.success());
    let pem = String::from_utf8(pem.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let pem_file = tmp.path().join("key.pem");
    fs::write(&pem_file, &pem).unwrap();

    let export = tmp.path().join("anchor.json");
    kubetrail()
        .args(["checkpoint", "export", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&export)
        .assert()
        .success();
    let exported: Value = serde_json::from_slice(&fs::read(&export).unwrap()).unwrap();
    assert_eq!(exported["public_key_pem"].as_str(), Some(pem.as_str()));
    assert_eq!(exported["checkpoint"]["checkpoint"]["index"], 0);

    let out = kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .arg("--public-key")
        .arg(&export)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["anchored"], true);
    assert!(v["records"].as_u64().unwrap() >= 3000);

    // One flipped byte in a sealed segment: exit 1, naming it.
    let victim = &segs[3];
    let victim_name = victim.file_name().unwrap().to_string_lossy().into_owned();
    flip(victim, 1000);
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .arg("--public-key")
        .arg(&pem_file)
        .assert()
        .code(1)
        .stdout(contains(format!(
            "verify failed: damaged: `wal/{victim_name}`"
        )));
    let out = kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_problem"]["kind"], "damaged");
    assert_eq!(v["first_problem"]["item"], format!("wal/{victim_name}"));
    flip(victim, 1000);

    // Someone with the node's key rebuilds the checkpoint chain: consistent in itself, but the anchor kept off
    // the node is gone.
    fs::remove_dir_all(data.join("checkpoints")).unwrap();
    kubetrail()
        .args(["checkpoint", "create", "--data"])
        .arg(&data)
        .assert()
        .success();
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .assert()
        .success();
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .arg("--public-key")
        .arg(&export)
        .assert()
        .code(1)
        .stdout(contains("missing: `checkpoints/"));
}

#[test]
fn missing_data_directory_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    kubetrail()
        .arg("verify")
        .arg("--data")
        .arg(tmp.path().join("nope"))
        .assert()
        .code(2)
        .stderr(contains("does not exist"));
}
