//! `kubetrail query`, `who`, `timeline` and `scope` over a data directory built by `kubetrail import` of
//! generated traffic with attacks, plus one hand-written pod delete.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;

const DELETE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"7d1c0b8e-0000-4000-8000-00000000d31e","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods/payments-api-123","verb":"delete","user":{"username":"mallory@example.com","groups":["oidc:contractors","system:authenticated"]},"sourceIPs":["192.0.2.66"],"userAgent":"kubectl/v1.30.1 (linux/amd64) kubernetes/abc","objectRef":{"resource":"pods","namespace":"prod","name":"payments-api-123","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-01-01T01:02:03.456789Z","stageTimestamp":"2026-01-01T01:02:03.500000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

/// One data directory for every test (an import of 20,000 events takes a few seconds in a debug build).
fn data() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let gen_file = tmp.path().join("gen.jsonl");
        kubetrail()
            .args(["gen", "--count", "20000", "--attacks", "--seed", "5", "-o"])
            .arg(&gen_file)
            .assert()
            .success();
        let delete_file = tmp.path().join("delete.jsonl");
        std::fs::write(&delete_file, format!("{DELETE}\n")).unwrap();
        let data = tmp.path().join("data");
        kubetrail()
            .arg("import")
            .arg("--data")
            .arg(&data)
            .arg(&gen_file)
            .arg(&delete_file)
            .assert()
            .success();
        (tmp, data)
    })
    .1
}

