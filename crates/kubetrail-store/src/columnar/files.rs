//! The store on disk: partition directories and file names (see the module docs of `columnar`), listing the
//! files of a store and telling live files from a crashed compaction's leftovers, their footer statistics, and
//! writing one file durably.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::schema::schema;
use super::{ColumnarError, DAY_HOUR, DEFAULT_PARTITION, io_err, pq_err};

/// One Parquet file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFile {
    pub path: PathBuf,
    /// The raw cluster name (decoded from the directory name).
    pub cluster: String,
    /// The start of the partition's hour (UTC); its rows have `time` in [hour, hour + 1h). For a day file,
    /// the start of its date; its rows have `time` in that date.
    pub hour: jiff::Timestamp,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    /// A day file (`hour=all`): every hour of its date merged once the day was closed.
    pub day: bool,
}

impl PartitionFile {
    /// The end of the time its rows may have (exclusive): an hour, or a day for a day file, after `hour`.
    pub fn end(&self) -> jiff::Timestamp {
        let span = if self.day { 24 } else { 1 };
        self.hour
            .checked_add(jiff::SignedDuration::from_hours(span))
            .unwrap_or(jiff::Timestamp::MAX)
    }
}

/// The directory name of a cluster (see the module docs: one to one, and safe as a path component).
pub fn cluster_dir_name(cluster: &str) -> String {
    if cluster.is_empty() {
        return DEFAULT_PARTITION.to_string();
    }
    let mut out = String::with_capacity(cluster.len());
    for (i, b) in cluster.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || b == b'-'
            || (b == b'_' && !(i == 0 && cluster == DEFAULT_PARTITION))
            || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The cluster name a directory name stands for, if it is one [`cluster_dir_name`] makes.
fn cluster_from_dir_name(dir: &str) -> Option<String> {
    if dir == DEFAULT_PARTITION {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(dir.len());
    let mut it = dir.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let name = String::from_utf8(bytes).ok()?;
    (cluster_dir_name(&name) == dir).then_some(name)
}

/// `cluster=<c>/date=YYYY-MM-DD/hour=HH`, relative to the root.
pub(super) fn partition_dir(cluster: &str, hour: i64) -> PathBuf {
    let t = jiff::Timestamp::from_second(hour * 3600).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let t = jiff::tz::Offset::UTC.to_datetime(t);
    PathBuf::from(format!("cluster={}", cluster_dir_name(cluster)))
        .join(format!("date={}", t.date()))
        .join(format!("hour={:02}", t.hour()))
}

pub(super) fn file_name(first_seq: u64, last_seq: u64) -> String {
    format!("{first_seq:020}-{last_seq:020}.parquet")
}

fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_hour(date: &str, hour: &str) -> Option<jiff::Timestamp> {
    if hour.len() != 2 {
        return None;
    }
    let date: jiff::civil::Date = date.parse().ok()?;
    let hour: i8 = hour.parse().ok().filter(|h| (0..24).contains(h))?;
    jiff::tz::Offset::UTC
        .to_timestamp(date.at(hour, 0, 0, 0))
        .ok()
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), ColumnarError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Creates `root/rel` and every missing directory on the way, each made durable in its parent.
pub(super) fn ensure_dir(root: &Path, rel: &Path) -> Result<PathBuf, ColumnarError> {
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        let parent = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
    }
    Ok(dir)
}

fn read_dir_names(dir: &Path) -> Result<Vec<(String, PathBuf)>, ColumnarError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every file of the store (leftovers included), grouped by partition directory, each group sorted by seq.
/// With `clean`, removes the `.tmp` files a crash left behind.
pub(super) fn scan(
    root: &Path,
    cluster: Option<&str>,
    clean: bool,
) -> Result<BTreeMap<PathBuf, Vec<PartitionFile>>, ColumnarError> {
    let mut parts = BTreeMap::new();
    let want = cluster.map(cluster_dir_name);
    for (cname, cpath) in read_dir_names(root)? {
        let Some(cdir) = cname.strip_prefix("cluster=") else {
            continue;
        };
        if want.as_deref().is_some_and(|w| w != cdir) {
            continue;
        }
        let Some(cluster) = cluster_from_dir_name(cdir) else {
            continue;
        };
        for (dname, dpath) in read_dir_names(&cpath)? {
            let Some(date) = dname.strip_prefix("date=") else {
                continue;
            };
            for (hname, hpath) in read_dir_names(&dpath)? {
                let Some(hour) = hname.strip_prefix("hour=") else {
                    continue;
                };
                let day = hour == DAY_HOUR;
                let Some(hour) = parse_hour(date, if day { "00" } else { hour }) else {
                    continue;
                };
                let mut files = Vec::new();
                for (fname, fpath) in read_dir_names(&hpath)? {
                    if fname.starts_with('.') {
                        if clean && fname.ends_with(".tmp") {
                            fs::remove_file(&fpath).map_err(io_err(&fpath))?;
                        }
                        continue;
                    }
                    let Some((first_seq, last_seq)) = parse_file_name(&fname) else {
                        continue;
                    };
                    let bytes = match fs::metadata(&fpath) {
                        Ok(m) => m.len(),
                        // Removed by a compaction since the listing.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err(&fpath)(e)),
                    };
                    files.push(PartitionFile {
                        path: fpath,
                        cluster: cluster.clone(),
                        hour,
                        first_seq,
                        last_seq,
                        bytes,
                        day,
                    });
                }
                if !files.is_empty() {
                    files.sort_by_key(|f| (f.first_seq, Reverse(f.last_seq)));
                    parts.insert(hpath, files);
                }
            }
        }
    }
    Ok(parts)
}

/// Splits a partition's files (sorted by first seq, then widest first) into the live ones and those whose
/// range lies inside another's: inputs of a compaction whose output is durable.
fn split_leftovers(files: Vec<PartitionFile>) -> (Vec<PartitionFile>, Vec<PartitionFile>) {
    let mut live: Vec<PartitionFile> = Vec::with_capacity(files.len());
    let mut leftovers = Vec::new();
    for f in files {
        match live.last() {
            Some(prev) if prev.last_seq >= f.last_seq => leftovers.push(f),
            _ => live.push(f),
        }
    }
    (live, leftovers)
}

/// The live files and the leftovers of every partition: [`split_leftovers`] within each directory, and, per
/// cluster and date, every other file whose range lies inside a day file's range (the day file holds its rows:
/// the day merge took every file of the date, and files written later have higher seqs).
#[allow(clippy::type_complexity)]
pub(super) fn split_all(
    parts: BTreeMap<PathBuf, Vec<PartitionFile>>,
) -> (
    Vec<(PathBuf, Vec<PartitionFile>)>,
    Vec<(PathBuf, Vec<PartitionFile>)>,
) {
    let mut live = Vec::new();
    let mut leftovers = Vec::new();
    // Day files' ranges by their date directory.
    let mut days: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
    let mut split = Vec::new();
    for (dir, files) in parts {
        let (l, left) = split_leftovers(files);
        if l.first().is_some_and(|f| f.day)
            && let Some(date) = dir.parent()
        {
            days.entry(date.to_path_buf())
                .or_default()
                .extend(l.iter().map(|f| (f.first_seq, f.last_seq)));
        }
        split.push((dir, l, left));
    }
    for (dir, l, mut left) in split {
        let ranges = dir.parent().and_then(|d| days.get(d));
        let (keep, inside): (Vec<_>, Vec<_>) = l.into_iter().partition(|f| {
            f.day
                || !ranges
                    .is_some_and(|r| r.iter().any(|&(a, b)| a <= f.first_seq && f.last_seq <= b))
        });
        left.extend(inside);
        if !keep.is_empty() {
            live.push((dir.clone(), keep));
        }
        if !left.is_empty() {
            leftovers.push((dir, left));
        }
    }
    (live, leftovers)
}

/// What a file's footer says about it, without reading its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Rows (stored events, one per stage).
    pub rows: u64,
    /// The uncompressed bytes of the `event` column (format 3: `event_rest`, `audit_id` and `uri`): about the
    /// stored (redacted) JSON's size.
    pub event_bytes: u64,
}

