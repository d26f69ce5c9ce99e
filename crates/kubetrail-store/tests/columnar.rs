//! The columnar store over a real write-ahead log of generated events, read back with the parquet crate's
//! own readers.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, TimestampMicrosecondType, UInt64Type};
use kubetrail_gen::{Config, Generator};
use kubetrail_store::columnar::{BLOOM_FILTER_COLUMNS, cluster_dir_name, schema};
use kubetrail_store::{
    ColumnarOptions, ColumnarWriter, EventRecord, PartitionFile, Wal, WalOptions, list_files,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use serde::Deserialize;

#[derive(Deserialize)]
struct Ids<'a> {
    #[serde(borrow, rename = "auditID")]
    audit_id: Cow<'a, str>,
    #[serde(borrow)]
    stage: Cow<'a, str>,
}

const CLUSTERS: [&str; 2] = ["prod", "staging/eu"];

/// The seq of the first record of a new log.
const FIRST: u64 = 1;

/// Appends `n` generated events (alternating between two clusters) to a new log; returns it and the lines
/// (the line of seq `s` is `lines[s - FIRST]`).
fn build_wal(dir: &Path, n: usize, rate: f64) -> (Arc<Wal>, Vec<String>) {
    let opts = WalOptions {
        fsync: false,
        budget_bytes: u64::MAX / 2,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir, opts).unwrap();
    let mut generator = Generator::new(Config {
        rate,
        ..Config::default()
    });
    let mut lines = Vec::with_capacity(n);
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::new();
    for i in 0..n {
        buf.clear();
        generator.next_into(&mut buf);
        let line = String::from_utf8(buf.clone()).unwrap();
        let ids: Ids = serde_json::from_str(&line).unwrap();
        let rec = EventRecord {
            received_us: 1_767_225_600_000_000 + i as i64,
            cluster: CLUSTERS[i % 2].into(),
            source: "test".into(),
            audit_id: ids.audit_id.clone(),
            stage: ids.stage.clone(),
            variant: "".into(),
            event: line.as_str().into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        batch.push(bytes);
        lines.push(line);
        if batch.len() == 1000 || i + 1 == n {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let seqs = wal.append(&refs).unwrap();
            assert_eq!(seqs.start, FIRST + (i + 1 - refs.len()) as u64);
            batch.clear();
        }
    }
    (Arc::new(wal), lines)
}

fn read(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every row of the store, by seq: (time, event JSON).
fn rows(root: &Path) -> BTreeMap<u64, (i64, String)> {
    let mut out = BTreeMap::new();
    let mut count = 0;
    for f in list_files(root, None, None, None).unwrap() {
        for b in read(&f.path) {
            let seq = b
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<UInt64Type>();
            let time = b
                .column_by_name("time")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                let event = kubetrail_store::columnar::stored_event(&b, i).unwrap();
                out.insert(seq.value(i), (time.value(i), event.into_owned()));
                count += 1;
            }
        }
    }
    assert_eq!(count, out.len(), "a row is stored twice");
    out
}

fn micros(ts: &serde_json::Value) -> i64 {
    ts.as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_microsecond()
}

fn str_col<'b>(b: &'b RecordBatch, name: &str, i: usize) -> Option<&'b str> {
    let col = b.column_by_name(name).unwrap().as_string::<i32>();
    col.is_valid(i).then(|| col.value(i))
}

fn list_col(b: &RecordBatch, name: &str, i: usize) -> Vec<String> {
    let col = b.column_by_name(name).unwrap().as_list::<i32>();
    let items = col.value(i);
    let items = items.as_string::<i32>();
    (0..items.len())
        .map(|j| items.value(j).to_string())
        .collect()
}

