//! `kubetrail gaps` and `kubetrail coverage` over a data directory of generated traffic (`kubetrail gen`)
//! from two sources, one of which delivered nothing for thirty minutes.
//!
//! Silences are measured on `received`, the collector's clock. `kubetrail import` stamps every event with the
//! import's own wall-clock time (`kubetrail_runtime::data::now_us()` in `cmd/import.rs`, with no option to
//! use the event's time instead), so an import cannot make a hole in the past. The events go through the
//! pipeline `import` and `serve` use (`Pipeline::decode_into`, then `commit`: redaction, dedup, the log) with
//! the receive time a collector would have stamped: each event's `stageTimestamp` plus 250 ms. The first
//! command converts the log into Parquet itself, as after an import or a collector's stop.

use std::path::PathBuf;
use std::sync::OnceLock;

use assert_cmd::Command;
use serde_json::Value;

const STEADY: &str = "webhook:apiserver";
const HOLED: &str = "file:/var/log/kubernetes/audit/audit.log";
/// The log file's source delivered nothing received in [HOLE_FROM, HOLE_TO).
const HOLE_FROM: &str = "2026-03-01T10:40:00Z";
const HOLE_TO: &str = "2026-03-01T11:10:00Z";

fn kubetrail() -> Command {
    Command::cargo_bin("kubetrail").unwrap()
}

