//! The input topics as `history` reads them: every partition from where a replay at the
//! first instant starts (the billing topic from its beginning), merged by message time.
//!
//! The live service receives each partition's messages in offset order, and the partitions
//! side by side about when their messages were written. The merge gives exactly that: each
//! partition has a queue of its own, and the next message is always the head with the
//! earliest timestamp, so one partition's order is kept even when its timestamps are not.
//! Only the heads and librdkafka's bounded prefetch are held, whatever the topics' size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::{LoggedErrors, Reader, history_consumer_config, partitions_of};
use kpi_core::event::Family;
use kpi_core::kpi;
use kpi_core::partition::PartitionId;

type Queue = rdkafka::consumer::base_consumer::PartitionQueue<LoggedErrors>;

/// How long a partition that has not reached its end may stay silent before the run gives
/// up on the broker.
const SILENT_LIMIT: Duration = Duration::from_secs(60);

/// One message as the merge hands it over.
pub struct Delivery<'a> {
    pub partition: PartitionId,
    pub offset: i64,
    /// The message's timestamp: when the live service would have received it.
    pub received_ms: i64,
    pub payload: &'a [u8],
}

/// A partition being read: from its start offset to the end it had when reading began.
struct Lane {
    topic: String,
    partition: PartitionId,
    queue: Queue,
    /// The offset after the last message read when reading began.
    end: i64,
}

/// Messages copied out of the consumer, handed from the reading thread to the replay's.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    messages: Vec<(PartitionId, i64, i64, std::ops::Range<usize>)>,
}

/// Messages per batch: enough that handing one over costs nothing per message, few enough
/// that the batches in flight stay small.
const BATCH: usize = 4096;

/// Batches in flight between the two threads.
const BATCHES_IN_FLIGHT: usize = 4;

/// [`read`] on a thread of its own, `deliver` called on this one: fetching, merging and
/// copying the messages then runs beside the replay, on the other core.
pub fn read_beside(
    config: &Config,
    since_ms: [i64; 3],
    to_ms: i64,
    mut deliver: impl FnMut(Delivery<'_>),
) -> anyhow::Result<()> {
    let (batches, received) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
    // Emptied batches go back to be filled again: the same few buffers the whole run,
    // rather than memory allocated on one thread and freed on the other.
    let (emptied, to_refill) = std::sync::mpsc::channel::<Batch>();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut batch = Batch::default();
            let read = read(config, since_ms, to_ms, |message| {
                let start = batch.bytes.len();
                batch.bytes.extend_from_slice(message.payload);
                batch.messages.push((
                    message.partition,
                    message.offset,
                    message.received_ms,
                    start..batch.bytes.len(),
                ));
                if batch.messages.len() >= BATCH {
                    let next = to_refill.try_recv().unwrap_or_default();
                    // The replay's side gone means it failed; the error is its own.
                    let _ = batches.send(std::mem::replace(&mut batch, next));
                }
            });
            if !batch.messages.is_empty() {
                let _ = batches.send(batch);
            }
            read
        });
        for mut batch in received {
            for (partition, offset, received_ms, range) in &batch.messages {
                deliver(Delivery {
                    partition: *partition,
                    offset: *offset,
                    received_ms: *received_ms,
                    payload: batch.bytes.get(range.clone()).unwrap_or_default(),
                });
            }
            batch.bytes.clear();
            batch.messages.clear();
            let _ = emptied.send(batch);
        }
        reader
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the topic reader failed")))
    })
}