/// Asserts that the row at `i` holds what the event JSON says.
fn check_row(b: &RecordBatch, i: usize, cluster: &str, line: &str) {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str());
    let strs = |p: &str| -> Vec<String> {
        v.pointer(p)
            .and_then(|x| x.as_array())
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let non_empty = |p: &str| s(p).filter(|x| !x.is_empty());
    assert_eq!(str_col(b, "cluster", i), Some(cluster));
    assert_eq!(str_col(b, "source", i), Some("test"), "the record's source");
    assert_eq!(str_col(b, "audit_id", i), s("/auditID"));
    assert_eq!(str_col(b, "stage", i), s("/stage"));
    assert_eq!(str_col(b, "level", i), s("/level"));
    assert_eq!(str_col(b, "verb", i), s("/verb"));
    assert_eq!(str_col(b, "user", i), s("/user/username"));
    assert_eq!(list_col(b, "groups", i), strs("/user/groups"));
    assert_eq!(
        str_col(b, "impersonated_user", i),
        s("/impersonatedUser/username")
    );
    assert_eq!(list_col(b, "source_ips", i), strs("/sourceIPs"));
    assert_eq!(str_col(b, "ip", i), s("/sourceIPs/0"));
    assert_eq!(str_col(b, "user_agent", i), s("/userAgent"));
    assert_eq!(str_col(b, "uri", i), s("/requestURI"));
    for (col, field) in [
        ("resource", "resource"),
        ("subresource", "subresource"),
        ("namespace", "namespace"),
        ("name", "name"),
        ("api_group", "apiGroup"),
        ("api_version", "apiVersion"),
    ] {
        assert_eq!(
            str_col(b, col, i),
            non_empty(&format!("/objectRef/{field}")),
            "{col}"
        );
    }
    let code = b
        .column_by_name("code")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(
        code.is_valid(i).then(|| code.value(i) as i64),
        v.pointer("/responseStatus/code").and_then(|c| c.as_i64())
    );
    assert_eq!(
        str_col(b, "decision", i),
        s("/annotations/authorization.k8s.io~1decision")
    );
    assert_eq!(
        str_col(b, "reason", i),
        s("/annotations/authorization.k8s.io~1reason")
    );
    let time = b
        .column_by_name("time")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let stage_time = b
        .column_by_name("stage_time")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let latency = b
        .column_by_name("latency_us")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    let requested = micros(&v["requestReceivedTimestamp"]);
    let staged = micros(&v["stageTimestamp"]);
    assert_eq!(time.value(i), requested);
    assert_eq!(stage_time.value(i), staged);
    assert_eq!(latency.value(i), staged - requested);
    // Format 3: the event is stored without its auditID, timestamps and URI (they are in the columns) and
    // written back byte for byte.
    assert_eq!(str_col(b, "event", i), None);
    let rest = str_col(b, "event_rest", i).unwrap();
    assert!(
        !rest.contains(s("/auditID").unwrap()) && rest.len() < line.len(),
        "{rest}"
    );
    assert_eq!(kubetrail_store::columnar::stored_event(b, i).unwrap(), line);
}

