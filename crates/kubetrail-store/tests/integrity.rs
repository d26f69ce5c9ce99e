//! Signed checkpoints and `verify_store` over a real data directory: a log of small segments, Parquet-like
//! files, and every way of damaging them that verify must name.

use std::fs;
use std::path::{Path, PathBuf};

use kubetrail_store::integrity::{self, Deletion, ProblemKind};
use kubetrail_store::{IntegrityReport, PublicKey, Signer, Wal, WalOptions, verify_store};
use proptest::prelude::*;

const SEED: [u8; 32] = [42; 32];

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        budget_bytes: 1 << 30,
        fsync: false,
    }
}

struct Store {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    wal: Wal,
    signer: Signer,
}

impl Store {
    /// A log of `records` records over several 4 KiB segments and two "Parquet" files, checkpointed once.
    fn new(records: u64) -> Store {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let (wal, _) = Wal::open(&data.join("wal"), opts()).unwrap();
        let s = Store {
            _tmp: tmp,
            data,
            wal,
            signer: Signer::from_seed(SEED),
        };
        s.append(records);
        for (i, name) in ["store/2026/11/25/00.parquet", "store/2026/11/25/01.parquet"]
            .iter()
            .enumerate()
        {
            let path = s.data.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, format!("PAR1 file {i} {}PAR1", "x".repeat(100 * i))).unwrap();
        }
        s.checkpoint(&[]);
        s
    }

    fn append(&self, n: u64) {
        for i in 0..n {
            let payload = format!("{{\"event\":{i},\"pad\":\"{}\"}}", "p".repeat(150));
            self.wal.append(&[payload.as_bytes()]).unwrap();
        }
    }

    fn checkpoint(&self, deletions: &[Deletion]) -> PathBuf {
        let files = integrity::parquet_files(&self.data).unwrap();
        integrity::write_checkpoint(&self.data, &self.signer, &self.wal, &files, deletions).unwrap()
    }

    fn verify(&self) -> IntegrityReport {
        verify_store(&self.data, &self.signer.public_key()).unwrap()
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.data.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    fn checkpoints(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.data.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        v.sort();
        v
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The first problem's kind and item; panics when the store is intact.
fn first(report: &IntegrityReport) -> (ProblemKind, String) {
    let p = report
        .first_problem()
        .unwrap_or_else(|| panic!("expected a problem, the store verified: {report:?}"));
    (p.kind, p.item.clone())
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn intact_store_verifies() {
    let s = Store::new(200);
    assert!(s.segments().len() >= 5, "want several segments");
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.checkpoints, 1);
    assert_eq!(r.records, 200);
    assert_eq!(r.files, 2);
    assert_eq!(r.records_after_checkpoint, 0);
    assert!(r.newest_checkpoint.is_some());
}

#[test]
fn records_after_the_checkpoint_verify_by_the_chain() {
    let s = Store::new(100);
    s.append(50);
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.records_after_checkpoint, 50);
    s.checkpoint(&[]);
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!((r.checkpoints, r.records_after_checkpoint), (2, 0));
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_damage_naming_it() {
    let s = Store::new(200);
    let seg = &s.segments()[2];
    flip(seg, 300);
    let r = s.verify();
    let p = r.first_problem().expect("damage found");
    assert_eq!(p.kind, ProblemKind::Damaged);
    assert_eq!(p.item, format!("wal/{}", name(seg)));
    assert!(p.offset.is_some_and(|o| o <= 300), "{p}");
}

#[test]
fn deleted_segment_is_missing() {
    let s = Store::new(200);
    let seg = s.segments()[1].clone();
    fs::remove_file(&seg).unwrap();
    assert_eq!(
        first(&s.verify()),
        (ProblemKind::Missing, format!("wal/{}", name(&seg)))
    );
}

#[test]
fn deleted_oldest_segment_without_a_record_is_missing() {
    let s = Store::new(200);
    let seg = s.segments()[0].clone();
    fs::remove_file(&seg).unwrap();
    assert_eq!(
        first(&s.verify()),
        (ProblemKind::Missing, format!("wal/{}", name(&seg)))
    );
}

#[test]
fn truncated_segment_is_truncated() {
    let s = Store::new(200);
    let seg = s.segments()[1].clone();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let r = s.verify();
    assert_eq!(
        first(&r),
        (ProblemKind::Truncated, format!("wal/{}", name(&seg)))
    );
}

#[test]
fn segments_cut_at_a_record_boundary_are_truncated() {
    // Whole records removed leave a well-formed segment: only the checkpoint's size and hash tell.
    let s = Store::new(200);
    let seg = s.segments()[1].clone();
    let bytes = fs::read(&seg).unwrap();
    // The first record after the 52-byte header: its length field says where it ends.
    let len = u32::from_le_bytes(bytes[52..56].try_into().unwrap()) as usize;
    fs::write(&seg, &bytes[..52 + 48 + len]).unwrap();
    assert_eq!(
        first(&s.verify()),
        (ProblemKind::Truncated, format!("wal/{}", name(&seg)))
    );
}

#[test]
fn swapped_segment_names_are_reordered() {
    let s = Store::new(200);
    let segs = s.segments();
    let (a, b) = (&segs[1], &segs[2]);
    let tmp = a.with_extension("swap");
    fs::rename(a, &tmp).unwrap();
    fs::rename(b, a).unwrap();
    fs::rename(&tmp, b).unwrap();
    let (kind, item) = first(&s.verify());
    assert!(
        matches!(kind, ProblemKind::Reordered | ProblemKind::Damaged),
        "{kind:?}"
    );
    assert_eq!(item, format!("wal/{}", name(a)));
}

#[test]
fn edited_checkpoint_has_a_bad_signature() {
    let s = Store::new(100);
    let cp = &s.checkpoints()[0];
    let text = fs::read_to_string(cp).unwrap();
    // Claim a smaller log: the edit a tamperer would make to hide deleted records.
    let edited = text.replacen("\"oldest_seq\":1,", "\"oldest_seq\":2,", 1);
    assert_ne!(edited, text);
    fs::write(cp, edited).unwrap();
    assert_eq!(
        first(&s.verify()),
        (
            ProblemKind::BadSignature,
            format!("checkpoints/{}", name(cp))
        )
    );
}

#[test]
fn checkpoint_signed_by_another_key_has_a_bad_signature() {
    let s = Store::new(50);
    let other = PublicKey::from_pem(&Signer::from_seed([1; 32]).public_key_pem()).unwrap();
    let r = verify_store(&s.data, &other).unwrap();
    assert_eq!(first(&r).0, ProblemKind::BadSignature);
}

#[test]
fn checkpoint_removed_from_the_middle_is_missing() {
    let s = Store::new(50);
    for _ in 0..3 {
        s.append(20);
        s.checkpoint(&[]);
    }
    let cps = s.checkpoints();
    assert_eq!(cps.len(), 4);
    fs::remove_file(&cps[2]).unwrap();
    let r = s.verify();
    let p = r.first_problem().expect("gap found");
    assert_eq!(p.kind, ProblemKind::Missing);
    assert!(p.item.starts_with("checkpoints"), "{p}");
    assert!(p.detail.contains("checkpoint 2"), "{p}");
}

#[test]
fn renamed_checkpoints_are_reordered() {
    let s = Store::new(50);
    s.append(20);
    s.checkpoint(&[]);
    let cps = s.checkpoints();
    let tmp = cps[0].with_extension("swap");
    fs::rename(&cps[0], &tmp).unwrap();
    fs::rename(&cps[1], &cps[0]).unwrap();
    fs::rename(&tmp, &cps[1]).unwrap();
    assert_eq!(first(&s.verify()).0, ProblemKind::Reordered);
}

#[test]
fn no_checkpoint_is_a_finding() {
    let s = Store::new(10);
    for cp in s.checkpoints() {
        fs::remove_file(cp).unwrap();
    }
    assert_eq!(
        first(&s.verify()),
        (ProblemKind::Missing, "checkpoints/".into())
    );
}

#[test]
fn recorded_retention_of_the_oldest_segments_still_verifies() {
    let s = Store::new(200);
    let segs = s.segments();
    // Release what comes before the third segment: record first, then delete.
    let third: u64 = name(&segs[2])[..20].parse().unwrap();
    let deletions = integrity::wal_retention(&s.data, third).unwrap();
    assert_eq!(deletions.len(), 2);
    s.checkpoint(&deletions);
    s.wal.release_before(third).unwrap();
    assert!(!segs[0].exists() && !segs[1].exists());
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.records, 200 - (third - 1));

    // Later checkpoints no longer list them; verify still accepts their absence.
    s.append(10);
    s.checkpoint(&[]);
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.deleted_by_retention, 2);
}

