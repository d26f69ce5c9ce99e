//! The audit log file source against real files: appends, rotations (rename, gzip, copytruncate), restarts,
//! sink errors, long and partial lines. Every test polls explicitly: no sleeps, no timing.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kubetrail_pipeline::file::{
    FileSourceConfig, FileSourceError, FileTailer, Line, PollStats, SinkError,
};

struct Setup {
    _dir: tempfile::TempDir,
    logs: PathBuf,
    live: PathBuf,
    checkpoint: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("audit");
    fs::create_dir(&logs).unwrap();
    Setup {
        live: logs.join("audit.log"),
        checkpoint: dir.path().join("data").join("file-source.checkpoint"),
        logs,
        _dir: dir,
    }
}

impl Setup {
    fn config(&self) -> FileSourceConfig {
        FileSourceConfig::new(&self.live, &self.checkpoint)
    }

    fn open(&self) -> FileTailer {
        FileTailer::open(self.config()).unwrap()
    }

    fn rotated(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }
}

/// A line shaped like an audit event, unique by `n`, about 300 bytes so 4 KiB heads are distinct.
fn event(n: u32) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"00000000-0000-0000-0000-{n:012}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{{"username":"alice"}},"sourceIPs":["10.0.0.1"]}}"#
    )
}

fn append(path: &Path, range: std::ops::Range<u32>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for n in range {
        writeln!(f, "{}", event(n)).unwrap();
    }
}

fn append_raw(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// What a sink saw: (text, file name, line number, truncated).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    text: String,
    file: String,
    line: u64,
    truncated: bool,
}

fn seen(l: &Line<'_>) -> Seen {
    Seen {
        text: String::from_utf8_lossy(l.bytes).into_owned(),
        file: l.file.file_name().unwrap().to_string_lossy().into_owned(),
        line: l.line,
        truncated: l.truncated,
    }
}

/// Polls once, collecting every line.
fn poll(t: &mut FileTailer) -> (Vec<Seen>, PollStats) {
    let mut out = Vec::new();
    let stats = t
        .poll(&mut |lines: &[Line<'_>]| {
            out.extend(lines.iter().map(seen));
            Ok(())
        })
        .unwrap();
    (out, stats)
}

fn texts(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|s| s.text.clone()).collect()
}

fn events(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(event).collect()
}

fn gzip(path: &Path) {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(&fs::read(path).unwrap()).unwrap();
    enc.finish().unwrap();
    fs::remove_file(path).unwrap();
}

fn copytruncate(live: &Path, copy: &Path) {
    fs::copy(live, copy).unwrap();
    OpenOptions::new()
        .write(true)
        .open(live)
        .unwrap()
        .set_len(0)
        .unwrap();
}

#[test]
fn appended_lines_are_delivered_once_in_order() {
    let s = setup();
    append(&s.live, 0..3);
    let mut t = s.open();
    let (first, stats) = poll(&mut t);
    assert_eq!(texts(&first), events(0..3));
    assert_eq!(first.iter().map(|l| l.line).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!((stats.lines, stats.lag_bytes), (3, 0));
    assert_eq!(stats.bytes, fs::metadata(&s.live).unwrap().len());

    let (none, _) = poll(&mut t);
    assert!(none.is_empty());

    append(&s.live, 3..10);
    let (second, _) = poll(&mut t);
    assert_eq!(texts(&second), events(3..10));
    assert_eq!(second[0].line, 4);
}

#[test]
fn missing_live_file_is_waited_for() {
    let s = setup();
    let mut t = s.open();
    assert!(poll(&mut t).0.is_empty());
    append(&s.live, 0..2);
    assert_eq!(texts(&poll(&mut t).0), events(0..2));
}

#[test]
fn restart_from_checkpoint_does_not_duplicate() {
    let s = setup();
    append(&s.live, 0..5);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 5);
    drop(t);

    append(&s.live, 5..8);
    let mut t = s.open();
    let (lines, _) = poll(&mut t);
    assert_eq!(texts(&lines), events(5..8));
    assert_eq!(lines[0].line, 6);
}

