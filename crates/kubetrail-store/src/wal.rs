//! The write-ahead log: segmented, checksummed, hash-chained, group-committed.
//!
//! # On disk
//!
//! ```text
//! DIR/00000000000000000001.seg    segments, named by the first seq they hold (20 digits); seqs start at 1
//! DIR/00000000000000004097.seg    the last one is the active segment, the only one appended to
//! DIR/cursors/<name>              named reader positions
//! ```
//!
//! A segment is a header and then records, back to back (the format is the `format` module's, which
//! `integrity` reads too):
//!
//! ```text
//! header  [8 magic "KTWAL\0\0\x01"][u64 LE first_seq][32 start_hash][u32 LE crc32 of the 48 bytes before]
//! record  [u32 LE len][u32 LE crc][u64 LE seq][len bytes payload][32 hash]
//!         crc  = CRC-32 of len, seq, payload and hash (every byte of the record but the crc itself)
//!         hash = SHA-256(previous record's hash || seq as u64 LE || payload)
//! ```
//!
//! The chain starts from 32 zero bytes at seq 1. Each header records the seq and chain hash its segment starts
//! from, so deleting old segments (retention, [`Wal::release_before`]) leaves the rest verifiable, while
//! deleting or altering a segment in the middle breaks the link between its neighbours. Record overhead is 48
//! bytes; a payload is at most [`MAX_PAYLOAD_BYTES`].
//!
//! # Durability
//!
//! [`Wal::append`] writes a whole batch with one `write` under the log's lock and returns only once the batch
//! is fsynced (`fdatasync`). Concurrent appenders share fsyncs (group commit): one caller, the leader, syncs
//! everything written so far outside the lock while the others keep writing; a caller whose records a
//! completed sync already covers returns without syncing. Only the active segment ever holds unsynced records:
//! a segment is synced before the next one is created. New segments are written as `*.tmp`, synced and
//! renamed, and the directory is synced whenever a segment appears or disappears, so a segment file is never
//! seen with a partial header.
//!
//! A batch never spans segments, so a segment can exceed `segment_bytes` by up to one batch. Readers
//! ([`Wal::read_from`], and so every cursor) read only up to [`Wal::durable_seq`]: they are never shown a
//! record that is not yet synced, nor one that was never acknowledged.
//!
//! ## Recovery
//!
//! A crash can leave a torn tail in the active segment: records that were being written and so were never
//! acknowledged. [`Wal::open`] cuts the active segment after its last intact record ([`Recovery`] reports the
//! bytes cut). When intact records follow the cut point, what was cut was not a torn write but damage (a
//! flipped byte, an edit): a copy of the segment as found is kept as evidence, `<segment>.seg.damaged-<seq>`
//! (synced before the cut), and records were lost.
//!
//! The log never rewinds: a seq that a reader or a checkpoint has passed is never handed out again. After the
//! cut, the log continues at the highest of the seq after its last intact record, the seq after the intact
//! records found after the damage (read from the copy if a crash came before the log continued), the highest
//! cursor position in `cursors/`, and the floor its opener passes to [`Wal::open_with_floor`] (the collector
//! passes the head of its newest signed checkpoint). When that is past the last intact record, a new segment
//! starts at it, its header chained to that record: the seqs in between will never exist
//! ([`Recovery::skipped`], described by [`Wal::damage`]). Readers step over such a gap between segments as
//! they do over released segments; [`Wal::verify`] (and `integrity::verify_store`) fails, naming the damaged
//! segment, the seqs lost and the copy, until retention releases that segment. A new log (no segment yet)
//! starts at that floor too, without a gap.
//!
//! ## Healing
//!
//! A failed write, fsync or segment creation (a full disk, an I/O error) fails every append whose records are
//! not yet synced, and [`Wal::healthy`] reports the failure. The next append (or [`Wal::heal`]) first heals
//! the log: once no sync is running and no appender is waiting, it cuts the active segment back to the end of
//! its last synced record through a new file handle, syncs the cut and starts a new segment there (after a
//! failed fsync the kernel may have dropped dirty pages and report a later fsync of the same file as clean, so
//! nothing written after the last successful sync is trusted or appended to). The records whose appenders got
//! an error are gone, no acknowledged record is touched, and seqs continue after the last acknowledged record.
//! When healing fails too (the disk is still full), that append fails with the error and the next one tries
//! again; nothing spins. A failure to start a segment leaves no half-written file behind (the `*.tmp` is
//! removed), and [`Wal::release_before`] still frees old segments when it cannot start a new one.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(crate) mod format;

pub use format::MAX_PAYLOAD_BYTES;
use format::{
    BadFrame, HASH_LEN, HEADER_LEN, Header, PREFIX_LEN, Prefix, RECORD_OVERHEAD, SEQ_OFFSET,
    chain_hash, decode_header, encode_header, encode_record,
};

const CURSOR_MAGIC: [u8; 4] = *b"KTC1";
/// Encode buffers above this size are not kept between appends.
const KEEP_BUF_BYTES: usize = 8 << 20;

/// How the log is laid out and how hard it tries to keep records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started when the next batch would take the active one past this size.
    pub segment_bytes: u64,
    /// The most bytes of segments kept on disk: an append beyond it fails with [`WalError::Full`].
    pub budget_bytes: u64,
    /// Fsync appends, new segments and directory changes. Only tests and benchmarks turn this off.
    pub fsync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            budget_bytes: 8 << 30,
            fsync: true,
        }
    }
}

/// What [`Wal::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Segments on disk.
    pub segments: usize,
    /// Records kept, from the oldest segment to the end of the log.
    pub records: u64,
    /// The seq the next append gets.
    pub next_seq: u64,
    /// Bytes cut from the end of the active segment: a torn write, never acknowledged (or, with
    /// `quarantined`, damage).
    pub torn_bytes_cut: u64,
    /// When what was cut was not a torn write (intact records followed the damage: a flipped byte, an edit),
    /// a copy of the segment as it was, kept as evidence: `<segment>.seg.damaged-<seq>`.
    pub quarantined: Option<PathBuf>,
    /// Whether the records scanned (the active segment, and its link to the segment before) chain correctly.
    /// `false` means records were altered with valid checksums: run a full [`Wal::verify`].
    pub chain_ok: bool,
    /// Seqs that will never exist: the log ended before seqs that had been written (intact records after
    /// damage), or that a cursor or the caller's floor had passed, so it continues after them in a new segment.
    pub skipped: Option<Range<u64>>,
}

/// Disk use of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub segments: usize,
    pub budget_bytes: u64,
    /// The first seq still on disk (equal to `next_seq` when the log holds no record).
    pub oldest_seq: u64,
    pub next_seq: u64,
}

