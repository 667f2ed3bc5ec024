//! The workers of the consume loop: two workers read their partitions at the same time, each
//! message exactly once, and the service ends with the values, counts and dead letters of a
//! single worker over the same input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{
    Metrics, Service, Topics, assert_same, assert_same_output, brokers, consumed, end_offsets,
    eventually, generate, kpi_values, read_all, start_reference, wait,
};

/// Messages read by worker `index`; 0 until it has read one.
fn worker_messages(metrics: &Metrics, index: &str) -> f64 {
    metrics
        .get("kpi_worker_messages_total", &[("worker", index)])
        .unwrap_or_default()
}

/// The input counters, each message counted once: what was read, applied, rejected, late,
/// duplicate, and the raw inputs. The sum of the resolution times is left out: added in
/// another order, floating point may round it differently.
fn input_counts(metrics: &Metrics) -> BTreeMap<String, f64> {
    metrics
        .series
        .iter()
        .filter(|(k, _)| {
            k.starts_with("kpi_events_")
                || k.starts_with("kpi_survey_responses_total")
                || k.starts_with("kpi_ticket_resolution_seconds_bucket")
                || k.starts_with("kpi_ticket_resolution_seconds_count")
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_read_partitions_at_once_and_equal_one_worker() {
    let topics = Topics::create_with(&brokers(), "workers", [6, 6, 6], true).await;
    assert!(wait(generate(&topics, 200_000, 0, 31)).await.success());
    let messages = end_offsets(&topics.brokers, &topics.inputs());
    let two = [("KPI_STREAM_PROCESSING__WORKERS".to_owned(), "2".to_owned())];
    let mut env = topics.env();
    env.extend(two.iter().cloned());
    let service = Service::start(&env);
    eventually("/metrics", Duration::from_secs(30), async || {
        service.try_metrics().await
    })
    .await;

    // Scrape as fast as /metrics answers during the replay: both workers read messages
    // between the same two scrapes.
    let mut counts = Vec::new();
    let started = Instant::now();
    loop {
        let metrics = service.metrics().await;
        counts.push([
            worker_messages(&metrics, "0"),
            worker_messages(&metrics, "1"),
        ]);
        if metrics.get("kpi_ready", &[]) == Some(1.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not ready after 90 s"
        );
    }
    let at_once = counts
        .windows(2)
        .filter(|pair| (0..2).all(|w| pair[1][w] > pair[0][w]))
        .count();
    assert!(
        at_once > 0,
        "no two scrapes between which both workers read: {counts:?}"
    );

    // Every message read once, by one worker or the other.
    let metrics = service.metrics().await;
    let by_workers = worker_messages(&metrics, "0") + worker_messages(&metrics, "1");
    assert_eq!(by_workers, messages as f64);
    assert_eq!(consumed(&metrics), messages as f64);

    let one = [("KPI_STREAM_PROCESSING__WORKERS".to_owned(), "1".to_owned())];
    let (reference_topics, reference, want) = start_reference(&topics, &one).await;
    let single = reference.metrics().await;
    assert_eq!(worker_messages(&single, "0"), messages as f64);
    assert_eq!(
        single.get("kpi_worker_messages_total", &[("worker", "1")]),
        None
    );
    eventually(
        "the values of two workers to equal one worker's",
        Duration::from_secs(60),
        async || (kpi_values(&service.metrics().await) == want).then_some(()),
    )
    .await;
    assert_same(&input_counts(&metrics), &input_counts(&single));
    assert_same_output(&topics, &reference_topics).await;
    let dead_letters = read_all(&topics.deadletter).len();
    assert!(dead_letters > 1_000, "{dead_letters}");
    assert_eq!(dead_letters, read_all(&reference_topics.deadletter).len());
}