#[test]
fn rename_rotation_mid_stream_loses_and_duplicates_nothing() {
    let s = setup();
    append(&s.live, 0..5);
    let mut t = s.open();
    assert_eq!(texts(&poll(&mut t).0), events(0..5));

    // written to the old file after our last poll, then rotated away by lumberjack
    append(&s.live, 5..8);
    let rotated = s.rotated("audit-2026-11-25T14-37-01.123.log");
    fs::rename(&s.live, &rotated).unwrap();
    append(&s.live, 8..12);

    let (lines, stats) = poll(&mut t);
    assert_eq!(texts(&lines), events(5..12));
    assert_eq!(stats.rotations, 1);
    // lines of the old file are named by its rotated name and keep counting
    assert_eq!(lines[0].file, "audit-2026-11-25T14-37-01.123.log");
    assert_eq!(lines[0].line, 6);
    assert_eq!((lines[3].file.as_str(), lines[3].line), ("audit.log", 1));

    append(&s.live, 12..13);
    assert_eq!(texts(&poll(&mut t).0), events(12..13));
}

#[test]
fn several_rotations_between_polls_are_followed_in_order() {
    let s = setup();
    append(&s.live, 0..2);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 2);

    append(&s.live, 2..4);
    fs::rename(&s.live, s.rotated("audit-2026-11-25T14-37-01.123.log")).unwrap();
    append(&s.live, 4..6);
    fs::rename(&s.live, s.rotated("audit-2026-11-25T14-38-00.000.log")).unwrap();
    append(&s.live, 6..8);
    gzip(&s.rotated("audit-2026-11-25T14-38-00.000.log"));

    let (lines, stats) = poll(&mut t);
    assert_eq!(texts(&lines), events(2..8));
    assert_eq!(stats.rotations, 2);
}

#[test]
fn rotation_waits_for_the_new_file_to_be_written() {
    let s = setup();
    append(&s.live, 0..2);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 2);

    // logrotate `create`: renamed and recreated, but the writer still appends to the old inode
    let rotated = s.rotated("audit.log.1");
    fs::rename(&s.live, &rotated).unwrap();
    File::create(&s.live).unwrap();
    append_raw(
        &rotated,
        format!("{}\n{}", event(2), &event(3)[..20]).as_bytes(),
    );
    let (lines, _) = poll(&mut t);
    assert_eq!(texts(&lines), events(2..3));

    append_raw(&rotated, format!("{}\n", &event(3)[20..]).as_bytes());
    append(&s.live, 4..5);
    let (lines, _) = poll(&mut t);
    assert_eq!(texts(&lines), events(3..5));
}

#[test]
fn gzipped_rotation_while_down_is_resumed_from_the_decompressed_stream() {
    let s = setup();
    append(&s.live, 0..20);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 20);
    drop(t);

    // while kubetrail is down: more lines, rotation, compression of the rotated file, new lines
    append(&s.live, 20..25);
    let rotated = s.rotated("audit-2026-11-25T14-37-01.123.log");
    fs::rename(&s.live, &rotated).unwrap();
    append(&s.live, 25..30);
    gzip(&rotated);

    let mut t = s.open();
    let (lines, _) = poll(&mut t);
    assert_eq!(texts(&lines), events(20..30));
    assert_eq!(
        (lines[0].file.as_str(), lines[0].line),
        ("audit-2026-11-25T14-37-01.123.log.gz", 21)
    );
    assert_eq!((lines[5].file.as_str(), lines[5].line), ("audit.log", 1));

    drop(t);
    let mut t = s.open();
    assert!(poll(&mut t).0.is_empty());
}

#[test]
fn rename_rotation_while_down_is_found_by_inode() {
    let s = setup();
    append(&s.live, 0..3);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 3);
    drop(t);

    append(&s.live, 3..5);
    fs::rename(&s.live, s.rotated("audit.log.1")).unwrap();
    append(&s.live, 5..7);

    let mut t = s.open();
    assert_eq!(texts(&poll(&mut t).0), events(3..7));
}

