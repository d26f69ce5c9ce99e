//! Detection throughput per core on generated traffic (`cargo bench -p kubetrail-detect`).
//!
//! The rule sets: SigmaHQ's 16 Kubernetes audit rules; those plus a pack of 30 rules and 3 correlations
//! shaped like the built-in one (`tests/fixtures/pack/`); and the built-in pack itself (`kubetrail-rules`).
//! Each iteration feeds every event through `Engine::process`: one extraction pass, enrichment, every rule,
//! de-duplication, grouping, correlation and the controller-made pods' workload memory.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubetrail_detect::{Config, Engine, RuleSet};
use kubetrail_gen::{Config as GenConfig, Generator};

const EVENTS: usize = 20_000;

fn rules(with_pack: bool) -> RuleSet {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut set = RuleSet::new();
    let mut files: Vec<_> = std::fs::read_dir(format!("{dir}/sigma"))
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    if with_pack {
        files.push(format!("{dir}/pack/pack.yml").into());
        files.push(format!("{dir}/pack/correlations.yml").into());
    }
    for p in files {
        let src = std::fs::read_to_string(&p).expect("rule file");
        set.add_file(&p.display().to_string(), &src)
            .expect("rules load");
    }
    set
}

fn bench(c: &mut Criterion) {
    let lines: Vec<String> = Generator::new(GenConfig {
        attacks: true,
        stages: true,
        ..GenConfig::default()
    })
    .take(EVENTS)
    .collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "{} events, {:.0} bytes/event",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let mut builtin = RuleSet::new();
    for f in kubetrail_rules::builtin() {
        builtin
            .add_file(f.name, f.yaml)
            .expect("the built-in pack loads");
    }
    for (name, set) in [
        ("sigmahq_16", rules(false)),
        ("sigmahq_16_pack_30_corr_3", rules(true)),
        ("builtin_pack", builtin),
    ] {
        let n = set.rules().count() + set.correlations().count();
        let engine = Engine::new(&set, Config::default()).expect("rules link");
        // How many alerts one pass raises, to show the work is real.
        let mut e = engine.clone();
        let mut out = Vec::new();
        for l in &lines {
            e.process(l, &mut out).expect("generated events are JSON");
        }
        e.flush(&mut out);
        eprintln!("{name}: {n} rules, {} alerts, {:?}", out.len(), e.stats());
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut e = engine.clone();
                let mut out = Vec::new();
                for l in &lines {
                    e.process(l, &mut out).expect("JSON");
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
