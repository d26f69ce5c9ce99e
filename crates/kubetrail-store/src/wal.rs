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
//! A segment is a header and then records, back to back:
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
//! A crash can leave a torn tail in the active segment: records that were being written and so were never
//! acknowledged. [`Wal::open`] cuts the active segment after its last intact record ([`Recovery`] reports the
//! bytes cut). A batch never spans segments, so a segment can exceed `segment_bytes` by up to one batch.
//!
//! After a failed write the partial batch is cut off again; after a failed fsync (whose dirty pages the kernel
//! may have dropped) every later append fails until the log is reopened, which rescans the active segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

/// The largest payload one record can hold.
pub const MAX_PAYLOAD_BYTES: usize = 16 << 20;

const MAGIC: [u8; 8] = *b"KTWAL\0\0\x01";
const HEADER_LEN: u64 = 8 + 8 + 32 + 4;
const PREFIX_LEN: usize = 4 + 4 + 8;
const HASH_LEN: usize = 32;
const RECORD_OVERHEAD: u64 = (PREFIX_LEN + HASH_LEN) as u64;
const SEGMENT_EXT: &str = "seg";
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
    /// Bytes cut from the end of the active segment: a torn write, never acknowledged.
    pub torn_bytes_cut: u64,
    /// When what was cut was not a torn write (intact records followed the damage: a flipped byte, an edit),
    /// a copy of the segment as it was, kept as evidence: `<segment>.seg.damaged-<seq>`.
    pub quarantined: Option<PathBuf>,
    /// Whether the records scanned (the active segment, and its link to the segment before) chain correctly.
    /// `false` means records were altered with valid checksums: run a full [`Wal::verify`].
    pub chain_ok: bool,
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
    /// Signalled when a sync completes (or fails).
    synced: Condvar,
}

#[derive(Debug)]
struct State {
    /// Oldest first; the last is the active segment. Never empty.
    segments: VecDeque<Segment>,
    active: Arc<File>,
    used: u64,
    next_seq: u64,
    last_hash: [u8; 32],
    durable_seq: u64,
    syncing: bool,
    /// Fsyncs of appended records so far.
    syncs: u64,
    /// Set by a failed fsync: nothing more is acknowledged until the log is reopened.
    failed: Option<(PathBuf, io::ErrorKind, String)>,
    buf: Vec<u8>,
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
        self.failed.as_ref().map(|(path, kind, msg)| WalError::Io {
            path: path.clone(),
            source: io::Error::new(
                *kind,
                format!("an earlier write or fsync failed ({msg}); reopen the log to recover"),
            ),
        })
    }
}

