//! Who may do what, end to end on the real `kubetrail serve`: the sending identity stored with each event;
//! four identities (ingest, reader, responder, admin) against every route (the webhook, each API route, the console's pages and assets, `/metrics`), and
//! the governance of suppressions and resolutions: a `*`-only selector and a too-long suppression are
//! refused, and making or lifting a suppression or resolving a critical alert reaches a destination whose
//! route asks for nothing of the kind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{free_port, receiver, refusing, serve};

const INGEST: &str = "access-ingest-0123456789abcdef0123456789";
const READER: &str = "access-reader-0123456789abcdef0123456789";
const RESPONDER: &str = "access-responder-0123456789abcdef012345";
const ADMIN: &str = "access-admin-0123456789abcdef0123456789ab";

/// `curl` with a token: (status, body).
fn call(port: u16, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.parse().unwrap_or(0), body.to_string())
}

fn token_file(dir: &Path, name: &str, token: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// The next alert the destination received whose rule is `rule` (others are passed over).
fn delivered(rx: &Receiver<Value>, rule: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let a = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {rule} alert delivered within 30 s"));
        if a["rule"]["id"] == rule {
            return a;
        }
    }
}

#[test]
fn every_role_against_every_route_and_governed_suppressions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let (hook, rx) = receiver();
    let refuses = refusing();
    let config = dir.join("kubetrail.yaml");
    // The destination's route asks for one rule that never fires: only governance alerts reach it. Another
    // destination refuses everything for good.
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {data}\nauth:\n  identities:\n\
             \x20   - {{name: apiserver, token_file: {i}, role: ingest}}\n\
             \x20   - {{name: soc-analyst, token_file: {r}, role: reader}}\n\
             \x20   - {{name: soc-lead, token_file: {s}, role: responder}}\n\
             \x20   - {{name: platform-security, token_file: {a}, role: admin}}\n\
             alerts:\n  destinations:\n    - type: webhook\n      url: http://127.0.0.1:{hook}/hook\n\
             \x20     min_severity: critical\n      rules: [kt-never-fires]\n\
             \x20   - type: webhook\n      url: http://127.0.0.1:{refuses}/hook\n",
            data = dir.join("data").display(),
            i = token_file(dir, "ingest", INGEST),
            r = token_file(dir, "reader", READER),
            s = token_file(dir, "responder", RESPONDER),
            a = token_file(dir, "admin", ADMIN),
        ),
    )
    .unwrap();
    let mut child = serve(&config, &[], &dir.join("serve.log"), port);

    let breach = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breach.jsonl"),
    )
    .unwrap();
    let (status, body) = call(port, "POST", "/k8s-audit", INGEST, Some(&breach));
    assert_eq!(status, 200, "{body}");
    // Wait for the breach's critical alert.
    let deadline = Instant::now() + Duration::from_secs(30);
    let critical = loop {
        let (_, body) = call(port, "GET", "/api/v1/alerts?all=true", READER, None);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if let Some(a) = v["alerts"].as_array().and_then(|a| {
            a.iter()
                .find(|a| a["rule"]["id"] == "kt-rbac-bind-cluster-admin")
        }) {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no critical alert: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };

    // The sender is stored with every event: the apiserver's name, queryable.
    let sql = r#"{"sql":"SELECT source, count(*) AS n FROM events GROUP BY source"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(port, "POST", "/api/v1/query", READER, Some(sql));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["rows"] == serde_json::json!([["webhook:apiserver", 5]]) {
            break;
        }
        assert!(Instant::now() < deadline, "senders: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // method, path, body, who may
    use Need::*;
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Need {
        Ingest,
        Any,
        Reader,
        Responder,
        Admin,
    }
    let a = critical.as_str();
    let event = breach.lines().next().unwrap().replace("\"b0\"", "\"x0\"");
    let routes: Vec<(&str, String, Option<&str>, Need)> = vec![
        ("POST", "/k8s-audit".into(), Some(event.as_str()), Ingest),
        ("POST", "/api/v1/audit".into(), Some(event.as_str()), Ingest),
        ("GET", "/metrics".into(), None, Any),
        ("GET", "/api/v1/session".into(), None, Reader),
        (
            "GET",
            "/api/v1/query?where=verb%20%3D%20get".into(),
            None,
            Reader,
        ),
        (
            "POST",
            "/api/v1/query".into(),
            Some(r#"{"sql":"SELECT count(*) FROM events"}"#),
            Reader,
        ),
        (
            "GET",
            "/api/v1/who?verb=get&resource=secrets".into(),
            None,
            Reader,
        ),
        (
            "POST",
            "/api/v1/who".into(),
            Some(r#"{"verb":"get","resource":"secrets"}"#),
            Reader,
        ),
        ("GET", "/api/v1/timeline?user=x".into(), None, Reader),
        (
            "POST",
            "/api/v1/timeline".into(),
            Some(r#"{"user":"x"}"#),
            Reader,
        ),
        ("GET", "/api/v1/scope?user=x".into(), None, Reader),
        (
            "POST",
            "/api/v1/scope".into(),
            Some(r#"{"user":"x"}"#),
            Reader,
        ),
        ("GET", "/api/v1/histogram".into(), None, Reader),
        ("GET", "/api/v1/export?format=csv".into(), None, Reader),
        ("GET", "/api/v1/events/b1".into(), None, Reader),
        ("GET", "/api/v1/volume".into(), None, Reader),
        ("GET", "/api/v1/alerts".into(), None, Reader),
        ("GET", format!("/api/v1/alerts/{a}"), None, Reader),
        ("GET", "/api/v1/suppressions".into(), None, Reader),
        ("POST", format!("/api/v1/alerts/{a}/ack"), None, Responder),
        (
            "POST",
            format!("/api/v1/alerts/{a}/assign"),
            Some(r#"{"to":"ann"}"#),
            Responder,
        ),
        (
            "POST",
            format!("/api/v1/alerts/{a}/note"),
            Some(r#"{"text":"looking"}"#),
            Responder,
        ),
        (
            "POST",
            "/api/v1/suppressions/s-none/lift".into(),
            None,
            Admin,
        ),
        (
            "POST",
            "/api/v1/suppressions".into(),
            Some(r#"{"user":"*","for":"1h","reason":"x"}"#),
            Admin,
        ),
    ];
    let pages = [
        "/",
        "/alerts",
        "/search",
        "/timeline",
        "/scope",
        "/volume",
        "/events/b1",
        "/assets/app.js",
    ];
    let mut routes = routes;
    let alert_page = format!("/alerts/{a}");
    for p in pages.iter().copied().chain([alert_page.as_str()]) {
        routes.push(("GET", p.to_string(), None, Reader));
    }
    let roles = [
        ("apiserver", INGEST),
        ("soc-analyst", READER),
        ("soc-lead", RESPONDER),
        ("platform-security", ADMIN),
    ];
    let grants = |who: &str, need: Need| match (who, need) {
        (_, Any) => true,
        ("apiserver", n) => n == Ingest,
        (_, Ingest) => false,
        (_, Reader) => true,
        ("soc-analyst", _) => false,
        ("soc-lead", n) => n == Responder,
        ("platform-security", _) => true,
        _ => unreachable!(),
    };
    for (who, token) in roles {
        for (method, path, body, need) in &routes {
            let (status, text) = call(port, method, path, token, *body);
            if grants(who, *need) {
                assert!(
                    status != 401 && status != 403 && status != 0,
                    "{who} may {method} {path}: {status} {text}"
                );
            } else {
                assert_eq!(status, 403, "{who} may not {method} {path}: {text}");
                let needed = match need {
                    Ingest => "ingest",
                    Responder if who != "apiserver" => "responder",
                    Admin if who != "apiserver" => "admin",
                    _ => "reader",
                };
                assert!(
                    text.contains(&format!("needs the {needed} role")) && text.contains(who),
                    "{who} {method} {path}: {text}"
                );
            }
        }
    }

    // Governed suppressions: a `*`-only selector and more than 30 days are refused, naming why.
    let (status, text) = call(
        port,
        "POST",
        "/api/v1/suppressions",
        ADMIN,
        Some(r#"{"namespace":"*","for":"1h","reason":"maintenance"}"#),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("exact identity"), "{text}");
    let (status, text) = call(
        port,
        "POST",
        "/api/v1/suppressions",
        ADMIN,
        Some(r#"{"rule":"kt-secret-read-prod","for":"31d","reason":"quiet month"}"#),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("at most 30 days"), "{text}");
    // A governed one is made, announced to the destination whose route wants none of this, and lifted.
    let (status, text) = call(
        port,
        "POST",
        "/api/v1/suppressions",
        ADMIN,
        Some(r#"{"rule":"kt-secret-read-prod","for":"4h","reason":"backup window"}"#),
    );
    assert_eq!(status, 200, "{text}");
    let sid = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let made = delivered(&rx, "kt-suppression-created");
    assert_eq!(made["severity"], "high");
    assert_eq!(made["actor"]["username"], "api:platform-security");
    assert!(made["summary"].as_str().unwrap().contains(&sid), "{made}");
    // The destination that refuses it for good is named to every other one.
    let undelivered = delivered(&rx, "kt-governance-undelivered");
    let summary = undelivered["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("127.0.0.1:{refuses}"))
            && summary.contains("kt-suppression-created")
            && summary.contains(made["id"].as_str().unwrap())
            && summary.contains("HTTP 400"),
        "{undelivered}"
    );
    // Whoever made it cannot close the alert about it.
    let (status, text) = call(
        port,
        "POST",
        &format!("/api/v1/alerts/{}/resolve", made["id"].as_str().unwrap()),
        ADMIN,
        None,
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("someone else"), "{text}");
    let (status, text) = call(
        port,
        "POST",
        &format!("/api/v1/suppressions/{sid}/lift"),
        ADMIN,
        None,
    );
    assert_eq!(status, 200, "{text}");
    let lifted = delivered(&rx, "kt-suppression-lifted");
    assert!(
        lifted["summary"].as_str().unwrap().contains(&sid),
        "{lifted}"
    );

    // Resolving the critical alert (a responder may) is announced the same way.
    let (status, text) = call(
        port,
        "POST",
        &format!("/api/v1/alerts/{a}/resolve"),
        RESPONDER,
        None,
    );
    assert_eq!(status, 200, "{text}");
    let resolved = delivered(&rx, "kt-critical-resolved");
    assert_eq!(resolved["actor"]["username"], "api:soc-lead");
    assert!(
        resolved["summary"].as_str().unwrap().contains(a),
        "{resolved}"
    );
    // The workflow record names the identity.
    let (_, text) = call(port, "GET", &format!("/api/v1/alerts/{a}"), READER, None);
    let shown: Value = serde_json::from_str(&text).unwrap();
    let by: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["by"].as_str().unwrap())
        .collect();
    assert!(by.contains(&"api:soc-lead"), "{by:?}");

    child.kill().unwrap();
    child.wait().unwrap();
}
