//! Live detection in `kubetrail serve`: an event posted to the webhook is evaluated from the log once durable,
//! its alert appended to `DATA/alerts/alerts.jsonl`; a restart resumes from the detection cursor without
//! alerting twice; a config whose rules do not load refuses to start.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, curl, free_port};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// SIGTERM and wait: a clean shutdown.
    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// A request with a JSON answer: (status, body).
fn call(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "--max-time",
            "30",
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn start(config: &Path, log: &Path, port: u16) -> Server {
    Server(common::serve(config, &[], log, port))
}

fn alerts(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("alerts/alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn serve_alerts_on_stored_events_and_resumes_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules");
    let data = tmp.path().join("data");
    let port = free_port();
    let config = tmp.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ndetection:\n  builtin: false\n  rules: [{}]\n",
            data.display(),
            rules.display()
        ),
    )
    .unwrap();
    let positive = std::fs::read_to_string(rules.join("secrets-listed.positive.jsonl")).unwrap();
    let negative = std::fs::read_to_string(rules.join("secrets-listed.negative.jsonl")).unwrap();

    let server = start(&config, &tmp.path().join("serve-1.log"), port);
    assert_eq!(curl(port, "/k8s-audit", Some(&negative)), 200);
    assert_eq!(curl(port, "/k8s-audit", Some(&positive)), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts(&data).is_empty() {
        assert!(Instant::now() < deadline, "no alert written in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    let written = alerts(&data);
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0]["rule"]["id"], "test-secrets-listed");
    assert_eq!(written[0]["actor"]["username"], "eve@example.com");
    assert_eq!(
        written[0]["cluster"], "default",
        "the cluster the event was stored for"
    );
    assert_eq!(
        written[0]["auditIDs"][0],
        "5a1c0e55-0000-4000-8000-000000000001"
    );
    let log = std::fs::read_to_string(tmp.path().join("serve-1.log")).unwrap();
    assert!(log.contains("detecting with 1 rules"), "{log}");

    // The analyst's workflow: acknowledged from the CLI, resolved over the API, each change on record.
    let id = written[0]["id"].as_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data")
            .arg(&data)
            .env("USER", "analyst-ann")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cli(&["alerts", "list"]);
    assert!(listed.contains(&id) && listed.contains("open"), "{listed}");
    let acked = cli(&["alerts", "ack", &id[..8], "--note", "looking at it"]);
    assert!(acked.contains("acknowledged"), "{acked}");
    let shown = cli(&["alerts", "show", &id]);
    assert!(shown.contains("status: acknowledged"), "{shown}");
    assert!(
        shown.contains("cli:analyst-ann (uid ") && shown.contains("note: looking at it"),
        "{shown}"
    );
    assert!(
        shown.contains("investigate: kubetrail scope --user eve@example.com"),
        "{shown}"
    );

    // A restart resumes after what was evaluated: the stored events do not alert again.
    let server = start(&config, &tmp.path().join("serve-2.log"), port);
    assert_eq!(curl(port, "/k8s-audit", Some(&negative)), 200);
    let (status, open) = call(port, "GET", "/api/v1/alerts", "");
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["alerts"][0]["status"], "acknowledged");
    assert_eq!(open["alerts"][0]["history"][1]["text"], "looking at it");
    assert!(
        open["alerts"][0]["history"][0]["by"]
            .as_str()
            .unwrap()
            .starts_with("cli:analyst-ann (uid "),
        "{open}"
    );
    let (status, resolved) = call(port, "POST", &format!("/api/v1/alerts/{id}/resolve"), "");
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["history"][2]["by"], "api:127.0.0.1");
    let (status, _) = call(port, "POST", &format!("/api/v1/alerts/{id}/escalate"), "");
    assert_eq!(status, 404);
    let (status, _) = call(port, "POST", "/api/v1/alerts/nope/ack", "");
    assert_eq!(status, 404);
    let (_, open) = call(port, "GET", "/api/v1/alerts", "");
    assert_eq!(
        open["count"], 0,
        "resolved alerts are not listed by default"
    );
    let (_, all) = call(port, "GET", "/api/v1/alerts?all=true", "");
    assert_eq!(all["count"], 1);
    // A clean stop evaluates everything stored before it exits.
    server.stop();
    let raised: Vec<_> = alerts(&data)
        .into_iter()
        .filter(|a| a.get("resolved").is_none())
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    // The resolution is handed to the destinations as a notice beside it.
    assert!(
        alerts(&data)
            .iter()
            .any(|a| a["id"] == id.as_str() && a["resolved"].is_string())
    );

    // Rules that do not load: serve refuses to start and says where.
    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "title: Bad\nid: bad\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel: {verb|nope: get}\n  condition: sel\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ndetection:\n  builtin: false\n  rules: [{}]\n",
            data.display(),
            bad.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml:5:"), "{err}");
}

/// A `serve` config with the built-in pack, listening on `port`, storing in `dir/data`.
fn builtin_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("kubetrail.yaml");
    let data = dir.join("data");
    std::fs::write(
        &config,
        format!("listen: 127.0.0.1:{port}\ndata: {}\n", data.display()),
    )
    .unwrap();
    config
}

