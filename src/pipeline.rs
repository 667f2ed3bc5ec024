//! The Kafka adapter: the consume-process-publish loop around the pure core.
//!
//! A fixed set of workers ([`worker`]) parse and aggregate the input partitions in parallel:
//! each partition is routed to one worker, which owns its state and reads it from the
//! partition's own librdkafka queue, so no lock is taken per event and each partition is
//! read in order. The loop itself selects over rebalance notices, dead-letter failures, the
//! publish tick and shutdown; at each publish it asks every worker for its partitions'
//! progress and components and merges them, as it merges those of other instances. The
//! Kafka log is the source of truth:
//! whenever partitions are assigned, survey and ticket partitions seek to the first offset
//! within the largest window (plus one bucket) and billing partitions to their beginning,
//! and the state of each partition is rebuilt from there. Offsets are committed for lag
//! tools only, and serve one more purpose: the committed offset tells which replayed
//! messages an earlier run already counted, dead-lettered or reported, so a restart does not
//! count them twice.

mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::customer_signals::{self, RestoredParts, SignalsWriter};
use crate::deadletter::DeadLetters;
use crate::exchange::ComponentsWriter;
use crate::http::ServedState;
use crate::kafka::{
    ErrorLog, Producer, components_producer_settings, group_consumer_config, producer,
};
use crate::metrics::Metrics;
use crate::periods::{Due, PeriodStore, PeriodWriter};
use crate::rates::RatesFeed;
use kpi_core::aggregate::{Aggregates, ReplayHorizon};
use kpi_core::components::{Incomplete, PartitionComponents, ReceivedComponents};
use kpi_core::event::Family;
use kpi_core::health::parts::CustomerPart;
use kpi_core::kpi::KpiRecord;
use kpi_core::partition::PartitionId;
use kpi_core::period_components::{PeriodComponents, Restored};
use kpi_core::policy::{self, History, SentValues, UNKNOWN_END};
use worker::{CaughtUp, Command, Queue, Worker, worker_of};

/// The group consumer of the input topics.
type GroupConsumer = StreamConsumer<ConsumerCallbacks>;

/// Messages handled per wake-up of a worker, at most; a batch shares one clock read.
const BATCH: usize = 512;

/// How long restoring customer signal parts waits for the signals topic to make progress.
const SIGNALS_PATIENCE: Duration = Duration::from_secs(30);

/// Where the replay of one assigned partition starts and ends.
#[derive(Debug, Clone, Copy)]
struct Replay {
    /// High watermark when assigned: the partition has caught up once it reads this far.
    end: i64,
    /// Messages from this offset on were not yet reported by an earlier run (the group's
    /// committed offset); earlier ones are replayed into the state only.
    count_from: i64,
    /// Next offset to read.
    position: i64,
}

impl Replay {
    fn caught_up(&self) -> bool {
        self.position >= self.end
    }
}

/// What a rebalance callback found, handed to the loop.
enum Rebalance {
    /// The group gave this instance an assignment (possibly empty).
    Joined,
    /// With the partition's own queue, split off before the partition was assigned, what is
    /// restored before its replay.
    Assigned(PartitionId, Replay, Option<Queue>, RestoredState),
    Revoked(PartitionId),
    /// The group took the partitions away without a handover (the session timed out, for
    /// instance during a broker outage): the values are frozen until a new assignment has
    /// been replayed, rather than published without these partitions.
    Lost,
}

/// What an assigned partition restores before its replay: the records of its calendar
/// periods, and the customer signal parts it wrote.
#[derive(Default)]
struct RestoredState {
    periods: Vec<PeriodComponents>,
    signals: Vec<(Arc<str>, CustomerPart)>,
}

/// librdkafka callbacks: rebalances (with the replay seek), statistics and errors. They run
/// on the consumer's poll, inside `recv()`, and hand their findings to the loop.
pub struct ConsumerCallbacks {
    /// The consumer these callbacks serve, to split the queue of each partition it is
    /// assigned; set once it exists.
    consumer: OnceLock<Weak<GroupConsumer>>,
    topics: [(String, Family); 3],
    replay: ReplayHorizon,
    /// The period records every replay restores from.
    periods: Arc<PeriodStore>,
    timeout: Duration,
    clock: Clock,
    changes: Mutex<Vec<Rebalance>>,
    changed: Notify,
    pending: AtomicBool,
    status: Arc<ServedState>,
    /// High watermark of each partition the client fetches from, as of its last fetch
    /// (statistics, every second). A paused partition is not fetched: its figure is stale.
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    errors: ErrorLog,
    /// Whether a partition without a committed offset reports its history (see
    /// [`count_from`]).
    report_history: bool,
    /// No assignment has been planned yet in this process.
    first_assignment: AtomicBool,
    /// With customer health on: where assigned partitions restore their customer signal
    /// parts from.
    signals: Option<(Arc<Config>, Arc<Metrics>)>,
}

