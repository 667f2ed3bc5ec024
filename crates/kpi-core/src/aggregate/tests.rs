//! Tests of the windowed state against brute-force recomputations.

use std::borrow::Cow;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::billing;
use crate::event::{Author, CancelReason, Survey};
use crate::kpi;

pub(super) const MINUTE: i64 = 60_000;
pub(super) const HOUR: i64 = 60 * MINUTE;
pub(super) const DAY: i64 = 24 * HOUR;
pub(super) const T0: i64 = 20_000 * HOUR;

pub(super) fn specs() -> Vec<WindowSpec> {
    vec![
        WindowSpec::new("1h", Duration::from_secs(3600), Duration::from_secs(60)),
        WindowSpec::new(
            "24h",
            Duration::from_secs(86_400),
            Duration::from_secs(1440),
        ),
    ]
}

pub(super) fn aggregates(cap: usize) -> Aggregates {
    Aggregates::new(settings(cap))
}

pub(super) fn settings(cap: usize) -> StateSettings {
    let mut rates = std::collections::BTreeMap::new();
    rates.insert("EUR".to_owned(), 1.5);
    StateSettings {
        windows: specs(),
        lead_ms: 5 * MINUTE,
        dimensions: Dimensions::new(&["segment".to_owned()], cap),
        rates: Rates::new("USD", &rates),
        clv_window: 1,
        dedup_horizon_ms: 0,
        calendar: None,
        max_open_age_ms: 90 * DAY,
        sla: SlaTargets::default(),
        trial_grace_ms: 30 * MINUTE,
        signals: SignalSettings::default(),
    }
}

fn survey_event(at: i64, survey: Survey, score: u8, segment: Option<&str>) -> Event<'_> {
    answer_event(at, survey, score, false, segment)
}

fn answer_event(
    at: i64,
    survey: Survey,
    score: u8,
    commented: bool,
    segment: Option<&str>,
) -> Event<'_> {
    Event {
        event_id: Cow::Borrowed("e"),
        occurred_at_ms: at,
        customer_id: Cow::Borrowed("c"),
        dimensions: [segment.map(Cow::Borrowed), None, None, None],
        payload: Payload::SurveyResponded {
            survey,
            score,
            comment: commented.then_some(Cow::Borrowed("a comment")),
        },
        reference_ms: at,
    }
}

pub(super) fn find<'a>(records: &'a [KpiRecord], key: &str) -> &'a KpiRecord {
    records
        .iter()
        .find(|r| r.key() == key)
        .unwrap_or_else(|| panic!("no record {key}"))
}

#[test]
fn empty_state_publishes_null_values_for_the_overall_series() {
    let records = aggregates(10).snapshot(T0);
    // Every windowed KPI per window, and the nine current values once (six of billing,
    // three of the backlog).
    let current = records.iter().filter(|r| r.window == kpi::CURRENT).count();
    assert_eq!(current, 9);
    assert_eq!(records.len(), 2 * (kpi::KPIS.len() - current) + current);
    for r in &records {
        // Counts are 0 in an empty window (the backlog a count with its breakdown as
        // components); ratios and means have no value.
        let count = r.def.components.is_empty() || r.def.kpi == kpi::BACKLOG.kpi;
        let expected = count.then_some(0.0);
        assert_eq!(r.value, expected, "{}", r.key());
        assert_eq!(r.samples, 0);
        assert!(
            r.components.iter().all(|c| c.is_none_or(|c| c == 0.0)),
            "{}",
            r.key()
        );
    }
}

#[test]
fn partitions_merge_and_a_dropped_partition_leaves_no_trace() {
    let mut agg = aggregates(10);
    let p0 = PartitionId::new(Family::Surveys, 0);
    let p1 = PartitionId::new(Family::Surveys, 1);
    agg.record(
        p0,
        &survey_event(T0 - MINUTE, Survey::Nps, 10, Some("smb")),
        T0,
    )
    .unwrap();
    agg.record(
        p1,
        &survey_event(T0 - MINUTE, Survey::Nps, 0, Some("ent")),
        T0,
    )
    .unwrap();
    let records = agg.snapshot(T0);
    assert_eq!(find(&records, "nps/1h").value, Some(0.0));
    assert_eq!(find(&records, "nps/1h/segment=smb").value, Some(100.0));
    agg.drop_partition(p1);
    let records = agg.snapshot(T0);
    assert_eq!(find(&records, "nps/1h").value, Some(100.0));
    // The series belonged to the dropped partition only: its new owner publishes it.
    assert!(
        records
            .iter()
            .all(|r| r.dimension != Some(("segment".into(), "ent".into())))
    );
    // A series whose windows have emptied stays known, with zero components.
    let records = agg.snapshot(T0 + 31 * DAY);
    let smb = find(&records, "nps/1h/segment=smb");
    assert_eq!((smb.value, smb.samples), (None, 0));
}

#[test]
fn events_older_than_the_largest_window_are_late() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Surveys, 0);
    let horizon = agg.horizon_ms(T0);
    let old = survey_event(horizon - 1, Survey::Csat, 5, None);
    assert_eq!(agg.record(p, &old, T0), Ok(Outcome::Late));
    let edge = survey_event(horizon, Survey::Csat, 5, None);
    assert_eq!(agg.record(p, &edge, T0), Ok(Outcome::Counted));
    let records = agg.snapshot(T0);
    assert_eq!(find(&records, "csat/24h").samples, 1);
    assert_eq!(find(&records, "csat/1h").samples, 0);
}

pub(super) fn ticket_event(at: i64, payload: Payload<'static>) -> Event<'static> {
    Event {
        event_id: Cow::Borrowed("t"),
        occurred_at_ms: at,
        customer_id: Cow::Borrowed("c"),
        dimensions: [Some(Cow::Borrowed("smb")), None, None, None],
        payload,
        reference_ms: at,
    }
}

#[test]
fn ticket_events_count_per_window_and_feed_fcr() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Tickets, 0);
    let id = || Cow::Borrowed("t1");
    let resolved = |agent_replies, reopens| Payload::TicketResolved {
        ticket_id: id(),
        opened_at_ms: T0 - 3 * HOUR,
        agent_replies,
        reopens,
        priority: None,
    };
    let events = [
        ticket_event(
            T0 - MINUTE,
            Payload::TicketOpened {
                ticket_id: id(),
                priority: None,
            },
        ),
        ticket_event(
            T0 - 2 * HOUR,
            Payload::TicketOpened {
                ticket_id: id(),
                priority: None,
            },
        ),
        ticket_event(
            T0 - MINUTE,
            Payload::TicketReopened {
                ticket_id: id(),
                priority: None,
            },
        ),
        ticket_event(T0 - MINUTE, resolved(1, 0)),
        ticket_event(T0 - MINUTE, resolved(2, 0)),
        ticket_event(T0 - 2 * HOUR, resolved(0, 0)),
    ];
    for e in &events {
        assert_eq!(agg.record(p, e, T0), Ok(Outcome::Counted));
    }
    let records = agg.snapshot(T0);
    assert_eq!(find(&records, "tickets_opened/1h").value, Some(1.0));
    assert_eq!(find(&records, "tickets_opened/24h").value, Some(2.0));
    assert_eq!(find(&records, "tickets_reopened/1h").value, Some(1.0));
    assert_eq!(find(&records, "tickets_resolved/24h").value, Some(3.0));
    assert_eq!(find(&records, "fcr/1h").value, Some(0.5));
    assert_eq!(find(&records, "fcr/24h/segment=smb").value, Some(2.0 / 3.0));
    assert_eq!(
        find(&records, "fcr/24h").components,
        vec![Some(2.0), Some(3.0)]
    );
    // Surveys and tickets share series but not tallies.
    assert_eq!(find(&records, "nps/24h/segment=smb").samples, 0);
}

#[derive(Debug, Clone)]
struct Step {
    advance_ms: i64,
    age_ms: i64,
    survey: Survey,
    score: u8,
    commented: bool,
    segment: Option<&'static str>,
    partition: i32,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..20 * MINUTE,
        -5 * MINUTE..30 * HOUR,
        prop_oneof![Just(Survey::Nps), Just(Survey::Csat), Just(Survey::Ces)],
        0u8..=10,
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some("smb")),
            Just(Some("mid")),
            Just(Some("ent")),
            Just(Some(""))
        ],
        0..3i32,
    )
        .prop_map(
            |(advance_ms, age_ms, survey, score, commented, segment, partition)| {
                let (low, high) = survey.scale();
                Step {
                    advance_ms,
                    age_ms,
                    survey,
                    score: low + score % (high - low + 1),
                    commented,
                    segment,
                    partition,
                }
            },
        )
}

