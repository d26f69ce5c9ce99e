//! The Parquet files a checkpoint covers: those on disk ([`parquet_files`]) and the listing a chain of
//! checkpoints states, folded checkpoint by checkpoint with an incremental digest ([`FileSet`]).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Checkpoint, Deletion, FileEntry, IntegrityError, hex, io_err};

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
