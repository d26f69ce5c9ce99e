//! Alert delivery over the one delivery engine and HTTP client, against a scripted local server: a 401 waits
//! for its credentials to be fixed instead of being dead-lettered, Retry-After as an HTTP date is honoured,
//! and a `type:`-tagged destination sends its token and header files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kubetrail_runtime::alerting::outbox::{self, DestinationConfig, DestinationType};

/// One request as the server saw it.
#[derive(Debug)]
struct Got {
    head: String,
    body: Vec<u8>,
    at: Instant,
}

/// Extra header lines of an answer, made when it is sent.
type Headers = Box<dyn Fn() -> String + Send>;

/// Answers each request with the next scripted `(status, extra header lines, body bytes)`, then 200.
fn server(script: Vec<(u16, Headers, usize)>) -> (String, mpsc::Receiver<Got>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/kubetrail?tenant=t1",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let (status, extra, len) = script
                .next()
                .map_or((200, String::new(), 2), |(s, h, len)| (s, h(), len));
            let _ = tx.send(Got {
                head,
                body,
                at: Instant::now(),
            });
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n{}",
                "x".repeat(len)
            );
        }
    });
    (url, rx)
}

const ALERT: &str = r#"{"id":"a-1","rule":{"id":"kt-exec-prod-system","title":"Exec"},"severity":"high","auditIDs":["x"],"time":"2026-01-01T00:00:00Z","actor":{"username":"mallory"},"sourceIPs":["203.0.113.9"],"summary":"s","count":1,"lastTime":"2026-01-01T00:00:00Z"}"#;

#[test]
fn a_401_waits_for_credentials_and_retry_after_dates_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("alerts")).unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
    std::fs::write(dir.path().join("key"), "api-key-1\n").unwrap();
    // Retry-After five seconds after the answer, as an IMF-fixdate (whole seconds: 4 to 5 s of waiting; the
    // backoff alone would be 2 s give or take 20%).
    let (url, got) = server(vec![
        (401, Box::new(String::new), 2),
        (
            503,
            Box::new(|| {
                let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5);
                let date = jiff::fmt::rfc2822::DateTimePrinter::new()
                    .timestamp_to_rfc9110_string(&later)
                    .unwrap();
                format!("Retry-After: {date}\r\n")
            }),
            2,
        ),
    ]);
    let webhook = DestinationConfig {
        kind: Some(DestinationType::Webhook),
        url: Some(url),
        token_file: Some(dir.path().join("token")),
        header_files: [("X-Api-Key".to_string(), dir.path().join("key"))].into(),
        ..DestinationConfig::default()
    }
    .webhook()
    .unwrap();
    std::fs::write(data.join("alerts/alerts.jsonl"), format!("{ALERT}\n")).unwrap();
    let mut registry = prometheus_client::registry::Registry::with_prefix("kubetrail");
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = outbox::OutboxMetrics::default();
    metrics.register(&mut registry);
    let threads = outbox::start(&data, &[webhook], &metrics, stop.clone()).unwrap();

    let wait = || {
        got.recv_timeout(Duration::from_secs(20))
            .expect("a request")
    };
    let (first, second, third) = (wait(), wait(), wait());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    for g in [&first, &second, &third] {
        assert!(
            g.head
                .starts_with("POST /hooks/kubetrail?tenant=t1 HTTP/1.1"),
            "{}",
            g.head
        );
        let head = g.head.to_ascii_lowercase();
        assert!(
            head.contains("authorization: bearer s3cret-token"),
            "{head}"
        );
        assert!(head.contains("x-api-key: api-key-1"), "{head}");
        assert!(head.contains("x-kubetrail-signature: sha256="), "{head}");
        assert!(head.contains("x-kubetrail-alert-id: a-1"), "{head}");
        assert_eq!(g.body, ALERT.as_bytes());
    }
    assert!(
        third.at - second.at >= Duration::from_secs(4),
        "Retry-After ignored: {:?}",
        third.at - second.at
    );
    // Delivered once, never dead-lettered.
    assert!(outbox::dead_letters(&data).unwrap().is_empty());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series = |name: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .collect()
    };
    assert!(
        series("kubetrail_alerts_delivered_total")[0].ends_with(" 1"),
        "{text}"
    );
    assert!(
        series("kubetrail_alert_delivery_retries_total")[0].ends_with(" 2"),
        "{text}"
    );
    assert!(
        series("kubetrail_alerts_dead_lettered_total")[0].ends_with(" 0"),
        "{text}"
    );
    // The cursor is past the alert: not sent again after a restart.
    let cursor = std::fs::read_dir(data.join("alerts/outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cursor"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(cursor).unwrap().trim(),
        (ALERT.len() + 1).to_string()
    );
}

#[test]
fn destinations_are_checked_and_the_old_form_is_named() {
    let old = DestinationConfig {
        webhook: Some("https://hooks.example/x".into()),
        ..DestinationConfig::default()
    };
    assert_eq!(
        old.deprecated(),
        Some(("webhook".to_string(), "type: webhook, url: URL"))
    );
    assert!(old.webhook().is_ok(), "the old form still works");
    let mixed = DestinationConfig {
        kind: Some(DestinationType::Webhook),
        webhook: Some("https://hooks.example/x".into()),
        ..DestinationConfig::default()
    };
    let e = mixed.webhook().unwrap_err().to_string();
    assert!(e.contains("`webhook` is the form without `type:`"), "{e}");
    let no_url = DestinationConfig {
        kind: Some(DestinationType::Slack),
        ..DestinationConfig::default()
    };
    assert!(
        no_url
            .webhook()
            .unwrap_err()
            .to_string()
            .contains("needs `url` or `url_file`")
    );
    let pagerduty = DestinationConfig {
        kind: Some(DestinationType::Pagerduty),
        ..DestinationConfig::default()
    };
    assert!(
        pagerduty
            .webhook()
            .unwrap_err()
            .to_string()
            .contains("routing_key_file")
    );
    let creds_in_url = DestinationConfig {
        kind: Some(DestinationType::Webhook),
        url: Some("https://user:pw@hooks.example/x".into()),
        ..DestinationConfig::default()
    };
    let e = format!("{:#}", creds_in_url.webhook().unwrap_err());
    assert!(e.contains("token_file") && !e.contains("pw@"), "{e}");
}

/// A receiver that echoes the payload answers with a long body: its 2xx is what counts. Before, an answer over
/// 64 KiB was a transport error and the alert was sent again forever.
#[test]
fn a_long_answer_does_not_make_a_delivered_alert_retry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("alerts")).unwrap();
    let (url, got) = server(vec![
        (200, Box::new(String::new), 200 << 10),
        (500, Box::new(String::new), 2),
    ]);
    let webhook = DestinationConfig {
        kind: Some(DestinationType::Webhook),
        url: Some(url),
        ..DestinationConfig::default()
    }
    .webhook()
    .unwrap();
    std::fs::write(data.join("alerts/alerts.jsonl"), format!("{ALERT}\n")).unwrap();
    let metrics = outbox::OutboxMetrics::default();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = outbox::start(&data, &[webhook], &metrics, stop.clone()).unwrap();
    got.recv_timeout(Duration::from_secs(20))
        .expect("the alert");
    // A second request would come within the first backoff (about a second).
    let again = got.recv_timeout(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(again.is_err(), "sent again after a 200: {again:?}");
}