#[test]
fn retention_of_a_file_still_verifies_and_an_unrecorded_deletion_is_missing() {
    let s = Store::new(50);
    let files = integrity::parquet_files(&s.data).unwrap();
    s.checkpoint(&[Deletion::file_retention(&files[0])]);
    fs::remove_file(s.data.join(&files[0])).unwrap();
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.files, 1);

    fs::remove_file(s.data.join(&files[1])).unwrap();
    let r = s.verify();
    assert_eq!(
        first(&r),
        (
            ProblemKind::Missing,
            files[1].to_string_lossy().into_owned()
        )
    );
}

#[test]
fn damaged_and_truncated_files_are_named() {
    let s = Store::new(20);
    let files = integrity::parquet_files(&s.data).unwrap();
    let f = s.data.join(&files[1]);
    flip(&f, 7);
    assert_eq!(
        first(&s.verify()),
        (
            ProblemKind::Damaged,
            files[1].to_string_lossy().into_owned()
        )
    );
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() - 3]).unwrap();
    assert_eq!(first(&s.verify()).0, ProblemKind::Truncated);
}

#[test]
fn rewritten_records_with_valid_checksums_break_the_signed_head() {
    // A tamperer who rewrites the whole log consistently (checksums and chain recomputed from seq 1) still
    // cannot reproduce the signed chain head.
    let s = Store::new(60);
    let head_before = s.wal.chain_head();
    drop(s.wal);
    let wal_dir = s.data.join("wal");
    fs::remove_dir_all(&wal_dir).unwrap();
    let (wal, _) = Wal::open(&wal_dir, opts()).unwrap();
    for i in 0..60u64 {
        let payload = format!("{{\"event\":{i},\"pad\":\"{}\"}}", "q".repeat(150));
        wal.append(&[payload.as_bytes()]).unwrap();
    }
    assert_ne!(wal.chain_head(), head_before);
    let r = verify_store(&s.data, &s.signer.public_key()).unwrap();
    let (kind, item) = first(&r);
    assert_eq!(kind, ProblemKind::Damaged);
    assert!(item.starts_with("wal/"), "{item}");
}

