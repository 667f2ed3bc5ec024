//! Prometheus exposition: the KPI gauges with their components, counters of the raw inputs,
//! and the service's own health. docs/metrics.md lists every metric.
//!
//! Per-event counters are resolved to handles once, at start, so the consume loop never
//! hashes label values.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::local::LocalIntCounter;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use kpi_core::event::{Family, Reason, Survey};
use kpi_core::health::Band;
use kpi_core::kpi::{ConstLabel, KPIS, KpiRecord};
use kpi_core::ticket::DURATION_BOUNDS_SECONDS;

/// Content-Type of the classic text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers `collector` and hands it back, for the caller to keep a handle.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// Counters of one input topic, resolved once. A worker of the consume loop keeps its own
/// ([`TopicCounters::local`]) and adds them to the shared ones in batches.
#[derive(Debug, Clone)]
pub struct TopicCounters<C = IntCounter> {
    pub consumed: C,
    pub processed: C,
    pub late: C,
    pub duplicate: C,
    /// Indexed like [`Reason::ALL`].
    pub rejected: Vec<C>,
}

impl<C> TopicCounters<C> {
    pub fn rejected(&self, reason: Reason) -> &C {
        let index = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.rejected[index]
    }
}

impl TopicCounters {
    /// Counters of one thread, added to these by [`TopicCounters::flush`].
    pub fn local(&self) -> TopicCounters<LocalIntCounter> {
        TopicCounters {
            consumed: self.consumed.local(),
            processed: self.processed.local(),
            late: self.late.local(),
            duplicate: self.duplicate.local(),
            rejected: self.rejected.iter().map(IntCounter::local).collect(),
        }
    }
}

impl TopicCounters<LocalIntCounter> {
    /// Adds the counts to the shared counters and starts again from 0.
    pub fn flush(&self) {
        for counter in [&self.consumed, &self.processed, &self.late, &self.duplicate]
            .into_iter()
            .chain(&self.rejected)
        {
            counter.flush();
        }
    }
}

/// The per-topic counters of input messages, by label.
#[derive(Debug)]
struct InputCounters {
    consumed: IntCounterVec,
    processed: IntCounterVec,
    rejected: IntCounterVec,
    late: IntCounterVec,
    duplicate: IntCounterVec,
}

impl InputCounters {
    /// The counters of `topic`, every rejection reason exported from the start.
    fn of(&self, topic: &str) -> TopicCounters {
        TopicCounters {
            consumed: self.consumed.with_label_values(&[topic]),
            processed: self.processed.with_label_values(&[topic]),
            late: self.late.with_label_values(&[topic]),
            duplicate: self.duplicate.with_label_values(&[topic]),
            rejected: Reason::ALL
                .iter()
                .map(|r| self.rejected.with_label_values(&[topic, r.code()]))
                .collect(),
        }
    }
}

/// Survey responses by survey and score, resolved once; local to a worker like
/// [`TopicCounters`].
#[derive(Debug, Clone)]
pub struct SurveyResponses<C = IntCounter> {
    /// Indexed by survey (like [`Survey::ALL`]), then by score minus the scale's low end.
    by_survey: Vec<Vec<C>>,
}

impl<C> SurveyResponses<C> {
    /// The counter of `score` in `survey`; the score is within the survey's scale (the
    /// event contract checks it).
    pub fn get(&self, survey: Survey, score: u8) -> &C {
        let index = Survey::ALL.iter().position(|s| *s == survey).unwrap_or(0);
        &self.by_survey[index][usize::from(score - survey.scale().0)]
    }
}

impl SurveyResponses {
    pub fn local(&self) -> SurveyResponses<LocalIntCounter> {
        SurveyResponses {
            by_survey: self
                .by_survey
                .iter()
                .map(|scores| scores.iter().map(IntCounter::local).collect())
                .collect(),
        }
    }
}

