//! A real Prometheus server (Debian's package) scraping a running kpi-stream fed by the
//! local Kafka: the KPI series arrive with the right values through the recording rules, and
//! a burst of cancellations makes the churn-spike alert pending (or firing). A real scrape
//! passes `promtool check metrics` without a finding.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kpi_core::kpi::KPIS;
use serde_json::{Value, json};

use crate::harness::{
    Service, Topics, eventually, generate, now_ms, produce, producer, rfc3339, wait,
};

/// A Prometheus server on loopback with a temporary data directory, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("kpi-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}/recording.yml\n  - {rules}/alerts.yml\n\
             scrape_configs:\n  - job_name: kpi-stream\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/setup.sh)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// The single value of an instant query, if it has exactly one sample.
    async fn value(&self, query: &str) -> Option<f64> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", query)],
        )
        .ok()?;
        let body: Value =
            serde_json::from_str(&reqwest::get(url).await.ok()?.text().await.ok()?).ok()?;
        let result = body["data"]["result"].as_array()?;
        match result.as_slice() {
            [sample] => sample["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    async fn alert_state(&self, name: &str) -> Option<String> {
        let url = format!("{}/api/v1/alerts", self.url);
        let body: Value =
            serde_json::from_str(&reqwest::get(url).await.ok()?.text().await.ok()?).ok()?;
        body["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn billing(id: &str, kind: &str, at: i64, customer: &str, extra: Value) -> String {
    let mut v = json!({"event_id": id, "type": kind, "occurred_at": rfc3339(at),
        "customer_id": customer, "segment": "smb"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_kpis_and_the_churn_alert_fires() {
    let topics = Topics::create("prometheus").await;
    let producer = producer();
    let now = now_ms();
    for (i, score) in [10, 10, 9, 3].iter().enumerate() {
        let survey = json!({"event_id": format!("s{i}"), "type": "survey.responded",
            "occurred_at": rfc3339(now - 60_000), "customer_id": "c", "survey": "nps",
            "score": score});
        produce(
            &producer,
            &topics.surveys,
            Some("c"),
            survey.to_string().as_bytes(),
        )
        .await;
    }
    // Five customers at 100 a month, subscribed two days ago.
    for i in 0..5 {
        let start = billing(
            &format!("b{i}"),
            "subscription.started",
            now - 2 * 86_400_000,
            &format!("c{i}"),
            json!({"subscription_id": format!("sub{i}"), "plan": "pro",
                "price": 10_000, "currency": "USD", "interval": "month"}),
        );
        produce(
            &producer,
            &topics.billing,
            Some(&format!("c{i}")),
            start.as_bytes(),
        )
        .await;
    }
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let prometheus = Prometheus::start(service.http.trim_start_matches("http://"));

    // 3 promoters and 1 detractor of 4: NPS 50, through the recording rule.
    let nps = eventually("NPS in Prometheus", Duration::from_secs(60), async || {
        prometheus
            .value(r#"window_segment:kpi_nps:global{window="1h",segment=""}"#)
            .await
    })
    .await;
    assert_eq!(nps, 50.0);
    let mrr = eventually("MRR in Prometheus", Duration::from_secs(30), async || {
        prometheus
            .value(r#"segment_currency:kpi_mrr:sum{segment=""}"#)
            .await
    })
    .await;
    assert_eq!(mrr, 500.0);
    assert_eq!(prometheus.alert_state("KpiChurnSpike").await, None);

    // A burst of cancellations: 4 of the 5 customers within the hour.
    for i in 0..4 {
        let cancel = billing(
            &format!("x{i}"),
            "subscription.canceled",
            now_ms() - 1000,
            &format!("c{i}"),
            json!({"subscription_id": format!("sub{i}")}),
        );
        produce(
            &producer,
            &topics.billing,
            Some(&format!("c{i}")),
            cancel.as_bytes(),
        )
        .await;
    }
    let state = eventually(
        "the churn-spike alert",
        Duration::from_secs(60),
        async || prometheus.alert_state("KpiChurnSpike").await,
    )
    .await;
    assert!(state == "pending" || state == "firing", "{state}");
    // The recording rules are evaluated on their own schedule: wait for the new value.
    // 4 churned of the 5 active at the start of the window.
    let query = r#"window_segment:kpi_customer_churn_ratio:global{window="24h",segment=""}"#;
    eventually(
        "the recorded churn ratio",
        Duration::from_secs(30),
        async || (prometheus.value(query).await == Some(0.8)).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_with_every_series_passes_promtool_check_metrics() {
    let topics = Topics::create("promtool").await;
    // Every event type, every billing lifecycle step and 2% malformed messages.
    assert!(wait(generate(&topics, 20_000, 0, 11)).await.success());
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    // Every KPI component (the percentiles need resolutions), the consumer lag and the
    // newest event times, which appear with data only. The ratios over a window's start
    // stay undefined, hence absent (every generated customer starts now): components that
    // are another KPI's value are left out.
    let values: Vec<&str> = KPIS.iter().map(|def| def.metric).collect();
    let mut wanted: Vec<&str> = KPIS
        .iter()
        .flat_map(|def| def.components.iter().map(|c| c.metric))
        .filter(|metric| !values.contains(metric))
        .collect();
    wanted.extend([
        "kpi_consumer_lag",
        "kpi_newest_event_timestamp_seconds",
        "kpi_nps",
    ]);
    let text = eventually(
        "every metric family with series",
        Duration::from_secs(60),
        async || {
            let (_, text) = service.get("/metrics").await?;
            let sampled = |name: &str| {
                text.lines().any(|l| {
                    l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                })
            };
            wanted.iter().all(|name| sampled(name)).then_some(text)
        },
    )
    .await;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() > 60, "{families:?}");
    for family in &families {
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(family)),
            "{family} has no series"
        );
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/setup.sh)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && findings.is_empty(), "{findings}");
}
