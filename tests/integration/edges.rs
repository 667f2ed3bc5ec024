//! The edges where a value could go silently wrong: producers whose clocks or timestamps run
//! ahead, and amounts near the integer limits. Each ends with exact values, before and
//! after a restart that replays the topics.

use serde_json::json;

use crate::harness::{
    Metrics, Service, Topics, eventually, now_ms, produce, produce_stamped, producer, read_all,
    rfc3339,
};

const MINUTE: i64 = 60_000;

fn nps(metrics: &Metrics, window: &str, segment: &str) -> (Option<f64>, Option<f64>) {
    let labels = [("window", window), ("segment", segment)];
    (
        metrics.get("kpi_nps", &labels),
        metrics.get("kpi_nps_responses", &labels),
    )
}

/// Produces an NPS answer of customer `c` in segment `smb`, keyed by the customer.
async fn produce_answer(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    id: &str,
    at_ms: i64,
    score: u8,
) {
    let answer = json!({"event_id": id, "type": "survey.responded",
        "occurred_at": rfc3339(at_ms), "customer_id": "c", "segment": "smb",
        "survey": "nps", "score": score});
    produce(producer, topic, Some("c"), answer.to_string().as_bytes()).await;
}

fn dead_letter_reasons(topic: &str) -> Vec<String> {
    let mut reasons: Vec<String> = read_all(topic)
        .into_iter()
        .map(|r| r.headers["kpi-stream.reason"].clone())
        .collect();
    reasons.sort();
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stamped_ahead_of_the_clock_erase_no_answer() {
    let topics = Topics::create_on(&crate::harness::brokers(), "future", 1, true).await;
    let producer = producer();
    let now = now_ms();
    // Promoters where the attacks' buckets would wrap onto in the 1h window's ring: the
    // last ten minutes, and 56 minutes ago.
    let mut minutes: Vec<i64> = (1..=10).collect();
    minutes.push(56);
    for m in &minutes {
        let id = format!("a{m}");
        produce_answer(&producer, &topics.surveys, &id, now - m * MINUTE, 10).await;
    }
    // A message stamped 59.5 minutes ahead, dated 64 minutes ahead; and a producer whose
    // clock runs 10 minutes fast, stamping and dating its answer by it.
    for (id, stamp, at) in [
        ("attack", now + 59 * MINUTE + 30_000, now + 64 * MINUTE),
        ("fast-clock", now + 10 * MINUTE, now + 10 * MINUTE),
    ] {
        let detractor = json!({"event_id": id, "type": "survey.responded",
            "occurred_at": rfc3339(at), "customer_id": "c", "segment": "smb",
            "survey": "nps", "score": 0});
        produce_stamped(
            &producer,
            &topics.surveys,
            Some("c"),
            detractor.to_string().as_bytes(),
            Some(stamp),
        )
        .await;
    }
    let expected = (Some(100.0), Some(minutes.len() as f64));
    let mut service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    for segment in ["", "smb"] {
        assert_eq!(nps(&metrics, "1h", segment), expected, "{segment:?}");
        assert_eq!(nps(&metrics, "24h", segment), expected, "{segment:?}");
    }
    eventually(
        "two dead letters",
        std::time::Duration::from_secs(30),
        async || (dead_letter_reasons(&topics.deadletter).len() == 2).then_some(()),
    )
    .await;
    assert_eq!(
        dead_letter_reasons(&topics.deadletter),
        ["future_timestamp", "future_timestamp"]
    );
    // Killed only once the offsets past the acknowledged dead letters are committed: a crash
    // before that hands them again to the next run (at least once), which is not under test.
    eventually(
        "offsets committed",
        std::time::Duration::from_secs(30),
        async || crate::harness::committed_to_end(&topics.group, &[&topics.surveys]).then_some(()),
    )
    .await;
    // A replay, within minutes, still has both stamps ahead of its clock.
    service.kill();
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    for segment in ["", "smb"] {
        assert_eq!(nps(&metrics, "1h", segment), expected, "{segment:?}");
    }
    assert_eq!(dead_letter_reasons(&topics.deadletter).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whale_subscriptions_beyond_the_money_range_are_rejected_and_mrr_stays_exact() {
    let topics = Topics::create_on(&crate::harness::brokers(), "whales", 1, true).await;
    let producer = producer();
    let now = now_ms();
    let start = |id: &str, customer: &str, price: i64| {
        json!({"event_id": id, "type": "subscription.started",
            "occurred_at": rfc3339(now - 5 * MINUTE), "customer_id": customer,
            "subscription_id": format!("s-{id}"), "plan": "whale", "price": price,
            "currency": "USD", "interval": "month"})
        .to_string()
    };
    // 49.00, then two of 5 × 10¹² each (in cents): the second would take the partition's
    // MRR past 2⁶³ − 1 micros, which once made `mrr_new` negative and clipped the MRR.
    for (id, customer, price) in [
        ("small", "c1", 4_900),
        ("whale-1", "w1", 500_000_000_000_000),
        ("whale-2", "w2", 500_000_000_000_000),
    ] {
        produce(
            &producer,
            &topics.billing,
            Some("one-partition"),
            start(id, customer, price).as_bytes(),
        )
        .await;
    }
    let expected = 5_000_000_000_049.0;
    let check = |metrics: &Metrics| {
        let money = |name: &str, window: &str| {
            metrics.get(
                name,
                &[("window", window), ("segment", ""), ("currency", "USD")],
            )
        };
        assert_eq!(money("kpi_mrr", "current"), Some(expected));
        assert_eq!(
            metrics.get(
                "kpi_mrr_movement",
                &[
                    ("kind", "new"),
                    ("window", "1h"),
                    ("segment", ""),
                    ("currency", "USD")
                ]
            ),
            Some(expected)
        );
        assert_eq!(
            metrics.get(
                "kpi_customers_active",
                &[("window", "current"), ("segment", "")]
            ),
            Some(2.0)
        );
    };
    let mut service = Service::start(&topics.env());
    service.wait_ready().await;
    check(&service.metrics().await);
    eventually(
        "the dead letter",
        std::time::Duration::from_secs(30),
        async || (!dead_letter_reasons(&topics.deadletter).is_empty()).then_some(()),
    )
    .await;
    let letters = read_all(&topics.deadletter);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].headers["kpi-stream.reason"], "out_of_range");
    assert_eq!(
        letters[0].payload.as_deref(),
        Some(start("whale-2", "w2", 500_000_000_000_000).as_bytes())
    );
    service.kill();
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    check(&service.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_output_topic_is_logged_once_and_gets_every_value_once_created() {
    let mut topics = Topics::create_on(&crate::harness::brokers(), "outdown", 1, true).await;
    // An output topic that does not exist yet (the broker does not create topics).
    topics.output = format!("{}-later", topics.output);
    let producer = producer();
    let now = now_ms();
    for (id, score) in [("a", 10), ("b", 3)] {
        produce_answer(&producer, &topics.surveys, id, now - MINUTE, score).await;
    }
    let mut env = topics.env();
    // Fail output deliveries after 2 s instead of 30 s.
    env.push((
        "KPI_STREAM_KAFKA__PROPERTIES".into(),
        "{\"message.timeout.ms\"=\"2000\"}".into(),
    ));
    let log = std::env::temp_dir().join(format!("{}.log", topics.group));
    let mut service = Service::start_logging_to(&env, &log);
    service.wait_ready().await;
    let records = {
        let (_, body) = service.get("/kpis").await.unwrap();
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len()
    };
    // Several publishes' worth of failed messages.
    eventually(
        "output failures",
        std::time::Duration::from_secs(60),
        async || {
            let m = service.metrics().await;
            (m.get("kpi_output_failures_total", &[]) >= Some(3.0 * records as f64)).then_some(())
        },
    )
    .await;
    crate::harness::create_topics(&topics.brokers, &[(&topics.output, 1)]).await;
    // Nothing changes any more, and the next full snapshot is minutes away: every key must
    // come from the publish after the failures.
    eventually(
        "every value on the output topic",
        std::time::Duration::from_secs(60),
        async || (crate::harness::latest_output(&topics.output).len() == records).then_some(()),
    )
    .await;
    let (status, _) = service.terminate();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let failing = text.matches("output messages failing").count();
    let recovered = text.matches("output messages delivered again").count();
    assert_eq!((failing, recovered), (1, 1), "{text}");
    let warnings = text.lines().filter(|l| l.contains("WARN")).count();
    assert!(warnings < 10, "{warnings} warnings:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_logged_once_not_per_attempt() {
    let log = std::env::temp_dir().join(format!("outage-{}.log", now_ms()));
    let mut service = Service::start_logging_to(
        &[(
            "KPI_STREAM_KAFKA__BROKERS".to_owned(),
            "127.0.0.1:1".to_owned(),
        )],
        &log,
    );
    eventually("/healthz", std::time::Duration::from_secs(30), async || {
        matches!(service.get("/healthz").await, Some((200, _))).then_some(())
    })
    .await;
    // The log's rate is the point: let twenty seconds of connection attempts go by (about
    // 800 log lines before).
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    let (status, _) = service.terminate();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("no broker reachable").count(), 1, "{text}");
    let lines = text.lines().count();
    assert!(lines < 30, "{lines} lines:\n{text}");
}
