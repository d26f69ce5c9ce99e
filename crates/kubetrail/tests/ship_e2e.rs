//! Shipping end to end: `kubetrail serve` with sinks in its config ships every acknowledged event to
//! Debian's clickhouse-server and to an S3 bucket with Object Lock (moto), survives the target being down and
//! a kill -9 of itself meanwhile, and never duplicates what the target deduplicates.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;

use common::services::{
    Guard, archive_bucket, ch, clickhouse, count, list_keys, moto, sinks_status, until,
};
use common::{BIN, free_port};

/// `n` generated events (distinct auditIDs), from `kubetrail gen`.
fn events(n: usize, seed: u64) -> String {
    let out = Command::new(BIN)
        .args([
            "gen",
            "--count",
            &n.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn post(port: u16, lines: &str) {
    assert_eq!(post_status(port, lines), "200");
}

/// POSTs JSON lines to the webhook: the HTTP status.
fn post_status(port: u16, lines: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/x-ndjson",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://127.0.0.1:{port}/k8s-audit"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(lines.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn clickhouse_gets_every_event_across_an_outage_and_a_kill_9_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let ch_dir = tmp.path().join("clickhouse");
    let ch_port = free_port();
    let mut server = clickhouse(&ch_dir, ch_port);
    let port = free_port();
    let data = tmp.path().join("data");
    let config = tmp.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\nsinks:\n  - type: clickhouse\n    name: siem\n    url: http://127.0.0.1:{ch_port}\n    retention_days: 400\n    batch: {{flush_secs: 0.2, max_events: 500}}\n",
            data.display()
        ),
    )
    .unwrap();
    let log = |n: u32| tmp.path().join(format!("serve-{n}.log"));
    let mut serve = Guard(common::serve(&config, &[], &log(1), port));
    let total = "SELECT count() FROM kubetrail.audit_events FINAL";

    let first = events(1200, 1);
    post(port, &first);
    until(30, "1200 events in ClickHouse", || {
        count(ch_port, total) == Some(1200)
    });

    // ClickHouse goes down; events keep coming and are acknowledged; the sink reports its backlog.
    server.kill().unwrap();
    server.wait().unwrap();
    let second = events(800, 2);
    post(port, &second);
    until(30, "the sink reports failures and lag", || {
        sinks_status(&data)
            .first()
            .is_some_and(|s| s["failed"].as_u64() > Some(0) && s["lag_events"].as_u64() > Some(0))
    });
    // kill -9 of kubetrail while the backlog waits.
    serve.kill().unwrap();
    serve.wait().unwrap();

    // ClickHouse back on the same data; kubetrail back: the backlog drains, nothing lost, nothing twice.
    let mut server = clickhouse(&ch_dir, ch_port);
    let mut serve = Guard(common::serve(&config, &[], &log(2), port));
    until(60, "2000 events in ClickHouse", || {
        count(ch_port, total) == Some(2000)
    });
    let ids = "SELECT uniqExact(id) FROM kubetrail.audit_events";
    assert_eq!(count(ch_port, ids), Some(2000));
    until(10, "the lag is back to 0", || {
        sinks_status(&data)
            .first()
            .is_some_and(|s| s["lag_events"] == 0 && s["last_error"].is_null())
    });
    // A forensic lookup over what was shipped.
    let by_user = ch(
        ch_port,
        "SELECT user, count() FROM kubetrail.audit_events FINAL GROUP BY user ORDER BY count() DESC LIMIT 1 FORMAT JSONEachRow",
    )
    .unwrap();
    assert!(by_user.contains("\"user\""), "{by_user}");
    // Shipping metrics.
    let metrics = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("kubetrail_sink_lag_events{sink=\"siem\",type=\"clickhouse\"} 0"),
        "{metrics}"
    );
    serve.kill().unwrap();
    serve.wait().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn the_s3_archive_holds_every_event_in_locked_partitioned_objects() {
    use kubetrail_sinks::s3::LockMode;
    let tmp = tempfile::tempdir().unwrap();
    let (mut moto, s3_port) = moto(tmp.path());
    let (s3, rt) = archive_bucket(s3_port);

    let port = free_port();
    let data = tmp.path().join("data");
    let secret = tmp.path().join("s3.secret");
    std::fs::write(&secret, "secret-example\n").unwrap();
    let config = tmp.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ncluster: prod-eu\nsinks:\n  - type: s3\n    name: archive\n    endpoint: http://127.0.0.1:{s3_port}\n    bucket: audit-archive\n    prefix: k8s\n    object_lock: {{mode: compliance, retain_days: 365}}\n    manifest_secs: 1\n    parquet_after_secs: 0\n    ocsf: {{source_name: kubetrail_audit, account_id: \"123456789012\", region: eu-west-1}}\n    access_key_id: AKIDEXAMPLE\n    secret_access_key_file: {}\n    batch: {{flush_secs: 0.2, max_events: 400}}\n",
            data.display(),
            secret.display()
        ),
    )
    .unwrap();
    let mut serve = Guard(common::serve(
        &config,
        &[],
        &tmp.path().join("serve.log"),
        port,
    ));
    let sent = events(1000, 3);
    post(port, &sent);
    until(30, "the archive sink sent 1000 events", || {
        sinks_status(&data)
            .first()
            .is_some_and(|s| s["sent"] == 1000 && s["lag_events"] == 0)
    });

    // Every object under the partition layout, locked in COMPLIANCE mode for a year, holding the events.
    let keys = list_keys(s3_port, "k8s/cluster=");
    assert!(keys.len() >= 3, "batches of 400: {keys:?}");
    let mut lines = 0;
    let mut first_key = None;
    for key in &keys {
        let rest = key
            .strip_prefix("k8s/cluster=prod-eu/year=")
            .unwrap_or_else(|| panic!("{key}"));
        assert!(
            rest.contains("/month=") && rest.contains("/day=") && rest.contains("/hour="),
            "{key}"
        );
        assert!(key.ends_with(".jsonl.zst"), "{key}");
        let info = rt.block_on(s3.head_object(key, None)).unwrap();
        assert_eq!(info.lock_mode, Some(LockMode::Compliance), "{key}");
        let until = info.retain_until.expect("a retention date");
        let days = until.duration_since(jiff::Timestamp::now()).as_secs() / 86_400;
        assert!((364..=365).contains(&days), "{key}: retained {days} days");
        let body = rt.block_on(s3.get_object(key, None)).unwrap();
        let text = zstd::decode_all(&body[..]).unwrap();
        lines += text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        first_key.get_or_insert((key.to_string(), info.version_id.clone()));
    }
    assert_eq!(lines, 1000, "every event archived once");

    // The archive proves itself from the bucket: signed, chained manifests; every object there and locked.
    let verify = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["sinks", "verify", "--deep", "--config"])
            .arg(&config)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let mut report = String::new();
    until(
        30,
        "a manifest covers all 1000 events and the store's Parquet files",
        || {
            let (code, out) = verify(&[]);
            report = out;
            code == Some(0)
                && report.contains("1000 events")
                && !report.contains("(0 of them Parquet")
        },
    );
    assert!(report.contains("verified"), "{report}");
    // The store's signed checkpoints are beside the data.
    assert!(
        !list_keys(s3_port, "k8s/checkpoints/").is_empty(),
        "checkpoints uploaded"
    );
    // The store's Parquet files, in the lake layout, locked.
    let parquet_keys = list_keys(s3_port, "k8s/parquet/");
    let parquet = parquet_keys
        .first()
        .unwrap_or_else(|| panic!("no Parquet file archived"));
    assert!(
        parquet.starts_with("k8s/parquet/cluster=prod-eu/") && parquet.ends_with(".parquet"),
        "{parquet}"
    );
    let info = rt.block_on(s3.head_object(parquet, None)).unwrap();
    assert_eq!(info.lock_mode, Some(LockMode::Compliance));
    let body = rt.block_on(s3.get_object(parquet, None)).unwrap();
    assert!(body.starts_with(b"PAR1") && body.ends_with(b"PAR1"));
    // OCSF API Activity for Security Lake: every event once, in the custom source's layout, locked.
    let ocsf_keys = list_keys(s3_port, "k8s/ext/");
    assert!(!ocsf_keys.is_empty(), "no OCSF file archived");
    let mut ocsf_rows = 0;
    for key in &ocsf_keys {
        assert!(
            key.starts_with(
                "k8s/ext/kubetrail_audit/region=eu-west-1/accountId=123456789012/eventDay="
            ) && key.ends_with(".parquet"),
            "{key}"
        );
        let info = rt.block_on(s3.head_object(key, None)).unwrap();
        assert_eq!(info.lock_mode, Some(LockMode::Compliance), "{key}");
        let body = rt.block_on(s3.get_object(key, None)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let class = batch
                .column_by_name("class_uid")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int32Array>()
                .unwrap();
            assert!(class.iter().all(|c| c == Some(6003)), "{key}");
            ocsf_rows += batch.num_rows();
        }
    }
    assert_eq!(ocsf_rows, 1000, "every event once in OCSF");
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("{} OCSF files", ocsf_keys.len())),
        "the manifests list the OCSF files: {out}"
    );

    // With another key, the signatures fail.
    let other = tmp.path().join("other.pem");
    let key = Command::new(BIN)
        .args(["checkpoint", "public-key", "--data"])
        .arg(tmp.path().join("other-data"))
        .output()
        .unwrap();
    std::fs::write(&other, &key.stdout).unwrap();
    let (code, out) = verify(&["--public-key", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("bad signature"), "{out}");

    // A locked version cannot be deleted, through the S3 API, by anyone.
    let (key, version) = first_key.unwrap();
    let err = rt
        .block_on(s3.delete_object(&key, version.as_deref(), false))
        .expect_err("a locked version cannot be deleted");
    assert_eq!(err.code(), Some("AccessDenied"), "{err}");
    let still = rt
        .block_on(s3.get_object(&key, version.as_deref()))
        .unwrap();
    assert!(!still.is_empty());

    serve.kill().unwrap();
    serve.wait().unwrap();
    moto.kill().unwrap();
    moto.wait().unwrap();
}

