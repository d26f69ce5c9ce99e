use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubetrail_store::{Wal, WalError, WalOptions};
use proptest::prelude::*;

fn small(fsync: bool) -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        budget_bytes: 1 << 30,
        fsync,
    }
}

fn payload(seq_hint: u64) -> Vec<u8> {
    // Varied sizes, content tied to the record so a mix-up shows.
    format!(
        "event-{seq_hint}-{}",
        "x".repeat((seq_hint as usize * 37) % 700)
    )
    .into_bytes()
}

/// Appends `n` records in batches of up to 7 and returns their payloads by seq.
fn fill(wal: &Wal, n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let batch: Vec<Vec<u8>> = (i..n.min(i + 1 + i % 7)).map(payload).collect();
        let refs: Vec<&[u8]> = batch.iter().map(|p| p.as_slice()).collect();
        let seqs = wal.append(&refs).unwrap();
        assert_eq!(seqs.end - seqs.start, batch.len() as u64);
        i += refs.len() as u64;
        out.extend(seqs.zip(batch));
    }
    out
}

fn read_all(wal: &Wal, from: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read_from(from)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_and_read_across_segment_rollover() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, rec) = Wal::open(dir.path(), small(true)).unwrap();
    assert_eq!(
        (
            rec.segments,
            rec.records,
            rec.next_seq,
            rec.torn_bytes_cut,
            rec.chain_ok
        ),
        (1, 0, 1, 0, true)
    );
    assert_eq!(wal.read_from(0).unwrap().count(), 0);

    let written = fill(&wal, 300);
    assert_eq!(written.first().unwrap().0, 1);
    assert_eq!((wal.next_seq(), wal.durable_seq()), (301, 301));
    let usage = wal.usage();
    assert!(usage.segments > 10, "{usage:?}");
    assert_eq!(
        usage.bytes,
        segments(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );
    assert!(dir.path().join("00000000000000000001.seg").exists());

    assert_eq!(read_all(&wal, 0), written);
    assert_eq!(read_all(&wal, 150), written[149..]);
    assert_eq!(read_all(&wal, 300), written[299..]);
    assert!(read_all(&wal, 301).is_empty());

    let report = wal.verify().unwrap();
    assert_eq!(
        (
            report.segments,
            report.records,
            report.oldest_seq,
            report.next_seq
        ),
        (usage.segments, 300, 1, 301)
    );
    assert_eq!(report.bytes, usage.bytes);
    assert_eq!(report.head_hash, wal.chain_head().1);
}

#[test]
fn reopen_continues_seqs_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small(true)).unwrap();
    let mut written = fill(&wal, 100);
    let head = wal.chain_head();
    drop(wal);

    let (wal, rec) = Wal::open(dir.path(), small(true)).unwrap();
    assert_eq!(
        (rec.records, rec.next_seq, rec.torn_bytes_cut, rec.chain_ok),
        (100, 101, 0, true)
    );
    assert_eq!(rec.segments, wal.usage().segments);
    assert_eq!(wal.chain_head(), head);
    let more = wal.append(&[b"after reopen"]).unwrap();
    assert_eq!(more, 101..102);
    written.push((101, b"after reopen".to_vec()));
    assert_eq!(read_all(&wal, 1), written);
    assert_eq!(wal.verify().unwrap().records, 101);
}

