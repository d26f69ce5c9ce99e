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
