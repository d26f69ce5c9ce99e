//! The collector runs as a library: started on port 0 in a temporary data directory, it takes a webhook batch,
//! detects, converts to Parquet and stops cleanly when its shutdown future completes.

use std::time::Duration;

use kubetrail_runtime::config::Config;
use kubetrail_runtime::service::collector::{self, Flags, Settings};
use kubetrail_sinks::http::{HttpClient, HttpConfig, Request};

#[test]
fn the_collector_runs_as_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = Settings::resolve(
        Config::default(),
        Flags {
            data: Some(data.clone()),
            ..Flags::default()
        },
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let events: Vec<serde_json::Value> = include_str!("fixtures/breach.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let body =
        serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events});

    let mut metrics = String::new();
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let http = HttpClient::new(&url, &HttpConfig::default()).unwrap();
            // Ready once the listener answers /readyz (bounded: 20 s).
            let ready = (0..200).any(|_| {
                let ok = rt
                    .block_on(http.send(Request::new(hyper::Method::GET, "/readyz")))
                    .is_ok_and(|r| r.status == 200);
                if !ok {
                    std::thread::sleep(Duration::from_millis(100));
                }
                ok
            });
            assert!(ready, "the collector never became ready");
            let answer = rt
                .block_on(
                    http.send(
                        Request::new(hyper::Method::POST, "/k8s-audit")
                            .body(body.to_string(), "application/json"),
                    ),
                )
                .unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text(300));
            let metrics = rt
                .block_on(http.send(Request::new(hyper::Method::GET, "/metrics")))
                .unwrap();
            stop_tx.send(()).unwrap();
            assert_eq!(
                metrics.header("content-type"),
                Some("text/plain; version=0.0.4; charset=utf-8"),
                "what Prometheus parses"
            );
            metrics.text(usize::MAX)
        });
        collector::run(
            settings,
            Some(listener),
            async move {
                let _ = stop_rx.await;
            },
            &|l| lines.lock().unwrap().push(l.to_string()),
        )
        .unwrap();
        metrics = client.join().unwrap();
    });

    // One registry: every series once, the services' beside the server's and the pipeline's.
    let mut names: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "a series declared twice:\n{metrics}");
    for series in [
        "kubetrail_build_info{version=\"",
        "kubetrail_conversion_lag_events ",
        "kubetrail_checkpoint_age_seconds ",
        "kubetrail_wal_bytes ",
        "kubetrail_events_duplicate_total ",
        "kubetrail_server_requests_total{",
        "kubetrail_detection_events_total ",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "no `{series}` in /metrics:\n{metrics}"
        );
    }
    // Only the types the 0.0.4 text format knows, and no OpenMetrics `# EOF`.
    for l in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let kind = l.rsplit(' ').next().unwrap_or("");
        assert!(
            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
            "`# TYPE {l}` is not a type of the 0.0.4 text format"
        );
    }
    assert!(!metrics.contains("# EOF"), "{metrics}");
    assert!(
        !metrics.contains("kubetrail_server_events_duplicate"),
        "{metrics}"
    );
    let said = lines.into_inner().unwrap().join("\n");
    assert!(
        said.contains("receiving audit events at http://127.0.0.1:"),
        "{said}"
    );
    assert!(said.ends_with("stopped"), "{said}");
    // Stored and converted at shutdown.
    let files = kubetrail_store::list_files(&data.join("store"), None, None, None).unwrap();
    assert!(!files.is_empty(), "no Parquet file in {}", data.display());
    // Detected: the breach raises alerts, written to alerts.jsonl.
    let alerts = std::fs::read_to_string(data.join("alerts").join("alerts.jsonl")).unwrap();
    assert!(
        alerts.lines().any(|l| l.contains("report-runner")),
        "no alert about the breach's actor:\n{alerts}"
    );
}
