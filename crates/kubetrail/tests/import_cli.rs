//! `kubetrail import` as a user runs it, over a mix of every input shape: plain and gzipped JSON lines, an
//! EventList document, the EKS, AKS and GKE envelopes, and a file with malformed lines. What is stored is read
//! back from the write-ahead log.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flate2::Compression;
use flate2::write::GzEncoder;
use kubetrail_store::{EventRecord, Wal, WalOptions};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

/// Every record in the log: auditID/stage -> (times stored, cluster); the same auditID/stage from a second
/// cluster is a different event, keyed auditID/stage@cluster.
fn stored(data: &Path) -> HashMap<String, (usize, String)> {
    let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
    let mut seen: HashMap<String, (usize, String)> = HashMap::new();
    for item in wal.read_from(0).unwrap() {
        let (_, payload) = item.unwrap();
        let r = EventRecord::decode(&payload).unwrap();
        let mut k = format!("{}/{}", r.audit_id, r.stage);
        if seen.get(&k).is_some_and(|(_, c)| c != r.cluster.as_ref()) {
            k = format!("{k}@{}", r.cluster);
        }
        seen.entry(k).or_insert((0, r.cluster.to_string())).0 += 1;
    }
    seen
}

fn key(event: &Value) -> String {
    format!(
        "{}/{}",
        event["auditID"].as_str().unwrap(),
        event["stage"].as_str().unwrap()
    )
}

const EVENT_A: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"bad-file-a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{"username":"alice"},"sourceIPs":["10.0.0.1"],"responseStatus":{"code":200}}"#;

