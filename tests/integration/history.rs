//! `kpi-stream history` against a live run over the same events (at the live run's last
//! publish, the same objects as its output topic), and through promtool and a real
//! Prometheus against values computed by hand and by a brute force over the events.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use kpi_core::event::{Event, Family, Interval, Limits, Payload, SubscriptionTerms, Survey, parse};
use serde_json::{Value, json};

use crate::harness::{
    Read, Service, Topics, committed_to_end, eventually, now_ms, produce_stamped, read_all,
    rfc3339, wait,
};

/// The objects of a JSON-lines text or of output messages, without `emitted_at` (the time
/// each was produced), sorted.
fn comparable(objects: impl Iterator<Item = Value>) -> Vec<String> {
    let mut out: Vec<String> = objects
        .map(|mut v| {
            if let Some(object) = v.as_object_mut() {
                object.remove("emitted_at");
            }
            v.to_string()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_at_the_last_publish_equals_the_live_output() {
    let topics = Topics::create("history").await;
    let mut env = topics.env();
    // Every publish sends every value, so the output topic's newest messages are all of
    // the last one.
    env.push(("KPI_STREAM_PUBLISH__SNAPSHOT_INTERVAL".into(), "1s".into()));
    let generator = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .args([
            "generate", "--count", "4000", "--rate", "2000", "--seed", "5",
        ])
        .args(["--malformed-ratio", "0"])
        .envs(env.clone())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut service = Service::start(&env);
    assert!(wait(generator).await.success());
    service.wait_ready().await;
    eventually(
        "every event handled and committed",
        Duration::from_secs(60),
        async || committed_to_end(&topics.group, &topics.inputs()).then_some(()),
    )
    .await;
    // The final publish is a full snapshot of everything read.
    let (status, _) = service.terminate();
    assert!(status.success());
    let live: Vec<Value> = crate::harness::latest_output(&topics.output)
        .into_values()
        .collect();
    let last_publish = live
        .iter()
        .filter_map(|v| v["emitted_at"].as_str())
        .max()
        .unwrap()
        .to_owned();

    // The input topics, one event per line, each partition in order.
    let input = std::env::temp_dir().join(format!("history-{}.jsonl", topics.group));
    let mut file = std::fs::File::create(&input).unwrap();
    for topic in topics.inputs() {
        for message in read_all(topic) {
            file.write_all(&message.payload.unwrap()).unwrap();
            file.write_all(b"\n").unwrap();
        }
    }
    drop(file);
    let instant = ["--from", &last_publish, "--to", &last_publish];
    let from_file = history_jsonl(&["--input", input.to_str().unwrap()], &instant, &env);
    // Without --input, the topics themselves, merged by message time.
    let from_topics = history_jsonl(&[], &instant, &env);
    for history in [&from_file, &from_topics] {
        assert!(
            history
                .iter()
                .all(|v| v["emitted_at"] == last_publish.as_str())
        );
    }
    let live = comparable(live.into_iter());
    assert!(live.len() > 100, "{} objects", live.len());
    for history in [from_file, from_topics] {
        let history = comparable(history.into_iter());
        let differing: Vec<_> = live
            .iter()
            .filter(|l| !history.contains(l))
            .take(3)
            .collect();
        assert_eq!(live.len(), history.len(), "first differing: {differing:?}");
        assert_eq!(live, history, "first differing: {differing:?}");
    }
}

/// The objects `history --format jsonl` writes with `input` and `instants`.
fn history_jsonl(input: &[&str], instants: &[&str], env: &[(String, String)]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .arg("history")
        .args(input)
        .args(instants)
        .args(["--format", "jsonl"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bad_events_are_counted_and_a_file_that_is_not_json_lines_names_its_line() {
    let dir = std::env::temp_dir();
    let run = |name: &str, text: &str| {
        let path = dir.join(format!("history-{name}-{}.jsonl", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
            .arg("history")
            .args(["--input", path.to_str().unwrap()])
            .args([
                "--from",
                "2026-11-30T12:00:00Z",
                "--to",
                "2026-11-30T12:00:00Z",
            ])
            .args(["--format", "jsonl"])
            .output()
            .unwrap()
    };
    let good = r#"{"event_id":"a","type":"survey.responded","occurred_at":"2026-11-30T10:00:00Z","customer_id":"c","survey":"nps","score":10}"#;
    let bad = format!("{good}\n[\"not an object\"]\n{{\"event_id\": \"cut\n\n{good}\n");
    let counted = run("bad", &bad);
    assert!(counted.status.success());
    let stderr = String::from_utf8_lossy(&counted.stderr);
    assert!(stderr.contains("rejected, not_object: 1"), "{stderr}");
    assert!(stderr.contains("rejected, invalid_json: 1"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let nps: Vec<Value> = String::from_utf8_lossy(&counted.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| {
            v["kpi"] == "nps" && v["window"] == "24h" && v["labels"] == serde_json::json!({})
        })
        .collect();
    // The same answer twice: a duplicate.
    assert_eq!(nps[0]["samples"], 1);
    // An event of two hours before the one read first: the instant passed meanwhile missed it.
    let earlier = good
        .replace("10:00:00Z", "08:00:00Z")
        .replace("\"a\"", "\"b\"");
    let unordered = run("unordered", &format!("{good}\n{earlier}\n"));
    assert!(unordered.status.success());
    let stderr = String::from_utf8_lossy(&unordered.stderr);
    assert!(
        stderr.contains("warning: 1 events occurred more than an hour before"),
        "{stderr}"
    );
    let csv = run("csv", &format!("{good}\nevent_id,type,score\n"));
    assert!(!csv.status.success());
    let stderr = String::from_utf8_lossy(&csv.stderr);
    assert!(stderr.contains("line 2: not JSON"), "{stderr}");
}

/// A Prometheus server on the blocks promtool creates from an OpenMetrics file; stopped
/// when dropped.
struct Prometheus {
    url: String,
    process: std::process::Child,
}

impl Prometheus {
    /// Runs `kpi-stream history` with `args` and `env` into `dir`/history.om, and serves
    /// its blocks.
    fn on_history(args: &[&str], env: &[(String, String)], dir: &std::path::Path) -> Prometheus {
        let metrics = dir.join("history.om");
        let history = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
            .arg("history")
            .args(args)
            .args(["--output", metrics.to_str().unwrap()])
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        assert!(
            history.status.success(),
            "{}",
            String::from_utf8_lossy(&history.stderr)
        );
        Prometheus::on_blocks_of(&metrics, dir)
    }

    /// Creates the blocks of `metrics` in `dir`/data and serves them.
    fn on_blocks_of(metrics: &std::path::Path, dir: &std::path::Path) -> Prometheus {
        let text = std::fs::read_to_string(metrics).unwrap();
        assert!(text.ends_with("# EOF\n"));
        let data = dir.join("data");
        let blocks = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .args([metrics.to_str().unwrap(), data.to_str().unwrap()])
            .output()
            .expect("promtool is installed (scripts/setup.sh)");
        assert!(
            blocks.status.success(),
            "{}",
            String::from_utf8_lossy(&blocks.stderr)
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global: {}\n").unwrap();
        let port = crate::harness::free_port();
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            process,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A value of an instant query against a Prometheus server.
async fn query(prometheus: &str, expr: &str, at: &str) -> Option<f64> {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let url = format!(
        "{prometheus}/api/v1/query?query={}&time={}",
        encode(expr),
        encode(at)
    );
    let body = reqwest::get(url).await.ok()?.text().await.ok()?;
    let response: Value = serde_json::from_str(&body).ok()?;
    let result = response["data"]["result"].as_array()?;
    match result.as_slice() {
        [] => None,
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => panic!("{expr}: several series: {result:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_history_loads_into_prometheus_with_the_values_at_each_instant() {
    let dir = std::env::temp_dir().join(format!("history-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A subscription of 100 USD a month since October; a promoter before 12:00, a detractor
    // and the subscription's cancellation before 13:00, a passive before 14:00.
    let events = [
        r#"{"event_id":"b1","type":"subscription.started","occurred_at":"2026-10-15T10:05:00Z","customer_id":"c1","segment":"smb","subscription_id":"sub-1","plan":"pro","price":10000,"quantity":1,"currency":"USD","interval":"month","interval_count":1}"#,
        r#"{"event_id":"s1","type":"survey.responded","occurred_at":"2026-11-30T10:00:00Z","customer_id":"c1","survey":"nps","score":10,"segment":"smb"}"#,
        r#"{"event_id":"s2","type":"survey.responded","occurred_at":"2026-11-30T12:30:00Z","customer_id":"c2","survey":"nps","score":2,"segment":"smb"}"#,
        r#"{"event_id":"b2","type":"subscription.canceled","occurred_at":"2026-11-30T12:40:00Z","customer_id":"c1","segment":"smb","subscription_id":"sub-1"}"#,
        r#"{"event_id":"s3","type":"survey.responded","occurred_at":"2026-11-30T13:10:00Z","customer_id":"c3","survey":"nps","score":8,"segment":"smb"}"#,
    ];
    let input = dir.join("events.jsonl");
    std::fs::write(&input, events.join("\n")).unwrap();
    let prometheus = Prometheus::on_history(
        &[
            "--input",
            input.to_str().unwrap(),
            "--from",
            "2026-11-30T12:00:00Z",
            "--to",
            "2026-11-30T14:00:00Z",
            "--step",
            "1h",
        ],
        &[("KPI_STREAM_CALENDAR__PERIODS".into(), "[]".into())],
        &dir,
    );
    let server = prometheus.url.clone();
    let nps = r#"kpi_nps{window="24h",segment=""}"#;
    eventually(
        "Prometheus serving the blocks",
        Duration::from_secs(60),
        async || query(&server, nps, "2026-11-30T12:00:00Z").await,
    )
    .await;
    let responses = r#"kpi_nps_responses{window="24h",segment=""}"#;
    let mrr = r#"kpi_mrr{window="current",segment=""}"#;
    let churn = r#"kpi_customer_churn_ratio{window="30d",segment=""}"#;
    for (at, want_nps, want_responses, want_mrr, want_churn) in [
        (
            "2026-11-30T12:00:00Z",
            Some(100.0),
            Some(1.0),
            Some(100.0),
            Some(0.0),
        ),
        (
            "2026-11-30T13:00:00Z",
            Some(0.0),
            Some(2.0),
            Some(0.0),
            Some(1.0),
        ),
        (
            "2026-11-30T14:00:00Z",
            Some(0.0),
            Some(3.0),
            Some(0.0),
            Some(1.0),
        ),
    ] {
        assert_eq!(query(&server, nps, at).await, want_nps, "{at}");
        assert_eq!(query(&server, responses, at).await, want_responses, "{at}");
        assert_eq!(query(&server, mrr, at).await, want_mrr, "{at}");
        assert_eq!(query(&server, churn, at).await, want_churn, "{at}");
    }
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
}

const DAY: i64 = 86_400_000;

/// Where a rolling window of `span_ms` in 60 buckets starts at `at` (docs/kpis.md, "What a
/// window covers").
fn window_start(at: i64, span_ms: i64) -> i64 {
    let bucket = span_ms / 60;
    (at.div_euclid(bucket) - 59) * bucket
}

/// The MRR of subscription terms in base-currency micros at the default rates (EUR 1.08,
/// GBP 1.27), every amount of the generator's plans a whole number of micros.
fn micros(terms: &SubscriptionTerms<'_>) -> i128 {
    let hundredths: i128 = match terms.currency.as_ref() {
        "USD" => 100,
        "EUR" => 108,
        "GBP" => 127,
        other => panic!("no rate for {other}"),
    };
    let months = match terms.interval {
        Interval::Month => i128::from(terms.interval_count),
        Interval::Year => 12 * i128::from(terms.interval_count),
    };
    let numerator = i128::from(terms.price) * i128::from(terms.quantity) * hundredths * 100;
    assert_eq!(numerator % months, 0, "whole micros");
    numerator / months
}

/// What the events received before `at` give, computed directly from them: NPS over the
/// 7d window, MRR, and customer churn over the 30d window.
struct BruteForce {
    nps_7d: Option<f64>,
    mrr: f64,
    churn_30d: Option<f64>,
}

impl BruteForce {
    /// `events`: every event with its message timestamp, in the order of the timestamps.
    fn at(events: &[(i64, Event<'_>)], at: i64) -> BruteForce {
        let received: Vec<&Event<'_>> = events
            .iter()
            .filter(|(ts, _)| *ts < at)
            .map(|(_, e)| e)
            .collect();
        let since_7d = window_start(at, 7 * DAY);
        let (mut promoters, mut detractors, mut responses) = (0u64, 0u64, 0u64);
        for event in &received {
            if let Payload::SurveyResponded {
                survey: Survey::Nps,
                score,
                ..
            } = event.payload
                && event.occurred_at_ms >= since_7d
            {
                responses += 1;
                promoters += u64::from(score >= 9);
                detractors += u64::from(score <= 6);
            }
        }
        let nps_7d = (responses > 0)
            .then(|| 100.0 * (promoters as f64 - detractors as f64) / responses as f64);

        let since_30d = window_start(at, 30 * DAY);
        let mut subscriptions: HashMap<String, (String, i128)> = HashMap::new();
        let customer_mrr = |subs: &HashMap<String, (String, i128)>, customer: &str| -> i128 {
            subs.values()
                .filter(|(c, _)| c == customer)
                .map(|(_, m)| m)
                .sum()
        };
        let mut active_at_start: Option<usize> = None;
        let mut churned = 0u64;
        for event in &received {
            let (id, mrr) = match &event.payload {
                Payload::SubscriptionStarted(terms) | Payload::SubscriptionChanged(terms) => {
                    (terms.subscription_id.to_string(), micros(terms))
                }
                Payload::SubscriptionCanceled {
                    subscription_id, ..
                } => (subscription_id.to_string(), 0),
                _ => continue,
            };
            if event.occurred_at_ms >= since_30d && active_at_start.is_none() {
                active_at_start = Some(active_customers(&subscriptions));
            }
            let customer = event.customer_id.to_string();
            let before = customer_mrr(&subscriptions, &customer);
            subscriptions.insert(id, (customer.clone(), mrr));
            let after = customer_mrr(&subscriptions, &customer);
            if event.occurred_at_ms >= since_30d && before > 0 && after == 0 {
                churned += 1;
            }
        }
        let active = active_at_start.unwrap_or_else(|| active_customers(&subscriptions));
        let mrr: i128 = subscriptions.values().map(|(_, m)| m).sum();
        BruteForce {
            nps_7d,
            mrr: mrr as f64 / 1_000_000.0,
            churn_30d: (active > 0).then(|| churned as f64 / active as f64),
        }
    }
}

fn active_customers(subscriptions: &HashMap<String, (String, i128)>) -> usize {
    let mut mrr: HashMap<&str, i128> = HashMap::new();
    for (customer, micros) in subscriptions.values() {
        *mrr.entry(customer).or_default() += micros;
    }
    mrr.values().filter(|m| **m > 0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_generated_days_on_the_topics_give_prometheus_the_brute_force_values() {
    let topics = Topics::create("history-30d").await;
    // The default calendar periods too: a run as deployed.
    let env: Vec<(String, String)> = topics
        .env()
        .into_iter()
        .filter(|(k, _)| k != "KPI_STREAM_CALENDAR__PERIODS")
        .collect();
    // Forty subscriptions older than the generated days, so that the 30d window has
    // customers at its start at any instant of those days.
    let producer = crate::harness::producer();
    let prelude_ms = now_ms() - 60 * DAY;
    for n in 0..40 {
        let at = prelude_ms + n * 60_000;
        let payload = json!({
            "event_id": format!("early-{n}"),
            "type": "subscription.started",
            "occurred_at": rfc3339(at),
            "customer_id": format!("early-{n}"),
            "segment": "enterprise",
            "subscription_id": format!("early-sub-{n}"),
            "plan": "pro",
            "price": 9_900 + n,
            "quantity": 1,
            "currency": "USD",
            "interval": "month",
            "interval_count": 1,
        });
        produce_stamped(
            &producer,
            &topics.billing,
            Some(&format!("early-{n}")),
            payload.to_string().as_bytes(),
            Some(at),
        )
        .await;
    }
    let generator = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .args([
            "generate", "--count", "30000", "--span", "30d", "--rate", "0",
        ])
        .args(["--seed", "11", "--malformed-ratio", "0"])
        .envs(env.clone())
        // Few customers: each has several billing events, some of them cancellations.
        .env("KPI_STREAM_GENERATE__CUSTOMERS", "200")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait(generator).await.success());

    let messages: Vec<(Family, Read)> = [
        (Family::Surveys, &topics.surveys),
        (Family::Tickets, &topics.tickets),
        (Family::Billing, &topics.billing),
    ]
    .into_iter()
    .flat_map(|(family, topic)| read_all(topic).into_iter().map(move |m| (family, m)))
    .collect();
    let limits = Limits {
        max_event_bytes: 1 << 20,
        max_future_skew_ms: 300_000,
    };
    let mut events: Vec<(i64, Event<'_>)> = messages
        .iter()
        .map(|(family, m)| {
            let event = parse(m.payload.as_deref().unwrap(), *family, i64::MAX, &limits).unwrap();
            (m.timestamp.unwrap(), event)
        })
        .collect();
    // Stable: a partition's messages keep their order at equal times.
    events.sort_by_key(|(ts, _)| *ts);
    let first_generated = events
        .iter()
        .find(|(_, e)| !e.event_id.starts_with("early-"))
        .unwrap()
        .0;
    // Three instants of the generated days, whole seconds, 12 hours apart on the run's
    // grid: 10, 20 and 29 days in.
    let first = (first_generated + 10 * DAY) / 1000 * 1000;
    let instants = [first, first + 10 * DAY, first + 19 * DAY];

    let dir = std::env::temp_dir().join(format!("history-30d-{}", topics.group));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (from, to) = (rfc3339(instants[0]), rfc3339(instants[2]));
    let prometheus =
        Prometheus::on_history(&["--from", &from, "--to", &to, "--step", "12h"], &env, &dir);
    let server = prometheus.url.clone();
    let mrr = r#"kpi_mrr{window="current",segment=""}"#;
    eventually(
        "Prometheus serving the blocks",
        Duration::from_secs(60),
        async || query(&server, mrr, &rfc3339(instants[0])).await,
    )
    .await;
    let nps = r#"kpi_nps{window="7d",segment=""}"#;
    let churn = r#"kpi_customer_churn_ratio{window="30d",segment=""}"#;
    for at in instants {
        let want = BruteForce::at(&events, at);
        let time = rfc3339(at);
        assert!(
            want.nps_7d.is_some() && want.churn_30d.is_some_and(|c| c > 0.0),
            "{time}: NPS {:?}, churn {:?}",
            want.nps_7d,
            want.churn_30d
        );
        assert_eq!(
            query(&server, nps, &time).await,
            want.nps_7d,
            "NPS at {time}"
        );
        assert_eq!(
            query(&server, mrr, &time).await,
            Some(want.mrr),
            "MRR at {time}"
        );
        assert_eq!(
            query(&server, churn, &time).await,
            want.churn_30d,
            "churn at {time}"
        );
    }
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
}
