//! The owner of customers' health: a consumer group of its own (`<group>.health`) on the
//! customer signals topic, so that each signals partition, and so each customer, has one
//! owner among the instances. The owner reads its partitions from their beginning (the
//! topic is compacted: that is the restore, after a restart or a rebalance), brings each
//! customer's parts together, scores them ([`OwnedCustomers`]), and publishes what changes:
//! the customer health topic, the band gauges and transitions, and `GET /customers/{id}`
//! ([`HealthView`]).
//!
//! What the owner published is written back to the signals topic too (key
//! `<customer>|health`), in the customer's partition, so that the next owner restores it
//! with the parts: it publishes only what changes after it, counts a band change across
//! the move as one transition, and keeps the time of the last change.
//!
//! Blocking: it runs on a thread of its own, as the components reader does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientContext, Message};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::customer_signals::{self, AnswerMessage, SignalsKey, partition_of};
use crate::kafka::{ErrorLog, Producer, health_consumer_config, partitions_of, producer};
use crate::metrics::Metrics;

use kpi_core::billing::major;
use kpi_core::health::owned::{BandTotal, CustomerHealth, OwnedCustomers, Published};
use kpi_core::health::{Band, HealthModel, Signal, SignalScore};
use kpi_core::kpi::rfc3339;

/// The longest a poll waits for a message, and so for a shutdown or a tick to be noticed.
const POLL: Duration = Duration::from_millis(100);

/// Every customer is scored again this often, not only those whose parts changed: the
/// signal window moves and tenure grows with time alone, by a bucket (5.6 days by default)
/// or a day at a time.
const RESCORE_ALL: Duration = Duration::from_secs(600);

/// The label of the segments past `dimensions.max_values`.
const OTHER: &str = "other";

/// The end of a partition whose watermarks could not be read yet.
const UNKNOWN_END: i64 = i64::MAX;

/// How often the signals topic's partition count is read again (for the owner's pointer).
const METADATA_REFRESH: Duration = Duration::from_secs(30);

/// Which signals partitions this instance owns, and which of them are still being read to
/// the end they had when assigned.
#[derive(Debug, Default)]
struct Ownership {
    partitions: Option<i32>,
    owned: BTreeSet<i32>,
    /// Owned partitions being restored, with the end offset to reach ([`UNKNOWN_END`] until
    /// it could be read).
    restoring: HashMap<i32, i64>,
}

/// What `GET /customers/{id}` finds.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// The customer's health as the health topic has it, rendered.
    Found(Vec<u8>),
    /// Customer health is off (`health.enabled = false`).
    Off,
    /// The signals topic's partitions are not known yet.
    NotYetKnown,
    /// This instance owns the customer's partition and is reading it.
    Restoring { partition: i32 },
    /// This instance owns the customer's partition, and no score of the customer.
    NoScore { partition: i32 },
    /// Another instance owns the customer's partition.
    Elsewhere { partition: i32 },
}

/// The owner's state as the HTTP endpoints read it.
#[derive(Debug)]
pub struct HealthView {
    enabled: bool,
    topic: String,
    /// The owners' consumer group.
    group: String,
    currency: String,
    customers: Mutex<OwnedCustomers>,
    ownership: Mutex<Ownership>,
    /// The model scores are explained with.
    model: HealthModel,
}

impl HealthView {
    /// The view of `config`'s owner; `model` is `health.model()`, checked at check-config.
    pub fn new(config: &Config, model: HealthModel) -> Self {
        HealthView {
            model,
            enabled: config.health.enabled,
            topic: config.topics.customer_signals.clone(),
            group: format!("{}.health", config.kafka.group_id),
            currency: config.billing.base_currency.clone(),
            customers: Mutex::new(OwnedCustomers::default()),
            ownership: Mutex::new(Ownership::default()),
        }
    }

