//! Tests of trial conversion against hand-computed values and a brute-force recomputation.

use std::borrow::Cow;
use std::collections::HashSet;

use proptest::prelude::*;

use super::tests::{DAY, HOUR, MINUTE, T0, aggregates, billing_event, find, settings, terms};
use super::*;
use crate::event::{CancelReason, Interval};

fn trial(id: &'static str, ends_at_ms: i64) -> Payload<'static> {
    Payload::TrialStarted {
        subscription_id: Cow::Borrowed(id),
        trial_ends_at_ms: ends_at_ms,
    }
}

fn start(id: &'static str) -> Payload<'static> {
    Payload::SubscriptionStarted(terms(id, 1_000, "USD", Interval::Month))
}

fn renew(id: &'static str) -> Payload<'static> {
    Payload::SubscriptionRenewed {
        subscription_id: Cow::Borrowed(id),
    }
}

fn cancel(id: &'static str) -> Payload<'static> {
    Payload::SubscriptionCanceled {
        subscription_id: Cow::Borrowed(id),
        reason: CancelReason::Voluntary,
    }
}

/// The trial values of one window and series: started, converted, expired and the
/// conversion ratio.
fn trial_values(records: &[KpiRecord], suffix: &str) -> (f64, f64, f64, Option<f64>) {
    let value = |kpi: &str| find(records, &format!("{kpi}{suffix}")).value.unwrap();
    (
        value("trials_started"),
        value("trials_converted"),
        value("trials_expired"),
        find(records, &format!("trial_conversion{suffix}")).value,
    )
}

/// The events of [`trials_convert_within_the_grace_and_expire_at_their_deadline`], in log
/// order, with the outcome each has live.
fn trial_story() -> Vec<(Event<'static>, Outcome)> {
    let event = |at, customer, segment, payload| billing_event(at, customer, segment, payload);
    vec![
        // d: a trial read too late for every window; it still enters the pending trials.
        (
            event(T0 - 30 * HOUR, "d", "smb", trial("sd", T0 - 50 * MINUTE)),
            Outcome::Late,
        ),
        // a: ends ten hours ago and starts a quarter of an hour later, within the grace.
        (
            event(T0 - 20 * HOUR, "a", "smb", trial("sa", T0 - 10 * HOUR)),
            Outcome::Counted,
        ),
        (
            event(T0 - 9 * HOUR - 45 * MINUTE, "a", "smb", start("sa")),
            Outcome::Counted,
        ),
        // b: its deadline (3 h + 30 min grace ago) passes with a renewal of a; its start an
        // hour ago is a new subscription.
        (
            event(T0 - 5 * HOUR, "b", "smb", trial("sb", T0 - 3 * HOUR)),
            Outcome::Counted,
        ),
        (
            event(T0 - 2 * HOUR, "a", "smb", renew("sa")),
            Outcome::Counted,
        ),
        (event(T0 - HOUR, "b", "smb", start("sb")), Outcome::Counted),
        // c: an enterprise trial that ends half an hour ago, pending until now.
        (
            event(T0 - 40 * MINUTE, "c", "ent", trial("sc", T0 - 30 * MINUTE)),
            Outcome::Counted,
        ),
        // d starts five minutes before its deadline: a conversion, counted in smb where its
        // trial began, though the start names another segment.
        (
            event(T0 - 25 * MINUTE, "d", "ent", start("sd")),
            Outcome::Counted,
        ),
    ]
}

#[test]
fn trials_convert_within_the_grace_and_expire_at_their_deadline() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Billing, 0);
    for (event, outcome) in trial_story() {
        assert_eq!(agg.record(p, &event, T0), Ok(outcome), "{event:?}");
    }
    let r = agg.snapshot(T0);
    // 24h: a, b and c started (d was late); a and d converted, in smb where their trials
    // began; b expired.
    assert_eq!(trial_values(&r, "/24h"), (3.0, 2.0, 1.0, Some(2.0 / 3.0)));
    assert_eq!(
        trial_values(&r, "/24h/segment=smb"),
        (2.0, 2.0, 1.0, Some(2.0 / 3.0))
    );
    assert_eq!(trial_values(&r, "/24h/segment=ent"), (1.0, 0.0, 0.0, None));
    assert_eq!(
        find(&r, "trial_conversion/24h").components,
        vec![Some(2.0), Some(1.0)]
    );
    // 1h: c started, d converted.
    assert_eq!(trial_values(&r, "/1h"), (1.0, 1.0, 0.0, Some(1.0)));
    // b's start was a new subscription, a's and d's too: three subscriptions started.
    assert_eq!(find(&r, "subscriptions_active/current").value, Some(3.0));
    let active = |records: &[KpiRecord], key: &str| find(records, key).value;
    assert_eq!(active(&r, "trials_active/current"), Some(1.0));
    assert_eq!(active(&r, "trials_active/current/segment=ent"), Some(1.0));
    assert_eq!(active(&r, "trials_active/current/segment=smb"), Some(0.0));

    // Without a billing event, c stays pending past its deadline (now): only the
    // partition's events move its time.
    let later = agg.snapshot(T0 + HOUR);
    assert_eq!(active(&later, "trials_active/current"), Some(1.0));
    // The next event, 50 minutes on, expires c at its deadline, in the hour before it.
    let next = billing_event(T0 + 50 * MINUTE, "a", "smb", renew("sa"));
    assert_eq!(agg.record(p, &next, T0 + 50 * MINUTE), Ok(Outcome::Counted));
    let r = agg.snapshot(T0 + 50 * MINUTE);
    assert_eq!(active(&r, "trials_active/current"), Some(0.0));
    assert_eq!(
        trial_values(&r, "/1h/segment=ent"),
        (0.0, 0.0, 1.0, Some(0.0))
    );
}

#[test]
fn a_replay_decides_every_trial_as_the_live_run_did() {
    let p = PartitionId::new(Family::Billing, 0);
    let mut live = aggregates(10);
    let mut replay = aggregates(10);
    let story = trial_story();
    let replay_now = T0 + 2 * HOUR;
    for (event, _) in &story {
        // Live, each event is read as it happens; b expires during the replay, when the
        // renewal is read.
        live.record(p, event, event.occurred_at_ms.max(T0 - 24 * HOUR))
            .unwrap();
        replay.record(p, event, replay_now).unwrap();
    }
    let (live, replay) = (live.snapshot(replay_now), replay.snapshot(replay_now));
    for suffix in ["/24h", "/24h/segment=smb", "/24h/segment=ent", "/1h"] {
        assert_eq!(trial_values(&live, suffix), trial_values(&replay, suffix));
    }
    assert_eq!(
        trial_values(&replay, "/24h"),
        (3.0, 2.0, 1.0, Some(2.0 / 3.0))
    );
    assert_eq!(
        find(&live, "trials_active/current").value,
        find(&replay, "trials_active/current").value
    );
}

#[test]
fn each_trial_rejection_has_its_reason_and_changes_nothing() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Billing, 0);
    let mut record = |at, payload| agg.record(p, &billing_event(at, "a", "smb", payload), T0);
    record(T0 - 3 * HOUR, start("active")).unwrap();
    record(T0 - 3 * HOUR, trial("pending", T0 + DAY)).unwrap();
    let reason = |result: Result<Outcome, Rejection>| result.unwrap_err().reason;
    assert_eq!(
        reason(record(T0 - 2 * HOUR, trial("active", T0 + DAY))),
        Reason::ActiveSubscription
    );
    assert_eq!(
        reason(record(T0 - 2 * HOUR, trial("pending", T0 + 2 * DAY))),
        Reason::PendingTrial
    );
    // A rejected event moves no time: the pending trial does not expire, even for an event
    // dated past its deadline.
    assert_eq!(
        reason(record(T0 + 2 * MINUTE, renew("unknown"))),
        Reason::UnknownSubscription
    );
    // A trial of a canceled subscription is a new trial.
    record(T0 - HOUR, cancel("active")).unwrap();
    assert_eq!(
        record(T0 - HOUR, trial("active", T0 + DAY)),
        Ok(Outcome::Counted)
    );
    let r = agg.snapshot(T0);
    assert_eq!(trial_values(&r, "/24h"), (2.0, 0.0, 0.0, None));
    assert_eq!(find(&r, "trials_active/current").value, Some(2.0));
}

