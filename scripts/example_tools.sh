#!/usr/bin/env bash
# Installs the client libraries of the producer examples (examples/) into the state dir, pinned
# and idempotent, and prints where they are: the tests run the examples with them.
#
#   scripts/example_tools.sh python   # prints a directory for PYTHONPATH (confluent-kafka,
#                                      # the OpenTelemetry SDK and its OTLP/HTTP exporter)
#   scripts/example_tools.sh node     # prints a directory for NODE_PATH (kafkajs)
#
# Environment: COSTLINE_STATE_DIR (default <repo>/.state), COSTLINE_PYTHON (default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${COSTLINE_STATE_DIR:-$REPO/.state}"
PY="${COSTLINE_PYTHON:-python3}"
TOOLS="$STATE/tools"
LOGS="$STATE/logs"
PY_PKGS=(confluent-kafka==2.16.0 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2)
PY_DIR="$TOOLS/examples-python-1"      # bump the suffix when PY_PKGS change
NODE_PKG="kafkajs@2.2.4"
NODE_DIR="$TOOLS/examples-node-kafkajs-2.2.4"

die() { echo "example_tools.sh: error: $*" >&2; exit 1; }
mkdir -p "$TOOLS" "$LOGS"

# Installs into a temporary directory moved into place at the end, so that a half-done install
# never looks complete; the directory is made by `$2 <tmp dir>`.
install_into() {
    local dir="$1" tmp="$1.tmp.$$" log="$LOGS/install-$(basename "$1").log"
    shift
    rm -rf "$tmp"
    if ! "$@" "$tmp" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -rf "$tmp"
        die "installing into $dir failed (log: $log)"
    fi
    rm -rf "$dir"
    mv "$tmp" "$dir"
}

pip_target() { "$PY" -m pip install -q --disable-pip-version-check --target "$1" "${PY_PKGS[@]}"; }
npm_prefix() { npm install --no-audit --no-fund --prefix "$1" "$NODE_PKG"; }

case "${1:-}" in
    python)
        if ! PYTHONPATH="$PY_DIR" "$PY" -c 'import confluent_kafka, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
            install_into "$PY_DIR" pip_target
            PYTHONPATH="$PY_DIR" "$PY" -c 'import confluent_kafka, opentelemetry.exporter.otlp.proto.http' \
                || die "installed ${PY_PKGS[*]} but cannot import them"
        fi
        echo "$PY_DIR"
        ;;
    node)
        command -v npm >/dev/null || die "npm is not installed (the TypeScript example needs Node 20 and npm)"
        [[ -f "$NODE_DIR/node_modules/kafkajs/package.json" ]] || install_into "$NODE_DIR" npm_prefix
        echo "$NODE_DIR/node_modules"
        ;;
    *) die "usage: $0 python|node" ;;
esac
