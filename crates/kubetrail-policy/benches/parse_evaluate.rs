//! Parse + evaluate throughput per core on generated traffic (`cargo bench -p kubetrail-policy`).
//!
//! Measures what the collector and `policy simulate` do per event: a typed, borrowed parse of the event JSON
//! and the evaluation of the recommended policy against its request attributes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubetrail_gen::{Config, Generator};
use kubetrail_model::Event;
use kubetrail_policy::{GenerateOptions, generate, load};

const EVENTS: usize = 20_000;

fn traffic() -> Vec<String> {
    Generator::new(Config {
        attacks: true,
        ..Config::default()
    })
    .take(EVENTS)
    .collect()
}

fn bench(c: &mut Criterion) {
    let lines = traffic();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let policy = load(&generate(&GenerateOptions::default()))
        .policy
        .expect("the generated policy loads");
    eprintln!(
        "{} events, {} bytes, {:.0} bytes/event",
        lines.len(),
        bytes,
        bytes as f64 / lines.len() as f64
    );

    let mut g = c.benchmark_group("per_core");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(Event::parse(l).expect("generated events parse"));
            }
        })
    });
    g.bench_function("parse_evaluate", |b| {
        b.iter(|| {
            let mut kept = 0u32;
            for l in &lines {
                let ev = Event::parse(l).expect("generated events parse");
                kept += policy.evaluate(&ev.attributes()).keeps(ev.stage) as u32;
            }
            black_box(kept)
        })
    });
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::parse(l).expect("parses"))
        .collect();
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("evaluate", |b| {
        b.iter(|| {
            let mut kept = 0u32;
            for ev in &events {
                kept += policy.evaluate(&ev.attributes()).keeps(ev.stage) as u32;
            }
            black_box(kept)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