#[test]
fn flush_converts_every_record_into_sorted_hour_partitions() {
    let dir = tempfile::tempdir().unwrap();
    // 0.5 events/s: 3,000 events span about 100 minutes, so at least two hours.
    let n = 3000;
    let (wal, lines) = build_wal(&dir.path().join("wal"), n, 0.5);
    let root = dir.path().join("columnar");
    let opts = ColumnarOptions {
        row_group_rows: 500,
        ..ColumnarOptions::default()
    };
    let mut w = ColumnarWriter::open(&root, Arc::clone(&wal), opts).unwrap();
    let stats = w.flush().unwrap();
    assert_eq!((stats.records, stats.rows), (n as u64, n as u64));
    assert_eq!((stats.unparsed, stats.undecodable, stats.lost), (0, 0, 0));
    assert_eq!(stats.position, FIRST + n as u64);
    assert_eq!(w.position(), FIRST + n as u64);

    let files = list_files(&root, None, None, None).unwrap();
    assert_eq!(files.len() as u64, stats.files);
    let hours: std::collections::BTreeSet<_> = files.iter().map(|f| f.hour).collect();
    assert!(hours.len() >= 2, "{hours:?}");
    let mut seen = 0;
    for f in &files {
        // cluster=<c>/date=YYYY-MM-DD/hour=HH/<first>-<last>.parquet
        let rel = f.path.strip_prefix(&root).unwrap();
        let hour = jiff::tz::Offset::UTC.to_datetime(f.hour);
        let expect = format!(
            "cluster={}/date={}/hour={:02}/{:020}-{:020}.parquet",
            cluster_dir_name(&f.cluster),
            hour.date(),
            hour.hour(),
            f.first_seq,
            f.last_seq
        );
        assert_eq!(rel.to_str().unwrap(), expect);
        assert!(CLUSTERS.contains(&f.cluster.as_str()));
        let start = f.hour.as_microsecond();
        let mut last = (String::new(), i64::MIN);
        let mut seqs = Vec::new();
        for b in read(&f.path) {
            assert_eq!(b.schema().fields(), schema().fields());
            let time = b
                .column_by_name("time")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            let user = b.column_by_name("user").unwrap().as_string::<i32>();
            let seq = b
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<UInt64Type>();
            for i in 0..b.num_rows() {
                let t = time.value(i);
                assert!(
                    (start..start + 3_600_000_000).contains(&t),
                    "row outside its hour"
                );
                let key = (user.value(i).to_string(), t);
                assert!(key >= last, "rows not sorted by (user, time)");
                last = key;
                let s = seq.value(i);
                seqs.push(s);
                let at = (s - FIRST) as usize;
                let cluster = CLUSTERS[at % 2];
                assert_eq!(cluster, f.cluster);
                if at.is_multiple_of(97) {
                    check_row(&b, i, cluster, &lines[at]);
                    seen += 1;
                }
            }
        }
        assert_eq!(seqs.iter().min(), Some(&f.first_seq));
        assert_eq!(seqs.iter().max(), Some(&f.last_seq));
    }
    assert_eq!(seen, n.div_ceil(97));
    let all = rows(&root);
    assert_eq!(all.len(), n);
    assert!(all.keys().copied().eq(FIRST..FIRST + n as u64));

    // Pruning by path: one cluster, one hour.
    let prod = list_files(&root, Some("prod"), None, None).unwrap();
    assert!(prod.iter().all(|f| f.cluster == "prod"));
    assert_eq!(
        prod.len()
            + list_files(&root, Some("staging/eu"), None, None)
                .unwrap()
                .len(),
        files.len()
    );
    let first_hour = files[0].hour;
    let one = list_files(&root, None, Some(first_hour), Some(first_hour)).unwrap();
    assert!(!one.is_empty() && one.iter().all(|f| f.hour == first_hour));
    let later = first_hour
        .checked_add(jiff::SignedDuration::from_mins(90))
        .unwrap();
    assert!(
        list_files(&root, None, Some(later), None)
            .unwrap()
            .iter()
            .all(|f| f.hour > first_hour)
    );

    // A second flush with nothing new writes nothing.
    let again = w.flush().unwrap();
    assert_eq!((again.records, again.rows, again.files), (0, 0, 0));
    assert_eq!(list_files(&root, None, None, None).unwrap(), files);
    assert_eq!(w.flush_if_due().unwrap().files, 0);
}

#[test]
fn files_carry_statistics_page_indexes_bloom_filters_and_sort_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, lines) = build_wal(&dir.path().join("wal"), 1200, 100.0);
    let root = dir.path().join("columnar");
    let opts = ColumnarOptions {
        row_group_rows: 256,
        ..ColumnarOptions::default()
    };
    let mut w = ColumnarWriter::open(&root, wal, opts).unwrap();
    w.flush().unwrap();
    let files = list_files(&root, Some("prod"), None, None).unwrap();
    assert_eq!(files.len(), 1);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let user = first["user"]["username"].as_str().unwrap();

    let props = ReaderProperties::builder()
        .set_read_bloom_filter(true)
        .build();
    let options = ReadOptionsBuilder::new()
        .with_reader_properties(props)
        .with_page_index()
        .build();
    let reader =
        SerializedFileReader::new_with_options(File::open(&files[0].path).unwrap(), options)
            .unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), 600);
    assert_eq!(meta.num_row_groups(), 3, "600 rows in groups of 256");
    let kv = meta.file_metadata().key_value_metadata().unwrap();
    assert!(kv.iter().any(|kv| kv.key == "kubetrail.columnar.version"));
    let col = |name: &str| {
        (0..meta.file_metadata().schema_descr().num_columns())
            .find(|&i| {
                meta.file_metadata()
                    .schema_descr()
                    .column(i)
                    .path()
                    .string()
                    == name
            })
            .unwrap()
    };
    assert!(meta.column_index().is_some() && meta.offset_index().is_some());
    let mut user_found = false;
    for g in 0..meta.num_row_groups() {
        let rg = meta.row_group(g);
        let sorting = rg.sorting_columns().unwrap();
        assert_eq!(sorting[0].column_idx as usize, col("user"));
        assert_eq!(sorting[1].column_idx, 0, "then time");
        assert!(!sorting[0].descending && !sorting[1].descending);
        let time = rg.column(col("time"));
        assert!(time.statistics().unwrap().min_bytes_opt().is_some());
        assert!(rg.column(col("user")).statistics().is_some());
        assert!(rg.column(col("event_rest")).statistics().is_none());
        assert!(matches!(
            rg.column(col("event_rest")).compression(),
            parquet::basic::Compression::ZSTD(_)
        ));
        let group = reader.get_row_group(g).unwrap();
        for name in BLOOM_FILTER_COLUMNS {
            assert!(
                group.get_column_bloom_filter(col(name)).is_some(),
                "no bloom filter on `{name}`"
            );
        }
        assert!(group.get_column_bloom_filter(col("verb")).is_none());
        let bloom = group.get_column_bloom_filter(col("user")).unwrap();
        user_found |= bloom.check(user);
        assert!(!bloom.check("nobody-ever:never"));
    }
    assert!(user_found);
}

