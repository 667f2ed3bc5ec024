//! Configuration: a TOML file (config/kpi-stream.toml documents every key), overridden by
//! environment variables named `KPI_STREAM_<SECTION>__<KEY>` (for example
//! `KPI_STREAM_KAFKA__BROKERS`). Unknown keys are errors, so a typo never silently falls
//! back to a default. librdkafka properties that the configuration does not name pass
//! through from `[kafka.properties]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Deserializer};

use crate::billing::Rates;
use crate::event::{DIMENSION_FIELDS, Family, Limits};
use crate::window::WindowSpec;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "KPI_STREAM_";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub events: EventsConfig,
    pub windows: WindowsConfig,
    pub dimensions: DimensionsConfig,
    pub billing: BillingConfig,
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
    /// Passed to every librdkafka client as is; these win over the keys above.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties read from files at start (`"sasl.password" = "/run/secrets/kafka"`),
    /// so that secrets stay out of the configuration and the environment listing.
    pub secret_files: BTreeMap<String, String>,
    /// librdkafka properties read from the named environment variables at start
    /// (`"sasl.password" = "KAFKA_PASSWORD"`).
    pub secret_env: BTreeMap<String, String>,
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
    /// Event fields that split every KPI into series: any of segment, region, channel.
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
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    pub seed: u64,
    /// Events per second; 0 means as fast as possible.
    pub rate: u32,
    /// Events to produce; 0 means until stopped.
    pub count: u64,
    /// Share of deliberately malformed events, 0..1.
    pub malformed_ratio: f64,
    /// With a `count`, spread `occurred_at` evenly over this much time before the start,
    /// oldest first, like a topic's history; 0: each event happens when it is produced.
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
            properties: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            secret_env: BTreeMap::new(),
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

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            base_currency: "USD".into(),
            rates: [("EUR", 1.08), ("GBP", 1.27)]
                .into_iter()
                .map(|(c, r)| (c.to_owned(), r))
                .collect(),
            clv_window: "30d".into(),
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

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret(key: &str) -> bool {
    key.contains("password") || key.contains("secret")
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
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
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
        // KPI_STREAM_CONFIG names the file itself (see the command line), not a key.
        figment = figment.merge(Env::prefixed(ENV_PREFIX).ignore(&["config"]).split("__"));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.resolve_secrets()?;
        config.validate()?;
        crate::http::check_tls_files(&config.http)?;
        Ok(config)
    }

    /// Reads the secret properties from their files and environment variables into
    /// `kafka.properties`. Errors name the property and the source, never the value.
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        for (property, path) in &self.kafka.secret_files {
            let value = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "kafka.secret_files",
                    format!("{property}: cannot read {path}: {e}"),
                )
            })?;
            self.kafka.properties.insert(
                property.clone(),
                value.trim_end_matches(['\n', '\r']).to_owned(),
            );
        }
        for (property, variable) in &self.kafka.secret_env {
            let value = std::env::var(variable).map_err(|_| {
                invalid(
                    "kafka.secret_env",
                    format!("{property}: environment variable {variable} is not set"),
                )
            })?;
            self.kafka.properties.insert(property.clone(), value);
        }
        Ok(())
    }

    /// Checks what serde cannot: values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.window_specs()?;
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must name at least one broker"));
        }
        for name in &self.dimensions.names {
            if !DIMENSION_FIELDS.contains(&name.as_str()) {
                return Err(invalid(
                    "dimensions.names",
                    format!("{name:?} is not one of {DIMENSION_FIELDS:?}"),
                ));
            }
        }
        if self.dimensions.max_values == 0 {
            return Err(invalid("dimensions.max_values", "must be at least 1"));
        }
        let is_code = |c: &str| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase());
        if !is_code(&self.billing.base_currency) {
            return Err(invalid(
                "billing.base_currency",
                "must be an ISO 4217 code (three upper-case letters)",
            ));
        }
        for (code, rate) in &self.billing.rates {
            if !(is_code(code) && rate.is_finite() && *rate >= 1e-9) {
                return Err(invalid(
                    "billing.rates",
                    format!("{code} = {rate}: needs an ISO 4217 code and a rate of at least 1e-9"),
                ));
            }
        }
        if !self.windows.spans.contains(&self.billing.clv_window) {
            return Err(invalid(
                "billing.clv_window",
                format!("{:?} is not one of windows.spans", self.billing.clv_window),
            ));
        }
        if self.publish.interval.is_zero() {
            return Err(invalid("publish.interval", "must be positive"));
        }
        if self.publish.snapshot_interval < self.publish.interval {
            return Err(invalid(
                "publish.snapshot_interval",
                "must be at least publish.interval",
            ));
        }
        self.http.validate()?;
        if self.events.max_event_bytes == 0 {
            return Err(invalid("events.max_event_bytes", "must be positive"));
        }
        if !(0.0..=1.0).contains(&self.generate.malformed_ratio) {
            return Err(invalid("generate.malformed_ratio", "must be within 0..1"));
        }
        let topics = [
            ("topics.surveys", &self.topics.surveys),
            ("topics.tickets", &self.topics.tickets),
            ("topics.billing", &self.topics.billing),
            ("topics.deadletter", &self.topics.deadletter),
            ("topics.output", &self.topics.output),
            ("topics.components", &self.topics.components),
        ];
        for (i, (key, topic)) in topics.iter().enumerate() {
            if topic.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
            if topics[..i].iter().any(|(_, other)| other == topic) {
                return Err(invalid(key, format!("topic {topic:?} is used twice")));
            }
        }
        Ok(())
    }

    /// The configured windows, each with its bucket width.
    pub fn window_specs(&self) -> Result<Vec<WindowSpec>, ConfigError> {
        let key = "windows.spans";
        if self.windows.spans.is_empty() {
            return Err(invalid(key, "must list at least one window"));
        }
        if self.windows.buckets == 0 {
            return Err(invalid("windows.buckets", "must be at least 1"));
        }
        let mut specs: Vec<WindowSpec> = Vec::new();
        for name in &self.windows.spans {
            let span = humantime::parse_duration(name)
                .map_err(|e| invalid(key, format!("{name:?}: {e}")))?;
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

    /// The largest window plus one bucket: how far back a replay starts.
    /// An event produced this long ago can still carry an `occurred_at` inside a window,
    /// as late as the accepted future skew allows.
    pub fn replay_span(&self) -> Duration {
        self.window_specs()
            .unwrap_or_default()
            .iter()
            .map(|s| Duration::from_millis((s.span_ms + s.bucket_ms) as u64))
            .max()
            .unwrap_or_default()
            + self.events.max_future_skew
    }

    /// A copy safe to print: librdkafka properties that hold secrets, or that were read
    /// from secret files or variables, and the basic-auth password hashes are masked.
    pub fn redacted(&self) -> Config {
        let mut copy = self.clone();
        for hash in copy.http.basic_auth_users.values_mut() {
            *hash = "<redacted>".into();
        }
        let kafka = &mut copy.kafka;
        for (key, value) in kafka.properties.iter_mut() {
            if is_secret(key)
                || kafka.secret_files.contains_key(key)
                || kafka.secret_env.contains_key(key)
            {
                *value = "<redacted>".into();
            }
        }
        copy
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
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn the_shipped_file_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kpi-stream.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let shipped = load_str(&text).unwrap();
        assert_eq!(format!("{shipped:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn basic_auth_users_need_bcrypt_hashes_of_bounded_cost() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let users = |user: &str, hash: &str| {
            load_str(&format!("[http.basic_auth_users]\n\"{user}\" = \"{hash}\""))
        };
        assert!(users("prometheus", &hash).is_ok());
        for (user, hash) in [
            ("a:b", hash.clone()),
            ("", hash.clone()),
            ("prometheus", hash.replacen("$04$", "$15$", 1)),
        ] {
            let err = users(user, &hash).unwrap_err().to_string();
            assert!(err.contains("http.basic_auth_users"), "{err}");
            assert!(!err.contains(&hash[7..]), "the hash is quoted: {err}");
        }
    }

    #[test]
    fn redaction_masks_password_hashes() {
        let mut config = Config::default();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let users = &mut config.http.basic_auth_users;
        users.insert("prometheus".into(), hash.clone());
        let printed = format!("{:?}", config.redacted());
        assert!(
            printed.contains("prometheus") && !printed.contains(&hash[7..]),
            "{printed}"
        );
    }

    #[test]
    fn redaction_masks_secret_properties_only() {
        let mut config = Config::default();
        let props = &mut config.kafka.properties;
        props.insert("sasl.password".into(), "hunter2".into());
        props.insert("ssl.key.password".into(), "hunter3".into());
        props.insert("security.protocol".into(), "SASL_SSL".into());
        let printed = format!("{:?}", config.redacted());
        assert!(!printed.contains("hunter"), "{printed}");
        assert!(printed.contains("SASL_SSL"));
    }

    // figment's own test API returns its large error type.
    #[allow(clippy::result_large_err)]
    #[test]
    fn secrets_come_from_files_and_variables_and_are_redacted() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("password", "s3cret-file\n")?;
            jail.set_env("KAFKA_TOKEN", "s3cret-env");
            jail.create_file(
                "k.toml",
                "[kafka.secret_files]\n\"sasl.password\" = \"password\"\n\
                 [kafka.secret_env]\n\"sasl.oauthbearer.config\" = \"KAFKA_TOKEN\"",
            )?;
            let config = Config::load(Some(Path::new("k.toml"))).map_err(|e| e.to_string())?;
            let props = &config.kafka.properties;
            assert_eq!(props["sasl.password"], "s3cret-file");
            assert_eq!(props["sasl.oauthbearer.config"], "s3cret-env");
            let printed = format!("{:?}", config.redacted());
            assert!(!printed.contains("s3cret"), "{printed}");
            jail.create_file(
                "bad.toml",
                "[kafka.secret_files]\n\"sasl.password\" = \"missing\"",
            )?;
            let err = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("kafka.secret_files") && err.contains("sasl.password"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn default_windows_have_sixty_buckets() {
        let specs = Config::default().window_specs().unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["1h", "24h", "7d", "30d"]);
        assert_eq!(specs[0].bucket_ms, 60_000);
        assert_eq!(specs[3].bucket_ms, 12 * 3_600_000);
        assert_eq!(
            Config::default().replay_span(),
            Duration::from_secs(30 * 86_400 + 12 * 3600 + 300)
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = load_str("[kafka]\nbrokerz = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("[windows]\nspans = [\"1h\", \"soon\"]", "windows.spans"),
            ("[windows]\nspans = [\"1h\"]\nbuckets = 7", "windows.spans"),
            ("[dimensions]\nnames = [\"plan\"]", "dimensions.names"),
            ("[publish]\ninterval = \"0s\"", "publish.interval"),
            ("[topics]\noutput = \"cs.surveys\"", "topics.output"),
            ("[billing]\nclv_window = \"90d\"", "billing.clv_window"),
            (
                "[billing]\nbase_currency = \"usd\"",
                "billing.base_currency",
            ),
            ("[billing.rates]\nEUR = -1.0", "billing.rates"),
            ("[http]\nmax_connections = 0", "http.max_connections"),
            ("[http]\nmax_connections = 10001", "http.max_connections"),
            (
                "[http]\nheader_read_timeout = \"50ms\"",
                "http.header_read_timeout",
            ),
            (
                "[http]\nheader_read_timeout = \"2m\"",
                "http.header_read_timeout",
            ),
            ("[http]\nidle_timeout = \"1h\"", "http.idle_timeout"),
            (
                "[http]\nlisten = \"0.0.0.0:9464\"\nprobe_listen = \"0.0.0.0:9464\"",
                "http.probe_listen",
            ),
            ("[http]\ntls_cert_file = \"c.pem\"", "http.tls_key_file"),
            ("[http]\ntls_key_file = \"k.pem\"", "http.tls_cert_file"),
            (
                "[http.basic_auth_users]\nprometheus = \"hunter2\"",
                "http.basic_auth_users",
            ),
        ];
        for (toml, key) in cases {
            let err = load_str(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    // figment's own test API returns its large error type.
    #[allow(clippy::result_large_err)]
    #[test]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("k.toml", "[kafka]\nbrokers = \"file:9092\"")?;
            jail.set_env("KPI_STREAM_KAFKA__BROKERS", "env:9092");
            jail.set_env("KPI_STREAM_WINDOWS__SPANS", "[\"1h\"]");
            jail.set_env("KPI_STREAM_CONFIG", "k.toml");
            jail.set_env("KPI_STREAM_BILLING__CLV_WINDOW", "1h");
            let config = Config::load(Some(Path::new("k.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.brokers, "env:9092");
            assert_eq!(config.windows.spans, ["1h"]);
            Ok(())
        });
    }
}
