//! Retention: which Parquet partitions have expired, legal holds that keep them anyway, and deleting the
//! expired ones with each deletion recorded in a signed checkpoint first.
//!
//! This module owns the retention policy (`DATA/retention.yaml`), the holds managed from the command line
//! (`DATA/retention-holds.json`, with every change appended to `DATA/retention-holds.log`), the pins that
//! alerts leave (`DATA/retention-pins.jsonl`), [`plan`] and [`apply`]. It never deletes a write-ahead log
//! segment (the collector releases those once converted) and never rewrites a Parquet file: retention deletes
//! whole files.
//!
//! # How long a partition is kept
//!
//! Every event (row) gets a retention in days:
//!
//! - the longest `days` of the [`Class`]es it matches, or `default_days` (400) when it matches none: a class
//!   can shorten noisy events (the controller-manager's watches) or lengthen important ones;
//! - raised to the `days` of every [`Pin`] that matches it (alerts pin the events they are about).
//!
//! A partition file mixes events of every class, and its rows are never rewritten, so a file is kept as long
//! as its longest-kept row: it expires when its hour has ended at least that many days ago (`hour + 1h +
//! days <= now`). A file holding only 30-day rows goes after 30 days; one that also holds a single
//! default-class row stays 400. Nothing that matches no class is ever deleted before `default_days`, which
//! may not be under 365: a full year always remains.
//!
//! The rows are read from the file itself (the `time`, `cluster`, `audit_id`, `verb`, `user`,
//! `impersonated_user`, `resource` and `namespace` columns), and only for files older than the shortest
//! retention in the policy (younger ones cannot have expired); reading stops at the first row that keeps the
//! file. A file that cannot be read is kept and reported.
//!
//! # Legal holds
//!
//! A [`Hold`] names a range of event times and, optionally, users (the authenticated user or the impersonated
//! one) and clusters. An expired file any of whose rows a hold matches is kept and reported with the hold. A
//! released hold is removed from the holds file; the files it kept come back under normal retention. Holds
//! declared in `retention.yaml` are released by editing it.
//!
//! # Deleting
//!
//! [`apply`] first writes a signed checkpoint whose `deletions` name every file it is about to delete (so
//! `verify` tells retention from tampering), then deletes them, fsyncs their directories and removes partition
//! directories left empty. Take the [`RetentionLock`] before loading the policy and planning, so that a hold
//! added meanwhile waits for the deletion or is seen by the plan.
//!
//! Everything takes `now` as a parameter.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampMicrosecondType;
use jiff::{SignedDuration, Timestamp};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::columnar::{self, ColumnarError, PartitionFile};
use crate::integrity::{self, Deletion, IntegrityError, Signer};
use crate::wal::Wal;

/// The policy file under the data directory.
pub const POLICY_FILE: &str = "retention.yaml";
/// Holds added with `kubetrail retention hold add` (a JSON array, rewritten atomically).
pub const HOLDS_FILE: &str = "retention-holds.json";
/// Every hold added or released: who and when (JSON lines, append-only).
pub const HOLDS_LOG: &str = "retention-holds.log";
/// Pins: events kept longer because an alert points at them (JSON lines of [`Pin`]).
pub const PINS_FILE: &str = "retention-pins.jsonl";
/// Serialises appliers with hold changes.
pub const LOCK_FILE: &str = ".retention.lock";

/// The default retention: a year and a month, so a full year always remains.
pub const DEFAULT_DAYS: u32 = 400;
/// `default_days` may not be shorter than a year.
pub const MIN_DEFAULT_DAYS: u32 = 365;

const DAY: SignedDuration = SignedDuration::from_hours(24);
#[cfg(test)]
const HOUR: SignedDuration = SignedDuration::from_hours(1);
/// Rows decoded at once: small, because reading stops at the first row that keeps the file.
const READ_BATCH_ROWS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("failed to access `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid retention file `{}`: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Hold(String),
    #[error(transparent)]
    Columnar(#[from] ColumnarError),
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RetentionError + '_ {
    move |source| RetentionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---- the policy -----------------------------------------------------------------------------------------

/// What is kept how long. `DATA/retention.yaml` holds `default_days`, `classes` and `holds`;
/// [`RetentionPolicy::load`] adds the holds of the holds file and the pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Days an event that matches no class is kept (at least 365).
    #[serde(default = "default_days")]
    pub default_days: u32,
    #[serde(default)]
    pub classes: Vec<Class>,
    #[serde(default)]
    pub holds: Vec<Hold>,
    /// From the pins file, never from the YAML.
    #[serde(skip)]
    pub pins: Vec<Pin>,
}

fn default_days() -> u32 {
    DEFAULT_DAYS
}

impl Default for RetentionPolicy {
    fn default() -> RetentionPolicy {
        RetentionPolicy {
            default_days: DEFAULT_DAYS,
            classes: Vec::new(),
            holds: Vec::new(),
            pins: Vec::new(),
        }
    }
}

/// Events kept `days` days: those matching every field of `match` that is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    pub name: String,
    pub days: u32,
    #[serde(rename = "match")]
    pub matches: ClassMatch,
}

