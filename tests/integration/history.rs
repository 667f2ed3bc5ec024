//! `kpi-stream history` against a live run over the same events: at the live run's last
//! publish, the same objects as its output topic.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Service, Topics, committed_to_end, eventually, read_all, wait};

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
    let output = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .arg("history")
        .args(["--input", input.to_str().unwrap()])
        .args(["--from", &last_publish, "--to", &last_publish])
        .args(["--format", "jsonl"])
        .envs(env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let history: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        history
            .iter()
            .all(|v| v["emitted_at"] == last_publish.as_str())
    );
    let (live, history) = (
        comparable(live.into_iter()),
        comparable(history.into_iter()),
    );
    assert!(live.len() > 100, "{} objects", live.len());
    let differing: Vec<_> = live
        .iter()
        .filter(|l| !history.contains(l))
        .take(3)
        .collect();
    assert_eq!(live.len(), history.len(), "first differing: {differing:?}");
    assert_eq!(live, history, "first differing: {differing:?}");
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
    let metrics = dir.join("history.om");
    let history = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .arg("history")
        .args(["--input", input.to_str().unwrap()])
        .args([
            "--from",
            "2026-11-30T12:00:00Z",
            "--to",
            "2026-11-30T14:00:00Z",
        ])
        .args(["--step", "1h", "--output", metrics.to_str().unwrap()])
        .env("KPI_STREAM_CALENDAR__PERIODS", "[]")
        .output()
        .unwrap();
    assert!(
        history.status.success(),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
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
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = format!("http://127.0.0.1:{port}");
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
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