#[test]
fn copytruncate_takes_the_missed_lines_from_the_copy() {
    let s = setup();
    append(&s.live, 0..20);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 20);

    append(&s.live, 20..25);
    copytruncate(&s.live, &s.rotated("audit.log.1"));
    append(&s.live, 25..27);

    let (lines, stats) = poll(&mut t);
    assert_eq!(texts(&lines), events(20..27));
    assert_eq!(stats.rotations, 2);
    assert_eq!((lines[0].file.as_str(), lines[0].line), ("audit.log.1", 21));
    assert_eq!((lines[5].file.as_str(), lines[5].line), ("audit.log", 1));
}

#[test]
fn copytruncate_regrown_past_the_offset_is_detected_by_content() {
    let s = setup();
    append(&s.live, 0..3);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 3);

    append(&s.live, 3..4);
    copytruncate(&s.live, &s.rotated("audit.log.1"));
    // the new content is already longer than our old offset
    append(&s.live, 100..110);

    assert_eq!(
        texts(&poll(&mut t).0),
        [events(3..4), events(100..110)].concat()
    );
}

#[test]
fn copytruncate_while_down_is_resumed_from_the_copy() {
    let s = setup();
    append(&s.live, 0..20);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 20);
    drop(t);

    append(&s.live, 20..22);
    copytruncate(&s.live, &s.rotated("audit.log.1"));
    append(&s.live, 22..24);

    let mut t = s.open();
    assert_eq!(texts(&poll(&mut t).0), events(20..24));
}

#[test]
fn truncation_without_a_copy_restarts_the_live_file() {
    let s = setup();
    append(&s.live, 0..5);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 5);

    OpenOptions::new()
        .write(true)
        .open(&s.live)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&s.live, 5..6);
    let (lines, stats) = poll(&mut t);
    assert_eq!(texts(&lines), events(5..6));
    assert_eq!((lines[0].line, stats.rotations), (1, 1));
}

#[test]
fn sink_error_checkpoints_nothing_past_the_failed_batch_and_redelivers_it() {
    let s = setup();
    append(&s.live, 0..40);
    // about 3 lines per batch
    let cfg = FileSourceConfig {
        batch_bytes: 3 * event(0).len(),
        ..s.config()
    };
    let mut t = FileTailer::open(cfg.clone()).unwrap();

    let mut calls = 0;
    let mut delivered = Vec::new();
    let mut failed = Vec::new();
    let err = t
        .poll(&mut |lines: &[Line<'_>]| {
            calls += 1;
            if calls == 2 {
                failed = lines.iter().map(seen).collect();
                return Err::<(), SinkError>("store is full".into());
            }
            delivered.extend(lines.iter().map(seen));
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(err, FileSourceError::Sink { first_line, .. } if first_line as usize == delivered.len() + 1)
    );
    assert!(err.to_string().contains("store is full"), "{err}");
    assert!(!failed.is_empty());

    // a restart now resumes right after the first batch
    let mut restarted = FileTailer::open(cfg).unwrap();
    let (again, _) = poll(&mut restarted);
    assert_eq!(again[..failed.len()], failed[..]);

    // the same tailer offers the failed batch first, unchanged, then the rest
    let mut batches = Vec::new();
    t.poll(&mut |lines: &[Line<'_>]| {
        batches.push(lines.iter().map(seen).collect::<Vec<_>>());
        Ok(())
    })
    .unwrap();
    assert_eq!(batches[0], failed);
    delivered.extend(batches.into_iter().flatten());
    assert_eq!(texts(&delivered), events(0..40));
}

#[test]
fn a_3_mib_line_is_delivered_whole() {
    let s = setup();
    let big = format!(r#"{{"requestObject":"{}"}}"#, "x".repeat(3 << 20));
    append(&s.live, 0..1);
    append_raw(&s.live, format!("{big}\n").as_bytes());
    append(&s.live, 1..2);
    let mut t = s.open();
    let (lines, _) = poll(&mut t);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1].text, big);
    assert!(!lines[1].truncated);
    assert_eq!(lines[2].text, event(1));
}

