//! The Kafka clients: the settings of each client the service creates, in one place so that
//! `check-config` checks exactly what `run` builds, and their context, which logs errors once
//! per kind a minute.
//!
//! librdkafka reports an error for every attempt while a broker is away, about ten a second
//! for each client, and the service has up to six (the group consumer, two producers, and
//! the components, periods and rates readers). Logged as they came, a broker outage wrote about 2,000 lines a minute
//! and buried everything else. Now the outage itself is logged once, as a change of broker
//! reachability (by the group consumer's statistics), and every other kind of error at most
//! once a minute, with the number of repeats left out since.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, warn};

use crate::config::{ClientKind, Config, ConfigError};

/// How long the same kind of error stays quiet after it was logged.
const QUIET: Duration = Duration::from_secs(60);

/// When each kind of error was last logged, and how many were left out since.
#[derive(Debug, Default)]
pub struct ErrorLog {
    kinds: Mutex<HashMap<Option<i32>, (Instant, u64)>>,
}

impl ErrorLog {
    /// Whether an error of `kind` seen at `now` is to be logged; with the number of errors of
    /// that kind left out since the last one logged.
    fn admit(&self, kind: Option<RDKafkaErrorCode>, now: Instant) -> Option<u64> {
        let kind = kind.map(|code| code as i32);
        let Ok(mut kinds) = self.kinds.lock() else {
            return Some(0);
        };
        match kinds.get_mut(&kind) {
            Some((last, left_out)) if now.duration_since(*last) < QUIET => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                kinds.insert(kind, (now, 0));
                Some(0)
            }
        }
    }

    /// Logs `error` (what the client was doing: `what`) unless an error of its kind was
    /// logged within the last minute. Broker outages are left to the reachability report.
    pub fn report(&self, what: &str, error: &KafkaError, reason: &str) {
        let kind = error.rdkafka_error_code();
        if matches!(
            kind,
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            debug!(error = %error, reason, "{what}");
            return;
        }
        match self.admit(kind, Instant::now()) {
            Some(left_out) => warn!(
                error = %error,
                reason,
                repeats_not_logged = left_out,
                "{what} (the same kind is logged at most once a minute)"
            ),
            None => debug!(error = %error, reason, "{what}"),
        }
    }
}

/// The client context of the producers and the components reader: errors through an
/// [`ErrorLog`] instead of one line each.
#[derive(Debug, Default)]
pub struct LoggedErrors {
    log: ErrorLog,
}

impl ClientContext for LoggedErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.report("kafka client error", &error, reason);
    }
}

impl ConsumerContext for LoggedErrors {}

/// The service's producers.
pub type Producer = FutureProducer<LoggedErrors>;

/// The partitions `metadata` lists for `topic`; none when the topic does not exist or the
/// broker reported an error for it.
pub fn partitions_of(metadata: &rdkafka::metadata::Metadata, topic: &str) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// A consumer outside the group (the components reader).
pub type Reader = BaseConsumer<LoggedErrors>;

/// librdkafka settings: the broker list, then the client's own `defaults`, then
/// `[kafka.properties]` and the secret properties, which win over both.
pub fn client_config(config: &Config, defaults: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers)
        .set("client.id", "kpi-stream");
    for (key, value) in defaults {
        c.set(*key, value);
    }
    for (key, value) in &config.kafka.properties {
        c.set(key, value);
    }
    for (key, value) in &config.kafka.secret_properties {
        c.set(key, value.expose());
    }
    c
}

/// Checks the configuration of every librdkafka client `run` creates, by creating each
/// without a broker list ([`Config::check_client`]).
pub fn check_clients(config: &Config) -> Result<(), ConfigError> {
    config.check_client(ClientKind::Consumer, &group_consumer_config(config))?;
    config.check_client(ClientKind::Producer, &producer_config(config, &[]))?;
    config.check_client(ClientKind::Consumer, &components_consumer_config(config))?;
    config.check_client(ClientKind::Consumer, &periods_consumer_config(config))?;
    if config.billing.rates_topic.is_some() {
        config.check_client(ClientKind::Consumer, &rates_consumer_config(config))?;
    }
    config.check_client(ClientKind::Consumer, &history_consumer_config(config))?;
    if config.health.enabled {
        config.check_client(ClientKind::Consumer, &health_consumer_config(config))?;
        config.check_client(ClientKind::Consumer, &signals_consumer_config(config))?;
    }
    config.check_client(ClientKind::Producer, &components_producer_config(config))
}

