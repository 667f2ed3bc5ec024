//! Test harness: unique topics on the real local broker, the service binary as a child
//! process, and readers for /metrics and the output and dead-letter topics.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn brokers() -> String {
    std::env::var("KPI_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn rfc3339(ms: i64) -> String {
    kpi_core::kpi::rfc3339(ms)
}

/// The newest message per key on the output topic.
pub fn latest_output(topic: &str) -> HashMap<String, serde_json::Value> {
    latest_output_on(&brokers(), topic)
}

pub fn latest_output_on(brokers: &str, topic: &str) -> HashMap<String, serde_json::Value> {
    read_all_on(brokers, topic)
        .into_iter()
        .map(|m| {
            let key = String::from_utf8(m.key.unwrap()).unwrap();
            (key, serde_json::from_slice(&m.payload.unwrap()).unwrap())
        })
        .collect()
}

/// Polls `check` until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The topics and group of one test, named uniquely so tests never share state.
pub struct Topics {
    pub brokers: String,
    pub surveys: String,
    pub tickets: String,
    pub billing: String,
    pub deadletter: String,
    pub output: String,
    pub components: String,
    pub periods: String,
    pub customer_signals: String,
    pub customer_health: String,
    pub feedback: String,
    pub group: String,
}

impl Topics {
    pub async fn create(test: &str) -> Topics {
        Topics::create_on(&brokers(), test, 3, true).await
    }

    /// Creates the topics on `brokers`, the input topics with `partitions` partitions (the
    /// survey topic) and 2 (the others), the dead-letter topic only if asked.
    pub async fn create_on(
        brokers: &str,
        test: &str,
        partitions: i32,
        with_deadletter: bool,
    ) -> Topics {
        Topics::create_with(brokers, test, [partitions, 2, 2], with_deadletter).await
    }

    /// Creates the topics on `brokers`, the input topics with `partitions` partitions each
    /// (surveys, tickets, billing), the dead-letter topic only if asked.
    pub async fn create_with(
        brokers: &str,
        test: &str,
        partitions: [i32; 3],
        with_deadletter: bool,
    ) -> Topics {
        let id = format!("{test}-{}-{}", std::process::id(), now_ms());
        let topics = Topics {
            brokers: brokers.to_owned(),
            surveys: format!("surveys-{id}"),
            tickets: format!("tickets-{id}"),
            billing: format!("billing-{id}"),
            deadletter: format!("deadletter-{id}"),
            output: format!("kpis-{id}"),
            components: format!("components-{id}"),
            periods: format!("periods-{id}"),
            customer_signals: format!("customer-signals-{id}"),
            customer_health: format!("customer-health-{id}"),
            feedback: format!("feedback-{id}"),
            group: format!("group-{id}"),
        };
        let mut specs = vec![
            (topics.surveys.as_str(), partitions[0]),
            (topics.tickets.as_str(), partitions[1]),
            (topics.billing.as_str(), partitions[2]),
            (topics.output.as_str(), 1),
            (topics.components.as_str(), 1),
            (topics.periods.as_str(), 1),
            (topics.customer_signals.as_str(), 2),
            (topics.customer_health.as_str(), 2),
            (topics.feedback.as_str(), 2),
        ];
        if with_deadletter {
            specs.push((topics.deadletter.as_str(), 1));
        }
        create_topics(brokers, &specs).await;
        topics
    }

    /// The same input topics seen by a second service with its own group, output and
    /// dead-letter topics: the run without the fault that a faulted run must equal.
    pub async fn reference(&self) -> Topics {
        let id = format!("ref-{}-{}", std::process::id(), now_ms());
        let reference = Topics {
            brokers: self.brokers.clone(),
            surveys: self.surveys.clone(),
            tickets: self.tickets.clone(),
            billing: self.billing.clone(),
            deadletter: format!("deadletter-{id}"),
            output: format!("kpis-{id}"),
            components: format!("components-{id}"),
            periods: format!("periods-{id}"),
            customer_signals: format!("customer-signals-{id}"),
            customer_health: format!("customer-health-{id}"),
            feedback: format!("feedback-{id}"),
            group: format!("group-{id}"),
        };
        create_topics(
            &self.brokers,
            &[
                (reference.deadletter.as_str(), 1),
                (reference.output.as_str(), 1),
                (reference.components.as_str(), 1),
                (reference.periods.as_str(), 1),
                (reference.customer_signals.as_str(), 2),
                (reference.customer_health.as_str(), 2),
                (reference.feedback.as_str(), 2),
            ],
        )
        .await;
        reference
    }

