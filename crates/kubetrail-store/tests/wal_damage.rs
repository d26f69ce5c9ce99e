//! Damage in the log's active segment under a signed checkpoint: recovery continues after the checkpoint's
//! head (the floor the collector passes), and `verify_store` fails naming the segment, the seqs lost and the
//! copy kept as evidence.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use kubetrail_store::integrity::{self, ProblemKind};
use kubetrail_store::{Signer, Wal, WalOptions, verify_store};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 1 << 20,
        budget_bytes: 1 << 30,
        fsync: false,
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("{{\"event\":{i},\"pad\":\"{}\"}}", "p".repeat(100)).into_bytes()
}

/// Where record `seq` starts in the first segment.
fn offset_of(seq: u64) -> u64 {
    52 + (1..seq).map(|i| payload(i).len() as u64 + 48).sum::<u64>()
}

fn segment(data: &Path) -> PathBuf {
    data.join("wal/00000000000000000001.seg")
}

#[test]
fn damage_under_a_checkpoint_continues_after_its_head_and_fails_verify() {
    for flipped in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let signer = Signer::from_seed([42; 32]);
        let (wal, _) = Wal::open(&data.join("wal"), opts()).unwrap();
        for i in 1..=40 {
            wal.append(&[&payload(i)]).unwrap();
        }
        integrity::write_checkpoint(&data, &signer, &wal, &[], &[]).unwrap();
        for i in 41..=50 {
            wal.append(&[&payload(i)]).unwrap();
        }
        drop(wal);
        let seg = segment(&data);
        let cut = offset_of(20);
        if flipped {
            // Intact records 21..50 follow the damage: seqs up to 50 were written.
            let mut bytes = fs::read(&seg).unwrap();
            bytes[cut as usize + 20] ^= 1;
            fs::write(&seg, bytes).unwrap();
        } else {
            // Nothing intact follows: only the checkpoint knows the log reached seq 40.
            OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(cut + 10)
                .unwrap();
        }

        let floor = integrity::latest_checkpoint_seq(&data).unwrap();
        assert_eq!(floor, Some(41));
        let (wal, rec) = Wal::open_with_floor(&data.join("wal"), opts(), floor.unwrap()).unwrap();
        let next = if flipped { 51 } else { 41 };
        assert_eq!(rec.skipped, Some(20..next), "flipped {flipped}");
        assert_eq!(wal.append(&[b"after"]).unwrap(), next..next + 1);
        drop(wal);

        let report = verify_store(&data, &signer.public_key()).unwrap();
        assert!(!report.is_intact());
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let p = &report.problems[0];
        assert_eq!(p.kind, ProblemKind::Damaged, "{p}");
        assert_eq!(p.item, "wal/00000000000000000001.seg", "{p}");
        assert_eq!(p.offset, Some(cut), "{p}");
        assert!(
            p.detail
                .contains(&format!("records 20 to {} were lost", next - 1)),
            "{p}"
        );
        assert!(
            p.detail
                .contains(&format!("continues at seq {next} in `wal/{next:020}.seg`")),
            "{p}"
        );
        if flipped {
            assert!(
                p.detail
                    .contains("kept at `wal/00000000000000000001.seg.damaged-20`"),
                "{p}"
            );
        } else {
            assert!(p.detail.contains("no copy"), "{p}");
        }
    }
}

#[test]
fn latest_checkpoint_seq_reads_only_checkpoint_names() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(integrity::latest_checkpoint_seq(tmp.path()).unwrap(), None);
    let dir = tmp.path().join("checkpoints");
    fs::create_dir_all(&dir).unwrap();
    for name in [
        "00000000000000000007-20261125T153805.123Z.json",
        "00000000000000000042-20261125T153806Z.json",
        // Not checkpoints: a temporary file, other kinds of positions, odd names.
        ".00000000000000000999-20261125T153807Z.json.tmp",
        "positions.json",
        "00000000000000000998-positions.json",
        "00000000000000000997-20261125T153807Z.txt",
        "0000000000000000996-20261125T153807Z.json",
        "00000000000000000995-.json",
        ".lock",
    ] {
        fs::write(dir.join(name), b"{}").unwrap();
    }
    assert_eq!(
        integrity::latest_checkpoint_seq(tmp.path()).unwrap(),
        Some(42)
    );
}
