//! Several instances in one consumer group. Whatever instance dies or joins, the global
//! values on the output topic and on every instance's /kpis, and the components summed
//! across instances as the recording rules sum them, end equal to one instance's.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{
    Metrics, Service, Topics, assert_same_output, brokers, consumed, eventually, generate,
    kpi_values, start_reference, wait,
};

/// Gauges that do not add up across instances: ratios, means, quantiles and the values
/// derived from them. Every other KPI gauge is a count or an amount.
const NOT_ADDITIVE: [&str; 26] = [
    "kpi_nps",
    "kpi_csat_ratio",
    "kpi_ces_mean",
    "kpi_ces_easy_ratio",
    "kpi_survey_comment_ratio",
    "kpi_fcr_ratio",
    "kpi_resolution_time_seconds_mean",
    "kpi_resolution_time_percentile_seconds",
    "kpi_first_reply_time_seconds_mean",
    "kpi_first_reply_time_percentile_seconds",
    "kpi_first_reply_sla_breach_ratio",
    "kpi_resolution_sla_breach_ratio",
    "kpi_one_touch_ratio",
    "kpi_reopen_ratio",
    "kpi_customer_churn_ratio",
    "kpi_revenue_churn_ratio",
    "kpi_net_revenue_retention_ratio",
    "kpi_customer_retention_ratio",
    "kpi_renewal_ratio",
    "kpi_arpa",
    "kpi_clv",
    "kpi_quick_ratio",
    "kpi_gross_revenue_retention_ratio",
    "kpi_subscription_churn_ratio",
    "kpi_customer_churn_by_reason_ratio",
    "kpi_trial_conversion_ratio",
];

fn name(key: &str) -> &str {
    key.split('{').next().unwrap_or_default()
}

fn additive(key: &str) -> bool {
    !NOT_ADDITIVE.contains(&name(key))
}

/// `sum by (every label)` of the additive KPI gauges over `instances`.
fn summed(instances: &[Metrics]) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for metrics in instances {
        for (key, value) in kpi_values(metrics) {
            if additive(&key) {
                *sums.entry(key).or_insert(0.0) += value;
            }
        }
    }
    sums
}