impl ConsumerCallbacks {
    fn family(&self, topic: &str) -> Option<Family> {
        self.topics
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, f)| *f)
    }

    fn push(&self, change: Rebalance) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.push(change);
        }
        self.pending.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Records whether a broker is reachable; a change is logged once, which is all an
    /// outage logs (the repeated errors of each attempt go to the debug level).
    fn set_broker_up(&self, up: bool) {
        if up != self.status.broker_up.swap(up, Ordering::Relaxed) {
            if up {
                info!("broker reachable again");
            } else {
                warn!("no broker reachable; retrying");
            }
        }
    }

    /// Sets the start offset of every partition in `tpl` and reports the assignments.
    fn plan_replay(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        // The first replay restores the periods written before this start.
        if !self.periods.wait_loaded(self.timeout) {
            warn!(
                "the periods topic was not read to its end in time; its periods are replayed instead"
            );
        }
        let now = (self.clock)();
        let wanted = self.replay.wanted(now);
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        // The periods each partition restores from their records, which need no replay of
        // their start.
        let mut restored: HashMap<(String, i32), Vec<PeriodComponents>> = HashMap::new();
        let mut by_time = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            let records: Vec<PeriodComponents> = self
                .periods
                .records(topic, *partition, &wanted)
                .into_iter()
                .filter(|r| self.replay.matches(r))
                .collect();
            let marks: Vec<Restored> = records
                .iter()
                .filter_map(|r| {
                    Some(Restored {
                        kind: r.kind()?,
                        number: r.number,
                        through_offset: r.through_offset,
                    })
                })
                .collect();
            if let Some(family) = self.family(topic).filter(|f| *f != Family::Billing) {
                let since = self.replay.since_ms_restored(family, now, &marks);
                let _ = by_time.add_partition_offset(topic, *partition, Offset::Offset(since));
            }
            restored.insert((topic.clone(), *partition), records);
        }
        // An assignment of billing partitions only has nothing to look up (and librdkafka
        // refuses an empty list).
        let found = if by_time.count() == 0 {
            None
        } else {
            retry("look up offsets by time", || {
                consumer.offsets_for_times(by_time.clone(), self.timeout)
            })
        };
        let committed = retry("read committed offsets", || {
            consumer.committed_offsets(tpl.clone(), self.timeout)
        });
        let committed_of = |topic: &str, partition: i32| match committed
            .as_ref()
            .and_then(|c| c.find_partition(topic, partition))
            .map(|e| e.offset())
        {
            Some(Offset::Offset(c)) => Some(c),
            _ => None,
        };
        // A group's first assignment in this process with no committed offset at all: a new
        // group (or one whose offsets expired). An unknown answer is not taken for one.
        let history = if self.first_assignment.swap(false, Ordering::AcqRel) {
            let offsets: Option<Vec<Option<i64>>> = committed.as_ref().map(|_| {
                partitions
                    .iter()
                    .map(|(t, p)| committed_of(t, *p))
                    .collect()
            });
            History::of_first_assignment(offsets.as_deref(), self.report_history)
        } else {
            History::Reported
        };
        let mut signals = self.restore_signals(&partitions);
        for (topic, partition) in partitions {
            let Some(family) = self.family(&topic) else {
                continue;
            };
            // Unknown watermarks: replay from the beginning, and learn the end later
            // (`Replay::end` stays unknown until then, so the partition is not caught up).
            let (low, high) = retry("read watermarks", || {
                consumer.fetch_watermarks(&topic, partition, self.timeout)
            })
            .unwrap_or((0, UNKNOWN_END));
            let by_time = found
                .as_ref()
                .and_then(|f| f.find_partition(&topic, partition))
                .filter(|e| e.error().is_ok())
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let records = restored
                .remove(&(topic.clone(), partition))
                .unwrap_or_default();
            let parts = signals
                .remove(&(topic.clone(), partition))
                .unwrap_or_default();
            let through = records.iter().map(|r| r.through_offset).min();
            let start = policy::replay_start(family, by_time, low, through);
            let count_from =
                policy::count_from(committed_of(&topic, partition), start, high, history);
            let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(start));
            let queue = self.split_queue(&topic, partition);
            info!(
                topic,
                partition,
                start,
                end = high,
                count_from,
                restored_periods = records.len(),
                restored_customers = parts.len(),
                "partition assigned, replaying"
            );
            self.push(Rebalance::Assigned(
                PartitionId::new(family, partition),
                Replay {
                    end: high,
                    count_from,
                    position: start,
                },
                queue,
                RestoredState {
                    periods: records,
                    signals: parts,
                },
            ));
        }
    }

    /// The customer signal parts `partitions` wrote, read from the customer signals topic
    /// (none with customer health off). A topic that cannot be read is logged and counted:
    /// the partitions then replay without them, and their customers' signals count only the
    /// replayed events.
    fn restore_signals(&self, partitions: &[(String, i32)]) -> RestoredParts {
        let Some((config, metrics)) = self.signals.as_ref().filter(|_| !partitions.is_empty())
        else {
            return HashMap::new();
        };
        let wanted: HashSet<(String, i32)> = partitions.iter().cloned().collect();
        match customer_signals::read_parts(config, &wanted, SIGNALS_PATIENCE) {
            Ok(parts) => parts,
            Err(e) => {
                metrics
                    .health
                    .signals_restore_failures
                    .inc_by(partitions.len() as u64);
                error!(error = %e, "customer signal parts not restored; the partitions' customers count only the replayed events");
                HashMap::new()
            }
        }
    }

    /// Gives a partition about to be assigned a queue of its own. librdkafka then never
    /// forwards the partition's messages to the consumer's main queue: only the worker that
    /// owns the partition reads them.
    fn split_queue(&self, topic: &str, partition: i32) -> Option<Queue> {
        let queue = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .and_then(|consumer| consumer.split_partition_queue(topic, partition));
        if queue.is_none() {
            error!(
                topic,
                partition, "no queue of its own for the partition; it is read from the main queue"
            );
        }
        queue
    }
}

