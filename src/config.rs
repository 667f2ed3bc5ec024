//! Configuration: a TOML file (config/kpi-stream.toml documents every key), overridden by
//! environment variables named `KPI_STREAM_<SECTION>__<KEY>` (for example
//! `KPI_STREAM_KAFKA__BROKERS`). Unknown keys are errors, so a typo never silently falls
//! back to a default. librdkafka properties that the configuration does not name pass
//! through from `[kafka.properties]`.
//!
//! Every value is bounded by what the service can run with, and checked when the
//! configuration is loaded, so that `check-config` refuses what would stop `run`; secrets
//! and key material are never printed (see [`Secret`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::mem::size_of;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Toml};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use serde::{Deserialize, Deserializer};

use kpi_core::aggregate::StateSettings;
use kpi_core::billing::BillingTally;
use kpi_core::calendar::Calendar;
use kpi_core::dimension::Dimensions;
use kpi_core::event::{DIMENSION_FIELDS, Family, Limits, MAX_FIELD_BYTES};
use kpi_core::rates::{RATE_BOUNDS, Rates};
use kpi_core::survey::SurveyTally;
use kpi_core::ticket::TicketTally;
use kpi_core::window::WindowSpec;

mod calendar;
mod health;
mod sla;

pub use calendar::CalendarConfig;
pub use health::HealthConfig;
pub use sla::SlaConfig;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "KPI_STREAM_";

/// Bounds of `kafka.max_pause`.
const MIN_MAX_PAUSE: Duration = Duration::from_secs(1);
const MAX_MAX_PAUSE: Duration = Duration::from_secs(7 * 86_400);
/// The sections of the configuration, as named in `KPI_STREAM_<SECTION>__<KEY>`.
const SECTIONS: [&str; 13] = [
    "kafka",
    "topics",
    "events",
    "processing",
    "windows",
    "calendar",
    "dimensions",
    "billing",
    "sla",
    "health",
    "publish",
    "http",
    "generate",
];

/// Workers of the consume loop. Each is a task with the state of its partitions; more
/// workers than input partitions or cores only add idle tasks.
pub const WORKERS: RangeInclusive<usize> = 1..=64;

/// The largest window: every start replays this much of the survey and ticket topics, which
/// must retain it.
const MAX_SPAN: Duration = Duration::from_secs(366 * 86_400);

/// Buckets per window. More buckets only sharpen the window's edge; each one is a ring slot
/// in every series.
const MAX_BUCKETS: u32 = 1_000;

/// Ring slots per series, over all its windows (each window's buckets, one slot per bucket
/// of accepted future skew, and one spare): a series holds one ring per window in each
/// event family, allocated whole when the series first appears.
const MAX_RING_SLOTS: i64 = 4_096;

/// Bytes one ring slot takes in a series present in all three families (an 8-byte bucket
/// index and the tally of each).
const SERIES_SLOT_BYTES: usize = size_of::<SurveyTally>()
    + size_of::<TicketTally>()
    + size_of::<BillingTally>()
    + 3 * size_of::<i64>();

/// Series times windows per input partition. A ticket partition's components message holds
/// about 3 KB per series and window with both duration sketches full and the service-level
/// counts (docs/scaling.md): at this cap about 12.3 MB, within the 16 MiB that the
/// components producer and topic accept in one message.
const MAX_SERIES_WINDOWS: usize = 4_096;

/// The defaults of the brokers' `group.min.session.timeout.ms` and
/// `group.max.session.timeout.ms` (Kafka 4.1): a broker refuses a member whose session
/// timeout is outside them. librdkafka also wants it at most `max.poll.interval.ms` (5
/// minutes unless set in `[kafka.properties]`), which the client check enforces.
const SESSION_TIMEOUT_MS: RangeInclusive<u32> = 6_000..=1_800_000;

/// Under a second, metadata calls across a network or a TLS handshake time out and are
/// retried for ever; the rebalance callback waits for them, and librdkafka's default
/// `max.poll.interval.ms` (5 minutes) is the longest a consumer may go without polling.
const REQUEST_TIMEOUT_MS: RangeInclusive<u32> = 1_000..=300_000;

/// Smaller limits reject ordinary events (a survey answer with long ids is about 500
/// bytes); no message larger than librdkafka's default `receive.message.max.bytes` can be
/// received at all.
const MAX_EVENT_BYTES: RangeInclusive<usize> = 1_024..=100_000_000;

/// Shorter intervals spend the service on publishing; longer ones make the values, and the
/// components other instances wait for, stale for longer than an alert would tolerate.
const PUBLISH_INTERVAL: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3_600);

/// Every worker shares the rate table, but the rates reader copies it for each rate it
/// reads live: a million rates (32 bytes each) is 32 MB, copied in milliseconds; a daily
/// rate of every ISO 4217 currency for ten years is about 660,000.
const MAX_RATES: RangeInclusive<usize> = 1..=1_000_000;

