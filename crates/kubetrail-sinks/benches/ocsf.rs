//! OCSF conversion throughput per core (`cargo bench -p kubetrail-sinks`): a batch of generated audit events
//! (attacks on) mapped to OCSF API Activity and written as zstd Parquet, as the S3 archive does per batch with
//! `ocsf:` set.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubetrail_gen::{Config as GenConfig, Generator};
use kubetrail_sinks::Record;
use kubetrail_sinks::ocsf::{LakeSource, to_parquet};

/// One archive batch at the default flush (5,000 events).
const EVENTS: usize = 5_000;

fn bench(c: &mut Criterion) {
    let lines: Vec<String> = Generator::new(GenConfig {
        attacks: true,
        ..GenConfig::default()
    })
    .take(EVENTS)
    .collect();
    let ids: Vec<String> = (0..lines.len()).map(|i| format!("id-{i}")).collect();
    let records: Vec<Record<'_>> = lines
        .iter()
        .zip(&ids)
        .map(|(event, id)| Record {
            id,
            cluster: "prod",
            received_us: 1_767_225_600_000_000,
            event,
        })
        .collect();
    let src = LakeSource {
        source_name: "kubetrail".into(),
        region: "eu-west-1".into(),
        account_id: "123456789012".into(),
    };
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let out = to_parquet(&records, &src).expect("generated events map");
    eprintln!(
        "{} events, {:.0} JSON bytes/event, {:.0} OCSF Parquet bytes/event",
        lines.len(),
        bytes as f64 / lines.len() as f64,
        out.len() as f64 / lines.len() as f64
    );
    let mut g = c.benchmark_group("ocsf");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("to_parquet_5000", |b| {
        b.iter(|| black_box(to_parquet(black_box(&records), &src).expect("maps")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