/// Runs a metadata call up to three times; `None` (logged) when it keeps failing. A
/// partition just created or moved has no leader for a moment, so a failure that a retry
/// mends is only a debug line: one warning per call that failed for good.
fn retry<T>(what: &str, mut call: impl FnMut() -> Result<T, KafkaError>) -> Option<T> {
    const ATTEMPTS: u64 = 3;
    let mut attempt = 1;
    loop {
        match call() {
            Ok(v) => return Some(v),
            Err(e) if attempt == ATTEMPTS => {
                warn!(attempts = ATTEMPTS, error = %e, "could not {what}");
                return None;
            }
            Err(e) => debug!(attempt, error = %e, "could not {what}; trying again"),
        }
        std::thread::sleep(Duration::from_millis(200 * attempt));
        attempt += 1;
    }
}

impl ClientContext for ConsumerCallbacks {
    fn stats(&self, stats: Statistics) {
        let up = stats
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.set_broker_up(up);
        let high_watermarks = stats
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.hi_offset >= 0 && p.desired)
                    .map(|p| ((t.topic.clone(), p.partition), p.hi_offset))
            })
            .collect();
        if let Ok(mut slot) = self.high_watermarks.lock() {
            *slot = high_watermarks;
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.set_broker_up(false);
        }
        self.errors.report("kafka client error", &error, reason);
    }
}

impl ConsumerContext for ConsumerCallbacks {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.push(Rebalance::Joined);
                self.plan_replay(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if consumer.assignment_lost() {
                    warn!("partition assignment lost; serving the last values until reassigned");
                    self.push(Rebalance::Lost);
                }
                for e in tpl.elements() {
                    if let Some(family) = self.family(e.topic()) {
                        info!(
                            topic = e.topic(),
                            partition = e.partition(),
                            "partition revoked"
                        );
                        self.push(Rebalance::Revoked(PartitionId::new(family, e.partition())));
                    }
                }
                // Commit what the loop stored, so the next owner re-reports as little as
                // possible (at most one publish interval).
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    debug!(error = %e, "commit on revoke");
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                error!(error = ?other, "rebalance failed");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            error!(error = %e, "could not apply the rebalance");
        }
    }
}

/// Whether the output topic takes the published values. A missing topic or a broker that
/// refuses them fails every message of every publish: that is logged once when it starts and
/// once when it ends (each failure is counted in `kpi_output_failures_total`), and the
/// publish after a failure sends every value, so that a consumer of the topic misses none
/// once it works again.
#[derive(Debug, Default)]
struct OutputHealth {
    failing: AtomicBool,
    /// A message was lost since the last publish.
    lost: AtomicBool,
}

impl OutputHealth {
    fn failed(&self, error: &KafkaError) {
        self.lost.store(true, Ordering::Release);
        if !self.failing.swap(true, Ordering::AcqRel) {
            warn!(error = %error, "output messages failing; every value is sent again once they succeed");
        }
    }

    fn delivered(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            info!("output messages delivered again");
        }
    }
}

/// An assigned partition as the loop knows it: as planned, then as its worker reports it.
#[derive(Debug, Clone, Copy)]
struct Assigned {
    replay: Replay,
    /// Next offset to commit: one past the last message handled live.
    next_offset: Option<i64>,
    /// Tells this assignment of the partition from earlier ones in a worker's notices.
    generation: u64,
}

