//! Rotation without a restart, end to end on the real `kubetrail serve` under TLS: a token file rewritten
//! (the old token refused, the new one let in, the console session opened with the old one ended), a token
//! file broken mid-rotation (its identity keeps no token: revocation fails closed), a certificate renewed in
//! place (new handshakes present it, the expiry gauge follows), a key that does not match and a FIFO in the
//! key's place (the certificate in force kept, the reloads go on), a token file removed (its token refused),
//! and a certificate two weeks from its end raising `kt-tls-certificate-expiring`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{ServeOverTls, free_port, https as call, write_cert};

const OLD: &str = "reload-reader-old-0123456789abcdef0123456789";
const NEW: &str = "reload-reader-new-fedcba9876543210fedcba9876";

/// Writes `token` to `path`, owner-only, as an operator (or a Secret volume) replaces it: a new file moved
/// over the old.
fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The certificate's end of validity (Unix seconds), as openssl reads it.
fn not_after(cert_pem: &[u8]) -> i64 {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(cert_pem).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // notAfter=2026-12-12 11:05:03Z
    let when = text
        .trim()
        .trim_start_matches("notAfter=")
        .replace(' ', "T");
    when.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// The certificate a new handshake on `port` is presented, as PEM (trimmed).
fn presented(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    text[begin..end].to_string()
}

/// A PEM file's text, trimmed.
fn pem(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// Whether a call was refused for its credential: 401, or 429 once the address sent many wrong tokens (the
/// polls below do).
fn refused(status: u16) -> bool {
    matches!(status, 401 | 429)
}

/// Waits (at most 20 s) until `done`.
fn within(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/metrics`' expiry gauge.
fn expiry_gauge(port: u16, token: &str) -> Option<i64> {
    let (_, body) = call(port, "/metrics", Some(token), None);
    body.lines()
        .find_map(|l| l.strip_prefix("kubetrail_tls_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn tokens_and_certificates_rotate_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let (cert, key, token) = (
        dir.join("tls.crt"),
        dir.join("tls.key"),
        dir.join("reader.token"),
    );
    // A certificate a week from its end: the alert is due at once.
    write_cert(&cert, &key, 7);
    write_token(&token, OLD);
    let config = dir.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ntls: {{cert: {}, key: {}}}\nauth:\n  identities:\n    \
             - {{name: soc-analyst, token_file: {}, role: reader}}\n",
            dir.join("data").display(),
            cert.display(),
            key.display(),
            token.display()
        ),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let mut server = ServeOverTls::start(&config, &log, port);

    // The certificate in force, its expiry in /metrics, and the alert that it ends within two weeks.
    let first = pem(&cert);
    assert_eq!(presented(port), first);
    assert_eq!(expiry_gauge(port, OLD), Some(not_after(first.as_bytes())));
    within("kt-tls-certificate-expiring raised", || {
        call(port, "/api/v1/alerts", Some(OLD), None)
            .1
            .contains("kt-tls-certificate-expiring")
    });

    // A console session opened with the old token.
    let login = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-D", "-", "--data-urlencode"])
        .arg(format!("token={OLD}"))
        .arg(format!("https://127.0.0.1:{port}/login"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&login.stdout).into_owned();
    let cookie = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {headers}"))
        .to_string();
    assert_eq!(call(port, "/api/v1/session", None, Some(&cookie)).0, 200);

    // The token rotated: the old one refused, the new one let in, the old one's session ended.
    write_token(&token, NEW);
    within("the new token let in", || {
        call(port, "/api/v1/alerts", Some(NEW), None).0 == 200
    });
    assert!(refused(call(port, "/api/v1/alerts", Some(OLD), None).0));
    assert!(refused(
        call(port, "/api/v1/session", None, Some(&cookie)).0
    ));

    // A token file broken mid-rotation (too short): reported, and its identity keeps no token (failing
    // closed) until a good one is written.
    write_token(&token, "short");
    within("the broken token file reported", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("holds a token of 5 characters")
    });
    within("the identity without a token", || {
        refused(call(port, "/api/v1/alerts", Some(NEW), None).0)
    });
    write_token(&token, NEW);
    within("the token back", || {
        call(port, "/api/v1/alerts", Some(NEW), None).0 == 200
    });

    // The certificate renewed in place: new handshakes present the new one, the gauge follows.
    write_cert(&cert, &key, 365);
    let renewed = pem(&cert);
    within("the renewed certificate presented", || {
        presented(port) == renewed
    });
    assert_eq!(expiry_gauge(port, NEW), Some(not_after(renewed.as_bytes())));

    // A key that does not match its certificate: refused, the certificate in force kept.
    let (other_cert, other_key) = (dir.join("other.crt"), dir.join("other.key"));
    write_cert(&other_cert, &other_key, 30);
    std::fs::copy(&other_key, &key).unwrap();
    within("the mismatched key reported", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("keeping the TLS certificate in force")
    });
    assert_eq!(presented(port), renewed);
    assert_eq!(call(port, "/api/v1/alerts", Some(NEW), None).0, 200);

    // A FIFO in the key's place: reported, never waited on; the rotations go on.
    std::fs::remove_file(&key).unwrap();
    let made = Command::new("mkfifo").arg(&key).status().unwrap();
    assert!(made.success());
    within("the FIFO reported", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot be read: not a regular file")
    });
    write_token(&token, OLD);
    within("a rotation after the FIFO", || {
        call(port, "/api/v1/alerts", Some(OLD), None).0 == 200
    });
    assert!(refused(call(port, "/api/v1/alerts", Some(NEW), None).0));

    // Revoking by removing the token file fails closed: the token stops working.
    std::fs::remove_file(&token).unwrap();
    within("the removed token refused", || {
        refused(call(port, "/api/v1/alerts", Some(OLD), None).0)
    });
    server.stop();
}
