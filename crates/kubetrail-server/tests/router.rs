//! The router driven without a socket: every answer of the webhook, health, readiness and metrics endpoints.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use common::{EVENT_LIST, FakeIngest, gzip};
use http_body_util::BodyExt as _;
use kubetrail_server::{Identity, Peer, Rejected, Role, ServerConfig, TlsFiles, router};
use tower::ServiceExt as _;

struct Harness {
    app: Router,
    ingest: Arc<FakeIngest>,
}

fn harness(cfg: ServerConfig) -> Harness {
    let ingest = Arc::new(FakeIngest::default());
    Harness {
        app: router(&cfg, ingest.clone()),
        ingest,
    }
}

/// Identities: (name, token, role).
fn with_identities(ids: &[(&str, &str, Role)]) -> ServerConfig {
    ServerConfig {
        identities: ids
            .iter()
            .map(|(name, token, role)| Identity {
                name: name.to_string(),
                role: *role,
                token: Some(token.to_string()),
                client_cert_cn: None,
            })
            .collect(),
        ..ServerConfig::default()
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn post(&self, body: impl Into<Body>) -> Answer {
        self.send(post("/k8s-audit").body(body.into()).unwrap())
            .await
    }

    async fn get(&self, path: &str, loopback: bool) -> Answer {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        if loopback {
            let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
            req.extensions_mut().insert(ConnectInfo(addr));
        }
        self.send(req).await
    }
}

fn post(path: &str) -> axum::http::request::Builder {
    Request::post(path).header("content-type", "application/json")
}

/// 200 MiB of zeros as 200 concatenated gzip members (a valid gzip stream) of about 1 KiB each.
fn gzip_bomb() -> Vec<u8> {
    let member = gzip(&vec![0u8; 1 << 20]);
    member.repeat(200)
}

#[tokio::test]
async fn event_list_is_accepted() {
    let h = harness(ServerConfig::default());
    let a = h.post(EVENT_LIST).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.body, r#"{"accepted":2,"duplicates":0,"skipped":0}"#);
    let seen = h.ingest.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, EVENT_LIST.as_bytes());
    assert_eq!(
        seen[0].1,
        Peer {
            addr: "0.0.0.0:0".parse().unwrap(),
            identity: None,
            role: None,
        }
    );
}

#[tokio::test]
async fn alias_path_and_media_types() {
    let h = harness(ServerConfig::default());
    for (path, content_type) in [
        ("/api/v1/audit", Some("application/json")),
        ("/k8s-audit", Some("application/x-ndjson")),
        ("/k8s-audit", Some("text/plain; charset=utf-8")),
        ("/k8s-audit", None),
    ] {
        let mut req = Request::post(path);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let a = h.send(req.body(Body::from(EVENT_LIST)).unwrap()).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{path} {content_type:?}: {}",
            a.body
        );
    }
    assert_eq!(h.ingest.seen().len(), 4);
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let h = harness(ServerConfig::default());
    let req = Request::post("/k8s-audit")
        .header("content-type", "application/xml")
        .body(Body::from("<events/>"))
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = post("/k8s-audit")
        .header("content-encoding", "br")
        .body(Body::from(EVENT_LIST))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(h.ingest.seen().is_empty());
}

#[tokio::test]
async fn get_on_the_webhook_is_405() {
    let h = harness(ServerConfig::default());
    assert_eq!(
        h.get("/k8s-audit", true).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn gzip_body_is_decompressed() {
    let h = harness(ServerConfig::default());
    let req = post("/k8s-audit")
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(EVENT_LIST.as_bytes())))
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(h.ingest.seen()[0].0, EVENT_LIST.as_bytes());
}

