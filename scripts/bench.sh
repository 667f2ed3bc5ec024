#!/usr/bin/env bash
# Throughput benchmark against Kafka's own consumer, on this machine. Not part of CI.
#
#   scripts/bench.sh                      5,000,000 events, 3 rounds
#   BENCH_EVENTS=1000000 BENCH_ROUNDS=1 scripts/bench.sh
#   BENCH_MICRO=1 scripts/bench.sh        also the criterion micro-benchmarks
#   BENCH_SPAN=0s scripts/bench.sh        every event "now", all within the duplicate horizon
#
# Starts the local Kafka, creates three input topics with 6 partitions each, preloads them
# with `kpi-stream generate` (half surveys, 40% tickets, 10% billing, 1% malformed), their
# occurred_at spread over BENCH_SPAN (default 30d) before now as a topic's history, then
# measures, BENCH_ROUNDS times each, median reported:
#   a. the ceiling: Kafka's ConsumerPerformance reading the three topics from the beginning;
#   b. `kpi-stream run --exit-when-caught-up` from the beginning to the end: events/s, CPU
#      seconds per million events (user+sys), peak RSS, time until caught up (ready), with
#      every core, one worker per core and the default calendar periods (day, month,
#      quarter), as configured by default;
#   c. the ratio b/a;
#   d. the same catch-up on one core (`taskset -c 0`, hence one worker), and the speedup of
#      every core over one;
#   e. the same catch-up on every core with one worker (processing.workers = 1), and the
#      speedup of the default workers over one;
#   f. the catch-up of b without calendar periods (calendar.periods = []);
#   g. the catch-up of b with all five periods (day, week, month, quarter, year); for f and
#      g the same figures as for b, and the slowdown of b and g over f: their seconds until
#      caught up over f's (at most 1.2 is the aim).
#   h. `kpi-stream history` reading the same topics, every KPI at each hour of the 30 days
#      (721 instants), as jsonl and as openmetrics: events/s, peak RSS, output size, and
#      the ratio to b (at least 0.5 is the aim).
#   i. the catch-up of b with customer health off (health.enabled = false): the same
#      figures, and the slowdown of b (health on, the default) over i.
# The runs of b, d, e, f, g and i are interleaved, one of each per round, then those of h.
# The generator stamps each preloaded message with its event's time, as a producer that
# writes events when they happen does, so every period the preload reaches (the previous
# day and month included) is filled, and every run reads every preloaded message: they are
# all within the 30 days the rolling windows replay. The input topics keep a year (the
# broker deletes by message timestamp); they are deleted when the run ends.
# Then the latency: with the generator producing 20,000 events/s and a publish interval of
# 1 s, the delay from a probe event's produce time to its effect on the output topic and in
# /metrics (benches/latency.rs), p50 and p99 over BENCH_PROBES probes (default 60).
# Prints a table and writes target/bench/result.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
events=${BENCH_EVENTS:-5000000}
span=${BENCH_SPAN:-30d}
rounds=${BENCH_ROUNDS:-3}
out=$root/target/bench
mkdir -p "$out"

scripts/setup.sh
scripts/kafka.sh start
cargo build --release --quiet
# Built now, not while the latency run below shares the two cores with the service.
cargo bench --quiet --no-run --bench latency 2>/dev/null
bin=$root/target/release/kpi-stream
id=bench-$(date +%s)
scripts/kafka.sh topics "$id." 6
# The input topics keep a year of messages: each run's are deleted when it ends.
delete_topics() {
    scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 \
        --delete --topic "${id//./\\.}\\..*" >/dev/null 2>&1 || true
}
trap delete_topics EXIT
eval "$(scripts/kafka.sh env "$id.")"
export KPI_STREAM_HTTP__LISTEN=127.0.0.1:0
export RUST_LOG=warn

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# The median of the array named NAME: `median_of NAME`.
median_of() {
    local -n values=$1
    printf '%s\n' "${values[@]}" | median
}
calc() { awk "BEGIN {printf \"%.6f\", $*}"; }
# Messages in a topic: the sum of its partitions' end offsets (the topics are new).
messages_in() {
    scripts/kafka.sh tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server 127.0.0.1:9092 \
        --topic "$1" 2>/dev/null | awk -F: '{s += $3} END {print s}'
}

echo "bench: preloading $events events spread over $span"
start=$(date +%s.%N)
"$bin" generate --count "$events" --rate 0 --malformed-ratio 0.01 --span "$span" --seed "$(date +%s)"
preload_s=$(calc "$(date +%s.%N) - $start")

