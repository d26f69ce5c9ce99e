//! Follow kube-apiserver audit log files (`--audit-log-path`): JSON lines, one event per line, rotated by
//! the apiserver itself (lumberjack) or by logrotate.
//!
//! [`FileTailer::poll`] reads everything new and hands complete lines to a sink in batches of about
//! `batch_bytes`. The position (device, inode, offset, path, hash of the first 4 KiB, line number) is
//! persisted atomically (tmp + fsync + rename) only after the sink accepted a batch, so delivery is
//! at-least-once: a crash or a sink error re-delivers at most the batch in flight, which the pipeline
//! deduplicates by auditID and stage. A last line without its newline is held back until it is complete.
//!
//! Lines of any length are delivered whole up to `max_line_bytes`; a longer line is cut to its first
//! `max_line_bytes` bytes, flagged `truncated`, and reading resumes after its newline, so one huge event never
//! costs the rest of the file. Memory stays bounded by `batch_bytes + max_line_bytes` plus one read chunk.
//!
//! Rotation, and how a file is recognised across it:
//! - rename / create (lumberjack renames `audit.log` to `audit-2026-11-25T14-37-01.123.log` and creates a new
//!   `audit.log`; logrotate's default renames to `audit.log.1` or `audit.log-20261125` and creates): the old
//!   file is read to its end through the handle kept open (it is found again in the directory by device and
//!   inode to name it correctly), then the next file in rotation order, then the live file. Several rotations
//!   between two polls are followed in order. While the new live file is still empty the old file stays
//!   current, so a writer that reopens late (logrotate `create` without a reload) loses nothing.
//! - compression (`...log.gz`, lumberjack's `compress`, logrotate's `compress`): after a restart the
//!   checkpointed file is looked up by device and inode, and if it is gone, by the hash of its first 4 KiB
//!   among the rotated files, compressed or not; a `.gz` is decompressed and the checkpointed offset skipped.
//!   When both `x.log` and `x.log.gz` exist (compression in progress) the plain file is used.
//! - copytruncate (same inode, size below our offset or first 4 KiB changed): the bytes after our offset are
//!   taken from the copy (`audit.log.1`, or whichever rotated file starts with the same 4 KiB), then the live
//!   file is read again from offset 0.
//!
//! What cannot be recovered, by construction of these rotation schemes:
//! - copytruncate: lines written between logrotate's copy and its truncate are in neither file (logrotate's
//!   own documented race); without any copy, the bytes after our offset up to the truncation are lost; if the
//!   truncated file regrew with the same first 4 KiB as before (never the case for audit events, which carry
//!   unique IDs) the truncation is not seen and lines before our old offset are skipped.
//! - a file deleted (lumberjack `maxBackups`/`maxAge`, logrotate `rotate N`) before it was read to its end,
//!   while kubetrail was down or behind: its unread tail is lost. Tailing then resumes at the oldest file still
//!   present, which may re-deliver lines (deduplicated downstream) but skips none that still exist.
//! - a `.gz` whose decompressed content does not start with the checkpointed 4 KiB (rewritten, not rotated)
//!   is not resumed from; the oldest remaining file is read instead.
//!
//! Rotated files are ordered by name: lumberjack timestamps and logrotate `-dateext` suffixes ascending,
//! logrotate numbers (`.1` newest) descending, the live file last. Device and inode come from Unix metadata;
//! on other platforms only copytruncate-free, rename-free files are followed correctly.
//!
//! With no checkpoint, tailing starts at the beginning of the live file; rotated history is for
//! `kubetrail import`.

use std::cmp::Reverse;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// Default bound on one line: events over 1 MiB exist (large requestObjects), a 64 MiB line is not an event.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;
/// Default size of a batch handed to the sink, and so of the work re-delivered after a crash.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
/// The prefix whose hash identifies a file across renames, compression and copies.
const HEAD_BYTES: usize = 4096;
const READ_CHUNK: usize = 256 << 10;
const CHECKPOINT_VERSION: u32 = 1;

/// What a sink returns when it refuses a batch.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where to read and where to remember the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSourceConfig {
    /// The live file, e.g. `/var/log/kubernetes/audit/audit.log`; rotated files are its siblings.
    pub path: PathBuf,
    /// A file in kubetrail's data directory holding the position as JSON.
    pub checkpoint: PathBuf,
    /// Longer lines are cut to this many bytes and flagged [`Line::truncated`].
    pub max_line_bytes: usize,
    /// A batch is handed to the sink once it holds at least this many bytes (or at the end of new data).
    pub batch_bytes: usize,
}