/// Lines 2, 3 and 5 are malformed (not JSON, not an event, cut short); lines 1, 4 and 6 are events.
fn malformed_file(path: &Path) {
    let lines = [
        EVENT_A.to_string(),
        "this line is not JSON".to_string(),
        r#"{"kind": 0}"#.to_string(),
        EVENT_A.replace("bad-file-a", "bad-file-b"),
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"bad-file-cut","#.to_string(),
        EVENT_A.replace("bad-file-a", "bad-file-c"),
    ];
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn import_of_every_shape_then_again_then_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");

    // Generated traffic: the first 4000 lines plain, lines 3001-5000 gzipped (1000 of them already in the
    // plain file).
    let generated = kubetrail()
        .args(["gen", "--count", "5000", "--attacks"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let text = String::from_utf8(generated.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5000);
    let gen_keys: Vec<String> = lines
        .iter()
        .map(|l| key(&serde_json::from_str(l).unwrap()))
        .collect();
    let distinct_gen: HashSet<&String> = gen_keys.iter().collect();
    let plain = dir.join("audit.log");
    std::fs::write(&plain, lines[..4000].join("\n") + "\n").unwrap();
    let gz = dir.join("audit-2026-01-01T00-00-00.000.log.gz");
    let mut enc = GzEncoder::new(std::fs::File::create(&gz).unwrap(), Compression::default());
    enc.write_all((lines[3000..].join("\n") + "\n").as_bytes())
        .unwrap();
    enc.finish().unwrap();
    let bad = dir.join("malformed.jsonl");
    malformed_file(&bad);

    let files = [
        plain.clone(),
        gz.clone(),
        fixture("eventlist_webhook.json"),
        fixture("eks_cloudwatch_batch.json"),
        fixture("eks_cloudwatch_records.jsonl"),
        fixture("aks_eventhub_records.json"),
        fixture("gke_cloud_audit_logs.jsonl"),
        bad.clone(),
    ];
    // Decoded records: 4000 + 2000 generated, 4 EventList items, 2 + 3 EKS, 2 AKS, 5 GKE, 3 in the
    // malformed file. Skipped: 1 EKS, 1 AKS, 2 GKE, 3 malformed. Duplicates: the gzip overlap. The two AKS
    // records share an auditID and stage but come from two clusters: two events.
    let records = 6000 + 4 + 2 + 3 + 2 + 5 + 3;
    let duplicates = 6000 - distinct_gen.len();
    let expected_stored = distinct_gen.len() + 4 + 2 + 3 + 2 + 5 + 3;

    let out = kubetrail()
        .args(["import", "--cluster", "fallback", "--data"])
        .arg(&data)
        .args(&files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let thousands = grouped;
    for want in [
        format!("read {} events", thousands(records)),
        format!("{} stored", thousands(expected_stored)),
        format!("from {} files", files.len()),
        format!("{} already stored", thousands(duplicates)),
        "7 skipped".to_string(),
    ] {
        assert!(stderr.contains(&want), "`{want}` not in:\n{stderr}");
    }
    for location in [
        format!(
            "{}:1 (item 2)",
            fixture("eks_cloudwatch_batch.json").display()
        ),
        format!(
            "{}:1 (item 2)",
            fixture("aks_eventhub_records.json").display()
        ),
        format!("{}:1:", fixture("gke_cloud_audit_logs.jsonl").display()),
        format!("{}:2:", fixture("gke_cloud_audit_logs.jsonl").display()),
        format!("{}:2:", bad.display()),
        format!("{}:3:", bad.display()),
        format!("{}:5:", bad.display()),
    ] {
        assert!(
            stderr.contains(&format!("skipped {location}")),
            "`{location}` not in:\n{stderr}"
        );
    }
    for good in [1, 4, 6] {
        assert!(
            !stderr.contains(&format!("skipped {}:{good}:", bad.display())),
            "line {good} is an event:\n{stderr}"
        );
    }

    // The log: each event once, with the cluster its envelope names, else --cluster.
    let log = stored(&data);
    assert_eq!(log.len(), expected_stored);
    assert!(log.values().all(|(n, _)| *n == 1), "an event stored twice");
    let mut clusters: HashMap<&str, usize> = HashMap::new();
    for (_, c) in log.values() {
        *clusters.entry(c.as_str()).or_insert(0) += 1;
    }
    let expected_clusters = HashMap::from([
        ("prod-eu", 2),
        ("cluster", 1),
        ("AKS-PROD", 1),
        ("some-project-cluster", 3),
        ("fallback", expected_stored - 7),
    ]);
    assert_eq!(clusters, expected_clusters);
    // The EKS batch's events (from its log group), by auditID.
    let batch: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("eks_cloudwatch_batch.json")).unwrap(),
    )
    .unwrap();
    let eks_ids: Vec<String> = batch["logEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str().unwrap()).ok())
        .map(|e| key(&e))
        .collect();
    assert_eq!(eks_ids.len(), 2);
    for k in &eks_ids {
        assert_eq!(log[k].1, "prod-eu", "{k}");
    }
    assert_eq!(log["abc-123/ResponseComplete"].1, "cluster");
    for k in &gen_keys {
        assert_eq!(log[k].1, "fallback", "{k}");
    }
    for id in ["bad-file-a", "bad-file-b", "bad-file-c"] {
        assert!(log.contains_key(&format!("{id}/ResponseComplete")), "{id}");
    }

    // The same files again: nothing new, everything counted as a duplicate.
    let again = kubetrail()
        .args(["import", "--cluster", "fallback", "--data"])
        .arg(&data)
        .args(&files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    let want = format!("{} already stored", thousands(records));
    assert!(stderr.contains(&want), "`{want}` not in:\n{stderr}");
    assert!(stderr.contains(": 0 stored (0 B)"), "{stderr}");
    let log_again = stored(&data);
    assert_eq!(log_again.len(), expected_stored);
    assert!(log_again.values().all(|(n, _)| *n == 1));

    // A missing file: exit 2, named.
    let missing = dir.join("no-such-audit.log");
    let out = kubetrail()
        .args(["import", "--data"])
        .arg(&data)
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "the missing file is named:\n{stderr}"
    );
    assert_eq!(stored(&data).len(), expected_stored);
}

/// Segments of the log in `data`.
fn segments(data: &Path) -> usize {
    std::fs::read_dir(data.join("wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

/// Once converted and checkpointed, the import's log is released (as `serve` releases it), `verify` still
/// passes, and importing the same file again stores nothing twice: the dedup window's keys outlive the log.
#[test]
fn an_import_releases_its_log_and_the_same_file_again_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let file = dir.join("audit.log");
    let generated = kubetrail()
        .args(["gen", "--count", "3000", "--seed", "7", "--output"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let distinct: HashSet<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| key(&serde_json::from_str(l).unwrap()))
        .collect();
    // Segments of 1 MiB: ~4 MB of events seal several.
    let config = dir.join("kubetrail.yaml");
    std::fs::write(&config, "wal:\n  segment_mb: 1\n").unwrap();
    let import = || {
        let out = kubetrail()
            .args(["import", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        stderr
    };
    let first = import();
    let want = format!(": {} stored", grouped(distinct.len()));
    assert!(first.contains(&want), "`{want}` not in:\n{first}");
    assert_eq!(segments(&data), 1, "only the active segment is left");
    assert!(
        stored(&data).len() < distinct.len() / 3,
        "the log's copy is released"
    );
    let verify = kubetrail()
        .args(["verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");

    let again = import();
    assert!(again.contains(": 0 stored (0 B)"), "{again}");
    let want = format!("{} already stored", grouped(distinct.len()));
    assert!(again.contains(&want), "`{want}` not in:\n{again}");

    // Imports append batches of 4 MiB, one segment each at most: 12,000 events are several. A later import
    // into the same directory is released the same way.
    let import_more = |seed: &str| {
        let more = dir.join(format!("more-{seed}.log"));
        let generated = kubetrail()
            .args(["gen", "--count", "12000", "--seed", seed, "--output"])
            .arg(&more)
            .output()
            .unwrap();
        assert!(generated.status.success());
        let out = kubetrail()
            .args(["import", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg(&more)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    };
    import_more("8");
    assert_eq!(segments(&data), 1, "a second import is released too");

    // A data directory `serve` also uses: its readers' persisted positions (here a sink's, not yet past the
    // new import) keep what they have not read.
    let held = {
        let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
        let mut cursor = wal.cursor("sink-siem").unwrap();
        let next = wal.next_seq();
        cursor.commit(next).unwrap();
        next
    };
    import_more("9");
    assert!(segments(&data) > 1, "the sink's share is kept");
    let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
    let first = wal.read_from(0).unwrap().next().unwrap().unwrap().0;
    assert!(
        first <= held,
        "records from {held} on are kept, the log starts at {first}"
    );
}

/// `n` with thousands separators, as the import prints it.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