# a. The ceiling: ConsumerPerformance on each topic in turn; events over the summed time.
ceiling_rounds=()
for round in $(seq "$rounds"); do
    total_msgs=0
    total_s=0
    for t in surveys tickets billing; do
        # Exactly the topic's messages, so the run ends on the last one, not on a timeout.
        count=$(scripts/kafka.sh tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:9092 \
            --topic "$id.$t" --messages "$(messages_in "$id.$t")" --timeout 30000 \
            --group "perf-$id-$round-$t" --hide-header 2>/dev/null | tail -n 1)
        # start.time, end.time, MB, MB/s, messages, messages/s, rebalance ms, fetch ms, ...
        msgs=$(echo "$count" | cut -d, -f5 | tr -d ' ')
        fetch_ms=$(echo "$count" | cut -d, -f8 | tr -d ' ')
        total_msgs=$((total_msgs + msgs))
        total_s=$(calc "$total_s + $fetch_ms / 1000")
    done
    rate=$(calc "$total_msgs / $total_s")
    printf 'bench: ceiling round %d: %d messages, %.0f msg/s\n' "$round" "$total_msgs" "$rate"
    ceiling_rounds+=("$rate")
done
ceiling=$(printf '%s\n' "${ceiling_rounds[@]}" | median)

# b, d, e, f, g. kpi-stream catching up from the beginning, a fresh consumer group each run:
# `catch_up NAME ROUND [PREFIX...]` runs `PREFIX... kpi-stream run --exit-when-caught-up` and
# appends its events/s, CPU per event, peak RSS and seconds to rate_NAME etc.
rate_all=() cpu_all=() rss_all=() ready_all=()
rate_one_core=() cpu_one_core=() rss_one_core=() ready_one_core=()
rate_one_worker=() cpu_one_worker=() rss_one_worker=() ready_one_worker=()
rate_no_periods=() cpu_no_periods=() rss_no_periods=() ready_no_periods=()
rate_all_periods=() cpu_all_periods=() rss_all_periods=() ready_all_periods=()
rate_no_health=() cpu_no_health=() rss_no_health=() ready_no_health=()
catch_up() {
    local name=$1 round=$2
    shift 2
    /usr/bin/time -f '%e %U %S %M' -o "$out/time.txt" \
        env KPI_STREAM_KAFKA__GROUP_ID="$id-$name-$round" "$@" "$bin" run --exit-when-caught-up
    local wall user sys rss_kb rate cpu
    read -r wall user sys rss_kb <"$out/time.txt"
    rate=$(calc "$events / $wall")
    cpu=$(calc "($user + $sys) * 1000000 / $events")
    printf 'bench: kpi-stream %s round %d: %.2f s, %.0f events/s, %.3f CPU s per million events, peak RSS %d KB\n' \
        "$name" "$round" "$wall" "$rate" "$cpu" "$rss_kb"
    eval "rate_$name+=($rate) cpu_$name+=($cpu) rss_$name+=($rss_kb) ready_$name+=($wall)"
}
for round in $(seq "$rounds"); do
    catch_up all "$round"
    catch_up no_periods "$round" env KPI_STREAM_CALENDAR__PERIODS='[]'
    catch_up all_periods "$round" \
        env KPI_STREAM_CALENDAR__PERIODS='["day", "week", "month", "quarter", "year"]'
    catch_up one_core "$round" taskset -c 0
    catch_up one_worker "$round" env KPI_STREAM_PROCESSING__WORKERS=1
    catch_up no_health "$round" env KPI_STREAM_HEALTH__ENABLED=false
done
# h. kpi-stream history reading the same topics, every KPI each hour of the 30 days:
# `history_run FORMAT ROUND` appends its events/s, peak RSS and output size.
rate_h_jsonl=() rss_h_jsonl=() size_h_jsonl=()
rate_h_openmetrics=() rss_h_openmetrics=() size_h_openmetrics=()
history_run() {
    local format=$1 round=$2 wall user sys rss_kb rate
    /usr/bin/time -f '%e %U %S %M' -o "$out/time.txt" \
        "$bin" history --from 30d --step 1h --format "$format" --output "$out/history.$format" \
        2>"$out/history-$format.log"
    read -r wall user sys rss_kb <"$out/time.txt"
    rate=$(calc "$events / $wall")
    printf 'bench: history --format %s round %d: %.2f s, %.0f events/s, peak RSS %d KB, %d bytes\n' \
        "$format" "$round" "$wall" "$rate" "$rss_kb" "$(stat -c %s "$out/history.$format")"
    eval "rate_h_$format+=($rate) rss_h_$format+=($rss_kb) size_h_$format+=($(stat -c %s "$out/history.$format"))"
    rm -f "$out/history.$format"
}
for round in $(seq "$rounds"); do
    history_run jsonl "$round"
    history_run openmetrics "$round"
