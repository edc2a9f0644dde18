-- Cost per request and retry ratio per prompt version of one endpoint, before vs after a
-- date (real, prod traffic).
--
-- One row per (prompt_version, side): side is 'before' or 'after' the cut-over date.
-- retry_ratio = retries / requests (extra attempts per request; 0.1 = one retry per ten
-- requests). Change the endpoint ('checkout.ai_summary'), the cut-over date (used twice:
-- keep both equal) and the window around it (first and last date).
SELECT
    prompt_version,
    if(window_start < toDateTime('2025-02-01 00:00:00', 'UTC'), 'before', 'after') AS side,
    sum(requests) AS total_requests,
    sum(cost_usd) AS total_cost_usd,
    toFloat64(total_cost_usd) / total_requests AS cost_per_request_usd,
    sum(retries) / total_requests AS retry_ratio
FROM usage_day
WHERE data_mode = 'real' AND environment = 'prod'
    AND endpoint_tag = 'checkout.ai_summary'
    AND window_start >= toDateTime('2025-01-01 00:00:00', 'UTC')
    AND window_start < toDateTime('2025-03-01 00:00:00', 'UTC')
GROUP BY prompt_version, side
ORDER BY prompt_version, side DESC;
