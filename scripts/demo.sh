#!/usr/bin/env bash
# The whole demo on this machine: a local Kafka, the topics, two months of history, the event
# generator and the service, then a live table of the overall KPIs over the rolling windows
# and the calendar months. Ctrl-C stops the generator and the service and deletes the demo's
# topics (the broker keeps running; scripts/kafka.sh stop stops it).
#
# The demo uses the real local Kafka rather than librdkafka's embedded mock cluster: the mock
# cluster cannot look up offsets by timestamp (the replay of the largest window), cannot
# create topics with settings (the compacted output topic), and silently drops data past
# 5 MB per partition, which would make the demo's numbers wrong.
#
# Each run has topics of its own, demo-<unix time>.*, so that its history is not mixed with
# an earlier run's. Before the service starts, the generator preloads DEMO_HISTORY events
# (default 4000000; 0: none) spread over the last 62 days, so that the previous month is
# complete whatever the date; then it goes on at DEMO_RATE events/s (default 2000) with the
# same customers and subscriptions. A million customers (KPI_STREAM_GENERATE__CUSTOMERS)
# keep the monthly churn of that history at a few percent. DEMO_SECONDS stops the demo after
# that many seconds; DEMO_PORT (default 9464) is the HTTP port.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rate=${DEMO_RATE:-2000}
history=${DEMO_HISTORY:-4000000}
port=${DEMO_PORT:-9464}
run=$root/target/demo
mkdir -p "$run"

scripts/setup.sh
scripts/kafka.sh start
echo "demo: building kpi-stream (release)"
cargo build --release --quiet
bin=$root/target/release/kpi-stream

id=demo-$(date +%s)
echo "demo: creating the topics $id.*"
scripts/kafka.sh topics "$id." 3
eval "$(scripts/kafka.sh env "$id.")"
export KPI_STREAM_KAFKA__GROUP_ID=$id
export KPI_STREAM_HTTP__LISTEN=127.0.0.1:$port
export KPI_STREAM_PUBLISH__INTERVAL=5s
export KPI_STREAM_GENERATE__CUSTOMERS=${KPI_STREAM_GENERATE__CUSTOMERS:-1000000}

children=()
cleanup() {
    [ ${#children[@]} -eq 0 ] || kill -TERM "${children[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:${KAFKA_PORT:-9092}" --delete --topic "$id\\..*" 2>/dev/null ||
        echo "demo: could not delete the topics $id.*"
    echo "demo: stopped, topics $id.* deleted, logs in $run"
    echo "demo: the broker keeps running (scripts/kafka.sh stop stops it)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Emptied first: the wait below reads it, and the log of an earlier run says the same.
: >"$run/generate.log"
"$bin" generate --history "$history" --span 62d --rate "$rate" --seed "$(date +%s)" \
    >"$run/generate.log" 2>&1 &
generator=$!
children+=("$generator")
if [ "$history" -gt 0 ]; then
    printf 'demo: preloading %s events spread over the last 62 days\n' "$history"
    preload_start=$SECONDS
    until grep -q 'history produced' "$run/generate.log"; do
        kill -0 "$generator" 2>/dev/null || { cat "$run/generate.log"; exit 1; }
        sleep 0.5
    done
    printf 'demo: history produced in %d s\n' $((SECONDS - preload_start))
fi
printf 'demo: generating %s events/s\n' "$rate"
"$bin" run >"$run/service.log" 2>&1 &
service=$!
children+=("$service")

# The service replays the topics before it serves values: show its progress meanwhile.
metric_sum() {
    curl -fs "http://127.0.0.1:$port/metrics" 2>/dev/null |
        awk -v m="$1" 'index($0, m) == 1 {split($0, a, " "); s += a[2]} END {printf "%d", s}'
}
# The overall series (segment="") of a health gauge's band, or 0.
health_of() {
    curl -fs "http://127.0.0.1:$port/metrics" 2>/dev/null |
        awk -v m="$1{band=\"$2\"" 'index($0, m) == 1 && index($0, "segment=\"\"") {printf "%d", $2; found = 1}
            END {if (!found) printf "0"}'
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
  output topic: $id.kpis, dead letters: $id.deadletter (broker 127.0.0.1:${KAFKA_PORT:-9092})
  logs:         $run/service.log, $run/generate.log
MSG

started=$(date +%s)
while :; do
    curl -fs "http://127.0.0.1:$port/kpis" | python3 -c '
import json, sys
rows, bounds = {}, {}
for r in json.load(sys.stdin):
    if not r["labels"] or set(r["labels"]) <= {"kind", "currency"}:
        rows.setdefault(r["kpi"], {})[r["window"]] = r["value"]
        if r["kpi"] == "nps":
            bounds[r["window"]] = (r["window_start"][:16] + "Z", r["window_end"][:16] + "Z")
def fmt(v, kind):
    if v is None:
        return "-"
    return {"pct": f"{100 * v:.1f}%", "pct2": f"{100 * v:.2f}%", "money": f"{v:,.0f}",
            "count": f"{v:,.0f}", "s": f"{v / 3600:.1f} h"}.get(kind, f"{v:.2f}")
shown = [("NPS", "nps", ""), ("CSAT", "csat", "pct"), ("CES (1-7)", "ces", ""),
         ("First-contact resolution", "fcr", "pct"), ("Mean resolution time", "resolution_time", "s"),
         ("Tickets opened", "tickets_opened", "count"), ("New MRR", "mrr_new", "money"),
         ("Churned MRR", "mrr_churn", "money"), ("Customer churn", "customer_churn", "pct2"),
         ("Net revenue retention", "net_revenue_retention", "pct")]
rolling = ("1h", "24h", "7d", "30d")
calendar = ("month_to_date", "previous_month")
line = "%-26s" + " %12s" * len(rolling) + " %15s" * len(calendar)
print("\n" + line % ("KPI (all segments)", *rolling, *calendar))
for label, kpi, kind in shown:
    w = rows.get(kpi, {})
    print(line % (label, *(fmt(w.get(x), kind) for x in rolling + calendar)))
now = rows.get("mrr", {}).get("current")
arpa = rows.get("arpa", {}).get("current")
customers = rows.get("customers_active", {}).get("current")
print("%-26s %12s   ARPA %s, %s active customers" % ("MRR now (USD)", fmt(now, "money"),
      fmt(arpa, "money"), fmt(customers, "count")))
if "month_to_date" in bounds and "previous_month" in bounds:
    print("month_to_date from %s, previous_month from %s to %s" % (bounds["month_to_date"][0],
          *bounds["previous_month"]))
'
    printf 'events processed %s, rejected %s, duplicates %s, late %s\n' \
        "$(metric_sum kpi_events_processed_total)" "$(metric_sum kpi_events_rejected_total)" \
        "$(metric_sum kpi_events_duplicate_total)" "$(metric_sum kpi_events_late_total)"
    printf 'customers by health: %s healthy, %s neutral, %s at risk, holding %s of MRR (%s at risk)\n' \
        "$(health_of kpi_customers_by_health healthy)" "$(health_of kpi_customers_by_health neutral)" \
        "$(health_of kpi_customers_by_health at_risk)" \
        "$(($(health_of kpi_mrr_by_health healthy) + $(health_of kpi_mrr_by_health neutral) + $(health_of kpi_mrr_by_health at_risk)))" \
        "$(health_of kpi_mrr_by_health at_risk)"
    if [ -n "${DEMO_SECONDS:-}" ] && [ $(($(date +%s) - started)) -ge "$DEMO_SECONDS" ]; then
        break
    fi
    sleep 5
done
