//! The query API of `kubetrail serve` end to end: generated traffic with attacks and one hand-written pod
//! delete posted to the webhook with a bearer token, then `/api/v1/who`, `/timeline`, `/scope` and `/query`
//! answer the forensic questions over HTTP, with the webhook's authentication and clear errors.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");
/// The analyst's token (the reader role): every read of the API.
const TOKEN: &str = "api-test-reader-token-8f2c5e7a90b1c3d4";
/// The apiserver's token (the ingest role): the webhook only.
const INGEST_TOKEN: &str = "api-test-ingest-token-3a9d17c2e5f4b6a8";
const DELETE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"7d1c0b8e-0000-4000-8000-00000000d31e","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods/payments-api-123","verb":"delete","user":{"username":"mallory@example.com","groups":["oidc:contractors","system:authenticated"]},"sourceIPs":["192.0.2.66"],"userAgent":"kubectl/v1.30.1 (linux/amd64) kubernetes/abc","objectRef":{"resource":"pods","namespace":"prod","name":"payments-api-123","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-01-01T01:02:03.456789Z","stageTimestamp":"2026-01-01T01:02:03.500000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` a path: (HTTP status, body). `token` is sent as a bearer token; `post` is a JSON body.
fn call(port: u16, path: &str, token: Option<&str>, post: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if post.is_some() {
        // From stdin: a body can be longer than one command-line argument may be.
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(body) = post {
        stdin.write_all(body.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// An authenticated `GET`, expected to succeed: its JSON.
fn get(port: u16, path: &str) -> Value {
    let (status, body) = call(port, path, Some(TOKEN), None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Percent-encodes a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The rows of a report's section, by key.
fn section<'a>(report: &'a Value, key: &str) -> &'a Vec<Value> {
    report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no section {key}: {report}"))["rows"]
        .as_array()
        .unwrap()
}

fn start(dir: &Path) -> (Server, u16) {
    start_with(dir, "")
}

/// [`start`] with more configuration.
fn start_with(dir: &Path, extra: &str) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_file = |name: &str, token: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let reader = token_file("reader.token", TOKEN);
    let ingest = token_file("ingest.token", INGEST_TOKEN);
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\nauth:\n  identities:\n    \
             - {{name: apiserver, token_file: {}, role: ingest}}\n    \
             - {{name: soc-analyst, token_file: {}, role: reader}}\n{extra}",
            dir.join("data").display(),
            ingest.display(),
            reader.display()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.stderr")).unwrap())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(port, "/readyz", None, None).0 != 200 {
        assert!(Instant::now() < deadline, "serve did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[test]
fn forensic_questions_over_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, port) = start(tmp.path());
    let url = format!("http://127.0.0.1:{port}/k8s-audit");
    let sent = Command::new(BIN)
        .args(["gen", "--count", "20000", "--attacks", "--seed", "5"])
        .args(["--post", &url, "--token", INGEST_TOKEN])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let (status, body) = call(
        port,
        "/k8s-audit",
        Some(INGEST_TOKEN),
        Some(&format!("{DELETE}\n")),
    );
    assert_eq!(status, 200, "{body}");
    // The analyst's token cannot post events: a forged event would pass for the apiserver's.
    let (status, body) = call(
        port,
        "/k8s-audit",
        Some(TOKEN),
        Some(&format!("{DELETE}\n")),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the ingest role"), "{body}");

    // Acknowledged events become queryable within seconds (the log is converted every few seconds).
    let count_sql = format!(
        "/api/v1/query?sql={}",
        enc("SELECT count(*) AS n FROM events")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(port, &count_sql);
        if v["rows"][0][0] == 20_001 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all events queryable in 30 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Authentication: like the webhook.
    let who_path = "/api/v1/who?verb=delete&resource=pods/payments-api-123&namespace=prod\
                    &since=2026-01-01T00:00:00Z&until=2026-01-01T02:00:00Z";
    assert_eq!(call(port, who_path, None, None).0, 401);
    assert_eq!(call(port, who_path, Some("not-the-token"), None).0, 401);

    // Who deleted the pod in a two-hour window.
    let who = get(port, who_path);
    assert_eq!(
        who["title"],
        "who delete pods/payments-api-123 in namespace prod"
    );
    let rows = section(&who, "requests");
    assert_eq!(rows.len(), 1, "{who}");
    assert_eq!(rows[0]["user"], "mallory@example.com");
    assert_eq!(rows[0]["source_ips"], "192.0.2.66");
    assert_eq!(rows[0]["time"], "2026-01-01T01:02:03.456789Z");
    assert_eq!(rows[0]["audit_id"], "7d1c0b8e-0000-4000-8000-00000000d31e");
    assert_eq!(rows[0]["outcome"], "200 ok, authz allow");
    assert_eq!(
        rows[0]["level"],
        "Metadata: the object body was not recorded"
    );
    // Outside the window: nothing, and the note says where it looked.
    let later = get(
        port,
        "/api/v1/who?verb=delete&resource=pods/payments-api-123&since=2026-01-02T00:00:00Z",
    );
    assert!(section(&later, "requests").is_empty(), "{later}");
    assert!(
        later["sections"][0]["note"]
            .as_str()
            .unwrap()
            .contains("no matching request"),
        "{later}"
    );

    // The stored event itself, by `where`.
    let found = get(
        port,
        &format!(
            "/api/v1/query?where={}",
            enc("verb = delete and name = payments-api-123")
        ),
    );
    assert_eq!(found["count"], 1, "{found}");
    assert_eq!(found["truncated"], false);
    assert_eq!(
        found["events"][0]["auditID"],
        "7d1c0b8e-0000-4000-8000-00000000d31e"
    );
    assert_eq!(found["events"][0]["sourceIPs"][0], "192.0.2.66");
    let two = get(port, "/api/v1/query?where=resource%20%3D%20pods&limit=2");
    assert_eq!(two["count"], 2);
    assert_eq!(two["truncated"], true);

    // The console's reads. Paging: the second page of two is the next two requests.
    let pods = |offset: usize| {
        get(
            port,
            &format!("/api/v1/query?where=resource%20%3D%20pods&limit=2&offset={offset}"),
        )["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["auditID"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let four = pods(0).into_iter().chain(pods(2)).collect::<Vec<_>>();
    let first_four = get(port, "/api/v1/query?where=resource%20%3D%20pods&limit=4")["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["auditID"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(four, first_four, "offset pages through the same order");
    // The histogram of the deletion: one request, in the bucket of its time.
    let hist = get(
        port,
        &format!(
            "/api/v1/histogram?where={}",
            enc("verb = delete and name = payments-api-123")
        ),
    );
    assert_eq!(hist["total"], 1, "{hist}");
    let hit: Vec<&Value> = hist["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b[1] != 0)
        .collect();
    assert_eq!(hit.len(), 1, "{hist}");
    let bucket = hit[0][0]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let at = "2026-01-01T01:02:03.456789Z"
        .parse::<jiff::Timestamp>()
        .unwrap();
    let width = hist["bucket_seconds"].as_i64().unwrap();
    assert!(
        bucket <= at && at.as_second() < bucket.as_second() + width,
        "{hist}"
    );
    // Export as CSV: a header and the row; a formula in a cell is defused.
    let (status, csv) = call(
        port,
        &format!(
            "/api/v1/export?format=csv&where={}",
            enc("verb = delete and name = payments-api-123")
        ),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[0].starts_with("time,audit_id,user,verb,resource"),
        "{csv}"
    );
    assert!(
        lines[1].contains("mallory@example.com,delete,pods,prod,payments-api-123,192.0.2.66,200"),
        "{csv}"
    );
    let (status, jsonl) = call(
        port,
        "/api/v1/export?where=resource%20%3D%20pods",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200);
    let n = jsonl.lines().count();
    assert!(n > 2 && jsonl.lines().all(|l| l.starts_with('{')), "{n}");
    let (status, body) = call(port, "/api/v1/export?format=xml", Some(TOKEN), None);
    assert_eq!(status, 400);
    assert!(body.contains("not jsonl or csv"), "{body}");
    // One request's stages by auditID (narrowed by time, and found without it too); unknown is 404.
    let ev = get(
        port,
        "/api/v1/events/7d1c0b8e-0000-4000-8000-00000000d31e?since=2026-01-01T01:00:00Z&until=2026-01-01T02:00:00Z",
    );
    assert_eq!(ev["stages"][0]["verb"], "delete", "{ev}");
    let anywhere = get(
        port,
        "/api/v1/events/7d1c0b8e-0000-4000-8000-00000000d31e?since=2026-01-01T05:00:00Z",
    );
    assert_eq!(anywhere["stages"].as_array().unwrap().len(), 1);
    let (status, _) = call(port, "/api/v1/events/no-such-request", Some(TOKEN), None);
    assert_eq!(status, 404);
    // Volume over everything stored: per hour, the noisy groups with a None rule, GB/day.
    let vol = get(port, "/api/v1/volume?since=2025-12-31T00:00:00Z");
    assert_eq!(vol["events"], 20_001, "{vol}");
    let hours: u64 = vol["hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["events"].as_u64().unwrap())
        .sum();
    assert_eq!(hours, 20_001);
    assert!(vol["json_gb_per_day"].as_f64().unwrap() > 0.0, "{vol}");
    let noisy: Vec<&Value> = vol["groups"]["user_verb_resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["noisy"] == true)
        .collect();
    assert!(
        !noisy.is_empty(),
        "generated traffic has a noisy group: {vol}"
    );
    assert!(
        noisy[0]["suggestion"]
            .as_str()
            .unwrap()
            .starts_with("- level: None"),
        "{vol}"
    );
    assert!(noisy[0]["share"].as_f64().unwrap() > 0.1);

    // The attacker: whoever bound cluster-admin; its scope over the API.
    let binding = get(
        port,
        &format!(
            "/api/v1/query?where={}",
            enc(
                "verb = create and resource = clusterrolebindings and requestObject.roleRef.name = cluster-admin"
            )
        ),
    );
    let attacker = binding["events"][0]["user"]["username"]
        .as_str()
        .unwrap_or_else(|| panic!("{binding}"))
        .to_string();
    let name = binding["events"][0]["objectRef"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let scope = get(port, &format!("/api/v1/scope?user={}", enc(&attacker)));
    assert_eq!(scope["title"], format!("scope of {attacker}"));
    let rbac = section(&scope, "rbac_objects_created_or_changed");
    assert!(
        rbac.iter().any(|r| r["object"] == name.as_str()
            && r["grants"].as_str().unwrap().contains("cluster-admin")),
        "{rbac:?}"
    );
    let secrets = section(&scope, "secrets_read");
    assert!(
        secrets
            .iter()
            .any(|r| r["object"].as_str().unwrap().contains("stripe-api-key")),
        "{secrets:?}"
    );
    assert!(
        section(&scope, "what_persists_now")
            .iter()
            .any(|r| r["object"] == name.as_str()),
        "{scope}"
    );

    // A timeline.
    let timeline = get(port, "/api/v1/timeline?user=mallory%40example.com");
    let activity = section(&timeline, "activity_by_resource_and_verb");
    let delete = activity
        .iter()
        .find(|r| r["resource"] == "pods" && r["verb"] == "delete")
        .unwrap_or_else(|| panic!("{timeline}"));
    assert_eq!(delete["first_seen"], "2026-01-01T01:02:03.456789Z");
    assert_eq!(delete["ips"], "192.0.2.66");

    // SQL by POST (it need not sit in a URL), read-only.
    let (status, body) = call(
        port,
        "/api/v1/query",
        Some(TOKEN),
        Some(
            r#"{"sql": "SELECT verb, count(*) AS n FROM events WHERE resource = 'pods' AND verb = 'delete' GROUP BY verb"}"#,
        ),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["columns"], serde_json::json!(["verb", "n"]));
    assert_eq!(v["rows"][0][0], "delete");
    assert!(v["rows"][0][1].as_u64().unwrap() >= 1, "{v}");
    let (status, body) = call(
        port,
        "/api/v1/query",
        Some(TOKEN),
        Some(r#"{"sql": "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("DDL not supported"), "{body}");

    // Errors name what was wrong.
    let (status, body) = call(
        port,
        "/api/v1/query?where=verb%20%3D%3D%20delete",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 400);
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["offset"], 6, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("expected a value"),
        "{e}"
    );
    let (status, body) = call(
        port,
        "/api/v1/who?verb=delete&resource=pods&user=x",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("`user` is not a parameter of /api/v1/who"),
        "{body}"
    );
    let (status, body) = call(
        port,
        "/api/v1/timeline?user=x&since=yesterday",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 400);
    assert!(body.contains("`since`"), "{body}");
    let (status, body) = call(port, "/api/v1/scope", Some(TOKEN), None);
    assert_eq!(status, 400);
    assert!(body.contains("`user` is required"), "{body}");
    let (status, body) = call(port, "/api/v1/query?limit=1000000", Some(TOKEN), None);
    assert_eq!(status, 400);
    assert!(body.contains("`limit` is at most"), "{body}");
    let (status, body) = call(port, "/api/v1/query?colour=red", Some(TOKEN), None);
    assert_eq!(status, 400);
    assert!(body.contains("unknown field `colour`"), "{body}");
    let (status, body) = call(
        port,
        &format!("/api/v1/query?sql={}", enc("SELECT nope FROM events")),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 400);
    assert!(body.contains("nope"), "{body}");

    // The CLI reads the store while serve runs; nothing else may write it meanwhile.
    let data = tmp.path().join("data");
    let who = Command::new(BIN)
        .args([
            "who",
            "delete",
            "pods/payments-api-123",
            "-n",
            "prod",
            "--format",
            "json",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    assert!(String::from_utf8_lossy(&who.stdout).contains("mallory@example.com"));
    let delete_file = tmp.path().join("delete.jsonl");
    std::fs::write(&delete_file, format!("{DELETE}\n")).unwrap();
    let import = Command::new(BIN)
        .args(["import", "--data"])
        .arg(&data)
        .arg(&delete_file)
        .output()
        .unwrap();
    assert_eq!(import.status.code(), Some(2));
    let err = String::from_utf8_lossy(&import.stderr);
    assert!(err.contains("is in use by `kubetrail serve (pid"), "{err}");

    // Every API call is logged with the caller's identity by name, never the token.
    let log = std::fs::read_to_string(tmp.path().join("serve.stderr")).unwrap();
    assert!(log.contains("api request"), "{log}");
    assert!(log.contains("identity=\"soc-analyst\""), "{log}");
    assert!(!log.contains(TOKEN) && !log.contains(INGEST_TOKEN));
}

/// Waits until `sql`'s first value is `want` (events are converted into Parquet within seconds).
fn wait_for(port: u16, sql: &str, want: Value) {
    let path = format!("/api/v1/query?sql={}", enc(sql));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(port, &path);
        if v["rows"][0][0] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The server still takes events and answers after a query: nothing took the process down.
fn still_serving(port: u16) {
    let (status, body) = call(port, "/k8s-audit", Some(INGEST_TOKEN), Some(DELETE));
    assert_eq!(status, 200, "the webhook after the query: {body}");
    assert_eq!(call(port, "/healthz", None, None).0, 200);
}

#[test]
fn huge_or_deep_queries_are_refused_and_the_process_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, port) = start(tmp.path());
    let (status, body) = call(port, "/k8s-audit", Some(INGEST_TOKEN), Some(DELETE));
    assert_eq!(status, 200, "{body}");
    wait_for(port, "SELECT count(*) FROM events", 1.into());
    let query = |params: Value| {
        call(
            port,
            "/api/v1/query",
            Some(TOKEN),
            Some(&params.to_string()),
        )
    };
    let run = |n: usize, op: &str, last: &str| {
        let mut terms: Vec<String> = (1..n).map(|i| format!("user {op} u{i}")).collect();
        terms.push(last.to_string());
        terms.join(&format!(" {} ", if op == "=" { "or" } else { "and" }))
    };

    // Over the caps: 400 naming the cap, before anything is planned.
    for where_ in [
        run(10_000, "!=", "verb = delete"),
        run(10_000, "=", "user = mallory@example.com"),
    ] {
        let (status, body) = query(serde_json::json!({ "where": where_ }));
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("`where` has 10000 terms; at most 1000"),
            "{body}"
        );
    }
    let (status, body) =
        query(serde_json::json!({ "where": format!("user = '{}'", "x".repeat(300_000)) }));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("`where` is 300009 bytes; at most 262144"),
        "{body}"
    );
    let deep = format!("SELECT {}1 AS n", "1+".repeat(20_000));
    let (status, body) = query(serde_json::json!({ "sql": deep }));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("`sql` has 40004 tokens; at most 2048"),
        "{body}"
    );
    let (status, body) =
        query(serde_json::json!({ "sql": format!("SELECT '{}'", "x".repeat(70_000)) }));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("`sql` is 70009 bytes; at most 65536"),
        "{body}"
    );
    // Nesting the parser refuses: an error, not a crash.
    let parens = format!("SELECT {}1{} AS n", "(".repeat(1000), ")".repeat(1000));
    let (status, body) = query(serde_json::json!({ "sql": parens }));
    assert_eq!(status, 400, "{body}");
    let (status, body) = query(
        serde_json::json!({ "where": format!("{}user = a{}", "(".repeat(100_000), ")".repeat(100_000)) }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested too deeply"), "{body}");
    still_serving(port);

    // At the caps: the right answer.
    for where_ in [
        run(1000, "=", "user = mallory@example.com"),
        run(1000, "!=", "verb = delete"),
    ] {
        let (status, body) = query(serde_json::json!({ "where": where_ }));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["count"], 1, "{v}");
    }
    for sql in [
        format!("SELECT {}1 AS n", "1+".repeat(1022)),
        format!("SELECT 1{} AS n", "::int".repeat(1022)),
        format!("SELECT 1{} IS NULL AS n", " IS NULL".repeat(1021)),
    ] {
        let (status, body) = query(serde_json::json!({ "sql": sql }));
        assert_eq!(status, 200, "{body}");
    }
    still_serving(port);
}

#[test]
fn an_event_nested_deeper_than_serde_reads_is_served_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, port) = start(tmp.path());
    // serde_json reads 128 levels into a value; the pipeline stores events without that limit.
    let id = "0f0f0f0f-0000-4000-8000-00000000dee9";
    let nested = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    let deep = DELETE
        .replace("7d1c0b8e-0000-4000-8000-00000000d31e", id)
        .replace(r#""level":"Metadata""#, r#""level":"Request""#)
        .replace(
            r#""responseStatus""#,
            &format!(r#""requestObject":{nested},"responseStatus""#),
        );
    let (status, body) = call(port, "/k8s-audit", Some(INGEST_TOKEN), Some(&deep));
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(port, "/k8s-audit", Some(INGEST_TOKEN), Some(DELETE));
    assert_eq!(status, 200, "{body}");
    wait_for(port, "SELECT count(*) FROM events", 2.into());

    // Both events of the window, the deep one as its stored text.
    let (status, body) = call(
        port,
        "/api/v1/query?where=verb%20%3D%20delete",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""count":2"#), "{body}");
    assert!(body.contains(&nested), "{body}");
    let (status, body) = call(port, &format!("/api/v1/events/{id}"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&nested), "{body}");
    let (status, body) = call(
        port,
        "/api/v1/export?where=verb%20%3D%20delete",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.lines().count(), 2, "{body}");
    assert!(body.contains(&nested), "{body}");
    still_serving(port);
}

/// The most memory the process has held (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_function_cannot_take_the_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, port) = start(tmp.path());
    let (status, body) = call(
        port,
        "/api/v1/query",
        Some(TOKEN),
        Some(r#"{"sql": "SELECT repeat('a', 1500000000) AS a"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("repeat() would make") && body.contains("; at most 67108864"),
        "{body}"
    );
    let peak = peak_rss(server.0.id());
    assert!(peak < 1 << 30, "serve held {peak} bytes at its peak");
    still_serving(port);
}

/// The processes whose parent is `pid`: the query workers of a `serve`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so read after the last `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Waits (at most `secs`) until `serve` has no worker process left.
fn no_worker_within(pid: u32, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !children(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: workers {:?} still run after {secs} s",
            children(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ten copies of each stored event in one string (`x`) and their URIs (`y`): about 10 KB and 500 bytes per
/// event, enough that comparing them letter by letter (levenshtein) takes hours in one call.
const HOURS_OF_WORK: &str = "SELECT levenshtein(x, y) AS d FROM (SELECT string_agg(a.event, '') AS x, \
                             string_agg(a.uri, '') AS y FROM events a, generate_series(1, 2000) b)";

#[test]
fn queries_that_will_not_end_or_fit_are_killed_and_the_collector_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, port) = start_with(tmp.path(), "query: {timeout: 2s, memory_mb: 1024}\n");
    let pid = server.0.id();
    let (status, body) = call(port, "/k8s-audit", Some(INGEST_TOKEN), Some(DELETE));
    assert_eq!(status, 200, "{body}");
    wait_for(port, "SELECT count(*) FROM events", 1.into());
    let query = |sql: &str| {
        call(
            port,
            "/api/v1/query",
            Some(TOKEN),
            Some(&serde_json::json!({ "sql": sql }).to_string()),
        )
    };

    // One computation that never yields: in the collector's own process no timeout could stop it.
    let began = Instant::now();
    let (status, body) = query(HOURS_OF_WORK);
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("the query ran longer than 2 s"), "{body}");
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    no_worker_within(pid, 10, "after the time limit");
    still_serving(port);

    // Memory the engine's pool does not account for (levenshtein's table: 8 bytes a character of a 200 MB
    // string the pool admitted): the worker meets its limit, not the collector, whose memory stays small.
    let (status, body) = query(
        "SELECT levenshtein(x, x) AS d FROM (SELECT string_agg(a.event, '') AS x FROM events a, \
         generate_series(1, 250000) b)",
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("the query needed more than the 1024 MiB of memory a query may use"),
        "{body}"
    );
    no_worker_within(pid, 10, "after the memory limit");
    let peak = peak_rss(pid);
    assert!(peak < 1 << 30, "serve held {peak} bytes at its peak");
    still_serving(port);
    two_at_once(port);
}

/// The collector's resident memory now (VmRSS), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// `GET /api/v1/query?sql=SQL` by curl in the background, its answer thrown away, read at `rate` (curl's
/// `--limit-rate`) when given.
fn query_in_background(port: u16, sql: &str, rate: Option<&str>) -> Child {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-G"]);
    if let Some(rate) = rate {
        cmd.args(["--limit-rate", rate]);
    }
    cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
        .args(["--data-urlencode", &format!("sql={sql}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (at most 10 s) until `serve` runs `n` workers; their pids.
fn workers(pid: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = children(pid);
        if running.len() >= n {
            return running;
        }
        assert!(Instant::now() < deadline, "{n} query workers did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most `secs`) until no spill directory is left (each goes once its worker is reaped).
fn no_spill_within(dir: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !spill_dirs(dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "spill directories {:?} still there after {secs} s",
            spill_dirs(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The spill directories of running workers under the data directory.
fn spill_dirs(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("data/spill")) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn clients_that_hang_up_or_read_slowly_cost_the_collector_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // No time limit that could end a query first.
    let (server, port) = start_with(tmp.path(), "query: {timeout: 1h}\n");
    let pid = server.0.id();
    let (status, body) = call(port, "/k8s-audit", Some(INGEST_TOKEN), Some(DELETE));
    assert_eq!(status, 200, "{body}");
    wait_for(port, "SELECT count(*) FROM events", 1.into());

    // A query runs in its worker, with a spill directory of its own, and neither may leave its memory in a
    // core dump.
    let mut client = query_in_background(port, HOURS_OF_WORK, None);
    let worker = workers(pid, 1)[0];
    // (The worker sets its limits once started: wait for them.)
    let core = || {
        let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
        limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap()
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while core()
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>()
        != ["0", "0"]
    {
        assert!(Instant::now() < deadline, "{}", core());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        spill_dirs(tmp.path()).len(),
        1,
        "{:?}",
        spill_dirs(tmp.path())
    );
    // With one slot taken, the event view (a window, then the whole store) still answers: it is one query.
    let (status, body) = call(
        port,
        "/api/v1/events/7d1c0b8e-0000-4000-8000-00000000d31e?since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("payments-api-123"), "{body}");
    // The client hangs up: its worker ends, its spill directory is gone, its slot is free.
    client.kill().unwrap();
    client.wait().unwrap();
    no_worker_within(pid, 10, "after the client hung up");
    no_spill_within(tmp.path(), 10);
    still_serving(port);
    two_at_once(port);

    // Two answers of 120 MB of JSON (20 MB of control characters, six bytes each) to clients reading
    // 100 KB/s: the collector passes them on a few pieces at a time, never holding them whole.
    let big =
        "SELECT repeat(chr(1), CAST(value AS INT)) AS r FROM generate_series(1000000, 1000019)";
    let before = rss(pid);
    let mut slow: Vec<_> = (0..2)
        .map(|_| query_in_background(port, big, Some("100K")))
        .collect();
    let running = workers(pid, 2);
    // Both answers are made: each worker holds its 120 MB.
    let deadline = Instant::now() + Duration::from_secs(60);
    while running.iter().any(|w| rss(*w) < 120 << 20) {
        assert!(
            Instant::now() < deadline,
            "the answers were not made within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        let grown = rss(pid).saturating_sub(before);
        assert!(grown < 64 << 20, "the collector grew by {grown} bytes");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        children(pid),
        running,
        "the answers were sent before they were read"
    );
    for c in &mut slow {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    no_worker_within(pid, 10, "after the slow clients hung up");
    no_spill_within(tmp.path(), 10);
    two_at_once(port);
}

/// Both query slots are free (within 10 s: a slot is freed once its worker is reaped and its spill
/// directory removed): two queries at once are answered; a slot still held would answer 429 for good.
fn two_at_once(port: u16) {
    let q = || {
        call(
            port,
            "/api/v1/query?sql=SELECT%20count(*)%20AS%20n%20FROM%20events",
            Some(TOKEN),
            None,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let both = std::thread::scope(|s| {
            let (a, b) = (s.spawn(q), s.spawn(q));
            [a.join().unwrap(), b.join().unwrap()]
        });
        if both.iter().any(|(status, _)| *status == 429) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        for (status, body) in both {
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(r#""rows":[[1]]"#), "{body}");
        }
        return;
    }
}

/// One planted write of `deployments/api` in `prod` (its body as the event's `requestObject`).
fn planted_write(id: &str, verb: &str, user: &str, t: &str, body: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"{id}","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/prod/deployments/api","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["203.0.113.9"],"userAgent":"kubectl/v1.31","objectRef":{{"resource":"deployments","namespace":"prod","name":"api","apiGroup":"apps","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestObject":{body},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
    )
}

#[test]
fn history_and_sessions_over_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, port) = start(tmp.path());
    let deployment = |image: &str| {
        format!(
            r#"{{"kind":"Deployment","apiVersion":"apps/v1","metadata":{{"name":"api","namespace":"prod"}},"spec":{{"template":{{"spec":{{"containers":[{{"name":"api","image":"{image}","env":[{{"name":"DB_PASSWORD","value":"hunter2-prod-secret"}}]}}]}}}}}}}}"#
        )
    };
    let exec = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"exec-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods/db-0/exec?command=mysql&command=-uroot&command=-pS3cr3t-Hunter2&container=db&stdin=true&stdout=true&tty=true","verb":"create","user":{"username":"mallory@corp.example","groups":["system:authenticated"]},"sourceIPs":["203.0.113.9"],"userAgent":"kubectl/v1.31","objectRef":{"resource":"pods","namespace":"prod","name":"db-0","subresource":"exec","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2026-01-01T03:05:00.000000Z","stageTimestamp":"2026-01-01T03:09:30.000000Z"}"#;
    let lines = [
        planted_write(
            "create-1",
            "create",
            "ci",
            "2026-01-01T01:00:00.000000Z",
            &deployment("corp/api:2"),
        ),
        planted_write(
            "patch-1",
            "patch",
            "mallory@corp.example",
            "2026-01-01T03:02:11.000000Z",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"api","image":"evil/api:2"}]}}}}"#,
        ),
        exec.to_string(),
    ];
    let (status, body) = call(
        port,
        "/k8s-audit",
        Some(INGEST_TOKEN),
        Some(&format!("{}\n", lines.join("\n"))),
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let h = get(
            port,
            "/api/v1/history?resource=deploy/api&namespace=prod&since=2026-01-01T00:00:00Z",
        );
        if h["entries"].as_array().unwrap().len() == 2 {
            break h;
        }
        assert!(Instant::now() < deadline, "the writes never showed: {h}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(history["object"], "deployments/api -n prod");
    let swap = &history["entries"][1];
    assert_eq!(swap["user"], "mallory@corp.example");
    assert_eq!(swap["source_ips"][0], "203.0.113.9");
    assert_eq!(swap["patch"], "strategic_merge");
    assert_eq!(
        swap["changes"],
        serde_json::json!([{
            "path": "spec.template.spec.containers[0].image",
            "before": {"state": "value", "value": "corp/api:2"},
            "after": {"state": "value", "value": "evil/api:2"},
        }]),
        "the image swap, and nothing else: the redacted password is the same marker"
    );
    let created = history["entries"][0]["changes"].to_string();
    assert!(created.contains(r#""state":"redacted""#), "{created}");
    assert!(!history.to_string().contains("hunter2"), "{history}");
    assert!(
        !history.to_string().contains("kubetrail-redacted"),
        "{history}"
    );

    let sessions = get(port, "/api/v1/sessions?user=mallory@corp.example");
    let rows = section(&sessions, "sessions");
    assert_eq!(rows.len(), 1, "{sessions}");
    assert_eq!(rows[0]["command"], "mysql -uroot '-p[redacted]'");
    assert_eq!(rows[0]["pod"], "prod/db-0");
    assert_eq!(rows[0]["container"], "db");
    assert_eq!(rows[0]["duration"], "4m 30s");
    assert_eq!(
        (&rows[0]["stdin"], &rows[0]["tty"]),
        (&"yes".into(), &"yes".into())
    );
    assert!(!sessions.to_string().contains("S3cr3t"), "{sessions}");

    // Clear refusals: what is missing or wrong, by name.
    let (status, body) = call(port, "/api/v1/history", Some(TOKEN), None);
    assert_eq!(status, 400);
    assert!(body.contains("`resource` is required"), "{body}");
    let (status, body) = call(
        port,
        "/api/v1/history?resource=deployments",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 400);
    assert!(body.contains("RESOURCE/NAME"), "{body}");
    let (status, body) = call(port, "/api/v1/sessions?verb=get", Some(TOKEN), None);
    assert_eq!(status, 400);
    assert!(
        body.contains("`verb` is not a parameter of /api/v1/sessions"),
        "{body}"
    );
    assert_eq!(
        call(port, "/api/v1/history?resource=deploy/api", None, None).0,
        401
    );
    assert_eq!(call(port, "/api/v1/sessions", None, None).0, 401);
}
