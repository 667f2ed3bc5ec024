//! The Kafka adapter that shares KPI components between the instances of one consumer group,
//! so that every instance can compute the global values (docs/scaling.md).
//!
//! Each instance writes the [`PartitionComponents`] of every input partition it has caught
//! up on to the compacted components topic, keyed by group, topic and partition, with the
//! time they were computed as the message timestamp: when they change, and at least every
//! heartbeat. Each instance also reads that topic whole, assigned rather than subscribed
//! (every instance needs every partition's components), into a [`ReceivedComponents`], and learns the
//! partition count of each input topic from the cluster's metadata, so that it can tell a
//! complete set of components from a partial one.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::kafka::{
    LoggedErrors, Producer, Reader, components_consumer_config, components_producer_settings,
    producer,
};
use crate::metrics::Metrics;

use kpi_core::components::{PartitionComponents, ReceivedComponents, Stamped};
use kpi_core::event::Family;
use kpi_core::partition::PartitionId;

/// How often the partition counts of the input and components topics are read again.
const METADATA_REFRESH: Duration = Duration::from_secs(10);

/// The longest a poll waits for a message, and so for a shutdown to be noticed.
const POLL: Duration = Duration::from_millis(100);

/// A components message as written.
#[derive(Serialize)]
struct Outgoing<'a> {
    group: &'a str,
    topic: &'a str,
    partition: i32,
    components: &'a PartitionComponents,
}

/// A components message as read.
#[derive(Deserialize)]
struct Incoming {
    group: String,
    topic: String,
    partition: i32,
    components: PartitionComponents,
}

/// What was last written for one partition.
struct Sent {
    hash: u64,
    at_ms: i64,
}

/// Writes this instance's components; owned by the consume loop.
pub struct ComponentsWriter {
    config: Arc<Config>,
    producer: Producer,
    metrics: Arc<Metrics>,
    heartbeat_ms: i64,
    sent: HashMap<PartitionId, Sent>,
    /// Partitions whose last message the broker did not acknowledge: written again next time.
    failed: Arc<Mutex<Vec<PartitionId>>>,
}

impl ComponentsWriter {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let producer = producer(&config, &components_producer_settings())?;
        Ok(ComponentsWriter {
            heartbeat_ms: config.publish.snapshot_interval.as_millis() as i64,
            config,
            producer,
            metrics,
            sent: HashMap::new(),
            failed: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Writes the components that changed since last written, or that were last written a
    /// heartbeat ago, stamped `now_ms`.
    pub fn write(&mut self, local: &HashMap<PartitionId, PartitionComponents>, now_ms: i64) {
        if let Ok(mut failed) = self.failed.lock() {
            for partition in failed.drain(..) {
                self.sent.remove(&partition);
            }
        }
        self.sent
            .retain(|partition, _| local.contains_key(partition));
        let mut deliveries = Vec::new();
        for (partition, components) in local {
            let topic = self.config.topic(partition.family);
            let message = Outgoing {
                group: &self.config.kafka.group_id,
                topic,
                partition: partition.partition,
                components,
            };
            let payload = match serde_json::to_vec(&message) {
                Ok(payload) => payload,
                Err(e) => {
                    warn!(error = %e, "could not encode components");
                    continue;
                }
            };
            let mut hasher = DefaultHasher::new();
            payload.hash(&mut hasher);
            let hash = hasher.finish();
            let due = self
                .sent
                .get(partition)
                .is_none_or(|s| s.hash != hash || now_ms - s.at_ms >= self.heartbeat_ms);
            if !due {
                continue;
            }
            let key = format!(
                "{}/{topic}/{}",
                self.config.kafka.group_id, partition.partition
            );
            let record = FutureRecord::to(&self.config.topics.components)
                .key(&key)
                .payload(&payload)
                .timestamp(now_ms);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push((*partition, delivery));
                    self.sent.insert(
                        *partition,
                        Sent {
                            hash,
                            at_ms: now_ms,
                        },
                    );
                }
                Err((e, _)) => {
                    self.metrics.components_failures.inc();
                    warn!(error = %e, "could not queue components");
                }
            }
        }
        if deliveries.is_empty() {
            return;
        }
        let metrics = self.metrics.clone();
        let failed = self.failed.clone();
        tokio::spawn(async move {
            for (partition, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => metrics.components_sent.inc(),
                    _ => {
                        metrics.components_failures.inc();
                        if let Ok(mut failed) = failed.lock() {
                            failed.push(partition);
                        }
                    }
                }
            }
        });
    }
}

/// Reads the components topic into `received`, and the input topics' partition counts, until
/// `shutdown` is cancelled. Blocking: it runs on a thread of its own, so that its metadata
/// calls, which wait for their timeout while no broker answers, hold up neither the runtime
/// nor a shutdown (the caller does not wait for it long).
pub fn read_components(
    config: Arc<Config>,
    received: Arc<Mutex<ReceivedComponents>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer: Reader = components_consumer_config(&config)
        .create_with_context(LoggedErrors::default())
        .context("creating the components consumer")?;
    let timeout = Duration::from_millis(u64::from(config.kafka.request_timeout_ms));
    let mut assigned = 0;
    let mut warned = false;
    let mut next_refresh = Instant::now();
    while !shutdown.is_cancelled() {
        if Instant::now() >= next_refresh {
            next_refresh = Instant::now() + METADATA_REFRESH;
            let count = |topic: &str| {
                (!shutdown.is_cancelled())
                    .then(|| partition_count(&consumer, topic, timeout))
                    .flatten()
            };
            let inputs = Family::ALL.map(|f| count(config.topic(f)));
            if let Ok(mut received) = received.lock() {
                for (family, count) in Family::ALL.iter().zip(inputs) {
                    if let Some(count) = count {
                        received.set_partitions(*family, count);
                    }
                }
            }
            let components = count(&config.topics.components);
            if components.is_none() && assigned == 0 && !warned {
                warn!(
                    topic = config.topics.components,
                    "components topic not found; instances cannot share their components until it exists"
                );
                warned = true;
            }
            if let Some(count) = components.filter(|c| *c != assigned) {
                // Reading from the beginning again is cheap: the topic is compacted to one
                // message per input partition.
                let mut tpl = TopicPartitionList::new();
                for p in 0..count {
                    let _ =
                        tpl.add_partition_offset(&config.topics.components, p, Offset::Beginning);
                }
                match consumer.assign(&tpl) {
                    Ok(()) => {
                        info!(
                            topic = config.topics.components,
                            partitions = count,
                            "reading components"
                        );
                        assigned = count;
                    }
                    Err(e) => warn!(error = %e, "could not assign the components topic"),
                }
            }
        }
        match consumer.poll(POLL) {
            Some(Ok(message)) => receive(&config, &received, &metrics, &message),
            Some(Err(e)) => debug!(error = %e, "components consume error"),
            None => {}
        }
    }
    Ok(())
}

