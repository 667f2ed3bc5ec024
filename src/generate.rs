//! `kpi-stream generate`: realistic synthetic events of all three families.
//!
//! [`EventSource`] is pure and seeded: the same seed and clock give the same events. Half
//! the events are survey answers, 40% ticket lifecycle events (openings with a priority,
//! replies, reopenings and resolutions, each ticket assigned to one of 25 agents) and 10%
//! billing events (a quarter of the cancellations for a failed payment, `reason`
//! `delinquent`); a
//! configured share is deliberately malformed, one of several ways, to exercise the
//! dead-letter path. Between them come trials, never malformed: a third of new subscriptions
//! start after a `subscription.trial_started` of the same subscription, and as many trials
//! again never convert, so that about a quarter of the trials that end convert. The producer adapter can first write a history, its events spread over
//! a span before now and their messages stamped with the events' times, then paces the
//! following events at a rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::clock::Clock;
use crate::config::Config;
use crate::kafka::generator_producer_config;
use kpi_core::event::{CancelReason, Family};
use kpi_core::kpi::rfc3339;

/// One message to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub family: Family,
    pub key: String,
    pub payload: Vec<u8>,
}

struct Plan {
    name: &'static str,
    price: i64,
    interval: &'static str,
}

const PLANS: [Plan; 4] = [
    Plan {
        name: "starter",
        price: 2_900,
        interval: "month",
    },
    Plan {
        name: "pro",
        price: 9_900,
        interval: "month",
    },
    Plan {
        name: "business",
        price: 99_000,
        interval: "year",
    },
    Plan {
        name: "enterprise",
        price: 49_900,
        interval: "month",
    },
];

const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];
const REGIONS: [&str; 3] = ["emea", "amer", "apac"];
const CHANNELS: [&str; 3] = ["email", "chat", "phone"];

#[derive(Debug, Clone)]
struct Subscription {
    id: u64,
    plan: usize,
    quantity: u32,
    active: bool,
}

/// Ticket priorities and their shares among new tickets.
const PRIORITIES: [(&str, f64); 4] = [
    ("low", 0.2),
    ("normal", 0.5),
    ("high", 0.2),
    ("urgent", 0.1),
];

/// Support agents: `agent-1` to `agent-25`.
const AGENTS: u32 = 25;

#[derive(Debug, Clone)]
struct OpenTicket {
    id: u64,
    customer: u32,
    opened_ms: i64,
    reopens: u32,
    priority: &'static str,
    /// The agent the ticket is assigned to: who replies and resolves it.
    agent: u32,
}

/// How far ahead, in events, the stream is drawn to find the subscriptions that will start:
/// each one's trial comes this many events before its start.
const LOOKAHEAD: usize = 2_000;

/// How long a generated trial lasts.
const TRIAL_MS: i64 = 14 * 86_400_000;

/// A subscription that started: who, which, on which plan.
#[derive(Debug, Clone, Copy)]
struct Started {
    customer: u32,
    subscription: u64,
    plan: usize,
}

/// A trial to produce: of a subscription that will start (its id), or of one that never
/// does (`None`).
#[derive(Debug, Clone, Copy)]
struct Trial {
    customer: u32,
    subscription: Option<u64>,
    plan: usize,
}

/// A seeded stream of synthetic events.
pub struct EventSource {
    /// Part of every event_id, so runs with different seeds never share ids.
    seed: u64,
    rng: StdRng,
    customers: u32,
    segments: Vec<String>,
    malformed_ratio: f64,
    next_id: u64,
    open_tickets: Vec<OpenTicket>,
    subscriptions: Vec<Option<Subscription>>,
    /// The subscription the latest billing event started, if it started one.
    started: Option<Started>,
    /// The same stream [`LOOKAHEAD`] events ahead, which tells which subscriptions will
    /// start; absent in that copy itself.
    ahead: Option<Box<EventSource>>,
    /// Trials due before the next event of the stream.
    trials: VecDeque<Trial>,
    /// Trials produced: their `event_id`s and the ids of the subscriptions of those that
    /// never convert, apart from the stream's own ids so that its events stay what they were.
    trials_made: u64,
}

