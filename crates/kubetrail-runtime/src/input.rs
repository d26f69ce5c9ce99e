//! Reading audit inputs: files (plain or gzip), or stdin for `-`, decoded into event records.
//!
//! JSON lines stream through one reused line buffer, so memory is bounded by the longest line. A document that
//! starts with `[`, or whose first line is not a complete JSON value (a pretty-printed `EventList`), is read
//! whole, up to [`MAX_DOCUMENT`]. A line that holds no event is skipped and recorded, never fatal.

// Commands adopt this module one by one.
#![allow(dead_code)]

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use kubetrail_model::{Event, Location, Record, decode_value};

/// The largest document read whole (a JSON array or a pretty-printed `EventList`), and the longest line.
pub const MAX_DOCUMENT: u64 = 1 << 30;
/// How many skipped values [`InputStats`] keeps the details of; `skipped_total` counts them all.
const KEPT_SKIPS: usize = 1000;

/// What reading the inputs came to.
#[derive(Debug, Default)]
pub struct InputStats {
    pub files: usize,
    /// Events that parsed and were handed to the callback.
    pub records: u64,
    /// Bytes read from the inputs (compressed bytes for gzip, so that it matches [`total_size`]).
    pub bytes: u64,
    /// The first skipped values, with their reasons.
    pub skipped: Vec<Skipped>,
    pub skipped_total: u64,
}

/// A value (or an item of one) that held no readable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file, or `<stdin>`.
    pub source: String,
    /// `file:line`, or `file:line (item N)` for the N-th event of a list or array.
    pub location: String,
    pub reason: String,
}

impl InputStats {
    /// Records a value skipped after it was handed on (a consumer on another thread could not read it), at
    /// `at` among `paths`, as the reader names its own skips.
    pub fn skip_located(&mut self, paths: &[PathBuf], at: Located, reason: String) {
        let source = paths
            .get(at.file)
            .map_or_else(String::new, |p| source_name(p));
        self.skip(&source, at.at, reason);
    }

    fn skip(&mut self, source: &str, location: Location, reason: String) {
        self.skipped_total += 1;
        if self.skipped.len() < KEPT_SKIPS {
            self.skipped.push(Skipped {
                source: source.to_owned(),
                location: format!("{source}:{location}"),
                reason,
            });
        }
    }
}

/// Reads each path (`-` = stdin; gzip detected by magic bytes, not by name), decodes every record and calls
/// `f(&Record, &Event)` for each event that parses; malformed lines are recorded in the stats (file:line and
/// reason) and skipped, never aborting the rest of the file. Reports the bytes read so far through `progress`
/// so callers can drive a progress bar. Stops at the first error of `f`, of opening a file or of reading one.
pub fn for_each_event(
    paths: &[PathBuf],
    progress: &mut dyn FnMut(u64),
    f: &mut dyn FnMut(&Record<'_>, &Event<'_>) -> Result<()>,
) -> Result<InputStats> {
    for_each_record(
        paths,
        progress,
        &mut |record| match Event::parse(&record.json) {
            Ok(event) => f(record, &event).map(|()| None),
            Err(e) => Ok(Some(e.to_string())),
        },
    )
}

/// [`for_each_event`] for callers that parse the event JSON themselves: `f` gets each decoded record and
/// answers `Ok(Some(reason))` to have it counted as skipped (with its location) instead of read.
pub fn for_each_record(
    paths: &[PathBuf],
    progress: &mut dyn FnMut(u64),
    f: &mut dyn FnMut(&Record<'_>) -> Result<Option<String>>,
) -> Result<InputStats> {
    for_each_record_located(paths, progress, &mut |record, _| f(record))
}

/// Where a record is: the index of its file in the paths given, and its place in that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub file: usize,
    pub at: Location,
}

/// How a path is named in messages: `<stdin>` for `-`.
pub fn source_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".into()
    } else {
        path.display().to_string()
    }
}