#[test]
fn a_duplicate_trial_or_start_counts_once() {
    let mut agg = Aggregates::new(StateSettings {
        dedup_horizon_ms: DAY,
        ..settings(10)
    });
    let p = PartitionId::new(Family::Billing, 0);
    let events = [
        billing_event(T0 - 2 * HOUR, "a", "smb", trial("s", T0 - HOUR)),
        Event {
            event_id: Cow::Borrowed("start"),
            ..billing_event(T0 - 50 * MINUTE, "a", "smb", start("s"))
        },
    ];
    for event in &events {
        assert_eq!(agg.record(p, event, T0), Ok(Outcome::Counted));
        assert_eq!(agg.record(p, event, T0), Ok(Outcome::Duplicate));
    }
    assert_eq!(
        trial_values(&agg.snapshot(T0), "/24h"),
        (1.0, 1.0, 0.0, Some(1.0))
    );
}

#[test]
fn a_trial_that_ends_then_starts_after_the_grace_is_expired_and_the_start_is_new() {
    let mut agg = aggregates(10);
    let p = PartitionId::new(Family::Billing, 0);
    agg.record(
        p,
        &billing_event(T0 - 3 * HOUR, "a", "smb", trial("s", T0 - 2 * HOUR)),
        T0,
    )
    .unwrap();
    // 31 minutes after the trial's end: past the 30-minute grace.
    agg.record(
        p,
        &billing_event(T0 - HOUR - 29 * MINUTE, "a", "smb", start("s")),
        T0,
    )
    .unwrap();
    let r = agg.snapshot(T0);
    assert_eq!(trial_values(&r, "/24h"), (1.0, 0.0, 1.0, Some(0.0)));
    // Expired at its deadline, 90 minutes ago: outside the last hour.
    assert_eq!(trial_values(&r, "/1h"), (0.0, 0.0, 0.0, None));
    assert_eq!(find(&r, "mrr_new/24h").value, Some(10.0));
}

