//! Billing KPIs end to end: a known subscription history, checked exactly in /metrics and on
//! the output topic, its rejections on the dead-letter topic, and the same values after a
//! SIGKILL and a restart that replays the billing topic from its beginning; the same for the
//! revenue ratios (quick ratio, gross retention, churn by reason).

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

/// Produces `events` to the billing topic, each keyed by its customer.
pub(crate) async fn produce_billing(topics: &Topics, events: &[Value]) {
    let producer = producer();
    for e in events {
        let key = e["customer_id"].as_str().unwrap();
        produce(
            &producer,
            &topics.billing,
            Some(key),
            e.to_string().as_bytes(),
        )
        .await;
    }
}

/// Once every input offset is committed, kills `service` (SIGKILL) and starts another one
/// on the same topics, which replays them.
async fn sigkill_and_restart(mut service: Service, topics: &Topics) -> Service {
    let inputs = topics.inputs();
    eventually("committed offsets", Duration::from_secs(30), async || {
        committed_to_end(&topics.group, &inputs).then_some(())
    })
    .await;
    service.kill();
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    service
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
    produce_billing(&topics, &events).await;
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

    let service = Service::start(&topics.env());
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

    let service = sigkill_and_restart(service, &topics).await;
    let metrics = service.metrics().await;
    check_values(&metrics);
    assert_eq!(metrics.sum("kpi_events_rejected_total", &[]), 0.0);
    assert_eq!(read_all(&topics.deadletter).len(), bad.len());
}

