#!/usr/bin/env bash
# Run real Apache Kafka (KRaft, no ZooKeeper, no Docker) from jars on Maven Central.
#
# Usage: deploy/kafka/kafka.sh fetch|start|stop|kill9|status|clean|cluster-start|cluster-stop|cluster-status|cluster-clean
#
# Why 4.3.1: kafka_2.13 4.0-4.3 and every runtime dependency resolve from Maven
# Central (parts of 4.4 were not served when checked); aiokafka 0.14 produces,
# consumes and joins groups against it (checked by tests/integration/test_services.py:
# its ApiVersions/Metadata/Produce/Fetch/group versions are still served by 4.x).
# The broker needs Java 17.
#
# Environment (defaults in brackets):
#   KAFKA_VERSION [4.3.1]          KAFKA_CACHE [<repo>/.cache/kafka]
#   KAFKA_PORT [9092]              KAFKA_DATA [<repo>/run/kafka-$KAFKA_PORT]
#   KAFKA_NODE_ID [1]              KAFKA_CONTROLLER_PORT [port+1000, else a free one; kept on restart]
#   KAFKA_QUORUM [$NODE_ID@127.0.0.1:$CONTROLLER_PORT]  e.g. 1@127.0.0.1:10092,2@...,3@...
#   KAFKA_CLUSTER_ID [generated once, kept in $KAFKA_DATA/cluster.id]
#   KAFKA_HEAP [-Xmx512m]          KAFKA_LOG_LEVEL [WARN]   KAFKA_START_TIMEOUT [60]
#   KAFKA_STOP_TIMEOUT [20]        KAFKA_BROKER_SESSION_MS [3000]
#   KAFKA_SASL_PORT [none]         a second listener, SASL_PLAINTEXT with the PLAIN mechanism
#   KAFKA_SASL_USERS [none]        its users, user:password,... (letters, digits, - and _ only)
#   KAFKA_SSL_PORT [none]          a listener with TLS, whose key and certificate chain are in
#   KAFKA_SSL_KEYSTORE [none]      this PEM file (an unencrypted PKCS#8 key first)
#   KAFKA_PYTHON [<repo>/.venv/bin/python, else python3]
#   KAFKA_CLUSTER_DATA [<repo>/run/kafka-cluster-$KAFKA_PORT] (cluster-* only; nodes on port, port+1, port+2)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
KAFKA_CACHE="${KAFKA_CACHE:-$REPO/.cache/kafka}"
VERSION_DIR="$KAFKA_CACHE/$KAFKA_VERSION"
LIBS="$VERSION_DIR/libs"
MARKER="$VERSION_DIR/.fetched"
# slf4j-api 1.7.x comes with kafka_2.13; this binds it to the log4j2 that also comes with it.
LOG4J_SLF4J_VERSION="${LOG4J_SLF4J_VERSION:-2.25.4}"

if [[ -n "${KAFKA_PYTHON:-}" ]]; then
    PY="$KAFKA_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
    PY="$REPO/.venv/bin/python"
else
    PY="python3"
fi

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- fetch

