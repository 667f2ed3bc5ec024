//! The Kafka adapter of the customer signals topic (`topics.customer_signals`): each input
//! partition's part of each customer's health signals ([`CustomerPart`]), compacted, keyed
//! by customer and input partition, and partitioned by customer, so that one partition
//! holds every part of each of its customers and one instance, its owner, brings them
//! together (docs/health.md).
//!
//! The partition is chosen here, not by the producer's partitioner: the key carries the
//! input partition too (compaction must keep one part per input partition), but the
//! partition must depend on the customer alone. It is Kafka's own choice for a message
//! keyed by the customer id (murmur2, as the Java client and librdkafka's
//! `murmur2_random` compute it), so the customer health topic, keyed by customer, puts a
//! customer in the same partition when both topics have as many partitions.
//!
//! Parts are written when they change, by the instance that reads their input partition,
//! and read back whole by the next instance to read it (a restart, a rebalance) before it
//! replays the partition: each part counts the events below its `through_offset`, which
//! the replay then skips for that customer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::kafka::{LoggedErrors, Producer, Reader, partitions_of, signals_consumer_config};
use crate::metrics::Metrics;

use kpi_core::health::parts::{CustomerPart, DetractorAnswer, PartChange};
use kpi_core::partition::PartitionId;

/// The parts restored for each input partition (topic and partition), by customer.
pub type RestoredParts = HashMap<(String, i32), Vec<(Arc<str>, CustomerPart)>>;

/// The longest a poll waits for a message.
const POLL: Duration = Duration::from_millis(100);

/// The partition of `partitions` that Kafka's default partitioner gives a message keyed by
/// `customer_id`; `None` without partitions.
pub fn partition_of(customer_id: &str, partitions: i32) -> Option<i32> {
    if partitions <= 0 {
        return None;
    }
    // SAFETY: librdkafka's murmur2 partitioner reads `keylen` bytes of `key`, which lives
    // for the call, and nothing else: the topic and opaque pointers are unused (it is the
    // partitioner function librdkafka calls with them for `partitioner=murmur2`), and the
    // partition count is above 0.
    let partition = unsafe {
        rdkafka::bindings::rd_kafka_msg_partitioner_murmur2(
            std::ptr::null(),
            customer_id.as_ptr().cast(),
            customer_id.len(),
            partitions,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    Some(partition)
}

/// The key of a customer's part from one input partition. Topic names hold no `|`, so the
/// last one ends the customer id, whatever the id holds.
pub fn key(customer_id: &str, topic: &str, partition: i32) -> String {
    format!("{customer_id}|{topic}:{partition}")
}

/// The key under which the owner writes back what it published of a customer.
pub fn published_key(customer_id: &str) -> String {
    format!("{customer_id}|{PUBLISHED}")
}

/// What follows the customer id in the key of an owner's record.
const PUBLISHED: &str = "health";

/// What starts the source of an answer's key.
const ANSWER: &str = "answer:";

/// The key of a detractor's answer, unique by its place in its input partition.
pub fn answer_key(customer_id: &str, topic: &str, partition: i32, offset: i64) -> String {
    format!("{customer_id}|{ANSWER}{topic}:{partition}:{offset}")
}

/// What a key of the signals topic is of.
#[derive(Debug, PartialEq, Eq)]
pub enum SignalsKey<'a> {
    /// A customer's part from one input partition ([`key`]).
    Part {
        customer_id: &'a str,
        topic: &'a str,
        partition: i32,
    },
    /// What the owner published of a customer ([`published_key`]).
    Published { customer_id: &'a str },
    /// A detractor's answer to follow up ([`answer_key`]).
    Answer { customer_id: &'a str },
}

/// What a key made by [`key`] or [`published_key`] is of.
pub fn parse_key(key: &str) -> Option<SignalsKey<'_>> {
    let (customer_id, source) = key.rsplit_once('|')?;
    if source == PUBLISHED {
        return Some(SignalsKey::Published { customer_id });
    }
    if source.starts_with(ANSWER) {
        return Some(SignalsKey::Answer { customer_id });
    }
    let (topic, partition) = source.rsplit_once(':')?;
    Some(SignalsKey::Part {
        customer_id,
        topic,
        partition: partition.parse().ok()?,
    })
}

/// A part as written: the key's fields again, so that a message explains itself.
#[derive(Serialize)]
struct Outgoing<'a> {
    customer_id: &'a str,
    topic: &'a str,
    partition: i32,
    part: &'a CustomerPart,
}

/// A part as read.
#[derive(Deserialize)]
pub struct Incoming {
    pub customer_id: String,
    pub topic: String,
    pub partition: i32,
    pub part: CustomerPart,
}

/// A detractor's answer as written to the signals topic, for its customer's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerMessage {
    pub customer_id: String,
    pub event_id: String,
    pub survey: String,
    pub score: u8,
    pub comment: Option<String>,
    pub answered_at_ms: i64,
}

