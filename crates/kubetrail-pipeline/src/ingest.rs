//! The ingest pipeline proper: one decoded event flows through every stage into a [`Batch`], and a batch
//! becomes durable in one write-ahead log append.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kubetrail_model::{Event, Record, decode_value};
use kubetrail_policy::{Policy, RedactionCounts, Redactor};
use kubetrail_store::{EventRecord, Wal, WalError};

use crate::dedup::{self, Window};
use crate::metrics::{KindLabel, Metrics, SourceLabel};

/// How the pipeline behaves; the defaults suit a single cluster.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Stamped on events whose envelope names no cluster.
    pub cluster: String,
    /// The second-stage filter: events this policy would not keep are dropped before storage (for clusters
    /// whose own policy cannot be changed, such as EKS).
    pub filter: Option<Policy>,
    /// Recent (auditID, stage) pairs remembered to store apiserver retries once.
    pub dedup_window: usize,
    /// Bytes of batches processed at once; beyond it, senders are told to retry (429).
    pub max_inflight_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            cluster: "default".into(),
            filter: None,
            dedup_window: 1 << 20,
            max_inflight_bytes: 256 << 20,
        }
    }
}

/// A value that held no storable event, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedValue {
    /// Where in the batch: `line 3`, `item 12`.
    pub location: String,
    pub reason: String,
}

/// What became of a batch.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// Events durably stored.
    pub events: usize,
    pub bytes: u64,
    pub duplicates: usize,
    pub filtered: usize,
    pub skipped: usize,
    /// The first skipped values (at most [`KEPT_SKIPS`]).
    pub skipped_values: Vec<SkippedValue>,
    pub redactions: RedactionCounts,
}

/// Details of skipped values kept per batch.
pub const KEPT_SKIPS: usize = 20;

/// Why a batch was not stored. Nothing of a refused batch is stored: the sender may retry it whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Nothing in the body is an audit event.
    #[error("no audit event in the request: {0}")]
    Malformed(String),
    /// Too much is being processed at once; retry shortly.
    #[error("overloaded: {inflight} bytes in flight, limit {limit}")]
    Overloaded { inflight: usize, limit: usize },
    /// The write-ahead log is at its disk budget: nothing more is acknowledged until space is freed.
    #[error("write-ahead log full: {used} of {budget} bytes used")]
    Full { used: u64, budget: u64 },
    #[error("failed to write the write-ahead log: {0}")]
    Wal(#[source] WalError),
}

/// Events on their way into one log append.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
    keys: Vec<u64>,
    outcome: BatchOutcome,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Bytes of encoded records in the batch.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Records a value that held no storable event.
    pub fn skip(&mut self, location: String, reason: String) {
        self.outcome.skipped += 1;
        if self.outcome.skipped_values.len() < KEPT_SKIPS {
            self.outcome
                .skipped_values
                .push(SkippedValue { location, reason });
        }
    }
}

/// The pipeline: shared by every source of a process.
#[derive(Debug)]
pub struct Pipeline {
    wal: Arc<Wal>,
    redactor: Redactor,
    cfg: PipelineConfig,
    dedup: Mutex<Window>,
    inflight: Mutex<usize>,
    metrics: Metrics,
}