cmd_fetch() {
    if [[ -f "$MARKER" && -d "$LIBS" ]]; then
        log "Kafka $KAFKA_VERSION already fetched: $(ls "$LIBS" | wc -l) jars in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (Maven 3 is needed to fetch Kafka)"
    mkdir -p "$VERSION_DIR"
    # Two test sessions may fetch at once: the second waits, then sees the marker.
    exec 9>"$VERSION_DIR/.lock"
    flock 9
    if [[ -f "$MARKER" && -d "$LIBS" ]]; then
        log "Kafka $KAFKA_VERSION fetched meanwhile by another process: $LIBS"
        return 0
    fi
    local tmp started
    tmp="$(mktemp -d)"
    started=$SECONDS
    cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.engagement</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- kafka.Kafka and kafka.tools.StorageTool both live in kafka_2.13;
         kafka-server, -raft, -metadata, -storage, log4j-core come as its dependencies. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies from Maven Central"
    rm -rf "$LIBS.partial"
    if ! (cd "$tmp" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$LIBS.partial" >"$tmp/mvn.log" 2>&1); then
        tail -n 30 "$tmp/mvn.log" >&2
        rm -rf "$tmp" "$LIBS.partial"
        die "mvn could not resolve Kafka $KAFKA_VERSION"
    fi
    rm -rf "$tmp" "$LIBS"
    mv "$LIBS.partial" "$LIBS"
    [[ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"
    date -u +%FT%TZ >"$MARKER"
    log "fetched Kafka $KAFKA_VERSION: $(ls "$LIBS" | wc -l) jars into $LIBS in $((SECONDS - started)) s"
}

require_fetched() {
    [[ -f "$MARKER" ]] || die "Kafka $KAFKA_VERSION not fetched: run '$0 fetch' first"
}

# ---------------------------------------------------------------- node settings

node_env() {
    PORT="${KAFKA_PORT:-9092}"
    DATA="${KAFKA_DATA:-$REPO/run/kafka-$PORT}"
    NODE_ID="${KAFKA_NODE_ID:-1}"
    PID_FILE="$DATA/broker.pid"
    BROKER_LOG="$DATA/broker.log"
    PROPS="$DATA/server.properties"
}

port_free() {
    "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

any_free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

new_cluster_id() {
    # Kafka's Uuid: 16 random bytes, URL-safe base64 without padding, never starting with '-'.
    "$PY" -c '
import base64, uuid
while True:
    u = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not u.startswith("-"):
        print(u)
        break'
}

# Prints the PID if it is a live (non-zombie) process, else nothing.
live_pid() {
    local pid state
    [[ -f "$PID_FILE" ]] || return 0
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    [[ -r "/proc/$pid/stat" ]] || return 0
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]] || return 0
    # A reused PID must not be mistaken for our broker.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $PROPS" || return 0
    echo "$pid"
}

write_properties() {
    local controller_port="$1" quorum="$2" voters rf min_isr
    local extra_listeners="" extra_map=""
    if [[ -n "${KAFKA_SASL_PORT:-}" ]]; then
        extra_listeners=",SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT"
        extra_map=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    if [[ -n "${KAFKA_SSL_PORT:-}" ]]; then
        [[ -r "${KAFKA_SSL_KEYSTORE:-}" ]] || die "KAFKA_SSL_PORT needs a readable KAFKA_SSL_KEYSTORE"
        extra_listeners+=",SSL://127.0.0.1:$KAFKA_SSL_PORT"
        extra_map+=",SSL:SSL"
    fi
    voters="$(tr ',' '\n' <<<"$quorum" | grep -c .)"
    rf=$((voters < 3 ? voters : 3))
    min_isr=$((rf > 1 ? 2 : 1))
    cat >"$PROPS" <<EOF
# Written by deploy/kafka/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$quorum
listeners=PLAINTEXT://127.0.0.1:$PORT$extra_listeners,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT$extra_listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT$extra_map
log.dirs=$DATA/logs
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=1
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
# Tests create every topic up front; a typo must fail, not create a topic.
auto.create.topics.enable=false
# The default 3 s delay before the first rebalance only slows tests down.
group.initial.rebalance.delay.ms=0
# After kill -9 the restarted broker cannot register until its old session
# expires (DUPLICATE_BROKER_REGISTRATION): 9 s by default, 3 s here.
broker.session.timeout.ms=${KAFKA_BROKER_SESSION_MS:-3000}
broker.heartbeat.interval.ms=500
EOF
    if [[ -n "${KAFKA_SASL_PORT:-}" ]]; then
        # Clients log in on the SASL listener; the broker itself and the
        # readiness probe stay on PLAINTEXT.
        local users="" pair
        for pair in ${KAFKA_SASL_USERS//,/ }; do
            [[ "$pair" =~ ^[A-Za-z0-9_-]+:[A-Za-z0-9_-]+$ ]] || die "KAFKA_SASL_USERS: bad entry '$pair'"
            users+=" user_${pair%%:*}=\"${pair#*:}\""
        done
        cat >>"$PROPS" <<EOF
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$users;
EOF
    fi
    if [[ -n "${KAFKA_SSL_PORT:-}" ]]; then
        cat >>"$PROPS" <<EOF
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$KAFKA_SSL_KEYSTORE
EOF
    fi
    cat >"$DATA/log4j2.properties" <<EOF
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG_LEVEL:-WARN}
rootLogger.appenderRef.out.ref = OUT
# The one INFO line that says the server is up.
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
EOF
}

java_cmd() {
    # shellcheck disable=SC2206
    local heap=(${KAFKA_HEAP:--Xmx512m})
    JAVA=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$DATA/log4j2.properties" -cp "$LIBS/*")
}

# Writes the properties, formats storage once, launches the JVM; does not wait.
launch_node() {
    node_env
    require_fetched
    mkdir -p "$DATA"
    local pid
    pid="$(live_pid)"
    if [[ -n "$pid" ]]; then
        log "node $NODE_ID already running on 127.0.0.1:$PORT (pid $pid)"
        return 0
    fi
    local controller_port="${KAFKA_CONTROLLER_PORT:-}"
    if [[ -z "$controller_port" && -f "$DATA/controller.port" ]]; then
        controller_port="$(cat "$DATA/controller.port")"
    fi
    if [[ -z "$controller_port" ]]; then
        controller_port=$((PORT + 1000))
        if ((controller_port > 65535)) || ! port_free "$controller_port"; then
            controller_port="$(any_free_port)"
        fi
    fi
    echo "$controller_port" >"$DATA/controller.port"
    local quorum="${KAFKA_QUORUM:-$NODE_ID@127.0.0.1:$controller_port}"
    local cluster_id="${KAFKA_CLUSTER_ID:-}"
    if [[ -z "$cluster_id" && -f "$DATA/cluster.id" ]]; then
        cluster_id="$(cat "$DATA/cluster.id")"
    fi
    [[ -n "$cluster_id" ]] || cluster_id="$(new_cluster_id)"
    write_properties "$controller_port" "$quorum"
    java_cmd
    if [[ ! -f "$DATA/logs/meta.properties" ]]; then
        # Format only once, so a restart keeps topics, offsets and data.
        if ! "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" \
                >"$DATA/format.log" 2>&1; then
            cat "$DATA/format.log" >&2
            die "formatting storage in $DATA/logs failed"
        fi
        echo "$cluster_id" >"$DATA/cluster.id"
        log "formatted $DATA/logs (cluster $cluster_id, node $NODE_ID)"
    fi
    # Its own session: the broker outlives this script and whoever ran it, and
    # stop/kill9 address it by the PID in broker.pid.
    echo "---- start $(date -u +%FT%TZ)" >>"$BROKER_LOG"
    (exec setsid "${JAVA[@]}" kafka.Kafka "$PROPS" >>"$BROKER_LOG" 2>&1 </dev/null) &
    echo $! >"$PID_FILE"
    log "node $NODE_ID starting on 127.0.0.1:$PORT (controller $controller_port, pid $!, log $BROKER_LOG)"
}

# Waits until the broker answers a Kafka metadata request listing itself.
wait_node() {
    node_env
    local timeout="${KAFKA_START_TIMEOUT:-60}" started=$SECONDS pid
    while true; do
        pid="$(live_pid)"
        if [[ -z "$pid" ]]; then
            tail -n 40 "$BROKER_LOG" >&2 || true
            die "node $NODE_ID (port $PORT) exited during start-up; log: $BROKER_LOG"
        fi
        if probe_metadata "127.0.0.1:$PORT"; then
            log "node $NODE_ID ready on 127.0.0.1:$PORT after $((SECONDS - started)) s (pid $pid)"
            return 0
        fi
        if ((SECONDS - started >= timeout)); then
            tail -n 40 "$BROKER_LOG" >&2 || true
            die "node $NODE_ID (port $PORT) not ready after ${timeout} s; log: $BROKER_LOG"
        fi
        sleep 0.5
    done
}

probe_metadata() {
    if "$PY" -c 'import aiokafka' 2>/dev/null; then
        "$PY" - "$1" <<'EOF' 2>/dev/null
import asyncio, sys
from aiokafka.client import AIOKafkaClient

async def main() -> bool:
    client = AIOKafkaClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    finally:
        await client.close()

try:
    sys.exit(0 if asyncio.run(main()) else 1)
except Exception:
    sys.exit(1)
EOF
    else
        # Without aiokafka: the port accepts and the server logged that it started.
        "$PY" -c 'import socket, sys; h, p = sys.argv[1].rsplit(":", 1); socket.create_connection((h, int(p)), 1).close()' "$1" 2>/dev/null &&
            grep -q "Kafka Server started" "$BROKER_LOG"
    fi
}

cmd_start() {
    launch_node
    wait_node
}

# ---------------------------------------------------------------- stop

# $1: signal name; $2: seconds to wait (0: do not escalate).
stop_node() {
    node_env
    local pid
    pid="$(live_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        log "node on port $PORT not running"
        return 0
    fi
    local timeout="$2" started=$SECONDS
    kill "-$1" "$pid" 2>/dev/null || true
    while [[ -n "$(live_pid)" ]]; do
        if ((SECONDS - started >= timeout)) && [[ "$1" != KILL ]]; then
            log "node on port $PORT ignored SIGTERM for ${timeout} s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            set -- KILL "$2"
        fi
        if ((SECONDS - started >= timeout + 10)); then
            die "node on port $PORT (pid $pid) survived SIGKILL"
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    log "node on port $PORT stopped (pid $pid, SIG$1, $((SECONDS - started)) s)"
}

cmd_stop() { stop_node TERM "${KAFKA_STOP_TIMEOUT:-20}"; }
cmd_kill9() { stop_node KILL 0; }

cmd_status() {
    node_env
    local pid
    pid="$(live_pid)"
    if [[ -n "$pid" ]]; then
        echo "running: node $NODE_ID on 127.0.0.1:$PORT, pid $pid, data $DATA"
    else
        echo "stopped: 127.0.0.1:$PORT, data $DATA"
        return 3
    fi
}

cmd_clean() {
    node_env
    [[ -z "$(live_pid)" ]] || cmd_stop
    rm -rf "$DATA"
    log "removed $DATA"
}

# ---------------------------------------------------------------- three-node cluster

cluster_env() {
    BASE="${KAFKA_PORT:-9092}"
    CLUSTER_DATA="${KAFKA_CLUSTER_DATA:-$REPO/run/kafka-cluster-$BASE}"
    QUORUM="1@127.0.0.1:$((BASE + 1000)),2@127.0.0.1:$((BASE + 1001)),3@127.0.0.1:$((BASE + 1002))"
}

# Runs "$@" once per node with that node's environment.
for_each_node() {
    local i
    for i in 1 2 3; do
        KAFKA_NODE_ID=$i KAFKA_PORT=$((BASE + i - 1)) KAFKA_DATA="$CLUSTER_DATA/node-$i" \
            KAFKA_CONTROLLER_PORT=$((BASE + 999 + i)) KAFKA_QUORUM="$QUORUM" \
            KAFKA_CLUSTER_ID="${CLUSTER_ID:-}" "$@"
    done
}

cmd_cluster_start() {
    cluster_env
    require_fetched
    mkdir -p "$CLUSTER_DATA"
    [[ -f "$CLUSTER_DATA/cluster.id" ]] || echo "${KAFKA_CLUSTER_ID:-$(new_cluster_id)}" >"$CLUSTER_DATA/cluster.id"
    CLUSTER_ID="$(cat "$CLUSTER_DATA/cluster.id")"
    # All three first: none is ready before a majority of the quorum runs.
    for_each_node launch_node
    for_each_node wait_node
    echo "bootstrap: 127.0.0.1:$BASE,127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"
}

# In parallel: a node stopped after the quorum lost its majority hangs in
# controlled shutdown until SIGKILL.
stop_all_nodes() {
    local pids=() rc=0 p
    stop_one() { (for_each_node_one "$1" cmd_stop) & pids+=($!); }
    for p in 1 2 3; do stop_one "$p"; done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}

for_each_node_one() {
    local i="$1"
    shift
    KAFKA_NODE_ID=$i KAFKA_PORT=$((BASE + i - 1)) KAFKA_DATA="$CLUSTER_DATA/node-$i" "$@"
}

cmd_cluster_stop() { cluster_env; stop_all_nodes; }
cmd_cluster_kill9() { cluster_env; for_each_node cmd_kill9; }
cmd_cluster_status() { cluster_env; local rc=0; for_each_node cmd_status || rc=3; return $rc; }
cmd_cluster_clean() { cluster_env; stop_all_nodes; rm -rf "$CLUSTER_DATA"; log "removed $CLUSTER_DATA"; }

# ---------------------------------------------------------------- main

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    kill9) cmd_kill9 ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    cluster-start) cmd_cluster_start ;;
    cluster-stop) cmd_cluster_stop ;;
    cluster-kill9) cmd_cluster_kill9 ;;
    cluster-status) cmd_cluster_status ;;
    cluster-clean) cmd_cluster_clean ;;
    *)
        echo "usage: $0 fetch|start|stop|kill9|status|clean|cluster-start|cluster-stop|cluster-kill9|cluster-status|cluster-clean" >&2
        exit 2
        ;;
esac
