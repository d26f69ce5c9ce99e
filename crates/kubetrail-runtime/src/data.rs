//! The data directory: where the write-ahead log, the redaction key and the file-source checkpoints live.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use kubetrail_policy::{RedactionKey, Redactor};
use kubetrail_store::{Wal, WalOptions};

/// `--data` (or `KUBETRAIL_DATA`, which clap reads into it), else the config's `data`, else
/// `./kubetrail-data`.
pub fn resolve(flag: Option<PathBuf>, config: Option<PathBuf>) -> PathBuf {
    flag.or(config)
        .unwrap_or_else(|| PathBuf::from("./kubetrail-data"))
}

/// The exclusive right to write a data directory's log and store, held for a process's life (or a command's):
/// one writer at a time, so a second `serve`, an `import` or a `retention apply` while `serve` runs fails
/// with a clear error instead of two processes appending to one log.
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

const LOCK_FILE: &str = ".writer.lock";

/// Takes the writer lock of `dir` for `command` (`serve`, `import`, ...), or says who holds it.
pub fn lock_writer(dir: &Path, command: &str) -> anyhow::Result<WriterLock> {
    match try_lock_writer(dir, command)? {
        Some(lock) => Ok(lock),
        None => {
            let holder = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap_or_default();
            let holder = holder.trim();
            bail!(
                "data directory `{}` is in use by {}: stop it first (queries, `who`, `timeline`, `scope`, \
                 `verify` and `retention plan` work while it runs)",
                dir.display(),
                if holder.is_empty() {
                    "another kubetrail process".to_string()
                } else {
                    format!("`kubetrail {holder}`")
                }
            )
        }
    }
}

/// The writer lock of `dir` if no other process holds it.
pub fn try_lock_writer(dir: &Path, command: &str) -> anyhow::Result<Option<WriterLock>> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("failed to open the lock file `{}`", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("failed to lock `{}`", path.display()));
        }
    }
    // Who holds it, for the error another process prints.
    file.set_len(0)?;
    file.write_all(format!("{command} (pid {})\n", std::process::id()).as_bytes())?;
    Ok(Some(WriterLock { _file: file }))
}

/// Creates the directory (owner-only) if needed.
pub fn ensure(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create data directory `{}`", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Where the ingest pipeline keeps its dedup window's keys (see `kubetrail_pipeline::keys`).
pub fn dedup_keys(dir: &Path) -> PathBuf {
    dir.join("dedup")
}

/// The installation's redactor: its key (`redaction.key`, 32 random bytes, mode 0600, created on first use;
/// the same key gives the same fingerprints, so an investigator can tell a value changed across a year of
/// data) and the config's additions to the secret-like patterns.
pub fn redactor(dir: &Path, extra: &kubetrail_policy::RedactionConfig) -> anyhow::Result<Redactor> {
    let path = dir.join("redaction.key");
    let mut key = [0u8; 32];
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .with_context(|| format!("failed to read `{}`", path.display()))?;
            if buf.len() != 32 {
                bail!(
                    "`{}` is damaged: expected 32 bytes, found {}; restore it from backup",
                    path.display(),
                    buf.len()
                );
            }
            key.copy_from_slice(&buf);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            getrandom::fill(&mut key).map_err(|e| {
                anyhow::anyhow!("failed to get random bytes for the redaction key: {e}")
            })?;
            let tmp = dir.join("redaction.key.tmp");
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&tmp)
                .with_context(|| format!("failed to create `{}`", tmp.display()))?;
            f.write_all(&key)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("failed to create `{}`", path.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("failed to open `{}`", path.display())),
    }
    Ok(Redactor::with_config(RedactionKey::from_bytes(key), extra))
}

/// Opens (recovering) the write-ahead log under `dir/wal`. Recovery never goes back under a seq that the
/// newest checkpoint covers or that a Parquet file holds (nor under a reader's cursor): when damage cut the
/// log below one, it continues after it, logs the lost seqs as an error, and [`Wal::damage`] describes them
/// (for the `kt-log-damaged` alert).
pub fn open_wal(dir: &Path, opts: WalOptions) -> anyhow::Result<Arc<Wal>> {
    let path = dir.join("wal");
    // The seqs seen outside the log: checkpoint heads (file names only), Parquet files (their names).
    let checkpointed = match kubetrail_store::integrity::latest_checkpoint_seq(dir) {
        Ok(seq) => seq.unwrap_or(0),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the checkpoints: the log's recovery does not know their head");
            0
        }
    };
    let converted = match kubetrail_store::columnar::list_files(
        &dir.join("store"),
        None,
        None,
        None,
    ) {
        Ok(files) => files.iter().map(|f| f.last_seq + 1).max().unwrap_or(0),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the Parquet files: the log's recovery does not know their seqs");
            0
        }
    };
    let (wal, recovery) = Wal::open_with_floor(&path, opts, checkpointed.max(converted))
        .with_context(|| format!("failed to open the write-ahead log in `{}`", path.display()))?;
    if let Some(damage) = wal.damage() {
        // Quarantined damage, lost seqs, or an altered chain: records were lost or changed, not a torn write.
        tracing::error!(
            lost = ?recovery.skipped,
            next_seq = recovery.next_seq,
            copy = ?recovery.quarantined,
            "write-ahead log damaged: {damage}; investigate how the file was altered (`kubetrail verify` names \
             the damage until retention releases the segment)"
        );
    } else if recovery.torn_bytes_cut > 0 {
        tracing::warn!(
            bytes = recovery.torn_bytes_cut,
            "cut a torn tail from the write-ahead log (a write interrupted by a crash; it was never acknowledged)"
        );
    }
    tracing::info!(
        records = recovery.records,
        next_seq = recovery.next_seq,
        "write-ahead log open"
    );
    Ok(Arc::new(wal))
}

/// Now, in microseconds since the Unix epoch: the receive time stamped on events.
pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}
