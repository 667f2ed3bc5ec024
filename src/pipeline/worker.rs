//! A worker of the consume loop: it owns the state of the input partitions routed to it,
//! reads each of them from the partition's own librdkafka queue, and parses and records their
//! messages, in order per partition. The loop hands it partitions and takes them back, and at
//! each publish asks it for their progress and components; nothing is shared per event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use futures_util::{FutureExt as _, StreamExt as _};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use rdkafka::consumer::Consumer;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::{Message, Offset};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{BATCH, ConsumerCallbacks, GroupConsumer, Replay};
use crate::clock::Clock;
use crate::config::Config;
use crate::deadletter::{DeadLetters, Letter};
use crate::metrics::{Metrics, SurveyResponses, TopicCounters};
use crate::rates::RatesFeed;
use kpi_core::aggregate::Aggregates;
use kpi_core::components::PartitionComponents;
use kpi_core::event::{self, Family, Limits, Payload, Rejection};
use kpi_core::health::parts::{CustomerPart, DetractorAnswer, PartChange};
use kpi_core::partition::PartitionId;
use kpi_core::period_components::PeriodComponents;
use kpi_core::policy;

use crate::periods::Written;

/// A partition's own queue of fetched messages.
pub(super) type Queue = StreamPartitionQueue<ConsumerCallbacks>;

/// How long one seek waits for librdkafka's answer, how often it is tried while the
/// partition's fetch has not started yet, and how long apart.
const SEEK_TIMEOUT: Duration = Duration::from_secs(1);
const SEEK_ATTEMPTS: u32 = 100;
const SEEK_RETRY: Duration = Duration::from_millis(20);

/// The worker of `partition` among `workers`: always the same one, so that a partition
/// revoked and assigned again is dropped and taken by one worker, in that order. The
/// partitions of each topic go round the workers, each topic starting one further.
pub(super) fn worker_of(partition: PartitionId, workers: usize) -> usize {
    (partition.partition.unsigned_abs() as usize + partition.family.index()) % workers.max(1)
}

/// What the loop asks of a worker, in the order it asks.
pub(super) enum Command {
    /// Read an assigned partition from its replay start, with fresh state.
    Take {
        partition: PartitionId,
        replay: Replay,
        /// `None` if librdkafka gave the partition no queue of its own: its messages then
        /// come from the loop ([`Command::Message`]).
        queue: Option<Queue>,
        /// Tells this assignment of the partition from earlier ones in [`CaughtUp`].
        generation: u64,
        /// The records its calendar periods are restored from before the replay.
        restored: Vec<PeriodComponents>,
        /// The customer signal parts it wrote earlier, restored before the replay.
        signals: Vec<(Arc<str>, CustomerPart)>,
    },
    /// Forget a revoked partition.
    Drop(PartitionId),
    /// Report every partition's progress, and the components of those caught up at `now`,
    /// after setting the end offsets the loop learned since the assignment. `last`: stop
    /// reading after answering (the loop is shutting down).
    Report {
        now: i64,
        ends: Vec<(PartitionId, i64)>,
        last: bool,
        /// Period records the broker acknowledged since the last report.
        written: Vec<Written>,
        reply: oneshot::Sender<WorkerReport>,
    },
    /// A message of a partition without a queue of its own, read from the main queue.
    Message(OwnedMessage),
}

/// A partition has just caught up, as far as its worker knows.
pub(super) struct CaughtUp {
    pub partition: PartitionId,
    pub generation: u64,
    pub position: i64,
}

/// One partition's part of a [`WorkerReport`].
pub(super) struct PartitionReport {
    pub partition: PartitionId,
    /// Next offset to read.
    pub position: i64,
    /// Next offset to commit: one past the last message handled live.
    pub next_offset: Option<i64>,
    /// Only for a partition that has caught up.
    pub components: Option<PartitionComponents>,
    /// Its period records due to be written, with the versions that confirm them; only for
    /// a partition that has caught up.
    pub periods: Vec<(PeriodComponents, u64)>,
    /// Its customers' signal parts changed since the last report, counting the messages
    /// below `position`; only for a partition that has caught up.
    pub signals: Vec<PartChange>,
    /// The detractors' answers applied since the last report, those counted live only
    /// (at or past `count_from`, as dead letters are: the partition keeps no other, see
    /// [`Aggregates::keep_detractors_from`]); only for a partition that has caught up.
    pub detractors: Vec<DetractorAnswer>,
}

