//! The alerting issue's "done when": the seed's breach replayed through the webhook of
//! `kubetrail serve --alert-webhook URL` reaches the receiver as one alert per attack step, each carrying the
//! actor's recent activity, first-seen facts, its runbook, the investigation commands and the console link;
//! the analyst acknowledges from the CLI and resolves through the API; a suppression is announced to every
//! destination, silences delivery but keeps the alert on record; `/metrics` counts deliveries per destination with their latency.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::{BIN, curl, free_port, receiver};

fn next(rx: &Receiver<Value>) -> Value {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("an alert arrived within 30 s")
}

/// `curl` returning the body.
fn curl_body(port: u16, method: &str, path: &str, body: Option<&str>) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-X", method]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{path}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn kubetrail(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubetrail {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_seed_breach_reaches_the_webhook_with_triage_context_and_the_workflow_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (hook, rx) = receiver();
    let data = tmp.path().join("data");
    let config = tmp.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!("listen: 127.0.0.1:{port}\ndata: {}\n", data.display()),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{hook}/hook");
    let mut serve = common::serve(
        &config,
        &[
            "--alert-webhook",
            &url,
            "--console-url",
            "https://kubetrail.example.com/",
        ],
        &tmp.path().join("serve.log"),
        port,
    );

    // The recon (a forbidden list of secrets), then the four steps, as the apiserver's webhook sends them.
    let breach = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breach.jsonl"),
    )
    .unwrap();
    let events: Vec<&str> = breach.lines().collect();
    let list = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{}]}}"#,
        events.join(",")
    );
    assert_eq!(curl(port, "/k8s-audit", Some(&list)), 200);

    // One alert per step of medium severity or above (the exec itself is low; the correlation that
    // follows the host pod into the exec is critical).
    let steps = [
        "kt-secret-read-prod",
        "kt-rbac-bind-cluster-admin",
        "kt-pod-privileged",
        "kt-pod-sensitive-hostpath",
        "kt-host-pod-then-exec",
        "kt-rbac-then-workload",
    ];
    let mut got: BTreeMap<String, Value> = BTreeMap::new();
    while !steps.iter().all(|s| got.contains_key(*s)) {
        let a = next(&rx);
        let rule = a["rule"]["id"].as_str().unwrap().to_string();
        assert!(
            a["update"] == Value::Bool(true) || !got.contains_key(&rule),
            "{rule} delivered twice: {a}"
        );
        got.insert(rule, a);
    }
    let actor = "system:serviceaccount:tools:report-runner";
    for step in steps {
        let a = &got[step];
        let id = a["id"].as_str().unwrap();
        assert_eq!(a["actor"]["username"], actor, "{step}");
        assert!(
            a["runbook"]
                .as_str()
                .is_some_and(|r| r.contains("kubetrail ")),
            "{step} carries its runbook: {a}"
        );
        assert_eq!(
            a["console"],
            format!("https://kubetrail.example.com/alerts/{id}"),
            "{step}"
        );
        assert!(
            a["investigate"][0]
                .as_str()
                .is_some_and(|c| c == format!("kubetrail scope --user {actor} --since 7d")),
            "{step}: {a}"
        );
        assert!(a["detected"].as_str().is_some(), "{step}");
        let ctx = &a["context"];
        // The actor's hour: at least the forbidden recon and this step.
        assert!(
            ctx["activity"]["requests"].as_u64().unwrap() >= 2,
            "{step}: {ctx}"
        );
        assert!(
            ctx["activity"]["failures"].as_u64().unwrap() >= 1,
            "{step}: the forbidden list counts as a failure: {ctx}"
        );
        // Never seen before this breach began (kubetrail watched only it): the identity was first seen
        // today, by the recon, so it is new in the 30-day sense.
        assert_eq!(ctx["firstSeen"]["identity"]["value"], actor, "{step}");
        assert_eq!(ctx["firstSeen"]["identity"]["new"], true, "{step}: {ctx}");
        assert_eq!(ctx["firstSeen"]["sourceIPs"][0]["value"], "10.42.3.17");
        assert_eq!(ctx["firstSeen"]["userAgent"]["new"], true);
    }
    // The secret read came first; by the grant, the actor has other unresolved alerts.
    let grant = &got["kt-rbac-bind-cluster-admin"]["context"]["otherAlerts"];
    assert!(
        grant
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == got["kt-secret-read-prod"]["id"]),
        "{grant}"
    );
    assert_eq!(
        got["kt-secret-read-prod"]["context"]["activity"]["top"][0]["resource"],
        "secrets"
    );

    // The analyst acknowledges from the CLI and resolves through the API.
    let secret = got["kt-secret-read-prod"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = kubetrail(&data, &["alerts", "ack", &secret]);
    assert!(out.contains("acknowledged"), "{out}");
    let shown = kubetrail(&data, &["alerts", "show", &secret]);
    assert!(
        shown.contains("context:") && shown.contains("last hour") && shown.contains("NEW"),
        "{shown}"
    );
    assert!(shown.contains("runbook:"), "{shown}");
    let resolved = curl_body(
        port,
        "POST",
        &format!("/api/v1/alerts/{secret}/resolve"),
        None,
    );
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    let history: Vec<&str> = resolved["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["ack", "resolve"]);
    // The resolution is delivered too.
    let notice = next(&rx);
    assert_eq!(notice["id"], secret.as_str());
    assert!(notice["resolved"].as_str().is_some(), "{notice}");

    // A suppression through the API silences a second identity's secret read: recorded, not delivered.
    let s = curl_body(
        port,
        "POST",
        "/api/v1/suppressions",
        Some(
            r#"{"rule":"kt-secret-read-prod","user":"system:serviceaccount:tools:nightly-*","for":"2h","reason":"nightly backup job"}"#,
        ),
    );
    let sid = s["id"].as_str().expect("a suppression id").to_string();
    // Making it is itself an alert, delivered to every destination.
    let governance = next(&rx);
    assert_eq!(
        governance["rule"]["id"], "kt-suppression-created",
        "{governance}"
    );
    assert_eq!(governance["severity"], "high");
    assert!(
        governance["summary"].as_str().unwrap().contains(&sid),
        "{governance}"
    );
    let silenced = events[1]
        .replace("\"b1\"", "\"c1\"")
        .replace("tools:report-runner", "tools:nightly-backup");
    assert_eq!(curl(port, "/k8s-audit", Some(&silenced)), 200);
    // Then an alert that is not suppressed: the queue is in order, so when it arrives the silenced one has
    // been passed over.
    let after = events[2]
        .replace("\"b2\"", "\"c2\"")
        .replace("tools:report-runner", "tools:intruder");
    assert_eq!(curl(port, "/k8s-audit", Some(&after)), 200);
    let a = next(&rx);
    assert_eq!(a["rule"]["id"], "kt-rbac-bind-cluster-admin", "{a}");
    assert_eq!(
        a["actor"]["username"],
        "system:serviceaccount:tools:intruder"
    );
    let suppressed = kubetrail(
        &data,
        &[
            "alerts",
            "list",
            "--status",
            "suppressed",
            "--format",
            "json",
        ],
    );
    let line: Value =
        serde_json::from_str(suppressed.lines().next().expect("one suppressed")).unwrap();
    assert_eq!(line["suppressed"], sid.as_str());
    assert_eq!(
        line["actor"]["username"],
        "system:serviceaccount:tools:nightly-backup"
    );
    let listed = kubetrail(&data, &["alerts", "suppressions"]);
    assert!(
        listed.contains(&sid) && listed.contains("nightly backup job") && listed.contains("api:"),
        "{listed}"
    );

    // Delivery counted per destination, with latency.
    let metrics = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let delivered = metrics
        .lines()
        .find(|l| l.starts_with("kubetrail_alerts_delivered_total{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: u64 = delivered.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 8, "{delivered}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kubetrail_alert_delivery_seconds_count{") && !l.ends_with(" 0")),
        "{metrics}"
    );

    serve.kill().unwrap();
    serve.wait().unwrap();
}