#[test]
fn verify_modifies_nothing() {
    let s = Store::new(100);
    // A torn tail in the active segment: open would cut it, verify must leave it.
    let active = s.segments().pop().unwrap();
    let mut bytes = fs::read(&active).unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    fs::write(&active, &bytes).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = s
        .segments()
        .into_iter()
        .chain(s.checkpoints())
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problems);
    assert_eq!(r.torn_tail_bytes, 3);
    for (p, b) in before {
        assert_eq!(fs::read(&p).unwrap(), b, "{}", p.display());
    }
}

#[test]
fn signer_key_file_is_created_once_and_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("integrity.key");
    let a = Signer::load_or_create(&path, || Ok([9; 32])).unwrap();
    let b = Signer::load_or_create(&path, || panic!("the key exists")).unwrap();
    assert_eq!(a.public_key(), b.public_key());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fs::write(&path, b"short").unwrap();
    assert!(Signer::load(&path).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any single flipped byte in a sealed segment or a checkpoint file fails verify.
    #[test]
    fn any_flipped_byte_is_detected(target in 0usize..2, pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let s = Store::new(120);
        s.append(10);
        s.checkpoint(&[]);
        let segs = s.segments();
        let candidates: Vec<PathBuf> = if target == 0 {
            segs[..segs.len() - 1].to_vec()
        } else {
            s.checkpoints()
        };
        let sizes: Vec<usize> = candidates.iter().map(|p| fs::metadata(p).unwrap().len() as usize).collect();
        let total: usize = sizes.iter().sum();
        let mut at = pick.index(total);
        let mut i = 0;
        while at >= sizes[i] {
            at -= sizes[i];
            i += 1;
        }
        let mut bytes = fs::read(&candidates[i]).unwrap();
        bytes[at] ^= 1 << bit;
        fs::write(&candidates[i], bytes).unwrap();
        let r = s.verify();
        prop_assert!(!r.is_intact(), "flip at {} offset {at} went unnoticed", candidates[i].display());
        let p = r.first_problem().unwrap();
        prop_assert!(p.item.ends_with(&name(&candidates[i])), "first problem {p} does not name {}", name(&candidates[i]));
    }
}

