-- Share of spend that is untagged, i.e. has no promptVersion (prompt_version = ''), over a
-- period (real, prod traffic).
--
-- One row: total spend, untagged spend and the untagged share in percent. Change the two
-- dates (period [from, to), UTC). To see which endpoints the untagged spend comes from, add
-- endpoint_tag to the SELECT, GROUP BY endpoint_tag and ORDER BY untagged_cost_usd DESC.
SELECT
    sum(cost_usd) AS total_cost_usd,
    sumIf(cost_usd, prompt_version = '') AS untagged_cost_usd,
    round(100 * toFloat64(untagged_cost_usd) / toFloat64(total_cost_usd), 2) AS untagged_pct
FROM usage_day
WHERE data_mode = 'real' AND environment = 'prod'
    AND window_start >= toDateTime('2025-01-01 00:00:00', 'UTC')
    AND window_start < toDateTime('2025-02-01 00:00:00', 'UTC');
