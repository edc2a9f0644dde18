-- Reprice: corrections of counted attempts' cost after a price is fixed (`costline reprice`).
--
-- `usage_events` rows keep the cost and price version they were counted with. A reprice writes
-- the difference to the cost the table now gives: per attempt into `cost_corrections`, and
-- summed per minute and dimension set into the rollup state tables (below), so rollups,
-- reports and budget spend include it. An attempt's cost in force is its `usage_events` cost
-- plus its corrections; a reprice corrects towards the target cost, so repeating one changes
-- nothing.
--
-- One reprice chunk is one `reprice_ledger` row, parsed whole or not at all: a reprice killed
-- at any point leaves whole chunks behind. The views fan a row out in name order
-- (`cost_corrections_mv` first). Each target carries the chunk's id (`cost_corrections.chunk`;
-- in the rollups a marker row with endpoint_tag '' and prompt_version '#reprice', tenant = the
-- chunk), so a chunk the server applied to some targets only is completed from
-- `cost_corrections`; `targets` (bits: 4 minute, 8 hour, 16 day, 64 corrections) says which
-- tables a row is for.

CREATE TABLE IF NOT EXISTS {database}.reprice_ledger
(
    reprice_id String,
    chunk String,
    targets UInt8,
    repriced_at_ms UInt64,

    cc_kafka_topic Array(String),
    cc_kafka_partition Array(UInt32),
    cc_kafka_offset Array(UInt64),
    cc_event_time Array(DateTime('UTC')),
    cc_tenant Array(String),
    cc_endpoint_tag Array(String),
    cc_prompt_version Array(String),
    cc_provider Array(String),
    cc_model Array(String),
    cc_environment Array(String),
    cc_data_mode Array(String),
    cc_cost_delta Array(Decimal(38, 12)),
    cc_unpriced_delta Array(Int8),
    cc_price_version Array(String),

    ru_window_start Array(DateTime('UTC')),
    ru_tenant Array(String),
    ru_endpoint_tag Array(String),
    ru_prompt_version Array(String),
    ru_provider Array(String),
    ru_model Array(String),
    ru_environment Array(String),
    ru_data_mode Array(String),
    ru_cost_usd Array(Decimal(38, 12)),
    -- Unpriced attempts that became priced count −1: a UInt64 sum wraps, so 2^64 − 1 here
    -- subtracts one from the merged total.
    ru_unpriced_attempts Array(UInt64)
)
ENGINE = Null;

-- One row per corrected attempt and reprice: the cost difference and the price version that
-- prices the attempt from then on ('' when it became unpriced).
CREATE TABLE IF NOT EXISTS {database}.cost_corrections
(
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    event_time DateTime('UTC'),
    tenant String,
    endpoint_tag String,
    prompt_version String,
    provider String,
    model String,
    environment String,
    data_mode String,
    cost_delta Decimal(38, 12),
    unpriced_delta Int8,
    price_version String,
    reprice_id String,
    chunk String,
    repriced_at_ms UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (kafka_topic, kafka_partition, kafka_offset, repriced_at_ms);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.cost_corrections_mv TO {database}.cost_corrections AS
SELECT
    kafka_topic, kafka_partition, kafka_offset, event_time, tenant, endpoint_tag, prompt_version,
    provider, model, environment, data_mode, cost_delta, unpriced_delta, price_version,
    reprice_id, chunk, repriced_at_ms
FROM {database}.reprice_ledger
ARRAY JOIN
    cc_kafka_topic AS kafka_topic, cc_kafka_partition AS kafka_partition,
    cc_kafka_offset AS kafka_offset, cc_event_time AS event_time, cc_tenant AS tenant,
    cc_endpoint_tag AS endpoint_tag, cc_prompt_version AS prompt_version,
    cc_provider AS provider, cc_model AS model, cc_environment AS environment,
    cc_data_mode AS data_mode, cc_cost_delta AS cost_delta, cc_unpriced_delta AS unpriced_delta,
    cc_price_version AS price_version
WHERE bitAnd(targets, 64) != 0;

-- The audit record of every reprice: one row when it starts (status 'started', with what it
-- plans to change) and one when it is done. Read it with FINAL (or argMax by updated_at_ms):
-- a reprice killed half-way stays 'started'; re-running it is a new reprice that changes the
-- rest.
CREATE TABLE IF NOT EXISTS {database}.repricings
(
    reprice_id String,
    status String,
    requested_by String,
    host String,
    started_at DateTime('UTC'),
    finished_at DateTime('UTC'),
    range_from DateTime('UTC'),
    range_to DateTime('UTC'),
    scope String,
    prices_file String,
    forced UInt8,
    versions_before Array(String),
    versions_after Array(String),
    cost_before_usd Decimal(38, 12),
    cost_after_usd Decimal(38, 12),
    attempts_changed UInt64,
    chunks UInt32,
    updated_at_ms UInt64
)
ENGINE = ReplacingMergeTree(updated_at_ms)
ORDER BY reprice_id;

-- Corrections into the rollups, once per granularity: cost and unpriced-attempt deltas
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
    sumState(toUInt64(0)) AS cache_write_1h_tokens_state,
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