proptest! {
    /// The windowed values equal a recomputation over the raw accepted events.
    #[test]
    fn windowed_values_equal_a_brute_force_recomputation(
        steps in prop::collection::vec(step(), 1..200),
        final_advance in 0..48 * HOUR,
    ) {
        let cap = 2;
        let mut agg = aggregates(cap);
        let mut now = T0;
        // (occurred_at, survey, score, commented, segment label) of every counted event.
        let mut accepted: Vec<(i64, Survey, u8, bool, String)> = Vec::new();
        let mut interned: Vec<String> = Vec::new();
        for s in &steps {
            now += s.advance_ms;
            let at = now - s.age_ms;
            let event = answer_event(at, s.survey, s.score, s.commented, s.segment);
            let outcome = agg.record(PartitionId::new(Family::Surveys, s.partition), &event, now);
            let expect_late = at < agg.horizon_ms(now);
            prop_assert_eq!(outcome == Ok(Outcome::Late), expect_late);
            if !expect_late {
                let value = match s.segment { Some(v) if !v.is_empty() => v, _ => "unknown" };
                let label = if interned.iter().any(|i| i == value) {
                    value.to_owned()
                } else if interned.len() < cap {
                    interned.push(value.to_owned());
                    value.to_owned()
                } else {
                    "other".to_owned()
                };
                accepted.push((at, s.survey, s.score, s.commented, label));
            }
        }
        now += final_advance;
        let records = agg.snapshot(now);
        for spec in specs() {
            let start = spec.start_ms(now);
            let mut series: Vec<Option<String>> = vec![None];
            series.extend(accepted.iter().map(|a| Some(a.4.clone())));
            series.dedup();
            for label in series {
                let mut expected = SurveyTally::default();
                let (mut answers, mut commented) = (0u64, 0u64);
                for (at, survey, score, comment, seg) in &accepted {
                    if *at >= start && label.as_ref().is_none_or(|l| l == seg) {
                        expected.record(*survey, *score, *comment);
                        answers += 1;
                        commented += u64::from(*comment);
                    }
                }
                let suffix = label.as_ref().map(|l| format!("/segment={l}")).unwrap_or_default();
                let nps = find(&records, &format!("nps/{}{suffix}", spec.name));
                prop_assert_eq!(nps.value, expected.nps().value());
                prop_assert_eq!(nps.samples, expected.nps().responses());
                let csat = find(&records, &format!("csat/{}{suffix}", spec.name));
                prop_assert_eq!(csat.value, expected.csat().ratio());
                let ces = find(&records, &format!("ces/{}{suffix}", spec.name));
                prop_assert_eq!(ces.value, expected.ces().mean());
                let easy = find(&records, &format!("ces_easy/{}{suffix}", spec.name));
                prop_assert_eq!(easy.value, expected.ces().easy_ratio());
                let comments = find(&records, &format!("survey_comment/{}{suffix}", spec.name));
                let ratio = (answers > 0).then(|| commented as f64 / answers as f64);
                prop_assert_eq!(comments.value, ratio);
                prop_assert_eq!(comments.samples, answers);
                prop_assert_eq!(
                    &comments.components,
                    &vec![Some(commented as f64), Some(answers as f64)]
                );
            }
        }
    }
}

pub(super) fn billing_event(
    at: i64,
    customer: &'static str,
    segment: &'static str,
    payload: Payload<'static>,
) -> Event<'static> {
    Event {
        event_id: Cow::Borrowed("b"),
        occurred_at_ms: at,
        customer_id: Cow::Borrowed(customer),
        dimensions: [Some(Cow::Borrowed(segment)), None, None, None],
        payload,
        reference_ms: at,
    }
}

pub(super) fn terms(
    id: &'static str,
    price: i64,
    currency: &'static str,
    interval: crate::event::Interval,
) -> crate::event::SubscriptionTerms<'static> {
    crate::event::SubscriptionTerms {
        subscription_id: Cow::Borrowed(id),
        plan: Cow::Borrowed("pro"),
        price,
        quantity: 1,
        currency: Cow::Borrowed(currency),
        interval,
        interval_count: 1,
    }
}

#[test]
fn billing_movements_rates_and_current_values() {
    use crate::event::Interval::{Month, Year};
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Billing, 0);
    let sub = |id| Cow::Borrowed(id);
    let ok = [
        // Older than every window: changes the current MRR only.
        (
            billing_event(
                T0 - 30 * HOUR,
                "c1",
                "smb",
                Payload::SubscriptionStarted(terms("s1", 10_000, "USD", Month)),
            ),
            Outcome::Late,
        ),
        // 100 EUR at 1.5 = 150 USD.
        (
            billing_event(
                T0 - 2 * HOUR,
                "c2",
                "smb",
                Payload::SubscriptionStarted(terms("s2", 10_000, "EUR", Month)),
            ),
            Outcome::Counted,
        ),
        (
            billing_event(
                T0 - 30 * MINUTE,
                "c1",
                "smb",
                Payload::SubscriptionChanged(terms("s1", 12_000, "USD", Month)),
            ),
            Outcome::Counted,
        ),
        (
            billing_event(
                T0 - 10 * MINUTE,
                "c2",
                "smb",
                Payload::SubscriptionCanceled {
                    subscription_id: sub("s2"),
                    reason: CancelReason::Voluntary,
                },
            ),
            Outcome::Counted,
        ),
        // 1200 a year = 100 a month.
        (
            billing_event(
                T0 - 5 * MINUTE,
                "c3",
                "ent",
                Payload::SubscriptionStarted(terms("s3", 120_000, "USD", Year)),
            ),
            Outcome::Counted,
        ),
        (
            billing_event(
                T0 - MINUTE,
                "c1",
                "smb",
                Payload::SubscriptionRenewed {
                    subscription_id: sub("s1"),
                },
            ),
            Outcome::Counted,
        ),
    ];
    for (event, outcome) in &ok {
        assert_eq!(agg.record(p, event, T0), Ok(*outcome));
    }
    let unknown = billing_event(
        T0,
        "c4",
        "smb",
        Payload::SubscriptionCanceled {
            subscription_id: sub("s9"),
            reason: CancelReason::Voluntary,
        },
    );
    assert_eq!(
        agg.record(p, &unknown, T0).unwrap_err().reason,
        crate::event::Reason::UnknownSubscription
    );
    let jpy = billing_event(
        T0,
        "c5",
        "smb",
        Payload::SubscriptionStarted(terms("s5", 1000, "JPY", Month)),
    );
    assert_eq!(
        agg.record(p, &jpy, T0).unwrap_err().reason,
        crate::event::Reason::UnknownCurrency
    );

    // A rejected event's segment does not become a series.
    let stray = billing_event(
        T0,
        "c6",
        "never-applied",
        Payload::SubscriptionRenewed {
            subscription_id: sub("s6"),
        },
    );
    assert!(agg.record(p, &stray, T0).is_err());

    let r = agg.snapshot(T0);
    assert!(
        r.iter()
            .all(|rec| rec.dimension != Some(("segment".into(), "never-applied".into())))
    );
    let v = |key: &str| find(&r, key).value;
    assert_eq!(v("mrr/current"), Some(220.0));
    assert_eq!(v("customers_active/current"), Some(2.0));
    assert_eq!(v("arpa/current"), Some(110.0));
    assert_eq!(v("mrr/current/segment=smb"), Some(120.0));
    assert_eq!(v("mrr/current/segment=ent"), Some(100.0));
    // 24h: new 150 + 100, expansion 20, churn 150; at its start c1 paid 100.
    assert_eq!(v("mrr_new/24h"), Some(250.0));
    assert_eq!(v("mrr_expansion/24h"), Some(20.0));
    assert_eq!(v("mrr_churn/24h"), Some(150.0));
    assert_eq!(v("mrr_contraction/24h"), Some(0.0));
    assert_eq!(v("net_new_mrr/24h"), Some(120.0));
    assert_eq!(v("customer_churn/24h"), Some(1.0));
    assert_eq!(v("revenue_churn/24h"), Some(1.5));
    assert_eq!(v("net_revenue_retention/24h"), Some(-0.3));
    assert_eq!(v("customer_retention/24h"), Some(0.0));
    assert_eq!(v("renewal/24h"), Some(0.5));
    // 1h: c1 at 100 and c2 at 150 at its start.
    assert_eq!(v("mrr_new/1h"), Some(100.0));
    assert_eq!(v("net_new_mrr/1h"), Some(-30.0));
    assert_eq!(v("customer_churn/1h"), Some(0.5));
    assert_eq!(v("revenue_churn/1h"), Some(0.6));
    assert_eq!(v("net_revenue_retention/1h"), Some(0.48));
    assert_eq!(v("customer_retention/1h"), Some(0.5));
    assert_eq!(
        find(&r, "customer_retention/1h").components,
        vec![Some(2.0), Some(2.0), Some(1.0)]
    );
    // CLV uses the 24h churn ratio here: 110 / 1.0.
    assert_eq!(v("clv/current"), Some(110.0));
    assert_eq!(v("clv/current/segment=ent"), None);
}

