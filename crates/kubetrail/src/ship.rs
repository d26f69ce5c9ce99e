//! Shipping off the node: one thread per configured sink, each reading the write-ahead log through its own
//! persisted cursor (`sink-<name>`), so a slow or dead sink never blocks ingestion or another sink, and a
//! restart resumes where it stopped (at least once; every record carries the deterministic id
//! `<auditID>-<stage>`, which targets that can deduplicate do).
//!
//! Records are batched by count and bytes and flushed at most `flush_secs` after the first one waited
//! (default 5 s). The wire protocols are `kubetrail-sinks`'; retries are here: exponential backoff with
//! jitter, honouring Retry-After (at most 10 min); records a target refuses for what they are go to
//! `DATA/sinks/<name>.dlq.jsonl` (`kubetrail sinks dlq list|replay`); replayed ones are sent before new
//! records. Progress (sent, retried, failed, dead-lettered, lag in events and seconds, the last error) is in
//! `/metrics` and in `DATA/sinks/<name>.status.json` for `kubetrail sinks status`.
//!
//! Disk budget: the housekeeping keeps log segments until every sink has read them, but a sink that is failing
//! while the log is past [`HOLD_LIMIT`] of its budget stops holding them, and an alert says so (rule
//! `kubetrail-sink-backlog`): ingestion goes on. Whatever the log released before the sink read it is recorded
//! as a gap (log, status, alert): never a silent drop. The events stay in the Parquet store.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::outbox::{jitter, sleep_unless_stopped};
use kubetrail_sinks::{Outcome, Record};
use kubetrail_store::{EventRecord, Wal};
use serde::{Deserialize, Serialize};

/// Share of the log's disk budget past which a failing sink stops holding segments.
pub const HOLD_LIMIT: f64 = 0.8;
const IDLE: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A target, ready to send.
pub enum Target {
    ClickHouse(kubetrail_sinks::clickhouse::ClickHouse),
    /// The S3 archive: each batch one zstd JSON-lines object per cluster and hour, Object Lock on every put.
    Archive(Box<crate::archive::Archive>),
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