/// Amounts in major units add up with the rounding of floating point; counts are exact.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The differences between the summed components and the single instance's gauges: every
/// additive gauge, and the ratios recomputed from the sums as docs/metrics.md does in PromQL.
fn differences(sums: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) -> Vec<String> {
    let mut diff = Vec::new();
    for (key, value) in want.iter().filter(|(k, _)| additive(k)) {
        match sums.get(key) {
            Some(got) if close(*got, *value) => {}
            got => diff.push(format!("{key}: summed {got:?}, single {value}")),
        }
    }
    for key in sums.keys().filter(|k| !want.contains_key(*k)) {
        diff.push(format!("{key}: summed only"));
    }
    // The labels of a gauge, to read its components with the same labels.
    let sum = |metric: &str, labels: &str| sums.get(&format!("{metric}{labels}")).copied();
    let ratio = |numerator: Option<f64>, denominator: Option<f64>| match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    };
    // Money carries `currency`, movements also `kind`: labels sort before `segment`.
    let money = |labels: &str, kind: Option<&str>| {
        let kind = kind.map(|k| format!("kind=\"{k}\",")).unwrap_or_default();
        format!("{{currency=\"USD\",{kind}{}", &labels[1..])
    };
    let movement = |labels: &str, kind: &str| sum("kpi_mrr_movement", &money(labels, Some(kind)));
    let arpa = |labels: &str| {
        ratio(
            sum("kpi_mrr", labels),
            sum(
                "kpi_customers_active",
                &labels.replace("currency=\"USD\",", ""),
            ),
        )
    };
    let churn = |labels: &str| {
        ratio(
            sum("kpi_customers_churned", labels),
            sum("kpi_customers_active_at_window_start", labels),
        )
    };
    for (key, value) in want {
        let labels = &key[name(key).len()..];
        let recomputed = match name(key) {
            "kpi_ces_mean" => ratio(
                sum("kpi_ces_total_score", labels),
                sum("kpi_ces_responses", labels),
            ),
            "kpi_ces_easy_ratio" => ratio(
                sum("kpi_ces_easy", labels),
                sum("kpi_ces_responses", labels),
            ),
            "kpi_survey_comment_ratio" => ratio(
                sum("kpi_survey_commented_answers", labels),
                sum("kpi_survey_answers", labels),
            ),
            "kpi_revenue_churn_ratio" => ratio(
                movement(labels, "churn")
                    .zip(movement(labels, "contraction"))
                    .map(|(a, b)| a + b),
                sum("kpi_mrr_at_window_start", &money(labels, None)),
            ),
            "kpi_net_revenue_retention_ratio" => {
                let start = sum("kpi_mrr_at_window_start", &money(labels, None));
                let kept = start
                    .zip(movement(labels, "expansion"))
                    .zip(movement(labels, "contraction"))
                    .zip(movement(labels, "churn"))
                    .map(|(((s, e), c), ch)| s + e - c - ch);
                ratio(kept, start)
            }
            "kpi_customer_retention_ratio" => {
                let end = sum("kpi_customers_active_at_window_end", labels);
                let acquired = sum("kpi_customers_acquired", labels);
                ratio(
                    end.zip(acquired).map(|(e, a)| e - a),
                    sum("kpi_customers_active_at_window_start", labels),
                )
            }
            "kpi_arpa" => arpa(labels),
            "kpi_clv" => {
                // ARPA over the customer churn ratio of billing.clv_window (30d).
                let plain = labels.replace("currency=\"USD\",", "");
                let churn_labels = plain.replace("window=\"current\"", "window=\"30d\"");
                ratio(arpa(labels), churn(&churn_labels))
            }
            "kpi_customer_churn_ratio" => churn(labels),
            "kpi_nps" => {
                let (p, d) = (
                    sum("kpi_nps_promoters", labels),
                    sum("kpi_nps_detractors", labels),
                );
                ratio(
                    p.zip(d).map(|(p, d)| 100.0 * (p - d)),
                    sum("kpi_nps_responses", labels),
                )
            }
            "kpi_csat_ratio" => ratio(
                sum("kpi_csat_satisfied", labels),
                sum("kpi_csat_responses", labels),
            ),
            "kpi_fcr_ratio" => ratio(
                sum("kpi_fcr_first_contact_resolutions", labels),
                sum("kpi_fcr_resolutions", labels),
            ),
            "kpi_resolution_time_seconds_mean" => ratio(
                sum("kpi_resolution_time_total_seconds", labels),
                sum("kpi_resolution_time_resolutions", labels),
            ),
            "kpi_first_reply_time_seconds_mean" => ratio(
                sum("kpi_first_reply_time_total_seconds", labels),
                sum("kpi_first_reply_time_replies", labels),
            ),
            "kpi_first_reply_sla_breach_ratio" | "kpi_resolution_sla_breach_ratio" => {
                let clock = name(key)
                    .trim_start_matches("kpi_")
                    .trim_end_matches("_breach_ratio");
                let breached = sum(&format!("kpi_{clock}_breached"), labels);
                let judged = breached.zip(sum(&format!("kpi_{clock}_achieved"), labels));
                ratio(breached, judged.map(|(b, a)| b + a))
            }
            "kpi_one_touch_ratio" => ratio(
                sum("kpi_one_touch_resolutions", labels),
                sum("kpi_tracked_resolutions", labels),
            ),
            "kpi_reopen_ratio" => ratio(
                sum("kpi_reopened_resolutions", labels),
                sum("kpi_tracked_resolutions", labels),
            ),
            "kpi_quick_ratio" => {
                let kinds = |kinds: &[&str]| {
                    kinds
                        .iter()
                        .map(|k| movement(labels, k))
                        .sum::<Option<f64>>()
                };
                ratio(
                    kinds(&["new", "reactivation", "expansion"]),
                    kinds(&["contraction", "churn"]),
                )
            }
            "kpi_gross_revenue_retention_ratio" => {
                let start = sum("kpi_mrr_at_window_start", &money(labels, None));
                let lost = sum(
                    "kpi_mrr_lost_by_customers_at_window_start",
                    &money(labels, None),
                );
                ratio(start.zip(lost).map(|(s, l)| s - l), start)
            }
            "kpi_subscription_churn_ratio" => ratio(
                sum("kpi_cancellations", labels),
                sum("kpi_subscriptions_active_at_window_start", labels),
            ),
            "kpi_customer_churn_by_reason_ratio" => {
                // `reason` sorts before `segment` and `window`: the denominator has neither.
                let plain = labels
                    .replace("reason=\"voluntary\",", "")
                    .replace("reason=\"delinquent\",", "");
                ratio(
                    sum("kpi_customers_churned_by_reason", labels),
                    sum("kpi_customers_active_at_window_start", &plain),
                )
            }
            "kpi_trial_conversion_ratio" => {
                let converted = sum("kpi_trials_converted", labels);
                let ended = converted.zip(sum("kpi_trials_expired", labels));
                ratio(converted, ended.map(|(c, e)| c + e))
            }
            "kpi_renewal_ratio" => {
                let renewals = sum("kpi_renewals", labels);
                let due = renewals.zip(sum("kpi_cancellations", labels));
                ratio(renewals, due.map(|(r, c)| r + c))
            }
            _ => continue,
        };
        match recomputed {
            Some(got) if close(got, *value) => {}
            got => diff.push(format!("{key}: recomputed {got:?}, single {value}")),
        }
    }
    diff
}

