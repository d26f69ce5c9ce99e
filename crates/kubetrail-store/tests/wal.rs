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
/// losing acknowledged records without a trace. Now the damaged segment is kept as evidence, and the seqs of
/// the intact records after the damage are not handed out again.
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
    let at = offset_of(&written, 10) + 20;
    flip(&seg, at);
    let (wal, rec) = Wal::open(dir.path(), small(true)).unwrap();
    let copy = rec
        .quarantined
        .clone()
        .expect("damage followed by intact records is quarantined");
    assert_eq!(copy, seg.with_extension("seg.damaged-10"));
    assert!(!rec.chain_ok);
    let mut damaged = original.clone();
    damaged[at as usize] ^= 0x01;
    assert_eq!(
        fs::read(&copy).unwrap(),
        damaged,
        "the copy is the segment as found"
    );
    assert_eq!(rec.records, 9, "records before the damage are kept");
    assert_eq!(rec.skipped, Some(10..31), "records 10 to 30 were written");
    assert_eq!(rec.next_seq, 31);
    assert_eq!(read_all(&wal, 0), written[..9]);
    let damage = wal.damage().expect("damage is described");
    for part in [
        &format!(
            "`{}` was damaged at offset {}",
            seg.display(),
            offset_of(&written, 10)
        ),
        "records 10 to 30 were cut",
        &format!("kept at `{}`", copy.display()),
        "continue at seq 31",
    ] {
        assert!(damage.contains(part), "{part:?} not in {damage}");
    }
    // A plain torn tail is not quarantined, and not damage.
    drop(wal);
    let (wal, rec) = Wal::open(dir.path(), small(true)).unwrap();
    assert!(rec.quarantined.is_none());
    assert_eq!((rec.next_seq, rec.skipped), (31, None));
    assert_eq!(wal.damage(), None);
}

/// Where record `seq` starts in a segment that holds `written` from seq 1.
fn offset_of(written: &[(u64, Vec<u8>)], seq: u64) -> u64 {
    52 + written[..seq as usize - 1]
        .iter()
        .map(|(_, p)| p.len() as u64 + 48)
        .sum::<u64>()
}

/// Regression (issue 14): recovery cut the log at damage below where its readers were, so the next records got
/// seqs they had passed and never saw. The log now continues after every cursor, and verify names the loss.
#[test]
fn damage_under_cursors_continues_after_them_and_fails_verify() {
    for flipped in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_bytes: 1 << 20,
            ..small(true)
        };
        let (wal, _) = Wal::open(dir.path(), opts).unwrap();
        let written = fill(&wal, 60);
        // Readers that have consumed up to seq 40 and 45 (the conversion, a sink).
        wal.cursor("parquet").unwrap().commit(41).unwrap();
        wal.cursor("sink-s3").unwrap().commit(46).unwrap();
        drop(wal);
        let seg = segments(dir.path()).pop().unwrap();
        let cut = offset_of(&written, 20);
        if flipped {
            // Intact records 21..60 follow: quarantined, and seqs up to 60 were written.
            flip(&seg, cut + 20);
        } else {
            // Lost with nothing after it (a truncated file): only the cursors know how far the log went.
            OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(cut + 30)
                .unwrap();
        }
        let (wal, rec) = Wal::open(dir.path(), opts).unwrap();
        let next = if flipped { 61 } else { 46 };
        assert_eq!(rec.records, 19, "flipped {flipped}");
        assert_eq!(rec.skipped, Some(20..next), "flipped {flipped}");
        assert_eq!(rec.next_seq, next);
        assert_eq!(rec.quarantined.is_some(), flipped);
        let damage = wal.damage().expect("damage is described");
        assert!(
            damage.contains(&format!("records 20 to {}", next - 1)),
            "{damage}"
        );
        assert!(
            damage.contains(&format!("continue at seq {next}")),
            "{damage}"
        );

        // New records get seqs past every reader, and the readers see them.
        let new = wal.append(&[b"after damage 1", b"after damage 2"]).unwrap();
        assert_eq!(new, next..next + 2);
        for name in ["parquet", "sink-s3"] {
            let c = wal.cursor(name).unwrap();
            let seen: Vec<u64> = read_all(&wal, c.position()).iter().map(|r| r.0).collect();
            assert_eq!(seen, [next, next + 1], "{name}");
        }
        // A reader from the start steps over the lost seqs.
        let all = read_all(&wal, 0);
        assert_eq!(all[..19], written[..19]);
        assert_eq!(
            all[19..],
            [
                (next, b"after damage 1".to_vec()),
                (next + 1, b"after damage 2".to_vec())
            ]
        );
        assert_eq!(read_all(&wal, 25)[0].0, next);

        // Verify fails, naming the damaged segment, the lost seqs and the copy.
        let Err(WalError::Corrupt {
            segment,
            offset,
            reason,
        }) = wal.verify()
        else {
            panic!("verify passed over lost records")
        };
        assert_eq!((&segment, offset), (&seg, cut), "{reason}");
        assert!(
            reason.contains(&format!("records 20 to {} were lost", next - 1)),
            "{reason}"
        );
        assert!(
            reason.contains(&format!("continues at seq {next}")),
            "{reason}"
        );
        if flipped {
            assert!(reason.contains("seg.damaged-20"), "{reason}");
        } else {
            assert!(reason.contains("no copy"), "{reason}");
        }

        // Reopening keeps going from there, and the damage stays visible to verify.
        drop(wal);
        let (wal, rec) = Wal::open(dir.path(), opts).unwrap();
        assert_eq!(
            (rec.next_seq, rec.skipped, rec.chain_ok),
            (next + 2, None, true)
        );
        assert!(wal.verify().is_err());
        // Once the readers have passed it, releasing the damaged segment leaves a log that verifies.
        wal.release_before(next).unwrap();
        assert_eq!(wal.verify().unwrap().records, 2);
    }
}

