//! The shared HTTP client over TLS: a server with a certificate of a private CA is trusted only through the
//! extra CA file, and Basic credentials and custom headers arrive as configured.

use std::sync::Arc;

use hyper::http::Method;
use kubetrail_sinks::Secret;
use kubetrail_sinks::http::{Auth, HttpClient, HttpConfig, Request};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTPS server on loopback answering every request with its own request head as the body.
async fn echo_server(dir: &std::path::Path) -> u16 {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    head.len()
                );
                tls.write_all(answer.as_bytes()).await.ok();
                tls.write_all(&head).await.ok();
                tls.shutdown().await.ok();
            });
        }
    });
    port
}

#[tokio::test]
async fn private_ca_is_trusted_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_server(dir.path()).await;
    let url = format!("https://localhost:{port}/base");

    let trusting = HttpClient::new(
        &url,
        &HttpConfig {
            extra_ca: Some(dir.path().join("ca.pem")),
            auth: Auth::Basic {
                user: "kubetrail".into(),
                password: Secret::new("pa:ss"),
            },
            headers: vec![("X-Api-Key".into(), Secret::new("k1"))],
            ..HttpConfig::default()
        },
    )
    .unwrap();
    let resp = trusting
        .send(Request::new(Method::GET, "/ping?x=1"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let head = String::from_utf8_lossy(&resp.body).to_lowercase();
    assert!(
        head.starts_with("get /base/ping?x=1 http/1.1\r\n"),
        "{head}"
    );
    // base64("kubetrail:pa:ss")
    assert!(
        head.contains("authorization: basic a3vizxryywlsonbhonnz\r\n"),
        "{head}"
    );
    assert!(head.contains("x-api-key: k1\r\n"), "{head}");
    assert!(
        head.contains(&format!("host: localhost:{port}\r\n")),
        "{head}"
    );

    // Without the CA file the certificate is unknown: verification is never skipped.
    let strict = HttpClient::new(&url, &HttpConfig::default()).unwrap();
    let e = strict
        .send(Request::new(Method::GET, "/ping"))
        .await
        .unwrap_err();
    assert!(
        e.contains("TLS handshake failed") && e.contains("UnknownIssuer"),
        "{e}"
    );
}
