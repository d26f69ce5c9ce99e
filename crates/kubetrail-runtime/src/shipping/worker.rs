//! Shipping off the node: one delivery worker ([`crate::delivery`]) per configured sink, each reading the
//! write-ahead log through its own persisted cursor (`sink-<name>`), so a slow or dead sink never blocks
//! ingestion or another sink, and a restart resumes where it stopped (at least once; every record carries the
//! deterministic id `<auditID>-<stage>-<content digest>` (`EventRecord::id`), the same from every replica
//! that stored the event, which targets that can deduplicate do).
//!
//! Records are batched by count and bytes and flushed at most `flush_secs` after the first one waited
//! (default 5 s). The wire protocols are `kubetrail-sinks'`; retries, dead letters (`DATA/sinks/<name>.dlq.jsonl`,
//! `kubetrail sinks dlq list|replay`; replayed ones are sent before new records) and the delivery counters
//! are the delivery engine's. Progress (sent, retried, failed, dead-lettered, skipped, lag in events and
//! seconds, the last error) is in `/metrics` and in `DATA/sinks/<name>.status.json` for `kubetrail sinks
//! status`.
//!
//! Disk budget: the housekeeping keeps log segments until every sink has read them, but a sink that is failing
//! while the log is past [`HOLD_LIMIT`] of its budget stops holding them, and an alert says so (rule
//! `kubetrail-sink-backlog`): ingestion goes on. Whatever the log released before the sink read it is recorded
//! as a gap (log, status, alert): never a silent drop. The events stay in the Parquet store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kubetrail_sinks::{Outcome, Record};
use kubetrail_store::{EventRecord, Wal};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::delivery::{self, Files, IDLE, Worker};

/// Share of the log's disk budget past which a failing sink stops holding segments.
pub const HOLD_LIMIT: f64 = 0.8;

/// The series of shipping that the delivery engine counts.
const NAMES: delivery::Names = delivery::Names {
    delivered: ("sink_sent", "Records a sink delivered."),
    retried: (
        "sink_retried",
        "Records sent again after a retriable failure.",
    ),
    failed: ("sink_failed", "Failed attempts."),
    dead_lettered: ("sink_dead_lettered", "Records a target refused for good."),
};

/// A target, ready to send.
pub enum Target {
    ClickHouse(kubetrail_sinks::clickhouse::ClickHouse),
    /// The S3 archive: each batch one zstd JSON-lines object per cluster and hour, Object Lock on every put.
    Archive(Box<crate::shipping::archive::Archive>),
    Elasticsearch(kubetrail_sinks::elasticsearch::Elasticsearch),
    Splunk(kubetrail_sinks::splunk::Splunk),
    Syslog(kubetrail_sinks::syslog::Syslog),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::ClickHouse(_) => "ClickHouse",
            Target::Archive(_) => "S3 archive",
            Target::Elasticsearch(_) => "Elasticsearch",
            Target::Splunk(_) => "Splunk HEC",
            Target::Syslog(_) => "syslog",
        })
    }
}

impl Target {
    /// Frequent upkeep: the archive's manifests and checkpoints.
    async fn tick(&self) -> Result<(), String> {
        match self {
            Target::Archive(a) => a.tick().await,
            _ => Ok(()),
        }
    }

    /// Daily upkeep: ClickHouse drops the day partitions past its retention (18.16 has no TTL).
    async fn upkeep(&self) -> Result<Vec<String>, String> {
        match self {
            Target::ClickHouse(c) => c
                .drop_expired_partitions(jiff::Timestamp::now())
                .await
                .map_err(|e| e.to_string()),
            _ => Ok(Vec::new()),
        }
    }

    async fn prepare(&self) -> Result<(), String> {
        match self {
            Target::ClickHouse(c) => c.prepare().await.map_err(|e| e.to_string()),
            Target::Archive(a) => a.prepare().await,
            Target::Elasticsearch(e) => e.prepare().await.map_err(|e| e.to_string()),
            Target::Splunk(s) => s.prepare().await.map_err(|e| e.to_string()),
            Target::Syslog(s) => s.prepare().await.map_err(|e| e.to_string()),
        }
    }

    async fn send_records(&self, batch: &[Record<'_>], seqs: &[u64]) -> Outcome {
        match self {
            Target::ClickHouse(c) => c.send(batch).await,
            Target::Archive(a) => a.send(batch, seqs).await,
            Target::Elasticsearch(e) => e.send(batch).await,
            Target::Splunk(s) => s.send(batch).await,
            Target::Syslog(s) => s.send(batch).await,
        }
    }
}

/// How a sink batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_events: usize,
    pub max_bytes: usize,
    pub flush: Duration,
}

