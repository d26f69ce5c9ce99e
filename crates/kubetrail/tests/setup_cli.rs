//! `kubetrail setup webhook` as a user runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command as Process;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

const FILES: [&str; 9] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
    "webhook-kubeconfig.yaml",
    "kubetrail.yaml",
    "audit-policy.yaml",
];
const PRIVATE: [&str; 4] = [
    "ca.key",
    "server.key",
    "client.key",
    "webhook-kubeconfig.yaml",
];

fn setup(dir: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("kubetrail")
        .unwrap()
        .args(["setup", "webhook", "--out"])
        .arg(dir)
        .args(extra)
        .assert()
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Standard base64 (the kubeconfig's `*-data` fields).
fn unbase64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

/// `openssl ARGS` output, or `None` (with a note) when the openssl CLI is not installed.
fn openssl(args: &[&str], dir: &Path) -> Option<std::process::Output> {
    match Process::new("openssl").args(args).current_dir(dir).output() {
        Ok(out) => Some(out),
        Err(_) => {
            println!(
                "note: openssl not found, skipping `openssl {}`",
                args.join(" ")
            );
            None
        }
    }
}

#[test]
fn writes_files_that_fit_together() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("webhook");
    let url = "https://kubetrail.example.com:9443/k8s-audit";
    let out = setup(
        &dir,
        &[
            "--server-name",
            "kubetrail.example.com",
            "--server-name",
            "10.0.0.5",
            "--url",
            url,
            "--days",
            "30",
            "--cluster",
            "prod-eu",
        ],
    )
    .success()
    .stdout(
        predicate::str::contains("--audit-webhook-config-file=")
            .and(predicate::str::contains("--audit-policy-file="))
            .and(predicate::str::contains("--audit-webhook-mode=batch"))
            .and(predicate::str::contains("--audit-webhook-batch-max-size="))
            .and(predicate::str::contains("--audit-webhook-initial-backoff="))
            .and(predicate::str::contains(
                "/etc/kubernetes/manifests/kube-apiserver.yaml",
            ))
            .and(predicate::str::contains("hostPath:"))
            .and(predicate::str::contains("kubetrail serve --config"))
            .and(predicate::str::contains("EKS"))
            .and(predicate::str::contains("GKE"))
            .and(predicate::str::contains("AKS"))
            .and(predicate::str::contains("kube-audit-admin")),
    );
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let dir = dir.canonicalize().unwrap();
    assert!(stdout.contains(&format!(
        "kubetrail serve --config {}/kubetrail.yaml",
        dir.display()
    )));

    for name in FILES {
        let meta = std::fs::metadata(dir.join(name)).unwrap_or_else(|_| panic!("{name} missing"));
        let mode = meta.permissions().mode() & 0o777;
        if PRIVATE.contains(&name) {
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
        } else {
            assert_eq!(mode & 0o077 & !0o044, 0, "{name} is {mode:o}");
        }
    }
    for name in ["ca.key", "server.key", "client.key"] {
        assert!(
            read(&dir, name).starts_with("-----BEGIN PRIVATE KEY-----"),
            "{name}"
        );
    }

    let kubeconfig = yaml(&dir.join("webhook-kubeconfig.yaml"));
    assert_eq!(kubeconfig["kind"], "Config");
    let cluster = &kubeconfig["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], url);
    let ca = unbase64(cluster["certificate-authority-data"].as_str().unwrap());
    assert_eq!(String::from_utf8(ca).unwrap(), read(&dir, "ca.crt"));
    let user = &kubeconfig["users"][0]["user"];
    let cert = unbase64(user["client-certificate-data"].as_str().unwrap());
    assert_eq!(String::from_utf8(cert).unwrap(), read(&dir, "client.crt"));
    let key = unbase64(user["client-key-data"].as_str().unwrap());
    assert_eq!(String::from_utf8(key).unwrap(), read(&dir, "client.key"));
    let current = kubeconfig["current-context"].as_str().unwrap();
    let context = kubeconfig["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == current)
        .expect("current context exists");
    assert_eq!(
        context["context"]["cluster"],
        kubeconfig["clusters"][0]["name"]
    );
    assert_eq!(context["context"]["user"], kubeconfig["users"][0]["name"]);

    let config = yaml(&dir.join("kubetrail.yaml"));
    assert_eq!(config["listen"], "0.0.0.0:9443");
    assert_eq!(config["data"], "/var/lib/kubetrail");
    assert_eq!(config["cluster"], "prod-eu");
    for (key, file) in [
        ("cert", "server.crt"),
        ("key", "server.key"),
        ("client_ca", "ca.crt"),
    ] {
        assert_eq!(config["tls"][key], dir.join(file).display().to_string());
    }
    let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["auth", "cluster", "data", "listen", "tls"],
        "only keys the config loader knows"
    );
    // Only the apiserver's certificate, and only to send events.
    assert_eq!(
        config["auth"]["identities"],
        serde_json::json!([{"name": "apiserver", "client_cert_cn": "kube-apiserver-audit", "role": "ingest"}])
    );

    let loaded = kubetrail_policy::load(&read(&dir, "audit-policy.yaml"));
    assert!(loaded.policy.is_some(), "{:?}", loaded.diagnostics);

    let Some(verify) = openssl(
        &["verify", "-CAfile", "ca.crt", "server.crt", "client.crt"],
        &dir,
    ) else {
        return;
    };
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let Some(text) = openssl(&["x509", "-in", "server.crt", "-noout", "-text"], &dir) else {
        return;
    };
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("DNS:kubetrail.example.com"), "{text}");
    assert!(text.contains("IP Address:10.0.0.5"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let Some(text) = openssl(&["x509", "-in", "client.crt", "-noout", "-text"], &dir) else {
        return;
    };
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CN = kube-apiserver-audit") || text.contains("CN=kube-apiserver-audit"));
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    // Keys match their certificates.
    for (cert, key) in [
        ("server.crt", "server.key"),
        ("client.crt", "client.key"),
        ("ca.crt", "ca.key"),
    ] {
        let a = openssl(&["x509", "-in", cert, "-noout", "-pubkey"], &dir).unwrap();
        let b = openssl(&["pkey", "-in", key, "-pubout"], &dir).unwrap();
        assert_eq!(a.stdout, b.stdout, "{cert} and {key}");
    }
}

#[test]
fn refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, &[]).success();
    let before = read(dir, "ca.key");
    setup(dir, &[])
        .failure()
        .code(2)
        .stderr(predicate::str::contains("ca.crt").and(predicate::str::contains("--force")));
    assert_eq!(read(dir, "ca.key"), before, "nothing rewritten");

    // A single leftover file is named too.
    for name in FILES.iter().filter(|&&n| n != "client.key") {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    setup(dir, &[]).failure().stderr(
        predicate::str::contains("client.key").and(predicate::str::contains("already exists")),
    );

    setup(dir, &["--force"]).success();
    assert_ne!(read(dir, "ca.key"), before, "--force writes a new CA");
    let mode = std::fs::metadata(dir.join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn default_names_cover_local_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, &[]).success();
    let config = yaml(&dir.join("kubetrail.yaml"));
    assert_eq!(config["listen"], "0.0.0.0:8443");
    let server = yaml(&dir.join("webhook-kubeconfig.yaml"))["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        server.starts_with("https://") && server.ends_with(":8443/k8s-audit"),
        "{server}"
    );
    let Some(text) = openssl(&["x509", "-in", "server.crt", "-noout", "-text"], dir) else {
        return;
    };
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
}

#[test]
fn url_host_must_be_a_server_name() {
    let tmp = tempfile::tempdir().unwrap();
    setup(
        tmp.path(),
        &[
            "--server-name",
            "a.example.com",
            "--url",
            "https://b.example.com:8443/k8s-audit",
        ],
    )
    .failure()
    .code(2)
    .stderr(
        predicate::str::contains("`b.example.com`").and(predicate::str::contains("--server-name")),
    );
    setup(tmp.path(), &["--url", "http://b.example.com/k8s-audit"])
        .failure()
        .stderr(predicate::str::contains("https://"));
    assert!(
        !tmp.path().join("ca.crt").exists(),
        "nothing written on a usage error"
    );
}
