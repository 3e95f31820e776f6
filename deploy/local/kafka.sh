#!/usr/bin/env bash
# Local single-node Apache Kafka broker (KRaft, broker+controller in one JVM),
# for development, tests and CI. Listens on 127.0.0.1 only.
#
#   bash deploy/local/kafka.sh start    # fetch jars if needed, format, start, wait until it answers
#   bash deploy/local/kafka.sh status   # exit 0 if running, 3 if not
#   bash deploy/local/kafka.sh stop     # TERM, then KILL after 30 s
#
# Environment:
#   KAFKA_PORT             client (PLAINTEXT) port              default 9092
#   KAFKA_CONTROLLER_PORT  KRaft controller port                default KAFKA_PORT+1
#   KAFKA_DATA_DIR         properties, data, pid file, logs     default deploy/local/.kafka/data-$KAFKA_PORT
#   KAFKA_HEAP_OPTS        JVM heap flags                       default "-Xms256m -Xmx512m"
#   KAFKA_START_TIMEOUT    seconds to wait for the broker       default 90
#
# The jars come from Maven Central via pom.xml next to this script and live in
# deploy/local/.kafka/libs (git-ignored). Broker logs: $KAFKA_DATA_DIR/logs/.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_HOME_DIR="$SCRIPT_DIR/.kafka"
LIBS_DIR="$KAFKA_HOME_DIR/libs"
POM="$SCRIPT_DIR/pom.xml"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$KAFKA_HOME_DIR/data-$KAFKA_PORT}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"

[[ "$KAFKA_DATA_DIR" == /* ]] || KAFKA_DATA_DIR="$PWD/$KAFKA_DATA_DIR"   # make it absolute
PROPS_FILE="$KAFKA_DATA_DIR/server.properties"
LOG4J_FILE="$KAFKA_DATA_DIR/log4j2.properties"
PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
LOG_DIR="$KAFKA_DATA_DIR/logs"
SERVER_LOG="$LOG_DIR/server.log"   # written by log4j2
STDOUT_LOG="$LOG_DIR/kafka.out"    # JVM stdout/stderr (crashes, OOM, bad flags)
KRAFT_LOG_DIR="$KAFKA_DATA_DIR/kraft-logs"

# JVM flags shared by the storage tool and the broker.
read -ra HEAP_OPTS <<<"$KAFKA_HEAP_OPTS"
JAVA_OPTS=("${HEAP_OPTS[@]}" -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$LOG4J_FILE" -Dkafka.logs.dir="$LOG_DIR"
  -cp "$LIBS_DIR/*")

log() { echo "kafka.sh[$KAFKA_PORT]: $*"; }
die() { echo "kafka.sh[$KAFKA_PORT]: ERROR: $*" >&2; exit 1; }

# --- helpers ---------------------------------------------------------------

kafka_version() {
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM"
}

# Fetch the jars (once). A version bump in pom.xml re-fetches. Downloads into a
# temporary directory and renames it, so a concurrent start never sees half a libs/.
ensure_libs() {
  local version tmp
  version="$(kafka_version)"
  if [[ -f "$LIBS_DIR/kafka_2.13-$version.jar" && -f "$LIBS_DIR/kafka-tools-$version.jar" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
  log "fetching Apache Kafka $version jars with Maven into $LIBS_DIR"
  mkdir -p "$KAFKA_HOME_DIR"
  tmp="$(mktemp -d "$KAFKA_HOME_DIR/libs.tmp.XXXXXX")"
  if ! mvn -B -q -f "$POM" -Dkafka.libs.dir="$tmp" dependency:copy-dependencies; then
    rm -rf "$tmp"
    die "Maven could not fetch the Kafka jars (see the output above)"
  fi
  if [[ ! -f "$LIBS_DIR/kafka-tools-$version.jar" ]]; then
    rm -rf "$LIBS_DIR"
    mv -T "$tmp" "$LIBS_DIR" 2>/dev/null || true   # lost a race with another start: fine
  fi
  rm -rf "$tmp"
}

# The pid from the pid file, if that process is alive and is a Kafka broker.
running_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  ps -o args= -p "$pid" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

# Does anything accept TCP connections on 127.0.0.1:$1?
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Does a Kafka broker answer on the client port? Sends a raw ApiVersions request
# (api key 18, version 0, correlation id 1, client id "ks") and checks that the
# reply carries correlation id 1. A merely open socket is not enough: the broker
# binds its port before it is ready to serve requests.
broker_answers() {
  # shellcheck disable=SC2016  # the inner script expands its own variables
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02ks" >&3
    reply="$(head -c 8 <&3 | od -An -tx1 | tr -d " \n")"
    [[ "${reply:8:8}" == "00000001" ]]
  ' _ "$KAFKA_PORT" 2>/dev/null
}

print_log_tail() {
  local f
  for f in "$STDOUT_LOG" "$SERVER_LOG"; do
    if [[ -s "$f" ]]; then
      echo "----- last 40 lines of $f -----" >&2
      tail -n 40 "$f" >&2
    fi
  done
}

write_config() {
  cat >"$PROPS_FILE" <<EOF
# Written by deploy/local/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KRAFT_LOG_DIR

# One node: every internal topic has replication factor 1.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF

  cat >"$LOG4J_FILE" <<'EOF'
# Written by deploy/local/kafka.sh: broker logs go to ${kafka.logs.dir}/server.log.
status = warn
name = seqmon-local-kafka
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 2
rootLogger.level = info
rootLogger.appenderRef.server.ref = server
EOF
}

# Format the storage once, with a fresh random cluster id. Static quorum
# (controller.quorum.voters), so no --standalone flag: the controller port may
# change between starts of the same data dir.
format_storage_once() {
  local cluster_id
  if [[ -f "$KRAFT_LOG_DIR/meta.properties" ]]; then
    return 0
  fi
  # Same format as `kafka-storage random-uuid` (16 random bytes, base64url, no
  # padding) without paying for a JVM start; never starts with "-".
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  cluster_id="${cluster_id/#-/A}"
  log "formatting $KRAFT_LOG_DIR (cluster id $cluster_id)"
  java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$PROPS_FILE" \
    >>"$STDOUT_LOG" 2>&1 || { print_log_tail; die "formatting the storage failed"; }
}

# --- commands --------------------------------------------------------------

cmd_start() {
  local pid port
  if pid="$(running_pid)"; then
    log "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  rm -f "$PID_FILE"
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_in_use "$port"; then
      die "port 127.0.0.1:$port is already in use by another process"
    fi
  done
  command -v java >/dev/null || die "java (17+) is needed"

  ensure_libs
  mkdir -p "$KAFKA_DATA_DIR" "$LOG_DIR" "$KRAFT_LOG_DIR"
  write_config
  format_storage_once

  log "starting broker on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
  echo "=== start $(date '+%F %T') ===" >>"$STDOUT_LOG"
  nohup java "${JAVA_OPTS[@]}" kafka.Kafka "$PROPS_FILE" </dev/null >>"$STDOUT_LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"

  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until broker_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      print_log_tail
      die "broker exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail
      cmd_stop >&2
      die "broker did not answer on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  log "running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "still alive after 30 s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if broker_answers; then
      log "running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    else
      log "running (pid $pid) on 127.0.0.1:$KAFKA_PORT, but not answering (yet)"
    fi
    return 0
  fi
  log "stopped (port $KAFKA_PORT)"
  return 3
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
