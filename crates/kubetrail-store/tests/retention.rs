//! Retention over real partitions: a write-ahead log of events whose times the test controls, converted by
//! the columnar writer, planned and applied at a fixed `now`, then verified.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use jiff::{SignedDuration, Timestamp};
use kubetrail_gen::{Config, Generator};
use kubetrail_store::integrity::{self, ProblemKind};
use kubetrail_store::retention::{
    self, Class, ClassMatch, Hold, Pin, Plan, RetainedBy, RetentionLock, RetentionPolicy,
};
use kubetrail_store::{
    ColumnarOptions, ColumnarWriter, EventRecord, Signer, Wal, WalOptions, list_files, verify_store,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const NOW: &str = "2027-06-01T00:00:00Z";
const KCM: &str = "system:kube-controller-manager";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn days_ago(days: i64) -> Timestamp {
    now() - SignedDuration::from_hours(24 * days)
}

struct Data {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    wal: Arc<Wal>,
    signer: Signer,
}

impl Data {
    fn new() -> Data {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let opts = WalOptions {
            fsync: false,
            budget_bytes: 1 << 40,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(&dir.join("wal"), opts).unwrap();
        Data {
            _tmp: tmp,
            dir,
            wal: Arc::new(wal),
            signer: Signer::from_seed([9; 32]),
        }
    }

    /// Appends event lines (cluster `prod`), converts them into Parquet and signs a checkpoint.
    fn store(&self, lines: &[String]) {
        let mut records = Vec::new();
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let rec = EventRecord {
                received_us: now().as_microsecond(),
                cluster: "prod".into(),
                source: "test".into(),
                audit_id: v["auditID"].as_str().unwrap().into(),
                stage: v["stage"].as_str().unwrap().into(),
                variant: "".into(),
                event: line.as_str().into(),
            };
            let mut bytes = Vec::new();
            rec.encode(&mut bytes);
            records.push(bytes);
        }
        for chunk in records.chunks(1000) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            self.wal.append(&refs).unwrap();
        }
        let mut w = ColumnarWriter::open(
            &self.dir.join("store"),
            self.wal.clone(),
            ColumnarOptions::default(),
        )
        .unwrap();
        w.flush().unwrap();
        self.checkpoint();
    }

    fn checkpoint(&self) {
        let files = integrity::parquet_files(&self.dir).unwrap();
        integrity::write_checkpoint(&self.dir, &self.signer, &self.wal, &files, &[]).unwrap();
    }

    /// Every file, relative to the data directory, with the start of its hour.
    fn files(&self) -> Vec<(PathBuf, Timestamp)> {
        list_files(&self.dir.join("store"), None, None, None)
            .unwrap()
            .into_iter()
            .map(|f| {
                (
                    f.path.strip_prefix(&self.dir).unwrap().to_path_buf(),
                    f.hour,
                )
            })
            .collect()
    }

    fn plan(&self, policy: &RetentionPolicy) -> Plan {
        retention::plan(&self.dir, policy, now()).unwrap()
    }

    fn apply(&self, plan: &Plan) -> retention::Applied {
        let lock = RetentionLock::acquire(&self.dir).unwrap();
        retention::apply(&lock, plan, &self.signer, Some(&self.wal)).unwrap()
    }

    /// The partition file holding the events of the hour of `t`.
    fn file_of(&self, t: Timestamp) -> PathBuf {
        let hour = t.as_second().div_euclid(3600) * 3600;
        let found: Vec<PathBuf> = self
            .files()
            .into_iter()
            .filter(|(_, h)| h.as_second() == hour)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(found.len(), 1, "one file for the hour of {t}: {found:?}");
        found.into_iter().next().unwrap()
    }
}

/// A ResponseComplete event at `t`.
fn event(t: Timestamp, user: &str, verb: &str, resource: &str, id: &str) -> String {
    serde_json::json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": id,
        "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/{resource}"),
        "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.1"],
        "objectRef": {"resource": resource, "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": t.to_string(),
        "stageTimestamp": t.to_string(),
    })
    .to_string()
}

fn paths(plan: &Plan) -> BTreeSet<PathBuf> {
    plan.delete.iter().map(|d| d.path.clone()).collect()
}

fn kcm_class(days: u32) -> Class {
    Class {
        name: "kcm-watch".into(),
        days,
        matches: ClassMatch {
            users: vec![KCM.into()],
            verbs: vec!["watch".into()],
            ..ClassMatch::default()
        },
    }
}