impl EventSource {
    pub fn new(config: &Config) -> Self {
        let mut ahead = EventSource::without_trials(config);
        for _ in 0..LOOKAHEAD {
            ahead.draw(0);
        }
        EventSource {
            ahead: Some(Box::new(ahead)),
            ..EventSource::without_trials(config)
        }
    }

    /// The stream of surveys, tickets and billing events alone.
    fn without_trials(config: &Config) -> Self {
        let g = &config.generate;
        EventSource {
            seed: g.seed,
            rng: StdRng::seed_from_u64(g.seed),
            customers: g.customers.max(1),
            segments: if g.segments.is_empty() {
                vec!["smb".into()]
            } else {
                g.segments.clone()
            },
            malformed_ratio: g.malformed_ratio,
            next_id: 0,
            open_tickets: Vec::new(),
            subscriptions: vec![None; g.customers.max(1) as usize],
            started: None,
            ahead: None,
            trials: VecDeque::new(),
            trials_made: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The next event, with `occurred_at` at or shortly before `now_ms`: a trial that is
    /// due, or the stream's next event. Trials draw nothing from the random stream, so the
    /// stream's events are the same with them as without.
    pub fn next_event(&mut self, now_ms: i64) -> Generated {
        if let Some(trial) = self.trials.pop_front() {
            return self.trial(trial, now_ms);
        }
        if let Some(ahead) = &mut self.ahead {
            ahead.draw(0);
            if let Some(started) = ahead.started {
                let trials = &mut self.trials;
                if trial_converts(started.subscription) {
                    trials.push_back(Trial {
                        customer: started.customer,
                        subscription: Some(started.subscription),
                        plan: started.plan,
                    });
                }
                // A lead whose trial never converts, for every subscription that starts.
                let lead = lead_of(started.subscription, self.customers);
                trials.push_back(Trial {
                    customer: lead,
                    subscription: None,
                    plan: started.plan,
                });
            }
        }
        self.draw(now_ms)
    }

    /// The stream's next event.
    fn draw(&mut self, now_ms: i64) -> Generated {
        self.started = None;
        let roll: f64 = self.rng.random();
        let mut generated = if roll < 0.5 {
            self.survey(now_ms)
        } else if roll < 0.9 {
            self.ticket(now_ms)
        } else {
            self.billing(now_ms)
        };
        if self.rng.random_bool(self.malformed_ratio) {
            generated.payload = self.malform(&generated.payload);
        }
        generated
    }

    fn base(&mut self, kind: &str, customer: u32, at_ms: i64) -> serde_json::Map<String, Value> {
        let id = self.id();
        self.fields(format!("gen-{}-{id}", self.seed), kind, customer, at_ms)
    }

    fn fields(
        &self,
        event_id: String,
        kind: &str,
        customer: u32,
        at_ms: i64,
    ) -> serde_json::Map<String, Value> {
        let segment = &self.segments[customer as usize % self.segments.len()];
        let mut m = serde_json::Map::new();
        m.insert("event_id".into(), json!(event_id));
        m.insert("type".into(), json!(kind));
        m.insert("occurred_at".into(), json!(rfc3339(at_ms)));
        m.insert("customer_id".into(), json!(format!("cust-{customer}")));
        m.insert("segment".into(), json!(segment));
        m.insert(
            "region".into(),
            json!(REGIONS[customer as usize % REGIONS.len()]),
        );
        m
    }

    fn customer(&mut self) -> u32 {
        self.rng.random_range(0..self.customers)
    }

    fn survey(&mut self, now_ms: i64) -> Generated {
        let customer = self.customer();
        let at = now_ms - self.rng.random_range(0..5_000);
        let mut m = self.base("survey.responded", customer, at);
        let pick: f64 = self.rng.random();
        let (survey, score) = if pick < 0.6 {
            // Roughly 45% promoters, 30% passives, 25% detractors.
            let r: f64 = self.rng.random();
            let score = if r < 0.45 {
                self.rng.random_range(9..=10)
            } else if r < 0.75 {
                self.rng.random_range(7..=8)
            } else {
                self.rng.random_range(0..=6)
            };
            ("nps", score)
        } else if pick < 0.85 {
            let score = [1, 2, 3, 4, 4, 4, 5, 5, 5, 5][self.rng.random_range(0..10)];
            ("csat", score)
        } else {
            let score = [2, 3, 4, 5, 5, 6, 6, 6, 7, 7][self.rng.random_range(0..10)];
            ("ces", score)
        };
        m.insert("survey".into(), json!(survey));
        m.insert("score".into(), json!(score));
        // Most CSAT answers rate a ticket, and so its agent.
        if survey == "csat" && !self.open_tickets.is_empty() && self.rng.random_bool(0.7) {
            let index = self.rng.random_range(0..self.open_tickets.len());
            let ticket = &self.open_tickets[index];
            m.insert("ticket_id".into(), json!(format!("tkt-{}", ticket.id)));
            m.insert("agent_id".into(), json!(format!("agent-{}", ticket.agent)));
        }
        m.insert(
            "channel".into(),
            json!(CHANNELS[self.rng.random_range(0..CHANNELS.len())]),
        );
        if self.rng.random_bool(0.3) {
            m.insert(
                "comment".into(),
                json!("Thanks for the quick help with the export settings."),
            );
        }
        Generated {
            family: Family::Surveys,
            key: format!("cust-{customer}"),
            payload: Value::Object(m).to_string().into_bytes(),
        }
    }

    fn ticket(&mut self, now_ms: i64) -> Generated {
        let r: f64 = self.rng.random();
        // Of the ticket events: about a third openings, a quarter replies (most by agents,
        // most public), a third resolutions, a tenth reopenings.
        let (kind, ticket) = if self.open_tickets.len() < 20 || r < 0.35 {
            let ticket = OpenTicket {
                id: self.id(),
                customer: self.customer(),
                opened_ms: now_ms,
                reopens: 0,
                priority: self.priority(),
                agent: self.rng.random_range(1..=AGENTS),
            };
            if self.open_tickets.len() < 10_000 {
                self.open_tickets.push(ticket.clone());
            }
            ("ticket.opened", ticket)
        } else if r < 0.6 {
            let index = self.rng.random_range(0..self.open_tickets.len());
            // Now and then a reply escalates the ticket.
            if self.rng.random_bool(0.05) {
                self.open_tickets[index].priority = "urgent";
            }
            ("ticket.replied", self.open_tickets[index].clone())
        } else if r < 0.9 {
            let index = self.rng.random_range(0..self.open_tickets.len());
            ("ticket.resolved", self.open_tickets.swap_remove(index))
        } else {
            let index = self.rng.random_range(0..self.open_tickets.len());
            self.open_tickets[index].reopens += 1;
            ("ticket.reopened", self.open_tickets[index].clone())
        };
        let mut m = self.base(kind, ticket.customer, now_ms);
        m.insert("ticket_id".into(), json!(format!("tkt-{}", ticket.id)));
        match kind {
            "ticket.opened" | "ticket.reopened" => {
                m.insert("priority".into(), json!(ticket.priority));
            }
            "ticket.replied" => {
                if self.rng.random_bool(0.85) {
                    m.insert("author".into(), json!("agent"));
                    m.insert("agent_id".into(), json!(format!("agent-{}", ticket.agent)));
                    // Internal notes are replies that the customer does not see.
                    m.insert("public".into(), json!(self.rng.random_bool(0.9)));
                } else {
                    m.insert("author".into(), json!("customer"));
                }
                m.insert("priority".into(), json!(ticket.priority));
            }
            _ => {
                // Resolution times from minutes to days: the ticket's real age plus a long
                // tail.
                let extra = self.rng.random_range(5 * 60_000..3 * 86_400_000i64);
                let opened =
                    ticket.opened_ms.min(now_ms) - extra / (1 + self.rng.random_range(0..20));
                m.insert("opened_at".into(), json!(rfc3339(opened)));
                let replies = [0, 1, 1, 1, 2, 2, 3, 4][self.rng.random_range(0..8)];
                m.insert("agent_replies".into(), json!(replies));
                m.insert("reopens".into(), json!(ticket.reopens));
                m.insert("agent_id".into(), json!(format!("agent-{}", ticket.agent)));
            }
        }
        Generated {
            family: Family::Tickets,
            key: format!("tkt-{}", ticket.id),
            payload: Value::Object(m).to_string().into_bytes(),
        }
    }

    fn priority(&mut self) -> &'static str {
        let mut r: f64 = self.rng.random();
        for (name, share) in PRIORITIES {
            if r < share {
                return name;
            }
            r -= share;
        }
        "normal"
    }

    fn billing(&mut self, now_ms: i64) -> Generated {
        let customer = self.customer();
        let currency = CURRENCIES[customer as usize % CURRENCIES.len()];
        let state = self.subscriptions[customer as usize].clone();
        let (kind, sub) = match state {
            Some(sub) if sub.active => {
                let r: f64 = self.rng.random();
                let mut next = sub.clone();
                let kind = if r < 0.3 {
                    next.plan = (sub.plan + 1) % PLANS.len();
                    "subscription.changed"
                } else if r < 0.45 {
                    next.quantity = self.rng.random_range(1..=20);
                    "subscription.changed"
                } else if r < 0.65 {
                    next.active = false;
                    "subscription.canceled"
                } else {
                    "subscription.renewed"
                };
                (kind, next)
            }
            Some(sub) => {
                // A churned customer coming back.
                let next = Subscription {
                    id: self.id(),
                    active: true,
                    ..sub
                };
                ("subscription.started", next)
            }
            None => {
                let next = Subscription {
                    id: self.id(),
                    plan: self.rng.random_range(0..PLANS.len()),
                    quantity: self.rng.random_range(1..=10),
                    active: true,
                };
                ("subscription.started", next)
            }
        };
        self.subscriptions[customer as usize] = Some(sub.clone());
        if kind == "subscription.started" {
            self.started = Some(Started {
                customer,
                subscription: sub.id,
                plan: sub.plan,
            });
        }
        let mut m = self.base(kind, customer, now_ms);
        m.insert("subscription_id".into(), json!(format!("sub-{}", sub.id)));
        if kind == "subscription.canceled" {
            m.insert("reason".into(), json!(cancel_reason(sub.id).name()));
        }
        if matches!(kind, "subscription.started" | "subscription.changed") {
            let plan = &PLANS[sub.plan];
            m.insert("plan".into(), json!(plan.name));
            m.insert("price".into(), json!(plan.price));
            m.insert("quantity".into(), json!(sub.quantity));
            m.insert("currency".into(), json!(currency));
            m.insert("interval".into(), json!(plan.interval));
            m.insert("interval_count".into(), json!(1));
        }
        Generated {
            family: Family::Billing,
            key: format!("cust-{customer}"),
            payload: Value::Object(m).to_string().into_bytes(),
        }
    }

    /// The `subscription.trial_started` of `trial` at `now_ms`, ending [`TRIAL_MS`] later.
    fn trial(&mut self, trial: Trial, now_ms: i64) -> Generated {
        self.trials_made += 1;
        let made = self.trials_made;
        let event_id = format!("gen-{}-trial-{made}", self.seed);
        let mut m = self.fields(
            event_id,
            "subscription.trial_started",
            trial.customer,
            now_ms,
        );
        let subscription = match trial.subscription {
            Some(id) => format!("sub-{id}"),
            None => format!("sub-trial-{made}"),
        };
        m.insert("subscription_id".into(), json!(subscription));
        m.insert("plan".into(), json!(PLANS[trial.plan].name));
        m.insert("trial_ends_at".into(), json!(rfc3339(now_ms + TRIAL_MS)));
        Generated {
            family: Family::Billing,
            key: format!("cust-{}", trial.customer),
            payload: Value::Object(m).to_string().into_bytes(),
        }
    }

    /// One of several realistic producer bugs.
    fn malform(&mut self, payload: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(payload);
        match self.rng.random_range(0..6) {
            0 => text[..text.len() / 2].as_bytes().to_vec(),
            1 => text
                .replacen("\"customer_id\"", "\"customer\"", 1)
                .into_bytes(),
            2 => text
                .replacen("\"type\":\"", "\"type\":\"x.", 1)
                .into_bytes(),
            3 => text
                .replacen("\"occurred_at\":\"", "\"occurred_at\":\"yesterday ", 1)
                .into_bytes(),
            4 => b"[\"not an object\"]".to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Why subscription `id` is canceled: a quarter of cancellations are payments that failed
/// after dunning, a usual share of involuntary churn. Decided from the id rather than drawn,
/// so that the random stream, and every other event of a seed, stays what it was.
fn cancel_reason(id: u64) -> CancelReason {
    // The top byte of a multiplicative hash spreads consecutive ids evenly.
    if id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56 < 64 {
        CancelReason::Delinquent
    } else {
        CancelReason::Voluntary
    }
}

/// Whether subscription `id` starts after a trial: a third of new subscriptions do. Decided
/// from the id, as [`cancel_reason`] is.
fn trial_converts(id: u64) -> bool {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(8) >> 56 < 85
}

/// The customer whose trial, begun beside the start of subscription `id`, never converts.
fn lead_of(id: u64, customers: u32) -> u32 {
    (id.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 32) as u32 % customers
}

/// When the events of a history happen: evenly over the span before the start, oldest first.
struct History {
    start_ms: i64,
    step_ms: f64,
}

impl History {
    /// `events` events over `span` ending at `now_ms`; none without a span or events.
    fn new(span: Duration, events: u64, now_ms: i64) -> Option<History> {
        let span_ms = span.as_millis() as i64;
        (span_ms > 0 && events > 0).then(|| History {
            start_ms: now_ms - span_ms,
            step_ms: span_ms as f64 / events as f64,
        })
    }

    /// When the `n`th event (from 0) happens; the last one at the start.
    fn at(&self, n: u64) -> i64 {
        self.start_ms + (self.step_ms * (n + 1) as f64) as i64
    }
}

/// A run of events the generator produces.
struct Phase {
    /// Events to produce; 0: until stopped.
    events: u64,
    /// Events per second; 0: as fast as possible.
    rate: u64,
    /// When the events happen; without one, each happens as it is produced.
    history: Option<History>,
}

/// Produces events to the configured topics: first the `generate.history` events, as fast as
/// possible and spread over `generate.span`, then `count` more at `rate` (0: until
/// `shutdown`), from the same customers, subscriptions and open tickets.
pub async fn run(config: Config, clock: Clock, shutdown: CancellationToken) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = generator_producer_config(&config)
        .create()
        .context("creating the Kafka producer")?;
    let mut source = EventSource::new(&config);
    let g = &config.generate;
    let started = Instant::now();
    let mut sent = 0;
    if g.history > 0 {
        let past = Phase {
            events: g.history,
            rate: 0,
            history: History::new(g.span, g.history, clock()),
        };
        info!(events = g.history, span = ?g.span, "generating a history");
        sent += produce(&producer, &mut source, &config, &clock, past, &shutdown).await?;
        producer
            .flush(Duration::from_secs(30))
            .context("flushing the history")?;
        info!(
            sent,
            seconds = started.elapsed().as_secs_f64(),
            "history produced"
        );
    }
    let rest = Phase {
        events: g.count,
        rate: u64::from(g.rate),
        // Without a `history`, `span` spreads the counted events themselves.
        history: if g.history == 0 {
            History::new(g.span, g.count, clock())
        } else {
            None
        },
    };
    info!(rate = rest.rate, count = rest.events, "generating events");
    if !shutdown.is_cancelled() {
        sent += produce(&producer, &mut source, &config, &clock, rest, &shutdown).await?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing generated events")?;
    let secs = started.elapsed().as_secs_f64();
    info!(
        sent,
        seconds = secs,
        per_second = sent as f64 / secs.max(1e-9),
        "generation finished"
    );
    Ok(())
}

/// Produces the events of `phase` until it ends or `shutdown`; returns how many it sent. Each
/// message is stamped with the time its event happens, as a producer writing events when they
/// happen would have stamped it: a history's messages carry their past times, so the service
/// judges them as it would have judged them then, not as written late for their period.
async fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    source: &mut EventSource,
    config: &Config,
    clock: &Clock,
    phase: Phase,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut last_report = Instant::now();
    while (phase.events == 0 || sent < phase.events) && !shutdown.is_cancelled() {
        if phase.rate > 0 {
            let due = started.elapsed().as_secs_f64() * phase.rate as f64;
            if (sent as f64) >= due {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        }
        let at_ms = phase
            .history
            .as_ref()
            .map_or_else(|| clock(), |h| h.at(sent));
        let generated = source.next_event(at_ms);
        let topic = config.topic(generated.family);
        let mut record = BaseRecord::to(topic)
            .key(&generated.key)
            .payload(&generated.payload)
            .timestamp(at_ms);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e).context("producing a generated event"),
            }
        }
        sent += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            info!(sent, "generated");
            last_report = Instant::now();
        }
        if sent % 1024 == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpi_core::aggregate::Aggregates;
    use kpi_core::event::{Limits, parse};
    use kpi_core::partition::PartitionId;

    const NOW: i64 = 1_767_225_600_000;
    const LIMITS: Limits = Limits {
        max_event_bytes: 1 << 20,
        max_future_skew_ms: 300_000,
    };

    fn config(malformed_ratio: f64) -> Config {
        let mut c = Config::default();
        c.generate.malformed_ratio = malformed_ratio;
        c
    }

    #[test]
    fn a_history_spreads_the_events_evenly_over_the_span_ending_now() {
        let span = Duration::from_secs(40);
        let history = History::new(span, 4, NOW).unwrap();
        let times: Vec<i64> = (0..4).map(|n| history.at(n)).collect();
        assert_eq!(times, [NOW - 30_000, NOW - 20_000, NOW - 10_000, NOW]);
        assert!(History::new(span, 0, NOW).is_none());
        assert!(History::new(Duration::ZERO, 4, NOW).is_none());
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let mut a = EventSource::new(&config(0.1));
        let mut b = EventSource::new(&config(0.1));
        for _ in 0..500 {
            assert_eq!(a.next_event(NOW), b.next_event(NOW));
        }
    }

    #[test]
    fn well_formed_events_are_accepted_in_the_documented_mix() {
        let config = config(0.0);
        let mut source = EventSource::new(&config);
        let mut aggregates = Aggregates::new(config.state_settings().unwrap());
        let mut per_family = [0u32; 3];
        let mut trials = 0u32;
        for _ in 0..20_000 {
            let g = source.next_event(NOW);
            let text = String::from_utf8_lossy(&g.payload).into_owned();
            let event =
                parse(&g.payload, g.family, NOW, &LIMITS).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(event.payload.family(), g.family);
            // Every billing event is consistent with the ones before it.
            let partition = PartitionId::new(g.family, 0);
            aggregates
                .record(partition, &event, NOW)
                .unwrap_or_else(|e| panic!("{e}: {text}"));
            if matches!(event.payload, kpi_core::event::Payload::TrialStarted { .. }) {
                trials += 1;
            } else {
                per_family[g.family.index()] += 1;
            }
        }
        // Every lifecycle step happens: new, upgrades and downgrades, churn, reactivation,
        // renewals, first-contact and longer resolutions.
        let records = aggregates.snapshot(NOW);
        for key in [
            "mrr_new/1h",
            "mrr_expansion/1h",
            "mrr_contraction/1h",
            "mrr_churn/1h",
            "mrr_reactivation/1h",
            "renewal/1h",
            "fcr/1h",
            "resolution_time/1h",
            "trials_started/1h",
            "trials_converted/1h",
        ] {
            let record = records.iter().find(|r| r.key() == key).unwrap();
            assert!(record.samples > 0, "{key}");
        }
        // Beside the trials, 50% / 40% / 10%, within sampling noise.
        let drawn = 20_000 - trials;
        let share = |n: u32| f64::from(n) / f64::from(drawn);
        assert!(
            (0.47..0.53).contains(&share(per_family[0])),
            "{per_family:?}"
        );
        assert!(
            (0.37..0.43).contains(&share(per_family[1])),
            "{per_family:?}"
        );
        assert!(
            (0.08..0.12).contains(&share(per_family[2])),
            "{per_family:?}"
        );
    }

    /// The output objects of every KPI at `NOW` after `messages`, by key.
    fn outputs_after(
        config: &Config,
        messages: &[(Family, Vec<u8>)],
    ) -> std::collections::BTreeMap<String, String> {
        let mut aggregates = Aggregates::new(config.state_settings().unwrap());
        for (family, payload) in messages {
            let event = parse(payload, *family, NOW, &LIMITS).unwrap();
            aggregates
                .record(PartitionId::new(*family, 0), &event, NOW)
                .unwrap();
        }
        aggregates
            .snapshot(NOW)
            .iter()
            .map(|r| (r.key(), r.to_json(NOW, "USD").to_string()))
            .collect()
    }

    /// 20,000 events of a source, one every `step_ms` up to `NOW`.
    fn stream(config: &Config, step_ms: i64) -> Vec<Generated> {
        let mut source = EventSource::new(config);
        (0..20_000)
            .map(|n| source.next_event(NOW - (20_000 - n) * step_ms))
            .collect()
    }

    fn messages<'g>(generated: impl Iterator<Item = &'g Generated>) -> Vec<(Family, Vec<u8>)> {
        generated.map(|g| (g.family, g.payload.clone())).collect()
    }

