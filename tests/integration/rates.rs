//! Rates that change over time end to end: a compacted rates topic read before the billing
//! topic, each amount converted at the rate of its event's time and kept until the
//! subscription's next event, a malformed rate counted and dead-lettered, a rate written
//! while running taken by the events after it, and the same values after a SIGKILL.

use std::time::Duration;

use serde_json::{Value, json};

use crate::billing::produce_billing;
use crate::harness::{
    Metrics, Service, Topics, committed_to_end, create_topic_with_config, eventually, now_ms,
    produce, producer, read_all, rfc3339,
};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn rate(currency: &str, rate: f64, valid_from: i64) -> (String, Value) {
    let from = rfc3339(valid_from);
    (
        format!("{currency}@{from}"),
        json!({"currency": currency, "rate": rate, "valid_from": from}),
    )
}

fn subscription(
    id: &str,
    kind: &str,
    at: i64,
    customer: &str,
    price: i64,
    quantity: u32,
    currency: &str,
) -> Value {
    json!({"event_id": id, "type": kind, "occurred_at": rfc3339(at), "customer_id": customer,
        "segment": "smb", "subscription_id": format!("s-{customer}"), "plan": "pro",
        "price": price, "quantity": quantity, "currency": currency, "interval": "month"})
}

/// Produces `rates` (key, message) to the rates topic.
async fn produce_rates(topic: &str, rates: &[(String, Value)]) {
    let producer = producer();
    for (key, message) in rates {
        produce(&producer, topic, Some(key), message.to_string().as_bytes()).await;
    }
}

fn mrr(m: &Metrics) -> Option<f64> {
    m.get(
        "kpi_mrr",
        &[("window", "current"), ("segment", ""), ("currency", "USD")],
    )
}