#[test]
fn torn_tail_is_cut_and_complete_records_kept() {
    for (name, damage) in [
        ("truncated mid-record", Damage::Truncate(10)),
        ("truncated mid-prefix", Damage::Truncate(0)),
        (
            "garbage appended",
            Damage::Garbage(b"\x05\x00\x00\x00garbage that is no record at all".to_vec()),
        ),
        ("zeros appended", Damage::Garbage(vec![0; 4096])),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(
            dir.path(),
            WalOptions {
                segment_bytes: 1 << 20,
                ..small(true)
            },
        )
        .unwrap();
        let written = fill(&wal, 50);
        let last_len = written.last().unwrap().1.len() as u64 + 48;
        drop(wal);
        let seg = segments(dir.path()).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        let (expect_cut, expect_records) = match &damage {
            Damage::Truncate(keep) => {
                // Keep `keep` bytes of the last record.
                OpenOptions::new()
                    .write(true)
                    .open(&seg)
                    .unwrap()
                    .set_len(len - last_len + keep)
                    .unwrap();
                (*keep, 49)
            }
            Damage::Garbage(bytes) => {
                OpenOptions::new()
                    .append(true)
                    .open(&seg)
                    .unwrap()
                    .write_all(bytes)
                    .unwrap();
                (bytes.len() as u64, 50)
            }
        };
        let (wal, rec) = Wal::open(dir.path(), small(true)).unwrap();
        assert_eq!(rec.torn_bytes_cut, expect_cut, "{name}");
        assert!(
            rec.quarantined.is_none(),
            "{name}: a torn tail is not damage"
        );
        assert_eq!(
            (rec.records, rec.next_seq, rec.chain_ok),
            (expect_records, expect_records + 1, true),
            "{name}"
        );
        assert_eq!(
            read_all(&wal, 0),
            written[..expect_records as usize],
            "{name}"
        );
        wal.append(&[b"next"]).unwrap();
        assert_eq!(wal.verify().unwrap().records, expect_records + 1, "{name}");
    }
}

/// Regression: a flipped byte in the middle of the active segment used to be cut silently as a torn tail,
/// losing acknowledged records without a trace. Now the damaged segment is kept as evidence.
#[test]
fn damage_before_intact_records_is_quarantined_not_just_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions {
            segment_bytes: 1 << 20,
            ..small(true)
        },
    )
    .unwrap();
    let written = fill(&wal, 30);
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    let original = fs::read(&seg).unwrap();
    // Inside the payload of record 10: records 11..30 after it are intact.
    let at = 52
        + written[..9]
            .iter()
            .map(|(_, p)| p.len() as u64 + 48)
            .sum::<u64>()
        + 20;
    flip(&seg, at);
    let (wal, rec) = Wal::open(dir.path(), small(true)).unwrap();
    let copy = rec
        .quarantined
        .clone()
        .expect("damage followed by intact records is quarantined");
    assert!(!rec.chain_ok);
    let mut damaged = original.clone();
    damaged[at as usize] ^= 0x01;
    assert_eq!(
        fs::read(&copy).unwrap(),
        damaged,
        "the copy is the segment as found"
    );
    assert_eq!(rec.next_seq, 10, "records before the damage are kept");
    assert_eq!(read_all(&wal, 0), written[..9]);
    // A plain torn tail is not quarantined.
    drop(wal);
    let (_, rec) = Wal::open(dir.path(), small(true)).unwrap();
    assert!(rec.quarantined.is_none());
}

enum Damage {
    Truncate(u64),
    Garbage(Vec<u8>),
}

#[test]
fn flipped_byte_in_an_old_segment_fails_verify_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small(false)).unwrap();
    fill(&wal, 100);
    drop(wal);
    let segs = segments(dir.path());
    let victim = &segs[2];
    flip(victim, 100);
    let (wal, rec) = Wal::open(dir.path(), small(false)).unwrap();
    assert_eq!(rec.torn_bytes_cut, 0); // only the active segment is ever cut
    let Err(WalError::Corrupt {
        segment,
        offset,
        reason,
    }) = wal.verify()
    else {
        panic!("verify passed")
    };
    assert_eq!(&segment, victim);
    assert!(offset <= 100, "{offset} {reason}");
    let msg = wal.verify().unwrap_err().to_string();
    assert!(
        msg.starts_with("corrupt write-ahead log segment `"),
        "{msg}"
    );
}