/// The revenue ratios of a known hour, all amounts in USD:
/// - c1 (smb) 100 since 3 days ago, contracted to 60 40 min ago;
/// - c2 (smb) 200 since 2 days ago, canceled for a failed payment 30 min ago;
/// - c3 (enterprise) 50 started 50 min ago, canceled (no reason: voluntary) 20 min ago;
/// - c4 (enterprise) 300 since 2 days ago, expanded to 400 10 min ago;
/// - c5 (smb) 80 started 45 min ago.
///
/// In 1h and 24h, c1, c2 and c4 (600, three subscriptions) were active at the start: new
/// 130, expansion 100, contraction 40, churn 250 (200 delinquent, 50 voluntary). Quick ratio
/// 230 / 290; GRR (600 − 40 − 200) / 600 = 0.6, c3's churn being that of a customer acquired
/// in the window; NRR (600 + 100 − 40 − 250) / 600; customer churn 1/3 for each reason;
/// subscription churn 2 / 3.
fn check_revenue(m: &Metrics) {
    let g = |name: &str, window: &str, segment: &str| {
        m.get(name, &[("window", window), ("segment", segment)])
    };
    let by_reason = |name: &str, reason: &str, window: &str, segment: &str| {
        m.get(
            name,
            &[("reason", reason), ("window", window), ("segment", segment)],
        )
    };
    for window in ["1h", "24h"] {
        assert_eq!(g("kpi_quick_ratio", window, ""), Some(230.0 / 290.0));
        assert_eq!(
            g("kpi_gross_revenue_retention_ratio", window, ""),
            Some(0.6)
        );
        assert_eq!(
            g("kpi_net_revenue_retention_ratio", window, ""),
            Some(410.0 / 600.0)
        );
        for reason in ["voluntary", "delinquent"] {
            assert_eq!(
                by_reason("kpi_customer_churn_by_reason_ratio", reason, window, ""),
                Some(1.0 / 3.0),
                "{reason}"
            );
        }
        assert_eq!(
            g("kpi_subscription_churn_ratio", window, ""),
            Some(2.0 / 3.0)
        );
    }
    assert_eq!(
        m.get(
            "kpi_mrr_churn_by_reason",
            &[
                ("reason", "delinquent"),
                ("window", "1h"),
                ("segment", ""),
                ("currency", "USD")
            ]
        ),
        Some(200.0)
    );
    assert_eq!(
        m.get(
            "kpi_mrr_lost_by_customers_at_window_start",
            &[("window", "1h"), ("segment", ""), ("currency", "USD")]
        ),
        Some(240.0)
    );
    // The total churn keeps its series: no reason label on it.
    assert_eq!(g("kpi_customer_churn_ratio", "1h", ""), Some(2.0 / 3.0));
    // smb: c1 and c2 (300) at the start; new 80, contraction 40, churn 200 (delinquent).
    assert_eq!(g("kpi_quick_ratio", "1h", "smb"), Some(80.0 / 240.0));
    assert_eq!(
        g("kpi_gross_revenue_retention_ratio", "1h", "smb"),
        Some(0.2)
    );
    assert_eq!(
        by_reason(
            "kpi_customer_churn_by_reason_ratio",
            "delinquent",
            "1h",
            "smb"
        ),
        Some(0.5)
    );
    assert_eq!(
        by_reason(
            "kpi_customer_churn_by_reason_ratio",
            "voluntary",
            "1h",
            "smb"
        ),
        Some(0.0)
    );
    // enterprise: c4 (300) at the start; c3 came and went inside the hour, which leaves
    // its gross retention whole.
    assert_eq!(g("kpi_quick_ratio", "1h", "enterprise"), Some(3.0));
    assert_eq!(
        g("kpi_gross_revenue_retention_ratio", "1h", "enterprise"),
        Some(1.0)
    );
    // 7 days: nobody was active at the start; every start is new.
    assert_eq!(g("kpi_gross_revenue_retention_ratio", "7d", ""), None);
    assert_eq!(g("kpi_quick_ratio", "7d", ""), Some(830.0 / 290.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revenue_ratios_end_to_end_and_after_sigkill() {
    let topics = Topics::create("revenue").await;
    let now = now_ms();
    let usd = |sub: &str, price: i64| terms(sub, price, 1, "USD", "month");
    let events = [
        billing(
            "r1",
            "subscription.started",
            now - 3 * DAY,
            "c1",
            "smb",
            usd("s1", 10_000),
        ),
        billing(
            "r2",
            "subscription.started",
            now - 2 * DAY,
            "c2",
            "smb",
            usd("s2", 20_000),
        ),
        billing(
            "r3",
            "subscription.started",
            now - 2 * DAY,
            "c4",
            "enterprise",
            usd("s4", 30_000),
        ),
        billing(
            "r4",
            "subscription.started",
            now - 50 * MINUTE,
            "c3",
            "enterprise",
            usd("s3", 5_000),
        ),
        billing(
            "r5",
            "subscription.started",
            now - 45 * MINUTE,
            "c5",
            "smb",
            usd("s5", 8_000),
        ),
        billing(
            "r6",
            "subscription.changed",
            now - 40 * MINUTE,
            "c1",
            "smb",
            usd("s1", 6_000),
        ),
        billing(
            "r7",
            "subscription.canceled",
            now - 30 * MINUTE,
            "c2",
            "smb",
            json!({"subscription_id": "s2", "reason": "delinquent"}),
        ),
        billing(
            "r8",
            "subscription.canceled",
            now - 20 * MINUTE,
            "c3",
            "enterprise",
            json!({"subscription_id": "s3"}),
        ),
        billing(
            "r9",
            "subscription.changed",
            now - 10 * MINUTE,
            "c4",
            "enterprise",
            usd("s4", 40_000),
        ),
        // A reason the contract does not know: rejected, and nothing changes.
        billing(
            "x1",
            "subscription.canceled",
            now - 5 * MINUTE,
            "c5",
            "smb",
            json!({"subscription_id": "s5", "reason": "chargeback"}),
        ),
    ];
    produce_billing(&topics, &events).await;

    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    check_revenue(&metrics);
    assert_eq!(
        metrics.sum("kpi_events_rejected_total", &[("reason", "invalid_value")]),
        1.0
    );
    let dead = read_all(&topics.deadletter);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].headers.get("kpi-stream.reason").map(String::as_str),
        Some("invalid_value")
    );

    let output = eventually("the output topic", Duration::from_secs(30), async || {
        let output = latest_output(&topics.output);
        output
            .contains_key("customer_churn_delinquent/1h")
            .then_some(output)
    })
    .await;
    assert_eq!(
        output["quick_ratio/1h"]["components"],
        json!({"new": 130, "reactivation": 0, "expansion": 100, "contraction": 40, "churn": 250})
    );
    assert_eq!(
        output["gross_revenue_retention/1h"]["components"],
        json!({"mrr_at_start": 600, "lost": 240})
    );
    assert_eq!(output["gross_revenue_retention/1h"]["value"], json!(0.6));
    assert_eq!(
        output["mrr_churn_delinquent/1h"]["labels"],
        json!({"reason": "delinquent", "currency": "USD"})
    );
    assert_eq!(output["mrr_churn_delinquent/1h"]["value"], json!(200));
    assert_eq!(
        output["quick_ratio/7d/segment=smb"]["value"],
        json!(380.0 / 240.0)
    );

    let service = sigkill_and_restart(service, &topics).await;
    let metrics = service.metrics().await;
    check_revenue(&metrics);
}
