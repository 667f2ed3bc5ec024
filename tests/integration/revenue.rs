//! The revenue ratios and trial conversion of a known history, computed by hand, as the
//! global values of two instances that share the billing partitions, after one of them is
//! killed (SIGKILL) and the other replays its partitions, and after it comes back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::billing::{DAY, MINUTE, billing, produce_billing, revenue_events, terms};
use crate::harness::{Service, Topics, brokers, eventually, latest_output, now_ms, rfc3339};

const HOUR: i64 = 60 * MINUTE;

/// Trials of the `midmarket` segment, beside the revenue history of
/// [`crate::billing::check_revenue`]:
/// - c6: trial from 10 days ago to 3 days ago, converted 2 days ago (within the 3 days of
///   grace) at 50/month;
/// - c7: trial from 9 days ago to 5 days ago, expired 2 days ago (its end plus the grace),
///   which the partition learns from c7's next event; that event, a free subscription of
///   the same id 30 minutes ago, is a new subscription, not a conversion;
/// - c8: trial from 5 hours ago, ending in 10 days: active;
/// - c9: trial from 3 days ago, ended 2 days ago, still within its grace: active;
/// - a second trial of c8's subscription while the first runs: rejected.
fn trial_events(now: i64) -> Vec<Value> {
    let trial = |id: &str, at: i64, customer: &str, sub: &str, ends: i64| {
        billing(
            id,
            "subscription.trial_started",
            at,
            customer,
            "midmarket",
            json!({"subscription_id": sub, "plan": "pro", "trial_ends_at": rfc3339(ends)}),
        )
    };
    let start = |id: &str, at: i64, customer: &str, sub: &str, price: i64| {
        billing(
            id,
            "subscription.started",
            at,
            customer,
            "midmarket",
            terms(sub, price, 1, "USD", "month"),
        )
    };
    vec![
        trial("t1", now - 10 * DAY, "c6", "s6", now - 3 * DAY),
        start("t2", now - 2 * DAY, "c6", "s6", 5_000),
        trial("t3", now - 9 * DAY, "c7", "s7", now - 5 * DAY),
        start("t4", now - 30 * MINUTE, "c7", "s7", 0),
        trial("t5", now - 5 * HOUR, "c8", "s8", now + 10 * DAY),
        trial("t6", now - 3 * DAY, "c9", "s9", now - 2 * DAY),
        trial("x2", now - 4 * HOUR, "c8", "s8", now + 12 * DAY),
    ]
}

/// The global records of `/kpis` by KPI, window and labels.
async fn global(service: &Service) -> Option<BTreeMap<(String, String, String), Value>> {
    let records = service.kpi_records().await?;
    Some(
        records
            .into_iter()
            .map(|r| {
                let key = (
                    r["kpi"].as_str().unwrap_or_default().to_owned(),
                    r["window"].as_str().unwrap_or_default().to_owned(),
                    r["labels"].to_string(),
                );
                (key, r["value"].clone())
            })
            .collect(),
    )
}

/// The hand-computed values, each as (KPI, window, labels, value).
fn expected() -> Vec<(&'static str, &'static str, Value, Value)> {
    let overall = json!({});
    let midmarket = json!({"segment": "midmarket"});
    let mut want = Vec::new();
    for window in ["1h", "24h"] {
        // The revenue hour: new 130, expansion 100, contraction 40, churn 250 of the 650
        // that c1, c2, c4 and c6 (converted two days ago) had at the start; c3's churn is
        // that of a customer acquired inside the hour.
        want.extend([
            ("quick_ratio", window, overall.clone(), json!(230.0 / 290.0)),
            (
                "gross_revenue_retention",
                window,
                overall.clone(),
                json!(410.0 / 650.0),
            ),
            (
                "customer_churn_delinquent",
                window,
                json!({"reason": "delinquent"}),
                json!(0.25),
            ),
            (
                "customer_churn_voluntary",
                window,
                json!({"reason": "voluntary"}),
                json!(0.25),
            ),
            (
                "mrr_churn_delinquent",
                window,
                json!({"reason": "delinquent", "currency": "USD"}),
                json!(200),
            ),
            // Two of s1, s2, s4 and s6; c7's free subscription started inside the hour.
            ("subscription_churn", window, overall.clone(), json!(0.5)),
        ]);
    }
    want.extend([
        // Seven days: every start is new, c6's conversion (50) included.
        ("quick_ratio", "7d", overall.clone(), json!(880.0 / 290.0)),
        (
            "gross_revenue_retention",
            "7d",
            overall.clone(),
            Value::Null,
        ),
        ("quick_ratio", "7d", midmarket.clone(), Value::Null),
        // Trials: none ended in the last day; in 7 and 30 days c6 converted and c7 expired.
        ("trial_conversion", "24h", overall.clone(), Value::Null),
        ("trials_started", "24h", overall.clone(), json!(1)),
        ("trial_conversion", "7d", overall.clone(), json!(0.5)),
        ("trial_conversion", "7d", midmarket.clone(), json!(0.5)),
        ("trials_started", "7d", overall.clone(), json!(2)),
        ("trials_converted", "7d", overall.clone(), json!(1)),
        ("trials_expired", "7d", overall.clone(), json!(1)),
        ("trial_conversion", "30d", overall.clone(), json!(0.5)),
        ("trials_started", "30d", overall.clone(), json!(4)),
        ("trials_active", "current", overall.clone(), json!(2)),
        ("trials_active", "current", midmarket, json!(2)),
    ]);
    want
}

