//! The command line: configuration errors exit 2 and name the key.

use std::process::Command;

fn check_config(env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kpi-stream"))
        .args(["check-config", "--config", "config/kpi-stream.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_configuration_is_valid() {
    let (code, stdout, _) = check_config(&[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("cs.surveys"));
}

#[test]
fn an_unknown_key_exits_2_naming_it() {
    let (code, _, stderr) = check_config(&[("KPI_STREAM_KAFKA__BROKERZ", "x")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("brokerz"), "{stderr}");
}

#[test]
fn an_invalid_value_exits_2_naming_the_key() {
    let (code, _, stderr) = check_config(&[("KPI_STREAM_WINDOWS__SPANS", "[\"soon\"]")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("windows.spans"), "{stderr}");
}

#[test]
fn secrets_are_not_printed() {
    let (code, stdout, _) = check_config(&[(
        "KPI_STREAM_KAFKA__PROPERTIES",
        "{\"sasl.password\"=\"hunter2\"}",
    )]);
    assert_eq!(code, 0);
    assert!(stdout.contains("sasl.password"));
    assert!(!stdout.contains("hunter2"));
}

#[test]
fn password_hashes_are_not_printed_and_missing_certificates_exit_2() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let users = format!("{{prometheus=\"{hash}\"}}");
    let (code, stdout, _) = check_config(&[("KPI_STREAM_HTTP__BASIC_AUTH_USERS", &users)]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("prometheus") && !stdout.contains(&hash[7..]),
        "{stdout}"
    );
    let (code, _, stderr) = check_config(&[
        ("KPI_STREAM_HTTP__TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("KPI_STREAM_HTTP__TLS_KEY_FILE", "/nonexistent/key.pem"),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("http.tls_cert_file"), "{stderr}");
}