impl FileSourceConfig {
    /// A config with the default line and batch bounds.
    pub fn new(path: impl Into<PathBuf>, checkpoint: impl Into<PathBuf>) -> Self {
        FileSourceConfig {
            path: path.into(),
            checkpoint: checkpoint.into(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

/// One line of an audit log file, without its newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// The file the line was read from (after a rename, its rotated name).
    pub file: &'a Path,
    /// 1-based within that file.
    pub line: u64,
    /// The line was longer than `max_line_bytes` and `bytes` holds only its beginning.
    pub truncated: bool,
    /// The line's length in the file, without its newline (more than `bytes.len()` when `truncated`).
    pub len: u64,
}

/// What one [`FileTailer::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Lines accepted by the sink.
    pub lines: u64,
    /// File bytes those lines took, newlines and cut-off bytes included.
    pub bytes: u64,
    /// Lines delivered truncated.
    pub truncated: u64,
    /// Switches to another file: rotations followed and truncations (copytruncate) detected.
    pub rotations: u64,
    /// Bytes known to be unread after the poll (current file and live file; compressed files not counted).
    pub lag_bytes: u64,
}

/// Errors of the audit log file source.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("invalid audit log file source config: {0}")]
    Config(String),
    #[error("failed to open audit log `{}`: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("failed to read audit log `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("failed to list rotated audit logs in `{}`: {source}", path.display())]
    ListDir { path: PathBuf, source: io::Error },
    #[error("failed to read checkpoint `{}`: {source}", path.display())]
    ReadCheckpoint { path: PathBuf, source: io::Error },
    #[error(
        "invalid checkpoint `{}`: {source}; move it away to start again from the beginning of the live file",
        path.display()
    )]
    InvalidCheckpoint {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "failed to write checkpoint `{}`: {source}; check that the data directory is writable and not full",
        path.display()
    )]
    WriteCheckpoint { path: PathBuf, source: io::Error },
    #[error(
        "sink refused lines {first_line}..={last_line} of `{}`: {source}; they are delivered again on the next poll",
        path.display()
    )]
    Sink {
        path: PathBuf,
        first_line: u64,
        last_line: u64,
        source: SinkError,
    },
}

/// Follows one audit log file across rotations. Sync: run it on a blocking thread.
pub struct FileTailer {
    cfg: FileSourceConfig,
    cur: Option<Current>,
    asm: Assembler,
    /// A loaded checkpoint whose file could not be looked for yet (no file in the directory).
    resume: Option<Checkpoint>,
}

impl std::fmt::Debug for FileTailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("FileTailer");
        d.field("path", &self.cfg.path);
        if let Some(cur) = &self.cur {
            d.field("file", &cur.path)
                .field("offset", &cur.delivered)
                .field("line", &cur.line);
        }
        d.field("pending_lines", &(self.asm.spans.len() - self.asm.first))
            .finish_non_exhaustive()
    }
}

impl FileTailer {
    /// Prepares to follow `cfg.path`, resuming from `cfg.checkpoint` if it exists. A missing live file is not
    /// an error: polling returns nothing until it appears.
    pub fn open(cfg: FileSourceConfig) -> Result<FileTailer, FileSourceError> {
        if cfg.max_line_bytes == 0 || cfg.batch_bytes == 0 {
            return Err(FileSourceError::Config(
                "`max_line_bytes` and `batch_bytes` must be above 0".into(),
            ));
        }
        if cfg.path.file_name().and_then(|n| n.to_str()).is_none() {
            return Err(FileSourceError::Config(format!(
                "`{}` must name a file with a UTF-8 name",
                cfg.path.display()
            )));
        }
        let resume = load_checkpoint(&cfg.checkpoint)?;
        let mut tailer = FileTailer {
            cfg,
            cur: None,
            asm: Assembler::default(),
            resume,
        };
        tailer.start()?;
        Ok(tailer)
    }