/// Everything the loop owns.
pub struct Pipeline {
    config: Arc<Config>,
    consumer: Arc<GroupConsumer>,
    producer: Producer,
    /// Holds no partition: the windows and CLV window that merged components are computed
    /// with.
    kpis: Aggregates,
    metrics: Arc<Metrics>,
    status: Arc<ServedState>,
    clock: Clock,
    /// The workers, until `run` starts them.
    idle: Vec<Worker>,
    /// Where each worker takes its commands, indexed like the workers.
    workers: Vec<mpsc::UnboundedSender<Command>>,
    /// Partitions that caught up, as their workers tell.
    caught_up_partitions: mpsc::UnboundedReceiver<CaughtUp>,
    assigned: HashMap<PartitionId, Assigned>,
    /// The generation of the latest assignment.
    generation: u64,
    /// Whether the group has assigned partitions at least once.
    joined: bool,
    /// Whether the partition counts of every input topic have been read (they only grow).
    partitions_known: bool,
    /// Every assigned partition has caught up; mirrored to [`ServedState`] after each publish,
    /// so /readyz never reports ready before the values it would serve exist.
    caught_up: bool,
    dead_letters: Arc<DeadLetters>,
    /// The rates the workers convert with; the group is joined once they are known.
    rates: RatesFeed,
    components: ComponentsWriter,
    period_writer: PeriodWriter,
    /// Writes the customer signal parts; none with customer health off.
    signals: Option<SignalsWriter>,
    /// Components received from the other instances, and the input partition counts.
    received: Arc<Mutex<ReceivedComponents>>,
    /// Partitions paused because their dead letters cannot be delivered, each with when
    /// its pause began (Unix ms).
    paused: HashMap<(String, i32), i64>,
    /// End offsets read from the broker for partitions while they were paused, since the
    /// client's statistics stop following a partition it does not fetch. An end offset only
    /// grows, so a figure stays a valid lower bound after the partition resumes, until the
    /// client's own catches up.
    looked_up_ends: HashMap<(String, i32), i64>,
    /// What was last sent per output key.
    sent: SentValues,
    last_full_publish_ms: Option<i64>,
    /// A full snapshot was asked for while the global values were incomplete.
    full_pending: bool,
    /// Whether output messages are failing; a failure also means a full snapshot next time.
    output: Arc<OutputHealth>,
    /// Received components computed longer ago than this are missing, not merely stale.
    stale_after_ms: i64,
    newest_event_ms: [Option<i64>; 3],
}