#[test]
fn the_default_policy_deletes_exactly_what_is_older_than_400_days() {
    let data = Data::new();
    // 800 generated events over ~470 days, ending ~30 days before `now`: about one file each.
    let span_s = 470.0 * 86_400.0;
    let mut generator = Generator::new(Config {
        start: days_ago(500),
        rate: 800.0 / span_s,
        ..Config::default()
    });
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..800 {
        buf.clear();
        generator.next_into(&mut buf);
        lines.push(String::from_utf8(buf.clone()).unwrap());
    }
    // And the boundary: the hour ending exactly 400 days ago goes, the one starting then stays.
    let edge_gone = days_ago(400) - SignedDuration::from_secs(1);
    let edge_kept = days_ago(400);
    lines.push(event(edge_gone, "alice", "get", "pods", "edge-gone"));
    lines.push(event(edge_kept, "alice", "get", "pods", "edge-kept"));
    data.store(&lines);

    let files = data.files();
    let cutoff = days_ago(400);
    let expected: BTreeSet<PathBuf> = files
        .iter()
        .filter(|(_, h)| *h + SignedDuration::from_hours(1) <= cutoff)
        .map(|(p, _)| p.clone())
        .collect();
    assert!(expected.len() > 100, "{} old files", expected.len());
    assert!(files.len() - expected.len() > 500, "{} files", files.len());

    let plan = data.plan(&RetentionPolicy::default());
    assert_eq!(paths(&plan), expected);
    assert!(
        plan.delete
            .iter()
            .all(|d| d.expiry.by == RetainedBy::Default
                && d.expiry.days == 400
                && d.expiry.at <= now())
    );
    assert!(paths(&plan).contains(&data.file_of(edge_gone)));
    assert!(!paths(&plan).contains(&data.file_of(edge_kept)));
    assert_eq!(plan.keep_count as usize, files.len() - expected.len());
    assert!(plan.kept_by_hold.is_empty() && plan.unreadable.is_empty());
    // Only files old enough to have expired are read.
    assert_eq!(plan.files_read as usize, expected.len());

    // Every row of a deleted file is older than 400 days; every kept file has a row that is not.
    for (path, _) in &files {
        let times = row_times(&data.dir.join(path));
        if expected.contains(path) {
            assert!(times.iter().all(|&t| t < cutoff.as_microsecond()));
        } else {
            assert!(
                times
                    .iter()
                    .any(|&t| t >= cutoff.as_microsecond() - 3_600_000_000)
            );
        }
    }
}

fn row_times(path: &Path) -> Vec<i64> {
    let file = fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let col = b.column_by_name("time").unwrap();
        out.extend(
            col.as_primitive::<TimestampMicrosecondType>()
                .values()
                .iter(),
        );
    }
    out
}

#[test]
fn a_short_class_deletes_files_holding_only_its_rows() {
    let data = Data::new();
    let t = |days, h: i64| days_ago(days) + SignedDuration::from_hours(h);
    let lines = vec![
        // 40 days old: only controller-manager watches.
        event(t(40, 1), KCM, "watch", "pods", "a1"),
        event(
            t(40, 1) + SignedDuration::from_secs(5),
            KCM,
            "watch",
            "nodes",
            "a2",
        ),
        // 40 days old: watches and one person's read.
        event(t(40, 3), KCM, "watch", "pods", "b1"),
        event(
            t(40, 3) + SignedDuration::from_secs(5),
            "alice",
            "get",
            "secrets",
            "b2",
        ),
        // 40 days old: the controller-manager, but not watching.
        event(t(40, 5), KCM, "get", "pods", "c1"),
        // 20 days old: only watches, not yet 30 days.
        event(t(20, 1), KCM, "watch", "pods", "d1"),
        // 401 days old: a person's read, past the default.
        event(t(401, 1), "alice", "get", "pods", "e1"),
    ];
    data.store(&lines);
    let policy = RetentionPolicy {
        classes: vec![kcm_class(30)],
        ..RetentionPolicy::default()
    };
    let plan = data.plan(&policy);
    assert_eq!(
        paths(&plan),
        BTreeSet::from([data.file_of(t(40, 1)), data.file_of(t(401, 1))])
    );
    let by = |p: PathBuf| {
        plan.delete
            .iter()
            .find(|d| d.path == p)
            .map(|d| (d.expiry.by.clone(), d.expiry.days))
            .unwrap()
    };
    assert_eq!(
        by(data.file_of(t(40, 1))),
        (RetainedBy::Class("kcm-watch".into()), 30)
    );
    assert_eq!(by(data.file_of(t(401, 1))), (RetainedBy::Default, 400));
    assert_eq!(plan.keep_count, 3);

    // A class longer than the default keeps its rows longer; a row matching two classes gets the longer.
    let policy = RetentionPolicy {
        classes: vec![
            kcm_class(30),
            Class {
                name: "alice".into(),
                days: 800,
                matches: ClassMatch {
                    users: vec!["ali*".into()],
                    ..ClassMatch::default()
                },
            },
        ],
        ..RetentionPolicy::default()
    };
    assert_eq!(
        paths(&data.plan(&policy)),
        BTreeSet::from([data.file_of(t(40, 1))])
    );
}

