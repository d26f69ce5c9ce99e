//! The dedup window's keys kept beside the log, so that releasing converted log segments does not shorten the
//! window a restarted collector rebuilds: an apiserver retry that arrives after a restart is still stored once
//! although the segment holding its first copy is gone.
//!
//! # On disk
//!
//! `DATA/dedup/<generation:020>.keys`: 24-byte entries, each the little-endian `seq`, full key and identity
//! key of one stored record (see the `dedup` module); nothing else, so a torn last entry (a crash in
//! mid-write) is simply ignored, and a failed write is cut back to the last whole entry. Entries are written
//! after their records are durable, in any order (concurrent commits), never for a record that was not
//! stored. A file takes new entries until it holds the window's capacity (so it may end one batch over); it
//! is synced before the next one starts, and kept beside it, so the two cover the window. On open the window
//! is rebuilt and written to a new generation, and older files are deleted.
//!
//! # Releasing
//!
//! [`KeyJournal::sync`] returns the seq below which every stored record's entry is written and synced: the
//! log may release segments below it. Commits hold [`KeyJournal::commit_gate`] from before their append
//! until their entries are written, and `sync` takes the gate exclusively for an instant to read the log's
//! next seq, so no record below that seq can still be on its way to the journal.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use kubetrail_store::Wal;

/// Bytes per entry: seq, full key, identity key.
const ENTRY: usize = 24;

/// One stored record's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEntry {
    pub seq: u64,
    pub full: u64,
    pub id: u64,
}

impl KeyEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.full.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
    }

    fn decode(b: &[u8]) -> KeyEntry {
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        KeyEntry {
            seq: u(0),
            full: u(8),
            id: u(16),
        }
    }
}

/// The open journal: appended to by commits, synced before log segments are released.
#[derive(Debug)]
pub struct KeyJournal {
    dir: PathBuf,
    wal: Arc<Wal>,
    capacity: usize,
    gate: RwLock<()>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    generation: u64,
    entries: usize,
    /// A new file was created since the last sync: the directory must be synced too.
    created: bool,
    /// Bytes of whole entries in `file`: a failed write is cut back to them.
    bytes: u64,
    /// The first write error: entries may be missing, so nothing is released on their strength until the
    /// next start writes a new generation.
    failed: Option<String>,
}

