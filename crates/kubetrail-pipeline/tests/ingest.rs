//! The ingest pipeline: bodies in, durable redacted records out; duplicates, filters, overload, a full log.

use std::sync::Arc;

use kubetrail_pipeline::{IngestError, Pipeline, PipelineConfig};
use kubetrail_policy::{RedactionKey, Redactor};
use kubetrail_store::{EventRecord, Wal, WalOptions};

fn event(id: &str, stage: &str, user: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{{"username":"{user}"}},"objectRef":{{"resource":"pods","namespace":"default","apiVersion":"v1"}}}}"#
    )
}

fn event_list(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|e| e.replacen(r#""kind":"Event","apiVersion":"audit.k8s.io/v1","#, "", 1))
        .collect();
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    wal: Arc<Wal>,
    pipeline: Pipeline,
}

fn fixture(cfg: PipelineConfig, opts: WalOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    let wal = Arc::new(wal);
    let pipeline = Pipeline::new(
        wal.clone(),
        Redactor::new(RedactionKey::from_bytes([7; 32])),
        cfg,
    )
    .unwrap();
    Fixture {
        _dir: dir,
        wal,
        pipeline,
    }
}

fn stored(wal: &Wal) -> Vec<(String, String, String, String)> {
    wal.read_from(0)
        .unwrap()
        .map(|r| {
            let (_, p) = r.unwrap();
            let r = EventRecord::decode(&p).unwrap();
            (
                r.audit_id.to_string(),
                r.stage.to_string(),
                r.cluster.to_string(),
                r.event.to_string(),
            )
        })
        .collect()
}

#[test]
fn event_lists_json_lines_and_pretty_documents_are_stored() {
    let f = fixture(
        PipelineConfig {
            cluster: "prod".into(),
            ..Default::default()
        },
        WalOptions::default(),
    );
    let list = event_list(&[
        event("a", "ResponseComplete", "u"),
        event("b", "ResponseComplete", "u"),
    ]);
    let o = f
        .pipeline
        .ingest_body(list.as_bytes(), "webhook", 1)
        .unwrap();
    assert_eq!((o.events, o.duplicates, o.skipped), (2, 0, 0));
    let lines = format!(
        "{}\n{}\n",
        event("c", "ResponseComplete", "u"),
        event("d", "RequestReceived", "u")
    );
    assert_eq!(
        f.pipeline
            .ingest_body(lines.as_bytes(), "webhook", 2)
            .unwrap()
            .events,
        2
    );
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&event_list(&[event(
            "e",
            "ResponseComplete",
            "u",
        )]))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        f.pipeline
            .ingest_body(pretty.as_bytes(), "webhook", 3)
            .unwrap()
            .events,
        1
    );
    let ids: Vec<_> = stored(&f.wal)
        .into_iter()
        .map(|(id, stage, cluster, _)| format!("{id}/{stage}/{cluster}"))
        .collect();
    assert_eq!(
        ids,
        [
            "a/ResponseComplete/prod",
            "b/ResponseComplete/prod",
            "c/ResponseComplete/prod",
            "d/RequestReceived/prod",
            "e/ResponseComplete/prod"
        ]
    );
}

/// The log in `dir` (reopened if it is there) and a pipeline over it, as a restart does.
fn open_in(dir: &std::path::Path) -> (Arc<Wal>, Pipeline) {
    let (wal, _) = Wal::open(dir, WalOptions::default()).unwrap();
    let wal = Arc::new(wal);
    let p = Pipeline::new(
        wal.clone(),
        Redactor::new(RedactionKey::from_bytes([7; 32])),
        Default::default(),
    );
    (wal, p.unwrap())
}