impl SurveyResponses<LocalIntCounter> {
    pub fn flush(&self) {
        self.by_survey
            .iter()
            .flatten()
            .for_each(LocalIntCounter::flush);
    }
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    dimension_names: Vec<String>,
    kpi_values: HashMap<&'static str, GaugeVec>,
    /// By gauge name and constant label.
    kpi_components: HashMap<(&'static str, Option<ConstLabel>), GaugeVec>,
    /// Label values (window, then each dimension) of the KPI series set by the last update,
    /// so that a series this instance no longer computes (its partition was revoked) is
    /// removed instead of exported with its last value.
    kpi_series: Mutex<HashSet<Vec<String>>>,
    /// Indexed like [`Family::ALL`].
    topics: Vec<TopicCounters>,
    inputs: InputCounters,
    /// Rates of the rates topic held.
    pub rates_held: IntGauge,
    pub survey_responses: SurveyResponses,
    /// Every resolution, each counted once: `histogram_quantile()` over summed instances.
    pub resolution_time: Histogram,
    /// Tickets dropped from the open tickets after `sla.max_open_age`, each counted once.
    pub tickets_abandoned: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub newest_event_time: GaugeVec,
    pub dimension_overflow: IntCounterVec,
    pub deadletter_failures: IntCounter,
    pub deadletter_pending: IntGauge,
    pub paused_partitions: IntGauge,
    pub longest_pause: prometheus::Gauge,
    pub stale_partitions: IntGauge,
    pub output_failures: IntCounter,
    pub output_messages: IntCounter,
    pub ready: IntGauge,
    pub last_publish_time: prometheus::Gauge,
    pub components_sent: IntCounter,
    pub components_failures: IntCounter,
    pub components_invalid: IntCounter,
    pub periods_written: IntCounter,
    pub periods_failures: IntCounter,
    pub periods_invalid: IntCounter,
    pub global_publisher: IntGauge,
    pub assigned_partitions: IntGauge,
    /// Messages read by each worker of the consume loop, by `worker` (its index).
    pub worker_messages: IntCounterVec,
    pub global_missing_partitions: IntGauge,
    pub global_components_age: prometheus::Gauge,
    pub http: HttpMetrics,
    pub health: HealthMetrics,
}

/// Customer health: the owned customers by band, and the signals and health topics.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    /// Owned, scored customers by `band` and `segment` (`""`: all of them).
    pub customers_by_health: IntGaugeVec,
    /// Their MRR, base-currency major units, by `band` and `segment`.
    pub mrr_by_health: GaugeVec,
    /// Band changes of owned customers, by `from`, `to` and `segment`.
    pub transitions: IntCounterVec,
    /// Customers whose signals this instance holds as their owner.
    pub customers_owned: IntGauge,
    /// Customers forgotten by their owner: every input partition forgot them.
    pub customers_forgotten: IntCounter,
    pub signals_sent: IntCounter,
    pub signals_failures: IntCounter,
    /// Signals messages the owner could not decode.
    pub signals_invalid: IntCounter,
    /// Restores of input partitions' parts that did not read the signals topic to its end.
    pub signals_restore_failures: IntCounter,
    pub health_messages: IntCounter,
    pub health_failures: IntCounter,
    pub feedback_messages: IntCounter,
    pub feedback_failures: IntCounter,
    /// When the owner last scored its customers.
    pub last_rescore_time: prometheus::Gauge,
}

