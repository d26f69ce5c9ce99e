//! `kubetrail import`: audit files through the same pipeline as the collector, into the data directory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use kubetrail_pipeline::{Batch, BatchOutcome, Pipeline, PipelineConfig};

use crate::Outcome;
use crate::report::{bytes, thousands};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubetrail import /var/log/kubernetes/audit/audit.log audit-2026-11-01T00-00-00.000.log.gz\n  \
                        aws logs tail /aws/eks/prod/cluster --format json | kubetrail import --cluster prod -\n  \
                        kubetrail import --data /var/lib/kubetrail gke-audit-export.json"
)]
pub struct ImportArgs {
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// Cluster name stamped on events whose envelope names none.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Drop events this AuditPolicy would not keep (a second-stage filter).
    #[arg(long, value_name = "POLICY")]
    pub filter_policy: Option<PathBuf>,
    /// The collector's config: its `redaction` additions apply (as `serve` applies them), and its
    /// `filter_policy` unless --filter-policy is given.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Audit files: JSON lines, arrays or EventLists, native or EKS/GKE/AKS exports, plain or gzip; `-` is stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Records per log append: large enough that the fsync is amortised.
const BATCH_BYTES: usize = 4 << 20;

/// How often the converter looks for a whole chunk of the log to convert.
const CONVERT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

pub fn run(args: ImportArgs) -> anyhow::Result<Outcome> {
    let dir = kubetrail_runtime::data::resolve(args.data, None);
    kubetrail_runtime::data::ensure(&dir)?;
    let _writer = kubetrail_runtime::data::lock_writer(&dir, "import")?;
    let cfg_file = args
        .config
        .as_deref()
        .map(kubetrail_runtime::config::Config::load)
        .transpose()?
        .unwrap_or_default();
    let filter = args
        .filter_policy
        .as_deref()
        .or(cfg_file.filter_policy.as_deref())
        .map(kubetrail_runtime::config::load_filter)
        .transpose()?;
    let wal = kubetrail_runtime::data::open_wal(
        &dir,
        kubetrail_runtime::config::WalConfig::options(cfg_file.wal.as_ref()),
    )?;
    let cfg = PipelineConfig {
        cluster: args.cluster,
        filter,
        dedup_keys: Some(kubetrail_runtime::data::dedup_keys(&dir)),
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::new(
        wal,
        kubetrail_runtime::data::redactor(&dir, &cfg_file.redaction)?,
        cfg,
    )?;

    let started = Instant::now();
    let progress = crate::progress::bytes_bar(kubetrail_runtime::input::total_size(&args.files));
    // Three things overlap: decoding, parsing and redacting (this thread); writing, hashing and fsyncing the
    // previous batch (the committer); and converting whole chunks of the log into Parquet (the converter). On
    // two cores the import runs at the pace of its slowest part, not their sum.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
    let mut store =
        kubetrail_runtime::service::housekeeping::Store::open(&dir, pipeline.wal().clone())?;
    if let Some(keys) = pipeline.dedup_keys() {
        store.release_as_converted(keys.clone());
    }
    // `serve`'s readers (detection, each sink) read what is imported when it next runs: kept for them.
    // (The conversion's own cursor is the store's position, which the release already respects.)
    let readers = pipeline.wal().cursors()?;
    let lowest = readers
        .iter()
        .filter(|(name, _)| name != kubetrail_store::columnar::CURSOR_NAME)
        .map(|(_, position)| *position)
        .min();
    if let Some(lowest) = lowest {
        store.hold_for(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            lowest,
        )));
    }
    let store = std::sync::Mutex::new(store);
    let reading = std::sync::atomic::AtomicBool::new(true);
    // Set when conversion failed: reading stops there rather than filling the log with what cannot be
    // converted (what is in the log stays; the error is reported).
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (stats, total) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let (pipeline, store, reading, failed) = (&pipeline, &store, &reading, &failed);
        let lock = || store.lock().unwrap_or_else(|e| e.into_inner());
        let converter = scope.spawn(move || -> anyhow::Result<()> {
            while reading.load(std::sync::atomic::Ordering::Acquire) {
                if let Err(e) = lock().convert_chunks() {
                    failed.store(true, std::sync::atomic::Ordering::Release);
                    return Err(e);
                }
                std::thread::sleep(CONVERT_POLL);
            }
            Ok(())
        });
        let committer = scope.spawn(move || -> anyhow::Result<BatchOutcome> {
            let mut total = BatchOutcome::default();
            for batch in rx {
                let o = pipeline.commit(batch)?;
                // An import larger than the log's budget is converted and released as it goes (waiting for
                // the converter's chunk if one is being written: the log cannot outgrow its budget).
                if kubetrail_runtime::service::housekeeping::needs_room(pipeline.wal()) {
                    lock().make_room()?;
                }
                total.events += o.events;
                total.bytes += o.bytes;
                total.duplicates += o.duplicates;
                total.filtered += o.filtered;
                total.redactions.add(&o.redactions);
            }
            Ok(total)
        });
        let mut batch = Batch::new();
        let read = kubetrail_runtime::input::for_each_event(
            &args.files,
            &mut |b| progress.set_position(b),
            &mut |record, event| {
                if failed.load(std::sync::atomic::Ordering::Acquire) {
                    anyhow::bail!("the import stopped: conversion failed");
                }
                pipeline.add(
                    &mut batch,
                    record,
                    event,
                    "import",
                    kubetrail_runtime::data::now_us(),
                );
                if batch.bytes() >= BATCH_BYTES && tx.send(std::mem::take(&mut batch)).is_err() {
                    // The committer stopped: its error is reported below.
                    anyhow::bail!("the import stopped");
                }
                Ok(())
            },
        );
        let _ = tx.send(batch);
        drop(tx);
        let total = committer
            .join()
            .map_err(|_| anyhow::anyhow!("the committer thread panicked"));
        reading.store(false, std::sync::atomic::Ordering::Release);
        let converted = converter
            .join()
            .map_err(|_| anyhow::anyhow!("the converter thread panicked"));
        // A storage error explains a stopped read better than the read's own error.
        let total = total??;
        converted??;
        Ok((read?, total))
    })?;
    let mut store = store.into_inner().unwrap_or_else(|e| e.into_inner());
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    kubetrail_runtime::input::report_skipped(&stats);
    eprintln!(
        "read {} events from {} file{} in {:.1}s ({:.0} events/s): {} stored ({}), {} already stored, {} filtered, \
         {} skipped, {} values redacted",
        thousands(stats.records),
        stats.files,
        if stats.files == 1 { "" } else { "s" },
        secs,
        stats.records as f64 / secs.max(1e-9),
        thousands(total.events as u64),
        bytes(total.bytes),
        thousands(total.duplicates as u64),
        thousands(total.filtered as u64),
        thousands(stats.skipped_total),
        thousands(total.redactions.total()),
    );
    // Queryable at once, and covered by a signed checkpoint.
    let converting = Instant::now();
    eprintln!("converting into Parquet, merging closed days and signing a checkpoint...");
    store.finish_compacted()?;
    // Converted and checkpointed: the log's copy goes, as `serve` releases it, except what `serve`'s readers
    // have not read yet (the dedup keys stay, so importing the same file again, within the dedup window of
    // 1,048,576 records, stores nothing twice).
    store.release_all()?;
    eprintln!(
        "done in {:.1}s; data directory: {}",
        converting.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(Outcome::Ok)
}
