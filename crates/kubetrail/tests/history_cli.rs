//! `kubetrail history` and `kubetrail sessions` over generated traffic with its attack steps (`gen --attacks`,
//! the workload-tamper scenario): CI deploys the prod payments API, then an attacker swaps its image by a
//! strategic merge patch, replaces it with a privileged sidecar added, and execs into its pod with a database
//! password on the command line. The expectations are read from the generated file itself (which request,
//! by whom, from where), never hard-coded from a run.

use std::path::PathBuf;
use std::sync::OnceLock;

use assert_cmd::Command;
use serde_json::Value;

const OBJECT: &str = "deployments/payments-api";
const NS: &str = "prod-payments";
/// What the generator puts in the clear, and the collector must redact before anything is stored.
const SECRETS: [&str; 2] = ["S3cr3t-Hunter2", "pay-Db!7qLw29xVz"];

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

struct Stored {
    data: PathBuf,
    /// The generated events of the scenario, by what they are.
    patch: Value,
    sidecar: Value,
    exec: Value,
    _tmp: tempfile::TempDir,
}

/// The attacker's request on the Deployment or its pods that matches `pred`.
fn find(events: &[Value], pred: impl Fn(&Value) -> bool) -> Value {
    events
        .iter()
        .find(|e| pred(e))
        .cloned()
        .expect("the generated traffic holds the workload-tamper scenario")
}

fn stored() -> &'static Stored {
    static STORED: OnceLock<Stored> = OnceLock::new();
    STORED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("gen.jsonl");
        kubetrail()
            .args(["gen", "--attacks", "--count", "20000", "--rate", "3"])
            .args(["--seed", "1", "--start", "2026-03-01T00:00:00Z", "-o"])
            .arg(&file)
            .assert()
            .success();
        let text = std::fs::read_to_string(&file).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let on_object = |e: &Value| {
            e["objectRef"]["resource"] == "deployments"
                && e["objectRef"]["name"] == "payments-api"
                && e["objectRef"]["namespace"] == NS
        };
        let patch = find(&events, |e| {
            on_object(e)
                && e["verb"] == "patch"
                && e["requestObject"].to_string().contains("evil.example")
        });
        let sidecar = find(&events, |e| {
            on_object(e)
                && e["verb"] == "update"
                && e["requestObject"]
                    .to_string()
                    .contains("\"privileged\":true")
        });
        let exec = find(&events, |e| {
            e["objectRef"]["subresource"] == "exec"
                && e["requestURI"].as_str().unwrap().contains("command=mysql")
        });
        let data = tmp.path().join("data");
        kubetrail()
            .args(["import", "--data"])
            .arg(&data)
            .arg(&file)
            .assert()
            .success();
        Stored {
            data,
            patch,
            sidecar,
            exec,
            _tmp: tmp,
        }
    })
}

fn run(args: &[&str]) -> String {
    let s = stored();
    let out = kubetrail()
        .args(args)
        .arg("--data")
        .arg(&s.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{args:?} shows a secret: {text}");
    }
    assert!(
        !text.contains("kubetrail-redacted"),
        "{args:?} shows a marker"
    );
    text
}

/// The history's entry of the generated request `event`.
fn entry<'a>(history: &'a Value, event: &Value) -> &'a Value {
    history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["audit_id"] == event["auditID"])
        .unwrap_or_else(|| panic!("no entry for {}: {history}", event["auditID"]))
}

