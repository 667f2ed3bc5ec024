//! `kpi-stream generate --history`: a topic's history stamped with its events' times, then
//! live events from the same subscriptions, counted by the service in their calendar days.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use kpi_core::event::{Event, Family, Limits, Payload, parse, parse_timestamp};
use serde_json::{Value, json};

use crate::harness::{Read, Service, Topics, eventually, now_ms, read_all, wait};

const DAY: i64 = 86_400_000;
const HISTORY: u64 = 3_000;
const LIVE: u64 = 300;
const LIMITS: Limits = Limits {
    max_event_bytes: 1 << 20,
    max_future_skew_ms: 300_000,
};

fn events(messages: &[Read], family: Family) -> Vec<(i64, Event<'_>)> {
    messages
        .iter()
        .map(|m| {
            let event = parse(m.payload.as_deref().unwrap(), family, i64::MAX, &LIMITS).unwrap();
            (m.timestamp.unwrap(), event)
        })
        .collect()
}

fn subscription_id<'e>(event: &'e Event<'_>) -> &'e str {
    match &event.payload {
        Payload::SubscriptionStarted(terms) | Payload::SubscriptionChanged(terms) => {
            &terms.subscription_id
        }
        Payload::SubscriptionCanceled {
            subscription_id, ..
        }
        | Payload::SubscriptionRenewed { subscription_id }
        | Payload::TrialStarted {
            subscription_id, ..
        } => subscription_id,
        _ => unreachable!("a billing topic holds billing events"),
    }
}

#[tokio::test]
async fn a_generated_history_is_stamped_with_its_times_and_counts_in_its_days() {
    let topics = Topics::create("generated-history").await;
    let before = now_ms();
    let generator = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .args([
            "generate",
            "--history",
            &HISTORY.to_string(),
            "--span",
            "3d",
        ])
        .args([
            "--count",
            &LIVE.to_string(),
            "--rate",
            "0",
            "--malformed-ratio",
            "0",
        ])
        .envs(topics.env())
        // Few customers: the live events are mostly about the history's subscriptions.
        .env("KPI_STREAM_GENERATE__CUSTOMERS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait(generator).await.success());
    let after = now_ms();

    let surveys = read_all(&topics.surveys);
    let tickets = read_all(&topics.tickets);
    let billing = read_all(&topics.billing);
    let all: Vec<(i64, Event<'_>)> = [
        events(&surveys, Family::Surveys),
        events(&tickets, Family::Tickets),
        events(&billing, Family::Billing),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(all.len() as u64, HISTORY + LIVE);
    // Each message is stamped when its event happens: a survey answer up to 5 s earlier.
    for (stamp, event) in &all {
        let delay = stamp - event.occurred_at_ms;
        assert!(
            (0..=5_000).contains(&delay),
            "{}: {delay} ms",
            event.event_id
        );
    }
    // The history spreads over the three days before the start, one event every 86.4 s.
    let oldest = all.iter().map(|(stamp, _)| *stamp).min().unwrap();
    assert!((before - 3 * DAY..=after - 3 * DAY + 86_400).contains(&oldest));
    let live = all.iter().filter(|(stamp, _)| *stamp >= before).count() as u64;
    assert!(
        (LIVE..=LIVE + 1).contains(&live),
        "{live} events from the start on"
    );

    // The live events go on from the history's subscriptions: a customer's events are on one
    // partition, read in order, so every subscription starts once, before its other events,
    // and its trial, if it has one, comes before its start.
    let mut started: HashMap<String, i64> = HashMap::new();
    let mut trials: HashSet<String> = HashSet::new();
    let mut continued = 0;
    let mut converted = 0;
    for (stamp, event) in events(&billing, Family::Billing) {
        let id = subscription_id(&event).to_owned();
        if let Payload::TrialStarted { .. } = event.payload {
            assert!(
                !started.contains_key(&id),
                "a trial of {id} after its start"
            );
            assert!(trials.insert(id), "two trials");
        } else if let Payload::SubscriptionStarted(_) = event.payload {
            converted += usize::from(trials.contains(&id));
            assert!(started.insert(id, stamp).is_none(), "started twice");
        } else {
            let since = started
                .get(&id)
                .unwrap_or_else(|| panic!("{id} not started before {}", event.event_id));
            continued += usize::from(*since < before && stamp >= before);
        }
    }
    assert!(
        continued > 0,
        "no live event of a subscription of the history"
    );
    assert!(converted > 0, "no subscription started after its trial");

    // The service counts every ticket opened yesterday (UTC) in previous_day: none is late.
    let mut env = topics.env();
    env.retain(|(k, _)| k != "KPI_STREAM_CALENDAR__PERIODS");
    env.push(("KPI_STREAM_CALENDAR__PERIODS".into(), "[\"day\"]".into()));
    let service = Service::start(&env);
    service.wait_ready().await;
    let metrics = eventually("every event counted", Duration::from_secs(60), async || {
        let m = service.try_metrics().await?;
        let processed = m.sum("kpi_events_processed_total", &[]);
        (processed == (HISTORY + LIVE) as f64).then_some(m)
    })
    .await;
    assert_eq!(metrics.sum("kpi_events_late_total", &[]), 0.0);
    let (_, body) = service.get("/kpis").await.unwrap();
    let records: Vec<Value> = serde_json::from_str(&body).unwrap();
    let record = records
        .iter()
        .find(|r| {
            r["kpi"] == "tickets_opened"
                && r["window"] == "previous_day"
                && r["labels"] == json!({})
        })
        .unwrap();
    let bound = |key: &str| parse_timestamp(record[key].as_str().unwrap(), key).unwrap();
    let day = bound("window_start")..bound("window_end");
    let opened = events(&tickets, Family::Tickets)
        .iter()
        .filter(|(_, e)| matches!(e.payload, Payload::TicketOpened { .. }))
        .filter(|(_, e)| day.contains(&e.occurred_at_ms))
        .count();
    assert!(opened > 0);
    assert_eq!(record["value"].as_f64(), Some(opened as f64), "{record}");
}