/// The footer statistics of one store file.
pub fn file_stats(path: &Path) -> Result<FileStats, ColumnarError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = File::open(path).map_err(io_err(path))?;
    let reader = SerializedFileReader::new(file).map_err(pq_err(path))?;
    let meta = reader.metadata();
    let columns = meta.file_metadata().schema_descr();
    let index = |name: &str| columns.columns().iter().position(|c| c.name() == name);
    // Format 3 keeps the event without its auditID and requestURI, which are in their own columns.
    let event_columns: &[&str] = if index("event_rest").is_some() {
        &["event_rest", "audit_id", "uri"]
    } else {
        &["event"]
    };
    let mut stats = FileStats {
        rows: meta.file_metadata().num_rows().max(0) as u64,
        event_bytes: 0,
    };
    for i in event_columns.iter().filter_map(|c| index(c)) {
        for rg in meta.row_groups() {
            stats.event_bytes += rg.column(i).uncompressed_size().max(0) as u64;
        }
    }
    Ok(stats)
}

/// The store's files in `cluster` (all clusters if `None`) whose hour partitions (or day files) overlap
/// [`since`, `until`] (both inclusive; open when `None`), sorted by cluster, hour and seq. Reads directory
/// names only; never returns a file a compaction has superseded.
pub fn list_files(
    root: &Path,
    cluster: Option<&str>,
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
) -> Result<Vec<PartitionFile>, ColumnarError> {
    let mut out = Vec::new();
    for (_, files) in split_all(scan(root, cluster, false)?).0 {
        let f = &files[0];
        if since.is_some_and(|s| f.end() <= s) || until.is_some_and(|u| f.hour > u) {
            continue;
        }
        out.extend(files);
    }
    out.sort_by(|a, b| (&a.cluster, a.hour, a.first_seq).cmp(&(&b.cluster, b.hour, b.first_seq)));
    Ok(out)
}

