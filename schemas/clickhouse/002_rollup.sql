-- Rollups per {rollup}: applied once for each of minute, hour and day ({bucket} is
-- toStartOfMinute, toStartOfHour or toStartOfDay; {target_bit} is the table's bit in
-- flush_ledger.targets).
--
-- Each flush adds one progress row per partition: endpoint_tag '' (never a valid tag),
-- prompt_version = topic, tenant = partition, and the flush's next offset in
-- flush_offset_state; its window_start is the flush's earliest window, so that it lands in a
-- month partition the flush writes anyway (older databases may hold such rows at window_start
-- 0: readers look at every window). It lands in the same block as the flush's rollups, so it tells whether
-- this table received a flush even when ClickHouse failed half-way through the fan-out. The
-- analyst view leaves these rows out.
--
-- `usage_{rollup}_state` keeps partial aggregates (one row per flush and key until merges
-- fold them); `usage_{rollup}` is what analysts query: one row per window and dimension set,
-- merged at read time, so partials from any number of flushes and workers add up exactly.
-- Latency quantiles come from a merged sparse histogram (4 % log buckets, see
-- crates/costline-core/src/latency.rs): within 2 % of the true value.
-- Write `tupleElement(t, 1)` and `arrayElement(a, i)` on separate names, never `t.1[i]`:
-- 18.16 stores views as formatted SQL and cannot parse `t.1[i]` back when it restarts.

CREATE TABLE IF NOT EXISTS {database}.usage_{rollup}_state
(
    window_start DateTime('UTC'),
    tenant String,
    endpoint_tag String,
    prompt_version String,
    provider String,
    model String,
    environment String,
    data_mode String,
    requests_state AggregateFunction(sum, UInt64),
    attempts_state AggregateFunction(sum, UInt64),
    duplicates_state AggregateFunction(sum, UInt64),
    successes_state AggregateFunction(sum, UInt64),
    errors_state AggregateFunction(sum, UInt64),
    input_tokens_state AggregateFunction(sum, UInt64),
    cached_input_tokens_state AggregateFunction(sum, UInt64),
    cache_write_tokens_state AggregateFunction(sum, UInt64),
    output_tokens_state AggregateFunction(sum, UInt64),
    cost_usd_state AggregateFunction(sum, Decimal(38, 12)),
    unpriced_attempts_state AggregateFunction(sum, UInt64),
    latency_ms_sum_state AggregateFunction(sum, UInt64),
    latency_ms_max_state AggregateFunction(max, UInt32),
    latency_hist_state AggregateFunction(sumMap, Array(UInt16), Array(UInt64)),
    flush_offset_state AggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, endpoint_tag, prompt_version, tenant, provider, model, environment, data_mode);

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
    ru_output_tokens AS output_tokens, ru_cost_usd AS cost_usd,
    ru_unpriced_attempts AS unpriced_attempts, ru_latency_ms_sum AS latency_ms_sum,
    ru_latency_ms_max AS latency_ms_max, ru_latency_buckets AS latency_buckets,
    ru_latency_counts AS latency_counts, ru_flush_offset AS flush_offset
WHERE bitAnd(targets, {target_bit}) != 0
GROUP BY window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode;

CREATE VIEW IF NOT EXISTS {database}.usage_{rollup} AS
SELECT
    window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode,
    requests, attempts, attempts - requests AS retries, duplicates, successes, errors,
    input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, cost_usd,
    unpriced_attempts, latency_ms_sum, latency_ms_max, latency_samples,
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