    async fn send(&self, batch: &[Record<'_>], seqs: &[u64]) -> Outcome {
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

/// One sink's progress, shared with `/metrics` and written to its status file.
#[derive(Debug, Default)]
pub struct Stats {
    pub name: String,
    pub kind: String,
    pub sent: AtomicU64,
    /// Records sent again after a retriable failure.
    pub retried: AtomicU64,
    /// Attempts that failed.
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Records the log released before this sink read them.
    pub skipped: AtomicU64,
    pub lag_events: AtomicU64,
    pub lag_seconds: AtomicU64,
    /// The log position up to which everything is shipped.
    pub position: AtomicU64,
    last_error: Mutex<Option<String>>,
    last_success: Mutex<Option<String>>,
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

impl Stats {
    fn status(&self) -> Status {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Status {
            name: self.name.clone(),
            kind: self.kind.clone(),
            sent: g(&self.sent),
            retried: g(&self.retried),
            failed: g(&self.failed),
            dead_lettered: g(&self.dead_lettered),
            skipped: g(&self.skipped),
            lag_events: g(&self.lag_events),
            lag_seconds: g(&self.lag_seconds),
            position: g(&self.position),
            last_error: self.last_error.lock().expect("not poisoned").clone(),
            last_success: self.last_success.lock().expect("not poisoned").clone(),
            at: jiff::Timestamp::now().to_string(),
        }
    }
}

/// The sinks' metrics in Prometheus text format.
pub fn render_metrics(stats: &[Arc<Stats>]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if stats.is_empty() {
        return s;
    }
    type Metric = (
        &'static str,
        &'static str,
        &'static str,
        fn(&Stats) -> &AtomicU64,
    );
    let metrics: [Metric; 7] = [
        (
            "kubetrail_sink_sent_total",
            "counter",
            "Records a sink delivered.",
            |s| &s.sent,
        ),
        (
            "kubetrail_sink_retried_total",
            "counter",
            "Records sent again after a retriable failure.",
            |s| &s.retried,
        ),
        (
            "kubetrail_sink_failed_total",
            "counter",
            "Failed attempts.",
            |s| &s.failed,
        ),
        (
            "kubetrail_sink_dead_lettered_total",
            "counter",
            "Records a target refused for good.",
            |s| &s.dead_lettered,
        ),
        (
            "kubetrail_sink_skipped_total",
            "counter",
            "Records the log released before the sink read them.",
            |s| &s.skipped,
        ),
        (
            "kubetrail_sink_lag_events",
            "gauge",
            "Records in the log the sink has not delivered.",
            |s| &s.lag_events,
        ),
        (
            "kubetrail_sink_lag_seconds",
            "gauge",
            "Age of the oldest record the sink has not delivered.",
            |s| &s.lag_seconds,
        ),
    ];
    for (name, kind, help, get) in metrics {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for st in stats {
            let _ = writeln!(
                s,
                "{name}{{sink=\"{}\",type=\"{}\"}} {}",
                st.name,
                st.kind,
                get(st).load(Ordering::Relaxed)
            );
        }
    }
    s
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

pub fn sinks_dir(data: &Path) -> PathBuf {
    data.join("sinks")
}

/// One configured sink, as `serve` starts it.
#[derive(Debug)]
pub struct Sink {
    pub name: String,
    pub kind: &'static str,
    pub target: Target,
    pub batching: Batching,
}

/// A started sink: its thread, its progress, and the log position it holds.
pub type Started = (std::thread::JoinHandle<()>, Arc<Stats>, Arc<AtomicU64>);

/// Starts one thread per sink; each holds log segments through `hold` until it has shipped them.
pub fn start(
    data: &Path,
    wal: Arc<Wal>,
    sinks: Vec<Sink>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Started>> {
    let dir = sinks_dir(data);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let mut out = Vec::new();
    for s in sinks {
        if let Target::Archive(a) = &s.target {
            a.attach(data, &s.name, crate::integrity_key::signer(data)?)?;
        }
        let cursor = wal.cursor(&format!("sink-{}", s.name))?;
        let hold = Arc::new(AtomicU64::new(cursor.position()));
        let stats = Arc::new(Stats {
            name: s.name.clone(),
            kind: s.kind.to_string(),
            ..Stats::default()
        });
        stats.position.store(cursor.position(), Ordering::Relaxed);
        let worker = Worker {
            wal: wal.clone(),
            cursor,
            hold: hold.clone(),
            stats: stats.clone(),
            dlq: dir.join(format!("{}.dlq.jsonl", s.name)),
            replay: dir.join(format!("{}.replay.jsonl", s.name)),
            replay_cursor: dir.join(format!("{}.replay.cursor", s.name)),
            status: dir.join(format!("{}.status.json", s.name)),
            alerts: data.join("alerts").join("alerts.jsonl"),
            sink: s,
            holding: true,
        };
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("sink-{}", worker.sink.name))
            .spawn(move || worker.run(&stop))?;
        out.push((handle, stats, hold));
    }
    Ok(out)
}

struct Worker {
    wal: Arc<Wal>,
    cursor: kubetrail_store::Cursor,
    /// What the housekeeping must keep: the cursor, or `u64::MAX` when this sink gave up holding.
    hold: Arc<AtomicU64>,
    stats: Arc<Stats>,
    dlq: PathBuf,
    replay: PathBuf,
    replay_cursor: PathBuf,
    status: PathBuf,
    alerts: PathBuf,
    sink: Sink,
    holding: bool,
}

/// A record read from the log (or from the replay file) waiting to be sent.
struct Pending {
    seq: u64,
    id: String,
    cluster: String,
    received_us: i64,
    event: String,
}

enum Sent {
    Done,
    Stopped,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(sink = %self.sink.name, error = %e, "sink cannot start");
                return;
            }
        };
        let mut backoff = Duration::from_secs(1);
        let mut prepared = false;
        let mut last_status = Instant::now() - Duration::from_secs(10);
        let mut next_upkeep = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            if prepared && Instant::now() >= next_upkeep {
                next_upkeep = Instant::now() + Duration::from_secs(86_400);
                match rt.block_on(self.sink.target.upkeep()) {
                    Ok(dropped) if !dropped.is_empty() => {
                        tracing::info!(sink = %self.sink.name, partitions = ?dropped, "dropped partitions past the retention")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        next_upkeep = Instant::now() + Duration::from_secs(3600);
                        tracing::warn!(sink = %self.sink.name, error = %e, "retention upkeep failed; trying again in an hour")
                    }
                }
            }
            if last_status.elapsed() >= Duration::from_secs(1) {
                self.write_status();
                last_status = Instant::now();
            }
            if !prepared {
                match rt.block_on(self.sink.target.prepare()) {
                    Ok(()) => {
                        prepared = true;
                        backoff = Duration::from_secs(1);
                        tracing::info!(sink = %self.sink.name, "sink ready");
                    }
                    Err(e) => {
                        self.failed(&format!("cannot prepare: {e}"));
                        self.update_lag(None);
                        self.write_status();
                        self.wait_failing(jitter(backoff), stop);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            if prepared && let Err(e) = rt.block_on(self.sink.target.tick()) {
                self.failed(&e);
                tracing::warn!(sink = %self.sink.name, error = %e, "archive upkeep failed; retrying");
            }
            match self.round(stop, &rt) {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(IDLE),
                Err(e) => {
                    tracing::error!(sink = %self.sink.name, error = %format!("{e:#}"), "sink failed; retrying");
                    sleep_unless_stopped(Duration::from_secs(1), stop);
                }
            }
        }
        if let Target::Archive(a) = &self.sink.target
            && let Err(e) = rt.block_on(a.upload_manifest())
        {
            tracing::warn!(sink = %self.sink.name, error = %e, "the last archive manifest waits for the next start");
        }
        self.write_status();
    }

    /// Sends replayed dead letters, else the next batch from the log. Whether there was anything.
    fn round(&mut self, stop: &AtomicBool, rt: &tokio::runtime::Runtime) -> anyhow::Result<bool> {
        if self.replay_round(stop, rt)? {
            return Ok(true);
        }
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
                            id: r.id(),
                            cluster: r.cluster.into_owned(),
                            received_us: r.received_us,
                            event: r.event.into_owned(),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(sink = %self.sink.name, seq, error = %e, "unreadable log record skipped")
                    }
                }
                if batch.len() >= self.sink.batching.max_events
                    || bytes >= self.sink.batching.max_bytes
                {
                    break;
                }
            }
            let full = batch.len() >= self.sink.batching.max_events
                || bytes >= self.sink.batching.max_bytes;
            if full || stop.load(Ordering::SeqCst) {
                break;
            }
            if batch.is_empty() {
                if next > from {
                    // Only unreadable records: move past them.
                    self.commit(next)?;
                    return Ok(true);
                }
                self.update_lag(None);
                return Ok(false);
            }
            if started.elapsed() >= self.sink.batching.flush {
                break;
            }
            self.update_lag(batch.first().map(|p| p.received_us));
            if !got {
                std::thread::sleep(IDLE);
            }
        }
        if batch.is_empty() {
            return Ok(false);
        }
        self.update_lag(batch.first().map(|p| p.received_us));
        match self.send(&batch, stop, rt)? {
            Sent::Done => self.commit(next)?,
            Sent::Stopped => return Ok(false),
        }
        Ok(true)
    }