/// A worker's answer to [`Command::Report`].
pub(super) struct WorkerReport {
    pub partitions: Vec<PartitionReport>,
    /// The newest `occurred_at` counted from each family ([`Family::ALL`] order).
    pub newest_event_ms: [Option<i64>; 3],
}

/// An owned partition's progress.
struct Progress {
    replay: Replay,
    next_offset: Option<i64>,
    generation: u64,
    /// The loop knows the partition has caught up.
    told: bool,
    has_queue: bool,
}

/// The per-event counters of a worker, added to the shared ones once per batch: increments
/// from several cores on one counter would contend for its cache line at every event.
struct Counters {
    topics: Vec<TopicCounters<LocalIntCounter>>,
    survey_responses: SurveyResponses<LocalIntCounter>,
    resolution_time: LocalHistogram,
    tickets_abandoned: LocalIntCounter,
    messages: LocalIntCounter,
}

impl Counters {
    fn new(metrics: &Metrics, worker: usize) -> Self {
        Counters {
            topics: Family::ALL
                .iter()
                .map(|f| metrics.topic(*f).local())
                .collect(),
            survey_responses: metrics.survey_responses.local(),
            resolution_time: metrics.resolution_time.local(),
            tickets_abandoned: metrics.tickets_abandoned.local(),
            messages: metrics
                .worker_messages
                .with_label_values(&[&worker.to_string()])
                .local(),
        }
    }

    fn flush(&self) {
        for topic in &self.topics {
            topic.flush();
        }
        self.survey_responses.flush();
        self.resolution_time.flush();
        self.tickets_abandoned.flush();
        self.messages.flush();
    }

    /// Counters of raw inputs, each event counted once.
    fn count_input(&self, event: &event::Event<'_>) {
        match event.payload {
            Payload::SurveyResponded { survey, score, .. } => {
                self.survey_responses.get(survey, score).inc();
            }
            Payload::TicketResolved { opened_at_ms, .. } => {
                let seconds = (event.occurred_at_ms - opened_at_ms) as f64 / 1000.0;
                self.resolution_time.observe(seconds);
            }
            _ => {}
        }
    }
}

/// What a worker needs to build, before it runs.
pub(super) struct Setup {
    pub index: usize,
    pub config: Arc<Config>,
    pub consumer: Arc<GroupConsumer>,
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
    pub clock: Clock,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub caught_up: mpsc::UnboundedSender<CaughtUp>,
    pub rates: RatesFeed,
}

/// A worker: its partitions' queues, apart from their state so that a batch reads the
/// queues while it changes the state.
pub(super) struct Worker {
    queues: Vec<(PartitionId, Queue)>,
    commands: mpsc::UnboundedReceiver<Command>,
    owned: Owned,
}

/// The state of a worker's partitions and what handling their messages needs.
struct Owned {
    config: Arc<Config>,
    consumer: Arc<GroupConsumer>,
    limits: Limits,
    clock: Clock,
    aggregates: Aggregates,
    partitions: HashMap<PartitionId, Progress>,
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    counters: Counters,
    newest_event_ms: [Option<i64>; 3],
    /// Events folded into "other" per dimension, as last added to the shared counter.
    overflow_reported: Vec<u64>,
    caught_up: mpsc::UnboundedSender<CaughtUp>,
    /// The rates the rates reader sent last, taken at the start of each batch.
    rates: RatesFeed,
    /// The queue a batch starts with; it turns, so that no partition waits behind another.
    first: usize,
}

impl Worker {
    pub(super) fn new(setup: Setup) -> anyhow::Result<Self> {
        let Setup {
            index,
            config,
            consumer,
            metrics,
            dead_letters,
            clock,
            commands,
            caught_up,
            rates,
        } = setup;
        let settings = config.state_settings()?;
        let overflow_reported = vec![0; settings.dimensions.len()];
        Ok(Worker {
            queues: Vec::new(),
            commands,
            owned: Owned {
                limits: config.limits(),
                aggregates: Aggregates::new(settings),
                counters: Counters::new(&metrics, index),
                config,
                consumer,
                clock,
                partitions: HashMap::new(),
                dead_letters,
                metrics,
                newest_event_ms: [None; 3],
                overflow_reported,
                caught_up,
                rates,
                first: 0,
            },
        })
    }

