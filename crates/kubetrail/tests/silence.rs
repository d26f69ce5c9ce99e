//! The audit trail cut, as `kubetrail detect` judges it on event time: a replayed day with 30 minutes of
//! nothing and secret writes that fall from Request to Metadata raises exactly `kt-audit-silence`,
//! `kt-audit-resumed` and `kt-policy-drift`; generated traffic, busy or quiet, raises none of them.

use assert_cmd::Command;

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

const STREAM_RULES: [&str; 3] = ["kt-audit-silence", "kt-audit-resumed", "kt-policy-drift"];

/// The stream rules' alerts of `detect --format json` over `file`, in order.
fn stream_alerts(file: &std::path::Path) -> Vec<serde_json::Value> {
    let out = kubetrail()
        .args(["detect", "--format", "json"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| STREAM_RULES.contains(&a["rule"]["id"].as_str().unwrap_or("")))
        .collect()
}

#[test]
fn a_cut_in_the_middle_of_a_file_raises_exactly_silence_resumed_and_drift() {
    let events = kubetrail_gen::cut::cut_trail(
        kubetrail_gen::Config {
            nodes: 5,
            rate: 1.0,
            ..kubetrail_gen::Config::default()
        },
        &kubetrail_gen::cut::Cut::four_hours(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let text: String = events.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();

    let alerts = stream_alerts(&file);
    let ids: Vec<&str> = alerts
        .iter()
        .map(|a| a["rule"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, STREAM_RULES, "{alerts:#?}");
    // The silence starts at the last event before the cut (2026-01-01T02:00:00Z) and is critical.
    let silence = &alerts[0];
    assert_eq!(silence["severity"], "critical");
    assert!(
        silence["time"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T01:59"),
        "{silence}"
    );
    assert!(
        silence["runbook"]
            .as_str()
            .unwrap()
            .contains("kubetrail gaps")
    );
    let resumed = alerts[1]["summary"].as_str().unwrap();
    assert!(resumed.contains("after 30m"), "{resumed}");
    let drift = alerts[2]["summary"].as_str().unwrap();
    assert!(
        drift.contains("`create secrets` in namespace `prod` by service-account identities")
            && drift.contains("recorded at Request")
            && drift.contains("at Metadata since 2026-01-01T02:45:00Z"),
        "{drift}"
    );
    assert_eq!(alerts[2]["severity"], "high");

    // The file cut short before the gap: its end is not a silence, and without the drift, nothing.
    let before: String = events
        .iter()
        .take_while(|(at, _)| *at < events[0].0 + 2 * 3_600_000_000)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&file, before).unwrap();
    assert_eq!(stream_alerts(&file), Vec::<serde_json::Value>::new());

    // Disabled by id in the config's `detection:`, they are not raised.
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
        "detection:\n  disabled: [kt-audit-silence, kt-audit-resumed, kt-policy-drift]\n",
    )
    .unwrap();
    let text: String = events.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = kubetrail()
        .args(["detect", "--format", "json", "--config"])
        .arg(&config)
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("kt-audit-silence") && !stdout.contains("kt-policy-drift"));
}

#[test]
fn generated_days_busy_and_quiet_raise_no_stream_alert() {
    let dir = tempfile::tempdir().unwrap();
    // Two days at half an event a second with quiet nights (a quarter of the rate, people gone), and two
    // quiet days (a request every 50 s on average, pauses of many minutes among them): none is a cut trail.
    for (rate, duration, seed, nights) in [("0.5", "48h", "3", true), ("0.02", "48h", "4", false)] {
        let file = dir.path().join(format!("traffic-{rate}.log"));
        let mut traffic = kubetrail();
        traffic
            .args([
                "gen",
                "--nodes",
                "3",
                "--rate",
                rate,
                "--duration",
                duration,
                "--seed",
                seed,
            ])
            .args(["--start", "2026-01-01T00:00:00Z", "--metadata-only", "-o"])
            .arg(&file);
        if nights {
            traffic.arg("--nights");
        }
        traffic.assert().success();
        assert_eq!(
            stream_alerts(&file),
            Vec::<serde_json::Value>::new(),
            "rate {rate}"
        );
    }
}

#[test]
fn silence_after_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(&config, "detection:\n  silence_after: 10s\n").unwrap();
    let out = kubetrail()
        .args(["detect", "--config"])
        .arg(&config)
        .arg("/dev/null")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("`detection.silence_after` is `10s`: it must be at least 1m"),
        "{err}"
    );
}

#[test]
fn the_stream_rules_are_listed_and_shown_with_their_runbooks() {
    let out = kubetrail()
        .args(["rules", "list", "--format", "json"])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for id in STREAM_RULES {
        let row = rows
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed"));
        assert_eq!(row["kind"], "stream");
    }
    let out = kubetrail()
        .args(["rules", "show", "kt-policy-drift"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("severity: high")
            && text.contains("runbook:")
            && text.contains("policy observed"),
        "{text}"
    );
    let out = kubetrail()
        .args(["rules", "list", "--no-builtin", "--rules", "/dev/null"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kt-audit-silence"));
}
