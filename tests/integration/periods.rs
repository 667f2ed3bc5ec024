//! Calendar periods end to end in a time zone whose month does not start at a UTC midnight:
//! answers on both sides of the local month boundary, and one written after its month
//! closed, checked exactly in /metrics, on `GET /kpis` and on the output topic.

use std::time::Duration;

use serde_json::{Value, json};

use kpi_core::calendar::{
    Calendar, CalendarSettings, CalendarWindowSpec, PeriodKind, PeriodWindow, WeekStart, time_zone,
};

use crate::harness::{
    Service, Topics, eventually, latest_output, now_ms, produce_stamped, producer, rfc3339,
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

/// The local start of the current month in Rome, and of the month before, at `now`.
fn rome_months(now: i64) -> (i64, i64) {
    let calendar = Calendar::new(CalendarSettings {
        zone: time_zone("Europe/Rome").unwrap(),
        week_start: WeekStart::Monday,
        periods: vec![PeriodKind::Month],
        grace_ms: HOUR,
    })
    .unwrap();
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
