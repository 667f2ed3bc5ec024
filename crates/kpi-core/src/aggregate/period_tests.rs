//! The calendar windows of the windowed state against a recomputation that takes each
//! event's local date from the time-zone library directly.

use std::borrow::Cow;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::calendar::{CalendarSettings, PeriodKind, WeekStart, time_zone};
use crate::event::{CancelReason, Survey};
use crate::kpi::KpiRecord;
use crate::period_components::{CHECKPOINT_INTERVAL_MS, PeriodComponents};
use crate::survey::SurveyTally;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const LEAD: i64 = 5 * MINUTE;
const GRACE: i64 = HOUR;

fn aggregates(zone: &str, week_start: WeekStart, periods: &[PeriodKind]) -> Aggregates {
    let calendar = Calendar::new(CalendarSettings {
        zone: time_zone(zone).unwrap(),
        week_start,
        periods: periods.to_vec(),
        grace_ms: GRACE,
    })
    .unwrap();
    Aggregates::new(StateSettings {
        windows: vec![WindowSpec::new(
            "1h",
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )],
        lead_ms: LEAD,
        dimensions: Dimensions::new(&[], 1),
        rates: Rates::new("USD", &Default::default()),
        clv_window: 0,
        dedup_horizon_ms: 0,
        calendar: Some(calendar),
        max_open_age_ms: 90 * 86_400_000,
        sla: SlaTargets::default(),
        trial_grace_ms: 3 * 86_400_000,
        signals: SignalSettings::default(),
    })
}

fn nps_answer(at: i64, score: u8, reference_ms: i64) -> Event<'static> {
    Event {
        event_id: Cow::Borrowed("e"),
        occurred_at_ms: at,
        customer_id: Cow::Borrowed("c"),
        dimensions: [None, None, None, None],
        payload: Payload::SurveyResponded {
            survey: Survey::Nps,
            score,
            comment: None,
        },
        reference_ms,
    }
}

fn local_date(zone: &TimeZone, at_ms: i64) -> Date {
    Timestamp::from_millisecond(at_ms)
        .unwrap()
        .to_zoned(zone.clone())
        .date()
}

/// The first instant of a local date.
fn start_of(zone: &TimeZone, date: Date) -> i64 {
    date.to_zoned(zone.clone())
        .unwrap()
        .start_of_day()
        .unwrap()
        .timestamp()
        .as_millisecond()
}

/// The first local date of the period of `kind` holding `date`.
fn period_start(kind: PeriodKind, week_start: WeekStart, date: Date) -> Date {
    match kind {
        PeriodKind::Day => date,
        PeriodKind::Week => {
            let first = match week_start {
                WeekStart::Monday => Weekday::Monday,
                WeekStart::Sunday => Weekday::Sunday,
            };
            let back = (date.weekday().to_monday_zero_offset() - first.to_monday_zero_offset())
                .rem_euclid(7);
            date.checked_sub(jiff::Span::new().days(back)).unwrap()
        }
        PeriodKind::Month => date.first_of_month(),
        PeriodKind::Quarter => Date::new(date.year(), (date.month() - 1) / 3 * 3 + 1, 1).unwrap(),
        PeriodKind::Year => date.first_of_year(),
    }
}

/// The first local date of the period before the one starting on `start`.
fn previous_start(kind: PeriodKind, week_start: WeekStart, start: Date) -> Date {
    let before = start.yesterday().unwrap();
    period_start(kind, week_start, before)
}

/// The first local date of the period after the one starting on `start`.
fn next_start(kind: PeriodKind, start: Date) -> Date {
    let length = match kind {
        PeriodKind::Day => jiff::Span::new().days(1),
        PeriodKind::Week => jiff::Span::new().days(7),
        PeriodKind::Month => jiff::Span::new().months(1),
        PeriodKind::Quarter => jiff::Span::new().months(3),
        PeriodKind::Year => jiff::Span::new().years(1),
    };
    start.checked_add(length).unwrap()
}

fn find<'a>(records: &'a [KpiRecord], key: &str) -> &'a KpiRecord {
    records
        .iter()
        .find(|r| r.key() == key)
        .unwrap_or_else(|| panic!("no record {key}"))
}

