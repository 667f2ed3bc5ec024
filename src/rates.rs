//! The Kafka adapter of the rates topic (`billing.rates_topic`): rates that hold from an
//! instant on, over the fixed `billing.rates` ([`kpi_core::rates`]).
//!
//! Every instance reads the whole topic, assigned rather than subscribed, into its own
//! table: before it joins its group, so that no billing event is converted before every
//! rate written until then is known, and then as rates are written. Each new table goes to
//! the workers whole, as an `Arc` on a watch channel that a worker looks at once per batch:
//! the rates of an event are then one pointer away, as the fixed rates were. The topic is
//! small and rarely written, so the table is copied for each change.
//!
//! A malformed rate is counted like a malformed event (`kpi_events_rejected_total` with the
//! rates topic's name) and dead-lettered; since every instance reads the whole topic at
//! each start, each start counts and dead-letters it again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::deadletter::{DeadLetters, Letter};
use crate::kafka::{LoggedErrors, Reader, partitions_of, rates_consumer_config};
use crate::metrics::Metrics;
use kpi_core::event::Rejection;
use kpi_core::rates::{Rates, parse_rate_change};

/// The longest a poll waits for a message, and so for a shutdown to be noticed.
const POLL: Duration = Duration::from_millis(100);

/// The rates the workers convert with: `None` until the rates topic has been read whole.
pub type RatesFeed = watch::Receiver<Option<Arc<Rates>>>;

/// Where the rates reader publishes the table.
pub type RatesSender = watch::Sender<Option<Arc<Rates>>>;

/// The channel of the rates: without a rates topic it holds the fixed rates from the
/// start; with one, nothing until the topic has been read whole.
pub fn channel(config: &Config) -> (RatesSender, RatesFeed) {
    let fixed = config.billing.rates_topic.is_none();
    watch::channel(fixed.then(|| Arc::new(config.rates())))
}

/// The rates topic, assigned from its beginning, with the end each partition had then.
struct RatesTopic {
    consumer: Reader,
    topic: String,
    /// The partitions not yet read to the end they had when reading began.
    ends: HashMap<i32, i64>,
}

impl RatesTopic {
    /// Assigns every partition of `topic` from its beginning. A topic that does not exist
    /// is waited for while `waiting` says so (a warning logged once), and is an error
    /// otherwise; `None` once `waiting` gives up.
    fn open(
        config: &Config,
        topic: &str,
        waiting: impl Fn() -> bool,
    ) -> anyhow::Result<Option<Self>> {
        let consumer: Reader = rates_consumer_config(config)
            .create_with_context(LoggedErrors::default())
            .context("creating the rates consumer")?;
        let timeout = Duration::from_millis(u64::from(config.kafka.request_timeout_ms));
        let mut warned = false;
        loop {
            match consumer.fetch_metadata(Some(topic), timeout) {
                Ok(metadata) => {
                    let partitions = partitions_of(&metadata, topic);
                    if !partitions.is_empty() {
                        let mut ends = HashMap::new();
                        let mut tpl = TopicPartitionList::new();
                        for p in &partitions {
                            let (low, high) =
                                consumer.fetch_watermarks(topic, *p, timeout).with_context(
                                    || format!("reading the watermarks of {topic}-{p}"),
                                )?;
                            if high > low {
                                ends.insert(*p, high);
                            }
                            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                                .context("assigning the rates topic")?;
                        }
                        consumer.assign(&tpl).context("assigning the rates topic")?;
                        info!(topic, partitions = partitions.len(), "reading rates");
                        return Ok(Some(RatesTopic {
                            consumer,
                            topic: topic.to_owned(),
                            ends,
                        }));
                    }
                    if !waiting() {
                        bail!("the rates topic {topic} (billing.rates_topic) does not exist");
                    }
                    if !warned {
                        warn!(
                            topic,
                            "rates topic not found; no billing event is read until it exists"
                        );
                        warned = true;
                    }
                }
                Err(e) if !waiting() => {
                    return Err(e).with_context(|| format!("reading the metadata of {topic}"));
                }
                Err(e) => debug!(error = %e, "could not read the rates topic's metadata; retrying"),
            }
            std::thread::sleep(POLL);
            if !waiting() {
                return Ok(None);
            }
        }
    }

    /// Whether every message written before reading began has been read.
    fn loaded(&self) -> bool {
        self.ends.is_empty()
    }