/// Bounds of `billing.trial_grace`: a pending trial is held up to this long after its end.
const TRIAL_GRACE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(90 * 86_400);

/// The generator keeps the subscriptions of every customer.
const GENERATE_CUSTOMERS: RangeInclusive<u32> = 1..=1_000_000;

/// Segment values the generator draws from; each is a field of the events it writes.
const GENERATE_SEGMENTS: RangeInclusive<usize> = 1..=1_000;

/// The largest secret file read: a bundle of certificates fits, `/dev/zero` does not.
const MAX_SECRET_BYTES: u64 = 1 << 20;

/// librdkafka properties that hold secrets or key material: those librdkafka marks
/// sensitive (`_RK_SENSITIVE` in rdkafka_conf.c, librdkafka 2.12) and redacts from its own
/// configuration dumps. Names holding `password` or `secret` are treated alike, so that a
/// property added by a later librdkafka is not printed either.
const SENSITIVE_PROPERTIES: [&str; 13] = [
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.password",
];

/// A configuration value that is a secret or key material. It is never printed: its
/// `Debug` is `<redacted>`, so giving a field this type is all it takes to keep it out of
/// `check-config`'s output and of any log.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub events: EventsConfig,
    pub processing: ProcessingConfig,
    pub windows: WindowsConfig,
    pub calendar: CalendarConfig,
    pub dimensions: DimensionsConfig,
    pub billing: BillingConfig,
    pub sla: SlaConfig,
    pub health: HealthConfig,
    pub publish: PublishConfig,
    pub http: HttpConfig,
    pub generate: GenerateConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// librdkafka `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group; offsets are committed there for lag tools, state never depends on them.
    pub group_id: String,
    pub session_timeout_ms: u32,
    /// How long a start-up or rebalance metadata call may take before it is retried.
    pub request_timeout_ms: u32,
    /// How long an input partition may stay paused (its dead letters cannot be delivered)
    /// before the service reports itself unready.
    #[serde(deserialize_with = "duration")]
    pub max_pause: Duration,
    /// Passed to every librdkafka client as is; these win over the keys above.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties read from files at start (`"sasl.password" = "/run/secrets/kafka"`),
    /// so that secrets stay out of the configuration and the environment listing.
    pub secret_files: BTreeMap<String, String>,
    /// librdkafka properties read from the named environment variables at start
    /// (`"sasl.password" = "KAFKA_PASSWORD"`).
    pub secret_env: BTreeMap<String, String>,
    /// The librdkafka properties that hold secrets or key material, filled at load: those
    /// of `properties` that are sensitive (moved out of it), then those read from
    /// `secret_files` and `secret_env`, which win.
    #[serde(skip)]
    pub secret_properties: BTreeMap<String, Secret<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub surveys: String,
    pub tickets: String,
    pub billing: String,
    pub deadletter: String,
    pub output: String,
    /// KPI components per input partition, shared by the instances of the group.
    pub components: String,
    /// Each input partition's components per calendar period, kept beyond the input
    /// topics' retention.
    pub periods: String,
    /// Each input partition's part of each customer's health signals, partitioned by
    /// customer (compacted).
    pub customer_signals: String,
    /// Each customer's health, keyed by customer (compacted).
    pub customer_health: String,
    /// Detractors' answers to follow up, keyed by customer.
    pub feedback: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    #[serde(deserialize_with = "duration")]
    pub max_future_skew: Duration,
    pub max_event_bytes: usize,
    /// Also send late events to the dead-letter topic (they are always counted).
    pub late_to_deadletter: bool,
    /// A repeated `event_id` within this much event time is a duplicate; "0s" turns it off.
    #[serde(deserialize_with = "duration")]
    pub dedup_horizon: Duration,
    /// A consumer group without committed offsets also counts and dead-letters the messages
    /// that were on its partitions before its first assignment.
    pub report_history: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// Workers that parse and aggregate the input partitions in parallel, each owning the
    /// state of its partitions; not set: one per available core.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Window spans, e.g. `["1h", "24h", "7d", "30d"]`; each is a label value.
    pub spans: Vec<String>,
    /// Buckets per window; the bucket width is span / buckets.
    pub buckets: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DimensionsConfig {
    /// Event fields that split every KPI into series: any of segment, region, channel,
    /// agent.
    pub names: Vec<String>,
    /// Distinct values per dimension before the rest fold into "other".
    pub max_values: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// ISO 4217 code that every amount is converted into.
    pub base_currency: String,
    /// Fixed rates: base-currency units per unit of each other currency. An event in a
    /// currency without a rate is rejected.
    pub rates: BTreeMap<String, f64>,
    /// The window whose customer churn ratio divides ARPA into CLV.
    pub clv_window: String,
    /// How long after its `trial_ends_at` a trial still converts.
    #[serde(deserialize_with = "duration")]
    pub trial_grace: Duration,
    /// A compacted topic of rates that hold from an instant on (docs/events.md): each
    /// amount is converted at the rate valid at its event's `occurred_at`, the fixed
    /// `rates` before a currency's first. Unset: the fixed rates only.
    pub rates_topic: Option<String>,
    /// Rates from `rates_topic` held at most, every currency's; further ones are rejected
    /// (`too_many_rates`).
    pub max_rates: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub snapshot_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of every endpoint.
    pub listen: SocketAddr,
    /// A second address serving only `/healthz` and `/readyz`, in plain HTTP without
    /// authentication and with connections of its own, so that probes keep answering
    /// while `listen` is at its connection limit.
    pub probe_listen: Option<SocketAddr>,
    /// Connections open at once on `listen`; further ones are closed as they arrive.
    pub max_connections: u32,
    /// How long a request head may take to arrive: from the connection's start for the
    /// first request (TLS handshake included), from its first byte for the next ones.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request after a response.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// PEM certificate chain; with `tls_key_file`, `listen` serves HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// User name to bcrypt hash; when not empty, every request on `listen` needs HTTP
    /// basic authentication as one of these users.
    pub basic_auth_users: BTreeMap<String, Secret<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    pub seed: u64,
    /// Events per second; 0 means as fast as possible.
    pub rate: u32,
    /// Events to produce after the history; 0 means until stopped.
    pub count: u64,
    /// Events of a history produced first, as fast as possible, spread over `span`; the
    /// counted events then happen as they are produced, from the same customers.
    pub history: u64,
    /// Share of deliberately malformed events, 0..1.
    pub malformed_ratio: f64,
    /// The length of the history: its events, or without them the counted ones, have their
    /// `occurred_at` spread evenly over this much time before the start, oldest first; 0:
    /// each event happens when it is produced.
    #[serde(deserialize_with = "duration")]
    pub span: Duration,
    pub customers: u32,
    pub segments: Vec<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "kpi-stream".into(),
            session_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            max_pause: Duration::from_secs(300),
            properties: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            secret_properties: BTreeMap::new(),
        }
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            surveys: "cs.surveys".into(),
            tickets: "cs.tickets".into(),
            billing: "cs.billing".into(),
            deadletter: "cs.deadletter".into(),
            output: "cs.kpis".into(),
            components: "cs.kpi-components".into(),
            periods: "cs.kpi-periods".into(),
            customer_signals: "cs.kpi-customer-signals".into(),
            customer_health: "cs.customer-health".into(),
            feedback: "cs.feedback".into(),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_future_skew: Duration::from_secs(300),
            max_event_bytes: 1 << 20,
            late_to_deadletter: false,
            dedup_horizon: Duration::from_secs(3600),
            report_history: false,
        }
    }
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            spans: ["1h", "24h", "7d", "30d"].map(String::from).to_vec(),
            buckets: 60,
        }
    }
}

