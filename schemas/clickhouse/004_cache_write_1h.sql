-- 1-hour cache writes: the measure cache_write_1h_tokens, from the ledger row to the analysts'
-- views.
--
-- The ledger's new arrays default to one 0 per element, so a row written without them (by a
-- worker of the previous release) still fans out, with 0 one-hour tokens. Old rows of every
-- table read 0. ClickHouse cannot change a materialized view's query: the views that pass the
-- new column on are dropped and created again (the views reading from a view first), and the
-- analyst views likewise. A row inserted into flush_ledger between a drop and the matching
-- create misses that view: stop the workers before this step (docs/operations.md, "Upgrading").

ALTER TABLE {database}.flush_ledger ADD COLUMN IF NOT EXISTS ev_cache_write_1h_tokens Array(UInt64)
    DEFAULT arrayMap(o -> toUInt64(0), ev_offset) AFTER ev_cache_write_tokens;

ALTER TABLE {database}.flush_ledger ADD COLUMN IF NOT EXISTS ru_cache_write_1h_tokens Array(UInt64)
    DEFAULT arrayMap(w -> toUInt64(0), ru_window_start) AFTER ru_cache_write_tokens;

ALTER TABLE {database}.ledger_events ADD COLUMN IF NOT EXISTS ev_cache_write_1h_tokens Array(UInt64)
    AFTER ev_cache_write_tokens;

ALTER TABLE {database}.ledger_rollups ADD COLUMN IF NOT EXISTS ru_cache_write_1h_tokens Array(UInt64)
    AFTER ru_cache_write_tokens;

ALTER TABLE {database}.usage_events ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt64 DEFAULT 0
    AFTER cache_write_tokens;

ALTER TABLE {database}.usage_{rollup}_state ADD COLUMN IF NOT EXISTS cache_write_1h_tokens_state
    AggregateFunction(sum, UInt64) AFTER cache_write_tokens_state;

DROP TABLE IF EXISTS {database}.usage_events_mv;

DROP TABLE IF EXISTS {database}.usage_{rollup}_mv;

DROP TABLE IF EXISTS {database}.ledger_events_mv;

DROP TABLE IF EXISTS {database}.ledger_rollups_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.ledger_events_mv TO {database}.ledger_events AS
SELECT kafka_topic, kafka_partition, next_offset, ev_offset, ev_record_time, ev_event_time,
    ev_external_request_id, ev_attempt, ev_first_of_request, ev_tenant, ev_endpoint_tag,
    ev_prompt_version, ev_provider, ev_model, ev_environment, ev_data_mode, ev_status,
    ev_error_code, ev_input_tokens, ev_cached_input_tokens, ev_cache_write_tokens,
    ev_cache_write_1h_tokens, ev_output_tokens, ev_latency_ms, ev_cost_usd, ev_price_version
FROM {database}.flush_ledger
WHERE bitAnd(targets, 1) != 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.ledger_rollups_mv TO {database}.ledger_rollups AS
SELECT targets, ru_window_start, ru_tenant, ru_endpoint_tag, ru_prompt_version, ru_provider,
    ru_model, ru_environment, ru_data_mode, ru_requests, ru_attempts, ru_duplicates,
    ru_successes, ru_errors, ru_input_tokens, ru_cached_input_tokens, ru_cache_write_tokens,
    ru_cache_write_1h_tokens, ru_output_tokens, ru_cost_usd, ru_unpriced_attempts, ru_latency_ms_sum,
    ru_latency_ms_max, ru_latency_buckets, ru_latency_counts, ru_flush_offset
FROM {database}.flush_ledger
WHERE bitAnd(targets, 28) != 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_events_mv TO {database}.usage_events AS
SELECT
    event_time, record_time, external_request_id, attempt, first_of_request, tenant, endpoint_tag,
    prompt_version, provider, model, environment, data_mode, status, error_code, input_tokens,
    cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, latency_ms,
    cost_usd, price_version, kafka_topic, kafka_partition, kafka_offset, next_offset AS flush_next_offset
FROM {database}.{fanout:ledger_events}
ARRAY JOIN
    ev_event_time AS event_time, ev_record_time AS record_time,
    ev_external_request_id AS external_request_id, ev_attempt AS attempt,
    ev_first_of_request AS first_of_request, ev_tenant AS tenant, ev_endpoint_tag AS endpoint_tag,
    ev_prompt_version AS prompt_version, ev_provider AS provider, ev_model AS model,
    ev_environment AS environment, ev_data_mode AS data_mode, ev_status AS status,
    ev_error_code AS error_code, ev_input_tokens AS input_tokens,
    ev_cached_input_tokens AS cached_input_tokens, ev_cache_write_tokens AS cache_write_tokens,
    ev_cache_write_1h_tokens AS cache_write_1h_tokens, ev_output_tokens AS output_tokens,
    ev_latency_ms AS latency_ms, ev_cost_usd AS cost_usd, ev_price_version AS price_version,
    ev_offset AS kafka_offset;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_{rollup}_mv TO {database}.usage_{rollup}_state AS
