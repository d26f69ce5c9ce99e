//! Signed checkpoints over the data directory, and `verify`, which walks all of it.
//!
//! The models are Certificate Transparency's signed tree heads and CloudTrail's digest files: every so often
//! (and at shutdown) the collector signs a statement of what the data directory holds, each statement naming
//! the one before it, so that altering, truncating, reordering or deleting anything that a checkpoint covers is
//! detectable, and exporting a checkpoint off the node (`kubetrail checkpoint export`) anchors the chain where
//! an attacker on the node cannot rewrite it.
//!
//! # On disk
//!
//! ```text
//! DATA/integrity.key                                  Ed25519 secret key: 32 random bytes, mode 0600
//! DATA/checkpoints/<next_seq:020>-<created>.json      one checkpoint per file; `created` without `-` and `:`
//! DATA/wal/*.seg                                      the write-ahead log (see `wal`)
//! DATA/store/**/*.parquet                             the columnar files
//! ```
//!
//! A checkpoint file is one line of JSON, `{"checkpoint":{..},"key_id":"..","signature":".."}` and a newline,
//! with no other whitespace. `signature` is the base64 Ed25519 signature of the exact bytes of the
//! `checkpoint` value as they appear in the file; `key_id` is the first 16 hex digits of the SHA-256 of the
//! 32-byte public key. The `checkpoint` value is canonical JSON (fields in the order of [`Checkpoint`], no
//! whitespace, hashes in lowercase hex) and holds:
//!
//! - `index` (0 for the first checkpoint) and `previous`, the SHA-256 of the previous checkpoint file's bytes:
//!   a removed, replaced or reordered checkpoint breaks this chain;
//! - `wal`: the chain head (`next_seq`, `head_hash`: the chain hash of record `next_seq - 1`), every sealed
//!   segment with its first and next seq, its start and end chain hashes, size and SHA-256, and the active
//!   segment by its header only (it is still growing: the chain head covers its records);
//! - `files`: Parquet files by path (relative to DATA), size and SHA-256: every file in every
//!   [`FULL_LISTING_EVERY`]th checkpoint (`files_full`), otherwise only those added since the previous one;
//!   `files_count` and `files_digest` state the whole listing (previous listing, minus this checkpoint's file
//!   deletions, plus its files; see [`FileSet`]), so writing one reads back at most a day of checkpoints and
//!   `verify` checks that the chain adds up;
//! - `deletions`: what was deleted on purpose (retention) since the previous checkpoint.
//!
//! Segments and files are immutable once sealed or written, so a checkpoint carries the size and hash of an
//! item the previous (verified) checkpoint already lists instead of reading it again; an item that was listed
//! and has since disappeared without a recorded deletion stays listed, so the loss keeps being reported.
//!
//! # Retention versus tampering
//!
//! Deleting old data is legitimate only when a signed checkpoint records it: record first, delete after
//! ([`wal_retention`] lists what `Wal::release_before(seq)` will delete; pass it to [`write_checkpoint`], then
//! release). [`verify_store`] accepts a listed segment or file that is gone only if some checkpoint records its
//! deletion; anything else that is gone is `missing`.
//!
//! Verification is read-only: it walks the segment files itself (it never opens the log, whose recovery cuts
//! torn tails) and so can run beside a live collector.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::wal::Wal;
use crate::wal::format::{self, HEADER_LEN, Header, HeaderError, SegmentFile};

/// The checkpoint format version this code writes and reads.
pub const CHECKPOINT_VERSION: u32 = 2;
/// Every this many checkpoints (one a day at one every ten minutes) lists every file; the others list only
/// the files added since the previous one, so a year of hourly files does not make every checkpoint megabytes.
pub const FULL_LISTING_EVERY: u64 = 144;
/// The directory of checkpoints under the data directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The signing key's file name under the data directory.
pub const KEY_FILE: &str = "integrity.key";

/// SubjectPublicKeyInfo DER prefix of an Ed25519 public key (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("i/o error on `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("integrity key `{}` is damaged: {reason}; restore it from backup", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("invalid public key: {0}; pass the PEM printed by `kubetrail checkpoint public-key`")]
    PublicKey(String),
    /// Writing a checkpoint over data that does not verify would sign the damage.
    #[error("refusing to write a checkpoint: {0}; run `kubetrail verify` and investigate")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IntegrityError + '_ {
    move |source| IntegrityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---- keys -----------------------------------------------------------------------------------------------