impl Wal {
    /// Opens the log in `dir` (created if missing) and recovers it: cuts a torn tail off the active segment and
    /// checks the checksums and hash chain of that segment. A full check is [`verify`](Self::verify).
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovery), WalError> {
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
        remove_tmp_files(dir, |name| name.ends_with(".seg.tmp"))?;
        remove_tmp_files(&cursors, |name| {
            name.starts_with('.') && name.ends_with(".tmp")
        })?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            let (file, path) = create_segment(dir, 1, &[0; 32], opts.fsync)?;
            drop(file);
            segments.push_back(Segment {
                first_seq: 1,
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
        let torn = scan.file_len - scan.valid_len;
        let active = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(io_err(&last.path))?;
        let mut quarantined = None;
        if torn > 0 {
            // A crash tears only the end of the last write. An intact record after the cut point means the
            // bytes before it were damaged or altered: keep a copy as evidence before cutting.
            if intact_record_after(&last.path, scan.valid_len, scan.next_seq)? {
                let copy = last
                    .path
                    .with_extension(format!("{SEGMENT_EXT}.damaged-{}", scan.next_seq));
                fs::copy(&last.path, &copy).map_err(io_err(&copy))?;
                quarantined = Some(copy);
                chain_ok = false;
            }
            active.set_len(scan.valid_len).map_err(io_err(&last.path))?;
            if opts.fsync {
                active.sync_all().map_err(io_err(&last.path))?;
            }
        }
        segments.back_mut().expect("at least one segment").bytes = scan.valid_len;

        let used = segments.iter().map(|s| s.bytes).sum();
        let oldest = segments.front().expect("at least one segment").first_seq;
        let recovery = Recovery {
            segments: segments.len(),
            records: scan.next_seq - oldest,
            next_seq: scan.next_seq,
            torn_bytes_cut: torn,
            chain_ok,
            quarantined,
        };
        let state = State {
            segments,
            active: Arc::new(active),
            used,
            next_seq: scan.next_seq,
            last_hash: scan.last_hash,
            durable_seq: scan.next_seq,
            syncing: false,
            syncs: 0,
            failed: None,
            buf: Vec::new(),
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(state),
            synced: Condvar::new(),
        };
        Ok((wal, recovery))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock short of a bug; IO failures are tracked in `failed`.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `payloads` as consecutive records and returns their seqs, once they are written and (with
    /// `fsync`) synced. Either the whole batch is appended or none of it.
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
        if let Some(e) = st.failure() {
            return Err(e);
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
        let written = (&*st.active).write_all(&buf);
        if buf.capacity() <= KEEP_BUF_BYTES {
            st.buf = buf;
        }
        let seg = st.active_segment().clone();
        if let Err(e) = written {
            // Cut whatever part of the batch reached the file, so that the next batch does not follow garbage.
            if let Err(cut) = st.active.set_len(seg.bytes) {
                st.failed = Some((seg.path.clone(), cut.kind(), cut.to_string()));
            }
            return Err(WalError::Io {
                path: seg.path,
                source: e,
            });
        }
        let end = start + payloads.len() as u64;
        st.next_seq = end;
        st.last_hash = hash;
        st.used += batch_bytes;
        st.segments.back_mut().expect("active segment").bytes += batch_bytes;
        if !self.opts.fsync {
            st.durable_seq = end;
            return Ok(start..end);
        }

        // Group commit: become the leader if no sync is running, otherwise wait for one that covers `end`.
        loop {
            if st.durable_seq >= end {
                return Ok(start..end);
            }
            if let Some(e) = st.failure() {
                return Err(e);
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            let target = st.next_seq;
            let file = Arc::clone(&st.active);
            let path = st.active_segment().path.clone();
            drop(st);
            let synced = file.sync_data();
            st = self.lock();
            st.syncing = false;
            match synced {
                Ok(()) => {
                    st.durable_seq = st.durable_seq.max(target);
                    st.syncs += 1;
                }
                Err(e) => st.failed = Some((path, e.kind(), e.to_string())),
            }
            self.synced.notify_all();
        }
    }

    /// Syncs the active segment and starts a new one at `next_seq`.
    fn roll(&self, st: &mut State) -> Result<(), WalError> {
        if self.opts.fsync
            && let Err(e) = st.active.sync_data()
        {
            let path = st.active_segment().path.clone();
            st.failed = Some((path.clone(), e.kind(), e.to_string()));
            self.synced.notify_all();
            return Err(WalError::Io { path, source: e });
        }
        st.durable_seq = st.durable_seq.max(st.next_seq);
        st.syncs += u64::from(self.opts.fsync);
        self.synced.notify_all();
        let (file, path) = create_segment(&self.dir, st.next_seq, &st.last_hash, self.opts.fsync)?;
        st.segments.push_back(Segment {
            first_seq: st.next_seq,
            path,
            bytes: HEADER_LEN,
        });
        st.used += HEADER_LEN;
        st.active = Arc::new(file);
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
    /// as of now. Appends may continue meanwhile; the records must not be released while being read.
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

    /// Deletes the segments whose records all come before `seq` (pass the lowest position of all cursors) and
    /// returns the bytes freed. When that covers the active segment, a new empty one replaces it.
    pub fn release_before(&self, seq: u64) -> Result<u64, WalError> {
        let mut st = self.lock();
        if seq >= st.next_seq && st.active_segment().bytes > HEADER_LEN && st.failed.is_none() {
            self.roll(&mut st)?;
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
    /// and offset.
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
        let mut prev_end: Option<(u64, [u8; 32])> = None;
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
            if let Some((seq, hash)) = prev_end {
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
                    Frame::Bad(why) => return Err(corrupt(&seg.path, offset, why)),
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
            prev_end = Some((expect, hash));
        }
        report.head_hash = prev_end.map(|(_, h)| h).unwrap_or_default();
        Ok(report)
    }
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
                self.cur = Some(r);
            }
            let r = self.cur.as_mut().expect("opened above");
            let offset = r.offset;
            let frame = match r.next_frame()? {
                Frame::End => {
                    self.cur = None;
                    self.idx += 1;
                    continue;
                }
                Frame::Bad(why) => return Err(corrupt(path, offset, why)),
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

// ---- encoding -------------------------------------------------------------------------------------------

fn chain_hash(prev: &[u8; 32], seq: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// Appends one record to `buf` and returns its chain hash.
fn encode_record(buf: &mut Vec<u8>, seq: u64, prev: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let start = buf.len();
    let hash = chain_hash(prev, seq, payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    buf.extend_from_slice(&hash);
    let crc = record_crc(
        &buf[start..start + 4],
        &buf[start + 8..start + PREFIX_LEN],
        &buf[start + PREFIX_LEN..],
    );
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    hash
}

fn record_crc(len: &[u8], seq: &[u8], body: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(len);
    c.update(seq);
    c.update(body);
    c.finalize()
}

fn encode_header(first_seq: u64, start_hash: &[u8; 32]) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..48].copy_from_slice(start_hash);
    let crc = crc32fast::hash(&h[..48]);
    h[48..].copy_from_slice(&crc.to_le_bytes());
    h
}

#[derive(Debug, Clone, Copy)]
struct Header {
    first_seq: u64,
    start_hash: [u8; 32],
}

fn decode_header(h: &[u8; HEADER_LEN as usize]) -> Result<Header, &'static str> {
    if h[..8] != MAGIC {
        return Err("not a kubetrail write-ahead log segment (bad magic)");
    }
    let crc = u32::from_le_bytes(h[48..].try_into().expect("4 bytes"));
    if crc32fast::hash(&h[..48]) != crc {
        return Err("segment header checksum mismatch");
    }
    Ok(Header {
        first_seq: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        start_hash: h[16..48].try_into().expect("32 bytes"),
    })
}

// ---- reading segments -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    crc: u32,
    seq: u64,
    prefix: [u8; PREFIX_LEN],
}

enum Frame {
    Record(FrameHead),
    /// The segment ends cleanly here.
    End,
    /// What follows is not a whole record.
    Bad(String),
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
        let header = decode_header(&h).map_err(|why| corrupt(path, 0, why))?;
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
        if left < RECORD_OVERHEAD {
            return Ok(Frame::Bad(format!(
                "{left} trailing bytes, too few for a record"
            )));
        }
        let mut prefix = [0u8; PREFIX_LEN];
        self.read(&mut prefix)?;
        let len = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(prefix[8..].try_into().expect("8 bytes"));
        if len > MAX_PAYLOAD_BYTES || len as u64 + RECORD_OVERHEAD > left {
            return Ok(Frame::Bad(format!(
                "record length {len} runs past the end of the segment"
            )));
        }
        Ok(Frame::Record(FrameHead {
            len,
            crc,
            seq,
            prefix,
        }))
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), WalError> {
        self.file.read_exact(buf).map_err(io_err(&self.path))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads payload and hash into `body` and checks the record's checksum.
    /// Reads payload and hash into `body`; `Ok(false)` when the record's checksum does not match.
    fn read_body(&mut self, f: &FrameHead, body: &mut Vec<u8>) -> Result<bool, WalError> {
        body.resize(f.len + HASH_LEN, 0);
        self.file.read_exact(body).map_err(io_err(&self.path))?;
        self.offset += body.len() as u64;
        Ok(record_crc(&f.prefix[..4], &f.prefix[8..], body) == f.crc)
    }

    fn skip_body(&mut self, f: &FrameHead) -> io::Result<()> {
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

/// Whether an intact record with a seq after `seq` starts anywhere after `from` (the cut point of a tail).
fn intact_record_after(path: &Path, from: u64, seq: u64) -> Result<bool, WalError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let Some(rest) = bytes.get(from as usize..) else {
        return Ok(false);
    };
    // Records after the damaged one carry seq + 1, seq + 2, ...: look for the next one's seq field.
    for next in seq + 1..seq + 64 {
        let needle = next.to_le_bytes();
        let mut at = 8;
        while let Some(pos) = rest
            .get(at..)
            .and_then(|r| r.windows(8).position(|w| w == needle))
        {
            let start = at + pos - 8;
            at += pos + 1;
            let len =
                u32::from_le_bytes(rest[start..start + 4].try_into().expect("4 bytes")) as usize;
            let end = start + PREFIX_LEN + len + HASH_LEN;
            if len > MAX_PAYLOAD_BYTES || end > rest.len() {
                continue;
            }
            let crc = u32::from_le_bytes(rest[start + 4..start + 8].try_into().expect("4 bytes"));
            let rec = &rest[start..end];
            if record_crc(&rec[..4], &rec[8..PREFIX_LEN], &rec[PREFIX_LEN..]) == crc {
                return Ok(true);
            }
        }
    }
    Ok(false)
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
            .map_err(|why| corrupt(&seg.path, 0, why));
    }
    f.seek(io::SeekFrom::Start(len - HASH_LEN as u64))
        .map_err(io_err(&seg.path))?;
    f.read_exact(&mut hash).map_err(io_err(&seg.path))?;
    Ok(hash)
}

// ---- files ----------------------------------------------------------------------------------------------

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

fn list_segments(dir: &Path) -> Result<VecDeque<Segment>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != SEGMENT_EXT) {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let first_seq = match stem.parse::<u64>() {
            Ok(n) if stem.len() == 20 && n > 0 => n,
            _ => {
                return Err(corrupt(
                    &path,
                    0,
                    "a segment name must be its first seq in 20 digits",
                ));
            }
        };
        let bytes = entry.metadata().map_err(io_err(&path))?.len();
        segments.push(Segment {
            first_seq,
            path,
            bytes,
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments.into())
}

/// Writes a new segment's header aside, syncs it and renames it into place, so a segment is never seen
/// without its whole header. Returns the file open for appending.
fn create_segment(
    dir: &Path,
    first_seq: u64,
    start_hash: &[u8; 32],
    fsync: bool,
) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(segment_name(first_seq));
    let tmp = dir.join(format!("{}.tmp", segment_name(first_seq)));
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
    file.write_all(&encode_header(first_seq, start_hash))
        .map_err(io_err(&tmp))?;
    if fsync {
        file.sync_data().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
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
    fn record_layout_is_as_documented() {
        let mut buf = Vec::new();
        let hash = encode_record(&mut buf, 7, &[0; 32], b"abc");
        assert_eq!(buf.len(), 3 + RECORD_OVERHEAD as usize);
        assert_eq!(&buf[..4], &3u32.to_le_bytes());
        assert_eq!(&buf[8..16], &7u64.to_le_bytes());
        assert_eq!(&buf[16..19], b"abc");
        assert_eq!(&buf[19..], &hash);
        let mut expect = Sha256::new();
        expect.update([0u8; 32]);
        expect.update(7u64.to_le_bytes());
        expect.update(b"abc");
        assert_eq!(hash, <[u8; 32]>::from(expect.finalize()));
        let crc = crc32fast::hash(&[&buf[..4], &buf[8..]].concat());
        assert_eq!(&buf[4..8], &crc.to_le_bytes());
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let mut h = encode_header(42, &[9; 32]);
        let back = decode_header(&h).unwrap();
        assert_eq!((back.first_seq, back.start_hash), (42, [9; 32]));
        h[20] ^= 1;
        assert!(decode_header(&h).is_err());
    }

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

    #[test]
    fn wal_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Wal>();
        check::<WalReader>();
    }
}
