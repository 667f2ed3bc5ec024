//! The shipped Grafana dashboard and Prometheus rules: every PromQL expression parses
//! (checked by promtool) and names only metrics that kpi-stream exports or the recording
//! rules define.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::process::Command;

use figment::providers::{Format as _, Toml};
use kpi_core::aggregate::Aggregates;
use kpi_core::event::{Event, Family, Payload, Survey};
use kpi_core::partition::PartitionId;
use kpi_stream::config::Config;
use kpi_stream::metrics::Metrics;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every metric name the service exposes, with every KPI series present.
fn exported() -> BTreeSet<String> {
    let config = Config::default();
    let metrics = Metrics::new(&config.dimensions.names, ["s", "t", "b"], "USD").unwrap();
    let mut state = Aggregates::new(config.state_settings().unwrap());
    let event = Event {
        event_id: Cow::Borrowed("e"),
        occurred_at_ms: 0,
        customer_id: Cow::Borrowed("c"),
        dimensions: [None, None, None, None],
        payload: Payload::SurveyResponded {
            survey: Survey::Nps,
            score: 9,
            comment: None,
        },
        reference_ms: 0,
    };
    state
        .record(PartitionId::new(Family::Surveys, 0), &event, 0)
        .unwrap();
    metrics.update_kpis(&state.snapshot(0));
    metrics.consumer_lag.with_label_values(&["s", "0"]).set(0);
    metrics.newest_event_time.with_label_values(&["s"]).set(0.0);
    let text = String::from_utf8(metrics.encode().unwrap()).unwrap();
    let mut names = BTreeSet::from(["up".to_owned()]);
    // A value gauge is absent while undefined (CLV without churn, say): take the names of
    // every KPI and component from the table the gauges are registered from.
    for def in kpi_core::kpi::KPIS {
        names.insert(def.metric.to_owned());
        names.extend(def.components.iter().map(|c| c.metric.to_owned()));
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split(' ').skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// The names the recording rules define.
fn recorded() -> BTreeSet<String> {
    let rules =
        std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/rules/recording.yml")).unwrap();
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect()
}

/// Metric-like identifiers in an expression: `kpi_*`, recorded `a:b:c` names and `up`.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
            continue;
        }
        let metric_like = current.starts_with("kpi_")
            || current == "up"
            || (current.contains(':') && !current.starts_with(|c: char| c.is_ascii_digit()));
        if metric_like {
            names.push(current.clone());
        }
        current.clear();
    }
    names
}

/// A value for each variable the dashboard's expressions use, in either of Grafana's forms
/// (`$name`, `${name}`): its own (`window`, `segment`, `period`) and Grafana's.
const DASHBOARD_VARIABLES: [(&str, &str); 4] = [
    ("period", "month"),
    ("window", "24h"),
    ("segment", ""),
    ("__rate_interval", "1m"),
];

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/grafana/dashboards/kpi-stream.json"))
        .unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

#[test]
fn every_dashboard_expression_parses_and_uses_known_metrics() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() > 20, "{}", exprs.len());
    let known: BTreeSet<String> = exported().union(&recorded()).cloned().collect();
    for expr in &exprs {
        for name in names_in(expr) {
            assert!(
                known.contains(&name),
                "{name} in {expr} is neither exported nor recorded"
            );
        }
    }
    // promtool parses each expression as a recording rule, variables filled in. A variable
    // left in a label value would still parse, so none may be left.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let mut concrete = expr.clone();
        for (name, value) in DASHBOARD_VARIABLES {
            concrete = concrete
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        let unfilled = concrete.split('$').skip(1).find(|rest| {
            rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{')
        });
        assert!(unfilled.is_none(), "a variable is not filled in: {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}:check\n        expr: {}\n",
            serde_json::to_string(&concrete).unwrap()
        ));
    }
    let path = std::env::temp_dir().join(format!("kpi-dashboard-{}.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
        .expect("promtool is installed (scripts/setup.sh)");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_prometheus_rules_use_known_metrics() {
    let known: BTreeSet<String> = exported().union(&recorded()).cloned().collect();
    for file in ["recording.yml", "alerts.yml"] {
        let text =
            std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/rules/{file}")).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some(expr) = line.split_once(':').map(|(key, rest)| (key.trim(), rest)) else {
                continue;
            };
            // Only expression lines: `expr:` and the folded lines after it.
            if matches!(
                expr.0,
                "summary" | "description" | "alert" | "record" | "severity"
            ) {
                continue;
            }
            for name in names_in(line) {
                if name.ends_with(":") || name.starts_with("docs") {
                    continue;
                }
                assert!(known.contains(&name), "{name} in {file} is unknown: {line}");
            }
        }
    }
}

