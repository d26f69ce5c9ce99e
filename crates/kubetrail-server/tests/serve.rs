//! The listener over real sockets: TLS with client certificates and bearer tokens, plain HTTP on loopback,
//! graceful shutdown and the errors `serve` answers with. The client is the `curl` CLI, a real TLS client
//! (OpenSSL), so what is tested is what a sender sees.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{EVENT_LIST, FakeIngest, gzip};
use kubetrail_server::{ServerConfig, ServerError, TlsFiles, serve, serve_listener};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A CA with a server and a client certificate, plus a client certificate from another CA, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("kubetrail test CA");
        let rogue_ca = new_ca("somebody else's CA");
        write(dir.path(), "ca.pem", &ca.pem());

        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        write(
            dir.path(),
            "server.pem",
            &server.signed_by(&key, &ca).unwrap().pem(),
        );
        write(dir.path(), "server-key.pem", &key.serialize_pem());

        for (name, issuer) in [("client", &ca), ("rogue", &rogue_ca)] {
            let mut client = CertificateParams::new(Vec::new()).unwrap();
            client
                .distinguished_name
                .push(DnType::CommonName, "kube-apiserver");
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().unwrap();
            let cert = client.signed_by(&key, issuer).unwrap();
            write(dir.path(), &format!("{name}.pem"), &cert.pem());
            write(dir.path(), &format!("{name}-key.pem"), &key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls(&self) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server-key.pem"),
            client_ca: Some(self.path("ca.pem")),
        }
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}

struct Running {
    addr: SocketAddr,
    ingest: Arc<FakeIngest>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
        result.unwrap();
    }
}

fn start(cfg: ServerConfig) -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ingest = Arc::new(FakeIngest::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_listener(
        listener,
        cfg,
        ingest.clone(),
        axum::Router::new(),
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        addr,
        ingest,
        stop,
        task,
    }
}

/// What curl got: the HTTP status, or `None` when no HTTP answer came (TLS handshake refused).
#[derive(Debug)]
struct Reply {
    status: Option<u16>,
    body: String,
}

/// A request through the `curl` CLI. `args` adds e.g. `--cert`, `-H`.
async fn curl(url: String, args: Vec<String>, body: Option<Vec<u8>>) -> Reply {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}"])
            .args(&args);
        if let Some(body) = body {
            let file = dir.path().join("body");
            std::fs::write(&file, body).unwrap();
            cmd.arg("--data-binary").arg(format!("@{}", file.display()));
        }
        let output = cmd.arg(&url).output().expect("curl is installed");
        let code = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let status = code.parse::<u16>().ok().filter(|&c| c != 0);
        if status.is_none() {
            assert!(
                !output.status.success(),
                "curl succeeded without an HTTP status"
            );
        }
        Reply {
            status,
            body: std::fs::read_to_string(&out).unwrap_or_default(),
        }
    })
    .await
    .unwrap()
}