    /// The signals topic the customers' partitions are of.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group whose members own the customers.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Finds `customer_id`'s health, or says where it is.
    pub fn lookup(&self, customer_id: &str) -> Lookup {
        if !self.enabled {
            return Lookup::Off;
        }
        let (partition, owned, restoring) = {
            let Ok(ownership) = self.ownership.lock() else {
                return Lookup::NotYetKnown;
            };
            let Some(partition) = ownership
                .partitions
                .and_then(|n| partition_of(customer_id, n))
            else {
                return Lookup::NotYetKnown;
            };
            (
                partition,
                ownership.owned.contains(&partition),
                ownership.restoring.contains_key(&partition),
            )
        };
        if !owned {
            return Lookup::Elsewhere { partition };
        }
        if restoring {
            return Lookup::Restoring { partition };
        }
        let Ok(customers) = self.customers.lock() else {
            return Lookup::NotYetKnown;
        };
        match customers.published(customer_id, &self.model) {
            Some(published) => {
                match serde_json::to_vec(&HealthMessage::of(&published.health, &self.currency)) {
                    Ok(body) => Lookup::Found(body),
                    Err(_) => Lookup::NoScore { partition },
                }
            }
            None => Lookup::NoScore { partition },
        }
    }
}

/// A customer's health on the health topic and `GET /customers/{id}` (docs/output.md).
#[derive(Serialize)]
struct HealthMessage<'a> {
    customer_id: &'a str,
    score: f64,
    band: Band,
    signals: &'a [SignalScore],
    /// Base-currency major units.
    mrr: f64,
    currency: &'a str,
    segment: Option<&'a str>,
    changed_at: String,
    moved_by: Option<Signal>,
}

impl<'a> HealthMessage<'a> {
    fn of(health: &'a CustomerHealth, currency: &'a str) -> Self {
        HealthMessage {
            customer_id: &health.customer_id,
            score: health.score.score,
            band: health.score.band,
            signals: &health.score.signals,
            mrr: major(i128::from(health.mrr)),
            currency,
            segment: health.segment.as_deref(),
            changed_at: rfc3339(health.changed_at_ms),
            moved_by: health.moved_by,
        }
    }
}

/// A group rebalance of the owner's consumer, handed from its callback to the loop.
enum OwnerRebalance {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Records the owner's rebalances; the loop applies them after each poll. Errors go
/// through an [`ErrorLog`], not one line each: a broker outage is one line, not one per
/// attempt.
#[derive(Default)]
struct OwnerCallbacks {
    changes: Mutex<Vec<OwnerRebalance>>,
    errors: ErrorLog,
}

impl ClientContext for OwnerCallbacks {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors
            .report("customer health consumer error", &error, reason);
    }
}

impl ConsumerContext for OwnerCallbacks {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let change = match rebalance {
            Rebalance::Assign(tpl) => {
                OwnerRebalance::Assigned(tpl.elements().iter().map(|e| e.partition()).collect())
            }
            Rebalance::Revoke(tpl) => {
                OwnerRebalance::Revoked(tpl.elements().iter().map(|e| e.partition()).collect())
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "customer health rebalance failed");
                return;
            }
        };
        if let Ok(mut changes) = self.changes.lock() {
            changes.push(change);
        }
    }
}

type OwnerConsumer = BaseConsumer<OwnerCallbacks>;