/// What a step of the property test does.
#[derive(Debug, Clone)]
enum TrialAction {
    Trial {
        sub: u8,
        length_ms: i64,
    },
    Start(u8),
    Cancel(u8),
    Renew(u8),
    /// The message of an earlier step again, with its `event_id`.
    Resend(usize),
}

const SUBSCRIPTIONS: [&str; 4] = ["s0", "s1", "s2", "s3"];
const SEGMENTS: [&str; 2] = ["smb", "ent"];

/// One step: advance of the clock, age of the event, segment, action.
fn trial_step() -> impl Strategy<Value = (i64, i64, u8, TrialAction)> {
    let sub = 0..SUBSCRIPTIONS.len() as u8;
    let action = prop_oneof![
        3 => (sub.clone(), 1..4 * HOUR).prop_map(|(sub, length_ms)| TrialAction::Trial { sub, length_ms }),
        2 => sub.clone().prop_map(TrialAction::Start),
        1 => sub.clone().prop_map(TrialAction::Cancel),
        1 => sub.prop_map(TrialAction::Renew),
        1 => any::<usize>().prop_map(TrialAction::Resend),
    ];
    // Most events now, some out of order by up to hours, a few too old for every window.
    let age = prop_oneof![3 => Just(0i64), 2 => 0..3 * HOUR, 1 => 25 * HOUR..40 * HOUR];
    (0..40 * MINUTE, age, 0..2u8, action)
}