/// Each list matches when it holds the event's value (exactly, or by prefix when an entry ends with `*`); an
/// absent or empty list matches anything. `users` is the authenticated user (as audit policies match it),
/// `namespaces` has `""` for cluster-scoped and non-resource requests, `resources` has `""` for non-resource
/// requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

impl ClassMatch {
    fn is_empty(&self) -> bool {
        self.clusters.is_empty()
            && self.users.is_empty()
            && self.verbs.is_empty()
            && self.resources.is_empty()
            && self.namespaces.is_empty()
    }

    fn lists(&self) -> [(&'static str, &[String]); 5] {
        [
            ("clusters", &self.clusters),
            ("users", &self.users),
            ("verbs", &self.verbs),
            ("resources", &self.resources),
            ("namespaces", &self.namespaces),
        ]
    }
}

/// A legal hold: files holding events in [`since`, `until`] (open ends when absent) of the given users and
/// clusters (any when empty) are never deleted while the hold exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub id: String,
    pub reason: String,
    #[serde(with = "rfc3339")]
    pub created: Timestamp,
    #[serde(
        default,
        with = "rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Timestamp>,
    #[serde(
        default,
        with = "rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<Timestamp>,
    /// Matched against the authenticated and the impersonated user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
}

/// Events kept at least `days` days because an alert points at them: one event by `audit_id`, or every
/// event in [`since`, `until`], or the events of that request in that range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
    #[serde(
        default,
        with = "rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Timestamp>,
    #[serde(
        default,
        with = "rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<Timestamp>,
    pub days: u32,
    /// The alert that pinned it, for the plan's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

impl Pin {
    fn describe(&self) -> String {
        match (&self.alert, &self.audit_id) {
            (Some(a), _) => format!("alert {a}"),
            (None, Some(id)) => format!("auditID {id}"),
            (None, None) => format!(
                "{} to {}",
                self.since.map_or("the beginning".into(), |t| t.to_string()),
                self.until.map_or("now".into(), |t| t.to_string())
            ),
        }
    }
}

