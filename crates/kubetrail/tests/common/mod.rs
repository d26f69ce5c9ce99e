//! Helpers the `serve` end-to-end tests share: free ports, `curl`, starting `kubetrail serve` and waiting
//! until it is ready. Each test binary uses some of them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `curl` on loopback: the HTTP status (0 when there was no answer); `body` is POSTed as JSON.
pub fn curl(port: u16, path: &str, body: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "30",
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Starts `kubetrail serve --config CONFIG ARGS...` (stderr to `log`) and waits until `/readyz` answers 200
/// on `port`, at most 30 s; panics with the log if it exits first or never gets ready.
pub fn serve(config: &Path, args: &[&str], log: &Path, port: u16) -> Child {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(port, "/readyz", None) != 200 {
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kubetrail serve exited with {status}:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "serve did not become ready:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// A config for `serve` on `port` storing in `data`, detecting with the rules under `rules` only.
pub fn config(dir: &Path, port: u16, rules: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("kubetrail.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:{port}\ndata: {}\ndetection:\n  builtin: false\n  rules: [{}]\n{extra}",
            dir.join("data").display(),
            rules.display()
        ),
    )
    .unwrap();
    path
}

/// The rules and fixtures the detection tests use.
pub fn test_rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}