#[test]
fn a_line_over_the_limit_is_cut_and_flagged_and_the_next_lines_are_intact() {
    let s = setup();
    let cfg = FileSourceConfig {
        max_line_bytes: 1000,
        batch_bytes: 4096,
        ..s.config()
    };
    let long = "y".repeat(100_000);
    append(&s.live, 0..1);
    append_raw(&s.live, format!("{long}\n").as_bytes());
    append(&s.live, 1..3);
    let mut t = FileTailer::open(cfg.clone()).unwrap();
    let (lines, stats) = poll(&mut t);
    assert_eq!(lines.len(), 4);
    assert_eq!(
        (lines[1].text.len(), lines[1].truncated, lines[1].line),
        (1000, true, 2)
    );
    assert_eq!(texts(&lines[2..]), events(1..3));
    assert_eq!((lines[3].line, stats.truncated), (4, 1));
    assert_eq!(stats.bytes, fs::metadata(&s.live).unwrap().len());

    // the offset counted the cut-off bytes: a restart resumes after them
    append(&s.live, 3..4);
    let mut t = FileTailer::open(cfg).unwrap();
    assert_eq!(texts(&poll(&mut t).0), events(3..4));
}

#[test]
fn a_partial_line_waits_for_its_newline() {
    let s = setup();
    let e = event(1);
    let (head, tail) = e.split_at(50);
    append(&s.live, 0..1);
    append_raw(&s.live, head.as_bytes());
    let mut t = s.open();
    let (lines, stats) = poll(&mut t);
    assert_eq!(texts(&lines), events(0..1));
    assert_eq!(stats.lag_bytes, 50);

    // not delivered after a restart either
    drop(t);
    let mut t = s.open();
    assert!(poll(&mut t).0.is_empty());

    append_raw(&s.live, tail.as_bytes());
    assert!(poll(&mut t).0.is_empty());
    append_raw(&s.live, b"\n");
    let (lines, _) = poll(&mut t);
    assert_eq!(texts(&lines), events(1..2));
    assert_eq!(lines[0].line, 2);
}

#[test]
fn checkpoint_is_json_naming_the_file() {
    let s = setup();
    append(&s.live, 0..2);
    let mut t = s.open();
    poll(&mut t);
    let ck: serde_json::Value = serde_json::from_slice(&fs::read(&s.checkpoint).unwrap()).unwrap();
    assert_eq!(ck["offset"], fs::metadata(&s.live).unwrap().len());
    assert_eq!(ck["line"], 2);
    assert_eq!(ck["path"], s.live.to_str().unwrap());
    assert!(ck["inode"].as_u64().is_some() && ck["dev"].as_u64().is_some());
    assert!(!s.checkpoint.with_extension("checkpoint.tmp").exists());

    fs::write(&s.checkpoint, "{").unwrap();
    let err = FileTailer::open(s.config()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("`{}`", s.checkpoint.display())),
        "{err}"
    );
}

#[test]
fn rotated_file_compressed_and_deleted_while_held_is_finished_and_followed() {
    let s = setup();
    append(&s.live, 0..20);
    let mut t = s.open();
    assert_eq!(poll(&mut t).0.len(), 20);

    // lumberjack with `compress`: rename, new file, .gz written and the plain file removed, all between polls
    append(&s.live, 20..22);
    let rotated = s.rotated("audit-2026-11-25T14-37-01.123.log");
    fs::rename(&s.live, &rotated).unwrap();
    append(&s.live, 22..24);
    gzip(&rotated);

    assert_eq!(texts(&poll(&mut t).0), events(20..24));
    append(&s.live, 24..25);
    assert_eq!(texts(&poll(&mut t).0), events(24..25));
}

#[test]
fn batches_stay_near_batch_bytes_over_a_large_file() {
    let s = setup();
    append(&s.live, 0..5000);
    let line = event(0).len() as u64 + 1;
    let cfg = FileSourceConfig {
        batch_bytes: 10_000,
        ..s.config()
    };
    let mut t = FileTailer::open(cfg).unwrap();
    let mut all = Vec::new();
    let mut biggest = 0;
    t.poll(&mut |lines: &[Line<'_>]| {
        biggest = biggest.max(lines.iter().map(|l| l.bytes.len() as u64 + 1).sum::<u64>());
        all.extend(lines.iter().map(seen));
        Ok(())
    })
    .unwrap();
    assert_eq!(texts(&all), events(0..5000));
    assert!(biggest < 10_000 + line, "{biggest}");
}