fn https(pki: &Pki, addr: SocketAddr, path: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut args = vec![
        "--cacert".to_string(),
        pki.path("ca.pem").display().to_string(),
        "--resolve".to_string(),
        format!("localhost:{}:127.0.0.1", addr.port()),
        "-H".to_string(),
        "Content-Type: application/json".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (format!("https://localhost:{}{path}", addr.port()), args)
}

fn cert_args(pki: &Pki, name: &str) -> Vec<String> {
    vec![
        "--cert".into(),
        pki.path(&format!("{name}.pem")).display().to_string(),
        "--key".into(),
        pki.path(&format!("{name}-key.pem")).display().to_string(),
    ]
}

async fn post_events(pki: &Pki, addr: SocketAddr, client: Option<&str>, extra: &[&str]) -> Reply {
    let (url, mut args) = https(pki, addr, "/k8s-audit", extra);
    if let Some(name) = client {
        args.extend(cert_args(pki, name));
    }
    curl(url, args, Some(EVENT_LIST.as_bytes().to_vec())).await
}

#[tokio::test]
async fn tls_with_required_client_certificates() {
    let pki = Pki::new();
    let server = start(ServerConfig {
        tls: Some(pki.tls()),
        ..ServerConfig::default()
    });

    let reply = post_events(&pki, server.addr, Some("client"), &[]).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert_eq!(reply.body, r#"{"accepted":2,"duplicates":0,"skipped":0}"#);
    let seen = server.ingest.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, EVENT_LIST.as_bytes());
    assert_eq!(seen[0].1.identity.as_deref(), Some("kube-apiserver"));
    assert!(seen[0].1.addr.ip().is_loopback());

    // No certificate: the handshake completes (health probes need none) but the webhook answers 401.
    let reply = post_events(&pki, server.addr, None, &[]).await;
    assert_eq!(reply.status, Some(401), "no certificate: {reply:?}");
    let reply = post_events(&pki, server.addr, Some("rogue"), &[]).await;
    assert_eq!(
        reply.status, None,
        "another CA: the handshake fails: {reply:?}"
    );
    assert_eq!(server.ingest.seen().len(), 1);

    server.stop().await;
}

#[tokio::test]
async fn tls_with_client_certificates_or_bearer_tokens() {
    let pki = Pki::new();
    let server = start(ServerConfig {
        tls: Some(pki.tls()),
        identities: vec![kubetrail_server::Identity {
            name: "forwarder".into(),
            role: kubetrail_server::Role::Ingest,
            token: Some("s3cret-token".into()),
            client_cert_cn: None,
        }],
        ..ServerConfig::default()
    });

    let reply = post_events(&pki, server.addr, Some("client"), &[]).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    let reply = post_events(&pki, server.addr, None, &[]).await;
    assert_eq!(reply.status, Some(401), "{reply:?}");
    let reply = post_events(
        &pki,
        server.addr,
        None,
        &["-H", "Authorization: Bearer wrong"],
    )
    .await;
    assert_eq!(reply.status, Some(401), "{reply:?}");
    let token = ["-H", "Authorization: Bearer s3cret-token"];
    let reply = post_events(&pki, server.addr, None, &token).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    // A certificate that does not verify is refused even with a good token.
    let reply = post_events(&pki, server.addr, Some("rogue"), &token).await;
    assert_eq!(reply.status, None, "{reply:?}");

    let identities: Vec<_> = server
        .ingest
        .seen()
        .into_iter()
        .map(|(_, peer)| peer.identity)
        .collect();
    assert_eq!(
        identities,
        [
            Some("kube-apiserver".to_string()),
            Some("forwarder".to_string())
        ]
    );

    // Health is open; metrics need a credential, here the token (any role).
    let (url, args) = https(&pki, server.addr, "/healthz", &[]);
    assert_eq!(curl(url, args, None).await.status, Some(200));
    let (url, args) = https(&pki, server.addr, "/metrics", &token);
    let reply = curl(url, args, None).await;
    assert_eq!(reply.status, Some(200));
    assert!(
        reply
            .body
            .contains("kubetrail_server_rejected_total{reason=\"unauthenticated\"} 2"),
        "{}",
        reply.body
    );

    server.stop().await;
}

#[tokio::test]
async fn plain_http_on_loopback_with_gzip() {
    let server = start(ServerConfig::default());
    let url = format!("http://{}/k8s-audit", server.addr);
    let args = [
        "-H",
        "Content-Type: application/json",
        "-H",
        "Content-Encoding: gzip",
    ]
    .map(String::from)
    .to_vec();
    let reply = curl(url, args, Some(gzip(EVENT_LIST.as_bytes()))).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert_eq!(server.ingest.seen()[0].0, EVENT_LIST.as_bytes());
    assert_eq!(server.ingest.seen()[0].1.identity, None);
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_over_a_socket_is_413() {
    let server = start(ServerConfig {
        max_body_bytes: 64 << 10,
        ..ServerConfig::default()
    });
    let url = format!("http://{}/k8s-audit", server.addr);
    let args = vec![
        "-H".to_string(),
        "Content-Type: application/json".to_string(),
    ];
    let reply = curl(url, args, Some(vec![b' '; 1 << 20])).await;
    assert_eq!(reply.status, Some(413), "{reply:?}");
    assert!(server.ingest.seen().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_requests() {
    #[derive(Debug, Default)]
    struct Slow(FakeIngest);
    impl kubetrail_server::Ingest for Slow {
        async fn ingest(
            &self,
            body: bytes::Bytes,
            peer: kubetrail_server::Peer,
        ) -> Result<kubetrail_server::Accepted, kubetrail_server::Rejected> {
            let answer = self.0.ingest(body, peer);
            tokio::time::sleep(Duration::from_millis(800)).await;
            answer.await
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let slow = Arc::new(Slow::default());
    let task = tokio::spawn(serve_listener(
        listener,
        ServerConfig::default(),
        slow.clone(),
        axum::Router::new(),
        async {
            let _ = stopped.await;
        },
    ));
    let args = vec![
        "-H".to_string(),
        "Content-Type: application/json".to_string(),
    ];
    let request = tokio::spawn(curl(
        format!("http://{addr}/k8s-audit"),
        args,
        Some(EVENT_LIST.as_bytes().to_vec()),
    ));
    // Shut down while the pipeline holds the request.
    tokio::time::timeout(Duration::from_secs(20), async {
        while slow.0.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    let reply = request.await.unwrap();
    assert_eq!(reply.status, Some(200), "{reply:?}");
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn serve_refuses_unsafe_or_broken_configurations() {
    let ingest = Arc::new(FakeIngest::default());
    let never = std::future::pending::<()>;

    let err = serve(
        ServerConfig {
            listen: "0.0.0.0:0".parse().unwrap(),
            ..ServerConfig::default()
        },
        ingest.clone(),
        axum::Router::new(),
        never(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServerError::Unsafe { .. }), "{err}");

    let pki = Pki::new();
    let mut tls = pki.tls();
    tls.cert = pki.path("missing.pem");
    let err = serve(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls),
            ..ServerConfig::default()
        },
        ingest.clone(),
        axum::Router::new(),
        never(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let mut tls = pki.tls();
    tls.key = pki.path("client-key.pem");
    let err = serve(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls),
            ..ServerConfig::default()
        },
        ingest.clone(),
        axum::Router::new(),
        never(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServerError::BadCertKey { .. }), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = serve(
        ServerConfig {
            listen: taken.local_addr().unwrap(),
            ..ServerConfig::default()
        },
        ingest,
        axum::Router::new(),
        never(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServerError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("`--listen`"), "{err}");
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = start(ServerConfig::default());
    // Connections that never send a request (a slow-headers client may hold each for 30 s).
    let mut held = Vec::new();
    for _ in 0..kubetrail_server::PER_ADDRESS {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // One more from the same address is closed at once.
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf))
        .await
        .expect("the connection over the cap was not closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // Another loopback address is this host too: no way around the cap.
    let url = format!("http://{}/healthz", server.addr);
    let reply = curl(
        url.clone(),
        vec!["--interface".into(), "127.0.0.2".into()],
        None,
    )
    .await;
    assert_eq!(reply.status, None, "{reply:?}");
    // Once one closes, the address may open another.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no place was freed: {}",
            String::from_utf8_lossy(&answer)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    server.stop().await;
}
