//! The collector's storage housekeeping: the log converted into Parquet partitions within seconds, signed
//! checkpoints written periodically and at shutdown, and log segments released once converted (recorded as
//! deletions in a signed checkpoint first, so `verify` tells them from tampering).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kubetrail_store::Wal;
use kubetrail_store::columnar::{ColumnarOptions, ColumnarWriter};
use kubetrail_store::integrity::{self, Signer};

/// How often a signed checkpoint is written while serving.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

/// How soon a failed periodic checkpoint is tried again.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(60);

/// Converted log segments are released once the log uses more than this share of its disk budget.
const RELEASE_AT_SHARE: f64 = 0.5;

pub struct Store {
    dir: PathBuf,
    wal: Arc<Wal>,
    columnar: ColumnarWriter,
    signer: Signer,
    /// When the next periodic checkpoint is due (also after a failed one, so a failure is retried once a
    /// minute rather than logged every second).
    next_checkpoint: Instant,
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
        Ok(Store {
            dir: dir.to_path_buf(),
            wal,
            columnar,
            signer,
            next_checkpoint: Instant::now(),
        })
    }

    /// The periodic work: convert what is due, checkpoint when due, release converted log segments when the
    /// log fills. Call it every second or so.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        self.columnar
            .flush_if_due()
            .context("failed to convert the log into Parquet")?;
        if Instant::now() >= self.next_checkpoint {
            self.next_checkpoint = Instant::now() + CHECKPOINT_RETRY;
            self.checkpoint(&[])?;
        }
        let usage = self.wal.usage();
        if usage.bytes as f64 > usage.budget_bytes as f64 * RELEASE_AT_SHARE {
            self.release_converted()?;
        }
        Ok(())
    }

    /// Everything converted and a checkpoint signed: at shutdown and at the end of an import.
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
        self.next_checkpoint = Instant::now() + CHECKPOINT_EVERY;
        Ok(())
    }

    /// Releases log segments the columnar store has converted, recording their deletion in a signed checkpoint
    /// before deleting them.
    fn release_converted(&mut self) -> anyhow::Result<()> {
        let upto = self.columnar.position();
        let deletions = integrity::wal_retention(&self.dir, upto)?;
        if deletions.is_empty() {
            return Ok(());
        }
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
