//! A real full disk: the test runs itself again inside a user and mount namespace (`unshare`) over a 1 MiB
//! tmpfs, fills it, and checks that the log refuses appends while nothing can be written and heals by itself
//! once space is freed. Skipped, saying why, where namespaces are not allowed; `wal.rs`'s unit tests cover the
//! same paths with injected failures everywhere.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use kubetrail_store::{Wal, WalError, WalOptions};

const TEST: &str = "enospc_on_a_real_full_filesystem_heals_once_space_is_freed";
const INNER: &str = "KUBETRAIL_TEST_ENOSPC_DIR";

#[test]
fn enospc_on_a_real_full_filesystem_heals_once_space_is_freed() {
    if let Some(dir) = std::env::var_os(INNER) {
        return inner(Path::new(&dir));
    }
    let mnt = tempfile::tempdir().unwrap();
    let mount = "mount -t tmpfs -o size=1m kubetrail-enospc \"$0\"";
    let unshare = |script: &str| {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
            .arg(mnt.path());
        c
    };
    match unshare(mount).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: cannot mount a tmpfs in a user namespace here ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run `unshare`: {e}");
            return;
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = unshare(&format!(
        "{mount} && exec \"$1\" {TEST} --exact --nocapture --test-threads=1"
    ))
    .arg(exe)
    .env(INNER, mnt.path())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the test on a full tmpfs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

fn inner(root: &Path) {
    let ballast = root.join("ballast");
    let record = [b'r'; 300];

    // A write meets the full disk.
    let opts = WalOptions {
        segment_bytes: 64 << 10,
        budget_bytes: 1 << 30,
        fsync: true,
    };
    let dir = root.join("wal");
    let (wal, _) = Wal::open(&dir, opts).unwrap();
    fill(&ballast);
    let mut acked = Vec::new();
    let err = loop {
        match wal.append(&[&record]) {
            Ok(seqs) => acked.push(seqs.start),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the disk never filled");
    };
    assert_full(&err);
    let why = wal.healthy().unwrap_err();
    assert!(why.contains("No space left on device"), "{why}");
    for _ in 0..3 {
        // Healing needs a new segment, which does not fit: refused each time, nothing left behind.
        assert_full(&wal.append(&[&record]).unwrap_err());
        assert_full(&wal.heal().unwrap_err());
        assert!(wal.healthy().is_err());
        assert_no_tmp(&dir);
    }
    assert_eq!(seqs(&wal), acked);
    fs::remove_file(&ballast).unwrap();
    let after = wal.append(&[b"after"]).unwrap();
    assert_eq!(after.start, acked.len() as u64 + 1);
    wal.healthy().unwrap();
    acked.push(after.start);
    assert_eq!(seqs(&wal), acked);
    wal.verify().unwrap();
    drop(wal);
    let (wal, rec) = Wal::open(&dir, opts).unwrap();
    assert_eq!(rec.torn_bytes_cut, 0);
    assert_eq!(seqs(&wal), acked);
    drop(wal);

    // A new segment meets it: records still fit in the active segment's last page, a new file does not.
    let opts = WalOptions {
        segment_bytes: 2048,
        ..opts
    };
    let dir = root.join("wal2");
    let (wal, _) = Wal::open(&dir, opts).unwrap();
    fill(&ballast);
    let mut acked = Vec::new();
    let err = loop {
        match wal.append(&[&record[..100]]) {
            Ok(seqs) => acked.push(seqs.start),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the disk never filled");
    };
    assert_full(&err);
    let WalError::Io { path, .. } = &err else {
        unreachable!()
    };
    assert!(path.to_string_lossy().ends_with(".seg.tmp"), "{err}");
    assert!(wal.healthy().is_err());
    assert_no_tmp(&dir);
    assert_eq!(wal.usage().segments, 1);
    assert_eq!(seqs(&wal), acked);
    fs::remove_file(&ballast).unwrap();
    wal.heal().unwrap();
    wal.healthy().unwrap();
    acked.push(wal.append(&[b"after"]).unwrap().start);
    assert_eq!(seqs(&wal), acked);
    assert_eq!(*acked.last().unwrap(), acked.len() as u64);
    wal.verify().unwrap();
    drop(wal);
    let (wal, _) = Wal::open(&dir, opts).unwrap();
    assert_eq!(seqs(&wal), acked);
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = File::create(path).unwrap();
    let chunk = [0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
            Err(e) => panic!("{e}"),
        }
    }
}

fn assert_full(e: &WalError) {
    match e {
        WalError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {}
        other => panic!("expected a full disk, got: {other}"),
    }
}

fn assert_no_tmp(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?} left");
    }
}

fn seqs(wal: &Wal) -> Vec<u64> {
    wal.read_from(0).unwrap().map(|r| r.unwrap().0).collect()
}
