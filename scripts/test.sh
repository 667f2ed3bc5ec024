#!/usr/bin/env bash
# Every test CI runs: formatting, clippy with warnings denied, unit and property tests, and
# the integration tests against a real local Kafka, which this script starts (and stops, if
# it started it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh

echo "== promtool: Prometheus configuration, rules and rule tests"
promtool check config deploy/prometheus/prometheus.yml
promtool check config deploy/prometheus/compose.yml
promtool test rules deploy/prometheus/tests/*.yml

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

started_kafka=0
if ! scripts/kafka.sh status >/dev/null 2>&1; then
    scripts/kafka.sh start
    started_kafka=1
fi
stop_kafka() { [ "$started_kafka" = 1 ] && scripts/kafka.sh stop || true; }
trap stop_kafka EXIT

export KPI_TEST_BROKERS=${KPI_TEST_BROKERS:-127.0.0.1:9092}
echo "== benchmarks, one quick pass each"
cargo test --benches --locked
echo "== cargo test: unit, property and integration tests (with promtool check metrics on a real scrape)"
cargo test --workspace --lib --bins --tests --locked