    /// Environment that points the service at these topics.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("KPI_STREAM_KAFKA__BROKERS", self.brokers.clone()),
            ("KPI_STREAM_KAFKA__GROUP_ID", self.group.clone()),
            ("KPI_STREAM_KAFKA__SESSION_TIMEOUT_MS", "6000".into()),
            ("KPI_STREAM_TOPICS__SURVEYS", self.surveys.clone()),
            ("KPI_STREAM_TOPICS__TICKETS", self.tickets.clone()),
            ("KPI_STREAM_TOPICS__BILLING", self.billing.clone()),
            ("KPI_STREAM_TOPICS__DEADLETTER", self.deadletter.clone()),
            ("KPI_STREAM_TOPICS__OUTPUT", self.output.clone()),
            ("KPI_STREAM_TOPICS__COMPONENTS", self.components.clone()),
            ("KPI_STREAM_TOPICS__PERIODS", self.periods.clone()),
            (
                "KPI_STREAM_TOPICS__CUSTOMER_SIGNALS",
                self.customer_signals.clone(),
            ),
            (
                "KPI_STREAM_TOPICS__CUSTOMER_HEALTH",
                self.customer_health.clone(),
            ),
            ("KPI_STREAM_TOPICS__FEEDBACK", self.feedback.clone()),
            ("KPI_STREAM_PUBLISH__INTERVAL", "1s".into()),
            // Tests produce their messages before the first start of a new group, and
            // check that they are counted and dead-lettered.
            ("KPI_STREAM_EVENTS__REPORT_HISTORY", "true".into()),
            // The tests count the records of the rolling windows; the calendar periods have
            // tests of their own (periods.rs), which set them.
            ("KPI_STREAM_CALENDAR__PERIODS", "[]".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn inputs(&self) -> [&str; 3] {
        [&self.surveys, &self.tickets, &self.billing]
    }
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

pub async fn create_topics(brokers: &str, specs: &[(&str, i32)]) {
    let new: Vec<NewTopic> = specs
        .iter()
        // A year, as scripts/kafka.sh gives the input topics: the broker deletes by message
        // timestamp, and tests write histories stamped weeks back.
        .map(|(name, partitions)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(1))
                .set("retention.ms", "31708800000")
        })
        .collect();
    for result in admin(brokers)
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

/// Creates one single-partition topic with topic-level configuration.
pub async fn create_topic_with_config(brokers: &str, topic: &str, config: &[(&str, &str)]) {
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (key, value) in config {
        new = new.set(key, value);
    }
    for result in admin(brokers)
        .create_topics(&[new], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

/// Deletes the messages of `topic` below `offsets` (partition, offset), as retention would.
pub async fn delete_records(brokers: &str, topic: &str, offsets: &[(i32, i64)]) {
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .unwrap();
    }
    let deleted = admin(brokers)
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .unwrap();
    for e in deleted.elements() {
        e.error().unwrap();
    }
}

/// Grows `topic` to `partitions` partitions.
pub async fn add_partitions(brokers: &str, topic: &str, partitions: usize) {
    let grow = rdkafka::admin::NewPartitions::new(topic, partitions);
    for result in admin(brokers)
        .create_partitions(&[grow], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
}

pub fn producer() -> FutureProducer {
    producer_on(&brokers())
}

pub fn producer_on(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "12000000")
        .create()
        .unwrap()
}

pub async fn produce(producer: &FutureProducer, topic: &str, key: Option<&str>, payload: &[u8]) {
    produce_stamped(producer, topic, key, payload, None).await;
}

/// Produces with the Kafka timestamp `timestamp_ms` (the producer's clock when `None`).
pub async fn produce_stamped(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
    timestamp_ms: Option<i64>,
) {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(timestamp) = timestamp_ms {
        record = record.timestamp(timestamp);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A port on 127.0.0.1 that nothing listens on (at the time of the call).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kpi-stream run`, killed when dropped.
pub struct Service {
    child: Child,
    pub http: String,
}

impl Service {
    pub fn start(env: &[(String, String)]) -> Service {
        Service::spawn(env, Stdio::inherit())
    }

    /// Starts the service with its log written to `log`.
    pub fn start_logging_to(env: &[(String, String)], log: &std::path::Path) -> Service {
        Service::spawn(env, std::fs::File::create(log).unwrap().into())
    }

    fn spawn(env: &[(String, String)], stderr: Stdio) -> Service {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KPI_STREAM_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn,kpi_stream=info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Service {
            child,
            http: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.http)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    pub async fn wait_ready(&self) {
        eventually("/readyz", Duration::from_secs(90), async || {
            matches!(self.get("/readyz").await, Some((200, _))).then_some(())
        })
        .await;
    }

    pub async fn metrics(&self) -> Metrics {
        let (status, text) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200);
        Metrics::parse(&text)
    }

    /// /metrics, or `None` while the service is not listening yet.
    pub async fn try_metrics(&self) -> Option<Metrics> {
        match self.get("/metrics").await? {
            (200, text) => Some(Metrics::parse(&text)),
            _ => None,
        }
    }

    /// The records of /kpis, or `None` while the service does not serve them yet.
    pub async fn kpi_records(&self) -> Option<Vec<serde_json::Value>> {
        match self.get("/kpis").await? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        (status, start.elapsed())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A parsed Prometheus text exposition: `name{labels}` (labels sorted, as exposed) to value.
pub struct Metrics {
    pub series: HashMap<String, f64>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics { series }
    }

    /// The value of `name` with exactly `labels` (given in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels = labels.to_vec();
        labels.sort();
        let rendered: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let key = if rendered.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", rendered.join(","))
        };
        self.series.get(&key).copied()
    }

    /// Sum of every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| {
                k.split('{').next() == Some(name)
                    && labels
                        .iter()
                        .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    /// The message's timestamp, Unix milliseconds.
    pub timestamp: Option<i64>,
}

/// Reads every message of a topic from the beginning up to its current end.
pub fn read_all(topic: &str) -> Vec<Read> {
    read_all_on(&brokers(), topic)
}

pub fn read_all_on(brokers: &str, topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}-{}", now_ms()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        tpl.add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while remaining > 0 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Read {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
                timestamp: m.timestamp().to_millis(),
            });
            remaining -= 1;
        }
    }
    assert_eq!(remaining, 0, "could not read all of {topic}");
    out
}

/// A consumer of `group` that never joins it: it only reads the group's committed offsets.
fn group_reader(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap()
}

/// The end offset of every partition of `topics`.
fn partition_ends(consumer: &BaseConsumer, topics: &[&str]) -> HashMap<(String, i32), i64> {
    let mut ends = HashMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        for p in metadata.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            ends.insert((topic.to_string(), p.id()), high);
        }
    }
    ends
}

/// The messages in `topics`: the sum of their partitions' end offsets (new topics).
pub fn end_offsets(brokers: &str, topics: &[&str]) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    partition_ends(&consumer, topics).values().sum()
}

/// The group's committed offsets equal the end of every partition of `topics`.
pub fn committed_to_end(group: &str, topics: &[&str]) -> bool {
    let consumer = group_reader(group);
    let ends = partition_ends(&consumer, topics);
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in ends.keys() {
        tpl.add_partition(topic, *partition);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed.elements().iter().all(|e| {
        let end = ends[&(e.topic().to_owned(), e.partition())];
        match e.offset() {
            Offset::Offset(o) => o == end,
            _ => end == 0,
        }
    })
}

/// Every KPI value and component gauge (not counters, not the service's own health).
pub fn kpi_values(metrics: &Metrics) -> std::collections::BTreeMap<String, f64> {
    // The service's health, and customer health: its owner's gauges follow the signals
    // topic a publish or more after the KPIs, and tests of their own check them.
    const HEALTH: [&str; 16] = [
        "kpi_customers_by_health",
        "kpi_mrr_by_health",
        "kpi_health_",
        "kpi_global_",
        "kpi_http_",
        "kpi_assigned_partitions",
        "kpi_consumer_lag",
        "kpi_newest_event_timestamp_seconds",
        "kpi_ready",
        "kpi_last_publish_timestamp_seconds",
        "kpi_build_info",
        "kpi_deadletter_pending",
        "kpi_paused_partitions",
        "kpi_longest_pause_seconds",
        "kpi_stale_partitions",
        "kpi_ticket_resolution_seconds",
    ];
    metrics
        .series
        .iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or_default();
            name.starts_with("kpi_")
                && !name.ends_with("_total")
                && !HEALTH.iter().any(|h| name.starts_with(h))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The published value and samples of every key on an output topic.
pub fn output_values(
    brokers: &str,
    topic: &str,
) -> std::collections::BTreeMap<String, (serde_json::Value, serde_json::Value)> {
    latest_output_on(brokers, topic)
        .into_iter()
        .map(|(k, v)| (k, (v["value"].clone(), v["samples"].clone())))
        .collect()
}

/// Runs `kpi-stream generate` against `topics` until it has produced `count` events.
pub fn generate(topics: &Topics, count: u64, rate: u32, seed: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .args([
            "generate",
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .args(["--seed", &seed.to_string(), "--malformed-ratio", "0.02"])
        .envs(topics.env())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits for a child process in a blocking thread.
pub async fn wait(mut child: Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// Sum of the service's consumed counters over the input topics.
pub fn consumed(metrics: &Metrics) -> f64 {
    metrics.sum("kpi_events_consumed_total", &[])
}

/// A fresh single instance over the same input topics, caught up: the run without the
/// fault that a faulted run must equal. Returns its topics, the service and its values.
pub async fn start_reference(
    topics: &Topics,
    extra_env: &[(String, String)],
) -> (Topics, Service, std::collections::BTreeMap<String, f64>) {
    let reference_topics = topics.reference().await;
    let mut env = reference_topics.env();
    env.extend(extra_env.iter().cloned());
    let reference = Service::start(&env);
    reference.wait_ready().await;
    let expected = kpi_values(&reference.metrics().await);
    assert!(expected.len() > 100, "{}", expected.len());
    (reference_topics, reference, expected)
}

/// Waits until the output topic of `topics` holds exactly the values and samples of the
/// reference's output topic, key by key.
pub async fn assert_same_output(topics: &Topics, reference_topics: &Topics) {
    eventually("equal output topics", Duration::from_secs(60), async || {
        let got = output_values(&topics.brokers, &topics.output);
        let want = output_values(&topics.brokers, &reference_topics.output);
        (!want.is_empty() && got == want).then_some(())
    })
    .await;
}

/// Asserts that `service` ends with the values of a fresh service over the same inputs,
/// in /metrics and on the output topic.
pub async fn assert_equals_reference(
    topics: &Topics,
    service: &Service,
    extra_env: &[(String, String)],
) {
    let (reference_topics, _reference, expected) = start_reference(topics, extra_env).await;
    eventually(
        "the faulted run's values to equal the reference",
        Duration::from_secs(60),
        async || {
            let got = kpi_values(&service.metrics().await);
            (got == expected).then_some(())
        },
    )
    .await;
    assert_same_output(topics, &reference_topics).await;
}

/// Asserts two metric maps are equal, naming the first differences.
pub fn assert_same(
    got: &std::collections::BTreeMap<String, f64>,
    want: &std::collections::BTreeMap<String, f64>,
) {
    let diff: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: got {:?}, want {v}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k}: unexpected")),
        )
        .take(10)
        .collect();
    assert!(diff.is_empty(), "values differ:\n{}", diff.join("\n"));
}

/// A broker of a test's own, started by scripts/kafka.sh on another port (stopping or
/// reconfiguring the shared one would disturb the other tests). Removed when dropped.
pub struct PrivateBroker {
    port: u16,
    run_dir: std::path::PathBuf,
    scram: Option<(String, String)>,
}

impl PrivateBroker {
    pub fn kafka_sh(&self, command: &str) -> bool {
        let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"));
        cmd.arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_RUN_DIR", &self.run_dir)
            .stdout(Stdio::null());
        if let Some((user, password)) = &self.scram {
            cmd.env("KAFKA_SCRAM_USER", user)
                .env("KAFKA_SCRAM_PASSWORD", password);
        }
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    pub fn start(port: u16) -> PrivateBroker {
        PrivateBroker::launch(port, None)
    }

    /// A broker whose `port` requires SASL SCRAM-SHA-256 for `user`; `port + 2` is plain.
    pub fn start_with_scram(port: u16, user: &str, password: &str) -> PrivateBroker {
        PrivateBroker::launch(port, Some((user.to_owned(), password.to_owned())))
    }

    fn launch(port: u16, scram: Option<(String, String)>) -> PrivateBroker {
        let run_dir =
            std::env::temp_dir().join(format!("kpi-broker-{port}-{}", std::process::id()));
        let broker = PrivateBroker {
            port,
            run_dir,
            scram,
        };
        assert!(broker.kafka_sh("start"), "private broker did not start");
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The plain listener of a SCRAM broker.
    pub fn plain_address(&self) -> String {
        format!("127.0.0.1:{}", self.port + 2)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kafka_sh("clean");
    }
}

/// The group's committed offset of one partition, if any.
pub fn committed(group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer = group_reader(group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    match committed.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}