#[test]
fn deleted_middle_segment_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small(false)).unwrap();
    fill(&wal, 100);
    drop(wal);
    let segs = segments(dir.path());
    fs::remove_file(&segs[3]).unwrap();
    let (wal, _) = Wal::open(dir.path(), small(false)).unwrap();
    let Err(WalError::Corrupt { segment, .. }) = wal.verify() else {
        panic!("verify passed")
    };
    assert_eq!(segment, segs[4]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A crash can stop the active segment at any byte: reopening keeps exactly the records that are whole.
    #[test]
    fn cut_anywhere_keeps_every_whole_record(pick in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions { segment_bytes: 1 << 20, ..small(false) };
        let (wal, _) = Wal::open(dir.path(), opts).unwrap();
        let written = fill(&wal, 30);
        drop(wal);
        let seg = segments(dir.path()).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        let cut = 52 + pick.index((len - 52 + 1) as usize) as u64;
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
        let mut whole = 0;
        let mut end = 52;
        for (_, p) in &written {
            if end + p.len() as u64 + 48 > cut {
                break;
            }
            end += p.len() as u64 + 48;
            whole += 1;
        }
        let (wal, rec) = Wal::open(dir.path(), opts).unwrap();
        prop_assert_eq!((rec.records, rec.torn_bytes_cut, rec.chain_ok), (whole as u64, cut - end, true));
        prop_assert_eq!(read_all(&wal, 0), written[..whole].to_vec());
        wal.append(&[b"after"]).unwrap();
        prop_assert_eq!(wal.verify().unwrap().records, whole as u64 + 1);
    }
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any single flipped bit anywhere in any segment makes verify fail, naming that segment.
    #[test]
    fn any_flipped_byte_fails_verify(pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions { segment_bytes: 2048, ..small(false) }).unwrap();
        fill(&wal, 40);
        let segs = segments(dir.path());
        let sizes: Vec<u64> = segs.iter().map(|p| fs::metadata(p).unwrap().len()).collect();
        let mut at = pick.index(sizes.iter().sum::<u64>() as usize) as u64;
        let mut i = 0;
        while at >= sizes[i] {
            at -= sizes[i];
            i += 1;
        }
        let mut bytes = fs::read(&segs[i]).unwrap();
        bytes[at as usize] ^= 1 << bit;
        fs::write(&segs[i], bytes).unwrap();
        match wal.verify() {
            Err(WalError::Corrupt { segment, offset, .. }) => {
                prop_assert_eq!(&segment, &segs[i]);
                prop_assert!(offset <= at, "reported {} for a flip at {}", offset, at);
            }
            other => prop_assert!(false, "flip at {} of {:?}: {:?}", at, segs[i], other),
        }
    }
}

#[test]
fn group_commit_from_eight_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions {
            segment_bytes: 64 << 10,
            ..small(true)
        },
    )
    .unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..100u64 {
                    let batch: Vec<Vec<u8>> = (0..1 + i % 4)
                        .map(|j| format!("t{t}-i{i}-j{j}").into_bytes())
                        .collect();
                    let refs: Vec<&[u8]> = batch.iter().map(|p| p.as_slice()).collect();
                    let seqs = wal.append(&refs).unwrap();
                    assert!(wal.durable_seq() >= seqs.end, "returned before durable");
                    mine.extend(seqs.zip(batch));
                }
                mine
            })
        })
        .collect();
    let mut appended: Vec<(u64, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    appended.sort();
    let total = appended.len() as u64;
    assert_eq!(
        appended.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let unique: HashSet<&Vec<u8>> = appended.iter().map(|(_, p)| p).collect();
    assert_eq!(unique.len() as u64, total);
    assert_eq!(read_all(&wal, 0), appended);
    assert_eq!(wal.verify().unwrap().records, total);
    // 800 appends from 8 threads: followers whose records a leader's fsync covered did not sync themselves.
    assert!(wal.fsyncs() < 800, "{} fsyncs", wal.fsyncs());
}

#[test]
fn full_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 4096,
        budget_bytes: 16 << 10,
        fsync: true,
    };
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    let record = [7u8; 500];
    let mut appended = 0;
    let (used, budget) = loop {
        match wal.append(&[&record, &record]) {
            Ok(_) => appended += 2,
            Err(WalError::Full { used, budget }) => break (used, budget),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(budget, 16 << 10);
    assert!(used <= budget && used + 2 * 548 > budget, "{used}");
    // Nothing partial: the failed append left the log as it was, and it still verifies.
    let before = wal.usage();
    assert_eq!((before.bytes, before.next_seq), (used, appended + 1));
    assert!(matches!(
        wal.append(&[&record, &record]),
        Err(WalError::Full { .. })
    ));
    assert_eq!(wal.usage(), before);
    assert_eq!(wal.verify().unwrap().records, before.next_seq - 1);
    assert!(appended > 0);

    // A reader that has consumed half of it lets the old segments go.
    let half = before.next_seq / 2;
    let freed = wal.release_before(half).unwrap();
    assert!(freed > 0);
    let after = wal.usage();
    assert_eq!(after.bytes, before.bytes - freed);
    assert!(
        after.oldest_seq > 1 && after.oldest_seq <= half,
        "{after:?}"
    );
    wal.append(&[&record, &record]).unwrap();
    assert_eq!(read_all(&wal, 0)[0].0, after.oldest_seq);
    assert_eq!(wal.verify().unwrap().oldest_seq, after.oldest_seq);

    // Releasing everything also replaces the active segment.
    let next = wal.next_seq();
    wal.release_before(next).unwrap();
    let empty = wal.usage();
    assert_eq!(
        (
            empty.segments,
            empty.oldest_seq,
            empty.next_seq,
            empty.bytes
        ),
        (1, next, next, 52)
    );
    wal.append(&[b"again"]).unwrap();
    drop(wal);
    let (wal, rec) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(
        (rec.records, rec.next_seq, rec.chain_ok),
        (1, next + 1, true)
    );
    assert_eq!(read_all(&wal, 0), vec![(next, b"again".to_vec())]);
    wal.verify().unwrap();
}

#[test]
fn budget_smaller_than_a_segment_recovers_after_release() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions {
            segment_bytes: 1 << 20,
            budget_bytes: 2048,
            fsync: false,
        },
    )
    .unwrap();
    while wal.append(&[&[1u8; 100]]).is_ok() {}
    assert_eq!(wal.usage().segments, 1);
    assert!(wal.release_before(wal.next_seq()).unwrap() > 0);
    wal.append(&[&[1u8; 100]]).unwrap();
}