/// `/kpis` without the times of computation, which differ between instances.
async fn global_values(service: &Service) -> Option<Vec<String>> {
    let values = service.kpi_records().await?;
    let mut out: Vec<String> = values
        .into_iter()
        .map(|mut v| {
            if let Some(object) = v.as_object_mut() {
                for time in ["window_start", "window_end", "emitted_at"] {
                    object.remove(time);
                }
            }
            v.to_string()
        })
        .collect();
    out.sort();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_one_added_equal_one_instance() {
    let topics = Topics::create_with(&brokers(), "scale", [12, 12, 12], true).await;
    let generator = generate(&topics, 30_000, 3_000, 21);
    let mut first = Service::start(&topics.env());
    let second = Service::start(&topics.env());
    let third = Service::start(&topics.env());
    eventually(
        "every instance consuming",
        Duration::from_secs(60),
        async || {
            for service in [&first, &second, &third] {
                let m = service.try_metrics().await?;
                (consumed(&m) > 1_000.0).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    first.kill();
    let fourth = Service::start(&topics.env());
    assert!(wait(generator).await.success());
    let live = [&second, &third, &fourth];
    for service in live {
        service.wait_ready().await;
    }

    let (reference_topics, reference, want) = start_reference(&topics, &[]).await;

    eventually(
        "the components summed across instances to equal one instance's",
        Duration::from_secs(90),
        async || {
            let mut scraped = Vec::new();
            for service in live {
                scraped.push(service.metrics().await);
            }
            let diff = differences(&summed(&scraped), &want);
            if !diff.is_empty() {
                eprintln!("{} differences, first: {}", diff.len(), diff[0]);
            }
            diff.is_empty().then_some(())
        },
    )
    .await;
    // Each instance's own values are partial: the sums above are not one instance's.
    assert_ne!(kpi_values(&second.metrics().await), want);

    // The global values on the output topic.
    assert_same_output(&topics, &reference_topics).await;
    let single = global_values(&reference)
        .await
        .expect("the single instance's /kpis");
    eventually(
        "the global values on every instance's /kpis",
        Duration::from_secs(60),
        async || {
            for service in live {
                (global_values(service).await? == single).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    // Exactly one live instance publishes.
    let mut publishers = 0.0;
    for service in live {
        publishers += service
            .metrics()
            .await
            .get("kpi_global_publisher", &[])
            .unwrap_or_default();
    }
    assert_eq!(publishers, 1.0);
}
