//! The collector's storage housekeeping: the log converted into Parquet partitions within seconds, signed
//! checkpoints written periodically and at shutdown, and log segments released once converted (recorded as
//! deletions in a signed checkpoint first, so `verify` tells them from tampering).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kubetrail_pipeline::keys::KeyJournal;
use kubetrail_store::Wal;
use kubetrail_store::columnar::{ColumnarOptions, ColumnarWriter};
use kubetrail_store::integrity::{self, Signer};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How often a signed checkpoint is written while serving.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

/// How soon a failed periodic checkpoint is tried again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(60);

/// Converted log segments are released once the log uses more than this share of its disk budget.
const RELEASE_AT_SHARE: f64 = 0.5;

/// With the dedup keys kept beside the log, converted segments are released as they pile up: once this many
/// can go (1 GiB of default segments), or with the periodic checkpoint. Each release is a signed checkpoint,
/// so not every tick: at kube-apiserver's ceiling (~4,000 events/s) that is one every few minutes.
const RELEASE_SEGMENTS: usize = 16;
const RELEASE_EVERY: Duration = CHECKPOINT_EVERY;

/// Why converted segments are being released, which decides what may stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Serving, as they pile up: only when due, and only below what the dedup keys cover.
    Due,
    /// The log is filling: now, even if the dedup keys cannot be synced (room for events first).
    Room,
    /// A bulk import is done: now, but only below what the dedup keys cover.
    All,
}

/// The housekeeping's series: how far Parquet conversion is behind the log and how old the newest signed
/// checkpoint is.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    conversion_lag_events: Gauge,
    conversion_lag_seconds: Gauge,
    checkpoint_age_seconds: Gauge,
}

impl StoreMetrics {
    /// Registers the series (clones: they share their values) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "conversion_lag_events",
            "Records in the log not yet converted into Parquet",
            self.conversion_lag_events.clone(),
        );
        registry.register(
            "conversion_lag_seconds",
            "Seconds since Parquet conversion was last caught up with the log (0 when it is)",
            self.conversion_lag_seconds.clone(),
        );
        registry.register(
            "checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint was written (-1 before the first)",
            self.checkpoint_age_seconds.clone(),
        );
    }
}

/// Whether the log uses more than its share of the disk budget: converted segments are then released.
pub fn needs_room(wal: &Wal) -> bool {
    let usage = wal.usage();
    usage.bytes as f64 > usage.budget_bytes as f64 * RELEASE_AT_SHARE
}

pub struct Store {
    dir: PathBuf,
    wal: Arc<Wal>,
    columnar: ColumnarWriter,
    signer: Signer,
    /// When the next periodic checkpoint is due (also after a failed one, so a failure is retried once a
    /// minute rather than logged every second).
    next_checkpoint: Instant,
    /// Positions of other readers of the log (live detection): segments are released only once every one
    /// has read them.
    readers: Vec<Arc<AtomicU64>>,
    metrics: StoreMetrics,
    /// When conversion was last caught up with the log.
    caught_up: Instant,
    /// When the newest checkpoint was written, if one was.
    checkpointed: Option<std::time::SystemTime>,
    /// The dedup window's kept keys: with them, converted segments are released as they pile up, not only
    /// when the log fills (without, releasing would shorten the window a restart rebuilds from the log).
    keys: Option<Arc<KeyJournal>>,
    last_release: Instant,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn open(dir: &Path, wal: Arc<Wal>) -> anyhow::Result<Store> {
        let root = dir.join("store");
        let columnar = ColumnarWriter::open(&root, wal.clone(), ColumnarOptions::default())
            .with_context(|| format!("failed to open the columnar store `{}`", root.display()))?;
        let signer = crate::integrity_key::signer(dir)?;
        let checkpointed = integrity::latest_checkpoint(dir)
            .ok()
            .flatten()
            .and_then(|(path, _)| std::fs::metadata(path).ok()?.modified().ok());
        Ok(Store {
            dir: dir.to_path_buf(),
            wal,
            columnar,
            signer,
            next_checkpoint: Instant::now(),
            readers: Vec::new(),
            metrics: StoreMetrics::default(),
            caught_up: Instant::now(),
            checkpointed,
            keys: None,
            last_release: Instant::now(),
        })
    }

    /// Reports to `metrics` from the next tick on.
    pub fn report_to(&mut self, metrics: &StoreMetrics) {
        self.metrics = metrics.clone();
    }

