//! `kubetrail config check` and `kubetrail serve`'s refusal of unsafe or broken configurations, as a user
//! meets them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");

fn kubetrail() -> Command {
    let mut c = Command::cargo_bin("kubetrail").unwrap();
    // A command expected to refuse must not hang the suite if it starts serving instead.
    c.timeout(Duration::from_secs(60));
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (exit code, stdout + stderr).
fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The files `setup webhook` writes for a listener on `port`.
fn setup(dir: &Path, port: u16) -> PathBuf {
    kubetrail()
        .args(["setup", "webhook", "--out"])
        .arg(dir)
        .args([
            "--url",
            &format!("https://127.0.0.1:{port}/k8s-audit"),
            "--server-name",
            "127.0.0.1",
        ])
        .assert()
        .success();
    dir.join("kubetrail.yaml")
}

fn check(config: &Path) -> (Option<i32>, String) {
    run(kubetrail().args(["config", "check"]).arg(config))
}

#[test]
fn the_config_setup_writes_checks_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(&tmp.path().join("webhook"), free_port());
    let (code, text) = check(&config);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok"), "{text}");
}

#[test]
fn an_unknown_key_is_named_by_check_and_by_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(&tmp.path().join("webhook"), free_port());
    let typo = tmp.path().join("typo.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\nlisten: "));
    std::fs::write(&typo, text.replace("\nlisten: ", "\nlistne: ")).unwrap();

    let (code, text) = check(&typo);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("listne"), "the key is named:\n{text}");

    let (code, text) = run(kubetrail()
        .args(["serve", "--data"])
        .arg(tmp.path().join("data"))
        .arg("--config")
        .arg(&typo));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("listne"), "the key is named:\n{text}");
    assert!(text.contains("typo.yaml"), "the file is named:\n{text}");
}

#[test]
fn a_public_listener_without_tls_is_refused_by_check_naming_what_to_add() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("open.yaml");
    std::fs::write(&config, format!("listen: \"0.0.0.0:{}\"\n", free_port())).unwrap();
    let (code, text) = check(&config);
    assert_eq!(code, Some(1), "{text}");
    for want in ["0.0.0.0", "tls.cert", "tls.key", "--insecure"] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }

    // TLS without any authentication is not enough either.
    let tls = tmp.path().join("tls-only.yaml");
    let setup_dir = tmp.path().join("webhook");
    setup(&setup_dir, free_port());
    std::fs::write(
        &tls,
        format!(
            "listen: \"0.0.0.0:{}\"\ntls:\n  cert: {}\n  key: {}\n",
            free_port(),
            setup_dir.join("server.crt").display(),
            setup_dir.join("server.key").display()
        ),
    )
    .unwrap();
    let (code, text) = check(&tls);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("tls.client_ca"), "{text}");
}

/// `kubetrail serve`, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_on_a_public_address_needs_tls_or_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");

    let (code, text) = run(kubetrail()
        .args(["serve", "--listen", &listen, "--data"])
        .arg(&data));
    assert_eq!(code, Some(2), "{text}");
    for want in ["refusing to listen", "0.0.0.0", "tls.cert", "--insecure"] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }

    // With --insecure it starts, and says so.
    let stderr = tmp.path().join("serve.stderr");
    let mut server = Server(
        std::process::Command::new(BIN)
            .args(["serve", "--insecure", "--listen", &listen, "--data"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!(
                "serve --insecure exited with {status}:\n{}",
                std::fs::read_to_string(&stderr).unwrap()
            );
        }
        let health = std::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/healthz"))
            .output()
            .unwrap();
        if health.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve --insecure not up after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&stderr).unwrap();
    assert!(text.contains("--insecure"), "the warning is shown:\n{text}");
}

/// Identities as `config check` judges them: weak or exposed credentials are refused naming the file and
/// the fix; the deprecated token list and an unnamed client CA are warnings.
#[test]
fn identities_refuse_weak_or_exposed_tokens_and_warn_on_wide_grants() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    };
    let good = "0123456789abcdef0123456789abcdef";
    let config = |auth: &str| {
        let p = dir.join("kubetrail.yaml");
        std::fs::write(
            &p,
            format!("data: {}\nauth:\n{auth}", dir.join("data").display()),
        )
        .unwrap();
        p
    };
    let cases = [
        (
            format!(
                "  identities:\n    - {{name: lead, token_file: {}, role: responder}}\n",
                write("open", &format!("{good}\n"), 0o644)
            ),
            "mode 644",
        ),
        (
            format!(
                "  identities:\n    - {{name: lead, token_file: {}, role: responder}}\n",
                write("short", "too-short\n", 0o600)
            ),
            "at least 32",
        ),
        (
            format!(
                "  identities:\n    - {{name: lead, token_file: {}, role: responder}}\n",
                write("two", &format!("{good}\n{good}x\n"), 0o600)
            ),
            "holds 2 tokens",
        ),
        (
            format!(
                "  identities:\n    - {{name: a, token_file: {f}, role: reader}}\n    - {{name: b, token_file: {f}, role: admin}}\n",
                f = write("same", &format!("{good}\n"), 0o600)
            ),
            "the same token",
        ),
        (
            "  identities:\n    - {name: x, role: admin}\n".to_string(),
            "token_file` or a `client_cert_cn",
        ),
        (
            format!(
                "  identities:\n    - {{name: lead, token_file: {}, role: responder}}\n",
                write("same-char", &format!("{}\n", "a".repeat(40)), 0o600)
            ),
            "distinct characters",
        ),
        (
            "  identities:\n    - {name: x, client_cert_cn: alice, role: admin}\n".to_string(),
            "needs `tls.client_ca`",
        ),
        (
            "  identities:\n    - {name: x, token_file: /nonexistent, role: godmode}\n".to_string(),
            "godmode",
        ),
    ];
    for (auth, want) in cases {
        let (code, text) = check(&config(&auth));
        assert_eq!(code, Some(1), "{auth}: {text}");
        assert!(text.contains(want), "{auth}: want `{want}` in {text}");
        assert!(!text.contains(good), "a token is never printed: {text}");
    }
    // A FIFO (or a device) would hang the start: refused as not a regular file.
    let fifo = dir.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, text) = check(&config(&format!(
        "  identities:\n    - {{name: lead, token_file: {}, role: responder}}\n",
        fifo.display()
    )));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not a regular file"), "{text}");
    // The deprecated list still works, as admins, with a warning.
    let legacy = format!(
        "  bearer_tokens_file: {}\n",
        write("legacy", &format!("{good}\n"), 0o600)
    );
    let (code, text) = check(&config(&legacy));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("deprecated") && text.contains("admins"),
        "{text}"
    );
}

#[test]
fn a_silence_shorter_than_a_minute_is_refused_by_check() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(&tmp.path().join("webhook"), free_port());
    let text = std::fs::read_to_string(&config).unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, format!("{text}\ndetection:\n  silence_after: 30s\n")).unwrap();
    let (code, out) = check(&bad);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("`detection.silence_after` is `30s`"), "{out}");
    std::fs::write(&bad, format!("{text}\ndetection:\n  silence_after: 15m\n")).unwrap();
    let (code, out) = check(&bad);
    assert_eq!(code, Some(0), "{out}");
}