impl RetentionPolicy {
    /// The policy of `data_dir`: `retention.yaml` (the defaults when absent), plus the holds of the holds
    /// file and the pins, validated.
    pub fn load(data_dir: &Path) -> Result<RetentionPolicy, RetentionError> {
        let path = data_dir.join(POLICY_FILE);
        let mut policy = match fs::read_to_string(&path) {
            Ok(text) => {
                RetentionPolicy::from_yaml(&text).map_err(|reason| RetentionError::Invalid {
                    path: path.clone(),
                    reason,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => RetentionPolicy::default(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let yaml_holds: HashSet<String> = policy.holds.iter().map(|h| h.id.clone()).collect();
        let managed = read_holds(data_dir)?;
        if let Some(dup) = managed.iter().find(|h| yaml_holds.contains(&h.id)) {
            return Err(RetentionError::Invalid {
                path: data_dir.join(HOLDS_FILE),
                reason: format!(
                    "hold `{}` is also declared in `{POLICY_FILE}`: rename one of them",
                    dup.id
                ),
            });
        }
        policy.holds.extend(managed);
        policy.pins = read_pins(data_dir)?;
        policy
            .validate()
            .map_err(|reason| RetentionError::Invalid {
                path: path.clone(),
                reason,
            })?;
        Ok(policy)
    }

    /// Parses (strictly: unknown fields are errors) and validates the YAML of `retention.yaml`.
    pub fn from_yaml(text: &str) -> Result<RetentionPolicy, String> {
        let policy: RetentionPolicy = if text.trim().is_empty() {
            RetentionPolicy::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| e.to_string())?
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what serde cannot: a year at least by default, unique names, lists that can match.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_days < MIN_DEFAULT_DAYS {
            return Err(format!(
                "default_days {} keeps less than a year: use at least {MIN_DEFAULT_DAYS} (the default is \
                 {DEFAULT_DAYS}), and a class to keep chosen noisy events shorter",
                self.default_days
            ));
        }
        let mut names = HashSet::new();
        for c in &self.classes {
            if c.name.trim().is_empty() {
                return Err("a class has an empty name".into());
            }
            if !names.insert(c.name.as_str()) {
                return Err(format!("class `{}` is declared twice", c.name));
            }
            if c.days == 0 {
                return Err(format!("class `{}`: days must be at least 1", c.name));
            }
            if c.matches.is_empty() {
                return Err(format!(
                    "class `{}` matches every event: give at least one of clusters, users, verbs, resources, \
                     namespaces (or change default_days)",
                    c.name
                ));
            }
            for (field, list) in c.matches.lists() {
                check_patterns(list).map_err(|e| format!("class `{}`: {field}: {e}", c.name))?;
            }
        }
        let mut ids = HashSet::new();
        for h in &self.holds {
            validate_hold(h)?;
            if !ids.insert(h.id.as_str()) {
                return Err(format!("hold `{}` is declared twice", h.id));
            }
        }
        for p in &self.pins {
            validate_pin(p)?;
        }
        Ok(())
    }

    /// The shortest retention any event can have: files younger than this cannot have expired.
    pub fn min_days(&self) -> u32 {
        self.classes
            .iter()
            .map(|c| c.days)
            .chain([self.default_days])
            .min()
            .unwrap_or(self.default_days)
    }
}

fn check_patterns(list: &[String]) -> Result<(), String> {
    for p in list {
        if p.find('*').is_some_and(|i| i + 1 != p.len()) {
            return Err(format!(
                "`{p}`: `*` may only end a pattern (a prefix match)"
            ));
        }
    }
    Ok(())
}

fn validate_hold(h: &Hold) -> Result<(), String> {
    let ok_id = !h.id.is_empty()
        && h.id.len() <= 128
        && h.id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-/".contains(&b));
    if !ok_id {
        return Err(format!(
            "hold id `{}`: use 1 to 128 letters, digits, `.`, `_`, `:`, `-` or `/`",
            h.id
        ));
    }
    if h.reason.trim().is_empty() {
        return Err(format!(
            "hold `{}` has no reason: say why (a case number)",
            h.id
        ));
    }
    if let (Some(s), Some(u)) = (h.since, h.until)
        && s > u
    {
        return Err(format!("hold `{}`: since {s} is after until {u}", h.id));
    }
    check_patterns(&h.users).map_err(|e| format!("hold `{}`: users: {e}", h.id))?;
    check_patterns(&h.clusters).map_err(|e| format!("hold `{}`: clusters: {e}", h.id))
}

fn validate_pin(p: &Pin) -> Result<(), String> {
    if p.days == 0 {
        return Err(format!("pin `{}`: days must be at least 1", p.describe()));
    }
    if p.audit_id.is_none() && p.since.is_none() && p.until.is_none() {
        return Err(format!(
            "a pin of {} days names neither an audit_id nor a time range",
            p.days
        ));
    }
    if let (Some(s), Some(u)) = (p.since, p.until)
        && s > u
    {
        return Err(format!(
            "pin `{}`: since {s} is after until {u}",
            p.describe()
        ));
    }
    Ok(())
}

fn pattern_match(list: &[String], value: &str) -> bool {
    list.is_empty()
        || list.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => p == value,
        })
}

fn in_range(t_us: i64, since: Option<Timestamp>, until: Option<Timestamp>) -> bool {
    since.is_none_or(|s| t_us >= s.as_microsecond())
        && until.is_none_or(|u| t_us <= u.as_microsecond())
}

/// Whether [`since`, `until`] overlaps the hour starting at `hour`.
/// Whether the time a file's rows may have (its hour, or its date for a day file) overlaps [since, until].
fn overlaps_span(f: &PartitionFile, since: Option<Timestamp>, until: Option<Timestamp>) -> bool {
    let start = f.hour.as_microsecond();
    let end = f.end().as_microsecond() - 1;
    since.is_none_or(|s| s.as_microsecond() <= end)
        && until.is_none_or(|u| u.as_microsecond() >= start)
}

#[cfg(test)]
fn overlaps_hour(hour: Timestamp, since: Option<Timestamp>, until: Option<Timestamp>) -> bool {
    let start = hour.as_microsecond();
    let end = start + HOUR.as_micros() as i64 - 1;
    since.is_none_or(|s| s.as_microsecond() <= end)
        && until.is_none_or(|u| u.as_microsecond() >= start)
}

/// The pins of `DATA/retention-pins.jsonl` (none when absent); blank lines are skipped.
pub fn read_pins(data_dir: &Path) -> Result<Vec<Pin>, RetentionError> {
    let path = data_dir.join(PINS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut pins = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let pin: Pin = serde_json::from_str(line).map_err(|e| RetentionError::Invalid {
            path: path.clone(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        validate_pin(&pin).map_err(|reason| RetentionError::Invalid {
            path: path.clone(),
            reason: format!("line {}: {reason}", i + 1),
        })?;
        pins.push(pin);
    }
    Ok(pins)
}

// ---- holds managed from the command line ----------------------------------------------------------------

/// Held while applying retention or changing holds: a hold added during an apply waits for it, and an apply
/// that loads its policy under the lock sees every hold added before.
#[derive(Debug)]
pub struct RetentionLock {
    data_dir: PathBuf,
    _file: File,
}

impl RetentionLock {
    /// Waits for and takes the lock of `data_dir` (`DATA/.retention.lock`).
    pub fn acquire(data_dir: &Path) -> Result<RetentionLock, RetentionError> {
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        let path = data_dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.lock().map_err(io_err(&path))?;
        Ok(RetentionLock {
            data_dir: data_dir.to_path_buf(),
            _file: file,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// One line of the holds log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldLogEntry {
    /// `add` or `release`.
    pub action: String,
    pub id: String,
    /// Who did it (the OS user).
    pub by: String,
    #[serde(with = "rfc3339")]
    pub at: Timestamp,
    pub hold: Hold,
}

/// The holds added from the command line (none when the file is absent).
pub fn read_holds(data_dir: &Path) -> Result<Vec<Hold>, RetentionError> {
    let path = data_dir.join(HOLDS_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RetentionError::Invalid {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Every entry of the holds log, oldest first.
pub fn read_hold_log(data_dir: &Path) -> Result<Vec<HoldLogEntry>, RetentionError> {
    let path = data_dir.join(HOLDS_LOG);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| RetentionError::Invalid {
                path: path.clone(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Adds a hold (its `created` is set to `now`), logging who added it first. Its id must be new.
pub fn add_hold(
    data_dir: &Path,
    mut hold: Hold,
    by: &str,
    now: Timestamp,
) -> Result<Hold, RetentionError> {
    let _lock = RetentionLock::acquire(data_dir)?;
    hold.created = now;
    validate_hold(&hold).map_err(RetentionError::Hold)?;
    // Loading the whole policy checks the id against the YAML holds, and that the policy stays valid.
    let policy = RetentionPolicy::load(data_dir)?;
    if policy.holds.iter().any(|h| h.id == hold.id) {
        return Err(RetentionError::Hold(format!(
            "a hold `{}` already exists: `kubetrail retention hold list` shows it",
            hold.id
        )));
    }
    let mut holds = read_holds(data_dir)?;
    log_hold(data_dir, "add", &hold, by, now)?;
    holds.push(hold.clone());
    write_holds(data_dir, &holds)?;
    Ok(hold)
}

/// Releases the hold `id` (logging who released it first); the files it kept come back under normal
/// retention.
pub fn release_hold(
    data_dir: &Path,
    id: &str,
    by: &str,
    now: Timestamp,
) -> Result<Hold, RetentionError> {
    let _lock = RetentionLock::acquire(data_dir)?;
    let mut holds = read_holds(data_dir)?;
    let Some(i) = holds.iter().position(|h| h.id == id) else {
        let yaml = RetentionPolicy::load(data_dir)
            .map(|p| p.holds.iter().any(|h| h.id == id))
            .unwrap_or(false);
        return Err(RetentionError::Hold(if yaml {
            format!(
                "hold `{id}` is declared in `{}`: remove it there",
                data_dir.join(POLICY_FILE).display()
            )
        } else {
            format!("no hold `{id}`: `kubetrail retention hold list` shows the holds")
        }));
    };
    let hold = holds.remove(i);
    log_hold(data_dir, "release", &hold, by, now)?;
    write_holds(data_dir, &holds)?;
    Ok(hold)
}

fn log_hold(
    data_dir: &Path,
    action: &str,
    hold: &Hold,
    by: &str,
    at: Timestamp,
) -> Result<(), RetentionError> {
    let entry = HoldLogEntry {
        action: action.into(),
        id: hold.id.clone(),
        by: by.into(),
        at,
        hold: hold.clone(),
    };
    let mut line = serde_json::to_vec(&entry).expect("log entries serialise");
    line.push(b'\n');
    let path = data_dir.join(HOLDS_LOG);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(&line)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&path))?;
    sync_dir(data_dir)
}

fn write_holds(data_dir: &Path, holds: &[Hold]) -> Result<(), RetentionError> {
    let path = data_dir.join(HOLDS_FILE);
    let tmp = data_dir.join(format!(".{HOLDS_FILE}.tmp"));
    let mut bytes = serde_json::to_vec_pretty(holds).expect("holds serialise");
    bytes.push(b'\n');
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(data_dir)
}

fn sync_dir(dir: &Path) -> Result<(), RetentionError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

// ---- the plan -------------------------------------------------------------------------------------------

/// What decided a file's retention: its longest-kept row's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetainedBy {
    /// A row that matches no class.
    Default,
    Class(String),
    /// A pin, described (`alert A`, `auditID X`, or its range).
    Pin(String),
}

impl fmt::Display for RetainedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetainedBy::Default => f.write_str("default"),
            RetainedBy::Class(c) => write!(f, "class `{c}`"),
            RetainedBy::Pin(p) => write!(f, "pin `{p}`"),
        }
    }
}

/// When a file expires, and why then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub by: RetainedBy,
    pub days: u32,
    /// The end of the file's hour plus `days`.
    pub at: Timestamp,
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} days, expired {}", self.by, self.days, self.at)
    }
}

/// A file the plan deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDeletion {
    /// Relative to the data directory (`store/cluster=../date=../hour=../<seqs>.parquet`).
    pub path: PathBuf,
    pub cluster: String,
    pub hour: Timestamp,
    pub bytes: u64,
    pub expiry: Expiry,
}

/// An expired file that holds keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFile {
    pub path: PathBuf,
    pub cluster: String,
    pub hour: Timestamp,
    pub bytes: u64,
    pub expiry: Expiry,
    /// The ids of the holds that match some row of it.
    pub holds: Vec<String>,
}

/// A file old enough to have expired that could not be read: kept, since its rows are unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub path: PathBuf,
    pub bytes: u64,
    pub error: String,
}

/// What retention would do at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub data_dir: PathBuf,
    pub now: Timestamp,
    pub delete: Vec<PlannedDeletion>,
    pub kept_by_hold: Vec<HeldFile>,
    pub unreadable: Vec<Unreadable>,
    /// Files kept (held and unreadable ones included) and their bytes.
    pub keep_count: u64,
    pub keep_bytes: u64,
    /// Files whose rows were read (the others were too young to have expired).
    pub files_read: u64,
}

impl Plan {
    pub fn delete_bytes(&self) -> u64 {
        self.delete.iter().map(|d| d.bytes).sum()
    }
}

/// What one file's rows decide.
enum Verdict {
    Keep,
    Expired(Expiry),
    Held(Expiry, Vec<String>),
}

/// Decides, for every Parquet file of `DATA/store`, whether retention deletes it at `now` (see the module
/// docs). Reads only; deletes nothing.
pub fn plan(
    data_dir: &Path,
    policy: &RetentionPolicy,
    now: Timestamp,
) -> Result<Plan, RetentionError> {
    let root = data_dir.join("store");
    let files = columnar::list_files(&root, None, None, None)?;
    let rules = Rules::new(policy);
    let youngest_expirable = now
        .checked_sub(DAY * i32::try_from(policy.min_days()).unwrap_or(i32::MAX))
        .unwrap_or(Timestamp::MIN);
    let mut plan = Plan {
        data_dir: data_dir.to_path_buf(),
        now,
        delete: Vec::new(),
        kept_by_hold: Vec::new(),
        unreadable: Vec::new(),
        keep_count: 0,
        keep_bytes: 0,
        files_read: 0,
    };
    for f in files {
        let rel = f
            .path
            .strip_prefix(data_dir)
            .unwrap_or(&f.path)
            .to_path_buf();
        let hour_end = f.end();
        let verdict = if hour_end > youngest_expirable {
            Ok(Verdict::Keep)
        } else {
            plan.files_read += 1;
            rules.evaluate(&f, hour_end, now)
        };
        match verdict {
            Ok(Verdict::Expired(expiry)) => {
                plan.delete.push(PlannedDeletion {
                    path: rel,
                    cluster: f.cluster,
                    hour: f.hour,
                    bytes: f.bytes,
                    expiry,
                });
                continue;
            }
            Ok(Verdict::Keep) => {}
            Ok(Verdict::Held(expiry, holds)) => plan.kept_by_hold.push(HeldFile {
                path: rel,
                cluster: f.cluster.clone(),
                hour: f.hour,
                bytes: f.bytes,
                expiry,
                holds,
            }),
            Err(error) => plan.unreadable.push(Unreadable {
                path: rel,
                bytes: f.bytes,
                error,
            }),
        }
        plan.keep_count += 1;
        plan.keep_bytes += f.bytes;
    }
    Ok(plan)
}

/// The policy indexed for evaluating rows.
struct Rules<'p> {
    policy: &'p RetentionPolicy,
    pins_by_id: HashMap<&'p str, Vec<&'p Pin>>,
    range_pins: Vec<&'p Pin>,
}

/// The columns a row is judged on.
const COLUMNS: [&str; 8] = [
    "time",
    "cluster",
    "audit_id",
    "verb",
    "user",
    "impersonated_user",
    "resource",
    "namespace",
];

impl<'p> Rules<'p> {
    fn new(policy: &'p RetentionPolicy) -> Rules<'p> {
        let mut pins_by_id: HashMap<&str, Vec<&Pin>> = HashMap::new();
        let mut range_pins = Vec::new();
        for p in &policy.pins {
            match &p.audit_id {
                Some(id) => pins_by_id.entry(id.as_str()).or_default().push(p),
                None => range_pins.push(p),
            }
        }
        Rules {
            policy,
            pins_by_id,
            range_pins,
        }
    }

    /// Reads `f`'s rows until one keeps it past `now`; `Err` with the reason when it cannot be read.
    fn evaluate(
        &self,
        f: &PartitionFile,
        hour_end: Timestamp,
        now: Timestamp,
    ) -> Result<Verdict, String> {
        let expires = |days: u32| {
            hour_end
                .checked_add(DAY * i32::try_from(days).unwrap_or(i32::MAX))
                .unwrap_or(Timestamp::MAX)
        };
        // Holds and range pins that can match a row of this file at all.
        let holds: Vec<&Hold> = self
            .policy
            .holds
            .iter()
            .filter(|h| pattern_match(&h.clusters, &f.cluster))
            .filter(|h| overlaps_span(f, h.since, h.until))
            .collect();
        let range_pins: Vec<&Pin> = self
            .range_pins
            .iter()
            .copied()
            .filter(|p| overlaps_span(f, p.since, p.until))
            .collect();
        let mut held: BTreeSet<usize> = BTreeSet::new();
        let mut best: Option<(u32, RetainedBy)> = None;

        let file = File::open(&f.path).map_err(|e| e.to_string())?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
        let mut roots = Vec::with_capacity(COLUMNS.len());
        for name in COLUMNS {
            let i = builder
                .schema()
                .index_of(name)
                .map_err(|_| format!("no `{name}` column"))?;
            roots.push(i);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| e.to_string())?;
        for batch in reader {
            let batch = batch.map_err(|e| e.to_string())?;
            let cols = Cols::new(&batch)?;
            for row in 0..batch.num_rows() {
                let r = cols.row(row);
                let (days, by) = self.row_days(&r, &range_pins);
                if best.as_ref().is_none_or(|(d, _)| days > *d) {
                    if expires(days) > now {
                        return Ok(Verdict::Keep);
                    }
                    best = Some((days, by));
                }
                for (i, h) in holds.iter().enumerate() {
                    if !held.contains(&i)
                        && in_range(r.time, h.since, h.until)
                        && (h.users.is_empty()
                            || pattern_match(&h.users, r.user)
                            || r.impersonated.is_some_and(|u| pattern_match(&h.users, u)))
                    {
                        held.insert(i);
                    }
                }
            }
        }
        // A file without rows is kept as long as an event that matches no class.
        let (days, by) = best.unwrap_or((self.policy.default_days, RetainedBy::Default));
        let at = expires(days);
        if at > now {
            return Ok(Verdict::Keep);
        }
        let expiry = Expiry { by, days, at };
        if held.is_empty() {
            Ok(Verdict::Expired(expiry))
        } else {
            Ok(Verdict::Held(
                expiry,
                held.into_iter().map(|i| holds[i].id.clone()).collect(),
            ))
        }
    }

    /// The row's retention: its longest class (or the default), raised by its pins.
    fn row_days(&self, r: &Row<'_>, range_pins: &[&'p Pin]) -> (u32, RetainedBy) {
        let mut best: Option<(u32, &str)> = None;
        for c in &self.policy.classes {
            let m = &c.matches;
            if pattern_match(&m.clusters, r.cluster)
                && pattern_match(&m.users, r.user)
                && pattern_match(&m.verbs, r.verb)
                && pattern_match(&m.resources, r.resource)
                && pattern_match(&m.namespaces, r.namespace)
                && best.is_none_or(|(d, _)| c.days > d)
            {
                best = Some((c.days, &c.name));
            }
        }
        let (mut days, mut by) = match best {
            Some((d, name)) => (d, RetainedBy::Class(name.to_string())),
            None => (self.policy.default_days, RetainedBy::Default),
        };
        let by_id = self
            .pins_by_id
            .get(r.audit_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for p in by_id.iter().chain(range_pins) {
            if p.days > days && in_range(r.time, p.since, p.until) {
                days = p.days;
                by = RetainedBy::Pin(p.describe());
            }
        }
        (days, by)
    }
}

struct Cols<'b> {
    time: &'b arrow::array::PrimitiveArray<TimestampMicrosecondType>,
    cluster: &'b StringArray,
    audit_id: &'b StringArray,
    verb: &'b StringArray,
    user: &'b StringArray,
    impersonated: &'b StringArray,
    resource: &'b StringArray,
    namespace: &'b StringArray,
}

struct Row<'b> {
    time: i64,
    cluster: &'b str,
    audit_id: &'b str,
    verb: &'b str,
    user: &'b str,
    impersonated: Option<&'b str>,
    resource: &'b str,
    namespace: &'b str,
}

