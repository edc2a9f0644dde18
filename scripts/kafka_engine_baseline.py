#!/usr/bin/env python3
"""The Kafka-engine baseline of the end-to-end benchmark (not a test): ClickHouse's own Kafka
table engine reading the same topic as costline, on the second ClickHouse 18.16 server that
scripts/kafka_engine_server.sh starts.

A Kafka table and a materialized view compute costline's minute rollup (minute of the event
`timestamp`, tenant = userId, endpointTag, promptVersion, provider, model, environment,
dataMode; attempts, successes, errors, input/cached/cache-write/output tokens, latency sum)
into a SummingMergeTree. It is measured from creating the Kafka table until the target
table's summed attempts stop growing (or reach every record it could parse), and from its
first insert. The server flushes Kafka tables every 2 s (stream_flush_interval_ms, like the
benchmark's costline flush interval). scripts/bench_e2e.py runs it after costline on the same
topic and reconciles both rollups with the record log.

What the Kafka engine can and cannot do (ClickHouse 18.16, measured):
- JSONEachRow reads one type per field. `timestamp` is a DateTime column read with
  date_time_input_format=best_effort (server profile): RFC 3339 strings (50 % of events) are
  exact; epoch-millisecond numbers (40 %) are read as seconds and cut to 32 bits, which the
  view undoes (value + k * 2^32 ms nearest to now(): exact for events within ~24 days of
  processing time, except for a few hours every 49.7 days when both readings fall within a day
  of now); events without a timestamp (10 %) go to the processing minute (18.16 exposes no
  Kafka message timestamp; costline uses the record time). So per-minute rows differ for
  some events; totals over all minutes are compared.
- Decimals must be unquoted and unknown fields need input_format_skip_unknown_fields (server
  profile); there is no price table, so the baseline computes no cost (costline prices every
  attempt, and also writes usage_events, rejected_events and hour/day rollups).
- ~1 % of generated records are deliberately invalid. Without input_format_allow_errors_* in
  the server profile (18.16 has no kafka_skip_broken_messages), the first one that does not
  parse fails the whole block, nothing is committed and the Kafka table retries the same block
  every ~3.5 s for good: 0 of 20,000 records arrived. With them and kafka_row_delimiter='\\n'
  the parser skips to the next message, but a record cut off inside a JSON string (the
  generator's truncated ones, ~0.1 % of records) takes the next message with it: ~0.1 % of
  valid records were lost, silently.
- It does not deduplicate (re-sent copies are counted twice) and does not validate (invalid
  records that parse, e.g. a missing model or cachedInputTokens > inputTokens, are counted).
  The reconciliation prints how much of the difference to costline each of these explains.
"""
import json
import os
import subprocess
import time
from pathlib import Path

from clickhouse_http import number, query

ROOT = Path(__file__).resolve().parent.parent
BROKERS = f"127.0.0.1:{os.environ.get('COSTLINE_KAFKA_PORT', '19092')}"
KAFKA_ENGINE = f"http://127.0.0.1:{os.environ.get('COSTLINE_CLICKHOUSE_KAFKA_HTTP_PORT', '18124')}"

UINT_FIELDS = ("inputTokens", "outputTokens", "cachedInputTokens", "cacheWriteTokens", "latencyMs", "attempt")
STRING_FIELDS = ("externalRequestId", "provider", "model", "endpointTag", "promptVersion", "userId", "status",
                 "dataMode", "environment")


def parsed_by_clickhouse_18(payload):
    """The event, if ClickHouse 18.16's JSONEachRow (with the Kafka table's columns) reads the
    record on its own; None if it fails. Checked record by record against 18.16: the same verdict
    for every invalid kind the generator makes."""
    if payload is None:  # not UTF-8: the record log has no text for it
        return None
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    for field in UINT_FIELDS:
        if field in event and not (type(event[field]) is int and event[field] >= 0):
            return None
    for field in STRING_FIELDS:
        if field in event and type(event[field]) is not str:
            return None
    return event


def start_server():
    """Starts the Kafka-engine server if needed and checks its profile."""
    subprocess.run([str(ROOT / "scripts/kafka_engine_server.sh"), "up"], check=True, timeout=300)
    check_kafka_engine_server()


KE_COLUMNS = """
    externalRequestId String, provider String, model String, endpointTag String, promptVersion String,
    userId String, inputTokens UInt64, outputTokens UInt64, cachedInputTokens UInt64, cacheWriteTokens UInt64,
    latencyMs UInt64, status String, dataMode String, environment String, attempt UInt32, timestamp DateTime"""

# The event time in seconds: see the module docstring. t = 0: no timestamp (processing time);
# t within a day of now: an RFC 3339 string read as such; otherwise epoch milliseconds that
# 18.16 read as seconds and cut to 32 bits: the value + k * 2^32 nearest to now, in ms.
KE_EVENT_SECONDS = """multiIf(
        toUInt32(timestamp) = 0, toUInt32(now()),
        abs(toInt64(toUInt32(timestamp)) - toInt64(toUInt32(now()))) < 86400, toUInt32(timestamp),
        toUInt32(intDiv(toInt64(toUInt32(timestamp))
            + 4294967296 * toInt64(round((toInt64(toUInt32(now())) * 1000 - toInt64(toUInt32(timestamp))) / 4294967296)),
            1000)))"""