/// The installation's checkpoint signing key.
pub struct Signer {
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte secret key (seed).
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Loads the key file (32 bytes), or creates it (mode 0600, written aside, synced, renamed into place) from
    /// `random()` when there is none.
    pub fn load_or_create(
        path: &Path,
        random: impl FnOnce() -> io::Result<[u8; 32]>,
    ) -> Result<Signer, IntegrityError> {
        match Signer::load(path) {
            Err(IntegrityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let seed = random().map_err(io_err(path))?;
        let tmp = path.with_extension("key.tmp");
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&seed)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(dir)?;
        }
        Ok(Signer::from_seed(seed))
    }

    /// Loads an existing key file.
    pub fn load(path: &Path) -> Result<Signer, IntegrityError> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| IntegrityError::Key {
                path: path.to_path_buf(),
                reason: format!("expected 32 bytes, found {}", bytes.len()),
            })?;
        Ok(Signer::from_seed(seed))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// The public key as PEM (SubjectPublicKeyInfo, what `openssl pkey -pubin` reads).
    pub fn public_key_pem(&self) -> String {
        self.public_key().to_pem()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// A detached Ed25519 signature of `message`, base64, for documents other than checkpoints (the S3
    /// archive's manifests).
    pub fn sign_detached(&self, message: &[u8]) -> String {
        BASE64.encode(self.sign(message))
    }
}

/// An Ed25519 public key that checkpoints are verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, IntegrityError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| IntegrityError::PublicKey("not a valid Ed25519 point".into()))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// First 16 hex digits of the SHA-256 of the 32 key bytes: names the key in every checkpoint.
    pub fn key_id(&self) -> String {
        hex(&Sha256::digest(self.to_bytes()))[..16].to_string()
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.to_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            BASE64.encode(der)
        )
    }

    /// Whether `signature` (base64, from [`Signer::sign_detached`]) is this key's signature of `message`.
    pub fn verify_detached(&self, message: &[u8], signature: &str) -> bool {
        BASE64
            .decode(signature)
            .ok()
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .is_some_and(|sig| {
                self.0
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
                    .is_ok()
            })
    }

    /// Reads a `PUBLIC KEY` PEM block (the first one in `text`).
    pub fn from_pem(text: &str) -> Result<PublicKey, IntegrityError> {
        let bad = |why: &str| IntegrityError::PublicKey(why.to_string());
        let start = text
            .find("-----BEGIN PUBLIC KEY-----")
            .ok_or_else(|| bad("no `-----BEGIN PUBLIC KEY-----` line"))?;
        let body = &text[start + "-----BEGIN PUBLIC KEY-----".len()..];
        let end = body
            .find("-----END PUBLIC KEY-----")
            .ok_or_else(|| bad("no `-----END PUBLIC KEY-----` line"))?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = BASE64
            .decode(b64)
            .map_err(|e| bad(&format!("bad base64: {e}")))?;
        if der.len() != 44 || der[..12] != SPKI_PREFIX {
            return Err(bad("not an Ed25519 SubjectPublicKeyInfo"));
        }
        PublicKey::from_bytes(der[12..].try_into().expect("32 bytes"))
    }
}

// ---- the checkpoint -------------------------------------------------------------------------------------

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
    /// Whether `files` lists every file (every [`FULL_LISTING_EVERY`]th checkpoint, and the first) or only
    /// those added since the previous checkpoint.
    pub files_full: bool,
    pub files: Vec<FileEntry>,
    /// How many files the data directory holds as of this checkpoint (previous listing, minus `deletions`,
    /// plus `files`), and the [`FileSet`] digest of that listing.
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

/// The files a chain of checkpoints lists, folded checkpoint by checkpoint, with an incremental digest.
///
/// The digest is the sum (four 64-bit lanes, wrapping) of the SHA-256 of each entry's `path\0bytes\0sha256`:
/// order-independent and updated in O(1) per added or removed entry. It checks that a delta chain adds up
/// (no checkpoint missing from the fold, no bug in it); authenticity comes from the signatures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    entries: BTreeMap<String, FileEntry>,
    sum: [u64; 4],
}