impl Pipeline {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        status: Arc<ServedState>,
        received: Arc<Mutex<ReceivedComponents>>,
        periods: Arc<PeriodStore>,
        rates: RatesFeed,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let settings = config.state_settings()?;
        let replay = settings.replay_horizon();
        let events = ConsumerCallbacks {
            consumer: OnceLock::new(),
            topics: Family::ALL.map(|f| (config.topic(f).to_owned(), f)),
            replay,
            periods,
            timeout: Duration::from_millis(u64::from(config.kafka.request_timeout_ms)),
            clock: clock.clone(),
            changes: Mutex::new(Vec::new()),
            changed: Notify::new(),
            pending: AtomicBool::new(false),
            status: status.clone(),
            high_watermarks: Mutex::new(HashMap::new()),
            errors: ErrorLog::default(),
            report_history: config.events.report_history,
            first_assignment: AtomicBool::new(true),
            signals: config
                .health
                .enabled
                .then(|| (config.clone(), metrics.clone())),
        };
        let consumer: Arc<GroupConsumer> = Arc::new(
            group_consumer_config(&config)
                .create_with_context(events)
                .context("creating the Kafka consumer")?,
        );
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let producer = producer(&config, &[])?;
        let dead_letters = Arc::new(DeadLetters::new(
            producer.clone(),
            config.topics.deadletter.clone(),
            metrics.clone(),
        ));
        let (tell_caught_up, caught_up_partitions) = mpsc::unbounded_channel();
        let mut workers = Vec::new();
        let mut idle = Vec::new();
        for index in 0..config.workers() {
            let (commands, received_commands) = mpsc::unbounded_channel();
            workers.push(commands);
            idle.push(Worker::new(worker::Setup {
                index,
                config: config.clone(),
                consumer: consumer.clone(),
                metrics: metrics.clone(),
                dead_letters: dead_letters.clone(),
                clock: clock.clone(),
                commands: received_commands,
                caught_up: tell_caught_up.clone(),
                rates: rates.clone(),
            })?);
        }
        let components = ComponentsWriter::new(config.clone(), metrics.clone())?;
        // Records as large as components: one tally per series of a partition.
        let period_writer = PeriodWriter::new(
            config.clone(),
            crate::kafka::producer(&config, &components_producer_settings())?,
            metrics.clone(),
        );
        let stale_after_ms =
            (2 * config.publish.snapshot_interval + config.publish.interval).as_millis() as i64;
        let signals = if config.health.enabled {
            Some(SignalsWriter::new(
                config.clone(),
                crate::kafka::producer(&config, &[("compression.type", "lz4".into())])?,
                metrics.clone(),
            ))
        } else {
            None
        };
        Ok(Pipeline {
            components,
            period_writer,
            signals,
            received,
            kpis: Aggregates::new(settings),
            producer,
            consumer,
            config,
            metrics,
            status,
            clock,
            idle,
            workers,
            caught_up_partitions,
            assigned: HashMap::new(),
            generation: 0,
            joined: false,
            partitions_known: false,
            caught_up: false,
            dead_letters,
            rates,
            paused: HashMap::new(),
            looked_up_ends: HashMap::new(),
            sent: SentValues::default(),
            last_full_publish_ms: None,
            full_pending: false,
            output: Arc::new(OutputHealth::default()),
            stale_after_ms,
            newest_event_ms: [None; 3],
        })
    }

    /// The dead-letter producer, shared with the rates reader.
    pub fn dead_letters(&self) -> Arc<DeadLetters> {
        self.dead_letters.clone()
    }

    /// Consumes until `shutdown` is cancelled (or, with `exit_when_caught_up`, until every
    /// assigned partition has caught up), then publishes a final snapshot, flushes and commits.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        exit_when_caught_up: bool,
    ) -> anyhow::Result<()> {
        // No billing event is converted before the rates written until now are known.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            loaded = self.rates.wait_for(Option::is_some) => {
                loaded.map_err(|_| anyhow!("the rates reader stopped before the rates topic was read"))?;
            }
        }
        let topics: Vec<&str> = Family::ALL.iter().map(|f| self.config.topic(*f)).collect();
        self.consumer
            .subscribe(&topics)
            .context("subscribing to the input topics")?;
        info!(?topics, workers = self.workers.len(), "consuming");
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut self.idle)
            .into_iter()
            .map(|worker| tokio::spawn(worker.run()))
            .collect();
        // Rebalances run inside the main queue's `recv()`, on a handle of the loop's own, so
        // that `self` stays free to mutate.
        let consumer = self.consumer.clone();
        let mut tick = tokio::time::interval(self.config.publish.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = consumer.context().changed.notified() => self.apply_changes(),
                _ = self.dead_letters.changed.notified() => self.pause_failing(false),
                _ = tick.tick() => {
                    self.learn_ends();
                    self.publish(false, false).await?;
                }
                Some(partition) = self.caught_up_partitions.recv() => {
                    self.note_caught_up(&partition);
                }
                message = consumer.recv() => match message {
                    Ok(message) => {
                        self.apply_changes();
                        self.forward(&message);
                    }
                    Err(e) => {
                        consumer.context().errors.report("consume error", &e, "");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
            if self.update_readiness() {
                // Publish everything at once when catching up, not at the next tick.
                self.publish(true, false).await?;
                if exit_when_caught_up {
                    break;
                }
            }
        }
        info!("stopping: final snapshot, flush, commit");
        // The workers stop reading once they have reported: nothing is handled that this
        // snapshot and the offsets committed below do not include.
        self.publish(true, true).await?;
        // Dead letters not delivered by then are sent again by the next run, which replays
        // from the committed offset, itself never past an unacknowledged dead letter.
        self.dead_letters.drain(Duration::from_secs(4)).await;
        if let Err(e) = self.producer.flush(Duration::from_secs(3)) {
            warn!(error = %e, "output messages still unacknowledged at shutdown");
        }
        if let Some(writer) = &self.signals {
            writer.flush(Duration::from_secs(3));
        }
        self.store_offsets();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is not an error worth failing on.
            debug!(error = %e, "final commit");
        }
        self.workers.clear();
        for task in tasks {
            task.await.context("a worker of the consume loop failed")?;
        }
        // Queues of assignments not applied hold the consumer, which would then never close.
        if let Ok(mut changes) = consumer.context().changes.lock() {
            changes.clear();
        }
        Ok(())
    }

    /// Sends `command` to the worker of `partition`. A worker that is gone is noticed at the
    /// next publish, which waits for its report.
    fn command(&self, partition: PartitionId, command: Command) {
        let _ = self.workers[worker_of(partition, self.workers.len())].send(command);
    }

    /// A message on the consumer's main queue: that of a partition that has no queue of its
    /// own, for its worker.
    fn forward(&self, message: &BorrowedMessage<'_>) {
        if let Some(family) = self.config.family_of(message.topic()) {
            let partition = PartitionId::new(family, message.partition());
            self.command(partition, Command::Message(message.detach()));
        }
    }

    fn apply_changes(&mut self) {
        let events = self.consumer.context();
        if !events.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let changes = match events.changes.lock() {
            Ok(mut changes) => std::mem::take(&mut *changes),
            Err(_) => return,
        };
        let mut reassigned = false;
        for change in changes {
            match change {
                Rebalance::Joined => {
                    self.joined = true;
                    reassigned = true;
                }
                Rebalance::Assigned(partition, replay, queue, restored) => {
                    let RestoredState {
                        periods: restored,
                        signals,
                    } = restored;
                    self.generation += 1;
                    let generation = self.generation;
                    self.assigned.insert(
                        partition,
                        Assigned {
                            replay,
                            next_offset: None,
                            generation,
                        },
                    );
                    self.command(
                        partition,
                        Command::Take {
                            partition,
                            replay,
                            queue,
                            generation,
                            restored,
                            signals,
                        },
                    );
                }
                Rebalance::Revoked(partition) => {
                    self.assigned.remove(&partition);
                    self.command(partition, Command::Drop(partition));
                    // Revoking resumes a paused partition; pause it again if reassigned.
                    let topic = self.config.topic(partition.family).to_owned();
                    self.paused.remove(&(topic, partition.partition));
                }
                Rebalance::Lost => self.joined = false,
            }
        }
        self.metrics
            .assigned_partitions
            .set(self.assigned.len() as i64);
        // A partition reassigned while its dead letters still fail is paused again.
        if reassigned {
            self.pause_failing(true);
        }
    }

    /// A worker's notice that a partition caught up; one about an earlier assignment of the
    /// partition is out of date.
    fn note_caught_up(&mut self, notice: &CaughtUp) {
        if let Some(assigned) = self.assigned.get_mut(&notice.partition)
            && assigned.generation == notice.generation
        {
            assigned.replay.position = assigned.replay.position.max(notice.position);
        }
    }

    /// Reads the end offsets that were unknown at assignment; the workers learn them at the
    /// next report.
    fn learn_ends(&mut self) {
        for (partition, assigned) in self.assigned.iter_mut() {
            if assigned.replay.end == UNKNOWN_END {
                let topic = self.config.topic(partition.family);
                if let Ok((_, high)) = self.consumer.fetch_watermarks(
                    topic,
                    partition.partition,
                    Duration::from_secs(1),
                ) {
                    assigned.replay.end = high;
                }
            }
        }
    }

    /// Recomputes `caught_up`; true when it has just turned true. The partition counts of
    /// the input topics must be known too, so that the first publish can compute the global
    /// values that `/kpis` serves once ready.
    fn update_readiness(&mut self) -> bool {
        if !self.partitions_known {
            self.partitions_known = self
                .received
                .lock()
                .map(|received| received.partitions_known())
                .unwrap_or(false);
        }
        let caught_up = self.partitions_known
            && self.joined
            && self.assigned.values().all(|a| a.replay.caught_up());
        let turned = caught_up && !self.caught_up;
        if turned {
            info!(partitions = self.assigned.len(), "caught up");
        }
        self.caught_up = caught_up;
        if !caught_up {
            self.status.caught_up.store(false, Ordering::Relaxed);
        }
        turned
    }

    /// Pauses the assigned partitions whose dead letters keep failing (`again`: also those
    /// already paused, after a new assignment) and resumes the recovered ones. A partition
    /// that stays paused keeps the time its pause began.
    fn pause_failing(&mut self, again: bool) {
        let config = &self.config;
        let assigned = &self.assigned;
        let failing: HashSet<(String, i32)> = self
            .dead_letters
            .failing()
            .into_iter()
            .filter(|(topic, partition)| {
                config
                    .family_of(topic)
                    .is_some_and(|f| assigned.contains_key(&PartitionId::new(f, *partition)))
            })
            .collect();
        let mut pause = TopicPartitionList::new();
        for (topic, partition) in &failing {
            if again || !self.paused.contains_key(&(topic.clone(), *partition)) {
                pause.add_partition(topic, *partition);
            }
        }
        let mut resume = TopicPartitionList::new();
        for (topic, partition) in self.paused.keys() {
            if !failing.contains(&(topic.clone(), *partition)) {
                resume.add_partition(topic, *partition);
            }
        }
        if pause.count() > 0 {
            warn!(partitions = ?pause.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect::<Vec<_>>(),
                "pausing partitions until their dead letters are delivered");
            if let Err(e) = self.consumer.pause(&pause) {
                error!(error = %e, "could not pause partitions");
            }
        }
        if resume.count() > 0 {
            info!("dead letters delivered; resuming partitions");
            if let Err(e) = self.consumer.resume(&resume) {
                error!(error = %e, "could not resume partitions");
            }
        }
        self.metrics.paused_partitions.set(failing.len() as i64);
        let now = (self.clock)();
        let paused = failing
            .into_iter()
            .map(|p| {
                let since = self.paused.get(&p).copied().unwrap_or(now);
                (p, since)
            })
            .collect();
        self.paused = paused;
    }

    /// Stores, for commit, each partition's next offset, but never past a dead letter that
    /// the broker has not acknowledged.
    fn store_offsets(&self) {
        let mut tpl = TopicPartitionList::new();
        for (partition, assigned) in &self.assigned {
            let topic = self.config.topic(partition.family);
            let Some(safe) = policy::commit_offset(
                assigned.next_offset,
                assigned.replay.caught_up(),
                self.dead_letters.oldest_pending(topic, partition.partition),
                assigned.replay.count_from,
            ) else {
                continue;
            };
            let _ = tpl.add_partition_offset(topic, partition.partition, Offset::Offset(safe));
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.store_offsets(&tpl)
        {
            debug!(error = %e, "could not store offsets");
        }
    }

    /// Writes the components of the partitions caught up on; once every assigned partition
    /// has caught up, updates the gauges with this instance's values and publishes the
    /// global ones. Then commits the offsets that are safe to commit. `last`: the workers
    /// stop reading once they have reported. Fails if a worker is gone.
    async fn publish(&mut self, full: bool, last: bool) -> anyhow::Result<()> {
        self.apply_changes();
        let now = (self.clock)();
        let local = self.gather(now, last).await?;
        if self.joined {
            self.components.write(&local, now);
        }
        if self.caught_up {
            let records = self.kpis.records(local.values(), now);
            self.metrics.update_kpis(&records);
            self.metrics.last_publish_time.set(now as f64 / 1000.0);
            self.publish_global(&local, now, full);
        }
        self.store_offsets();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            debug!(error = %e, "commit");
        }
        self.status
            .caught_up
            .store(self.caught_up, Ordering::Relaxed);
        self.report_health(now);
        Ok(())
    }

    /// Asks every worker for its partitions' progress and the components of those caught up
    /// at `now`, and notes the progress; the components, by partition.
    async fn gather(
        &mut self,
        now: i64,
        last: bool,
    ) -> anyhow::Result<HashMap<PartitionId, PartitionComponents>> {
        let workers = self.workers.len();
        let mut answers = Vec::with_capacity(workers);
        let mut written: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
        for w in self.period_writer.take_written() {
            if let Some(of_worker) = written.get_mut(worker_of(w.partition, workers)) {
                of_worker.push(w);
            }
        }
        for ((index, commands), written) in self.workers.iter().enumerate().zip(written) {
            let ends = self
                .assigned
                .iter()
                .filter(|(partition, _)| worker_of(**partition, workers) == index)
                .map(|(partition, assigned)| (*partition, assigned.replay.end))
                .collect();
            let (reply, answer) = oneshot::channel();
            commands
                .send(Command::Report {
                    now,
                    ends,
                    last,
                    written,
                    reply,
                })
                .map_err(|_| anyhow!("worker {index} of the consume loop stopped"))?;
            answers.push(answer);
        }
        let mut local = HashMap::new();
        let mut due = Vec::new();
        let mut signals = Vec::new();
        let mut detractors = Vec::new();
        for (index, answer) in answers.into_iter().enumerate() {
            let report = answer
                .await
                .map_err(|_| anyhow!("worker {index} of the consume loop stopped"))?;
            for part in report.partitions {
                // The worker reports what it was last given, as the loop knows it.
                let Some(assigned) = self.assigned.get_mut(&part.partition) else {
                    continue;
                };
                assigned.replay.position = assigned.replay.position.max(part.position);
                assigned.next_offset = part.next_offset;
                if let Some(components) = part.components {
                    local.insert(part.partition, components);
                }
                due.extend(part.periods.into_iter().map(|(components, version)| Due {
                    partition: part.partition,
                    components,
                    version,
                }));
                if !part.signals.is_empty() {
                    signals.push((part.partition, part.signals));
                }
                if !part.detractors.is_empty() {
                    detractors.push((part.partition, part.detractors));
                }
            }
            for (newest, reported) in self.newest_event_ms.iter_mut().zip(report.newest_event_ms) {
                *newest = (*newest).max(reported);
            }
        }
        if self.joined {
            self.period_writer.write(due);
            if let Some(writer) = &mut self.signals {
                let assigned = &self.assigned;
                writer.write(signals, detractors, |p| assigned.contains_key(&p));
            }
        }
        Ok(local)
    }

    /// Computes the global values from this instance's components and those the others
    /// wrote; serves them on `/kpis` and, on the publisher (the owner of the survey topic's
    /// partition 0), sends the changed ones to the output topic, or all of them when `full`
    /// is asked or a full snapshot is due. Nothing while any input partition's components
    /// are missing or stale: never a partial value.
    fn publish_global(
        &mut self,
        local: &HashMap<PartitionId, PartitionComponents>,
        now: i64,
        full: bool,
    ) {
        let publisher = policy::publishes(self.assigned.keys());
        self.metrics.global_publisher.set(i64::from(publisher));
        self.full_pending |= full;
        let result = match self.received.lock() {
            Ok(received) => {
                received.totals(self.kpis.window_names(), local, now - self.stale_after_ms)
            }
            Err(_) => return,
        };
        let (totals, oldest) = match result {
            Ok(complete) => complete,
            Err(Incomplete::Missing(missing)) => {
                self.metrics
                    .global_missing_partitions
                    .set(missing.len() as i64);
                debug!(missing = missing.len(), "global values wait for components");
                return;
            }
            Err(e) => {
                warn!(error = %e, "no global values");
                return;
            }
        };
        self.metrics.global_missing_partitions.set(0);
        self.metrics
            .global_components_age
            .set(oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0));
        let records = self.kpis.records_of(&totals, now);
        let currency = &self.config.billing.base_currency;
        let body: Vec<Value> = records.iter().map(|r| r.to_json(now, currency)).collect();
        match serde_json::to_vec(&body) {
            Ok(bytes) => {
                self.status.kpis.send_replace(Arc::new(bytes));
            }
            Err(e) => error!(error = %e, "could not render /kpis"),
        }
        if !publisher {
            // The next publisher starts from a full snapshot: nothing is known as sent.
            self.sent.forget();
            return;
        }
        let full = policy::full_snapshot_due(
            std::mem::take(&mut self.full_pending),
            self.output.lost.swap(false, Ordering::AcqRel),
            self.last_full_publish_ms,
            now,
            self.config.publish.snapshot_interval.as_millis() as i64,
        );
        if full {
            self.last_full_publish_ms = Some(now);
        }
        self.send_output(&records, &body, full);
    }

    fn send_output(&mut self, records: &[KpiRecord], bodies: &[Value], full: bool) {
        let mut deliveries = Vec::new();
        for (record, body) in records.iter().zip(bodies) {
            let key = record.key();
            if !self.sent.is_news(&key, record, full) {
                continue;
            }
            let payload = body.to_string();
            let out = FutureRecord::to(&self.config.topics.output)
                .key(&key)
                .payload(&payload);
            match self.producer.send_result(out) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    self.sent.sent(key, record);
                }
                Err((e, _)) => {
                    self.metrics.output_failures.inc();
                    self.output.failed(&e);
                }
            }
        }
        let metrics = self.metrics.clone();
        let output = self.output.clone();
        tokio::spawn(async move {
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {
                        metrics.output_messages.inc();
                        output.delivered();
                    }
                    Ok(Err((e, _))) => {
                        metrics.output_failures.inc();
                        output.failed(&e);
                    }
                    Err(_) => {
                        metrics.output_failures.inc();
                        output.failed(&KafkaError::Canceled);
                    }
                }
            }
        });
    }

    fn report_health(&mut self, now: i64) {
        self.report_pauses(now);
        self.metrics.ready.set(i64::from(self.status.ready()));
        for (family, newest) in Family::ALL.iter().zip(self.newest_event_ms) {
            if let Some(ms) = newest {
                self.metrics
                    .newest_event_time
                    .with_label_values(&[self.config.topic(*family)])
                    .set(ms as f64 / 1000.0);
            }
        }
        self.report_lag();
    }

    /// Exports how long the longest pause has lasted and how many partitions have been
    /// paused for longer than `kafka.max_pause`; any such partition makes the service
    /// unready, since the KPIs no longer follow its events.
    fn report_pauses(&self, now: i64) {
        let limit_ms = self.config.kafka.max_pause.as_millis() as i64;
        let ages = || self.paused.values().map(|since| (now - since).max(0));
        let longest_ms = ages().max().unwrap_or(0);
        let too_long = ages().filter(|age| *age > limit_ms).count();
        self.metrics.longest_pause.set(longest_ms as f64 / 1000.0);
        self.metrics.stale_partitions.set(too_long as i64);
        let was = self
            .status
            .paused_too_long
            .swap(too_long > 0, Ordering::Relaxed);
        if too_long > 0 && !was {
            warn!(
                partitions = too_long,
                "partitions paused for longer than kafka.max_pause: not ready"
            );
        }
    }

    /// Sets `kpi_consumer_lag` of every assigned partition: its end offset minus the next
    /// offset the loop will read. The end is the client's latest figure, or for a paused
    /// partition (which the client no longer fetches) the broker's answer to a look-up.
    fn report_lag(&mut self) {
        self.look_up_paused_ends();
        let fetched = self
            .consumer
            .context()
            .high_watermarks
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        self.metrics.consumer_lag.reset();
        for (partition, assigned) in &self.assigned {
            let replay = &assigned.replay;
            let key = (
                self.config.topic(partition.family).to_owned(),
                partition.partition,
            );
            let known_at_assignment = (replay.end != UNKNOWN_END).then_some(replay.end);
            let Some(end) = [
                fetched.get(&key).copied(),
                self.looked_up_ends.get(&key).copied(),
                known_at_assignment,
            ]
            .into_iter()
            .flatten()
            .max() else {
                continue;
            };
            self.metrics
                .consumer_lag
                .with_label_values(&[key.0.as_str(), &key.1.to_string()])
                .set((end - replay.position).max(0));
        }
    }

    /// Reads the end offsets of the paused partitions from the broker, in one request with a
    /// short timeout (it runs in the loop, and only while partitions are paused); skipped
    /// while no broker is reachable. A failed look-up keeps the previous figures. Forgets
    /// the figures of partitions no longer assigned.
    fn look_up_paused_ends(&mut self) {
        let config = &self.config;
        let assigned = &self.assigned;
        self.looked_up_ends.retain(|(topic, partition), _| {
            config
                .family_of(topic)
                .is_some_and(|f| assigned.contains_key(&PartitionId::new(f, *partition)))
        });
        if self.paused.is_empty() || !self.status.broker_up.load(Ordering::Relaxed) {
            return;
        }
        // The offset for the "timestamp" Offset::End (-1) is the partition's end offset.
        let mut latest = TopicPartitionList::new();
        for (topic, partition) in self.paused.keys() {
            let _ = latest.add_partition_offset(topic, *partition, Offset::End);
        }
        match self
            .consumer
            .offsets_for_times(latest, Duration::from_secs(1))
        {
            Ok(ends) => {
                for e in ends.elements() {
                    if let (Offset::Offset(end), Ok(())) = (e.offset(), e.error()) {
                        self.looked_up_ends
                            .insert((e.topic().to_owned(), e.partition()), end);
                    }
                }
            }
            Err(e) => debug!(error = %e, "could not read the end offsets of paused partitions"),
        }
    }
}