impl AnswerMessage {
    fn of(answer: &DetractorAnswer) -> Self {
        AnswerMessage {
            customer_id: answer.customer_id.to_string(),
            event_id: answer.event_id.clone(),
            survey: answer.survey.name().to_owned(),
            score: answer.score,
            comment: answer.comment.clone(),
            answered_at_ms: answer.answered_at_ms,
        }
    }
}

/// Decodes a part message; `None` for a tombstone.
pub fn decode(payload: Option<&[u8]>) -> Result<Option<Incoming>, serde_json::Error> {
    payload.map(serde_json::from_slice).transpose()
}

/// The number of the latest part sent of each input partition and customer.
type LatestSent = HashMap<(PartitionId, Arc<str>), u64>;

/// Writes the parts the input partitions give; owned by the consume loop.
pub struct SignalsWriter {
    config: Arc<Config>,
    producer: Producer,
    metrics: Arc<Metrics>,
    /// The signals topic's partition count, once read.
    partitions: Option<i32>,
    warned: bool,
    /// Parts whose message the broker did not acknowledge: written again unless a newer part
    /// of the same key is written first.
    failed: Arc<Mutex<Vec<(PartitionId, PartChange)>>>,
    /// Answers whose message the broker did not acknowledge: written again.
    failed_answers: Arc<Mutex<Vec<(PartitionId, DetractorAnswer)>>>,
    /// Parts sent so far, numbering each.
    sent: u64,
    /// The number of the latest part sent of each key not acknowledged yet.
    latest: Arc<Mutex<LatestSent>>,
}

impl SignalsWriter {
    pub fn new(config: Arc<Config>, producer: Producer, metrics: Arc<Metrics>) -> Self {
        SignalsWriter {
            config,
            producer,
            metrics,
            partitions: None,
            warned: false,
            failed: Arc::new(Mutex::new(Vec::new())),
            failed_answers: Arc::new(Mutex::new(Vec::new())),
            sent: 0,
            latest: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Writes each input partition's changed parts, and the parts that failed before; then
    /// the detractors' answers, after the parts that count them (in the same partition of
    /// the topic, so the owner reads them in that order).
    ///
    /// What failed earlier is written again only for the input partitions still
    /// `assigned` here: a partition that moved is written by its new reader, whose parts
    /// an older one must not overwrite.
    pub fn write(
        &mut self,
        changes: Vec<(PartitionId, Vec<PartChange>)>,
        answers: Vec<(PartitionId, Vec<DetractorAnswer>)>,
        assigned: impl Fn(PartitionId) -> bool,
    ) {
        if let Ok(mut failed) = self.failed.lock() {
            failed.retain(|(partition, _)| assigned(*partition));
        }
        if let Ok(mut latest) = self.latest.lock() {
            latest.retain(|(partition, _), _| assigned(*partition));
        }
        if let Ok(mut failed) = self.failed_answers.lock() {
            failed.retain(|(partition, _)| assigned(*partition));
        }
        self.write_parts(changes);
        self.write_answers(answers);
    }

    /// Waits up to `timeout` for the parts and answers queued to be delivered (at a stop).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            warn!(error = %e, "customer signal parts still unacknowledged at shutdown");
        }
    }

