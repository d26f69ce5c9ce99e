//! The shared HTTP client through proxies (a CONNECT tunnel to a TLS server, absolute-form requests, a proxy
//! that refuses), with a client certificate (mutual TLS), and its kept-alive connection.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::http::Method;
use kubetrail_sinks::Outcome;
use kubetrail_sinks::clickhouse::{ClickHouse, ClickHouseConfig};
use kubetrail_sinks::http::{HttpClient, HttpConfig, Proxy, Request};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A private CA, a server certificate for `localhost` and a client certificate, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: String,
    server_key: String,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["kube-apiserver".into()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

/// An HTTPS server on loopback answering every request with its own request head as the body; with
/// `client_ca`, only to clients presenting a certificate it signed.
async fn tls_echo(pki: &Pki, client_ca: bool) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&pki.ca).unwrap())
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    echo_head(tls).await;
                }
            });
        }
    });
    port
}

/// Reads one request head and answers it as the body, closing the connection.
async fn echo_head<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let Some(head) = read_head(&mut s).await else {
        return;
    };
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        head.len()
    );
    s.write_all(answer.as_bytes()).await.ok();
    s.write_all(head.as_bytes()).await.ok();
    s.shutdown().await.ok();
}

/// A request or answer head, byte by byte so that nothing after it is consumed.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.ok()?);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An HTTP proxy on loopback that records every request head it gets. `CONNECT` opens a tunnel (or is
/// answered `refuse`); any other request is answered as [`echo_head`] does (or with `refuse`).
async fn proxy(refuse: Option<&'static str>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heads = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let heads = heads.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut client).await else {
                    return;
                };
                heads.lock().unwrap().push(head.clone());
                if let Some(answer) = refuse {
                    client.write_all(answer.as_bytes()).await.ok();
                    return;
                }
                match head.strip_prefix("CONNECT ") {
                    Some(rest) => {
                        let to = rest.split(' ').next().unwrap().to_string();
                        let mut upstream = TcpStream::connect(to).await.unwrap();
                        client
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await
                            .unwrap();
                        tokio::io::copy_bidirectional(&mut client, &mut upstream)
                            .await
                            .ok();
                    }
                    None => {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                            head.len()
                        );
                        client.write_all(answer.as_bytes()).await.ok();
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let port = tls_echo(&pki, false).await;
    let (proxy_port, seen) = proxy(None).await;
    let client = HttpClient::new(
        &format!("https://localhost:{port}/base"),
        &HttpConfig {
            extra_ca: Some(pki.ca.clone()),
            proxy: Proxy::Url(format!("http://alice:s3cr%3At@127.0.0.1:{proxy_port}")),
            ..HttpConfig::default()
        },
    )
    .unwrap();
    let shown = format!("http://127.0.0.1:{proxy_port}");
    assert_eq!(client.proxy(), Some(shown.as_str()));
    assert!(!format!("{client:?}").contains("s3cr"));

    let resp = client
        .send(Request::new(Method::GET, "/ping"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    // The target saw the request over TLS, without the proxy's credentials.
    let head = String::from_utf8_lossy(&resp.body).to_lowercase();
    assert!(head.starts_with("get /base/ping http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("host: localhost:{port}\r\n")),
        "{head}"
    );
    assert!(!head.contains("proxy-authorization"), "{head}");
    // The proxy saw one CONNECT to the target, with its credentials: base64("alice:s3cr:t").
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
        "{seen:?}"
    );
    assert!(
        seen[0].contains("Proxy-Authorization: Basic YWxpY2U6czNjcjp0\r\n"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn http_goes_to_the_proxy_in_absolute_form() {
    let (proxy_port, seen) = proxy(None).await;
    // The target's name does not resolve: only the proxy can answer.
    let client = HttpClient::new(
        "http://clickhouse.invalid:8123/base",
        &HttpConfig {
            proxy: Proxy::Url(format!("127.0.0.1:{proxy_port}")),
            ..HttpConfig::default()
        },
    )
    .unwrap();
    let resp = client
        .send(Request::new(Method::POST, "/?query=SELECT%201").body("x", "text/plain"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let head = String::from_utf8_lossy(&resp.body).to_lowercase();
    assert!(
        head.starts_with("post http://clickhouse.invalid:8123/base/?query=select%201 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("host: clickhouse.invalid:8123\r\n"), "{head}");
    assert!(!head.contains("proxy-authorization"), "{head}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_proxy_that_refuses_is_a_retry_naming_it() {
    const REFUSE: &str = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic \
                          realm=\"corp\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (proxy_port, seen) = proxy(Some(REFUSE)).await;
    let shown = format!("http://127.0.0.1:{proxy_port}");
    for url in [
        "https://clickhouse.invalid:8443",
        "http://clickhouse.invalid:8123",
    ] {
        let ch = ClickHouse::new(ClickHouseConfig {
            url: url.into(),
            database: "kubetrail".into(),
            table: "events".into(),
            retention_days: None,
            cluster: None,
            http: HttpConfig {
                proxy: Proxy::Url(format!("http://bob:hunter2@127.0.0.1:{proxy_port}")),
                ..HttpConfig::default()
            },
        })
        .unwrap();
        let events = common::events();
        match ch.send(&events.records("c")).await {
            Outcome::Retry { reason, .. } => {
                assert!(
                    reason.contains(&shown)
                        && reason.contains("407")
                        && !reason.contains("hunter2"),
                    "{url}: {reason}"
                );
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[0].starts_with("CONNECT clickhouse.invalid:8443 "),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with("POST http://clickhouse.invalid:8123/"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_unreachable_proxy_is_named() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let client = HttpClient::new(
        "https://example.com",
        &HttpConfig {
            proxy: Proxy::Url(format!("http://u:hunter2@127.0.0.1:{port}")),
            ..HttpConfig::default()
        },
    )
    .unwrap();
    let e = client
        .send(Request::new(Method::GET, "/"))
        .await
        .unwrap_err();
    assert!(
        e.contains(&format!(
            "failed to connect to the proxy http://127.0.0.1:{port}"
        )) && !e.contains("hunter2"),
        "{e}"
    );
    // An https:// proxy is refused when the client is made.
    let e = HttpClient::new(
        "https://example.com",
        &HttpConfig {
            proxy: Proxy::Url("https://proxy.corp:3128".into()),
            ..HttpConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("HTTPS proxy") && e.contains("the proxy setting"),
        "{e}"
    );
}

#[tokio::test]
async fn client_certificates_for_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let port = tls_echo(&pki, true).await;
    let url = format!("https://localhost:{port}");
    let with_cert = HttpClient::new(
        &url,
        &HttpConfig {
            extra_ca: Some(pki.ca.clone()),
            client_cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
            proxy: Proxy::None,
            ..HttpConfig::default()
        },
    )
    .unwrap();
    let resp = with_cert
        .send(Request::new(Method::GET, "/whoami"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);

    let without = HttpClient::new(
        &url,
        &HttpConfig {
            extra_ca: Some(pki.ca.clone()),
            proxy: Proxy::None,
            ..HttpConfig::default()
        },
    )
    .unwrap();
    let e = without
        .send(Request::new(Method::GET, "/whoami"))
        .await
        .unwrap_err();
    assert!(e.contains("CertificateRequired"), "{e}");

    // Files that are not a certificate and its key: an error naming them when the client is made.
    let e = HttpClient::new(
        &url,
        &HttpConfig {
            client_cert: Some((pki.client_cert.clone(), dir.path().join("missing.key"))),
            ..HttpConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing.key"), "{e}");
    let e = HttpClient::new(
        &url,
        &HttpConfig {
            client_cert: Some((pki.client_key.clone(), pki.client_key.clone())),
            ..HttpConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("client certificate") && e.contains("client.key"),
        "{e}"
    );
}

/// A keep-alive HTTP/1.1 server on loopback answering `ok` to everything; counts its connections.
async fn keep_alive_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if s.read_exact(&mut body).await.is_err()
                        || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, connections)
}

#[tokio::test]
async fn one_kept_alive_connection_per_client() {
    let (port, connections) = keep_alive_server().await;
    let url = format!("http://127.0.0.1:{port}");
    let cfg = HttpConfig {
        proxy: Proxy::None,
        ..HttpConfig::default()
    };
    let client = HttpClient::new(&url, &cfg).unwrap();
    for _ in 0..20 {
        let resp = client
            .send(Request::new(Method::POST, "/").body("{}", "application/json"))
            .await
            .unwrap();
        assert_eq!(&resp.body[..], b"ok");
    }
    client.ready().await.unwrap();
    client.send(Request::new(Method::GET, "/")).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // A clone has a connection of its own.
    let other = client.clone();
    other.send(Request::new(Method::GET, "/")).await.unwrap();
    client.send(Request::new(Method::GET, "/")).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    // A connection idle for longer than `reuse_idle` is not reused.
    let eager = HttpClient::new(
        &url,
        &HttpConfig {
            reuse_idle: Duration::ZERO,
            ..cfg.clone()
        },
    )
    .unwrap();
    for _ in 0..3 {
        eager.send(Request::new(Method::GET, "/")).await.unwrap();
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}
