-- The flush ledger: the one table costline workers insert into.
--
-- Each row is one flush of one Kafka partition: the offsets it covers and, as parallel
-- arrays, its counted attempts (ev_*), minute rollup deltas (ru_*) and rejected records
-- (rj_*). A row is parsed whole or not at all, so a worker killed mid-insert leaves no half
-- flush behind; rows of one partition arrive in offset order, so a cut insert leaves a prefix.
-- The Null engine stores nothing: materialized views fan each row out to the tables analysts
-- query, and `flushes` keeps the covered offsets (the worker's resume point).
--
-- The fan-out goes through three narrow Null tables (ledger_events, ledger_rejects,
-- ledger_rollups), one per group of arrays. A view receives every column of the block that
-- triggered it, and ARRAY JOIN copies every column once per element: joining the rollup
-- arrays straight off the wide ledger row would copy all event arrays thousands of times.
-- `{fanout:X}` names what a second-level view reads from: ClickHouse 18.16 passes a view's
-- output on to views defined on the view itself (`X_mv`), current releases to views defined
-- on its target table (`X`). `costline migrate` probes the server and picks the one it honours.

CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.flush_ledger
(
    kafka_topic String,
    kafka_partition UInt32,
    first_offset UInt64,
    next_offset UInt64,
    newest_record_time DateTime('UTC'),
    duplicate_count UInt64,
    worker String,
    flushed_at DateTime('UTC'),
    -- Which tables this row is for (bits: 1 usage_events, 2 rejected_events, 4 usage_minute,
    -- 8 usage_hour, 16 usage_day, 32 flushes). A first write sets all; a retry after a
    -- server-side failure sets only the tables the failed write did not reach.
    targets UInt8,

    ev_offset Array(UInt64),
    ev_record_time Array(DateTime('UTC')),
    ev_event_time Array(DateTime('UTC')),
    ev_external_request_id Array(String),
    ev_attempt Array(UInt32),
    ev_first_of_request Array(UInt8),
    ev_tenant Array(String),
    ev_endpoint_tag Array(String),
    ev_prompt_version Array(String),
    ev_provider Array(String),
    ev_model Array(String),
    ev_environment Array(String),
    ev_data_mode Array(String),
    ev_status Array(String),
    ev_error_code Array(String),
    ev_input_tokens Array(UInt64),
    ev_cached_input_tokens Array(UInt64),
    ev_cache_write_tokens Array(UInt64),
    ev_output_tokens Array(UInt64),
    ev_latency_ms Array(Nullable(UInt32)),
    ev_cost_usd Array(Decimal(38, 12)),
    ev_price_version Array(String),

    ru_window_start Array(DateTime('UTC')),
    ru_tenant Array(String),
    ru_endpoint_tag Array(String),
    ru_prompt_version Array(String),
    ru_provider Array(String),
    ru_model Array(String),
    ru_environment Array(String),
    ru_data_mode Array(String),
    ru_requests Array(UInt64),
    ru_attempts Array(UInt64),
    ru_duplicates Array(UInt64),
    ru_successes Array(UInt64),
    ru_errors Array(UInt64),
    ru_input_tokens Array(UInt64),
    ru_cached_input_tokens Array(UInt64),
    ru_cache_write_tokens Array(UInt64),
    ru_output_tokens Array(UInt64),
    ru_cost_usd Array(Decimal(38, 12)),
    ru_unpriced_attempts Array(UInt64),
    ru_latency_ms_sum Array(UInt64),
    ru_latency_ms_max Array(UInt32),
    ru_latency_buckets Array(Array(UInt16)),
    ru_latency_counts Array(Array(UInt64)),
    ru_flush_offset Array(UInt64),

    rj_offset Array(UInt64),
    rj_record_time Array(DateTime('UTC')),
    rj_reason_code Array(String),
    rj_field Array(String),
    rj_reason Array(String),
    rj_payload_head Array(String),
    rj_payload_bytes Array(UInt32)
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS {database}.ledger_events
(
    kafka_topic String,
    kafka_partition UInt32,
    next_offset UInt64,
    ev_offset Array(UInt64),
    ev_record_time Array(DateTime('UTC')),
    ev_event_time Array(DateTime('UTC')),
    ev_external_request_id Array(String),
    ev_attempt Array(UInt32),
    ev_first_of_request Array(UInt8),
    ev_tenant Array(String),
    ev_endpoint_tag Array(String),
    ev_prompt_version Array(String),
    ev_provider Array(String),
    ev_model Array(String),
    ev_environment Array(String),
    ev_data_mode Array(String),
    ev_status Array(String),
    ev_error_code Array(String),
    ev_input_tokens Array(UInt64),
    ev_cached_input_tokens Array(UInt64),
    ev_cache_write_tokens Array(UInt64),
    ev_output_tokens Array(UInt64),
    ev_latency_ms Array(Nullable(UInt32)),
    ev_cost_usd Array(Decimal(38, 12)),
    ev_price_version Array(String)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.ledger_events_mv TO {database}.ledger_events AS
SELECT kafka_topic, kafka_partition, next_offset, ev_offset, ev_record_time, ev_event_time,
    ev_external_request_id, ev_attempt, ev_first_of_request, ev_tenant, ev_endpoint_tag,
    ev_prompt_version, ev_provider, ev_model, ev_environment, ev_data_mode, ev_status,
    ev_error_code, ev_input_tokens, ev_cached_input_tokens, ev_cache_write_tokens,
    ev_output_tokens, ev_latency_ms, ev_cost_usd, ev_price_version
FROM {database}.flush_ledger
WHERE bitAnd(targets, 1) != 0;

CREATE TABLE IF NOT EXISTS {database}.ledger_rejects
(
    kafka_topic String,
    kafka_partition UInt32,
    next_offset UInt64,
    flushed_at DateTime('UTC'),
    rj_offset Array(UInt64),
    rj_record_time Array(DateTime('UTC')),
    rj_reason_code Array(String),
    rj_field Array(String),
    rj_reason Array(String),
    rj_payload_head Array(String),
    rj_payload_bytes Array(UInt32)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.ledger_rejects_mv TO {database}.ledger_rejects AS
SELECT kafka_topic, kafka_partition, next_offset, flushed_at, rj_offset, rj_record_time, rj_reason_code,
    rj_field, rj_reason, rj_payload_head, rj_payload_bytes
FROM {database}.flush_ledger
WHERE bitAnd(targets, 2) != 0;

CREATE TABLE IF NOT EXISTS {database}.ledger_rollups
(
    targets UInt8,
    ru_window_start Array(DateTime('UTC')),
    ru_tenant Array(String),
    ru_endpoint_tag Array(String),
    ru_prompt_version Array(String),
    ru_provider Array(String),
    ru_model Array(String),
    ru_environment Array(String),
    ru_data_mode Array(String),
    ru_requests Array(UInt64),
    ru_attempts Array(UInt64),
    ru_duplicates Array(UInt64),
    ru_successes Array(UInt64),
    ru_errors Array(UInt64),
    ru_input_tokens Array(UInt64),
    ru_cached_input_tokens Array(UInt64),
    ru_cache_write_tokens Array(UInt64),
    ru_output_tokens Array(UInt64),
    ru_cost_usd Array(Decimal(38, 12)),
    ru_unpriced_attempts Array(UInt64),
    ru_latency_ms_sum Array(UInt64),
    ru_latency_ms_max Array(UInt32),
    ru_latency_buckets Array(Array(UInt16)),
    ru_latency_counts Array(Array(UInt64)),
    ru_flush_offset Array(UInt64)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.ledger_rollups_mv TO {database}.ledger_rollups AS
SELECT targets, ru_window_start, ru_tenant, ru_endpoint_tag, ru_prompt_version, ru_provider,
    ru_model, ru_environment, ru_data_mode, ru_requests, ru_attempts, ru_duplicates,
    ru_successes, ru_errors, ru_input_tokens, ru_cached_input_tokens, ru_cache_write_tokens,
    ru_output_tokens, ru_cost_usd, ru_unpriced_attempts, ru_latency_ms_sum,
    ru_latency_ms_max, ru_latency_buckets, ru_latency_counts, ru_flush_offset
FROM {database}.flush_ledger
WHERE bitAnd(targets, 28) != 0;

-- One row per flush: what was covered. `max(next_offset)` per partition is where a worker
-- that takes the partition over resumes. ClickHouse 18.16 pushes a block to its views one
-- after another in name order, so the view that records progress is named to come last: if
-- the server fails half-way through a flush, progress is not recorded and nothing is lost.
CREATE TABLE IF NOT EXISTS {database}.flushes
(
    kafka_topic String,
    kafka_partition UInt32,
    first_offset UInt64,
    next_offset UInt64,
    newest_record_time DateTime('UTC'),
    counted UInt64,
    duplicates UInt64,
    rejected UInt64,
    worker String,
    flushed_at DateTime('UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(flushed_at)
ORDER BY (kafka_topic, kafka_partition, next_offset);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.zz_flushes_mv TO {database}.flushes AS
SELECT
    kafka_topic, kafka_partition, first_offset, next_offset, newest_record_time,
    length(ev_offset) AS counted, duplicate_count AS duplicates, length(rj_offset) AS rejected, worker, flushed_at
FROM {database}.flush_ledger
WHERE bitAnd(targets, 32) != 0;

-- Every counted (deduplicated) attempt, with its cost, the price-table version that produced
-- it and the Kafka position it came from.
CREATE TABLE IF NOT EXISTS {database}.usage_events
(
    event_time DateTime('UTC'),
    record_time DateTime('UTC'),
    external_request_id String,
    attempt UInt32,
    first_of_request UInt8,
    tenant String,
    endpoint_tag String,
    prompt_version String,
    provider String,
    model String,
    environment String,
    data_mode String,
    status String,
    error_code String,
    input_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    output_tokens UInt64,
    latency_ms Nullable(UInt32),
    cost_usd Decimal(38, 12),
    price_version String,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    -- The flush that wrote the row (its next offset): lets a worker tell, after a failure,
    -- whether this table already holds a flush.
    flush_next_offset UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(record_time)
ORDER BY (kafka_topic, kafka_partition, kafka_offset);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_events_mv TO {database}.usage_events AS
SELECT
    event_time, record_time, external_request_id, attempt, first_of_request, tenant, endpoint_tag,
    prompt_version, provider, model, environment, data_mode, status, error_code, input_tokens,
    cached_input_tokens, cache_write_tokens, output_tokens, latency_ms, cost_usd, price_version,
    kafka_topic, kafka_partition, kafka_offset, next_offset AS flush_next_offset
FROM {database}.{fanout:ledger_events}
ARRAY JOIN
    ev_event_time AS event_time, ev_record_time AS record_time,
    ev_external_request_id AS external_request_id, ev_attempt AS attempt,
    ev_first_of_request AS first_of_request, ev_tenant AS tenant, ev_endpoint_tag AS endpoint_tag,
    ev_prompt_version AS prompt_version, ev_provider AS provider, ev_model AS model,
    ev_environment AS environment, ev_data_mode AS data_mode, ev_status AS status,
    ev_error_code AS error_code, ev_input_tokens AS input_tokens,
    ev_cached_input_tokens AS cached_input_tokens, ev_cache_write_tokens AS cache_write_tokens,
    ev_output_tokens AS output_tokens, ev_latency_ms AS latency_ms, ev_cost_usd AS cost_usd,
    ev_price_version AS price_version, ev_offset AS kafka_offset;

-- Dead letters: every record that failed validation, with the reason and the first bytes.
CREATE TABLE IF NOT EXISTS {database}.rejected_events
(
    record_time DateTime('UTC'),
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    reason_code String,
    field String,
    reason String,
    payload_head String,
    payload_bytes UInt32,
    rejected_at DateTime('UTC'),
    flush_next_offset UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(record_time)
ORDER BY (kafka_topic, kafka_partition, kafka_offset);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.rejected_events_mv TO {database}.rejected_events AS
SELECT record_time, kafka_topic, kafka_partition, kafka_offset, reason_code, field, reason,
    payload_head, payload_bytes, flushed_at AS rejected_at, next_offset AS flush_next_offset
FROM {database}.{fanout:ledger_rejects}
ARRAY JOIN
    rj_record_time AS record_time, rj_offset AS kafka_offset, rj_reason_code AS reason_code,
    rj_field AS field, rj_reason AS reason, rj_payload_head AS payload_head,
    rj_payload_bytes AS payload_bytes;