/// The settings of the group consumer that reads the input topics.
pub fn group_consumer_config(config: &Config) -> ClientConfig {
    group_member_config(
        config,
        config.kafka.group_id.clone(),
        &[
            ("statistics.interval.ms", "1000".into()),
            // Each partition has a prefetch queue of its own, read by its worker, and these
            // bounds hold per partition: a partition is fetched again while less than 512 KB
            // of it is queued, 256 KB at a time, so that a worker finds messages on one of
            // its partitions whenever it is free (18 partitions prefetch at most about 14 MB).
            ("queued.max.messages.kbytes", "512".into()),
            ("max.partition.fetch.bytes", (256 << 10).to_string()),
            // A response may then hold 256 KB of 32 partitions; unset, librdkafka caps it at
            // `queued.max.messages.kbytes` (1 MB at least), which refilled four partitions a
            // request and left the workers waiting.
            ("fetch.max.bytes", (8 << 20).to_string()),
            // librdkafka waits this long before fetching again for a partition whose queue
            // was full (default 1 s, which left a replay idle half the time); a worker
            // empties 512 KB in a few milliseconds, and 2 ms replayed faster than 10.
            ("fetch.queue.backoff.ms", "2".into()),
            // A fetch request holds only the partitions whose queues have room. When those
            // are at the end of their log, the broker holds the request this long for new
            // messages (librdkafka's default 500 ms), and the partitions whose queues have
            // emptied meanwhile wait for it: that stalled a replay for half a second at a
            // time. Idle, it is 50 fetch requests a second to each broker.
            ("fetch.wait.max.ms", "20".into()),
        ],
    )
}

/// A producer with [`producer_config`].
pub fn producer(config: &Config, extra: &[(&str, String)]) -> anyhow::Result<Producer> {
    producer_config(config, extra)
        .create_with_context(LoggedErrors::default())
        .context("creating a Kafka producer")
}

/// The service's producer settings, then `extra` (which wins over them).
pub fn producer_config(config: &Config, extra: &[(&str, String)]) -> ClientConfig {
    let mut defaults = vec![
        ("linger.ms", "5".into()),
        ("enable.idempotence", "true".into()),
        // A delivery that fails after this long is retried by the caller (dead letters,
        // components) or counted (output), instead of blocking for librdkafka's default
        // 5 minutes.
        ("message.timeout.ms", "30000".into()),
    ];
    defaults.extend(extra.iter().cloned());
    client_config(config, &defaults)
}