impl Default for DimensionsConfig {
    fn default() -> Self {
        DimensionsConfig {
            names: vec!["segment".into()],
            max_values: 100,
        }
    }
}

impl BillingConfig {
    /// `billing.trial_grace` in milliseconds, within its bounds.
    fn trial_grace_ms(&self) -> Result<i64, ConfigError> {
        bounded_duration(
            "billing.trial_grace",
            self.trial_grace,
            TRIAL_GRACE,
            "a trial stays pending, and held in memory, this long after it ends",
        )?;
        Ok(self.trial_grace.as_millis() as i64)
    }
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            base_currency: "USD".into(),
            rates: [("EUR", 1.08), ("GBP", 1.27)]
                .into_iter()
                .map(|(c, r)| (c.to_owned(), r))
                .collect(),
            clv_window: "30d".into(),
            trial_grace: Duration::from_secs(3 * 86_400),
            rates_topic: None,
            max_rates: 100_000,
        }
    }
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            interval: Duration::from_secs(10),
            snapshot_interval: Duration::from_secs(300),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            probe_listen: None,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            tls_cert_file: None,
            tls_key_file: None,
            basic_auth_users: BTreeMap::new(),
        }
    }
}

/// Each connection holds a file descriptor and its buffers (docs/reliability.md).
const MAX_HTTP_CONNECTIONS: u32 = 10_000;
const MIN_HTTP_TIMEOUT: Duration = Duration::from_millis(100);
/// A longer header-read timeout only helps slow clients hold connections.
const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// bcrypt's costs start at 4; one verification at cost 14 takes about a second of one
/// core, and each step above doubles it.
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=14;