/// Releases its share of the in-flight budget when dropped.
#[derive(Debug)]
pub struct InflightGuard<'p> {
    pipeline: &'p Pipeline,
    bytes: usize,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut n = lock(&self.pipeline.inflight);
        *n -= self.bytes;
        self.pipeline.metrics.inflight_bytes.set(*n as i64);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (counters, a set): keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pipeline {
    /// Builds the pipeline over an open log, remembering the keys of its most recent records so that retries
    /// of batches stored before a restart are recognised.
    pub fn new(
        wal: Arc<Wal>,
        redactor: Redactor,
        cfg: PipelineConfig,
    ) -> Result<Pipeline, WalError> {
        let mut window = Window::new(cfg.dedup_window);
        let from = wal.next_seq().saturating_sub(cfg.dedup_window as u64);
        for item in wal.read_from(from)? {
            let (_, payload) = item?;
            if let Ok(r) = EventRecord::decode(&payload) {
                window.insert(dedup::key(&r.cluster, &r.audit_id, &r.stage));
            }
        }
        let metrics = Metrics::default();
        let usage = wal.usage();
        metrics.wal_bytes.set(usage.bytes as i64);
        metrics.wal_budget_bytes.set(usage.budget_bytes as i64);
        Ok(Pipeline {
            wal,
            redactor,
            cfg,
            dedup: Mutex::new(window),
            inflight: Mutex::new(0),
            metrics,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// Reserves `bytes` of the in-flight budget, or says the pipeline is overloaded (answer 429).
    pub fn admit(&self, bytes: usize) -> Result<InflightGuard<'_>, IngestError> {
        let mut n = lock(&self.inflight);
        // One batch larger than the whole budget is still admitted when nothing else is in flight.
        if *n > 0 && *n + bytes > self.cfg.max_inflight_bytes {
            self.metrics.rejected("overloaded").inc();
            return Err(IngestError::Overloaded {
                inflight: *n,
                limit: self.cfg.max_inflight_bytes,
            });
        }
        *n += bytes;
        self.metrics.inflight_bytes.set(*n as i64);
        Ok(InflightGuard {
            pipeline: self,
            bytes,
        })
    }

    /// Ok when new batches can be acknowledged (the log is under its disk budget).
    pub fn ready(&self) -> Result<(), String> {
        let u = self.wal.usage();
        if u.bytes >= u.budget_bytes {
            return Err(format!(
                "write-ahead log at its disk budget ({} of {} bytes)",
                u.bytes, u.budget_bytes
            ));
        }
        Ok(())
    }

    /// Adds one decoded event to `batch`: stamp, redact, filter, deduplicate, encode. Never fails: an event
    /// that cannot be stored is counted in the batch's outcome.
    pub fn add(
        &self,
        batch: &mut Batch,
        record: &Record<'_>,
        event: &Event<'_>,
        source: &str,
        received_us: i64,
    ) {
        self.metrics
            .received
            .get_or_create(&SourceLabel {
                source: source_kind(source).into(),
            })
            .inc();
        if let Some(filter) = &self.cfg.filter
            && !filter.evaluate(&event.attributes()).keeps(event.stage)
        {
            batch.outcome.filtered += 1;
            return;
        }
        let cluster = record.cluster.as_deref().unwrap_or(&self.cfg.cluster);
        let key = dedup::key(cluster, &event.audit_id, event.stage.as_str());
        if batch.keys.contains(&key) || lock(&self.dedup).contains(key) {
            batch.outcome.duplicates += 1;
            return;
        }
        let (redacted, counts) = self.redactor.redact(event, &record.json);
        batch.outcome.redactions.add(&counts);
        let rec = EventRecord {
            received_us,
            cluster: record
                .cluster
                .as_deref()
                .unwrap_or(&self.cfg.cluster)
                .into(),
            source: source.into(),
            audit_id: event.audit_id.as_ref().into(),
            stage: event.stage.as_str().into(),
            event: redacted.as_str().into(),
        };
        rec.encode(&mut batch.buf);
        batch.ends.push(batch.buf.len());
        batch.keys.push(key);
    }

    /// Decodes a body (an `EventList`, a single event, an array, or JSON lines; native or a cloud envelope)
    /// into `batch`; values that hold no event are recorded as skipped, with where and why.
    pub fn decode_into(&self, batch: &mut Batch, body: &str, source: &str, received_us: i64) {
        let handle = |loc: String,
                      r: Result<Record<'_>, kubetrail_model::DecodeError>,
                      batch: &mut Batch| match r {
            Ok(record) => match Event::parse(&record.json) {
                Ok(event) => self.add(batch, &record, &event, source, received_us),
                Err(e) => {
                    self.metrics.skipped("malformed").inc();
                    batch.skip(loc, format!("not an audit event: {e}"))
                }
            },
            Err(e) => {
                self.metrics.skipped("malformed").inc();
                batch.skip(loc, e.reason)
            }
        };
        let trimmed = body.trim_start();
        // The apiserver's webhook sends one compact EventList; a multi-line body is JSON lines, unless it is
        // one pretty-printed document (checked last: it costs a scan of the body).
        let whole = trimmed.starts_with('[')
            || trimmed.starts_with(r#"{"kind":"EventList""#)
            || !trimmed.trim_end().contains('\n')
            || serde_json::from_str::<&serde_json::value::RawValue>(trimmed).is_ok();
        if whole {
            let mut index = 0;
            decode_value(body, &mut |r| {
                index += 1;
                handle(format!("item {index}"), r, batch)
            });
            return;
        }
        for (n, line) in body.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            decode_value(line, &mut |r| handle(format!("line {}", n + 1), r, batch));
        }
    }

    /// Makes a batch durable: one log append (fsynced, group-committed with concurrent batches). Only after
    /// this returns Ok may the sender be told the events are stored.
    pub fn commit(&self, batch: Batch) -> Result<BatchOutcome, IngestError> {
        let Batch {
            buf,
            ends,
            keys,
            mut outcome,
        } = batch;
        for (kind, n) in redaction_kinds(&outcome.redactions) {
            if n > 0 {
                self.metrics
                    .redactions
                    .get_or_create(&KindLabel { kind: kind.into() })
                    .inc_by(n);
            }
        }
        self.metrics.duplicates.inc_by(outcome.duplicates as u64);
        self.metrics.filtered.inc_by(outcome.filtered as u64);
        if ends.is_empty() {
            return Ok(outcome);
        }
        // Reserve the keys first so a concurrent retry of the same events is not stored twice; forget them
        // again if the append fails, so the sender's retry is not mistaken for a duplicate.
        let mut fresh = Vec::with_capacity(keys.len());
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(ends.len());
        {
            let mut window = lock(&self.dedup);
            let mut start = 0;
            for (end, key) in ends.iter().zip(&keys) {
                if window.insert(*key) {
                    fresh.push(*key);
                    payloads.push(&buf[start..*end]);
                } else {
                    outcome.duplicates += 1;
                    self.metrics.duplicates.inc();
                }
                start = *end;
            }
        }
        let t = Instant::now();
        let appended = self.wal.append(&payloads);
        self.metrics
            .append_seconds
            .observe(t.elapsed().as_secs_f64());
        let usage = self.wal.usage();
        self.metrics.wal_bytes.set(usage.bytes as i64);
        match appended {
            Ok(_) => {
                outcome.events = payloads.len();
                outcome.bytes = payloads.iter().map(|p| p.len() as u64).sum();
                self.metrics.persisted.inc_by(outcome.events as u64);
                self.metrics.persisted_bytes.inc_by(outcome.bytes);
                Ok(outcome)
            }
            Err(e) => {
                lock(&self.dedup).remove_all(&fresh);
                match e {
                    WalError::Full { used, budget } => {
                        self.metrics.rejected("wal_full").inc();
                        Err(IngestError::Full { used, budget })
                    }
                    e => {
                        self.metrics.rejected("wal_error").inc();
                        Err(IngestError::Wal(e))
                    }
                }
            }
        }
    }

    /// A whole body, decoded and stored: what the webhook does per request. Blocking (fsync): call it from a
    /// blocking thread. A body in which nothing at all could be read is `Malformed`.
    pub fn ingest_body(
        &self,
        body: &[u8],
        source: &str,
        received_us: i64,
    ) -> Result<BatchOutcome, IngestError> {
        let Ok(text) = std::str::from_utf8(body) else {
            self.metrics.skipped("malformed").inc();
            return Err(IngestError::Malformed("the body is not UTF-8 text".into()));
        };
        let mut batch = Batch::new();
        self.decode_into(&mut batch, text, source, received_us);
        let o = &batch.outcome;
        if batch.is_empty() && o.duplicates == 0 && o.filtered == 0 && o.skipped > 0 {
            let first = o
                .skipped_values
                .first()
                .map(|s| format!("{}: {}", s.location, s.reason))
                .unwrap_or_default();
            return Err(IngestError::Malformed(first));
        }
        self.commit(batch)
    }
}

fn redaction_kinds(c: &RedactionCounts) -> [(&'static str, u64); 5] {
    [
        ("secret_value", c.secret_values),
        ("token_request_token", c.token_request_tokens),
        ("token_review_token", c.token_review_tokens),
        ("uri_token", c.uri_tokens),
        ("dropped_body", c.dropped_bodies),
    ]
}

/// `file:/var/log/...` -> `file`: metric labels stay few.
fn source_kind(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}
