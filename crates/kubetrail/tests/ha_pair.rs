//! An HA pair: two `kubetrail serve` replicas behind one TCP balancer on loopback (what a Kubernetes Service
//! does), fed kube-apiserver-style batches that are retried on failure, one replica killed with SIGKILL in the
//! middle of the stream. Every acknowledged event is in ClickHouse once; the two replicas archive to one S3
//! bucket without touching each other's objects (a third collector that would share a replica's place is
//! refused); an alert both replicas raise reaches Alertmanager once.

use std::collections::{HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

mod common;

use common::services::{
    Guard, alertmanager, alertmanager_alerts, archive_bucket, ch, clickhouse, count, list_keys,
    moto, sinks_status, until,
};
use common::{BIN, event_list, free_port, send};

/// A TCP balancer on loopback: each connection goes to the next backend that accepts it (a dead one is
/// skipped, as a Service skips a pod that is not ready), bytes copied both ways until either side closes.
fn balancer(backends: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut next = 0;
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let upstream = (0..backends.len()).find_map(|i| {
                let n = (next + i) % backends.len();
                TcpStream::connect(("127.0.0.1", backends[n]))
                    .ok()
                    .map(|s| (n, s))
            });
            // No backend: the client's connection closes unanswered, and it retries.
            let Some((n, upstream)) = upstream else {
                continue;
            };
            next = n + 1;
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            pipe(upstream, client);
        }
    });
    port
}

/// A replica's config: its own data directory and name; the shared ClickHouse table and S3 archive.
fn replica_config(
    dir: &Path,
    port: u16,
    name: Option<&str>,
    ch_port: u16,
    s3_port: u16,
) -> PathBuf {
    let secret = dir.join("s3.secret");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&secret, "secret-example\n").unwrap();
    let replica = name.map(|n| format!("replica: {n}\n")).unwrap_or_default();
    let prefix = if name.is_some() {
        "k8s"
    } else {
        "k8s/replica=a"
    };
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {data}\ncluster: prod\n{replica}\
             sinks:\n  - type: clickhouse\n    name: siem\n    url: http://127.0.0.1:{ch_port}\n    batch: {{flush_secs: 0.2, max_events: 500}}\n\
             \x20 - type: s3\n    name: archive\n    endpoint: http://127.0.0.1:{s3_port}\n    bucket: audit-archive\n    prefix: {prefix}\n    object_lock: {{mode: compliance, retain_days: 30}}\n    manifest_secs: 1\n    parquet: false\n    access_key_id: AKIDEXAMPLE\n    secret_access_key_file: {secret}\n    batch: {{flush_secs: 0.2, max_events: 500}}\n",
            data = dir.join("data").display(),
            secret = secret.display(),
        ),
    )
    .unwrap();
    config
}

fn sink_status(data: &Path, sink: &str) -> Option<Value> {
    sinks_status(data).into_iter().find(|s| s["name"] == sink)
}

