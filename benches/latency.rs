//! End-to-end latency: the delay from an event's produce time to the moment its effect is
//! visible on the output topic and in /metrics, while other traffic flows. Run by
//! scripts/bench.sh against the local broker and a running service:
//!
//!   LATENCY_BROKERS=127.0.0.1:9092 LATENCY_SURVEYS=<topic> LATENCY_OUTPUT=<topic> \
//!   LATENCY_METRICS=http://127.0.0.1:9470/metrics LATENCY_PROBES=60 cargo bench --bench latency
//!
//! Each probe is one NPS answer in a segment of its own; the probe is seen when the output
//! topic (or /metrics) reports one more response for that segment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const SEGMENT: &str = "latency-probe";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Responses of the probe segment in the 1h window, from the output topic.
fn samples_in(payload: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v["samples"].as_u64()
}

async fn metrics_samples(url: &str) -> Option<u64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let prefix = format!("kpi_nps_responses{{segment=\"{SEGMENT}\",window=\"1h\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benchmark binaries without `--bench`: this one needs a
    // running service and broker, which scripts/bench.sh provides.
    if !std::env::args().any(|a| a == "--bench") {
        println!("latency: needs a running service; run it through scripts/bench.sh");
        return;
    }
    let brokers = var("LATENCY_BROKERS");
    let surveys = var("LATENCY_SURVEYS");
    let output = var("LATENCY_OUTPUT");
    let metrics_url = var("LATENCY_METRICS");
    let probes: u64 = std::env::var("LATENCY_PROBES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("latency-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&output, 0, Offset::End)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let key = format!("nps/1h/segment={SEGMENT}");
    // A thread of its own polls the output topic, so that the other series published in the
    // same interval never delay the probe's; a consumer error is an event, not the end.
    let topic_samples = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let (seen, reading) = (topic_samples.clone(), received.clone());
    std::thread::spawn(move || {
        loop {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            reading.fetch_add(1, Ordering::Relaxed);
            if m.key() == Some(key.as_bytes())
                && let Some(samples) = m.payload().and_then(samples_in)
            {
                seen.fetch_max(samples, Ordering::Relaxed);
            }
        }
    });

    // The consumer starts at the end of the topic once it has looked the end up, which takes
    // a moment; a probe published before that would be missed. The service publishes
    // changed values every interval under the generator's load, so a first message shows
    // that the consumer is in place.
    let ready_by = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < ready_by,
            "nothing read from the output topic within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut to_topic = Vec::new();
    let mut to_metrics = Vec::new();
    for i in 1..=probes {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        let event = serde_json::json!({
            "event_id": format!("latency-{}-{i}", std::process::id()),
            "type": "survey.responded",
            "occurred_at": kpi_core::kpi::rfc3339(now_ms),
            "customer_id": "latency", "segment": SEGMENT, "survey": "nps", "score": 10,
        })
        .to_string();
        let sent = Instant::now();
        producer
            .send(
                FutureRecord::to(&surveys).key("latency").payload(&event),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        let (mut topic_seen, mut metrics_seen) = (None, None);
        let deadline = sent + Duration::from_secs(60);
        while (topic_seen.is_none() || metrics_seen.is_none()) && Instant::now() < deadline {
            if topic_seen.is_none() && topic_samples.load(Ordering::Relaxed) >= i {
                topic_seen = Some(sent.elapsed());
            }
            if metrics_seen.is_none() && metrics_samples(&metrics_url).await >= Some(i) {
                metrics_seen = Some(sent.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (Some(topic), Some(metrics)) = (topic_seen, metrics_seen) else {
            panic!(
                "probe {i} not seen within 60 s: on the output topic {topic_seen:?} (samples {}), \
                 in /metrics {metrics_seen:?} (samples {:?})",
                topic_samples.load(Ordering::Relaxed),
                metrics_samples(&metrics_url).await
            );
        };
        to_topic.push(topic.as_secs_f64() * 1000.0);
        to_metrics.push(metrics.as_secs_f64() * 1000.0);
    }
    for v in [&mut to_topic, &mut to_metrics] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "{{\"probes\": {probes}, \"output_topic_ms\": {{\"p50\": {:.0}, \"p99\": {:.0}}}, \"metrics_ms\": {{\"p50\": {:.0}, \"p99\": {:.0}}}}}",
        percentile(&to_topic, 0.5),
        percentile(&to_topic, 0.99),
        percentile(&to_metrics, 0.5),
        percentile(&to_metrics, 0.99),
    );
}
