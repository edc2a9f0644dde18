#!/usr/bin/env bash
# The main job, in one command: installs (if missing) and starts Kafka (Tansu) and ClickHouse
# on loopback, builds costline, then runs `costline demo`: a worker consumes realistic generated
# traffic and the results are printed as tables from ClickHouse. Extra arguments go to the demo
# (e.g. `--events 200000`). Idempotent: a second run reuses what is installed and running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up
echo "building costline (release; the first build takes a few minutes)…"
cargo build --release --quiet -p costline
exec target/release/costline demo "$@"