#[test]
fn history_shows_the_image_swap_and_the_sidecar_with_their_author() {
    let s = stored();
    let history: Value =
        serde_json::from_str(&run(&["history", OBJECT, "-n", NS, "--format", "json"])).unwrap();
    let swap = entry(&history, &s.patch);
    assert_eq!(swap["user"], s.patch["user"]["username"]);
    assert_eq!(swap["source_ips"], s.patch["sourceIPs"]);
    assert_eq!(swap["user_agent"], s.patch["userAgent"]);
    assert_eq!(swap["patch"], "strategic_merge");
    assert_eq!(swap["before_known"], true, "CI's update recorded the state");
    let changes = swap["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "only the image: {swap}");
    assert_eq!(changes[0]["path"], "spec.template.spec.containers[0].image");
    assert!(
        changes[0]["before"]["value"]
            .as_str()
            .unwrap()
            .starts_with("registry.example.com/payments/api:"),
        "{swap}"
    );
    assert_eq!(
        changes[0]["after"]["value"],
        "evil.example/payments/api:v1.42.3"
    );

    let side = entry(&history, &s.sidecar);
    assert_eq!(side["user"], s.sidecar["user"]["username"]);
    let paths: Vec<&str> = side["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"spec.template.spec.containers[1].securityContext.privileged"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("containers[0].env")),
        "the redacted password is unchanged, so not listed: {paths:?}"
    );

    // The text answer: the change, its author and where from, as an analyst reads it.
    let text = run(&["history", OBJECT, "-n", NS]);
    let line = format!(
        "spec.template.spec.containers[0].image: {} -> evil.example/payments/api:v1.42.3",
        changes[0]["before"]["value"].as_str().unwrap()
    );
    assert!(text.contains(&line), "{text}");
    let head = format!(
        "by {} from {}",
        s.patch["user"]["username"].as_str().unwrap(),
        s.patch["sourceIPs"][0].as_str().unwrap()
    );
    assert!(text.contains(&head), "{text}");
    assert!(
        text.contains(
            "spec.template.spec.containers[1].securityContext.privileged: (absent) -> true"
        ),
        "{text}"
    );
}

#[test]
fn sessions_list_the_exec_with_its_command_and_length() {
    let s = stored();
    let user = s.exec["user"]["username"].as_str().unwrap();
    let out = run(&["sessions", "--user", user, "--format", "json"]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exec = rows
        .iter()
        .find(|r| r["audit_id"] == s.exec["auditID"])
        .unwrap_or_else(|| panic!("no session of the exec: {out}"));
    assert_eq!(exec["command"], "mysql -uroot '-p[redacted]' payments");
    assert_eq!(exec["container"], "app");
    assert_eq!(
        exec["pod"],
        format!("{NS}/{}", s.exec["objectRef"]["name"].as_str().unwrap())
    );
    assert_eq!(
        (&exec["stdin"], &exec["tty"]),
        (&"yes".into(), &"yes".into())
    );
    assert_eq!(exec["source_ips"], s.exec["sourceIPs"][0]);
    // Its length, from the request's stages.
    let t = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    let secs = (t(&s.exec["stageTimestamp"]) - t(&s.exec["requestReceivedTimestamp"])).as_secs();
    assert_eq!(
        exec["end"]
            .as_str()
            .map(|e| e.parse::<jiff::Timestamp>().unwrap()),
        Some(t(&s.exec["stageTimestamp"]))
    );
    let length = match secs % 60 {
        0 => format!("{}m", secs / 60),
        s => format!("{}m {s}s", secs / 60),
    };
    assert_eq!(exec["duration"], length);
    assert!(secs >= 120, "a session of minutes: {secs}s");

    // The scope report names the session and every object the identity changed, with its history command.
    let scope = run(&["scope", "--user", user, "--format", "json"]);
    let lines: Vec<Value> = scope
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["section"] == "sessions" && l["command"] == exec["command"]),
        "{scope}"
    );
    let changed = lines
        .iter()
        .find(|l| l["section"] == "objects_changed" && l["name"] == "payments-api")
        .unwrap_or_else(|| panic!("no changed Deployment: {scope}"));
    assert_eq!(
        changed["history"],
        format!("kubetrail history {OBJECT} -n {NS}")
    );
    assert_eq!(changed["verbs"], "patch,update");
}

#[test]
fn history_says_what_it_cannot_know() {
    let s = stored();
    let none = run(&["history", "deployments/nothing-here", "-n", NS]);
    assert!(
        none.contains("no write of deployments/nothing-here -n prod-payments"),
        "{none}"
    );
    let out = kubetrail()
        .args(["history", "deployments", "--data"])
        .arg(&s.data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RESOURCE/NAME"));
    // The deployment controller's status writes are counted, and shown when asked.
    let text = run(&["history", OBJECT, "-n", NS]);
    assert!(text.contains("write(s) of its status"), "{text}");
    let with: Value = serde_json::from_str(&run(&[
        "history",
        OBJECT,
        "-n",
        NS,
        "--with-status",
        "--format",
        "json",
    ]))
    .unwrap();
    assert!(
        with["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["subresource"] == "status"),
        "{with}"
    );
}

#[test]
fn the_watched_cannot_forge_lines_of_the_text_history() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("forged.jsonl");
    let forged =
        "x)\n\n2026-11-25T09:00:00Z  patch  by ci-bot@corp.example from 10.0.0.5  code 200";
    let patch = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": "forge-1",
        "stage": "ResponseComplete", "verb": "patch",
        "requestURI": "/apis/apps/v1/namespaces/prod/deployments/api",
        "user": {"username": "mallory@corp.example", "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.9"], "userAgent": "kubectl/v1.31\u{202e}",
        "objectRef": {"resource": "deployments", "namespace": "prod", "name": "api", "apiGroup": "apps",
                      "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestObject": {"spec": {"strategy": {"$retainKeys": ["type", forged]},
                                    "template": {"metadata": {"annotations": {forged: "y"}}}}},
        "requestReceivedTimestamp": "2026-11-25T10:00:00.000000Z",
        "stageTimestamp": "2026-11-25T10:00:00.000000Z",
    });
    std::fs::write(&file, format!("{patch}\n")).unwrap();
    let data = tmp.path().join("data");
    kubetrail()
        .args(["import", "--data"])
        .arg(&data)
        .arg(&file)
        .assert()
        .success();
    let out = kubetrail()
        .args(["history", "deployments/api", "-n", "prod", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.lines().any(|l| l.starts_with("2026-11-25T09:00:00Z")),
        "a forged line: {text}"
    );
    assert!(
        !text.contains('\u{202e}'),
        "a direction change reaches the terminal: {text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("2026-")).count(),
        1,
        "one request, one head line: {text}"
    );
}