/// A log that verified end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub oldest_seq: u64,
    pub next_seq: u64,
    /// The chain hash of the last record verified (the start hash of the log when it holds none).
    pub head_hash: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The disk budget is used up: the records that every reader has passed must be released first.
    #[error(
        "write-ahead log full: {used} of {budget} bytes used; records are released once every sink has passed \
         them (check for a stuck sink) or raise the disk budget"
    )]
    Full { used: u64, budget: u64 },
    #[error("i/o error on `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "corrupt write-ahead log segment `{}` at offset {offset}: {reason}",
        segment.display()
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("record of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error(
        "invalid cursor name `{0}`: use 1 to 100 characters among a-z, A-Z, 0-9, `-`, `_` and `.`, not starting \
         with `.`"
    )]
    CursorName(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(segment: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        segment: segment.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// The write-ahead log. `Send + Sync`: share it with `Arc`.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    /// Signalled when a sync completes (or fails), and when an appender stops waiting after a failure.
    synced: Condvar,
    /// What recovery lost at open, described for an alert.
    damage: Option<String>,
    /// Failures injected by the unit tests, as bits of [`Fault`].
    #[cfg(test)]
    faults: std::sync::atomic::AtomicU8,
}

/// Where a test can make IO fail (as a full disk does), through `Wal::fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Appending a batch: half of it reaches the file, then the write fails.
    Write = 1,
    /// Any fsync of a segment.
    Sync = 2,
    /// Writing a new segment's header: the `*.tmp` is created, then the write fails.
    Create = 4,
}