/// Owns customers until `shutdown` is cancelled.
pub fn own_customers(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    view: Arc<HealthView>,
    clock: Clock,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bucket_ms = config.health.signal_settings()?.bucket_ms();
    let consumer: OwnerConsumer = health_consumer_config(&config)
        .create_with_context(OwnerCallbacks::default())
        .context("creating the customer health consumer")?;
    consumer
        .subscribe(&[&config.topics.customer_signals])
        .context("subscribing to the customer signals topic")?;
    // Keyed by customer as Kafka's own clients key them (murmur2), so that the health and
    // feedback topics put a customer in the partition the signals topic does when their
    // partition counts are the same.
    let producer = producer(&config, &[("partitioner", "murmur2_random".into())])?;
    let mut owner = Owner {
        config,
        metrics,
        view,
        bucket_ms,
        producer,
        runtime,
        clock,
        last_rescore_all: None,
        next_metadata: Instant::now(),
        answers: BTreeMap::new(),
        in_flight: HashSet::new(),
        feed_again: Arc::new(Mutex::new(Vec::new())),
        health_again: Arc::new(Mutex::new(Vec::new())),
        segments: BTreeSet::new(),
        labelled: BTreeSet::new(),
        tombstones_due: Arc::new(Mutex::new(Vec::new())),
    };
    owner.refresh_partitions(&consumer);
    let interval = owner.config.publish.interval;
    let mut next_tick = Instant::now() + interval;
    while !shutdown.is_cancelled() {
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                // An assignment made during this poll is known before its first message.
                owner.apply_rebalances(&consumer);
                owner.receive(&message);
            }
            Some(Err(e)) => debug!(error = %e, "customer signals consume error"),
            None => {}
        }
        owner.apply_rebalances(&consumer);
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + interval;
            owner.refresh_partitions(&consumer);
            owner.check_restored(&consumer);
            owner.publish();
        }
    }
    owner.check_restored(&consumer);
    owner.publish();
    let _ = rdkafka::producer::Producer::flush(&owner.producer, Duration::from_secs(3));
    consumer.unsubscribe();
    Ok(())
}

struct Owner {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    view: Arc<HealthView>,
    bucket_ms: i64,
    producer: Producer,
    runtime: tokio::runtime::Handle,
    clock: Clock,
    last_rescore_all: Option<Instant>,
    next_metadata: Instant,
    /// Detractors' answers not followed up yet, by their key, with their signals partition.
    answers: BTreeMap<String, (i32, AnswerMessage)>,
    /// Answers written to the feedback topic (or being written) whose tombstone has not
    /// been read back yet: not written again.
    in_flight: HashSet<String>,
    /// Answers whose feedback message failed: written again at the next publish.
    feed_again: Arc<Mutex<Vec<String>>>,
    /// Customers whose health message or record failed: sent again at the next publish.
    health_again: Arc<Mutex<Vec<String>>>,
    /// The segments with series of their own on the health gauges.
    segments: BTreeSet<String>,
    /// The band and segment of each series the health gauges have.
    labelled: BTreeSet<(Band, String)>,
    /// Answers followed up whose tombstone failed, with their signals partition: the
    /// tombstone is written again, the feedback message not.
    tombstones_due: Arc<Mutex<Vec<(String, i32)>>>,
}

impl Owner {
    fn receive(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) {
        let partition = message.partition();
        // Whether this message is part of the restore: the message that reaches the end is.
        let restoring = match self.view.ownership.lock() {
            Ok(mut ownership) => match ownership.restoring.get(&partition) {
                Some(end) if message.offset() + 1 >= *end => {
                    ownership.restoring.remove(&partition);
                    info!(partition, "customer health partition restored");
                    true
                }
                Some(_) => true,
                None => false,
            },
            Err(_) => false,
        };
        let Some(Ok(key)) = message.key().map(std::str::from_utf8) else {
            self.metrics.health.signals_invalid.inc();
            return;
        };
        let Ok(mut customers) = self.view.customers.lock() else {
            return;
        };
        match customer_signals::parse_key(key) {
            Some(SignalsKey::Part {
                customer_id,
                topic,
                partition: source,
            }) => match customer_signals::decode(message.payload()) {
                Ok(part) => customers.receive(
                    partition,
                    customer_id,
                    &format!("{topic}:{source}"),
                    part.map(|p| p.part),
                ),
                Err(e) => {
                    self.metrics.health.signals_invalid.inc();
                    warn!(partition, offset = message.offset(), error = %e, "undecodable customer signal part");
                }
            },
            // Read back while restoring only: afterwards this owner knows better.
            Some(SignalsKey::Published { customer_id }) if restoring => {
                match message
                    .payload()
                    .map(serde_json::from_slice::<Published>)
                    .transpose()
                {
                    Ok(published) => customers.restore_published(partition, customer_id, published),
                    Err(e) => {
                        self.metrics.health.signals_invalid.inc();
                        warn!(partition, offset = message.offset(), error = %e, "undecodable customer health record");
                    }
                }
            }
            Some(SignalsKey::Published { .. }) => {}
            Some(SignalsKey::Answer { .. }) => match message
                .payload()
                .map(serde_json::from_slice::<AnswerMessage>)
                .transpose()
            {
                Ok(Some(answer)) => {
                    self.answers.insert(key.to_owned(), (partition, answer));
                }
                Ok(None) => {
                    self.answers.remove(key);
                    self.in_flight.remove(key);
                }
                Err(e) => {
                    self.metrics.health.signals_invalid.inc();
                    warn!(partition, offset = message.offset(), error = %e, "undecodable detractor's answer");
                }
            },
            None => self.metrics.health.signals_invalid.inc(),
        }
    }

