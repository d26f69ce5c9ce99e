//! Fleet investigation through ClickHouse (Debian's 18.16): two collectors, each fed half of one breach's
//! traffic, ship to one ClickHouse table and answer from it (`query.backend: clickhouse`). Either one's API,
//! and the CLI with `--config`, answer every question as the embedded store holding all the events does; a
//! question that would pull more than `query.max_rows` out of ClickHouse fails with a clear error, while
//! narrow ones (their filters run in ClickHouse) still answer. The same over a ClickHouse cluster of two
//! shards (a Distributed table over local tables created `ON CLUSTER` through ZooKeeper), each collector
//! talking to its own shard.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

use common::services::{
    Guard, archive_bucket, ch, clickhouse, clickhouse_with, count, list_keys, moto, sinks_status,
    until, zookeeper,
};
use common::{BIN, event_list, free_port, send};

/// Mallory reads a secret (in collector a's half of the traffic)...
const READ: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"7d1c0b8e-0000-4000-8000-00000000a001","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/payments-db","verb":"get","user":{"username":"mallory@example.com","groups":["oidc:contractors","system:authenticated"]},"sourceIPs":["192.0.2.66"],"userAgent":"kubectl/v1.30.1 (linux/amd64) kubernetes/abc","objectRef":{"resource":"secrets","namespace":"prod","name":"payments-db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-01-01T00:00:00.512345Z","stageTimestamp":"2026-01-01T00:00:00.520000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;
/// ...and deletes a pod (in collector b's half).
const DELETE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"7d1c0b8e-0000-4000-8000-00000000d31e","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods/payments-api-123","verb":"delete","user":{"username":"mallory@example.com","groups":["oidc:contractors","system:authenticated"]},"sourceIPs":["192.0.2.66"],"userAgent":"kubectl/v1.30.1 (linux/amd64) kubernetes/abc","objectRef":{"resource":"pods","namespace":"prod","name":"payments-api-123","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-01-01T00:00:01.456789Z","stageTimestamp":"2026-01-01T00:00:01.500000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;

/// A collector's config: its own data directory; the shared ClickHouse table as sink and as query backend.
fn collector_config(dir: &Path, port: u16, ch_port: u16, query: &str, sink: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {data}\ncluster: prod\n\
             query: {{backend: clickhouse, url: 'http://127.0.0.1:{ch_port}'{query}}}\n\
             sinks:\n  - type: clickhouse\n    url: http://127.0.0.1:{ch_port}\n    batch: {{flush_secs: 0.2, max_events: 500}}\n{sink}",
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    config
}

/// POSTs JSON lines to a collector's webhook as one EventList; panics unless acknowledged.
fn post(port: u16, lines: &[&str]) {
    assert!(
        send(port, &event_list(lines)),
        "the batch was not acknowledged"
    );
}

/// The response headers of an API `GET`.
fn headers(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The Parquet files under `dir`, at any depth.
fn parquet_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
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

/// One breach's traffic and the embedded store holding all of it.
struct Breach {
    lines: Vec<String>,
    /// The embedded store's data directory.
    embedded: PathBuf,
}

/// The pod deletion the tests ask about (only collector b receives it) and who did it.
const NS: &str = "prod";
const POD: &str = "payments-api-123";
const DELETER: &str = "mallory@example.com";

/// Generated requests with attacks, every stage, and mallory's secret read and pod deletion (which land with
/// different collectors); imported into an embedded store. Every data directory under `tmp` (`embedded`,
/// `a/data`, `b/data`) gets the same redaction key, as a fleet that wants comparable fingerprints of redacted
/// values shares it (the tokens in the traffic's TokenReviews are stored as keyed fingerprints).
fn breach(tmp: &Path) -> Breach {
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
    let mut lines: Vec<String> = generated.1.lines().map(String::from).collect();
    lines.insert(50, READ.to_string());
    lines.insert(150, DELETE.to_string());
    let all = tmp.join("all.jsonl");
    std::fs::write(&all, lines.join("\n") + "\n").unwrap();
    let embedded = tmp.join("embedded");
    for dir in [&embedded, &tmp.join("a/data"), &tmp.join("b/data")] {
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
    Breach { lines, embedded }
}

/// Two collectors (configs under `tmp/a` and `tmp/b`, shipping to and answering from ClickHouse on the
/// given HTTP ports), each fed every other batch of 100 of the breach: neither holds all of it.
fn two_collectors(
    tmp: &Path,
    breach: &Breach,
    ch_ports: (u16, u16),
    sink: &str,
) -> ((Guard, u16, PathBuf), (Guard, u16, PathBuf)) {
    let start = |name: &str, ch_port: u16| {
        let port = free_port();
        let config = collector_config(&tmp.join(name), port, ch_port, "", sink);
        let log = tmp.join(format!("{name}.log"));
        (Guard(common::serve(&config, &[], &log, port)), port, config)
    };
    let a = start("a", ch_ports.0);
    let b = start("b", ch_ports.1);
    for (i, chunk) in breach.lines.chunks(100).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        post(if i % 2 == 0 { a.1 } else { b.1 }, &refs);
    }
    (a, b)
}

/// Runs each question against the embedded store and through `config`'s query backend: the same output.
fn same_answers(breach: &Breach, config: &Path, questions: &[Vec<&str>]) {
    same_answers_with(
        breach,
        &["--config", config.to_str().unwrap()],
        &[],
        questions,
    );
}

/// [`same_answers`] with the fleet side's arguments and environment given.
fn same_answers_with(
    breach: &Breach,
    fleet_args: &[&str],
    env: &[(&str, &str)],
    questions: &[Vec<&str>],
) {
    for q in questions {
        let mut local = q.clone();
        local.extend(["--data", breach.embedded.to_str().unwrap()]);
        let mut fleet = q.clone();
        fleet.extend(fleet_args);
        let (ok_l, out_l, err_l) = kubetrail(&local);
        let out = Command::new(BIN)
            .args(&fleet)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let (ok_f, out_f, err_f) = (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        assert!(ok_l && ok_f, "{q:?}: {err_l} / {err_f}");
        assert!(out_l.len() > 10, "{q:?} answers something: {out_l}");
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
}

/// The API's `who` of the deleted pod, from one collector.
fn who_deleted(port: u16) -> Value {
    let answer = api(
        port,
        &format!("/api/v1/who?verb=delete&resource=pods/{POD}&namespace={NS}"),
    );
    let rows = answer["sections"][0]["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["user"] == DELETER && r["cluster"] == "prod"),
        "the deletion is found, with its cluster: {answer}"
    );
    answer
}

#[test]
fn two_collectors_answer_alike_through_clickhouse_and_as_the_embedded_store() {
    let tmp = tempfile::tempdir().unwrap();
    let ch_port = free_port();
    let _clickhouse = clickhouse(&tmp.path().join("clickhouse"), ch_port);
    let breach = breach(tmp.path());
    let ((_a, port_a, config_a), (_b, port_b, _)) =
        two_collectors(tmp.path(), &breach, (ch_port, ch_port), "");
    let n = breach.lines.len() as u64;
    until(60, "every event is in ClickHouse", || {
        count(ch_port, "SELECT count() FROM kubetrail.audit_events FINAL") == Some(n)
    });

    // From either console's API: the same answer, naming who deleted the pod, which only b received.
    assert_eq!(who_deleted(port_a), who_deleted(port_b));

    // The API over ClickHouse answers as an API over the embedded store: reports, the histogram (counted in
    // ClickHouse when its filter compiles exactly, here otherwise) and the clusters.
    let ref_port = free_port();
    let ref_config = tmp.path().join("ref.yaml");
    std::fs::write(
        &ref_config,
        format!(
            "listen: 127.0.0.1:{ref_port}\ndata: {}\n",
            breach.embedded.display()
        ),
    )
    .unwrap();
    let _reference = Guard(common::serve(
        &ref_config,
        &[],
        &tmp.path().join("ref.log"),
        ref_port,
    ));
    for path in [
        format!("/api/v1/who?verb=delete&resource=pods/{POD}&namespace={NS}"),
        format!("/api/v1/scope?user={}", DELETER.replace('@', "%40")),
        "/api/v1/histogram".to_string(),
        "/api/v1/histogram?where=verb%20%3D%20create%20and%20resource%20in%20(pods%2C%20secrets)"
            .into(),
        "/api/v1/histogram?where=namespace%20!%3D%20prod&since=2026-01-01T00:00:10Z".into(),
        "/api/v1/clusters".into(),
        "/api/v1/clusters?cluster=staging".into(),
        "/api/v1/clusters/names".into(),
        "/api/v1/clusters/names?since=2030-01-01T00:00:00Z".into(),
    ] {
        assert_eq!(api(port_a, &path), api(ref_port, &path), "{path}");
    }
    assert_eq!(
        api(port_a, "/api/v1/clusters/names")["clusters"],
        serde_json::json!(["prod"])
    );
    let clusters = api(port_b, "/api/v1/clusters");
    let rows = &clusters["sections"][0]["rows"];
    assert_eq!(rows[0]["cluster"], "prod", "{clusters}");
    assert_eq!(rows[0]["events"], n.to_string(), "{clusters}");

    // The CLI through ClickHouse answers every report as the embedded store with all events does.
    let pod_path = format!("pods/{POD}");
    let questions: Vec<Vec<&str>> = vec![
        vec!["who", "delete", &pod_path, "-n", NS, "--format", "json"],
        vec![
            "who", "delete", "pods", "--limit", "500", "--format", "json",
        ],
        vec!["who", "get", "secrets", "--format", "json"],
        vec!["who", "*", "clusterrolebindings", "--format", "json"],
        vec!["timeline", "--user", DELETER, "--format", "json"],
        vec!["scope", "--user", DELETER, "--format", "json"],
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
        // Questions on columns ClickHouse holds itself are answered from those columns alone.
        vec![
            "query",
            "--sql",
            "SELECT \"ip\", code, namespace, api_group, count(*) AS n FROM events \
             WHERE namespace IS NULL OR code >= 400 GROUP BY 1, 2, 3, 4 ORDER BY n DESC, 1, 2, 3, 4",
            "--format",
            "json",
        ],
        vec![
            "query",
            "--sql",
            "SELECT \"groups\", source_ips, count(*) AS n, min(\"time\") AS first FROM events \
             WHERE \"user\" LIKE 'system:serviceaccount:%' GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT 20",
            "--format",
            "json",
        ],
        vec![
            "query",
            "--sql",
            "SELECT count(*) FROM events",
            "--format",
            "json",
        ],
    ];
    same_answers(&breach, &config_a, &questions);

    // Limits: a config allowing 100 rows per ClickHouse read answers a narrow question (its filters ran in
    // ClickHouse) and refuses one that would read every row, naming the setting.
    let port_c = free_port();
    let narrow = collector_config(
        &tmp.path().join("c"),
        port_c,
        ch_port,
        ", max_rows: 100",
        "",
    );
    // Counting is done in ClickHouse when the filter compiles exactly: a few rows come back, whatever the
    // number of events; a filter that does not (`!=` keeps ''-valued rows there) needs the rows here.
    let _c = Guard(common::serve(
        &narrow,
        &[],
        &tmp.path().join("c.log"),
        port_c,
    ));
    let counted =
        "/api/v1/histogram?where=verb%20%3D%20create%20and%20resource%20in%20(pods%2C%20secrets)";
    assert_eq!(api(port_c, counted), api(ref_port, counted));
    assert_eq!(
        api(port_c, "/api/v1/clusters"),
        api(ref_port, "/api/v1/clusters")
    );
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .arg(format!(
            "http://127.0.0.1:{port_c}/api/v1/histogram?where=namespace%20!%3D%20prod"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("\n422"), "{text}");
    assert!(text.contains("query.max_rows"), "{text}");
    let narrow = narrow.to_str().unwrap();
    let (ok, out, err) = kubetrail(&["who", "delete", &pod_path, "-n", NS, "--config", narrow]);
    assert!(ok, "{err}");
    assert!(out.contains(DELETER), "{out}");
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

    // A question on columns ClickHouse holds reads only those: 1 MiB is enough to count the verbs of 3,000
    // events, not to read the events themselves.
    let small = collector_config(
        &tmp.path().join("d"),
        free_port(),
        ch_port,
        ", max_mb: 1",
        "",
    );
    let small = small.to_str().unwrap();
    let sql = "SELECT verb, count(*) AS n FROM events GROUP BY verb ORDER BY n DESC, verb";
    let (ok, out, err) = kubetrail(&["query", "--sql", sql, "--config", small]);
    assert!(ok, "{err}");
    assert!(out.contains("get"), "{out}");
    let (ok, _, err) = kubetrail(&[
        "query",
        "--where",
        "verb != none",
        "--all-stages",
        "--limit",
        "0",
        "--config",
        small,
    ]);
    assert!(!ok);
    assert!(err.contains("max bytes"), "{err}");

    // A collector whose sink cannot reach ClickHouse: answers read from ClickHouse say what they lack.
    let (port_e, refusing) = (free_port(), common::refusing());
    let dir_e = tmp.path().join("e");
    std::fs::create_dir_all(&dir_e).unwrap();
    let config_e = dir_e.join("kubetrail.yaml");
    std::fs::write(
        &config_e,
        format!(
            "listen: 127.0.0.1:{port_e}\ndata: {}\ncluster: prod\n\
             query: {{backend: clickhouse, url: 'http://127.0.0.1:{ch_port}'}}\n\
             sinks:\n  - type: clickhouse\n    url: http://127.0.0.1:{refusing}\n    batch: {{flush_secs: 0.2}}\n",
            dir_e.join("data").display()
        ),
    )
    .unwrap();
    let _e = Guard(common::serve(
        &config_e,
        &[],
        &tmp.path().join("e.log"),
        port_e,
    ));
    post(port_e, &[READ]);
    until(60, "e's sink reports what it has not shipped", || {
        sinks_status(&dir_e.join("data"))
            .iter()
            .any(|s| s["lag_events"].as_u64().is_some_and(|n| n > 0))
    });
    let (ok, _, err) = kubetrail(&["clusters", "--config", config_e.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        err.contains("not all in ClickHouse") && err.contains("not shipped yet"),
        "{err}"
    );
    let incomplete = headers(port_e, "/api/v1/clusters");
    assert!(
        incomplete.contains("x-kubetrail-incomplete: this collector's events are not all"),
        "{incomplete}"
    );
    let complete = headers(port_a, "/api/v1/clusters");
    assert!(
        !complete.contains("x-kubetrail-incomplete"),
        "a shipped everything: {complete}"
    );

    // A value is data, never SQL: a user name made to break out of a string finds nothing and breaks nothing.
    let (ok, _, err) = kubetrail(&[
        "query",
        "--where",
        "user = \"x' OR 1=1 OR user != '\"",
        "--config",
        config_a.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("no matching events"), "{err}");
}

#[test]
fn a_clickhouse_cluster_of_two_shards_holds_and_answers_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (_zk, zk_port) = zookeeper(tmp.path());
    let (http, native) = ([free_port(), free_port()], [free_port(), free_port()]);
    let cluster = format!(
        "<zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node></zookeeper>\n\
         <remote_servers><kt_fleet>\n\
         <shard><replica><host>127.0.0.1</host><port>{}</port></replica></shard>\n\
         <shard><replica><host>127.0.0.1</host><port>{}</port></replica></shard>\n\
         </kt_fleet></remote_servers>",
        native[0], native[1]
    );
    let _shards: Vec<Guard> = (0..2)
        .map(|i| {
            clickhouse_with(
                &tmp.path().join(format!("shard{i}")),
                http[i],
                native[i],
                Some(&cluster),
            )
        })
        .collect();
    let breach = breach(tmp.path());
    // Each collector ships to, and answers from, its own shard.
    let ((_a, port_a, config_a), (_b, port_b, config_b)) = two_collectors(
        tmp.path(),
        &breach,
        (http[0], http[1]),
        "    cluster: kt_fleet\n",
    );
    let n = breach.lines.len() as u64;
    until(90, "every event is in the Distributed table", || {
        count(http[0], "SELECT count() FROM kubetrail.audit_events FINAL") == Some(n)
    });
    // The rows are spread over both shards' local tables, each event once.
    let local: Vec<u64> = http
        .iter()
        .map(|&p| count(p, "SELECT count() FROM kubetrail.audit_events_local FINAL").unwrap())
        .collect();
    assert!(
        local.iter().all(|&c| c > n / 4),
        "both shards hold rows: {local:?}"
    );
    assert_eq!(local.iter().sum::<u64>(), n, "{local:?}");

    // A batch both collectors stored (the apiserver retried it elsewhere after a timeout) lands on the same
    // shards as the first copies, where they merge: still each event once.
    let first: Vec<&str> = breach.lines[..100].iter().map(String::as_str).collect();
    let shipped = |data: &Path| {
        sinks_status(data)
            .iter()
            .find(|s| s["name"] == "clickhouse")
            .and_then(|s| s["sent"].as_u64())
    };
    let data_b = tmp.path().join("b/data");
    // b's half: the odd batches (its status file is written a moment after it ships).
    let half: u64 = breach
        .lines
        .chunks(100)
        .skip(1)
        .step_by(2)
        .map(|c| c.len() as u64)
        .sum();
    until(60, "b's status shows its half shipped", || {
        shipped(&data_b) == Some(half)
    });
    // No background merge: the copies stay two rows in the table, and every answer must count them once.
    for &p in &http {
        assert!(ch(p, "SYSTEM STOP MERGES").is_some());
    }
    post(port_b, &first);
    until(60, "b ships its copy of the first batch", || {
        shipped(&data_b) == Some(half + 100)
    });
    assert_eq!(
        count(http[0], "SELECT count() FROM kubetrail.audit_events FINAL"),
        Some(n)
    );
    assert_eq!(
        count(http[0], "SELECT count() FROM kubetrail.audit_events"),
        Some(n + 100),
        "the copies are not merged yet"
    );

    // Either collector finds the deletion only b received, from whichever shard it asks.
    assert_eq!(who_deleted(port_a), who_deleted(port_b));
    let pod_path = format!("pods/{POD}");
    let questions: Vec<Vec<&str>> = vec![
        vec!["who", "delete", &pod_path, "-n", NS, "--format", "json"],
        vec!["timeline", "--user", DELETER, "--format", "json"],
        vec!["scope", "--user", DELETER, "--format", "json"],
        vec![
            "query",
            "--sql",
            "SELECT verb, count(*) AS n FROM events GROUP BY verb ORDER BY n DESC, verb",
            "--format",
            "json",
        ],
        vec![
            "query",
            "--where",
            "verb != none",
            "--all-stages",
            "--limit",
            "0",
            "--format",
            "json",
        ],
        vec![
            "clusters",
            "--until",
            "2026-02-01T00:00:00Z",
            "--format",
            "json",
        ],
    ];
    same_answers(&breach, &config_a, &questions);
    same_answers(&breach, &config_b, &questions);
    // The console's histogram counts in ClickHouse: each request once.
    let histogram = "/api/v1/histogram?where=verb%20%3D%20create";
    assert_eq!(api(port_a, histogram), api(port_b, histogram));
}

#[test]
fn the_lake_answers_from_the_archives_parquet_as_the_store_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (_moto, s3_port) = moto(tmp.path());
    let _bucket = archive_bucket(s3_port);
    let breach = breach(tmp.path());
    // An HA pair archiving to one bucket, each replica under its own `replica=` prefix, each fed half.
    let secret = tmp.path().join("s3.secret");
    std::fs::write(&secret, "secret-example\n").unwrap();
    let start = |name: &str| {
        let port = free_port();
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("kubetrail.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\ndata: {}\ncluster: prod\nreplica: {name}\n\
                 sinks:\n  - type: s3\n    endpoint: http://127.0.0.1:{s3_port}\n    bucket: audit-archive\n    \
                 prefix: k8s\n    object_lock: {{mode: compliance, retain_days: 30}}\n    manifest_secs: 1\n    \
                 parquet_after_secs: 0\n    access_key_id: AKIDEXAMPLE\n    secret_access_key_file: {}\n    \
                 batch: {{flush_secs: 0.2, max_events: 500}}\n",
                dir.join("data").display(),
                secret.display()
            ),
        )
        .unwrap();
        let log = tmp.path().join(format!("{name}.log"));
        (Guard(common::serve(&config, &[], &log, port)), port)
    };
    let (_a, port_a) = start("a");
    let (_b, port_b) = start("b");
    for (i, chunk) in breach.lines.chunks(100).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        post(if i % 2 == 0 { port_a } else { port_b }, &refs);
    }
    // Every store file of both replicas is in the archive (their hours are long over).
    let local = |name: &str| parquet_files(&tmp.path().join(name).join("data/store"));
    until(90, "both replicas' Parquet files are archived", || {
        ["a", "b"].iter().all(|r| {
            let n = local(r);
            n > 0 && list_keys(s3_port, &format!("k8s/replica={r}/parquet/")).len() == n
        })
    });

    let cache = tmp.path().join("analyst");
    let env = [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{s3_port}")),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "secret-example".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let lake = [
        "--lake",
        "s3://audit-archive/k8s",
        "--data",
        cache.to_str().unwrap(),
    ];
    let pod_path = format!("pods/{POD}");
    let questions: Vec<Vec<&str>> = vec![
        vec!["who", "delete", &pod_path, "-n", NS, "--format", "json"],
        vec!["timeline", "--user", DELETER, "--format", "json"],
        vec!["scope", "--user", DELETER, "--format", "json"],
        vec!["who", "get", "secrets", "--format", "json"],
        vec![
            "query",
            "--sql",
            "SELECT verb, count(*) AS n, count(DISTINCT audit_id) AS requests FROM events \
             GROUP BY verb ORDER BY n DESC, verb",
            "--format",
            "json",
        ],
    ];
    same_answers_with(&breach, &lake, &env, &questions);
    assert_eq!(
        parquet_files(&cache),
        local("a") + local("b"),
        "every archived file, once"
    );

    // Only the partitions a question's range needs are fetched: a year with no events fetches nothing.
    let empty = tmp.path().join("analyst2");
    let out = Command::new(BIN)
        .args([
            "who",
            "delete",
            "pods",
            "--since",
            "2027-01-01T00:00:00Z",
            "--until",
        ])
        .args([
            "2027-01-31T00:00:00Z",
            "--lake",
            "s3://audit-archive/k8s",
            "--data",
        ])
        .arg(&empty)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(parquet_files(&empty), 0);
    // A bucket that is not there is named.
    let out = Command::new(BIN)
        .args([
            "who",
            "delete",
            "pods",
            "--lake",
            "s3://no-such-bucket/k8s",
            "--data",
        ])
        .arg(&empty)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s3://no-such-bucket/k8s/"), "{err}");
}
