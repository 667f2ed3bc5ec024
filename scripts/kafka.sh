#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, combined broker + controller) on 127.0.0.1,
# assembled from Maven Central jars. Used by the tests, the demo and the benchmarks.
#
#   scripts/kafka.sh start     fetch the jars once, format storage once, start, wait until it answers
#   scripts/kafka.sh stop      stop the broker this script started (by its pid)
#   scripts/kafka.sh status    exit 0 and say so when the broker answers, 1 otherwise
#   scripts/kafka.sh clean     stop, then delete the broker's data
#   scripts/kafka.sh topics PREFIX N      create PREFIX{surveys,tickets,billing} with N partitions
#                                         (kept 367 days), PREFIXdeadletter, PREFIXfeedback,
#                                         the compacted PREFIXkpis, PREFIXkpi-components and
#                                         PREFIXkpi-periods, and the compacted
#                                         PREFIXkpi-customer-signals and PREFIXcustomer-health
#                                         with N partitions, if missing
#   eval "$(scripts/kafka.sh env PREFIX)" point kpi-stream at those topics (KPI_STREAM_TOPICS__*)
#   scripts/kafka.sh tool CLASS ARGS...   run a Kafka command-line class (TopicCommand, ConsumerPerformance, ...)
#
# Environment: KAFKA_PORT (default 9092; the controller uses KAFKA_PORT+1), KAFKA_RUN_DIR
# (default target/kafka-run, where data, logs and the pid live), KAFKA_CACHE_DIR (default
# .cache, where the jars are kept; git ignores it). With KAFKA_SCRAM_USER and
# KAFKA_SCRAM_PASSWORD set, KAFKA_PORT is a SASL_PLAINTEXT listener (SCRAM-SHA-256, that one
# user) and a PLAINTEXT listener on KAFKA_PORT+2 serves the broker itself and test setup.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/scripts/kafka/pom.xml")
port=${KAFKA_PORT:-9092}
controller_port=$((port + 1))
cache=${KAFKA_CACHE_DIR:-$root/.cache}/kafka-$version
lib=$cache/lib
run=${KAFKA_RUN_DIR:-$root/target/kafka-run}
pidfile=$run/broker.pid

log() { printf 'kafka.sh: %s\n' "$*" >&2; }

fetch_jars() {
    [ -f "$lib/.ok" ] && return 0
    command -v mvn >/dev/null || { log "mvn not found: install Maven"; exit 1; }
    command -v java >/dev/null || { log "java not found: install a JDK 17"; exit 1; }
    log "fetching Apache Kafka $version from Maven Central into $lib"
    rm -rf "$lib"
    mkdir -p "$lib"
    mvn -B -q -f "$root/scripts/kafka/pom.xml" -Dmaven.repo.local="$cache/m2" \
        org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$lib"
    touch "$lib/.ok"
}

