//! Writing checkpoints: [`write_checkpoint`] (and [`write_checkpoint_offline`]) states the log's chain head,
//! its sealed segments and the Parquet files, chained to and signed like the checkpoint before; and
//! [`wal_retention`], the log segments a release is about to delete, to record first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::wal::Wal;

use super::checkpoint::{
    Envelope, checkpoint_file_name, deleted_items, list_checkpoint_files, parse_checkpoint,
};
use super::scan::{list_segment_files, scan_segment};
use super::{
    ActiveSegment, CHECKPOINT_DIR, CHECKPOINT_VERSION, Checkpoint, Deletion, FULL_LISTING_EVERY,
    FileEntry, FileSet, IntegrityError, PublicKey, SegmentEntry, Signer, WalState,
};
use super::{hash_file, hex, io_err, is_safe_rel, now, rel_string, sync_dir, unhex32};

/// The segments that `Wal::release_before(seq)` would delete (every one whose successor starts at or before
/// `seq`), as retention deletions to record with [`write_checkpoint`] before releasing them.
pub fn wal_retention(data_dir: &Path, seq: u64) -> Result<Vec<Deletion>, IntegrityError> {
    let segs = list_segment_files(&data_dir.join("wal"))?;
    let mut out = Vec::new();
    for pair in segs.windows(2) {
        let (first, next) = (&pair[0], &pair[1]);
        let (Some(a), Some(b)) = (first.first_seq, next.first_seq) else {
            break;
        };
        if b > seq {
            break;
        }
        out.push(Deletion::WalSegment {
            name: first.name.clone(),
            first_seq: a,
            next_seq: b,
            reason: "retention".into(),
            at: now(),
        });
    }
    Ok(out)
}

/// Writes a checkpoint of `DATA` now: the log at `DATA/wal` up to its durable records (`wal` is the open log,
/// asked for its durable seq), the Parquet `files` (relative to `DATA`; see [`parquet_files`](super::parquet_files)) and the
/// `deletions` about to be made. Returns the new checkpoint file. Serialised with other writers by a lock file.
pub fn write_checkpoint(
    data_dir: &Path,
    signer: &Signer,
    wal: &Wal,
    files: &[PathBuf],
    deletions: &[Deletion],
) -> Result<PathBuf, IntegrityError> {
    write_inner(data_dir, signer, Some(wal), files, deletions)
}

/// [`write_checkpoint`] for when no process has the log open (`kubetrail checkpoint create` with the
/// collector stopped): covers every intact record of the active segment.
pub fn write_checkpoint_offline(
    data_dir: &Path,
    signer: &Signer,
    files: &[PathBuf],
    deletions: &[Deletion],
) -> Result<PathBuf, IntegrityError> {
    write_inner(data_dir, signer, None, files, deletions)
}

