//! The checkpoint format: what one checkpoint states ([`Checkpoint`], canonical JSON signed inside an
//! envelope), the deletions it records ([`Deletion`]), the names of checkpoint files, and reading and
//! authenticating them.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::verify::ProblemKind;
use super::{CHECKPOINT_DIR, CHECKPOINT_VERSION, IntegrityError, PublicKey};
use super::{hex, io_err, now, rel_string};

/// What one checkpoint states. Field order is the canonical JSON order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    /// 0 for the first checkpoint of the data directory, then 1, 2, ...
    pub index: u64,
    /// RFC 3339 UTC.
    pub created: String,
    /// SHA-256 (hex) of the previous checkpoint file; `None` for the first.
    pub previous: Option<String>,
    pub wal: WalState,
    /// Whether `files` lists every file (every [`FULL_LISTING_EVERY`](super::FULL_LISTING_EVERY)th checkpoint, and the first) or only
    /// those added since the previous checkpoint.
    pub files_full: bool,
    pub files: Vec<FileEntry>,
    /// How many files the data directory holds as of this checkpoint (previous listing, minus `deletions`,
    /// plus `files`), and the [`FileSet`](super::FileSet) digest of that listing.
    pub files_count: u64,
    pub files_digest: String,
    pub deletions: Vec<Deletion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalState {
    /// The first seq the log held (the first of its oldest segment).
    pub oldest_seq: u64,
    /// The chain head: the seq after the last record covered.
    pub next_seq: u64,
    /// The chain hash of record `next_seq - 1` (hex).
    pub head_hash: String,
    /// Every sealed segment, oldest first.
    pub segments: Vec<SegmentEntry>,
    /// The active segment, by its header (its records are covered by the chain head).
    pub active: Option<ActiveSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    pub name: String,
    pub first_seq: u64,
    /// The seq after its last record.
    pub next_seq: u64,
    pub start_hash: String,
    pub end_hash: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveSegment {
    pub name: String,
    pub first_seq: u64,
    pub start_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A deletion made on purpose, recorded in a checkpoint before the item is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Deletion {
    WalSegment {
        name: String,
        first_seq: u64,
        next_seq: u64,
        reason: String,
        at: String,
    },
    File {
        path: String,
        reason: String,
        at: String,
    },
}

impl Deletion {
    /// A Parquet file (relative path) deleted by retention, now.
    pub fn file_retention(path: &Path) -> Deletion {
        Deletion::File {
            path: rel_string(path),
            reason: "retention".into(),
            at: now(),
        }
    }

    /// A Parquet file (relative path) removed by compaction (its rows are in the merged file that covers its
    /// seq range), now.
    pub fn file_compaction(path: &Path) -> Deletion {
        Deletion::File {
            path: rel_string(path),
            reason: "compaction".into(),
            at: now(),
        }
    }

    /// The segment's name or the file's path.
    pub fn item(&self) -> String {
        match self {
            Deletion::WalSegment { name, .. } => format!("wal/{name}"),
            Deletion::File { path, .. } => path.clone(),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Deletion::WalSegment { reason, .. } | Deletion::File { reason, .. } => reason,
        }
    }
}

/// The envelope as stored: the signature covers the exact bytes of `checkpoint`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Envelope<'a> {
    #[serde(borrow)]
    pub checkpoint: &'a RawValue,
    pub key_id: String,
    pub signature: String,
}

/// The file name a checkpoint is stored under.
pub fn checkpoint_file_name(cp: &Checkpoint) -> String {
    let created: String = cp
        .created
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{:020}-{created}.json", cp.wal.next_seq)
}

/// The log segments (by name) and files (by relative path) that recorded deletions account for.
pub(super) fn deleted_items<'a>(
    deletions: impl Iterator<Item = &'a Deletion>,
) -> (HashSet<&'a str>, HashSet<&'a str>) {
    let (mut segments, mut files) = (HashSet::new(), HashSet::new());
    for d in deletions {
        match d {
            Deletion::WalSegment { name, .. } => segments.insert(name.as_str()),
            Deletion::File { path, .. } => files.insert(path.as_str()),
        };
    }
    (segments, files)
}

