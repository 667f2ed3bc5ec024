use kpi_core::event::Priority;
use kpi_core::health::{HealthModel, Signal};
use kpi_core::sla::SlaTargets;

use super::*;

fn load_str(toml: &str) -> Result<Config, ConfigError> {
    Config::from_toml(toml)
}

fn refused_key(toml: &str) -> String {
    match load_str(toml) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("{toml}: {other:?}"),
    }
}

#[test]
fn the_shipped_file_is_the_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kpi-stream.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let shipped = load_str(&text).unwrap();
    assert_eq!(format!("{shipped:?}"), format!("{:?}", Config::default()));
}

#[test]
fn basic_auth_users_need_bcrypt_hashes_of_bounded_cost() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let users = |user: &str, hash: &str| {
        load_str(&format!("[http.basic_auth_users]\n\"{user}\" = \"{hash}\""))
    };
    assert!(users("prometheus", &hash).is_ok());
    for (user, hash) in [
        ("a:b", hash.clone()),
        ("", hash.clone()),
        ("prometheus", hash.replacen("$04$", "$15$", 1)),
    ] {
        let err = users(user, &hash).unwrap_err().to_string();
        assert!(err.contains("http.basic_auth_users"), "{err}");
        assert!(!err.contains(&hash[7..]), "the hash is quoted: {err}");
    }
}

#[test]
fn redaction_masks_password_hashes() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let config = load_str(&format!("[http.basic_auth_users]\nprometheus = \"{hash}\"")).unwrap();
    let printed = format!("{config:?}");
    assert!(
        printed.contains("prometheus") && !printed.contains(&hash[7..]),
        "{printed}"
    );
}

#[test]
fn a_secret_field_prints_as_redacted() {
    #[derive(Debug, Deserialize)]
    struct Users {
        users: BTreeMap<String, Secret<String>>,
    }
    let users: Users = Figment::new()
        .merge(Toml::string("[users]\nalice = \"$2b$12$hash\""))
        .extract()
        .unwrap();
    assert_eq!(users.users["alice"].expose(), "$2b$12$hash");
    let printed = format!("{users:?}");
    assert!(printed.contains("alice") && printed.contains("<redacted>"));
    assert!(!printed.contains("hash"), "{printed}");
}

#[test]
fn every_sensitive_property_is_redacted_and_only_those() {
    let mut toml = String::from("[kafka.properties]\n");
    for (i, property) in SENSITIVE_PROPERTIES.iter().enumerate() {
        toml.push_str(&format!("{property:?} = \"hunter{i}\"\n"));
    }
    // Names librdkafka may add later are recognized by what they hold.
    toml.push_str("\"ssl.truststore.password\" = \"hunterA\"\n");
    toml.push_str("\"sasl.future.secret\" = \"hunterB\"\n");
    // Public: a certificate, a protocol, the path of a keytab.
    toml.push_str("\"ssl.certificate.pem\" = \"CERTIFICATE\"\n");
    toml.push_str("\"security.protocol\" = \"SASL_SSL\"\n");
    toml.push_str("\"sasl.kerberos.keytab\" = \"/etc/krb5.keytab\"\n");
    let config = load_str(&toml).unwrap();
    let printed = format!("{config:#?}");
    assert!(!printed.contains("hunter"), "{printed}");
    for property in SENSITIVE_PROPERTIES {
        assert!(printed.contains(property), "{property} is not listed");
    }
    for public in ["CERTIFICATE", "SASL_SSL", "/etc/krb5.keytab"] {
        assert!(printed.contains(public), "{public} is hidden");
    }
}

// figment's own test API returns its large error type.
#[allow(clippy::result_large_err)]
#[test]
fn secrets_come_from_files_and_variables_and_are_redacted() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("password", "s3cret-file\n")?;
        jail.set_env("KAFKA_TOKEN", "s3cret-env");
        jail.create_file(
            "k.toml",
            "[kafka.secret_files]\n\"sasl.password\" = \"password\"\n\
                 [kafka.secret_env]\n\"sasl.oauthbearer.config\" = \"KAFKA_TOKEN\"\n\
                 [kafka.properties]\n\"sasl.password\" = \"overridden\"",
        )?;
        let config = Config::load(Some(Path::new("k.toml"))).map_err(|e| e.to_string())?;
        let secrets = &config.kafka.secret_properties;
        assert_eq!(secrets["sasl.password"].expose(), "s3cret-file");
        assert_eq!(secrets["sasl.oauthbearer.config"].expose(), "s3cret-env");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        jail.create_file(
            "missing.toml",
            "[kafka.secret_files]\n\"sasl.password\" = \"missing\"",
        )?;
        let err = Config::load(Some(Path::new("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.secret_files.\"sasl.password\""),
            "{err}"
        );
        Ok(())
    });
}

