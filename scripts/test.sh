#!/usr/bin/env bash
# All tests, in one command: formatting and lints, unit and property tests of every crate, then
# the integration and end-to-end tests against real services (Kafka-protocol broker Tansu,
# ClickHouse 18.16, chDB; for tests/cluster.rs, which starts them itself, ZooKeeper and four
# more ClickHouse 18.16 servers: `scripts/services.sh up cluster`), installed and started on
# loopback if needed.
# A test whose service cannot start fails; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up
scripts/services.sh chdb >/dev/null
# docker-compose.yml is validated with `docker-compose config` (tests/compose.rs; no engine needed).
command -v docker-compose >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }
# The dashboard page is tested in headless Chromium (tests/dashboard.rs).
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== core and adapter crates: unit, property and corpus tests"
cargo test --workspace --exclude costline
echo "== costline: unit tests, then integration and end-to-end tests (real services, one at a time)"
cargo test -p costline --tests -- --test-threads=1
