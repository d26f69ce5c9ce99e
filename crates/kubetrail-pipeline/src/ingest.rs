//! The ingest pipeline proper: one decoded event flows through every stage into a [`Batch`], and a batch
//! becomes durable in one write-ahead log append.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kubetrail_model::{Event, Record, decode_value};
use kubetrail_policy::{Policy, RedactionCounts, Redactor};
use kubetrail_store::{EventRecord, MAX_PAYLOAD_BYTES, Wal, WalError};

use crate::dedup::{self, Digester, Seen, Window};
use crate::keys::{self, KeyEntry, KeyJournal};
use crate::metrics::{KindLabel, Metrics, SourceLabel};
use crate::shape;

/// The largest event text stored whole: the log's record limit, less room for the record's other fields
/// (five of at most 64 KiB each) and kubetrail's annotations. Larger events are stored cut
/// ([`shape::cut`]).
pub const MAX_EVENT_BYTES: usize = MAX_PAYLOAD_BYTES - (512 << 10);

/// How the pipeline behaves; the defaults suit a single cluster.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Stamped on events whose envelope names no cluster.
    pub cluster: String,
    /// The second-stage filter: events this policy would not keep are dropped before storage (for clusters
    /// whose own policy cannot be changed, such as EKS).
    pub filter: Option<Policy>,
    /// Recent records remembered to store apiserver retries once (and to notice a reused auditID).
    pub dedup_window: usize,
    /// Where the window's keys are kept beside the log ([`keys`](crate::keys)), so that released log
    /// segments do not shorten the window rebuilt after a restart. Without it the window is rebuilt from
    /// the log alone.
    pub dedup_keys: Option<std::path::PathBuf>,
    /// Bytes of batches processed at once; beyond it, senders are told to retry (429).
    pub max_inflight_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            cluster: "default".into(),
            filter: None,
            dedup_window: 1 << 20,
            dedup_keys: None,
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
    /// Events stored cut to fit the log's record limit.
    pub truncated: usize,
    /// Events stored whose (cluster, auditID, stage) an earlier event with other content had.
    pub reused_ids: usize,
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
    entries: Vec<Entry>,
    outcome: BatchOutcome,
}

/// A record that reused an earlier one's identity: its digest, and what the first request was if known.
type Reuse = (u64, Option<Box<str>>);

