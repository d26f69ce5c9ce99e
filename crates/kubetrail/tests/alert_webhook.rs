//! `kubetrail serve --alert-webhook URL` against a local receiver that answers as an overloaded, a refusing and
//! a healthy endpoint would: each alert arrives as one signed JSON object per POST, 503 with Retry-After is
//! retried, 400 is dead-lettered, and an alert in flight when kubetrail is killed -9 is delivered after the
//! restart.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

mod common;

use common::{BIN, curl, free_port};

/// One request the receiver got.
#[derive(Debug)]
struct Got {
    signature: String,
    alert_id: String,
    body: Vec<u8>,
}

/// A receiver: each request is reported on `got`, then answered with the next of `answers`
/// (status, extra header line); a request that arrives with no answer queued waits for one.
fn receiver() -> (u16, Receiver<Got>, Sender<(u16, &'static str)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got_tx, got) = channel();
    let (answer, answers) = channel::<(u16, &'static str)>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            if got_tx.send(request).is_err() {
                return;
            }
            let Ok((status, header)) = answers.recv() else {
                return;
            };
            let body = format!("{{\"status\":{status}}}");
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{header}\r\n{body}",
                body.len()
            );
        }
    });
    (port, got, answer)
}

fn read_request(stream: &TcpStream) -> Option<Got> {
    let r = common::read_request(stream).filter(|r| r.method == "POST" && r.path == "/hook")?;
    Some(Got {
        signature: r.header("x-kubetrail-signature").to_string(),
        alert_id: r.header("x-kubetrail-alert-id").to_string(),
        body: r.body,
    })
}

fn start(dir: &Path, port: u16, hook: u16, n: usize) -> Child {
    let config = common::config(dir, port, &common::test_rules(), "");
    let url = format!("http://127.0.0.1:{hook}/hook");
    common::serve(
        &config,
        &["--alert-webhook", &url],
        &dir.join(format!("serve-{n}.log")),
        port,
    )
}

/// The positive fixture with its own auditID and user, so each post raises a new alert.
fn event(n: u32) -> String {
    let text = std::fs::read_to_string(common::test_rules().join("secrets-listed.positive.jsonl"))
        .unwrap();
    text.replace(
        "5a1c0e55-0000-4000-8000-000000000001",
        &format!("5a1c0e55-0000-4000-8000-{n:012}"),
    )
    .replace("eve@example.com", &format!("user{n}@example.com"))
}

fn wait(got: &Receiver<Got>) -> Got {
    got.recv_timeout(Duration::from_secs(30))
        .expect("the receiver got a request within 30 s")
}