/// One trial as the brute force sees it.
#[derive(Debug, Clone)]
struct TrialFact {
    sub: u8,
    segment: &'static str,
    started_at: i64,
    deadline: i64,
    converted_at: Option<i64>,
    expired: bool,
}

impl TrialFact {
    fn pending(&self) -> bool {
        self.converted_at.is_none() && !self.expired
    }
}

/// A brute-force model of the trials of one partition: every trial ever begun, the active
/// subscriptions, and the event time, recomputed by scanning lists.
#[derive(Default)]
struct TrialModel {
    trials: Vec<TrialFact>,
    active: HashSet<u8>,
    started: HashSet<u8>,
    event_time: Option<i64>,
}

impl TrialModel {
    /// Applies a message as the contract says; the reason when it must be rejected.
    fn apply(
        &mut self,
        at: i64,
        segment: &'static str,
        action: &TrialAction,
        grace: i64,
    ) -> Result<(), Reason> {
        let t = self.event_time.map_or(at, |e| e.max(at));
        match *action {
            TrialAction::Trial { sub, .. } if self.active.contains(&sub) => {
                return Err(Reason::ActiveSubscription);
            }
            TrialAction::Trial { sub, .. }
                if self
                    .trials
                    .iter()
                    .any(|f| f.sub == sub && f.pending() && f.deadline >= t) =>
            {
                return Err(Reason::PendingTrial);
            }
            TrialAction::Cancel(sub) | TrialAction::Renew(sub) if !self.started.contains(&sub) => {
                return Err(Reason::UnknownSubscription);
            }
            TrialAction::Cancel(sub) | TrialAction::Renew(sub) if !self.active.contains(&sub) => {
                return Err(Reason::CanceledSubscription);
            }
            _ => {}
        }
        self.event_time = Some(t);
        match *action {
            TrialAction::Trial { sub, length_ms } => self.trials.push(TrialFact {
                sub,
                segment,
                started_at: at,
                deadline: at + length_ms + grace,
                converted_at: None,
                expired: false,
            }),
            TrialAction::Start(sub) => {
                self.active.insert(sub);
                self.started.insert(sub);
            }
            TrialAction::Cancel(sub) => {
                self.active.remove(&sub);
            }
            TrialAction::Renew(_) | TrialAction::Resend(_) => {}
        }
        for fact in &mut self.trials {
            if fact.pending() && fact.deadline < t {
                fact.expired = true;
            }
        }
        if let TrialAction::Start(sub) = *action
            && let Some(fact) = self.trials.iter_mut().find(|f| f.sub == sub && f.pending())
        {
            fact.converted_at = Some(at);
        }
        Ok(())
    }
}