    fn apply_rebalances(&mut self, consumer: &OwnerConsumer) {
        let changes = match consumer.context().changes.lock() {
            Ok(mut changes) => std::mem::take(&mut *changes),
            Err(_) => return,
        };
        let timeout = Duration::from_millis(u64::from(self.config.kafka.request_timeout_ms));
        let topic = &self.config.topics.customer_signals;
        for change in changes {
            match change {
                OwnerRebalance::Assigned(partitions) => {
                    for partition in partitions {
                        // An end not read now is read again at the next tick.
                        let end = consumer
                            .fetch_watermarks(topic, partition, timeout)
                            .map(|(low, high)| if high > low { high } else { 0 })
                            .unwrap_or(UNKNOWN_END);
                        info!(
                            partition,
                            end, "customer health partition assigned, restoring"
                        );
                        if let Ok(mut ownership) = self.view.ownership.lock() {
                            ownership.owned.insert(partition);
                            if end > 0 {
                                ownership.restoring.insert(partition, end);
                            }
                        }
                    }
                }
                OwnerRebalance::Revoked(partitions) => {
                    for partition in partitions {
                        if let Ok(mut ownership) = self.view.ownership.lock() {
                            ownership.owned.remove(&partition);
                            ownership.restoring.remove(&partition);
                        }
                        if let Ok(mut customers) = self.view.customers.lock() {
                            customers.drop_partition(partition);
                        }
                        self.answers.retain(|_, (p, _)| *p != partition);
                        let answers = &self.answers;
                        self.in_flight.retain(|key| answers.contains_key(key));
                        info!(partition, "customer health partition revoked");
                    }
                }
            }
        }
    }

    /// Ends the restore of partitions whose consumer position reached their end (the last
    /// messages of a compacted partition may be gone, so no message need be at it).
    fn check_restored(&mut self, consumer: &OwnerConsumer) {
        let Ok(positions) = consumer.position() else {
            return;
        };
        let Ok(mut ownership) = self.view.ownership.lock() else {
            return;
        };
        let timeout = Duration::from_millis(u64::from(self.config.kafka.request_timeout_ms));
        let topic = &self.config.topics.customer_signals;
        for (partition, end) in ownership.restoring.iter_mut() {
            if *end == UNKNOWN_END
                && let Ok((low, high)) = consumer.fetch_watermarks(topic, *partition, timeout)
            {
                *end = if high > low { high } else { 0 };
            }
        }
        ownership.restoring.retain(|_, end| *end > 0);
        for element in positions.elements() {
            if let rdkafka::Offset::Offset(position) = element.offset()
                && ownership
                    .restoring
                    .get(&element.partition())
                    .is_some_and(|end| position >= *end)
            {
                ownership.restoring.remove(&element.partition());
                info!(
                    partition = element.partition(),
                    "customer health partition restored"
                );
            }
        }
    }

