//! Hostile input end to end: every kind of bad message lands on the dead-letter topic with
//! its reason, duplicates change nothing, and the values are those of the valid events.

use std::collections::HashMap;

use serde_json::json;

use crate::harness::{
    Service, Topics, brokers, create_topic_with_config, now_ms, produce, producer, read_all,
    rfc3339,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_dead_lettered_and_changes_nothing() {
    let mut topics = Topics::create_on(&brokers(), "hostile", 1, true).await;
    // An input topic that accepts a 10 MB message, as a misconfigured cluster might.
    topics.surveys = format!("{}-big", topics.surveys);
    create_topic_with_config(
        &brokers(),
        &topics.surveys,
        &[("max.message.bytes", "12000000")],
    )
    .await;
    let producer = producer();
    let now = now_ms();
    let at = rfc3339(now - 60_000);
    let valid = |id: &str, score: u8| {
        json!({"event_id": id, "type": "survey.responded", "occurred_at": at,
            "customer_id": "c", "survey": "nps", "score": score})
        .to_string()
    };
    let survey_with = |extra: &str| {
        format!(
            r#"{{"event_id":"h","type":"survey.responded","occurred_at":"{at}","customer_id":"c","survey":"nps"{extra}}}"#
        )
    };
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let hostile: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "invalid_utf8",
            Some("k1"),
            b"{\"event_id\":\"\xff\xfe\"}".to_vec(),
        ),
        ("not_object", Some("k2"), b"[1,2,3]".to_vec()),
        ("not_object", Some("k3"), b"42".to_vec()),
        (
            "too_deep",
            Some("k4"),
            survey_with(&format!(r#","score":9,"x":{deep}"#)).into_bytes(),
        ),
        (
            "wrong_type",
            Some("k5"),
            survey_with(r#","score":"9""#).into_bytes(),
        ),
        (
            "wrong_type",
            Some("k6"),
            survey_with(r#","score":9.0"#).into_bytes(),
        ),
        (
            "invalid_json",
            Some("k7"),
            survey_with(r#","score":NaN"#).into_bytes(),
        ),
        (
            "invalid_json",
            Some("k8"),
            survey_with(r#","score":Infinity"#).into_bytes(),
        ),
        (
            "too_long",
            Some("k9"),
            valid("h", 9)
                .replace(
                    "\"customer_id\":\"c\"",
                    &format!("\"customer_id\":\"{}\"", "c".repeat(100_000)),
                )
                .into_bytes(),
        ),
        ("too_large", Some("k10"), vec![b' '; 10 * 1024 * 1024]),
        ("empty", None, Vec::new()),
        (
            "duplicate_field",
            Some("k12"),
            survey_with(r#","score":9,"score":0"#).into_bytes(),
        ),
        (
            "invalid_timestamp",
            Some("k13"),
            valid("h", 9)
                .replace(&at, "2026-01-01T00:00:00")
                .into_bytes(),
        ),
        (
            "invalid_timestamp",
            Some("k14"),
            valid("h", 9)
                .replace(&at, "+10000-01-01T00:00:00Z")
                .into_bytes(),
        ),
        (
            "future_timestamp",
            Some("k15"),
            valid("h", 9)
                .replace(&at, "9999-12-31T23:59:59Z")
                .into_bytes(),
        ),
    ];
    produce(
        &producer,
        &topics.surveys,
        Some("c"),
        valid("v1", 10).as_bytes(),
    )
    .await;
    for (_, key, payload) in &hostile {
        produce(&producer, &topics.surveys, *key, payload).await;
    }
    // At-least-once producers: v1 again, and v2 twice.
    for (id, score) in [("v1", 10), ("v2", 0), ("v2", 0)] {
        produce(
            &producer,
            &topics.surveys,
            Some("c"),
            valid(id, score).as_bytes(),
        )
        .await;
    }

    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let m = service.metrics().await;
    let g = |name: &str| m.get(name, &[("window", "1h"), ("segment", "")]);
    assert_eq!(g("kpi_nps_responses"), Some(2.0));
    assert_eq!(g("kpi_nps"), Some(0.0));
    assert_eq!(
        m.get("kpi_events_duplicate_total", &[("topic", &topics.surveys)]),
        Some(2.0)
    );
    let mut expected: HashMap<&str, f64> = HashMap::new();
    for (reason, _, _) in &hostile {
        *expected.entry(reason).or_default() += 1.0;
    }
    for (reason, count) in &expected {
        assert_eq!(
            m.get(
                "kpi_events_rejected_total",
                &[("topic", &topics.surveys), ("reason", reason)]
            ),
            Some(*count),
            "{reason}"
        );
    }

    crate::harness::eventually(
        "every dead letter",
        std::time::Duration::from_secs(30),
        async || {
            let m = service.metrics().await;
            (m.get("kpi_deadletter_pending", &[]) == Some(0.0)).then_some(())
        },
    )
    .await;
    let dead = read_all(&topics.deadletter);
    assert_eq!(dead.len(), hostile.len());
    // Dead letters are delivered independently, so match them by source offset: the first
    // valid event is at offset 0, the hostile ones follow in order.
    let mut dead = dead;
    dead.sort_by_key(|d| {
        d.headers["kpi-stream.source.offset"]
            .parse::<i64>()
            .unwrap()
    });
    for (d, (reason, key, payload)) in dead.iter().zip(&hostile) {
        assert_eq!(d.headers["kpi-stream.reason"], *reason);
        assert_eq!(d.key.as_deref(), key.map(str::as_bytes), "{reason}");
        let got = d.payload.clone().unwrap_or_default();
        if *reason == "too_large" {
            // Cut to fit a dead-letter topic, with the original size in a header.
            assert_eq!(d.headers["kpi-stream.truncated"], payload.len().to_string());
            assert_eq!(got, payload[..got.len()]);
        } else {
            assert_eq!(got, *payload, "{reason}");
        }
    }
    assert_eq!(service.get("/healthz").await.map(|r| r.0), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_consumer_group_does_not_dead_letter_the_history_again() {
    let topics = Topics::create_on(&brokers(), "secondgroup", 1, true).await;
    let producer = producer();
    let at = rfc3339(now_ms() - 60_000);
    let answer = |id: &str, score: u8| {
        json!({"event_id": id, "type": "survey.responded", "occurred_at": at,
            "customer_id": "c", "survey": "nps", "score": score})
        .to_string()
    };
    let (a, b) = (answer("a", 10), answer("b", 0));
    let history: [&[u8]; 5] = [a.as_bytes(), b"{broken", b"[1]", b.as_bytes(), b""];
    for payload in history {
        produce(&producer, &topics.surveys, Some("c"), payload).await;
    }
    let rejected = |m: &crate::harness::Metrics| m.sum("kpi_events_rejected_total", &[]);
    let nps = |m: &crate::harness::Metrics| {
        m.get("kpi_nps_responses", &[("window", "1h"), ("segment", "")])
    };

    // The first group, asked to report its history (as the harness does), dead-letters it.
    let mut first = Service::start(&topics.env());
    first.wait_ready().await;
    crate::harness::eventually(
        "the first group's offsets at the end",
        std::time::Duration::from_secs(30),
        async || crate::harness::committed_to_end(&topics.group, &[&topics.surveys]).then_some(()),
    )
    .await;
    assert_eq!(rejected(&first.metrics().await), 3.0);
    assert_eq!(read_all(&topics.deadletter).len(), 3);
    first.terminate();

    // A second group with the default: the same values, nothing reported again.
    let second_group = format!("{}-second", topics.group);
    let mut env = topics.env();
    env.push(("KPI_STREAM_KAFKA__GROUP_ID".into(), second_group.clone()));
    env.push(("KPI_STREAM_EVENTS__REPORT_HISTORY".into(), "false".into()));
    let second = Service::start(&env);
    second.wait_ready().await;
    // Its commits reach the end only once every dead letter it sent is acknowledged.
    crate::harness::eventually(
        "the second group's offsets at the end",
        std::time::Duration::from_secs(30),
        async || crate::harness::committed_to_end(&second_group, &[&topics.surveys]).then_some(()),
    )
    .await;
    let m = second.metrics().await;
    assert_eq!(nps(&m), Some(2.0));
    assert_eq!(rejected(&m), 0.0);
    assert_eq!(read_all(&topics.deadletter).len(), 3);

    // What arrives after its first assignment is its own to report.
    produce(&producer, &topics.surveys, Some("c"), b"{late-broken").await;
    crate::harness::eventually(
        "the new dead letter",
        std::time::Duration::from_secs(30),
        async || (read_all(&topics.deadletter).len() == 4).then_some(()),
    )
    .await;
    assert_eq!(rejected(&second.metrics().await), 1.0);
}