    fn write_answers(&mut self, answers: Vec<(PartitionId, Vec<DetractorAnswer>)>) {
        let mut answers: Vec<(PartitionId, DetractorAnswer)> = answers
            .into_iter()
            .flat_map(|(p, list)| list.into_iter().map(move |a| (p, a)))
            .collect();
        if let Ok(mut failed) = self.failed_answers.lock() {
            answers.extend(failed.drain(..));
        }
        if answers.is_empty() {
            return;
        }
        let Some(partitions) = self.partition_count() else {
            self.metrics
                .health
                .signals_failures
                .inc_by(answers.len() as u64);
            if let Ok(mut failed) = self.failed_answers.lock() {
                failed.extend(answers);
            }
            return;
        };
        let mut deliveries = Vec::new();
        for (partition, answer) in answers {
            let topic = self.config.topic(partition.family);
            let Some(target) = partition_of(&answer.customer_id, partitions) else {
                continue;
            };
            let key = answer_key(
                &answer.customer_id,
                topic,
                partition.partition,
                answer.offset,
            );
            let payload = match serde_json::to_vec(&AnswerMessage::of(&answer)) {
                Ok(payload) => payload,
                Err(e) => {
                    warn!(error = %e, "could not encode a detractor's answer");
                    continue;
                }
            };
            let record = FutureRecord::to(&self.config.topics.customer_signals)
                .key(&key)
                .payload(&payload)
                .partition(target);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push((partition, answer, delivery)),
                Err((e, _)) => {
                    self.metrics.health.signals_failures.inc();
                    warn!(error = %e, "could not queue a detractor's answer");
                    if let Ok(mut failed) = self.failed_answers.lock() {
                        failed.push((partition, answer));
                    }
                }
            }
        }
        let metrics = self.metrics.clone();
        let failed = self.failed_answers.clone();
        tokio::spawn(async move {
            for (partition, answer, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => metrics.health.signals_sent.inc(),
                    _ => {
                        metrics.health.signals_failures.inc();
                        if let Ok(mut failed) = failed.lock() {
                            failed.push((partition, answer));
                        }
                    }
                }
            }
        });
    }

    fn write_parts(&mut self, mut changes: Vec<(PartitionId, Vec<PartChange>)>) {
        let retried = self
            .failed
            .lock()
            .map(|mut failed| std::mem::take(&mut *failed))
            .unwrap_or_default();
        if !retried.is_empty() {
            let newer: HashSet<(PartitionId, &str)> = changes
                .iter()
                .flat_map(|(p, parts)| parts.iter().map(move |c| (*p, &*c.customer_id)))
                .collect();
            let mut again: HashMap<PartitionId, Vec<PartChange>> = HashMap::new();
            for (partition, change) in retried {
                if !newer.contains(&(partition, &*change.customer_id)) {
                    again.entry(partition).or_default().push(change);
                }
            }
            changes.extend(again);
        }
        if changes.iter().all(|(_, parts)| parts.is_empty()) {
            return;
        }
        let Some(partitions) = self.partition_count() else {
            let lost: usize = changes.iter().map(|(_, parts)| parts.len()).sum();
            self.metrics.health.signals_failures.inc_by(lost as u64);
            if let Ok(mut failed) = self.failed.lock() {
                failed.extend(
                    changes
                        .into_iter()
                        .flat_map(|(p, parts)| parts.into_iter().map(move |c| (p, c))),
                );
            }
            return;
        };
        let mut deliveries = Vec::new();
        for (partition, parts) in changes {
            let topic = self.config.topic(partition.family);
            for change in parts {
                let customer_id = &*change.customer_id;
                let Some(target) = partition_of(customer_id, partitions) else {
                    continue;
                };
                let key = key(customer_id, topic, partition.partition);
                let payload = match &change.part {
                    Some(part) => {
                        let message = Outgoing {
                            customer_id,
                            topic,
                            partition: partition.partition,
                            part,
                        };
                        match serde_json::to_vec(&message) {
                            Ok(payload) => Some(payload),
                            Err(e) => {
                                warn!(error = %e, "could not encode a customer signal part");
                                continue;
                            }
                        }
                    }
                    None => None,
                };
                let mut record =
                    FutureRecord::<String, Vec<u8>>::to(&self.config.topics.customer_signals)
                        .key(&key)
                        .partition(target);
                if let Some(payload) = &payload {
                    record = record.payload(payload);
                }
                self.sent += 1;
                let sent = self.sent;
                if let Ok(mut latest) = self.latest.lock() {
                    latest.insert((partition, change.customer_id.clone()), sent);
                }
                match self.producer.send_result(record) {
                    Ok(delivery) => deliveries.push((partition, change, sent, delivery)),
                    Err((e, _)) => {
                        self.metrics.health.signals_failures.inc();
                        warn!(error = %e, "could not queue a customer signal part");
                        if let Ok(mut failed) = self.failed.lock() {
                            failed.push((partition, change));
                        }
                    }
                }
            }
        }
        let metrics = self.metrics.clone();
        let failed = self.failed.clone();
        let latest = self.latest.clone();
        tokio::spawn(async move {
            for (partition, change, sent, delivery) in deliveries {
                let delivered = matches!(delivery.await, Ok(Ok(_)));
                let Ok(mut latest) = latest.lock() else {
                    continue;
                };
                let key = (partition, change.customer_id.clone());
                // Only the latest part of a key is written again: an older one that failed
                // would overwrite a newer one written since.
                let newest = latest.get(&key) == Some(&sent);
                if delivered {
                    metrics.health.signals_sent.inc();
                    if newest {
                        latest.remove(&key);
                    }
                } else {
                    metrics.health.signals_failures.inc();
                    if newest && let Ok(mut failed) = failed.lock() {
                        failed.push((partition, change));
                    }
                }
            }
        });
    }

    /// The signals topic's partition count, read once; `None` (warned once) while the topic
    /// does not exist.
    fn partition_count(&mut self) -> Option<i32> {
        if self.partitions.is_none() {
            let topic = &self.config.topics.customer_signals;
            let timeout = Duration::from_millis(u64::from(self.config.kafka.request_timeout_ms));
            let count = self
                .producer
                .client()
                .fetch_metadata(Some(topic), timeout)
                .ok()
                .map(|metadata| partitions_of(&metadata, topic).len() as i32)
                .filter(|n| *n > 0);
            if count.is_none() && !self.warned {
                warn!(
                    topic,
                    "customer signals topic not found; customers' health waits until it exists"
                );
                self.warned = true;
            }
            self.partitions = count;
        }
        self.partitions
    }
}