/// Instants near boundaries that time zones make hard: DST changes both ways in Rome and New
/// York, a month end that is not a UTC one, a leap February, a year end.
const STARTS: [i64; 6] = [
    1_774_742_400_000, // 2026-03-29T00:00Z, Rome springs forward at 01:00Z
    1_792_886_400_000, // 2026-10-25T00:00Z, Rome falls back at 01:00Z
    1_793_509_200_000, // 2026-11-01T05:00Z, New York falls back at 06:00Z
    1_793_487_600_000, // 2026-10-31T23:00Z, midnight of November 1st in Rome
    1_830_276_000_000, // 2027-12-31T18:00Z
    1_835_395_200_000, // 2028-02-29T00:00Z
];

const ZONES: [&str; 5] = [
    "Europe/Rome",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "UTC",
];

#[derive(Debug, Clone)]
struct Answer {
    advance_ms: i64,
    /// How long before the clock it occurred (negative: ahead, within the lead).
    age_ms: i64,
    /// How long after it occurred its message was written.
    delay_ms: i64,
    score: u8,
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop_oneof![Just(0), 0..2 * HOUR, 0..3 * DAY],
        prop_oneof![-LEAD..0, 0..3 * HOUR, 0..40 * DAY],
        prop_oneof![Just(0), 0..2 * GRACE, 0..3 * DAY],
        0..=10u8,
    )
        .prop_map(|(advance_ms, age_ms, delay_ms, score)| Answer {
            advance_ms,
            age_ms,
            delay_ms,
            score,
        })
}

proptest! {
    /// Every calendar window's NPS, and its boundaries, equal a recomputation from each
    /// event's local date, whatever the zone, the week start, the lateness of the messages
    /// and the instant the values are taken at.
    #[test]
    fn calendar_windows_equal_a_recomputation_from_local_dates(
        zone in prop::sample::select(ZONES.to_vec()),
        start in prop::sample::select(STARTS.to_vec()),
        sunday in any::<bool>(),
        answers in prop::collection::vec(answer(), 1..120),
        final_advance in prop_oneof![Just(0), 0..40 * DAY],
    ) {
        let week_start = if sunday { WeekStart::Sunday } else { WeekStart::Monday };
        let tz = time_zone(zone).unwrap();
        let mut agg = aggregates(zone, week_start, &PeriodKind::ALL);
        let partition = PartitionId::new(Family::Surveys, 0);
        let mut now = start;
        // (occurred_at, reference, score) of every recorded answer.
        let mut recorded: Vec<(i64, i64, u8)> = Vec::new();
        for a in &answers {
            now += a.advance_ms;
            let at = now - a.age_ms;
            let reference = (at + a.delay_ms).min(now);
            let outcome = agg.record(partition, &nps_answer(at, a.score, reference), now);
            prop_assert!(outcome.is_ok(), "{outcome:?}");
            recorded.push((at, reference, a.score));
        }
        now += final_advance;
        let records = agg.snapshot(now);
        let today = local_date(&tz, now);
        for kind in PeriodKind::ALL {
            let current = period_start(kind, week_start, today);
            let previous = previous_start(kind, week_start, current);
            for (name, first, end_ms) in [
                (format!("{}_to_date", kind.name()), current, now),
                (format!("previous_{}", kind.name()), previous, start_of(&tz, current)),
            ] {
                let mut expected = SurveyTally::default();
                for (at, reference, score) in &recorded {
                    let date = local_date(&tz, *at);
                    let own = period_start(kind, week_start, date);
                    let on_time = *reference <= start_of(&tz, next_start(kind, own)) + GRACE;
                    if own == first && on_time {
                        expected.record(Survey::Nps, *score, false);
                    }
                }
                let nps = find(&records, &format!("nps/{name}"));
                prop_assert_eq!(nps.value, expected.nps().value(), "{}", name);
                prop_assert_eq!(nps.samples, expected.nps().responses(), "{}", name);
                prop_assert_eq!(nps.window_start_ms, start_of(&tz, first), "{}", name);
                prop_assert_eq!(nps.window_end_ms, end_ms, "{}", name);
            }
        }
    }
}

fn billing(at: i64, customer: &'static str, payload: Payload<'static>) -> Event<'static> {
    Event {
        event_id: Cow::Borrowed("b"),
        occurred_at_ms: at,
        customer_id: Cow::Borrowed(customer),
        dimensions: [None, None, None, None],
        payload,
        reference_ms: at,
    }
}