#[tokio::test]
async fn gzip_bomb_is_413_and_nothing_is_lost() {
    let h = harness(ServerConfig::default());
    let bomb = gzip_bomb();
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    let req = post("/k8s-audit")
        .header("content-encoding", "gzip")
        .body(Body::from(bomb))
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert!(h.ingest.seen().is_empty());
    // The next request is served as usual.
    let req = post("/k8s-audit")
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(EVENT_LIST.as_bytes())))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    assert_eq!(h.ingest.seen().len(), 1);
    let metrics = h.get("/metrics", true).await.body;
    assert!(
        metrics.contains("kubetrail_server_rejected_total{reason=\"gzip_bomb\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn single_member_gzip_bomb_is_413() {
    let h = harness(ServerConfig {
        max_decompressed_bytes: 1 << 20,
        ..ServerConfig::default()
    });
    let req = post("/k8s-audit")
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(&vec![b' '; 8 << 20])))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine.
    let req = post("/k8s-audit")
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(&vec![b' '; 1 << 20])))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn corrupt_gzip_is_400() {
    let h = harness(ServerConfig::default());
    let good = gzip(EVENT_LIST.as_bytes());
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    for body in [
        b"not gzip at all".to_vec(),
        good[..good.len() - 10].to_vec(),
        flipped,
    ] {
        let req = post("/k8s-audit")
            .header("content-encoding", "gzip")
            .body(Body::from(body))
            .unwrap();
        let a = h.send(req).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    }
    assert!(h.ingest.seen().is_empty());
}

#[tokio::test]
async fn oversized_body_is_413() {
    let h = harness(ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    });
    // Without Content-Length: refused while reading.
    assert_eq!(
        h.post(vec![b' '; 1025]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // With a Content-Length beyond the limit: refused before reading.
    let req = post("/k8s-audit")
        .header("content-length", "999999999")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    // At the limit: accepted.
    assert_eq!(h.post(vec![b' '; 1024]).await.status, StatusCode::OK);
    assert_eq!(h.ingest.seen().len(), 1);
}

/// An endless body is refused once it crossed the limit, without the rest being read.
#[tokio::test]
async fn endless_body_is_not_read_past_the_limit() {
    let h = harness(ServerConfig {
        max_body_bytes: 64 << 10,
        ..ServerConfig::default()
    });
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        while tx.send_data(Bytes::from(vec![b' '; 1024])).await.is_ok() {
            sent += 1024;
            if sent > 1 << 30 {
                break;
            }
        }
        sent
    });
    let req = post("/k8s-audit").body(Body::new(body)).unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let sent = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .unwrap()
        .unwrap();
    assert!(sent <= (64 << 10) + 4096, "{sent} bytes were taken");
}

#[tokio::test]
async fn bearer_tokens() {
    let h = harness(with_identities(&[
        ("first", "first-token", Role::Ingest),
        ("second", "second-token", Role::Ingest),
    ]));
    let a = h.post(EVENT_LIST).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    for wrong in [
        "Bearer second-toke",
        "Bearer second-tokenx",
        "Basic c2Vjb25kLXRva2Vu",
    ] {
        let req = post("/k8s-audit")
            .header("authorization", wrong)
            .body(Body::from(EVENT_LIST))
            .unwrap();
        let a = h.send(req).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(a.headers.contains_key("www-authenticate"));
    }
    assert!(h.ingest.seen().is_empty());
    let req = post("/k8s-audit")
        .header("authorization", "Bearer second-token")
        .body(Body::from(EVENT_LIST))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    assert_eq!(h.ingest.seen()[0].1.identity.as_deref(), Some("second"));
    assert_eq!(h.ingest.seen()[0].1.role, Some(Role::Ingest));
}

/// A verified client certificate (as the TLS layer hands it over) authenticates by its CN.
#[tokio::test]
async fn client_certificate_identity() {
    let h = harness(ServerConfig {
        tls: Some(TlsFiles {
            cert: "unused.pem".into(),
            key: "unused.pem".into(),
            client_ca: Some("unused.pem".into()),
        }),
        ..ServerConfig::default()
    });
    let a = h.post(EVENT_LIST).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        !a.headers.contains_key("www-authenticate"),
        "no tokens configured"
    );

    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let mut info = axum_server::tls::TlsInfo::default();
    info.peer_certificates = vec![cert.der().to_vec()];
    let mut req = post("/k8s-audit").body(Body::from(EVENT_LIST)).unwrap();
    req.extensions_mut().insert(Arc::new(info));
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    assert_eq!(
        h.ingest.seen()[0].1.identity.as_deref(),
        Some("kube-apiserver")
    );
    assert_eq!(h.ingest.seen()[0].1.role, Some(Role::Ingest));
}