#[test]
fn a_crash_before_the_cursor_commit_stores_no_row_twice() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2000;
    let wal_dir = dir.path().join("wal");
    let (wal, _) = build_wal(&wal_dir, n, 0.5);
    let root = dir.path().join("columnar");
    let opts = |flush_rows| ColumnarOptions {
        flush_rows,
        ..ColumnarOptions::default()
    };
    let mut w = ColumnarWriter::open(&root, Arc::clone(&wal), opts(500)).unwrap();
    assert_eq!(w.flush().unwrap().rows, n as u64);
    let before = rows(&root);
    drop(w);

    // Files written, the cursor not committed: the state a crash between the two leaves.
    wal.cursor("columnar").unwrap().commit(FIRST).unwrap();
    let mut w = ColumnarWriter::open(&root, Arc::clone(&wal), opts(700)).unwrap();
    assert_eq!(w.position(), FIRST);
    let stats = w.flush().unwrap();
    assert_eq!((stats.records, stats.already_stored), (n as u64, n as u64));
    assert_eq!((stats.rows, stats.files), (0, 0));
    assert_eq!(rows(&root), before);
    drop(w);

    // A crash in the middle of writing a chunk's files: some of them are there, some not. Re-converted
    // with other chunk boundaries, every row is there once.
    wal.cursor("columnar").unwrap().commit(FIRST).unwrap();
    let files = list_files(&root, None, None, None).unwrap();
    let mut kept = 0;
    for (i, f) in files.iter().enumerate() {
        if i.is_multiple_of(2) {
            std::fs::remove_file(&f.path).unwrap();
        } else {
            kept += ParquetRecordBatchReaderBuilder::try_new(File::open(&f.path).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows() as u64;
        }
    }
    // And a half-written file.
    let tmp = files[0].path.with_file_name(".partial.parquet.tmp");
    std::fs::write(&tmp, b"PAR1").unwrap();
    let mut w = ColumnarWriter::open(&root, Arc::clone(&wal), opts(n)).unwrap();
    assert!(!tmp.exists(), "the half-written file is removed on open");
    let stats = w.flush().unwrap();
    assert_eq!(stats.already_stored, kept);
    assert_eq!(stats.rows, n as u64 - kept);
    assert_eq!(rows(&root), before);
    // The store stays consistent for compaction: nothing is mistaken for a leftover.
    let opts = ColumnarOptions {
        compact_min_files: 2,
        ..opts(n)
    };
    drop(w);
    let mut w = ColumnarWriter::open(&root, wal, opts).unwrap();
    let compacted = w.compact().unwrap();
    assert_eq!(compacted.leftovers_removed, 0);
    assert_eq!(rows(&root), before);
}