    /// The KPIs whose output differs between `full` and `bare`, which have the same records,
    /// and the outputs of `full`.
    fn differing_kpis(
        config: &Config,
        full: &[(Family, Vec<u8>)],
        bare: &[(Family, Vec<u8>)],
    ) -> (Vec<String>, std::collections::BTreeMap<String, String>) {
        let with = outputs_after(config, full);
        let without = outputs_after(config, bare);
        assert_eq!(
            with.keys().collect::<Vec<_>>(),
            without.keys().collect::<Vec<_>>()
        );
        assert!(with.len() > 100, "{} records", with.len());
        let differing: std::collections::BTreeSet<String> = with
            .iter()
            .filter(|(key, value)| without.get(*key) != Some(*value))
            .filter_map(|(key, _)| key.split('/').next().map(str::to_owned))
            .collect();
        (differing.into_iter().collect(), with)
    }

    #[test]
    fn replies_priorities_agents_and_cancellation_reasons_change_no_other_kpi() {
        let config = config(0.0);
        // One event a second, up to now.
        let generated = stream(&config, 1000);
        let full = messages(generated.iter());
        // The same opened, reopened and resolved tickets, answers and billing events,
        // without replies, priorities, agents, the tickets answers are about and the
        // reasons of cancellations (voluntary when not given).
        let bare: Vec<(Family, Vec<u8>)> = generated
            .iter()
            .filter_map(|g| {
                let mut value: Value = serde_json::from_slice(&g.payload).unwrap();
                let object = value.as_object_mut().unwrap();
                if object["type"] == "ticket.replied" {
                    return None;
                }
                for field in ["priority", "agent_id", "ticket_id", "reason"] {
                    if field != "ticket_id" || object["type"] == "survey.responded" {
                        object.remove(field);
                    }
                }
                Some((g.family, serde_json::to_vec(&value).unwrap()))
            })
            .collect();
        assert!(bare.len() < full.len() - 1000, "replies are generated");
        // Exactly the KPIs that read replies, priorities or reasons differ; everything else
        // is what it was.
        let (differing, _) = differing_kpis(&config, &full, &bare);
        assert_eq!(
            differing,
            [
                "backlog",
                "customer_churn_delinquent",
                "customer_churn_voluntary",
                "first_reply_sla_breach",
                "first_reply_time",
                "mrr_churn_delinquent",
                "mrr_churn_voluntary",
                "one_touch",
                "resolution_sla_breach",
                "sla_at_risk",
                "sla_breached_open",
            ]
        );
    }

