//! `check_config`: what the listener refuses to start with, and what it tells the operator to add.

use kubetrail_server::{ServerConfig, TlsFiles, check_config};

fn cfg(listen: &str) -> ServerConfig {
    ServerConfig {
        listen: listen.parse().unwrap(),
        ..ServerConfig::default()
    }
}

fn tls(client_ca: bool) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: "server.pem".into(),
        key: "server-key.pem".into(),
        client_ca: client_ca.then(|| "ca.pem".into()),
    })
}

#[track_caller]
fn refused(cfg: ServerConfig, expect: &[&str]) {
    let message = check_config(&cfg).unwrap_err().to_string();
    for e in expect {
        assert!(message.contains(e), "`{e}` missing from: {message}");
    }
}

#[test]
fn default_is_loopback_plain_http() {
    let cfg = ServerConfig::default();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:9443");
    assert_eq!(cfg.max_body_bytes, 64 << 20);
    assert_eq!(cfg.max_decompressed_bytes, 64 << 20);
    check_config(&cfg).unwrap();
    check_config(&self::cfg("[::1]:9443")).unwrap();
}

#[test]
fn all_interfaces_without_tls_is_refused() {
    refused(
        cfg("0.0.0.0:9443"),
        &[
            "`0.0.0.0:9443`",
            "`tls.cert`",
            "`tls.key`",
            "`tls.client_ca`",
            "`auth.identities`",
            "`--insecure`",
        ],
    );
}

#[test]
fn tls_without_authentication_is_refused() {
    let c = ServerConfig {
        tls: tls(false),
        ..cfg("10.1.2.3:9443")
    };
    refused(
        c,
        &[
            "authentication",
            "`tls.client_ca`",
            "`auth.identities`",
            "`--insecure`",
        ],
    );
}

#[test]
fn tokens_without_tls_are_refused() {
    let c = ServerConfig {
        identities: vec![token("secret")],
        ..cfg("0.0.0.0:9443")
    };
    refused(c, &["without TLS", "`tls.cert`", "`--insecure`"]);
}

#[test]
fn empty_tokens_are_not_authentication() {
    let c = ServerConfig {
        tls: tls(false),
        identities: vec![token("")],
        ..cfg("0.0.0.0:9443")
    };
    refused(c, &["authentication"]);
}

#[test]
fn safe_configurations_pass() {
    for c in [
        ServerConfig {
            tls: tls(true),
            ..cfg("0.0.0.0:9443")
        },
        ServerConfig {
            tls: tls(false),
            identities: vec![token("t")],
            ..cfg("[::]:9443")
        },
        ServerConfig {
            insecure: true,
            ..cfg("0.0.0.0:9443")
        },
    ] {
        check_config(&c).unwrap();
    }
}

#[test]
fn zero_limits_are_refused() {
    refused(
        ServerConfig {
            max_body_bytes: 0,
            ..ServerConfig::default()
        },
        &["max_body_bytes"],
    );
}

fn token(t: &str) -> kubetrail_server::Identity {
    kubetrail_server::Identity {
        name: "admin".into(),
        role: kubetrail_server::Role::Admin,
        token: Some(t.into()),
        client_cert_cn: None,
    }
}
