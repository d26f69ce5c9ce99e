//! `kubetrail setup systemd` as a user runs it, judged by systemd's own tools: `systemd-analyze verify` (the
//! unit loads, every directive known, the binary there), `systemd-analyze security --offline` (its exposure
//! score), `systemd-sysusers` and `systemd-tmpfiles` (the snippets make the user and the 0700 data directory,
//! in a scratch root).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command as Process;

use assert_cmd::Command;
use predicates::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");
/// A config path that does not exist, so the unit is made from the flags alone.
const NO_CONFIG: &str = "/nonexistent/kubetrail-test/kubetrail.yaml";
/// The highest exposure `systemd-analyze security` may rate the unit (measured: 1.1 with systemd 252).
const MAX_EXPOSURE: f64 = 1.5;
/// The same with CAP_NET_BIND_SERVICE and without PrivateUsers= (measured: 1.4 with systemd 252).
const MAX_EXPOSURE_LOW_PORT: f64 = 2.0;

fn setup(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("kubetrail")
        .unwrap()
        .args(["setup", "systemd", "--out"])
        .arg(out)
        .args(extra)
        .assert()
}

/// Whether `tool` runs here; when not, the caller skips with this note.
fn have(tool: &str) -> bool {
    let ok = Process::new(tool).arg("--version").output().is_ok();
    if !ok {
        println!(
            "note: {tool} not found, skipping what needs it (install systemd to run this test)"
        );
    }
    ok
}

/// The `[Service]` section's directives, each with its values in order.
fn directives(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').expect("key=value");
            out.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    out
}

/// `systemd-analyze verify` passes and says nothing about the unit (unknown keys are only warnings).
fn verify(unit: &Path) {
    let out = Process::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("kubetrail.service"),
        "systemd-analyze verify complains: {stderr}"
    );
}

/// The overall exposure `systemd-analyze security --offline=yes` gives the unit.
fn exposure(unit: &Path) -> f64 {
    let out = Process::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for kubetrail.service:"))
        .unwrap_or_else(|| panic!("no overall exposure in: {stdout}"));
    let score = line.rsplit(':').next().unwrap().split_whitespace().next();
    score
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in `{line}`"))
}

#[test]
fn unit_is_hardened_and_systemd_accepts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("systemd");
    setup(&out, &["--bin", BIN, "--config", NO_CONFIG])
        .success()
        .stdout(
            predicate::str::contains("systemctl daemon-reload")
                .and(predicate::str::contains("systemd-tmpfiles --create"))
                .and(predicate::str::contains("systemd-sysusers"))
                .and(predicate::str::contains("systemctl enable --now kubetrail"))
                .and(predicate::str::contains("setup webhook")),
        );
    let unit = std::fs::read_to_string(out.join("kubetrail.service")).unwrap();
    let d = directives(&unit);
    let one = |k: &str| -> &str {
        match d.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{k}: {other:?}"),
        }
    };
    assert_eq!(
        one("ExecStart"),
        format!("{BIN} serve --config {NO_CONFIG} --data /var/lib/kubetrail")
    );
    assert_eq!(one("User"), "kubetrail");
    assert_eq!(one("ReadWritePaths"), "/var/lib/kubetrail");
    assert_eq!(one("CapabilityBoundingSet"), "", "no capabilities");
    assert_eq!(one("AmbientCapabilities"), "");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(one("UMask"), "0077");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(d["SystemCallFilter"][0], "@system-service");
    // Longer than serve's 10 s for in-flight requests, so the conversion and the checkpoint get their turn.
    let stop: u64 = one("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(stop > 10, "TimeoutStopSec={stop}");
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("SystemCallArchitectures", "native"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectHome", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(d.contains_key("LimitNOFILE"));

    if !have("systemd-analyze") {
        return;
    }
    verify(&out.join("kubetrail.service"));
    let score = exposure(&out.join("kubetrail.service"));
    println!("systemd-analyze security: {score}");
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}");
}