#[derive(Debug, Clone)]
enum BillingAction {
    Start(u8, i64, bool),
    Change(u8, i64),
    Cancel(u8),
    Renew(u8),
}

fn billing_step() -> impl Strategy<Value = (i64, i64, u8, BillingAction)> {
    let price = prop_oneof![Just(1_000i64), Just(2_500), Just(4_900)];
    let action = prop_oneof![
        (0..4u8, price.clone(), any::<bool>())
            .prop_map(|(s, p, eur)| BillingAction::Start(s, p, eur)),
        (0..4u8, price).prop_map(|(s, p)| BillingAction::Change(s, p)),
        (0..4u8).prop_map(BillingAction::Cancel),
        (0..4u8).prop_map(BillingAction::Renew),
    ];
    (0..30 * MINUTE, 0..30 * HOUR, 0..3u8, action)
}

/// The movement a customer's MRR going from `before` to `after` makes, by index in the
/// order new, reactivation, expansion, contraction, churn; notes whether it ever paid.
fn movement_kind(before: i64, after: i64, ever_paid: &mut bool) -> Option<usize> {
    let kind = match (before > 0, after > 0) {
        (false, true) if *ever_paid => Some(1),
        (false, true) => Some(0),
        (true, false) => Some(4),
        (true, true) if after > before => Some(2),
        (true, true) if after < before => Some(3),
        _ => None,
    };
    *ever_paid |= after > 0;
    kind
}

proptest! {
    /// Current MRR and windowed movements equal a recomputation over the raw events.
    #[test]
    fn billing_values_equal_a_brute_force_recomputation(
        steps in prop::collection::vec(billing_step(), 1..120),
    ) {
        const IDS: [&str; 4] = ["s0", "s1", "s2", "s3"];
        const CUSTOMERS: [&str; 3] = ["c0", "c1", "c2"];
        let mut agg = aggregates(10);
        let p = PartitionId::new(Family::Billing, 0);
        let mut now = T0;
        // Brute force: subscription -> (customer, micros); customer -> ever paid.
        let mut subs: HashMap<u8, (u8, i64)> = HashMap::new();
        let mut canceled: std::collections::HashSet<u8> = Default::default();
        let mut ever_paid = [false; 3];
        // (occurred_at, movement kind index, amount)
        let mut movements: Vec<(i64, usize, i64)> = Vec::new();
        for (advance, age, customer, action) in &steps {
            now += advance;
            let at = now - age;
            let c = CUSTOMERS[usize::from(*customer)];
            let (payload, sub, micros) = match *action {
                BillingAction::Start(s, price, eur) => {
                    let currency = if eur { "EUR" } else { "USD" };
                    let micros = price * if eur { 15_000 } else { 10_000 };
                    (Payload::SubscriptionStarted(terms(IDS[usize::from(s)], price, currency, crate::event::Interval::Month)), s, Some(micros))
                }
                BillingAction::Change(s, price) => (
                    Payload::SubscriptionChanged(terms(IDS[usize::from(s)], price, "USD", crate::event::Interval::Month)),
                    s, Some(price * 10_000)),
                BillingAction::Cancel(s) => (Payload::SubscriptionCanceled { subscription_id: Cow::Borrowed(IDS[usize::from(s)]), reason: CancelReason::Voluntary }, s, Some(0)),
                BillingAction::Renew(s) => (Payload::SubscriptionRenewed { subscription_id: Cow::Borrowed(IDS[usize::from(s)]) }, s, None),
            };
            let starts = matches!(action, BillingAction::Start(..));
            let result = agg.record(p, &billing_event(at, c, "smb", payload), now);
            if !starts && (!subs.contains_key(&sub) || canceled.contains(&sub)) {
                prop_assert!(result.is_err());
                continue;
            }
            prop_assert!(result.is_ok());
            if matches!(action, BillingAction::Cancel(_)) {
                canceled.insert(sub);
            } else {
                canceled.remove(&sub);
            }
            let owner = subs.get(&sub).map_or(*customer, |(o, _)| *o);
            let total = |subs: &HashMap<u8, (u8, i64)>| -> i64 {
                subs.values().filter(|(o, _)| *o == owner).map(|(_, m)| m).sum()
            };
            let before = total(&subs);
            let entry = subs.entry(sub).or_insert((owner, 0));
            if let Some(m) = micros {
                entry.1 = m;
            }
            let after = total(&subs);
            let kind = movement_kind(before, after, &mut ever_paid[usize::from(owner)]);
            if let Some(kind) = kind {
                movements.push((at, kind, (after - before).abs()));
            }
        }
        let records = agg.snapshot(now);
        let mrr: i64 = subs.values().map(|(_, m)| m).sum();
        let mut per_customer = [0i64; 3];
        for (o, m) in subs.values() {
            per_customer[usize::from(*o)] += m;
        }
        let active = per_customer.iter().filter(|m| **m > 0).count() as f64;
        prop_assert_eq!(find(&records, "mrr/current").value, Some(billing::major(mrr.into())));
        prop_assert_eq!(find(&records, "customers_active/current").value, Some(active));
        for spec in specs() {
            let start = spec.start_ms(now);
            for (kind, name) in ["mrr_new", "mrr_reactivation", "mrr_expansion", "mrr_contraction", "mrr_churn"].iter().enumerate() {
                let sum: i64 = movements.iter().filter(|m| m.0 >= start && m.1 == kind).map(|m| m.2).sum();
                let key = format!("{name}/{}", spec.name);
                prop_assert_eq!(find(&records, &key).value, Some(billing::major(sum.into())), "{}", key);
            }
        }
    }
}

/// The subscriptions and customers of the segment property tests.
const SEGMENT_TEST_SUBSCRIPTIONS: [&str; 4] = ["s0", "s1", "s2", "s3"];
const SEGMENT_TEST_CUSTOMERS: [&str; 3] = ["c0", "c1", "c2"];
const SEGMENT_TEST_SEGMENTS: [&str; 2] = ["smb", "ent"];

/// The event of `action` on one of [`SEGMENT_TEST_SUBSCRIPTIONS`], in USD; a cancellation
/// for `reason`.
fn segment_test_payload(action: &BillingAction, reason: CancelReason) -> Payload<'static> {
    let id = |s: u8| SEGMENT_TEST_SUBSCRIPTIONS[usize::from(s)];
    let usd = |s, price| terms(id(s), price, "USD", crate::event::Interval::Month);
    match *action {
        BillingAction::Start(s, price, _) => Payload::SubscriptionStarted(usd(s, price)),
        BillingAction::Change(s, price) => Payload::SubscriptionChanged(usd(s, price)),
        BillingAction::Cancel(s) => Payload::SubscriptionCanceled {
            subscription_id: Cow::Borrowed(id(s)),
            reason,
        },
        BillingAction::Renew(s) => Payload::SubscriptionRenewed {
            subscription_id: Cow::Borrowed(id(s)),
        },
    }
}

/// A brute-force model of the ledger, for the property tests: subscription -> (owner,
/// micros, canceled); customer -> (segment of its latest applied event, ever paid).
#[derive(Default, Clone)]
struct LedgerModel {
    subs: HashMap<u8, (u8, i64, bool)>,
    customers: HashMap<u8, &'static str>,
}