    /// Reads everything new, following rotation, handing complete lines to `sink` in batches; the
    /// checkpoint is advanced only after `sink` returns Ok for a batch. After a sink error the same batch is
    /// offered first on the next poll.
    pub fn poll(
        &mut self,
        sink: &mut dyn FnMut(&[Line<'_>]) -> Result<(), SinkError>,
    ) -> Result<PollStats, FileSourceError> {
        let mut stats = PollStats::default();
        if self.cur.is_none() {
            self.start()?;
        }
        if self.cur.is_none() {
            return Ok(stats);
        }
        // a batch the sink refused last time goes first, unchanged
        self.deliver(sink, &mut stats, true)?;
        loop {
            match self.status()? {
                Status::Live => {
                    self.read_to_eof(sink, &mut stats)?;
                    break;
                }
                Status::Truncated => {
                    stats.rotations += 1;
                    self.after_truncation(sink, &mut stats)?;
                }
                Status::Rotated => {
                    let cands = self.candidates()?;
                    let idx = self.find_current(&cands);
                    if let Some(i) = idx {
                        let cur = self.cur.as_mut().expect("current file");
                        if cands[i].id == cur.id && cands[i].path != cur.path {
                            debug!(from = %cur.path.display(), to = %cands[i].path.display(), "audit log renamed");
                            cur.path = cands[i].path.clone();
                        }
                    }
                    // rotation is seen first, then the old file is drained: nothing written before it is missed
                    self.read_to_eof(sink, &mut stats)?;
                    let next = match idx {
                        Some(i) => cands.get(i + 1),
                        None => cands.last().filter(|c| c.live),
                    };
                    let Some(next) = next else { break };
                    if next.live && next.len == 0 {
                        // the writer may not have moved on yet (logrotate `create` before a reload)
                        break;
                    }
                    // the old file is complete: an unterminated last line will never be completed
                    self.asm.finish_partial();
                    self.deliver(sink, &mut stats, true)?;
                    let Some(opened) = self.open_candidate(next)? else {
                        break;
                    };
                    info!(from = %self.cur.as_ref().expect("current file").path.display(),
                        to = %opened.path.display(), "following audit log rotation");
                    self.asm.reset();
                    self.cur = Some(opened);
                    stats.rotations += 1;
                }
            }
        }
        stats.lag_bytes = self.lag_bytes();
        Ok(stats)
    }

    /// Picks the file to read when there is none: the checkpointed one, or the live file from its start.
    fn start(&mut self) -> Result<(), FileSourceError> {
        let cands = self.candidates()?;
        if cands.is_empty() {
            return Ok(());
        }
        let Some(ck) = self.resume.take() else {
            if let Some(live) = cands.iter().find(|c| c.live) {
                self.cur = self.open_candidate(live)?;
            }
            return Ok(());
        };
        let pos = Position::from_checkpoint(&ck);
        if let Some(cur) = self.locate(&cands, &pos, None)? {
            debug!(file = %cur.path.display(), offset = cur.delivered, "resuming audit log from checkpoint");
            self.cur = Some(cur);
            return Ok(());
        }
        let oldest = &cands[0];
        warn!(checkpoint = %ck.path.display(), offset = ck.offset, resume = %oldest.path.display(),
            "checkpointed audit log file is gone (deleted by rotation?); its unread tail is lost, \
             resuming at the oldest file still present");
        self.cur = self.open_candidate(oldest)?;
        Ok(())
    }

    fn status(&self) -> Result<Status, FileSourceError> {
        let cur = self.cur.as_ref().expect("current file");
        let Reader::Plain(_) = cur.reader else {
            return Ok(Status::Rotated);
        };
        let meta = match fs::metadata(&self.cfg.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Status::Rotated),
            Err(source) => {
                return Err(FileSourceError::Open {
                    path: self.cfg.path.clone(),
                    source,
                });
            }
        };
        if file_id(&meta) != cur.id {
            return Ok(Status::Rotated);
        }
        if meta.len() < cur.read_pos {
            return Ok(Status::Truncated);
        }
        if !cur.head.is_empty() {
            // truncated and already grown past our offset again: only the content tells
            let mut head = Vec::with_capacity(cur.head.len());
            let read = File::open(&self.cfg.path)
                .and_then(|f| f.take(cur.head.len() as u64).read_to_end(&mut head));
            match read {
                Ok(_) if head != cur.head => return Ok(Status::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Status::Rotated),
                Err(source) => {
                    return Err(FileSourceError::Read {
                        path: self.cfg.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(Status::Live)
    }

    /// copytruncate: take what we have not delivered from the copy, then read the live file from 0.
    fn after_truncation(
        &mut self,
        sink: &mut dyn FnMut(&[Line<'_>]) -> Result<(), SinkError>,
        stats: &mut PollStats,
    ) -> Result<(), FileSourceError> {
        let cur = self.cur.as_ref().expect("current file");
        let pos = cur.position();
        let live_id = cur.id;
        let cands = self.candidates()?;
        if let Some(copy) = self.locate(&cands, &pos, Some(live_id))? {
            info!(file = %self.cfg.path.display(), copy = %copy.path.display(), offset = pos.offset,
                "audit log was truncated (copytruncate); reading the rest from its copy");
            // what we read past the checkpoint is in the copy too
            self.asm.reset();
            self.cur = Some(copy);
            return Ok(());
        }
        warn!(file = %self.cfg.path.display(), offset = cur.read_pos,
            "audit log was truncated and no copy starting like it was found; \
             lines written after this offset before the truncation are lost");
        self.asm.finish_partial();
        self.deliver(sink, stats, true)?;
        let cur = self.cur.as_mut().expect("current file");
        if let Reader::Plain(f) = &mut cur.reader {
            f.seek(SeekFrom::Start(0))
                .map_err(|source| FileSourceError::Read {
                    path: cur.path.clone(),
                    source,
                })?;
        }
        cur.path = self.cfg.path.clone();
        cur.delivered = 0;
        cur.read_pos = 0;
        cur.line = 0;
        cur.head.clear();
        self.asm.reset();
        Ok(())
    }

    fn read_to_eof(
        &mut self,
        sink: &mut dyn FnMut(&[Line<'_>]) -> Result<(), SinkError>,
        stats: &mut PollStats,
    ) -> Result<(), FileSourceError> {
        loop {
            self.deliver(sink, stats, false)?;
            if self.fill()? == 0 {
                return self.deliver(sink, stats, true);
            }
        }
    }

    /// Reads one chunk into the assembler; 0 at the end of the file.
    fn fill(&mut self) -> Result<usize, FileSourceError> {
        let cur = self.cur.as_mut().expect("current file");
        let asm = &mut self.asm;
        asm.compact();
        let old = asm.arena.len();
        asm.arena.resize(old + READ_CHUNK, 0);
        let n = loop {
            match cur.reader.read(&mut asm.arena[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    asm.arena.truncate(old);
                    return Err(FileSourceError::Read {
                        path: cur.path.clone(),
                        source,
                    });
                }
            }
        };
        asm.arena.truncate(old + n);
        cur.read_pos += n as u64;
        if cur.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - cur.head.len()).min(n);
            cur.head.extend_from_slice(&asm.arena[old..old + take]);
        }
        asm.scan(old, self.cfg.max_line_bytes);
        Ok(n)
    }

    /// Hands complete lines to the sink in batches of about `batch_bytes`: all of them, or (`all` false)
    /// only full batches. On Ok, advances and persists the position after each batch.
    fn deliver(
        &mut self,
        sink: &mut dyn FnMut(&[Line<'_>]) -> Result<(), SinkError>,
        stats: &mut PollStats,
        all: bool,
    ) -> Result<(), FileSourceError> {
        loop {
            let asm = &mut self.asm;
            let pending = &asm.spans[asm.first..];
            if pending.is_empty()
                || (!all && asm.partial_start - pending[0].start < self.cfg.batch_bytes)
            {
                return Ok(());
            }
            // the same spans always cut into the same batches: a retried batch is the refused one
            let mut size = 0;
            let n = pending
                .iter()
                .position(|s| {
                    size += s.file_bytes;
                    size >= self.cfg.batch_bytes as u64
                })
                .map_or(pending.len(), |i| i + 1);
            let batch = &pending[..n];
            let cur = self.cur.as_mut().expect("current file");
            let lines: Vec<Line<'_>> = batch
                .iter()
                .zip(cur.line + 1..)
                .map(|(s, line)| Line {
                    bytes: &asm.arena[s.start..s.end],
                    file: &cur.path,
                    line,
                    truncated: s.truncated,
                    len: s.len,
                })
                .collect();
            if let Err(source) = sink(&lines) {
                return Err(FileSourceError::Sink {
                    path: cur.path.clone(),
                    first_line: cur.line + 1,
                    last_line: cur.line + n as u64,
                    source,
                });
            }
            drop(lines);
            let bytes: u64 = batch.iter().map(|s| s.file_bytes).sum();
            stats.lines += n as u64;
            stats.bytes += bytes;
            stats.truncated += batch.iter().filter(|s| s.truncated).count() as u64;
            cur.delivered += bytes;
            cur.line += n as u64;
            asm.first += n;
            if asm.first == asm.spans.len() {
                asm.consume_delivered();
            }
            save_checkpoint(&self.cfg.checkpoint, cur)?;
        }
    }

    /// The live file and its rotated siblings, oldest first, the live file last.
    fn candidates(&self) -> Result<Vec<Candidate>, FileSourceError> {
        let live_name = self
            .cfg
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("checked in open");
        let dir = match self.cfg.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(FileSourceError::ListDir { path: dir, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| FileSourceError::ListDir {
                path: dir.clone(),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            names.push(name);
        }
        let mut out = Vec::new();
        for name in &names {
            let (key, gz) = if name == live_name {
                (None, false)
            } else if let Some((key, gz)) = rotated_key(name, live_name) {
                if gz
                    && names
                        .iter()
                        .any(|n| Some(n.as_str()) == name.strip_suffix(".gz"))
                {
                    // compression in progress: the plain file is complete, the .gz may not be
                    continue;
                }
                (Some(key), gz)
            } else {
                continue;
            };
            let path = dir.join(name);
            if path == self.cfg.checkpoint {
                continue;
            }
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            out.push(Candidate {
                id: file_id(&meta),
                len: meta.len(),
                live: key.is_none(),
                key,
                gz,
                path,
            });
        }
        // None (the live file) sorts first with Option's order: put it last
        out.sort_by(|a, b| (a.live, &a.key, &a.path).cmp(&(b.live, &b.key, &b.path)));
        Ok(out)
    }

    /// The index of the current file among `cands`: by device and inode, else by content (its `.gz`).
    fn find_current(&self, cands: &[Candidate]) -> Option<usize> {
        let cur = self.cur.as_ref().expect("current file");
        if let Some(i) = cands.iter().position(|c| c.id == cur.id && !c.live) {
            return Some(i);
        }
        let pos = cur.position();
        if pos.head_len == 0 {
            return None;
        }
        cands
            .iter()
            .position(|c| !c.live && matches!(head_matches(c, &pos), Ok(Some(_))))
    }

    /// Finds the file `pos` points into, opened at `pos.offset`.
    fn locate(
        &self,
        cands: &[Candidate],
        pos: &Position,
        exclude: Option<FileId>,
    ) -> Result<Option<Current>, FileSourceError> {
        let allowed = |c: &&Candidate| Some(c.id) != exclude;
        for c in cands.iter().filter(allowed).filter(|c| c.id == pos.id) {
            if let Some(cur) = open_at(c, pos)? {
                return Ok(Some(cur));
            }
        }
        if pos.head_len == 0 {
            return Ok(None);
        }
        for c in cands.iter().filter(allowed).filter(|c| c.id != pos.id) {
            if let Some(cur) = open_at(c, pos)? {
                return Ok(Some(cur));
            }
        }
        Ok(None)
    }

    fn open_candidate(&self, c: &Candidate) -> Result<Option<Current>, FileSourceError> {
        open_at(
            c,
            &Position {
                id: c.id,
                offset: 0,
                line: 0,
                head_len: 0,
                head_hash: String::new(),
            },
        )
    }

    fn lag_bytes(&self) -> u64 {
        let Some(cur) = &self.cur else { return 0 };
        let mut lag = match &cur.reader {
            Reader::Plain(f) => f
                .metadata()
                .map(|m| m.len())
                .unwrap_or(0)
                .saturating_sub(cur.delivered),
            Reader::Gzip(_) => 0,
        };
        if let Ok(live) = fs::metadata(&self.cfg.path)
            && file_id(&live) != cur.id
        {
            lag += live.len();
        }
        lag
    }
}

enum Status {
    /// The current file is the live file.
    Live,
    /// The current file is the live file, truncated in place.
    Truncated,
    /// The current file is no longer the live file (or is compressed, hence complete).
    Rotated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

#[cfg(unix)]
fn file_id(meta: &Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

#[cfg(not(unix))]
fn file_id(_meta: &Metadata) -> FileId {
    FileId { dev: 0, ino: 0 }
}

/// Orders rotated files oldest first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// lumberjack `audit-<time>.log`, logrotate `audit.log-<date>`: ascending
    Named(String),
    /// logrotate `audit.log.<n>`: `.1` is the newest
    Numbered(Reverse<u64>),
}

/// Recognises a rotated sibling of the live file `live` and whether it is gzipped.
fn rotated_key(name: &str, live: &str) -> Option<(Key, bool)> {
    let (base, gz) = match name.strip_suffix(".gz") {
        Some(b) => (b, true),
        None => (name, false),
    };
    if let Some(rest) = base.strip_prefix(live) {
        if let Some(n) = rest.strip_prefix('.')
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
        {
            return n.parse().ok().map(|n| (Key::Numbered(Reverse(n)), gz));
        }
        if let Some(suffix) = rest.strip_prefix('-')
            && !suffix.is_empty()
        {
            return Some((Key::Named(suffix.to_owned()), gz));
        }
    }
    let (stem, ext) = match live.rfind('.') {
        Some(i) if i > 0 => live.split_at(i),
        _ => (live, ""),
    };
    let middle = base
        .strip_prefix(stem)?
        .strip_prefix('-')?
        .strip_suffix(ext)?;
    (!middle.is_empty()).then(|| (Key::Named(middle.to_owned()), gz))
}

struct Candidate {
    path: PathBuf,
    id: FileId,
    len: u64,
    gz: bool,
    live: bool,
    key: Option<Key>,
}

enum Reader {
    Plain(File),
    Gzip(Box<MultiGzDecoder<File>>),
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Plain(f) => f.read(buf),
            Reader::Gzip(g) => g.read(buf),
        }
    }
}

/// The file being read.
struct Current {
    reader: Reader,
    path: PathBuf,
    id: FileId,
    /// Bytes (of the decompressed stream for a `.gz`) delivered and checkpointed.
    delivered: u64,
    /// Bytes read from `reader`: `delivered` plus what the assembler holds.
    read_pos: u64,
    /// Lines delivered.
    line: u64,
    /// The file's first bytes, up to [`HEAD_BYTES`].
    head: Vec<u8>,
}

impl Current {
    fn position(&self) -> Position {
        // only delivered bytes: a copy (copytruncate) may not hold what was read after it was made
        let head_len = self
            .head
            .len()
            .min(usize::try_from(self.delivered).unwrap_or(usize::MAX));
        Position {
            id: self.id,
            offset: self.delivered,
            line: self.line,
            head_len,
            head_hash: head_hash(&self.head[..head_len]),
        }
    }
}

/// A position in some file, identified by inode and by the hash of its first bytes.
struct Position {
    id: FileId,
    offset: u64,
    line: u64,
    head_len: usize,
    head_hash: String,
}

impl Position {
    fn from_checkpoint(ck: &Checkpoint) -> Position {
        Position {
            id: FileId {
                dev: ck.dev,
                ino: ck.inode,
            },
            offset: ck.offset,
            line: ck.line,
            head_len: ck
                .head_len
                .min(HEAD_BYTES)
                .min(usize::try_from(ck.offset).unwrap_or(usize::MAX)),
            head_hash: ck.head_hash.clone(),
        }
    }
}

/// Opens `c` if its first bytes hash as `pos` says; returns the reader and those bytes.
fn head_matches(c: &Candidate, pos: &Position) -> io::Result<Option<(Reader, FileId, Vec<u8>)>> {
    let file = File::open(&c.path)?;
    let id = file_id(&file.metadata()?);
    let mut reader = if c.gz {
        Reader::Gzip(Box::new(MultiGzDecoder::new(file)))
    } else {
        Reader::Plain(file)
    };
    let mut head = Vec::with_capacity(pos.head_len);
    (&mut reader)
        .take(pos.head_len as u64)
        .read_to_end(&mut head)?;
    if head.len() < pos.head_len || (pos.head_len > 0 && head_hash(&head) != pos.head_hash) {
        return Ok(None);
    }
    Ok(Some((reader, id, head)))
}

/// Opens `c` at `pos.offset` if it is the file `pos` points into; `None` if it is not (or vanished).
fn open_at(c: &Candidate, pos: &Position) -> Result<Option<Current>, FileSourceError> {
    let (mut reader, id, head) = match head_matches(c, pos) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if c.gz => {
            warn!(file = %c.path.display(), error = %e, "skipping unreadable compressed audit log");
            return Ok(None);
        }
        Err(source) => {
            return Err(FileSourceError::Read {
                path: c.path.clone(),
                source,
            });
        }
    };
    let reached = match &mut reader {
        Reader::Plain(f) => {
            if c.len < pos.offset {
                return Ok(None);
            }
            f.seek(SeekFrom::Start(pos.offset)).map(|_| pos.offset)
        }
        Reader::Gzip(g) => io::copy(&mut g.take(pos.offset - head.len() as u64), &mut io::sink())
            .map(|skipped| head.len() as u64 + skipped),
    };
    match reached {
        Ok(r) if r == pos.offset => {}
        Ok(_) => return Ok(None),
        Err(e) if c.gz => {
            warn!(file = %c.path.display(), error = %e, "skipping unreadable compressed audit log");
            return Ok(None);
        }
        Err(source) => {
            return Err(FileSourceError::Read {
                path: c.path.clone(),
                source,
            });
        }
    }
    Ok(Some(Current {
        reader,
        path: c.path.clone(),
        id,
        delivered: pos.offset,
        read_pos: pos.offset,
        line: pos.line,
        head,
    }))
}

/// A complete line in the arena.
struct Span {
    start: usize,
    end: usize,
    truncated: bool,
    /// Its length in the file: its bytes and the bytes cut off.
    len: u64,
    /// Bytes of the file it took: its bytes, the bytes cut off, its newline.
    file_bytes: u64,
}

/// Splits read bytes into lines: complete lines (`spans`) then one partial line from `partial_start`.
#[derive(Default)]
struct Assembler {
    arena: Vec<u8>,
    spans: Vec<Span>,
    /// `spans[..first]` are delivered; the arena is compacted once all are.
    first: usize,
    partial_start: usize,
    /// Bytes of the partial line dropped past `max_line_bytes`.
    partial_skipped: u64,
    partial_truncated: bool,
}

impl Assembler {
    /// Finds the lines ending in `arena[from..]`, cutting any line to `max` bytes.
    fn scan(&mut self, from: usize, max: usize) {
        let mut pos = from;
        while let Some(i) = self.arena[pos..].iter().position(|&b| b == b'\n') {
            let mut nl = pos + i;
            let keep_end = self.partial_start + max;
            if nl > keep_end {
                let cut = nl - keep_end;
                self.arena.copy_within(nl.., keep_end);
                self.arena.truncate(self.arena.len() - cut);
                self.partial_skipped += cut as u64;
                self.partial_truncated = true;
                nl = keep_end;
            }
            self.push_partial(nl, 1);
            pos = nl + 1;
        }
        let keep_end = self.partial_start + max;
        if self.arena.len() > keep_end {
            self.partial_skipped += (self.arena.len() - keep_end) as u64;
            self.partial_truncated = true;
            self.arena.truncate(keep_end);
        }
    }

    /// Turns the partial line, ending at `end`, into a complete one.
    fn push_partial(&mut self, end: usize, newline: u64) {
        self.spans.push(Span {
            start: self.partial_start,
            end,
            truncated: self.partial_truncated,
            len: (end - self.partial_start) as u64 + self.partial_skipped,
            file_bytes: (end - self.partial_start) as u64 + self.partial_skipped + newline,
        });
        self.partial_start = end + newline as usize;
        self.partial_skipped = 0;
        self.partial_truncated = false;
    }

    /// At the end of a file that will not grow: its last line has no newline but is complete.
    fn finish_partial(&mut self) {
        if self.arena.len() > self.partial_start || self.partial_skipped > 0 {
            self.push_partial(self.arena.len(), 0);
        }
    }

    /// Drops delivered lines from the arena, so it holds at most a batch, a line and a read chunk.
    fn compact(&mut self) {
        if self.first == 0 {
            return;
        }
        let cut = self
            .spans
            .get(self.first)
            .map_or(self.partial_start, |s| s.start);
        self.arena.drain(..cut);
        self.spans.drain(..self.first);
        for s in &mut self.spans {
            s.start -= cut;
            s.end -= cut;
        }
        self.partial_start -= cut;
        self.first = 0;
    }

    fn consume_delivered(&mut self) {
        self.arena.drain(..self.partial_start);
        self.partial_start = 0;
        self.spans.clear();
        self.first = 0;
    }

    fn reset(&mut self) {
        self.arena.clear();
        self.spans.clear();
        self.first = 0;
        self.partial_start = 0;
        self.partial_skipped = 0;
        self.partial_truncated = false;
    }
}

/// The persisted position.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u32,
    /// Informational: the file may have been renamed or compressed since.
    path: PathBuf,
    dev: u64,
    inode: u64,
    /// Bytes delivered (of the decompressed stream for a `.gz`).
    offset: u64,
    /// Lines delivered.
    line: u64,
    /// `min(4096, offset)`: how many first bytes `head_hash` covers.
    head_len: usize,
    head_hash: String,
}

fn load_checkpoint(path: &Path) -> Result<Option<Checkpoint>, FileSourceError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FileSourceError::ReadCheckpoint {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let invalid = |source| FileSourceError::InvalidCheckpoint {
        path: path.to_path_buf(),
        source,
    };
    let ck: Checkpoint = serde_json::from_slice(&bytes).map_err(invalid)?;
    if ck.version != CHECKPOINT_VERSION {
        return Err(invalid(serde::de::Error::custom(format!(
            "version {} is not supported (expected {CHECKPOINT_VERSION})",
            ck.version
        ))));
    }
    Ok(Some(ck))
}

/// Writes the position of `cur`: tmp file, fsync, rename over the old one, fsync the directory.
fn save_checkpoint(path: &Path, cur: &Current) -> Result<(), FileSourceError> {
    let pos = cur.position();
    let ck = Checkpoint {
        version: CHECKPOINT_VERSION,
        path: cur.path.clone(),
        dev: pos.id.dev,
        inode: pos.id.ino,
        offset: pos.offset,
        line: pos.line,
        head_len: pos.head_len,
        head_hash: pos.head_hash,
    };
    let err = |source| FileSourceError::WriteCheckpoint {
        path: path.to_path_buf(),
        source,
    };
    let mut json = serde_json::to_vec(&ck).map_err(|e| err(io::Error::other(e)))?;
    json.push(b'\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    // the rename is durable only once the directory is; some filesystems refuse to fsync one
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        debug!(dir = %dir.display(), error = %e, "fsync of the checkpoint directory failed");
    }
    Ok(())
}

/// FNV-1a, 128 bits, hex: tells files apart by their first 4 KiB (audit events carry unique IDs and times).
fn head_hash(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let h = bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    format!("{h:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        let check = |name: &str, expect: Option<(Key, bool)>| {
            assert_eq!(rotated_key(name, "audit.log"), expect, "{name}");
        };
        let named = |s: &str| Key::Named(s.to_owned());
        check(
            "audit-2026-11-25T14-37-01.123.log",
            Some((named("2026-11-25T14-37-01.123"), false)),
        );
        check(
            "audit-2026-11-25T14-37-01.123.log.gz",
            Some((named("2026-11-25T14-37-01.123"), true)),
        );
        check("audit.log.1", Some((Key::Numbered(Reverse(1)), false)));
        check("audit.log.12.gz", Some((Key::Numbered(Reverse(12)), true)));
        check("audit.log-20261125", Some((named("20261125"), false)));
        check("audit.log", None);
        check("audit.log.tmp", None);
        check("audit-policy.yaml", None);
        check("other.log", None);
        assert!(Key::Numbered(Reverse(2)) < Key::Numbered(Reverse(1)));
        assert_eq!(
            rotated_key("audit-2026", "audit"),
            Some((named("2026"), false))
        );
    }

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool, u64)> {
        let mut asm = Assembler::default();
        for chunk in chunks {
            let old = asm.arena.len();
            asm.arena.extend_from_slice(chunk);
            asm.scan(old, max);
        }
        asm.finish_partial();
        asm.spans
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(&asm.arena[s.start..s.end]).into_owned(),
                    s.truncated,
                    s.file_bytes,
                )
            })
            .collect()
    }

    #[test]
    fn assembler_cuts_long_lines_across_chunks() {
        let t = |s: &str, tr: bool, n: u64| (s.to_owned(), tr, n);
        assert_eq!(
            lines(4, &[b"ab\ncd", b"ef\n"]),
            [t("ab", false, 3), t("cdef", false, 5)]
        );
        assert_eq!(
            lines(4, &[b"abcdefg\nxy\n"]),
            [t("abcd", true, 8), t("xy", false, 3)]
        );
        assert_eq!(
            lines(4, &[b"abc", b"defg", b"hij", b"\nz"]),
            [t("abcd", true, 11), t("z", false, 1)]
        );
        assert_eq!(lines(4, &[b"abcd", b"\n"]), [t("abcd", false, 5)]);
        assert_eq!(lines(4, &[b"\n\n"]), [t("", false, 1), t("", false, 1)]);
    }

    #[test]
    fn head_hash_is_stable() {
        assert_eq!(head_hash(b""), "6c62272e07bb014262b821756295c58d");
        assert_ne!(head_hash(b"a"), head_hash(b"b"));
    }
}
