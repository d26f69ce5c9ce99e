//! `kubetrail gen --post` against a real `kubetrail serve`: every generated event is acknowledged and stored.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubetrail_store::{EventRecord, Wal, WalOptions};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process; killed when dropped, so a failing test leaves nothing running.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 200")
}

fn start(data: &Path, port: u16) -> Server {
    let server = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Server)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ready(port) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("kubetrail serve did not become ready");
}

fn stored(data: &Path) -> usize {
    let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
    let mut n = 0;
    for item in wal.read_from(0).unwrap() {
        let (_, payload) = item.unwrap();
        EventRecord::decode(&payload).unwrap();
        n += 1;
    }
    n
}

#[test]
fn posted_events_are_all_acknowledged_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let server = start(&data, port);

    let post = |extra: &[&str]| -> (serde_json::Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
            .args(["gen", "--count", "2000", "--attacks"])
            .args(["--post", &format!("http://127.0.0.1:{port}/k8s-audit")])
            .args(["--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "gen --post failed: {stderr}");
        (serde_json::from_slice(&out.stdout).unwrap(), stderr)
    };
    let (report, stderr) = post(&[]);
    assert_eq!(report["events_sent"], 2000, "{report}");
    assert_eq!(report["events_acknowledged"], 2000, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["requests"], 5, "{report}"); // batches of 400 by default
    assert_eq!(report["receiver_accepted"], 2000, "{report}");
    let p50 = report["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = report["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
    assert!(stderr.contains("acknowledged 2,000"), "{stderr}");

    // Other traffic, with a short last batch: 13 of 150 and one of 50.
    let (report, _) = post(&["--seed", "2", "--batch", "150", "--connections", "3"]);
    assert_eq!(report["events_acknowledged"], 2000, "{report}");
    assert_eq!(report["requests"], 14, "{report}");
    assert_eq!(report["receiver_duplicates"], 0, "{report}");

    drop(server); // the log is read after the server is gone, as after a crash
    assert_eq!(stored(&data), 4000);

    // Posted events end now by default (2,000 at 100/s: the last 20 s), so a newcomer's console, whose
    // searches default to the last 24 hours, shows them.
    let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let newest = wal
        .read_from(0)
        .unwrap()
        .map(|item| {
            let rec = EventRecord::decode(&item.unwrap().1).unwrap().into_owned();
            let v: serde_json::Value = serde_json::from_str(&rec.event).unwrap();
            let t: jiff::Timestamp = v["requestReceivedTimestamp"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            t.as_second()
        })
        .max()
        .unwrap();
    assert!(
        (now - newest).abs() < 300,
        "newest event {newest}, now {now}"
    );
}

#[test]
fn a_receiver_that_is_not_there_is_an_error_not_a_hang() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["gen", "--count", "10", "--connections", "1"])
        .args(["--post", &format!("http://127.0.0.1:{port}/k8s-audit")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 batches failed"), "{stderr}");
    assert!(stderr.contains("failed to connect"), "{stderr}");
}

#[test]
fn post_options_need_post_and_https_needs_a_ca() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["gen", "--count", "10", "--batch", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args([
            "gen",
            "--count",
            "10",
            "--post",
            "https://127.0.0.1:1/k8s-audit",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cacert"));
}

/// Over mutual TLS with the files `kubetrail setup webhook` writes, as kube-apiserver would post: with the
/// client certificate every batch is acknowledged; without it the receiver refuses them (401).
#[test]
fn posts_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, data) = (dir.path().join("webhook"), dir.path().join("data"));
    let port = free_port();
    let status = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["setup", "webhook", "--out"])
        .arg(&pki)
        .args(["--url", &format!("https://127.0.0.1:{port}/k8s-audit")])
        .args(["--server-name", "127.0.0.1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "setup webhook failed");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_kubetrail"))
            .arg("serve")
            .arg("--config")
            .arg(pki.join("kubetrail.yaml"))
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "kubetrail serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let post = |cert: bool| {
        let mut gen_cmd = Command::new(env!("CARGO_BIN_EXE_kubetrail"));
        gen_cmd
            .args([
                "gen",
                "--count",
                "500",
                "--batch",
                "100",
                "--connections",
                "2",
            ])
            .args(["--post", &format!("https://127.0.0.1:{port}/k8s-audit")])
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .args(["--format", "json"]);
        if cert {
            gen_cmd
                .arg("--cert")
                .arg(pki.join("client.crt"))
                .arg("--key")
                .arg(pki.join("client.key"));
        }
        let out = gen_cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        (out.status.code(), report, stderr)
    };
    let (code, report, stderr) = post(true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["events_acknowledged"], 500, "{report}");
    assert_eq!(report["receiver_accepted"], 500, "{report}");
    assert_eq!(report["requests"], 5, "{report}");
    let (code, report, stderr) = post(false);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["events_acknowledged"], 0, "{report}");
    assert_eq!(report["errors_by_status"]["401"], 5, "{report}");
}
