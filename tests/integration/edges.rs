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
        let answer = json!({"event_id": format!("a{m}"), "type": "survey.responded",
            "occurred_at": rfc3339(now - m * MINUTE), "customer_id": "c", "segment": "smb",
            "survey": "nps", "score": 10});
        produce(
            &producer,
            &topics.surveys,
            Some("c"),
            answer.to_string().as_bytes(),
        )
        .await;
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