#[test]
fn holds_keep_expired_files_until_released() {
    let data = Data::new();
    let t = |days, h: i64| days_ago(days) + SignedDuration::from_hours(h);
    data.store(&[
        event(t(450, 1), "alice", "get", "secrets", "a"),
        event(t(450, 2), "bob", "get", "secrets", "b"),
        event(t(450, 3), "mallory", "create", "pods", "c"),
        event(t(420, 1), "alice", "get", "pods", "d"),
        event(t(300, 1), "alice", "get", "pods", "e"),
    ]);
    let everything = data.plan(&RetentionPolicy::default());
    assert_eq!(everything.delete.len(), 4);

    // By time range: the hours of days 450 (all three) are held, day 420 is not.
    let hold = Hold {
        id: "CASE-1".into(),
        reason: "litigation".into(),
        created: now(),
        since: Some(t(451, 0)),
        until: Some(t(449, 0)),
        users: vec![],
        clusters: vec![],
    };
    // By identity: only the file with mallory's (impersonated or not) events.
    let by_user = Hold {
        id: "IR-2".into(),
        users: vec!["mallory".into()],
        since: None,
        until: None,
        ..hold.clone()
    };
    // Of another cluster: holds nothing here.
    let other_cluster = Hold {
        id: "IR-3".into(),
        clusters: vec!["staging".into()],
        since: None,
        until: None,
        ..hold.clone()
    };

    let policy = RetentionPolicy {
        holds: vec![hold.clone(), by_user.clone(), other_cluster],
        ..RetentionPolicy::default()
    };
    let plan = data.plan(&policy);
    assert_eq!(paths(&plan), BTreeSet::from([data.file_of(t(420, 1))]));
    let held: Vec<(PathBuf, Vec<String>)> = plan
        .kept_by_hold
        .iter()
        .map(|h| (h.path.clone(), h.holds.clone()))
        .collect();
    assert_eq!(
        held,
        [
            (data.file_of(t(450, 1)), vec!["CASE-1".to_string()]),
            (data.file_of(t(450, 2)), vec!["CASE-1".to_string()]),
            (
                data.file_of(t(450, 3)),
                vec!["CASE-1".to_string(), "IR-2".to_string()]
            ),
        ]
    );
    assert_eq!(plan.keep_count, 4);

    // Holds added and released through the holds file, each change logged with who and when.
    retention::add_hold(&data.dir, by_user.clone(), "carol", now()).unwrap();
    let err = retention::add_hold(&data.dir, by_user.clone(), "carol", now()).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let loaded = RetentionPolicy::load(&data.dir).unwrap();
    assert_eq!(loaded.holds.len(), 1);
    let plan = data.plan(&loaded);
    assert_eq!(plan.delete.len(), 3);
    assert_eq!(plan.kept_by_hold[0].path, data.file_of(t(450, 3)));

    let later = now() + SignedDuration::from_hours(2);
    retention::release_hold(&data.dir, "IR-2", "dave", later).unwrap();
    assert!(retention::release_hold(&data.dir, "IR-2", "dave", later).is_err());
    let loaded = RetentionPolicy::load(&data.dir).unwrap();
    assert!(loaded.holds.is_empty());
    assert_eq!(data.plan(&loaded).delete.len(), 4);
    let log = retention::read_hold_log(&data.dir).unwrap();
    let summary: Vec<(&str, &str, &str, Timestamp)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.id.as_str(), e.by.as_str(), e.at))
        .collect();
    assert_eq!(
        summary,
        [
            ("add", "IR-2", "carol", now()),
            ("release", "IR-2", "dave", later)
        ]
    );
}

