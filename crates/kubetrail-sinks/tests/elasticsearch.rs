//! The Elasticsearch sink against a local receiver that checks the `_bulk` wire format (NDJSON, an action line
//! then a source line, a final newline, `application/x-ndjson`, the API key) and answers like Elasticsearch,
//! per item: 201 created, 409 `version_conflict_engine_exception` for an existing `_id` (create), 429
//! `es_rejected_execution_exception` and 400 `mapper_parsing_exception`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use common::events;
use kubetrail_sinks::elasticsearch::{Elasticsearch, ElasticsearchConfig, Target};
use kubetrail_sinks::http::{Auth, HttpConfig};
use kubetrail_sinks::{Outcome, Secret};
use serde_json::{Value, json};

#[derive(Default)]
struct Es {
    /// `_id` -> (`_index`, document).
    docs: HashMap<String, (String, Value)>,
    /// Ids answered 429 once (a full write queue on their shard).
    busy_once: HashSet<String>,
    /// Ids whose document the mapping refuses.
    unmappable: HashSet<String>,
    /// Answer the next request as a whole with 429 and Retry-After.
    throttle_next: bool,
    templates: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Es>>;

async fn bulk(
    State(es): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let mut out = HeaderMap::new();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("ApiKey a2V5OnNlY3JldA==")
    {
        let e = json!({"error": {"type": "security_exception", "reason": "missing authentication credentials for REST request [/_bulk]"}, "status": 401});
        return (StatusCode::UNAUTHORIZED, out, e.to_string());
    }
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.ends_with('\n'), "the bulk body ends with a newline");
    let mut es = es.lock().unwrap();
    if std::mem::take(&mut es.throttle_next) {
        out.insert("retry-after", "7".parse().unwrap());
        let e = json!({"error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}, "status": 429});
        return (StatusCode::TOO_MANY_REQUESTS, out, e.to_string());
    }
    let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
    assert_eq!(lines.len() % 2, 0, "action and source lines in pairs");
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let action: Value = serde_json::from_str(pair[0]).unwrap();
        let doc: Value = serde_json::from_str(pair[1]).unwrap();
        let meta = &action["create"];
        let (index, id) = (
            meta["_index"].as_str().unwrap(),
            meta["_id"].as_str().unwrap().to_string(),
        );
        assert!(doc["@timestamp"].is_string() && doc["kubernetes"]["audit"]["auditID"].is_string());
        let item = if es.busy_once.remove(&id) {
            errors = true;
            json!({"_index": index, "_id": id, "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of primary operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, primary_operation_bytes=1234, max_coordinating_and_primary_bytes=0]"}})
        } else if es.unmappable.contains(&id) {
            errors = true;
            json!({"_index": index, "_id": id, "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [kubernetes.audit.objectRef.name] of type [text] in document with id '1'. Preview of field's value: '{a=b}'", "caused_by": {"type": "illegal_state_exception", "reason": "Can't get text on a START_OBJECT at 1:42"}}})
        } else if es.docs.contains_key(&id) {
            errors = true;
            json!({"_index": index, "_id": id, "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists (current version [1])")}})
        } else {
            es.docs.insert(id.clone(), (index.to_string(), doc));
            json!({"_index": index, "_id": id, "_version": 1, "result": "created", "status": 201})
        };
        items.push(json!({"create": item}));
    }
    out.insert("content-type", "application/json".parse().unwrap());
    (
        StatusCode::OK,
        out,
        json!({"took": 3, "errors": errors, "items": items}).to_string(),
    )
}

async fn template(
    State(es): State<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: Bytes,
) -> String {
    es.lock()
        .unwrap()
        .templates
        .push((name, serde_json::from_slice(&body).unwrap()));
    json!({"acknowledged": true}).to_string()
}

async fn receiver() -> (u16, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/_bulk", post(bulk))
        .route("/_index_template/{name}", put(template))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, state)
}

