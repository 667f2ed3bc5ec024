//! The Kafka adapter of the periods topic: each input partition's components for each
//! calendar period ([`PeriodComponents`]), kept in a compacted topic keyed by group, topic,
//! partition and period, so that a closed period, and an open one as of its last
//! checkpoint, outlive the input topics' retention (docs/kpis.md, "Calendar periods").
//!
//! Every instance reads the whole topic, assigned rather than subscribed, into a
//! [`PeriodStore`]: before it first joins its group (so that its first replay can restore
//! its partitions' periods), then as other instances write, so that a partition that moves
//! to it is restored from what its former owner wrote.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::kafka::{LoggedErrors, Producer, Reader, partitions_of, periods_consumer_config};
use crate::metrics::Metrics;

use kpi_core::calendar::PeriodKind;
use kpi_core::partition::PartitionId;
use kpi_core::period_components::PeriodComponents;

/// The longest a poll waits for a message, and so for a shutdown to be noticed.
const POLL: Duration = Duration::from_millis(100);

/// A periods message, as written and read.
#[derive(Serialize, Deserialize)]
struct PeriodMessage {
    group: String,
    topic: String,
    partition: i32,
    components: PeriodComponents,
}

/// The key of a period's record: one per group, input partition and period.
fn key(group: &str, topic: &str, partition: i32, kind: &str, number: i64) -> String {
    format!("{group}/{topic}/{partition}/{kind}/{number}")
}

/// The records of one input partition, by period name and number.
type PartitionPeriods = HashMap<(String, i64), PeriodComponents>;

/// The newest record of every period of this group's input partitions.
#[derive(Default)]
pub struct PeriodStore {
    records: Mutex<HashMap<(String, i32), PartitionPeriods>>,
    /// The topic has been read to the end it had when reading began.
    loaded: Mutex<bool>,
    loaded_changed: Condvar,
}

impl PeriodStore {
    /// The records of one input partition's periods among `wanted`.
    pub fn records(
        &self,
        topic: &str,
        partition: i32,
        wanted: &[(PeriodKind, i64)],
    ) -> Vec<PeriodComponents> {
        let Ok(records) = self.records.lock() else {
            return Vec::new();
        };
        let Some(of_partition) = records.get(&(topic.to_owned(), partition)) else {
            return Vec::new();
        };
        wanted
            .iter()
            .filter_map(|(kind, number)| of_partition.get(&(kind.name().to_owned(), *number)))
            .cloned()
            .collect()
    }

    fn insert(&self, message: PeriodMessage) {
        if let Ok(mut records) = self.records.lock() {
            let component = message.components;
            records
                .entry((message.topic, message.partition))
                .or_default()
                .insert((component.period.clone(), component.number), component);
        }
    }

    fn set_loaded(&self) {
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = true;
            self.loaded_changed.notify_all();
        }
    }

    /// Blocks until the topic has been read to the end it had when reading began, at most
    /// `limit`; whether it has. Called where a partition is assigned, inside librdkafka's
    /// rebalance callback: an assignment means a broker answers, and the records written
    /// before this start are then read within a fetch or two.
    pub fn wait_loaded(&self, limit: Duration) -> bool {
        let Ok(loaded) = self.loaded.lock() else {
            return false;
        };
        self.loaded_changed
            .wait_timeout_while(loaded, limit, |loaded| !*loaded)
            .is_ok_and(|(loaded, _)| *loaded)
    }
}