/// Checkpoints after the first list only the files added since the one before, yet state the whole listing:
/// a year of hourly files does not make every checkpoint megabytes, and what a delta listed is still
/// carried (a file it added, deleted without a record, is missing).
#[test]
fn checkpoints_list_added_files_and_add_up() {
    let s = Store::new(50);
    let add = |hour: usize| {
        let path = s.data.join(format!("store/2026/11/26/{hour:02}.parquet"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("PAR1 hour {hour} PAR1")).unwrap();
    };
    let read = |p: &Path| {
        integrity::read_checkpoint(&fs::read(p).unwrap(), &s.signer.public_key()).unwrap()
    };
    let first = read(&s.checkpoints()[0]);
    assert!(first.files_full);
    assert_eq!((first.files.len(), first.files_count), (2, 2));

    let mut sizes = Vec::new();
    for round in 0..3 {
        for h in 0..5 {
            add(round * 5 + h);
        }
        s.append(5);
        let cp = read(&s.checkpoint(&[]));
        assert!(!cp.files_full);
        assert_eq!(cp.files.len(), 5, "only the five new files");
        assert_eq!(cp.files_count, 2 + 5 * (round as u64 + 1));
        sizes.push(fs::metadata(s.checkpoints().last().unwrap()).unwrap().len());
    }
    // Nothing new: nothing listed, the count stands.
    let cp = read(&s.checkpoint(&[]));
    assert!(cp.files.is_empty());
    assert_eq!(cp.files_count, 17);
    let report = s.verify();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.files, 17);

    // A recorded deletion leaves the listing; an unrecorded one of a file only a delta listed is missing.
    let gone = PathBuf::from("store/2026/11/26/03.parquet");
    s.checkpoint(&[Deletion::file_retention(&gone)]);
    fs::remove_file(s.data.join(&gone)).unwrap();
    let cp = read(s.checkpoints().last().unwrap());
    assert_eq!(cp.files_count, 16);
    assert!(s.verify().is_intact());
    let victim = "store/2026/11/26/07.parquet";
    fs::remove_file(s.data.join(victim)).unwrap();
    assert_eq!(
        first_problem(&s),
        (ProblemKind::Missing, victim.to_string())
    );
    // Later checkpoints keep carrying it.
    s.checkpoint(&[]);
    assert_eq!(
        first_problem(&s),
        (ProblemKind::Missing, victim.to_string())
    );
}

fn first_problem(s: &Store) -> (ProblemKind, String) {
    first(&s.verify())
}

/// Every `FULL_LISTING_EVERY`th checkpoint lists every file again; the chain verifies across it.
#[test]
fn a_full_listing_comes_back_every_day_of_checkpoints() {
    let s = Store::new(10);
    let n = integrity::FULL_LISTING_EVERY + 2;
    for i in 1..n {
        if i % 20 == 0 {
            let path = s.data.join(format!("store/2026/11/27/{i:03}.parquet"));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, format!("PAR1 {i} PAR1")).unwrap();
        }
        s.append(1);
        s.checkpoint(&[]);
    }
    let cps = s.checkpoints();
    assert_eq!(cps.len() as u64, n);
    let key = s.signer.public_key();
    let read = |i: usize| integrity::read_checkpoint(&fs::read(&cps[i]).unwrap(), &key).unwrap();
    let full = read(integrity::FULL_LISTING_EVERY as usize);
    assert!(full.files_full);
    assert_eq!(full.files.len() as u64, full.files_count);
    assert_eq!(full.files_count, 2 + 7);
    let after = read(integrity::FULL_LISTING_EVERY as usize + 1);
    assert!(!after.files_full && after.files.is_empty());
    // As a new process would: the listing read back from the checkpoints, across the full one.
    integrity::forget_remembered_listing();
    let path = s.data.join("store/2026/11/28/00.parquet");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, "PAR1 late PAR1").unwrap();
    s.append(1);
    let last = integrity::read_checkpoint(&fs::read(s.checkpoint(&[])).unwrap(), &key).unwrap();
    assert_eq!((last.files.len(), last.files_count), (1, 10));
    let report = s.verify();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.files, 10);
}