    /// The next message, waiting at most [`POLL`].
    fn next(&mut self) -> Option<BorrowedMessage<'_>> {
        let RatesTopic {
            consumer,
            topic,
            ends,
        } = self;
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                if ends
                    .get(&message.partition())
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    ends.remove(&message.partition());
                }
                Some(message)
            }
            Some(Err(e)) => {
                debug!(error = %e, "rates consume error");
                None
            }
            None => {
                // Compaction and transaction markers leave offsets without a message: a
                // partition whose position is past its end has none left to read.
                if !ends.is_empty()
                    && let Ok(positions) = consumer.position()
                {
                    for e in positions.elements_for_topic(topic) {
                        if let Offset::Offset(position) = e.offset()
                            && ends.get(&e.partition()).is_some_and(|end| position >= *end)
                        {
                            ends.remove(&e.partition());
                        }
                    }
                }
                None
            }
        }
    }
}

/// What a message of the rates topic does to `rates`: `None` for a tombstone (compaction's
/// deletion marker, which names no rate).
fn apply(
    rates: &mut Rates,
    payload: Option<&[u8]>,
    config: &Config,
) -> Option<Result<(), Rejection>> {
    let payload = payload?;
    Some(
        parse_rate_change(payload, config.events.max_event_bytes)
            .and_then(|change| rates.insert(&change, config.billing.max_rates)),
    )
}

/// Reads the rates topic into the table on `sender` until `shutdown` is cancelled: the
/// table is first sent once the topic has been read to the end it had when reading began,
/// then after each change. A malformed rate is counted and sent to the dead-letter topic
/// (tasks on `runtime` deliver it). Blocking: it runs on a thread of its own.
pub fn follow_rates(
    config: Arc<Config>,
    sender: RatesSender,
    metrics: Arc<Metrics>,
    dead_letters: Arc<DeadLetters>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(topic) = config.billing.rates_topic.clone() else {
        return Ok(());
    };
    let _runtime = runtime.enter();
    let counters = metrics.topic_counters(&topic);
    let mut rates = config.rates();
    let Some(mut reader) = RatesTopic::open(&config, &topic, || !shutdown.is_cancelled())? else {
        return Ok(());
    };
    let (mut sent, mut changed) = (false, false);
    let mut last_sent = Instant::now();
    while !shutdown.is_cancelled() {
        let message = reader.next();
        let idle = message.is_none();
        if let Some(message) = message {
            counters.consumed.inc();
            match apply(&mut rates, message.payload(), &config) {
                None => {}
                Some(Ok(())) => {
                    counters.processed.inc();
                    changed = true;
                }
                Some(Err(rejection)) => {
                    counters.rejected(rejection.reason).inc();
                    warn!(
                        topic,
                        partition = message.partition(),
                        offset = message.offset(),
                        reason = rejection.reason.code(),
                        detail = rejection.detail,
                        "rate rejected"
                    );
                    dead_letters.send(Letter {
                        topic: topic.clone(),
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                        rejection,
                    });
                }
            }
        }
        // Changes read together go out together: one copy of the table for a burst.
        let due = !sent || (changed && (idle || last_sent.elapsed() >= POLL));
        if reader.loaded() && due {
            if !sent {
                info!(topic, rates = rates.changes(), "rates topic read");
            }
            metrics.rates_held.set(rates.changes() as i64);
            sender.send_replace(Some(Arc::new(rates.clone())));
            (sent, changed) = (true, false);
            last_sent = Instant::now();
        }
    }
    Ok(())
}

/// Reads the whole rates topic once, as it is now, into the fixed rates: for `history`,
/// which converts as the live service did with every rate written. With the rejected
/// rates counted by reason.
pub fn read_whole(config: &Config) -> anyhow::Result<(Rates, BTreeMap<&'static str, u64>)> {
    let mut rates = config.rates();
    let mut rejected = BTreeMap::new();
    let Some(topic) = &config.billing.rates_topic else {
        return Ok((rates, rejected));
    };
    let Some(mut reader) = RatesTopic::open(config, topic, || false)? else {
        return Ok((rates, rejected));
    };
    let timeout = Duration::from_millis(u64::from(config.kafka.request_timeout_ms));
    let mut silent_since = Instant::now();
    while !reader.loaded() {
        match reader.next() {
            Some(message) => {
                silent_since = Instant::now();
                if let Some(Err(rejection)) = apply(&mut rates, message.payload(), config) {
                    *rejected.entry(rejection.reason.code()).or_default() += 1;
                }
            }
            None if silent_since.elapsed() > timeout => {
                bail!("no message from the rates topic {topic} for {timeout:?} before its end");
            }
            None => {}
        }
    }
    Ok((rates, rejected))
}