#[test]
fn alerts_are_signed_retried_dead_lettered_and_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (hook, got, answer) = receiver();
    let mut server = start(tmp.path(), port, hook, 1);
    let key = std::fs::read_to_string(tmp.path().join("data/alerts/webhook.key")).unwrap();

    // 1. Overloaded once (503, Retry-After: 1), then delivered: the same alert twice, signed.
    assert_eq!(curl(port, "/k8s-audit", Some(&event(1))), 200);
    let first = wait(&got);
    answer.send((503, "Retry-After: 1\r\n")).unwrap();
    let again = wait(&got);
    answer.send((200, "")).unwrap();
    assert_eq!(first.body, again.body, "the retry carries the same alert");
    let alert: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(alert["rule"]["id"], "test-secrets-listed");
    assert_eq!(alert["actor"]["username"], "user1@example.com");
    assert_eq!(alert["severity"], "high");
    assert_eq!(again.alert_id, alert["id"].as_str().unwrap());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.trim().as_bytes()).unwrap();
    mac.update(&again.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(again.signature, format!("sha256={hex}"));

    // 2. Refused (400): dead-lettered, not retried; the next alert goes through.
    assert_eq!(curl(port, "/k8s-audit", Some(&event(2))), 200);
    let refused = wait(&got);
    answer.send((400, "")).unwrap();
    assert_eq!(curl(port, "/k8s-audit", Some(&event(3))), 200);
    let third = wait(&got);
    answer.send((200, "")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&third.body).unwrap();
    assert_eq!(v["actor"]["username"], "user3@example.com");
    let outbox = tmp.path().join("data/alerts/outbox");
    let dlq: Vec<serde_json::Value> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".dlq.jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect();
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["status"], 400);
    assert_eq!(
        dlq[0]["alert"],
        serde_json::from_slice::<serde_json::Value>(&refused.body).unwrap()
    );
    // The analyst fixes the destination and replays the dead letter: delivered again, before new alerts.
    let kt = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data")
            .arg(tmp.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = kt(&["alerts", "dlq", "list"]);
    assert!(
        listed.contains("400") && listed.contains("1 dead letters"),
        "{listed}"
    );
    assert!(kt(&["alerts", "dlq", "replay"]).contains("1 dead letter queued"));
    let replayed = wait(&got);
    answer.send((200, "")).unwrap();
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    assert_eq!(json(&replayed.body), json(&refused.body));
    assert!(kt(&["alerts", "dlq", "list"]).contains("0 dead letters"));

    // 3. kill -9 while an alert is in flight (the receiver holds its answer): delivered after the restart.
    assert_eq!(curl(port, "/k8s-audit", Some(&event(4))), 200);
    let in_flight = wait(&got);
    server.kill().unwrap();
    server.wait().unwrap();
    answer.send((200, "")).unwrap(); // to a connection nobody reads any more
    let mut server = start(tmp.path(), port, hook, 2);
    let redelivered = wait(&got);
    answer.send((200, "")).unwrap();
    assert_eq!(redelivered.body, in_flight.body);
    // The outbox goes in order: the next request is a new alert, not one delivered before the kill.
    assert_eq!(curl(port, "/k8s-audit", Some(&event(5))), 200);
    let fifth = wait(&got);
    answer.send((200, "")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&fifth.body).unwrap();
    assert_eq!(v["actor"]["username"], "user5@example.com");
    let _ = server.kill();
    let _ = server.wait();
}

/// Against a real Prometheus Alertmanager (Debian `prometheus-alertmanager`, which `scripts/test` installs):
/// the alert arrives with the labels routes need and the runbook in its annotations.
#[test]
fn alerts_reach_a_real_alertmanager_with_routing_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (am, am_port) = common::services::alertmanager(tmp.path());
    let am_alerts = || common::services::alertmanager_alerts(am_port);
    let config = common::config(tmp.path(), port, &common::test_rules(), "");
    let am_url = format!("http://127.0.0.1:{am_port}");
    let mut server = common::serve(
        &config,
        &["--alertmanager", &am_url],
        &tmp.path().join("serve.log"),
        port,
    );
    assert_eq!(curl(port, "/k8s-audit", Some(&event(7))), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        if let Some(a) = am_alerts().into_iter().next() {
            break a;
        }
        assert!(Instant::now() < deadline, "no alert reached Alertmanager");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Resolved by an analyst: Alertmanager hears it and the alert is no longer active.
    let id = alert["labels"]["kubetrail_alert"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Command::new(BIN)
        .args(["alerts", "resolve", &id, "--data"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while am_alerts()
        .iter()
        .any(|a| a["labels"]["kubetrail_alert"] == id.as_str() && a["status"]["state"] == "active")
    {
        assert!(
            Instant::now() < deadline,
            "the resolution did not reach Alertmanager"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    drop(am);
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "test-secrets-listed", "{alert}");
    assert_eq!(labels["severity"], "high");
    assert_eq!(labels["rule"], "test-secrets-listed");
    assert_eq!(labels["actor"], "user7@example.com");
    assert_eq!(labels["cluster"], "default");
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(
        alert["annotations"]["runbook"],
        "kubetrail rules show test-secrets-listed"
    );
    assert!(
        alert["annotations"]["context"]
            .as_str()
            .is_some_and(|c| c.contains("last hour") && c.contains("user7@example.com is NEW")),
        "the triage context reaches Alertmanager: {alert}"
    );
    assert_eq!(
        alert["annotations"]["first_step"],
        "Check who it was: kubetrail timeline --user USER --since 24h"
    );
    assert_eq!(
        alert["annotations"]["audit_ids"],
        "5a1c0e55-0000-4000-8000-000000000007"
    );
    assert_eq!(alert["startsAt"], "2026-01-01T03:00:00.000Z");
}