#[derive(Debug)]
struct State {
    /// Oldest first; the last is the active segment. Never empty.
    segments: VecDeque<Segment>,
    active: Arc<File>,
    used: u64,
    next_seq: u64,
    last_hash: [u8; 32],
    /// Every seq below this is synced: the chain hash at it and the size of the active segment up to it.
    durable_seq: u64,
    durable_hash: [u8; 32],
    durable_bytes: u64,
    syncing: bool,
    /// Appenders waiting for their records to be synced (leader included).
    waiters: usize,
    /// Fsyncs of appended records so far.
    syncs: u64,
    /// Set by a failed write, fsync or segment creation: nothing more is acknowledged or appended until the log
    /// heals (see the module docs).
    failed: Option<Failure>,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Failure {
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

impl State {
    fn active_segment(&self) -> &Segment {
        self.segments
            .back()
            .expect("the log always has an active segment")
    }

    fn failure(&self) -> Option<WalError> {
        self.failed.as_ref().map(|f| WalError::Io {
            path: f.path.clone(),
            source: io::Error::new(
                f.kind,
                format!(
                    "an earlier write or fsync failed ({}); records not yet synced were dropped, and the log \
                     heals at the next append",
                    f.message
                ),
            ),
        })
    }
}

impl Wal {
    /// Opens the log in `dir` (created if missing) and recovers it: cuts a torn tail off the active segment and
    /// checks the checksums and hash chain of that segment. A full check is [`verify`](Self::verify). The log
    /// continues after the highest cursor position; see [`open_with_floor`](Self::open_with_floor).
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovery), WalError> {
        Self::open_with_floor(dir, opts, 0)
    }

    /// [`open`](Self::open), and the next seq is at least `min_next_seq`: pass the seq after the last one
    /// anything outside the log has seen (the head of the newest signed checkpoint, files converted past a
    /// cursor). When recovery cut the log below it (or below a cursor), the log continues there in a new
    /// segment and [`Recovery::skipped`] names the seqs that will never exist. A new log starts there.
    pub fn open_with_floor(
        dir: &Path,
        opts: WalOptions,
        min_next_seq: u64,
    ) -> Result<(Wal, Recovery), WalError> {
        let cursors = dir.join("cursors");
        let created = !dir.exists();
        fs::create_dir_all(&cursors).map_err(io_err(&cursors))?;
        if created && opts.fsync {
            // Make the new directories themselves durable, not only what is put in them.
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        remove_tmp_files(dir, format::is_tmp_segment_name)?;
        remove_tmp_files(&cursors, |name| {
            name.starts_with('.') && name.ends_with(".tmp")
        })?;
        let mut segments = list_segments(dir)?;
        let highest_cursor = highest_cursor(&cursors)?;
        if segments.is_empty() {
            // A new log starts after every seq seen elsewhere (a log deleted under its readers, Parquet files
            // restored into a new data directory): nothing is lost here, so no gap.
            let first_seq = highest_cursor.max(min_next_seq).max(1);
            let (file, path) = create_segment(dir, first_seq, &[0; 32], opts.fsync, &no_fault)?;
            drop(file);
            segments.push_back(Segment {
                first_seq,
                path,
                bytes: HEADER_LEN,
            });
        }

        let mut chain_ok = true;
        let last = segments.back().expect("at least one segment").clone();
        let scan = scan_tail(&last)?;
        if scan.header.first_seq != last.first_seq {
            return Err(corrupt(
                &last.path,
                8,
                format!(
                    "the header says the segment starts at seq {}, its name says {}",
                    scan.header.first_seq, last.first_seq
                ),
            ));
        }
        chain_ok &= scan.chain_ok;
        if segments.len() >= 2 {
            let prev = &segments[segments.len() - 2];
            chain_ok &= tail_hash(prev)? == scan.header.start_hash;
        }
        let scanned_chain_ok = chain_ok;
        let torn = scan.file_len - scan.valid_len;
        let mut active = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(io_err(&last.path))?;
        // The copy a damaged active segment is kept as, named by the first seq lost.
        let copy = damaged_copy(&last.path, scan.next_seq);
        let mut quarantined = None;
        // The seq after the last record known to have been written.
        let mut written_until = scan.next_seq;
        if torn > 0 {
            // A crash tears only the end of the last write. An intact record after the cut point means the
            // bytes before it were damaged or altered: keep a copy as evidence before cutting.
            if let Some(last_seq) = intact_records_after(&last.path, scan.valid_len, scan.next_seq)?
            {
                fs::copy(&last.path, &copy).map_err(io_err(&copy))?;
                if opts.fsync {
                    File::open(&copy)
                        .and_then(|f| f.sync_all())
                        .map_err(io_err(&copy))?;
                    sync_dir(dir)?;
                }
                quarantined = Some(copy);
                chain_ok = false;
                written_until = last_seq + 1;
            }
            active.set_len(scan.valid_len).map_err(io_err(&last.path))?;
            if opts.fsync {
                active.sync_all().map_err(io_err(&last.path))?;
            }
        } else if copy.exists() {
            // Cut at the damage the copy was kept for, and a crash came before the log continued after it: the
            // copy still says which seqs were written.
            if let Some(last_seq) = intact_records_after(&copy, scan.valid_len, scan.next_seq)? {
                written_until = last_seq + 1;
                quarantined = Some(copy);
            }
        }
        segments.back_mut().expect("at least one segment").bytes = scan.valid_len;

        // Never hand out a seq again that was written, or that a reader or the caller has passed.
        let next_seq = written_until
            .max(highest_cursor)
            .max(min_next_seq)
            .max(scan.next_seq);
        let mut skipped = None;
        if next_seq > scan.next_seq {
            let (file, path) =
                create_segment(dir, next_seq, &scan.last_hash, opts.fsync, &no_fault)?;
            segments.push_back(Segment {
                first_seq: next_seq,
                path,
                bytes: HEADER_LEN,
            });
            active = file;
            skipped = Some(scan.next_seq..next_seq);
        }
        let damage = describe_damage(
            &last.path,
            scan.valid_len,
            torn,
            quarantined.as_deref(),
            skipped.as_ref(),
            segments.back().map(|s| s.path.as_path()),
            scanned_chain_ok,
        );

        let used = segments.iter().map(|s| s.bytes).sum();
        let oldest = segments.front().expect("at least one segment").first_seq;
        let durable_bytes = segments.back().expect("at least one segment").bytes;
        let recovery = Recovery {
            segments: segments.len(),
            records: scan.next_seq - oldest,
            next_seq,
            torn_bytes_cut: torn,
            chain_ok,
            quarantined,
            skipped,
        };
        let state = State {
            segments,
            active: Arc::new(active),
            used,
            next_seq,
            last_hash: scan.last_hash,
            durable_seq: next_seq,
            durable_hash: scan.last_hash,
            durable_bytes,
            syncing: false,
            waiters: 0,
            syncs: 0,
            failed: None,
            buf: Vec::new(),
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(state),
            synced: Condvar::new(),
            damage,
            #[cfg(test)]
            faults: std::sync::atomic::AtomicU8::new(0),
        };
        Ok((wal, recovery))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock short of a bug; IO failures are tracked in `failed`.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&'a self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.synced.wait(st).unwrap_or_else(|e| e.into_inner())
    }

    /// An injected failure, in unit tests; nothing otherwise.
    #[cfg_attr(not(test), inline(always))]
    fn fault(&self, at: Fault) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.load(std::sync::atomic::Ordering::SeqCst) & at as u8 != 0 {
            return Err(injected(at));
        }
        let _ = at;
        Ok(())
    }

    /// Records `e` as the log's failure (it heals at the next append) and returns it.
    fn fail(&self, st: &mut State, e: WalError) -> WalError {
        let (path, kind, message) = match &e {
            WalError::Io { path, source } => (path.clone(), source.kind(), source.to_string()),
            other => (self.dir.clone(), io::ErrorKind::Other, other.to_string()),
        };
        st.failed = Some(Failure {
            path,
            kind,
            message,
        });
        self.synced.notify_all();
        e
    }

    /// Appends `payloads` as consecutive records and returns their seqs, once they are written and (with
    /// `fsync`) synced. Either the whole batch is appended or none of it. After a failure, heals the log first.
    pub fn append(&self, payloads: &[&[u8]]) -> Result<Range<u64>, WalError> {
        let mut batch_bytes = 0u64;
        for p in payloads {
            if p.len() > MAX_PAYLOAD_BYTES {
                return Err(WalError::TooLarge {
                    len: p.len(),
                    max: MAX_PAYLOAD_BYTES,
                });
            }
            batch_bytes += p.len() as u64 + RECORD_OVERHEAD;
        }
        let mut st = self.lock();
        if st.failed.is_some() {
            st = self.heal_locked(st)?;
        }
        let start = st.next_seq;
        if payloads.is_empty() {
            return Ok(start..start);
        }
        let active_bytes = st.active_segment().bytes;
        let roll =
            active_bytes > HEADER_LEN && active_bytes + batch_bytes > self.opts.segment_bytes;
        let need = batch_bytes + if roll { HEADER_LEN } else { 0 };
        if st.used + need > self.opts.budget_bytes {
            return Err(WalError::Full {
                used: st.used,
                budget: self.opts.budget_bytes,
            });
        }
        if roll {
            self.roll(&mut st)?;
        }

        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        buf.reserve(batch_bytes as usize);
        let mut hash = st.last_hash;
        for (i, p) in payloads.iter().enumerate() {
            hash = encode_record(&mut buf, start + i as u64, &hash, p);
        }
        let written = match self.fault(Fault::Write) {
            Ok(()) => (&*st.active).write_all(&buf),
            Err(e) => {
                // As a full disk does: part of the batch reaches the file.
                let _ = (&*st.active).write_all(&buf[..buf.len() / 2]);
                Err(e)
            }
        };
        if buf.capacity() <= KEEP_BUF_BYTES {
            st.buf = buf;
        }
        if let Err(e) = written {
            // Whatever part of the batch reached the file is cut when the log heals.
            let path = st.active_segment().path.clone();
            return Err(self.fail(&mut st, WalError::Io { path, source: e }));
        }
        let end = start + payloads.len() as u64;
        st.next_seq = end;
        st.last_hash = hash;
        st.used += batch_bytes;
        st.segments.back_mut().expect("active segment").bytes += batch_bytes;
        if !self.opts.fsync {
            st.durable_seq = end;
            st.durable_hash = hash;
            st.durable_bytes = st.active_segment().bytes;
            return Ok(start..end);
        }

        // Group commit: become the leader if no sync is running, otherwise wait for one that covers `end`.
        st.waiters += 1;
        let result = loop {
            if st.durable_seq >= end {
                break Ok(start..end);
            }
            if st.syncing {
                // Even after a failure: the running sync may cover these records.
                st = self.wait(st);
                continue;
            }
            if let Some(e) = st.failure() {
                break Err(e);
            }
            st.syncing = true;
            let (target, target_hash, target_bytes) =
                (st.next_seq, st.last_hash, st.active_segment().bytes);
            let file = Arc::clone(&st.active);
            let path = st.active_segment().path.clone();
            drop(st);
            let synced = self.fault(Fault::Sync).and_then(|()| file.sync_data());
            st = self.lock();
            st.syncing = false;
            match synced {
                // Not trusted when something failed meanwhile: the log heals to what was synced before.
                Ok(()) if st.failed.is_none() => {
                    st.syncs += 1;
                    // A roll meanwhile synced further already (and started another segment).
                    if target > st.durable_seq {
                        st.durable_seq = target;
                        st.durable_hash = target_hash;
                        st.durable_bytes = target_bytes;
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    self.fail(&mut st, WalError::Io { path, source: e });
                }
            }
            self.synced.notify_all();
        };
        st.waiters -= 1;
        if st.failed.is_some() {
            // A heal may be waiting for the last waiter.
            self.synced.notify_all();
        }
        result
    }

    /// Heals the log after a failure (see the module docs), once no sync is running and no appender waits for
    /// one. On failure the error is recorded again and returned: the next call tries again.
    fn heal_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, WalError> {
        while st.failed.is_some() && (st.syncing || st.waiters > 0) {
            st = self.wait(st);
        }
        if st.failed.is_none() {
            // Another caller healed it meanwhile.
            return Ok(st);
        }
        match self.restart_at_durable(&mut st) {
            Ok(()) => {
                st.failed = None;
                Ok(st)
            }
            Err(e) => Err(self.fail(&mut st, e)),
        }
    }

    /// Cuts the active segment back to its last synced record (through a new handle) and continues in a new
    /// segment from there.
    fn restart_at_durable(&self, st: &mut State) -> Result<(), WalError> {
        let seg = st.active_segment().clone();
        let (seq, hash, keep) = (st.durable_seq, st.durable_hash, st.durable_bytes);
        debug_assert_eq!(seg.first_seq == seq, keep == HEADER_LEN);
        // The appends after the last synced record failed: cut them, so that not even a restart shows them.
        let file = OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .map_err(io_err(&seg.path))?;
        file.set_len(keep).map_err(io_err(&seg.path))?;
        st.used = st.used - seg.bytes + keep;
        st.segments.back_mut().expect("active segment").bytes = keep;
        st.next_seq = seq;
        st.last_hash = hash;
        if self.opts.fsync {
            self.fault(Fault::Sync)
                .and_then(|()| file.sync_all())
                .map_err(io_err(&seg.path))?;
        }
        drop(file);
        // When the active segment holds no synced record, the new one (of the same name) replaces it.
        let (file, path) =
            create_segment(&self.dir, seq, &hash, self.opts.fsync, &|f| self.fault(f))?;
        if seg.first_seq == seq {
            st.segments.pop_back();
            st.used -= keep;
        }
        st.segments.push_back(Segment {
            first_seq: seq,
            path,
            bytes: HEADER_LEN,
        });
        st.used += HEADER_LEN;
        st.active = Arc::new(file);
        st.durable_bytes = HEADER_LEN;
        Ok(())
    }

    /// Heals the log now if a write or fsync failed (what the next append would do first), so that
    /// [`healthy`](Self::healthy) turns `Ok` again without waiting for an append: call it every few seconds
    /// while the log is unhealthy. `Ok` when the log is healthy.
    pub fn heal(&self) -> Result<(), WalError> {
        let st = self.lock();
        if st.failed.is_none() {
            return Ok(());
        }
        self.heal_locked(st).map(drop)
    }

    /// `Err` (saying what failed) from a failed write, fsync or new segment until the log heals (at the next
    /// append, or [`heal`](Self::heal)): appends fail meanwhile, so the collector is not ready. A full
    /// budget ([`WalError::Full`]) is not a failure of the log and does not show here.
    pub fn healthy(&self) -> Result<(), String> {
        match &self.lock().failed {
            None => Ok(()),
            Some(f) => Err(format!(
                "cannot write to the write-ahead log: {} on `{}`; it heals at the next append once the disk \
                 accepts writes again",
                f.message,
                f.path.display()
            )),
        }
    }

    /// What recovery found when the log was opened, when records were lost or altered (damage, not a torn
    /// tail): which segment, where, which seqs are gone, where the copy is kept, where new records continue.
    /// For an alert; `None` after a clean open (or one that only cut a torn write).
    pub fn damage(&self) -> Option<String> {
        self.damage.clone()
    }

    /// Syncs the active segment and starts a new one at `next_seq`. A failure is recorded (see
    /// [`fail`](Self::fail)): the state stays consistent, and the next append heals.
    fn roll(&self, st: &mut State) -> Result<(), WalError> {
        if self.opts.fsync {
            let path = st.active_segment().path.clone();
            if let Err(e) = self.fault(Fault::Sync).and_then(|()| st.active.sync_data()) {
                return Err(self.fail(st, WalError::Io { path, source: e }));
            }
            st.syncs += 1;
        }
        st.durable_seq = st.next_seq;
        st.durable_hash = st.last_hash;
        st.durable_bytes = st.active_segment().bytes;
        self.synced.notify_all();
        let created = create_segment(
            &self.dir,
            st.next_seq,
            &st.last_hash,
            self.opts.fsync,
            &|f| self.fault(f),
        );
        let (file, path) = match created {
            Ok(c) => c,
            Err(e) => return Err(self.fail(st, e)),
        };
        st.segments.push_back(Segment {
            first_seq: st.next_seq,
            path,
            bytes: HEADER_LEN,
        });
        st.used += HEADER_LEN;
        st.active = Arc::new(file);
        st.durable_bytes = HEADER_LEN;
        Ok(())
    }

    /// The seq the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Every seq below this is synced (or, without `fsync`, written).
    pub fn durable_seq(&self) -> u64 {
        self.lock().durable_seq
    }

    /// Fsyncs of appended records since the log was opened: with the number of appends, how well group
    /// commit is batching.
    pub fn fsyncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The end of the chain: the next seq and the hash of the record before it, for checkpoints.
    pub fn chain_head(&self) -> (u64, [u8; 32]) {
        let st = self.lock();
        (st.next_seq, st.last_hash)
    }

    /// Reads the durable records from `seq` (or the oldest kept, if later) up to [`durable_seq`](Self::durable_seq)
    /// as of now, stepping over seqs that do not exist (released, or lost to damage). Appends may continue
    /// meanwhile; the records must not be released while being read.
    pub fn read_from(&self, seq: u64) -> Result<WalReader, WalError> {
        let st = self.lock();
        let oldest = st.segments.front().expect("active segment").first_seq;
        let next = seq.max(oldest);
        let idx = st
            .segments
            .iter()
            .rposition(|s| s.first_seq <= next)
            .unwrap_or(0);
        Ok(WalReader {
            segments: st
                .segments
                .iter()
                .skip(idx)
                .map(|s| (s.first_seq, s.path.clone()))
                .collect(),
            idx: 0,
            cur: None,
            next,
            end: st.durable_seq,
            done: false,
        })
    }

    /// The persisted reader position `name` (a file in `cursors/`); a new cursor starts at the oldest record.
    pub fn cursor(&self, name: &str) -> Result<Cursor, WalError> {
        let valid = !name.is_empty()
            && name.len() <= 100
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            return Err(WalError::CursorName(name.to_string()));
        }
        let dir = self.dir.join("cursors");
        let path = dir.join(name);
        let position = match fs::read(&path) {
            Ok(bytes) => {
                decode_cursor(&bytes).ok_or_else(|| corrupt(&path, 0, "not a cursor file"))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.usage().oldest_seq,
            Err(e) => return Err(WalError::Io { path, source: e }),
        };
        Ok(Cursor {
            name: name.to_string(),
            dir,
            path,
            position,
            fsync: self.opts.fsync,
        })
    }

    /// The persisted cursors (readers' positions, also of readers that are not running now, such as
    /// `serve`'s detection and sinks while an import runs), by name.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>, WalError> {
        let dir = self.dir.join("cursors");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type().map_err(io_err(&path))?.is_file() {
                continue;
            }
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let position =
                decode_cursor(&bytes).ok_or_else(|| corrupt(&path, 0, "not a cursor file"))?;
            out.push((name, position));
        }
        out.sort();
        Ok(out)
    }