impl<'b> Cols<'b> {
    fn new(batch: &'b RecordBatch) -> Result<Cols<'b>, String> {
        let string = |name: &str| -> Result<&'b StringArray, String> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| format!("column `{name}` is not a string column"))
        };
        Ok(Cols {
            time: batch
                .column_by_name("time")
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                .ok_or("column `time` is not a timestamp column")?,
            cluster: string("cluster")?,
            audit_id: string("audit_id")?,
            verb: string("verb")?,
            user: string("user")?,
            impersonated: string("impersonated_user")?,
            resource: string("resource")?,
            namespace: string("namespace")?,
        })
    }

    fn row(&self, i: usize) -> Row<'b> {
        let s = |a: &'b StringArray| if a.is_null(i) { "" } else { a.value(i) };
        Row {
            time: self.time.value(i),
            cluster: s(self.cluster),
            audit_id: s(self.audit_id),
            verb: s(self.verb),
            user: s(self.user),
            impersonated: (!self.impersonated.is_null(i)).then(|| self.impersonated.value(i)),
            resource: s(self.resource),
            namespace: s(self.namespace),
        }
    }
}

// ---- applying -------------------------------------------------------------------------------------------

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub deleted: Vec<PlannedDeletion>,
    pub bytes: u64,
    /// Planned files gone or changed since the plan (a compaction merged them): not deleted.
    pub skipped: Vec<PathBuf>,
    /// The checkpoint recording the deletions (none when nothing was deleted).
    pub checkpoint: Option<PathBuf>,
    /// Partition directories left empty and removed.
    pub dirs_removed: u64,
}

