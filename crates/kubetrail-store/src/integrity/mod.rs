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
//!
//! # Modules
//!
//! - `key`: the signing key ([`Signer`]) and the public key checkpoints are verified with ([`PublicKey`]);
//! - `checkpoint`: the checkpoint format ([`Checkpoint`], [`Deletion`]), its file names, and reading and
//!   authenticating checkpoint files;
//! - `fileset`: the Parquet files a checkpoint covers: on disk ([`parquet_files`]) and as a chain of
//!   checkpoints states them ([`FileSet`]);
//! - `scan`: the read-only walk of one log segment's bytes, through the log's own `wal::format`;
//! - `write`: writing checkpoints ([`write_checkpoint`]) and the log segments retention is about to delete;
//! - `verify`: [`verify_store`] and [`check_anchor`], and what they report.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

mod checkpoint;
mod fileset;
mod key;
mod scan;
mod verify;
mod write;

pub use checkpoint::{
    ActiveSegment, Checkpoint, Deletion, FileEntry, SegmentEntry, WalState, checkpoint_file_name,
    latest_checkpoint, latest_checkpoint_seq, read_checkpoint, sha256_hex,
};
pub use fileset::{FileSet, parquet_files};
pub use key::{PublicKey, Signer};
pub use verify::{IntegrityReport, Problem, ProblemKind, check_anchor, verify_store};
pub use write::{
    forget_remembered_listing, wal_retention, write_checkpoint, write_checkpoint_offline,
};

/// The checkpoint format version this code writes and reads.
pub const CHECKPOINT_VERSION: u32 = 2;
/// Every this many checkpoints (one a day at one every ten minutes; more often when the log is released more
/// often, each release being a checkpoint) lists every file; the others list only
/// the files added since the previous one, so a year of hourly files does not make every checkpoint megabytes.
pub const FULL_LISTING_EVERY: u64 = 144;
/// The directory of checkpoints under the data directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The signing key's file name under the data directory.
pub const KEY_FILE: &str = "integrity.key";

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
    fn hex_round_trips() {
        let h: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(unhex32(&hex(&h)), Some(h));
        assert_eq!(unhex32("zz"), None);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(is_safe_rel("store/a/b.parquet"));
        for p in ["", "/etc/passwd", "../x.parquet", "store/../../x"] {
            assert!(!is_safe_rel(p), "{p}");
        }
    }
}