#[test]
fn retries_are_stored_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_in(dir.path());
    let body = event_list(&[
        event("a", "ResponseComplete", "u"),
        event("a", "ResponseComplete", "u"),
    ]);
    {
        let (_, p) = open();
        let o = p.ingest_body(body.as_bytes(), "webhook", 1).unwrap();
        assert_eq!(
            (o.events, o.duplicates),
            (1, 1),
            "a duplicate inside one batch"
        );
        let o = p.ingest_body(body.as_bytes(), "webhook", 2).unwrap();
        assert_eq!((o.events, o.duplicates), (0, 2));
    }
    let (wal, p) = open();
    let o = p.ingest_body(body.as_bytes(), "webhook", 3).unwrap();
    assert_eq!(
        (o.events, o.duplicates),
        (0, 2),
        "the window is rebuilt from the log on start"
    );
    // Same auditID, other stage: a different event.
    let o = p
        .ingest_body(event("a", "RequestReceived", "u").as_bytes(), "webhook", 4)
        .unwrap();
    assert_eq!(o.events, 1);
    assert_eq!(stored(&wal).len(), 2);
}

/// A pipeline over the log in `dir/wal` with small segments, keeping its dedup keys in `dir/dedup` or not.
fn open_releasing(dir: &std::path::Path, keep_keys: bool) -> (Arc<Wal>, Pipeline) {
    let opts = WalOptions {
        segment_bytes: 4 << 10,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&dir.join("wal"), opts).unwrap();
    let wal = Arc::new(wal);
    let cfg = PipelineConfig {
        dedup_keys: keep_keys.then(|| dir.join("dedup")),
        ..Default::default()
    };
    let p = Pipeline::new(
        wal.clone(),
        Redactor::new(RedactionKey::from_bytes([7; 32])),
        cfg,
    );
    (wal, p.unwrap())
}

/// Stores `first`, then enough other events to seal several segments, then releases every sealed segment
/// below what the kept keys cover (as the housekeeping does once they are converted). Returns how many
/// records the log still holds.
fn store_and_release(p: &Pipeline, wal: &Wal, first: &str) -> usize {
    assert_eq!(
        p.ingest_body(first.as_bytes(), "webhook", 1)
            .unwrap()
            .events,
        2
    );
    for i in 0..40 {
        let filler = event_list(&[
            event(&format!("f{i}"), "ResponseComplete", "u"),
            event(&format!("g{i}"), "ResponseComplete", "u"),
        ]);
        p.ingest_body(filler.as_bytes(), "webhook", 2).unwrap();
    }
    let upto = match p.dedup_keys() {
        Some(keys) => keys.sync().unwrap(),
        None => wal.next_seq(),
    };
    wal.release_before(upto).unwrap();
    stored(wal).len()
}

#[test]
fn retries_are_stored_once_after_a_restart_although_their_log_segments_were_released() {
    let first = event_list(&[
        event("a", "ResponseComplete", "u"),
        event("b", "ResponseComplete", "u"),
    ]);
    for keep_keys in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, p) = open_releasing(dir.path(), keep_keys);
            let left = store_and_release(&p, &wal, &first);
            assert!(left < 40, "segments were released: {left} records left");
        }
        let (wal, p) = open_releasing(dir.path(), keep_keys);
        assert!(
            !stored(&wal).iter().any(|(id, ..)| id == "a"),
            "the first batch's segment is gone"
        );
        let o = p.ingest_body(first.as_bytes(), "webhook", 3).unwrap();
        if keep_keys {
            assert_eq!(
                (o.events, o.duplicates),
                (0, 2),
                "the kept keys recognise the retry"
            );
            // Same identity, other content: stored, and reported as a reuse (without a description of
            // the first request: only its keys were kept).
            let o = p
                .ingest_body(
                    event("a", "ResponseComplete", "mallory").as_bytes(),
                    "webhook",
                    4,
                )
                .unwrap();
            assert_eq!((o.events, o.reused_ids), (1, 1));
            let (_, _, _, json) = stored(&wal).pop().unwrap();
            assert!(json.contains("no longer in memory"), "{json}");
        } else {
            // Without kept keys the window is rebuilt from what the log holds: the retry is stored again,
            // which is why the collector keeps released segments only when it keeps the keys.
            assert_eq!((o.events, o.duplicates), (2, 0));
        }
    }
}