# Short-lived JVMs for the command-line tools; logs go to stderr so stdout stays parseable.
tool() {
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$run/log4j2.properties" -cp "$lib/*" "$@"
}

write_config() {
    mkdir -p "$run/data" "$run/logs"
    local listeners="PLAINTEXT://127.0.0.1:$port"
    local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if [ -n "${KAFKA_SCRAM_USER:-}" ]; then
        listeners="SASL_PLAINTEXT://127.0.0.1:$port,PLAINTEXT://127.0.0.1:$((port + 2))"
        protocols="$protocols,SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$listeners,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$run/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.backoff.ms=1000
# Test and demo data carries event times in the past and, for skew checks, slightly in the future.
log.message.timestamp.before.max.ms=9223372036854775807
log.message.timestamp.after.max.ms=9223372036854775807
EOF
    cat >"$run/log4j2.properties" <<'EOF'
status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = info
EOF
}

# Kafka protocol probe: an ApiVersions v0 request; ready when the answer carries
# correlation id 1 and error code 0. A bare TCP connect is not enough: the port can be
# bound by something else.
probe() {
    local out
    out=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 || exit 1
        printf "\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05probe" >&3
        head -c 10 <&3 | od -An -tx1' "$port" 2>/dev/null | tr -d ' \n') || return 1
    [ "${out:8:12}" = 000000010000 ]
}

running_pid() {
    [ -f "$pidfile" ] || return 1
    local pid
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    if running_pid >/dev/null && probe; then
        log "already running on 127.0.0.1:$port"
        return 0
    fi
    fetch_jars
    write_config
    if [ ! -f "$run/data/meta.properties" ]; then
        local cluster_id
        cluster_id=$(tool kafka.tools.StorageTool random-uuid)
        local scram=()
        if [ -n "${KAFKA_SCRAM_USER:-}" ]; then
            scram=(--add-scram "SCRAM-SHA-256=[name=$KAFKA_SCRAM_USER,password=$KAFKA_SCRAM_PASSWORD]")
        fi
        tool kafka.tools.StorageTool format -t "$cluster_id" -c "$run/server.properties" \
            "${scram[@]}" >/dev/null
    fi
    log "starting Apache Kafka $version on 127.0.0.1:$port (logs: $run/broker.out)"
    nohup java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:ParallelGCThreads=1 -XX:ConcGCThreads=1 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dkafka.logs.dir="$run/logs" \
        -Dlog4j2.configurationFile="$run/log4j2.properties" \
        -cp "$lib/*" kafka.Kafka "$run/server.properties" \
        >"$run/broker.out" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local pid=$! i
    for i in $(seq 240); do
        kill -0 "$pid" 2>/dev/null || { log "broker exited during start:"; tail -n 40 "$run/broker.out" >&2; exit 1; }
        if probe; then
            log "ready after $((i / 4)) s"
            return 0
        fi
        sleep 0.25
    done
    log "broker not ready after 60 s"
    tail -n 40 "$run/broker.out" >&2
    exit 1
}

stop() {
    local pid i
    pid=$(running_pid) || { log "not running"; rm -f "$pidfile"; return 0; }
    kill -TERM "$pid"
    for i in $(seq 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status)
    if running_pid >/dev/null && probe; then
        echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
    else
        echo "not running"
        exit 1
    fi
    ;;
clean)
    stop
    rm -rf "$run"
    ;;
topics)
    prefix=${2:?usage: $0 topics PREFIX PARTITIONS}
    partitions=${3:?usage: $0 topics PREFIX PARTITIONS}
    fetch_jars
    [ -f "$run/log4j2.properties" ] || write_config
    create() {
        tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
            --create --if-not-exists --replication-factor 1 "$@" >/dev/null
    }
    # Brokers delete by message timestamp: input topics keep 367 days, longer than the
    # longest history (366 days) `kpi-stream generate --span` stamps with its events' times.
    for family in surveys tickets billing; do
        create --topic "$prefix$family" --partitions "$partitions" --config retention.ms=31708800000
    done
    create --topic "${prefix}deadletter" --partitions 1
    create --topic "${prefix}kpis" --partitions 1 --config cleanup.policy=compact
    create --topic "${prefix}kpi-components" --partitions 1 --config cleanup.policy=compact \
        --config max.message.bytes=16777216
    create --topic "${prefix}kpi-periods" --partitions 1 --config cleanup.policy=compact \
        --config max.message.bytes=16777216
    # Partitioned by customer: as many partitions as instances may own customers at once.
    create --topic "${prefix}kpi-customer-signals" --partitions "$partitions" \
        --config cleanup.policy=compact
    create --topic "${prefix}customer-health" --partitions "$partitions" \
        --config cleanup.policy=compact
    create --topic "${prefix}feedback" --partitions "$partitions"
    ;;
env)
    prefix=${2:?usage: $0 env PREFIX}
    for key in surveys tickets billing deadletter; do
        printf 'export KPI_STREAM_TOPICS__%s=%q\n' "${key^^}" "$prefix$key"
    done
    printf 'export KPI_STREAM_TOPICS__OUTPUT=%q\n' "${prefix}kpis"
    printf 'export KPI_STREAM_TOPICS__COMPONENTS=%q\n' "${prefix}kpi-components"
    printf 'export KPI_STREAM_TOPICS__PERIODS=%q\n' "${prefix}kpi-periods"
    printf 'export KPI_STREAM_TOPICS__CUSTOMER_SIGNALS=%q\n' "${prefix}kpi-customer-signals"
    printf 'export KPI_STREAM_TOPICS__CUSTOMER_HEALTH=%q\n' "${prefix}customer-health"
    printf 'export KPI_STREAM_TOPICS__FEEDBACK=%q\n' "${prefix}feedback"
    ;;
tool)
    shift
    fetch_jars
    mkdir -p "$run"
    [ -f "$run/log4j2.properties" ] || write_config
    tool "$@"
    ;;
*)
    echo "usage: $0 start|stop|status|clean|topics PREFIX N|env PREFIX|tool CLASS ARGS..." >&2
    exit 2
    ;;
esac