/// Every row of the file is in (user, time) order.
fn assert_sorted_by_user_and_time(path: &Path) {
    let mut last = (String::new(), i64::MIN);
    for b in read(path) {
        let time = b
            .column_by_name("time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let user = b.column_by_name("user").unwrap().as_string::<i32>();
        for (i, t) in time.values().iter().enumerate() {
            let key = (user.value(i).to_string(), *t);
            assert!(
                key >= last,
                "{}: rows not sorted by (user, time)",
                path.display()
            );
            last = key;
        }
    }
}

fn total_rows(files: &[PartitionFile]) -> u64 {
    files
        .iter()
        .map(|f| {
            ParquetRecordBatchReaderBuilder::try_new(File::open(&f.path).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows() as u64
        })
        .sum()
}

#[test]
fn compact_merges_small_files_into_one_sorted_file_with_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    // 100 events/s: all in one hour.
    let (wal, _) = build_wal(&dir.path().join("wal"), n, 100.0);
    let root = dir.path().join("columnar");
    let opts = ColumnarOptions {
        flush_rows: 200,
        ..ColumnarOptions::default()
    };
    let mut w = ColumnarWriter::open(&root, Arc::clone(&wal), opts.clone()).unwrap();
    w.flush().unwrap();
    let before = rows(&root);
    let small = list_files(&root, Some("prod"), None, None).unwrap();
    assert_eq!(small.len(), 15, "one file per cluster per chunk");

    // Keep copies of the inputs: putting them back after the merge is what a crash between writing the
    // merged file and deleting the inputs leaves.
    let copies: Vec<_> = small
        .iter()
        .map(|f| (f.path.clone(), std::fs::read(&f.path).unwrap()))
        .collect();
    let stats = w.compact().unwrap();
    assert_eq!(stats.merges, 2, "one per cluster");
    assert_eq!(stats.files_in, 30);
    assert_eq!(stats.rows, n as u64);
    let merged = list_files(&root, None, None, None).unwrap();
    assert_eq!(merged.len(), 2);
    assert_eq!(total_rows(&merged), n as u64);
    assert_eq!(
        (merged[0].first_seq, merged[0].last_seq),
        (FIRST, n as u64 - 1)
    );
    assert_eq!(rows(&root), before);
    for f in &merged {
        assert_sorted_by_user_and_time(&f.path);
    }
    assert_eq!(w.compact().unwrap().merges, 0, "nothing left to merge");

    for (path, bytes) in &copies {
        std::fs::write(path, bytes).unwrap();
    }
    assert_eq!(
        list_files(&root, None, None, None).unwrap(),
        merged,
        "readers never see a superseded file"
    );
    assert_eq!(rows(&root), before);
    drop(w);
    // Reopening keeps them (their removal must be recorded); the next compaction hands them to its
    // recorder first, and removes nothing when the recorder fails.
    let mut w = ColumnarWriter::open(&root, wal, opts).unwrap();
    assert!(copies.iter().all(|(p, _)| p.exists()));
    let err = w
        .compact_recorded(&mut |_| Err("the disk is full".into()))
        .unwrap_err();
    assert!(err.to_string().contains("the disk is full"), "{err}");
    assert!(copies.iter().all(|(p, _)| p.exists()), "nothing removed");
    assert_eq!(rows(&root), before);
    let mut recorded = Vec::new();
    let stats = w
        .compact_recorded(&mut |paths| {
            recorded.extend_from_slice(paths);
            Ok(())
        })
        .unwrap();
    assert_eq!(stats.leftovers_removed, copies.len() as u64);
    recorded.sort();
    let mut expected: Vec<_> = copies.iter().map(|(p, _)| p.clone()).collect();
    expected.sort();
    assert_eq!(recorded, expected, "exactly the leftovers were recorded");
    assert!(copies.iter().all(|(p, _)| !p.exists()), "leftovers removed");
    assert_eq!(rows(&root), before);
}

/// `cargo test --release -p kubetrail-store --test columnar -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a test"]
fn conversion_throughput_and_size() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let n = 1_000_000;
    let started = Instant::now();
    let (wal, lines) = build_wal(&dir.path().join("wal"), n, 100.0);
    let json_bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    drop(lines);
    println!(
        "built the log: {n} events, {:.1} MB of JSON lines, in {:.1}s",
        json_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let root = dir.path().join("columnar");
    let mut w = ColumnarWriter::open(&root, wal, ColumnarOptions::default()).unwrap();
    let started = Instant::now();
    let stats = w.flush().unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(stats.rows, n as u64);
    println!(
        "flush: {:.0} rows/s ({} rows, {} files in {secs:.2}s); {:.1} MB on disk: {:.0} bytes/event vs {:.0} bytes/event of JSON, ratio 1/{:.1}",
        n as f64 / secs,
        stats.rows,
        stats.files,
        stats.bytes as f64 / 1e6,
        stats.bytes as f64 / n as f64,
        json_bytes as f64 / n as f64,
        json_bytes as f64 / stats.bytes as f64,
    );
    let files = list_files(&root, None, None, None).unwrap();
    let mut per_column: BTreeMap<String, u64> = BTreeMap::new();
    for f in &files {
        let reader = SerializedFileReader::new(File::open(&f.path).unwrap()).unwrap();
        for rg in reader.metadata().row_groups() {
            for c in rg.columns() {
                *per_column.entry(c.column_path().string()).or_default() +=
                    c.compressed_size() as u64;
            }
        }
    }
    let mut cols: Vec<_> = per_column.into_iter().collect();
    cols.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
    for (name, bytes) in cols.iter().take(8) {
        println!("  {name:<28} {:>8.1} bytes/event", *bytes as f64 / n as f64);
    }
    assert!(
        stats.bytes * 10 <= json_bytes as u64,
        "over 1/10 of the JSON size"
    );
}

/// Closed days become one file each: a year of hourly files is 24 times fewer files for a query to open.
/// Crash safety and late events hold across it.
#[test]
fn closed_days_are_merged_into_one_day_file_without_losing_or_doubling_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6000;
    // 0.05 events/s: 6000 events over about 33 hours from 2026-01-01, so two dates, many hours each.
    let (wal, _) = build_wal(&dir.path().join("wal"), n, 0.05);
    let root = dir.path().join("columnar");
    let opts = ColumnarOptions {
        flush_rows: 500,
        ..ColumnarOptions::default()
    };
    let mut w = ColumnarWriter::open(&root, Arc::clone(&wal), opts.clone()).unwrap();
    w.flush().unwrap();
    let before = rows(&root);
    let hourly = list_files(&root, Some("prod"), None, None).unwrap();
    assert!(hourly.len() > 30, "{} hourly files", hourly.len());
    assert!(hourly.iter().all(|f| !f.day));

    // A crash after the day files are durable, before the inputs are gone: the recorder fails, so the
    // inputs stay; readers see only the day files, and every row once.
    let err = w
        .compact_recorded(&mut |_| Err("the disk is full".into()))
        .unwrap_err();
    assert!(err.to_string().contains("the disk is full"), "{err}");
    assert!(hourly.iter().all(|f| f.path.exists()), "nothing removed");
    let days = list_files(&root, Some("prod"), None, None).unwrap();
    assert_eq!(days.len(), 2, "one file per date: {days:?}");
    assert!(
        days.iter()
            .all(|f| f.day && f.path.to_string_lossy().contains("/hour=all/"))
    );
    assert_eq!(rows(&root), before, "no row lost or doubled");

    // The next compaction records and removes the hourly files.
    let mut recorded = Vec::new();
    let stats = w
        .compact_recorded(&mut |paths| {
            recorded.extend_from_slice(paths);
            Ok(())
        })
        .unwrap();
    assert!(
        stats.leftovers_removed as usize >= hourly.len(),
        "{stats:?}"
    );
    assert!(hourly.iter().all(|f| !f.path.exists()));
    assert!(hourly.iter().all(|f| recorded.contains(&f.path)));
    assert_eq!(rows(&root), before);

    // A day file is found by any hour of its date, and sorted by (user, time) like every file.
    let first = &days[0];
    let noon = first
        .hour
        .checked_add(jiff::SignedDuration::from_hours(12))
        .unwrap();
    let found = list_files(&root, Some("prod"), Some(noon), Some(noon)).unwrap();
    assert_eq!(found, vec![first.clone()]);
    let after_it = first.end();
    assert!(
        !list_files(&root, Some("prod"), Some(after_it), None)
            .unwrap()
            .contains(first)
    );
    assert_sorted_by_user_and_time(&first.path);
    assert_eq!(w.compact().unwrap().merges, 0, "nothing left to merge");

    // A late event for a closed day lands in its hour's directory, is read beside the day file, and the
    // next compaction folds it into a new day file.
    let late = build_wal(&dir.path().join("late"), 1, 0.05).1.remove(0);
    let ids: serde_json::Value = serde_json::from_str(&late).unwrap();
    let rec = EventRecord {
        received_us: 1_767_225_600_000_000,
        cluster: "prod".into(),
        source: "test".into(),
        audit_id: ids["auditID"].as_str().unwrap().into(),
        variant: "".into(),
        stage: ids["stage"].as_str().unwrap().into(),
        event: late.as_str().into(),
    };
    let mut bytes = Vec::new();
    rec.encode(&mut bytes);
    wal.append(&[bytes.as_slice()]).unwrap();
    w.flush().unwrap();
    let with_late = list_files(&root, Some("prod"), None, None).unwrap();
    assert_eq!(with_late.len(), 3, "{with_late:?}");
    let all = rows(&root);
    assert_eq!(all.len(), before.len() + 1);
    let stats = w.compact().unwrap();
    assert_eq!(stats.days, 1, "{stats:?}");
    let again = list_files(&root, Some("prod"), None, None).unwrap();
    assert_eq!(again.len(), 2);
    assert!(!first.path.exists(), "the old day file is replaced");
    assert_eq!(rows(&root), all);
}