impl HealthMetrics {
    fn register(registry: &Registry, base_currency: &str) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| register(registry, IntCounter::new(name, help)?);
        let metrics = HealthMetrics {
            customers_by_health: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "kpi_customers_by_health",
                        "Customers this instance owns and scores, by health band and segment (segment=\"\": all)",
                    ),
                    &["band", "segment"],
                )?,
            )?,
            mrr_by_health: register(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "kpi_mrr_by_health",
                        "MRR of the customers this instance owns and scores, by health band and segment (segment=\"\": all)",
                    )
                    .const_label("currency", base_currency),
                    &["band", "segment"],
                )?,
            )?,
            transitions: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "kpi_health_transitions_total",
                        "Owned customers that moved from one health band to another, by segment (segment=\"\": all)",
                    ),
                    &["from", "to", "segment"],
                )?,
            )?,
            customers_owned: register(
                registry,
                IntGauge::new(
                    "kpi_health_customers_owned",
                    "Customers whose signals this instance holds as their owner, scored or not",
                )?,
            )?,
            customers_forgotten: counter(
                "kpi_health_customers_forgotten_total",
                "Customers their owner forgot: every input partition with their events forgot them",
            )?,
            signals_sent: counter(
                "kpi_customer_signals_sent_total",
                "Customer signal parts and tombstones acknowledged by the broker",
            )?,
            signals_failures: counter(
                "kpi_customer_signals_failures_total",
                "Customer signal parts not queued or not acknowledged (each is written again)",
            )?,
            signals_invalid: counter(
                "kpi_customer_signals_invalid_total",
                "Messages read from the customer signals topic that could not be decoded",
            )?,
            signals_restore_failures: counter(
                "kpi_customer_signals_restore_failures_total",
                "Input partitions whose signal parts could not be restored from the customer signals topic",
            )?,
            health_messages: counter(
                "kpi_customer_health_messages_total",
                "Customer health messages acknowledged by the broker",
            )?,
            health_failures: counter(
                "kpi_customer_health_failures_total",
                "Customer health messages not queued or not acknowledged",
            )?,
            feedback_messages: counter(
                "kpi_feedback_messages_total",
                "Detractors' answers written to the feedback topic and acknowledged",
            )?,
            feedback_failures: counter(
                "kpi_feedback_failures_total",
                "Feedback messages not queued or not acknowledged (each is written again)",
            )?,
            last_rescore_time: register(
                registry,
                prometheus::Gauge::new(
                    "kpi_health_last_rescore_timestamp_seconds",
                    "When the customer health owner last scored its customers, Unix seconds",
                )?,
            )?,
        };
        // Every band's overall series and every transition exist from the start, at 0, so
        // that a rule over them has a series before the first customer is scored.
        for band in Band::ALL {
            let labels = [band.name(), ""];
            metrics
                .customers_by_health
                .with_label_values(&labels)
                .set(0);
            metrics.mrr_by_health.with_label_values(&labels).set(0.0);
            for to in Band::ALL.into_iter().filter(|to| *to != band) {
                metrics
                    .transitions
                    .with_label_values(&[band.name(), to.name(), ""])
                    .inc_by(0);
            }
        }
        Ok(metrics)
    }
}

/// The HTTP server's connections, timeouts and password checks.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// Open connections, by `listener` (`main`, `probe`).
    pub connections: IntGaugeVec,
    /// Connections closed on arrival because the listener had its maximum open.
    pub refused: IntCounterVec,
    /// Connections closed by a timeout, by `listener` and `timeout` (`header_read`, `idle`).
    pub timeouts: IntCounterVec,
    /// bcrypt verifications, by `result` (`admitted`, `refused`); a remembered verdict is not
    /// counted.
    pub password_verifications: IntCounterVec,
}

impl HttpMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        Ok(HttpMetrics {
            connections: gauge(
                "kpi_http_connections",
                "Open HTTP connections",
                &["listener"],
            )?,
            refused: counter(
                "kpi_http_connections_refused_total",
                "HTTP connections closed on arrival because the listener had http.max_connections open",
                &["listener"],
            )?,
            timeouts: counter(
                "kpi_http_timeouts_total",
                "HTTP connections closed by the header-read or the idle timeout",
                &["listener", "timeout"],
            )?,
            password_verifications: counter(
                "kpi_http_password_verifications_total",
                "bcrypt verifications of basic-auth credentials not seen before, by result",
                &["result"],
            )?,
        })
    }
}

/// One KPI gauge's series at one instant ([`Metrics::kpi_samples`]).
pub struct KpiSamples {
    pub name: String,
    pub help: String,
    /// Each series' labels, sorted by name, and its value.
    pub series: Vec<(Vec<(String, String)>, f64)>,
}