    fn commit(&mut self, next: u64) -> anyhow::Result<()> {
        self.cursor.commit(next)?;
        self.stats.position.store(next, Ordering::Relaxed);
        if self.holding {
            self.hold.store(next, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Sends `batch` until every record is delivered or dead-lettered (or `stop`).
    fn send(
        &mut self,
        batch: &[Pending],
        stop: &AtomicBool,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Sent> {
        let mut todo: Vec<usize> = (0..batch.len()).collect();
        let mut backoff = Duration::from_secs(1);
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(Sent::Stopped);
            }
            let records: Vec<Record<'_>> = todo
                .iter()
                .map(|&i| Record {
                    id: &batch[i].id,
                    cluster: &batch[i].cluster,
                    received_us: batch[i].received_us,
                    event: &batch[i].event,
                })
                .collect();
            let seqs: Vec<u64> = todo.iter().map(|&i| batch[i].seq).collect();
            let outcome = rt.block_on(self.sink.target.send(&records, &seqs));
            match outcome {
                Outcome::Delivered => {
                    self.delivered(todo.len());
                    return Ok(Sent::Done);
                }
                Outcome::Dead { reason } => {
                    let dead: Vec<(usize, String)> =
                        todo.iter().map(|&i| (i, reason.clone())).collect();
                    self.dead_letter(batch, &dead)?;
                    return Ok(Sent::Done);
                }
                Outcome::Partial { retry, dead } => {
                    let dead: Vec<(usize, String)> =
                        dead.into_iter().map(|(i, r)| (todo[i], r)).collect();
                    self.dead_letter(batch, &dead)?;
                    let retry: Vec<usize> = retry.into_iter().map(|i| todo[i]).collect();
                    let delivered = todo.len() - retry.len() - dead.len();
                    self.delivered(delivered);
                    if retry.is_empty() {
                        return Ok(Sent::Done);
                    }
                    self.stats
                        .retried
                        .fetch_add(retry.len() as u64, Ordering::Relaxed);
                    self.failed(&format!("{} records to send again", retry.len()));
                    todo = retry;
                    self.wait_failing(jitter(backoff), stop);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Outcome::Retry { after, reason } => {
                    self.stats
                        .retried
                        .fetch_add(todo.len() as u64, Ordering::Relaxed);
                    self.failed(&reason);
                    let wait = match after {
                        Some(a) => a.min(MAX_RETRY_AFTER),
                        None => jitter(backoff),
                    };
                    tracing::warn!(sink = %self.sink.name, records = todo.len(), wait_ms = wait.as_millis() as u64, "not delivered ({reason}); retrying");
                    self.wait_failing(wait, stop);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn delivered(&mut self, n: usize) {
        self.stats.sent.fetch_add(n as u64, Ordering::Relaxed);
        *self.stats.last_success.lock().expect("not poisoned") =
            Some(jiff::Timestamp::now().to_string());
        *self.stats.last_error.lock().expect("not poisoned") = None;
        if !self.holding {
            // Caught up again: hold segments from here on.
            self.holding = true;
            self.hold.store(self.cursor.position(), Ordering::SeqCst);
        }
    }

    fn failed(&self, reason: &str) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        *self.stats.last_error.lock().expect("not poisoned") = Some(reason.to_string());
    }

    fn update_lag(&self, oldest_received_us: Option<i64>) {
        let pos = self.cursor.position();
        let end = self.wal.durable_seq();
        self.stats
            .lag_events
            .store(end.saturating_sub(pos), Ordering::Relaxed);
        let secs = oldest_received_us.map_or(0, |r| {
            let now = jiff::Timestamp::now().as_microsecond();
            ((now - r).max(0) / 1_000_000) as u64
        });
        self.stats.lag_seconds.store(secs, Ordering::Relaxed);
    }

    /// Waits before the next attempt, watching the log's disk budget meanwhile.
    fn wait_failing(&mut self, d: Duration, stop: &AtomicBool) {
        let until = Instant::now() + d;
        let mut status = Instant::now() - Duration::from_secs(1);
        loop {
            if status.elapsed() >= Duration::from_secs(1) {
                self.write_status();
                status = Instant::now();
            }
            self.check_budget();
            let now = Instant::now();
            if now >= until || stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(until - now));
        }
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
                self.sink.name,
                self.stats.lag_events.load(Ordering::Relaxed),
                HOLD_LIMIT * 100.0
            );
            tracing::error!(sink = %self.sink.name, "{summary}");
            self.raise(
                "kubetrail-sink-backlog",
                "Sink backlog over the log's disk budget",
                &summary,
            );
        }
    }

    fn gap(&mut self, from: u64, seq: u64) {
        let n = seq - from;
        self.stats.skipped.fetch_add(n, Ordering::Relaxed);
        let summary = format!(
            "sink `{}` skipped {n} events (log records {from}..{}): the log released them before the sink \
             read them; they stay in the Parquet store",
            self.sink.name,
            seq - 1
        );
        tracing::error!(sink = %self.sink.name, skipped = n, "{summary}");
        self.raise("kubetrail-sink-gap", "Sink skipped events", &summary);
    }

    /// An alert about kubetrail itself, appended to `alerts.jsonl` like detection's (delivered the same way).
    fn raise(&self, rule: &str, title: &str, summary: &str) {
        let _ = crate::alerts::raise_system(
            &self.alerts,
            rule,
            title,
            "high",
            &self.sink.name,
            summary,
            &["kubetrail sinks status"],
        );
    }

    fn dead_letter(&self, batch: &[Pending], dead: &[(usize, String)]) -> anyhow::Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let at = jiff::Timestamp::now().to_string();
        let mut buf = Vec::new();
        for (i, reason) in dead {
            let p = &batch[*i];
            serde_json::to_writer(
                &mut buf,
                &DeadRecord {
                    at: at.clone(),
                    sink: self.sink.name.clone(),
                    reason: reason.clone(),
                    seq: p.seq,
                    id: p.id.clone(),
                    cluster: p.cluster.clone(),
                    received_us: p.received_us,
                    event: p.event.clone(),
                },
            )?;
            buf.push(b'\n');
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dlq)
            .with_context(|| format!("failed to open `{}`", self.dlq.display()))?;
        f.write_all(&buf)?;
        f.sync_data()?;
        self.stats
            .dead_lettered
            .fetch_add(dead.len() as u64, Ordering::Relaxed);
        tracing::error!(sink = %self.sink.name, records = dead.len(), reason = %dead[0].1, "records refused for good; dead-lettered");
        Ok(())
    }

    /// Replayed dead letters (`kubetrail sinks dlq replay`), a batch at a time, before new records.
    fn replay_round(
        &mut self,
        stop: &AtomicBool,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<bool> {
        let position: u64 = std::fs::read_to_string(&self.replay_cursor)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let Ok(mut f) = File::open(&self.replay) else {
            return Ok(false);
        };
        if f.metadata()?.len() <= position {
            return Ok(false);
        }
        f.seek(SeekFrom::Start(position))?;
        let mut reader = BufReader::new(f);
        let mut batch = Vec::new();
        let mut consumed = 0u64;
        let mut line = String::new();
        while batch.len() < self.sink.batching.max_events {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            consumed += n as u64;
            if let Ok(d) = serde_json::from_str::<DeadRecord>(&line) {
                batch.push(Pending {
                    seq: d.seq,
                    id: d.id,
                    cluster: d.cluster,
                    received_us: d.received_us,
                    event: d.event,
                });
            }
        }
        if consumed == 0 {
            return Ok(false);
        }
        if !batch.is_empty() {
            match self.send(&batch, stop, rt)? {
                Sent::Done => {}
                Sent::Stopped => return Ok(false),
            }
        }
        std::fs::write(&self.replay_cursor, (position + consumed).to_string())?;
        Ok(true)
    }

    fn write_status(&self) {
        // The log grows while a batch is retried: the lag counts what arrived meanwhile too.
        let lag = self
            .wal
            .durable_seq()
            .saturating_sub(self.cursor.position());
        self.stats.lag_events.store(lag, Ordering::Relaxed);
        let tmp = self.status.with_extension("json.tmp");
        let r = serde_json::to_vec_pretty(&self.stats.status())
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.status));
        if let Err(e) = r {
            tracing::warn!(sink = %self.sink.name, error = %e, "failed to write the sink status");
        }
    }
}

/// The status of every sink, as `serve` last wrote it.
pub fn statuses(data: &Path) -> anyhow::Result<Vec<Status>> {
    let dir = sinks_dir(data);
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
    let dir = sinks_dir(data);
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".dlq.jsonl"))
        .collect();
    files.sort();
    for f in files {
        for d in crate::alerts::read_lines::<DeadRecord>(&f)? {
            if sink.is_none_or(|s| s == d.sink) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// Queues the dead letters of `sink` (or of every sink) for sending again, before new records; the
/// dead-letter files are kept aside as `.replayed-<time>`. How many.
pub fn replay(data: &Path, sink: Option<&str>) -> anyhow::Result<usize> {
    let dir = sinks_dir(data);
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    for e in entries {
        let p = e?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let Some(sink_name) = name.strip_suffix(".dlq.jsonl") else {
            continue;
        };
        if sink.is_some_and(|s| s != sink_name) {
            continue;
        }
        let text = std::fs::read_to_string(&p)?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let replay = dir.join(format!("{sink_name}.replay.jsonl"));
        let mut f = OpenOptions::new().create(true).append(true).open(&replay)?;
        f.write_all(format!("{}\n", lines.join("\n")).as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&p, dir.join(format!("{name}.replayed-{stamp}")))?;
        n += lines.len();
    }
    Ok(n)
}