    /// Reads the partitions and obeys the loop until it is gone or asks for the last report.
    pub(super) async fn run(mut self) {
        loop {
            let command = {
                let Worker {
                    queues,
                    commands,
                    owned,
                } = &mut self;
                tokio::select! {
                    biased;
                    command = commands.recv() => Some(command),
                    (first, index) = next_message(queues) => {
                        owned.batch(queues, index, first);
                        None
                    }
                }
            };
            match command {
                // Let the loop and the other workers run between batches.
                None => tokio::task::yield_now().await,
                Some(Some(command)) => {
                    if !self.obey(command).await {
                        return;
                    }
                }
                Some(None) => return,
            }
        }
    }

    /// Carries out `command`; false when the worker is to stop.
    async fn obey(&mut self, command: Command) -> bool {
        match command {
            Command::Take {
                partition,
                replay,
                queue,
                generation,
                restored,
                signals,
            } => {
                let count_from = replay.count_from;
                self.take(partition, replay, queue, generation).await;
                let now = (self.owned.clock)();
                self.owned.aggregates.restore(partition, &restored, now);
                self.owned.aggregates.restore_signals(partition, signals);
                self.owned
                    .aggregates
                    .keep_detractors_from(partition, count_from);
            }
            Command::Drop(partition) => {
                self.owned.aggregates.drop_partition(partition);
                self.owned.partitions.remove(&partition);
                self.queues.retain(|(p, _)| *p != partition);
            }
            Command::Report {
                now,
                ends,
                last,
                written,
                reply,
            } => {
                for w in written {
                    self.owned.aggregates.periods_written(
                        w.partition,
                        &[(w.kind, w.number, w.version)],
                        now,
                    );
                }
                // The loop waits for the answer; if it is gone, so is the reason to run.
                let _ = reply.send(self.owned.report(now, &ends));
                return !last;
            }
            Command::Message(message) => self.owned.handle_forwarded(&message),
        }
        true
    }

    /// Starts on a partition from its replay start. The queue is sought there first: the
    /// messages librdkafka fetched for the partition before (for an earlier assignment, or
    /// while the loop passed this one on) are then dropped unread, so the partition is read
    /// from its start once and in order, whatever happened to its queue meanwhile.
    async fn take(
        &mut self,
        partition: PartitionId,
        replay: Replay,
        queue: Option<Queue>,
        generation: u64,
    ) {
        self.owned.aggregates.drop_partition(partition);
        self.queues.retain(|(p, _)| *p != partition);
        let has_queue = queue.is_some();
        if let Some(queue) = queue {
            let topic = self.owned.config.topic(partition.family).to_owned();
            seek(
                self.owned.consumer.clone(),
                topic,
                partition.partition,
                replay.position,
            )
            .await;
            self.queues.push((partition, queue));
        }
        self.owned.partitions.insert(
            partition,
            Progress {
                replay,
                next_offset: None,
                generation,
                told: replay.caught_up(),
                has_queue,
            },
        );
    }
}

/// The first message on any of `queues`, with its queue's index; never, without queues.
async fn next_message(
    queues: &[(PartitionId, Queue)],
) -> (KafkaResult<BorrowedMessage<'_>>, usize) {
    if queues.is_empty() {
        return std::future::pending().await;
    }
    let (message, index, _) = select_all(queues.iter().map(|(_, q)| Box::pin(q.recv()))).await;
    (message, index)
}

/// Sets the fetch position of a partition to `start`, which makes librdkafka drop every
/// message it fetched for the partition before. A seek fails while the partition's fetch
/// has not started yet (it starts shortly after the assignment); it is tried again then,
/// until it succeeds or the partition is no longer assigned.
async fn seek(consumer: Arc<GroupConsumer>, topic: String, partition: i32, start: i64) {
    let sought = tokio::task::spawn_blocking(move || {
        let mut attempt = 1;
        loop {
            match consumer.seek(&topic, partition, Offset::Offset(start), SEEK_TIMEOUT) {
                Ok(()) => return Ok(attempt),
                Err(e) => {
                    let assigned = consumer
                        .assignment()
                        .map_or(true, |a| a.find_partition(&topic, partition).is_some());
                    if attempt == SEEK_ATTEMPTS || !assigned {
                        return Err((topic, e));
                    }
                }
            }
            attempt += 1;
            std::thread::sleep(SEEK_RETRY);
        }
    })
    .await;
    match sought {
        Ok(Ok(attempts)) => debug!(partition, start, attempts, "partition queue sought"),
        Ok(Err((topic, e))) => {
            warn!(topic, partition, start, error = %e, "could not seek the partition to its replay start")
        }
        Err(e) => warn!(partition, error = %e, "seeking the partition failed"),
    }
}

