//! Micro-benchmarks of the per-event core path (bytes in, state updated) for each event
//! family, of publishing 10,000 series as Prometheus text and as output-topic JSON, and of
//! counting a partition's open tickets into the backlog at a snapshot.
//! Run with `cargo bench --bench core` (scripts/bench.sh runs them too).

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kpi_core::aggregate::Aggregates;
use kpi_core::event::{Event, Family, Payload, Priority, parse};
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

/// Open tickets on one partition for the backlog benchmark.
const OPEN_TICKETS: usize = 100_000;

/// A tickets partition's components with [`OPEN_TICKETS`] open tickets, opened over the last
/// ten days: the backlog walks each once.
fn backlog(c: &mut Criterion) {
    let config = Config::default();
    let mut state = aggregates(&config);
    let partition = PartitionId::new(Family::Tickets, 0);
    let step_ms = 10 * 86_400_000 / OPEN_TICKETS as i64;
    for i in 0..OPEN_TICKETS {
        let id = format!("t{i}");
        let at = NOW - 10 * 86_400_000 + i as i64 * step_ms;
        let event = Event {
            event_id: Cow::Borrowed(&id),
            occurred_at_ms: at,
            customer_id: Cow::Borrowed("c"),
            dimensions: [None, None, None, None],
            payload: Payload::TicketOpened {
                ticket_id: Cow::Borrowed(&id),
                priority: Some(Priority::ALL[i % Priority::ALL.len()]),
            },
            reference_ms: at,
        };
        let _ = state.record(partition, &event, NOW);
    }
    let mut group = c.benchmark_group("backlog");
    group.throughput(Throughput::Elements(OPEN_TICKETS as u64));
    group.bench_function(format!("components_{OPEN_TICKETS}_open_tickets"), |b| {
        b.iter(|| black_box(state.components(partition, NOW)))
    });
    group.finish();
}

criterion_group!(benches, per_event, publish, backlog);
criterion_main!(benches);