/// What the dedup window needs of one record of a batch.
#[derive(Debug)]
struct Entry {
    full: u64,
    id: u64,
    digest: u64,
    description: Box<str>,
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
    digester: Digester,
    cfg: PipelineConfig,
    dedup: Mutex<Window>,
    keys: Option<Arc<KeyJournal>>,
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
    /// Builds the pipeline over an open log, remembering its most recent records so that retries of batches
    /// stored before a restart are recognised (and a reuse of their auditIDs too): from the kept keys for
    /// records whose log segments were released, from the log for the rest.
    pub fn new(
        wal: Arc<Wal>,
        redactor: Redactor,
        cfg: PipelineConfig,
    ) -> Result<Pipeline, WalError> {
        let digester = Digester::new(redactor.derive_key(b"kubetrail/dedup/v1"));
        let mut window = Window::new(cfg.dedup_window);
        let from = wal.next_seq().saturating_sub(cfg.dedup_window as u64);
        // Kept keys that cannot be read or written leave the collector running on the log alone (as without
        // them): converted segments are then released only when the log fills.
        let kept = match &cfg.dedup_keys {
            Some(dir) => keys::read(dir).unwrap_or_else(|e| {
                tracing::error!(error = %e, dir = %dir.display(), "cannot read the dedup keys: the window is rebuilt from the log alone");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let mut inserted = Vec::new();
        let mut kept = kept.into_iter().filter(|k| k.seq >= from).peekable();
        for item in wal.read_from(from)? {
            let (seq, payload) = item?;
            // Keys of released records come first, in seq order.
            while let Some(k) = kept.next_if(|k| k.seq < seq) {
                if inserted.last().is_none_or(|l: &KeyEntry| l.seq < k.seq) {
                    window.insert_undescribed(k.full, k.id);
                    inserted.push(k);
                }
            }
            if let Ok(r) = EventRecord::decode(&payload) {
                let id = dedup::key(&r.cluster, &r.audit_id, &r.stage);
                // A reuse was annotated after its digest was taken: its variant holds the digest.
                let digest =
                    dedup::parse_variant(&r.variant).unwrap_or_else(|| digester.digest(&r.event));
                let full = dedup::full_key(id, digest);
                window.insert(full, id, || match Event::parse(&r.event) {
                    Ok(e) => describe(&e),
                    Err(_) => "(unreadable)".into(),
                });
                inserted.push(KeyEntry { seq, full, id });
            }
        }
        // Kept keys past the log's last record: none, unless the log lost its tail.
        let next = wal.next_seq();
        for k in kept.filter(|k| k.seq < next) {
            if inserted.last().is_none_or(|l| l.seq < k.seq) {
                window.insert_undescribed(k.full, k.id);
                inserted.push(k);
            }
        }
        let keys = cfg.dedup_keys.as_ref().and_then(|dir| {
            KeyJournal::start(dir, wal.clone(), cfg.dedup_window, &inserted)
                .inspect_err(|e| tracing::error!(error = %e, dir = %dir.display(), "cannot write the dedup keys: converted log segments are kept until the log fills"))
                .ok()
                .map(Arc::new)
        });
        let metrics = Metrics::default();
        let usage = wal.usage();
        metrics.wal_bytes.set(usage.bytes as i64);
        metrics.wal_budget_bytes.set(usage.budget_bytes as i64);
        Ok(Pipeline {
            wal,
            redactor,
            digester,
            cfg,
            dedup: Mutex::new(window),
            keys,
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

    /// The dedup window's kept keys, if [`PipelineConfig::dedup_keys`] names where: whoever releases log
    /// segments syncs them first and releases only below the seq [`KeyJournal::sync`] returns.
    pub fn dedup_keys(&self) -> Option<&Arc<KeyJournal>> {
        self.keys.as_ref()
    }

    /// Tries to make a failing log write again (cut back to its last synced record, a new segment), so that
    /// readiness comes back once space is freed even without traffic. Blocking file IO; cheap when healthy.
    pub fn heal(&self) {
        if self.wal.healthy().is_err() {
            let _ = self.wal.heal();
        }
        self.metrics
            .wal_failing
            .set(i64::from(self.wal.healthy().is_err()));
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

    /// Ok when new batches can be acknowledged: the log can write (it is not failing after a write or fsync
    /// error, such as a full disk) and is under its disk budget. Never blocks on IO: readiness probes come
    /// from anyone who can reach the listener; [`heal`](Self::heal) is the housekeeping's.
    pub fn ready(&self) -> Result<(), String> {
        let failing = self.wal.healthy();
        self.metrics.wal_failing.set(i64::from(failing.is_err()));
        failing.map_err(|e| format!("write-ahead log cannot write: {e}"))?;
        let u = self.wal.usage();
        if u.bytes >= u.budget_bytes {
            return Err(format!(
                "write-ahead log at its disk budget ({} of {} bytes)",
                u.bytes, u.budget_bytes
            ));
        }
        Ok(())
    }

    /// Adds one decoded event to `batch`: stamp, filter, cut to the record limit, redact, deduplicate,
    /// encode. Never fails: an event that cannot be stored is counted in the batch's outcome.
    pub fn add(
        &self,
        batch: &mut Batch,
        record: &Record<'_>,
        event: &Event<'_>,
        source: &str,
        received_us: i64,
    ) {
        if !self.accept(batch, event, source) {
            return;
        }
        let cluster = record.cluster.as_deref().unwrap_or(&self.cfg.cluster);
        if record.json.len() <= MAX_EVENT_BYTES {
            self.store(
                batch,
                cluster,
                event,
                &record.json,
                None,
                source,
                received_us,
            );
            return;
        }
        // Cut before redaction: the bodies dropped are never parsed.
        let size = record.json.len().to_string();
        let cut = shape::cut(&record.json, MAX_EVENT_BYTES, &size);
        match cut.as_deref().map(|c| (c, Event::parse(c))) {
            Some((text, Ok(cut_event))) => self.store(
                batch,
                cluster,
                &cut_event,
                text,
                Some(&size),
                source,
                received_us,
            ),
            _ => {
                self.metrics.skipped("truncated").inc();
                batch.skip(
                    format!("auditID `{}`", clip(&event.audit_id, 64)),
                    format!("event of {size} bytes could not be cut to the record limit"),
                );
            }
        }
    }

    /// Counts a received event; false if the second-stage filter drops it.
    fn accept(&self, batch: &mut Batch, event: &Event<'_>, source: &str) -> bool {
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
            return false;
        }
        true
    }

    /// Adds the beginning of an event that a source cut (a line longer than its limit): its metadata is
    /// stored, annotated `kubetrail.io/truncated: <original_len>`, if it holds at least an auditID and a
    /// stage; otherwise it is recorded as skipped at `location`.
    pub fn add_cut(
        &self,
        batch: &mut Batch,
        prefix: &[u8],
        original_len: u64,
        location: String,
        source: &str,
        received_us: i64,
    ) {
        // The cut may fall inside a UTF-8 sequence: keep what is valid.
        let text = match std::str::from_utf8(prefix) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&prefix[..e.valid_up_to()]).unwrap_or_default(),
        };
        let size = original_len.to_string();
        let cut = shape::cut(text, MAX_EVENT_BYTES, &size);
        match cut.as_deref().map(|c| (c, Event::parse(c))) {
            Some((c, Ok(event))) => {
                if self.accept(batch, &event, source) {
                    let cluster = self.cfg.cluster.clone();
                    self.store(batch, &cluster, &event, c, Some(&size), source, received_us);
                }
            }
            _ => {
                self.metrics.skipped("truncated").inc();
                batch.skip(
                    location,
                    format!(
                        "line of {original_len} bytes is over the limit and its beginning holds no auditID and stage"
                    ),
                );
            }
        }
    }

    /// Redacts, digests and encodes one event that fits. `truncated` is the original size of a cut event.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        batch: &mut Batch,
        cluster: &str,
        event: &Event<'_>,
        json: &str,
        truncated: Option<&str>,
        source: &str,
        received_us: i64,
    ) {
        let (redacted, counts) = self.redactor.redact(event, json);
        // Redaction markers can make a body of many tiny values larger than the limit: cut again. What is cut
        // is redacted text, so what remains is too.
        let mut truncated = truncated.map(str::to_string);
        let recut;
        let text = if redacted.as_str().len() > MAX_EVENT_BYTES {
            let size = truncated.get_or_insert_with(|| json.len().to_string());
            recut = shape::cut(redacted.as_str(), MAX_EVENT_BYTES, size);
            match recut.as_deref() {
                Some(t) => t,
                None => {
                    self.metrics.skipped("truncated").inc();
                    batch.skip(
                        format!("auditID `{}`", clip(&event.audit_id, 64)),
                        "event could not be cut to the record limit".into(),
                    );
                    return;
                }
            }
        } else {
            redacted.as_str()
        };
        let stage = event.stage.as_str();
        let digest = self.digester.digest(text);
        let id = dedup::key(cluster, &event.audit_id, stage);
        let full = dedup::full_key(id, digest);
        if batch.entries.iter().any(|e| e.full == full) || lock(&self.dedup).contains(full) {
            batch.outcome.duplicates += 1;
            return;
        }
        batch.outcome.redactions.add(&counts);
        if truncated.is_some() {
            batch.outcome.truncated += 1;
        }
        // The description names the request by its stored (redacted) URI.
        let description = if std::ptr::eq(text, json) {
            describe(event)
        } else {
            match Event::parse(text) {
                Ok(e) => describe(&e),
                Err(_) => describe(event),
            }
        };
        let rec = EventRecord {
            received_us,
            cluster: cluster.into(),
            source: source.into(),
            audit_id: event.audit_id.as_ref().into(),
            stage: stage.into(),
            variant: "".into(),
            event: text.into(),
        };
        rec.encode(&mut batch.buf);
        batch.ends.push(batch.buf.len());
        batch.entries.push(Entry {
            full,
            id,
            digest,
            description,
        });
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
            entries,
            mut outcome,
        } = batch;
        self.count_redactions(&outcome.redactions);
        self.metrics.duplicates.inc_by(outcome.duplicates as u64);
        self.metrics.filtered.inc_by(outcome.filtered as u64);
        if ends.is_empty() {
            return Ok(outcome);
        }
        // Reserve the records first so a concurrent retry of the same events is not stored twice; forget them
        // again if the append fails, so the sender's retry is not mistaken for a duplicate. A reused auditID is
        // decided here, in window order, so two batches racing with the same ID cannot both pass as first.
        let mut fresh = Vec::with_capacity(entries.len());
        let mut decided: Vec<(&[u8], Option<Reuse>)> = Vec::with_capacity(ends.len());
        {
            let mut window = lock(&self.dedup);
            let mut start = 0;
            for (end, e) in ends.iter().zip(entries) {
                let payload = &buf[start..*end];
                start = *end;
                let Entry {
                    full,
                    id,
                    digest,
                    description,
                } = e;
                match window.insert(full, id, || description) {
                    Seen::Duplicate => {
                        outcome.duplicates += 1;
                        self.metrics.duplicates.inc();
                    }
                    Seen::First => {
                        fresh.push((full, id));
                        decided.push((payload, None));
                    }
                    Seen::Reuse(first) => {
                        fresh.push((full, id));
                        outcome.reused_ids += 1;
                        decided.push((payload, Some((digest, first))));
                    }
                }
            }
        }
        // Marking a reuse rewrites the event: done outside the lock, so large reused events (which anyone
        // with API access can send) never hold up other batches.
        let payloads: Vec<std::borrow::Cow<'_, [u8]>> = decided
            .into_iter()
            .map(|(payload, reuse)| match reuse {
                None => payload.into(),
                Some((digest, first)) => mark_reuse(payload, digest, first.as_deref()).into(),
            })
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_ref()).collect();
        let t = Instant::now();
        let gate = self.keys.as_ref().map(|k| k.commit_gate());
        let appended = self.wal.append(&refs);
        if let (Some(keys), Ok(seqs)) = (&self.keys, &appended) {
            keys.record(seqs.start, &fresh);
        }
        drop(gate);
        self.metrics
            .append_seconds
            .observe(t.elapsed().as_secs_f64());
        let usage = self.wal.usage();
        self.metrics.wal_bytes.set(usage.bytes as i64);
        match appended {
            Ok(_) => {
                outcome.events = refs.len();
                outcome.bytes = refs.iter().map(|p| p.len() as u64).sum();
                self.metrics.persisted.inc_by(outcome.events as u64);
                self.metrics.persisted_bytes.inc_by(outcome.bytes);
                self.metrics.truncated.inc_by(outcome.truncated as u64);
                self.metrics.reused_ids.inc_by(outcome.reused_ids as u64);
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

    fn count_redactions(&self, counts: &RedactionCounts) {
        for (kind, n) in redaction_kinds(counts) {
            if n > 0 {
                self.metrics
                    .redactions
                    .get_or_create(&KindLabel { kind: kind.into() })
                    .inc_by(n);
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

fn redaction_kinds(c: &RedactionCounts) -> [(&'static str, u64); 8] {
    [
        ("secret_value", c.secret_values),
        ("token_request_token", c.token_request_tokens),
        ("token_review_token", c.token_review_tokens),
        ("uri_token", c.uri_tokens),
        ("configmap_value", c.configmap_values),
        ("env_value", c.env_values),
        ("command_arg", c.command_args),
        ("dropped_body", c.dropped_bodies),
    ]
}

/// The record of a request that reused an earlier one's identity: annotated with what the first was, its
/// digest as the variant. A record that does not decode (never: the pipeline just encoded it) stays as is.
fn mark_reuse(payload: &[u8], digest: u64, first: Option<&str>) -> Vec<u8> {
    let Ok(rec) = EventRecord::decode(payload) else {
        return payload.to_vec();
    };
    let first = match first {
        Some(d) => format!("earlier request with the same auditID and stage: {d}"),
        None => "earlier request with the same auditID and stage (no longer in memory: query the auditID)"
            .to_string(),
    };
    let annotated = shape::annotate(&rec.event, shape::AUDIT_ID_REUSE, &first);
    let variant = dedup::variant(digest);
    let rec = EventRecord {
        variant: variant.as_str().into(),
        event: annotated.map_or(rec.event.clone(), Into::into),
        ..rec.clone()
    };
    let mut out = Vec::with_capacity(rec.encoded_len());
    rec.encode(&mut out);
    out
}

/// What a request was, for naming it when its auditID is reused: verb, URI, user and time.
fn describe(e: &Event<'_>) -> Box<str> {
    let user: &str = if e.user.username.is_empty() {
        "(no user)"
    } else {
        &e.user.username
    };
    let time = e.request_received_timestamp.as_deref().unwrap_or("");
    let parts = [&e.verb, " ", &e.request_uri, " by ", user, " at ", time];
    let parts = if time.is_empty() {
        &parts[..5]
    } else {
        &parts[..]
    };
    // One allocation of the final size: this runs for every stored event.
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let mut d = String::with_capacity(len.min(dedup::MAX_DESCRIPTION));
    for p in parts {
        let room = dedup::MAX_DESCRIPTION - d.len();
        d.push_str(clip(p, room));
        if p.len() > room {
            break;
        }
    }
    d.into_boxed_str()
}

/// `s` cut to at most `max` bytes at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `file:/var/log/...` -> `file`: metric labels stay few.
fn source_kind(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}