impl LedgerModel {
    /// Applies an action as the contract says; false when it must be rejected.
    fn apply(&mut self, customer: u8, segment: &'static str, action: &BillingAction) -> bool {
        let (sub, micros, cancel) = match *action {
            BillingAction::Start(s, price, _) => (s, Some(price * 10_000), false),
            BillingAction::Change(s, price) => (s, Some(price * 10_000), false),
            BillingAction::Cancel(s) => (s, Some(0), true),
            BillingAction::Renew(s) => (s, None, false),
        };
        let starts = matches!(action, BillingAction::Start(..));
        let usable = self
            .subs
            .get(&sub)
            .is_some_and(|(_, _, canceled)| !canceled);
        if !starts && !usable {
            return false;
        }
        let entry = self.subs.entry(sub).or_insert((customer, 0, false));
        if let Some(m) = micros {
            entry.1 = m;
        }
        entry.2 = cancel;
        let owner = entry.0;
        self.customers.insert(owner, segment);
        true
    }

    /// (MRR, active customers) of the customers whose latest event was in `segment`.
    fn segment(&self, segment: &str) -> (i64, u64) {
        let mut per_customer: HashMap<u8, i64> = HashMap::new();
        for (owner, micros, _) in self.subs.values() {
            *per_customer.entry(*owner).or_default() += micros;
        }
        per_customer
            .iter()
            .filter(|(c, _)| self.customers.get(*c) == Some(&segment))
            .fold((0, 0), |(mrr, n), (_, m)| (mrr + m, n + u64::from(*m > 0)))
    }
}

proptest! {
    /// Customers whose segment changes: every segment's current MRR and customers, and
    /// its MRR and customers at the start of each window, equal the state of a model fed
    /// with the events up to then; nothing is ever negative.
    #[test]
    fn segment_values_are_exact_when_customers_change_segment(
        steps in prop::collection::vec(
            (0..40 * MINUTE, 0..3u8, prop::bool::ANY, billing_step().prop_map(|s| s.3)),
            1..150,
        ),
    ) {
        let mut agg = aggregates(10);
        let p = PartitionId::new(Family::Billing, 0);
        let mut now = T0;
        let mut model = LedgerModel::default();
        // The model after each applied event, with its time, in time order.
        let mut history: Vec<(i64, LedgerModel)> = Vec::new();
        for (advance, customer, ent, action) in &steps {
            now += advance;
            let segment = SEGMENT_TEST_SEGMENTS[usize::from(*ent)];
            let payload = segment_test_payload(action, CancelReason::Voluntary);
            let result = agg.record(p, &billing_event(now, SEGMENT_TEST_CUSTOMERS[usize::from(*customer)], segment, payload), now);
            let accepted = model.apply(*customer, segment, action);
            prop_assert_eq!(result.is_ok(), accepted);
            if accepted {
                history.push((now, model.clone()));
            }
        }
        let records = agg.snapshot(now);
        let empty = LedgerModel::default();
        for segment in SEGMENT_TEST_SEGMENTS {
            let suffix = format!("/segment={segment}");
            let Some(current) = records.iter().find(|r| r.key() == format!("mrr/current{suffix}")) else {
                // A segment no applied event named has no series.
                prop_assert!(history.iter().all(|(_, m)| m.customers.values().all(|s| *s != segment)));
                continue;
            };
            let (mrr, active) = model.segment(segment);
            prop_assert_eq!(current.value, Some(billing::major(mrr.into())));
            prop_assert_eq!(find(&records, &format!("customers_active/current{suffix}")).value, Some(active as f64));
            for spec in specs() {
                let start = spec.start_ms(now);
                let before = history.iter().rev().find(|(at, _)| *at < start).map_or(&empty, |(_, m)| m);
                let (mrr, active) = before.segment(segment);
                let revenue = find(&records, &format!("revenue_churn/{}{suffix}", spec.name));
                prop_assert_eq!(revenue.components[2], Some(billing::major(mrr.into())), "{} {}", spec.name, segment);
                let churn = find(&records, &format!("customer_churn/{}{suffix}", spec.name));
                prop_assert_eq!(churn.components[1], Some(active as f64), "{} {}", spec.name, segment);
            }
        }
    }
}

#[test]
fn gross_retention_leaves_out_customers_that_joined_inside_the_window_until_their_joining_expires()
{
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Billing, 0);
    let usd = |id: &'static str, price: i64| terms(id, price, "USD", crate::event::Interval::Month);
    let now = T0;
    let events = [
        // a pays 100 from two hours ago, b 50 from 50 minutes ago.
        (
            now - 2 * HOUR,
            "a",
            Payload::SubscriptionStarted(usd("sa", 10_000)),
        ),
        (
            now - 50 * MINUTE,
            "b",
            Payload::SubscriptionStarted(usd("sb", 5_000)),
        ),
        // a contracts by 20, then b churns, for a failed payment.
        (
            now - 40 * MINUTE,
            "a",
            Payload::SubscriptionChanged(usd("sa", 8_000)),
        ),
        (
            now - 30 * MINUTE,
            "b",
            Payload::SubscriptionCanceled {
                subscription_id: Cow::Borrowed("sb"),
                reason: CancelReason::Delinquent,
            },
        ),
    ];
    for (at, customer, payload) in events {
        agg.record(p, &billing_event(at, customer, "smb", payload), now)
            .unwrap();
    }
    let value = |records: &[KpiRecord], key: &str| find(records, key).value;
    let records = agg.snapshot(now);
    // 1h: only a was there at the start; b's churn is not a loss of the starting MRR.
    let grr = find(&records, "gross_revenue_retention/1h");
    assert_eq!(grr.components, vec![Some(100.0), Some(20.0)]);
    assert_eq!(grr.value, Some(0.8));
    assert_eq!(
        value(&records, "net_revenue_retention/1h"),
        Some(30.0 / 100.0)
    );
    assert_eq!(value(&records, "quick_ratio/1h"), Some(50.0 / 70.0));
    assert_eq!(value(&records, "mrr_churn_delinquent/1h"), Some(50.0));
    assert_eq!(value(&records, "mrr_churn_voluntary/1h"), Some(0.0));
    assert_eq!(value(&records, "customer_churn_delinquent/1h"), Some(1.0));
    assert_eq!(value(&records, "subscription_churn/1h"), Some(1.0));
    // 24h: nobody was there at its start.
    assert_eq!(value(&records, "gross_revenue_retention/24h"), None);
    // A quarter of an hour later, b's start has left the hour, its churn has not: both
    // were active at the start, and both losses count.
    let later = agg.snapshot(now + 15 * MINUTE);
    let grr = find(&later, "gross_revenue_retention/1h");
    assert_eq!(grr.components, vec![Some(150.0), Some(70.0)]);
    assert_eq!(grr.value, Some(80.0 / 150.0));
    assert_eq!(value(&later, "subscription_churn/1h"), Some(0.5));
}

/// One applied billing event as a brute-force model sees it: when, in which segment, what
/// it moved, and the whole ledger after it.
#[derive(Clone)]
struct RevenueFact {
    at: i64,
    /// The customer whose MRR the event changed.
    customer: u8,
    segment: &'static str,
    /// Movement kind in the order new, reactivation, expansion, contraction, churn.
    movement: Option<usize>,
    amount: i64,
    delinquent: bool,
    cancellation: bool,
    /// subscription -> (owner, micros, canceled); customer -> segment.
    subs: HashMap<u8, (u8, i64, bool)>,
    segments: HashMap<u8, &'static str>,
}

impl RevenueFact {
    /// `customer`'s MRR after the event.
    fn mrr_of(&self, customer: u8) -> i64 {
        self.subs
            .values()
            .filter(|(o, _, _)| *o == customer)
            .map(|(_, m, _)| m)
            .sum()
    }

    /// Whether `customer` was active in `segment` (`None`: in any) after the event.
    fn active_in(&self, customer: u8, segment: Option<&str>) -> bool {
        self.mrr_of(customer) > 0
            && segment.is_none_or(|s| self.segments.get(&customer) == Some(&s))
    }

    /// MRR of the customers of `segment` (`None`: every one).
    fn mrr_in(&self, segment: Option<&str>) -> i64 {
        let customers: std::collections::BTreeSet<u8> =
            self.subs.values().map(|(o, _, _)| *o).collect();
        customers
            .into_iter()
            .filter(|c| segment.is_none_or(|s| self.segments.get(c) == Some(&s)))
            .map(|c| self.mrr_of(c))
            .sum()
    }

