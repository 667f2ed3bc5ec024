//! Survey and ticket KPIs end to end against the real broker: a known event set, including malformed
//! and late events, checked exactly in /metrics, on the output topic and on the dead-letter
//! topic; then a SIGKILL and a restart that must reproduce every value.

use std::collections::{BTreeMap, HashMap};

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Metrics, Service, Topics, committed_to_end, eventually, latest_output, now_ms, produce,
    producer, read_all, rfc3339,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Records per publish: 4 series (overall, smb, enterprise, unknown) x (4 windows x 37
/// windowed KPIs + 6 current values), and the 3 backlog values of the overall series.
const RECORDS: usize = 4 * (4 * 37 + 6) + 3;

fn survey(id: &str, at: i64, survey: &str, score: i64, segment: Option<&str>) -> Value {
    let mut v = json!({
        "event_id": id, "type": "survey.responded", "occurred_at": rfc3339(at),
        "customer_id": format!("cust-{id}"), "survey": survey, "score": score,
    });
    if let Some(segment) = segment {
        v["segment"] = json!(segment);
    }
    v
}

fn commented(mut answer: Value, comment: &str) -> Value {
    answer["comment"] = json!(comment);
    answer
}

/// The bad messages, each with the reason it must be dead-lettered for.
fn malformed(now: i64) -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let mut missing = survey("m2", now - MINUTE, "nps", 9, None);
    missing.as_object_mut().unwrap().remove("customer_id");
    let future = survey("m5", now + HOUR, "nps", 9, None);
    let mut unknown = survey("m6", now - MINUTE, "nps", 9, None);
    unknown["type"] = json!("survey.deleted");
    let ticket = json!({"event_id": "m8", "type": "ticket.opened", "occurred_at": rfc3339(now - MINUTE),
        "customer_id": "c", "ticket_id": "t"});
    vec![
        (
            "invalid_json",
            Some("k1"),
            b"{\"event_id\": \"m1\", ".to_vec(),
        ),
        (
            "missing_field",
            Some("k2"),
            missing.to_string().into_bytes(),
        ),
        (
            "out_of_range",
            Some("k3"),
            survey("m3", now - MINUTE, "nps", 11, None)
                .to_string()
                .into_bytes(),
        ),
        (
            "wrong_type",
            Some("k4"),
            survey("m4", now - MINUTE, "nps", 9, None)
                .to_string()
                .replace("\"score\":9", "\"score\":\"9\"")
                .into_bytes(),
        ),
        (
            "future_timestamp",
            Some("k5"),
            future.to_string().into_bytes(),
        ),
        ("unknown_type", Some("k6"), unknown.to_string().into_bytes()),
        ("empty", None, Vec::new()),
        ("wrong_topic", Some("k8"), ticket.to_string().into_bytes()),
    ]
}