fn run(args: &[&str]) -> (String, String, i32) {
    let out = kubetrail()
        .args(args)
        .arg("--data")
        .arg(data())
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn who_names_the_user_ip_and_time_of_a_pod_delete() {
    let (out, err, code) = run(&[
        "who",
        "delete",
        "pods/payments-api-123",
        "-n",
        "prod",
        "--since",
        "2026-01-01T00:00:00Z",
        "--until",
        "2026-01-01T23:59:59Z",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mallory@example.com"), "{out}");
    assert!(out.contains("192.0.2.66"), "{out}");
    assert!(out.contains("2026-01-01T01:02:03.456789Z"), "{out}");
    assert!(
        out.contains("7d1c0b8e-0000-4000-8000-00000000d31e"),
        "{out}"
    );
    assert!(
        out.contains("Metadata: the object body was not recorded"),
        "{out}"
    );
    assert!(out.contains("200 ok"), "{out}");

    let (out, _, code) = run(&[
        "who",
        "delete",
        "pods/payments-api-123",
        "-n",
        "prod",
        "--since",
        "2026-01-01T00:00:00Z",
        "--until",
        "2026-01-01T23:59:59Z",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["user"], "mallory@example.com");
    assert_eq!(v["source_ips"], "192.0.2.66");

    // Outside the time range: nothing, and a hint.
    let (out, _, code) = run(&[
        "who",
        "delete",
        "pods/payments-api-123",
        "--since",
        "2026-01-02T00:00:00Z",
        "--until",
        "2026-01-03T00:00:00Z",
    ]);
    assert_eq!(code, 0);
    assert!(!out.contains("mallory"), "{out}");
    assert!(out.contains("no matching request"), "{out}");
}

#[test]
fn query_where_finds_the_delete_and_prints_stored_events() {
    let (out, err, code) = run(&[
        "query",
        "--where",
        "verb = delete and resource = pods and namespace = prod",
    ]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    assert!(header.starts_with("TIME"), "{out}");
    assert!(out.contains("mallory@example.com"), "{out}");
    assert!(out.contains("prod/payments-api-123"), "{out}");

    let (out, err, code) = run(&[
        "query",
        "--where",
        "verb = delete and resource = pods",
        "--format",
        "json",
        "--limit",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["verb"] == "delete"));
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e["auditID"] == "7d1c0b8e-0000-4000-8000-00000000d31e")
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["sourceIPs"][0], "192.0.2.66");

    // A dotted path runs through kt_json_match; csv has a header and quoted fields.
    let (out, err, code) = run(&[
        "query",
        "--where",
        "objectRef.name = payments-api-123",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with("TIME,USER,VERB"), "{out}");

    // SQL as is.
    let (out, err, code) = run(&[
        "query",
        "--sql",
        "SELECT \"user\", count(*) AS n FROM events WHERE \"verb\" = 'delete' AND \"name\" = 'payments-api-123' GROUP BY \"user\"",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"user": "mallory@example.com", "n": 1})
    );
}

#[test]
fn query_errors_point_at_the_token() {
    let (_, err, code) = run(&["query", "--where", "user = "]);
    assert_eq!(code, 2);
    assert!(err.contains('^'), "{err}");
    let (_, err, code) = run(&["query", "--sql", "SELECT nope FROM events"]);
    assert_eq!(code, 2);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn scope_lists_the_binding_and_the_secrets_read() {
    // The generator's attacker: whoever created a ClusterRoleBinding to cluster-admin.
    let (out, err, code) = run(&[
        "query",
        "--where",
        "verb = create and resource = clusterrolebindings and requestObject.roleRef.name = cluster-admin",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let binding: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let attacker = binding["user"]["username"].as_str().unwrap().to_string();
    let name = binding["objectRef"]["name"].as_str().unwrap().to_string();

    let (out, err, code) = run(&["scope", "--user", &attacker]);
    assert_eq!(code, 0, "{err}");
    let section = |title: &str| -> String {
        let start = out
            .find(&format!("\n{title} ("))
            .unwrap_or_else(|| panic!("{title}: {out}"));
        let rest = &out[start + 1..];
        let end = rest[1..].find("\n\n").map_or(rest.len(), |i| i + 1);
        rest[..end].to_string()
    };
    let rbac = section("RBAC objects created or changed");
    assert!(rbac.contains(&name), "{rbac}");
    assert!(rbac.contains("cluster-admin"), "{rbac}");
    let secrets = section("secrets read");
    assert!(secrets.contains("secrets"), "{secrets}");
    assert!(!secrets.starts_with("secrets read (0)"), "{secrets}");
    assert!(secrets.contains("stripe-api-key"), "{secrets}");
    let persists = section("what persists now");
    assert!(persists.contains(&name), "{persists}");

    let (out, err, code) = run(&["scope", "--user", &attacker, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["section"] == "secrets_read"));
}

#[test]
fn timeline_groups_by_resource_and_verb() {
    let (out, err, code) = run(&[
        "timeline",
        "--user",
        "mallory@example.com",
        "--format",
        "markdown",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# timeline of mallory@example.com"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("| pods | delete"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("2026-01-01T01:02:03.456789Z"), "{row}");
    assert!(row.contains("192.0.2.66"), "{row}");
}

#[test]
fn the_largest_accepted_queries_run_and_larger_ones_are_refused_by_name() {
    // 1,000 terms (the cap): the answer; this overflowed a 2 MiB runtime thread's stack and aborted before.
    let terms = |n: usize| {
        let mut t: Vec<String> = (1..n).map(|i| format!("user != u{i}")).collect();
        t.push("verb = delete".into());
        t.join(" and ")
    };
    let (out, err, code) = run(&["query", "--where", &terms(1000), "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("payments-api-123"), "{out}");
    let (_, err, code) = run(&["query", "--where", &terms(1001)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--where has 1001 terms; at most 1000"),
        "{err}"
    );
    let deepest = format!("SELECT {}1 AS n", "1+".repeat(1022));
    let (out, err, code) = run(&["query", "--sql", &deepest]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1023"), "{out}");
    let (_, err, code) = run(&["query", "--sql", &format!("SELECT {}1", "1+".repeat(1100))]);
    assert_eq!(code, 2);
    assert!(err.contains("--sql has 2202 tokens; at most 2048"), "{err}");
}
