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
#   KAFKA_SECURITY         plaintext, or sasl_ssl (below)        default: the data dir's, else plaintext
#   KAFKA_SCRAM_USERS      sasl_ssl: SCRAM-SHA-512 users as "admin=PASSWORD,alice=PASSWORD" (no commas in
#                          passwords); must name admin, the super user. Read when the data dir is formatted
#                          (its first start) only: later users are added through the admin API.
#
# Secured mode (KAFKA_SECURITY=sasl_ssl), to test clients against what production brokers look like:
#   - the client port speaks SASL_SSL with SCRAM-SHA-512 only; the broker's certificate is signed by a CA made
#     with openssl on the first start, $KAFKA_DATA_DIR/tls/ca.pem (give it to clients as their CA file);
#   - ACLs are enforced by KRaft's StandardAuthorizer: only admin (and the broker itself) may do anything
#     without an ACL; admin creates topics, users and ACLs;
#   - the controller port speaks SASL_PLAINTEXT/PLAIN with a password made on the first start (127.0.0.1 only).
#   The mode and the users are fixed when the data dir is formatted: use a fresh KAFKA_DATA_DIR to change them.
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
KAFKA_SECURITY="${KAFKA_SECURITY:-}"
KAFKA_SCRAM_USERS="${KAFKA_SCRAM_USERS:-}"

