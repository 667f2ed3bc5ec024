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