/// What the components producer adds to the service's producer settings.
pub fn components_producer_settings() -> [(&'static str, String); 2] {
    [
        // A partition's components grow with its series (about 2.8 KB per series and
        // window with full ticket sketches); they compress well.
        ("compression.type", "lz4".into()),
        ("message.max.bytes", (16 << 20).to_string()),
    ]
}

/// The settings of the producer that writes this instance's components.
pub fn components_producer_config(config: &Config) -> ClientConfig {
    producer_config(config, &components_producer_settings())
}

/// The settings of the consumer that reads every instance's components.
pub fn components_consumer_config(config: &Config) -> ClientConfig {
    whole_topic_reader_config(config, "components", &[])
}

/// The settings of a consumer that reads a topic whole, assigned: it never joins nor
/// commits, and the group id (the group's, with `purpose` added) only names the client to
/// the broker; `extra` settings win over these.
fn whole_topic_reader_config(
    config: &Config,
    purpose: &str,
    extra: &[(&str, String)],
) -> ClientConfig {
    let mut defaults = vec![
        ("group.id", format!("{}.{purpose}", config.kafka.group_id)),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("fetch.queue.backoff.ms", "10".into()),
    ];
    defaults.extend(extra.iter().cloned());
    client_config(config, &defaults)
}

/// The settings of the consumer that reads every instance's period records.
pub fn periods_consumer_config(config: &Config) -> ClientConfig {
    whole_topic_reader_config(config, "periods", &[])
}

/// The settings of the customer health owner's consumer: a group of its own on the
/// customer signals topic, never committed, so that every assignment reads its partitions
/// from the beginning (the compacted topic is the owner's state).
pub fn health_consumer_config(config: &Config) -> ClientConfig {
    group_member_config(
        config,
        format!("{}.health", config.kafka.group_id),
        // Prefetched messages per partition (librdkafka's default, 64 MB, held the restore
        // of a few partitions in memory at once): the owner reads as fast as it fetches, so
        // a few megabytes keep it busy.
        &[("queued.max.messages.kbytes", "4096".into())],
    )
}

/// The settings every member of one of the service's consumer groups has: cooperative
/// rebalances, the configured session timeout, offsets committed by the service alone (or
/// never), from the earliest offset without one; then `extra`.
fn group_member_config(
    config: &Config,
    group_id: String,
    extra: &[(&str, String)],
) -> ClientConfig {
    let mut settings = vec![
        ("group.id", group_id),
        (
            "session.timeout.ms",
            config.kafka.session_timeout_ms.to_string(),
        ),
        ("partition.assignment.strategy", "cooperative-sticky".into()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
    ];
    settings.extend(extra.iter().cloned());
    client_config(config, &settings)
}

/// The settings of the consumer that reads the customer signals topic whole to restore an
/// input partition's parts.
pub fn signals_consumer_config(config: &Config) -> ClientConfig {
    whole_topic_reader_config(
        config,
        "signals",
        &[("queued.max.messages.kbytes", "4096".into())],
    )
}

/// The settings of the consumer that reads the rates topic (`billing.rates_topic`).
pub fn rates_consumer_config(config: &Config) -> ClientConfig {
    whole_topic_reader_config(config, "rates", &[])
}

/// The settings of the consumer `history` reads the input topics with: assigned, each
/// partition on a queue of its own, as the group consumer's.
pub fn history_consumer_config(config: &Config) -> ClientConfig {
    whole_topic_reader_config(
        config,
        "history",
        &[
            ("auto.offset.reset", "earliest".into()),
            // Per partition, since each has its own queue, as the group consumer's: 36
            // partitions prefetch at most about 18 MB. Four times more was no faster.
            ("queued.max.messages.kbytes", "512".into()),
            ("max.partition.fetch.bytes", (1 << 20).to_string()),
            ("fetch.max.bytes", (16 << 20).to_string()),
            ("fetch.wait.max.ms", "20".into()),
            ("fetch.queue.backoff.ms", "2".into()),
        ],
    )
}

/// The settings of the generator's producer.
pub fn generator_producer_config(config: &Config) -> ClientConfig {
    client_config(
        config,
        &[
            ("linger.ms", "20".into()),
            ("queue.buffering.max.messages", "200000".into()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_get_secret_properties_that_printing_hides() {
        let config = Config::from_toml(
            "[kafka.properties]\n\"sasl.password\" = \"hunter1\"\n\"security.protocol\" = \"SASL_SSL\"",
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter1"));
        let client = client_config(&config, &[]);
        assert_eq!(client.get("sasl.password"), Some("hunter1"));
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn the_clients_librdkafka_refuses_name_the_key() {
        let cases = [
            (
                "[kafka.properties]\n\"no.such.property\" = \"1\"",
                "kafka.properties.\"no.such.property\"",
            ),
            // Out of librdkafka's range.
            (
                "[kafka.properties]\n\"session.timeout.ms\" = \"0\"",
                "kafka.properties.\"session.timeout.ms\"",
            ),
            // librdkafka's max.poll.interval.ms (5 minutes) must be at least the session timeout.
            (
                "[kafka]\nsession_timeout_ms = 300001",
                "kafka.session_timeout_ms",
            ),
            (
                "[kafka.properties]\n\"max.poll.interval.ms\" = \"6000\"\n[kafka]\nsession_timeout_ms = 10000",
                "kafka.properties.\"max.poll.interval.ms\"",
            ),
            (
                "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----\\nnot a key\\n-----END PRIVATE KEY-----\"",
                "kafka.properties.\"ssl.key.pem\"",
            ),
            (
                "[kafka.properties]\n\"compression.type\" = \"zip\"",
                "kafka.properties.\"compression.type\"",
            ),
            // librdkafka names the service's session.timeout.ms, but the user's setting is
            // what conflicts with it.
            (
                "[kafka.properties]\n\"group.protocol\" = \"consumer\"",
                "kafka.properties.\"group.protocol\"",
            ),
        ];
        for (toml, key) in cases {
            let config = Config::from_toml(toml).unwrap();
            match check_clients(&config) {
                Err(ConfigError::Invalid {
                    key: refused,
                    message,
                }) => {
                    assert_eq!(refused, key, "{toml}: {message}");
                    assert!(!message.contains("not a key"), "{message}");
                }
                other => panic!("{toml}: {other:?}"),
            }
        }
        let mut valid = Config::from_toml("[kafka]\nsession_timeout_ms = 300000").unwrap();
        check_clients(&valid).unwrap();
        // A broker list that resolves nowhere is not contacted by the check.
        valid.kafka.brokers = "kpi-stream-check.invalid:9092".into();
        let started = std::time::Instant::now();
        check_clients(&valid).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn each_kind_is_logged_once_a_minute_with_the_repeats_left_out() {
        let log = ErrorLog::default();
        let t0 = Instant::now();
        let timed_out = Some(RDKafkaErrorCode::MessageTimedOut);
        let unknown = Some(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert_eq!(log.admit(timed_out, t0), Some(0));
        for s in 1..60 {
            assert_eq!(log.admit(timed_out, t0 + Duration::from_secs(s)), None);
        }
        // Another kind is not held back by the first.
        assert_eq!(log.admit(unknown, t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(log.admit(timed_out, t0 + QUIET), Some(59));
        assert_eq!(log.admit(timed_out, t0 + QUIET + QUIET), Some(0));
        assert_eq!(log.admit(None, t0), Some(0));
        assert_eq!(log.admit(None, t0), None);
    }
}