impl Default for Batching {
    fn default() -> Batching {
        Batching {
            max_events: 5_000,
            max_bytes: 8 << 20,
            flush: Duration::from_secs(5),
        }
    }
}

/// What `kubetrail sinks status` shows (the status file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub kind: String,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
    pub lag_events: u64,
    pub lag_seconds: u64,
    pub position: u64,
    pub last_error: Option<String>,
    pub last_success: Option<String>,
    /// When this status was written.
    pub at: String,
}

/// A record the target refused, kept in the dead-letter file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadRecord {
    pub at: String,
    pub sink: String,
    pub reason: String,
    pub seq: u64,
    pub id: String,
    pub cluster: String,
    pub received_us: i64,
    /// The (redacted) event JSON.
    pub event: String,
}

/// One configured sink, as `serve` starts it.
#[derive(Debug)]
pub struct Sink {
    pub name: String,
    pub kind: &'static str,
    pub target: Target,
    pub batching: Batching,
}

/// One sink's own series beside the delivery engine's: what it skipped and how far behind it is.
#[derive(Debug, Clone)]
struct Progress {
    skipped: Counter,
    lag_events: Gauge,
    lag_seconds: Gauge,
    /// The log position up to which everything is shipped.
    position: Arc<AtomicU64>,
}

/// The families of [`Progress`].
#[derive(Debug, Clone, Default)]
struct ProgressFamilies {
    skipped: Family<Vec<(String, String)>, Counter>,
    lag_events: Family<Vec<(String, String)>, Gauge>,
    lag_seconds: Family<Vec<(String, String)>, Gauge>,
}

/// Shipping's series: the delivery engine's counters and each sink's progress.
#[derive(Debug, Clone)]
pub struct ShippingMetrics {
    delivery: delivery::Metrics,
    progress: ProgressFamilies,
}

impl Default for ShippingMetrics {
    fn default() -> ShippingMetrics {
        ShippingMetrics {
            delivery: delivery::Metrics::new(NAMES),
            progress: ProgressFamilies::default(),
        }
    }
}

impl ShippingMetrics {
    /// Registers the series (clones: they share their values) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.delivery.register(registry);
        self.progress.register(registry);
    }
}

impl ProgressFamilies {
    fn register(&self, registry: &mut Registry) {
        let f = self;
        registry.register(
            "sink_skipped",
            "Records the log released before the sink read them.",
            f.skipped.clone(),
        );
        registry.register(
            "sink_lag_events",
            "Records in the log the sink has not delivered.",
            f.lag_events.clone(),
        );
        registry.register(
            "sink_lag_seconds",
            "Age of the oldest record the sink has not delivered.",
            f.lag_seconds.clone(),
        );
    }

    fn progress(&self, labels: &Vec<(String, String)>, position: u64) -> Progress {
        Progress {
            skipped: self.skipped.get_or_create(labels).clone(),
            lag_events: self.lag_events.get_or_create(labels).clone(),
            lag_seconds: self.lag_seconds.get_or_create(labels).clone(),
            position: Arc::new(AtomicU64::new(position)),
        }
    }
}

/// A started sink: its thread, and the log position it holds.
pub type Started = (std::thread::JoinHandle<()>, Arc<AtomicU64>);

