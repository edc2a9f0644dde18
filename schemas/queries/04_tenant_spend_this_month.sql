-- Spend per tenant this month (UTC calendar month so far) against its budget (real, prod
-- traffic).
--
-- There is no budget table yet: budgets are a literal list in transform() below (tenants in
-- the first array, monthly budgets in USD in the second; 0 = no budget, budget_used_pct is
-- then NULL). Edit both arrays. Once a budget table exists, e.g.
-- tenant_budgets(tenant String, month Date, budget_usd Float64), join it instead: replace
-- the transform() line by `any(monthly_budget_usd) AS budget_usd,` and add after FROM:
--   ANY LEFT JOIN (SELECT tenant, budget_usd AS monthly_budget_usd FROM tenant_budgets
--       WHERE month = toStartOfMonth(now(), 'UTC')) AS budgets USING tenant
-- (ClickHouse 18.16 needs the ANY, current releases the subquery alias.)
-- The month start is converted to a DateTime on purpose: ClickHouse 18.16 compares a
-- DateTime with a bare Date as raw numbers (always true). For last month replace the last
-- condition by:
--   window_start >= toDateTime(toStartOfMonth(toStartOfMonth(now(), 'UTC') - 1), 'UTC')
--   AND window_start < toDateTime(toStartOfMonth(now(), 'UTC'), 'UTC')
SELECT
    tenant,
    sum(cost_usd) AS spend_usd,
    transform(tenant, ['acme', 'globex'], [5000.0, 2000.0], 0.0) AS budget_usd,
    round(100 * toFloat64(spend_usd) / nullIf(budget_usd, 0), 1) AS budget_used_pct
FROM usage_day
WHERE data_mode = 'real' AND environment = 'prod'
    AND window_start >= toDateTime(toStartOfMonth(now(), 'UTC'), 'UTC')
GROUP BY tenant
ORDER BY spend_usd DESC;