/// Every YAML file under deploy/, parsed.
fn yaml_files() -> Vec<(std::path::PathBuf, Vec<yaml_rust2::Yaml>)> {
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(format!("{ROOT}/deploy"))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let docs = yaml_rust2::YamlLoader::load_from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                files.push((path, docs));
            }
        }
    }
    files
}

#[test]
fn the_deployment_files_parse_and_refer_to_files_that_exist() {
    let files = yaml_files();
    assert!(files.len() >= 10, "{}", files.len());
    let deploy = std::path::Path::new(ROOT).join("deploy");

    let (_, compose) = files
        .iter()
        .find(|(p, _)| p.ends_with("docker-compose.yml"))
        .unwrap();
    let services = compose[0]["services"].as_hash().unwrap();
    for name in ["kafka", "kpi-stream", "generator", "prometheus", "grafana"] {
        assert!(
            services.contains_key(&yaml_rust2::Yaml::from_str(name)),
            "{name}"
        );
    }
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert!(
            !service["image"].is_badvalue() || !service["build"].is_badvalue(),
            "{name} has neither image nor build"
        );
        if let Some(context) = service["build"]["context"].as_str() {
            let dockerfile = service["build"]["dockerfile"].as_str().unwrap();
            assert!(deploy.join(context).join(dockerfile).is_file(), "{name}");
        }
        let named = &compose[0]["volumes"];
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            // A path is a file of deploy/; any other source is a volume the file declares.
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(
                    !named[source].is_badvalue(),
                    "{name} mounts the volume {source}, which the file does not declare"
                );
                continue;
            }
            assert!(
                deploy.join(source).exists(),
                "{name} mounts {source}, which does not exist"
            );
        }
    }

    // Every file the Dockerfile copies from the build context exists.
    let dockerfile = std::fs::read_to_string(deploy.join("Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &parts[..parts.len() - 1] {
            assert!(std::path::Path::new(ROOT).join(source).exists(), "{source}");
        }
    }

    // Kubernetes manifests: kinds, probes on the service's endpoints, a grace period longer
    // than the shutdown, resources.
    let kinds: Vec<(String, yaml_rust2::Yaml)> = files
        .iter()
        .filter(|(p, _)| p.parent().is_some_and(|d| d.ends_with("k8s")))
        .flat_map(|(_, docs)| docs.iter().cloned())
        .map(|doc| (doc["kind"].as_str().unwrap().to_owned(), doc))
        .collect();
    let kind_names: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert!(kind_names.contains(&kind), "{kind}");
    }
    let (_, deployment) = kinds.iter().find(|(k, _)| k == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 10);
    let container = &pod["containers"][0];
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(container["ports"][0]["containerPort"].as_i64(), Some(9464));
    // The probes go to the port of http.probe_listen in the ConfigMap's configuration.
    let (_, configmap) = kinds.iter().find(|(k, _)| k == "ConfigMap").unwrap();
    let toml = configmap["data"]["kpi-stream.toml"].as_str().unwrap();
    let config: Config = figment::Figment::new()
        .merge(Toml::string(toml))
        .extract()
        .unwrap();
    let probe_port = config.http.probe_listen.map(|a| i64::from(a.port()));
    let ports = container["ports"].as_vec().unwrap();
    for probe in ["livenessProbe", "readinessProbe"] {
        let name = container[probe]["httpGet"]["port"].as_str().unwrap();
        let port = ports.iter().find(|p| p["name"].as_str() == Some(name));
        assert_eq!(
            port.and_then(|p| p["containerPort"].as_i64()),
            probe_port,
            "{probe}"
        );
    }
    assert!(!container["resources"]["limits"]["memory"].is_badvalue());
}