    #[test]
    fn trials_change_only_the_trial_kpis_and_about_a_quarter_convert() {
        let config = config(0.0);
        // One event every three minutes: six weeks up to now, so that 14-day trials end
        // and expire inside the 30d window.
        let generated = stream(&config, 180_000);
        let is_trial = |g: &&Generated| {
            let value: Value = serde_json::from_slice(&g.payload).unwrap();
            value["type"] == "subscription.trial_started"
        };
        let full = messages(generated.iter());
        let bare = messages(generated.iter().filter(|g| !is_trial(g)));
        // The stream's own events are those of a source without trials.
        let mut plain = EventSource::without_trials(&config);
        let expected: Vec<Vec<u8>> = generated
            .iter()
            .filter(|g| !is_trial(g))
            .map(|g| {
                let value: Value = serde_json::from_slice(&g.payload).unwrap();
                let at =
                    kpi_core::event::parse_timestamp(value["occurred_at"].as_str().unwrap(), "")
                        .unwrap();
                // A survey answer is dated up to 5 s before its call; find the call's time.
                let call = (at + 179_999 - NOW).div_euclid(180_000) * 180_000 + NOW;
                plain.draw(call).payload
            })
            .collect();
        let bare_payloads: Vec<&Vec<u8>> = bare.iter().map(|(_, p)| p).collect();
        assert_eq!(bare_payloads, expected.iter().collect::<Vec<_>>());
        let (differing, with) = differing_kpis(&config, &full, &bare);
        assert_eq!(
            differing,
            [
                "trial_conversion",
                "trials_active",
                "trials_converted",
                "trials_expired",
                "trials_started",
            ]
        );
        let conversion: Value = serde_json::from_str(&with["trial_conversion/30d"]).unwrap();
        let ratio = conversion["value"].as_f64().unwrap();
        assert!((0.2..0.3).contains(&ratio), "{conversion}");
    }

