#!/usr/bin/env bash
# Soak: the service under a steady generated load with malformed events, for a while, with
# its resident memory sampled. Not part of CI.
#
#   scripts/soak.sh            10 minutes at 2,000 events/s, 5% malformed
#   SOAK_SECONDS=60 SOAK_RATE=5000 SOAK_MALFORMED=0.05 scripts/soak.sh
#
# Prints RSS samples and a summary, and writes target/soak/result.json. Exits non-zero if
# the service logged an error or died.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds=${SOAK_SECONDS:-600}
rate=${SOAK_RATE:-2000}
malformed=${SOAK_MALFORMED:-0.05}
port=${SOAK_PORT:-9470}
out=$root/target/soak
mkdir -p "$out"

scripts/setup.sh
scripts/kafka.sh start
cargo build --release --quiet
bin=$root/target/release/kpi-stream
id=soak-$(date +%s)
scripts/kafka.sh topics "$id." 3
eval "$(scripts/kafka.sh env "$id.")"
export KPI_STREAM_KAFKA__GROUP_ID=$id
export KPI_STREAM_HTTP__LISTEN=127.0.0.1:$port

"$bin" run >"$out/service.log" 2>&1 &
service=$!
"$bin" generate --rate "$rate" --malformed-ratio "$malformed" --count $((rate * seconds)) \
    >"$out/generate.log" 2>&1 &
generator=$!
trap 'kill -TERM $generator $service 2>/dev/null || true' EXIT

rss() { awk '/VmRSS/ {print $2}' "/proc/$service/status"; }
metric() {
    curl -fs "http://127.0.0.1:$port/metrics" |
        awk -v m="$1" 'index($0, m) == 1 {split($0, a, " "); s += a[2]} END {printf "%d", s}'
}
echo "elapsed_s rss_kb processed rejected"
samples=()
start=$(date +%s)
while kill -0 "$generator" 2>/dev/null; do
    sleep 30
    kill -0 "$service" 2>/dev/null || { echo "soak: the service died" >&2; tail "$out/service.log" >&2; exit 1; }
    line="$(($(date +%s) - start)) $(rss) $(metric kpi_events_processed_total) $(metric kpi_events_rejected_total)"
    echo "$line"
    samples+=("$line")
done
wait "$generator"
sleep 5
final="$(($(date +%s) - start)) $(rss) $(metric kpi_events_processed_total) $(metric kpi_events_rejected_total)"
echo "$final"
errors=$(grep -c " ERROR " "$out/service.log" || true)
first_rss=$(echo "${samples[0]:-$final}" | cut -d' ' -f2)
last_rss=$(echo "$final" | cut -d' ' -f2)
read -r _ _ processed rejected <<<"$final"
cat >"$out/result.json" <<JSON
{"seconds": $seconds, "rate": $rate, "malformed_ratio": $malformed, "processed": $processed,
 "rejected": $rejected, "rss_first_sample_kb": $first_rss, "rss_last_kb": $last_rss,
 "error_log_lines": $errors}
JSON
cat "$out/result.json"
[ "$errors" = 0 ] || { echo "soak: the service logged errors:" >&2; grep " ERROR " "$out/service.log" | head >&2; exit 1; }
