-- Model mix per endpoint and prompt version over time, per day (real, prod traffic).
--
-- One row per (day, endpoint_tag, prompt_version, provider, model), busiest model first
-- within each day/endpoint/version. Attempts are counted on the model that served them
-- (requests on the model of their first attempt). Change the two dates (period [from, to),
-- UTC); uncomment the endpoint filter to look at one endpoint; for an hourly mix use
-- usage_hour and toStartOfHour(window_start).
SELECT
    toDate(window_start) AS day,
    endpoint_tag,
    prompt_version,
    provider,
    model,
    sum(attempts) AS total_attempts,
    sum(requests) AS total_requests,
    sum(cost_usd) AS total_cost_usd
FROM usage_day
WHERE data_mode = 'real' AND environment = 'prod'
    AND window_start >= toDateTime('2025-01-01 00:00:00', 'UTC')
    AND window_start < toDateTime('2025-02-01 00:00:00', 'UTC')
    -- AND endpoint_tag = 'checkout.ai_summary'
GROUP BY day, endpoint_tag, prompt_version, provider, model
ORDER BY day, endpoint_tag, prompt_version, total_attempts DESC;