/// Deletes the plan's files: records them as retention deletions in a signed checkpoint (over every other
/// Parquet file and the log, through `wal` when this process has it open, else read-only as
/// [`integrity::write_checkpoint_offline`] does), then deletes them, fsyncs their directories and removes
/// partition directories left empty. `lock` must have been held while the policy was loaded and the plan made.
///
/// Run it where no columnar writer works on the same partitions (the collector converts recent hours only;
/// an import of old events could write into an hour being removed) and, without `wal`, with the collector
/// stopped: an offline checkpoint may cover log records a running collector has not yet made durable.
pub fn apply(
    lock: &RetentionLock,
    plan: &Plan,
    signer: &Signer,
    wal: Option<&Wal>,
) -> Result<Applied, RetentionError> {
    let data_dir = lock.data_dir();
    if plan.data_dir != data_dir {
        return Err(RetentionError::Hold(format!(
            "the plan is for `{}`, the lock for `{}`",
            plan.data_dir.display(),
            data_dir.display()
        )));
    }
    let mut applied = Applied::default();
    let mut todo = Vec::new();
    for d in &plan.delete {
        let full = data_dir.join(&d.path);
        match fs::metadata(&full) {
            Ok(m) if m.len() == d.bytes => todo.push(d),
            Ok(_) => applied.skipped.push(d.path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => applied.skipped.push(d.path.clone()),
            Err(e) => return Err(io_err(&full)(e)),
        }
    }
    if todo.is_empty() {
        return Ok(applied);
    }

    // 1. Record.
    let gone: HashSet<&Path> = todo.iter().map(|d| d.path.as_path()).collect();
    let remaining: Vec<PathBuf> = integrity::parquet_files(data_dir)?
        .into_iter()
        .filter(|p| !gone.contains(p.as_path()))
        .collect();
    let deletions: Vec<Deletion> = todo
        .iter()
        .map(|d| Deletion::file_retention(&d.path))
        .collect();
    let checkpoint = match wal {
        Some(wal) => integrity::write_checkpoint(data_dir, signer, wal, &remaining, &deletions)?,
        None => integrity::write_checkpoint_offline(data_dir, signer, &remaining, &deletions)?,
    };
    applied.checkpoint = Some(checkpoint);

    // 2. Delete.
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for d in todo {
        let full = data_dir.join(&d.path);
        match fs::remove_file(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&full)(e)),
        }
        if let Some(dir) = full.parent() {
            dirs.insert(dir.to_path_buf());
        }
        applied.bytes += d.bytes;
        applied.deleted.push(d.clone());
    }
    let root = data_dir.join("store");
    for dir in dirs.iter().rev() {
        sync_dir(dir)?;
        // hour=, then date=, then cluster=: each removed when empty, never the store root.
        let mut dir = dir.as_path();
        while dir.starts_with(&root) && dir != root {
            match fs::remove_dir(dir) {
                Ok(()) => applied.dirs_removed += 1,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::DirectoryNotEmpty =>
                {
                    break;
                }
                Err(e) => return Err(io_err(dir)(e)),
            }
            let Some(parent) = dir.parent() else { break };
            sync_dir(parent)?;
            dir = parent;
        }
    }
    Ok(applied)
}

