//! Compaction: merges runs of small files of a partition, and every file of a closed day into one day file,
//! by a k-way merge that keeps the sort order; inputs are removed only after the output is durable (and, for a
//! signed store, after their removal is recorded).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::errors::ParquetError;

use super::files::{PartitionFile, ensure_dir, file_name, scan, split_all, write_file};
use super::schema::{USER_COLUMN, schema};
use super::writer::ColumnarWriter;
use super::{BATCH_ROWS, ColumnarError, CompactStats, DAY_HOUR, io_err, pq_err};

/// Rows per batch read from each input of a merge: bounds a merge's memory to inputs × this × row size.
const MERGE_BATCH_ROWS: usize = 1024;

impl ColumnarWriter {
    /// Merges runs of small files (under `compact_file_bytes`; at least `compact_min_files`, at most
    /// `compact_max_files` of them, adjacent in seq order) of each partition into one file sorted by time,
    /// removing the inputs only after the output is durable; repeats until no partition has such a run. Only
    /// files before the cursor are merged. Removes without telling anyone: a store under signed checkpoints
    /// uses [`compact_recorded`](Self::compact_recorded).
    pub fn compact(&mut self) -> Result<CompactStats, ColumnarError> {
        self.compact_recorded(&mut |_| Ok(()))
    }