    /// (active customers, active subscriptions) of `segment` (`None`: every one).
    fn active(&self, segment: Option<&str>) -> (i64, i64) {
        let mut per_customer: HashMap<u8, (i64, i64)> = HashMap::new();
        for (owner, micros, canceled) in self.subs.values() {
            let c = per_customer.entry(*owner).or_default();
            c.0 += micros;
            c.1 += i64::from(!canceled);
        }
        per_customer
            .iter()
            .filter(|(c, _)| segment.is_none_or(|s| self.segments.get(*c) == Some(&s)))
            .fold((0, 0), |(n, subs), (_, (m, k))| {
                (n + i64::from(*m > 0), subs + k)
            })
    }
}

proptest! {
    /// Quick ratio, subscription churn and churn by reason, overall and per segment, equal
    /// a recomputation over the raw events: customers that start inside a window then
    /// contract or churn, free subscriptions, customers that change segment, and windows
    /// whose oldest buckets have expired.
    #[test]
    fn revenue_kpis_equal_a_brute_force_recomputation(
        steps in prop::collection::vec(
            (
                0..40 * MINUTE,
                0..3u8,
                prop::bool::ANY,
                prop::bool::weighted(0.3),
                prop_oneof![
                    (0..4u8, prop_oneof![Just(0i64), Just(1_000), Just(2_500)])
                        .prop_map(|(s, p)| BillingAction::Start(s, p, false)),
                    (0..4u8, prop_oneof![Just(0i64), Just(1_000), Just(4_900)])
                        .prop_map(|(s, p)| BillingAction::Change(s, p)),
                    (0..4u8).prop_map(BillingAction::Cancel),
                    (0..4u8).prop_map(BillingAction::Renew),
                ],
            ),
            1..150,
        ),
    ) {
        let mut agg = aggregates(10);
        let p = PartitionId::new(Family::Billing, 0);
        let mut now = T0;
        let mut model = LedgerModel::default();
        let mut ever_paid = [false; 3];
        let mut facts: Vec<RevenueFact> = Vec::new();
        for (advance, customer, ent, delinquent, action) in &steps {
            now += advance;
            let segment = SEGMENT_TEST_SEGMENTS[usize::from(*ent)];
            let reason = if *delinquent { CancelReason::Delinquent } else { CancelReason::Voluntary };
            let payload = segment_test_payload(action, reason);
            let result = agg.record(p, &billing_event(now, SEGMENT_TEST_CUSTOMERS[usize::from(*customer)], segment, payload), now);
            let owner_mrr = |m: &LedgerModel, owner: u8| -> i64 {
                m.subs.values().filter(|(o, _, _)| *o == owner).map(|(_, v, _)| v).sum()
            };
            let sub = match *action {
                BillingAction::Start(s, ..) | BillingAction::Change(s, _) | BillingAction::Cancel(s) | BillingAction::Renew(s) => s,
            };
            let owner = model.subs.get(&sub).map_or(*customer, |(o, _, _)| *o);
            let before = owner_mrr(&model, owner);
            let accepted = model.apply(*customer, segment, action);
            prop_assert_eq!(result.is_ok(), accepted);
            if !accepted {
                continue;
            }
            let after = owner_mrr(&model, owner);
            let movement = movement_kind(before, after, &mut ever_paid[usize::from(owner)]);
            let cancellation = matches!(action, BillingAction::Cancel(_));
            facts.push(RevenueFact {
                at: now,
                customer: owner,
                segment,
                movement,
                amount: (after - before).abs(),
                delinquent: cancellation && *delinquent,
                cancellation,
                subs: model.subs.clone(),
                segments: model.customers.clone(),
            });
        }
        let records = agg.snapshot(now);
        let empty = RevenueFact {
            at: 0, customer: 0, segment: "", movement: None, amount: 0, delinquent: false, cancellation: false,
            subs: HashMap::new(), segments: HashMap::new(),
        };
        for segment in [None, Some("smb"), Some("ent")] {
            let suffix = segment.map_or(String::new(), |s| format!("/segment={s}"));
            if segment.is_some() && !records.iter().any(|r| r.key() == format!("mrr/current{suffix}")) {
                continue;
            }
            for spec in specs() {
                let start = spec.start_ms(now);
                let inside: Vec<&RevenueFact> = facts
                    .iter()
                    .filter(|f| f.at >= start && segment.is_none_or(|s| f.segment == s))
                    .collect();
                let sum = |kind: usize| -> i128 {
                    inside.iter().filter(|f| f.movement == Some(kind)).map(|f| i128::from(f.amount)).sum()
                };
                let key = |kpi: &str| format!("{kpi}/{}{suffix}", spec.name);
                let (gained, lost) = (sum(0) + sum(1) + sum(2), sum(3) + sum(4));
                prop_assert_eq!(
                    find(&records, &key("quick_ratio")).value,
                    (lost > 0).then(|| gained as f64 / lost as f64),
                    "{}", key("quick_ratio")
                );
                let at_start = facts.iter().rev().find(|f| f.at < start).unwrap_or(&empty);
                let (customers_at_start, subscriptions_at_start) = at_start.active(segment);
                // Gross retention: the losses in W of the customers active in the series
                // at its start, as long as they stayed active there without a break.
                let mrr_at_start = i128::from(at_start.mrr_in(segment));
                let mut lost: i128 = 0;
                let in_window: Vec<&RevenueFact> = facts.iter().filter(|f| f.at >= start).collect();
                for (i, f) in in_window.iter().enumerate() {
                    let counted = segment.is_none_or(|s| f.segment == s);
                    if !counted || !matches!(f.movement, Some(3 | 4)) {
                        continue;
                    }
                    let c = f.customer;
                    let stayed = at_start.active_in(c, segment)
                        && in_window[..i].iter().filter(|g| g.customer == c).all(|g| g.active_in(c, segment));
                    if stayed {
                        lost += i128::from(f.amount);
                    }
                }
                let grr = find(&records, &key("gross_revenue_retention"));
                prop_assert_eq!(
                    &grr.components,
                    &vec![Some(billing::major(mrr_at_start)), Some(billing::major(lost))],
                    "{}", key("gross_revenue_retention")
                );
                prop_assert_eq!(
                    grr.value,
                    (mrr_at_start > 0).then(|| (mrr_at_start - lost) as f64 / mrr_at_start as f64)
                );
                prop_assert!(grr.value.is_none_or(|v| v <= 1.0));
                let canceled = inside.iter().filter(|f| f.cancellation).count();
                let subscription_churn = find(&records, &key("subscription_churn"));
                prop_assert_eq!(
                    &subscription_churn.components[..2],
                    &[Some(canceled as f64), Some(subscriptions_at_start as f64)][..],
                    "{}", key("subscription_churn")
                );
                prop_assert_eq!(
                    subscription_churn.value,
                    (subscriptions_at_start > 0).then(|| canceled as f64 / subscriptions_at_start as f64)
                );
                for (reason, delinquent) in [("voluntary", false), ("delinquent", true)] {
                    let churns: Vec<_> = inside
                        .iter()
                        .filter(|f| f.movement == Some(4) && f.delinquent == delinquent)
                        .collect();
                    let amount: i128 = churns.iter().map(|f| i128::from(f.amount)).sum();
                    prop_assert_eq!(
                        find(&records, &key(&format!("mrr_churn_{reason}"))).value,
                        Some(billing::major(amount))
                    );
                    let ratio = find(&records, &key(&format!("customer_churn_{reason}")));
                    prop_assert_eq!(
                        &ratio.components,
                        &vec![Some(churns.len() as f64), Some(customers_at_start as f64)]
                    );
                    prop_assert_eq!(
                        ratio.value,
                        (customers_at_start > 0).then(|| churns.len() as f64 / customers_at_start as f64)
                    );
                }
            }
        }
    }
}