/// Writes `batches` to `dir/name` durably: a `.tmp` file, fsynced, renamed, the directory fsynced.
pub(super) fn write_file(
    dir: &Path,
    name: &str,
    props: &WriterProperties,
    mut batches: impl FnMut(&mut ArrowWriter<File>) -> Result<(), ColumnarError>,
) -> Result<u64, ColumnarError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w =
            ArrowWriter::try_new(file, schema(), Some(props.clone())).map_err(pq_err(&tmp))?;
        batches(&mut w)?;
        let file = w.into_inner().map_err(pq_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        let bytes = file.metadata().map_err(io_err(&tmp))?.len();
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(dir)?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columnar::HOUR_US;

    #[test]
    fn cluster_dir_names_are_one_to_one_and_safe() {
        for (name, dir) in [
            ("prod-eu", "prod-eu"),
            ("", DEFAULT_PARTITION),
            (DEFAULT_PARTITION, "%5F_HIVE_DEFAULT_PARTITION__"),
            ("..", "%2E."),
            ("a/b=c", "a%2Fb%3Dc"),
            ("é", "%C3%A9"),
            ("x%41", "x%2541"),
        ] {
            assert_eq!(cluster_dir_name(name), dir, "{name}");
            assert_eq!(cluster_from_dir_name(dir).as_deref(), Some(name), "{dir}");
        }
        assert_eq!(cluster_from_dir_name("%2e."), None, "not what we write");
    }

    #[test]
    fn partition_dirs_are_utc_hours() {
        let t: jiff::Timestamp = "2026-03-04T05:59:59.999999Z".parse().unwrap();
        let hour = t.as_microsecond().div_euclid(HOUR_US);
        assert_eq!(
            partition_dir("c", hour),
            Path::new("cluster=c/date=2026-03-04/hour=05")
        );
        let before_epoch = (-1i64).div_euclid(HOUR_US);
        assert_eq!(
            partition_dir("c", before_epoch),
            Path::new("cluster=c/date=1969-12-31/hour=23")
        );
    }

    #[test]
    fn leftovers_are_files_inside_another_range() {
        let f = |a, b| PartitionFile {
            path: PathBuf::from(file_name(a, b)),
            cluster: String::new(),
            hour: jiff::Timestamp::UNIX_EPOCH,
            first_seq: a,
            last_seq: b,
            bytes: 1,
            day: false,
        };
        let mut files = vec![f(0, 3), f(5, 9), f(0, 20), f(12, 20), f(21, 22)];
        files.sort_by_key(|f| (f.first_seq, Reverse(f.last_seq)));
        let (live, left) = split_leftovers(files);
        let ranges = |v: &[PartitionFile]| {
            v.iter()
                .map(|f| (f.first_seq, f.last_seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(ranges(&live), [(0, 20), (21, 22)]);
        assert_eq!(ranges(&left), [(0, 3), (5, 9), (12, 20)]);
    }
}