/// Starts one worker per sink, counted in `metrics`; each holds log segments through the returned position
/// until it has shipped them.
pub fn start(
    data: &Path,
    wal: Arc<Wal>,
    sinks: Vec<Sink>,
    metrics: &ShippingMetrics,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Started>> {
    let dir = super::sinks_dir(data);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    if sinks.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for s in sinks {
        if let Target::Archive(a) = &s.target {
            a.attach(data, &s.name, crate::integrity_key::signer(data)?)?;
        }
        let cursor = wal.cursor(&format!("sink-{}", s.name))?;
        let hold = Arc::new(AtomicU64::new(cursor.position()));
        let labels = vec![
            ("sink".to_string(), s.name.clone()),
            ("type".to_string(), s.kind.to_string()),
        ];
        let stats = metrics
            .delivery
            .stats(&[("sink", &s.name), ("type", s.kind)]);
        let progress = metrics.progress.progress(&labels, cursor.position());
        let worker = Worker {
            name: format!("sink-{}", s.name),
            source: LogSource {
                wal: wal.clone(),
                cursor,
                hold: hold.clone(),
                holding: true,
                name: s.name.clone(),
                kind: s.kind,
                batching: s.batching,
                stats: stats.clone(),
                progress,
                status: dir.join(format!("{}.status.json", s.name)),
                alerts: data.join("alerts").join("alerts.jsonl"),
                last_status: Instant::now() - Duration::from_secs(10),
            },
            destination: SinkDestination {
                name: s.name.clone(),
                target: s.target,
                next_upkeep: Instant::now(),
            },
            files: Files::new(&dir, &s.name),
            stats,
            replay_batch: s.batching.max_events,
        };
        out.push((worker.spawn(stop.clone())?, hold));
    }
    Ok(out)
}

/// A record read from the log (or from the replay queue) waiting to be sent.
struct Pending {
    seq: u64,
    id: String,
    cluster: String,
    received_us: i64,
    event: String,
}

/// The target as the delivery engine drives it.
struct SinkDestination {
    name: String,
    target: Target,
    /// When the daily upkeep (ClickHouse's expired partitions) runs next.
    next_upkeep: Instant,
}

impl delivery::Destination for SinkDestination {
    type Item = Pending;

    async fn prepare(&mut self) -> Result<(), String> {
        self.target.prepare().await
    }

    async fn tick(&mut self) -> Result<(), String> {
        if Instant::now() >= self.next_upkeep {
            self.next_upkeep = Instant::now() + Duration::from_secs(86_400);
            match self.target.upkeep().await {
                Ok(dropped) if !dropped.is_empty() => {
                    tracing::info!(sink = %self.name, partitions = ?dropped, "dropped partitions past the retention")
                }
                Ok(_) => {}
                Err(e) => {
                    self.next_upkeep = Instant::now() + Duration::from_secs(3600);
                    tracing::warn!(sink = %self.name, error = %e, "retention upkeep failed; trying again in an hour")
                }
            }
        }
        self.target.tick().await
    }

    async fn finish(&mut self) {
        if let Target::Archive(a) = &self.target
            && let Err(e) = a.upload_manifest().await
        {
            tracing::warn!(sink = %self.name, error = %e, "the last archive manifest waits for the next start");
        }
    }

    async fn send(&self, items: &[&Pending]) -> Outcome {
        let records: Vec<Record<'_>> = items
            .iter()
            .map(|p| Record {
                id: &p.id,
                cluster: &p.cluster,
                received_us: p.received_us,
                event: &p.event,
            })
            .collect();
        let seqs: Vec<u64> = items.iter().map(|p| p.seq).collect();
        self.target.send_records(&records, &seqs).await
    }

    fn dead_letter(&self, p: &Pending, reason: &str) -> serde_json::Value {
        serde_json::to_value(DeadRecord {
            at: jiff::Timestamp::now().to_string(),
            sink: self.name.clone(),
            reason: reason.to_string(),
            seq: p.seq,
            id: p.id.clone(),
            cluster: p.cluster.clone(),
            received_us: p.received_us,
            event: p.event.clone(),
        })
        .expect("a record serialises")
    }

    fn replayed(&self, line: &[u8]) -> Option<Pending> {
        let d: DeadRecord = serde_json::from_slice(line).ok()?;
        Some(Pending {
            seq: d.seq,
            id: d.id,
            cluster: d.cluster,
            received_us: d.received_us,
            event: d.event,
        })
    }
}

/// The log as a sink reads it: batches from its cursor, holding segments until shipped.
struct LogSource {
    wal: Arc<Wal>,
    cursor: kubetrail_store::Cursor,
    /// What the housekeeping must keep: the cursor, or `u64::MAX` when this sink gave up holding.
    hold: Arc<AtomicU64>,
    holding: bool,
    name: String,
    kind: &'static str,
    batching: Batching,
    stats: Arc<delivery::Stats>,
    progress: Progress,
    status: PathBuf,
    alerts: PathBuf,
    last_status: Instant,
}

impl delivery::Source for LogSource {
    type Item = Pending;

    /// Fills a batch until it is full, or `flush` after its first record, or the log has nothing more and the
    /// flush time passed.
    fn next(&mut self, stop: &AtomicBool) -> anyhow::Result<Option<(Vec<Pending>, u64)>> {
        let from = self.cursor.position();
        let started = Instant::now();
        let mut batch: Vec<Pending> = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        // Fill the batch until it is full, or `flush` after its first record, or the log has nothing more
        // and the flush time passed.
        loop {
            let mut reader = self.wal.read_from(next)?;
            let mut got = false;
            for item in reader.by_ref() {
                let (seq, raw) = item?;
                if seq > next && batch.is_empty() && next == from {
                    self.gap(from, seq);
                }
                next = seq + 1;
                got = true;
                match EventRecord::decode(&raw) {
                    Ok(r) => {
                        bytes += r.event.len();
                        batch.push(Pending {
                            seq,
                            id: r.id(kubetrail_policy::keyless_digest(&r.event)),
                            cluster: r.cluster.into_owned(),
                            received_us: r.received_us,
                            event: r.event.into_owned(),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(sink = %self.name, seq, error = %e, "unreadable log record skipped")
                    }
                }
                if batch.len() >= self.batching.max_events || bytes >= self.batching.max_bytes {
                    break;
                }
            }
            let full = batch.len() >= self.batching.max_events || bytes >= self.batching.max_bytes;
            if full || stop.load(Ordering::SeqCst) {
                break;
            }
            if batch.is_empty() {
                if next > from {
                    // Only unreadable records: move past them.
                    return Ok(Some((Vec::new(), next)));
                }
                self.update_lag(None);
                return Ok(None);
            }
            if started.elapsed() >= self.batching.flush {
                break;
            }
            self.update_lag(batch.first().map(|p| p.received_us));
            if !got {
                std::thread::sleep(IDLE);
            }
        }
        if batch.is_empty() {
            return Ok(None);
        }
        self.update_lag(batch.first().map(|p| p.received_us));
        Ok(Some((batch, next)))
    }

    fn commit(&mut self, next: u64) -> anyhow::Result<()> {
        self.cursor.commit(next)?;
        self.progress.position.store(next, Ordering::Relaxed);
        self.hold_again();
        if self.holding {
            self.hold.store(next, Ordering::SeqCst);
        }
        Ok(())
    }

    fn tick(&mut self) {
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            self.write_status();
            self.last_status = Instant::now();
        }
        if self.stats.failing() {
            self.check_budget();
        } else {
            self.hold_again();
        }
    }

    fn finish(&mut self) {
        self.write_status();
    }
}

impl LogSource {
    /// Delivering again after letting go: hold segments from the cursor on.
    fn hold_again(&mut self) {
        if !self.holding && !self.stats.failing() {
            self.holding = true;
            self.hold.store(self.cursor.position(), Ordering::SeqCst);
        }
    }

    fn update_lag(&self, oldest_received_us: Option<i64>) {
        let pos = self.cursor.position();
        let end = self.wal.durable_seq();
        self.progress
            .lag_events
            .set(i64::try_from(end.saturating_sub(pos)).unwrap_or(i64::MAX));
        let secs = oldest_received_us.map_or(0, |r| {
            let now = jiff::Timestamp::now().as_microsecond();
            (now - r).max(0) / 1_000_000
        });
        self.progress.lag_seconds.set(secs);
    }

    /// A failing sink past the budget stops holding the log (and says so, once).
    fn check_budget(&mut self) {
        let usage = self.wal.usage();
        if self.holding && usage.bytes as f64 > usage.budget_bytes as f64 * HOLD_LIMIT {
            self.holding = false;
            self.hold.store(u64::MAX, Ordering::SeqCst);
            let summary = format!(
                "sink `{}` is failing and its backlog ({} events) has the log past {:.0}% of its disk budget: \
                 it stops holding log segments so ingestion goes on; events the log releases before the sink \
                 reads them will be skipped (they stay in the Parquet store)",
                self.name,
                self.progress.lag_events.get(),
                HOLD_LIMIT * 100.0
            );
            tracing::error!(sink = %self.name, "{summary}");
            self.raise(
                "kubetrail-sink-backlog",
                "Sink backlog over the log's disk budget",
                &summary,
            );
        }
    }

    fn gap(&mut self, from: u64, seq: u64) {
        let n = seq - from;
        self.progress.skipped.inc_by(n);
        let summary = format!(
            "sink `{}` skipped {n} events (log records {from}..{}): the log released them before the sink \
             read them; they stay in the Parquet store",
            self.name,
            seq - 1
        );
        tracing::error!(sink = %self.name, skipped = n, "{summary}");
        self.raise("kubetrail-sink-gap", "Sink skipped events", &summary);
    }

    /// An alert about kubetrail itself, appended to `alerts.jsonl` like detection's (delivered the same way).
    fn raise(&self, rule: &str, title: &str, summary: &str) {
        let _ = crate::alerting::store::raise_system(
            &self.alerts,
            rule,
            title,
            "high",
            &self.name,
            summary,
            &["kubetrail sinks status"],
        );
    }

    fn write_status(&self) {
        // The log grows while a batch is retried: the lag counts what arrived meanwhile too.
        let lag = self
            .wal
            .durable_seq()
            .saturating_sub(self.cursor.position());
        self.progress
            .lag_events
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        let s = &self.stats;
        let status = Status {
            name: self.name.clone(),
            kind: self.kind.to_string(),
            sent: s.delivered.get(),
            retried: s.retried.get(),
            failed: s.failed.get(),
            dead_lettered: s.dead_lettered.get(),
            skipped: self.progress.skipped.get(),
            lag_events: lag,
            lag_seconds: self.progress.lag_seconds.get().max(0) as u64,
            position: self.progress.position.load(Ordering::Relaxed),
            last_error: s.last_error(),
            last_success: s.last_success(),
            at: jiff::Timestamp::now().to_string(),
        };
        let tmp = self.status.with_extension("json.tmp");
        let r = serde_json::to_vec_pretty(&status)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.status));
        if let Err(e) = r {
            tracing::warn!(sink = %self.name, error = %e, "failed to write the sink status");
        }
    }
}