    /// Deletes the segments whose records all come before `seq` (pass the lowest position of all cursors) and
    /// returns the bytes freed. When that covers the active segment, a new empty one replaces it; when that
    /// new segment cannot be created (a full disk), the older segments are still deleted, and the failure is
    /// the log's until it heals ([`healthy`](Self::healthy)).
    pub fn release_before(&self, seq: u64) -> Result<u64, WalError> {
        let mut st = self.lock();
        if seq >= st.next_seq && st.active_segment().bytes > HEADER_LEN && st.failed.is_none() {
            // A failure is recorded in the state; freeing the older segments is what a full disk needs.
            let _ = self.roll(&mut st);
        }
        let mut freed = 0;
        while st.segments.len() > 1 && st.segments[1].first_seq <= seq {
            let seg = st.segments.front().expect("two segments").clone();
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(WalError::Io {
                        path: seg.path,
                        source: e,
                    });
                }
            }
            st.segments.pop_front();
            st.used -= seg.bytes;
            freed += seg.bytes;
        }
        if freed > 0 && self.opts.fsync {
            sync_dir(&self.dir)?;
        }
        Ok(freed)
    }

    pub fn usage(&self) -> Usage {
        let st = self.lock();
        Usage {
            bytes: st.used,
            segments: st.segments.len(),
            budget_bytes: self.opts.budget_bytes,
            oldest_seq: st.segments.front().expect("active segment").first_seq,
            next_seq: st.next_seq,
        }
    }

    /// Reads every segment as it is on disk: headers, checksums, seq continuity and the hash chain across
    /// records and segments, up to the records written when it starts. The error names the first bad segment
    /// and offset; seqs lost to damage (a gap that recovery left between two segments) are an error too.
    pub fn verify(&self) -> Result<VerifyReport, WalError> {
        let (segments, end) = {
            let st = self.lock();
            (st.segments.iter().cloned().collect::<Vec<_>>(), st.next_seq)
        };
        let mut report = VerifyReport {
            segments: segments.len(),
            records: 0,
            bytes: 0,
            oldest_seq: segments[0].first_seq,
            next_seq: end,
            head_hash: [0; 32],
        };
        // Where the segment before ended: (next seq, chain hash, its path and length).
        let mut prev_end: Option<(u64, [u8; 32], &Path, u64)> = None;
        let mut body = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let (mut r, header) = SegmentReader::open(&seg.path)?;
            if header.first_seq != seg.first_seq {
                let why = format!(
                    "the header says seq {}, the file name says {}",
                    header.first_seq, seg.first_seq
                );
                return Err(corrupt(&seg.path, 8, why));
            }
            if let Some((seq, hash, prev_path, prev_len)) = prev_end {
                if header.first_seq > seq && header.start_hash == hash {
                    // Chained, with seqs left out: recovery continued past damage.
                    return Err(corrupt(
                        prev_path,
                        prev_len,
                        lost_seqs(prev_path, seq, header.first_seq, &seg.path),
                    ));
                }
                if header.first_seq != seq {
                    let why = format!(
                        "starts at seq {} but the segment before ends at seq {}",
                        header.first_seq, seq
                    );
                    return Err(corrupt(&seg.path, 8, why));
                }
                if header.start_hash != hash {
                    return Err(corrupt(
                        &seg.path,
                        16,
                        "the chain hash it starts from is not the one the segment before ends with",
                    ));
                }
            }
            let mut expect = header.first_seq;
            let mut hash = header.start_hash;
            while !(is_last && expect >= end) {
                let offset = r.offset;
                let frame = match r.next_frame()? {
                    Frame::End => break,
                    Frame::Bad(why) => return Err(corrupt(&seg.path, offset, why.to_string())),
                    Frame::Record(f) => f,
                };
                if frame.seq != expect {
                    return Err(corrupt(
                        &seg.path,
                        offset,
                        format!("record has seq {}, expected {expect}", frame.seq),
                    ));
                }
                if !r.read_body(&frame, &mut body)? {
                    return Err(corrupt(
                        &seg.path,
                        offset,
                        format!("record checksum mismatch (seq {})", frame.seq),
                    ));
                }
                let (payload, stored) = body.split_at(frame.len);
                if chain_hash(&hash, frame.seq, payload) != stored {
                    return Err(corrupt(
                        &seg.path,
                        offset,
                        format!("hash chain broken at seq {}", frame.seq),
                    ));
                }
                hash.copy_from_slice(stored);
                expect += 1;
                report.records += 1;
            }
            if is_last && expect < end {
                let why = format!(
                    "the segment ends at seq {expect}, the log has written up to seq {end}"
                );
                return Err(corrupt(&seg.path, r.offset, why));
            }
            report.bytes += r.offset;
            prev_end = Some((expect, hash, &seg.path, r.offset));
        }
        report.head_hash = prev_end.map(|(_, h, _, _)| h).unwrap_or_default();
        Ok(report)
    }
}