/// Reads the configured input topics, each non-billing partition from the first message
/// written at or after its family's `since_ms`, and hands every message to `deliver` in merged order
/// until a message is stamped after `to_ms` (the instants up to then have what they need)
/// or every partition has reached the end it had when reading began.
fn read(
    config: &Config,
    since_ms: [i64; 3],
    to_ms: i64,
    mut deliver: impl FnMut(Delivery<'_>),
) -> anyhow::Result<()> {
    let consumer: Arc<Reader> = Arc::new(
        history_consumer_config(config)
            .create_with_context(LoggedErrors::default())
            .context("creating the history consumer")?,
    );
    let timeout = Duration::from_millis(u64::from(config.kafka.request_timeout_ms));
    let starts = start_offsets(config, &consumer, since_ms, timeout)?;
    let mut assignment = TopicPartitionList::new();
    for start in &starts {
        assignment
            .add_partition_offset(&start.topic, start.partition.partition, start.offset)
            .context("assigning the input topics")?;
    }
    consumer
        .assign(&assignment)
        .context("assigning the input topics")?;
    let mut lanes = Vec::with_capacity(starts.len());
    for start in starts {
        let queue = consumer
            .split_partition_queue(&start.topic, start.partition.partition)
            .with_context(|| format!("reading {}-{}", start.topic, start.partition.partition))?;
        lanes.push(Lane {
            topic: start.topic,
            partition: start.partition,
            queue,
            end: start.end,
        });
    }
    // A message without a timestamp is taken as received with its lane's previous one.
    let earliest = since_ms.into_iter().min().unwrap_or(to_ms);
    let mut heads = BinaryHeap::new();
    for (index, lane) in lanes.iter().enumerate() {
        if let Some(head) = next_message(&consumer, lane, earliest, timeout)? {
            heads.push(Head::new(head, index, earliest));
        }
    }
    while let Some(Head {
        message,
        lane,
        received_ms,
    }) = heads.pop()
    {
        let Some(current) = lanes.get(lane) else {
            bail!("a message of an unknown partition");
        };
        if received_ms > to_ms {
            break;
        }
        deliver(Delivery {
            partition: current.partition,
            offset: message.offset(),
            received_ms,
            payload: message.payload().unwrap_or_default(),
        });
        if message.offset() + 1 < current.end {
            drop(message);
            if let Some(next) = next_message(&consumer, current, received_ms, timeout)? {
                heads.push(Head::new(next, lane, received_ms));
            }
        }
    }
    Ok(())
}

/// Where a partition is read from, and the end it had.
struct Start {
    topic: String,
    partition: PartitionId,
    offset: Offset,
    end: i64,
}

/// The partitions of the input topics that hold messages to read, and where each starts:
/// the billing topic at its beginning (a subscription started years ago is still MRR), the
/// others at the first message written at or after their family's `since_ms` (the open
/// tickets reach back further than the windows). A partition whose earlier
/// messages were deleted by retention is reported on standard error, since the windows and
/// periods reaching before its first message are then partial.
fn start_offsets(
    config: &Config,
    consumer: &Reader,
    since_ms: [i64; 3],
    timeout: Duration,
) -> anyhow::Result<Vec<Start>> {
    let mut starts = Vec::new();
    for family in Family::ALL {
        let topic = config.topic(family);
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let partitions = partitions_of(&metadata, topic);
        if partitions.is_empty() {
            bail!("the input topic {topic} does not exist");
        }
        let mut by_time = TopicPartitionList::new();
        for partition in &partitions {
            by_time
                .add_partition_offset(topic, *partition, Offset::Offset(since_ms[family.index()]))
                .context("looking up offsets by time")?;
        }
        let found = (family != Family::Billing)
            .then(|| consumer.offsets_for_times(by_time, timeout))
            .transpose()
            .with_context(|| format!("looking up the offsets of {topic} by time"))?;
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, timeout)
                .with_context(|| format!("reading the watermarks of {topic}-{partition}"))?;
            // No message written since: an end offset (-1) or none at all.
            let start = match found
                .as_ref()
                .and_then(|f| f.find_partition(topic, partition))
            {
                Some(entry) => match entry.offset() {
                    Offset::Offset(offset) => offset.max(low),
                    _ => high,
                },
                None => low,
            };
            if start >= high {
                continue;
            }
            if low > 0 && start == low {
                eprintln!(
                    "history: warning: {topic}-{partition} begins at offset {low}, its earlier \
                     messages deleted; the windows and periods reaching before its first \
                     message are partial"
                );
            }
            starts.push(Start {
                topic: topic.to_owned(),
                partition: PartitionId::new(family, partition),
                offset: Offset::Offset(start),
                end: high,
            });
        }
    }
    Ok(starts)
}

/// The next message of `lane`, `None` once it has reached its end: either its last message
/// was taken or its position is past the end (the last offsets held no message, as a
/// transaction's marker does not).
fn next_message<'q>(
    consumer: &Reader,
    lane: &'q Lane,
    last_ms: i64,
    timeout: Duration,
) -> anyhow::Result<Option<BorrowedMessage<'q>>> {
    // The common case first: a message already fetched.
    match lane.queue.poll(Duration::ZERO) {
        Some(Ok(message)) => return Ok(Some(message)),
        Some(Err(e)) => tracing::debug!(topic = lane.topic, error = %e, "history consume error"),
        None => {}
    }
    let waiting_since = Instant::now();
    loop {
        // The consumer's own queue serves its callbacks (errors, statistics): while the
        // partition queues keep messages ready it has nothing to serve.
        let _ = consumer.poll(Duration::ZERO);
        match lane.queue.poll(timeout.min(Duration::from_secs(1))) {
            Some(Ok(message)) => return Ok(Some(message)),
            Some(Err(e)) => {
                tracing::debug!(topic = lane.topic, error = %e, "history consume error");
            }
            None => {}
        }
        let position = consumer.position().ok().and_then(|positions| {
            match positions
                .find_partition(&lane.topic, lane.partition.partition)?
                .offset()
            {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            }
        });
        if position.is_some_and(|p| p >= lane.end) {
            return Ok(None);
        }
        if waiting_since.elapsed() > SILENT_LIMIT {
            bail!(
                "no message from {}-{} for {} s (at {}), before its end offset {}",
                lane.topic,
                lane.partition.partition,
                SILENT_LIMIT.as_secs(),
                kpi::rfc3339(last_ms),
                lane.end
            );
        }
    }
}

/// A partition's next message, ordered for the merge: earliest timestamp first, then by
/// lane (family, then partition) so that equal times merge the same way every run.
struct Head<'q> {
    message: BorrowedMessage<'q>,
    lane: usize,
    /// The message's timestamp, or the lane's previous one when it has none.
    received_ms: i64,
}

impl<'q> Head<'q> {
    fn new(message: BorrowedMessage<'q>, lane: usize, previous_ms: i64) -> Self {
        let received_ms = message.timestamp().to_millis().unwrap_or(previous_ms);
        Head {
            message,
            lane,
            received_ms,
        }
    }

    fn key(&self) -> Reverse<(i64, usize)> {
        Reverse((self.received_ms, self.lane))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Head<'_> {}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}
