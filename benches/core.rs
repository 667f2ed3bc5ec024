//! Micro-benchmarks of the per-event core path (bytes in, state updated) for each event
//! family, and of publishing 10,000 series as Prometheus text and as output-topic JSON.
//! Run with `cargo bench --bench core` (scripts/bench.sh runs them too).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kpi_core::aggregate::Aggregates;
use kpi_core::event::{Family, parse};
use kpi_core::partition::PartitionId;
use kpi_stream::config::Config;
use kpi_stream::generate::EventSource;
use kpi_stream::metrics::Metrics;

/// Events per measured batch; each batch starts from fresh state so that every event_id is
/// new to duplicate detection, as in production.
const BATCH: usize = 10_000;
const NOW: i64 = 1_767_225_600_000;

fn aggregates(config: &Config) -> Aggregates {
    Aggregates::new(config.state_settings().expect("the default configuration"))
}

/// `count` well-formed generated events of one family, in generation order.
fn events(config: &Config, family: Family, count: usize) -> Vec<Vec<u8>> {
    let mut source = EventSource::new(config);
    std::iter::repeat_with(|| source.next_event(NOW))
        .filter(|g| g.family == family)
        .take(count)
        .map(|g| g.payload)
        .collect()
}

fn per_event(c: &mut Criterion) {
    let mut config = Config::default();
    config.generate.malformed_ratio = 0.0;
    let limits = config.limits();
    let mut group = c.benchmark_group("parse_validate_aggregate");
    group.throughput(Throughput::Elements(BATCH as u64));
    for family in Family::ALL {
        // Billing events must be applied in order; each batch replays the same prefix.
        let batch = events(&config, family, BATCH);
        let partition = PartitionId::new(family, 0);
        group.bench_function(family.name(), |b| {
            b.iter_batched_ref(
                || aggregates(&config),
                |state| {
                    for bytes in &batch {
                        if let Ok(event) = parse(bytes, family, NOW, &limits) {
                            let _ = black_box(state.record(partition, &event, NOW));
                        }
                    }
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
    // The parse and validation alone, to tell the two halves of the path apart.
    let mut group = c.benchmark_group("parse_validate");
    group.throughput(Throughput::Elements(BATCH as u64));
    for family in Family::ALL {
        let batch = events(&config, family, BATCH);
        group.bench_function(family.name(), |b| {
            b.iter(|| {
                for bytes in &batch {
                    let _ = black_box(parse(bytes, family, NOW, &limits));
                }
            });
        });
    }
    group.finish();
}

fn publish(c: &mut Criterion) {
    let mut config = Config::default();
    config.generate.malformed_ratio = 0.0;
    config.generate.segments = (0..118).map(|i| format!("segment-{i}")).collect();
    config.dimensions.max_values = 1000;
    let mut state = aggregates(&config);
    let mut source = EventSource::new(&config);
    for _ in 0..50_000 {
        let g = source.next_event(NOW);
        if let Ok(event) = parse(&g.payload, g.family, NOW, &config.limits()) {
            let _ = state.record(PartitionId::new(g.family, 0), &event, NOW);
        }
    }
    let records = state.snapshot(NOW);
    let metrics = Metrics::new(
        &config.dimensions.names,
        ["surveys", "tickets", "billing"],
        "USD",
    )
    .expect("metrics");
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function(format!("snapshot_{}_series", records.len()), |b| {
        b.iter(|| black_box(state.snapshot(NOW)))
    });
    group.bench_function(format!("prometheus_text_{}_series", records.len()), |b| {
        b.iter(|| {
            metrics.update_kpis(&records);
            black_box(metrics.encode().expect("encode"))
        })
    });
    group.bench_function(format!("output_json_{}_series", records.len()), |b| {
        b.iter(|| {
            records
                .iter()
                .map(|r| r.to_json(NOW, "USD").to_string())
                .map(|s| s.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, per_event, publish);
criterion_main!(benches);