fn write_inner(
    data_dir: &Path,
    signer: &Signer,
    wal: Option<&Wal>,
    files: &[PathBuf],
    deletions: &[Deletion],
) -> Result<PathBuf, IntegrityError> {
    let cp_dir = data_dir.join(CHECKPOINT_DIR);
    fs::create_dir_all(&cp_dir).map_err(io_err(&cp_dir))?;
    let lock_path = cp_dir.join(".lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;

    let key = signer.public_key();
    let prev = match list_checkpoint_files(&cp_dir)?.last() {
        None => None,
        Some(name) => {
            let path = cp_dir.join(name);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let cp = parse_checkpoint(&bytes, &key).map_err(|p| {
                IntegrityError::Refused(format!(
                    "the latest checkpoint `{name}` does not verify ({}: {})",
                    p.0, p.1
                ))
            })?;
            Some((cp, hex(&Sha256::digest(&bytes))))
        }
    };

    let (deleted_segments, deleted_files) = deleted_items(deletions.iter());

    // The log: retried when retention deletes a segment while it is read.
    let wal_dir = data_dir.join("wal");
    let mut attempt = 0;
    let wal_state = loop {
        attempt += 1;
        match checkpoint_wal(
            &wal_dir,
            wal,
            prev.as_ref().map(|p| &p.0),
            &deleted_segments,
        ) {
            Err(IntegrityError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && attempt < 3 => {}
            other => break other?,
        }
    };
    if let Some((p, _)) = &prev
        && wal_state.next_seq < p.wal.next_seq
    {
        return Err(IntegrityError::Refused(format!(
            "the write-ahead log ends at seq {}, before the previous checkpoint's head at seq {}",
            wal_state.next_seq, p.wal.next_seq
        )));
    }

    // Files: those asked for, plus those listed before and not deleted (carried, even if gone).
    let prev_set = match &prev {
        Some((p, hash)) => match cached_listing(&cp_dir, hash) {
            Some(set) => set,
            None => listed_files(&cp_dir, &key, p)?,
        },
        None => FileSet::default(),
    };
    let mut entries: BTreeMap<String, FileEntry> = BTreeMap::new();
    let prev_files: HashMap<&str, &FileEntry> =
        prev_set.iter().map(|f| (f.path.as_str(), f)).collect();
    for rel in files {
        let path = rel_string(rel);
        if !is_safe_rel(&path) {
            return Err(IntegrityError::Refused(format!(
                "file `{path}` is not a path inside the data directory"
            )));
        }
        if deleted_files.contains(path.as_str()) {
            continue;
        }
        let full = data_dir.join(&path);
        let len = fs::metadata(&full).map_err(io_err(&full))?.len();
        let entry = match prev_files.get(path.as_str()) {
            // Immutable once written: the verified previous checkpoint's hash stands.
            Some(e) if e.bytes == len => (*e).clone(),
            _ => {
                let (bytes, sha256) = hash_file(&full)?;
                FileEntry {
                    path: path.clone(),
                    bytes,
                    sha256,
                }
            }
        };
        entries.insert(path, entry);
    }
    for (path, e) in &prev_files {
        if !deleted_files.contains(path) && !entries.contains_key(*path) {
            entries.insert(path.to_string(), (*e).clone());
        }
    }

    let index = prev.as_ref().map_or(0, |(p, _)| p.index + 1);
    let files_full = index % FULL_LISTING_EVERY == 0;
    let mut set = FileSet::default();
    let mut listed = Vec::new();
    for e in entries.into_values() {
        if files_full || prev_set.get(&e.path) != Some(&e) {
            listed.push(e.clone());
        }
        set.insert(e);
    }
    let cp = Checkpoint {
        version: CHECKPOINT_VERSION,
        index,
        created: now(),
        previous: prev.as_ref().map(|(_, h)| h.clone()),
        wal: wal_state,
        files_full,
        files: listed,
        files_count: set.len() as u64,
        files_digest: set.digest(),
        deletions: deletions.to_vec(),
    };
    debug_assert!(
        {
            let mut check = prev_set.clone();
            check.apply(&cp);
            check.matches(&cp)
        },
        "a delta checkpoint must fold to its own listing"
    );
    let body = serde_json::to_string(&cp).expect("checkpoints serialise");
    let raw = RawValue::from_string(body).expect("valid JSON");
    let env = Envelope {
        checkpoint: &raw,
        key_id: key.key_id(),
        signature: BASE64.encode(signer.sign(raw.get().as_bytes())),
    };
    let mut out = serde_json::to_vec(&env).expect("envelopes serialise");
    out.push(b'\n');

    let name = checkpoint_file_name(&cp);
    let path = cp_dir.join(&name);
    let tmp = cp_dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&out)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    drop(f);
    if path.exists() {
        let _ = fs::remove_file(&tmp);
        return Err(IntegrityError::Refused(format!(
            "checkpoint `{name}` already exists (two checkpoints in the same instant)"
        )));
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(&cp_dir)?;
    remember_listing(&cp_dir, hex(&Sha256::digest(&out)), set);
    drop(lock);
    Ok(path)
}

/// The listing of the checkpoint this process wrote last, per checkpoint directory, keyed by the SHA-256 of
/// that checkpoint file: the next write in the same process (the collector's, every ten minutes) finds it
/// here instead of reading back up to a day of checkpoints. Used only when the newest checkpoint on disk is
/// byte for byte the one remembered (its hash is taken from the file as read, after its signature verified).
static LISTINGS: std::sync::Mutex<Option<(PathBuf, String, FileSet)>> = std::sync::Mutex::new(None);

fn cached_listing(cp_dir: &Path, checkpoint_sha256: &str) -> Option<FileSet> {
    let cache = LISTINGS.lock().unwrap_or_else(|e| e.into_inner());
    match &*cache {
        Some((dir, hash, set)) if dir == cp_dir && hash == checkpoint_sha256 => Some(set.clone()),
        _ => None,
    }
}

/// Forgets what [`write_checkpoint`] remembers of the last checkpoint it wrote: the next write reads the
/// listing back from the checkpoints on disk, as a new process does.
pub fn forget_remembered_listing() {
    *LISTINGS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

fn remember_listing(cp_dir: &Path, checkpoint_sha256: String, set: FileSet) {
    let mut cache = LISTINGS.lock().unwrap_or_else(|e| e.into_inner());
    *cache = Some((cp_dir.to_path_buf(), checkpoint_sha256, set));
}

fn checkpoint_wal(
    wal_dir: &Path,
    wal: Option<&Wal>,
    prev: Option<&Checkpoint>,
    deleted: &HashSet<&str>,
) -> Result<WalState, IntegrityError> {
    let disk = list_segment_files(wal_dir)?;
    if let Some(bad) = disk.iter().find(|s| s.first_seq.is_none()) {
        return Err(IntegrityError::Refused(format!(
            "`wal/{}` is not named as a segment (its first seq in 20 digits)",
            bad.name
        )));
    }
    // Read after listing: a roll syncs the segment it seals, so everything listed before the last is durable.
    let durable = wal.map(Wal::durable_seq);
    let prev_segs: HashMap<&str, &SegmentEntry> = prev
        .map(|p| {
            p.wal
                .segments
                .iter()
                .map(|s| (s.name.as_str(), s))
                .collect()
        })
        .unwrap_or_default();
    let mut sealed: BTreeMap<u64, SegmentEntry> = BTreeMap::new();
    let mut active = None;
    let mut head: Option<(u64, [u8; 32])> = None;
    let mut link: Option<(u64, String)> = None;
    for (i, seg) in disk.iter().enumerate() {
        let first_seq = seg.first_seq.expect("checked above");
        if deleted.contains(seg.name.as_str()) {
            continue;
        }
        let path = wal_dir.join(&seg.name);
        let is_last = i + 1 == disk.len();
        let entry = if is_last {
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let scan = scan_segment(&bytes, durable);
            match &scan.problem {
                None => {}
                // Past the durable records (or, offline, the last intact one): a write in progress.
                Some(p) if p.incomplete => {}
                Some(p) => {
                    return Err(IntegrityError::Refused(format!(
                        "`wal/{}` at offset {}: {}",
                        seg.name, p.offset, p.detail
                    )));
                }
            }
            let Some(h) = scan.header else {
                return Err(IntegrityError::Refused(format!(
                    "`wal/{}` has no valid header",
                    seg.name
                )));
            };
            if let Some(d) = durable
                && scan.next_seq < d
                && scan.problem.is_some()
            {
                return Err(IntegrityError::Refused(format!(
                    "`wal/{}` ends at seq {} before the durable seq {d}",
                    seg.name, scan.next_seq
                )));
            }
            active = Some(ActiveSegment {
                name: seg.name.clone(),
                first_seq: h.first_seq,
                start_hash: hex(&h.start_hash),
            });
            head = Some((scan.next_seq, scan.end_hash));
            SegmentEntry {
                name: seg.name.clone(),
                first_seq: h.first_seq,
                next_seq: scan.next_seq,
                start_hash: hex(&h.start_hash),
                end_hash: hex(&scan.end_hash),
                bytes: 0,
                sha256: String::new(),
            }
        } else {
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            match prev_segs.get(seg.name.as_str()) {
                Some(e) if e.bytes == len => (*e).clone(),
                _ => {
                    let bytes = fs::read(&path).map_err(io_err(&path))?;
                    let scan = scan_segment(&bytes, None);
                    if let Some(p) = scan.problem {
                        return Err(IntegrityError::Refused(format!(
                            "`wal/{}` at offset {}: {}",
                            seg.name, p.offset, p.detail
                        )));
                    }
                    let h = scan.header.expect("no problem means a header");
                    SegmentEntry {
                        name: seg.name.clone(),
                        first_seq: h.first_seq,
                        next_seq: scan.next_seq,
                        start_hash: hex(&h.start_hash),
                        end_hash: hex(&scan.end_hash),
                        bytes: bytes.len() as u64,
                        sha256: hex(&Sha256::digest(&bytes)),
                    }
                }
            }
        };
        if entry.first_seq != first_seq {
            return Err(IntegrityError::Refused(format!(
                "`wal/{}` holds records from seq {}",
                seg.name, entry.first_seq
            )));
        }
        // A segment may start past the one before it (seqs lost to damage, which `verify_store` reports),
        // as long as its header chains to it: checkpoints go on covering the log after the damage.
        if let Some((next, hash)) = &link
            && (entry.first_seq < *next || entry.start_hash != *hash)
        {
            return Err(IntegrityError::Refused(format!(
                "`wal/{}` does not continue the hash chain of the segment before it",
                seg.name
            )));
        }
        link = Some((entry.next_seq, entry.end_hash.clone()));
        if !is_last {
            sealed.insert(first_seq, entry);
        }
    }
    // Segments listed before and not deleted on purpose stay listed, gone or not: the loss stays visible.
    for (name, e) in &prev_segs {
        if !deleted.contains(name) && !sealed.contains_key(&e.first_seq) {
            sealed.insert(e.first_seq, (*e).clone());
        }
    }
    let (next_seq, head_hash) = head.unwrap_or_else(|| {
        prev.map_or((1, [0; 32]), |p| {
            (
                p.wal.next_seq,
                unhex32(&p.wal.head_hash).unwrap_or_default(),
            )
        })
    });
    let oldest_seq = sealed
        .values()
        .map(|s| s.first_seq)
        .chain(active.as_ref().map(|a| a.first_seq))
        .min()
        .unwrap_or(next_seq);
    Ok(WalState {
        oldest_seq,
        next_seq,
        head_hash: hex(&head_hash),
        segments: sealed.into_values().collect(),
        active,
    })
}

/// The files `latest` (a verified checkpoint) lists in full: folded from the newest full listing at or before
/// it, reading back at most [`FULL_LISTING_EVERY`] checkpoints. Refused if the chain does not add up.
fn listed_files(
    cp_dir: &Path,
    key: &PublicKey,
    latest: &Checkpoint,
) -> Result<FileSet, IntegrityError> {
    let mut back: Vec<Checkpoint> = vec![latest.clone()];
    if !latest.files_full {
        let names = list_checkpoint_files(cp_dir)?;
        let mut by_index: HashMap<u64, Checkpoint> = HashMap::new();
        // Names sort by seq then time, so the ones before `latest` are at the end of the list.
        for name in names.iter().rev().skip(1) {
            let path = cp_dir.join(name);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let cp = parse_checkpoint(&bytes, key).map_err(|p| {
                IntegrityError::Refused(format!(
                    "checkpoint `{name}` does not verify ({}: {}): run `kubetrail verify`",
                    p.0, p.1
                ))
            })?;
            let full = cp.files_full;
            by_index.insert(cp.index, cp);
            if full || by_index.len() as u64 > FULL_LISTING_EVERY {
                break;
            }
        }
        let mut index = latest.index;
        while !back.last().expect("not empty").files_full {
            let Some(cp) = index.checked_sub(1).and_then(|i| by_index.remove(&i)) else {
                return Err(IntegrityError::Refused(format!(
                    "checkpoint {} lists files as changes, and the checkpoints back to the last full listing \
                     are not all there: run `kubetrail verify`",
                    latest.index
                )));
            };
            index = cp.index;
            back.push(cp);
        }
    }
    let mut set = FileSet::default();
    for cp in back.iter().rev() {
        set.apply(cp);
    }
    if !set.matches(latest) {
        return Err(IntegrityError::Refused(format!(
            "the files listed by checkpoints up to {} do not add up to its listing: run `kubetrail verify`",
            latest.index
        )));
    }
    Ok(set)
}
