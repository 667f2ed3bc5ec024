//! Calendar periods end to end in a time zone whose month does not start at a UTC midnight:
//! answers on both sides of the local month boundary, and one written after its month
//! closed, checked exactly in /metrics, on `GET /kpis` and on the output topic.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use kpi_core::calendar::{
    Calendar, CalendarSettings, CalendarWindowSpec, PeriodKind, PeriodWindow, WeekStart, time_zone,
};

use crate::harness::{
    Service, Topics, brokers, delete_records, eventually, latest_output, now_ms, produce_stamped,
    producer, read_all, rfc3339,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

fn nps(id: &str, at: i64, score: i64) -> Vec<u8> {
    json!({
        "event_id": id, "type": "survey.responded", "occurred_at": rfc3339(at),
        "customer_id": format!("cust-{id}"), "survey": "nps", "score": score,
    })
    .to_string()
    .into_bytes()
}

fn rome_calendar() -> Calendar {
    Calendar::new(CalendarSettings {
        zone: time_zone("Europe/Rome").unwrap(),
        week_start: WeekStart::Monday,
        periods: vec![PeriodKind::Month],
        grace_ms: HOUR,
    })
    .unwrap()
}

/// The local start of the current month in Rome, and of the month before, at `now`.
fn rome_months(now: i64) -> (i64, i64) {
    let calendar = rome_calendar();
    let span = |which| {
        calendar
            .span(&CalendarWindowSpec::new(PeriodKind::Month, which), now)
            .unwrap()
            .start_ms
    };
    (span(PeriodWindow::ToDate), span(PeriodWindow::Previous))
}

#[tokio::test]
async fn month_windows_follow_the_local_calendar_on_every_output() {
    let topics = Topics::create("periods").await;
    let now = now_ms();
    let (month_start, previous_start) = rome_months(now);
    // Rome's months start at 23:00 or 22:00 UTC on the last day of the UTC month before.
    assert_ne!(month_start % (24 * HOUR), 0);
    // Inside this month in Rome but still the month before in UTC, and in the past.
    let this_month = month_start + (now - month_start).min(30 * MINUTE) / 2;
    let last_month = month_start - 30 * MINUTE;
    let producer = producer();
    let answers = [
        // Last month, each message written a second after its answer.
        ("p1", last_month, 10, last_month + 1_000),
        ("p2", last_month + MINUTE, 9, last_month + MINUTE + 1_000),
        // Last month too, but written now, after the month ended (no grace here): late for
        // the month; it still counts in the rolling windows.
        ("late", last_month, 0, now),
        // This month.
        ("d1", this_month, 3, this_month + 1_000),
    ];
    for (id, at, score, written) in answers {
        produce_stamped(
            &producer,
            &topics.surveys,
            Some(id),
            &nps(id, at, score),
            Some(written.min(now)),
        )
        .await;
    }
    let mut env = topics.env();
    env.retain(|(k, _)| k != "KPI_STREAM_CALENDAR__PERIODS");
    env.extend([
        ("KPI_STREAM_CALENDAR__TIMEZONE".into(), "Europe/Rome".into()),
        ("KPI_STREAM_CALENDAR__PERIODS".into(), "[\"month\"]".into()),
        ("KPI_STREAM_CALENDAR__GRACE".into(), "0s".into()),
        // A rolling window that holds the whole previous month, whatever the date.
        (
            "KPI_STREAM_WINDOWS__SPANS".into(),
            "[\"1h\", \"40d\"]".into(),
        ),
        ("KPI_STREAM_BILLING__CLV_WINDOW".into(), "40d".into()),
        (
            "KPI_STREAM_EVENTS__LATE_TO_DEADLETTER".into(),
            "true".into(),
        ),
    ]);
    let service = Service::start(&env);
    service.wait_ready().await;

    // /metrics: last month 2 promoters, this month 1 detractor; the late answer only in
    // the rolling windows.
    let metrics = eventually(
        "period values on /metrics",
        Duration::from_secs(60),
        async || {
            let m = service.try_metrics().await?;
            (m.get("kpi_nps_responses", &[("segment", ""), ("window", "40d")]) == Some(4.0))
                .then_some(m)
        },
    )
    .await;
    let nps_of = |window| metrics.get("kpi_nps", &[("segment", ""), ("window", window)]);
    let responses =
        |window| metrics.get("kpi_nps_responses", &[("segment", ""), ("window", window)]);
    assert_eq!(nps_of("previous_month"), Some(100.0));
    assert_eq!(responses("previous_month"), Some(2.0));
    assert_eq!(nps_of("month_to_date"), Some(-100.0));
    assert_eq!(responses("month_to_date"), Some(1.0));
    assert_eq!(metrics.sum("kpi_events_late_total", &[]), 1.0);
    assert_eq!(
        metrics.sum(
            "kpi_events_rejected_total",
            &[("reason", "late_for_period")]
        ),
        1.0
    );

    // GET /kpis and the output topic: the same values, with the local boundaries in UTC.
    let (status, body) = service.get("/kpis").await.unwrap();
    assert_eq!(status, 200);
    let served: Value = serde_json::from_str(&body).unwrap();
    let served = served.as_array().unwrap().clone();
    let find = |records: &[Value], window: &str| -> Value {
        records
            .iter()
            .find(|r| r["kpi"] == "nps" && r["window"] == window && r["labels"] == json!({}))
            .cloned()
            .unwrap_or_else(|| panic!("no nps/{window}"))
    };
    let expected = [
        ("previous_month", 100, 2, previous_start, month_start),
        ("month_to_date", -100, 1, month_start, 0),
    ];
    let output = eventually(
        "period values on the output topic",
        Duration::from_secs(30),
        async || {
            let latest = latest_output(&topics.output);
            latest.contains_key("nps/month_to_date").then_some(latest)
        },
    )
    .await;
    for (window, value, samples, start, end) in expected {
        for record in [
            find(&served, window),
            output[&format!("nps/{window}")].clone(),
        ] {
            assert_eq!(record["value"], json!(value), "{window}: {record}");
            assert_eq!(record["samples"], json!(samples), "{window}: {record}");
            assert_eq!(record["window_start"], json!(rfc3339(start)), "{window}");
            if end != 0 {
                assert_eq!(record["window_end"], json!(rfc3339(end)), "{window}");
            }
        }
    }
}

/// The end offset of each partition of `topic`.
fn ends(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

async fn produce_to(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    id: &str,
    at: i64,
    score: i64,
) {
    let payload = nps(id, at, score);
    producer
        .send(
            FutureRecord::<str, [u8]>::to(topic)
                .partition(partition)
                .key(id)
                .payload(&payload)
                .timestamp(at + 1_000),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The newest period record of each key: (partition, period, number) to its offset.
fn period_records(topic: &str) -> HashMap<(i64, String, i64), i64> {
    read_all(topic)
        .into_iter()
        .filter_map(|m| {
            let v: Value = serde_json::from_slice(&m.payload?).ok()?;
            let c = &v["components"];
            Some((
                (
                    v["partition"].as_i64()?,
                    c["period"].as_str()?.to_owned(),
                    c["number"].as_i64()?,
                ),
                c["through_offset"].as_i64()?,
            ))
        })
        .collect()
}

/// The environment of a service with months and quarters in Rome, no grace, and a rolling
/// window that holds the whole previous month.
fn months_and_quarters_in_rome(topics: &Topics) -> Vec<(String, String)> {
    let mut env = topics.env();
    env.retain(|(k, _)| k != "KPI_STREAM_CALENDAR__PERIODS");
    env.extend([
        ("KPI_STREAM_CALENDAR__TIMEZONE".into(), "Europe/Rome".into()),
        (
            "KPI_STREAM_CALENDAR__PERIODS".into(),
            "[\"month\", \"quarter\"]".into(),
        ),
        ("KPI_STREAM_CALENDAR__GRACE".into(), "0s".into()),
        (
            "KPI_STREAM_WINDOWS__SPANS".into(),
            "[\"1h\", \"40d\"]".into(),
        ),
        ("KPI_STREAM_BILLING__CLV_WINDOW".into(), "40d".into()),
    ]);
    env
}

/// Half an hour before the current month started in Rome, and an instant of this month
/// before now that is still last month in UTC.
fn around_the_month_start() -> (i64, i64) {
    let now = now_ms();
    let (month_start, _) = rome_months(now);
    (
        month_start - 30 * MINUTE,
        month_start + (now - month_start).min(30 * MINUTE) / 2,
    )
}

/// The number of the local month in Rome holding `at`, as the records number it.
fn month_number(at: i64) -> i64 {
    rome_calendar()
        .span(
            &CalendarWindowSpec::new(PeriodKind::Month, PeriodWindow::ToDate),
            at,
        )
        .unwrap()
        .period
}

/// Waits until the periods topic holds, for each (partition, month) of `held`, the records
/// of that month and its quarter, each counting up to the partition's end in `ends`.
async fn wait_for_records(topics: &Topics, held: &[(i64, i64)], ends: &[i64]) {
    let expected: Vec<(i64, String, i64)> = held
        .iter()
        .flat_map(|&(p, m)| {
            [
                (p, "month".to_owned(), m),
                (p, "quarter".to_owned(), m.div_euclid(3)),
            ]
        })
        .collect();
    eventually(
        "every period written up to its partition's end",
        Duration::from_secs(60),
        async || {
            let records = period_records(&topics.periods);
            expected
                .iter()
                .all(|key| records.get(key) == Some(&ends[key.0 as usize]))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn closed_and_open_periods_outlive_the_input_messages() {
    let topics = Topics::create("periods-kept").await;
    let (last_month, this_month) = around_the_month_start();
    let producer = producer();
    // Last month on partitions 0 and 1, this month on partitions 1 and 2.
    produce_to(&producer, &topics.surveys, 0, "p1", last_month, 10).await;
    produce_to(&producer, &topics.surveys, 1, "p2", last_month + MINUTE, 9).await;
    let last_month_ends = ends(&topics.surveys, 3);
    produce_to(&producer, &topics.surveys, 1, "d1", this_month, 3).await;
    produce_to(&producer, &topics.surveys, 2, "n1", this_month, 8).await;
    let all_ends = ends(&topics.surveys, 3);
    let env = months_and_quarters_in_rome(&topics);
    let mut service = Service::start(&env);
    service.wait_ready().await;

    // Every partition's records of the months and quarters it holds answers of, each
    // counting up to the partition's end.
    let (last, this) = (month_number(last_month), month_number(this_month));
    wait_for_records(
        &topics,
        &[(0, last), (1, last), (1, this), (2, this)],
        &all_ends,
    )
    .await;
    service.kill();

    // Last month's messages go, as retention would take them.
    delete_records(
        &brokers(),
        &topics.surveys,
        &[(0, last_month_ends[0]), (1, last_month_ends[1])],
    )
    .await;
    let service = Service::start(&env);
    service.wait_ready().await;
    let same_quarter = last.div_euclid(3) == this.div_euclid(3);
    let metrics = eventually(
        "values after the restart",
        Duration::from_secs(60),
        async || {
            let m = service.try_metrics().await?;
            m.get(
                "kpi_nps_responses",
                &[("segment", ""), ("window", "month_to_date")],
            )
            .is_some()
            .then_some(m)
        },
    )
    .await;
    let of = |name: &str, window: &str| metrics.get(name, &[("segment", ""), ("window", window)]);
    // The input no longer holds last month: the 40-day window lost it.
    assert_eq!(of("kpi_nps_responses", "40d"), Some(2.0));
    // The periods did not: last month 2 promoters, this month a detractor and a passive.
    assert_eq!(of("kpi_nps_responses", "previous_month"), Some(2.0));
    assert_eq!(of("kpi_nps", "previous_month"), Some(100.0));
    assert_eq!(of("kpi_nps_responses", "month_to_date"), Some(2.0));
    assert_eq!(of("kpi_nps", "month_to_date"), Some(-50.0));
    if same_quarter {
        assert_eq!(of("kpi_nps_responses", "quarter_to_date"), Some(4.0));
        assert_eq!(of("kpi_nps", "quarter_to_date"), Some(25.0));
    } else {
        assert_eq!(of("kpi_nps_responses", "quarter_to_date"), Some(2.0));
        assert_eq!(of("kpi_nps_responses", "previous_quarter"), Some(2.0));
        assert_eq!(of("kpi_nps", "previous_quarter"), Some(100.0));
    }
}

/// The global NPS and its responses of a window on an instance's `/kpis`.
async fn global_nps(service: &Service, window: &str) -> Option<(Value, Value)> {
    let (status, body) = service.get("/kpis").await?;
    if status != 200 {
        return None;
    }
    let records: Vec<Value> = serde_json::from_str(&body).ok()?;
    records
        .into_iter()
        .find(|r| r["kpi"] == "nps" && r["window"] == window && r["labels"] == json!({}))
        .map(|r| (r["value"].clone(), r["samples"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_keep_the_periods_of_deleted_messages() {
    let topics = Topics::create_with(&brokers(), "periods-three", [6, 2, 2], true).await;
    let (last_month, this_month) = around_the_month_start();
    let producer = producer();
    // A promoter last month on every partition; this month a detractor on the even ones
    // and a passive on the odd ones.
    for p in 0..6 {
        produce_to(
            &producer,
            &topics.surveys,
            p,
            &format!("p{p}"),
            last_month,
            10,
        )
        .await;
    }
    let last_month_ends = ends(&topics.surveys, 6);
    for p in 0..6 {
        let score = if p % 2 == 0 { 2 } else { 7 };
        produce_to(
            &producer,
            &topics.surveys,
            p,
            &format!("t{p}"),
            this_month,
            score,
        )
        .await;
    }
    let all_ends = ends(&topics.surveys, 6);
    let env = months_and_quarters_in_rome(&topics);
    let mut first = Service::start(&env);
    let second = Service::start(&env);
    let third = Service::start(&env);
    for service in [&first, &second, &third] {
        service.wait_ready().await;
    }
    let (last, this) = (month_number(last_month), month_number(this_month));
    let held: Vec<(i64, i64)> = (0..6).flat_map(|p| [(p, last), (p, this)]).collect();
    wait_for_records(&topics, &held, &all_ends).await;
    first.kill();
    let deleted: Vec<(i32, i64)> = (0..6).map(|p| (p, last_month_ends[p as usize])).collect();
    delete_records(&brokers(), &topics.surveys, &deleted).await;

    // The two left take the killed instance's partitions over, restored from its records.
    let same_quarter = last.div_euclid(3) == this.div_euclid(3);
    let mut want = vec![
        ("previous_month", json!(100), json!(6)),
        ("month_to_date", json!(-50), json!(6)),
    ];
    if same_quarter {
        want.push(("quarter_to_date", json!(25), json!(12)));
    } else {
        want.push(("quarter_to_date", json!(-50), json!(6)));
        want.push(("previous_quarter", json!(100), json!(6)));
    }
    let live = [&second, &third];
    eventually(
        "the killed instance's partitions taken over",
        Duration::from_secs(90),
        async || {
            let mut assigned = 0.0;
            for service in live {
                let m = service.try_metrics().await?;
                (m.get("kpi_ready", &[])? == 1.0).then_some(())?;
                assigned += m.get("kpi_assigned_partitions", &[])?;
            }
            (assigned == 10.0).then_some(())
        },
    )
    .await;
    let taken_over = now_ms() as f64 / 1000.0;
    for service in live {
        eventually(
            "global period values after the takeover",
            Duration::from_secs(90),
            async || {
                let m = service.try_metrics().await?;
                // Values computed after the takeover, not those from before the kill.
                (m.get("kpi_last_publish_timestamp_seconds", &[])? > taken_over + 1.0)
                    .then_some(())?;
                for (window, value, samples) in &want {
                    (global_nps(service, window).await? == (value.clone(), samples.clone()))
                        .then_some(())?;
                }
                Some(())
            },
        )
        .await;
    }
}