/// Why seqs `from..to` are missing between the segment at `damaged` and the one at `next` (which continues the
/// chain): recovery cut `damaged` at damage and continued after seqs that had been written or passed.
fn lost_seqs(damaged: &Path, from: u64, to: u64, next: &Path) -> String {
    let copy = damaged_copy(damaged, from);
    let kept = if copy.exists() {
        format!(
            "a copy of the segment as found is kept at `{}`",
            copy.display()
        )
    } else {
        "no copy of it was kept".to_string()
    };
    format!(
        "records {from} to {} were lost: the segment was found damaged when the log was opened and cut here \
         ({kept}); the log continues at seq {to} in `{}`",
        to - 1,
        next.display()
    )
}

/// The description of what recovery lost, for [`Wal::damage`]; `None` when nothing was (a torn tail only).
fn describe_damage(
    segment: &Path,
    cut_at: u64,
    torn: u64,
    quarantined: Option<&Path>,
    skipped: Option<&Range<u64>>,
    active: Option<&Path>,
    chain_ok: bool,
) -> Option<String> {
    let mut out = Vec::new();
    let continues = |s: &Range<u64>| {
        format!(
            "new records continue at seq {} in `{}`",
            s.end,
            active.unwrap_or(segment).display()
        )
    };
    match (quarantined, skipped) {
        (Some(copy), Some(s)) => out.push(format!(
            "the write-ahead log's active segment `{}` was damaged at offset {cut_at} (intact records followed \
             the damage): records {} to {} were cut (a copy of the segment as found is kept at `{}`); {}",
            segment.display(),
            s.start,
            s.end - 1,
            copy.display(),
            continues(s)
        )),
        (None, Some(s)) => out.push(format!(
            "the write-ahead log's active segment `{}` ends at seq {}{}, but readers or a signed checkpoint had \
             already passed it: records {} to {} are lost; {}",
            segment.display(),
            s.start,
            if torn > 0 {
                format!(" (cut at offset {cut_at})")
            } else {
                String::new()
            },
            s.start,
            s.end - 1,
            continues(s)
        )),
        (Some(copy), None) => out.push(format!(
            "the write-ahead log's active segment `{}` was damaged at offset {cut_at} and cut there (a copy of \
             the segment as found is kept at `{}`)",
            segment.display(),
            copy.display()
        )),
        (None, None) => {}
    }
    if !chain_ok {
        out.push(format!(
            "the hash chain of the write-ahead log's active segment `{}` (or its link to the segment before) does \
             not verify: records were altered with valid checksums; run `kubetrail verify`",
            segment.display()
        ));
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// The highest position of the cursors in `dir` (0 when none); files that are not cursors are left alone.
fn highest_cursor(dir: &Path) -> Result<u64, WalError> {
    let mut highest = 0;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || !entry.file_type().map_err(io_err(&path))?.is_file() {
            continue;
        }
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        if let Some(position) = decode_cursor(&bytes) {
            highest = highest.max(position);
        }
    }
    Ok(highest)
}

#[cfg(test)]
fn injected(at: Fault) -> io::Error {
    match at {
        Fault::Write | Fault::Create => io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device (injected)",
        ),
        Fault::Sync => io::Error::other("Input/output error (injected fsync failure)"),
    }
}

fn no_fault(_: Fault) -> io::Result<()> {
    Ok(())
}

/// A named, persisted reader position: the first seq its reader has not yet consumed.
#[derive(Debug)]
pub struct Cursor {
    name: String,
    dir: PathBuf,
    path: PathBuf,
    position: u64,
    fsync: bool,
}