impl HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_HTTP_CONNECTIONS).contains(&self.max_connections) {
            return Err(invalid(
                "http.max_connections",
                format!("must be within 1..={MAX_HTTP_CONNECTIONS}"),
            ));
        }
        let timeouts = [
            (
                "http.header_read_timeout",
                self.header_read_timeout,
                MAX_HEADER_READ_TIMEOUT,
            ),
            ("http.idle_timeout", self.idle_timeout, MAX_IDLE_TIMEOUT),
        ];
        for (key, value, max) in timeouts {
            if !(MIN_HTTP_TIMEOUT..=max).contains(&value) {
                return Err(invalid(
                    key,
                    format!("must be within {MIN_HTTP_TIMEOUT:?}..={max:?}"),
                ));
            }
        }
        if self.probe_listen == Some(self.listen) {
            return Err(invalid("http.probe_listen", "must differ from http.listen"));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "http.tls_key_file",
                    "is needed with http.tls_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "http.tls_cert_file",
                    "is needed with http.tls_key_file",
                ));
            }
            _ => {}
        }
        for (user, hash) in &self.basic_auth_users {
            let key = "http.basic_auth_users";
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                return Err(invalid(
                    key,
                    format!(
                        "{user:?}: a user name must be non-empty, without ':' or control characters"
                    ),
                ));
            }
            // The message never quotes the hash: it is a secret.
            let cost = hash
                .expose()
                .parse::<bcrypt::HashParts>()
                .map_err(|e| invalid(key, format!("{user}: not a bcrypt hash ({e})")))?
                .get_cost();
            if !BCRYPT_COSTS.contains(&cost) {
                return Err(invalid(
                    key,
                    format!("{user}: bcrypt cost {cost} is outside {BCRYPT_COSTS:?}"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            seed: 42,
            rate: 1000,
            count: 0,
            history: 0,
            malformed_ratio: 0.01,
            span: Duration::ZERO,
            customers: 5000,
            segments: ["smb", "mid-market", "enterprise"]
                .map(String::from)
                .to_vec(),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Whether a librdkafka property holds a secret or key material.
pub fn is_secret(property: &str) -> bool {
    let property = property.to_ascii_lowercase();
    SENSITIVE_PROPERTIES.contains(&property.as_str())
        || property.contains("password")
        || property.contains("secret")
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("config file {0} does not exist")]
    Missing(String),
    #[error("key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("environment variable {variable}: {message}")]
    Environment { variable: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Refuses `value` outside `range`, saying why the bound is there.
fn bounded<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    range: RangeInclusive<T>,
    why: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        key,
        format!(
            "{value} is outside {}..={}: {why}",
            range.start(),
            range.end()
        ),
    ))
}

/// A duration shown as the configuration writes it (`5m`, `30days`).
#[derive(PartialEq, PartialOrd)]
struct Shown(Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// [`bounded`] for a duration.
fn bounded_duration(
    key: &str,
    value: Duration,
    range: RangeInclusive<Duration>,
    why: &str,
) -> Result<(), ConfigError> {
    let (start, end) = range.into_inner();
    bounded(key, Shown(value), Shown(start)..=Shown(end), why)
}

/// Refuses a variable that is meant as configuration but is not named
/// `KPI_STREAM_<SECTION>__<KEY>`: a section followed by one underscore, or a section alone.
/// Other `KPI_STREAM_` variables (a wrapper's own `KPI_STREAM_CMD`) are not configuration.
fn check_variable_name(name: &str) -> Result<(), ConfigError> {
    let Some(rest) = name
        .get(..ENV_PREFIX.len())
        .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
        .map(|_| &name[ENV_PREFIX.len()..])
    else {
        return Ok(());
    };
    if rest.contains("__") {
        return Ok(());
    }
    let lower = rest.to_ascii_lowercase();
    for section in SECTIONS {
        let key = lower
            .strip_prefix(section)
            .filter(|key| key.is_empty() || key.starts_with('_'));
        if let Some(key) = key {
            let key = key.trim_start_matches('_').to_ascii_uppercase();
            let key = if key.is_empty() { "KEY".into() } else { key };
            return Err(ConfigError::Environment {
                variable: name.to_owned(),
                message: format!(
                    "configuration variables separate the section from the key with two \
                     underscores: {ENV_PREFIX}{}__{key}",
                    section.to_ascii_uppercase()
                ),
            });
        }
    }
    Ok(())
}

/// figment quotes the value it could not use; under `kafka.properties` that value may be a
/// secret, so it is described instead.
fn without_property_values(error: figment::Error) -> figment::Error {
    let hidden = |actual: Actual| match actual {
        Actual::Str(_) | Actual::Bytes(_) | Actual::Other(_) => {
            Actual::Other("a value (not shown)".into())
        }
        other => other,
    };
    let errors: Vec<figment::Error> = error
        .into_iter()
        .map(|mut e| {
            if e.path.starts_with(&["kafka".into(), "properties".into()]) {
                e.kind = match e.kind {
                    Kind::InvalidType(actual, expected) => {
                        Kind::InvalidType(hidden(actual), expected)
                    }
                    Kind::InvalidValue(actual, expected) => {
                        Kind::InvalidValue(hidden(actual), expected)
                    }
                    other => other,
                };
            }
            e
        })
        .collect();
    // figment iterates from the error it shows first: chain them back in that order.
    errors
        .into_iter()
        .rev()
        .reduce(|earlier, e| earlier.chain(e))
        .unwrap_or_else(|| figment::Error::from("the configuration cannot be read".to_owned()))
}

/// The property of `properties` that `text` names first (the longest of those named at the
/// same place).
fn first_named<'p>(text: &str, properties: impl IntoIterator<Item = &'p str>) -> Option<&'p str> {
    properties
        .into_iter()
        .filter_map(|p| text.find(p).map(|at| (at, std::cmp::Reverse(p.len()), p)))
        .min()
        .map(|(_, _, p)| p)
}

/// Which kind of librdkafka client a client configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Consumer,
    Producer,
}