#[tokio::test]
async fn pipeline_rejections() {
    let h = harness(ServerConfig::default());

    h.ingest.answer(Some(Rejected::Overloaded {
        retry_after_secs: 3,
    }));
    let a = h.post(EVENT_LIST).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "3");

    h.ingest.answer(Some(Rejected::Unavailable {
        retry_after_secs: 30,
        reason: "disk budget exhausted".into(),
    }));
    let a = h.post(EVENT_LIST).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers["retry-after"], "30");
    assert!(a.body.contains("disk budget exhausted"), "{}", a.body);

    h.ingest.answer(Some(Rejected::Malformed(
        "line 1: expected an object".into(),
    )));
    let a = h.post(EVENT_LIST).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body, r#"{"error":"line 1: expected an object"}"#);

    h.ingest
        .answer(Some(Rejected::Malformed("x".repeat(10_000))));
    let a = h.post(EVENT_LIST).await;
    assert!(a.body.len() < 400, "error messages are bounded");
}

#[tokio::test]
async fn health_and_readiness() {
    let h = harness(with_identities(&[("apiserver", "t", Role::Ingest)]));
    let a = h.get("/healthz", false).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(h.get("/readyz", false).await.status, StatusCode::OK);
    *h.ingest.not_ready.lock().unwrap() = Some("log over its disk budget".into());
    let a = h.get("/readyz", false).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body, "log over its disk budget");
}