/// A Deployment `name` in `default` created by `user` (Metadata level, or with `template` as its body).
fn deployment_write(
    id: &str,
    user: &str,
    name: &str,
    template: Option<serde_json::Value>,
) -> String {
    let mut ev = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": id,
        "stage": "ResponseComplete", "verb": "create", "requestURI": "/apis/apps/v1/namespaces/default/deployments",
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["198.51.100.7"],
        "objectRef": {"resource": "deployments", "namespace": "default", "name": name, "apiGroup": "apps", "apiVersion": "v1"},
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": "2026-12-01T10:00:00.000000Z", "stageTimestamp": "2026-12-01T10:00:00.010000Z",
    });
    if let Some(t) = template {
        ev["level"] = "Request".into();
        ev["requestObject"] = serde_json::json!({"kind": "Deployment", "metadata": {"name": name}, "spec": {"template": t}});
    }
    ev.to_string()
}

/// replicaset-controller creating a privileged pod of Deployment `nginx-deployment` (Falco's trace).
const PRIVILEGED_POD: &str =
    include_str!("../../kubetrail-rules/tests/falco/create_nginx_pod_privileged.json");

fn privileged_alerts(data: &Path) -> Vec<serde_json::Value> {
    alerts(data)
        .into_iter()
        .filter(|a| a["rule"]["id"] == "kt-pod-privileged")
        .collect()
}

/// Waits (until `deadline`) for `/metrics` on `port` to show every line of `want`.
fn wait_for_metrics(port: u16, want: &[&str], deadline: Instant) {
    loop {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        if want.iter().all(|w| text.contains(w)) {
            return;
        }
        assert!(Instant::now() < deadline, "{want:?} not in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (until `deadline`) for a `kt-pod-privileged` alert in `data`.
fn wait_for_privileged(data: &Path, deadline: Instant) {
    while privileged_alerts(data).is_empty() {
        assert!(Instant::now() < deadline, "no alert in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A privileged Deployment written before this `serve` started (its write logged without the template): the
/// pods replicaset-controller makes from it are attributed from the store to who wrote it, at the rule's
/// level; a workload the platform wrote raises nothing.
#[test]
fn controller_made_pods_are_attributed_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let config = builtin_config(tmp.path(), port);
    let server = start(&config, &tmp.path().join("serve-1.log"), port);
    for w in [
        deployment_write("w1", "mallory@example.com", "nginx-deployment", None),
        deployment_write("w2", "eks:addon-manager", "node-agent", None),
    ] {
        assert_eq!(curl(port, "/k8s-audit", Some(&w)), 200);
    }
    server.stop();
    // Into the Parquet store (a query flushes the log first).
    let out = Command::new(BIN)
        .args(["query", "--where", "resource = \"deployments\"", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("mallory@example.com"));

    let pod = PRIVILEGED_POD.trim();
    let platform_pod = pod
        .replace("nginx-deployment-5cdcc99dbf", "node-agent-5cdcc99dbf")
        .replace(r#""auditID":""#, r#""auditID":"platform-"#);
    let server = start(&config, &tmp.path().join("serve-2.log"), port);
    assert_eq!(curl(port, "/k8s-audit", Some(&platform_pod)), 200);
    assert_eq!(curl(port, "/k8s-audit", Some(pod)), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    wait_for_privileged(&data, deadline);
    // Detection's own counters reach /metrics: two pods reported as their workloads', one of them dropped
    // once the store named the platform as its writer; one alert written.
    wait_for_metrics(
        port,
        &[
            "kubetrail_detection_events_total 2",
            "kubetrail_detection_controller_pods_total{outcome=\"reported\"} 2",
            "kubetrail_detection_controller_pods_total{outcome=\"platform\"} 1",
            "kubetrail_detection_alerts_total{kind=\"new\"} 1",
            "kubetrail_detection_evictions_total{state=\"workloads\"} 0",
            "kubetrail_detection_state_bytes ",
        ],
        deadline,
    );
    server.stop();
    let raised = privileged_alerts(&data);
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let a = &raised[0];
    assert_eq!(a["actor"]["username"], "mallory@example.com");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["owner"]["kind"], "Deployment");
    assert_eq!(a["owner"]["name"], "nginx-deployment");
    assert_eq!(a["owner"]["writer"], "mallory@example.com");
    assert_eq!(a["sourceIPs"], serde_json::json!(["198.51.100.7"]));
    let summary = a["summary"].as_str().unwrap();
    assert!(summary.contains("found in the store"), "{summary}");
    assert!(
        alerts(&data).iter().all(|a| !a["auditIDs"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("platform-")),
        "{:#?}",
        alerts(&data)
    );
}

/// A privileged Deployment's template reported before a restart: its pods, created after the restart, are
/// not reported again (the engine remembers earlier alerts' workloads).
#[test]
fn a_reported_template_stays_reported_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let config = builtin_config(tmp.path(), port);
    let template = serde_json::json!({"spec": {"containers": [
        {"name": "nginx", "image": "nginx", "securityContext": {"privileged": true}}
    ]}});
    let write = deployment_write(
        "w1",
        "alice@example.com",
        "nginx-deployment",
        Some(template),
    );
    let server = start(&config, &tmp.path().join("serve-1.log"), port);
    assert_eq!(curl(port, "/k8s-audit", Some(&write)), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    wait_for_privileged(&data, deadline);
    server.stop();

    let server = start(&config, &tmp.path().join("serve-2.log"), port);
    assert_eq!(curl(port, "/k8s-audit", Some(PRIVILEGED_POD.trim())), 200);
    wait_for_metrics(
        port,
        &["kubetrail_detection_controller_pods_total{outcome=\"covered\"} 1"],
        deadline,
    );
    server.stop();
    assert_eq!(privileged_alerts(&data).len(), 1, "{:#?}", alerts(&data));
}