fn sink(port: u16, key: &str) -> Elasticsearch {
    Elasticsearch::new(ElasticsearchConfig {
        url: format!("http://127.0.0.1:{port}"),
        target: Target::DailyIndex("kubetrail".into()),
        http: HttpConfig {
            auth: Auth::Raw(Secret::new(format!("ApiKey {key}"))),
            ..HttpConfig::default()
        },
    })
    .unwrap()
}

#[tokio::test]
async fn bulk_items_are_delivered_retried_deduplicated_or_dead() {
    let (port, es) = receiver().await;
    let es_sink = sink(port, "a2V5OnNlY3JldA==");
    es_sink.prepare().await.unwrap();
    {
        let es = es.lock().unwrap();
        assert_eq!(es.templates.len(), 1);
        assert_eq!(es.templates[0].0, "kubetrail");
        assert_eq!(es.templates[0].1["index_patterns"], json!(["kubetrail-*"]));
    }
    let ev = events();
    let batch = ev.records("prod-eu");
    let batch = &batch[..6];
    {
        let mut es = es.lock().unwrap();
        es.busy_once.insert(batch[2].id.to_string());
        es.unmappable.insert(batch[3].id.to_string());
    }
    match es_sink.send(batch).await {
        Outcome::Partial { retry, dead } => {
            assert_eq!(retry, [2]);
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].0, 3);
            assert!(
                dead[0]
                    .1
                    .starts_with("HTTP 400 mapper_parsing_exception: failed to parse field")
                    && dead[0].1.contains("caused by illegal_state_exception"),
                "{}",
                dead[0].1
            );
        }
        other => panic!("{other:?}"),
    }
    // The pipeline sends the batch again (or just the retries): existing ids answer 409, which is delivered.
    match es_sink.send(batch).await {
        Outcome::Partial { retry, dead } => {
            assert!(retry.is_empty());
            assert_eq!(dead.iter().map(|d| d.0).collect::<Vec<_>>(), [3]);
        }
        other => panic!("{other:?}"),
    }
    let mut good = batch.to_vec();
    good.remove(3);
    assert_eq!(es_sink.send(&good).await, Outcome::Delivered);
    {
        let es = es.lock().unwrap();
        assert_eq!(es.docs.len(), 5, "one document per id");
        // Each record went to the index of its day, with its ECS fields.
        for r in &good {
            let (index, doc) = &es.docs[r.id];
            let e: Value = serde_json::from_str(r.event).unwrap();
            let day = e["requestReceivedTimestamp"]
                .as_str()
                .or(e["timestamp"].as_str())
                .filter(|t| t.ends_with('Z'))
                .map(|t| t[..10].replace('-', "."));
            // (An unreadable time, like Panther's `2022-11-29 00:09:04.38`, falls back to when kubetrail
            // received the event.)
            assert_eq!(
                *index,
                format!("kubetrail-{}", day.unwrap_or("2023.11.14".into()))
            );
            assert_eq!(doc["event"]["id"], r.id);
            assert_eq!(doc["event"]["action"], e["verb"]);
            assert_eq!(doc["user"]["name"], e["user"]["username"]);
            assert_eq!(doc["orchestrator"]["cluster"]["name"], "prod-eu");
            assert_eq!(doc["kubernetes"]["audit"], e);
        }
    }

    // Throttled as a whole: retry after the server's delay.
    es.lock().unwrap().throttle_next = true;
    match es_sink.send(&good).await {
        Outcome::Retry { after, reason } => {
            assert_eq!(after, Some(Duration::from_secs(7)));
            assert!(
                reason.starts_with("HTTP 429 es_rejected_execution_exception"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A wrong key is configuration: retried with the reason, never dead-lettered, and not shown.
    let wrong = sink(port, "d3Jvbmc=");
    match wrong.send(&good).await {
        Outcome::Retry { reason, .. } => {
            assert!(
                reason.starts_with("HTTP 401 security_exception"),
                "{reason}"
            );
            assert!(!reason.contains("d3Jvbmc="));
        }
        other => panic!("{other:?}"),
    }
}
