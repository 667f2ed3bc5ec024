#!/usr/bin/env bash
# The whole demo on this machine: a local Kafka, the topics, the event generator and the
# service, then a live table of the overall KPIs. Ctrl-C stops the generator and the service
# (the broker keeps running; scripts/kafka.sh stop stops it).
#
# The demo uses the real local Kafka rather than librdkafka's embedded mock cluster: the mock
# cluster cannot look up offsets by timestamp (the replay of the largest window), cannot
# create topics with settings (the compacted output topic), and silently drops data past
# 5 MB per partition, which would make the demo's numbers wrong.
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

echo "demo: creating topics"
scripts/kafka.sh topics cs. 3

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

# The service replays the topics before it serves values: show its progress meanwhile.
metric_sum() {
    curl -fs "http://127.0.0.1:$port/metrics" 2>/dev/null |
        awk -v m="$1" 'index($0, m) == 1 {split($0, a, " "); s += a[2]} END {printf "%d", s}'
}
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 "$service" 2>/dev/null || { cat "$run/service.log"; exit 1; }
    printf '\rdemo: replaying the topics: %s events read, %s messages behind   ' \
        "$(metric_sum kpi_events_consumed_total)" "$(metric_sum kpi_consumer_lag)"
    sleep 0.5
done
printf '\rdemo: caught up.%60s\n' ""
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
    if not r["labels"] or set(r["labels"]) <= {"kind", "currency"}:
        rows.setdefault(r["kpi"], {})[r["window"]] = r["value"]
def fmt(v, kind):
    if v is None:
        return "-"
    return {"pct": f"{100 * v:.1f}%", "money": f"{v:,.0f}", "count": f"{v:,.0f}",
            "s": f"{v / 3600:.1f} h"}.get(kind, f"{v:.2f}")
shown = [("NPS", "nps", ""), ("CSAT", "csat", "pct"), ("CES (1-7)", "ces", ""),
         ("First-contact resolution", "fcr", "pct"), ("Mean resolution time", "resolution_time", "s"),
         ("Tickets opened", "tickets_opened", "count"), ("New MRR", "mrr_new", "money"),
         ("Churned MRR", "mrr_churn", "money"), ("Customer churn", "customer_churn", "pct"),
         ("Net revenue retention", "net_revenue_retention", "pct")]
print("\n%-26s %10s %10s %10s %10s" % ("KPI (all segments)", "1h", "24h", "7d", "30d"))
for label, kpi, kind in shown:
    w = rows.get(kpi, {})
    print("%-26s %10s %10s %10s %10s" % (label, *(fmt(w.get(x), kind) for x in ("1h", "24h", "7d", "30d"))))
now = rows.get("mrr", {}).get("current")
arpa = rows.get("arpa", {}).get("current")
print("%-26s %10s   ARPA %s" % ("MRR now (USD)", fmt(now, "money"), fmt(arpa, "money")))
'
    printf 'events processed %s, rejected %s, duplicates %s\n' "$(metric_sum kpi_events_processed_total)" \
        "$(metric_sum kpi_events_rejected_total)" "$(metric_sum kpi_events_duplicate_total)"
    if [ -n "${DEMO_SECONDS:-}" ] && [ $(($(date +%s) - started)) -ge "$DEMO_SECONDS" ]; then
        break
    fi
    sleep 5
done
