#!/usr/bin/env bash
# The whole demo on this machine: a local Kafka, the topics, the event generator and the
# service, then a live table of the overall KPIs. Ctrl-C stops the generator and the service
# (the broker keeps running; scripts/kafka.sh stop stops it).
#
# DEMO_RATE (default 2000 events/s) sets the generator's rate; DEMO_SECONDS stops the demo
# after that many seconds; DEMO_PORT (default 9464) is the HTTP port.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rate=${DEMO_RATE:-2000}
port=${DEMO_PORT:-9464}
run=$root/target/demo
mkdir -p "$run"

scripts/setup.sh
scripts/kafka.sh start
echo "demo: building kpi-stream (release)"
cargo build --release --quiet
bin=$root/target/release/kpi-stream

topic() {
    scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 \
        --create --if-not-exists --replication-factor 1 "$@" >/dev/null
}
echo "demo: creating topics"
topic --topic cs.surveys --partitions 3
topic --topic cs.tickets --partitions 3
topic --topic cs.billing --partitions 3
topic --topic cs.deadletter --partitions 1
topic --topic cs.kpis --partitions 1 --config cleanup.policy=compact

export KPI_STREAM_HTTP__LISTEN=127.0.0.1:$port
export KPI_STREAM_PUBLISH__INTERVAL=5s
# A new seed per run: event ids differ from earlier runs on the same topics.
"$bin" generate --rate "$rate" --seed "$(date +%s)" >"$run/generate.log" 2>&1 &
generator=$!
"$bin" run >"$run/service.log" 2>&1 &
service=$!
cleanup() {
    kill -TERM "$generator" "$service" 2>/dev/null || true
    wait "$generator" "$service" 2>/dev/null || true
    echo "demo: stopped (logs in $run; the broker keeps running: scripts/kafka.sh stop)"
}
trap cleanup EXIT INT TERM

echo "demo: waiting for the service to replay and become ready"
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 "$service" 2>/dev/null || { cat "$run/service.log"; exit 1; }
    sleep 0.5
done
cat <<MSG

kpi-stream is running.
  metrics:      http://127.0.0.1:$port/metrics
  KPIs as JSON: http://127.0.0.1:$port/kpis
  output topic: cs.kpis, dead letters: cs.deadletter (broker 127.0.0.1:9092)
  logs:         $run/service.log, $run/generate.log
MSG

started=$(date +%s)
while :; do
    curl -fs "http://127.0.0.1:$port/kpis" | python3 -c '
import json, sys
rows = {}
for r in json.load(sys.stdin):
    if not r["labels"]:
        rows.setdefault(r["kpi"], {})[r["window"]] = r["value"]
fmt = lambda v: "-" if v is None else f"{v:.3f}"
print("\n%-10s %10s %10s %10s %10s" % ("kpi", "1h", "24h", "7d", "30d"))
for kpi in ("nps", "csat", "ces", "ces_easy"):
    w = rows.get(kpi, {})
    print("%-10s %10s %10s %10s %10s" % (kpi, *(fmt(w.get(x)) for x in ("1h", "24h", "7d", "30d"))))
'
    curl -fs "http://127.0.0.1:$port/metrics" | awk '/^kpi_events_(processed|rejected)_total/ {split($1, a, "{"); s[a[1]] += $2} END {printf "events processed %d, rejected %d\n", s["kpi_events_processed_total"], s["kpi_events_rejected_total"]}'
    if [ -n "${DEMO_SECONDS:-}" ] && [ $(($(date +%s) - started)) -ge "$DEMO_SECONDS" ]; then
        break
    fi
    sleep 5
done