/// [`for_each_record`], also telling `f` where each record is.
pub fn for_each_record_located(
    paths: &[PathBuf],
    progress: &mut dyn FnMut(u64),
    f: &mut dyn FnMut(&Record<'_>, Located) -> Result<Option<String>>,
) -> Result<InputStats> {
    let mut stats = InputStats::default();
    let read = Rc::new(Cell::new(0));
    for (index, path) in paths.iter().enumerate() {
        let source = source_name(path);
        let raw: Box<dyn Read> = if path == Path::new("-") {
            Box::new(io::stdin().lock())
        } else {
            let file =
                File::open(path).with_context(|| format!("failed to open `{}`", path.display()))?;
            Box::new(file)
        };
        let counting = Counting {
            inner: raw,
            count: Rc::clone(&read),
        };
        let mut plain = BufReader::with_capacity(256 * 1024, counting);
        let head = plain
            .fill_buf()
            .with_context(|| format!("failed to read `{source}`"))?;
        let mut reader: Box<dyn BufRead> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                MultiGzDecoder::new(plain),
            ))
        } else {
            Box::new(plain)
        };
        stats.files += 1;
        let mut input = Input {
            source: &source,
            file: index,
            stats: &mut stats,
            f: &mut *f,
        };
        input
            .read(&mut *reader, &mut |_| progress(read.get()))
            .with_context(|| format!("failed to read `{source}`"))?;
    }
    stats.bytes = read.get();
    progress(stats.bytes);
    Ok(stats)
}

/// The combined size of `paths`, for a progress bar's length; `None` when one is stdin or cannot be read.
pub fn total_size(paths: &[PathBuf]) -> Option<u64> {
    paths
        .iter()
        .map(|p| {
            (p != Path::new("-"))
                .then(|| std::fs::metadata(p).ok().map(|m| m.len()))
                .flatten()
        })
        .sum()
}

/// Counts the bytes read through it, for progress and stats.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

struct Input<'s, 'f> {
    source: &'s str,
    stats: &'s mut InputStats,
    /// The index of the file in the paths given.
    file: usize,
    f: &'f mut dyn FnMut(&Record<'_>, Located) -> Result<Option<String>>,
}

impl Input<'_, '_> {
    fn read(&mut self, reader: &mut dyn BufRead, progress: &mut dyn FnMut(())) -> Result<()> {
        let mut buf = Vec::new();
        let mut line = 0;
        let mut first = true;
        loop {
            buf.clear();
            let (n, cut) = match read_line(reader, &mut buf) {
                Ok(read) => read,
                // A truncated or corrupt file (often a gzip cut short by rotation): keep what was read.
                Err(e) => {
                    self.stats.skip(
                        self.source,
                        Location::Line(line + 1),
                        format!("read error: {e}"),
                    );
                    return Ok(());
                }
            };
            if n == 0 {
                return Ok(());
            }
            line += 1;
            if cut {
                self.cut_line(line, &buf, n)?;
                continue;
            }
            let mut text = buf.trim_ascii();
            if first {
                text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
            }
            if text.is_empty() {
                continue;
            }
            if std::mem::take(&mut first)
                && (text.starts_with(b"[")
                    || serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err())
            {
                return self.document(line, buf, reader);
            }
            self.value(line, text, false)?;
            progress(());
        }
    }

    /// Reads the rest of a document that did not fit on its first line, and decodes it as one value; when it is
    /// not one valid value after all, as lines.
    fn document(
        &mut self,
        first_line: usize,
        mut buf: Vec<u8>,
        reader: &mut dyn BufRead,
    ) -> Result<()> {
        let limit = (MAX_DOCUMENT + 1).saturating_sub(buf.len() as u64);
        if let Err(e) = reader.take(limit).read_to_end(&mut buf) {
            let reason = format!("read error: {e}");
            self.stats
                .skip(self.source, Location::Line(first_line), reason);
            return Ok(());
        }
        if buf.len() as u64 > MAX_DOCUMENT {
            bail!(
                "its first line is not a JSON value, and as a single JSON document it is larger than {MAX_DOCUMENT} bytes: convert it to JSON lines first (e.g. `jq -c '.items[]'`)"
            );
        }
        let text = buf.trim_ascii();
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok() {
            return self.value(first_line, text, true);
        }
        for (i, line) in buf.split(|&b| b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if !line.is_empty() {
                self.value(first_line + i, line, false)?;
            }
        }
        Ok(())
    }

