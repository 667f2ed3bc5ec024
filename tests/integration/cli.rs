//! The command line: configuration errors exit 2 and name the key, at `check-config` and at
//! `run` alike; secrets are never printed.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::eventually;

/// A child process killed if the test ends before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `kpi-stream <args>` with the shipped configuration, `env` and no reachable broker,
/// and returns its exit code, standard output and standard error. A command still running
/// after 20 s fails the test.
async fn kpi_stream(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .args(args)
        .args(["--config", "config/kpi-stream.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // Should a command not stop, it reaches no broker and binds no known port.
        .env("KPI_STREAM_KAFKA__BROKERS", "127.0.0.1:1")
        .env("KPI_STREAM_HTTP__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let status = eventually(
        &format!("kpi-stream {args:?} to exit"),
        Duration::from_secs(20),
        async || running.0.try_wait().unwrap(),
    )
    .await;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    running
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    running
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stdout, stderr)
}

async fn check_config(env: &[(&str, &str)]) -> (i32, String, String) {
    kpi_stream(&["check-config"], env).await
}

#[tokio::test]
async fn the_shipped_configuration_is_valid() {
    let (code, stdout, _) = check_config(&[]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("cs.surveys"));
}

#[tokio::test]
async fn an_unknown_key_exits_2_naming_it() {
    let (code, _, stderr) = check_config(&[("KPI_STREAM_KAFKA__BROKERZ", "x")]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("brokerz"), "{stderr}");
}

#[tokio::test]
async fn an_invalid_value_exits_2_naming_the_key() {
    let (code, _, stderr) = check_config(&[("KPI_STREAM_WINDOWS__SPANS", "[\"soon\"]")]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("windows.spans"), "{stderr}");
}

/// Each of these settings was accepted by `check-config` and then stopped `run`: on an
/// allocation of several gigabytes (the first two), or with exit 1 and librdkafka's message.
#[tokio::test]
async fn each_setting_that_stopped_the_service_exits_2_at_check_config_and_at_run() {
    let cases = [
        (
            "KPI_STREAM_EVENTS__MAX_FUTURE_SKEW",
            "100y",
            "events.max_future_skew",
        ),
        ("KPI_STREAM_WINDOWS__BUCKETS", "3600000", "windows.buckets"),
        (
            "KPI_STREAM_KAFKA__SESSION_TIMEOUT_MS",
            "0",
            "kafka.session_timeout_ms",
        ),
        // Above librdkafka's max.poll.interval.ms (5 minutes).
        (
            "KPI_STREAM_KAFKA__SESSION_TIMEOUT_MS",
            "600000",
            "kafka.session_timeout_ms",
        ),
        (
            "KPI_STREAM_KAFKA__PROPERTIES",
            "{\"no.such.property\"=\"1\"}",
            "kafka.properties.\"no.such.property\"",
        ),
        (
            "KPI_STREAM_KAFKA__PROPERTIES",
            "{\"security.protocol\"=\"SSL\",\"ssl.key.pem\"=\"not a key\"}",
            "kafka.properties.\"ssl.key.pem\"",
        ),
    ];
    for (variable, value, key) in cases {
        for command in ["check-config", "run"] {
            let (code, stdout, stderr) = kpi_stream(&[command], &[(variable, value)]).await;
            assert_eq!(code, 2, "{command} with {variable}={value}: {stderr}");
            assert!(
                stderr.contains(&format!("key `{key}`")),
                "{command} with {variable}={value}: {stderr}"
            );
            assert!(!stderr.contains("not a key"), "{stderr}");
            assert!(stdout.is_empty(), "{stdout}");
        }
    }
}

#[tokio::test]
async fn generate_refuses_an_option_out_of_bounds_naming_the_key() {
    let (code, _, stderr) = kpi_stream(&["generate", "--span", "400d"], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("key `generate.span`"), "{stderr}");
}

#[tokio::test]
async fn secrets_and_key_material_are_not_printed() {
    // Every one this librdkafka build supports (it has no OIDC, so no
    // sasl.oauthbearer.client.secret): the client check accepts them all.
    let properties = "{\"sasl.username\"=\"user-hunter1\",\"sasl.password\"=\"hunter2\",\
                      \"ssl.key.pem\"=\"-----BEGIN PRIVATE KEY-----hunter3\",\
                      \"ssl.key.password\"=\"hunter4\",\
                      \"sasl.oauthbearer.config\"=\"principal=hunter5\",\
                      \"ssl.keystore.password\"=\"hunter7\",\
                      \"client.rack\"=\"rack-1\"}";
    let (code, stdout, stderr) =
        check_config(&[("KPI_STREAM_KAFKA__PROPERTIES", properties)]).await;
    assert_eq!(code, 0, "{stderr}");
    for property in [
        "sasl.username",
        "sasl.password",
        "ssl.key.pem",
        "ssl.key.password",
        "sasl.oauthbearer.config",
        "ssl.keystore.password",
    ] {
        assert!(stdout.contains(property), "{property} is not listed");
    }
    assert!(stdout.contains("rack-1"));
    assert!(!stdout.contains("hunter"), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    assert!(!stderr.contains("hunter"), "{stderr}");
}

#[tokio::test]
async fn a_wrappers_own_variables_are_not_configuration() {
    let (code, stdout, stderr) = check_config(&[
        ("KPI_STREAM_CMD", "run --exit-when-caught-up"),
        ("KPI_STREAM_FOO", "bar"),
        (
            "KPI_STREAM_KAFKA__PROPERTIES",
            "{\"topic.metadata.refresh.interval.ms\"=\"1000\"}",
        ),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("topic.metadata.refresh.interval.ms"));
    // One underscore after a section is a misspelt key, not a wrapper's variable.
    let (code, _, stderr) = check_config(&[("KPI_STREAM_KAFKA_BROKERS", "x:9092")]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("KPI_STREAM_KAFKA__BROKERS"), "{stderr}");
}

#[tokio::test]
async fn password_hashes_are_not_printed_and_missing_certificates_exit_2() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let users = format!("{{prometheus=\"{hash}\"}}");
    let (code, stdout, _) = check_config(&[("KPI_STREAM_HTTP__BASIC_AUTH_USERS", &users)]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("prometheus") && !stdout.contains(&hash[7..]),
        "{stdout}"
    );
    let (code, _, stderr) = check_config(&[
        ("KPI_STREAM_HTTP__TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("KPI_STREAM_HTTP__TLS_KEY_FILE", "/nonexistent/key.pem"),
    ])
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("http.tls_cert_file"), "{stderr}");
}
