//! The dead-letter producer: every rejected message is delivered, or retried until it is.
//!
//! A rejected message must never disappear silently, and the dead-letter topic may be
//! missing, full or unreachable. Each record is sent by its own task that retries with
//! exponential backoff (0.5 s doubling to 30 s) until the broker acknowledges it. While a
//! record of a partition is failing, that partition is paused by the consume loop, and no
//! offset at or past an unacknowledged record is ever committed: if the process dies, the
//! next run replays the message and dead-letters it again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::kafka::Producer;
use crate::metrics::Metrics;
use kpi_core::event::Rejection;

/// Dead-letter record headers (docs/events.md).
pub mod header {
    pub const REASON: &str = "kpi-stream.reason";
    pub const DETAIL: &str = "kpi-stream.detail";
    pub const TOPIC: &str = "kpi-stream.source.topic";
    pub const PARTITION: &str = "kpi-stream.source.partition";
    pub const OFFSET: &str = "kpi-stream.source.offset";
    /// Present when the payload was cut to [`super::MAX_PAYLOAD_BYTES`]: the original size.
    pub const TRUNCATED: &str = "kpi-stream.truncated";
}

/// Dead-letter payloads are cut to this many bytes: a message too large for the input limit
/// is also too large for a dead-letter topic with Kafka's default 1 MB message limit, and a
/// record that can never be delivered would hold its partition paused forever.
pub const MAX_PAYLOAD_BYTES: usize = 900 * 1024;

/// A rejected message, copied out of the consumer's buffer.
#[derive(Debug, Clone)]
pub struct Letter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub rejection: Rejection,
}

/// Offsets of the records not yet acknowledged, per source partition, each with whether
/// its last attempt failed.
type Pending = HashMap<(String, i32), BTreeMap<i64, bool>>;

/// Sends dead letters and tracks the unacknowledged ones.
pub struct DeadLetters {
    producer: Producer,
    topic: String,
    metrics: Arc<Metrics>,
    pending: Mutex<Pending>,
    /// Woken when a partition starts or stops failing, and when nothing is pending.
    pub changed: Notify,
}

impl DeadLetters {
    pub fn new(producer: Producer, topic: String, metrics: Arc<Metrics>) -> Self {
        DeadLetters {
            producer,
            topic,
            metrics,
            pending: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }

    fn with_pending<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        // A panic while holding the lock cannot leave the map half-updated; keep going.
        let mut guard = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Sends `letter` in the background, retrying until acknowledged.
    pub fn send(self: &Arc<Self>, letter: Letter) {
        let source = (letter.topic.clone(), letter.partition);
        // A replay can reject the same message again while its first dead letter is still
        // being retried: one delivery per source offset is enough.
        let already = self.with_pending(|p| {
            let offsets = p.entry(source.clone()).or_default();
            if offsets.contains_key(&letter.offset) {
                return true;
            }
            offsets.insert(letter.offset, false);
            false
        });
        if already {
            return;
        }
        self.metrics.deadletter_pending.inc();
        let this = self.clone();
        tokio::spawn(async move { this.deliver(letter).await });
    }

    async fn deliver(&self, letter: Letter) {
        let source = (letter.topic.clone(), letter.partition);
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let original = letter.payload.as_ref().map_or(0, Vec::len);
        let truncated = (original > MAX_PAYLOAD_BYTES).then(|| original.to_string());
        let mut backoff = Duration::from_millis(500);
        let mut attempts = 0u32;
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: header::REASON,
                    value: Some(letter.rejection.reason.code()),
                })
                .insert(Header {
                    key: header::DETAIL,
                    value: Some(letter.rejection.detail.as_str()),
                })
                .insert(Header {
                    key: header::TOPIC,
                    value: Some(letter.topic.as_str()),
                })
                .insert(Header {
                    key: header::PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: header::OFFSET,
                    value: Some(offset.as_str()),
                });
            let headers = match &truncated {
                Some(size) => headers.insert(Header {
                    key: header::TRUNCATED,
                    value: Some(size.as_str()),
                }),
                None => headers,
            };
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(payload) = &letter.payload {
                record = record.payload(&payload[..payload.len().min(MAX_PAYLOAD_BYTES)]);
            }
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            attempts += 1;
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => break,
                Err((e, _)) => {
                    self.metrics.deadletter_failures.inc();
                    let newly_failing = self.with_pending(|p| {
                        p.get_mut(&source)
                            .and_then(|offsets| offsets.insert(letter.offset, true))
                            == Some(false)
                    });
                    if newly_failing {
                        self.changed.notify_one();
                    }
                    if attempts == 1 || attempts.is_power_of_two() {
                        warn!(topic = %source.0, partition = source.1, offset = letter.offset,
                            attempts, error = %e, "dead-letter record not delivered; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        if attempts > 1 {
            info!(topic = %source.0, partition = source.1, offset = letter.offset, attempts,
                "dead-letter record delivered after retries");
        }
        self.with_pending(|p| {
            if let Some(offsets) = p.get_mut(&source) {
                offsets.remove(&letter.offset);
                if offsets.is_empty() {
                    p.remove(&source);
                }
            }
        });
        self.metrics.deadletter_pending.dec();
        self.changed.notify_one();
    }

    /// The lowest unacknowledged offset of a source partition: offsets at or past it must
    /// not be committed.
    pub fn oldest_pending(&self, topic: &str, partition: i32) -> Option<i64> {
        self.with_pending(|p| {
            p.get(&(topic.to_owned(), partition))
                .and_then(|offsets| offsets.keys().next().copied())
        })
    }

    /// Source partitions with a record whose last attempt failed.
    pub fn failing(&self) -> HashSet<(String, i32)> {
        self.with_pending(|p| {
            p.iter()
                .filter(|(_, offsets)| offsets.values().any(|failed| *failed))
                .map(|(source, _)| source.clone())
                .collect()
        })
    }

    /// Whether no record is waiting.
    pub fn is_idle(&self) -> bool {
        self.with_pending(|p| p.is_empty())
    }

    /// Waits until every record is acknowledged, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        let wait = async {
            while !self.is_idle() {
                let notified = self.changed.notified();
                if self.is_idle() {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            error!(
                "dead-letter records still unacknowledged at shutdown; they will be sent again after restart"
            );
        }
    }
}
