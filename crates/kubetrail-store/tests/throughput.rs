//! Append throughput with fsync on, for the numbers in the crate's report. Not a test: run it with
//! `cargo test -p kubetrail-store --release --test throughput -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use kubetrail_store::{Wal, WalOptions};

const RECORD: usize = 1500;

fn run(name: &str, threads: usize, batch: usize, batches_per_thread: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let wal = Arc::new(wal);
    let payload: Vec<u8> = (0..RECORD).map(|i| b'a' + (i % 26) as u8).collect();
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let wal = Arc::clone(&wal);
            let payload = payload.clone();
            std::thread::spawn(move || {
                let refs: Vec<&[u8]> = vec![payload.as_slice(); batch];
                for _ in 0..batches_per_thread {
                    wal.append(&refs).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let records = (threads * batch * batches_per_thread) as f64;
    println!(
        "{name:<38} {threads} threads x batch {batch:>4}: {:>9.0} records/s {:>7.1} MB/s, {:>6.1} records per fsync ({records} records in {secs:.2}s)",
        records / secs,
        records * RECORD as f64 / secs / 1e6,
        records / wal.fsyncs() as f64,
    );
    assert_eq!(wal.verify().unwrap().records, records as u64);
}

#[test]
#[ignore = "a measurement, not a test"]
fn append_throughput_with_fsync() {
    run("one writer, fsync per record", 1, 1, 2_000);
    run("group commit, 1 record per append", 8, 1, 2_000);
    run("group commit, 16 records per append", 8, 16, 1_000);
    run("group commit, 100 records per append", 8, 100, 250);
    run("one writer, 1000 records per append", 1, 1000, 200);
}