impl Owned {
    /// Handles `first` and the messages already fetched on `queues`, up to [`BATCH`], with
    /// one clock read; then adds the counters to the shared ones and tells the loop which
    /// partitions caught up.
    fn batch(
        &mut self,
        queues: &[(PartitionId, Queue)],
        index: usize,
        first: KafkaResult<BorrowedMessage<'_>>,
    ) {
        let now = (self.clock)();
        self.take_new_rates();
        let mut handled = 0;
        match first {
            Ok(message) => {
                self.handle(&message, now);
                handled += 1;
            }
            Err(e) => self.consume_error(queues[index].0, &e),
        }
        self.first = (self.first + 1) % queues.len();
        for turn in 0..queues.len() {
            let (partition, queue) = &queues[(self.first + turn) % queues.len()];
            let mut messages = queue.stream();
            while handled < BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => {
                        self.handle(&message, now);
                        handled += 1;
                    }
                    Some(Some(Err(e))) => {
                        self.consume_error(*partition, &e);
                        break;
                    }
                    _ => break,
                }
            }
        }
        self.settle();
    }

    fn consume_error(&self, partition: PartitionId, error: &rdkafka::error::KafkaError) {
        let topic = self.config.topic(partition.family);
        self.consumer
            .context()
            .errors
            .report("consume error", error, topic);
    }

    /// A message the loop read from the main queue: handled if its partition has no queue
    /// of its own (otherwise the partition's queue delivers it, in order).
    fn handle_forwarded(&mut self, message: &OwnedMessage) {
        let Some(family) = self.config.family_of(message.topic()) else {
            return;
        };
        let partition = PartitionId::new(family, message.partition());
        if self
            .partitions
            .get(&partition)
            .is_some_and(|p| !p.has_queue)
        {
            let now = (self.clock)();
            self.take_new_rates();
            self.handle(message, now);
            self.settle();
        }
    }

    /// Converts with the rates the rates reader sent since the last batch, if any: one
    /// atomic load when none came.
    fn take_new_rates(&mut self) {
        if self.rates.has_changed().unwrap_or(false)
            && let Some(rates) = self.rates.borrow_and_update().clone()
        {
            self.aggregates.set_rates(rates);
        }
    }

    /// Adds the counters to the shared ones and tells the loop which partitions caught up.
    fn settle(&mut self) {
        self.counters.flush();
        for (partition, progress) in &mut self.partitions {
            if !progress.told && progress.replay.caught_up() {
                progress.told = true;
                // The loop may be shutting down; it asks for a report before it stops.
                let _ = self.caught_up.send(CaughtUp {
                    partition: *partition,
                    generation: progress.generation,
                    position: progress.replay.position,
                });
            }
        }
    }

    fn handle<M: Message>(&mut self, message: &M, now: i64) {
        let topic = message.topic();
        let Some(family) = self.config.family_of(topic) else {
            return;
        };
        let partition = PartitionId::new(family, message.partition());
        let offset = message.offset();
        let Owned {
            config,
            limits,
            aggregates,
            partitions,
            counters,
            newest_event_ms,
            dead_letters,
            ..
        } = self;
        let Some(progress) = partitions.get_mut(&partition) else {
            // Fetched before its partition was revoked.
            return;
        };
        progress.replay.position = offset + 1;
        let live = offset >= progress.replay.count_from;
        counters.messages.inc();
        let topic_counters = &counters.topics[family.index()];
        topic_counters.consumed.inc();
        let bytes = message.payload().unwrap_or_default();
        let reference = event::reference_time(message.timestamp().to_millis(), now);
        let result = event::parse(bytes, family, reference, limits).and_then(|event| {
            let outcome = aggregates.record_at(partition, &event, offset, now)?;
            Ok((event, outcome))
        });
        // A replayed message dropped the same tickets when it was live.
        let abandoned = aggregates.take_abandoned_tickets();
        if live {
            counters.tickets_abandoned.inc_by(abandoned);
        }
        let late_to_deadletter = config.events.late_to_deadletter;
        let report = match &result {
            Ok((_, outcome)) => policy::report(Ok(*outcome), family, live, late_to_deadletter),
            Err(rejection) => {
                policy::report(Err(rejection.reason), family, live, late_to_deadletter)
            }
        };
        if report.processed {
            topic_counters.processed.inc();
        }
        if report.late {
            topic_counters.late.inc();
        }
        if report.duplicate {
            topic_counters.duplicate.inc();
        }
        if let Ok((event, _)) = &result {
            if report.counted {
                let newest = &mut newest_event_ms[family.index()];
                *newest =
                    Some(newest.map_or(event.occurred_at_ms, |n| n.max(event.occurred_at_ms)));
            }
            if report.input {
                counters.count_input(event);
            }
        }
        if let Some(reason) = report.rejected {
            topic_counters.rejected(reason).inc();
            debug!(topic, offset, reason = reason.code(), "rejected");
            let rejection = match result {
                Err(rejection) => rejection,
                Ok(_) => Rejection {
                    reason,
                    detail: policy::late_detail(reason).into(),
                },
            };
            dead_letters.send(Letter {
                topic: topic.to_owned(),
                partition: message.partition(),
                offset,
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                rejection,
            });
        }
        if live {
            progress.next_offset = Some(offset + 1);
        }
    }

    /// Every partition's progress, and the components of those caught up at `now`. A
    /// partition's position also moves to the consumer's, which passes offsets that deliver
    /// no message (transaction markers, compacted or deleted records); every message below
    /// it was handled, since the worker handles what it reads before it reports.
    fn report(&mut self, now: i64, ends: &[(PartitionId, i64)]) -> WorkerReport {
        for (partition, end) in ends {
            if let Some(progress) = self.partitions.get_mut(partition) {
                progress.replay.end = *end;
            }
        }
        if let Ok(positions) = self.consumer.position() {
            for e in positions.elements() {
                let (Some(family), Offset::Offset(position)) =
                    (self.config.family_of(e.topic()), e.offset())
                else {
                    continue;
                };
                if let Some(progress) = self
                    .partitions
                    .get_mut(&PartitionId::new(family, e.partition()))
                {
                    progress.replay.position = progress.replay.position.max(position);
                }
            }
        }
        self.report_overflow();
        let partitions = self
            .partitions
            .iter_mut()
            .map(|(partition, progress)| {
                let caught_up = progress.replay.caught_up();
                progress.told |= caught_up;
                PartitionReport {
                    partition: *partition,
                    position: progress.replay.position,
                    next_offset: progress.next_offset,
                    components: caught_up.then(|| self.aggregates.components(*partition, now)),
                    periods: if caught_up {
                        self.aggregates
                            .period_components(*partition, progress.replay.position, now)
                    } else {
                        Vec::new()
                    },
                    signals: if caught_up {
                        self.aggregates.take_signal_changes(
                            *partition,
                            now,
                            progress.replay.position,
                        )
                    } else {
                        Vec::new()
                    },
                    detractors: if caught_up {
                        self.aggregates.take_detractors(*partition)
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        WorkerReport {
            partitions,
            newest_event_ms: self.newest_event_ms,
        }
    }

    /// Adds the events folded into "other" since the last report to the shared counter.
    fn report_overflow(&mut self) {
        let dims = self.aggregates.dimensions();
        for (dim, name) in dims.names().enumerate() {
            let total = dims.overflowed_events(dim);
            let delta = total - self.overflow_reported[dim];
            if delta > 0 {
                self.metrics
                    .dimension_overflow
                    .with_label_values(&[name])
                    .inc_by(delta);
            }
            self.overflow_reported[dim] = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_always_goes_to_the_same_worker_and_topics_spread_evenly() {
        for workers in 1..=8 {
            let mut load = vec![0; workers];
            for family in Family::ALL {
                for partition in 0..(6 * workers as i32) {
                    let worker = worker_of(PartitionId::new(family, partition), workers);
                    assert!(worker < workers);
                    assert_eq!(
                        worker,
                        worker_of(PartitionId::new(family, partition), workers)
                    );
                    load[worker] += 1;
                }
            }
            assert!(load.iter().all(|l| *l == 18), "{workers}: {load:?}");
        }
        // A topic of fewer partitions than workers does not put them all on worker 0.
        let firsts: Vec<usize> = Family::ALL
            .iter()
            .map(|f| worker_of(PartitionId::new(*f, 0), 3))
            .collect();
        assert_eq!(firsts, [0, 1, 2]);
    }
}
