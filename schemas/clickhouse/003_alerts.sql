-- Alerts: every alert fired (budget thresholds and rules), one row per alert and webhook,
-- with its delivery state. It is also the durable outbox: a worker that starts reads the
-- pending deliveries back and resumes them. Each state change inserts a new version of the
-- row; ReplacingMergeTree keeps the newest, and readers use FINAL.

CREATE TABLE IF NOT EXISTS {database}.alerts
(
    alert_id String,
    webhook String,
    kind String,
    source String,
    scope String,
    period_start DateTime('UTC'),
    threshold_percent UInt32,
    spend_usd Decimal(38, 12),
    limit_usd Decimal(38, 12),
    value Float64,
    fired_at DateTime('UTC'),
    summary String,
    body String,
    delivery_state String,
    attempts UInt32,
    next_attempt_at DateTime('UTC'),
    last_error String,
    updated_at DateTime('UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(fired_at)
ORDER BY (alert_id, webhook);
