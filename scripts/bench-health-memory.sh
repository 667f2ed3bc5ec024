#!/usr/bin/env bash
# Resident memory of customer health for many customers, on this machine. Not part of CI.
#
#   scripts/bench-health-memory.sh                                  1,000,000 customers
#   HEALTH_CUSTOMERS=100000 HEALTH_EVENTS=600000 scripts/bench-health-memory.sh
#
# Generates HEALTH_EVENTS events (default 6,000,000: half surveys, 40% tickets, 10% billing)
# of HEALTH_CUSTOMERS customers (default 1,000,000) over 30 days into topics of 6 partitions,
# then runs one instance:
#   1. with customer health on (the default) and a publish every second, until it is ready
#      and its owner holds every customer the input partitions wrote
#      (kpi_health_customers_owned unchanged over five scrapes 2 s apart): its resident
#      memory (VmRSS), customers owned and scored;
#   2. with customer health off, once ready: its resident memory.
# Prints both and writes target/bench/health-memory.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
customers=${HEALTH_CUSTOMERS:-1000000}
events=${HEALTH_EVENTS:-6000000}
out=$root/target/bench
mkdir -p "$out"

scripts/setup.sh
scripts/kafka.sh start
cargo build --release --quiet
bin=$root/target/release/kpi-stream
id=health-memory-$(date +%s)
scripts/kafka.sh topics "$id." 6
delete_topics() {
    scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 \
        --delete --topic "${id//./\\.}\\..*" >/dev/null 2>&1 || true
}
trap delete_topics EXIT
eval "$(scripts/kafka.sh env "$id.")"
export RUST_LOG=warn KPI_STREAM_GENERATE__CUSTOMERS=$customers
"$bin" generate --count "$events" --rate 0 --span 30d --seed 7 2>/dev/null

port=9479
# The value of an unlabelled metric on /metrics, or nothing.
metric() {
    curl -s "127.0.0.1:$port/metrics" | awk -v name="$1" '$1 == name {print $2}'
}
# The value of `kpi_customers_by_health{band=BAND,segment=""}`.
band() {
    curl -s "127.0.0.1:$port/metrics" |
        awk -v series="kpi_customers_by_health{band=\"$1\",segment=\"\"}" '$1 == series {print $2}'
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ready() { curl -sf "127.0.0.1:$port/readyz" >/dev/null; }

run() {
    local name=$1
    shift
    env "$@" KPI_STREAM_KAFKA__GROUP_ID="$id-$name" KPI_STREAM_HTTP__LISTEN="127.0.0.1:$port" \
        KPI_STREAM_PUBLISH__INTERVAL=1s "$bin" run >"$out/health-memory-$name.log" 2>&1 &
    pid=$!
    until ready; do sleep 1; done
}
stop() {
    kill -TERM "$pid"
    wait "$pid" || true
}

run on
owned=-1 steady=0
while [ "$steady" -lt 5 ]; do
    sleep 2
    now=$(metric kpi_health_customers_owned)
    if [ "$now" = "$owned" ] && [ "${now:-0}" != 0 ]; then steady=$((steady + 1)); else steady=0; fi
    owned=$now
done
rss_on=$(rss_kb "$pid")
scored=$(($(band healthy) + $(band neutral) + $(band at_risk)))
stop
run off KPI_STREAM_HEALTH__ENABLED=false
sleep 2
rss_off=$(rss_kb "$pid")
stop

per_customer=$(awk "BEGIN {printf \"%.0f\", ($rss_on - $rss_off) * 1024 / $owned}")
cat >"$out/health-memory.json" <<JSON
{"events": $events, "customers_generated": $customers, "customers_owned": $owned,
 "customers_scored": $scored, "rss_kb_health_on": $rss_on, "rss_kb_health_off": $rss_off,
 "bytes_per_customer_owned": $per_customer}
JSON
printf '%-44s %12s\n' "events, customers generated" "$events, $customers"
printf '%-44s %12d\n' "customers owned (one instance owns all)" "$owned"
printf '%-44s %12d\n' "customers scored" "$scored"
printf '%-44s %12d\n' "resident memory, health on, KB" "$rss_on"
printf '%-44s %12d\n' "resident memory, health off, KB" "$rss_off"
printf '%-44s %12d\n' "difference per customer owned, bytes" "$per_customer"
echo "bench: result in $out/health-memory.json"