#[test]
fn a_dead_sink_never_blocks_ingestion_past_the_log_budget_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = free_port();
    let data = tmp.path().join("data");
    let config = tmp.path().join("kubetrail.yaml");
    // A 12 MiB log in 1 MiB segments; the sink's ClickHouse never answers.
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\nwal: {{segment_mb: 1, budget_gb: 0.0117}}\nsinks:\n  - type: clickhouse\n    url: http://127.0.0.1:{dead}\n    batch: {{flush_secs: 0.2}}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut serve = Guard(common::serve(
        &config,
        &[],
        &tmp.path().join("serve.log"),
        port,
    ));
    // About three times the log's budget, in apiserver-sized batches; a 503 (log full for a moment) is
    // retried as the apiserver would.
    let all = events(30_000, 4);
    let lines: Vec<&str> = all.lines().collect();
    for chunk in lines.chunks(400) {
        let body = format!("{}\n", chunk.join("\n"));
        let mut tries = 0;
        loop {
            let code = post_status(port, &body);
            if code == "200" {
                break;
            }
            assert_eq!(code, "503", "only a momentarily full log may refuse");
            tries += 1;
            assert!(
                tries < 100,
                "the log stayed full: the dead sink blocks ingestion"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The sink said it stopped holding the log, as an alert for the destinations.
    let alerts = std::fs::read_to_string(data.join("alerts/alerts.jsonl")).unwrap_or_default();
    assert!(
        alerts.contains("\"kubetrail-sink-backlog\"") && alerts.contains("clickhouse"),
        "{alerts}"
    );
    let s = &sinks_status(&data)[0];
    assert!(s["failed"].as_u64() > Some(0), "{s}");
    assert!(s["last_error"].as_str().is_some(), "{s}");
    serve.kill().unwrap();
    serve.wait().unwrap();
}

/// A local receiver answering `_bulk` as Elasticsearch does: per item, 201 created; `bad-*` ids 400
/// mapper_parsing_exception (until `fixed`); `slow-*` ids 429 the first time. Reports each accepted id
/// (without its content digest).
fn elasticsearch(
    fixed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut throttled = std::collections::HashSet::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut len, mut ctype) = (0, String::new());
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "content-type" => ctype = v.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let answer = if path.starts_with("/_bulk") {
                assert_eq!(ctype, "application/x-ndjson");
                let text = String::from_utf8(body).unwrap();
                assert!(text.ends_with('\n'), "a bulk body ends with a newline");
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines.len() % 2, 0, "action and source lines in pairs");
                let mut items = Vec::new();
                let mut errors = false;
                for pair in lines.chunks(2) {
                    let action: Value = serde_json::from_str(pair[0]).unwrap();
                    let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
                    let id = meta["_id"].as_str().unwrap().to_string();
                    let doc: Value = serde_json::from_str(pair[1]).unwrap();
                    assert!(
                        doc["@timestamp"].is_string() && doc["kubernetes"]["audit"].is_object()
                    );
                    let status = if id.starts_with("bad") && !fixed.load(Ordering::SeqCst) {
                        400
                    } else if id.starts_with("slow") && throttled.insert(id.clone()) {
                        429
                    } else {
                        201
                    };
                    let mut item = json!({"_index": meta["_index"], "_id": id, "status": status});
                    match status {
                        400 => {
                            errors = true;
                            item["error"] = json!({"type": "mapper_parsing_exception",
                                "reason": "failed to parse field [kubernetes.audit.verb] of type [long]"});
                        }
                        429 => {
                            errors = true;
                            item["error"] = json!({"type": "es_rejected_execution_exception",
                                "reason": "rejected execution of coordinating operation"});
                        }
                        _ => {
                            // Reported as `<auditID>-<stage>`: the content digest after it is checked here.
                            let (key, digest) = id.rsplit_once('-').unwrap();
                            assert!(
                                digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                                "{id}"
                            );
                            let _ = tx.send(key.to_string());
                        }
                    }
                    items.push(json!({ op.as_str(): item }));
                }
                json!({"took": 3, "errors": errors, "items": items}).to_string()
            } else {
                // Templates and anything else the sink prepares with.
                json!({"acknowledged": true}).to_string()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (port, rx)
}

use serde_json::json;

#[test]
fn partial_bulk_failures_are_retried_or_dead_lettered_and_replayed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let (es_port, accepted) = elasticsearch(fixed.clone());
    let port = free_port();
    let data = tmp.path().join("data");
    let config = tmp.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\nsinks:\n  - type: elasticsearch\n    name: es\n    url: http://127.0.0.1:{es_port}\n    index: kube-audit\n    batch: {{flush_secs: 0.2}}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut serve = Guard(common::serve(
        &config,
        &[],
        &tmp.path().join("serve.log"),
        port,
    ));
    let base: Value = serde_json::from_str(events(1, 5).lines().next().unwrap()).unwrap();
    let with_id = |id: &str| {
        let mut e = base.clone();
        e["auditID"] = id.into();
        e.to_string()
    };
    let body = [
        with_id("good-1"),
        with_id("bad-1"),
        with_id("slow-1"),
        with_id("good-2"),
    ]
    .join("\n");
    post(port, &body);
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 3 {
        got.insert(
            accepted
                .recv_timeout(Duration::from_secs(30))
                .expect("accepted within 30 s"),
        );
    }
    let stage = base["stage"].as_str().unwrap();
    let want: std::collections::BTreeSet<String> = ["good-1", "slow-1", "good-2"]
        .iter()
        .map(|i| format!("{i}-{stage}"))
        .collect();
    assert_eq!(got, want, "the throttled item was sent again");
    until(10, "the status counts the dead letter", || {
        sinks_status(&data).first().is_some_and(|s| {
            s["dead_lettered"] == 1 && s["sent"] == 3 && s["retried"].as_u64() >= Some(1)
        })
    });
    let dlq = Command::new(BIN)
        .args(["sinks", "dlq", "list", "--format", "json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let dlq = String::from_utf8_lossy(&dlq.stdout);
    let dead: Value = serde_json::from_str(dlq.lines().next().expect("one dead letter")).unwrap();
    assert!(
        dead["id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("bad-1-{stage}-"))),
        "{dead}"
    );
    assert_eq!(dead["sink"], "es");
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception"),
        "{dead}"
    );

    // The mapping is fixed; the dead letter is replayed and accepted.
    fixed.store(true, Ordering::SeqCst);
    let out = Command::new(BIN)
        .args(["sinks", "dlq", "replay", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 records"));
    let id = accepted
        .recv_timeout(Duration::from_secs(30))
        .expect("the replayed record is accepted");
    assert_eq!(id, format!("bad-1-{stage}"));
    serve.kill().unwrap();
    serve.wait().unwrap();
}