/// What the ClickHouse sinks of the collector at `data` have not delivered, as `serve` last wrote it (events
/// behind, dead letters, the last error): a note for answers read from ClickHouse, which lack those events.
/// `None` when nothing is missing, or no ClickHouse sink has run here.
pub fn clickhouse_shortfall(data: &Path) -> Option<String> {
    let notes: Vec<String> = statuses(data)
        .ok()?
        .into_iter()
        .filter(|s| s.kind == "clickhouse")
        .filter_map(|s| {
            let mut parts = Vec::new();
            if s.lag_events > 0 {
                parts.push(format!(
                    "{} event(s) not shipped yet, {} s behind",
                    s.lag_events, s.lag_seconds
                ));
            }
            if s.dead_lettered > 0 {
                parts.push(format!("{} dead-lettered", s.dead_lettered));
            }
            if parts.is_empty() {
                return None;
            }
            if let Some(e) = &s.last_error {
                parts.push(format!("last error: {e}"));
            }
            Some(format!("sink `{}`: {}", s.name, parts.join(", ")))
        })
        .collect();
    (!notes.is_empty()).then(|| {
        format!(
            "this collector's events are not all in ClickHouse ({}): answers from ClickHouse lack them; \
             the local store has them (`--data {}` without the ClickHouse backend)",
            notes.join("; "),
            data.display()
        )
    })
}