#[test]
fn oversized_record_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small(false)).unwrap();
    let big = vec![0u8; kubetrail_store::MAX_PAYLOAD_BYTES + 1];
    assert!(matches!(
        wal.append(&[b"ok", &big]),
        Err(WalError::TooLarge { .. })
    ));
    assert_eq!(wal.next_seq(), 1);
}

#[test]
fn cursors_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small(true)).unwrap();
    fill(&wal, 20);
    // A name that looks like a leftover temporary file is still a cursor.
    wal.cursor("odd.tmp").unwrap().commit(3).unwrap();
    let mut c = wal.cursor("clickhouse").unwrap();
    assert_eq!(c.position(), 1);
    c.commit(11).unwrap();
    assert_eq!(c.position(), 11);
    assert_eq!(wal.cursor("s3").unwrap().position(), 1);
    for bad in ["", ".hidden", "a/b", "..", "with space"] {
        assert!(
            matches!(wal.cursor(bad), Err(WalError::CursorName(_))),
            "{bad:?}"
        );
    }
    drop(wal);

    let (wal, _) = Wal::open(dir.path(), small(true)).unwrap();
    let c = wal.cursor("clickhouse").unwrap();
    assert_eq!(c.position(), 11);
    assert_eq!(wal.cursor("odd.tmp").unwrap().position(), 3);
    assert_eq!(read_all(&wal, c.position())[0].0, 11);
    assert!(dir.path().join("cursors/clickhouse").exists());

    fs::write(dir.path().join("cursors/clickhouse"), b"garbage").unwrap();
    assert!(matches!(
        wal.cursor("clickhouse"),
        Err(WalError::Corrupt { .. })
    ));
}

#[test]
fn read_while_another_thread_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions {
            segment_bytes: 8192,
            ..small(true)
        },
    )
    .unwrap();
    let wal = Arc::new(wal);
    const N: u64 = 2000;
    let writer = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            for i in 0..N / 4 {
                let batch: Vec<Vec<u8>> = (i * 4..i * 4 + 4).map(payload).collect();
                let refs: Vec<&[u8]> = batch.iter().map(|p| p.as_slice()).collect();
                wal.append(&refs).unwrap();
            }
        })
    };
    let mut cursor = wal.cursor("reader").unwrap();
    let mut seen = 0u64;
    while seen < N {
        for item in wal.read_from(cursor.position()).unwrap() {
            let (seq, body) = item.unwrap();
            assert_eq!(seq, seen + 1);
            assert_eq!(body, payload(seen));
            seen += 1;
        }
        cursor.commit(seen + 1).unwrap();
    }
    writer.join().unwrap();
    assert_eq!(wal.verify().unwrap().records, N);
}
