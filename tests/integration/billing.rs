//! Billing KPIs end to end: a known subscription history, checked exactly in /metrics and on
//! the output topic, its rejections on the dead-letter topic, and the same values after a
//! SIGKILL and a restart that replays the billing topic from its beginning.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Metrics, Service, Topics, committed_to_end, eventually, latest_output, now_ms, produce,
    producer, read_all, rfc3339,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn billing(id: &str, kind: &str, at: i64, customer: &str, segment: &str, extra: Value) -> Value {
    let mut v = json!({"event_id": id, "type": kind, "occurred_at": rfc3339(at),
        "customer_id": customer, "segment": segment});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

fn terms(sub: &str, price: i64, quantity: u32, currency: &str, interval: &str) -> Value {
    json!({"subscription_id": sub, "plan": "pro", "price": price, "quantity": quantity,
        "currency": currency, "interval": interval})
}

/// MRR and its movements, with the default rates EUR 1.08 and GBP 1.27:
/// - c1 (smb) 100/month since 40 days ago, doubled (quantity 2) 2 h ago: +100 expansion;
/// - c2 (smb) 100 EUR = 108/month 10 days ago, canceled 30 min ago: 108 churn;
/// - c3 (enterprise) 1200/year = 100/month 3 days ago, renewed 10 min ago;
/// - c4 (enterprise) 50 GBP = 63.50/month 20 min ago.
fn check_values(m: &Metrics) {
    let g = |name: &str, window: &str, segment: &str| {
        m.get(name, &[("window", window), ("segment", segment)])
    };
    let money = |name: &str, window: &str, segment: &str| {
        m.get(
            name,
            &[
                ("window", window),
                ("segment", segment),
                ("currency", "USD"),
            ],
        )
    };
    let movement = |kind: &str, window: &str| {
        m.get(
            "kpi_mrr_movement",
            &[
                ("kind", kind),
                ("window", window),
                ("segment", ""),
                ("currency", "USD"),
            ],
        )
    };
    assert_eq!(money("kpi_mrr", "current", ""), Some(363.5));
    assert_eq!(money("kpi_mrr", "current", "smb"), Some(200.0));
    assert_eq!(money("kpi_mrr", "current", "enterprise"), Some(163.5));
    assert_eq!(g("kpi_customers_active", "current", ""), Some(3.0));
    let arpa = 363_500_000.0 / 3.0 / 1e6;
    assert_eq!(money("kpi_arpa", "current", ""), Some(arpa));
    // 30 days: c1 was the only customer at the start, paying 100.
    assert_eq!(movement("new", "30d"), Some(271.5));
    assert_eq!(movement("expansion", "30d"), Some(100.0));
    assert_eq!(movement("churn", "30d"), Some(108.0));
    assert_eq!(movement("contraction", "30d"), Some(0.0));
    assert_eq!(movement("reactivation", "30d"), Some(0.0));
    assert_eq!(money("kpi_net_new_mrr", "30d", ""), Some(263.5));
    assert_eq!(money("kpi_mrr_at_window_start", "30d", ""), Some(100.0));
    assert_eq!(
        g("kpi_customers_active_at_window_start", "30d", ""),
        Some(1.0)
    );
    assert_eq!(g("kpi_customer_churn_ratio", "30d", ""), Some(1.0));
    assert_eq!(g("kpi_revenue_churn_ratio", "30d", ""), Some(1.08));
    assert_eq!(g("kpi_net_revenue_retention_ratio", "30d", ""), Some(0.92));
    assert_eq!(g("kpi_customer_retention_ratio", "30d", ""), Some(0.0));
    assert_eq!(g("kpi_renewal_ratio", "30d", ""), Some(0.5));
    // CLV = ARPA / the 30-day customer churn ratio (1.0).
    assert_eq!(money("kpi_clv", "current", ""), Some(arpa));
    // 1 hour: c1 (200), c2 (108) and c3 (100) were active at its start.
    assert_eq!(movement("new", "1h"), Some(63.5));
    assert_eq!(movement("churn", "1h"), Some(108.0));
    assert_eq!(movement("expansion", "1h"), Some(0.0));
    assert_eq!(money("kpi_net_new_mrr", "1h", ""), Some(-44.5));
    assert_eq!(money("kpi_mrr_at_window_start", "1h", ""), Some(408.0));
    assert_eq!(g("kpi_customer_churn_ratio", "1h", ""), Some(1.0 / 3.0));
    assert_eq!(g("kpi_revenue_churn_ratio", "1h", ""), Some(108.0 / 408.0));
    assert_eq!(
        g("kpi_net_revenue_retention_ratio", "1h", ""),
        Some(300.0 / 408.0)
    );
    assert_eq!(g("kpi_customer_retention_ratio", "1h", ""), Some(2.0 / 3.0));
    // 7 days: c3 and c4 new. In smb, c1 and c2 were active at its start and c2 churned.
    assert_eq!(movement("new", "7d"), Some(163.5));
    assert_eq!(g("kpi_customer_churn_ratio", "7d", "smb"), Some(0.5));
    // Enterprise: c3 active at the start of 24h, nobody churned: a ratio of 0, while its
    // 30-day ratio has no customers at the start, so CLV has no value there.
    assert_eq!(
        g("kpi_customer_churn_ratio", "24h", "enterprise"),
        Some(0.0)
    );
    assert_eq!(g("kpi_customer_churn_ratio", "30d", "enterprise"), None);
    assert_eq!(money("kpi_clv", "current", "enterprise"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_kpis_end_to_end_and_after_sigkill() {
    let topics = Topics::create("billing").await;
    let producer = producer();
    let now = now_ms();
    let events = [
        billing(
            "b1",
            "subscription.started",
            now - 40 * DAY,
            "c1",
            "smb",
            terms("s1", 10_000, 1, "USD", "month"),
        ),
        billing(
            "b2",
            "subscription.started",
            now - 10 * DAY,
            "c2",
            "smb",
            terms("s2", 10_000, 1, "EUR", "month"),
        ),
        billing(
            "b3",
            "subscription.started",
            now - 3 * DAY,
            "c3",
            "enterprise",
            terms("s3", 120_000, 1, "USD", "year"),
        ),
        billing(
            "b4",
            "subscription.changed",
            now - 2 * HOUR,
            "c1",
            "smb",
            terms("s1", 10_000, 2, "USD", "month"),
        ),
        billing(
            "b5",
            "subscription.canceled",
            now - 30 * MINUTE,
            "c2",
            "smb",
            json!({"subscription_id": "s2"}),
        ),
        billing(
            "b6",
            "subscription.renewed",
            now - 10 * MINUTE,
            "c3",
            "enterprise",
            json!({"subscription_id": "s3"}),
        ),
        billing(
            "b7",
            "subscription.started",
            now - 20 * MINUTE,
            "c4",
            "enterprise",
            terms("s4", 5_000, 1, "GBP", "month"),
        ),
    ];
    for e in &events {
        let key = e["customer_id"].as_str().unwrap();
        produce(
            &producer,
            &topics.billing,
            Some(key),
            e.to_string().as_bytes(),
        )
        .await;
    }
    let bad = [
        (
            "unknown_subscription",
            topics.billing.as_str(),
            billing(
                "x1",
                "subscription.canceled",
                now - MINUTE,
                "c5",
                "smb",
                json!({"subscription_id": "s9"}),
            ),
        ),
        (
            "unknown_currency",
            topics.billing.as_str(),
            billing(
                "x2",
                "subscription.started",
                now - MINUTE,
                "c6",
                "smb",
                terms("s6", 1_000, 1, "JPY", "month"),
            ),
        ),
        (
            "negative_duration",
            topics.tickets.as_str(),
            json!({"event_id": "x3", "type": "ticket.resolved", "occurred_at": rfc3339(now - HOUR),
                "customer_id": "c1", "ticket_id": "t1", "opened_at": rfc3339(now - MINUTE),
                "agent_replies": 1, "reopens": 0}),
        ),
    ];
    for (_, topic, e) in &bad {
        produce(&producer, topic, Some("k"), e.to_string().as_bytes()).await;
    }

    let mut service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    check_values(&metrics);
    for (reason, _, _) in &bad {
        assert_eq!(
            metrics.sum("kpi_events_rejected_total", &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }
    // The 40-day-old start is late for every window but still counts in the current MRR.
    assert_eq!(
        metrics.get("kpi_events_late_total", &[("topic", &topics.billing)]),
        Some(1.0)
    );
    assert_eq!(
        metrics.get("kpi_events_processed_total", &[("topic", &topics.billing)]),
        Some(7.0)
    );

    let output = eventually("the output topic", Duration::from_secs(30), async || {
        let output = latest_output(&topics.output);
        output.contains_key("clv/current").then_some(output)
    })
    .await;
    assert_eq!(output["mrr/current"]["value"], json!(363.5));
    assert_eq!(output["mrr/current"]["window"], json!("current"));
    assert_eq!(
        output["mrr_churn/1h"]["labels"],
        json!({"kind": "churn", "currency": "USD"})
    );
    assert_eq!(output["mrr_churn/1h"]["value"], json!(108));
    assert_eq!(output["revenue_churn/30d"]["value"], json!(1.08));
    assert_eq!(
        output["revenue_churn/30d"]["components"],
        json!({"churn": 108, "contraction": 0, "mrr_at_start": 100})
    );
    assert_eq!(
        output["clv/current/segment=enterprise"]["value"],
        Value::Null
    );
    let dead = read_all(&topics.deadletter);
    assert_eq!(dead.len(), bad.len());

    let inputs = topics.inputs();
    eventually("committed offsets", Duration::from_secs(30), async || {
        committed_to_end(&topics.group, &inputs).then_some(())
    })
    .await;
    service.kill();
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    check_values(&metrics);
    assert_eq!(metrics.sum("kpi_events_rejected_total", &[]), 0.0);
    assert_eq!(read_all(&topics.deadletter).len(), bad.len());
}
