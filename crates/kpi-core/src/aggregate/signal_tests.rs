//! Tests of the customer health signals each partition keeps, against hand-computed parts
//! and a brute-force recomputation from the applied events.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::tests::{DAY, HOUR, MINUTE, T0, TicketRecord, first_replies, settings, terms};
use super::*;
use crate::billing::classify;
use crate::event::{Author, CancelReason, Interval, Survey};
use crate::health::customer::NpsAnswer;
use crate::health::signal_window::SIGNAL_BUCKETS;
use crate::health::{Signal, SignalValues};

fn event(id: &str, customer: &str, at: i64, payload: Payload<'static>) -> Event<'static> {
    Event {
        event_id: Cow::Owned(id.to_owned()),
        occurred_at_ms: at,
        customer_id: Cow::Owned(customer.to_owned()),
        dimensions: [None, None, None, None],
        payload,
        reference_ms: at,
    }
}

/// The changes `partition` gives, as customer and signals.
fn taken_changes(
    agg: &mut Aggregates,
    partition: PartitionId,
    now_ms: i64,
) -> Vec<(Arc<str>, Option<CustomerSignals>)> {
    agg.take_signal_changes(partition, now_ms, 0)
        .into_iter()
        .map(|change| (change.customer_id, change.part.map(|p| p.signals)))
        .collect()
}

fn with_signals(signals: SignalSettings) -> Aggregates {
    Aggregates::new(StateSettings {
        dedup_horizon_ms: 100 * DAY,
        signals,
        ..settings(10)
    })
}

fn value(values: &SignalValues, signal: Signal) -> Option<f64> {
    values[signal as usize]
}

fn ticket_id(ticket: &str) -> Cow<'static, str> {
    Cow::Owned(ticket.to_owned())
}

fn opened(ticket: &str) -> Payload<'static> {
    Payload::TicketOpened {
        ticket_id: ticket_id(ticket),
        priority: None,
    }
}

fn reopened(ticket: &str) -> Payload<'static> {
    Payload::TicketReopened {
        ticket_id: ticket_id(ticket),
        priority: None,
    }
}

fn replied(ticket: &str, author: Author, public: bool) -> Payload<'static> {
    Payload::TicketReplied {
        ticket_id: ticket_id(ticket),
        author,
        public,
        priority: None,
    }
}

fn resolved(ticket: &str, opened_at_ms: i64) -> Payload<'static> {
    Payload::TicketResolved {
        ticket_id: ticket_id(ticket),
        opened_at_ms,
        agent_replies: 1,
        reopens: 0,
        priority: None,
    }
}