/// A crash after the damaged segment was cut and before the log continued in a new segment: the copy still
/// says which seqs were written.
#[test]
fn the_copy_keeps_the_lost_seqs_across_a_crash_during_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 1 << 20,
        ..small(true)
    };
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    let written = fill(&wal, 30);
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    let cut = offset_of(&written, 10);
    let mut damaged = fs::read(&seg).unwrap();
    damaged[cut as usize + 20] ^= 1;
    // What recovery had done when the crash came: the copy kept, the segment cut, no new segment yet.
    fs::write(seg.with_extension("seg.damaged-10"), &damaged).unwrap();
    fs::write(&seg, &damaged[..cut as usize]).unwrap();
    let (wal, rec) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!((rec.next_seq, rec.skipped), (31, Some(10..31)));
    assert_eq!(rec.quarantined, Some(seg.with_extension("seg.damaged-10")));
    assert!(wal.damage().is_some());
}

/// The floor the caller passes (the head of its newest signed checkpoint) is never gone back under.
#[test]
fn open_with_floor_continues_at_or_after_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small(true)).unwrap();
    let written = fill(&wal, 10);
    drop(wal);
    // A floor at or below the end changes nothing.
    for floor in [0, 5, 11] {
        let (wal, rec) = Wal::open_with_floor(dir.path(), small(true), floor).unwrap();
        assert_eq!((rec.next_seq, rec.skipped), (11, None), "floor {floor}");
        assert_eq!(wal.damage(), None);
    }
    // A checkpoint had covered up to seq 49: the log lost records 11 to 49 (restored from an old backup, say).
    let (wal, rec) = Wal::open_with_floor(dir.path(), small(true), 50).unwrap();
    assert_eq!((rec.next_seq, rec.skipped), (50, Some(11..50)));
    assert!(rec.quarantined.is_none());
    assert!(wal.damage().unwrap().contains("records 11 to 49 are lost"));
    assert_eq!(wal.next_seq(), 50);
    assert_eq!(wal.append(&[b"fifty"]).unwrap(), 50..51);
    let mut expect = written.clone();
    expect.push((50, b"fifty".to_vec()));
    assert_eq!(read_all(&wal, 0), expect);
    let msg = wal.verify().unwrap_err().to_string();
    assert!(msg.contains("records 11 to 49 were lost"), "{msg}");
    drop(wal);
    let (wal, rec) = Wal::open_with_floor(dir.path(), small(true), 50).unwrap();
    assert_eq!((rec.next_seq, rec.skipped), (51, None));
    assert_eq!(read_all(&wal, 0), expect);
}

/// A new log under a floor (Parquet files restored into a new data directory) starts there: nothing was lost.
#[test]
fn a_new_log_starts_at_the_floor_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, rec) = Wal::open_with_floor(dir.path(), small(true), 100).unwrap();
    assert_eq!((rec.next_seq, rec.skipped, rec.segments), (100, None, 1));
    assert_eq!(wal.damage(), None);
    assert_eq!(wal.cursor("new").unwrap().position(), 100);
    assert_eq!(wal.append(&[b"first"]).unwrap(), 100..101);
    assert_eq!(read_all(&wal, 0), vec![(100, b"first".to_vec())]);
    assert_eq!(wal.verify().unwrap().oldest_seq, 100);
    assert_eq!(
        segments(dir.path()),
        vec![dir.path().join("00000000000000000100.seg")]
    );
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