    fn refresh_partitions(&mut self, consumer: &OwnerConsumer) {
        if Instant::now() < self.next_metadata {
            return;
        }
        self.next_metadata = Instant::now() + METADATA_REFRESH;
        let topic = &self.config.topics.customer_signals;
        let timeout = Duration::from_millis(u64::from(self.config.kafka.request_timeout_ms));
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) {
            let count = partitions_of(&metadata, topic).len() as i32;
            if let Ok(mut ownership) = self.view.ownership.lock() {
                ownership.partitions = (count > 0).then_some(count);
            }
        }
    }

    /// Scores the customers due, sends what changed to the health topic and back to the
    /// signals topic, and sets the gauges.
    fn publish(&mut self) {
        let all = self
            .last_rescore_all
            .is_none_or(|at| at.elapsed() >= RESCORE_ALL);
        if all {
            self.last_rescore_all = Some(Instant::now());
        }
        let now = (self.clock)();
        let (restoring, owned, partitions): (Vec<i32>, BTreeSet<i32>, Option<i32>) = self
            .view
            .ownership
            .lock()
            .map(|o| {
                (
                    o.restoring.keys().copied().collect(),
                    o.owned.clone(),
                    o.partitions,
                )
            })
            .unwrap_or_default();
        // A customer is sent again by its owner only: one of a partition being restored
        // waits for the restore, one of a partition gone is its new owner's to publish.
        let mut again: Vec<String> = Vec::new();
        if let Ok(mut waiting) = self.health_again.lock() {
            waiting.retain(|id| {
                let partition = partitions.and_then(|n| partition_of(id, n));
                match partition {
                    Some(p) if owned.contains(&p) && !restoring.contains(&p) => {
                        again.push(id.clone());
                        false
                    }
                    Some(p) => owned.contains(&p),
                    None => true,
                }
            });
        }
        let (changes, totals, held, forgotten, resend) = {
            let Ok(mut customers) = self.view.customers.lock() else {
                return;
            };
            let resend: Vec<(String, Option<Published>)> = again
                .into_iter()
                .map(|id| {
                    let published = customers.published(&id, &self.view.model);
                    (id, published)
                })
                .collect();
            let changes = customers.rescore(&self.view.model, self.bucket_ms, now, all, |p| {
                !restoring.contains(&p)
            });
            (
                changes,
                customers.totals(),
                customers.len(),
                customers.take_forgotten(),
                resend,
            )
        };
        let metrics = self.metrics.clone();
        metrics.health.last_rescore_time.set(now as f64 / 1000.0);
        let health = &metrics.health;
        health.customers_owned.set(held as i64);
        health.customers_forgotten.inc_by(forgotten);
        // Segments beyond the cap add up in `other`, as KPI series do.
        let mut labelled: BTreeMap<(Band, String), BandTotal> = BTreeMap::new();
        for ((band, segment), total) in &totals {
            let label = match segment {
                None => String::new(),
                Some(segment) => match self.segment_label(segment) {
                    Some(label) => label,
                    None => continue,
                },
            };
            let sum = labelled.entry((*band, label)).or_default();
            sum.customers += total.customers;
            sum.mrr += total.mrr;
        }
        // Set in place, and only the series gone removed: a scrape never sees a series
        // missing for a moment.
        for ((band, segment), total) in &labelled {
            let labels = [band.name(), segment.as_str()];
            health
                .customers_by_health
                .with_label_values(&labels)
                .set(total.customers as i64);
            health
                .mrr_by_health
                .with_label_values(&labels)
                .set(total.mrr_major());
        }
        for (band, segment) in &self.labelled {
            if !labelled.contains_key(&(*band, segment.clone())) {
                let labels = [band.name(), segment.as_str()];
                let _ = health.customers_by_health.remove_label_values(&labels);
                let _ = health.mrr_by_health.remove_label_values(&labels);
            }
        }
        self.labelled = labelled.into_keys().collect();
        for change in &changes {
            if let Some((from, to)) = change.transition {
                let segment = change
                    .published
                    .as_ref()
                    .and_then(|p| p.health.segment.as_deref())
                    .and_then(|segment| self.segment_label(segment));
                for segment in std::iter::once("").chain(segment.as_deref()) {
                    health
                        .transitions
                        .with_label_values(&[from.name(), to.name(), segment])
                        .inc();
                }
            }
            self.send_health(&change.customer_id, change.published.as_ref());
        }
        for (customer_id, published) in resend {
            if !changes.iter().any(|c| c.customer_id == customer_id) {
                self.send_health(&customer_id, published.as_ref());
            }
        }
        self.follow_up(&restoring);
    }

    /// Sends a customer's health to the health topic, and what was published back to the
    /// signals topic (tombstones when it has no score any more). Either failing, both are
    /// sent again at the next publish, as the customer's health is then.
    fn send_health(&self, customer_id: &str, published: Option<&Published>) {
        let health_payload = published.and_then(|p| {
            serde_json::to_vec(&HealthMessage::of(
                &p.health,
                &self.config.billing.base_currency,
            ))
            .ok()
        });
        let published_payload = published.and_then(|p| serde_json::to_vec(p).ok());
        let mut record =
            FutureRecord::<str, Vec<u8>>::to(&self.config.topics.customer_health).key(customer_id);
        if let Some(payload) = &health_payload {
            record = record.payload(payload);
        }
        let to_health = self.producer.send_result(record).map_err(|(e, _)| e);
        let key = customer_signals::published_key(customer_id);
        let partition = self
            .view
            .ownership
            .lock()
            .ok()
            .and_then(|o| o.partitions)
            .and_then(|n| partition_of(customer_id, n));
        let to_signals = match partition {
            Some(partition) => {
                let mut record =
                    FutureRecord::<String, Vec<u8>>::to(&self.config.topics.customer_signals)
                        .key(&key)
                        .partition(partition);
                if let Some(payload) = &published_payload {
                    record = record.payload(payload);
                }
                self.producer.send_result(record).map_err(|(e, _)| e)
            }
            None => Err(rdkafka::error::KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::UnknownTopic,
            )),
        };
        let (metrics, again, customer_id) = (
            self.metrics.clone(),
            self.health_again.clone(),
            customer_id.to_owned(),
        );
        self.runtime.spawn(async move {
            let health_sent = match to_health {
                Ok(delivery) => matches!(delivery.await, Ok(Ok(_))),
                Err(_) => false,
            };
            let record_sent = match to_signals {
                Ok(delivery) => matches!(delivery.await, Ok(Ok(_))),
                Err(_) => false,
            };
            if health_sent {
                metrics.health.health_messages.inc();
            } else {
                metrics.health.health_failures.inc();
            }
            if record_sent {
                metrics.health.signals_sent.inc();
            } else {
                metrics.health.signals_failures.inc();
            }
            if !(health_sent && record_sent)
                && let Ok(mut again) = again.lock()
            {
                again.push(customer_id);
            }
        });
    }

    /// The `segment` label of a customer's segment on the health gauges: none when the
    /// configuration has no `segment` dimension or the value is empty (those customers count
    /// in the overall series only), `other` past `dimensions.max_values` segments.
    fn segment_label(&mut self, segment: &str) -> Option<String> {
        if segment.is_empty() || !self.config.dimensions.names.iter().any(|n| n == "segment") {
            return None;
        }
        if self.segments.contains(segment) {
            return Some(segment.to_owned());
        }
        if self.segments.len() < self.config.dimensions.max_values {
            self.segments.insert(segment.to_owned());
            return Some(segment.to_owned());
        }
        Some(OTHER.to_owned())
    }

    /// Writes each detractor's answer not followed up yet to the feedback topic, with its
    /// customer's health now; once the broker has it, a tombstone of the answer to the
    /// signals topic, so that no owner follows it up again. Answers of partitions being
    /// restored wait: their tombstones may be further on.
    fn follow_up(&mut self, restoring: &[i32]) {
        if let Ok(mut again) = self.feed_again.lock() {
            for key in again.drain(..) {
                self.in_flight.remove(&key);
            }
        }
        let due: Vec<(String, i32)> = self
            .tombstones_due
            .lock()
            .map(|mut due| std::mem::take(&mut *due))
            .unwrap_or_default();
        for (key, partition) in due {
            self.runtime
                .spawn(write_tombstone(self.tombstone_writer(), key, partition));
        }
        let Ok(customers) = self.view.customers.lock() else {
            return;
        };
        let mut refused = None;
        let mut followed = Vec::new();
        // In the order they were answered: keys order them by text, not by time.
        let mut due: Vec<(&String, &(i32, AnswerMessage))> = self
            .answers
            .iter()
            .filter(|(key, (partition, _))| {
                !restoring.contains(partition) && !self.in_flight.contains(*key)
            })
            .collect();
        due.sort_by_key(|(_, (_, answer))| answer.answered_at_ms);
        for (key, (partition, answer)) in due {
            let published = customers.published(&answer.customer_id, &self.view.model);
            let health = published.as_ref().map(|p| &p.health);
            let message = FeedbackMessage {
                customer_id: &answer.customer_id,
                event_id: &answer.event_id,
                survey: &answer.survey,
                score: answer.score,
                comment: answer.comment.as_deref(),
                answered_at: rfc3339(answer.answered_at_ms),
                mrr: health.map(|h| major(i128::from(h.mrr))),
                currency: &self.config.billing.base_currency,
                band: health.map(|h| h.score.band),
                health_score: health.map(|h| h.score.score),
                segment: health.and_then(|h| h.segment.as_deref()),
            };
            let Ok(payload) = serde_json::to_vec(&message) else {
                continue;
            };
            let record = FutureRecord::to(&self.config.topics.feedback)
                .key(&answer.customer_id)
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    followed.push(key.clone());
                    let (metrics, again, writer) = (
                        self.metrics.clone(),
                        self.feed_again.clone(),
                        self.tombstone_writer(),
                    );
                    let (key, partition) = (key.clone(), *partition);
                    self.runtime.spawn(async move {
                        match delivery.await {
                            Ok(Ok(_)) => {
                                metrics.health.feedback_messages.inc();
                                write_tombstone(writer, key, partition).await;
                            }
                            _ => {
                                metrics.health.feedback_failures.inc();
                                if let Ok(mut again) = again.lock() {
                                    again.push(key);
                                }
                            }
                        }
                    });
                }
                Err((e, _)) => {
                    self.metrics.health.feedback_failures.inc();
                    refused = Some(e);
                }
            }
        }
        drop(customers);
        self.in_flight.extend(followed);
        // One line per publish, however many answers wait.
        if let Some(e) = refused {
            warn!(error = %e, topic = self.config.topics.feedback, "could not queue feedback messages; they are written again at the next publish");
        }
    }

    fn tombstone_writer(&self) -> TombstoneWriter {
        TombstoneWriter {
            producer: self.producer.clone(),
            topic: self.config.topics.customer_signals.clone(),
            due: self.tombstones_due.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Writes the tombstones of answers followed up.
struct TombstoneWriter {
    producer: Producer,
    topic: String,
    due: Arc<Mutex<Vec<(String, i32)>>>,
    metrics: Arc<Metrics>,
}

/// Writes the tombstone of an answer followed up; one that fails is due again.
async fn write_tombstone(writer: TombstoneWriter, key: String, partition: i32) {
    let record = FutureRecord::<String, [u8]>::to(&writer.topic)
        .key(&key)
        .partition(partition);
    let delivered = match writer.producer.send_result(record) {
        Ok(delivery) => matches!(delivery.await, Ok(Ok(_))),
        Err(_) => false,
    };
    if delivered {
        writer.metrics.health.signals_sent.inc();
    } else {
        writer.metrics.health.signals_failures.inc();
        if let Ok(mut due) = writer.due.lock() {
            due.push((key, partition));
        }
    }
}

/// A detractor's answer on the feedback topic (docs/output.md).
#[derive(Serialize)]
struct FeedbackMessage<'a> {
    customer_id: &'a str,
    event_id: &'a str,
    survey: &'a str,
    score: u8,
    comment: Option<&'a str>,
    answered_at: String,
    /// The customer's MRR, band, score and segment when the answer is followed up; `None`
    /// while its owner has no score of it.
    mrr: Option<f64>,
    currency: &'a str,
    band: Option<Band>,
    health_score: Option<f64>,
    segment: Option<&'a str>,
}