done
rate_hj=$(median_of rate_h_jsonl) rss_hj=$(median_of rss_h_jsonl) size_hj=$(median_of size_h_jsonl)
rate_ho=$(median_of rate_h_openmetrics) rss_ho=$(median_of rss_h_openmetrics)
size_ho=$(median_of size_h_openmetrics)

# `medians NAME SUFFIX` sets rateSUFFIX, cpuSUFFIX, rssSUFFIX and readySUFFIX to the medians
# of run NAME's rounds.
medians() {
    local measure
    for measure in rate cpu rss ready; do
        printf -v "$measure$2" '%s' "$(median_of "${measure}_$1")"
    done
}
medians all ""
medians one_core _1c
medians one_worker _1w
medians no_periods _np
medians all_periods _ap
medians no_health _nh
ratio=$(calc "$rate / $ceiling")
speedup_cores=$(calc "$rate / $rate_1c")
speedup_workers=$(calc "$rate / $rate_1w")
slowdown_default=$(calc "$ready / $ready_np")
slowdown_all=$(calc "$ready_ap / $ready_np")
slowdown_health=$(calc "$ready / $ready_nh")
history_ratio_jsonl=$(calc "$rate_hj / $rate")
history_ratio_openmetrics=$(calc "$rate_ho / $rate")

# Latency under a steady 20,000 events/s.
probes=${BENCH_PROBES:-60}
KPI_STREAM_KAFKA__GROUP_ID="$id-latency" KPI_STREAM_PUBLISH__INTERVAL=1s \
    KPI_STREAM_HTTP__LISTEN=127.0.0.1:9471 "$bin" run >"$out/latency-service.log" 2>&1 &
service=$!
trap 'kill -TERM $service ${generator:-} 2>/dev/null || true; delete_topics' EXIT
until curl -fs http://127.0.0.1:9471/readyz >/dev/null; do sleep 0.5; done
"$bin" generate --rate 20000 --count $((20000 * (probes * 2 + 60))) --seed 7 \
    >"$out/latency-generate.log" 2>&1 &
generator=$!
sleep 5
latency=$(LATENCY_BROKERS=127.0.0.1:9092 LATENCY_SURVEYS="$id.surveys" LATENCY_OUTPUT="$id.kpis" \
    LATENCY_METRICS=http://127.0.0.1:9471/metrics LATENCY_PROBES=$probes \
    cargo bench --quiet --bench latency 2>"$out/latency-bench.log" | tail -n 1)
kill -TERM "$generator" "$service" 2>/dev/null || true
wait "$service" 2>/dev/null || true
echo "bench: latency $latency"

cat >"$out/result.json" <<JSON
{"events": $events, "span": "$span", "rounds": $rounds, "partitions_per_topic": 6, "preload_seconds": $preload_s,
 "ceiling_events_per_second": $(printf '%.0f' "$ceiling"),
 "kpi_stream_events_per_second": $(printf '%.0f' "$rate"),
 "cpu_seconds_per_million_events": $(printf '%.3f' "$cpu"),
 "cpu_microseconds_per_event": $(printf '%.3f' "$cpu"),
 "peak_rss_kb": $rss, "seconds_to_ready": $ready,
 "ratio": $(printf '%.3f' "$ratio"),
 "one_core_events_per_second": $(printf '%.0f' "$rate_1c"),
 "one_core_cpu_microseconds_per_event": $(printf '%.3f' "$cpu_1c"),
 "speedup_all_cores_over_one_core": $(printf '%.3f' "$speedup_cores"),
 "one_worker_events_per_second": $(printf '%.0f' "$rate_1w"),
 "one_worker_cpu_microseconds_per_event": $(printf '%.3f' "$cpu_1w"),
 "speedup_workers_over_one_worker": $(printf '%.3f' "$speedup_workers"),
 "no_periods_events_per_second": $(printf '%.0f' "$rate_np"),
 "no_periods_cpu_microseconds_per_event": $(printf '%.3f' "$cpu_np"),
 "no_periods_peak_rss_kb": $rss_np, "no_periods_seconds_to_ready": $ready_np,
 "all_periods_events_per_second": $(printf '%.0f' "$rate_ap"),
 "all_periods_cpu_microseconds_per_event": $(printf '%.3f' "$cpu_ap"),
 "all_periods_peak_rss_kb": $rss_ap, "all_periods_seconds_to_ready": $ready_ap,
 "slowdown_default_periods_over_no_periods": $(printf '%.3f' "$slowdown_default"),
 "slowdown_all_periods_over_no_periods": $(printf '%.3f' "$slowdown_all"),
 "no_health_events_per_second": $(printf '%.0f' "$rate_nh"),
 "no_health_cpu_microseconds_per_event": $(printf '%.3f' "$cpu_nh"),
 "no_health_peak_rss_kb": $rss_nh, "no_health_seconds_to_ready": $ready_nh,
 "slowdown_health_over_no_health": $(printf '%.3f' "$slowdown_health"),
 "history_jsonl_events_per_second": $(printf '%.0f' "$rate_hj"), "history_jsonl_peak_rss_kb": $rss_hj,
 "history_jsonl_bytes": $size_hj, "history_jsonl_over_catch_up": $(printf '%.3f' "$history_ratio_jsonl"),
 "history_openmetrics_events_per_second": $(printf '%.0f' "$rate_ho"), "history_openmetrics_peak_rss_kb": $rss_ho,
 "history_openmetrics_bytes": $size_ho,
 "history_openmetrics_over_catch_up": $(printf '%.3f' "$history_ratio_openmetrics"),
 "latency_at_20000_per_second": $latency,
 "machine": "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"}