def measure(args, tag, expected_rows, cleanup):
    """Kafka table + materialized view into a minute rollup on the second ClickHouse; waits
    until the rollup holds expected_rows attempts or stops growing; returns figures. Rates
    count messages, like costline's (which include duplicates and rejected records): the whole
    topic once the rollup holds at least 99 % of what 18.16 can parse, else the rows it holds."""
    db = f"ke_{tag}"
    query("", f"CREATE DATABASE {db}", url=KAFKA_ENGINE, check=True)
    cleanup.append(lambda: drop_kafka_engine_database(db))
    query(db, """CREATE TABLE usage_minute (
        window_start DateTime, tenant String, endpoint_tag String, prompt_version String, provider String,
        model String, environment String, data_mode String,
        attempts UInt64, successes UInt64, errors UInt64, input_tokens UInt64, cached_input_tokens UInt64,
        cache_write_tokens UInt64, output_tokens UInt64, latency_ms_sum UInt64)
        ENGINE = SummingMergeTree PARTITION BY toYYYYMM(window_start)
        ORDER BY (window_start, endpoint_tag, prompt_version, tenant, provider, model, environment, data_mode)""",
          url=KAFKA_ENGINE, check=True)
    settings = [f"kafka_broker_list = '{BROKERS}'", f"kafka_topic_list = '{tag}'", f"kafka_group_name = '{db}'",
                "kafka_format = 'JSONEachRow'", "kafka_row_delimiter = '\\n'",
                f"kafka_num_consumers = {args.kafka_consumers}"]
    if args.kafka_block_size:
        settings.append(f"kafka_max_block_size = {args.kafka_block_size}")
    created = time.time()
    query(db, f"CREATE TABLE events_queue ({KE_COLUMNS}) ENGINE = Kafka SETTINGS " + ", ".join(settings),
          url=KAFKA_ENGINE, check=True)
    query(db, f"""CREATE MATERIALIZED VIEW usage_minute_mv TO usage_minute AS SELECT
        toStartOfMinute(toDateTime({KE_EVENT_SECONDS})) AS window_start,
        userId AS tenant, endpointTag AS endpoint_tag, promptVersion AS prompt_version,
        lower(provider) AS provider, model,
        if(environment = '', 'prod', environment) AS environment, if(dataMode = '', 'real', dataMode) AS data_mode,
        count() AS attempts, countIf(status = 'success') AS successes, countIf(status != 'success') AS errors,
        sum(inputTokens) AS input_tokens, sum(cachedInputTokens) AS cached_input_tokens,
        sum(cacheWriteTokens) AS cache_write_tokens, sum(outputTokens) AS output_tokens,
        sum(latencyMs) AS latency_ms_sum
        FROM events_queue
        GROUP BY window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode""",
          url=KAFKA_ENGINE, check=True)
    count, first_time, first_count, last_growth = 0, None, 0, created
    deadline = created + args.timeout
    try:
        while True:
            now = time.time()
            value = number(query(db, "SELECT sum(attempts) FROM usage_minute", url=KAFKA_ENGINE))
            if value > count:
                count, last_growth = value, now
                if first_time is None:
                    first_time, first_count = now, value
            if count >= expected_rows:
                stopped = "reached every record it can parse"
                break
            if now - last_growth > args.kafka_stall_secs:
                stopped = f"stopped growing (nothing new for {args.kafka_stall_secs:.0f} s)"
                break
            if now > deadline:
                stopped = f"timed out after {args.timeout} s"
                break
            time.sleep(0.05)
    finally:
        # Stop consuming before reading totals (a late re-read would show up as extra rows).
        query(db, "DROP TABLE IF EXISTS usage_minute_mv", url=KAFKA_ENGINE)
        query(db, "DROP TABLE IF EXISTS events_queue", url=KAFKA_ENGINE)
    elapsed = last_growth - created
    messages = args.records if count >= 0.99 * expected_rows else count
    return {
        "db": db,
        "rows": count,
        "messages": messages,
        "stopped": stopped,
        "seconds_from_create": elapsed,
        "rate": messages / elapsed if count and elapsed > 0 else None,
        "rate_from_first_rows": (count - first_count) * (messages / count) / (last_growth - first_time)
        if first_time is not None and last_growth > first_time else None,
        "seconds_to_first_rows": None if first_time is None else first_time - created,
    }


KE_PROFILE = {  # what the Kafka tables need from the server's default profile (kafka_engine_server.sh)
    "input_format_skip_unknown_fields": "1",
    "date_time_input_format": "best_effort",
    "input_format_allow_errors_ratio": "1",
    "stream_flush_interval_ms": "2000",
}


def check_kafka_engine_server():
    rows = query("", "SELECT name, value FROM system.settings", url=KAFKA_ENGINE, check=True).splitlines()
    settings = dict(row.split("\t", 1) for row in rows)
    wrong = {k: settings.get(k) for k, v in KE_PROFILE.items() if settings.get(k) != v}
    if wrong:
        raise SystemExit(f"the Kafka-engine ClickHouse ({KAFKA_ENGINE}) runs with {wrong}, not {KE_PROFILE}: "
                         "it was started by an older script; run `scripts/kafka_engine_server.sh restart`")


def drop_kafka_engine_database(db):
    query(db, "DROP TABLE IF EXISTS usage_minute_mv", url=KAFKA_ENGINE)
    query(db, "DROP TABLE IF EXISTS events_queue", url=KAFKA_ENGINE)
    query("", f"DROP DATABASE IF EXISTS {db}", url=KAFKA_ENGINE)
