//! The pipeline's CPU cost per event on generated traffic (`cargo bench -p kubetrail-pipeline`): what
//! `import` and the webhook do between received bytes and the log, with the log's fsync off so the disk does not
//! hide it: decode, filter, cut, redact, the dedup digest and window, encode, append and hash.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubetrail_gen::{Config, Generator};
use kubetrail_pipeline::{Pipeline, PipelineConfig};
use kubetrail_policy::{RedactionKey, Redactor};
use kubetrail_store::{Wal, WalOptions};

const EVENTS: usize = 20_000;
/// Events per body, as kube-apiserver's webhook batches them.
const BATCH: usize = 400;

fn bench(c: &mut Criterion) {
    let lines: Vec<String> = Generator::new(Config {
        attacks: true,
        ..Config::default()
    })
    .take(EVENTS)
    .collect();
    let bodies: Vec<String> = lines.chunks(BATCH).map(|c| c.join("\n")).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "{EVENTS} events, {:.0} bytes/event",
        bytes as f64 / EVENTS as f64
    );

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    g.bench_function("ingest_body", |b| {
        b.iter_with_setup(
            || {
                let dir = tempfile::tempdir().unwrap();
                let opts = WalOptions {
                    fsync: false,
                    ..WalOptions::default()
                };
                let (wal, _) = Wal::open(dir.path(), opts).unwrap();
                let pipeline = Pipeline::new(
                    Arc::new(wal),
                    Redactor::new(RedactionKey::from_bytes([7; 32])),
                    PipelineConfig::default(),
                )
                .unwrap();
                (dir, pipeline)
            },
            |(dir, pipeline)| {
                for body in &bodies {
                    black_box(pipeline.ingest_body(body.as_bytes(), "import", 1).unwrap());
                }
                drop(pipeline);
                drop(dir);
            },
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