/// Checkpoint file names in `dir`, sorted (temporary and hidden files left out).
pub(super) fn list_checkpoint_files(dir: &Path) -> Result<Vec<String>, IntegrityError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_err(dir))?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".json") {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Parses and authenticates one checkpoint file: canonical form, key id, signature, version.
pub(super) fn parse_checkpoint(
    bytes: &[u8],
    key: &PublicKey,
) -> Result<Checkpoint, (ProblemKind, String)> {
    let damaged = |why: String| (ProblemKind::Damaged, why);
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| damaged(format!("not a valid checkpoint file ({e})")))?;
    let mut canonical = serde_json::to_vec(&env).expect("envelopes serialise");
    canonical.push(b'\n');
    if canonical != bytes {
        return Err(damaged(
            "not in canonical form (bytes were added, removed or changed)".into(),
        ));
    }
    if env.key_id != key.key_id() {
        return Err((
            ProblemKind::BadSignature,
            format!(
                "signed by key `{}`, not by the key verified with (`{}`)",
                env.key_id,
                key.key_id()
            ),
        ));
    }
    let sig = BASE64
        .decode(&env.signature)
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .ok_or_else(|| (ProblemKind::BadSignature, "malformed signature".to_string()))?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig);
    if key
        .0
        .verify_strict(env.checkpoint.get().as_bytes(), &sig)
        .is_err()
    {
        return Err((
            ProblemKind::BadSignature,
            "the signature does not match its contents".into(),
        ));
    }
    let cp: Checkpoint = serde_json::from_str(env.checkpoint.get()).map_err(|e| {
        damaged(format!(
            "signed, but not a checkpoint this version reads ({e})"
        ))
    })?;
    if cp.version != CHECKPOINT_VERSION {
        return Err(damaged(format!(
            "version {} (this kubetrail reads {CHECKPOINT_VERSION})",
            cp.version
        )));
    }
    Ok(cp)
}

/// The newest checkpoint file of `DATA` (by name), if any: its path and bytes, for export.
pub fn latest_checkpoint(data_dir: &Path) -> Result<Option<(PathBuf, Vec<u8>)>, IntegrityError> {
    let dir = data_dir.join(CHECKPOINT_DIR);
    let Some(name) = list_checkpoint_files(&dir)?.pop() else {
        return Ok(None);
    };
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    Ok(Some((path, bytes)))
}

/// The head (`next_seq`) of the newest checkpoint of `DATA`, from the checkpoint file names alone (no
/// signature is checked; other files are ignored): the floor to open the log with (`Wal::open_with_floor`), so
/// that recovery never hands out again a seq a checkpoint covers. `None` without checkpoints.
pub fn latest_checkpoint_seq(data_dir: &Path) -> Result<Option<u64>, IntegrityError> {
    let names = list_checkpoint_files(&data_dir.join(CHECKPOINT_DIR))?;
    Ok(names.iter().filter_map(|n| checkpoint_name_seq(n)).max())
}

/// The seq of a checkpoint file name, `<next_seq:020>-<created>.json` (see [`checkpoint_file_name`]).
fn checkpoint_name_seq(name: &str) -> Option<u64> {
    let (seq, created) = name.strip_suffix(".json")?.split_once('-')?;
    let created_ok = created.starts_with(|c: char| c.is_ascii_digit())
        && created
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) || !created_ok {
        return None;
    }
    seq.parse().ok()
}

/// Reads the checkpoint inside a checkpoint file's bytes, checking its signature with `key`.
pub fn read_checkpoint(bytes: &[u8], key: &PublicKey) -> Result<Checkpoint, String> {
    parse_checkpoint(bytes, key).map_err(|(kind, why)| format!("{kind}: {why}"))
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::FileSet;

    #[test]
    fn checkpoint_names_sort_by_seq_then_time() {
        let mut cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            index: 0,
            created: "2026-11-25T15:38:05.123Z".into(),
            previous: None,
            wal: WalState {
                oldest_seq: 1,
                next_seq: 42,
                head_hash: hex(&[0; 32]),
                segments: vec![],
                active: None,
            },
            files_full: true,
            files: vec![],
            files_count: 0,
            files_digest: FileSet::default().digest(),
            deletions: vec![],
        };
        assert_eq!(
            checkpoint_file_name(&cp),
            "00000000000000000042-20261125T153805.123Z.json"
        );
        cp.wal.next_seq = 7;
        assert!(checkpoint_file_name(&cp).as_str() < "00000000000000000042");
    }
}
