-- Reprice corrections into the rollups, once per {rollup}: cost and unpriced-attempt deltas
-- land in `usage_{rollup}_state` beside the workers' partials and merge with them. ClickHouse
-- 18.16 needs a view to produce every column of its target, so the other measures are empty
-- states.

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.reprice_{rollup}_mv TO {database}.usage_{rollup}_state AS
SELECT
    {bucket}(ru_window) AS window_start, tenant, endpoint_tag, prompt_version, provider, model,
    environment, data_mode,
    sumState(toUInt64(0)) AS requests_state,
    sumState(toUInt64(0)) AS attempts_state,
    sumState(toUInt64(0)) AS duplicates_state,
    sumState(toUInt64(0)) AS successes_state,
    sumState(toUInt64(0)) AS errors_state,
    sumState(toUInt64(0)) AS input_tokens_state,
    sumState(toUInt64(0)) AS cached_input_tokens_state,
    sumState(toUInt64(0)) AS cache_write_tokens_state,
    sumState(toUInt64(0)) AS output_tokens_state,
    sumState(cost_usd) AS cost_usd_state,
    sumState(unpriced_attempts) AS unpriced_attempts_state,
    sumState(toUInt64(0)) AS latency_ms_sum_state,
    maxState(toUInt32(0)) AS latency_ms_max_state,
    sumMapState(emptyArrayUInt16(), emptyArrayUInt64()) AS latency_hist_state,
    maxState(toUInt64(0)) AS flush_offset_state
FROM {database}.reprice_ledger
ARRAY JOIN
    ru_window_start AS ru_window, ru_tenant AS tenant, ru_endpoint_tag AS endpoint_tag,
    ru_prompt_version AS prompt_version, ru_provider AS provider, ru_model AS model,
    ru_environment AS environment, ru_data_mode AS data_mode, ru_cost_usd AS cost_usd,
    ru_unpriced_attempts AS unpriced_attempts
WHERE bitAnd(targets, {target_bit}) != 0
GROUP BY window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode;
