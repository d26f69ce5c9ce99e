//! Real services the end-to-end tests start on loopback (Debian's clickhouse-server, ZooKeeper and Alertmanager,
//! moto's S3), their clients (the test bucket, Alertmanager's alerts, `sinks status`), and what they share: a
//! guard that kills a child when the test ends, polling until a condition holds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BIN, free_port};

/// A child process killed when the test ends, passed or failed (a failed assertion leaves no server behind).
pub struct Guard(pub Child);

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn need(binary: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .chain([PathBuf::from("/usr/sbin")])
                .map(|p| p.join(binary))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("`{binary}` is missing: install {package} (scripts/test does)"))
}

/// Polls `f` every 50 ms until it holds; panics with `what` after `secs`.
pub fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Debian's clickhouse-server on 127.0.0.1:`port` over `dir` (restartable on the same data).
pub fn clickhouse(dir: &Path, port: u16) -> Guard {
    clickhouse_with(dir, port, free_port(), None)
}

/// [`clickhouse`] with its native protocol on `tcp_port` and, with `extra`, more configuration (the XML
/// inside `<yandex>`: a cluster's `remote_servers`, `zookeeper`), in a copy of Debian's config whose
/// `config.d` holds it.
pub fn clickhouse_with(dir: &Path, port: u16, tcp_port: u16, extra: Option<&str>) -> Guard {
    let bin = need("clickhouse-server", "clickhouse-server");
    for sub in ["data", "tmp", "uf", "fs"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let mut config = PathBuf::from("/etc/clickhouse-server/config.xml");
    if let Some(extra) = extra {
        let etc = dir.join("etc");
        std::fs::create_dir_all(etc.join("config.d")).unwrap();
        for f in ["config.xml", "users.xml"] {
            std::fs::copy(Path::new("/etc/clickhouse-server").join(f), etc.join(f)).unwrap();
        }
        std::fs::write(
            etc.join("config.d/test.xml"),
            format!("<?xml version=\"1.0\"?>\n<yandex>\n{extra}\n</yandex>\n"),
        )
        .unwrap();
        config = etc.join("config.xml");
    }
    let ok = Command::new("chown")
        .args(["-R", "clickhouse:clickhouse"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "chown for ClickHouse failed (run as root)");
    let p = |s: &str| dir.join(s).display().to_string();
    // A port another test's server took between `free_port` and the bind makes it exit at once: then it is
    // started again (a fresh interserver port), and its error log is shown if it never answers.
    for attempt in 1..=3 {
        let mut child = Command::new("setpriv")
            .args(["--reuid=clickhouse", "--regid=clickhouse", "--init-groups"])
            .arg(&bin)
            .args([
                format!("--config-file={}", config.display()),
                "--".into(),
                format!("--path={}/", p("data")),
                format!("--tmp_path={}/", p("tmp")),
                format!("--user_files_path={}/", p("uf")),
                format!("--format_schema_path={}/", p("fs")),
                format!("--logger.log={}", p("s.log")),
                format!("--logger.errorlog={}", p("e.log")),
                "--logger.console=0".into(),
                "--listen_host=127.0.0.1".into(),
                format!("--http_port={port}"),
                format!("--tcp_port={tcp_port}"),
                format!("--interserver_http_port={}", free_port()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if ch(port, "SELECT 1").is_some_and(|b| b.trim() == "1") {
                return Guard(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!(
                    "clickhouse-server exited ({status}) on start {attempt} of 3: {}",
                    log_tail(&dir.join("e.log"))
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "not within 90 s: clickhouse-server answers /ping on {port}: {}",
                    log_tail(&dir.join("e.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("clickhouse-server did not start in 3 tries on {port}");
}

/// The last lines of a server's log, for a failure message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Debian's ZooKeeper (what `ON CLUSTER` DDL of a ClickHouse cluster goes through) on a free loopback port
/// over `dir`, once it answers `ruok`.
pub fn zookeeper(dir: &Path) -> (Guard, u16) {
    let server = Path::new("/usr/share/zookeeper/bin/zkServer.sh");
    assert!(
        server.is_file(),
        "`{}` is missing: install zookeeper (scripts/test does)",
        server.display()
    );
    let data = dir.join("zookeeper");
    std::fs::create_dir_all(&data).unwrap();
    // A free port can be taken by another test's server before ZooKeeper binds it: then it exits, and
    // another port is tried.
    for _ in 0..3 {
        let port = free_port();
        let cfg = data.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok\n",
                data.display()
            ),
        )
        .unwrap();
        let child = Command::new(server)
            .arg("start-foreground")
            .arg(&cfg)
            .env("ZOOCFGDIR", &data)
            .env("ZOO_LOG_DIR", &data)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(data.join("out.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            use std::io::{Read, Write};
            if child.try_wait().is_ok_and(|s| s.is_some()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not answer ruok within 60 s: {}",
                std::fs::read_to_string(data.join("out.log")).unwrap_or_default()
            );
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                // Whatever else holds the port must not hold the test.
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let mut answer = String::new();
                if s.write_all(b"ruok").is_ok()
                    && s.read_to_string(&mut answer).is_ok()
                    && answer == "imok"
                {
                    return (child, port);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!(
        "ZooKeeper exited three times: {}",
        std::fs::read_to_string(data.join("out.log")).unwrap_or_default()
    );
}

/// A ClickHouse query over HTTP: the body, or `None` when it did not answer 200.
pub fn ch(port: u16, sql: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-f", "--data-binary", sql])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn count(port: u16, sql: &str) -> Option<u64> {
    ch(port, sql).and_then(|s| s.trim().parse().ok())
}

/// The keys under `prefix` in the test bucket (ListObjectsV2 through curl, unsigned: moto allows it).
pub fn list_keys(s3_port: u16, prefix: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-sS"])
        .arg(format!(
            "http://127.0.0.1:{s3_port}/audit-archive?list-type=2&prefix={prefix}"
        ))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("<ListBucketResult"),
        "not a bucket listing: {listing}"
    );
    listing
        .split("<Key>")
        .skip(1)
        .map(|s| s.split("</Key>").next().unwrap().to_string())
        .collect()
}

/// `moto_server` on 127.0.0.1 (S3 with versioning and Object Lock enforced).
pub fn moto(dir: &Path) -> (Guard, u16) {
    let bin = need("moto_server", "pip install 'moto[server]'");
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("moto.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("moto.err")).unwrap())
        .spawn()
        .unwrap();
    let child = Guard(child);
    until(60, "moto_server answers", || {
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null"])
            .arg(format!("http://127.0.0.1:{port}/moto-api/"))
            .status()
            .is_ok_and(|s| s.success())
    });
    (child, port)
}

/// The test bucket `audit-archive` on the moto server at `s3_port`, created with Object Lock: a client on it
/// (the test's credentials) and a runtime to drive the client's calls.
pub fn archive_bucket(s3_port: u16) -> (kubetrail_sinks::s3::S3, tokio::runtime::Runtime) {
    use kubetrail_sinks::s3::{Credentials, S3, S3Config};
    let s3 = S3::new(S3Config {
        endpoint: Some(format!("http://127.0.0.1:{s3_port}")),
        region: "us-east-1".into(),
        bucket: "audit-archive".into(),
        path_style: None,
        credentials: Some(Credentials::new("AKIDEXAMPLE", "secret-example")),
        http: Default::default(),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(s3.create_bucket(true)).unwrap();
    (s3, rt)
}

/// `kubetrail sinks status --format json` of the data directory: one value per sink.
pub fn sinks_status(data: &Path) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["sinks", "status", "--format", "json", "--data"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Debian's Prometheus Alertmanager on loopback, routing to nobody, ready; its port.
pub fn alertmanager(dir: &Path) -> (Guard, u16) {
    let (port, cluster_port) = (free_port(), free_port());
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
    )
    .unwrap();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--cluster.listen-address=127.0.0.1:{cluster_port}"))
        .arg(format!("--storage.path={}", dir.join("am").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("am.log")).unwrap())
        .spawn()
        .expect("prometheus-alertmanager is installed (scripts/test installs it)");
    let child = Guard(child);
    until(30, "Alertmanager is ready", || {
        Command::new("curl")
            .args(["-sf", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{port}/-/ready"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    (child, port)
}

/// Alertmanager's alerts (API v2).
pub fn alertmanager_alerts(port: u16) -> Vec<Value> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}