#[test]
fn keys_lost_before_a_restart_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let first = event_list(&[
        event("a", "ResponseComplete", "u"),
        event("b", "ResponseComplete", "u"),
    ]);
    {
        let (_, p) = open_releasing(dir.path(), true);
        assert_eq!(
            p.ingest_body(first.as_bytes(), "webhook", 1)
                .unwrap()
                .events,
            2
        );
    }
    // A crash between the append and the keys' write: the records are in the log, their keys are not.
    std::fs::remove_dir_all(dir.path().join("dedup")).unwrap();
    {
        let (wal, p) = open_releasing(dir.path(), true);
        assert!(stored(&wal).iter().any(|(id, ..)| id == "a"));
        // The restart wrote the rebuilt window as keys: releasing the log now loses nothing.
        store_and_release(
            &p,
            &wal,
            &event_list(&[
                event("c", "ResponseComplete", "u"),
                event("d", "ResponseComplete", "u"),
            ]),
        );
    }
    let (wal, p) = open_releasing(dir.path(), true);
    assert!(!stored(&wal).iter().any(|(id, ..)| id == "a"));
    let o = p.ingest_body(first.as_bytes(), "webhook", 5).unwrap();
    assert_eq!((o.events, o.duplicates), (0, 2));
}

#[test]
fn secrets_are_redacted_before_the_log() {
    let f = fixture(PipelineConfig::default(), WalOptions::default());
    let secret = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"s1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets","verb":"create","user":{"username":"alice"},"objectRef":{"resource":"secrets","namespace":"prod","name":"db","apiVersion":"v1"},"requestObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db"},"data":{"password":"aHVudGVyMi12ZXJ5LXNlY3JldA=="},"stringData":{"token":"hunter2-very-secret"}}}"#;
    let o = f
        .pipeline
        .ingest_body(secret.as_bytes(), "webhook", 1)
        .unwrap();
    assert_eq!(o.events, 1);
    assert!(o.redactions.secret_values >= 2, "{:?}", o.redactions);
    let (_, _, _, json) = stored(&f.wal).pop().unwrap();
    assert!(
        !json.contains("aHVudGVyMi12ZXJ5LXNlY3JldA==") && !json.contains("hunter2"),
        "{json}"
    );
    assert!(
        json.contains("kubetrail-redacted:") && json.contains("\"password\""),
        "{json}"
    );
    assert!(
        f.pipeline
            .metrics()
            .render()
            .contains("kubetrail_redactions_total{kind=\"secret_value\"}")
    );
}

#[test]
fn filter_policy_drops_before_storage() {
    let filter = kubetrail_policy::load(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  users: [system:kube-proxy]\n- level: Metadata\n",
    )
    .policy
    .unwrap();
    let f = fixture(
        PipelineConfig {
            filter: Some(filter),
            ..Default::default()
        },
        WalOptions::default(),
    );
    let body = format!(
        "{}\n{}\n",
        event("a", "ResponseComplete", "system:kube-proxy"),
        event("b", "ResponseComplete", "alice")
    );
    let o = f
        .pipeline
        .ingest_body(body.as_bytes(), "webhook", 1)
        .unwrap();
    assert_eq!((o.events, o.filtered), (1, 1));
    assert_eq!(stored(&f.wal)[0].0, "b");
}

#[test]
fn malformed_bodies_and_values() {
    let f = fixture(PipelineConfig::default(), WalOptions::default());
    assert!(matches!(
        f.pipeline.ingest_body(b"not json", "webhook", 1),
        Err(IngestError::Malformed(_))
    ));
    assert!(matches!(
        f.pipeline.ingest_body(&[0xff, 0xfe], "webhook", 1),
        Err(IngestError::Malformed(_))
    ));
    // One bad line among good ones: the good ones are stored, the bad one reported with its line.
    let body = format!(
        "{}\n{{\"kind\": 0}}\n{}\n",
        event("a", "ResponseComplete", "u"),
        event("b", "ResponseComplete", "u")
    );
    let o = f
        .pipeline
        .ingest_body(body.as_bytes(), "webhook", 1)
        .unwrap();
    assert_eq!((o.events, o.skipped), (2, 1));
    assert_eq!(o.skipped_values[0].location, "line 2");
}

