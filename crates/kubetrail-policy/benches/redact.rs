//! Redaction cost per core on generated traffic (`cargo bench -p kubetrail-policy --bench redact`).
//!
//! What the collector (`import`, the webhook) does per event: a typed, borrowed parse, the policy's
//! evaluation, and [`Redactor::redact`]. The budget is redaction at most 5% of parse + evaluate, so the
//! groups measure parse + evaluate with and without it, and redaction alone on events parsed beforehand.
//!
//! `KUBETRAIL_BENCH_EVENTS=<file>` (JSON lines, one audit event a line) adds the same measurements on that
//! file, e.g. real audit logs; lines that are not events are skipped.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubetrail_gen::{Config, Generator};
use kubetrail_model::Event;
use kubetrail_policy::{GenerateOptions, Policy, RedactionKey, Redactor, generate, load};

const EVENTS: usize = 20_000;

fn generated() -> Vec<String> {
    Generator::new(Config {
        attacks: true,
        ..Config::default()
    })
    .take(EVENTS)
    .collect()
}

fn from_file() -> Option<(String, Vec<String>)> {
    let path = std::env::var("KUBETRAIL_BENCH_EVENTS").ok()?;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines = text
        .lines()
        .filter(|l| Event::parse(l).is_ok())
        .map(str::to_owned)
        .collect();
    Some((path, lines))
}

fn group(c: &mut Criterion, name: &str, lines: &[String], policy: &Policy, redactor: &Redactor) {
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::parse(l).expect("parses"))
        .collect();
    let modified = events
        .iter()
        .zip(lines)
        .filter(|(e, l)| redactor.redact(e, l).0.is_modified())
        .count();
    eprintln!(
        "{name}: {} events, {bytes} bytes, {:.0} bytes/event, {modified} modified by redaction",
        lines.len(),
        bytes as f64 / lines.len() as f64,
    );

    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_evaluate", |b| {
        b.iter(|| {
            let mut kept = 0u32;
            for l in lines {
                let ev = Event::parse(l).expect("parses");
                kept += policy.evaluate(&ev.attributes()).keeps(ev.stage) as u32;
            }
            black_box(kept)
        })
    });
    g.bench_function("parse_evaluate_redact", |b| {
        b.iter(|| {
            let mut kept = 0usize;
            for l in lines {
                let ev = Event::parse(l).expect("parses");
                kept += policy.evaluate(&ev.attributes()).keeps(ev.stage) as usize;
                let (out, counts) = redactor.redact(&ev, l);
                kept += out.as_str().len() + counts.total() as usize;
            }
            black_box(kept)
        })
    });
    g.bench_function("redact", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (ev, l) in events.iter().zip(lines) {
                let (out, counts) = redactor.redact(ev, l);
                n += out.as_str().len() + counts.total() as usize;
            }
            black_box(n)
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let policy = load(&generate(&GenerateOptions::default()))
        .policy
        .expect("the generated policy loads");
    let redactor = Redactor::new(RedactionKey::from_bytes([7; 32]));
    group(c, "generated", &generated(), &policy, &redactor);
    if let Some((path, lines)) = from_file() {
        eprintln!("events from {path}");
        group(c, "file", &lines, &policy, &redactor);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
