//! The Splunk HEC sink against a local receiver that checks the documented request (`Authorization: Splunk
//! <token>`, concatenated JSON event objects with `time`, `host`, `source`, `sourcetype`, `event`; the channel
//! header with acknowledgement) and answers like HEC, error bodies included.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::events;
use kubetrail_sinks::splunk::{Ack, Splunk, SplunkConfig};
use kubetrail_sinks::{Outcome, Secret};
use serde_json::{Value, json};

const TOKEN: &str = "11111111-2222-3333-4444-555555555555";

#[derive(Default)]
struct Hec {
    events: Vec<Value>,
    /// Require a channel and answer ackIds (indexer acknowledgement on the token).
    ack: bool,
    next_ack: u64,
    /// ackId -> how many more polls answer false.
    pending: Vec<(u64, u32)>,
    polls: u32,
    busy_next: bool,
}

type Shared = Arc<Mutex<Hec>>;

fn answer(status: StatusCode, body: Value) -> (StatusCode, String) {
    (status, body.to_string())
}

async fn collect(
    State(hec): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"text": "Token is required", "code": 2}),
            );
        }
        Some(a) if a != format!("Splunk {TOKEN}") => {
            return answer(
                StatusCode::FORBIDDEN,
                json!({"text": "Invalid token", "code": 4}),
            );
        }
        Some(_) => {}
    }
    let mut hec = hec.lock().unwrap();
    if std::mem::take(&mut hec.busy_next) {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"text": "Server is busy", "code": 9}),
        );
    }
    if hec.ack && headers.get("x-splunk-request-channel").is_none() {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"text": "Data channel is missing", "code": 10}),
        );
    }
    let text = std::str::from_utf8(&body).unwrap();
    let objects: Vec<Value> = serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    for (n, o) in objects.iter().enumerate() {
        let well_formed = o["time"].is_f64()
            && o["host"].is_string()
            && o["source"] == "kubetrail"
            && o["sourcetype"] == "kube:apiserver-audit"
            && o["event"].is_object();
        // The receiver treats an event marked `unindexable` as HEC treats data it cannot parse.
        if !well_formed || o["event"]["unindexable"] == true {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"text": "Invalid data format", "code": 6, "invalid-event-number": n}),
            );
        }
        // HEC indexes events as it reads them: the ones before an invalid one are in.
        hec.events.push(o.clone());
    }
    if hec.ack {
        hec.next_ack += 1;
        let id = hec.next_ack;
        hec.pending.push((id, 2));
        return answer(
            StatusCode::OK,
            json!({"text": "Success", "code": 0, "ackId": id}),
        );
    }
    answer(StatusCode::OK, json!({"text": "Success", "code": 0}))
}

async fn ack(State(hec): State<Shared>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    assert!(headers.get("x-splunk-request-channel").is_some());
    let asked: Value = serde_json::from_slice(&body).unwrap();
    let mut hec = hec.lock().unwrap();
    hec.polls += 1;
    let mut acks = serde_json::Map::new();
    for id in asked["acks"].as_array().unwrap() {
        let id = id.as_u64().unwrap();
        let done = match hec.pending.iter_mut().find(|(p, _)| *p == id) {
            Some((_, 0)) => true,
            Some((_, left)) => {
                *left -= 1;
                false
            }
            None => false,
        };
        acks.insert(id.to_string(), json!(done));
    }
    answer(StatusCode::OK, json!({"acks": acks}))
}

async fn receiver(ack_on: bool) -> (u16, Shared) {
    let state: Shared = Arc::new(Mutex::new(Hec {
        ack: ack_on,
        ..Hec::default()
    }));
    let app = Router::new()
        .route("/services/collector/event", post(collect))
        .route("/services/collector/ack", post(ack))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, state)
}

fn sink(port: u16, token: &str, ack: Option<Ack>) -> Splunk {
    Splunk::new(SplunkConfig {
        ack,
        ..SplunkConfig::new(&format!("http://127.0.0.1:{port}"), Secret::new(token))
    })
    .unwrap()
}

#[tokio::test]
async fn events_arrive_and_hec_errors_map_to_outcomes() {
    let (port, hec) = receiver(false).await;
    let ev = events();
    let batch = ev.records("prod-eu");
    let hec_sink = sink(port, TOKEN, None);
    assert_eq!(hec_sink.send(&batch[..10]).await, Outcome::Delivered);
    {
        let hec = hec.lock().unwrap();
        assert_eq!(hec.events.len(), 10);
        for (o, r) in hec.events.iter().zip(&batch) {
            assert_eq!(o["host"], "prod-eu");
            assert_eq!(o["event"], serde_json::from_str::<Value>(r.event).unwrap());
        }
    }

    // Invalid data: HEC names the event; the ones before it are indexed, it is dead, the rest go again.
    let bogus = format!("{{\"unindexable\":true,{}", &ev.lines[3][1..]);
    let mut mixed = batch[10..15].to_vec();
    mixed[2].event = &bogus;
    match hec_sink.send(&mixed).await {
        Outcome::Partial { retry, dead } => {
            assert_eq!(retry, [3, 4]);
            assert_eq!(
                dead,
                [(2, "HTTP 400 HEC code 6: Invalid data format".to_string())]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hec.lock().unwrap().events.len(), 12);

    // Busy: retried.
    hec.lock().unwrap().busy_next = true;
    match hec_sink.send(&batch[..2]).await {
        Outcome::Retry { reason, .. } => assert_eq!(reason, "HTTP 503 HEC code 9: Server is busy"),
        other => panic!("{other:?}"),
    }

    // A wrong token is configuration: retried with a clear reason that does not show the token.
    match sink(port, "not-the-token", None).send(&batch[..2]).await {
        Outcome::Retry { reason, .. } => {
            assert!(
                reason.starts_with("HTTP 403 HEC code 4: Invalid token (the HEC token was refused"),
                "{reason}"
            );
            assert!(!reason.contains("not-the-token"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn indexer_acknowledgement_is_polled() {
    let (port, hec) = receiver(true).await;
    let ev = events();
    let batch = ev.records("c");
    let ack = Ack {
        channel: None,
        timeout: Duration::from_secs(10),
        poll: Duration::from_millis(10),
    };
    let hec_sink = sink(port, TOKEN, Some(ack));
    assert_eq!(hec_sink.channel().unwrap().len(), 36);
    assert_eq!(hec_sink.send(&batch[..3]).await, Outcome::Delivered);
    assert_eq!(
        hec.lock().unwrap().polls,
        3,
        "two answers of false, then true"
    );

    // Never acknowledged within the timeout: the batch is retried.
    hec.lock().unwrap().pending.clear();
    let impatient = sink(
        port,
        TOKEN,
        Some(Ack {
            channel: Some("9c7e2e6c-7b5c-4d8e-9d3f-0a1b2c3d4e5f".into()),
            timeout: Duration::from_millis(50),
            poll: Duration::from_millis(10),
        }),
    );
    hec.lock().unwrap().next_ack = 100;
    hec.lock().unwrap().pending.push((101, u32::MAX));
    match impatient.send(&batch[..3]).await {
        Outcome::Retry { reason, .. } => {
            assert_eq!(reason, "HEC did not acknowledge ackId 101 within 50ms")
        }
        other => panic!("{other:?}"),
    }

    // Without the channel header, HEC with acknowledgement refuses (code 10): configuration, retried.
    match sink(port, TOKEN, None).send(&batch[..1]).await {
        Outcome::Retry { reason, .. } => {
            assert!(reason.starts_with("HTTP 400 HEC code 10"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