fn us(t: &str) -> i64 {
    t.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

fn time(us: i64) -> String {
    format!("{:.6}", jiff::Timestamp::from_microsecond(us).unwrap())
}

/// What the test stored, to compare the commands' answers with.
struct Stored {
    data: PathBuf,
    /// `received` of each source's events, in order.
    steady: Vec<i64>,
    holed: Vec<i64>,
    /// Events per level.
    levels: std::collections::BTreeMap<String, u64>,
    _tmp: tempfile::TempDir,
}

impl Stored {
    /// The log file's last event before the hole and its first after it.
    fn hole(&self) -> (i64, i64) {
        let from = *self.holed.iter().rfind(|r| **r < us(HOLE_FROM)).unwrap();
        let to = *self.holed.iter().find(|r| **r >= us(HOLE_TO)).unwrap();
        (from, to)
    }
}

/// 7,100 generated events (about two hours from 10:00 at one a second), alternately from the apiserver's
/// webhook and from its log file; the log file's events received between 10:40 and 11:10 never arrived.
fn stored() -> &'static Stored {
    static STORED: OnceLock<Stored> = OnceLock::new();
    STORED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let gen_file = tmp.path().join("gen.jsonl");
        kubetrail()
            .args([
                "gen",
                "--count",
                "7100",
                "--rate",
                "1",
                "--seed",
                "3",
                "--start",
                "2026-03-01T10:00:00Z",
                "-o",
            ])
            .arg(&gen_file)
            .assert()
            .success();
        let data = tmp.path().join("data");
        kubetrail_runtime::data::ensure(&data).unwrap();
        let wal = kubetrail_runtime::data::open_wal(&data, kubetrail_store::WalOptions::default())
            .unwrap();
        let redactor =
            kubetrail_runtime::data::redactor(&data, &kubetrail_policy::RedactionConfig::default())
                .unwrap();
        let pipeline = kubetrail_pipeline::Pipeline::new(
            wal,
            redactor,
            kubetrail_pipeline::PipelineConfig {
                dedup_keys: Some(kubetrail_runtime::data::dedup_keys(&data)),
                ..kubetrail_pipeline::PipelineConfig::default()
            },
        )
        .unwrap();
        let (mut steady, mut holed) = (Vec::new(), Vec::new());
        let mut levels = std::collections::BTreeMap::new();
        let mut batch = kubetrail_pipeline::Batch::new();
        let text = std::fs::read_to_string(&gen_file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let event: Value = serde_json::from_str(line).unwrap();
            let received = us(event["stageTimestamp"].as_str().unwrap()) + 250_000;
            let source = if i % 2 == 0 { STEADY } else { HOLED };
            if source == HOLED && (us(HOLE_FROM)..us(HOLE_TO)).contains(&received) {
                continue;
            }
            pipeline.decode_into(&mut batch, line, source, received);
            if source == STEADY {
                steady.push(received);
            } else {
                holed.push(received);
            }
            *levels
                .entry(event["level"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let outcome = pipeline.commit(batch).unwrap();
        assert_eq!(outcome.events, steady.len() + holed.len());
        assert!(steady.is_sorted() && holed.is_sorted());
        // The steady source never paused for a minute; the hole is thirty minutes, give or take an event.
        assert!(steady.windows(2).all(|w| w[1] - w[0] < 60_000_000));
        drop(pipeline);
        // The first command converts the log into Parquet (as after an import, or a collector's stop); one
        // that finds another converting reads what is converted so far, so this one runs first, alone.
        kubetrail()
            .args(["coverage", "--since", "2026-03-01T00:00:00Z", "--data"])
            .arg(&data)
            .assert()
            .success();
        Stored {
            data,
            steady,
            holed,
            levels,
            _tmp: tmp,
        }
    })
}

fn run(args: &[&str]) -> (String, String, i32) {
    let out = kubetrail()
        .args(args)
        .arg("--data")
        .arg(&stored().data)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

/// The JSON lines of `--format json` (one object per row, with its `section`).
fn json_rows(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A gap's length as the reports print it, whole seconds with zero units left out: `29m 58s`, `30m`,
/// `1h 1m 29s` (gaps under a day here).
fn length(from: i64, to: i64) -> String {
    let s = (to - from) / 1_000_000;
    assert!((1..86_400).contains(&s));
    [(s / 3600, "h"), (s % 3600 / 60, "m"), (s % 60, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn gap(source: &str, from: i64, to: i64, ongoing: bool) -> Value {
    serde_json::json!({
        "section": "gaps",
        "cluster": "default",
        "source": source,
        "from": time(from),
        "to": time(to),
        "length": length(from, to),
        "ongoing": if ongoing { "yes" } else { "no" },
    })
}

#[test]
fn gaps_lists_exactly_the_hole_and_exits_1() {
    let s = stored();
    let (from, to) = s.hole();
    assert!(
        (1795..=1830).contains(&((to - from) / 1_000_000)),
        "{from} {to}"
    );
    // From an hour before the first event (a source that had not started is not silent) to a minute after
    // the last.
    let until = time(s.steady.last().unwrap().max(s.holed.last().unwrap()) + 60_000_000);
    let range: &[&str] = &["--since", "2026-03-01T09:00:00Z", "--until", &until];
    let (out, err, code) = run(&[&["gaps", "--format", "json"][..], range].concat());
    assert_eq!(code, 1, "a gap is a finding: {out}{err}");
    assert_eq!(json_rows(&out), [gap(HOLED, from, to, false)], "{out}");

    // As a table: the title names the threshold and the range; the one row.
    let (out, err, code) = run(&[&["gaps"][..], range].concat());
    assert_eq!(code, 1, "{err}");
    assert!(
        out.starts_with(&format!(
            "gaps longer than 5m in the audit trail: every cluster, events received from \
             2026-03-01T09:00:00.000000Z to {until}\n\ngaps (1)\nCLUSTER  SOURCE"
        )),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with("default ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    let want = format!(
        "default {HOLED} {} {} {} no",
        time(from),
        time(to),
        length(from, to)
    );
    assert_eq!(cells.join(" "), want);

    // Over a threshold longer than the hole, or in the steady source's cluster only: nothing, exit 0.
    let (out, err, code) = run(&[
        &["gaps", "--format", "json", "--longer-than", "31m"][..],
        range,
    ]
    .concat());
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let (out, _, code) = run(&[
        &["gaps", "--format", "json", "--cluster", "staging"][..],
        range,
    ]
    .concat());
    assert_eq!((code, out.as_str()), (0, ""));
    // Under a second is refused (exit 2, the reason).
    let (_, err, code) = run(&[&["gaps", "--longer-than", "500ms"][..], range].concat());
    assert_eq!(code, 2);
    assert!(err.contains("at least a second"), "{err}");
}

#[test]
fn gaps_ongoing_to_the_end_of_the_range() {
    let s = stored();
    let (from, to) = s.hole();
    let end = us("2026-03-01T13:00:00Z");
    let (out, err, code) = run(&[
        "gaps",
        "--format",
        "json",
        "--since",
        "2026-03-01T10:00:00Z",
        "--until",
        "2026-03-01T13:00:00Z",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        json_rows(&out),
        [
            gap(HOLED, from, to, false),
            gap(HOLED, *s.holed.last().unwrap(), end, true),
            gap(STEADY, *s.steady.last().unwrap(), end, true),
        ],
        "{out}"
    );
}

#[test]
fn coverage_shows_the_hours_and_the_gap() {
    let s = stored();
    let (from, to) = s.hole();
    let (out, err, code) = run(&[
        "coverage",
        "--format",
        "json",
        "--since",
        "2026-03-01T10:00:00Z",
        "--until",
        "2026-03-01T12:00:00Z",
    ]);
    assert_eq!(code, 0, "coverage is a report: {err}");
    let rows = json_rows(&out);
    let section =
        |name: &str| -> Vec<&Value> { rows.iter().filter(|r| r["section"] == name).collect() };
    let sources = section("sources");
    assert_eq!(sources.len(), 2, "{out}");
    let (holed, steady) = (sources[0], sources[1]);
    assert_eq!(holed["source"], HOLED);
    assert_eq!(steady["source"], STEADY);
    for (row, events, gaps, total) in [
        (holed, &s.holed, "1", length(from, to)),
        (steady, &s.steady, "0", "0s".to_string()),
    ] {
        assert_eq!(row["cluster"], "default");
        assert_eq!(row["first"], time(events[0]), "{row}");
        assert_eq!(row["last"], time(*events.last().unwrap()), "{row}");
        assert_eq!(row["events"], events.len().to_string(), "{row}");
        // 10:00 to 12:00: two clock hours, both with events.
        assert_eq!(row["hours"], "2", "{row}");
        assert_eq!(row["with_events"], "2", "{row}");
        assert_eq!(row["share"], "100.0%", "{row}");
        assert_eq!(row["gaps"], gaps, "{row}");
        assert_eq!(row["gap_total"], total, "{row}");
        assert_eq!(
            row["per_hour"],
            format!("{:.1}", events.len() as f64 / 2.0),
            "{row}"
        );
        // The first event came after 10:00:00: the only full hour after it is 11:00.
        let eleven = events
            .iter()
            .filter(|r| (us("2026-03-01T11:00:00Z")..us("2026-03-01T12:00:00Z")).contains(r))
            .count();
        assert_eq!(
            row["lowest_full_hour"],
            format!("{eleven} at 2026-03-01T11:00:00.000000Z"),
            "{row}"
        );
    }
    assert_eq!(section("gaps"), [&gap(HOLED, from, to, false)]);
    // Levels recorded, with their share; None never is.
    let total: u64 = s.levels.values().sum();
    let levels = section("levels");
    let names: Vec<&str> = levels
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Metadata", "Request", "RequestResponse"]);
    for r in levels {
        let n = s
            .levels
            .get(r["level"].as_str().unwrap())
            .copied()
            .unwrap_or(0);
        assert_eq!(r["events"], n.to_string(), "{r}");
        assert_eq!(
            r["share"],
            format!("{:.1}%", n as f64 * 100.0 / total as f64),
            "{r}"
        );
    }
    assert!(s.levels["Metadata"] > 0 && s.levels["Request"] > 0);
    let stages = section("stages");
    assert_eq!(stages.len(), 1);
    assert_eq!(stages[0]["stage"], "ResponseComplete");
    assert_eq!(stages[0]["events"], total.to_string());

    // As printable evidence: the title names the range, the hours and when it was produced.
    let (out, err, code) = run(&[
        "coverage",
        "--since",
        "2026-03-01T10:00:00Z",
        "--until",
        "2026-03-01T12:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
    let title = out.lines().next().unwrap();
    assert!(
        title.starts_with(
            "coverage of the audit trail: every cluster, events received from 2026-03-01T10:00:00.000000Z to \
             2026-03-01T12:00:00.000000Z; 2 hour(s), gaps longer than 5m; produced 20"
        ),
        "{title}"
    );
    for section in ["sources (2)", "gaps (1)", "levels (3)", "stages (1)"] {
        assert!(out.contains(section), "{section}: {out}");
    }
}
