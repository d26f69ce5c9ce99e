//! [`ColumnarWriter`]: converts the write-ahead log into Parquet partitions through its own log cursor, in
//! bounded chunks whose files are durable before the cursor moves past them.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::file::properties::WriterProperties;

use super::files::{
    PartitionFile, ensure_dir, file_name, partition_dir, scan, split_all, sync_dir, write_file,
};
use super::rows::{Columns, Row};
use super::schema::{DAY_EVENT_LEVEL, HOUR_EVENT_LEVEL, writer_props};
use super::{BATCH_ROWS, CURSOR_NAME, ColumnarError, ColumnarOptions, FlushStats, io_err, pq_err};
use crate::record::EventRecord;
use crate::wal::{Cursor, Wal};

/// Converts the write-ahead log into Parquet partitions; owns the log cursor [`CURSOR_NAME`].
#[derive(Debug)]
pub struct ColumnarWriter {
    pub(super) root: PathBuf,
    pub(super) wal: Arc<Wal>,
    pub(super) cursor: Cursor,
    pub(super) opts: ColumnarOptions,
    /// How hour files are written (fast: they are merged into a day file later).
    pub(super) props: WriterProperties,
    /// How day files are written (small: they are kept).
    pub(super) day_props: WriterProperties,
    /// Seq ranges of the files at or past the cursor, per partition directory (relative to the root): rows
    /// already stored by a flush whose cursor commit a crash prevented. Almost always empty.
    pub(super) stored: HashMap<PathBuf, Vec<(u64, u64)>>,
}