fn started(subscription: &'static str, price: i64) -> Payload<'static> {
    Payload::SubscriptionStarted(terms(subscription, price, "USD", Interval::Month))
}

fn changed(subscription: &'static str, price: i64) -> Payload<'static> {
    Payload::SubscriptionChanged(terms(subscription, price, "USD", Interval::Month))
}

fn canceled(subscription: &'static str, reason: CancelReason) -> Payload<'static> {
    Payload::SubscriptionCanceled {
        subscription_id: Cow::Borrowed(subscription),
        reason,
    }
}

#[test]
fn survey_answers_make_the_latest_nps_and_the_csat_of_the_window() {
    let signals = SignalSettings::default();
    let mut agg = with_signals(signals);
    let p = PartitionId::new(Family::Surveys, 0);
    let answer = |id, at, survey, score| {
        let payload = Payload::SurveyResponded {
            survey,
            score,
            comment: None,
        };
        event(id, "c", at, payload)
    };
    agg.record(p, &answer("1", T0 - HOUR, Survey::Nps, 3), T0)
        .unwrap();
    // Older, read later: not the latest.
    agg.record(p, &answer("2", T0 - 2 * HOUR, Survey::Nps, 10), T0)
        .unwrap();
    agg.record(p, &answer("3", T0 - HOUR, Survey::Csat, 5), T0)
        .unwrap();
    agg.record(p, &answer("4", T0 - HOUR, Survey::Csat, 2), T0)
        .unwrap();
    agg.record(p, &answer("5", T0, Survey::Ces, 1), T0).unwrap();
    // A duplicate, and an answer too late for every window (which dedup would not catch),
    // change nothing.
    let again = answer("4", T0 - HOUR, Survey::Csat, 2);
    assert_eq!(agg.record(p, &again, T0), Ok(Outcome::Duplicate));
    let late = answer("6", T0 - 2 * DAY, Survey::Csat, 1);
    assert_eq!(agg.record(p, &late, T0), Ok(Outcome::Late));
    let part = agg.customer_signals(p, "c").unwrap();
    assert!(part.tickets.is_none() && part.billing.is_none());
    let surveys = part.surveys.as_ref().unwrap();
    let latest = NpsAnswer {
        at_ms: T0 - HOUR,
        score: 3,
    };
    assert_eq!(surveys.latest_nps, Some(latest));
    let values = part.values(T0, signals.bucket_ms());
    assert_eq!(value(&values, Signal::Nps), Some(3.0));
    assert_eq!(value(&values, Signal::Csat), Some(3.5));
    // The window passes the answers by.
    let after = part.values(
        T0 + signals.window_ms + signals.bucket_ms(),
        signals.bucket_ms(),
    );
    assert_eq!(value(&after, Signal::Csat), None);
    assert_eq!(value(&after, Signal::Nps), Some(3.0));
    // A CES answer alone makes a survey part without NPS or CSAT.
    agg.record(
        p,
        &event(
            "7",
            "d",
            T0,
            Payload::SurveyResponded {
                survey: Survey::Ces,
                score: 7,
                comment: None,
            },
        ),
        T0,
    )
    .unwrap();
    let values = agg
        .customer_signals(p, "d")
        .unwrap()
        .values(T0, signals.bucket_ms());
    assert!(values.iter().all(Option::is_none), "{values:?}");
}

#[test]
fn tickets_count_opened_open_and_breaches_for_their_customer() {
    let signals = SignalSettings::default();
    let mut agg = with_signals(signals);
    let p = PartitionId::new(Family::Tickets, 0);
    let record = |agg: &mut Aggregates, id: &str, at: i64, payload| {
        agg.record(p, &event(id, "c", at, payload), T0)
    };
    record(&mut agg, "1", T0 - 10 * HOUR, opened("a")).unwrap();
    record(&mut agg, "2", T0 - 10 * HOUR, opened("b")).unwrap();
    // Opened again while open: one more opening, the same open ticket.
    record(&mut agg, "3", T0 - 9 * HOUR, opened("a")).unwrap();
    // b's first public agent reply 9 hours after its opening: the normal target is 8.
    record(
        &mut agg,
        "4",
        T0 - 2 * HOUR,
        replied("b", Author::Customer, true),
    )
    .unwrap();
    record(&mut agg, "5", T0 - HOUR, replied("b", Author::Agent, true)).unwrap();
    // a resolved 100 hours after the opening its resolution names: the target is 72.
    record(&mut agg, "6", T0, resolved("a", T0 - 100 * HOUR)).unwrap();
    // A ticket never opened here is judged, and leaves no open ticket behind.
    record(&mut agg, "7", T0, resolved("z", T0 - HOUR)).unwrap();
    record(&mut agg, "8", T0, reopened("a")).unwrap();
    assert_eq!(
        record(&mut agg, "8", T0, reopened("a")),
        Ok(Outcome::Duplicate)
    );
    let part = agg.customer_signals(p, "c").unwrap();
    let tickets = part.tickets.as_ref().unwrap();
    let bucket = signals.bucket_ms();
    assert_eq!(tickets.opened.total(T0, bucket), 3);
    assert_eq!(tickets.open, 2);
    assert_eq!(tickets.sla_breaches.total(T0, bucket), 2);
    let values = part.values(T0, bucket);
    assert_eq!(value(&values, Signal::TicketsOpened), Some(3.0));
    assert_eq!(value(&values, Signal::TicketsOpen), Some(2.0));
    assert_eq!(value(&values, Signal::SlaBreaches), Some(2.0));
    // Resolving both leaves none open; the counts of the window stay.
    record(&mut agg, "9", T0, resolved("a", T0 - HOUR)).unwrap();
    record(&mut agg, "10", T0, resolved("b", T0 - HOUR)).unwrap();
    record(&mut agg, "11", T0, resolved("b", T0 - HOUR)).unwrap();
    let part = agg.customer_signals(p, "c").unwrap();
    let tickets = part.tickets.as_ref().unwrap();
    assert_eq!(tickets.open, 0);
    assert_eq!(tickets.opened.total(T0, bucket), 3);
}

#[test]
fn a_waiting_reply_breaches_at_its_own_time_when_its_ticket_opens() {
    let signals = SignalSettings {
        window_ms: 16 * HOUR,
        forget_after_ms: 400 * DAY,
        ..SignalSettings::default()
    };
    let bucket = signals.bucket_ms();
    let mut agg = with_signals(signals);
    let p = PartitionId::new(Family::Tickets, 0);
    let reply_at = T0 - 10 * MINUTE;
    let reply = event("1", "c", reply_at, replied("a", Author::Agent, true));
    agg.record(p, &reply, T0).unwrap();
    // Opened 9 hours before the reply, read after it: the normal target is 8 hours.
    let opened_at = reply_at - 9 * HOUR;
    agg.record(p, &event("2", "c", opened_at, opened("a")), T0)
        .unwrap();
    let tickets = agg.customer_signals(p, "c").unwrap().tickets.unwrap();
    assert_eq!(tickets.open, 1);
    assert_eq!(tickets.sla_breaches.total(T0, bucket), 1);
    // Once the opening's bucket has left the window, the breach still counts: it is in the
    // reply's.
    let later = opened_at + 20 * HOUR;
    assert_eq!(tickets.opened.total(later, bucket), 0);
    assert_eq!(tickets.sla_breaches.total(later, bucket), 1);
}

#[test]
fn a_ticket_dropped_for_its_age_leaves_its_customers_open_tickets() {
    let mut agg = with_signals(SignalSettings::default());
    let p = PartitionId::new(Family::Tickets, 0);
    let at = T0 - 100 * DAY;
    agg.record(p, &event("1", "x", at, opened("a")), at)
        .unwrap();
    assert_eq!(
        agg.customer_signals(p, "x").unwrap().tickets.unwrap().open,
        1
    );
    // Another customer's ticket moves the partition's time past a's maximum age.
    let later = at + 90 * DAY + 1;
    agg.record(p, &event("2", "y", later, opened("b")), later)
        .unwrap();
    assert_eq!(agg.take_abandoned_tickets(), 1);
    assert_eq!(
        agg.customer_signals(p, "x").unwrap().tickets.unwrap().open,
        0
    );
    assert_eq!(
        agg.customer_signals(p, "y").unwrap().tickets.unwrap().open,
        1
    );
    // x's part changed by the drop, with no event of its own.
    let changes = taken_changes(&mut agg, p, later);
    let x = changes.iter().find(|(id, _)| &**id == "x").unwrap();
    assert_eq!(x.1.as_ref().unwrap().tickets.as_ref().unwrap().open, 0);
}

#[test]
fn billing_signals_follow_the_customer_that_owns_the_subscription() {
    let signals = SignalSettings::default();
    let bucket = signals.bucket_ms();
    let mut agg = with_signals(signals);
    let p = PartitionId::new(Family::Billing, 0);
    let start = T0 - 10 * DAY;
    let record = |agg: &mut Aggregates, id: &str, customer: &str, at: i64, payload| {
        agg.record(p, &event(id, customer, at, payload), T0)
    };
    // $100, then $150 (+50), then $120 (-30), the last naming another customer: the
    // subscription stays its owner's.
    record(&mut agg, "1", "c", start, started("s1", 10_000)).unwrap();
    record(&mut agg, "2", "c", start + DAY, changed("s1", 15_000)).unwrap();
    record(
        &mut agg,
        "3",
        "other",
        start + 2 * DAY,
        changed("s1", 12_000),
    )
    .unwrap();
    // Rejected: changes nothing, makes no part.
    assert!(record(&mut agg, "4", "d", start, changed("s9", 1_000)).is_err());
    let part = agg.customer_signals(p, "c").unwrap();
    let billing = part.billing.as_ref().unwrap();
    assert_eq!(billing.mrr, 120_000_000);
    assert_eq!(billing.mrr_change.total(T0, bucket), 20_000_000);
    assert_eq!(billing.paying_since_ms, Some(start));
    let values = part.values(T0, bucket);
    // +20 on the 100 before the changes.
    assert_eq!(value(&values, Signal::MrrTrend), Some(20.0));
    assert_eq!(value(&values, Signal::PaymentFailures), Some(0.0));
    assert_eq!(value(&values, Signal::TenureDays), Some(10.0));
    assert_eq!(agg.customer_signals(p, "other"), None);
    assert_eq!(agg.customer_signals(p, "d"), None);
    // Payment failed after dunning: churn, not trend.
    let record = |agg: &mut Aggregates, id: &str, at: i64, payload| {
        agg.record(p, &event(id, "c", at, payload), T0)
    };
    record(
        &mut agg,
        "5",
        start + 3 * DAY,
        canceled("s1", CancelReason::Delinquent),
    )
    .unwrap();
    let billing = agg.customer_signals(p, "c").unwrap().billing.unwrap();
    assert_eq!(billing.mrr, 0);
    assert_eq!(billing.payment_failures.total(T0, bucket), 1);
    assert_eq!(billing.paying_since_ms, None);
    assert_eq!(billing.mrr_change.total(T0, bucket), 20_000_000);
    // Back, paying again from the reactivation; a voluntary cancellation is no failure.
    record(&mut agg, "6", start + 4 * DAY, started("s2", 5_000)).unwrap();
    record(&mut agg, "7", start + 5 * DAY, started("s3", 5_000)).unwrap();
    record(
        &mut agg,
        "8",
        start + 6 * DAY,
        canceled("s3", CancelReason::Voluntary),
    )
    .unwrap();
    let billing = agg.customer_signals(p, "c").unwrap().billing.unwrap();
    assert_eq!(billing.mrr, 50_000_000);
    assert_eq!(billing.paying_since_ms, Some(start + 4 * DAY));
    assert_eq!(billing.payment_failures.total(T0, bucket), 1);
    // +50 for s3, -50 for its cancellation.
    assert_eq!(billing.mrr_change.total(T0, bucket), 20_000_000);
}

#[test]
fn a_part_is_taken_once_after_it_changed() {
    let mut agg = with_signals(SignalSettings::default());
    let p = PartitionId::new(Family::Tickets, 0);
    agg.record(p, &event("1", "c", T0, opened("a")), T0)
        .unwrap();
    agg.record(p, &event("2", "c", T0, opened("b")), T0)
        .unwrap();
    let changes = taken_changes(&mut agg, p, T0);
    assert_eq!(changes.len(), 1);
    assert_eq!(&*changes[0].0, "c");
    assert_eq!(changes[0].1, agg.customer_signals(p, "c"));
    assert!(taken_changes(&mut agg, p, T0).is_empty());
    // A reply that decides nothing changes no signal.
    let reply = event("3", "c", T0, replied("a", Author::Customer, true));
    agg.record(p, &reply, T0).unwrap();
    assert!(taken_changes(&mut agg, p, T0).is_empty());
    assert!(taken_changes(&mut agg, PartitionId::new(Family::Tickets, 1), T0).is_empty());
}

#[test]
fn idle_customers_without_mrr_or_open_tickets_are_forgotten_exactly() {
    let forget = 64 * DAY;
    let signals = SignalSettings {
        window_ms: 16 * DAY,
        forget_after_ms: forget,
        ..SignalSettings::default()
    };
    let mut agg = with_signals(signals);
    let surveys = PartitionId::new(Family::Surveys, 0);
    let tickets = PartitionId::new(Family::Tickets, 0);
    let billing = PartitionId::new(Family::Billing, 0);
    let nps = |score| Payload::SurveyResponded {
        survey: Survey::Nps,
        score,
        comment: None,
    };
    let events = [
        (surveys, event("1", "idle", T0, nps(9))),
        (surveys, event("2", "edge", T0 + 1, nps(9))),
        (tickets, event("3", "resolved", T0, opened("a"))),
        (tickets, event("4", "resolved", T0, resolved("a", T0))),
        (tickets, event("5", "open", T0, opened("b"))),
        (billing, event("6", "paying", T0, started("s1", 1_000))),
        (billing, event("7", "churned", T0, started("s2", 1_000))),
        (
            billing,
            event("8", "churned", T0, canceled("s2", CancelReason::Voluntary)),
        ),
    ];
    for (p, e) in &events {
        agg.record(*p, e, e.occurred_at_ms).unwrap();
    }
    for p in [surveys, tickets, billing] {
        let changes = taken_changes(&mut agg, p, T0);
        assert!(
            changes.iter().all(|(_, part)| part.is_some()),
            "{changes:?}"
        );
    }
    let forgotten = |agg: &mut Aggregates, p, now| {
        let mut ids: Vec<String> = taken_changes(agg, p, now)
            .into_iter()
            .map(|(id, part)| {
                assert_eq!(part, None, "{id}");
                id.to_string()
            })
            .collect();
        ids.sort();
        ids
    };
    // Idle for one millisecond less than forget_after: kept.
    let now = T0 + forget;
    assert_eq!(forgotten(&mut agg, surveys, now), ["idle"]);
    assert_eq!(forgotten(&mut agg, tickets, now), ["resolved"]);
    assert_eq!(forgotten(&mut agg, billing, now), ["churned"]);
    for (p, id) in [
        (surveys, "idle"),
        (tickets, "resolved"),
        (billing, "churned"),
    ] {
        assert_eq!(agg.customer_signals(p, id), None, "{id}");
    }
    for (p, id) in [(surveys, "edge"), (tickets, "open"), (billing, "paying")] {
        assert!(agg.customer_signals(p, id).is_some(), "{id}");
    }
    // The next sweep is a 64th of forget_after later.
    assert!(forgotten(&mut agg, surveys, now + DAY - 1).is_empty());
    assert_eq!(forgotten(&mut agg, surveys, now + DAY), ["edge"]);
    // A forgotten customer comes back with nothing of its past.
    let back = now + DAY;
    agg.record(surveys, &event("9", "idle", back, nps(2)), back)
        .unwrap();
    let part = agg.customer_signals(surveys, "idle").unwrap();
    let latest = part.surveys.unwrap().latest_nps.unwrap();
    assert_eq!(
        latest,
        NpsAnswer {
            at_ms: back,
            score: 2
        }
    );
}

#[test]
fn a_dropped_partition_drops_its_signal_parts() {
    let mut agg = with_signals(SignalSettings::default());
    let p = PartitionId::new(Family::Billing, 3);
    agg.record(p, &event("1", "c", T0, started("s1", 1_000)), T0)
        .unwrap();
    assert!(agg.customer_signals(p, "c").is_some());
    agg.drop_partition(p);
    assert_eq!(agg.customer_signals(p, "c"), None);
    assert!(taken_changes(&mut agg, p, T0).is_empty());
}

/// One generated event: its family's part, the customer, and how long before now it
/// happened.
#[derive(Debug, Clone)]
enum Act {
    Answer(Survey, u8),
    /// Ticket index; kind 0 opened, 1 reopened, 2 replied, 3 resolved; an agent's public
    /// reply; how long before the resolution its ticket was opened.
    Ticket(usize, u8, bool, i64),
    /// Subscription index; 0 started, 1 changed, 2 canceled, 3 renewed; price; delinquent.
    Billing(usize, u8, i64, bool),
}

const CUSTOMERS: usize = 3;
const TICKETS: usize = 6;
const SUBSCRIPTIONS: usize = 4;
const SUBSCRIPTION_IDS: [&str; SUBSCRIPTIONS] = ["s0", "s1", "s2", "s3"];

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        prop_oneof![
            (0u8..=10).prop_map(|s| Act::Answer(Survey::Nps, s)),
            (1u8..=5).prop_map(|s| Act::Answer(Survey::Csat, s)),
            (1u8..=7).prop_map(|s| Act::Answer(Survey::Ces, s)),
        ],
        (0..TICKETS, 0u8..4, prop::bool::weighted(0.7), 0..100 * HOUR)
            .prop_map(|(t, k, agent, gap)| Act::Ticket(t, k, agent, gap)),
        (0..SUBSCRIPTIONS, 0u8..4, 0i64..3, any::<bool>())
            .prop_map(|(s, a, price, delinquent)| Act::Billing(s, a, price * 5_000, delinquent)),
    ]
}

/// The event of `act`, its partition and the customer it names. Tickets are spread over
/// two partitions by ticket, so a customer's tickets are on both; surveys and billing by
/// customer; a subscription's events name its owner.
fn generated(
    i: usize,
    act: &Act,
    at: i64,
    customer: usize,
) -> (PartitionId, usize, Event<'static>) {
    let (family, customer, partition, payload) = match act {
        Act::Answer(survey, score) => {
            let payload = Payload::SurveyResponded {
                survey: *survey,
                score: *score,
                comment: None,
            };
            (Family::Surveys, customer, customer, payload)
        }
        Act::Ticket(ticket, kind, agent, gap) => {
            let name = format!("t{ticket}");
            let payload = match kind {
                0 => opened(&name),
                1 => reopened(&name),
                2 => replied(
                    &name,
                    if *agent {
                        Author::Agent
                    } else {
                        Author::Customer
                    },
                    true,
                ),
                _ => resolved(&name, at - gap),
            };
            (Family::Tickets, ticket % CUSTOMERS, *ticket, payload)
        }
        Act::Billing(subscription, action, price, delinquent) => {
            let id = SUBSCRIPTION_IDS[*subscription];
            let payload = match action {
                0 => started(id, *price),
                1 => changed(id, *price),
                2 => canceled(
                    id,
                    if *delinquent {
                        CancelReason::Delinquent
                    } else {
                        CancelReason::Voluntary
                    },
                ),
                _ => Payload::SubscriptionRenewed {
                    subscription_id: Cow::Borrowed(id),
                },
            };
            let owner = subscription % CUSTOMERS;
            (Family::Billing, owner, owner, payload)
        }
    };
    let partition = PartitionId::new(family, (partition % 2) as i32);
    let name = format!("c{customer}");
    (
        partition,
        customer,
        event(&i.to_string(), &name, at, payload),
    )
}

/// The sum of `adds` a signal window holds at `now`: those in the buckets up to the newest
/// written and no older than the window at `now` or at the newest.
fn windowed(adds: &[(i64, i64)], now: i64, bucket: i64) -> i64 {
    let Some(newest) = adds.iter().map(|a| a.0.div_euclid(bucket)).max() else {
        return 0;
    };
    let from = now.div_euclid(bucket).max(newest) - (SIGNAL_BUCKETS as i64 - 1);
    adds.iter()
        .filter(|a| a.0.div_euclid(bucket) >= from)
        .map(|a| a.1)
        .sum()
}

/// What the brute force knows of one customer from its applied events.
#[derive(Debug, Default)]
struct Truth {
    surveyed: bool,
    nps: Option<(i64, u8)>,
    csat: Vec<(i64, i64)>,
    ticketed: bool,
    opened: Vec<(i64, i64)>,
    breaches: Vec<(i64, i64)>,
    billed: bool,
    mrr: i64,
    ever_paid: bool,
    active_since: i64,
    trend: Vec<(i64, i64)>,
    failures: Vec<(i64, i64)>,
}

impl Truth {
    fn values(&self, open: u32, now: i64, bucket: i64) -> SignalValues {
        let mut v = [None; Signal::ALL.len()];
        if self.surveyed {
            v[Signal::Nps as usize] = self.nps.map(|n| f64::from(n.1));
            let answers = windowed(
                &self.csat.iter().map(|a| (a.0, 1)).collect::<Vec<_>>(),
                now,
                bucket,
            );
            let points = windowed(&self.csat, now, bucket);
            v[Signal::Csat as usize] = (answers > 0).then(|| points as f64 / answers as f64);
        }
        if self.ticketed {
            v[Signal::TicketsOpened as usize] = Some(windowed(&self.opened, now, bucket) as f64);
            v[Signal::TicketsOpen as usize] = Some(f64::from(open));
            v[Signal::SlaBreaches as usize] = Some(windowed(&self.breaches, now, bucket) as f64);
        }
        if self.billed {
            let change = i128::from(windowed(&self.trend, now, bucket));
            let before = i128::from(self.mrr) - change;
            v[Signal::MrrTrend as usize] =
                (before > 0).then(|| 100.0 * change as f64 / before as f64);
            v[Signal::PaymentFailures as usize] =
                Some(windowed(&self.failures, now, bucket) as f64);
            v[Signal::TenureDays as usize] = (self.mrr > 0)
                .then(|| now.saturating_sub(self.active_since).max(0) as f64 / DAY as f64);
        }
        v
    }
}

/// A subscription as the brute force's ledger keeps it: owner, MRR, canceled.
type SubscriptionModel = (usize, i64, bool);

/// Applies a billing event to the brute force's ledger; `None` when the service rejects it.
fn bill(
    subscriptions: &mut HashMap<usize, SubscriptionModel>,
    truths: &mut [Truth],
    (subscription, action, mrr, delinquent): (usize, u8, i64, bool),
    customer: usize,
    at: i64,
) -> Option<()> {
    let known = subscriptions.get(&subscription).copied();
    let (owner, old, _) = match (action, known) {
        (0, None) => (customer, 0, true),
        (0, Some(s)) => s,
        (_, Some(s)) if !s.2 => s,
        _ => return None,
    };
    let new = match action {
        0 | 1 => mrr,
        2 => 0,
        _ => old,
    };
    subscriptions.insert(subscription, (owner, new, action == 2));
    let truth = &mut truths[owner];
    truth.billed = true;
    let before = truth.mrr;
    let after = before + new - old;
    match classify(before, after, truth.ever_paid) {
        Some(Movement::Expansion) => truth.trend.push((at, after - before)),
        Some(Movement::Contraction) => truth.trend.push((at, after - before)),
        _ => {}
    }
    if before == 0 && after > 0 {
        truth.active_since = at;
    }
    truth.ever_paid |= after > 0;
    truth.mrr = after;
    if action == 2 && delinquent {
        truth.failures.push((at, 1));
    }
    Some(())
}

proptest! {
    /// Events of the three families for a few customers, tickets of one customer on two
    /// partitions, delivered in any order with late events and resends: the parts of every
    /// partition, merged, give at any instant the values a recomputation from the applied
    /// events gives; taken parts say the same; and a replay builds the same parts.
    #[test]
    fn merged_parts_equal_a_brute_force_recomputation(
        steps in prop::collection::vec(
            (act(), 0..3 * DAY, 0..CUSTOMERS, prop::option::weighted(0.15, any::<prop::sample::Index>())),
            1..80,
        ),
        instant in -12 * HOUR..2 * DAY,
    ) {
        let signals = SignalSettings {
            window_ms: 16 * HOUR,
            forget_after_ms: 400 * DAY,
            ..SignalSettings::default()
        };
        let bucket = signals.bucket_ms();
        let rates = settings(10).rates;
        let mut agg = with_signals(signals);
        let horizon = agg.horizon_ms(T0);
        let mut delivered: Vec<(PartitionId, usize, Event<'static>, Act)> = Vec::new();
        let mut applied_ids: HashSet<(PartitionId, String)> = HashSet::new();
        let mut truths: Vec<Truth> = (0..CUSTOMERS).map(|_| Truth::default()).collect();
        let mut subscriptions = HashMap::new();
        let mut ticket_events: BTreeMap<PartitionId, Vec<TicketRecord>> = BTreeMap::new();
        let mut open: BTreeMap<(PartitionId, usize), usize> = BTreeMap::new();
        let mut resolution_breaches: Vec<(usize, i64)> = Vec::new();
        for (i, (act, age, customer, resend)) in steps.iter().enumerate() {
            let (p, customer, e, act) = match resend {
                Some(index) if !delivered.is_empty() => delivered[index.index(delivered.len())].clone(),
                _ => {
                    let (p, customer, e) = generated(i, act, T0 - age, *customer);
                    (p, customer, e, act.clone())
                }
            };
            delivered.push((p, customer, e.clone(), act.clone()));
            let at = e.occurred_at_ms;
            let outcome = agg.record(p, &e, T0);
            if applied_ids.contains(&(p, e.event_id.to_string())) {
                prop_assert!(matches!(outcome, Ok(Outcome::Duplicate | Outcome::Late)), "{:?}", outcome);
                continue;
            }
            let applied = match &act {
                Act::Answer(survey, score) => {
                    prop_assert_eq!(outcome == Ok(Outcome::Late), at < horizon);
                    let applied = at >= horizon;
                    if applied {
                        let truth = &mut truths[customer];
                        truth.surveyed = true;
                        match survey {
                            Survey::Nps => truth.nps = truth.nps.max(Some((at, *score))),
                            Survey::Csat => truth.csat.push((at, i64::from(*score))),
                            Survey::Ces => {}
                        }
                    }
                    applied
                }
                Act::Ticket(ticket, kind, agent, gap) => {
                    prop_assert!(outcome.is_ok());
                    truths[customer].ticketed = true;
                    ticket_events.entry(p).or_default().push(TicketRecord {
                        at,
                        kind: *kind,
                        ticket: *ticket,
                        counts: *agent && *kind == 2,
                    });
                    match kind {
                        0 => {
                            truths[customer].opened.push((at, 1));
                            open.insert((p, *ticket), customer);
                        }
                        1 => {
                            open.insert((p, *ticket), customer);
                        }
                        3 => {
                            open.remove(&(p, *ticket));
                            // Normal priority: resolved within 72 hours.
                            if *gap > 72 * HOUR {
                                resolution_breaches.push((customer, at));
                            }
                        }
                        _ => {}
                    }
                    true
                }
                Act::Billing(subscription, action, price, delinquent) => {
                    let id = SUBSCRIPTION_IDS[*subscription];
                    let mrr = rates.mrr(&terms(id, *price, "USD", Interval::Month), at).unwrap();
                    let billed = bill(&mut subscriptions, &mut truths, (*subscription, *action, mrr, *delinquent), customer, at);
                    prop_assert_eq!(outcome.is_ok(), billed.is_some(), "{:?}", outcome);
                    billed.is_some()
                }
            };
            if applied {
                applied_ids.insert((p, e.event_id.to_string()));
            }
        }
        for (customer, at) in resolution_breaches {
            truths[customer].breaches.push((at, 1));
        }
        for events in ticket_events.values() {
            for (reply_at, duration, ticket) in first_replies(events) {
                // Normal priority: a first reply within 8 hours.
                if duration > 8 * HOUR as u64 {
                    truths[ticket % CUSTOMERS].breaches.push((reply_at, 1));
                }
            }
        }
        let now = T0 + instant;
        let partitions: Vec<PartitionId> = Family::ALL
            .into_iter()
            .flat_map(|f| [PartitionId::new(f, 0), PartitionId::new(f, 1)])
            .collect();
        let mut taken: HashMap<String, CustomerSignals> = HashMap::new();
        for p in &partitions {
            let mut seen = HashSet::new();
            for (id, part) in taken_changes(&mut agg, *p, T0) {
                prop_assert!(seen.insert(id.clone()), "{} twice", id);
                let part = part.expect("nobody is idle for 400 days");
                taken.entry(id.to_string()).or_default().merge(&part);
            }
        }
        for (customer, truth) in truths.iter().enumerate() {
            let name = format!("c{customer}");
            let mut merged = CustomerSignals::default();
            for p in &partitions {
                if let Some(part) = agg.customer_signals(*p, &name) {
                    merged.merge(&part);
                }
            }
            let open_now = open.values().filter(|c| **c == customer).count() as u32;
            let expected = truth.values(open_now, now, bucket);
            prop_assert_eq!(merged.values(now, bucket), expected, "{}: {:?}", name, merged);
            let from_taken = taken.get(&name).cloned().unwrap_or_default();
            prop_assert_eq!(from_taken.values(now, bucket), expected, "{} taken", name);
        }
        // A replay from scratch builds the same parts.
        let mut replayed = with_signals(signals);
        for (p, _, e, _) in &delivered {
            let _ = replayed.record(*p, e, T0);
        }
        for p in &partitions {
            for customer in 0..CUSTOMERS {
                let name = format!("c{customer}");
                prop_assert_eq!(replayed.customer_signals(*p, &name), agg.customer_signals(*p, &name));
            }
        }
    }
}

/// A partition restarted at any point, from the parts it wrote at any earlier point and a
/// replay from any offset up to them, ends with the parts of a run that never stopped: the
/// replay skips, per customer, exactly the events the restored part counts. Cut the
/// `offset < restored_through` test and the customers whose events are replayed count them
/// twice.
#[test]
fn restored_parts_and_a_replay_make_the_parts_of_an_uninterrupted_run() {
    let signals = SignalSettings::default();
    let bucket = signals.bucket_ms();
    let csat = |score| Payload::SurveyResponded {
        survey: Survey::Csat,
        score,
        comment: None,
    };
    let nps = |score| Payload::SurveyResponded {
        survey: Survey::Nps,
        score,
        comment: None,
    };
    let families: [(Family, Vec<Event<'static>>); 3] = [
        (
            Family::Surveys,
            vec![
                event("s1", "a", T0, csat(2)),
                event("s2", "b", T0 + MINUTE, nps(3)),
                event("s3", "a", T0 + 2 * MINUTE, csat(5)),
                event("s4", "a", T0 + DAY, nps(9)),
                event("s5", "b", T0 + DAY, csat(4)),
                event("s6", "a", T0 + 2 * DAY, csat(1)),
            ],
        ),
        (
            Family::Tickets,
            vec![
                event("t1", "a", T0, opened("x")),
                event("t2", "b", T0 + MINUTE, opened("y")),
                event("t3", "a", T0 + HOUR, resolved("x", T0)),
                event("t4", "a", T0 + DAY, opened("z")),
                event("t5", "b", T0 + DAY, resolved("y", T0 + MINUTE)),
            ],
        ),
        (
            Family::Billing,
            vec![
                event("b1", "a", T0, started("sa", 1_000)),
                event("b2", "b", T0 + MINUTE, started("sb", 2_000)),
                event("b3", "a", T0 + DAY, changed("sa", 3_000)),
                event(
                    "b4",
                    "b",
                    T0 + 2 * DAY,
                    canceled("sb", CancelReason::Delinquent),
                ),
            ],
        ),
    ];
    let now = T0 + 3 * DAY;
    for (family, events) in &families {
        let p = PartitionId::new(*family, 0);
        let run = |agg: &mut Aggregates, from: usize, to: usize| {
            for (offset, e) in events.iter().enumerate().take(to).skip(from) {
                agg.record_at(p, e, offset as i64, e.occurred_at_ms)
                    .unwrap();
            }
        };
        let mut whole = with_signals(signals);
        run(&mut whole, 0, events.len());
        for cut in 0..=events.len() {
            let mut before = with_signals(signals);
            run(&mut before, 0, cut);
            let written: Vec<(Arc<str>, CustomerPart)> = before
                .take_signal_changes(p, now, cut as i64)
                .into_iter()
                .filter_map(|c| Some((c.customer_id, c.part?)))
                .collect();
            // Open tickets and the ledger need their whole history, as the service's replay
            // horizon gives them; survey answers may start anywhere up to the cut.
            let starts = if *family == Family::Surveys {
                0..=cut
            } else {
                0..=0
            };
            for start in starts {
                let mut after = with_signals(signals);
                after.restore_signals(p, written.clone());
                run(&mut after, start, events.len());
                for customer in ["a", "b"] {
                    let expected = whole.customer_signals(p, customer).unwrap();
                    let got = after.customer_signals(p, customer).unwrap();
                    assert_eq!(
                        got.values(now, bucket),
                        expected.values(now, bucket),
                        "{family:?} {customer}: cut {cut}, replay from {start}"
                    );
                }
            }
        }
    }
}

/// With `health.enabled = false` no partition keeps a customer, and nothing is taken.
#[test]
fn signals_off_keep_nothing() {
    let mut agg = with_signals(SignalSettings {
        enabled: false,
        ..SignalSettings::default()
    });
    for family in Family::ALL {
        let p = PartitionId::new(family, 0);
        let payload = match family {
            Family::Surveys => Payload::SurveyResponded {
                survey: Survey::Nps,
                score: 9,
                comment: None,
            },
            Family::Tickets => opened("x"),
            Family::Billing => started("s", 1_000),
        };
        agg.record(p, &event("1", "a", T0, payload), T0).unwrap();
        assert_eq!(agg.customer_signals(p, "a"), None);
        assert!(agg.take_signal_changes(p, T0, 1).is_empty());
    }
}

/// Detractors' answers (NPS 0-6, CSAT 1-2) are taken once each: not their duplicates, and
/// not again by a replay after the parts that count them are restored.
#[test]
fn a_detractor_answer_is_taken_once_through_duplicates_and_a_restored_replay() {
    let signals = SignalSettings::default();
    let p = PartitionId::new(Family::Surveys, 0);
    let answer = |id: &str, at: i64, survey, score, comment: Option<&'static str>| {
        event(
            id,
            "c",
            at,
            Payload::SurveyResponded {
                survey,
                score,
                comment: comment.map(Cow::Borrowed),
            },
        )
    };
    let events = [
        answer("a", T0, Survey::Nps, 9, None),
        answer("b", T0 - MINUTE, Survey::Nps, 3, Some("too slow")),
        answer("c", T0, Survey::Csat, 2, None),
        answer("d", T0, Survey::Csat, 3, Some("fine")),
        answer("e", T0, Survey::Ces, 1, None),
        answer("b", T0 - MINUTE, Survey::Nps, 3, Some("too slow")),
        answer("f", T0, Survey::Nps, 7, None),
    ];
    let mut agg = with_signals(signals);
    for (offset, e) in events.iter().enumerate() {
        let _ = agg.record_at(p, e, offset as i64, T0);
    }
    let taken: Vec<(String, u8, Option<String>, i64)> = agg
        .take_detractors(p)
        .into_iter()
        .map(|d| (d.event_id, d.score, d.comment, d.offset))
        .collect();
    assert_eq!(
        taken,
        [
            ("b".to_owned(), 3, Some("too slow".to_owned()), 1),
            ("c".to_owned(), 2, None, 2)
        ]
    );
    assert!(agg.take_detractors(p).is_empty());
    let written: Vec<(Arc<str>, CustomerPart)> = agg
        .take_signal_changes(p, T0, events.len() as i64)
        .into_iter()
        .filter_map(|c| Some((c.customer_id, c.part?)))
        .collect();
    let mut restarted = with_signals(signals);
    restarted.restore_signals(p, written);
    for (offset, e) in events.iter().enumerate() {
        let _ = restarted.record_at(p, e, offset as i64, T0);
    }
    assert!(restarted.take_detractors(p).is_empty());
    let next = answer("g", T0, Survey::Csat, 1, None);
    restarted
        .record_at(p, &next, events.len() as i64, T0)
        .unwrap();
    let taken = restarted.take_detractors(p);
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].event_id.as_str(), taken[0].score), ("g", 1));
    // A replay without restored parts keeps only the answers from where it counts.
    let mut replayed = with_signals(signals);
    replayed.keep_detractors_from(p, 2);
    for (offset, e) in events.iter().enumerate() {
        let _ = replayed.record_at(p, e, offset as i64, T0);
    }
    let kept: Vec<String> = replayed
        .take_detractors(p)
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    assert_eq!(kept, ["c"]);
}