/// The journal's files, oldest first, by generation.
fn generations(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let generation = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".keys"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(g) = generation {
            out.push((g, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Every entry in the journal at `dir`, by seq (one per seq; a torn last entry of a file is ignored).
pub fn read(dir: &Path) -> io::Result<Vec<KeyEntry>> {
    let mut out = Vec::new();
    for (_, path) in generations(dir)? {
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        out.extend(bytes.chunks_exact(ENTRY).map(KeyEntry::decode));
    }
    out.sort_by_key(|e| e.seq);
    out.dedup_by_key(|e| e.seq);
    Ok(out)
}

fn file_name(generation: u64) -> String {
    format!("{generation:020}.keys")
}

fn create(dir: &Path, generation: u64) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create_new(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(dir.join(file_name(generation)))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl KeyJournal {
    /// Starts a new generation at `dir` holding `window` (the rebuilt window's entries), synced, and deletes
    /// the older generations.
    pub fn start(
        dir: &Path,
        wal: Arc<Wal>,
        capacity: usize,
        window: &[KeyEntry],
    ) -> io::Result<KeyJournal> {
        std::fs::create_dir_all(dir)?;
        let old = generations(dir)?;
        let generation = old.last().map_or(0, |(g, _)| g + 1);
        let mut file = create(dir, generation)?;
        let mut buf = Vec::with_capacity(window.len() * ENTRY);
        for e in window {
            e.encode(&mut buf);
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        sync_dir(dir)?;
        for (_, path) in old {
            std::fs::remove_file(path)?;
        }
        Ok(KeyJournal {
            dir: dir.to_path_buf(),
            wal,
            capacity: capacity.max(1),
            gate: RwLock::new(()),
            state: Mutex::new(State {
                file,
                generation,
                entries: window.len(),
                bytes: buf.len() as u64,
                created: false,
                failed: None,
            }),
        })
    }

    /// Held by a commit from before its log append until its entries are [`record`](Self::record)ed.
    pub fn commit_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the entries of records stored at consecutive seqs from `first`. A write error is kept for
    /// [`sync`](Self::sync) to report (the records are stored; only their dedup after a restart is at stake).
    pub fn record(&self, first: u64, keys: &[(u64, u64)]) {
        let mut buf = Vec::with_capacity(keys.len() * ENTRY);
        for (i, (full, id)) in keys.iter().enumerate() {
            KeyEntry {
                seq: first + i as u64,
                full: *full,
                id: *id,
            }
            .encode(&mut buf);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = self.write(&mut st, &buf, keys.len()) {
            // A part of the batch may be on disk: cut it, so the entries after it stay aligned.
            let _ = st.file.set_len(st.bytes);
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot write the dedup keys: converted log segments are kept (until the log fills) until the next start");
            st.failed.get_or_insert(e.to_string());
        }
    }

    fn write(&self, st: &mut State, buf: &[u8], n: usize) -> io::Result<()> {
        if st.entries >= self.capacity {
            // The previous generation stays, synced: with this one it covers the window.
            st.file.sync_data()?;
            let next = create(&self.dir, st.generation + 1)?;
            st.file = next;
            st.generation += 1;
            st.entries = 0;
            st.bytes = 0;
            st.created = true;
            if let Some(old) = st.generation.checked_sub(2) {
                for (g, path) in generations(&self.dir)? {
                    if g <= old {
                        std::fs::remove_file(path)?;
                    }
                }
            }
        }
        st.file.write_all(buf)?;
        st.entries += n;
        st.bytes += buf.len() as u64;
        Ok(())
    }

    /// Syncs the journal and returns the seq below which every stored record's entry is on disk: the log
    /// may release segments below it. An error if an entry could not be written.
    pub fn sync(&self) -> io::Result<u64> {
        let upto = {
            let _all = self.gate.write().unwrap_or_else(|e| e.into_inner());
            self.wal.next_seq()
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &st.failed {
            return Err(io::Error::other(format!(
                "dedup keys in `{}` are incomplete since: {e}",
                self.dir.display()
            )));
        }
        st.file.sync_data()?;
        if st.created {
            sync_dir(&self.dir)?;
            st.created = false;
        }
        Ok(upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_store::WalOptions;

    fn wal(dir: &Path) -> Arc<Wal> {
        Arc::new(Wal::open(dir, WalOptions::default()).unwrap().0)
    }

    #[test]
    fn entries_survive_rotation_and_a_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dedup");
        let j = KeyJournal::start(&dir, wal(&tmp.path().join("wal")), 3, &[]).unwrap();
        for seq in 0..10u64 {
            j.record(seq, &[(seq * 10, seq * 100)]);
        }
        j.sync().unwrap();
        // Capacity 3: the current file and the one before it, at least the last 3 entries.
        let files = generations(&dir).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        let entries = read(&dir).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (6..10).collect::<Vec<_>>()
        );
        assert_eq!(entries[3].full, 90);
        assert_eq!(entries[3].id, 900);
        // A crash in mid-write leaves part of an entry: it is ignored, the rest read.
        let (_, last) = files.last().unwrap();
        OpenOptions::new()
            .append(true)
            .open(last)
            .unwrap()
            .write_all(&[1, 2, 3])
            .unwrap();
        assert_eq!(read(&dir).unwrap(), entries);
        // A new generation holds what it is given; the old files go.
        drop(j);
        let j = KeyJournal::start(&dir, wal(&tmp.path().join("wal2")), 3, &entries[2..]).unwrap();
        assert_eq!(generations(&dir).unwrap().len(), 1);
        assert_eq!(read(&dir).unwrap(), entries[2..]);
        drop(j);
    }

    #[test]
    fn sync_names_the_log_position_every_entry_below_is_written_for() {
        let tmp = tempfile::tempdir().unwrap();
        let log = wal(&tmp.path().join("wal"));
        let j = KeyJournal::start(&tmp.path().join("dedup"), log.clone(), 100, &[]).unwrap();
        let seqs = {
            let _gate = j.commit_gate();
            let seqs = log.append(&[b"a", b"b"]).unwrap();
            j.record(seqs.start, &[(1, 1), (2, 2)]);
            seqs
        };
        assert_eq!(j.sync().unwrap(), seqs.end);
        // A write that fails (here: a handle that cannot write) makes sync refuse until the next start
        // writes a new generation; what was written stays whole entries.
        let path = {
            let st = j.state.lock().unwrap();
            tmp.path().join("dedup").join(file_name(st.generation))
        };
        j.state.lock().unwrap().file = File::open(&path).unwrap();
        j.record(seqs.end, &[(3, 3)]);
        let e = j.sync().unwrap_err().to_string();
        assert!(e.contains("incomplete"), "{e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * ENTRY as u64);
    }
}