/// The context of a client created only to check its configuration: librdkafka's notices
/// about it (it has no broker list) are not the service's to log.
struct CheckOnly;

impl ClientContext for CheckOnly {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}
}

impl ConsumerContext for CheckOnly {}

impl ProducerContext for CheckOnly {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

impl Config {
    /// Loads `path` (if given; it must exist), then the environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Missing(path.display().to_string()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        for (name, _) in std::env::vars_os() {
            check_variable_name(&name.to_string_lossy())?;
        }
        // Only `KPI_STREAM_<SECTION>__<KEY>` names are keys; KPI_STREAM_CONFIG names the file
        // itself (see the command line).
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|name| name.as_str().contains("__"))
                .split("__"),
        );
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(without_property_values(e))))?;
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration from TOML text, loaded and checked as [`Config::load`] does a file.
    #[cfg(test)]
    pub(crate) fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        let mut config: Config = Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Moves the sensitive properties of `kafka.properties` into `kafka.secret_properties`,
    /// then reads the secret properties from their files and environment variables there.
    /// Errors name the property and the source, never the value.
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        let kafka = &mut self.kafka;
        let (secret, plain) = std::mem::take(&mut kafka.properties)
            .into_iter()
            .partition(|(property, _)| is_secret(property));
        kafka.properties = plain;
        kafka.secret_properties = secret
            .into_iter()
            .map(|(property, value)| (property, Secret::new(value)))
            .collect();
        for (property, path) in &kafka.secret_files {
            let key = format!("kafka.secret_files.{property:?}");
            let mut value = String::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(MAX_SECRET_BYTES + 1).read_to_string(&mut value))
                .map_err(|e| invalid(&key, format!("cannot read {path}: {e}")))?;
            if value.len() as u64 > MAX_SECRET_BYTES {
                return Err(invalid(
                    &key,
                    format!("{path} is larger than {MAX_SECRET_BYTES} bytes"),
                ));
            }
            let value = value.trim_end_matches(['\n', '\r']).to_owned();
            kafka
                .secret_properties
                .insert(property.clone(), Secret::new(value));
        }
        for (property, variable) in &kafka.secret_env {
            let value = std::env::var(variable).map_err(|_| {
                invalid(
                    &format!("kafka.secret_env.{property:?}"),
                    format!("environment variable {variable} is not set"),
                )
            })?;
            kafka
                .secret_properties
                .insert(property.clone(), Secret::new(value));
        }
        Ok(())
    }

    /// Checks what serde cannot: values that parse but make no sense together, and the
    /// bounds of every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let windows = self.window_specs()?;
        let calendar = self.calendar.calendar()?;
        self.sla.max_open_age_ms()?;
        self.sla.targets()?;
        self.health.signal_settings()?;
        self.health.model()?;
        self.validate_kafka()?;
        if !(MIN_MAX_PAUSE..=MAX_MAX_PAUSE).contains(&self.kafka.max_pause) {
            return Err(invalid("kafka.max_pause", "must be between 1s and 7d"));
        }
        self.validate_events(&windows)?;
        if let Some(workers) = self.processing.workers {
            bounded(
                "processing.workers",
                workers,
                WORKERS,
                "each worker is a task holding the state of its partitions",
            )?;
        }
        self.validate_rings(&windows, calendar.as_ref())?;
        for (i, name) in self.dimensions.names.iter().enumerate() {
            if !DIMENSION_FIELDS.contains(&name.as_str()) {
                return Err(invalid(
                    "dimensions.names",
                    format!("{name:?} is not one of {DIMENSION_FIELDS:?}"),
                ));
            }
            if self.dimensions.names[..i].contains(name) {
                return Err(invalid(
                    "dimensions.names",
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        if self.dimensions.max_values == 0 {
            return Err(invalid("dimensions.max_values", "must be at least 1"));
        }
        self.validate_series(&windows, calendar.as_ref())?;
        let is_code = |c: &str| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase());
        if !is_code(&self.billing.base_currency) {
            return Err(invalid(
                "billing.base_currency",
                "must be an ISO 4217 code (three upper-case letters)",
            ));
        }
        for (code, rate) in &self.billing.rates {
            if !(is_code(code) && RATE_BOUNDS.contains(rate)) {
                return Err(invalid(
                    "billing.rates",
                    format!(
                        "{code} = {rate}: needs an ISO 4217 code and a rate within {}..={}",
                        RATE_BOUNDS.start(),
                        RATE_BOUNDS.end()
                    ),
                ));
            }
        }
        bounded(
            "billing.max_rates",
            self.billing.max_rates,
            MAX_RATES,
            "the rates reader copies the table for each rate it reads live",
        )?;
        self.state_settings()?;
        let publish = &self.publish;
        bounded_duration(
            "publish.interval",
            publish.interval,
            PUBLISH_INTERVAL,
            "shorter spends the service on publishing; longer leaves values stale",
        )?;
        bounded_duration(
            "publish.snapshot_interval",
            publish.snapshot_interval,
            publish.interval..=*PUBLISH_INTERVAL.end(),
            "at least publish.interval; other instances count components older than two \
             snapshot intervals as missing",
        )?;
        self.http.validate()?;
        self.validate_generate()?;
        let topics = [
            ("topics.surveys", &self.topics.surveys),
            ("topics.tickets", &self.topics.tickets),
            ("topics.billing", &self.topics.billing),
            ("topics.deadletter", &self.topics.deadletter),
            ("topics.output", &self.topics.output),
            ("topics.components", &self.topics.components),
            ("topics.periods", &self.topics.periods),
            ("topics.customer_signals", &self.topics.customer_signals),
            ("topics.customer_health", &self.topics.customer_health),
            ("topics.feedback", &self.topics.feedback),
        ]
        .into_iter()
        .chain(
            self.billing
                .rates_topic
                .as_ref()
                .map(|topic| ("billing.rates_topic", topic)),
        )
        .collect::<Vec<_>>();
        for (i, (key, topic)) in topics.iter().enumerate() {
            let legal = topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if topic.is_empty()
                || topic.len() > 249
                || !legal
                || [".", ".."].contains(&topic.as_str())
            {
                return Err(invalid(
                    key,
                    format!("{topic:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"),
                ));
            }
            if topics[..i].iter().any(|(_, other)| other == topic) {
                return Err(invalid(key, format!("topic {topic:?} is used twice")));
            }
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let kafka = &self.kafka;
        if kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must name at least one broker"));
        }
        if kafka.group_id.is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        bounded(
            "kafka.session_timeout_ms",
            kafka.session_timeout_ms,
            SESSION_TIMEOUT_MS,
            "brokers refuse a session timeout outside group.min.session.timeout.ms and \
             group.max.session.timeout.ms (these are their defaults)",
        )?;
        bounded(
            "kafka.request_timeout_ms",
            kafka.request_timeout_ms,
            REQUEST_TIMEOUT_MS,
            "shorter fails across a network and is retried for ever; longer holds up a \
             rebalance past librdkafka's max.poll.interval.ms",
        )?;
        // librdkafka takes C strings: one with a NUL fails naming no property.
        let nul = "must not contain a NUL character";
        if kafka.brokers.contains('\0') {
            return Err(invalid("kafka.brokers", nul));
        }
        if kafka.group_id.contains('\0') {
            return Err(invalid("kafka.group_id", nul));
        }
        let properties = (kafka.properties.iter().map(|(p, v)| (p, v.as_str()))).chain(
            kafka
                .secret_properties
                .iter()
                .map(|(p, v)| (p, v.expose().as_str())),
        );
        for (property, value) in properties {
            if property.contains('\0') || value.contains('\0') {
                return Err(invalid(&self.kafka_key(property), nul));
            }
        }
        Ok(())
    }

    fn validate_events(&self, windows: &[WindowSpec]) -> Result<(), ConfigError> {
        let events = &self.events;
        let largest = windows
            .iter()
            .map(|w| Duration::from_millis(w.span_ms as u64))
            .max()
            .unwrap_or_default();
        bounded_duration(
            "events.max_future_skew",
            events.max_future_skew,
            Duration::ZERO..=largest,
            "at most the largest window: the window rings keep a slot per bucket of skew \
             ahead of now",
        )?;
        bounded(
            "events.max_event_bytes",
            events.max_event_bytes,
            MAX_EVENT_BYTES,
            "smaller rejects ordinary events; no larger message can be received (librdkafka \
             receive.message.max.bytes)",
        )?;
        bounded_duration(
            "events.dedup_horizon",
            events.dedup_horizon,
            Duration::ZERO..=largest,
            "at most the largest window: the ids of the whole horizon are kept in memory",
        )
    }

    /// The ring slots of a series, over all its windows: allocated whole when the series
    /// first appears, in each family.
    fn validate_rings(
        &self,
        windows: &[WindowSpec],
        calendar: Option<&Calendar>,
    ) -> Result<(), ConfigError> {
        let skew_ms = self.events.max_future_skew.as_millis() as i64;
        // Each calendar period keeps the previous, the current and the next period.
        let calendar_slots = calendar.map_or(0, |c| 3 * c.settings().periods.len() as i64);
        let bucket_slots: i64 =
            windows.iter().map(|w| w.ring_slots(0)).sum::<i64>() + calendar_slots;
        let slots: i64 =
            windows.iter().map(|w| w.ring_slots(skew_ms)).sum::<i64>() + calendar_slots;
        if slots <= MAX_RING_SLOTS {
            return Ok(());
        }
        let key = if bucket_slots > MAX_RING_SLOTS {
            "windows.buckets"
        } else {
            "events.max_future_skew"
        };
        Err(invalid(
            key,
            format!(
                "the {} windows need {slots} ring slots per series ({bucket_slots} for their \
                 buckets and a spare each, {} for events up to events.max_future_skew ahead); \
                 at most {MAX_RING_SLOTS} are allowed ({SERIES_SLOT_BYTES} bytes each in a \
                 series: {:.1} MB)",
                windows.len(),
                slots - bucket_slots,
                (MAX_RING_SLOTS as usize * SERIES_SLOT_BYTES) as f64 / 1e6
            ),
        ))
    }

    /// Series per input partition times windows: what one partition's components hold.
    fn validate_series(
        &self,
        windows: &[WindowSpec],
        calendar: Option<&Calendar>,
    ) -> Result<(), ConfigError> {
        let windows = windows.len() + calendar.map_or(0, |c| c.windows().len());
        let dimensions = &self.dimensions;
        let series = dimensions
            .max_values
            .saturating_add(1)
            .saturating_mul(dimensions.names.len())
            .saturating_add(1);
        let total = series.saturating_mul(windows);
        if total <= MAX_SERIES_WINDOWS {
            return Ok(());
        }
        Err(invalid(
            "dimensions.max_values",
            format!(
                "{series} series per partition (overall, and {} values and \"other\" for \
                 each of {:?}) in {} windows make {total}; at most {MAX_SERIES_WINDOWS} fit \
                 a partition's components in one message of the components topic (about 3 \
                 KB per series and window for tickets, 16 MiB a message); the windows are \
                 windows.spans and two per calendar.periods",
                dimensions.max_values, dimensions.names, windows
            ),
        ))
    }

    fn validate_generate(&self) -> Result<(), ConfigError> {
        let generate = &self.generate;
        if !(0.0..=1.0).contains(&generate.malformed_ratio) {
            return Err(invalid("generate.malformed_ratio", "must be within 0..1"));
        }
        bounded_duration(
            "generate.span",
            generate.span,
            Duration::ZERO..=MAX_SPAN,
            "history older than the largest window a configuration can have is late",
        )?;
        if generate.history > 0 && generate.span.is_zero() {
            return Err(invalid(
                "generate.history",
                "a history needs a generate.span to spread over",
            ));
        }
        bounded(
            "generate.customers",
            generate.customers,
            GENERATE_CUSTOMERS,
            "the generator keeps the subscriptions of every customer",
        )?;
        bounded(
            "generate.segments",
            generate.segments.len(),
            GENERATE_SEGMENTS,
            "number of segment values",
        )?;
        if let Some(segment) = generate
            .segments
            .iter()
            .find(|s| s.is_empty() || s.len() > MAX_FIELD_BYTES)
        {
            return Err(invalid(
                "generate.segments",
                format!("{segment:?}: a segment is 1 to {MAX_FIELD_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// The configured windows, each with its bucket width.
    pub fn window_specs(&self) -> Result<Vec<WindowSpec>, ConfigError> {
        let key = "windows.spans";
        if self.windows.spans.is_empty() {
            return Err(invalid(key, "must list at least one window"));
        }
        bounded(
            "windows.buckets",
            self.windows.buckets,
            1..=MAX_BUCKETS,
            "each bucket is a ring slot in every series and window",
        )?;
        let mut specs: Vec<WindowSpec> = Vec::new();
        for name in &self.windows.spans {
            let span = humantime::parse_duration(name)
                .map_err(|e| invalid(key, format!("{name:?}: {e}")))?;
            bounded_duration(
                key,
                span,
                Duration::ZERO..=MAX_SPAN,
                "every start replays the largest window",
            )?;
            let span_ms = span.as_millis();
            let buckets = u128::from(self.windows.buckets);
            if span_ms == 0 || span_ms % buckets != 0 {
                return Err(invalid(
                    key,
                    format!("{name:?} does not divide into {buckets} whole-millisecond buckets"),
                ));
            }
            if specs.iter().any(|s| s.name == *name) {
                return Err(invalid(key, format!("{name:?} is listed twice")));
            }
            let bucket = Duration::from_millis((span_ms / buckets) as u64);
            specs.push(WindowSpec::new(name.clone(), span, bucket));
        }
        Ok(specs)
    }

    /// The typed settings of the windowed state. [`Config::validate`] has built them once
    /// already, so for a loaded configuration this cannot fail.
    pub fn state_settings(&self) -> Result<StateSettings, ConfigError> {
        let windows = self.window_specs()?;
        let clv_window = windows
            .iter()
            .position(|w| w.name == self.billing.clv_window)
            .ok_or_else(|| {
                invalid(
                    "billing.clv_window",
                    format!(
                        "{:?} is not one of windows.spans {:?}",
                        self.billing.clv_window, self.windows.spans
                    ),
                )
            })?;
        Ok(StateSettings {
            windows,
            lead_ms: self.limits().max_future_skew_ms,
            dimensions: Dimensions::new(&self.dimensions.names, self.dimensions.max_values),
            rates: self.rates(),
            clv_window,
            dedup_horizon_ms: self.events.dedup_horizon.as_millis() as i64,
            calendar: self.calendar.calendar()?,
            max_open_age_ms: self.sla.max_open_age_ms()?,
            sla: self.sla.targets()?,
            trial_grace_ms: self.billing.trial_grace_ms()?,
            signals: self.health.signal_settings()?,
        })
    }

    /// The configuration key that sets librdkafka `property`.
    fn kafka_key(&self, property: &str) -> String {
        let kafka = &self.kafka;
        if kafka.secret_env.contains_key(property) {
            return format!("kafka.secret_env.{property:?}");
        }
        if kafka.secret_files.contains_key(property) {
            return format!("kafka.secret_files.{property:?}");
        }
        match property {
            _ if kafka.properties.contains_key(property)
                || kafka.secret_properties.contains_key(property) =>
            {
                format!("kafka.properties.{property:?}")
            }
            "bootstrap.servers" | "metadata.broker.list" => "kafka.brokers".into(),
            "group.id" => "kafka.group_id".into(),
            "session.timeout.ms" => "kafka.session_timeout_ms".into(),
            _ => format!("kafka.properties.{property:?}"),
        }
    }

    /// Builds a librdkafka client from `client` as the service would, and drops it: librdkafka
    /// checks every property's name and value, how they combine, and loads the keys and
    /// certificates they name. The client is created without its broker list, so it connects
    /// nowhere and its threads end when it is dropped. Errors name the configuration key.
    pub fn check_client(&self, kind: ClientKind, client: &ClientConfig) -> Result<(), ConfigError> {
        client
            .create_native_config()
            .map_err(|e| self.client_error(e))?;
        let mut offline = client.clone();
        offline
            .remove("bootstrap.servers")
            .remove("metadata.broker.list");
        let created = match kind {
            ClientKind::Consumer => offline
                .create_with_context::<_, BaseConsumer<CheckOnly>>(CheckOnly)
                .map(drop),
            ClientKind::Producer => offline
                .create_with_context::<_, BaseProducer<CheckOnly>>(CheckOnly)
                .map(drop),
        };
        created.map_err(|e| self.client_error(e))
    }

    /// librdkafka's error, naming the configuration key of the property at fault and no
    /// secret value.
    fn client_error(&self, error: KafkaError) -> ConfigError {
        let text = match error {
            // The value is left out: it may be a secret.
            KafkaError::ClientConfig(_, description, property, _) => {
                return invalid(
                    &self.kafka_key(&property),
                    self.without_secrets(&description),
                );
            }
            KafkaError::ClientCreation(text) => text,
            other => other.to_string(),
        };
        let kafka = &self.kafka;
        let configured = (kafka.properties.keys())
            .chain(kafka.secret_properties.keys())
            .map(String::as_str);
        // The service's own settings, for a combination that fails on them alone.
        let service = ["session.timeout.ms", "group.id", "bootstrap.servers"];
        let key = first_named(&text, configured)
            .or_else(|| first_named(&text, service))
            .map_or_else(|| "kafka.properties".into(), |p| self.kafka_key(p));
        invalid(&key, format!("librdkafka: {}", self.without_secrets(&text)))
    }

    /// `text` with the value of every secret property masked. Values under 4 bytes are
    /// left: they are no secret, and masking them would garble the text.
    fn without_secrets(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.kafka.secret_properties.values() {
            if secret.expose().len() >= 4 {
                text = text.replace(secret.expose().as_str(), "<redacted>");
            }
        }
        text
    }

    /// The number of workers of the consume loop: `processing.workers`, or one per core
    /// available to the process (at most the largest number allowed).
    pub fn workers(&self) -> usize {
        self.processing.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(*WORKERS.end())
        })
    }

    pub fn rates(&self) -> Rates {
        Rates::new(&self.billing.base_currency, &self.billing.rates)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_event_bytes: self.events.max_event_bytes,
            max_future_skew_ms: self.events.max_future_skew.as_millis() as i64,
        }
    }

    pub fn topic(&self, family: Family) -> &str {
        match family {
            Family::Surveys => &self.topics.surveys,
            Family::Tickets => &self.topics.tickets,
            Family::Billing => &self.topics.billing,
        }
    }

    pub fn family_of(&self, topic: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| self.topic(*f) == topic)
    }
}

#[cfg(test)]
mod tests;
