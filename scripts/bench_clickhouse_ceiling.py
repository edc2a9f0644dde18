#!/usr/bin/env python3
"""How many usage_events rows per second ClickHouse alone accepts on this machine (not a test).

costline writes every counted attempt to `usage_events` (SPEC §3), so its end-to-end rate can
never exceed the rate at which the ClickHouse server stores such rows. This measures that
ceiling with nothing else running: no broker, no worker, no views or other tables in the way.
The server generates the rows itself (`INSERT ... SELECT ... FROM numbers()`, realistic
strings and cardinalities), so no client parsing or network counts either: a generous upper
bound for the real write path, which also fans each flush out to three rollup tables.

Each run creates a fresh database with `costline migrate` (the real schema), then inserts
--rows rows in back-to-back batches of --batch rows (the size of a busy worker's flush) and
reports rows/s over the whole sequence, background merges running alongside as they do in
production. Prints each run and the median.

Usage: scripts/bench_clickhouse_ceiling.py [--rows 5000000] [--batch 200000] [--runs 3]
Needs `scripts/services.sh up clickhouse` and a release build (`cargo build --release`).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLICKHOUSE = "http://127.0.0.1:{}".format(os.environ.get("COSTLINE_CLICKHOUSE_HTTP_PORT", "18123"))
DATABASE = "bench_ceiling"

ROWS = """
SELECT
    toDateTime(1790000000 + intDiv(number + {first}, 2000)) AS event_time,
    event_time AS record_time,
    concat('req-', hex(cityHash64(number + {first}))) AS external_request_id,
    toUInt32(1 + (number % 7 = 0)) AS attempt,
    toUInt8(number % 7 != 0) AS first_of_request,
    concat('tenant-', toString(cityHash64(number) % 300)) AS tenant,
    ['checkout.ai_summary', 'search.rerank', 'support.reply', 'docs.qa', 'mail.draft',
     'code.review', 'sales.brief', 'ops.triage'][number % 8 + 1] AS endpoint_tag,
    concat('v', toString(number % 5)) AS prompt_version,
    ['openai', 'anthropic', 'google'][number % 3 + 1] AS provider,
    ['gpt-4o-mini', 'claude-sonnet-4', 'gemini-2.5-flash'][number % 3 + 1] AS model,
    'prod' AS environment,
    'real' AS data_mode,
    if(number % 20 = 0, 'error', 'success') AS status,
    if(number % 20 = 0, 'rate_limit', '') AS error_code,
    toUInt64(number % 4000) AS input_tokens,
    toUInt64(number % 1000) AS cached_input_tokens,
    toUInt64(0) AS cache_write_tokens,
    toUInt64(number % 800) AS output_tokens,
    toNullable(toUInt32(number % 5000)) AS latency_ms,
    toDecimal128(number % 100000, 12) / 1000000 AS cost_usd,
    '2026-11-01' AS price_version,
    'usage' AS kafka_topic,
    toUInt32(number % 4) AS kafka_partition,
    number + {first} AS kafka_offset,
    number + {first} AS flush_next_offset
FROM numbers({count})
"""


def query(sql, database=DATABASE):
    request = urllib.request.Request(f"{CLICKHOUSE}/?database={database}", data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.read().decode()
    except urllib.error.HTTPError as e:
        sys.exit(f"ClickHouse answered {e.code} to {sql.strip()[:80]}...: {e.read().decode().strip()}")


def fresh_database(binary):
    query(f"DROP DATABASE IF EXISTS {DATABASE}", database="default")
    env = dict(os.environ, COSTLINE_CLICKHOUSE__URL=CLICKHOUSE, COSTLINE_CLICKHOUSE__DATABASE=DATABASE)
    subprocess.run([binary, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


def one_run(args, binary):
    fresh_database(binary)
    # In table order (18.16's system.columns has no `position` column).
    columns = query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'usage_events' "
                    "FORMAT TSV").split()
    started = time.monotonic()
    for first in range(0, args.rows, args.batch):
        count = min(args.batch, args.rows - first)
        query(f"INSERT INTO usage_events ({', '.join(columns)}) " + ROWS.format(first=first, count=count))
    elapsed = time.monotonic() - started
    stored = int(query("SELECT count() FROM usage_events"))
    if stored != args.rows:
        sys.exit(f"stored {stored} rows, expected {args.rows}")
    return args.rows / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--batch", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--binary", default=str(REPO / "target/release/costline"))
    args = parser.parse_args()
    if not Path(args.binary).exists():
        sys.exit(f"{args.binary} is missing: run `cargo build --release` first")
    rates = []
    for run in range(args.runs):
        rate = one_run(args, args.binary)
        rates.append(rate)
        print(f"run {run + 1}: {rate:,.0f} usage_events rows/s ({args.rows:,} rows in batches of {args.batch:,})")
    print(f"median: {statistics.median(rates):,.0f} rows/s")
    query(f"DROP DATABASE IF EXISTS {DATABASE}", database="default")


if __name__ == "__main__":
    main()