#[test]
fn a_full_log_refuses_whole_batches_and_their_retry_is_not_a_duplicate() {
    let f = fixture(
        PipelineConfig::default(),
        WalOptions {
            segment_bytes: 4096,
            budget_bytes: 16 << 10,
            fsync: false,
        },
    );
    let mut stored_ok = 0;
    let mut full = None;
    for i in 0..100 {
        let body = event_list(&[event(&format!("x{i}"), "ResponseComplete", "u")]);
        match f.pipeline.ingest_body(body.as_bytes(), "webhook", 1) {
            Ok(o) => stored_ok += o.events,
            Err(IngestError::Full { .. }) => {
                full = Some(body);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let body = full.expect("the budget is reached");
    assert!(stored_ok > 0, "some batches fit before the budget");
    // Free space (as retention would) and retry: stored, not taken for a duplicate.
    f.wal.release_before(f.wal.next_seq()).unwrap();
    let o = f
        .pipeline
        .ingest_body(body.as_bytes(), "webhook", 2)
        .unwrap();
    assert_eq!((o.events, o.duplicates), (1, 0));
}

#[test]
fn admission_is_bounded_by_bytes_in_flight() {
    let f = fixture(
        PipelineConfig {
            max_inflight_bytes: 1000,
            ..Default::default()
        },
        WalOptions::default(),
    );
    let a = f.pipeline.admit(800).unwrap();
    assert!(matches!(
        f.pipeline.admit(300),
        Err(IngestError::Overloaded { .. })
    ));
    drop(a);
    // Alone, even a batch over the limit is admitted: one batch must always be able to make progress.
    let _b = f.pipeline.admit(5000).unwrap();
}

fn request(id: &str, uri: &str, resource: &str, name: &str, at: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"{uri}","verb":"get","user":{{"username":"mallory"}},"objectRef":{{"resource":"{resource}","namespace":"prod","name":"{name}","apiVersion":"v1"}},"requestReceivedTimestamp":"{at}"}}"#
    )
}

// Regression: a second request sent with the first's Audit-ID header was dropped as a duplicate, so a secret
// read could be hidden behind an earlier pod read.
#[test]
fn a_reused_audit_id_with_other_content_is_stored_and_marked_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_in(dir.path());
    let pod = request(
        "X",
        "/api/v1/namespaces/prod/pods/web",
        "pods",
        "web",
        "2026-12-05T10:00:00.000000Z",
    );
    let secret = request(
        "X",
        "/api/v1/namespaces/prod/secrets/db-root",
        "secrets",
        "db-root",
        "2026-12-05T10:00:01.000000Z",
    );
    let (wal, p) = open();
    let o = p.ingest_body(pod.as_bytes(), "webhook", 1).unwrap();
    assert_eq!((o.events, o.duplicates), (1, 0));
    let o = p.ingest_body(secret.as_bytes(), "webhook", 2).unwrap();
    assert_eq!((o.events, o.duplicates, o.reused_ids), (1, 0, 1));
    // Both in one batch, with their retries: the retries are duplicates, nothing else.
    let both = format!("{pod}\n{secret}\n{secret}\n");
    let o = p.ingest_body(both.as_bytes(), "webhook", 3).unwrap();
    assert_eq!((o.events, o.duplicates), (0, 3));
    drop((wal, p));

    // After a restart the window is rebuilt from the log: retries of either are still duplicates.
    let (wal, p) = open();
    let o = p.ingest_body(both.as_bytes(), "webhook", 4).unwrap();
    assert_eq!((o.events, o.duplicates), (0, 3));
    let third = request(
        "X",
        "/api/v1/namespaces/prod/secrets/tls",
        "secrets",
        "tls",
        "2026-12-05T10:00:02.000000Z",
    );
    let o = p.ingest_body(third.as_bytes(), "webhook", 5).unwrap();
    assert_eq!((o.events, o.reused_ids), (1, 1));

    let records: Vec<EventRecord<'static>> = wal
        .read_from(0)
        .unwrap()
        .map(|r| EventRecord::decode(&r.unwrap().1).unwrap().into_owned())
        .collect();
    assert_eq!(records.len(), 3);
    let id = |r: &EventRecord<'_>| r.id(kubetrail_policy::keyless_digest(&r.event));
    let ids: std::collections::HashSet<String> = records.iter().map(id).collect();
    assert_eq!(ids.len(), 3, "every record keeps its own id: {ids:?}");
    assert!(id(&records[0]).starts_with("X-ResponseComplete-"));
    assert!(records[0].variant.is_empty());
    for r in &records[1..] {
        assert_eq!(r.variant.len(), 16);
        let e: serde_json::Value = serde_json::from_str(&r.event).unwrap();
        let mark = e["annotations"]["kubetrail.io/audit-id-reuse"]
            .as_str()
            .unwrap();
        assert!(
            mark.contains("get /api/v1/namespaces/prod/pods/web by mallory"),
            "the mark names the first request: {mark}"
        );
    }
    let secret_read: serde_json::Value = serde_json::from_str(&records[1].event).unwrap();
    assert_eq!(secret_read["objectRef"]["name"], "db-root");
    assert!(
        p.metrics()
            .render()
            .contains("kubetrail_events_audit_id_reused_total 1")
    );
}