impl Metrics {
    /// `topic_names` are the input topics in [`Family::ALL`] order; money is labelled with
    /// `currency` = `base_currency`.
    pub fn new(
        dimension_names: &[String],
        topic_names: [&str; 3],
        base_currency: &str,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let mut labels = vec!["window"];
        labels.extend(dimension_names.iter().map(String::as_str));
        let gauge = |metric: &str,
                     help: &str,
                     label: Option<(&str, &str)>,
                     money: bool|
         -> prometheus::Result<GaugeVec> {
            let mut opts = Opts::new(metric, help);
            if let Some((name, value)) = label {
                opts = opts.const_label(name, value);
            }
            if money {
                opts = opts.const_label("currency", base_currency);
            }
            register(&registry, GaugeVec::new(opts, &labels)?)
        };

        let value_metrics: HashSet<&str> = KPIS.iter().map(|d| d.metric).collect();
        let mut kpi_values = HashMap::new();
        let mut kpi_components = HashMap::new();
        for def in KPIS {
            kpi_values.insert(def.kpi, gauge(def.metric, def.help, def.label, def.money)?);
            for c in def.components {
                // A component that is another KPI's value is exported by that KPI.
                let key = (c.metric, c.label);
                if value_metrics.contains(c.metric) || kpi_components.contains_key(&key) {
                    continue;
                }
                kpi_components.insert(key, gauge(c.metric, c.help, c.label, c.money)?);
            }
        }
        let resolution_time = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "kpi_ticket_resolution_seconds",
                    "Resolution times of every ticket.resolved, each counted once",
                )
                .buckets(DURATION_BOUNDS_SECONDS.iter().map(|&b| b as f64).collect()),
            )?,
        )?;

        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                register(
                    &registry,
                    IntCounterVec::new(Opts::new(name, help), labels)?,
                )
            };
        let consumed = counter(
            "kpi_events_consumed_total",
            "Messages read from an input topic, replays included",
            &["topic"],
        )?;
        let processed = counter(
            "kpi_events_processed_total",
            "Valid events applied to the KPI state, replays included",
            &["topic"],
        )?;
        let rejected = counter(
            "kpi_events_rejected_total",
            "Messages rejected to the dead-letter topic, by reason",
            &["topic", "reason"],
        )?;
        let late = counter(
            "kpi_events_late_total",
            "Valid events older than the largest window, which changed nothing",
            &["topic"],
        )?;
        let duplicate = counter(
            "kpi_events_duplicate_total",
            "Valid events whose event_id was already applied within the deduplication horizon",
            &["topic"],
        )?;
        let inputs = InputCounters {
            consumed,
            processed,
            rejected,
            late,
            duplicate,
        };
        let topics = topic_names.iter().map(|topic| inputs.of(topic)).collect();

        let responses = counter(
            "kpi_survey_responses_total",
            "Survey responses by survey and score, each counted once",
            &["survey", "score"],
        )?;
        let survey_responses = SurveyResponses {
            by_survey: Survey::ALL
                .iter()
                .map(|s| {
                    let (low, high) = s.scale();
                    (low..=high)
                        .map(|score| responses.with_label_values(&[s.name(), &score.to_string()]))
                        .collect()
                })
                .collect(),
        };

        let consumer_lag = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kpi_consumer_lag",
                    "Messages between the next offset the service reads and the partition's end offset, paused or not",
                ),
                &["topic", "partition"],
            )?,
        )?;
        let newest_event_time = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "kpi_newest_event_timestamp_seconds",
                    "The newest occurred_at applied from a topic, Unix seconds",
                ),
                &["topic"],
            )?,
        )?;
        let dimension_overflow = counter(
            "kpi_dimension_overflow_total",
            "Events whose dimension value folded into \"other\" past the cap",
            &["dimension"],
        )?;
        for name in dimension_names {
            dimension_overflow.with_label_values(&[name]);
        }
        let single = |name: &str, help: &str| register(&registry, IntCounter::new(name, help)?);
        let deadletter_failures = single(
            "kpi_deadletter_failures_total",
            "Failed attempts to deliver a dead-letter record (each is retried)",
        )?;
        let deadletter_pending = register(
            &registry,
            IntGauge::new(
                "kpi_deadletter_pending",
                "Dead-letter records sent but not yet acknowledged by the broker",
            )?,
        )?;
        let paused_partitions = register(
            &registry,
            IntGauge::new(
                "kpi_paused_partitions",
                "Input partitions paused because their dead-letter records cannot be delivered",
            )?,
        )?;
        let longest_pause = register(
            &registry,
            prometheus::Gauge::new(
                "kpi_longest_pause_seconds",
                "How long the longest-paused input partition has been paused, seconds; 0 when none is",
            )?,
        )?;
        let stale_partitions = register(
            &registry,
            IntGauge::new(
                "kpi_stale_partitions",
                "Input partitions paused for longer than kafka.max_pause; the service is not ready meanwhile",
            )?,
        )?;
        let tickets_abandoned = single(
            "kpi_tickets_abandoned_total",
            "Tickets dropped from the open tickets after being open longer than sla.max_open_age",
        )?;
        let output_failures = single(
            "kpi_output_failures_total",
            "Output-topic messages the broker did not acknowledge",
        )?;
        let output_messages = single(
            "kpi_output_messages_total",
            "Messages published to the output topic",
        )?;
        let ready = register(
            &registry,
            IntGauge::new(
                "kpi_ready",
                "1 once every assigned partition has caught up and the broker is reachable",
            )?,
        )?;
        let last_publish_time = register(
            &registry,
            prometheus::Gauge::new(
                "kpi_last_publish_timestamp_seconds",
                "When the KPI values were last computed, Unix seconds",
            )?,
        )?;
        let components_sent = single(
            "kpi_components_sent_total",
            "Component messages (one input partition's tallies) acknowledged by the broker",
        )?;
        let components_failures = single(
            "kpi_components_failures_total",
            "Component messages the broker did not acknowledge (each is sent again)",
        )?;
        let components_invalid = single(
            "kpi_components_invalid_total",
            "Messages read from the components topic that could not be decoded",
        )?;
        let periods_written = single(
            "kpi_periods_written_total",
            "Period records (one input partition's tallies for one calendar period) acknowledged by the broker",
        )?;
        let periods_failures = single(
            "kpi_periods_failures_total",
            "Period records not queued or not acknowledged (each is written again)",
        )?;
        let periods_invalid = single(
            "kpi_periods_invalid_total",
            "Messages read from the periods topic that could not be decoded",
        )?;
        let int_gauge = |name: &str, help: &str| register(&registry, IntGauge::new(name, help)?);
        let rates_held = int_gauge(
            "kpi_rates_held",
            "Rates read from billing.rates_topic and held, every currency's; beyond billing.max_rates further ones are rejected",
        )?;
        let global_publisher = int_gauge(
            "kpi_global_publisher",
            "1 while this instance publishes the global values to the output topic",
        )?;
        let assigned_partitions = int_gauge(
            "kpi_assigned_partitions",
            "Input partitions the consumer group assigned to this instance",
        )?;
        let worker_messages = counter(
            "kpi_worker_messages_total",
            "Input messages read by each worker of the consume loop, replays included",
            &["worker"],
        )?;
        let global_missing_partitions = int_gauge(
            "kpi_global_missing_partitions",
            "Input partitions without recent components at the last publish; global values wait for them",
        )?;
        let global_components_age = register(
            &registry,
            prometheus::Gauge::new(
                "kpi_global_components_age_seconds",
                "Age of the oldest components received from other instances in the last global values",
            )?,
        )?;
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("kpi_build_info", "Build information; the value is always 1"),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let http = HttpMetrics::register(&registry)?;
        let health = HealthMetrics::register(&registry, base_currency)?;
        Ok(Metrics {
            registry,
            dimension_names: dimension_names.to_vec(),
            kpi_values,
            kpi_components,
            kpi_series: Mutex::new(HashSet::new()),
            topics,
            inputs,
            rates_held,
            survey_responses,
            resolution_time,
            tickets_abandoned,
            consumer_lag,
            newest_event_time,
            dimension_overflow,
            deadletter_failures,
            deadletter_pending,
            paused_partitions,
            longest_pause,
            stale_partitions,
            output_failures,
            output_messages,
            ready,
            last_publish_time,
            components_sent,
            components_failures,
            components_invalid,
            periods_written,
            periods_failures,
            periods_invalid,
            global_publisher,
            assigned_partitions,
            worker_messages,
            global_missing_partitions,
            global_components_age,
            http,
            health,
        })
    }

    pub fn topic(&self, family: Family) -> &TopicCounters {
        &self.topics[family.index()]
    }

    /// The counters of a topic other than the input topics' (the rates topic).
    pub fn topic_counters(&self, topic: &str) -> TopicCounters {
        self.inputs.of(topic)
    }

    /// Sets the KPI gauges from a snapshot. A value that is undefined removes its series, so
    /// it is absent rather than NaN; the components stay, at 0.
    pub fn update_kpis(&self, records: &[KpiRecord]) {
        let mut labels: Vec<&str> = Vec::with_capacity(1 + self.dimension_names.len());
        let mut series = HashSet::new();
        let mut last: Option<Vec<String>> = None;
        for record in records {
            labels.clear();
            labels.push(&record.window);
            for name in &self.dimension_names {
                match &record.dimension {
                    Some((dim, value)) if dim == name => labels.push(value),
                    _ => labels.push(""),
                }
            }
            // Records of one series come together: one insert per series, not per record.
            let same = last
                .as_ref()
                .is_some_and(|l| l.iter().map(String::as_str).eq(labels.iter().copied()));
            if !same {
                let owned: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
                series.insert(owned.clone());
                last = Some(owned);
            }
            if let Some(gauge) = self.kpi_values.get(record.def.kpi) {
                match record.value {
                    Some(v) => gauge.with_label_values(&labels).set(v),
                    // Removing a series that was never set fails harmlessly.
                    None => {
                        let _ = gauge.remove_label_values(&labels);
                    }
                }
            }
            for (component, value) in record.def.components.iter().zip(&record.components) {
                let Some(gauge) = self
                    .kpi_components
                    .get(&(component.metric, component.label))
                else {
                    continue;
                };
                match value {
                    Some(v) => gauge.with_label_values(&labels).set(*v),
                    None => {
                        let _ = gauge.remove_label_values(&labels);
                    }
                }
            }
        }
        let Ok(mut exported) = self.kpi_series.lock() else {
            return;
        };
        for gone in exported.difference(&series) {
            let labels: Vec<&str> = gone.iter().map(String::as_str).collect();
            for gauge in self.kpi_values.values().chain(self.kpi_components.values()) {
                let _ = gauge.remove_label_values(&labels);
            }
        }
        *exported = series;
    }

    /// Every KPI and component gauge as it stands after [`Metrics::update_kpis`]: each
    /// metric's name, help and series (labels, constant ones included, and value). What
    /// `history` writes for each instant, so that it has /metrics' names, labels and help.
    pub fn kpi_samples(&self) -> Vec<KpiSamples> {
        self.kpi_values
            .values()
            .chain(self.kpi_components.values())
            .flat_map(|gauge| gauge.collect())
            .map(|family| KpiSamples {
                name: family.name().to_owned(),
                help: family.help().to_owned(),
                series: family
                    .get_metric()
                    .iter()
                    .map(|m| {
                        let labels = m
                            .get_label()
                            .iter()
                            .map(|l| (l.name().to_owned(), l.value().to_owned()))
                            .collect();
                        (labels, m.get_gauge().get_value())
                    })
                    .collect(),
            })
            .collect()
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpi_core::kpi;

    fn metrics() -> Metrics {
        Metrics::new(&["segment".to_owned()], ["s", "t", "b"], "USD").unwrap()
    }

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.encode().unwrap()).unwrap()
    }

    fn nps(value: Option<f64>, responses: f64) -> KpiRecord {
        KpiRecord {
            def: &kpi::NPS,
            window: "1h".into(),
            dimension: Some(("segment".into(), "smb".into())),
            value,
            samples: responses as u64,
            components: vec![Some(responses), Some(0.0), Some(0.0), Some(responses)],
            window_start_ms: 0,
            window_end_ms: 1,
        }
    }

    #[test]
    fn an_undefined_value_is_absent_and_its_components_stay_at_zero() {
        let m = metrics();
        m.update_kpis(&[nps(Some(100.0), 2.0)]);
        let t = text(&m);
        assert!(
            t.contains("kpi_nps{segment=\"smb\",window=\"1h\"} 100"),
            "{t}"
        );
        m.update_kpis(&[nps(None, 0.0)]);
        let t = text(&m);
        assert!(!t.contains("kpi_nps{"), "{t}");
        assert!(
            t.contains("kpi_nps_responses{segment=\"smb\",window=\"1h\"} 0"),
            "{t}"
        );
        assert!(!t.contains("NaN"));
    }

    #[test]
    fn a_series_left_out_of_an_update_is_removed() {
        let m = metrics();
        m.update_kpis(&[nps(Some(100.0), 2.0)]);
        assert!(text(&m).contains("segment=\"smb\""));
        m.update_kpis(&[]);
        let t = text(&m);
        assert!(!t.contains("segment=\"smb\""), "{t}");
    }

    #[test]
    fn every_rejection_reason_is_exported_from_the_start() {
        let t = text(&metrics());
        for reason in Reason::ALL {
            let line = format!(
                "kpi_events_rejected_total{{reason=\"{}\",topic=\"s\"}} 0",
                reason.code()
            );
            assert!(t.contains(&line), "{line}");
        }
        assert!(t.contains("kpi_survey_responses_total{score=\"10\",survey=\"nps\"} 0"));
        assert!(t.contains("kpi_build_info{version="));
        assert!(t.contains("kpi_ticket_resolution_seconds_bucket{le=\"300\"} 0"));
    }

    /// What `promtool check metrics` reports about names and labels: suffixes and labels
    /// that Prometheus reserves for histograms, summaries and counters.
    #[test]
    fn no_gauge_takes_a_name_or_label_reserved_for_other_types() {
        use prometheus::proto::MetricType;
        let m = metrics();
        let every_kpi: Vec<KpiRecord> = KPIS
            .iter()
            .map(|def| KpiRecord {
                def,
                window: "1h".into(),
                dimension: None,
                value: Some(1.0),
                samples: 1,
                components: vec![Some(1.0); def.components.len()],
                window_start_ms: 0,
                window_end_ms: 1,
            })
            .collect();
        m.update_kpis(&every_kpi);
        m.consumer_lag.with_label_values(&["s", "0"]).set(1);
        m.newest_event_time.with_label_values(&["s"]).set(1.0);
        let families = m.registry.gather();
        assert!(families.len() > 60, "{}", families.len());
        for family in families {
            let (name, kind) = (family.name(), family.get_field_type());
            if !matches!(kind, MetricType::HISTOGRAM | MetricType::SUMMARY) {
                for suffix in ["_bucket", "_sum", "_count"] {
                    assert!(!name.ends_with(suffix), "{name}");
                }
                for metric in family.get_metric() {
                    for label in metric.get_label() {
                        assert!(!["le", "quantile"].contains(&label.name()), "{name}");
                    }
                }
            }
            assert_eq!(
                name.ends_with("_total"),
                kind == MetricType::COUNTER,
                "{name}"
            );
        }
    }

    #[test]
    fn money_carries_the_currency_and_movements_their_kind() {
        let m = metrics();
        let record = KpiRecord {
            def: &kpi::MRR_CHURN,
            window: "1h".into(),
            dimension: None,
            value: Some(12.5),
            samples: 1,
            components: vec![],
            window_start_ms: 0,
            window_end_ms: 1,
        };
        m.update_kpis(&[record]);
        let t = text(&m);
        assert!(
            t.contains(
                "kpi_mrr_movement{currency=\"USD\",kind=\"churn\",segment=\"\",window=\"1h\"} 12.5"
            ),
            "{t}"
        );
    }
}