proptest! {
    /// Ticket counts, FCR and resolution times equal a recomputation over the raw events.
    #[test]
    fn ticket_values_equal_a_brute_force_recomputation(
        steps in prop::collection::vec(
            (0..20 * MINUTE, -5 * MINUTE..30 * HOUR, 0..3u8, 0..4u32, 0..2u32, 0..3 * DAY),
            1..150,
        ),
    ) {
        let mut agg = aggregates(10);
        let mut now = T0;
        // (occurred_at, kind, agent_replies, reopens, duration)
        let mut accepted: Vec<(i64, u8, u32, u32, u64)> = Vec::new();
        for (advance, age, kind, replies, reopens, duration) in &steps {
            now += advance;
            let at = now - age;
            let id = Cow::Borrowed("t");
            let payload = match kind {
                0 => Payload::TicketOpened { ticket_id: id, priority: None },
                1 => Payload::TicketReopened { ticket_id: id, priority: None },
                _ => Payload::TicketResolved {
                    ticket_id: id,
                    opened_at_ms: at - duration,
                    agent_replies: *replies,
                    reopens: *reopens,
                    priority: None,
                },
            };
            let outcome = agg.record(PartitionId::new(Family::Tickets, 0), &ticket_event(at, payload), now);
            if outcome == Ok(Outcome::Counted) {
                accepted.push((at, *kind, *replies, *reopens, *duration as u64));
            }
        }
        let records = agg.snapshot(now);
        for spec in specs() {
            let inside: Vec<_> = accepted.iter().filter(|a| a.0 >= spec.start_ms(now)).collect();
            let count = |k: u8| inside.iter().filter(|a| a.1 == k).count() as f64;
            let value = |name: &str| find(&records, &format!("{name}/{}", spec.name)).value;
            prop_assert_eq!(value("tickets_opened"), Some(count(0)));
            prop_assert_eq!(value("tickets_reopened"), Some(count(1)));
            prop_assert_eq!(value("tickets_resolved"), Some(count(2)));
            let resolved: Vec<_> = inside.iter().filter(|a| a.1 == 2).collect();
            let first = resolved.iter().filter(|a| a.2 <= 1 && a.3 == 0).count() as f64;
            let n = resolved.len() as f64;
            prop_assert_eq!(value("fcr"), (n > 0.0).then(|| first / n));
            let sum_ms: u64 = resolved.iter().map(|a| a.4).sum();
            prop_assert_eq!(
                value("resolution_time"),
                (n > 0.0).then(|| sum_ms as f64 / 1000.0 / n)
            );
            let rt = find(&records, &format!("resolution_time/{}", spec.name));
            for (i, bound) in crate::ticket::DURATION_BOUNDS_SECONDS.iter().enumerate() {
                let le = resolved.iter().filter(|a| a.4 <= bound * 1000).count() as f64;
                prop_assert_eq!(rt.components[5 + i], Some(le));
            }
        }
    }
}

fn ticket_payload(
    kind: u8,
    ticket: &'static str,
    at: i64,
    author: Author,
    public: bool,
) -> Payload<'static> {
    let ticket_id = Cow::Borrowed(ticket);
    match kind {
        0 => Payload::TicketOpened {
            ticket_id,
            priority: None,
        },
        1 => Payload::TicketReopened {
            ticket_id,
            priority: None,
        },
        2 => Payload::TicketReplied {
            ticket_id,
            author,
            public,
            priority: None,
        },
        _ => Payload::TicketResolved {
            ticket_id,
            opened_at_ms: at - HOUR,
            agent_replies: 1,
            reopens: 0,
            priority: None,
        },
    }
}

fn segment_event(at: i64, segment: &'static str, payload: Payload<'static>) -> Event<'static> {
    Event {
        dimensions: [Some(Cow::Borrowed(segment)), None, None, None],
        ..ticket_event(at, payload)
    }
}

#[test]
fn first_reply_time_counts_at_the_reply_in_the_replys_series() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Tickets, 0);
    let agent = |at, t| ticket_event(at, ticket_payload(2, t, at, Author::Agent, true));
    let opened = |at, t| ticket_event(at, ticket_payload(0, t, 0, Author::Agent, true));
    let events = [
        // a: opened 3h ago, replied 2h ago (1h), again 1 minute ago (not a first reply).
        opened(T0 - 3 * HOUR, "a"),
        agent(T0 - 2 * HOUR, "a"),
        agent(T0 - MINUTE, "a"),
        // b: a customer and a private reply, then the agent's after 30 minutes.
        opened(T0 - 40 * MINUTE, "b"),
        ticket_event(
            T0 - 35 * MINUTE,
            ticket_payload(2, "b", 0, Author::Customer, true),
        ),
        ticket_event(
            T0 - 30 * MINUTE,
            ticket_payload(2, "b", 0, Author::Agent, false),
        ),
        segment_event(
            T0 - 10 * MINUTE,
            "ent",
            ticket_payload(2, "b", 0, Author::Agent, true),
        ),
        // c: the reply arrives before the opening; counted at the reply's time, 1h ago,
        // in the reply's series.
        segment_event(
            T0 - HOUR + MINUTE,
            "mid",
            ticket_payload(2, "c", 0, Author::Agent, true),
        ),
        opened(T0 - HOUR - 4 * MINUTE, "c"),
        // d: never replied; e: reopened after its first reply, replied again.
        opened(T0 - 5 * HOUR, "d"),
        opened(T0 - 5 * HOUR, "e"),
        agent(T0 - 4 * HOUR, "e"),
        ticket_event(
            T0 - 3 * HOUR,
            ticket_payload(3, "e", T0 - 3 * HOUR, Author::Agent, true),
        ),
        ticket_event(
            T0 - 2 * HOUR,
            ticket_payload(1, "e", 0, Author::Agent, true),
        ),
        agent(T0 - 30 * MINUTE, "e"),
    ];
    for e in &events {
        assert_eq!(agg.record(p, e, T0), Ok(Outcome::Counted), "{e:?}");
    }
    let records = agg.snapshot(T0);
    let frt = |key: &str| find(&records, &format!("first_reply_time/{key}"));
    // 1h: b (30 min), c (5 min); 24h: also a (1h) and e (1h).
    assert_eq!(frt("1h").components[..2], [Some(2.0), Some(35.0 * 60.0)]);
    assert_eq!(frt("1h").value, Some(35.0 * 60.0 / 2.0));
    assert_eq!(frt("24h").samples, 4);
    assert_eq!(
        frt("24h").value,
        Some((30.0 + 5.0 + 60.0 + 60.0) * 60.0 / 4.0)
    );
    assert_eq!(
        frt("24h/segment=ent").components[..2],
        [Some(1.0), Some(1800.0)]
    );
    assert_eq!(
        frt("24h/segment=mid").components[..2],
        [Some(1.0), Some(300.0)]
    );
    assert_eq!(frt("24h/segment=smb").samples, 2);
    // le_300 holds c, le_1800 b too, le_3600 all four.
    assert_eq!(
        frt("24h").components[5..9],
        [Some(1.0), Some(1.0), Some(2.0), Some(4.0)]
    );
    let p50 = frt("24h").components[2].unwrap();
    assert!((p50 - 1800.0).abs() / 1800.0 <= 0.01, "{p50}");
    assert_eq!(
        agg.open_ticket(p, "d").map(|d| d.first_reply),
        Some(crate::open_tickets::FirstReply::Awaited)
    );
    assert!(agg.open_ticket(p, "e").is_some_and(|e| e.reopened));
}

#[test]
fn a_late_ticket_event_counts_in_no_window_but_opens_its_ticket() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Tickets, 0);
    let opened = segment_event(
        T0 - 2 * DAY,
        "new",
        ticket_payload(0, "a", 0, Author::Agent, true),
    );
    assert_eq!(agg.record(p, &opened, T0), Ok(Outcome::Late));
    let reply = ticket_event(T0 - MINUTE, ticket_payload(2, "a", 0, Author::Agent, true));
    assert_eq!(agg.record(p, &reply, T0), Ok(Outcome::Counted));
    let records = agg.snapshot(T0);
    let frt = find(&records, "first_reply_time/24h");
    assert_eq!(
        frt.components[..2],
        [Some(1.0), Some((2 * DAY - MINUTE) as f64 / 1000.0)]
    );
    assert_eq!(find(&records, "tickets_opened/24h").value, Some(0.0));
    // The late event's dimension value took no place under the cap, and made no series.
    assert!(
        records
            .iter()
            .all(|r| r.dimension != Some(("segment".into(), "new".into())))
    );
}

