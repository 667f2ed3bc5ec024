//! Faults against the real broker. Each test ends with the faulted service's values, in
//! /metrics and on the output topic, equal to those of a fresh service that read the same
//! input without the fault.

use std::time::Duration;

use crate::harness::{
    PrivateBroker, Service, Topics, add_partitions, assert_equals_reference, assert_same, brokers,
    committed, consumed, create_topics, eventually, generate, kpi_values, now_ms, produce,
    producer, read_all, rfc3339, wait,
};

/// Generated events from a seeded run: surveys, tickets and billing, 2% malformed.
const EVENTS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart() {
    let topics = Topics::create("sigkill").await;
    let generator = generate(&topics, EVENTS, 5_000, 1);
    let mut service = Service::start(&topics.env());
    eventually(
        "consumption under way",
        Duration::from_secs(60),
        async || {
            let m = service.try_metrics().await?;
            (consumed(&m) > 2_000.0).then_some(())
        },
    )
    .await;
    service.kill();
    let service = Service::start(&topics.env());
    assert!(wait(generator).await.success());
    service.wait_ready().await;
    assert_equals_reference(&topics, &service, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_catch_up_then_restart() {
    let topics = Topics::create("sigterm").await;
    assert!(wait(generate(&topics, 100_000, 0, 2)).await.success());
    let mut service = Service::start(&topics.env());
    eventually(
        "the replay under way",
        Duration::from_secs(60),
        async || {
            let m = service.try_metrics().await?;
            (consumed(&m) > 1_000.0).then_some(())
        },
    )
    .await;
    let (ready, _) = service.get("/readyz").await.unwrap();
    let (status, took) = service.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    assert_equals_reference(&topics, &service, &[]).await;
    // The SIGTERM landed during the replay, not after it.
    assert_eq!(ready, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_added_while_running() {
    let topics = Topics::create("partitions").await;
    // Pick up new partitions within seconds rather than librdkafka's default 5 minutes.
    let env = {
        let mut env = topics.env();
        env.push((
            "KPI_STREAM_KAFKA__PROPERTIES".into(),
            "{\"topic.metadata.refresh.interval.ms\"=\"1000\"}".into(),
        ));
        env
    };
    assert!(wait(generate(&topics, 5_000, 0, 3)).await.success());
    let service = Service::start(&env);
    service.wait_ready().await;
    add_partitions(&topics.brokers, &topics.surveys, 5).await;
    add_partitions(&topics.brokers, &topics.tickets, 4).await;
    assert!(wait(generate(&topics, 5_000, 0, 4)).await.success());
    assert_equals_reference(&topics, &service, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_the_survivor_takes_over() {
    let topics = Topics::create("takeover").await;
    assert!(wait(generate(&topics, 10_000, 0, 5)).await.success());
    let mut first = Service::start(&topics.env());
    let second = Service::start(&topics.env());
    // Both hold part of the input, so neither alone has every event: wait until the group
    // has given each some partitions (an instance is also ready with an empty assignment).
    eventually(
        "both instances ready with partitions",
        Duration::from_secs(60),
        async || {
            for service in [&first, &second] {
                let m = service.try_metrics().await?;
                (m.get("kpi_ready", &[]) == Some(1.0)
                    && m.get("kpi_assigned_partitions", &[]) > Some(0.0))
                .then_some(())?;
            }
            Some(())
        },
    )
    .await;
    let partial = kpi_values(&second.metrics().await);
    first.kill();
    assert_equals_reference(&topics, &second, &[]).await;
    assert_ne!(kpi_values(&second.metrics().await), partial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_for_30_seconds_mid_stream() {
    let broker = PrivateBroker::start(19092);
    let topics = Topics::create_on(&broker.address(), "outage", 3, true).await;
    assert!(wait(generate(&topics, 5_000, 0, 6)).await.success());
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let before = kpi_values(&service.metrics().await);

    assert!(broker.kafka_sh("stop"));
    eventually(
        "/readyz to report the outage",
        Duration::from_secs(30),
        async || matches!(service.get("/readyz").await, Some((503, _))).then_some(()),
    )
    .await;
    // The outage is the fault under test: it lasts 30 s by design.
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The last values are still served, unchanged.
    assert_same(&kpi_values(&service.metrics().await), &before);
    assert!(broker.kafka_sh("start"));

    assert!(wait(generate(&topics, 5_000, 0, 7)).await.success());
    service.wait_ready().await;
    assert_equals_reference(&topics, &service, &[]).await;
}

/// An NPS answer of `score` a minute ago, as a message payload.
fn nps_answer(id: &str, score: u8) -> Vec<u8> {
    serde_json::json!({"event_id": id, "type": "survey.responded",
        "occurred_at": rfc3339(now_ms() - 60_000), "customer_id": "c", "survey": "nps",
        "score": score})
    .to_string()
    .into_bytes()
}

/// Topics of a single survey partition without the dead-letter topic, holding a valid
/// answer, a broken message and another valid answer, and the environment of a service
/// whose dead-letter deliveries fail after 2 s (instead of 30 s, to see the retries sooner):
/// the broken message pauses the partition.
async fn dead_letters_failing(test: &str) -> (Topics, Vec<(String, String)>) {
    let topics = Topics::create_on(&brokers(), test, 1, false).await;
    let producer = producer();
    produce(&producer, &topics.surveys, Some("c"), &nps_answer("a", 10)).await;
    produce(&producer, &topics.surveys, Some("c"), b"{broken").await;
    produce(&producer, &topics.surveys, Some("c"), &nps_answer("b", 0)).await;
    let mut env = topics.env();
    env.push((
        "KPI_STREAM_KAFKA__PROPERTIES".into(),
        "{\"message.timeout.ms\"=\"2000\"}".into(),
    ));
    (topics, env)
}

async fn wait_paused(service: &Service) {
    eventually(
        "the partition to pause",
        Duration::from_secs(30),
        async || {
            let m = service.try_metrics().await?;
            (m.get("kpi_paused_partitions", &[]) == Some(1.0)
                && m.get("kpi_deadletter_failures_total", &[]) >= Some(1.0))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_topic_missing_pauses_the_partition_until_it_exists() {
    let (topics, env) = dead_letters_failing("dlqdown").await;
    let service = Service::start(&env);
    service.wait_ready().await;
    wait_paused(&service).await;
    // Nothing at or past the undelivered dead letter (offset 1) is committed.
    assert!(committed(&topics.group, &topics.surveys, 0) <= Some(1));

    create_topics(&topics.brokers, &[(&topics.deadletter, 1)]).await;
    eventually(
        "the dead letter delivered",
        Duration::from_secs(60),
        async || {
            let m = service.metrics().await;
            (m.get("kpi_paused_partitions", &[]) == Some(0.0)
                && m.get("kpi_deadletter_pending", &[]) == Some(0.0))
            .then_some(())
        },
    )
    .await;
    let dead = read_all(&topics.deadletter);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload.as_deref(), Some(&b"{broken"[..]));
    eventually(
        "the offsets committed to the end",
        Duration::from_secs(30),
        async || (committed(&topics.group, &topics.surveys, 0) == Some(3)).then_some(()),
    )
    .await;
    let m = service.metrics().await;
    let nps = |name: &str| m.get(name, &[("window", "1h"), ("segment", "")]);
    assert_eq!(nps("kpi_nps_responses"), Some(2.0));
    assert_eq!(nps("kpi_nps"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_partition_shows_its_real_lag_and_turns_readyz_503_after_the_limit() {
    let (topics, mut env) = dead_letters_failing("pausedlag").await;
    env.push(("KPI_STREAM_KAFKA__MAX_PAUSE".into(), "4s".into()));
    let service = Service::start(&env);
    wait_paused(&service).await;
    // Answers that arrive while the partition is paused are not read: the lag is exactly
    // their number (the client's own statistics stop at its last fetch before the pause).
    const WAITING: usize = 300;
    let producer = producer();
    for i in 0..WAITING {
        produce(
            &producer,
            &topics.surveys,
            Some("c"),
            &nps_answer(&format!("w{i}"), 9),
        )
        .await;
    }
    let lag = |m: &crate::harness::Metrics| {
        m.get(
            "kpi_consumer_lag",
            &[("topic", topics.surveys.as_str()), ("partition", "0")],
        )
    };
    eventually(
        "the paused partition's lag",
        Duration::from_secs(30),
        async || (lag(&service.metrics().await) == Some(WAITING as f64)).then_some(()),
    )
    .await;

    let (_, reason) = eventually(
        "/readyz to report the pause",
        Duration::from_secs(30),
        async || {
            let (status, body) = service.get("/readyz").await?;
            (status == 503 && body.contains("kafka.max_pause")).then_some((status, body))
        },
    )
    .await;
    let m = service.metrics().await;
    // Not before the limit: the pause had lasted at least 4 s.
    assert!(
        m.get("kpi_longest_pause_seconds", &[]) >= Some(4.0),
        "{reason}"
    );
    assert_eq!(m.get("kpi_stale_partitions", &[]), Some(1.0));
    assert_eq!(m.get("kpi_ready", &[]), Some(0.0));
    assert_eq!(lag(&m), Some(WAITING as f64));

    create_topics(&topics.brokers, &[(&topics.deadletter, 1)]).await;
    service.wait_ready().await;
    eventually(
        "the waiting answers read",
        Duration::from_secs(30),
        async || {
            let m = service.metrics().await;
            let responses = m.get("kpi_nps_responses", &[("window", "1h"), ("segment", "")]);
            (responses == Some(2.0 + WAITING as f64) && lag(&m) == Some(0.0)).then_some(())
        },
    )
    .await;
    let m = service.metrics().await;
    assert_eq!(m.get("kpi_stale_partitions", &[]), Some(0.0));
    assert_eq!(m.get("kpi_longest_pause_seconds", &[]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_no_broker_answers_exits_promptly() {
    // A closed loopback port: every connection is refused, every metadata call waits for
    // its timeout.
    let mut service = Service::start(&[(
        "KPI_STREAM_KAFKA__BROKERS".to_owned(),
        "127.0.0.1:1".to_owned(),
    )]);
    eventually("/healthz", Duration::from_secs(30), async || {
        matches!(service.get("/healthz").await, Some((200, _))).then_some(())
    })
    .await;
    // Long enough for the components reader to be inside its first metadata call.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, took) = service.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