fn monthly(id: &'static str, price: i64) -> Payload<'static> {
    Payload::SubscriptionStarted(crate::event::SubscriptionTerms {
        subscription_id: Cow::Borrowed(id),
        plan: Cow::Borrowed("pro"),
        price,
        quantity: 1,
        currency: Cow::Borrowed("USD"),
        interval: crate::event::Interval::Month,
        interval_count: 1,
    })
}

fn instant(text: &str) -> i64 {
    text.parse::<Timestamp>().unwrap().as_millisecond()
}

/// The previous month's revenue ratios start from the MRR at its local start: the current
/// MRR less the movements of that month and of the month so far, as ChartMogul computes
/// monthly churn.
#[test]
fn the_previous_month_starts_from_the_mrr_at_its_local_start() {
    let mut agg = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
    let p = PartitionId::new(Family::Billing, 0);
    let now = instant("2026-11-10T12:00:00Z");
    let changed = |price| {
        let Payload::SubscriptionStarted(terms) = monthly("s1", price) else {
            unreachable!()
        };
        Payload::SubscriptionChanged(terms)
    };
    let events = [
        // September: only the current MRR (no window holds September).
        (
            billing(instant("2026-09-10T10:00:00Z"), "c1", monthly("s1", 10_000)),
            Outcome::Late,
        ),
        (
            billing(instant("2026-09-12T10:00:00Z"), "c2", monthly("s2", 20_000)),
            Outcome::Late,
        ),
        // October in Rome: expansion 50, churn 200.
        (
            billing(instant("2026-10-05T10:00:00Z"), "c1", changed(15_000)),
            Outcome::Counted,
        ),
        (
            billing(
                instant("2026-10-20T10:00:00Z"),
                "c2",
                Payload::SubscriptionCanceled {
                    subscription_id: Cow::Borrowed("s2"),
                    reason: CancelReason::Voluntary,
                },
            ),
            Outcome::Counted,
        ),
        // 00:30 on November 1st in Rome, still October in UTC: new 400 in November.
        (
            billing(instant("2026-10-31T23:30:00Z"), "c3", monthly("s3", 40_000)),
            Outcome::Counted,
        ),
    ];
    for (event, outcome) in &events {
        assert_eq!(agg.record(p, event, now), Ok(*outcome));
    }
    let r = agg.snapshot(now);
    let v = |key: &str| find(&r, key).value;
    assert_eq!(v("mrr/current"), Some(550.0));
    assert_eq!(v("mrr_expansion/previous_month"), Some(50.0));
    assert_eq!(v("mrr_churn/previous_month"), Some(200.0));
    assert_eq!(v("mrr_new/previous_month"), Some(0.0));
    let mrr_at_start = |window: &str| find(&r, &format!("revenue_churn/{window}")).components[2];
    assert_eq!(mrr_at_start("previous_month"), Some(300.0));
    assert_eq!(v("customer_churn/previous_month"), Some(0.5));
    assert_eq!(v("revenue_churn/previous_month"), Some(200.0 / 300.0));
    assert_eq!(v("net_revenue_retention/previous_month"), Some(0.5));
    assert_eq!(v("mrr_new/month_to_date"), Some(400.0));
    assert_eq!(mrr_at_start("month_to_date"), Some(150.0));
    assert_eq!(v("customer_churn/month_to_date"), Some(0.0));
    assert_eq!(v("net_revenue_retention/month_to_date"), Some(1.0));
    let previous = find(&r, "mrr_churn/previous_month");
    assert_eq!(previous.window_start_ms, instant("2026-09-30T22:00:00Z"));
    assert_eq!(previous.window_end_ms, instant("2026-10-31T23:00:00Z"));
    let to_date = find(&r, "mrr_new/month_to_date");
    assert_eq!(to_date.window_start_ms, instant("2026-10-31T23:00:00Z"));
    assert_eq!(to_date.window_end_ms, now);
}

/// In a calendar period, gross revenue retention leaves out the losses of a customer that
/// became active in the same period; the next period counts them against its starting MRR.
#[test]
fn gross_retention_of_a_month_leaves_out_the_customers_it_acquired() {
    let mut agg = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
    let p = PartitionId::new(Family::Billing, 0);
    let now = instant("2026-11-10T12:00:00Z");
    let changed = |id, price| {
        let Payload::SubscriptionStarted(terms) = monthly(id, price) else {
            unreachable!()
        };
        Payload::SubscriptionChanged(terms)
    };
    let canceled = |id, reason| Payload::SubscriptionCanceled {
        subscription_id: Cow::Borrowed(id),
        reason,
    };
    let events = [
        // September: c1 pays 100, c2 200.
        billing(instant("2026-09-10T10:00:00Z"), "c1", monthly("s1", 10_000)),
        billing(instant("2026-09-12T10:00:00Z"), "c2", monthly("s2", 20_000)),
        // October: c4 starts at 80 and contracts to 30; c2 churns (delinquent), c1
        // contracts by 40.
        billing(instant("2026-10-05T10:00:00Z"), "c4", monthly("s4", 8_000)),
        billing(instant("2026-10-15T10:00:00Z"), "c4", changed("s4", 3_000)),
        billing(
            instant("2026-10-20T10:00:00Z"),
            "c2",
            canceled("s2", CancelReason::Delinquent),
        ),
        billing(instant("2026-10-25T10:00:00Z"), "c1", changed("s1", 6_000)),
        // November: c4, acquired in October, churns.
        billing(
            instant("2026-11-03T10:00:00Z"),
            "c4",
            canceled("s4", CancelReason::Voluntary),
        ),
    ];
    for event in &events {
        agg.record(p, event, now).unwrap();
    }
    let r = agg.snapshot(now);
    let grr = |window: &str| find(&r, &format!("gross_revenue_retention/{window}"));
    // October: 300 at its start, of which c2's 200 and c1's 40 lost; c4's 50 is not.
    assert_eq!(
        grr("previous_month").components,
        vec![Some(300.0), Some(240.0)]
    );
    assert_eq!(grr("previous_month").value, Some(60.0 / 300.0));
    let v = |key: &str| find(&r, key).value;
    assert_eq!(v("mrr_contraction/previous_month"), Some(90.0));
    assert_eq!(v("mrr_churn_delinquent/previous_month"), Some(200.0));
    assert_eq!(v("customer_churn_delinquent/previous_month"), Some(0.5));
    assert_eq!(v("quick_ratio/previous_month"), Some(80.0 / 290.0));
    // November so far: c1's 60 and c4's 30 at its start, c4's 30 lost.
    assert_eq!(
        grr("month_to_date").components,
        vec![Some(90.0), Some(30.0)]
    );
    assert_eq!(grr("month_to_date").value, Some(60.0 / 90.0));
    assert_eq!(v("subscription_churn/month_to_date"), Some(0.5));
}

fn month_values(agg: &Aggregates, now: i64) -> Vec<(String, Option<f64>, u64)> {
    let records = agg.snapshot(now);
    ["nps/month_to_date", "nps/previous_month", "nps/1h"]
        .iter()
        .map(|key| {
            let r = find(&records, key);
            ((*key).to_owned(), r.value, r.samples)
        })
        .collect()
}

proptest! {
    /// A restart that restores the periods from their records and replays from any offset
    /// up to the records' gives the values of a replay of every message: a message below a
    /// record's offset counts in its period once, from the record.
    #[test]
    fn restored_periods_and_a_partial_replay_equal_a_full_replay(
        answers in prop::collection::vec((0..41 * DAY, 0..=10u8), 1..80),
        written_after in any::<prop::sample::Index>(),
        replay_from in any::<prop::sample::Index>(),
        later in prop::collection::vec((0..41 * DAY, 0..=10u8), 0..20),
    ) {
        let now = instant("2026-11-10T12:00:00Z");
        let p = PartitionId::new(Family::Surveys, 0);
        // Messages at offsets 0.., dated up to 41 days back: October and November in Rome.
        let messages: Vec<Event<'static>> = answers
            .iter()
            .chain(&later)
            .map(|(age, score)| nps_answer(now - age, *score, now - age))
            .collect();
        let mut full = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
        for (offset, m) in messages.iter().enumerate() {
            let _ = full.record_at(p, m, offset as i64, now);
        }
        // The live run wrote its records after `through` messages.
        let through = written_after.index(answers.len() + 1);
        let mut live = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
        for (offset, m) in messages[..through].iter().enumerate() {
            let _ = live.record_at(p, m, offset as i64, now);
        }
        let records: Vec<PeriodComponents> = live
            .period_components(p, through as i64, now)
            .into_iter()
            .map(|(record, _)| record)
            .collect();
        let json = serde_json::to_string(&records).unwrap();
        let records: Vec<PeriodComponents> = serde_json::from_str(&json).unwrap();
        // The restart restores them and replays from any offset up to theirs.
        let start = replay_from.index(through + 1);
        let mut restarted = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
        restarted.restore(p, &records, now);
        for (offset, m) in messages.iter().enumerate().skip(start) {
            let _ = restarted.record_at(p, m, offset as i64, now);
        }
        let expected = month_values(&full, now);
        let restored = month_values(&restarted, now);
        prop_assert_eq!(&restored[..2], &expected[..2]);
    }
}

#[test]
fn records_are_due_when_closed_or_at_checkpoints_and_not_again_once_written() {
    let mut agg = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
    let p = PartitionId::new(Family::Surveys, 0);
    let october = instant("2026-10-20T10:00:00Z");
    let november = instant("2026-11-02T10:00:00Z");
    // 10 minutes after the month turned in Rome: October is not closed before its grace.
    let now = instant("2026-10-31T23:10:00Z");
    agg.record_at(p, &nps_answer(october, 9, october), 0, now)
        .unwrap();
    let due = agg.period_components(p, 1, now);
    // October is open still (grace), never written: due as a checkpoint.
    assert_eq!(due.len(), 1);
    let (record, version) = &due[0];
    assert_eq!(
        (record.period.as_str(), record.closed, record.through_offset),
        ("month", false, 1)
    );
    assert_eq!(record.start_ms, instant("2026-09-30T22:00:00Z"));
    assert_eq!(record.end_ms, instant("2026-10-31T23:00:00Z"));
    agg.periods_written(p, &[(PeriodKind::Month, record.number, *version)], now);
    assert!(agg.period_components(p, 1, now).is_empty());
    // After the grace, October is closed; unchanged since written, it is not due again.
    let later = instant("2026-11-03T00:00:00Z");
    assert!(agg.period_components(p, 1, later).is_empty());
    // November changes: due at once (never written); October changes: due as closed.
    agg.record_at(p, &nps_answer(november, 3, november), 1, later)
        .unwrap();
    agg.record_at(p, &nps_answer(october, 10, october), 2, later)
        .unwrap();
    let due = agg.period_components(p, 3, later);
    let closed: Vec<bool> = due.iter().map(|(r, _)| r.closed).collect();
    assert_eq!(closed, [true, false]);
    for (record, version) in &due {
        agg.periods_written(p, &[(PeriodKind::Month, record.number, *version)], later);
    }
    // November changes again within the hour: not due until the checkpoint interval.
    agg.record_at(p, &nps_answer(november, 4, november), 3, later)
        .unwrap();
    assert!(agg.period_components(p, 4, later + 60_000).is_empty());
    let due = agg.period_components(p, 4, later + CHECKPOINT_INTERVAL_MS);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].0.through_offset, 4);
}

#[test]
fn a_record_of_another_calendar_is_not_restored() {
    let now = instant("2026-11-10T12:00:00Z");
    let p = PartitionId::new(Family::Surveys, 0);
    let mut rome = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
    let at = instant("2026-11-05T10:00:00Z");
    rome.record_at(p, &nps_answer(at, 10, at), 0, now).unwrap();
    let records: Vec<PeriodComponents> = rome
        .period_components(p, 1, now)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let mut new_york = aggregates("America/New_York", WeekStart::Monday, &[PeriodKind::Month]);
    new_york.restore(p, &records, now);
    let r = new_york.snapshot(now);
    assert_eq!(find(&r, "nps/month_to_date").samples, 0);
    let mut again = aggregates("Europe/Rome", WeekStart::Monday, &[PeriodKind::Month]);
    again.restore(p, &records, now);
    let r = again.snapshot(now);
    assert_eq!(find(&r, "nps/month_to_date").samples, 1);
}