impl FileSet {
    fn entry_hash(e: &FileEntry) -> [u64; 4] {
        let mut h = Sha256::new();
        h.update(e.path.as_bytes());
        h.update([0]);
        h.update(e.bytes.to_string().as_bytes());
        h.update([0]);
        h.update(e.sha256.as_bytes());
        let d = h.finalize();
        std::array::from_fn(|i| {
            u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    }

    pub fn insert(&mut self, e: FileEntry) {
        let h = Self::entry_hash(&e);
        if let Some(old) = self.entries.insert(e.path.clone(), e) {
            lanes_sub(&mut self.sum, &Self::entry_hash(&old));
        }
        lanes_add(&mut self.sum, &h);
    }

    pub fn remove(&mut self, path: &str) {
        if let Some(old) = self.entries.remove(path) {
            lanes_sub(&mut self.sum, &Self::entry_hash(&old));
        }
    }

    /// Applies one checkpoint: a full listing replaces the set; a delta removes its recorded file deletions
    /// and adds its files.
    pub fn apply(&mut self, cp: &Checkpoint) {
        if cp.files_full {
            *self = FileSet::default();
        } else {
            for d in &cp.deletions {
                if let Deletion::File { path, .. } = d {
                    self.remove(path);
                }
            }
        }
        for f in &cp.files {
            self.insert(f.clone());
        }
    }

    pub fn get(&self, path: &str) -> Option<&FileEntry> {
        self.entries.get(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FileEntry> {
        self.entries.values()
    }

    /// The digest, hex.
    pub fn digest(&self) -> String {
        let mut b = [0u8; 32];
        for (chunk, lane) in b.chunks_exact_mut(8).zip(self.sum) {
            chunk.copy_from_slice(&lane.to_le_bytes());
        }
        hex(&b)
    }

    /// Whether the set is what `cp` says it is.
    pub fn matches(&self, cp: &Checkpoint) -> bool {
        self.len() as u64 == cp.files_count && self.digest() == cp.files_digest
    }
}

fn lanes_add(sum: &mut [u64; 4], h: &[u64; 4]) {
    for (s, x) in sum.iter_mut().zip(h) {
        *s = s.wrapping_add(*x);
    }
}

fn lanes_sub(sum: &mut [u64; 4], h: &[u64; 4]) {
    for (s, x) in sum.iter_mut().zip(h) {
        *s = s.wrapping_sub(*x);
    }
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

/// Every `*.parquet` file under `DATA/store`, relative to `DATA`, sorted.
pub fn parquet_files(data_dir: &Path) -> Result<Vec<PathBuf>, IntegrityError> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), IntegrityError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ty = entry.file_type().map_err(io_err(&path))?;
            if ty.is_dir() {
                walk(base, &path, out)?;
            } else if ty.is_file() && path.extension().is_some_and(|e| e == "parquet") {
                out.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(data_dir, &data_dir.join("store"), &mut out)?;
    out.sort();
    Ok(out)
}

/// The envelope as stored: the signature covers the exact bytes of `checkpoint`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    checkpoint: &'a RawValue,
    key_id: String,
    signature: String,
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
fn deleted_items<'a>(
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

/// Writes a checkpoint of `DATA` now: the log at `DATA/wal` up to its durable records (`wal` is the open log,
/// asked for its durable seq), the Parquet `files` (relative to `DATA`; see [`parquet_files`]) and the
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

// ---- reading checkpoints --------------------------------------------------------------------------------

/// Checkpoint file names in `dir`, sorted (temporary and hidden files left out).
fn list_checkpoint_files(dir: &Path) -> Result<Vec<String>, IntegrityError> {
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

/// Parses and authenticates one checkpoint file: canonical form, key id, signature, version.
fn parse_checkpoint(bytes: &[u8], key: &PublicKey) -> Result<Checkpoint, (ProblemKind, String)> {
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

/// Checks that a checkpoint anchored off the node (by its file, relative to `DATA`, and the SHA-256 of its
/// bytes, as `kubetrail checkpoint export` records them) is still in the data directory unchanged: a chain cut
/// back or rebuilt after the export fails here even when it is consistent in itself.
pub fn check_anchor(
    data_dir: &Path,
    checkpoint_file: &str,
    sha256: &str,
) -> Result<Option<Problem>, IntegrityError> {
    let problem = |kind, detail: &str| Problem {
        kind,
        item: checkpoint_file.to_string(),
        offset: None,
        detail: detail.to_string(),
    };
    if !is_safe_rel(checkpoint_file) || !checkpoint_file.starts_with(&format!("{CHECKPOINT_DIR}/"))
    {
        return Ok(Some(problem(
            ProblemKind::Damaged,
            "the anchor names a file outside the checkpoint directory",
        )));
    }
    let path = data_dir.join(checkpoint_file);
    match fs::read(&path) {
        Ok(bytes) if sha256_hex(&bytes) == sha256 => Ok(None),
        Ok(_) => Ok(Some(problem(
            ProblemKind::Damaged,
            "differs from the copy exported off the node: the checkpoint chain was rewritten",
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(problem(
            ProblemKind::Missing,
            "exported off the node, and gone from the data directory: the checkpoint chain was cut back",
        ))),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

// ---- verify ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Bytes changed (checksum, hash chain or SHA-256 mismatch, unparsable).
    Damaged,
    /// Listed by a checkpoint (or implied by the chain) and gone, with no recorded deletion.
    Missing,
    /// Shorter than it was.
    Truncated,
    /// In the wrong place: renamed, swapped, out of order.
    Reordered,
    /// A checkpoint whose signature does not verify, or that another key signed.
    BadSignature,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Damaged => "damaged",
            ProblemKind::Missing => "missing",
            ProblemKind::Truncated => "truncated",
            ProblemKind::Reordered => "reordered",
            ProblemKind::BadSignature => "bad signature",
        })
    }
}

/// One thing that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The file, relative to the data directory (`wal/0000..0001.seg`, `checkpoints/...json`, a Parquet path).
    pub item: String,
    /// Byte offset in `item` where the problem starts, when known.
    pub offset: Option<u64>,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`", self.kind, self.item)?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What [`verify_store`] walked and found. Intact when `problems` is empty; the first problem is the first in
/// walking order: checkpoints (the root of trust), then segments by seq, then files by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IntegrityReport {
    pub checkpoints: usize,
    /// `created` of the newest checkpoint.
    pub newest_checkpoint: Option<String>,
    pub segments: usize,
    pub records: u64,
    pub wal_bytes: u64,
    /// Parquet files checked against the newest checkpoint.
    pub files: usize,
    /// Records written after the newest checkpoint's head: verified by the hash chain only.
    pub records_after_checkpoint: u64,
    /// Parquet files on disk that no checkpoint lists yet (not verified).
    pub files_after_checkpoint: usize,
    /// Deletions on purpose (retention, compaction, released log segments) that checkpoints record: their
    /// items may be gone.
    pub deleted_by_retention: usize,
    /// Bytes after the last intact record of the active segment (a write in progress or torn by a crash).
    pub torn_tail_bytes: u64,
    pub problems: Vec<Problem>,
}

impl IntegrityReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

/// At most this many problems are listed: the first is what matters, the count says how bad.
const MAX_PROBLEMS: usize = 100;

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, kind: ProblemKind, item: String, offset: Option<u64>, detail: String) {
        if self.0.len() < MAX_PROBLEMS {
            self.0.push(Problem {
                kind,
                item,
                offset,
                detail,
            });
        }
    }
}

/// Walks every checkpoint, segment and listed file of `DATA` without modifying anything and reports what does
/// not verify with `key`. IO errors other than a missing file are errors.
pub fn verify_store(data_dir: &Path, key: &PublicKey) -> Result<IntegrityReport, IntegrityError> {
    let mut report = IntegrityReport::default();
    let mut problems = Problems(Vec::new());

    // 1. Checkpoints: each authentic, named for what it holds, and chained to the one before.
    let cp_dir = data_dir.join(CHECKPOINT_DIR);
    let mut chain: Vec<(String, Checkpoint, String)> = Vec::new();
    for name in list_checkpoint_files(&cp_dir)? {
        let path = cp_dir.join(&name);
        let item = format!("{CHECKPOINT_DIR}/{name}");
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        match parse_checkpoint(&bytes, key) {
            Err((kind, why)) => problems.push(kind, item, None, why),
            Ok(cp) => {
                let expect = checkpoint_file_name(&cp);
                if expect != name {
                    problems.push(
                        ProblemKind::Reordered,
                        item,
                        None,
                        format!("holds checkpoint {} (`{expect}`)", cp.index),
                    );
                } else {
                    chain.push((name, cp, hex(&Sha256::digest(&bytes))));
                }
            }
        }
    }
    report.checkpoints = chain.len();
    chain.sort_by_key(|(_, cp, _)| cp.index);
    let mut prev: Option<&(String, Checkpoint, String)> = None;
    for link in &chain {
        let (name, cp, _) = link;
        let item = format!("{CHECKPOINT_DIR}/{name}");
        match prev {
            None if cp.index > 0 => problems.push(
                ProblemKind::Missing,
                format!("{CHECKPOINT_DIR}/"),
                None,
                format!(
                    "checkpoints 0 to {} are missing (the oldest left is `{name}`)",
                    cp.index - 1
                ),
            ),
            None if cp.previous.is_some() => problems.push(
                ProblemKind::Damaged,
                item,
                None,
                "checkpoint 0 names a previous checkpoint".into(),
            ),
            None => {}
            Some((pname, p, phash)) => {
                if cp.index == p.index {
                    problems.push(
                        ProblemKind::Reordered,
                        item,
                        None,
                        format!("has the same index ({}) as `{pname}`", cp.index),
                    );
                } else if cp.index > p.index + 1 {
                    problems.push(
                        ProblemKind::Missing,
                        format!("{CHECKPOINT_DIR}/"),
                        None,
                        format!(
                            "checkpoint {} (between `{pname}` and `{name}`) is missing",
                            if cp.index == p.index + 2 {
                                (p.index + 1).to_string()
                            } else {
                                format!("{} to {}", p.index + 1, cp.index - 1)
                            }
                        ),
                    );
                } else if cp.previous.as_deref() != Some(phash.as_str()) {
                    problems.push(
                        ProblemKind::Damaged,
                        item,
                        None,
                        format!("does not chain to the checkpoint before it (`{pname}`)"),
                    );
                } else if cp.wal.next_seq < p.wal.next_seq || cp.created < p.created {
                    problems.push(
                        ProblemKind::Reordered,
                        item,
                        None,
                        format!("goes back in seq or time from `{pname}`"),
                    );
                }
            }
        }
        prev = Some(link);
    }
    // The file listing each checkpoint states: folded along the chain, each checked against its digest.
    let mut listing = FileSet::default();
    let mut listing_ok = true;
    for (name, cp, _) in &chain {
        listing.apply(cp);
        if listing_ok && !listing.matches(cp) {
            listing_ok = false;
            // A missing checkpoint is reported above; this one's listing cannot be rebuilt without it.
            if problems.0.is_empty() {
                problems.push(
                    ProblemKind::Damaged,
                    format!("{CHECKPOINT_DIR}/{name}"),
                    None,
                    format!(
                        "lists {} files with digest {}, the checkpoints before it add up to {} files with digest {}",
                        cp.files_count,
                        &cp.files_digest[..cp.files_digest.len().min(16)],
                        listing.len(),
                        &listing.digest()[..16]
                    ),
                );
            }
        }
        if cp.files_full {
            listing_ok = true;
        }
    }
    let latest = chain.last().map(|(_, cp, _)| cp);
    report.newest_checkpoint = latest.map(|cp| cp.created.clone());
    if latest.is_none() && problems.0.is_empty() {
        problems.push(
            ProblemKind::Missing,
            format!("{CHECKPOINT_DIR}/"),
            None,
            "no signed checkpoint: nothing proves what the data directory held; run `kubetrail checkpoint create`"
                .into(),
        );
    }
    let deletions: Vec<&Deletion> = chain
        .iter()
        .flat_map(|(_, cp, _)| cp.deletions.iter())
        .collect();
    report.deleted_by_retention = deletions.len();
    let (deleted_segments, deleted_files) = deleted_items(deletions.iter().copied());

    // 2. The log.
    verify_wal(
        &data_dir.join("wal"),
        latest,
        &chain,
        &deleted_segments,
        &mut report,
        &mut problems,
    )?;

    // 3. Parquet files listed by the newest checkpoint.
    if latest.is_some() {
        let mut listed = HashSet::new();
        for f in listing.iter() {
            listed.insert(f.path.as_str());
            if !is_safe_rel(&f.path) {
                problems.push(
                    ProblemKind::Damaged,
                    f.path.clone(),
                    None,
                    "listed with a path outside the data directory".into(),
                );
                continue;
            }
            let path = data_dir.join(&f.path);
            let (bytes, sha256) = match hash_file(&path) {
                Ok(h) => h,
                Err(IntegrityError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    if !deleted_files.contains(f.path.as_str()) {
                        problems.push(
                            ProblemKind::Missing,
                            f.path.clone(),
                            None,
                            "listed by the newest checkpoint, and no checkpoint records its deletion".into(),
                        );
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.files += 1;
            if bytes < f.bytes {
                problems.push(
                    ProblemKind::Truncated,
                    f.path.clone(),
                    Some(bytes),
                    format!("{bytes} bytes, the checkpoint says {}", f.bytes),
                );
            } else if bytes != f.bytes || sha256 != f.sha256 {
                problems.push(
                    ProblemKind::Damaged,
                    f.path.clone(),
                    None,
                    format!(
                        "SHA-256 {} ({bytes} bytes), the checkpoint says {} ({} bytes)",
                        &sha256[..16],
                        &f.sha256[..f.sha256.len().min(16)],
                        f.bytes
                    ),
                );
            }
        }
        report.files_after_checkpoint = parquet_files(data_dir)?
            .iter()
            .filter(|p| !listed.contains(rel_string(p).as_str()))
            .count();
    }
    report.problems = problems.0;
    Ok(report)
}

fn verify_wal(
    wal_dir: &Path,
    latest: Option<&Checkpoint>,
    chain: &[(String, Checkpoint, String)],
    deleted: &HashSet<&str>,
    report: &mut IntegrityReport,
    problems: &mut Problems,
) -> Result<(), IntegrityError> {
    let item = |name: &str| format!("wal/{name}");
    let disk = match fs::metadata(wal_dir) {
        Ok(_) => list_segment_files(wal_dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(wal_dir)(e)),
    };
    // Every checkpoint's head must lie on the chain: seq -> (hash, checkpoint name).
    let heads: HashMap<u64, Vec<(String, &str)>> =
        chain.iter().fold(HashMap::new(), |mut m, (name, cp, _)| {
            m.entry(cp.wal.next_seq)
                .or_default()
                .push((cp.wal.head_hash.clone(), name.as_str()));
            m
        });
    let listed: BTreeMap<u64, &SegmentEntry> = latest
        .map(|cp| cp.wal.segments.iter().map(|s| (s.first_seq, s)).collect())
        .unwrap_or_default();
    let on_disk: HashSet<&str> = disk.iter().map(|s| s.name.as_str()).collect();

    // Listed segments that are gone: retention when recorded, otherwise missing. Reported in seq order with
    // what is on disk, so the first problem is the earliest.
    let mut gone: BTreeMap<u64, Problem> = BTreeMap::new();
    for (first, e) in &listed {
        if on_disk.contains(e.name.as_str()) {
            continue;
        }
        if !deleted.contains(e.name.as_str()) {
            gone.insert(
                *first,
                Problem {
                    kind: ProblemKind::Missing,
                    item: item(&e.name),
                    offset: None,
                    detail: format!(
                        "seqs {} to {} are listed by the newest checkpoint and no checkpoint records their \
                         deletion",
                        e.first_seq,
                        e.next_seq.saturating_sub(1)
                    ),
                },
            );
        }
    }
    if let Some(a) = latest.and_then(|cp| cp.wal.active.as_ref())
        && !on_disk.contains(a.name.as_str())
        && !deleted.contains(a.name.as_str())
        && !listed.contains_key(&a.first_seq)
        && disk
            .iter()
            .filter_map(|s| s.first_seq)
            .all(|f| f <= a.first_seq)
    {
        gone.insert(
            a.first_seq,
            Problem {
                kind: ProblemKind::Missing,
                item: item(&a.name),
                offset: None,
                detail: format!(
                    "the active segment of the newest checkpoint (from seq {}) is gone",
                    a.first_seq
                ),
            },
        );
    }

    let mut emit_gone_before = |seq: u64, problems: &mut Problems| {
        let later = gone.split_off(&seq);
        for (_, p) in std::mem::replace(&mut gone, later) {
            problems.push(p.kind, p.item, p.offset, p.detail);
        }
    };

    // Where the chain is expected to continue: (next seq, hash), None at the start or after damage.
    let mut link: Option<(u64, [u8; 32])> = None;
    // The segment before, with its length: where recovery cut it, if it left a gap after it.
    let mut prev: Option<(String, u64)> = None;
    let mut passed_heads = HashSet::new();
    for (i, seg) in disk.iter().enumerate() {
        let is_last = i + 1 == disk.len();
        let Some(first_seq) = seg.first_seq else {
            emit_gone_before(0, problems);
            problems.push(
                ProblemKind::Damaged,
                item(&seg.name),
                None,
                "not a segment name (its first seq in 20 digits)".into(),
            );
            link = None;
            continue;
        };
        emit_gone_before(first_seq, problems);
        let path = wal_dir.join(&seg.name);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        report.segments += 1;
        report.wal_bytes += bytes.len() as u64;
        let scan = scan_segment(&bytes, None);
        let entry = listed.get(&first_seq).filter(|e| e.name == seg.name);
        let mut before = problems.0.len();
        let mut recovery_gap = false;

        if let Some(h) = &scan.header {
            if h.first_seq != first_seq {
                problems.push(
                    ProblemKind::Reordered,
                    item(&seg.name),
                    Some(8),
                    format!(
                        "holds the segment that starts at seq {} (`{}`)",
                        h.first_seq,
                        format::segment_name(h.first_seq)
                    ),
                );
            } else if let Some((next, hash)) = link {
                if first_seq > next
                    && h.start_hash == hash
                    && let Some((pname, plen)) = &prev
                {
                    // Chained across a gap: the log was cut at damage and continued after seqs that had been
                    // written or passed (see `wal`). The lost records are the damage, named at the cut.
                    recovery_gap = true;
                    let copy = format::damaged_copy_name(pname, next);
                    let kept = if wal_dir.join(&copy).exists() {
                        format!("a copy of the segment as found is kept at `wal/{copy}`")
                    } else {
                        "no copy of it was kept".into()
                    };
                    problems.push(
                        ProblemKind::Damaged,
                        item(pname),
                        Some(*plen),
                        format!(
                            "records {next} to {} were lost: the segment was found damaged when the log was \
                             opened and cut here ({kept}); the log continues at seq {first_seq} in `wal/{}`",
                            first_seq - 1,
                            seg.name
                        ),
                    );
                    // This segment itself is checked as any other.
                    before = problems.0.len();
                } else if first_seq > next {
                    let range = next..first_seq;
                    // Listed segments in the gap were reported above (missing, or deleted on purpose).
                    if listed.range(range.clone()).next().is_none() {
                        problems.push(
                            ProblemKind::Missing,
                            item(&format::segment_name(next)),
                            None,
                            format!(
                                "seqs {} to {} are gone from between the segments around them",
                                range.start,
                                range.end - 1
                            ),
                        );
                    }
                } else if first_seq < next {
                    problems.push(
                        ProblemKind::Reordered,
                        item(&seg.name),
                        Some(8),
                        format!("starts at seq {first_seq}, inside the segment before it (which ends at seq {next})"),
                    );
                } else if h.start_hash != hash {
                    problems.push(
                        ProblemKind::Damaged,
                        item(&seg.name),
                        Some(16),
                        "does not continue the hash chain of the segment before it".into(),
                    );
                }
            }
            // A segment starting exactly at a checkpoint's head carries that head's hash in its header (not
            // after a gap: the head's record is among those lost).
            if !recovery_gap {
                check_head(
                    &heads,
                    first_seq,
                    &h.start_hash,
                    &seg.name,
                    &mut passed_heads,
                    problems,
                );
            }
        }
        if let Some(p) = &scan.problem {
            let tolerated = is_last && p.incomplete && entry.is_none();
            if tolerated {
                report.torn_tail_bytes = bytes.len() as u64 - p.offset;
            } else {
                let kind = if p.incomplete {
                    ProblemKind::Truncated
                } else {
                    ProblemKind::Damaged
                };
                problems.push(kind, item(&seg.name), Some(p.offset), p.detail.clone());
            }
        }
        // Every checkpoint head inside this segment must be on its chain.
        for (seq, hash) in &scan.hashes_at {
            check_head(&heads, *seq, hash, &seg.name, &mut passed_heads, problems);
        }
        if let Some(e) = entry
            && problems.0.len() == before
        {
            let len = bytes.len() as u64;
            let sha = hex(&Sha256::digest(&bytes));
            if len < e.bytes {
                problems.push(
                    ProblemKind::Truncated,
                    item(&seg.name),
                    Some(len),
                    format!("{len} bytes, the checkpoint says {}", e.bytes),
                );
            } else if len != e.bytes || sha != e.sha256 {
                problems.push(
                    ProblemKind::Damaged,
                    item(&seg.name),
                    None,
                    format!(
                        "SHA-256 {} ({len} bytes), the checkpoint says {} ({} bytes)",
                        &sha[..16],
                        &e.sha256[..e.sha256.len().min(16)],
                        e.bytes
                    ),
                );
            }
        }
        report.records += scan.next_seq.saturating_sub(first_seq);
        prev = Some((seg.name.clone(), bytes.len() as u64));
        link = if problems.0.len() == before {
            Some((scan.next_seq, scan.end_hash))
        } else {
            // Already reported: do not report the next segment's link to damaged bytes as a second problem.
            None
        };
        if is_last && let Some(cp) = latest {
            let head = cp.wal.next_seq;
            if problems.0.len() == before && scan.next_seq < head && first_seq <= head {
                problems.push(
                    ProblemKind::Truncated,
                    item(&seg.name),
                    Some(scan.end_offset),
                    format!(
                        "the log ends at seq {}, the newest checkpoint covers up to seq {}",
                        scan.next_seq,
                        head - 1
                    ),
                );
            }
            report.records_after_checkpoint = scan.next_seq.saturating_sub(head);
        }
    }
    emit_gone_before(u64::MAX, problems);
    if disk.is_empty()
        && let Some(cp) = latest
        && cp.wal.next_seq > 1
        && cp.wal.segments.is_empty()
    {
        problems.push(
            ProblemKind::Missing,
            "wal/".into(),
            None,
            format!(
                "no segment, the newest checkpoint covers up to seq {}",
                cp.wal.next_seq - 1
            ),
        );
    }
    Ok(())
}

fn check_head(
    heads: &HashMap<u64, Vec<(String, &str)>>,
    seq: u64,
    hash: &[u8; 32],
    segment: &str,
    passed: &mut HashSet<u64>,
    problems: &mut Problems,
) {
    if !passed.insert(seq) {
        return;
    }
    let Some(at) = heads.get(&seq) else {
        return;
    };
    let hash = hex(hash);
    if let Some((_, name)) = at.iter().find(|(h, _)| *h != hash) {
        problems.push(
            ProblemKind::Damaged,
            format!("wal/{segment}"),
            None,
            format!(
                "the hash chain at seq {seq} differs from the one checkpoint `{name}` signed: records before it \
                 were rewritten"
            ),
        );
    }
}

// ---- segments -------------------------------------------------------------------------------------------

/// `*.seg` files in `dir`, by name (which sorts by first seq); none when `dir` does not exist.
fn list_segment_files(dir: &Path) -> Result<Vec<SegmentFile>, IntegrityError> {
    match format::list_segment_files(dir) {
        Ok(files) => Ok(files),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

#[derive(Debug)]
struct ScanProblem {
    offset: u64,
    detail: String,
    /// The bytes end inside a record (or header): truncation, or a write in progress.
    incomplete: bool,
}

#[derive(Debug)]
struct SegScan {
    header: Option<Header>,
    /// The seq after the last intact record.
    next_seq: u64,
    /// The chain hash after the last intact record (the start hash when none).
    end_hash: [u8; 32],
    /// Where the last intact record ends.
    end_offset: u64,
    /// The chain hash after each record, as (seq after it, hash).
    hashes_at: Vec<(u64, [u8; 32])>,
    problem: Option<ScanProblem>,
}

/// Walks one segment's bytes (the format of `wal::format`): header, then records (checksum, seq, chain hash), up
/// to the end or, with `stop`, the record with that seq.
fn scan_segment(b: &[u8], stop: Option<u64>) -> SegScan {
    let mut scan = SegScan {
        header: None,
        next_seq: 0,
        end_hash: [0; 32],
        end_offset: 0,
        hashes_at: Vec::new(),
        problem: None,
    };
    let fail = |offset: usize, detail: String, incomplete: bool| {
        Some(ScanProblem {
            offset: offset as u64,
            detail,
            incomplete,
        })
    };
    let Some(h) = b.first_chunk::<{ HEADER_LEN as usize }>() else {
        scan.problem = fail(
            0,
            format!("{} bytes, shorter than a segment header", b.len()),
            true,
        );
        return scan;
    };
    let header = match format::decode_header(h) {
        Ok(h) => h,
        Err(HeaderError::BadMagic) => {
            scan.problem = fail(0, "not a write-ahead log segment (bad magic)".into(), false);
            return scan;
        }
        Err(e @ HeaderError::Checksum) => {
            scan.problem = fail(0, e.as_str().into(), false);
            return scan;
        }
    };
    scan.header = Some(header);
    scan.next_seq = header.first_seq;
    scan.end_hash = header.start_hash;
    scan.end_offset = HEADER_LEN;
    let mut off = HEADER_LEN as usize;
    while off < b.len() && stop != Some(scan.next_seq) {
        let rec = match format::record_at(b, off) {
            Ok(r) => r,
            Err(bad) => {
                scan.problem = fail(off, bad.to_string(), bad.incomplete());
                return scan;
            }
        };
        if !rec.crc_matches() {
            scan.problem = fail(
                off,
                format!("record checksum mismatch (seq {})", scan.next_seq),
                false,
            );
            return scan;
        }
        let seq = rec.prefix.seq;
        if seq != scan.next_seq {
            scan.problem = fail(
                off,
                format!("record has seq {seq}, expected {}", scan.next_seq),
                false,
            );
            return scan;
        }
        let hash = format::chain_hash(&scan.end_hash, seq, rec.payload);
        if hash[..] != *rec.hash {
            scan.problem = fail(off, format!("hash chain broken at seq {seq}"), false);
            return scan;
        }
        scan.end_hash = hash;
        scan.next_seq += 1;
        scan.end_offset = rec.end as u64;
        scan.hashes_at.push((scan.next_seq, hash));
        off = rec.end;
    }
    scan
}

// ---- helpers --------------------------------------------------------------------------------------------

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn hash_file(path: &Path) -> Result<(u64, String), IntegrityError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex(&h.finalize())))
}

fn rel_string(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A relative path with no `..`, root or prefix: verify never reads outside the data directory.
fn is_safe_rel(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn sync_dir(dir: &Path) -> Result<(), IntegrityError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_pem_round_trips() {
        let s = Signer::from_seed([7; 32]);
        let pem = s.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), s.public_key());
        assert_eq!(s.public_key().key_id().len(), 16);
    }

    #[test]
    fn detached_signatures_verify_only_for_their_message_and_key() {
        let s = Signer::from_seed([7; 32]);
        let sig = s.sign_detached(b"manifest");
        assert!(s.public_key().verify_detached(b"manifest", &sig));
        assert!(!s.public_key().verify_detached(b"manifesT", &sig));
        assert!(
            !Signer::from_seed([8; 32])
                .public_key()
                .verify_detached(b"manifest", &sig)
        );
        assert!(!s.public_key().verify_detached(b"manifest", "not base64"));
    }

    #[test]
    fn hex_round_trips() {
        let h: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(unhex32(&hex(&h)), Some(h));
        assert_eq!(unhex32("zz"), None);
    }

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

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(is_safe_rel("store/a/b.parquet"));
        for p in ["", "/etc/passwd", "../x.parquet", "store/../../x"] {
            assert!(!is_safe_rel(p), "{p}");
        }
    }
}