#[test]
fn a_ticket_open_past_the_maximum_age_is_abandoned() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Tickets, 0);
    let at = T0 - 100 * DAY;
    let opened = ticket_event(at, ticket_payload(0, "a", 0, Author::Agent, true));
    assert_eq!(agg.record(p, &opened, at), Ok(Outcome::Counted));
    assert_eq!(agg.take_abandoned_tickets(), 0);
    let other = ticket_event(
        at + 90 * DAY + 1,
        ticket_payload(0, "b", 0, Author::Agent, true),
    );
    agg.record(p, &other, at + 90 * DAY + 1).unwrap();
    let reply = ticket_event(
        at + 90 * DAY + 2,
        ticket_payload(2, "a", 0, Author::Agent, true),
    );
    agg.record(p, &reply, at + 90 * DAY + 2).unwrap();
    assert_eq!(agg.take_abandoned_tickets(), 1);
    assert_eq!(agg.take_abandoned_tickets(), 0);
    let records = agg.snapshot(at + 90 * DAY + 2);
    assert_eq!(find(&records, "first_reply_time/24h").samples, 0);
}

#[test]
fn tickets_replay_far_enough_for_every_open_ticket() {
    let settings = |max_open_age_ms| StateSettings {
        windows: specs(),
        lead_ms: 5 * MINUTE,
        dimensions: Dimensions::new(&[], 1),
        rates: Rates::new("USD", &Default::default()),
        clv_window: 1,
        dedup_horizon_ms: 0,
        calendar: None,
        max_open_age_ms,
        sla: SlaTargets::default(),
        trial_grace_ms: 30 * MINUTE,
        signals: SignalSettings::default(),
    };
    let rolling = DAY + 1_440_000 + 5 * MINUTE;
    let long = settings(90 * DAY);
    assert_eq!(long.tickets_replay_span_ms(), 90 * DAY + 5 * MINUTE);
    let horizon = long.replay_horizon();
    assert_eq!(
        horizon.since_ms(Family::Tickets, T0),
        T0 - 90 * DAY - 5 * MINUTE
    );
    assert_eq!(horizon.since_ms(Family::Surveys, T0), T0 - rolling);
    // A maximum age within the windows: the windows' replay.
    let short = settings(HOUR);
    assert_eq!(
        short.replay_horizon().since_ms(Family::Tickets, T0),
        T0 - rolling
    );
}

/// A ticket event as the brute force reads it: `kind` 0 opened, 1 reopened, 2 replied,
/// 3 resolved; `counts` for a public agent reply.
#[derive(Debug, Clone, Copy)]
pub(super) struct TicketRecord {
    pub(super) at: i64,
    pub(super) kind: u8,
    pub(super) ticket: usize,
    pub(super) counts: bool,
}

/// The reply waiting for the opening `events[i]` of a ticket, if any: the earliest public
/// agent reply of the ticket since `spell_start` not older than an hour of the partition's
/// time when it came, replaced by a later one once it has waited too long.
fn waiting_reply(events: &[TicketRecord], i: usize, spell_start: usize) -> Option<i64> {
    let mut newest = i64::MIN;
    let mut waiting: Option<i64> = None;
    for (j, x) in events[..=i].iter().enumerate() {
        newest = newest.max(x.at);
        if waiting.is_some_and(|w| w < newest - HOUR) {
            waiting = None;
        }
        let candidate = j >= spell_start && j < i && x.ticket == events[i].ticket;
        if candidate && x.kind == 2 && x.counts && x.at >= newest - HOUR && waiting.is_none() {
            waiting = Some(x.at);
        }
    }
    waiting
}

/// Every first reply (its time, first reply time and ticket) of `events`, in delivery
/// order, each decided from the events before it. No ticket reaches the maximum open age
/// here.
pub(super) fn first_replies(events: &[TicketRecord]) -> Vec<(i64, u64, usize)> {
    let mut firsts = Vec::new();
    for (i, e) in events.iter().enumerate() {
        // The ticket's spell: its events since its last resolution.
        let spell_start = events[..i]
            .iter()
            .rposition(|x| x.ticket == e.ticket && x.kind == 3)
            .map_or(0, |r| r + 1);
        let spell: Vec<usize> = (spell_start..i)
            .filter(|&j| events[j].ticket == e.ticket)
            .collect();
        let start = spell.iter().copied().find(|&j| events[j].kind <= 1);
        match (e.kind, start) {
            // A public agent reply while open, the spell begun by an opening: the first
            // unless the opening took a waiting reply or a reply came since.
            (2, Some(s)) if e.counts && events[s].kind == 0 => {
                let since = spell.iter().filter(|&&j| j > s).map(|&j| events[j]);
                let replied = since.clone().any(|x| x.kind == 2 && x.counts)
                    || waiting_reply(events, s, spell_start).is_some();
                if !replied {
                    let opened_at = since
                        .filter(|x| x.kind == 0)
                        .map(|x| x.at)
                        .fold(events[s].at, i64::min);
                    let duration = u64::try_from(e.at - opened_at).unwrap_or(0);
                    firsts.push((e.at, duration, e.ticket));
                }
            }
            // An opening that begins a spell takes the reply waiting for it.
            (0, None) => {
                if let Some(w) = waiting_reply(events, i, spell_start) {
                    firsts.push((w, u64::try_from(w - e.at).unwrap_or(0), e.ticket));
                }
            }
            _ => {}
        }
    }
    firsts
}

proptest! {
    /// First reply times equal a recomputation over the raw events: each ticket's first
    /// public agent reply after its opening (or waiting before it), never after a reopen
    /// of a resolved ticket, counted at the reply in every window that holds it.
    #[test]
    fn first_reply_time_equals_a_brute_force_recomputation(
        steps in prop::collection::vec(
            (
                0..20 * MINUTE,
                prop_oneof![4 => -5 * MINUTE..2 * HOUR, 1 => 20 * HOUR..30 * HOUR],
                prop_oneof![2 => Just(0u8), 1 => Just(1u8), 4 => Just(2u8), 2 => Just(3u8)],
                0..5usize,
                prop_oneof![3 => Just(Author::Agent), 1 => Just(Author::Customer)],
                prop::bool::weighted(0.8),
            ),
            1..150,
        ),
    ) {
        const TICKETS: [&str; 5] = ["a", "b", "c", "d", "e"];
        let mut agg = aggregates(10);
        let p = PartitionId::new(Family::Tickets, 0);
        let mut now = T0;
        let mut events = Vec::new();
        for (advance, age, kind, ticket, author, public) in &steps {
            now += advance;
            let at = now - age;
            let event = ticket_event(at, ticket_payload(*kind, TICKETS[*ticket], at, *author, *public));
            prop_assert!(agg.record(p, &event, now).is_ok());
            events.push(TicketRecord { at, kind: *kind, ticket: *ticket, counts: *author == Author::Agent && *public });
        }
        let firsts = first_replies(&events);
        let records = agg.snapshot(now);
        for spec in specs() {
            let inside: Vec<_> = firsts.iter().filter(|f| f.0 >= spec.start_ms(now)).collect();
            let frt = find(&records, &format!("first_reply_time/{}", spec.name));
            let sum_ms: u64 = inside.iter().map(|f| f.1).sum();
            prop_assert_eq!(frt.components[0], Some(inside.len() as f64), "{}", spec.name);
            prop_assert_eq!(frt.components[1], Some(sum_ms as f64 / 1000.0), "{}", spec.name);
            for (i, bound) in crate::ticket::DURATION_BOUNDS_SECONDS.iter().enumerate() {
                let le = inside.iter().filter(|f| f.1 <= bound * 1000).count() as f64;
                prop_assert_eq!(frt.components[5 + i], Some(le));
            }
        }
    }
}

/// Where a message's Kafka timestamp lies against the service clock when it arrives.
fn kafka_timestamp_offset() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        (-2 * HOUR..=0).prop_map(Some),
        (1..=5 * MINUTE).prop_map(Some),
        // A producer whose clock runs ahead, up to the hour a Kafka 4 broker accepts.
        (5 * MINUTE..3 * HOUR).prop_map(Some),
        Just(Some(100 * 365 * DAY)),
    ]
}

/// Where `occurred_at` lies against the message's timestamp (or the clock without one).
fn occurred_offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        -40 * DAY..-30 * HOUR,
        -2 * HOUR..=0,
        0..=5 * MINUTE,
        5 * MINUTE + 1..10 * MINUTE,
        HOUR..100 * 365 * DAY,
    ]
}