#[test]
fn pins_keep_the_events_alerts_point_at() {
    let data = Data::new();
    let t = |days, h: i64| days_ago(days) + SignedDuration::from_hours(h);
    data.store(&[
        event(t(450, 1), "mallory", "create", "pods", "alerted"),
        event(t(450, 2), "alice", "get", "pods", "plain"),
        event(t(430, 1), "alice", "get", "pods", "in-range"),
        event(t(40, 1), KCM, "watch", "pods", "watch"),
    ]);
    fs::write(
        data.dir.join(retention::PINS_FILE),
        format!(
            "{}\n\n{}\n",
            r#"{"audit_id":"alerted","days":1000,"alert":"A-17"}"#,
            serde_json::json!({"since": t(431, 0).to_string(), "until": t(429, 0).to_string(), "days": 500}),
        ),
    )
    .unwrap();
    let mut policy = RetentionPolicy::load(&data.dir).unwrap();
    assert_eq!(policy.pins.len(), 2);
    policy.classes = vec![kcm_class(30)];
    let plan = data.plan(&policy);
    assert_eq!(
        paths(&plan),
        BTreeSet::from([data.file_of(t(450, 2)), data.file_of(t(40, 1))])
    );

    // A pin that has itself expired no longer keeps anything.
    let policy = RetentionPolicy {
        pins: vec![Pin {
            audit_id: Some("alerted".into()),
            since: None,
            until: None,
            days: 440,
            alert: None,
        }],
        ..RetentionPolicy::default()
    };
    let plan = data.plan(&policy);
    let d = plan
        .delete
        .iter()
        .find(|d| d.path == data.file_of(t(450, 1)))
        .unwrap();
    assert_eq!(
        (d.expiry.by.clone(), d.expiry.days),
        (RetainedBy::Pin("auditID alerted".into()), 440)
    );

    // A pin file that is not pins is an error naming the line.
    fs::write(data.dir.join(retention::PINS_FILE), "{\"days\":5}\n").unwrap();
    let err = RetentionPolicy::load(&data.dir).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("neither"), "{err}");
}

#[test]
fn applied_deletions_verify_and_unrecorded_ones_do_not() {
    let data = Data::new();
    let mut lines = Vec::new();
    for day in (10..=480).step_by(10) {
        for h in 0..3 {
            let t = days_ago(day) + SignedDuration::from_hours(h);
            lines.push(event(t, "alice", "get", "pods", &format!("{day}-{h}")));
        }
    }
    data.store(&lines);
    let before = data.files();
    assert_eq!(before.len(), 48 * 3);
    let key = data.signer.public_key();
    assert!(verify_store(&data.dir, &key).unwrap().is_intact());

    let plan = data.plan(&RetentionPolicy::default());
    assert_eq!(plan.delete.len(), 8 * 3, "days 410 to 480");
    let applied = data.apply(&plan);
    assert_eq!(applied.deleted.len(), 24);
    assert_eq!(applied.bytes, plan.delete_bytes());
    assert!(applied.skipped.is_empty());
    // Each day's date directory went with its hours.
    assert_eq!(applied.dirs_removed, 24 + 8);
    for d in &plan.delete {
        assert!(!data.dir.join(&d.path).exists());
        assert!(!data.dir.join(&d.path).parent().unwrap().exists());
    }
    assert_eq!(data.files().len(), 40 * 3);

    let cp = fs::read(applied.checkpoint.as_ref().unwrap()).unwrap();
    let cp = integrity::read_checkpoint(&cp, &key).unwrap();
    assert_eq!(cp.deletions.len(), 24);
    assert!(cp.deletions.iter().all(|d| d.reason() == "retention"));
    assert_eq!(cp.files_count, 40 * 3);
    assert!(
        !cp.files_full && cp.files.is_empty(),
        "a delta: nothing added"
    );

    let report = verify_store(&data.dir, &key).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.deleted_by_retention, 24);

    // Nothing more has expired; a second apply does nothing.
    let again = data.plan(&RetentionPolicy::default());
    assert!(again.delete.is_empty());
    assert_eq!(data.apply(&again).checkpoint, None);

    // A file deleted without `apply` is missing.
    let victim = data.file_of(days_ago(400));
    fs::remove_file(data.dir.join(&victim)).unwrap();
    let report = verify_store(&data.dir, &key).unwrap();
    let first = report.first_problem().unwrap();
    assert_eq!(first.kind, ProblemKind::Missing);
    assert_eq!(Path::new(&first.item), victim);
}

#[test]
fn a_plan_applied_after_its_files_changed_skips_them() {
    let data = Data::new();
    data.store(&[
        event(days_ago(450), "alice", "get", "pods", "a"),
        event(days_ago(460), "alice", "get", "pods", "b"),
    ]);
    let plan = data.plan(&RetentionPolicy::default());
    assert_eq!(plan.delete.len(), 2);
    fs::remove_file(data.dir.join(&plan.delete[0].path)).unwrap();
    let applied = data.apply(&plan);
    assert_eq!(applied.skipped, [plan.delete[0].path.clone()]);
    assert_eq!(applied.deleted.len(), 1);
}