#[test]
fn a_low_port_adds_only_net_bind_service() {
    let tmp = tempfile::tempdir().unwrap();
    let (high, low) = (tmp.path().join("high"), tmp.path().join("low"));
    setup(&high, &["--bin", BIN, "--config", NO_CONFIG]).success();
    setup(&low, &["--bin", BIN, "--config", NO_CONFIG, "--low-port"]).success();
    let read =
        |dir: &Path| directives(&std::fs::read_to_string(dir.join("kubetrail.service")).unwrap());
    let (mut h, mut l) = (read(&high), read(&low));
    assert_eq!(l["CapabilityBoundingSet"], ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(l["AmbientCapabilities"], ["CAP_NET_BIND_SERVICE"]);
    // The one other difference: no user namespace, in which the capability would not reach the host's
    // network namespace.
    assert_eq!(h.remove("PrivateUsers"), Some(vec!["yes".to_owned()]));
    for k in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        h.remove(k);
        l.remove(k);
    }
    assert_eq!(h, l, "nothing else differs");

    // Read from the config: a listener on 443 gets the capability, one on 9443 does not.
    for (port, cap) in [(443, "CAP_NET_BIND_SERVICE"), (9443, "")] {
        let config = tmp.path().join(format!("kubetrail-{port}.yaml"));
        std::fs::write(
            &config,
            format!("listen: \"0.0.0.0:{port}\"\ndata: /srv/kubetrail\n"),
        )
        .unwrap();
        let out = tmp.path().join(format!("from-config-{port}"));
        let config_s = config.to_str().unwrap();
        let assert = setup(&out, &["--bin", BIN, "--config", config_s])
            .success()
            .stdout(predicate::str::contains(format!("port {port}")));
        if config.starts_with("/tmp") {
            let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
            assert!(
                stderr.contains(&format!("warning: --config `{config_s}` is invisible"))
                    && stderr.contains("PrivateTmp"),
                "{stderr}"
            );
        }
        let d = read(&out);
        assert_eq!(d["CapabilityBoundingSet"], [cap], "port {port}");
        assert_eq!(
            d["ReadWritePaths"],
            ["/srv/kubetrail"],
            "the config's data directory"
        );
        if have("systemd-analyze") {
            verify(&out.join("kubetrail.service"));
        }
    }

    if !have("systemd-analyze") {
        return;
    }
    verify(&low.join("kubetrail.service"));
    let score = exposure(&low.join("kubetrail.service"));
    println!("systemd-analyze security (low port): {score}");
    assert!(
        score <= MAX_EXPOSURE_LOW_PORT,
        "exposure {score} > {MAX_EXPOSURE_LOW_PORT}"
    );
}

/// Whether this process runs as root (systemd-tmpfiles can chown only then).
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn snippets_make_the_user_and_a_private_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("systemd");
    setup(
        &out,
        &[
            "--bin",
            BIN,
            "--config",
            NO_CONFIG,
            "--user",
            "ktaudit",
            "--data",
            "/srv/kt-data",
        ],
    )
    .success();
    let unit = directives(&std::fs::read_to_string(out.join("kubetrail.service")).unwrap());
    assert_eq!(unit["User"], ["ktaudit"]);
    assert_eq!(unit["Group"], ["ktaudit"]);
    assert_eq!(unit["ReadWritePaths"], ["/srv/kt-data"]);

    if !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        return;
    }
    if !root() {
        println!("note: not root, skipping systemd-tmpfiles (it must chown the data directory)");
        return;
    }
    let sysroot = tmp.path().join("root");
    std::fs::create_dir_all(sysroot.join("etc")).unwrap();
    let run = |tool: &str, args: &[&str], file: &str| {
        let status = Process::new(tool)
            .arg(format!("--root={}", sysroot.display()))
            .args(args)
            .arg(out.join(file))
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {file}");
    };
    run("systemd-sysusers", &[], "sysusers.d/kubetrail.conf");
    let passwd = std::fs::read_to_string(sysroot.join("etc/passwd")).unwrap();
    let entry: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("ktaudit:"))
        .unwrap_or_else(|| panic!("no ktaudit in {passwd}"))
        .split(':')
        .collect();
    let uid: u32 = entry[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system user: {entry:?}");
    assert!(entry[6].ends_with("nologin"), "no login: {entry:?}");

    run(
        "systemd-tmpfiles",
        &["--create"],
        "tmpfiles.d/kubetrail.conf",
    );
    let meta = std::fs::metadata(sysroot.join("srv/kt-data")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!((meta.uid(), meta.gid()), (uid, entry[3].parse().unwrap()));
}

#[test]
fn refuses_what_the_service_could_not_use() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("systemd");
    let config = tmp.path().join("kubetrail.yaml");
    std::fs::write(&config, "data: /var/lib/elsewhere\n").unwrap();
    let config = config.to_str().unwrap();
    setup(&out, &["--config", config, "--data", "/var/lib/kubetrail"])
        .failure()
        .code(2)
        .stderr(
            predicate::str::contains("/var/lib/elsewhere").and(predicate::str::contains("--data")),
        );
    setup(&out, &["--config", NO_CONFIG, "--user", "Root Admin"])
        .failure()
        .stderr(predicate::str::contains("--user `Root Admin`"));
    setup(
        &out,
        &["--config", NO_CONFIG, "--data", "var/lib/kubetrail"],
    )
    .failure()
    .stderr(predicate::str::contains("absolute"));
    setup(&out, &["--config", NO_CONFIG, "--data", "/var/lib/%i"])
        .failure()
        .stderr(predicate::str::contains("systemd would read specially"));
    assert!(!out.exists(), "nothing written on a usage error");

    setup(&out, &["--config", NO_CONFIG]).success();
    setup(&out, &["--config", NO_CONFIG]).failure().stderr(
        predicate::str::contains("kubetrail.service").and(predicate::str::contains("--force")),
    );
    setup(&out, &["--config", NO_CONFIG, "--force"]).success();
}
