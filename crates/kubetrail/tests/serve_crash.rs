//! kill -9 of `kubetrail serve` while batches are posted from several connections: after a restart every
//! acknowledged event is stored, and none twice (retries of batches that were stored but not acknowledged
//! are recognised as duplicates).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubetrail_gen::{Config, Generator};
use kubetrail_store::{EventRecord, Wal, WalOptions};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process; killed (SIGKILL) when dropped, so a failing test leaves nothing running.
struct Server(Child);

impl Server {
    fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Server)
        .unwrap();
    // Ready when /readyz answers 200.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(200) = request(port, "GET", "/readyz", b"") {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("kubetrail serve did not become ready");
}

/// A minimal HTTP/1.1 client: the status code, or an error if the connection broke.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let head = String::from_utf8_lossy(&resp[..resp.len().min(20)]).to_string();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response `{head}`")))
}

/// Batches of `n` events as the apiserver's webhook sends them: an EventList whose items have no kind.
fn batches(count: usize, n: usize) -> Vec<(Vec<String>, Vec<u8>)> {
    let mut g = Generator::new(Config {
        seed: 11,
        attacks: true,
        ..Config::default()
    });
    (0..count)
        .map(|_| {
            let events: Vec<String> = (&mut g).take(n).collect();
            let ids = events
                .iter()
                .map(|e| {
                    let v: serde_json::Value = serde_json::from_str(e).unwrap();
                    format!("{}/{}", v["auditID"].as_str().unwrap(), v["stage"].as_str().unwrap())
                })
                .collect();
            let items: Vec<String> = events
                .iter()
                .map(|e| e.replacen(r#""kind":"Event","apiVersion":"audit.k8s.io/v1","#, "", 1))
                .collect();
            let body = format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#, items.join(","));
            (ids, body.into_bytes())
        })
        .collect()
}

fn stored(data: &Path) -> HashMap<String, usize> {
    let (wal, _) = Wal::open(&data.join("wal"), WalOptions::default()).unwrap();
    let mut seen = HashMap::new();
    for item in wal.read_from(0).unwrap() {
        let (_, payload) = item.unwrap();
        let r = EventRecord::decode(&payload).unwrap();
        *seen
            .entry(format!("{}/{}", r.audit_id, r.stage))
            .or_insert(0) += 1;
    }
    seen
}

#[test]
fn kill_9_loses_no_acknowledged_event_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let child = start(&data, port);

    let all = Arc::new(batches(240, 100));
    let acked = Arc::new(Mutex::new(HashSet::<usize>::new()));
    let next = Arc::new(Mutex::new(0usize));
    let posters: Vec<_> = (0..6)
        .map(|_| {
            let (all, acked, next) = (all.clone(), acked.clone(), next.clone());
            std::thread::spawn(move || {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    if i >= all.len() {
                        return;
                    }
                    match request(port, "POST", "/k8s-audit", &all[i].1) {
                        Ok(200) => {
                            acked.lock().unwrap().insert(i);
                        }
                        Ok(code) => panic!("batch {i}: unexpected status {code}"),
                        Err(_) => return, // the server died under us
                    }
                }
            })
        })
        .collect();
    // Kill it mid-stream, once a good part has been acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill_9();
    for p in posters {
        p.join().unwrap();
    }
    let acked_before = acked.lock().unwrap().clone();
    assert!(
        acked_before.len() >= 60,
        "only {} batches acknowledged",
        acked_before.len()
    );
    assert!(
        acked_before.len() < all.len(),
        "the kill came after everything was posted: not a crash test"
    );

    // Every acknowledged event survived the crash.
    let after_crash = stored(&data);
    for i in &acked_before {
        for id in &all[*i].0 {
            assert!(
                after_crash.contains_key(id),
                "acknowledged event {id} of batch {i} lost"
            );
        }
    }

    // Restart; the apiserver retries everything it has no 200 for (and some it has): nothing stored twice.
    let child = start(&data, port);
    for (i, (_, body)) in all.iter().enumerate() {
        let code = request(port, "POST", "/k8s-audit", body).unwrap();
        assert_eq!(code, 200, "batch {i} after restart");
    }
    child.kill_9();
    let final_ = stored(&data);
    let expected: HashSet<&String> = all.iter().flat_map(|(ids, _)| ids).collect();
    assert_eq!(final_.len(), expected.len(), "every event stored");
    let twice: Vec<_> = final_.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "stored more than once: {:?}",
        &twice[..twice.len().min(5)]
    );
}
