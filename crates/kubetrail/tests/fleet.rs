//! Fleet investigation through ClickHouse (Debian's 18.16): two collectors, each fed half of one breach's
//! traffic, ship to one ClickHouse table and answer from it (`query.backend: clickhouse`). Either one's API,
//! and the CLI with `--config`, answer every question as the embedded store holding all the events does; a
//! question that would pull more than `query.max_rows` out of ClickHouse fails with a clear error, while
//! narrow ones (their filters run in ClickHouse) still answer.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::services::{Guard, clickhouse, count, until};
use common::{BIN, free_port};

/// Mallory reads a secret (in collector a's half of the traffic)...
const READ: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"7d1c0b8e-0000-4000-8000-00000000a001","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/payments-db","verb":"get","user":{"username":"mallory@example.com","groups":["oidc:contractors","system:authenticated"]},"sourceIPs":["192.0.2.66"],"userAgent":"kubectl/v1.30.1 (linux/amd64) kubernetes/abc","objectRef":{"resource":"secrets","namespace":"prod","name":"payments-db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-01-01T00:00:00.512345Z","stageTimestamp":"2026-01-01T00:00:00.520000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;
/// ...and deletes a pod (in collector b's half).
const DELETE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"7d1c0b8e-0000-4000-8000-00000000d31e","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods/payments-api-123","verb":"delete","user":{"username":"mallory@example.com","groups":["oidc:contractors","system:authenticated"]},"sourceIPs":["192.0.2.66"],"userAgent":"kubectl/v1.30.1 (linux/amd64) kubernetes/abc","objectRef":{"resource":"pods","namespace":"prod","name":"payments-api-123","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-01-01T00:00:01.456789Z","stageTimestamp":"2026-01-01T00:00:01.500000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;

/// A collector's config: its own data directory; the shared ClickHouse table as sink and as query backend.
fn collector_config(dir: &Path, port: u16, ch_port: u16, query: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {data}\ncluster: prod\n\
             query: {{backend: clickhouse, url: 'http://127.0.0.1:{ch_port}'{query}}}\n\
             sinks:\n  - type: clickhouse\n    url: http://127.0.0.1:{ch_port}\n    batch: {{flush_secs: 0.2, max_events: 500}}\n",
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    config
}

/// POSTs JSON lines to a collector's webhook as one EventList; panics unless acknowledged.
fn post(port: u16, lines: &[&str]) {
    let body = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        lines.join(",")
    );
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://127.0.0.1:{port}/k8s-audit"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"200", "the batch was not acknowledged");
}

/// `GET` an API path: its JSON, or panics with the body.
fn api(port: u16, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{path}: {body}");
    serde_json::from_str(body).unwrap()
}

/// `kubetrail ARGS`: (success, stdout, stderr).
fn kubetrail(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn two_collectors_answer_alike_through_clickhouse_and_as_the_embedded_store() {
    let tmp = tempfile::tempdir().unwrap();
    let ch_port = free_port();
    let _clickhouse = clickhouse(&tmp.path().join("clickhouse"), ch_port);

    // One breach's traffic: generated requests with attacks, every stage, and mallory's secret read and pod
    // deletion, which land with different collectors below.
    let generated = kubetrail(&[
        "gen",
        "--count",
        "3000",
        "--seed",
        "23",
        "--attacks",
        "--stages",
    ]);
    assert!(generated.0, "{}", generated.2);
    let mut lines: Vec<&str> = generated.1.lines().collect();
    lines.insert(50, READ);
    lines.insert(150, DELETE);
    let text = lines.join("\n") + "\n";
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // The reference: the embedded store holding every event. Every data directory gets the same redaction key,
    // as a fleet that wants comparable fingerprints of redacted values shares it (the tokens in the traffic's
    // TokenReviews are stored as keyed fingerprints).
    let all = tmp.path().join("all.jsonl");
    std::fs::write(&all, &text).unwrap();
    let embedded = tmp.path().join("embedded");
    for dir in [
        &embedded,
        &tmp.path().join("a/data"),
        &tmp.path().join("b/data"),
    ] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("redaction.key"), [7u8; 32]).unwrap();
    }
    let (ok, _, err) = kubetrail(&[
        "import",
        "--data",
        embedded.to_str().unwrap(),
        "--cluster",
        "prod",
        all.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");

    // Two collectors, each fed every other batch of 100: neither holds the whole breach.
    let (port_a, port_b) = (free_port(), free_port());
    let config_a = collector_config(&tmp.path().join("a"), port_a, ch_port, "");
    let config_b = collector_config(&tmp.path().join("b"), port_b, ch_port, "");
    let _a = Guard(common::serve(
        &config_a,
        &[],
        &tmp.path().join("a.log"),
        port_a,
    ));
    let _b = Guard(common::serve(
        &config_b,
        &[],
        &tmp.path().join("b.log"),
        port_b,
    ));
    for (i, chunk) in lines.chunks(100).enumerate() {
        post(if i % 2 == 0 { port_a } else { port_b }, chunk);
    }
    let table = "kubetrail.audit_events";
    until(60, "every event is in ClickHouse", || {
        count(ch_port, &format!("SELECT count() FROM {table} FINAL")) == Some(lines.len() as u64)
    });

    // The pod deletion to ask about: only collector b received it.
    let (ns, pod, deleter) = ("prod", "payments-api-123", "mallory@example.com");

    // From either console's API: the same answer, naming who deleted it.
    let who = format!("/api/v1/who?verb=delete&resource=pods/{pod}&namespace={ns}");
    let from_a = api(port_a, &who);
    let from_b = api(port_b, &who);
    assert_eq!(from_a, from_b, "the two collectors answer alike");
    let rows = from_a["sections"][0]["rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["user"] == deleter),
        "a finds the deletion only b received: {from_a}"
    );

    // The CLI through ClickHouse answers every report as the embedded store with all events does.
    let attacker = deleter.to_string();
    assert!(events.iter().any(|e| e["user"]["username"] == deleter));
    let data = embedded.to_str().unwrap();
    let config = config_a.to_str().unwrap();
    let pod_path = format!("pods/{pod}");
    let questions: Vec<Vec<&str>> = vec![
        vec!["who", "delete", &pod_path, "-n", ns, "--format", "json"],
        vec![
            "who", "delete", "pods", "--limit", "500", "--format", "json",
        ],
        vec!["who", "get", "secrets", "--format", "json"],
        vec!["who", "*", "clusterrolebindings", "--format", "json"],
        vec!["timeline", "--user", &attacker, "--format", "json"],
        vec!["scope", "--user", &attacker, "--format", "json"],
        vec![
            "query",
            "--where",
            "resource = secrets and verb in (get, list)",
            "--limit",
            "0",
            "--format",
            "json",
        ],
        vec![
            "query",
            "--where",
            "code in (401, 403, 404) or user ~ system:serviceaccount:kube-system:*",
            "--all-stages",
            "--limit",
            "0",
            "--format",
            "json",
        ],
        vec![
            "query",
            "--sql",
            "SELECT verb, count(*) AS n, count(DISTINCT \"user\") AS users FROM events \
             GROUP BY verb ORDER BY n DESC, verb",
            "--format",
            "json",
        ],
    ];
    for q in &questions {
        let mut local = q.clone();
        local.extend(["--data", data]);
        let mut fleet = q.clone();
        fleet.extend(["--config", config]);
        let (ok_l, out_l, err_l) = kubetrail(&local);
        let (ok_f, out_f, err_f) = kubetrail(&fleet);
        assert!(ok_l && ok_f, "{q:?}: {err_l} / {err_f}");
        assert!(out_l.len() > 20, "{q:?} answers something: {out_l}");
        if out_l != out_f {
            let (l, f): (Vec<&str>, Vec<&str>) = (out_l.lines().collect(), out_f.lines().collect());
            let at = (0..l.len().max(f.len()))
                .find(|&i| l.get(i) != f.get(i))
                .unwrap();
            let cut = |s: Option<&&str>| {
                s.map_or(String::from("(none)"), |s| s.chars().take(500).collect())
            };
            panic!(
                "{q:?}: the embedded store and ClickHouse differ at line {at} of {}/{}:\n{}\n{}",
                l.len(),
                f.len(),
                cut(l.get(at)),
                cut(f.get(at))
            );
        }
    }

    // Limits: a config allowing 100 rows per ClickHouse read answers a narrow question (its filters ran in
    // ClickHouse) and refuses one that would read every row, naming the setting.
    let narrow = collector_config(
        &tmp.path().join("c"),
        free_port(),
        ch_port,
        ", max_rows: 100",
    );
    let narrow = narrow.to_str().unwrap();
    let (ok, out, err) = kubetrail(&["who", "delete", &pod_path, "-n", ns, "--config", narrow]);
    assert!(ok, "{err}");
    assert!(out.contains(deleter), "{out}");
    let (ok, _, err) = kubetrail(&[
        "query",
        "--sql",
        "SELECT count(*) FROM events",
        "--config",
        narrow,
    ]);
    assert!(!ok);
    assert!(err.contains("query.max_rows"), "{err}");
    assert!(err.contains("max rows: 100"), "{err}");

    // A value is data, never SQL: a user name made to break out of a string finds nothing and breaks nothing.
    let (ok, _, err) = kubetrail(&[
        "query",
        "--where",
        "user = \"x' OR 1=1 OR user != '\"",
        "--config",
        config,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("no matching events"), "{err}");
}