JSON
printf '\n%-42s %15s\n' "measure (median of $rounds)" "value"
printf '%-42s %15.0f\n' "a. ConsumerPerformance, events/s" "$ceiling"
printf '%-42s %15.0f\n' "b. kpi-stream catch-up, events/s" "$rate"
printf '%-42s %15.3f\n' "   CPU s per million events" "$cpu"
printf '%-42s %15d\n' "   peak RSS, KB" "$rss"
printf '%-42s %15.2f\n' "   seconds until caught up" "$ready"
printf '%-42s %15.3f\n' "c. ratio b/a" "$ratio"
printf '%-42s %15.0f\n' "d. one core (taskset -c 0), events/s" "$rate_1c"
printf '%-42s %15.3f\n' "   CPU s per million events" "$cpu_1c"
printf '%-42s %15.3f\n' "   speedup of $(nproc) cores over one" "$speedup_cores"
printf '%-42s %15.0f\n' "e. one worker, events/s" "$rate_1w"
printf '%-42s %15.3f\n' "   CPU s per million events" "$cpu_1w"
printf '%-42s %15.3f\n' "   speedup of the workers over one" "$speedup_workers"
printf '%-42s %15.0f\n' "f. no calendar periods, events/s" "$rate_np"
printf '%-42s %15.3f\n' "   CPU s per million events" "$cpu_np"
printf '%-42s %15d\n' "   peak RSS, KB" "$rss_np"
printf '%-42s %15.2f\n' "   seconds until caught up" "$ready_np"
printf '%-42s %15.0f\n' "g. all five calendar periods, events/s" "$rate_ap"
printf '%-42s %15.3f\n' "   CPU s per million events" "$cpu_ap"
printf '%-42s %15d\n' "   peak RSS, KB" "$rss_ap"
printf '%-42s %15.2f\n' "   seconds until caught up" "$ready_ap"
printf '%-42s %15.3f\n' "   slowdown b/f (default periods)" "$slowdown_default"
printf '%-42s %15.3f\n' "   slowdown g/f (all five)" "$slowdown_all"
printf '%-42s %15.0f\n' "i. customer health off, events/s" "$rate_nh"
printf '%-42s %15.3f\n' "   CPU s per million events" "$cpu_nh"
printf '%-42s %15d\n' "   peak RSS, KB" "$rss_nh"
printf '%-42s %15.2f\n' "   seconds until caught up" "$ready_nh"
printf '%-42s %15.3f\n' "   slowdown b/i (health on over off)" "$slowdown_health"
printf '%-42s %15.0f\n' "h. history jsonl, 721 instants, events/s" "$rate_hj"
printf '%-42s %15d\n' "   peak RSS, KB" "$rss_hj"
printf '%-42s %15.3f\n' "   ratio h/b" "$history_ratio_jsonl"
printf '%-42s %15.0f\n' "   history openmetrics, events/s" "$rate_ho"
printf '%-42s %15d\n' "   peak RSS, KB" "$rss_ho"
printf '%-42s %15.3f\n' "   ratio h/b" "$history_ratio_openmetrics"
printf '%-42s %15s\n' "latency ms at 20,000/s (1 s publish)" "$latency"
echo "bench: result in $out/result.json"

if [ -n "${BENCH_MICRO:-}" ]; then
    cargo bench --bench core
fi