/// One message of a stream with hostile clocks: a survey answer, or the start of a
/// subscription of its own customer.
#[derive(Debug, Clone)]
struct TimedMessage {
    advance_ms: i64,
    kafka_offset_ms: Option<i64>,
    occurred_offset_ms: i64,
    billing: bool,
    score: u8,
}

fn timed_message() -> impl Strategy<Value = TimedMessage> {
    (
        0..10 * MINUTE,
        kafka_timestamp_offset(),
        occurred_offset(),
        any::<bool>(),
        0u8..=10,
    )
        .prop_map(
            |(advance_ms, kafka_offset_ms, occurred_offset_ms, billing, score)| TimedMessage {
                advance_ms,
                kafka_offset_ms,
                occurred_offset_ms,
                billing,
                score,
            },
        )
}

/// The message's bytes, its Kafka timestamp and its partition.
fn timed_bytes(i: usize, m: &TimedMessage, now: i64) -> (Vec<u8>, Option<i64>, PartitionId) {
    let kafka = m.kafka_offset_ms.map(|o| now + o);
    let at = kpi::rfc3339(kafka.unwrap_or(now) + m.occurred_offset_ms);
    let text = if m.billing {
        format!(
            r#"{{"event_id":"e{i}","type":"subscription.started","occurred_at":"{at}","customer_id":"c{i}","subscription_id":"s{i}","plan":"p","price":{},"currency":"USD","interval":"month"}}"#,
            100 + i
        )
    } else {
        format!(
            r#"{{"event_id":"e{i}","type":"survey.responded","occurred_at":"{at}","customer_id":"c","survey":"nps","score":{}}}"#,
            m.score
        )
    };
    let family = if m.billing {
        Family::Billing
    } else {
        Family::Surveys
    };
    (text.into_bytes(), kafka, PartitionId::new(family, 0))
}

/// Reads `messages` as the service does, each at the clock `now_of(i)`; returns which
/// were accepted (applied, even if late) and the state.
fn read_with_clock(
    messages: &[(Vec<u8>, Option<i64>, PartitionId)],
    now_of: impl Fn(usize) -> i64,
) -> (Vec<Option<i64>>, Aggregates) {
    let limits = crate::event::Limits {
        max_event_bytes: 1 << 20,
        max_future_skew_ms: 5 * MINUTE,
    };
    let mut agg = aggregates(10);
    let accepted = messages
        .iter()
        .enumerate()
        .map(|(i, (bytes, kafka, partition))| {
            let now = now_of(i);
            let reference = crate::event::reference_time(*kafka, now);
            let event = crate::event::parse(bytes, partition.family, reference, &limits).ok()?;
            agg.record(*partition, &event, now)
                .ok()
                .map(|_| event.occurred_at_ms)
        })
        .collect();
    (accepted, agg)
}

/// The values of the accepted messages, recomputed from scratch at `now`.
fn assert_values_equal_brute_force(
    agg: &Aggregates,
    messages: &[TimedMessage],
    accepted: &[Option<i64>],
    now: i64,
) -> Result<(), TestCaseError> {
    let records = agg.snapshot(now);
    let value = |key: &str| {
        records
            .iter()
            .find(|r| r.key() == key)
            .and_then(|r| r.value)
    };
    let price = |i: usize| (100 + i) as i64 * 10_000;
    let mrr: i64 = (0..messages.len())
        .filter(|i| messages[*i].billing && accepted[*i].is_some())
        .map(price)
        .sum();
    // Money records exist (at 0) once any partition has state.
    prop_assert_eq!(
        value("mrr/current").unwrap_or(0.0),
        billing::major(mrr.into())
    );
    for spec in specs() {
        let start = spec.start_ms(now);
        let inside = |i: usize| accepted[i].is_some_and(|at| at >= start);
        let mut expected = SurveyTally::default();
        let mut mrr_new = 0i64;
        for (i, m) in messages.iter().enumerate().filter(|(i, _)| inside(*i)) {
            if m.billing {
                mrr_new += price(i);
            } else {
                expected.record(Survey::Nps, m.score, false);
            }
        }
        let nps = records
            .iter()
            .find(|r| r.key() == format!("nps/{}", spec.name));
        prop_assert_eq!(
            nps.and_then(|r| r.value),
            expected.nps().value(),
            "{}",
            spec.name
        );
        prop_assert_eq!(
            value(&format!("mrr_new/{}", spec.name)).unwrap_or(0.0),
            billing::major(mrr_new.into())
        );
    }
    Ok(())
}

proptest! {
    /// Streams whose `occurred_at` and Kafka timestamps lie anywhere (past, within the
    /// skew, far ahead, from producers whose clocks run ahead): the values equal a
    /// recomputation over the accepted events, live and after a replay. Live and replay
    /// accept the same events from every producer whose timestamp was not ahead of the
    /// service clock; for the others the replay, whose clock has passed their timestamp,
    /// judges against the timestamp and may accept what the live run refused, never the
    /// reverse (docs/events.md, "Common fields").
    #[test]
    fn values_equal_a_recomputation_whatever_the_clocks_live_and_after_a_replay(
        messages in prop::collection::vec(timed_message(), 1..150),
        replay_delay in 0..2 * HOUR,
    ) {
        let mut clock = Vec::with_capacity(messages.len());
        let mut now = T0;
        for m in &messages {
            now += m.advance_ms;
            clock.push(now);
        }
        let replay_now = now + replay_delay;
        let bytes: Vec<_> = messages.iter().enumerate().map(|(i, m)| timed_bytes(i, m, clock[i])).collect();
        let (live, live_state) = read_with_clock(&bytes, |i| clock[i]);
        let (replay, replay_state) = read_with_clock(&bytes, |_| replay_now);
        for (i, m) in messages.iter().enumerate() {
            if let Some(at) = live[i] {
                prop_assert!(at <= clock[i] + 5 * MINUTE, "accepted {} ms ahead", at - clock[i]);
                prop_assert!(replay[i].is_some(), "message {} accepted live only", i);
            }
            let correct_producer = m.kafka_offset_ms.is_some_and(|o| o <= 0);
            if correct_producer {
                prop_assert_eq!(live[i], replay[i], "message {}", i);
            }
        }
        assert_values_equal_brute_force(&live_state, &messages, &live, replay_now)?;
        assert_values_equal_brute_force(&replay_state, &messages, &replay, replay_now)?;
    }
}

#[test]
fn an_event_far_ahead_of_the_clock_erases_no_answer() {
    // The attack: a full hour of promoters, then one message stamped 59.5 minutes ahead
    // whose occurred_at is 64 minutes ahead, which once took the slot of ten answers.
    let limits = crate::event::Limits {
        max_event_bytes: 1 << 20,
        max_future_skew_ms: 5 * MINUTE,
    };
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Surveys, 0);
    for m in 0..60 {
        agg.record(
            p,
            &survey_event(T0 - m * MINUTE, Survey::Nps, 10, Some("smb")),
            T0,
        )
        .unwrap();
    }
    let before = agg.snapshot(T0);
    let at = kpi::rfc3339(T0 + 64 * MINUTE);
    let text = format!(
        r#"{{"event_id":"x","type":"survey.responded","occurred_at":"{at}","customer_id":"c","segment":"smb","survey":"nps","score":0}}"#
    );
    let reference = crate::event::reference_time(Some(T0 + 59 * MINUTE + 30_000), T0);
    let parsed = crate::event::parse(text.as_bytes(), Family::Surveys, reference, &limits);
    assert_eq!(parsed.unwrap_err().reason, Reason::FutureTimestamp);
    // Even with the check skipped, the state refuses it.
    let event = survey_event(T0 + 64 * MINUTE, Survey::Nps, 0, Some("smb"));
    assert_eq!(
        agg.record(p, &event, T0).unwrap_err().reason,
        Reason::FutureTimestamp
    );
    let after = agg.snapshot(T0);
    for key in ["nps/1h", "nps/1h/segment=smb", "nps/24h"] {
        assert_eq!(find(&after, key).value, Some(100.0), "{key}");
        assert_eq!(find(&after, key).samples, 60, "{key}");
        assert_eq!(find(&before, key).samples, 60, "{key}");
    }
}
