//! Live detection inside `serve`: a reader of the write-ahead log with its own cursor (`detect`), so every
//! stored event is evaluated exactly as it was made durable, in order, and a restart resumes where it
//! stopped. Alerts are appended to `DATA/alerts/alerts.jsonl` (one JSON object per line, an update of a
//! grouped alert carrying the same id with `"update": true`), fsynced before the cursor moves, and logged.
//! Delivery to Alertmanager, PagerDuty, Slack and webhooks reads that file (the alerting issue).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use kubetrail_detect::{Alert, Engine};
use kubetrail_store::{Cursor, EventRecord, Wal};

/// The cursor's name in the log.
pub const CURSOR: &str = "detect";
/// Records evaluated per round before the cursor is committed.
const ROUND: usize = 10_000;
/// How long to wait when the log holds nothing new.
const IDLE: Duration = Duration::from_millis(100);

/// The detection thread's state.
pub struct Detector {
    wal: Arc<Wal>,
    cursor: Cursor,
    engine: Engine,
    alerts: File,
    path: PathBuf,
    /// The cursor's position, shared with the housekeeping so log segments are never released before
    /// detection has read them.
    position: Arc<AtomicU64>,
    /// The cluster of each open alert, for its later updates (which the engine hands out without an event).
    clusters: std::collections::HashMap<String, String>,
}

/// Alerts whose cluster is remembered for their updates, at most (then the memory starts over).
const MAX_CLUSTERS: usize = 100_000;

impl Detector {
    pub fn open(dir: &Path, wal: Arc<Wal>, engine: Engine) -> anyhow::Result<Detector> {
        let alerts_dir = dir.join("alerts");
        std::fs::create_dir_all(&alerts_dir)
            .with_context(|| format!("failed to create `{}`", alerts_dir.display()))?;
        let path = alerts_dir.join("alerts.jsonl");
        let alerts = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        let cursor = wal.cursor(CURSOR)?;
        let position = cursor.position();
        Ok(Detector {
            wal,
            cursor,
            engine,
            alerts,
            path,
            position: Arc::new(AtomicU64::new(position)),
            clusters: std::collections::HashMap::new(),
        })
    }

    /// The cursor's position as it moves.
    pub fn position(&self) -> Arc<AtomicU64> {
        self.position.clone()
    }

    /// Evaluates what the log holds beyond the cursor, until `stop`; then what is left, and the open groups
    /// and windows are flushed.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            match self.round() {
                Ok(0) if stopping => break,
                Ok(0) => std::thread::sleep(IDLE),
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "live detection failed; retrying");
                    if stopping {
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let mut out = Vec::new();
        self.engine.flush(&mut out);
        if let Err(e) = self.write(&out) {
            tracing::error!(error = %format!("{e:#}"), "failed to write the last alerts");
        }
    }

    /// One round: at most [`ROUND`] records, their alerts written and fsynced, then the cursor committed.
    /// Returns how many records were read.
    fn round(&mut self) -> anyhow::Result<usize> {
        let from = self.cursor.position();
        let mut out = Vec::new();
        let mut next = from;
        let mut n = 0;
        for item in self.wal.read_from(from)? {
            let (seq, bytes) = item?;
            next = seq + 1;
            n += 1;
            match EventRecord::decode(&bytes) {
                Ok(rec) => {
                    let before = out.len();
                    if let Err(e) = self.engine.process(&rec.event, &mut out) {
                        tracing::debug!(seq, error = %e, "event not evaluated");
                    }
                    for a in &mut out[before..] {
                        if a.cluster.is_none() && !a.update {
                            a.cluster = Some(rec.cluster.to_string());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "unreadable log record skipped by detection")
                }
            }
            if n >= ROUND {
                break;
            }
        }
        self.engine.advance(jiff::Timestamp::now(), &mut out);
        self.write(&out)?;
        if next > from {
            self.cursor.commit(next)?;
            self.position.store(next, Ordering::SeqCst);
        }
        Ok(n)
    }

    fn write(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        // Updates of grouped alerts carry the cluster of their first request too.
        let mut alerts = alerts.to_vec();
        for a in &mut alerts {
            match &a.cluster {
                Some(c) => {
                    if self.clusters.len() >= MAX_CLUSTERS {
                        self.clusters.clear();
                    }
                    self.clusters.insert(a.id.clone(), c.clone());
                }
                None => a.cluster = self.clusters.get(&a.id).cloned(),
            }
        }
        let alerts = &alerts;
        let mut buf = Vec::new();
        for a in alerts {
            serde_json::to_writer(&mut buf, a)?;
            buf.push(b'\n');
            tracing::warn!(
                alert = %a.id,
                rule = %a.rule.id,
                severity = a.severity.as_str(),
                user = %a.actor.username,
                count = a.count,
                update = a.update,
                "alert: {}",
                a.rule.title
            );
        }
        self.alerts
            .write_all(&buf)
            .and_then(|()| self.alerts.sync_data())
            .with_context(|| format!("failed to write alerts to `{}`", self.path.display()))
    }
}
