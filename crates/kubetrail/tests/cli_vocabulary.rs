//! The command line's shared vocabulary, as a user meets it: one duration grammar everywhere (`--for 1w`,
//! `--since 1.5h`), `KUBETRAIL_DATA` for every command's `--data` (shown in `--help`), shell completions and
//! man pages generated from the same definition.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kubetrail");

fn run(args: &[&str], data: Option<&std::path::Path>) -> (bool, String, String) {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("KUBETRAIL_DATA");
    if let Some(d) = data {
        c.env("KUBETRAIL_DATA", d);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn one_duration_grammar_and_the_data_directory_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-env");
    for d in ["1w", "1.5h", "90s"] {
        let (ok, _, err) = run(
            &[
                "alerts",
                "suppress",
                "--rule",
                "kt-exec-other",
                "--for",
                d,
                "--reason",
                "change CHG-1",
            ],
            Some(&data),
        );
        assert!(ok, "--for {d}: {err}");
    }
    let (ok, out, err) = run(&["alerts", "suppressions"], Some(&data));
    assert!(ok, "{err}");
    assert_eq!(out.matches("kt-exec-other").count(), 3, "{out}");
    assert!(data.join("alerts/suppressions.jsonl").is_file());

    let (ok, _, err) = run(
        &[
            "alerts", "suppress", "--rule", "x", "--for", "10y", "--reason", "r",
        ],
        Some(&data),
    );
    assert!(!ok);
    assert!(
        err.contains("`10y` is not a duration") && err.contains("4w"),
        "{err}"
    );
    let (ok, _, err) = run(
        &["query", "--where", "verb = get", "--since", "yesterday"],
        Some(&data),
    );
    assert!(!ok);
    assert!(err.contains("`yesterday` is not a time"), "{err}");

    let (_, help, _) = run(&["query", "--help"], None);
    assert!(help.contains("env: KUBETRAIL_DATA"), "{help}");
}

#[test]
fn completions_and_man_pages() {
    let (ok, bash, _) = run(&["completion", "bash"], None);
    assert!(
        ok && bash.contains("_kubetrail") && bash.contains("suppress"),
        "{bash}"
    );
    let (ok, zsh, _) = run(&["completion", "zsh"], None);
    assert!(ok && zsh.starts_with("#compdef kubetrail"), "{zsh}");
    let (ok, fish, _) = run(&["completion", "fish"], None);
    assert!(ok && fish.contains("complete -c kubetrail"), "{fish}");
    let (ok, _, err) = run(&["completion", "tcsh"], None);
    assert!(!ok && err.contains("tcsh"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let (ok, _, err) = run(&["man", dir.to_str().unwrap()], None);
    assert!(ok, "{err}");
    for page in [
        "kubetrail.1",
        "kubetrail-query.1",
        "kubetrail-alerts-suppress.1",
    ] {
        assert!(dir.join(page).is_file(), "{page}: {err}");
    }
    let query = std::fs::read_to_string(dir.join("kubetrail-query.1")).unwrap();
    assert!(query.contains(".TH") && query.contains("since"), "{query}");
}

#[test]
fn row_listings_speak_csv_with_formulas_defused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("alerts")).unwrap();
    // An attacker chooses the username; a spreadsheet must not run it.
    let alert = r#"{"id":"a-1","rule":{"id":"kt-exec-prod-system","title":"Exec"},"severity":"high","auditIDs":["x"],"time":"2026-01-01T00:00:00Z","actor":{"username":"=HYPERLINK(\"http://evil\")"},"sourceIPs":[],"summary":"s","count":1,"lastTime":"2026-01-01T00:00:00Z"}"#;
    std::fs::write(data.join("alerts/alerts.jsonl"), format!("{alert}\n")).unwrap();
    let (ok, out, err) = run(&["alerts", "list", "--format", "csv"], Some(&data));
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("ID,STATUS,SEVERITY,RULE,ACTOR,FIRST SEEN,COUNT,ASSIGNEE")
    );
    assert_eq!(
        lines.next(),
        Some(
            "a-1,open,high,kt-exec-prod-system,\"'=HYPERLINK(\"\"http://evil\"\")\",2026-01-01T00:00:00Z,1,"
        )
    );
    assert_eq!(lines.next(), None, "no table footer in CSV: {out}");

    let (ok, out, err) = run(&["rules", "list", "--format", "csv"], None);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ID,SEVERITY,KIND,TITLE,ATT&CK,DEFINED IN\n"),
        "{out}"
    );
    assert!(out.lines().count() > 50, "{out}");
}