/// Every KPI gauge (values and components) in /metrics.
fn kpi_gauges(metrics: &Metrics) -> BTreeMap<String, f64> {
    metrics
        .series
        .iter()
        .filter(|(k, _)| {
            [
                "kpi_nps",
                "kpi_csat",
                "kpi_ces",
                "kpi_survey",
                "kpi_tickets",
                "kpi_fcr",
                "kpi_resolution",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                && !k.contains("_total")
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn check_values(metrics: &Metrics) {
    let g = |name: &str, window: &str, segment: &str| {
        metrics.get(name, &[("window", window), ("segment", segment)])
    };
    // 1h: NPS 10, 9, 7, 3 (smb) -> 2 promoters, 1 passive, 1 detractor.
    assert_eq!(g("kpi_nps", "1h", ""), Some(25.0));
    assert_eq!(g("kpi_nps_promoters", "1h", ""), Some(2.0));
    assert_eq!(g("kpi_nps_passives", "1h", ""), Some(1.0));
    assert_eq!(g("kpi_nps_detractors", "1h", ""), Some(1.0));
    assert_eq!(g("kpi_nps_responses", "1h", ""), Some(4.0));
    assert_eq!(g("kpi_nps", "1h", "smb"), Some(25.0));
    // Enterprise answered 3 hours ago: no value in 1h, but its series is there at 0.
    assert_eq!(g("kpi_nps", "1h", "enterprise"), None);
    assert_eq!(g("kpi_nps_responses", "1h", "enterprise"), Some(0.0));
    // 24h adds 0 and 10 (enterprise): 3 promoters, 2 detractors of 6.
    assert_eq!(g("kpi_nps", "24h", ""), Some(100.0 * (3.0 - 2.0) / 6.0));
    assert_eq!(g("kpi_nps", "24h", "enterprise"), Some(0.0));
    assert_eq!(g("kpi_nps", "30d", ""), Some(100.0 * (3.0 - 2.0) / 6.0));
    // CSAT 5, 4 (smb), 2 (no segment).
    assert_eq!(g("kpi_csat_ratio", "1h", ""), Some(2.0 / 3.0));
    assert_eq!(g("kpi_csat_ratio", "1h", "smb"), Some(1.0));
    assert_eq!(g("kpi_csat_ratio", "1h", "unknown"), Some(0.0));
    assert_eq!(g("kpi_csat_satisfied", "1h", ""), Some(2.0));
    // CES 7 (no segment), 5 (smb) within the hour; 2 (enterprise) two days ago.
    assert_eq!(g("kpi_ces_mean", "1h", ""), Some(6.0));
    assert_eq!(g("kpi_ces_easy_ratio", "1h", ""), Some(1.0));
    assert_eq!(g("kpi_ces_mean", "24h", ""), Some(6.0));
    assert_eq!(g("kpi_ces_mean", "7d", ""), Some(14.0 / 3.0));
    assert_eq!(g("kpi_ces_easy_ratio", "7d", ""), Some(2.0 / 3.0));
    assert_eq!(g("kpi_ces_total_score", "7d", ""), Some(14.0));
    assert_eq!(g("kpi_ces_mean", "7d", "enterprise"), Some(2.0));
    assert_eq!(g("kpi_ces_mean", "1h", "enterprise"), None);
    // Comments on NPS 10 (smb), CSAT 5 (smb) and CES 2 (enterprise, two days ago); the
    // blank comment of NPS 3 and the empty one of CSAT 2 are none.
    assert_eq!(g("kpi_survey_comment_ratio", "1h", ""), Some(2.0 / 9.0));
    assert_eq!(g("kpi_survey_commented_answers", "1h", ""), Some(2.0));
    assert_eq!(g("kpi_survey_answers", "1h", ""), Some(9.0));
    assert_eq!(g("kpi_survey_comment_ratio", "1h", "smb"), Some(2.0 / 7.0));
    assert_eq!(g("kpi_survey_comment_ratio", "1h", "unknown"), Some(0.0));
    assert_eq!(g("kpi_survey_comment_ratio", "1h", "enterprise"), None);
    assert_eq!(g("kpi_survey_answers", "1h", "enterprise"), Some(0.0));
    assert_eq!(g("kpi_survey_comment_ratio", "24h", ""), Some(2.0 / 11.0));
    assert_eq!(g("kpi_survey_comment_ratio", "7d", ""), Some(0.25));
    assert_eq!(
        g("kpi_survey_comment_ratio", "7d", "enterprise"),
        Some(1.0 / 3.0)
    );
    // Tickets (smb): opened a minute and 5 h ago, one reopen; resolved with one reply, after
    // a reopen, and 4 h ago with no reply.
    assert_eq!(g("kpi_tickets_opened", "1h", ""), Some(1.0));
    assert_eq!(g("kpi_tickets_opened", "24h", "smb"), Some(2.0));
    assert_eq!(g("kpi_tickets_reopened", "1h", ""), Some(1.0));
    assert_eq!(g("kpi_tickets_resolved", "24h", ""), Some(3.0));
    assert_eq!(g("kpi_fcr_ratio", "1h", ""), Some(0.5));
    assert_eq!(g("kpi_fcr_ratio", "24h", "smb"), Some(2.0 / 3.0));
    assert_eq!(g("kpi_fcr_first_contact_resolutions", "24h", ""), Some(2.0));
    assert_eq!(g("kpi_fcr_resolutions", "24h", ""), Some(3.0));
    assert_eq!(g("kpi_fcr_ratio", "1h", "enterprise"), None);
    assert_eq!(g("kpi_tickets_opened", "1h", "enterprise"), Some(0.0));
    // Resolution times: 17,820 s twice within the hour, 3,600 s four hours ago.
    assert_eq!(
        g("kpi_resolution_time_seconds_mean", "1h", ""),
        Some(17_820.0)
    );
    assert_eq!(
        g("kpi_resolution_time_seconds_mean", "24h", ""),
        Some((2.0 * 17_820.0 + 3_600.0) / 3.0)
    );
    assert_eq!(g("kpi_resolution_time_resolutions", "24h", ""), Some(3.0));
    let bucket = |seconds: &str| {
        metrics.get(
            "kpi_resolution_time_resolutions_within",
            &[("seconds", seconds), ("window", "24h"), ("segment", "")],
        )
    };
    assert_eq!(bucket("3600"), Some(1.0));
    assert_eq!(bucket("14400"), Some(1.0));
    assert_eq!(bucket("28800"), Some(3.0));
    assert_eq!(bucket("+Inf"), Some(3.0));
    let p50 = metrics
        .get(
            "kpi_resolution_time_percentile_seconds",
            &[("percentile", "50"), ("window", "24h"), ("segment", "")],
        )
        .unwrap();
    assert!((p50 - 17_820.0).abs() <= 0.01 * 17_820.0, "{p50}");
    assert_eq!(
        metrics.get(
            "kpi_resolution_time_percentile_seconds",
            &[
                ("percentile", "50"),
                ("window", "1h"),
                ("segment", "enterprise")
            ],
        ),
        None
    );
}

fn check_output(output: &HashMap<String, Value>) {
    let nps = &output["nps/1h"];
    assert_eq!(nps["value"], json!(25));
    assert_eq!(nps["samples"], json!(4));
    assert_eq!(
        nps["components"],
        json!({"promoters": 2, "passives": 1, "detractors": 1, "responses": 4})
    );
    assert_eq!(nps["labels"], json!({}));
    assert_eq!(nps["schema_version"], json!(1));
    assert_eq!(output["nps/24h"]["value"], json!(100.0 * (3.0 - 2.0) / 6.0));
    assert_eq!(output["nps/1h/segment=enterprise"]["value"], Value::Null);
    assert_eq!(output["nps/1h/segment=enterprise"]["samples"], json!(0));
    assert_eq!(
        output["nps/1h/segment=smb"]["labels"],
        json!({"segment": "smb"})
    );
    assert_eq!(output["csat/1h"]["value"], json!(2.0 / 3.0));
    assert_eq!(output["ces/7d"]["value"], json!(14.0 / 3.0));
    assert_eq!(output["ces_easy/1h/segment=unknown"]["value"], json!(1));
    let comments = &output["survey_comment/7d"];
    assert_eq!(comments["value"], json!(0.25));
    assert_eq!(comments["samples"], json!(12));
    assert_eq!(
        comments["components"],
        json!({"commented": 3, "answers": 12})
    );
    assert_eq!(
        output["survey_comment/1h/segment=enterprise"]["value"],
        Value::Null
    );
    assert_eq!(output["fcr/24h"]["value"], json!(2.0 / 3.0));
    assert_eq!(
        output["fcr/24h"]["components"],
        json!({"first_contact": 2, "resolutions": 3})
    );
    assert_eq!(output["tickets_opened/1h"]["value"], json!(1));
    assert_eq!(output["tickets_opened/1h"]["components"], json!({}));
    assert_eq!(output["resolution_time/1h"]["value"], json!(17_820));
    assert_eq!(
        output["resolution_time/1h"]["components"]["le_3600"],
        json!(0)
    );
    assert_eq!(
        output.len(),
        RECORDS,
        "{:?}",
        output.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survey_kpis_end_to_end_and_after_sigkill() {
    let topics = Topics::create("surveys").await;
    let producer = producer();
    let now = now_ms();
    let valid = [
        commented(
            survey("a", now - 10 * MINUTE, "nps", 10, Some("smb")),
            "Quick and friendly",
        ),
        survey("b", now - 10 * MINUTE, "nps", 9, Some("smb")),
        survey("c", now - 10 * MINUTE, "nps", 7, Some("smb")),
        commented(
            survey("d", now - 10 * MINUTE, "nps", 3, Some("smb")),
            " \t ",
        ),
        survey("e", now - 3 * HOUR, "nps", 0, Some("enterprise")),
        survey("f", now - 3 * HOUR, "nps", 10, Some("enterprise")),
        commented(
            survey("g", now - 20 * MINUTE, "csat", 5, Some("smb")),
            "Solved at once",
        ),
        survey("h", now - 20 * MINUTE, "csat", 4, Some("smb")),
        commented(survey("i", now - 20 * MINUTE, "csat", 2, None), ""),
        survey("j", now - 20 * MINUTE, "ces", 7, None),
        survey("k", now - 20 * MINUTE, "ces", 5, Some("smb")),
        commented(
            survey("l", now - 2 * DAY, "ces", 2, Some("enterprise")),
            "Too many steps",
        ),
    ];
    for event in &valid {
        let key = event["customer_id"].as_str().unwrap();
        produce(
            &producer,
            &topics.surveys,
            Some(key),
            event.to_string().as_bytes(),
        )
        .await;
    }
    let late = survey("late", now - 40 * DAY, "nps", 10, Some("smb"));
    produce(
        &producer,
        &topics.surveys,
        Some("late"),
        late.to_string().as_bytes(),
    )
    .await;
    let bad = malformed(now);
    for (_, key, payload) in &bad {
        produce(&producer, &topics.surveys, *key, payload).await;
    }
    let ticket = |id: &str, kind: &str, at: i64, extra: Value| {
        let mut v = json!({"event_id": id, "type": kind, "occurred_at": rfc3339(at),
            "customer_id": "c1", "ticket_id": "tkt-1", "segment": "smb"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    let resolved = |replies: u32, reopens: u32| json!({"opened_at": rfc3339(now - 5 * HOUR), "agent_replies": replies, "reopens": reopens});
    let tickets = [
        ticket("t1", "ticket.opened", now - MINUTE, json!({})),
        ticket("t2", "ticket.opened", now - 5 * HOUR, json!({})),
        ticket("t3", "ticket.reopened", now - 2 * MINUTE, json!({})),
        ticket("t4", "ticket.resolved", now - 3 * MINUTE, resolved(1, 0)),
        ticket("t5", "ticket.resolved", now - 3 * MINUTE, resolved(0, 1)),
        ticket("t6", "ticket.resolved", now - 4 * HOUR, resolved(0, 0)),
    ];
    for t in &tickets {
        produce(
            &producer,
            &topics.tickets,
            Some("tkt-1"),
            t.to_string().as_bytes(),
        )
        .await;
    }
    let billing = json!({"event_id": "b1", "type": "subscription.started", "occurred_at": rfc3339(now - MINUTE),
        "customer_id": "c1", "subscription_id": "s1", "plan": "pro", "price": 9900,
        "currency": "USD", "interval": "month"});
    produce(
        &producer,
        &topics.billing,
        Some("c1"),
        billing.to_string().as_bytes(),
    )
    .await;

    let mut service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    check_values(&metrics);
    let processed = |topic: &str| metrics.get("kpi_events_processed_total", &[("topic", topic)]);
    // 12 valid; the late one is counted as late, not processed.
    assert_eq!(processed(&topics.surveys), Some(12.0));
    assert_eq!(processed(&topics.tickets), Some(6.0));
    assert_eq!(processed(&topics.billing), Some(1.0));
    assert_eq!(
        metrics.get("kpi_events_late_total", &[("topic", &topics.surveys)]),
        Some(1.0)
    );
    for (reason, _, _) in &bad {
        assert_eq!(
            metrics.get(
                "kpi_events_rejected_total",
                &[("topic", &topics.surveys), ("reason", reason)]
            ),
            Some(1.0),
            "{reason}"
        );
    }
    assert_eq!(
        metrics.sum("kpi_events_rejected_total", &[]),
        bad.len() as f64
    );
    assert_eq!(
        metrics.get(
            "kpi_survey_responses_total",
            &[("survey", "nps"), ("score", "10")]
        ),
        Some(2.0)
    );
    let (status, kpis) = service.get("/kpis").await.unwrap();
    assert_eq!(status, 200);
    let kpis: Vec<Value> = serde_json::from_str(&kpis).unwrap();
    assert_eq!(kpis.len(), RECORDS);

    let output = eventually("the output topic", Duration::from_secs(30), async || {
        let output = latest_output(&topics.output);
        (output.len() == RECORDS).then_some(output)
    })
    .await;
    check_output(&output);

    // The dead-letter topic holds exactly the bad messages, unchanged, with their reasons.
    let dead = read_all(&topics.deadletter);
    assert_eq!(dead.len(), bad.len());
    for (reason, key, payload) in &bad {
        let found = dead
            .iter()
            .find(|d| d.headers.get("kpi-stream.reason").map(String::as_str) == Some(reason))
            .unwrap_or_else(|| panic!("no dead letter for {reason}"));
        assert_eq!(found.key.as_deref(), key.map(str::as_bytes), "{reason}");
        assert_eq!(
            found.payload.clone().unwrap_or_default(),
            *payload,
            "{reason}"
        );
        assert_eq!(found.headers["kpi-stream.source.topic"], topics.surveys);
        assert!(
            found.headers["kpi-stream.source.offset"]
                .parse::<i64>()
                .is_ok()
        );
        assert!(!found.headers["kpi-stream.detail"].is_empty());
    }

    // SIGKILL once every offset is committed, start again: the same values, no new dead letters.
    let inputs = topics.inputs();
    eventually("committed offsets", Duration::from_secs(30), async || {
        committed_to_end(&topics.group, &inputs).then_some(())
    })
    .await;
    let before = kpi_gauges(&metrics);
    service.kill();
    let mut service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    check_values(&metrics);
    assert_eq!(kpi_gauges(&metrics), before);
    assert_eq!(metrics.sum("kpi_events_rejected_total", &[]), 0.0);
    assert_eq!(read_all(&topics.deadletter).len(), bad.len());
    check_output(&latest_output(&topics.output));

    // SIGTERM: final snapshot, flush, commit, exit 0 well within 10 s.
    let (status, took) = service.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