[[ "$KAFKA_DATA_DIR" == /* ]] || KAFKA_DATA_DIR="$PWD/$KAFKA_DATA_DIR"   # make it absolute
PROPS_FILE="$KAFKA_DATA_DIR/server.properties"
LOG4J_FILE="$KAFKA_DATA_DIR/log4j2.properties"
PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
LOG_DIR="$KAFKA_DATA_DIR/logs"
SERVER_LOG="$LOG_DIR/server.log"   # written by log4j2
STDOUT_LOG="$LOG_DIR/kafka.out"    # JVM stdout/stderr (crashes, OOM, bad flags)
KRAFT_LOG_DIR="$KAFKA_DATA_DIR/kraft-logs"
TLS_DIR="$KAFKA_DATA_DIR/tls"
SECURITY_FILE="$KAFKA_DATA_DIR/security"   # the mode the data dir was formatted in
if [[ -z "$KAFKA_SECURITY" ]]; then   # status and stop need not be told the mode again
  KAFKA_SECURITY="$(cat "$SECURITY_FILE" 2>/dev/null || echo plaintext)"
fi

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
  if [[ "$KAFKA_SECURITY" == sasl_ssl ]]; then
    broker_answers_tls
    return
  fi
  # shellcheck disable=SC2016  # the inner script expands its own variables
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02ks" >&3
    reply="$(head -c 8 <&3 | od -An -tx1 | tr -d " \n")"
    [[ "${reply:8:8}" == "00000001" ]]
  ' _ "$KAFKA_PORT" 2>/dev/null
}

# The same request over TLS, verifying the broker's certificate against our CA. Kafka answers ApiVersions before
# SASL authentication, so no credentials are needed. s_client sends its stdin, then (-no_ign_eof) closes the
# connection when stdin ends, a second later, by which time the reply has arrived.
broker_answers_tls() {
  local reply
  reply="$(
    { printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02ks"; sleep 1; } |
      timeout 5 openssl s_client -quiet -no_ign_eof -connect "127.0.0.1:$KAFKA_PORT" -CAfile "$TLS_DIR/ca.pem" \
        -verify_return_error 2>/dev/null | head -c 8 | od -An -tx1 | tr -d " \n"
  )" || true
  [[ "${reply:8:8}" == "00000001" ]]
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
  (umask 077 && : >"$PROPS_FILE")   # holds passwords in sasl_ssl mode
  cat >"$PROPS_FILE" <<EOF
# Written by deploy/local/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
log.dirs=$KRAFT_LOG_DIR
EOF
  if [[ "$KAFKA_SECURITY" == sasl_ssl ]]; then
    write_security_config
  else
    cat >>"$PROPS_FILE" <<EOF
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
EOF
  fi
  cat >>"$PROPS_FILE" <<EOF

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

# The password of one user of KAFKA_SCRAM_USERS.
scram_password() {
  local pair pairs
  IFS=, read -ra pairs <<<"$KAFKA_SCRAM_USERS"
  for pair in "${pairs[@]}"; do
    if [[ "${pair%%=*}" == "$1" ]]; then
      echo "${pair#*=}"
      return 0
    fi
  done
  return 1
}

# CA, broker key and certificate (SAN 127.0.0.1 and localhost, so clients verify the host name), a PKCS12
# keystore and truststore for the JVM. Made once per data dir; the store password is random.
make_tls_once() {
  [[ -f "$TLS_DIR/truststore.p12" ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed to make the TLS certificates"
  command -v keytool >/dev/null || die "keytool (Java) is needed to make the TLS truststore"
  log "making a CA and a broker certificate in $TLS_DIR"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  local pass
  pass="$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
  echo "$pass" >"$TLS_DIR/store-password"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=seqmon local test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
    printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile broker.ext \
      -out broker.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout "pass:$pass" -out broker.p12
    keytool -importcert -noprompt -alias ca -file ca.pem -keystore truststore.p12 -storetype PKCS12 \
      -storepass "$pass"
  ) >>"$STDOUT_LOG" 2>&1 || { print_log_tail; die "making the TLS certificates failed"; }
}

write_security_config() {
  local pass admin_password controller_password
  pass="$(cat "$TLS_DIR/store-password")"
  admin_password="$(scram_password admin)" || die "KAFKA_SCRAM_USERS must name the super user: admin=PASSWORD"
  if [[ ! -f "$TLS_DIR/controller-password" ]]; then
    head -c 18 /dev/urandom | base64 | tr '+/' 'xy' >"$TLS_DIR/controller-password"
  fi
  controller_password="$(cat "$TLS_DIR/controller-password")"
  cat >>"$PROPS_FILE" <<EOF
listeners=CLIENT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=CLIENT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=CLIENT

# Clients: SCRAM-SHA-512 over TLS; the broker talks to itself as admin.
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_password";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS_DIR/truststore.p12
ssl.truststore.password=$pass

# Controller: SCRAM credentials live in the metadata the controller serves, so it authenticates with PLAIN.
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$controller_password" user_controller="$controller_password";

# ACLs: nothing is allowed without one, except to the super users.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:controller
allow.everyone.if.no.acl.found=false
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
  local scram=() pair pairs
  if [[ "$KAFKA_SECURITY" == sasl_ssl ]]; then
    IFS=, read -ra pairs <<<"$KAFKA_SCRAM_USERS"
    for pair in "${pairs[@]}"; do
      [[ "$pair" == ?*=?* ]] || die "KAFKA_SCRAM_USERS takes name=password pairs separated by commas"
      scram+=(--add-scram "SCRAM-SHA-512=[name=${pair%%=*},password=${pair#*=}]")
    done
  fi
  log "formatting $KRAFT_LOG_DIR (cluster id $cluster_id, $KAFKA_SECURITY)"
  java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$PROPS_FILE" \
    "${scram[@]}" >>"$STDOUT_LOG" 2>&1 || { print_log_tail; die "formatting the storage failed"; }
  echo "$KAFKA_SECURITY" >"$SECURITY_FILE"
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

  case "$KAFKA_SECURITY" in
    plaintext | sasl_ssl) ;;
    *) die "KAFKA_SECURITY must be plaintext or sasl_ssl, got '$KAFKA_SECURITY'" ;;
  esac
  if [[ -f "$SECURITY_FILE" && "$(cat "$SECURITY_FILE")" != "$KAFKA_SECURITY" ]]; then
    die "$KAFKA_DATA_DIR was formatted for $(cat "$SECURITY_FILE"), not $KAFKA_SECURITY: use another KAFKA_DATA_DIR"
  fi

  ensure_libs
  mkdir -p "$KAFKA_DATA_DIR" "$LOG_DIR" "$KRAFT_LOG_DIR"
  if [[ "$KAFKA_SECURITY" == sasl_ssl ]]; then
    make_tls_once
  fi
  write_config
  format_storage_once

  log "starting broker ($KAFKA_SECURITY) on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
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