// Regression: an event over the log's record limit failed the whole batch (a webhook's neighbours refused, a
// followed file stalled at the line for good).
#[test]
fn an_event_over_the_record_limit_is_stored_cut_with_its_neighbours() {
    let f = fixture(PipelineConfig::default(), WalOptions::default());
    let items: String = (0..24)
        .map(|i| {
            format!(
                r#"{{"metadata":{{"name":"cm-{i}"}},"data":{{"v":"{}"}}}}"#,
                "x".repeat(1 << 20)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let huge = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"big","stage":"ResponseComplete","requestURI":"/api/v1/configmaps","verb":"list","user":{{"username":"exporter"}},"objectRef":{{"resource":"configmaps","apiVersion":"v1"}},"responseObject":{{"kind":"ConfigMapList","items":[{items}]}},"stageTimestamp":"2026-12-05T10:00:00.000000Z"}}"#
    );
    assert!(huge.len() > 24 << 20);
    let body = event_list(&[
        event("a", "ResponseComplete", "u"),
        huge.clone(),
        event("b", "ResponseComplete", "u"),
    ]);
    let o = f
        .pipeline
        .ingest_body(body.as_bytes(), "webhook", 1)
        .unwrap();
    assert_eq!((o.events, o.truncated, o.skipped), (3, 1, 0));
    let s = stored(&f.wal);
    assert_eq!(
        s.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["a", "big", "b"]
    );
    let big: serde_json::Value = serde_json::from_str(&s[1].3).unwrap();
    assert!(big.get("responseObject").is_none());
    assert_eq!(big["stageTimestamp"], "2026-12-05T10:00:00.000000Z");
    let size: usize = big["annotations"]["kubetrail.io/truncated"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 24 << 20, "the original size is recorded: {size}");
    // The retry of the cut event is a duplicate, not a second copy.
    let o = f
        .pipeline
        .ingest_body(event_list(&[huge]).as_bytes(), "webhook", 2)
        .unwrap();
    assert_eq!((o.events, o.duplicates), (0, 1));
    assert!(
        f.pipeline
            .metrics()
            .render()
            .contains("kubetrail_events_truncated_total 1")
    );

    // A line a source cut: its metadata is stored; a beginning without an auditID is a skipped value.
    let mut batch = kubetrail_pipeline::Batch::new();
    let cut = &event("c", "ResponseComplete", "u").replace("}}}", "},\"requestObject\":{\"a\":\"");
    f.pipeline.add_cut(
        &mut batch,
        cut.as_bytes(),
        99 << 20,
        "f:1".into(),
        "file:f",
        3,
    );
    f.pipeline.add_cut(
        &mut batch,
        b"{\"kind\":\"Event\",\"req",
        99 << 20,
        "f:2".into(),
        "file:f",
        3,
    );
    let o = f.pipeline.commit(batch).unwrap();
    assert_eq!((o.events, o.truncated, o.skipped), (1, 1, 1));
    assert_eq!(o.skipped_values[0].location, "f:2");
    let c: serde_json::Value = serde_json::from_str(&stored(&f.wal)[3].3).unwrap();
    assert_eq!(c["auditID"], "c");
    assert_eq!(
        c["annotations"]["kubetrail.io/truncated"],
        (99u64 << 20).to_string()
    );
}