    /// A line longer than [`MAX_DOCUMENT`] (`prefix` is its beginning, `len` its bytes in the file): the
    /// event's metadata, if its beginning holds it, is handed on marked `kubetrail.io/truncated`, as the
    /// pipeline stores any event too large for a record.
    fn cut_line(&mut self, line: usize, prefix: &[u8], len: usize) -> Result<()> {
        let text = match std::str::from_utf8(prefix) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&prefix[..e.valid_up_to()]).unwrap_or_default(),
        };
        // `len` counts the newline (at the end of a file there may be none: one byte more or less).
        let size = len.saturating_sub(1).to_string();
        match kubetrail_pipeline::shape::cut(text, kubetrail_pipeline::MAX_EVENT_BYTES, &size) {
            Some(json) if Event::parse(&json).is_ok() => self.value(line, json.as_bytes(), false),
            _ => {
                let reason = format!(
                    "line longer than {MAX_DOCUMENT} bytes, and its beginning holds no auditID and stage"
                );
                self.stats.skip(self.source, Location::Line(line), reason);
                Ok(())
            }
        }
    }

    /// Decodes one value that starts on `line` and hands its events to `f`.
    fn value(&mut self, line: usize, bytes: &[u8], whole: bool) -> Result<()> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let reason = format!("invalid UTF-8 at byte {}", e.valid_up_to());
                self.stats.skip(self.source, Location::Line(line), reason);
                return Ok(());
            }
        };
        let many = whole || text.starts_with('[');
        let location = |index: Option<usize>| match index {
            Some(index) if many || index > 0 => Location::Item { line, index },
            _ => Location::Line(line),
        };
        let (source, file, stats, f) = (self.source, self.file, &mut *self.stats, &mut *self.f);
        let mut failed = None;
        decode_value(text, &mut |result| {
            if failed.is_some() {
                return;
            }
            match result {
                Ok(record) => match f(
                    &record,
                    Located {
                        file,
                        at: location(Some(record.index)),
                    },
                ) {
                    Ok(None) => stats.records += 1,
                    Ok(Some(reason)) => stats.skip(source, location(Some(record.index)), reason),
                    Err(e) => failed = Some(e),
                },
                Err(e) => stats.skip(source, location(e.index), e.reason),
            }
        });
        failed.map_or(Ok(()), Err)
    }
}

/// Reads one line into `buf`; returns the bytes consumed and whether the line was longer than
/// [`MAX_DOCUMENT`] (then `buf` holds its first [`MAX_DOCUMENT`] bytes and the rest of the line is skipped).
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let mut n = reader.take(MAX_DOCUMENT).read_until(b'\n', buf)?;
    if n as u64 == MAX_DOCUMENT && !buf.ends_with(b"\n") {
        loop {
            let available = reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let (used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            reader.consume(used);
            n += used;
            if done {
                break;
            }
        }
        return Ok((n, true));
    }
    Ok((n, false))
}