impl ColumnarWriter {
    /// Opens (creating) the store at `root`, removing the `.tmp` files a crash left (the inputs of a
    /// compaction whose output is durable stay until the next compaction, skipped by queries); and indexes files written past the cursor so they are not written
    /// twice.
    pub fn open(
        root: &Path,
        wal: Arc<Wal>,
        opts: ColumnarOptions,
    ) -> Result<ColumnarWriter, ColumnarError> {
        if !root.is_dir() {
            fs::create_dir_all(root).map_err(io_err(root))?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let cursor = wal.cursor(CURSOR_NAME)?;
        let mut w = ColumnarWriter {
            root: root.to_path_buf(),
            props: writer_props(opts.row_group_rows, HOUR_EVENT_LEVEL),
            day_props: writer_props(opts.row_group_rows, DAY_EVENT_LEVEL),
            wal,
            cursor,
            opts,
            stored: HashMap::new(),
        };
        let position = w.cursor.position();
        // Leftovers of a crashed compaction stay until the next compaction, which records their removal.
        for (dir, live) in split_all(scan(root, None, true)?).0 {
            let ranges: Vec<(u64, u64)> = live
                .iter()
                .filter(|f| f.last_seq >= position)
                .map(|f| (f.first_seq, f.last_seq))
                .collect();
            if !ranges.is_empty() {
                let rel = dir.strip_prefix(root).unwrap_or(&dir).to_path_buf();
                w.stored.insert(rel, ranges);
            }
        }
        Ok(w)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn options(&self) -> &ColumnarOptions {
        &self.opts
    }

    /// The first log seq not yet in a file.
    pub fn position(&self) -> u64 {
        self.cursor.position()
    }

    /// Converts every record the cursor has not yet converted, up to the log's `durable_seq` as of the call,
    /// in chunks of at most `flush_rows` records and `flush_bytes` bytes, each chunk's files made durable and
    /// then the cursor committed past it. Call it at shutdown and at the end of an import; for the periodic
    /// call use [`flush_if_due`](Self::flush_if_due), which writes fewer, larger files.
    pub fn flush(&mut self) -> Result<FlushStats, ColumnarError> {
        let end = self.wal.durable_seq();
        let mut stats = FlushStats::default();
        while self.cursor.position() < end {
            self.flush_chunk(end, &mut stats)?;
        }
        stats.position = self.cursor.position();
        Ok(stats)
    }

    /// Converts whole chunks only (`flush_rows` records, or `flush_bytes` of them), as long as one is durable
    /// and waiting: for a bulk writer converting beside its writing, whose files stay as large as a chunk.
    pub fn flush_chunks(&mut self) -> Result<FlushStats, ColumnarError> {
        let mut stats = FlushStats::default();
        loop {
            let end = self.wal.durable_seq();
            if end.saturating_sub(self.cursor.position()) < self.opts.flush_rows as u64 {
                break;
            }
            self.flush_chunk(end, &mut stats)?;
        }
        stats.position = self.cursor.position();
        Ok(stats)
    }

    /// [`flush`](Self::flush), when it is due: `flush_rows` records are waiting, or the oldest waiting one was
    /// received `flush_interval` ago or more. Otherwise does nothing. Call it every second or so.
    pub fn flush_if_due(&mut self) -> Result<FlushStats, ColumnarError> {
        let position = self.cursor.position();
        let waiting = self.wal.durable_seq().saturating_sub(position);
        let idle = FlushStats {
            position,
            ..FlushStats::default()
        };
        if waiting == 0 {
            return Ok(idle);
        }
        if waiting < self.opts.flush_rows as u64 {
            let oldest = match self.wal.read_from(position)?.next() {
                Some(item) => item?.1,
                None => return Ok(idle),
            };
            if let Ok(rec) = EventRecord::decode(&oldest) {
                let age_us = jiff::Timestamp::now()
                    .as_microsecond()
                    .saturating_sub(rec.received_us);
                if age_us < self.opts.flush_interval.as_micros() as i64 {
                    return Ok(idle);
                }
            }
        }
        self.flush()
    }

    fn flush_chunk(&mut self, end: u64, stats: &mut FlushStats) -> Result<(), ColumnarError> {
        let start = self.cursor.position();
        let mut payloads: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        for item in self.wal.read_from(start)? {
            let (seq, payload) = item?;
            if seq >= end {
                break;
            }
            bytes += payload.len();
            payloads.push((seq, payload));
            if payloads.len() >= self.opts.flush_rows.max(1) || bytes >= self.opts.flush_bytes {
                break;
            }
        }
        let next = payloads.last().map_or(end, |(seq, _)| seq + 1);
        let first = payloads.first().map_or(end, |(seq, _)| *seq);
        stats.lost += first.saturating_sub(start);
        stats.records += payloads.len() as u64;

        let mut rows = Vec::with_capacity(payloads.len());
        for (seq, payload) in &payloads {
            match EventRecord::decode(payload) {
                Ok(rec) => {
                    let (row, parsed) = Row::new(*seq, &rec);
                    stats.unparsed += u64::from(!parsed);
                    rows.push(row);
                }
                Err(_) => stats.undecodable += 1,
            }
        }
        let mut parts: HashMap<(&str, i64), Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            parts.entry((r.cluster, r.hour())).or_default().push(i);
        }
        let mut parts: Vec<_> = parts.into_iter().collect();
        parts.sort_unstable_by_key(|(k, _)| *k);
        for ((cluster, hour), idx) in parts {
            let rel = partition_dir(cluster, hour);
            // `idx` is in seq order here. Rows already in a file are skipped, and the rest is cut where a
            // stored range lies between two rows, so that no new file's range holds a file it does not
            // replace (which would make that file look like a compaction's leftover).
            let mut groups = vec![Vec::new()];
            let ranges = self.stored.get(&rel).map(Vec::as_slice).unwrap_or_default();
            let mut prev: Option<u64> = None;
            for i in idx {
                let s = rows[i].seq;
                if ranges.iter().any(|&(a, b)| a <= s && s <= b) {
                    stats.already_stored += 1;
                    continue;
                }
                if prev.is_some_and(|p| ranges.iter().any(|&(a, _)| p < a && a < s)) {
                    groups.push(Vec::new());
                }
                prev = Some(s);
                groups.last_mut().expect("one group at least").push(i);
            }
            for mut idx in groups.into_iter().filter(|g| !g.is_empty()) {
                let first_seq = rows[idx[0]].seq;
                let last_seq = rows[idx[idx.len() - 1]].seq;
                idx.sort_by(|&a, &b| {
                    let (x, y) = (&rows[a], &rows[b]);
                    (x.user(), x.time, x.seq).cmp(&(y.user(), y.time, y.seq))
                });
                let dir = ensure_dir(&self.root, &rel)?;
                let name = file_name(first_seq, last_seq);
                let written = write_file(&dir, &name, &self.props, |w| {
                    for chunk in idx.chunks(BATCH_ROWS) {
                        let event_bytes = chunk.iter().map(|&i| rows[i].event.len()).sum();
                        let mut cols = Columns::new(chunk.len(), event_bytes);
                        for &i in chunk {
                            cols.push(&rows[i]);
                        }
                        let batch = cols.finish()?;
                        w.write(&batch).map_err(pq_err(&dir))?;
                    }
                    Ok(())
                })?;
                stats.files += 1;
                stats.bytes += written;
                stats.rows += idx.len() as u64;
            }
        }
        self.cursor.commit(next)?;
        self.stored.retain(|_, ranges| {
            ranges.retain(|&(_, b)| b >= next);
            !ranges.is_empty()
        });
        Ok(())
    }

    pub(super) fn remove_files(
        &self,
        dir: &Path,
        files: &[PartitionFile],
    ) -> Result<(), ColumnarError> {
        for f in files {
            match fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&f.path)(e)),
            }
        }
        if !files.is_empty() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}