impl Cursor {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Persists `seq` as the position, atomically (written aside, synced, renamed over, directory synced).
    pub fn commit(&mut self, seq: u64) -> Result<(), WalError> {
        let tmp = self.dir.join(format!(".{}.tmp", self.name));
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&CURSOR_MAGIC);
        bytes[4..12].copy_from_slice(&seq.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..12]);
        bytes[12..].copy_from_slice(&crc.to_le_bytes());
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        if self.fsync {
            f.sync_data().map_err(io_err(&tmp))?;
        }
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if self.fsync {
            sync_dir(&self.dir)?;
        }
        self.position = seq;
        Ok(())
    }
}

fn decode_cursor(bytes: &[u8]) -> Option<u64> {
    let bytes: &[u8; 16] = bytes.try_into().ok()?;
    let crc = u32::from_le_bytes(bytes[12..].try_into().ok()?);
    if bytes[..4] != CURSOR_MAGIC || crc32fast::hash(&bytes[..12]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(bytes[4..12].try_into().ok()?))
}

/// Durable records in seq order, as `(seq, payload)`. From [`Wal::read_from`].
#[derive(Debug)]
pub struct WalReader {
    segments: Vec<(u64, PathBuf)>,
    idx: usize,
    cur: Option<SegmentReader>,
    next: u64,
    end: u64,
    done: bool,
}

impl WalReader {
    fn step(&mut self) -> Result<Option<(u64, Vec<u8>)>, WalError> {
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            let Some((first_seq, path)) = self.segments.get(self.idx) else {
                let path = self
                    .segments
                    .last()
                    .map(|s| s.1.clone())
                    .unwrap_or_default();
                let why = format!("the log ends before seq {}", self.next);
                return Err(corrupt(&path, 0, why));
            };
            if self.cur.is_none() {
                let (r, header) = SegmentReader::open(path)?;
                if header.first_seq != *first_seq {
                    let why = format!(
                        "the header says seq {}, the file name says {first_seq}",
                        header.first_seq
                    );
                    return Err(corrupt(path, 8, why));
                }
                // Seqs between segments do not exist (lost to damage, see the module docs): step over them.
                self.next = self.next.max(header.first_seq);
                self.cur = Some(r);
                continue;
            }
            let r = self.cur.as_mut().expect("opened above");
            let offset = r.offset;
            let frame = match r.next_frame()? {
                Frame::End => {
                    self.cur = None;
                    self.idx += 1;
                    continue;
                }
                Frame::Bad(why) => return Err(corrupt(path, offset, why.to_string())),
                Frame::Record(f) => f,
            };
            if frame.seq < self.next {
                r.skip_body(&frame).map_err(io_err(path))?;
                continue;
            }
            if frame.seq > self.next {
                return Err(corrupt(
                    path,
                    offset,
                    format!("record has seq {}, expected {}", frame.seq, self.next),
                ));
            }
            let mut body = Vec::new();
            if !r.read_body(&frame, &mut body)? {
                return Err(corrupt(
                    path,
                    offset,
                    format!("record checksum mismatch (seq {})", frame.seq),
                ));
            }
            body.truncate(frame.len);
            self.next += 1;
            return Ok(Some((frame.seq, body)));
        }
    }
}

impl Iterator for WalReader {
    type Item = Result<(u64, Vec<u8>), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

// ---- reading segments -----------------------------------------------------------------------------------

enum Frame {
    Record(Prefix),
    /// The segment ends cleanly here.
    End,
    /// What follows is not a whole record.
    Bad(BadFrame),
}

/// Walks the records of one segment; `offset` is where the next record starts.
#[derive(Debug)]
struct SegmentReader {
    path: PathBuf,
    file: BufReader<File>,
    offset: u64,
    len: u64,
}

impl SegmentReader {
    fn open(path: &Path) -> Result<(SegmentReader, Header), WalError> {
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let mut file = BufReader::with_capacity(1 << 20, file);
        let mut h = [0u8; HEADER_LEN as usize];
        if len < HEADER_LEN {
            return Err(corrupt(
                path,
                0,
                format!("only {len} bytes, shorter than a segment header"),
            ));
        }
        file.read_exact(&mut h).map_err(io_err(path))?;
        let header = decode_header(&h).map_err(|why| corrupt(path, 0, why.as_str()))?;
        Ok((
            SegmentReader {
                path: path.to_path_buf(),
                file,
                offset: HEADER_LEN,
                len,
            },
            header,
        ))
    }

    /// Reads the next record's prefix (IO errors are `Err`; records that cannot be whole are `Bad`).
    fn next_frame(&mut self) -> Result<Frame, WalError> {
        let left = self.len - self.offset;
        if left == 0 {
            return Ok(Frame::End);
        }
        if let Err(bad) = format::check_room(left) {
            return Ok(Frame::Bad(bad));
        }
        let mut prefix = [0u8; PREFIX_LEN];
        self.read(&mut prefix)?;
        Ok(match format::decode_prefix(prefix, left) {
            Ok(p) => Frame::Record(p),
            Err(bad) => Frame::Bad(bad),
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), WalError> {
        self.file.read_exact(buf).map_err(io_err(&self.path))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads payload and hash into `body`; `Ok(false)` when the record's checksum does not match.
    fn read_body(&mut self, f: &Prefix, body: &mut Vec<u8>) -> Result<bool, WalError> {
        body.resize(f.len + HASH_LEN, 0);
        self.file.read_exact(body).map_err(io_err(&self.path))?;
        self.offset += body.len() as u64;
        Ok(f.crc_matches(body))
    }

    fn skip_body(&mut self, f: &Prefix) -> io::Result<()> {
        let n = (f.len + HASH_LEN) as i64;
        self.file.seek_relative(n)?;
        self.offset += n as u64;
        Ok(())
    }
}

struct TailScan {
    header: Header,
    next_seq: u64,
    last_hash: [u8; 32],
    /// Bytes up to the end of the last intact record.
    valid_len: u64,
    file_len: u64,
    chain_ok: bool,
}

/// Scans the active segment up to its last intact record (what follows it is a torn write).
fn scan_tail(seg: &Segment) -> Result<TailScan, WalError> {
    let (mut r, header) = SegmentReader::open(&seg.path)?;
    let mut scan = TailScan {
        header,
        next_seq: header.first_seq,
        last_hash: header.start_hash,
        valid_len: HEADER_LEN,
        file_len: r.len,
        chain_ok: true,
    };
    let mut body = Vec::new();
    while let Frame::Record(frame) = r.next_frame()? {
        // An IO error is an error; only what cannot be a whole record is a torn tail.
        if frame.seq != scan.next_seq || !r.read_body(&frame, &mut body)? {
            break;
        }
        let (payload, stored) = body.split_at(frame.len);
        // A checksummed record whose chain does not match was rewritten on purpose: keep it, but say so.
        scan.chain_ok &= chain_hash(&scan.last_hash, frame.seq, payload) == stored;
        scan.last_hash.copy_from_slice(stored);
        scan.next_seq += 1;
        scan.valid_len = r.offset;
    }
    Ok(scan)
}

/// The highest seq of the intact records after `from` (the cut point of a tail) whose seqs follow `seq` (the
/// first seq cut), if any: an intact record there means the bytes before it were damaged, not torn.
fn intact_records_after(path: &Path, from: u64, seq: u64) -> Result<Option<u64>, WalError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let Some(rest) = bytes.get(from as usize..) else {
        return Ok(None);
    };
    let Some((mut last, mut at)) = find_intact(rest, 0, seq + 1) else {
        return Ok(None);
    };
    // Follow the records after it, searching again past any further damage.
    loop {
        if let Some(end) = intact_at(rest, at, last + 1) {
            (last, at) = (last + 1, end);
        } else if let Some(found) = find_intact(rest, at, last + 1) {
            (last, at) = found;
        } else {
            return Ok(Some(last));
        }
    }
}

/// The first intact record at or after byte `from` of `bytes` with one of the 63 seqs from `seq` (records after
/// a damaged one carry seq + 1, seq + 2, ...): its seq and where it ends.
fn find_intact(bytes: &[u8], from: usize, seq: u64) -> Option<(u64, usize)> {
    for want in seq..seq + 63 {
        let needle = want.to_le_bytes();
        let mut at = from + SEQ_OFFSET;
        while let Some(pos) = bytes
            .get(at..)
            .and_then(|r| r.windows(8).position(|w| w == needle))
        {
            let start = at + pos - SEQ_OFFSET;
            at += pos + 1;
            if let Some(end) = intact_at(bytes, start, want) {
                return Some((want, end));
            }
        }
    }
    None
}

/// Where the record at byte `start` of `bytes` ends, if an intact record with seq `seq` starts there.
fn intact_at(bytes: &[u8], start: usize, seq: u64) -> Option<usize> {
    let rec = format::record_at(bytes, start).ok()?;
    (rec.prefix.seq == seq && rec.crc_matches()).then_some(rec.end)
}

/// The chain hash a (complete, synced) segment ends with.
fn tail_hash(seg: &Segment) -> Result<[u8; 32], WalError> {
    let mut f = File::open(&seg.path).map_err(io_err(&seg.path))?;
    let len = f.metadata().map_err(io_err(&seg.path))?.len();
    let mut hash = [0u8; 32];
    if len <= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN as usize];
        f.read_exact(&mut h).map_err(io_err(&seg.path))?;
        return decode_header(&h)
            .map(|h| h.start_hash)
            .map_err(|why| corrupt(&seg.path, 0, why.as_str()));
    }
    f.seek(io::SeekFrom::Start(len - HASH_LEN as u64))
        .map_err(io_err(&seg.path))?;
    f.read_exact(&mut hash).map_err(io_err(&seg.path))?;
    Ok(hash)
}

// ---- files ----------------------------------------------------------------------------------------------

/// The copy of the segment at `path` kept as evidence, `first_lost` being the first seq cut from it.
fn damaged_copy(path: &Path, first_lost: u64) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format::damaged_copy_name(&name, first_lost))
}