/// Reads the periods topic into `store` until `shutdown` is cancelled: from the beginning,
/// telling the store once it has reached the end the topic had, then what is written after.
/// Blocking: it runs on a thread of its own.
pub fn read_periods(
    config: Arc<Config>,
    store: Arc<PeriodStore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer: Reader = periods_consumer_config(&config)
        .create_with_context(LoggedErrors::default())
        .context("creating the periods consumer")?;
    let topic = &config.topics.periods;
    let timeout = Duration::from_millis(u64::from(config.kafka.request_timeout_ms));
    // The end of each partition when reading began: the records written before this start.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match consumer.fetch_metadata(Some(topic), timeout) {
            Ok(metadata) => {
                let partitions = partitions_of(&metadata, topic);
                if partitions.is_empty() {
                    warn!(
                        topic,
                        "periods topic not found; calendar periods are rebuilt by replay only"
                    );
                    store.set_loaded();
                    return Ok(());
                }
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, *p, timeout)
                        .unwrap_or((0, 0));
                    if high > 0 {
                        ends.insert(*p, high);
                    }
                    let _ = tpl.add_partition_offset(topic, *p, Offset::Beginning);
                }
                consumer
                    .assign(&tpl)
                    .context("assigning the periods topic")?;
                info!(topic, partitions = partitions.len(), "reading periods");
                break;
            }
            Err(e) => {
                debug!(error = %e, "could not read the periods topic's metadata; retrying");
                std::thread::sleep(POLL);
            }
        }
    }
    if ends.is_empty() {
        store.set_loaded();
    }
    while !shutdown.is_cancelled() {
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                if let Some(end) = ends.get(&message.partition())
                    && message.offset() + 1 >= *end
                {
                    ends.remove(&message.partition());
                }
                receive(&config, &store, &metrics, &message);
                if ends.is_empty() {
                    store.set_loaded();
                }
            }
            Some(Err(e)) => debug!(error = %e, "periods consume error"),
            None => {}
        }
    }
    Ok(())
}

fn receive(
    config: &Config,
    store: &PeriodStore,
    metrics: &Metrics,
    message: &rdkafka::message::BorrowedMessage<'_>,
) {
    let Some(payload) = message.payload() else {
        return;
    };
    let incoming: PeriodMessage = match serde_json::from_slice(payload) {
        Ok(incoming) => incoming,
        Err(e) => {
            metrics.periods_invalid.inc();
            warn!(offset = message.offset(), error = %e, "undecodable periods message");
            return;
        }
    };
    // Another group's periods (a second deployment sharing the topic) are not ours.
    if incoming.group != config.kafka.group_id || config.family_of(&incoming.topic).is_none() {
        return;
    }
    store.insert(incoming);
}

/// A period record to write, with what confirms it to its worker.
pub struct Due {
    pub partition: PartitionId,
    pub components: PeriodComponents,
    pub version: u64,
}

/// A written period record, to confirm to its worker.
pub struct Written {
    pub partition: PartitionId,
    pub kind: PeriodKind,
    pub number: i64,
    pub version: u64,
}

/// Writes period records and collects the confirmations of those the broker acknowledged.
pub struct PeriodWriter {
    config: Arc<Config>,
    producer: Producer,
    metrics: Arc<Metrics>,
    written: Arc<Mutex<Vec<Written>>>,
}

impl PeriodWriter {
    pub fn new(config: Arc<Config>, producer: Producer, metrics: Arc<Metrics>) -> Self {
        PeriodWriter {
            config,
            producer,
            metrics,
            written: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Queues `due` for writing; each one the broker acknowledges is confirmed by
    /// [`PeriodWriter::take_written`]. One that fails stays due and is written again.
    pub fn write(&self, due: Vec<Due>) {
        let mut deliveries = Vec::new();
        for d in due {
            let Some(kind) = d.components.kind() else {
                continue;
            };
            let topic = self.config.topic(d.partition.family).to_owned();
            let key = key(
                &self.config.kafka.group_id,
                &topic,
                d.partition.partition,
                kind.name(),
                d.components.number,
            );
            let number = d.components.number;
            let message = PeriodMessage {
                group: self.config.kafka.group_id.clone(),
                topic,
                partition: d.partition.partition,
                components: d.components,
            };
            let payload = match serde_json::to_vec(&message) {
                Ok(payload) => payload,
                Err(e) => {
                    warn!(error = %e, "could not encode a period");
                    continue;
                }
            };
            let record = FutureRecord::to(&self.config.topics.periods)
                .key(&key)
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push((
                    Written {
                        partition: d.partition,
                        kind,
                        number,
                        version: d.version,
                    },
                    delivery,
                )),
                Err((e, _)) => {
                    self.metrics.periods_failures.inc();
                    warn!(error = %e, "could not queue a period");
                }
            }
        }
        if deliveries.is_empty() {
            return;
        }
        let metrics = self.metrics.clone();
        let written = self.written.clone();
        tokio::spawn(async move {
            for (confirmation, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {
                        metrics.periods_written.inc();
                        if let Ok(mut written) = written.lock() {
                            written.push(confirmation);
                        }
                    }
                    _ => metrics.periods_failures.inc(),
                }
            }
        });
    }

    /// The records acknowledged since last asked.
    pub fn take_written(&self) -> Vec<Written> {
        self.written
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}