// figment's own test API returns its large error type.
#[allow(clippy::result_large_err)]
#[test]
fn a_secret_file_larger_than_a_mebibyte_is_refused() {
    figment::Jail::expect_with(|jail| {
        let limit = MAX_SECRET_BYTES as usize;
        jail.create_file("ca.pem", &"a".repeat(limit))?;
        jail.create_file("huge", &"a".repeat(limit + 1))?;
        let load = |file: &str| {
            std::fs::write(
                "k.toml",
                format!("[kafka.secret_files]\n\"ssl.ca.pem\" = \"{file}\""),
            )
            .unwrap();
            Config::load(Some(Path::new("k.toml")))
        };
        assert!(load("ca.pem").is_ok());
        let err = load("huge").unwrap_err().to_string();
        assert!(
            err.contains("kafka.secret_files.\"ssl.ca.pem\"") && err.contains("larger"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn default_windows_have_sixty_buckets() {
    let specs = Config::default().window_specs().unwrap();
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["1h", "24h", "7d", "30d"]);
    assert_eq!(specs[0].bucket_ms, 60_000);
    assert_eq!(specs[3].bucket_ms, 12 * 3_600_000);
    let settings = Config::default().state_settings().unwrap();
    assert_eq!(
        settings.replay_span_ms(),
        (30 * 86_400 + 12 * 3600 + 300) * 1000
    );
    assert_eq!(settings.windows[settings.clv_window].name, "30d");
}

#[test]
fn workers_default_to_the_available_cores() {
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(Config::default().workers(), cores.min(64));
    let set = load_str("[processing]\nworkers = 3").unwrap();
    assert_eq!(set.workers(), 3);
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let err = load_str("[kafka]\nbrokerz = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("brokerz"), "{err}");
}

#[test]
fn invalid_values_name_the_key() {
    let cases = [
        ("[windows]\nspans = [\"1h\", \"soon\"]", "windows.spans"),
        ("[windows]\nspans = [\"1h\"]\nbuckets = 7", "windows.spans"),
        ("[dimensions]\nnames = [\"plan\"]", "dimensions.names"),
        (
            "[dimensions]\nnames = [\"segment\", \"segment\"]",
            "dimensions.names",
        ),
        ("[topics]\noutput = \"cs.surveys\"", "topics.output"),
        ("[topics]\noutput = \"cs kpis\"", "topics.output"),
        ("[topics]\noutput = \"..\"", "topics.output"),
        ("[topics]\noutput = \"\"", "topics.output"),
        ("[kafka]\ngroup_id = \"\"", "kafka.group_id"),
        ("[kafka]\nbrokers = \" \"", "kafka.brokers"),
        ("[billing]\nclv_window = \"90d\"", "billing.clv_window"),
        // The same span under another name is not one of windows.spans.
        ("[billing]\nclv_window = \"720h\"", "billing.clv_window"),
        (
            "[billing]\nbase_currency = \"usd\"",
            "billing.base_currency",
        ),
        ("[billing.rates]\nEUR = -1.0", "billing.rates"),
        (
            "[billing]\nrates_topic = \"cs rates\"",
            "billing.rates_topic",
        ),
        ("[billing]\nrates_topic = \"\"", "billing.rates_topic"),
        (
            "[billing]\nrates_topic = \"cs.billing\"",
            "billing.rates_topic",
        ),
        ("[kafka]\nmax_pause = \"0s\"", "kafka.max_pause"),
        ("[kafka]\nmax_pause = \"8d\"", "kafka.max_pause"),
        ("[kafka]\nmax_pause = \"100y\"", "kafka.max_pause"),
        ("[billing.rates]\nEUR = nan", "billing.rates"),
        ("[billing.rates]\nEUR = inf", "billing.rates"),
        (
            "[generate]\nmalformed_ratio = 1.5",
            "generate.malformed_ratio",
        ),
        ("[generate]\nsegments = []", "generate.segments"),
        ("[generate]\nsegments = [\"\"]", "generate.segments"),
        (
            "[publish]\ninterval = \"1m\"\nsnapshot_interval = \"30s\"",
            "publish.snapshot_interval",
        ),
        (
            "[kafka.properties]\n\"client.rack\" = \"a\\u0000b\"",
            "kafka.properties.\"client.rack\"",
        ),
        (
            "[kafka.properties]\n\"sasl.password\" = \"a\\u0000b\"",
            "kafka.properties.\"sasl.password\"",
        ),
        ("[http]\nmax_connections = 0", "http.max_connections"),
        ("[http]\nmax_connections = 10001", "http.max_connections"),
        (
            "[http]\nheader_read_timeout = \"50ms\"",
            "http.header_read_timeout",
        ),
        (
            "[http]\nheader_read_timeout = \"2m\"",
            "http.header_read_timeout",
        ),
        ("[http]\nidle_timeout = \"1h\"", "http.idle_timeout"),
        (
            "[http]\nlisten = \"0.0.0.0:9464\"\nprobe_listen = \"0.0.0.0:9464\"",
            "http.probe_listen",
        ),
        ("[http]\ntls_cert_file = \"c.pem\"", "http.tls_key_file"),
        ("[http]\ntls_key_file = \"k.pem\"", "http.tls_cert_file"),
        (
            "[http.basic_auth_users]\nprometheus = \"hunter2\"",
            "http.basic_auth_users",
        ),
    ];
    for (toml, key) in cases {
        assert_eq!(refused_key(toml), key, "{toml}");
    }
}

/// Each bound at its edge: the value just inside is accepted, the one just outside is
/// refused naming the key.
#[test]
fn every_bound_is_enforced_at_its_edge() {
    let long_topic = "t".repeat(249);
    let too_long_topic = "t".repeat(250);
    let segment = "s".repeat(256);
    let too_long_segment = "s".repeat(257);
    let one_hour = "[windows]\nspans = [\"1h\"]\n[billing]\nclv_window = \"1h\"\n";
    let cases: Vec<(String, String, &str)> = vec![
        // The skew fits in the largest window.
        (
            format!("{one_hour}[events]\nmax_future_skew = \"1h\""),
            format!("{one_hour}[events]\nmax_future_skew = \"1h 1ms\""),
            "events.max_future_skew",
        ),
        // Ring slots: 1m window of 1 s buckets, 2h window of 2 min buckets, the three
        // default calendar periods of 3 slots each:
        // (60 + 3932 + 1) + (60 + 33 + 1) + 9 = 4096 slots; one more second of skew
        // needs one more slot in the 1m window.
        (
            "[windows]\nspans = [\"1m\", \"2h\"]\n[billing]\nclv_window = \"2h\"\n\
                 [events]\nmax_future_skew = \"3932s\""
                .into(),
            "[windows]\nspans = [\"1m\", \"2h\"]\n[billing]\nclv_window = \"2h\"\n\
                 [events]\nmax_future_skew = \"3933s\""
                .into(),
            "events.max_future_skew",
        ),
        // The default windows with 1,000 buckets and 5 minutes of skew, without calendar
        // periods: 4,094 slots.
        (
            "[windows]\nbuckets = 1000\n[calendar]\nperiods = []".into(),
            "[windows]\nbuckets = 1001\n[calendar]\nperiods = []".into(),
            "windows.buckets",
        ),
        (
            "[billing]\ntrial_grace = \"90d\"".into(),
            "[billing]\ntrial_grace = \"90d 1ms\"".into(),
            "billing.trial_grace",
        ),
        (
            "[health]\nsignal_window = \"1d\"\nforget_after = \"1d\"".into(),
            "[health]\nsignal_window = \"23h 59m 59s\"".into(),
            "health.signal_window",
        ),
        (
            "[health]\nsignal_window = \"366d\"".into(),
            "[health]\nsignal_window = \"366d 1ms\"".into(),
            "health.signal_window",
        ),
        (
            "[health]\nforget_after = \"3660d\"".into(),
            "[health]\nforget_after = \"3660d 1ms\"".into(),
            "health.forget_after",
        ),
        (
            "[health]\nforget_after = \"90d\"".into(),
            "[health]\nforget_after = \"90d\"\nsignal_window = \"90d 1ms\"".into(),
            "health.forget_after",
        ),
        (
            "[sla]\nmax_open_age = \"1h\"".into(),
            "[sla]\nmax_open_age = \"59m 59s\"".into(),
            "sla.max_open_age",
        ),
        (
            "[sla]\nmax_open_age = \"366d\"".into(),
            "[sla]\nmax_open_age = \"366d 1ms\"".into(),
            "sla.max_open_age",
        ),
        (
            "[sla]\nurgent = { first_reply = \"1m\" }".into(),
            "[sla]\nurgent = { first_reply = \"59s\" }".into(),
            "sla.urgent.first_reply",
        ),
        (
            "[sla]\nlow.resolution = \"366d\"".into(),
            "[sla]\nlow.resolution = \"366d 1ms\"".into(),
            "sla.low.resolution",
        ),
        // Calendar keys.
        (
            "[calendar]\ngrace = \"31d\"".into(),
            "[calendar]\ngrace = \"31d 1ms\"".into(),
            "calendar.grace",
        ),
        (
            "[calendar]\ntimezone = \"Australia/Lord_Howe\"".into(),
            "[calendar]\ntimezone = \"Europe/Atlantis\"".into(),
            "calendar.timezone",
        ),
        (
            "[calendar]\nweek_start = \"sunday\"".into(),
            "[calendar]\nweek_start = \"saturday\"".into(),
            "calendar.week_start",
        ),
        (
            "[calendar]\nperiods = [\"day\", \"week\", \"month\", \"quarter\", \"year\"]".into(),
            "[calendar]\nperiods = [\"day\", \"fortnight\"]".into(),
            "calendar.periods",
        ),
        (
            "[calendar]\nperiods = [\"year\"]".into(),
            "[calendar]\nperiods = [\"year\", \"year\"]".into(),
            "calendar.periods",
        ),
        // Five windows of 1,000 buckets need 5,005 slots whatever the skew.
        (
            "[windows]\nspans = [\"1h\", \"2h\", \"3h\", \"4h\"]\nbuckets = 1000\n\
                 [billing]\nclv_window = \"1h\"\n[events]\nmax_future_skew = \"0s\""
                .into(),
            "[windows]\nspans = [\"1h\", \"2h\", \"3h\", \"4h\", \"5h\"]\nbuckets = 1000\n\
                 [billing]\nclv_window = \"1h\"\n[events]\nmax_future_skew = \"0s\""
                .into(),
            "windows.buckets",
        ),
        (
            "[windows]\nspans = [\"366d\"]\n[billing]\nclv_window = \"366d\"".into(),
            "[windows]\nspans = [\"367d\"]\n[billing]\nclv_window = \"367d\"".into(),
            "windows.spans",
        ),
        (
            "[events]\ndedup_horizon = \"30d\"".into(),
            "[events]\ndedup_horizon = \"30d 1ms\"".into(),
            "events.dedup_horizon",
        ),
        (
            "[events]\nmax_event_bytes = 1024".into(),
            "[events]\nmax_event_bytes = 1023".into(),
            "events.max_event_bytes",
        ),
        (
            "[events]\nmax_event_bytes = 100000000".into(),
            "[events]\nmax_event_bytes = 100000001".into(),
            "events.max_event_bytes",
        ),
        (
            "[kafka]\nsession_timeout_ms = 6000".into(),
            "[kafka]\nsession_timeout_ms = 5999".into(),
            "kafka.session_timeout_ms",
        ),
        (
            "[kafka]\nsession_timeout_ms = 1800000".into(),
            "[kafka]\nsession_timeout_ms = 1800001".into(),
            "kafka.session_timeout_ms",
        ),
        (
            "[kafka]\nrequest_timeout_ms = 1000".into(),
            "[kafka]\nrequest_timeout_ms = 999".into(),
            "kafka.request_timeout_ms",
        ),
        (
            "[kafka]\nrequest_timeout_ms = 300000".into(),
            "[kafka]\nrequest_timeout_ms = 300001".into(),
            "kafka.request_timeout_ms",
        ),
        (
            "[publish]\ninterval = \"100ms\"".into(),
            "[publish]\ninterval = \"99ms\"".into(),
            "publish.interval",
        ),
        (
            "[publish]\ninterval = \"1h\"\nsnapshot_interval = \"1h\"".into(),
            "[publish]\ninterval = \"1h 1ms\"\nsnapshot_interval = \"1h 1ms\"".into(),
            "publish.interval",
        ),
        (
            "[publish]\nsnapshot_interval = \"1h\"".into(),
            "[publish]\nsnapshot_interval = \"1h 1ms\"".into(),
            "publish.snapshot_interval",
        ),
        // One dimension: 1 + (1,022 + 1) = 1,024 series in 4 windows.
        (
            "[dimensions]\nmax_values = 1022\n[calendar]\nperiods = []".into(),
            "[dimensions]\nmax_values = 1023\n[calendar]\nperiods = []".into(),
            "dimensions.max_values",
        ),
        // With the three default calendar periods, 10 windows: 1 + (407 + 1) = 409
        // series.
        (
            "[dimensions]\nmax_values = 407".into(),
            "[dimensions]\nmax_values = 408".into(),
            "dimensions.max_values",
        ),
        (
            "[processing]\nworkers = 1".into(),
            "[processing]\nworkers = 0".into(),
            "processing.workers",
        ),
        (
            "[processing]\nworkers = 64".into(),
            "[processing]\nworkers = 65".into(),
            "processing.workers",
        ),
        (
            "[dimensions]\nmax_values = 1".into(),
            "[dimensions]\nmax_values = 0".into(),
            "dimensions.max_values",
        ),
        (
            "[billing.rates]\nEUR = 1e9\nJPY = 1e-9".into(),
            "[billing.rates]\nEUR = 1.000001e9".into(),
            "billing.rates",
        ),
        (
            "[billing.rates]\nJPY = 1e-9".into(),
            "[billing.rates]\nJPY = 0.999999e-9".into(),
            "billing.rates",
        ),
        (
            "[billing]\nrates_topic = \"cs.rates\"\nmax_rates = 1".into(),
            "[billing]\nrates_topic = \"cs.rates\"\nmax_rates = 0".into(),
            "billing.max_rates",
        ),
        (
            "[billing]\nmax_rates = 1000000".into(),
            "[billing]\nmax_rates = 1000001".into(),
            "billing.max_rates",
        ),
        (
            "[generate]\ncustomers = 1".into(),
            "[generate]\ncustomers = 0".into(),
            "generate.customers",
        ),
        (
            "[generate]\ncustomers = 1000000".into(),
            "[generate]\ncustomers = 1000001".into(),
            "generate.customers",
        ),
        (
            format!("[generate]\nsegments = [{}]", vec!["\"s\""; 1000].join(",")),
            format!("[generate]\nsegments = [{}]", vec!["\"s\""; 1001].join(",")),
            "generate.segments",
        ),
        (
            format!("[generate]\nsegments = [\"{segment}\"]"),
            format!("[generate]\nsegments = [\"{too_long_segment}\"]"),
            "generate.segments",
        ),
        (
            "[generate]\nspan = \"366d\"".into(),
            "[generate]\nspan = \"366d 1ms\"".into(),
            "generate.span",
        ),
        (
            "[generate]\nhistory = 1\nspan = \"1ms\"".into(),
            "[generate]\nhistory = 1\nspan = \"0s\"".into(),
            "generate.history",
        ),
        (
            format!("[topics]\noutput = \"{long_topic}\""),
            format!("[topics]\noutput = \"{too_long_topic}\""),
            "topics.output",
        ),
    ];
    for (inside, outside, key) in cases {
        if let Err(e) = load_str(&inside) {
            panic!("{inside}: refused: {e}");
        }
        assert_eq!(refused_key(&outside), key, "{outside}");
    }
}

#[test]
fn the_settings_that_crashed_the_service_are_refused_naming_the_key() {
    let cases = [
        (
            "[events]\nmax_future_skew = \"100y\"",
            "events.max_future_skew",
        ),
        ("[windows]\nbuckets = 3600000", "windows.buckets"),
        (
            "[kafka]\nsession_timeout_ms = 0",
            "kafka.session_timeout_ms",
        ),
        ("[events]\ndedup_horizon = \"100y\"", "events.dedup_horizon"),
        (
            "[publish]\nsnapshot_interval = \"100y\"",
            "publish.snapshot_interval",
        ),
        ("[generate]\ncustomers = 4000000000", "generate.customers"),
    ];
    for (toml, key) in cases {
        assert_eq!(refused_key(toml), key, "{toml}");
    }
    let err = load_str("[windows]\nbuckets = 3600000")
        .unwrap_err()
        .to_string();
    assert!(err.contains("1..=1000"), "{err}");
}

#[test]
fn librdkafka_messages_are_shown_without_secret_values() {
    let config = load_str(
        "[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"kpi\"",
    )
    .unwrap();
    let shown = config.without_secrets("login as kpi with hunter2 failed");
    assert_eq!(shown, "login as kpi with <redacted> failed");
}

#[test]
fn only_section_and_key_variables_are_configuration() {
    for name in [
        "KPI_STREAM_CMD",
        "KPI_STREAM_FOO",
        "KPI_STREAM_CONFIG",
        "KPI_STREAM_KAFKA__BROKERS",
        "KPI_STREAM_KAFAK__BROKERS",
        "KPI_STREAMING",
        "PATH",
    ] {
        assert!(check_variable_name(name).is_ok(), "{name}");
    }
    for (name, hint) in [
        ("KPI_STREAM_KAFKA_BROKERS", "KPI_STREAM_KAFKA__BROKERS"),
        ("kpi_stream_windows_spans", "KPI_STREAM_WINDOWS__SPANS"),
        ("KPI_STREAM_HTTP", "KPI_STREAM_HTTP__KEY"),
    ] {
        match check_variable_name(name) {
            Err(e @ ConfigError::Environment { .. }) => {
                let e = e.to_string();
                assert!(e.contains(name) && e.contains(hint), "{e}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn the_listed_sections_are_the_configuration_sections() {
    let err = load_str("[nosuch]").unwrap_err().to_string();
    let expected = SECTIONS.map(|s| format!("`{s}`")).join(", ");
    assert!(err.contains(&format!("one of {expected}`")), "{err}");
}

// figment's own test API returns its large error type.
#[allow(clippy::result_large_err)]
#[test]
fn environment_overrides_the_file() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("k.toml", "[kafka]\nbrokers = \"file:9092\"")?;
        jail.set_env("KPI_STREAM_KAFKA__BROKERS", "env:9092");
        jail.set_env("KPI_STREAM_WINDOWS__SPANS", "[\"1h\"]");
        jail.set_env("KPI_STREAM_CONFIG", "k.toml");
        jail.set_env("KPI_STREAM_BILLING__CLV_WINDOW", "1h");
        jail.set_env(
            "KPI_STREAM_KAFKA__PROPERTIES",
            "{\"security.protocol\"=\"SASL_SSL\",\"sasl.password\"=\"hunter2\"}",
        );
        // A wrapper's own variables are not configuration.
        jail.set_env("KPI_STREAM_CMD", "run --exit-when-caught-up");
        jail.set_env("KPI_STREAM_FOO", "bar");
        let config = Config::load(Some(Path::new("k.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(config.kafka.brokers, "env:9092");
        assert_eq!(config.windows.spans, ["1h"]);
        assert_eq!(config.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(
            config.kafka.secret_properties["sasl.password"].expose(),
            "hunter2"
        );
        // A misspelt section is still an unknown key.
        jail.set_env("KPI_STREAM_KAFAK__BROKERS", "x");
        let err = Config::load(Some(Path::new("k.toml"))).unwrap_err();
        assert!(err.to_string().contains("kafak"), "{err}");
        Ok(())
    });
}

#[test]
fn sla_targets_not_given_keep_their_defaults() {
    const HOUR_MS: u64 = 3_600_000;
    let config = load_str(
        "[sla]\nurgent = { first_reply = \"30m\" }\nlow = { first_reply = \"2d\", \
             resolution = \"14d\" }",
    )
    .unwrap();
    let targets = config.sla.targets().unwrap();
    let of = |p| {
        let t = targets.of(Some(p));
        (t.first_reply_ms, t.resolution_ms)
    };
    assert_eq!(of(Priority::Urgent), (HOUR_MS / 2, 8 * HOUR_MS));
    assert_eq!(of(Priority::Low), (48 * HOUR_MS, 14 * 24 * HOUR_MS));
    assert_eq!(of(Priority::High), (4 * HOUR_MS, 24 * HOUR_MS));
    assert_eq!(targets.of(None), targets.of(Some(Priority::Normal)));
    assert_eq!(
        Config::default().sla.targets().unwrap(),
        SlaTargets::default()
    );
    let err = load_str("[sla]\nhigh = { first_reply = \"1h\", reply = \"1h\" }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("reply") && err.contains("sla.high"), "{err}");
}

// figment's own test API returns its large error type.
#[allow(clippy::result_large_err)]
#[test]
fn a_property_value_that_does_not_parse_is_not_quoted() {
    figment::Jail::expect_with(|jail| {
        // Not a table (it is not closed), so figment reads the whole text as a string.
        jail.set_env(
            "KPI_STREAM_KAFKA__PROPERTIES",
            "{\"sasl.password\"=\"hunter2\"",
        );
        let err = Config::load(None).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("KAFKA.PROPERTIES"), "{err}");
        Ok(())
    });
}

/// Every way a health model can be wrong is refused naming its key, and the edges that are
/// right are accepted.
#[test]
fn a_health_model_is_checked_naming_the_key() {
    let refused = [
        (
            "[health.signals.loyalty]\nweight = 1",
            "health.signals.loyalty",
        ),
        (
            "[health.signals.nps]\nlinear = { zero = 0, full = 10 }\nthresholds = [[0, 0]]",
            "health.signals.nps.linear",
        ),
        (
            "[health.signals.nps]\nlinear = { zero = 5, full = 5 }",
            "health.signals.nps.linear",
        ),
        (
            "[health.signals.nps]\nthresholds = []",
            "health.signals.nps.thresholds",
        ),
        (
            "[health.signals.csat]\nthresholds = [[3, 50], [2, 60]]",
            "health.signals.csat.thresholds",
        ),
        (
            "[health.signals.csat]\nthresholds = [[1, 101]]",
            "health.signals.csat.thresholds",
        ),
        (
            "[health.signals.tenure_days]\nweight = -1",
            "health.signals.tenure_days.weight",
        ),
        (
            "[health.signals.tenure_days]\nweight = 1000.5",
            "health.signals.tenure_days.weight",
        ),
        (
            "[health.signals.tenure_days]\nweight = nan",
            "health.signals.tenure_days.weight",
        ),
        ("[health.bands]\nhealthy = 40\nat_risk = 40", "health.bands"),
        ("[health.bands]\nhealthy = 101", "health.bands"),
    ];
    for (toml, key) in refused {
        assert_eq!(refused_key(toml), key, "{toml}");
    }
    let every_weight_zero: String = Signal::ALL
        .iter()
        .map(|s| format!("[health.signals.{}]\nweight = 0\n", s.name()))
        .collect();
    assert_eq!(refused_key(&every_weight_zero), "health.signals");
    let thresholds: Vec<String> = (0..17).map(|i| format!("[{i}, 50]")).collect();
    let too_many = format!(
        "[health.signals.nps]\nthresholds = [{}]",
        thresholds.join(", ")
    );
    assert_eq!(refused_key(&too_many), "health.signals.nps.thresholds");
    let sixteen = format!(
        "[health.signals.nps]\nthresholds = [{}]",
        thresholds[..16].join(", ")
    );
    for accepted in [
        sixteen.as_str(),
        "[health.signals.nps]\nweight = 1000\nlinear = { zero = 10, full = 0 }",
        "[health.signals.nps]\nweight = 0",
        "[health.bands]\nhealthy = 100\nat_risk = 0",
    ] {
        let config = load_str(accepted).unwrap();
        config.health.model().unwrap();
    }
    // A signal given a weight alone keeps its default mapping.
    let config = load_str("[health.signals.nps]\nweight = 7").unwrap();
    let model = config.health.model().unwrap();
    let defaults = HealthModel::default();
    assert_eq!(model.rule(Signal::Nps).weight, 7.0);
    assert_eq!(
        model.rule(Signal::Nps).mapping,
        defaults.rule(Signal::Nps).mapping
    );
    assert_eq!(model.rule(Signal::Csat), defaults.rule(Signal::Csat));
}