/// Tells the user, on stderr, what was skipped and why: the first few locations, then a count.
pub fn report_skipped(stats: &InputStats) {
    const SHOWN: usize = 10;
    if stats.skipped_total == 0 {
        return;
    }
    for s in stats.skipped.iter().take(SHOWN) {
        // Reasons can quote input: one skipped value is one line on the terminal.
        eprintln!(
            "warning: skipped {}: {}",
            crate::logging::escape(&s.location),
            crate::logging::escape(&s.reason)
        );
    }
    let more = stats.skipped_total.saturating_sub(SHOWN as u64);
    if more > 0 {
        eprintln!("warning: ... and {more} more skipped");
    }
    eprintln!(
        "warning: {} of {} input values skipped (malformed or not audit events)",
        stats.skipped_total,
        stats.records + stats.skipped_total
    );
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{"username":"alice"}}"#;

    fn event(id: &str) -> String {
        EVENT.replace("\"a1\"", &format!("\"{id}\""))
    }

    /// Reads `paths` and returns the audit IDs seen and the stats.
    fn read(paths: &[PathBuf]) -> (Vec<String>, InputStats) {
        let mut ids = Vec::new();
        let mut last_progress = 0;
        let stats = for_each_event(paths, &mut |b| last_progress = b, &mut |_, ev| {
            ids.push(ev.audit_id.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(last_progress, stats.bytes);
        (ids, stats)
    }

    fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn gzip_is_detected_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        writeln!(gz, "{}\n\n{}", event("g1"), event("g2")).unwrap();
        let compressed = gz.finish().unwrap();
        let path = file(&dir, "audit.log", &compressed);
        let (ids, stats) = read(std::slice::from_ref(&path));
        assert_eq!(ids, ["g1", "g2"]);
        assert_eq!((stats.files, stats.records, stats.skipped_total), (1, 2, 0));
        assert_eq!(stats.bytes, compressed.len() as u64);
        assert_eq!(total_size(&[path]), Some(compressed.len() as u64));
    }

    #[test]
    fn malformed_lines_are_skipped_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("{}\r\n{{\"kind\": 0}}\n", event("e1")).into_bytes();
        text.extend_from_slice(b"{\"auditID\": \"\xff\"}\n");
        text.extend_from_slice(br#"{"kind":"Event","auditID":"no-stage","level":"Metadata"}"#);
        text.extend_from_slice(format!("\n{}", event("e2")).as_bytes());
        let path = file(&dir, "mixed.log", &text);
        let (ids, stats) = read(&[path]);
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(stats.skipped_total, 3);
        let at: Vec<&str> = stats.skipped.iter().map(|s| s.location.as_str()).collect();
        let name = dir.path().join("mixed.log").display().to_string();
        assert_eq!(
            at,
            [
                format!("{name}:2"),
                format!("{name}:3"),
                format!("{name}:4")
            ]
        );
        assert!(
            stats.skipped[0].reason.contains("`kind`"),
            "{:?}",
            stats.skipped[0]
        );
        assert_eq!(stats.skipped[1].reason, "invalid UTF-8 at byte 13");
        assert!(
            stats.skipped[2].reason.contains("stage"),
            "{:?}",
            stats.skipped[2]
        );
    }

    #[test]
    fn pretty_printed_event_list_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let items = [
            event("l1"),
            event("l2").replace(r#""kind":"Event","#, ""),
            "7".into(),
        ];
        let list = format!(
            "{{\n  \"kind\": \"EventList\",\n  \"apiVersion\": \"audit.k8s.io/v1\",\n  \"items\": [\n{}\n]\n}}\n",
            items.join(",\n")
        );
        let path = file(&dir, "list.json", list.as_bytes());
        let (ids, stats) = read(std::slice::from_ref(&path));
        assert_eq!(ids, ["l1", "l2"]);
        assert_eq!(stats.skipped_total, 1);
        assert!(
            stats.skipped[0].location.ends_with("list.json:1 (item 2)"),
            "{:?}",
            stats.skipped
        );

        let array = file(
            &dir,
            "array.json",
            format!("\n[{}, {}]", event("a1"), event("a2")).as_bytes(),
        );
        assert_eq!(read(&[array]).0, ["a1", "a2"]);
    }

    #[test]
    fn truncated_first_line_falls_back_to_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{{\"kind\":\"Ev\n{}\n", event("t1"));
        let (ids, stats) = read(&[file(&dir, "cut.log", text.as_bytes())]);
        assert_eq!(ids, ["t1"]);
        assert_eq!(stats.skipped_total, 1);
        assert!(stats.skipped[0].location.ends_with("cut.log:1"));
    }

    #[test]
    fn open_error_names_the_file() {
        let err =
            for_each_event(&["missing.log".into()], &mut |_| {}, &mut |_, _| Ok(())).unwrap_err();
        assert_eq!(err.to_string(), "failed to open `missing.log`");
        assert_eq!(total_size(&["-".into()]), None);
    }

    #[test]
    fn callback_error_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "two.log",
            format!("{}\n{}\n", event("c1"), event("c2")).as_bytes(),
        );
        let mut seen = 0;
        let err = for_each_event(&[path], &mut |_| {}, &mut |_, _| {
            seen += 1;
            bail!("sink full")
        })
        .unwrap_err();
        assert_eq!(seen, 1);
        assert!(format!("{err:#}").contains("sink full"));
    }
}
