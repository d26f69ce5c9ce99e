//! PagerDuty (Events API v2) and Slack (incoming webhooks) from `kubetrail serve`, against local receivers
//! that check each service's documented request format and answer as the service does: PagerDuty 202 with
//! `{"status":"success"}`, 429 when rate limited, 400 with `errors` for an invalid event; Slack 200 `ok`,
//! 404 `no_service` for a removed webhook.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{BIN, curl, free_port};
const ROUTING_KEY: &str = "R0UT1NGKEY0000000000000000000001";

type Answer = fn(&Value, usize) -> (u16, String, &'static str);

/// A receiver at `path`: each JSON body is checked and answered by `answer(body, n)` (n counts requests),
/// and reported on the channel with the status it got.
fn receiver(path: &'static str, answer: Answer) -> (u16, Receiver<(Value, u16)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(common::Request { path: p, body, .. }) = common::read_request(&stream) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, text, header) = if p == path {
                answer(&v, n)
            } else {
                (404, "no such path".into(), "")
            };
            n += 1;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{header}\r\n{text}",
                text.len()
            );
            if tx.send((v, status)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// PagerDuty's checks (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/): 400 with errors
/// for an invalid event, 429 on the first request (rate limited), 202 otherwise.
fn pagerduty(v: &Value, n: usize) -> (u16, String, &'static str) {
    let mut errors = Vec::new();
    if v["routing_key"].as_str().is_none_or(|k| k.len() != 32) {
        errors.push("'routing_key' must be a 32 character integration key");
    }
    match v["event_action"].as_str() {
        Some("trigger") => {
            let p = &v["payload"];
            if p["summary"]
                .as_str()
                .is_none_or(|s| s.is_empty() || s.len() > 1024)
            {
                errors.push("'payload.summary' is missing or longer than 1024 characters");
            }
            if p["source"].as_str().is_none_or(str::is_empty) {
                errors.push("'payload.source' is missing");
            }
            if !["critical", "error", "warning", "info"]
                .contains(&p["severity"].as_str().unwrap_or(""))
            {
                errors.push("'payload.severity' is invalid");
            }
        }
        Some("resolve") | Some("acknowledge") => {
            if v["dedup_key"].as_str().is_none_or(str::is_empty) {
                errors.push("'dedup_key' is required to resolve");
            }
        }
        _ => errors.push("'event_action' is invalid"),
    }
    if !errors.is_empty() {
        let body = json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors});
        return (400, body.to_string(), "");
    }
    if n == 0 {
        return (429, String::new(), "");
    }
    let body =
        json!({"status": "success", "message": "Event processed", "dedup_key": v["dedup_key"]});
    (202, body.to_string(), "Content-Type: application/json\r\n")
}

/// Slack's checks (https://api.slack.com/messaging/webhooks): `text` is required as the fallback; blocks, when
/// given, are an array of typed blocks. The second webhook was removed: 404 `no_service`.
fn slack(v: &Value, _: usize) -> (u16, String, &'static str) {
    if v["text"].as_str().is_none_or(str::is_empty) {
        return (400, "no_text".into(), "");
    }
    if let Some(blocks) = v.get("blocks")
        && !blocks
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["type"].is_string()))
    {
        return (400, "invalid_blocks".into(), "");
    }
    (200, "ok".into(), "")
}

fn removed(_: &Value, _: usize) -> (u16, String, &'static str) {
    (404, "no_service".into(), "")
}

fn next(rx: &Receiver<(Value, u16)>) -> (Value, u16) {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the receiver got a request within 30 s")
}