SELECT
    {bucket}(ru_window) AS window_start, tenant, endpoint_tag, prompt_version, provider, model,
    environment, data_mode,
    sumState(requests) AS requests_state,
    sumState(attempts) AS attempts_state,
    sumState(duplicates) AS duplicates_state,
    sumState(successes) AS successes_state,
    sumState(errors) AS errors_state,
    sumState(input_tokens) AS input_tokens_state,
    sumState(cached_input_tokens) AS cached_input_tokens_state,
    sumState(cache_write_tokens) AS cache_write_tokens_state,
    sumState(cache_write_1h_tokens) AS cache_write_1h_tokens_state,
    sumState(output_tokens) AS output_tokens_state,
    sumState(cost_usd) AS cost_usd_state,
    sumState(unpriced_attempts) AS unpriced_attempts_state,
    sumState(latency_ms_sum) AS latency_ms_sum_state,
    maxState(latency_ms_max) AS latency_ms_max_state,
    sumMapState(latency_buckets, latency_counts) AS latency_hist_state,
    maxState(flush_offset) AS flush_offset_state
FROM {database}.{fanout:ledger_rollups}
ARRAY JOIN
    ru_window_start AS ru_window, ru_tenant AS tenant, ru_endpoint_tag AS endpoint_tag,
    ru_prompt_version AS prompt_version, ru_provider AS provider, ru_model AS model,
    ru_environment AS environment, ru_data_mode AS data_mode, ru_requests AS requests,
    ru_attempts AS attempts, ru_duplicates AS duplicates, ru_successes AS successes,
    ru_errors AS errors, ru_input_tokens AS input_tokens,
    ru_cached_input_tokens AS cached_input_tokens, ru_cache_write_tokens AS cache_write_tokens,
    ru_cache_write_1h_tokens AS cache_write_1h_tokens, ru_output_tokens AS output_tokens,
    ru_cost_usd AS cost_usd, ru_unpriced_attempts AS unpriced_attempts,
    ru_latency_ms_sum AS latency_ms_sum, ru_latency_ms_max AS latency_ms_max,
    ru_latency_buckets AS latency_buckets, ru_latency_counts AS latency_counts,
    ru_flush_offset AS flush_offset
WHERE bitAnd(targets, {target_bit}) != 0
GROUP BY window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode;

DROP TABLE IF EXISTS {database}.usage_{rollup};

CREATE VIEW IF NOT EXISTS {database}.usage_{rollup} AS
SELECT
    window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode,
    requests, attempts, attempts - requests AS retries, duplicates, successes, errors,
    input_tokens, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens,
    cost_usd, unpriced_attempts, latency_ms_sum, latency_ms_max, latency_samples,
    if(latency_samples = 0, 0, round(pow(1.04, arrayElement(latency_buckets, arrayFirstIndex(c -> c >= 0.50 * latency_samples, latency_cumulative)) - 0.5) * (arrayElement(latency_buckets, arrayFirstIndex(c -> c >= 0.50 * latency_samples, latency_cumulative)) > 0), 1)) AS latency_ms_p50,
    if(latency_samples = 0, 0, round(pow(1.04, arrayElement(latency_buckets, arrayFirstIndex(c -> c >= 0.95 * latency_samples, latency_cumulative)) - 0.5) * (arrayElement(latency_buckets, arrayFirstIndex(c -> c >= 0.95 * latency_samples, latency_cumulative)) > 0), 1)) AS latency_ms_p95,
    if(latency_samples = 0, 0, round(pow(1.04, arrayElement(latency_buckets, arrayFirstIndex(c -> c >= 0.99 * latency_samples, latency_cumulative)) - 0.5) * (arrayElement(latency_buckets, arrayFirstIndex(c -> c >= 0.99 * latency_samples, latency_cumulative)) > 0), 1)) AS latency_ms_p99
FROM
(
    SELECT
        window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode,
        sumMerge(requests_state) AS requests,
        sumMerge(attempts_state) AS attempts,
        sumMerge(duplicates_state) AS duplicates,
        sumMerge(successes_state) AS successes,
        sumMerge(errors_state) AS errors,
        sumMerge(input_tokens_state) AS input_tokens,
        sumMerge(cached_input_tokens_state) AS cached_input_tokens,
        sumMerge(cache_write_tokens_state) AS cache_write_tokens,
        sumMerge(cache_write_1h_tokens_state) AS cache_write_1h_tokens,
        sumMerge(output_tokens_state) AS output_tokens,
        sumMerge(cost_usd_state) AS cost_usd,
        sumMerge(unpriced_attempts_state) AS unpriced_attempts,
        sumMerge(latency_ms_sum_state) AS latency_ms_sum,
        maxMerge(latency_ms_max_state) AS latency_ms_max,
        sumMapMerge(latency_hist_state) AS latency_hist,
        tupleElement(latency_hist, 1) AS latency_buckets,
        arraySum(tupleElement(latency_hist, 2)) AS latency_samples,
        arrayCumSum(tupleElement(latency_hist, 2)) AS latency_cumulative
    FROM {database}.usage_{rollup}_state
    WHERE endpoint_tag != ''
    GROUP BY window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode
);
