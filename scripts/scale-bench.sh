#!/usr/bin/env bash
# Scale-out benchmark: 1, 2 and 3 instances in one consumer group, on this machine. Not part
# of CI.
#
#   scripts/scale-bench.sh                       2,000,000 events, 12 partitions per topic
#   SCALE_EVENTS=500000 scripts/scale-bench.sh
#
# Starts the local Kafka, creates the input topics with 12 partitions each and preloads them
# with `kpi-stream generate`. Then:
#   1. for 1, 2 and 3 instances (a fresh consumer group each time), starts them together and
#      measures the time until every instance is ready and the global values are complete
#      (kpi_global_missing_partitions is 0 on every instance): events/s;
#   2. with 3 instances caught up and the generator producing 2,000 events/s, SIGKILLs one
#      and measures the time until the two survivors own every input partition, have
#      replayed it and computed complete global values again.
# Prints a table and writes target/bench/scale.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
events=${SCALE_EVENTS:-2000000}
partitions=12
out=$root/target/bench
mkdir -p "$out"

scripts/setup.sh
scripts/kafka.sh start
cargo build --release --quiet
bin=$root/target/release/kpi-stream
id=scale-$(date +%s)
scripts/kafka.sh topics "$id." "$partitions"
eval "$(scripts/kafka.sh env "$id.")"
export KPI_STREAM_PUBLISH__INTERVAL=1s KPI_STREAM_KAFKA__SESSION_TIMEOUT_MS=6000
export RUST_LOG=warn

calc() { awk "BEGIN {printf \"%.6f\", $*}"; }
now() { date +%s.%N; }
metric() { # PORT NAME: the value of an unlabelled metric, or nothing
    curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1 == n {print $2}'
}
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; kill -TERM ${generator:-} 2>/dev/null || true' EXIT
start_instances() { # GROUP N: starts N instances on ports 9481..
    for i in $(seq "$2"); do
        KPI_STREAM_KAFKA__GROUP_ID=$1 KPI_STREAM_HTTP__LISTEN=127.0.0.1:$((9480 + i)) \
            "$bin" run >"$out/scale-$1-$i.log" 2>&1 &
        pids+=($!)
    done
}
complete() { # N: every instance on ports 9481.. is ready with complete global values
    for i in $(seq "$1"); do
        local port=$((9480 + i))
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 || return 1
        [ "$(metric "$port" kpi_global_missing_partitions)" = 0 ] || return 1
        [ -n "$(metric "$port" kpi_global_components_age_seconds)" ] || return 1
    done
}

echo "scale: preloading $events events into $partitions partitions per topic"
"$bin" generate --count "$events" --rate 0 --malformed-ratio 0.01 --seed 11 >/dev/null

declare -A rate seconds
for n in 1 2 3; do
    start=$(now)
    start_instances "$id-$n" "$n"
    until complete "$n"; do sleep 0.2; done
    seconds[$n]=$(calc "$(now) - $start")
    rate[$n]=$(calc "$events / ${seconds[$n]}")
    printf 'scale: %d instance(s): %.2f s, %.0f events/s\n' "$n" "${seconds[$n]}" "${rate[$n]}"
    stop_all
done

echo "scale: 3 instances under 2,000 events/s, then one SIGKILLed"
start_instances "$id-kill" 3
until complete 3; do sleep 0.2; done
"$bin" generate --rate 2000 --count 1000000 --seed 12 >/dev/null 2>&1 &
generator=$!
sleep 10
killed=${pids[2]}
kill -KILL "$killed"
died=$(now)
pids=("${pids[@]:0:2}")
# The survivors own all 36 input partitions again, caught up, with complete global values.
until [ "$(( $(metric 9481 kpi_assigned_partitions || echo 0) + $(metric 9482 kpi_assigned_partitions || echo 0) ))" = $((3 * partitions)) ] &&
    complete 2; do
    sleep 0.1
done
recovered=$(calc "$(now) - $died")
kill -TERM "$generator" 2>/dev/null || true
stop_all
printf 'scale: exact global values again %.2f s after the SIGKILL\n' "$recovered"

cat >"$out/scale.json" <<JSON
{"events": $events, "partitions_per_topic": $partitions,
 "events_per_second": {"1": $(printf '%.0f' "${rate[1]}"), "2": $(printf '%.0f' "${rate[2]}"), "3": $(printf '%.0f' "${rate[3]}")},
 "seconds_to_complete": {"1": ${seconds[1]}, "2": ${seconds[2]}, "3": ${seconds[3]}},
 "seconds_from_sigkill_to_complete_values": $recovered, "session_timeout_ms": 6000,
 "machine": "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"}
JSON
printf '\n%-48s %12s\n' "measure" "value"
for n in 1 2 3; do
    printf '%-48s %12.0f\n' "$n instance(s): events/s until complete" "${rate[$n]}"
done
printf '%-48s %12.2f\n' "seconds from SIGKILL to complete values" "$recovered"
echo "scale: result in $out/scale.json"