#[test]
fn pagerduty_and_slack_receive_alerts_in_their_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = common::test_rules();
    let (pd_port, pd) = receiver("/v2/enqueue", pagerduty);
    let (slack_port, sl) = receiver("/services/T000/B000/XXXX", slack);
    let (gone_port, gone) = receiver("/services/T000/B111/YYYY", removed);
    let port = free_port();
    let key_file = tmp.path().join("pagerduty.key");
    std::fs::write(&key_file, format!("{ROUTING_KEY}\n")).unwrap();
    let config = common::config(tmp.path(), port, &rules, "");
    let log = tmp.path().join("serve.log");
    let pd_url = format!("http://127.0.0.1:{pd_port}/v2/enqueue");
    let slack_url = format!("http://127.0.0.1:{slack_port}/services/T000/B000/XXXX");
    let gone_url = format!("http://127.0.0.1:{gone_port}/services/T000/B111/YYYY");
    let mut server: Child = common::serve(
        &config,
        &[
            "--pagerduty-routing-key-file",
            key_file.to_str().unwrap(),
            "--pagerduty-url",
            &pd_url,
            "--slack-webhook",
            &slack_url,
            "--slack-webhook",
            &gone_url,
        ],
        &log,
        port,
    );
    let event = std::fs::read_to_string(rules.join("secrets-listed.positive.jsonl")).unwrap();
    assert_eq!(curl(port, "/k8s-audit", Some(&event)), 200);

    // PagerDuty: rate limited once (429), then accepted (202), a valid trigger event.
    let (first, status) = next(&pd);
    assert_eq!(status, 429, "{first}");
    let (trigger, status) = next(&pd);
    assert_eq!(status, 202, "{trigger}");
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(
        trigger["payload"]["severity"], "error",
        "high maps to error"
    );
    assert_eq!(trigger["payload"]["source"], "198.51.100.7");
    assert_eq!(trigger["payload"]["class"], "test-secrets-listed");
    let details = &trigger["payload"]["custom_details"];
    assert_eq!(
        details["first_step"],
        "Check who it was: kubetrail timeline --user USER --since 24h"
    );
    assert_eq!(details["context"]["activity"]["requests"], 1, "{details}");
    assert_eq!(
        details["context"]["firstSeen"]["identity"]["value"],
        "eve@example.com"
    );
    let id = trigger["dedup_key"].as_str().unwrap().to_string();

    // Slack: a Block Kit message with the fallback text.
    let (msg, status) = next(&sl);
    assert_eq!(status, 200, "{msg}");
    assert!(
        msg["text"]
            .as_str()
            .unwrap()
            .contains("Secrets listed across the cluster")
    );
    assert_eq!(msg["blocks"][0]["type"], "header");
    let fields = msg["blocks"][1]["fields"].to_string();
    assert!(fields.contains("eve@example.com"), "{fields}");
    let blocks = msg["blocks"].to_string();
    assert!(
        blocks.contains("*Context*") && blocks.contains("last hour") && blocks.contains("NEW"),
        "the triage context: {blocks}"
    );
    assert!(
        blocks.contains("*First step*") && blocks.contains("Check who it was"),
        "the runbook's first step: {blocks}"
    );

    // The removed Slack webhook (404 no_service) is dead-lettered, not retried.
    let (_, status) = next(&gone);
    assert_eq!(status, 404);
    let dlq = Command::new(BIN)
        .args(["alerts", "dlq", "list", "--format", "json", "--data"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let dlq = String::from_utf8(dlq.stdout).unwrap();
    assert!(dlq.contains("no_service"), "{dlq}");
    assert!(
        !dlq.contains("B111/YYYY"),
        "the webhook's secret path is not written: {dlq}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.contains("XXXX") && !log_text.contains("YYYY"),
        "{log_text}"
    );

    // Resolving the alert resolves the PagerDuty incident (same dedup_key).
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
    let (resolve, status) = next(&pd);
    assert_eq!(status, 202, "{resolve}");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], id.as_str());
    let (resolved_msg, _) = next(&sl);
    assert!(
        resolved_msg["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Resolved:")
    );
    let _ = server.kill();
    let _ = server.wait();
}

fn accept(_: &Value, _: usize) -> (u16, String, &'static str) {
    (200, String::new(), "")
}

/// Destinations and routes from the config file: a route for critical alerts only stays quiet on a high one;
/// a route by rule id and namespace glob gets it; a destination with two kinds is refused by `config check`.
#[test]
fn routes_in_the_config_file_choose_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = common::test_rules();
    let (critical_port, critical) = receiver("/critical", accept);
    let (routed_port, routed) = receiver("/routed", accept);
    let port = free_port();
    let config = common::config(
        tmp.path(),
        port,
        &rules,
        &format!(
            "alerts:\n  destinations:\n    - webhook: http://127.0.0.1:{critical_port}/critical\n      min_severity: critical\n    - webhook: http://127.0.0.1:{routed_port}/routed\n      min_severity: low\n      rules: [T1552.007]\n"
        ),
    );
    let check = Command::new(BIN)
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut server: Child = common::serve(&config, &[], &tmp.path().join("serve.log"), port);
    let event = std::fs::read_to_string(rules.join("secrets-listed.positive.jsonl")).unwrap();
    assert_eq!(curl(port, "/k8s-audit", Some(&event)), 200);
    let (alert, _) = next(&routed);
    assert_eq!(alert["rule"]["id"], "test-secrets-listed");
    // The critical-only destination was passed over (its cursor moved past the alert without sending it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut passed = false;
    while !passed && Instant::now() < deadline {
        let cursor = std::fs::read_dir(tmp.path().join("data/alerts/outbox"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.to_string_lossy().contains(&format!("_{critical_port}-"))
                    && p.to_string_lossy().ends_with(".cursor")
            });
        passed = cursor.is_some_and(|c| std::fs::read_to_string(c).unwrap().trim() != "0");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        passed,
        "the critical-only destination did not move past the alert"
    );
    assert!(
        critical.try_recv().is_err(),
        "a high alert reached the critical-only route"
    );
    let _ = server.kill();
    let _ = server.wait();

    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nalerts:\n  destinations:\n    - webhook: http://127.0.0.1:1/x\n      slack: http://127.0.0.1:1/y\n"
        ),
    )
    .unwrap();
    let check = Command::new(BIN)
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("exactly one of"), "{text}");
}