/// The status of every sink, as `serve` last wrote it.
pub fn statuses(data: &Path) -> anyhow::Result<Vec<Status>> {
    let dir = super::sinks_dir(data);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", dir.display())),
    };
    for e in entries {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json")
            && p.to_string_lossy().ends_with(".status.json")
        {
            let text = std::fs::read_to_string(&p)?;
            out.push(
                serde_json::from_str(&text)
                    .with_context(|| format!("`{}` is not a sink status", p.display()))?,
            );
        }
    }
    out.sort_by(|a: &Status, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every dead letter of every sink (or of `sink`).
pub fn dead_letters(data: &Path, sink: Option<&str>) -> anyhow::Result<Vec<DeadRecord>> {
    let mut out = Vec::new();
    for (name, line) in delivery::dead_letters(&super::sinks_dir(data))? {
        if sink.is_some_and(|s| s != name) {
            continue;
        }
        match serde_json::from_str::<DeadRecord>(&line) {
            Ok(d) => out.push(d),
            Err(e) => {
                tracing::warn!(sink = %name, error = %e, "a dead-letter line that is not a record is skipped")
            }
        }
    }
    Ok(out)
}

/// Queues the dead letters of `sink` (or of every sink) for sending again, before new records; the
/// dead-letter files are kept aside as `.replayed-<time>`. How many.
pub fn replay(data: &Path, sink: Option<&str>) -> anyhow::Result<usize> {
    delivery::replay(&super::sinks_dir(data), sink)
}
