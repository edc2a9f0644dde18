-- Top endpoints by cost over a period (real, prod traffic).
--
-- One row per endpoint_tag, most expensive first, with its requests and average cost per
-- request. Change the two dates (the period is [from, to), UTC) and the LIMIT. For a period
-- shorter than a day use usage_hour (or usage_minute) instead of usage_day.
SELECT
    endpoint_tag,
    sum(cost_usd) AS total_cost_usd,
    sum(requests) AS total_requests,
    toFloat64(total_cost_usd) / total_requests AS cost_per_request_usd
FROM usage_day
WHERE data_mode = 'real' AND environment = 'prod'
    AND window_start >= toDateTime('2025-01-01 00:00:00', 'UTC')
    AND window_start < toDateTime('2025-02-01 00:00:00', 'UTC')
GROUP BY endpoint_tag
ORDER BY total_cost_usd DESC
LIMIT 20;