/// The parts written for the input partitions `wanted` (topic and partition), read from the
/// whole signals topic: the newest of each key, tombstones applied. Blocking. `Err` when
/// the topic could not be read to the end it had when reading began, within `patience`
/// without progress.
pub fn read_parts(
    config: &Config,
    wanted: &HashSet<(String, i32)>,
    patience: Duration,
) -> anyhow::Result<RestoredParts> {
    let mut found: HashMap<(String, i32), HashMap<String, CustomerPart>> = HashMap::new();
    let topic = &config.topics.customer_signals;
    let reader: Reader = signals_consumer_config(config)
        .create_with_context(LoggedErrors::default())
        .context("creating the customer signals reader")?;
    let timeout = Duration::from_millis(u64::from(config.kafka.request_timeout_ms));
    let metadata = reader
        .fetch_metadata(Some(topic), timeout)
        .context("reading the customer signals topic's partitions")?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for partition in partitions_of(&metadata, topic) {
        let (low, high) = reader
            .fetch_watermarks(topic, partition, timeout)
            .context("reading the customer signals topic's offsets")?;
        if high > low {
            ends.insert(partition, high);
            tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    if !ends.is_empty() {
        reader.assign(&tpl)?;
    }
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut read = 0u64;
    while !ends.is_empty() {
        if last_progress.elapsed() > patience {
            anyhow::bail!(
                "the customer signals topic was not read to its end: partitions {:?} made no progress for {patience:?}",
                ends.keys().collect::<Vec<_>>()
            );
        }
        let Some(message) = reader.poll(POLL) else {
            // The last offsets of a partition may hold no message (compaction, a
            // transaction marker): its position tells it was read to the end.
            if let Ok(positions) = reader.position() {
                for element in positions.elements() {
                    if let Offset::Offset(position) = element.offset()
                        && ends
                            .get(&element.partition())
                            .is_some_and(|end| position >= *end)
                    {
                        ends.remove(&element.partition());
                    }
                }
            }
            continue;
        };
        // An error the client reports (a broker reconnecting, a leader moving) is no
        // progress, not the end: the patience decides.
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                debug!(error = %e, "reading the customer signals topic");
                continue;
            }
        };
        last_progress = Instant::now();
        read += 1;
        let partition = message.partition();
        if ends
            .get(&partition)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&partition);
        }
        let Some(Ok(key)) = message.key().map(std::str::from_utf8) else {
            continue;
        };
        let Some(SignalsKey::Part {
            customer_id,
            topic: source_topic,
            partition: source_partition,
        }) = parse_key(key)
        else {
            continue;
        };
        let source = (source_topic.to_owned(), source_partition);
        if !wanted.contains(&source) {
            continue;
        }
        let parts = found.entry(source).or_default();
        match decode(message.payload()) {
            // A part older than the one held (a former reader's late write) is not kept.
            Ok(Some(incoming)) => {
                let newer = parts
                    .get(customer_id)
                    .is_none_or(|held| incoming.part.through_offset >= held.through_offset);
                if newer {
                    parts.insert(customer_id.to_owned(), incoming.part);
                }
            }
            Ok(None) => {
                parts.remove(customer_id);
            }
            Err(e) => {
                warn!(offset = message.offset(), error = %e, "undecodable customer signal part")
            }
        }
    }
    let restored: RestoredParts = found
        .into_iter()
        .map(|(source, parts)| {
            let parts = parts
                .into_iter()
                .map(|(id, part)| (Arc::from(id), part))
                .collect();
            (source, parts)
        })
        .collect();
    info!(
        messages = read,
        partitions = wanted.len(),
        customers = restored.values().map(Vec::len).sum::<usize>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "customer signal parts restored"
    );
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's murmur2 partitioner puts a key in `toPositive(murmur2(key)) % n`: with
    /// `n = i32::MAX` the partition is the positive hash itself. The hashes are those of
    /// the Java client's own tests of `Utils.murmur2`.
    #[test]
    fn customers_land_where_kafka_puts_their_id() {
        let java = [
            ("21", -973_932_308i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, hash) in java {
            assert_eq!(partition_of(key, i32::MAX), Some(hash & i32::MAX), "{key}");
            assert_eq!(partition_of(key, 6), Some((hash & i32::MAX) % 6), "{key}");
        }
        assert_eq!(partition_of("a", 0), None);
        assert_eq!(partition_of("a", -1), None);
    }

    #[test]
    fn keys_give_back_their_customer_whatever_it_holds() {
        for customer_id in ["c", "a|b", "x:1|y:2", "", "health|health"] {
            let key = key(customer_id, "cs.tickets", 7);
            assert_eq!(
                parse_key(&key),
                Some(SignalsKey::Part {
                    customer_id,
                    topic: "cs.tickets",
                    partition: 7
                })
            );
            let published = published_key(customer_id);
            assert_eq!(
                parse_key(&published),
                Some(SignalsKey::Published { customer_id })
            );
            let answer = answer_key(customer_id, "cs.surveys", 3, 99);
            assert_eq!(parse_key(&answer), Some(SignalsKey::Answer { customer_id }));
        }
        assert_eq!(parse_key("no-separator"), None);
        assert_eq!(parse_key("c|topic:x"), None);
    }
}