fn list_segments(dir: &Path) -> Result<VecDeque<Segment>, WalError> {
    let mut segments = Vec::new();
    for file in format::list_segment_files(dir).map_err(io_err(dir))? {
        let path = dir.join(&file.name);
        let Some(first_seq) = file.first_seq else {
            return Err(corrupt(
                &path,
                0,
                "a segment name must be its first seq in 20 digits",
            ));
        };
        let bytes = fs::symlink_metadata(&path).map_err(io_err(&path))?.len();
        segments.push(Segment {
            first_seq,
            path,
            bytes,
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments.into())
}

/// Writes a new segment's header aside, syncs it and renames it into place (over a segment of the same name,
/// if any), so a segment is never seen without its whole header. Returns the file open for appending. On
/// failure the `*.tmp` is removed (when the rename is done and only the directory sync failed, the segment
/// stays: the next attempt renames over it).
fn create_segment(
    dir: &Path,
    first_seq: u64,
    start_hash: &[u8; 32],
    fsync: bool,
    fault: &dyn Fn(Fault) -> io::Result<()>,
) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(format::segment_name(first_seq));
    let tmp = dir.join(format::tmp_segment_name(first_seq));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(WalError::Io {
                path: tmp,
                source: e,
            });
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let header = encode_header(first_seq, start_hash);
    let written = match fault(Fault::Create) {
        Ok(()) => file.write_all(&header),
        Err(e) => {
            let _ = file.write_all(&header[..20]);
            Err(e)
        }
    }
    .and_then(|()| match fsync {
        true => fault(Fault::Sync).and_then(|()| file.sync_data()),
        false => Ok(()),
    })
    .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(&tmp);
        return Err(WalError::Io {
            path: tmp,
            source: e,
        });
    }
    if fsync {
        sync_dir(dir)?;
    }
    Ok((file, path))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Removes files left half-written by a crash (segments and cursors are only ever renamed into place).
fn remove_tmp_files(dir: &Path, is_tmp: fn(&str) -> bool) -> Result<(), WalError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_tmp)
        {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_file_rejects_damage() {
        assert_eq!(decode_cursor(b"short"), None);
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&CURSOR_MAGIC);
        bytes[4..12].copy_from_slice(&5u64.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..12]);
        bytes[12..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_cursor(&bytes), Some(5));
        bytes[5] ^= 1;
        assert_eq!(decode_cursor(&bytes), None);
    }

    // ---- healing, through injected failures ----------------------------------------------------------------

    fn set_faults(wal: &Wal, faults: &[Fault]) {
        let bits = faults.iter().fold(0, |b, f| b | *f as u8);
        wal.faults.store(bits, std::sync::atomic::Ordering::SeqCst);
    }

    fn opts(segment_bytes: u64) -> WalOptions {
        WalOptions {
            segment_bytes,
            budget_bytes: 1 << 30,
            fsync: true,
        }
    }

    fn read_all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
        wal.read_from(0).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn seg_files(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The log's idea of its segments is what is on disk, and nothing half-written is left.
    fn assert_consistent(wal: &Wal, dir: &Path) {
        let files = seg_files(dir);
        assert!(files.iter().all(|(n, _)| n.ends_with(".seg")), "{files:?}");
        let st = wal.lock();
        let mine: Vec<(String, u64)> = st
            .segments
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_string_lossy().into_owned(),
                    s.bytes,
                )
            })
            .collect();
        assert_eq!(mine, files);
        assert_eq!(st.used, files.iter().map(|f| f.1).sum::<u64>());
    }

    /// Regression: after a failed fsync every append failed until the log was reopened.
    #[test]
    fn failed_fsync_heals_at_the_next_append_without_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
        wal.append(&[b"a", b"b"]).unwrap();
        set_faults(&wal, &[Fault::Sync]);
        let err = wal.append(&[b"never acknowledged"]).unwrap_err();
        assert!(err.to_string().contains("injected fsync failure"), "{err}");
        let why = wal.healthy().unwrap_err();
        assert!(why.contains("injected fsync failure"), "{why}");
        // Written, never synced: not shown to readers.
        assert_eq!((wal.next_seq(), wal.durable_seq()), (4, 3));
        assert_eq!(read_all(&wal).len(), 2);
        // Healing needs an fsync too: it fails while the fault lasts, and says so again.
        assert!(wal.append(&[b"also refused"]).is_err());
        assert!(wal.heal().is_err());
        assert!(wal.healthy().is_err());
        assert_consistent(&wal, dir.path());

        set_faults(&wal, &[]);
        assert_eq!(wal.append(&[b"c"]).unwrap(), 3..4);
        wal.healthy().unwrap();
        assert_eq!(
            read_all(&wal),
            vec![(1, b"a".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())]
        );
        assert_eq!(wal.verify().unwrap().records, 3);
        assert_consistent(&wal, dir.path());
        // Continued in a new segment, the old one cut back to its synced records.
        let names: Vec<String> = seg_files(dir.path()).into_iter().map(|f| f.0).collect();
        assert_eq!(names, [format::segment_name(1), format::segment_name(3)]);
        drop(wal);
        let (wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(
            (rec.torn_bytes_cut, rec.next_seq, rec.skipped),
            (0, 4, None)
        );
        assert_eq!(read_all(&wal).len(), 3);
    }

    #[test]
    fn enospc_on_write_fails_until_space_returns() {
        for fsync in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(
                dir.path(),
                WalOptions {
                    fsync,
                    ..opts(1 << 20)
                },
            )
            .unwrap();
            wal.append(&[b"kept"]).unwrap();
            // A full disk: writes fail after part of the batch reached the file, and new files get no header.
            set_faults(&wal, &[Fault::Write, Fault::Create]);
            let err = wal.append(&[b"x".repeat(500).as_slice()]).unwrap_err();
            let WalError::Io { source, .. } = &err else {
                panic!("{err}")
            };
            assert_eq!(source.kind(), io::ErrorKind::StorageFull);
            assert!(wal.healthy().is_err());
            for _ in 0..3 {
                assert!(wal.append(&[b"still full"]).is_err());
                assert!(wal.healthy().is_err());
                assert_consistent(&wal, dir.path());
            }
            assert_eq!(read_all(&wal), vec![(1, b"kept".to_vec())]);

            // Space freed: healed by `heal` (as a readiness probe would), no append needed.
            set_faults(&wal, &[]);
            wal.heal().unwrap();
            wal.healthy().unwrap();
            assert_eq!(wal.append(&[b"after"]).unwrap(), 2..3);
            assert_eq!(
                read_all(&wal),
                vec![(1, b"kept".to_vec()), (2, b"after".to_vec())]
            );
            wal.verify().unwrap();
            assert_consistent(&wal, dir.path());
            drop(wal);
            let (wal, rec) = Wal::open(dir.path(), opts(1 << 20)).unwrap();
            assert_eq!((rec.torn_bytes_cut, rec.next_seq), (0, 3), "fsync {fsync}");
            assert_eq!(read_all(&wal).len(), 2);
        }
    }

    #[test]
    fn enospc_or_failed_fsync_on_roll_leaves_the_log_consistent() {
        for faults in [
            &[Fault::Create][..],
            &[Fault::Sync],
            &[Fault::Write, Fault::Create, Fault::Sync],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(dir.path(), opts(300)).unwrap();
            let record = [7u8; 100];
            let mut acked = Vec::new();
            while wal.usage().segments < 2 {
                acked.push((wal.append(&[&record]).unwrap().start, record.to_vec()));
            }
            let before = wal.usage();
            set_faults(&wal, faults);
            // These need a new segment.
            for _ in 0..3 {
                assert!(wal.append(&[&record, &record]).is_err(), "{faults:?}");
                assert!(wal.healthy().is_err());
                assert_consistent(&wal, dir.path());
                assert_eq!(wal.usage().segments, before.segments, "{faults:?}");
            }
            assert_eq!(read_all(&wal), acked, "{faults:?}");

            set_faults(&wal, &[]);
            let seqs = wal.append(&[&record, &record]).unwrap();
            assert_eq!(seqs.start, acked.len() as u64 + 1, "{faults:?}");
            wal.healthy().unwrap();
            acked.extend(seqs.map(|s| (s, record.to_vec())));
            assert_eq!(read_all(&wal), acked, "{faults:?}");
            wal.verify().unwrap();
            assert_consistent(&wal, dir.path());
            drop(wal);
            let (wal, rec) = Wal::open(dir.path(), opts(300)).unwrap();
            assert_eq!(rec.torn_bytes_cut, 0, "{faults:?}");
            assert_eq!(read_all(&wal), acked, "{faults:?}");
            wal.verify().unwrap();
        }
    }

    #[test]
    fn release_frees_old_segments_even_when_no_new_segment_fits() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), opts(300)).unwrap();
        for _ in 0..10 {
            wal.append(&[&[1u8; 100]]).unwrap();
        }
        let before = wal.usage();
        set_faults(&wal, &[Fault::Create]);
        // Everything was read: the active segment would be replaced too, but no new segment can be created.
        let freed = wal.release_before(wal.next_seq()).unwrap();
        assert!(freed > 0);
        assert_eq!(wal.usage().segments, 1);
        assert!(wal.healthy().is_err());
        assert_consistent(&wal, dir.path());
        set_faults(&wal, &[]);
        assert_eq!(wal.append(&[b"next"]).unwrap().start, before.next_seq);
        wal.verify().unwrap();
        assert_consistent(&wal, dir.path());
    }

    /// Appenders on eight threads while fsyncs fail now and then: exactly the acknowledged records are in the
    /// log, in one run of seqs, and nothing else is ever read.
    #[test]
    fn only_acknowledged_records_survive_failures_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), opts(16 << 10)).unwrap();
        let wal = Arc::new(wal);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flapper = {
            let (wal, stop) = (Arc::clone(&wal), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let faults: &[Fault] = match i % 4 {
                        0 => &[Fault::Sync],
                        2 => &[Fault::Write, Fault::Create],
                        _ => &[],
                    };
                    set_faults(&wal, faults);
                    let pause = if faults.is_empty() { 1000 } else { 200 };
                    std::thread::sleep(std::time::Duration::from_micros(pause));
                    i += 1;
                }
                set_faults(&wal, &[]);
            })
        };
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut failed = 0;
                    let mut i = 0u64;
                    while acked.len() < 200 && i < 100_000 {
                        i += 1;
                        let batch: Vec<Vec<u8>> = (0..1 + i % 3)
                            .map(|j| format!("t{t}-i{i}-j{j}").into_bytes())
                            .collect();
                        let refs: Vec<&[u8]> = batch.iter().map(|p| p.as_slice()).collect();
                        match wal.append(&refs) {
                            Ok(seqs) => {
                                assert!(wal.durable_seq() >= seqs.end);
                                acked.extend(seqs.zip(batch));
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        let mut acked = Vec::new();
        let mut failed = 0;
        for t in threads {
            let (a, f) = t.join().unwrap();
            acked.extend(a);
            failed += f;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        flapper.join().unwrap();
        eprintln!(
            "{} records acknowledged, {failed} appends failed",
            acked.len()
        );
        assert!(failed > 0 && !acked.is_empty(), "{failed} failed");
        wal.heal().unwrap();
        acked.sort();
        assert_eq!(read_all(&wal), acked);
        let seqs: Vec<u64> = acked.iter().map(|a| a.0).collect();
        assert_eq!(seqs, (1..=acked.len() as u64).collect::<Vec<_>>());
        assert_eq!(wal.verify().unwrap().records, acked.len() as u64);
        assert_consistent(&wal, dir.path());
    }

    #[test]
    fn wal_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Wal>();
        check::<WalReader>();
    }
}