/// The first difference between `got` and the hand-computed values.
fn difference(got: &BTreeMap<(String, String, String), Value>) -> Option<String> {
    expected()
        .into_iter()
        .find_map(|(kpi, window, labels, want)| {
            let key = (kpi.to_owned(), window.to_owned(), labels.to_string());
            let value = got.get(&key);
            let equal = match (value, &want) {
                (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
                (Some(a), b) => a == b,
                (None, _) => false,
            };
            (!equal).then(|| format!("{kpi}/{window} {labels}: got {value:?}, want {want}"))
        })
}

/// Waits until every service's `/kpis` holds the hand-computed values.
async fn assert_global_values(services: &[&Service]) {
    eventually(
        "the hand-computed values on /kpis",
        Duration::from_secs(60),
        async || {
            for service in services {
                let got = global(service).await?;
                if let Some(diff) = difference(&got) {
                    eprintln!("{diff}");
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Waits until the services together own every input partition, each some of them.
async fn assert_shared(services: &[&Service], partitions: f64) {
    eventually(
        "the partitions shared",
        Duration::from_secs(60),
        async || {
            let mut total = 0.0;
            for service in services {
                let owned = service
                    .try_metrics()
                    .await?
                    .get("kpi_assigned_partitions", &[])?;
                (owned > 0.0).then_some(())?;
                total += owned;
            }
            (total == partitions).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revenue_and_trials_across_two_instances_and_after_sigkill() {
    // Four billing partitions, so that two instances each hold some customers.
    let topics = Topics::create_with(&brokers(), "revenue-two", [1, 1, 4], true).await;
    let partitions = 6.0;
    let now = now_ms();
    let mut events = revenue_events(now);
    events.extend(trial_events(now));
    produce_billing(&topics, &events).await;

    let mut first = Service::start(&topics.env());
    let second = Service::start(&topics.env());
    first.wait_ready().await;
    second.wait_ready().await;
    assert_shared(&[&first, &second], partitions).await;
    assert_global_values(&[&first, &second]).await;
    // Each rejection is counted once, by the instance that owns its partition.
    let mut rejected = BTreeMap::new();
    for service in [&first, &second] {
        let metrics = service.metrics().await;
        for reason in ["invalid_value", "pending_trial"] {
            *rejected.entry(reason).or_insert(0.0) +=
                metrics.sum("kpi_events_rejected_total", &[("reason", reason)]);
        }
    }
    assert_eq!(
        rejected,
        BTreeMap::from([("invalid_value", 1.0), ("pending_trial", 1.0)])
    );
    let output = eventually("the output topic", Duration::from_secs(30), async || {
        let output = latest_output(&topics.output);
        (output.get("trial_conversion/7d").map(|r| &r["value"]) == Some(&json!(0.5)))
            .then_some(output)
    })
    .await;
    assert_eq!(
        output["trial_conversion/7d"]["components"],
        json!({"converted": 1, "expired": 1})
    );
    assert_eq!(
        output["gross_revenue_retention/1h"]["components"],
        json!({"mrr_at_start": 650, "lost": 240})
    );

    // The survivor replays the killed instance's partitions and alone holds every value.
    first.kill();
    assert_shared(&[&second], partitions).await;
    assert_global_values(&[&second]).await;
    let own = second.metrics().await;
    assert_eq!(
        own.get(
            "kpi_trials_active",
            &[("window", "current"), ("segment", "")]
        ),
        Some(2.0)
    );
    assert_eq!(
        own.get(
            "kpi_trial_conversion_ratio",
            &[("window", "7d"), ("segment", "")]
        ),
        Some(0.5)
    );

    // And the two share them again.
    let third = Service::start(&topics.env());
    third.wait_ready().await;
    assert_shared(&[&second, &third], partitions).await;
    assert_global_values(&[&second, &third]).await;
}