    /// [`compact`](Self::compact), handing every file it is about to remove (merged inputs, and the inputs
    /// a crashed compaction left) to `record` first, all at once, after every output is durable: the caller
    /// records the deletions (in a signed checkpoint) so they are not mistaken for tampering. If `record`
    /// fails nothing is removed; the inputs stay as leftovers that queries skip, removed by a later call.
    pub fn compact_recorded(
        &mut self,
        record: &mut dyn FnMut(&[PathBuf]) -> Result<(), String>,
    ) -> Result<CompactStats, ColumnarError> {
        let mut stats = CompactStats::default();
        let position = self.cursor.position();
        let min = self.opts.compact_min_files.max(2);
        let max = self.opts.compact_max_files.max(min);
        let mut remove: Vec<(PathBuf, Vec<PartitionFile>)> = Vec::new();
        let (parts, leftovers) = split_all(scan(&self.root, None, false)?);
        for (dir, files) in leftovers {
            stats.leftovers_removed += files.len() as u64;
            remove.push((dir, files));
        }
        // Per date directory, its partitions' live files after the merges of small runs.
        let mut dates: BTreeMap<PathBuf, Vec<(PathBuf, Vec<PartitionFile>)>> = BTreeMap::new();
        for (dir, mut live) in parts {
            let mut gone = Vec::new();
            let small = self.opts.compact_file_bytes;
            while let Some(run) = find_run(&live, position, small, min, max) {
                let inputs: Vec<PartitionFile> = live.drain(run.clone()).collect();
                let Some(merged) = self.merge(&dir, &inputs, false, &mut stats)? else {
                    break;
                };
                live.insert(run.start, merged);
                // An input may be the output of an earlier merge of this pass.
                gone.extend(inputs);
            }
            if !gone.is_empty() {
                remove.push((dir.clone(), gone));
            }
            if let Some(date) = dir.parent() {
                dates
                    .entry(date.to_path_buf())
                    .or_default()
                    .push((dir, live));
            }
        }
        // Closed days: every file of the date into one day file (fewer files is what makes a year of
        // queries fast), when the day is small enough and wholly converted.
        let closed_before = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(24))
            .and_then(|t| t.checked_sub(self.opts.day_close))
            .unwrap_or(jiff::Timestamp::MIN);
        for (date, dirs) in dates {
            let inputs: Vec<PartitionFile> = dirs.into_iter().flat_map(|(_, f)| f).collect();
            let Some(first) = inputs.first() else {
                continue;
            };
            let start = first.hour;
            let total: u64 = inputs.iter().map(|f| f.bytes).sum();
            // One file is as good as a day file: nothing to gain.
            if inputs.len() < 2
                || self.opts.compact_day_bytes == 0
                || start > closed_before
                || total > self.opts.compact_day_bytes
                || inputs.iter().any(|f| f.last_seq >= position)
            {
                continue;
            }
            let rel = date.strip_prefix(&self.root).unwrap_or(&date);
            let dir = ensure_dir(&self.root, &rel.join(format!("hour={DAY_HOUR}")))?;
            let mut inputs = inputs;
            inputs.sort_by_key(|f| (f.first_seq, f.last_seq));
            if self.merge(&dir, &inputs, true, &mut stats)?.is_none() {
                continue;
            }
            stats.days += 1;
            for f in inputs {
                let parent = f.path.parent().map(Path::to_path_buf).unwrap_or_default();
                remove.push((parent, vec![f]));
            }
        }
        let paths: Vec<PathBuf> = remove
            .iter()
            .flat_map(|(_, files)| files.iter().map(|f| f.path.clone()))
            .collect();
        if paths.is_empty() {
            return Ok(stats);
        }
        record(&paths).map_err(ColumnarError::Record)?;
        for (dir, files) in &remove {
            self.remove_files(dir, files)?;
        }
        Ok(stats)
    }

    /// Merges `inputs` (adjacent files of one partition, or with `day` every file of a closed date) into one
    /// durable file in `dir`, named by the lowest and highest seq (the caller removes the inputs). `None` if an
    /// input is not in this build's schema (it is left alone).
    fn merge(
        &self,
        dir: &Path,
        inputs: &[PartitionFile],
        day: bool,
        stats: &mut CompactStats,
    ) -> Result<Option<PartitionFile>, ColumnarError> {
        let mut readers = Vec::with_capacity(inputs.len());
        let mut expected = 0u64;
        for f in inputs {
            let file = File::open(&f.path).map_err(io_err(&f.path))?;
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq_err(&f.path))?;
            if !super::schema::readable(builder.schema().fields()) {
                return Ok(None);
            }
            expected += builder.metadata().file_metadata().num_rows() as u64;
            let reader = builder
                .with_batch_size(MERGE_BATCH_ROWS)
                .build()
                .map_err(pq_err(&f.path))?;
            readers.push((f.path.clone(), reader));
        }
        let first_seq = inputs.iter().map(|f| f.first_seq).min().unwrap_or(0);
        let last_seq = inputs.iter().map(|f| f.last_seq).max().unwrap_or(0);
        let name = file_name(first_seq, last_seq);
        let out_path = dir.join(&name);
        let mut got = 0u64;
        let props = if day { &self.day_props } else { &self.props };
        let bytes = write_file(dir, &name, props, |w| {
            let mut merge = Merge::new(readers.len());
            for (i, (path, reader)) in readers.iter_mut().enumerate() {
                merge.load(i, next_batch(reader, path)?);
            }
            let mut out: Vec<(usize, usize)> = Vec::with_capacity(BATCH_ROWS);
            while let Some(Reverse((_, _, _, i))) = merge.heap.pop() {
                out.push((i, merge.pos[i]));
                merge.pos[i] += 1;
                let exhausted = merge.pos[i] == merge.batches[i].num_rows();
                if exhausted || out.len() >= BATCH_ROWS {
                    got += out.len() as u64;
                    merge.emit(&mut out, w, dir)?;
                }
                if exhausted {
                    let (path, reader) = &mut readers[i];
                    merge.load(i, next_batch(reader, path)?);
                } else {
                    merge.push(i);
                }
            }
            got += out.len() as u64;
            merge.emit(&mut out, w, dir)
        })?;
        if got != expected {
            let _ = fs::remove_file(&out_path);
            return Err(ColumnarError::RowCount {
                path: out_path,
                expected,
                got,
            });
        }
        stats.merges += 1;
        stats.files_in += inputs.len() as u64;
        stats.bytes_in += inputs.iter().map(|f| f.bytes).sum::<u64>();
        stats.bytes_out += bytes;
        stats.rows += got;
        Ok(Some(PartitionFile {
            path: out_path,
            cluster: inputs[0].cluster.clone(),
            hour: inputs
                .iter()
                .map(|f| f.hour)
                .min()
                .unwrap_or(inputs[0].hour),
            first_seq,
            last_seq,
            bytes,
            day,
        }))
    }
}