#[tokio::test]
async fn metrics_count_requests() {
    let h = harness(with_identities(&[("apiserver", "t", Role::Ingest)]));
    let authed = || post("/k8s-audit").header("authorization", "Bearer t");
    h.send(authed().body(Body::from(EVENT_LIST)).unwrap()).await;
    h.post(EVENT_LIST).await; // 401
    let req = Request::post("/k8s-audit")
        .header("authorization", "Bearer t")
        .header("content-type", "application/xml")
        .body(Body::empty())
        .unwrap();
    h.send(req).await; // 415
    h.ingest.answer(Some(Rejected::Overloaded {
        retry_after_secs: 1,
    }));
    h.send(authed().body(Body::from(EVENT_LIST)).unwrap()).await;

    // /metrics needs a credential, from loopback too.
    assert_eq!(
        h.get("/metrics", true).await.status,
        StatusCode::UNAUTHORIZED
    );
    let metrics = || {
        Request::get("/metrics")
            .header("authorization", "Bearer t")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(h.send(metrics()).await.status, StatusCode::OK);
    let a = h.send(metrics()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "kubetrail_server_requests_total{endpoint=\"/k8s-audit\",code=\"200\"} 1",
        "kubetrail_server_requests_total{endpoint=\"/k8s-audit\",code=\"401\"} 1",
        "kubetrail_server_requests_total{endpoint=\"/k8s-audit\",code=\"429\"} 1",
        "kubetrail_server_requests_total{endpoint=\"/metrics\",code=\"401\"} 1",
        "kubetrail_server_requests_total{endpoint=\"/metrics\",code=\"200\"} 1",
        "kubetrail_server_rejected_total{reason=\"unauthenticated\"} 2",
        "kubetrail_server_rejected_total{reason=\"overloaded\"} 1",
        "kubetrail_server_requests_total{endpoint=\"/k8s-audit\",code=\"415\"} 1",
        "kubetrail_server_rejected_total{reason=\"unsupported_media_type\"} 1",
        "kubetrail_server_rejected_total{reason=\"too_large\"} 0",
        "kubetrail_server_events_accepted_total 2",
        "kubetrail_server_request_duration_seconds_count{endpoint=\"/k8s-audit\"} 4",
        "kubetrail_server_request_duration_seconds_bucket{endpoint=\"/k8s-audit\",le=\"+Inf\"} 4",
        "fake_pipeline_events_total 7",
    ] {
        assert!(a.body.contains(line), "missing `{line}` in\n{}", a.body);
    }
    let bytes_line = format!("kubetrail_server_body_bytes_total {}", 2 * EVENT_LIST.len());
    assert!(
        a.body.contains(&bytes_line),
        "missing `{bytes_line}` in\n{}",
        a.body
    );
}

/// A pipeline that registers its metrics in the server's registry is rendered with the server's in one
/// exposition: one HELP and TYPE per family, no `# EOF` (Prometheus's 0.0.4 text format).
#[tokio::test]
async fn pipeline_metrics_share_the_servers_registry() {
    use prometheus_client::metrics::counter::Counter;
    #[derive(Debug, Default)]
    struct Registering {
        duplicates: Counter,
    }
    impl kubetrail_server::Ingest for Registering {
        async fn ingest(
            &self,
            _body: Bytes,
            _peer: Peer,
        ) -> Result<kubetrail_server::Accepted, Rejected> {
            self.duplicates.inc_by(2);
            Ok(kubetrail_server::Accepted {
                events: 1,
                duplicates: 2,
                skipped: 0,
            })
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
        fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
            registry.register(
                "kubetrail_events_duplicate",
                "Events stored once already",
                self.duplicates.clone(),
            );
        }
    }

    let ingest = Arc::new(Registering::default());
    let h = Harness {
        app: router(&ServerConfig::default(), ingest),
        ingest: Arc::new(FakeIngest::default()),
    };
    assert_eq!(h.post(EVENT_LIST).await.status, StatusCode::OK);
    let text = h.get("/metrics", true).await.body;
    for line in [
        "# TYPE kubetrail_events_duplicate counter",
        "kubetrail_events_duplicate_total 2",
        "kubetrail_server_events_accepted_total 1",
        "# TYPE kubetrail_server_requests counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        !text.contains("kubetrail_server_events_duplicate"),
        "{text}"
    );
    assert_eq!(text.matches("# TYPE kubetrail_server_rejected ").count(), 1);
}

/// Bodies held in memory are bounded: past the cap the sender is told to retry, and nothing is lost.
#[tokio::test]
async fn too_many_bodies_in_flight_is_429() {
    #[derive(Debug)]
    struct Gated {
        gate: tokio::sync::Semaphore,
        entered: std::sync::atomic::AtomicUsize,
    }
    impl kubetrail_server::Ingest for Gated {
        async fn ingest(
            &self,
            _body: Bytes,
            _peer: Peer,
        ) -> Result<kubetrail_server::Accepted, Rejected> {
            self.entered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _pass = self.gate.acquire().await.unwrap();
            Ok(kubetrail_server::Accepted::default())
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    let gated = Arc::new(Gated {
        gate: tokio::sync::Semaphore::new(0),
        entered: Default::default(),
    });
    let app = router(&ServerConfig::default(), gated.clone());
    let mut held = Vec::new();
    for _ in 0..16 {
        let req = post("/k8s-audit").body(Body::from(EVENT_LIST)).unwrap();
        held.push(tokio::spawn(app.clone().oneshot(req)));
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while gated.entered.load(std::sync::atomic::Ordering::SeqCst) < 16 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let req = post("/k8s-audit").body(Body::from(EVENT_LIST)).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    gated.gate.add_permits(16);
    for request in held {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // The slots are free again.
    let req = post("/k8s-audit").body(Body::from(EVENT_LIST)).unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A sender that hangs up does not cut the pipeline's write in half.
#[tokio::test]
async fn ingest_finishes_when_the_sender_hangs_up() {
    #[derive(Debug, Default)]
    struct Finishing {
        gate: tokio::sync::Notify,
        entered: std::sync::atomic::AtomicBool,
        finished: std::sync::atomic::AtomicBool,
    }
    impl kubetrail_server::Ingest for Finishing {
        async fn ingest(
            &self,
            _body: Bytes,
            _peer: Peer,
        ) -> Result<kubetrail_server::Accepted, Rejected> {
            self.entered
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.gate.notified().await;
            self.finished
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(kubetrail_server::Accepted::default())
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    let ingest = Arc::new(Finishing::default());
    let app = router(&ServerConfig::default(), ingest.clone());
    let req = post("/k8s-audit").body(Body::from(EVENT_LIST)).unwrap();
    let request = tokio::spawn(app.oneshot(req));
    while !ingest.entered.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    request.abort();
    let _ = request.await;
    ingest.gate.notify_one();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !ingest.finished.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the pipeline's work ran to its end");
}

/// The caller's API routes sit behind the webhook's authentication, even from loopback, and see the caller.
#[tokio::test]
async fn api_routes_are_authenticated_and_see_the_caller() {
    let cfg = with_identities(&[
        ("platform-security", "api-token", Role::Admin),
        ("apiserver", "ingest-token", Role::Ingest),
    ]);
    let api = Router::new().route(
        "/api/v1/whoami",
        axum::routing::get(|axum::Extension(peer): axum::Extension<Peer>| async move {
            peer.identity.unwrap_or_default()
        }),
    );
    let h = Harness {
        app: kubetrail_server::router_with_api(&cfg, Arc::new(FakeIngest::default()), api),
        ingest: Arc::new(FakeIngest::default()),
    };
    let denied = h.get("/api/v1/whoami", true).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(denied.headers.contains_key("www-authenticate"));
    let req = Request::get("/api/v1/whoami")
        .header("authorization", "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::UNAUTHORIZED);
    let req = Request::get("/api/v1/whoami")
        .header("authorization", "Bearer api-token")
        .body(Body::empty())
        .unwrap();
    let ok = h.send(req).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, "platform-security");
    // The apiserver's token reads nothing: 403 naming the role the route needs.
    let req = Request::get("/api/v1/whoami")
        .header("authorization", "Bearer ingest-token")
        .body(Body::empty())
        .unwrap();
    let refused = h.send(req).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.body.contains("needs the reader role"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("`apiserver` has the ingest role"),
        "{}",
        refused.body
    );
    // The webhook is still there, still authenticated.
    assert_eq!(h.post(EVENT_LIST).await.status, StatusCode::UNAUTHORIZED);
}

/// A harness whose API has a page, a read and a change, like the console and its API.
fn console_harness(cfg: &ServerConfig) -> Harness {
    let api = Router::new()
        .route("/", axum::routing::get(|| async { "the console" }))
        .route(
            "/api/v1/whoami",
            axum::routing::get(|axum::Extension(peer): axum::Extension<Peer>| async move {
                peer.identity.unwrap_or_else(|| "-".into())
            }),
        )
        .route(
            "/api/v1/change",
            axum::routing::post(|axum::Extension(peer): axum::Extension<Peer>| async move {
                format!("changed by {}", peer.identity.unwrap_or_else(|| "-".into()))
            }),
        );
    Harness {
        app: kubetrail_server::router_with_api(cfg, Arc::new(FakeIngest::default()), api),
        ingest: Arc::new(FakeIngest::default()),
    }
}

fn form_login(token: &str, next: &str) -> Request<Body> {
    Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "kubetrail.example:9443")
        .header("origin", "https://kubetrail.example:9443")
        .body(Body::from(format!("token={token}&next={next}")))
        .unwrap()
}

/// The console's login: a configured token buys an HttpOnly, SameSite=Strict session cookie; pages without
/// one redirect to the login; changes made with the cookie need its CSRF token and this origin.
#[tokio::test]
async fn console_sessions_login_csrf_and_logout() {
    let h = console_harness(&ServerConfig {
        server_names: vec!["kubetrail.example".into()],
        ..with_identities(&[("soc-lead", "console-token", Role::Responder)])
    });

    // A page without a session goes to the login, which comes back to it; the API answers 401.
    let page = h.get("/", true).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers["location"], "/login?next=/");
    assert_eq!(
        h.get("/api/v1/whoami", true).await.status,
        StatusCode::UNAUTHORIZED
    );
    let login_page = h.get("/login?next=/alerts/x", true).await;
    assert_eq!(login_page.status, StatusCode::OK);
    assert!(login_page.body.contains("value=\"/alerts/x\""));
    assert!(
        login_page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );

    // A wrong token, a login from another site and an open redirect are all refused.
    let wrong = h.send(form_login("nope", "/")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!wrong.headers.contains_key("set-cookie"));
    let mut cross = form_login("console-token", "/");
    cross
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(h.send(cross).await.status, StatusCode::FORBIDDEN);
    let ok = h.send(form_login("console-token", "//evil.example/")).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.headers["location"], "/", "an off-site next is dropped");
    let set_cookie = ok.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // The cookie opens pages and reads, as the token's identity.
    let with_cookie = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", format!("theme=dark; {cookie}"))
            .header("host", "kubetrail.example:9443")
    };
    let page = h
        .send(with_cookie("GET", "/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (page.status, page.body.as_str()),
        (StatusCode::OK, "the console")
    );
    let me = h
        .send(
            with_cookie("GET", "/api/v1/whoami")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(me.body, "soc-lead");
    let session = h
        .send(
            with_cookie("GET", "/api/v1/session")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let session: serde_json::Value = serde_json::from_str(&session.body).unwrap();
    assert_eq!(session["identity"], "soc-lead");
    assert_eq!(session["role"], "responder");
    assert_eq!(session["may"], serde_json::json!(["reader", "responder"]));
    let csrf = session["csrf"].as_str().unwrap().to_string();

    // A change needs the CSRF token, and this origin.
    let change = |csrf: Option<&str>, origin: Option<&str>| {
        let mut r = with_cookie("POST", "/api/v1/change");
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.body(Body::empty()).unwrap()
    };
    assert_eq!(
        h.send(change(None, None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.send(change(Some("0000"), None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.send(change(Some(&csrf), Some("https://evil.example")))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let made = h
        .send(change(Some(&csrf), Some("https://kubetrail.example:9443")))
        .await;
    assert_eq!(made.status, StatusCode::OK);
    assert_eq!(made.body, "changed by soc-lead");

    // Logging out ends the session server-side: the same cookie no longer works.
    let out = h
        .send(with_cookie("POST", "/logout").body(Body::empty()).unwrap())
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = h
        .send(
            with_cookie("GET", "/api/v1/whoami")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

/// Without authentication configured (loopback only), the console needs no login, but another site's page
/// still cannot change anything through the visitor's browser.
#[tokio::test]
async fn open_console_refuses_cross_site_changes() {
    let h = console_harness(&ServerConfig::default());
    assert_eq!(h.get("/", true).await.body, "the console");
    let login = h.get("/login?next=/alerts", true).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "no login to do");
    let cross = Request::post("/api/v1/change")
        .header("host", "127.0.0.1:9443")
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(cross).await.status, StatusCode::FORBIDDEN);
    let fetch_site = Request::post("/api/v1/change")
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(fetch_site).await.status, StatusCode::FORBIDDEN);
    // A script (curl, the CLI) sends neither header.
    let script = Request::post("/api/v1/change").body(Body::empty()).unwrap();
    let ok = h.send(script).await;
    assert_eq!(ok.status, StatusCode::OK);
    // Every answer carries the security headers.
    for header in [
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
    ] {
        assert!(ok.headers.contains_key(header), "{header}");
    }
}

/// Every role against the webhook, a read, a responder's change, an admin's change and `/metrics`.
#[tokio::test]
async fn roles_decide_what_each_identity_may_do() {
    let cfg = with_identities(&[
        ("apiserver", "ingest-token", Role::Ingest),
        ("soc-analyst", "reader-token", Role::Reader),
        ("soc-lead", "responder-token", Role::Responder),
        ("platform-security", "admin-token", Role::Admin),
    ]);
    let ok = || async { "ok" };
    let api = Router::new()
        .route("/api/v1/read", axum::routing::get(ok))
        .merge(kubetrail_server::needs(
            Role::Responder,
            Router::new().route("/api/v1/respond", axum::routing::post(ok)),
        ))
        .merge(kubetrail_server::needs(
            Role::Admin,
            Router::new().route("/api/v1/govern", axum::routing::post(ok)),
        ));
    let ingest = Arc::new(FakeIngest::default());
    let h = Harness {
        app: kubetrail_server::router_with_api(&cfg, ingest.clone(), api),
        ingest,
    };
    let call = |method: &str, path: &str, token: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(if path == "/k8s-audit" {
                EVENT_LIST
            } else {
                ""
            }))
            .unwrap()
    };
    let table: [(&str, &str, Option<Role>, [u16; 4]); 5] = [
        // method, path, the role named when refused, status for ingest/reader/responder/admin
        (
            "POST",
            "/k8s-audit",
            Some(Role::Ingest),
            [200, 403, 403, 403],
        ),
        (
            "GET",
            "/api/v1/read",
            Some(Role::Reader),
            [403, 200, 200, 200],
        ),
        (
            "POST",
            "/api/v1/respond",
            Some(Role::Responder),
            [403, 403, 200, 200],
        ),
        (
            "POST",
            "/api/v1/govern",
            Some(Role::Admin),
            [403, 403, 403, 200],
        ),
        ("GET", "/metrics", None, [200, 200, 200, 200]),
    ];
    let tokens = [
        "ingest-token",
        "reader-token",
        "responder-token",
        "admin-token",
    ];
    for (method, path, needed, statuses) in table {
        for (token, want) in tokens.iter().zip(statuses) {
            let a = h.send(call(method, path, token)).await;
            assert_eq!(
                a.status.as_u16(),
                want,
                "{method} {path} with {token}: {}",
                a.body
            );
            if want == 403 {
                // The API reads nothing to an ingest identity whatever the route: it needs a reader at least.
                let needed = if *token == "ingest-token" && path.starts_with("/api/") {
                    Role::Reader
                } else {
                    needed.unwrap()
                };
                assert!(
                    a.body.contains(&format!("needs the {needed} role")),
                    "{method} {path}: {}",
                    a.body
                );
                assert_eq!(a.headers["x-kubetrail-needs-role"], needed.as_str());
            }
        }
    }
    // Only the ingest identity's events reached the pipeline, carrying its name and role.
    let seen = h.ingest.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1.identity.as_deref(), Some("apiserver"));
    assert_eq!(seen[0].1.role, Some(Role::Ingest));
}

/// A verified client certificate has the role of the identity it names; once identities name certificates,
/// one that names none is refused (without such identities, it may send events and nothing else: see
/// `client_certificate_identity`).
#[tokio::test]
async fn certificates_are_an_allowlist_once_identities_name_them() {
    let cert = |cn: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut info = axum_server::tls::TlsInfo::default();
        info.peer_certificates = vec![params.self_signed(&key).unwrap().der().to_vec()];
        Arc::new(info)
    };
    let cfg = ServerConfig {
        tls: Some(TlsFiles {
            cert: "unused.pem".into(),
            key: "unused.pem".into(),
            client_ca: Some("unused.pem".into()),
        }),
        identities: vec![Identity {
            name: "soc-analyst".into(),
            role: Role::Reader,
            token: None,
            client_cert_cn: Some("alice".into()),
        }],
        ..ServerConfig::default()
    };
    let api = Router::new().route(
        "/api/v1/whoami",
        axum::routing::get(|axum::Extension(peer): axum::Extension<Peer>| async move {
            peer.identity.unwrap_or_default()
        }),
    );
    let h = Harness {
        app: kubetrail_server::router_with_api(&cfg, Arc::new(FakeIngest::default()), api),
        ingest: Arc::new(FakeIngest::default()),
    };
    let with_cert = |method: &str, path: &str, cn: &str| {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(EVENT_LIST))
            .unwrap();
        req.extensions_mut().insert(cert(cn));
        req
    };
    let unknown = h
        .send(with_cert("GET", "/api/v1/whoami", "kube-apiserver"))
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "{}", unknown.body);
    assert!(unknown.body.contains("client_cert_cn"), "{}", unknown.body);
    let post = h
        .send(with_cert("POST", "/k8s-audit", "kube-apiserver"))
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    let alice = h.send(with_cert("GET", "/api/v1/whoami", "alice")).await;
    assert_eq!(
        (alice.status, alice.body.as_str()),
        (StatusCode::OK, "soc-analyst")
    );
    assert_eq!(
        h.send(with_cert("POST", "/k8s-audit", "alice"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

/// Wrong tokens from one address are throttled (429 with Retry-After), on the API, `/metrics` and the login
/// alike; a right token from the same address is not (no lockout of whoever shares it), nor another address.
#[tokio::test]
async fn failed_authentications_are_throttled_per_address() {
    let cfg = with_identities(&[("soc-lead", "right-token", Role::Responder)]);
    let h = console_harness(&cfg);
    let from = |ip: &str, path: &str, token: &str| {
        let mut req = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    };
    for i in 0..kubetrail_server::MAX_FAILURES {
        let path = if i % 2 == 0 {
            "/api/v1/whoami"
        } else {
            "/metrics"
        };
        let a = h.send(from("203.0.113.9", path, "guess")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let a = h.send(from("203.0.113.9", "/api/v1/whoami", "guess")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs));
    let mut login = form_login("another-guess", "/");
    login
        .headers_mut()
        .insert("host", "127.0.0.1:9443".parse().unwrap());
    login.headers_mut().remove("origin");
    login.extensions_mut().insert(ConnectInfo(
        "203.0.113.9:40001".parse::<SocketAddr>().unwrap(),
    ));
    assert_eq!(h.send(login).await.status, StatusCode::TOO_MANY_REQUESTS);
    let right = h
        .send(from("203.0.113.9", "/api/v1/whoami", "right-token"))
        .await;
    assert_eq!(
        (right.status, right.body.as_str()),
        (StatusCode::OK, "soc-lead"),
        "never a right token"
    );
    let other = h
        .send(from("203.0.113.10", "/api/v1/whoami", "right-token"))
        .await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (StatusCode::OK, "soc-lead")
    );
}

/// DNS rebinding: a page whose name points at the listener says so in `Host`; it is refused (421)
/// everywhere, the open loopback installation included, while addresses, localhost and configured names
/// pass.
#[tokio::test]
async fn rebinding_hosts_are_refused() {
    let h = console_harness(&ServerConfig {
        server_names: vec!["kubetrail.corp.example".into()],
        ..ServerConfig::default()
    });
    let with_host = |method: &str, path: &str, host: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("content-type", "application/json")
            .body(Body::from(if path == "/k8s-audit" {
                EVENT_LIST
            } else {
                ""
            }))
            .unwrap()
    };
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/api/v1/whoami"),
        ("POST", "/api/v1/change"),
        ("POST", "/k8s-audit"),
        ("GET", "/metrics"),
        ("GET", "/login"),
    ] {
        let a = h
            .send(with_host(method, path, "rebind.evil.example:9443"))
            .await;
        assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{method} {path}");
        assert!(a.body.contains("server_names"), "{}", a.body);
        for host in ["127.0.0.1:9443", "localhost:9443", "kubetrail.corp.example"] {
            let a = h.send(with_host(method, path, host)).await;
            assert_ne!(
                a.status,
                StatusCode::MISDIRECTED_REQUEST,
                "{method} {path} {host}"
            );
        }
    }
}

/// `/metrics` needs a credential unless `metrics_public`.
#[tokio::test]
async fn metrics_can_be_made_public() {
    let cfg = ServerConfig {
        metrics_public: true,
        ..with_identities(&[("apiserver", "t", Role::Ingest)])
    };
    let h = harness(cfg);
    assert_eq!(h.get("/metrics", false).await.status, StatusCode::OK);
    let closed = harness(with_identities(&[("apiserver", "t", Role::Ingest)]));
    assert_eq!(
        closed.get("/metrics", false).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// An ingest token cannot open a console session.
#[tokio::test]
async fn ingest_tokens_cannot_log_in() {
    let h = console_harness(&ServerConfig {
        server_names: vec!["kubetrail.example".into()],
        ..with_identities(&[("apiserver", "ingest-token", Role::Ingest)])
    });
    let a = h.send(form_login("ingest-token", "/")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(!a.headers.contains_key("set-cookie"));
    assert!(a.body.contains("ingest role"), "{}", a.body);
}

/// An API body that never arrives holds nothing for long: 408 once its time is up (the webhook's own limit
/// is longer), and the handler never runs.
#[tokio::test]
async fn an_api_body_that_never_arrives_is_408() {
    let h = console_harness(&ServerConfig::default());
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
    tx.send_data(Bytes::from_static(b"{")).await.unwrap();
    let req = Request::post("/api/v1/change")
        .header("content-length", "1000")
        .body(Body::new(body))
        .unwrap();
    let started = std::time::Instant::now();
    let a = tokio::time::timeout(Duration::from_secs(30), h.send(req))
        .await
        .expect("answered");
    assert_eq!(a.status, StatusCode::REQUEST_TIMEOUT, "{}", a.body);
    assert!(!a.body.contains("changed by"));
    assert!(started.elapsed() < Duration::from_secs(29));
    drop(tx);
}