/// The message of one step: its event, built from its index (the `event_id`), time,
/// segment and action.
fn trial_message(i: usize, at: i64, segment: &'static str, action: &TrialAction) -> Event<'static> {
    let id = |s: u8| SUBSCRIPTIONS[usize::from(s)];
    let payload = match *action {
        TrialAction::Trial { sub, length_ms } => trial(id(sub), at + length_ms),
        TrialAction::Start(sub) => start(id(sub)),
        TrialAction::Cancel(sub) => cancel(id(sub)),
        TrialAction::Renew(sub) => renew(id(sub)),
        TrialAction::Resend(_) => unreachable!("a resend repeats the message of its step"),
    };
    Event {
        event_id: Cow::Owned(format!("e{i}")),
        ..billing_event(at, "c", segment, payload)
    }
}

/// The trial values of every window and series of `records` equal the brute force's at
/// `now`.
fn assert_trials_equal(
    records: &[KpiRecord],
    model: &TrialModel,
    now: i64,
) -> Result<(), TestCaseError> {
    for segment in [None, Some("smb"), Some("ent")] {
        let suffix = segment.map_or(String::new(), |s| format!("/segment={s}"));
        let facts: Vec<&TrialFact> = model
            .trials
            .iter()
            .filter(|f| segment.is_none_or(|s| f.segment == s))
            .collect();
        let key = format!("trials_active/current{suffix}");
        let Some(active) = records.iter().find(|r| r.key() == key) else {
            // A segment without an applied billing event has no series.
            prop_assert!(segment.is_some() && facts.is_empty(), "no {}", key);
            continue;
        };
        let pending = facts.iter().filter(|f| f.pending()).count() as f64;
        prop_assert_eq!(active.value, Some(pending), "{}", key);
        for spec in super::tests::specs() {
            let start = spec.start_ms(now);
            let count = |inside: &dyn Fn(&TrialFact) -> bool| {
                facts.iter().filter(|f| inside(f)).count() as f64
            };
            let started = count(&|f| f.started_at >= start);
            let converted = count(&|f| f.converted_at.is_some_and(|at| at >= start));
            let expired = count(&|f| f.expired && f.deadline >= start);
            let window = format!("/{}{suffix}", spec.name);
            let ended = converted + expired;
            prop_assert_eq!(
                trial_values(records, &window),
                (
                    started,
                    converted,
                    expired,
                    (ended > 0.0).then(|| converted / ended)
                ),
                "{}",
                window
            );
        }
    }
    Ok(())
}

proptest! {
    /// Trials started, converted, expired and pending, and trial conversion, overall and
    /// per segment, equal a recomputation over the raw events: out of order and late
    /// events, trials that end inside and outside the windows, starts within and after the
    /// grace, trials again after a cancellation, rejections and resent messages; live, and
    /// in a replay read at one later clock.
    #[test]
    fn trial_values_equal_a_brute_force_recomputation_live_and_after_a_replay(
        steps in prop::collection::vec(trial_step(), 1..150),
        replay_delay in 0..3 * HOUR,
    ) {
        let grace = settings(10).trial_grace_ms;
        let dedup = || Aggregates::new(StateSettings { dedup_horizon_ms: 100 * DAY, ..settings(10) });
        let (mut live, mut replay) = (dedup(), dedup());
        let p = PartitionId::new(Family::Billing, 0);
        let mut model = TrialModel::default();
        // Every message sent, with what the model needs to decide it and whether it applied.
        let mut sent: Vec<(Event<'static>, i64, &'static str, TrialAction, bool)> = Vec::new();
        let mut now = T0;
        let mut log = Vec::new();
        for (advance, age, segment, action) in &steps {
            now += advance;
            let (event, at, segment, action, index) = match action {
                TrialAction::Resend(k) if !sent.is_empty() => {
                    let k = k % sent.len();
                    let (event, at, segment, action, _) = sent[k].clone();
                    (event, at, segment, action, Some(k))
                }
                TrialAction::Resend(_) => continue,
                action => {
                    let at = now - age;
                    let segment = SEGMENTS[usize::from(*segment)];
                    (trial_message(sent.len(), at, segment, action), at, segment, action.clone(), None)
                }
            };
            let result = live.record(p, &event, now);
            log.push(event.clone());
            let already = index.is_some_and(|k| sent[k].4);
            if already {
                prop_assert_eq!(result, Ok(Outcome::Duplicate));
                continue;
            }
            let expected = model.apply(at, segment, &action, grace);
            prop_assert_eq!(result.as_ref().map(|_| ()).map_err(|r| r.reason), expected, "{:?}", event);
            match index {
                Some(k) => sent[k].4 = expected.is_ok(),
                None => sent.push((event, at, segment, action, expected.is_ok())),
            }
        }
        assert_trials_equal(&live.snapshot(now), &model, now)?;
        let replay_now = now + replay_delay;
        for event in &log {
            let _ = replay.record(p, event, replay_now);
        }
        assert_trials_equal(&replay.snapshot(replay_now), &model, replay_now)?;
    }
}
