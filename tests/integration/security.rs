//! SASL (SCRAM-SHA-256) against a broker that requires it, with the password read from a
//! secret file: the service authenticates, computes the same values as a service on a
//! plain listener, and never writes the password to its log, /metrics or /kpis.

use std::time::Duration;

use crate::harness::{
    PrivateBroker, Service, Topics, assert_equals_reference, eventually, generate, wait,
};

const PASSWORD: &str = "pw-7f3a9c-never-logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_authentication_with_a_secret_file() {
    let broker = PrivateBroker::start_with_scram(19192, "kpi", PASSWORD);
    // Topics and events through the broker's plain listener, the service through SASL.
    let topics = Topics::create_on(&broker.plain_address(), "sasl", 3, true).await;
    assert!(wait(generate(&topics, 3_000, 0, 8)).await.success());

    let dir = std::env::temp_dir().join(format!("kpi-sasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("password");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let sasl = |password_file: &std::path::Path| {
        let mut env = topics.env();
        env.retain(|(k, _)| k != "KPI_STREAM_KAFKA__BROKERS");
        env.extend([
            ("KPI_STREAM_KAFKA__BROKERS".into(), broker.address()),
            (
                "KPI_STREAM_KAFKA__PROPERTIES".into(),
                "{\"security.protocol\"=\"SASL_PLAINTEXT\",\"sasl.mechanism\"=\"SCRAM-SHA-256\",\"sasl.username\"=\"kpi\"}".into(),
            ),
            (
                "KPI_STREAM_KAFKA__SECRET_FILES".into(),
                format!("{{\"sasl.password\"=\"{}\"}}", password_file.display()),
            ),
        ]);
        env
    };

    // A wrong password: never ready, and the failure is reported.
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let denied_log = dir.join("denied.log");
    let denied = Service::start_logging_to(&sasl(&wrong), &denied_log);
    eventually(
        "an authentication failure in the log",
        Duration::from_secs(30),
        async || {
            let log = std::fs::read_to_string(&denied_log).unwrap_or_default();
            log.contains("Authentication failed").then_some(())
        },
    )
    .await;
    assert_eq!(denied.get("/readyz").await.map(|r| r.0), Some(503));
    drop(denied);

    let log = dir.join("service.log");
    let service = Service::start_logging_to(&sasl(&secret), &log);
    service.wait_ready().await;
    assert_equals_reference(&topics, &service, &[]).await;
    let (_, metrics) = service.get("/metrics").await.unwrap();
    let (_, kpis) = service.get("/kpis").await.unwrap();
    drop(service);
    let log = std::fs::read_to_string(&log).unwrap();
    for (name, text) in [("log", &log), ("/metrics", &metrics), ("/kpis", &kpis)] {
        assert!(!text.contains(PASSWORD), "the password appears in {name}");
    }
}