fn receive(
    config: &Config,
    received: &Mutex<ReceivedComponents>,
    metrics: &Metrics,
    message: &rdkafka::message::BorrowedMessage<'_>,
) {
    let Some(payload) = message.payload() else {
        return;
    };
    let incoming: Incoming = match serde_json::from_slice(payload) {
        Ok(incoming) => incoming,
        Err(e) => {
            metrics.components_invalid.inc();
            warn!(offset = message.offset(), error = %e, "undecodable components message");
            return;
        }
    };
    // Another group's components (a second deployment sharing the topic) are not ours.
    if incoming.group != config.kafka.group_id {
        return;
    }
    let Some(family) = config.family_of(&incoming.topic) else {
        return;
    };
    let Some(as_of_ms) = message.timestamp().to_millis() else {
        metrics.components_invalid.inc();
        return;
    };
    if let Ok(mut received) = received.lock() {
        received.offer(
            PartitionId::new(family, incoming.partition),
            Stamped {
                as_of_ms,
                components: incoming.components,
            },
        );
    }
}

/// The partition count of `topic` from the cluster's metadata; `None` when unknown.
fn partition_count(consumer: &Reader, topic: &str, timeout: Duration) -> Option<i32> {
    match consumer.fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .filter(|n| *n > 0),
        Err(e) => {
            debug!(topic, error = %e, "could not read the partition count");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kpi_core::aggregate::Aggregates;
    use kpi_core::components::{ReceivedComponents, Stamped};
    use kpi_core::event::{self, Family};
    use kpi_core::kpi::KpiRecord;
    use kpi_core::partition::PartitionId;
    use proptest::prelude::*;

    use crate::config::Config;
    use crate::generate::EventSource;

    const NOW: i64 = 1_800_000_000_000;
    const PARTITIONS: i32 = 4;

    fn aggregates(config: &Config) -> Aggregates {
        Aggregates::new(config.state_settings().unwrap())
    }

    /// Every record as (key, JSON), sorted by key: what the output topic would hold.
    fn published(records: &[KpiRecord]) -> Vec<(String, serde_json::Value)> {
        let mut out: Vec<_> = records
            .iter()
            .map(|r| (r.key(), r.to_json(NOW, "USD")))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn partition_of(key: &str) -> i32 {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        (hash % PARTITIONS as u64) as i32
    }

    fn every_partition_received() -> ReceivedComponents {
        let mut received = ReceivedComponents::default();
        for family in Family::ALL {
            received.set_partitions(family, PARTITIONS);
        }
        received
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Three instances share the partitions; the global values computed by one of
        /// them, from its own components and the others' sent as JSON, equal those of a
        /// single instance that read every partition.
        #[test]
        fn global_values_from_exchanged_components_equal_one_instance(
            seed in any::<u64>(),
            owners in prop::collection::vec(0usize..3, 3 * PARTITIONS as usize),
        ) {
            let mut config = Config::default();
            config.generate.seed = seed;
            config.generate.customers = 300;
            let limits = config.limits();
            let mut source = EventSource::new(&config);
            let mut single = aggregates(&config);
            let mut instances = [aggregates(&config), aggregates(&config), aggregates(&config)];
            for n in 0..3_000 {
                // Spread over two days, so that the windows hold different events.
                let at = NOW - 2 * 86_400_000 + n * 57_600;
                let generated = source.next_event(at);
                let Ok(event) = event::parse(&generated.payload, generated.family, at, &limits)
                else {
                    continue;
                };
                let partition = PartitionId::new(generated.family, partition_of(&generated.key));
                let family = generated.family.index();
                let owner = owners[family * PARTITIONS as usize + partition.partition as usize];
                let alone = single.record(partition, &event, at);
                let shared = instances[owner].record(partition, &event, at);
                prop_assert_eq!(alone, shared);
            }
            let windows = single.window_names().to_vec();
            let mut received = every_partition_received();
            for instance in &instances[1..] {
                for partition in instance.partitions() {
                    let part = instance.components(partition, NOW);
                    let wire = serde_json::to_vec(&part).unwrap();
                    let components = serde_json::from_slice(&wire).unwrap();
                    received.offer(partition, Stamped { as_of_ms: NOW, components });
                }
            }
            let local: HashMap<_, _> = instances[0]
                .partitions()
                .map(|p| (p, instances[0].components(p, NOW)))
                .collect();
            let (totals, _) = received.totals(&windows, &local, NOW).unwrap();
            let global = single.records_of(&totals, NOW);
            prop_assert_eq!(published(&global), published(&single.snapshot(NOW)));
        }
    }
}