    fn publish(&mut self) {
        let behind = self
            .wal
            .durable_seq()
            .saturating_sub(self.columnar.position());
        if behind == 0 {
            self.caught_up = Instant::now();
        }
        let m = &self.metrics;
        m.conversion_lag_events
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
        m.conversion_lag_seconds
            .set(self.caught_up.elapsed().as_secs() as i64);
        m.checkpoint_age_seconds.set(
            self.checkpointed
                .map_or(-1, |t| t.elapsed().map_or(0, |d| d.as_secs() as i64)),
        );
    }

    /// Releases converted log segments as they pile up (so the log's disk use stays flat), syncing `keys`
    /// first and never past what they cover.
    pub fn release_as_converted(&mut self, keys: Arc<KeyJournal>) {
        self.keys = Some(keys);
    }

    /// Keeps log segments until the reader at `position` has read them too.
    pub fn hold_for(&mut self, position: Arc<AtomicU64>) {
        self.readers.push(position);
    }

    /// The periodic work: convert what is due, checkpoint when due, release converted log segments as they
    /// pile up (with the dedup keys kept) or when the log fills. Call it every second or so.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        self.columnar
            .flush_if_due()
            .context("failed to convert the log into Parquet")?;
        if Instant::now() >= self.next_checkpoint {
            self.next_checkpoint = Instant::now() + CHECKPOINT_RETRY;
            // Small files (one per partition per flush) merged first; the removal's checkpoint is this
            // period's checkpoint.
            if !self.compact()? {
                self.checkpoint(&[])?;
            }
        }
        if needs_room(&self.wal) {
            self.release_converted(Release::Room)?;
        } else if self.keys.is_some() {
            self.release_converted(Release::Due)?;
        }
        self.publish();
        Ok(())
    }

    /// For bulk writers (`import`), after each batch: once the log uses more than half its disk budget,
    /// converts everything and releases the converted segments (recorded in a signed checkpoint first), so an
    /// import larger than the budget never fills the log.
    pub fn make_room(&mut self) -> anyhow::Result<()> {
        if !needs_room(&self.wal) {
            return Ok(());
        }
        self.columnar
            .flush()
            .context("failed to convert the log into Parquet")?;
        self.release_converted(Release::Room)
    }

    /// For bulk writers (`import`), at the end: releases every converted segment that every reader (see
    /// [`hold_for`](Self::hold_for)) has read and the dedup keys cover (the active one stays); nothing if the
    /// keys cannot be synced.
    pub fn release_all(&mut self) -> anyhow::Result<()> {
        self.release_converted(Release::All)
    }

    /// For bulk writers (`import`), beside the writing: converts the log in whole chunks while a whole chunk is
    /// waiting (the rest is left to [`finish_compacted`](Self::finish_compacted)), so conversion overlaps the
    /// writing instead of following it.
    pub fn convert_chunks(&mut self) -> anyhow::Result<()> {
        self.columnar
            .flush_chunks()
            .context("failed to convert the log into Parquet")?;
        Ok(())
    }

    /// Everything converted, small files and closed days merged, a checkpoint signed: the end of an import,
    /// which leaves the store as `serve` would after its first housekeeping.
    pub fn finish_compacted(&mut self) -> anyhow::Result<()> {
        self.columnar
            .flush()
            .context("failed to convert the log into Parquet")?;
        self.compact()?;
        self.checkpoint(&[])
    }

    /// Everything converted and a checkpoint signed: at shutdown.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.columnar
            .flush()
            .context("failed to convert the log into Parquet")?;
        self.checkpoint(&[])
    }

    fn checkpoint(&mut self, deletions: &[integrity::Deletion]) -> anyhow::Result<()> {
        let files = integrity::parquet_files(&self.dir)?;
        let path =
            integrity::write_checkpoint(&self.dir, &self.signer, &self.wal, &files, deletions)
                .context("failed to write a signed checkpoint")?;
        tracing::debug!(checkpoint = %path.display(), "signed checkpoint written");
        self.checkpointed = Some(std::time::SystemTime::now());
        self.next_checkpoint = Instant::now() + CHECKPOINT_EVERY;
        Ok(())
    }

    /// Merges small Parquet files, recording the inputs' removal in a signed checkpoint before they go, so
    /// `verify` tells compaction from tampering. Whether it wrote a checkpoint (it removed something).
    fn compact(&mut self) -> anyhow::Result<bool> {
        let (dir, signer, wal) = (&self.dir, &self.signer, &self.wal);
        let mut recorded = false;
        let stats = self
            .columnar
            .compact_recorded(&mut |paths| {
                let deletions: Vec<integrity::Deletion> = paths
                    .iter()
                    .map(|p| integrity::Deletion::file_compaction(p.strip_prefix(dir).unwrap_or(p)))
                    .collect();
                let files = integrity::parquet_files(dir).map_err(|e| e.to_string())?;
                integrity::write_checkpoint(dir, signer, wal, &files, &deletions)
                    .map_err(|e| e.to_string())?;
                recorded = true;
                Ok(())
            })
            .context("failed to compact the Parquet files")?;
        if recorded {
            self.next_checkpoint = Instant::now() + CHECKPOINT_EVERY;
            self.checkpointed = Some(std::time::SystemTime::now());
            tracing::info!(
                merges = stats.merges,
                files_in = stats.files_in,
                leftovers = stats.leftovers_removed,
                "compacted small Parquet files"
            );
        }
        Ok(recorded)
    }

    /// Releases log segments the columnar store has converted (and every reader has read), recording their
    /// deletion in a signed checkpoint before deleting them; see [`Release`] for when.
    fn release_converted(&mut self, why: Release) -> anyhow::Result<()> {
        let mut upto = self
            .readers
            .iter()
            .map(|p| p.load(Ordering::SeqCst))
            .fold(self.columnar.position(), u64::min);
        let mut deletions = integrity::wal_retention(&self.dir, upto)?;
        let due = why != Release::Due
            || deletions.len() >= RELEASE_SEGMENTS
            || self.last_release.elapsed() >= RELEASE_EVERY;
        if deletions.is_empty() || !due {
            return Ok(());
        }
        if let Some(keys) = &self.keys {
            match keys.sync() {
                Ok(covered) if covered < upto => {
                    upto = covered;
                    deletions = integrity::wal_retention(&self.dir, upto)?;
                    if deletions.is_empty() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) if why == Release::Room => tracing::warn!(
                    error = %e,
                    "releasing converted log segments although the dedup keys are not synced: retries of \
                     their events after a restart may be stored twice"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "keeping converted log segments until the dedup keys sync");
                    self.last_release = Instant::now();
                    return Ok(());
                }
            }
        }
        self.last_release = Instant::now();
        // Exactly the listed segments: `release_before` of a seq inside the active segment would also drop
        // segments the checkpoint does not record.
        let until = deletions
            .iter()
            .filter_map(|d| match d {
                integrity::Deletion::WalSegment { next_seq, .. } => Some(*next_seq),
                integrity::Deletion::File { .. } => None,
            })
            .max()
            .unwrap_or(0);
        self.checkpoint(&deletions)?;
        let freed = self
            .wal
            .release_before(until)
            .context("failed to release converted log segments")?;
        tracing::info!(
            segments = deletions.len(),
            bytes = freed,
            "released log segments converted into Parquet"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A bulk import many times the log's budget: converted and released as it goes, never full.
    #[test]
    fn make_room_keeps_a_bulk_import_under_the_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        crate::data::ensure(dir).unwrap();
        let opts = WalOptions {
            segment_bytes: 256 << 10,
            budget_bytes: 2 << 20,
            fsync: false,
        };
        let wal = crate::data::open_wal(dir, opts).unwrap();
        let mut store = Store::open(dir, wal.clone()).unwrap();
        let mut generator = Generator::new(Config::default());
        // ~1,300 bytes per event: 5,000 events are about three times the budget.
        for _ in 0..50 {
            append(&wal, &mut generator, 100);
            store.make_room().unwrap();
        }
        assert!(wal.usage().bytes <= 2 << 20, "{:?}", wal.usage());
        store.finish().unwrap();
        let key = store.signer.public_key();
        let report = integrity::verify_store(dir, &key).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert!(report.deleted_by_retention > 0, "segments were released");
        let rows: u64 = kubetrail_store::columnar::list_files(&dir.join("store"), None, None, None)
            .unwrap()
            .iter()
            .map(|f| f.last_seq - f.first_seq + 1)
            .sum();
        assert!(rows >= 5000, "{rows}");
    }

    /// With the dedup keys kept, a serving collector releases converted segments as they pile up (the log's
    /// disk use stays flat), far below the share of the budget that otherwise triggers it, and `verify`
    /// still passes. Without kept keys, nothing is released before then.
    #[test]
    fn converted_segments_are_released_as_they_pile_up_when_the_dedup_keys_are_kept() {
        for keep_keys in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            crate::data::ensure(dir).unwrap();
            let opts = WalOptions {
                segment_bytes: 64 << 10,
                fsync: false,
                ..WalOptions::default()
            };
            let wal = crate::data::open_wal(dir, opts).unwrap();
            let cfg = kubetrail_pipeline::PipelineConfig {
                dedup_keys: keep_keys.then(|| crate::data::dedup_keys(dir)),
                ..Default::default()
            };
            let redactor = crate::data::redactor(dir, &Default::default()).unwrap();
            let pipeline = kubetrail_pipeline::Pipeline::new(wal.clone(), redactor, cfg).unwrap();
            let mut store = Store::open(dir, wal.clone()).unwrap();
            if let Some(keys) = pipeline.dedup_keys() {
                store.release_as_converted(keys.clone());
            }
            let mut generator = Generator::new(Config::default());
            // An append never spans segments: each batch of 100 (~150 KB) seals one, 25 of them 24.
            for _ in 0..25 {
                let mut body = Vec::new();
                for _ in 0..100 {
                    generator.next_into(&mut body);
                    body.push(b'\n');
                }
                let o = pipeline.ingest_body(&body, "webhook", 1).unwrap();
                assert_eq!(o.events, 100);
            }
            store.columnar.flush().unwrap();
            let before = wal.usage().bytes;
            assert!(!needs_room(&wal), "far below the budget");
            store.tick().unwrap();
            let after = wal.usage().bytes;
            if keep_keys {
                assert!(after < before / 4, "released: {before} -> {after} bytes");
                let report = integrity::verify_store(dir, &store.signer.public_key()).unwrap();
                assert!(report.is_intact(), "{:?}", report.problems);
                assert!(report.deleted_by_retention >= RELEASE_SEGMENTS);
            } else {
                assert_eq!(after, before, "kept until the log fills");
            }
        }
    }

    use kubetrail_gen::{Config, Generator};
    use kubetrail_store::{EventRecord, WalOptions};

    use super::*;

    fn append(wal: &Wal, generator: &mut Generator, n: usize) {
        let mut records = Vec::new();
        for _ in 0..n {
            let mut line = Vec::new();
            generator.next_into(&mut line);
            let line = String::from_utf8(line).unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let rec = EventRecord {
                received_us: 1_767_225_600_000_000,
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
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        wal.append(&refs).unwrap();
    }

    /// Serving flushes one small file per partition every few seconds; the periodic housekeeping merges
    /// them, recording the removal in a signed checkpoint first, and `verify` still passes, while a merged
    /// file deleted by hand is still caught.
    #[test]
    fn compaction_is_recorded_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        crate::data::ensure(dir).unwrap();
        let wal = crate::data::open_wal(dir, WalOptions::default()).unwrap();
        let mut store = Store::open(dir, wal.clone()).unwrap();
        // 100 events/s from 2026-01-01T00:00Z: all in one hour partition.
        let mut generator = Generator::new(Config::default());
        for _ in 0..6 {
            append(&wal, &mut generator, 50);
            store.columnar.flush().unwrap();
        }
        let files = integrity::parquet_files(dir).unwrap();
        assert_eq!(files.len(), 6, "{files:?}");
        store.checkpoint(&[]).unwrap();

        store.next_checkpoint = Instant::now();
        store.tick().unwrap();
        let after = integrity::parquet_files(dir).unwrap();
        assert_eq!(after.len(), 1, "{after:?}");
        let key = store.signer.public_key();
        let report = integrity::verify_store(dir, &key).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.deleted_by_retention, 6);
        assert_eq!(report.files, 1);
        assert!(
            store.next_checkpoint > Instant::now() + Duration::from_secs(60),
            "the compaction's checkpoint counts as the period's"
        );

        std::fs::remove_file(dir.join(&after[0])).unwrap();
        let report = integrity::verify_store(dir, &key).unwrap();
        let problem = report
            .first_problem()
            .expect("a deleted merged file is caught");
        assert_eq!(problem.item, after[0].to_string_lossy());
    }
}