/// Files of format 1 (before the `source` column) and 2 (the whole event in `event`) stay readable and are
/// merged by compaction into format 3: a null `source` for format 1, the events stored without what their
/// columns hold, every row's event the same bytes as before.
#[test]
fn format_1_and_2_files_are_compacted_into_format_3() {
    let now = schema();
    let n_cols = now.fields().len();
    assert_eq!(now.fields()[n_cols - 3].name(), "source");
    for (format, kept) in [(1, n_cols - 3), (2, n_cols - 2)] {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = build_wal(&dir.path().join("wal"), 1000, 100.0);
        let root = dir.path().join("columnar");
        let opts = ColumnarOptions {
            flush_rows: 200,
            ..ColumnarOptions::default()
        };
        let mut w = ColumnarWriter::open(&root, Arc::clone(&wal), opts).unwrap();
        w.flush().unwrap();
        let before = rows(&root);
        // Rewrite every file as that format wrote it: its first columns, the whole event in `event`.
        let old = Arc::new(arrow::datatypes::Schema::new(now.fields()[..kept].to_vec()));
        let event_col = now.index_of("event").unwrap();
        let mut old_bytes = 0;
        for f in list_files(&root, None, None, None).unwrap() {
            let batches = read(&f.path);
            let mut out = parquet::arrow::ArrowWriter::try_new(
                File::create(&f.path).unwrap(),
                old.clone(),
                None,
            )
            .unwrap();
            for b in batches {
                let events: Vec<String> = (0..b.num_rows())
                    .map(|i| {
                        kubetrail_store::columnar::stored_event(&b, i)
                            .unwrap()
                            .into_owned()
                    })
                    .collect();
                let mut cols = b.columns()[..kept].to_vec();
                cols[event_col] = Arc::new(arrow::array::StringArray::from(events));
                out.write(&RecordBatch::try_new(old.clone(), cols).unwrap())
                    .unwrap();
            }
            out.close().unwrap();
            old_bytes += std::fs::metadata(&f.path).unwrap().len();
        }
        assert_eq!(rows(&root), before, "format {format} reads the same");
        let stats = w.compact().unwrap();
        assert_eq!(stats.merges, 2, "old files are merged, one run per cluster");
        assert_eq!(rows(&root), before, "no row lost, doubled or changed");
        let mut new_bytes = 0;
        for f in list_files(&root, None, None, None).unwrap() {
            new_bytes += std::fs::metadata(&f.path).unwrap().len();
            for b in read(&f.path) {
                assert_eq!(b.schema().fields(), now.fields());
                let nulls = |name: &str| b.column_by_name(name).unwrap().null_count();
                let source_nulls = if format == 1 { b.num_rows() } else { 0 };
                assert_eq!(nulls("source"), source_nulls, "format {format}");
                assert_eq!(nulls("event"), b.num_rows(), "format 3 leaves event null");
                assert_eq!(nulls("event_rest"), 0);
                let elided = b
                    .column_by_name("event_elided")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::UInt8Type>();
                assert!(
                    elided.values().iter().all(|&bits| bits == 15),
                    "all four elided"
                );
            }
        }
        assert!(
            new_bytes * 10 < old_bytes * 8,
            "format 3 takes less room: {new_bytes} against {old_bytes}"
        );
    }
}