fn movement(m: &Metrics, kind: &str) -> Option<f64> {
    m.get(
        "kpi_mrr_movement",
        &[
            ("kind", kind),
            ("window", "30d"),
            ("segment", ""),
            ("currency", "USD"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_convert_at_the_rate_of_their_time_across_a_restart() {
    let topics = Topics::create("rates").await;
    let rates_topic = format!("rates-{}", topics.group);
    create_topic_with_config(
        &topics.brokers,
        &rates_topic,
        &[("cleanup.policy", "compact")],
    )
    .await;
    let mut env = topics.env();
    env.push((
        "KPI_STREAM_BILLING__RATES_TOPIC".into(),
        rates_topic.clone(),
    ));
    let now = now_ms();
    // EUR: the fixed 1.08, then 1.00 from 20 days ago, 1.50 from 5 days ago. CHF has no fixed
    // rate: 1.10 from 15 days ago.
    let malformed = json!({"currency": "EUR", "rate": "1.2", "valid_from": rfc3339(now - DAY)});
    produce_rates(
        &rates_topic,
        &[
            rate("EUR", 1.5, now - 5 * DAY),
            rate("EUR", 1.0, now - 20 * DAY),
            rate("CHF", 1.1, now - 15 * DAY),
            ("EUR@bad".to_owned(), malformed),
        ],
    )
    .await;
    // c1: 100 EUR at 1.00 (10 days ago), doubled at 1.50 (2 days ago): 300, an expansion of
    // 200. c2: 100 EUR at the fixed 1.08 (25 days ago), untouched by the later rates: 108.
    // c3: CHF before its first rate: unknown_currency. c4: 100 CHF at 1.10: 110.
    let events = [
        subscription(
            "b1",
            "subscription.started",
            now - 10 * DAY,
            "c1",
            10_000,
            1,
            "EUR",
        ),
        subscription(
            "b2",
            "subscription.changed",
            now - 2 * DAY,
            "c1",
            10_000,
            2,
            "EUR",
        ),
        subscription(
            "b3",
            "subscription.started",
            now - 25 * DAY,
            "c2",
            10_000,
            1,
            "EUR",
        ),
        subscription(
            "b4",
            "subscription.started",
            now - 20 * DAY,
            "c3",
            10_000,
            1,
            "CHF",
        ),
        subscription(
            "b5",
            "subscription.started",
            now - DAY,
            "c4",
            10_000,
            1,
            "CHF",
        ),
    ];
    produce_billing(&topics, &events).await;

    let service = Service::start(&env);
    service.wait_ready().await;
    let m = service.metrics().await;
    assert_eq!(mrr(&m), Some(518.0));
    assert_eq!(movement(&m, "new"), Some(318.0));
    assert_eq!(movement(&m, "expansion"), Some(200.0));
    let rejected = |m: &Metrics, topic: &str, reason: &str| {
        m.get(
            "kpi_events_rejected_total",
            &[("topic", topic), ("reason", reason)],
        )
    };
    assert_eq!(rejected(&m, &rates_topic, "wrong_type"), Some(1.0));
    assert_eq!(rejected(&m, &topics.billing, "unknown_currency"), Some(1.0));
    assert_eq!(
        m.get("kpi_events_processed_total", &[("topic", &rates_topic)]),
        Some(3.0)
    );
    assert_eq!(m.get("kpi_rates_held", &[]), Some(3.0));
    let dead = read_all(&topics.deadletter);
    let reasons = |dead: &[crate::harness::Read]| {
        let mut reasons: Vec<(String, String)> = dead
            .iter()
            .map(|d| {
                (
                    d.headers["kpi-stream.source.topic"].clone(),
                    d.headers["kpi-stream.reason"].clone(),
                )
            })
            .collect();
        reasons.sort();
        reasons
    };
    let mut expected = vec![
        (topics.billing.clone(), "unknown_currency".to_owned()),
        (rates_topic.clone(), "wrong_type".to_owned()),
    ];
    expected.sort();
    assert_eq!(reasons(&dead), expected);

    // A rate written while running: the MRR held stays; the next event converts at it.
    produce_rates(&rates_topic, &[rate("EUR", 3.0, now - HOUR)]).await;
    eventually("the new rate", Duration::from_secs(30), async || {
        let m = service.metrics().await;
        (m.get("kpi_rates_held", &[]) == Some(4.0)).then_some(())
    })
    .await;
    let c5 = subscription("b6", "subscription.started", now, "c5", 10_000, 1, "EUR");
    produce_billing(&topics, &[c5]).await;
    let m = eventually("c5's MRR", Duration::from_secs(30), async || {
        let m = service.metrics().await;
        (mrr(&m) != Some(518.0)).then_some(m)
    })
    .await;
    assert_eq!(mrr(&m), Some(818.0));
    assert_eq!(movement(&m, "new"), Some(618.0));

    // After a SIGKILL the billing topic is replayed with every rate known: the same values.
    let inputs = topics.inputs();
    eventually("committed offsets", Duration::from_secs(30), async || {
        committed_to_end(&topics.group, &inputs).then_some(())
    })
    .await;
    let mut service = service;
    service.kill();
    let service = Service::start(&env);
    service.wait_ready().await;
    let m = service.metrics().await;
    assert_eq!(mrr(&m), Some(818.0));
    assert_eq!(movement(&m, "new"), Some(618.0));
    assert_eq!(movement(&m, "expansion"), Some(200.0));
    // The billing rejection was reported by the first run; the rates topic is read whole at
    // each start, so its malformed rate is counted and dead-lettered again.
    assert_eq!(rejected(&m, &topics.billing, "unknown_currency"), Some(0.0));
    assert_eq!(rejected(&m, &rates_topic, "wrong_type"), Some(1.0));
    let dead = eventually(
        "the rate dead-lettered again",
        Duration::from_secs(30),
        async || {
            let dead = read_all(&topics.deadletter);
            (dead.len() == 3).then_some(dead)
        },
    )
    .await;
    expected.push((rates_topic.clone(), "wrong_type".to_owned()));
    expected.sort();
    assert_eq!(reasons(&dead), expected);

    // history reads every rate before its replay: the same MRR.
    let at = rfc3339(now_ms());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .args(["history", "--format", "jsonl", "--from", &at, "--to", &at])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("history: rates topic, rejected, wrong_type: 1"),
        "{stderr}"
    );
    let history_mrr: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| {
            v["kpi"] == "mrr"
                && v["window"] == "current"
                && v["labels"] == json!({"currency": "USD"})
        })
        .map(|v| v["value"].clone())
        .collect();
    assert_eq!(history_mrr, [json!(818)]);
}