#[test]
fn an_ha_pair_loses_nothing_acknowledged_and_stores_and_alerts_everything_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ch_port = free_port();
    let _clickhouse = clickhouse(&tmp.path().join("clickhouse"), ch_port);
    let (_moto, s3_port) = moto(tmp.path());
    let _bucket = archive_bucket(s3_port);
    let (_am, am_port) = alertmanager(tmp.path());
    let am_url = format!("http://127.0.0.1:{am_port}");

    let (port_a, port_b) = (free_port(), free_port());
    let config_a = replica_config(&tmp.path().join("a"), port_a, Some("a"), ch_port, s3_port);
    let config_b = replica_config(&tmp.path().join("b"), port_b, Some("b"), ch_port, s3_port);
    let data_a = tmp.path().join("a/data");
    let data_b = tmp.path().join("b/data");
    let start = |config: &Path, n: &str, port: u16| {
        Guard(common::serve(
            config,
            &["--alertmanager", &am_url],
            &tmp.path().join(format!("serve-{n}.log")),
            port,
        ))
    };
    let mut a = start(&config_a, "a1", port_a);
    let b = start(&config_b, "b1", port_b);
    let service = balancer(vec![port_a, port_b]);

    // The stream: 40 batches of 100 events, each retried until acknowledged, as kube-apiserver's webhook
    // backend retries a batch that failed.
    let generated = Command::new(BIN)
        .args(["gen", "--count", "4000", "--seed", "11"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let text = String::from_utf8(generated.stdout).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let sent: HashSet<String> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!(
                "{}-{}",
                v["auditID"].as_str().unwrap(),
                v["stage"].as_str().unwrap()
            )
        })
        .collect();
    let acked = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, retried, done) = (acked.clone(), retried.clone(), done.clone());
        std::thread::spawn(move || {
            for chunk in lines.chunks(100) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let body = event_list(&refs);
                let mut attempts = 0;
                while !send(service, &body) {
                    attempts += 1;
                    retried.fetch_add(1, Ordering::SeqCst);
                    assert!(attempts < 200, "a batch was never acknowledged");
                    std::thread::sleep(Duration::from_millis(50));
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // Replica a dies mid-stream (SIGKILL: no shutdown work), the stream goes on through b.
    until(60, "10 batches acknowledged", || {
        acked.load(Ordering::SeqCst) >= 10
    });
    a.kill().unwrap();
    a.wait().unwrap();
    let killed_at = acked.load(Ordering::SeqCst);
    eprintln!("a killed after {killed_at} batches");
    until(120, "every batch acknowledged", || {
        done.load(Ordering::SeqCst)
    });
    sender.join().unwrap();
    eprintln!("{} failed attempts retried", retried.load(Ordering::SeqCst));
    assert!(
        killed_at < 40,
        "a was killed mid-stream ({killed_at} batches in)"
    );

    // A retry whose first copy was stored but not acknowledged reaches the other replica: both store it.
    // Simulated exactly by sending one batch to each replica directly.
    let breach = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breach.jsonl"),
    )
    .unwrap();
    let breach_lines: Vec<&str> = breach.lines().collect();
    let breach_body = event_list(&breach_lines);
    // a comes back (the StatefulSet restarts the pod on its volume) and ships what it had not shipped.
    let a = start(&config_a, "a2", port_a);
    assert!(send(port_a, &breach_body) && send(port_b, &breach_body));
    let mut expected = sent.clone();
    for l in &breach_lines {
        let v: Value = serde_json::from_str(l).unwrap();
        expected.insert(format!(
            "{}-{}",
            v["auditID"].as_str().unwrap(),
            v["stage"].as_str().unwrap()
        ));
    }
    // An attacker's two requests under one chosen Audit-ID, the same identity and second, each stored by
    // another replica (so neither replica sees a reuse): a secret read behind a harmless read.
    let request = |uri: &str, micros: &str| {
        format!(
            r#"{{"level":"Metadata","auditID":"chosen-1","stage":"ResponseComplete","requestURI":"{uri}","verb":"get","user":{{"username":"mallory@corp.example"}},"sourceIPs":["203.0.113.9"],"responseStatus":{{"code":200}},"requestReceivedTimestamp":"2026-11-25T02:00:00.{micros}Z","stageTimestamp":"2026-11-25T02:00:00.{micros}Z"}}"#
        )
    };
    let harmless = request("/api/v1/namespaces/default/configmaps/app", "100001");
    let secret = request("/api/v1/namespaces/prod/secrets/db", "100002");
    assert!(send(port_a, &event_list(&[&harmless])) && send(port_b, &event_list(&[&secret])));
    expected.insert("chosen-1-ResponseComplete".into());

    // ClickHouse: every acknowledged event, once (the table collapses the copies both replicas shipped),
    // and both of the requests that shared an auditID.
    let n = expected.len() as u64 + 1;
    until(90, "every acknowledged event in ClickHouse", || {
        count(ch_port, "SELECT count() FROM kubetrail.audit_events FINAL") == Some(n)
    });
    assert_eq!(
        count(ch_port, "SELECT uniqExact(id) FROM kubetrail.audit_events"),
        Some(n)
    );
    let keys: HashSet<String> = ch(
        ch_port,
        "SELECT concat(audit_id, '-', stage) FROM kubetrail.audit_events FINAL FORMAT TabSeparated",
    )
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect();
    assert_eq!(keys, expected, "exactly the acknowledged events");
    let uris = ch(
        ch_port,
        "SELECT request_uri FROM kubetrail.audit_events FINAL WHERE audit_id = 'chosen-1' \
         ORDER BY request_uri FORMAT TabSeparated",
    )
    .unwrap();
    assert_eq!(
        uris.lines().collect::<Vec<_>>(),
        [
            "/api/v1/namespaces/default/configmaps/app",
            "/api/v1/namespaces/prod/secrets/db"
        ],
        "the secret read is not hidden behind the other request"
    );
    // The archive: each replica under its own `replica=` folder, nothing anywhere else; each one's manifest
    // chain verifies on its own.
    until(
        60,
        "both replicas archived and their manifests are uploaded",
        || {
            [&data_a, &data_b]
                .iter()
                .all(|d| sink_status(d, "archive").is_some_and(|s| s["lag_events"] == 0))
                && !list_keys(s3_port, "k8s/replica=a/manifests/").is_empty()
                && !list_keys(s3_port, "k8s/replica=b/manifests/").is_empty()
        },
    );
    let all = list_keys(s3_port, "k8s/");
    assert!(
        all.iter()
            .all(|k| k.starts_with("k8s/replica=a/") || k.starts_with("k8s/replica=b/")),
        "{all:?}"
    );
    for (config, name) in [(&config_a, "a"), (&config_b, "b")] {
        // Give the last manifest time to list the last objects: verify reads the bucket alone.
        until(30, "the archive verifies", || {
            Command::new(BIN)
                .args(["sinks", "verify", "--config"])
                .arg(config)
                .args(["--replica", name])
                .output()
                .unwrap()
                .status
                .success()
        });
    }

    // Alerts: both replicas raised the breach's alerts with the same ids; Alertmanager holds each once.
    until(60, "the breach's alerts reached Alertmanager", || {
        alertmanager_alerts(am_port)
            .iter()
            .any(|a| a["labels"]["alertname"] == "kt-rbac-bind-cluster-admin")
    });
    let alerts_of = |data: &Path| -> HashMap<String, String> {
        let out = Command::new(BIN)
            .args(["alerts", "list", "--format", "json", "--data"])
            .arg(data)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|a| {
                a["auditIDs"].as_array().is_some_and(|ids| {
                    ids.iter().all(|i| {
                        i.as_str()
                            .is_some_and(|s| s.starts_with('b') && s.len() == 2)
                    })
                })
            })
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_string(),
                    a["rule"]["id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (from_a, from_b) = (alerts_of(&data_a), alerts_of(&data_b));
    assert!(
        from_a.values().any(|r| r == "kt-rbac-bind-cluster-admin"),
        "{from_a:?}"
    );
    assert_eq!(
        from_a, from_b,
        "the same alerts, by the same ids, from either replica"
    );
    let am = alertmanager_alerts(am_port);
    for (id, rule) in &from_a {
        let n = am
            .iter()
            .filter(|a| a["labels"]["kubetrail_alert"] == id.as_str())
            .count();
        assert!(n <= 1, "alert {id} ({rule}) is in Alertmanager {n} times");
    }
    let critical = am
        .iter()
        .filter(|a| a["labels"]["alertname"] == "kt-rbac-bind-cluster-admin")
        .count();
    assert_eq!(critical, 1, "{am:?}");

    // A third collector configured into a's place (same prefix, no replica name of its own) is refused by the
    // archive before it writes anything: two manifest chains would collide.
    let before = list_keys(s3_port, "k8s/replica=a/");
    let port_c = free_port();
    let config_c = replica_config(&tmp.path().join("c"), port_c, None, ch_port, s3_port);
    let c = start(&config_c, "c1", port_c);
    assert!(send(port_c, &event_list(&breach_lines[..1])));
    let data_c = tmp.path().join("c/data");
    until(30, "the shared archive is refused, naming why", || {
        sink_status(&data_c, "archive").is_some_and(|s| {
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("signed by another key") && e.contains("replica"))
        })
    });
    assert_eq!(list_keys(s3_port, "k8s/replica=a/"), before);
    drop((a, b, c));
}