// ---- timestamps as RFC 3339 strings ---------------------------------------------------------------------

mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| {
            D::Error::custom(format!(
                "`{s}` is not an RFC 3339 timestamp (like 2026-01-31T00:00:00Z): {e}"
            ))
        })
    }

    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(t),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_policy_keeps_400_days() {
        let p = RetentionPolicy::from_yaml("").unwrap();
        assert_eq!(p, RetentionPolicy::default());
        assert_eq!((p.default_days, p.min_days()), (400, 400));
    }

    #[test]
    fn policy_yaml_is_strict() {
        let yaml = "\
default_days: 500
classes:
  - name: kcm-watch
    days: 30
    match:
      users: [system:kube-controller-manager]
      verbs: [watch]
holds:
  - id: CASE-7
    reason: litigation
    created: 2026-01-01T00:00:00Z
    since: 2025-06-01T00:00:00Z
    users: [alice@example.com]
";
        let p = RetentionPolicy::from_yaml(yaml).unwrap();
        assert_eq!(p.min_days(), 30);
        assert_eq!(p.holds[0].since, Some(ts("2025-06-01T00:00:00Z")));
        assert_eq!(p.classes[0].matches.verbs, ["watch"]);

        for (bad, why) in [
            ("default_days: 30", "less than a year"),
            ("defaultDays: 400", "defaultDays"),
            ("classes: [{name: a, days: 3, match: {user: [x]}}]", "user"),
            (
                "classes: [{name: a, days: 3, match: {}}]",
                "matches every event",
            ),
            (
                "classes: [{name: a, days: 3, match: {users: ['a*b']}}]",
                "may only end",
            ),
            (
                "holds: [{id: x, reason: r, created: yesterday}]",
                "RFC 3339",
            ),
            (
                "holds: [{id: 'x y', reason: r, created: 2026-01-01T00:00:00Z}]",
                "hold id",
            ),
        ] {
            let err = RetentionPolicy::from_yaml(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn patterns_are_exact_or_prefix() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(pattern_match(&[], "anything"));
        assert!(pattern_match(&l(&["a", "b"]), "b"));
        assert!(!pattern_match(&l(&["a"]), "ab"));
        assert!(pattern_match(
            &l(&["system:serviceaccount:*"]),
            "system:serviceaccount:x:y"
        ));
        assert!(!pattern_match(
            &l(&["system:serviceaccount:*"]),
            "system:node:n"
        ));
    }

    #[test]
    fn hour_overlap_is_inclusive() {
        let h = ts("2026-01-01T05:00:00Z");
        assert!(overlaps_hour(h, None, None));
        assert!(overlaps_hour(h, Some(ts("2026-01-01T05:59:59Z")), None));
        assert!(!overlaps_hour(h, Some(ts("2026-01-01T06:00:00Z")), None));
        assert!(overlaps_hour(h, None, Some(ts("2026-01-01T05:00:00Z"))));
        assert!(!overlaps_hour(h, None, Some(ts("2026-01-01T04:59:59Z"))));
    }
}