fn arrow_in(path: &Path) -> impl FnOnce(ArrowError) -> ColumnarError + '_ {
    move |e| ColumnarError::Parquet {
        path: path.to_path_buf(),
        source: ParquetError::ArrowError(e.to_string()),
    }
}

/// The first run of at least `min` (at most `max`) adjacent small files wholly before the cursor.
fn find_run(
    files: &[PartitionFile],
    position: u64,
    small: u64,
    min: usize,
    max: usize,
) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for i in 0..=files.len() {
        let ok = files
            .get(i)
            .is_some_and(|f| f.bytes < small && f.last_seq < position);
        if ok && i + 1 - start == max {
            return Some(start..i + 1);
        }
        if !ok {
            if i - start >= min {
                return Some(start..i);
            }
            start = i + 1;
        }
    }
    None
}

/// A k-way merge of sorted inputs by (`user`, `time`, `seq`), one batch of each in memory. Inputs written
/// before files were sorted by `user` come out in a valid order all the same (the merge only reorders
/// between inputs); their rows keep their own order.
struct Merge {
    batches: Vec<RecordBatch>,
    pos: Vec<usize>,
    heap: BinaryHeap<Reverse<MergeKey>>,
}

/// (`user`, `time`, `seq`, input).
type MergeKey = (Box<str>, i64, u64, usize);

/// The reader's next batch in this build's schema (a format 1 file's gets its `source` column).
fn next_batch(
    reader: &mut parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    path: &Path,
) -> Result<Option<RecordBatch>, ColumnarError> {
    match reader.next().transpose().map_err(arrow_in(path))? {
        Some(b) => Ok(Some(super::schema::upgrade(b).map_err(arrow_in(path))?)),
        None => Ok(None),
    }
}

impl Merge {
    fn new(n: usize) -> Merge {
        Merge {
            batches: vec![RecordBatch::new_empty(schema()); n],
            pos: vec![0; n],
            heap: BinaryHeap::with_capacity(n),
        }
    }

    fn load(&mut self, i: usize, batch: Option<RecordBatch>) {
        self.pos[i] = 0;
        match batch.filter(|b| b.num_rows() > 0) {
            Some(b) => {
                self.batches[i] = b;
                self.push(i);
            }
            None => self.batches[i] = RecordBatch::new_empty(schema()),
        }
    }

    fn push(&mut self, i: usize) {
        let b = &self.batches[i];
        let row = self.pos[i];
        let time = b
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .value(row);
        let seq = b.column(3).as_primitive::<UInt64Type>().value(row);
        let user: Box<str> = b.column(USER_COLUMN).as_string::<i32>().value(row).into();
        self.heap.push(Reverse((user, time, seq, i)));
    }

    fn emit(
        &self,
        out: &mut Vec<(usize, usize)>,
        w: &mut ArrowWriter<File>,
        dir: &Path,
    ) -> Result<(), ColumnarError> {
        if out.is_empty() {
            return Ok(());
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let merged = arrow::compute::interleave_record_batch(&refs, out)?;
        let batch = RecordBatch::try_new(schema(), merged.columns().to_vec())?;
        w.write(&batch).map_err(pq_err(dir))?;
        out.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_adjacent_small_files_before_the_cursor() {
        let f = |a: u64, bytes| PartitionFile {
            path: PathBuf::new(),
            cluster: String::new(),
            hour: jiff::Timestamp::UNIX_EPOCH,
            first_seq: a,
            last_seq: a,
            bytes,
            day: false,
        };
        let files: Vec<_> = [1, 1, 100, 1, 1, 1, 1, 1, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, &b)| f(i as u64, b))
            .collect();
        assert_eq!(find_run(&files, 100, 10, 5, 64), Some(3..10));
        assert_eq!(find_run(&files, 100, 10, 5, 4), Some(3..7));
        assert_eq!(
            find_run(&files, 7, 10, 5, 64),
            None,
            "seq 7 to 9 not committed"
        );
        assert_eq!(find_run(&files, 100, 10, 8, 64), None);
    }
}
