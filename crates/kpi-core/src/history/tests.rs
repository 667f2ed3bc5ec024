//! A replay against the live core fed by hand: the same records at every instant.

use std::borrow::Cow;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::aggregate::StateSettings;
use crate::dimension::Dimensions;
use crate::event::{Family, Payload, Survey};
use crate::health::parts::SignalSettings;
use crate::rates::Rates;
use crate::sla::SlaTargets;
use crate::window::WindowSpec;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const T0: i64 = 1_790_000_000_000;

fn aggregates() -> Aggregates {
    Aggregates::new(StateSettings {
        windows: vec![
            WindowSpec::new("1h", Duration::from_secs(3600), Duration::from_secs(60)),
            WindowSpec::new(
                "24h",
                Duration::from_secs(86_400),
                Duration::from_secs(1440),
            ),
        ],
        lead_ms: 5 * MINUTE,
        dimensions: Dimensions::new(&["segment".to_owned()], 2),
        rates: Rates::new("USD", &Default::default()),
        clv_window: 1,
        dedup_horizon_ms: HOUR,
        calendar: None,
        max_open_age_ms: 90 * 24 * HOUR,
        sla: SlaTargets::default(),
        trial_grace_ms: HOUR,
        signals: SignalSettings::default(),
    })
}

fn answer(id: String, at: i64, score: u8, segment: &'static str) -> Event<'static> {
    Event {
        event_id: Cow::Owned(id),
        occurred_at_ms: at,
        customer_id: Cow::Borrowed("c"),
        dimensions: [Some(Cow::Borrowed(segment)), None, None, None],
        payload: Payload::SurveyResponded {
            survey: Survey::Nps,
            score,
            comment: None,
        },
        reference_ms: at,
    }
}

#[derive(Debug, Clone)]
struct Message {
    /// Received this long after the previous message (or T0).
    gap_ms: i64,
    /// Occurred this long before it was received (negative: ahead).
    age_ms: i64,
    score: u8,
    segment: &'static str,
    /// A repeat of an earlier event id.
    repeat: bool,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![Just(0), 0..10 * MINUTE, 0..3 * HOUR],
        prop_oneof![-10 * MINUTE..0, 0..2 * HOUR, 0..30 * HOUR],
        0..=10u8,
        prop::sample::select(vec!["smb", "mid", "ent"]),
        any::<bool>(),
    )
        .prop_map(|(gap_ms, age_ms, score, segment, repeat)| Message {
            gap_ms,
            age_ms,
            score,
            segment,
            repeat,
        })
}

proptest! {
    // Each case evaluates up to 240 instants against a recomputation.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// At every instant, the replay gives what the live core gives with the messages
    /// received before that instant, recorded at their receipt.
    #[test]
    fn each_instant_equals_the_live_core_fed_with_what_was_received_by_then(
        messages in prop::collection::vec(message(), 1..120),
        from_offset in -2 * HOUR..30 * HOUR,
        span in 0..40 * HOUR,
        step in prop_oneof![10 * MINUTE..HOUR, HOUR..6 * HOUR],
    ) {
        // (event, receipt time) in the order received.
        let mut received = Vec::new();
        let mut at = T0;
        for (i, m) in messages.iter().enumerate() {
            at += m.gap_ms;
            let id = if m.repeat && i > 0 { format!("e{}", i / 2) } else { format!("e{i}") };
            received.push((answer(id, at - m.age_ms, m.score, m.segment), at));
        }
        let (from, to) = (T0 + from_offset, T0 + from_offset + span);
        let mut replay = Replay::new(aggregates(), Instants::new(from, to, step).unwrap());
        let p = PartitionId::new(Family::Surveys, 0);
        let mut emitted: Vec<(i64, Vec<KpiRecord>)> = Vec::new();
        let mut emit = |instant, records| emitted.push((instant, records));
        for (offset, (event, at)) in received.iter().enumerate() {
            let _ = replay.offer(p, event, offset as i64, *at, &mut emit);
        }
        replay.finish(&mut emit);
        let instants: Vec<i64> = (0..).map(|k| from + k * step).take_while(|t| *t <= to).collect();
        prop_assert_eq!(emitted.iter().map(|(t, _)| *t).collect::<Vec<_>>(), instants);
        for (instant, records) in &emitted {
            let mut live = aggregates();
            let mut clock = i64::MIN;
            for (offset, (event, at)) in received.iter().enumerate() {
                if *at >= *instant {
                    break;
                }
                clock = clock.max(*at);
                let _ = live.record_at(p, event, offset as i64, clock);
            }
            let json = |records: &[KpiRecord]| -> Vec<serde_json::Value> {
                records.iter().map(|r| r.to_json(*instant, "USD")).collect()
            };
            prop_assert_eq!(json(records), json(&live.snapshot(*instant)));
        }
    }
}

#[test]
fn a_series_of_instants_is_bounded_and_ordered() {
    assert_eq!(Instants::new(0, 10, 0), Err(HistoryError::Step(0)));
    assert_eq!(
        Instants::new(10, 0, 1),
        Err(HistoryError::Order { from: 10, to: 0 })
    );
    assert!(Instants::new(0, MAX_INSTANTS - 1, 1).is_ok());
    assert_eq!(
        Instants::new(0, MAX_INSTANTS, 1),
        Err(HistoryError::TooMany(MAX_INSTANTS + 1))
    );
    let mut at_the_end = Instants::new(i64::MAX - 1, i64::MAX, 1).unwrap();
    assert_eq!(at_the_end.next_until(i64::MAX), Some(i64::MAX - 1));
    assert_eq!(at_the_end.next_until(i64::MAX), Some(i64::MAX));
    assert_eq!(at_the_end.next_until(i64::MAX), None);
}