    #[test]
    fn cancellations_carry_a_reason_a_quarter_delinquent() {
        let mut source = EventSource::new(&config(0.0));
        let mut reasons = [0u32; 2];
        for _ in 0..200_000 {
            let g = source.next_event(NOW);
            let event = parse(&g.payload, g.family, NOW, &LIMITS).unwrap();
            if let kpi_core::event::Payload::SubscriptionCanceled { reason, .. } = event.payload {
                reasons[usize::from(reason == CancelReason::Delinquent)] += 1;
                let text = String::from_utf8(g.payload).unwrap();
                assert!(text.contains(r#""reason":"#), "{text}");
            }
        }
        let share = f64::from(reasons[1]) / f64::from(reasons[0] + reasons[1]);
        assert!((0.2..0.3).contains(&share), "{reasons:?}");
    }

    #[test]
    fn malformed_events_are_rejected_and_trials_never_malformed() {
        let mut source = EventSource::new(&config(1.0));
        let mut trials = 0;
        for _ in 0..1000 {
            let g = source.next_event(NOW);
            if let Ok(event) = parse(&g.payload, g.family, NOW, &LIMITS) {
                assert!(
                    matches!(event.payload, kpi_core::event::Payload::TrialStarted { .. }),
                    "{event:?}"
                );
                trials += 1;
            }
        }
        // The stream's starts, malformed themselves, still bring their trials.
        assert!(trials > 0);
    }
}
